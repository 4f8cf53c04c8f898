"""Records of the OOMs handed to the kernel killer when the runtime could not end them, with
the kernel's victims.

Two writers: the watchdog (the runtime hung or died during an OOM) and a runtime starting
over a journal whose runtime and watchdog both died (the OOM was still waiting, with the
killer disabled by us). Each writes one ``oom`` record (``policy: "watchdog"``,
``resolved_by: "kernel"``) in the daemon's event log, never through a link, only into a
regular file of its own user.

The victims are the kernel's, read from /dev/kmsg (parsed by :mod:`.kmsg`): it is opened
at its end *before* the hand-over, then read until the ``oom-kill:`` record of each
handed-over memcg arrived or a second passed (the sleeping chargers retry at once when
``oom_kill_disable`` goes to 0, ``memcg1_oom_recover``, and the kill is logged then).
Without /dev/kmsg (no CAP_SYSLOG) the record has no victims.

Standard library only: the watchdog loads this file (and :mod:`.kmsg`) by path, without
importing the oomkit package (:func:`load_sibling`).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import select
import stat
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy takes it as True)

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Final

KMSG: Final = "/dev/kmsg"
#: How long to wait for the kernel's kill after a hand-over (seconds).
VICTIM_WAIT_S: Final = 1.0


def load_sibling(name: str) -> ModuleType:
    """The module in this directory's ``name``.py, loaded by path (no package import)."""
    key = f"_oomkit_watchdog_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(
        key, os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # registered before it runs, as an import does
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


if __package__:
    from oomkit.kernel.linux import kmsg
else:  # loaded by path by the watchdog
    kmsg = load_sibling("kmsg")


def kernel_path(directory: str, tree_root: str, prefix: str | None) -> str:
    """A memcg directory as the kernel prints it in /dev/kmsg: ``prefix`` (the tree root's
    name there; None: the tree root is the hierarchy's) plus the path below the root."""
    rel = os.path.relpath(directory, tree_root)
    below = "" if rel == "." else "/" + rel
    return ((prefix or "") + below) or "/"


# Plain classes with __slots__, not dataclasses: the watchdog loads this file, and
# dataclasses (with inspect, ast, dis) and typing would cost it about 2 MiB, locked.


class KmsgTail:
    """/dev/kmsg from the moment it is opened; ``kills`` reads the OOM kills since."""

    __slots__ = ("_seen", "fd", "path")

    def __init__(self, path: str = KMSG) -> None:
        self.path = path
        self.fd = -1
        self._seen: dict[str, list[dict[str, Any]]] = {}
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.close()

    def kills(self, wanted: set[str], wait_s: float = VICTIM_WAIT_S) -> dict[str, list[
            dict[str, Any]]]:
        """{kernel memcg path: victims} for the memcgs in ``wanted`` (kernel paths) the
        kernel killed in, waiting at most ``wait_s`` for all of them. A victim:
        ``{"pid", "comm", "cgroup" (the kernel's path), "rss" (bytes)}``."""
        deadline = time.monotonic() + wait_s
        current: list[dict[str, Any]] | None = None
        while self.fd >= 0:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                if wanted <= {m for m, v in self._seen.items() if v}:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                select.select([self.fd], [], [], min(left, 0.05))
                continue
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # overwritten before we read it: go on with the next
                break
            parsed = kmsg.parse_message(kmsg.split_record(record))
            if isinstance(parsed, kmsg.OomSummary):
                current = self._seen.setdefault(parsed.oom_memcg or "/", []) \
                    if parsed.oom_memcg in wanted else None
                if current is not None:
                    current.append({"pid": parsed.pid, "comm": parsed.task,
                                    "cgroup": parsed.task_memcg, "rss": 0})
            elif isinstance(parsed, kmsg.KilledProcess) and current is not None:
                for v in current:
                    if v["pid"] == parsed.pid:
                        v["comm"], v["rss"] = parsed.comm, parsed.rss
                        break
                else:  # memory.oom.group: more tasks of the same kill
                    current.append({"pid": parsed.pid, "comm": parsed.comm,
                                    "cgroup": current[0]["cgroup"] if current else None,
                                    "rss": parsed.rss})
        return {m: v for m, v in self._seen.items() if m in wanted}

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = -1


class EventLog:
    """The daemon's event log, for the OOMs handed to the kernel killer by someone other
    than the runtime. ``tree_root``: the runtime's cgroup root, to name memcgs as the
    runtime does; ``prefix``: that root as the kernel prints it in /dev/kmsg."""

    __slots__ = ("path", "prefix", "tree_root")

    def __init__(self, path: str, tree_root: str, prefix: str | None = None) -> None:
        self.path = path
        self.tree_root = tree_root
        self.prefix = prefix

    def __repr__(self) -> str:
        return (f"EventLog(path={self.path!r}, tree_root={self.tree_root!r}, "
                f"prefix={self.prefix!r})")

    def name(self, directory: str) -> str:
        rel = os.path.relpath(directory, self.tree_root)
        return "/" if rel == "." else "/" + rel

    def kernel_name(self, ctl_path: str) -> str:
        return kernel_path(os.path.dirname(ctl_path), self.tree_root, self.prefix)

    def _our_name(self, kpath: str | None) -> str | None:
        if kpath is None:
            return None
        top = self.prefix or ""
        if kpath == top or kpath.startswith(top + "/"):
            return kpath[len(top):] or "/"
        return kpath

    def oom(self, ctl_path: str, note: str, victims: list[dict[str, Any]] | None = None
            ) -> None:
        victims = [dict(v, cgroup=self._our_name(v.get("cgroup"))) for v in victims or ()]
        record = {
            "event": "oom", "time": round(time.monotonic(), 6),
            "memcg": self.name(os.path.dirname(ctl_path)), "constraint": "MEMCG",
            "constraint_text": None, "policy": "watchdog", "resolved_by": "kernel",
            "victims": victims, "handlers": [], "order": 0, "totalpages": 0, "note": note,
            "wall": round(time.time(), 3),
        }
        self._append(record, f"the OOM of {record['memcg']}")

    def daemon_died(self, pid: int, restored: int, failed: int) -> None:
        """One ``daemon`` record (``action: "died"``) for a runtime that ended without
        stopping (SIGKILL, a segfault, the OOM killer: its journal was still there), so
        that the log says why it ends (QA G7). The cause is not knowable here: the watchdog
        is the runtime's child, not its parent, and cannot wait for its exit status."""
        detail = (f"pid {pid} ended without stopping (killed or crashed): the watchdog "
                  f"restored {restored} kernel setting{'s' if restored != 1 else ''}"
                  + (f", {failed} could not be" if failed else "")
                  + "; OOMs from now on are the kernel killer's, not logged until oomkit "
                  "starts again")
        self._append({"event": "daemon", "time": round(time.monotonic(), 6),
                      "action": "died", "detail": detail, "wall": round(time.time(), 3)},
                     "the daemon's death")

    def _append(self, record: dict[str, Any], what: str) -> None:
        """One line to the event log, as the daemon writes it: appended, never through a
        symlink, only to a regular file of ours."""
        line = (json.dumps(record, separators=(", ", ": ")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            _log(f"{self.path}: cannot record {what}: {exc.strerror}")
            return
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.write(fd, line)
        except OSError as exc:
            _log(f"{self.path}: cannot record {what}: {exc.strerror}")
        finally:
            os.close(fd)

    def handed_over(self, ctl_paths: list[str], note: str, tail: KmsgTail | None) -> None:
        """Record one OOM per ``ctl_paths`` (already handed over, ``tail`` opened before),
        each with the kernel's victims when /dev/kmsg names them in time."""
        kills: dict[str, list[dict[str, Any]]] = {}
        if tail is not None and ctl_paths:
            kills = tail.kills({self.kernel_name(p) for p in ctl_paths})
        for path in ctl_paths:
            self.oom(path, note, kills.get(self.kernel_name(path)))


def under_oom(ctl_path: str) -> bool:
    """``under_oom 1`` in this v1 memory.oom_control (False when unreadable)."""
    try:
        with open(ctl_path, encoding="ascii", errors="replace") as f:
            return any(line.split()[:2] == ["under_oom", "1"] for line in f)
    except OSError:
        return False


def in_band(high_path: str) -> bool:
    """A v2 memcg held at the ``memory.high`` we set (its guard band): usage within a
    charge batch of it (1/64, at least 256 KiB), as :func:`.decisions.stuck_in_band`
    counts it. Only the runtime ends such an OOM; stopped, it throttles for good."""
    directory = os.path.dirname(high_path)
    try:
        with open(high_path, encoding="ascii") as f:
            high = f.read().strip()
        with open(os.path.join(directory, "memory.current"), encoding="ascii") as f:
            current = int(f.read())
    except (OSError, ValueError):
        return False
    if not high.isdigit():
        return False
    return current + max(int(high) // 64, 256 << 10) >= int(high)


def release_bands(settings: list[Any], restore: Any, log: EventLog | None, note: str,
                  wait_s: float = 3 * VICTIM_WAIT_S) -> int:
    """Give the v2 memcgs of ``settings`` (journal entries of ``memory.high``) that are in
    their band back to the kernel: ``restore(setting)`` writes the original. Each the
    kernel then kills in (seen in /dev/kmsg within ``wait_s``: a throttled task first
    sleeps out its penalty) is recorded as one OOM. Returns how many were released."""
    banded = [s for s in settings if os.path.basename(s.path) == "memory.high"
              and in_band(s.path)]
    if not banded:
        return 0
    tail = KmsgTail() if log is not None else None
    released = [s.path for s in banded if restore(s) is None]
    if log is not None and tail is not None:
        kills = tail.kills({log.kernel_name(p) for p in released}, wait_s)
        for path in released:
            victims = kills.get(log.kernel_name(path))
            if victims:
                log.oom(path, note, victims)
    if tail is not None:
        tail.close()
    return len(released)


def is_domain(ctl_path: str) -> bool:
    """The memcg of this v1 oom_control is not below one under OOM: an OOM of its own, not
    part of an ancestor's (v1 marks the OOMing memcg's whole subtree ``under_oom``)."""
    parent = os.path.join(os.path.dirname(os.path.dirname(ctl_path)), os.path.basename(
        ctl_path))
    return not under_oom(parent)


def _log(msg: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"oomkit watchdog: {msg}", file=sys.stderr, flush=True)
