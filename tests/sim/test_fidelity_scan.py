"""Scanned against reclaimed, the restore's memstall, and restores in clumps: the rules
the second fidelity pass added (docs/sim-vs-kernel.md)."""

from __future__ import annotations

import pytest

from oomkit import SimKernel
from oomkit.errors import ConfigError
from oomkit.kernel.base import PAGE_SIZE, Resource
from oomkit.kernel.sim import MachineSpec, Step, parse_scenario

from .conftest import M

S = 1_000_000_000


def v1_writer(**machine: object) -> SimKernel:
    """The fidelity suite's writer: 400M of page cache into a 256M memcg, v1 (only the
    machine's dirty limits, far above it), so the memcg fills with dirty pages."""
    k = SimKernel(MachineSpec(memory=M("24G"), write_bandwidth=M("500M"),
                              cgroup_writeback=False, **machine))  # type: ignore[arg-type]
    k.create_cgroup("/w", memory_max=M("256M"), swap_max=0)
    k.spawn("writer", "/w", (Step("alloc", "file", M("400M"), rate=M("2G"), path="/out",
                                  write=True), Step("sleep")))
    return k


def test_dirty_pages_reclaim_meets_are_scanned_not_reclaimed_and_met_once() -> None:
    k = v1_writer()
    k.run(3 * S)
    cg = k.mem_cgroup("/w")
    assert cg is not None and k.ooms == 0
    scan, steal = cg.vm_events("pgscan_file"), cg.vm_events("pgsteal_file")
    # What left the memcg is what reclaim took: 400M written, 256M at most kept.
    assert steal * PAGE_SIZE >= M("400M") - M("256M")
    # Dirty pages met and activated: in pgscan, not pgsteal; each at most once while
    # dirty, so never more than the pages written.
    assert scan > steal
    assert (scan - steal) * PAGE_SIZE <= M("400M")
    assert cg.vm_events("pgscan") == scan and cg.vm_events("pgsteal") == steal


def test_clean_page_cache_is_scanned_and_reclaimed_alike() -> None:
    k = SimKernel(MachineSpec(memory=M("1G"), duration_ns=5 * S))
    k.create_cgroup("/r", memory_max=M("64M"))
    k.spawn("reader", "/r", (Step("touch", "file", M("256M"), path="/f", duration_ns=5 * S),))
    k.run()
    cg = k.mem_cgroup("/r")
    assert cg is not None
    assert cg.vm_events("pgscan") == cg.vm_events("pgsteal") > 0


def test_a_v1_reclaim_waiting_on_writeback_is_an_io_stall_too() -> None:
    """Legacy memcg reclaim waits on folios under writeback in folio_wait_writeback()
    (io_schedule): memory and IO stalled at once. With cgroup writeback it does not."""
    k = v1_writer()
    k.run(3 * S)
    cg = k.mem_cgroup("/w")
    assert cg is not None
    mem, io = cg.pressure(Resource.MEMORY).some.total, cg.pressure(Resource.IO).some.total
    assert mem > 0 and 0 < io <= mem
    # v2: the memcg is a dirty domain (here with limits as high as v1's were).
    k2 = SimKernel(MachineSpec(memory=M("24G"), write_bandwidth=M("500M"), dirty_ratio=100,
                               dirty_background_ratio=100))
    k2.create_cgroup("/w", memory_max=M("256M"), swap_max=0)
    k2.spawn("writer", "/w", (Step("alloc", "file", M("400M"), rate=M("2G"), path="/out",
                                   write=True), Step("sleep")))
    k2.run(3 * S)
    cg2 = k2.mem_cgroup("/w")
    assert cg2 is not None
    assert cg2.pressure(Resource.MEMORY).some.total > 0
    assert cg2.pressure(Resource.IO).some.total == 0


def near_reader(seconds: int = 20, **machine: object) -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("1G"), duration_ns=seconds * S, refault_ns=20_000,
                              miss_cpu_ns=30_000, touch_rate=M("3G"),
                              **machine))  # type: ignore[arg-type]
    k.create_cgroup("/r", memory_max=M("64M"))
    k.spawn("reader", "/r", (Step("touch", "file", M("80M"), path="/f",
                                  duration_ns=seconds * S),))
    return k


def test_a_restore_stalls_for_its_io_and_restore_cpu_not_all_of_miss_cpu() -> None:
    def mem_stall(**m: object) -> tuple[float, float]:
        k = near_reader(**m)
        k.run()
        cg = k.mem_cgroup("/r")
        assert cg is not None
        steal = cg.vm_events("pgsteal")
        restores = cg.vm_events("workingset_restore_file")
        return (cg.pressure(Resource.MEMORY).some.total * 1000 - steal * k.machine.reclaim_ns,
                restores)
    whole, r_whole = mem_stall()
    held, r_held = mem_stall(restore_cpu_ns=5_000)
    # Per restore: IO + miss_cpu (50 us) by default, IO + restore_cpu (25 us) when given.
    assert whole / r_whole == pytest.approx(50_000, rel=0.05)
    assert held / r_held == pytest.approx(25_000, rel=0.05)


def test_restores_come_in_seeded_clumps_of_the_given_spread() -> None:
    def per_window(**m: object) -> list[float]:
        k = near_reader(seconds=40, **m)
        out, last = [], 0.0
        cg = k.mem_cgroup("/r")
        assert cg is not None
        for w in range(1, 21):
            k.run(w * 2 * S)
            now = cg.vm_events("workingset_restore_file")
            out.append(now - last)
            last = now
        return out[1:]
    steady = per_window()
    clumps = per_window(restore_burst_cv=0.5)
    again = per_window(restore_burst_cv=0.5)
    other = per_window(restore_burst_cv=0.5, seed=7)

    def cv(xs: list[float]) -> float:
        mean = sum(xs) / len(xs)
        return (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5 / mean
    assert cv(steady) < 0.05
    assert 0.25 < cv(clumps) < 0.9
    assert clumps == again and clumps != other  # deterministic per seed
    assert sum(clumps) == pytest.approx(sum(steady), rel=0.35)  # mean 1


def test_the_restore_keys_parse_and_bad_ones_are_refused() -> None:
    sc = parse_scenario('[machine]\nrestore_cpu = "5us"\nrestore_burst_cv = 0.5\n'
                        'restore_burst_period = "1s"\n')
    assert sc.machine.restore_cpu_ns == 5_000
    assert sc.machine.restore_burst_cv == 0.5
    assert sc.machine.restore_burst_period_ns == S
    assert parse_scenario("").machine.restore_cpu_ns is None
    with pytest.raises(ConfigError, match="restore_burst_cv"):
        parse_scenario('[machine]\nrestore_burst_cv = -1\n')


def _swapping_leak(**machine: object) -> SimKernel:
    """The fidelity suite's leak with swap: 50M/s into a 128M memcg that may swap."""
    k = SimKernel(MachineSpec(memory=M("2G"), swap=M("1G"), **machine))  # type: ignore[arg-type]
    k.create_cgroup("/leak", memory_max=M("128M"), swap_max=None)
    k.spawn("leaker", "/leak", (Step("alloc", size=M("1G"), rate=M("50M")), Step("sleep")))
    return k


def test_swap_out_cost_is_the_memory_stall_of_an_anon_page_written_to_swap() -> None:
    """swap_out_cost (measured in the guest: a leaker swapping to a RAM disk) charges
    each swapped-out page's reclaim, not reclaim_cost; unset, reclaim_cost as before."""
    stalls = []
    for machine in ({}, {"swap_out_ns": 50_000}):
        k = _swapping_leak(**machine)
        k.run(6 * S)
        cg = k.mem_cgroup("/leak")
        assert cg is not None and k.ooms == 0
        swapped = cg.vm_events("pgsteal_anon")
        assert swapped > 10_000
        stalls.append(cg.pressure(Resource.MEMORY).some.total)  # us
    plain, costly = stalls
    # 50 us a page against 1 us: the stall grows with the cost.
    assert costly > 10 * plain
    text = '[machine]\nswap_out_cost = "40us"\n'
    assert parse_scenario(text).machine.swap_out_ns == 40_000
    with pytest.raises(ConfigError):
        parse_scenario('[machine]\nswap_out_cost = "fast"\n')
