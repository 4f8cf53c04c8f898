"""The live backend's decisions, apart from their I/O: functions of plain values.

The watchers (:mod:`.v1`, :mod:`.v2`, :mod:`.system`) read the files and act; what the
readings mean is decided here, so each rule is tested without a cgroup tree (as
systemd-oomd keeps ``oomd-util.c`` apart from ``oomd-manager.c``). Sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from oomkit.kernel.base import PAGE_SIZE


def guard_band(
    memory_max: int, margin: float | Callable[[int], int], min_bytes: int
) -> int:
    """The ``memory.high`` to set below ``memory_max``: ``memory_max`` less a margin
    (``margin`` a fraction of ``memory_max``, or a function of it giving bytes), at least
    ``min_bytes`` and at most half of ``memory_max``; page-aligned, never below 0."""
    wanted = margin(memory_max) if callable(margin) else int(memory_max * margin)
    band = max(wanted, min_bytes)
    return max(memory_max - min(band, memory_max // 2), 0) // PAGE_SIZE * PAGE_SIZE


def stuck_in_band(usage: int, guard: int, high_count: int, high_count_before: int) -> bool:
    """An OOM in the band: usage at the guard (within a charge batch: 1/64 of it, at least
    64 pages) and ``memory.events`` "high" still rising since the band was entered (the
    kernel still throttles, so reclaim does not get usage down)."""
    slack = max(guard // 64, 64 * PAGE_SIZE)
    return usage + slack >= guard and high_count > high_count_before


def v1_oom_domain(under_oom: Sequence[bool]) -> int | None:
    """The v1 memcg whose limit was hit, from ``under_oom`` of a signalled memcg and its
    ancestors (``under_oom[0]`` the memcg, then its parent, ... up to, not including, the
    hierarchy's root; a vanished ancestor ends the list). The kernel marks the whole
    subtree of the OOMing memcg (``mem_cgroup_mark_under_oom``), so the domain is the
    highest one of the unbroken run of marked memcgs from the start: its index. None:
    the memcg itself is not under OOM (over already)."""
    if not under_oom or not under_oom[0]:
        return None
    top = 0
    while top + 1 < len(under_oom) and under_oom[top + 1]:
        top += 1
    return top



# A charge that fails is at most a PMD-sized folio (2 MiB on x86-64: a THP or the largest
# mTHP) or a MEMCG_CHARGE_BATCH of base pages; the per-CPU stocks make usage_in_bytes up
# to a batch per CPU off. 4 MiB of room below the limit is more than any of them needs.
V1_STALE_ROOM = 4 << 20


def v1_oom_stale(
    usage: int, limit: int | None, memsw_usage: int | None = None,
    memsw_limit: int | None = None,
) -> bool:
    """True when a v1 memcg that says ``under_oom 1`` has room for the charge that failed:
    its sleepers were woken (``memcg1_oom_recover`` runs on every uncharge while the memcg
    is under OOM) but have not run their retry yet, which on a busy machine takes tenths of
    a second after a victim exited. ``under_oom`` stays 1 until they do, so asking the
    handlers then kills a second task for memory that is already free. ``usage`` and
    ``limit`` from ``memory.usage_in_bytes`` / ``memory.limit_in_bytes`` (None: no limit),
    the ``memsw`` pair likewise (None: no swap accounting); bytes. Either limit short of
    :data:`V1_STALE_ROOM` means the OOM is real."""
    if limit is not None and limit - usage < V1_STALE_ROOM:
        return False
    if memsw_limit is not None and memsw_usage is not None and (
        memsw_limit - memsw_usage < V1_STALE_ROOM
    ):
        return False
    return limit is not None or memsw_limit is not None
