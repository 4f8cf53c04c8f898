"""earlyoom: kill the largest process when MemAvailable and SwapFree both run low.

Mirrors rfjakob/earlyoom (main.c poll loop, kill.c find_largest_process/is_larger):

- ``earlyoom`` (PsiOps): when available memory is at or below ``mem_term_percent`` of
  MemTotal **and** free swap at or below ``swap_term_percent`` of SwapTotal (no swap
  counts as 0 % free, so only memory matters), declare a machine OOM; at or below the
  kill thresholds (half the term ones by default) it says SIGKILL instead of SIGTERM
  (``CONSTRAINT_EARLYOOM_SIGTERM`` / ``_SIGKILL``). earlyoom polls /proc/meminfo every
  100 ms to 1 s, the faster the less headroom is left (main.c sleep_time_ms). A PsiOps
  has no timer: oomkit.policies.poll.PollWatch looks whenever reclaim stalls anyone for
  1 ms within a 500 ms window (the kernel's shortest; 2 s without CAP_SYS_RESOURCE).
  Where nothing stalls until the end (an anonymous fill without swap) the watch never
  looks; the system-wide OOM that comes instead (the live daemon's MemAvailable watch,
  which the preset sets to earlyoom's thresholds and which polls as earlyoom does, or
  the kernel's) goes to ``earlyoom_kill`` all the same.
- ``earlyoom_kill`` (OomOps): the victim is the process with the highest oom_score (the
  kernel's badness in thousandths of RAM + swap), or the largest RSS with
  ``sort_by_rss``; a comm matching ``prefer`` gets +300, ``avoid`` -300, ``ignore`` is
  never chosen (earlyoom's --prefer/--avoid/--ignore). Its own declared OOMs and
  system-wide ones; a memcg's OOM or another policy's declaration is left to the next
  handler (earlyoom watches the machine only).

Not mirrored: SIGTERM first. earlyoom sends SIGTERM at the term level and SIGKILL only
if memory falls to the kill level while it waits (kill.c kill_wait). An OOM handler's
actions must release memory for sure (SPEC 3: ``memory_freed`` only then), and the
runtime has no "signalled, waiting" state between a handler and the default killer, so
a SIGTERM would either count as no progress (the default killer then runs at once) or
claim memory that a process catching SIGTERM never gives back. oomkit kills with SIGKILL
at both levels and the event names the level. --ignore-root-user needs task owners,
which Task does not carry yet.
"""

from __future__ import annotations

import re

from oomkit.kernel.base import Constraint, PolicyKernel, Task
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.policies import prefs, sysmem
from oomkit.policies.poll import PollWatch
from oomkit.policy_args import Duration, Percent


class EarlyoomWatch(PollWatch):
    """earlyoom's trigger: MemAvailable and SwapFree at or below their thresholds."""

    name = "earlyoom"
    samples_tree = False  # earlyoom_kill ranks by oom_score: no counters to sample

    def __init__(self, mem_term_percent: Percent = 10.0, swap_term_percent: Percent = 10.0,
                 mem_kill_percent: Percent | None = None,
                 swap_kill_percent: Percent | None = None,
                 wake: Duration = 0.001, window: Duration = 0.5) -> None:
        super().__init__(wake, window)
        self.mem_term, self.swap_term = mem_term_percent, swap_term_percent
        self.mem_kill = mem_term_percent / 2 if mem_kill_percent is None else mem_kill_percent
        self.swap_kill = (swap_term_percent / 2 if swap_kill_percent is None
                          else swap_kill_percent)

    def poll(self, kernel: PolicyKernel, now: float) -> None:
        info = sysmem.meminfo(kernel)
        if info is None:
            return
        mem, swap = info.available_percent, info.swap_free_percent
        if mem <= self.mem_kill and swap <= self.swap_kill:
            signal = "SIGKILL"
        elif mem <= self.mem_term and swap <= self.swap_term:
            signal = "SIGTERM"
        else:
            return
        kernel.out_of_memory(None, 0, constraint_text=f"CONSTRAINT_EARLYOOM_{signal}")


class Earlyoom(OomOps):
    """earlyoom's victim: the highest oom_score, --prefer/--avoid/--ignore by comm."""

    name = "earlyoom_kill"

    def __init__(self, prefer: str = "", avoid: str = "", ignore: str = "",
                 sort_by_rss: bool = False) -> None:
        self.prefer = re.compile(prefer) if prefer else None
        self.avoid = re.compile(avoid) if avoid else None
        self.prefs = prefs.Preferences.of(protect_comm=ignore)
        self.sort_by_rss = sort_by_rss

    def score(self, task: Task, totalpages: int) -> int:
        if self.sort_by_rss:
            base = task.rss
        else:  # /proc/PID/oom_score: badness * 1000 / totalpages
            base = (task.oom_badness(totalpages) or 0) * 1000 // max(totalpages, 1)
        if self.prefer is not None and self.prefer.search(task.comm):
            base += 300 if not self.sort_by_rss else 1 << 50
        if self.avoid is not None and self.avoid.search(task.comm):
            base -= 300 if not self.sort_by_rss else 1 << 50
        return base

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        # Its own declared levels, and a system-wide OOM that came first (the live
        # daemon's MemAvailable watch at the preset's [system] thresholds, or the
        # kernel's): earlyoom watches the whole machine, so both are its to resolve.
        own = (oc.constraint_text or "").startswith("CONSTRAINT_EARLYOOM")
        if not own and not (oc.memcg is None and oc.constraint is Constraint.NONE):
            return False
        tasks = [t for t in prefs.all_tasks(oc.kernel.root_mem_cgroup())
                 if self.prefs.task(t) is not prefs.OMIT and not t.is_oom_victim]
        if not tasks:
            return False
        victim = max(tasks, key=lambda t: self.score(t, oc.totalpages))
        level = oc.constraint_text or "the machine out of memory"
        oc.kill_process(victim, f"earlyoom: {level}, oom_score {self.score(victim, oc.totalpages)}")
        return True
