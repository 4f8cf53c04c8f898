"""Pure parsers of the live backend, on files recorded from real kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.linux import kmsg, procfs

V2 = "linux-6.1-cgroup2"
V1 = "linux-6.18-cgroup1-memory"


def read(fixtures: Path, *parts: str) -> str:
    return fixtures.joinpath(*parts).read_text()


def test_v2_memory_stat(fixtures: Path) -> None:
    stat = cf.parse_flat_keyed(read(fixtures, V2, "app.service", "memory.stat"))
    assert stat["anon"] == 41947136
    assert stat["file"] == 12722176
    assert stat["shmem"] == 12713984
    assert stat["file_mapped"] == 4202496
    assert stat["pgfault"] == 3128
    assert stat["pgsteal"] == 15


def test_v2_events_and_limits(fixtures: Path) -> None:
    events = cf.parse_flat_keyed(read(fixtures, V2, "app.service", "memory.events"))
    assert events == {
        "low": 0, "high": 756, "max": 0, "oom": 0, "oom_kill": 0, "oom_group_kill": 0
    }
    assert cf.parse_limit_v2(read(fixtures, V2, "app.service", "memory.max")) == 64 << 20
    assert cf.parse_limit_v2(read(fixtures, V2, "app.service", "memory.high")) == 32 << 20
    assert cf.parse_limit_v2(read(fixtures, V2, "app.service", "memory.swap.max")) is None
    assert cf.format_limit_v2(None) == "max"
    assert cf.parse_procs(read(fixtures, V2, "app.service", "cgroup.procs")) == [124]


def test_v1_memory_stat_translated(fixtures: Path) -> None:
    raw = cf.parse_flat_keyed(read(fixtures, V1, "app", "memory.stat"))
    stat = cf.v1_stat_to_v2(raw)
    # rss -> anon, cache -> file, mapped_file -> file_mapped, from the total_* lines.
    assert stat["anon"] == raw["total_rss"] == 25399296
    assert stat["file"] == raw["total_cache"] == 12664832
    assert stat["shmem"] == 4194304
    assert stat["file_mapped"] == 4194304
    assert stat["file_dirty"] == 8470528
    assert stat["pgfault"] == 9278
    assert "rss" not in stat and "cache" not in stat


def test_v1_stat_prefers_hierarchical_totals() -> None:
    stat = cf.v1_stat_to_v2({"rss": 1, "total_rss": 5, "cache": 2})
    assert stat["anon"] == 5  # total_* (hierarchical) wins
    assert stat["file"] == 2  # local value when no total_* line exists


def test_v1_limits_and_oom_control(fixtures: Path) -> None:
    assert cf.parse_limit_v1(read(fixtures, V1, "app", "memory.limit_in_bytes")) == 128 << 20
    assert cf.parse_limit_v1(read(fixtures, V1, "app", "memory.memsw.limit_in_bytes")) is None
    ctl = cf.parse_flat_keyed(read(fixtures, V1, "app", "memory.oom_control"))
    assert ctl == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 0}


def test_proc_stat(fixtures: Path) -> None:
    st = procfs.parse_stat(read(fixtures, V1, "proc", "self", "stat"))
    assert (st.pid, st.comm, st.state, st.ppid, st.start_time) == (615, "python3", "R", 574, 190694)
    assert not st.flags & procfs.PF_KTHREAD


def test_proc_stat_comm_with_parens_and_spaces() -> None:
    line = "42 (a) b (c)) S 1 42 42 0 -1 2097216 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0"
    st = procfs.parse_stat(line)
    assert st.comm == "a) b (c)"
    assert st.start_time == 777
    assert st.flags & procfs.PF_KTHREAD


def test_proc_status(fixtures: Path) -> None:
    status = procfs.parse_status(read(fixtures, V1, "proc", "self", "status"))
    assert procfs.kb_field(status, "VmRSS") == 39616 * 1024
    assert procfs.kb_field(status, "VmPTE") == 128 * 1024
    assert procfs.kb_field(status, "VmSwap") == 0
    assert procfs.kb_field(status, "Nope") == 0
    assert status["Kthread"] == "0"


def test_proc_cgroup_hybrid(fixtures: Path) -> None:
    cg = procfs.parse_proc_cgroup(read(fixtures, V1, "proc", "self", "cgroup"))
    assert cg["memory"] == "/system.slice/app.service/fixture_app"
    assert cg[""] == "/"
    assert cg["name=systemd"] == "/"
    v2 = procfs.parse_proc_cgroup(read(fixtures, V2, "proc", "self", "cgroup"))
    assert "" in v2


def test_meminfo(fixtures: Path) -> None:
    info = procfs.parse_meminfo(read(fixtures, V2, "proc", "meminfo"))
    assert info["MemTotal"] > info["MemAvailable"] > 0
    assert info["MemTotal"] % 1024 == 0  # kB became bytes
    assert procfs.parse_meminfo("HugePages_Total:       0\n") == {"HugePages_Total": 0}


def test_procfs_reader_on_recorded_tree(fixtures: Path) -> None:
    proc = procfs.Procfs(str(fixtures / V1 / "proc"))
    info = proc.task("self")  # type: ignore[arg-type]
    assert info.comm == "python3"
    assert info.rss == 39616 * 1024
    assert info.oom_score_adj == 0
    assert not info.kthread and not info.sigkill_pending


# 6.18, captured on this project's test machine
KMSG_SUMMARY = (
    b"6,1234,347602928,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
    b"mems_allowed=0,oom_memcg=/p/exp1,task_memcg=/p/exp1/leaf,task=python3,pid=31429,uid=0\n"
)
KMSG_KILLED = (
    b"3,1235,347603022,-;Memory cgroup out of memory: Killed process 31429 (python3) "
    b"total-vm:82140kB, anon-rss:6784kB, file-rss:6660kB, shmem-rss:30464kB, UID:0 "
    b"pgtables:136kB oom_score_adj:0\n"
)


def test_kmsg_records() -> None:
    s = kmsg.parse_message(kmsg.split_record(KMSG_SUMMARY))
    assert s == kmsg.OomSummary("CONSTRAINT_MEMCG", "/p/exp1", "/p/exp1/leaf", "python3", 31429)
    k = kmsg.parse_message(kmsg.split_record(KMSG_KILLED))
    assert k == kmsg.KilledProcess(31429, "python3", (6784 + 6660 + 30464) * 1024)
    glob = kmsg.parse_message(
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
        "global_oom,task_memcg=/x,task=stress,pid=7,uid=0"
    )
    assert isinstance(glob, kmsg.OomSummary) and glob.oom_memcg is None
    assert kmsg.parse_message("oomkit-test: hello") is None


@pytest.mark.parametrize(
    "text,expected",
    [("max\n", None), ("0\n", 0), ("4096", 4096)],
)
def test_limit_v2(text: str, expected: int | None) -> None:
    assert cf.parse_limit_v2(text) == expected


def test_limit_v1_unlimited() -> None:
    assert cf.parse_limit_v1("9223372036854771712\n") is None
    assert cf.parse_limit_v1(str(1 << 30)) == 1 << 30


def test_own_memcg_dir_hybrid_v2_and_none(tmp_path: Path) -> None:
    from oomkit.kernel.linux.procfs import own_memcg_dir

    proc, mount = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    mount.mkdir()
    (proc / "self" / "cgroup").write_text("4:memory:/a/b\n0::/u\n")
    (mount / "memory").mkdir()
    assert own_memcg_dir(str(proc), str(mount)) == f"{mount}/memory/a/b"
    (mount / "memory").rmdir()
    assert own_memcg_dir(str(proc), str(mount)) is None  # unified without memory
    (mount / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert own_memcg_dir(str(proc), str(mount)) == f"{mount}/u"
