"""The dispatcher: attach/detach, the OOM path of SPEC section 2, budgets and fallback.

One Runtime drives one kernel. The kernel reports OOMs, PSI events and cgroup
online/offline through :class:`oomkit.kernel.base.KernelHooks`; the Runtime asks the
handlers in the pinned order, and when none made progress it calls the kernel's default
killer. Nothing a handler does can stop that fallback: a handler that raises or overruns
its budget counts as no progress, and after repeated failures it is detached.
"""

from __future__ import annotations

import errno
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, final

from oomkit.clock import wall_perf_ns
from oomkit.errors import AttachError, KernelError, OomkitError
from oomkit.events import (
    AttachEvent,
    CgroupOfflineEvent,
    CgroupOnlineEvent,
    DetachEvent,
    Event,
    EventSink,
    HandlerCall,
    HandlerErrorEvent,
    OomEvent,
    PsiEventRecord,
)
from oomkit.kernel.base import (
    Cgroup,
    Kernel,
    KernelOom,
    OomFlags,
    OomRequest,
    PsiTrigger,
    Resource,
    Victim,
)
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps, ops_name

T = TypeVar("T")

#: A handler call's time budget unless the config or ``--budget`` says otherwise, in
#: seconds: the same for ``simulate`` and the daemon. Half a second: the tasks of an OOMing
#: memcg (v1) or the whole machine are stalled meanwhile; a handler that takes longer is a
#: handler that should ask for a bigger budget explicitly.
DEFAULT_BUDGET_S: Final = 0.5
DEFAULT_MAX_FAILURES: Final = 3


@dataclass(slots=True)
class _Outcome:
    ok: bool
    value: Any = None
    error: str | None = None
    timed_out: bool = False
    duration_us: int = 0


class _Worker:
    """Runs handler calls on a helper thread so a hung handler cannot hang the runtime.

    A call that overruns is abandoned: its thread is left to finish on its own (Python
    cannot kill a thread), its OomControl is expired so it can no longer act, and the
    next call gets a fresh thread.
    """

    __slots__ = ("_jobs", "_nested", "_thread")

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], list[_Outcome], threading.Event] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # A handler may cause another handler call (a PsiOps declaring an OOM): that one
        # runs on the next worker down, since this worker's thread is busy with the first.
        self._nested: _Worker | None = None

    def _loop(self, jobs: queue.SimpleQueue[Any]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, slot, done = job
            try:
                slot.append(_Outcome(ok=True, value=fn()))
            except BaseException as exc:  # a policy's bug is reported, never propagated
                slot.append(_Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"))
            done.set()

    def call(self, fn: Callable[[], Any], budget_s: float | None) -> _Outcome:
        start = wall_perf_ns()
        if budget_s is None:
            try:
                out = _Outcome(ok=True, value=fn())
            except Exception as exc:
                out = _Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        elif self._thread is not None and threading.current_thread() is self._thread:
            if self._nested is None:
                self._nested = _Worker()
            return self._nested.call(fn, budget_s)
        else:
            if self._thread is None or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._loop, args=(self._jobs,), name="oomkit-handler", daemon=True
                )
                self._thread.start()
            slot: list[_Outcome] = []
            done = threading.Event()
            self._jobs.put((fn, slot, done))
            if done.wait(budget_s):
                out = slot[0]
            else:
                # Abandon this thread: the stuck call keeps it; tell it to exit afterwards.
                self._jobs.put(None)
                self._thread = None
                out = _Outcome(
                    ok=False, timed_out=True, error=f"overran its budget of {budget_s:g} s"
                )
        out.duration_us = (wall_perf_ns() - start) // 1000
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
        if self._nested is not None:
            self._nested.close()


@dataclass(eq=False, slots=True)
class OomLink:
    """An attached OomOps. ``detach()`` removes it."""

    runtime: Runtime
    ops: OomOps
    cgroup_id: int
    cgroup_path: str | None
    budget_s: float | None
    failures: int = 0
    attached: bool = True

    @property
    def name(self) -> str:
        return ops_name(self.ops)

    def detach(self) -> None:
        self.runtime._detach_oom(self, "detached")


@dataclass(eq=False, slots=True)
class PsiLink:
    """An attached PsiOps with the triggers it created."""

    runtime: Runtime
    ops: PsiOps
    budget_s: float | None
    psi: Psi | None = None
    triggers: list[PsiTrigger] = field(default_factory=list)
    failures: int = 0
    attached: bool = True

    @property
    def name(self) -> str:
        return ops_name(self.ops)

    def detach(self) -> None:
        self.runtime._detach_psi(self, "detached")


@final
class Runtime:
    """Attach handlers to a kernel and run them when it runs out of memory."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        sink: EventSink | None = None,
        budget_s: float | None = DEFAULT_BUDGET_S,
        max_failures: int = DEFAULT_MAX_FAILURES,
    ) -> None:
        self.kernel = kernel
        self._sinks: list[EventSink] = [sink] if sink is not None else []
        self.budget_s = budget_s
        self.max_failures = max_failures
        self._oom_links: dict[int, OomLink] = {}
        self._psi_links: list[PsiLink] = []
        self._trigger_owner: dict[int, PsiLink] = {}
        self._oom_lock = threading.Lock()
        self._worker = _Worker()
        self.ooms = 0
        kernel.bind(self)

    # -- events ----------------------------------------------------------------------------
    def add_sink(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            sink(event)

    def _now(self) -> float:
        return self.kernel.clock.now()

    # -- attachment ------------------------------------------------------------------------
    def _resolve(self, cgroup: Cgroup | str | int | None) -> Cgroup | None:
        if cgroup is None or cgroup == 0:
            return None
        if isinstance(cgroup, Cgroup):
            return cgroup
        found = self.kernel.mem_cgroup(cgroup)
        if found is None:
            raise AttachError(f"no such cgroup: {cgroup!r}", errno.ENOENT)
        return found

    @property
    def oom_links(self) -> list[OomLink]:
        return list(self._oom_links.values())

    @property
    def psi_links(self) -> list[PsiLink]:
        return list(self._psi_links)

    def attach_oom(
        self,
        ops: OomOps,
        cgroup: Cgroup | str | int | None = None,
        *,
        budget_s: float | bool | None = True,
    ) -> OomLink:
        """Attach ``ops`` to a cgroup (a Cgroup, path or id) or, with None, system-wide.

        Raises AttachError(EBUSY) when that slot already has a handler.
        """
        if not isinstance(ops, OomOps):
            raise AttachError(f"{ops!r} is not an OomOps", errno.EINVAL)
        cg = self._resolve(cgroup)
        key = cg.id if cg is not None else 0
        if key in self._oom_links:
            where = cg.path if cg is not None else "system-wide"
            held = self._oom_links[key].name
            raise AttachError(f"an OomOps ({held}) is already attached {where}", errno.EBUSY)
        budget = self.budget_s if budget_s is True else (None if budget_s is False else budget_s)
        link = OomLink(self, ops, key, cg.path if cg is not None else None, budget)
        mechanism = self.kernel.watch_oom(cg)
        self._oom_links[key] = link
        self.emit(
            AttachEvent(self._now(), link.name, "oom", key, link.cgroup_path, mechanism)
        )
        return link

    def _detach_oom(self, link: OomLink, reason: str) -> None:
        if not link.attached:
            return
        link.attached = False
        if self._oom_links.get(link.cgroup_id) is link:
            del self._oom_links[link.cgroup_id]
        cg = self.kernel.mem_cgroup(link.cgroup_id) if link.cgroup_id else None
        if link.cgroup_id == 0 or cg is not None:
            self.kernel.unwatch_oom(cg)
        self.emit(DetachEvent(self._now(), link.name, "oom", link.cgroup_id, reason))

    def attach_psi(self, ops: PsiOps, *, budget_s: float | bool | None = True) -> PsiLink:
        """Attach a PsiOps: calls ``ops.init(psi)``; a non-zero result fails the attach."""
        if not isinstance(ops, PsiOps):
            raise AttachError(f"{ops!r} is not a PsiOps", errno.EINVAL)
        budget = self.budget_s if budget_s is True else (None if budget_s is False else budget_s)
        link = PsiLink(self, ops, budget)

        def create(
            cgroup_id: int, resource: Resource, threshold_us: int, window_us: int, full: bool
        ) -> PsiTrigger:
            if not link.attached:
                raise KernelError("this PsiOps is detached", errno.ENODEV)
            trig = self.kernel.psi_trigger_create(
                cgroup_id, resource, threshold_us, window_us, full
            )
            link.triggers.append(trig)
            self._trigger_owner[id(trig)] = link
            return trig

        link.psi = Psi(self.kernel, create)
        psi = link.psi
        out = self._worker.call(lambda: ops.init(psi), link.budget_s)
        if not out.ok or out.value != 0:
            why = out.error if not out.ok else f"init returned {out.value}"
            self._drop_triggers(link)
            link.attached = False
            code = out.value if out.ok and isinstance(out.value, int) and out.value < 0 else None
            raise AttachError(f"{link.name}: attach failed: {why}", -code if code else errno.EINVAL)
        self._psi_links.append(link)
        self.emit(AttachEvent(self._now(), link.name, "psi", 0, None, "psi triggers"))
        return link

    def _drop_triggers(self, link: PsiLink, cgroup_id: int | None = None) -> None:
        keep: list[PsiTrigger] = []
        for trig in link.triggers:
            if cgroup_id is None or trig.cgroup_id == cgroup_id:
                self._trigger_owner.pop(id(trig), None)
                try:
                    self.kernel.psi_trigger_destroy(trig)
                except OomkitError:
                    pass  # the cgroup (and so the trigger) is already gone
            else:
                keep.append(trig)
        link.triggers = keep

    def _detach_psi(self, link: PsiLink, reason: str) -> None:
        if not link.attached:
            return
        link.attached = False
        self._drop_triggers(link)
        if link in self._psi_links:
            self._psi_links.remove(link)
        self.emit(DetachEvent(self._now(), link.name, "psi", 0, reason))

    def warm_up(self) -> None:
        """Start the handler thread now, so the first OOM does not pay for it."""
        self._worker.call(lambda: None, self.budget_s or DEFAULT_BUDGET_S)

    def close(self) -> None:
        """Detach everything and unbind from the kernel."""
        for oom_link in list(self._oom_links.values()):
            self._detach_oom(oom_link, "runtime closed")
        for psi_link in list(self._psi_links):
            self._detach_psi(psi_link, "runtime closed")
        self.kernel.bind(None)
        self._worker.close()

    # -- calling handlers ------------------------------------------------------------------
    def _invoke(
        self,
        link: OomLink | PsiLink,
        callback: str,
        fn: Callable[[], Any],
        cgroup_id: int,
    ) -> _Outcome:
        out = self._worker.call(fn, link.budget_s)
        if out.ok:
            link.failures = 0
            return out
        link.failures += 1
        self.emit(
            HandlerErrorEvent(
                self._now(),
                link.name,
                callback,
                cgroup_id,
                out.error or "error",
                out.timed_out,
                link.failures,
            )
        )
        if link.failures >= self.max_failures:
            why = f"{link.failures} failures in a row"
            if isinstance(link, OomLink):
                self._detach_oom(link, why)
            else:
                self._detach_psi(link, why)
        return out

    def _ask_oom(self, link: OomLink, request: OomRequest) -> tuple[HandlerCall, OomControl]:
        oc = OomControl(
            self.kernel,
            request.memcg,
            request.order,
            request.constraint,
            request.constraint_text,
            request.totalpages,
        )
        ctx = OomContext(link.cgroup_id)
        out = self._invoke(
            link, "handle_out_of_memory", lambda: link.ops.handle_out_of_memory(ctx, oc),
            ctx.cgroup_id,
        )
        oc._expire()
        returned = bool(out.value) if out.ok else None
        freed = oc.memory_freed if out.ok else False
        call = HandlerCall(link.name, link.cgroup_id, returned, freed, out.duration_us, out.error)
        return call, oc

    # -- KernelHooks -----------------------------------------------------------------------
    def oom(self, request: OomRequest) -> int:
        """The OOM path, SPEC section 2. Returns 1 on progress, 0 without, -EBUSY."""
        if request.flags & OomFlags.WAIT_ON_OOM_LOCK:
            wait = (self.budget_s or DEFAULT_BUDGET_S) * 2
            got = self._oom_lock.acquire(timeout=wait)
        else:
            got = self._oom_lock.acquire(blocking=False)
        if not got:
            return -errno.EBUSY
        try:
            return self._oom_locked(request)
        finally:
            self._oom_lock.release()

    def _oom_locked(self, request: OomRequest) -> int:
        self.ooms += 1
        calls: list[HandlerCall] = []
        victims: list[Victim] = []
        chain: list[OomLink] = []
        cg = request.memcg
        while cg is not None:
            link = self._oom_links.get(cg.id)
            if link is not None:
                chain.append(link)
            cg = cg.parent
        system = self._oom_links.get(0)
        if system is not None:
            chain.append(system)
        for link in chain:
            if not link.attached:
                continue
            call, oc = self._ask_oom(link, request)
            calls.append(call)
            victims.extend(oc.victims)
            if call.returned and call.memory_freed:
                self._report(request, link.name, "handler", victims, calls, "")
                return 1
        outcome = self.kernel.default_oom(request)
        victims.extend(outcome.victims)
        note = outcome.note
        if outcome.waited and not note:
            note = "a victim is still exiting: waiting, no new kill"
        self._report(request, "default", "default", victims, calls, note)
        return 1 if outcome.progress else 0

    def _report(
        self,
        request: OomRequest,
        policy: str,
        resolved_by: str,
        victims: list[Victim],
        calls: list[HandlerCall],
        note: str,
    ) -> None:
        self.emit(
            OomEvent(
                self._now(),
                request.memcg.path if request.memcg is not None else None,
                request.constraint.value,
                request.constraint_text,
                policy,
                resolved_by,
                tuple(victims),
                tuple(calls),
                request.order,
                request.totalpages,
                note,
            )
        )

    def kernel_oom(self, report: KernelOom) -> None:
        self.emit(
            OomEvent(
                self._now(),
                report.memcg,
                "MEMCG" if report.memcg not in (None, "/") else "NONE",
                None,
                "kernel",
                "kernel",
                report.victims,
                (),
                note=f"seen in {report.source}"
                + (f" ({report.count} kills)" if report.count != 1 else ""),
            )
        )

    def psi_event(self, trigger: PsiTrigger) -> None:
        link = self._trigger_owner.get(id(trigger))
        cg = self.kernel.mem_cgroup(trigger.cgroup_id) if trigger.cgroup_id else None
        self.emit(
            PsiEventRecord(
                self._now(),
                trigger.cgroup_id,
                cg.path if cg is not None else None,
                trigger.resource.value,
                trigger.full,
                trigger.threshold_us,
                trigger.window_us,
            )
        )
        if link is None or not link.attached or link.psi is None:
            return
        psi = link.psi
        self._invoke(
            link,
            "handle_psi_event",
            lambda: link.ops.handle_psi_event(psi, trigger),
            trigger.cgroup_id,
        )

    def cgroup_online(self, cgroup_id: int, path: str) -> None:
        self.emit(CgroupOnlineEvent(self._now(), cgroup_id, path))
        for link in list(self._psi_links):
            if link.attached and link.psi is not None:
                psi = link.psi
                self._invoke(
                    link,
                    "handle_cgroup_online",
                    lambda lk=link, p=psi: lk.ops.handle_cgroup_online(p, cgroup_id),  # type: ignore[misc]
                    cgroup_id,
                )

    def cgroup_offline(self, cgroup_id: int, path: str) -> None:
        link = self._oom_links.get(cgroup_id)
        if link is not None:
            ctx = OomContext(cgroup_id)
            self._invoke(
                link,
                "handle_cgroup_offline",
                lambda: link.ops.handle_cgroup_offline(ctx, cgroup_id),
                cgroup_id,
            )
            self._detach_oom(link, "cgroup offline")
        for plink in list(self._psi_links):
            if plink.attached and plink.psi is not None:
                psi = plink.psi
                self._invoke(
                    plink,
                    "handle_cgroup_offline",
                    lambda lk=plink, p=psi: lk.ops.handle_cgroup_offline(p, cgroup_id),  # type: ignore[misc]
                    cgroup_id,
                )
        for plink in list(self._psi_links):
            self._drop_triggers(plink, cgroup_id)
        self.emit(CgroupOfflineEvent(self._now(), cgroup_id, path))
