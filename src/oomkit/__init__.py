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
from oomkit.kernel.sim import SimKernel
from oomkit.ops import OomContext, OomControl, OomOps, Psi, PsiOps
from oomkit.runtime import Runtime

if TYPE_CHECKING:
    from oomkit.kernel.linux import LinuxKernel

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
    # LinuxKernel is imported on first use: the simulator must not need /proc or /sys.
    if name == "LinuxKernel":
        from oomkit.kernel.linux import LinuxKernel

        return LinuxKernel
    raise AttributeError(f"module 'oomkit' has no attribute {name!r}")
