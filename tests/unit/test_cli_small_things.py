"""Small things a first user met (qa-findings F20): a simulation stamped with its own time,
status/reload while the config does not load, a handler's non-bool return, errors before
the story, the event log's exit codes and help, plurals, an exception without text."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from oomkit.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = str(REPO / "examples" / "default.toml")
TMPFS = str(REPO / "examples" / "tmpfs.toml")

POLICIES = '''
from oomkit import OomOps


class Yes(OomOps):
    name = "yes"

    def handle_out_of_memory(self, ctx, oc):
        return "yes"


class Interrupts(OomOps):
    name = "interrupts"

    def handle_out_of_memory(self, ctx, oc):
        raise KeyboardInterrupt
'''


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    path = tmp_path / "odd.py"
    path.write_text(POLICIES)
    return path


def test_run_sim_lines_carry_the_scenarios_time(tmp_path: Path) -> None:
    code, text = run("run", "--sim", DEFAULT, "--state-dir", str(tmp_path))
    assert code == 0, text
    assert re.search(r"(?m)^ +5\.29s  OOM  ", text) and re.search(r"(?m)^ +5\.89s  OOM  ", text)
    assert not re.search(r"(?m)^\d{4}-\d\d-\d\d ", text), text  # no wall clock
    log = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert all("wall" in r for r in log)  # the event log keeps both


@pytest.mark.parametrize("command", ["status", "reload"])
def test_status_and_reload_answer_while_the_config_does_not_load(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = tmp_path / "status.json"
    config = tmp_path / "oomkit.toml"
    config.write_text(f'[daemon]\nstatus_file = "{status}"\nbudget = "soon"\n')
    code, _ = run(command, "--config", str(config))
    err = capsys.readouterr().err
    assert code == 3, err  # LSB: not running (was 2, the config's error)
    assert "key 'daemon.budget'" in err and f"{status}: no" in err
    config.write_text("[daemon\n")  # not TOML at all: the default paths (this host's)
    code, _ = run(command, "--config", str(config))
    assert code != 2 and "not valid TOML" in capsys.readouterr().err


def test_a_handler_returning_a_non_bool_is_reported_as_such(policies: Path) -> None:
    code, text = run("simulate", DEFAULT, "--oom-policy", f"{policies}:Yes@/srv")
    assert code == 0
    assert "asked yes (cgroup id 2): returned 'yes', not a bool (taken as True): freed " \
        "nothing: walk goes on" in text, text
    code, text = run("simulate", DEFAULT, "--json", "--oom-policy", f"{policies}:Yes@/srv")
    oom = next(json.loads(line) for line in text.splitlines() if '"event": "oom"' in line)
    assert oom["handlers"][0]["returned"] is True
    assert oom["handlers"][0]["returned_value"] == "'yes'"


def test_an_exception_without_text_is_its_name_alone(policies: Path) -> None:
    code, text = run("simulate", DEFAULT, "--oom-policy", f"{policies}:Interrupts@/srv")
    assert code == 0 and "failed: KeyboardInterrupt, " in text, text
    assert "KeyboardInterrupt: " not in text


@pytest.mark.parametrize("bad", [
    ["--oom-policy", "no_such_policy"],
    ["--psi-policy", "largest_leaf"],
    ["--plot", "timeline.txt"],
    ["--samples", "/nonexistent/dir/s.jsonl"],
    ["--policy", "no_such_policy"],
])
def test_simulate_refuses_before_the_story(bad: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run("simulate", DEFAULT, *bad)
    assert code == 2 and text == "", text
    assert capsys.readouterr().err.startswith("oomkit: ")


def test_events_and_check_config_help() -> None:
    from oomkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    choices = sub.choices  # type: ignore[attr-defined]
    follow = next(a for a in choices["events"]._actions if a.dest == "follow")
    file = next(a for a in choices["check-config"]._actions if a.dest == "file")
    assert follow.help and "new ones" in follow.help
    assert file.help and "config file" in file.help


def test_plurals(tmp_path: Path) -> None:
    from oomkit.units import counted

    assert [counted(n, "process", "processes") for n in (0, 1, 2)] == [
        "0 processes", "1 process", "2 processes"]
    code, text = run("simulate", TMPFS, "--oom-policy", "tmpfs_cleanup@/svc")
    assert code == 0 and "; 2 processes, 3 s" in text and "end       1 OOM, 0 kills," in text
    one = tmp_path / "one.toml"
    one.write_text('[machine]\nmemory = "1G"\nduration = "1s"\n\n[[process]]\nname = "p"\n'
                   'program = [ { op = "sleep" } ]\n')
    code, text = run("simulate", str(one))
    assert code == 0 and "; 1 process, 1 s" in text and "end       0 OOMs, 0 kills," in text
