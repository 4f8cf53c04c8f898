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

balance_dirty_pages(): a writer whose domain is below freerun is not throttled; above
it, it pauses after each batch for the time the device needs to write what it dirtied,
scaled by how far the domain is from freerun to the limit (at or over the limit: the full
time, at most MAX_PAUSE). The pause is io_schedule_timeout(): an IO stall, not a memory
one. Reclaim that meets only dirty pages waits for writeback (reclaim_throttle(), inside
the reclaim's memstall section) instead of declaring an OOM at once.
"""

from __future__ import annotations

from typing import Final

from oomkit.kernel.sim.memcg import SimCgroup
from oomkit.kernel.sim.process import SimFile
from oomkit.kernel.sim.scenario import MachineSpec

NS: Final = 1_000_000_000
DIRTY_EXPIRE_NS: Final = 30 * NS  # vm.dirty_expire_centisecs = 3000
MAX_PAUSE_NS: Final = 200_000_000  # balance_dirty_pages: HZ / 5


class Writeback:
    """The machine's dirty pages: per file, and in order of first dirtying."""

    def __init__(self, machine: MachineSpec, root: SimCgroup) -> None:
        self.machine = machine
        self.root = root
        self.files: dict[str, SimFile] = {}  # files with dirty pages, oldest first
        self.total = 0  # dirty bytes, machine-wide
        self.urgent: set[int] = set()  # cgroup ids whose reclaim met only dirty pages

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

    def pressure(self, cg: SimCgroup) -> float:
        """Where the writer's tightest domain is between freerun (0.0) and its limit
        (1.0 and above); 0 when below freerun."""
        worst = 0.0
        bg, limit = self._limits(self._global_dirtyable())
        worst = max(worst, _position(self.total, bg, limit))
        dom = self._domain(cg)
        if dom is not None:
            bg, limit = self._limits(self._memcg_dirtyable(dom))
            worst = max(worst, _position(dom.local["file_dirty"], bg, limit))
        return worst

    def pause_ns(self, cg: SimCgroup, nbytes: int) -> int:
        """balance_dirty_pages() after dirtying nbytes: the writer's pause in ns."""
        pos = self.pressure(cg)
        if pos <= 0.0:
            return 0
        pause = int(nbytes * NS / self.machine.write_bandwidth * min(1.0, pos))
        return min(pause, MAX_PAUSE_NS)

    # -- the flusher --------------------------------------------------------------------
    def _due(self, f: SimFile, now_ns: int, global_over: bool) -> bool:
        if global_over or now_ns - f.dirtied_at >= DIRTY_EXPIRE_NS:
            return True
        if f.cgroup.id in self.urgent:
            return True
        dom = self._domain(f.cgroup)
        if dom is None:
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
        for f in urgent + rest:
            if written >= budget:
                break
            if not self._due(f, now_ns, global_over):
                continue
            take = min(f.dirty, budget - written)
            self.clean(f, take)
            written += take
        if not any(f.cgroup.id in self.urgent for f in self.files.values()):
            self.urgent.clear()
        return written


def _position(dirty: int, bg: int, limit: int) -> float:
    freerun = (bg + limit) // 2
    if dirty <= freerun or limit <= freerun:
        return 0.0 if dirty <= freerun else 1.0
    return (dirty - freerun) / (limit - freerun)


def _descendants(cg: SimCgroup) -> list[SimCgroup]:
    out: list[SimCgroup] = []
    stack = list(cg._children.values())
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c._children.values())
    return out
