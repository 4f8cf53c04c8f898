"""What the daemon costs while nothing happens: idle CPU and RSS, beside earlyoom's.

    sudo .venv/bin/python bench/daemon_overhead.py [--seconds 60] [--cgroups 1000] [--json]

Creates N memory cgroups below this process's own memcg (cgroup v1 memory or v2), starts
``oomkit run`` with a system-wide handler over that subtree (so it arms every one of them:
on v1 an ``oom_kill_disable`` + eventfd each) with metrics, event log and status file on,
and starts earlyoom (Debian's package, its default arguments from /etc/default/earlyoom)
as a plain foreground process. Once both are up, it measures the same window for both:
CPU seconds (the scheduler's per-thread run time, /proc/PID/task/*/schedstat; the
daemon's watchdog process counted with it)
and memory (VmRSS; PSS, which splits shared pages among their users; VmLck, what
mlockall pinned; VmHWM, the peak), per process and for the daemon and its watchdog
together. Targets: idle CPU of both together no more than earlyoom's, RSS under 40 MiB,
memory locked while idle (daemon + watchdog, PSS and VmLck) at most 30 MiB. earlyoom not
on PATH: Debian's package unpacked into the VM harness's cache, run from there. Then the
daemon runs again with its flight recorder off (``[recorder] size = "0"``) over the same
window: the recorder's own cost is the difference (target: at most 0.1 % of one CPU and
8 MiB of RSS).

Everything it made is removed afterwards, after a failure too: the daemon is stopped
with SIGTERM (which restores every cgroup setting), earlyoom is killed, the cgroups are
removed. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from oomkit.kernel.linux import fsio, procfs

MiB = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_RSS = 40 * MiB
TARGET_LOCKED = 30 * MiB  # daemon and watchdog together, idle


def own_memcg() -> Path:
    found = procfs.own_memcg_dir()
    if found is None:
        sys.exit("no memory cgroup of our own")
    return Path(found)


def limit(d: Path, nbytes: int) -> None:
    if (d / "memory.limit_in_bytes").exists():
        (d / "memory.limit_in_bytes").write_text(str(nbytes))
        memsw = d / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(nbytes))
    elif (d / "memory.max").exists():
        (d / "memory.max").write_text(str(nbytes))


def remove_tree(root: Path) -> None:
    """Remove a cgroup tree bottom-up (it holds no processes). Never raises."""
    fsio.remove_tree(str(root))


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of pid, from /proc/PID/task/*/schedstat (the
    scheduler's nanoseconds: utime/stime in /proc/PID/stat count 10 ms ticks, too coarse
    for an idle minute). Falls back to utime + stime without schedstats."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except OSError:
        pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split among their users), smaps_rollup."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def find_earlyoom() -> str | None:
    """earlyoom on PATH, else Debian's package unpacked into the VM harness's cache
    (downloaded, never installed: no earlyoom service starts on this machine)."""
    found = shutil.which("earlyoom")
    if found is not None:
        return found
    from _load import REPO, load_module

    kernels = load_module("oomkit_vm_kernels", REPO / "tests/vm/kernels.py")
    try:
        root = kernels.unpacked_package("earlyoom")
    except kernels.KernelError as exc:
        print(f"earlyoom: {exc}", file=sys.stderr)
        return None
    binary = root / "usr/bin/earlyoom"
    return str(binary) if binary.exists() else None


def children(pid: int) -> list[int]:
    """Every process whose parent is pid (the daemon's watchdog)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


@dataclass
class Figures:
    name: str
    pid: int
    cpu_s: float = 0.0
    rss_kib: int = 0
    pss_kib: int = 0
    locked_kib: int = 0
    hwm_kib: int = 0
    threads: int = 0
    extra: str = ""


def measure(pids: list[int], seconds: float) -> tuple[float, list[float]]:
    before = [cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    after = [cpu_seconds(p) for p in pids]
    return seconds, [a - b for a, b in zip(after, before, strict=True)]


def start_daemon(work: Path, root: Path, recorder: bool = True) -> subprocess.Popen[bytes]:
    config = work / "oomkit.toml"
    (work / "status.json").unlink(missing_ok=True)
    config.write_text(
        ("" if recorder else '[recorder]\nsize = "0"\n') +
        "[daemon]\n"
        f'event_log = "{work}/events.jsonl"\nstatus_file = "{work}/status.json"\n'
        f'state_file = "{work}/restore.json"\ncgroup_root = "{root}"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        '[[oom]]\npolicy = "largest_leaf"\n'
    )
    return subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def wait_ready(work: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            sys.exit(f"oomkit run exited with {proc.returncode}: {err}")
        with contextlib.suppress(OSError, ValueError):
            status: dict[str, object] = json.loads((work / "status.json").read_text())
            if status.get("running") and status.get("handlers"):
                return status
        time.sleep(0.05)
    sys.exit("oomkit run did not become ready")


def recorder_cost(root: Path) -> dict[str, float]:
    """The flight recorder's own cost, measured in this process over the same tree: CPU
    per sample and per tree walk, and what that makes at the default intervals (the
    difference of two daemon runs above is within the daemon's own noise)."""
    from oomkit.kernel.linux import LinuxKernel
    from oomkit.lab.recorder import IDLE_STRETCH, IDLE_WALK_S, FlightRecorder, RecorderSettings

    kernel = LinuxKernel(cgroup_root=str(root), state_file=None, watchdog=False,
                         kmsg_path=None)
    try:
        settings = RecorderSettings()
        rec = FlightRecorder(kernel, settings)
        rec.sample_once()
        t0 = time.process_time()
        for _ in range(5):
            rec._pick_cgroups()
        walk = (time.process_time() - t0) / 5
        t0 = time.process_time()
        for _ in range(50):
            rec.sample_once()
        sample = (time.process_time() - t0) / 50
    finally:
        kernel.close()
    quiet_s = settings.interval_s * IDLE_STRETCH  # the gap once nothing moves
    return {"cgroups": len(rec._cgroups), "sample_ms": sample * 1e3, "walk_ms": walk * 1e3,
            "interval_s": settings.interval_s, "quiet_interval_s": quiet_s,
            "walk_every_s": IDLE_WALK_S,
            "idle_pct": 100 * (sample / settings.interval_s + walk / IDLE_WALK_S),
            "quiet_pct": 100 * (sample / quiet_s + walk / IDLE_WALK_S)}


def earlyoom_args() -> list[str]:
    args = ["-r", "3600"]
    with contextlib.suppress(OSError):
        for line in Path("/etc/default/earlyoom").read_text().splitlines():
            if line.startswith("EARLYOOM_ARGS="):
                args = shlex.split(line.split("=", 1)[1].strip().strip('"'))
    return args


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="idle window (default 60)")
    ap.add_argument("--cgroups", type=int, default=1000, help="cgroups to watch (1000)")
    ap.add_argument("--settle", type=float, default=2.0, help="wait after startup (2 s)")
    ap.add_argument("--json", action="store_true", help="figures as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (cgroups, mlockall, the kernel's OOM settings)")
    earlyoom = find_earlyoom()

    root = own_memcg() / f"oomkit-bench-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="oomkit-bench-"))
    daemon: subprocess.Popen[bytes] | None = None
    eo: subprocess.Popen[bytes] | None = None
    try:
        root.mkdir()
        limit(root, 1 << 30)  # a backstop; nothing runs in there
        t0 = time.monotonic()
        for i in range(args.cgroups):
            (root / f"c{i:04d}").mkdir()
        made_s = time.monotonic() - t0

        t0 = time.monotonic()
        daemon = start_daemon(work, root)
        status = wait_ready(work, daemon)
        startup_s = time.monotonic() - t0
        startup_cpu = cpu_seconds(daemon.pid)
        if earlyoom is not None:
            eo = subprocess.Popen([earlyoom, *earlyoom_args()], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(args.settle)
        watchdogs = children(daemon.pid)
        d_pids = [daemon.pid, *watchdogs]
        pids = d_pids + ([eo.pid] if eo is not None else [])
        window, deltas = measure(pids, args.seconds)
        status = json.loads((work / "status.json").read_text())

        def figures(name: str, pid: int, cpu: float, extra: str = "") -> Figures:
            return Figures(name, pid, cpu, status_kb(pid, "VmRSS"), pss_kb(pid),
                           status_kb(pid, "VmLck"), status_kb(pid, "VmHWM"),
                           status_kb(pid, "Threads"), extra)

        ours = figures("oomkit", daemon.pid, deltas[0],
                       f"watching {status.get('watched_cgroups')} cgroups; "
                       f"startup {startup_s:.2f} s, {startup_cpu:.2f} s CPU")
        wd = [figures("watchdog", p, d)
              for p, d in zip(watchdogs, deltas[1: len(d_pids)], strict=True)]
        both = Figures("both", daemon.pid, sum(deltas[: len(d_pids)]),
                       sum(f.rss_kib for f in [ours, *wd]), sum(f.pss_kib for f in [ours, *wd]),
                       sum(f.locked_kib for f in [ours, *wd]),
                       sum(f.hwm_kib for f in [ours, *wd]), sum(f.threads for f in [ours, *wd]),
                       "daemon + watchdog")
        theirs = None
        if eo is not None:
            theirs = figures("earlyoom", eo.pid, deltas[-1], " ".join(earlyoom_args()))
        # The same daemon without its flight recorder: what the recorder costs.
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        daemon = start_daemon(work, root, recorder=False)
        wait_ready(work, daemon)
        time.sleep(args.settle)
        bare_pids = [daemon.pid, *children(daemon.pid)]
        _, bare_deltas = measure(bare_pids, args.seconds)
        bare = figures("no recorder", daemon.pid, sum(bare_deltas),
                       "the same config, [recorder] off")
        rec_cpu_pct = 100 * (both.cpu_s - bare.cpu_s) / window
        direct = recorder_cost(root)
        rec_rss_mib = (ours.rss_kib - bare.rss_kib) / 1024
        result = {
            "no_recorder": asdict(bare),
            "recorder_cpu_pct": round(rec_cpu_pct, 4), "recorder_rss_mib": round(rec_rss_mib, 2),
            "recorder_target_met": rec_cpu_pct <= 0.1 and rec_rss_mib <= 8,
            "recorder_direct": direct,
            "seconds": window, "cgroups": args.cgroups, "cgroups_created_s": round(made_s, 3),
            "oomkit": asdict(ours), "watchdog": [asdict(w) for w in wd], "both": asdict(both),
            "earlyoom": asdict(theirs) if theirs is not None else None,
            "cpu_target_met": theirs is not None and both.cpu_s <= theirs.cpu_s,
            "locked_target_met": max(both.locked_kib, both.pss_kib) <= TARGET_LOCKED // 1024,
            "rss_target_met": ours.rss_kib * 1024 < TARGET_RSS,
        }
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"idle for {window:g} s; {args.cgroups} cgroups below {root.parent} "
                  f"(created in {made_s:.2f} s)")
            print(f"{'':11} {'CPU s':>9} {'CPU %':>7} {'RSS MiB':>8} {'PSS MiB':>8} "
                  f"{'locked':>7} {'peak MiB':>9} {'threads':>8}")
            for f in [ours, *wd, both, bare] + ([theirs] if theirs else []):
                print(f"{f.name:11} {f.cpu_s:9.4f} {f.cpu_s / window * 100:7.4f} "
                      f"{f.rss_kib / 1024:8.1f} {f.pss_kib / 1024:8.1f} "
                      f"{f.locked_kib / 1024:7.1f} {f.hwm_kib / 1024:9.1f} {f.threads:8}  "
                      f"{f.extra}")
            if theirs is None:
                print("earlyoom: not installed (apt-get install earlyoom): no comparison")
            else:
                verdict = "met" if result["cpu_target_met"] else "MISSED"
                print(f"idle CPU target (<= earlyoom's): {verdict}")
            verdict = "met" if result["locked_target_met"] else "MISSED"
            print(f"locked memory target, daemon + watchdog (<= 30 MiB, PSS and VmLck): "
                  f"{verdict} (PSS {both.pss_kib / 1024:.1f} MiB, locked "
                  f"{both.locked_kib / 1024:.1f} MiB, RSS {both.rss_kib / 1024:.1f} MiB)")
            verdict = "met" if result["rss_target_met"] else "MISSED"
            print(f"RSS target (< 40 MiB): {verdict} ({ours.rss_kib / 1024:.1f} MiB)")
            verdict = "met" if result["recorder_target_met"] else "MISSED"
            print(f"flight recorder: {rec_cpu_pct:+.3f} % of one CPU, {rec_rss_mib:+.1f} MiB RSS "
                  f"(target <= 0.1 %, <= 8 MiB): {verdict}")
            print(f"flight recorder measured in-process over the same tree: "
                  f"{direct['sample_ms']:.2f} ms CPU per sample of {direct['cgroups']} cgroups, "
                  f"{direct['walk_ms']:.1f} ms per tree walk: {direct['idle_pct']:.4f} % of one "
                  f"CPU sampling every {direct['interval_s']:g} s, {direct['quiet_pct']:.4f} % "
                  f"once quiet (every {direct['quiet_interval_s']:g} s; a walk every "
                  f"{direct['walk_every_s']:g} s)")
        return 0
    finally:
        if eo is not None:
            eo.kill()
            eo.wait()
        if daemon is not None:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        remove_tree(root)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
