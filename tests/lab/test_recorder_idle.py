"""The flight recorder idles cheaply: a quiet machine is sampled ever more rarely (up to
IDLE_STRETCH idle intervals apart), and a cgroup that starts to grow brings the idle
interval back at once (issue 10: the daemon idles at earlyoom's CPU or less)."""

from __future__ import annotations

from oomkit.kernel.sim import SimKernel
from oomkit.kernel.sim.scenario import parse_scenario
from oomkit.lab.recorder import IDLE_STRETCH, FlightRecorder, RecorderSettings

# /app/a sits at 30M; /app/c starts at 200 s and grows 1M/s for 100 s (2.5 % of /app's 200M per
# 5 s idle interval: not quiet) until it has 100M.
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


def test_quiet_samples_stretch_and_growth_brings_the_interval_back() -> None:
    kernel = SimKernel.from_scenario(parse_scenario(QUIET_THEN_GROWING))
    settings = RecorderSettings(interval_s=5.0, pressure_interval_s=0.5)
    rec = FlightRecorder(kernel, settings)
    t = 1.0
    seen: list[tuple[float, float]] = []
    while t < 320:
        kernel.run(until_ns=int(t * 1e9))
        delay = rec.sample_once()
        seen.append((t, delay))
        t += delay
    quiet = [d for at, d in seen if 20 < at < 195]
    assert quiet and max(quiet) == settings.interval_s * IDLE_STRETCH, seen
    assert 5.0 * 2 in [d for _, d in seen]  # doubled on the way, not jumped
    growing = [d for at, d in seen if 215 < at < 285]
    assert growing and max(growing) <= settings.interval_s, seen
    # Quiet, the samples are IDLE_STRETCH times fewer than at the fixed idle interval.
    assert len([at for at, _ in seen if at < 195]) < 195 / settings.interval_s / 3
