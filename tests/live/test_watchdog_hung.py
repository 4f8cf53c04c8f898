"""The watchdog's hung-runtime safety net on real v1 memcgs.

A runtime that is alive but does nothing (SIGSTOP) must not leave a memcg under OOM with
the kernel killer disabled: after ``hung_after`` the watchdog writes ``oom_kill_disable 0``
and the kernel kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.kernel.linux.watchdog import HUNG_AFTER_ENV

from .conftest import LiveCgroups, MiB, wait_for

pytestmark = pytest.mark.privileged

HUNG_AFTER = 2.0

RUNTIME_SCRIPT = """
import sys, threading, time
from oomkit.kernel.linux import LinuxKernel
from oomkit.live import install_signal_handlers, serve
from oomkit.ops import OomOps
from oomkit.runtime import Runtime

class Nothing(OomOps):
    name = "nothing"

kernel = LinuxKernel(sys.argv[1], state_file=sys.argv[2])
runtime = Runtime(kernel)
# /first starts the watchdog; /box comes a second later, so the watchdog learns of it from
# an updated journal (inotify), not from its first read.
runtime.attach_oom(Nothing(), "/first")
time.sleep(1.0)
runtime.attach_oom(Nothing(), "/box")
stop = threading.Event()
install_signal_handlers(stop)
serve(kernel, runtime, stop, on_ready=lambda: print("ready", flush=True))
"""


def oom_control(d: Path) -> dict[str, int]:
    lines = (d / "memory.oom_control").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines)}


def running(pid: int) -> bool:
    """Alive and not a zombie (the watchdog is the runtime's child, reaped by whoever)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def watched_paths(state: Path) -> set[str]:
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return set()
    return {s["path"] for s in data.get("settings", [])}


def test_hung_runtime_the_watchdog_hands_the_oom_to_the_kernel(
    live_v1: LiveCgroups, tmp_path: Path
) -> None:
    live = live_v1
    box = live.mkdir("box", limit=64 * MiB)
    first = live.mkdir("first", limit=64 * MiB)
    state = tmp_path / "restore.json"
    stderr_path = tmp_path / "runtime.stderr"
    env = dict(os.environ, **{HUNG_AFTER_ENV: str(HUNG_AFTER)})
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNTIME_SCRIPT, str(live.root), str(state)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    watchdog_pid = 0
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        assert oom_control(box)["oom_kill_disable"] == 1
        watchdog_pid = int(json.loads(state.read_text())["watchdog_pid"])

        # A watched memcg that vanishes: the runtime forgets it, the watchdog's eventfd
        # is signalled by the removal; it drops the memcg and carries on.
        first_ctl = str(first / "memory.oom_control")
        assert first_ctl in watched_paths(state)
        first.rmdir()
        assert wait_for(lambda: first_ctl not in watched_paths(state), 3)
        time.sleep(0.2)
        assert running(watchdog_pid), "the watchdog must survive a removed memcg"

        # The runtime hangs: alive, doing nothing.
        os.kill(proc.pid, signal.SIGSTOP)
        kills_before = oom_control(box)["oom_kill"]
        start = time.monotonic()
        hog = live.spawn(box, "anon", 100 * MiB)
        assert hog.wait_dead(HUNG_AFTER + 3), "the watchdog should have let the kernel kill"
        elapsed = time.monotonic() - start
        assert hog.proc.returncode == -signal.SIGKILL
        # The runtime is in the stopped state: the watchdog sees it (/proc/PID/stat) and
        # hands over at once, not after hung_after (only it can: the runtime is stopped).
        assert elapsed < HUNG_AFTER, f"killed after {elapsed:.2f} s: the deadline, not at once"
        assert oom_control(box)["oom_kill"] > kills_before
        assert oom_control(box)["under_oom"] == 0
        # The journal entry stays: the runtime owns it.
        assert str(box / "memory.oom_control") in watched_paths(state)
        print(f"\nhog killed {elapsed:.2f} s after start (hung_after {HUNG_AFTER} s)")

        # The runtime wakes up: the OOM's eventfd tells it; it arms the memcg again (the
        # kernel killer kept it, and every later OOM there, while status still said
        # "watched": QA G13).
        os.kill(proc.pid, signal.SIGCONT)
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 3), \
            "the runtime must re-arm the memcg the watchdog handed over"
        # Told to stop: everything restored, nothing left.
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
        assert oom_control(box)["oom_kill_disable"] == 0
        assert not state.exists()
        assert wait_for(lambda: not running(watchdog_pid), 5), "watchdog exits"
        log = stderr_path.read_text()
        assert "oom_kill_disable 0, the kernel OOM killer acts" in log, log
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        # The runtime is gone either way: its watchdog restores and exits.
        if watchdog_pid:
            wait_for(lambda: not running(watchdog_pid), 5)
