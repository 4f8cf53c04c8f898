"""The daemon's [system] MemAvailable watch on the simulator (QA Q1): ``oomkit run --sim``
runs the watch the live daemon runs, from the same config, so an anonymous leak without
swap (nothing stalls until the end) is handled at min_available, not at the kernel's OOM.

The leak below (QA's s05): 2G, no swap; a service holds 300M; a leak takes 40M/s from 0.
MemAvailable (si_mem_available(): free less the reserve, 9.75M on 2G) is 2048 - 300 -
9.75 - 40 t MiB; the kernel's own OOM comes when nothing is free, at t ~ 43.4 s.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from oomkit import Runtime
from oomkit.cli import main
from oomkit.events import EventList, OomEvent
from oomkit.kernel.base import Constraint
from oomkit.kernel.sim import MachineSpec, SimKernel, Step, load_scenario
from oomkit.kernel.sim import memwatch as simwatch
from oomkit.ops import OomContext, OomControl, OomOps

from .conftest import M, run_with_config

REPO = Path(__file__).resolve().parents[2]
RECOMMENDED = REPO / "packaging" / "oomkit.toml"
EARLYOOM = REPO / "packaging" / "presets" / "earlyoom.toml"

LEAK = """
name = "a leak without swap and without stalls (QA s05)"
[machine]
memory = "2G"
swap = "0"
duration = "60s"

[[process]]
name = "service"
cgroup = "/system.slice/service"
program = [ { op = "alloc", kind = "anon", size = "300M" }, { op = "work", duration = "60s" } ]

[[process]]
name = "leak"
cgroup = "/user.slice/leak"
program = [ { op = "alloc", kind = "anon", size = "%s", rate = "40M/s" }, { op = "sleep" } ]
"""

#: The leak's rate in MiB/s: 40M/s in 10 ms ticks of whole pages (103 pages a tick).
RATE = 103 * 4096 * 100 / (1 << 20)
#: When the machine would be out of memory: 2048 - 300 MiB at that rate.
KERNEL_OOM_S = (2048 - 300) / RATE


def scenario(tmp_path: Path, leak: str = "3G") -> Path:
    path = tmp_path / "leak.toml"
    path.write_text(LEAK % leak)
    return path


def crossing_s(min_available_mib: float, lead_s: float) -> float:
    """When MemAvailable less the fill over the lead reaches min_available."""
    return (2048 - 300 - 9.75 - min_available_mib - RATE * lead_s) / RATE


@pytest.mark.parametrize(("config", "min_mib", "lead_s", "policy"), [
    (RECOMMENDED, 0.05 * 2048, 0.25, "kill_cause"),  # [system]: its defaults, 5 %
    (EARLYOOM, 0.10 * 2048, 0.1, "earlyoom_kill"),  # [system] min_available = "10%"
])
def test_the_leak_dies_at_min_available_by_the_system_wide_handler(
        config: Path, min_mib: float, lead_s: float, policy: str, tmp_path: Path) -> None:
    o = run_with_config(scenario(tmp_path), config, tmp_path)
    assert [(e["memcg"], e["constraint"], e["resolved_by"], e["policy"])
            for e in o.ooms] == [(None, "NONE", "handler", policy)]
    # The text says what the look saw: MemAvailable just above min (the fill projected
    # over the lead takes it below), the threshold in MiB.
    text = o.ooms[0]["constraint_text"]
    assert text.startswith("MemAvailable ") and f"min {min_mib:.0f}M" in text, text
    assert o.killed == ["leak"]
    at = o.killed_at("leak")
    # The look that finds it short comes on the watch's adaptive timer: 10 ms near the
    # end, a tick, and the kill with it.
    assert crossing_s(min_mib, lead_s) - 0.02 < at <= crossing_s(min_mib, lead_s) + 0.02
    assert at < KERNEL_OOM_S - 2  # not the kernel's OOM path: memory was left
    assert o.alive("service")


def test_before_the_watch_the_kernel_acted_only_when_memory_ran_out(tmp_path: Path) -> None:
    """The same run without a system-wide handler: nothing arms the watch (live too:
    watch_oom(None) arms it), so the kernel's OOM path acts when memory is gone."""
    config = tmp_path / "memcg-only.toml"
    config.write_text('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/user.slice"\n')
    o = run_with_config(scenario(tmp_path), config, tmp_path)
    assert [(e["constraint"], e["resolved_by"]) for e in o.ooms] == [("NONE", "default")]
    assert KERNEL_OOM_S - 0.5 < o.killed_at("leak") < KERNEL_OOM_S + 0.5


def test_no_kill_while_memavailable_stays_above_the_minimum(tmp_path: Path) -> None:
    """The leak stops at 1.6G: MemAvailable ends at ~138M, above the recommended 5 %
    (102M): no OOM at all."""
    o = run_with_config(scenario(tmp_path, "1600M"), RECOMMENDED, tmp_path)
    assert o.ooms == []
    assert o.alive("service", "leak")


class Recording(OomOps):
    """Kills the leak, noting what the OOM said and MemAvailable at the time."""

    name = "recording"

    def __init__(self, kernel: SimKernel) -> None:
        self.kernel = kernel
        self.seen: list[tuple[float, Constraint, int]] = []

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        s = simwatch.sample(self.kernel)
        self.seen.append((s.at, oc.constraint, s.mem_available))
        leak = [t for cg in oc.kernel.root_mem_cgroup().walk() for t in cg.tasks()
                if t.comm == "leak"]
        for t in leak:
            oc.kill_process(t, "recording")
        return bool(leak)


def run_kernel(tmp_path: Path, leak: str = "3G", **settings: float
               ) -> tuple[SimKernel, Recording, EventList]:
    kernel = SimKernel.from_scenario(load_scenario(str(scenario(tmp_path, leak))))
    kernel.enable_system_watch(**settings)
    events = EventList()
    rt = Runtime(kernel, sink=events)
    ops = Recording(kernel)
    rt.attach_oom(ops)
    kernel.run()
    rt.close()
    return kernel, ops, events


def test_the_declared_oom_comes_at_min_available_and_the_kernel_path_never_runs(
        tmp_path: Path) -> None:
    kernel, ops, events = run_kernel(tmp_path, min_available=100 << 20, lead_s=0.0)
    assert kernel.system is not None
    assert kernel.system.declared == 1
    assert kernel.ooms == 1  # the declared one: the kernel's own path never ran
    ((at, constraint, available),) = ops.seen
    assert constraint is Constraint.NONE
    # found at the first look at or below 100M: one look (10 ms near the end) of fill
    assert 100 * M("1M") - M("1M") <= available <= 100 * M("1M")
    assert crossing_s(100, 0.0) <= at < crossing_s(100, 0.0) + 0.02
    (oom,) = [e for e in events.events if isinstance(e, OomEvent)]
    assert (oom.memcg, oom.constraint, oom.resolved_by) == (None, "NONE", "handler")


def test_the_watch_samples_on_its_own_timer_not_every_tick(tmp_path: Path) -> None:
    """Far from the threshold the interval is earlyoom's bound (headroom / 6000M/s,
    0.1 s to 5 s), down to 10 ms only near the end: over 60 s (6,000 ticks), a few
    hundred looks."""
    kernel, ops, _ = run_kernel(tmp_path, "1600M")
    assert ops.seen == []
    assert kernel.system is not None
    assert 60 < kernel.system.state.samples < 700


def test_runs_are_the_same_however_they_are_sliced(tmp_path: Path) -> None:
    """Looks fall on the tick grid: running in slices (the daemon's 100 ms) or at once
    gives the same kill at the same time."""
    def once(slice_ns: int | None) -> tuple[float | None, int]:
        kernel = SimKernel.from_scenario(load_scenario(str(scenario(tmp_path))))
        kernel.enable_system_watch(min_available=0.05)
        rt = Runtime(kernel, sink=EventList())
        rt.attach_oom(Recording(kernel))
        if slice_ns is None:
            kernel.run()
        else:
            end = kernel.machine.duration_ns
            while kernel.clock.now_ns() < end:
                kernel.run(min(end, kernel.clock.now_ns() + slice_ns))
        rt.close()
        leak = kernel.process("leak")
        assert kernel.system is not None
        return leak.killed_at and leak.killed_at / 1e9, kernel.system.state.samples

    assert once(None) == once(100_000_000) == once(70_000_000)


def test_a_start_up_allocation_is_not_taken_for_a_fill() -> None:
    """A service taking 600M of 1G at the machine's 2 GiB/s as the scenario starts, the
    way a scenario says what it holds: live, a daemon starts on a running machine; here
    the first look waits for it. Projected 250 ms ahead at 2 GiB/s it looked like a leak
    about to fill the machine."""
    kernel = SimKernel(MachineSpec(memory=M("1G"), duration_ns=5_000_000_000))
    kernel.spawn("service", "/service", (Step("alloc", size=M("600M")), Step("sleep")))
    kernel.enable_system_watch(min_available=0.05)
    rt = Runtime(kernel, sink=EventList())
    ops = Recording(kernel)
    rt.attach_oom(ops)
    kernel.run()
    rt.close()
    assert ops.seen == []
    assert kernel.system is not None and kernel.system.state.samples > 5


def test_the_memavailable_estimate_is_the_kernels() -> None:
    # 2G: min_free_kbytes = isqrt(2097152 * 16) = 5792 kB -> 1448 pages; the gap is
    # max(1448 / 4, 524288 * 10 / 10000) = 524 pages: low 1972, high 2496 pages.
    assert simwatch.watermarks(M("2G")) == (1448 * 4096, 1972 * 4096, 2496 * 4096)
    # 64G: min_free_kbytes = 32768 kB (still below the 256M clamp)
    assert simwatch.watermarks(M("64G"))[0] == 32768 * 1024
    # free - reserve + file - min(file / 2, low) + slab - min(slab / 2, low)
    assert simwatch.mem_available(1000, 400, 0, 100, 50) == 950 + 300
    assert simwatch.mem_available(1000, 100, 60, 100, 50) == 950 + 50 + 30
    assert simwatch.mem_available(10, 0, 0, 100, 50) == 0  # never below 0


def test_the_cli_says_what_of_the_config_the_simulator_does_not_run(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\nevent_log = "{tmp_path / "e.jsonl"}"\n'
                      f'status_file = "{tmp_path / "st.json"}"\n'
                      f'state_file = "{tmp_path / "s.json"}"\n[metrics]\nlisten = ""\n'
                      '[guard]\nmargin = "5%"\n'
                      '[[oom]]\npolicy = "kill_cause"\n')
    out = io.StringIO()
    assert main(["run", "--sim", str(scenario(tmp_path, "1600M")), "--config", str(config)],
                out) == 0
    text = out.getvalue()
    assert "not simulated: [guard]" in text
    assert "MemAvailable on an adaptive timer (simulated)" in text
