"""The BPF OOM selftest's handler (tools/testing/selftests/bpf/progs/test_oom.c), in Python.

Attached to a cgroup it declines, passing the OOM on to the system-wide handler. System-
wide, it walks the OOM domain's leaves in post-order, ranks them by usage minus page
cache, skips a leaf holding an oom_score_adj -1000 task, and kills every task of the
largest one.
"""

from __future__ import annotations

from oomkit import Cgroup, OomContext, OomControl, OomOps


def _killable(cg: Cgroup) -> bool:
    return all(t.oom_score_adj != -1000 for t in cg.tasks())


class SeedTestOom(OomOps):
    name = "test_out_of_memory"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        if ctx.cgroup_id:
            return False  # pass to the system-level handler
        root = oc.memcg or oc.kernel.root_mem_cgroup()
        victim, max_usage = None, 0
        for cg in root.walk("post"):
            if cg.nr_descendants:
                continue
            usage = max(0, cg.usage() - cg.page_state("file"))
            if usage > max_usage and _killable(cg):
                victim, max_usage = cg, usage
        if victim is None:
            return False
        ret = False
        for task in victim.tasks():
            if not task.is_oom_victim:
                oc.kill_process(task, "bpf oom test")
            ret = True
        return ret
