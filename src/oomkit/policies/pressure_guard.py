"""pressure_guard: declare an OOM where memory is short, for memory and IO pressure.

The recommended PSI policy. "full" triggers on memory and on IO, for the machine and
every cgroup (new ones too; cgroup v1 has only the machine's), and the machine's memory
"some" (``machine_some``) as a wake-up: "full" needs every task stalled at once, and
programs that take turns on the CPUs keep it near the threshold (18-29 % per 2 s in the
v2 guest's f10, three readers thrashing beside a sleeping hog: the machine's "full"
trigger fired 3 times in 25 s). An event from "some" declares only on refault evidence
with a kill that makes room (below), never on growth alone. When one fires:

- the domain is found (oomkit.policies.cause.domain_of): the nearest cgroup at its own
  limit, else the machine. The machine is a domain only for the machine's own trigger:
  "full" there means every task that wanted to run was stalled, while a cgroup that
  stalls alone (a reader streaming more than fits, waiting on its disk) hurts nobody but
  itself; unless the machine swapped that cgroup's working set out (QA G2): swap in
  use, the cgroup fully stalled ``cgroup_stall`` percent of the time since its previous
  event, and swapping its own working set back in (anon activations at
  ``min_activations`` pages/s). Many runnable workers keep the machine's "full" low
  while a desktop they pushed to swap waits nearly all the time. A machine-wide
  trigger while some cgroup at its limit has pressure of its own is that cgroup's
  business: its own trigger declares there. The machine is short only while MemFree is
  under ``min_free`` of RAM (reclaim keeps it within a few percent of RAM then: 5-9 % in
  the 1G guest); pressure with memory free again is a recovery (the programs a kill
  saved re-read their files), not a new shortage.
- on the machine, memory pressure counts only with the evidence below or with footprint
  growth of ``min_growth`` per second (several CPUs: one reader stalled on its own CPU
  shows "full" already; reclaiming its own page cache is no shortage). With nothing
  growing, a kill must be able to make room for what the refaulting cgroups miss
  (_kill_helps): a reader of a file larger than the machine is left alone.
- on the machine while swap has more than ``swap_room`` free, the shortage must last: an
  event in the window before too (_lasts). A heap that swings up for a second or two and
  back is absorbed by swap (n18); a build storm still dies within two windows (f04).
- IO pressure counts only with refaults of pages that were still in the workingset
  (``workingset_activate``: a working set that would fit, being pushed out) at
  ``min_activations`` pages/s or more. A reader streaming a file larger than memory waits
  on IO too, but hurts nobody else; the kernel does not flag those refaults. With more
  than ``swap_room`` of swap free only anon activations count: the kernel then counts
  anon in the workingset size (workingset_test_recent()), flagging a stream too, and
  makes room for file pages itself by swapping cold anon out.
- a domain held at its own ``memory.high`` (not within 1/16 of a ``memory.max``) is
  throttled on purpose: the kernel slows it down instead of killing it (MemoryHigh=, "the
  main mechanism to control memory usage of a unit", systemd.resource-control(5)), and a
  job that swaps its coldest pages out goes on, slowly. It is declared only when it makes
  no progress: its triggers fired window after window for ``high_patience`` seconds and
  it was fully stalled (memory or IO, from its own PSI totals) ``high_stall`` percent of
  that time or more, as a service at a 10M memory.high without swap is, which can never
  get under it (systemd#21684, ../shared/field/f07) - QA G20.
- the OOM is declared there (CONSTRAINT_PSI_MEM or CONSTRAINT_PSI_IO, then ": " and
  the evidence: the trigger, MemFree, refaults, growth, why a kill helps); the OomOps
  rank the cause (kill_cause). The runtime holds declared OOMs while a victim exits and for
  the post-action delay after.

Every event also samples the cgroups' counters (growth, refaults) for the ranking.
Defaults: 500 ms of full stall within 2 s (windows of 2 s work without CAP_SYS_RESOURCE).
"""

from __future__ import annotations

from oomkit.errors import OomkitError
from oomkit.kernel.base import PAGE_SIZE, Cgroup, PolicyKernel, PsiTrigger, Resource
from oomkit.ops import Psi, PsiOps
from oomkit.policies import cause, sysmem
from oomkit.policy_args import Duration, Percent, Size
from oomkit.units import format_size

# A cgroup that refaults while no file refault in its domain is activated is taken to miss
# this many times the page cache it thrashes in (see _kill_helps): a kill helps when it at
# least doubles that cache. Three programs thrashing in 110M beside a 618M hog: yes; a
# reader thrashing in 550M of cache beside a 300M service (a file 1.4x the RAM): no.
BLIND_MISS = 1
# Under this share of a domain's file refaults activated, the share tells nothing about
# the room a kill makes (see _kill_helps).
BLIND_SHARE = 1 / 8


class PressureGuard(PsiOps):
    name = "pressure_guard"

    def __init__(self, threshold: Duration = 0.5, window: Duration = 2.0, io: bool = True,
                 min_activations: int = 1000, min_free: Percent = 12.0,
                 cgroups: bool = True, swap_room: Percent = 10.0,
                 min_growth: Size = 1 << 20, high_patience: Duration = 6.0,
                 high_stall: Percent = 75.0, cgroup_stall: Percent = 75.0,
                 machine_some: bool = True) -> None:
        self.machine_some = machine_some
        self.cgroup_stall = cgroup_stall
        # per cgroup not at a limit: (last event, its full memory and IO totals (us))
        self._stall_seen: dict[int, tuple[float, int, int]] = {}
        # the machine's last memory/IO event (its time) while swap had room: see _lasts
        self._machine_seen = float("-inf")
        self.high_patience = high_patience
        self.high_stall = high_stall
        # per domain held at its memory.high: (first event, last event, its full memory
        # and IO stall totals (us) at the first event) of the current run of events
        self._high: dict[int, tuple[float, float, int, int]] = {}
        self.min_free = min_free
        self.swap_room = swap_room
        self.min_growth = min_growth
        self.threshold_us = int(threshold * 1e6)
        self.window_us = int(window * 1e6)
        self.io = io
        self.min_activations = min_activations
        self.cgroups = cgroups
        from oomkit.policy_args import check_trigger

        check_trigger(threshold, window, "threshold", "window")  # QA Q6: refused at load

    def _watch(self, psi: Psi, cgroup_id: int) -> None:
        for res in (Resource.MEMORY, Resource.IO) if self.io else (Resource.MEMORY,):
            try:
                psi.create_trigger(cgroup_id, res, self.threshold_us, self.window_us,
                                   full=True)
            except OomkitError as exc:
                from oomkit.kernel.psi_trigger import trigger_refused

                if trigger_refused(exc):
                    # the kernel refused these values (QA Q6): an error the runtime logs
                    # (at init: the attach fails), not a cgroup without pressure files
                    raise
                return  # no pressure files for cgroups here (v1), or gone already

    def init(self, psi: Psi) -> int:
        self._watch(psi, 0)
        if self.machine_some:
            # The machine's "some": a wake-up for the refault evidence (see the module doc).
            try:
                psi.create_trigger(0, Resource.MEMORY, self.threshold_us, self.window_us,
                                   full=False)
            except OomkitError:
                pass  # no PSI here: the "full" triggers (if any) are all there is
        root = psi.kernel.root_mem_cgroup()
        if self.cgroups:
            for cg in root.walk():
                if cg.parent is not None:
                    self._watch(psi, cg.id)
        cause.tracker(psi.kernel).note_tree(root, psi.kernel.clock.now())
        return 0

    def handle_cgroup_online(self, psi: Psi, cgroup_id: int) -> None:
        if self.cgroups:
            self._watch(psi, cgroup_id)
        cg = psi.kernel.mem_cgroup(cgroup_id)
        if cg is not None:
            cause.tracker(psi.kernel).note(cg, psi.kernel.clock.now())

    def handle_cgroup_offline(self, psi: Psi, cgroup_id: int) -> None:
        cause.tracker(psi.kernel).forget(cgroup_id)
        self._high.pop(cgroup_id, None)
        self._stall_seen.pop(cgroup_id, None)

    @staticmethod
    def _held_at_high(domain: Cgroup) -> bool:
        """Is domain's shortage its memory.high, not a memory.max (within 1/16)?"""
        high, top = domain.memory_high, domain.memory_max
        if high is None:
            return False
        return top is None or (high < top and domain.usage() < top - top // 16)

    @staticmethod
    def _full_totals(cg: Cgroup) -> tuple[int, int] | None:
        """cg's full memory and IO stall totals (us); None where it has none (v1)."""
        try:
            return (cg.pressure(Resource.MEMORY).full.total,
                    cg.pressure(Resource.IO).full.total)
        except OomkitError:
            return None

    def _note_high(self, domain: Cgroup, now: float) -> None:
        """One more event of a domain held at its memory.high: a run of events goes on
        while they come at most two windows apart (a trigger fires once a window)."""
        held = self._high.get(domain.id)
        if held is not None and now - held[1] <= 2 * self.window_us / 1e6 + 0.5:
            self._high[domain.id] = (held[0], now, held[2], held[3])
            return
        mem, io = self._full_totals(domain) or (0, 0)
        self._high[domain.id] = (now, now, mem, io)

    def _no_progress(self, domain: Cgroup, now: float) -> bool:
        """Has domain (held at its memory.high) been stalled for high_patience seconds,
        high_stall percent of that time or more (see the module doc)?"""
        held = self._high.get(domain.id)
        if held is None or now - held[0] < self.high_patience:
            return False
        totals = self._full_totals(domain)
        if totals is None:
            return True  # no pressure files: the run of events is all there is
        stalled = max(totals[0] - held[2], totals[1] - held[3]) / 1e6
        return stalled >= (now - held[0]) * self.high_stall / 100

    def _swapped_out_by_others(self, cg: Cgroup, info: sysmem.MemInfo,
                               activity: cause.Activity, now: float) -> bool:
        """Is cg (not at a limit) stalled most of the time because the machine pushed its
        working set out to swap (QA G2)? Swap in use, cg fully stalled (its own "full"
        memory or IO avg10) ``cgroup_stall`` percent of the time or more, and swapping its
        own working set back in: anon refaults the kernel activates (workingset_refault():
        the refault distance within the workingset, which counts anon with swap) at
        ``min_activations`` pages/s. A reader stalled on its own file data refaults file
        pages, not anon: it stays its own business."""
        totals = self._full_totals(cg)
        last = self._stall_seen.get(cg.id)
        if totals is not None:
            self._stall_seen[cg.id] = (now, totals[0], totals[1])
        if info.swap_total <= 0 or info.swap_free >= info.swap_total:
            return False
        if totals is not None and last is not None and (
                0 < now - last[0] <= 2 * self.window_us / 1e6 + 0.5):
            # Its stall since its previous event (a trigger fires once a window): the
            # avg10 would take some 15 s to show a stall of 90 % as 75 %.
            stalled = max(totals[0] - last[1], totals[1] - last[2]) / 1e6
            share = 100 * stalled / (now - last[0])
        else:
            share = max(cause.own_full_avg10(cg, Resource.MEMORY),
                        cause.own_full_avg10(cg, Resource.IO))
        if share < self.cgroup_stall:
            return False
        rates = activity.rates(cg, now)
        return rates.per_s(rates.anon_activations) >= self.min_activations

    def _lasts(self, now: float) -> bool:
        """Has the machine's shortage lasted (an event in the window before this one
        too)? While swap has room the kernel absorbs a spike there: a job whose heap swings
        up for a second or two and back stalls the others about as long, and neither the
        kernel (everything fits) nor earlyoom (swap nearly all free) nor systemd-oomd (30 s
        over its limit) would kill (systemd/systemd#23606, n18). Two windows in a row
        still end a build storm within 10 s (f04)."""
        last, self._machine_seen = self._machine_seen, now
        return 0 < now - last <= 2 * self.window_us / 1e6 + 0.5

    def _limited_elsewhere(self, root: Cgroup, resource: Resource) -> bool:
        """Is some cgroup at its own limit with pressure of its own (its business)?"""
        for cg in root.walk():
            if cg.parent is not None and cause.at_limit(cg) and cause.own_full_avg10(cg, resource):
                return True
        return False

    def _kill_helps(self, root: Cgroup, activity: cause.Activity, now: float,
                    size: int) -> str | None:
        """Could a kill in root (a domain of ``size`` bytes) end the refaults? Returns why
        it could (for the declaration's text) or None. Yes when a
        cgroup streams into it (cause.streams: killing it stops the eviction), else when
        killing the largest cgroup that does not re-read its files makes room for the
        file working sets of those that do. The kernel activates a refault when its
        refault distance is within the active list (mm/workingset.c): with a share p of
        a cgroup's refaults activated, what it misses is about its active list (half its
        page cache) / p. A reader of far more than fits misses more than any kill
        covers: it stalls on its own data, as it would alone. A cgroup without tasks
        (a victim's page cache, still charged) is no one to kill: the refaults while
        reclaim drops it are a recovery. Swap-ins (anon activations) are not weighed
        here: the cgroup that swaps is itself a candidate. Where the kernel activates
        under BLIND_SHARE of the domain's file refaults, that share tells nothing (see
        below): a cgroup with a tenth or more of the refaults is then taken to miss
        BLIND_MISS times its page cache (the kill must double the cache the readers
        thrash in), and on the machine only where two or more cgroups thrash so."""
        total = activity.rates(root, now)
        total_file = total.activations - total.anon_activations
        # (Almost) no file activation: the kernel's test cannot see the room a kill makes
        # (without swap the anon a kill frees is not in the workingset size; with MGLRU a
        # refault is "recent" by generations, and a cyclic reader of a file four times its
        # cache is never so). A few activations here and there (MGLRU: 0 one second,
        # 1-2k/s the next, of 25k refaults/s in the guest's f10) only make p tiny and
        # the need of the formula above a multiple of the RAM. Each cgroup that refaults
        # is then taken to miss BLIND_MISS times the page cache it thrashes in.
        blind = total.refaults > 0 and total_file < total.refaults * BLIND_SHARE
        need = 0.0
        largest_other = 0
        readers: list[str] = []
        for cg in cause.leaves(root):
            if cg.parent is None:
                continue
            try:
                r = activity.rates(cg, now)
                others = total.per_s(total.activations) - r.per_s(r.activations)
                if cause.streams(r, others, size):
                    return (f"{cg.path} streams in "
                            f"{format_size(int(r.per_s(r.charged) * PAGE_SIZE))}/s")
                st = cause.Stat(cg)
                file_act = r.activations - r.anon_activations
                if not blind and file_act > 0 and file_act * 10 >= total_file and r.refaults:
                    need += st.page("file") / 2 / min(1.0, file_act / r.refaults)
                    readers.append(cg.path)
                elif blind and r.refaults and r.refaults * 10 >= total.refaults:
                    need += st.page("file") * BLIND_MISS
                    readers.append(cg.path)
                else:
                    largest_other = max(largest_other, cause.footprint(cg, st))
            except OomkitError:
                continue
        if blind and len(readers) < 2 and root.parent is None:
            # Blind, one job re-reading: no counter tells a program pushed out of the room
            # its files had from a lone reader of more than the machine holds, who hurts
            # nobody but itself (a 600M service died for a reader of a file 1.4x the RAM).
            # Several jobs thrashing on their own files at once is a machine too short.
            return None
        if largest_other < need:
            return None
        return (f"{len(readers)} cgroup(s) re-read their files "
                f"({', '.join(p.rsplit('/', 1)[-1] for p in readers[:3])}"
                f"{', ...' if len(readers) > 3 else ''}), missing about "
                f"{format_size(int(need))}{' (blind: no activations)' if blind else ''}; "
                f"a kill frees up to {format_size(largest_other)}")

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        kernel = psi.kernel
        now = kernel.clock.now()
        root = kernel.root_mem_cgroup()
        activity = cause.tracker(kernel)
        try:
            # A removed cgroup's trigger fires once more (EPOLLERR): gone, not an error
            # (three handler errors in a row would detach the policy).
            where = kernel.mem_cgroup(trigger.cgroup_id) if trigger.cgroup_id else None
            if trigger.cgroup_id and where is None:
                return  # gone meanwhile
            why = self._evidence(kernel, trigger, where, root, activity, now)
            if why is not None:
                domain, text = why
                kernel.out_of_memory(domain, 0, constraint_text=text)
        except OomkitError:
            return  # a cgroup on the way went meanwhile: the next event looks again
        finally:
            activity.note_tree(root, now)

    def _evidence(self, kernel: PolicyKernel, trigger: PsiTrigger, where: Cgroup | None,
                  root: Cgroup, activity: cause.Activity, now: float
                  ) -> tuple[Cgroup | None, str] | None:
        """(domain, constraint text) of the OOM this event declares, or None. The text
        names the evidence: "CONSTRAINT_PSI_MEM: machine memory some 500ms/2s; MemFree
        5.9% (< 12%); refaults 23270/s, 0/s activated; 3 cgroup(s) re-read their files
        ...". Raises OomkitError when a cgroup on the way went meanwhile."""
        some = not trigger.full  # the machine's memory "some": a wake-up (module doc)
        domain = cause.domain_of(where)
        if domain is None and where is not None:
            # Felt by one cgroup, not at a limit: the machine's trigger decides, unless
            # the machine is short and swapped this cgroup's working set out. Then
            # the machine's "full" may stay low (the others keep running: full needs
            # every task stalled) while this one stalls nearly all the time.
            short = sysmem.meminfo(kernel)
            if short is None or not self._swapped_out_by_others(where, short, activity,
                                                                 now):
                return None
        high = domain is not None and self._held_at_high(domain)
        if high and where is domain:
            assert domain is not None
            self._note_high(domain, now)
        if domain is None and self._limited_elsewhere(root, trigger.resource):
            return None
        info = sysmem.meminfo(kernel) if domain is None else None
        if info is not None and info.free > info.total * self.min_free / 100:
            return None
        rates = activity.rates(domain or root, now)
        pushed_out = rates.activations
        swap_room = info is not None and info.swap_free > info.swap_total * self.swap_room / 100
        if swap_room:
            # With room in swap, the kernel makes room for a file working set itself
            # by swapping out cold anon (workingset_test_recent() counts anon in the
            # workingset size, so a reader of more than fits is flagged too): only
            # swap-ins of a working set tell a thrash that a kill ends.
            pushed_out = rates.anon_activations
        pushing = rates.per_s(pushed_out) >= self.min_activations
        # On the machine without room in swap, file refaults the kernel did not
        # activate may still be a working set pushed out by anon it cannot reclaim
        # (its test leaves that anon out): evidence only where a kill makes room.
        rereading = (domain is None and not pushing and not swap_room
                     and rates.per_s(rates.refaults) >= self.min_activations)
        growing = rates.per_s(rates.footprint_growth) >= self.min_growth
        if (trigger.resource is Resource.IO or some) and not (pushing or rereading):
            return None  # stalls, but no working set is being pushed out
        if domain is None and not pushing and not growing and not rereading:
            # Memory stalls on the machine, but nothing grows and no working set is
            # pushed out: a reader reclaiming its own page cache, not a shortage.
            return None
        if domain is None and swap_room and not self._lasts(now):
            return None  # one window of it: a spike that swap absorbs (n18)
        size = (cause.limit_of(domain) or domain.usage() if domain is not None
                else (info.total if info is not None else 0))
        # "some" wakes up on any stall (one task reclaiming): only a kill that makes
        # room for the working sets pushed out counts then, whatever grows.
        check = some or (pushing and not growing) or (
            rereading and (not growing or trigger.resource is Resource.IO))
        helps = self._kill_helps(domain or root, activity, now, size) if check else None
        if check and helps is None:
            # A working set larger than any kill could make room for, or one that
            # comes back after a kill (the victim's cache is still charged).
            return None
        if high and domain is not None and not self._no_progress(domain, now):
            return None  # throttled on purpose and still getting on (QA G20)
        res = "io" if trigger.resource is Resource.IO else "memory"
        felt = where.path if where is not None else "machine"
        terms = [f"{felt} {res} {'some' if some else 'full'} "
                 f"{trigger.threshold_us // 1000}ms/{trigger.window_us / 1e6:g}s"]
        if info is not None:
            terms.append(f"MemFree {100 * info.free / max(1, info.total):.1f}% "
                         f"(< {self.min_free:g}%)")
        terms.append(f"refaults {rates.per_s(rates.refaults):.0f}/s, "
                     f"{rates.per_s(pushed_out):.0f}/s activated"
                     f"{' (anon)' if swap_room else ''}")
        if growing:
            terms.append(f"footprint grows "
                         f"{format_size(int(rates.per_s(rates.footprint_growth)))}/s")
        if helps is not None:
            terms.append(helps)
        text = "CONSTRAINT_PSI_IO" if trigger.resource is Resource.IO else "CONSTRAINT_PSI_MEM"
        return domain, f"{text}: {'; '.join(terms)}"
