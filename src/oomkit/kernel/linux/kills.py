"""Kills: SIGKILL through pidfds, ``process_mrelease``, and the victims still exiting.

A task is killed through a pidfd (``pidfd_open`` + ``pidfd_send_signal``), never by bare
PID, so a PID recycled between the choice and the kill is never hit: the pidfd pins the
process and its start time is checked against the chosen task's. Right after SIGKILL,
``process_mrelease`` reaps the victim's address space (as the kernel's oom_reaper does
for its own victims), so the memory comes back before the process has finished exiting.
The pidfd stays open until it polls readable (the process exited): while it is open the
victim is "pending", and the OOM watchers wait rather than kill again (as the kernel's
``oom_evaluate_task`` aborts the scan while a victim ``tsk_is_oom_victim``).
"""

from __future__ import annotations

import functools
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomkit.errors import CgroupGone, KernelError, TaskGone
from oomkit.kernel.base import Task
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import fsio, procfs
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.loop import EventLoop, close_fd

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


@dataclass(eq=False, slots=True)
class TrackedVictim:
    pidfd: int
    cgroup_path: str
    killed_at: float


class Killer:
    """Sends the kills and tracks the victims until they exit."""

    def __init__(self, kernel: LinuxKernel, loop: EventLoop, lock: threading.RLock) -> None:
        self._kernel = kernel
        self._loop = loop
        self._lock = lock
        self._victims: dict[tuple[int, int], TrackedVictim] = {}
        #: when the last SIGKILL went out (the kernel's clock, seconds), None before any
        self.last_kill_at: float | None = None

    def _trace(self, stage: str) -> None:
        self._kernel.trace_stage(stage)

    def kill(self, tasks: Sequence[Task], *, skip_unkillable: bool) -> list[Task]:
        """SIGKILL each task (never a kernel thread or PID 1; ``skip_unkillable``: nor one
        with oom_score_adj -1000) and mrelease it; the tasks killed."""
        killed: list[tuple[Task, int]] = []
        proc = self._kernel.procfs
        for t in tasks:
            if t.kthread or t.pid == 1 or (skip_unkillable and t.unkillable):
                continue
            try:
                pidfd = procfs.pidfd_open(t.pid)
            except TaskGone:
                continue
            try:
                # The pidfd pins the process; a PID recycled before we opened it shows a
                # different start time now.
                if t.start_time and proc.stat(t.pid).start_time != t.start_time:
                    close_fd(pidfd)
                    continue
                procfs.pidfd_kill(pidfd, t.pid)
            except (TaskGone, ValueError):
                close_fd(pidfd)
                continue
            killed.append((t, pidfd))
        if not killed:
            return []
        self._trace("kill_sent")
        self._reap(killed)
        return [t for t, _ in killed]

    def _reap(self, killed: list[tuple[Task, int]]) -> None:
        now = self._kernel.clock.now()
        self.last_kill_at = now
        for t, pidfd in killed:
            try:
                procfs.process_mrelease(pidfd)
            except KernelError:
                pass
            self._track(t, pidfd, now)
        self._trace("mrelease_done")

    def kill_cgroup(
        self, cg: LinuxCgroup, atomic: bool, freezer: str | None
    ) -> list[Task]:
        """Kill every task of ``cg``'s subtree. ``atomic``: by ``cgroup.kill`` (v2, 5.14+);
        else by pidfds, in the v1 freezer at ``freezer`` (a ``freezer.state`` path) if
        one mirrors this cgroup."""
        subtree = [c for c in cg.walk() if isinstance(c, LinuxCgroup)]
        tasks = [t for c in subtree for t in c.tasks()]
        if not atomic:
            return self._kill_each(subtree, tasks, freezer)
        # Pidfds first (for process_mrelease and exit tracking), then the atomic kill.
        pinned: list[tuple[Task, int]] = []
        for t in tasks:
            try:
                pinned.append((t, procfs.pidfd_open(t.pid)))
            except TaskGone:
                continue
        cg.write(cf.CGROUP_KILL, "1")
        self._trace("kill_sent")
        self._reap(pinned)
        return [t for t, _ in pinned]

    def _kill_each(
        self, subtree: list[LinuxCgroup], tasks: list[Task], freezer: str | None
    ) -> list[Task]:
        """No cgroup.kill: freeze (if we can) and kill every task, repeating until
        cgroup.procs is empty so a fork racing the kill loses."""
        clock = self._kernel.clock
        killed: list[Task] = []
        seen: set[tuple[int, int]] = set()
        try:
            if freezer is not None:
                fsio.write_text(freezer, "FROZEN")
            deadline = clock.now() + 1.0
            while tasks:
                fresh = [t for t in tasks if (t.pid, t.start_time) not in seen]
                seen.update((t.pid, t.start_time) for t in fresh)
                killed.extend(self.kill(fresh, skip_unkillable=False))
                if clock.now() > deadline:
                    break
                if freezer is not None:
                    break  # frozen tasks cannot fork: one round is all of them
                time.sleep(0.001)
                tasks = []
                for c in subtree:
                    try:
                        tasks.extend(
                            t for t in c.tasks() if (t.pid, t.start_time) not in seen
                        )
                    except CgroupGone:
                        continue
        finally:
            if freezer is not None:
                fsio.write_text(freezer, "THAWED")
        return killed

    # -- victims ---------------------------------------------------------------------------
    def _track(self, t: Task, pidfd: int, now: float) -> None:
        key = (t.pid, t.start_time)
        with self._lock:
            old = self._victims.pop(key, None)
            self._victims[key] = TrackedVictim(pidfd, t.cgroup.path, now)
        if old is not None:
            self._loop.del_fd(old.pidfd)
            close_fd(old.pidfd)
        # A pidfd polls readable when the process exited: no polling for the exit.
        self._loop.add_fd(pidfd, select.EPOLLIN, functools.partial(self._exited, key))

    def _exited(self, key: tuple[int, int], _mask: int = 0) -> None:
        with self._lock:
            v = self._victims.pop(key, None)
        if v is not None:
            self._loop.del_fd(v.pidfd)
            close_fd(v.pidfd)

    def is_victim(self, task: Task) -> bool:
        """Killed by us and not yet exited, SIGKILL pending (someone else's kill), or
        exiting: a victim of the kernel's killer whose memory the OOM reaper already took
        has no SIGKILL pending any more and a small RSS, and must not make the next
        process look like the largest (the kernel waits for such a task too:
        oom_evaluate_task() aborts on tsk_is_oom_victim())."""
        with self._lock:
            if (task.pid, task.start_time) in self._victims:
                return True
        try:
            info = self._kernel.procfs.task(task.pid)
        except TaskGone:
            return False
        return info.start_time == task.start_time and (info.sigkill_pending or info.exiting)

    def pending(self, domain: str) -> bool:
        """A victim of ours is still exiting in this domain, killed less than
        ``recheck_s`` ago (the kernel waits for its victims, so do we)."""
        now = self._kernel.clock.now()
        recheck_s = self._kernel.recheck_s
        with self._lock:
            for v in self._victims.values():
                inside = domain == "/" or v.cgroup_path == domain or v.cgroup_path.startswith(
                    domain + "/"
                )
                if inside and now - v.killed_at < recheck_s:
                    return True
        return False

    def close(self) -> None:
        with self._lock:
            victims = list(self._victims.values())
            self._victims.clear()
        for v in victims:
            close_fd(v.pidfd)


def freezer_state_path(
    freezer_root: str | None, prefix: str | None, cg_path: str, exists: Callable[[str], bool]
) -> str | None:
    """The v1 ``freezer.state`` mirroring the memory cgroup at ``cg_path`` (the same path
    in the freezer hierarchy), if there is one; never the freezer's root."""
    if freezer_root is None or prefix is None:
        return None
    candidate = freezer_root + prefix + ("" if cg_path == "/" else cg_path)
    path = os.path.join(candidate, cf.V1_FREEZER_STATE)
    if candidate != freezer_root and exists(path):
        return path
    return None
