"""Fault injection, issue 14 item 3: a handler that never lets the daemon run again (it
holds the GIL in native code) is bounded by its budget: the watchdog, another process,
hands the OOM to the kernel killer after the budget plus a margin (not after 15 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.daemon.backend import WATCHDOG_MIN_S

from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged

POLICY = '''
import re
from oomkit import OomOps

class HoldsTheGil(OomOps):
    name = "holds_the_gil"

    def handle_out_of_memory(self, ctx, oc):
        # Catastrophic backtracking: the regex engine never releases the GIL.
        re.match(r"(a+)+$", "a" * 64 + "b")
        return False
'''


def ooms(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "oom"]


def start_daemon(live: LiveCgroups, tmp_path: Path, box: Path) -> subprocess.Popen[bytes]:
    os.chmod(tmp_path, 0o755)
    policy = tmp_path / "gil.py"
    policy.write_text(POLICY)
    os.chmod(policy, 0o644)
    config = tmp_path / "oomkit.toml"
    config.write_text(
        f'[daemon]\ncgroup_root = "{live.root}"\nstate_file = "{tmp_path}/run/restore.json"\n'
        f'event_log = "{tmp_path}/log/events.jsonl"\nstatus_file = ""\nbudget = "500ms"\n'
        f'mlock = false\n[metrics]\nlisten = ""\n'
        f'[[oom]]\npolicy = "{policy}:HoldsTheGil"\ncgroup = "/box"\n')
    env = {k: v for k, v in os.environ.items() if k != "OOMKIT_WATCHDOG_HUNG_AFTER"}
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config", str(config),
                             "--quiet"], stderr=subprocess.PIPE, env=env)
    armed = wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15)
    if not armed:
        proc.kill()
        assert proc.stderr is not None
        pytest.fail(f"not armed: {proc.stderr.read().decode()[-2000:]}")
    return proc


def test_a_handler_holding_the_gil_is_bounded_by_its_budget(live_v1: LiveCgroups,
                                                            tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    proc = start_daemon(live, tmp_path, box)
    try:
        start = time.monotonic()
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(WATCHDOG_MIN_S + 4), "the OOM waited for more than budget+margin"
        elapsed = time.monotonic() - start
        print(f"\nOOM ended {elapsed:.2f} s after the hog started (budget 0.5 s, watchdog "
              f"after {WATCHDOG_MIN_S:g} s)")
        assert elapsed < WATCHDOG_MIN_S + 2
    finally:
        proc.kill()  # stuck in the regex: only SIGKILL ends it
        proc.wait()
    assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 0, 5), "restored"
    assert wait_for(lambda: not (tmp_path / "run" / "restore.json").exists(), 5)
    if proc.stderr is not None:
        proc.stderr.close()
    # The daemon never wrote it (stuck): the watchdog did, once (item 8).
    (oom,) = ooms(tmp_path / "log" / "events.jsonl")
    assert (oom["memcg"], oom["policy"], oom["resolved_by"]) == ("/box", "watchdog", "kernel")
    # The kernel's victim, from /dev/kmsg (issue 14 item 8: the record named nobody).
    assert [(v["pid"], v["cgroup"]) for v in oom["victims"]] == [(hog.pid, "/box")]
    assert oom["victims"][0]["rss"] > 16 * MiB


def test_an_oom_the_daemon_did_not_live_to_record_is_recorded(live_v1: LiveCgroups,
                                                              tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    proc = start_daemon(live, tmp_path, box)
    try:
        hog = live.spawn(box, "anon", 64 * MiB)
        assert wait_for(lambda: oom_control(box)["under_oom"] == 1, 5)
        time.sleep(0.5)  # the handler is stuck now
        proc.kill()  # SIGKILL in the middle of the OOM
        proc.wait()
        assert hog.wait_dead(5), "the watchdog gives the OOM to the kernel when we die"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert wait_for(lambda: not (tmp_path / "run" / "restore.json").exists(), 5)
    (oom,) = ooms(tmp_path / "log" / "events.jsonl")
    assert (oom["memcg"], oom["policy"]) == ("/box", "watchdog")
    assert "the runtime was gone" in str(oom["note"])
    assert [v["pid"] for v in oom["victims"]] == [hog.pid]


def test_sigterm_ends_a_daemon_whose_handler_holds_the_gil(live_v1: LiveCgroups,
                                                          tmp_path: Path) -> None:
    """Found by qa4: the stuck handler kept the main thread from running Python's SIGTERM
    handler, and the daemon ignored SIGTERM until SIGKILL. During a handler call SIGTERM
    takes the default action; the watchdog restores and records."""
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    proc = start_daemon(live, tmp_path, box)
    try:
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(WATCHDOG_MIN_S + 4), "the OOM waited for more than budget+margin"
        proc.terminate()
        try:
            rc = proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not end the daemon within 5 s")
        assert rc == -15
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 0, 5), "restored"
    assert wait_for(lambda: not (tmp_path / "run" / "restore.json").exists(), 5)
    (oom,) = ooms(tmp_path / "log" / "events.jsonl")
    assert (oom["memcg"], oom["policy"], oom["resolved_by"]) == ("/box", "watchdog", "kernel")
