"""The cgroup v2 guard band: how wide it is, and when a cgroup in it is out of memory.

cgroup v2 has no "tell me before you kill" switch. The live backend sets ``memory.high``
(the guard) a margin below ``memory.max``: a cgroup that reaches the guard is throttled
and reclaimed by the kernel (mm/memcontrol.c, ``mem_cgroup_handle_over_high()``) and its
``memory.events`` "high" counter rises, which wakes us. Whether it is an OOM is then a
question of what the kernel can still give back:

* page cache that can be dropped: clean, unmapped file pages (``file`` less ``shmem``,
  which is swap-backed, less dirty and writeback pages, which must be written first, and
  less ``file_mapped``, the running programs' own pages), and reclaimable slab;
* anonymous memory only where it can go to swap (``memory.swap.max`` less
  ``memory.swap.current``, and no more than the machine's SwapFree).

If that cannot bring usage below the guard with room for what the allocators add while
the kernel works (the measured rate times ``horizon_s``), it is an OOM now: waiting only
lets the cgroup reach ``memory.max``, where the kernel's killer acts. Otherwise reclaim
may win and we wait, but only while it shows progress: the reclaimable amount or usage
must fall between two looks, or "full" pressure (every task stalled) must stay below
``max_full_share`` of the time; and only while what reclaim cannot take (usage less the
give-back) does not grow fast enough to eat the give-back within ``max_wait_s``: an
anonymous allocator beside a little page cache turns the cache into anon, which looks
like progress for reclaim and is an OOM all the same. No fixed wait: the next look follows the next
``memory.events`` change or ``recheck_s``, whichever comes first.

The band's width follows the allocation rate measured in the cgroup: at least ``floor``
(4 MiB) and the configured share of ``memory.max``, and wide enough to take
``rate * reaction_s`` of allocation while the handlers decide; never more than half of
``memory.max``, and never above a ``memory.high`` the user set lower.

Pure functions of plain values (bytes, bytes/s, seconds, microseconds of stall).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

PAGE_SIZE: Final = 4096
MiB: Final = 1 << 20
#: The band is never narrower than this (the kernel charges in batches of 64 pages per
#: CPU, MEMCG_CHARGE_BATCH, and reclaims memory.high overage in SWAP_CLUSTER_MAX steps).
BAND_FLOOR: Final = 4 * MiB
#: "At the guard", give or take one charge batch per CPU.
CHARGE_BATCH: Final = 64 * PAGE_SIZE


def band_margin(
    memory_max: int,
    *,
    share: float = 0.05,
    nbytes: int | None = None,
    rate: float = 0.0,
    reaction_s: float = 0.05,
    floor: int = BAND_FLOOR,
) -> int:
    """Bytes between the guard (memory.high) and memory.max.

    ``share`` of memory.max, or ``nbytes`` if given; widened to ``rate * reaction_s`` (the
    allocation a decision must absorb); at least ``floor``; at most half of memory.max.
    """
    wanted = nbytes if nbytes is not None else int(memory_max * share)
    wanted = max(wanted, int(rate * reaction_s), floor)
    return min(wanted, memory_max // 2)


def guard_for(memory_max: int, margin: int, user_high: int | None) -> int | None:
    """The memory.high to set (page aligned), or None for no band: the user's own
    memory.high is already at or below it (never raise a limit the user set)."""
    guard = max(memory_max - margin, 0) // PAGE_SIZE * PAGE_SIZE
    if user_high is not None and user_high <= guard:
        return None
    return guard


@dataclass(frozen=True, slots=True)
class Reclaimable:
    """What the kernel could take back from a cgroup, in bytes."""

    cache: int  # clean, unshared page cache and reclaimable slab
    anon: int  # anonymous memory that has swap to go to

    @property
    def total(self) -> int:
        return self.cache + self.anon


def reclaimable(
    stat: Mapping[str, int],
    *,
    swap_max: int | None,
    swap_current: int = 0,
    system_swap_free: int = 0,
) -> Reclaimable:
    """From memory.stat (bytes) and the cgroup's swap limits (None: "max").

    ``file`` counts tmpfs/shmem too (Documentation/admin-guide/cgroup-v2.rst), which only
    swap can take; dirty and writeback pages must be written before they can go; mapped
    pages (``file_mapped``) are in use and come straight back.
    """
    file = stat.get("file", 0)
    shmem = stat.get("shmem", 0)
    dirty = stat.get("file_dirty", 0) + stat.get("file_writeback", 0)
    # Mapped file pages are the running programs' own text and data: reclaimed, they fault
    # straight back in (and MGLRU keeps them young), so they are no way out of the band.
    mapped = stat.get("file_mapped", 0)
    cache = max(0, file - shmem - dirty - mapped) + stat.get("slab_reclaimable", 0)
    swap_room = system_swap_free if swap_max is None else min(
        system_swap_free, max(0, swap_max - swap_current)
    )  # fmt: skip
    anon = min(stat.get("anon", 0) + shmem, max(0, swap_room))
    return Reclaimable(cache, anon)


class Verdict(enum.Enum):
    CLEAR = "clear"  # below the guard: nothing to do
    WAIT = "wait"  # reclaim can still win: look again
    OOM = "oom"  # an OOM now: ask the handlers


@dataclass(frozen=True, slots=True)
class BandLook:
    """One look at a cgroup in its band (what the live backend reads)."""

    at: float  # seconds
    usage: int  # memory.current
    guard: int  # the memory.high we set
    high_events: int  # memory.events "high"
    give_back: Reclaimable
    full_us: int  # memory.pressure "full" total (microseconds)


@dataclass(frozen=True, slots=True)
class BandPolicy:
    """How patient the band is. ``horizon_s``: reclaim must cover this long of allocation
    at the measured rate; ``max_full_share``: "full" stall above this share of the time
    between two looks means reclaim is losing; ``max_wait_s``: the longest a cgroup may
    sit in its band without progress before it is an OOM all the same."""

    horizon_s: float = 0.05
    max_full_share: float = 0.5
    max_wait_s: float = 0.25
    recheck_s: float = 0.02


def band_verdict(
    first: BandLook | None, prev: BandLook | None, cur: BandLook, rate: float,
    policy: BandPolicy = BandPolicy(),
) -> Verdict:  # fmt: skip
    """Decide for a cgroup whose "high" counter moved: CLEAR, WAIT or OOM.

    ``first``: the look when it entered the band (None: this is it); ``prev``: the look
    before this one; ``rate``: its allocation rate (bytes/s) as measured.
    """
    if cur.usage + CHARGE_BATCH < cur.guard:
        return Verdict.CLEAR
    # What must go for usage to leave the band and stay out for horizon_s.
    needed = cur.usage - cur.guard + CHARGE_BATCH + rate * policy.horizon_s
    if cur.give_back.total < needed:
        return Verdict.OOM  # nothing the kernel can reclaim gets it out: do not wait
    if first is not None and cur.at - first.at >= policy.max_wait_s:
        # Still in the band after the longest wait: progress or not, reclaim did not win.
        return Verdict.OOM
    if prev is not None and cur.at > prev.at:
        dt = cur.at - prev.at
        # What reclaim cannot take (usage less the give-back) growing means reclaim only
        # feeds the allocator: the give-back is gone in give_back / growth seconds.
        growth = (hard(cur) - hard(prev)) / dt
        if growth > 0 and cur.give_back.total / growth < policy.max_wait_s:
            return Verdict.OOM
        progress = cur.give_back.total < prev.give_back.total or cur.usage < prev.usage
        stalled = (cur.full_us - prev.full_us) / 1e6 / dt
        if not progress and stalled > policy.max_full_share:
            return Verdict.OOM  # reclaiming, getting nothing back, everyone stalled
    return Verdict.WAIT


def hard(look: BandLook) -> int:
    """Bytes of the cgroup's usage that reclaim cannot take (without killing)."""
    return max(0, look.usage - look.give_back.total)


def usage_rate(prev_at: float, prev_usage: int, at: float, usage: int, prev_rate: float) -> float:
    """Allocation rate (bytes/s) from two usage readings: the new one, or the older peak
    if it was higher (a peak: a cgroup that allocated fast once may again)."""
    if at <= prev_at:
        return prev_rate
    return max(prev_rate, max(0, usage - prev_usage) / (at - prev_at))
