"""Issue 3 acceptance under the kernel's refault rule: a 4x page-cache thrasher stalls a
minute without an OOM; thrash_guard kills it within one trigger window of its first
event; a reader streaming new data (IO pressure, no refaults) is left alone."""

from __future__ import annotations

import itertools

from oomkit import Runtime, SimKernel
from oomkit.events import EventList, OomEvent, PsiEventRecord
from oomkit.kernel.base import Resource
from oomkit.kernel.sim import MachineSpec, Step
from oomkit.policies.thrash_guard import ThrashGuard

from .conftest import M

S = 1_000_000_000


def reader(size: str, seconds: int = 60, again: bool = True,
           pattern: str = "random") -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("1G"), duration_ns=seconds * S))
    assert k.machine.refault_stall == "workingset"  # the default is the kernel's rule
    k.create_cgroup("/thrash", memory_max=M("64M"))
    step = Step("touch", "file", M(size), path="/data/big",
                duration_ns=seconds * S if again else None, pattern=pattern)
    k.spawn("reader", "/thrash", (step, Step("sleep")))
    return k


def test_the_thrasher_stalls_a_minute_without_an_oom() -> None:
    k = reader("256M")
    cg = k.mem_cgroup("/thrash")
    assert cg is not None
    io = []
    for second in range(10, 61, 10):
        k.run(second * S)
        p = cg.pressure(Resource.IO)
        io.append((p.some.total, p.full.total))
    for (s0, f0), (s1, f1) in itertools.pairwise(io):
        assert s1 - s0 > 3_000_000 and f1 - f0 > 3_000_000  # some and full keep climbing
    mem = cg.pressure(Resource.MEMORY)
    assert mem.some.total > 0  # a few refaults are recent enough to count as memory stall
    assert k.ooms == 0 and cg.memory_events("oom") == 0
    assert k.process("reader").state == "running"
    assert cg.vm_events("workingset_refault_file") > 100_000


def test_thrash_guard_kills_it_within_one_window_of_the_first_event() -> None:
    k = reader("256M")
    events = EventList()
    rt = Runtime(k, sink=events)
    rt.attach_psi(ThrashGuard())
    k.run()
    psi = [e for e in events.events if isinstance(e, PsiEventRecord)]
    ooms = [e for e in events.events if isinstance(e, OomEvent)]
    assert psi and ooms
    assert ooms[0].constraint == "DECLARED" and ooms[0].constraint_text == "CONSTRAINT_PSI_THRASH"
    assert [v.comm for v in ooms[0].victims] == ["reader"]
    assert ooms[0].time - psi[0].time <= psi[0].window_us / 1e6
    assert k.process("reader").killed_at is not None
    rt.close()


def test_a_streaming_reader_is_not_thrashing() -> None:
    # 1G read once, front to back: all first reads, IO pressure, no refaults.
    k = reader("1G", seconds=30, again=False, pattern="sequential")
    events = EventList()
    rt = Runtime(k, sink=events)
    rt.attach_psi(ThrashGuard())
    k.run()
    cg = k.mem_cgroup("/thrash")
    assert cg is not None and cg.pressure(Resource.IO).full.total > 1_000_000
    assert cg.vm_events("workingset_refault_file") == 0
    assert [e for e in events.events if isinstance(e, OomEvent)] == []
    rt.close()
