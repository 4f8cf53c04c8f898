"""Scenario defects found while writing scenarios (issue 12), each pinned."""

from __future__ import annotations

import pytest

from oomkit import Runtime, SimKernel
from oomkit.errors import CgroupGone, ConfigError
from oomkit.events import EventList, OomEvent
from oomkit.kernel.sim import MachineSpec, Step, parse_scenario
from oomkit.policies.psi_declare import PsiDeclare
from oomkit.sim_summary import summarize

from .conftest import M, hold

S = 1_000_000_000


def scenario(body: str) -> str:
    return '[machine]\nmemory = "1G"\n\n' + body


def test_a_process_may_not_start_in_a_cgroup_removed_before() -> None:
    text = scenario('''[[cgroup]]
path = "/job"
"memory.max" = "100M"
remove = "5s"

[[process]]
name = "late"
cgroup = "/job/worker"
start = "6s"
program = [ { op = "sleep" } ]
''')
    with pytest.raises(ConfigError, match=r"s.toml:12: process \"late\", key 'start': starts at 6s "
                       r"in /job/worker, but cgroup /job is removed at 5s"):
        parse_scenario(text, "s.toml")


def test_by_hand_a_removed_cgroup_is_not_made_again() -> None:
    k = SimKernel(MachineSpec(memory=M("1G")))
    k.create_cgroup("/job", memory_max=M("100M"))
    k.spawn("later", "/job", hold("10M"), start_ns=2 * S)
    k.remove_cgroup("/job")
    with pytest.raises(CgroupGone, match="/job was removed"):
        k.spawn("now", "/job/x", hold("10M"))
    k.run(3 * S)
    assert k.mem_cgroup("/job") is None
    later = {p.name: p for p in summarize(k).processes}["later"]
    assert later.status == "not started: cgroup /job was removed"
    k.create_cgroup("/job")  # made again on purpose: fine
    k.spawn("again", "/job", hold("10M"))
    k.run(4 * S)
    assert k.process("again").state == "sleeping"


def test_touching_anon_memory_never_allocated_is_an_error_with_its_line() -> None:
    text = scenario('''[[process]]
name = "p"
program = [
  { op = "alloc", kind = "anon", size = "10M" },
  { op = "touch", kind = "anon", size = "50M", duration = "1s" },
]
''')
    with pytest.raises(ConfigError, match=r"s.toml:8: process \"p\", program step 2 \(touch\), "
                       r"key 'size': touches 50M of anonymous memory but has allocated only "
                       r"10M by then"):
        parse_scenario(text, "s.toml")
    never = scenario('[[process]]\nname = "p"\nprogram = [ { op = "touch", size = "1M" } ]\n')
    with pytest.raises(ConfigError, match="has allocated none by then"):
        parse_scenario(never, "s.toml")


def test_freeing_an_unknown_file_is_an_error_with_its_line() -> None:
    text = scenario('''[[process]]
name = "p"
program = [
  { op = "alloc", kind = "file", size = "10M", path = "/data/a" },
  { op = "free", kind = "file", size = "10M", path = "/data/b" },
]
''')
    with pytest.raises(ConfigError, match=r"s.toml:8: .*step 2 \(free\), key 'path': no step "
                       r"of the scenario allocates or reads /data/b"):
        parse_scenario(text, "s.toml")
    nopath = text.replace(', path = "/data/b"', "")
    with pytest.raises(ConfigError, match=r"key 'path': is required to free file pages"):
        parse_scenario(nopath, "s.toml")
    fine = text.replace("/data/b", "/data/a")
    assert parse_scenario(fine, "s.toml").processes[0].program[1].path == "/data/a"


def test_the_victims_rss_includes_what_it_charged_in_the_tick_that_met_the_limit() -> None:
    k = SimKernel(MachineSpec(memory=M("1G")))
    k.create_cgroup("/box", memory_max=M("100M"))
    k.spawn("leak", "/box", (Step("alloc", size=M("300M"), rate=M("300M")), Step("sleep")))
    events = EventList()
    rt = Runtime(k, sink=events)
    k.run(2 * S)
    rt.close()
    (oom,) = [e for e in events.events if isinstance(e, OomEvent)]
    (victim,) = oom.victims
    assert victim.rss == k.process("leak").peak_rss == M("100M")


def test_one_stall_firing_triggers_on_ancestors_is_one_oom() -> None:
    """psi_declare puts a full trigger on every cgroup and the system: one throttled
    task fires four of them in the same tick, and the first declared OOM's victim ends
    the stall for all: one OOM, one kill."""
    k = SimKernel(MachineSpec(memory=M("1G")))
    k.create_cgroup("/a/b/c", memory_high=M("20M"))
    k.spawn("hog", "/a/b/c", (Step("alloc", size=M("200M")), Step("sleep")))
    events = EventList()
    rt = Runtime(k, sink=events)
    rt.attach_psi(PsiDeclare())
    k.run(10 * S)
    rt.close()
    declared = [e for e in events.events if isinstance(e, OomEvent)]
    assert len(declared) >= 2  # several triggers did fire for the one stall
    s = summarize(k)
    assert (s.ooms, s.kills) == (1, 1)
