"""A SIGHUP reload survives anything a policy's import does (issue 14, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomkit import policy_loader

from .conftest import Setup
from .test_daemon_sim import run

POLICY = "from oomkit import OomOps\n\nclass Mine(OomOps):\n    name = 'mine'\n"


@pytest.mark.parametrize(("body", "shown"), [
    ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("import time\ntime.sleep(30)\n", "did not finish importing within 0.5 s"),
])
def test_a_reload_to_a_policy_whose_import_exits_or_blocks_keeps_serving(
        setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str,
        shown: str) -> None:
    monkeypatch.setattr(policy_loader, "IMPORT_DEADLINE_S", 0.5)
    pol = tmp_path / "bad.py"
    pol.write_text(body + POLICY)

    def change() -> None:
        setup.write_config(f'[[oom]]\npolicy = "{pol}:Mine"\ncgroup = "/a"\n')
        d.request_reload()

    d = setup.daemon()
    setup.at(0.5, change)
    assert run(d) == 0  # the daemon served to the end of the scenario
    (error,) = setup.records("error")
    assert error["where"] == "reload" and shown in error["error"], error
    # the running config was kept: /a's OOM at 1 s was still handled by largest_leaf
    assert [(r["memcg"], r["policy"]) for r in setup.records("oom")] == [
        ("/a", "largest_leaf"), ("/b", "default")]
