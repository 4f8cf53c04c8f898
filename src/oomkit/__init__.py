"""oomkit: programmable out-of-memory handling for Linux.

Policies (``OomOps``, ``PsiOps``) run before the kernel's OOM killer, on the live kernel
(``LinuxKernel``, cgroup v2 and v1) or on the deterministic simulator (``SimKernel``).
The names here are the contract of SPEC.md; everything else is internal.
"""

from typing import TYPE_CHECKING

from oomkit.errors import (
    AttachError,
    CgroupGone,
    ConfigError,
    HandlerExpired,
    KernelError,
    OomkitError,
    TaskGone,
    Unkillable,
)
from oomkit.kernel.base import (
    Cgroup,
    Constraint,
    Kernel,
    OomFlags,
    Pressure,
    PressureLine,
    PsiTrigger,
    Resource,
    Task,
)
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps
from oomkit.runtime import Runtime

if TYPE_CHECKING:
    from oomkit.kernel.linux import LinuxKernel
    from oomkit.kernel.sim import SimKernel

__all__ = [
    "AttachError",
    "Cgroup",
    "CgroupGone",
    "ConfigError",
    "Constraint",
    "HandlerExpired",
    "Kernel",
    "KernelError",
    "LinuxKernel",
    "OomContext",
    "OomControl",
    "OomFlags",
    "OomOps",
    "OomkitError",
    "Pressure",
    "PressureLine",
    "Psi",
    "PsiOps",
    "PsiTrigger",
    "Resource",
    "Runtime",
    "SimKernel",
    "Task",
    "TaskGone",
    "Unkillable",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The backends are imported on first use: the simulator must not need /proc or /sys,
    # and the live daemon (memory locked) must not carry the simulator.
    if name == "LinuxKernel":
        from oomkit.kernel.linux import LinuxKernel

        return LinuxKernel
    if name == "SimKernel":
        from oomkit.kernel.sim import SimKernel

        return SimKernel
    raise AttributeError(f"module 'oomkit' has no attribute {name!r}")
