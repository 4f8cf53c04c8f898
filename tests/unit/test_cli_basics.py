"""The command line's basics: --version, python -m oomkit, a closed pipe, choices, LSB
status codes, "did you mean", a file of the other kind, --state-dir, one size grammar."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import time
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
    (["simulate", DEFAULT, "--budget", "0"], "must be more than zero and at most 60s"),
    (["simulate", DEFAULT, "--budget", "0us"], "must be more than zero"),
    (["run", "--sim", DEFAULT, "--budget", "1h"], "at most 60s, got '1h'"),
    (["run", "--sim", DEFAULT, "--budget", "61"], "at most 60s"),
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
    # A live oomkit (any: the check is its command line) is "running".
    live = subprocess.Popen([sys.executable, "-m", "oomkit", "events", "-f", "--file",
                             str(tmp_path / "e")], stdout=subprocess.DEVNULL)
    try:
        dead.write_text(json.dumps({"pid": live.pid, "running": True,
                                    "event_log": str(tmp_path / "e")}))
        deadline = time.monotonic() + 30
        while b"oomkit" not in Path(f"/proc/{live.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline  # still the fork, before exec
            time.sleep(0.01)
        assert run("status", "--status-file", str(dead))[0] == 0
    finally:
        live.kill()
        live.wait()


def test_a_reused_pid_is_not_the_daemon(tmp_path: Path) -> None:
    """The daemon was SIGKILLed; its pid now belongs to another program. status says dead,
    and reload does not send that program a SIGHUP (which would end it)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        st = tmp_path / "s.json"
        st.write_text(json.dumps({"pid": other.pid, "running": True,
                                  "event_log": str(tmp_path / "e")}))
        assert run("status", "--status-file", str(st))[0] == 1
        assert run("reload", "--status-file", str(st))[0] == 3
        time.sleep(0.2)
        assert other.poll() is None, "reload signalled a process that is not oomkit"
    finally:
        other.kill()
        other.wait()


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
    names = sorted(p.name for p in state.iterdir())
    # The OOM's incident file (the flight recorder) goes beside the event log.
    assert [n for n in names if not n.startswith("incident-")] == ["events.jsonl",
                                                                   "status.json"]
    assert len([n for n in names if n.startswith("incident-")]) == 1
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


def _oom_record(i: int) -> dict[str, object]:
    return {"event": "oom", "time": float(i), "wall": 1.0 + i, "memcg": "/a",
            "constraint": "MEMCG", "resolved_by": "kernel", "policy": None, "victims": [],
            "handlers": [], "note": ""}


def test_status_lines_counts_the_last_ooms(tmp_path: Path) -> None:
    """`status -n 0` shows none (not the default 5), -n 2 the last two."""
    log = tmp_path / "e.jsonl"
    log.write_text("".join(json.dumps(_oom_record(i)) + "\n" for i in range(7)))
    st = tmp_path / "s.json"
    st.write_text(json.dumps({"pid": (1 << 22) + 1, "running": False, "event_log": str(log)}))
    code, text = run("status", "--status-file", str(st), "-n", "0")
    assert code == 3 and "no OOM in the event log" in text and "OOM       " not in text
    code, text = run("status", "--status-file", str(st), "-n", "2")
    assert code == 3 and "last 2 OOMs" in text and text.count("OOM       ") == 2
    code, text = run("status", "--status-file", str(st), "-n", "50")
    assert "last 7 OOMs" in text and text.count("OOM       ") == 7


def test_status_file_with_a_bad_pid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    st = tmp_path / "s.json"
    st.write_text(json.dumps({"pid": "abc", "running": True}))
    assert run("status", "--status-file", str(st))[0] == 4
    assert "cannot read the status file" in capsys.readouterr().err


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "oomkit", *argv],
                       capture_output=True, text=True, timeout=60, cwd="/")
    if os.geteuid() != 0 or "setpriv:" in r.stderr:
        pytest.skip(f"needs root and setpriv to read as another user: {r.stderr.strip()}")
    return r


def test_events_that_cannot_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory, or a log the user may not read: one line and exit 4 (as `status` for
    a status file it cannot read), no traceback, and never "no event log" or "not running"
    for a file that is there."""
    import tempfile

    assert run("events", "--file", str(tmp_path))[0] == 4
    assert "cannot read the event log: Is a directory" in capsys.readouterr().err
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # pytest's tmp_path is root's, 0700
        os.chmod(d, 0o755)
        log = Path(d) / "e.jsonl"
        log.write_text(json.dumps(_oom_record(0)) + "\n")
        log.chmod(0o600)  # as the daemon's, 0640 root:root
        st = Path(d) / "s.json"
        st.write_text(json.dumps({"pid": (1 << 22) + 1, "running": False,
                                  "event_log": str(log)}))
        r = _as_nobody("events", "--file", str(log))
        assert r.returncode == 4 and "Traceback" not in r.stderr, r.stderr
        assert "cannot read the event log: Permission denied" in r.stderr
        r = _as_nobody("status", "--status-file", str(st))
        assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
        assert "no OOM in the event log" not in r.stdout
        assert f"{log}: cannot read it: Permission denied" in r.stdout
        st.chmod(0o600)
        r = _as_nobody("status", "--status-file", str(st))
        assert r.returncode == 4 and "not running" not in r.stderr, r.stderr
        assert "cannot read the status file: Permission denied" in r.stderr


def test_a_record_this_version_cannot_show(tmp_path: Path) -> None:
    """A hand-edited or foreign line is shown as its JSON; the records after it still are."""
    log = tmp_path / "e.jsonl"
    broken = {"event": "oom", "time": 0.0}  # no constraint, no victims
    log.write_text(json.dumps(broken) + "\n" + json.dumps(_oom_record(1)) + "\n")
    code, text = run("events", "--file", str(log))
    assert code == 0
    assert "a record oomkit cannot show" in text and '"time": 0.0' in text
    assert text.count("OOM       ") == 1


def test_sizes_echo_at_the_right_unit() -> None:
    """The largest unit the rounded figure fits: not "1024.0M" for a byte under 1G, not
    "2048G" for 2T."""
    assert format_size((1 << 30) - 1) == "1.0G"
    assert format_size((1 << 20) - 1) == "1.0M"
    assert format_size(2 << 40) == "2T" and format_size(3 << 39) == "1.5T"
    assert format_size(1023) == "1023B" and format_size(1536 << 20) == "1.5G"


@pytest.mark.parametrize("text", ["１s", "٣ms", "２M", "1０0"])
def test_only_ascii_digits(text: str) -> None:
    """Other scripts' digits are refused (re's \\d and float() would take them)."""
    from oomkit.cli import budget_arg

    for parse in (parse_size, parse_duration_ns):
        with pytest.raises(ValueError, match="expected"):
            parse(text)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        budget_arg(text)


def test_a_user_who_is_not_root_is_told_about_state_dir() -> None:
    """The default event log (/var/log/oomkit) refuses a normal user trying the daemon
    (a simulation never writes it): the error says which flag gets around it."""
    r = _as_nobody("run", "--dry-run", "--quiet", "--oom-policy", "largest_leaf")
    if "key 'daemon.event_log'" not in r.stderr or "Permission denied" not in r.stderr:
        pytest.skip(f"not the default event log refusing nobody: {r.stderr.strip()}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "(not root? --state-dir DIR keeps the event log" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_simulation_never_writes_the_machine_daemon_files(tmp_path: Path) -> None:
    # `oomkit run --sim` with the default paths (the live daemon's, which `oomkit status`
    # and `oomkit events` read) writes to a private directory instead; chosen paths stay.
    from dataclasses import replace

    from oomkit.daemon.config import (
        DEFAULT_EVENT_LOG,
        DEFAULT_STATE_FILE,
        DEFAULT_STATUS_FILE,
        Config,
    )
    from oomkit.daemon_cli import _away_from_the_machine

    scratch: list[str] = []
    moved = _away_from_the_machine(Config(), scratch).daemon
    assert len(scratch) == 1
    assert {moved.event_log, moved.status_file, moved.state_file}.isdisjoint(
        {DEFAULT_EVENT_LOG, DEFAULT_STATUS_FILE, DEFAULT_STATE_FILE})
    assert all(p.startswith(scratch[0] + "/")
               for p in (moved.event_log, moved.status_file, moved.state_file))
    mine = str(tmp_path / "events.jsonl")
    chosen = Config()
    chosen = replace(chosen, daemon=replace(chosen.daemon, event_log=mine))
    kept = _away_from_the_machine(chosen, scratch).daemon
    assert kept.event_log == mine and kept.status_file == moved.status_file
    os.rmdir(scratch[0])


def test_a_status_file_of_the_wrong_shape(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A status file that is JSON but not oomkit's (hand-edited, another program's, `{}`):
    one line and exit 4 for `status`, no traceback, never "None backend"; `reload` does
    not crash on it and signals nobody."""
    st = tmp_path / "s.json"
    for data in ({}, {"running": True}, {"pid": True, "running": True},
                 {"pid": (1 << 22) + 1, "running": True, "handlers": "zz"},
                 {"pid": (1 << 22) + 1, "running": True, "handlers": ["zz"]},
                 {"pid": (1 << 22) + 1, "running": True, "counts": []},
                 {"pid": (1 << 22) + 1, "running": True, "reloads": 3}):
        st.write_text(json.dumps(data))
        code, text = run("status", "--status-file", str(st))
        err = capsys.readouterr().err
        assert code == 4 and "None" not in text, (data, text, err)
        assert err.startswith(f"oomkit: {st}: cannot read the status file"), (data, err)
        assert run("reload", "--status-file", str(st))[0] == 4, data
        assert "cannot read the status file" in capsys.readouterr().err
    st.write_text(json.dumps({"pid": "x", "running": True}))
    assert run("reload", "--status-file", str(st))[0] == 4


def test_reload_says_why_it_cannot_read_the_status_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not "no running daemon" for a status file that is there but cannot be read."""
    assert run("reload", "--status-file", str(tmp_path))[0] == 4
    assert "cannot read the status file: Is a directory" in capsys.readouterr().err
    assert run("reload", "--status-file", str(tmp_path / "none.json"))[0] == 3
    assert "no running daemon to reload" in capsys.readouterr().err


def test_a_simulation_leaves_the_machines_metrics_port_alone(tmp_path: Path) -> None:
    """`run --sim` with a config at the default listen address (the recommended one) does
    not take 127.0.0.1:9727 from the live daemon; an address the user chose is kept."""
    state = tmp_path / "state"
    code, text = run("run", "--sim", DEFAULT, "--state-dir", str(state), "--quiet")
    assert code == 0, text
    assert not json.loads((state / "status.json").read_text())["metrics"]
    pod = tmp_path / "pod.toml"  # the DaemonSet's address: the same port on every address
    pod.write_text('[metrics]\nlisten = "0.0.0.0:9727"\n')
    code, text = run("run", "--sim", DEFAULT, "--config", str(pod), "--state-dir",
                     str(state), "--quiet")
    assert code == 0, text
    assert not json.loads((state / "status.json").read_text())["metrics"]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[metrics]\nlisten = "127.0.0.1:0"\n')
    code, text = run("run", "--sim", DEFAULT, "--config", str(cfg), "--state-dir",
                     str(state), "--quiet")
    assert code == 0, text
    listen = json.loads((state / "status.json").read_text())["metrics"]
    assert listen.startswith("127.0.0.1:") and listen != "127.0.0.1:9727"  # the port it got


def test_an_oom_no_handler_was_asked_about_says_so() -> None:
    """--bare: no handler is attached, so none "made progress" or failed to: the story
    says none was asked; with a handler that declines it still says none made progress."""
    code, text = run("simulate", DEFAULT, "--bare")
    assert code == 0 and "no handler was asked: the default killer ran; killed db" in text
    assert "no handler made progress" not in text
    code, text = run("simulate", DEFAULT, "--oom-policy", "tmpfs_cleanup@/srv")  # declines
    assert code == 0 and "no handler made progress: the default killer ran" in text


def test_run_sim_picks_the_cgroup_alternative_the_scenario_has(tmp_path: Path) -> None:
    """`cgroup = ["/kubepods.slice", "/kubepods"]` (the DaemonSet's ConfigMap) over a
    scenario with /kubepods: the handler attaches there, as the daemon would on a node with
    the cgroupfs driver; the choice is made in the simulated tree, not in this host's."""
    scen = tmp_path / "s.toml"
    scen.write_text('[machine]\nmemory = "1G"\nduration = "2s"\n[[cgroup]]\n'
                    'path = "/kubepods"\n"memory.max" = "100M"\n[[process]]\nname = "p"\n'
                    'cgroup = "/kubepods/pod1/ctr"\nprogram = [ { op = "alloc", kind = "anon",'
                    ' size = "200M" }, { op = "sleep" } ]\n')
    cfg = tmp_path / "c.toml"
    cfg.write_text('[metrics]\nlisten = ""\n[[oom]]\npolicy = "largest_leaf"\n'
                   'cgroup = ["/kubepods.slice", "/kubepods"]\n')
    code, text = run("run", "--sim", str(scen), "--config", str(cfg), "--state-dir",
                     str(tmp_path / "st"), "--json")
    assert code == 0, text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    attach = [r for r in records if r["event"] == "attach" and r["ops"] == "oom"]
    assert [r["cgroup"] for r in attach] == ["/kubepods"], attach
    ooms = [r for r in records if r["event"] == "oom"]
    assert ooms and ooms[0]["policy"] == "largest_leaf", ooms


def test_a_dry_run_says_why_no_handler_was_asked() -> None:
    """After a would-be kill, the runtime holds declared OOMs for the post-action delay
    (a dry run's victim never exits: it is taken as gone at once, QA F24) instead of
    asking the handlers again; the dry run's story keeps that note (it dropped every
    note, leaving "the default killer would run" with nothing it would kill)."""
    code, text = run("run", "--sim", str(REPO / "examples" / "psi_victim.toml"), "--dry-run")
    assert code == 0, text
    assert "would kill pid 101 (indexer)" in text
    held = ("(post-action delay: no declared OOM for 1.8 s more, the pressure of the last "
            "kill is still falling; further declared OOMs until then are not logged)")
    assert held in text
    # one record per hold: the would-be kills and the holds alternate
    story = [line for line in text.splitlines() if "would kill pid" in line or held in line]
    assert all(a != b for a, b in itertools.pairwise(
        "kill" if "would kill" in line else "held" for line in story)), story
    assert "still exiting" not in text
    assert "(oom_badness chose" not in text  # the would-kill lines say it


def test_a_simulation_says_its_incident_files_went_with_it(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """run --sim without --state-dir keeps its files in a private directory removed at the
    end: the incident lines it printed name files that are gone, and it says so."""
    code, text = run("run", "--sim", DEFAULT)
    assert code == 0 and "(oomkit replay it)" in text, text
    err = capsys.readouterr().err
    assert "removed with this run: --state-dir DIR keeps them" in err


SLOW_EXIT = """[machine]
memory = "4G"
duration = "8s"
exit_latency = "3s"
[[cgroup]]
path = "/svc"
"memory.max" = "1G"
"memory.swap.max" = "0"
[[process]]
name = "api"
cgroup = "/svc/api"
program = [ { op = "alloc", kind = "anon", size = "200M" },
            { op = "alloc", kind = "anon", size = "100M", rate = "20M/s" }, { op = "sleep" } ]
[[process]]
name = "leaker"
cgroup = "/svc/leaker"
start = "1s"
program = [ { op = "alloc", kind = "anon", size = "2G", rate = "300M/s" }, { op = "sleep" } ]
"""


def test_an_oom_that_killed_nobody_does_not_say_the_default_killer_ran(tmp_path: Path
                                                                        ) -> None:
    """A declared OOM while the last victim still exits kills nobody; its story said
    "no handler was asked: the default killer ran" above the note saying no kill (QA G4)."""
    scen = tmp_path / "slow_exit.toml"
    scen.write_text(SLOW_EXIT)
    code, text = run("run", "--sim", str(scen), "--config", PACKAGED_CONFIG,
                     "--state-dir", str(tmp_path / "st"))
    assert code == 0, text
    lines = text.splitlines()
    waits = [i for i, line in enumerate(lines) if "is still exiting: waiting" in line]
    assert waits, text  # the scenario makes such an OOM
    for i in waits:
        assert lines[i - 1].strip() == "no handler was asked, nobody killed", lines[i - 1]
    assert "killed leaker" in text  # the one kill is still told as one


def test_a_quiet_simulation_does_not_point_at_incident_lines_it_did_not_print(
        capsys: pytest.CaptureFixture[str]) -> None:
    """-q prints no events, so no incident file was "named above" (QA G9)."""
    code, text = run("run", "--sim", DEFAULT, "--quiet")
    assert code == 0 and "(oomkit replay it)" not in text, text
    err = capsys.readouterr().err
    assert "note: the incident files of this run were in " in err, err
    assert "named above" not in err
