"""A start right after a crash: the dead run's watchdog still holds the journal's lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.kernel.linux import journal

HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def hold(lock: Path, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    return p


def test_a_dead_runs_lock_is_waited_for(tmp_path: Path) -> None:
    state = tmp_path / "restore.json"
    lock = Path(f"{state}.lock")
    lock.write_text(f"{dead_pid()}\n")
    lock.chmod(0o600)
    holder = hold(lock, 0.5)
    try:
        start = time.monotonic()
        fd, created = journal._take_lock(str(state))
        assert time.monotonic() - start >= 0.2  # it waited for the holder to go
        assert not created
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()


def test_a_live_runs_lock_is_refused_at_once(tmp_path: Path) -> None:
    state = tmp_path / "restore.json"
    lock = Path(f"{state}.lock")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    lock.write_text(f"{sleeper.pid}\n")
    lock.chmod(0o600)
    holder = hold(lock, 30)
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="belongs to a running oomkit"):
            journal._take_lock(str(state))
        assert time.monotonic() - start < 2
    finally:
        for p in (holder, sleeper):
            p.kill()
            p.wait()
