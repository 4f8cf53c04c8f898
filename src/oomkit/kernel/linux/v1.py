"""cgroup v1: OOMs reach the handlers through ``memory.oom_control``.

Arming a memcg sets ``oom_kill_disable 1`` and registers an eventfd for its
``memory.oom_control`` in ``cgroup.event_control``. At an OOM the kernel puts the charging
tasks to sleep (``under_oom 1``, ``mem_cgroup_oom_synchronize``) and signals the eventfd
of every memcg of the OOMing subtree; the runtime asks the handlers for the domain (the
memcg whose limit was hit). The hand-over writes ``oom_kill_disable 0``, which wakes the
sleepers (``memcg1_oom_recover``); their retry finds the killer enabled and the kernel
kills. Once ``under_oom`` is 0 again the flag goes back to 1.
"""

from __future__ import annotations

import errno
import functools
import os
import select
from typing import TYPE_CHECKING

from oomkit import forkguard
from oomkit.errors import CgroupGone, OomkitError
from oomkit.kernel.base import Constraint, KernelOom, OomRequest
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import fsio
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.decisions import v1_oom_domain, v1_oom_stale
from oomkit.kernel.linux.journal import JournalError
from oomkit.kernel.linux.loop import Timer
from oomkit.kernel.linux.watch import Armed, OomWatch

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


def _ctl(cg: LinuxCgroup) -> dict[str, int]:
    return cf.parse_flat_keyed(cg.read(cf.V1_OOM_CONTROL))


class V1OomWatch(OomWatch):
    """Arms v1 memcgs with oom_kill_disable + eventfd and dispatches their OOMs."""

    def __init__(self, kernel: LinuxKernel) -> None:
        super().__init__(kernel)
        self._pending: set[int] = set()
        self._dispatch_timer: Timer | None = None
        self._kill_counts: dict[int, int] = {}

    def arm(self, cg: LinuxCgroup) -> None:
        k = self.k
        if cg.id in self.armed or k.is_hierarchy_root(cg):
            return  # the root memcg cannot have oom_kill_disable (EINVAL)
        a = Armed(cg)
        ctl_path = cg.file(cf.V1_OOM_CONTROL)
        # A handler's forked child must not keep the memcg's oom_control (forkguard).
        a.ctl_fd = forkguard.hold(fsio.open_fd(ctl_path, os.O_RDONLY))
        a.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.armed[cg.id] = a
        # Registering while the memcg is under OOM signals at once, so nothing is missed.
        cg.write(cf.V1_EVENT_CONTROL, f"{a.efd} {a.ctl_fd}")
        k.loop.add_fd(a.efd, select.EPOLLIN, functools.partial(self._on_event, cg.id))
        ctl = cf.parse_flat_keyed(fsio.pread_text(a.ctl_fd, ctl_path))
        self._kill_counts[cg.id] = ctl.get("oom_kill", 0)
        if ctl.get("oom_kill_disable", 0) == 0:
            k.journal.record(ctl_path, "0", cg.id)  # JournalError: nothing was disabled
            fsio.write_text(ctl_path, "1")
        elif self._inherited_disable(cg):
            # A memcg made below one we armed inherits oom_kill_disable 1 from it (v1
            # copies the parent's setting at mkdir): ours to undo, so journal it too.
            try:
                k.journal.record(ctl_path, "0", cg.id)
            except JournalError:
                fsio.write_text(ctl_path, "0")  # unjournaled: give it to the kernel now
                raise

    def _inherited_disable(self, cg: LinuxCgroup) -> bool:
        parent = cg.parent
        if not isinstance(parent, LinuxCgroup) or parent.id not in self.armed:
            return False
        return self.k.journal.original(parent.file(cf.V1_OOM_CONTROL)) == "0"

    # -- an OOM --------------------------------------------------------------------------
    def _on_event(self, cg_id: int, _mask: int) -> None:
        a = self.armed.get(cg_id)
        if a is None:
            return
        try:
            os.eventfd_read(a.efd)
        except OSError:
            pass
        if not self._pending:
            self.k.trace_stage("oom_notify")
        self._pending.add(cg_id)
        if self._dispatch_timer is None:
            # Every memcg of the OOMing subtree is signalled; collect the whole batch.
            self._dispatch_timer = self.k.loop.call_later(0.0, self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_timer = None
        pending, self._pending = self._pending, set()
        domains: dict[int, LinuxCgroup] = {}
        kernel_side = False
        armed = [self.armed[i] for i in pending if i in self.armed]
        # Shallowest first: a memcg inside a domain already found is part of that OOM.
        armed.sort(key=lambda a: a.cg.path.count("/"))
        for a in armed:
            if any(a.cg.path.startswith(d.path.rstrip("/") + "/") for d in domains.values()):
                continue
            try:
                top = self.oom_domain(a.cg)
            except CgroupGone:
                continue
            if top is None:
                kernel_side = True
                self._rearm_if_released(a)
            else:
                domains[top.id] = top
        if kernel_side or not self.k.reads_kmsg:
            self.k.loop.call_later(0.1, self.count_kernel_kills)
        for top in domains.values():
            self._handle(top)

    def oom_domain(self, cg: LinuxCgroup) -> LinuxCgroup | None:
        """The memcg whose limit was hit (see :func:`.decisions.v1_oom_domain`). None: not
        ours to handle (over already, above our root, or the kernel killer is acting)."""
        chain: list[LinuxCgroup] = [cg]
        marks: list[bool] = [bool(_ctl(cg).get("under_oom", 0))]
        if marks[0]:
            parent = cg.parent
            while parent is not None and not self.k.is_hierarchy_root(parent):
                try:
                    marked = bool(_ctl(parent).get("under_oom", 0))
                except CgroupGone:
                    break
                chain.append(parent)
                marks.append(marked)
                if not marked:
                    break
                parent = parent.parent
        index = v1_oom_domain(marks)
        if index is None:
            return None
        top = chain[index]
        if top.path == "/" and self.k.prefix:
            # Our root is a subtree: if its real parent is under OOM too, the OOM is above
            # us and not ours (the kernel's, or another runtime's).
            parent_ctl = os.path.join(os.path.dirname(top.dir), cf.V1_OOM_CONTROL)
            try:
                if cf.parse_flat_keyed(fsio.read_text(parent_ctl)).get("under_oom", 0):
                    return None
            except OomkitError:
                pass
        a = self.armed.get(top.id)
        if a is None or a.handed_over_at is not None:
            return None
        return top

    def _handle(self, top: LinuxCgroup) -> None:
        k = self.k
        a = self.armed.get(top.id)
        if a is None or a.handed_over_at is not None:
            return
        now = k.clock.now()
        if a.oom_since is None:
            a.oom_since = now
        if now - a.oom_since > k.max_stall_s:
            # Handlers claimed progress but the memcg is still stuck: the kernel decides.
            self.hand_over(a, "stuck for longer than max_stall_s")
            return
        if k.killer.pending(top.path):
            k.loop.call_later(0.01, lambda: self._recheck(top.id, a.dispatches))
            return
        if self._stale(top):
            # The sleepers were woken by an uncharge (a victim exited) and have not retried
            # yet: their retry succeeds, or fails and signals a new OOM. No kill meanwhile.
            k.trace_stage("oom_stale")
            k.loop.call_later(k.recheck_s, lambda: self._recheck(top.id, a.dispatches))
            return
        hooks = k.hooks
        if hooks is None:
            self.hand_over(a, "no runtime")
            return
        a.dispatches += 1
        self.oom_counts[top.id] = self.oom_counts.get(top.id, 0) + 1
        request = OomRequest(
            memcg=top,
            order=0,
            constraint=Constraint.MEMCG,
            constraint_text=None,
            totalpages=k.oom_totalpages(top),
            since=a.oom_since,
        )
        k.oom_entered()
        try:
            rc = hooks.oom(request)
        except Exception:
            rc = 0
            if a.handed_over_at is None:
                self.hand_over(a, "the runtime failed")
        delay = 0.01 if rc == -errno.EBUSY else k.recheck_s
        dispatches = a.dispatches
        k.loop.call_later(delay, lambda: self._recheck(top.id, dispatches))

    @staticmethod
    def _stale(top: LinuxCgroup) -> bool:
        """``under_oom`` says 1 but the domain has room below its limits
        (:func:`.decisions.v1_oom_stale`). Unreadable: not stale (the handlers decide)."""
        try:
            usage = int(top.read(cf.V1_USAGE))
            limit = cf.parse_limit_v1(top.read(cf.V1_LIMIT))
            memsw_usage = memsw_limit = None
            if fsio.exists(top.file(cf.V1_MEMSW_LIMIT)):
                memsw_usage = int(top.read(cf.V1_MEMSW_USAGE))
                memsw_limit = cf.parse_limit_v1(top.read(cf.V1_MEMSW_LIMIT))
        except (OomkitError, ValueError):
            return False
        return v1_oom_stale(usage, limit, memsw_usage, memsw_limit)

    def _recheck(self, cg_id: int, dispatches: int) -> None:
        """Still under OOM and no new notification since: ask again (or hand over)."""
        a = self.armed.get(cg_id)
        if a is None or a.handed_over_at is not None:
            return
        try:
            under = _ctl(a.cg).get("under_oom", 0)
        except CgroupGone:
            return
        if not under:
            a.oom_since = None
            self._rearm_if_released(a)
            return
        if a.dispatches == dispatches:
            self._handle(a.cg)

    def _rearm_if_released(self, a: Armed) -> None:
        """While this process was stopped or its loop blocked, the watchdog may have handed
        ``a`` to the kernel (``oom_kill_disable 0``, recorded by it). Once that OOM is over
        and the loop serves again, arm it back: else every later OOM there goes to the
        kernel killer while status still lists the memcg as watched (QA G13)."""
        if a.handed_over_at is not None:
            return  # our own hand-over: check_handover re-arms it
        try:
            ctl = _ctl(a.cg)
        except CgroupGone:
            return
        if ctl.get("oom_kill_disable", 1) == 0 and not ctl.get("under_oom", 0):
            self.rearm(a)

    # -- the hand-over -------------------------------------------------------------------
    def _release(self, a: Armed, why: str) -> str:
        # Wakes the sleeping chargers (memcg1_oom_recover); their retry meets the killer.
        a.cg.write(cf.V1_OOM_CONTROL, "0")
        return f"oom_kill_disable 0 on {a.cg.path}: the kernel OOM killer acts ({why})"

    def _oom_over(self, a: Armed, elapsed: float) -> bool:
        over = _ctl(a.cg).get("under_oom", 0) == 0
        kills = a.cg.memory_events("oom_kill")
        return over and (kills > a.kills_at_handover or elapsed > 1.0)

    def _after_handover(self) -> None:
        self.count_kernel_kills()

    def _rearm(self, a: Armed) -> None:
        ctl_path = a.cg.file(cf.V1_OOM_CONTROL)
        self.k.journal.record(ctl_path, "0", a.cg.id)
        fsio.write_text(ctl_path, "1")

    def count_kernel_kills(self) -> None:
        """Without /dev/kmsg: kernel kills seen as oom_kill counters that went up."""
        k = self.k
        if k.reads_kmsg:
            return
        for cg_id, a in list(self.armed.items()):
            try:
                now = _ctl(a.cg).get("oom_kill", 0)
            except CgroupGone:
                continue
            before = self._kill_counts.get(cg_id, now)
            self._kill_counts[cg_id] = now
            if now > before:
                k.report_kernel_oom(KernelOom(a.cg.path, (), now - before,
                                              "memory.oom_control"))
