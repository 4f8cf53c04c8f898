"""The system-wide MemAvailable watch's decisions (oomkit.kernel.memwatch): plain values in."""

from __future__ import annotations

import pytest

from oomkit.kernel.linux import memwatch as mw
from oomkit.kernel.linux.procfs import parse_meminfo

MiB = 1 << 20
GiB = 1 << 30

# A 1 GiB guest without swap, as /proc/meminfo shows it (kB).
MEMINFO = """\
MemTotal:         1014516 kB
MemFree:           611204 kB
MemAvailable:      735812 kB
Buffers:             2112 kB
Cached:            158880 kB
SwapTotal:              0 kB
SwapFree:               0 kB
"""


def sample(at: float, avail_mib: float, total_mib: int = 1024, swap_mib: int = 0,
           swap_free_mib: float = 0) -> mw.MemSample:  # fmt: skip
    return mw.MemSample(at, total_mib * MiB, int(avail_mib * MiB), swap_mib * MiB,
                        int(swap_free_mib * MiB))  # fmt: skip


def test_sample_from_proc_meminfo_is_in_bytes() -> None:
    s = mw.MemSample.of(3.0, parse_meminfo(MEMINFO))
    assert s == mw.MemSample(3.0, 1014516 * 1024, 735812 * 1024, 0, 0)


def test_sample_from_raw_bytes_reads_only_the_four_fields() -> None:
    s = mw.parse_sample(3.0, MEMINFO.encode())
    assert s == mw.MemSample.of(3.0, parse_meminfo(MEMINFO))
    old = mw.parse_sample(1.0, b"MemTotal: 1024 kB\nMemFree: 10 kB\n")
    assert old.mem_available == old.mem_total == 1 * MiB  # before 3.14: never short
    with pytest.raises(ValueError, match="MemTotal"):
        mw.parse_sample(1.0, b"")


def test_thresholds_from_shares_and_bytes() -> None:
    s = sample(0, 700, total_mib=1000, swap_mib=2000, swap_free_mib=2000)
    t = mw.SystemThresholds.of(s, 0.05, 0.1)
    assert t.min_available == int(1000 * MiB * 0.05)
    assert t.min_swap_free == int(2000 * MiB * 0.1)
    assert mw.SystemThresholds.of(s, 64 * MiB).min_available == 64 * MiB
    with pytest.raises(ValueError, match="share"):
        mw.SystemThresholds.of(s, 1.5)
    with pytest.raises(ValueError, match="negative"):
        mw.SystemThresholds(-1)


def test_short_at_the_threshold_without_swap() -> None:
    t = mw.SystemThresholds(min_available=50 * MiB, lead_s=0.25)
    assert not mw.system_short(sample(0, 51), t)
    assert mw.system_short(sample(0, 50), t)
    assert mw.system_short(sample(0, 10), t)


def test_a_fast_fill_moves_the_trigger_up_by_what_it_takes_in_lead_s() -> None:
    t = mw.SystemThresholds(min_available=50 * MiB, lead_s=0.25)
    fast = 200 * MiB  # 10 MiB every 50 ms
    assert mw.system_short(sample(0, 99), t, rate=fast)  # 99 - 50 <= 50
    assert not mw.system_short(sample(0, 101), t, rate=fast)
    assert not mw.system_short(sample(0, 99), t, rate=1 * MiB)  # a slow leak: the threshold


def test_a_slow_reaction_measured_moves_the_trigger_up_further() -> None:
    t = mw.SystemThresholds(min_available=50 * MiB, lead_s=0.25)
    fast = 200 * MiB
    # The last system-wide OOM took 0.6 s to decide and kill: 120 MiB of this fill.
    assert mw.lead(t, 0.6) == 0.6 and mw.lead(t, 0.1) == 0.25
    assert mw.system_short(sample(0, 160), t, rate=fast, reaction_s=0.6)
    assert not mw.system_short(sample(0, 160), t, rate=fast)
    assert not mw.system_short(sample(0, 60), t, rate=0.0, reaction_s=0.6)  # no fill: min
    assert mw.lead(t, 30.0) == mw.MAX_LEAD_S == 1.0  # a stuck one does not move it far
    # the looks come sooner for it too
    near = sample(0, 150)
    assert mw.next_interval(near, t, fast, 0.6) < mw.next_interval(near, t, fast)


def test_the_reaction_planned_for_is_the_longest_of_the_last_few() -> None:
    assert mw.reaction([]) == 0.0
    assert mw.reaction([0.4, 0.9, 0.3]) == 0.9  # a busy machine varies: plan for the worst
    old = [1.0] + [0.3] * mw.REACTION_WINDOW
    assert mw.reaction(old) == 0.3  # forgotten after REACTION_WINDOW OOMs


def test_with_swap_both_must_be_low() -> None:
    # earlyoom's rule: with swap left the kernel swaps; it kills only when both are out.
    t = mw.SystemThresholds(min_available=50 * MiB, min_swap_free=100 * MiB)
    assert not mw.system_short(sample(0, 10, swap_mib=1024, swap_free_mib=500), t)
    assert mw.system_short(sample(0, 10, swap_mib=1024, swap_free_mib=100), t)
    assert not mw.system_short(sample(0, 60, swap_mib=1024, swap_free_mib=0), t)


def test_fill_rate_follows_falls_and_decays_after() -> None:
    a, b = sample(0.0, 700), sample(0.1, 680)
    r = mw.fill_rate(a, b)
    assert r == pytest.approx(200 * MiB)
    # memory freed: the peak decays with the half-life instead of dropping to zero
    c = sample(0.1 + mw.RATE_HALF_LIFE_S, 690)
    assert mw.fill_rate(b, c, r) == pytest.approx(100 * MiB)
    assert mw.fill_rate(None, a, 5.0) == 5.0
    assert mw.fill_rate(b, b, 5.0) == 5.0  # no time passed


def test_interval_is_earlyooms_bound_with_a_longer_ceiling() -> None:
    t = mw.SystemThresholds(min_available=0)
    # 600 MiB of headroom at 6000 MiB/s: 100 ms (earlyoom's floor)
    assert mw.next_interval(sample(0, 600), t) == pytest.approx(0.1)
    assert mw.next_interval(sample(0, 1200), t) == pytest.approx(0.2)
    assert mw.next_interval(sample(0, 10), t) == mw.MIN_INTERVAL_S
    big = sample(0, 100 * 1024, total_mib=128 * 1024)
    assert mw.next_interval(big, t) == mw.MAX_INTERVAL_S
    # swap headroom adds its own time at 800 MiB/s
    swapped = sample(0, 600, swap_mib=1024, swap_free_mib=80)
    assert mw.next_interval(swapped, t) == pytest.approx(0.2)


def test_a_measured_fill_shortens_the_interval_down_to_the_fast_floor() -> None:
    t = mw.SystemThresholds(min_available=50 * MiB, lead_s=0.25)
    fast = 200 * MiB
    assert mw.next_interval(sample(0, 150), t) == mw.MIN_INTERVAL_S
    # 50 MiB over the trigger (50 + 200 MiB/s * 0.25 s) lasts 0.25 s: a look every quarter
    assert mw.next_interval(sample(0, 150), t, rate=fast) == pytest.approx(0.25 / 4)
    # far from it, earlyoom's bound is the shorter one
    assert mw.next_interval(sample(0, 900), t, rate=fast) == pytest.approx(850 / 6000)
    assert mw.next_interval(sample(0, 101), t, rate=fast) == mw.FAST_INTERVAL_S


def test_a_leak_polled_this_way_is_caught_before_memory_runs_out() -> None:
    # 10 MiB every 50 ms from 800 MiB available; the watch samples at its own intervals.
    t = mw.SystemThresholds(min_available=51 * MiB, lead_s=0.25)
    now, prev, rate = 0.0, None, 0.0
    while True:
        avail = 800 - 200 * now
        s = sample(now, avail)
        rate = mw.fill_rate(prev, s, rate)
        if mw.system_short(s, t, rate):
            break
        prev = s
        now += mw.next_interval(s, t, rate)
    assert avail > 51 + 200 * 0.1  # caught with at least 100 ms of leak to spare


def test_describe_says_what_was_seen() -> None:
    t = mw.SystemThresholds(min_available=51 * MiB)
    assert mw.describe(sample(0, 48), t, 200 * MiB) == (
        "MemAvailable 48M, min 51M (fill 200M/s, lead 250ms)"
    )
