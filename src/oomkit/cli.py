"""The ``oomkit`` command: simulate, run, check-config, events, status, policies.

Errors in what the user gave us (a scenario, a policy, a config) print one line and exit
with code 2; a bug of ours still shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from oomkit.errors import AttachError, ConfigError, OomkitError
from oomkit.events import Event, SummaryEvent
from oomkit.policy_loader import load_oom, load_psi, split_at
from oomkit.report import write_event, write_summary
from oomkit.runtime import Runtime
from oomkit.units import check_budget_s, format_size

EXIT_USAGE = 2


def _budget(text: str) -> float:
    """--budget SECONDS: finite, more than zero, capped (units.check_budget_s)."""
    try:
        return check_budget_s(float(text) if text.isascii() else float("nan"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--oom-policy", action="append", default=[], metavar="SPEC[@CGROUP]",
                   help="an OomOps to attach, at CGROUP or system-wide (repeatable)")
    p.add_argument("--psi-policy", action="append", default=[], metavar="SPEC",
                   help="a PsiOps to attach (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--budget", type=_budget, default=1.0, metavar="SECONDS",
                   help="time budget of one handler call (default 1 s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oomkit", description="Programmable out-of-memory handling for Linux.")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="run policies against a scenario on the simulator")
    sim.add_argument("scenario", help="a scenario file (TOML)")
    sim.add_argument("--bare", action="store_true",
                     help="ignore the policies the scenario suggests: the kernel alone")
    _add_policy_args(sim)
    run = sub.add_parser("run", help="run policies on the live kernel until SIGTERM")
    run.add_argument("--config", default=None, help="config file (default: none, or "
                     "/etc/oomkit/oomkit.toml when no policy is given)")
    run.add_argument("--dry-run", action="store_true",
                     help="run the policies but kill nothing; never guard the kernel killer")
    run.add_argument("--sim", default=None, metavar="SCENARIO",
                     help="run the daemon over the simulator instead of the live kernel "
                          "(try a config without root or risk)")
    run.add_argument("--quiet", "-q", action="store_true",
                     help="no events on stdout (the event log has them)")
    _add_policy_args(run)
    run.set_defaults(budget=None)  # the config's budget unless --budget is given
    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("file")
    ev = sub.add_parser("events", help="show the event log as a readable table")
    ev.add_argument("--file", default=None, help="event log (default from the config)")
    ev.add_argument("--follow", "-f", action="store_true")
    ev.add_argument("--config", default=None)
    ev.add_argument("--lines", "-n", type=int, default=None, metavar="N",
                    help="only the last N records (10 with --follow)")
    ev.add_argument("--kind", action="append", default=[], metavar="KIND",
                    help="only records of this kind: oom, psi, error, attach... (repeatable)")
    ev.add_argument("--json", action="store_true", help="the raw JSON lines")
    st = sub.add_parser("status", help="attached handlers, watched cgroups, last OOMs")
    st.add_argument("--config", default=None)
    st.add_argument("--status-file", default=None, help="default from the config")
    st.add_argument("--lines", "-n", type=int, default=5, metavar="N",
                    help="how many of the last OOMs to show (default 5)")
    st.add_argument("--json", action="store_true", help="the status file as it is")
    sub.add_parser("policies", help="list the built-in policies")
    return parser


class _Printer:
    """Writes events as they come: JSON lines, or the readable story."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json

    def __call__(self, event: Event) -> None:
        if self.as_json:
            self.out.write(event.to_json() + "\n")
            self.out.flush()
        else:
            write_event(self.out, event.to_dict())
            if isinstance(event, SummaryEvent):
                write_summary(self.out, event.to_dict())


def attach_policies(rt: Runtime, oom_specs: Sequence[str], psi_specs: Sequence[str],
                    *, secure: bool = False) -> None:
    for text in oom_specs:
        ps = split_at(text)
        ops = load_oom(ps.spec, secure=secure)
        try:
            rt.attach_oom(ops, ps.cgroup)
        except AttachError as exc:
            raise ConfigError(f"--oom-policy {text}: {exc}") from None
    for spec in psi_specs:
        pops = load_psi(spec, secure=secure)
        try:
            rt.attach_psi(pops)
        except AttachError as exc:
            raise ConfigError(f"--psi-policy {spec}: {exc}") from None


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.kernel.sim import SimKernel, load_scenario

    scenario = load_scenario(args.scenario)
    kernel = SimKernel.from_scenario(scenario)
    printer = _Printer(out, args.json)
    if not args.json:
        m = scenario.machine
        title = scenario.name or args.scenario
        out.write(f"oomkit simulate: {title}\n")
        if scenario.description:
            for line in scenario.description.strip().splitlines():
                out.write(f"  {line.strip()}\n")
        out.write(f"machine: {format_size(m.memory)} RAM, "
                  f"{format_size(m.swap) if m.swap else 'no'} swap; "
                  f"{len(scenario.processes)} processes, {m.duration_ns / 1e9:g} s\n\n")
    rt = Runtime(kernel, sink=printer, budget_s=args.budget)
    oom_specs = list(args.oom_policy)
    psi_specs = list(args.psi_policy)
    if not oom_specs and not psi_specs and not args.bare:
        for n, text in enumerate(scenario.policies):  # the scenario's own suggestion
            spec = text.removeprefix("psi:").removeprefix("oom:")
            psi = text.startswith("psi:")
            try:
                attach_policies(rt, [] if psi else [spec], [spec] if psi else [])
            except ConfigError as exc:
                raise scenario.policy_error(n, str(exc)) from None
    attach_policies(rt, oom_specs, psi_specs)
    kernel.run()
    summary = kernel.summary()
    rt.close()
    printer(summary)
    return 0


def cmd_policies(out: TextIO) -> int:
    from oomkit.policies import BUILTIN
    from oomkit.policy_loader import resolve

    for name in sorted(BUILTIN):
        obj = resolve(name)
        doc = ((obj.__module__ and sys.modules[obj.__module__].__doc__) or "").strip()
        first = doc.splitlines()[0] if doc else ""
        out.write(f"{name:15} {first.removeprefix(name + ':').strip()}\n")
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return cmd_simulate(args, out)
        if args.command == "policies":
            return cmd_policies(out)
        from oomkit import daemon_cli

        return daemon_cli.dispatch(args, out)
    except ConfigError as exc:
        print(f"oomkit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OomkitError as exc:
        print(f"oomkit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
