"""LinuxKernel: the real kernel behind the ``Kernel`` interface, on cgroup v2 or v1.

This is the face: SPEC section 3 and the backend seam, over the one-job modules of this
package (docs/live.md maps each mechanism to its module):

- :mod:`.mounts` finds the memory controller and its version, once; :mod:`.layout` holds
  what differs between v1 and v2 files, :mod:`.cgroup` the cgroup over it.
- :mod:`.loop` is the one epoll loop (eventfds, inotify, PSI fds, victims' pidfds,
  /dev/kmsg, and timers only while something is in progress); :mod:`.tree` the cgroup
  index and its inotify watches.
- The OOM watcher, chosen at construction: :mod:`.v1` (``memory.oom_control``
  ``oom_kill_disable`` + eventfd) or :mod:`.v2` (a ``memory.high`` guard band below
  ``memory.max``), both over :mod:`.watch` (arming, the hand-over to the kernel killer);
  :mod:`.system` the system-wide watch (PSI + MemAvailable); :mod:`.decisions` the rules
  they apply, as pure functions.
- :mod:`.kills` kills through pidfds, ``process_mrelease`` and tracks victims;
  :mod:`.kmsgwatch` reports the kernel's own kills from /dev/kmsg.
- :mod:`.journal` records every changed setting before it is changed; the watchdog
  process (:mod:`.watchdog`) restores them if this process dies or hangs.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, final

from oomkit.clock import Clock, MonotonicClock, wall_perf_ns
from oomkit.errors import CgroupGone, KernelError, OomkitError, Unkillable
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
    Resource,
    Task,
    Victim,
)
from oomkit.kernel.linux import fsio, procfs
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.handovers import handed_over_since
from oomkit.kernel.linux.journal import RestoreJournal
from oomkit.kernel.linux.kills import Killer, freezer_state_path
from oomkit.kernel.linux.kmsgwatch import KmsgWatch, from_kernel_path
from oomkit.kernel.linux.layout import Layout, V1Layout, V2Layout
from oomkit.kernel.linux.loop import EventLoop, Timer
from oomkit.kernel.linux.memwatch import MAX_FILL_RATE, parse_sample
from oomkit.kernel.linux.mounts import (
    Mount,
    detect_root,
    freezer_root,
    hierarchy_point,
    kernel_version,
    mount_prefix,
    parse_mountinfo,
)
from oomkit.kernel.linux.psi import LivePsiTrigger, PsiTriggers
from oomkit.kernel.linux.system import SystemWatch
from oomkit.kernel.linux.tree import CgroupTree
from oomkit.kernel.linux.v1 import V1OomWatch
from oomkit.kernel.linux.v2 import V2GuardBand
from oomkit.kernel.linux.watch import OomWatch
from oomkit.kernel.linux.watchdog import IDLE_BEAT
from oomkit.kernel.oom_kill import (
    for_each_process,
    mem_cgroup_get_oom_group,
    oom_kill_targets,
    scan_order,
    select_bad_process,
)
from oomkit.kernel.psi_trigger import validate_trigger

CAP_SYS_RESOURCE: Final = 24
MiB: Final = 1 << 20

Trace = Callable[[str, int], None]

#: Seconds after an OOM began during which the short beat interval is kept.
BUSY_FOR: Final = 30.0


@final
class LinuxKernel:
    """The live kernel. See the module docstring; docs/live.md for the design.

    ``cgroup_root``: a cgroup directory to treat as the root (default: the mount of the
    memory controller, v2 preferred). A subtree works too: the kernel then sees, arms and
    reports only below it. ``proc_root``: procfs. ``state_file``: where the watchdog's
    journal lives (None: in memory only, no watchdog). ``kmsg_path``: /dev/kmsg to report
    kernel OOM kills from (None: count them from memory.events / memory.oom_control).
    ``guard_*``: the v2 band (:func:`.decisions.guard_band`) and how long usage must stay
    in it to be an OOM; ``system_psi`` (threshold, window) in µs, ``system_min_available``
    and ``system_min_swap_free`` (a float: a share of MemTotal / SwapTotal; an int: bytes),
    ``system_lead_s`` and ``system_max_fill_rate`` (bytes/s): the system-wide watch
    (:mod:`.memwatch`);
    ``recheck_s``: how long a victim may take to exit before the OOM is asked about
    again; ``max_stall_s``: how long handlers may claim progress on a stuck memcg before
    the kernel killer takes over; ``watchdog_hung_after``: how long the watchdog process
    lets a memcg stay under OOM with the killer disabled by us (None: its default, 15 s);
    ``event_log``: where the watchdog records the OOMs it hands over (None: its stderr).
    Raises KernelError (ENOENT) without a memory cgroup.
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
        system_min_available: float | int = 0.05,
        system_min_swap_free: float | int = 0.1,
        system_lead_s: float = 0.25,
        system_max_fill_rate: float = MAX_FILL_RATE,
        recheck_s: float = 0.5,
        max_stall_s: float = 5.0,
        watchdog_hung_after: float | None = None,
        event_log: str | None = None,
    ) -> None:
        self.procfs = procfs.Procfs(proc_root)
        self._clock: Clock = clock or MonotonicClock()
        mounts: list[Mount] = []
        try:
            mounts = parse_mountinfo(self.procfs.read("self", "mountinfo"))
        except OomkitError:
            pass
        self.root_dir, self.version = detect_root(cgroup_root, mounts, fsio.exists, fsio.read_text)
        self.prefix = mount_prefix(self.root_dir, mounts)
        self._freezer_root = freezer_root(mounts)
        # Journal entries (ours, or a leftover one) are restored only below this hierarchy.
        self.journal = RestoreJournal(state_file, watchdog=watchdog,
                                      hung_after=watchdog_hung_after,
                                      cgroup_root=hierarchy_point(self.root_dir, mounts),
                                      event_log=event_log, tree_root=self.root_dir,
                                      kmsg_prefix=self.prefix)
        self.kver = kernel_version(os.uname().release)
        self.privileged_psi = self._has_cap(CAP_SYS_RESOURCE)
        self.guard_margin = guard_margin
        self.guard_min_bytes = guard_min_bytes
        self.guard_stuck_s = guard_stuck_s
        self.system_psi = system_psi
        self.system_min_available = system_min_available
        self.system_min_swap_free = system_min_swap_free
        self.system_lead_s = system_lead_s
        self.system_max_fill_rate = system_max_fill_rate
        self.recheck_s = recheck_s
        self.max_stall_s = max_stall_s
        self.trace: Trace | None = None

        self._lock = threading.RLock()
        self._hooks: KernelHooks | None = None
        self.loop = EventLoop(self._clock, self._lock)
        self.tree = CgroupTree(
            self, self.root_dir, self.loop, self._lock, self._online, self._offline
        )
        self.layout: Layout = V1Layout(self.procfs) if self.version == 1 else V2Layout(
            self.procfs
        )
        self.oom_watch: OomWatch = V1OomWatch(self) if self.version == 1 else V2GuardBand(self)
        self.system = SystemWatch(self)
        self.killer = Killer(self, self.loop, self._lock)
        self.triggers = PsiTriggers(self.loop, self._lock, self._deliver_psi)
        self._kmsg_path = kmsg_path
        self.kmsg = KmsgWatch(
            self.loop, self._report_kernel_oom, lambda p: from_kernel_path(self.prefix, p)
        )
        self._scopes: dict[int, str] = {}  # scope key (cgroup id, 0 = root) -> path
        self._handovers: dict[str, float] = {}  # memcg path -> when handed to the kernel
        self._started = False
        self._closed = False
        self._beat_timer: Timer | None = None  # the pending heartbeat
        # _beat runs on the loop's thread and, from oom_entered, on the system watch's:
        # one pending heartbeat at a time, not two chains of them
        self._beat_lock = threading.Lock()
        self._last_oom = float("-inf")
        self.tree.rescan()

    @classmethod
    def open(cls, **kwargs: Any) -> LinuxKernel:
        """``LinuxKernel(**kwargs)``, named for the daemon's backend."""
        return cls(**kwargs)

    def _has_cap(self, cap: int) -> bool:
        try:
            status = procfs.parse_status(self.procfs.read("self", "status"))
            return bool(int(status.get("CapEff", "0"), 16) >> cap & 1)
        except (OomkitError, ValueError):
            return False

    # -- for the package's modules ---------------------------------------------------------
    @property
    def hooks(self) -> KernelHooks | None:
        """The runtime bound to this kernel (None: none; OOMs go to the kernel killer)."""
        return self._hooks

    def cgroup_at(self, path: str) -> LinuxCgroup:
        return self.tree.cgroup_at(path)

    def is_hierarchy_root(self, cg: LinuxCgroup) -> bool:
        """Our root is the hierarchy's root unless it is a subtree of a mounted hierarchy."""
        return cg.path == "/" and not self.prefix

    def oomkit_memcgs(self) -> set[str]:
        """Paths below our root of the memcgs holding this process and its watchdog."""
        key = "memory" if self.version == 1 else ""
        found: set[str] = set()
        holders: list[int] = [os.getpid()]  # not "self": a fake proc_root records another
        if self.journal.watchdog_pid is not None:
            holders.append(self.journal.watchdog_pid)
        for holder in holders:
            try:
                kpath = procfs.parse_proc_cgroup(self.procfs.read(holder, "cgroup")).get(key)
            except OomkitError:
                continue
            path = from_kernel_path(self.prefix, kpath)
            if path is not None:
                found.add(path)
        return found

    def holds_oomkit(self, cg: LinuxCgroup) -> bool:
        """Arming ``cg`` could freeze oomkit itself: it is the memcg of the daemon or its
        watchdog, or (v1) an ancestor of one. On v1 the OOM of a memcg with
        oom_kill_disable 1 puts every task charging to it to sleep, those of its
        descendants included (mem_cgroup_oom_synchronize), and memcgs made below it
        inherit the flag: a handler, or the daemon's own allocation, would then wait for
        an OOM only the daemon can end. On v2 the guard band of an ancestor only
        throttles (memory.high), so only the daemon's own memcg is left alone."""
        for path in self.oomkit_memcgs():
            if path == cg.path:
                return True
            if self.version == 1 and (cg.path == "/" or path.startswith(cg.path + "/")):
                return True
        return False

    def in_scope(self, path: str) -> bool:
        """Some watch_oom scope covers the cgroup at ``path``."""
        for spath in self._scopes.values():
            if spath == "/" or path == spath or path.startswith(spath + "/"):
                return True
        return False

    def trace_stage(self, stage: str) -> None:
        if self.trace is not None:
            self.trace(stage, wall_perf_ns())

    @property
    def reads_kmsg(self) -> bool:
        return self.kmsg.fd >= 0

    # -- SPEC section 3 ------------------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self._clock

    def root_mem_cgroup(self) -> LinuxCgroup:
        return self.cgroup_at("/")

    def mem_cgroup(self, id_or_path: int | str) -> LinuxCgroup | None:
        if isinstance(id_or_path, str):
            path = id_or_path
            if path.startswith(self.root_dir + "/") or path == self.root_dir:
                path = path[len(self.root_dir) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
            path = posixpath.normpath(path)
            try:
                return self.cgroup_at(path)
            except CgroupGone:
                return None
        return self.tree.by_id(id_or_path)

    def out_of_memory(
        self,
        memcg: Cgroup | None,
        order: int = 0,
        flags: OomFlags = OomFlags(0),
        constraint_text: str | None = None,
    ) -> int:
        """bpf_out_of_memory: a declared OOM, handlers first, then the default killer
        (without a runtime, the default killer alone, as the kernel has no handlers
        then). 1: progress, 0: none, -EBUSY: an OOM is being handled and
        WAIT_ON_OOM_LOCK is not set, -EINVAL: unknown flags, an order outside 0..10, or a
        memcg that is gone."""
        if int(flags) & ~int(KNOWN_OOM_FLAGS) or not 0 <= order <= MAX_ORDER:
            return -errno.EINVAL
        try:
            totalpages = self.oom_totalpages(memcg)
        except CgroupGone:
            return -errno.EINVAL
        request = OomRequest(
            memcg=memcg,
            order=order,
            constraint=Constraint.DECLARED,
            constraint_text=constraint_text,
            totalpages=totalpages,
            flags=OomFlags(flags),
        )
        hooks = self._hooks
        if hooks is None:
            return 1 if self.default_oom(request).progress else 0
        self.oom_entered()
        return hooks.oom(request)

    def task_is_oom_victim(self, task: Task) -> bool:
        return self.killer.is_victim(task)

    # -- backend seam: binding and the loop -------------------------------------------------------
    def bind(self, hooks: KernelHooks | None) -> None:
        self._hooks = hooks
        if hooks is not None and not self._started:
            self._start()

    def _start(self) -> None:
        self._started = True
        self.tree.start()
        if self._kmsg_path is not None:
            self.kmsg.open(self._kmsg_path)  # not readable (no CAP_SYSLOG): the counters
        if self.journal.beat_interval is not None:
            self._beat()

    def _beat(self) -> None:
        """The heartbeat to the watchdog, from this loop: it says the loop serves. Stopped
        (SIGSTOP), wedged (a handler holding the GIL) or blocked, the loop sends none, and
        the watchdog hands the OOMs of the memcgs we armed to the kernel killer at once
        instead of after its deadline. The one timer of an idle loop.

        Each beat announces when the next comes: every :data:`IDLE_BEAT` s on a quiet
        machine (an idle daemon wakes itself and its watchdog that seldom), the short
        interval for :data:`BUSY_FOR` s after an OOM began. An OOM beats at once
        (:meth:`oom_entered`), before any handler runs, so a handler that wedges the
        loop is seen after the short interval plus ``hung_after``."""
        if self._closed:
            return
        fast = self.journal.beat_interval
        if fast is None:
            return
        busy = self.clock.now() - self._last_oom < BUSY_FOR
        interval = fast if busy else max(fast, IDLE_BEAT)
        self.journal.beat(interval)
        with self._beat_lock:
            if self._beat_timer is not None:
                self._beat_timer.cancelled = True
            # Up to 40 % early: a beat rides on another wake-up of the loop (the
            # MemAvailable watch's) instead of waking it; the watchdog judges each beat
            # by the interval it announced, so an early one is never stale.
            self._beat_timer = self.loop.call_later(interval, self._beat, early=interval * 0.4)

    def oom_entered(self) -> None:
        """An OOM is about to be handed to the handlers: beat now, with the short interval
        (from the thread that found the OOM: the loop's, or the system watch's)."""
        self._last_oom = self.clock.now()
        if self._started and not self._closed:
            self._beat()

    def poll(self, timeout: float | None = None) -> None:
        """Wait for one batch of events (at most ``timeout`` s) and handle them."""
        self.loop.poll(timeout)

    def wakeup(self) -> None:
        """Make a poll() in progress return (thread-safe)."""
        self.loop.wakeup()

    def close(self) -> None:
        """Restore every setting this kernel changed and release its fds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._hooks = None
        self._scopes.clear()
        self.oom_watch.close()
        self.system.disarm()
        self.triggers.close()
        self.journal.close()
        self.killer.close()
        self.tree.close()
        self.kmsg.close()
        self.loop.close()

    # -- cgroup online/offline ------------------------------------------------------------------
    def _online(self, cg: LinuxCgroup) -> None:
        if self.in_scope(cg.path) and not self.holds_oomkit(cg):
            self.oom_watch.arm_safely(cg)
        if self._hooks is not None:
            self._hooks.cgroup_online(cg.id, cg.path)

    def _offline(self, cg_id: int, path: str) -> None:
        self.oom_watch.offline(cg_id)
        for key, spath in list(self._scopes.items()):
            if key == cg_id and spath == path:
                del self._scopes[key]
        self.triggers.offline(cg_id)
        if self._hooks is not None:
            self._hooks.cgroup_offline(cg_id, path)

    # -- OOM scopes --------------------------------------------------------------------------------
    def watch_oom(self, cgroup: Cgroup | None) -> str:
        if not self._started:
            self._start()
        root = self.root_mem_cgroup() if cgroup is None else self._own(cgroup)
        self._scopes[cgroup.id if cgroup is not None else 0] = root.path
        spared: list[str] = []
        for cg in root.walk():
            assert isinstance(cg, LinuxCgroup)
            if self.holds_oomkit(cg):
                spared.append(cg.path)
                continue
            self.oom_watch.arm_safely(cg)
        how = self.layout.oom_how
        if spared:
            shown = ", ".join(spared[:3]) + (" ..." if len(spared) > 3 else "")
            how += (f"; not armed: {shown} (holds oomkit itself: its OOMs go to the kernel "
                    "killer)")
        if cgroup is None:
            self.system.arm()
            how += "; system-wide: MemAvailable on an adaptive timer + PSI /proc/pressure/memory"
        return how

    def watch_system_memory(self) -> str:
        """The system-wide MemAvailable watch alone, arming no memcg (a dry run's: it only
        reads /proc/meminfo and declares system-wide OOMs to the hooks)."""
        if not self._started:
            self._start()
        self.system.arm()
        return "system-wide: MemAvailable on an adaptive timer + PSI /proc/pressure/memory"

    def watched_cgroups(self) -> int:
        """How many memcgs are armed now (their OOMs reach the handlers first)."""
        return len(self.oom_watch.armed)

    def unwatch_oom(self, cgroup: Cgroup | None) -> None:
        key = cgroup.id if cgroup is not None else 0
        self._scopes.pop(key, None)
        self.oom_watch.prune()
        if cgroup is None:
            self.system.disarm()

    def _own(self, cgroup: Cgroup) -> LinuxCgroup:
        if isinstance(cgroup, LinuxCgroup) and cgroup.kernel is self:
            return cgroup
        found = self.mem_cgroup(cgroup.id)
        if found is None:
            raise CgroupGone(f"{cgroup.path}: gone")
        return found

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
            path = self.layout.pressure_path(cg, resource)
        trig = LivePsiTrigger(cgroup_id, resource, full, threshold_us, window_us, path)
        return self.triggers.open(trig)

    def psi_trigger_destroy(self, trigger: object) -> None:
        """Close a trigger of this kernel (again: nothing). KernelError(EINVAL) for
        anything else."""
        if not isinstance(trigger, LivePsiTrigger) or not self.triggers.owns(trigger):
            raise KernelError("not a PSI trigger of this kernel", errno.EINVAL)
        self.triggers.destroy(trigger)

    def _deliver_psi(self, trig: LivePsiTrigger) -> None:
        if self._hooks is not None:
            self._hooks.psi_event(trig)

    #: How long after a hand-over the kernel's kills in that memcg are the same OOM.
    HANDOVER_SAME_OOM_S: Final = 10.0

    def note_handover(self, path: str) -> None:
        """An OOM of ``path`` was handed to the kernel killer (and already reported)."""
        self._handovers[path] = self._clock.now()

    def report_kernel_oom(self, oom: KernelOom) -> None:
        """Report an OOM the kernel resolved, unless it is one we handed over: that OOM
        was reported by the runtime already (once, with resolved_by "default"), and its
        kills here are the same OOM, not a new one. The same for an OOM the watchdog handed
        over while we were stopped: it wrote the record (found in the event log's tail)."""
        if oom.memcg in (None, "/"):
            self.system.kernel_killed()  # its victim's memory is on its way back
        now = self._clock.now()
        for path, at in list(self._handovers.items()):
            if now - at > self.HANDOVER_SAME_OOM_S:
                del self._handovers[path]
            elif oom.memcg is not None and (
                oom.memcg == path or oom.memcg.startswith(path.rstrip("/") + "/")
            ):
                return
        log = self.journal.event_log
        if log and oom.memcg is not None and oom.memcg in handed_over_since(
                log, now - self.HANDOVER_SAME_OOM_S):
            return
        if self._hooks is not None:
            self._hooks.kernel_oom(oom)

    _report_kernel_oom = report_kernel_oom

    def oom_recorded_since(self, path: str, since: float) -> bool:
        """The watchdog handed the OOM of ``path`` (going on since ``since``, this clock)
        to the kernel killer and recorded it: it can have only once the OOM lasted its
        deadline (``journal.hung_after``), so a shorter OOM costs no read."""
        after = self.journal.hung_after
        log = self.journal.event_log
        if not log or after <= 0 or self._clock.now() - since < after:
            return False
        return path in handed_over_since(log, since)

    # -- the actions ------------------------------------------------------------------------------
    def oom_totalpages(self, memcg: Cgroup | None) -> int:
        # Two fields of /proc/meminfo, not fifty: this is on the path to every kill.
        info = parse_sample(0.0, self.procfs.read("meminfo").encode())
        ram, swap = info.mem_total, info.swap_total
        if memcg is None or memcg.path == "/":
            return (ram + swap) // PAGE_SIZE
        return self.layout.totalpages(self._own(memcg), ram, swap)

    def kill_tasks(self, tasks: Sequence[Task], message: str, group: Cgroup | None) -> list[Task]:
        return self.killer.kill([t for t in tasks if self._may_kill(t.pid)],
                                skip_unkillable=True)

    def _may_kill(self, pid: int) -> bool:
        """Never this process or its watchdog, nor a task outside our cgroup root (a Task
        a policy made up, or one that moved out): its memcg is read at kill time."""
        if pid in (os.getpid(), self.journal.watchdog_pid):
            return False
        key = "memory" if self.version == 1 else ""
        try:
            kpath = procfs.parse_proc_cgroup(self.procfs.read(pid, "cgroup")).get(key)
        except OomkitError:
            return True  # gone (the pidfd open of the kill finds out) or not recorded
        return kpath is None or from_kernel_path(self.prefix, kpath) is not None

    def kill_cgroup(self, cgroup: Cgroup, message: str) -> list[Task]:
        cg = self._own(cgroup)
        for path in self.oomkit_memcgs():
            if cg.path in ("/", path) or path.startswith(cg.path + "/"):
                raise Unkillable(f"cgroup {cg.path} holds oomkit itself (its daemon or "
                                 "watchdog): not killed")
        atomic = self.layout.has_cgroup_kill(cg)
        freezer = None
        if not atomic:
            freezer = freezer_state_path(self._freezer_root, self.prefix, cg.path, fsio.exists)
        return self.killer.kill_cgroup(cg, atomic, freezer)

    def reclaim(self, cgroup: Cgroup, nbytes: int) -> int:
        """memory.reclaim (v2); the bytes reclaimed, from memory.stat pgsteal.
        KernelError(EINVAL) for ``nbytes`` <= 0 (the kernel refuses to parse it).

        v1 has no partial reclaim (memory.force_empty empties the memcg, and shrinking
        the limit can OOM concurrent chargers): returns 0 there.
        """
        cg = self._own(cgroup)
        if nbytes <= 0:
            raise KernelError("memory.reclaim needs a positive size", errno.EINVAL)
        return self.layout.reclaim(cg, nbytes)

    def tmpfs_files(self, path: str) -> list[tuple[str, int]]:
        """Regular tmpfs files in directory ``path`` (:func:`.tmpfs.list_tmpfs_files`)."""
        from oomkit.kernel.linux.tmpfs import list_tmpfs_files

        return list_tmpfs_files(path)

    def remove_file(self, path: str) -> int:
        """Unlink a closed regular file on tmpfs, never through a link another user could
        have planted (:mod:`.tmpfs`); the bytes it held if this was its last link.
        Raises KernelError (EPERM, EBUSY, ENOENT) for anything else."""
        from oomkit.kernel.linux.tmpfs import remove_tmpfs_file

        # The real /proc even over a fake tree: the file, its mount and its openers are real.
        return remove_tmpfs_file(path)

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None:
        """memory.max (v1: the limit, memory+swap moved along). KernelError(EINVAL) on the
        root memcg, which has no limit; CgroupGone for a removed cgroup."""
        cg = self._own(cgroup)
        if self.is_hierarchy_root(cg):
            raise KernelError("the root cgroup has no memory.max", errno.EINVAL)
        self.layout.set_memory_max(cg, nbytes)
        self.oom_watch.limits_changed(cg)

    def default_oom(self, request: OomRequest) -> DefaultOutcome:
        memcg = request.memcg
        if request.constraint == Constraint.MEMCG and memcg is not None:
            note = self.oom_watch.hand_back(memcg.id)
            if note is not None:
                return DefaultOutcome(handed_over=True, note=note)
        if request.constraint == Constraint.NONE and memcg is None:
            if self.system.armed and self.system.short():
                # Our MemAvailable watch saw it first and it still holds: the kernel's own
                # choice (oom_badness), made now rather than when reclaim has failed, as
                # earlyoom does. Past this the kernel killer is still there, as ever.
                return self._select_and_kill(request)
            return DefaultOutcome(
                handed_over=True,
                note="system-wide: the kernel OOM killer was never disabled and acts when it must",
            )
        return self._select_and_kill(request)

    def _select_and_kill(self, request: OomRequest) -> DefaultOutcome:
        """The kernel's own choice (select_bad_process + oom_kill_process, shared with the
        simulator in :mod:`oomkit.kernel.oom_kill`), done here for OOMs the kernel itself
        is not in: declared ones."""
        if request.memcg is None:
            tasks: Iterable[Task] = for_each_process(self.root_mem_cgroup())
        else:
            tasks = scan_order(self._own(request.memcg))
        found = select_bad_process(tasks, request.totalpages, self.task_is_oom_victim)
        if found.waiting_for is not None:
            w = found.waiting_for
            return DefaultOutcome(
                waited=True, note=f"victim {w.pid} ({w.comm}) is still exiting: waiting"
            )
        victim = found.chosen
        if victim is None:
            return DefaultOutcome(note="no killable task")
        group = mem_cgroup_get_oom_group(victim.cgroup, request.memcg)
        try:
            why = "declared OOM" if request.constraint == Constraint.DECLARED else (
                "MemAvailable below the system-wide minimum"
            )  # fmt: skip
            killed = self.kill_tasks(
                oom_kill_targets(victim, group), f"oom_kill_process ({why})", group
            )
        except OomkitError as exc:
            return DefaultOutcome(note=f"kill failed: {exc}")
        return DefaultOutcome(
            victims=tuple(Victim.of(t) for t in killed),
            note=f"oom_badness chose pid {victim.pid} ({victim.comm}), {found.points} points",
        )
