"""Cgroup file names (every one a constant, here only) and pure parsers of their formats.

Both memory-controller interfaces are covered: cgroup v2 (the unified hierarchy) and the
legacy v1 memory hierarchy. The v1 parsers translate to the v2 names and units oomkit
speaks everywhere (SPEC section 3): ``rss``->``anon``, ``cache``->``file``, and the
hierarchical ``total_*`` values rather than the cgroup-local ones.
"""

from __future__ import annotations

from typing import Final

# -- cgroup v2 (Documentation/admin-guide/cgroup-v2.rst) ----------------------------------
CGROUP_CONTROLLERS: Final = "cgroup.controllers"
CGROUP_SUBTREE_CONTROL: Final = "cgroup.subtree_control"
CGROUP_PROCS: Final = "cgroup.procs"  # v1 has it too
CGROUP_KILL: Final = "cgroup.kill"  # since 5.14
CGROUP_EVENTS: Final = "cgroup.events"
MEMORY_CURRENT: Final = "memory.current"
MEMORY_MAX: Final = "memory.max"
MEMORY_HIGH: Final = "memory.high"
MEMORY_LOW: Final = "memory.low"
MEMORY_MIN: Final = "memory.min"
MEMORY_SWAP_MAX: Final = "memory.swap.max"
MEMORY_SWAP_CURRENT: Final = "memory.swap.current"
MEMORY_STAT: Final = "memory.stat"  # v1 has it too, with other names
MEMORY_EVENTS: Final = "memory.events"
MEMORY_OOM_GROUP: Final = "memory.oom.group"
MEMORY_RECLAIM: Final = "memory.reclaim"  # since 5.19


def pressure_file(resource: str) -> str:
    """``memory.pressure`` etc. in a v2 cgroup (PSI per cgroup, since 4.20)."""
    return f"{resource}.pressure"


# -- cgroup v1 memory (Documentation/admin-guide/cgroup-v1/memory.rst) -------------------
V1_USAGE: Final = "memory.usage_in_bytes"
V1_LIMIT: Final = "memory.limit_in_bytes"
V1_MEMSW_LIMIT: Final = "memory.memsw.limit_in_bytes"  # only with swap accounting
V1_MEMSW_USAGE: Final = "memory.memsw.usage_in_bytes"
V1_FAILCNT: Final = "memory.failcnt"
V1_OOM_CONTROL: Final = "memory.oom_control"
V1_EVENT_CONTROL: Final = "cgroup.event_control"
V1_FORCE_EMPTY: Final = "memory.force_empty"
V1_FREEZER_STATE: Final = "freezer.state"

#: The v1 "no limit": PAGE_COUNTER_MAX pages (LONG_MAX / PAGE_SIZE) shown in bytes, rounded
#: down to a page: 9223372036854771712 on 64-bit. Anything at or above it is "max".
V1_UNLIMITED: Final = 9223372036854771712

#: v1 memory.stat total_<name> -> v2 memory.stat name (values already bytes or counts).
V1_TO_V2_STAT: Final[dict[str, str]] = {
    "rss": "anon",
    "cache": "file",
    "shmem": "shmem",
    "mapped_file": "file_mapped",
    "dirty": "file_dirty",
    "writeback": "file_writeback",
    "rss_huge": "anon_thp",
    "swapcached": "swapcached",
    "inactive_anon": "inactive_anon",
    "active_anon": "active_anon",
    "inactive_file": "inactive_file",
    "active_file": "active_file",
    "unevictable": "unevictable",
    "workingset_refault_anon": "workingset_refault_anon",
    "workingset_refault_file": "workingset_refault_file",
    "pgfault": "pgfault",
    "pgmajfault": "pgmajfault",
    # no v2 counterparts, kept under their v1 names:
    "pgpgin": "pgpgin",
    "pgpgout": "pgpgout",
    "swap": "swap",
}


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines: memory.stat, memory.events, memory.oom_control, cgroup.events."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_limit_v2(text: str) -> int | None:
    """memory.max/high/low/min, memory.swap.max: bytes, or ``max`` (None)."""
    value = text.strip()
    return None if value == "max" else int(value)


def format_limit_v2(value: int | None) -> str:
    return "max" if value is None else str(value)


def parse_limit_v1(text: str) -> int | None:
    """memory.limit_in_bytes and friends: bytes, with the huge "unlimited" value as None
    (and -1, the value one writes for it)."""
    value = int(text.strip())
    return None if value >= V1_UNLIMITED or value < 0 else value


def v1_stat_to_v2(stat: dict[str, int]) -> dict[str, int]:
    """A v1 memory.stat in v2 names, hierarchical (from the ``total_*`` lines).

    # 6.18, v1:  cache 12664832 / rss 25399296 / ... / total_cache 12664832 / total_rss ...
    """
    out: dict[str, int] = {}
    for v1_name, v2_name in V1_TO_V2_STAT.items():
        total = stat.get("total_" + v1_name)
        if total is None:
            total = stat.get(v1_name)
        if total is not None:
            out[v2_name] = total
    return out


def parse_procs(text: str) -> list[int]:
    """cgroup.procs: one PID a line."""
    return [int(line) for line in text.split()]
