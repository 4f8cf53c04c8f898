"""Smoke tests of the VM guest itself: a real cgroup v2 memory controller.

These only make sense inside the QEMU guest booted by tests/vm/harness.py (the host's
memory controller is on cgroup v1). Run them by hand with
``python tests/vm/harness.py pytest tests/vm/guest -q``; the host suite runs them through
tests/vm/test_vm_guest.py.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _root_controllers() -> set[str]:
    try:
        return set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


pytestmark = [
    pytest.mark.skipif(
        "memory" not in _root_controllers(),
        reason="no cgroup v2 memory controller at /sys/fs/cgroup (host kernel keeps it on "
        "v1): run inside the VM guest, e.g. python tests/vm/harness.py pytest tests/vm/guest",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
]


def _events(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def _wait_unpopulated(cg: Path, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _events(cg / "cgroup.events").get("populated") == 0:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A fresh child of the root cgroup; killed and removed afterwards."""
    cg = CGROUP_ROOT / f"oomkit-smoke-{secrets.token_hex(4)}"
    cg.mkdir()
    try:
        yield cg
    finally:
        if (cg / "cgroup.kill").exists():
            (cg / "cgroup.kill").write_text("1")
        _wait_unpopulated(cg)
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _spawn_in(cg: Path, code: str) -> subprocess.Popen[bytes]:
    """Start python -c code with the child moved into cg before code runs."""
    join = f"open({str(cg / 'cgroup.procs')!r}, 'w').write(str(__import__('os').getpid()))\n"
    return subprocess.Popen([sys.executable, "-c", join + code])


def test_memory_controller_enabled_for_children() -> None:
    assert "memory" in _root_controllers()
    enabled = (CGROUP_ROOT / "cgroup.subtree_control").read_text().split()
    assert {"memory", "cpu", "io", "pids"} <= set(enabled)
    assert Path("/proc/pressure/memory").exists()


def test_child_cgroup_has_memory_files(cgroup: Path) -> None:
    for name in ("memory.max", "memory.high", "memory.events", "memory.pressure",
                 "memory.reclaim", "memory.current", "cgroup.kill"):  # fmt: skip
        assert (cgroup / name).exists(), name


def test_oom_kill_inside_child_cgroup(cgroup: Path) -> None:
    (cgroup / "memory.max").write_text(str(64 << 20))
    if (cgroup / "memory.swap.max").exists():
        (cgroup / "memory.swap.max").write_text("0")
    # Touches 8 MiB chunks up to 512 MiB: far over memory.max, well under the guest's RAM.
    proc = _spawn_in(cgroup, "chunks = [b'x' * (8 << 20) for _ in range(64)]")
    assert proc.wait(timeout=120) == -signal.SIGKILL
    events = _events(cgroup / "memory.events")
    assert events["oom_kill"] == 1, events
    assert events["oom"] >= 1, events
    assert _wait_unpopulated(cgroup)


def test_memory_pressure_trigger(cgroup: Path) -> None:
    fd = os.open(cgroup / "memory.pressure", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"some 150000 1000000\0")
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        for _, mask in poller.poll(0):
            assert not mask & select.POLLERR, "the trigger was not accepted"
        # Induce a stall: anonymous memory over memory.high cannot be reclaimed (no
        # swap), so the allocating task is throttled, which counts as memory pressure.
        (cgroup / "memory.high").write_text(str(16 << 20))
        proc = _spawn_in(cgroup, "chunks = [b'x' * (4 << 20) for _ in range(16)]\n"
                                 "__import__('time').sleep(60)")  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            fired = False
            while not fired and time.monotonic() < deadline:
                for _, mask in poller.poll(1000):
                    assert not mask & select.POLLERR
                    fired = fired or bool(mask & select.POLLPRI)
            assert fired, "no POLLPRI within 60 s although the cgroup was throttled"
        finally:
            proc.kill()
            proc.wait()
    finally:
        os.close(fd)


def test_cgroup_kill(cgroup: Path) -> None:
    procs = [
        subprocess.Popen(["sh", "-c", f"echo $$ > {cgroup / 'cgroup.procs'}; exec sleep 600"])
        for _ in range(3)
    ]
    deadline = time.monotonic() + 30
    while len((cgroup / "cgroup.procs").read_text().split()) < 3:
        assert time.monotonic() < deadline, "the sleepers never joined the cgroup"
        time.sleep(0.05)
    (cgroup / "cgroup.kill").write_text("1")
    assert [p.wait(timeout=30) for p in procs] == [-signal.SIGKILL] * 3
    assert _wait_unpopulated(cgroup)
