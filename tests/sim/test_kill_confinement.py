"""Kills are confined to the OOM domain (issue 14, item 7): a kill in a sibling memcg
frees nothing where the OOM is, so it is refused, not taken and logged as progress."""

from __future__ import annotations

import pytest

from oomkit import OomContext, OomControl, OomOps
from oomkit.errors import Unkillable

from .conftest import M, Sim, hold


class KillElsewhere(OomOps):
    """Tries to end /a's OOM by killing in /b (the campaign's fault), or all of /b."""

    def __init__(self, whole_cgroup: bool = False) -> None:
        self.whole_cgroup = whole_cgroup
        self.errors: list[str] = []

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        b = oc.kernel.mem_cgroup("/b")
        assert b is not None
        try:
            if self.whole_cgroup:
                oc.kill_cgroup(b)
            else:
                oc.kill_process(b.tasks()[0])
        except Unkillable as exc:
            self.errors.append(str(exc))
        return oc.memory_freed


@pytest.mark.parametrize("whole_cgroup", [False, True])
def test_a_kill_outside_the_oom_domain_is_refused(sim: Sim, whole_cgroup: bool) -> None:
    k = sim.kernel
    k.create_cgroup("/a", memory_max=M("100M"))
    k.create_cgroup("/b", memory_max=M("100M"))
    k.spawn("bystander", "/b", hold("50M"))
    k.spawn("a_big", "/a", hold("60M"))
    k.spawn("a_late", "/a", hold("60M"), start_ns=500_000_000)
    ops = KillElsewhere(whole_cgroup)
    sim.rt.attach_oom(ops, "/a")
    sim.run(2)
    assert ops.errors and "outside the OOM domain /a" in ops.errors[0]
    assert k.process("bystander").state != "killed"
    (oom,) = sim.ooms()
    assert oom.memcg == "/a" and oom.resolved_by == "default"
    assert [v.comm for v in oom.victims] == ["a_big"]  # the kernel's choice, inside /a
