"""A simulated process: its memory, where it is in its program, and its accounting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oomkit.kernel.base import PAGE_SIZE, Task

if TYPE_CHECKING:
    from oomkit.kernel.sim.memcg import SimCgroup
    from oomkit.kernel.sim.scenario import Step

# Process states. "blocked" is a memory stall with a known end (throttling, refaults).
NEW, RUNNING, SLEEPING, EXITING, EXITED = "new", "running", "sleeping", "exiting", "exited"


@dataclass(eq=False, slots=True)
class SimFile:
    """A file's pages in the page cache (kind "file") or on tmpfs (kind "shmem").

    The simulator tracks how many bytes of it are resident, not which pages: touching a
    working set of it misses with probability (size - resident) / size.
    """

    path: str
    kind: str
    cgroup: SimCgroup  # charged to whoever brought the pages in first
    size: int = 0  # bytes the file holds (for tmpfs: what removing it frees)
    resident: int = 0  # bytes in memory now
    # tmpfs only: bytes on swap (reclaim swapped them out as it does anon memory; they
    # are charged to memory.swap.current of ``cgroup`` until touched or removed)
    swapped: int = 0
    mapped: int = 0  # bytes mapped MAP_SHARED by live processes
    large_folios: bool = False  # brought in by sequential readahead (cheaper to reclaim)
    touched_at: int = 0  # ns: the last time a process read or wrote it
    dirty: int = 0  # bytes written and not yet written back (not reclaimable)
    dirtied_at: int = 0  # ns: when the oldest of them was dirtied
    # Dirty bytes reclaim has met and activated (scanned, not reclaimed): it does not
    # meet them again until they are written back.
    dirty_met: int = 0
    # Bytes that were in memory once: a miss below this is a refault (the kernel finds a
    # shadow entry and counts a memory stall); above it, a first read (IO only).
    seen: int = 0


@dataclass(eq=False, slots=True)
class SimProcess:
    pid: int
    name: str
    cgroup: SimCgroup
    program: tuple[Step, ...]
    oom_score_adj: int
    start_ns: int
    start_time: int = 0
    spawn_seq: int = 0  # orders processes that start at the same time
    spawned_into: str = ""  # the cgroup path it was spawned for (it may not exist yet)
    state: str = NEW
    pc: int = 0
    # progress inside the current step
    step_done: int = 0  # bytes allocated / touched, or ns worked / slept
    step_started_ns: int = 0  # when the current step began (a paced alloc's clock)
    # memory
    anon: int = 0  # resident anonymous bytes
    swapped: int = 0  # anonymous bytes out on swap
    shmem_anon: int = 0  # MAP_SHARED|MAP_ANONYMOUS bytes (shmem without a path)
    mapped_files: dict[str, int] = field(default_factory=dict)  # path -> bytes mapped
    # tmpfs files it wrote, held open until it exits (unlinking one frees nothing then)
    open_files: set[str] = field(default_factory=set)
    peak_rss: int = 0
    touched_at: int = 0  # ns: the last time it touched or allocated anonymous memory
    # scheduling
    cpu: int = 0  # the CPU it runs on (sched.py)
    blocked_until: int = 0  # a memory stall (throttle, refault) ends then
    io_blocked_until: int = 0  # an IO wait (balance_dirty_pages) ends then
    oom_retry_at: int = 0  # after an OOM with no progress, the charge retries then
    waiting_oom: bool = False
    # the OOM killer
    victim: bool = False
    exit_at: int | None = None
    killed_at: int | None = None
    exit_status: str = ""
    # accounting
    stall_ns: int = 0  # memory stall (PSI memory)
    io_stall_ns: int = 0  # IO wait: reads, refaults, balance_dirty_pages (PSI io)
    work_ns: int = 0
    work_lost_ns: int = 0
    tick_stall: int = 0  # ns stalled on memory in the current tick
    tick_busy: bool = False  # non-idle at some point in the current tick
    # Parked: in a work or timed sleep step that outlasts the tick, so the tick loop skips
    # it until wake_ns; its progress is accounted up to park_ns (see sched.Scheduler.park).
    parked: bool = False
    park_work: bool = False  # parked in a work step (else a timed sleep)
    counted_working: bool = False  # counted in its cgroups' nr_working
    park_ns: int = 0
    wake_ns: int = 0

    @property
    def rss(self) -> int:
        return self.anon + self.shmem_anon + sum(self.mapped_files.values())

    @property
    def listed(self) -> bool:
        """In its cgroup's cgroup.procs: started and not reaped (an exiting victim is
        still listed until its teardown ends)."""
        return self.state in (RUNNING, SLEEPING, EXITING)

    def task(self) -> Task:
        """The task record a policy sees: rss in bytes, swap entries in pages, page
        tables estimated as one PTE page per 2M of address space in use."""
        vm = self.rss + self.swapped
        pgtables = ((vm + (2 << 20) - 1) // (2 << 20)) * PAGE_SIZE
        return Task(self.pid, self.name, self.cgroup, self.oom_score_adj, self.rss,
                    self.swapped // PAGE_SIZE, pgtables, self.start_time)

    @property
    def alive(self) -> bool:
        return self.state not in (NEW, EXITED)

    @property
    def step(self) -> Step | None:
        return self.program[self.pc] if self.pc < len(self.program) else None
