"""The live-kernel commands: run, check-config, events, status, install-unit (see
docs/daemon.md)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TextIO

from oomkit.clock import MonotonicClock
from oomkit.daemon.config import (
    DEFAULT_CONFIG,
    DEFAULT_EVENT_LOG,
    DEFAULT_LISTEN,
    DEFAULT_STATE_FILE,
    DEFAULT_STATUS_FILE,
    Config,
    LoadedPolicies,
    load_config,
    load_policies,
    parse_listen,
    recommended_config,
    resolve_cgroups,
    state_paths,
    with_cli,
)
from oomkit.errors import ConfigError, OomkitError
from oomkit.kernel.linux.watchdog import pid_alive
from oomkit.units import counted

#: ``oomkit status`` exit codes, as an LSB init script's ``status`` action (LSB 5.0, "Init
#: Script Actions") and ``systemctl status`` give them.
EXIT_RUNNING = 0
EXIT_DEAD = 1  # the status file says running, its pid is gone: the daemon died
EXIT_NOT_RUNNING = 3  # stopped cleanly, or no status file at all
EXIT_UNKNOWN = 4  # a status file we cannot read


def dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "run":
        return cmd_run(args, out)
    if args.command == "check-config":
        return cmd_check_config(args, out)
    if args.command == "events":
        return cmd_events(args, out)
    if args.command == "status":
        return cmd_status(args, out)
    if args.command == "install-unit":
        return cmd_install_unit(args, out)
    if args.command == "reload":
        return cmd_reload(args, out)
    raise ConfigError(f"unknown command {args.command!r}")


# -- run --------------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config:
        return str(args.config)
    if args.oom_policy or args.psi_policy:
        return None  # policies on the command line, no config file
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else recommended_config()


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:

    path = _config_path(args)
    sim = getattr(args, "sim", None)
    state_dir = getattr(args, "state_dir", None)
    if state_dir is not None:
        state_dir = os.path.abspath(state_dir)
    # Policies are code run as root: files must be root's and writable by nobody else.
    # A simulation run by a user may use the user's own files.
    secure = not sim or os.geteuid() == 0

    scratch: list[str] = []  # a simulation's private state directory, made on first use

    def load() -> tuple[Config, LoadedPolicies]:
        config = load_config(path) if path is not None else Config()
        if sim:  # the first alternative the simulated tree has, not this host's
            tree = _scenario_cgroups(sim)
            config = resolve_cgroups(config, lambda cg: cg in tree)
        else:
            config = resolve_cgroups(config, lambda cg: _cgroup_present(config, cg))
        config = with_cli(config, list(args.oom_policy), list(args.psi_policy),
                          dry_run=bool(args.dry_run), budget_s=args.budget,
                          state_dir=state_dir)
        if sim and state_dir is None:
            config = _away_from_the_machine(config, scratch)
        default = parse_listen(DEFAULT_LISTEN)
        if sim and config.metrics is not None and default is not None and \
                config.metrics.port == default.port:
            # the live daemon's port, on any address (the pod's config listens on
            # 0.0.0.0:9727): a simulation that took it would leave a daemon (re)started
            # meanwhile without metrics; another port is the user's choice
            config = replace(config, metrics=None)
        return config, load_policies(config, secure=secure)

    try:
        return _run(args, out, path, sim, state_dir, load)
    finally:
        for d in scratch:
            with contextlib.suppress(OSError):
                if any(n.startswith("incident-") for n in os.listdir(d)):
                    named = "of this run" if args.quiet else "named above"  # -q names none
                    sys.stderr.write(f"note: the incident files {named} were in {d}, removed "
                              "with this run: --state-dir DIR keeps them for oomkit replay\n")
            shutil.rmtree(d, ignore_errors=True)


def _scenario_cgroups(scenario: str) -> set[str]:
    """The cgroups a scenario has at its start: those it declares (not those it creates
    later), the cgroups of its processes, and every parent of them."""
    from oomkit.kernel.sim import load_scenario

    sc = load_scenario(scenario)
    tree = {"/"}
    for path in [c.path for c in sc.cgroups if c.create_ns == 0] + \
            [p.cgroup for p in sc.processes]:
        parts = path.strip("/").split("/")
        tree.update("/" + "/".join(parts[:i + 1]) for i in range(len(parts)))
    return tree


def _away_from_the_machine(config: Config, scratch: list[str]) -> Config:
    """A simulation never writes the machine's own daemon files: the event log, status
    file and restore journal left at their defaults (a live daemon's, which ``oomkit
    status`` and ``events`` read) go to a private directory, removed when the run ends.
    Paths the config or ``--state-dir`` chose are kept."""
    d = config.daemon
    defaults = (DEFAULT_EVENT_LOG, DEFAULT_STATUS_FILE, DEFAULT_STATE_FILE)
    if any(p in defaults for p in (d.event_log, d.status_file, d.state_file)):
        if not scratch:
            scratch.append(tempfile.mkdtemp(prefix="oomkit-sim-"))
        event_log, status_file, state_file = state_paths(scratch[0])
        d = replace(d,
                    event_log=event_log if d.event_log == DEFAULT_EVENT_LOG else d.event_log,
                    status_file=(status_file if d.status_file == DEFAULT_STATUS_FILE
                                 else d.status_file),
                    state_file=state_file if d.state_file == DEFAULT_STATE_FILE else d.state_file)
    return replace(config, daemon=d)


def _run(args: argparse.Namespace, out: TextIO, path: str | None, sim: str | None,
         state_dir: str | None, load: Callable[[], tuple[Config, LoadedPolicies]]) -> int:
    from oomkit.daemon.backend import Backend, LiveBackend, SimBackend
    from oomkit.daemon.journal import Journal, journal_stream_is
    from oomkit.daemon.protect import prepare
    from oomkit.daemon.service import Daemon

    if not sim:
        prepare()  # before load() imports the policies in a thread (Daemon.start reports it)
    config, policies = load()
    backend: Backend = SimBackend(sim) if sim else LiveBackend()
    quiet = bool(getattr(args, "quiet", False))
    journal = None
    if not quiet and not args.json and out is sys.stdout and journal_stream_is(1):
        journal = Journal(out)  # under systemd: one journal entry per event, with fields
    watch = path if path is not None and getattr(args, "watch_config", False) else None
    daemon = Daemon(config, policies, backend, reload_config=load if path else None,
                    out=None if quiet else out, as_json=args.json, journal=journal,
                    self_protect=not sim, watch_config=watch,
                    # root's daemon handles OOMs without an output it cannot open; a
                    # normal user's run is a trial: told at once, with the --state-dir hint
                    strict_outputs=os.geteuid() != 0 and state_dir is None)
    daemon.install_signals()
    try:
        daemon.start()
    except ConfigError as exc:
        text = str(exc)  # the event log, status file or restore journal refused us
        if state_dir is None and os.geteuid() != 0 and "key 'daemon." in text and \
                "Permission denied" in text:
            raise ConfigError(f"{exc} (not root? --state-dir DIR keeps the event log, status "
                              "file and restore journal in DIR)") from None
        raise
    return daemon.run()


# -- check-config --------------------------------------------------------------------------------


def _cgroup_present(config: Config, cgroup: str) -> bool | None:
    """Whether the cgroup exists on this machine now (None: no cgroup fs to tell)."""
    root = config.daemon.cgroup_root
    rel = cgroup.lstrip("/")
    for base in (os.path.join(root, "memory"), root):  # v1 memory hierarchy, or v2
        if os.path.exists(os.path.join(base, "cgroup.procs")):
            return os.path.isdir(os.path.join(base, rel))
    return None


def cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.cli import other_kind
    from oomkit.units import format_size

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        raise other_kind(exc, args.file, "config") from None
    config = resolve_cgroups(config, lambda cg: _cgroup_present(config, cg))
    policies = load_policies(config, secure=True)
    d = config.daemon
    out.write(f"{config.path}: OK\n")
    for entry, ops in policies.oom:
        where = entry.cgroup or "system-wide"
        if entry.alternatives:
            where += f" (the first that exists of {entry.cgroup or ''}, " \
                f"{', '.join(entry.alternatives)})"
        out.write(f"  oom  {entry.policy} ({type(ops).__name__}) {where}"
                  f"{' args ' + json.dumps(dict(entry.args)) if entry.args else ''}\n")
        if entry.cgroup is not None and _cgroup_present(config, entry.cgroup) is False:
            out.write(f"       note: {entry.cgroup} does not exist now: its handler is "
                      "attached when it appears\n")
    for pentry, pops in policies.psi:
        out.write(f"  psi  {pentry.policy} ({type(pops).__name__})"
                  f"{' args ' + json.dumps(dict(pentry.args)) if pentry.args else ''}\n")
    if not policies.oom and not policies.psi:
        out.write("  no handlers: every OOM is left to the kernel (and logged)\n")
    out.write(f"  budget {d.budget_s * 1000:g} ms, detach after {d.max_failures} failures"
              f"{', DRY RUN' if d.dry_run else ''}\n")
    out.write(f"  event log {d.event_log} (rotate at {format_size(d.event_log_max)}, keep "
              f"{d.event_log_keep})\n")
    out.write(f"  metrics {config.metrics or 'off'}; status {d.status_file or 'off'}\n")
    return 0


# -- events -----------------------------------------------------------------------------------


def _daemon_paths(args: argparse.Namespace) -> tuple[str, str]:
    """(event log, status file) from --state-dir, --config, or the default config when it
    exists."""
    state_dir = getattr(args, "state_dir", None)
    if state_dir:
        event_log, status_file, _ = state_paths(os.path.abspath(state_dir))
        return event_log, status_file
    path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    if path is None:
        return DEFAULT_EVENT_LOG, DEFAULT_STATUS_FILE
    try:
        config = load_config(path)
    except ConfigError as exc:
        # A config being edited may not parse while the daemon runs on the last good one:
        # the question is about the daemon, so answer it from the file's own paths as far
        # as they read, else the defaults, and say so.
        event_log, status_file = _paths_as_written(path)
        print(f"oomkit: {exc} (the config does not load: looking where it names the "
              "daemon's files, else at the defaults)", file=sys.stderr)
        return event_log, status_file
    return config.daemon.event_log, config.daemon.status_file


def _paths_as_written(path: str) -> tuple[str, str]:
    """(event_log, status_file) of a config that does not load, each as its [daemon]
    table writes it when that is a string, else the default."""
    from oomkit.tomlpos import load_toml, read_toml

    paths = {"event_log": DEFAULT_EVENT_LOG, "status_file": DEFAULT_STATUS_FILE}
    try:
        daemon = load_toml(read_toml(path, "config"), path).get("daemon")
    except ConfigError:
        daemon = None
    if isinstance(daemon, dict):
        for key in paths:
            value = daemon.get(key)
            if isinstance(value, str) and (value == "" or value.startswith("/")):
                paths[key] = value
    return paths["event_log"], paths["status_file"]


def _print_records(out: TextIO, records: Iterable[dict[str, Any]], as_json: bool,
                   kinds: set[str]) -> None:
    from oomkit.report import write_record

    for record in records:
        if kinds and record.get("event") not in kinds:
            continue
        if as_json:
            out.write(json.dumps(record, separators=(", ", ": ")) + "\n")
        else:
            _write_readable(out, record, write_record)
        out.flush()


def _write_readable(out: TextIO, record: dict[str, Any],
                    write_record: Callable[[TextIO, dict[str, Any]], None]) -> None:
    """One record as a table row; a record this version cannot lay out (another version's,
    a line edited by hand) as its JSON, marked, rather than a traceback that ends the
    listing."""
    import io

    buf = io.StringIO()
    try:
        write_record(buf, record)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        buf = io.StringIO()
        buf.write(f"(a record oomkit cannot show: {json.dumps(record)[:500]})\n")
    out.write(buf.getvalue())


def _unreadable(path: str) -> str | None:
    """Why ``path`` (the event log, the status file) cannot be read (``Permission denied``
    for a user who is not in its group), or None when it can, or does not exist.
    ``os.path.exists`` says False for both, so the two must be told apart before saying "no
    event log" or "not running"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        if os.path.isdir(path):
            return os.strerror(errno.EISDIR)  # os.open of a directory read-only succeeds
    finally:
        os.close(fd)
    return None


def cmd_events(args: argparse.Namespace, out: TextIO) -> int:
    from collections import deque

    from oomkit.daemon.eventlog import follow, log_files, read_events

    path = args.file or _daemon_paths(args)[0]
    kinds = set(getattr(args, "kind", None) or [])
    as_json = bool(getattr(args, "json", False))
    lines = getattr(args, "lines", None)
    if lines is None and args.follow:
        lines = 10
    # The same codes as `oomkit status` for the same file problems (LSB status codes):
    # 4 a log that is there but cannot be read, 3 none at all (no daemon wrote one).
    why = _unreadable(path)
    if why is not None:
        print(f"oomkit: {path}: cannot read the event log: {why}", file=sys.stderr)
        return EXIT_UNKNOWN
    if not log_files(path) and not args.follow:
        print(f"oomkit: {path}: no event log (is the daemon running? see --file)",
              file=sys.stderr)
        return EXIT_NOT_RUNNING
    records: Iterable[dict[str, Any]] = read_events(path)
    if kinds:
        records = (r for r in records if r.get("event") in kinds)
    if lines is not None:
        records = deque(records, maxlen=max(lines, 0))
    _print_records(out, records, as_json, kinds)
    if args.follow:
        stop = threading.Event()
        try:
            _print_records(out, follow(path, stop), as_json, kinds)
        except KeyboardInterrupt:
            stop.set()
    return 0


# -- status -----------------------------------------------------------------------------------


def daemon_alive(pid: int) -> bool:
    """Whether ``pid`` is alive and is an oomkit: after a daemon was SIGKILLed its status
    file still says running, and its pid may since belong to another program, which a
    SIGHUP (``oomkit reload``) would terminate. ``/proc/PID/cmdline`` names the script
    (``/usr/local/bin/oomkit``) or the module (``-m oomkit``, ``-m oomkit.cli``); when it
    cannot be read (hidepid), the pid's existence is all we know. (Not the start time
    against the status file's: a clock stepped since boot would make the daemon look
    reused.)"""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return True
    return any(b"oomkit" in arg for arg in argv)


def _status_problem(status: dict[str, Any]) -> str | None:
    """What makes a JSON object unusable as oomkit's status file (daemon/status.py writes
    it), or None: a pid that is a whole number, and the lists and tables the readers walk.
    A hand-edited or foreign file is then one line and exit 4, not a traceback."""
    pid = status.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int):
        return f"pid {pid!r}"
    handlers = status.get("handlers", [])
    if not isinstance(handlers, list) or not all(isinstance(h, dict) for h in handlers):
        return f"handlers {handlers!r}"
    for key in ("counts", "reloads"):
        if not isinstance(status.get(key, {}), dict):
            return f"{key} {status[key]!r}"
    return None


def _read_status_file(status_file: str) -> tuple[dict[str, Any] | None, str | None]:
    """(status, None); (None, why) when the file is there but cannot be used; (None, None)
    when there is none (not running)."""
    from oomkit.daemon.status import read_status

    status = read_status(status_file)
    if status is None:
        why = _unreadable(status_file)
        if why is not None or os.path.lexists(status_file):
            return None, why or ""
        return None, None
    problem = _status_problem(status)
    if problem is not None:
        return None, f"not an oomkit status file ({problem})"
    return status, None


def _cannot_read_status(status_file: str, why: str) -> int:
    print(f"oomkit: {status_file}: cannot read the status file{': ' + why if why else ''}",
          file=sys.stderr)
    return EXIT_UNKNOWN


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.daemon.eventlog import read_events
    from oomkit.report import format_wall, write_record, write_table

    event_log, status_file = _daemon_paths(args)
    status_file = getattr(args, "status_file", None) or status_file
    status, why = _read_status_file(status_file) if status_file else (None, None)
    if why is not None:
        return _cannot_read_status(status_file, why)
    if status is None:
        print(f"oomkit: {status_file or 'status file'}: no status: oomkit is not running "
              "(see --status-file, --state-dir)", file=sys.stderr)
        return EXIT_NOT_RUNNING
    event_log = str(status.get("event_log") or event_log)
    pid = int(status["pid"])
    alive = bool(status.get("running")) and daemon_alive(pid)
    if alive:
        code = EXIT_RUNNING
    else:
        code = EXIT_DEAD if status.get("running") else EXIT_NOT_RUNNING
    if getattr(args, "json", False):
        out.write(json.dumps(status, indent=1) + "\n")
        return code
    state = "running" if alive else ("stopped" if not status.get("running") else "dead")
    out.write(f"oomkit {state} (pid {pid}, {status.get('backend')} backend"
              f"{', DRY RUN' if status.get('dry_run') else ''}), since "
              f"{format_wall(status.get('started'))}\n")
    out.write(f"config {status.get('config')}; event log {event_log}; metrics "
              f"{status.get('metrics') or 'off'}\n")
    counts = status.get("counts", {})
    reloads = status.get("reloads", {})
    out.write(f"watched cgroups: {status.get('watched_cgroups', 0)}; OOMs {counts.get('ooms', 0)}, "
              f"kills {counts.get('kills', 0)}; reloads {reloads.get('ok', 0)} ok, "
              f"{reloads.get('failed', 0)} failed\n")
    if reloads.get("last_error"):
        out.write(f"last reload failed: {reloads['last_error']}\n")
    out.write("\n")
    rows = []
    for h in status.get("handlers", []):
        triggers = h.get("triggers", 0)
        where = h.get("cgroup") or ("system-wide" if h.get("ops") == "oom" else
                                    counted(triggers, "trigger") if isinstance(triggers, int)
                                    else f"{triggers} triggers")
        budget = h.get("budget_s")
        rows.append([h.get("ops", ""), str(h.get("name", "")), str(h.get("policy", "")),
                     where, f"{budget * 1000:g} ms" if budget else "-",
                     str(h.get("failures", 0))])
    if rows:
        write_table(out, rows, ["ops", "name", "policy", "where", "budget", "failures"])
        for h in status.get("handlers", []):
            if h.get("running_for_s") is not None:  # QA G3: an overrun nothing could stop
                out.write(f"a call of {h.get('name')} is still running (for "
                          f"{h['running_for_s']:g} s when the status was written): it is "
                          "not called again; restart the daemon to stop it\n")
    else:
        out.write("no handlers attached: the kernel's OOM killer handles every OOM\n")
    n = getattr(args, "lines", None)
    n = 5 if n is None else int(n)
    why = _unreadable(event_log)
    if why is not None:
        out.write(f"\nthe last OOMs are in {event_log}: cannot read it: {why}\n")
        return code
    ooms = [r for r in read_events(event_log) if r.get("event") == "oom"]
    ooms = ooms[-n:] if n else []
    out.write(f"\nlast {counted(len(ooms), 'OOM')} (from {event_log}):\n" if ooms else
              "\nno OOM in the event log\n")
    for record in ooms:
        _write_readable(out, record, write_record)
    return code


# -- install-unit -----------------------------------------------------------------------------

#: The path the shipped unit names (src/oomkit/data/oomkit.service).
SHIPPED_PATH = "/usr/local/bin/oomkit"


def this_oomkit() -> str:
    """The absolute path of the ``oomkit`` script of this installation: the one running,
    else the one beside this interpreter (a venv's bin/), else the one on $PATH."""
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "oomkit" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(sys.executable), "oomkit")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("oomkit")
    if found is None:
        raise ConfigError("cannot find the oomkit command: give --oomkit PATH")
    return os.path.abspath(found)


def exec_path(path: str) -> str:
    """``path`` as the first word of an ``Exec*=`` line (systemd.service(5), "Command
    lines"; systemd.unit(5), "Specifiers"): ``%`` doubled (else a specifier), and double
    quotes around a path with blanks, quotes or backslashes (else it is split into words).
    (``$`` stays: the program's own path is not subject to variable expansion.)"""
    word = path.replace("%", "%%")
    if any(c in word for c in " \t\"'\\;"):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


#: What the shipped unit's ProtectHome=yes makes inaccessible to the service
#: (systemd.exec(5)): an oomkit or an interpreter there cannot start (QA Q18).
PROTECTED_HOMES = ("/home", "/root", "/run/user")


def hidden_by_protect_home(oomkit: str) -> list[str]:
    """What the unit runs (the oomkit script, as named and resolved, and the interpreter
    its #! line names, as named and resolved: a venv's site-packages sits beside it)
    under PROTECTED_HOMES."""
    paths = [oomkit, os.path.realpath(oomkit)]
    try:
        with open(oomkit, "rb") as f:
            words = f.readline(4096).split() if f.read(2) == b"#!" else []
    except OSError:
        words = []
    if words:
        interp = os.fsdecode(words[0])
        paths += [interp, os.path.realpath(interp)]
    return [p for p in dict.fromkeys(paths)
            if any(p == h or p.startswith(h + "/") for h in PROTECTED_HOMES)]


def unit_text(oomkit: str, protect_home: str = "yes") -> str:
    """The shipped unit with ExecStart/ExecStartPre/ExecReload running ``oomkit``, and
    ``ProtectHome=`` as given."""
    from importlib.resources import files

    text = files("oomkit").joinpath("data", "oomkit.service").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=", "ExecReload=")):
            line = line.replace(SHIPPED_PATH, exec_path(oomkit), 1)
        elif line.startswith("ProtectHome="):
            line = f"ProtectHome={protect_home}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def cmd_install_unit(args: argparse.Namespace, out: TextIO) -> int:
    oomkit = os.path.abspath(args.oomkit) if args.oomkit else this_oomkit()
    if not os.access(oomkit, os.X_OK):
        raise ConfigError(f"--oomkit {oomkit}: not an executable file")
    hidden = hidden_by_protect_home(oomkit)
    text = unit_text(oomkit, "read-only" if hidden else "yes")
    if args.stdout:
        out.write(text)
        return 0
    unit = os.path.join(args.unit_dir, "oomkit.service")
    _write_file(unit, text)
    out.write(f"wrote {unit} (ExecStart={oomkit} run ...)\n")
    if hidden:
        out.write(f"note: {', '.join(hidden)} is under {', '.join(PROTECTED_HOMES)}, which "
                  "ProtectHome=yes hides from the service: the unit says "
                  "ProtectHome=read-only instead (or install oomkit under /usr/local or "
                  "/opt and pass --oomkit)\n")
    if args.man_dir:
        from oomkit.cli import build_parser
        from oomkit.manpage import manpage

        page = os.path.join(args.man_dir, "oomkit.8")
        _write_file(page, manpage(build_parser()))
        out.write(f"wrote {page}\n")
    config = args.config_file
    if config is None:
        # /etc only when the unit goes to the system's directory: a try into scratch
        # directories changed what `oomkit run` runs (QA G5).
        config = DEFAULT_CONFIG if os.path.abspath(args.unit_dir) == SYSTEM_UNIT_DIR else ""
        if not config:
            out.write(f"no config written (--unit-dir is not {SYSTEM_UNIT_DIR}): the unit "
                      f"runs {DEFAULT_CONFIG}; --config-file FILE writes the recommended "
                      "config there\n")
    if config and not os.path.exists(config):
        from pathlib import Path

        _write_file(config, Path(recommended_config()).read_text(encoding="utf-8"))
        out.write(f"wrote {config}: the recommended config, what `oomkit run` runs without "
                  "one (docs/daemon.md; `oomkit check-config` shows its handlers)\n")
    if config and os.path.abspath(config) != DEFAULT_CONFIG:
        # The unit names the shipped path whatever --config-file says (a staging tree
        # writes there for the machine's /etc): say so, or ExecStartPre fails unexplained.
        out.write(f"note: the unit runs --config {DEFAULT_CONFIG}, not {config}: install "
                  "it there, or edit ExecStart= and ExecStartPre=\n")
    out.write("then: systemctl daemon-reload && systemctl enable --now oomkit\n")
    return 0


#: Where systemd looks for the units an administrator installs (install-unit's default).
SYSTEM_UNIT_DIR = "/etc/systemd/system"


def _write_file(path: str, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None


# -- reload -----------------------------------------------------------------------------------


def cmd_reload(args: argparse.Namespace, out: TextIO) -> int:
    """SIGHUP to the daemon the status file names (its pid, as this PID namespace sees it:
    in a pod with hostPID, the node's)."""
    import signal

    _, status_file = _daemon_paths(args)
    status_file = getattr(args, "status_file", None) or status_file
    status, why = _read_status_file(status_file) if status_file else (None, None)
    if why is not None:
        return _cannot_read_status(status_file, why)
    pid = int(status["pid"]) if status else 0
    if status is None or not status.get("running") or not daemon_alive(pid):
        print(f"oomkit: {status_file}: no running daemon to reload", file=sys.stderr)
        return EXIT_NOT_RUNNING
    before = _reload_counts(status)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise OomkitError(f"cannot signal pid {pid}: {exc.strerror}") from None
    # The daemon counts the reload in its status file once the new config is in place or
    # refused (policy imports may take up to their 10 s limit): wait for that, so the exit
    # code says how it went (`systemctl reload` and scripts see a refused config: QA G6).
    clock, stop = MonotonicClock(), threading.Event()
    deadline = clock.now() + RELOAD_WAIT_S
    while clock.now() < deadline and not stop.wait(0.1):
        now_status, _ = _read_status_file(status_file)
        ok, failed, error = _reload_counts(now_status)
        if failed > before[1]:
            print(f"oomkit: reload refused, the running config stays: {error}", file=sys.stderr)
            return 1
        if ok > before[0]:
            out.write(f"reloaded: oomkit (pid {pid}) runs "
                      f"{(now_status or {}).get('config') or 'its config'} now\n")
            return 0
    out.write(f"sent SIGHUP to oomkit (pid {pid}); no answer within {RELOAD_WAIT_S:g} s: see "
              "`oomkit events --kind daemon --kind error` for the result\n")
    return 0


#: How long `oomkit reload` waits for the daemon's answer: the policy import limit (10 s)
#: and a margin.
RELOAD_WAIT_S = 15.0


def _reload_counts(status: dict[str, Any] | None) -> tuple[int, int, str]:
    """(reloads ok, reloads failed, the last error) from a status file's ``reloads``."""
    reloads = (status or {}).get("reloads")
    if not isinstance(reloads, dict):
        return 0, 0, ""
    ok, failed = reloads.get("ok"), reloads.get("failed")
    return (ok if isinstance(ok, int) else 0, failed if isinstance(failed, int) else 0,
            str(reloads.get("last_error") or ""))
