"""The daemon's flight recorder has no thread of its own on the live kernel: its probe is a
timer of the kernel's event loop that may come early, so it rides on the wake-ups the
loop has anyway (the MemAvailable watch's), and a due sample is handed to the
housekeeping thread (issue 10: the idle daemon's CPU is its number of wake-ups).

The loop here is the live one (oomkit.kernel.linux.loop.EventLoop) on the simulator's
clock; the test plays the part of epoll_wait by moving the clock to the loop's next
timer, as an idle loop with no fd events does."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path

from oomkit.kernel.linux.loop import EventLoop
from oomkit.kernel.sim import SimKernel
from oomkit.kernel.sim.scenario import parse_scenario
from oomkit.lab.incidents import Incidents
from oomkit.lab.recorder import RecorderSettings

# /app/a sits at 30M; /app/c starts at 200 s and grows 1M/s (2.5 % of /app's 200M per 5 s
# idle interval: not quiet) until it has 100M.
QUIET_THEN_GROWING = """
name = "quiet, then one grows slowly"
[machine]
memory = "2G"
duration = "400s"
[[cgroup]]
path = "/app"
"memory.max" = "200M"
[[process]]
name = "a"
cgroup = "/app/a"
program = [ { op = "alloc", kind = "anon", size = "30M" }, { op = "sleep" } ]
[[process]]
name = "c"
cgroup = "/app/c"
start = "200s"
program = [ { op = "alloc", kind = "anon", size = "100M", rate = "1M/s" }, { op = "sleep" } ]
"""
LOOK_S = 3.9  # the MemAvailable watch's period on an idle machine (memwatch.next_interval)


def _next_wake(loop: EventLoop) -> float | None:
    live = [t.when for _, _, t in loop._timers if not t.cancelled]
    return min(live) if live else None


def _idle_loop(kernel: SimKernel, loop: EventLoop, until: float) -> list[float]:
    """Run ``loop`` as an idle one would (no fd events: it wakes for its next timer) up
    to ``until`` s; the times it woke."""
    wakes: list[float] = []
    while (at := _next_wake(loop)) is not None and at <= until:
        ns = math.ceil(at * 1e9)
        while ns / 1e9 < at:  # the float's nanoseconds, not one short of them
            ns += 1
        kernel.run(until_ns=ns)
        wakes.append(round(at, 6))
        loop.poll(0)
    return wakes


def _look_every(loop: EventLoop, period: float, seen: list[float],
                clock: Callable[[], float]) -> None:
    """A timer booked as the system watch books its look: ``period`` s, half early."""

    def look() -> None:
        seen.append(round(clock(), 6))
        loop.call_later(period, look, early=period / 2)

    loop.call_later(period, look, early=period / 2)


def _incidents(kernel: SimKernel, tmp_path: Path,
               defer: Callable[[str, Callable[[], None]], None]) -> Incidents:
    return Incidents(kernel, RecorderSettings(interval_s=5.0, pressure_interval_s=0.5),
                     event_log=str(tmp_path / "events.jsonl"), roots=None,
                     wall=lambda: 1.7e9, defer=defer, on_error=lambda msg: None)


def test_an_idle_recorder_adds_no_wake_up_of_its_own(tmp_path: Path) -> None:
    kernel = SimKernel.from_scenario(parse_scenario(QUIET_THEN_GROWING))
    loop = EventLoop(kernel.clock, threading.RLock())
    looks: list[float] = []
    inc = _incidents(kernel, tmp_path, lambda _key, job: job())
    try:
        _look_every(loop, LOOK_S, looks, kernel.clock.now)
        inc.start(loop)
        assert inc._thread is None  # no thread of its own
        wakes = _idle_loop(kernel, loop, 195.0)
        rec = inc.recorder
        # Its first sample after a second; from then on its probes (every 4 s) and
        # samples (every 5 to 30 s) ride on the looks, or a look on a sample, which a look
        # may do as it comes early: a few wake-ups more than for the looks alone (50), not
        # the 48 probes and a dozen samples a thread of its own woke for.
        alone = int(195 / LOOK_S)
        assert wakes[0] == 1.0 and len(wakes) <= alone + 4, (wakes, looks)
        assert set(wakes[1:]) <= set(looks) | {round(at - 0.01, 2) for at in looks}
        assert rec.samples_taken >= 195 / 30 and not rec.pressure
        # Growth (from 200 s) brings the samples back to the idle interval at least.
        before = rec.samples_taken
        _idle_loop(kernel, loop, 300.0)
        assert rec.samples_taken - before >= 100 / 5
    finally:
        inc.close()
        loop.close()
    # closed: its timer is dropped (the look's stays)
    assert not [t for _, _, t in loop._timers if not t.cancelled and t.callback == inc._on_timer]


def test_a_due_sample_goes_to_the_housekeeper_and_books_the_next_step(
        tmp_path: Path) -> None:
    kernel = SimKernel.from_scenario(parse_scenario(QUIET_THEN_GROWING))
    loop = EventLoop(kernel.clock, threading.RLock())
    jobs: list[tuple[str, Callable[[], None]]] = []
    inc = _incidents(kernel, tmp_path, lambda key, job: jobs.append((key, job)))
    try:
        inc.start(loop)
        assert _idle_loop(kernel, loop, 10.0) == [1.0]  # the first sample is due at 1 s
        assert [key for key, _ in jobs] == ["flight recorder sample"]
        assert inc.recorder.samples_taken == 0  # not on the loop's thread
        assert _next_wake(loop) is None  # nothing booked until the sample is taken
        jobs.pop()[1]()
        assert inc.recorder.samples_taken == 1
        nxt = _next_wake(loop)
        assert nxt is not None and 1.0 < nxt <= 1.0 + 5.0
    finally:
        inc.close()
        loop.close()
