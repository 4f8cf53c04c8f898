"""oomkit run --sim, check-config, events and status, through the command line."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.cli import main

from .conftest import Setup

REPO = Path(__file__).resolve().parents[2]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_check_config_ok(setup: Setup) -> None:
    code, text = cli("check-config", str(setup.config))
    assert code == 0
    assert text.startswith(f"{setup.config}: OK")
    assert "oom  largest_leaf (LargestLeaf) /a" in text
    assert "metrics 127.0.0.1:0" in text


def test_check_config_of_the_packaged_example() -> None:
    code, text = cli("check-config", str(REPO / "packaging" / "oomkit.toml"))
    assert code == 0, text
    assert "psi  pressure_guard (PressureGuard) args {\"threshold\": \"500ms\"" in text


def test_check_config_errors_exit_2_with_one_line(setup: Setup,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    setup.write_config('[[oom]]\npolicy = "largest_leaf"\nbudget = "later"\n')
    code, _ = cli("check-config", str(setup.config))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().startswith(f"oomkit: {setup.config}:11: [[oom]] 1, key 'budget'")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned policy files need root")
def test_check_config_refuses_a_group_writable_policy_file(
        setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = tmp_path / "pol"
    pol.mkdir(mode=0o755)
    f = pol / "p.py"
    f.write_text("from oomkit import OomOps\nclass P(OomOps):\n    pass\n")
    os.chmod(f, 0o664)
    setup.write_config(f'[[oom]]\npolicy = "{f}:P"\n')
    assert cli("check-config", str(setup.config))[0] == 2
    assert "writable by group or others" in capsys.readouterr().err


def test_run_sim_then_events_and_status(setup: Setup) -> None:
    code, story = cli("run", "--sim", str(setup.scenario), "--config", str(setup.config))
    assert code == 0
    assert "resolved by handler largest_leaf; killed a_big" in story
    # the handler's kill message ends the line that names its victim
    (line,) = [x for x in story.splitlines() if "resolved by handler largest_leaf" in x]
    assert re.search(r"killed a_big \(pid \d+, /a/x, rss [^)]+\): largest_leaf: /a/x$", line)
    code, table = cli("events", "--file", str(setup.event_log))
    assert code == 0
    # The terminal and the log tell the same story: the terminal of a simulation stamps
    # each line with scenario time, the log's table with the wall clock.
    def unstamped(text: str) -> list[str]:
        return [re.sub(r"^(\d{4}-\d\d-\d\d \S+| +\d+\.\d\ds)  ", "", line).strip()
                for line in text.splitlines()]

    assert unstamped(table) == unstamped(story)
    assert re.search(r"(?m)^ +\d+\.\d\ds  OOM  ", story) and not re.search(r"(?m)^\d{4}-", story)
    code, only_ooms = cli("events", "--file", str(setup.event_log), "--kind", "oom", "-n", "1")
    assert only_ooms.count("OOM ") == 1 and "/b hit its memory.max" in only_ooms
    code, raw = cli("events", "--file", str(setup.event_log), "--json", "--kind", "oom")
    assert [json.loads(line)["memcg"] for line in raw.splitlines()] == ["/a", "/b"]
    assert [[v["reason"] for v in json.loads(line)["victims"]] for line in raw.splitlines()] \
        == [["largest_leaf: /a/x"], [""]]  # the handler's message; none for the default's
    code, status = cli("status", "--status-file", str(setup.status_file))
    assert code == 3  # not running
    assert "oomkit stopped" in status and "OOMs 2, kills 2" in status
    assert "last 2 OOMs" in status and "resolved by handler largest_leaf" in status
    code, raw_status = cli("status", "--status-file", str(setup.status_file), "--json")
    assert json.loads(raw_status)["counts"]["ooms"] == 2


def test_run_with_json_and_quiet(setup: Setup) -> None:
    code, text = cli("run", "--sim", str(setup.scenario), "--config", str(setup.config),
                     "--json")
    assert code == 0
    assert json.loads(text.splitlines()[0])["event"] == "attach"
    code, text = cli("run", "--sim", str(setup.scenario), "--config", str(setup.config), "-q")
    assert code == 0 and text == ""


def test_run_with_command_line_policies_and_dry_run(setup: Setup) -> None:
    code, text = cli("run", "--sim", str(setup.scenario), "--config", str(setup.config),
                     "--oom-policy", "kill_cgroup@/b", "--dry-run", "--budget", "0.2")
    assert code == 0
    assert "DRY RUN" in text and "resolved by the kernel's own OOM killer" in text
    records = [json.loads(line) for line in setup.event_log.read_text().splitlines()]
    attach = [r for r in records if r["event"] == "attach"]
    assert [a["cgroup"] for a in attach] == ["/a", "/b"]


def test_events_and_status_without_a_daemon(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("events", "--file", str(tmp_path / "none.jsonl"))[0] == 3  # as status
    assert "no event log" in capsys.readouterr().err
    assert cli("status", "--status-file", str(tmp_path / "none.json"))[0] == 3  # LSB
    assert "no status" in capsys.readouterr().err


def test_events_follow_prints_new_records(setup: Setup) -> None:
    from oomkit.daemon.eventlog import EventLog

    setup.event_log.parent.mkdir(parents=True)
    log = EventLog(str(setup.event_log))
    log.write({"event": "error", "time": 0.0, "wall": 1.0, "where": "old", "error": "x"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "oomkit.cli", "events", "-f", "--file", str(setup.event_log)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "old: x" in proc.stdout.readline()  # the last lines first
        time.sleep(0.3)
        log.write({"event": "error", "time": 0.0, "wall": 2.0, "where": "new", "error": "y"})
        assert "new: y" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        log.close()
    assert proc.returncode in (0, 130)


def test_simulate_and_run_sim_print_one_story(setup: Setup, tmp_path: Path) -> None:
    """One printer: `simulate` and `run --sim` tell the same events in the same words, both
    stamped with the scenario's time, with the same default budget."""
    setup.write_config('[[oom]]\npolicy = "largest_leaf"\n')
    _, story = cli("simulate", str(setup.scenario), "--oom-policy", "largest_leaf", "--bare")
    _, daemon = cli("run", "--sim", str(setup.scenario), "--config", str(setup.config))

    sim_lines = [line for line in story.splitlines() if "OOM " in line]
    assert sim_lines and sim_lines[0][8] == "s"  # "    1.01s  OOM ..."
    run_lines = [line for line in daemon.splitlines() if "OOM " in line]
    assert [line[11:] for line in sim_lines] == [line[11:] for line in run_lines]
    assert [line[:11] for line in sim_lines] == [line[:11] for line in run_lines]
    assert "resolved by handler largest_leaf" in story and "process  pid" in story


def test_one_default_budget() -> None:
    from oomkit.cli import build_parser
    from oomkit.daemon.config import Config
    from oomkit.runtime import DEFAULT_BUDGET_S

    sim = build_parser().parse_args(["simulate", "x.toml"])
    assert sim.budget == DEFAULT_BUDGET_S == Config().daemon.budget_s == 0.5
