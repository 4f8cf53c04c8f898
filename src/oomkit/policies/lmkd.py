"""lmkd: Android's low memory killer, PSI levels mapped to oom_score_adj bands.

Mirrors system/memory/lmkd (lmkd.cpp: psi_thresholds, init_psi_monitors,
find_and_kill_process with kill_heaviest_task; the ro.lmk.* defaults):

- ``lmkd`` (PsiOps): machine-wide memory triggers, MEDIUM = "some" ``partial_stall``
  (70 ms, ro.lmk.psi_partial_stall_ms) and CRITICAL = "full" ``complete_stall`` (700 ms,
  ro.lmk.psi_complete_stall_ms), each per second (LOW, "some" 70 ms, kills nothing with
  ro.lmk.low = 1001, so it is not watched). Windows of 1 s need CAP_SYS_RESOURCE; the
  default ``window`` is 2 s with the stall scaled to it. Each declares a machine OOM
  (CONSTRAINT_LMKD_MEDIUM / _CRITICAL), but only while a task is in the level's band
  (``medium``, ``critical``: the same as ``lmkd_kill``'s): with nobody there lmkd kills
  nothing (find_and_kill_process returns 0), and a pressure level has no fallback to a
  kernel-style killer, so a declaration it could not resolve must not reach ours.
- ``lmkd_kill`` (OomOps): the level sets the lowest oom_score_adj that may die
  (ro.lmk.medium 800, ro.lmk.critical 0); from the highest oom_score_adj down, the
  heaviest task of the first band that has one dies. Heaviest is by resident pages alone
  (proc_get_heaviest -> proc_get_size reads /proc/PID/statm's resident field), never
  swap: an idle app pushed out to swap by the app that grows frees little by dying, and
  lmkd does not take it for the grower (QA G11: with RSS + swap the preset killed such a
  bystander). A task without resident pages (its memory gone while exiting, a kernel
  thread) is no candidate: proc_get_heaviest drops it, kill_one_process skips it.
"""

from __future__ import annotations

from oomkit.kernel.base import Cgroup, PsiTrigger, Resource, Task
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps
from oomkit.policies import prefs
from oomkit.policy_args import Duration, check_trigger


def band(root: Cgroup, min_adj: int, p: prefs.Preferences) -> list[Task]:
    """The tasks at or below root that a level with this lowest oom_score_adj may kill
    (victims already exiting, omitted ones, PID 1, kernel threads and tasks without
    resident pages left out: init and kernel threads are no app lmkd knows, and its
    proc_get_heaviest drops a process whose size reads 0)."""
    return [t for t in prefs.all_tasks(root)
            if t.oom_score_adj >= min_adj and not t.is_oom_victim and t.rss > 0
            and not t.unkillable and p.task(t) is not prefs.OMIT]


class LmkdWatch(PsiOps):
    """lmkd's PSI levels: "some" stall is MEDIUM, "full" stall is CRITICAL."""

    name = "lmkd"

    def __init__(self, partial_stall: Duration = 0.07, complete_stall: Duration = 0.7,
                 window: Duration = 2.0, medium: int = 800, critical: int = 0) -> None:
        for key, stall in (("partial_stall", partial_stall), ("complete_stall", complete_stall)):
            check_trigger(stall * window, window, key, "window",
                          threshold_of=f" ({stall * 1000:g}ms a second)")
        self.window_us = int(window * 1e6)
        # (level, full, stall per window): the stalls are per second, as lmkd's are; LOW
        # kills nothing by default (ro.lmk.low = 1001), so it gets no trigger.
        self.levels = (("MEDIUM", False, int(partial_stall * window * 1e6)),
                       ("CRITICAL", True, int(complete_stall * window * 1e6)))
        self.min_adj = {"MEDIUM": medium, "CRITICAL": critical}
        self.prefs = prefs.Preferences()
        self._level: dict[int, str] = {}

    def init(self, psi: Psi) -> int:
        for level, full, threshold in self.levels:
            trig = psi.create_trigger(0, Resource.MEMORY, threshold, self.window_us, full=full)
            self._level[id(trig)] = level
        return 0

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        level = self._level.get(id(trigger))
        if level is None:
            return
        if not band(psi.kernel.root_mem_cgroup(), self.min_adj[level], self.prefs):
            return  # nobody in the band: lmkd kills nothing at this level
        psi.kernel.out_of_memory(None, 0, constraint_text=f"CONSTRAINT_LMKD_{level}")


class Lmkd(OomOps):
    """lmkd's victim: the heaviest task of the highest oom_score_adj band the level allows."""

    name = "lmkd_kill"

    def __init__(self, medium: int = 800, critical: int = 0) -> None:
        self.min_adj = {"CONSTRAINT_LMKD_MEDIUM": medium, "CONSTRAINT_LMKD_CRITICAL": critical}
        self.prefs = prefs.Preferences()

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        min_adj = self.min_adj.get(oc.constraint_text or "")
        if min_adj is None:
            return False
        tasks = band(oc.kernel.root_mem_cgroup(), min_adj, self.prefs)
        if not tasks:
            return False
        # from the highest band down, the most resident pages in it (proc_get_heaviest)
        victim = max(tasks, key=lambda t: (t.oom_score_adj, t.rss))
        oc.kill_process(victim, f"lmkd: {oc.constraint_text}, min adj {min_adj}")
        return True
