"""Decision latency of the oomkit daemon while the whole machine thrashes (cgroup v2 guest).

    sudo .venv/bin/python bench/decision_under_pressure.py [--runs 20] [--memory 512M]

On the host this boots the QEMU guest (tests/vm/harness.py, cgroup v2, TCG) and runs
itself there with ``--in-guest``. In the guest:

- the daemon: the real ``oomkit.daemon.service.Daemon`` (LiveBackend, self-protection:
  mlockall, oom_score_adj -1000, frozen gc) from a config with one handler,
  ``largest_leaf`` on ``/box`` (memory.max 64 MiB), forked into a process of its own.
  Its LinuxKernel's ``trace`` hook records ``oom_notify`` (the first memory.high event
  of the v2 guard band), ``band_check`` (each look at the cgroup in its band, the last of
  which dispatches the OOM to the handler; the bench wraps ``V2GuardBand.check_band`` for
  it) and ``kill_sent``.
- each OOM: a process allocating 96 MiB in /box/leaf; the handler must SIGKILL it.
- baseline: N such OOMs on a quiet guest; then the same N OOMs while thrashers run.
- thrashers, in /thrash: an anonymous ballast (oom_score_adj 1000) that leaves only
  ~--headroom MiB of MemAvailable, and readers that mmap and re-read large read-only
  host files (the guest's root is the host's over virtio-9p: clean page cache, evictable
  and refetched over 9p) whose total is well above that headroom. That is global page
  cache thrashing: kswapd and direct reclaim everywhere, refaults of workingset pages,
  which /proc/pressure/memory counts. (tmpfs/ramfs pages are not evictable without swap,
  and the guest has no swap: file thrashing needs a real file system, here 9p.)

Prints, per phase, who resolved the OOMs (``kernel``: an escape, the kernel killer acted
at memory.max first), median and p99 of notification -> SIGKILL (the band decides at the
first notification when nothing can be reclaimed, else waits while reclaim progresses, at
most guard_stuck_s) and band check -> SIGKILL (the decision itself: the OOM dispatched,
largest_leaf run, the kill sent), and /proc/pressure/memory some/full avg10 sampled at
each OOM. ``--kernel`` picks the guest kernel (6.1, 6.12, 7.3). Removes everything it
made; the guest goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _load import vm_harness

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup")
MiB = 1 << 20
LIMIT = 64 * MiB
HOG_SIZE = 96 * MiB

# argv: cgroup.procs path, size; joins its cgroup first, allocates on one byte of stdin.
HOG = (
    "import mmap, os, sys, time\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "os.read(0, 1)\n"
    "n = int(sys.argv[2])\n"
    "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "for i in range(0, n, 4096): m[i] = 1\n"
    "time.sleep(600)\n"
)
# argv: cgroup.procs path, size: anonymous ballast, touched once, then held.
BALLAST = (
    "import mmap, os, sys, time\n"
    "open('/proc/self/oom_score_adj', 'w').write('1000')\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "n = int(sys.argv[2])\n"
    "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "for i in range(0, n, 4096): m[i] = 1\n"
    "print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)
# argv: cgroup.procs path, files...: re-read (one byte a page) every file, forever.
READER = (
    "import mmap, os, sys\n"
    "open('/proc/self/oom_score_adj', 'w').write('1000')\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "maps = []\n"
    "for p in sys.argv[2:]:\n"
    "    fd = os.open(p, os.O_RDONLY)\n"
    "    maps.append(mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))\n"
    "    os.close(fd)\n"
    "while True:\n"
    "    for m in maps:\n"
    "        for i in range(0, len(m), 4096): m[i]\n"
)


# ------------------------------------------------------------------------------- host side


def host_main(args: argparse.Namespace) -> int:
    harness = vm_harness()
    harness.ensure_packages()
    argv = [
        str(REPO / ".venv/bin/python"), str(Path(__file__).resolve()), "--in-guest",
        "--runs", str(args.runs), "--headroom", str(args.headroom),
        "--readers", str(args.readers), "--target", str(args.target),
        "--files", os.pathsep.join(big_files(args.file_mib * MiB)),
    ]  # fmt: skip
    try:
        res = harness.run_in_guest(
            argv, memory=args.memory, timeout=args.timeout, stream=sys.stdout,
            kernel=args.kernel,
        )
    except harness.HarnessError as exc:
        print(f"\nvm harness: {exc}", file=sys.stderr)
        return 125
    print(
        f"\n(guest {args.memory}, kernel {res.kernel_release}: exit status {res.returncode}; "
        f"boot {res.boot_seconds:.1f} s, "
        f"total {res.total_seconds:.1f} s; logs in {res.run_dir})",
        file=sys.stderr,
    )
    return res.returncode


# ------------------------------------------------------------------------------ guest side


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def pressure() -> dict[str, float]:
    out = {}
    for line in Path("/proc/pressure/memory").read_text().splitlines():
        kind, *fields = line.split()
        out[kind] = float(dict(f.split("=") for f in fields)["avg10"])
    return out


def meminfo() -> dict[str, int]:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) * 1024
    return info


def mkcg(path: Path, max_bytes: int | None = None) -> Path:
    ctl = path.parent / "cgroup.subtree_control"
    if "memory" not in ctl.read_text().split():
        ctl.write_text("+memory")
    path.mkdir(exist_ok=True)
    if max_bytes is not None:
        (path / "memory.max").write_text(str(max_bytes))
        (path / "memory.swap.max").write_text("0")
    return path


def destroy(root: Path) -> None:
    if not root.exists():
        return
    with contextlib.suppress(OSError):
        (root / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "populated 0" in (root / "cgroup.events").read_text():
            break
        time.sleep(0.05)
    from oomkit.kernel.linux import fsio

    fsio.remove_tree(str(root), pause_s=0.05)


def big_files(total: int) -> list[str]:
    """Large regular files (8-256 MiB) of the host root, biggest first, adding up to
    ``total``. Run on the host: walking /usr over 9p under TCG takes minutes."""
    found: list[tuple[int, str]] = []
    for base in ("/usr/lib", "/usr/share", "/opt", "/usr/bin"):
        for d, dirs, files in os.walk(base):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            for f in files:
                p = os.path.join(d, f)
                with contextlib.suppress(OSError):
                    st = os.stat(p, follow_symlinks=False)
                    if 8 * MiB <= st.st_size <= 256 * MiB and st.st_mode & 0o170000 == 0o100000:
                        found.append((st.st_size, p))
    found.sort(reverse=True)
    out, size = [], 0
    for n, p in found:
        if size >= total:
            break
        out.append(p)
        size += n
    return out


def daemon_child(config_path: str, wfd: int) -> None:
    """The forked daemon: start, hook the trace, serve until SIGTERM. Never returns."""
    code = 1
    try:
        from oomkit.daemon.backend import LiveBackend
        from oomkit.daemon.config import load_config, load_policies
        from oomkit.daemon.service import Daemon

        config = load_config(config_path)
        daemon = Daemon(config, load_policies(config), LiveBackend(), out=None)
        daemon.install_signals()
        daemon.start()
        kernel = daemon.real_kernel
        marks: list[tuple[str, int]] = []

        def trace(stage: str, ns: int) -> None:
            marks.append((stage, ns))
            if stage == "mrelease_done":
                os.write(wfd, (json.dumps(marks) + "\n").encode())
                marks.clear()

        band = kernel.oom_watch  # type: ignore[union-attr]
        check = band.check_band

        def traced_check(a: object) -> None:
            kernel.trace_stage("band_check")  # type: ignore[union-attr]
            check(a)

        band.check_band = traced_check
        kernel.trace = trace  # type: ignore[union-attr]
        os.write(wfd, b"ready\n")
        code = daemon.run()
    finally:
        os._exit(code)


class Marks:
    def __init__(self, rfd: int) -> None:
        self.rfd = rfd
        self.buf = b""

    def line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = max(0.0, deadline - time.monotonic())
            if not select.select([self.rfd], [], [], left)[0]:
                return None
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def drain(self) -> None:
        while self.line(0) is not None:
            pass


def oom_record(log: Path, pid: int, timeout: float) -> dict[str, object] | None:
    """The daemon's event-log record of the OOM whose victim was ``pid``."""
    from oomkit.daemon.eventlog import read_events

    deadline = time.monotonic() + timeout
    while True:
        for r in read_events(str(log)):
            if r.get("event") == "oom" and any(v.get("pid") == pid for v in r["victims"]):
                return r
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def one_oom(box: Path, marks: Marks, log: Path) -> dict[str, object]:
    """One memcg OOM: what resolved it, and for a handler kill the trace's latencies."""
    marks.drain()
    started = time.monotonic()
    leaf = box / "leaf"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", HOG, str(leaf / "cgroup.procs"), str(HOG_SIZE)],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"g")
    proc.stdin.flush()
    out: dict[str, object] = {"psi": pressure()}
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    rec = oom_record(log, proc.pid, 15)
    out["resolved_by"] = rec["resolved_by"] if rec else "unseen"
    line = marks.line(10) if rec and rec["resolved_by"] == "handler" else None
    if line is not None:
        recs: list[tuple[str, int]] = [tuple(m) for m in json.loads(line)]  # type: ignore[misc]
        kill = next(ns for s, ns in recs if s == "kill_sent")
        notify = max((ns for s, ns in recs if s == "oom_notify" and ns <= kill), default=None)
        check = max((ns for s, ns in recs if s == "band_check" and ns <= kill), default=None)
        if notify is not None and check is not None:
            out["notify"] = (kill - notify) / 1e6
            out["decide"] = (kill - check) / 1e6
    # The next OOM starts from an empty box.
    deadline = time.monotonic() + 30
    while "populated 1" in (box / "cgroup.events").read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    out["seconds"] = time.monotonic() - started
    return out


def phase(label: str, box: Path, marks: Marks, log: Path, runs: int) -> dict[str, object]:
    notify_ms: list[float] = []
    decide_ms: list[float] = []
    psis: list[dict[str, float]] = []
    by: dict[str, int] = {}
    started = time.monotonic()
    for i in range(runs):
        r = one_oom(box, marks, log)
        psi: dict[str, float] = r["psi"]  # type: ignore[assignment]
        psis.append(psi)
        by[str(r["resolved_by"])] = by.get(str(r["resolved_by"]), 0) + 1
        lat = ""
        if "notify" in r:
            notify_ms.append(r["notify"])  # type: ignore[arg-type]
            decide_ms.append(r["decide"])  # type: ignore[arg-type]
            lat = f"notify->kill {r['notify']:7.1f} ms, check->kill {r['decide']:6.1f} ms, "
        print(f"  {label} {i + 1:2}/{runs} [{r['resolved_by']}, {r['seconds']:4.1f} s]: {lat}"
              f"memory some avg10 {psi['some']:5.1f}, full avg10 {psi['full']:5.1f}",
              flush=True)
    return {"notify": notify_ms, "decide": decide_ms, "psi": psis, "by": by,
            "seconds": time.monotonic() - started}


def start_thrashers(thrash: Path, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []
    avail = meminfo()["MemAvailable"]
    ballast = max(0, avail - args.headroom * MiB - LIMIT)
    b = mkcg(thrash / "ballast")
    p = subprocess.Popen(
        [sys.executable, "-I", "-c", BALLAST, str(b / "cgroup.procs"), str(ballast)],
        stdout=subprocess.PIPE,
    )
    procs.append(p)
    assert p.stdout is not None
    p.stdout.readline()
    files = [f for f in args.files.split(os.pathsep) if f]
    if not files:
        sys.exit("no files to thrash (--files)")
    total = sum(os.path.getsize(f) for f in files)
    print(f"thrashers: ballast {ballast / MiB:.0f} MiB anon (MemAvailable was "
          f"{avail / MiB:.0f} MiB), {args.readers} readers re-reading {len(files)} host "
          f"files over 9p ({total / MiB:.0f} MiB of page cache)", flush=True)
    r = mkcg(thrash / "readers")
    for i in range(args.readers):
        mine = files[i::args.readers] or files
        procs.append(subprocess.Popen(
            [sys.executable, "-I", "-c", READER, str(r / "cgroup.procs"), *mine],
        ))
    return procs


def wait_pressure(target: float, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    psi = pressure()
    while psi["some"] < target and time.monotonic() < deadline:
        time.sleep(1)
        psi = pressure()
    return psi


def show(label: str, values: list[float]) -> None:
    if not values:
        print(f"{label:<44} no samples")
        return
    print(f"{label:<44} median {statistics.median(values):8.1f} ms   p99 "
          f"{pct(values, 0.99):8.1f} ms   (n={len(values)})")


def show_psi(psis: list[dict[str, float]]) -> str:
    if not psis:
        return "n/a"
    some = [p["some"] for p in psis]
    full = [p["full"] for p in psis]
    return (f"memory some avg10 median {statistics.median(some):.1f}% (min {min(some):.1f}, "
            f"max {max(some):.1f}), full avg10 median {statistics.median(full):.1f}% "
            f"(min {min(full):.1f}, max {max(full):.1f})")


def guest_main(args: argparse.Namespace) -> int:
    if not (CGROUP / "cgroup.controllers").exists():
        sys.exit("needs cgroup v2 (run on the host: it boots the guest)")
    t0 = time.monotonic()
    root = CGROUP / f"oomkit-bench-{os.getpid()}"
    mkcg(root)
    box = mkcg(root / "box", LIMIT)
    mkcg(box / "leaf")
    thrash = mkcg(CGROUP / f"oomkit-thrash-{os.getpid()}")  # outside the daemon's root
    tmp = Path("/tmp/oomkit-bench")
    tmp.mkdir(exist_ok=True)
    config = tmp / "oomkit.toml"
    log = tmp / "events.jsonl"
    config.write_text(
        f'[daemon]\nevent_log = "{tmp}/events.jsonl"\nstatus_file = "{tmp}/status.json"\n'
        f'state_file = "{tmp}/restore.json"\ncgroup_root = "{root}"\nbudget = "500ms"\n'
        '[metrics]\nlisten = ""\n\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'
    )
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        daemon_child(str(config), wfd)
    os.close(wfd)
    marks = Marks(rfd)
    thrashers: list[subprocess.Popen[bytes]] = []
    try:
        if marks.line(120) != "ready":
            print("the daemon did not start", flush=True)
            return 1
        print(f"kernel {os.uname().release}, {meminfo()['MemTotal'] / MiB:.0f} MiB guest, "
              f"{args.runs} memcg OOMs per phase: {HOG_SIZE // MiB} MiB into /box "
              f"(memory.max {LIMIT // MiB} MiB), daemon pid {pid} ready at "
              f"+{time.monotonic() - t0:.0f} s", flush=True)
        base = phase("baseline", box, marks, log, args.runs)
        base_psi = pressure()
        thrashers = start_thrashers(thrash, args)
        ramp = wait_pressure(args.target, 30)
        print(f"+{time.monotonic() - t0:.0f} s: pressure after ramp-up: some avg10 "
              f"{ramp['some']:.1f}%, full avg10 {ramp['full']:.1f}%", flush=True)
        loaded = phase("pressure", box, marks, log, args.runs)
        end_psi = pressure()
    finally:
        for p in thrashers:
            with contextlib.suppress(OSError):
                p.kill()
        for p in thrashers:
            p.wait()
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        destroy(thrash)
        destroy(root)
        print(f"+{time.monotonic() - t0:.0f} s: cleaned up", flush=True)
    print()
    print(f"== baseline (quiet guest, {base['seconds']:.0f} s; memory some avg10 "
          f"{base_psi['some']:.1f}% after it)")
    show("notification -> SIGKILL", base["notify"])  # type: ignore[arg-type]
    show("band check -> SIGKILL (the decision)", base["decide"])  # type: ignore[arg-type]
    print(f"   at the OOMs: {show_psi(base['psi'])}")  # type: ignore[arg-type]
    print(f"   resolved by: {base['by']}")
    print(f"== under pressure (thrashing guest, {loaded['seconds']:.0f} s)")
    show("notification -> SIGKILL", loaded["notify"])  # type: ignore[arg-type]
    show("band check -> SIGKILL (the decision)", loaded["decide"])  # type: ignore[arg-type]
    print(f"   at the OOMs: {show_psi(loaded['psi'])}")  # type: ignore[arg-type]
    print(f"   resolved by: {loaded['by']}")
    print(f"   at the end:  memory some avg10 {end_psi['some']:.1f}%, "
          f"full avg10 {end_psi['full']:.1f}%")
    print(f"daemon exit status {os.waitstatus_to_exitcode(status)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="OOMs per phase")
    ap.add_argument("--memory", default="512M", help="guest RAM")
    ap.add_argument("--kernel", default=None, help="guest kernel: 6.1, 6.12, 7.3 or a path")
    ap.add_argument("--timeout", type=float, default=600, help="guest timeout, seconds")
    ap.add_argument("--headroom", type=int, default=96,
                    help="MiB of MemAvailable the ballast leaves (besides the 64 MiB box)")
    ap.add_argument("--readers", type=int, default=4, help="file-thrashing processes")
    ap.add_argument("--file-mib", type=int, default=320,
                    help="MiB of host files the readers re-read")
    ap.add_argument("--target", type=float, default=20.0,
                    help="memory some avg10 to reach before the loaded phase")
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--files", default="", help=argparse.SUPPRESS)  # host's pick, for the guest
    args = ap.parse_args()
    return guest_main(args) if args.in_guest else host_main(args)


if __name__ == "__main__":
    sys.exit(main())
