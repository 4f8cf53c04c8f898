"""The watchdog's hand-over records (kernel/linux/handover_log.py) on plain files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from oomkit import forkguard
from oomkit.kernel.linux.handover_log import EventLog, in_band, is_domain, kernel_path


def test_kernel_path_names_the_memcg_as_dev_kmsg_does() -> None:
    root = "/sys/fs/cgroup/memory/user.slice/test"
    assert kernel_path(root + "/a/b", root, "/user.slice/test") == "/user.slice/test/a/b"
    assert kernel_path(root, root, "/user.slice/test") == "/user.slice/test"
    assert kernel_path(root + "/a", root, None) == "/a"
    assert kernel_path(root, root, None) == "/"


def test_a_record_names_the_memcg_and_victims_below_the_root(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "events.jsonl"), "/cg/root", "/k/root")
    log.oom("/cg/root/box/memory.oom_control", "handed over",
            [{"pid": 7, "comm": "hog", "cgroup": "/k/root/box/leaf", "rss": 4096}])
    (record,) = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text()
                 .splitlines()]
    assert (record["memcg"], record["policy"], record["resolved_by"]) == (
        "/box", "watchdog", "kernel")
    assert record["victims"] == [{"pid": 7, "comm": "hog", "cgroup": "/box/leaf",
                                  "rss": 4096}]
    assert (tmp_path / "events.jsonl").stat().st_mode & 0o777 == 0o600


def test_a_record_never_follows_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    os.symlink(victim, tmp_path / "events.jsonl")
    EventLog(str(tmp_path / "events.jsonl"), "/cg").oom("/cg/box/memory.oom_control", "x")
    assert victim.read_text() == "keep\n"


def test_in_band_and_domain_on_fake_memcgs(tmp_path: Path) -> None:
    box = tmp_path / "box"
    leaf = box / "leaf"
    leaf.mkdir(parents=True)
    (box / "memory.high").write_text("10485760\n")
    (box / "memory.current").write_text(str(10485760 - 4096))
    assert in_band(str(box / "memory.high"))
    (box / "memory.current").write_text(str(4 << 20))
    assert not in_band(str(box / "memory.high"))
    (box / "memory.high").write_text("max\n")
    assert not in_band(str(box / "memory.high"))
    (box / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 1\n")
    (leaf / "memory.oom_control").write_text("oom_kill_disable 1\nunder_oom 1\n")
    assert not is_domain(str(leaf / "memory.oom_control"))  # part of /box's OOM
    assert is_domain(str(box / "memory.oom_control"))


def test_forkguard_points_held_fds_at_dev_null_in_a_child(tmp_path: Path) -> None:
    held = forkguard.hold(os.open(tmp_path / "daemon.log", os.O_WRONLY | os.O_CREAT, 0o600))
    kept = os.open(tmp_path / "handler.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        pid = os.fork()
        if pid == 0:
            ok = (os.readlink(f"/proc/self/fd/{held}") == os.devnull
                  and os.readlink(f"/proc/self/fd/{kept}").endswith("handler.txt"))
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.readlink(f"/proc/self/fd/{held}").endswith("daemon.log")
    finally:
        forkguard.release(held)
        os.close(held)
        os.close(kept)
