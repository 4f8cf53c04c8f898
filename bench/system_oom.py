"""A system-wide OOM as users meet it: a leak beside a busy service, with no swap.

    sudo .venv/bin/python bench/system_oom.py [--runs 20] [--kernel 6.12] [--json]
        [--modes kernel,oomkit,earlyoom] [--config packaging/oomkit.toml]

On the host this boots the QEMU guest (tests/vm/harness.py: cgroup v2, TCG, 1 GiB, no
swap) with the chosen kernel and runs itself there with ``--in-guest``. In the guest, as
on a systemd machine, ``/system.slice/service.service`` holds a busy service (250 MiB of
anonymous memory, rewritten page by page, forever) and ``/system.slice/leak.service`` a
process that maps and touches 10 MiB every 50 ms until it is killed. Each mode runs
``--runs`` leaks, one after the other, beside the same service:

- ``kernel``: nothing else; the kernel's OOM killer acts when reclaim fails;
- ``oomkit``: ``oomkit run --config <config>`` (the packaged config by default), started
  once for the mode;
- ``earlyoom``: Debian's earlyoom with the arguments of its packaged /etc/default/earlyoom
  (fetched into the harness cache and run from there, never installed on the host).

Per leak it records who killed the leaker (the kernel: /proc/vmstat ``oom_kill`` moved;
oomkit: its event log names the leaker as victim; earlyoom: its log does), the leak's
life (start to death), what it had leaked, MemAvailable at the kill (the lowest of the
samples taken every 10 ms during the leak: it only falls until the kill), the memory stall during
the leak (/proc/pressure/memory some and full, ms), and whether the service still lives.
It prints one line per leak and a summary per mode, side by side. Everything it started
is killed and its cgroups removed; the guest goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _load import vm_harness

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup")
SLICE = CGROUP / "system.slice"
MiB = 1 << 20
SERVICE_MIB = 250
CHUNK_MIB = 10
CHUNK_S = 0.05
MODES = ("kernel", "oomkit", "earlyoom")

# argv: cgroup.procs, MiB. Joins its cgroup, maps and touches the memory, says "ready",
# then rewrites one byte per page, page after page, forever: busy and all of it resident.
SERVICE = (
    "import mmap, os, sys\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "n = int(sys.argv[2]) << 20\n"
    "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "for i in range(0, n, 4096): m[i] = 1\n"
    "print('ready', flush=True)\n"
    "v = 0\n"
    "while True:\n"
    "    v = (v + 1) & 255\n"
    "    for i in range(0, n, 4096): m[i] = v\n"
)
# argv: cgroup.procs, chunk MiB, seconds per chunk. Joins its cgroup, says "joined", waits
# for a byte on stdin, then maps and touches a chunk each period, printing its total (MiB).
LEAKER = (
    "import mmap, os, sys, time\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "chunk, period = int(sys.argv[2]) << 20, float(sys.argv[3])\n"
    "print('joined', flush=True)\n"
    "os.read(0, 1)\n"
    "keep, total, start = [], 0, time.monotonic()\n"
    "while True:\n"
    "    m = mmap.mmap(-1, chunk, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "    for i in range(0, chunk, 4096): m[i] = 1\n"
    "    keep.append(m)\n"
    "    total += chunk\n"
    "    print(total >> 20, flush=True)\n"
    "    delay = start + len(keep) * period - time.monotonic()\n"
    "    if delay > 0: time.sleep(delay)\n"
)


# ------------------------------------------------------------------------------- host side


def host_main(args: argparse.Namespace) -> int:
    harness = vm_harness()
    try:
        harness.ensure_packages()
        earlyoom = None
        if "earlyoom" in args.modes:
            earlyoom = harness.kernels.unpacked_package("earlyoom")
    except (harness.HarnessError, harness.kernels.KernelError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 125
    argv = [
        str(REPO / ".venv/bin/python"), str(Path(__file__).resolve()), "--in-guest",
        "--runs", str(args.runs), "--modes", ",".join(args.modes),
        "--config", str(Path(args.config).resolve()),
    ]  # fmt: skip
    if earlyoom is not None:
        argv += ["--earlyoom-root", str(earlyoom)]
    if args.json:
        argv.append("--json")
    try:
        res = harness.run_in_guest(
            argv, memory=args.memory, timeout=args.timeout, stream=sys.stdout,
            kernel=args.kernel,
        )  # fmt: skip
    except harness.HarnessError as exc:
        print(f"\nvm harness: {exc}", file=sys.stderr)
        return 125
    print(
        f"\n(guest {args.memory}, kernel {res.kernel_release}: exit status {res.returncode}; "
        f"boot {res.boot_seconds:.1f} s, total {res.total_seconds:.1f} s; logs in {res.run_dir})",
        file=sys.stderr,
    )
    return res.returncode


# ------------------------------------------------------------------------------ guest side


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) * 1024
    return out


def vmstat(key: str) -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, value = line.split()
        if name == key:
            return int(value)
    return 0


def stall_us() -> tuple[int, int]:
    """/proc/pressure/memory (some, full) totals, microseconds."""
    totals = re.findall(r"total=(\d+)", Path("/proc/pressure/memory").read_text())
    return int(totals[0]), int(totals[1])


class Sampler(threading.Thread):
    """MemAvailable every 10 ms: (monotonic seconds, bytes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        fd = os.open("/proc/meminfo", os.O_RDONLY)
        try:
            while not self.stop.is_set():
                text = os.pread(fd, 4096, 0)
                i = text.index(b"MemAvailable:")
                kib = int(text[i + 13 : text.index(b"kB", i)])
                self.samples.append((time.monotonic(), kib * 1024))
                self.stop.wait(0.01)
        finally:
            os.close(fd)


@dataclass
class Leak:
    mode: str
    run: int
    killer: str  # "kernel", "oomkit", "earlyoom", or "?" (see note)
    life_s: float  # leak start to the leaker's death
    leaked_mib: int
    rate_mib_s: float  # what it managed (TCG is slower than 10 MiB / 50 ms at times)
    signal: int
    avail_at_kill_mib: float  # the lowest MemAvailable seen: memory only falls until the kill
    some_ms: float
    full_ms: float
    service_alive: bool
    note: str = ""


@dataclass
class Guest:
    earlyoom_root: Path | None
    config: Path
    service: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    service_deaths: int = 0


def cgroup(name: str) -> Path:
    d = SLICE / name
    d.mkdir(exist_ok=True)
    return d


def start_service(g: Guest) -> None:
    d = cgroup("service.service")
    p = subprocess.Popen(
        [sys.executable, "-I", "-c", SERVICE, str(d / "cgroup.procs"), str(SERVICE_MIB)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: Path("/proc/self/oom_score_adj").write_text("0"),
    )  # fmt: skip
    assert p.stdout is not None
    if p.stdout.readline().strip() != b"ready":
        raise SystemExit("the service did not start")
    g.service = p
    g.procs.append(p)


def start_daemon(g: Guest, mode: str, work: Path) -> tuple[subprocess.Popen[bytes] | None, Path]:
    log = work / f"{mode}.log"
    if mode == "kernel":
        return None, log
    if mode == "oomkit":
        argv = [str(REPO / ".venv/bin/oomkit"), "run", "--config", str(g.config)]
    else:
        assert g.earlyoom_root is not None
        args = ["-r", "3600"]
        default = g.earlyoom_root / "etc/default/earlyoom"
        for line in default.read_text().splitlines():
            if line.startswith("EARLYOOM_ARGS="):
                args = shlex.split(line.split("=", 1)[1].strip().strip('"'))
        argv = [str(g.earlyoom_root / "usr/bin/earlyoom"), *args]
    out = log.open("wb")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    g.procs.append(p)
    deadline = time.monotonic() + 120
    ready = {"oomkit": "/run/oomkit/status.json", "earlyoom": None}[mode]
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"{mode} exited with {p.returncode}: {log.read_text()[-2000:]}")
        if ready is None and b"mem total" in log.read_bytes():
            break
        if ready is not None and Path(ready).exists():
            with contextlib.suppress(ValueError, OSError):
                if json.loads(Path(ready).read_text()).get("running"):
                    break
        time.sleep(0.1)
    else:
        raise SystemExit(f"{mode} did not become ready: {log.read_text()[-2000:]}")
    time.sleep(1.0)  # let it settle (imports, first samples)
    return p, log


def who_killed(
    mode: str, pid: int, oom_kills: int, log: Path, events: Path, ev_from: int
) -> tuple[str, str]:
    if mode == "oomkit" and events.exists():
        for line in events.read_text().splitlines()[ev_from:]:
            ev = json.loads(line)
            if ev.get("event") != "oom":
                continue
            pids = [v.get("pid") for v in ev.get("victims", [])]
            if pid in pids:
                return ("kernel" if ev.get("resolved_by") == "kernel" else "oomkit",
                        f"{ev.get('resolved_by')}/{ev.get('policy')}")  # fmt: skip
    if mode == "earlyoom" and log.exists() and re.search(
        rf"sending SIG\w+ to process {pid}\b", log.read_text()
    ):
        return "earlyoom", ""
    if oom_kills > 0:
        return "kernel", f"oom_kill +{oom_kills}"
    return "?", "no killer found"


def one_leak(g: Guest, mode: str, run: int, log: Path, events: Path) -> Leak:
    d = cgroup("leak.service")
    p = subprocess.Popen(
        [sys.executable, "-I", "-c", LEAKER, str(d / "cgroup.procs"), str(CHUNK_MIB), str(CHUNK_S)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        preexec_fn=lambda: Path("/proc/self/oom_score_adj").write_text("0"),
    )  # fmt: skip
    g.procs.append(p)
    assert p.stdout is not None and p.stdin is not None
    if p.stdout.readline().strip() != b"joined":
        raise SystemExit("the leaker did not start")
    ev_from = len(events.read_text().splitlines()) if events.exists() else 0
    kills0, (some0, full0) = vmstat("oom_kill"), stall_us()
    sampler = Sampler()
    sampler.start()
    time.sleep(0.05)
    start = time.monotonic()
    p.stdin.write(b"x")
    p.stdin.flush()
    leaked = 0
    for line in iter(p.stdout.readline, b""):
        with contextlib.suppress(ValueError):
            leaked = int(line)
    rc = p.wait(timeout=300)
    died = time.monotonic()
    time.sleep(1.0)  # the daemons' logs, the kernel's counters
    sampler.stop.set()
    sampler.join()
    some1, full1 = stall_us()
    killer, note = who_killed(mode, p.pid, vmstat("oom_kill") - kills0, log, events, ev_from)
    alive = g.service is not None and g.service.poll() is None
    if not alive:
        g.service_deaths += 1
        note = (note + "; " if note else "") + "service died: restarted"
        start_service(g)
    during = [v for t, v in sampler.samples if start <= t <= died]
    life = died - start
    return Leak(
        mode, run, killer, round(life, 3), leaked, round(leaked / life, 1) if life > 0 else 0.0,
        -rc, round(min(during, default=-MiB) / MiB, 1),
        round((some1 - some0) / 1000, 1), round((full1 - full0) / 1000, 1), alive, note,
    )  # fmt: skip


def settle() -> None:
    """Wait until MemAvailable is back (the victim's memory freed)."""
    deadline = time.monotonic() + 30
    last = -1
    while time.monotonic() < deadline:
        now = meminfo()["MemAvailable"]
        if last >= 0 and abs(now - last) < 2 * MiB:
            return
        last = now
        time.sleep(0.5)


def summary(mode: str, leaks: list[Leak]) -> dict[str, object]:
    by: dict[str, int] = {}
    for x in leaks:
        by[x.killer] = by.get(x.killer, 0) + 1

    def med(name: str) -> float | None:
        return statistics.median(getattr(x, name) for x in leaks) if leaks else None

    return {
        "mode": mode,
        "runs": len(leaks),
        "killed_by": by,
        "service_survived": sum(x.service_alive for x in leaks),
        "life_median_s": med("life_s"),
        "avail_at_kill_median_mib": med("avail_at_kill_mib"),
        "some_ms_median": med("some_ms"),
        "full_ms_median": med("full_ms"),
        "leak_rate_median_mib_s": med("rate_mib_s"),
    }


def guest_main(args: argparse.Namespace) -> int:
    Path("/proc/self/oom_score_adj").write_text("-1000")  # never this bench
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)  # oomkit's /metrics
    work = Path(os.environ.get("OOMKIT_VM_OUT", "/tmp")) / "system_oom"
    work.mkdir(parents=True, exist_ok=True)
    SLICE.mkdir(exist_ok=True)
    (SLICE / "cgroup.subtree_control").write_text("+memory")
    g = Guest(Path(args.earlyoom_root) if args.earlyoom_root else None, Path(args.config))
    events = Path("/var/log/oomkit/events.jsonl")  # the packaged config's event log
    leaks: list[Leak] = []
    info = meminfo()
    print(f"guest: kernel {os.uname().release}, MemTotal {info['MemTotal'] >> 20} MiB, "
          f"SwapTotal {info.get('SwapTotal', 0) >> 20} MiB; service {SERVICE_MIB} MiB, "
          f"leak {CHUNK_MIB} MiB every {CHUNK_S * 1000:.0f} ms", flush=True)  # fmt: skip
    try:
        start_service(g)
        for mode in args.modes:
            daemon, log = start_daemon(g, mode, work)
            for run in range(1, args.runs + 1):
                leak = one_leak(g, mode, run, log, events)
                leaks.append(leak)
                print(
                    f"{mode:8s} #{run:2d}: killed by {leak.killer:8s} after {leak.life_s:5.2f} s "
                    f"({leak.leaked_mib} MiB, {leak.rate_mib_s:.0f} MiB/s, sig {leak.signal}); "
                    f"MemAvailable at kill {leak.avail_at_kill_mib:.0f} MiB; "
                    f"stall some {leak.some_ms:.0f} ms full "
                    f"{leak.full_ms:.0f} ms; service {'alive' if leak.service_alive else 'DEAD'}"
                    + (f" ({leak.note})" if leak.note else ""),
                    flush=True,
                )
                settle()
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
    finally:
        for p in g.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for d in ("leak.service", "service.service"):
            with contextlib.suppress(OSError):
                (SLICE / d).rmdir()
    sums = [summary(m, [x for x in leaks if x.mode == m]) for m in args.modes]
    print("\nside by side (medians over the runs):")
    print(f"{'mode':9s} {'killed by':32s} {'service':8s} {'life s':>7s} {'avail@kill':>10s} "
          f"{'some ms':>8s} {'full ms':>8s} {'leak MiB/s':>10s}")  # fmt: skip
    for s in sums:
        killed = ", ".join(f"{k} {v}" for k, v in sorted(s["killed_by"].items()))  # type: ignore[attr-defined]
        print(f"{s['mode']:9s} {killed:32s} {s['service_survived']:>3}/{s['runs']:<4} "
              f"{s['life_median_s']:7.2f} {s['avail_at_kill_median_mib']:8.0f}M "
              f"{s['some_ms_median']:8.0f} {s['full_ms_median']:8.0f} "
              f"{s['leak_rate_median_mib_s']:10.0f}")  # fmt: skip
    if args.json:
        print(json.dumps({"kernel": os.uname().release, "summary": sums,
                          "leaks": [asdict(x) for x in leaks]}))  # fmt: skip
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="leaks per mode (20)")
    ap.add_argument("--modes", type=lambda s: [m for m in s.split(",") if m], default=list(MODES),
                    help="comma separated, of kernel,oomkit,earlyoom (all)")  # fmt: skip
    ap.add_argument("--config", default=str(REPO / "packaging/oomkit.toml"),
                    help="oomkit's config (the packaged one)")  # fmt: skip
    ap.add_argument("--kernel", default=None, help="guest kernel: 6.1, 6.12, 7.3 or a path")
    ap.add_argument("--memory", default="1G", help="guest RAM (1G)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for the guest")
    ap.add_argument("--json", action="store_true", help="also every figure as one JSON line")
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--earlyoom-root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode {bad[0]!r}: one of {', '.join(MODES)}")
    if args.in_guest:
        return guest_main(args)
    if os.geteuid() != 0:
        sys.exit("needs root (the QEMU guest exports / over 9p)")
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
