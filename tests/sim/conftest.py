"""Helpers for simulator tests: build a SimKernel by hand, with a Runtime and its events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oomkit import Runtime, SimKernel
from oomkit.events import EventList, OomEvent
from oomkit.kernel.sim import MachineSpec, Step
from oomkit.units import parse_size


def M(text: str) -> int:
    return parse_size(text)


def hold(size: str, kind: str = "anon") -> tuple[Step, ...]:
    """Allocate size, then sleep forever."""
    return (Step("alloc", kind=kind, size=M(size)), Step("sleep"))


class Sim:
    def __init__(self, memory: str = "1G", swap: str = "0", **kw: int) -> None:
        self.kernel = SimKernel(MachineSpec(memory=M(memory), swap=M(swap), **kw))
        self.events = EventList()
        self.rt = Runtime(self.kernel, sink=self.events)

    def ooms(self) -> list[OomEvent]:
        return [e for e in self.events.events if isinstance(e, OomEvent)]

    def run(self, seconds: float) -> None:
        self.kernel.run(self.kernel.clock.now_ns() + int(seconds * 1e9))


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = Sim()
    yield s
    s.rt.close()


def seed_oom_layout(s: Sim) -> None:
    """The BPF OOM selftest's layout (prog_tests/test_oom.c)."""
    k = s.kernel
    k.create_cgroup("/oom_test", memory_max=M("80M"), swap_max=0)
    for leaf in ("cg1", "cg2", "cg3/cg4", "cg3/cg5"):
        k.create_cgroup(f"/oom_test/{leaf}")
    k.spawn("cg1", "/oom_test/cg1", hold("10M"), oom_score_adj=1000)
    k.spawn("cg2", "/oom_test/cg2", hold("40M"), oom_score_adj=-1000)
    k.spawn("cg4", "/oom_test/cg3/cg4", hold("30M"))
    k.spawn("cg5", "/oom_test/cg3/cg5", hold("20M"), start_ns=500_000_000)
