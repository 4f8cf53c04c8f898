"""The cgroup v2 guard band's decisions (oomkit.kernel.band): plain values in."""

from __future__ import annotations

from oomkit.kernel.linux import band as b

MiB = 1 << 20


def test_margin_is_a_share_with_a_floor_and_a_ceiling() -> None:
    assert b.band_margin(1024 * MiB) == int(1024 * MiB * 0.05)
    assert b.band_margin(64 * MiB) == b.BAND_FLOOR  # 5 % of 64M is 3.2M: the floor
    assert b.band_margin(6 * MiB) == 3 * MiB  # never more than half of memory.max
    assert b.band_margin(1024 * MiB, nbytes=16 * MiB) == 16 * MiB


def test_margin_widens_to_the_measured_allocation_rate() -> None:
    # 400 MiB/s for 50 ms of decision is 20 MiB: wider than 5 % of 256M (12.8M)
    assert b.band_margin(256 * MiB, rate=400 * MiB, reaction_s=0.05) == 20 * MiB
    assert b.band_margin(256 * MiB, rate=1 * MiB) == int(256 * MiB * 0.05)


def test_guard_is_page_aligned_and_never_above_the_users_high() -> None:
    g = b.guard_for(64 * MiB + 123, 4 * MiB, None)
    assert g is not None and g % b.PAGE_SIZE == 0 and g <= 60 * MiB + 123
    assert b.guard_for(64 * MiB, 4 * MiB, user_high=50 * MiB) is None
    assert b.guard_for(64 * MiB, 4 * MiB, user_high=62 * MiB) == 60 * MiB


STAT = {"anon": 60 * MiB, "file": 10 * MiB, "shmem": 2 * MiB, "file_dirty": 1 * MiB,
        "file_writeback": 1 * MiB, "slab_reclaimable": 1 * MiB}  # fmt: skip


def test_reclaimable_is_clean_cache_and_only_swappable_anon() -> None:
    no_swap = b.reclaimable(STAT, swap_max=None, system_swap_free=0)
    assert no_swap == b.Reclaimable(cache=(10 - 2 - 2 + 1) * MiB, anon=0)
    swap = b.reclaimable(STAT, swap_max=None, system_swap_free=1024 * MiB)
    assert swap.anon == 62 * MiB  # anon + shmem, both swap-backed
    limited = b.reclaimable(STAT, swap_max=20 * MiB, swap_current=15 * MiB,
                            system_swap_free=1024 * MiB)  # fmt: skip
    assert limited.anon == 5 * MiB
    assert b.reclaimable(STAT, swap_max=0, system_swap_free=1024 * MiB).anon == 0


def look(at: float, usage_mib: float, cache_mib: float = 0.2, anon_mib: float = 0,
         full_us: int = 0, guard_mib: int = 60) -> b.BandLook:  # fmt: skip
    give_back = b.Reclaimable(int(cache_mib * MiB), int(anon_mib * MiB))
    return b.BandLook(at, int(usage_mib * MiB), guard_mib * MiB, 1, give_back, full_us)


def test_an_anon_hog_without_swap_is_an_oom_at_the_first_look() -> None:
    assert b.band_verdict(None, None, look(0, 60), rate=200 * MiB) is b.Verdict.OOM


def test_below_the_guard_is_clear() -> None:
    assert b.band_verdict(None, None, look(0, 50), rate=0) is b.Verdict.CLEAR


def test_cache_to_drop_means_wait_while_reclaim_makes_progress() -> None:
    first = look(0.0, 60, cache_mib=30)
    assert b.band_verdict(None, None, first, rate=10 * MiB) is b.Verdict.WAIT
    # reclaim took cache back and usage fell with it; stalls are high but it is winning
    nxt = look(0.02, 59.9, cache_mib=29, full_us=15_000)
    assert b.band_verdict(first, first, nxt, rate=10 * MiB) is b.Verdict.WAIT


def test_no_progress_with_everyone_stalled_is_an_oom() -> None:
    first = look(0.0, 60, cache_mib=30)
    stuck = look(0.02, 60, cache_mib=30, full_us=15_000)  # 75 % full, nothing given back
    assert b.band_verdict(first, first, stuck, rate=10 * MiB) is b.Verdict.OOM
    calm = look(0.02, 60, cache_mib=30, full_us=2_000)  # 10 %: the kernel is just busy
    assert b.band_verdict(first, first, calm, rate=10 * MiB) is b.Verdict.WAIT


def test_the_cache_running_out_under_a_fast_allocator_is_an_oom() -> None:
    # 5 MiB of cache left cannot cover 50 ms at 200 MiB/s (10 MiB)
    assert b.band_verdict(None, None, look(0, 60, cache_mib=5), rate=200 * MiB) is b.Verdict.OOM
    assert b.band_verdict(None, None, look(0, 60, cache_mib=5), rate=1 * MiB) is b.Verdict.WAIT


def test_swappable_anon_counts_and_the_longest_wait_ends_it() -> None:
    first = look(0.0, 60, anon_mib=40)
    assert b.band_verdict(None, None, first, rate=50 * MiB) is b.Verdict.WAIT
    late = look(0.3, 60, anon_mib=35)
    assert b.band_verdict(first, first, late, rate=50 * MiB) is b.Verdict.OOM


def test_usage_rate_keeps_the_peak() -> None:
    r = b.usage_rate(0.0, 10 * MiB, 0.1, 30 * MiB, 0.0)
    assert r == 200 * MiB
    assert b.usage_rate(0.1, 30 * MiB, 0.2, 31 * MiB, r) == r
    assert b.usage_rate(0.2, 31 * MiB, 0.2, 40 * MiB, r) == r


def test_cache_turning_into_anon_is_an_oom_at_the_second_look() -> None:
    # 6 MiB of python's own file pages in the cgroup: "reclaimable", and reclaimed while
    # the anon hog grows at 100 MiB/s. The give-back lasts 40 ms: do not wait 250.
    first = look(0.0, 60, cache_mib=6)
    assert b.band_verdict(None, None, first, rate=0) is b.Verdict.WAIT
    eaten = look(0.02, 60, cache_mib=4)  # usage flat, 2 MiB of cache became anon
    assert b.band_verdict(first, first, eaten, rate=0) is b.Verdict.OOM


def test_a_slow_anon_growth_beside_a_big_cache_waits() -> None:
    # A database at its memory.high: 30 GiB of cache, its heap growing 10 MiB/s.
    first = look(0.0, 60, cache_mib=30 * 1024, guard_mib=60)
    nxt = look(0.02, 60, cache_mib=30 * 1024 - 0.2, guard_mib=60)
    assert b.band_verdict(first, first, nxt, rate=0) is b.Verdict.WAIT


def test_mapped_file_pages_are_no_way_out() -> None:
    # A python hog's own libraries, mapped: 6 MiB of "file" that would fault straight back.
    stat = {"anon": 60 * MiB, "file": 7 * MiB, "file_mapped": 6 * MiB}
    assert b.reclaimable(stat, swap_max=0).cache == 1 * MiB
