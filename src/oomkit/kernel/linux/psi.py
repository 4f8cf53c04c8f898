"""PSI triggers: an open pressure file with a trigger written to it, polled for EPOLLPRI.

The kernel checks the trigger (``psi_trigger_create``: "some|full THRESHOLD_US
WINDOW_US") and wakes pollers with POLLPRI when the stall time within a window passes the
threshold, at most once per window. A cgroup's trigger file is gone with the cgroup: its
fd then polls EPOLLERR and is dropped here.
"""

from __future__ import annotations

import functools
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass

from oomkit.errors import OomkitError
from oomkit.kernel.base import Resource
from oomkit.kernel.linux import fsio
from oomkit.kernel.linux.loop import EventLoop, close_fd


@dataclass(eq=False, slots=True)
class LivePsiTrigger:
    """A PSI trigger: an open pressure file with the trigger written to it."""

    cgroup_id: int
    resource: Resource
    full: bool
    threshold_us: int
    window_us: int
    path: str
    fd: int = -1
    on_event: Callable[[LivePsiTrigger], None] | None = None
    owner: object = None  # the PsiTriggers that opened it


class PsiTriggers:
    """The open triggers; ``deliver`` gets the events of triggers without ``on_event``."""

    def __init__(
        self,
        loop: EventLoop,
        lock: threading.RLock,
        deliver: Callable[[LivePsiTrigger], None],
    ) -> None:
        self._loop = loop
        self._lock = lock
        self._deliver = deliver
        self._triggers: set[LivePsiTrigger] = set()

    def open(self, trig: LivePsiTrigger) -> LivePsiTrigger:
        """Open ``trig.path`` and write the trigger (values already validated)."""
        path = trig.path
        fd = fsio.open_fd(path, os.O_RDWR | os.O_NONBLOCK)
        try:
            # /proc/pressure/* wants the NUL in the write (psi_write() eats the last byte).
            text = f"{'full' if trig.full else 'some'} {trig.threshold_us} {trig.window_us}\0"
            fsio.write_fd(fd, text.encode(), path)
            self._loop.add_fd(fd, select.EPOLLPRI, functools.partial(self._on_psi, trig))
        except (OomkitError, OSError) as exc:
            close_fd(fd)
            if isinstance(exc, OSError):
                raise fsio.error_for(exc, path) from exc
            raise
        trig.fd = fd
        trig.owner = self
        with self._lock:
            self._triggers.add(trig)
        return trig

    def owns(self, trigger: LivePsiTrigger) -> bool:
        """Opened here (and maybe destroyed since)."""
        return trigger.owner is self

    def destroy(self, trigger: object) -> None:
        if not isinstance(trigger, LivePsiTrigger) or trigger.fd < 0:
            return
        with self._lock:
            self._triggers.discard(trigger)
        self._loop.del_fd(trigger.fd)
        close_fd(trigger.fd)
        trigger.fd = -1

    def offline(self, cg_id: int) -> None:
        """The cgroup is gone: its triggers stop polling (destroy still closes them)."""
        with self._lock:
            gone = [t for t in self._triggers if t.cgroup_id == cg_id]
        for trig in gone:
            self._loop.del_fd(trig.fd)

    def _on_psi(self, trig: LivePsiTrigger, mask: int) -> None:
        if mask & (select.EPOLLERR | select.EPOLLHUP) and not mask & select.EPOLLPRI:
            self._loop.del_fd(trig.fd)  # the cgroup is gone; offline destroys the trigger
            return
        if trig.on_event is not None:
            trig.on_event(trig)
        else:
            self._deliver(trig)

    def close(self) -> None:
        with self._lock:
            triggers = list(self._triggers)
        for trig in triggers:
            self.destroy(trig)
