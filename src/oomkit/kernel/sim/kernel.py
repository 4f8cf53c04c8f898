"""SimKernel: a deterministic model of the kernel's memcg, reclaim, PSI and OOM killer.

Time moves in ticks of the scenario's ``tick`` (10 ms by default) on a ManualClock. This
module is the machine's face (SPEC section 3: cgroups, tasks, limits, kills, triggers)
and what happens between the ticks' work: starts and exits, scheduled cgroup creation
and removal, and the OOM path. The work itself is elsewhere: sched.py runs every
runnable process on its CPU each tick and keeps PSI per CPU; steps.py interprets the
program steps; reclaim.py charges, reclaims (in LRU order), swaps and throttles at
memory.high; writeback.py keeps dirty pages and writes them back. Each module's
docstring states its model choices.

Choices of the OOM path, each a simplification of the kernel:
- While a victim in the OOM domain is still exiting, a charge that fails waits for it
  instead of declaring a new OOM: the kernel would declare one and its killer would find
  the victim and abort; declared OOMs (out_of_memory()) always run the full path, but
  one declared where a victim is already on its way out is not counted as a new OOM.
- After an OOM that made no progress the charge retries after one second, where the
  kernel would retry at once (and loop or panic).
- A process whose cgroup was removed before it starts does not start (clone3 into a
  removed cgroup fails); other missing cgroups are created when it starts.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import posixpath
from collections.abc import Sequence
from typing import Any, Final

from oomkit.clock import ManualClock
from oomkit.errors import CgroupGone, KernelError, TaskGone
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
from oomkit.kernel.sim.memwatch import SimSystemWatch
from oomkit.kernel.sim.process import (
    EXITED,
    EXITING,
    RUNNING,
    SLEEPING,
    SimFile,
    SimProcess,
)
from oomkit.kernel.sim.psi import GroupPsi, SimPsiTrigger
from oomkit.kernel.sim.reclaim import SimMemory, page_align
from oomkit.kernel.sim.scenario import MachineSpec, Scenario, Step
from oomkit.kernel.sim.sched import Scheduler
from oomkit.kernel.sim.steps import StepRunner

NS: Final = 1_000_000_000
OOM_RETRY_NS: Final = NS


class SimKernel:
    """The simulated kernel. Build it from a Scenario, or by hand with create_cgroup and
    spawn; drive it with run() or step(); attach policies through a Runtime."""

    def __init__(self, machine: MachineSpec | None = None) -> None:
        self.machine = machine or MachineSpec()
        self._clock = ManualClock()
        self._hooks: KernelHooks | None = None
        self._next_id = 1
        self._by_id: dict[int, SimCgroup] = {}
        self.procs: dict[int, SimProcess] = {}
        self.sched = Scheduler(self.machine.cpus, self.machine.tick_ns, self.procs,
                               self._by_id)
        self.root = self._new_cgroup("/", None)
        self._by_id[self.root.id] = self.root
        self._by_path: dict[str, SimCgroup] = {"/": self.root}
        self._pending: list[SimProcess] = []  # not started yet, by start time
        self._removed: set[str] = set()  # cgroups removed (and not created again)
        self._unstarted: list[SimProcess] = []  # could not start: cgroup removed
        self._spawn_seq = 0
        self._victims: dict[int, SimProcess] = {}  # killed, not reaped yet
        self._next_pid = 100
        self.mem = SimMemory(self.machine, self.root, self._oom, self._clock)
        self.steps = StepRunner(self.machine, self.mem, self._exit)
        self._scheduled: list[tuple[int, int, str, Any]] = []  # (time, seq, what, arg)
        self._seq = 0
        self.ooms = 0
        self.kills = 0
        self.scenario: Scenario | None = None
        # The daemon's [system] MemAvailable watch (memwatch.py), when enable_system_watch()
        # was called: armed by watch_oom(None), as live.
        self.system: SimSystemWatch | None = None

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
        cg = SimCgroup(self, self._clock, self._next_id, path, parent)
        self._next_id += 1
        cg.psi = GroupPsi(self._clock.now_ns(), self.machine.tick_ns)
        self.sched.new_cgroup(cg)
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
                    self._removed.discard(so_far)
                    child = self._new_cgroup(so_far, cg)
                    cg._children[part] = child
                    self._by_id[child.id] = child
                    self._by_path[so_far] = child
                    self.mem.files_of[child.id] = []
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
        for f in self.mem.files_of.pop(cg.id, []):
            f.cgroup = parent
            self.mem.files_of[parent.id].append(f)
        for kind in ("file", "shmem", "file_mapped", "file_dirty"):
            parent.local[kind] += cg.local[kind]
            cg.local[kind] = 0
        cg.online = False
        del parent._children[cg.name]
        del self._by_path[path]
        self._removed.add(path)
        del self._by_id[cg.id]
        if self._hooks is not None:
            self._hooks.cgroup_offline(cg.id, path)

    def spawn(self, name: str, cgroup: str | SimCgroup, program: Sequence[Step],
              oom_score_adj: int = 0, start_ns: int | None = None) -> SimProcess:
        """A process that starts at start_ns (now by default) in that cgroup. A cgroup
        that does not exist then is created (without limits), unless it was removed:
        then the process does not start (CgroupGone here if it is removed already)."""
        path = cgroup.path if isinstance(cgroup, SimCgroup) else cgroup
        if self._removed_at(path):
            raise CgroupGone(f"cgroup {self._removed_at(path)} was removed")
        start = self._clock.now_ns() if start_ns is None else start_ns
        proc = SimProcess(0, name, self.root, tuple(program), oom_score_adj, start)
        proc.cgroup = self._by_path.get(path) or self.root
        proc.exit_status = path  # remembered until start: the cgroup may appear later
        proc.spawned_into = path
        self._spawn_seq += 1
        proc.spawn_seq = self._spawn_seq
        bisect.insort(self._pending, proc, key=lambda p: (p.start_ns, p.spawn_seq))
        if start <= self._clock.now_ns():
            self._start_due(self._clock.now_ns())
        return proc

    @property
    def files(self) -> dict[str, SimFile]:
        """The page cache's and tmpfs's files, by path."""
        return self.mem.files

    @property
    def swap_used(self) -> int:
        """Bytes out on swap, machine-wide."""
        return self.mem.swap_used

    def processes(self) -> list[SimProcess]:
        """Every process, started or not: the started ones in PID order, then the ones
        still to start in start order (what a report lists)."""
        return ([self.procs[pid] for pid in sorted(self.procs)] + self._unstarted
                + list(self._pending))

    def _removed_at(self, path: str) -> str | None:
        """The removed cgroup at or above path that has not been created again, if any."""
        so_far = ""
        for part in path.strip("/").split("/") if path != "/" else ():
            so_far += "/" + part
            if so_far in self._removed and so_far not in self._by_path:
                return so_far
        return None

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
        if cgroup is None and self.system is not None:
            return f"simulated out_of_memory(); {self.system.arm()}"
        return "simulated out_of_memory()"

    def unwatch_oom(self, cgroup: Cgroup | None) -> None:
        if cgroup is None and self.system is not None:
            self.system.disarm()

    def enable_system_watch(self, **settings: float) -> SimSystemWatch:
        """The live daemon's system-wide MemAvailable watch on this machine (``settings``:
        SimSystemWatch's, from the config's [system]); armed by watch_oom(None)."""
        self.system = SimSystemWatch(self, **settings)
        return self.system

    def watch_system_memory(self) -> str:
        """The watch alone, arming nothing else (a dry run's, as LinuxKernel's)."""
        if self.system is None:
            return "no system-wide MemAvailable watch"
        return self.system.arm()

    def victim_exiting(self) -> bool:
        """A killed task anywhere has not exited yet (its memory is on the way)."""
        return bool(self._victims)

    def declare_system_oom(self, request: OomRequest) -> int:
        """A system-wide OOM declared by the MemAvailable watch: the OOM path."""
        return self._run_oom(request)

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
        return self.mem.reclaim(cgroup, page_align(nbytes))

    def _held(self, path: str) -> int | None:
        """The pid of a live process that has this file open, if any."""
        for p in self.procs.values():
            if p.state != EXITED and path in p.open_files:
                return p.pid
        return None

    def tmpfs_files(self, path: str) -> list[tuple[str, int]]:
        """The simulator's tmpfs files in directory ``path`` (or ``path`` itself) that no
        live process holds open, as (path, bytes), largest first. The bytes are those in
        memory and on swap, as the live backend's st_blocks counts them (a tmpfs inode's
        i_blocks counts its swapped pages too: shmem_recalc_inode() keeps them in
        info->alloced) and as removing the file frees them."""
        found = [(f.path, f.resident + f.swapped) for f in self.mem.files.values()
                 if f.kind == "shmem" and path in (f.path, posixpath.dirname(f.path))
                 and self._held(f.path) is None]
        return sorted(found, key=lambda item: item[1], reverse=True)

    def remove_file(self, path: str) -> int:
        f = self.mem.files.get(path)
        if f is None:
            raise KernelError(f"no such file: {path}", errno.ENOENT)
        holder = self._held(path) if f.kind == "shmem" else None
        if holder is not None:
            # As the live backend refuses it: an open tmpfs file's memory stays until its
            # last close, so unlinking it would free nothing now.
            raise KernelError(f"{path}: still open by pid {holder}: not removed", errno.EBUSY)
        freed = f.resident
        if f.mapped:
            # An unlinked file stays while mapped: only the unmapped part goes.
            freed = f.resident - f.mapped
        self.mem.drop_file_pages(f, freed)
        # Its pages on swap go too (shmem_evict_inode() -> shmem_undo_range() frees the
        # swap entries): counted in what it freed, as the live backend's st_blocks does.
        freed += self.mem.free_shmem_swap(f, f.swapped)
        if not f.mapped:
            del self.mem.files[path]
            lst = self.mem.files_of.get(f.cgroup.id)
            if lst is not None and f in lst:
                lst.remove(f)
        return freed

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None:
        if not isinstance(cgroup, SimCgroup) or not cgroup.online:
            raise CgroupGone(f"cgroup {cgroup.path} was removed")
        if cgroup.parent is None:
            raise KernelError("the root cgroup has no memory.max", errno.EINVAL)
        cgroup.memory_max_ = None if nbytes is None else page_align(nbytes)
        # Lowering the limit below usage reclaims right away, as memory_max_write does.
        if nbytes is not None and cgroup.charged > cgroup.memory_max_:  # type: ignore[operator]
            self.mem.reclaim(cgroup, cgroup.charged - cgroup.memory_max_)  # type: ignore[operator]

    def default_oom(self, request: OomRequest) -> DefaultOutcome:
        """select_bad_process() + oom_kill_process(), as mm/oom_kill.c does them
        (oomkit.kernel.oom_kill, shared with the live backend). For an OOM the
        MemAvailable watch declared: as LinuxKernel, only while the machine is still short
        (else the kernel killer, never disabled system-wide, acts when it must)."""
        watch = self.system if request.memcg is None else None
        if watch is not None and watch.declaring and not watch.short():
            return DefaultOutcome(handed_over=True, note="system-wide: the kernel OOM killer "
                                  "was never disabled and acts when it must")
        found = select_bad_process((self._task(p) for p in self._domain(request.memcg)),
                                   request.totalpages, self.task_is_oom_victim)
        if found.waiting_for is not None:
            w = found.waiting_for
            return DefaultOutcome(waited=True, note=f"victim {w.pid} ({w.comm}) "
                                  "is still exiting: waiting, no new kill")
        if found.chosen is None and watch is not None and watch.declaring:
            return DefaultOutcome(note="no killable task")
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
        self.sched.psi_enqueue(cg)
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
        return proc.task()

    def _domain(self, memcg: Cgroup | None) -> list[SimProcess]:
        """The tasks an OOM may choose from: the memcg's subtree (mem_cgroup_scan_tasks,
        pre-order), or every task in PID order (for_each_process)."""
        if memcg is None:
            return [p for p in self.procs.values() if p.state in (RUNNING, SLEEPING, EXITING)]
        out: list[SimProcess] = []
        for cg in memcg.walk():
            assert isinstance(cg, SimCgroup)
            out.extend(self.procs[pid] for pid, p in cg.procs.items()
                       if p.state in (RUNNING, SLEEPING, EXITING))
        return out

    def process(self, name: str) -> SimProcess:
        for p in list(self.procs.values()) + self._pending + self._unstarted:
            if p.name == name:
                return p
        raise TaskGone(f"no process named {name!r}")

    # -- charging -------------------------------------------------------------------------
    def _oom(self, proc: SimProcess, over: SimCgroup | None) -> None:
        now = self._clock.now_ns()
        if now < proc.oom_retry_at:
            return
        if self._victim_in(over):
            return  # a victim is exiting: its memory is on the way (see module doc)
        if over is not None:
            over.count_event("oom")
        elif self.system is not None:
            self.system.kernel_killed()  # as live: no OOM of the watch for recheck_s
        request = OomRequest(over, 0, Constraint.MEMCG if over is not None else Constraint.NONE,
                             None, self.oom_totalpages(over))
        if self._run_oom(request) <= 0:
            proc.oom_retry_at = now + OOM_RETRY_NS

    def _run_oom(self, request: OomRequest) -> int:
        memcg = request.memcg
        assert memcg is None or isinstance(memcg, SimCgroup)
        # One stall can fire triggers on a cgroup and its ancestors at once: once the
        # first declared OOM has a victim on its way out, the others in the same domain
        # find it (oom_evaluate_task aborts) and are not new OOMs.
        if request.constraint is not Constraint.DECLARED or not self._victim_in(memcg):
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
            self.sched.unpark_killed(proc, now)
        self.sched.deactivate(proc)
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

    # -- the clock ------------------------------------------------------------------------
    def _start_due(self, now: int) -> None:
        while self._pending and self._pending[0].start_ns <= now:
            proc = self._pending.pop(0)
            cg = self._by_path.get(proc.exit_status)
            if cg is None and self._removed_at(proc.exit_status):
                # clone3(CLONE_INTO_CGROUP) into a removed cgroup fails: the process
                # never starts (the cgroup is not silently made again without limits).
                proc.state = EXITED
                proc.exit_status = f"not started: cgroup {proc.exit_status} was removed"
                self._unstarted.append(proc)
                continue
            if cg is None:
                cg = self.create_cgroup(proc.exit_status)
            proc.exit_status = ""
            proc.cgroup = cg
            proc.pid = self._next_pid
            proc.start_time = self._next_pid
            self._next_pid += 1
            proc.state = RUNNING
            proc.step_done = 0
            proc.step_started_ns = now
            cg.procs[proc.pid] = proc
            self.procs[proc.pid] = proc
            self.sched.place(proc)

    def _reap(self, pid: int) -> None:
        proc = self.procs.get(pid)
        if proc is None or proc.state == EXITED:
            return
        self._exit(proc, "killed" if proc.victim else "exited")

    def _exit(self, proc: SimProcess, status: str) -> None:
        cg = proc.cgroup
        self.sched.remove(proc, self._clock.now_ns())
        self._victims.pop(proc.pid, None)
        self.mem.uncharge(cg, "anon", proc.anon)
        self.mem.uncharge(cg, "shmem", proc.shmem_anon)
        cg.local["file_mapped"] -= sum(proc.mapped_files.values())
        for path, n in proc.mapped_files.items():
            f = self.mem.files.get(path)
            if f is not None:
                f.mapped -= n
        if proc.swapped:
            self.mem.swap_used -= proc.swapped
            c: SimCgroup | None = cg
            while c is not None:
                c.swap_charged -= proc.swapped
                c = c._parent
        proc.anon = proc.shmem_anon = proc.swapped = 0
        proc.mapped_files.clear()
        proc.open_files.clear()
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

    def settle(self) -> None:
        """Account every parked process's progress up to now (before reading it)."""
        self.sched.settle(self._clock.now_ns())


    # -- the tick -------------------------------------------------------------------------
    def step(self) -> None:
        """One tick: scheduled events, every runnable process, then PSI."""
        self._tick()
        self.settle()

    def _tick(self) -> None:
        now = self._clock.now_ns()
        watch = self.system
        if watch is not None and watch.next_ns is not None and now >= watch.next_ns:
            watch.check()
        if (self._scheduled and self._scheduled[0][0] <= now) or (
                self._pending and self._pending[0].start_ns <= now):
            self._run_scheduled(now)
        end = now + self.machine.tick_ns
        self.sched.tick(now, end, self.steps.run_tick)
        if self.mem.wb.total:
            self.mem.wb.run(end, self.machine.tick_ns)
        self._clock.set_ns(end)
        fired = self.sched.psi_phase(end)
        if self._hooks is not None:
            for trig in fired:
                self._hooks.psi_event(trig)


    def _next_wakeup(self) -> int | None:
        times = [self._scheduled[0][0]] if self._scheduled else []
        if self._pending:
            times.append(self._pending[0].start_ns)
        flush = self.mem.wb.next_due_ns(self._clock.now_ns())
        if flush is not None:
            times.append(flush)
        if self.system is not None and self.system.next_ns is not None:
            times.append(self.system.next_ns)
        return min(times) if times else None

    def run(self, until_ns: int | None = None) -> None:
        """Run until until_ns (the scenario's duration by default). When every process is
        asleep for good and nothing is scheduled, time jumps ahead instead of ticking."""
        end = self.machine.duration_ns if until_ns is None else until_ns
        tick = self.machine.tick_ns
        while self._clock.now_ns() < end:
            if not self.sched.active and not self.sched.nr_parked:
                wake = self._next_wakeup()
                now = self._clock.now_ns()
                target = end if wake is None else min(end, wake)
                if target > now + tick:
                    # Land on the tick grid so runs are identical however they jump.
                    landing = now + ((target - now) // tick) * tick
                    self.sched.psi_idle_until(landing)
                    for cg in self._by_id.values():
                        if cg.psi is not None and cg.psi.triggers:
                            cg.psi.skip_to(now, landing)
                    self._clock.set_ns(landing)
                    continue
            self._tick()
        self.settle()

    # -- a process's tick -----------------------------------------------------------------
    # -- reporting ------------------------------------------------------------------------
    def system_pressure(self, resource: Resource = Resource.MEMORY) -> Any:
        assert self.root.psi is not None
        return self.root.psi.pressure(resource, self._clock.now_ns())
