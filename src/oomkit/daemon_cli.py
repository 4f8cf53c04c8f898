"""The live-kernel commands: run, check-config, events, status (see docs/daemon.md)."""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from oomkit.daemon.config import (
    DEFAULT_CONFIG,
    DEFAULT_EVENT_LOG,
    DEFAULT_STATUS_FILE,
    Config,
    LoadedPolicies,
    load_config,
    load_policies,
    with_cli,
)
from oomkit.errors import ConfigError
from oomkit.kernel.linux.watchdog import pid_alive

#: ``oomkit status`` of a daemon that is not running (as systemctl status and LSB say).
EXIT_NOT_RUNNING = 3


def dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "run":
        return cmd_run(args, out)
    if args.command == "check-config":
        return cmd_check_config(args, out)
    if args.command == "events":
        return cmd_events(args, out)
    if args.command == "status":
        return cmd_status(args, out)
    raise ConfigError(f"unknown command {args.command!r}")


# -- run --------------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config:
        return str(args.config)
    if args.oom_policy or args.psi_policy:
        return None  # policies on the command line, no config file
    return DEFAULT_CONFIG


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.daemon.backend import Backend, LiveBackend, SimBackend
    from oomkit.daemon.service import Daemon

    path = _config_path(args)
    sim = getattr(args, "sim", None)
    # Policies are code run as root: files must be root's and writable by nobody else.
    # A simulation run by a user may use the user's own files.
    secure = not sim or os.geteuid() == 0

    def load() -> tuple[Config, LoadedPolicies]:
        config = load_config(path) if path is not None else Config()
        config = with_cli(config, list(args.oom_policy), list(args.psi_policy),
                          dry_run=bool(args.dry_run), budget_s=args.budget)
        return config, load_policies(config, secure=secure)

    config, policies = load()
    backend: Backend = SimBackend(sim) if sim else LiveBackend()
    daemon = Daemon(config, policies, backend, reload_config=load if path else None,
                    out=None if getattr(args, "quiet", False) else out, as_json=args.json,
                    self_protect=not sim)
    daemon.install_signals()
    daemon.start()
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
    config = load_config(args.file)
    policies = load_policies(config, secure=True)
    d = config.daemon
    out.write(f"{config.path}: OK\n")
    for entry, ops in policies.oom:
        where = entry.cgroup or "system-wide"
        out.write(f"  oom  {entry.policy} ({type(ops).__name__}) {where}"
                  f"{' args ' + json.dumps(dict(entry.args)) if entry.args else ''}\n")
        if entry.cgroup is not None and _cgroup_present(config, entry.cgroup) is False:
            out.write(f"       warning: {entry.cgroup} does not exist now: attaching would "
                      "fail until it does\n")
    for pentry, pops in policies.psi:
        out.write(f"  psi  {pentry.policy} ({type(pops).__name__})"
                  f"{' args ' + json.dumps(dict(pentry.args)) if pentry.args else ''}\n")
    if not policies.oom and not policies.psi:
        out.write("  no handlers: every OOM is left to the kernel (and logged)\n")
    out.write(f"  budget {d.budget_s * 1000:g} ms, detach after {d.max_failures} failures"
              f"{', DRY RUN' if d.dry_run else ''}\n")
    out.write(f"  event log {d.event_log} (rotate at {d.event_log_max} bytes, keep "
              f"{d.event_log_keep})\n")
    out.write(f"  metrics {config.metrics or 'off'}; status {d.status_file or 'off'}\n")
    return 0


# -- events -----------------------------------------------------------------------------------


def _daemon_paths(args: argparse.Namespace) -> tuple[str, str]:
    """(event log, status file) from --config, or the default config when it exists."""
    path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    if path is None:
        return DEFAULT_EVENT_LOG, DEFAULT_STATUS_FILE
    config = load_config(path)
    return config.daemon.event_log, config.daemon.status_file


def _print_records(out: TextIO, records: Iterable[dict[str, Any]], as_json: bool,
                   kinds: set[str]) -> None:
    from oomkit.daemon.sinks import write_record

    for record in records:
        if kinds and record.get("event") not in kinds:
            continue
        if as_json:
            out.write(json.dumps(record, separators=(", ", ": ")) + "\n")
        else:
            write_record(out, record)
        out.flush()


def cmd_events(args: argparse.Namespace, out: TextIO) -> int:
    from collections import deque

    from oomkit.daemon.eventlog import follow, log_files, read_events

    path = args.file or _daemon_paths(args)[0]
    kinds = set(getattr(args, "kind", None) or [])
    as_json = bool(getattr(args, "json", False))
    lines = getattr(args, "lines", None)
    if lines is None and args.follow:
        lines = 10
    if not log_files(path) and not args.follow:
        raise ConfigError(f"{path}: no event log (is the daemon running? see --file)")
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


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    from oomkit.daemon.eventlog import read_events
    from oomkit.daemon.sinks import format_wall, write_record
    from oomkit.daemon.status import read_status
    from oomkit.report import write_table

    event_log, status_file = _daemon_paths(args)
    status_file = getattr(args, "status_file", None) or status_file
    status = read_status(status_file) if status_file else None
    if status is None:
        raise ConfigError(f"{status_file or 'status file'}: no status (is the daemon running?)")
    event_log = str(status.get("event_log") or event_log)
    pid = int(status.get("pid", 0))
    alive = bool(status.get("running")) and pid_alive(pid)
    code = 0 if alive else EXIT_NOT_RUNNING
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
        where = h.get("cgroup") or ("system-wide" if h.get("ops") == "oom" else
                                    f"{h.get('triggers', 0)} triggers")
        budget = h.get("budget_s")
        rows.append([h.get("ops", ""), str(h.get("name", "")), str(h.get("policy", "")),
                     where, f"{budget * 1000:g} ms" if budget else "-",
                     str(h.get("failures", 0))])
    if rows:
        write_table(out, rows, ["ops", "name", "policy", "where", "budget", "failures"])
    else:
        out.write("no handlers attached: the kernel's OOM killer handles every OOM\n")
    n = int(getattr(args, "lines", None) or 5)
    ooms = [r for r in read_events(event_log) if r.get("event") == "oom"][-n:]
    out.write(f"\nlast {len(ooms)} OOMs (from {event_log}):\n" if ooms else
              "\nno OOM in the event log\n")
    for record in ooms:
        write_record(out, record)
    return code
