"""PSI for simulated cgroups: stall totals per group, averages and triggers.

Per tick, every cgroup gets the stall time of its subtree's tasks: ``some`` is the time at
least one non-idle task was stalled, ``full`` the time all of them were. The simulator
starts every stall at the beginning of its tick, so within a tick ``some`` is the longest
stall and ``full`` the shortest one among non-idle tasks. The averages and trigger windows
run on those totals with the kernel's own arithmetic (``oomkit.kernel.psi_math``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from oomkit.errors import KernelError
from oomkit.kernel.base import Pressure, PressureLine, Resource
from oomkit.kernel.psi_math import (
    PsiAverager,
    PsiTriggerState,
    rtpoll_period_ns,
    validate_trigger,
)


@dataclass(eq=False)
class SimPsiTrigger:
    """A trigger on a simulated cgroup (the PsiTrigger protocol)."""

    cgroup_id: int
    resource: Resource
    full: bool
    threshold_us: int
    window_us: int
    state: PsiTriggerState = field(repr=False, default=None)  # type: ignore[assignment]
    active: bool = True
    next_eval_ns: int = 0


class GroupPsi:
    """The PSI state of one cgroup (or of the system, for the root)."""

    __slots__ = ("_avg", "_totals", "triggers")

    def __init__(self, now_ns: int) -> None:
        # [resource] -> [some_ns, full_ns]
        self._totals: dict[Resource, list[int]] = {r: [0, 0] for r in Resource}
        self._avg: dict[Resource, PsiAverager] = {r: PsiAverager(now_ns) for r in Resource}
        self.triggers: list[SimPsiTrigger] = []

    def add(self, resource: Resource, some_ns: int, full_ns: int) -> None:
        tot = self._totals[resource]
        tot[0] += some_ns
        tot[1] += full_ns

    def total_ns(self, resource: Resource, full: bool) -> int:
        return self._totals[resource][1 if full else 0]

    def tick(self, now_ns: int) -> list[SimPsiTrigger]:
        """Update averages (every 2 s) and evaluate triggers; returns those that fired."""
        for res, avg in self._avg.items():
            tot = self._totals[res]
            avg.tick(now_ns, tot[0], tot[1])
        fired: list[SimPsiTrigger] = []
        for trig in self.triggers:
            # Privileged triggers are evaluated by psimon every window/10 (rtpoll).
            if not trig.active or now_ns < trig.next_eval_ns:
                continue
            trig.next_eval_ns = now_ns + rtpoll_period_ns(trig.window_us * 1000)
            if trig.state.update(now_ns, self.total_ns(trig.resource, trig.full)):
                fired.append(trig)
        return fired

    def pressure(self, resource: Resource) -> Pressure:
        a = self._avg[resource].averages()
        tot = self._totals[resource]
        return Pressure(
            PressureLine(a.some.avg10, a.some.avg60, a.some.avg300, tot[0] // 1000),
            PressureLine(a.full.avg10, a.full.avg60, a.full.avg300, tot[1] // 1000),
        )

    def create_trigger(self, cgroup_id: int, resource: Resource, threshold_us: int,
                       window_us: int, full: bool, now_ns: int) -> SimPsiTrigger:
        try:
            validate_trigger(threshold_us, window_us, privileged=True)
        except ValueError as exc:
            raise KernelError(f"invalid PSI trigger: {exc}", errno.EINVAL) from None
        state = PsiTriggerState(threshold_us * 1000, window_us * 1000, now_ns,
                                self.total_ns(resource, full))
        trig = SimPsiTrigger(cgroup_id, resource, full, threshold_us, window_us, state)
        self.triggers.append(trig)
        return trig
