"""The recommended config starts unchanged on cgroup v2 (issue 11: "starts on this
machine, in the guest and on the simulator without edits"): packaging/oomkit.toml as
shipped, its event log, status file and restore journal at their default paths (the
guest's root is a tmpfs overlay), then a clean stop on SIGTERM."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import GUEST_ONLY

pytestmark = GUEST_ONLY

REPO = Path(__file__).resolve().parents[3]
RECOMMENDED = REPO / "packaging" / "oomkit.toml"


def test_the_recommended_config_starts_unchanged() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(RECOMMENDED), "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[dict[str, object]] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                r.get("event") == "daemon" and r.get("action") == "start" for r in seen):
            if not sel.select(timeout=1.0):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                seen.append(json.loads(line))
        starts = [r for r in seen if r.get("event") == "daemon"]
        assert starts and starts[0].get("action") == "start", seen
        attached = {(r["name"], r["ops"]) for r in seen if r.get("event") == "attach"}
        assert attached == {("tmpfs_cleanup", "oom"), ("kill_cause", "oom"),
                            ("pressure_guard", "psi")}, seen
        assert not [r for r in seen if r.get("event") == "error"], seen
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the daemon did not stop within 60 s of SIGTERM")
    assert proc.returncode == 0, out
    assert Path("/var/log/oomkit/events.jsonl").exists()
