"""The program-step interpreters: what a simulated process does with its time in a tick.

A process spends [t, end) of a tick on its program: ``alloc`` charges pages (through
SimMemory, which reclaims and calls the OOM path when a limit is hit), ``touch``
re-touches a working set and brings back what was evicted, ``work`` is useful CPU time,
``sleep`` and ``free`` do what they say, ``exit`` ends it. Each interpreter returns the
time it got to and records on the process the memory stall it met (``tick_stall``) and
whether it was non-idle (``tick_busy``); the IO stall is returned by run_tick.

Model choices: which page is resident is not tracked. A working set of W bytes with R
resident touched at random misses with probability (W - R) / W; touched in order
("sequential"), it misses every page when it cannot stay resident, and reads in
readahead batches. Only misses on pages that were in memory before are refaults; first
reads wait on IO only. Which refaults are memory stalls is machine.refault_stall (see
SimMemory.workingset_refault_share).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from oomkit.kernel.base import PAGE_SIZE
from oomkit.kernel.sim.process import RUNNING, SLEEPING, SimFile, SimProcess
from oomkit.kernel.sim.reclaim import MEMCG_CHARGE_BATCH, SimMemory, page_align, pages
from oomkit.kernel.sim.scenario import MachineSpec, Step

NS: Final = 1_000_000_000


class StepRunner:
    """Runs processes' program steps against a SimMemory; ``exit(proc, status)`` is the
    kernel's exit path (uncharging and unlisting the process)."""

    def __init__(self, machine: MachineSpec, mem: SimMemory,
                 exit: Callable[[SimProcess, str], None]) -> None:
        self.machine = machine
        self.mem = mem
        self._exit = exit
        self._wb_wait = 0  # ns of the last alloc's stall that was a v1 writeback wait

    def run_tick(self, proc: SimProcess, t: int, end: int) -> int:
        """Spend [t, end) of proc's time on its program. Returns the IO stall (refaults)."""
        io_stall = 0
        while t < end and proc.state == RUNNING:
            if proc.io_blocked_until > t:
                s = min(proc.io_blocked_until, end) - t
                io_stall += s
                proc.tick_busy = True
                t += s
                continue
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
                io_stall += self._wb_wait
                self._wb_wait = 0
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
                    self.next_step(proc, t)
            elif op == "sleep":
                if step.duration_ns is None:
                    proc.state = SLEEPING
                    break
                run = min(step.duration_ns - proc.step_done, end - t)
                proc.step_done += run
                t += run
                if proc.step_done >= step.duration_ns:
                    self.next_step(proc, t)
            elif op == "free":
                self._do_free(proc, step)
                self.next_step(proc, t)
            else:  # exit
                self._exit(proc, "exited")
                break
        return io_stall

    def next_step(self, proc: SimProcess, t: int) -> None:
        proc.pc += 1
        proc.step_done = 0
        proc.step_started_ns = t
        proc.blocked_until = max(proc.blocked_until, 0)

    def _stall_rest(self, proc: SimProcess, t: int, end: int) -> int:
        proc.tick_stall += end - t
        proc.stall_ns += end - t
        proc.tick_busy = True
        return end

    def _file(self, proc: SimProcess, step: Step) -> SimFile:
        path = step.path or f"/sim/{proc.name}.{step.kind}.{proc.pc}"
        f = self.mem.files.get(path)
        if f is None:
            f = SimFile(path, step.kind, proc.cgroup)
            self.mem.files[path] = f
            self.mem.files_of.setdefault(proc.cgroup.id, []).append(f)
        return f

    def _do_alloc(self, proc: SimProcess, step: Step, t: int, end: int) -> int:
        proc.tick_busy = True
        rate = step.rate or self.machine.alloc_rate
        remaining = page_align(step.size) - proc.step_done
        can = min(remaining, max(PAGE_SIZE, page_align(rate * (end - t) // NS)))
        if step.paced and step.rate:
            started = proc.step_started_ns
            if proc.step_done < (t - started) * step.rate // NS:
                # Behind its pace (it stalled): as fast as it goes, up to the pace.
                rate = max(step.rate, self.machine.alloc_rate)
                due = (end - started) * step.rate // NS - proc.step_done
                can = min(remaining, max(PAGE_SIZE, page_align(
                    min(due, rate * (end - t) // NS))))
        if self.mem.over_high(proc.cgroup):
            # Over memory.high the task pays its penalty every batch of pages.
            can = min(can, MEMCG_CHARGE_BATCH * PAGE_SIZE)
        kind = "shmem" if step.kind == "shmem" else step.kind
        charged, stall = self.mem.charge(proc, proc.cgroup, kind, can,
                                         lambda n: self._place(proc, step, n))
        if charged:
            if step.kind == "anon":
                proc.touched_at = t
            elif step.kind == "file":
                f = self._file(proc, step)
                f.touched_at = t
                if step.write:
                    self.mem.wb.dirty(f, charged, t)
                    done = t + charged * NS // rate
                    pause = self.mem.wb.pause_ns(proc, charged, done)
                    if pause:  # balance_dirty_pages(): an IO wait
                        proc.io_blocked_until = done + pause
            elif step.path is not None:  # a tmpfs file: written now, on the anon LRU
                self._file(proc, step).touched_at = t
            proc.step_done += charged
            proc.peak_rss = max(proc.peak_rss, proc.rss)
        t += charged * NS // rate
        if proc.state != RUNNING:
            return end
        if stall:
            proc.blocked_until = t + stall
        if charged < can:
            if self.mem.waited_writeback and not self.machine.cgroup_writeback:
                # v1 (legacy memcg) reclaim waits on the folios under writeback itself,
                # folio_wait_writeback() in shrink_folio_list(): an IO wait (io_schedule)
                # inside the reclaim's memstall section.
                self._wb_wait = max(0, end - t)
            return self._stall_rest(proc, t, end)
        if self.mem.over_high(proc.cgroup):
            penalty = self.mem.over_high_penalty(proc, pages(charged))
            if penalty:
                proc.blocked_until = max(proc.blocked_until, t) + penalty
        if proc.step_done >= page_align(step.size):
            self.next_step(proc, t)
        return t

    def _place(self, proc: SimProcess, step: Step, nbytes: int) -> None:
        """Record where charged pages live, and count the faults that brought them."""
        cg = proc.cgroup
        if step.kind == "anon":
            proc.anon += nbytes
            cg.count_vm("pgfault", pages(nbytes))
        elif step.kind == "shmem" and step.path is None:
            proc.shmem_anon += nbytes
            cg.count_vm("pgfault", pages(nbytes))
        else:
            f = self._file(proc, step)
            f.resident += nbytes
            f.size = max(f.size, f.resident + f.swapped)
            f.seen = max(f.seen, f.resident)
            if step.mapped or step.kind == "shmem":
                if step.kind == "shmem":
                    proc.open_files.add(f.path)
                if step.mapped:
                    f.mapped += nbytes
                    proc.mapped_files[f.path] = proc.mapped_files.get(f.path, 0) + nbytes
                    cg.local["file_mapped"] += nbytes
                cg.count_vm("pgfault", pages(nbytes))

    def _swap_in(self, proc: SimProcess, nbytes: int) -> None:
        """Swapped-out anon charged back in: resident again, off the swap."""
        proc.anon += nbytes
        proc.swapped -= nbytes
        self.mem.swap_charge(proc.cgroup, -nbytes)

    def _swap_in_shmem(self, f: SimFile, nbytes: int) -> None:
        """A tmpfs file's swapped pages charged back in: resident again, off the swap."""
        f.resident += nbytes
        f.swapped -= nbytes
        self.mem.swap_charge(f.cgroup, -nbytes)

    def _do_free(self, proc: SimProcess, step: Step) -> None:
        n = page_align(step.size)
        cg = proc.cgroup
        if step.kind == "anon":
            take = min(n, proc.anon)
            proc.anon -= take
            self.mem.uncharge(cg, "anon", take)
            sw = min(n - take, proc.swapped)
            if sw:
                proc.swapped -= sw
                self.mem.swap_charge(cg, -sw)
        elif step.kind == "shmem" and step.path is None:
            take = min(n, proc.shmem_anon)
            proc.shmem_anon -= take
            self.mem.uncharge(cg, "shmem", take)
        else:
            path = step.path or f"/sim/{proc.name}.{step.kind}"
            f = self.mem.files.get(path)
            if f is not None:
                take = min(n, f.resident - f.mapped)
                self.mem.drop_file_pages(f, take)
                if f.kind == "shmem":  # truncated: resident pages first, then swapped ones
                    take += self.mem.free_shmem_swap(f, n - take)
                    f.size = max(f.resident + f.swapped, f.size - take)

    def _do_touch(self, proc: SimProcess, step: Step, t: int, end: int) -> tuple[int, int]:
        """Re-touch a working set; what is not resident comes back from disk or swap.

        Random access misses each non-resident byte alike. A sequential pass over a
        working set that cannot stay resident misses on every page (the pass evicts what
        it needs next time round); one that can stay misses only what is missing. Misses
        cost IO time, an IO stall; reclaim to make room is a memory stall. Which misses
        stall on memory too depends on machine.refault_stall: "all" of them, or (as the
        kernel does, "workingset") only refaults of evicted pages that the workingset
        detection flags (SimMemory.workingset_refault_share). Returns (time, IO stall).
        """
        proc.tick_busy = True
        m = self.machine
        kernel_rule = m.refault_stall == "workingset"
        ws = max(PAGE_SIZE, page_align(step.size))
        cg = proc.cgroup
        seq = step.pattern == "sequential"
        if step.kind == "file":
            f: SimFile | None = self._file(proc, step)
            assert f is not None
            f.touched_at = t
            f.size = max(f.size, ws)
            owner = f.cgroup
            missing = max(0, ws - f.resident)
            # Pages that were in memory before come back as refaults (the kernel finds
            # their shadow entries); first reads are not refaults.
            refaulting = max(0, min(f.seen, ws) - f.resident)
            others = owner.local["file"] - f.resident  # other cache reclaim could take
        elif step.kind == "shmem":
            # A tmpfs file (scenario.py requires its path): its pages reclaim swapped out
            # come back from swap, charged to the memcg that owns the file as
            # shmem_swapin_folio() does (mem_cgroup_swapin_charge_folio(): the memcg
            # recorded with the swap entry). The region touched is at most the file.
            f = self._file(proc, step)
            f.touched_at = t
            ws = min(ws, max(PAGE_SIZE, page_align(f.resident + f.swapped)))
            owner = f.cgroup
            missing = refaulting = min(f.swapped, max(0, ws - f.resident))
            others = owner.local["file"]
        else:
            f = None
            owner = cg
            proc.touched_at = t
            missing = refaulting = min(proc.swapped, ws)
            others = owner.local["file"]
        resident = ws - missing
        miss_frac = missing / ws
        if seq and missing and ws > resident + self.mem.room(owner) + max(0, others):
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
                     page_align(int(nbytes * miss_frac))) if missing else 0
        charged, rstall, refaults = 0, 0, 0
        if misses:
            lru_file = f is not None and f.kind == "file"  # tmpfs is on the anon LRU
            kind = "file" if lru_file else step.kind
            share = (self.mem.workingset_refault_share(owner, lru_file, ws, resident, seq)
                     if kernel_rule else 1.0)
            place: Callable[[int], None] | None = None
            if f is None:
                place = lambda n: self._swap_in(proc, n)  # noqa: E731
            elif not lru_file:
                place = lambda n: self._swap_in_shmem(f, n)  # noqa: E731
            charged, rstall = self.mem.charge(proc, owner, kind, misses, place)
            if seq and lru_file and f is not None:
                # In order, the first pass reads what was never seen; later passes find
                # every page they miss seen before.
                refaults = charged if f.seen >= ws else 0
            else:
                refaults = page_align(charged * refaulting // missing)
            if lru_file and f is not None:
                f.resident += charged
                # First reads join the pages seen; refaults were seen already.
                f.seen = min(f.size, max(f.resident, f.seen + charged - refaults))
                f.large_folios = seq
                item = "file"
            else:
                item = "anon"
            nref = pages(refaults)
            cg.count_vm(f"workingset_refault_{item}", nref)
            # workingset_refault(): activated when the refault distance is within the
            # workingset, restored when the page was in it (PG_workingset) besides. The
            # multi-gen LRU counts an activation only for a refault in the fault path
            # (lru_gen_refault(): lru_gen_in_fault()), not for one by read().
            fault = f is None or f.path in proc.mapped_files
            if fault or m.lru == "classic":
                cg.count_vm_frac(f"workingset_activate_{item}", nref * share)
            # Restores: share^2 of the refaults, in clumps (restore_burst).
            restored = min(1.0, share * share * self.mem.restore_burst()) if share else 0.0
            cg.count_vm_frac(f"workingset_restore_{item}", nref * restored)
            if fault:
                # A page fault: swap-in, or a mapped file. A read() that misses the page
                # cache is no fault at all (filemap_read), so it counts neither.
                cg.count_vm("pgmajfault", pages(charged))
                cg.count_vm("pgfault", pages(charged))
            # The refaults that stall on memory (under the kernel's rule, share^2 of them:
            # pages that were in the workingset and come back within its size) stall for
            # the whole read, the kernel's psi_memstall_enter() around reading a
            # PG_workingset folio covering its submission and the wait for its completion
            # (folio_wait_bit_common()), up to when the task runs again: restore_cpu_ns
            # besides the IO (None: all of miss_cpu).
            held = m.miss_cpu_ns if m.restore_cpu_ns is None else m.restore_cpu_ns
            mem_io_ns = int(nref * (io_page_ns + held) * restored)
        else:
            mem_io_ns = 0
        io_ns = int(pages(charged) * io_page_ns)
        run_ns = int(nbytes * NS / m.touch_rate) + pages(charged) * m.miss_cpu_ns
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
            self.next_step(proc, t)
        return t, io_stall
