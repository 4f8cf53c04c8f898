"""Policies against the real kernel and the real daemons: f10 for real, a lone reader.

    sudo .venv/bin/python bench/policies_guest.py [--memory 1G] [--seconds 60] [--kernel 6.12]
        [--daemons recommended,earlyoom,...] [--scenarios f10,lone,leak] [--repeat N] [--verbose]

On the host this fetches Debian's earlyoom and oomd packages (``apt-get download``, unpacked
under /var/tmp/oomkit-peers, never installed or started on the host), boots the QEMU guest
(tests/vm/harness.py: cgroup v2, no swap, TCG) and runs itself there with ``--in-guest``.
The files the programs read are on a disk: an ext4 image made on the host once (cached in
the harness's cache directory, ~2.1x the guest's RAM), attached read-only as virtio-blk
(``/dev/vda``, host page cache bypassed). Reading over the host root's 9p instead made
no IO pressure at all and a page cache unlike a disk's (the 6.12 run of docs/policies.md).
In the guest each daemon in turn runs both scenarios: oomkit with packaging/oomkit.toml
(the recommended config) and with the earlyoom and oomd presets, each unchanged but for
its files moved to /tmp, then the real earlyoom (defaults) and oomd (Debian's
/etc/oomd/oomd.json). The applications live where a desktop's would,
/user.slice/user-1000.slice/user@1000.service/*.scope.

- **f10** (../shared/field/f10_noswap_cache_thrash.toml for real): no swap, no
  memory.max anywhere; three applications, each in its own cgroup, re-read their own
  150M files on the disk (clean page cache, evicted and read again), then a hog
  allocates anonymous memory until only about a quarter of the applications' files fit. The
  right outcome: the hog is killed within 30 s of being full, no application is.
- **lone reader**: a service doing work in 300M of its own memory, and a reader
  re-reading a file of 1.4x the guest's RAM on the disk. It hurts nobody but itself: the
  right outcome is no kill at all.
- **leak** (bench/system_oom.py's scenario, one leak): a busy service of 250M in
  /system.slice/service.service, a leak of 10M every 50 ms in /system.slice/leak.service.
  The right outcome: the leak dies (whoever kills it; the row says whether the kernel's
  OOM killer did), the service lives.

Prints one table row per daemon and run (``--repeat``: each daemon's scenarios again, in
the same guest): who died, for f10 how long after the hog started, for the leak how long
after it started. Each OOM oomkit logged is printed with its constraint text (for
pressure_guard the evidence that declared it) and the kill message. The daemon runs this
checkout's src/ (PYTHONPATH), not whatever the venv's editable install points at.
Removes what it made.
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
DISK_MOUNT = Path("/mnt/oomkit-bench-disk")  # in the guest
APP_FILES = ("app-0.bin", "app-1.bin", "app-2.bin")
APP_FILE_MIB = 150
LONE_FILE = "lone.bin"
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


def make_disk(cache_dir: Path, ram: int) -> Path:
    """The ext4 image with the applications' files and the lone reader's (1.4x ``ram``),
    made once per guest size with ``mke2fs -d`` from a staging directory, then cached.

    The files hold a non-zero pattern: mke2fs leaves all-zero blocks out (holes), and a
    hole is read without any IO."""
    image = cache_dir / f"policies-disk-{ram // MiB}M-nocsum.ext4"
    if image.exists():
        return image
    stage = Path("/var/tmp/oomkit-bench-disk")
    subprocess.run(["rm", "-rf", str(stage)], check=True)
    stage.mkdir(parents=True)
    block = bytes((i * 31 + 7) & 255 or 1 for i in range(MiB))
    try:
        sizes = {name: APP_FILE_MIB for name in APP_FILES} | {LONE_FILE: int(ram * 1.4) // MiB}
        for name, mib in sizes.items():
            with open(stage / name, "wb") as f:
                for _ in range(mib):
                    f.write(block)
        partial = image.with_suffix(".partial")
        with open(partial, "wb") as f:
            f.truncate((sum(sizes.values()) * 105 // 100 + 64) * MiB)
        # no journal, no metadata checksums: read-only, and crc32c need not be loaded
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O",
                        "^has_journal,^metadata_csum", "-m", "0",
                        "-d", str(stage), str(partial)], check=True, timeout=900)
        partial.rename(image)
    finally:
        subprocess.run(["rm", "-rf", str(stage)], check=True)
    return image


def host_main(args: argparse.Namespace) -> int:
    harness = vm_harness()
    harness.ensure_packages()
    fetch_peers()
    ram = int(args.memory[:-1]) * (1 << 30 if args.memory.endswith("G") else MiB)
    harness.DEFAULT_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    disk = make_disk(harness.DEFAULT_CACHE_DIR, ram)
    argv = [str(REPO / ".venv/bin/python"), str(Path(__file__).resolve()), "--in-guest",
            "--seconds", str(args.seconds), "--daemons", args.daemons,
            "--scenarios", args.scenarios, "--repeat", str(args.repeat),
            *(["--verbose"] if args.verbose else [])]
    try:
        res = harness.run_in_guest(argv, memory=args.memory, timeout=args.timeout,
                                   stream=sys.stdout, kernel=args.kernel, disk=disk)
    except harness.HarnessError as exc:
        print(f"\nvm harness: {exc}", file=sys.stderr)
        return 125
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
    # this checkout's oomkit, not the one the venv's editable install points at
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), "-q"], cwd=REPO, env=env)
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
             "reader": spawn(READER, dup.mkcg(root / "reader.scope"),
                             str(DISK_MOUNT / LONE_FILE))}
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
    return {"scenario": "lone reader", "died": died,
            "file_mib": (DISK_MOUNT / LONE_FILE).stat().st_size // MiB, "psi": psi}


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


def show_log(log: Path, verbose: bool) -> None:
    """The daemon's OOMs and errors so far, its PSI events too when ``verbose`` (then the
    log starts afresh)."""
    if not log.exists():
        return
    kinds = ("oom", "handler_error", "error", "psi") if verbose else ("oom", "handler_error",
                                                                    "error")
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") in kinds:
            # an OOM's victims in full: the kill message gives the cause's terms
            print("  " + (line if rec.get("event") == "oom" else line[:400]), flush=True)
    log.write_text("")


def _cell(r: dict[str, object] | None, key: str | None = None) -> str:
    """Who died in one scenario (and when, for ``key``), or "-" where it did not run."""
    if r is None:
        return "-"
    died = ", ".join(r["died"]) or "none"  # type: ignore[arg-type]
    if key is None:
        return died
    after = r[key]
    when = f"{after:.1f} s" if isinstance(after, float) else "alive"
    extra = (f"; {r['leaked_mib']}M, kernel OOM kills {r['kernel_oom_kills']}"
             if key == "leak_dead_after_s" else "")
    return f"{died} ({when}{extra})" if died != "none" or extra else died


def print_table(rows: list[dict[str, object]], names: list[str]) -> None:
    """One line per daemon and run: who died in each scenario, and when."""
    print("\n| daemon | run | f10: died (hog dead after its start) | lone reader: died "
          "| leak: died (dead after; leaked, kernel OOM kills) |")
    print("|---|---|---|---|---|")
    by = {(r["daemon"], r["run"], r["scenario"]): r for r in rows}
    runs = sorted({int(r["run"]) for r in rows})  # type: ignore[call-overload]
    for name in names:
        for run in runs:
            a, b, c = (by.get((name, run, s)) for s in ("f10", "lone reader", "leak"))
            print(f"| {name} | {run} | {_cell(a, 'hog_dead_after_s')} | {_cell(b)} | "
                  f"{_cell(c, 'leak_dead_after_s')} |", flush=True)


def guest_main(args: argparse.Namespace) -> int:
    Path("/proc/self/oom_score_adj").write_text("-1000")  # the driver is not a candidate
    work = Path("/tmp/oomkit-bench-policies")
    work.mkdir(exist_ok=True)
    dup.mkcg(CGROUP / "system.slice")
    DISK_MOUNT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", "-o", "ro", "/dev/vda", str(DISK_MOUNT)],
                   check=True)
    print("disk: " + " ".join(line for line in Path("/proc/mounts").read_text().splitlines()
                              if str(DISK_MOUNT) in line), flush=True)
    files = [str(DISK_MOUNT / name) for name in APP_FILES]
    rows = []
    chosen = {n: w for n, w in daemons().items()
              if not args.daemons or any(d in n for d in args.daemons.split(","))}
    scenarios = [x for x in ("f10", "lone", "leak")
                 if not args.scenarios or x in args.scenarios.split(",")]
    for name, what in chosen.items():
        daemon = start_daemon(what, work)
        try:
            for run in range(args.repeat):
                for scenario in scenarios:
                    root = CGROUP
                    for part in APPS.split("/"):
                        root = dup.mkcg(root / part)
                    try:
                        r = (f10(root, files, args.seconds, args.verbose) if scenario == "f10"
                             else lone(root, args.seconds, args.verbose)
                             if scenario == "lone" else leak(args.seconds))
                    finally:
                        dup.destroy(CGROUP / "user.slice")
                    r["daemon"], r["run"] = name, run + 1
                    rows.append(r)
                    print("RESULT " + json.dumps(r), flush=True)
                    if isinstance(what, Path):
                        show_log(work / "events.jsonl", args.verbose)
                    time.sleep(3)
        finally:
            daemon.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(60)
    print_table(rows, list(chosen))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--kernel", default=None, help="guest kernel: 6.1, 6.12, 7.3 "
                    "(default: $OOMKIT_VM_KERNEL, else 6.1)")
    ap.add_argument("--memory", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="how long each scenario may run (default 60)")
    ap.add_argument("--timeout", type=float, default=1500.0, help="guest timeout (s)")
    ap.add_argument("--daemons", default="", help="only these (comma-separated parts of "
                    "their names: oomkit,earlyoom,oomd,recommended,preset)")
    ap.add_argument("--scenarios", default="", help="only these (comma-separated: "
                    "f10,lone,leak; default all)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each daemon's scenarios this many times (default 1)")
    ap.add_argument("--verbose", action="store_true", help="oomkit's PSI events and OOMs")
    args = ap.parse_args()
    return guest_main(args) if args.in_guest else host_main(args)


if __name__ == "__main__":
    sys.exit(main())
