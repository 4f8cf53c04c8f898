"""Fault injection, issue 14 item 2: a memcg the watchdog was never told about.

On v1 a memcg made below an armed one inherits oom_kill_disable 1. Made while the runtime
is stopped (SIGSTOP), no journal names it: the watchdog must find it itself (inotify on
the journaled memcgs), hand its OOM to the kernel after hung_after, and write it back to
0 when the runtime is gone.
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

from . import daemon as d
from .conftest import LiveCgroups, MiB, set_limit, wait_for
from .test_watchdog_hung import oom_control, running

pytestmark = pytest.mark.privileged

HUNG_AFTER = 2.0

RUNTIME = """
import sys, threading
from oomkit.kernel.linux import LinuxKernel
from oomkit.live import install_signal_handlers, serve
from oomkit.ops import OomOps
from oomkit.runtime import Runtime

class Nothing(OomOps):
    name = "nothing"

kernel = LinuxKernel(sys.argv[1], state_file=sys.argv[2])
runtime = Runtime(kernel)
runtime.attach_oom(Nothing(), "/box")
stop = threading.Event()
install_signal_handlers(stop)
serve(kernel, runtime, stop, on_ready=lambda: print("ready", flush=True))
"""


def test_memcgs_made_while_the_runtime_is_stopped_are_followed(live_v1: LiveCgroups,
                                                               tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=256 * MiB)
    state = tmp_path / "restore.json"
    env = dict(os.environ, **{HUNG_AFTER_ENV: str(HUNG_AFTER)})
    err = tmp_path / "runtime.stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", RUNTIME, str(live.root), str(state)],
                                stdout=subprocess.PIPE, stderr=stderr, env=env)
    watchdog_pid = 0
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        watchdog_pid = int(json.loads(state.read_text())["watchdog_pid"])
        os.kill(proc.pid, signal.SIGSTOP)  # the runtime cannot journal anything now
        new = live.mkdir("box/new", limit=32 * MiB)
        quiet = live.mkdir("box/quiet")
        assert oom_control(new)["oom_kill_disable"] == 1  # inherited from /box
        start = time.monotonic()
        hog = live.spawn(new, "anon", 64 * MiB)
        assert hog.wait_dead(HUNG_AFTER + 5), (
            f"the OOM of the unjournaled memcg never ended: {oom_control(new)} "
            f"{err.read_text()}")
        elapsed = time.monotonic() - start
        assert oom_control(new)["oom_kill"] >= 1
        print(f"\nOOM in box/new (never journaled) ended after {elapsed:.2f} s")
        # The runtime dies without ever waking: the watchdog restores the journal and
        # the memcgs it found itself.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_for(lambda: not running(watchdog_pid), 5)
        for d in (box, new, quiet):
            assert oom_control(d)["oom_kill_disable"] == 0, d
        assert not state.exists()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        if watchdog_pid:
            wait_for(lambda: not running(watchdog_pid), 5)
        with contextlib.suppress(OSError):
            set_limit(box, 512 * MiB)


def test_an_oom_the_watchdog_handed_over_while_the_daemon_was_stopped_is_logged_once(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    """Found by qa4: after SIGCONT the daemon saw the kernel's kill in /dev/kmsg and logged
    the OOM a second time (resolved_by kernel), after the watchdog's own record."""
    live = live_v1
    box = live.mkdir("box", limit=256 * MiB)
    os.chmod(tmp_path, 0o755)
    log = tmp_path / "log" / "events.jsonl"
    config = tmp_path / "oomkit.toml"
    config.write_text(
        f'[daemon]\ncgroup_root = "{live.root}"\nstate_file = "{tmp_path}/run/restore.json"\n'
        f'event_log = "{log}"\nstatus_file = ""\nmlock = false\n[metrics]\nlisten = ""\n'
        '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n')
    env = dict(os.environ, **{HUNG_AFTER_ENV: str(HUNG_AFTER)})
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), "--quiet"], stderr=subprocess.DEVNULL, env=env)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        os.kill(proc.pid, signal.SIGSTOP)
        new = live.mkdir("box/new", limit=32 * MiB)
        hog = live.spawn(new, "anon", 64 * MiB)
        assert hog.wait_dead(HUNG_AFTER + 5), "the watchdog did not hand the OOM over"
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(2)  # the daemon reads /dev/kmsg and its memcg counters now
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            set_limit(box, 512 * MiB)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    ooms = [(r["memcg"], r["policy"], r["resolved_by"]) for r in records
            if r.get("event") == "oom"]
    assert ooms == [("/box/new", "watchdog", "kernel")]
    (oom,) = [r for r in records if r.get("event") == "oom"]
    assert [(v["pid"], v["cgroup"]) for v in oom["victims"]] == [(hog.pid, "/box/new")]


def test_a_stopped_daemon_is_seen_by_its_heartbeat(live_v1: LiveCgroups,
                                                   tmp_path: Path) -> None:
    """No heartbeat from a stopped (or GIL-wedged) daemon for hung_after plus a beat: an
    OOM that comes then goes to the kernel killer at once, not after the deadline."""
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    proc = d.start(d.config(tmp_path, live.root,
                            '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'),
                   hung_after=HUNG_AFTER)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        time.sleep(1.5)  # a beat or two
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(HUNG_AFTER + 1.0 + 0.5)  # hung_after plus one beat interval (1 s)
        start = time.monotonic()
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(HUNG_AFTER + 5), "the watchdog did not hand the OOM over"
        elapsed = time.monotonic() - start
        print(f"\nOOM of a stopped daemon's memcg ended after {elapsed:.2f} s "
              f"(deadline {HUNG_AFTER:g} s)")
        assert elapsed < HUNG_AFTER / 2, "the watchdog waited for its deadline"
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(1.0)
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        d.kill(proc)
    assert oom_control(box)["oom_kill_disable"] == 0
    (oom,) = d.ooms(tmp_path)
    assert (oom["memcg"], oom["policy"]) == ("/box", "watchdog")
    assert "the runtime is stopped" in oom["note"] or "no heartbeat" in oom["note"]


def test_an_idle_daemon_beats_seldom_and_is_not_taken_for_stuck(live_v1: LiveCgroups,
                                                               tmp_path: Path) -> None:
    """A quiet daemon announces its next heartbeat in IDLE_BEAT s (one wake-up of daemon
    and watchdog in ten seconds): idle for longer than hung_after plus the short interval,
    it is not stuck, and an OOM that comes then is its handler's, not the watchdog's (the
    OOM beats at once, before the handler runs)."""
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    proc = d.start(d.config(tmp_path, live.root,
                            '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'),
                   hung_after=HUNG_AFTER)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        time.sleep(HUNG_AFTER + 1.0 + 2.5)  # past the staleness of a one-second beat
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(HUNG_AFTER + 5)
        assert wait_for(lambda: len(d.ooms(tmp_path)) == 1, 10)
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        d.kill(proc)
    (oom,) = d.ooms(tmp_path)
    assert (oom["memcg"], oom["resolved_by"]) == ("/box", "handler"), oom
