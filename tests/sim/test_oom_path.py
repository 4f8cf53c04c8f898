"""One test per rule of SPEC section 2 (the OOM path), on the simulator."""

from __future__ import annotations

import errno
import json
import threading
import time
from pathlib import Path

import pytest

from oomkit import (
    AttachError,
    Constraint,
    OomContext,
    OomControl,
    OomFlags,
    OomOps,
    Runtime,
    SimKernel,
    Unkillable,
)
from oomkit.events import DetachEvent, EventList, HandlerErrorEvent, OomEvent
from oomkit.kernel.sim import load_scenario
from oomkit.policies.largest_leaf import LargestLeaf
from oomkit.sim_summary import summarize

from .conftest import M, Sim, hold

REPO = Path(__file__).resolve().parents[2]


class Recorder(OomOps):
    """Returns a fixed answer and records where it was asked."""

    def __init__(self, log: list[str], label: str, answer: bool = False,
                 kill: bool = False) -> None:
        self.log, self.label, self.answer, self.kill = log, label, answer, kill
        self.name = label

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self.log.append(self.label)
        if self.kill:
            LargestLeaf().handle_out_of_memory(ctx, oc)
        return self.answer


def two_level(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a", memory_max=M("100M"))
    k.create_cgroup("/a/b/c")
    k.spawn("holder", "/a/b/c", hold("60M"))
    k.spawn("grower", "/a/b/c", hold("60M"), start_ns=200_000_000)


def test_handlers_called_innermost_first_then_system_wide(sim: Sim) -> None:
    two_level(sim)
    log: list[str] = []
    sim.rt.attach_oom(Recorder(log, "root"), "/")
    sim.rt.attach_oom(Recorder(log, "system"), None)
    sim.rt.attach_oom(Recorder(log, "c"), "/a/b/c")
    sim.rt.attach_oom(Recorder(log, "a"), "/a")
    sim.run(1)
    # The OOM is at /a (its limit): handlers from /a up to the root, then system-wide.
    assert log[:3] == ["a", "root", "system"]
    first = sim.ooms()[0]
    assert first.memcg == "/a"
    assert [h.name for h in first.handlers] == ["a", "root", "system"]
    assert first.resolved_by == "default"


def test_true_without_freeing_is_not_progress(sim: Sim) -> None:
    two_level(sim)
    log: list[str] = []
    sim.rt.attach_oom(Recorder(log, "liar", answer=True), "/a")
    sim.rt.attach_oom(Recorder(log, "killer", answer=True, kill=True), None)
    sim.run(1)
    first = sim.ooms()[0]
    assert [(h.name, h.returned, h.memory_freed) for h in first.handlers] == [
        ("liar", True, False), ("killer", True, True)]
    assert first.resolved_by == "handler" and first.policy == "killer"


def test_first_progress_ends_the_walk(sim: Sim) -> None:
    two_level(sim)
    log: list[str] = []
    sim.rt.attach_oom(Recorder(log, "a", answer=True, kill=True), "/a")
    sim.rt.attach_oom(Recorder(log, "system"), None)
    sim.run(1)
    assert log[0] == "a" and "system" not in log[:1 + log.count("a") - 1]
    assert sim.ooms()[0].handlers[-1].name == "a"
    assert len(sim.ooms()[0].handlers) == 1


def test_second_attach_is_ebusy(sim: Sim) -> None:
    sim.kernel.create_cgroup("/x")
    sim.rt.attach_oom(LargestLeaf(), "/x")
    with pytest.raises(AttachError) as err:
        sim.rt.attach_oom(LargestLeaf(), "/x")
    assert err.value.errno == errno.EBUSY
    sim.rt.attach_oom(LargestLeaf(), None)
    with pytest.raises(AttachError) as err:
        sim.rt.attach_oom(LargestLeaf(), None)
    assert err.value.errno == errno.EBUSY
    # After detach the slot is free again.
    sim.rt.oom_links[0].detach()
    sim.rt.attach_oom(LargestLeaf(), "/x")


class Raises(OomOps):
    name = "raises"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        raise RuntimeError("policy bug")


class Hangs(OomOps):
    name = "hangs"

    def __init__(self) -> None:
        self.release = threading.Event()

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self.release.wait(5)
        return True


@pytest.mark.parametrize("bad", ["raises", "hangs"])
def test_raise_or_timeout_falls_back_to_the_default_killer(bad: str) -> None:
    s = Sim()
    s.rt.budget_s = 0.05
    two_level(s)
    ops: OomOps = Raises() if bad == "raises" else Hangs()
    s.rt.attach_oom(ops, "/a")
    s.run(1)
    first = s.ooms()[0]
    assert first.resolved_by == "default"
    assert first.victims, "the default killer must still kill"
    assert first.handlers[0].returned is None and first.handlers[0].error
    errors = [e for e in s.events.events if isinstance(e, HandlerErrorEvent)]
    assert errors and errors[0].name == bad
    assert errors[0].timeout == (bad == "hangs")
    if isinstance(ops, Hangs):
        ops.release.set()
    s.rt.close()


def test_overrunning_handler_cannot_act_afterwards() -> None:
    s = Sim()
    s.rt.budget_s = 0.05
    two_level(s)
    seen: list[Exception] = []

    class Late(OomOps):
        name = "late"

        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            try:
                time.sleep(0.2)
            except BaseException:  # swallows the interruption (HandlerOverrun), goes on
                pass
            try:
                for cg in oc.kernel.root_mem_cgroup().walk():
                    for t in cg.tasks():
                        oc.kill_process(t)
            except Exception as exc:
                seen.append(exc)
            return True

    s.rt.attach_oom(Late(), "/a")
    s.run(0.5)
    time.sleep(0.4)
    assert seen and type(seen[0]).__name__ == "HandlerExpired"
    s.rt.close()


def test_an_overrunning_call_is_interrupted_at_its_next_python_step() -> None:
    """QA G3: the overrun call gets HandlerOverrun raised in its thread: the code after a
    blocking call never runs, and a pure-Python loop ends."""
    s = Sim()
    s.rt.budget_s = 0.05
    two_level(s)
    after: list[str] = []

    class Late(OomOps):
        name = "late"

        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            time.sleep(0.2)
            after.append("went on")
            return True

    s.rt.attach_oom(Late(), "/a")
    s.run(0.5)
    time.sleep(0.4)
    assert after == []
    s.rt.close()


def test_repeated_failures_detach_the_handler(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a", memory_max=M("50M"))
    # Each grower alone overflows /a: one OOM each, one second apart.
    for i in range(4):
        k.spawn(f"g{i}", "/a", hold("60M"), start_ns=i * 1_000_000_000)
    sim.rt.max_failures = 3
    sim.rt.attach_oom(Raises(), "/a")
    sim.run(5)
    errors = [e for e in sim.events.events if isinstance(e, HandlerErrorEvent)]
    assert [e.failures for e in errors] == [1, 2, 3]
    detach = [e for e in sim.events.events if isinstance(e, DetachEvent)]
    assert detach and detach[0].name == "raises" and "3 failures" in detach[0].reason
    assert all(e.resolved_by == "default" for e in sim.ooms())
    assert len(sim.ooms()) == 4  # the fourth OOM did not ask the detached handler
    assert sim.ooms()[3].handlers == ()


def test_minus_1000_is_never_killed(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a", memory_max=M("50M"))
    k.spawn("precious", "/a", hold("40M"), oom_score_adj=-1000)
    k.spawn("small", "/a", hold("5M"))
    k.spawn("grower", "/a", hold("20M"), start_ns=100_000_000)
    caught: list[Exception] = []

    class KillPrecious(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            for t in k.process("precious").cgroup.tasks():
                if t.comm == "precious":
                    try:
                        oc.kill_process(t)
                    except Unkillable as exc:
                        caught.append(exc)
            return False

    sim.rt.attach_oom(KillPrecious(), "/a")
    sim.run(2)
    assert caught and caught[0].errno == errno.EPERM
    assert k.process("precious").state == "sleeping"
    assert all(v.comm != "precious" for e in sim.ooms() for v in e.victims)


def test_no_second_victim_while_one_is_exiting(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a")
    k.spawn("one", "/a", hold("30M"))
    k.spawn("two", "/a", hold("20M"))
    sim.run(0.1)
    a = k.mem_cgroup("/a")
    assert k.out_of_memory(a) == 1
    assert k.out_of_memory(a) == 1  # same instant: the first victim is still exiting
    first, second = sim.ooms()
    assert [v.comm for v in first.victims] == ["one"]
    assert second.victims == () and "still exiting" in second.note
    assert first.constraint == Constraint.DECLARED.value
    sim.run(0.1)  # the victim exits; now a new OOM may kill again
    assert k.out_of_memory(a) == 1
    assert [v.comm for v in sim.ooms()[2].victims] == ["two"]


def test_oom_group_kills_the_whole_group(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/job", memory_max=M("100M"), oom_group=True)
    k.create_cgroup("/job/w")
    k.spawn("coord", "/job", hold("10M"))
    k.spawn("worker", "/job/w", hold("30M"))
    k.spawn("shield", "/job/w", hold("5M"), oom_score_adj=-1000)
    k.spawn("grower", "/job/w", hold("80M"), start_ns=100_000_000)
    k.spawn("outside", "/other", hold("10M"))
    sim.run(1)
    first = sim.ooms()[0]
    assert sorted(v.comm for v in first.victims) == ["coord", "grower", "worker"]
    job = k.mem_cgroup("/job")
    assert job is not None and job.memory_events("oom_group_kill") == 1
    assert job.memory_events("oom_kill") == 3
    assert k.process("shield").state == "sleeping"  # -1000 survives the group kill
    assert k.process("outside").state == "sleeping"


def test_policy_kill_process_honours_oom_group(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/job", memory_max=M("100M"), oom_group=True)
    k.spawn("a", "/job", hold("30M"))
    k.spawn("b", "/job", hold("30M"))
    sim.run(0.1)

    class KillA(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            job = k.mem_cgroup("/job")
            assert job is not None
            oc.kill_process(next(t for t in job.tasks() if t.comm == "a"))
            return True

    sim.rt.attach_oom(KillA(), "/job")
    assert k.out_of_memory(k.mem_cgroup("/job")) == 1
    assert sorted(v.comm for v in sim.ooms()[0].victims) == ["a", "b"]


def test_oom_lock_and_declared_return_codes(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a")
    k.spawn("x", "/a", hold("10M"))
    sim.run(0.1)
    inner: list[int] = []

    class Reenter(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            inner.append(oc.kernel.out_of_memory(oc.memcg))
            return False

    sim.rt.budget_s = None  # run inline: the lock is held by this very call chain
    sim.rt.attach_oom(Reenter(), "/a")
    a = k.mem_cgroup("/a")
    assert k.out_of_memory(a, 0, OomFlags(0), "CONSTRAINT_PSI_MEM") == 1
    assert inner == [-errno.EBUSY]
    assert sim.ooms()[0].constraint_text == "CONSTRAINT_PSI_MEM"
    assert k.out_of_memory(a, 11) == -errno.EINVAL
    assert k.out_of_memory(a, 0, OomFlags(4)) == -errno.EINVAL


def test_same_scenario_same_event_stream() -> None:
    def stream() -> list[str]:
        scenario = load_scenario(REPO / "examples" / "default.toml")
        kernel = SimKernel.from_scenario(scenario)
        events = EventList()
        rt = Runtime(kernel, sink=events)
        from oomkit.policies.psi_declare import PsiDeclare

        rt.attach_psi(PsiDeclare())
        rt.attach_oom(LargestLeaf(), None)
        kernel.run()
        rt.emit(summarize(kernel))
        out = []
        for e in events.events:
            d = e.to_dict()
            for h in d.get("handlers", []):
                h.pop("duration_us")
            out.append(json.dumps(d, sort_keys=True))
        return out

    a, b = stream(), stream()
    assert a == b
    assert any('"event": "oom"' in line for line in a)


def test_machine_wide_oom_is_system_wide(sim: Sim) -> None:
    s = Sim(memory="100M")
    s.kernel.spawn("a", "/a", hold("60M"))
    s.kernel.spawn("b", "/b", hold("60M"), start_ns=100_000_000)
    s.run(1)
    first = s.ooms()[0]
    assert first.memcg is None and first.constraint == "NONE"
    assert first.totalpages == 100 * 256
    assert [v.comm for v in first.victims] == ["a"]
    isinstance(first, OomEvent)
    s.rt.close()


def test_machine_wide_oom_asks_the_handler_at_the_root_then_the_system_wide_one() -> None:
    s = Sim(memory="100M")
    log: list[str] = []
    s.rt.attach_oom(Recorder(log, "system"), None)
    s.rt.attach_oom(Recorder(log, "root"), "/")
    s.kernel.spawn("a", "/a", hold("60M"))
    s.kernel.spawn("b", "/b", hold("60M"), start_ns=100_000_000)
    s.run(1)
    first = s.ooms()[0]
    assert first.memcg is None
    assert [h.name for h in first.handlers] == ["root", "system"]
    s.rt.close()
