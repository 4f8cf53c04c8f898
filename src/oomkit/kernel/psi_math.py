"""Pressure stall information (PSI) arithmetic, done the way the Linux kernel does it.

Everything here is pure integer arithmetic on the numbers the kernel keeps, so a simulated
kernel reports the very digits a real one would for the same stall history. The functions
mirror ``kernel/sched/psi.c``, ``kernel/sched/loadavg.c`` and ``include/linux/sched/loadavg.h``
(read at several versions from 5.x to recent 6.x: the averaging arithmetic is the same in
all of them; the trigger rules changed, and the docstrings say where).

Four parts:

1. Fixed-point decaying averages: :func:`calc_load`, :func:`calc_load_n`,
   :func:`calc_avgs`, and the two-decimal rendering of ``psi_show()``
   (:func:`format_avg`, :func:`avg_as_float`).
2. :class:`PsiAverager`: one group's ``update_averages()`` driven by cumulative stall totals.
3. Triggers: in :mod:`oomkit.kernel.psi_trigger`.
4. :func:`parse_pressure`: a parser for ``/proc/pressure/*`` and cgroup ``*.pressure`` files.

Units: times and stall totals are nanoseconds (the kernel's ``sched_clock()`` unit) unless a
name ends in ``_us``; pressure files show totals in microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from oomkit.kernel.base import PressureLine

__all__ = [
    "DEFAULT_HZ",
    "FIXED_1",
    "FSHIFT",
    "NSEC_PER_USEC",
    "PSI_PERIOD_NS",
    "UNPRIVILEGED_WINDOW_STEP_US",
    "UPDATES_PER_WINDOW",
    "WINDOW_MAX_US",
    "WINDOW_MIN_US_LEGACY",
    "Avgs",
    "EXP_10s",
    "EXP_60s",
    "EXP_300s",
    "ParsedPressure",
    "PressureLine",
    "PsiAverager",
    "PsiAverages",
    "avg_as_float",
    "calc_avgs",
    "calc_load",
    "calc_load_n",
    "fixed_power_int",
    "format_avg",
    "format_pressure_line",
    "load_frac",
    "load_int",
    "parse_pressure",
    "parse_pressure_lines",
    "psi_freq_jiffies",
    "psi_period_ns",
    "rtpoll_period_ns",
]

# ---------------------------------------------------------------------------------------------
# Constants (include/linux/sched/loadavg.h, kernel/sched/psi.c)
# ---------------------------------------------------------------------------------------------

#: Bits of fraction in the kernel's fixed-point load numbers.
FSHIFT: Final = 11
#: 1.0 in that fixed point.
FIXED_1: Final = 1 << FSHIFT
#: exp(-2s/10s), exp(-2s/60s), exp(-2s/300s) in fixed point: the decay per 2 s PSI period.
EXP_10s: Final = 1677
EXP_60s: Final = 1981
EXP_300s: Final = 2034
_EXPS: Final = (EXP_10s, EXP_60s, EXP_300s)

NSEC_PER_USEC: Final = 1000
_USEC_PER_SEC: Final = 1_000_000

#: Largest trigger window (psi.c WINDOW_MAX_US), all kernels.
WINDOW_MAX_US: Final = 10_000_000
#: Smallest trigger window before Linux 6.5 (psi.c WINDOW_MIN_US, removed by 519fabc7aaba).
WINDOW_MIN_US_LEGACY: Final = 500_000
#: Since 6.5 (d82caa273565) a writer without CAP_SYS_RESOURCE must use a multiple of this.
UNPRIVILEGED_WINDOW_STEP_US: Final = 2_000_000
#: A privileged (rtpoll) trigger is evaluated this many times per window.
UPDATES_PER_WINDOW: Final = 10

# Widths of the C types whose wrap-around the kernel relies on (or suffers from).
_U32: Final = (1 << 32) - 1
_U64: Final = (1 << 64) - 1

#: Tick rate assumed when none is given. Debian's kernels (where the recorded fixtures in
#: this project come from) use CONFIG_HZ=250; Fedora/RHEL and recent Ubuntu use 1000.
DEFAULT_HZ: Final = 250


def psi_freq_jiffies(hz: int = DEFAULT_HZ) -> int:
    """PSI_FREQ: the averaging period in jiffies, ``2*HZ+1``.

    The extra jiffy is deliberate in the kernel (as with loadavg's LOAD_FREQ): it keeps the
    sampling from locking step with work that runs on round-second schedules.
    """
    if hz <= 0:
        raise ValueError(f"HZ must be positive, got {hz}")
    return 2 * hz + 1


def psi_period_ns(hz: int = DEFAULT_HZ) -> int:
    """``psi_period = jiffies_to_nsecs(PSI_FREQ)`` as set up by ``psi_init()``.

    jiffies_to_nsecs() is jiffies_to_usecs() * 1000, and on 64-bit jiffies_to_usecs() is
    either an exact multiply (HZ divides 10^6) or ``j * 10^6 / HZ`` rounded down. So the
    period is 2.004 s at HZ=250, 2.001 s at HZ=1000, 2.01 s at HZ=100 -- never exactly 2 s.
    """
    jiffies = psi_freq_jiffies(hz)
    return (jiffies * _USEC_PER_SEC // hz) * NSEC_PER_USEC


#: The PSI averaging period at :data:`DEFAULT_HZ` (2_004_000_000 ns).
PSI_PERIOD_NS: Final = psi_period_ns(DEFAULT_HZ)


def rtpoll_period_ns(window_ns: int) -> int:
    """How often psimon evaluates a privileged trigger: ``win.size / UPDATES_PER_WINDOW``.

    (psi_trigger_create() folds this into the group's rtpoll_min_period.) Unprivileged
    triggers are instead evaluated by the averaging work, once per :func:`psi_period_ns`.
    """
    return window_ns // UPDATES_PER_WINDOW


# ---------------------------------------------------------------------------------------------
# 1. Fixed-point load averaging
# ---------------------------------------------------------------------------------------------

#: The three running averages of one state, avg10/avg60/avg300, in FIXED_1 fixed point
#: (100% is ``100 * FIXED_1``).
Avgs = tuple[int, int, int]


def _require_unsigned(**values: int) -> None:
    # The kernel works in unsigned types; a negative here is a caller bug, not a value the
    # kernel could ever see, so refuse it rather than invent a meaning for it.
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def calc_load(load: int, exp: int, active: int) -> int:
    """One step of the exponential average: ``load*e + active*(1-e)`` (loadavg.h calc_load).

    The ``FIXED_1 - 1`` added while ``active >= load`` rounds a rising average up, so a
    steady input is eventually reached exactly (a steady 100% stall shows 100.00, not
    99.99); a falling average is truncated, so it reaches 0 exactly too.
    """
    if load < 0 or exp < 0 or active < 0:  # the check inline: this runs every PSI period
        _require_unsigned(load=load, exp=exp, active=active)
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def fixed_power_int(x: int, frac_bits: int, n: int) -> int:
    """``x**n`` for a fixed-point ``x`` by square-and-multiply (kernel fixed_power_int()).

    Every multiply is rounded to nearest (``+ half``, then shift), in exactly the kernel's
    order, because the rounding of the intermediate squares is visible in the result:
    ``fixed_power_int(1677, 11, 2)`` is 1373, not the 1373.2 a real square would give, and
    that difference shows up in catch-up decays (see :func:`calc_load_n`).
    """
    if x < 0 or frac_bits < 0 or n < 0:
        _require_unsigned(x=x, frac_bits=frac_bits, n=n)
    if frac_bits == 0:
        raise ValueError("frac_bits must be >= 1")
    half = 1 << (frac_bits - 1)
    result = 1 << frac_bits
    while n:
        if n & 1:
            result = (result * x + half) >> frac_bits
        n >>= 1
        if not n:
            break
        x = (x * x + half) >> frac_bits
    return result


def calc_load_n(load: int, exp: int, active: int, n: int) -> int:
    """``n`` periods of :func:`calc_load` in one step (kernel/sched/loadavg.c calc_load_n).

    Uses ``a_n = a_0 * e^n + a * (1 - e^n)``, i.e. one calc_load() with the decay raised to
    the n-th power by :func:`fixed_power_int`. Note that this is *not* bit-identical to
    applying calc_load() n times: the power is rounded once instead of the load being
    truncated n times, and e.g. ``calc_load_n(204800, EXP_10s, 0, 2)`` is 137300 while two
    calc_load() steps give 137320. The kernel accepts that error; so do we, to match it.
    """
    _require_unsigned(n=n)
    return calc_load(load, fixed_power_int(exp, FSHIFT, n), active)


def calc_avgs(avgs: Avgs, missed_periods: int, stall_ns: int, period_ns: int) -> Avgs:
    """Fold one sampled period into avg10/avg60/avg300 (psi.c calc_avgs()).

    Missed periods are periods in which the averaging work did not run because the group
    was idle, so they are decayed as zero-stall periods in one go (calc_load_n). The
    sampled period then contributes its stall share, computed the kernel's way: an integer
    percentage first (``stall * 100 / period``, truncated -- so each sample has 1%
    resolution), then scaled to fixed point.

    Like the kernel's calc_avgs() this does not clamp: update_averages() clamps the stall to
    the period before calling it (as :class:`PsiAverager` does); a larger stall would give a
    sample above 100%.
    """
    if missed_periods < 0 or stall_ns < 0:
        _require_unsigned(missed_periods=missed_periods, stall_ns=stall_ns)
    if period_ns <= 0:
        raise ValueError(f"period_ns must be > 0, got {period_ns}")
    a10, a60, a300 = avgs
    if missed_periods:
        a10 = calc_load_n(a10, EXP_10s, 0, missed_periods)
        a60 = calc_load_n(a60, EXP_60s, 0, missed_periods)
        a300 = calc_load_n(a300, EXP_300s, 0, missed_periods)
    pct = (stall_ns * 100 // period_ns) * FIXED_1
    return (
        calc_load(a10, EXP_10s, pct),
        calc_load(a60, EXP_60s, pct),
        calc_load(a300, EXP_300s, pct),
    )


def load_int(x: int) -> int:
    """Integer part of a fixed-point value (loadavg.h LOAD_INT)."""
    return x >> FSHIFT


def load_frac(x: int) -> int:
    """Two decimal digits of the fraction, truncated (loadavg.h LOAD_FRAC)."""
    return load_int((x & (FIXED_1 - 1)) * 100)


def format_avg(x: int) -> str:
    """An average as psi_show() prints it: ``"%lu.%02lu" % (LOAD_INT, LOAD_FRAC)``."""
    _require_unsigned(x=x)
    return f"{load_int(x)}.{load_frac(x):02d}"


def avg_as_float(x: int) -> float:
    """The value a reader of the pressure file gets: the printed text, parsed as a float.

    Going through the text (rather than ``x / FIXED_1``) gives exactly the float a parser of
    the real file produces, truncation to two decimals included.
    """
    return float(format_avg(x))


def format_pressure_line(kind: str, avgs: Avgs, total_us: int) -> str:
    """One line of a pressure file, without the newline (psi_show()'s seq_printf)."""
    if kind not in ("some", "full"):
        raise ValueError(f"kind must be 'some' or 'full', got {kind!r}")
    a10, a60, a300 = avgs
    return (
        f"{kind} avg10={format_avg(a10)} avg60={format_avg(a60)} "
        f"avg300={format_avg(a300)} total={total_us}"
    )


# ---------------------------------------------------------------------------------------------
# 4 (used by 2). Pressure file structure
# ---------------------------------------------------------------------------------------------


# PressureLine (avg10/avg60/avg300 in percent, total in us) is shared with the
# Kernel interface: oomkit.kernel.base.PressureLine.


@dataclass(frozen=True, slots=True)
class ParsedPressure:
    """A parsed pressure file. ``full`` is None where the kernel prints no full line."""

    some: PressureLine
    full: PressureLine | None


# ---------------------------------------------------------------------------------------------
# 2. Per-group averaging
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PsiAverages:
    """A snapshot of one group's averages for one resource, as psi_show() would report it.

    ``some``/``full`` are what a reader parses from the file; ``*_fixed`` are the kernel's
    raw fixed-point averages they were printed from.
    """

    some: PressureLine
    full: PressureLine
    some_fixed: Avgs
    full_fixed: Avgs

    def render(self, *, full_line: bool = True) -> str:
        """The file text, one ``\\n``-terminated line per state, as psi_show() writes it.

        Pass ``full_line=False`` for the cpu file of kernels before 5.13, which had no
        full line.
        """
        lines = [format_pressure_line("some", self.some_fixed, self.some.total)]
        if full_line:
            lines.append(format_pressure_line("full", self.full_fixed, self.full.total))
        return "".join(line + "\n" for line in lines)


class PsiAverager:
    """The averaging half of one ``struct psi_group`` for one resource (some and full).

    Feed it the group's cumulative stall totals (what collect_percpu_times() accumulates in
    ``group->total[PSI_AVGS]``) with :meth:`tick`. Whenever ``now >= avg_next_update`` it
    runs psi.c update_averages(), exactly as psi_avgs_work() and psi_show() do. In
    particular the kernel's clock rules carry over:

    * The schedule does not drift: the next update is due at ``expires + (1 + missed) *
      period``, on the original grid, however late this one ran.
    * The sample is not a fixed 2 s: it is the stall accumulated since the previous update,
      over ``now - (avg_last_update + missed * period)`` -- the time actually elapsed in the
      last period, since the kernel samples when the work runs, not when it was due.
    * Periods skipped entirely (the work stops while the group is idle) are decayed as
      zero-stall periods, and any stall that built up meanwhile lands in the sampled one.
    * A sample longer than its period is clamped to it and the excess carried into later
      periods (the kernel's ``avg_total`` only advances by what was used).
    """

    __slots__ = (
        "_avg_last_update",
        "_avg_next_update",
        "_avg_total",
        "_avgs",
        "_now",
        "_period_ns",
        "_total",
    )

    def __init__(
        self,
        start_ns: int,
        *,
        period_ns: int = PSI_PERIOD_NS,
        total_some_ns: int = 0,
        total_full_ns: int = 0,
    ) -> None:
        """Start like group_init(): last update now, next one a period later.

        ``total_*_ns`` are the group's totals at this moment, for attaching to a group
        that already has history; a new group starts at zero.
        """
        _require_unsigned(start_ns=start_ns, total_some_ns=total_some_ns,
                          total_full_ns=total_full_ns)
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self._period_ns = period_ns
        self._now = start_ns
        self._avg_last_update = start_ns
        self._avg_next_update = start_ns + period_ns
        # [some, full]; mutable lists on purpose, this object is the live state.
        self._total = [total_some_ns, total_full_ns]
        # Totals already folded into the averages (psi_group.avg_total); starting equal to
        # the totals means pre-existing stall is not reported as a fresh sample.
        self._avg_total = [total_some_ns, total_full_ns]
        self._avgs: list[Avgs] = [(0, 0, 0), (0, 0, 0)]

    @property
    def period_ns(self) -> int:
        return self._period_ns

    @property
    def avg_last_update(self) -> int:
        return self._avg_last_update

    @property
    def avg_next_update(self) -> int:
        return self._avg_next_update

    @property
    def avg_total_some_ns(self) -> int:
        """Some-stall already folded into the averages (the kernel's avg_total)."""
        return self._avg_total[0]

    @property
    def avg_total_full_ns(self) -> int:
        return self._avg_total[1]

    def tick(self, now_ns: int, total_some_ns: int, total_full_ns: int) -> bool:
        """Record the current totals; run update_averages() if it is due.

        Returns True when the averages were updated. Totals are recorded either way, as
        psi_show() collects them before checking the schedule, so :meth:`averages` always
        shows the latest total.
        """
        if now_ns < self._now:
            raise ValueError(f"time went backwards: {now_ns} < {self._now}")
        if total_some_ns < self._total[0] or total_full_ns < self._total[1]:
            raise ValueError("stall totals are cumulative and cannot decrease")
        self._now = now_ns
        self._total[0] = total_some_ns
        self._total[1] = total_full_ns
        if now_ns < self._avg_next_update:
            return False
        self._update_averages(now_ns)
        return True

    def _update_averages(self, now: int) -> None:
        # Mirrors psi.c update_averages().
        period_len = self._period_ns
        expires = self._avg_next_update
        missed_periods = 0
        if now - expires >= period_len:
            missed_periods = (now - expires) // period_len
        self._avg_next_update = expires + (1 + missed_periods) * period_len
        period = now - (self._avg_last_update + missed_periods * period_len)
        self._avg_last_update = now
        for s in (0, 1):
            # The kernel holds the sample in a u32, so a delta above ~4.29 s wraps before
            # the clamp below; mirrored so pathological gaps behave as they would there.
            sample = (self._total[s] - self._avg_total[s]) & _U32
            # Overage beyond the period is deferred (avg_total only advances by what is
            # used) rather than reported as more than 100%.
            sample = min(sample, period)
            self._avg_total[s] += sample
            self._avgs[s] = calc_avgs(self._avgs[s], missed_periods, sample, period)

    def raw_averages(self) -> tuple[Avgs, Avgs]:
        """The fixed-point (some, full) averages."""
        return self._avgs[0], self._avgs[1]

    def averages(self) -> PsiAverages:
        """What reading the pressure file would show now (after the last :meth:`tick`).

        Totals are shown in microseconds, truncated, as psi_show() divides by
        NSEC_PER_USEC.
        """
        lines = [
            PressureLine(
                avg_as_float(a[0]),
                avg_as_float(a[1]),
                avg_as_float(a[2]),
                self._total[s] // NSEC_PER_USEC,
            )
            for s, a in enumerate(self._avgs)
        ]
        return PsiAverages(lines[0], lines[1], self._avgs[0], self._avgs[1])

    def render(self, *, full_line: bool = True) -> str:
        """The pressure file text for the current state (see :meth:`PsiAverages.render`)."""
        return self.averages().render(full_line=full_line)


# ---------------------------------------------------------------------------------------------
# 4. Pressure file parser
# ---------------------------------------------------------------------------------------------

# A sample (cgroup v2 memory.pressure, Debian 6.1, a throttled cgroup):
#
#   some avg10=94.74 avg60=53.20 avg300=14.86 total=47960820
#   full avg10=94.74 avg60=53.20 avg300=14.86 total=47960820
#
# The cpu file had only the "some" line until Linux 5.13 (e7fcd7622823 added PSI_CPU_FULL,
# for the cgroup level); since then both /proc/pressure/cpu and cgroup cpu.pressure print
# "full". The system-wide cpu full line is all zeros since "psi: report zeroes for CPU full
# at the system level" (2022, also in stable trees). /proc/pressure/irq (6.1+, with
# CONFIG_IRQ_TIME_ACCOUNTING) prints only a "full" line.
_LINE_RE: Final = re.compile(
    r"(some|full) avg10=(\d+\.\d\d) avg60=(\d+\.\d\d) avg300=(\d+\.\d\d) total=(\d+)",
    re.ASCII,
)


def parse_pressure_lines(text: str) -> dict[str, PressureLine]:
    """Parse every line of a pressure file into ``{"some": ..., "full": ...}``.

    Accepts any subset of the two kinds (so also /proc/pressure/irq); blank lines and
    trailing whitespace are ignored. Raises ValueError on a line that is not in psi_show()'s
    format or on a kind given twice.
    """
    lines: dict[str, PressureLine] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise ValueError(f"not a pressure line: {raw!r}")
        kind = match.group(1)
        if kind in lines:
            raise ValueError(f"duplicate {kind!r} line")
        lines[kind] = PressureLine(
            float(match.group(2)),
            float(match.group(3)),
            float(match.group(4)),
            int(match.group(5)),
        )
    return lines


def parse_pressure(text: str) -> ParsedPressure:
    """Parse a ``/proc/pressure/{cpu,memory,io}`` or cgroup ``*.pressure`` file.

    ``full`` is None when the file has no full line (cpu before 5.13). A file without a
    "some" line (/proc/pressure/irq) is refused with ValueError; use
    :func:`parse_pressure_lines` for it.
    """
    lines = parse_pressure_lines(text)
    some = lines.get("some")
    if some is None:
        raise ValueError("pressure file has no 'some' line")
    return ParsedPressure(some=some, full=lines.get("full"))
