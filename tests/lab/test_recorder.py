"""The flight recorder and the replay, on the simulator (the daemon's sim backend)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.daemon.config import parse_config
from oomkit.errors import ConfigError
from oomkit.kernel.sim import SimKernel, load_scenario
from oomkit.lab.recorder import FlightRecorder, RecorderSettings, prune_incidents
from oomkit.lab.replay import load_incident, to_scenario

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples"

# Three workloads below /app (200M): a and b sit, c grows at 40M/s until /app is full.
THREE = """
name = "three workloads, one grows"
[machine]
memory = "2G"
duration = "8s"
[[cgroup]]
path = "/app"
"memory.max" = "200M"
[[process]]
name = "a"
cgroup = "/app/a"
program = [ { op = "alloc", kind = "anon", size = "30M" }, { op = "sleep" } ]
[[process]]
name = "b"
cgroup = "/app/b"
program = [ { op = "alloc", kind = "anon", size = "40M" }, { op = "sleep" } ]
[[process]]
name = "c"
cgroup = "/app/c"
start = "1s"
program = [ { op = "alloc", kind = "anon", size = "400M", rate = "40M/s" }, { op = "sleep" } ]
"""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def config(d: Path, body: str, recorder: str = "") -> Path:
    cfg = d / "oomkit.toml"
    cfg.write_text(f'[daemon]\nevent_log = "{d}/events.jsonl"\nstatus_file = ""\n'
                   f'state_file = "{d}/restore.json"\n[metrics]\nlisten = ""\n'
                   f"[recorder]\n{recorder}\n{body}")
    return cfg


def test_ring_stays_within_its_size_and_samples_faster_under_pressure() -> None:
    kernel = SimKernel.from_scenario(load_scenario(EX / "default.toml"))
    rec = FlightRecorder(kernel, RecorderSettings(size_bytes=8000, interval_s=5.0,
                                                  pressure_interval_s=0.5))
    delays = []
    for t in range(1, 61):
        kernel.run(until_ns=t * 100_000_000)
        delays.append(rec.sample_once())
        assert rec.nbytes <= 8000
    assert rec.dropped > 0 and len(rec.snapshot()) < rec.samples_taken
    assert json.loads(rec.snapshot()[-1])["time"] == 6.0
    # /srv fills towards its memory.max before the OOM at ~5.3 s: the interval shortens.
    assert delays[0] == 5.0 and 0.5 in delays[40:55]


def test_every_sample_calls_on_sample_and_its_errors_do_not_stop_the_recorder() -> None:
    kernel = SimKernel.from_scenario(load_scenario(EX / "default.toml"))
    rec = FlightRecorder(kernel, RecorderSettings(interval_s=1.0, pressure_interval_s=0.5))
    seen: list[float] = []

    def note(now: float) -> None:
        seen.append(now)
        raise RuntimeError("a broken consumer")

    rec.on_sample = note
    for t in (1, 2):
        kernel.run(until_ns=t * 1_000_000_000)
        rec.sample_once()
    assert seen == [1.0, 2.0] and rec.samples_taken == 2


def test_recorder_config_and_its_errors() -> None:
    cfg = parse_config('[recorder]\nsize = "1M"\ninterval = "2s"\npressure_interval = "200ms"\n')
    assert cfg.recorder == RecorderSettings(1 << 20, 2.0, 0.2, 16, 64)
    assert parse_config("").recorder == RecorderSettings()
    with pytest.raises(ConfigError, match="pressure_interval <= interval"):
        parse_config('[recorder]\ninterval = "1s"\npressure_interval = "2s"\n')
    with pytest.raises(ConfigError, match=r"unknown|not allowed|known"):
        parse_config("[recorder]\nsizes = 1\n")


def test_every_oom_writes_an_incident_and_replay_reaches_the_live_decision(
        tmp_path: Path) -> None:
    scen = tmp_path / "three.toml"
    scen.write_text(THREE)
    cfg = config(tmp_path, '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/app"\n',
                 'interval = "1s"\npressure_interval = "100ms"')
    code, _ = run("run", "--sim", str(scen), "--config", str(cfg), "-q")
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ooms = [r for r in records if r["event"] == "oom"]
    assert len(ooms) == 1 and ooms[0]["victims"][0]["comm"] == "c"
    path = ooms[0]["incident"]
    assert Path(path).parent == tmp_path and Path(path).stat().st_mode & 0o777 == 0o600
    inc = load_incident(path)
    assert inc.header["reason"] == "oom" and inc.header["config"] == str(cfg)
    assert inc.oom is not None and inc.oom["incident"] == path
    code, out = run("events", "--file", str(tmp_path / "events.jsonl"), "--kind", "oom")
    assert code == 0 and f"incident {path}" in out  # the readable form names it too
    times = [s["time"] for s in inc.samples]
    # Every second, then every 100 ms once /app is within 10 % of its memory.max.
    assert times[1] - times[0] == pytest.approx(1.0)
    assert times[-1] - times[-2] == pytest.approx(0.1)
    scenario = to_scenario(inc)
    assert {c.path: c.memory_max for c in scenario.cgroups}["/app"] == 200 << 20
    assert sorted(p.name for p in scenario.processes) == ["a", "b", "c"]

    written = tmp_path / "replay.toml"
    code, out = run("replay", path, "--write-scenario", str(written))
    assert code == 0, out
    assert "same decision as live: yes" in out and "under live config" in out
    assert load_scenario(written).cgroups  # the written TOML is a scenario as it stands

    # What others would have done: the kernel's killer takes the largest task, c too.
    code, out = run("replay", path, "--kernel")
    assert "resolved by default" in out and "replay: killed c (/app/c)" in out
    code, out = run("replay", path, "--oom-policy", "kill_cgroup@/app")
    assert code == 0 and "replay: killed" in out
    # An incident is a scenario for compare too.
    code, out = run("compare", path, "--policy", "kernel", "--config", str(cfg), "--json",
                    "--jobs", "1")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [[v["name"] for v in r["victims"]] for r in rows] == [["c"], ["c"]]


def test_incident_files_go_with_the_rotated_event_log(tmp_path: Path) -> None:
    names = ["incident-20260101T000000.000-1.jsonl", "incident-20260101T000100.000-2.jsonl",
             "incident-20260101T000200.000-3.jsonl"]
    for n in names:
        (tmp_path / n).write_text("{}\n")
    (tmp_path / "other.jsonl").write_text("")
    # The oldest event log kept starts at 00:01:30 UTC: the first incident's line is gone.
    removed = prune_incidents(str(tmp_path), 1767225690.0)
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[2], "other.jsonl"]
    assert prune_incidents(str(tmp_path), None, keep_max=0) == 1


def test_bad_incident_files_are_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"event": "sample", "time": 0, "cgroups": {}, "procs": []}\n')
    assert run("replay", str(bad))[0] == 2
    assert "not an incident file" in capsys.readouterr().err
    bad.write_text('{"event": "incident"}\nnot json\n')
    assert run("replay", str(bad))[0] == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err


def test_an_incident_with_fields_of_the_wrong_kind_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = '{"event": "incident", "machine": {"memory": 1073741824, "swap": 0}}\n'
    sample = ('{"event": "sample", "time": %s, "cgroups": {"/a": {"usage": 1048576}}, '
              '"procs": [{"pid": %s, "comm": "x", "cgroup": "/a", "rss": 1048576}]}\n')
    bad = tmp_path / "incident-x.jsonl"
    for t, pid, why in (("0", '"x"', "invalid literal for int()"),
                        ('"abc"', "7", "could not convert string to float"),
                        ("0", "null", "int() argument must be")):
        bad.write_text(head + sample % (t, pid))
        assert run("replay", str(bad))[0] == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{bad}: a record is not as the recorder writes it" in err[0]
        assert why in err[0]
    bad.write_text(head + sample % ("0", "7"))  # the same shape, well typed, replays
    assert run("replay", str(bad), "--kernel")[0] == 0


def test_replay_says_when_the_oom_was_outside_the_samples(tmp_path: Path) -> None:
    """A kernel OOM in a cgroup no handler watched: the recorder sampled the root and the
    watched /other only, so the replay cannot reach the decision, and says why."""
    inc = tmp_path / "incident-k.jsonl"
    inc.write_text(
        '{"event": "incident", "machine": {"memory": 1073741824, "swap": 0}}\n'
        '{"event": "sample", "time": 0, "cgroups": {"/": {"usage": 104857600}, '
        '"/other": {"usage": 0}}, "procs": []}\n'
        '{"event": "oom", "time": 1, "memcg": "/app", "constraint": "MEMCG", '
        '"resolved_by": "kernel", "policy": "kernel", "victims": [{"pid": 7, '
        '"comm": "python", "cgroup": "/app/c", "rss": 1048576}]}\n')
    code, out = run("replay", str(inc), "--kernel")
    assert code == 0 and "same decision as live: no" in out
    assert "note: /app, /app/c not in the incident's samples" in out


def test_replay_says_when_the_live_config_changed_since(tmp_path: Path) -> None:
    cfg = tmp_path / "oomkit.toml"
    cfg.write_text('[[oom]]\npolicy = "largest_leaf"\n')
    inc = tmp_path / "incident-c.jsonl"
    head = {"event": "incident", "machine": {"memory": 1 << 30, "swap": 0},
            "config": str(cfg), "wall": 1_000_000_000.0}
    sample = {"event": "sample", "time": 0, "cgroups": {"/a": {"usage": 1 << 20}},
              "procs": [{"pid": 7, "comm": "x", "cgroup": "/a", "rss": 1 << 20}]}
    inc.write_text(json.dumps(head) + "\n" + json.dumps(sample) + "\n")
    code, out = run("replay", str(inc))  # the config is newer than the incident (2001)
    assert code == 0 and "under live config" in out
    assert f"note: {cfg} changed after the incident was written" in out
    os.utime(cfg, (900_000_000, 900_000_000))  # older than the incident: as it ran
    code, out = run("replay", str(inc))
    assert code == 0 and "changed after" not in out


def test_an_oom_outside_the_watched_cgroups_still_has_its_processes(tmp_path: Path) -> None:
    """The handler watches /other only; /app's OOM goes to the default killer. The samples
    hold the machine's largest processes, the incident one more sample of /app (its
    limit), and the replay reaches the live decision."""
    scen = tmp_path / "three.toml"
    scen.write_text(THREE + '[[process]]\nname = "idle"\ncgroup = "/other/x"\n'
                    'program = [ { op = "alloc", kind = "anon", size = "5M" }, '
                    '{ op = "sleep" } ]\n')
    cfg = config(tmp_path, '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/other"\n',
                 'interval = "1s"\npressure_interval = "100ms"')
    assert run("run", "--sim", str(scen), "--config", str(cfg), "-q")[0] == 0
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    oom = next(r for r in records if r["event"] == "oom")
    assert oom["memcg"] == "/app" and oom["resolved_by"] == "default"
    assert [v["comm"] for v in oom["victims"]] == ["c"]
    inc = load_incident(oom["incident"])
    before = [s for s in inc.samples if not s.get("after_oom")]
    assert {"/app", "/app/c"}.isdisjoint(before[0]["cgroups"])  # not watched...
    assert {p["comm"] for p in before[-1]["procs"]} >= {"a", "b", "c", "idle"}  # ...but seen
    after = inc.samples[-1]
    assert after.get("after_oom") and after["cgroups"]["/app"]["max"] == 200 << 20
    code, out = run("replay", oom["incident"])
    assert code == 0 and "same decision as live: yes" in out, out
    assert "not in the incident's samples" not in out


def test_record_and_compare_refuse_bad_flags_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, why in ((["record", "--duration", "1s", "--size", "0"], "--size 0: must be more"),
                      (["record", "--duration", "1s", "--out", str(tmp_path / "no" / "x")],
                       "no such directory"),
                      (["replay", "x.jsonl", "--kernel", "--oom-policy", "largest_leaf"],
                       "--kernel and --oom-policy/--psi-policy: give one way"),
                      (["replay", "x.jsonl", "--config", "c.toml", "--psi-policy", "p"],
                       "--config and --oom-policy/--psi-policy: give one way"),
                      (["compare", str(EX / "default.toml"), "--policy", "kernel", "--jobs",
                        "0"], "--jobs 0: at least 1"),
                      (["compare", str(EX / "default.toml"), "--policy", "kernel", "--seeds",
                        "0"], "--seeds 0: at least 1")):
        assert run(*argv)[0] == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err


def test_incidents_of_a_newer_format_or_cut_off_or_empty(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = {"event": "incident", "version": 1, "machine": {"memory": 1 << 30, "swap": 0}}
    sample = {"event": "sample", "time": 0, "cgroups": {"/a": {"usage": 1 << 20}},
              "procs": [{"pid": 7, "comm": "x", "cgroup": "/a", "rss": 1 << 20}]}
    inc = tmp_path / "incident-v.jsonl"
    lines = [json.dumps(head), json.dumps(sample), json.dumps({**sample, "time": 1})]
    inc.write_text("\n".join(lines)[:-20])  # a copy cut off in the middle of the last line
    code, out = run("replay", str(inc), "--kernel")
    assert code == 0 and f"note: {inc}:3: the last line is cut off" in out, out
    code, out = run("compare", str(inc), "--policy", "kernel", "--jobs", "1")
    assert code == 0 and "the last line is cut off" in out
    for version, why in ((2, "incident format version 2, newer than this oomkit reads (1)"),
                         ("1", "incident version '1' is not a format version")):
        inc.write_text(json.dumps({**head, "version": version}) + "\n" + lines[1] + "\n")
        assert run("replay", str(inc))[0] == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    for text, why in (("", "not an incident file"), (lines[0] + "\n", "has no sample"),
                      ("\x00\xff\xfe", "not an incident file")):
        inc.write_bytes(text.encode("latin-1"))
        assert run("replay", str(inc))[0] == 2
        assert why in capsys.readouterr().err
    # In a directory compare skips it with a note instead.
    (tmp_path / "three.toml").write_text(THREE)
    code, out = run("compare", str(tmp_path), "--policy", "kernel", "--jobs", "1")
    assert code == 0 and f"note: skipped {inc}: {inc}: not an incident file" in out, out


def test_an_oom_before_the_first_sample_still_gets_one(tmp_path: Path) -> None:
    from oomkit.events import OomEvent, Victim
    from oomkit.lab.incidents import Incidents

    kernel = SimKernel.from_scenario(load_scenario(EX / "default.toml"))
    kernel.run(until_ns=1_000_000_000)
    errors: list[str] = []
    inc = Incidents(kernel, RecorderSettings(), event_log=str(tmp_path / "events.jsonl"),
                    roots=None, wall=lambda: 1.7e9, defer=lambda _k, job: job(),
                    on_error=errors.append)
    event = OomEvent(1.0, None, "NONE", None, "default", "default",
                     (Victim(1, "x", "/", 0),))
    record = event.to_dict()
    inc.on_record(event, record)  # the recorder never sampled: the daemon's first second
    assert not errors and inc.written == [record["incident"]]
    got = load_incident(record["incident"])
    assert len(got.samples) == 1 and "/" in got.samples[0]["cgroups"]
    assert got.samples[0]["procs"]  # the machine's largest processes


def test_a_victim_that_grew_between_two_samples_is_replayed(tmp_path: Path) -> None:
    """A 10 s idle interval and a leak of a few seconds: the victim is in no sample, only
    in the OOM's line. The replay grows it from the last sample to its rss at the OOM."""
    head = {"event": "incident", "version": 1, "machine": {"memory": 2 << 30, "swap": 0}}
    cgroups = {"/": {"usage": 80 << 20}, "/app": {"usage": 70 << 20, "max": 200 << 20},
               "/app/a": {"usage": 30 << 20}, "/app/b": {"usage": 40 << 20},
               "/app/c": {"usage": 0}}
    procs = [{"pid": 10, "comm": "a", "cgroup": "/app/a", "rss": 30 << 20, "adj": 0},
             {"pid": 11, "comm": "b", "cgroup": "/app/b", "rss": 40 << 20, "adj": 0}]
    oom = {"event": "oom", "time": 16.0, "memcg": "/app", "constraint": "MEMCG",
           "resolved_by": "handler", "policy": "largest_leaf",
           "victims": [{"pid": 12, "comm": "c", "cgroup": "/app/c", "rss": 128 << 20}]}
    inc = tmp_path / "incident-g.jsonl"
    inc.write_text("\n".join(json.dumps(r) for r in (
        head, {"event": "sample", "time": 1.0, "cgroups": cgroups, "procs": procs},
        {"event": "sample", "time": 11.0, "cgroups": cgroups, "procs": procs}, oom)) + "\n")
    for argv in (["--oom-policy", "largest_leaf@/app"], ["--kernel"]):
        code, out = run("replay", str(inc), *argv)
        assert code == 0 and "replay: killed c (/app/c)" in out, out
        assert "same decision as live: yes" in out
        assert "note: c killed live but in no sample" in out


def test_a_victim_sampled_before_it_joined_its_cgroup_replays_where_it_was_killed(
        tmp_path: Path) -> None:
    """Sampled just after its fork: still in its launcher's cgroup, with the launcher's
    oom_score_adj -1000. The OOM's line says where it was killed; the replay puts it there,
    killable."""
    head = {"event": "incident", "version": 1, "machine": {"memory": 1 << 30, "swap": 0}}
    sample = {"event": "sample", "time": 1.0,
              "cgroups": {"/": {"usage": 100 << 20}, "/leak": {"usage": 0}},
              "procs": [{"pid": 5, "comm": "sh", "cgroup": "/", "rss": 40 << 20, "adj": 0},
                        {"pid": 9, "comm": "leaker", "cgroup": "/", "rss": 8 << 20,
                         "adj": -1000}]}
    oom = {"event": "oom", "time": 20.0, "memcg": None, "constraint": "NONE",
           "resolved_by": "handler", "policy": "largest_leaf",
           "victims": [{"pid": 9, "comm": "leaker", "cgroup": "/leak", "rss": 900 << 20}]}
    inc = tmp_path / "incident-s.jsonl"
    inc.write_text("\n".join(json.dumps(r) for r in (head, sample, oom)) + "\n")
    code, out = run("replay", str(inc), "--kernel")
    assert code == 0 and "replay: killed leaker (/leak)" in out, out
    assert "same decision as live: yes" in out


def test_between_idle_samples_a_probe_sees_a_cgroup_fill_fast() -> None:
    """default.toml: /srv (1G) holds 400M at 0.5 s and grows from about 1.5 s. An idle
    interval of 10 s would see none of it; the probe (usage of the root and of the
    cgroups nearest their limit) says when it grew by 5 % of its limit."""
    kernel = SimKernel.from_scenario(load_scenario(EX / "default.toml"))
    rec = FlightRecorder(kernel, RecorderSettings(interval_s=10.0))
    kernel.run(until_ns=500_000_000)
    assert rec.sample_once() == 10.0 and not rec.pressure
    assert [cg.path for cg, _, _ in rec._probes] == ["/", "/srv"]
    kernel.run(until_ns=1_400_000_000)
    assert not rec.probe()
    kernel.run(until_ns=2_000_000_000)
    assert rec.probe()


def test_the_probe_waits_longer_while_every_limit_is_roomy() -> None:
    """The idle daemon's probe: every PROBE_ROOMY_S while each probed cgroup has more than
    half its limit free (default.toml at 0.5 s: /srv holds 400M of 1G), every PROBE_S
    once one has less (it grew to 600M and beyond)."""
    from oomkit.lab.recorder import PROBE_ROOMY_S, PROBE_S

    kernel = SimKernel.from_scenario(load_scenario(EX / "default.toml"))
    rec = FlightRecorder(kernel, RecorderSettings(interval_s=10.0))
    kernel.run(until_ns=500_000_000)
    rec.sample_once()
    assert rec._probe_s == PROBE_ROOMY_S
    kernel.run(until_ns=1_400_000_000)
    assert not rec.probe() and rec._probe_s == PROBE_ROOMY_S
    kernel.run(until_ns=4_000_000_000)
    rec.probe()
    assert rec._probe_s == PROBE_S


def test_a_victim_still_listed_after_the_oom_ends_at_the_oom(tmp_path: Path) -> None:
    """The sample taken after a kernel OOM in an unwatched memcg may still list the victim,
    exiting with rss 0: its growth ends at the OOM's line, not in a free."""
    head = {"event": "incident", "version": 1, "machine": {"memory": 2 << 30, "swap": 0}}

    def sample(t: float, rss: int, after: bool = False) -> dict[str, object]:
        s: dict[str, object] = {
            "event": "sample", "time": t, "cgroups": {"/": {"usage": 300 << 20},
                                                       "/app": {"usage": rss, "max": 100 << 20}},
            "procs": [{"pid": 12, "comm": "c", "cgroup": "/app", "rss": rss, "adj": 0}]}
        if after:
            s["after_oom"] = True
        return s

    oom = {"event": "oom", "time": 4.5, "memcg": "/app", "constraint": "MEMCG",
           "resolved_by": "kernel", "policy": "kernel",
           "victims": [{"pid": 12, "comm": "c", "cgroup": "/app", "rss": 99 << 20}]}
    inc = tmp_path / "incident-a.jsonl"
    inc.write_text("\n".join(json.dumps(r) for r in (
        head, sample(1, 20 << 20), sample(2, 40 << 20), sample(3, 60 << 20),
        sample(4, 80 << 20), sample(5, 0, after=True), oom)) + "\n")
    written = tmp_path / "a.toml"
    code, out = run("replay", str(inc), "--kernel", "--write-scenario", str(written))
    assert code == 0 and "same decision as live: yes" in out, out
    assert '"free"' not in written.read_text()


def test_a_victim_flat_in_the_sample_taken_during_its_oom_keeps_growing(
        tmp_path: Path) -> None:
    """A sample taken while the OOM was being handled (after the OOM's time) shows the
    victim flat; replayed, it goes on at the rate it last grew and reaches the OOM."""
    head = {"event": "incident", "version": 1, "machine": {"memory": 1 << 30, "swap": 0}}
    rss = [100, 300, 500, 700, 700]
    samples = [{"event": "sample", "time": float(t), "cgroups": {"/": {"usage": r << 20}},
                "procs": [{"pid": 9, "comm": "leaker", "cgroup": "/leak", "rss": r << 20,
                           "adj": 0}]} for t, r in enumerate(rss)]
    oom = {"event": "oom", "time": 3.5, "memcg": None, "constraint": "NONE",
           "resolved_by": "handler", "policy": "largest_leaf",
           "victims": [{"pid": 9, "comm": "leaker", "cgroup": "/leak", "rss": 700 << 20}]}
    inc = tmp_path / "incident-f.jsonl"
    inc.write_text("\n".join(json.dumps(r) for r in (head, *samples, oom)) + "\n")
    code, out = run("replay", str(inc), "--kernel")
    assert code == 0 and "same decision as live: yes" in out, out


def _holder_and_grower(tmp_path: Path, with_anon: bool) -> str:
    """/app/a: an idle holder whose rss (36M) counts 10M of interpreter file pages its
    memcg (anon 26M) was not charged for; /app/b grows 10M per second."""
    mib = 1 << 20
    lines = [{"event": "incident", "machine": {"memory": 1 << 30, "swap": 0}}]
    for t in range(3):
        grown = (10 + 10 * t) * mib
        cgs = {"/": {"usage": 200 * mib},
               "/app": {"usage": 26 * mib + grown, "max": 64 * mib},
               "/app/a": {"usage": 26 * mib, "anon": 26 * mib, "file": 0},
               "/app/b": {"usage": grown, "anon": grown, "file": 0}}
        procs = [{"pid": 10, "comm": "holder", "cgroup": "/app/a", "rss": 36 * mib},
                 {"pid": 11, "comm": "grower", "cgroup": "/app/b", "rss": grown + 10 * mib}]
        if with_anon:
            procs[0]["anon"], procs[1]["anon"] = 26 * mib, grown
        lines.append({"event": "sample", "time": t, "cgroups": cgs, "procs": procs})
    path = tmp_path / f"incident-{with_anon}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


@pytest.mark.parametrize("with_anon", [True, False], ids=["anon", "old-rss-only"])
def test_replay_charges_what_the_memcg_charged_not_rss(tmp_path: Path,
                                                       with_anon: bool) -> None:
    """QA G12: rss counts shared file pages the memcg does not charge; replayed as anon
    they filled /app early, with the idle holder the bigger. Samples with ``anon`` give
    it per process; older ones have rss cut to the cgroup's memory.stat anon."""
    from oomkit.lab.replay import scenario_toml

    text = scenario_toml(load_incident(_holder_and_grower(tmp_path, with_anon)))
    holder = text[text.index('name = "holder"'):text.index('name = "grower"')]
    grower = text[text.index('name = "grower"'):]
    assert 'kind = "anon", size = "26M" }' in holder, holder
    assert 'kind = "anon", size = "10M" }' in grower, grower


def test_a_subtree_roots_limit_is_replayed_and_an_unsampled_runner_up_named(
        tmp_path: Path) -> None:
    """QA Q8: a daemon whose cgroup_root is a memcg with a 512M limit records it as "/".
    The replay keeps that limit (else nothing ever OOMs on a machine of 24G), and says that
    the live kill's runner-up, /db, has no process in any sample."""
    mib = 1 << 20
    head = {"event": "incident", "version": 1, "machine": {"memory": 24 << 30, "swap": 0}}
    sample = {"event": "sample", "time": 1.0,
              "cgroups": {"/": {"usage": 100 * mib, "max": 512 * mib},
                          "/app": {"usage": 100 * mib, "anon": 100 * mib, "file": 0},
                          "/db": {"usage": 0}},
              "procs": [{"pid": 7, "comm": "python", "cgroup": "/app", "rss": 100 * mib,
                         "anon": 100 * mib}]}
    grown = dict(sample, time=3.0, cgroups={
        "/": {"usage": 220 * mib, "max": 512 * mib},
        "/app": {"usage": 220 * mib, "anon": 220 * mib, "file": 0}, "/db": {"usage": 0}},
        procs=[{"pid": 7, "comm": "python", "cgroup": "/app", "rss": 220 * mib,
                "anon": 220 * mib}])
    oom = {"event": "oom", "time": 8.0, "memcg": "/", "constraint": "MEMCG",
           "resolved_by": "handler", "policy": "kill_cause",
           "victims": [{"pid": 7, "comm": "python", "cgroup": "/app", "rss": 363 * mib,
                        "reason": "kill_cause: python in /app: the cgroup grows 60M/s ...; "
                                  "runner-up /db: steady; cgroup score 150M (...)"}]}
    inc = tmp_path / "incident-q8.jsonl"
    inc.write_text("\n".join(json.dumps(r) for r in (head, sample, grown, oom)) + "\n")
    text = to_scenario(load_incident(str(inc)))
    (root,) = [c for c in text.cgroups if c.path == "/"]
    assert root.memory_max == 512 * mib
    code, out = run("replay", str(inc), "--kernel")
    assert code == 0 and "replay: killed python (/app)" in out, out
    assert "same decision as live: yes" in out
    assert ("note: the live decision ranked /db second (its runner-up), but no sample "
            "holds a process of it") in out


def test_a_live_config_broken_since_replays_with_the_listed_handlers(tmp_path: Path) -> None:
    """QA Q9: the config file was broken after the incident (a refused reload leaves it
    so): the replay runs the handlers the incident lists, tmpfs_cleanup at "/" beside
    kill_cause system-wide as the recommended config has them, and says why."""
    mib = 1 << 20
    broken = tmp_path / "c.toml"
    broken.write_text("[daemon\n")
    head = {"event": "incident", "version": 1, "machine": {"memory": 1 << 30, "swap": 0},
            "config": str(broken),
            "handlers": [{"ops": "oom", "name": "tmpfs_cleanup", "policy": "tmpfs_cleanup",
                          "cgroup": "/"},
                         {"ops": "oom", "name": "kill_cause", "policy": "kill_cause",
                          "cgroup": None}]}
    sample = {"event": "sample", "time": 1.0,
              "cgroups": {"/": {"usage": 200 * mib}, "/app": {"usage": 40 * mib, "max": 256 * mib},
                          "/app/a": {"usage": 30 * mib, "anon": 30 * mib, "file": 0},
                          "/app/b": {"usage": 10 * mib, "anon": 10 * mib, "file": 0}},
              "procs": [{"pid": 5, "comm": "a", "cgroup": "/app/a", "rss": 30 * mib,
                         "anon": 30 * mib},
                        {"pid": 6, "comm": "b", "cgroup": "/app/b", "rss": 10 * mib,
                         "anon": 10 * mib}]}
    grown = dict(sample, time=3.0, procs=[sample["procs"][0], {  # type: ignore[index]
        "pid": 6, "comm": "b", "cgroup": "/app/b", "rss": 90 * mib, "anon": 90 * mib}])
    oom = {"event": "oom", "time": 9.0, "memcg": "/app", "constraint": "MEMCG",
           "resolved_by": "handler", "policy": "kill_cause",
           "victims": [{"pid": 6, "comm": "b", "cgroup": "/app/b", "rss": 220 * mib}]}
    inc = tmp_path / "incident-q9.jsonl"
    inc.write_text("\n".join(json.dumps(r) for r in (head, sample, grown, oom)) + "\n")
    code, out = run("replay", str(inc))
    assert code == 0, out
    assert "under oom:tmpfs_cleanup@/,oom:kill_cause" in out, out
    assert "replay: killed b (/app/b) (resolved by handler, kill_cause)" in out, out
    assert "note: the live config does not load now (" in out and "not valid TOML" in out
