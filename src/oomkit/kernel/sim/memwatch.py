"""The system-wide MemAvailable watch on the simulator: the live daemon's, on simulated time.

Live, ``[system]`` (min_available, min_swap_free, lead, max_fill_rate) makes the daemon
read /proc/meminfo on earlyoom's adaptive timer and declare a system-wide OOM (memcg
None, Constraint.NONE) to the handlers when MemAvailable crosses min_available
(kernel/linux/system.py). Here the same decisions (:class:`.memwatch.WatchState`: the
fill rate, the lead, the interval, the "declared recently" and "a victim is still
exiting" gates) run on the simulator's clock, from a MemAvailable computed the kernel's
way from the simulated machine (:func:`mem_available`), so a policy tried on the
simulator is asked when it would be asked live, not only when the machine is full.

Model choices:

* MemTotal is the scenario's RAM; free pages are RAM minus everything charged (the
  simulator has no kernel memory); the file LRU is the page cache without tmpfs/shmem
  (mapped and dirty pages included, as the kernel counts them, although the simulator's
  reclaim takes neither); reclaimable slab is the root's ``slab_reclaimable`` (0: the
  simulator has no slab). The watermarks are the kernel's for one zone of that size
  (:func:`watermarks`). The simulator runs out at 0 free pages rather than at the min
  watermark, so its MemAvailable reads 0 a little (the reserve, ~0.5 % of a 2G machine)
  before its own OOM.
* The daemon starts on the machine as the scenario sets it up: its first look comes
  once every process there at that time has done its first step if that step is an
  allocation without a rate (the memory the scenario gives it to start with, taken at
  the machine's default 2 GiB/s). A live daemon is started on a running machine, or at a
  boot whose services do not take half the RAM in 0.2 s; measured as a fill, that
  set-up made the lead projection kill a service as it started (cases k16, k42, k44).
* Looks fall on the tick grid: the first tick at or after the time the interval gives.
  Between looks nothing is sampled (the watch costs nothing per tick), and a machine
  whose processes all sleep still wakes for each look (at most every MAX_INTERVAL_S).
* The live watch's second signal, a PSI trigger on /proc/pressure/memory that makes it
  look at once, is not simulated: the interval alone bounds how far MemAvailable can
  fall between looks (earlyoom's bound), so only the fill-rate measurement can differ.
* Handlers take no simulated time, so the measured reaction time (live: the look to the
  SIGKILL) is 0 and the lead is ``lead`` itself.

Units: bytes, seconds (the kernel's clock is read in ns and converted).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from oomkit.kernel.base import Constraint, OomRequest
from oomkit.kernel.linux.memwatch import MemSample, WatchState
from oomkit.kernel.sim.process import EXITED, EXITING

if TYPE_CHECKING:
    from oomkit.kernel.sim.kernel import SimKernel
    from oomkit.kernel.sim.process import SimProcess

KiB: Final = 1024
PAGE: Final = 4096
#: mm/page_alloc.c calculate_min_free_kbytes(): int_sqrt(lowmem_kbytes * 16) clamped to
#: [128 kB, 256 MiB]; __setup_per_zone_wmarks(): vm.watermark_scale_factor's default.
MIN_FREE_KBYTES_MIN: Final = 128
MIN_FREE_KBYTES_MAX: Final = 262_144
WATERMARK_SCALE_FACTOR: Final = 10
NS: Final = 1_000_000_000


def watermarks(memory: int) -> tuple[int, int, int]:
    """(min, low, high) watermarks in bytes of a machine with ``memory`` bytes in one
    zone: min is min_free_kbytes (calculate_min_free_kbytes()); low and high add, once
    and twice, the larger of min/4 and watermark_scale_factor/10000 of the zone
    (__setup_per_zone_wmarks()). High is also totalreserve_pages here (one zone: no
    lowmem_reserve)."""
    min_kb = math.isqrt(memory // KiB * 16)
    min_kb = min(max(min_kb, MIN_FREE_KBYTES_MIN), MIN_FREE_KBYTES_MAX)
    wmin = min_kb * KiB // PAGE
    gap = max(wmin // 4, memory // PAGE * WATERMARK_SCALE_FACTOR // 10_000)
    return wmin * PAGE, (wmin + gap) * PAGE, (wmin + 2 * gap) * PAGE


def mem_available(free: int, file_lru: int, slab_reclaimable: int, wmark_low: int,
                  reserve: int) -> int:
    """MemAvailable in bytes as si_mem_available() (mm/show_mem.c) estimates it: free
    pages less the reserve (totalreserve_pages), plus the file LRU and reclaimable slab
    each less the smaller of its half and the low watermark; never below 0."""
    available = free - reserve
    available += file_lru - min(file_lru // 2, wmark_low)
    available += slab_reclaimable - min(slab_reclaimable // 2, wmark_low)
    return max(0, available)


def sample(kernel: SimKernel) -> MemSample:
    """/proc/meminfo's MemTotal, MemAvailable, SwapTotal and SwapFree of the simulated
    machine now (see the module doc for what each is made of)."""
    machine = kernel.machine
    root = kernel.root
    free = max(0, machine.memory - root.charged)
    file_lru = root.page_state("file") - root.page_state("shmem")
    slab = root.page_state("slab_reclaimable")
    _, low, high = watermarks(machine.memory)
    return MemSample(kernel.clock.now(), machine.memory,
                     mem_available(free, file_lru, slab, low, high), machine.swap,
                     max(0, machine.swap - kernel.swap_used))


class SimSystemWatch:
    """The watch of one SimKernel: armed by ``watch_oom(None)`` as live; the kernel calls
    :meth:`check` from its tick when ``next_ns`` has come.

    ``min_available``, ``min_swap_free``: shares of MemTotal / SwapTotal (float) or bytes
    (int); ``lead_s``; ``max_fill_rate`` (bytes/s); ``recheck_s``: see WatchState. These
    are the ``[system]`` table's (daemon/config.py SystemSettings) and LinuxKernel's
    ``recheck_s`` default."""

    def __init__(self, kernel: SimKernel, min_available: float | int = 0.05,
                 min_swap_free: float | int = 0.10, lead_s: float = 0.25,
                 max_fill_rate: float = 6000 << 20, recheck_s: float = 0.5) -> None:
        self.k = kernel
        self.state = WatchState((min_available, min_swap_free, lead_s, max_fill_rate),
                                recheck_s)
        self.armed = False
        #: When the next look is due, ns on the kernel's clock (None: disarmed).
        self.next_ns: int | None = None
        self.declared = 0  # system-wide OOMs this watch declared
        self._declaring = False
        self._setting_up: list[SimProcess] = []  # see the module doc: no look before

    def _set_up(self, proc: SimProcess) -> bool:
        """Still in a first step that is an allocation without a rate."""
        step = proc.program[0] if proc.program else None
        return (proc.pc == 0 and proc.state not in (EXITED, EXITING) and step is not None
                and step.op == "alloc" and step.rate is None)

    def arm(self) -> str:
        """Start looking (the first look at the next tick); what watch_oom says of it."""
        if not self.armed:
            self.armed = True
            now = self.k.clock.now_ns()
            self.next_ns = now
            self._setting_up = [p for p in self.k.processes()
                                if p.start_ns <= now and self._set_up(p)]
        return "system-wide: MemAvailable on an adaptive timer (simulated)"

    def disarm(self) -> None:
        self.armed = False
        self.next_ns = None
        self.state.reset()

    def kernel_killed(self) -> None:
        """The kernel's own OOM path ran system-wide: no OOM of ours for recheck_s."""
        self.state.kernel_killed(self.k.clock.now())

    @property
    def declaring(self) -> bool:
        """An OOM this watch declared is being handled now."""
        return self._declaring

    def short(self) -> bool:
        """Short of memory now (a fresh look; nothing declared or remembered)."""
        return self.state.short(sample(self.k))

    def check(self) -> None:
        """One look: a system-wide OOM to the hooks if the machine is short; the next
        look booked on the tick grid."""
        k = self.k
        if not self.armed:
            return
        if self._setting_up:
            self._setting_up = [p for p in self._setting_up if self._set_up(p)]
            if self._setting_up:
                self.next_ns = k.clock.now_ns() + k.machine.tick_ns
                return
        s = sample(k)
        st = self.state
        if st.look(s, k.victim_exiting()):
            self._declare(st.why(s))
        if self.armed:  # a handler may have unwatched meanwhile
            tick = k.machine.tick_ns
            due = k.clock.now_ns() + max(1, math.ceil(st.next_look(s) * NS))
            self.next_ns = -(-due // tick) * tick

    def _declare(self, why: str) -> None:
        k = self.k
        self.declared += 1
        self._declaring = True
        try:
            k.declare_system_oom(OomRequest(memcg=None, order=0, constraint=Constraint.NONE,
                                            constraint_text=why,
                                            totalpages=k.oom_totalpages(None)))
        finally:
            self._declaring = False
