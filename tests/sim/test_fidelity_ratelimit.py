"""balance_dirty_pages()'s rate control, memcg background writeback, and the measured
scan ratios (anon kept by the multi-gen LRU, dirty file folios met again): the rules the
third fidelity pass added (docs/sim-vs-kernel.md)."""

from __future__ import annotations

import pytest

from oomkit import SimKernel
from oomkit.errors import ConfigError
from oomkit.kernel.base import PAGE_SIZE, Resource
from oomkit.kernel.sim import MachineSpec, Step, parse_scenario
from oomkit.kernel.sim import dirty_throttle as dt

from .conftest import M

S = 1_000_000_000


def test_pos_ratio_is_the_kernels_cubic_between_freerun_and_the_limit() -> None:
    bg, thresh = M("25M"), M("50M")
    freerun = (bg + thresh) // 2
    setpoint = (freerun + thresh) // 2
    # A slow wb (tiny span) would tilt the line: take one as fast as the kernel's start.
    at = {name: dt.pos_ratio(d, bg, thresh, dt.INIT_BW)
          for name, d in (("freerun", freerun), ("setpoint", setpoint), ("limit", thresh))}
    assert at["freerun"] == pytest.approx(2.0, rel=0.01)
    assert at["setpoint"] == pytest.approx(1.0, rel=0.01)
    assert at["limit"] == 0.0
    # Monotone: more dirty pages, a slower task.
    ds = range(freerun, thresh, M("1M"))
    ratios = [dt.pos_ratio(d, bg, thresh, dt.INIT_BW) for d in ds]
    assert ratios == sorted(ratios, reverse=True)


def test_the_write_bandwidth_estimate_starts_at_init_bw_and_lags_the_device() -> None:
    wb = dt.WbState()
    assert wb.write_bw == wb.avg_write_bw == dt.INIT_BW == 100 << 20
    now = 0
    for _ in range(5):  # one second of a device writing 200M/s
        now += dt.BANDWIDTH_INTERVAL_NS
        wb.written += M("40M")
        dt.update_write_bw(wb, now)
        dt.stamp(wb, now)
    # 200 ms of a 4.096 s period each time: about a fifth of the way there after 1 s,
    # and the average, smoothed once more, further behind.
    assert M("115M") < wb.write_bw < M("130M")
    assert dt.INIT_BW < wb.avg_write_bw < wb.write_bw


def test_dirty_ratelimit_follows_the_balanced_rate_in_damped_steps() -> None:
    bg, thresh = M("25M"), M("50M")
    wb = dt.WbState(stamp_ns=0)
    # A task dirtying 2x what the (estimated) device writes, dirty pages above the
    # setpoint: the first interval only records the balanced rate (the step needs the
    # last balanced rate to agree too); the next brings the rate limit down, by less
    # than the gap.
    wb.dirtied = M("40M")  # 200M/s over 200 ms
    dt.update_ratelimit(wb, M("46M"), bg, thresh, dt.BANDWIDTH_INTERVAL_NS)
    assert wb.dirty_ratelimit == dt.INIT_BW and wb.balanced_ratelimit < M("60M")
    dt.stamp(wb, dt.BANDWIDTH_INTERVAL_NS)
    wb.dirtied += M("40M")
    dt.update_ratelimit(wb, M("46M"), bg, thresh, 2 * dt.BANDWIDTH_INTERVAL_NS)
    assert M("60M") < wb.dirty_ratelimit < dt.INIT_BW
    # Below the setpoint and dirtying slower than the device: it goes up, never past
    # the write bandwidth.
    wb2 = dt.WbState(stamp_ns=0, dirty_ratelimit=M("50M"))
    wb2.dirtied = M("4M")
    dt.update_ratelimit(wb2, M("39M"), bg, thresh, dt.BANDWIDTH_INTERVAL_NS)
    assert M("50M") < wb2.dirty_ratelimit <= wb2.avg_write_bw


def writer_in(limit: str, device: str, rate: str, size: str = "400M",
              **machine: object) -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("3G"), write_bandwidth=M(device),
                              **machine))  # type: ignore[arg-type]
    k.create_cgroup("/w", memory_max=M(limit), swap_max=0)
    k.spawn("writer", "/w", (Step("alloc", "file", M(size), rate=M(rate), path="/out",
                                  write=True), Step("exit")))
    return k


def run_out(k: SimKernel, limit_s: float = 20.0) -> float:
    """Run until the writer is done; its run length in s."""
    while k.process("writer").state not in ("exiting", "exited"):
        k.step()
        assert k.clock.now_ns() < limit_s * S
    return k.clock.now_ns() / S


def test_a_writer_faster_than_its_writeback_is_paced_at_the_writeout_rate() -> None:
    """The 6.12 row's situation: a writer at 135M/s, the memcg's writeback slower; the
    writer's long-run rate comes down to the writeout rate and the rest is IO stall."""
    k = writer_in("256M", "100M", "135M")
    length = run_out(k)
    cg = k.mem_cgroup("/w")
    assert cg is not None and k.ooms == 0
    unthrottled = 400 / 135
    assert length > unthrottled * 1.15
    io = cg.pressure(Resource.IO).some.total / 1e6
    assert io == pytest.approx(length - unthrottled, abs=0.35)
    # Dirty pages held in the throttle zone, never past the limit (20% of ~256M).
    assert cg.page_state("file_dirty") <= M("52M")


def test_a_fresh_memcgs_writer_is_paced_by_the_estimate_not_the_device() -> None:
    """wb_init(): a new memcg's wb starts at 100 MB/s. A writer at 400M/s on a 1G/s
    device, in a memcg too small for its file, is slowed while the estimate catches up;
    on v1 the device's root wb (warmed to the device) lets it go faster."""
    v2 = writer_in("128M", "1G", "400M", size="800M")
    v1 = writer_in("128M", "1G", "400M", size="800M", cgroup_writeback=False,
                   dirty_ratio=1, dirty_background_ratio=0)
    t2, t1 = run_out(v2), run_out(v1)
    assert t2 > 800 / 400 * 1.2  # paced: below 400M/s
    assert t1 < t2
    wb = v2.mem.wb.wbs[v2.mem_cgroup("/w").id]  # type: ignore[union-attr]
    assert dt.INIT_BW < wb.write_bw < M("1G")  # moving up from INIT_BW, behind the device


def test_memcg_background_writeback_starts_at_the_freerun_ceiling() -> None:
    """balance_dirty_pages() starts background writeback for a memcg domain only past
    its freerun ceiling (the global background threshold is far away): 30M dirty in a
    256M memcg (background 25.6M, freerun 38.4M) waits for dirty_expire."""
    k = writer_in("256M", "100M", "100M", size="30M")
    k.run(5 * S)
    cg = k.mem_cgroup("/w")
    assert cg is not None
    assert cg.page_state("file_dirty") == M("30M")
    # Past freerun it starts, and writes down to the background threshold.
    k2 = writer_in("256M", "100M", "100M", size="45M")
    k2.run(5 * S)
    cg2 = k2.mem_cgroup("/w")
    assert cg2 is not None
    assert M("20M") < cg2.page_state("file_dirty") <= M("26M")


def test_anon_scan_ratio_counts_anon_pages_looked_at_and_kept() -> None:
    scans = []
    for ratio in (1.0, 2.0):
        k = SimKernel(MachineSpec(memory=M("2G"), swap=M("1G"), anon_scan_ratio=ratio))
        k.create_cgroup("/leak", memory_max=M("128M"), swap_max=None)
        k.spawn("leaker", "/leak", (Step("alloc", size=M("512M"), rate=M("50M")),
                                    Step("sleep")))
        k.run(6 * S)
        cg = k.mem_cgroup("/leak")
        assert cg is not None
        steal = cg.vm_events("pgsteal_anon")
        assert steal > 10_000
        scans.append(cg.vm_events("pgscan_anon") / steal)
    assert scans[0] == 1.0
    assert scans[1] == pytest.approx(2.0, rel=0.01)


def test_dirty_scan_ratio_counts_dirty_file_folios_met_again() -> None:
    got = []
    for ratio in (1.0, 3.0):
        k = writer_in("128M", "100M", "200M", dirty_scan_ratio=ratio)
        run_out(k)
        cg = k.mem_cgroup("/w")
        assert cg is not None
        steal = cg.vm_events("pgsteal_file")
        assert steal * PAGE_SIZE > M("150M")
        got.append(cg.vm_events("pgscan_file") / steal)
    assert got[1] > got[0] + 1.5


def test_the_ratios_parse_from_a_scenario() -> None:
    sc = parse_scenario("[machine]\nanon_scan_ratio = 1.6\ndirty_scan_ratio = 5\n")
    assert sc.machine.anon_scan_ratio == 1.6 and sc.machine.dirty_scan_ratio == 5.0
    with pytest.raises(ConfigError, match="anon_scan_ratio"):
        parse_scenario("[machine]\nanon_scan_ratio = 0.5\n")


def test_a_paced_alloc_catches_up_after_a_stall_at_the_machines_alloc_rate() -> None:
    """paced = true: the rate is a wall-clock pace; a task that stalled (here in swap-out
    reclaim at 50 us a page) catches up, so it keeps its pace where an unpaced one falls
    behind by its stall."""
    done = {}
    for paced in (False, True):
        k = SimKernel(MachineSpec(memory=M("2G"), swap=M("1G"), swap_out_ns=50_000,
                                  alloc_rate=M("1G")))
        k.create_cgroup("/leak", memory_max=M("128M"), swap_max=None)
        k.spawn("leaker", "/leak", (Step("alloc", size=M("1G"), rate=M("50M"),
                                         paced=paced), Step("sleep")))
        jumps = []
        while k.clock.now_ns() < 8 * S:
            before = k.process("leaker").step_done
            k.step()
            jumps.append(k.process("leaker").step_done - before)
        done[paced] = k.process("leaker").step_done
        # Catching up is allocating at alloc_rate, a tick's worth at a time, not the
        # whole shortfall at once (which would reclaim it all in one stall).
        assert max(jumps) <= M("1G") // 100 + PAGE_SIZE
    assert done[True] == pytest.approx(M("400M"), rel=0.03)  # 8 s at 50M/s
    assert done[False] < 0.9 * done[True]
    sc = parse_scenario('[[process]]\nname = "p"\nprogram = [{ op = "alloc", size = "1M", '
                        'rate = "1M/s", paced = true }]\n')
    assert sc.processes[0].program[0].paced
