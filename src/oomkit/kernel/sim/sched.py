"""The simulator's scheduler: CPUs and their run queues, the tick loop over processes,
parking, and the per-CPU PSI accounting that feeds every cgroup's PSI state.

CPUs. The machine has ``machine.cpus`` CPUs. A process is placed on one when it starts:
the CPU with the fewest live processes (lowest number on a tie), as fork balancing's
find_idlest_cpu() spreads new tasks; it stays there. Processes do not share a CPU's
time: each still spends the whole tick on its program (the simplification: no CPU
contention, so no CPU pressure). What the CPUs change is PSI.

PSI, the kernel's way (kernel/sched/psi.c). A cgroup's stall states are per CPU: on a
CPU, memory "some" while at least one of the cgroup's tasks there is stalled, "full"
while every non-idle one of them is (a task running unstalled on that CPU clears it:
PSI_MEM_FULL needs nr_running == nr_memstall_running). The cgroup's stall is the mean
of its CPUs' stall weighted by each CPU's non-idle time (collect_percpu_times()); CPUs
where none of its tasks is non-idle weigh nothing. Within a tick every stall starts at
the tick's beginning, so on a CPU "some" is the longest stall and "full" the shortest;
a CPU is non-idle for the whole tick when a task of the cgroup was non-idle on it. The
kernel weighs over each aggregator's period (2 s for the averages, window/10 for
triggers); the simulator weighs each tick, which is the same while the set of non-idle
CPUs is steady and close otherwise.

Parking. A process whose work or timed sleep outlasts the tick is parked: the loop skips
it until the tick in which the step ends, and its progress is accounted in one go
(settle). A parked process cannot differ from tick to tick: a working one is non-idle
and never stalled (for PSI: "full" is zero on its CPU in its cgroups, nr_working), a
sleeping one is idle. So parking changes no result, only how many processes a tick
visits. Likewise a cgroup's PSI state is ticked only when something is due.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from oomkit.kernel.sim.memcg import SimCgroup
from oomkit.kernel.sim.process import RUNNING, SimProcess
from oomkit.kernel.sim.psi import SimPsiTrigger

RunTick = Callable[[SimProcess, int, int], int]


class Scheduler:
    """The run queues of ``ncpu`` CPUs over the kernel's process table ``procs`` and
    cgroup table ``by_id`` (both shared, owned by the kernel); ``tick_ns`` is the tick."""

    def __init__(self, ncpu: int, tick_ns: int, procs: dict[int, SimProcess],
                 by_id: dict[int, SimCgroup]) -> None:
        self.ncpu = ncpu
        self.tick_ns = tick_ns
        self.procs = procs
        self.by_id = by_id
        self.nr_on_cpu = [0] * ncpu  # live processes placed on each CPU
        # The tick loop visits only active: running processes that are not parked.
        self.active: dict[int, SimProcess] = {}
        self._order: list[int] | None = []  # active's pids in PID order (None: stale)
        self.parked: list[tuple[int, int]] = []  # heap of (wake_ns, pid)
        self.nr_parked = 0
        self._parked_now: list[SimProcess] = []
        # Per tick, per cgroup id: [cpu, memory some, memory full, IO some, IO full] in
        # ns for the one CPU where a task of the cgroup was non-idle; cpu -1 when there
        # were several, whose lists are in _multi by CPU (see add_busy).
        self._touched: dict[int, list[int]] = {}
        self._multi: dict[int, dict[int, list[int]]] = {}
        # Cgroups whose PSI state needs a tick although no task of theirs was visited:
        # a heap of (due_ns, cgroup id); see psi_phase.
        self.psi_queue: list[tuple[int, int]] = []
        self.cur_pid = 0  # the process the tick loop is running (0: none)

    # -- run queues ---------------------------------------------------------------------
    def place(self, proc: SimProcess) -> None:
        """Put a starting process on the CPU with the fewest live processes."""
        counts = self.nr_on_cpu
        cpu = counts.index(min(counts))
        proc.cpu = cpu
        counts[cpu] += 1
        self.active[proc.pid] = proc
        self._order = None

    def remove(self, proc: SimProcess, now: int) -> None:
        """The process exited at now: off its CPU and out of the loop."""
        if proc.parked:
            self.unpark(proc, now)
        self.deactivate(proc)
        self.nr_on_cpu[proc.cpu] -= 1

    def new_cgroup(self, cg: SimCgroup) -> None:
        cg.nr_working_cpu = [0] * self.ncpu

    # -- parking ------------------------------------------------------------------------
    def deactivate(self, proc: SimProcess) -> None:
        if self.active.pop(proc.pid, None) is not None:
            self._order = None

    def park(self, proc: SimProcess, end: int) -> None:
        step = proc.program[proc.pc]
        assert step.duration_ns is not None
        proc.parked = True
        proc.park_ns = end
        proc.wake_ns = end + step.duration_ns - proc.step_done
        proc.park_work = step.op == "work"
        if proc.park_work:
            # Counted in nr_working from the next tick on: this tick it was visited.
            self._parked_now.append(proc)
        heapq.heappush(self.parked, (proc.wake_ns, proc.pid))
        self.nr_parked += 1
        self.deactivate(proc)

    @staticmethod
    def _settle(proc: SimProcess, now: int) -> None:
        """Account a parked process's progress up to now."""
        done = now - proc.park_ns
        if done > 0:
            proc.step_done += done
            if proc.park_work:
                proc.work_ns += done
            proc.park_ns = now

    def unpark(self, proc: SimProcess, now: int) -> None:
        self._settle(proc, now)
        proc.parked = False
        self.nr_parked -= 1
        if proc.counted_working:
            proc.counted_working = False
            cpu = proc.cpu
            c: SimCgroup | None = proc.cgroup
            while c is not None:
                c.nr_working -= 1
                c.nr_working_cpu[cpu] -= 1
                if not c.nr_working_cpu[cpu]:
                    c.working_cpus -= 1
                c = c._parent

    def unpark_killed(self, proc: SimProcess, now: int) -> None:
        """A parked process is killed. In the middle of a tick loop that has passed its
        PID, it has (in effect) run this whole tick already: account that, as if the
        loop had visited it."""
        end = now + self.tick_ns
        if self.cur_pid and proc.pid < self.cur_pid and proc.park_ns < end:
            self.unpark(proc, end)
            if proc.park_work:
                self.add_busy(proc, 0, 0)
        else:
            self.unpark(proc, now)

    def settle(self, now: int) -> None:
        for _, pid in self.parked:
            proc = self.procs.get(pid)
            if proc is not None and proc.parked:
                self._settle(proc, now)

    def _wake_parked(self, now: int, end: int) -> None:
        """Unpark every process whose step ends in the tick that ends at end."""
        heap = self.parked
        while heap and heap[0][0] <= end:
            wake, pid = heapq.heappop(heap)
            proc = self.procs.get(pid)
            if proc is None or not proc.parked or proc.wake_ns != wake:
                continue
            self.unpark(proc, now)
            if proc.state == RUNNING:
                self.active[pid] = proc
                self._order = None

    # -- the tick -------------------------------------------------------------------------
    def add_busy(self, proc: SimProcess, mem_stall: int, io_stall: int) -> None:
        """Fold one non-idle process's tick into its cgroups' per-CPU accumulators:
        [cpu, memory some, memory full, IO some, IO full] while one CPU is busy in the
        cgroup (the common case); once a second one is, the list's cpu becomes -1 and
        the per-CPU lists live in _multi."""
        touched = self._touched
        cpu = proc.cpu
        c: SimCgroup | None = proc.cgroup
        while c is not None:
            slot = touched.get(c.id)
            if slot is None:
                touched[c.id] = [cpu, mem_stall, mem_stall, io_stall, io_stall]
                c = c._parent
                continue
            if slot[0] != cpu:
                multi = self._multi.get(c.id)
                if multi is None:
                    multi = self._multi[c.id] = {slot[0]: slot[:]}
                    slot[0] = -1
                slot = multi.get(cpu)
                if slot is None:
                    multi[cpu] = [cpu, mem_stall, mem_stall, io_stall, io_stall]
                    c = c._parent
                    continue
            if mem_stall > slot[1]:
                slot[1] = mem_stall
            if mem_stall < slot[2]:
                slot[2] = mem_stall
            if io_stall > slot[3]:
                slot[3] = io_stall
            if io_stall < slot[4]:
                slot[4] = io_stall
            c = c._parent

    def tick(self, now: int, end: int, run_tick: RunTick) -> None:
        """Every active process spends [now, end) on its program (run_tick returns its IO
        stall), in PID order; then those whose step outlasts the tick are parked."""
        if self.parked and self.parked[0][0] <= end:
            self._wake_parked(now, end)
        self._touched = {}
        self._multi = {}
        order = self._order
        if order is None:
            order = self._order = sorted(self.active)
        active = self.active
        for pid in order:
            proc = active.get(pid)
            if proc is None:
                continue
            if proc.state != RUNNING:
                self.deactivate(proc)
                continue
            self.cur_pid = pid
            proc.tick_stall = 0
            proc.tick_busy = False
            io_stall = run_tick(proc, now, end)
            proc.io_stall_ns += io_stall
            if proc.tick_busy:
                self.add_busy(proc, proc.tick_stall, io_stall)
            if proc.state != RUNNING:
                self.deactivate(proc)
            elif (proc.blocked_until <= end and proc.io_blocked_until <= end
                  and proc.pc < len(proc.program)):
                step = proc.program[proc.pc]
                if step.duration_ns is not None and step.op in ("work", "sleep") and (
                        proc.step_done < step.duration_ns):
                    self.park(proc, end)
        self.cur_pid = 0

    # -- PSI ------------------------------------------------------------------------------
    def psi_enqueue(self, cg: SimCgroup) -> None:
        assert cg.psi is not None
        due = cg.psi.next_due_ns()
        if cg.psi_queued is None or due < cg.psi_queued:
            cg.psi_queued = due
            heapq.heappush(self.psi_queue, (due, cg.id))

    @staticmethod
    def _aggregate(cg: SimCgroup, acc: dict[int, list[int]]) -> None:
        """collect_percpu_times() for one tick: each CPU's stall weighted by its non-idle
        time (here: the whole tick or nothing), added to the cgroup's totals. CPUs where
        only a parked task of the cgroup works count as non-idle and unstalled. (The
        one-CPU case is done inline in psi_phase, the same way.)"""
        psi = cg.psi
        assert psi is not None
        working = cg.nr_working_cpu
        n = len(acc) + cg.working_cpus
        ms = mf = io_s = io_f = 0
        for cpu, slot in acc.items():
            ms += slot[1]
            io_s += slot[3]
            if working[cpu]:
                n -= 1  # counted among the working CPUs already
            else:
                mf += slot[2]
                io_f += slot[4]
        psi.add_memory_io(ms // n, mf // n, io_s // n, io_f // n)

    def psi_phase(self, end: int) -> list[SimPsiTrigger]:
        """Add the tick's stall to every cgroup a non-idle task touched, then tick the PSI
        state of those and of every cgroup that is due, in cgroup order; returns the
        triggers that fired. Due: one with triggers, or parked working tasks (their
        non-stall matters to its averages), or touched in the current averaging period:
        like the kernel's psi_avgs_work(), which runs once more after the period with
        activity, a cgroup gone idle still gets that period's averages on time."""
        by_id = self.by_id
        ticking: dict[int, SimCgroup] = {}
        for cid, acc in self._touched.items():
            cg = by_id.get(cid)
            if cg is None or cg.psi is None:
                continue
            if acc[0] >= 0:  # one CPU with a visited task (see _aggregate)
                if not cg.nr_working:
                    cg.psi.add_memory_io(acc[1], acc[2], acc[3], acc[4])
                elif cg.nr_working_cpu[acc[0]]:
                    n = cg.working_cpus
                    cg.psi.add_memory_io(acc[1] // n, 0, acc[3] // n, 0)
                else:
                    n = cg.working_cpus + 1
                    cg.psi.add_memory_io(acc[1] // n, acc[2] // n, acc[3] // n, acc[4] // n)
            else:
                self._aggregate(cg, self._multi[cid])
            ticking[cid] = cg
        for proc in self._parked_now:
            if proc.parked and not proc.counted_working:
                proc.counted_working = True
                cpu = proc.cpu
                c: SimCgroup | None = proc.cgroup
                while c is not None:
                    c.nr_working += 1
                    c.nr_working_cpu[cpu] += 1
                    if c.nr_working_cpu[cpu] == 1:
                        c.working_cpus += 1
                    c = c._parent
        self._parked_now.clear()
        queue = self.psi_queue
        while queue and queue[0][0] <= end:
            due, cid = heapq.heappop(queue)
            cg = by_id.get(cid)
            if cg is None or cg.psi_queued != due:
                continue  # removed, or queued again for another time
            cg.psi_queued = None
            if cg.psi is not None:
                ticking[cid] = cg
        fired: list[SimPsiTrigger] = []
        touched = self._touched
        for cid in sorted(ticking):
            cg = ticking[cid]
            assert cg.psi is not None
            fired.extend(cg.psi.tick(end))
            if cg.psi.triggers or cg.nr_working or cid in touched:
                self.psi_enqueue(cg)
        return fired

    def psi_idle_until(self, landing: int) -> None:
        """Time jumps over idle ticks: the averages of cgroups active in their current
        period still get updated when it ends, at the tick the loop would have done it.
        (Cgroups with triggers keep their old catch-up after the jump: see skip_to.)"""
        queue, by_id, tick = self.psi_queue, self.by_id, self.tick_ns
        keep: list[tuple[int, int]] = []
        while queue and queue[0][0] <= landing:
            due, cid = heapq.heappop(queue)
            cg = by_id.get(cid)
            if cg is None or cg.psi is None or cg.psi_queued != due:
                continue
            if cg.psi.triggers or cg.nr_working:
                keep.append((due, cid))
                continue
            cg.psi_queued = None
            at = -(-due // tick) * tick
            if at <= landing:
                cg.psi.tick(at)
            else:
                keep.append((due, cid))
                cg.psi_queued = due
        for entry in keep:
            heapq.heappush(queue, entry)
