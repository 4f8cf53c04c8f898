"""The memory controller's files, per interface version: one object, chosen at start-up.

:class:`V2Layout` reads cgroup v2 files as they are; :class:`V1Layout` maps the legacy
memory hierarchy onto the same answers (SPEC section 3 speaks v2 names and units). The
cgroup (:class:`~oomkit.kernel.linux.cgroup.LinuxCgroup`) asks its kernel's layout, so no
other module branches on the version.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Literal

from oomkit.errors import CgroupGone, KernelError
from oomkit.kernel.base import PAGE_SIZE, Resource
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import fsio
from oomkit.kernel.linux.procfs import Procfs

if TYPE_CHECKING:
    from oomkit.kernel.linux.cgroup import LinuxCgroup


class Layout:
    """What differs between the versions. Sizes are bytes; None is "max" (no limit)."""

    version: Literal[1, 2]
    #: How OOMs reach the handlers first on this version (for watch_oom's answer).
    oom_how: str

    def __init__(self, procfs: Procfs) -> None:
        self.procfs = procfs

    def usage(self, cg: LinuxCgroup) -> int:
        raise NotImplementedError

    def stat(self, cg: LinuxCgroup) -> dict[str, int]:
        """memory.stat in v2 names, hierarchical."""
        raise NotImplementedError

    def memory_events(self, cg: LinuxCgroup, item: str, oom_count: int) -> int:
        raise NotImplementedError

    def pressure_path(self, cg: LinuxCgroup, resource: Resource) -> str:
        """The cgroup's PSI file; KernelError(EOPNOTSUPP) on v1 (no per-cgroup PSI)."""
        raise NotImplementedError

    def limit(self, cg: LinuxCgroup, name: Literal["max", "high", "low", "min"]) -> int | None:
        raise NotImplementedError

    def swap_max(self, cg: LinuxCgroup) -> int | None:
        raise NotImplementedError

    def oom_group(self, cg: LinuxCgroup) -> bool:
        raise NotImplementedError

    def totalpages(self, cg: LinuxCgroup, ram: int, swap: int) -> int:
        """mem_cgroup_get_max() in pages: the memcg's limit (at most RAM) plus the swap it
        may use."""
        raise NotImplementedError

    def set_memory_max(self, cg: LinuxCgroup, nbytes: int | None) -> None:
        raise NotImplementedError

    def reclaim(self, cg: LinuxCgroup, nbytes: int) -> int:
        raise NotImplementedError

    def has_cgroup_kill(self, cg: LinuxCgroup) -> bool:
        """cgroup.kill is there (v2, since 5.14): one write kills the whole subtree."""
        return False


class V2Layout(Layout):
    version: Literal[1, 2] = 2
    oom_how = "memory.high guard band + memory.events"

    def usage(self, cg: LinuxCgroup) -> int:
        name = cf.MEMORY_CURRENT
        if cg.path == "/" and not fsio.exists(cg.file(name)):
            # The v2 root has no memory.current: the system's use is its usage.
            info = self.procfs.meminfo()
            return info.get("MemTotal", 0) - info.get("MemAvailable", 0)
        return fsio.read_int(cg.file(name))

    def stat(self, cg: LinuxCgroup) -> dict[str, int]:
        return cf.parse_flat_keyed(cg.read(cf.MEMORY_STAT))

    def memory_events(self, cg: LinuxCgroup, item: str, oom_count: int) -> int:
        return cf.parse_flat_keyed(cg.read(cf.MEMORY_EVENTS)).get(item, 0)

    def pressure_path(self, cg: LinuxCgroup, resource: Resource) -> str:
        return cg.file(cf.pressure_file(resource.value))

    def _limit_file(self, cg: LinuxCgroup, name: str) -> int | None:
        if cg.path == "/" and not fsio.exists(cg.file(name)):
            return None
        return cf.parse_limit_v2(cg.read(name))

    def limit(self, cg: LinuxCgroup, name: Literal["max", "high", "low", "min"]) -> int | None:
        return self._limit_file(cg, f"memory.{name}")

    def swap_max(self, cg: LinuxCgroup) -> int | None:
        return self._limit_file(cg, cf.MEMORY_SWAP_MAX)

    def oom_group(self, cg: LinuxCgroup) -> bool:
        if not fsio.exists(cg.file(cf.MEMORY_OOM_GROUP)):
            return False
        return cg.read(cf.MEMORY_OOM_GROUP).strip() == "1"

    def totalpages(self, cg: LinuxCgroup, ram: int, swap: int) -> int:
        mem = self.limit(cg, "max")
        mem = ram if mem is None else min(mem, ram)
        swap_max = self.swap_max(cg)
        return (mem + (swap if swap_max is None else min(swap_max, swap))) // PAGE_SIZE

    def set_memory_max(self, cg: LinuxCgroup, nbytes: int | None) -> None:
        cg.write(cf.MEMORY_MAX, cf.format_limit_v2(nbytes))

    def reclaim(self, cg: LinuxCgroup, nbytes: int) -> int:
        before = self.stat(cg).get("pgsteal", 0)
        usage_before = self.usage(cg)
        try:
            cg.write(cf.MEMORY_RECLAIM, str(nbytes))
        except KernelError as exc:
            if exc.errno != errno.EAGAIN:  # EAGAIN: reclaimed less than asked
                raise
        after = self.stat(cg).get("pgsteal", 0)
        if after > before:
            return (after - before) * PAGE_SIZE
        return max(0, usage_before - self.usage(cg))

    def has_cgroup_kill(self, cg: LinuxCgroup) -> bool:
        return fsio.exists(cg.file(cf.CGROUP_KILL))


class V1Layout(Layout):
    version: Literal[1, 2] = 1
    oom_how = "memory.oom_control oom_kill_disable + eventfd"

    def usage(self, cg: LinuxCgroup) -> int:
        return fsio.read_int(cg.file(cf.V1_USAGE))

    def stat(self, cg: LinuxCgroup) -> dict[str, int]:
        return cf.v1_stat_to_v2(cf.parse_flat_keyed(cg.read(cf.MEMORY_STAT)))

    def memory_events(self, cg: LinuxCgroup, item: str, oom_count: int) -> int:
        # v1 has no memory.events: oom_kill from memory.oom_control, which counts kills in
        # that memcg only (not hierarchical on 6.18), summed over the subtree; "max" is
        # the limit's failcnt; "oom" the OOMs this backend saw there (``oom_count``).
        if item == "oom_kill":
            total = 0
            for c in cg.walk():
                assert isinstance(c, type(cg))
                try:
                    total += cf.parse_flat_keyed(c.read(cf.V1_OOM_CONTROL)).get("oom_kill", 0)
                except CgroupGone:
                    continue
            return total
        if item == "max":
            return fsio.read_int(cg.file(cf.V1_FAILCNT))
        if item == "oom":
            return oom_count
        return 0

    def pressure_path(self, cg: LinuxCgroup, resource: Resource) -> str:
        raise KernelError(
            f"{cg.path}: no per-cgroup PSI on cgroup v1 (system-wide: cgroup_id 0)",
            errno.EOPNOTSUPP,
        )

    def limit(self, cg: LinuxCgroup, name: Literal["max", "high", "low", "min"]) -> int | None:
        if name == "max":
            return cf.parse_limit_v1(cg.read(cf.V1_LIMIT))
        # v1 has no memory.high; no protection: 0, not "max" (which means fully protected).
        return None if name == "high" else 0

    def _memsw(self, cg: LinuxCgroup) -> int | None:
        """memory.memsw.limit_in_bytes; None without swap accounting or unlimited."""
        if not fsio.exists(cg.file(cf.V1_MEMSW_LIMIT)):
            return None
        return cf.parse_limit_v1(cg.read(cf.V1_MEMSW_LIMIT))

    def swap_max(self, cg: LinuxCgroup) -> int | None:
        # v1 limits memory+swap together; the swap share is what memsw allows beyond memory.
        memsw = self._memsw(cg)
        mem = self.limit(cg, "max")
        if memsw is None or mem is None:
            return None
        return max(0, memsw - mem)

    def oom_group(self, cg: LinuxCgroup) -> bool:
        return False

    def totalpages(self, cg: LinuxCgroup, ram: int, swap: int) -> int:
        # mem_cgroup_get_max(), v1: min(max + total swap, memsw.max)
        mem = self.limit(cg, "max")
        mem = ram if mem is None else min(mem, ram)
        total = mem + swap
        if swap:
            memsw = self._memsw(cg)
            if memsw is not None:
                total = min(total, memsw)
        return total // PAGE_SIZE

    def set_memory_max(self, cg: LinuxCgroup, nbytes: int | None) -> None:
        # memsw.limit >= limit always: raise memsw first, lower it last.
        new = "-1" if nbytes is None else str(nbytes)
        has_memsw = fsio.exists(cg.file(cf.V1_MEMSW_LIMIT))
        old = self.limit(cg, "max")
        memsw = cf.parse_limit_v1(cg.read(cf.V1_MEMSW_LIMIT)) if has_memsw else None
        swap_share = None if memsw is None or old is None else memsw - old
        raising = nbytes is None or (old is not None and nbytes > old)
        new_memsw = "-1" if nbytes is None or memsw is None else str(nbytes + (swap_share or 0))
        if has_memsw and memsw is not None and raising:
            cg.write(cf.V1_MEMSW_LIMIT, new_memsw)
        cg.write(cf.V1_LIMIT, new)
        if has_memsw and memsw is not None and not raising:
            cg.write(cf.V1_MEMSW_LIMIT, new_memsw)

    def reclaim(self, cg: LinuxCgroup, nbytes: int) -> int:
        # No partial reclaim on v1 (memory.force_empty empties the memcg, and shrinking the
        # limit can OOM concurrent chargers). The read says CgroupGone for a removed one.
        self.usage(cg)
        return 0
