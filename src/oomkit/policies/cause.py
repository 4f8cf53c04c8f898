"""Finding the cause of memory pressure: where memory is short, and who made it so.

Pressure is *felt* by whoever stalls; it is *caused* elsewhere more often than not: an
editor stalls because a job beside it grows, three programs re-read their files because a
hog's anonymous memory left no room for them (without swap, reclaim can only drop cache).
Two questions, answered from the kernel's counters alone:

1. **The domain**: where is memory short? From the cgroup whose trigger fired, walk up to
   the first cgroup at its own ``memory.high``/``memory.max`` (within 1/16): the shortage
   is that limit, and the choice stays inside it, as the kernel's memcg OOM does. No such
   cgroup: the machine (``None``).
2. **The cause** in that domain, a leaf cgroup ranked by what it adds to the pressure:
   its *footprint* (memory reclaim cannot simply drop: usage minus the unmapped page
   cache) plus, weighted, what it *grew* in the last sampling interval and (inside a
   limited domain, where the working set is its own) the pages it *refaulted*. A cgroup
   that only waits (stalls, refaults what others pushed out, does not grow) has neither
   growth nor footprint to speak of, so it ranks last.

Counters are cumulative; :class:`Activity` keeps two earlier samples per cgroup so that
growth and refaults are over an interval (at least ``min_interval_s``, at most RECENT_S
back: growth that ended before the last sample is history, not pressure): a PsiOps
samples at attach time and at every event it receives, an OomOps reads the ranking at OOM
time. While a cgroup's footprint grows, the sizes of its tasks are sampled too, so that
the task that grows is known within it. A second pair of samples, LONG_S apart, tells
what each cgroup *added* while the pressure built (a slow leak is no fast grower, yet
what was added since memory got short is its doing: see :meth:`Activity.added`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from oomkit.errors import OomkitError
from oomkit.kernel.base import PAGE_SIZE, Cgroup, PolicyKernel, Resource

GROWTH_WEIGHT = 4  # a byte per second of growth counts as much as 4 held
REFAULT_WEIGHT = 4  # a page refaulted per second counts as much as 4 held
GROWER_SHARE = 1 / 128  # footprint growth per second, of the domain, that marks a grower
STREAM_REUSE = 1 / 8  # at most this share of a streamer's intake is its own working set
TASK_GROWTH = 1 << 20  # bytes/s of a cgroup's footprint growth that has its tasks sampled
# Growth is a recent rate: an older sample further back than this is not used (QA G1: a
# JVM that took 1.6G in its first second "grew 181M/s" over the 8.8 s since the daemon's
# first sample). oomd's memory_growth compares with a decaying average of the last few
# 1 s intervals (src/oomd/CgroupContext.cpp getAverageUsage, average_size_decay 4).
RECENT_S = 5.0
SHORT_FLOOR_S = 0.1  # a rate over less than this is divided by this (noise of bursts)
LONG_S = 30.0  # the long baseline: between LONG_S and 2 * LONG_S old (see added())
ADDED_SHARE = 1 / 2  # of what the domain's cgroups added, that marks the main adder
# A slow leak (leaks()): at least this much added since the long baseline, of the domain
# or LEAK_FLOOR bytes whichever is more (a few MB of a steady service's jitter are none),
# and still adding now at STILL_ADDING of its average rate since the baseline.
LEAK_SHARE = 1 / 1024
LEAK_FLOOR = 16 << 20
STILL_ADDING = 1 / 8
STARTUP_SHARE = 1 / 8  # a first sample under this share of now: the cgroup was starting
STARTUP_QUIET_S = 10.0  # a start-up fill that ended this long before is history (started)
ADDED_RATE = 1 << 20  # bytes/s over the long baseline that mark the main adder (adds_most)

TaskSizes = tuple[float, dict[int, int]]  # (time, {pid: RSS + swap bytes})


def pids_of(cg: Cgroup) -> set[int]:
    """The PIDs in cg: cgroup.procs alone where the backend reads it (one file; no /proc
    reads per task), else from its task list."""
    procs = getattr(cg, "procs", None)
    if callable(procs):
        return set(procs())
    return {t.pid for t in cg.tasks()}


def limit_of(cg: Cgroup) -> int | None:
    """The lower of memory.high and memory.max (None: unlimited)."""
    limits = [x for x in (cg.memory_high, cg.memory_max) if x is not None]
    return min(limits) if limits else None


def at_limit(cg: Cgroup) -> bool:
    limit = limit_of(cg)
    return limit is not None and cg.usage() >= limit - max(limit // 16, PAGE_SIZE)


def domain_of(cg: Cgroup | None) -> Cgroup | None:
    """The nearest of cg and its ancestors at its own limit; None: the machine."""
    c = cg
    while c is not None and c.parent is not None:
        if at_limit(c):
            return c
        c = c.parent
    return None


class Stat:
    """memory.stat of one cgroup, read once where the backend can (a live cgroup's
    ``stat()``: one file read instead of one per item), else item by item."""

    __slots__ = ("_all", "cg")

    def __init__(self, cg: Cgroup) -> None:
        self.cg = cg
        read = getattr(cg, "stat", None)
        self._all: dict[str, int] | None = read() if callable(read) else None

    def has(self, name: str) -> bool:
        """Does the kernel keep this item (v1 has pgpgin, v2 pgsteal)?"""
        if self._all is not None:
            return name in self._all
        try:
            self.cg.vm_events(name)
        except OomkitError:
            return False
        return True

    def page(self, name: str) -> int:
        if self._all is not None:
            return self._all.get(name, 0)
        return self.cg.page_state(name)

    def event(self, *names: str) -> int:
        """The first of ``names`` the kernel has (v2 and v1 spell some differently)."""
        for name in names:
            if self._all is not None:
                if name in self._all:
                    return self._all[name]
                continue
            try:
                return self.cg.vm_events(name)
            except OomkitError:
                continue
        return 0


class Stats:
    """One :class:`Stat` per cgroup for one decision: each rule that looks at a cgroup's
    memory.stat (its score, its rates, what it added, the kill message) reads it once
    between them, not once each (on a live machine a read is a file of ~50 lines)."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, Stat] = {}

    def of(self, cg: Cgroup) -> Stat:
        st = self._by_id.get(cg.id)
        if st is None:
            st = self._by_id[cg.id] = Stat(cg)
        return st

    def __len__(self) -> int:
        return len(self._by_id)


def _stat(cg: Cgroup, stats: Stats | None) -> Stat:
    return stats.of(cg) if stats is not None else Stat(cg)


def footprint(cg: Cgroup, st: Stat | None = None) -> int:
    """Bytes reclaim cannot simply drop: usage minus the unmapped page cache (tmpfs and
    mapped files stay in it), plus what the cgroup holds in swap (memory.stat ``swap``
    where the kernel has it: cgroup v1, the simulator). A grower pushed into swap is no
    smaller for it: the kernel's oom_badness counts swap entries too, and a machine whose
    swap fills runs out of both at once."""
    st = st or Stat(cg)
    cache = st.page("file") - st.page("shmem") - st.page("file_mapped")
    return max(0, cg.usage() - max(0, cache)) + max(0, st.page("swap"))


@dataclass(frozen=True, slots=True)
class Sample:
    time: float
    usage: int
    refaults: int  # pages, file and anon
    activations: int  # refaults of pages still in the workingset (mm/workingset.c)
    pgscan: int
    anon_activations: int = 0  # of which anon: swap-ins of a working set
    footprint: int = 0  # footprint() then
    charged: int = 0  # pages, see charged()
    mapped: int = 0  # bytes of mapped file pages (memory.stat file_mapped)


def charged(cg: Cgroup, st: Stat) -> int:
    """A counter of the pages charged to cg (read into memory, allocated, swapped in):
    v1's pgpgin; elsewhere what reclaim took from it (pgsteal: swap-outs and dropped
    cache, uncharged) plus what it holds now, so that over an interval the difference is
    what came in (less what was freed outright, which no counter keeps)."""
    if st.has("pgsteal"):
        return st.event("pgsteal") + cg.usage() // PAGE_SIZE
    return st.event("pgpgin")


def sample(cg: Cgroup, now: float, st: Stat | None = None) -> Sample:
    st = st or Stat(cg)
    # usage with swap: a grower whose pages go straight on to swap still grows
    return Sample(now, cg.usage() + max(0, st.page("swap")),
                  st.event("workingset_refault_file", "workingset_refault")
                  + st.event("workingset_refault_anon"),
                  st.event("workingset_activate_file", "workingset_activate")
                  + st.event("workingset_activate_anon"),
                  st.event("pgscan"), st.event("workingset_activate_anon"),
                  footprint(cg, st), charged(cg, st), st.page("file_mapped"))


@dataclass(frozen=True, slots=True)
class Rates:
    """Deltas over ``interval_s`` (0: no earlier sample; deltas are then 0)."""

    interval_s: float
    growth: int  # bytes
    refaults: int  # pages
    activations: int  # pages
    pgscan: int  # pages
    anon_activations: int = 0  # pages
    footprint_growth: int = 0  # bytes: growth of the footprint less mapped file pages
    charged: int = 0  # pages that came in (see charged())

    def per_s(self, value: int) -> float:
        return value / self.interval_s if self.interval_s > 0 else 0.0


class Activity:
    """Two earlier samples per cgroup id, the newer replaced once it is ``min_interval_s``
    old: rates are then always over at least that long, even right after a sample."""

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.min_interval_s = min_interval_s
        self._base: dict[int, tuple[Sample | None, Sample]] = {}  # (older, newer)
        # per cgroup id, (older, newer) samples of its tasks: (time, {pid: bytes})
        self._tasks: dict[int, tuple[TaskSizes | None, TaskSizes]] = {}
        # per cgroup id, (older, newer) footprints (time, bytes) LONG_S apart: added()
        self._long: dict[int, tuple[tuple[float, int] | None, tuple[float, int]]] = {}
        self._long_pids: dict[int, tuple[set[int] | None, set[int]]] = {}  # as _long
        self._first: dict[int, float] = {}  # cgroup id -> time of its first long sample
        # cgroup id -> time of the last sample after which its footprint grew (started())
        self._grew_at: dict[int, float] = {}
        self._tree_at = float("-inf")

    def note(self, cg: Cgroup, now: float) -> None:
        """Record a sample of cg (kept while the last one is younger than min_interval_s).
        While its footprint grows by TASK_GROWTH per second or more, the sizes of its tasks
        are sampled too, so that which of them grows is known at OOM time. Listing tasks
        is /proc reads on a live machine: only where the cgroup grows."""
        try:
            held = self._base.get(cg.id)
            if held is None or now - held[1].time >= self.min_interval_s:
                new = sample(cg, now)
                self._base[cg.id] = (held[1] if held else None, new)
                long = self._long.get(cg.id)
                if long is None:
                    self._first[cg.id] = now
                if long is None or now - long[1][0] >= LONG_S:
                    self._long[cg.id] = (long[1] if long else None, (now, new.footprint))
                    pids = self._long_pids.get(cg.id)
                    self._long_pids[cg.id] = (pids[1] if pids else None, pids_of(cg))
                grew = held is not None and new.footprint - held[1].footprint >= (
                    (now - held[1].time) * TASK_GROWTH)
                if grew and held is not None:
                    self._grew_at[cg.id] = held[1].time  # it grew since that sample
                if grew:
                    was = self._tasks.get(cg.id)
                    sizes = {t.pid: t.rss + t.swapents * PAGE_SIZE for t in cg.tasks()}
                    self._tasks[cg.id] = (was[1] if was else None, (now, sizes))
                else:
                    self._tasks.pop(cg.id, None)  # not growing: no more /proc reads
        except OomkitError:
            self._base.pop(cg.id, None)
            self._tasks.pop(cg.id, None)

    def task_growth(self, cg: Cgroup, now: float) -> dict[int, float]:
        """Bytes per second each task of cg grew (RSS + swap) since the older task sample
        (the newer where the older is missing or younger than min_interval_s); {} when
        the tasks were not sampled (the cgroup did not grow). Reads the tasks now."""
        held = self._tasks.get(cg.id)
        if held is None:
            return {}
        older, newer = held
        at, sizes = (older if older is not None and now - newer[0] < self.min_interval_s
                     and now - older[0] <= max(RECENT_S, self.min_interval_s) else newer)
        if now <= at:
            return {}
        span = max(now - at, SHORT_FLOOR_S)
        return {t.pid: (t.rss + t.swapents * PAGE_SIZE - sizes[t.pid]) / span
                for t in cg.tasks() if t.pid in sizes}

    def note_tree(self, root: Cgroup, now: float) -> None:
        """note() every cgroup, at most once per min_interval_s (triggers on every cgroup
        may all fire in one window: one walk of the tree serves them all)."""
        if now - self._tree_at < self.min_interval_s:
            return
        self._tree_at = now
        try:
            for cg in root.walk():
                self.note(cg, now)
        except OomkitError:
            pass

    def forget(self, cgroup_id: int) -> None:
        self._base.pop(cgroup_id, None)
        self._tasks.pop(cgroup_id, None)
        self._long.pop(cgroup_id, None)
        self._long_pids.pop(cgroup_id, None)
        self._first.pop(cgroup_id, None)
        self._grew_at.pop(cgroup_id, None)

    def added_since(self, cg: Cgroup, now: float) -> float | None:
        """How far back added() looks for cg (seconds; None: no sample yet)."""
        held = self._long.get(cg.id)
        if held is None:
            return None
        older, newer = held
        return now - (newer if now - newer[0] >= LONG_S or older is None else older)[0]

    def started(self, cg: Cgroup, now: float, footprint_now: int) -> bool:
        """Was cg starting at the long baseline added() counts from, and is that start-up
        long over: the baseline is the first sample of cg the daemon took, cg held under
        STARTUP_SHARE of ``footprint_now`` (bytes) then, and it has not grown since a
        sample STARTUP_QUIET_S or more back? What such a cgroup "added" is its start-up
        fill (the daemon starts before the services at boot; a restarted service is a new
        cgroup), no addition to a shortage that came later (QA Q13: a steady 1.2G service
        "added 1.2G in 18 s" at boot and died for an IDE's start-up reads). A fill that
        the shortage follows within seconds is its cause (a hog, f10, k41)."""
        held = self._long.get(cg.id)
        if held is None:
            return False
        older, newer = held
        at, was = newer if now - newer[0] >= LONG_S or older is None else older
        quiet = now - self._grew_at.get(cg.id, at) >= STARTUP_QUIET_S
        return self._first.get(cg.id) == at and was < footprint_now * STARTUP_SHARE and quiet

    def before(self, cg: Cgroup, now: float) -> set[int] | None:
        """The PIDs cg held at the long baseline added() counts from (None: none kept)."""
        held, pids = self._long.get(cg.id), self._long_pids.get(cg.id)
        if held is None or pids is None:
            return None
        return pids[1] if now - held[1][0] >= LONG_S or pids[0] is None else pids[0]

    def added(self, cg: Cgroup, now: float, footprint_now: int | None = None,
              stats: Stats | None = None) -> int:
        """Bytes cg's footprint grew since the long baseline: the newer of two samples
        LONG_S apart once it is LONG_S old, else the older (so between LONG_S and twice
        that back; the daemon's first sample while it is younger). What a slow leak added
        while it pushed others into swap, over the time the shortage built, where its
        rate alone is no grower's (QA G19); 0 without a sample."""
        held = self._long.get(cg.id)
        if held is None:
            return 0
        older, newer = held
        at, was = newer if now - newer[0] >= LONG_S or older is None else older
        if now <= at:
            return 0
        fp = footprint(cg, _stat(cg, stats)) if footprint_now is None else footprint_now
        return max(0, fp - was)

    def rates(self, cg: Cgroup, now: float, st: Stat | None = None) -> Rates:
        """Deltas since the older sample when the newer is younger than min_interval_s
        and the older no further back than RECENT_S; else since the newer, over at least
        SHORT_FLOOR_S (after a gap in sampling, only what came since the last sample is
        recent)."""
        held = self._base.get(cg.id)
        base: Sample | None = None
        if held is not None:
            older, newer = held
            base = newer
            if (now - newer.time < self.min_interval_s and older is not None
                    and now - older.time <= max(RECENT_S, self.min_interval_s)):
                base = older
        if base is None or now <= base.time:
            return Rates(0.0, 0, 0, 0, 0)
        cur = sample(cg, now, st)
        # Growth is of what reclaim cannot drop: the footprint less its mapped file
        # pages. A program mapping its files in is not growing, whether it re-reads
        # them as reclaim takes them (the guest's f10: a reader up 12.5M/s between two
        # samples, on 25M/s of refaults, ranked above the hog) or reads a file larger
        # than memory once (the lone reader on 7.3: "grows 5.8M/s", declared and killed).
        grew = (cur.footprint - cur.mapped) - (base.footprint - base.mapped)
        return Rates(max(now - base.time, SHORT_FLOOR_S), max(0, cur.usage - base.usage),
                     max(0, cur.refaults - base.refaults),
                     max(0, cur.activations - base.activations),
                     max(0, cur.pgscan - base.pgscan),
                     max(0, cur.anon_activations - base.anon_activations),
                     max(0, grew),
                     max(0, cur.charged - base.charged))


_TRACKERS: weakref.WeakKeyDictionary[Any, Activity] = weakref.WeakKeyDictionary()


def tracker(kernel: PolicyKernel) -> Activity:
    """The Activity shared by every policy on this kernel (a dry run shares the real one)."""
    key = getattr(kernel, "real", kernel)
    found = _TRACKERS.get(key)
    if found is None:
        found = _TRACKERS[key] = Activity()
    return found


def leaves(root: Cgroup) -> list[Cgroup]:
    """The cgroups under root (root included) that hold tasks themselves."""
    out = []
    try:
        for cg in root.walk():
            if cg.tasks():
                out.append(cg)
    except OomkitError:
        pass
    return out


def cgroups(root: Cgroup) -> list[Cgroup]:
    """root and every cgroup below it (those that vanish meanwhile left out)."""
    try:
        return list(root.walk())
    except OomkitError:
        return [root]


def _score(cg: Cgroup, activity: Activity, now: float, limited: bool,
           stats: Stats | None = None) -> tuple[int, float]:
    st = _stat(cg, stats)
    rates = activity.rates(cg, now, st)
    # Per second: a sample taken long ago (no event since) must not count a whole
    # history of growth as if it happened just now.
    score = footprint(cg, st) + int(GROWTH_WEIGHT * rates.per_s(rates.growth))
    if limited:
        score += int(REFAULT_WEIGHT * rates.per_s(rates.refaults)) * PAGE_SIZE
    return score, rates.per_s(rates.footprint_growth)


def cause_rank(cg: Cgroup, activity: Activity, now: float,
               limited: bool, stats: Stats | None = None) -> tuple[int, float]:
    """(bytes of pressure the tasks of cg itself add (see the module doc), bytes per
    second their footprint grew over the last sampling interval). Statistics are
    hierarchical: a cgroup with tasks and children (the root, a v1 parent) counts what
    its children do not."""
    if cg.parent is None:
        # The root's statistics are the machine's (v2 has none of its own: memory.current
        # is MemTotal - MemAvailable, kernel memory included): count its own tasks.
        return sum(t.rss + t.swapents * PAGE_SIZE for t in cg.tasks()), 0.0
    score, growth = _score(cg, activity, now, limited, stats)
    for child in cg.children():
        try:
            child_score, child_growth = _score(child, activity, now, limited, stats)
        except OomkitError:
            continue
        score -= child_score
        growth -= child_growth
    return max(0, score), max(0.0, growth)


def own_added(cg: Cgroup, activity: Activity, now: float, stats: Stats | None = None) -> int:
    """Activity.added() of cg less its children's (what its own tasks added); the root's
    statistics are the machine's: 0."""
    if cg.parent is None:
        return 0
    total = activity.added(cg, now, stats=stats)
    for child in cg.children():
        try:
            total -= activity.added(child, now, stats=stats)
        except OomkitError:
            continue
    return max(0, total)


def adds_most(added: int, domain_added: int, domain_bytes: int,
              since_s: float | None = None) -> bool:
    """Is a cgroup that added ``added`` bytes since the long baseline (``since_s`` seconds
    back), of ``domain_added`` by all the domain's cgroups, the main cause of the
    shortage whatever its rate? At least ADDED_SHARE of what was added, and 1/16 of the
    domain or ADDED_RATE a second over the baseline (at least LONG_S), the lower: the one
    whose memory pushed the others out (QA G19, the idle app systemd-oomd's swap rule
    kills, systemd#27144-like reports); a footprint that did not grow adds nothing,
    however large. The rate floor keeps a leak of MB/s a cause on a big machine: 1/16 of
    64G is 4G, more than a 40M/s leak adds in a minute, and the steady 40G database
    died for it (QA Q17)."""
    floor = domain_bytes // 16
    if since_s is not None:
        floor = min(floor, int(ADDED_RATE * max(since_s, LONG_S)))
    return added >= max(floor, 1 << 20) and added >= domain_added * ADDED_SHARE


def leaks(added: int, domain_added: int, domain_bytes: int, growth_per_s: float,
          since_s: float | None) -> bool:
    """Is a cgroup that added ``added`` bytes in the last ``since_s`` seconds (the long
    baseline, Activity.added), of ``domain_added`` by all the domain's cgroups, and whose
    footprint grows ``growth_per_s`` now, a slow leak, the cause whatever the domain's
    size? It added at least ADDED_SHARE of what was added, at least LEAK_FLOOR bytes and
    LEAK_SHARE of the domain, and it still adds: its growth now is at least STILL_ADDING of
    its average rate since the baseline (a start-up fill that ended is no leak).

    adds_most asks 1/16 of the domain and grows() 1/128 of it a second: a 40M/s leak on
    64G is neither (QA Q17: the steady 40G database died for it, as the kernel's size
    rule would kill it). Here the share of what was added decides, not the domain's size:
    the one that added memory while the others added none. oomd's
    kill_by_memory_size_or_growth (src/oomd/plugins/KillMemoryGrowth-inl.h,
    tryToKillBySize then tryToKillByGrowth) takes a cgroup over size_threshold (50 %) of
    the total first and only then the highest current/average usage ratio among the
    largest, so it too kills such a database; systemd-oomd has no growth rule at all
    (swap use, or memory pressure of a unit, src/oom/oomd-util.c). The rule here is ours:
    growth relative to what the domain added, over the long baseline, not to its size."""
    if since_s is None or since_s <= 0:
        return False
    if added < max(LEAK_FLOOR, int(domain_bytes * LEAK_SHARE)):
        return False
    if added < domain_added * ADDED_SHARE:
        return False
    return growth_per_s >= added / since_s * STILL_ADDING


def cause_score(cg: Cgroup, activity: Activity, now: float, limited: bool,
                stats: Stats | None = None) -> int:
    """The first half of cause_rank: bytes of pressure the tasks of cg itself add."""
    return cause_rank(cg, activity, now, limited, stats)[0]


def grows(growth_per_s: float, domain_bytes: int) -> bool:
    """Is a footprint growing this fast (bytes/s) a cause by itself? At GROWER_SHARE of
    the domain per second or more, it fills the domain within a few minutes: the
    pressure is what it adds, whatever the size of those it pushes into swap."""
    return growth_per_s >= max(1 << 20, domain_bytes * GROWER_SHARE)


def streams(rates: Rates, others_activations: float, domain_bytes: int) -> bool:
    """Is this cgroup a streamer that evicts others' working sets? It takes in pages (a
    reader of more than fits: page cache, unmapped, so no footprint) at the rate that
    marks a grower (see grows), less than STREAM_REUSE of them refaults of its own
    working set (workingset_activate: the kernel found them within reach), while the
    rest of the domain refaults working-set pages at that rate or more
    (``others_activations``, pages/s). The refaulting cgroups only suffer: one that
    re-reads its own files activates a good share of them (a quarter and more, f10) and
    takes in nothing new. Reclaim of a limit hits the LRU of every cgroup below it, so
    the streamer's intake is what pushes the others out (memcg reclaim charges no one)."""
    intake = rates.per_s(rates.charged)
    if intake <= 0 or rates.per_s(rates.activations) > intake * STREAM_REUSE:
        return False
    need = max(1 << 20, domain_bytes * GROWER_SHARE)
    return (intake * PAGE_SIZE >= need and others_activations * PAGE_SIZE >= need)


def own_full_avg10(cg: Cgroup, resource: Resource = Resource.MEMORY) -> float:
    """The cgroup's "full" avg10 (0 where it has no pressure file, as on cgroup v1)."""
    try:
        return cg.pressure(resource).full.avg10
    except OomkitError:
        return 0.0


def own_some_avg10(cg: Cgroup, resource: Resource = Resource.MEMORY) -> float:
    try:
        return cg.pressure(resource).some.avg10
    except OomkitError:
        return 0.0


def describe(cg: Cgroup, activity: Activity, now: float, limited: bool,
             stats: Stats | None = None) -> str:
    """cg's cause score and its terms in words, for a kill message: "score 812M
    (footprint 780M, growth 8M/s, refaults 0/s)". Growth counts GROWTH_WEIGHT times a
    byte held, refaults (pages/s) REFAULT_WEIGHT pages each inside a limited domain and
    nothing machine-wide; the terms are cg's own, hierarchical (the score is what its
    children do not add)."""
    from oomkit.units import format_size

    score = format_size(cause_score(cg, activity, now, limited, stats))
    if cg.parent is None:
        return f"score {score} (its own tasks' RSS and swap)"
    st = _stat(cg, stats)
    rates = activity.rates(cg, now, st)
    refaults = f"refaults {rates.per_s(rates.refaults):.0f}/s"
    if not limited:
        refaults += " not weighed machine-wide"
    intake = rates.per_s(rates.charged)
    if intake > 0:
        reused = rates.per_s(rates.activations) / intake
        refaults += (f", takes in {format_size(int(intake * PAGE_SIZE))}/s "
                     f"({reused:.0%} its own working set)")
    added, since = own_added(cg, activity, now, stats), activity.added_since(cg, now)
    added_text = (f"added {format_size(added)} in {since:.0f} s, " if since is not None
                  else "")
    return (f"score {score} (footprint {format_size(footprint(cg, st))}, growth "
            f"{format_size(int(rates.per_s(rates.growth)))}/s, {added_text}{refaults})")
