"""Charging and reclaim for the simulator: page counters, reclaim, swap, memory.high.

SimMemory holds the machine's memory state that is not a cgroup's own (the page cache's
files, the swap in use, what reclaim has cost) and does what the kernel's mm/memcontrol.c
and mm/vmscan.c do with it: charge pages up the hierarchy (page_counter_try_charge),
reclaim from a subtree when a limit is hit (try_to_free_mem_cgroup_pages), swap anonymous
memory out within memory.swap.max, and throttle over memory.high
(mem_cgroup_handle_over_high). It never calls the OOM killer itself: a charge that cannot
be met calls the on_oom callback it was given.

Model choices, stated once: pages are counted in bytes per cgroup and per file; reclaim
takes clean page cache before anonymous memory (anon and tmpfs pages only to swap, in
one LRU order; dirty pages wait for writeback.py), proportionally over the cgroups of the
reclaimed subtree, skipping memory.min-protected cgroups always and memory.low-protected
ones until nothing else is left (counting a "low" event then); within a cgroup, in LRU
order (lru_order: the longest untouched first, then in proportion to what each toucher
holds); its cost, a memory stall, is machine.reclaim_ns a page (reclaim_large_ns for
pages sequential readahead brought in as large folios).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from oomkit.clock import ManualClock
from oomkit.kernel.base import PAGE_SIZE
from oomkit.kernel.sim.memcg import Member, SimCgroup
from oomkit.kernel.sim.process import SimFile, SimProcess
from oomkit.kernel.sim.scenario import MachineSpec
from oomkit.kernel.sim.writeback import Writeback

NS: Final = 1_000_000_000
HZ: Final = 1000  # jiffies per second for the memory.high penalty (CONFIG_HZ_1000)
MEMCG_CHARGE_BATCH: Final = 64  # pages
MEMCG_DELAY_PRECISION_SHIFT: Final = 20
MEMCG_DELAY_SCALING_SHIFT: Final = 14
MEMCG_MAX_HIGH_DELAY_JIFFIES: Final = 2 * HZ
# Pages untouched this long are taken as deactivated (on the inactive list's tail): about
# the time the kernel's aging takes to cycle a busy list.
LRU_AGE_NS: Final = NS
T = TypeVar("T")

OnOom = Callable[[SimProcess, "SimCgroup | None"], None]


def pages(nbytes: int) -> int:
    """Bytes to 4K pages, rounded up."""
    return (nbytes + PAGE_SIZE - 1) // PAGE_SIZE


def page_align(nbytes: int) -> int:
    """Bytes rounded up to whole pages."""
    return pages(nbytes) * PAGE_SIZE


def lru_order(owners: Sequence[tuple[T, int, int]], nbytes: int, now_ns: int
              ) -> list[tuple[T, int]]:
    """Which owners' pages reclaim takes, and how many bytes of each, to free nbytes from
    one LRU. ``owners``: (owner, reclaimable bytes, last touch in ns), in list order.

    The kernel keeps pages, not owners, on its LRU lists (mm/vmscan.c shrink_lruvec):
    the pages of an owner that has not touched them for LRU_AGE_NS have been deactivated
    and sit at the inactive list's tail, so they go first, the longest untouched first;
    the pages of owners that keep touching theirs are interleaved on the lists, so the
    rest comes from them in proportion to what each holds (never "the largest first")."""
    out: list[tuple[T, int]] = []
    if nbytes <= 0:
        return out
    got = 0
    horizon = now_ns - LRU_AGE_NS
    order = sorted(range(len(owners)), key=lambda i: owners[i][2])
    hot: list[int] = []
    for i in order:
        owner, size, touched = owners[i]
        if touched >= horizon:
            hot.append(i)
            continue
        take = min(size, nbytes - got)
        if take > 0:
            out.append((owner, take))
            got += take
        if got >= nbytes:
            return out
    hot.sort()  # back to list order
    total = sum(owners[i][1] for i in hot)
    rest = nbytes - got
    left: dict[int, int] = {}
    for i in hot:
        size = owners[i][1]
        take = min(size, page_align(rest * size // total) if total else 0, nbytes - got)
        if take > 0:
            out.append((owners[i][0], take))
            got += take
        left[i] = size - max(take, 0)
    for i in sorted(hot, key=lambda i: -left[i]):  # what rounding left over
        if got >= nbytes:
            break
        take = min(left[i], nbytes - got)
        if take > 0:
            out.append((owners[i][0], take))
            got += take
    return out


def count_reclaim(cg: SimCgroup, lru: str, nr: int, scanned_only: bool = False) -> None:
    """pgscan/pgsteal as memory.stat keeps them: the total, by who reclaimed (all of the
    simulator's reclaim is direct: it has no kswapd) and by list (anon, file).

    Clean, unmapped pages off the inactive tail are scanned and taken alike (for them
    shrink_folio_list() reclaims even a PG_referenced folio: folio_check_references()
    gives FOLIOREF_RECLAIM_CLEAN); ``scanned_only`` counts pages isolated and put back
    instead (dirty pages that direct reclaim activates), in pgscan but not pgsteal."""
    if nr <= 0:
        return
    scan, steal = ("pgscan_anon", "pgsteal_anon") if lru == "anon" else (
        "pgscan_file", "pgsteal_file")
    c: SimCgroup | None = cg
    while c is not None:
        vm = c.vm
        vm["pgscan"] += nr
        vm["pgscan_direct"] += nr
        vm[scan] += nr
        if not scanned_only:
            vm["pgsteal"] += nr
            vm["pgsteal_direct"] += nr
            vm[steal] += nr
        c = c._parent


def meet_dirty(files: Sequence[SimFile]) -> int:
    """Reclaim that found too few clean pages has walked the inactive file list and met
    the dirty pages on it: direct reclaim does not write them, it activates them
    (shrink_folio_list(): a dirty file folio outside kswapd goes to activate_locked) and
    wakes the flusher. The share of a file's dirty pages on the inactive list is the
    inactive share inactive_is_low() keeps; pages met once stay met (activated) until
    written back. Returns the pages met now, per cgroup counted by the caller."""
    met = 0
    for f in files:
        fresh = f.dirty - f.dirty_met
        if fresh <= 0:
            continue
        take = page_align(int(fresh * (1.0 - _active_share(f.cgroup.local["file"]))))
        take = min(fresh, take)
        f.dirty_met += take
        count_reclaim(f.cgroup, "file", pages(take), scanned_only=True)
        met += pages(take)
    return met


def _active_share(lru_bytes: int) -> float:
    """The share of an LRU the kernel keeps active: inactive_is_low() deactivates while
    inactive * inactive_ratio < active, with inactive_ratio = int_sqrt(10 * GB) (1 below
    1G)."""
    gb = lru_bytes >> 30
    ratio = math.isqrt(10 * gb) if gb else 1
    return ratio / (1 + ratio)


class SimMemory:
    """The machine's memory outside the cgroups' own counters, and the charge and reclaim
    paths over it. ``root`` is the root cgroup; ``on_oom(proc, over)`` is called when a
    charge cannot be met (over: the innermost cgroup still over its memory.max, None for
    the machine)."""

    def __init__(self, machine: MachineSpec, root: SimCgroup, on_oom: OnOom,
                 clock: ManualClock) -> None:
        self.machine = machine
        self._now = clock.now_ns
        self.root = root
        self._on_oom = on_oom
        self.files: dict[str, SimFile] = {}
        self.files_of: dict[int, list[SimFile]] = {root.id: []}
        self.wb = Writeback(machine, root)
        self.swap_used = 0  # bytes
        self.reclaim_cost_ns = 0  # what reclaim has cost so far (see charge)
        # The last charge that fell short waited for writeback (charge(): the dirty case)
        self.waited_writeback = False
        self._burst = (-1, 1.0)  # (restore burst period index, its factor)

    def commit(self, cg: SimCgroup, kind: str, nbytes: int) -> None:
        cg.local[kind] += nbytes
        nr = (nbytes + PAGE_SIZE - 1) // PAGE_SIZE
        c: SimCgroup | None = cg
        while c is not None:
            c.charged += nbytes
            c.vm["pgpgin"] += nr  # v1's (total_)pgpgin: pages charged, hierarchical
            c = c._parent

    def uncharge(self, cg: SimCgroup, kind: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        cg.local[kind] -= nbytes
        c: SimCgroup | None = cg
        while c is not None:
            c.charged -= nbytes
            c = c._parent

    def over_limit(self, cg: SimCgroup, nbytes: int) -> SimCgroup | None:
        """page_counter_try_charge: the innermost ancestor whose memory.max is hit."""
        c: SimCgroup | None = cg
        while c is not None:
            mx = c.memory_max_
            if mx is not None and c.charged + nbytes > mx:
                return c
            c = c._parent
        return None

    def room(self, cg: SimCgroup) -> int:
        room = self.machine.memory - self.root.charged
        c: SimCgroup | None = cg
        while c is not None:
            if c.memory_max_ is not None:
                room = min(room, c.memory_max_ - c.charged)
            c = c._parent
        return max(0, room)

    def charge(self, proc: SimProcess, cg: SimCgroup, kind: str, nbytes: int,
               place: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Charge nbytes for proc. Returns (bytes charged, stall ns spent reclaiming).
        ``place(n)`` records the n bytes charged where they live (the process's rss, a
        file), before an OOM for the rest is declared, so the OOM sees them.

        Less than asked means the rest met an OOM (or is waiting for a victim to exit);
        the caller stalls for the rest of its tick.
        """
        stall = 0
        self.waited_writeback = False
        if nbytes <= self.room(cg):
            self.commit(cg, kind, nbytes)
            if place is not None:
                place(nbytes)
            return nbytes, 0
        over = self.over_limit(cg, nbytes)
        cost_before = self.reclaim_cost_ns
        if over is not None:
            over.count_event("max")
            need = over.charged + nbytes - over.memory_max_  # type: ignore[operator]
            self.reclaim(over, page_align(need))
        else:
            need = self.root.charged + nbytes - self.machine.memory
            self.reclaim(None, page_align(need))
        stall += self.reclaim_cost_ns - cost_before
        room = self.room(cg)
        if nbytes <= room:
            self.commit(cg, kind, nbytes)
            if place is not None:
                place(nbytes)
            return nbytes, stall
        part = (room // PAGE_SIZE) * PAGE_SIZE
        if part > 0:
            self.commit(cg, kind, part)
            if place is not None:
                place(part)
        # Out of memory for the rest: at the innermost cgroup still over, or the machine.
        over = self.over_limit(cg, nbytes - part)
        dirty = self.wb.total if over is None else sum(
            c.local["file_dirty"] for c in over.walk())  # type: ignore[attr-defined]
        if dirty:
            # Only dirty pages left to take: reclaim met them on the inactive list and
            # waits for writeback (it kicks the flusher) instead of declaring an OOM; the
            # caller stalls for the tick.
            ids = {c.id for c in (over or self.root).walk()}
            met = meet_dirty([f for f in self.wb.files.values() if f.cgroup.id in ids])
            self.wb.urgent.update(ids)
            # Pages met the first time are only activated and marked PG_reclaim; a v1
            # reclaim waits on a folio under writeback once it meets it marked
            # (shrink_folio_list(), case 3): when this pass met nothing new.
            self.waited_writeback = met == 0
            return part, stall
        self._on_oom(proc, over)
        return part, stall

    def swap_room(self, cg: SimCgroup) -> int:
        room = self.machine.swap - self.swap_used
        c: SimCgroup | None = cg
        while c is not None:
            if c.swap_max_ is not None:
                room = min(room, c.swap_max_ - c.swap_charged)
            c = c._parent
        return max(0, room)

    def _reclaimable(self, cg: SimCgroup) -> tuple[int, int]:
        """(file, anon) bytes reclaim could take from this cgroup itself; anon counts the
        unmapped pages of its tmpfs files, swap-backed as anon is (see _swap_out)."""
        file = shmem = 0
        for f in self.files_of.get(cg.id, ()):
            if f.kind == "file":
                file += f.resident - f.mapped - f.dirty
            else:
                shmem += f.resident - f.mapped
        anon = 0
        if self.machine.swap:
            anon = min(cg.local["anon"] + shmem, self.swap_room(cg))
        return max(0, file), max(0, anon)

    def reclaim(self, target: SimCgroup | None, nbytes: int) -> int:
        """Reclaim up to nbytes from target's subtree (None: the whole machine)."""
        top = target or self.root
        cgs = [c for c in top.walk("post")]
        got = 0
        for honour_low in (True, False):
            cands: list[tuple[SimCgroup, int, int]] = []
            for c in cgs:
                assert isinstance(c, SimCgroup)
                if c.parent is not None and c.charged <= c.memory_min_:
                    continue
                protected_low = c.parent is not None and c.charged <= c.memory_low_
                if honour_low and protected_low:
                    continue
                file, anon = self._reclaimable(c)
                if file or anon:
                    cands.append((c, file, anon))
                    if not honour_low and protected_low:
                        c.count_event("low")
            want = nbytes - got
            total_file = sum(f for _, f, _ in cands)
            if total_file:
                for c, file, _ in cands:
                    share = min(file, page_align(want * file // total_file))
                    got += self._evict_file(c, share)
            want = nbytes - got
            total_anon = sum(a for _, _, a in cands)
            if want > 0 and total_anon:
                for c, _, anon in cands:
                    share = min(anon, page_align(want * anon // total_anon))
                    got += self._swap_out(c, share)
            if got >= nbytes:
                break
        return got

    def _evict_file(self, cg: SimCgroup, nbytes: int) -> int:
        """Clean page cache off the cgroup's file LRU, tail first (see lru_order)."""
        files = [(f, f.resident - f.mapped - f.dirty, f.touched_at)
                 for f in self.files_of.get(cg.id, ())
                 if f.kind == "file" and f.resident > f.mapped + f.dirty]
        got = 0
        for f, take in lru_order(files, nbytes, self._now()):
            self.drop_file_pages(f, take)
            got += take
            self.reclaim_cost_ns += pages(take) * (
                self.machine.reclaim_large_ns if f.large_folios else self.machine.reclaim_ns)
        count_reclaim(cg, "file", pages(got))
        if cg.local["file_dirty"] and self.machine.dirty_scan_ratio > 1.0:
            # Dirty folios met again on the way (MachineSpec.dirty_scan_ratio).
            again = int(pages(got) * (self.machine.dirty_scan_ratio - 1.0))
            count_reclaim(cg, "file", again, scanned_only=True)
        return got

    def drop_file_pages(self, f: SimFile, nbytes: int) -> None:
        if nbytes <= 0:
            return
        f.resident -= nbytes
        self.uncharge(f.cgroup, f.kind, nbytes)
        if f.dirty > f.resident - f.mapped:  # dirty pages dropped (file freed, removed)
            self.wb.clean(f, f.dirty - max(0, f.resident - f.mapped))

    def _swap_out(self, cg: SimCgroup, nbytes: int) -> int:
        """Swap-backed pages to swap off the cgroup's anon LRU, tail first (lru_order),
        within the swap room: processes' anonymous memory and the unmapped pages of the
        tmpfs files charged to the cgroup, interleaved by when each was last touched.

        tmpfs pages are swap-backed: mm/vmscan.c's folio_is_file_lru() is
        !folio_test_swapbacked(), so they sit on the anon LRU (or MGLRU's anon
        generations) and, without swap space, are not scanned at all (can_reclaim_anon_
        pages()); pageout() hands one to mm/shmem.c's shmem_writeout() (shmem_writepage()
        before 6.16), which moves it to the swap cache and takes it out of the file's page
        cache (shmem_delete_from_page_cache(): NR_SHMEM and NR_FILE_PAGES go down, the
        inode's info->swapped up), its swap entry charged to the folio's memcg
        (mem_cgroup_try_charge_swap()). Mapped tmpfs pages are left to the mapping
        processes' rss here (a simplification: the kernel unmaps and swaps them too)."""
        want = min(nbytes, self.swap_room(cg))
        owners: list[tuple[Member | SimFile, int, int]] = [
            (p, p.anon, p.touched_at) for p in cg.procs.values() if p.anon > 0]
        if cg.local["shmem"]:
            owners += [(f, f.resident - f.mapped, f.touched_at)
                       for f in self.files_of.get(cg.id, ())
                       if f.kind == "shmem" and f.resident > f.mapped]
        got = 0
        for owner, take in lru_order(owners, want, self._now()):
            if isinstance(owner, SimFile):
                owner.resident -= take
                owner.swapped += take
                self.uncharge(cg, "shmem", take)
            else:
                owner.anon -= take
                owner.swapped += take
                self.uncharge(cg, "anon", take)
            self.swap_charge(cg, take)
            got += take
        per_page = self.machine.swap_out_ns
        self.reclaim_cost_ns += pages(got) * (self.machine.reclaim_ns if per_page is None
                                              else per_page)
        count_reclaim(cg, "anon", pages(got))
        # Anon folios the scan looked at and kept (MGLRU aging and look-around: young
        # ones go up a generation): in pgscan, not pgsteal.
        kept = int(pages(got) * (self.machine.anon_scan_ratio - 1.0))
        count_reclaim(cg, "anon", kept, scanned_only=True)
        return got

    def swap_charge(self, cg: SimCgroup, nbytes: int) -> None:
        self.swap_used += nbytes
        c: SimCgroup | None = cg
        while c is not None:
            c.swap_charged += nbytes
            c = c._parent

    def free_shmem_swap(self, f: SimFile, nbytes: int) -> int:
        """Drop up to nbytes of a tmpfs file's swapped pages (truncated or removed:
        shmem_undo_range() frees their swap entries, uncharging memory.swap.current).
        Returns the bytes freed."""
        take = min(nbytes, f.swapped)
        if take > 0:
            f.swapped -= take
            self.swap_charge(f.cgroup, -take)
        return max(0, take)

    # -- memory.high ----------------------------------------------------------------------
    def over_high_penalty(self, proc: SimProcess, nr_pages: int) -> int:
        """mem_cgroup_handle_over_high(): reclaim, then the throttle. Returns the stall in
        ns (the reclaim's cost and the throttle; 0: none)."""
        worst = 0
        cost_before = self.reclaim_cost_ns
        c: SimCgroup | None = proc.cgroup
        while c is not None:
            high = c.memory_high_
            if high is not None and c.charged > high:
                c.count_event("high")
                self.reclaim(c, page_align(min(nr_pages * PAGE_SIZE, c.charged - high)))
                if c.charged > high:
                    # calculate_overage(): fixed point, 20 bits of precision
                    overage = ((c.charged - high) << MEMCG_DELAY_PRECISION_SHIFT) // max(high, 1)
                    worst = max(worst, overage)
            c = c._parent
        reclaim_ns = self.reclaim_cost_ns - cost_before  # reclaim_high() is a memstall too
        if worst == 0:
            return reclaim_ns
        penalty = worst * worst * HZ
        penalty >>= MEMCG_DELAY_PRECISION_SHIFT
        penalty >>= MEMCG_DELAY_SCALING_SHIFT
        penalty = penalty * nr_pages // MEMCG_CHARGE_BATCH
        penalty = min(penalty, MEMCG_MAX_HIGH_DELAY_JIFFIES)
        if penalty <= HZ // 100:
            return reclaim_ns
        return reclaim_ns + penalty * (NS // HZ)

    def over_high(self, cg: SimCgroup) -> bool:
        c: SimCgroup | None = cg
        while c is not None:
            if c.memory_high_ is not None and c.charged > c.memory_high_:
                return True
            c = c._parent
        return False

    def restore_burst(self) -> float:
        """The factor on the share of refaults that stall on memory in the current
        machine.restore_burst_period: 1.0 when restore_burst_cv is 0, else a lognormal
        draw of mean 1 and that coefficient of variation, seeded by machine.seed and the
        period's index (the same for every cgroup in the period)."""
        m = self.machine
        if m.restore_burst_cv <= 0:
            return 1.0
        index = self._now() // m.restore_burst_period_ns
        if index != self._burst[0]:
            sigma = math.sqrt(math.log1p(m.restore_burst_cv ** 2))
            rng = random.Random(m.seed * 1_000_003 + index)
            self._burst = (index, math.exp(rng.gauss(-sigma * sigma / 2, sigma)))
        return self._burst[1]

    def workingset_refault_share(self, owner: SimCgroup, file: bool, ws: int,
                                  resident: int, seq: bool) -> float:
        """The share of refaults the kernel's workingset detection flags (mm/workingset.c).

        A refault activates its page when its refault distance (pages evicted and
        activated in the memcg since the page left) is at most the workingset size
        (workingset_test_recent(): the active file list, plus anon when there is swap;
        for an anon refault all of the file lists). It counts as a memory stall when,
        besides, the page was in the workingset (PG_workingset) when it was evicted. With
        a share p of the evicted pages activated, both hold for p * p of the refaults.

        The distance: a sequential pass re-reads a page after the rest of the working set,
        ws - resident bytes; random access after an exponential number of evictions with
        that mean, stretched by the activations (1 + p). The active share of a list is
        what the kernel's inactive_is_low() keeps: 1/2 below 1G, more above.

        With machine.lru = "mglru" (multi-gen LRU, the default of 7.x kernels), a refault
        is recent when its page left fewer than MAX_NR_GENS generations ago
        (lru_gen_test_recent()); the generations span the whole list of its type, so the
        window is that list (file or anon alone), and there is no active list for
        activations to stretch the distance: p = 1 - exp(-size / distance).
        """
        files = owner.local["file"]
        anon = owner.local["anon"] + owner.local["shmem"]  # tmpfs is on the anon LRU
        swap = bool(self.machine.swap) and self.swap_room(owner) > 0
        if self.machine.lru == "mglru":
            size: float = files if file else (anon if swap else 0)
            distance = ws - resident
            if distance <= 0 or size <= 0:
                return 1.0 if distance <= 0 else 0.0
            if seq:
                return 1.0 if distance <= size else 0.0
            return 1.0 - math.exp(-size / distance)
        if file:
            size = _active_share(files) * files + (anon if swap else 0)
        else:
            size = files + (_active_share(anon) * anon if swap else 0)
        distance = ws - resident
        if distance <= 0 or size <= 0:
            return 1.0 if distance <= 0 else 0.0
        if seq:
            return 1.0 if distance <= size else 0.0
        p = 1.0 - math.exp(-size / distance)
        for _ in range(8):
            p = 1.0 - math.exp(-size / (distance * (1.0 + p)))
        return p
