"""Dry run: the policies run, nothing is killed, and the kernel killer stays in charge.

:class:`DryRunKernel` wraps the real kernel. Reads (cgroups, tasks, statistics, PSI
triggers) go to the real kernel; the actions (``kill_tasks``, ``kill_cgroup``,
``reclaim``, ``remove_file``, ``set_memory_max``) are recorded as "would ..." lines and
*pretend to succeed*, so the OOM walk stops where it would really have stopped and the
event names the handler that would have resolved it. ``watch_oom`` arms nothing: no
``oom_kill_disable``, no guard band. The default killer is not run either; the event says
whom the kernel's own selection (oom_badness) would pick.

What a dry run can show, then (docs/daemon.md has the long form):

* every OOM the kernel resolves, with its real victims (``resolved_by: kernel``): the
  kernel was not held back, so the handlers were never asked, and asking them afterwards
  would only show a choice among the survivors;
* every PSI event, and the OOMs the PSI policies *declare*: those run the whole handler
  path on the live state, so ``would`` lists exactly what would have been killed;
* that the config loads, attaches and runs, with metrics and the status file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from oomkit.kernel.base import (
    Cgroup,
    Constraint,
    DefaultOutcome,
    Kernel,
    KernelHooks,
    KernelOom,
    OomFlags,
    OomRequest,
    PsiTrigger,
    Resource,
    Task,
)
from oomkit.kernel.oom_kill import for_each_process, scan_order, select_bad_process
from oomkit.units import format_size

if TYPE_CHECKING:
    from oomkit.clock import Clock

NOT_ARMED = "dry run: not armed, the kernel killer stays in charge"


def _task(t: Task) -> str:
    return f"pid {t.pid} ({t.comm}) in {t.cgroup.path}, rss {format_size(t.rss)}"


class _DryRunHooks:
    """Between the real kernel and the runtime: only declared OOMs reach the handlers.

    A live kernel in a dry run reports no other OOM to the runtime (nothing is armed, so
    the kernel kills on its own and the kill is seen afterwards as a ``kernel_oom``). A
    kernel that always asks first (the simulator) gets the same treatment here: its own
    default killer runs at once and the OOM is reported as resolved by the kernel.
    """

    __slots__ = ("hooks", "real")

    def __init__(self, real: Kernel, hooks: KernelHooks) -> None:
        self.real = real
        self.hooks = hooks

    def oom(self, request: OomRequest) -> int:
        if request.constraint is Constraint.DECLARED or request.memcg is None:
            # Declared, or seen by the system-wide MemAvailable watch before the kernel:
            # the handlers run on the dry-run kernel and say what they would do.
            return self.hooks.oom(request)
        outcome = self.real.default_oom(request)
        memcg = request.memcg.path if request.memcg is not None else None
        self.hooks.kernel_oom(KernelOom(memcg, outcome.victims, max(1, len(outcome.victims)),
                                        "the kernel killer (dry run: nothing held it back)"))
        return 1 if outcome.progress else 0

    def kernel_oom(self, report: KernelOom) -> None:
        self.hooks.kernel_oom(report)

    def psi_event(self, trigger: PsiTrigger) -> None:
        self.hooks.psi_event(trigger)

    def cgroup_online(self, cgroup_id: int, path: str) -> None:
        self.hooks.cgroup_online(cgroup_id, path)

    def cgroup_offline(self, cgroup_id: int, path: str) -> None:
        self.hooks.cgroup_offline(cgroup_id, path)


class DryRunKernel:
    """A Kernel whose reads are real and whose actions are only recorded."""

    #: Actions change nothing: OomControl takes their return values as they are instead
    #: of measuring the memcg (a removal "would" free what the file holds).
    dry_run = True

    def __init__(self, kernel: Kernel) -> None:
        self.real = kernel
        self._lock = threading.Lock()
        self._actions: list[str] = []

    # -- the record of what would have been done ----------------------------------------------
    def _would(self, text: str) -> None:
        with self._lock:
            self._actions.append(text)

    def take_actions(self) -> list[str]:
        """The "would ..." lines recorded since the last call."""
        with self._lock:
            actions, self._actions = self._actions, []
        return actions

    # -- reads: the real kernel's ---------------------------------------------------------------
    @property
    def clock(self) -> Clock:
        return self.real.clock

    def root_mem_cgroup(self) -> Cgroup:
        return self.real.root_mem_cgroup()

    def mem_cgroup(self, id_or_path: int | str) -> Cgroup | None:
        return self.real.mem_cgroup(id_or_path)

    def out_of_memory(self, memcg: Cgroup | None, order: int = 0,
                      flags: OomFlags = OomFlags(0), constraint_text: str | None = None) -> int:
        return self.real.out_of_memory(memcg, order, flags, constraint_text)

    def task_is_oom_victim(self, task: Task) -> bool:
        return self.real.task_is_oom_victim(task)

    def bind(self, hooks: KernelHooks | None) -> None:
        self.real.bind(_DryRunHooks(self.real, hooks) if hooks is not None else None)

    def oom_totalpages(self, memcg: Cgroup | None) -> int:
        return self.real.oom_totalpages(memcg)

    def psi_trigger_create(self, cgroup_id: int, resource: Resource, threshold_us: int,
                           window_us: int, full: bool) -> PsiTrigger:
        return self.real.psi_trigger_create(cgroup_id, resource, threshold_us, window_us, full)

    def psi_trigger_destroy(self, trigger: PsiTrigger) -> None:
        self.real.psi_trigger_destroy(trigger)

    # -- never armed ------------------------------------------------------------------------
    def watch_oom(self, cgroup: Cgroup | None) -> str:
        watch = getattr(self.real, "watch_system_memory", None)
        if cgroup is None and watch is not None:
            # Only reads: the system-wide watch declares what it sees, and the handlers
            # (and the default killer's choice) report what they would do about it.
            return f"{NOT_ARMED}; {watch()}"
        return NOT_ARMED

    def unwatch_oom(self, cgroup: Cgroup | None) -> None:
        system = getattr(self.real, "system", None)
        if cgroup is None and system is not None:
            system.disarm()

    # -- actions: recorded, pretended --------------------------------------------------------
    def kill_tasks(self, tasks: Sequence[Task], message: str, group: Cgroup | None
                   ) -> list[Task]:
        chosen = [t for t in tasks if not t.unkillable]
        why = f" ({message})" if message else ""
        via = f" [memory.oom.group {group.path}]" if group is not None else ""
        for t in chosen:
            self._would(f"kill {_task(t)}{why}{via}")
        return chosen

    def kill_cgroup(self, cgroup: Cgroup, message: str) -> list[Task]:
        tasks = [t for cg in cgroup.walk() for t in cg.tasks() if not t.kthread]
        why = f" ({message})" if message else ""
        self._would(f"kill cgroup {cgroup.path}: {len(tasks)} tasks{why}")
        for t in tasks:
            self._would(f"kill {_task(t)}")
        return tasks

    def reclaim(self, cgroup: Cgroup, nbytes: int) -> int:
        self._would(f"reclaim {format_size(nbytes)} from {cgroup.path}")
        return nbytes

    def tmpfs_files(self, path: str) -> list[tuple[str, int]]:
        return self.real.tmpfs_files(path)

    def remove_file(self, path: str) -> int:
        try:
            size = os.stat(path).st_blocks * 512
        except OSError:
            size = 0
        self._would(f"remove {path} ({format_size(size)})")
        return size

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None:
        self._would(f"set {cgroup.path} memory.max to {format_size(nbytes)} "
                    f"(now {format_size(cgroup.memory_max)})")

    def default_oom(self, request: OomRequest) -> DefaultOutcome:
        victim = self._kernel_choice(request)
        if victim is None:
            self._would("find no killable task (the default killer)")
        else:
            self._would(f"kill {_task(victim)} (the default killer's choice)")
        return DefaultOutcome(note="dry run: the default killer did not run")

    def _kernel_choice(self, request: OomRequest) -> Task | None:
        """select_bad_process over the OOM domain, read-only."""
        root = request.memcg or self.real.root_mem_cgroup()
        try:
            tasks = list(scan_order(root)) if request.memcg else for_each_process(root)
        except Exception:  # a cgroup or task vanished while we looked: nobody
            return None
        return select_bad_process(tasks, request.totalpages, lambda t: False).chosen
