"""Fault injection, issue 14 item 8 on the live kernel: a runtime that recovers after the
watchdog handed its OOM over (a handler held the GIL past the budget, then returned) does
not record that OOM a second time: every OOM once in the event log."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from oomkit.daemon.backend import WATCHDOG_MIN_S

from . import daemon as d
from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged

POLICY = '''
import sys, time
from oomkit import OomOps

class HoldsTheGilAWhile(OomOps):
    name = "holds_the_gil_a_while"

    def handle_out_of_memory(self, ctx, oc):
        # No other thread of the daemon runs for HOLD seconds (no GIL hand-off meanwhile).
        sys.setswitchinterval(1000)
        end = time.monotonic() + HOLD
        while time.monotonic() < end:
            pass
        sys.setswitchinterval(0.005)
        return False
'''


@pytest.mark.parametrize("leaf", ["", "/leaf"])
def test_a_recovered_runtime_does_not_record_the_handed_over_oom_again(
        live_v1: LiveCgroups, tmp_path: Path, leaf: str) -> None:
    """With the hog in /box/leaf, the OOM of /box marks /box/leaf under OOM too (v1 marks
    the subtree and signals every eventfd in it): still one OOM, /box's."""
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    where = live.mkdir("box" + leaf)
    policy = d.policy_file(tmp_path, "gil", f"HOLD = {WATCHDOG_MIN_S + 2.0}\n" + POLICY)
    proc = d.start(d.config(
        tmp_path, live.root, f'[[oom]]\npolicy = "{policy}:HoldsTheGilAWhile"\n'
        'cgroup = "/box"\n', daemon='budget = "500ms"\n'))
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        hog = live.spawn(where, "anon", 64 * MiB)
        assert hog.wait_dead(WATCHDOG_MIN_S + 4), "the watchdog did not hand the OOM over"
        time.sleep(4.0)  # the handler returns, the runtime goes on with that OOM
        assert proc.poll() is None
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 5), "re-armed"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        d.kill(proc)
    assert oom_control(box)["oom_kill_disable"] == 0
    (oom,) = d.ooms(tmp_path)
    assert (oom["memcg"], oom["policy"], oom["resolved_by"]) == ("/box", "watchdog", "kernel")
    assert [(v["pid"], v["cgroup"]) for v in oom["victims"]] == [(hog.pid, "/box" + leaf)]
