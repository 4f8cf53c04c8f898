"""The restore journal is trusted no further than what oomkit writes (issue 14, item 5):
a planted journal writes nothing anywhere, a state file that is not a journal is refused,
one daemon owns a state file (flock), files are 0600/0700 whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.kernel.linux import restore
from oomkit.kernel.linux.journal import RestoreJournal


@pytest.fixture
def cg(tmp_path: Path) -> Path:
    """A fake cgroup tree: cg/a/memory.oom_control (disabled: 1), cg/a/memory.high."""
    a = tmp_path / "cg" / "a"
    a.mkdir(parents=True)
    (a / "memory.oom_control").write_text("1")
    (a / "memory.high").write_text("1000")
    return tmp_path / "cg"


def plant(state: Path, settings: list[dict[str, object]], pid: int = 999_999_999) -> None:
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"version": 1, "pid": pid, "settings": settings}))


def test_a_planted_journal_writes_only_what_oomkit_would(tmp_path: Path, cg: Path) -> None:
    victim = tmp_path / "etc" / "precious"
    victim.parent.mkdir()
    victim.write_text("root:x:0:0\n")
    outside = tmp_path / "elsewhere" / "memory.high"
    outside.parent.mkdir()
    outside.write_text("1000")
    state = tmp_path / "run" / "restore.json"
    plant(state, [
        {"path": str(victim), "original": "pwned", "dir_inode": 0},
        {"path": str(outside), "original": "max", "dir_inode": 0},
        {"path": str(cg / "a" / "memory.high"), "original": "pwned\n", "dir_inode": 0},
        {"path": str(cg / "a" / ".." / "a" / "memory.high"), "original": "max"},
        {"path": str(cg / "a" / "memory.oom_control"), "original": "0", "dir_inode": 0},
    ])
    journal = RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg))
    whys = [why for _, why in journal.leftovers]
    assert whys[:4] == ["refused: precious is not a file oomkit changes",
                        f"refused: not below the cgroup root {cg}/",
                        "refused: 'pwned\\n' is not a value of memory.high",
                        "refused: not a normalized absolute path"]
    assert whys[4] is None  # the one entry oomkit could have written is restored
    assert victim.read_text() == "root:x:0:0\n" and outside.read_text() == "1000"
    assert (cg / "a" / "memory.high").read_text() == "1000"
    assert (cg / "a" / "memory.oom_control").read_text() == "0"
    journal.close()


def test_a_link_at_the_setting_is_not_followed(tmp_path: Path, cg: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    (cg / "b").mkdir()
    (cg / "b" / "memory.high").symlink_to(target)
    why = restore.restore_setting(restore.Setting(str(cg / "b" / "memory.high"), "max"),
                                   str(cg))
    assert why is not None and "errno 40" in why
    assert target.read_text() == "keep"


@pytest.mark.parametrize("content", ["not json at all\n", '{"version": 1}', "[1, 2]",
                                     '{"version": 1, "settings": [{"x": 1}]}'])
def test_a_state_file_that_is_no_journal_is_refused_and_kept(tmp_path: Path,
                                                             content: str) -> None:
    state = tmp_path / "important.conf"
    state.write_text(content)
    with pytest.raises(RuntimeError, match="is not an oomkit restore journal"):
        RestoreJournal(str(state), watchdog=False)
    assert state.read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important.conf"]  # no .lock left


def test_a_link_at_the_state_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"version": 1, "pid": 1, "settings": []}))
    state = tmp_path / "restore.json"
    state.symlink_to(target)
    with pytest.raises(RuntimeError, match="is not an oomkit restore journal"):
        RestoreJournal(str(state), watchdog=False)
    assert target.exists() and state.is_symlink()


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_private_modes_whatever_the_umask(tmp_path: Path, cg: Path, umask0: None) -> None:
    state = tmp_path / "new" / "dir" / "restore.json"
    journal = RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg))
    journal.record(str(cg / "a" / "memory.oom_control"), "0")
    for d in (tmp_path / "new", tmp_path / "new" / "dir"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{state}.lock").st_mode) == 0o600
    assert [p.name for p in state.parent.iterdir() if p.name.endswith(".tmp")] == []
    journal.close()


def test_one_journal_owns_a_state_file(tmp_path: Path, cg: Path) -> None:
    state = tmp_path / "restore.json"
    first = RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg))
    first.record(str(cg / "a" / "memory.oom_control"), "0")
    with pytest.raises(RuntimeError, match=f"belongs to a running oomkit \\(pid {os.getpid()}"):
        RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg))
    assert json.loads(state.read_text())["settings"]  # the second did not touch it
    first.close()
    RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg)).close()


def test_the_lock_is_held_by_another_process_too(tmp_path: Path) -> None:
    """A daemon in another process (started at the same time in the campaign) is refused."""
    state = tmp_path / "restore.json"
    code = ("import sys, time\nfrom oomkit.kernel.linux.journal import RestoreJournal\n"
            "j = RestoreJournal(sys.argv[1], watchdog=False)\nprint('ok', flush=True)\n"
            "time.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"ok\n"
        with pytest.raises(RuntimeError, match=f"pid {other.pid}"):
            RestoreJournal(str(state), watchdog=False)
    finally:
        other.kill()
        other.wait()
    RestoreJournal(str(state), watchdog=False).close()  # its death released the lock


def test_a_stale_journal_with_a_live_unrelated_pid_does_not_block(tmp_path: Path,
                                                                  cg: Path) -> None:
    state = tmp_path / "restore.json"
    plant(state, [{"path": str(cg / "a" / "memory.oom_control"), "original": "0"}],
          pid=os.getppid())  # alive, and not an oomkit holding the lock
    journal = RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg))
    assert [why for _, why in journal.leftovers] == [None]
    assert (cg / "a" / "memory.oom_control").read_text() == "0"
    journal.close()


def test_the_watchdog_keeps_the_lock_until_it_restored(tmp_path: Path, cg: Path) -> None:
    state = tmp_path / "restore.json"
    journal = RestoreJournal(str(state), cgroup_root=str(cg))
    journal.record(str(cg / "a" / "memory.oom_control"), "0")
    proc = journal._proc
    assert proc is not None and proc.stdin is not None
    journal._proc = None
    assert journal._lock_fd is not None
    os.close(journal._lock_fd)  # the runtime is gone; its watchdog still holds the lock
    journal._lock_fd = None
    proc.stdin.close()
    assert proc.wait(5) == 0
    assert (cg / "a" / "memory.oom_control").read_text() == "0"
    RestoreJournal(str(state), watchdog=False, cgroup_root=str(cg)).close()


def test_a_forked_child_does_not_keep_the_watchdog_waiting(tmp_path: Path, cg: Path) -> None:
    """A handler that forks: the child must not hold the watchdog's pipe (issue 14 item 8)
    nor the state file's lock."""
    import time

    state = tmp_path / "restore.json"
    journal = RestoreJournal(str(state), cgroup_root=str(cg))
    journal.record(str(cg / "a" / "memory.oom_control"), "0")
    proc = journal._proc
    assert proc is not None and proc.stdin is not None
    child = os.fork()
    if child == 0:  # the handler's child: lives on, holding whatever it inherited
        time.sleep(20)
        os._exit(0)
    try:
        journal._proc = None
        assert journal._lock_fd is not None
        os.close(journal._lock_fd)
        journal._lock_fd = None
        proc.stdin.close()  # the runtime dies
        assert proc.wait(5) == 0, "the watchdog still waits: the child holds its pipe"
        assert (cg / "a" / "memory.oom_control").read_text() == "0"
        RestoreJournal(str(state), watchdog=False).close()  # and the lock is free
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
