"""The kernel's default OOM killer, once: victim selection and the memory.oom.group widening.

Pure over :class:`~oomkit.kernel.base.Cgroup` and :class:`~oomkit.kernel.base.Task`: no
I/O of its own beyond the accessors, no kill. The simulator, the live backend (for
declared OOMs, which the kernel itself is not in) and :class:`oomkit.ops.OomControl` all
choose and widen through here, so they agree, ties included. Each step mirrors the
function of mm/oom_kill.c (Linux 6.18) it is named after:

- :func:`oom_badness`: the task's points (``oom_badness``).
- :func:`select_bad_process`: the scan over the OOM domain's tasks, each one through
  :func:`oom_evaluate_task`: kernel threads and init are skipped; a task that is already
  an OOM victim aborts the scan (the kernel waits for its memory rather than killing a
  second task); the highest points win, and on equal points the task evaluated *later*
  wins (``points < chosen_points`` is what skips a task, so ``>=`` replaces the chosen).
- :func:`scan_order`: which tasks, in which order: the memcg's subtree pre-order, each
  cgroup's tasks in turn (``mem_cgroup_scan_tasks``), or, for an OOM of the whole
  machine, every task in fork order (``for_each_process``).
- :func:`mem_cgroup_get_oom_group` and :func:`oom_kill_targets`: ``oom_kill_process``
  kills the victim, then, if a cgroup between the victim and the OOM domain has
  ``memory.oom.group`` set, every other task of the highest such cgroup
  (``oom_kill_memcg_member``), except the unkillable ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from oomkit.errors import CgroupGone
from oomkit.kernel.base import OOM_SCORE_ADJ_MIN, Cgroup, Task


def oom_badness(task: Task, totalpages: int) -> int | None:
    """``oom_badness``: pages of rss + swap entries + page tables, plus ``oom_score_adj``
    thousandths of ``totalpages`` (the division first, as the kernel does it). None
    (the kernel's LONG_MIN): never chosen (init, kernel threads, oom_score_adj -1000)."""
    return task.oom_badness(totalpages)


def oom_unkillable_task(task: Task) -> bool:
    """``oom_unkillable_task``: init and kernel threads (not oom_score_adj -1000, which
    oom_badness rules out after the victim check)."""
    return task.pid == 1 or task.kthread


@dataclass(frozen=True, slots=True)
class Selection:
    """What :func:`select_bad_process` found.

    ``chosen``/``points``: the victim and its badness (None: no killable task).
    ``waiting_for``: the scan was aborted by this task, an OOM victim still exiting
    (``oc->chosen == -1`` in the kernel); nobody is to be killed now.
    """

    chosen: Task | None = None
    points: int | None = None
    waiting_for: Task | None = None


def select_bad_process(
    tasks: Iterable[Task], totalpages: int, is_oom_victim: Callable[[Task], bool]
) -> Selection:
    """``select_bad_process``: ``oom_evaluate_task`` over ``tasks`` in the given order
    (see :func:`scan_order`). ``is_oom_victim``: ``tsk_is_oom_victim``, the backend's."""
    chosen: Task | None = None
    chosen_points: int | None = None  # the kernel starts from LONG_MIN
    for task in tasks:
        if oom_unkillable_task(task):
            continue
        if is_oom_victim(task):
            return Selection(waiting_for=task)
        points = oom_badness(task, totalpages)
        if points is None or (chosen_points is not None and points < chosen_points):
            continue
        chosen, chosen_points = task, points  # equal points: the later task wins
    return Selection(chosen, chosen_points)


def scan_order(domain: Cgroup) -> Iterator[Task]:
    """The tasks of ``domain``'s subtree in ``mem_cgroup_scan_tasks`` order: cgroups
    pre-order, each cgroup's own tasks in turn. A cgroup that vanishes meanwhile is
    skipped (its tasks are gone too)."""
    for cg in domain.walk():
        try:
            tasks = cg.tasks()
        except CgroupGone:
            continue
        yield from tasks


def for_each_process(root: Cgroup) -> list[Task]:
    """Every task below ``root`` in ``for_each_process`` order: the order of fork (the
    kernel's task list), i.e. by start time, then PID."""
    return sorted(scan_order(root), key=lambda t: (t.start_time, t.pid))


def mem_cgroup_get_oom_group(victim_cgroup: Cgroup, domain: Cgroup | None) -> Cgroup | None:
    """``mem_cgroup_get_oom_group``: the highest cgroup with ``memory.oom.group`` set on
    the way from the victim's cgroup up to the OOM domain (the OOMing memcg; for an OOM
    of the whole machine the root, which itself never counts). None: the victim alone."""
    group: Cgroup | None = None
    cg: Cgroup | None = victim_cgroup
    while cg is not None and cg.parent is not None:
        if cg.oom_group:
            group = cg
        if domain is not None and cg == domain:
            break
        cg = cg.parent
    return group


def oom_kill_targets(victim: Task, group: Cgroup | None) -> list[Task]:
    """``oom_kill_process``: the victim first, then, with an oom group, every other task
    of the group's subtree (``oom_kill_memcg_member``: not init, not kernel threads, not
    oom_score_adj -1000)."""
    targets = [victim]
    if group is not None:
        for task in scan_order(group):
            if task == victim or oom_unkillable_task(task):
                continue
            if task.oom_score_adj <= OOM_SCORE_ADJ_MIN:
                continue
            targets.append(task)
    return targets
