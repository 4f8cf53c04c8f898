"""The runtime's rules for declared OOMs after a kill, and handlers waiting for a cgroup."""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path

from oomkit.events import AttachEvent
from oomkit.policies.kill_cgroup import KillCgroup

from .conftest import M, Sim, hold

REPO = Path(__file__).resolve().parents[2]


def test_no_declared_kill_anywhere_while_a_victim_exits() -> None:
    s = Sim(exit_latency_ns=3_000_000_000)
    k = s.kernel
    k.create_cgroup("/a")
    k.create_cgroup("/b")
    k.spawn("big", "/a", hold("300M"))
    k.spawn("small", "/b", hold("20M"))
    s.run(0.1)
    assert k.out_of_memory(k.mem_cgroup("/a")) == 1
    s.run(1)
    # Another cgroup, a second later: the first victim still holds its memory.
    assert k.out_of_memory(k.mem_cgroup("/b")) == 1
    first, second = s.ooms()
    assert [v.comm for v in first.victims] == ["big"]
    assert second.victims == () and "still exiting" in second.note
    s.run(3)
    assert k.out_of_memory(k.mem_cgroup("/b")) == 1
    assert [v.comm for v in s.ooms()[2].victims] == ["small"]
    s.rt.close()


def test_the_post_action_delay_holds_declared_ooms_after_the_exit() -> None:
    s = Sim()
    s.rt.post_action_delay_s = 2.0
    k = s.kernel
    for name, size in (("one", "30M"), ("two", "20M")):
        k.create_cgroup(f"/{name}")
        k.spawn(name, f"/{name}", hold(size))
    s.run(0.1)
    assert k.out_of_memory(None) == 1
    s.run(0.5)  # "one" has exited: the delay starts when that is seen
    assert k.out_of_memory(None) == 1
    assert "post-action delay" in s.ooms()[1].note and s.ooms()[1].victims == ()
    s.run(2.1)
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[2].victims] == ["two"]
    s.rt.close()


def test_a_real_oom_is_not_held_back_by_the_delay() -> None:
    s = Sim()
    s.rt.post_action_delay_s = 60.0
    k = s.kernel
    k.create_cgroup("/a", memory_max=M("50M"), swap_max=0)
    k.create_cgroup("/b")
    k.spawn("keep", "/a", hold("25M"))
    k.spawn("victim", "/b", hold("40M"))
    k.spawn("second", "/a", hold("30M"), start_ns=1_000_000_000)
    s.run(0.1)
    assert k.out_of_memory(None) == 1
    s.run(2)
    assert [e.constraint for e in s.ooms()] == ["DECLARED", "MEMCG"]
    s.rt.close()


def test_a_handler_waits_for_its_cgroup_and_attaches_when_it_appears() -> None:
    s = Sim()
    k = s.kernel
    link = s.rt.attach_oom(KillCgroup(), "/later", wait=True)
    assert not link.attached
    k.create_cgroup("/later", memory_max=M("40M"), swap_max=0)
    assert link.attached and link.cgroup_path == "/later"
    attaches = [e for e in s.events.events if isinstance(e, AttachEvent)]
    assert "does not exist yet" in attaches[0].mechanism
    assert "appeared" in attaches[1].mechanism and attaches[1].cgroup == "/later"
    k.spawn("w", "/later", hold("60M"))
    s.run(1)
    assert s.ooms()[0].policy == "kill_cgroup"
    s.rt.close()


def test_a_declared_oom_kills_nothing_smaller_than_min_victim() -> None:
    s = Sim()
    s.rt.min_victim = 1 << 20
    k = s.kernel
    k.spawn("tiny", "/t", hold("28K"))
    s.run(0.1)
    assert k.out_of_memory(None) == 0
    (event,) = s.ooms()
    assert event.victims == ()
    assert "no killable task of at least 1M (the largest killable has 28K)" in event.note
    k.spawn("big", "/b", hold("8M"))
    s.run(0.1)
    assert k.out_of_memory(None) == 1
    assert [v.comm for v in s.ooms()[1].victims] == ["big"]
    s.rt.close()


def test_a_declared_oom_with_no_task_worth_killing_backs_its_domain_off() -> None:
    """min_victim refuses the kill (a reader stalling on its own page cache has no RSS
    to speak of): the domain's next declared OOMs are skipped for 2, 4, 8 ... s (not
    logged, counted in the next record's note), not one record every trigger window;
    another domain is not held back, and a real OOM never is."""
    s = Sim()
    s.rt.min_victim = M("4M")
    k = s.kernel
    k.create_cgroup("/reader")
    k.create_cgroup("/other")
    k.spawn("tiny", "/reader", hold("1M"))
    k.spawn("big", "/other", hold("40M"))
    s.run(0.1)
    reader = k.mem_cgroup("/reader")
    assert k.out_of_memory(reader) == 0
    assert "no declared OOM of /reader logged for 2 s" in s.ooms()[0].note
    s.run(1)
    assert k.out_of_memory(reader) == 0  # inside the back-off: skipped, no record
    assert len(s.ooms()) == 1
    s.run(1.1)
    assert k.out_of_memory(reader) == 0
    second = s.ooms()[1]
    assert "logged for 4 s (1 skipped since the last record)" in second.note
    assert k.out_of_memory(k.mem_cgroup("/other")) == 1  # its own domain: not held back
    assert [v.comm for v in s.ooms()[2].victims] == ["big"]
    s.rt.close()


def test_the_recommended_config_leaves_a_lone_reader_alone(tmp_path: Path) -> None:
    """examples/thrash.toml under the recommended config: a reader re-reading at random 4x
    its own limit, alone in it, its IO pressure firing every 2 s for a minute. No kill
    could make room for its working set (pressure_guard's _kill_helps: nobody else in
    the domain), so no OOM is declared at all: no record every 2 s (QA F18)."""
    from oomkit.cli import main

    out = tmp_path / "out.json"
    with out.open("w") as f, contextlib.redirect_stdout(f):
        code = main(["run", "--sim", str(REPO / "examples" / "thrash.toml"), "--config",
                     str(REPO / "packaging" / "oomkit.toml"), "--json",
                     "--state-dir", str(tmp_path / "state")])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()
               if line.startswith("{")]
    assert [r for r in records if r.get("event") == "psi"]  # the pressure was there
    ooms = [r for r in records if r.get("event") == "oom"]
    assert ooms == [], [(r["time"], r["note"]) for r in ooms]


def test_the_back_off_ends_when_a_task_worth_killing_appears() -> None:
    s = Sim()
    s.rt.min_victim = M("4M")
    k = s.kernel
    k.create_cgroup("/a")
    k.spawn("tiny", "/a", hold("1M"))
    s.run(0.1)
    a = k.mem_cgroup("/a")
    assert k.out_of_memory(a) == 0
    k.spawn("grown", "/a", hold("30M"))
    s.run(0.5)
    assert k.out_of_memory(a) == 1  # within the back-off, but now there is a victim
    assert [v.comm for v in s.ooms()[1].victims] == ["grown"]
    s.rt.close()


def test_a_dry_run_keeps_deciding_after_a_would_be_kill(tmp_path: Path) -> None:
    """A dry run's would-be victim never exits (QA F24): it must not hold every later
    declared OOM back as "still exiting". examples/psi_victim.toml under the recommended
    config, dry: the indexer "would" die at 8.61 s, nobody dies, the pressure goes on,
    and the same decision is made again once the post-action delay (2 s) has passed."""
    from oomkit.cli import main

    out = tmp_path / "out.json"
    with out.open("w") as f, contextlib.redirect_stdout(f):
        code = main(["run", "--sim", str(REPO / "examples" / "psi_victim.toml"), "--config",
                     str(REPO / "packaging" / "oomkit.toml"), "--json", "--dry-run",
                     "--state-dir", str(tmp_path / "state")])
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()
               if line.startswith("{")]
    ooms = [r for r in records if r.get("event") == "oom"]
    would = [r["time"] for r in ooms if any("(indexer)" in w for w in r.get("would", []))]
    assert len(would) >= 3 and all(b - a >= 2.0 for a, b in itertools.pairwise(would)), would
    assert not any("still exiting" in r["note"] for r in ooms)
    (summary,) = [r for r in records if r["event"] == "summary"]
    assert all(p["status"] != "killed" for p in summary["processes"])



def _throttled(patience: float) -> tuple[Sim, float | None]:
    """A service at a 10M memory.high without swap that wants 200M (f07's bloat), under
    pressure_guard and kill_cause for 10 s: the Sim and when its first OOM came."""
    from oomkit.kernel.sim import Step
    from oomkit.policies.kill_cause import KillCause
    from oomkit.policies.pressure_guard import PressureGuard

    s = Sim(memory="2G", swap="1G")
    k = s.kernel
    k.create_cgroup("/svc", memory_high=M("10M"), swap_max=0)
    k.spawn("bloat", "/svc", (Step("alloc", kind="anon", size=M("200M"), rate=M("50M")),
                              Step("sleep")))
    s.rt.attach_oom(KillCause())
    s.rt.attach_psi(PressureGuard(high_patience=patience))
    first = None
    for _ in range(20):
        s.run(0.5)
        if first is None and s.ooms():
            first = k.clock.now()
    return s, first


def test_a_cgroup_stalled_at_its_own_memory_high_waits_high_patience() -> None:
    """QA G20 / f07: at its memory.high without swap, the service can never get under it:
    it is declared, but only once it has been stalled for high_patience (no progress),
    not at its first PSI window (about 2 s in, as with high_patience 0)."""
    s, first = _throttled(0.0)
    assert first is not None and first < 4.0, first
    s.rt.close()
    s, first = _throttled(6.0)
    assert first is not None and first >= 6.0, first
    assert [v.comm for e in s.ooms() for v in e.victims] == ["bloat"]
    s.rt.close()

