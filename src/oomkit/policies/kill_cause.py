"""kill_cause: end the OOM where the pressure comes from, one process at a time.

The recommended OOM handler (see oomkit.policies.cause). In the OOM's domain (the
OOMing memcg, or for a declared OOM the domain its memcg belongs to: the nearest cgroup
at its own limit, else the machine) it ranks the leaf cgroups by what they add to the
pressure (footprint with swap, growth per second, refaults of their own working set,
a negative oom_score_adj weighed as oom_badness weighs it; a cgroup whose footprint
grows by 1/128 of the domain a second or more ranks above every steady one, and below
it the one that added most of what the domain's cgroups added over the last 30 to 60 s,
cause.adds_most, unless that was its own start-up fill, or a slow leak, cause.leaks:
most of what was added and still adding, whatever the domain's size; a short burst of a
cgroup a third the size of a steady one that holds half the domain ranks as steady,
_bursts), then kills the task of the winner that grows fastest (in a cgroup
ranked by what it added, with none growing now: a large task that came since the long
baseline), else the one with the highest oom_badness,
the kernel's own choice within one cgroup (``memory.oom.group`` still widens it). A
parallel build in one session scope loses its linker, not the session.
A pool of like tasks (workers, a fork bomb's copies; pool_of) is one cause: one of
them dies, never a bigger task beside them, and for a declared OOM all of them at once.
``whole_cgroup = true`` kills every task of the leaf instead. Growth is measured between
samples: pressure_guard's (at every PSI event) and the daemon's flight recorder's.

A declared OOM of the machine in which nothing grows, streams or added the memory is
dismissed ("no cause found: not killing for pressure alone", OomControl.dismiss), until
such declarations have gone on for ``no_cause_wait`` (6 s): a start-up spike passes by
itself, a thrash that lasts loses its largest holder. A kernel OOM always has a victim.

Never chosen: protected cgroups/commands and ``user.oomd_omit`` (see prefs; a protected
command that is itself the task growing fastest in its cgroup is the cause and loses its
protection), tasks
under ``min_victim`` bytes (nothing is killed for 28K: the event says so and the next
handler or the default killer decides). Avoided ones only when nothing else is left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from oomkit.errors import OomkitError
from oomkit.kernel.base import OOM_SCORE_ADJ_MAX, PAGE_SIZE, Cgroup, Constraint, Task
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.policies import cause, cause_words, prefs
from oomkit.policies.cause_words import Pick
from oomkit.policy_args import CgroupGlobs, Duration, Size

#: cgroups (in rank order, with an eligible task) whose tasks' oom_score_adj is weighed
ADJ_LOOKAHEAD = 16
#: a pool: at least this many like tasks (each within a factor 1/POOL_LIKE of the median
#: task) that hold at least POOL_SHARE of what the cgroup's eligible tasks hold (pool_of)
POOL_MIN = 4
POOL_LIKE = 3 / 4
POOL_SHARE = 3 / 4
#: a cause whose tasks were killed REFILL_KILLS times in the last REFILL_S seconds refilled
#: what each kill freed: its pool goes at once, in a kernel OOM too (QA Q7)
REFILL_KILLS = 2
REFILL_S = 30.0
#: a burst (KillCause._bursts): growth now at least BURST_ONSET times the average since the
#: long baseline, beside a steady cgroup BURST_SIZE times its footprint (QA Q10)
BURST_ONSET = 2.0
BURST_SIZE = 3
#: a declared OOM of the machine with no cause is dismissed (QA Q13) until such OOMs have
#: come for NO_CAUSE_PATIENCE_S (the ``no_cause_wait`` argument's default) with no gap over
#: NO_CAUSE_GAP_S (KillCause.lasting)
NO_CAUSE_PATIENCE_S = 6.0
NO_CAUSE_GAP_S = 10.0


def task_size(task: Task) -> int:
    return task.rss + task.swapents * 4096


def pick_task(cg: Cgroup, p: prefs.Preferences, min_victim: int,
              cgroup_pref: int | None, totalpages: int,
              growth: dict[int, float] | None = None,
              before: set[int] | None = None,
              pool: bool = False) -> tuple[int, Task, list[Task]] | None:
    """(preference, task, swarm): the eligible task with the highest oom_badness, or
    None; the one that grows fastest (``growth``: pid -> bytes/s, at least
    cause.TASK_GROWTH) comes before it: in one scope beside a big language server, the
    compiler that leaks is the cause (omacom/omarchy#9799: one scope held a whole
    session). When every eligible task is under min_victim but together (those of the
    best preference) they hold at least that much, they are a swarm (a fork bomb of
    small shells is one cause, not a reason to go on to the next cgroup): task is the
    largest of them and swarm lists them all; otherwise swarm is empty.

    ``before`` (the cgroup is a cause by what it added, see cause.adds_most: the PIDs it
    held at the long baseline, Activity.before()): with no task growing now, a task that
    came since (and holds at least an eighth of the largest) comes before the ones that
    were there: in a session scope whose compilers filled the machine and stopped
    growing, the compilers added the memory, not the shell that was there before them
    (QA G10). The kernel's oom_badness() before 2.6.36 (mm/oom_kill.c badness()) likewise
    divided by the fourth root of a task's run time: the new task went first.

    A pool of like tasks (pool_of: workers, a fork bomb's copies) is the cgroup's cause
    unless a task outside it grows fastest: task is one of the pool then, never a larger
    task beside it; with ``pool`` (a declared OOM) swarm lists the whole pool, as one
    kill would end no pressure. A kernel OOM takes one task, as the kernel does: its
    next OOM comes within milliseconds if that was not enough."""
    grower = None
    if growth:
        pid, rate = max(growth.items(), key=lambda g: g[1])
        grower = pid if rate >= cause.TASK_GROWTH else None
    eligible: list[tuple[int, Task]] = []
    small: list[tuple[int, Task]] = []
    for t in cg.tasks():
        pref = p.task(t, cgroup_pref)
        if pref is prefs.OMIT and t.pid == grower and p.protected_by_comm(t, cgroup_pref):
            # protect_comm spares a command as a bystander; the task that grows is the
            # cause, protected or not (QA G21: a leaking systemd-journald outlived every
            # steady service, one kill at a time, where the kernel took it second).
            pref = cgroup_pref
        if pref is prefs.OMIT or t.is_oom_victim:
            continue
        (small if task_size(t) < min_victim else eligible).append((pref, t))
    large = max((task_size(t) for _, t in eligible), default=0) // 8
    best: tuple[tuple[int, bool, bool, int], Task] | None = None
    for pref, t in eligible:
        badness = t.oom_badness(totalpages)  # None: unkillable (-1000), never first
        points = badness or 0
        new = (before is not None and grower is None and badness is not None
               and t.pid not in before and task_size(t) >= large)
        key = (pref, t.pid == grower and badness is not None, new, points)
        if best is None or key > best[0]:
            best = (key, t)
    if best is not None:
        top, task = best[0][0], best[1]
        peers = pool_of([t for pref, t in eligible if pref == top
                         and t.oom_badness(totalpages) is not None])
        # The task that grows fastest, or one that came since the long baseline beside a
        # pool that was there before, is the cause, not the pool.
        singled = best[0][1] or best[0][2]
        if peers and (task in peers or not singled):
            if task not in peers:  # the shell beside a fork bomb is not its cause
                task = max(peers, key=lambda t: t.oom_badness(totalpages) or 0)
            return top, task, peers if pool else []
        return top, task, []
    if not small:
        return None
    top = max(pref for pref, _ in small)
    swarm = [t for pref, t in small if pref == top]
    if sum(task_size(t) for t in swarm) < min_victim:
        return None
    return top, max(swarm, key=task_size), swarm


def pool_of(eligible: Sequence[Task]) -> list[Task]:
    """The tasks of a pool among ``eligible`` (one cgroup's killable tasks of one
    preference), or []: POOL_MIN or more like tasks (RSS + swap each within a factor
    1/POOL_LIKE of the median task's) that together hold POOL_SHARE or more of what the
    eligible tasks hold. Workers of one service (uwsgi, php-fpm, make -j) or the copies
    of a fork bomb are one cause: killing the largest task frees 1/N and the pressure
    goes on, one kill per PSI window (QA G2; kubernetes/kubernetes#117070 asks for
    memory.oom.group for such pods); oomd and systemd-oomd act per cgroup (oomd
    BaseKillPlugin, systemd oomd_cgroup_kill). A task beside the pool (the master, the
    shell that started a fork bomb, an editor in the session scope of a build) is not one
    of them, larger or not (systemd/systemd#25853)."""
    if len(eligible) < POOL_MIN:
        return []
    sizes = sorted(task_size(t) for t in eligible)
    median = sizes[len(sizes) // 2]
    like = [t for t in eligible
            if median * POOL_LIKE <= task_size(t) <= median / POOL_LIKE]
    if len(like) < POOL_MIN:
        return []
    if sum(task_size(t) for t in like) < sum(sizes) * POOL_SHARE:
        return []
    return like


class KillCause(OomOps):
    name = "kill_cause"

    def __init__(self, min_victim: Size = 4 << 20, whole_cgroup: bool = False,
                 protect: CgroupGlobs = (), avoid: CgroupGlobs = (),
                 prefer: CgroupGlobs = (), protect_comm: str = "", avoid_comm: str = "",
                 prefer_comm: str = "", no_cause_wait: Duration = NO_CAUSE_PATIENCE_S) -> None:
        self.min_victim = min_victim
        self.no_cause_wait = no_cause_wait
        self.whole_cgroup = whole_cgroup
        self.prefs = prefs.Preferences.of(protect, avoid, prefer, protect_comm, avoid_comm,
                                          prefer_comm)
        self.runner_up: Cgroup | None = None  # second in the last choose()
        self.picked: Pick | None = None  # the winner of the last choose(), and the second
        self.second: Pick | None = None
        self.domain = cause_words.Domain("the machine", 0, 0)  # the last choose()'s
        self.added: dict[int, int] = {}  # cgroup id -> own_added() in the last choose()
        self.skipped: list[str] = []  # causes with nothing to kill, in words (QA Q4)
        self.streamers: set[int] = set()  # ids of the streamers in the last choose()
        self.adders: set[int] = set()  # ids of the main adders (cause.adds_most) in it
        # memory.stat of each cgroup, read once per decision (choose, then why)
        self.stats = cause.Stats()
        self._kills: dict[int, list[float]] = {}  # cgroup id -> times of kills in it
        self.no_cause = ""  # why the last choose() found no cause of a declared OOM
        self.bursts: set[int] = set()  # ids of the short bursts (_bursts) in the last choose()
        # (first, last) time of the current run of declared OOMs with no cause (lasting)
        self._no_cause_run = (float("-inf"), float("-inf"))

    def choose(self, oc: OomControl) -> tuple[Cgroup, Task, list[Task]] | None:
        """The cause's cgroup, its task to kill and (for a swarm of tasks each under
        min_victim, see pick_task) all of them; None when nothing is eligible."""
        domain = oc.memcg
        if oc.constraint is Constraint.DECLARED:
            domain = cause.domain_of(oc.memcg)
        root = domain or oc.kernel.root_mem_cgroup()
        now = oc.kernel.clock.now()
        activity = cause.tracker(oc.kernel)
        # Each cgroup's memory.stat is read once for the whole decision (its score, its
        # rates, what it added; the kill message after): passed through, never re-read.
        stats = self.stats = cause.Stats()
        # Score every cgroup first (statistics are cheap), list tasks only in rank order
        # (on a live machine that is /proc reads for each task).
        # A cgroup whose footprint grows fast (cause.grows) ranks above every steady one:
        # a job that starts beside a big, busy one and pushes it into swap is the cause,
        # though smaller (rfjakob/earlyoom#197).
        size = oc.totalpages * PAGE_SIZE
        if domain is not None:
            size = cause.limit_of(domain) or domain.usage()
        # A streamer (cause.streams: a reader taking in more than fits while the others'
        # working sets are pushed out) ranks there too: pressure is felt where the
        # working set refaults (examples/psi_victim.toml), caused where pages come in.
        try:
            whole = activity.rates(root, now, stats.of(root))
            total_act = whole.per_s(whole.activations)
        except OomkitError:
            total_act = 0.0
        # Below those, the cgroup that added most of what was added while the shortage
        # built (cause.adds_most: a slow leak, QA G19) ranks above every steady one.
        ranked: list[tuple[int, int, int, Cgroup]] = []
        added: dict[int, int] = {}
        growths: dict[int, float] = {}
        since: dict[int, float | None] = {}  # how far back added[] looks (cause.adds_most)
        self.streamers = set()
        for cg in cause.cgroups(root):
            try:
                cpref = self.prefs.cgroup(cg)
                if cpref is not prefs.OMIT:
                    score, growth = cause.cause_rank(cg, activity, now, domain is not None,
                                                     stats)
                    growths[cg.id] = growth
                    flagged = cause.grows(growth, size)
                    if cg is not root and not flagged:
                        r = activity.rates(cg, now, stats.of(cg))
                        if cause.streams(r, total_act - r.per_s(r.activations), size):
                            flagged = True
                            self.streamers.add(cg.id)
                    added[cg.id] = cause.own_added(cg, activity, now, stats)
                    since[cg.id] = activity.added_since(cg, now)
                    ranked.append((cpref, 2 if flagged else 0, score, cg))
            except OomkitError:
                continue  # gone meanwhile, or no statistics here (the v2 root on old kernels)
        domain_added = sum(added.values())
        self.added, self.skipped = added, []
        self.domain = cause_words.Domain(
            "the machine" if domain is None else f"{domain.path}'s limit", size, domain_added)
        self.adders = self._adders(ranked, added, growths, since, domain_added, size,
                                   activity, now)
        ranked = [(c, level or (1 if cg.id in self.adders else 0), sc, cg)
                  for c, level, sc, cg in ranked]
        ranked = self._bursts(ranked, added, growths, since, size)
        self.domain = dataclasses.replace(self.domain, bursts=len(self.bursts))
        ranked.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
        # A negative oom_score_adj lowers a cgroup's rank as it lowers a task's
        # oom_badness: by adj/1000 of the domain's pages (mm/oom_kill.c), so a database
        # at -900 is not the first victim because it is the biggest. A positive one
        # does not raise it: the kubelet gives a small container 999 for its small
        # request, whatever it uses (kubernetes/kubernetes#111356), browsers give their
        # tabs 300 (rfjakob/earlyoom#344); killing those frees little while the cause
        # goes on. Inside the cgroup, oom_badness (adj included) still picks the task.
        # Tasks are listed for the first ADJ_LOOKAHEAD cgroups in rank order (each
        # listing is /proc reads on a live machine); with rules by command, for all.
        # One positive value counts: OOM_SCORE_ADJ_MAX (1000), "kill me first". The kernel
        # adds adj * totalpages / 1000 to oom_badness (mm/oom_kill.c), so at 1000 a task
        # outranks every task at 0 or below whatever its size; the kubelet gives it to
        # BestEffort pods, the first to go (pkg/kubelet/qos/policy.go
        # GetContainerOOMScoreAdjust), and earlyoom and lmkd take it first too. A steady
        # cgroup whose chosen task has it goes before the other steady ones (QA Q3: a
        # busy service died for an idle cache at 1000 that died 6 s later anyway). Not
        # before a cause (a grower, a streamer, the main adder): a cgroup that grows by
        # 1/128 of the domain a second refills what the idle task frees within seconds,
        # and is killed next anyway; one kill then, not two, as systemd-oomd and oomd,
        # which rank cgroups by pressure and growth and read no oom_score_adj at all.
        per_adj = (oc.totalpages // 1000) * PAGE_SIZE
        # the runner-up (with its key, as best's), named in the kill message
        second: tuple[tuple[int, int, bool, int], Pick, list[Task]] | None = None
        looked = 0
        best: tuple[tuple[int, int, bool, int], Pick, list[Task]] | None = None
        for cpref, grower, score, cg in ranked:
            if looked >= ADJ_LOOKAHEAD and not self.prefs.has_comm_rules and best is not None:
                break
            # A streamer's tasks free what the cgroup takes in (page cache, no RSS to
            # speak of): min_victim weighs the cgroup's usage then.
            least = self.min_victim
            if cg.id in self.streamers and cg.usage() >= self.min_victim:
                least = 0
            try:
                task_growth = activity.task_growth(cg, now)
                found = pick_task(cg, self.prefs, least, cpref, oc.totalpages,
                                  task_growth,
                                  activity.before(cg, now) if cg.id in self.adders else None,
                                  pool=oc.constraint is Constraint.DECLARED
                                  or (grower > 0 and self.refilled(cg.id, now)))
            except OomkitError:
                continue
            if found is None:
                if grower and (best is None or best[0][:2] <= (cpref, grower)):
                    # a cause with nothing to kill: the message says so (QA Q4)
                    self.skipped.append(cause_words.skipped_cause(
                        cg, grower, growths.get(cg.id, 0.0), cg.id in self.streamers,
                        cause_words.not_killable(cg, self.prefs, least)))
                continue
            looked += 1
            adj = found[1].oom_score_adj
            first = grower == cause_words.STEADY and adj >= OOM_SCORE_ADJ_MAX
            adj_bytes = min(0, adj) * per_adj
            key = (found[0], grower, first, score + adj_bytes)
            fastest = max(task_growth.items(), key=lambda g: g[1], default=(0, 0.0))
            pick = Pick(cg, found[1], found[0], grower, first, score, adj_bytes,
                        growths.get(cg.id, 0.0), cg.id in self.streamers,
                        fastest[1] if fastest[0] == found[1].pid
                        and fastest[1] >= cause.TASK_GROWTH else 0.0, cg.id in self.bursts)
            if best is None or key > best[0]:
                best, second = (key, pick, found[2]), best
            elif second is None or key > second[0]:
                second = (key, pick, found[2])
        self.picked = best[1] if best is not None else None
        self.second = second[1] if second is not None else None
        self.runner_up = self.second.cg if self.second is not None else None
        self.no_cause = ""
        if (best is not None and oc.constraint is Constraint.DECLARED and domain is None
                and best[1].level == cause_words.STEADY and not best[1].adj_first
                and not self.bursts and not self.lasting(now)):
            # Pressure the machine declared, and no cgroup grows, streams or added the
            # memory (a burst beside a big holder is growth: that one is then killed): the
            # largest steady one only suffers with the others (QA Q13: a 1.2G
            # service that neither stalled nor grew died for an IDE's start-up reads).
            # Nothing is killed; a real OOM still goes to the kernel's killer.
            self.no_cause = (
                "kill_cause: no cause found: not killing for pressure alone (no cgroup "
                "grows, streams or added most of the memory; the largest, "
                f"{best[1].cg.path}, is steady)")
            return None
        return (best[1].cg, best[1].task, best[2]) if best is not None else None

    def _adders(self, ranked: list[tuple[int, int, int, Cgroup]], added: dict[int, int],
                growths: dict[int, float], since: dict[int, float | None],
                domain_added: int, size: int, activity: cause.Activity,
                now: float) -> set[int]:
        """Ids of the cgroups ranked by what they added: the main adder (cause.adds_most)
        unless it was starting at the long baseline (cause.Activity.started: its start-up
        fill, QA Q13), and a slow leak (cause.leaks: most of what was added and still
        adding, whatever the domain's size, QA Q17)."""
        out: set[int] = set()
        for _, _, _, cg in ranked:
            a = added.get(cg.id, 0)
            if a <= 0:
                continue
            try:
                if cause.leaks(a, domain_added, size, growths.get(cg.id, 0.0),
                               since.get(cg.id)):
                    out.add(cg.id)
                elif cause.adds_most(a, domain_added, size, since.get(cg.id)):
                    held = cause.footprint(cg, self.stats.of(cg))
                    if not activity.started(cg, now, held):
                        out.add(cg.id)
            except OomkitError:
                continue
        return out

    def _bursts(self, ranked: list[tuple[int, int, int, Cgroup]], added: dict[int, int],
                growths: dict[int, float], since: dict[int, float | None],
                size: int) -> list[tuple[int, int, int, Cgroup]]:
        """ranked with a short burst of a small cgroup ranked as a steady one, sorted
        again. A burst: a grower or adder (not a streamer) whose growth began within the
        long baseline (its rate now at least BURST_ONSET times its average since then)
        while a steady cgroup of the same or a higher preference holds BURST_SIZE times
        its footprint and half the domain or more. A compositor that opens a dozen
        windows (900M in 9 s) is not the cause beside a 3.3G browser that holds the
        machine (QA Q10); a leak that has gone on for the whole baseline (cause.leaks, QA
        Q17) and a grower near the size of the biggest steady one (a small tool leaking
        150M/s beside a 1.6G JVM, case k36) still are. nohang and earlyoom protect
        compositors by name instead (protect_comm in the recommended config)."""
        steady = [(c, sc) for c, level, sc, _ in ranked if level == cause_words.STEADY]
        self.bursts = set()
        out: list[tuple[int, int, int, Cgroup]] = []
        changed = False
        for c, level, sc, cg in ranked:
            if level != cause_words.STEADY and cg.id not in self.streamers:
                back = since.get(cg.id)
                growth = growths.get(cg.id, 0.0)
                try:
                    held = cause.footprint(cg, self.stats.of(cg))
                except OomkitError:
                    held = sc
                average = added.get(cg.id, 0) / back if back else growth
                if (growth >= average * BURST_ONSET and any(
                        c2 >= c and sc2 >= held * BURST_SIZE and sc2 >= size // 2
                        for c2, sc2 in steady)):
                    level, changed = cause_words.STEADY, True
                    self.adders.discard(cg.id)
                    self.bursts.add(cg.id)
            out.append((c, level, sc, cg))
        if changed:
            out.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
        return out

    def why(self, oc: OomControl, cg: Cgroup, stats: cause.Stats | None = None) -> str:
        """Why cg ranked first in words (cause_words.rule), its cause score and terms
        ("cgroup score ...": the cgroup's, not the task's), the runner-up's and any cause
        ranked above it that had nothing to kill. ``stats``: the memory.stat reads of the
        decision (choose's), fresh ones when None."""
        stats = stats if stats is not None else cause.Stats()
        domain = cause.domain_of(oc.memcg) if oc.constraint is Constraint.DECLARED else oc.memcg
        activity, now = cause.tracker(oc.kernel), oc.kernel.clock.now()
        limited = domain is not None
        p = self.picked if self.picked is not None and self.picked.cg is cg else None
        try:
            text = "cgroup " + cause.describe(cg, activity, now, limited, stats)
            if p is not None:
                text = (cause_words.rule(p, self.domain, self.added.get(cg.id, 0),
                                         activity.added_since(cg, now)) + "; " + text)
            if self.second is None:
                text += "; no other cgroup had a task to kill"
            else:
                r = self.second
                how = cause_words.runner_words(r, p) if p is not None else ""
                text += (f"; runner-up {r.cg.path}: {how}{'; ' if how else ''}cgroup "
                         f"{cause.describe(r.cg, activity, now, limited, stats)}")
        except OomkitError:
            text = "(its statistics went meanwhile)"
        return "; ".join([text, *self.skipped])

    def lasting(self, now: float) -> bool:
        """Has the machine been declared out of memory with no cause, time and again
        (no gap over NO_CAUSE_GAP_S), for ``no_cause_wait`` seconds or more (0: at the
        first such OOM, the largest steady cgroup goes at once)? A start-up spike
        is one or two windows and passes by itself (QA Q13); a thrash that goes on is a
        shortage the kernel never ends (it declares no OOM while reclaim makes progress),
        and its largest holder goes then (case k41: a hog full before three programs
        thrash; k45: a pool of workers swaps the desktop out). Counts this call."""
        since, last = self._no_cause_run
        if now - last > NO_CAUSE_GAP_S:
            since = now
        self._no_cause_run = (since, now)
        return now - since >= self.no_cause_wait

    def refilled(self, cgroup_id: int, now: float) -> bool:
        """Were REFILL_KILLS or more kills in this cgroup in the last REFILL_S seconds?
        A kernel OOM takes one task of a pool, as the kernel does; but a cause that is
        chosen again and again refilled what each kill freed (60 leaking workers: one
        real OOM every 2 s, QA Q7), and its pool goes at once, as oomd and systemd-oomd
        kill a cgroup."""
        recent = [t for t in self._kills.get(cgroup_id, ()) if now - t <= REFILL_S]
        self._kills[cgroup_id] = recent
        return len(recent) >= REFILL_KILLS

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        chosen = self.choose(oc)
        if chosen is None:
            if self.no_cause:
                oc.dismiss(self.no_cause)
            return False
        cg, task, swarm = chosen
        now = oc.kernel.clock.now()
        self._no_cause_run = (float("-inf"), float("-inf"))  # a kill: a new run of waiting
        # kills older than REFILL_S (and cgroups gone since) are forgotten here
        self._kills = {cid: kept for cid, times in self._kills.items()
                       if (kept := [t for t in times if now - t <= REFILL_S])}
        refills = len(self._kills.get(cg.id, ()))
        self._kills.setdefault(cg.id, []).append(now)
        ranked = self.why(oc, cg, self.stats)
        if self.whole_cgroup:
            return oc.kill_cgroup(cg, f"kill_cause: {cg.path}: {ranked}") > 0
        protected = not swarm and self.prefs.protected_by_comm(task, self.prefs.cgroup(cg))
        small = task_size(task) < self.min_victim
        refilled = (f"; {refills} kills in it in the last {REFILL_S:.0f} s were refilled"
                    if swarm and not small and refills >= REFILL_KILLS
                    and oc.constraint is not Constraint.DECLARED else "")
        for t in swarm or [task]:
            why = task.comm
            if self.picked is not None and self.picked.task is task:
                why = cause_words.task_words(self.picked)
            if swarm:
                why = ("a swarm of small tasks" if small
                       else f"a pool of {len(swarm)} like tasks ({t.comm}{refilled})")
            if protected:
                why += " (protect_comm spares it as a bystander, not as the one growing)"
            try:
                oc.kill_process(t, f"kill_cause: {why} in {cg.path}: {ranked}")
            except OomkitError:
                if not swarm:
                    raise
                continue  # one of the swarm gone or unkillable meanwhile: the rest go
        return True
