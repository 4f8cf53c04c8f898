"""The other ways to free memory (SPEC section 3 actions): memory_freed only when memory
was released; and cgroups created and removed by scenario steps."""

from __future__ import annotations

import errno

from oomkit import OomContext, OomControl, OomFlags, OomOps, SimKernel
from oomkit.events import CgroupOfflineEvent, CgroupOnlineEvent, EventList, OomEvent
from oomkit.kernel.sim import Step, parse_scenario
from oomkit.runtime import Runtime

from .conftest import M, Sim, hold


class Act(OomOps):
    """Runs one action and records what it returned and whether memory_freed was set."""

    def __init__(self, action: str, arg: object, nbytes: int = 0) -> None:
        self.action, self.arg, self.nbytes = action, arg, nbytes
        self.results: list[tuple[object, bool]] = []

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        if self.action == "remove_file":
            got: object = oc.remove_file(str(self.arg))
        elif self.action == "reclaim":
            cg = oc.kernel.mem_cgroup(str(self.arg))
            assert cg is not None
            got = oc.reclaim(cg, self.nbytes)
        else:
            cg = oc.kernel.mem_cgroup(str(self.arg))
            assert cg is not None
            oc.set_memory_max(cg, self.nbytes or None)
            got = None
        self.results.append((got, oc.memory_freed))
        return True


def tmpfs_box(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/svc", memory_max=M("300M"))
    k.spawn("writer", "/svc", (Step("alloc", kind="shmem", size=M("150M"),
                                    path="/dev/shm/scratch"), Step("exit")))
    k.spawn("worker", "/svc", hold("200M"), start_ns=500_000_000)


def test_remove_file_frees_tmpfs_and_ends_the_oom(sim: Sim) -> None:
    tmpfs_box(sim)
    ops = Act("remove_file", "/dev/shm/scratch")
    sim.rt.attach_oom(ops, "/svc")
    sim.run(3)
    assert ops.results[0] == (M("150M"), True)
    first = sim.ooms()[0]
    assert first.resolved_by == "handler" and first.victims == ()
    assert sim.kernel.process("worker").state == "sleeping"  # it got its 200M
    svc = sim.kernel.mem_cgroup("/svc")
    assert svc is not None and svc.page_state("shmem") == 0


def test_remove_missing_file_is_an_error_and_not_progress(sim: Sim) -> None:
    tmpfs_box(sim)
    ops = Act("remove_file", "/dev/shm/nothing")
    sim.rt.attach_oom(ops, "/svc")
    sim.run(3)
    assert ops.results == []  # it raised (ENOENT)
    assert sim.ooms()[0].resolved_by == "default"
    assert "No such" in (sim.ooms()[0].handlers[0].error or "") or "no such" in (
        sim.ooms()[0].handlers[0].error or "")


def test_reclaim_sets_memory_freed_only_when_it_got_something(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a", memory_max=M("100M"))
    k.create_cgroup("/a/cache")
    k.spawn("reader", "/a/cache", (Step("alloc", kind="file", size=M("60M")), Step("sleep")))
    k.spawn("anon", "/a/heap", hold("60M"), start_ns=200_000_000)
    sim.run(0.1)
    cache = k.mem_cgroup("/a/cache")
    assert cache is not None
    # Nothing to reclaim in an anon-only cgroup without swap: no progress.
    k.create_cgroup("/b")
    k.spawn("b", "/b", hold("10M"))
    sim.run(0.1)
    b_ops = Act("reclaim", "/b", M("5M"))
    link = sim.rt.attach_oom(b_ops, "/b")
    assert k.out_of_memory(k.mem_cgroup("/b")) == 1  # the default killer did it
    assert b_ops.results == [(0, False)]
    link.detach()
    before = cache.page_state("file")
    n = k.reclaim(cache, M("10M"))
    assert n == M("10M") and cache.page_state("file") == before - M("10M")
    assert cache.vm_events("pgsteal") >= M("10M") // 4096


def test_raising_memory_max_is_progress_lowering_is_not(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a", memory_max=M("50M"))
    k.spawn("grower", "/a", hold("80M"))
    ops = Act("set_memory_max", "/a", M("100M"))
    sim.rt.attach_oom(ops, "/a")
    sim.run(1)
    assert ops.results == [(None, True)]
    assert sim.ooms()[0].resolved_by == "handler" and sim.ooms()[0].victims == ()
    assert k.process("grower").state == "sleeping"
    a = k.mem_cgroup("/a")
    assert a is not None and a.memory_max == M("100M") and a.usage() >= M("80M")
    lower = Act("set_memory_max", "/a", M("90M"))
    sim.rt.oom_links[0].detach()
    sim.rt.attach_oom(lower, "/a")
    assert k.out_of_memory(a) == 1
    assert lower.results == [(None, False)]
    assert sim.ooms()[-1].resolved_by == "default"


def test_declared_oom_waits_on_the_lock_when_asked(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/a")
    k.spawn("x", "/a", hold("10M"))
    sim.run(0.1)
    a = k.mem_cgroup("/a")
    assert k.out_of_memory(a, 0, OomFlags.WAIT_ON_OOM_LOCK) == 1
    assert k.out_of_memory(a, -1) == -errno.EINVAL


SCENARIO = """
[machine]
memory = "1G"
duration = "3s"

[[cgroup]]
path = "/late"
create = "1s"
remove = "2s"

[[process]]
name = "p"
cgroup = "/early"
program = [ { op = "sleep" } ]
"""


def test_scenario_cgroups_come_and_go_with_online_offline() -> None:
    kernel = SimKernel.from_scenario(parse_scenario(SCENARIO, "s.toml"))
    events = EventList()
    rt = Runtime(kernel, sink=events)
    kernel.run()
    online = [e for e in events.events if isinstance(e, CgroupOnlineEvent)]
    offline = [e for e in events.events if isinstance(e, CgroupOfflineEvent)]
    assert [(e.cgroup, e.time) for e in online] == [("/late", 1.0)]
    assert [(e.cgroup, e.time) for e in offline] == [("/late", 2.0)]
    assert online[0].cgroup_id == offline[0].cgroup_id
    assert kernel.mem_cgroup("/late") is None
    assert not [e for e in events.events if isinstance(e, OomEvent)]
    rt.close()


def test_kill_cgroup_kills_the_subtree_but_is_not_an_oom_kill(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/job", memory_max=M("100M"))
    k.spawn("a", "/job/x", hold("30M"))
    k.spawn("b", "/job/y", hold("30M"), oom_score_adj=-1000)
    k.spawn("grower", "/job/y", hold("60M"), start_ns=100_000_000)
    k.spawn("outside", "/other", hold("10M"))

    class KillJob(OomOps):
        def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
            assert oc.memcg is not None
            return oc.kill_cgroup(oc.memcg, "the whole job") > 0

    sim.rt.attach_oom(KillJob(), "/job")
    sim.run(1)
    first = sim.ooms()[0]
    assert first.resolved_by == "handler"
    assert sorted(v.comm for v in first.victims) == ["a", "b", "grower"]  # -1000 too
    job = k.mem_cgroup("/job")
    assert job is not None and job.memory_events("oom_kill") == 0
    assert job.memory_events("oom") == 1
    assert k.process("outside").state == "sleeping"


def test_work_does_not_progress_while_the_task_is_stalled(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/h", memory_high=M("40M"), swap_max=0)
    k.spawn("busy", "/h", (Step("alloc", size=M("44M")), Step("work", duration_ns=2 * 10**9),
                           Step("exit")))
    k.spawn("free", "/f", (Step("alloc", size=M("44M")), Step("work", duration_ns=2 * 10**9),
                           Step("exit")))
    sim.run(2)
    busy, free = k.process("busy"), k.process("free")
    assert busy.stall_ns > 10**9 // 2  # throttled over memory.high
    # Stalled time is not work: the throttled one did less, by about its stall.
    assert busy.work_ns + busy.stall_ns <= 2 * 10**9
    assert busy.work_ns < free.work_ns - busy.stall_ns // 2
    sim.run(60)
    assert busy.state == "exited" and free.state == "exited"
    assert busy.work_ns == free.work_ns == 2 * 10**9  # all of it, in the end


def test_a_tmpfs_file_is_held_open_by_its_writer_until_it_exits(sim: Sim) -> None:
    # Unlinking an open tmpfs file frees nothing until its last close: the simulator
    # refuses it (EBUSY) and leaves it out of tmpfs_files, as the live backend does.
    import pytest

    from oomkit.errors import KernelError

    k = sim.kernel
    k.create_cgroup("/svc", memory_max=M("300M"))
    k.spawn("writer", "/svc", (Step("alloc", kind="shmem", size=M("50M"), path="/dev/shm/a"),
                               Step("sleep", duration_ns=2_000_000_000), Step("exit")))
    sim.run(1)
    assert k.tmpfs_files("/dev/shm") == []
    with pytest.raises(KernelError) as err:
        k.remove_file("/dev/shm/a")
    assert err.value.errno == errno.EBUSY
    sim.run(2.5)
    assert k.tmpfs_files("/dev/shm") == [("/dev/shm/a", M("50M"))]
    assert k.tmpfs_files("/dev/shm/a") == [("/dev/shm/a", M("50M"))]
    assert k.tmpfs_files("/dev") == []  # directly in the directory only
    assert k.remove_file("/dev/shm/a") == M("50M")
