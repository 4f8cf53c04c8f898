"""Fault injection, issue 14 item 7 on the live kernel: deleting a tmpfs file is progress
for a memcg OOM only if the OOMing memcg's usage went down. A file another memcg was
charged for frees nothing there (it was counted as resolving the OOM, and logged as if
it did); the OOM goes on to the next handler and the kernel killer."""

from __future__ import annotations

import subprocess
import sys
import time
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


def settle(cgroup: Path, quiet_s: float = 0.3, limit_s: float = 5.0) -> None:
    """Wait until the memcg's usage stops moving: what an exited writer held (its stack,
    page tables, slab) is uncharged after it is reaped, and a drop in the middle of
    remove_file would be counted as the file's (it failed so once, under load)."""
    usage = cgroup / "memory.usage_in_bytes"
    deadline = time.monotonic() + limit_s
    last = usage.read_text()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = usage.read_text()
        if now == last:
            return
        last = now


def test_a_file_charged_elsewhere_is_no_progress(live_v1: LiveCgroups, shm: Path,
                                                 tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=64 * MiB)
    other = live.mkdir("other", limit=64 * MiB)
    theirs = charged_file(other, shm / "theirs.bin", 8 * MiB)
    ours = charged_file(box, shm / "ours.bin", 8 * MiB)
    settle(box)  # the writer's own pages leave /box lazily after it exits
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
