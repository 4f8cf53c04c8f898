"""QA G14: a reload imports the new config's policies on a thread of its own, and the
running handlers go on serving meanwhile: an OOM during a slow import is handled at once
by the running config, not after the import (the loop used to wait for it, a v1 memcg
frozen under OOM until the watchdog's deadline)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from . import daemon
from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged

SLOW = '''
import time
time.sleep(4)  # a policy that loads a model, or a package on a slow NFS

from oomkit import OomOps

class Slow(OomOps):
    name = "slow"
'''


def records(tmp_path: Path, kind: str) -> list[dict[str, object]]:
    log = tmp_path / "log" / "events.jsonl"
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == kind]


def test_an_oom_during_a_slow_reload_is_handled_by_the_running_config(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    slow = daemon.policy_file(tmp_path, "slow", SLOW)
    cfg = daemon.config(tmp_path, live.root, '[[oom]]\npolicy = "largest_leaf"\n'
                        'cgroup = "/box"\n', daemon='budget = "500ms"\n')
    proc = daemon.start(cfg)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        cfg.write_text(cfg.read_text().replace('"largest_leaf"', f'"{slow}:Slow"'))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)  # the import sleeps 4 s from here on
        start = time.monotonic()
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(10), "the OOM was never resolved"
        elapsed = time.monotonic() - start
        print(f"\nOOM during the reload ended {elapsed:.2f} s after the hog started "
              "(the import had 3 s to go)")
        assert wait_for(lambda: records(tmp_path, "daemon")[-1]["action"] == "reload", 10), \
            "the reload never finished"
        assert proc.poll() is None
    finally:
        daemon.kill(proc)
    (oom,) = records(tmp_path, "oom")
    assert (oom["memcg"], oom["policy"], oom["resolved_by"]) == ("/box", "largest_leaf",
                                                                 "handler")
    assert elapsed < 1.5, f"the OOM waited for the import: {elapsed:.2f} s"
    assert [r["name"] for r in records(tmp_path, "attach")][-1] == "slow"  # then swapped
    assert not [r for r in records(tmp_path, "error") if r["where"] == "reload"]


BROKEN = '''
import time
time.sleep(2)
raise RuntimeError("no model file")
'''


def test_a_refused_reload_keeps_the_running_config_and_says_so(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    """The import fails after 2 s; a second SIGHUP during it loads once more after it
    (two refusals, not one, not a load on top of the other)."""
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    broken = daemon.policy_file(tmp_path, "broken", BROKEN)
    cfg = daemon.config(tmp_path, live.root, '[[oom]]\npolicy = "largest_leaf"\n'
                        'cgroup = "/box"\n', daemon='budget = "500ms"\n')
    status_file = tmp_path / "status.json"
    cfg.write_text(cfg.read_text().replace('status_file = ""', f'status_file = "{status_file}"'))
    proc = daemon.start(cfg)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        cfg.write_text(cfg.read_text().replace('"largest_leaf"', f'"{broken}:Nothing"'))
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(1.5), "the OOM waited for the import"

        def failed() -> int:
            try:
                return int(json.loads(status_file.read_text())["reloads"]["failed"])
            except (OSError, ValueError, KeyError):
                return 0

        assert wait_for(lambda: failed() == 2, 10), "two refusals expected"
        reloads = json.loads(status_file.read_text())["reloads"]
        assert proc.poll() is None
        hog = live.spawn(box, "anon", 64 * MiB)  # the running config still serves
        assert hog.wait_dead(5)
        assert wait_for(lambda: len(records(tmp_path, "oom")) == 2, 5)
    finally:
        daemon.kill(proc)
    print(f"\nstatus: reloads {reloads}")
    assert reloads["ok"] == 0 and "RuntimeError: no model file" in reloads["last_error"]
    errors = [r for r in records(tmp_path, "error") if r["where"] == "reload"]
    assert len(errors) == 2
    assert [(r["policy"], r["resolved_by"]) for r in records(tmp_path, "oom")] == [
        ("largest_leaf", "handler")] * 2
