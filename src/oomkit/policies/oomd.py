"""oomd: its detectors and its four kill plugins, whole cgroups killed.

Mirrors facebookincubator/oomd (plugins/PressureAbove, SwapFree, and the kill plugins
KillMemoryGrowth, KillSwapUsage, KillPressure, KillPgScan over BaseKillPlugin), with the
defaults of its example config:

- ``oomd`` (PsiOps): a ``cgroups`` glob's memory "some" avg10 above
  ``pressure_threshold`` (60 %) for ``pressure_duration`` (30 s) declares an OOM there
  (CONSTRAINT_OOMD_PRESSURE); free swap under ``swap_free_threshold`` (10 %) declares a
  machine OOM (CONSTRAINT_OOMD_SWAP). oomd ticks every second; here
  oomkit.policies.poll.PollWatch does.
- ``oomd_kill`` (OomOps): ranks the leaf cgroups of the OOM's domain with ``plugin`` on a
  pressure OOM and ``swap_plugin`` on a swap OOM, and kills the winner whole:
  ``kill_by_memory_size_or_growth`` (the largest if it holds ``size_threshold`` % of the
  candidates' memory, else the fastest growing, else the largest), ``kill_by_swap_usage``
  (most swap), ``kill_by_pressure`` (highest memory pressure), ``kill_by_pg_scan``
  (highest pgscan rate). ``candidates`` are oomd's kill plugins' "cgroup" globs (without
  them: the domain's leaves). oomd's post_action_delay (15 s) is the daemon's
  ``post_action_delay``: the oomd preset sets it. A ``swap_free_threshold`` of 0 turns
  the swap detector off (for a second ``oomd`` entry with other cgroups).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from oomkit.kernel.base import Cgroup, PolicyKernel
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.policies import cause, prefs, sysmem
from oomkit.policies.poll import PollWatch, Sustained
from oomkit.policies.systemd_oomd import swap_usage
from oomkit.policy_args import CgroupGlobs, Duration, Percent


class OomdWatch(PollWatch):
    """oomd's detectors: pressure above a threshold for a duration, free swap below one."""

    name = "oomd"

    def __init__(self, cgroups: CgroupGlobs = ("/*",), pressure_threshold: Percent = 60.0,
                 pressure_duration: Duration = 30.0, swap_free_threshold: Percent = 10.0,
                 wake: Duration = 0.01, window: Duration = 2.0) -> None:
        super().__init__(wake, window)
        self.pressure = Sustained(cgroups, pressure_threshold, pressure_duration,
                                  cause.own_some_avg10)
        self.swap_free = swap_free_threshold

    def poll(self, kernel: PolicyKernel, now: float) -> None:
        info = sysmem.meminfo(kernel)
        if info is not None and info.swap_total and self.swap_free and \
                info.swap_free_percent < self.swap_free:
            kernel.out_of_memory(None, 0, constraint_text="CONSTRAINT_OOMD_SWAP")
        for cg in self.pressure.due(kernel.root_mem_cgroup(), now):
            kernel.out_of_memory(cg, 0, constraint_text="CONSTRAINT_OOMD_PRESSURE")


Ranker = Callable[[list[Cgroup], float, cause.Activity], Cgroup | None]


def by_size_or_growth(cgs: list[Cgroup], now: float, act: cause.Activity,
                      size_threshold: float = 50.0) -> Cgroup | None:
    total = sum(cg.usage() for cg in cgs) or 1
    largest = max(cgs, key=lambda cg: cg.usage())
    if 100 * largest.usage() / total >= size_threshold:
        return largest
    growing = max(cgs, key=lambda cg: act.rates(cg, now).growth)
    return growing if act.rates(growing, now).growth > 0 else largest


PLUGINS: dict[str, Ranker] = {
    "kill_by_memory_size_or_growth": by_size_or_growth,
    "kill_by_swap_usage": lambda cgs, now, act: max(
        (cg for cg in cgs if swap_usage(cg) > 0), key=swap_usage, default=None),
    "kill_by_pressure": lambda cgs, now, act: max(
        cgs, key=lambda cg: (cause.own_some_avg10(cg), cg.usage())),
    "kill_by_pg_scan": lambda cgs, now, act: max(
        (cg for cg in cgs if act.rates(cg, now).pgscan > 0),
        key=lambda cg: act.rates(cg, now).pgscan, default=None),
}


class Oomd(OomOps):
    """oomd's kill plugins: size or growth, swap usage, pressure, pgscan; cgroups killed whole."""

    name = "oomd_kill"

    def __init__(self, plugin: str = "kill_by_memory_size_or_growth",
                 swap_plugin: str = "kill_by_swap_usage", candidates: CgroupGlobs = (),
                 avoid: CgroupGlobs = (), protect: CgroupGlobs = ()) -> None:
        for p in (plugin, swap_plugin):
            if p not in PLUGINS:
                raise ValueError(f"unknown oomd plugin {p!r} (known: {', '.join(PLUGINS)})")
        self.plugin, self.swap_plugin = PLUGINS[plugin], PLUGINS[swap_plugin]
        self.candidates = tuple(candidates)
        self.prefs = prefs.Preferences.of(protect=protect, avoid=avoid)

    def _candidates(self, root: Cgroup) -> list[Cgroup]:
        """The cgroups matching ``candidates`` (oomd's kill plugins' "cgroup" globs) in
        the OOM's domain; without globs, its leaves."""
        if not self.candidates:
            return [cg for cg in cause.leaves(root) if cg.parent is not None]
        return [cg for cg in cause.cgroups(root) if cg.parent is not None and any(
            fnmatch.fnmatchcase(cg.path, g) for g in self.candidates)]

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        text = oc.constraint_text
        if text not in ("CONSTRAINT_OOMD_SWAP", "CONSTRAINT_OOMD_PRESSURE"):
            return False
        rank = self.swap_plugin if text == "CONSTRAINT_OOMD_SWAP" else self.plugin
        now, act = oc.kernel.clock.now(), cause.tracker(oc.kernel)
        by_pref: dict[int, list[Cgroup]] = {}
        for cg in self._candidates(oc.memcg or oc.kernel.root_mem_cgroup()):
            pref = self.prefs.cgroup(cg)
            if pref is not prefs.OMIT:
                by_pref.setdefault(pref, []).append(cg)
        for pref in sorted(by_pref, reverse=True):  # avoided ones only when nothing else
            victim = rank(by_pref[pref], now, act)
            if victim is not None:
                return oc.kill_cgroup(victim, f"oomd: {text}") > 0
        return False
