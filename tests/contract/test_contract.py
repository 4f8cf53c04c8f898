"""The Kernel contract (SPEC sections 3 and 4), once, on every backend (see backends.py).

Each test is one behaviour every backend must show the same way: the accessors a policy
may call, the return codes of a declared OOM, the error of every refused call, and the
default killer's choice, ties included. Where a behaviour cannot exist on a backend (no
per-cgroup PSI on v1, no memory.oom.group on v1, no polling on a tree of regular files)
the test says so and skips there.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterator

import pytest

from oomkit.errors import CgroupGone, KernelError, Unkillable
from oomkit.kernel.base import (
    PAGE_SIZE,
    Cgroup,
    Constraint,
    Kernel,
    OomFlags,
    OomRequest,
    Pressure,
    Resource,
    Task,
)
from oomkit.kernel.linux import LinuxKernel, LivePsiTrigger
from oomkit.kernel.sim import MachineSpec, SimKernel
from oomkit.ops import MAX_REASON, OomContext, OomControl, OomOps
from oomkit.runtime import Runtime

from .backends import Harness

MiB = 1 << 20
LIMIT = 64 * MiB
STAT_ITEMS = ("anon", "file", "shmem", "file_mapped")
EVENT_ITEMS = ("pgfault", "pgmajfault")
MEMORY_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


def _unused_id(kernel: Kernel) -> int:
    return max(c.id for c in kernel.root_mem_cgroup().walk()) + 1_000_003


def _request(kernel: Kernel, memcg: Cgroup | None) -> OomRequest:
    return OomRequest(memcg, 0, Constraint.DECLARED, None, kernel.oom_totalpages(memcg))


def _default_victims(kernel: Kernel, memcg: Cgroup | None) -> list[int]:
    return [v.pid for v in kernel.default_oom(_request(kernel, memcg)).victims]


@pytest.fixture
def runtime(be: Harness) -> Iterator[Runtime]:
    rt = Runtime(be.kernel, budget_s=5.0)
    yield rt
    rt.close()


def _errno(exc: pytest.ExceptionInfo[KernelError]) -> int | None:
    return exc.value.errno


# -- SPEC section 3: the tree -------------------------------------------------------------------
def test_root_mem_cgroup(be: Harness) -> None:
    root = be.kernel.root_mem_cgroup()
    assert root.path == "/" and root.parent is None
    assert be.kernel.mem_cgroup("/") == root
    assert be.kernel.mem_cgroup(root.id) == root


def test_mem_cgroup_by_path_and_id(be: Harness) -> None:
    a = be.mkcg("a")
    assert be.kernel.mem_cgroup("/a") == a
    assert be.kernel.mem_cgroup("a") == a
    assert be.kernel.mem_cgroup(a.id) == a
    assert a.parent == be.kernel.root_mem_cgroup()
    assert be.kernel.mem_cgroup("/no-such") is None
    assert be.kernel.mem_cgroup(_unused_id(be.kernel)) is None


def test_walk_children_and_descendants(be: Harness) -> None:
    a = be.mkcg("a")
    b = be.mkcg("a/b")
    c = be.mkcg("a/c")
    assert {x.path for x in a.children()} == {"/a/b", "/a/c"}
    pre = [x.path for x in a.walk()]
    post = [x.path for x in a.walk("post")]
    assert pre[0] == "/a" and sorted(pre[1:]) == ["/a/b", "/a/c"]
    assert post[-1] == "/a" and sorted(post[:-1]) == ["/a/b", "/a/c"]
    assert a.nr_descendants == 2 and b.nr_descendants == 0
    assert c.parent == a
    with pytest.raises(ValueError):
        list(a.walk("sideways"))  # type: ignore[arg-type]


# -- SPEC section 3: statistics ---------------------------------------------------------------
def test_usage_and_memory_stat(be: Harness) -> None:
    cg = be.mkcg("s", memory_max=LIMIT)
    be.spawn(cg, 1)
    cg.flush_stats()
    assert isinstance(cg.usage(), int) and cg.usage() >= 0
    for item in STAT_ITEMS:
        value = cg.page_state(item)
        assert isinstance(value, int) and value >= 0, item
    for item in EVENT_ITEMS:
        value = cg.vm_events(item)
        assert isinstance(value, int) and value >= 0, item


def test_unknown_stat_item_is_einval(be: Harness) -> None:
    cg = be.mkcg("s")
    with pytest.raises(KernelError) as exc:
        cg.page_state("no_such_item")
    assert _errno(exc) == errno.EINVAL
    with pytest.raises(KernelError) as exc:
        cg.vm_events("no_such_event")
    assert _errno(exc) == errno.EINVAL


def test_memory_events(be: Harness) -> None:
    cg = be.mkcg("e", memory_max=LIMIT)
    for item in MEMORY_EVENTS:
        value = cg.memory_events(item)
        assert isinstance(value, int) and value >= 0, item


def test_pressure(be: Harness) -> None:
    root = be.kernel.root_mem_cgroup()
    p = root.pressure(Resource.MEMORY)
    assert isinstance(p, Pressure)
    assert p.some.avg10 >= 0.0 and p.some.total >= 0 and p.full.total >= 0
    cg = be.mkcg("p")
    if be.version == 1:
        with pytest.raises(KernelError) as exc:
            cg.pressure()
        assert _errno(exc) == errno.EOPNOTSUPP  # no per-cgroup PSI on cgroup v1
    else:
        assert isinstance(cg.pressure(), Pressure)


def test_flush_stats_and_clock(be: Harness) -> None:
    cg = be.mkcg("f")
    cg.flush_stats()
    t0 = be.kernel.clock.now()
    t1 = be.kernel.clock.now()
    assert isinstance(t0, float) and t1 >= t0


# -- SPEC section 3: tasks -------------------------------------------------------------------
def test_tasks(be: Harness) -> None:
    cg = be.mkcg("t", memory_max=LIMIT)
    pids = be.spawn(cg, 2)
    tasks = cg.tasks()
    assert [t.pid for t in tasks] == pids
    for t in tasks:
        assert t.cgroup == cg and isinstance(t.comm, str) and t.comm
        assert t.rss > 0 and t.swapents >= 0 and t.pgtables_bytes >= 0
        assert t.oom_score_adj == 0 and not t.kthread
        assert t.is_oom_victim is False


def test_oom_badness_formula(be: Harness) -> None:
    cg = be.mkcg("b", memory_max=LIMIT)
    be.spawn(cg, 1, oom_score_adj=500)
    (t,) = cg.tasks()
    tp = be.kernel.oom_totalpages(cg)
    pages = t.rss // PAGE_SIZE + t.swapents + t.pgtables_bytes // PAGE_SIZE
    assert t.oom_score_adj == 500
    assert t.oom_badness(tp) == pages + 500 * (tp // 1000)


def test_adj_min_is_never_chosen(be: Harness) -> None:
    cg = be.mkcg("u", memory_max=LIMIT)
    try:
        be.spawn(cg, 1, oom_score_adj=-1000)
    except PermissionError:
        pytest.skip("oom_score_adj -1000 needs CAP_SYS_RESOURCE here")
    (t,) = cg.tasks()
    assert t.unkillable and t.oom_badness(be.kernel.oom_totalpages(cg)) is None
    outcome = be.kernel.default_oom(_request(be.kernel, cg))
    assert outcome.victims == () and not outcome.progress
    oc = OomControl(be.kernel, cg, 0, Constraint.DECLARED, None, 1)
    with pytest.raises(Unkillable):
        oc.kill_process(t)


# -- SPEC section 3: limits -------------------------------------------------------------------
def test_limits_read_back(be: Harness) -> None:
    cg = be.mkcg("l", memory_max=LIMIT)
    assert cg.memory_max == LIMIT
    be.kernel.set_memory_max(cg, 32 * MiB)
    assert cg.memory_max == 32 * MiB
    be.kernel.set_memory_max(cg, None)
    assert cg.memory_max is None
    for value in (cg.memory_high, cg.memory_low, cg.memory_min, cg.swap_max):
        assert value is None or (isinstance(value, int) and value >= 0)
    assert isinstance(cg.oom_group, bool)


def test_oom_totalpages(be: Harness) -> None:
    cg = be.mkcg("tp", memory_max=LIMIT)
    tp = be.kernel.oom_totalpages(cg)
    assert tp >= LIMIT // PAGE_SIZE
    assert tp <= be.kernel.oom_totalpages(None)


# -- SPEC section 4: declared OOMs --------------------------------------------------------------
def test_out_of_memory_unknown_flags_einval(be: Harness) -> None:
    cg = be.mkcg("o")
    assert be.kernel.out_of_memory(cg, 0, OomFlags(2)) == -errno.EINVAL


@pytest.mark.parametrize("order", [-1, 11])
def test_out_of_memory_bad_order_einval(be: Harness, order: int) -> None:
    cg = be.mkcg("o")
    assert be.kernel.out_of_memory(cg, order) == -errno.EINVAL


def test_out_of_memory_gone_memcg_einval(be: Harness) -> None:
    cg = be.mkcg("o")
    be.rmcg(cg)
    assert be.kernel.out_of_memory(cg) == -errno.EINVAL


def test_out_of_memory_progress_is_1(be: Harness, runtime: Runtime) -> None:
    cg = be.mkcg("o", memory_max=LIMIT)
    be.spawn(cg, 2)
    tasks = cg.tasks()  # before: a killed task leaves cgroup.procs as it exits
    assert be.kernel.out_of_memory(cg) == 1
    assert [t.pid for t in tasks if be.kernel.task_is_oom_victim(t)] == [tasks[1].pid]


def test_out_of_memory_nothing_to_kill_is_0(be: Harness, runtime: Runtime) -> None:
    cg = be.mkcg("o", memory_max=LIMIT)
    assert be.kernel.out_of_memory(cg) == 0


def test_out_of_memory_without_runtime_runs_the_default_killer(be: Harness) -> None:
    cg = be.mkcg("o", memory_max=LIMIT)
    be.spawn(cg, 2)
    tasks = cg.tasks()
    assert be.kernel.out_of_memory(cg) == 1
    assert [t.pid for t in tasks if be.kernel.task_is_oom_victim(t)] == [tasks[1].pid]


def test_out_of_memory_during_an_oom_is_ebusy(be: Harness, runtime: Runtime) -> None:
    cg = be.mkcg("o", memory_max=LIMIT)
    be.spawn(cg, 1)
    inner: list[int] = []

    class Nested(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            inner.append(oc.kernel.out_of_memory(oc.memcg))
            return False

    runtime.attach_oom(Nested(), cg)
    assert be.kernel.out_of_memory(cg) == 1  # the default killer after the handler
    assert inner == [-errno.EBUSY]


def test_out_of_memory_handler_first(be: Harness, runtime: Runtime) -> None:
    cg = be.mkcg("o", memory_max=LIMIT)
    be.spawn(cg, 2)
    tasks = cg.tasks()

    class KillFirst(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            assert oc.memcg is not None
            oc.kill_process(oc.memcg.tasks()[0])
            return True

    runtime.attach_oom(KillFirst(), cg)
    assert be.kernel.out_of_memory(cg) == 1
    assert [t.pid for t in tasks if be.kernel.task_is_oom_victim(t)] == [tasks[0].pid]


# -- refused calls ----------------------------------------------------------------------------
def test_set_memory_max_on_the_root_einval(be: Harness) -> None:
    if be.owns_root:
        kernel: Kernel = be.kernel
        other = None
    else:  # the real root memcg of this machine: refused before any write
        other = kernel = LinuxKernel(kmsg_path=None, state_file=None, watchdog=False)
    try:
        with pytest.raises(KernelError) as exc:
            kernel.set_memory_max(kernel.root_mem_cgroup(), 64 * MiB)
        assert _errno(exc) == errno.EINVAL
    finally:
        if other is not None:
            other.close()


def test_psi_trigger_window_over_10s_einval(be: Harness) -> None:
    with pytest.raises(KernelError) as exc:
        be.kernel.psi_trigger_create(0, Resource.MEMORY, 100_000, 12_000_000, False)
    assert _errno(exc) == errno.EINVAL


@pytest.mark.parametrize("nbytes", [0, -PAGE_SIZE])
def test_reclaim_nothing_einval(be: Harness, nbytes: int) -> None:
    cg = be.mkcg("r", memory_max=LIMIT)
    with pytest.raises(KernelError) as exc:
        be.kernel.reclaim(cg, nbytes)
    assert _errno(exc) == errno.EINVAL


def test_foreign_psi_trigger_einval(be: Harness) -> None:
    foreign: object
    if isinstance(be.kernel, SimKernel):
        foreign = LivePsiTrigger(0, Resource.MEMORY, False, 100_000, 2_000_000, "/x")
    else:
        other = SimKernel(MachineSpec())
        foreign = other.psi_trigger_create(0, Resource.MEMORY, 100_000, 2_000_000, False)
    for trigger in (foreign, object()):
        with pytest.raises(KernelError) as exc:
            be.kernel.psi_trigger_destroy(trigger)  # type: ignore[arg-type]
        assert _errno(exc) == errno.EINVAL


def test_psi_trigger_threshold_over_window_einval(be: Harness) -> None:
    with pytest.raises(KernelError) as exc:
        be.kernel.psi_trigger_create(0, Resource.MEMORY, 3_000_000, 2_000_000, False)
    assert _errno(exc) == errno.EINVAL


def test_psi_trigger_absent_cgroup_gone(be: Harness) -> None:
    with pytest.raises(CgroupGone):
        be.kernel.psi_trigger_create(
            _unused_id(be.kernel), Resource.MEMORY, 100_000, 2_000_000, False
        )


def test_psi_trigger_per_cgroup(be: Harness) -> None:
    cg = be.mkcg("psi")
    if be.version == 1:
        with pytest.raises(KernelError) as exc:
            be.kernel.psi_trigger_create(cg.id, Resource.MEMORY, 100_000, 2_000_000, False)
        assert _errno(exc) == errno.EOPNOTSUPP
        return
    if not be.psi_triggers:
        pytest.skip("a tree of regular files cannot be polled for PSI events")
    trig = be.kernel.psi_trigger_create(cg.id, Resource.MEMORY, 100_000, 2_000_000, True)
    assert (trig.cgroup_id, trig.full, trig.threshold_us) == (cg.id, True, 100_000)
    be.kernel.psi_trigger_destroy(trig)
    be.kernel.psi_trigger_destroy(trig)  # again: nothing


def test_psi_trigger_system_wide(be: Harness) -> None:
    if not be.psi_triggers:
        pytest.skip("a tree of regular files cannot be polled for PSI events")
    trig = be.kernel.psi_trigger_create(0, Resource.MEMORY, 100_000, 2_000_000, False)
    assert (trig.cgroup_id, trig.resource, trig.window_us) == (0, Resource.MEMORY, 2_000_000)
    be.kernel.psi_trigger_destroy(trig)


def test_offline_cgroup_reads_are_gone(be: Harness) -> None:
    cg = be.mkcg("gone", memory_max=LIMIT)
    be.rmcg(cg)
    for read in (
        cg.usage,
        cg.tasks,
        lambda: cg.page_state("anon"),
        lambda: cg.vm_events("pgfault"),
        lambda: cg.memory_events("oom_kill"),
    ):
        with pytest.raises(CgroupGone):
            read()


def test_offline_cgroup_actions_are_gone(be: Harness) -> None:
    cg = be.mkcg("gone", memory_max=LIMIT)
    be.rmcg(cg)
    with pytest.raises(CgroupGone):
        be.kernel.set_memory_max(cg, 32 * MiB)
    with pytest.raises(CgroupGone):
        be.kernel.reclaim(cg, MiB)
    with pytest.raises(CgroupGone):
        be.kernel.kill_cgroup(cg, "test")
    with pytest.raises(CgroupGone):
        be.kernel.psi_trigger_create(cg.id, Resource.MEMORY, 100_000, 2_000_000, False)


def test_vanished_cgroup_is_not_found(be: Harness) -> None:
    cg = be.mkcg("gone")
    be.rmcg(cg)
    assert be.kernel.mem_cgroup("/gone") is None
    assert be.kernel.mem_cgroup(cg.id) is None
    assert "/gone" not in [c.path for c in be.kernel.root_mem_cgroup().walk()]


# -- the default killer -----------------------------------------------------------------------
def test_tie_the_later_task_is_chosen(be: Harness) -> None:
    cg = be.mkcg("tie", memory_max=LIMIT)
    _, second = be.spawn(cg, 2)
    tp = be.kernel.oom_totalpages(cg)
    points = [t.oom_badness(tp) for t in cg.tasks()]
    assert points[0] == points[1] is not None  # the precondition: equal badness
    assert _default_victims(be.kernel, cg) == [second]


def test_tie_of_three_the_last_is_chosen(be: Harness) -> None:
    cg = be.mkcg("tie", memory_max=LIMIT)
    pids = be.spawn(cg, 3)
    assert _default_victims(be.kernel, cg) == [pids[-1]]


def test_tie_across_cgroups_scan_order(be: Harness) -> None:
    # mem_cgroup_scan_tasks walks the subtree pre-order, children in creation order, which
    # is cgroup id order (kernfs ids only grow; the backends read the directory inode):
    # the tied task in the child with the larger id is scanned last and chosen. On the
    # kernel and the simulator that is the child made later; a fake tree on a filesystem
    # that reuses inode numbers may number them the other way round.
    for parent, first, second in (("a", "a/b1", "a/b2"), ("c", "c/z", "c/y")):
        top = be.mkcg(parent, memory_max=LIMIT)
        one, two = be.mkcg(first), be.mkcg(second)
        in_one, in_two = be.spawn(one, 2, into=[one, two])  # tasks in leaves only (v2)
        expected = in_two if two.id > one.id else in_one
        if be.name in ("sim", "live_v1", "live_v2"):
            assert two.id > one.id  # made later, numbered later (the names do not matter)
        assert _default_victims(be.kernel, top) == [expected]


def test_higher_badness_wins_whatever_the_order(be: Harness) -> None:
    cg = be.mkcg("hb", memory_max=LIMIT)
    (big,) = be.spawn(cg, 1, oom_score_adj=500)
    be.spawn(cg, 1)
    assert _default_victims(be.kernel, cg) == [big]


def test_default_waits_for_an_exiting_victim(be: Harness) -> None:
    if be.name.startswith("live"):
        # A SIGKILLed twin (stopped, nothing to unwind) has left its memcg before the
        # next scan, and the kernel would choose another then too (tests/live covers the
        # wait: a victim killed less than recheck_s ago holds further OOMs back).
        pytest.skip("a killed task here exits at once: nothing left to wait for")
    cg = be.mkcg("w", memory_max=LIMIT)
    be.spawn(cg, 2)
    first = cg.tasks()[0]
    assert [t.pid for t in be.kernel.kill_tasks([first], "test", None)] == [first.pid]
    outcome = be.kernel.default_oom(_request(be.kernel, cg))
    assert outcome.waited and outcome.victims == () and outcome.progress


def test_oom_group_widens_the_kill(be: Harness) -> None:
    if not be.oom_group:
        pytest.skip("no memory.oom.group on cgroup v1")
    top = be.mkcg("g", memory_max=LIMIT)
    group = be.mkcg("g/svc", oom_group=True)
    x = be.mkcg("g/svc/x")
    leaf = be.mkcg("g/svc/leaf")
    outside = be.mkcg("g/other")
    in_group = be.spawn(x, 1) + be.spawn(leaf, 1, oom_score_adj=500)
    be.spawn(outside, 1)
    del group
    # The leaf's task is the choice (the most points); memory.oom.group on svc takes
    # x's task too, and nothing outside svc.
    victims = _default_victims(be.kernel, top)
    assert victims[0] == in_group[1]
    assert sorted(victims) == sorted(in_group)


def test_no_oom_group_kills_one(be: Harness) -> None:
    top = be.mkcg("g", memory_max=LIMIT)
    svc = be.mkcg("g/svc")
    be.spawn(svc, 2)
    assert len(_default_victims(be.kernel, top)) == 1


# -- the actions ---------------------------------------------------------------------------
def test_kill_cgroup_kills_the_subtree(be: Harness) -> None:
    a = be.mkcg("k", memory_max=LIMIT)
    b = be.mkcg("k/b")
    c = be.mkcg("k/b/c")
    d = be.mkcg("k/d")
    pids = be.spawn(c, 3, into=[c, c, d])
    del b
    killed = be.kernel.kill_cgroup(a, "test")
    assert sorted(t.pid for t in killed) == sorted(pids)


def test_kill_tasks_never_a_recycled_pid(be: Harness) -> None:
    cg = be.mkcg("k", memory_max=LIMIT)
    be.spawn(cg, 1)
    (t,) = cg.tasks()
    stale = dataclasses.replace(t, start_time=t.start_time + 12345)
    assert be.kernel.kill_tasks([stale], "test", None) == []
    assert not be.kernel.task_is_oom_victim(t)


def test_task_is_oom_victim_after_kill(be: Harness) -> None:
    cg = be.mkcg("k", memory_max=LIMIT)
    be.spawn(cg, 2)
    killed_one, other = cg.tasks()
    be.kernel.kill_tasks([killed_one], "test", None)
    assert be.kernel.task_is_oom_victim(killed_one)
    assert not be.kernel.task_is_oom_victim(other)


def test_kill_process_through_oom_control(be: Harness) -> None:
    cg = be.mkcg("k", memory_max=LIMIT)
    be.spawn(cg, 2)
    target: Task = cg.tasks()[1]
    oc = OomControl(be.kernel, cg, 0, Constraint.DECLARED, None, be.kernel.oom_totalpages(cg))
    oc.kill_process(target, "test")
    assert oc.memory_freed and [v.pid for v in oc.victims] == [target.pid]


def test_the_handlers_kill_message_goes_with_its_victims(be: Harness) -> None:
    """The message of kill_process and kill_cgroup is the victims' reason in the event
    (the kernel has no place for it: a SIGKILL carries no text)."""
    cg = be.mkcg("k", memory_max=LIMIT)
    alone = be.mkcg("k/alone")  # tasks in leaves only: v2 has no internal processes
    sub = be.mkcg("k/sub")
    be.spawn(cg, 3, into=[alone, sub, sub])
    one = alone.tasks()[0]
    oc = OomControl(be.kernel, cg, 0, Constraint.DECLARED, None, be.kernel.oom_totalpages(cg))
    oc.kill_process(one, "policy: biggest grower, 12M/s")
    assert oc.kill_cgroup(sub, "policy: the job whole") == 2
    first, *rest = oc.victims
    assert (first.pid, first.reason) == (one.pid, "policy: biggest grower, 12M/s")
    assert [v.reason for v in rest] == ["policy: the job whole"] * 2
    other = be.mkcg("k2", memory_max=LIMIT)
    be.spawn(other, 1)
    oc = OomControl(be.kernel, other, 0, Constraint.DECLARED, None,
                    be.kernel.oom_totalpages(other))
    oc.kill_process(other.tasks()[0], "x" * 5000)  # a runaway message: one line of a log
    assert oc.victims[0].reason == "x" * (MAX_REASON - 3) + "..."


def test_missing_file_in_a_live_cgroup_is_not_gone(be: Harness) -> None:
    if not be.name.startswith("fake_"):
        pytest.skip("only a fake tree can lack a file in a live cgroup")
    from .backends import FakeHarness

    assert isinstance(be, FakeHarness)
    cg = be.mkcg("m")
    (be.dir(cg) / "memory.stat").unlink()
    with pytest.raises(KernelError) as exc:
        cg.page_state("anon")
    assert not isinstance(exc.value, CgroupGone) and _errno(exc) == errno.ENOENT


# -- SPEC section 2: the OOM path, as each backend's out_of_memory drives it -------------------
class _Recorder(OomOps):
    """Notes what it was asked (its ctx, the OomControl) and returns ``answer``."""

    def __init__(self, name: str, seen: list[tuple[str, int, str | None]],
                 answer: bool = False) -> None:
        self.name = name
        self._seen = seen
        self._answer = answer

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self._seen.append((self.name, ctx.cgroup_id, oc.memcg.path if oc.memcg else None))
        return self._answer


def test_true_without_freeing_is_not_progress(be: Harness, runtime: Runtime) -> None:
    """SPEC 2.3: a handler returning True that freed nothing does not end the OOM: the
    default killer still runs (and takes the later twin)."""
    cg = be.mkcg("o", memory_max=LIMIT)
    be.spawn(cg, 2)
    tasks = cg.tasks()
    seen: list[tuple[str, int, str | None]] = []
    runtime.attach_oom(_Recorder("liar", seen, answer=True), cg)
    assert be.kernel.out_of_memory(cg) == 1
    assert seen == [("liar", cg.id, "/o")]
    assert [t.pid for t in tasks if be.kernel.task_is_oom_victim(t)] == [tasks[1].pid]


def test_the_walk_goes_from_the_memcg_up(be: Harness, runtime: Runtime) -> None:
    """SPEC 2.2: the OOMing memcg's handler first, then each ancestor's, each with its own
    cgroup in ctx and the OOMing memcg in oc; a cgroup beside the path is not asked."""
    top = be.mkcg("w", memory_max=LIMIT)
    mid = be.mkcg("w/mid")
    leaf = be.mkcg("w/mid/leaf")
    beside = be.mkcg("w/beside")
    be.spawn(leaf, 1)
    seen: list[tuple[str, int, str | None]] = []
    for name, cg in (("top", top), ("leaf", leaf), ("beside", beside), ("mid", mid)):
        runtime.attach_oom(_Recorder(name, seen), cg)
    assert be.kernel.out_of_memory(leaf) == 1  # nobody freed: the default killer
    assert seen == [("leaf", leaf.id, "/w/mid/leaf"), ("mid", mid.id, "/w/mid/leaf"),
                    ("top", top.id, "/w/mid/leaf")]


def test_the_first_handler_that_frees_ends_the_walk(be: Harness, runtime: Runtime) -> None:
    top = be.mkcg("f", memory_max=LIMIT)
    leaf = be.mkcg("f/leaf")
    be.spawn(leaf, 2)
    tasks = leaf.tasks()
    seen: list[tuple[str, int, str | None]] = []

    class KillFirst(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            oc.kill_process(tasks[0], "first")
            return True

    runtime.attach_oom(KillFirst(), leaf)
    runtime.attach_oom(_Recorder("top", seen), top)
    assert be.kernel.out_of_memory(leaf) == 1
    assert seen == []
    assert [t.pid for t in tasks if be.kernel.task_is_oom_victim(t)] == [tasks[0].pid]


def test_a_handler_that_raises_falls_back_to_the_default_killer(
        be: Harness, runtime: Runtime) -> None:
    """SPEC 2.6: an exception is no progress, reported; the default killer runs."""
    cg = be.mkcg("x", memory_max=LIMIT)
    be.spawn(cg, 2)
    tasks = cg.tasks()
    errors: list[str] = []
    runtime.add_sink(lambda e: errors.append(e.error) if hasattr(e, "error") else None)

    class Broken(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            raise RuntimeError("policy bug")

    runtime.attach_oom(Broken(), cg)
    assert be.kernel.out_of_memory(cg) == 1
    assert [t.pid for t in tasks if be.kernel.task_is_oom_victim(t)] == [tasks[1].pid]
    assert errors == ["RuntimeError: policy bug"]


def test_a_declared_oom_as_the_handler_sees_it(be: Harness, runtime: Runtime) -> None:
    """SPEC 4: out_of_memory(memcg, order, flags, constraint_text) is an OOM of constraint
    DECLARED with that order and text, the memcg's totalpages; nothing to kill is 0."""
    cg = be.mkcg("d", memory_max=LIMIT)
    got: list[tuple[object, ...]] = []

    class Look(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            got.append((oc.memcg, oc.order, oc.constraint, oc.constraint_text,
                        oc.totalpages, oc.memory_freed))
            return False

    runtime.attach_oom(Look(), cg)
    assert be.kernel.out_of_memory(cg, 3, constraint_text="CONSTRAINT_PSI_MEM") == 0
    assert got == [(cg, 3, Constraint.DECLARED, "CONSTRAINT_PSI_MEM",
                    be.kernel.oom_totalpages(cg), False)]


@pytest.mark.parametrize("order", [0, 10])
def test_out_of_memory_order_bounds_are_accepted(be: Harness, runtime: Runtime,
                                                 order: int) -> None:
    cg = be.mkcg("o", memory_max=LIMIT)
    assert be.kernel.out_of_memory(cg, order) == 0  # nothing to kill, but not -EINVAL


def test_an_oom_control_expires_with_its_oom(be: Harness, runtime: Runtime) -> None:
    """A handler that keeps its OomControl cannot act with it after the call returned."""
    from oomkit.errors import HandlerExpired

    cg = be.mkcg("e", memory_max=LIMIT)
    be.spawn(cg, 1)
    kept: list[OomControl] = []

    class Keep(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            kept.append(oc)
            return False

    runtime.attach_oom(Keep(), cg)
    be.kernel.out_of_memory(cg)
    (task,) = [t for t in cg.tasks() if not be.kernel.task_is_oom_victim(t)] or [None]
    with pytest.raises(HandlerExpired):
        kept[0].kill_cgroup(cg, "late")
    if task is not None:
        assert not be.kernel.task_is_oom_victim(task)


# -- SPEC section 3: the actions through OomControl --------------------------------------------
def _oc(be: Harness, cg: Cgroup) -> OomControl:
    return OomControl(be.kernel, cg, 0, Constraint.DECLARED, None, be.kernel.oom_totalpages(cg))


def test_kill_cgroup_counts_and_frees(be: Harness) -> None:
    top = be.mkcg("kc", memory_max=LIMIT)
    sub = be.mkcg("kc/sub")
    pids = be.spawn(sub, 2)
    oc = _oc(be, top)
    assert oc.kill_cgroup(sub, "job") == 2
    assert oc.memory_freed and sorted(v.pid for v in oc.victims) == sorted(pids)


def test_kill_cgroup_of_an_empty_cgroup_frees_nothing(be: Harness) -> None:
    top = be.mkcg("kc", memory_max=LIMIT)
    empty = be.mkcg("kc/empty")
    oc = _oc(be, top)
    assert oc.kill_cgroup(empty, "nobody") == 0
    assert not oc.memory_freed and oc.victims == ()


def test_a_kill_outside_the_oom_domain_is_refused(be: Harness) -> None:
    """A memcg OOM ends only by freeing memory charged inside it (Unkillable, EPERM)."""
    domain = be.mkcg("dom", memory_max=LIMIT)
    other = be.mkcg("other", memory_max=LIMIT)
    be.spawn(other, 1)
    (stranger,) = other.tasks()
    oc = _oc(be, domain)
    with pytest.raises(Unkillable) as exc:
        oc.kill_process(stranger, "no")
    assert exc.value.errno == errno.EPERM
    with pytest.raises(Unkillable):
        oc.kill_cgroup(other, "no")
    assert not oc.memory_freed and not be.kernel.task_is_oom_victim(stranger)


def test_raising_memory_max_is_progress_lowering_is_not(be: Harness) -> None:
    cg = be.mkcg("m", memory_max=LIMIT)
    oc = _oc(be, cg)
    oc.set_memory_max(cg, LIMIT // 2)
    assert cg.memory_max == LIMIT // 2 and not oc.memory_freed
    oc.set_memory_max(cg, LIMIT * 2)
    assert cg.memory_max == LIMIT * 2 and oc.memory_freed
    oc = _oc(be, cg)
    oc.set_memory_max(cg, None)
    assert cg.memory_max is None and oc.memory_freed


# -- SPEC section 3: the tree and its tasks ----------------------------------------------------
def test_a_leaf_walks_to_itself(be: Harness) -> None:
    be.mkcg("lf")
    leaf = be.mkcg("lf/leaf")
    assert leaf.children() == [] and leaf.nr_descendants == 0
    assert list(leaf.walk()) == [leaf] and list(leaf.walk("post")) == [leaf]


def test_tasks_are_the_cgroups_own(be: Harness) -> None:
    """cg.tasks(): the tasks in this cgroup itself, not those of its descendants."""
    top = be.mkcg("own", memory_max=LIMIT)
    a, b = be.mkcg("own/a"), be.mkcg("own/b")
    pids = be.spawn(a, 3, into=[a, b, b])
    assert top.tasks() == []
    assert [t.pid for t in a.tasks()] == pids[:1]
    assert sorted(t.pid for t in b.tasks()) == sorted(pids[1:])
    assert all(t.cgroup == b for t in b.tasks())
    assert sorted(t.pid for cg in top.walk() for t in cg.tasks()) == sorted(pids)


def test_no_limit_reads_none_and_oom_group_reads_back(be: Harness) -> None:
    free = be.mkcg("nl")
    assert free.memory_max is None and free.oom_group is False
    grouped = be.mkcg("nl/g", oom_group=be.oom_group)
    assert grouped.oom_group is be.oom_group  # v1 has no memory.oom.group: always False


def test_ids_are_distinct_and_stable(be: Harness) -> None:
    made = [be.mkcg(p) for p in ("i", "i/a", "i/b", "i/a/c")]
    assert len({cg.id for cg in made}) == len(made)
    root_id = be.kernel.root_mem_cgroup().id
    for cg in made:
        assert cg.id != root_id
        again = be.kernel.mem_cgroup(cg.path)
        assert again is not None and again.id == cg.id and again == cg
        found = be.kernel.mem_cgroup(cg.id)
        assert found is not None and found.path == cg.path


def test_a_path_below_a_vanished_cgroup_is_not_found(be: Harness) -> None:
    top = be.mkcg("vp")
    be.rmcg(top)
    assert be.kernel.mem_cgroup("/vp/child") is None
    assert be.kernel.mem_cgroup("/vp") is None


def test_oom_score_adj_max_is_read_back_and_chosen(be: Harness) -> None:
    cg = be.mkcg("adj", memory_max=LIMIT)
    (marked,) = be.spawn(cg, 1, oom_score_adj=1000)
    be.spawn(cg, 1)
    tp = be.kernel.oom_totalpages(cg)
    by_pid = {t.pid: t for t in cg.tasks()}
    assert by_pid[marked].oom_score_adj == 1000
    badness = by_pid[marked].oom_badness(tp)
    assert badness is not None and badness >= 1000 * (tp // 1000)
    assert _default_victims(be.kernel, cg) == [marked]
