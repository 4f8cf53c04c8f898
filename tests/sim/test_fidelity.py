"""The simulator against the kernel's own rules (issue 3): the page-cache thrasher, the
memory.high penalty, reclaim protection, swap.max and the vm_events counters.

Expected numbers are computed here from the kernel's formulas, not read back from the
simulator, so a drift in either shows.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from oomkit import OomContext, OomControl, OomOps, Runtime, SimKernel
from oomkit.events import EventList, OomEvent, PsiEventRecord
from oomkit.kernel.base import PAGE_SIZE, Resource
from oomkit.kernel.sim import MachineSpec, Step
from oomkit.policies.psi_declare import PsiDeclare

from .conftest import M, hold

S = 1_000_000_000
HZ = 1000  # the simulator's CONFIG_HZ for the memory.high penalty


def thrasher(refault_stall: str = "all", file: str = "256M", limit: str = "64M",
             seconds: int = 60) -> SimKernel:
    """examples/thrash.toml: a reader re-reading a file 4x its cgroup's memory.max."""
    k = SimKernel(MachineSpec(memory=M("1G"), duration_ns=seconds * S,
                              refault_stall=refault_stall))
    k.create_cgroup("/thrash", memory_max=M(limit))
    k.spawn("reader", "/thrash", (Step("touch", "file", M(file), path="/data/big",
                                       duration_ns=seconds * S),))
    return k


# -- the thrasher ----------------------------------------------------------------------------


def test_thrasher_runs_a_minute_without_oom_while_some_and_full_climb() -> None:
    k = thrasher()
    cg = k.mem_cgroup("/thrash")
    assert cg is not None
    totals = []
    for second in range(10, 61, 10):
        k.run(second * S)
        p = cg.pressure(Resource.MEMORY)
        totals.append((p.some.total, p.full.total))
    # Both climb through the whole minute, every 10 s by most of those 10 s.
    for (s0, f0), (s1, f1) in itertools.pairwise(totals):
        assert s1 - s0 > 8_000_000 and f1 - f0 > 8_000_000
    p = cg.pressure(Resource.MEMORY)
    # avg60 after a minute: 1 - (1981/2048)^30 of the steady value, about 63%.
    assert p.full.avg10 > 80.0 and 50.0 < p.some.avg60 < 64.0
    # ... and the kernel never sees an OOM: nothing fails to allocate.
    assert cg.memory_events("oom") == 0 and cg.memory_events("oom_kill") == 0
    assert k.ooms == 0 and k.kills == 0
    assert k.process("reader").state == "running"
    assert cg.vm_events("workingset_refault_file") > 100_000
    assert cg.usage() <= M("64M")


def test_psi_declare_kills_the_thrasher_within_one_window_of_the_first_event() -> None:
    k = thrasher()
    events = EventList()
    rt = Runtime(k, sink=events)
    ops = PsiDeclare()
    rt.attach_psi(ops)
    cg = k.mem_cgroup("/thrash")
    assert cg is not None
    # Step tick by tick, keeping the full stall total, to know when the trigger's
    # condition (500 ms of full stall within 2 s) first held.
    window, threshold = ops.window_us * 1000, ops.threshold_us * 1000
    full: list[tuple[int, int]] = []
    breached_at = None
    while k.clock.now_ns() < 60 * S and k.process("reader").state == "running":
        k.step()
        now = k.clock.now_ns()
        full.append((now, cg.pressure(Resource.MEMORY).full.total * 1000))
        past = [v for t, v in full if t <= now - window]
        if breached_at is None and past and full[-1][1] - past[-1] >= threshold:
            breached_at = now / S
    rt.close()
    psi = [e for e in events.events if isinstance(e, PsiEventRecord)]
    ooms = [e for e in events.events if isinstance(e, OomEvent)]
    assert psi, "PsiDeclare never fired on the thrasher"
    first = min(e.time for e in psi)
    assert breached_at is not None
    # No event before the condition held (and never in the first window after boot),
    # and the event follows it within one rtpoll period.
    assert first >= max(breached_at - 0.2, window / S)
    assert first <= breached_at + 0.2 + 1e-9
    reader = k.process("reader")
    assert reader.killed_at is not None
    assert first <= reader.killed_at / S <= first + window / S
    declared = [e for e in ooms if e.constraint == "DECLARED"]
    assert declared and declared[0].constraint_text == "CONSTRAINT_PSI_MEM"
    assert [v.comm for v in declared[0].victims] == ["reader"]


def test_under_the_kernels_rule_a_4x_thrasher_is_io_pressure_not_memory_pressure() -> None:
    """Measured (docs/sim-vs-kernel.md): on the kernel a working set four times the
    memory refaults at long distances; the workingset code flags few refaults, so the
    reader stalls on IO, and a full-memory trigger never fires."""
    k = thrasher("workingset")
    events = EventList()
    rt = Runtime(k, sink=events)
    rt.attach_psi(PsiDeclare())
    k.run()
    rt.close()
    cg = k.mem_cgroup("/thrash")
    assert cg is not None
    assert not [e for e in events.events if isinstance(e, (PsiEventRecord, OomEvent))]
    mem, io = cg.pressure(Resource.MEMORY), cg.pressure(Resource.IO)
    assert mem.full.total < 0.10 * 60e6  # microseconds
    assert io.some.total > 0.70 * 60e6
    refaults = cg.vm_events("workingset_refault_file")
    assert refaults > 100_000
    # Few refaults are flagged: about one in ten activated, a few percent stall.
    assert 0.05 < cg.vm_events("workingset_activate_file") / refaults < 0.25
    assert cg.vm_events("workingset_restore_file") / refaults < 0.05


def test_under_the_kernels_rule_a_near_fit_thrasher_is_memory_pressure() -> None:
    """80M in 64M: short refault distances, most refaults flagged, memory thrash; the
    declared OOM comes within a window of the first event."""
    k = thrasher("workingset", file="80M")
    events = EventList()
    rt = Runtime(k, sink=events)
    rt.attach_psi(PsiDeclare())
    k.run()
    rt.close()
    psi = [e for e in events.events if isinstance(e, PsiEventRecord)]
    assert psi
    first = min(e.time for e in psi)
    killed = k.process("reader").killed_at
    assert killed is not None and first <= killed / S <= first + 2.0


# -- memory.high: calculate_high_delay() ------------------------------------------------------


def calculate_high_delay_jiffies(usage_pages: int, high_pages: int, nr_pages: int) -> int:
    """mm/memcontrol.c calculate_overage() + calculate_high_delay() + the clamp and the
    "not worth sleeping" cut-off of mem_cgroup_handle_over_high()."""
    if usage_pages <= high_pages:
        return 0
    overage = ((usage_pages - max(high_pages, 1)) << 20) // max(high_pages, 1)
    penalty = overage * overage * HZ
    penalty >>= 20  # MEMCG_DELAY_PRECISION_SHIFT
    penalty >>= 14  # MEMCG_DELAY_SCALING_SHIFT
    penalty = penalty * nr_pages // 64  # MEMCG_CHARGE_BATCH
    penalty = min(penalty, 2 * HZ)  # MEMCG_MAX_HIGH_DELAY_JIFFIES
    return 0 if penalty <= HZ // 100 else penalty


@pytest.mark.parametrize(("over_pct", "nr_pages"), [
    (0.5, 64), (3, 64), (5, 64), (10, 64), (10, 16), (10, 200), (15, 64), (40, 64)])
def test_memory_high_penalty_is_the_kernels_formula(over_pct: float, nr_pages: int) -> None:
    high = M("100M")
    usage = high + int(high * over_pct / 100) // PAGE_SIZE * PAGE_SIZE
    k = SimKernel(MachineSpec(memory=M("1G")))
    k.create_cgroup("/h")
    k.spawn("hog", "/h", hold(str(usage)))
    k.run(S)
    proc = k.process("hog")
    assert proc.anon == usage
    cg = k.create_cgroup("/h", memory_high=high)  # write memory.high afterwards
    want = calculate_high_delay_jiffies(usage // PAGE_SIZE, high // PAGE_SIZE, nr_pages)
    got = k.mem.over_high_penalty(proc, nr_pages)
    assert got == want * (S // HZ)
    assert cg.memory_events("high") == 1  # counted whether or not it sleeps
    if over_pct == 10 and nr_pages == 64:
        assert want == 639  # (104857^2 * HZ) >> 34: about 640 ms per batch at 10% over
    if over_pct == 40:
        assert want == 2 * HZ  # clamped: two seconds at most per return to user


def test_memory_high_throttles_without_oom_and_stalls_the_penalty() -> None:
    """An allocation over memory.high pays its penalty as a memory stall."""
    k = SimKernel(MachineSpec(memory=M("1G")))
    cg = k.create_cgroup("/h", memory_high=M("40M"), swap_max=0)
    # 64 pages per 10 ms tick: the kernel's charge batch (MEMCG_CHARGE_BATCH), so the
    # simulator throttles at the same points as the kernel would.
    rate = 64 * PAGE_SIZE * 100
    k.spawn("hog", "/h", (Step("alloc", "anon", M("48M"), rate=rate), Step("sleep")))
    proc = k.process("hog")
    k.run(5 * S)
    # It never gets its 48M: each 64-page batch over 40M sleeps calculate_high_delay(),
    # which grows with the overage. Where the formula says it gets to in 5 s:
    high, batch = M("40M") // PAGE_SIZE, 64
    usage, t = high, M("40M") / rate
    while True:
        usage += batch
        t += batch * PAGE_SIZE / rate + calculate_high_delay_jiffies(usage, high, batch) / HZ
        if t >= 5:
            break
    assert abs(cg.usage() // PAGE_SIZE - usage) <= 2 * batch
    assert M("40M") < cg.usage() < M("48M")
    assert cg.memory_events("max") == 0 and k.ooms == 0 and proc.state == "running"
    assert cg.memory_events("high") > 10
    assert 3 * S < proc.stall_ns < 34 * S // 10  # nearly all the time after reaching high
    # The sleeps are the cgroup's memory stall, some and full (one task).
    p = cg.pressure(Resource.MEMORY)
    assert p.full.total * 1000 == proc.stall_ns == p.some.total * 1000


# -- reclaim: memory.min, memory.low, swap.max -----------------------------------------------


def protected_family() -> tuple[SimKernel, Runtime, EventList]:
    k = SimKernel(MachineSpec(memory=M("1G")))
    k.create_cgroup("/p", memory_max=M("100M"), swap_max=0)
    k.create_cgroup("/p/min", memory_min=M("30M"))
    k.create_cgroup("/p/low", memory_low=M("30M"))
    k.create_cgroup("/p/none")
    for name in ("min", "low", "none"):
        k.spawn(f"cache_{name}", f"/p/{name}",
                (Step("alloc", "file", M("30M"), path=f"/f/{name}"), Step("sleep")))
    events = EventList()
    return k, Runtime(k, sink=events), events


def file_of(k: SimKernel, path: str) -> int:
    cg = k.mem_cgroup(path)
    assert cg is not None
    return cg.page_state("file")


def test_reclaim_takes_unprotected_cache_first() -> None:
    k, rt, _ = protected_family()
    k.run(S)
    k.spawn("grow", "/p/none", hold("20M"))
    k.run(2 * S)
    rt.close()
    # 90M of cache + 20M of anon in 100M: 10M reclaimed, all from /p/none.
    assert file_of(k, "/p/min") == M("30M") and file_of(k, "/p/low") == M("30M")
    assert file_of(k, "/p/none") == M("20M")
    for path in ("/p/min", "/p/low", "/p/none"):
        cg = k.mem_cgroup(path)
        assert cg is not None and cg.memory_events("low") == 0


def test_reclaim_breaches_memory_low_with_a_low_event_but_never_memory_min() -> None:
    k, rt, events = protected_family()
    k.run(S)
    k.spawn("grow", "/p/none", hold("50M"))
    k.run(2 * S)
    rt.close()
    low, mn = k.mem_cgroup("/p/low"), k.mem_cgroup("/p/min")
    assert low is not None and mn is not None
    # /p/none's 30M was not enough for 40M: /p/low gave the rest and counted "low".
    assert file_of(k, "/p/none") == 0
    assert file_of(k, "/p/low") == M("20M")
    assert low.memory_events("low") >= 1
    assert file_of(k, "/p/min") == M("30M") and mn.memory_events("low") == 0
    assert not [e for e in events.events if isinstance(e, OomEvent)]
    # pgscan/pgsteal count exactly what each cgroup gave, and add up to the parent.
    none, parent = k.mem_cgroup("/p/none"), k.mem_cgroup("/p")
    assert none is not None and parent is not None
    assert none.vm_events("pgsteal") == M("30M") // PAGE_SIZE
    assert low.vm_events("pgsteal") == M("10M") // PAGE_SIZE
    assert mn.vm_events("pgsteal") == 0
    assert parent.vm_events("pgsteal") == M("40M") // PAGE_SIZE
    assert parent.vm_events("pgscan") == parent.vm_events("pgsteal")


class SwapAtOom(OomOps):
    """Records the cgroup's swap usage when the OOM comes, and lets the killer act."""

    def __init__(self) -> None:
        self.swap: list[int] = []

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        assert oc.memcg is not None
        self.swap.append(oc.memcg.page_state("swap"))
        return False


def test_swap_max_limits_how_much_anon_reclaim_can_swap() -> None:
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M("1G")))
    events = EventList()
    rt = Runtime(k, sink=events)
    cg = k.create_cgroup("/s", memory_max=M("50M"), swap_max=M("10M"))
    watch = SwapAtOom()
    rt.attach_oom(watch, "/s")
    k.spawn("first", "/s", hold("40M"))
    k.spawn("second", "/s", hold("30M"), start_ns=S // 2)
    k.run(3 * S)
    rt.close()
    # 70M of anon in 50M: reclaim swaps out exactly swap.max (10M), then it is an OOM.
    assert watch.swap and watch.swap[0] == M("10M")
    assert cg.vm_events("pgsteal") == M("10M") // PAGE_SIZE
    assert cg.vm_events("pgscan") == M("10M") // PAGE_SIZE
    ooms = [e for e in events.events if isinstance(e, OomEvent)]
    assert ooms and ooms[0].memcg == "/s" and ooms[0].constraint == "MEMCG"
    assert cg.memory_events("oom") >= 1 and cg.memory_events("oom_kill") >= 1
    assert cg.page_state("swap") <= M("10M") and k.swap_used == cg.page_state("swap")


def test_without_swap_room_anon_is_never_reclaimed() -> None:
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M("1G")))
    cg = k.create_cgroup("/s", memory_max=M("50M"), swap_max=0)
    k.spawn("first", "/s", hold("40M"))
    k.spawn("second", "/s", hold("30M"), start_ns=S // 2)
    k.run(3 * S)
    assert cg.page_state("swap") == 0 and k.swap_used == 0
    assert cg.vm_events("pgscan") == 0 and cg.vm_events("pgsteal") == 0
    assert cg.memory_events("oom") >= 1


# -- vm_events ---------------------------------------------------------------------------------


def test_first_reads_are_reads_not_refaults_nor_faults() -> None:
    """A file that fits: one cold pass, every page read in once (pgpgin), no refault,
    and no page fault: read() misses go through filemap_read, not the fault path."""
    k = thrasher(file="32M", seconds=10)
    k.run()
    cg = k.mem_cgroup("/thrash")
    assert cg is not None
    assert cg.vm_events("pgpgin") == M("32M") // PAGE_SIZE
    assert cg.vm_events("pgmajfault") == cg.vm_events("pgfault") == 0
    assert cg.vm_events("workingset_refault_file") == 0
    assert cg.vm_events("pgscan") == 0 and cg.vm_events("pgsteal") == 0
    # Cold reads wait on IO, not memory.
    assert cg.pressure(Resource.MEMORY).some.total == 0
    assert cg.pressure(Resource.IO).some.total > 0


def test_refaults_pgmajfault_pgscan_and_pgsteal_add_up_in_a_thrash() -> None:
    k = thrasher(seconds=20)
    k.run()
    cg = k.mem_cgroup("/thrash")
    assert cg is not None
    majflt = cg.vm_events("pgpgin")  # pages read in
    assert cg.vm_events("pgmajfault") == 0  # by read(): no page faults
    refaults = cg.vm_events("workingset_refault_file")
    steal = cg.vm_events("pgsteal")
    # Every page read in was a first read (cold) or a refault.
    cold = k.files["/data/big"].seen // PAGE_SIZE
    assert M("200M") // PAGE_SIZE < cold <= M("256M") // PAGE_SIZE
    assert majflt == refaults + cold
    # What came in and is not resident now was reclaimed, page for page.
    assert steal == majflt - cg.page_state("file") // PAGE_SIZE
    assert cg.vm_events("pgscan") == steal
    assert cg.vm_events("pgsteal_file") == cg.vm_events("pgsteal_direct") == steal
    assert cg.vm_events("pgsteal_anon") == cg.vm_events("pgsteal_kswapd") == 0
    root = k.root_mem_cgroup()
    assert root.vm_events("workingset_refault_file") == refaults  # hierarchical


def test_swap_ins_count_as_anon_refaults_and_major_faults() -> None:
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M("1G")))
    cg = k.create_cgroup("/a", memory_max=M("32M"))
    # b is the largest when a's allocation needs room, so b's pages go to swap; then b
    # touches them again.
    k.spawn("b", "/a", (Step("alloc", "anon", M("24M")), Step("sleep", duration_ns=S),
                        Step("touch", "anon", M("24M"), duration_ns=2 * S), Step("sleep")))
    k.spawn("a", "/a", hold("16M"), start_ns=S // 2)
    k.run(4 * S)
    swapped_out = cg.vm_events("pgsteal")
    assert swapped_out >= M("8M") // PAGE_SIZE
    refaults = cg.vm_events("workingset_refault_anon")
    assert refaults > 0
    assert cg.vm_events("workingset_refault_file") == 0
    # Each swap-in is a major fault; the first touches of b's own pages were minor.
    assert cg.vm_events("pgmajfault") == refaults


def test_the_default_model_is_unchanged_by_the_kernels_rule_switch() -> None:
    """refault_stall only moves refault time between memory and IO stall: the reads, the
    refaults and the reclaim are the same under both."""
    a, b = thrasher("all", seconds=10), thrasher("workingset", seconds=10)
    a.run()
    b.run()
    ca, cb = a.mem_cgroup("/thrash"), b.mem_cgroup("/thrash")
    assert ca is not None and cb is not None
    for item in ("pgmajfault", "workingset_refault_file", "pgscan", "pgsteal"):
        assert ca.vm_events(item) == cb.vm_events(item), item
    assert ca.pressure(Resource.IO).some.total == cb.pressure(Resource.IO).some.total
    assert ca.pressure(Resource.MEMORY).some.total > 5 * cb.pressure(
        Resource.MEMORY).some.total
    assert replace(a.machine, refault_stall="workingset") == b.machine
