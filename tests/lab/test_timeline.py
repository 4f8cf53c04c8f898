"""Time series of simulated runs: samples files, plots, the optional matplotlib."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.kernel.sim import SimKernel, load_scenario
from oomkit.lab.contender import Contender, from_policy_text
from oomkit.lab.timeline import perturb, run_timeline
from oomkit.runtime import Runtime
from oomkit.sim_summary import summarize

REPO = Path(__file__).resolve().parents[2]
THRASH = str(REPO / "examples" / "thrash.toml")
DEFAULT = str(REPO / "examples" / "default.toml")
M = 1 << 20


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_samples_file_shows_io_pressure_the_kill_and_the_cache_left(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    code, story = run("simulate", THRASH, "--psi-policy", "thrash_guard", "--samples", str(f),
                      "--sample-interval", "500ms")
    assert code == 0 and "killed reader" in story
    recs = [json.loads(line) for line in f.read_text().splitlines()]
    samples = [r for r in recs if r["event"] == "sample"]
    assert [s["time"] for s in samples[:3]] == [0.0, 0.5, 1.0]
    assert samples[-1]["time"] == 60.0
    ooms = [r for r in recs if r["event"] == "oom"]
    assert len(ooms) == 1 and ooms[0]["victims"][0]["comm"] == "reader"
    kill_t = ooms[0]["time"]
    # Events sit between the samples of their time.
    i = recs.index(ooms[0])
    assert recs[i - 1]["time"] <= kill_t <= recs[i + 1]["time"]
    before = [s for s in samples if s["time"] < kill_t]
    after = [s for s in samples if s["time"] > kill_t + 1]
    io_some = [s["cgroups"]["/thrash"]["psi"]["io"][0] for s in before]
    assert io_some[-1] > 10 and io_some[0] == 0  # IO pressure rose before the kill
    assert max(s["cgroups"]["/thrash"]["psi"]["memory"][0] for s in before) < 1
    assert all(s["procs"] == [] for s in after)
    # The page cache stays charged: the kill freed no file page.
    assert after[-1]["cgroups"]["/thrash"]["file"] == 64 * M
    assert after[-1]["cgroups"]["/thrash"]["usage"] == 64 * M
    assert before[-1]["procs"][0]["comm"] == "reader"


def test_sampling_does_not_change_the_run() -> None:
    scen = load_scenario(DEFAULT)
    kernel = SimKernel.from_scenario(scen)
    rt = Runtime(kernel)
    kernel.run()
    plain = summarize(kernel).to_dict()
    rt.close()
    tl = run_timeline(scen, Contender("kernel"), interval_ns=300_000_000)
    assert json.loads(json.dumps(tl.summary)) == json.loads(json.dumps(plain))
    assert len(tl.samples()) > 10


def test_policy_text_kinds_and_seeds() -> None:
    c = from_policy_text("largest_leaf@/x,thrash_guard")
    assert c.oom == ("largest_leaf@/x",) and c.psi == ("thrash_guard",)
    assert from_policy_text("kernel") == Contender("kernel")
    scen = load_scenario(DEFAULT)
    assert perturb(scen, 0) is scen
    assert perturb(scen, 2) == perturb(scen, 2) != perturb(scen, 3)


def test_plot_png_and_side_by_side(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "t.png"
    code, out = run("simulate", THRASH, "--psi-policy", "thrash_guard", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "t.svg"
    code, out = run("simulate", DEFAULT, "--policy", "kernel", "--policy", "largest_leaf",
                    "--plot", str(svg))
    assert code == 0 and "--- under largest_leaf" in out
    text = svg.read_text()
    assert "<svg" in text and text.count("killed ") >= 2


def test_bad_plot_name_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("simulate", THRASH, "--plot", "out.gif")
    assert code == 2
    assert "must end in .png, .svg or .pdf" in capsys.readouterr().err


def test_missing_matplotlib_exits_2_with_one_line(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from oomkit.cli import main\n"
            f"raise SystemExit(main(['simulate', {THRASH!r}, '--plot', "
            f"{str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "oomkit: --plot needs matplotlib: pip install 'oomkit[plot]' "
        "(or pip install 'matplotlib>=3.8,<4')"]


def test_the_daemon_never_imports_matplotlib() -> None:
    code = ("import sys\nimport oomkit.daemon.service, oomkit.daemon_cli, oomkit.cli\n"
            "print('matplotlib' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_unwritable_plot_is_one_line_before_or_after_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    code, out = run("simulate", THRASH, "--plot", str(tmp_path / "nodir" / "x.png"))
    assert code == 2 and "process  pid" not in out  # refused before the run
    assert capsys.readouterr().err.strip().splitlines() == [
        f"oomkit: --plot {tmp_path / 'nodir' / 'x.png'}: no such directory"]
    (tmp_path / "d.svg").mkdir()  # the directory exists, the write fails
    for argv in (("simulate", THRASH), ("compare", THRASH, "--policy", "kernel",
                                        "--jobs", "1")):
        code, _ = run(*argv, "--plot", str(tmp_path / "d.svg"))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert "d.svg: cannot write: Is a directory" in err[0]


def test_samples_of_several_policies_say_which_run(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    code, _ = run("simulate", DEFAULT, "--policy", "kernel", "--policy", "largest_leaf",
                  "--samples", str(out))
    assert code == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r.get("run") for r in recs} == {"kernel", "largest_leaf"}
    kills = {r["run"]: [v["comm"] for v in r["victims"]] for r in recs
             if r["event"] == "oom"}
    assert kills["kernel"] == ["db"] and "worker1" in kills["largest_leaf"]
    code, _ = run("simulate", DEFAULT, "--samples", str(out))  # one run: lines as before
    assert code == 0 and all("run" not in json.loads(x) for x in out.read_text().splitlines())


def test_one_label_for_the_victims_of_one_oom(tmp_path: Path) -> None:
    """largest_leaf kills the 8 workers of /srv/batch in one OOM: one label, not six boxes
    repeating the reason (and the last two workers unnamed)."""
    pytest.importorskip("matplotlib")
    svg = tmp_path / "g.svg"
    code, _ = run("simulate", DEFAULT, "--oom-policy", "largest_leaf", "--plot", str(svg))
    assert code == 0
    text = svg.read_text()  # matplotlib keeps each text as a comment beside its paths
    assert text.count("killed worker") == 1
    assert "killed worker1 (/srv/batch), worker2 (/srv/batch) +6" in text
