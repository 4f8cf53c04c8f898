"""balance_dirty_pages()'s rate control (mm/page-writeback.c), as the simulator models it.

The kernel does not pause a writer by how far its dirty pages are past a ceiling alone.
Each writeback context (``struct bdi_writeback``: the device's root one, or, with cgroup
writeback, one per memcg) keeps two running estimates, and a throttled writer is paced
at ``task_ratelimit = dirty_ratelimit * pos_ratio``:

- ``write_bandwidth`` / ``avg_write_bandwidth`` (wb_update_write_bandwidth()): what the
  flusher wrote over the last interval, blended into the old value over a period of
  roundup_pow_of_two(3 * HZ) jiffies (4.096 s at HZ 250 and at HZ 1000), and the average
  smoothed once more (an eighth of the gap, only while the trend holds);
- ``dirty_ratelimit`` (wb_update_dirty_ratelimit()): the base rate, moved towards the
  "balanced" rate ``task_ratelimit * write_bw / dirty_rate`` by a step that shrinks as it
  gets close (``shift = ratelimit / (2 * step + 1)``, then an eighth), and only when the
  position error agrees;
- ``pos_ratio`` (wb_position_ratio()): 1 + ((setpoint - dirty) / (limit - setpoint))^3,
  clamped to [0, 2], setpoint half-way between the freerun ceiling and the limit; then
  the wb's control line (slope 1 / (8 * write_bw)), and a boost below half the threshold.

A new wb starts at INIT_BW (100 MB/s) for all three (wb_init()), so a writer in a fresh
memcg is paced by 100 MB/s, however fast the device is, until the estimates catch up.
Both estimates are updated at most every BANDWIDTH_INTERVAL (200 ms): the write
bandwidth while writeback completes (wb_update_bandwidth()), the rate limit when a
throttled writer passes through balance_dirty_pages() (__wb_update_bandwidth()).

Simplifications, stated once: every domain is taken to have one writing wb (the wb's
share of a domain's threshold, __wb_calc_thresh(), is the whole threshold); the domain's
hard limit is its threshold (dom->dirty_limit follows a rising threshold at once); the
rates are bytes a second, not pages a jiffy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from oomkit.kernel.base import PAGE_SIZE

NS: Final = 1_000_000_000
INIT_BW: Final = 100 << 20  # bytes a second: INIT_BW = 100 MB/s in pages
BANDWIDTH_INTERVAL_NS: Final = 200_000_000  # max(HZ / 5, 1) jiffies
BW_PERIOD_NS: Final = 4_096_000_000  # roundup_pow_of_two(3 * HZ) jiffies, HZ 250 or 1000
WB_IDLE_NS: Final = NS  # WB_BANDWIDTH_IDLE_JIF: an idle wb restarts its estimate
MAX_PAUSE_NS: Final = 200_000_000  # HZ / 5
# wb_max_pause(): at most the time to write 1/8 of the wb's dirty pages (the pages a
# jiffy are bw / roundup_pow_of_two(1 + HZ / 8): 0.128 s of writing, at HZ 250 or 1000).
MAX_PAUSE_SHARE: Final = 0.128


@dataclass(slots=True)
class WbState:
    """One writeback context's estimates (struct bdi_writeback), bytes a second."""

    write_bw: float = INIT_BW
    avg_write_bw: float = INIT_BW
    dirty_ratelimit: float = INIT_BW
    balanced_ratelimit: float = INIT_BW
    dirtied: int = 0  # WB_DIRTIED, bytes
    written: int = 0  # WB_WRITTEN, bytes
    dirtied_stamp: int = 0
    written_stamp: int = 0
    stamp_ns: int = 0  # bw_time_stamp
    writing: bool = False  # the flusher wrote for it in the last tick

    @classmethod
    def warmed(cls, rate: int, now_ns: int) -> WbState:
        """A wb that has been writing long enough for its estimates to be the device's
        rate (the device's root wb on a machine that has been up a while)."""
        return cls(rate, rate, rate, rate, stamp_ns=now_ns)


def pos_ratio(dirty: int, bg: int, thresh: int, write_bw: float) -> float:
    """wb_position_ratio() for a domain with one writing wb: how far the task's rate is
    scaled from dirty_ratelimit (0 at or over the limit; 2 at the freerun ceiling on the
    global line alone)."""
    limit = thresh
    if dirty >= limit:
        return 0.0
    freerun = (thresh + bg) // 2
    setpoint = (freerun + limit) / 2
    x = (setpoint - dirty) / max(limit - setpoint, 1.0)
    pos = min(2.0, max(0.0, 1.0 + x * x * x))  # pos_ratio_polynom()
    span = 8.0 * write_bw  # one wb: span = 8 * write_bw, wb_setpoint = setpoint
    x_intercept = setpoint + span
    if dirty < x_intercept - span / 4:
        pos = pos * (x_intercept - dirty) / max(x_intercept - setpoint, 1.0)
    else:
        pos /= 4
    reserve = thresh / 2  # the wb reserve area: keep the device busy
    if dirty < reserve:
        pos = pos * reserve / dirty if dirty > reserve / 8 else pos * 8
    return pos


def update_write_bw(wb: WbState, now_ns: int) -> None:
    """wb_update_write_bandwidth() over the time since the wb's stamp."""
    elapsed = max(now_ns - wb.stamp_ns, 1)
    bw = max(0, wb.written - wb.written_stamp) * NS / elapsed
    old, avg = wb.write_bw, wb.avg_write_bw
    if elapsed > BW_PERIOD_NS:
        wb.write_bw = wb.avg_write_bw = max(bw, 1.0)
        return
    bw = (bw * elapsed + old * (BW_PERIOD_NS - elapsed)) / BW_PERIOD_NS
    if avg > old >= bw:
        avg -= (avg - old) / 8
    if avg < old <= bw:
        avg += (old - avg) / 8
    wb.write_bw = bw
    wb.avg_write_bw = max(avg, 1.0)


def update_ratelimit(wb: WbState, dirty: int, bg: int, thresh: int, now_ns: int) -> None:
    """wb_update_dirty_ratelimit() for one domain (dirty, bg, thresh: its bytes)."""
    elapsed = max(now_ns - wb.stamp_ns, 1)
    freerun = (thresh + bg) // 2
    setpoint = (freerun + thresh) / 2
    rate = wb.dirty_ratelimit
    dirty_rate = (wb.dirtied - wb.dirtied_stamp) * NS / elapsed
    task = rate * pos_ratio(dirty, bg, thresh, wb.avg_write_bw) + PAGE_SIZE
    balanced = min(task * wb.avg_write_bw / max(dirty_rate, 1.0), wb.avg_write_bw)
    step = 0.0
    if dirty < setpoint:
        x = min(wb.balanced_ratelimit, balanced, task)
        if rate < x:
            step = x - rate
    else:
        x = max(wb.balanced_ratelimit, balanced, task)
        if rate > x:
            step = rate - x
    # In pages a second, as the kernel counts: the closer, the slower it tracks.
    step_pages = int(step / PAGE_SIZE)
    shift = int(rate / PAGE_SIZE) // (2 * step_pages + 1)
    step_pages = math.ceil((step_pages >> shift) / 8) if shift < 64 else 0
    rate += step_pages * PAGE_SIZE if rate < balanced else -step_pages * PAGE_SIZE
    wb.dirty_ratelimit = max(rate, float(PAGE_SIZE))
    wb.balanced_ratelimit = balanced


def stamp(wb: WbState, now_ns: int) -> None:
    """The end of __wb_update_bandwidth(): the next interval starts now."""
    wb.dirtied_stamp = wb.dirtied
    wb.written_stamp = wb.written
    wb.stamp_ns = now_ns


def max_pause_ns(wb: WbState, wb_dirty: int) -> int:
    """wb_max_pause(): small pools of dirty pages must not run dry while the task sleeps."""
    t = int(wb_dirty / max(wb.avg_write_bw, 1.0) * MAX_PAUSE_SHARE * NS) + 4_000_000
    return min(t, MAX_PAUSE_NS)
