"""Fault injection, issue 14 item 8 on the live kernel: a handler calling os._exit (or
sys.exit) does not end the daemon; it is a handler error like a raise, the OOM goes to
the kernel killer, and the event log has it once."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from . import daemon as d
from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged

POLICY = '''
import os, sys
from oomkit import OomOps

class Exits(OomOps):
    name = "exits"

    def handle_out_of_memory(self, ctx, oc):
        if EXIT == "os":
            os._exit(0)
        sys.exit(0)
'''


@pytest.mark.parametrize("how", ["os", "sys"])
def test_a_handler_that_exits_does_not_end_the_daemon(live_v1: LiveCgroups, tmp_path: Path,
                                                      how: str) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    policy = d.policy_file(tmp_path, "exits", f"EXIT = {how!r}\n" + POLICY)
    proc = d.start(d.config(tmp_path, live.root,
                            f'[[oom]]\npolicy = "{policy}:Exits"\ncgroup = "/box"\n'))
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(10), "the OOM did not end"
        time.sleep(1.0)
        assert proc.poll() is None, f"the handler's {how}.exit ended the daemon " \
                                    f"(exit code {proc.returncode})"
        assert oom_control(box)["oom_kill_disable"] == 1, "armed again after the hand-over"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        d.kill(proc)
    assert oom_control(box)["oom_kill_disable"] == 0, "restored after stop"
    assert [(r["memcg"], r["resolved_by"]) for r in d.ooms(tmp_path)] == [("/box", "default")]
    log = tmp_path / "log" / "events.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [r for r in records if r.get("event") == "handler_error"]
    assert errors and "exit" in errors[0]["error"].lower()
