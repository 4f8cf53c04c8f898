"""Procfs.task(): an exiting process (PF_EXITING, or a zombie) is seen as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomkit.kernel.linux.procfs import PF_EXITING, Procfs

STATUS = (
    "Name:\tpython\nVmRSS:\t    1024 kB\nSigPnd:\t0000000000000000\n"
    "ShdPnd:\t0000000000000000\n"
)


def proc(tmp_path: Path, state: str, flags: int) -> Procfs:
    d = tmp_path / "42"
    d.mkdir()
    fields = [state, "1", "42", "42", "0", "-1", str(flags)] + ["0"] * 12 + ["12345"]
    (d / "stat").write_text(f"42 (python) {' '.join(fields)}\n")
    (d / "status").write_text(STATUS)
    (d / "oom_score_adj").write_text("0\n")
    return Procfs(str(tmp_path))


@pytest.mark.parametrize(
    ("state", "flags", "exiting"),
    [("R", 0x400000, False), ("R", 0x400000 | PF_EXITING, True), ("Z", 0, True),
     ("D", 0, False)],
)  # fmt: skip
def test_exiting(tmp_path: Path, state: str, flags: int, exiting: bool) -> None:
    info = proc(tmp_path, state, flags).task(42)
    assert info.exiting is exiting
    assert info.start_time == 12345 and info.rss == 1024 * 1024 and not info.sigkill_pending


def test_kernel_thread_from_stat_alone(tmp_path: Path) -> None:
    """PF_KTHREAD in stat's flags: a kernel thread, known without status or oom_score_adj
    (the v2 root cgroup lists every one of them; they are never victims)."""
    p = proc(tmp_path, "S", 0x00208040)  # PF_KTHREAD | PF_NOFREEZE | PF_FORKNOEXEC
    (tmp_path / "42" / "status").unlink()
    (tmp_path / "42" / "oom_score_adj").unlink()
    info = p.task(42)
    assert info.kthread and info.rss == 0 and not info.exiting
    (tmp_path / "user").mkdir()
    assert not proc(tmp_path / "user", "S", 0x400000).task(42).kthread  # status was read
