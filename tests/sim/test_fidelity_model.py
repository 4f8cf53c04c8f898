"""The simulator's model beyond the seed: sequential readers, the kernel's workingset rule,
unprivileged triggers, reclaim costs, idle pressure decay, and the tick loop's parking of
working and sleeping processes (which must change no result)."""

from __future__ import annotations

import errno
import itertools
from pathlib import Path

import pytest

from oomkit import Runtime, SimKernel
from oomkit.errors import KernelError
from oomkit.events import EventList, PsiEventRecord
from oomkit.kernel.base import PAGE_SIZE, Resource
from oomkit.kernel.psi_math import PSI_PERIOD_NS
from oomkit.kernel.sim import MachineSpec, Step, load_scenario, parse_scenario
from oomkit.ops import Psi, PsiOps
from oomkit.policies.thrash_guard import ThrashGuard
from oomkit.sim_summary import summarize

from .conftest import M, hold

REPO = Path(__file__).resolve().parents[2]
S = 1_000_000_000
TICK = 10_000_000


def reader(pattern: str, file: str, limit: str = "64M", seconds: int = 10,
           **machine: object) -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("1G"), duration_ns=seconds * S, **machine))  # type: ignore[arg-type]
    k.create_cgroup("/r", memory_max=M(limit))
    k.spawn("reader", "/r", (Step("touch", "file", M(file), path="/data/f",
                                  duration_ns=seconds * S, pattern=pattern),))
    return k


# -- sequential readers ----------------------------------------------------------------------


def test_a_sequential_pass_that_cannot_stay_resident_misses_every_page() -> None:
    k = reader("sequential", "256M")
    k.run(2 * S)
    cg = k.mem_cgroup("/r")
    assert cg is not None
    maj0 = cg.vm_events("pgpgin")  # pages read in (a read() miss is no page fault)
    k.run(10 * S)
    m = k.machine
    # Every page of a pass comes from disk: at a page per (read + cached-speed) time.
    per_page = (m.refault_ns * PAGE_SIZE / m.readahead + PAGE_SIZE * S / m.read_bandwidth
                + PAGE_SIZE * S / m.touch_rate)
    rate = (cg.vm_events("pgpgin") - maj0) / 8
    assert cg.vm_events("pgmajfault") == 0
    assert rate == pytest.approx(S / per_page, rel=0.05)
    assert cg.usage() <= M("64M")


def test_a_sequential_pass_that_fits_misses_only_once() -> None:
    k = reader("sequential", "32M")
    k.run()
    cg = k.mem_cgroup("/r")
    assert cg is not None
    assert cg.vm_events("pgpgin") == M("32M") // PAGE_SIZE
    assert cg.vm_events("workingset_refault_file") == 0


def test_random_access_misses_what_is_not_resident() -> None:
    k = reader("random", "256M")
    k.run()
    cg = k.mem_cgroup("/r")
    assert cg is not None
    # A quarter resident: three in four touches miss, so faults run at 3/4 of the
    # touches, each costing a read and a cached-speed touch.
    m = k.machine
    touches = k.process("reader")
    assert touches.stall_ns > 0
    # Misses per second against the random model's prediction (miss_frac = 3/4).
    maj = cg.vm_events("pgpgin")
    per_touch = 0.75 * m.refault_ns + PAGE_SIZE * S / m.touch_rate
    assert maj / 10 == pytest.approx(0.75 * S / per_touch, rel=0.1)


# -- the kernel's workingset rule -------------------------------------------------------------


@pytest.mark.parametrize("file", ["80M", "96M", "128M", "256M"])
def test_workingset_share_falls_with_the_refault_distance(file: str) -> None:
    """Measured on Linux 6.18 (docs/sim-vs-kernel.md: random reader, 64M memcg, 20 s):
    activations per refault 57/40/36/13 %, restores 46/26/17/3 % at 80/96/128/256M."""
    measured = {"80M": (0.57, 0.46), "96M": (0.40, 0.26), "128M": (0.36, 0.17),
                "256M": (0.13, 0.03)}
    k = reader("random", file, seconds=20, refault_stall="workingset")
    k.run()
    cg = k.mem_cgroup("/r")
    assert cg is not None
    refaults = cg.vm_events("workingset_refault_file")
    activate = cg.vm_events("workingset_activate_file") / refaults
    restore = cg.vm_events("workingset_restore_file") / refaults
    act_k, res_k = measured[file]
    assert activate == pytest.approx(act_k, abs=0.13)
    assert restore == pytest.approx(res_k, abs=0.08)


def test_sequential_refaults_beyond_the_active_list_never_stall_on_memory() -> None:
    k = reader("sequential", "256M", refault_stall="workingset")
    k.run()
    cg = k.mem_cgroup("/r")
    assert cg is not None
    assert cg.vm_events("workingset_refault_file") > 0
    assert cg.vm_events("workingset_activate_file") == 0
    # Memory stall is reclaim only: reclaim_large_ns a page, pages readahead brought in.
    mem_ns = cg.pressure(Resource.MEMORY).some.total * 1000
    steal = cg.vm_events("pgsteal")
    assert mem_ns == pytest.approx(steal * k.machine.reclaim_large_ns, rel=0.01, abs=2e6)


def test_reclaim_costs_reclaim_ns_a_small_page_and_less_for_readahead_folios() -> None:
    """Writing a file larger than the limit: nothing refaults, so the writer's memory
    stall is exactly reclaim_ns per page reclaimed. A sequential first pass: the same,
    at reclaim_large_ns a page."""
    k = SimKernel(MachineSpec(memory=M("1G"), reclaim_ns=5_000, reclaim_large_ns=70))
    cg = k.create_cgroup("/w", memory_max=M("64M"))
    k.spawn("writer", "/w", (Step("alloc", "file", M("100M"), path="/out"), Step("sleep")))
    k.run(2 * S)
    steal = cg.vm_events("pgsteal")
    assert steal == M("36M") // PAGE_SIZE
    assert k.process("writer").stall_ns == pytest.approx(steal * 5_000, rel=1e-3)
    assert cg.pressure(Resource.MEMORY).some.total * 1000 == pytest.approx(
        steal * 5_000, rel=1e-3)
    k = reader("sequential", "256M", seconds=1, refault_stall="workingset",
               reclaim_ns=5_000, reclaim_large_ns=70)
    k.run(S // 4)  # within the first pass
    cg = k.mem_cgroup("/r")
    assert cg is not None and cg.vm_events("workingset_refault_file") == 0
    steal = cg.vm_events("pgsteal")
    assert steal > 0
    assert k.process("reader").stall_ns == pytest.approx(steal * 70, rel=1e-3)


def test_memory_high_reclaim_is_a_stall_too() -> None:
    k = SimKernel(MachineSpec(memory=M("1G"), reclaim_ns=10_000))
    cg = k.create_cgroup("/h", memory_high=M("40M"))
    k.spawn("cache", "/h", (Step("alloc", "file", M("30M"), path="/c"), Step("sleep")))
    k.spawn("anon", "/h", (Step("alloc", "anon", M("20M")), Step("sleep")), start_ns=S)
    k.run(3 * S)
    proc = k.process("anon")
    # Going 10M over high, reclaim_high() takes the cache back below high: no throttle,
    # but the reclaim is the allocating task's memory stall.
    assert cg.usage() <= M("40M") + 64 * PAGE_SIZE
    steal = cg.vm_events("pgsteal")
    assert steal >= M("10M") // PAGE_SIZE
    assert proc.stall_ns == steal * 10_000


# -- scenario keys ------------------------------------------------------------------------------


def test_scenario_keys_for_the_new_machine_and_step_settings() -> None:
    sc = parse_scenario("""
[machine]
refault_stall = "workingset"
cap_sys_resource = false
readahead = "8M"
read_bandwidth = "2G/s"
reclaim_cost = "3us"
reclaim_cost_large = "50us"
miss_cpu = "40us"

[[process]]
name = "r"
program = [ { op = "touch", kind = "file", size = "1M", pattern = "sequential" } ]
""")
    m = sc.machine
    assert (m.refault_stall, m.cap_sys_resource, m.readahead, m.read_bandwidth) == (
        "workingset", False, M("8M"), M("2G"))
    assert (m.reclaim_ns, m.reclaim_large_ns, m.miss_cpu_ns) == (3_000, 50_000, 40_000)
    assert sc.processes[0].program[0].pattern == "sequential"
    with pytest.raises(Exception, match="pattern is random or sequential"):
        parse_scenario('[[process]]\nname = "r"\nprogram = [ { op = "touch", kind = "file",'
                       ' size = "1M", pattern = "backwards" } ]\n')
    with pytest.raises(Exception, match="refault_stall is all or workingset"):
        parse_scenario('[machine]\nrefault_stall = "some"\n')


def test_the_thrash_example_scenario_loads() -> None:
    sc = load_scenario(REPO / "examples" / "thrash.toml")
    assert sc.processes and sc.processes[0].program[0].op == "touch"


# -- unprivileged triggers ----------------------------------------------------------------------


class Watch(PsiOps):
    name = "watch"

    def __init__(self, window_us: int, threshold_us: int = 100_000) -> None:
        self.window_us, self.threshold_us = window_us, threshold_us
        self.times: list[float] = []

    def init(self, psi: Psi) -> int:
        psi.create_trigger(0, Resource.MEMORY, self.threshold_us, self.window_us)
        return 0

    def handle_psi_event(self, psi: Psi, trigger: object) -> None:
        self.times.append(psi.kernel.clock.now())


def squeezed(**machine: object) -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("1G"), **machine))  # type: ignore[arg-type]
    k.create_cgroup("/h", memory_high=M("20M"), swap_max=0)
    k.spawn("hog", "/h", hold("200M"))
    return k


def test_without_cap_sys_resource_windows_must_be_multiples_of_two_seconds() -> None:
    k = squeezed(cap_sys_resource=False)
    with pytest.raises(KernelError) as err:
        k.psi_trigger_create(0, Resource.MEMORY, 100_000, 1_000_000, False)
    assert err.value.errno == errno.EINVAL
    k.psi_trigger_create(0, Resource.MEMORY, 100_000, 2_000_000, False)
    # With it, any window from 1 us to 10 s.
    squeezed().psi_trigger_create(0, Resource.MEMORY, 100_000, 1_000_000, False)


def test_unprivileged_triggers_fire_on_the_averaging_clock() -> None:
    k = squeezed(cap_sys_resource=False)
    watch = Watch(2_000_000)
    rt = Runtime(k, sink=EventList())
    rt.attach_psi(watch)
    k.run(11 * S)
    rt.close()
    # Evaluated only when the averages are (every PSI period, 2.004 s at HZ=250), at the
    # first tick after; at most once per window, and not in the first window after boot.
    expected = [-(-n * PSI_PERIOD_NS // TICK) * TICK / S for n in range(1, 6)]
    assert watch.times == pytest.approx(expected)


def test_privileged_triggers_fire_on_the_rtpoll_clock() -> None:
    k = squeezed()
    watch = Watch(2_000_000)
    rt = Runtime(k, sink=EventList())
    rt.attach_psi(watch)
    k.run(11 * S)
    rt.close()
    # psimon polls every window/10: the first event at the first poll once a window has
    # passed since boot, then once per window.
    assert watch.times[0] == pytest.approx(2.01)
    assert all(b - a == pytest.approx(2.0) for a, b in itertools.pairwise(watch.times))


# -- pressure files ------------------------------------------------------------------------------


def test_an_idle_cgroups_averages_decay_when_read() -> None:
    k = SimKernel(MachineSpec(memory=M("1G")))
    cg = k.create_cgroup("/h", memory_high=M("20M"), swap_max=0)
    k.spawn("hog", "/h", (Step("alloc", "anon", M("40M")), Step("exit")))
    k.run(5 * S)
    assert k.process("hog").state == "running"
    busy = cg.pressure(Resource.MEMORY).some.avg10
    k.process("hog").state = "sleeping"  # it stops: nothing in /h runs any more
    k._exit(k.process("hog"), "exited")
    k.run(65 * S)
    idle = cg.pressure(Resource.MEMORY)
    assert busy > 20.0
    # The period the hog stopped in was averaged when it ended (psi_avgs_work runs once
    # more after activity), then 60 s without stall decay avg10 by (1677/2048)^29: to
    # well under 1% of what it was. (Averaged only now, the stall of that last period
    # would land in the latest sample and show about 6%.)
    assert idle.some.avg10 < busy / 100
    assert idle.some.total > 0


# -- parking: long work and sleep steps are skipped by the tick loop, without effect ------------


def steady() -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("1G"), duration_ns=30 * S))
    k.create_cgroup("/w")
    k.create_cgroup("/t", memory_max=M("32M"))
    k.spawn("worker", "/w", (Step("alloc", "anon", M("8M")), Step("work", duration_ns=7 * S),
                             Step("sleep", duration_ns=3 * S), Step("work", duration_ns=5 * S),
                             Step("sleep")))
    k.spawn("napper", "/w", (Step("sleep", duration_ns=1_234_567_891),
                             Step("work", duration_ns=S // 3), Step("exit")))
    k.spawn("thrash", "/t", (Step("touch", "file", M("48M"), path="/d",
                                  duration_ns=6 * S), Step("sleep")), start_ns=S)
    return k


def test_parked_work_is_accounted_to_the_nanosecond() -> None:
    k = steady()
    k.run(30 * S)
    assert k.process("worker").work_ns == 12 * S
    assert k.process("napper").work_ns == S // 3
    assert k.process("napper").state == "exited"
    s = summarize(k)
    assert {p.name: p.work_done_s for p in s.processes}["worker"] == 12.0


def test_stepping_and_running_give_the_same_machine() -> None:
    a, b = steady(), steady()
    a.run(30 * S)
    while b.clock.now_ns() < 30 * S:
        b.step()
    assert summarize(a) == summarize(b)
    for cga, cgb in zip(a.root.walk(), b.root.walk(), strict=True):
        for res in Resource:
            assert cga.pressure(res) == cgb.pressure(res)
        assert cga.vm == cgb.vm  # type: ignore[attr-defined]


def test_a_parked_worker_makes_full_zero_in_its_cgroups() -> None:
    """On one CPU, a cgroup with one stalled and one working task: some, but no full,
    stall (the working task clears PSI_MEM_FULL on the CPU they share)."""
    k = SimKernel(MachineSpec(memory=M("1G"), cpus=1))
    cg = k.create_cgroup("/m", memory_high=M("20M"), swap_max=0)
    k.spawn("worker", "/m", (Step("work", duration_ns=10 * S), Step("sleep")))
    k.spawn("hog", "/m", hold("100M"), start_ns=S)
    k.run(10 * S)
    p = cg.pressure(Resource.MEMORY)
    assert p.some.total > 5_000_000
    assert p.full.total < 50_000  # only the ticks where the worker was not yet parked
    k.run(12 * S)  # the worker is done: now the hog alone, full stall
    assert cg.pressure(Resource.MEMORY).full.total > 1_500_000


def test_on_two_cpus_a_worker_elsewhere_leaves_the_stalled_cpu_full() -> None:
    """The same two tasks on two CPUs: the hog's CPU is fully stalled, the worker's not
    at all, and each weighs by its non-idle time (collect_percpu_times), so some and full
    are both half the hog's stall."""
    k = SimKernel(MachineSpec(memory=M("1G"), cpus=2))
    cg = k.create_cgroup("/m", memory_high=M("20M"), swap_max=0)
    k.spawn("worker", "/m", (Step("work", duration_ns=10 * S), Step("sleep")))
    k.spawn("hog", "/m", hold("100M"), start_ns=S)
    k.run(10 * S)
    assert (k.process("worker").cpu, k.process("hog").cpu) == (0, 1)
    p = cg.pressure(Resource.MEMORY)
    hog_stall_us = k.process("hog").stall_ns // 1000
    assert 2_000_000 < p.some.total == p.full.total
    assert abs(p.some.total - hog_stall_us // 2) < 20_000  # the ticks before parking


def test_a_worker_killed_while_parked_loses_the_work_it_did() -> None:
    k = SimKernel(MachineSpec(memory=M("1G")))
    k.create_cgroup("/w")
    k.spawn("worker", "/w", (Step("work", duration_ns=20 * S), Step("sleep")))
    k.run(3 * S + 5 * TICK)
    worker = k.process("worker")
    assert k.out_of_memory(None) == 1  # the default killer's only choice
    assert worker.victim and worker.work_ns == 0
    assert worker.work_lost_ns == 3 * S + 5 * TICK
    k.run(4 * S)
    assert worker.state == "exited" and worker.work_lost_ns == 3 * S + 5 * TICK


def test_one_scenario_gives_one_trace() -> None:
    """Two runs of the same scenario file give the same events and the same summary."""
    sc = load_scenario(REPO / "examples" / "thrash.toml")
    out = []
    for _ in range(2):
        k = SimKernel.from_scenario(sc)
        events = EventList()
        rt = Runtime(k, sink=events, budget_s=None)
        rt.attach_psi(ThrashGuard())
        k.run()
        rt.close()
        out.append(([e.to_dict() | {"handlers": None} for e in events.events], summarize(k)))
    assert out[0] == out[1]
    assert any(isinstance(e, PsiEventRecord) for e in events.events)
