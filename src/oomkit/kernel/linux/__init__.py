"""The live backend: the real kernel (cgroup v2 or v1) behind the ``Kernel`` interface.

:class:`LinuxKernel` (in :mod:`.kernel`) is the face; docs/live.md maps each mechanism to
its module here.
"""

from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.kernel import LinuxKernel
from oomkit.kernel.linux.psi import LivePsiTrigger

__all__ = ["LinuxCgroup", "LinuxKernel", "LivePsiTrigger"]
