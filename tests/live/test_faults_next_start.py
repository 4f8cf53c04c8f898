"""Fault injection, issue 14 item 8 on the live kernel: the daemon and its watchdog both
die (SIGKILL) during an OOM, the killer still disabled by us. The next start restores the
journal, which hands the OOM to the kernel killer, and records that OOM once, with the
kernel's victim; a memcg made below the armed one meanwhile (inheriting the flag) too."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from . import daemon as d
from .conftest import LiveCgroups, MiB, set_limit, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged


def test_the_next_start_records_the_oom_its_dead_runtime_and_watchdog_left(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    other = live.mkdir("other", limit=256 * MiB)
    state = tmp_path / "run" / "restore.json"
    config = d.config(tmp_path, live.root, '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'
                      '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/other"\n')
    first = d.start(config, hung_after=600)  # the watchdog never acts first
    second = None
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1
                        and oom_control(other)["oom_kill_disable"] == 1, 15), "not armed"
        watchdog = json.loads(state.read_text())["watchdog_pid"]
        # The watchdog first (it hands a stopped runtime's OOMs over at once), then the
        # runtime: the OOMs below wait for somebody now.
        os.kill(watchdog, signal.SIGSTOP)
        os.kill(first.pid, signal.SIGSTOP)
        new = live.mkdir("other/new", limit=32 * MiB)  # inherits oom_kill_disable 1
        hogs = [live.spawn(box, "anon", 64 * MiB), live.spawn(new, "anon", 64 * MiB)]
        assert wait_for(lambda: oom_control(box)["under_oom"] == 1
                        and oom_control(new)["under_oom"] == 1, 10)
        os.kill(watchdog, signal.SIGKILL)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(0.5)
        assert all(h.alive() for h in hogs), "nobody was left to hand the OOMs over"
        assert oom_control(box)["oom_kill_disable"] == 1
        second = d.start(config, hung_after=600)
        assert all(h.wait_dead(10) for h in hogs), "the next start left the OOMs waiting"
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "re-armed"
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    finally:
        for proc in (first, second):
            if proc is not None:
                d.kill(proc)
        set_limit(box, 512 * MiB)
    assert oom_control(box)["oom_kill_disable"] == 0
    assert oom_control(other)["oom_kill_disable"] == 0
    assert oom_control(new)["oom_kill_disable"] == 0
    ooms = sorted((r["memcg"], r["policy"], tuple(v["pid"] for v in r["victims"]))
                  for r in d.ooms(tmp_path))
    assert ooms == [("/box", "watchdog", (hogs[0].pid,)),
                    ("/other/new", "watchdog", (hogs[1].pid,))]
