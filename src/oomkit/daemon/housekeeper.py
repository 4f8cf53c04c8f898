"""The daemon's background thread: the slow work the OOM path hands off.

Jobs are keyed: submitting a key that is already pending does not queue it twice (ten OOMs
in a burst need one ``fsync`` and one status write, not ten). When nothing happened for
``idle_s`` and ``gc_interval_s`` passed since the last collection, the thread runs the
cyclic garbage collector, so that a collection never lands in the middle of an OOM.

A ``tick`` (the systemd watchdog ping) runs at every wake of the thread, whatever woke it,
and bounds its sleep by ``tick_interval_s``: with the idle collection due more often than
that, the tick costs no wake-up of its own.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from oomkit.clock import Clock, MonotonicClock
from oomkit.daemon.protect import GcControl

Job = Callable[[], None]


class Housekeeper:
    def __init__(
        self,
        *,
        gc_control: GcControl | None = None,
        gc_interval_s: float = 60.0,
        idle_s: float = 2.0,
        clock: Clock | None = None,
        tick: Callable[[], None] | None = None,
        tick_interval_s: float = 0.0,
    ) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._running = 0
        self._closing = False
        self._gc = gc_control
        self._gc_interval_s = gc_interval_s
        self._idle_s = idle_s
        self._clock = clock or MonotonicClock()
        self._last_activity = self._clock.now()
        self._last_gc = self._clock.now()
        self._tick = tick
        self._tick_interval_s = tick_interval_s
        self._last_tick = self._clock.now()
        self.ticks = 0
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="oomkit-housekeeper",
                                        daemon=True)
        self._thread.start()

    def submit(self, key: str, job: Job) -> None:
        """Run ``job`` soon on the housekeeping thread (inline when not started)."""
        if self._thread is None:
            self._run(job)
            return
        with self._cond:
            self._last_activity = self._clock.now()
            if key not in self._jobs:
                self._jobs[key] = job
            self._cond.notify()

    def touch(self) -> None:
        """Something happened: postpone the next idle collection."""
        self._last_activity = self._clock.now()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted job ran (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._running, timeout)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for job in self._take():  # whatever arrived meanwhile
            self._run(job)

    def _take(self) -> list[Job]:
        jobs = list(self._jobs.values())
        self._jobs.clear()
        return jobs

    def _run(self, job: Job) -> None:
        try:
            job()
        except Exception as exc:  # housekeeping must go on
            self.failures += 1
            print(f"oomkit: housekeeping job failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)

    def _gc_due(self, now: float) -> float | None:
        """Seconds until the next idle collection, or None when none is planned."""
        if self._gc is None:
            return None
        due = max(self._last_gc + self._gc_interval_s, self._last_activity + self._idle_s)
        return max(0.0, due - now)

    def _wait_s(self, now: float) -> float | None:
        """Seconds until the next idle collection or tick is due (None: neither)."""
        wait = self._gc_due(now)
        if self._tick is not None and self._tick_interval_s > 0:
            tick_due = max(0.0, self._last_tick + self._tick_interval_s - now)
            wait = tick_due if wait is None else min(wait, tick_due)
        return wait

    def _run_tick(self) -> None:
        if self._tick is not None:
            self._last_tick = self._clock.now()
            self.ticks += 1
            self._run(self._tick)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    wait = self._wait_s(self._clock.now())
                    if wait == 0.0:
                        break
                    self._cond.wait(wait)
                if self._closing and not self._jobs:
                    return
                jobs = self._take()
                self._running += 1
            try:
                for job in jobs:
                    self._run(job)
                now = self._clock.now()
                if not jobs and self._gc is not None and self._gc_due(now) == 0.0:
                    self._gc.collect_idle()
                    self._last_gc = self._clock.now()
                self._run_tick()
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
