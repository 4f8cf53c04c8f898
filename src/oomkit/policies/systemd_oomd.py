"""systemd-oomd: ManagedOOMSwap= and ManagedOOMMemoryPressure=, whole cgroups killed.

Mirrors systemd's src/oom (oomd-manager.c monitor_*_contexts_handler, oomd-util.c
oomd_select_by_swap_usage / oomd_select_by_pgscan_rate, defaults of oomd.conf(5)):

- ``systemd_oomd`` (PsiOps). Swap: when swap used exceeds ``swap_used_limit`` (90 %),
  declare a machine OOM (CONSTRAINT_OOMD_SWAP). Memory pressure: each ``monitored``
  cgroup (globs; systemd: units with ManagedOOMMemoryPressure=kill) whose memory "full"
  avg10 stays above ``memory_pressure_limit`` (60 %) for ``memory_pressure_duration``
  (30 s) gets a declared OOM (CONSTRAINT_OOMD_PRESSURE). systemd-oomd polls every second;
  here a machine-wide memory "some" trigger of ``wake`` per ``window`` is the poll.
- ``systemd_oomd_kill`` (OomOps). Swap: the leaf cgroup using the most swap, above
  ``swap_min_usage``. Pressure: the leaf below the monitored cgroup with the highest
  pgscan rate since the last sample, then the most memory; none without reclaim or usage.
  Candidates with ``user.oomd_omit`` are skipped and ``user.oomd_avoid`` come last
  (prefs.managed_oom_preference); the chosen cgroup is killed whole (cgroup.kill).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from oomkit.kernel.base import PAGE_SIZE, Cgroup, PsiTrigger, Resource
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps
from oomkit.policies import cause, prefs, sysmem
from oomkit.policy_args import Duration, Percent, Size


class SystemdOomdWatch(PsiOps):
    """systemd-oomd's triggers: swap used over a limit, or pressure over one for long."""

    name = "systemd_oomd"

    def __init__(self, swap_used_limit: Percent = 90.0, memory_pressure_limit: Percent = 60.0,
                 memory_pressure_duration: Duration = 30.0, monitored: Sequence[str] = ("/*",),
                 wake: Duration = 0.01, window: Duration = 2.0) -> None:
        self.swap_limit, self.pressure_limit = swap_used_limit, memory_pressure_limit
        self.duration = memory_pressure_duration
        self.monitored = tuple(monitored)
        self.wake_us, self.window_us = int(wake * 1e6), int(window * 1e6)
        self._hit_start: dict[int, float] = {}

    def init(self, psi: Psi) -> int:
        psi.create_trigger(0, Resource.MEMORY, self.wake_us, self.window_us, full=False)
        cause.tracker(psi.kernel).note_tree(psi.kernel.root_mem_cgroup(), psi.kernel.clock.now())
        return 0

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        kernel, now = psi.kernel, psi.kernel.clock.now()
        info = sysmem.meminfo(kernel)
        if info is not None and info.swap_total and info.swap_used_percent > self.swap_limit:
            kernel.out_of_memory(None, 0, constraint_text="CONSTRAINT_OOMD_SWAP")
        root = kernel.root_mem_cgroup()
        for cg in root.walk():
            if cg.parent is None or not any(fnmatch.fnmatchcase(cg.path, g)
                                            for g in self.monitored):
                continue
            if cause.own_full_avg10(cg) <= self.pressure_limit:
                self._hit_start.pop(cg.id, None)
                continue
            start = self._hit_start.setdefault(cg.id, now)
            if now - start >= self.duration:
                self._hit_start.pop(cg.id, None)
                kernel.out_of_memory(cg, 0, constraint_text="CONSTRAINT_OOMD_PRESSURE")
        cause.tracker(kernel).note_tree(root, now)


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
