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
    RATE_WINDOW_S,
    MemSample,
    SystemThresholds,
    WatchState,
    parse_sample,
)
from oomkit.kernel.linux.psi import LivePsiTrigger

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel

__all__ = ["RATE_WINDOW_S", "SystemWatch"]


class SystemWatch:
    """Declares system-wide OOMs (memcg None, Constraint.NONE) to the runtime."""

    def __init__(self, kernel: LinuxKernel) -> None:
        self.k = kernel
        self.trigger: LivePsiTrigger | None = None
        self.armed = False
        self._timer: Timer | None = None
        self._fd = -1
        # The decisions (memwatch.WatchState), shared with the simulator's watch.
        self.state = WatchState((kernel.system_min_available, kernel.system_min_swap_free,
                                 kernel.system_lead_s, kernel.system_max_fill_rate),
                                kernel.recheck_s)

    @property
    def samples(self) -> int:
        return self.state.samples

    @property
    def last(self) -> MemSample | None:
        return self.state.last

    @property
    def rate(self) -> float:
        return self.state.rate

    @property
    def interval(self) -> float:
        return self.state.interval

    @property
    def reaction_s(self) -> float:
        return self.state.reaction_s

    @property
    def reactions(self) -> list[float]:
        return self.state.reactions

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
        self.state.reset()

    def kernel_killed(self) -> None:
        """The kernel's killer acted system-wide: no OOM of ours for ``recheck_s``, as for
        a victim of our own (MemAvailable lags the victim's exit)."""
        self.state.kernel_killed(self.k.clock.now())

    def _on_pressure(self, _trigger: LivePsiTrigger) -> None:
        self.check()  # the second signal: look now instead of at the next tick

    def thresholds(self, sample: MemSample) -> SystemThresholds:
        """The thresholds in bytes for this machine (:meth:`.WatchState.thresholds`)."""
        return self.state.thresholds(sample)

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
        st = self.state
        if st.look(s, k.killer.pending("/")):
            before = k.killer.last_kill_at
            self._declare(st.why(s))
            # The fill goes on until the SIGKILL (the event log and the incident
            # written after it do not count): that is the lead the next one needs.
            st.reacted(s.at, before, k.killer.last_kill_at)
        if self.armed:  # a handler may have unwatched meanwhile
            interval = st.next_look(s)
            # A look may come sooner (never later): up to half the interval early when
            # the loop wakes anyway (the heartbeat), instead of a wake-up of its own.
            self._timer = k.loop.call_later(interval, self.check, early=interval / 2)

    def _declare(self, why: str) -> None:
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
                constraint_text=why,
                totalpages=k.oom_totalpages(None),
            )
        )

    def short(self) -> bool:
        """Short of memory now (one fresh look, no OOM declared)."""
        s = self.sample() if self._fd >= 0 else MemSample.of(
            self.k.clock.now(), self.k.procfs.meminfo()
        )  # fmt: skip
        return self.state.short(s)
