"""The seed's test_psi on the simulator (issue 3 acceptance), and cgroup online/offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from oomkit.events import CgroupOfflineEvent, CgroupOnlineEvent, PsiEventRecord
from oomkit.kernel.sim import Step

from .conftest import M, Sim, hold

REPO = Path(__file__).resolve().parents[2]


def seed_module() -> ModuleType:
    path = REPO / "examples" / "policies" / "seed_test_psi.py"
    spec = importlib.util.spec_from_file_location("seed_test_psi", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_psi_declares_an_oom_on_the_squeezed_cgroup() -> None:
    s = Sim(memory="2G")
    k = s.kernel
    k.create_cgroup("/psi_test/cg1")
    k.create_cgroup("/psi_test/cg2", memory_high=M("40M"), swap_max=0)
    k.spawn("calm", "/psi_test/cg1", (Step("alloc", size=M("10M")),
                                       Step("work", duration_ns=10 * 10**9)))
    k.spawn("hog", "/psi_test/cg2", hold("500M"))
    mod = seed_module()
    psi_ops = mod.SeedTestPsi()
    s.rt.attach_psi(psi_ops)
    s.rt.attach_oom(mod.KillAll(), "/psi_test/cg2")
    s.run(5)
    cg2 = k.mem_cgroup("/psi_test/cg2")
    assert cg2 is not None
    psi_events = [e for e in s.events.events if isinstance(e, PsiEventRecord)]
    assert psi_events and psi_events[0].cgroup == "/psi_test/cg2" and psi_events[0].full
    (oom,) = s.ooms()
    assert oom.constraint == "DECLARED"
    assert oom.constraint_text == "CONSTRAINT_PSI_MEM"
    assert oom.memcg == "/psi_test/cg2"
    assert oom.resolved_by == "handler" and [v.comm for v in oom.victims] == ["hog"]
    # memory.high throttled the hog: usage barely above high, never an OOM of its own.
    assert M("40M") < k.process("hog").peak_rss < M("48M")
    assert cg2.memory_events("high") > 0 and cg2.memory_events("max") == 0
    assert k.process("calm").state == "running" and k.process("calm").work_ns > 4 * 10**9
    # The event comes no earlier than one window after the start (last_event_time = 0).
    assert 1.0 <= psi_events[0].time < 2.0

    # Removing cg1 calls handle_cgroup_offline with its id; a new cgroup, online.
    cg1 = k.mem_cgroup("/psi_test/cg1")
    assert cg1 is not None
    k.process("calm").state = "sleeping"
    k._exit(k.process("calm"), "exited")
    k.remove_cgroup("/psi_test/cg1")
    new = k.create_cgroup("/psi_test/cg3")
    assert psi_ops.offline == [cg1.id]
    assert psi_ops.online == [new.id]
    kinds = [type(e) for e in s.events.events]
    assert CgroupOfflineEvent in kinds and CgroupOnlineEvent in kinds
    s.rt.close()


def test_memory_high_alone_never_ooms() -> None:
    s = Sim(memory="2G")
    k = s.kernel
    k.create_cgroup("/squeeze", memory_high=M("40M"), swap_max=0)
    k.spawn("hog", "/squeeze", hold("500M"))
    s.run(10)
    assert s.ooms() == []
    hog = k.process("hog")
    assert hog.state == "running"
    assert hog.stall_ns > 9 * 10**9  # throttled nearly the whole time
    cg = k.mem_cgroup("/squeeze")
    assert cg is not None
    p = cg.pressure()
    # 100% stall for ~10 s: avg10 climbs like 1 - (1677/2048)^periods (4 periods: 55%).
    assert 50.0 < p.full.avg10 < 70.0 and p.some.total >= p.full.total > 9_000_000


def test_offline_detaches_oom_ops_after_calling_it(sim: Sim) -> None:
    from oomkit import OomContext, OomControl, OomOps

    calls: list[int] = []

    class Watch(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            return False

        def handle_cgroup_offline(self, ctx: OomContext, cgroup_id: int) -> None:
            calls.append(cgroup_id)

    cg = sim.kernel.create_cgroup("/gone")
    link = sim.rt.attach_oom(Watch(), "/gone")
    sim.kernel.remove_cgroup("/gone")
    assert calls == [cg.id]
    assert not link.attached and sim.rt.oom_links == []
