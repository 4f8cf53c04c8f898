"""The machine's memory as /proc/meminfo gives it: MemTotal, MemAvailable, swap.

The Kernel protocol has no meminfo accessor yet, so this reads what each backend offers:
the live backends' procfs, the simulator's machine (available = RAM minus what is
charged, plus the unmapped page cache reclaim can drop, as MemAvailable estimates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oomkit.kernel.base import PolicyKernel


@dataclass(frozen=True, slots=True)
class MemInfo:
    """Bytes."""

    total: int
    available: int
    swap_total: int
    swap_free: int
    free: int  # MemFree: pages nobody uses, not even the page cache

    @property
    def available_percent(self) -> float:
        return 100.0 * self.available / self.total if self.total else 100.0

    @property
    def swap_free_percent(self) -> float:
        """0 without swap, as earlyoom counts it (only the memory threshold then matters)."""
        return 100.0 * self.swap_free / self.swap_total if self.swap_total else 0.0

    @property
    def swap_used_percent(self) -> float:
        return 100.0 - self.swap_free_percent if self.swap_total else 0.0


def meminfo(kernel: PolicyKernel) -> MemInfo | None:
    """The machine's memory now, or None when the backend cannot tell."""
    real: Any = getattr(kernel, "real", kernel)  # a dry run wraps the real kernel
    procfs = getattr(real, "procfs", None)
    if procfs is not None:
        info = procfs.meminfo()  # kB values already converted to bytes by the parser
        return MemInfo(info.get("MemTotal", 0), info.get("MemAvailable", 0),
                       info.get("SwapTotal", 0), info.get("SwapFree", 0),
                       info.get("MemFree", 0))
    machine = getattr(real, "machine", None)
    if machine is not None:
        root = real.root_mem_cgroup()
        cache = max(0, root.page_state("file") - root.page_state("shmem")
                    - root.page_state("file_mapped"))
        free = max(0, machine.memory - root.usage())
        swap_used = int(getattr(real, "swap_used", 0))
        return MemInfo(machine.memory, min(machine.memory, free + cache), machine.swap,
                       max(0, machine.swap - swap_used), free)
    return None
