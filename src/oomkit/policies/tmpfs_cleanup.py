"""tmpfs_cleanup: free memory by deleting expendable tmpfs files before killing anyone.

Files on tmpfs (/dev/shm, /tmp on many systems) are memory that no process owns: the OOM
killer cannot free them. Given directories of expendable files (caches, scratch space;
``paths``, by default ``["/dev/shm"]`` as the recommended config; ``[]`` scans none),
this policy deletes the largest ones until at least ``target`` bytes were freed, and
declines if it freed nothing so the next handler can act. When the candidates together
hold less than ``min_free`` (4M, the recommended ``min_victim``) it deletes nothing and
declines: a 64K state, pid or lock file buys the OOM 10 ms and is lost for good (QA G15),
as nothing is killed for 28K. /dev/shm is the default because
a file there is POSIX shared memory (shm_open) that outlives its program: one nobody
holds open any more is memory only a delete gives back.

Under the shipped unit (packaging/oomkit.service: ``PrivateTmp=yes``, ``ProtectHome=yes``)
the daemon's /tmp is a private, empty one and /run/user/UID is hidden: such paths clean
nothing there unless a drop-in sets ``PrivateTmp=no`` / ``ProtectHome=read-only`` or
``BindPaths=`` them (QA Q15). /dev/shm is the machine's.

Only regular tmpfs files directly in the configured directories are candidates, as the
kernel lists them (``Kernel.tmpfs_files``: never through a link another user may have
planted; on the simulator, its own files). The kernel then refuses whatever is not a
closed tmpfs file (``oomkit.kernel.linux.tmpfs``, EBUSY for one still open: its memory
would come back only at the last close); such files are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from oomkit.errors import OomkitError
from oomkit.kernel.base import PolicyKernel
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.policy_args import ArgError, Size

#: Scanned when no ``paths`` are given: what the recommended config lists, and where a
#: simulated scenario's tmpfs files are (examples/tmpfs.toml). Without it, the policy
#: given on the command line (``--oom-policy tmpfs_cleanup``, which takes no arguments)
#: could never free anything.
DEFAULT_PATHS: tuple[str, ...] = ("/dev/shm",)


def _paths(paths: object) -> list[str]:
    # A string would be iterated character by character: "/dev/shm" would scan "/".
    if not isinstance(paths, list | tuple) or not all(
        isinstance(p, str) and p.startswith("/") and p.isprintable() for p in paths
    ):
        raise TypeError(f"paths is a list of absolute paths, got {paths!r:.60}")
    return [os.path.normpath(p) for p in paths]


class TmpfsCleanup(OomOps):
    name = "tmpfs_cleanup"

    def __init__(self, paths: Sequence[str] = DEFAULT_PATHS, target: Size = 64 << 20,
                 min_free: Size = 4 << 20) -> None:
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise ArgError("target", f"a size of at least 1 byte, got {target!r:.40}")
        self.paths = _paths(paths)
        self.target = target
        self.min_free = min_free

    def candidates(self, kernel: PolicyKernel) -> list[tuple[int, str]]:
        """(bytes, path) of the tmpfs files in the configured directories, largest first,
        as the kernel lists them (``tmpfs_files``: no links followed, files still open
        left out where it can tell)."""
        found = {path: size for base in self.paths for path, size in kernel.tmpfs_files(base)}
        return sorted(((size, path) for path, size in found.items()), reverse=True)

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        freed = 0
        found = self.candidates(oc.kernel)
        if sum(size for size, _ in found) < self.min_free:
            return False  # too little to end an OOM: the files are worth more (G15)
        for _, path in found:
            if freed >= self.target:
                break
            try:
                freed += oc.remove_file(path)
            except OomkitError:
                continue
        return freed > 0
