"""The BPF PSI selftest (tools/testing/selftests/bpf/progs/test_psi.c), in Python.

SeedTestPsi puts a full memory trigger (100 ms in 1 s) on /psi_test/cg2 and, when it
fires, declares an OOM there with the constraint text CONSTRAINT_PSI_MEM. KillAll, an
OomOps for /psi_test/cg2, kills every task of the OOMing cgroup.
"""

from __future__ import annotations

from oomkit import OomContext, OomControl, OomOps, Psi, PsiOps, PsiTrigger, Resource

CGROUP = "/psi_test/cg2"


class SeedTestPsi(PsiOps):
    name = "test_psi"

    def __init__(self) -> None:
        self.online: list[int] = []
        self.offline: list[int] = []

    def init(self, psi: Psi) -> int:
        cg = psi.kernel.mem_cgroup(CGROUP)
        if cg is None:
            return -2  # -ENOENT: nothing to watch
        psi.create_trigger(cg.id, Resource.MEMORY, 100_000, 1_000_000, full=True)
        return 0

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        memcg = psi.kernel.mem_cgroup(trigger.cgroup_id)
        if memcg is not None:
            psi.kernel.out_of_memory(memcg, 0, constraint_text="CONSTRAINT_PSI_MEM")

    def handle_cgroup_online(self, psi: Psi, cgroup_id: int) -> None:
        self.online.append(cgroup_id)

    def handle_cgroup_offline(self, psi: Psi, cgroup_id: int) -> None:
        self.offline.append(cgroup_id)


class KillAll(OomOps):
    name = "test_psi_kill"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        if oc.memcg is None:
            return False
        for task in oc.memcg.tasks():
            if not task.is_oom_victim:
                oc.kill_process(task, "bpf psi test")
        return oc.memory_freed
