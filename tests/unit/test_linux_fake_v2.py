"""LinuxKernel's cgroup v2 paths on a fake tree built from recorded 6.1 files.

The tree lives in a tmp dir (LinuxKernel(cgroup_root=tmp, proc_root=fake proc)); the
tests play the kernel by rewriting its files, and drive the event loop by hand with
``kernel.poll()``. Inotify works on a tmp dir as on cgroupfs, so the guard band's
memory.events watch and cgroup online/offline run for real.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oomkit.errors import CgroupGone, KernelError
from oomkit.events import CgroupOfflineEvent, CgroupOnlineEvent, EventList, OomEvent
from oomkit.kernel.base import Constraint, OomRequest, Resource
from oomkit.kernel.linux import LinuxCgroup, LinuxKernel, restore
from oomkit.kernel.linux.journal import RestoreJournal
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.runtime import Runtime

V2 = "linux-6.1-cgroup2"
APP = "/sample.slice/app.service"
MiB = 1 << 20


@pytest.fixture
def tree(fixtures: Path, tmp_path: Path) -> Path:
    """tmp/cg: root -> sample.slice -> app.service; tmp/proc: meminfo, pressure, self."""
    src = fixtures / V2
    root = tmp_path / "cg"
    shutil.copytree(src / "root", root)
    shutil.copytree(src / "sample.slice", root / "sample.slice")
    shutil.copytree(src / "app.service", root / "sample.slice" / "app.service")
    shutil.copytree(src / "proc", tmp_path / "proc")
    return tmp_path


@pytest.fixture
def kernel(tree: Path) -> Iterator[LinuxKernel]:
    k = LinuxKernel(
        str(tree / "cg"),
        str(tree / "proc"),
        kmsg_path=None,
        state_file=str(tree / "restore.json"),
        watchdog=False,
        guard_stuck_s=0.02,
    )
    yield k
    k.close()


def app_dir(tree: Path) -> Path:
    return tree / "cg" / "sample.slice" / "app.service"


def pump(kernel: LinuxKernel, cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        kernel.poll(0.02)
    return cond()


def bump_events(d: Path, **changes: int) -> None:
    path = d / "memory.events"
    events = dict(line.split() for line in path.read_text().splitlines())
    for k, v in changes.items():
        events[k] = str(int(events[k]) + v)
    path.write_text("".join(f"{k} {v}\n" for k, v in events.items()))


def test_detects_v2_and_reads_the_accessors(kernel: LinuxKernel, tree: Path) -> None:
    assert kernel.version == 2
    app = kernel.mem_cgroup(APP)
    assert app is not None
    assert app.id == os.stat(app_dir(tree)).st_ino
    assert kernel.mem_cgroup(app.id) == app
    assert app.usage() == 55234560
    assert app.page_state("anon") == 41947136
    assert app.page_state("file_mapped") == 4202496
    assert app.vm_events("pgfault") == 3128
    assert app.memory_events("high") == 756
    assert app.memory_max == 64 * MiB
    assert app.memory_high == 32 * MiB
    assert app.memory_low == 8 * MiB
    assert app.memory_min == 0
    assert app.swap_max is None
    assert app.oom_group is False
    p = app.pressure(Resource.MEMORY)
    assert p.some.avg10 == 94.74 and p.full.total == 47960820
    root = kernel.root_mem_cgroup()
    assert root.memory_max is None  # the v2 root has no memory.max
    assert root.usage() > 0  # from /proc/meminfo
    assert root.pressure().some.total >= 0  # /proc/pressure/memory
    assert [c.path for c in root.walk()] == ["/", "/sample.slice", APP]
    with pytest.raises(KernelError) as exc:
        app.page_state("no_such_item")
    assert exc.value.errno == errno.EINVAL
    # No memory swap here: totalpages = memory.max + min(swap.max, SwapTotal)
    assert kernel.oom_totalpages(app) == 64 * MiB // 4096


def test_removed_cgroup_is_cgroupgone(kernel: LinuxKernel, tree: Path) -> None:
    app = kernel.mem_cgroup(APP)
    assert app is not None
    shutil.rmtree(app_dir(tree))
    with pytest.raises(CgroupGone):
        app.usage()
    with pytest.raises(CgroupGone):
        app.tasks()
    assert kernel.mem_cgroup(APP) is None


def test_guard_band_never_above_users_memory_high(kernel: LinuxKernel, tree: Path) -> None:
    app = kernel.mem_cgroup(APP)
    assert app is not None
    kernel.watch_oom(app)  # memory.high 32M < 64M - margin: the user's is lower, keep it
    assert (app_dir(tree) / "memory.high").read_text().strip() == str(32 * MiB)
    kernel.unwatch_oom(app)
    assert (app_dir(tree) / "memory.high").read_text().strip() == str(32 * MiB)


def test_guard_band_set_and_restored(kernel: LinuxKernel, tree: Path) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    app = kernel.mem_cgroup(APP)
    assert app is not None
    how = kernel.watch_oom(app)
    assert "memory.high" in how
    guard = 64 * MiB - 4 * MiB  # margin: max(5 %, 4 MiB)
    assert (d / "memory.high").read_text() == str(guard)
    state = json.loads((tree / "restore.json").read_text())
    assert state["settings"] == [
        {"path": str(d / "memory.high"), "original": "max", "dir_inode": app.id}
    ]
    # memory.max raised through the kernel: the band follows.
    kernel.set_memory_max(app, 128 * MiB)
    assert (d / "memory.max").read_text() == str(128 * MiB)
    band = (128 * MiB - 128 * MiB * 5 // 100) // 4096 * 4096  # 5 %, down to a page
    assert (d / "memory.high").read_text() == str(band)
    kernel.unwatch_oom(app)
    assert (d / "memory.high").read_text() == "max"
    assert not (tree / "restore.json").exists() or not json.loads(
        (tree / "restore.json").read_text()
    )["settings"]


def test_users_own_memory_high_write_is_what_gets_restored(
    kernel: LinuxKernel, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    runtime = Runtime(kernel)
    runtime.attach_oom(OomOps(), APP)
    high = str(d / "memory.high")
    (d / "memory.high").write_text(str(62 * MiB))  # the user, while we are armed
    # 62M is above our 60M band: the band stays, and the user's 62M is the original now.
    assert pump(kernel, lambda: kernel.journal.original(high) == str(62 * MiB))
    assert pump(kernel, lambda: (d / "memory.high").read_text() == str(60 * MiB))
    # ... and says so (the daemon's stderr is in the journal under systemd).
    said = capsys.readouterr().err
    assert f"memory.high was rewritten to {62 * MiB}" in said, said
    assert f"the guard band is back at {60 * MiB}" in said
    runtime.close()
    assert (d / "memory.high").read_text() == str(62 * MiB)


def test_users_lower_memory_high_ends_the_band(kernel: LinuxKernel, tree: Path) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    runtime = Runtime(kernel)
    runtime.attach_oom(OomOps(), APP)
    assert (d / "memory.high").read_text() == str(60 * MiB)
    (d / "memory.high").write_text(str(50 * MiB))  # below the band: never go above it
    assert pump(kernel, lambda: kernel.journal.original(str(d / "memory.high")) is None)
    assert (d / "memory.high").read_text() == str(50 * MiB)
    runtime.close()
    assert (d / "memory.high").read_text() == str(50 * MiB)


class Declines(OomOps):
    name = "declines"

    def __init__(self) -> None:
        self.seen: list[OomControl] = []

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self.seen.append(oc)
        return False


def test_stuck_in_the_band_is_an_oom_and_the_fallback_releases_it(
    kernel: LinuxKernel, tree: Path
) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    events = EventList()
    runtime = Runtime(kernel, sink=events)
    policy = Declines()
    runtime.attach_oom(policy, APP)
    guard = 60 * MiB
    assert (d / "memory.high").read_text() == str(guard)
    # The kernel throttles: usage at the guard, "high" events rising.
    (d / "memory.current").write_text(str(guard + 4096))
    bump_events(d, high=5)
    assert pump(kernel, lambda: bool(policy.seen))
    oc = policy.seen[0]
    assert oc.memcg is not None and oc.memcg.path == APP and oc.constraint == Constraint.MEMCG
    assert pump(kernel, lambda: bool(events.of(OomEvent)))
    ev = events.of(OomEvent)[0]
    assert isinstance(ev, OomEvent) and ev.resolved_by == "default"
    assert "memory.high restored" in ev.note
    # Released: the kernel killer now acts at memory.max.
    assert (d / "memory.high").read_text() == "max"
    # The kernel killed something, usage fell below the band: the band comes back.
    (d / "memory.current").write_text(str(20 * MiB))
    bump_events(d, oom=1, oom_kill=1)
    assert pump(kernel, lambda: (d / "memory.high").read_text() == str(guard))
    kernel_side = [
        e for e in events.of(OomEvent) if isinstance(e, OomEvent) and e.resolved_by == "kernel"
    ]
    # The kernel's kill of the OOM handed over is that OOM, already recorded (with
    # resolved_by "default"): not a second record (issue 14 item 8).
    assert kernel_side == []
    runtime.close()
    assert (d / "memory.high").read_text() == "max"


def test_high_events_below_the_band_are_no_oom(kernel: LinuxKernel, tree: Path) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    runtime = Runtime(kernel)
    policy = Declines()
    runtime.attach_oom(policy, APP)
    (d / "memory.current").write_text(str(30 * MiB))  # far below the band
    bump_events(d, high=1)
    pump(kernel, lambda: False, timeout=0.2)
    assert policy.seen == []
    runtime.close()


def test_cgroup_online_offline_from_inotify(kernel: LinuxKernel, tree: Path) -> None:
    events = EventList()
    runtime = Runtime(kernel, sink=events)
    new = tree / "cg" / "sample.slice" / "new.service"
    new.mkdir()
    (new / "sub").mkdir()  # made before our watch on new.service exists: found by a scan
    assert pump(kernel, lambda: len(events.of(CgroupOnlineEvent)) == 2)
    paths = sorted(e.cgroup for e in events.of(CgroupOnlineEvent))  # type: ignore[attr-defined]
    assert paths == ["/sample.slice/new.service", "/sample.slice/new.service/sub"]
    ids = {e.cgroup_id for e in events.of(CgroupOnlineEvent)}  # type: ignore[attr-defined]
    assert os.stat(new).st_ino in ids
    (new / "sub").rmdir()
    new.rmdir()
    assert pump(kernel, lambda: len(events.of(CgroupOfflineEvent)) == 2)
    runtime.close()


def test_actions_write_the_v2_files(kernel: LinuxKernel, tree: Path) -> None:
    d = app_dir(tree)
    app = kernel.mem_cgroup(APP)
    assert app is not None
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # A real process behind a fake cgroup: cgroup.procs names it, /proc is linked.
        (d / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        os.symlink(f"/proc/{sleeper.pid}", tree / "proc" / str(sleeper.pid))
        tasks = app.tasks()
        assert [t.pid for t in tasks] == [sleeper.pid]
        assert tasks[0].comm == "sleep" and tasks[0].start_time > 0
        # cgroup.kill: written once; the listed tasks are reported (the fake kills nobody).
        (d / "cgroup.kill").write_text("")
        killed = kernel.kill_cgroup(app, "test")
        assert [t.pid for t in killed] == [sleeper.pid]
        assert (d / "cgroup.kill").read_text() == "1"
        # memory.reclaim: the request is written; nothing was reclaimed here.
        assert kernel.reclaim(app, 8 * MiB) == 0
        assert (d / "memory.reclaim").read_text() == str(8 * MiB)
        kernel.set_memory_max(app, None)
        assert (d / "memory.max").read_text() == "max"
        # kill_tasks really kills, through a pidfd, after checking the start time.
        assert [t.pid for t in kernel.kill_tasks(tasks, "test", None)] == [sleeper.pid]
        assert sleeper.wait(5) == -9
        assert kernel.task_is_oom_victim(tasks[0]) is True
    finally:
        sleeper.kill()
        sleeper.wait()


def test_recycled_pid_is_not_killed(kernel: LinuxKernel, tree: Path) -> None:
    d = app_dir(tree)
    app = kernel.mem_cgroup(APP)
    assert app is not None
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (d / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        os.symlink(f"/proc/{sleeper.pid}", tree / "proc" / str(sleeper.pid))
        task = app.tasks()[0]
        import dataclasses

        stale = dataclasses.replace(task, start_time=task.start_time - 1)  # another process
        assert kernel.kill_tasks([stale], "test", None) == []
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_remove_file(kernel: LinuxKernel, tmp_path: Path) -> None:
    import tempfile

    from oomkit.kernel.linux.tmpfs import tmpfs_devices

    if os.stat(tmp_path).st_dev not in tmpfs_devices():  # only tmpfs files are removed
        blob = tmp_path / "blob"
        blob.write_bytes(b"x")
        with pytest.raises(KernelError) as exc:
            kernel.remove_file(str(blob))
        assert exc.value.errno == errno.EPERM and blob.exists()
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev not in tmpfs_devices():
        pytest.skip("no tmpfs at /dev/shm")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        f = Path(d) / "blob"
        f.write_bytes(b"x" * 65536)
        assert kernel.remove_file(str(f)) >= 65536
        assert not f.exists()
        with pytest.raises(KernelError) as exc:
            kernel.remove_file(str(f))
        assert exc.value.errno == errno.ENOENT


def test_psi_trigger_validation(kernel: LinuxKernel) -> None:
    with pytest.raises(KernelError) as exc:  # windows are at most 10 s
        kernel.psi_trigger_create(0, Resource.MEMORY, 100_000, 12_000_000, False)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(KernelError) as exc:  # threshold above the window
        kernel.psi_trigger_create(0, Resource.MEMORY, 3_000_000, 2_000_000, False)
    assert exc.value.errno == errno.EINVAL
    kernel.privileged_psi = False  # without CAP_SYS_RESOURCE: 2 s multiples only
    with pytest.raises(KernelError) as exc:
        kernel.psi_trigger_create(0, Resource.MEMORY, 100_000, 1_000_000, False)
    assert exc.value.errno == errno.EINVAL
    # A regular file is no pressure file: the kernel's error comes through translated.
    with pytest.raises(KernelError) as exc:
        kernel.psi_trigger_create(0, Resource.MEMORY, 100_000, 2_000_000, False)
    assert exc.value.errno == errno.EPERM
    with pytest.raises(CgroupGone):
        kernel.psi_trigger_create(123456789, Resource.MEMORY, 100_000, 2_000_000, False)


def test_declared_oom_validation(kernel: LinuxKernel) -> None:
    runtime = Runtime(kernel)
    assert kernel.out_of_memory(None, order=11) == -errno.EINVAL
    assert kernel.out_of_memory(None, flags=8) == -errno.EINVAL  # type: ignore[arg-type]
    runtime.close()


def test_default_for_system_wide_oom_is_the_kernel(kernel: LinuxKernel) -> None:
    out = kernel.default_oom(OomRequest(None, 0, Constraint.NONE, None, 1))
    assert out.handed_over and out.progress


# -- the watchdog --------------------------------------------------------------------------


def test_watchdog_restores_when_the_pipe_closes(tmp_path: Path) -> None:
    setting = tmp_path / "memory.high"
    setting.write_text("max")
    state = tmp_path / "run" / "restore.json"
    journal = RestoreJournal(str(state))
    journal.record(str(setting), "max")
    setting.write_text("123")  # the change
    assert journal.watchdog_pid is not None
    data = json.loads(state.read_text())
    assert data["watchdog_pid"] == journal.watchdog_pid
    # Simulate our death: close the pipe without restoring (what SIGKILL does).
    proc = journal._proc
    assert proc is not None and proc.stdin is not None
    journal._proc = None
    proc.stdin.close()
    assert proc.wait(5) == 0
    assert setting.read_text() == "max"
    assert not state.exists()


def test_leftover_state_is_restored_on_startup(tmp_path: Path) -> None:
    setting = tmp_path / "memory.oom_control"
    setting.write_text("1")
    state = tmp_path / "restore.json"
    dead = subprocess.Popen(["true"])
    dead.wait()
    state.write_text(json.dumps({
        "version": 1, "pid": dead.pid,
        "settings": [{"path": str(setting), "original": "0", "dir_inode": 0}],
    }))
    journal = RestoreJournal(str(state), watchdog=False)
    assert [why for _, why in journal.leftovers] == [None]
    assert setting.read_text() == "0"
    assert not state.exists()


def test_watchdog_skips_a_replaced_cgroup(tmp_path: Path) -> None:
    d = tmp_path / "cg"
    d.mkdir()
    (d / "memory.high").write_text("7")
    other_inode = os.stat(d).st_ino + 1  # what the directory was when we changed it
    why = restore.restore_setting(restore.Setting(str(d / "memory.high"), "5", other_inode))
    assert why == "cgroup was replaced"
    assert (d / "memory.high").read_text() == "7"
    gone = restore.Setting(str(tmp_path / "nope" / "memory.high"), "5", 1)
    assert restore.restore_setting(gone) == "cgroup is gone"


def test_linux_cgroup_is_a_cgroup(kernel: LinuxKernel) -> None:
    assert isinstance(kernel.root_mem_cgroup(), LinuxCgroup)


def test_guard_margin_in_bytes(tree: Path) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    k = LinuxKernel(
        str(tree / "cg"), str(tree / "proc"), kmsg_path=None, guard_margin=lambda m: 8 * MiB
    )
    try:
        k.watch_oom(k.mem_cgroup(APP))
        assert (d / "memory.high").read_text() == str(56 * MiB)
    finally:
        k.close()
    assert (d / "memory.high").read_text() == "max"
