"""Live OOM latency on the real kernel: oomkit's handler path vs the kernel killer alone.

    sudo .venv/bin/python bench/live_latency.py [--runs 20]               # cgroup v1 host
    sudo .venv/bin/python bench/live_latency.py --v2 [--kernel 7.3] [--runs 20]

Without ``--v2`` (a cgroup v1 host, as this machine):

Each run makes one memcg OOM: a process allocating 96 MiB in a 64 MiB memcg (memory and
memory+swap limits), below this process's own memcg.

- oomkit: a handler attached to the memcg kills the largest task. Measured from the
  kernel's notification (the oom_control eventfd readable, i.e. the epoll wake-up) to
  SIGKILL sent (the decision), and to process_mrelease() returned (the victim's memory
  reaped).
- baseline, same run: no handler (oom_kill_disable 0), the kernel killer alone. Measured
  from the same eventfd notification to the memcg's usage falling below half its limit.

Prints median and p99 of each. Needs root; removes everything it made.

With ``--v2`` it boots the QEMU guest (tests/vm/harness.py: cgroup v2, TCG, the chosen
kernel) and runs there with ``--in-guest``: the same hog (96 MiB as fast as it can, no
swap: ``memory.swap.max`` 0) into a 64 MiB memcg, below a cgroup of its own.

- oomkit: LinuxKernel's guard band (``memory.high`` a margin below ``memory.max``) and
  the same handler. Measured from the ``memory.events`` notification (``oom_notify``, the
  inotify wake-up) to SIGKILL sent; who resolved each OOM (an *escape* is an OOM the
  kernel killer resolved at ``memory.max`` before the handler could); how many OOM events
  the runtime reported per OOM (one is right); the hog's life, start to death.
- baseline: no oomkit; the kernel killer at ``memory.max``; the hog's life.
"""

from __future__ import annotations

import argparse
import itertools
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    def __init__(self, mark: Callable[[str], None] | None = None) -> None:
        self._mark = mark or (lambda stage: None)

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        assert oc.memcg is not None
        self._mark("handler_start")
        tasks = [t for cg in oc.memcg.walk() for t in cg.tasks() if not t.unkillable]
        if not tasks:
            return False
        victim = max(tasks, key=lambda t: t.rss)
        self._mark("victim_chosen")
        oc.kill_process(victim, "bench")
        return True


#: The stages of one v2 OOM, in order, as the trace marks them (the handler's two come
#: from KillLargest): where the time from the notification to SIGKILL goes.
V2_STAGES = ("oom_notify", "band_oom", "ask_oom", "worker_call", "handler_start",
             "victim_chosen", "kill_sent")


def mark_runtime(runtime: Runtime, mark: Callable[[str], None]) -> None:
    """Marks inside the runtime, for this bench only: the handler asked (after the OOM's
    bookkeeping: the ancestors' links, totalpages) and the call handed to the worker
    thread (after the OomControl is made; the rest is the thread hand-over)."""
    import oomkit.handler_call as hc

    ask, call = runtime._ask_oom, hc.Worker.call

    def marked_ask(link: Any, request: Any) -> Any:
        mark("ask_oom")
        return ask(link, request)

    def marked_call(self: Any, fn: Any, budget_s: Any) -> Any:
        mark("worker_call")
        return call(self, fn, budget_s)

    runtime._ask_oom = marked_ask  # type: ignore[method-assign]
    hc.Worker.call = marked_call  # type: ignore[method-assign]


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
    for d in (root / "box", root / "bare", root):
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
    ap.add_argument("--v2", action="store_true", help="in the cgroup v2 QEMU guest")
    ap.add_argument("--kernel", default=None, help="guest kernel: 6.1, 6.12, 7.3 or a path")
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_guest:
        sys.exit(v2_guest(args.runs))
    if args.v2:
        sys.exit(v2_host(args))
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


# -- cgroup v2, in the guest ------------------------------------------------------------


def v2_host(args: argparse.Namespace) -> int:
    from _load import vm_harness

    repo = Path(__file__).resolve().parents[1]
    harness = vm_harness()
    argv = [str(repo / ".venv/bin/python"), str(Path(__file__).resolve()), "--in-guest",
            "--runs", str(args.runs)]  # fmt: skip
    try:
        harness.ensure_packages()
        res = harness.run_in_guest(argv, memory="1G", timeout=1800, stream=sys.stdout,
                                   kernel=args.kernel)  # fmt: skip
    except harness.HarnessError as exc:
        print(f"\nvm harness: {exc}", file=sys.stderr)
        return 125
    print(f"\n(kernel {res.kernel_release}: exit status {res.returncode}; "
          f"boot {res.boot_seconds:.1f} s, total {res.total_seconds:.1f} s)",
          file=sys.stderr)  # fmt: skip
    return int(res.returncode)


def v2_box(root: Path, name: str = "box") -> Path:
    if not root.exists():
        root.mkdir()
        (root / "cgroup.subtree_control").write_text("+memory")
    box = root / name
    box.mkdir()
    (box / "memory.max").write_text(str(LIMIT))
    (box / "memory.swap.max").write_text("0")
    return box


def v2_spawn(box: Path) -> tuple[subprocess.Popen[bytes], float]:
    # oom_score_adj 0: not the -1000 this bench gave itself (nobody could kill the hog)
    p = subprocess.Popen([sys.executable, "-I", "-c", HOG], stdin=subprocess.PIPE,
                         preexec_fn=lambda: Path("/proc/self/oom_score_adj").write_text("0"))
    (box / "cgroup.procs").write_text(str(p.pid))
    assert p.stdin is not None
    started = time.monotonic()
    p.stdin.write(b"g")
    p.stdin.flush()
    return p, started


def v2_events(box: Path) -> dict[str, int]:
    lines = (box / "memory.events").read_text().splitlines()
    return {k: int(v) for k, v in (ln.split() for ln in lines)}


def v2_wait_empty(box: Path) -> None:
    deadline = time.monotonic() + 30
    while "populated 1" in (box / "cgroup.events").read_text() and time.monotonic() < deadline:
        time.sleep(0.01)


def v2_oomkit(root: Path, box: Path, bare: Path, runs: int) -> dict[str, list[float]]:
    """Each oomkit OOM in /box follows a kernel-alone OOM in /bare (no handler there, so
    never armed): the two lives are measured under the same load, run after run."""
    from oomkit.events import EventList, OomEvent

    kernel = LinuxKernel(str(root), kmsg_path=None)
    marks: dict[str, int] = {}
    kernel.trace = lambda stage, ns: marks.setdefault(stage, ns)
    events = EventList()
    runtime = Runtime(kernel, sink=events)
    runtime.attach_oom(KillLargest(kernel.trace_stage), "/box")
    runtime.warm_up()
    mark_runtime(runtime, kernel.trace_stage)
    out: dict[str, list[float]] = {"decide": [], "look": [], "life": [], "escapes": [],
                                   "events": [], "base": []}
    out.update({f"{a}->{b}": [] for a, b in itertools.pairwise(V2_STAGES)})
    try:
        for i in range(runs):
            out["base"] += v2_kernel_alone(bare, 1, i + 1, runs)
            marks.clear()
            before = len(events.of(OomEvent))
            kills0 = v2_events(box).get("oom_kill", 0)
            hog, started = v2_spawn(box)
            while hog.poll() is None:
                kernel.poll(0.05)
            life = time.monotonic() - started
            deadline = time.monotonic() + 1.0  # late events: the kernel's, or a second one
            while time.monotonic() < deadline:
                kernel.poll(0.05)
            escaped = v2_events(box).get("oom_kill", 0) - kills0 > 0
            ooms = events.of(OomEvent)[before:]
            decide = (marks["kill_sent"] - marks["oom_notify"]) / 1e6 if (
                "kill_sent" in marks and "oom_notify" in marks) else float("nan")  # fmt: skip
            look = (marks["band_oom"] - marks["oom_notify"]) / 1e6 if (
                "band_oom" in marks and "oom_notify" in marks) else float("nan")  # fmt: skip
            out["look"].append(look)
            out["decide"].append(decide)
            for a, b in itertools.pairwise(V2_STAGES):
                if a in marks and b in marks:
                    out[f"{a}->{b}"].append((marks[b] - marks[a]) / 1e6)
            out["life"].append(life)
            out["escapes"].append(float(escaped))
            out["events"].append(float(len(ooms)))
            by = "; ".join(
                f"{e.resolved_by} {[(c.name, c.returned, c.error) for c in e.handlers]} {e.note}"
                for e in ooms if isinstance(e, OomEvent)
            )
            high = (box / "memory.high").read_text().strip()
            band = "max" if high == "max" else f"{(LIMIT - int(high)) >> 20} MiB"
            print(f"  oomkit {i + 1:2}/{runs}: band {band}, notify->SIGKILL {decide:7.2f} ms "
                  f"(notified: {'oom_notify' in marks}; band look "
                  f"{look:6.2f} ms), hog life "
                  f"{life:5.2f} s, {len(ooms)} OOM event(s) [{by}]"
                  + (", ESCAPED to the kernel" if escaped else ""), flush=True)  # fmt: skip
            v2_wait_empty(box)
    finally:
        runtime.close()
        kernel.close()
    return out


def v2_kernel_alone(box: Path, runs: int, first: int = 1, of: int = 0) -> list[float]:
    out = []
    for i in range(runs):
        hog, started = v2_spawn(box)
        hog.wait(120)
        out.append(time.monotonic() - started)
        print(f"  kernel {first + i:2}/{of or runs}: hog life {out[-1]:5.2f} s", flush=True)
        v2_wait_empty(box)
    return out


def v2_guest(runs: int) -> int:
    Path("/proc/self/oom_score_adj").write_text("-1000")
    root = Path("/sys/fs/cgroup") / f"oomkit-bench-{os.getpid()}"
    box = v2_box(root)
    bare = v2_box(root, "bare")
    try:
        v2_kernel_alone(bare, 1)  # warm the page cache of python's own files
        mine = v2_oomkit(root, box, bare, runs)
        base = mine["base"]
    finally:
        destroy(root)
    decide = [x for x in mine["decide"] if x == x]
    print(f"\n{runs} memcg OOMs (cgroup v2, no swap), 96 MiB as fast as it can into a 64 MiB "
          f"memcg, kernel {os.uname().release}")  # fmt: skip
    if decide:
        print(f"{'oomkit: notification -> SIGKILL sent':<48} median "
              f"{statistics.median(decide):7.2f} ms   p99 {pct(decide, 0.99):7.2f} ms   "
              f"(n={len(decide)})")  # fmt: skip
    look = [x for x in mine["look"] if x == x]
    if look:
        print(f"{'  of which notification -> OOM dispatched':<48} median "
              f"{statistics.median(look):7.2f} ms   p99 {pct(look, 0.99):7.2f} ms")  # fmt: skip
    for a, b in itertools.pairwise(V2_STAGES):
        part = mine[f"{a}->{b}"]
        if part:
            print(f"{'    ' + a + ' -> ' + b:<48} median {statistics.median(part):7.2f} ms   "
                  f"p99 {pct(part, 0.99):7.2f} ms")
    lm, lb = statistics.median(mine["life"]), statistics.median(base)
    print(f"{'hog life, oomkit / kernel alone':<48} median {lm:7.3f} s / {lb:7.3f} s "
          f"({(lm / lb - 1) * 100:+.0f} %)")  # fmt: skip
    print(f"{'escapes to the kernel killer':<48} {int(sum(mine['escapes']))} of {runs}")
    per = mine["events"]
    print(f"{'OOM events per OOM':<48} " + ", ".join(
        f"{int(n)}: {per.count(n)}" for n in sorted(set(per))))  # fmt: skip
    return 0


if __name__ == "__main__":
    main()
