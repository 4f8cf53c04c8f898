"""QA Q7: a cause whose kills are refilled goes at once. A service of like workers that
all leak: a kernel OOM takes one worker (as the kernel does), the others take its memory
back within seconds; the third time within REFILL_S the pool goes, not one worker per
real OOM while the machine runs out again and again."""

from __future__ import annotations

from pathlib import Path

from oomkit.policies.kill_cause import REFILL_KILLS

from .conftest import run_with_config

REPO = Path(__file__).resolve().parents[2]

WORKER = """
[[process]]
name = "web{n}"
cgroup = "/srv/web"
start = "1s"
program = [ {{ op = "alloc", kind = "anon", size = "80M" }},
            {{ op = "alloc", kind = "anon", size = "400M", rate = "4M/s" }}, {{ op = "sleep" }} ]
"""

SCENARIO = """
name = "six leaking workers beside a steady database"
[machine]
memory = "1G"
swap = "0"
duration = "90s"
seed = 3
[[process]]
name = "db"
cgroup = "/srv/db"
program = [ { op = "alloc", kind = "anon", size = "300M" }, { op = "work", duration = "90s" } ]
"""


def test_a_pool_whose_kills_are_refilled_goes_at_once(tmp_path: Path) -> None:
    scen = tmp_path / "workers.toml"
    scen.write_text(SCENARIO + "".join(WORKER.format(n=n) for n in range(1, 7)))
    out = run_with_config(scen, REPO / "packaging" / "oomkit.toml", tmp_path)
    assert out.alive("db")
    assert all(not out.alive(f"web{n}") for n in range(1, 7)), out.killed
    # one worker per OOM until REFILL_KILLS kills were refilled, then the rest at once
    per_oom = [len(e["victims"]) for e in out.ooms if e["victims"]]
    assert per_oom[:REFILL_KILLS] == [1] * REFILL_KILLS and len(per_oom) == REFILL_KILLS + 1
    last = out.ooms[-1]["victims"][0]["reason"]
    assert f"a pool of {6 - REFILL_KILLS} like tasks" in last, last
    assert f"{REFILL_KILLS} kills in it in the last 30 s were refilled" in last, last
