"""oomkit.policies.cause and prefs: the domain, the footprint, rates over an interval, the
local score of a cgroup with children, and the shared preferences."""

from __future__ import annotations

import pytest

from oomkit.kernel.base import Cgroup
from oomkit.kernel.sim import Step
from oomkit.policies import cause, prefs
from oomkit.policies.kill_cause import KillCause

from .conftest import M, Sim, hold


def test_the_domain_is_the_nearest_cgroup_at_its_limit_else_the_machine() -> None:
    s = Sim()
    k = s.kernel
    k.create_cgroup("/pod", memory_max=M("64M"), swap_max=0)
    k.create_cgroup("/pod/ctr")
    k.create_cgroup("/free")
    k.spawn("near", "/pod/ctr", hold("62M"))
    k.spawn("elsewhere", "/free", hold("10M"))
    s.run(0.5)
    assert cause.domain_of(k.mem_cgroup("/pod/ctr")) == k.mem_cgroup("/pod")
    assert cause.domain_of(k.mem_cgroup("/free")) is None
    assert cause.domain_of(None) is None
    s.rt.close()


def test_footprint_leaves_out_the_cache_reclaim_can_drop() -> None:
    s = Sim()
    k = s.kernel
    k.spawn("mixed", "/m", (Step("alloc", kind="anon", size=M("30M")),
                            Step("alloc", kind="file", size=M("50M"), path="/data"),
                            Step("sleep")))
    s.run(0.5)
    cg = k.mem_cgroup("/m")
    assert cg.usage() >= M("80M")
    assert M("30M") <= cause.footprint(cg) < M("32M")
    s.rt.close()


def test_rates_are_over_at_least_the_minimum_interval_even_right_after_a_sample() -> None:
    s = Sim()
    k = s.kernel
    k.spawn("grow", "/g", (Step("alloc", kind="anon", size=M("500M"), rate=M("100M")),
                           Step("sleep")))
    act = cause.Activity(min_interval_s=1.0)
    cg = k.mem_cgroup("/g")
    act.note(cg, k.clock.now())
    s.run(1.5)
    act.note(cg, k.clock.now())  # a fresh sample...
    s.run(0.1)
    r = act.rates(cg, k.clock.now())  # ...yet the rate is over the older one
    assert r.interval_s >= 1.5 and r.growth >= M("150M")
    s.rt.close()


def test_a_cgroup_with_tasks_and_children_scores_only_its_own() -> None:
    s = Sim()
    k = s.kernel
    k.spawn("parent_task", "/p", hold("20M"))
    k.spawn("child_task", "/p/c", hold("200M"))
    s.run(0.5)
    act = cause.Activity()
    now = k.clock.now()
    parent = cause.cause_score(k.mem_cgroup("/p"), act, now, False)
    child = cause.cause_score(k.mem_cgroup("/p/c"), act, now, False)
    assert parent < M("25M") and child >= M("200M")
    s.rt.close()


def test_preferences_by_glob_and_comm() -> None:
    s = Sim()
    k = s.kernel
    k.spawn("sshd", "/system.slice/ssh.service", hold("300M"))
    k.spawn("db", "/system.slice/db.service", hold("200M"))
    k.spawn("tool", "/user.slice/tool", hold("100M"))
    s.run(0.5)
    p = prefs.Preferences.of(protect=["/system.slice/db.service"], avoid_comm="^sshd$",
                             prefer=["/user.slice/*"])
    assert p.cgroup(k.mem_cgroup("/system.slice/db.service")) is prefs.OMIT
    assert p.cgroup(k.mem_cgroup("/user.slice/tool")) == prefs.PREFER
    (sshd,) = k.mem_cgroup("/system.slice/ssh.service").tasks()
    assert p.task(sshd) == prefs.AVOID
    # kill_cause with these: the preferred small tool before the avoided big sshd
    # no_cause_wait=0: nothing grows here, a declared OOM takes the largest at once
    ops = KillCause(protect=["/system.slice/db.service"], avoid_comm="^sshd$",
                    prefer=["/user.slice/*"], no_cause_wait=0)
    s.rt.attach_oom(ops)
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[0].victims] == ["tool"]
    s.rt.close()


def test_a_swarm_of_tasks_each_under_min_victim_dies_together_protected_ones_live() -> None:
    s = Sim(memory="1G")
    k = s.kernel
    k.create_cgroup("/user/session")
    k.create_cgroup("/user/app")
    k.spawn("app", "/user/app", hold("100M"))
    k.spawn("sshd", "/user/session", hold("2M"))
    for i in range(40):
        k.spawn(f"sh{i}", "/user/session", hold("3M"))
    s.run(0.5)
    s.rt.attach_oom(KillCause(protect_comm="^sshd$", no_cause_wait=0))
    assert k.out_of_memory(None) == 1
    killed = sorted(v.comm for v in s.ooms()[0].victims)
    assert killed == sorted(f"sh{i}" for i in range(40))
    s.rt.close()


def test_tasks_under_min_victim_that_together_are_under_it_too_are_no_swarm() -> None:
    s = Sim(memory="1G")
    k = s.kernel
    k.create_cgroup("/a")
    k.create_cgroup("/b")
    k.spawn("big", "/b", hold("50M"))
    k.spawn("tiny1", "/a", hold("1M"))
    k.spawn("tiny2", "/a", hold("1M"))
    s.run(0.5)
    s.rt.attach_oom(KillCause(no_cause_wait=0))
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[0].victims] == ["big"]
    s.rt.close()


def _note_all(s: Sim) -> None:
    k = s.kernel
    cause.tracker(k).note_tree(k.root_mem_cgroup(), k.clock.now())


def test_a_fast_grower_ranks_above_a_bigger_steady_cgroup() -> None:
    s = Sim(memory="2G")
    k = s.kernel
    k.spawn("steady", "/steady", hold("800M"))
    k.spawn("grower", "/grower", (Step("alloc", kind="anon", size=M("1G"), rate=M("50M")),
                                  Step("sleep")))
    s.run(0.5)
    _note_all(s)
    s.run(1.5)
    act, now = cause.tracker(k), k.clock.now()
    steady = cause.cause_rank(k.mem_cgroup("/steady"), act, now, False)
    grower = cause.cause_rank(k.mem_cgroup("/grower"), act, now, False)
    assert steady[0] > grower[0]  # by size and growth alone the steady one would go
    assert cause.grows(grower[1], M("2G")) and not cause.grows(steady[1], M("2G"))
    s.rt.attach_oom(KillCause())
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[0].victims] == ["grower"]
    s.rt.close()


def test_in_one_cgroup_the_task_that_grows_dies_not_the_biggest() -> None:
    s = Sim(memory="2G")
    k = s.kernel
    k.spawn("server", "/scope", hold("600M"))
    k.spawn("leak", "/scope", (Step("alloc", kind="anon", size=M("1G"), rate=M("40M")),
                               Step("sleep")))
    s.run(0.5)
    _note_all(s)
    s.run(1.2)
    _note_all(s)  # the scope grew: its tasks are sampled from here on
    s.run(1.2)
    growth = cause.tracker(k).task_growth(k.mem_cgroup("/scope"), k.clock.now())
    by_comm = {t.comm: growth[t.pid] for t in k.mem_cgroup("/scope").tasks()}
    assert by_comm["leak"] >= M("30M") and by_comm["server"] < M("1M")
    s.rt.attach_oom(KillCause())
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[0].victims] == ["leak"]
    s.rt.close()


def test_a_cgroup_that_does_not_grow_has_no_task_samples() -> None:
    s = Sim()
    k = s.kernel
    k.spawn("still", "/still", hold("100M"))
    s.run(0.5)
    _note_all(s)
    s.run(1.5)
    _note_all(s)
    assert cause.tracker(k).task_growth(k.mem_cgroup("/still"), k.clock.now()) == {}
    s.rt.close()


def test_growth_that_ended_before_a_gap_in_sampling_is_history_not_a_rate() -> None:
    """QA G1: samples at the daemon's start and again just before the OOM; the JVM took
    its 1.6G in its first second and has only worked since. The rate is over the time
    since the last sample (the older one is further back than RECENT_S), so the JVM does
    not "grow 180M/s" and the leaker, which grows now, dies."""
    s = Sim(memory="3G")
    k = s.kernel
    k.spawn("jvm", "/system/jvm", (Step("alloc", kind="anon", size=M("1600M"),
                                        rate=M("2G")), Step("sleep")))
    k.spawn("leaker", "/user/tool", (Step("alloc", kind="anon", size=M("3G"),
                                          rate=M("150M")), Step("sleep")), start_ns=2_000_000_000)
    _note_all(s)  # the daemon's start: the JVM holds nothing yet
    s.run(6.0)
    _note_all(s)  # one sample late in the run, younger than min_interval_s at the OOM
    s.run(0.3)
    act, now = cause.tracker(k), k.clock.now()
    jvm = act.rates(k.mem_cgroup("/system/jvm"), now)
    leak = act.rates(k.mem_cgroup("/user/tool"), now)
    assert jvm.per_s(jvm.footprint_growth) < M("1M")
    assert leak.per_s(leak.footprint_growth) >= M("100M")
    s.rt.attach_oom(KillCause())
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[0].victims] == ["leaker"]
    s.rt.close()


def test_what_a_slow_leak_added_since_the_long_baseline_marks_it_the_cause() -> None:
    """QA G19: a leak below the fast grower's rate, beside a bigger app that only sits
    (its footprint the same, in RAM or in swap): the leak added most of what was added
    since the long baseline, so it ranks above the bigger steady one."""
    s = Sim(memory="2G", swap="1G")
    k = s.kernel
    k.spawn("idle", "/user/idle", hold("1200M"))
    k.spawn("slow", "/user/slow", (Step("alloc", kind="anon", size=M("2G"), rate=M("10M")),
                                   Step("sleep")), start_ns=3_000_000_000)
    s.run(2.0)  # the idle app has all of its memory
    for _ in range(40):  # a sample a second, as the daemon's recorder takes them
        _note_all(s)
        s.run(1.0)
    act, now = cause.tracker(k), k.clock.now()
    slow, idle = k.mem_cgroup("/user/slow"), k.mem_cgroup("/user/idle")
    assert not cause.grows(cause.cause_rank(slow, act, now, False)[1], M("3G"))
    assert act.added(slow, now) >= M("300M") and act.added(idle, now) < M("16M")
    s.rt.attach_oom(KillCause())
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[0].victims] == ["slow"]
    s.rt.close()


def test_in_the_cause_cgroup_a_task_that_came_since_goes_before_the_one_there_before() -> None:
    """QA G10: a shell that was there at the long baseline, and compilers that came since
    and stopped growing: a compiler dies, though the shell is the largest task."""
    s = Sim(memory="4G")
    k = s.kernel
    k.spawn("shell", "/session.scope", hold("800M"))
    s.run(0.5)
    _note_all(s)  # the long baseline: the shell alone
    for i in range(3):
        k.spawn(f"cc{i}", "/session.scope", hold("400M"),
                start_ns=k.clock.now_ns() + 1_000_000_000)
    k.spawn("other", "/other.scope", hold("300M"))
    s.run(3.0)
    _note_all(s)
    s.run(2.0)  # nothing grows now
    s.rt.attach_oom(KillCause())
    assert k.out_of_memory(None) == 1
    assert next(v.comm for v in s.ooms()[0].victims).startswith("cc")
    s.rt.close()


def test_a_declared_oom_with_no_cause_is_dismissed_until_it_lasts() -> None:
    """QA Q13: the machine declared out of memory while nothing grows, streams or added
    memory: nobody is killed ("no cause found"), the default killer does not run; only
    when such declarations go on for no_cause_wait does the largest steady cgroup go."""
    s = Sim(memory="1G")
    k = s.kernel
    k.spawn("big", "/b", hold("300M"))
    k.spawn("small", "/a", hold("50M"))
    s.run(0.5)
    s.rt.attach_oom(KillCause(no_cause_wait=4.0))
    assert k.out_of_memory(None) == 0
    (first,) = s.ooms()
    assert not first.victims and "no cause found" in first.note
    for _ in range(3):
        s.run(2.0)
        k.out_of_memory(None)
    assert [v.comm for e in s.ooms() for v in e.victims] == ["big"]
    s.rt.close()


class _StatOnly:
    """A cgroup as a live one reads: usage() and memory.stat in one stat() (bytes for
    the sizes, pages for the counters)."""

    def __init__(self) -> None:
        self.id = 7
        self.size = 0
        self.items: dict[str, int] = {}

    def usage(self) -> int:
        return self.size

    def stat(self) -> dict[str, int]:
        return dict(self.items)

    def tasks(self) -> list[object]:
        return []


def test_a_program_mapping_its_files_back_in_is_not_growing_a_leak_is() -> None:
    # The guest's f10 on 6.12: a reader of its own mapped 150M file, thrashing, was up
    # 12.5M/s between two samples (its refaults: 25M/s) and ranked as a grower above
    # the 633M hog that pushed it out.
    reader, leak = _StatOnly(), _StatOnly()
    leak.id = 8
    act = cause.Activity(min_interval_s=1.0)
    reader.size = reader.items["file"] = reader.items["file_mapped"] = M("60M")
    reader.items["workingset_refault_file"] = 1000
    leak.size = leak.items["anon"] = M("60M")
    for cg in (reader, leak):
        act.note(cg, 10.0)  # type: ignore[arg-type]
    reader.size = reader.items["file"] = reader.items["file_mapped"] = M("85M")
    reader.items["workingset_refault_file"] += M("25M") // 4096
    leak.size = leak.items["anon"] = M("85M")
    r, g = (act.rates(cg, 11.0) for cg in (reader, leak))  # type: ignore[arg-type]
    assert r.footprint_growth == 0 and r.refaults == M("25M") // 4096
    assert g.footprint_growth == M("25M")
    assert not cause.grows(r.per_s(r.footprint_growth), M("1G"))
    assert cause.grows(g.per_s(g.footprint_growth), M("1G"))


def test_a_walk_skips_a_cgroup_removed_since_its_parent_listed_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The v2 guest: the daemon died of a walk (a trigger's cgroup looked up by id, the
    # index rescanned) while the bench removed user.slice/... below it.
    from oomkit.errors import CgroupGone

    s = Sim()
    k = s.kernel
    k.spawn("a", "/top/a/x", hold("1M"))
    k.spawn("b", "/top/b", hold("1M"))
    s.run(0.1)
    top = k.mem_cgroup("/top")
    listing = type(top).children

    def children(cg: Cgroup) -> list[Cgroup]:
        if cg.path == "/top/a":
            raise CgroupGone(cg.path)  # removed since /top listed it
        return listing(cg)

    monkeypatch.setattr(type(top), "children", children)
    assert sorted(cg.path for cg in top.walk()) == ["/top", "/top/a", "/top/b"]
    s.rt.close()
