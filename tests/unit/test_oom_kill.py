"""The default killer's steps (oomkit.kernel.oom_kill) on hand-made tasks of a simulator tree."""

from __future__ import annotations

from oomkit.kernel.base import PAGE_SIZE, Task
from oomkit.kernel.oom_kill import (
    for_each_process,
    mem_cgroup_get_oom_group,
    oom_kill_targets,
    scan_order,
    select_bad_process,
)
from oomkit.kernel.sim import MachineSpec, SimKernel, Step
from oomkit.kernel.sim.memcg import SimCgroup

MiB = 1 << 20
TP = 1_000_000  # totalpages: oom_score_adj 1 is 1000 pages


def _task(cg: SimCgroup, pid: int, rss_pages: int, adj: int = 0, **kw: object) -> Task:
    return Task(pid, f"t{pid}", cg, adj, rss_pages * PAGE_SIZE, 0, 0, pid, **kw)  # type: ignore[arg-type]


def _kernel() -> tuple[SimKernel, SimCgroup]:
    k = SimKernel(MachineSpec())
    return k, k.create_cgroup("/a")


def _never(_: Task) -> bool:
    return False


def test_highest_points_win_and_ties_go_to_the_later_task() -> None:
    _, cg = _kernel()
    tasks = [_task(cg, 10, 100), _task(cg, 11, 300), _task(cg, 12, 300), _task(cg, 13, 200)]
    found = select_bad_process(tasks, TP, _never)
    assert found.chosen is tasks[2] and found.points == 300 and found.waiting_for is None


def test_negative_points_are_still_chosen() -> None:
    # The kernel starts from LONG_MIN: a task below zero beats no task at all.
    _, cg = _kernel()
    tasks = [_task(cg, 10, 100, adj=-500), _task(cg, 11, 100, adj=-400)]
    found = select_bad_process(tasks, TP, _never)
    assert found.chosen is tasks[1] and found.points == 100 - 400 * 1000


def test_unkillable_tasks_are_skipped() -> None:
    _, cg = _kernel()
    init = _task(cg, 1, 900)
    kthread = _task(cg, 20, 900, kthread=True)
    protected = _task(cg, 21, 900, adj=-1000)
    plain = _task(cg, 22, 1)
    assert select_bad_process([init, kthread, protected, plain], TP, _never).chosen is plain
    assert select_bad_process([init, kthread, protected], TP, _never).chosen is None


def test_an_exiting_victim_aborts_the_scan() -> None:
    _, cg = _kernel()
    big, victim, small = _task(cg, 10, 900), _task(cg, 11, 1), _task(cg, 12, 5)
    found = select_bad_process([big, victim, small], TP, lambda t: t is victim)
    assert found.chosen is None and found.waiting_for is victim
    # oom_score_adj -1000 does not hide a victim (oom_badness comes after the check)...
    shielded = _task(cg, 13, 1, adj=-1000)
    assert select_bad_process([shielded], TP, lambda t: True).waiting_for is shielded
    # ... but init and kernel threads are skipped before it.
    assert select_bad_process([_task(cg, 1, 1)], TP, lambda t: True).waiting_for is None


def test_scan_orders() -> None:
    k, a = _kernel()
    b = k.create_cgroup("/a/b")
    k.create_cgroup("/c")
    prog = (Step("alloc", kind="anon", size=MiB), Step("sleep"))
    p1 = k.spawn("in-b", b, prog)
    p2 = k.spawn("in-a", a, prog)
    k.run(k.clock.now_ns() + 50_000_000)
    # mem_cgroup_scan_tasks: pre-order, a's own tasks before b's.
    assert [t.pid for t in scan_order(a)] == [p2.pid, p1.pid]
    # for_each_process: fork order.
    assert [t.pid for t in for_each_process(k.root_mem_cgroup())] == [p1.pid, p2.pid]


def test_oom_group_is_the_highest_below_the_domain() -> None:
    k = SimKernel(MachineSpec())
    k.create_cgroup("/svc", oom_group=True)
    mid = k.create_cgroup("/svc/mid", oom_group=True)
    leaf = k.create_cgroup("/svc/mid/leaf")
    assert mem_cgroup_get_oom_group(leaf, None) is not None
    assert mem_cgroup_get_oom_group(leaf, None).path == "/svc"  # type: ignore[union-attr]
    assert mem_cgroup_get_oom_group(leaf, mid) == mid  # not above the OOM domain
    assert mem_cgroup_get_oom_group(k.create_cgroup("/plain"), None) is None


def test_targets_victim_first_then_killable_group_members() -> None:
    k = SimKernel(MachineSpec())
    group = k.create_cgroup("/g", oom_group=True)
    prog = (Step("alloc", kind="anon", size=MiB), Step("sleep"))
    k.spawn("one", group, prog)
    k.spawn("protected", group, prog, oom_score_adj=-1000)
    k.spawn("two", group, prog)
    k.run(k.clock.now_ns() + 50_000_000)
    one, protected, two = group.tasks()
    assert oom_kill_targets(two, group) == [two, one]
    assert oom_kill_targets(two, None) == [two]
    assert protected not in oom_kill_targets(one, group)
