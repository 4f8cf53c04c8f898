"""Further field cases (tests/field_cases/, README there), each built from a public report
of an OOM handler the way ../shared/field/ is: run as a user would, ``oomkit run --sim
CASE --config packaging/oomkit.toml``, and held to the outcome its description states."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_with_config

REPO = Path(__file__).resolve().parents[2]
RECOMMENDED = REPO / "packaging" / "oomkit.toml"
CASES = REPO / "tests" / "field_cases"

UWSGI = {f"uwsgi-w{i}" for i in range(1, 11)}
TERMINAL = ({"gnome-terminal-server", "ssh-agent", "tmux", "vim", "htop", "journalctl"}
            | {f"zsh{i}" for i in range(1, 9)})
CC = {f"cc1plus{i}" for i in range(1, 5)}


# case -> (processes of which one must die, processes that must live, only those of
# "dies" may die)
EXPECT: dict[str, tuple[set[str], set[str], bool]] = {
    "n01_tmp_tmpfs_filled_by_small_writer": (set(), {"desktop", "browser", "editor"}, False),
    "n02_command_over_ssh_leaks": ({"python3"}, {"sshd", "bash", "hass"}, False),
    "n03_victim_slow_to_exit_no_swap": ({"java"}, {"ide", "desktop", "chat"}, True),
    "n04_compositor_is_the_largest": ({"chrome"}, {"gnome-shell", "nautilus"}, False),
    "n05_terminal_with_a_hog_child": ({"python3"}, {"kitty", "firefox"}, False),
    "n06_short_build_spike": (set(), {"desktop", "cargo", "rustc"}, False),
    "n07_swap_full_idle_app_has_most_swap": ({"backup-prune"}, {"firefox", "gnome-shell"},
                                             False),
    "n08_worker_pool_thrashes_together": (UWSGI, {"postgres"}, False),
    "n09_terminal_server_many_small_processes": ({"firefox"}, TERMINAL | {"gnome-shell"},
                                                 False),
    "n10_build_service_vs_small_services": (CC, {"systemd-resolved", "sshd", "chat"}, False),
    "n11_leak_in_nested_container_cgroup": ({"java"}, {"nginx", "dockerd", "desktop"}, False),
    "n12_less_reads_an_endless_pipe": ({"less"}, {"bash", "gnome-shell",
                                                  "gnome-terminal-server"}, False),
    "n13_big_tmpfs_file_no_pressure": (set(), {"VirtualBox", "desktop"}, False),
    "n14_session_scope_script_leaks": ({"python3"}, {"Xorg", "i3", "firefox", "alacritty"},
                                       True),
    "n15_server_job_fast_allocation_no_shortage": (
        set(), {"postgres", "report"} | {f"gunicorn{i}" for i in range(1, 5)}, False),
    "n16_fork_bomb_beside_its_shell": ({f"bomb{i}" for i in range(1, 181)},
                                       {"zsh", "desktop", "browser"}, True),
    "n17_best_effort_pods_beside_a_leaking_script": (
        {"python3"}, {"k3s-server", "metrics-server", "entry", "nginx", "coredns"}, True),
    "n18_heap_swings_no_lasting_shortage": (set(), {"desktop", "ide", "java"}, False),
}


# Cases known to end the wrong way, with the reason.
XFAIL: dict[str, str] = {
    "n16_fork_bomb_beside_its_shell": (
        "since the simulator runs the [system] MemAvailable watch (QA Q1), the first "
        "system-wide OOM comes at 3.8 s, while the browser's start-up fill (93M/s) still "
        "outpaces the bomb's, so kill_cause takes the browser; then the bomb's copies one "
        "per OOM. Needs: a start-up fill that has stopped (or a cgroup whose growth is "
        "its first minute) ranked below a swarm that keeps forking"),
}


def test_every_case_file_has_an_expectation() -> None:
    assert sorted(p.stem for p in CASES.glob("*.toml")) == sorted(EXPECT)


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(reason=XFAIL[c], strict=True)) if c in XFAIL
    else c for c in sorted(EXPECT)])
def test_case_ends_as_its_description_says(case: str, tmp_path: Path) -> None:
    die, live, only = EXPECT[case]
    o = run_with_config(CASES / f"{case}.toml", RECOMMENDED, tmp_path)
    killed = set(o.killed)
    assert not killed & live, f"killed {o.killed}"
    if die:
        assert killed & die, f"killed {o.killed}"
    if only:
        assert killed <= die, f"killed {o.killed}"


def test_a_pool_of_workers_goes_in_one_decision(tmp_path: Path) -> None:
    """N08 (QA G2): the workers of one service that thrash together are one cause: the
    first kill takes the pool, not one worker per pressure event."""
    o = run_with_config(CASES / "n08_worker_pool_thrashes_together.toml", RECOMMENDED,
                        tmp_path)
    with_victims = [e for e in o.ooms if e["victims"]]
    assert len(with_victims) == 1, o.ooms
    assert {v["comm"] for v in with_victims[0]["victims"]} >= UWSGI


class _T:
    def __init__(self, mib: int) -> None:
        self.rss, self.swapents = mib << 20, 0


def test_a_pool_is_many_like_tasks_holding_most_of_the_cgroup() -> None:
    from oomkit.policies.kill_cause import pool_of

    workers = [_T(90) for _ in range(10)]
    assert pool_of([_T(20), *workers]) == workers  # the master is not one of them
    # the copies of a fork bomb, not the larger shell that started them
    bomb = [_T(6) for _ in range(40)]
    assert pool_of([_T(12), *bomb]) == bomb
    # a session scope: a shell, an editor and twelve compilers of 150M lose the
    # compilers, not the editor of 100M or the shell
    cc = [_T(150) for _ in range(12)]
    assert pool_of([_T(10), _T(100), *cc]) == cc
    # the linker stands out: no pool, the largest task alone
    assert pool_of([_T(700), *cc[:6]]) == []
    # three like tasks are no pool; nor are like tasks beside one that holds most
    assert pool_of([_T(90)] * 3) == []
    assert pool_of([_T(2000), _T(1400), _T(1400), _T(1400), _T(1400), _T(3000)]) == []


def test_a_newcomer_beside_an_old_pool_is_the_cause() -> None:
    """In a cgroup ranked by what it added, a task that came since the long baseline
    goes before a pool of like tasks that was there before (QA G10's rule): six renderers
    of 100M and a script that added 200M and stopped lose the script, not the renderers."""
    from oomkit.kernel.sim import Step
    from oomkit.policies import prefs
    from oomkit.policies.kill_cause import pick_task

    from .conftest import Sim, hold

    s = Sim(memory="2G")
    k = s.kernel
    for i in range(6):
        k.spawn(f"renderer{i}", "/app.scope", hold("100M"))
    s.run(0.5)
    old = {t.pid for t in k.mem_cgroup("/app.scope").tasks()}
    k.spawn("python3", "/app.scope", (Step("alloc", kind="anon", size=200 << 20),
                                      Step("sleep")))
    s.run(0.5)
    cg = k.mem_cgroup("/app.scope")
    found = pick_task(cg, prefs.Preferences(), 4 << 20, prefs.NEUTRAL,
                      k.oom_totalpages(None), {}, old, pool=True)
    assert found is not None and found[1].comm == "python3" and found[2] == []
    found = pick_task(cg, prefs.Preferences(), 4 << 20, prefs.NEUTRAL,
                      k.oom_totalpages(None), {}, None, pool=True)
    assert found is not None and found[1].comm.startswith("renderer")
    assert len(found[2]) == 6
    s.rt.close()
