"""memwatch.WatchState: the system-wide watch's decisions from look to look, shared by the
live watch (kernel/linux/system.py) and the simulator's (kernel/sim/memwatch.py)."""

from __future__ import annotations

from oomkit.kernel.linux.memwatch import MemSample, MiB, WatchState


def state(min_available: float | int = 50 * MiB, lead_s: float = 0.25) -> WatchState:
    return WatchState((min_available, 0.0, lead_s, 6000 * MiB), recheck_s=0.5)


def at(t: float, avail_mib: float) -> MemSample:
    return MemSample(t, 1000 * MiB, int(avail_mib * MiB))


def test_a_steady_leak_is_declared_once_the_lead_reaches_the_minimum() -> None:
    """200M/s from 1000M, a look every 100 ms: short once MemAvailable less 0.25 s of
    the fill (50M) is at or below 51M, i.e. at 100M; never before; again every
    recheck_s while no victim goes and it stays short."""
    st = state(51 * MiB)
    declared = []
    for i in range(60):
        s = at(i / 10, 1000 - 20 * i)
        if st.look(s, victim_pending=False):
            declared.append(s.at)
    assert declared == [4.5, 5.0, 5.5]  # 1000 - 900 = 100M


def test_no_second_declaration_within_recheck_nor_while_a_victim_exits() -> None:
    st = state(lead_s=0.0)
    assert st.look(at(0.0, 40), victim_pending=False)
    assert not st.look(at(0.2, 40), victim_pending=False)  # within recheck_s
    assert not st.look(at(0.8, 40), victim_pending=True)  # our victim is exiting
    assert st.look(at(0.9, 40), victim_pending=False)
    st.kernel_killed(1.0)
    assert not st.look(at(1.2, 40), victim_pending=False)
    assert not st.look(at(1.3, 300), victim_pending=False)  # and over once above
    assert st.look(at(1.4, 40), victim_pending=False)


def test_a_burst_that_stops_is_not_projected_as_a_leak() -> None:
    """300M in 0.1 s (3 GB/s), then nothing: with the whole lead (0.25 s) at 3 GB/s the
    700M left would look like 0 at the next look; the fill is projected only as far
    ahead as it has lasted (0.1 s: 300M -> 400M), and not at all once it stopped."""
    st = state()
    assert not st.look(at(0.0, 1000), victim_pending=False)
    assert not st.look(at(0.1, 700), victim_pending=False)
    assert st.rate > 2900 * MiB
    for i in range(2, 10):
        assert not st.look(at(i / 10, 700), victim_pending=False)
    assert st.rate > 2000 * MiB  # the decaying peak is still there, not projected


def test_a_fast_leak_is_projected_over_the_whole_lead_once_it_lasted_that_long() -> None:
    """1 GB/s, a look every 10 ms: 250M of fill is still to come in the lead, above 50M;
    the projection is capped at 3 x 50M (memwatch.PROJECT_CAP), so declared near 200M."""
    st = state()
    first = None
    for i in range(100):
        s = at(i / 100, 1000 - 10.24 * i)
        if st.look(s, victim_pending=False):
            first = s
            break
    assert first is not None
    assert 190 * MiB <= first.mem_available <= 210 * MiB


def test_the_interval_shrinks_with_the_headroom() -> None:
    st = state()
    st.look(at(0.0, 1000), victim_pending=False)
    far = st.next_look(at(0.0, 1000))
    st.look(at(0.1, 990), victim_pending=False)
    near = st.next_look(at(0.1, 990))
    assert 0.1 <= far <= 5.0
    assert near <= far
