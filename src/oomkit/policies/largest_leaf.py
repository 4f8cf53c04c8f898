"""largest_leaf: kill every task of the leaf cgroup using the most non-cache memory.

The policy of the BPF OOM selftest, as a ready policy: walk the OOM domain's leaves in
post-order, rank them by usage minus page cache (cache is reclaimable, so it is not what
the kernel is running out of), skip leaves holding an oom_score_adj -1000 task, and kill
every task of the winner. Leaves whose tasks are already dying are skipped, so a second
OOM during an exit does not take a second leaf.
"""

from __future__ import annotations

from oomkit.kernel.base import Cgroup
from oomkit.ops import OomContext, OomControl, OomOps


def killable(cg: Cgroup) -> bool:
    tasks = cg.tasks()
    return bool(tasks) and not any(t.unkillable for t in tasks)


def largest_leaf(root: Cgroup) -> Cgroup | None:
    best: Cgroup | None = None
    best_usage = 0
    for cg in root.walk("post"):
        if cg.nr_descendants:
            continue
        usage = max(0, cg.usage() - cg.page_state("file"))
        if usage > best_usage and killable(cg):
            best, best_usage = cg, usage
    return best


class LargestLeaf(OomOps):
    name = "largest_leaf"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        root = oc.memcg or oc.kernel.root_mem_cgroup()
        victim = largest_leaf(root)
        if victim is None:
            return False
        for task in victim.tasks():
            if not task.is_oom_victim:
                oc.kill_process(task, f"largest_leaf: {victim.path}")
        return True
