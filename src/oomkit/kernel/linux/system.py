"""The system-wide watch: MemAvailable (and SwapFree) on an adaptive timer, PSI second.

An anonymous leak without swap barely stalls before the kernel's OOM killer acts, so a
PSI trigger alone often fires too late or never (docs/live.md). The watch reads
/proc/meminfo (one ``pread`` of an fd kept open, four fields parsed) on a timer whose
period is the time the headroom lasts at the fastest fill the machine can reach, shorter
still when a fill is measured (:mod:`.memwatch`, earlyoom's rule): 100 ms to 5 s while
idle, down to 10 ms when a fast leak nears the threshold. A PSI trigger on
/proc/pressure/memory stays armed as the second signal: an event makes the watch look at
once. When the machine is short (:func:`.memwatch.system_short`) the runtime gets a
system-wide OOM (memcg None, Constraint.NONE); while a victim of ours is still exiting it
does not, and an OOM the handlers did not end is declared again only ``recheck_s`` later.
The kernel killer is never disabled system-wide (the root memcg cannot be), so the
fallback there is the kernel as it is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from oomkit.errors import OomkitError
from oomkit.kernel.base import Constraint, OomRequest, Resource
from oomkit.kernel.linux.loop import Timer, close_fd
from oomkit.kernel.linux.memwatch import (
    REACTION_WINDOW,
    MemSample,
    SystemThresholds,
    fill_rate,
    next_interval,
    parse_sample,
    reaction,
    system_short,
)
from oomkit.kernel.linux.psi import LivePsiTrigger

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel

#: The fill rate is measured over at least this long.
RATE_WINDOW_S = 0.1


class SystemWatch:
    """Declares system-wide OOMs (memcg None, Constraint.NONE) to the runtime."""

    def __init__(self, kernel: LinuxKernel) -> None:
        self.k = kernel
        self.trigger: LivePsiTrigger | None = None
        self.armed = False
        self._timer: Timer | None = None
        self._fd = -1
        self.last: MemSample | None = None
        self._ref: MemSample | None = None  # the sample the fill rate is measured from
        self.rate = 0.0  # bytes/s MemAvailable is falling (a decaying peak)
        self.interval = 0.0  # seconds until the next look, as last decided
        self._declared_at: float | None = None  # an OOM we declared, not yet over
        self.samples = 0  # looks taken (for benches and tests)
        # seconds the last system-wide OOMs took, from the look that declared one to the
        # SIGKILL, and what to plan for (memwatch.reaction): the lead grows to it
        self.reactions: list[float] = []
        self.reaction_s = 0.0
        self._thresholds: tuple[tuple[int, int], SystemThresholds] | None = None

    def arm(self) -> None:
        if self.armed:
            return
        self.armed = True
        self._fd = os.open(self.k.procfs.path("meminfo"), os.O_RDONLY | os.O_CLOEXEC)
        threshold, window = self.k.system_psi
        try:
            self.trigger = self.k.psi_trigger_create(0, Resource.MEMORY, threshold, window, False)
            self.trigger.on_event = self._on_pressure
        except OomkitError:
            self.trigger = None  # no PSI (psi=0): MemAvailable alone still works
        self.check()

    def disarm(self) -> None:
        self.armed = False
        if self.trigger is not None:
            self.k.psi_trigger_destroy(self.trigger)
            self.trigger = None
        if self._timer is not None:
            self._timer.cancelled = True
            self._timer = None
        if self._fd >= 0:
            close_fd(self._fd)
            self._fd = -1
        self.last = self._ref = None
        self.rate = 0.0

    def kernel_killed(self) -> None:
        """The kernel's killer acted system-wide: no OOM of ours for ``recheck_s``, as for
        a victim of our own (MemAvailable lags the victim's exit)."""
        self._declared_at = self.k.clock.now()

    def _on_pressure(self, _trigger: LivePsiTrigger) -> None:
        self.check()  # the second signal: look now instead of at the next tick

    def thresholds(self, sample: MemSample) -> SystemThresholds:
        """The thresholds in bytes for this machine (kept while MemTotal and SwapTotal
        stay: the watch wakes several times a second near the end)."""
        key = (sample.mem_total, sample.swap_total)
        if self._thresholds is not None and self._thresholds[0] == key:
            return self._thresholds[1]
        k = self.k
        t = SystemThresholds.of(
            sample,
            k.system_min_available,
            k.system_min_swap_free,
            lead_s=k.system_lead_s,
            max_fill_rate=k.system_max_fill_rate,
        )
        self._thresholds = (key, t)
        return t

    def sample(self) -> MemSample:
        return parse_sample(self.k.clock.now(), os.pread(self._fd, 8192, 0))

    def check(self) -> None:
        """One look: an OOM for the runtime if the system is short; the next look booked."""
        k = self.k
        if self._timer is not None:
            self._timer.cancelled = True
            self._timer = None
        if not self.armed:
            return  # unwatched meanwhile
        s = self.sample()
        self.samples += 1
        if self._ref is None or s.at - self._ref.at >= RATE_WINDOW_S:
            # Over RATE_WINDOW_S at least: a leak that touches 10 MiB at a time is not
            # 1 GiB/s for the 10 ms one look may span.
            self.rate = fill_rate(self._ref, s, self.rate)
            self._ref = s
        self.last = s
        t = self.thresholds(s)
        if system_short(s, t, self.rate, self.reaction_s):
            recent = self._declared_at is not None and s.at - self._declared_at < k.recheck_s
            # A victim of ours still exiting: memory comes back once it is gone, no new OOM.
            if not recent and not k.killer.pending("/"):
                self._declared_at = s.at
                before = k.killer.last_kill_at
                self._declare()
                # The fill goes on until the SIGKILL (the event log and the incident
                # written after it do not count): that is the lead the next one needs.
                killed = k.killer.last_kill_at
                if killed is not None and killed != before and killed >= s.at:
                    self.reactions = [*self.reactions[-REACTION_WINDOW + 1 :], killed - s.at]
                    self.reaction_s = reaction(self.reactions)
        else:
            self._declared_at = None
        if self.armed:  # a handler may have unwatched meanwhile
            self.interval = next_interval(s, t, self.rate, self.reaction_s)
            # A look may come sooner (never later): up to half the interval early when
            # the loop wakes anyway (the heartbeat), instead of a wake-up of its own.
            self._timer = k.loop.call_later(self.interval, self.check,
                                            early=self.interval / 2)

    def _declare(self) -> None:
        k = self.k
        hooks = k.hooks
        if hooks is None:
            return
        k.trace_stage("system_oom")
        k.oom_entered()
        hooks.oom(
            OomRequest(
                memcg=None,
                order=0,
                constraint=Constraint.NONE,
                constraint_text=None,
                totalpages=k.oom_totalpages(None),
            )
        )

    def short(self) -> bool:
        """Short of memory now (one fresh look, no OOM declared)."""
        s = self.sample() if self._fd >= 0 else MemSample.of(
            self.k.clock.now(), self.k.procfs.meminfo()
        )  # fmt: skip
        return system_short(s, self.thresholds(s), self.rate, self.reaction_s)
