"""A simulated memory cgroup: limits, hierarchical charges, statistics and events.

Charges are kept the way the kernel's page_counter keeps them: every cgroup holds the
hierarchical total (``charged``), updated on the way up at charge and uncharge time, so a
limit check is one comparison per ancestor. Local page states (anon, file, shmem,
file_mapped) are summed over the subtree on read, as memory.stat shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from oomkit.clock import ManualClock
from oomkit.errors import CgroupGone, KernelError
from oomkit.kernel.base import Cgroup, Kernel, Pressure, PressureLine, Resource, Task

if TYPE_CHECKING:
    from oomkit.kernel.sim.psi import GroupPsi


class Member(Protocol):
    """What a cgroup knows of a process in it (sim/process.py's SimProcess): its state,
    its anonymous memory resident and on swap (bytes), whether it is listed in
    cgroup.procs, and its task record."""

    state: str
    anon: int
    swapped: int
    touched_at: int  # ns: the last time it touched or allocated anonymous memory

    @property
    def alive(self) -> bool: ...

    @property
    def listed(self) -> bool: ...

    def task(self) -> Task: ...

PAGE_STATES = ("anon", "file", "shmem", "file_mapped", "file_dirty", "swap")
# memory.stat items the simulator does not model but a policy may ask for: they read 0.
UNMODELLED_STATES = frozenset({
    "kernel", "kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock", "vmalloc",
    "zswap", "zswapped", "file_writeback", "anon_thp", "file_thp",
    "shmem_thp", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "slab_reclaimable", "slab_unreclaimable", "slab",
})
VM_EVENTS = ("pgfault", "pgmajfault", "pgpgin", "pgscan", "pgsteal", "pgscan_kswapd",
             "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "pgscan_anon", "pgscan_file",
             "pgsteal_anon", "pgsteal_file", "pgrefill", "pgactivate",
             "pgdeactivate", "pglazyfree", "pglazyfreed", "workingset_refault_anon",
             "workingset_refault_file", "workingset_activate_anon",
             "workingset_activate_file", "workingset_restore_anon",
             "workingset_restore_file", "workingset_nodereclaim", "thp_fault_alloc",
             "thp_collapse_alloc")
MEMORY_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


class SimCgroup(Cgroup):
    __slots__ = (
        "_children",
        "_clock",
        "_parent",
        "charged",
        "events",
        "events_local",
        "local",
        "memory_high_",
        "memory_low_",
        "memory_max_",
        "memory_min_",
        "name",
        "nr_working",
        "nr_working_cpu",
        "online",
        "oom_group_",
        "procs",
        "psi",
        "psi_queued",
        "swap_charged",
        "swap_max_",
        "vm",
        "vm_frac",
        "working_cpus",
    )

    def __init__(self, kernel: Kernel, clock: ManualClock, cgroup_id: int, path: str,
                 parent: SimCgroup | None) -> None:
        super().__init__(kernel, cgroup_id, path)
        self._clock = clock
        self._parent = parent
        self._children: dict[str, SimCgroup] = {}
        self.name = path.rsplit("/", 1)[-1] if path != "/" else "/"
        self.memory_max_: int | None = None
        self.memory_high_: int | None = None
        self.memory_low_ = 0
        self.memory_min_ = 0
        self.swap_max_: int | None = None
        self.oom_group_ = False
        self.charged = 0  # hierarchical memory charge (memory.current), bytes
        self.swap_charged = 0  # hierarchical swap charge (memory.swap.current), bytes
        self.local: dict[str, int] = dict.fromkeys(PAGE_STATES, 0)
        self.vm: dict[str, int] = dict.fromkeys(VM_EVENTS, 0)  # hierarchical
        self.vm_frac: dict[str, float] = {}  # expected counts not yet whole (count_vm_frac)
        self.events: dict[str, int] = dict.fromkeys(MEMORY_EVENTS, 0)  # hierarchical
        self.events_local: dict[str, int] = dict.fromkeys(MEMORY_EVENTS, 0)
        self.procs: dict[int, Member] = {}  # pid -> process, in arrival order
        self.online = True
        self.psi: GroupPsi | None = None
        # The simulator's bookkeeping: parked working tasks in the subtree (they make
        # "full" zero without being visited every tick), and the time this cgroup is
        # queued for its next PSI update (None: not queued).
        self.nr_working = 0
        self.nr_working_cpu: list[int] = []  # the same per CPU (sized by the scheduler)
        self.working_cpus = 0  # CPUs where nr_working_cpu is not 0
        self.psi_queued: int | None = None

    def _alive(self) -> None:
        if not self.online:
            raise CgroupGone(f"cgroup {self.path} was removed")

    def ancestors(self) -> list[SimCgroup]:
        """This cgroup and every ancestor up to the root, innermost first."""
        out: list[SimCgroup] = []
        cg: SimCgroup | None = self
        while cg is not None:
            out.append(cg)
            cg = cg._parent
        return out

    # -- the tree ------------------------------------------------------------------------
    @property
    def parent(self) -> SimCgroup | None:
        return self._parent

    def children(self) -> list[Cgroup]:
        return [c for c in self._children.values() if c.online]

    def sim_children(self) -> list[SimCgroup]:
        return [c for c in self._children.values() if c.online]

    # -- statistics ----------------------------------------------------------------------
    def usage(self) -> int:
        self._alive()
        return self.charged

    def _subtree_local(self, item: str) -> int:
        total = self.local[item]
        for child in self._children.values():
            total += child._subtree_local(item)
        return total

    def page_state(self, item: str) -> int:
        self._alive()
        if item == "file":
            # memory.stat "file" counts tmpfs/shmem too: they live in the page cache.
            return self._subtree_local("file") + self._subtree_local("shmem")
        if item == "swap":
            return self.swap_charged
        if item in self.local:
            return self._subtree_local(item)
        if item in UNMODELLED_STATES:
            return 0
        raise KernelError(f"memory.stat has no item {item!r}", 22)

    def vm_events(self, item: str) -> int:
        self._alive()
        try:
            return self.vm[item]
        except KeyError:
            raise KernelError(f"memory.stat has no event {item!r}", 22) from None

    def memory_events(self, item: str) -> int:
        self._alive()
        try:
            return self.events[item]
        except KeyError:
            raise KernelError(f"memory.events has no item {item!r}", 22) from None

    def memory_events_local(self, item: str) -> int:
        self._alive()
        return self.events_local[item]

    def pressure(self, resource: Resource = Resource.MEMORY) -> Pressure:
        self._alive()
        if self.psi is None:
            zero = PressureLine(0.0, 0.0, 0.0, 0)
            return Pressure(zero, zero)
        return self.psi.pressure(resource, self._clock.now_ns())

    def tasks(self) -> list[Task]:
        self._alive()
        return [p.task() for p in self.procs.values() if p.listed]

    # -- limits --------------------------------------------------------------------------
    @property
    def memory_max(self) -> int | None:
        return self.memory_max_

    @property
    def memory_high(self) -> int | None:
        return self.memory_high_

    @property
    def memory_low(self) -> int | None:
        return self.memory_low_

    @property
    def memory_min(self) -> int | None:
        return self.memory_min_

    @property
    def swap_max(self) -> int | None:
        return self.swap_max_

    @property
    def oom_group(self) -> bool:
        return self.oom_group_

    # -- counting (the simulator's) ------------------------------------------------------
    def count_event(self, item: str, n: int = 1) -> None:
        """memcg_memory_event: local here, hierarchical up to (not including) the root."""
        self.events_local[item] += n
        cg: SimCgroup | None = self
        while cg is not None and cg._parent is not None:
            cg.events[item] += n
            cg = cg._parent

    def count_vm_frac(self, item: str, expected: float) -> None:
        """Count an expected (fractional) number of events: the whole part now, the rest
        carried until it adds up, so long runs count what they should."""
        total = self.vm_frac.get(item, 0.0) + expected
        whole = int(total)
        self.vm_frac[item] = total - whole
        self.count_vm(item, whole)

    def count_vm(self, item: str, n: int) -> None:
        if n <= 0:
            return
        cg: SimCgroup | None = self
        while cg is not None:
            cg.vm[item] += n
            cg = cg._parent
