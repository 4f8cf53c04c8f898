"""A system-wide OOM in the guest resolved by a system-wide OomOps (inside the VM only).

A leaker in its own cgroup (no memory.max, oom_score_adj 0: the kernel killer would take
it too, the point is that the *handler* picks it first) grows at ~64 MiB/s, touching every
page, until the guest runs short of memory. LinuxKernel's system-wide watch (PSI on
/proc/pressure/memory gated by MemAvailable) hands the OOM to LargestLeaf, which kills the
leaker's cgroup before the kernel killer runs: the OOM event has memcg None and
resolved_by "handler", the leaker is its victim, no "kernel" OOM is reported, and
/proc/vmstat oom_kill did not move.

Parameters (and why they differ from the defaults): the default trigger is "some 150 ms
per 2 s" with MemAvailable < 3% of MemTotal. In a 1G guest 3% is ~30 MiB, which the leaker
crosses well under a second before the kernel killer, and a PSI trigger fires at most
once per window: a 2 s window can spend its one event while MemAvailable is still above
the gate and then stay silent until the kernel has killed. Root has CAP_SYS_RESOURCE, so
the test uses a 500 ms window with a 10 ms threshold (an anonymous leaker on a machine
without swap stalls only briefly before the end: at 50 ms the trigger stayed silent in
about one run in five and the kernel won) and a 10% MemAvailable gate (~100 MiB). After an
event the runtime samples MemAvailable every 100 ms for 10 s, and the leaker slows to
16 MiB/s past 60% of RAM, so the gate is crossed well inside that watch.

Cleanup, failures included: the leaker is killed and its cgroup removed (``tree``), and
our own oom_score_adj (-1000 for the test, so the kernel never picks pytest) is restored.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oomkit.events import EventList, OomEvent
from oomkit.kernel.linux import LinuxKernel
from oomkit.live import serving as served
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.policies.largest_leaf import LargestLeaf
from oomkit.runtime import Runtime
from tests.live.conftest import Hog

from .conftest import GUEST_ONLY, MiB, V2Tree, events, wait_for

pytestmark = GUEST_ONLY

SLOW = 90.0  # seconds: anything timed under TCG gets this much
CHUNK = 4 * MiB
RATE = 16 * MiB  # bytes per second near the end: slow enough for PSI + MemAvailable to see
# it coming even when emulation is slowed down by a busy host (64 MiB/s failed 1 run in 5)
FAST_SHARE = 0.6  # of MemTotal, allocated at full speed first so the test stays short

# argv: cgroup_dir chunk rate fast_until. Resets the oom_score_adj -1000 it inherits from
# pytest to 0 and joins its cgroup first, waits for one byte on stdin, then maps and
# touches `chunk` bytes at a time, at full speed up to `fast_until` bytes and paced to
# `rate` after that, printing its total, forever.
LEAKER = r"""
import mmap, os, sys, time
cgroup, chunk, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fast_until = int(sys.argv[4])
open("/proc/self/oom_score_adj", "w").write("0")
open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
print("joined", flush=True)
os.read(0, 1)
keep = []
start = None
total = 0
while True:
    m = mmap.mmap(-1, chunk, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, chunk, 4096):
        m[i] = 1
    keep.append(m)
    total += chunk
    print(total >> 20, flush=True)
    if total < fast_until:
        continue
    if start is None:
        start, base = time.monotonic(), total
    delay = start + (total - base) / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"""


def vmstat(key: str) -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, value = line.split()
        if name == key:
            return int(value)
    raise KeyError(key)


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@contextmanager
def protected() -> Iterator[None]:
    """oom_score_adj -1000 for pytest (and so for the serve thread) while the test runs."""
    adj = Path("/proc/self/oom_score_adj")
    own = adj.read_text().strip()
    adj.write_text("-1000")
    try:
        yield
    finally:
        adj.write_text(own)




def spawn_leaker(tree: V2Tree, cgroup: Path) -> Hog:
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", LEAKER, str(cgroup), str(CHUNK), str(RATE),
         str(int(meminfo("MemTotal") * FAST_SHARE))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
    )
    hog = Hog(proc, cgroup, "leak", 0)
    tree.hogs.append(hog)  # killed by the fixture whatever happens
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"joined":
        hog.kill()
        raise AssertionError(f"leaker did not join {cgroup}: {line!r}")
    return hog


def ooms(ev: EventList) -> list[OomEvent]:
    return [e for e in ev.events if isinstance(e, OomEvent)]


def test_system_wide_oom_resolved_by_the_handler(tree: V2Tree, tmp_path: Path) -> None:
    leak = tree.mkdir("leak")
    (tree.root / "memory.max").write_text("max")  # no backstop: a real system-wide shortage
    total = meminfo("MemTotal")
    kernel = LinuxKernel(
        state_file=str(tmp_path / "restore.json"),  # the whole guest
        system_psi=(10_000, 500_000),  # any stall: near exhaustion it may be brief
        system_min_available=0.10,
    )
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    runtime.attach_oom(LargestLeaf(), None)
    kills_before = vmstat("oom_kill")
    with protected(), served(kernel, runtime):
        hog = spawn_leaker(tree, leak)
        started = time.monotonic()
        hog.go()
        assert hog.wait_dead(SLOW * 2), "the system-wide handler should kill the leaker"
        elapsed = time.monotonic() - started
        assert hog.proc.returncode == -9
        handled_soon = wait_for(lambda: any(e.resolved_by == "handler" for e in ooms(ev)), SLOW)
        assert handled_soon, ooms(ev)
    assert hog.proc.stdout is not None
    grown = hog.proc.stdout.read().split()
    peak = int(grown[-1]) if grown else 0
    t0 = ooms(ev)[0].time if ooms(ev) else 0.0
    print(f"leaker grew to {peak} MiB of {total >> 20} MiB in {elapsed:.1f} s")
    for e in ooms(ev):
        calls = [(c.name, c.returned, c.memory_freed) for c in e.handlers]
        print(f"  +{e.time - t0:.2f}s {e.memcg} {e.resolved_by} {calls} {e.note!r}")
    handled = [e for e in ooms(ev) if e.resolved_by == "handler"]
    first = handled[0]
    assert first.memcg is None
    assert first.constraint == "NONE"
    assert first.policy == "largest_leaf"
    assert [v.pid for v in first.victims] == [hog.pid]
    assert first.victims[0].cgroup.endswith("/leak")
    # One kill in all: no later event (pressure lags the victim's exit) took anyone else.
    assert [v.pid for e in ooms(ev) for v in e.victims] == [hog.pid], ooms(ev)
    # The kernel killer never ran: not reported, not counted.
    assert not [e for e in ooms(ev) if e.resolved_by == "kernel"], ooms(ev)
    assert vmstat("oom_kill") == kills_before
    assert events(leak / "memory.events")["oom_kill"] == 0
    # The leaker really pressed on the guest before it was killed.
    assert peak << 20 > total // 2, f"leaker only reached {peak} MiB"
    assert not (tmp_path / "restore.json").exists()


class Declines(OomOps):
    name = "declines"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        return False


def test_with_the_defaults_the_default_killer_acts_before_the_kernel(
    tree: V2Tree, tmp_path: Path
) -> None:
    """LinuxKernel's defaults (MemAvailable at 5 %, no PSI needed) and a system-wide handler
    that frees nothing: the default killer makes the kernel's choice (the leaker, the
    largest) before the kernel's own killer runs, once."""
    leak = tree.mkdir("leak")
    (tree.root / "memory.max").write_text("max")
    kernel = LinuxKernel(state_file=str(tmp_path / "restore.json"))
    ev = EventList()
    runtime = Runtime(kernel, sink=ev)
    runtime.attach_oom(Declines(), None)
    kills_before = vmstat("oom_kill")
    with protected(), served(kernel, runtime):
        hog = spawn_leaker(tree, leak)
        hog.go()
        assert hog.wait_dead(SLOW * 2), "the default killer should kill the leaker"
        assert hog.proc.returncode == -9
        assert wait_for(lambda: any(e.resolved_by == "default" for e in ooms(ev)), SLOW)
        pump_until = time.monotonic() + 1.0  # a second OOM would come now: none should
        while time.monotonic() < pump_until:
            time.sleep(0.1)
    killing = [e for e in ooms(ev) if e.victims]
    assert len(killing) == 1, ooms(ev)
    first = killing[0]
    assert first.memcg is None and first.constraint == "NONE" and first.policy == "default"
    assert [v.pid for v in first.victims] == [hog.pid]
    assert vmstat("oom_kill") == kills_before  # the kernel's killer never ran
    assert not (tmp_path / "restore.json").exists()

