"""What the OOM watchers share: the armed memcgs, the hand-over to the kernel killer, and
re-arming once the kernel's OOM is over.

A memcg is *armed* when its OOMs reach the handlers before the kernel killer. How differs
per version (:class:`~oomkit.kernel.linux.v1.V1OomWatch`,
:class:`~oomkit.kernel.linux.v2.V2GuardBand`); one of them is chosen when the kernel is
constructed. The *hand-over* is the fallback: the kernel killer is let act on that memcg
(it is never disabled anywhere else), and the memcg is armed again when the OOM is over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oomkit import forkguard
from oomkit.errors import CgroupGone
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.journal import JournalError, warn
from oomkit.kernel.linux.loop import close_fd

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


@dataclass(eq=False, slots=True)
class Armed:
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
    band: Any = None  # v2: the band's looks and measured rate (.v2.BandState)
    # both: an OOM in progress
    oom_since: float | None = None
    dispatches: int = 0
    handed_over_at: float | None = None
    kills_at_handover: int = 0


class OomWatch:
    """The armed memcgs of one kernel and their hand-over; subclasses arm per version."""

    #: The settings a watcher may change (journaled before), per memcg.
    SETTINGS: tuple[str, ...] = (cf.V1_OOM_CONTROL, cf.MEMORY_HIGH)

    def __init__(self, kernel: LinuxKernel) -> None:
        self.k = kernel
        self.armed: dict[int, Armed] = {}
        #: OOMs this backend saw per memcg id (v1 memory.events "oom", which v1 lacks).
        self.oom_counts: dict[int, int] = {}

    # -- arming ----------------------------------------------------------------------------
    def arm(self, cg: LinuxCgroup) -> None:
        raise NotImplementedError

    def arm_safely(self, cg: LinuxCgroup) -> None:
        """Arm ``cg``; a cgroup that vanished meanwhile is forgotten."""
        try:
            self.arm(cg)
        except CgroupGone:
            a = self.armed.pop(cg.id, None)
            if a is not None:
                self.release_fds(a)
        except JournalError as exc:
            # Not journaled, so not disabled: its OOMs go to the kernel killer.
            a = self.armed.pop(cg.id, None)
            if a is not None:
                self.release_fds(a)
            warn(str(exc))

    def disarm(self, a: Armed) -> None:
        self.armed.pop(a.cg.id, None)
        self.release_fds(a)
        for name in self.SETTINGS:
            self.k.journal.restore(a.cg.file(name))  # gone cgroups need no restoring

    def offline(self, cg_id: int) -> None:
        """The memcg was removed: drop it, nothing to restore."""
        a = self.armed.pop(cg_id, None)
        if a is not None:
            self.release_fds(a)
            for name in self.SETTINGS:
                self.k.journal.forget(a.cg.file(name))

    def release_fds(self, a: Armed) -> None:
        loop, tree = self.k.loop, self.k.tree
        if a.efd >= 0:
            loop.del_fd(a.efd)
            close_fd(a.efd)  # closing the eventfd removes the kernel's registration
            a.efd = -1
        if a.ctl_fd >= 0:
            forkguard.release(a.ctl_fd)
            close_fd(a.ctl_fd)
            a.ctl_fd = -1
        tree.unwatch_file(a.events_wd)
        a.events_wd = -1
        for wd in a.limits_wds:
            tree.unwatch_file(wd)
        a.limits_wds = ()

    def prune(self) -> None:
        """Disarm every memcg no scope covers any more."""
        for a in list(self.armed.values()):
            if not self.k.in_scope(a.cg.path):
                self.disarm(a)

    def close(self) -> None:
        for a in list(self.armed.values()):
            self.disarm(a)

    def limits_changed(self, cg: LinuxCgroup) -> None:
        """memory.max was set through the kernel (v2 moves its band along)."""

    # -- the hand-over ---------------------------------------------------------------------
    def hand_back(self, cg_id: int) -> str | None:
        """default_oom for a memcg OOM: let the kernel killer act on an armed memcg. The
        note saying so; None if the memcg is not armed (the caller kills itself)."""
        a = self.armed.get(cg_id)
        if a is None:
            return None
        if a.handed_over_at is not None:
            return "the kernel OOM killer is acting"
        return self.hand_over(a, "no handler freed memory")

    def hand_over(self, a: Armed, why: str) -> str:
        """The fallback: let the kernel's OOM killer act on this memcg."""
        a.handed_over_at = self.k.clock.now()
        a.kills_at_handover = a.cg.memory_events("oom_kill")
        self.k.note_handover(a.cg.path)
        note = self._release(a, why)
        self.k.loop.call_later(0.05, lambda: self.check_handover(a.cg.id))
        return note

    def _release(self, a: Armed, why: str) -> str:
        """Undo what keeps the kernel killer from acting on ``a``; the note saying so."""
        raise NotImplementedError

    def check_handover(self, cg_id: int) -> None:
        """The hand-over's timer: re-arm once the OOM is over, else look again later."""
        a = self.armed.get(cg_id)
        if a is None or a.handed_over_at is None or self.handover_done(a):
            return
        elapsed = self.k.clock.now() - a.handed_over_at
        self.k.loop.call_later(
            0.05 if elapsed < 2.0 else 0.5, lambda: self.check_handover(cg_id)
        )

    def handover_done(self, a: Armed) -> bool:
        """The kernel's OOM is over (then ``a`` is armed again)."""
        assert a.handed_over_at is not None
        try:
            done = self._oom_over(a, self.k.clock.now() - a.handed_over_at)
        except CgroupGone:
            self.armed.pop(a.cg.id, None)
            self.release_fds(a)
            return True
        if done:
            self.rearm(a)
            self._after_handover()
        return done

    def _after_handover(self) -> None:
        """The kernel's OOM is over and the memcg armed again."""

    def _oom_over(self, a: Armed, elapsed: float) -> bool:
        raise NotImplementedError

    def rearm(self, a: Armed) -> None:
        a.handed_over_at = None
        a.oom_since = None
        a.band_since = None
        if not self.k.in_scope(a.cg.path):
            self.disarm(a)
            return
        try:
            self._rearm(a)
        except JournalError as exc:
            self.armed.pop(a.cg.id, None)  # left with the kernel, as the hand-over made it
            self.release_fds(a)
            warn(str(exc))

    def _rearm(self, a: Armed) -> None:
        raise NotImplementedError
