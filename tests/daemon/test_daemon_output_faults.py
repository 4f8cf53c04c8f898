"""Outputs that cannot start never stop OOM handling, and never follow a planted link
(issue 14, items 8 and 6); the daemon's files are 0600 in 0700 directories."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from .conftest import CONFIG_A, Setup
from .test_daemon_sim import run


def _handled(setup: Setup) -> list[tuple[str, str]]:
    return [(r["memcg"], r["resolved_by"]) for r in setup.status()["last_ooms"]]


def test_a_link_planted_at_the_event_log_is_not_followed(setup: Setup, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    setup.event_log.parent.mkdir(parents=True, exist_ok=True)
    setup.event_log.symlink_to(target)
    d = setup.daemon()
    assert run(d) == 0
    assert target.read_text() == "keep\n"
    status = setup.status()
    assert "event log" in status["last_error"]["where"]
    assert "OOM handling goes on without it" in status["last_error"]["error"]
    assert _handled(setup) == [("/a", "handler"), ("/b", "default")]


def test_an_event_log_directory_that_cannot_be_made_is_reported(setup: Setup,
                                                                tmp_path: Path) -> None:
    (tmp_path / "log").write_text("a file where the log directory should be\n")
    d = setup.daemon()
    assert run(d) == 0
    assert "event log" in setup.status()["last_error"]["where"]
    assert _handled(setup) == [("/a", "handler"), ("/b", "default")]


def test_a_busy_metrics_port_is_reported_and_ooms_are_handled(setup: Setup) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        setup.config.write_text(setup.config.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
        d = setup.daemon()
        assert run(d) == 0
    (error,) = [r for r in setup.records("error") if r["where"] == "metrics"]
    assert "OOM handling goes on without it" in error["error"]
    assert [(r["memcg"], r["resolved_by"]) for r in setup.records("oom")] == [
        ("/a", "handler"), ("/b", "default")]


def test_files_are_private_whatever_the_umask(setup: Setup, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        setup.write_config(CONFIG_A)
        planted = tmp_path / "run" / f"status.json.{os.getpid()}.tmp"  # the old temp name
        planted.parent.mkdir(mode=0o755)
        target = tmp_path / "target"
        target.write_text("keep\n")
        planted.symlink_to(target)
        assert run(setup.daemon()) == 0
    finally:
        os.umask(old)
    assert target.read_text() == "keep\n"
    for f in (setup.event_log, setup.status_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(setup.event_log.parent.stat().st_mode) == 0o700
