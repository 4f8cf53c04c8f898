"""LinuxCgroup: one memory cgroup directory behind the SPEC ``Cgroup`` accessors.

Reads go through :mod:`.fsio` (OSError becomes oomkit's errors there); what differs between
cgroup v1 and v2 is asked of the kernel's :class:`~oomkit.kernel.linux.layout.Layout`.
"""

from __future__ import annotations

import errno
import os
import posixpath
from typing import TYPE_CHECKING, final

from oomkit.errors import KernelError, TaskGone
from oomkit.kernel.base import Cgroup, Pressure, PressureLine, Resource, Task
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import fsio
from oomkit.kernel.psi_math import parse_pressure

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


@final
class LinuxCgroup(Cgroup):
    """A memory cgroup directory. ``path`` is relative to the kernel's cgroup root."""

    __slots__ = ("dir",)
    kernel: LinuxKernel

    def __init__(self, kernel: LinuxKernel, cgroup_id: int, path: str, directory: str) -> None:
        super().__init__(kernel, cgroup_id, path)
        self.dir = directory

    # -- files -------------------------------------------------------------------------
    def file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> str:
        return fsio.read_text(self.file(name))

    def write(self, name: str, value: str) -> None:
        fsio.write_text(self.file(name), value)

    def procs(self) -> list[int]:
        return cf.parse_procs(self.read(cf.CGROUP_PROCS))

    # -- the tree ------------------------------------------------------------------------
    @property
    def parent(self) -> LinuxCgroup | None:
        if self.path == "/":
            return None
        return self.kernel.cgroup_at(posixpath.dirname(self.path))

    def children(self) -> list[Cgroup]:
        base = self.path.rstrip("/")
        return [
            LinuxCgroup(self.kernel, ino, f"{base}/{name}", os.path.join(self.dir, name))
            for name, ino in fsio.subdirs(self.dir)
        ]

    # -- statistics ----------------------------------------------------------------------
    def usage(self) -> int:
        return self.kernel.layout.usage(self)

    def stat(self) -> dict[str, int]:
        """memory.stat in v2 names, hierarchical."""
        return self.kernel.layout.stat(self)

    def _stat_item(self, item: str) -> int:
        stat = self.stat()
        if item not in stat:
            raise KernelError(
                f"{self.path}: memory.stat has no {item!r} (cgroup v{self.kernel.version})",
                errno.EINVAL,
            )
        return stat[item]

    def page_state(self, item: str) -> int:
        return self._stat_item(item)

    def vm_events(self, item: str) -> int:
        return self._stat_item(item)

    def memory_events(self, item: str) -> int:
        oom_count = self.kernel.oom_watch.oom_counts.get(self.id, 0)
        return self.kernel.layout.memory_events(self, item, oom_count)

    def pressure(self, resource: Resource = Resource.MEMORY) -> Pressure:
        if self.path == "/":
            path = self.kernel.procfs.path("pressure", resource.value)
        else:
            path = self.kernel.layout.pressure_path(self, resource)
        return parse_pressure_file(fsio.read_text(path))

    def tasks(self) -> list[Task]:
        out: list[Task] = []
        proc = self.kernel.procfs
        for pid in self.procs():
            try:
                info = proc.task(pid)
            except TaskGone:
                continue
            out.append(
                Task(
                    pid=info.pid,
                    comm=info.comm,
                    cgroup=self,
                    oom_score_adj=info.oom_score_adj,
                    rss=info.rss,
                    swapents=info.swapents,
                    pgtables_bytes=info.pgtables_bytes,
                    start_time=info.start_time,
                    kthread=info.kthread,
                )
            )
        return out

    # -- limits --------------------------------------------------------------------------
    @property
    def memory_max(self) -> int | None:
        return self.kernel.layout.limit(self, "max")

    @property
    def memory_high(self) -> int | None:
        return self.kernel.layout.limit(self, "high")

    @property
    def memory_low(self) -> int | None:
        return self.kernel.layout.limit(self, "low")

    @property
    def memory_min(self) -> int | None:
        return self.kernel.layout.limit(self, "min")

    @property
    def swap_max(self) -> int | None:
        return self.kernel.layout.swap_max(self)

    @property
    def oom_group(self) -> bool:
        return self.kernel.layout.oom_group(self)


def parse_pressure_file(text: str) -> Pressure:
    """A PSI file's text as a Pressure (no "full" line, as in /proc/pressure/cpu on old
    kernels: zeros). KernelError(EINVAL) if it does not parse."""
    try:
        parsed = parse_pressure(text)
    except ValueError as exc:
        raise KernelError(f"bad pressure file: {exc}", errno.EINVAL) from None
    some = parsed.some
    full = parsed.full
    return Pressure(
        PressureLine(some.avg10, some.avg60, some.avg300, some.total),
        PressureLine(0.0, 0.0, 0.0, 0)
        if full is None
        else PressureLine(full.avg10, full.avg60, full.avg300, full.total),
    )
