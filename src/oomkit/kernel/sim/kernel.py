"""SimKernel: a deterministic model of the kernel's memcg, reclaim, PSI and OOM killer.

Time moves in ticks of the scenario's ``tick`` (10 ms by default) on a ManualClock.
Inside a tick every runnable process, in PID order, spends the tick's time on its
program: allocating (charging pages up its cgroup's ancestors, reclaiming when a limit is
hit, declaring an OOM at the innermost cgroup over its ``memory.max`` when reclaim cannot
make room), touching a working set (refaulting what was evicted), working or sleeping.
Time lost to reclaim, memory.high throttling, waiting for an OOM victim and (see below)
refaults is a memory stall: it feeds PSI exactly where the kernel's psi_memstall_enter()
would. Time waiting for reads is an IO stall.

Model choices, each a simplification of the kernel stated once here:
- Pages are counted in bytes per cgroup and per file; which page is resident is not
  tracked. A working set of W bytes with R resident touched at random misses with
  probability (W - R) / W; touched in order ("sequential"), it misses every page when it
  cannot stay resident, and reads in readahead batches.
- Only misses on pages that were in memory before are refaults; first reads wait on IO
  only. Which refaults are memory stalls is machine.refault_stall: "all" (the default,
  as if every working set would fit) or "workingset", the kernel's rule: a refault
  stalls on memory when its page was in the workingset and comes back within the
  workingset size (mm/workingset.c), estimated from the refault distance
  (_workingset_refault_share; measured against Linux 6.18 in docs/sim-vs-kernel.md).
- Reclaim takes page cache before anonymous memory (anon only to swap), proportionally
  over the cgroups of the reclaimed subtree, skipping memory.min-protected cgroups always
  and memory.low-protected ones until nothing else is left (counting a "low" event then).
  Its cost, a memory stall, is machine.reclaim_ns a page (reclaim_large_ns for pages
  sequential readahead brought in as large folios).
- While a victim in the OOM domain is still exiting, a charge that fails waits for it
  instead of declaring a new OOM: the kernel would declare one and its killer would find
  the victim and abort; declared OOMs (out_of_memory()) always run the full path.
- After an OOM that made no progress the charge retries after one second, where the
  kernel would retry at once (and loop or panic).

The tick loop visits only processes that can do something different this tick: one in a
work or timed sleep step that outlasts the tick is parked until the tick its step ends
in, and a cgroup's PSI state is ticked only when something is due (see _park and
_psi_phase). Neither changes any result; docs/simulator.md says where the time goes.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import math
from collections.abc import Sequence
from typing import Any, Final

from oomkit.clock import ManualClock
from oomkit.errors import CgroupGone, KernelError, TaskGone
from oomkit.events import ProcessSummary, SummaryEvent
from oomkit.kernel.base import (
    KNOWN_OOM_FLAGS,
    MAX_ORDER,
    PAGE_SIZE,
    Cgroup,
    Constraint,
    DefaultOutcome,
    KernelHooks,
    OomFlags,
    OomRequest,
    PsiTrigger,
    Resource,
    Task,
    Victim,
)
from oomkit.kernel.oom_kill import mem_cgroup_get_oom_group, oom_kill_targets, select_bad_process
from oomkit.kernel.sim.memcg import SimCgroup
from oomkit.kernel.sim.process import (
    EXITED,
    EXITING,
    NEW,
    RUNNING,
    SLEEPING,
    SimFile,
    SimProcess,
)
from oomkit.kernel.sim.psi import GroupPsi, SimPsiTrigger
from oomkit.kernel.sim.scenario import MachineSpec, Scenario, Step

NS: Final = 1_000_000_000
HZ: Final = 1000  # jiffies per second for the memory.high penalty (CONFIG_HZ_1000)
MEMCG_CHARGE_BATCH: Final = 64  # pages
MEMCG_DELAY_PRECISION_SHIFT: Final = 20
MEMCG_DELAY_SCALING_SHIFT: Final = 14
MEMCG_MAX_HIGH_DELAY_JIFFIES: Final = 2 * HZ
OOM_RETRY_NS: Final = NS
PSI_POLL_UPDATES_PER_WINDOW: Final = 10  # the kernel evaluates triggers every window/10


def _pages(nbytes: int) -> int:
    return (nbytes + PAGE_SIZE - 1) // PAGE_SIZE


def _page_align(nbytes: int) -> int:
    return _pages(nbytes) * PAGE_SIZE


def _active_share(lru_bytes: int) -> float:
    """The share of an LRU the kernel keeps active: inactive_is_low() deactivates while
    inactive * inactive_ratio < active, with inactive_ratio = int_sqrt(10 * GB) (1 below
    1G)."""
    gb = lru_bytes >> 30
    ratio = math.isqrt(10 * gb) if gb else 1
    return ratio / (1 + ratio)


class SimKernel:
    """The simulated kernel. Build it from a Scenario, or by hand with create_cgroup and
    spawn; drive it with run() or step(); attach policies through a Runtime."""

    def __init__(self, machine: MachineSpec | None = None) -> None:
        self.machine = machine or MachineSpec()
        self._clock = ManualClock()
        self._hooks: KernelHooks | None = None
        self._next_id = 1
        self.root = self._new_cgroup("/", None)
        self._by_id: dict[int, SimCgroup] = {self.root.id: self.root}
        self._by_path: dict[str, SimCgroup] = {"/": self.root}
        self.procs: dict[int, SimProcess] = {}
        self._pending: list[SimProcess] = []  # not started yet, by start time
        self._spawn_seq = 0
        # The tick loop visits only _active: running processes that are not parked.
        self._active: dict[int, SimProcess] = {}
        self._order: list[int] | None = []  # _active's pids in PID order (None: stale)
        self._parked: list[tuple[int, int]] = []  # heap of (wake_ns, pid)
        self._nr_parked = 0
        self._victims: dict[int, SimProcess] = {}  # killed, not reaped yet
        # Cgroups whose PSI state needs a tick although no task of theirs was visited:
        # a heap of (due_ns, cgroup id); see _psi_phase.
        self._psi_queue: list[tuple[int, int]] = []
        self._touched: dict[int, list[int]] = {}
        self._parked_now: list[SimProcess] = []
        self._cur_pid = 0  # the process the tick loop is running (0: none)
        self._reclaim_cost_ns = 0  # what reclaim has cost so far (see _charge)
        self._next_pid = 100
        self.files: dict[str, SimFile] = {}
        self._files_of: dict[int, list[SimFile]] = {}
        self.swap_used = 0
        self._scheduled: list[tuple[int, int, str, Any]] = []  # (time, seq, what, arg)
        self._seq = 0
        self._psi_due: list[SimPsiTrigger] = []
        self.ooms = 0
        self.kills = 0
        self.scenario: Scenario | None = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_scenario(cls, scenario: Scenario) -> SimKernel:
        k = cls(scenario.machine)
        k.scenario = scenario
        for spec in scenario.cgroups:
            limits: dict[str, Any] = dict(
                memory_max=spec.memory_max, memory_high=spec.memory_high,
                memory_low=spec.memory_low, memory_min=spec.memory_min,
                swap_max=spec.swap_max, oom_group=spec.oom_group)
            if spec.create_ns > 0:
                k._schedule(spec.create_ns, "create", (spec.path, limits))
            else:
                k.create_cgroup(spec.path, **limits)
            if spec.remove_ns is not None:
                k._schedule(spec.remove_ns, "remove", spec.path)
        for pspec in scenario.processes:
            k.spawn(pspec.name, pspec.cgroup, pspec.program, pspec.oom_score_adj,
                    pspec.start_ns)
        return k

    def _schedule(self, at_ns: int, what: str, arg: object) -> None:
        self._seq += 1
        heapq.heappush(self._scheduled, (at_ns, self._seq, what, arg))

    def _new_cgroup(self, path: str, parent: SimCgroup | None) -> SimCgroup:
        cg = SimCgroup(self, self._next_id, path, parent)
        self._next_id += 1
        cg.psi = GroupPsi(self._clock.now_ns() if hasattr(self, "_clock") else 0,
                          self.machine.tick_ns)
        return cg

    def create_cgroup(self, path: str, *, memory_max: int | None = None,
                      memory_high: int | None = None, memory_low: int = 0,
                      memory_min: int = 0, swap_max: int | None = None,
                      oom_group: bool = False) -> SimCgroup:
        """mkdir, with parents created as needed; then the limits are written."""
        if not path.startswith("/"):
            raise KernelError(f"cgroup path must be absolute: {path!r}", errno.EINVAL)
        cg = self.root
        if path != "/":
            so_far = ""
            for part in path.strip("/").split("/"):
                so_far += "/" + part
                child = self._by_path.get(so_far)
                if child is None:
                    child = self._new_cgroup(so_far, cg)
                    cg._children[part] = child
                    self._by_id[child.id] = child
                    self._by_path[so_far] = child
                    self._files_of[child.id] = []
                    if self._hooks is not None:
                        self._hooks.cgroup_online(child.id, child.path)
                cg = child
        cg.memory_max_ = memory_max
        cg.memory_high_ = memory_high
        cg.memory_low_ = memory_low
        cg.memory_min_ = memory_min
        cg.swap_max_ = swap_max
        cg.oom_group_ = oom_group
        return cg

    def remove_cgroup(self, path: str) -> None:
        """rmdir: refused (EBUSY) while the cgroup has children or live tasks. Its
        page cache is reparented to the parent, as the kernel does."""
        cg = self._by_path.get(path)
        if cg is None or cg.parent is None:
            raise CgroupGone(f"no cgroup {path}") if cg is None else KernelError(
                "the root cgroup cannot be removed", errno.EBUSY)
        if cg.sim_children() or any(p.alive for p in cg.procs.values()):
            raise KernelError(f"cgroup {path} is not empty", errno.EBUSY)
        parent = cg.parent
        for f in self._files_of.pop(cg.id, []):
            f.cgroup = parent
            self._files_of[parent.id].append(f)
        for kind in ("file", "shmem", "file_mapped"):
            parent.local[kind] += cg.local[kind]
            cg.local[kind] = 0
        cg.online = False
        del parent._children[cg.name]
        del self._by_path[path]
        del self._by_id[cg.id]
        if self._hooks is not None:
            self._hooks.cgroup_offline(cg.id, path)

    def spawn(self, name: str, cgroup: str | SimCgroup, program: Sequence[Step],
              oom_score_adj: int = 0, start_ns: int | None = None) -> SimProcess:
        """A process that starts at start_ns (now by default) in that cgroup."""
        path = cgroup.path if isinstance(cgroup, SimCgroup) else cgroup
        start = self._clock.now_ns() if start_ns is None else start_ns
        proc = SimProcess(0, name, self.root, tuple(program), oom_score_adj, start)
        proc.cgroup = self._by_path.get(path) or self.root
        proc.exit_status = path  # remembered until start: the cgroup may appear later
        self._spawn_seq += 1
        proc.spawn_seq = self._spawn_seq
        bisect.insort(self._pending, proc, key=lambda p: (p.start_ns, p.spawn_seq))
        if start <= self._clock.now_ns():
            self._start_due(self._clock.now_ns())
        return proc

    # -- Kernel protocol: SPEC section 3 ------------------------------------------------
    @property
    def clock(self) -> ManualClock:
        return self._clock

    def root_mem_cgroup(self) -> SimCgroup:
        return self.root

    def mem_cgroup(self, id_or_path: int | str) -> SimCgroup | None:
        if isinstance(id_or_path, int):
            return self._by_id.get(id_or_path)
        path = "/" + id_or_path.strip("/") if id_or_path.strip("/") else "/"
        return self._by_path.get(path)

    def out_of_memory(self, memcg: Cgroup | None, order: int = 0,
                      flags: OomFlags = OomFlags(0), constraint_text: str | None = None) -> int:
        if int(flags) & ~int(KNOWN_OOM_FLAGS) or not 0 <= order <= MAX_ORDER:
            return -errno.EINVAL
        if memcg is not None and (not isinstance(memcg, SimCgroup) or not memcg.online):
            return -errno.EINVAL
        request = OomRequest(memcg, order, Constraint.DECLARED, constraint_text,
                             self.oom_totalpages(memcg), flags)
        return self._run_oom(request)

    def task_is_oom_victim(self, task: Task) -> bool:
        proc = self.procs.get(task.pid)
        return proc is not None and proc.victim and proc.start_time == task.start_time

    # -- Kernel protocol: the runtime's seam --------------------------------------------
    def bind(self, hooks: KernelHooks | None) -> None:
        self._hooks = hooks

    def watch_oom(self, cgroup: Cgroup | None) -> str:
        return "simulated out_of_memory()"

    def unwatch_oom(self, cgroup: Cgroup | None) -> None:
        return None

    def oom_totalpages(self, memcg: Cgroup | None) -> int:
        ram = self.machine.memory // PAGE_SIZE
        swap = self.machine.swap // PAGE_SIZE
        if memcg is None:
            return ram + swap
        # mem_cgroup_get_max(): the memcg's own max plus the swap it may use. An
        # unlimited memcg would give PAGE_COUNTER_MAX; we cap at RAM to keep
        # oom_score_adj meaningful for declared OOMs on unlimited cgroups.
        mx = memcg.memory_max
        limit = ram if mx is None else min(mx // PAGE_SIZE, ram)
        sw = memcg.swap_max
        return limit + (swap if sw is None else min(sw // PAGE_SIZE, swap))

    def kill_tasks(self, tasks: Sequence[Task], message: str, group: Cgroup | None
                   ) -> list[Task]:
        killed: list[Task] = []
        for task in tasks:
            proc = self.procs.get(task.pid)
            if proc is None or proc.start_time != task.start_time or not proc.alive:
                continue
            if proc.victim:
                continue
            self._kill(proc)
            killed.append(task)
        if killed and isinstance(group, SimCgroup):
            group.count_event("oom_group_kill")
        return killed

    def kill_cgroup(self, cgroup: Cgroup, message: str) -> list[Task]:
        if not isinstance(cgroup, SimCgroup) or not cgroup.online:
            raise CgroupGone(f"cgroup {cgroup.path} was removed")
        tasks = [t for cg in cgroup.walk() for t in cg.tasks()]
        killed = []
        for task in tasks:
            proc = self.procs[task.pid]
            if not proc.victim:
                # cgroup.kill is a plain SIGKILL: memory.events does not count it as an
                # oom_kill. The task is still marked as a victim (its memory is on the way),
                # so the default killer waits for it rather than choosing another.
                self._kill(proc, oom_kill=False)
                killed.append(task)
        return killed

    def reclaim(self, cgroup: Cgroup, nbytes: int) -> int:
        if not isinstance(cgroup, SimCgroup) or not cgroup.online:
            raise CgroupGone(f"cgroup {cgroup.path} was removed")
        if nbytes <= 0:
            raise KernelError("memory.reclaim needs a positive size", errno.EINVAL)
        return self._reclaim(cgroup, _page_align(nbytes))

    def remove_file(self, path: str) -> int:
        f = self.files.get(path)
        if f is None:
            raise KernelError(f"no such file: {path}", errno.ENOENT)
        freed = f.resident
        if f.mapped:
            # An unlinked file stays while mapped: only the unmapped part goes.
            freed = f.resident - f.mapped
        self._drop_file_pages(f, freed)
        if not f.mapped:
            del self.files[path]
            lst = self._files_of.get(f.cgroup.id)
            if lst is not None and f in lst:
                lst.remove(f)
        return freed

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None:
        if not isinstance(cgroup, SimCgroup) or not cgroup.online:
            raise CgroupGone(f"cgroup {cgroup.path} was removed")
        if cgroup.parent is None:
            raise KernelError("the root cgroup has no memory.max", errno.EINVAL)
        cgroup.memory_max_ = None if nbytes is None else _page_align(nbytes)
        # Lowering the limit below usage reclaims right away, as memory_max_write does.
        if nbytes is not None and cgroup.charged > cgroup.memory_max_:  # type: ignore[operator]
            self._reclaim(cgroup, cgroup.charged - cgroup.memory_max_)  # type: ignore[operator]

    def default_oom(self, request: OomRequest) -> DefaultOutcome:
        """select_bad_process() + oom_kill_process(), as mm/oom_kill.c does them
        (oomkit.kernel.oom_kill, shared with the live backend)."""
        found = select_bad_process((self._task(p) for p in self._domain(request.memcg)),
                                   request.totalpages, self.task_is_oom_victim)
        if found.waiting_for is not None:
            w = found.waiting_for
            return DefaultOutcome(waited=True, note=f"victim {w.pid} ({w.comm}) "
                                  "is still exiting: waiting, no new kill")
        if found.chosen is None:
            what = ("the kernel would panic: out of memory and no killable processes"
                    if request.memcg is None else "no killable task in the cgroup")
            return DefaultOutcome(note=what)
        victim = found.chosen
        group = mem_cgroup_get_oom_group(victim.cgroup, request.memcg)
        killed = self.kill_tasks(oom_kill_targets(victim, group), "default", group)
        return DefaultOutcome(tuple(Victim.of(t) for t in killed),
                              note=f"oom_badness chose pid {victim.pid} ({victim.comm}), "
                              f"{found.points} points")

    def psi_trigger_create(self, cgroup_id: int, resource: Resource, threshold_us: int,
                           window_us: int, full: bool) -> PsiTrigger:
        cg = self.root if cgroup_id == 0 else self._by_id.get(cgroup_id)
        if cg is None or cg.psi is None:
            raise CgroupGone(f"no cgroup with id {cgroup_id}")
        trig = cg.psi.create_trigger(cgroup_id, resource, threshold_us, window_us, full,
                                     self._clock.now_ns(), self.machine.cap_sys_resource)
        self._psi_enqueue(cg)
        return trig

    def psi_trigger_destroy(self, trigger: PsiTrigger) -> None:
        if not isinstance(trigger, SimPsiTrigger):
            raise KernelError("not a simulator trigger", errno.EINVAL)
        trigger.active = False
        cg = self.root if trigger.cgroup_id == 0 else self._by_id.get(trigger.cgroup_id)
        if cg is not None and cg.psi is not None and trigger in cg.psi.triggers:
            cg.psi.triggers.remove(trigger)

    # -- tasks ----------------------------------------------------------------------------
    def _task(self, proc: SimProcess) -> Task:
        vm = proc.rss + proc.swapped
        pgtables = ((vm + (2 << 20) - 1) // (2 << 20)) * PAGE_SIZE  # one PTE page per 2M
        return Task(proc.pid, proc.name, proc.cgroup, proc.oom_score_adj, proc.rss,
                    proc.swapped // PAGE_SIZE, pgtables, proc.start_time)

    def tasks_of(self, cg: SimCgroup) -> list[Task]:
        return [self._task(p) for p in cg.procs.values()
                if p.state in (RUNNING, SLEEPING, EXITING)]

    def _domain(self, memcg: Cgroup | None) -> list[SimProcess]:
        """The tasks an OOM may choose from: the memcg's subtree (mem_cgroup_scan_tasks,
        pre-order), or every task in PID order (for_each_process)."""
        if memcg is None:
            return [p for p in self.procs.values() if p.state in (RUNNING, SLEEPING, EXITING)]
        out: list[SimProcess] = []
        for cg in memcg.walk():
            assert isinstance(cg, SimCgroup)
            out.extend(p for p in cg.procs.values()
                       if p.state in (RUNNING, SLEEPING, EXITING))
        return out

    def process(self, name: str) -> SimProcess:
        for p in list(self.procs.values()) + self._pending:
            if p.name == name:
                return p
        raise TaskGone(f"no process named {name!r}")

    # -- charging -------------------------------------------------------------------------
    def _commit(self, cg: SimCgroup, kind: str, nbytes: int) -> None:
        cg.local[kind] += nbytes
        c: SimCgroup | None = cg
        while c is not None:
            c.charged += nbytes
            c = c._parent

    def _uncharge(self, cg: SimCgroup, kind: str, nbytes: int) -> None:
        if nbytes <= 0:
            return
        cg.local[kind] -= nbytes
        c: SimCgroup | None = cg
        while c is not None:
            c.charged -= nbytes
            c = c._parent

    def _over_limit(self, cg: SimCgroup, nbytes: int) -> SimCgroup | None:
        """page_counter_try_charge: the innermost ancestor whose memory.max is hit."""
        c: SimCgroup | None = cg
        while c is not None:
            mx = c.memory_max_
            if mx is not None and c.charged + nbytes > mx:
                return c
            c = c._parent
        return None

    def _room(self, cg: SimCgroup) -> int:
        room = self.machine.memory - self.root.charged
        c: SimCgroup | None = cg
        while c is not None:
            if c.memory_max_ is not None:
                room = min(room, c.memory_max_ - c.charged)
            c = c._parent
        return max(0, room)

    def _charge(self, proc: SimProcess, cg: SimCgroup, kind: str, nbytes: int) -> tuple[int, int]:
        """Charge nbytes for proc. Returns (bytes charged, stall ns spent reclaiming).

        Less than asked means the rest met an OOM (or is waiting for a victim to exit);
        the caller stalls for the rest of its tick.
        """
        stall = 0
        if nbytes <= self._room(cg):
            self._commit(cg, kind, nbytes)
            return nbytes, 0
        over = self._over_limit(cg, nbytes)
        cost_before = self._reclaim_cost_ns
        if over is not None:
            over.count_event("max")
            need = over.charged + nbytes - over.memory_max_  # type: ignore[operator]
            self._reclaim(over, _page_align(need))
        else:
            need = self.root.charged + nbytes - self.machine.memory
            self._reclaim(None, _page_align(need))
        stall += self._reclaim_cost_ns - cost_before
        room = self._room(cg)
        if nbytes <= room:
            self._commit(cg, kind, nbytes)
            return nbytes, stall
        part = (room // PAGE_SIZE) * PAGE_SIZE
        if part > 0:
            self._commit(cg, kind, part)
        # Out of memory for the rest: at the innermost cgroup still over, or the machine.
        over = self._over_limit(cg, nbytes - part)
        self._oom(proc, over)
        return part, stall

    def _oom(self, proc: SimProcess, over: SimCgroup | None) -> None:
        now = self._clock.now_ns()
        if now < proc.oom_retry_at:
            return
        if self._victim_in(over):
            return  # a victim is exiting: its memory is on the way (see module doc)
        if over is not None:
            over.count_event("oom")
        request = OomRequest(over, 0, Constraint.MEMCG if over is not None else Constraint.NONE,
                             None, self.oom_totalpages(over))
        if self._run_oom(request) <= 0:
            proc.oom_retry_at = now + OOM_RETRY_NS

    def _run_oom(self, request: OomRequest) -> int:
        self.ooms += 1
        if self._hooks is not None:
            return self._hooks.oom(request)
        return 1 if self.default_oom(request).progress else 0

    def _victim_in(self, memcg: SimCgroup | None) -> bool:
        """Is a killed, not yet reaped task inside memcg's subtree (None: anywhere)?"""
        if memcg is None:
            return bool(self._victims)
        for v in self._victims.values():
            c: SimCgroup | None = v.cgroup
            while c is not None:
                if c is memcg:
                    return True
                c = c._parent
        return False

    def _kill(self, proc: SimProcess, oom_kill: bool = True) -> None:
        """SIGKILL. ``oom_kill``: an OOM kill (counted in memory.events), not cgroup.kill."""
        now = self._clock.now_ns()
        if proc.parked:
            self._unpark_killed(proc, now)
        self._deactivate(proc)
        self._victims[proc.pid] = proc
        proc.victim = True
        proc.state = EXITING
        proc.killed_at = now
        proc.exit_at = now + self.machine.exit_latency_ns
        proc.work_lost_ns += proc.work_ns
        proc.work_ns = 0
        if oom_kill:
            proc.cgroup.count_event("oom_kill")
        self.kills += 1
        self._schedule(proc.exit_at, "reap", proc.pid)

    # -- reclaim --------------------------------------------------------------------------
    def _swap_room(self, cg: SimCgroup) -> int:
        room = self.machine.swap - self.swap_used
        c: SimCgroup | None = cg
        while c is not None:
            if c.swap_max_ is not None:
                room = min(room, c.swap_max_ - c.swap_charged)
            c = c._parent
        return max(0, room)

    def _reclaimable(self, cg: SimCgroup) -> tuple[int, int]:
        """(file, anon) bytes reclaim could take from this cgroup itself."""
        file = sum(f.resident - f.mapped for f in self._files_of.get(cg.id, ())
                   if f.kind == "file")
        anon = 0
        if self.machine.swap:
            anon = min(cg.local["anon"], self._swap_room(cg))
        return max(0, file), max(0, anon)

    def _reclaim(self, target: SimCgroup | None, nbytes: int) -> int:
        """Reclaim up to nbytes from target's subtree (None: the whole machine)."""
        top = target or self.root
        cgs = [c for c in top.walk("post")]
        got = 0
        for honour_low in (True, False):
            cands: list[tuple[SimCgroup, int, int]] = []
            for c in cgs:
                assert isinstance(c, SimCgroup)
                if c.parent is not None and c.charged <= c.memory_min_:
                    continue
                protected_low = c.parent is not None and c.charged <= c.memory_low_
                if honour_low and protected_low:
                    continue
                file, anon = self._reclaimable(c)
                if file or anon:
                    cands.append((c, file, anon))
                    if not honour_low and protected_low:
                        c.count_event("low")
            want = nbytes - got
            total_file = sum(f for _, f, _ in cands)
            if total_file:
                for c, file, _ in cands:
                    share = min(file, _page_align(want * file // total_file))
                    got += self._evict_file(c, share)
            want = nbytes - got
            total_anon = sum(a for _, _, a in cands)
            if want > 0 and total_anon:
                for c, _, anon in cands:
                    share = min(anon, _page_align(want * anon // total_anon))
                    got += self._swap_out(c, share)
            if got >= nbytes:
                break
        return got

    def _evict_file(self, cg: SimCgroup, nbytes: int) -> int:
        got = 0
        for f in self._files_of.get(cg.id, ()):
            if got >= nbytes:
                break
            if f.kind != "file":
                continue
            take = min(nbytes - got, f.resident - f.mapped)
            if take > 0:
                self._drop_file_pages(f, take)
                got += take
                self._reclaim_cost_ns += _pages(take) * (
                    self.machine.reclaim_large_ns if f.large_folios else self.machine.reclaim_ns)
        cg.count_vm("pgscan", _pages(got))
        cg.count_vm("pgsteal", _pages(got))
        return got

    def _drop_file_pages(self, f: SimFile, nbytes: int) -> None:
        if nbytes <= 0:
            return
        f.resident -= nbytes
        self._uncharge(f.cgroup, f.kind, nbytes)

    def _swap_out(self, cg: SimCgroup, nbytes: int) -> int:
        got = 0
        procs = sorted((p for p in cg.procs.values() if p.anon > 0),
                       key=lambda p: -p.anon)
        for proc in procs:
            take = min(nbytes - got, proc.anon, self._swap_room(cg))
            if take <= 0:
                break
            proc.anon -= take
            proc.swapped += take
            self._uncharge(cg, "anon", take)
            self._swap_charge(cg, take)
            got += take
        self._reclaim_cost_ns += _pages(got) * self.machine.reclaim_ns
        cg.count_vm("pgscan", _pages(got))
        cg.count_vm("pgsteal", _pages(got))
        return got

    def _swap_charge(self, cg: SimCgroup, nbytes: int) -> None:
        self.swap_used += nbytes
        c: SimCgroup | None = cg
        while c is not None:
            c.swap_charged += nbytes
            c = c._parent

    # -- memory.high ----------------------------------------------------------------------
    def _over_high_penalty(self, proc: SimProcess, nr_pages: int) -> int:
        """mem_cgroup_handle_over_high(): reclaim, then the throttle. Returns the stall in
        ns (the reclaim's cost and the throttle; 0: none)."""
        worst = 0
        cost_before = self._reclaim_cost_ns
        c: SimCgroup | None = proc.cgroup
        while c is not None:
            high = c.memory_high_
            if high is not None and c.charged > high:
                c.count_event("high")
                self._reclaim(c, _page_align(min(nr_pages * PAGE_SIZE, c.charged - high)))
                if c.charged > high:
                    # calculate_overage(): fixed point, 20 bits of precision
                    overage = ((c.charged - high) << MEMCG_DELAY_PRECISION_SHIFT) // max(high, 1)
                    worst = max(worst, overage)
            c = c._parent
        reclaim_ns = self._reclaim_cost_ns - cost_before  # reclaim_high() is a memstall too
        if worst == 0:
            return reclaim_ns
        penalty = worst * worst * HZ
        penalty >>= MEMCG_DELAY_PRECISION_SHIFT
        penalty >>= MEMCG_DELAY_SCALING_SHIFT
        penalty = penalty * nr_pages // MEMCG_CHARGE_BATCH
        penalty = min(penalty, MEMCG_MAX_HIGH_DELAY_JIFFIES)
        if penalty <= HZ // 100:
            return reclaim_ns
        return reclaim_ns + penalty * (NS // HZ)

    def _over_high(self, cg: SimCgroup) -> bool:
        c: SimCgroup | None = cg
        while c is not None:
            if c.memory_high_ is not None and c.charged > c.memory_high_:
                return True
            c = c._parent
        return False

    # -- the clock ------------------------------------------------------------------------
    def _start_due(self, now: int) -> None:
        while self._pending and self._pending[0].start_ns <= now:
            proc = self._pending.pop(0)
            cg = self._by_path.get(proc.exit_status)
            if cg is None:
                cg = self.create_cgroup(proc.exit_status)
            proc.exit_status = ""
            proc.cgroup = cg
            proc.pid = self._next_pid
            proc.start_time = self._next_pid
            self._next_pid += 1
            proc.state = RUNNING
            proc.step_done = 0
            cg.procs[proc.pid] = proc
            self.procs[proc.pid] = proc
            self._active[proc.pid] = proc
            self._order = None

    def _reap(self, pid: int) -> None:
        proc = self.procs.get(pid)
        if proc is None or proc.state == EXITED:
            return
        self._exit(proc, "killed" if proc.victim else "exited")

    def _exit(self, proc: SimProcess, status: str) -> None:
        cg = proc.cgroup
        if proc.parked:
            self._unpark(proc, self._clock.now_ns())
        self._deactivate(proc)
        self._victims.pop(proc.pid, None)
        self._uncharge(cg, "anon", proc.anon)
        self._uncharge(cg, "shmem", proc.shmem_anon)
        cg.local["file_mapped"] -= sum(proc.mapped_files.values())
        for path, n in proc.mapped_files.items():
            f = self.files.get(path)
            if f is not None:
                f.mapped -= n
        if proc.swapped:
            self.swap_used -= proc.swapped
            c: SimCgroup | None = cg
            while c is not None:
                c.swap_charged -= proc.swapped
                c = c._parent
        proc.anon = proc.shmem_anon = proc.swapped = 0
        proc.mapped_files.clear()
        proc.state = EXITED
        proc.exit_status = status
        cg.procs.pop(proc.pid, None)

    def _run_scheduled(self, now: int) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, what, arg = heapq.heappop(self._scheduled)
            if what == "reap":
                self._reap(arg)
            elif what == "create":
                path, limits = arg
                self.create_cgroup(path, **limits)
            elif what == "remove":
                try:
                    self.remove_cgroup(arg)
                except KernelError:
                    self._schedule(now + self.machine.tick_ns, "remove", arg)  # retry
        self._start_due(now)

    # -- parking: processes in a long work or sleep step ----------------------------------
    # A process whose work or timed sleep outlasts the tick is parked: the tick loop skips
    # it until the tick in which the step ends, and its progress is accounted in one go
    # (_settle). Nothing a parked process does can differ from tick to tick: a working
    # one is busy and never stalled, which for PSI only means "full" is zero in its
    # cgroups (nr_working); a sleeping one is idle. So parking changes no result, only
    # how many processes each tick visits.

    def _deactivate(self, proc: SimProcess) -> None:
        if self._active.pop(proc.pid, None) is not None:
            self._order = None

    def _park(self, proc: SimProcess, end: int) -> None:
        step = proc.program[proc.pc]
        assert step.duration_ns is not None
        proc.parked = True
        proc.park_ns = end
        proc.wake_ns = end + step.duration_ns - proc.step_done
        proc.park_work = step.op == "work"
        if proc.park_work:
            # Counted in nr_working from the next tick on: this tick it was visited.
            self._parked_now.append(proc)
        heapq.heappush(self._parked, (proc.wake_ns, proc.pid))
        self._nr_parked += 1
        self._deactivate(proc)

    def _settle(self, proc: SimProcess, now: int) -> None:
        """Account a parked process's progress up to now."""
        done = now - proc.park_ns
        if done > 0:
            proc.step_done += done
            if proc.park_work:
                proc.work_ns += done
            proc.park_ns = now

    def _unpark(self, proc: SimProcess, now: int) -> None:
        self._settle(proc, now)
        proc.parked = False
        self._nr_parked -= 1
        if proc.counted_working:
            proc.counted_working = False
            c: SimCgroup | None = proc.cgroup
            while c is not None:
                c.nr_working -= 1
                c = c._parent

    def _unpark_killed(self, proc: SimProcess, now: int) -> None:
        """A parked process is killed. In the middle of a tick loop that has passed its
        PID, it has (in effect) run this whole tick already: account that, as if the
        loop had visited it."""
        end = now + self.machine.tick_ns
        if self._cur_pid and proc.pid < self._cur_pid and proc.park_ns < end:
            self._unpark(proc, end)
            if proc.park_work:
                self._add_busy(proc, 0, 0)
        else:
            self._unpark(proc, now)

    def _settle_parked(self) -> None:
        now = self._clock.now_ns()
        for _, pid in self._parked:
            proc = self.procs.get(pid)
            if proc is not None and proc.parked:
                self._settle(proc, now)

    def _wake_parked(self, end: int) -> None:
        """Unpark every process whose step ends in the tick that ends at end."""
        heap = self._parked
        now = self._clock.now_ns()
        while heap and heap[0][0] <= end:
            wake, pid = heapq.heappop(heap)
            proc = self.procs.get(pid)
            if proc is None or not proc.parked or proc.wake_ns != wake:
                continue
            self._unpark(proc, now)
            if proc.state == RUNNING:
                self._active[pid] = proc
                self._order = None

    def _add_busy(self, proc: SimProcess, mem_stall: int, io_stall: int) -> None:
        """Fold one non-idle process's tick into its cgroups' per-tick PSI accumulators:
        ``some`` is the longest stall, ``full`` the shortest (see psi.py)."""
        touched = self._touched
        c: SimCgroup | None = proc.cgroup
        while c is not None:
            acc = touched.get(c.id)
            if acc is None:
                touched[c.id] = [mem_stall, mem_stall, io_stall, io_stall]
            else:
                if mem_stall > acc[0]:
                    acc[0] = mem_stall
                if mem_stall < acc[1]:
                    acc[1] = mem_stall
                if io_stall > acc[2]:
                    acc[2] = io_stall
                if io_stall < acc[3]:
                    acc[3] = io_stall
            c = c._parent

    # -- the tick -------------------------------------------------------------------------
    def step(self) -> None:
        """One tick: scheduled events, every runnable process, then PSI."""
        self._tick()
        self._settle_parked()

    def _tick(self) -> None:
        now = self._clock.now_ns()
        if (self._scheduled and self._scheduled[0][0] <= now) or (
                self._pending and self._pending[0].start_ns <= now):
            self._run_scheduled(now)
        dt = self.machine.tick_ns
        end = now + dt
        if self._parked and self._parked[0][0] <= end:
            self._wake_parked(end)
        self._touched = {}
        order = self._order
        if order is None:
            order = self._order = sorted(self._active)
        active = self._active
        for pid in order:
            proc = active.get(pid)
            if proc is None:
                continue
            if proc.state != RUNNING:
                self._deactivate(proc)
                continue
            self._cur_pid = pid
            proc.tick_stall = 0
            proc.tick_busy = False
            io_stall = self._run_tick(proc, now, end)
            if proc.tick_busy:
                self._add_busy(proc, proc.tick_stall, io_stall)
            if proc.state != RUNNING:
                self._deactivate(proc)
            elif proc.blocked_until <= end and proc.pc < len(proc.program):
                step = proc.program[proc.pc]
                if step.duration_ns is not None and step.op in ("work", "sleep") and (
                        proc.step_done < step.duration_ns):
                    self._park(proc, end)
        self._cur_pid = 0
        self._clock.set_ns(end)
        self._psi_phase(end)

    def _psi_enqueue(self, cg: SimCgroup) -> None:
        assert cg.psi is not None
        due = cg.psi.next_due_ns()
        if cg.psi_queued is None or due < cg.psi_queued:
            cg.psi_queued = due
            heapq.heappush(self._psi_queue, (due, cg.id))

    def _psi_phase(self, end: int) -> None:
        """Add the tick's stall to every cgroup a non-idle task touched, then tick the PSI
        state of those and of every cgroup that is due, in cgroup order. Due: one with
        triggers, or parked working tasks (their non-stall matters to its averages), or
        touched in the current averaging period: like the kernel's psi_avgs_work(),
        which runs once more after the period with activity, a cgroup gone idle still
        gets that period's averages on time."""
        by_id = self._by_id
        ticking: dict[int, SimCgroup] = {}
        for cid, acc in self._touched.items():
            cg = by_id.get(cid)
            if cg is None or cg.psi is None:
                continue
            if cg.nr_working:
                acc[1] = acc[3] = 0  # a parked task of its subtree worked, unstalled
            cg.psi.add_memory_io(acc[0], acc[1], acc[2], acc[3])
            ticking[cid] = cg
        for proc in self._parked_now:
            if proc.parked and not proc.counted_working:
                proc.counted_working = True
                c: SimCgroup | None = proc.cgroup
                while c is not None:
                    c.nr_working += 1
                    c = c._parent
        self._parked_now.clear()
        queue = self._psi_queue
        while queue and queue[0][0] <= end:
            due, cid = heapq.heappop(queue)
            cg = by_id.get(cid)
            if cg is None or cg.psi_queued != due:
                continue  # removed, or queued again for another time
            cg.psi_queued = None
            if cg.psi is not None and (cg.psi.triggers or cg.nr_working):
                ticking[cid] = cg
        fired: list[SimPsiTrigger] = []
        touched = self._touched
        for cid in sorted(ticking):
            cg = ticking[cid]
            assert cg.psi is not None
            fired.extend(cg.psi.tick(end))
            if cg.psi.triggers or cg.nr_working or cid in touched:
                self._psi_enqueue(cg)
        if self._hooks is not None:
            for trig in fired:
                self._hooks.psi_event(trig)

    def _psi_idle_until(self, landing: int) -> None:
        """Time jumps over idle ticks: the averages of cgroups active in their current
        period still get updated when it ends, at the tick the loop would have done it.
        (Cgroups with triggers keep their old catch-up after the jump: see skip_to.)"""
        queue, by_id, tick = self._psi_queue, self._by_id, self.machine.tick_ns
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

    def _next_wakeup(self) -> int | None:
        times = [self._scheduled[0][0]] if self._scheduled else []
        if self._pending:
            times.append(self._pending[0].start_ns)
        return min(times) if times else None

    def run(self, until_ns: int | None = None) -> None:
        """Run until until_ns (the scenario's duration by default). When every process is
        asleep for good and nothing is scheduled, time jumps ahead instead of ticking."""
        end = self.machine.duration_ns if until_ns is None else until_ns
        tick = self.machine.tick_ns
        while self._clock.now_ns() < end:
            if not self._active and not self._nr_parked:
                wake = self._next_wakeup()
                now = self._clock.now_ns()
                target = end if wake is None else min(end, wake)
                if target > now + tick:
                    # Land on the tick grid so runs are identical however they jump.
                    landing = now + ((target - now) // tick) * tick
                    self._psi_idle_until(landing)
                    for cg in self._by_id.values():
                        if cg.psi is not None and cg.psi.triggers:
                            cg.psi.skip_to(now, landing)
                    self._clock.set_ns(landing)
                    continue
            self._tick()
        self._settle_parked()

    # -- a process's tick -----------------------------------------------------------------
    def _run_tick(self, proc: SimProcess, t: int, end: int) -> int:
        """Spend [t, end) of proc's time on its program. Returns the IO stall (refaults)."""
        io_stall = 0
        while t < end and proc.state == RUNNING:
            if proc.blocked_until > t:
                s = min(proc.blocked_until, end) - t
                proc.tick_stall += s
                proc.stall_ns += s
                proc.tick_busy = True
                t += s
                continue
            step = proc.step
            if step is None:
                self._exit(proc, "exited")
                break
            op = step.op
            if op == "alloc":
                t = self._do_alloc(proc, step, t, end)
            elif op == "touch":
                t, io = self._do_touch(proc, step, t, end)
                io_stall += io
            elif op == "work":
                proc.tick_busy = True
                assert step.duration_ns is not None
                run = min(step.duration_ns - proc.step_done, end - t)
                proc.step_done += run
                proc.work_ns += run
                t += run
                if proc.step_done >= step.duration_ns:
                    self._next_step(proc, t)
            elif op == "sleep":
                if step.duration_ns is None:
                    proc.state = SLEEPING
                    break
                run = min(step.duration_ns - proc.step_done, end - t)
                proc.step_done += run
                t += run
                if proc.step_done >= step.duration_ns:
                    self._next_step(proc, t)
            elif op == "free":
                self._do_free(proc, step)
                self._next_step(proc, t)
            else:  # exit
                self._exit(proc, "exited")
                break
        return io_stall

    def _next_step(self, proc: SimProcess, t: int) -> None:
        proc.pc += 1
        proc.step_done = 0
        proc.blocked_until = max(proc.blocked_until, 0)

    def _stall_rest(self, proc: SimProcess, t: int, end: int) -> int:
        proc.tick_stall += end - t
        proc.stall_ns += end - t
        proc.tick_busy = True
        return end

    def _file(self, proc: SimProcess, step: Step) -> SimFile:
        path = step.path or f"/sim/{proc.name}.{step.kind}.{proc.pc}"
        f = self.files.get(path)
        if f is None:
            f = SimFile(path, step.kind, proc.cgroup)
            self.files[path] = f
            self._files_of.setdefault(proc.cgroup.id, []).append(f)
        return f

    def _do_alloc(self, proc: SimProcess, step: Step, t: int, end: int) -> int:
        proc.tick_busy = True
        rate = step.rate or self.machine.alloc_rate
        remaining = _page_align(step.size) - proc.step_done
        can = min(remaining, max(PAGE_SIZE, _page_align(rate * (end - t) // NS)))
        if self._over_high(proc.cgroup):
            # Over memory.high the task pays its penalty every batch of pages.
            can = min(can, MEMCG_CHARGE_BATCH * PAGE_SIZE)
        kind = "shmem" if step.kind == "shmem" else step.kind
        charged, stall = self._charge(proc, proc.cgroup, kind, can)
        if charged:
            self._place(proc, step, charged)
            proc.step_done += charged
            proc.peak_rss = max(proc.peak_rss, proc.rss)
        t += charged * NS // rate
        if proc.state != RUNNING:
            return end
        if stall:
            proc.blocked_until = t + stall
        if charged < can:
            return self._stall_rest(proc, t, end)
        if self._over_high(proc.cgroup):
            penalty = self._over_high_penalty(proc, _pages(charged))
            if penalty:
                proc.blocked_until = max(proc.blocked_until, t) + penalty
        if proc.step_done >= _page_align(step.size):
            self._next_step(proc, t)
        return t

    def _place(self, proc: SimProcess, step: Step, nbytes: int) -> None:
        """Record where charged pages live, and count the faults that brought them."""
        cg = proc.cgroup
        if step.kind == "anon":
            proc.anon += nbytes
            cg.count_vm("pgfault", _pages(nbytes))
        elif step.kind == "shmem" and step.path is None:
            proc.shmem_anon += nbytes
            cg.count_vm("pgfault", _pages(nbytes))
        else:
            f = self._file(proc, step)
            f.resident += nbytes
            f.size = max(f.size, f.resident)
            f.seen = max(f.seen, f.resident)
            if step.mapped or step.kind == "shmem":
                if step.mapped:
                    f.mapped += nbytes
                    proc.mapped_files[f.path] = proc.mapped_files.get(f.path, 0) + nbytes
                    cg.local["file_mapped"] += nbytes
                cg.count_vm("pgfault", _pages(nbytes))

    def _do_free(self, proc: SimProcess, step: Step) -> None:
        n = _page_align(step.size)
        cg = proc.cgroup
        if step.kind == "anon":
            take = min(n, proc.anon)
            proc.anon -= take
            self._uncharge(cg, "anon", take)
            sw = min(n - take, proc.swapped)
            if sw:
                proc.swapped -= sw
                self._swap_charge(cg, -sw)
        elif step.kind == "shmem" and step.path is None:
            take = min(n, proc.shmem_anon)
            proc.shmem_anon -= take
            self._uncharge(cg, "shmem", take)
        else:
            path = step.path or f"/sim/{proc.name}.{step.kind}"
            f = self.files.get(path)
            if f is not None:
                take = min(n, f.resident - f.mapped)
                self._drop_file_pages(f, take)
                f.size = max(f.resident, f.size - take) if f.kind == "shmem" else f.size

    def _do_touch(self, proc: SimProcess, step: Step, t: int, end: int) -> tuple[int, int]:
        """Re-touch a working set; what is not resident comes back from disk or swap.

        Random access misses each non-resident byte alike. A sequential pass over a
        working set that cannot stay resident misses on every page (the pass evicts what
        it needs next time round); one that can stay misses only what is missing. Misses
        cost IO time, an IO stall; reclaim to make room is a memory stall. Which misses
        stall on memory too depends on machine.refault_stall: "all" of them, or (as the
        kernel does, "workingset") only refaults of evicted pages that the workingset
        detection flags (_workingset_refault_share). Returns (time, IO stall).
        """
        proc.tick_busy = True
        m = self.machine
        kernel_rule = m.refault_stall == "workingset"
        ws = max(PAGE_SIZE, _page_align(step.size))
        cg = proc.cgroup
        seq = step.pattern == "sequential"
        if step.kind == "file":
            f: SimFile | None = self._file(proc, step)
            assert f is not None
            f.size = max(f.size, ws)
            owner = f.cgroup
            missing = max(0, ws - f.resident)
            # Pages that were in memory before come back as refaults (the kernel finds
            # their shadow entries); first reads are not refaults.
            refaulting = max(0, min(f.seen, ws) - f.resident)
            others = owner.local["file"] - f.resident  # other cache reclaim could take
        else:
            f = None
            owner = cg
            missing = refaulting = min(proc.swapped, ws)
            others = owner.local["file"]
        resident = ws - missing
        miss_frac = missing / ws
        if seq and missing and ws > resident + self._room(owner) + max(0, others):
            miss_frac = 1.0
        if seq:
            io_page_ns = (m.refault_ns * PAGE_SIZE / max(PAGE_SIZE, m.readahead)
                          + PAGE_SIZE * NS / m.read_bandwidth)
        else:
            io_page_ns = float(m.refault_ns)
        per_byte_ns = NS / m.touch_rate + miss_frac * (io_page_ns + m.miss_cpu_ns) / PAGE_SIZE
        budget = end - t
        if step.duration_ns is not None:
            budget = min(budget, step.duration_ns - proc.step_done)
        nbytes = max(PAGE_SIZE, int(budget / per_byte_ns))
        if step.duration_ns is None:
            nbytes = min(nbytes, ws - proc.step_done)
        misses = min(missing if miss_frac < 1.0 else ws,
                     _page_align(int(nbytes * miss_frac))) if missing else 0
        charged, rstall, refaults = 0, 0, 0
        if misses:
            kind = "file" if f is not None else "anon"
            share = (self._workingset_refault_share(owner, f is not None, ws, resident, seq)
                     if kernel_rule else 1.0)
            charged, rstall = self._charge(proc, owner, kind, misses)
            if seq and f is not None:
                # In order, the first pass reads what was never seen; later passes find
                # every page they miss seen before.
                refaults = charged if f.seen >= ws else 0
            else:
                refaults = _page_align(charged * refaulting // missing)
            if f is not None:
                f.resident += charged
                # First reads join the pages seen; refaults were seen already.
                f.seen = min(f.size, max(f.resident, f.seen + charged - refaults))
                f.large_folios = seq
                item = "file"
            else:
                proc.anon += charged
                proc.swapped -= charged
                self._swap_charge(cg, -charged)
                item = "anon"
            nref = _pages(refaults)
            cg.count_vm(f"workingset_refault_{item}", nref)
            if kernel_rule:
                cg.count_vm_frac(f"workingset_activate_{item}", nref * share)
                cg.count_vm_frac(f"workingset_restore_{item}", nref * share * share)
            cg.count_vm("pgmajfault", _pages(charged))
            cg.count_vm("pgfault", _pages(charged))
            # The refaults that stall on memory (under the kernel's rule, share^2 of them:
            # pages that were in the workingset and come back within its size) stall for
            # the whole read, the kernel's psi_memstall_enter() around reading a
            # PG_workingset folio covering its submission and completion too.
            mem_io_ns = int(nref * (io_page_ns + m.miss_cpu_ns) * share * share)
        else:
            mem_io_ns = 0
        io_ns = int(_pages(charged) * io_page_ns)
        run_ns = int(nbytes * NS / m.touch_rate) + _pages(charged) * m.miss_cpu_ns
        used = min(budget, run_ns + io_ns + rstall)
        stall = min(used, mem_io_ns + rstall)
        io_stall = min(used, io_ns)
        proc.tick_stall += stall
        proc.stall_ns += stall
        if proc.state != RUNNING:
            return end, io_stall
        if misses and charged < misses:
            return self._stall_rest(proc, t + used, end), io_stall
        if step.duration_ns is not None:
            proc.step_done += used
            done = proc.step_done >= step.duration_ns
        else:
            proc.step_done += nbytes
            done = proc.step_done >= ws
        proc.peak_rss = max(proc.peak_rss, proc.rss)
        t += max(used, 1)
        if done:
            self._next_step(proc, t)
        return t, io_stall

    def _workingset_refault_share(self, owner: SimCgroup, file: bool, ws: int,
                                  resident: int, seq: bool) -> float:
        """The share of refaults the kernel's workingset detection flags (mm/workingset.c).

        A refault activates its page when its refault distance (pages evicted and
        activated in the memcg since the page left) is at most the workingset size
        (workingset_test_recent(): the active file list, plus anon when there is swap;
        for an anon refault all of the file lists). It counts as a memory stall when,
        besides, the page was in the workingset (PG_workingset) when it was evicted. With
        a share p of the evicted pages activated, both hold for p * p of the refaults.

        The distance: a sequential pass re-reads a page after the rest of the working set,
        ws - resident bytes; random access after an exponential number of evictions with
        that mean, stretched by the activations (1 + p). The active share of a list is
        what the kernel's inactive_is_low() keeps: 1/2 below 1G, more above.
        """
        files = owner.local["file"]
        anon = owner.local["anon"]
        swap = bool(self.machine.swap) and self._swap_room(owner) > 0
        if file:
            size = _active_share(files) * files + (anon if swap else 0)
        else:
            size = files + (_active_share(anon) * anon if swap else 0)
        distance = ws - resident
        if distance <= 0 or size <= 0:
            return 1.0 if distance <= 0 else 0.0
        if seq:
            return 1.0 if distance <= size else 0.0
        p = 1.0 - math.exp(-size / distance)
        for _ in range(8):
            p = 1.0 - math.exp(-size / (distance * (1.0 + p)))
        return p

    # -- reporting ------------------------------------------------------------------------
    def system_pressure(self, resource: Resource = Resource.MEMORY) -> Any:
        assert self.root.psi is not None
        return self.root.psi.pressure(resource, self._clock.now_ns())

    def summary(self) -> SummaryEvent:
        self._settle_parked()
        procs: list[ProcessSummary] = []
        everyone = list(self.procs.values()) + self._pending
        for p in sorted(everyone, key=lambda p: (p.pid == 0, p.pid)):
            status = {NEW: "not started", EXITING: "exiting"}.get(p.state, p.state)
            if p.state == EXITED:
                status = p.exit_status
            procs.append(ProcessSummary(
                p.name, p.pid, p.cgroup.path, status,
                None if p.killed_at is None else p.killed_at / NS,
                p.stall_ns / NS, p.work_ns / NS, p.work_lost_ns / NS, p.peak_rss))
        assert self.root.psi is not None
        full = self.root.psi.total_ns(Resource.MEMORY, True) / NS
        return SummaryEvent(self._clock.now(), self._clock.now(), self.ooms, self.kills, full,
                            tuple(procs))
