"""The command line's basics: --version, python -m oomkit, a closed pipe, choices, LSB
status codes, "did you mean", a file of the other kind, --state-dir, one size grammar."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.units import format_size, parse_duration_ns, parse_size

REPO = Path(__file__).resolve().parents[1].parent
DEFAULT = str(REPO / "examples" / "default.toml")
PACKAGED_CONFIG = str(REPO / "packaging" / "oomkit.toml")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def oomkit(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oomkit", *argv], capture_output=True,
                          text=True, timeout=60, **kw)  # type: ignore[call-overload]


def test_version_from_the_package_metadata() -> None:
    from importlib.metadata import version

    r = oomkit("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"oomkit {version('oomkit')}"


def test_python_m_oomkit_help() -> None:
    r = oomkit("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: oomkit")


@pytest.mark.parametrize("argv", [["simulate", DEFAULT], ["check-config", PACKAGED_CONFIG],
                                  ["policies"]])
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """`oomkit ... | head -1`: no BrokenPipeError traceback, exit 141 (128 + SIGPIPE)."""
    r = subprocess.run(f"{sys.executable} -m oomkit {' '.join(argv)} | head -c 1 >/dev/null;"
                       " echo ${PIPESTATUS[0]} >&2", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    code = int(r.stderr.strip().splitlines()[-1])
    assert code in (0, 141)  # 0 when it all fit in the pipe before head closed it


def test_events_on_a_closed_pipe(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    record = {"event": "error", "time": 0.0, "wall": 1.0, "where": "x", "error": "y" * 200}
    log.write_text((json.dumps(record) + "\n") * 20000)  # far more than a pipe holds
    r = subprocess.run(f"{sys.executable} -m oomkit events --file {log} | head -1 >/dev/null;"
                       " echo ${PIPESTATUS[0]} >&2", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["141"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["events", "--kind", "bogus"], "invalid choice: 'bogus'"),
    (["events", "-n", "-1"], "must be 0 or more, got -1"),
    (["status", "-n", "x"], "expected a whole number"),
    (["simulate", DEFAULT, "--budget", "soon"], "expected a duration"),
])
def test_choices_are_checked(argv: list[str], needle: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_budget_takes_a_duration() -> None:
    from oomkit.cli import build_parser

    assert build_parser().parse_args(["simulate", "x", "--budget", "200ms"]).budget == 0.2
    assert build_parser().parse_args(["simulate", "x", "--budget", "0.3"]).budget == 0.3


def test_status_exit_codes_as_lsb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("status", "--status-file", str(tmp_path / "none.json"))[0] == 3
    assert "not running" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{half")
    assert run("status", "--status-file", str(bad))[0] == 4
    dead = tmp_path / "dead.json"
    # pid 2**22+1 is above pid_max's largest value (4194304): no such process
    dead.write_text(json.dumps({"pid": (1 << 22) + 1, "running": True,
                                "event_log": str(tmp_path / "e")}))
    assert run("status", "--status-file", str(dead))[0] == 1
    dead.write_text(json.dumps({"pid": os.getpid(), "running": True,
                                "event_log": str(tmp_path / "e")}))
    assert run("status", "--status-file", str(dead))[0] == 0


def test_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[daemon]\nbudgte = "1s"\n')
    assert run("check-config", str(cfg))[0] == 2
    err = capsys.readouterr().err
    assert "key 'daemon.budgte': unknown key (did you mean 'budget'?" in err
    scen = tmp_path / "s.toml"
    scen.write_text('[machine]\nmemroy = "1G"\n')
    assert run("simulate", str(scen))[0] == 2
    assert "did you mean 'memory'?" in capsys.readouterr().err
    cfg.write_text('[daemon]\nzzzz = "1s"\n')
    assert run("check-config", str(cfg))[0] == 2
    assert "did you mean" not in capsys.readouterr().err


def test_a_file_of_the_other_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("simulate", PACKAGED_CONFIG)[0] == 2
    err = capsys.readouterr().err
    assert "looks like a daemon config, not a scenario" in err
    assert len(err.strip().splitlines()) == 1
    assert run("check-config", DEFAULT)[0] == 2
    assert f"looks like a scenario, not a daemon config: try `oomkit simulate {DEFAULT}`" in \
        capsys.readouterr().err


def test_state_dir_for_a_daemon_without_root(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, _ = run("run", "--sim", DEFAULT, "--state-dir", str(state), "--quiet",
                  "--oom-policy", "largest_leaf")
    assert code == 0
    assert sorted(p.name for p in state.iterdir()) == ["events.jsonl", "status.json"]
    code, text = run("events", "--state-dir", str(state), "--kind", "oom")
    assert code == 0 and "resolved by handler largest_leaf" in text
    code, text = run("status", "--state-dir", str(state))
    assert code == 3 and "oomkit stopped" in text


def test_sizes_echoed_back_as_sizes(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[daemon]\nevent_log = "{tmp_path}/e.jsonl"\nevent_log_max = "10Mi"\n')
    code, text = run("check-config", str(cfg))
    assert code == 0 and "rotate at 10M," in text


def test_one_size_and_duration_grammar() -> None:
    for text in ("10M", "10Mi", "10MiB", "10 Mi", "10m"):
        assert parse_size(text) == 10 << 20, text
    assert parse_size("2Gi") == parse_size("2G") == 2 << 30
    assert parse_size("512B") == 512 and parse_size("3Ki") == 3072
    for si in ("10MB", "1kb", "2GB"):
        with pytest.raises(ValueError, match="ambiguous"):
            parse_size(si)
    assert parse_duration_ns("2min") == parse_duration_ns("2m") == 120_000_000_000
    assert parse_duration_ns("1h") == 3_600_000_000_000
    for n in (1, 1023, 1024, 10 << 20, 3 << 29, 5 << 40):
        assert abs(parse_size(format_size(n).removesuffix("B")) - n) <= n * 0.05
