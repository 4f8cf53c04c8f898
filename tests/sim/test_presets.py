"""Each preset over its example (examples/preset_*.toml) does what the daemon it mirrors
does; and the rules of each, one by one, on small machines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from oomkit.kernel.base import Constraint, Resource
from oomkit.kernel.sim import Step
from oomkit.ops import OomContext, OomControl
from oomkit.policies import prefs, sysmem
from oomkit.policies.earlyoom import Earlyoom, EarlyoomWatch
from oomkit.policies.lmkd import Lmkd, LmkdWatch
from oomkit.policies.oomd import PLUGINS, Oomd
from oomkit.policies.systemd_oomd import SystemdOomd, SystemdOomdWatch

from .conftest import M, Sim, hold, run_with_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "packaging" / "presets"


def _text(e: dict[str, Any]) -> str | None:
    """A declared OOM's constraint text; the [system] watch's, which words what it saw
    ("MemAvailable 98M, min 102M (fill ...)"), cut to its first word."""
    text = e["constraint_text"]
    if e["constraint"] == "NONE" and text is not None:
        return str(text).split()[0]
    return text if text is None else str(text)


@pytest.mark.parametrize(("preset", "kills", "before"), [
    # earlyoom acts at 10 %/10 % (55.1 s), before the kernel runs out (56.37 s): its
    # poll must keep up with a 40M/s fill (QA F3: a 2 s poll left it to the kernel). The
    # daemon's [system] watch, which the preset sets to the same 10 %/10 % and which the
    # simulator runs as live (QA Q1), looks on earlyoom's own timer and 100 ms ahead of
    # the fill: its system-wide OOM (constraint NONE, the text says what the watch saw)
    # comes first, at 55.09 s.
    ("earlyoom", [("MemAvailable", "earlyoom_kill", ["browser"])], 55.7),
    ("systemd-oomd", [("CONSTRAINT_OOMD_PRESSURE", "systemd_oomd_kill", ["churn"])], 90),
    ("oomd", [("CONSTRAINT_OOMD_PRESSURE", "oomd_kill", ["churn"])], 90),
    # Both cached apps, the heavier band first; then nobody is at 800 or above and lmkd
    # kills nothing more at MEDIUM: the foreground app lives (lmkd.cpp
    # find_and_kill_process returns 0; no kernel-style killer stands behind a level).
    ("lmkd", [("CONSTRAINT_LMKD_MEDIUM", "lmkd_kill", ["cached_b"]),
              ("CONSTRAINT_LMKD_MEDIUM", "lmkd_kill", ["cached_a"])], 10),
])
def test_preset_kills_exactly_its_own_victims(
        preset: str, kills: list[tuple[str, str, list[str]]], before: float,
        tmp_path: Path) -> None:
    """Every kill of the run, in order, made by the preset's own handler on its own
    declared OOM: a victim of the runtime's default killer is a failure, as is any
    victim beyond those listed."""
    o = run_with_config(REPO / "examples" / f"preset_{preset}.toml",
                        PRESETS / f"{preset}.toml", tmp_path)
    made = [(_text(e), e["policy"], [v["comm"] for v in e["victims"]])
            for e in o.ooms if e["victims"]]
    assert made == kills, o.ooms
    assert all(e["resolved_by"] == "handler" for e in o.ooms if e["victims"])
    assert o.killed == [name for _, _, names in kills for name in names]
    assert o.killed_at(kills[-1][2][-1]) < before


def test_earlyoom_and_systemd_oomd_part_ways_without_swap(tmp_path: Path) -> None:
    """examples/preset_earlyoom_noswap.toml: earlyoom's rule (MemAvailable <= 10 %, no
    swap = 0 % free) kills the leak before the kernel runs out; systemd-oomd's (swap used
    > 90 %, or 60 % "full" pressure for 30 s) never fires, and the default killer ends it
    later, on the daemon's [system] watch at its default 5 % (the preset does not change
    it: 102M later at 40M/s, 2.5 s; before QA Q1 the simulator left that to the kernel's
    own OOM, 3 s later still) (QA F3: the two presets' rows were the same). Nothing stalls in this
    anonymous fill, so what looks first is the daemon's [system] watch at the preset's
    10 % (a system-wide OOM, its text what the watch saw, QA Q1), earlyoom_kill choosing."""
    example = REPO / "examples" / "preset_earlyoom_noswap.toml"
    (tmp_path / "eo").mkdir()
    (tmp_path / "sd").mkdir()
    eo = run_with_config(example, PRESETS / "earlyoom.toml", tmp_path / "eo")
    sd = run_with_config(example, PRESETS / "systemd-oomd.toml", tmp_path / "sd")
    assert [(e["constraint"], _text(e), e["policy"]) for e in eo.ooms] == [
        ("NONE", "MemAvailable", "earlyoom_kill")]
    assert [(e["constraint"], e["resolved_by"]) for e in sd.ooms] == [("NONE", "default")]
    assert eo.killed == sd.killed == ["leak"]
    assert eo.killed_at("leak") + 2 < sd.killed_at("leak")


def declared(sim: Sim, text: str, memcg: str | None = None) -> OomControl:
    k = sim.kernel
    cg = k.mem_cgroup(memcg) if memcg else None
    return OomControl(k, cg, 0, Constraint.DECLARED, text, k.oom_totalpages(cg))


def chosen(ops: object, oc: OomControl) -> list[str]:
    assert ops.handle_out_of_memory(OomContext(0), oc)  # type: ignore[attr-defined]
    return sorted(v.comm for v in oc.victims)


# -- systemd-oomd, rule by rule (its preset cannot meet the real daemon: that needs systemd
#    as init) ------------------------------------------------------------------------------


def test_systemd_oomd_swap_kills_the_cgroup_using_most_swap_whole() -> None:
    s = Sim(memory="256M", swap="512M")
    k = s.kernel
    k.spawn("big_resident", "/a.service", hold("150M"))
    k.spawn("swapper1", "/b.service", hold("200M"))
    k.spawn("swapper2", "/b.service", hold("100M"))
    s.run(1)
    swap = {cg: sum(t.swapents for t in k.mem_cgroup(cg).tasks()) for cg in ("/a.service",
                                                                           "/b.service")}
    assert swap["/b.service"] > swap["/a.service"]
    assert chosen(SystemdOomd(), declared(s, "CONSTRAINT_OOMD_SWAP")) == ["swapper1", "swapper2"]
    s.rt.close()


def test_systemd_oomd_pressure_ranks_by_reclaim_then_memory_and_ignores_other_ooms() -> None:
    s = Sim(memory="1G", swap="1G")
    k = s.kernel
    k.spawn("idle_big", "/slice/idle.service", hold("300M"))
    k.spawn("small_busy", "/slice/busy.service", hold("50M"))
    s.run(0.5)
    from oomkit.policies import cause
    cause.tracker(k).note_tree(k.root_mem_cgroup(), k.clock.now())
    k.mem_cgroup("/slice/busy.service").count_vm("pgscan", 5000)  # reclaim since the sample
    s.run(1.5)
    ops = SystemdOomd()
    assert not ops.handle_out_of_memory(OomContext(0), declared(s, "CONSTRAINT_PSI_MEM"))
    assert chosen(ops, declared(s, "CONSTRAINT_OOMD_PRESSURE", "/slice")) == ["small_busy"]
    s.rt.close()


def test_systemd_oomd_swap_watch_declares_past_90_percent_within_one_window() -> None:
    """ManagedOOMSwap=kill: swap used above SwapUsedLimit (90 %) -> CONSTRAINT_OOMD_SWAP,
    looked at every 500 ms while anyone stalls (systemd polls swap every 150 ms,
    oomd-manager.h SWAP_INTERVAL_USEC), never at or below 90 %; the cgroup using the
    most swap is killed whole, MemAvailable notwithstanding (earlyoom waits for both)."""
    s = Sim(memory="1G", swap="512M")
    k = s.kernel
    k.spawn("steady", "/svc", hold("100M"))
    for name in ("leak1", "leak2"):
        k.spawn(name, "/leak", (Step("alloc", kind="anon", size=M("2G"), rate=M("10M")),
                                Step("sleep")))
    s.rt.attach_oom(SystemdOomd())
    s.rt.attach_psi(SystemdOomdWatch())
    crossed = None
    while not s.ooms() and k.clock.now() < 120:
        s.run(0.05)
        info = sysmem.meminfo(k)
        assert info is not None
        if crossed is None and info.swap_used_percent > 90:
            crossed = k.clock.now()
        if not s.ooms():
            assert crossed is None or k.clock.now() - crossed <= 0.55
    (first, *_) = s.ooms()
    assert crossed is not None and crossed - 0.05 <= first.time <= crossed + 0.55
    assert (first.constraint_text, first.resolved_by, sorted(v.comm for v in first.victims)) \
        == ("CONSTRAINT_OOMD_SWAP", "handler", ["leak1", "leak2"])
    s.rt.close()


def test_managed_oom_preference_is_read_from_the_cgroups_attributes(tmp_path: Path) -> None:
    d = tmp_path / "app.service"
    d.mkdir()
    try:
        os.setxattr(d, "user.oomd_avoid", b"1")
    except OSError as exc:
        pytest.skip(f"no user.* extended attributes on {tmp_path}: {exc}")

    class Dir:
        dir = str(d)

    assert prefs.managed_oom_preference(Dir()) == prefs.AVOID  # type: ignore[arg-type]
    os.setxattr(d, "user.oomd_omit", b"1")
    assert prefs.managed_oom_preference(Dir()) is prefs.OMIT  # type: ignore[arg-type]
    os.chown(d, 1234, 1234)  # a user's own cgroup below root's: not honoured
    assert prefs.managed_oom_preference(Dir()) == prefs.NEUTRAL  # type: ignore[arg-type]


# -- earlyoom, lmkd, oomd ------------------------------------------------------------------


def test_earlyoom_prefer_avoid_and_ignore_by_comm() -> None:
    s = Sim(memory="1G")
    k = s.kernel
    for name, size in (("biggest", "300M"), ("middle", "200M"), ("small", "100M")):
        k.spawn(name, f"/{name}", hold(size))
    s.run(0.5)
    text = "CONSTRAINT_EARLYOOM_SIGTERM"
    assert chosen(Earlyoom(), declared(s, text)) == ["biggest"]
    assert not Earlyoom().handle_out_of_memory(OomContext(0), declared(s, "CONSTRAINT_PSI_MEM"))
    s.run(0.5)
    assert chosen(Earlyoom(avoid="^middle$", ignore="^small$", prefer="^small$"),
                  declared(s, text)) == ["middle"]
    s.rt.close()


def _filling(memory: str, swap: str, rate: str = "100M", **kw: bool) -> Sim:
    s = Sim(memory=memory, swap=swap, **kw)  # type: ignore[arg-type]
    s.kernel.spawn("service", "/svc", hold("100M"))
    s.kernel.spawn("leak", "/leak", (Step("alloc", kind="anon", size=M("4G"), rate=M(rate)),
                                     Step("sleep")))
    s.rt.attach_oom(Earlyoom())
    return s


def test_earlyoom_declares_at_its_thresholds_within_one_window() -> None:
    """main.c's rule: MemAvailable <= 10 % of MemTotal AND SwapFree <= 10 % of
    SwapTotal -> the SIGTERM level; looked at while reclaim stalls anyone (here: swapping
    out), every 500 ms, so the declaration comes within one window of the crossing, and
    never above it."""
    s = _filling("1G", "512M", rate="20M")
    s.rt.attach_psi(EarlyoomWatch())
    crossed = None
    while not s.ooms() and s.kernel.clock.now() < 120:
        s.run(0.05)
        info = sysmem.meminfo(s.kernel)
        assert info is not None
        low = info.available_percent <= 10 and info.swap_free_percent <= 10
        if crossed is None and low:
            crossed = s.kernel.clock.now()
        if not s.ooms():
            assert crossed is None or s.kernel.clock.now() - crossed <= 0.55
    (first, *_) = s.ooms()
    assert crossed is not None
    assert first.constraint_text == "CONSTRAINT_EARLYOOM_SIGTERM"
    assert (first.resolved_by, [v.comm for v in first.victims]) == ("handler", ["leak"])
    assert crossed - 0.05 <= first.time <= crossed + 0.55
    s.rt.close()


def test_earlyoom_kill_takes_the_system_wide_oom_nothing_declared() -> None:
    """Without swap an anonymous fill stalls nobody until the end: no trigger fires, the
    watch never looks (a PsiOps has no timer). The system-wide OOM that comes instead
    (the live daemon's MemAvailable watch at the preset's [system] 10 %, or the kernel's
    own) is still earlyoom's to resolve, by its rule (highest oom_score)."""
    s = _filling("1G", "0")
    s.rt.attach_psi(EarlyoomWatch())
    s.run(12)
    got = [(e.constraint, e.resolved_by, e.policy, [v.comm for v in e.victims])
           for e in s.ooms()]
    assert got == [("NONE", "handler", "earlyoom_kill", ["leak"])]
    s.rt.close()


def test_earlyoom_says_sigkill_at_half_the_thresholds() -> None:
    """Under both kill thresholds (half the term ones: 5 %/5 %) the level is SIGKILL;
    between them SIGTERM; above either term threshold nothing."""
    s = _filling("1G", "512M")
    k = s.kernel
    levels = []
    while k.clock.now() < 30:
        s.run(0.05)
        info = sysmem.meminfo(k)
        assert info is not None
        if info.swap_free_percent <= 3:
            break
        levels.append(info.swap_free_percent)
    assert levels[-1] <= 5  # the fill went under the kill thresholds
    s.rt.attach_psi(EarlyoomWatch())  # the first look is below both: SIGKILL
    s.run(0.6)
    texts = [e.constraint_text for e in s.ooms()]
    assert texts[:1] == ["CONSTRAINT_EARLYOOM_SIGKILL"], texts
    s.rt.close()


def test_lmkd_kills_from_the_highest_band_the_level_allows() -> None:
    s = Sim(memory="1G")
    k = s.kernel
    k.spawn("fg", "/fg", hold("400M"), oom_score_adj=0)
    k.spawn("cached_small", "/c1", hold("50M"), oom_score_adj=950)
    k.spawn("cached_big", "/c2", hold("150M"), oom_score_adj=900)
    k.spawn("service", "/svc", hold("100M"), oom_score_adj=500)
    s.run(0.5)
    assert chosen(Lmkd(), declared(s, "CONSTRAINT_LMKD_MEDIUM")) == ["cached_small"]
    s.run(0.5)
    assert chosen(Lmkd(), declared(s, "CONSTRAINT_LMKD_MEDIUM")) == ["cached_big"]
    s.run(0.5)
    assert not Lmkd().handle_out_of_memory(OomContext(0), declared(s, "CONSTRAINT_LMKD_MEDIUM"))
    assert chosen(Lmkd(), declared(s, "CONSTRAINT_LMKD_CRITICAL")) == ["service"]
    s.rt.close()


def test_lmkd_level_with_nobody_in_its_band_declares_nothing() -> None:
    """No task at oom_score_adj 800 or above: the MEDIUM level kills nobody, as lmkd's
    does, instead of declaring an OOM that falls to the default killer (which took the
    foreground app). CRITICAL (band 0 and up) still acts, highest band first."""
    s = Sim(memory="1G", swap="512M")
    k = s.kernel
    k.spawn("service", "/svc", hold("150M"), oom_score_adj=500)
    k.spawn("fg", "/fg", (Step("alloc", kind="anon", size=M("1100M"), rate=M("100M")),
                          Step("touch", kind="anon", size=M("1100M"),
                               duration_ns=30_000_000_000)))
    s.rt.attach_oom(Lmkd())
    s.rt.attach_psi(LmkdWatch())
    s.run(30)
    got = [(e.constraint_text, e.resolved_by, e.policy, [v.comm for v in e.victims])
           for e in s.ooms()]
    assert got == [("CONSTRAINT_LMKD_CRITICAL", "handler", "lmkd_kill", ["service"]),
                   ("CONSTRAINT_LMKD_CRITICAL", "handler", "lmkd_kill", ["fg"])]
    s.rt.close()


def test_oomd_plugins_rank_as_oomd_does() -> None:
    s = Sim(memory="1G", swap="1G")
    k = s.kernel
    k.spawn("steady", "/w/steady", hold("120M"))
    k.spawn("grower", "/w/grower", (Step("alloc", kind="anon", size=M("300M"),
                                         rate=M("100M")), Step("sleep")))
    k.spawn("third", "/w/third", hold("100M"))
    from oomkit.policies import cause
    act = cause.tracker(k)
    s.run(0.5)
    act.note_tree(k.root_mem_cgroup(), k.clock.now())
    s.run(1.5)
    now = k.clock.now()
    cgs = [k.mem_cgroup(p) for p in ("/w/steady", "/w/grower", "/w/third")]
    # no cgroup holds half the memory: the fastest grower goes
    assert PLUGINS["kill_by_memory_size_or_growth"](cgs, now, act).path == "/w/grower"
    s.run(3)
    now = k.clock.now()  # the grower now holds more than half: the largest goes
    assert PLUGINS["kill_by_memory_size_or_growth"](cgs, now, act).path == "/w/grower"
    assert PLUGINS["kill_by_swap_usage"](cgs, now, act) is None  # nothing swapped yet
    assert chosen(Oomd(avoid=["/w/grower"]), declared(s, "CONSTRAINT_OOMD_PRESSURE", "/w")) \
        == ["steady"]
    s.rt.close()




def test_oomd_kill_takes_its_candidates_from_globs() -> None:
    s = Sim(memory="1G", swap="1G")
    k = s.kernel
    k.spawn("session", "/user.slice/user-1000.slice/session-2.scope", hold("300M"))
    k.spawn("app", "/user.slice/user-1000.slice/user@1000.service/app.scope", hold("100M"))
    s.run(0.5)
    ops = Oomd(candidates=["/user.slice/user-*.slice/user@*.service/*"])
    assert chosen(ops, declared(s, "CONSTRAINT_OOMD_PRESSURE", "/user.slice")) == ["app"]
    s.rt.close()


def test_the_peers_poll_falls_back_to_2s_windows_without_cap_sys_resource() -> None:
    """A 500 ms window needs CAP_SYS_RESOURCE (kernel/sched/psi.c): without it the watch
    attaches with the 2 s window instead of failing, and still declares, later (here
    past the SIGTERM level: 2 s looks are too few for a 20M/s fill, as they were in QA
    F3)."""
    s = _filling("1G", "512M", rate="20M", cap_sys_resource=False)
    with pytest.raises(Exception, match="window"):
        s.kernel.psi_trigger_create(0, Resource.MEMORY, 1000, 500_000, False)
    watch = EarlyoomWatch()
    s.rt.attach_psi(watch)
    assert watch.window_us == 2_000_000
    s.run(120)
    (first, *_) = s.ooms()
    assert (first.constraint_text, first.resolved_by) == ("CONSTRAINT_EARLYOOM_SIGKILL",
                                                          "handler")
    s.rt.close()


def test_lmkd_heaviest_is_by_resident_size_not_swap() -> None:
    """QA G11: lmkd's heaviest task is the one with the most resident pages
    (lmkd.cpp proc_get_heaviest -> proc_get_size, /proc/PID/statm's resident field),
    never what a task holds in swap. An idle app pushed out to swap by the foreground
    app that grows frees nothing by dying: lmkd kills the grower in the band, the preset
    killed the idle bystander (RSS + swap)."""
    s = Sim(memory="1G", swap="1G")
    k = s.kernel
    k.spawn("idle", "/idle", hold("900M"))
    s.run(0.5)
    k.spawn("fg", "/fg", (Step("alloc", kind="anon", size=M("700M"), rate=M("400M")),
                          Step("touch", kind="anon", size=M("700M"),
                               duration_ns=30_000_000_000)))
    s.run(4)
    idle, fg = (next(t for t in k.mem_cgroup(p).tasks()) for p in ("/idle", "/fg"))
    assert idle.rss + idle.swapents * 4096 > fg.rss + fg.swapents * 4096  # what fooled it
    assert fg.rss > idle.rss
    assert chosen(Lmkd(), declared(s, "CONSTRAINT_LMKD_CRITICAL")) == ["fg"]
    s.rt.close()


def test_lmkd_never_picks_a_task_without_resident_memory() -> None:
    """lmkd.cpp proc_get_heaviest drops a process whose size reads 0 or less (its memory
    gone: exiting, or a kernel thread with no mm) and kill_one_process skips it: one
    without resident pages is no candidate, however high its oom_score_adj."""
    s = Sim(memory="1G", swap="1G")
    k = s.kernel
    k.spawn("empty", "/empty", (Step("sleep"),), oom_score_adj=1000)
    k.spawn("cached", "/cached", hold("100M"), oom_score_adj=900)
    s.run(0.5)
    assert chosen(Lmkd(), declared(s, "CONSTRAINT_LMKD_MEDIUM")) == ["cached"]
    s.rt.close()
