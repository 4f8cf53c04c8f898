"""LinuxKernel: the real kernel behind the ``Kernel`` interface, on cgroup v2 or v1.

How an OOM reaches the handlers before the kernel's OOM killer (docs/live.md has the why):

- **v1** (``memory.oom_control``): every memcg in a handler's scope gets ``oom_kill_disable
  1`` and an eventfd registered through ``cgroup.event_control``. At an OOM the kernel
  puts the charging tasks to sleep (``under_oom 1``) and signals the eventfd; the runtime
  asks the handlers; the fallback writes ``oom_kill_disable 0`` for that memcg, which wakes
  the sleepers, their retry finds the killer enabled and the kernel kills. Once the OOM is
  over (``under_oom 0``) the flag goes back to 1.
- **v2** (guard band): ``memory.high`` is set a margin below ``memory.max``; the kernel
  throttles instead of killing. A cgroup stuck in its band (usage at ``memory.high`` while
  ``memory.events`` "high" keeps rising) is an OOM there. The fallback restores
  ``memory.high``, so the kernel killer acts at ``memory.max``; the band comes back once
  usage is below it.
- **system-wide** (both): a PSI trigger on /proc/pressure/memory plus MemAvailable. The
  kernel killer is never disabled system-wide (the root memcg cannot be), so the fallback
  there is the kernel as it is.

Every changed setting is journaled (with the original value) before it is changed; a
watchdog process restores them if this process dies (:mod:`oomkit.kernel.watchdog`).

One epoll loop runs it all: :meth:`LinuxKernel.poll` waits on the eventfds, inotify (cgroup
creation/removal, v2 memory.events), PSI trigger fds, pidfds of victims and /dev/kmsg, and
on timers that exist only while an OOM is in progress. Nothing polls while nothing happens.
"""

from __future__ import annotations

import errno
import functools
import heapq
import itertools
import os
import posixpath
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, final

from oomkit.clock import Clock, MonotonicClock, wall_perf_ns
from oomkit.errors import CgroupGone, KernelError, OomkitError, TaskGone
from oomkit.kernel import cgroupfs as cf
from oomkit.kernel import fsio, kmsg, procfs
from oomkit.kernel.base import (
    KNOWN_OOM_FLAGS,
    MAX_ORDER,
    PAGE_SIZE,
    Cgroup,
    Constraint,
    DefaultOutcome,
    KernelHooks,
    KernelOom,
    OomFlags,
    OomRequest,
    Pressure,
    PressureLine,
    Resource,
    Task,
    Victim,
)
from oomkit.kernel.psi_math import parse_pressure, validate_trigger
from oomkit.kernel.watchdog import RestoreJournal

CAP_SYS_RESOURCE: Final = 24
MiB: Final = 1 << 20

Trace = Callable[[str, int], None]


# -- cgroups ---------------------------------------------------------------------------------


@final
class LinuxCgroup(Cgroup):
    """A memory cgroup directory. ``path`` is relative to the kernel's cgroup root."""

    __slots__ = ("dir",)
    kernel: LinuxKernel

    def __init__(self, kernel: LinuxKernel, cgroup_id: int, path: str, directory: str) -> None:
        super().__init__(kernel, cgroup_id, path)
        self.dir = directory

    # -- files -------------------------------------------------------------------------
    def file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> str:
        return fsio.read_text(self.file(name))

    def write(self, name: str, value: str) -> None:
        fsio.write_text(self.file(name), value)

    def procs(self) -> list[int]:
        return cf.parse_procs(self.read(cf.CGROUP_PROCS))

    # -- the tree ------------------------------------------------------------------------
    @property
    def parent(self) -> LinuxCgroup | None:
        if self.path == "/":
            return None
        return self.kernel._cgroup_at(posixpath.dirname(self.path))

    def children(self) -> list[Cgroup]:
        base = self.path.rstrip("/")
        return [
            LinuxCgroup(self.kernel, ino, f"{base}/{name}", os.path.join(self.dir, name))
            for name, ino in fsio.subdirs(self.dir)
        ]

    # -- statistics ----------------------------------------------------------------------
    def usage(self) -> int:
        name = cf.V1_USAGE if self.kernel.version == 1 else cf.MEMORY_CURRENT
        if self.kernel.version == 2 and self.path == "/" and not fsio.exists(self.file(name)):
            # The v2 root has no memory.current: the system's use is its usage.
            info = self.kernel.procfs.meminfo()
            return info.get("MemTotal", 0) - info.get("MemAvailable", 0)
        return fsio.read_int(self.file(name))

    def stat(self) -> dict[str, int]:
        """memory.stat in v2 names, hierarchical."""
        raw = cf.parse_flat_keyed(self.read(cf.MEMORY_STAT))
        return cf.v1_stat_to_v2(raw) if self.kernel.version == 1 else raw

    def _stat_item(self, item: str) -> int:
        stat = self.stat()
        if item not in stat:
            raise KernelError(
                f"{self.path}: memory.stat has no {item!r} (cgroup v{self.kernel.version})",
                errno.EINVAL,
            )
        return stat[item]

    def page_state(self, item: str) -> int:
        return self._stat_item(item)

    def vm_events(self, item: str) -> int:
        return self._stat_item(item)

    def memory_events(self, item: str) -> int:
        if self.kernel.version == 2:
            events = cf.parse_flat_keyed(self.read(cf.MEMORY_EVENTS))
            return events.get(item, 0)
        # v1 has no memory.events: oom_kill from memory.oom_control, which counts kills in
        # that memcg only (not hierarchical on 6.18), summed over the subtree; "max" is
        # the limit's failcnt; "oom" the OOMs this backend saw there.
        if item == "oom_kill":
            total = 0
            for cg in self.walk():
                assert isinstance(cg, LinuxCgroup)
                try:
                    total += cf.parse_flat_keyed(cg.read(cf.V1_OOM_CONTROL)).get("oom_kill", 0)
                except CgroupGone:
                    continue
            return total
        if item == "max":
            return fsio.read_int(self.file(cf.V1_FAILCNT))
        if item == "oom":
            return self.kernel._v1_oom_count.get(self.id, 0)
        return 0

    def pressure(self, resource: Resource = Resource.MEMORY) -> Pressure:
        if self.path == "/":
            path = self.kernel.procfs.path("pressure", resource.value)
        elif self.kernel.version == 1:
            raise KernelError(
                f"{self.path}: no per-cgroup PSI on cgroup v1", errno.EOPNOTSUPP
            )
        else:
            path = self.file(cf.pressure_file(resource.value))
        return _pressure(fsio.read_text(path))

    def tasks(self) -> list[Task]:
        out: list[Task] = []
        proc = self.kernel.procfs
        for pid in self.procs():
            try:
                info = proc.task(pid)
            except TaskGone:
                continue
            out.append(
                Task(
                    pid=info.pid,
                    comm=info.comm,
                    cgroup=self,
                    oom_score_adj=info.oom_score_adj,
                    rss=info.rss,
                    swapents=info.swapents,
                    pgtables_bytes=info.pgtables_bytes,
                    start_time=info.start_time,
                    kthread=info.kthread,
                )
            )
        return out

    # -- limits --------------------------------------------------------------------------
    def _v2_limit(self, name: str) -> int | None:
        if self.path == "/" and not fsio.exists(self.file(name)):
            return None
        return cf.parse_limit_v2(self.read(name))

    @property
    def memory_max(self) -> int | None:
        if self.kernel.version == 1:
            return cf.parse_limit_v1(self.read(cf.V1_LIMIT))
        return self._v2_limit(cf.MEMORY_MAX)

    @property
    def memory_high(self) -> int | None:
        return None if self.kernel.version == 1 else self._v2_limit(cf.MEMORY_HIGH)

    @property
    def memory_low(self) -> int | None:
        # v1 has no protection: 0, not "max" (which would mean fully protected).
        return 0 if self.kernel.version == 1 else self._v2_limit(cf.MEMORY_LOW)

    @property
    def memory_min(self) -> int | None:
        return 0 if self.kernel.version == 1 else self._v2_limit(cf.MEMORY_MIN)

    @property
    def swap_max(self) -> int | None:
        if self.kernel.version == 2:
            return self._v2_limit(cf.MEMORY_SWAP_MAX)
        # v1 limits memory+swap together; the swap share is what memsw allows beyond memory.
        if not fsio.exists(self.file(cf.V1_MEMSW_LIMIT)):
            return None
        memsw = cf.parse_limit_v1(self.read(cf.V1_MEMSW_LIMIT))
        mem = self.memory_max
        if memsw is None:
            return None
        return max(0, memsw - mem) if mem is not None else None

    @property
    def oom_group(self) -> bool:
        if self.kernel.version == 1 or not fsio.exists(self.file(cf.MEMORY_OOM_GROUP)):
            return False
        return self.read(cf.MEMORY_OOM_GROUP).strip() == "1"


def _pressure(text: str) -> Pressure:
    try:
        parsed = parse_pressure(text)
    except ValueError as exc:
        raise KernelError(f"bad pressure file: {exc}", errno.EINVAL) from None
    some = parsed.some
    full = parsed.full
    return Pressure(
        PressureLine(some.avg10, some.avg60, some.avg300, some.total),
        PressureLine(0.0, 0.0, 0.0, 0)
        if full is None
        else PressureLine(full.avg10, full.avg60, full.avg300, full.total),
    )


# -- PSI triggers ------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class LivePsiTrigger:
    """A PSI trigger: an open pressure file with the trigger written to it."""

    cgroup_id: int
    resource: Resource
    full: bool
    threshold_us: int
    window_us: int
    path: str
    fd: int = -1
    on_event: Callable[[LivePsiTrigger], None] | None = None


# -- what is armed -----------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Armed:
    """A memcg whose OOMs go to the handlers first."""

    cg: LinuxCgroup
    # v1
    efd: int = -1
    ctl_fd: int = -1
    # v2
    events_wd: int = -1
    limits_wds: tuple[int, ...] = ()
    guard: int | None = None  # the memory.high we set (None: no band, e.g. no memory.max)
    last_events: dict[str, int] = field(default_factory=dict)
    band_since: float | None = None
    band_high_count: int = 0
    # both: an OOM in progress
    oom_since: float | None = None
    dispatches: int = 0
    handed_over_at: float | None = None
    kills_at_handover: int = 0


@dataclass(eq=False, slots=True)
class _Victim:
    pidfd: int
    cgroup_path: str
    killed_at: float


# After a system-wide pressure event, MemAvailable is sampled this often, for this long.
SYSTEM_SAMPLE_S = 0.1
SYSTEM_WATCH_S = 10.0


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False


@dataclass(frozen=True, slots=True)
class _Mount:
    point: str
    root: str
    fstype: str
    options: frozenset[str]


def _mounts(text: str) -> list[_Mount]:
    # /proc/self/mountinfo:
    #   35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
    out: list[_Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        out.append(_Mount(lf[4], lf[3], rf[0], frozenset(rf[2].split(","))))
    return out


def _kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


# -- the kernel --------------------------------------------------------------------------------


@final
class LinuxKernel:
    """The live kernel. See the module docstring; docs/live.md for the design.

    ``cgroup_root``: a cgroup directory to treat as the root (default: the mount of the
    memory controller, v2 preferred). A subtree works too: the kernel then sees, arms and
    reports only below it. ``proc_root``: procfs. ``state_file``: where the watchdog's
    journal lives (None: in memory only, no watchdog). ``kmsg``: /dev/kmsg to report kernel
    OOM kills from (None: count them from memory.events / memory.oom_control instead).
    """

    def __init__(
        self,
        cgroup_root: str | None = None,
        proc_root: str = "/proc",
        *,
        clock: Clock | None = None,
        state_file: str | None = None,
        watchdog: bool = True,
        kmsg_path: str | None = "/dev/kmsg",
        guard_margin: float | Callable[[int], int] = 0.05,
        guard_min_bytes: int = 4 * MiB,
        guard_stuck_s: float = 0.25,
        system_psi: tuple[int, int] = (150_000, 2_000_000),
        system_min_available: float = 0.03,
        recheck_s: float = 0.5,
        max_stall_s: float = 5.0,
    ) -> None:
        self.procfs = procfs.Procfs(proc_root)
        self._clock: Clock = clock or MonotonicClock()
        mounts: list[_Mount] = []
        try:
            mounts = _mounts(self.procfs.read("self", "mountinfo"))
        except OomkitError:
            pass
        self.root_dir, self.version = self._detect(cgroup_root, mounts)
        self._prefix = self._mount_prefix(mounts)
        self._freezer_root = next(
            (m.point for m in mounts if m.fstype == "cgroup" and "freezer" in m.options), None
        )
        self.journal = RestoreJournal(state_file, watchdog=watchdog)
        self.kver = _kernel_version(os.uname().release)
        self.privileged_psi = self._has_cap(CAP_SYS_RESOURCE)
        self.guard_margin = guard_margin
        self.guard_min_bytes = guard_min_bytes
        self.guard_stuck_s = guard_stuck_s
        self.system_psi = system_psi
        self.system_min_available = system_min_available
        self.recheck_s = recheck_s
        self.max_stall_s = max_stall_s
        self.trace: Trace | None = None

        self._lock = threading.RLock()
        self._hooks: KernelHooks | None = None
        self._ep = select.epoll()
        self._fd_cb: dict[int, Callable[[int], None]] = {}
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._loop_thread: int | None = None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._add_fd(self._wake_fd, select.EPOLLIN, self._on_wake)

        self._ids: dict[int, str] = {}
        self._paths: dict[str, int] = {}
        self._inotify: fsio.Inotify | None = None
        self._dir_wds: dict[int, str] = {}
        self._watched: set[str] = set()
        self._file_wds: dict[int, Callable[[], None]] = {}
        self._kmsg_path = kmsg_path
        self._kmsg_fd = -1
        self._kmsg_pending: kmsg.PendingOom | None = None
        self._kmsg_timer: _Timer | None = None

        self._scopes: dict[int, str] = {}  # scope key (cgroup id, 0 = root) -> path
        self._armed: dict[int, _Armed] = {}
        self._v1_pending: set[int] = set()
        self._v1_dispatch_timer: _Timer | None = None
        self._v1_oom_count: dict[int, int] = {}
        self._v1_kill_counts: dict[int, int] = {}
        self._system_trigger: LivePsiTrigger | None = None
        self._system_watch_until = 0.0  # MemAvailable is sampled until then (see below)
        self._system_timer: _Timer | None = None
        self._triggers: set[LivePsiTrigger] = set()
        self._victims: dict[tuple[int, int], _Victim] = {}
        self._started = False
        self._closed = False
        self._rescan()

    @classmethod
    def open(cls, **kwargs: Any) -> LinuxKernel:
        """``LinuxKernel(**kwargs)``, named for the daemon's backend."""
        return cls(**kwargs)

    # -- detection ------------------------------------------------------------------------
    def _detect(self, root: str | None, mounts: list[_Mount]) -> tuple[str, Literal[1, 2]]:
        if root is None:
            for m in mounts:
                if m.fstype == "cgroup2":
                    try:
                        ctl = fsio.read_text(os.path.join(m.point, cf.CGROUP_CONTROLLERS))
                    except OomkitError:
                        continue
                    if "memory" in ctl.split():
                        return m.point, 2
            for m in mounts:
                if m.fstype == "cgroup" and "memory" in m.options:
                    return m.point, 1
            raise KernelError("no memory cgroup controller is mounted", errno.ENOENT)
        root = os.path.abspath(root)
        # A directory holding the hierarchies (hybrid /sys/fs/cgroup is a tmpfs with one
        # mount per controller): take the memory controller's mount below it.
        below = [m for m in mounts if m.point.startswith(root.rstrip("/") + "/")]
        if below and not fsio.exists(os.path.join(root, cf.CGROUP_CONTROLLERS)):
            try:
                return self._detect(None, below)
            except KernelError:
                pass
        if fsio.exists(os.path.join(root, cf.V1_USAGE)) or fsio.exists(
            os.path.join(root, cf.V1_OOM_CONTROL)
        ):
            return root, 1
        ctl_path = os.path.join(root, cf.CGROUP_CONTROLLERS)
        if fsio.exists(ctl_path):
            if "memory" not in fsio.read_text(ctl_path).split():
                raise KernelError(f"{root}: the memory controller is not enabled", errno.ENOENT)
            return root, 2
        raise KernelError(f"{root}: not a memory cgroup directory", errno.ENOENT)

    def _mount_prefix(self, mounts: list[_Mount]) -> str | None:
        """Our root's path as the kernel prints it (in /dev/kmsg); None if not a mount."""
        best: _Mount | None = None
        for m in mounts:
            if m.fstype not in ("cgroup", "cgroup2"):
                continue
            inside = self.root_dir == m.point or self.root_dir.startswith(
                m.point.rstrip("/") + "/"
            )
            if inside and (best is None or len(m.point) > len(best.point)):
                best = m
        if best is None:
            return None
        rel = os.path.relpath(self.root_dir, best.point)
        joined = posixpath.normpath(posixpath.join(best.root, "" if rel == "." else rel))
        return "" if joined == "/" else joined

    def _has_cap(self, cap: int) -> bool:
        try:
            status = procfs.parse_status(self.procfs.read("self", "status"))
            return bool(int(status.get("CapEff", "0"), 16) >> cap & 1)
        except (OomkitError, ValueError):
            return False

    # -- the cgroup index -------------------------------------------------------------------
    def _dir_of(self, path: str) -> str:
        return self.root_dir if path == "/" else self.root_dir + path

    def _cgroup_at(self, path: str) -> LinuxCgroup:
        directory = self._dir_of(path)
        ino = fsio.inode(directory)
        return LinuxCgroup(self, ino, path, directory)

    def _index(self, cg_id: int, path: str) -> None:
        with self._lock:
            old = self._paths.get(path)
            if old is not None and old != cg_id:
                self._ids.pop(old, None)
            self._ids[cg_id] = path
            self._paths[path] = cg_id

    def _unindex(self, path: str) -> int | None:
        with self._lock:
            cg_id = self._paths.pop(path, None)
            if cg_id is not None:
                self._ids.pop(cg_id, None)
            return cg_id

    def _rescan(self) -> list[LinuxCgroup]:
        """Index every cgroup below the root; returns them (pre-order)."""
        found: list[LinuxCgroup] = []
        try:
            root = self._cgroup_at("/")
        except CgroupGone:
            return found
        for cg in root.walk():
            assert isinstance(cg, LinuxCgroup)
            self._index(cg.id, cg.path)
            found.append(cg)
        return found

    # -- SPEC section 3 ------------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self._clock

    def root_mem_cgroup(self) -> LinuxCgroup:
        return self._cgroup_at("/")

    def mem_cgroup(self, id_or_path: int | str) -> LinuxCgroup | None:
        if isinstance(id_or_path, str):
            path = id_or_path
            if path.startswith(self.root_dir + "/") or path == self.root_dir:
                path = path[len(self.root_dir) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
            path = posixpath.normpath(path)
            try:
                return self._cgroup_at(path)
            except CgroupGone:
                return None
        with self._lock:
            known = self._ids.get(id_or_path)
        if known is not None:
            try:
                cg = self._cgroup_at(known)
                if cg.id == id_or_path:
                    return cg
            except CgroupGone:
                pass
        for cg in self._rescan():
            if cg.id == id_or_path:
                return cg
        return None

    def out_of_memory(
        self,
        memcg: Cgroup | None,
        order: int = 0,
        flags: OomFlags = OomFlags(0),
        constraint_text: str | None = None,
    ) -> int:
        """bpf_out_of_memory: a declared OOM, handlers first, then the default killer."""
        if int(flags) & ~int(KNOWN_OOM_FLAGS) or not 0 <= order <= MAX_ORDER:
            return -errno.EINVAL
        hooks = self._hooks
        if hooks is None:
            return 0
        request = OomRequest(
            memcg=memcg,
            order=order,
            constraint=Constraint.DECLARED,
            constraint_text=constraint_text,
            totalpages=self.oom_totalpages(memcg),
            flags=OomFlags(flags),
        )
        return hooks.oom(request)

    def task_is_oom_victim(self, task: Task) -> bool:
        with self._lock:
            if (task.pid, task.start_time) in self._victims:
                return True
        try:
            info = self.procfs.task(task.pid)
        except TaskGone:
            return False
        return info.start_time == task.start_time and info.sigkill_pending

    # -- backend seam: binding and the loop -------------------------------------------------------
    def bind(self, hooks: KernelHooks | None) -> None:
        self._hooks = hooks
        if hooks is not None and not self._started:
            self._start()

    def _start(self) -> None:
        self._started = True
        try:
            self._inotify = fsio.Inotify()
        except KernelError:
            self._inotify = None
        if self._inotify is not None:
            self._add_fd(self._inotify.fd, select.EPOLLIN, self._on_inotify)
            for cg in self._rescan():
                self._watch_dir(cg.path)
        if self._kmsg_path is not None:
            try:
                fd = os.open(self._kmsg_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
            except OSError:
                fd = -1  # not readable (no CAP_SYSLOG): fall back to the counters
            if fd >= 0:
                self._kmsg_fd = fd
                self._add_fd(fd, select.EPOLLIN, self._on_kmsg)

    @property
    def reads_kmsg(self) -> bool:
        return self._kmsg_fd >= 0

    def poll(self, timeout: float | None = None) -> None:
        """Wait for one batch of events (at most ``timeout`` s) and handle them."""
        self._loop_thread = threading.get_ident()
        now = self._clock.now()
        with self._lock:
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            next_at = self._timers[0][0] if self._timers else None
        wait = timeout
        if next_at is not None:
            until = max(0.0, next_at - now)
            wait = until if wait is None else min(wait, until)
        try:
            events = self._ep.poll(-1 if wait is None else wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            events = []
        for fd, mask in events:
            with self._lock:
                cb = self._fd_cb.get(fd)
            if cb is not None:
                cb(mask)
        self._run_timers()

    def _run_timers(self) -> None:
        while True:
            now = self._clock.now()
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def wakeup(self) -> None:
        """Make a poll() in progress return (thread-safe)."""
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    def _on_wake(self, _mask: int) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass

    def _add_fd(self, fd: int, events: int, cb: Callable[[int], None]) -> None:
        with self._lock:
            self._fd_cb[fd] = cb
            self._ep.register(fd, events)

    def _del_fd(self, fd: int) -> None:
        with self._lock:
            if self._fd_cb.pop(fd, None) is not None:
                try:
                    self._ep.unregister(fd)
                except (OSError, ValueError):
                    pass

    def _call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self._clock.now() + delay, callback)
        with self._lock:
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        if threading.get_ident() != self._loop_thread:
            self.wakeup()
        return timer

    def _trace(self, stage: str) -> None:
        if self.trace is not None:
            self.trace(stage, wall_perf_ns())

    def close(self) -> None:
        """Restore every setting this kernel changed and release its fds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._hooks = None
        for key in list(self._scopes):
            self._scopes.pop(key, None)
        for a in list(self._armed.values()):
            self._disarm(a)
        if self._system_trigger is not None:
            self.psi_trigger_destroy(self._system_trigger)
            self._system_trigger = None
        for trig in list(self._triggers):
            self.psi_trigger_destroy(trig)
        self.journal.close()
        with self._lock:
            victims = list(self._victims.values())
            self._victims.clear()
        for v in victims:
            self._close_fd(v.pidfd)
        if self._inotify is not None:
            self._del_fd(self._inotify.fd)
            self._inotify.close()
        if self._kmsg_fd >= 0:
            self._del_fd(self._kmsg_fd)
            self._close_fd(self._kmsg_fd)
            self._kmsg_fd = -1
        self._del_fd(self._wake_fd)
        self._close_fd(self._wake_fd)
        self._ep.close()

    @staticmethod
    def _close_fd(fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass

    # -- cgroup online/offline (inotify) ----------------------------------------------------------
    def _watch_dir(self, path: str) -> bool:
        """Watch a cgroup directory for children; True if it was not watched yet."""
        if self._inotify is None:
            return False
        with self._lock:
            if path in self._watched:
                return False
        try:
            wd = self._inotify.add(
                self._dir_of(path), fsio.IN_CREATE | fsio.IN_DELETE | fsio.IN_ONLYDIR
            )
        except OomkitError:
            return False
        with self._lock:
            self._dir_wds[wd] = path
            self._watched.add(path)
        return True

    def _watch_file(self, path: str, cb: Callable[[], None]) -> int:
        if self._inotify is None:
            return -1
        wd = self._inotify.add(path, fsio.IN_MODIFY)
        with self._lock:
            self._file_wds[wd] = cb
        return wd

    def _unwatch_file(self, wd: int) -> None:
        if wd < 0 or self._inotify is None:
            return
        with self._lock:
            self._file_wds.pop(wd, None)
        self._inotify.remove(wd)

    def _on_inotify(self, _mask: int) -> None:
        assert self._inotify is not None
        file_cbs: list[Callable[[], None]] = []
        for wd, mask, name in self._inotify.read():
            if mask & fsio.IN_Q_OVERFLOW:
                self._resync()
                continue
            with self._lock:
                parent = self._dir_wds.get(wd)
                file_cb = self._file_wds.get(wd)
            if mask & fsio.IN_IGNORED:
                with self._lock:
                    self._dir_wds.pop(wd, None)
                    self._file_wds.pop(wd, None)
                continue
            if file_cb is not None and mask & fsio.IN_MODIFY:
                if file_cb not in file_cbs:
                    file_cbs.append(file_cb)
                continue
            if parent is None or not mask & fsio.IN_ISDIR:
                continue
            path = (parent.rstrip("/") + "/" + name) if parent != "/" else "/" + name
            if mask & fsio.IN_CREATE:
                self._online(path)
            elif mask & fsio.IN_DELETE:
                self._offline(path)
        for cb in file_cbs:
            cb()

    def _online(self, path: str) -> None:
        try:
            cg = self._cgroup_at(path)
        except CgroupGone:
            return
        # Children made before our watch was in place would never be seen: look now.
        for c in [c for c in cg.walk() if isinstance(c, LinuxCgroup)]:
            if not self._watch_dir(c.path):
                continue
            self._index(c.id, c.path)
            if self._in_scope(c.path):
                self._arm_safely(c)
            if self._hooks is not None:
                self._hooks.cgroup_online(c.id, c.path)

    def _offline(self, path: str) -> None:
        with self._lock:
            self._watched.discard(path)
        cg_id = self._unindex(path)
        if cg_id is None:
            return
        a = self._armed.pop(cg_id, None)
        if a is not None:
            self._release_armed_fds(a)
            self._forget_settings_of(a.cg)
        for key, spath in list(self._scopes.items()):
            if key == cg_id and spath == path:
                del self._scopes[key]
        for trig in [t for t in self._triggers if t.cgroup_id == cg_id]:
            self._del_fd(trig.fd)
        if self._hooks is not None:
            self._hooks.cgroup_offline(cg_id, path)

    def _resync(self) -> None:
        with self._lock:
            before = set(self._watched)
        now = {cg.path for cg in self._rescan()}
        for path in sorted(before - now, reverse=True):
            self._offline(path)
        for path in sorted(now - before):
            self._online(path)

    # -- OOM scopes --------------------------------------------------------------------------------
    def _in_scope(self, path: str) -> bool:
        for spath in self._scopes.values():
            if spath == "/" or path == spath or path.startswith(spath + "/"):
                return True
        return False

    def watch_oom(self, cgroup: Cgroup | None) -> str:
        if not self._started:
            self._start()
        root = self.root_mem_cgroup() if cgroup is None else self._own(cgroup)
        self._scopes[cgroup.id if cgroup is not None else 0] = root.path
        for cg in root.walk():
            assert isinstance(cg, LinuxCgroup)
            self._arm_safely(cg)
        how = (
            "memory.oom_control oom_kill_disable + eventfd"
            if self.version == 1
            else "memory.high guard band + memory.events"
        )
        if cgroup is None:
            self._arm_system()
            how += "; system-wide: PSI /proc/pressure/memory + MemAvailable"
        return how

    def watched_cgroups(self) -> int:
        """How many memcgs are armed now (their OOMs reach the handlers first)."""
        return len(self._armed)

    def unwatch_oom(self, cgroup: Cgroup | None) -> None:
        key = cgroup.id if cgroup is not None else 0
        self._scopes.pop(key, None)
        for a in list(self._armed.values()):
            if not self._in_scope(a.cg.path):
                self._disarm(a)
        if cgroup is None and self._system_trigger is not None:
            self.psi_trigger_destroy(self._system_trigger)
            self._system_trigger = None

    def _own(self, cgroup: Cgroup) -> LinuxCgroup:
        if isinstance(cgroup, LinuxCgroup) and cgroup.kernel is self:
            return cgroup
        found = self.mem_cgroup(cgroup.id)
        if found is None:
            raise CgroupGone(f"{cgroup.path}: gone")
        return found

    def _arm_safely(self, cg: LinuxCgroup) -> None:
        try:
            if self.version == 1:
                self._arm_v1(cg)
            else:
                self._arm_v2(cg)
        except CgroupGone:
            a = self._armed.pop(cg.id, None)
            if a is not None:
                self._release_armed_fds(a)

    def _disarm(self, a: _Armed) -> None:
        self._armed.pop(a.cg.id, None)
        self._release_armed_fds(a)
        for name in (cf.V1_OOM_CONTROL, cf.MEMORY_HIGH):
            why = self.journal.restore(a.cg.file(name))
            del why  # gone cgroups need no restoring

    def _release_armed_fds(self, a: _Armed) -> None:
        if a.efd >= 0:
            self._del_fd(a.efd)
            self._close_fd(a.efd)  # closing the eventfd removes the kernel's registration
            a.efd = -1
        if a.ctl_fd >= 0:
            self._close_fd(a.ctl_fd)
            a.ctl_fd = -1
        self._unwatch_file(a.events_wd)
        a.events_wd = -1
        for wd in a.limits_wds:
            self._unwatch_file(wd)
        a.limits_wds = ()

    def _forget_settings_of(self, cg: LinuxCgroup) -> None:
        for name in (cf.V1_OOM_CONTROL, cf.MEMORY_HIGH):
            self.journal.forget(cg.file(name))

    # -- v1: oom_control + eventfd -------------------------------------------------------------
    def _arm_v1(self, cg: LinuxCgroup) -> None:
        if cg.id in self._armed or self._is_hierarchy_root(cg):
            return  # the root memcg cannot have oom_kill_disable (EINVAL)
        a = _Armed(cg)
        ctl_path = cg.file(cf.V1_OOM_CONTROL)
        a.ctl_fd = fsio.open_fd(ctl_path, os.O_RDONLY)
        a.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._armed[cg.id] = a
        # Registering while the memcg is under OOM signals at once, so nothing is missed.
        cg.write(cf.V1_EVENT_CONTROL, f"{a.efd} {a.ctl_fd}")
        self._add_fd(a.efd, select.EPOLLIN, functools.partial(self._on_v1_event, cg.id))
        ctl = cf.parse_flat_keyed(fsio.pread_text(a.ctl_fd, ctl_path))
        self._v1_kill_counts[cg.id] = ctl.get("oom_kill", 0)
        if ctl.get("oom_kill_disable", 0) == 0:
            self.journal.record(ctl_path, "0", cg.id)
            fsio.write_text(ctl_path, "1")
        elif self._inherited_disable(cg):
            # A memcg made below one we armed inherits oom_kill_disable 1 from it (v1
            # copies the parent's setting at mkdir): ours to undo, so journal it too.
            self.journal.record(ctl_path, "0", cg.id)

    def _inherited_disable(self, cg: LinuxCgroup) -> bool:
        parent = cg.parent
        if not isinstance(parent, LinuxCgroup) or parent.id not in self._armed:
            return False
        return self.journal.original(parent.file(cf.V1_OOM_CONTROL)) == "0"

    def _is_hierarchy_root(self, cg: LinuxCgroup) -> bool:
        # Our root is the hierarchy's root unless it is a subtree of a mounted hierarchy.
        return cg.path == "/" and not self._prefix

    def _v1_ctl(self, cg: LinuxCgroup) -> dict[str, int]:
        return cf.parse_flat_keyed(cg.read(cf.V1_OOM_CONTROL))

    def _on_v1_event(self, cg_id: int, _mask: int) -> None:
        a = self._armed.get(cg_id)
        if a is None:
            return
        try:
            os.eventfd_read(a.efd)
        except OSError:
            pass
        if not self._v1_pending:
            self._trace("oom_notify")
        self._v1_pending.add(cg_id)
        if self._v1_dispatch_timer is None:
            # Every memcg of the OOMing subtree is signalled; collect the whole batch.
            self._v1_dispatch_timer = self._call_later(0.0, self._v1_dispatch)

    def _v1_dispatch(self) -> None:
        self._v1_dispatch_timer = None
        pending, self._v1_pending = self._v1_pending, set()
        domains: dict[int, LinuxCgroup] = {}
        kernel_side = False
        armed = [self._armed[i] for i in pending if i in self._armed]
        # Shallowest first: a memcg inside a domain already found is part of that OOM.
        armed.sort(key=lambda a: a.cg.path.count("/"))
        for a in armed:
            if any(a.cg.path.startswith(d.path.rstrip("/") + "/") for d in domains.values()):
                continue
            try:
                top = self._v1_oom_domain(a.cg)
            except CgroupGone:
                continue
            if top is None:
                kernel_side = True
            else:
                domains[top.id] = top
        if kernel_side or not self.reads_kmsg:
            self._call_later(0.1, self._v1_count_kernel_kills)
        for top in domains.values():
            self._v1_handle(top)

    def _v1_oom_domain(self, cg: LinuxCgroup) -> LinuxCgroup | None:
        """The memcg whose limit was hit: the highest one still marked under_oom (the kernel
        marks the OOMing memcg's whole subtree). None: not ours to handle (over already, or
        the kernel killer is acting there)."""
        if self._v1_ctl(cg).get("under_oom", 0) == 0:
            return None
        top = cg
        parent = top.parent
        while parent is not None and not self._is_hierarchy_root(parent):
            try:
                if self._v1_ctl(parent).get("under_oom", 0) == 0:
                    break
            except CgroupGone:
                break
            top = parent
            parent = top.parent
        if top.path == "/" and self._prefix:
            # Our root is a subtree: if its real parent is under OOM too, the OOM is above
            # us and not ours (the kernel's, or another runtime's).
            parent_ctl = os.path.join(os.path.dirname(top.dir), cf.V1_OOM_CONTROL)
            try:
                if cf.parse_flat_keyed(fsio.read_text(parent_ctl)).get("under_oom", 0):
                    return None
            except OomkitError:
                pass
        a = self._armed.get(top.id)
        if a is None or a.handed_over_at is not None:
            return None
        return top

    def _v1_handle(self, top: LinuxCgroup) -> None:
        a = self._armed.get(top.id)
        if a is None or a.handed_over_at is not None:
            return
        now = self._clock.now()
        if a.oom_since is None:
            a.oom_since = now
        if now - a.oom_since > self.max_stall_s:
            # Handlers claimed progress but the memcg is still stuck: the kernel decides.
            self._hand_over(a, "stuck for longer than max_stall_s")
            return
        if self._victim_pending(top.path):
            self._call_later(0.01, lambda: self._v1_recheck(top.id, a.dispatches))
            return
        hooks = self._hooks
        if hooks is None:
            self._hand_over(a, "no runtime")
            return
        a.dispatches += 1
        self._v1_oom_count[top.id] = self._v1_oom_count.get(top.id, 0) + 1
        request = OomRequest(
            memcg=top,
            order=0,
            constraint=Constraint.MEMCG,
            constraint_text=None,
            totalpages=self.oom_totalpages(top),
        )
        try:
            rc = hooks.oom(request)
        except Exception:
            rc = 0
            if a.handed_over_at is None:
                self._hand_over(a, "the runtime failed")
        delay = 0.01 if rc == -errno.EBUSY else self.recheck_s
        dispatches = a.dispatches
        self._call_later(delay, lambda: self._v1_recheck(top.id, dispatches))

    def _v1_recheck(self, cg_id: int, dispatches: int) -> None:
        """Still under OOM and no new notification since: ask again (or hand over)."""
        a = self._armed.get(cg_id)
        if a is None or a.handed_over_at is not None:
            return
        try:
            under = self._v1_ctl(a.cg).get("under_oom", 0)
        except CgroupGone:
            return
        if not under:
            a.oom_since = None
            return
        if a.dispatches == dispatches:
            self._v1_handle(a.cg)

    def _hand_over(self, a: _Armed, why: str) -> str:
        """The fallback: let the kernel's OOM killer act on this memcg."""
        a.handed_over_at = self._clock.now()
        cg = a.cg
        if self.version == 1:
            a.kills_at_handover = cg.memory_events("oom_kill")
            # Wakes the sleeping chargers (memcg1_oom_recover); their retry meets the killer.
            cg.write(cf.V1_OOM_CONTROL, "0")
            note = f"oom_kill_disable 0 on {cg.path}: the kernel OOM killer acts ({why})"
        else:
            a.kills_at_handover = cg.memory_events("oom_kill")
            self.journal.restore(cg.file(cf.MEMORY_HIGH))
            note = (
                f"memory.high restored on {cg.path}: "
                f"the kernel OOM killer acts at memory.max ({why})"
            )
        self._call_later(0.05, lambda: self._check_handover(cg.id))
        return note

    def _check_handover(self, cg_id: int) -> None:
        """The hand-over's timer: re-arm once the OOM is over, else look again later."""
        a = self._armed.get(cg_id)
        if a is None or a.handed_over_at is None or self._handover_done(a):
            return
        elapsed = self._clock.now() - a.handed_over_at
        self._call_later(0.05 if elapsed < 2.0 else 0.5, lambda: self._check_handover(cg_id))

    def _handover_done(self, a: _Armed) -> bool:
        assert a.handed_over_at is not None
        elapsed = self._clock.now() - a.handed_over_at
        try:
            if self.version == 1:
                over = self._v1_ctl(a.cg).get("under_oom", 0) == 0
                kills = a.cg.memory_events("oom_kill")
                done = over and (kills > a.kills_at_handover or elapsed > 1.0)
            else:
                done = a.guard is None or a.cg.usage() < a.guard
        except CgroupGone:
            self._armed.pop(a.cg.id, None)
            self._release_armed_fds(a)
            return True
        if done:
            self._rearm(a)
            if self.version == 1:
                self._v1_count_kernel_kills()
        return done

    def _rearm(self, a: _Armed) -> None:
        a.handed_over_at = None
        a.oom_since = None
        a.band_since = None
        if not self._in_scope(a.cg.path):
            self._disarm(a)
            return
        if self.version == 1:
            ctl_path = a.cg.file(cf.V1_OOM_CONTROL)
            self.journal.record(ctl_path, "0", a.cg.id)
            fsio.write_text(ctl_path, "1")
        else:
            self._v2_set_guard(a)

    def _v1_count_kernel_kills(self) -> None:
        """Without /dev/kmsg: kernel kills seen as oom_kill counters that went up."""
        if self.reads_kmsg:
            return
        for cg_id, a in list(self._armed.items()):
            try:
                now = self._v1_ctl(a.cg).get("oom_kill", 0)
            except CgroupGone:
                continue
            before = self._v1_kill_counts.get(cg_id, now)
            self._v1_kill_counts[cg_id] = now
            if now > before and self._hooks is not None:
                self._hooks.kernel_oom(
                    KernelOom(a.cg.path, (), now - before, "memory.oom_control")
                )

    # -- v2: the guard band ----------------------------------------------------------------------
    def _arm_v2(self, cg: LinuxCgroup) -> None:
        if cg.id in self._armed or (cg.path == "/" and not fsio.exists(cg.file(cf.MEMORY_MAX))):
            return
        a = _Armed(cg)
        self._armed[cg.id] = a
        a.last_events = cf.parse_flat_keyed(cg.read(cf.MEMORY_EVENTS))
        a.events_wd = self._watch_file(cg.file(cf.MEMORY_EVENTS), lambda: self._v2_on_events(a))
        a.limits_wds = (
            self._watch_file(cg.file(cf.MEMORY_MAX), lambda: self._v2_on_limits(a)),
            self._watch_file(cg.file(cf.MEMORY_HIGH), lambda: self._v2_on_limits(a)),
        )
        self._v2_set_guard(a)

    def _guard_for(self, memory_max: int) -> int:
        if callable(self.guard_margin):
            wanted = self.guard_margin(memory_max)
        else:
            wanted = int(memory_max * self.guard_margin)
        margin = max(wanted, self.guard_min_bytes)
        return max(memory_max - min(margin, memory_max // 2), 0) // PAGE_SIZE * PAGE_SIZE

    def _v2_set_guard(self, a: _Armed) -> None:
        cg = a.cg
        high_path = cg.file(cf.MEMORY_HIGH)
        memory_max = cg.memory_max
        recorded = self.journal.original(high_path)
        user_high = cf.parse_limit_v2(recorded) if recorded is not None else cg.memory_high
        if memory_max is None:
            a.guard = None
            self.journal.restore(high_path)
            return
        guard = self._guard_for(memory_max)
        if user_high is not None and user_high <= guard:
            a.guard = None  # the user's own memory.high is lower: never go above it
            self.journal.restore(high_path)
            return
        a.guard = guard
        if cg.memory_high != guard:
            self.journal.record(high_path, cf.format_limit_v2(user_high), cg.id)
            fsio.write_text(high_path, str(guard))

    def _v2_on_limits(self, a: _Armed) -> None:
        """memory.max or memory.high written (by the user, or by us)."""
        if self._armed.get(a.cg.id) is not a:
            return
        if a.handed_over_at is not None:
            return  # released on purpose; the band comes back with _rearm
        try:
            high = a.cg.memory_high
            if a.guard is not None and high != a.guard:
                # Someone else wrote memory.high: that is the user's value from now on.
                self.journal.update_original(a.cg.file(cf.MEMORY_HIGH), cf.format_limit_v2(high))
            self._v2_set_guard(a)
        except CgroupGone:
            return

    def _v2_on_events(self, a: _Armed) -> None:
        if self._armed.get(a.cg.id) is not a:
            return
        try:
            events = cf.parse_flat_keyed(a.cg.read(cf.MEMORY_EVENTS))
        except CgroupGone:
            return
        before, a.last_events = a.last_events, events
        kills = events.get("oom_kill", 0) - before.get("oom_kill", 0)
        if kills > 0 and not self.reads_kmsg and self._hooks is not None:
            self._hooks.kernel_oom(KernelOom(a.cg.path, (), kills, "memory.events"))
        if a.handed_over_at is not None:
            self._handover_done(a)  # its timer keeps looking too
            return
        if a.guard is None or events.get("high", 0) <= before.get("high", 0):
            return
        if a.band_since is None:
            a.band_since = self._clock.now()
            a.band_high_count = before.get("high", 0)
            self._trace("oom_notify")
            self._call_later(self.guard_stuck_s, lambda: self._v2_check_band(a))

    def _v2_check_band(self, a: _Armed) -> None:
        """Stuck in the band: usage still at the guard and the kernel still throttling."""
        if self._armed.get(a.cg.id) is not a or a.handed_over_at is not None:
            return
        a.band_since = None
        if a.guard is None:
            return
        try:
            usage = a.cg.usage()
            high_count = cf.parse_flat_keyed(a.cg.read(cf.MEMORY_EVENTS)).get("high", 0)
        except CgroupGone:
            return
        slack = max(a.guard // 64, 64 * PAGE_SIZE)  # "at the band", give or take a batch
        if usage + slack < a.guard or high_count <= a.band_high_count:
            a.oom_since = None
            return
        now = self._clock.now()
        if a.oom_since is None:
            a.oom_since = now
        hooks = self._hooks
        if hooks is None or now - a.oom_since > self.max_stall_s:
            # No runtime, or handlers claimed progress while the cgroup stayed stuck.
            why = "no runtime" if hooks is None else "stuck for longer than max_stall_s"
            self._hand_over(a, why)
            return
        a.dispatches += 1
        request = OomRequest(
            memcg=a.cg,
            order=0,
            constraint=Constraint.MEMCG,
            constraint_text=None,
            totalpages=self.oom_totalpages(a.cg),
        )
        if hooks.oom(request) == -errno.EBUSY:
            self._call_later(0.01, lambda: self._v2_check_band(a))

    # -- system-wide: PSI + MemAvailable ---------------------------------------------------------
    def _arm_system(self) -> None:
        if self._system_trigger is not None:
            return
        threshold, window = self.system_psi
        self._system_trigger = self.psi_trigger_create(0, Resource.MEMORY, threshold, window, False)
        self._system_trigger.on_event = self._on_system_pressure

    def _on_system_pressure(self, _trigger: LivePsiTrigger) -> None:
        # Pressure says "the machine is reclaiming"; MemAvailable says how close the end
        # is. A trigger fires at most once per window and may fire while there is still
        # room, so after an event MemAvailable is sampled every SYSTEM_SAMPLE_S for a while
        # (renewed by each event): polling only while the machine is under pressure.
        self._system_watch_until = self._clock.now() + SYSTEM_WATCH_S
        if self._system_timer is None:
            self._system_check()

    def _system_check(self) -> None:
        self._system_timer = None
        if self._system_trigger is None:
            return  # unwatched meanwhile
        if not self._victim_pending("/") and self._system_short():
            hooks = self._hooks
            if hooks is not None:
                hooks.oom(
                    OomRequest(
                        memcg=None,
                        order=0,
                        constraint=Constraint.NONE,
                        constraint_text=None,
                        totalpages=self.oom_totalpages(None),
                    )
                )
        # (A victim of ours still exiting: pressure lags its exit, no new OOM; look again.)
        if self._clock.now() < self._system_watch_until:
            self._system_timer = self._call_later(SYSTEM_SAMPLE_S, self._system_check)

    def _system_short(self) -> bool:
        info = self.procfs.meminfo()
        total = info.get("MemTotal", 0)
        return info.get("MemAvailable", total) < total * self.system_min_available

    # -- PSI triggers ----------------------------------------------------------------------------
    def psi_trigger_create(
        self, cgroup_id: int, resource: Resource, threshold_us: int, window_us: int, full: bool
    ) -> LivePsiTrigger:
        try:
            validate_trigger(threshold_us, window_us, self.privileged_psi, kernel=self.kver)
        except ValueError as exc:
            raise KernelError(f"PSI trigger refused: {exc}", errno.EINVAL) from None
        if cgroup_id == 0:
            path = self.procfs.path("pressure", resource.value)
        else:
            cg = self.mem_cgroup(cgroup_id)
            if cg is None:
                raise CgroupGone(f"no cgroup with id {cgroup_id}")
            if self.version == 1:
                raise KernelError(
                    f"{cg.path}: no per-cgroup PSI on cgroup v1 (use cgroup_id 0)",
                    errno.EOPNOTSUPP,
                )
            path = cg.file(cf.pressure_file(resource.value))
        trig = LivePsiTrigger(cgroup_id, resource, full, threshold_us, window_us, path)
        fd = fsio.open_fd(path, os.O_RDWR | os.O_NONBLOCK)
        try:
            # /proc/pressure/* wants the NUL in the write (psi_write() eats the last byte).
            text = f"{'full' if full else 'some'} {threshold_us} {window_us}\0"
            fsio.write_fd(fd, text.encode(), path)
            self._add_fd(fd, select.EPOLLPRI, functools.partial(self._on_psi, trig))
        except (OomkitError, OSError) as exc:
            self._close_fd(fd)
            if isinstance(exc, OSError):
                raise fsio.error_for(exc, path) from exc
            raise
        trig.fd = fd
        with self._lock:
            self._triggers.add(trig)
        return trig

    def psi_trigger_destroy(self, trigger: object) -> None:
        if not isinstance(trigger, LivePsiTrigger) or trigger.fd < 0:
            return
        with self._lock:
            self._triggers.discard(trigger)
        self._del_fd(trigger.fd)
        self._close_fd(trigger.fd)
        trigger.fd = -1

    def _on_psi(self, trig: LivePsiTrigger, mask: int) -> None:
        if mask & (select.EPOLLERR | select.EPOLLHUP) and not mask & select.EPOLLPRI:
            self._del_fd(trig.fd)  # the cgroup is gone; offline destroys the trigger
            return
        if trig.on_event is not None:
            trig.on_event(trig)
        elif self._hooks is not None:
            self._hooks.psi_event(trig)

    # -- /dev/kmsg: OOMs the kernel resolved -------------------------------------------------------
    def _on_kmsg(self, _mask: int) -> None:
        while True:
            try:
                record = os.read(self._kmsg_fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records were overwritten before we read them
                return
            if not record:
                return
            parsed = kmsg.parse_message(kmsg.split_record(record))
            if isinstance(parsed, kmsg.OomSummary):
                self._flush_kmsg()
                self._kmsg_pending = kmsg.PendingOom(parsed)
                self._kmsg_timer = self._call_later(0.05, self._flush_kmsg)
            elif isinstance(parsed, kmsg.KilledProcess) and self._kmsg_pending is not None:
                self._kmsg_pending.killed.append(parsed)

    def _flush_kmsg(self) -> None:
        pending, self._kmsg_pending = self._kmsg_pending, None
        if self._kmsg_timer is not None:
            self._kmsg_timer.cancelled = True
            self._kmsg_timer = None
        if pending is None or self._hooks is None:
            return
        s = pending.summary
        task_cg = self._from_kernel_path(s.task_memcg)
        if task_cg is None:
            return  # outside our root
        memcg = self._from_kernel_path(s.oom_memcg) if s.oom_memcg is not None else None
        victims = tuple(Victim(k.pid, k.comm, task_cg, k.rss) for k in pending.killed)
        self._hooks.kernel_oom(KernelOom(memcg, victims, max(1, len(victims)), "/dev/kmsg"))

    def _from_kernel_path(self, path: str | None) -> str | None:
        if path is None:
            return None
        prefix = self._prefix or ""
        if not prefix:
            return path
        if path == prefix:
            return "/"
        if path.startswith(prefix + "/"):
            return path[len(prefix) :]
        return None

    # -- the actions ------------------------------------------------------------------------------
    def oom_totalpages(self, memcg: Cgroup | None) -> int:
        info = self.procfs.meminfo()
        ram = info.get("MemTotal", 0)
        swap = info.get("SwapTotal", 0)
        if memcg is None or memcg.path == "/":
            return (ram + swap) // PAGE_SIZE
        cg = self._own(memcg)
        mem = cg.memory_max
        mem = ram if mem is None else min(mem, ram)
        if self.version == 1:
            # mem_cgroup_get_max(), v1: min(max + total swap, memsw.max)
            total = mem + swap
            if swap and fsio.exists(cg.file(cf.V1_MEMSW_LIMIT)):
                memsw = cf.parse_limit_v1(cg.read(cf.V1_MEMSW_LIMIT))
                if memsw is not None:
                    total = min(total, memsw)
            return total // PAGE_SIZE
        swap_max = cg.swap_max
        return (mem + (swap if swap_max is None else min(swap_max, swap))) // PAGE_SIZE

    def kill_tasks(self, tasks: Sequence[Task], message: str, group: Cgroup | None) -> list[Task]:
        return self._kill(tasks, skip_unkillable=True)

    def _kill(self, tasks: Sequence[Task], *, skip_unkillable: bool) -> list[Task]:
        killed: list[tuple[Task, int]] = []
        for t in tasks:
            if t.kthread or t.pid == 1 or (skip_unkillable and t.unkillable):
                continue
            try:
                pidfd = procfs.pidfd_open(t.pid)
            except TaskGone:
                continue
            try:
                # The pidfd pins the process; a PID recycled before we opened it shows a
                # different start time now.
                if t.start_time and self.procfs.stat(t.pid).start_time != t.start_time:
                    self._close_fd(pidfd)
                    continue
                procfs.pidfd_kill(pidfd, t.pid)
            except (TaskGone, ValueError):
                self._close_fd(pidfd)
                continue
            killed.append((t, pidfd))
        if not killed:
            return []
        self._trace("kill_sent")
        now = self._clock.now()
        for t, pidfd in killed:
            try:
                procfs.process_mrelease(pidfd)
            except KernelError:
                pass
            self._add_victim(t, pidfd, now)
        self._trace("mrelease_done")
        return [t for t, _ in killed]

    def _add_victim(self, t: Task, pidfd: int, now: float) -> None:
        key = (t.pid, t.start_time)
        with self._lock:
            old = self._victims.pop(key, None)
            self._victims[key] = _Victim(pidfd, t.cgroup.path, now)
        if old is not None:
            self._del_fd(old.pidfd)
            self._close_fd(old.pidfd)
        # A pidfd polls readable when the process exited: no polling for the exit.
        self._add_fd(pidfd, select.EPOLLIN, functools.partial(self._victim_exited, key))

    def _victim_exited(self, key: tuple[int, int], _mask: int = 0) -> None:
        with self._lock:
            v = self._victims.pop(key, None)
        if v is not None:
            self._del_fd(v.pidfd)
            self._close_fd(v.pidfd)

    def _victim_pending(self, domain: str) -> bool:
        """A victim of ours is still exiting in this domain (the kernel waits, so do we)."""
        now = self._clock.now()
        with self._lock:
            for v in self._victims.values():
                inside = domain == "/" or v.cgroup_path == domain or v.cgroup_path.startswith(
                    domain + "/"
                )
                if inside and now - v.killed_at < self.recheck_s:
                    return True
        return False

    def kill_cgroup(self, cgroup: Cgroup, message: str) -> list[Task]:
        cg = self._own(cgroup)
        subtree = [c for c in cg.walk() if isinstance(c, LinuxCgroup)]
        tasks = [t for c in subtree for t in c.tasks()]
        if self.version == 2 and fsio.exists(cg.file(cf.CGROUP_KILL)):
            # Pidfds first (for process_mrelease and exit tracking), then the atomic kill.
            pinned: list[tuple[Task, int]] = []
            for t in tasks:
                try:
                    pinned.append((t, procfs.pidfd_open(t.pid)))
                except TaskGone:
                    continue
            cg.write(cf.CGROUP_KILL, "1")
            self._trace("kill_sent")
            now = self._clock.now()
            for t, pidfd in pinned:
                try:
                    procfs.process_mrelease(pidfd)
                except KernelError:
                    pass
                self._add_victim(t, pidfd, now)
            return [t for t, _ in pinned]
        return self._kill_cgroup_v1(cg, subtree, tasks)

    def _kill_cgroup_v1(
        self, cg: LinuxCgroup, subtree: list[LinuxCgroup], tasks: list[Task]
    ) -> list[Task]:
        """v1 has no cgroup.kill: freeze (if the freezer mirrors this cgroup) and kill every
        task, repeating until cgroup.procs is empty so a fork racing the kill loses."""
        freezer = None
        if self._freezer_root is not None and self._prefix is not None:
            candidate = self._freezer_root + (self._prefix or "") + (
                "" if cg.path == "/" else cg.path
            )
            if candidate != self._freezer_root and fsio.exists(
                os.path.join(candidate, cf.V1_FREEZER_STATE)
            ):
                freezer = os.path.join(candidate, cf.V1_FREEZER_STATE)
        killed: list[Task] = []
        seen: set[tuple[int, int]] = set()
        try:
            if freezer is not None:
                fsio.write_text(freezer, "FROZEN")
            deadline = self._clock.now() + 1.0
            while tasks:
                fresh = [t for t in tasks if (t.pid, t.start_time) not in seen]
                seen.update((t.pid, t.start_time) for t in fresh)
                killed.extend(self._kill(fresh, skip_unkillable=False))
                if self._clock.now() > deadline:
                    break
                if freezer is not None:
                    break  # frozen tasks cannot fork: one round is all of them
                time.sleep(0.001)
                tasks = []
                for c in subtree:
                    try:
                        tasks.extend(
                            t for t in c.tasks() if (t.pid, t.start_time) not in seen
                        )
                    except CgroupGone:
                        continue
        finally:
            if freezer is not None:
                fsio.write_text(freezer, "THAWED")
        return killed

    def reclaim(self, cgroup: Cgroup, nbytes: int) -> int:
        """memory.reclaim (v2); the bytes reclaimed, from memory.stat pgsteal.

        v1 has no partial reclaim (memory.force_empty empties the memcg, and shrinking
        the limit can OOM concurrent chargers): returns 0 there.
        """
        cg = self._own(cgroup)
        if self.version == 1 or nbytes <= 0:
            return 0
        before = cg.stat().get("pgsteal", 0)
        usage_before = cg.usage()
        try:
            cg.write(cf.MEMORY_RECLAIM, str(nbytes))
        except KernelError as exc:
            if exc.errno != errno.EAGAIN:  # EAGAIN: reclaimed less than asked
                raise
        after = cg.stat().get("pgsteal", 0)
        if after > before:
            return (after - before) * PAGE_SIZE
        return max(0, usage_before - cg.usage())

    def remove_file(self, path: str) -> int:
        """Unlink a file; the bytes it held if this was its last link (a file still open or
        mapped elsewhere keeps its memory until closed: counted as 0)."""
        with fsio.translate(path, gone=None):
            st = os.stat(path)
            os.unlink(path)
        return st.st_blocks * 512 if st.st_nlink <= 1 else 0

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None:
        cg = self._own(cgroup)
        if self.version == 2:
            cg.write(cf.MEMORY_MAX, cf.format_limit_v2(nbytes))
            a = self._armed.get(cg.id)
            if a is not None and a.handed_over_at is None:
                self._v2_set_guard(a)
            return
        # v1: memsw.limit >= limit always; raise memsw first, lower it last.
        new = "-1" if nbytes is None else str(nbytes)
        has_memsw = fsio.exists(cg.file(cf.V1_MEMSW_LIMIT))
        old = cg.memory_max
        memsw = cf.parse_limit_v1(cg.read(cf.V1_MEMSW_LIMIT)) if has_memsw else None
        swap_share = None if memsw is None or old is None else memsw - old
        raising = nbytes is None or (old is not None and nbytes > old)
        new_memsw = "-1" if nbytes is None or memsw is None else str(nbytes + (swap_share or 0))
        if has_memsw and memsw is not None and raising:
            cg.write(cf.V1_MEMSW_LIMIT, new_memsw)
        cg.write(cf.V1_LIMIT, new)
        if has_memsw and memsw is not None and not raising:
            cg.write(cf.V1_MEMSW_LIMIT, new_memsw)

    def default_oom(self, request: OomRequest) -> DefaultOutcome:
        memcg = request.memcg
        if request.constraint == Constraint.MEMCG and memcg is not None:
            a = self._armed.get(memcg.id)
            if a is not None:
                if a.handed_over_at is not None:
                    return DefaultOutcome(handed_over=True, note="the kernel OOM killer is acting")
                note = self._hand_over(a, "no handler freed memory")
                return DefaultOutcome(handed_over=True, note=note)
        if request.constraint == Constraint.NONE and memcg is None:
            return DefaultOutcome(
                handed_over=True,
                note="system-wide: the kernel OOM killer was never disabled and acts when it must",
            )
        return self._select_and_kill(request)

    def _select_and_kill(self, request: OomRequest) -> DefaultOutcome:
        """The kernel's own choice (select_bad_process + oom_kill_process), done here for
        OOMs the kernel itself is not in: declared ones."""
        from oomkit.ops import OomControl  # the kill mechanics (memory.oom.group) live there

        domain = self.root_mem_cgroup() if request.memcg is None else self._own(request.memcg)
        best: Task | None = None
        best_points = -(1 << 62)
        for c in domain.walk():
            try:
                tasks = c.tasks()
            except CgroupGone:
                continue
            for t in tasks:
                if t.unkillable:
                    continue
                if self.task_is_oom_victim(t):
                    return DefaultOutcome(waited=True)
                points = t.oom_badness(request.totalpages)
                if points is not None and points > best_points:
                    best, best_points = t, points
        if best is None:
            return DefaultOutcome(note="no killable task")
        oc = OomControl(
            self,
            request.memcg,
            request.order,
            request.constraint,
            request.constraint_text,
            request.totalpages,
        )
        try:
            oc.kill_process(best, "oom_kill_process (declared OOM)")
        except OomkitError as exc:
            return DefaultOutcome(note=f"kill failed: {exc}")
        return DefaultOutcome(victims=oc.victims)
