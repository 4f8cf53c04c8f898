"""`oomkit reload` waits for the daemon's answer: its exit code says whether the new config
was taken or refused (QA G6: it said "sent SIGHUP" and exited 0 for a refused config, and
so did `systemctl reload`)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.daemon.eventlog import read_events


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


GOOD = '[metrics]\nlisten = ""\n\n[[oom]]\npolicy = "largest_leaf"\n'


def test_reload_exits_non_zero_when_the_daemon_refuses_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "oomkit.toml"
    config.write_text(GOOD)
    state = tmp_path / "state"
    daemon = subprocess.Popen([sys.executable, "-m", "oomkit", "run", "--dry-run", "--quiet",
                               "--config", str(config), "--state-dir", str(state)],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(r.get("action") == "start" for r in read_events(
                str(state / "events.jsonl"))):
            assert daemon.poll() is None and time.monotonic() < deadline, \
                daemon.stderr.read() if daemon.stderr else ""
            time.sleep(0.1)
        config.write_text(GOOD.replace("largest_leaf", "largest_leef"))
        code, _ = cli("reload", "--state-dir", str(state))
        err = capsys.readouterr().err
        assert code == 1, err
        assert "reload refused, the running config stays" in err and "largest_leef" in err
        config.write_text(GOOD)
        code, text = cli("reload", "--state-dir", str(state))
        assert code == 0 and f"reloaded: oomkit (pid {daemon.pid}) runs {config}" in text, text
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
