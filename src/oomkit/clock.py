"""Time, injected. Nothing else in oomkit reads the system clock.

The simulator owns a :class:`ManualClock` it advances; the live runtime uses
:class:`MonotonicClock`. Both count seconds as floats and nanoseconds as ints; the
nanosecond form is the exact one (the simulator's PSI arithmetic runs on it).
"""

from __future__ import annotations

import time
from typing import Protocol, final


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since an arbitrary origin, monotonic."""
        ...

    def now_ns(self) -> int:
        """Nanoseconds since the same origin."""
        ...


@final
class MonotonicClock:
    """The real monotonic clock (CLOCK_MONOTONIC, as the kernel's PSI uses)."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def now_ns(self) -> int:
        return time.monotonic_ns()


@final
class ManualClock:
    """A clock that moves only when told to; the simulator's time."""

    __slots__ = ("_ns",)

    def __init__(self, start_ns: int = 0) -> None:
        self._ns = start_ns

    def now(self) -> float:
        return self._ns / 1e9

    def now_ns(self) -> int:
        return self._ns

    def advance_ns(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError("time does not go backwards")
        self._ns += delta_ns

    def set_ns(self, ns: int) -> None:
        if ns < self._ns:
            raise ValueError("time does not go backwards")
        self._ns = ns


def wall_perf_ns() -> int:
    """A wall-clock stopwatch for measuring how long a handler ran (not simulated time)."""
    return time.perf_counter_ns()
