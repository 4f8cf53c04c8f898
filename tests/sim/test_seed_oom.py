"""The seed's test_oom on the simulator (issue 2 acceptance)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from oomkit import OomOps

from .conftest import Sim, seed_oom_layout

REPO = Path(__file__).resolve().parents[2]


def seed_policy() -> OomOps:
    path = REPO / "examples" / "policies" / "seed_test_oom.py"
    spec = importlib.util.spec_from_file_location("seed_test_oom", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ops: OomOps = mod.SeedTestOom()
    return ops


def test_seed_policy_kills_only_cg4(sim: Sim) -> None:
    seed_oom_layout(sim)
    k = sim.kernel
    sim.rt.attach_oom(seed_policy(), "/oom_test")  # declines: passes to system-wide
    sim.rt.attach_oom(seed_policy(), None)  # acts
    sim.run(2)
    ooms = sim.ooms()
    assert ooms, "cg5's allocation must hit /oom_test's limit"
    victims = [v.comm for e in ooms for v in e.victims]
    assert victims == ["cg4"]
    first = ooms[0]
    assert first.resolved_by == "handler"
    assert first.policy == "test_out_of_memory"
    assert [(h.cgroup_id, h.returned, h.memory_freed) for h in first.handlers] == [
        (k.mem_cgroup("/oom_test").id, False, False),  # type: ignore[union-attr]
        (0, True, True),
    ]
    cg4 = k.mem_cgroup("/oom_test/cg3/cg4")
    assert cg4 is not None and cg4.memory_events("oom_kill") == 1
    for other in ("/oom_test/cg1", "/oom_test/cg2", "/oom_test/cg3/cg5"):
        cg = k.mem_cgroup(other)
        assert cg is not None and cg.memory_events("oom_kill") == 0
    assert {p.name: p.state for p in k.procs.values()} == {
        "cg1": "sleeping", "cg2": "sleeping", "cg4": "exited", "cg5": "sleeping"}


def test_without_policy_default_killer_takes_cg1(sim: Sim) -> None:
    seed_oom_layout(sim)
    sim.run(2)
    ooms = sim.ooms()
    assert ooms[0].resolved_by == "default"
    assert [v.comm for v in ooms[0].victims] == ["cg1"]
    # cg2 (-1000) is never chosen, however many OOMs follow.
    assert all(v.comm != "cg2" for e in ooms for v in e.victims)


def test_badness_follows_the_kernel_formula(sim: Sim) -> None:
    seed_oom_layout(sim)
    sim.run(0.2)
    k = sim.kernel
    totalpages = k.oom_totalpages(k.mem_cgroup("/oom_test"))
    assert totalpages == 80 * 256  # memory.max in pages, no swap
    cg1 = k.mem_cgroup("/oom_test/cg1")
    assert cg1 is not None
    (t,) = cg1.tasks()
    pages = t.rss // 4096 + t.swapents + t.pgtables_bytes // 4096
    assert t.oom_badness(totalpages) == pages + 1000 * (totalpages // 1000)
    cg2 = k.mem_cgroup("/oom_test/cg2")
    assert cg2 is not None and cg2.tasks()[0].oom_badness(totalpages) is None
