"""Fault injection, issue 14 item 2: the restore journal cannot be written (its
filesystem full). Arming then must not happen (the watchdog could not undo it): the memcg
stays with the kernel killer, and the runtime carries on instead of crashing."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.kernel.linux import LinuxKernel

from .conftest import LiveCgroups, MiB
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state"
    mnt.mkdir()
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=700", "oomkit-test",
                          str(mnt)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {got.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> None:
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()


def test_a_full_journal_filesystem_leaves_the_memcg_to_the_kernel(
        live_v1: LiveCgroups, small_fs: Path, capfd: pytest.CaptureFixture[str]) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    kernel = LinuxKernel(str(live.root), state_file=str(small_fs / "restore.json"))
    try:
        fill(small_fs)
        cg = kernel.mem_cgroup("/box")
        assert cg is not None
        kernel.watch_oom(cg)  # no exception: the journal write failed, nothing was armed
        assert kernel.watched_cgroups() == 0
        assert oom_control(box)["oom_kill_disable"] == 0
        assert "cannot write the restore journal" in capfd.readouterr().err
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(5), "the kernel killer should act at once"
    finally:
        kernel.close()
    assert oom_control(box)["oom_kill_disable"] == 0
