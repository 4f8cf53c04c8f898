"""tmpfs_cleanup: free memory by deleting expendable tmpfs files before killing anyone.

Files on tmpfs (/dev/shm, /tmp on many systems) are memory that no process owns: the OOM
killer cannot free them. Given directories of expendable files (caches, scratch space),
this policy deletes the largest ones until at least ``target`` bytes were freed, and
declines if it freed nothing so the next handler can act.
"""

from __future__ import annotations

import os

from oomkit.errors import OomkitError
from oomkit.ops import OomContext, OomControl, OomOps


class TmpfsCleanup(OomOps):
    name = "tmpfs_cleanup"

    def __init__(self, paths: list[str] | None = None, target: int = 64 << 20) -> None:
        self.paths = list(paths or [])
        self.target = target

    def candidates(self) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for base in self.paths:
            if not os.path.isdir(base):
                found.append((0, base))  # a single file named directly
                continue
            for entry in os.scandir(base):
                if entry.is_file(follow_symlinks=False):
                    found.append((entry.stat(follow_symlinks=False).st_size, entry.path))
        return sorted(found, reverse=True)

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        freed = 0
        for _, path in self.candidates():
            if freed >= self.target:
                break
            try:
                freed += oc.remove_file(path)
            except OomkitError:
                continue
        return freed > 0
