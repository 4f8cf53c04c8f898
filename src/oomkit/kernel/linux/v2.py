"""cgroup v2: OOMs reach the handlers through a guard band below ``memory.max``.

v2 cannot disable the kernel killer per memcg. Instead ``memory.high`` is set a margin
below ``memory.max`` (the band, :func:`.band.band_margin`: a share of ``memory.max``, at
least 4 MiB, and wide enough for the allocation rate measured in that cgroup: growth
between two looks in the band, or twice the band after an escape to the kernel killer): the kernel
throttles and reclaims there (``mem_cgroup_handle_over_high``) rather than killing. When
``memory.events`` "high" rises (the kernel calls ``cgroup_file_notify``; inotify wakes
us), the cgroup is looked at at once: usage, what it could give back (clean page cache;
anon only where it has swap: ``memory.stat``, ``memory.swap.*``) and its "full" stall.
If reclaim cannot get usage out of the band it is an OOM now, for the handlers; if it
can, we look again while it shows progress, at most ``guard_stuck_s``
(:func:`.band.band_verdict`). The hand-over restores the user's ``memory.high``, so the
kernel killer acts at ``memory.max``; the band comes back once usage is below it.
"""

from __future__ import annotations

import dataclasses
import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomkit.errors import CgroupGone
from oomkit.kernel.base import Constraint, KernelOom, OomRequest
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import fsio
from oomkit.kernel.linux.band import (
    BandLook,
    BandPolicy,
    Verdict,
    band_margin,
    band_verdict,
    guard_for,
    reclaimable,
)
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.journal import JournalError, warn
from oomkit.kernel.linux.loop import Timer
from oomkit.kernel.linux.memwatch import parse_sample
from oomkit.kernel.linux.watch import Armed, OomWatch

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


#: The time a decision and a kill take, which the band must absorb at the measured rate.
REACTION_S = 0.05
#: A measured allocation rate halves in this long (the band narrows back slowly).
RATE_HALF_LIFE_S = 60.0


@dataclass(eq=False, slots=True)
class BandState:
    """One armed cgroup's band: the looks of the OOM in progress and the measured rate."""

    first: BandLook | None = None
    prev: BandLook | None = None
    timer: Timer | None = None
    rate: float = 0.0  # bytes/s: the fastest allocation seen in the band (decaying)
    rate_at: float = 0.0


class V2GuardBand(OomWatch):
    """Arms v2 memcgs with a guard band and watches their memory.events."""

    def __init__(self, kernel: LinuxKernel) -> None:
        super().__init__(kernel)

    def arm(self, cg: LinuxCgroup) -> None:
        if cg.id in self.armed or (cg.path == "/" and not fsio.exists(cg.file(cf.MEMORY_MAX))):
            return
        tree = self.k.tree
        a = Armed(cg)
        a.band = BandState()
        self.armed[cg.id] = a
        a.last_events = cf.parse_flat_keyed(cg.read(cf.MEMORY_EVENTS))
        a.events_wd = tree.watch_file(cg.file(cf.MEMORY_EVENTS), lambda: self._on_events(a))
        a.limits_wds = (
            tree.watch_file(cg.file(cf.MEMORY_MAX), lambda: self._on_limits(a)),
            tree.watch_file(cg.file(cf.MEMORY_HIGH), lambda: self._on_limits(a)),
        )
        self.set_guard(a)

    def guard_for(self, memory_max: int, rate: float = 0.0) -> int:
        """memory.high for this memory.max: the configured margin, at least
        ``guard_min_bytes``, widened for ``rate`` (bytes/s) of allocation."""
        k = self.k
        m = k.guard_margin
        wanted = m(memory_max) if callable(m) else int(memory_max * m)
        margin = band_margin(
            memory_max, nbytes=wanted, rate=rate, reaction_s=REACTION_S, floor=k.guard_min_bytes
        )
        guard = guard_for(memory_max, margin, None)
        assert guard is not None
        return guard

    def _rate(self, a: Armed) -> float:
        st: BandState = a.band
        decay: float = 0.5 ** (max(0.0, self.k.clock.now() - st.rate_at) / RATE_HALF_LIFE_S)
        return st.rate * decay

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
        guard = self.guard_for(memory_max, self._rate(a))
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
            rewritten = a.guard is not None and high != a.guard
            if rewritten:
                # Someone else wrote memory.high (systemd does on daemon-reload,
                # set-property and restarts: MemoryHigh=, "max" by default): that is the
                # user's value from now on, and what is restored when we stop.
                self.k.journal.update_original(
                    a.cg.file(cf.MEMORY_HIGH), cf.format_limit_v2(high)
                )
            self.set_guard(a)
            if rewritten:
                warn(f"{a.cg.path}: memory.high was rewritten to {cf.format_limit_v2(high)} "
                     "behind our back; kept as the cgroup's own value, "
                     + (f"the guard band is back at {a.guard}" if a.guard is not None
                        else "no guard band: it is at or below where the band would be"))
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
        st: BandState = a.band
        if kills > 0 and a.guard is not None and a.cg.memory_max is not None:
            # An escape: the kernel killed at memory.max while the band was up, so the
            # allocation outran the decision. Twice the band from now on (a rate that
            # would fill it in half a reaction time), narrowing back as the rate decays.
            margin = a.cg.memory_max - a.guard
            st.rate, st.rate_at = max(self._rate(a), 2 * margin / REACTION_S), k.clock.now()
            self.set_guard(a)
        if a.guard is None or events.get("high", 0) <= before.get("high", 0):
            return
        if st.first is None:
            k.trace_stage("oom_notify")
        self.check_band(a)

    def look(self, a: Armed, *, stall: bool = True) -> BandLook:
        """Read what the band decision needs: usage, what could be given back and (with
        ``stall``) the "full" stall total; the "high" count is the last one seen. Only
        the files the decision reads: this is the path from notification to kill."""
        cg = a.cg
        assert a.guard is not None
        stat = cg.stat()
        swap_max = cg.swap_max
        swap_current = 0
        swap_free = 0
        if swap_max != 0:
            swap_free = parse_sample(0.0, self.k.procfs.read("meminfo").encode()).swap_free
            if swap_free > 0:
                try:
                    swap_current = int(cg.read(cf.MEMORY_SWAP_CURRENT))
                except (OSError, ValueError):
                    swap_current = 0
        give_back = reclaimable(
            stat, swap_max=swap_max, swap_current=swap_current, system_swap_free=swap_free
        )
        return BandLook(
            at=self.k.clock.now(),
            usage=cg.usage(),
            guard=a.guard,
            high_events=a.last_events.get("high", 0),
            give_back=give_back,
            full_us=cg.pressure().full.total if stall else 0,
        )

    def check_band(self, a: Armed) -> None:
        """Look at a cgroup in its band and decide: out of it, wait, or an OOM now."""
        k = self.k
        if self.armed.get(a.cg.id) is not a or a.handed_over_at is not None:
            return
        st: BandState = a.band
        if st.timer is not None:
            st.timer.cancelled = True
            st.timer = None
        if a.guard is None:
            st.first = st.prev = None
            return
        try:
            # The "full" stall only matters from the second look on (progress between two).
            cur = self.look(a, stall=st.first is not None)
        except CgroupGone:
            return
        prev = st.prev or st.first
        if prev is not None and cur.at > prev.at:
            # Still growing in the band between two looks: the rate it allocates at.
            seen = max(0, cur.usage - prev.usage) / (cur.at - prev.at)
            if seen > self._rate(a):
                st.rate, st.rate_at = seen, cur.at
        policy = BandPolicy(max_wait_s=k.guard_stuck_s)
        verdict = band_verdict(st.first, st.prev, cur, st.rate, policy)
        if verdict is Verdict.CLEAR:
            st.first = st.prev = None
            a.oom_since = None
            return
        if verdict is Verdict.WAIT:
            if st.first is None:
                try:
                    cur = dataclasses.replace(cur, full_us=a.cg.pressure().full.total)
                except CgroupGone:
                    return
                st.first = cur
            st.prev = cur
            st.timer = k.loop.call_later(policy.recheck_s, lambda: self.check_band(a))
            return
        if k.killer.pending(a.cg.path):
            # Our victim is still exiting (its memory not yet uncharged): no new OOM;
            # look again once it has had a moment.
            st.timer = k.loop.call_later(policy.recheck_s, lambda: self.check_band(a))
            return
        st.first = st.prev = None
        now = k.clock.now()
        if a.oom_since is None:
            a.oom_since = now
        hooks = k.hooks
        if hooks is None or now - a.oom_since > k.max_stall_s:
            # No runtime, or handlers claimed progress while the cgroup stayed stuck.
            why = "no runtime" if hooks is None else "stuck for longer than max_stall_s"
            self.hand_over(a, why)
            return
        k.trace_stage("band_oom")
        a.dispatches += 1
        request = OomRequest(
            memcg=a.cg,
            order=0,
            constraint=Constraint.MEMCG,
            constraint_text=None,
            totalpages=k.oom_totalpages(a.cg),
        )
        k.oom_entered()
        if hooks.oom(request) == -errno.EBUSY:
            st.timer = k.loop.call_later(0.01, lambda: self.check_band(a))
        else:
            # Look once more when the victim has had time to go: out of the band, the OOM
            # is over (oom_since cleared); no "high" event may come to tell us so, and a
            # stale oom_since would hand the next OOM, seconds later, to the kernel.
            st.timer = k.loop.call_later(k.recheck_s, lambda: self.check_band(a))

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
        st: BandState = a.band
        st.first = st.prev = None
        self.set_guard(a)
