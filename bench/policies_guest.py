"""Policies against the real kernel and the real daemons: f10 for real, a lone reader.

    sudo .venv/bin/python bench/policies_guest.py [--memory 1G] [--seconds 60]

On the host this fetches Debian's earlyoom and oomd packages (``apt-get download``, unpacked
under /var/tmp/oomkit-peers, never installed or started on the host), boots the QEMU guest
(tests/vm/harness.py: cgroup v2, no swap, TCG) and runs itself there with ``--in-guest``.
In the guest each daemon in turn runs both scenarios: oomkit with packaging/oomkit.toml
(the recommended config) and with the earlyoom and oomd presets, each unchanged but for
its files moved to /tmp, then the real earlyoom (defaults) and oomd (Debian's
/etc/oomd/oomd.json). The applications live where a desktop's would,
/user.slice/user-1000.slice/user@1000.service/*.scope.

- **f10** (../shared/field/f10_noswap_cache_thrash.toml for real): no swap, no
  memory.max anywhere; three applications, each in its own cgroup, re-read their own
  host files (over virtio-9p: clean page cache, evicted and fetched again), then a hog
  allocates anonymous memory until only about a quarter of the applications' files fit. The
  right outcome: the hog is killed within 30 s of being full, no application is.
- **lone reader**: a service doing work in 300M of its own memory, and a reader
  re-reading a (sparse) file of 1.4x the guest's RAM. It hurts nobody but itself: the
  right outcome is no kill at all.
- **leak** (bench/system_oom.py's scenario, one leak): a busy service of 250M in
  /system.slice/service.service, a leak of 10M every 50 ms in /system.slice/leak.service.
  The right outcome: the leak dies (whoever kills it; the row says whether the kernel's
  OOM killer did), the service lives.

Prints one table row per daemon and scenario: who died, and for f10 how long after the
hog started. Removes what it made.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _load import load_module, vm_harness

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup")
MiB = 1 << 20
SPARSE = Path("/var/tmp/oomkit-bench-lone-reader.bin")
PEERS = Path("/var/tmp/oomkit-peers")
APPS = "user.slice/user-1000.slice/user@1000.service"


# the thrash helpers (meminfo, mkcg, destroy, big_files, READER) are that bench's
dup = load_module("oomkit_bench_decision", REPO / "bench" / "decision_under_pressure.py")
# the leak beside a busy service (SERVICE, LEAKER and their sizes) is system_oom's
so = load_module("oomkit_bench_system_oom", REPO / "bench" / "system_oom.py")

# argv: cgroup.procs path, size: anonymous memory touched once (prints "full"), held.
HOG = (
    "import mmap, os, sys, time\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "n = int(sys.argv[2])\n"
    "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "for i in range(0, n, 4096): m[i] = 1\n"
    "print('full', flush=True)\n"
    "time.sleep(3600)\n"
)
# argv: cgroup.procs path, size: works in its own memory, forever.
SERVICE = (
    "import mmap, os, sys\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "n = int(sys.argv[2])\n"
    "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
    "while True:\n"
    "    for i in range(0, n, 4096): m[i] = (m[i] + 1) & 255\n"
)
# the same reader as decision_under_pressure's, at oom_score_adj 0 (an application)
READER = dup.READER.replace("open('/proc/self/oom_score_adj', 'w').write('1000')\n", "")


# ------------------------------------------------------------------------------- host side


def fetch_peers() -> None:
    """earlyoom and oomd from Debian, unpacked (not installed: no service starts here)."""
    if (PEERS / "root/usr/bin/earlyoom").exists() and (PEERS / "root/usr/bin/oomd").exists():
        return
    PEERS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "earlyoom", "oomd"], cwd=PEERS, check=True,
                   timeout=600)
    for deb in PEERS.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(PEERS / "root")], check=True)


def host_main(args: argparse.Namespace) -> int:
    harness = vm_harness()
    harness.ensure_packages()
    fetch_peers()
    ram = int(args.memory[:-1]) * (1 << 30 if args.memory.endswith("G") else MiB)
    with open(SPARSE, "wb") as f:
        f.truncate(int(ram * 1.4))
    argv = [str(REPO / ".venv/bin/python"), str(Path(__file__).resolve()), "--in-guest",
            "--seconds", str(args.seconds), "--daemons", args.daemons,
            *(["--verbose"] if args.verbose else []),
            "--files", os.pathsep.join(dup.big_files(300 * MiB))]
    try:
        res = harness.run_in_guest(argv, memory=args.memory, timeout=args.timeout,
                                   stream=sys.stdout)
    except harness.HarnessError as exc:
        print(f"\nvm harness: {exc}", file=sys.stderr)
        return 125
    finally:
        SPARSE.unlink(missing_ok=True)
    print(f"\n(guest {args.memory}: exit status {res.returncode}; total "
          f"{res.total_seconds:.0f} s; logs in {res.run_dir})", file=sys.stderr)
    return res.returncode


# ------------------------------------------------------------------------------ guest side


def full_avg10() -> str:
    out = []
    for res in ("memory", "io"):
        line = Path(f"/proc/pressure/{res}").read_text().splitlines()[1]
        out.append(f"{res} full {line.split()[1].split('=')[1]}")
    return ", ".join(out)


def daemons() -> dict[str, list[str] | Path]:
    """name -> an oomkit config (Path) or a command line."""
    bin_ = PEERS / "root/usr/bin"
    return {
        "oomkit, recommended": REPO / "packaging" / "oomkit.toml",
        "oomkit, earlyoom preset": REPO / "packaging" / "presets" / "earlyoom.toml",
        "earlyoom 1.7": [str(bin_ / "earlyoom"), "-r", "0"],
        "oomkit, oomd preset": REPO / "packaging" / "presets" / "oomd.toml",
        "oomd 0.5.0": [str(bin_ / "oomd"), "--config", str(PEERS / "root/etc/oomd/oomd.json"),
                       "--interval", "1", "--cgroup-fs", str(CGROUP)],
    }


def start_daemon(what: list[str] | Path, work: Path) -> subprocess.Popen[bytes]:
    if isinstance(what, list):
        proc = subprocess.Popen(what, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_adj_zero)
        time.sleep(3)
        return proc
    text = what.read_text()
    if "[daemon]" not in text:
        text = "[daemon]\n" + text
    for key, name in (("event_log", "events.jsonl"), ("status_file", "status.json"),
                      ("state_file", "restore.json")):
        if re.search(rf"(?m)^{key}\s*=", text):
            text = re.sub(rf"(?m)^{key}\s*=.*$", f'{key} = "{work / name}"', text)
        else:
            text = text.replace("[daemon]\n", f'[daemon]\n{key} = "{work / name}"\n', 1)
    config = work / "oomkit.toml"
    config.write_text(text)
    log = work / "events.jsonl"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), "-q"], cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and '"action": "start"' in log.read_text():
            return proc
        time.sleep(0.2)
    proc.kill()
    sys.exit("the daemon did not start in 120 s")


def _adj_zero() -> None:
    # the driver runs at -1000; what it starts must not inherit that
    Path("/proc/self/oom_score_adj").write_text("0")


def spawn(code: str, cg: Path, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", "-c", code, str(cg / "cgroup.procs"), *argv],
                            stdout=subprocess.PIPE, preexec_fn=_adj_zero)


def _counters() -> dict[str, float]:
    """What pressure_guard's evidence reads, machine-wide: MemFree, the refaults and
    activations of file pages (/proc/vmstat), and the memory/IO "full" stall totals."""
    vm = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    out = {"t": time.monotonic(), "free": dup.meminfo()["MemFree"],
           "refault": int(vm.get("workingset_refault_file", 0)),
           "activate": int(vm.get("workingset_activate_file", 0)),
           "restore": int(vm.get("workingset_restore_file", 0)),
           "pgpgin": int(vm.get("pgpgin", 0))}
    for res in ("memory", "io"):
        line = Path(f"/proc/pressure/{res}").read_text().splitlines()[1]
        out[f"{res}_full_us"] = int(line.split()[4].split("=")[1])
    return out


def _diagnose(before: dict[str, float], after: dict[str, float], since: float,
              label: str = "F10") -> str:
    """One line of --verbose: per second between two _counters() (why a trigger did or
    did not fire, why the evidence did or did not hold)."""
    dt = after["t"] - before["t"]
    return (f"{label} {after['t'] - since:5.1f}s MemFree {after['free'] / MiB:.0f}M "
            f"refault_file {(after['refault'] - before['refault']) / dt:.0f}/s "
            f"activate_file {(after['activate'] - before['activate']) / dt:.0f}/s "
            f"restore_file {(after['restore'] - before['restore']) / dt:.0f}/s "
            f"pgpgin {(after['pgpgin'] - before['pgpgin']) / dt / 1024:.1f}M/s "
            f"memory full {(after['memory_full_us'] - before['memory_full_us']) / dt / 1e4:.0f}% "
            f"io full {(after['io_full_us'] - before['io_full_us']) / dt / 1e4:.0f}%")


def f10(root: Path, files: list[str], seconds: float, verbose: bool = False
        ) -> dict[str, object]:
    procs = {}
    for i, name in enumerate(("browser", "mail", "ide")):
        procs[name] = spawn(READER, dup.mkcg(root / f"app-{name}.scope"), *files[i::3])
    time.sleep(10)  # their files in page cache
    total = sum(os.path.getsize(f) for f in files)
    hog_size = max(0, dup.meminfo()["MemAvailable"] - total // 4)
    started = time.monotonic()
    procs["hog"] = spawn(HOG, dup.mkcg(root / "app-hog.scope"), str(hog_size))
    last = _counters()
    while procs["hog"].poll() is None and time.monotonic() - started < seconds:
        time.sleep(0.25)
        if verbose and time.monotonic() - last["t"] >= 2.0:
            now = _counters()
            print(_diagnose(last, now, started), flush=True)
            last = now
    hog_s = time.monotonic() - started if procs["hog"].poll() is not None else None
    died = [n for n, p in procs.items() if p.poll() is not None]
    for p in procs.values():
        with contextlib.suppress(OSError):
            p.kill()
    return {"scenario": "f10", "died": died, "hog_dead_after_s": hog_s,
            "hog_mib": hog_size // MiB, "files_mib": total // MiB, "psi": full_avg10()}


def lone(root: Path, seconds: float, verbose: bool = False) -> dict[str, object]:
    procs = {"service": spawn(SERVICE, dup.mkcg(root / "service.scope"), str(300 * MiB)),
             "reader": spawn(READER, dup.mkcg(root / "reader.scope"), str(SPARSE))}
    start = time.monotonic()
    psi = full_avg10()
    last = _counters()
    while time.monotonic() - start < seconds and all(p.poll() is None
                                                     for p in procs.values()):
        time.sleep(1)
        psi = full_avg10()
        if verbose and time.monotonic() - last["t"] >= 2.0:
            now = _counters()
            print(_diagnose(last, now, start, "LONE"), flush=True)
            last = now
    died = [n for n, p in procs.items() if p.poll() is not None]
    for p in procs.values():
        with contextlib.suppress(OSError):
            p.kill()
    return {"scenario": "lone reader", "died": died, "file_mib": SPARSE.stat().st_size // MiB,
            "psi": psi}


def leak(seconds: float) -> dict[str, object]:
    """bench/system_oom.py's scenario, once: a busy service of 250M in
    /system.slice/service.service, a process mapping 10M every 50 ms in
    /system.slice/leak.service; no swap. The right outcome: the leak dies, the service
    lives. Says whether the kernel's OOM killer acted (/proc/vmstat oom_kill moved)."""
    slice_ = CGROUP / "system.slice"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["service"] = p = subprocess.Popen(
            [sys.executable, "-I", "-c", so.SERVICE, str(dup.mkcg(slice_ / "service.service")
                                                         / "cgroup.procs"), str(so.SERVICE_MIB)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=_adj_zero)
        assert p.stdout is not None
        if p.stdout.readline().strip() != b"ready":
            raise SystemExit("the service did not start")
        procs["leak"] = q = subprocess.Popen(
            [sys.executable, "-I", "-c", so.LEAKER, str(dup.mkcg(slice_ / "leak.service")
                                                        / "cgroup.procs"),
             str(so.CHUNK_MIB), str(so.CHUNK_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_adj_zero)
        assert q.stdout is not None and q.stdin is not None
        if q.stdout.readline().strip() != b"joined":
            raise SystemExit("the leaker did not start")
        kills0 = so.vmstat("oom_kill")
        start = time.monotonic()
        q.stdin.write(b"x")
        q.stdin.flush()
        leaked = 0
        while q.poll() is None and time.monotonic() - start < seconds:
            line = q.stdout.readline()
            with contextlib.suppress(ValueError):
                leaked = int(line)
        life = time.monotonic() - start if q.poll() is not None else None
        time.sleep(1.0)  # the service, had it been the victim, is gone by now
        died = [n for n, x in procs.items() if x.poll() is not None]
        by_kernel = so.vmstat("oom_kill") - kills0
    finally:
        for x in procs.values():
            with contextlib.suppress(OSError):
                x.kill()
        for name in ("leak.service", "service.service"):
            dup.destroy(slice_ / name)
    return {"scenario": "leak", "died": died, "leak_dead_after_s": life, "leaked_mib": leaked,
            "kernel_oom_kills": by_kernel, "psi": full_avg10()}


def show_log(log: Path) -> None:
    """The daemon's PSI events, OOMs and errors so far (then the log starts afresh)."""
    if not log.exists():
        return
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") in ("oom", "handler_error", "error", "psi"):
            print("  " + line[:400], flush=True)
    log.write_text("")


def guest_main(args: argparse.Namespace) -> int:
    Path("/proc/self/oom_score_adj").write_text("-1000")  # the driver is not a candidate
    work = Path("/tmp/oomkit-bench-policies")
    work.mkdir(exist_ok=True)
    dup.mkcg(CGROUP / "system.slice")
    files = args.files.split(os.pathsep)
    rows = []
    chosen = {n: w for n, w in daemons().items()
              if not args.daemons or any(d in n for d in args.daemons.split(","))}
    for name, what in chosen.items():
        daemon = start_daemon(what, work)
        try:
            for scenario in ("f10", "lone", "leak"):
                root = CGROUP
                for part in APPS.split("/"):
                    root = dup.mkcg(root / part)
                try:
                    r = (f10(root, files, args.seconds, args.verbose) if scenario == "f10"
                         else lone(root, args.seconds, args.verbose) if scenario == "lone"
                         else leak(args.seconds))
                finally:
                    dup.destroy(CGROUP / "user.slice")
                r["daemon"] = name
                rows.append(r)
                print("RESULT " + json.dumps(r), flush=True)
                if args.verbose and isinstance(what, Path):
                    show_log(work / "events.jsonl")
                time.sleep(3)
        finally:
            daemon.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(60)
    print("\n| daemon | f10: died | f10: hog dead after | lone reader: died "
          "| leak: died | leak: dead after (leaked) | leak: kernel OOM kills |")
    print("|---|---|---|---|---|---|---|")
    by = {(r["daemon"], r["scenario"]): r for r in rows}
    for name in chosen:
        a, b, c = by[(name, "f10")], by[(name, "lone reader")], by[(name, "leak")]
        after, life = a["hog_dead_after_s"], c["leak_dead_after_s"]
        print(f"| {name} | {', '.join(a['died']) or 'none'} | "  # type: ignore[arg-type]
              f"{f'{after:.0f} s' if after is not None else 'alive'} | "
              f"{', '.join(b['died']) or 'none'} | "  # type: ignore[arg-type]
              f"{', '.join(c['died']) or 'none'} | "  # type: ignore[arg-type]
              f"{f'{life:.1f} s' if life is not None else 'alive'} ({c['leaked_mib']}M) | "
              f"{c['kernel_oom_kills']} |", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--files", default="", help=argparse.SUPPRESS)
    ap.add_argument("--memory", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="how long each scenario may run (default 60)")
    ap.add_argument("--timeout", type=float, default=1500.0, help="guest timeout (s)")
    ap.add_argument("--daemons", default="", help="only these (comma-separated parts of "
                    "their names: oomkit,earlyoom,oomd,recommended,preset)")
    ap.add_argument("--verbose", action="store_true", help="oomkit's PSI events and OOMs")
    args = ap.parse_args()
    return guest_main(args) if args.in_guest else host_main(args)


if __name__ == "__main__":
    sys.exit(main())
