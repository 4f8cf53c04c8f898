"""PSI on several CPUs: the field case of a build storm (../shared/field/f04)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oomkit import Runtime, SimKernel
from oomkit.events import EventList
from oomkit.kernel.base import Resource
from oomkit.kernel.sim import load_scenario
from oomkit.policies.psi_declare import PsiDeclare
from oomkit.sim_summary import summarize

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OOMKIT_SHARED", REPO / ".." / "shared"))
F04 = SHARED / "field" / "f04_build_storm_single.toml"
S = 1_000_000_000


@pytest.fixture
def storm() -> SimKernel:
    if not F04.exists():
        pytest.skip(f"field cases not found at {F04.parent} (set OOMKIT_SHARED)")
    return SimKernel.from_scenario(load_scenario(F04))


def test_the_build_storm_shows_full_memory_pressure(storm: SimKernel) -> None:
    """Fourteen tasks on four CPUs: the CPUs without the editor are fully stalled, so the
    machine shows "full" (the report this case comes from saw about 87%); one CPU would
    have shown none while the editor ran."""
    assert storm.machine.cpus == 4
    storm.run(30 * S)
    p = storm.root.pressure(Resource.MEMORY)
    assert p.full.avg10 > 30
    assert p.some.avg10 > p.full.avg10
    assert sorted({storm.process(n).cpu for n in ("ld", "cc1", "cc2", "cc3")}) == [0, 1, 2, 3]


def test_a_full_trigger_policy_ends_the_storm(storm: SimKernel) -> None:
    events = EventList()
    rt = Runtime(storm, sink=events)
    rt.attach_psi(PsiDeclare())  # a "full" trigger, 500 ms in 2 s, on every cgroup
    storm.run()
    rt.close()
    by_name = {p.name: p for p in summarize(storm).processes}
    assert by_name["ld"].status == "killed"
    assert by_name["ld"].killed_at is not None and by_name["ld"].killed_at < 2 + 10
    assert by_name["shell"].status == "sleeping" and by_name["editor"].status == "running"
    assert sum(p.status == "killed" for p in by_name.values()) <= 4
    p = storm.root.pressure(Resource.MEMORY)
    assert p.full.avg10 < 5  # the storm is over


def test_simulate_prints_the_cpu_count_in_its_header(tmp_path: Path) -> None:
    import io

    from oomkit.cli import main

    scen = tmp_path / "s.toml"
    scen.write_text('[machine]\ncpus = 8\nduration = "1s"\n'
                    '[[process]]\nname = "p"\nprogram = [{ op = "sleep" }]\n')
    out = io.StringIO()
    assert main(["simulate", str(scen), "--bare"], out=out) == 0
    assert "machine: 8 CPUs, 1G RAM, no swap" in out.getvalue()
