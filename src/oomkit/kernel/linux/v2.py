"""cgroup v2: OOMs reach the handlers through a guard band below ``memory.max``.

v2 cannot disable the kernel killer per memcg. Instead ``memory.high`` is set a margin
below ``memory.max`` (the band, :func:`.decisions.guard_band`): the kernel throttles and
reclaims there (``mem_cgroup_handle_over_high``) rather than killing. A cgroup stuck in
its band (usage at ``memory.high`` while ``memory.events`` "high" keeps rising for
``guard_stuck_s``, :func:`.decisions.stuck_in_band`) is an OOM there, for the handlers.
The hand-over restores the user's ``memory.high``, so the kernel killer acts at
``memory.max``; the band comes back once usage is below it. ``memory.events`` and the
limits are followed with inotify (the kernel calls ``cgroup_file_notify`` on changes).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from oomkit.errors import CgroupGone
from oomkit.kernel.base import Constraint, KernelOom, OomRequest
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import fsio
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.decisions import guard_band, stuck_in_band
from oomkit.kernel.linux.journal import JournalError, warn
from oomkit.kernel.linux.watch import Armed, OomWatch

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


class V2GuardBand(OomWatch):
    """Arms v2 memcgs with a guard band and watches their memory.events."""

    def __init__(self, kernel: LinuxKernel) -> None:
        super().__init__(kernel)

    def arm(self, cg: LinuxCgroup) -> None:
        if cg.id in self.armed or (cg.path == "/" and not fsio.exists(cg.file(cf.MEMORY_MAX))):
            return
        tree = self.k.tree
        a = Armed(cg)
        self.armed[cg.id] = a
        a.last_events = cf.parse_flat_keyed(cg.read(cf.MEMORY_EVENTS))
        a.events_wd = tree.watch_file(cg.file(cf.MEMORY_EVENTS), lambda: self._on_events(a))
        a.limits_wds = (
            tree.watch_file(cg.file(cf.MEMORY_MAX), lambda: self._on_limits(a)),
            tree.watch_file(cg.file(cf.MEMORY_HIGH), lambda: self._on_limits(a)),
        )
        self.set_guard(a)

    def guard_for(self, memory_max: int) -> int:
        k = self.k
        return guard_band(memory_max, k.guard_margin, k.guard_min_bytes)

    def set_guard(self, a: Armed) -> None:
        """Put the band in place (or take it away: no memory.max, or the user's own
        memory.high is lower than the band would be; never go above it)."""
        journal = self.k.journal
        cg = a.cg
        high_path = cg.file(cf.MEMORY_HIGH)
        memory_max = cg.memory_max
        recorded = journal.original(high_path)
        user_high = cf.parse_limit_v2(recorded) if recorded is not None else cg.memory_high
        if memory_max is None:
            a.guard = None
            journal.restore(high_path)
            return
        guard = self.guard_for(memory_max)
        if user_high is not None and user_high <= guard:
            a.guard = None
            journal.restore(high_path)
            return
        if cg.memory_high != guard:
            try:
                journal.record(high_path, cf.format_limit_v2(user_high), cg.id)
            except JournalError as exc:
                a.guard = None  # no band: memory.max and the kernel killer as they are
                warn(str(exc))
                return
            a.guard = guard
            fsio.write_text(high_path, str(guard))
        else:
            a.guard = guard

    def limits_changed(self, cg: LinuxCgroup) -> None:
        a = self.armed.get(cg.id)
        if a is not None and a.handed_over_at is None:
            self.set_guard(a)

    def _on_limits(self, a: Armed) -> None:
        """memory.max or memory.high written (by the user, or by us)."""
        if self.armed.get(a.cg.id) is not a:
            return
        if a.handed_over_at is not None:
            return  # released on purpose; the band comes back with rearm
        try:
            high = a.cg.memory_high
            if a.guard is not None and high != a.guard:
                # Someone else wrote memory.high: that is the user's value from now on.
                self.k.journal.update_original(
                    a.cg.file(cf.MEMORY_HIGH), cf.format_limit_v2(high)
                )
            self.set_guard(a)
        except CgroupGone:
            return

    def _on_events(self, a: Armed) -> None:
        k = self.k
        if self.armed.get(a.cg.id) is not a:
            return
        try:
            events = cf.parse_flat_keyed(a.cg.read(cf.MEMORY_EVENTS))
        except CgroupGone:
            return
        before, a.last_events = a.last_events, events
        kills = events.get("oom_kill", 0) - before.get("oom_kill", 0)
        if kills > 0 and not k.reads_kmsg:
            k.report_kernel_oom(KernelOom(a.cg.path, (), kills, "memory.events"))
        if a.handed_over_at is not None:
            self.handover_done(a)  # its timer keeps looking too
            return
        if a.guard is None or events.get("high", 0) <= before.get("high", 0):
            return
        if a.band_since is None:
            a.band_since = k.clock.now()
            a.band_high_count = before.get("high", 0)
            k.trace_stage("oom_notify")
            k.loop.call_later(k.guard_stuck_s, lambda: self.check_band(a))

    def check_band(self, a: Armed) -> None:
        """``guard_stuck_s`` after the band was entered: an OOM if it is stuck there."""
        k = self.k
        if self.armed.get(a.cg.id) is not a or a.handed_over_at is not None:
            return
        a.band_since = None
        if a.guard is None:
            return
        try:
            usage = a.cg.usage()
            high_count = cf.parse_flat_keyed(a.cg.read(cf.MEMORY_EVENTS)).get("high", 0)
        except CgroupGone:
            return
        if not stuck_in_band(usage, a.guard, high_count, a.band_high_count):
            a.oom_since = None
            return
        now = k.clock.now()
        if a.oom_since is None:
            a.oom_since = now
        hooks = k.hooks
        if hooks is None or now - a.oom_since > k.max_stall_s:
            # No runtime, or handlers claimed progress while the cgroup stayed stuck.
            why = "no runtime" if hooks is None else "stuck for longer than max_stall_s"
            self.hand_over(a, why)
            return
        a.dispatches += 1
        request = OomRequest(
            memcg=a.cg,
            order=0,
            constraint=Constraint.MEMCG,
            constraint_text=None,
            totalpages=k.oom_totalpages(a.cg),
        )
        if hooks.oom(request) == -errno.EBUSY:
            k.loop.call_later(0.01, lambda: self.check_band(a))

    # -- the hand-over -------------------------------------------------------------------
    def _release(self, a: Armed, why: str) -> str:
        self.k.journal.restore(a.cg.file(cf.MEMORY_HIGH))
        return (
            f"memory.high restored on {a.cg.path}: "
            f"the kernel OOM killer acts at memory.max ({why})"
        )

    def _oom_over(self, a: Armed, elapsed: float) -> bool:
        return a.guard is None or a.cg.usage() < a.guard

    def _rearm(self, a: Armed) -> None:
        self.set_guard(a)
