"""Outputs on reload: the event log and the status file name what is really written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from oomkit.daemon.config import parse_config
from oomkit.daemon.outputs import Outputs


def config(tmp_path: Path, log: Path) -> str:
    return (f'[daemon]\nevent_log = "{log}"\nstatus_file = "{tmp_path}/status.json"\n'
            f'state_file = "{tmp_path}/restore.json"\n[metrics]\nlisten = ""\n')


def test_a_log_that_could_not_be_opened_is_not_reported_as_the_log(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file"  # root opens anything: a path below a file fails
        blocked.write_text("")
        bad = blocked / "events.jsonl"
    else:
        bad = Path("/proc/oomkit-no/events.jsonl")
    good, later = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first = parse_config(config(tmp_path, good), "c.toml")
    broken = parse_config(config(tmp_path, bad), "c.toml")
    fixed = parse_config(config(tmp_path, later), "c.toml")
    reports: list[str] = []
    outputs = Outputs(wall=lambda: 1.0, defer=lambda key, job: job(), backend_name="sim",
                      handlers=list, watched=lambda: 0)
    outputs.open(first)
    try:
        outputs.apply(first, broken, lambda where, msg: reports.append(msg))
        assert len(reports) == 1 and f"keeping {good}" in reports[0]
        assert outputs.eventlog is not None and outputs.eventlog.path == str(good)
        assert outputs.status is not None
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["event_log"] == str(good)
        # The same broken path again: still the old log, still said; then a good one.
        outputs.apply(broken, broken, lambda where, msg: reports.append(msg))
        assert outputs.eventlog.path == str(good)
        outputs.apply(broken, fixed, lambda where, msg: reports.append(msg))
        assert outputs.eventlog.path == str(later)
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["event_log"] == str(later)
    finally:
        outputs.close_servers()
        outputs.close_eventlog()
