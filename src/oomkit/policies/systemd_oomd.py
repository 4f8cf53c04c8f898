"""systemd-oomd: ManagedOOMSwap= and ManagedOOMMemoryPressure=, whole cgroups killed.

Mirrors systemd's src/oom (oomd-manager.c monitor_*_contexts_handler, oomd-util.c
oomd_select_by_swap_usage / oomd_select_by_pgscan_rate, defaults of oomd.conf(5)):

- ``systemd_oomd`` (PsiOps). Swap: when swap used exceeds ``swap_used_limit`` (90 %),
  declare a machine OOM (CONSTRAINT_OOMD_SWAP). Memory pressure: each ``monitored``
  cgroup (globs; systemd: units with ManagedOOMMemoryPressure=kill) whose memory "full"
  avg10 stays above ``memory_pressure_limit`` (60 %) for ``memory_pressure_duration``
  (30 s) gets a declared OOM (CONSTRAINT_OOMD_PRESSURE). systemd-oomd polls every second;
  here oomkit.policies.poll.PollWatch does.
- ``systemd_oomd_kill`` (OomOps). Swap: the leaf cgroup using the most swap, above
  ``swap_min_usage``. Pressure: the leaf below the monitored cgroup with the highest
  pgscan rate since the last sample, then the most memory; none without reclaim or usage.
  Candidates with ``user.oomd_omit`` are skipped and ``user.oomd_avoid`` come last
  (prefs.managed_oom_preference); the chosen cgroup is killed whole (cgroup.kill).
"""

from __future__ import annotations

from oomkit.kernel.base import PAGE_SIZE, Cgroup, PolicyKernel
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.policies import cause, prefs, sysmem
from oomkit.policies.poll import PollWatch, Sustained
from oomkit.policy_args import CgroupGlobs, Duration, Percent, Size


class SystemdOomdWatch(PollWatch):
    """systemd-oomd's triggers: swap used over a limit, or pressure over one for long."""

    name = "systemd_oomd"

    def __init__(self, swap_used_limit: Percent = 90.0, memory_pressure_limit: Percent = 60.0,
                 memory_pressure_duration: Duration = 30.0, monitored: CgroupGlobs = ("/*",),
                 wake: Duration = 0.001, window: Duration = 0.5) -> None:
        super().__init__(wake, window)
        self.swap_limit = swap_used_limit
        self.pressure = Sustained(monitored, memory_pressure_limit, memory_pressure_duration,
                                  cause.own_full_avg10)

    def poll(self, kernel: PolicyKernel, now: float) -> None:
        info = sysmem.meminfo(kernel)
        if info is not None and info.swap_total and info.swap_used_percent > self.swap_limit:
            kernel.out_of_memory(None, 0, constraint_text="CONSTRAINT_OOMD_SWAP")
        for cg in self.pressure.due(kernel.root_mem_cgroup(), now):
            kernel.out_of_memory(cg, 0, constraint_text="CONSTRAINT_OOMD_PRESSURE")


def swap_usage(cg: Cgroup) -> int:
    return sum(t.swapents for t in cg.tasks()) * PAGE_SIZE


class SystemdOomd(OomOps):
    """systemd-oomd's victim: most swap, or most reclaim (pgscan rate); killed whole."""

    name = "systemd_oomd_kill"

    def __init__(self, swap_min_usage: Size = 0) -> None:
        self.swap_min_usage = swap_min_usage
        self.prefs = prefs.Preferences()

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        text = oc.constraint_text
        if text not in ("CONSTRAINT_OOMD_SWAP", "CONSTRAINT_OOMD_PRESSURE"):
            return False
        now = oc.kernel.clock.now()
        activity = cause.tracker(oc.kernel)
        ranked = []
        for cg in cause.leaves(oc.memcg or oc.kernel.root_mem_cgroup()):
            pref = self.prefs.cgroup(cg)
            if pref is prefs.OMIT or cg.parent is None:
                continue
            if text == "CONSTRAINT_OOMD_SWAP":
                key: tuple[int, ...] = (swap_usage(cg),)
                if key[0] <= self.swap_min_usage:
                    continue
            else:
                key = (activity.rates(cg, now).pgscan, cg.usage())
                if key == (0, 0):
                    continue
            ranked.append(((pref, *key), cg))
        if not ranked:
            return False
        victim = max(ranked, key=lambda r: r[0])[1]
        return oc.kill_cgroup(victim, f"systemd-oomd: {text}") > 0
