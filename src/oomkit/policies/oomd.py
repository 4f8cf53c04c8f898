"""oomd: its detectors and its four kill plugins, whole cgroups killed.

Mirrors facebookincubator/oomd (plugins/PressureAbove, SwapFree, and the kill plugins
KillMemoryGrowth, KillSwapUsage, KillPressure, KillPgScan over BaseKillPlugin), with the
defaults of its example config:

- ``oomd`` (PsiOps): a ``cgroups`` glob's memory "some" avg10 above
  ``pressure_threshold`` (60 %) for ``pressure_duration`` (30 s) declares an OOM there
  (CONSTRAINT_OOMD_PRESSURE); free swap under ``swap_free_threshold`` (10 %) declares a
  machine OOM (CONSTRAINT_OOMD_SWAP). oomd ticks every second; here a machine-wide memory
  "some" trigger of ``wake`` per ``window`` is the tick.
- ``oomd_kill`` (OomOps): ranks the leaf cgroups of the OOM's domain with ``plugin`` on a
  pressure OOM and ``swap_plugin`` on a swap OOM, and kills the winner whole:
  ``kill_by_memory_size_or_growth`` (the largest if it holds ``size_threshold`` % of the
  candidates' memory, else the fastest growing, else the largest), ``kill_by_swap_usage``
  (most swap), ``kill_by_pressure`` (highest memory pressure), ``kill_by_pg_scan``
  (highest pgscan rate). oomd's post_action_delay (15 s) is the daemon's
  ``post_action_delay``: the oomd preset sets it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from oomkit.kernel.base import Cgroup, PsiTrigger, Resource
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps
from oomkit.policies import cause, prefs, sysmem
from oomkit.policies.systemd_oomd import swap_usage
from oomkit.policy_args import Duration, Percent


class OomdWatch(PsiOps):
    """oomd's detectors: pressure above a threshold for a duration, free swap below one."""

    name = "oomd"

    def __init__(self, cgroups: Sequence[str] = ("/*",), pressure_threshold: Percent = 60.0,
                 pressure_duration: Duration = 30.0, swap_free_threshold: Percent = 10.0,
                 wake: Duration = 0.01, window: Duration = 2.0) -> None:
        self.cgroups = tuple(cgroups)
        self.threshold, self.duration = pressure_threshold, pressure_duration
        self.swap_free = swap_free_threshold
        self.wake_us, self.window_us = int(wake * 1e6), int(window * 1e6)
        self._since: dict[int, float] = {}

    def init(self, psi: Psi) -> int:
        psi.create_trigger(0, Resource.MEMORY, self.wake_us, self.window_us, full=False)
        cause.tracker(psi.kernel).note_tree(psi.kernel.root_mem_cgroup(), psi.kernel.clock.now())
        return 0

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        kernel, now = psi.kernel, psi.kernel.clock.now()
        info = sysmem.meminfo(kernel)
        if info is not None and info.swap_total and info.swap_free_percent < self.swap_free:
            kernel.out_of_memory(None, 0, constraint_text="CONSTRAINT_OOMD_SWAP")
        root = kernel.root_mem_cgroup()
        for cg in root.walk():
            if cg.parent is None or not any(fnmatch.fnmatchcase(cg.path, g)
                                            for g in self.cgroups):
                continue
            if cause.own_some_avg10(cg) <= self.threshold:
                self._since.pop(cg.id, None)
            elif now - self._since.setdefault(cg.id, now) >= self.duration:
                self._since.pop(cg.id, None)
                kernel.out_of_memory(cg, 0, constraint_text="CONSTRAINT_OOMD_PRESSURE")
        cause.tracker(kernel).note_tree(root, now)


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
                 swap_plugin: str = "kill_by_swap_usage", avoid: Sequence[str] = (),
                 protect: Sequence[str] = ()) -> None:
        for p in (plugin, swap_plugin):
            if p not in PLUGINS:
                raise ValueError(f"unknown oomd plugin {p!r} (known: {', '.join(PLUGINS)})")
        self.plugin, self.swap_plugin = PLUGINS[plugin], PLUGINS[swap_plugin]
        self.prefs = prefs.Preferences.of(protect=protect, avoid=avoid)

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        text = oc.constraint_text
        if text not in ("CONSTRAINT_OOMD_SWAP", "CONSTRAINT_OOMD_PRESSURE"):
            return False
        rank = self.swap_plugin if text == "CONSTRAINT_OOMD_SWAP" else self.plugin
        now, act = oc.kernel.clock.now(), cause.tracker(oc.kernel)
        leaves = [cg for cg in cause.leaves(oc.memcg or oc.kernel.root_mem_cgroup())
                  if cg.parent is not None]
        by_pref: dict[int, list[Cgroup]] = {}
        for cg in leaves:
            pref = self.prefs.cgroup(cg)
            if pref is not prefs.OMIT:
                by_pref.setdefault(pref, []).append(cg)
        for pref in sorted(by_pref, reverse=True):  # avoided ones only when nothing else
            victim = rank(by_pref[pref], now, act)
            if victim is not None:
                return oc.kill_cgroup(victim, f"oomd: {text}") > 0
        return False
