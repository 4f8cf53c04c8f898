"""The closing summary of a simulated run, built from the simulator's process records.

The simulated kernel keeps the facts (who ran, stalled, worked, was killed and when); the
report event is built here, outside kernel/, so the kernel never reaches up to events.
"""

from __future__ import annotations

from oomkit.events import ProcessSummary, SummaryEvent
from oomkit.kernel.base import Resource
from oomkit.kernel.sim.kernel import SimKernel
from oomkit.kernel.sim.process import EXITED, EXITING, NEW

NS = 1_000_000_000


def summarize(kernel: SimKernel) -> SummaryEvent:
    """Every process (started ones by PID, then those never started), the OOMs and kills,
    and the machine's memory "full" stall in seconds, at the kernel's current time."""
    kernel.settle()
    procs: list[ProcessSummary] = []
    for p in kernel.processes():
        status = {NEW: "not started", EXITING: "exiting"}.get(p.state, p.state)
        if p.state == EXITED:
            status = p.exit_status
        # One that never started has no cgroup of its own yet: the scenario's is shown.
        cgroup = p.cgroup.path if p.pid else (p.spawned_into or p.cgroup.path)
        procs.append(ProcessSummary(
            p.name, p.pid, cgroup, status,
            None if p.killed_at is None else p.killed_at / NS,
            p.stall_ns / NS, p.work_ns / NS, p.work_lost_ns / NS, p.peak_rss,
            p.io_stall_ns / NS))
    assert kernel.root.psi is not None
    full = kernel.root.psi.total_ns(Resource.MEMORY, True) / NS
    now = kernel.clock.now()
    return SummaryEvent(now, now, kernel.ooms, kernel.kills, full, tuple(procs))
