"""The v2 band's and the system-wide watch's timing on the fake v2 tree (recorded 6.1 files).

As in test_linux_fake_v2: the tests play the kernel by rewriting its files and drive the
event loop with ``kernel.poll()``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.kernel.linux import LinuxKernel
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.runtime import Runtime
from tests.unit.test_linux_fake_v2 import APP, Declines, app_dir, bump_events, pump
from tests.unit.test_linux_fake_v2 import tree as tree

MiB = 1 << 20


@pytest.fixture
def patient(tree: Path) -> Iterator[LinuxKernel]:
    """guard_stuck_s 5 s: the longest the band may wait, far above what these tests allow."""
    k = LinuxKernel(str(tree / "cg"), str(tree / "proc"), kmsg_path=None,
                    state_file=str(tree / "restore.json"), watchdog=False,
                    guard_stuck_s=5.0)  # fmt: skip
    yield k
    k.close()


def set_stat(d: Path, **values: int) -> None:
    text = (d / "memory.stat").read_text()
    for key, value in values.items():
        text = re.sub(rf"^{key} \d+$", f"{key} {value}", text, flags=re.M)
    (d / "memory.stat").write_text(text)


def test_an_anon_cgroup_in_its_band_is_an_oom_at_the_first_notification(
    patient: LinuxKernel, tree: Path
) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    runtime = Runtime(patient)
    policy = Declines()
    runtime.attach_oom(policy, APP)
    # The recorded stat: 40 MiB anon, file all shmem, no swap: nothing to give back.
    (d / "memory.current").write_text(str(60 * MiB + 4096))
    started = time.monotonic()
    bump_events(d, high=1)
    assert pump(patient, lambda: bool(policy.seen), timeout=2.0)
    assert time.monotonic() - started < 1.0  # not guard_stuck_s (5 s) later
    runtime.close()


def test_cache_to_reclaim_means_wait_and_no_progress_ends_it(
    tree: Path,
) -> None:
    k = LinuxKernel(str(tree / "cg"), str(tree / "proc"), kmsg_path=None,
                    state_file=str(tree / "restore.json"), watchdog=False,
                    guard_stuck_s=0.4)  # fmt: skip
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    set_stat(d, file=40 * MiB, shmem=0)  # 40 MiB of clean page cache the kernel can drop
    runtime = Runtime(k)
    policy = Declines()
    runtime.attach_oom(policy, APP)
    (d / "memory.current").write_text(str(60 * MiB + 4096))
    started = time.monotonic()
    bump_events(d, high=1)
    pump(k, lambda: bool(policy.seen), timeout=0.2)
    assert policy.seen == []  # reclaim may still win: waiting
    # Nothing changes (no progress): after guard_stuck_s in the band it is an OOM.
    assert pump(k, lambda: bool(policy.seen), timeout=3.0)
    assert time.monotonic() - started >= 0.35
    runtime.close()
    k.close()


def write_meminfo(tree: Path, avail_kib: int) -> None:
    p = tree / "proc" / "meminfo"
    p.write_text(re.sub(r"^MemAvailable:\s+\d+ kB$", f"MemAvailable:   {avail_kib} kB",
                        p.read_text(), flags=re.M))  # fmt: skip


def test_system_watch_declares_when_memavailable_runs_low(
    patient: LinuxKernel, tree: Path
) -> None:
    runtime = Runtime(patient)
    policy = Declines()
    runtime.attach_oom(policy, None)  # system-wide: arms the MemAvailable watch
    watch = patient.system
    assert watch.armed and watch.last is not None
    # 790 MiB above 5 % of 958 MiB: 0.13 s at 6000 MiB/s (earlyoom's bound)
    assert 0.1 <= watch.interval < 0.2
    pump(patient, lambda: False, timeout=0.3)
    assert policy.seen == []
    write_meminfo(tree, 20_000)  # ~20 MiB: below 5 %
    assert pump(patient, lambda: bool(policy.seen), timeout=2.0)
    oc = policy.seen[0]
    assert oc.memcg is None
    n = len(policy.seen)
    pump(patient, lambda: False, timeout=0.2)  # still short: not declared again at once
    assert len(policy.seen) == n
    runtime.close()
    assert not watch.armed


class KillsSlowly(OomOps):
    """Takes 50 ms to decide, then "kills": marks the SIGKILL time as the killer does
    (the fake tree's tasks are not real processes to kill)."""

    name = "kills_slowly"

    def __init__(self, kernel: LinuxKernel) -> None:
        self.kernel = kernel
        self.calls = 0

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self.calls += 1
        time.sleep(0.05)
        self.kernel.killer.last_kill_at = self.kernel.clock.now()
        return True


def test_the_system_watch_plans_for_the_reaction_it_measured(
    patient: LinuxKernel, tree: Path
) -> None:
    runtime = Runtime(patient)
    policy = KillsSlowly(patient)
    runtime.attach_oom(policy, None)
    watch = patient.system
    assert watch.reaction_s == 0.0
    write_meminfo(tree, 20_000)  # below 5 %
    assert pump(patient, lambda: policy.calls > 0, timeout=2.0)
    assert len(watch.reactions) == 1
    assert 0.05 <= watch.reaction_s == watch.reactions[0] < 1.0  # look to SIGKILL
    runtime.close()


def test_an_escape_to_the_kernel_killer_widens_the_band(
    patient: LinuxKernel, tree: Path
) -> None:
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    runtime = Runtime(patient)
    runtime.attach_oom(Declines(), APP)
    assert (d / "memory.high").read_text() == str(60 * MiB)  # 64M less the 4M floor
    (d / "memory.current").write_text(str(20 * MiB))
    bump_events(d, oom=1, oom_kill=1)  # the kernel killed at memory.max: an escape
    assert pump(patient, lambda: (d / "memory.high").read_text() == str(56 * MiB))
    runtime.close()
    assert (d / "memory.high").read_text() == "max"


class FreesAFile(OomOps):
    """Frees memory the way a handler may (a file removed), no process needed."""

    name = "frees_a_file"

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.calls = 0

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self.calls += 1
        blob = self.scratch / f"blob{self.calls}"
        blob.write_bytes(b"x" * 65536)
        return oc.remove_file(str(blob)) > 0


def test_a_later_oom_in_the_same_cgroup_goes_to_the_handler_again(tree: Path) -> None:
    k = LinuxKernel(str(tree / "cg"), str(tree / "proc"), kmsg_path=None,
                    state_file=str(tree / "restore.json"), watchdog=False,
                    max_stall_s=0.3, recheck_s=0.1)  # fmt: skip
    d = app_dir(tree)
    (d / "memory.high").write_text("max\n")
    runtime = Runtime(k)
    policy = FreesAFile(tree)
    runtime.attach_oom(policy, APP)
    for n in (1, 2):
        (d / "memory.current").write_text(str(60 * MiB + 4096))
        bump_events(d, high=1)
        assert pump(k, lambda n=n: policy.calls == n)  # type: ignore[misc]
        (d / "memory.current").write_text(str(20 * MiB))  # the victim went; no event says so
        pump(k, lambda: False, timeout=0.5)  # longer than max_stall_s
    assert (d / "memory.high").read_text() == str(60 * MiB)  # never handed over
    runtime.close()
    k.close()
