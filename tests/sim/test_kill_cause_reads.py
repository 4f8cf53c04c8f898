"""kill_cause reads each cgroup's memory.stat once per decision: the score, the rates,
what the cgroup added and the kill message share one read (a live read is a file of ~50
lines per cgroup, on a machine short of memory). K37 made 25 reads of 5 cgroups' stat per
decision before they were passed through, 5 after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oomkit.policies import cause, kill_cause

from .conftest import run_with_config

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "cases"


@pytest.mark.parametrize("case", ["k37_slow_leak_pushes_idle_app_to_swap",
                                  "k45_workers_swap_out_the_desktop",
                                  "k08_leak_in_slice_protected_sibling"])
def test_one_stat_read_per_cgroup_per_decision(case: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    init = cause.Stat.__init__

    def counting(self: cause.Stat, cg: Any) -> None:
        reads.append(cg.id)
        init(self, cg)

    decisions: list[list[int]] = []
    handle = kill_cause.KillCause.handle_out_of_memory

    def counted(self: kill_cause.KillCause, ctx: Any, oc: Any) -> bool:
        start = len(reads)
        try:
            return handle(self, ctx, oc)
        finally:
            decisions.append(reads[start:])

    monkeypatch.setattr(cause.Stat, "__init__", counting)
    monkeypatch.setattr(kill_cause.KillCause, "handle_out_of_memory", counted)
    o = run_with_config(CASES / f"{case}.toml", REPO / "packaging" / "oomkit.toml", tmp_path)
    assert o.killed and decisions
    for ids in decisions:
        assert ids, "a decision read no statistics at all"
        assert len(ids) == len(set(ids)), f"a cgroup's memory.stat read twice: {ids}"
