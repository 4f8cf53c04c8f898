"""oomkit compare: contenders over scenarios and seeds, the table, the verdicts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.kernel.sim import load_scenario
from oomkit.lab.verdict import culprits, demand

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_culprit_is_the_largest_demand_among_killable() -> None:
    scen = load_scenario(EX / "seed_oom.toml")
    # cg2 asks for the most (40M) but has oom_score_adj -1000: no killer may take it.
    assert culprits(scen, "/oom_test") == {"cg4"}
    thrash = load_scenario(EX / "thrash.toml")
    assert demand(thrash.processes[0]) == 256 << 20  # a touch working set counts


def test_json_rows_in_input_order_with_bystanders(tmp_path: Path) -> None:
    code, out = run("compare", str(EX / "psi_victim.toml"), str(EX / "seed_oom.toml"),
                    "--policy", "kernel", "--policy", "psi_declare", "--seeds", "2",
                    "--jobs", "2", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(Path(r["scenario"]).stem, r["contender"], r["seed"]) for r in rows] == [
        (s, c, n) for s in ("psi_victim", "seed_oom") for c in ("kernel", "psi_declare")
        for n in (0, 1)]
    pv_kernel, pv_declare = rows[0], rows[2]
    assert pv_kernel["kills"] == 0 and pv_kernel["first_pressure_s"] is not None
    # psi_declare kills where pressure shows: the squeezed web server, not the indexer.
    assert [v["name"] for v in pv_declare["victims"]] == ["web"]
    assert pv_declare["bystanders"] == 1
    seed_kernel = rows[4]
    assert {v["name"]: v["bystander"] for v in seed_kernel["victims"]} == {
        "cg1": True, "cg4": False}
    assert rows[5]["seed"] == 1 and rows[5]["victims"][0]["time"] != rows[4]["victims"][0][
        "time"]  # seed 1 moved the start times


def test_table_directory_notes_and_plot(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text((EX / "default.toml").read_text())
    (tmp_path / "not_a_scenario.toml").write_text("[daemon]\nbudget = '1s'\n")
    code, out = run("compare", str(tmp_path), "--policy", "kernel", "--policy",
                    "largest_leaf", "--jobs", "1")
    assert code == 0
    assert "note: skipped" in out and "not_a_scenario.toml" in out
    (tmp_path / "incident-damaged.jsonl").write_text('{"event": "incident"\n')
    code, out2 = run("compare", str(tmp_path), "--policy", "kernel", "--jobs", "1")
    assert code == 0 and "note: skipped" in out2 and "incident-damaged.jsonl:1: not JSON" in out2
    assert any(line.startswith("a ") and "db*@" in line for line in out2.splitlines())
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("scenario"))
    assert "bystanders" in head and "relief" in head
    assert any(line.startswith("a ") and "kernel" in line and "db*@" in line for line in lines)
    assert any("largest_leaf" in line and "worker1@" in line for line in lines)
    if pytest.importorskip("matplotlib"):
        png = tmp_path / "k.png"
        code, _ = run("compare", str(tmp_path / "a.toml"), "--policy", "kernel",
                      "--plot", str(png), "--jobs", "1")
        assert code == 0 and png.stat().st_size > 1000


def test_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("compare", str(EX / "default.toml"), "--preset", "nosuch")[0] == 2
    assert "--preset nosuch: no " in capsys.readouterr().err
    assert run("compare", str(EX / "default.toml"))[0] == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert run("compare", "/nonexistent.toml", "--policy", "kernel")[0] == 2
    assert run("compare", str(EX / "default.toml"), "--policy", "kernel",
               "--policy", "kernel")[0] == 2
    assert "two contenders" in capsys.readouterr().err


RAISER = '''
from oomkit.ops import OomOps
class Boom(OomOps):
    name = "boom"
    def handle_out_of_memory(self, ctx, oc):
        raise RuntimeError("kaboom")
class BadInit(OomOps):
    name = "badinit"
    def __init__(self):
        raise ValueError("a long message that says exactly why the policy would not start")
'''


def test_table_says_what_a_row_hides(tmp_path: Path) -> None:
    """A handler left out, a handler that raised (the kernel's killer then acts, so the
    row reads like the kernel's) and a policy that failed to start: each is said."""
    pol = tmp_path / "raiser.py"
    pol.write_text(RAISER)
    code, out = run("compare", str(EX / "default.toml"), "--policy", "largest_leaf@/nope",
                    "--policy", f"{pol}:Boom", "--policy", f"{pol}:BadInit", "--policy",
                    "kernel", "--seeds", "2", "--jobs", "1")
    assert code == 0
    assert out.count("note: default under largest_leaf@/nope: largest_leaf@/nope: "
                     "no such cgroup here") == 1
    assert out.count(f"note: default under {pol}:Boom: boom.handle_out_of_memory raised: "
                     "RuntimeError: kaboom (1x)") == 1
    lines = out.splitlines()
    bad = next(line for line in lines if "BadInit" in line and " error " in line)
    assert bad.endswith("exactly why the policy would not start")  # whole, last column
    head = lines[0]
    kernel = next(line for line in lines if " kernel " in line)
    # the error does not widen the kills column: every row lines up with the header
    assert kernel.index("db*@") == head.index("victims")


def test_two_configs_of_one_name_are_named_by_their_paths(tmp_path: Path) -> None:
    """The installed config against a candidate: both are oomkit.toml."""
    cand = tmp_path / "oomkit.toml"
    cand.write_text('[[oom]]\npolicy = "largest_leaf"\n')
    cur = str(REPO / "packaging" / "oomkit.toml")
    code, out = run("compare", str(EX / "default.toml"), "--config", cur, "--config",
                    str(cand), "--jobs", "1", "--json")
    assert code == 0
    assert [json.loads(line)["contender"] for line in out.splitlines()] == [cur, str(cand)]


def test_plot_labels_of_close_kills_do_not_overlap(tmp_path: Path) -> None:
    """default under the recommended config: worker1 at 5.29 s, worker2 at 5.89 s of 25 s;
    two labels there were written over each other, one label names both."""
    pytest.importorskip("matplotlib")
    svg = tmp_path / "c.svg"
    code, out = run("compare", str(EX / "default.toml"), "--config",
                    str(REPO / "packaging" / "oomkit.toml"), "--plot", str(svg), "--jobs", "1")
    assert code == 0 and "worker1@5.29s, worker2@5.89s" in out
    text = svg.read_text()  # matplotlib keeps each text as a comment beside its paths
    assert "<!-- worker1; worker2 -->" in text


SLOW_POLICY = """
import time
from oomkit.policies.largest_leaf import LargestLeaf

class SlowLeaf(LargestLeaf):
    name = "slow_leaf"

    def handle_out_of_memory(self, ctx, oc):
        time.sleep(0.3)  # what a busy host can make of a fast call
        return super().handle_out_of_memory(ctx, oc)
"""


def test_a_call_slowed_by_the_host_is_no_overrun_in_the_lab(tmp_path: Path) -> None:
    """The config gives its handler 100 ms; a call takes 300 ms of wall time (a loaded
    host). Simulated time stands still during a call: the lab's decisions must not depend
    on the host's load, so the call is no overrun and the handler's kill stands."""
    (tmp_path / "slow.py").write_text(SLOW_POLICY)
    cfg = tmp_path / "slow.toml"
    cfg.write_text(f'[daemon]\nbudget = "100ms"\n[[oom]]\npolicy = "{tmp_path}/slow.py:SlowLeaf"\n')
    code, out = run("compare", str(EX / "seed_oom.toml"), "--config", str(cfg), "--json",
                    "--jobs", "1")
    row = json.loads(out.splitlines()[0])
    assert code == 0 and row["kills"] >= 1 and "notes" not in row, row


def test_the_culprit_is_a_job_not_the_largest_process() -> None:
    """default.toml: the batch job asks for 600M across eight workers, the database 400M
    alone. The batch is the culprit (its description says so): largest_leaf killing it
    takes no bystander, the kernel's killer taking the database takes one."""
    scen = load_scenario(EX / "default.toml")
    guilty = culprits(scen, None)
    assert "db" not in guilty and {f"worker{i}" for i in range(1, 9)} <= guilty
    code, out = run("compare", str(EX / "default.toml"), "--policy", "kernel", "--policy",
                    "largest_leaf", "--jobs", "1", "--json")
    assert code == 0
    kernel, leaf = (json.loads(line) for line in out.splitlines())
    assert [v["name"] for v in kernel["victims"]] == ["db"] and kernel["bystanders"] == 1
    assert leaf["kills"] == 8 and leaf["bystanders"] == 0


def test_a_config_contender_runs_as_the_daemon_would() -> None:
    """--config runs the config's [daemon] rules for declared OOMs too (min_victim): the
    recommended config leaves examples/thrash.toml's lone reader alone, as `run --sim`
    with it does; compare killed it."""
    code, out = run("compare", str(EX / "thrash.toml"), "--config",
                    str(REPO / "packaging" / "oomkit.toml"), "--jobs", "1", "--json")
    assert code == 0
    (row,) = (json.loads(line) for line in out.splitlines())
    assert row["kills"] == 0 and row["victims"] == []
