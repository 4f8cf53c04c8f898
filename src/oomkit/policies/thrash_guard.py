"""thrash_guard: declare an OOM in a cgroup that thrashes its page cache.

A cgroup whose file working set does not fit under its memory.max re-reads the same data
from disk forever. Nothing fails to allocate, so the kernel never declares an OOM. How the
stall shows depends on the distance: the kernel counts a refault as a memory stall only
when the page was evicted recently (a working set that nearly fits), otherwise the task
waits on IO (a working set far larger than the limit; see docs/sim-vs-kernel.md). This
policy puts a "full" trigger for both memory and IO on every cgroup with a memory.max and,
when one fires, declares an OOM there with CONSTRAINT_PSI_THRASH, but only if the cgroup
is refaulting: IO pressure without refaults is a reader streaming new data, not thrashing.

Needs per-cgroup pressure files (cgroup v2, or the simulator).
"""

from __future__ import annotations

from oomkit.errors import OomkitError
from oomkit.kernel.base import PsiTrigger, Resource
from oomkit.kernel.psi_trigger import trigger_refused
from oomkit.ops import Psi, PsiOps
from oomkit.policy_args import check_trigger


class ThrashGuard(PsiOps):
    name = "thrash_guard"

    def __init__(self, threshold_ms: int = 500, window_ms: int = 2000,
                 min_refaults_per_s: int = 1000) -> None:
        check_trigger(threshold_ms / 1000, window_ms / 1000, "threshold_ms", "window_ms", "ms")
        self.threshold_us = threshold_ms * 1000
        self.window_us = window_ms * 1000
        self.min_refaults_per_s = min_refaults_per_s
        self._seen: dict[int, tuple[float, int]] = {}  # cgroup id -> (time, refaults)

    def _refaults(self, psi: Psi, cgroup_id: int) -> int | None:
        cg = psi.kernel.mem_cgroup(cgroup_id)
        if cg is None:
            return None
        return cg.vm_events("workingset_refault_file")

    def _watch(self, psi: Psi, cgroup_id: int) -> None:
        cg = psi.kernel.mem_cgroup(cgroup_id)
        if cg is None or cg.parent is None or cg.memory_max is None:
            return
        try:
            for res in (Resource.MEMORY, Resource.IO):
                psi.create_trigger(cgroup_id, res, self.threshold_us, self.window_us,
                                   full=True)
            self._seen[cgroup_id] = (psi.kernel.clock.now(),
                                     cg.vm_events("workingset_refault_file"))
        except OomkitError as exc:
            if trigger_refused(exc):
                raise  # the kernel refused these values: an error, logged (QA Q6)
            # no per-cgroup pressure here (cgroup v1), or the cgroup just went

    def init(self, psi: Psi) -> int:
        for cg in psi.kernel.root_mem_cgroup().walk():
            self._watch(psi, cg.id)
        return 0

    def handle_cgroup_online(self, psi: Psi, cgroup_id: int) -> None:
        self._watch(psi, cgroup_id)

    def handle_cgroup_offline(self, psi: Psi, cgroup_id: int) -> None:
        self._seen.pop(cgroup_id, None)

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        now = psi.kernel.clock.now()
        refaults = self._refaults(psi, trigger.cgroup_id)
        if refaults is None:
            return
        then, before = self._seen.get(trigger.cgroup_id, (now, refaults))
        self._seen[trigger.cgroup_id] = (now, refaults)
        elapsed = max(now - then, trigger.window_us / 1e6)
        if (refaults - before) / elapsed < self.min_refaults_per_s:
            return  # stalled, but not re-reading what it had: not thrashing
        memcg = psi.kernel.mem_cgroup(trigger.cgroup_id)
        if memcg is not None:
            psi.kernel.out_of_memory(memcg, 0, constraint_text="CONSTRAINT_PSI_THRASH")
