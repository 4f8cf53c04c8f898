"""System-wide OOM detection from MemAvailable and SwapFree: pure decisions, no I/O.

An anonymous leak without swap barely stalls before the end, so a PSI trigger on
/proc/pressure/memory can stay silent until the kernel's OOM killer has already acted.
MemAvailable (the kernel's own estimate of what can be had without swapping,
``si_mem_available()`` in mm/show_mem.c) falls steadily instead. The watch therefore
reads it on a timer whose period shrinks as the headroom does: memory cannot fill faster
than the machine can fault pages in, so the time until the threshold could be reached at
the fastest fill rate is the time one may sleep. That is earlyoom's rule
(rfjakob/earlyoom, main.c ``sleep_time_ms()``: headroom over 6000 MiB/s for RAM plus
swap headroom over 800 MiB/s, clamped to 100..1000 ms). Two additions here:

* the fill rate actually seen (a peak that decays) shortens the period further and moves
  the trigger earlier by what the leak will take during one reaction time (``lead_s``, or
  what the last system-wide OOMs on this machine took, if longer), so a fast leak is
  caught with room to spare and a slow one at the threshold;
* the upper clamp is longer (5 s): the bound already makes the sleep safe, and a big idle
  machine then wakes a few times a minute instead of ten times a second.

Where there is swap, the machine is short only when both MemAvailable and SwapFree are
below their minimums (earlyoom's rule too): with swap left, the kernel swaps, not kills.
PSI stays the second signal: a pressure event asks for a check at once.

Units: bytes, bytes per second, seconds. Time comes in with the samples (injected clock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

MiB: Final = 1 << 20

#: earlyoom main.c sleep_time_ms(): "6000MiB/s seen with stress -m 4 --vm-bytes 4G", and
#: 800 MiB/s of swap filled on zram. The fastest fills a machine is expected to reach.
MAX_FILL_RATE: Final = 6000 * MiB
MAX_SWAP_FILL_RATE: Final = 800 * MiB
#: The period's clamp: earlyoom's 100 ms floor, and a 5 s ceiling (see the module doc).
MIN_INTERVAL_S: Final = 0.1
MAX_INTERVAL_S: Final = 5.0
#: Below earlyoom's floor only for a fill actually seen: never more often than this.
FAST_INTERVAL_S: Final = 0.01
#: A measured fill rate halves in this long once the fill stops (a peak that decays).
RATE_HALF_LIFE_S: Final = 2.0
#: How many of the last system-wide OOMs' reaction times count (see :func:`reaction`).
REACTION_WINDOW: Final = 8
#: The longest lead a measured reaction time gives (see :func:`lead`): one stalled
#: decision must not make every later kill come at half the memory still free.
MAX_LEAD_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class MemSample:
    """One reading of /proc/meminfo, in bytes, taken at ``at`` (seconds, monotonic)."""

    at: float
    mem_total: int
    mem_available: int
    swap_total: int = 0
    swap_free: int = 0

    @classmethod
    def of(cls, at: float, meminfo: Mapping[str, int]) -> MemSample:
        """From parsed /proc/meminfo (bytes). MemAvailable exists since Linux 3.14."""
        total = meminfo.get("MemTotal", 0)
        return cls(
            at,
            total,
            meminfo.get("MemAvailable", total),
            meminfo.get("SwapTotal", 0),
            meminfo.get("SwapFree", 0),
        )


_FIELDS: Final = (b"MemTotal:", b"MemAvailable:", b"SwapTotal:", b"SwapFree:")


def parse_sample(at: float, data: bytes) -> MemSample:
    """The four fields from raw /proc/meminfo bytes (kB -> bytes), without parsing the
    other fifty: the watch reads it several times a second. A missing MemAvailable (before
    Linux 3.14) counts as all available, never as a false OOM."""
    values = []
    for key in _FIELDS:
        i = data.find(key)
        if i < 0:
            values.append(-1)
            continue
        end = data.find(b"\n", i)
        values.append(int(data[i + len(key) : end if end >= 0 else None].split()[0]) * 1024)
    total, avail, swap_total, swap_free = values
    if total < 0:
        raise ValueError("no MemTotal in /proc/meminfo")
    return MemSample(at, total, total if avail < 0 else avail, max(0, swap_total),
                     max(0, swap_free))  # fmt: skip


@dataclass(frozen=True, slots=True)
class SystemThresholds:
    """When the machine is out of memory, in bytes (``of()`` turns shares into bytes).

    ``min_available``: MemAvailable at or below this is short of memory.
    ``min_swap_free``: with swap, SwapFree must be at or below this too.
    ``lead_s``: the trigger moves up by the measured fill rate times this (the time a
    decision and a kill take), so the handlers act before the kernel would.
    """

    min_available: int
    min_swap_free: int = 0
    lead_s: float = 0.25
    max_fill_rate: float = MAX_FILL_RATE
    max_swap_fill_rate: float = MAX_SWAP_FILL_RATE

    def __post_init__(self) -> None:
        if self.min_available < 0 or self.min_swap_free < 0:
            raise ValueError("memory thresholds cannot be negative")
        if self.lead_s < 0:
            raise ValueError("lead_s cannot be negative")
        if self.max_fill_rate <= 0 or self.max_swap_fill_rate <= 0:
            raise ValueError("fill rates must be more than zero")

    @classmethod
    def of(
        cls,
        sample: MemSample,
        min_available: float | int,
        min_swap_free: float | int = 0.0,
        **kw: float,
    ) -> SystemThresholds:
        """Thresholds for this machine: a float in [0, 1) is a share of MemTotal (SwapTotal
        for the swap one), an int is bytes."""
        return cls(
            _bytes(min_available, sample.mem_total),
            _bytes(min_swap_free, sample.swap_total),
            **kw,
        )


def _bytes(value: float | int, total: int) -> int:
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"a share must be in [0, 1), got {value}")
        return int(total * value)
    return value


def fill_rate(prev: MemSample | None, cur: MemSample, prev_rate: float = 0.0) -> float:
    """How fast MemAvailable is falling, bytes/s: the latest fall, or the decayed peak.

    A rise (memory freed) gives 0 for this interval; the peak of earlier falls decays with
    RATE_HALF_LIFE_S, so one quiet sample in a bursty leak does not forget the leak.
    """
    if prev is None or cur.at <= prev.at:
        return prev_rate
    dt = cur.at - prev.at
    now = max(0.0, (prev.mem_available - cur.mem_available) / dt)
    decayed: float = prev_rate * 0.5 ** (dt / RATE_HALF_LIFE_S)
    return max(now, decayed)


def headroom(sample: MemSample, t: SystemThresholds) -> tuple[int, int]:
    """(bytes of MemAvailable above min_available, bytes of SwapFree above min_swap_free)."""
    mem = max(0, sample.mem_available - t.min_available)
    swap = max(0, sample.swap_free - t.min_swap_free) if sample.swap_total > 0 else 0
    return mem, swap


def lead(t: SystemThresholds, reaction_s: float = 0.0) -> float:
    """The lead time in seconds: ``lead_s``, or the time the machine's last system-wide
    OOMs took from the look that found it short to the SIGKILL when that was longer (a
    busy or slow machine: 0.3-1.5 s in a TCG guest beside two busy processes), capped at
    MAX_LEAD_S. The fill during the decision is what must still fit above the kernel's
    own OOM point."""
    return max(t.lead_s, min(reaction_s, MAX_LEAD_S))


def reaction(took_s: Sequence[float]) -> float:
    """The reaction time to plan for, from what the machine's last system-wide OOMs took
    (seconds, oldest first): the longest of the last REACTION_WINDOW. A busy machine's
    decisions vary by 2-3x from one OOM to the next (0.3-1.0 s in the TCG guest): the
    last one alone, or a mean, left the next kill with MemAvailable at 0."""
    return max(took_s[-REACTION_WINDOW:], default=0.0)


#: How far ahead of the threshold a projected fill may bring a look, in min_availables.
PROJECT_CAP: Final = 3


def system_short(sample: MemSample, t: SystemThresholds, rate: float = 0.0,
                 reaction_s: float = 0.0) -> bool:
    """Out of memory system-wide: MemAvailable (less what the measured fill takes in the
    lead time, :func:`lead`) at or below min_available, and, with swap, SwapFree at or
    below its min. The projection brings the look forward by at most PROJECT_CAP times
    min_available: a fast fill still above four times the threshold (a service touching
    its heap at start-up, 2.5G at 4G/s on a 4G machine: QA Q17's s16c) is never taken for
    an OOM; earlyoom, which projects nothing, declares only at the threshold (main.c).
    A leak faster than the cap allows for may then reach the kernel's killer first."""
    ahead = min(rate * lead(t, reaction_s), PROJECT_CAP * t.min_available)
    projected = sample.mem_available - ahead
    if projected > t.min_available:
        return False
    return sample.swap_total <= 0 or sample.swap_free <= t.min_swap_free


def next_interval(sample: MemSample, t: SystemThresholds, rate: float = 0.0,
                  reaction_s: float = 0.0) -> float:
    """Seconds until the next reading: the time the headroom lasts at the fastest fill
    (earlyoom's bound), shortened to a quarter of what it lasts at the measured rate;
    clamped to [MIN_INTERVAL_S, MAX_INTERVAL_S], and to FAST_INTERVAL_S for a measured fill."""
    mem, swap = headroom(sample, t)
    safe = mem / t.max_fill_rate + swap / t.max_swap_fill_rate
    interval = min(max(safe, MIN_INTERVAL_S), MAX_INTERVAL_S)
    if rate > 0:
        lasts = max(0.0, sample.mem_available - rate * lead(t, reaction_s)
                    - t.min_available) / rate
        interval = min(interval, max(lasts / 4, FAST_INTERVAL_S))
    return interval


def describe(sample: MemSample, t: SystemThresholds, rate: float = 0.0) -> str:
    """One line for logs and dry runs: 'MemAvailable 48M <= 51M (fill 200M/s, lead 250ms)'."""
    mib = 1 / MiB
    text = (
        f"MemAvailable {sample.mem_available * mib:.0f}M, min {t.min_available * mib:.0f}M"
        f" (fill {rate * mib:.0f}M/s, lead {t.lead_s * 1000:.0f}ms)"
    )
    if sample.swap_total > 0:
        text += f"; SwapFree {sample.swap_free * mib:.0f}M, min {t.min_swap_free * mib:.0f}M"
    return text


#: The fill rate is measured over at least this long: a leak that touches 10 MiB at a
#: time is not 1 GiB/s for the 10 ms one look may span.
RATE_WINDOW_S: Final = 0.1


class WatchState:
    """The watch's decisions from look to look, the same live (kernel/linux/system.py)
    and on the simulator (kernel/sim/memwatch.py): samples and times come in, "declare a
    system-wide OOM now" and "look again in N seconds" go out. No I/O, no clock.

    ``settings``: (min_available, min_swap_free, lead_s, max_fill_rate) as the config's
    ``[system]`` gives them (shares or bytes, see :meth:`SystemThresholds.of`);
    ``recheck_s``: after an OOM is declared (or the kernel's killer acted) no other is
    declared for this long while the machine stays short (MemAvailable lags a victim's
    exit)."""

    __slots__ = ("_declared_at", "_fill_since", "_last_fall_at", "_ref", "_settings",
                 "_thresholds", "interval", "last", "rate", "reaction_s", "reactions",
                 "recheck_s", "samples")

    def __init__(self, settings: tuple[float | int, float | int, float, float],
                 recheck_s: float = 0.5) -> None:
        self._settings = settings
        self.recheck_s = recheck_s
        self.last: MemSample | None = None
        self._ref: MemSample | None = None  # the sample the fill rate is measured from
        self.rate = 0.0  # bytes/s MemAvailable is falling (a decaying peak)
        # the fill going on: since when MemAvailable has been falling, and the last look
        # that saw it fall (None: no fill, or none for RATE_WINDOW_S): how far ahead the
        # fill may be projected (projected_rate)
        self._fill_since: float | None = None
        self._last_fall_at = 0.0
        self.interval = 0.0  # seconds until the next look, as last decided
        self._declared_at: float | None = None  # an OOM declared, not yet over
        self.samples = 0  # looks taken (for benches and tests)
        # seconds the last system-wide OOMs took, from the look that declared one to the
        # SIGKILL, and what to plan for (reaction()): the lead grows to it
        self.reactions: list[float] = []
        self.reaction_s = 0.0
        self._thresholds: tuple[tuple[int, int], SystemThresholds] | None = None

    def reset(self) -> None:
        """Disarmed: the next look starts a new fill measurement."""
        self.last = self._ref = None
        self._fill_since = None
        self.rate = 0.0

    def thresholds(self, sample: MemSample) -> SystemThresholds:
        """The thresholds in bytes for this machine (kept while MemTotal and SwapTotal
        stay: the watch looks several times a second near the end)."""
        key = (sample.mem_total, sample.swap_total)
        if self._thresholds is not None and self._thresholds[0] == key:
            return self._thresholds[1]
        min_available, min_swap_free, lead_s, max_fill_rate = self._settings
        t = SystemThresholds.of(sample, min_available, min_swap_free, lead_s=lead_s,
                                max_fill_rate=max_fill_rate)
        self._thresholds = (key, t)
        return t

    def look(self, s: MemSample, victim_pending: bool) -> bool:
        """One look at ``s``: True when a system-wide OOM is to be declared now (short of
        memory, :func:`system_short`; none declared within ``recheck_s``; no victim of
        ours still exiting, ``victim_pending``, whose memory is on the way)."""
        self.samples += 1
        prev = self.last
        if prev is not None and s.mem_available < prev.mem_available:
            if self._fill_since is None:
                self._fill_since = prev.at
            self._last_fall_at = s.at
        elif self._fill_since is not None and s.at - self._last_fall_at >= RATE_WINDOW_S:
            self._fill_since = None  # no fall for a rate window: the fill stopped
        if self._ref is None or s.at - self._ref.at >= RATE_WINDOW_S:
            self.rate = fill_rate(self._ref, s, self.rate)
            self._ref = s
        self.last = s
        if not self.short(s):
            self._declared_at = None
            return False
        recent = self._declared_at is not None and s.at - self._declared_at < self.recheck_s
        if recent or victim_pending:
            return False
        self._declared_at = s.at
        return True

    def reacted(self, looked_at: float, killed_before: float | None,
                killed_after: float | None) -> None:
        """After a declared OOM: the last SIGKILL's time before and after it (None: none
        yet). A kill at or after the look is this OOM's: its delay joins the reactions."""
        if killed_after is not None and killed_after != killed_before \
                and killed_after >= looked_at:
            self.reactions = [*self.reactions[-REACTION_WINDOW + 1:],
                              killed_after - looked_at]
            self.reaction_s = reaction(self.reactions)

    def kernel_killed(self, now: float) -> None:
        """The kernel's own killer acted system-wide: no OOM of ours for ``recheck_s``."""
        self._declared_at = now

    def projected_rate(self, at: float, t: SystemThresholds) -> float:
        """The fill rate the short-of-memory test projects over the lead time: the
        measured one, scaled down so that a fill is projected no further ahead than it
        has lasted (from its first fall seen to its last), and 0 once no look saw a fall
        for RATE_WINDOW_S. A burst (a service touching its heap at 2 GB/s for 0.1 s) is
        then not taken for a leak that fills the machine within the lead, neither while
        it lasts nor for the seconds its decaying peak rate stays; a leak that goes on is
        projected over the whole lead once it has lasted that long (found with the
        simulator's run of this watch, QA Q1)."""
        if self._fill_since is None or self.rate <= 0:
            return 0.0
        ahead = lead(t, self.reaction_s)
        if ahead <= 0:
            return 0.0
        return self.rate * min(1.0, max(0.0, self._last_fall_at - self._fill_since) / ahead)

    def next_look(self, s: MemSample) -> float:
        """Seconds until the next look after ``s`` (:func:`next_interval`)."""
        self.interval = next_interval(s, self.thresholds(s), self.rate, self.reaction_s)
        return self.interval

    def short(self, s: MemSample) -> bool:
        """Short of memory at ``s`` (no OOM declared, nothing remembered)."""
        t = self.thresholds(s)
        return system_short(s, t, self.projected_rate(s.at, t), self.reaction_s)

    def why(self, s: MemSample) -> str:
        """The declared OOM's ``constraint_text``: what the look at ``s`` saw, as
        :func:`describe` words it ("MemAvailable 98M, min 102M (fill 40M/s, lead 250ms)").
        Handlers that look for their own texts (CONSTRAINT_EARLYOOM_*, CONSTRAINT_LMKD_*)
        take it as the machine out of memory, as before."""
        t = self.thresholds(s)
        return describe(s, t, self.projected_rate(s.at, t))
