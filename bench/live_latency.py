"""Live OOM latency on the real kernel (cgroup v1): oomkit's handler path vs the kernel.

    sudo .venv/bin/python bench/live_latency.py [--runs 20]

Each run makes one memcg OOM: a process allocating 96 MiB in a 64 MiB memcg (memory and
memory+swap limits), below this process's own memcg.

- oomkit: a handler attached to the memcg kills the largest task. Measured from the
  kernel's notification (the oom_control eventfd readable, i.e. the epoll wake-up) to
  SIGKILL sent (the decision), and to process_mrelease() returned (the victim's memory
  reaped).
- baseline, same run: no handler (oom_kill_disable 0), the kernel killer alone. Measured
  from the same eventfd notification to the memcg's usage falling below half its limit.

Prints median and p99 of each. Needs root; removes everything it made.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

from oomkit.kernel.linux import LinuxKernel, procfs
from oomkit.ops import OomContext, OomControl, OomOps
from oomkit.runtime import Runtime

MiB = 1 << 20
LIMIT = 64 * MiB
HOG = (
    "import mmap, os, time\n"
    "os.read(0, 1)\n"
    "m = mmap.mmap(-1, 96 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "for i in range(0, 96 << 20, 4096): m[i] = 1\n"
    "time.sleep(60)\n"
)


class KillLargest(OomOps):
    name = "kill_largest"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        assert oc.memcg is not None
        tasks = [t for cg in oc.memcg.walk() for t in cg.tasks() if not t.unkillable]
        if not tasks:
            return False
        oc.kill_process(max(tasks, key=lambda t: t.rss), "bench")
        return True


def own_memcg() -> Path:
    found = procfs.own_memcg_dir()
    if found is None or "/memory/" not in found + "/":
        sys.exit("needs the cgroup v1 memory controller (this benchmark is for v1 hosts)")
    return Path(found)


def spawn(box: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-I", "-c", HOG], stdin=subprocess.PIPE)
    (box / "cgroup.procs").write_text(str(p.pid))
    assert p.stdin is not None
    p.stdin.write(b"g")
    p.stdin.flush()
    return p


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run_oomkit(root: Path, box: Path, runs: int) -> tuple[list[float], list[float]]:
    kernel = LinuxKernel(str(root), kmsg_path=None)
    marks: dict[str, int] = {}
    kernel.trace = lambda stage, ns: marks.setdefault(stage, ns)
    runtime = Runtime(kernel)
    runtime.attach_oom(KillLargest(), "/box")
    runtime.warm_up()  # as the daemon does: the handler thread exists before the first OOM
    decide: list[float] = []
    release: list[float] = []
    try:
        for _ in range(runs):
            marks.clear()
            hog = spawn(box)
            deadline = time.monotonic() + 10
            while "mrelease_done" not in marks and time.monotonic() < deadline:
                kernel.poll(0.1)
            hog.wait(5)
            assert hog.returncode == -9, "the handler should have killed the hog"
            decide.append((marks["kill_sent"] - marks["oom_notify"]) / 1e6)
            release.append((marks["mrelease_done"] - marks["oom_notify"]) / 1e6)
            while int((box / "memory.usage_in_bytes").read_text()) > LIMIT // 2:
                kernel.poll(0.01)  # the next run starts from an empty memcg
    finally:
        runtime.close()
        kernel.close()
    return decide, release


def run_baseline(box: Path, runs: int) -> list[float]:
    """The kernel killer alone, timed from the same eventfd notification."""
    ctl = os.open(box / "memory.oom_control", os.O_RDONLY)
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    (box / "cgroup.event_control").write_text(f"{efd} {ctl}")
    ep = select.epoll()
    ep.register(efd, select.EPOLLIN)
    usage = box / "memory.usage_in_bytes"
    out: list[float] = []
    try:
        for _ in range(runs):
            hog = spawn(box)
            assert ep.poll(10), "no OOM notification"
            t0 = time.perf_counter_ns()
            os.eventfd_read(efd)
            while int(usage.read_text()) > LIMIT // 2:
                pass
            out.append((time.perf_counter_ns() - t0) / 1e6)
            hog.wait(5)
            while ep.poll(0.05):  # the kernel may notify more than once per OOM
                os.eventfd_read(efd)
    finally:
        ep.close()
        os.close(efd)
        os.close(ctl)
    return out


def destroy(root: Path) -> None:
    for d in (root / "box", root):
        for _ in range(200):
            pids = (d / "cgroup.procs").read_text().split() if d.exists() else []
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    root = own_memcg() / f"oomkit-bench-{os.getpid()}"
    box = root / "box"
    box.mkdir(parents=True)
    try:
        (box / "memory.limit_in_bytes").write_text(str(LIMIT))
        memsw = box / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(LIMIT))
        decide, release = run_oomkit(root, box, args.runs)
        baseline = run_baseline(box, args.runs)
    finally:
        destroy(root)

    def show(label: str, values: list[float]) -> None:
        print(
            f"{label:<48} median {statistics.median(values):7.2f} ms"
            f"   p99 {pct(values, 0.99):7.2f} ms   (n={len(values)})"
        )

    print(f"{args.runs} memcg OOMs, 96 MiB into a 64 MiB memcg, kernel {os.uname().release}")
    show("oomkit: notification -> SIGKILL sent", decide)
    show("oomkit: notification -> victim's memory reaped", release)
    show("kernel killer alone: notification -> usage < 50%", baseline)


if __name__ == "__main__":
    main()
