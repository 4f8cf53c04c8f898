"""Tests for oomkit.kernel.psi_math: the kernel's PSI arithmetic, bit for bit.

The reference functions below are written straight from the kernel formulas
(include/linux/sched/loadavg.h, kernel/sched/loadavg.c, kernel/sched/psi.c), independently
of the module under test, in the plainest form that computes the same integers.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomkit.kernel.psi_math import (
    FIXED_1,
    FSHIFT,
    PSI_PERIOD_NS,
    EXP_10s,
    EXP_60s,
    EXP_300s,
    ParsedPressure,
    PressureLine,
    PsiAverager,
    avg_as_float,
    calc_avgs,
    calc_load,
    calc_load_n,
    fixed_power_int,
    format_avg,
    format_pressure_line,
    load_frac,
    load_int,
    parse_pressure,
    parse_pressure_lines,
    psi_freq_jiffies,
    psi_period_ns,
    rtpoll_period_ns,
)
from oomkit.kernel.psi_trigger import (
    PsiTriggerState,
    PsiWindow,
    parse_trigger,
    proc_write_to_trigger_text,
    validate_trigger,
    window_reset,
    window_update,
)

SEC = 1_000_000_000
MS = 1_000_000
P = 2 * SEC  # a clean 2 s period for hand-derived numbers (the kernel's is 2*HZ+1 jiffies)
PCT100 = 100 * FIXED_1
EXPS = (EXP_10s, EXP_60s, EXP_300s)

# ---------------------------------------------------------------------------------------------
# Independent references, from the kernel formulas
# ---------------------------------------------------------------------------------------------


def ref_calc_load(load: int, exp: int, active: int) -> int:
    # a1 = a0 * e + a * (1 - e), rounding up (FIXED_1 - 1) only while rising.
    bump = FIXED_1 - 1 if active >= load else 0
    return (load * exp + active * (FIXED_1 - exp) + bump) // FIXED_1


def ref_fixed_power(x: int, n: int) -> int:
    # x^n by the binary expansion of n: multiply in x^(2^i) for each set bit i, lowest bit
    # first, each product and each squaring rounded to nearest in 11-bit fixed point.
    def mul(a: int, b: int) -> int:
        return (a * b + FIXED_1 // 2) // FIXED_1

    bits = bin(n)[2:][::-1] if n else ""
    result = FIXED_1
    square = x
    for i, bit in enumerate(bits):
        if bit == "1":
            result = mul(result, square)
        if i < len(bits) - 1:
            square = mul(square, square)
    return result


def ref_calc_avgs(avgs: tuple[int, int, int], missed: int, stall: int, period: int
                  ) -> tuple[int, int, int]:
    out = []
    for avg, e in zip(avgs, EXPS, strict=True):
        if missed:
            avg = ref_calc_load(avg, ref_fixed_power(e, missed), 0)
        pct = stall * 100 // period * FIXED_1
        out.append(ref_calc_load(avg, e, pct))
    return out[0], out[1], out[2]


# ---------------------------------------------------------------------------------------------
# Fixtures (recorded kernel files)
# ---------------------------------------------------------------------------------------------


def fixtures_dir() -> Path:
    """Where the recorded kernel files are: $OOMKIT_FIXTURES, else ../shared/fixtures."""
    env = os.environ.get("OOMKIT_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    path = fixtures_dir()
    if not path.is_dir():
        pytest.skip(f"recorded kernel fixtures not found at {path} (set OOMKIT_FIXTURES)")
    return path


# ---------------------------------------------------------------------------------------------
# Constants and the period
# ---------------------------------------------------------------------------------------------


def test_constants_are_the_kernels() -> None:
    assert FSHIFT == 11
    assert FIXED_1 == 2048
    # EXP_x = FIXED_1 / exp(2s / x), rounded: the per-period decay of each window.
    for exp, window in ((EXP_10s, 10), (EXP_60s, 60), (EXP_300s, 300)):
        assert exp == round(FIXED_1 / math.exp(2 / window))
    assert (EXP_10s, EXP_60s, EXP_300s) == (1677, 1981, 2034)


@pytest.mark.parametrize(
    ("hz", "period"),
    [
        (100, 2_010_000_000),
        (250, 2_004_000_000),
        (1000, 2_001_000_000),
        # HZ=300 does not divide 10^6: jiffies_to_usecs() rounds 601 * 10^6 / 300 down.
        (300, 2_003_333_000),
    ],
)
def test_psi_period_is_2hz_plus_1_jiffies(hz: int, period: int) -> None:
    assert psi_freq_jiffies(hz) == 2 * hz + 1
    assert psi_period_ns(hz) == period


def test_default_period_and_rtpoll_period() -> None:
    assert psi_period_ns(250) == PSI_PERIOD_NS
    assert rtpoll_period_ns(1 * SEC) == 100 * MS
    with pytest.raises(ValueError):
        psi_freq_jiffies(0)


# ---------------------------------------------------------------------------------------------
# calc_load / fixed_power_int / calc_load_n
# ---------------------------------------------------------------------------------------------

loads = st.integers(min_value=0, max_value=200 * FIXED_1)
exps = st.one_of(st.sampled_from(EXPS), st.integers(min_value=1, max_value=FIXED_1 - 1))


@given(load=loads, exp=exps, active=loads)
def test_calc_load_matches_reference(load: int, exp: int, active: int) -> None:
    assert calc_load(load, exp, active) == ref_calc_load(load, exp, active)


def test_calc_load_first_step_by_hand() -> None:
    # 0 * 1677 + 204800 * (2048 - 1677) = 75_980_800; rising, so + 2047; / 2048 -> 37100.
    assert calc_load(0, EXP_10s, PCT100) == 37100


@pytest.mark.parametrize("exp", EXPS)
def test_calc_load_reaches_steady_input_exactly(exp: int) -> None:
    # The round-up on the rise is what lets a steady 100% show as 100.00 and idle as 0.00.
    x = 0
    for _ in range(10_000):
        x = calc_load(x, exp, PCT100)
    assert x == PCT100
    for _ in range(10_000):
        x = calc_load(x, exp, 0)
    assert x == 0


def test_calc_load_rejects_negative() -> None:
    with pytest.raises(ValueError):
        calc_load(-1, EXP_10s, 0)


def test_fixed_power_int_known_values() -> None:
    assert [fixed_power_int(EXP_10s, FSHIFT, n) for n in range(6)] == [
        2048, 1677, 1373, 1124, 920, 753,
    ]
    # 1677^2 / 2048 = 1373.207..., + 0.5 rounding -> 1373
    assert fixed_power_int(EXP_10s, FSHIFT, 2) == (1677 * 1677 + 1024) >> 11


@given(x=st.integers(min_value=0, max_value=FIXED_1), n=st.integers(min_value=0, max_value=5000))
def test_fixed_power_int_matches_reference(x: int, n: int) -> None:
    assert fixed_power_int(x, FSHIFT, n) == ref_fixed_power(x, n)


@given(load=loads, exp=exps, active=loads, n=st.integers(min_value=0, max_value=2000))
def test_calc_load_n_matches_reference(load: int, exp: int, active: int, n: int) -> None:
    assert calc_load_n(load, exp, active, n) == ref_calc_load(
        load, ref_fixed_power(exp, n), active
    )


@given(load=loads, exp=exps, active=loads)
def test_calc_load_n_zero_and_one_periods(load: int, exp: int, active: int) -> None:
    # n = 0: e^0 = 1.0, the load is kept (a zero load stays zero even with the round-up).
    assert calc_load_n(load, exp, 0, 0) == load
    # n = 1: exactly one calc_load().
    assert calc_load_n(load, exp, active, 1) == calc_load(load, exp, active)


def test_calc_load_n_is_not_bit_identical_to_repeated_calc_load() -> None:
    # The brief's "calc_load_n(x, e, 0, n) == n x calc_load(x, e, 0)" does not hold in the
    # kernel: the decay is raised to the power once (rounded) instead of the load being
    # truncated n times. Two periods of decay from 100%:
    once = calc_load_n(PCT100, EXP_10s, 0, 2)  # 204800 * 1373 // 2048
    twice = calc_load(calc_load(PCT100, EXP_10s, 0), EXP_10s, 0)  # 167700, then 137320
    assert (once, twice) == (137300, 137320)


@settings(max_examples=300)
@given(load=loads, exp=st.sampled_from(EXPS), n=st.integers(min_value=0, max_value=1500))
def test_calc_load_n_close_to_repeated_calc_load(load: int, exp: int, n: int) -> None:
    # What does hold: both approximate load * (exp/2048)^n, with errors that are bounded.
    # Repeated truncation loses less than 1/(1 - r) in total (each step's loss of < 1 is
    # shrunk by r in every later step); the one-shot version is off by the error of the
    # rounded power, scaled by the load, plus its final truncation.
    r = Fraction(exp, FIXED_1)
    repeated = load
    for _ in range(n):
        repeated = calc_load(repeated, exp, 0)
    power_error = abs(Fraction(fixed_power_int(exp, FSHIFT, n), FIXED_1) - r**n)
    bound = load * power_error + 1 + 1 / (1 - r)
    assert abs(calc_load_n(load, exp, 0, n) - repeated) <= bound


# ---------------------------------------------------------------------------------------------
# calc_avgs
# ---------------------------------------------------------------------------------------------

avg_triples = st.tuples(loads, loads, loads)


@given(
    avgs=avg_triples,
    missed=st.integers(min_value=0, max_value=500),
    period=st.integers(min_value=1, max_value=4 * SEC),
    data=st.data(),
)
def test_calc_avgs_matches_reference(
    avgs: tuple[int, int, int], missed: int, period: int, data: st.DataObject
) -> None:
    stall = data.draw(st.integers(min_value=0, max_value=period))
    assert calc_avgs(avgs, missed, stall, period) == ref_calc_avgs(avgs, missed, stall, period)


def test_calc_avgs_percentage_is_truncated_to_whole_percent() -> None:
    # 1.999 s of stall in 2 s is 99.95%, but the kernel takes the integer percent first.
    assert calc_avgs((0, 0, 0), 0, 1_999_000_000, P) == calc_avgs((0, 0, 0), 0, 1_980_000_000, P)
    assert calc_avgs((0, 0, 0), 0, 1_999_000_000, P)[0] == calc_load(0, EXP_10s, 99 * FIXED_1)


def test_calc_avgs_full_period_by_hand() -> None:
    assert calc_avgs((0, 0, 0), 0, P, P) == (37100, 6700, 1400)


def test_calc_avgs_rejects_bad_period() -> None:
    with pytest.raises(ValueError):
        calc_avgs((0, 0, 0), 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# Formatting (psi_show)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixed", "text"),
    [
        (0, "0.00"),
        (20, "0.00"),  # 20 * 100 / 2048 = 0.97 hundredths, truncated
        (21, "0.01"),
        (2047, "0.99"),
        (FIXED_1, "1.00"),
        (37100, "18.11"),  # 37100 = 18 * 2048 + 236; 236 * 100 >> 11 = 11
        (67480, "32.94"),
        (PCT100, "100.00"),
    ],
)
def test_format_avg(fixed: int, text: str) -> None:
    assert format_avg(fixed) == text
    assert avg_as_float(fixed) == float(text)


@given(x=st.integers(min_value=0, max_value=1 << 40))
def test_format_avg_is_truncated_hundredths(x: int) -> None:
    # LOAD_INT.LOAD_FRAC is x/2048 truncated to two decimals.
    assert load_int(x) * 100 + load_frac(x) == x * 100 // FIXED_1
    whole, frac = format_avg(x).split(".")
    assert int(whole) * 100 + int(frac) == x * 100 // FIXED_1
    assert len(frac) == 2


def test_format_pressure_line() -> None:
    assert format_pressure_line("some", (37100, 6700, 1400), 2000000) == (
        "some avg10=18.11 avg60=3.27 avg300=0.68 total=2000000"
    )
    with pytest.raises(ValueError):
        format_pressure_line("half", (0, 0, 0), 0)


# ---------------------------------------------------------------------------------------------
# PsiAverager (update_averages)
# ---------------------------------------------------------------------------------------------


def run_reference_averager(start: int, period: int, samples: list[tuple[int, int]]
                           ) -> list[tuple[int, int, int]]:
    """A plain transcription of update_averages() for one state, for cross-checking."""
    last, nxt, total, avg_total = start, start + period, 0, 0
    avgs = (0, 0, 0)
    out = []
    for now, tot in samples:
        total = tot
        if now >= nxt:
            missed = (now - nxt) // period if now - nxt >= period else 0
            sample_period = now - (last + missed * period)
            nxt = nxt + (1 + missed) * period
            last = now
            sample = min((total - avg_total) % (1 << 32), sample_period)
            avg_total += sample
            avgs = ref_calc_avgs(avgs, missed, sample, sample_period)
        out.append(avgs)
    return out


def test_averager_known_pattern_10s_full_stall_then_60s_idle() -> None:
    # 100% stall for 10 s (5 periods), then none for 60 s (30 periods), sampled exactly on
    # schedule. avg10 by hand (e = 1677, 100% = 204800, 204800 * 371 = 75_980_800):
    #   1: (0 * 1677 + 75_980_800 + 2047) // 2048          = 37100  -> 18.11
    #   2: (37100 * 1677 + 75_980_800 + 2047) // 2048      = 67480  -> 32.94
    #   3: (67480 * 1677 + 75_980_800 + 2047) // 2048      = 92356  -> 45.09
    #   4: (92356 * 1677 + 75_980_800 + 2047) // 2048      = 112726 -> 55.04
    #   5: (112726 * 1677 + 75_980_800 + 2047) // 2048     = 129406 -> 63.18
    #   6: 129406 * 1677 // 2048 (falling: no round-up)    = 105963 -> 51.73
    #   7: 105963 * 1677 // 2048                           = 86767  -> 42.36
    start = 1000 * SEC
    avg = PsiAverager(start, period_ns=P)
    seen: list[tuple[int, str]] = []
    samples: list[tuple[int, int]] = []
    total = 0
    for k in range(1, 36):
        now = start + k * P
        if k <= 5:
            total += P
        samples.append((now, total))
        assert avg.tick(now, total, total // 2)
        some_fixed, _ = avg.raw_averages()
        seen.append((some_fixed[0], format_avg(some_fixed[0])))
    assert seen[:7] == [
        (37100, "18.11"),
        (67480, "32.94"),
        (92356, "45.09"),
        (112726, "55.04"),
        (129406, "63.18"),
        (105963, "51.73"),
        (86767, "42.36"),
    ]
    # The whole run, all three windows, agrees with the plain transcription.
    expected = run_reference_averager(start, P, samples)
    assert avg.raw_averages()[0] == expected[-1]
    shown = avg.averages()
    assert shown.some.total == 10 * SEC // 1000
    assert shown.full.total == 5 * SEC // 1000
    assert shown.some.avg10 == avg_as_float(expected[-1][0])


def test_averager_updates_only_when_due_but_always_records_totals() -> None:
    avg = PsiAverager(0, period_ns=P)
    assert avg.avg_next_update == P
    assert not avg.tick(P - 1, 5000, 0)
    assert avg.averages().some.total == 5  # us, from the latest totals
    assert avg.raw_averages() == ((0, 0, 0), (0, 0, 0))
    assert avg.tick(P, P, 0)
    assert avg.avg_next_update == 2 * P
    assert avg.avg_last_update == P


def test_averager_late_tick_samples_actual_elapsed_time() -> None:
    # Work due at 2 s runs at 3 s: no period missed, the sample covers 3 s, and the next
    # update stays on the 2 s grid (4 s), not 5 s.
    avg = PsiAverager(0, period_ns=P)
    avg.tick(3 * SEC, 3 * SEC // 2, 0)  # 1.5 s of stall over 3 s -> 50%
    assert avg.avg_next_update == 2 * P
    assert avg.avg_last_update == 3 * SEC
    assert avg.raw_averages()[0] == calc_avgs((0, 0, 0), 0, 3 * SEC // 2, 3 * SEC)
    assert avg.raw_averages()[0] == (
        calc_load(0, EXP_10s, 50 * FIXED_1),
        calc_load(0, EXP_60s, 50 * FIXED_1),
        calc_load(0, EXP_300s, 50 * FIXED_1),
    )


def test_averager_missed_periods() -> None:
    # First update on time at 2 s with 100%; then the work does not run again until
    # 2 s + 2 s + 3.5 periods: expires = 4 s, missed = 3, the sampled period is
    # now - (last_update + 3 * P) = 11 s - (2 s + 6 s) = 3 s, next update at 4 s + 4 * P.
    avg = PsiAverager(0, period_ns=P)
    avg.tick(P, P, 0)
    first = avg.raw_averages()[0]
    now = 2 * P + 3 * P + P // 2  # 11 s
    avg.tick(now, P + SEC, 0)  # 1 s of new stall, all attributed to the sampled period
    assert avg.avg_next_update == 2 * P + 4 * P
    assert avg.avg_last_update == now
    assert avg.raw_averages()[0] == ref_calc_avgs(first, 3, SEC, 3 * SEC)


def test_averager_clamps_sample_and_carries_overage() -> None:
    # 3 s of stall reported in a 2 s period: shown as 100%, the extra second is reported
    # in the next period (50%) rather than dropped.
    avg = PsiAverager(0, period_ns=P)
    avg.tick(P, 3 * SEC, 0)
    assert avg.avg_total_some_ns == P
    a1 = avg.raw_averages()[0]
    assert a1 == calc_avgs((0, 0, 0), 0, P, P)
    avg.tick(2 * P, 3 * SEC, 0)
    assert avg.avg_total_some_ns == 3 * SEC
    assert avg.raw_averages()[0] == calc_avgs(a1, 0, SEC, P)


def test_averager_sample_is_a_u32() -> None:
    # update_averages() keeps the sample in a u32: a delta of 2**32 + 1000 ns reads as 1000.
    avg = PsiAverager(0, period_ns=P)
    avg.tick(P, (1 << 32) + 1000, 0)
    assert avg.avg_total_some_ns == 1000
    assert avg.raw_averages()[0] == calc_avgs((0, 0, 0), 0, 1000, P)


def test_averager_attaches_to_existing_totals() -> None:
    avg = PsiAverager(0, period_ns=P, total_some_ns=50 * SEC, total_full_ns=10 * SEC)
    avg.tick(P, 50 * SEC, 10 * SEC)
    assert avg.raw_averages() == ((0, 0, 0), (0, 0, 0))
    assert avg.averages().some.total == 50_000_000


def test_averager_rejects_time_and_totals_going_backwards() -> None:
    avg = PsiAverager(10, period_ns=P)
    with pytest.raises(ValueError):
        avg.tick(9, 0, 0)
    avg.tick(20, 100, 50)
    with pytest.raises(ValueError):
        avg.tick(30, 99, 50)
    with pytest.raises(ValueError):
        PsiAverager(0, period_ns=0)


def test_averager_default_period_is_the_kernels() -> None:
    avg = PsiAverager(0)
    assert avg.period_ns == PSI_PERIOD_NS == 2_004_000_000


@settings(max_examples=100)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5 * P),  # time since previous tick
            st.integers(min_value=0, max_value=3 * P),  # stall added since previous tick
        ),
        min_size=1,
        max_size=40,
    )
)
def test_averager_matches_reference_transcription(steps: list[tuple[int, int]]) -> None:
    start = 7 * SEC
    avg = PsiAverager(start, period_ns=P)
    now, total = start, 0
    samples = []
    for dt, stall in steps:
        now += dt
        total += stall
        samples.append((now, total))
        avg.tick(now, total, 0)
    assert avg.raw_averages()[0] == run_reference_averager(start, P, samples)[-1]


def test_render_is_psi_show_text_and_parses_back() -> None:
    avg = PsiAverager(0, period_ns=P)
    avg.tick(P, P, P // 4)
    text = avg.render()
    # full: 25% -> active 51200. avg10 (51200 * 371 + 2047) // 2048 = 9275 = 4 * 2048 + 1083,
    # 1083 * 100 >> 11 = 52; avg60 (51200 * 67 + 2047) // 2048 = 1675 -> 0.81;
    # avg300 (51200 * 14 + 2047) // 2048 = 350 -> 0.17.
    assert text == (
        "some avg10=18.11 avg60=3.27 avg300=0.68 total=2000000\n"
        "full avg10=4.52 avg60=0.81 avg300=0.17 total=500000\n"
    )
    shown = avg.averages()
    assert parse_pressure(text) == ParsedPressure(shown.some, shown.full)
    assert avg.render(full_line=False) == text.splitlines(keepends=True)[0]


# ---------------------------------------------------------------------------------------------
# Trigger windows
# ---------------------------------------------------------------------------------------------


def test_window_update_within_window_prorates_previous_growth() -> None:
    win = PsiWindow(size=SEC, start_time=0, start_value=0, prev_growth=0)
    # 1.2 s later, 300 ms of growth: the window has passed, so it restarts with that growth.
    win, growth = window_update(win, 1200 * MS, 300 * MS)
    assert growth == 300 * MS
    assert win == PsiWindow(size=SEC, start_time=1200 * MS, start_value=300 * MS,
                            prev_growth=300 * MS)
    # 400 ms into the new window, 100 ms more: plus the previous growth for the 600 ms of the
    # look-back still inside the old window: 100 ms + 300 ms * 600 / 1000 = 280 ms.
    win2, growth = window_update(win, 1600 * MS, 400 * MS)
    assert growth == 100 * MS + 300 * MS * 600 // 1000
    assert win2 == win  # no reset within the window


def test_window_update_prorating_is_integer_division() -> None:
    win = PsiWindow(size=3, start_time=0, start_value=0, prev_growth=10)
    _, growth = window_update(win, 1, 0)  # remaining 2 of 3: 10 * 2 // 3 = 6
    assert growth == 6


def test_window_update_exactly_at_window_end_does_not_reset() -> None:
    # The reset needs elapsed > size, strictly.
    win = PsiWindow(size=SEC, start_time=0, start_value=0, prev_growth=500)
    win2, growth = window_update(win, SEC, 7)
    assert (win2, growth) == (win, 7)


def test_window_update_remaining_is_a_u32() -> None:
    # With a 10 s window, 1 s in, 9 s remain -- but the kernel's u32 holds 9e9 mod 2**32.
    win = PsiWindow(size=10 * SEC, start_time=0, start_value=0, prev_growth=SEC)
    _, growth = window_update(win, SEC, 0)
    remaining = (9 * SEC) % (1 << 32)
    assert remaining == 410_065_408
    assert growth == SEC * remaining // (10 * SEC)


def test_window_reset() -> None:
    win = PsiWindow(size=5, start_time=1, start_value=2, prev_growth=3)
    assert window_reset(win, 10, 20, 30) == PsiWindow(5, 10, 20, 30)


# ---------------------------------------------------------------------------------------------
# PsiTriggerState (update_triggers)
# ---------------------------------------------------------------------------------------------

T0 = 100 * SEC  # well past boot, so last_event_time = 0 does not rate-limit the first event


def make_trigger(threshold_ms: int = 150, window_ms: int = 1000, *, defer: bool = True
                 ) -> PsiTriggerState:
    return PsiTriggerState(threshold_ms * MS, window_ms * MS, T0, 0, defer_rate_limited=defer)


def test_trigger_fires_once_per_window_and_again_after() -> None:
    trig = make_trigger()
    assert not trig.update(T0 + 100 * MS, 100 * MS)  # 100 ms < 150 ms
    assert trig.update(T0 + 200 * MS, 160 * MS)  # 160 ms >= 150 ms: fires
    assert trig.last_event_time == T0 + 200 * MS
    # More stall inside the same window: over threshold, but rate-limited.
    assert not trig.update(T0 + 300 * MS, 400 * MS)
    assert not trig.update(T0 + 1100 * MS, 500 * MS)  # 0.9 s after the event
    # A window after the event, with stall still growing: fires again.
    assert trig.update(T0 + 1200 * MS, 600 * MS)
    assert trig.last_event_time == T0 + 1200 * MS


def test_trigger_threshold_is_inclusive() -> None:
    trig = make_trigger()
    assert trig.update(T0 + 100 * MS, 150 * MS)


def test_trigger_below_threshold_never_fires() -> None:
    trig = make_trigger()
    total = 0
    for i in range(1, 200):  # 20 s of 10% stall, sampled every 100 ms
        total += 10 * MS
        assert not trig.update(T0 + i * 100 * MS, total)
        assert trig.last_growth < trig.threshold_ns


def test_trigger_needs_new_stall() -> None:
    trig = make_trigger(defer=False)
    assert trig.update(T0 + 100 * MS, 200 * MS)
    # Long after the window, with no new stall, the trigger is not even evaluated: no
    # event and no window update.
    assert not trig.update(T0 + 1500 * MS, 200 * MS)
    assert trig.window.start_time == T0  # window untouched without new stall


def test_trigger_prorates_previous_window() -> None:
    # 1 s window, 150 ms threshold. The first window ends with 145 ms of growth (no event).
    # Half-way through the next one, 77.5 ms of new stall is enough, because half of the
    # previous window is still inside the 1 s look-back: 77.5 + 145 * 500 / 1000 = 150 ms.
    def rolled_over() -> PsiTriggerState:
        trig = make_trigger()
        assert not trig.update(T0 + 900 * MS, 140 * MS)
        assert not trig.update(T0 + 1100 * MS, 145 * MS)  # elapsed > 1 s: window restarts
        assert trig.window == PsiWindow(SEC, T0 + 1100 * MS, 145 * MS, 145 * MS)
        return trig

    trig = rolled_over()
    assert trig.update(T0 + 1600 * MS, 145 * MS + 77_500_000)
    assert trig.last_growth == 77_500_000 + 145 * MS * 500 // 1000 == 150 * MS
    trig = rolled_over()
    assert not trig.update(T0 + 1600 * MS, 145 * MS + 77_499_999)
    # Without the previous window's share, 77.5 ms is far below the threshold.
    fresh = make_trigger()
    assert not fresh.update(T0 + 500 * MS, 77_500_000)


def test_trigger_rate_limited_breach_is_deferred_not_dropped() -> None:
    # 6.2+: a breach during the rate-limit window fires as soon as the window has passed,
    # even if no new stall arrived in between.
    trig = make_trigger()
    assert trig.update(T0 + 100 * MS, 200 * MS)
    assert not trig.update(T0 + 500 * MS, 600 * MS)  # breach, rate-limited
    assert trig.pending_event
    assert not trig.update(T0 + 800 * MS, 600 * MS)  # no new stall, still rate-limited
    assert trig.update(T0 + 1100 * MS, 600 * MS)  # window passed: the deferred event
    assert not trig.pending_event
    assert not trig.update(T0 + 2500 * MS, 600 * MS)


def test_trigger_rate_limited_breach_dropped_on_old_kernels() -> None:
    trig = make_trigger(defer=False)
    assert trig.update(T0 + 100 * MS, 200 * MS)
    assert not trig.update(T0 + 500 * MS, 600 * MS)
    assert not trig.pending_event
    assert not trig.update(T0 + 1100 * MS, 600 * MS)  # no new stall: nothing


def test_trigger_cannot_fire_before_one_window_after_boot() -> None:
    # last_event_time starts at 0, so "now < 0 + window" rate-limits until now >= window.
    trig = PsiTriggerState(100 * MS, SEC, 0, 0)
    assert not trig.update(500 * MS, 400 * MS)
    assert trig.pending_event
    assert trig.update(SEC, 450 * MS)


def test_trigger_baseline_for_averaging_triggers() -> None:
    # The averaging work compares against avg_total, not the previously seen total.
    trig = make_trigger()
    assert not trig.update(T0 + 100 * MS, 0, baseline_ns=0)
    assert trig.update(T0 + 200 * MS, 200 * MS, baseline_ns=0)


def test_trigger_reset_forgets_history() -> None:
    trig = make_trigger()
    assert not trig.update(T0 + 1200 * MS, 100 * MS)
    assert trig.window.prev_growth == 100 * MS
    trig.reset(T0 + 5 * SEC, 100 * MS)
    assert trig.window == PsiWindow(SEC, T0 + 5 * SEC, 100 * MS, 0)


def test_trigger_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        PsiTriggerState(0, SEC, 0, 0)
    with pytest.raises(ValueError):
        PsiTriggerState(1, 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# validate_trigger / parse_trigger (psi_trigger_create)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "window", "privileged"),
    [
        (150_000, 1_000_000, True),
        (1, 1, True),  # 6.5+: no minimum window any more
        (10_000_000, 10_000_000, True),
        (100_000, 2_000_000, False),
        (1_000_000, 4_000_000, False),
        (10_000_000, 10_000_000, False),
    ],
)
def test_validate_trigger_accepts(threshold: int, window: int, privileged: bool) -> None:
    validate_trigger(threshold, window, privileged)


@pytest.mark.parametrize(
    ("threshold", "window", "privileged"),
    [
        (1, 0, True),  # window 0
        (1, 10_000_001, True),  # window above 10 s
        (0, 1_000_000, True),  # threshold 0
        (1_000_001, 1_000_000, True),  # threshold above window
        (150_000, 1_000_000, False),  # unprivileged: not a multiple of 2 s
        (150_000, 3_000_000, False),
        (1, 1 << 32, True),  # not a u32
    ],
)
def test_validate_trigger_rejects(threshold: int, window: int, privileged: bool) -> None:
    with pytest.raises(ValueError):
        validate_trigger(threshold, window, privileged)


def test_validate_trigger_before_6_5() -> None:
    old = (6, 1)
    validate_trigger(150_000, 1_000_000, False, kernel=old)  # no 2 s rule
    validate_trigger(500_000, 500_000, True, kernel=old)
    with pytest.raises(ValueError):
        validate_trigger(100_000, 499_999, True, kernel=old)  # 500 ms minimum
    with pytest.raises(ValueError):
        validate_trigger(100_000, 10_000_001, True, kernel=old)
    with pytest.raises(ValueError):
        validate_trigger(600_000, 500_000, True, kernel=old)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("some 150000 1000000", (False, 150_000, 1_000_000)),
        ("full 50000 1000000", (True, 50_000, 1_000_000)),
        ("some 150000 1000000\n", (False, 150_000, 1_000_000)),
        ("some   150000\t1000000 trailing", (False, 150_000, 1_000_000)),
        ("some150000 1000000", (False, 150_000, 1_000_000)),  # format space matches none
        ("some 4294967297 2000000", (False, 1, 2_000_000)),  # stored in a u32
    ],
)
def test_parse_trigger(text: str, parsed: tuple[bool, int, int]) -> None:
    assert parse_trigger(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        " some 150000 1000000",  # the keyword must start the buffer
        "Some 150000 1000000",
        "some 150000",
        "some 1500001000000",  # one run of digits is one number
        "some -1 1000000",
        "some +1 1000000",
        "half 1 2",
    ],
)
def test_parse_trigger_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_trigger(text)


def test_proc_write_drops_the_last_byte() -> None:
    # psi_write() turns the last byte copied into the NUL terminator.
    assert proc_write_to_trigger_text(b"some 150000 1000000") == "some 150000 100000"
    assert proc_write_to_trigger_text(b"some 150000 1000000\0") == "some 150000 1000000"
    assert proc_write_to_trigger_text(b"some 150000 1000000\n") == "some 150000 1000000"
    # At most 32 bytes are copied, the 32nd of which becomes the NUL.
    long = b"some 150000 1000000" + b" " * 20 + b"x\0"
    assert proc_write_to_trigger_text(long) == (b"some 150000 1000000" + b" " * 12).decode()
    with pytest.raises(ValueError):
        proc_write_to_trigger_text(b"")


# ---------------------------------------------------------------------------------------------
# parse_pressure
# ---------------------------------------------------------------------------------------------


def test_parse_pressure_sample() -> None:
    text = (
        "some avg10=94.74 avg60=53.20 avg300=14.86 total=47960820\n"
        "full avg10=94.74 avg60=53.20 avg300=14.86 total=47960820\n"
    )
    line = PressureLine(94.74, 53.20, 14.86, 47960820)
    assert parse_pressure(text) == ParsedPressure(line, line)


def test_parse_pressure_cpu_before_5_13_has_no_full_line() -> None:
    parsed = parse_pressure("some avg10=0.00 avg60=0.27 avg300=0.13 total=868781\n")
    assert parsed.full is None
    assert parsed.some == PressureLine(0.0, 0.27, 0.13, 868781)


def test_parse_pressure_irq_has_only_full() -> None:
    text = "full avg10=0.01 avg60=0.00 avg300=0.00 total=123\n"
    assert parse_pressure_lines(text) == {"full": PressureLine(0.01, 0.0, 0.0, 123)}
    with pytest.raises(ValueError, match="no 'some' line"):
        parse_pressure(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "some avg10=1.0 avg60=0.00 avg300=0.00 total=0\n",  # one decimal
        "some avg10=0.00 avg60=0.00 total=0\n",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n",
        "half avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n" * 2,
        "1\n",  # cgroup.pressure is not a pressure file
    ],
)
def test_parse_pressure_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_pressure(text)


def pressure_files(root: Path) -> list[Path]:
    names = {"cpu.pressure", "memory.pressure", "io.pressure"}
    found = [p for p in root.rglob("*") if p.is_file() and p.name in names]
    found += [p for p in root.rglob("proc/pressure/*") if p.is_file()]
    return sorted(found)


def test_parse_pressure_on_all_recorded_files(fixtures: Path) -> None:
    files = pressure_files(fixtures)
    assert files, f"no pressure files under {fixtures}"
    for path in files:
        text = path.read_text()
        parsed = parse_pressure(text)
        assert parsed.full is not None, path  # every recorded kernel is >= 5.13
        # Re-render each line from a fixed-point value with the same digits: the kernel's
        # formatter can produce every two-decimal value, and ours reproduces the text.
        for raw, line in zip(text.splitlines(), (parsed.some, parsed.full), strict=True):
            fixed = [-(-round(v * 100) * FIXED_1 // 100) for v in (line.avg10, line.avg60,
                                                                   line.avg300)]
            kind = raw.split()[0]
            assert format_pressure_line(kind, (fixed[0], fixed[1], fixed[2]), line.total) == raw


def test_parse_pressure_recorded_values(fixtures: Path) -> None:
    base = fixtures / "linux-6.1-cgroup2"
    if not base.is_dir():
        pytest.skip(f"{base} not recorded")
    app = parse_pressure((base / "app.service" / "memory.pressure").read_text())
    assert app.some == PressureLine(94.74, 53.20, 14.86, 47960820)
    assert app.full == app.some
    cpu = parse_pressure((base / "proc" / "pressure" / "cpu").read_text())
    # System-wide cpu "full" is printed but always zero on these kernels.
    assert cpu.full == PressureLine(0.0, 0.0, 0.0, 0)
    assert cpu.some.total == 868781
