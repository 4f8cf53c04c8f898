"""The dispatcher: attach/detach, the OOM path of SPEC section 2, budgets and fallback.

One Runtime drives one kernel. The kernel reports OOMs, PSI events and cgroup
online/offline through :class:`oomkit.kernel.base.KernelHooks`; the Runtime asks the
handlers in the pinned order, and when none made progress it calls the kernel's default
killer. Nothing a handler does can stop that fallback: a handler that raises or overruns
its budget counts as no progress, and after repeated failures it is detached.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, final

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
from oomkit.handler_call import Outcome, Worker, guard_exit
from oomkit.kernel.base import (
    PAGE_SIZE,
    Cgroup,
    Constraint,
    Kernel,
    KernelOom,
    OomFlags,
    OomRequest,
    PsiTrigger,
    Resource,
    Victim,
)
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps, ops_name
from oomkit.units import counted, format_size

T = TypeVar("T")

#: A handler call's time budget unless the config or ``--budget`` says otherwise, in
#: seconds: the same for ``simulate`` and the daemon. Half a second: the tasks of an OOMing
#: memcg (v1) or the whole machine are stalled meanwhile; a handler that takes longer is a
#: handler that should ask for a bigger budget explicitly.
DEFAULT_BUDGET_S: Final = 0.5
DEFAULT_MAX_FAILURES: Final = 3
#: After a kill, declared OOMs wait for every victim to exit and then this long: the
#: pressure that triggered the kill needs one PSI window to fall before a trigger says
#: anything new (the daemon's post_action_delay, 2 s by default: one 2 s window).
DEFAULT_POST_ACTION_DELAY_S: Final = 0.0  # the daemon's config defaults to 2 s
#: A declared OOM that found no task worth killing (min_victim) backs its domain off for
#: this long (at least the post-action delay), doubled for each such OOM in a row up to
#: REFUSED_BACKOFF_MAX_S; a refusal more than REFUSED_RESET_S after the back-off ended
#: starts again from the bottom.
REFUSED_BACKOFF_MIN_S: Final = 2.0
REFUSED_BACKOFF_MAX_S: Final = 64.0
REFUSED_RESET_S: Final = 60.0

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
    #: a call that overran and could not be interrupted, still running, and since when
    #: (the runtime's clock): the handler is not called again until it returns
    running: tuple[threading.Thread, float] | None = None
    #: attached by path before the cgroup existed: attached when it appears (and again
    #: whenever it is re-created), see Runtime.attach_oom(wait=True)
    waiting_for: str | None = None

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
    #: a call that overran and could not be interrupted, still running, and since when
    #: (the runtime's clock): the handler is not called again until it returns
    running: tuple[threading.Thread, float] | None = None

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
        post_action_delay_s: float = DEFAULT_POST_ACTION_DELAY_S,
        min_victim: int = 0,
    ) -> None:
        self.kernel = kernel
        self._sinks: list[EventSink] = [sink] if sink is not None else []
        self.budget_s = budget_s
        self.max_failures = max_failures
        self.post_action_delay_s = post_action_delay_s
        #: a declared OOM never falls back to the default killer for a task smaller than
        #: this (bytes of RSS + swap): pressure is no reason to kill a 28K helper
        self.min_victim = min_victim
        self._oom_links: dict[int, OomLink] = {}
        self._waiting: dict[str, OomLink] = {}  # cgroup path -> link attached when it appears
        self._exiting: list[Victim] = []  # victims of the last kill not yet seen gone
        self._held_logged = False  # a declared OOM held back since the last kill is logged
        self._quiet_until = 0.0  # no declared OOM before this (post-action delay)
        # declared OOMs refused for want of a victim (min_victim), per domain path:
        # (no new declared OOM there before this, refusals in a row, skipped since)
        self._refused: dict[str, tuple[float, int, int]] = {}
        self._psi_links: list[PsiLink] = []
        self._trigger_owner: dict[int, PsiLink] = {}
        self._oom_lock = threading.Lock()
        self._worker = Worker()
        self.ooms = 0
        guard_exit()
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
        wait: bool = False,
    ) -> OomLink:
        """Attach ``ops`` to a cgroup (a Cgroup, path or id) or, with None, system-wide.

        Raises AttachError(EBUSY) when that slot already has a handler, and (ENOENT) when
        the cgroup does not exist, unless ``wait`` is set and ``cgroup`` is a path: then
        the link waits (``attached`` False, an ``attach`` event saying so) and is attached
        when the cgroup appears (another ``attach`` event), and again each time it is
        re-created after going offline.
        """
        if not isinstance(ops, OomOps):
            raise AttachError(f"{ops!r} is not an OomOps", errno.EINVAL)
        budget = self.budget_s if budget_s is True else (None if budget_s is False else budget_s)
        if wait and isinstance(cgroup, str) and self.kernel.mem_cgroup(cgroup) is None:
            if cgroup in self._waiting:
                held = self._waiting[cgroup].name
                raise AttachError(f"an OomOps ({held}) already waits for {cgroup}", errno.EBUSY)
            link = OomLink(self, ops, 0, cgroup, budget, attached=False, waiting_for=cgroup)
            self._waiting[cgroup] = link
            self.emit(AttachEvent(self._now(), link.name, "oom", 0, cgroup,
                                  "waiting: the cgroup does not exist yet; attached when "
                                  "it appears"))
            return link
        cg = self._resolve(cgroup)
        key = cg.id if cg is not None else 0
        if key in self._oom_links:
            where = cg.path if cg is not None else "system-wide"
            held = self._oom_links[key].name
            raise AttachError(f"an OomOps ({held}) is already attached {where}", errno.EBUSY)
        link = OomLink(self, ops, key, cg.path if cg is not None else None, budget,
                       waiting_for=cgroup if wait and isinstance(cgroup, str) else None)
        mechanism = self.kernel.watch_oom(cg)
        self._oom_links[key] = link
        if link.waiting_for is not None:
            self._waiting[link.waiting_for] = link
        self.emit(
            AttachEvent(self._now(), link.name, "oom", key, link.cgroup_path, mechanism)
        )
        return link

    def _attach_waiting(self, link: OomLink, cg: Cgroup) -> None:
        """The cgroup a waiting link names has appeared: attach the link there."""
        if cg.id in self._oom_links:
            held = self._oom_links[cg.id].name
            self.emit(HandlerErrorEvent(self._now(), link.name, "attach", cg.id,
                                        f"{cg.path} appeared but already has an OomOps "
                                        f"({held})", False, 0))
            return
        mechanism = self.kernel.watch_oom(cg)
        link.cgroup_id = cg.id
        link.attached = True
        link.failures = 0
        self._oom_links[cg.id] = link
        self.emit(AttachEvent(self._now(), link.name, "oom", cg.id, cg.path,
                              f"the cgroup appeared; {mechanism}"))

    def _detach_oom(self, link: OomLink, reason: str) -> None:
        if not link.attached:
            if link.waiting_for is not None and self._waiting.get(link.waiting_for) is link:
                del self._waiting[link.waiting_for]
                link.waiting_for = None
                self.emit(DetachEvent(self._now(), link.name, "oom", 0, reason))
            return
        link.attached = False
        if self._oom_links.get(link.cgroup_id) is link:
            del self._oom_links[link.cgroup_id]
        if reason != "cgroup offline" and link.waiting_for is not None:
            self._waiting.pop(link.waiting_for, None)
            link.waiting_for = None
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
        for oom_link in list(self._oom_links.values()) + list(self._waiting.values()):
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
    ) -> Outcome:
        out = self._call(link, fn)
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
            why = f"{counted(link.failures, 'failure')} in a row"
            if isinstance(link, OomLink):
                self._detach_oom(link, why)
            else:
                self._detach_psi(link, why)
        return out

    def _call(self, link: OomLink | PsiLink, fn: Callable[[], Any]) -> Outcome:
        """One call of the handler, unless its previous call overran and still runs (QA G3):
        then it fails at once, no second thread for it, the fallback goes on as after any
        failure, and after max_failures the handler is detached."""
        running = link.running
        if running is not None:
            thread, since = running
            if thread.is_alive():
                return Outcome(ok=False, error=(
                    f"a call of {link.name} is still running, for "
                    f"{self._now() - since:.1f} s (it overran its budget and cannot be "
                    "stopped): not called again; restart the daemon to stop it"))
            link.running = None
        out = self._worker.call(fn, link.budget_s)
        if out.still_running is not None:
            link.running = (out.still_running, self._now() - out.duration_us / 1e6)
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
        # Not a failure: a handler that killed and returned 1 made progress, and taking that
        # as none would have the default killer kill a second time. Reported as it is.
        odd = None if not out.ok or isinstance(out.value, bool) else f"{out.value!r:.60}"
        call = HandlerCall(link.name, link.cgroup_id, returned, freed, out.duration_us, out.error,
                           odd)
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
            if request.constraint is Constraint.DECLARED:
                if self._backing_off(request):
                    return 0
                busy = self._declared_busy()
                if busy:
                    # Counted as progress, as the kernel counts waiting for a victim.
                    self.ooms += 1
                    if not self._held_logged:  # one record per hold, not one a window
                        self._held_logged = True
                        self._report(request, "default", "default", [], [],
                                     busy + "; further declared OOMs until then are "
                                     "not logged")
                    return 1
                self._held_logged = False
            return self._oom_locked(request)
        finally:
            self._oom_lock.release()

    # -- declared OOMs after a kill --------------------------------------------------------
    def _gone(self, victim: Victim) -> bool:
        cg = self.kernel.mem_cgroup(victim.cgroup)
        if cg is None:
            return True
        try:
            return all(t.pid != victim.pid for t in cg.tasks())
        except OomkitError:
            return True  # the cgroup went meanwhile: so did its tasks

    def _declared_busy(self) -> str:
        """Why a declared OOM must not kill now ("" when it may): a victim of an earlier OOM is
        exiting (its memory is on the way, as oom_evaluate_task waits for a victim; the
        pressure it left is not a new shortage), or the post-action delay since the last
        victim went has not passed (the pressure that triggered the kill needs a PSI
        window to fall before a trigger can tell anything new)."""
        now = self._now()
        if self._exiting:
            self._exiting = [v for v in self._exiting if not self._gone(v)]
            if self._exiting:
                v = self._exiting[0]
                return (f"victim {v.pid} ({v.comm}) is still exiting: waiting, no new kill "
                        "for a declared OOM")
            self._quiet_until = now + self.post_action_delay_s
        if now < self._quiet_until:
            return (f"post-action delay: no declared OOM for {self._quiet_until - now:.1f} s "
                    "more, the pressure of the last kill is still falling")
        return ""

    @staticmethod
    def _domain_key(request: OomRequest) -> str:
        return request.memcg.path if request.memcg is not None else "/"

    def _backing_off(self, request: OomRequest) -> bool:
        """A declared OOM of a domain whose last one found no task worth killing, within
        the back-off, and still none there: skipped (counted, not logged). A trigger
        fires every window while the pressure lasts; without this, a reader stalling on
        its own small cache had a record (and an incident file) every 2 s for as long as
        it ran."""
        key = self._domain_key(request)
        held = self._refused.get(key)
        if held is None or self._now() >= held[0]:
            return False
        if not self._too_small(request):  # a task worth killing came: no more waiting
            del self._refused[key]
            return False
        self._refused[key] = (held[0], held[1], held[2] + 1)
        return True

    def _refuse(self, request: OomRequest, why: str) -> str:
        """Start (or double, up to REFUSED_BACKOFF_MAX_S) the back-off of this declared
        OOM's domain; the note says what was skipped before it."""
        now = self._now()
        key = self._domain_key(request)
        held = self._refused.get(key)
        streak = held[1] + 1 if held is not None and now - held[0] < REFUSED_RESET_S else 0
        skipped = held[2] if held is not None else 0
        base = max(self.post_action_delay_s, REFUSED_BACKOFF_MIN_S)
        backoff = min(REFUSED_BACKOFF_MAX_S, base * 2 ** min(streak, 16))
        self._refused[key] = (now + backoff, streak, 0)
        said = f"{why}; no declared OOM of {key} logged for {backoff:g} s"
        if skipped:
            said += f" ({skipped} skipped since the last record)"
        return said

    def _too_small(self, request: OomRequest) -> str:
        """Why the default killer must not run for this declared OOM ("" if it may)."""
        if request.constraint is not Constraint.DECLARED or self.min_victim <= 0:
            return ""
        root = request.memcg or self.kernel.root_mem_cgroup()
        largest, held = 0, (0, "")  # held: the largest the kernel may not kill (QA Q4)
        try:
            for t in (t for cg in root.walk() for t in cg.tasks()):
                size = t.rss + t.swapents * PAGE_SIZE
                if not t.unkillable:
                    largest = max(largest, size)
                elif size > max(held[0], self.min_victim - 1):
                    why = ("init" if t.pid == 1 else "a kernel thread" if t.kthread
                           else f"oom_score_adj {t.oom_score_adj}")
                    held = (size, f"; {t.comm} (pid {t.pid}, {format_size(size)}) is {why}")
        except OomkitError:
            return ""  # the tree changed under us: let the default killer look itself
        if largest >= self.min_victim:
            return ""
        return (f"no killable task of at least {format_size(self.min_victim)} (the largest "
                f"killable has {format_size(largest)}{held[1]}): no kill for a declared OOM")

    def _note_victims(self, victims: list[Victim]) -> None:
        if not victims:
            return
        self._held_logged = False
        if getattr(self.kernel, "dry_run", False):
            # A dry run's victims never exit: waiting for them would hold every later
            # declared OOM back for good (QA F24). Take them as gone at once; the
            # post-action delay still spaces the decisions out.
            self._quiet_until = self._now() + self.post_action_delay_s
            return
        self._exiting.extend(victims)

    def _oom_locked(self, request: OomRequest) -> int:
        self.ooms += 1
        calls: list[HandlerCall] = []
        victims: list[Victim] = []
        chain: list[OomLink] = []
        dismissals: list[str] = []
        # A system-wide OOM is the root cgroup's as well: a handler attached at "/" (the
        # recommended config's tmpfs_cleanup) is asked before the system-wide one.
        cg: Cgroup | None = request.memcg or self.kernel.root_mem_cgroup()
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
            dismissals.append(oc.dismissed if not victims else "")
            if call.returned and call.memory_freed:
                self._note_victims(victims)
                self._report(request, link.name, "handler", victims, calls, "")
                return 1
        # a declared OOM a handler dismissed (OomControl.dismiss, QA Q13) is refused too
        small = next((why for why in dismissals if why), "") or self._too_small(request)
        if small:
            self._report(request, "default", "default", victims, calls,
                         self._refuse(request, small))
            return 0
        outcome = self.kernel.default_oom(request)
        victims.extend(outcome.victims)
        self._note_victims(victims)
        note = outcome.note
        if outcome.waited and not note:
            note = "a victim is still exiting: waiting, no new kill"
        self._report(request, "default", "default", victims, calls, note)
        return 1 if outcome.progress else 0

    def _recorded_elsewhere(self, request: OomRequest) -> bool:
        """The backend's watchdog handed this OOM to the kernel killer and recorded it
        while the handlers ran (one held the GIL past its budget, the process was
        stopped): it is in the event log already."""
        check = getattr(self.kernel, "oom_recorded_since", None)
        if request.since is None or request.memcg is None or check is None:
            return False
        return bool(check(request.memcg.path, request.since))

    def _report(
        self,
        request: OomRequest,
        policy: str,
        resolved_by: str,
        victims: list[Victim],
        calls: list[HandlerCall],
        note: str,
    ) -> None:
        if self._recorded_elsewhere(request):
            return  # every OOM once in the event log
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
        self._note_victims(list(report.victims))
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
        try:
            cg = self.kernel.mem_cgroup(trigger.cgroup_id) if trigger.cgroup_id else None
        except OomkitError:
            cg = None  # a removed cgroup's trigger fires once more: logged without a path
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
        waiting = self._waiting.get(path)
        if waiting is not None and not waiting.attached:
            cg = self.kernel.mem_cgroup(cgroup_id)
            if cg is not None:
                self._attach_waiting(waiting, cg)
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
