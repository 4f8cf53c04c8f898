"""Fault injection, issue 14 item 7 on the live kernel: a kill never reaches this process,
its watchdog, or a process outside the cgroup root, whatever Task a policy hands in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.kernel.base import Task
from oomkit.kernel.linux import LinuxKernel

from .conftest import LiveCgroups, MiB

pytestmark = pytest.mark.privileged


def _task(kernel: LinuxKernel, pid: int) -> Task:
    return Task(pid, "x", kernel.root_mem_cgroup(), 0, 1 << 20, 0, 0)


def test_kills_never_leave_the_root_nor_hit_oomkit(live_v1: LiveCgroups, tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=64 * MiB)
    inside = live.spawn(box, "anon", 1 * MiB)
    assert inside.wait_ready()
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kernel = LinuxKernel(str(live.root), state_file=str(tmp_path / "restore.json"))
    try:
        kernel.watch_oom(kernel.mem_cgroup("/box"))  # starts the watchdog
        watchdog = kernel.journal.watchdog_pid
        assert watchdog is not None
        refused = [_task(kernel, pid) for pid in (outside.pid, watchdog)]
        assert kernel.kill_tasks(refused, "", None) == []
        time.sleep(0.2)
        assert outside.poll() is None, "a process outside the cgroup root was killed"
        assert Path(f"/proc/{watchdog}").exists(), "the watchdog was killed"
        # our own process: refused too (were it not, this test would not go on)
        assert kernel.kill_tasks([_task(kernel, os.getpid())], "", None) == []
        # a process inside the root: killed as before
        killed = kernel.kill_tasks([_task(kernel, inside.pid)], "", None)
        assert [t.pid for t in killed] == [inside.pid] and inside.wait_dead()
    finally:
        kernel.close()
        outside.kill()
        outside.wait()
