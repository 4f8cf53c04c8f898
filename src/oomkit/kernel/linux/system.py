"""The system-wide watch: a PSI trigger on /proc/pressure/memory, then MemAvailable.

Pressure says "the machine is reclaiming"; MemAvailable says how close the end is
(:func:`.decisions.system_short`). A trigger fires at most once per window and may fire
while there is still room, so after an event MemAvailable is sampled every
``SYSTEM_SAMPLE_S`` for ``SYSTEM_WATCH_S`` (renewed by each event): polling only while
the machine is under pressure. The kernel killer is never disabled system-wide (the root
memcg cannot be), so the fallback there is the kernel as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from oomkit.kernel.base import Constraint, OomRequest, Resource
from oomkit.kernel.linux.decisions import system_short
from oomkit.kernel.linux.loop import Timer
from oomkit.kernel.linux.psi import LivePsiTrigger

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel

# After a system-wide pressure event, MemAvailable is sampled this often, for this long.
SYSTEM_SAMPLE_S: Final = 0.1
SYSTEM_WATCH_S: Final = 10.0


class SystemWatch:
    """Declares system-wide OOMs (memcg None, Constraint.NONE) to the runtime."""

    def __init__(self, kernel: LinuxKernel) -> None:
        self.k = kernel
        self.trigger: LivePsiTrigger | None = None
        self._watch_until = 0.0  # MemAvailable is sampled until then
        self._timer: Timer | None = None

    def arm(self) -> None:
        if self.trigger is not None:
            return
        threshold, window = self.k.system_psi
        self.trigger = self.k.psi_trigger_create(0, Resource.MEMORY, threshold, window, False)
        self.trigger.on_event = self._on_pressure

    def disarm(self) -> None:
        if self.trigger is not None:
            self.k.psi_trigger_destroy(self.trigger)
            self.trigger = None

    def _on_pressure(self, _trigger: LivePsiTrigger) -> None:
        self._watch_until = self.k.clock.now() + SYSTEM_WATCH_S
        if self._timer is None:
            self.check()

    def check(self) -> None:
        """One sample: an OOM for the runtime if the system is short (and no victim of
        ours is still exiting: pressure lags its exit)."""
        k = self.k
        self._timer = None
        if self.trigger is None:
            return  # unwatched meanwhile
        if not k.killer.pending("/") and self.short():
            hooks = k.hooks
            if hooks is not None:
                hooks.oom(
                    OomRequest(
                        memcg=None,
                        order=0,
                        constraint=Constraint.NONE,
                        constraint_text=None,
                        totalpages=k.oom_totalpages(None),
                    )
                )
        if k.clock.now() < self._watch_until:
            self._timer = k.loop.call_later(SYSTEM_SAMPLE_S, self.check)

    def short(self) -> bool:
        return system_short(self.k.procfs.meminfo(), self.k.system_min_available)
