"""tmpfs_cleanup: free memory by deleting expendable tmpfs files before killing anyone.

Files on tmpfs (/dev/shm, /tmp on many systems) are memory that no process owns: the OOM
killer cannot free them. Given directories of expendable files (caches, scratch space),
this policy deletes the largest ones until at least ``target`` bytes were freed, and
declines if it freed nothing so the next handler can act.

Only regular files directly in the configured directories are candidates, listed without
following links (a directory reached through a symlink is skipped: another user may have
planted it). The live kernel then refuses whatever is not a closed tmpfs file
(``oomkit.kernel.linux.tmpfs``); such files are skipped.
"""

from __future__ import annotations

import os

from oomkit.errors import OomkitError
from oomkit.ops import OomContext, OomControl, OomOps


def _paths(paths: object) -> list[str]:
    # A string would be iterated character by character: "/dev/shm" would scan "/".
    if paths is None:
        return []
    if not isinstance(paths, list | tuple) or not all(
        isinstance(p, str) and p.startswith("/") and p.isprintable() for p in paths
    ):
        raise TypeError(f"paths is a list of absolute paths, got {paths!r:.60}")
    return [os.path.normpath(p) for p in paths]


class TmpfsCleanup(OomOps):
    name = "tmpfs_cleanup"

    def __init__(self, paths: list[str] | None = None, target: int = 64 << 20) -> None:
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise TypeError(f"target is a number of bytes (at least 1), got {target!r:.40}")
        self.paths = _paths(paths)
        self.target = target

    def candidates(self) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for base in self.paths:
            try:
                fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (NotADirectoryError, FileNotFoundError):
                # A single file named directly (on the simulator, files exist there only);
                # a symbolic link is never a candidate.
                if not os.path.islink(base):
                    found.append((0, base))
                continue
            except OSError:
                continue  # a link (ELOOP) or unreadable: never scanned
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if entry.is_file(follow_symlinks=False):
                            size = entry.stat(follow_symlinks=False).st_size
                            found.append((size, os.path.join(base, entry.name)))
            except OSError:
                pass
            finally:
                os.close(fd)
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
