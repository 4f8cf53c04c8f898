"""Dirty page cache and its writeback (mm/page-writeback.c, as the simulator models it).

A ``write = true`` file ``alloc`` puts dirty pages in the page cache. Dirty pages cannot
be reclaimed until written back; the device writes them at ``machine.write_bandwidth``
bytes a second, shared by all writers, oldest dirtied first. Writeback runs when a dirty
domain is over its background threshold, when pages have been dirty longer than
dirty_expire (30 s), or when reclaim found a cgroup's memory full of dirty pages
(wakeup_flusher_threads()).

Domains and thresholds, as domain_dirty_limits() sets them: the machine's dirtyable
memory is its RAM less anonymous and tmpfs pages (global_dirtyable_memory(): free and
file pages); a memcg with a memory.max is a domain of its own (cgroup writeback's mdtc)
whose dirtyable memory is its page cache plus its headroom under the tightest limit
above it. The thresholds are ``dirty_ratio`` and ``dirty_background_ratio`` percent of
the dirtyable memory; the "freerun" ceiling is half-way between.

balance_dirty_pages(): a writer whose domains are all below freerun is not throttled;
above it, it is paced at its writeback context's ``dirty_ratelimit * pos_ratio``
(dirty_throttle.py: the kernel's rate estimates, which a fresh memcg's wb starts at
100 MB/s and which lag the device), sleeping for what it is ahead of that pace (virtual
time: ``current->dirty_paused_when``), at most wb_max_pause(). The pause is
io_schedule_timeout(): an IO stall, not a memory one. Reclaim that meets only dirty pages
waits for writeback (reclaim_throttle(), inside the reclaim's memstall section) instead
of declaring an OOM at once.

Writeback contexts: with cgroup writeback, each memcg dirty domain has its own, created
fresh with the domain's first dirty page; without (v1), all writers share the device's
root one, taken as warmed up to ``write_bandwidth``.
"""

from __future__ import annotations

from typing import Final

from oomkit.kernel.sim import dirty_throttle as dt
from oomkit.kernel.sim.memcg import SimCgroup
from oomkit.kernel.sim.process import SimFile, SimProcess
from oomkit.kernel.sim.scenario import MachineSpec

NS: Final = 1_000_000_000
DIRTY_EXPIRE_NS: Final = 30 * NS  # vm.dirty_expire_centisecs = 3000


class Writeback:
    """The machine's dirty pages: per file, and in order of first dirtying."""

    def __init__(self, machine: MachineSpec, root: SimCgroup) -> None:
        self.machine = machine
        self.root = root
        self.files: dict[str, SimFile] = {}  # files with dirty pages, oldest first
        self.total = 0  # dirty bytes, machine-wide
        self.urgent: set[int] = set()  # cgroup ids whose reclaim met only dirty pages
        # Writeback contexts by dirty domain (None: the device's root wb), and each
        # throttled task's dirty_paused_when (pid -> ns).
        self.wbs: dict[int | None, dt.WbState] = {}
        self.paused_when: dict[int, int] = {}
        # memcg domains whose background writeback runs (by id): balance_dirty_pages()
        # starts it for a memcg domain only once the domain is past its freerun ceiling
        # (wb_start_background_writeback(); its first check is the global background
        # threshold only), and it runs while wb_over_bg_thresh() holds.
        self.bg_running: dict[int, SimCgroup] = {}

    def wb_of(self, cg: SimCgroup, now_ns: int) -> dt.WbState:
        """The writeback context a writer in cg dirties pages through."""
        dom = self._domain(cg)
        key = None if dom is None else dom.id
        wb = self.wbs.get(key)
        if wb is None:
            wb = (dt.WbState.warmed(self.machine.write_bandwidth, now_ns) if key is None
                  else dt.WbState(stamp_ns=now_ns))
            self.wbs[key] = wb
        return wb

    # -- dirtying and cleaning ----------------------------------------------------------
    def dirty(self, f: SimFile, nbytes: int, now_ns: int) -> None:
        """nbytes of f written (they are resident already)."""
        take = min(nbytes, f.resident - f.mapped - f.dirty)
        if take <= 0:
            return
        if not f.dirty:
            f.dirtied_at = now_ns
            self.files[f.path] = f
        f.dirty += take
        f.cgroup.local["file_dirty"] += take
        self.total += take
        self.wb_of(f.cgroup, now_ns).dirtied += take

    def clean(self, f: SimFile, nbytes: int) -> None:
        """nbytes of f's dirty pages written back (or dropped with the file)."""
        take = min(nbytes, f.dirty)
        if take <= 0:
            return
        f.dirty -= take
        f.dirty_met = min(f.dirty_met, f.dirty)
        f.cgroup.local["file_dirty"] -= take
        self.total -= take
        if not f.dirty:
            self.files.pop(f.path, None)

    # -- domains ------------------------------------------------------------------------
    def _global_dirtyable(self) -> int:
        root = self.root
        return max(0, self.machine.memory - root.local["anon"] - root.local["shmem"]
                   - sum(c.local["anon"] + c.local["shmem"] for c in _descendants(root)))

    def _domain(self, cg: SimCgroup) -> SimCgroup | None:
        """The memcg dirty domain a writer in cg is in (None: the machine's only)."""
        if not self.machine.cgroup_writeback:
            return None
        c: SimCgroup | None = cg
        while c is not None and c.parent is not None:
            if c.memory_max_ is not None:
                return c
            c = c._parent
        return None

    @staticmethod
    def _memcg_dirtyable(dom: SimCgroup) -> int:
        headroom = None
        c: SimCgroup | None = dom
        while c is not None:
            if c.memory_max_ is not None:
                room = max(0, c.memory_max_ - c.charged)
                headroom = room if headroom is None else min(headroom, room)
            c = c._parent
        return dom.local["file"] + (headroom or 0)

    def _limits(self, dirtyable: int) -> tuple[int, int]:
        """(background threshold, limit) in bytes for so much dirtyable memory."""
        m = self.machine
        return dirtyable * m.dirty_background_ratio // 100, dirtyable * m.dirty_ratio // 100

    def _domains(self, cg: SimCgroup) -> list[tuple[int, int, int]]:
        """(dirty, background threshold, limit) of each dirty domain a writer in cg is
        in: the machine's, then its memcg's (cgroup writeback)."""
        out = [(self.total, *self._limits(self._global_dirtyable()))]
        dom = self._domain(cg)
        if dom is not None:
            out.append((dom.local["file_dirty"], *self._limits(self._memcg_dirtyable(dom))))
        return out

    def pause_ns(self, proc: SimProcess, nbytes: int, now_ns: int) -> int:
        """balance_dirty_pages() after proc dirtied nbytes, at now_ns: its pause in ns
        (an IO wait), 0 when free-running or still behind its pace."""
        domains = self._domains(proc.cgroup)
        if all(d <= (bg + lim) // 2 for d, bg, lim in domains):
            self.paused_when[proc.pid] = now_ns  # free_running: the pace restarts
            return 0
        dom = self._domain(proc.cgroup)
        if dom is not None:
            self.bg_running[dom.id] = dom  # "Start writeback even when in laptop mode"
        wb = self.wb_of(proc.cgroup, now_ns)
        if now_ns - wb.stamp_ns >= dt.BANDWIDTH_INTERVAL_NS:
            for d, bg, lim in domains:  # __wb_update_bandwidth(gdtc, mdtc, true)
                dt.update_ratelimit(wb, d, bg, lim, now_ns)
            dt.update_write_bw(wb, now_ns)
            dt.stamp(wb, now_ns)
        pos = min(dt.pos_ratio(d, bg, lim, wb.avg_write_bw) for d, bg, lim in domains)
        task = wb.dirty_ratelimit * pos
        max_pause = dt.max_pause_ns(wb, domains[-1][0])
        if task <= 0:
            pause = max_pause
        else:
            period = int(nbytes * dt.NS / task)
            when = self.paused_when.get(proc.pid, now_ns)
            pause = period - (now_ns - when)
            if pause <= 0:  # behind its pace: no sleep, the pace moves on (virtual time)
                self.paused_when[proc.pid] = now_ns if pause < -dt.NS else when + period
                return 0
            if pause > max_pause:
                now_ns += min(pause - max_pause, max_pause)
                pause = max_pause
        self.paused_when[proc.pid] = now_ns + pause
        return pause

    # -- the flusher --------------------------------------------------------------------
    def _due(self, f: SimFile, now_ns: int, global_over: bool) -> bool:
        if global_over or now_ns - f.dirtied_at >= DIRTY_EXPIRE_NS:
            return True
        if f.cgroup.id in self.urgent:
            return True
        dom = self._domain(f.cgroup)
        if dom is None or dom.id not in self.bg_running:
            return False
        bg, _ = self._limits(self._memcg_dirtyable(dom))
        return dom.local["file_dirty"] > bg

    def next_due_ns(self, now_ns: int) -> int | None:
        """When the flusher next has something to write (None: nothing dirty)."""
        if not self.files:
            return None
        bg, _ = self._limits(self._global_dirtyable())
        oldest = min(f.dirtied_at for f in self.files.values())
        if self.total > bg or self.urgent or any(
                self._due(f, now_ns, False) for f in self.files.values()):
            return now_ns
        return oldest + DIRTY_EXPIRE_NS

    def run(self, now_ns: int, dt_ns: int) -> int:
        """The flusher's work over dt_ns: write back what is due, at the device's
        bandwidth. Returns the bytes written."""
        budget = self.machine.write_bandwidth * dt_ns // NS
        bg, _ = self._limits(self._global_dirtyable())
        global_over = self.total > bg
        written = 0
        urgent = [f for f in self.files.values() if f.cgroup.id in self.urgent]
        rest = [f for f in self.files.values() if f.cgroup.id not in self.urgent]
        wrote: set[int | None] = set()
        for f in urgent + rest:
            if written >= budget:
                break
            if not self._due(f, now_ns, global_over):
                continue
            take = min(f.dirty, budget - written)
            self.clean(f, take)
            written += take
            wb = self.wb_of(f.cgroup, now_ns)
            if not wb.writing and now_ns - wb.stamp_ns > dt.WB_IDLE_NS:
                dt.stamp(wb, now_ns)  # wb_bandwidth_estimate_start(): idle time not counted
            wb.written += take
            dom = self._domain(f.cgroup)
            wrote.add(None if dom is None else dom.id)
        for cid, running in list(self.bg_running.items()):
            bg, _ = self._limits(self._memcg_dirtyable(running))
            if running.local["file_dirty"] <= bg:
                del self.bg_running[cid]  # wb_over_bg_thresh() no longer: the work ends
        for key, wb in self.wbs.items():
            wb.writing = key in wrote
            if wb.writing and now_ns - wb.stamp_ns >= dt.BANDWIDTH_INTERVAL_NS:
                dt.update_write_bw(wb, now_ns)  # wb_update_bandwidth() on IO completion
                dt.stamp(wb, now_ns)
        if not any(f.cgroup.id in self.urgent for f in self.files.values()):
            self.urgent.clear()
        return written


def _descendants(cg: SimCgroup) -> list[SimCgroup]:
    out: list[SimCgroup] = []
    stack = list(cg._children.values())
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c._children.values())
    return out
