"""psi_declare: turn sustained memory pressure into an OOM (the kernel would not).

A thrashing cgroup keeps reclaiming and refaulting; it never fails an allocation, so the
kernel never calls the OOM killer while its work stops. This policy puts a "full" memory
trigger on the system and on every cgroup (created later ones too) and, when one fires,
declares an OOM there with the constraint text CONSTRAINT_PSI_MEM. The OOM then runs the
usual path: attached OomOps first, the default killer last.

Defaults: full stall of 500 ms within 2 s (2 s windows work without CAP_SYS_RESOURCE).
"""

from __future__ import annotations

from oomkit.errors import OomkitError
from oomkit.kernel.base import PsiTrigger, Resource
from oomkit.kernel.psi_trigger import trigger_refused
from oomkit.ops import Psi, PsiOps
from oomkit.policy_args import check_trigger


class PsiDeclare(PsiOps):
    name = "psi_declare"

    def __init__(self, threshold_ms: int = 500, window_ms: int = 2000,
                 system: bool = True, cgroups: bool = True) -> None:
        check_trigger(threshold_ms / 1000, window_ms / 1000, "threshold_ms", "window_ms", "ms")
        self.threshold_us = threshold_ms * 1000
        self.window_us = window_ms * 1000
        self.system = system
        self.cgroups = cgroups

    def _watch(self, psi: Psi, cgroup_id: int) -> None:
        try:
            psi.create_trigger(cgroup_id, Resource.MEMORY, self.threshold_us,
                               self.window_us, full=True)
        except OomkitError as exc:
            if trigger_refused(exc):
                raise  # the kernel refused these values: an error, logged (QA Q6)
            # a cgroup without pressure files (v1) or gone already

    def init(self, psi: Psi) -> int:
        if self.system:
            self._watch(psi, 0)
        if self.cgroups:
            for cg in psi.kernel.root_mem_cgroup().walk():
                if cg.parent is not None:
                    self._watch(psi, cg.id)
        return 0

    def handle_cgroup_online(self, psi: Psi, cgroup_id: int) -> None:
        if self.cgroups:
            self._watch(psi, cgroup_id)

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        memcg = psi.kernel.mem_cgroup(trigger.cgroup_id) if trigger.cgroup_id else None
        if trigger.cgroup_id and memcg is None:
            return  # gone meanwhile
        psi.kernel.out_of_memory(memcg, 0, constraint_text="CONSTRAINT_PSI_MEM")
