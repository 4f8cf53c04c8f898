"""LinuxKernel on a real cgroup v2 memory controller (inside the QEMU guest only).

The seed's test_oom through the v2 guard band, cgroup_iter_memcg's statistics, test_psi
with a per-cgroup full-memory trigger, the guard band's two outcomes (handler first;
kernel killer when the handlers free nothing), and a system-wide OOM left to the kernel.
Every cgroup lives under /sys/fs/cgroup/oomkit-test-* (the ``tree`` fixture) and every hog
in a limited cgroup, except the system-wide leaker (oom_score_adj 1000, ours -1000).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.events import EventList, OomEvent, PsiEventRecord
from oomkit.kernel.base import Cgroup
from oomkit.kernel.linux import LinuxCgroup, LinuxKernel
from oomkit.live import serving as served
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.runtime import Runtime
from tests.contract.memcg_stats import check_memcg_stats

from .conftest import GUEST_ONLY, MiB, V2Tree, events, wait_for

pytestmark = GUEST_ONLY

SLOW = 90.0  # seconds: anything timed under TCG gets this much


def _examples() -> Path:
    return Path(__file__).resolve().parents[3] / "examples/policies"


def _load(name: str):  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"oomkit_guest_{name}", _examples() / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod




def ooms(ev: EventList) -> list[OomEvent]:
    return [e for e in ev.events if isinstance(e, OomEvent)]


def _kernel(tree: V2Tree, tmp_path: Path, **kw: object) -> LinuxKernel:
    kernel = LinuxKernel(str(tree.root), state_file=str(tmp_path / "restore.json"), **kw)  # type: ignore[arg-type]
    assert kernel.version == 2
    return kernel


# -- 1. the seed's test_oom ------------------------------------------------------------------


def test_seed_test_oom_guard_band(tree: V2Tree, tmp_path: Path) -> None:
    # The seed uses memory.max 80M for 10+40+30 MiB, then 20 MiB more. With the guard
    # band (memory.high = max - 5%, at least 4 MiB) 80 MiB of hogs would already sit in
    # the band before cg5, so the parent gets 100M: band at 95 MiB, 80 MiB + the hogs'
    # own few MiB below it, cg5's 20 MiB on top well above it.
    top = tree.mkdir("oom_test", max=100 * MiB)
    for rel in ("cg1", "cg2", "cg3/cg4", "cg3/cg5"):
        tree.mkdir(f"oom_test/{rel}")
    seed = _load("seed_test_oom")
    kernel = _kernel(tree, tmp_path)
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    runtime.attach_oom(seed.SeedTestOom(), "/oom_test")  # declines
    runtime.attach_oom(seed.SeedTestOom(), None)  # acts
    band = int((top / "memory.high").read_text())
    assert band == 95 * MiB, band
    with served(kernel, runtime):
        h1 = tree.spawn(top / "cg1", "anon", 10 * MiB, oom_score_adj=1000)
        assert h1.wait_ready(SLOW)
        h2 = tree.spawn(top / "cg2", "anon", 40 * MiB, oom_score_adj=-1000)
        assert h2.wait_ready(SLOW)
        h4 = tree.spawn(top / "cg3/cg4", "anon", 30 * MiB)
        assert h4.wait_ready(SLOW)
        before = int((top / "memory.current").read_text())
        assert before < band, f"{before} already in the band before cg5"
        h5 = tree.spawn(top / "cg3/cg5", "anon", 20 * MiB)
        assert h5.wait_ready(SLOW), "cg5's allocation should go through once cg4 is killed"
        assert h4.wait_dead(SLOW)
        assert h4.proc.returncode == -9
        assert h1.alive() and h2.alive() and h5.alive()
    handled = [e for e in ooms(ev) if e.resolved_by == "handler"]
    assert handled, ooms(ev)
    assert handled[0].policy == "test_out_of_memory"
    assert handled[0].memcg == "/oom_test"
    assert handled[0].constraint == "MEMCG"
    assert [v.pid for v in handled[0].victims] == [h4.pid]
    assert [c.returned for c in handled[0].handlers][:1] == [False]  # the cgroup's declined
    assert not [e for e in ooms(ev) if e.resolved_by != "handler"], ooms(ev)
    assert events(top / "memory.events")["oom_kill"] == 0  # the kernel killer never ran
    # serve restored memory.high on the way out.
    assert (top / "memory.high").read_text().strip() == "max"
    assert not (tmp_path / "restore.json").exists()


# -- 2. cgroup_iter_memcg --------------------------------------------------------------------


@pytest.fixture
def no_thp() -> Iterator[None]:
    """THP off for the test: the guest kernel's default is "always", so a 16 MiB anon
    mapping takes 8 huge-page faults, and the seed counts one pgfault per 4 KiB page."""
    knob = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not knob.exists():
        yield
        return
    old = knob.read_text().split("[")[1].split("]")[0]
    knob.write_text("never")
    try:
        yield
    finally:
        knob.write_text(old)


def test_memcg_stats_on_v2(tree: V2Tree, ramfs_dir: Path, no_thp: None) -> None:
    tree.mkdir("stats", max=128 * MiB)
    kernel = LinuxKernel(str(tree.root), kmsg_path=None)
    try:
        cg = kernel.mem_cgroup("/stats")
        assert cg is not None

        def spawn(cgroup: Cgroup, kind: str, size: int, path: str):  # type: ignore[no-untyped-def]
            assert isinstance(cgroup, LinuxCgroup)
            hog = tree.spawn(Path(cgroup.dir), kind, size, path)

            class Ready:
                def wait_ready(self) -> bool:
                    return hog.wait_ready(SLOW)

            return Ready()

        check_memcg_stats(kernel, cg, spawn, str(ramfs_dir))
    finally:
        kernel.close()


# -- 3. test_psi -----------------------------------------------------------------------------


def test_seed_test_psi_on_v2(tree: V2Tree, tmp_path: Path) -> None:
    tree.mkdir("psi_test/cg1")
    cg2 = tree.mkdir("psi_test/cg2", high=40 * MiB)
    seed = _load("seed_test_psi")
    kernel = _kernel(tree, tmp_path)
    assert kernel.privileged_psi, "root in the guest has CAP_SYS_RESOURCE"
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    psi_ops = seed.SeedTestPsi()
    runtime.attach_psi(psi_ops)
    runtime.attach_oom(seed.KillAll(), "/psi_test/cg2")
    with served(kernel, runtime):
        h1 = tree.spawn(tree.root / "psi_test/cg1", "anon", 8 * MiB)
        assert h1.wait_ready(SLOW)
        hog = tree.spawn(cg2, "anon", 500 * MiB)
        assert hog.wait_dead(SLOW * 2), "the PSI trigger + declared OOM should kill the hog"
        assert hog.proc.returncode == -9
        assert h1.alive()
    psi = [e for e in ev.events if isinstance(e, PsiEventRecord)]
    cg2_id = os.stat(cg2).st_ino
    assert psi and psi[0].cgroup_id == cg2_id and psi[0].full
    assert (psi[0].threshold_us, psi[0].window_us) == (100_000, 1_000_000)
    declared = [e for e in ooms(ev) if e.constraint == "DECLARED"]
    assert declared, ooms(ev)
    first = declared[0]
    assert first.constraint_text == "CONSTRAINT_PSI_MEM"
    assert first.memcg == "/psi_test/cg2"
    assert first.policy == "test_psi_kill"
    assert [v.pid for v in first.victims] == [hog.pid]
    assert events(cg2 / "memory.events")["oom_kill"] == 0
    assert (cg2 / "memory.high").read_text().strip() == str(40 * MiB)  # the user's, kept


# -- 4. the guard band: handlers first, the kernel killer as the fallback --------------------


class KillLargest(OomOps):
    name = "kill_largest"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        assert oc.memcg is not None
        tasks = [t for c in oc.memcg.walk() for t in c.tasks()]
        if not tasks:
            return False
        oc.kill_process(max(tasks, key=lambda t: t.rss), "guard band test")
        return True


class Declines(OomOps):
    name = "declines"

    def __init__(self) -> None:
        self.calls = 0

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        self.calls += 1
        return False


def test_guard_band_runs_handlers_before_the_kernel_killer(tree: V2Tree, tmp_path: Path) -> None:
    box = tree.mkdir("box", max=32 * MiB)
    kernel = _kernel(tree, tmp_path)
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    runtime.attach_oom(KillLargest(), "/box")
    assert int((box / "memory.high").read_text()) == 28 * MiB  # 32M - max(5%, 4 MiB)
    with served(kernel, runtime):
        hog = tree.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(SLOW)
        assert hog.proc.returncode == -9
        assert wait_for(lambda: any(e.resolved_by == "handler" for e in ooms(ev)), SLOW)
        # After the kill the band is back (it was never released).
        assert int((box / "memory.high").read_text()) == 28 * MiB
    handled = [e for e in ooms(ev) if e.resolved_by == "handler"]
    assert handled[0].memcg == "/box" and handled[0].policy == "kill_largest"
    assert [v.pid for v in handled[0].victims] == [hog.pid]
    assert events(box / "memory.events")["oom_kill"] == 0
    assert events(box / "memory.events")["high"] > 0
    assert (box / "memory.high").read_text().strip() == "max"


def test_guard_band_hands_over_to_the_kernel_killer(tree: V2Tree, tmp_path: Path) -> None:
    box = tree.mkdir("box", max=32 * MiB)
    kernel = _kernel(tree, tmp_path)
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    policy = Declines()
    runtime.attach_oom(policy, "/box")
    with served(kernel, runtime):
        assert kernel.reads_kmsg, "/dev/kmsg is readable in the guest"
        hog = tree.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(SLOW), "the kernel OOM killer should have killed the hog"
        assert hog.proc.returncode == -9
        assert wait_for(lambda: events(box / "memory.events")["oom_kill"] >= 1, SLOW)
        # Usage fell below the band: it is re-armed, at least the 4 MiB floor below
        # memory.max; wider when the band was sized from the hog's measured rate or
        # widened after this escape to the kernel (kernel/linux/band.py).
        high = box / "memory.high"
        assert wait_for(lambda: high.read_text().strip() != "max"
                        and int(high.read_text()) <= 28 * MiB, SLOW), high.read_text()
        assert int(high.read_text()) >= 4 * MiB
    assert policy.calls >= 1
    default = [e for e in ooms(ev) if e.resolved_by == "default"]
    assert default and default[0].memcg == "/box"
    assert "memory.high restored" in default[0].note
    # One OOM, one record (issue 14 item 8): the kernel's kill of the OOM handed over is
    # that OOM, not a second one (nor a second count in oomkit_ooms_total).
    assert len(default) == 1
    assert [e for e in ooms(ev) if e.resolved_by == "kernel"] == []
    assert events(box / "memory.events")["oom_kill"] == 1
    assert (box / "memory.high").read_text().strip() == "max"


# -- 5. system-wide: the kernel killer alone --------------------------------------------------


def test_system_wide_oom_resolved_by_the_kernel(tree: V2Tree, tmp_path: Path) -> None:
    leak = tree.mkdir("leak")
    (tree.root / "memory.max").write_text("max")  # no backstop: a real system-wide OOM
    adj = Path("/proc/self/oom_score_adj")
    own_adj = adj.read_text().strip()
    adj.write_text("-1000")
    overcommit = Path("/proc/sys/vm/overcommit_memory")
    own_overcommit = overcommit.read_text().strip()
    overcommit.write_text("1")  # a mapping bigger than RAM is fine; touching it is not
    kernel = LinuxKernel(state_file=str(tmp_path / "restore.json"))  # the whole guest
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    runtime.attach_oom(Declines(), None)
    # The MemAvailable watch off: it would see the leak first and the default killer take
    # it (test_guest_system_oom.py); here the kernel killer acts alone and is reported.
    kernel.system.disarm()
    try:
        with served(kernel, runtime):
            # Twice the guest's RAM.
            hog = tree.spawn(leak, "anon", 2048 * MiB, oom_score_adj=1000)
            assert hog.wait_dead(SLOW * 2), "the kernel OOM killer should kill the leaker"
            assert hog.proc.returncode == -9
            assert wait_for(
                lambda: any(
                    e.resolved_by == "kernel" and hog.pid in [v.pid for v in e.victims]
                    for e in ooms(ev)
                ),
                SLOW,
            ), ooms(ev)
    finally:
        adj.write_text(own_adj)
        overcommit.write_text(own_overcommit)
    kernel_side = [e for e in ooms(ev) if e.resolved_by == "kernel"]
    assert kernel_side[0].constraint == "NONE"
    assert kernel_side[0].victims[0].cgroup.endswith("/leak")
    assert events(leak / "memory.events")["oom_kill"] == 1
