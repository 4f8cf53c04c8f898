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
from oomkit.kernel.psi_math import PsiAverager, rtpoll_period_ns
from oomkit.kernel.psi_trigger import PsiTriggerState, validate_trigger


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
    # The stall total the last evaluation saw: while it has not changed and no event is
    # pending, an evaluation would change nothing (PsiTriggerState.update returns early).
    seen_total: int = field(repr=False, default=-1)
    totals: list[int] = field(repr=False, default_factory=list)  # [some_ns, full_ns]
    period_ns: int = field(repr=False, default=1)  # evaluated this often
    checked_ns: int = field(repr=False, default=0)  # evaluations are accounted up to here
    # Created with CAP_SYS_RESOURCE: psimon evaluates it every window/10. Otherwise the
    # averaging work does, once per PSI period, just before it updates the averages.
    privileged: bool = field(repr=False, default=True)


class GroupPsi:
    """The PSI state of one cgroup (or of the system, for the root)."""

    __slots__ = ("_avg", "_avgs", "_io", "_mem", "_tick_ns", "_totals", "triggers")

    def __init__(self, now_ns: int, tick_ns: int = 1) -> None:
        # [resource] -> [some_ns, full_ns]
        self._totals: dict[Resource, list[int]] = {r: [0, 0] for r in Resource}
        self._avg: dict[Resource, PsiAverager] = {r: PsiAverager(now_ns) for r in Resource}
        # The same, without the enum hashing, for the per-tick paths. CPU is left out: the
        # simulator has no CPU stall, so its averages stay zero whenever they are updated
        # (pressure() brings them up to date when read).
        self._avgs = tuple((self._avg[r], self._totals[r]) for r in (Resource.MEMORY,
                                                                     Resource.IO))
        self._mem = self._totals[Resource.MEMORY]
        self._io = self._totals[Resource.IO]
        self._tick_ns = tick_ns  # the simulator's clock moves in these steps
        self.triggers: list[SimPsiTrigger] = []

    def add(self, resource: Resource, some_ns: int, full_ns: int) -> None:
        tot = self._totals[resource]
        tot[0] += some_ns
        tot[1] += full_ns

    def add_memory_io(self, some_ns: int, full_ns: int, io_some_ns: int, io_full_ns: int
                      ) -> None:
        """One tick's memory and IO stall (the simulator's per-tick call)."""
        mem, io = self._mem, self._io
        mem[0] += some_ns
        mem[1] += full_ns
        io[0] += io_some_ns
        io[1] += io_full_ns

    def total_ns(self, resource: Resource, full: bool) -> int:
        return self._totals[resource][1 if full else 0]

    def next_due_ns(self) -> int:
        """When tick() next has something to do: an averaging period ends, or a trigger
        with unseen stall or a pending event is due for evaluation. Before that, tick()
        changes nothing (see catch_up for the triggers left out)."""
        due = self._avgs[0][0].avg_next_update
        for trig in self.triggers:
            if trig.active and trig.privileged and trig.next_eval_ns < due and (
                    trig.totals[trig.full] != trig.seen_total or trig.state.pending_event):
                due = trig.next_eval_ns
        return due

    def _ceil_tick(self, t: int) -> int:
        return -(-t // self._tick_ns) * self._tick_ns

    def catch_up(self, trig: SimPsiTrigger, now_ns: int) -> None:
        """Account the evaluations skipped while the trigger had nothing to evaluate.

        The simulator evaluates a trigger at the first tick end at or after next_eval_ns,
        then schedules the next evaluation a poll period later. An evaluation with no new
        stall and no pending event changes nothing but that schedule, so the simulator
        skips it and, when the trigger matters again, moves the schedule to where those
        evaluations (at the tick ends after checked_ns and before now_ns) would have
        left it.
        """
        tick = self._tick_ns
        at = max(self._ceil_tick(trig.next_eval_ns), trig.checked_ns + tick)
        if at >= now_ns:
            return
        period = trig.period_ns
        nx = at + period  # where the skipped evaluation at `at` put the next one
        if period % tick == 0:
            if nx < now_ns:  # on the grid at + k * period from here on
                nx += -(-(now_ns - nx) // period) * period
        else:
            at = self._ceil_tick(nx)
            while at < now_ns:
                nx = at + period
                at = self._ceil_tick(nx)
        trig.next_eval_ns = nx
        trig.checked_ns = now_ns - tick

    def skip_to(self, last_ns: int, landing_ns: int) -> None:
        """The clock jumps: the last tick ended at last_ns, and the next one starts at
        landing_ns, with no tick (and so no evaluation) in between."""
        tick = self._tick_ns
        for trig in self.triggers:
            if trig.active and trig.privileged:
                self.catch_up(trig, last_ns + 1)
                if trig.next_eval_ns < landing_ns + tick:
                    trig.next_eval_ns = landing_ns + tick
                trig.checked_ns = landing_ns

    def tick(self, now_ns: int) -> list[SimPsiTrigger]:
        """Update averages (every 2 s) and evaluate triggers; returns those that fired."""
        fired: list[SimPsiTrigger] = []
        if now_ns >= self._avgs[0][0].avg_next_update:
            for trig in self.triggers:
                # Unprivileged triggers: psi_avgs_work() runs update_triggers(PSI_AVGS)
                # right before update_averages(), comparing with avg_total.
                if trig.active and not trig.privileged:
                    avg = self._avg[trig.resource]
                    base = avg.avg_total_full_ns if trig.full else avg.avg_total_some_ns
                    if trig.state.update(now_ns, trig.totals[trig.full], baseline_ns=base):
                        fired.append(trig)
            # Between periods PsiAverager.tick would only note the totals, which it is
            # given again when the period ends: skipping those calls changes nothing.
            for avg, tot in self._avgs:
                avg.tick(now_ns, tot[0], tot[1])
        if not self.triggers:
            return fired
        for trig in self.triggers:
            # Privileged triggers are evaluated by psimon every window/10 (rtpoll).
            if not trig.active or not trig.privileged:
                continue
            if trig.next_eval_ns < now_ns:
                self.catch_up(trig, now_ns)
            trig.checked_ns = now_ns
            if now_ns < trig.next_eval_ns:
                continue
            trig.next_eval_ns = now_ns + trig.period_ns
            total = trig.totals[trig.full]
            if total == trig.seen_total and not trig.state.pending_event:
                continue  # no new stall, nothing pending: update() would do nothing
            trig.seen_total = total
            if trig.state.update(now_ns, total):
                fired.append(trig)
        return fired

    def pressure(self, resource: Resource, now_ns: int | None = None) -> Pressure:
        """What reading the pressure file shows. With now_ns, the averages are first
        brought up to date as psi_show() does (an idle group's averages decay)."""
        if now_ns is not None:
            for avg, tot in self._avgs:
                avg.tick(now_ns, tot[0], tot[1])
            if resource is Resource.CPU:
                cpu = self._totals[Resource.CPU]
                self._avg[Resource.CPU].tick(now_ns, cpu[0], cpu[1])
        a = self._avg[resource].averages()
        tot = self._totals[resource]
        return Pressure(
            PressureLine(a.some.avg10, a.some.avg60, a.some.avg300, tot[0] // 1000),
            PressureLine(a.full.avg10, a.full.avg60, a.full.avg300, tot[1] // 1000),
        )

    def create_trigger(self, cgroup_id: int, resource: Resource, threshold_us: int,
                       window_us: int, full: bool, now_ns: int, privileged: bool = True
                       ) -> SimPsiTrigger:
        try:
            validate_trigger(threshold_us, window_us, privileged=privileged)
        except ValueError as exc:
            raise KernelError(f"invalid PSI trigger: {exc}", errno.EINVAL) from None
        state = PsiTriggerState(threshold_us * 1000, window_us * 1000, now_ns,
                                self.total_ns(resource, full))
        trig = SimPsiTrigger(cgroup_id, resource, full, threshold_us, window_us, state,
                             totals=self._totals[resource],
                             period_ns=rtpoll_period_ns(window_us * 1000),
                             checked_ns=now_ns, privileged=privileged)
        self.triggers.append(trig)
        return trig
