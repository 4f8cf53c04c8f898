"""Self-protection and the housekeeping thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from oomkit.clock import ManualClock
from oomkit.daemon.housekeeper import Housekeeper
from oomkit.daemon.protect import DECISION_PATH_MODULES, GcControl, preimport


def can_lower_oom_score_adj() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False

PROBE = r"""
import json, os, threading
from oomkit.daemon.protect import protect
p = protect()
nice = []
t = threading.Thread(target=lambda: nice.append(os.getpriority(os.PRIO_PROCESS, 0)))
t.start(); t.join()
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(json.dumps({"steps": p.steps, "locked_kb": int(status["VmLck"].split()[0]),
                  "rss_kb": int(status["VmRSS"].split()[0]),
                  "adj": open("/proc/self/oom_score_adj").read().strip(),
                  "nice": nice[0],
                  "stack": threading.stack_size()}))
"""


def probe() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True)
    data: dict[str, object] = json.loads(out.stdout)
    return data


@pytest.mark.privileged
def test_protect_locks_memory_and_lowers_the_oom_score() -> None:
    if os.geteuid() != 0:
        pytest.skip("mlockall of a whole Python and oom_score_adj -1000 need root")
    data = probe()
    steps = data["steps"]
    assert isinstance(steps, dict)
    assert steps["malloc arenas"] is None and steps["imports"] is None
    assert steps["mlockall"] is None, steps
    if can_lower_oom_score_adj():
        assert steps["oom_score_adj"] is None
        assert data["adj"] == "-1000"
    else:  # root without CAP_SYS_RESOURCE (some containers): reported, not fatal
        assert "needs CAP_SYS_RESOURCE" in str(steps["oom_score_adj"])
    assert isinstance(data["locked_kb"], int) and data["locked_kb"] > 10_000
    assert data["stack"] == 256 << 10
    assert steps["priority"] is None and data["nice"] <= -10  # a thread started after it


def test_protect_reports_instead_of_failing_without_privilege() -> None:
    if os.geteuid() == 0:
        # As root, take the privileges away: no CAP_IPC_LOCK/CAP_SYS_RESOURCE, tiny memlock.
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-ipc_lock,-sys_resource,-sys_nice",
               "--", sys.executable, "-c", "import resource; resource.setrlimit("
               "resource.RLIMIT_MEMLOCK, (65536, 65536)); exec(open(0).read())"]
        try:
            out = subprocess.run(cmd, input=PROBE, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            pytest.skip("setpriv is not installed")
        if out.returncode != 0:
            pytest.skip(f"cannot drop privileges here: {out.stderr.strip()[:200]}")
        data = json.loads(out.stdout)
    else:
        data = probe()
    steps = data["steps"]
    assert "mlockall failed" in steps["mlockall"]
    assert steps["imports"] is None
    if os.geteuid() == 0 and os.getpriority(os.PRIO_PROCESS, 0) > -10:
        assert "needs CAP_SYS_NICE" in steps["priority"]


def test_every_decision_path_module_imports() -> None:
    assert preimport(DECISION_PATH_MODULES) == []
    assert preimport(["no_such_module_at_all"])[0].startswith("no_such_module_at_all")


def test_gc_control_freezes_and_restores() -> None:
    import gc

    g = GcControl()
    try:
        g.startup_done()
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        g.refreeze()
        assert gc.get_freeze_count() > 0
        g.collect_idle()
        assert g.collections == 1
    finally:
        g.restore()
    assert gc.isenabled() and gc.get_freeze_count() == 0


class FakeGc(GcControl):
    def collect_idle(self) -> int:
        self.collections += 1
        return 0


def test_housekeeper_coalesces_jobs_by_key() -> None:
    hk = Housekeeper()
    ran: list[str] = []
    gate = threading.Event()
    hk.start()
    try:
        hk.submit("block", gate.wait)
        for _ in range(5):
            hk.submit("sync", lambda: ran.append("sync"))
        hk.submit("status", lambda: ran.append("status"))
        gate.set()
        assert hk.drain()
    finally:
        hk.close()
    assert ran == ["sync", "status"]


def test_housekeeper_runs_inline_when_not_started_and_survives_failures() -> None:
    hk = Housekeeper()
    ran: list[int] = []
    hk.submit("a", lambda: ran.append(1))
    hk.submit("b", lambda: 1 / 0)  # type: ignore[func-returns-value]
    assert ran == [1] and hk.failures == 1


def test_idle_gc_waits_for_quiet_and_interval() -> None:
    clock = ManualClock()
    g = FakeGc()
    hk = Housekeeper(gc_control=g, gc_interval_s=60, idle_s=2, clock=clock)
    assert hk._gc_due(clock.now()) == 60
    clock.advance_ns(59 * 10**9)
    hk.touch()
    clock.advance_ns(1 * 10**9)
    assert hk._gc_due(clock.now()) == 1.0  # interval over, but something just happened
    clock.advance_ns(1 * 10**9)
    assert hk._gc_due(clock.now()) == 0.0


def test_idle_gc_runs_on_the_thread() -> None:
    g = FakeGc()
    hk = Housekeeper(gc_control=g, gc_interval_s=0.01, idle_s=0.01)
    hk.start()
    try:
        deadline = threading.Event()
        for _ in range(200):
            if g.collections >= 2:
                break
            deadline.wait(0.01)
    finally:
        hk.close()
    assert g.collections >= 2
