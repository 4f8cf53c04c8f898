"""The live backend's one loop: epoll over file descriptors, plus timers.

Every source of events (eventfds of v1 OOM notifications, inotify, PSI trigger fds, pidfds
of victims, /dev/kmsg, the wake-up eventfd) registers a callback for its fd here. Timers
exist only while something is in progress (an OOM being handled, a hand-over, the
system-wide sampling window); with none, :meth:`EventLoop.poll` sleeps in ``epoll_wait``
until the kernel has news. Callbacks run on the thread that calls ``poll``; ``call_later``
and ``wakeup`` may be called from any thread.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import math
import os
import select
import threading
import weakref
from collections.abc import Callable

from oomkit.clock import Clock


class Timer:
    """A pending callback; ``cancelled = True`` drops it. ``early``: seconds it may run
    before ``when`` if the loop is awake anyway (0: never early)."""

    __slots__ = ("callback", "cancelled", "early", "when")

    def __init__(self, when: float, callback: Callable[[], None], early: float = 0.0) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.early = early


def close_fd(fd: int) -> None:
    """os.close, ignoring an fd that is already closed."""
    try:
        os.close(fd)
    except OSError:
        pass


def _drop_in_child(ref: weakref.ref[EventLoop]) -> None:
    """After fork, in the child: /dev/null in place of the epoll fd and every fd it watches
    (eventfds, /dev/kmsg, inotify, PSI triggers, pidfds). A handler that forks without exec
    leaves no child holding the daemon's kernel interfaces (dup2 keeps the numbers valid
    for objects that close them later); the journal drops its pipe and lock the same way."""
    loop = ref()
    if loop is None or loop._ep.closed:
        return
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    for fd in [loop._ep.fileno(), *loop._fd_cb]:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(null, fd)
    os.close(null)


class EventLoop:
    """epoll + a heap of timers on ``clock`` (seconds)."""

    def __init__(self, clock: Clock, lock: threading.RLock) -> None:
        self._clock = clock
        self._lock = lock
        self._ep = select.epoll()
        self._fd_cb: dict[int, Callable[[int], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._loop_thread: int | None = None
        # While poll() sleeps in epoll: when it wakes by itself (inf: never; -inf: awake).
        # A timer booked from another thread for no sooner than that needs no wake-up.
        self._sleeps_until = -math.inf
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.add_fd(self._wake_fd, select.EPOLLIN, self._on_wake)
        os.register_at_fork(after_in_child=functools.partial(_drop_in_child,
                                                             weakref.ref(self)))

    def add_fd(self, fd: int, events: int, cb: Callable[[int], None]) -> None:
        """Call ``cb(epoll mask)`` whenever ``fd`` is ready for ``events``."""
        with self._lock:
            self._fd_cb[fd] = cb
            self._ep.register(fd, events)

    def del_fd(self, fd: int) -> None:
        """Stop watching ``fd`` (it stays open: the caller owns it)."""
        with self._lock:
            if self._fd_cb.pop(fd, None) is not None:
                try:
                    self._ep.unregister(fd)
                except (OSError, ValueError):
                    pass

    def call_later(self, delay: float, callback: Callable[[], None], early: float = 0.0
                   ) -> Timer:
        """Run ``callback`` on the loop's thread ``delay`` s from now, or up to ``early`` s
        sooner if the loop wakes for something else in that span: work that may come early
        (a look at MemAvailable: sooner is never worse) rides on another wake-up instead
        of waking an idle process itself (each costs about 0.3 ms of CPU)."""
        timer = Timer(self._clock.now() + delay, callback, early)
        with self._lock:
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
            # From another thread: wake the loop only if it would sleep past this timer
            # (awake, it sees the timer before it sleeps again).
            wake = timer.when < self._sleeps_until
        if wake and threading.get_ident() != self._loop_thread:
            self.wakeup()
        return timer

    def poll(self, timeout: float | None = None) -> None:
        """Wait for one batch of events (at most ``timeout`` s, None: until one comes) and
        run their callbacks, then every timer that is due."""
        self._loop_thread = threading.get_ident()
        now = self._clock.now()
        with self._lock:
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            next_at = self._timers[0][0] if self._timers else None
            wait = timeout
            if next_at is not None:
                until = max(0.0, next_at - now)
                wait = until if wait is None else min(wait, until)
            self._sleeps_until = math.inf if wait is None else now + wait
        try:
            events = self._ep.poll(-1 if wait is None else wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            events = []
        finally:
            with self._lock:
                self._sleeps_until = -math.inf  # awake: the next poll sees every timer
        for fd, mask in events:
            with self._lock:
                cb = self._fd_cb.get(fd)
            if cb is not None:
                cb(mask)
        self._run_timers(awake=bool(events))

    def _run_timers(self, awake: bool = False) -> None:
        ran = awake
        while True:
            now = self._clock.now()
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    break
                _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()
                ran = True
        if ran:  # awake anyway: the timers that may come early, now
            for timer in self._take_early(self._clock.now()):
                if not timer.cancelled:
                    timer.callback()

    def _take_early(self, now: float) -> list[Timer]:
        """Remove and return the live timers whose ``early`` span has begun."""
        with self._lock:
            early = [t for _, _, t in self._timers
                     if t.early > 0 and not t.cancelled and t.when - t.early <= now]
            if early:
                taken = set(map(id, early))
                self._timers = [e for e in self._timers if id(e[2]) not in taken]
                heapq.heapify(self._timers)
        return early

    def wakeup(self) -> None:
        """Make a poll() in progress return (thread-safe)."""
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    def _on_wake(self, _mask: int) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.del_fd(self._wake_fd)
        close_fd(self._wake_fd)
        self._ep.close()
