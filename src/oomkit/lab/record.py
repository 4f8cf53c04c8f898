"""``oomkit record --duration D``: the flight recorder on demand, without the daemon.

It opens the live kernel read-only (no handler attached, nothing armed, no restore
journal), samples for D and writes one incident file, as the daemon does at an OOM.
"""

from __future__ import annotations

import argparse
import os
import threading
from typing import Any, TextIO

from oomkit.errors import ConfigError, OomkitError
from oomkit.lab.recorder import FlightRecorder, RecorderSettings, incident_name, write_incident
from oomkit.units import counted, parse_duration_ns, parse_size


def add_parser(sub: Any) -> None:
    p = sub.add_parser("record", help="sample the live kernel for a while into an incident file")
    p.add_argument("--duration", required=True, metavar="DURATION", help="e.g. 30s, 5m")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the incident file (default: ./incident-TIME-0.jsonl)")
    p.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                   help="sample this cgroup and its subtree (repeatable; default: all)")
    p.add_argument("--cgroup-root", default=None, metavar="DIR",
                   help="the cgroup tree (default: the memory controller's mount)")
    p.add_argument("--interval", default="1s", metavar="DURATION",
                   help="time between samples (default 1s; a quarter of it under pressure)")
    p.add_argument("--size", default="64M", metavar="SIZE",
                   help="keep at most this much of samples: the newest (default 64M)")


def _duration_s(flag: str, text: str) -> float:
    try:
        ns = parse_duration_ns(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text}: {exc}") from None
    if ns <= 0:
        raise ConfigError(f"{flag} {text}: must be more than zero")
    return ns / 1e9


def run(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.daemon.eventlog import wall_clock
    from oomkit.kernel.linux import LinuxKernel

    duration = _duration_s("--duration", args.duration)
    interval = _duration_s("--interval", args.interval)
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        raise ConfigError(f"--size {args.size}: {exc}") from None
    if size <= 0:  # a ring of nothing would keep no sample, and write an empty incident
        raise ConfigError(f"--size {args.size}: must be more than zero")
    out_dir = os.path.dirname(os.path.abspath(args.out)) if args.out else "."
    if not os.path.isdir(out_dir):  # found out now, not after the whole duration
        raise ConfigError(f"--out {args.out}: no such directory {out_dir}")
    try:
        kernel = LinuxKernel(cgroup_root=args.cgroup_root, state_file=None, watchdog=False,
                             kmsg_path=None)
    except OomkitError as exc:
        raise ConfigError(f"cannot open the live kernel: {exc}") from None
    try:
        roots = []
        for path in args.cgroup:
            cg = kernel.mem_cgroup(path)
            if cg is None:
                raise ConfigError(f"--cgroup {path}: no such cgroup")
            roots.append(cg)
        settings = RecorderSettings(size_bytes=size, interval_s=interval,
                                    pressure_interval_s=max(0.05, interval / 4),
                                    procs=64, cgroups=256)
        rec = FlightRecorder(kernel, settings, roots=(lambda: roots) if roots else None,
                             wall=wall_clock)
        stop = threading.Event()
        end = kernel.clock.now() + duration
        while True:
            delay = rec.sample_once()
            left = end - kernel.clock.now()
            if left <= 0 or stop.wait(min(delay, left)):
                break
        rec.sample_once()  # the last moment too
        path = args.out or incident_name(".", wall_clock(), 0)
        header = rec.header("record")
        header["cgroup_root"] = kernel.root_dir
        try:
            write_incident(path, header, rec.snapshot())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        close = getattr(kernel, "close", None)
        if close is not None:
            close()
    dropped = f" ({rec.dropped} oldest dropped to stay within {args.size})" if rec.dropped else ""
    out.write(f"recorded {counted(rec.samples_taken, 'sample')} over {duration:g} s{dropped}: "
              f"{os.path.abspath(path)}\n")
    return 0
