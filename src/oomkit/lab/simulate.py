"""``oomkit simulate ... --samples FILE --plot FILE``: the simulator with its time series."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable
from typing import TextIO

from oomkit.errors import ConfigError
from oomkit.events import Event
from oomkit.kernel.sim import Scenario
from oomkit.lab.contender import Contender, from_policy_text
from oomkit.lab.timeline import Timeline, run_timeline
from oomkit.units import parse_duration_ns


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", default=None, metavar="FILE",
                   help="write samples (per cgroup usage, limits, PSI; per process rss) "
                        "and events as JSON lines")
    p.add_argument("--sample-interval", default="1s", metavar="DURATION",
                   help="time between samples (default 1s)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="draw the timeline (.png, .svg, .pdf; needs oomkit[plot])")
    p.add_argument("--policy", action="append", default=[], metavar="TEXT",
                   help="run once per --policy (comma-separated [oom:|psi:]SPEC[@CGROUP], "
                        "or 'kernel'), side by side in the plot")


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.samples or args.plot or args.policy)


def _writable(option: str, path: str) -> None:
    """ConfigError unless ``path`` can be written (it is written after the run)."""
    if os.path.isdir(path):
        raise ConfigError(f"{option} {path}: cannot write: {os.strerror(errno.EISDIR)}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"{option} {path}: no such directory")
    if not os.access(path if os.path.exists(path) else parent, os.W_OK):
        raise ConfigError(f"{option} {path}: cannot write: {os.strerror(errno.EACCES)}")


def check(args: argparse.Namespace) -> tuple[int, list[Contender | None]]:
    """(sample interval in ns, contenders) after every check that can fail before the run:
    the interval, the plot's name and matplotlib, where the files go, the policies.
    Raises ConfigError."""
    try:
        interval = parse_duration_ns(args.sample_interval)
    except ValueError as exc:
        raise ConfigError(f"--sample-interval {args.sample_interval}: {exc}") from None
    if interval <= 0:
        raise ConfigError(f"--sample-interval {args.sample_interval}: must be positive")
    if args.plot:
        from oomkit.lab.plot import check_suffix, require

        check_suffix(args.plot)
        require()  # fail before the run, not after it
        _writable("--plot", args.plot)
    if args.samples:
        _writable("--samples", args.samples)
    contenders: list[Contender | None] = []
    if args.policy:
        if args.oom_policy or args.psi_policy:
            raise ConfigError("--policy runs alternatives: give the policies there, "
                              "not with --oom-policy/--psi-policy")
        from oomkit.policy_loader import load_oom, load_psi, split_at

        parsed = [from_policy_text(t) for t in args.policy]
        for c in parsed:  # each imported once now, for its error
            for text in c.oom:
                load_oom(split_at(text).spec)
            for spec in c.psi:
                load_psi(spec)
        contenders = list(parsed)
    elif args.oom_policy or args.psi_policy:
        label = ",".join([*args.oom_policy, *(f"psi:{s}" for s in args.psi_policy)])
        contenders = [Contender(label, tuple(args.oom_policy), tuple(args.psi_policy))]
    else:
        contenders = [None]
    return interval, contenders


def run(args: argparse.Namespace, scenario: Scenario, printer: Callable[[Event], None],
        out: TextIO) -> int:
    interval, contenders = check(args)
    timelines: list[Timeline] = []
    for c in contenders:
        if len(contenders) > 1 and not args.json:
            out.write(f"--- under {c.label if c else 'the scenario policies'}\n")
        tl = run_timeline(scenario, c, interval_ns=interval, bare=args.bare, sink=printer,
                          budget_s=args.budget,
                          label=None if c else ("kernel" if args.bare else "scenario"))
        for note in tl.notes:
            out.write(f"note: {note}\n")
        timelines.append(tl)
        if len(contenders) > 1 and not args.json:
            out.write("\n")
    if args.samples:
        try:
            with open(args.samples, "w", encoding="utf-8") as f:
                for tl in timelines:
                    tl.write(f, tagged=len(timelines) > 1)
        except OSError as exc:
            raise ConfigError(f"--samples {args.samples}: {exc.strerror}") from None
    if args.plot:
        from oomkit.lab.plot import plot_timelines

        plot_timelines(timelines, args.plot)
        if not args.json:
            out.write(f"plot: {args.plot}\n")
    return 0
