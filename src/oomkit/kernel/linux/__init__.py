"""The live backend: the real kernel (cgroup v2 or v1) behind the ``Kernel`` interface.

:class:`LinuxKernel` (in :mod:`.kernel`) is the face; docs/live.md maps each mechanism to
its module here. The names below load on first use, so that the watchdog
(``python -m oomkit.kernel.linux.watchdog``) and the parsers import nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oomkit.kernel.linux.cgroup import LinuxCgroup
    from oomkit.kernel.linux.kernel import LinuxKernel
    from oomkit.kernel.linux.psi import LivePsiTrigger

__all__ = ["LinuxCgroup", "LinuxKernel", "LivePsiTrigger"]

_WHERE = {"LinuxCgroup": "cgroup", "LinuxKernel": "kernel", "LivePsiTrigger": "psi"}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
