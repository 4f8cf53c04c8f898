"""OOMs the kernel resolved itself, from /dev/kmsg (parsed by :mod:`.kmsg`).

/dev/kmsg is opened non-blocking at its end (only what happens from now on); each
``oom-kill:`` record starts a report, the ``Killed process`` records after it (several
with memory.oom.group) join it, and the report goes out 50 ms after its first record or
when the next one starts. Without /dev/kmsg (no CAP_SYSLOG), the watchers count kernel
kills from memory.events / memory.oom_control instead.
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable

from oomkit.kernel.base import KernelOom, Victim
from oomkit.kernel.linux import kmsg
from oomkit.kernel.linux.loop import EventLoop, Timer, close_fd


class KmsgWatch:
    """Reads /dev/kmsg; ``report`` gets each kernel OOM whose task is below our root.
    ``to_path`` maps the kernel's cgroup path to ours (None: outside our root)."""

    def __init__(
        self,
        loop: EventLoop,
        report: Callable[[KernelOom], None],
        to_path: Callable[[str | None], str | None],
    ) -> None:
        self._loop = loop
        self._report = report
        self._to_path = to_path
        self.fd = -1
        self._pending: kmsg.PendingOom | None = None
        self._timer: Timer | None = None

    def open(self, path: str) -> bool:
        """Start reading; False if /dev/kmsg is not readable."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
        except OSError:
            return False
        self.fd = fd
        self._loop.add_fd(fd, select.EPOLLIN, self._on_kmsg)
        return True

    def _on_kmsg(self, _mask: int) -> None:
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records were overwritten before we read them
                return
            if not record:
                return
            parsed = kmsg.parse_message(kmsg.split_record(record))
            if isinstance(parsed, kmsg.OomSummary):
                self.flush()
                self._pending = kmsg.PendingOom(parsed)
                self._timer = self._loop.call_later(0.05, self.flush)
            elif isinstance(parsed, kmsg.KilledProcess) and self._pending is not None:
                self._pending.killed.append(parsed)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if self._timer is not None:
            self._timer.cancelled = True
            self._timer = None
        if pending is None:
            return
        s = pending.summary
        task_cg = self._to_path(s.task_memcg)
        if task_cg is None:
            return  # outside our root
        memcg = self._to_path(s.oom_memcg) if s.oom_memcg is not None else None
        victims = tuple(Victim(k.pid, k.comm, task_cg, k.rss) for k in pending.killed)
        self._report(KernelOom(memcg, victims, max(1, len(victims)), "/dev/kmsg"))

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.del_fd(self.fd)
            close_fd(self.fd)
            self.fd = -1


def from_kernel_path(prefix: str | None, path: str | None) -> str | None:
    """A cgroup path as the kernel prints it -> the same cgroup's path below our root
    (``prefix``: our root as the kernel prints it); None if it is not below our root."""
    if path is None:
        return None
    if not prefix:
        return path
    if path == prefix:
        return "/"
    if path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return None
