"""kill_cause and oom_score_adj at the ends of its range (QA Q3, Q4), through the
recommended config as `oomkit run --sim` runs it.

- 1000 (OOM_SCORE_ADJ_MAX, "kill me first", the kubelet's BestEffort pods): a steady
  cgroup whose chosen task has it goes before a steady one at 0, however busy or large;
  not before a cause (a cgroup that grows fast refills what the idle task frees).
- -1000: never killed; a cause made only of such tasks is named as unkillable in the
  kill message, and a declared OOM with nothing else left says who holds the memory.
"""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import run_with_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "packaging" / "oomkit.toml"

JOB = """\
name = "adj"
[machine]
memory = "8G"
swap = "0"
duration = "{duration}"
seed = 6

[[cgroup]]
path = "/job"
"memory.max" = "1G"
"memory.swap.max" = "0"

[[process]]
name = "cache"
cgroup = "/job/cache"
oom_score_adj = 1000
program = [ {{ op = "alloc", kind = "anon", size = "100M" }}, {{ op = "sleep" }} ]

[[process]]
name = "web"
cgroup = "/job/web"
program = [ {{ op = "alloc", kind = "anon", size = "300M" }}, {{ op = "work", duration = "60s" }} ]

[[process]]
name = "agent"
cgroup = "/job/agent"
oom_score_adj = {agent_adj}
start = "1s"
program = [ {{ op = "alloc", kind = "anon", size = "2G", rate = "50M/s" }}, {{ op = "sleep" }} ]
"""


def _scenario(tmp_path: Path, agent_adj: int, duration: str = "30s") -> Path:
    path = tmp_path / "adj.toml"
    path.write_text(JOB.format(agent_adj=agent_adj, duration=duration))
    return path


def test_an_idle_task_at_1000_goes_before_a_busy_service_at_0(tmp_path: Path) -> None:
    # The leak is the user's unkillable agent: no cause can be killed, so the kill is
    # among the steady cgroups, and there the 1000 goes first, as the kernel takes it.
    out = run_with_config(_scenario(tmp_path, -1000), CONFIG, tmp_path)
    first = out.ooms[0]["victims"]
    assert [v["comm"] for v in first] == ["cache"], out.killed
    assert out.killed_at("web") > out.killed_at("cache")
    assert out.alive("agent")
    reason = first[0]["reason"]
    # the rule that decided, in words; the larger runner-up that lost to it; the cause
    # that could not be killed, by name
    assert "cache has oom_score_adj 1000, kill me first" in reason, reason
    assert "runner-up /job/web: steady, larger but ranked below it by the rule above" in reason
    assert re.search(r"cause /job/agent \(grows \d+(\.\d)?M/s\) has only oom_score_adj -1000 "
                     r"tasks", reason), reason
    # later, with only the agent left: the declared OOM says who holds the memory
    notes = [e.get("note", "") for e in out.ooms if e["constraint"] == "DECLARED"]
    held = [n for n in notes if "no killable task of at least 4M" in n]
    assert held, notes
    assert re.search(r"the largest killable has 0B; agent \(pid \d+, 1(\.0)?G\) is "
                     r"oom_score_adj -1000", held[0]), held[0]
    assert not [n for n in notes if "the largest has" in n or "4194304" in n]


def test_a_growing_cause_at_0_still_goes_before_a_steady_task_at_1000(tmp_path: Path) -> None:
    # The same with the agent killable: it grows 50M/s, 1/20 of /job a second; killing
    # the 100M cache would buy 2 s and the agent would die next anyway.
    out = run_with_config(_scenario(tmp_path, 0, "20s"), CONFIG, tmp_path)
    first = out.ooms[0]["victims"]
    assert [v["comm"] for v in first] == ["agent"], out.killed
    assert out.alive("cache", "web")
    reason = first[0]["reason"]
    assert "the cgroup grows" in reason and "over 1/128 of /job's limit a second" in reason
    assert "runner-up /job/cache: steady, cache at oom_score_adj 1000" in reason, reason
