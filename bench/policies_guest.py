"""The recommended config on the real kernel: f10 for real, and a lone reader (v2 guest).

    sudo .venv/bin/python bench/policies_guest.py [--memory 1G] [--seconds 60]

On the host this boots the QEMU guest (tests/vm/harness.py: cgroup v2, no swap, TCG)
and runs itself there with ``--in-guest``. In the guest, the daemon runs
packaging/oomkit.toml unchanged (only its files moved to /tmp) and two scenarios follow:

- **f10** (../shared/field/f10_noswap_cache_thrash.toml for real): no swap, no
  memory.max anywhere; three applications, each in its own cgroup, re-read their own
  host files (over virtio-9p: clean page cache, evicted and fetched again), then a hog
  allocates anonymous memory until only about half of the applications' files fit. The
  right outcome: the hog is killed within 30 s of being full, no application is.
- **lone reader**: a service doing work in 300M of its own memory, and a reader
  re-reading a (sparse) file of 1.4x the guest's RAM. It hurts nobody but itself: the
  right outcome is no kill at all.

Prints one line per scenario (victims, seconds from the hog being full to its death,
memory/io "full" avg10 seen) and the daemon's OOM records. Removes what it made.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup")
MiB = 1 << 20
SPARSE = Path("/var/tmp/oomkit-bench-lone-reader.bin")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# the thrash helpers (meminfo, mkcg, destroy, big_files, READER) are that bench's
dup = _load("oomkit_bench_decision", REPO / "bench" / "decision_under_pressure.py")

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


def host_main(args: argparse.Namespace) -> int:
    harness = dup.load_harness()
    harness.ensure_packages()
    ram = int(args.memory[:-1]) * (1 << 30 if args.memory.endswith("G") else MiB)
    with open(SPARSE, "wb") as f:
        f.truncate(int(ram * 1.4))
    argv = [str(REPO / ".venv/bin/python"), str(Path(__file__).resolve()), "--in-guest",
            "--seconds", str(args.seconds),
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


def start_daemon(work: Path) -> tuple[subprocess.Popen[bytes], Path]:
    text = (REPO / "packaging" / "oomkit.toml").read_text()
    for key, name in (("event_log", "events.jsonl"), ("status_file", "status.json"),
                      ("state_file", "restore.json")):
        text = re.sub(rf"(?m)^{key}\s*=.*$", f'{key} = "{work / name}"', text)
    config = work / "oomkit.toml"
    config.write_text(text)
    log = work / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), "-q"], cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and '"action": "start"' in log.read_text():
            return proc, log
        time.sleep(0.2)
    proc.kill()
    sys.exit("the daemon did not start in 120 s")


def ooms(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "oom":
            out.append(rec)
    return out


def spawn(code: str, cg: Path, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", "-c", code, str(cg / "cgroup.procs"), *argv],
                            stdout=subprocess.PIPE)


def f10(root: Path, files: list[str], seconds: float, log: Path) -> dict[str, object]:
    apps = {}
    for i, name in enumerate(("browser", "mail", "ide")):
        apps[name] = spawn(READER, dup.mkcg(root / f"app-{name}"), *files[i::3])
    time.sleep(10)  # their files in page cache
    total = sum(os.path.getsize(f) for f in files)
    hog_size = max(0, dup.meminfo()["MemAvailable"] - total // 2)
    before = len(ooms(log))
    hog = spawn(HOG, dup.mkcg(root / "app-hog"), str(hog_size))
    assert hog.stdout is not None
    first = hog.stdout.readline()
    full_at = time.monotonic()
    psi = full_avg10()
    while hog.poll() is None and time.monotonic() - full_at < seconds:
        time.sleep(0.5)
        psi = full_avg10() if hog.poll() is None else psi
    dead_after = time.monotonic() - full_at if hog.poll() is not None else None
    victims = [v["comm"] for r in ooms(log)[before:] for v in r["victims"]]  # type: ignore[attr-defined]
    apps_dead = [n for n, p in apps.items() if p.poll() is not None]
    for p in [hog, *apps.values()]:
        with contextlib.suppress(OSError):
            p.kill()
    return {"scenario": "f10", "hog_mib": hog_size // MiB, "files_mib": total // MiB,
            "hog_was_full": first.strip() == b"full", "hog_dead_after_s": dead_after,
            "apps_dead": apps_dead, "victims": victims, "psi_before_kill": psi}


def lone(root: Path, seconds: float, log: Path) -> dict[str, object]:
    before = len(ooms(log))
    service = spawn(SERVICE, dup.mkcg(root / "service"), str(300 * MiB))
    reader = spawn(READER, dup.mkcg(root / "reader"), str(SPARSE))
    start = time.monotonic()
    psi = full_avg10()
    while time.monotonic() - start < seconds and service.poll() is None \
            and reader.poll() is None:
        time.sleep(1)
        psi = full_avg10()
    victims = [v["comm"] for r in ooms(log)[before:] for v in r["victims"]]  # type: ignore[attr-defined]
    dead = [n for n, p in (("service", service), ("reader", reader)) if p.poll() is not None]
    for p in (service, reader):
        with contextlib.suppress(OSError):
            p.kill()
    return {"scenario": "lone reader", "file_mib": SPARSE.stat().st_size // MiB,
            "dead": dead, "victims": victims, "psi_at_end": psi}


def guest_main(args: argparse.Namespace) -> int:
    work = Path("/tmp/oomkit-bench-policies")
    work.mkdir(exist_ok=True)
    daemon, log = start_daemon(work)
    results = []
    try:
        for name, run in (("f10", lambda r: f10(r, args.files.split(os.pathsep),
                                                 args.seconds, log)),
                          ("lone", lambda r: lone(r, args.seconds, log))):
            root = dup.mkcg(CGROUP / f"bench-{name}")
            try:
                results.append(run(root))
            finally:
                dup.destroy(root)
            time.sleep(5)
    finally:
        daemon.terminate()
        daemon.wait(60)
    for r in results:
        print("RESULT " + json.dumps(r), flush=True)
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") in ("oom", "handler_error", "error"):
            print(line, flush=True)
        elif rec.get("event") == "psi":
            print(f"psi at {rec['time']:.1f}: {rec.get('cgroup') or 'machine'} "
                  f"{rec['resource']} {'full' if rec['full'] else 'some'}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--files", default="", help=argparse.SUPPRESS)
    ap.add_argument("--memory", default="1G", help="guest RAM (default 1G)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="how long each scenario may run (default 60)")
    ap.add_argument("--timeout", type=float, default=900.0, help="guest timeout (s)")
    args = ap.parse_args()
    return guest_main(args) if args.in_guest else host_main(args)


if __name__ == "__main__":
    sys.exit(main())
