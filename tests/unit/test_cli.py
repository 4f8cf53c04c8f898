"""The command line: the readable story, JSON events, and one-line errors with exit 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from oomkit.cli import main

REPO = Path(__file__).resolve().parents[2]
DEFAULT = str(REPO / "examples" / "default.toml")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_default_story_without_and_with_policy() -> None:
    code, bare = run("simulate", DEFAULT, "--bare")
    assert code == 0
    assert "killed db" in bare and "default killer ran" in bare
    code, story = run("simulate", DEFAULT)
    assert code == 0
    assert "resolved by handler largest_leaf" in story
    assert "killed worker1" in story and "killed db" not in story
    assert "process  pid" in story  # the final table


def test_json_events() -> None:
    code, text = run("simulate", DEFAULT, "--json")
    assert code == 0
    events = [json.loads(line) for line in text.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "attach" and kinds[-1] == "summary"
    oom = next(e for e in events if e["event"] == "oom")
    for key in ("time", "memcg", "constraint", "constraint_text", "policy", "resolved_by",
                "victims", "handlers"):
        assert key in oom
    assert oom["policy"] == "largest_leaf" and oom["resolved_by"] == "handler"
    assert set(oom["victims"][0]) >= {"pid", "comm", "cgroup", "rss"}
    assert set(oom["handlers"][0]) >= {"name", "cgroup_id", "returned", "memory_freed",
                                       "duration_us"}


def test_policy_from_file_at_cgroup() -> None:
    seed = REPO / "examples" / "seed_oom.toml"
    pol = REPO / "examples" / "policies" / "seed_test_oom.py"
    code, text = run("simulate", str(seed), "--json",
                     "--oom-policy", f"{pol}:SeedTestOom@/oom_test",
                     "--oom-policy", f"{pol}:SeedTestOom")
    assert code == 0
    ooms = [json.loads(x) for x in text.splitlines() if '"event": "oom"' in x]
    assert [v["comm"] for v in ooms[0]["victims"]] == ["cg4"]


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oomkit.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("setup", "argv", "needle"),
    [
        ("typo", ["simulate", "s.toml"], "s.toml:3: [machine], key 'memroy': unknown key"),
        ("syntax", ["simulate", DEFAULT, "--oom-policy", "p.py:P"],
         "policy file p.py: syntax error at line 1"),
        ("raises", ["simulate", DEFAULT, "--oom-policy", "p.py:P"],
         "policy file p.py: does not import: ZeroDivisionError"),
        ("none", ["simulate", DEFAULT, "--oom-policy", "no_such_policy"],
         "unknown policy 'no_such_policy'"),
        ("none", ["simulate", DEFAULT, "--oom-policy", "oomkit.policies.largest_leaf:Nope"],
         "has no 'Nope'"),
        ("none", ["simulate", DEFAULT, "--psi-policy", "largest_leaf"],
         "LargestLeaf is not a PsiOps subclass (it is an OomOps)"),
        ("none", ["simulate", DEFAULT, "--oom-policy", "largest_leaf@/nowhere"],
         "no such cgroup"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path: Path, setup: str, argv: list[str],
                                         needle: str) -> None:
    if setup == "typo":
        (tmp_path / "s.toml").write_text('[machine]\nmemory = "1G"\nmemroy = "2G"\n')
    elif setup == "syntax":
        (tmp_path / "p.py").write_text("class P(:\n")
    elif setup == "raises":
        (tmp_path / "p.py").write_text("x = 1 / 0\n")
    r = _cli(*argv, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], lines[0]
