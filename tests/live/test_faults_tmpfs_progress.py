"""Fault injection, issue 14 item 7 on the live kernel: deleting a tmpfs file is progress
for a memcg OOM only if the OOMing memcg's usage went down. A file another memcg was
charged for frees nothing there (it was counted as resolving the OOM, and logged as if
it did); the OOM goes on to the next handler and the kernel killer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from oomkit.kernel.base import Constraint
from oomkit.kernel.linux import LinuxKernel
from oomkit.ops import OomControl

from .conftest import LiveCgroups, MiB
from .test_tmpfs_confinement import shm as shm  # the fixture

pytestmark = pytest.mark.privileged

WRITE = ("import os, sys\n"
         "open(os.path.join(sys.argv[1], 'cgroup.procs'), 'w').write(str(os.getpid()))\n"
         "open(sys.argv[2], 'wb').write(b'x' * int(sys.argv[3]))\n")


def charged_file(cgroup: Path, path: Path, size: int) -> Path:
    """A tmpfs file whose pages are charged to ``cgroup`` (written by a process in it)."""
    subprocess.run([sys.executable, "-I", "-c", WRITE, str(cgroup), str(path), str(size)],
                   check=True)
    return path


def test_a_file_charged_elsewhere_is_no_progress(live_v1: LiveCgroups, shm: Path,
                                                 tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=64 * MiB)
    other = live.mkdir("other", limit=64 * MiB)
    theirs = charged_file(other, shm / "theirs.bin", 8 * MiB)
    ours = charged_file(box, shm / "ours.bin", 8 * MiB)
    kernel = LinuxKernel(str(live.root))
    try:
        memcg = kernel.mem_cgroup("/box")
        assert memcg is not None
        oc = OomControl(kernel, memcg, 0, Constraint.MEMCG, None, 1)
        got = oc.remove_file(str(theirs))
        assert not theirs.exists()
        assert (got, oc.memory_freed) == (0, False), \
            "a file charged to /other counted as freeing /box"
        got = oc.remove_file(str(ours))
        assert oc.memory_freed and got >= 7 * MiB, got
    finally:
        kernel.close()
