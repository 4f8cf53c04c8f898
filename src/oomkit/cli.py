"""The ``oomkit`` command: simulate, run, check-config, events, status, policies.

Errors in what the user gave us (a scenario, a policy, a config) print one line and exit
with code 2 (as argparse does for a bad option); a bug of ours still shows its traceback.
A reader that goes away (``oomkit events | head``) ends the command quietly, with 141 as a
process killed by SIGPIPE would. ``oomkit status`` exits as an LSB init script's status
does (0 running, 1 dead, 3 not running, 4 unknown; see docs/daemon.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from oomkit.errors import AttachError, ConfigError, OomkitError
from oomkit.meta import package_version
from oomkit.policy_loader import load_oom, load_psi, split_at
from oomkit.report import Printer
from oomkit.runtime import DEFAULT_BUDGET_S, Runtime
from oomkit.units import counted, duration_arg, format_size

EXIT_USAGE = 2
#: 128 + SIGPIPE: what the shell reports for a writer whose reader went away.
EXIT_PIPE = 141


def event_kinds() -> list[str]:
    """Every event kind a record can have: the events module's, and the daemon's own."""
    import oomkit.events as events

    kinds: set[str] = {"daemon"}
    todo: list[type] = list(events.Event.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        kind = getattr(cls, "kind", None)
        if isinstance(kind, str) and kind:
            kinds.add(kind)
    return sorted(kinds)


def count_arg(value: str) -> int:
    """A whole number of at least 0 (``-n``)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


#: The longest handler budget, as the config file's ``[daemon] budget`` allows: a v1 memcg
#: under OOM stalls its tasks for as long as a handler runs.
MAX_BUDGET_S = 60.0


def budget_arg(value: str) -> float:
    """``--budget``: a duration (or bare seconds) above zero and at most 60 s, the bounds
    the config file puts on ``budget``."""
    seconds = duration_arg(value)
    if not 0 < seconds <= MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(
            f"must be more than zero and at most {MAX_BUDGET_S:g}s, got {value!r}")
    return seconds


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--oom-policy", action="append", default=[], metavar="SPEC[@CGROUP]",
                   help="an OomOps to attach, at CGROUP or system-wide (repeatable)")
    p.add_argument("--psi-policy", action="append", default=[], metavar="SPEC",
                   help="a PsiOps to attach (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--budget", type=budget_arg, default=DEFAULT_BUDGET_S,
                   metavar="DURATION", help="time budget of one handler call: seconds, or "
                   f"500ms, 2s... up to 60s (default {DEFAULT_BUDGET_S * 1000:g} ms)")


class _Version(argparse.Action):
    """``--version``, looked up only when asked (importlib.metadata is a few MiB that the
    daemon would otherwise keep, locked, for good)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default,
                         help=help or "show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"{parser.prog} {package_version()}", file=sys.stdout)  # as argparse's does
        parser.exit()


def build_parser(lean: bool = False) -> argparse.ArgumentParser:
    """The ``oomkit`` parser. ``lean``: without the lab's subcommands, whose modules
    (the simulator, the comparison's worker pool) a daemon would otherwise load and keep."""
    parser = argparse.ArgumentParser(
        prog="oomkit", description="Programmable out-of-memory handling for Linux.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = sub.add_parser("simulate", help="run policies against a scenario on the simulator")
    sim.add_argument("scenario", help="a scenario file (TOML)")
    sim.add_argument("--bare", action="store_true",
                     help="ignore the policies the scenario suggests: the kernel alone")
    _add_policy_args(sim)
    if not lean:
        from oomkit.lab import simulate as lab_simulate

        lab_simulate.add_args(sim)
    run = sub.add_parser("run", help="run policies on the live kernel until SIGTERM")
    run.add_argument("--config", default=None, type=_config_arg,
                     help="config file, or preset:NAME (`oomkit policies` lists them; "
                     "default: none when a policy is given, else /etc/oomkit/oomkit.toml, "
                     "else the recommended config shipped with oomkit)")
    run.add_argument("--dry-run", action="store_true",
                     help="run the policies but kill nothing; never guard the kernel killer")
    run.add_argument("--sim", default=None, metavar="SCENARIO",
                     help="run the daemon over the simulator instead of the live kernel "
                          "(try a config without root or risk)")
    run.add_argument("--quiet", "-q", action="store_true",
                     help="no events on stdout (the event log has them)")
    run.add_argument("--watch-config", action="store_true",
                     help="reload when the config file changes (a ConfigMap mounted in a "
                          "pod): checked at the housekeeper's wakes, at least every 30 s")
    run.add_argument("--state-dir", default=None, metavar="DIR",
                     help="keep the event log, status file and restore journal in DIR "
                          "(events.jsonl, status.json, restore.json) instead of the config's: "
                          "try the daemon without root")
    _add_policy_args(run)
    run.set_defaults(budget=None)  # the config's budget unless --budget is given
    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("file", type=_config_arg,
                     help="the config file (e.g. /etc/oomkit/oomkit.toml) or preset:NAME; "
                     "exit 0 when it loads and its policies import, 2 with the first error")
    ev = sub.add_parser("events", help="show the event log as a readable table")
    ev.add_argument("--file", default=None, help="event log (default from the config)")
    ev.add_argument("--follow", "-f", action="store_true",
                    help="after the last records, print new ones as the daemon writes them, "
                    "across rotations, until Ctrl-C")
    ev.add_argument("--config", default=None, type=_config_arg)
    ev.add_argument("--state-dir", default=None, metavar="DIR",
                    help="the event log of a daemon run with --state-dir DIR")
    ev.add_argument("--lines", "-n", type=count_arg, default=None, metavar="N",
                    help="only the last N records (10 with --follow)")
    kinds = event_kinds()
    ev.add_argument("--kind", action="append", default=[], metavar="KIND", choices=kinds,
                    help=f"only records of this kind (repeatable): {', '.join(kinds)}")
    ev.add_argument("--json", action="store_true", help="the raw JSON lines")
    st = sub.add_parser("status", help="attached handlers, watched cgroups, last OOMs")
    st.add_argument("--config", default=None, type=_config_arg)
    st.add_argument("--status-file", default=None, help="default from the config")
    st.add_argument("--state-dir", default=None, metavar="DIR",
                    help="the status file of a daemon run with --state-dir DIR")
    st.add_argument("--lines", "-n", type=count_arg, default=5, metavar="N",
                    help="how many of the last OOMs to show (default 5)")
    st.add_argument("--json", action="store_true", help="the status file as it is")
    sub.add_parser("policies", help="the policies: built-in and those installed packages "
                   "register, each with its kind and arguments")
    comp = sub.add_parser("completion", help="print a shell completion script (needs shtab: "
                          "pip install 'oomkit[completion]')")
    comp.add_argument("shell", choices=["bash", "zsh", "tcsh"],
                      help="e.g. oomkit completion bash > /etc/bash_completion.d/oomkit")
    rel = sub.add_parser("reload", help="make the running daemon reload its config (SIGHUP "
                         "to the pid in its status file)")
    rel.add_argument("--config", default=None, type=_config_arg)
    rel.add_argument("--status-file", default=None, help="default from the config")
    rel.add_argument("--state-dir", default=None, metavar="DIR",
                     help="the status file of a daemon run with --state-dir DIR")
    inst = sub.add_parser("install-unit", help="write the systemd unit (and the man page) "
                          "for this oomkit")
    inst.add_argument("--unit-dir", default="/etc/systemd/system", metavar="DIR",
                      help="where oomkit.service goes (default /etc/systemd/system)")
    inst.add_argument("--man-dir", default="/usr/local/share/man/man8", metavar="DIR",
                      help="where oomkit.8 goes (default /usr/local/share/man/man8; "
                           "'' for none)")
    inst.add_argument("--config-file", default=None, metavar="FILE",
                      help="written with the recommended config when it does not exist; '' "
                           "for none (default /etc/oomkit/oomkit.toml with the default "
                           "--unit-dir, else none)")
    inst.add_argument("--oomkit", default=None, metavar="PATH",
                      help="the oomkit the unit runs (default: this one)")
    inst.add_argument("--stdout", action="store_true",
                      help="print the unit instead of writing anything")
    if lean:
        return parser
    from oomkit.lab import compare as lab_compare

    lab_compare.add_parser(sub)
    from oomkit.lab import replay as lab_replay

    lab_replay.add_parser(sub)
    from oomkit.lab import record as lab_record

    lab_record.add_parser(sub)
    return parser


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


def _load_each(oom_specs: Sequence[str], psi_specs: Sequence[str]) -> None:
    """Import and instantiate each policy once, for its ConfigError (attach_policies loads
    them again for the run: a policy's constructor is cheap)."""
    for text in oom_specs:
        load_oom(split_at(text).spec)
    for spec in psi_specs:
        load_psi(spec)


def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.kernel.sim import SimKernel, load_scenario

    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        raise other_kind(exc, args.scenario, "scenario") from None
    from oomkit.lab import simulate as lab_simulate

    # Whatever can be refused is refused before the story starts: an error after the
    # scenario's header would read as part of its run.
    if lab_simulate.wanted(args):
        lab_simulate.check(args)
    _load_each(args.oom_policy, args.psi_policy)
    if not args.oom_policy and not args.psi_policy and not args.bare:
        for n, text in enumerate(scenario.policies):  # the scenario's own suggestion
            spec = text.removeprefix("psi:").removeprefix("oom:")
            try:
                _load_each([] if text.startswith("psi:") else [spec],
                           [spec] if text.startswith("psi:") else [])
            except ConfigError as exc:
                raise scenario.policy_error(n, str(exc)) from None
    kernel = SimKernel.from_scenario(scenario)
    printer = Printer(out, args.json)
    if not args.json:
        m = scenario.machine
        title = scenario.name or args.scenario
        out.write(f"oomkit simulate: {title}\n")
        if scenario.description:
            for line in scenario.description.strip().splitlines():
                out.write(f"  {line.strip()}\n")
        out.write(f"machine: {m.cpus} CPUs, {format_size(m.memory)} RAM, "
                  f"{format_size(m.swap) if m.swap else 'no'} swap; "
                  f"{counted(len(scenario.processes), 'process', 'processes')}, "
                  f"{m.duration_ns / 1e9:g} s\n\n")
    if lab_simulate.wanted(args):  # time series, plots, alternatives: the lab's runner
        return lab_simulate.run(args, scenario, printer, out)
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
    from oomkit.sim_summary import summarize

    summary = summarize(kernel)
    rt.close()
    printer(summary)
    return 0


#: The top-level keys that tell a scenario from a daemon config.
_SCENARIO_KEYS = frozenset({"machine", "cgroup", "process"})
_CONFIG_KEYS = frozenset({"daemon", "guard", "metrics", "recorder", "oom", "psi"})


def other_kind(exc: ConfigError, path: str, expected: str) -> ConfigError:
    """``exc`` with a hint when the file is the other kind (a daemon config given to
    ``simulate``, a scenario to ``check-config``); ``exc`` itself otherwise."""
    from oomkit.tomlpos import load_toml, read_toml

    try:  # the one TOML seam: no traceback for bytes, depth or digits here either
        keys = set(load_toml(read_toml(path, expected), path))
    except ConfigError:
        return exc
    if expected == "scenario" and keys & _CONFIG_KEYS and not keys & _SCENARIO_KEYS:
        hint = (f"{path} looks like a daemon config, not a scenario: try "
                f"`oomkit check-config {path}` or `oomkit run --config {path} --sim SCENARIO`")
    elif expected == "config" and keys & _SCENARIO_KEYS and not keys & _CONFIG_KEYS - {"oom"}:
        hint = (f"{path} looks like a scenario, not a daemon config: try "
                f"`oomkit simulate {path}`")
    else:
        return exc
    return ConfigError(f"{exc} ({hint})")


def cmd_completion(args: argparse.Namespace, out: TextIO) -> int:
    """A completion script made by shtab from this very parser (options, commands, choices,
    files where a file is expected)."""
    try:
        import shtab
    except ImportError:
        raise ConfigError("shell completion needs shtab: pip install 'oomkit[completion]'"
                          ) from None
    parser = build_parser()
    for action in _all_actions(parser):  # file arguments complete as files
        if action.dest in ("scenario", "file", "config", "status_file", "sim", "oomkit"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.dest in ("state_dir", "unit_dir", "man_dir"):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    out.write(shtab.complete(parser, shell=args.shell))
    return 0


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                actions += _all_actions(child)
    return actions


def _config_arg(text: str) -> str:
    """``--config`` / check-config's file: ``preset:NAME`` becomes the shipped preset."""
    from oomkit.daemon.config import config_file

    try:
        return config_file(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_policies(out: TextIO) -> int:
    from oomkit.policy_loader import policy_infos

    for info in policy_infos():
        origin = "" if info.origin == "built-in" else f" [{info.origin}: {info.spec}]"
        out.write(f"{info.name:17} {info.kind:3}  {info.summary}{origin}\n")
        for name, tp, default in info.args:
            out.write(f"{'':23}{name} ({tp}) = {default or 'required'}\n")
    from oomkit.daemon.config import PRESET_PREFIX, presets

    out.write("\npresets (`oomkit run --config preset:NAME`, `oomkit check-config "
              "preset:NAME`):\n")
    for name, path in presets().items():
        out.write(f"{PRESET_PREFIX + name:24}{path}\n")
    return 0


def _pipe_closed() -> int:
    """The reader went away: stop writing, and keep the interpreter's final flush of stdout
    from failing again (the recipe of the Python docs' signal module notes)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_PIPE


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(lean=words[:1] == ["run"]).parse_args(words)
    try:
        return _main(args, out)
    except BrokenPipeError:
        return _pipe_closed()


def _main(args: argparse.Namespace, out: TextIO) -> int:
    try:
        if args.command == "simulate":
            return cmd_simulate(args, out)
        if args.command == "policies":
            return cmd_policies(out)
        if args.command == "completion":
            return cmd_completion(args, out)
        if args.command == "compare":
            from oomkit.lab import compare as lab_compare

            return lab_compare.run(args, out)
        if args.command == "replay":
            from oomkit.lab import replay as lab_replay

            return lab_replay.run(args, out)
        if args.command == "record":
            from oomkit.lab import record as lab_record

            return lab_record.run(args, out)
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
