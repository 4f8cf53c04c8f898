"""The one seam between oomkit and a kernel: the ``Kernel`` protocol and its objects.

Three backends implement it: ``SimKernel`` (``oomkit.kernel.sim``) and ``LinuxKernel`` on
cgroup v2 and v1 (``oomkit.kernel.linux``). Policies see only the SPEC names below; the
methods under "backend seam" are for the :class:`oomkit.Runtime`, which owns the OOM path
and calls the backend for the mechanics (killing, reclaim, the default killer).

Units: every size is in bytes, every statistic hierarchical, with cgroup v2 names.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from oomkit.errors import CgroupGone

if TYPE_CHECKING:
    from oomkit.clock import Clock

PAGE_SIZE = 4096
OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000
MAX_ORDER = 10  # the kernel's MAX_PAGE_ORDER on x86-64; bpf_out_of_memory rejects more


class Resource(enum.Enum):
    """A PSI resource (the file names under /proc/pressure)."""

    MEMORY = "memory"
    IO = "io"
    CPU = "cpu"


class Constraint(enum.Enum):
    """enum oom_constraint, plus DECLARED for OOMs declared through out_of_memory()."""

    NONE = "NONE"
    CPUSET = "CPUSET"
    MEMORY_POLICY = "MEMORY_POLICY"
    MEMCG = "MEMCG"
    DECLARED = "DECLARED"


class OomFlags(enum.IntFlag):
    """Flags of kernel.out_of_memory() (bpf_out_of_memory's u64 flags)."""

    WAIT_ON_OOM_LOCK = 1


KNOWN_OOM_FLAGS = OomFlags.WAIT_ON_OOM_LOCK
NO_FLAGS = OomFlags(0)


@dataclass(frozen=True, slots=True)
class PressureLine:
    """One line of a pressure file: averages in percent, total stall in microseconds."""

    avg10: float
    avg60: float
    avg300: float
    total: int


@dataclass(frozen=True, slots=True)
class Pressure:
    some: PressureLine
    full: PressureLine


class Cgroup(abc.ABC):
    """A memory cgroup as a policy sees it (the kfunc accessors of SPEC section 3).

    Two Cgroup objects are equal when they name the same cgroup of the same kernel.
    """

    __slots__ = ("id", "kernel", "path")

    def __init__(self, kernel: Kernel, cgroup_id: int, path: str) -> None:
        self.kernel = kernel
        self.id = cgroup_id
        self.path = path

    def __repr__(self) -> str:
        return f"<Cgroup {self.path} id={self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cgroup) and other.kernel is self.kernel and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- the tree ---------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def parent(self) -> Cgroup | None: ...

    @abc.abstractmethod
    def children(self) -> list[Cgroup]: ...

    def walk(self, order: Literal["pre", "post"] = "pre") -> Iterator[Cgroup]:
        """This cgroup and all its descendants, pre-order or post-order (children first).

        A child that disappears during the walk is yielded without descendants (css
        iterators skip dying cgroups' children); a walk of a cgroup that is itself gone
        raises CgroupGone.
        """
        if order not in ("pre", "post"):
            raise ValueError(f"walk order must be 'pre' or 'post', not {order!r}")
        return self._walk(order, self.children())

    def _walk(self, order: str, children: list[Cgroup]) -> Iterator[Cgroup]:
        if order == "pre":
            yield self
        for child in children:
            try:
                grand = child.children()
            except CgroupGone:
                grand = []  # went since its parent listed it: no children any more
            yield from child._walk(order, grand)
        if order == "post":
            yield self

    @property
    def nr_descendants(self) -> int:
        return sum(1 for _ in self.walk()) - 1

    # -- statistics (bytes, hierarchical) ------------------------------------------------
    @abc.abstractmethod
    def usage(self) -> int:
        """memory.current (bpf_mem_cgroup_usage)."""

    @abc.abstractmethod
    def page_state(self, item: str) -> int:
        """A memory.stat size in bytes: anon, file, shmem, file_mapped, ..."""

    @abc.abstractmethod
    def vm_events(self, item: str) -> int:
        """A memory.stat event counter: pgfault, pgmajfault, pgscan, pgsteal, ..."""

    @abc.abstractmethod
    def memory_events(self, item: str) -> int:
        """A memory.events counter: low, high, max, oom, oom_kill, oom_group_kill."""

    def flush_stats(self) -> None:  # noqa: B027 - a no-op where stats are always exact
        """Make the statistics exact now (mem_cgroup_flush_stats)."""

    @abc.abstractmethod
    def pressure(self, resource: Resource = Resource.MEMORY) -> Pressure: ...

    @abc.abstractmethod
    def tasks(self) -> list[Task]:
        """The tasks in this cgroup itself (not its descendants)."""

    # -- limits (None means "max") --------------------------------------------------------
    @property
    @abc.abstractmethod
    def memory_max(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def memory_high(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def memory_low(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def memory_min(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def swap_max(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def oom_group(self) -> bool: ...


@dataclass(frozen=True, slots=True, eq=False)
class Task:
    """A snapshot of a process, taken when it was listed.

    ``rss`` and ``pgtables_bytes`` are bytes; ``swapents`` counts swap entries (pages), as
    the kernel's MM_SWAPENTS does. ``start_time`` identifies the process beyond its PID
    (the kernel's start time in clock ticks on Linux), so a recycled PID is never acted on.
    """

    pid: int
    comm: str
    cgroup: Cgroup
    oom_score_adj: int
    rss: int
    swapents: int
    pgtables_bytes: int
    start_time: int = 0
    kthread: bool = False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Task)
            and other.pid == self.pid
            and other.start_time == self.start_time
            and other.cgroup.kernel is self.cgroup.kernel
        )

    def __hash__(self) -> int:
        return hash((self.pid, self.start_time))

    @property
    def is_oom_victim(self) -> bool:
        return self.cgroup.kernel.task_is_oom_victim(self)

    @property
    def unkillable(self) -> bool:
        """init, kernel threads and oom_score_adj -1000 (never chosen by the OOM killer)."""
        return self.pid == 1 or self.kthread or self.oom_score_adj <= OOM_SCORE_ADJ_MIN

    def oom_badness(self, totalpages: int) -> int | None:
        """The kernel's oom_badness(): points in pages, or None when never to be chosen.

        rss + swap entries + page tables (pages), plus oom_score_adj * (totalpages / 1000)
        with the integer division done first, exactly as mm/oom_kill.c does it.
        """
        if self.unkillable:
            return None
        points = self.rss // PAGE_SIZE + self.swapents + self.pgtables_bytes // PAGE_SIZE
        return points + self.oom_score_adj * (totalpages // 1000)


@dataclass(frozen=True, slots=True)
class Victim:
    """A killed task as an event reports it. ``reason``: the message the handler gave
    its kill (``oc.kill_process(task, message)``, ``oc.kill_cgroup(cg, message)``); ""
    for the default killer's victims and the kernel's (their event's note says why)."""

    pid: int
    comm: str
    cgroup: str
    rss: int
    reason: str = ""

    @staticmethod
    def of(task: Task, reason: str = "") -> Victim:
        return Victim(task.pid, task.comm, task.cgroup.path, task.rss, reason)


@dataclass(frozen=True, slots=True)
class OomRequest:
    """What a backend hands the runtime when an OOM happens."""

    memcg: Cgroup | None
    order: int
    constraint: Constraint
    constraint_text: str | None
    totalpages: int
    flags: OomFlags = NO_FLAGS
    #: when this OOM began on the kernel's clock, if the backend knows (live v1: a long
    #: OOM may have been handed over and recorded by the watchdog meanwhile)
    since: float | None = None


@dataclass(frozen=True, slots=True)
class DefaultOutcome:
    """What the default killer did.

    ``victims``: whom it killed. ``waited``: it found a victim still exiting and killed
    nobody, as the kernel does (the OOM counts as progress). ``handed_over``: a live
    backend released the kernel killer; its kill is reported later, seen in the kernel's
    counters, with resolved_by "kernel".
    """

    victims: tuple[Victim, ...] = ()
    waited: bool = False
    handed_over: bool = False
    note: str = ""

    @property
    def progress(self) -> bool:
        return bool(self.victims) or self.waited or self.handed_over


@dataclass(frozen=True, slots=True)
class KernelOom:
    """An OOM the kernel resolved on its own, seen afterwards (live backends only)."""

    memcg: str | None
    victims: tuple[Victim, ...]
    count: int = 1
    source: str = "memory.events"


class PsiTrigger(Protocol):
    """A PSI trigger as PsiOps see it (bpf_psi_create_trigger's result)."""

    @property
    def cgroup_id(self) -> int: ...
    @property
    def resource(self) -> Resource: ...
    @property
    def full(self) -> bool: ...
    @property
    def threshold_us(self) -> int: ...
    @property
    def window_us(self) -> int: ...


class KernelHooks(Protocol):
    """How a backend reports to the runtime. The backend calls these, in its own thread."""

    def oom(self, request: OomRequest) -> int:
        """Run the OOM path (SPEC section 2). 1 = progress, 0 = none, -EBUSY = lock held."""
        ...

    def kernel_oom(self, report: KernelOom) -> None:
        """An OOM the kernel resolved itself (reported with resolved_by "kernel")."""
        ...

    def psi_event(self, trigger: PsiTrigger) -> None: ...

    def cgroup_online(self, cgroup_id: int, path: str) -> None: ...

    def cgroup_offline(self, cgroup_id: int, path: str) -> None: ...


class PolicyKernel(Protocol):
    """What a policy may call on a kernel: SPEC section 3 (``oc.kernel``, ``psi.kernel``).

    Everything else a backend offers is for the runtime (:class:`Kernel`) or for the loop
    that serves it (:class:`ServedKernel`).
    """

    @property
    def clock(self) -> Clock: ...

    def root_mem_cgroup(self) -> Cgroup:
        """bpf_get_root_mem_cgroup."""
        ...

    def mem_cgroup(self, id_or_path: int | str) -> Cgroup | None:
        """bpf_get_mem_cgroup: by cgroup id (the directory inode) or path; None if absent."""
        ...

    def out_of_memory(
        self,
        memcg: Cgroup | None,
        order: int = 0,
        flags: OomFlags = OomFlags(0),
        constraint_text: str | None = None,
    ) -> int:
        """bpf_out_of_memory: declare an OOM (SPEC section 4)."""
        ...

    def task_is_oom_victim(self, task: Task) -> bool: ...

    def tmpfs_files(self, path: str) -> list[tuple[str, int]]:
        """The regular files on tmpfs directly in directory ``path`` (or ``path`` itself
        when it names one), as (path, bytes it holds in memory), largest first; none where
        ``path`` is missing, not on tmpfs, or reached through a symbolic link. Files
        still open by a process are left out where the backend can tell (unlinking one
        frees nothing until it is closed); ``remove_file`` refuses those anyway."""
        ...


class Kernel(PolicyKernel, Protocol):
    """The kernel interface every backend implements: SPEC section 3 and the backend seam
    the :class:`oomkit.Runtime` drives (binding, arming, the actions, the default killer).
    """

    def bind(self, hooks: KernelHooks | None) -> None:
        """Route OOMs, PSI events and cgroup online/offline to the runtime."""
        ...

    def watch_oom(self, cgroup: Cgroup | None) -> str:
        """Arm OOM notification for a handler's scope (None: system-wide); returns how,
        e.g. "memory.oom_control eventfd". Called when an OomOps is attached."""
        ...

    def unwatch_oom(self, cgroup: Cgroup | None) -> None:
        """Undo watch_oom; the kernel killer is back in charge of that scope."""
        ...

    def oom_totalpages(self, memcg: Cgroup | None) -> int:
        """oc->totalpages: memory.max + usable swap for a memcg, RAM + swap system-wide."""
        ...

    def kill_tasks(self, tasks: Sequence[Task], message: str, group: Cgroup | None) -> list[Task]:
        """SIGKILL these tasks as OOM victims; ``group`` is the memory.oom.group cgroup
        that widened the kill, if any. Returns those actually killed."""
        ...

    def kill_cgroup(self, cgroup: Cgroup, message: str) -> list[Task]:
        """Kill every task in the cgroup and its descendants (cgroup.kill)."""
        ...

    def reclaim(self, cgroup: Cgroup, nbytes: int) -> int:
        """memory.reclaim; returns the bytes actually reclaimed."""
        ...

    def remove_file(self, path: str) -> int:
        """Unlink a (tmpfs) file; returns the bytes freed."""
        ...

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None: ...

    def default_oom(self, request: OomRequest) -> DefaultOutcome:
        """The default killer: the kernel's own victim selection, or the hand-over to it."""
        ...

    def psi_trigger_create(
        self, cgroup_id: int, resource: Resource, threshold_us: int, window_us: int, full: bool
    ) -> PsiTrigger: ...

    def psi_trigger_destroy(self, trigger: PsiTrigger) -> None: ...


class ServedKernel(Kernel, Protocol):
    """A backend whose events come from outside and are waited for: the live kernel.

    ``oomkit.live.serve_until`` (used by ``live.serve`` and the daemon) calls ``poll``
    until told to stop and ``wakeup`` from another thread to end a wait; the daemon asks
    ``watched_cgroups``; ``close`` gives every setting back. The simulator is driven by
    its own clock instead (``SimKernel.run``).
    """

    def poll(self, timeout: float | None = None) -> None:
        """Wait for one batch of events (at most ``timeout`` s; None: until one comes) and
        deliver them to the bound runtime."""
        ...

    def wakeup(self) -> None:
        """Make a ``poll`` in progress return soon (thread-safe)."""
        ...

    def close(self) -> None:
        """Restore every kernel setting this backend changed and release its resources.
        Idempotent."""
        ...

    def watched_cgroups(self) -> int:
        """How many memcgs are armed now (their OOMs reach the handlers first)."""
        ...
