"""The seed's test_oom on real memcgs, and the fallbacks of the v1 OOM path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from oomkit.events import EventList, OomEvent
from oomkit.kernel.base import OOM_SCORE_ADJ_MIN
from oomkit.kernel.linux import LinuxKernel
from oomkit.live import serving as served
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.runtime import Runtime

from .conftest import LiveCgroups, MiB, can_lower_oom_score_adj, wait_for

pytestmark = pytest.mark.privileged


class LargestLeaf(OomOps):
    """The seed's BPF policy: walk leaves post-order, usage minus page cache, skip cgroups
    holding a -1000 task, kill every task of the winner."""

    name = "largest_leaf"

    def __init__(self, protected: frozenset[str] = frozenset()) -> None:
        # Cgroups to skip as if they held a -1000 task: where we lack CAP_SYS_RESOURCE
        # and cannot set -1000 (this very machine), the test protects cg2 this way.
        self.protected = protected

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        root = oc.memcg or oc.kernel.root_mem_cgroup()
        best, best_usage = None, -1
        for cg in root.walk("post"):
            if cg.children():
                continue
            tasks = cg.tasks()
            if cg.path in self.protected:
                continue
            if not tasks or any(t.oom_score_adj == OOM_SCORE_ADJ_MIN for t in tasks):
                continue
            usage = cg.usage() - cg.page_state("file")
            if usage > best_usage:
                best, best_usage = (cg, tasks), usage
        if best is None:
            return False
        for task in best[1]:
            oc.kill_process(task, "largest leaf")
        return True




def oom_control(d: Path) -> dict[str, int]:
    lines = (d / "memory.oom_control").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines)}


def ooms(events: EventList, resolved_by: str) -> list[OomEvent]:
    return [e for e in events.events if isinstance(e, OomEvent) and e.resolved_by == resolved_by]


def test_seed_test_oom_largest_leaf(live_v1: LiveCgroups, tmp_path: Path) -> None:
    live = live_v1
    top = live.mkdir("oom_test", limit=90 * MiB)
    for rel in ("cg1", "cg2", "cg3/cg4", "cg3/cg5"):
        live.mkdir(f"oom_test/{rel}")
    kernel = LinuxKernel(str(live.root), state_file=str(tmp_path / "restore.json"))
    events = EventList()
    runtime = Runtime(kernel, sink=events)
    protect = can_lower_oom_score_adj()
    policy = LargestLeaf() if protect else LargestLeaf(frozenset({"/oom_test/cg2"}))
    runtime.attach_oom(policy, "/oom_test")
    assert oom_control(top)["oom_kill_disable"] == 1
    with served(kernel, runtime):
        h1 = live.spawn(top / "cg1", "anon", 10 * MiB, oom_score_adj=1000)
        assert h1.wait_ready()
        h2 = live.spawn(top / "cg2", "anon", 40 * MiB, oom_score_adj=-1000 if protect else 0)
        assert h2.wait_ready()
        h4 = live.spawn(top / "cg3/cg4", "anon", 30 * MiB)
        assert h4.wait_ready()
        h5 = live.spawn(top / "cg3/cg5", "anon", 20 * MiB)
        assert h5.wait_ready(10), "cg5's allocation should go through once cg4 is killed"
        assert h4.wait_dead()
        assert h4.proc.returncode == -9
        assert h1.alive() and h2.alive() and h5.alive()
    ooms = [e for e in events.of(OomEvent) if isinstance(e, OomEvent)]
    handled = [e for e in ooms if e.resolved_by == "handler"]
    assert handled and handled[0].policy == "largest_leaf"
    assert [v.pid for v in handled[0].victims] == [h4.pid]
    assert handled[0].victims[0].reason == "largest leaf"  # the handler's kill message
    assert handled[0].to_dict()["victims"][0]["reason"] == "largest leaf"
    assert handled[0].memcg == "/oom_test"
    assert not [e for e in ooms if e.resolved_by != "handler"]
    # Everything restored on the way out.
    for d in (top, top / "cg1", top / "cg3/cg5"):
        assert oom_control(d)["oom_kill_disable"] == 0
    assert not (tmp_path / "restore.json").exists()


class Raises(OomOps):
    name = "raises"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        raise RuntimeError("policy bug")


class Hangs(OomOps):
    name = "hangs"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        time.sleep(3)
        return False


@pytest.mark.parametrize("policy", [Raises(), Hangs()], ids=["raises", "hangs"])
def test_failing_policy_kernel_killer_resolves(
    live_v1: LiveCgroups, tmp_path: Path, policy: OomOps
) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    kernel = LinuxKernel(str(live.root), state_file=str(tmp_path / "restore.json"))
    events = EventList()
    runtime = Runtime(kernel, sink=events, budget_s=0.3)
    runtime.attach_oom(policy, "/box")
    with served(kernel, runtime):
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(5), "the kernel OOM killer should have killed the hog"
        assert hog.proc.returncode == -9
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 3), "re-armed"
        time.sleep(0.3)  # the kernel's kill is reported by now (kmsg or counters)
    kinds = [(e.kind, getattr(e, "resolved_by", None)) for e in events.events]
    assert ("handler_error", None) in kinds
    default = ooms(events, "default")
    assert default and "oom_kill_disable 0" in default[0].note
    # One OOM, one record (issue 14 item 8): the kernel's kill of the OOM handed over is
    # not a second OOM.
    assert len(default) == 1 and ooms(events, "kernel") == []
    assert oom_control(box)["oom_kill_disable"] == 0  # restored on exit


RUNTIME_SCRIPT = """
import sys, threading
from oomkit.kernel.linux import LinuxKernel
from oomkit.live import serve
from oomkit.ops import OomOps
from oomkit.runtime import Runtime

class Nothing(OomOps):
    name = "nothing"

kernel = LinuxKernel(sys.argv[1], state_file=sys.argv[2])
runtime = Runtime(kernel)
runtime.attach_oom(Nothing(), "/box")
serve(kernel, runtime, threading.Event(), on_ready=lambda: print("ready", flush=True))
"""


def test_sigkill_of_the_runtime_restores_the_kernel_killer(
    live_v1: LiveCgroups, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    state = tmp_path / "restore.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNTIME_SCRIPT, str(live.root), str(state)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        assert oom_control(box)["oom_kill_disable"] == 1
        assert state.exists()
        # A memcg made below an armed one inherits oom_kill_disable 1 (v1 copies it at
        # mkdir): the runtime must journal it, or it would stay disabled after we die.
        child = live.mkdir("box/child")
        assert oom_control(child)["oom_kill_disable"] == 1
        assert wait_for(lambda: "box/child" in state.read_text(), 5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        # The watchdog notices at once and writes the original value back.
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 0, 2)
        assert wait_for(lambda: oom_control(child)["oom_kill_disable"] == 0, 2)
        assert wait_for(lambda: not state.exists(), 2)
        start = time.monotonic()
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(2), "the kernel OOM killer must act without the runtime"
        assert hog.proc.returncode == -9
        assert time.monotonic() - start < 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
