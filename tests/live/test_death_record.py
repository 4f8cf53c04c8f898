"""QA G7: after SIGKILL of the daemon its watchdog restores the kernel settings and says
so in the event log (one ``daemon`` record, ``action: "died"``); a daemon that stops
cleanly gets no such record."""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

import pytest

from . import daemon
from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged


def records(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "log" / "events.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_watchdog_records_a_daemon_that_died(live_v1: LiveCgroups, tmp_path: Path,
                                                 sig: signal.Signals) -> None:
    box = live_v1.mkdir("box", limit=32 * MiB)
    cfg = daemon.config(tmp_path, live_v1.root,
                        '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n')
    proc = daemon.start(cfg)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        proc.send_signal(sig)
        proc.wait(10)
    finally:
        daemon.kill(proc)
    assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 0, 5), "not restored"
    assert wait_for(lambda: not (tmp_path / "run" / "restore.json").exists(), 5)
    actions = [r.get("action") for r in records(tmp_path) if r["event"] == "daemon"]
    if sig == signal.SIGKILL:
        assert wait_for(lambda: records(tmp_path)[-1].get("action") == "died", 5), actions
        last = records(tmp_path)[-1]
        print(f"\n{last['action']}: {last['detail']}")
        detail = str(last["detail"])
        assert f"pid {proc.pid} ended without stopping" in detail
        assert "the watchdog restored 1 kernel setting;" in detail
    else:  # stopped: the watchdog finished before the daemon exited
        assert actions == ["start", "stop"]



def lock_free(path: Path) -> bool:
    """Nobody holds the flock of the journal's lock file (or there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock taken here
    return True


def test_the_next_start_records_a_run_that_died_with_its_watchdog(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    """A journal left behind (its run and its watchdog both gone): the journal of a live
    run, copied, put back after that run was SIGKILLed and its watchdog had finished."""
    box = live_v1.mkdir("box", limit=32 * MiB)
    cfg = daemon.config(tmp_path, live_v1.root,
                        '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n')
    journal = tmp_path / "run" / "restore.json"
    proc = daemon.start(cfg)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        # armed before its start record: wait for that too
        assert wait_for(lambda: any(r.get("action") == "start" for r in records(tmp_path)), 15)
        left = journal.read_bytes()
        proc.kill()
        proc.wait(10)
    finally:
        daemon.kill(proc)
    assert wait_for(lambda: records(tmp_path)[-1].get("action") == "died", 10)
    # The watchdog writes "died" before it exits and lets go of the journal's lock.
    assert wait_for(lambda: lock_free(Path(f"{journal}.lock")), 10), "the watchdog lingers"
    journal.write_bytes(left)
    (box / "memory.oom_control").write_text("1")  # as the dead run left it
    with (tmp_path / "second.stderr").open("wb") as err:
        proc = daemon.start(cfg, stderr=err)
    try:
        assert wait_for(lambda: any(r.get("action") == "restored" for r in records(tmp_path))
                        and [r.get("action") for r in records(tmp_path)].count("start") == 2,
                        30), (tmp_path / "second.stderr").read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    finally:
        daemon.kill(proc)
    actions = [r.get("action") for r in records(tmp_path) if r["event"] == "daemon"]
    assert actions == ["start", "died", "start", "restored", "stop"], actions
    (restored,) = [r for r in records(tmp_path) if r.get("action") == "restored"]
    print(f"\n{restored['detail']}")
    assert "the previous oomkit ended without stopping, its watchdog too: 1 of 1 kernel " \
           "settings restored" in str(restored["detail"])
