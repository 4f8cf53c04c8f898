"""PSI on the real kernel: a thrasher trips a system-wide trigger, a PsiOps declares an OOM
at the thrasher's memcg, and the default killer (the kernel's victim selection) kills it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from oomkit.events import EventList, OomEvent, PsiEventRecord
from oomkit.kernel.base import Resource
from oomkit.kernel.linux import LinuxKernel
from oomkit.ops import Psi, PsiOps
from oomkit.runtime import Runtime

from .conftest import LiveCgroups, MiB
from .test_live_oom import served

pytestmark = pytest.mark.privileged


class DeclareOnPressure(PsiOps):
    """Turn sustained system-wide memory pressure into an OOM at one memcg."""

    name = "declare_on_pressure"

    def __init__(self, target: str) -> None:
        self.target = target
        self.results: list[int] = []
        self.fired = threading.Event()
        # The trigger is system-wide: pressure from anything else on the machine may fire
        # it too; act only once the test has its thrasher in place.
        self.armed = threading.Event()

    def init(self, psi: Psi) -> int:
        # 100 ms of stall within 2 s (unprivileged windows are multiples of 2 s).
        psi.create_trigger(0, Resource.MEMORY, 100_000, 2_000_000)
        return 0

    def handle_psi_event(self, psi, trigger) -> None:  # type: ignore[no-untyped-def]
        if not self.armed.is_set():
            return
        memcg = psi.kernel.mem_cgroup(self.target)
        if memcg is None or not memcg.tasks():
            return
        self.results.append(
            psi.kernel.out_of_memory(memcg, constraint_text="CONSTRAINT_PSI_MEM")
        )
        self.fired.set()


def make_big_file(path: Path, size: int) -> None:
    chunk = b"\x5a" * MiB
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        # Out of the page cache, so the thrasher has to read it from disk again and again.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_thrasher_trips_psi_and_a_declared_oom_kills_it(
    live: LiveCgroups, tmp_path: Path
) -> None:
    box = live.mkdir("thrash", limit=64 * MiB)
    big = tmp_path / "big"
    make_big_file(big, 256 * MiB)
    kernel = LinuxKernel(str(live.root), state_file=str(tmp_path / "restore.json"))
    events = EventList()
    runtime = Runtime(kernel, sink=events)
    policy = DeclareOnPressure("/thrash")
    runtime.attach_psi(policy)
    with served(kernel, runtime):
        hog = live.spawn(box, "thrash", 0, str(big))
        assert hog.wait_ready()
        policy.armed.set()
        assert policy.fired.wait(15), "the PSI trigger did not fire"
        assert hog.wait_dead(5)
        assert hog.proc.returncode == -9
    assert policy.results and policy.results[0] == 1
    psi = [e for e in events.events if isinstance(e, PsiEventRecord)]
    assert psi and psi[0].cgroup_id == 0 and psi[0].window_us == 2_000_000
    ooms = [e for e in events.of(OomEvent) if isinstance(e, OomEvent)]
    declared = [e for e in ooms if e.constraint == "DECLARED"]
    assert declared and declared[0].constraint_text == "CONSTRAINT_PSI_MEM"
    assert declared[0].resolved_by == "default"
    assert [v.pid for v in declared[0].victims] == [hog.pid]
    assert declared[0].memcg == "/thrash"
