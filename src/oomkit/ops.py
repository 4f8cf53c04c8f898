"""The handler contract: OomOps and PsiOps (struct bpf_oom_ops / bpf_psi_ops analogs).

A policy subclasses one of these and overrides what it needs. Policies *decide*; the
actions on :class:`OomControl` and the :class:`oomkit.Runtime` do the killing, budgeting,
fallback and reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from oomkit.errors import HandlerExpired, OomkitError, Unkillable
from oomkit.kernel.base import (
    Cgroup,
    Constraint,
    Kernel,
    PolicyKernel,
    PsiTrigger,
    Resource,
    Task,
    Victim,
)
from oomkit.kernel.oom_kill import mem_cgroup_get_oom_group, oom_kill_targets

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class OomContext:
    """Where the handler is attached: a cgroup id, or 0 for the system-wide handler."""

    cgroup_id: int


class OomOps:
    """An OOM policy. ``handle_out_of_memory`` returns True when it dealt with the OOM.

    Returning True counts only if an action on ``oc`` released memory
    (``oc.memory_freed``); otherwise the runtime goes on to the next handler, and in the
    end to the default killer.
    """

    name: str = ""

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        return False

    def handle_cgroup_offline(self, ctx: OomContext, cgroup_id: int) -> None:
        return None


class PsiOps:
    """A PSI policy: creates triggers in ``init`` and reacts to their events."""

    name: str = ""

    def init(self, psi: Psi) -> int:
        return 0

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        return None

    def handle_cgroup_online(self, psi: Psi, cgroup_id: int) -> None:
        return None

    def handle_cgroup_offline(self, psi: Psi, cgroup_id: int) -> None:
        return None


def ops_name(ops: OomOps | PsiOps) -> str:
    return ops.name or type(ops).__name__


@final
class Psi:
    """What a PsiOps gets: the kernel (SPEC section 3), and trigger creation
    (bpf_psi_create_trigger)."""

    __slots__ = ("_create", "kernel")

    def __init__(
        self,
        kernel: PolicyKernel,
        create: Callable[[int, Resource, int, int, bool], PsiTrigger],
    ) -> None:
        self.kernel = kernel
        self._create = create

    def create_trigger(
        self,
        cgroup_id: int,
        resource: Resource,
        threshold_us: int,
        window_us: int,
        full: bool = False,
    ) -> PsiTrigger:
        """A trigger firing when stall time grows by threshold_us within window_us.

        cgroup_id 0 means the whole system. Raises ``oomkit.KernelError`` (EINVAL) for a
        threshold or window the kernel would refuse.
        """
        return self._create(cgroup_id, resource, threshold_us, window_us, full)


#: Characters of a kill message kept as its victims' reason in the event record.
MAX_REASON = 1000


@final
class OomControl:
    """One OOM (struct oom_control) and the actions a handler may take on it.

    Valid only while the OOM is being handled: after the runtime moved on (for example
    because the handler overran its budget) every action raises ``HandlerExpired``.
    """

    __slots__ = (
        "_dismissed",
        "_expired",
        "_freed",
        "_kernel",
        "_victims",
        "constraint",
        "constraint_text",
        "memcg",
        "order",
        "totalpages",
    )

    def __init__(
        self,
        kernel: Kernel,
        memcg: Cgroup | None,
        order: int,
        constraint: Constraint,
        constraint_text: str | None,
        totalpages: int,
    ) -> None:
        self._kernel = kernel
        self.memcg = memcg
        self.order = order
        self.constraint = constraint
        self.constraint_text = constraint_text
        self.totalpages = totalpages
        self._freed = False
        self._expired = False
        self._victims: list[Victim] = []
        self._dismissed = ""

    def __repr__(self) -> str:
        where = self.memcg.path if self.memcg is not None else "system"
        return f"<OomControl {where} {self.constraint.value} freed={self._freed}>"

    @property
    def kernel(self) -> PolicyKernel:
        """The kernel, as far as a policy may call it (SPEC section 3); actions go through
        this OomControl."""
        return self._kernel

    @property
    def memory_freed(self) -> bool:
        return self._freed

    @property
    def victims(self) -> tuple[Victim, ...]:
        return tuple(self._victims)

    @property
    def dismissed(self) -> str:
        """Why a handler dismissed this declared OOM ("" when none did), see dismiss()."""
        return self._dismissed

    def dismiss(self, reason: str) -> None:
        """Say that this *declared* OOM (Constraint.DECLARED, a PsiOps's
        kernel.out_of_memory) has nothing worth killing for: the handler returns False
        and the runtime ends the OOM with ``reason`` as its note, without the default
        killer, and backs the domain's declared OOMs off as it does for one without a
        task worth killing. The kernel's own OOM killer is untouched: a real OOM still
        reaches it. Raises ``ValueError`` for any other OOM (a kernel OOM is never
        dismissed: the fallback to the kernel killer is never disabled)."""
        self._check()
        if self.constraint is not Constraint.DECLARED:
            raise ValueError("only a declared OOM can be dismissed")
        self._dismissed = reason or "dismissed by a handler"

    # -- the runtime's ----------------------------------------------------------------------
    def _clear_freed(self) -> None:
        self._freed = False

    def _expire(self) -> None:
        self._expired = True

    def _check(self) -> None:
        if self._expired:
            raise HandlerExpired("this OOM was already dealt with; the action was not taken")

    # -- actions (kfunc analogs) -----------------------------------------------------------
    def kill_process(self, task: Task, message: str = "") -> None:
        """bpf_oom_kill_process: SIGKILL ``task``; widened by memory.oom.group.

        Raises ``Unkillable`` (EPERM) for oom_score_adj -1000, init and kernel threads.
        """
        self._check()
        if task.unkillable:
            raise Unkillable(f"pid {task.pid} ({task.comm}) may not be killed")
        self._in_domain(task.cgroup, f"pid {task.pid} ({task.comm})")
        group = mem_cgroup_get_oom_group(task.cgroup, self.memcg)
        targets = oom_kill_targets(task, group)
        killed = self._kernel.kill_tasks(targets, message, group)
        self._note(killed, message)

    def kill_cgroup(self, cgroup: Cgroup, message: str = "") -> int:
        """Kill every task in ``cgroup`` and below (cgroup.kill). Returns how many."""
        self._check()
        self._in_domain(cgroup, f"cgroup {cgroup.path}")
        killed = self._kernel.kill_cgroup(cgroup, message)
        self._note(killed, message)
        return len(killed)

    def _in_domain(self, cgroup: Cgroup | None, what: str) -> None:
        """A memcg OOM is ended only by freeing memory charged inside the OOMing memcg: a
        kill elsewhere is no progress, so it is refused (Unkillable, EPERM) rather than
        taken and logged as if it freed this memcg."""
        domain = self.memcg
        if domain is None or domain.path == "/":
            return  # system-wide: every task is in the domain
        path = cgroup.path if cgroup is not None else None
        if path is None or not (path == domain.path or path.startswith(domain.path + "/")):
            raise Unkillable(f"{what} is in {path or 'no cgroup'}, outside the OOM domain "
                             f"{domain.path}: not killed (it would free nothing there)")

    def reclaim(self, cgroup: Cgroup, nbytes: int) -> int:
        """Proactive reclaim (memory.reclaim). Returns the bytes actually reclaimed."""
        self._check()
        got = self._kernel.reclaim(cgroup, nbytes)
        if got > 0:
            self._freed = True
        return got

    def remove_file(self, path: str) -> int:
        """Unlink a file (e.g. on tmpfs). Returns the bytes actually freed for this OOM: for
        a memcg OOM, what the OOMing memcg's usage went down by (at most the file's size). A
        tmpfs page stays charged to the memcg that first wrote it; deleting a file another
        memcg paid for frees nothing here and is no progress (SPEC section 3)."""
        self._check()
        domain = self.memcg if self.memcg is not None and self.memcg.path != "/" else None
        measure = domain is not None and not getattr(self._kernel, "dry_run", False)
        before = domain.usage() if measure and domain is not None else 0
        got = self._kernel.remove_file(path)
        if measure and domain is not None and got > 0:
            try:
                # Unlinking truncates the file: its pages are uncharged before this returns.
                got = max(0, min(got, before - domain.usage()))
            except OomkitError:
                pass  # the memcg went meanwhile, and its memory with it
        if got > 0:
            self._freed = True
        return got

    def set_memory_max(self, cgroup: Cgroup, nbytes: int | None) -> None:
        """Change memory.max. Raising the limit of the OOMing cgroup is progress too."""
        self._check()
        before = cgroup.memory_max
        self._kernel.set_memory_max(cgroup, nbytes)
        raised = nbytes is None or (before is not None and nbytes > before)
        if raised:
            self._freed = True

    def _note(self, killed: list[Task], message: str) -> None:
        # The handler's message goes with each victim into the OOM's event record: the
        # kernel has no place for it (a SIGKILL carries no text), the user reading who
        # died needs it.
        if killed:
            self._freed = True
            reason = message if isinstance(message, str) else str(message)
            if len(reason) > MAX_REASON:  # one line of a log, not a policy's whole state
                reason = reason[:MAX_REASON - 3] + "..."
            self._victims.extend(Victim.of(t, reason) for t in killed)
