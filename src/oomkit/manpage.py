"""``oomkit(8)``: the man page, generated from the argparse parser so it cannot drift.

``python -m oomkit.manpage > oomkit.8`` (or ``oomkit install-unit``, which installs it);
``man ./oomkit.8`` reads it. The options come from the parser (argparse keeps them in
``_actions``, the same walk argparse-manpage and shtab make); the sections around them
(files, exit status, signals, environment) are written here, once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from oomkit.cli import EXIT_PIPE, EXIT_USAGE, build_parser
from oomkit.meta import package_version

_DESCRIPTION: Final = """\
oomkit runs out-of-memory policies written in Python before the kernel's OOM killer, on the
live kernel (cgroup v1 and v2) or on a deterministic simulator. A policy that raises or
overruns its time budget counts as no progress; the kernel's own killer is never disabled
for good. The daemon (oomkit run) writes every OOM to its event log, the journal under
systemd, and Prometheus metrics."""

_SECTIONS: Final = [
    ("FILES", [
        ("/etc/oomkit/oomkit.toml", "the daemon's config (oomkit check-config checks it)"),
        ("/var/log/oomkit/events.jsonl", "the event log, one JSON object per line"),
        ("/run/oomkit/status.json", "the status file oomkit status reads"),
        ("/run/oomkit/restore.json", "kernel settings to restore after a crash"),
        ("/etc/systemd/system/oomkit.service", "the unit oomkit install-unit writes"),
    ]),
    ("EXIT STATUS", [
        ("0", "success"),
        ("1", "an error of the system (a kernel refusal, a crash of the daemon); for "
              "oomkit status: the daemon died"),
        (str(EXIT_USAGE), "a usage error, or a config, scenario or policy that is wrong "
                          "(one line on standard error names the file, line and key)"),
        ("3", "oomkit status: the daemon is not running"),
        ("4", "oomkit status: the status file cannot be read"),
        (str(EXIT_PIPE), "the reader of standard output went away"),
    ]),
    ("SIGNALS", [
        ("SIGHUP", "oomkit run reloads its config; a broken one is refused and the running "
                   "one kept"),
        ("SIGTERM, SIGINT", "oomkit run detaches every handler, restores every kernel "
                            "setting it changed and exits"),
    ]),
    ("ENVIRONMENT", [
        ("NOTIFY_SOCKET, WATCHDOG_USEC", "set by systemd: READY=1 once armed, WATCHDOG=1 "
                                         "pings"),
        ("JOURNAL_STREAM", "set by systemd: events go to the journal as structured entries"),
    ]),
]


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no leading dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(f"\\fB{roff(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or action.dest.upper()
                names += f" \\fI{roff(str(metavar))}\\fR"
        else:
            names = f"\\fI{roff(str(action.metavar or action.dest))}\\fR"
        help_text = action.help or ""
        if "%(" in help_text:
            help_text = help_text % {"prog": parser.prog, "default": action.default}
        out += [".TP", names, roff(help_text)]
    return out


def manpage(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole page, in roff (man(7) macros)."""
    p = parser or build_parser()
    lines = [f'.TH OOMKIT 8 "" "oomkit {roff(package_version())}" "System Administration"',
             ".SH NAME", f"oomkit \\- {roff(p.description or '')}",
             ".SH SYNOPSIS", "\\fBoomkit\\fR [\\fB\\-\\-version\\fR] [\\fB\\-h\\fR] "
             "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
             ".SH DESCRIPTION", roff(_DESCRIPTION)]
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help or "" for s in subs for c in s._choices_actions}
    lines += [".SH OPTIONS", *_options(p), ".SH COMMANDS"]
    for sub in subs:
        for name, child in sub.choices.items():
            lines += [f".SS {roff(name)}", roff(helps.get(name, "")) + ".", ".PP",
                      f"\\fB{roff(_usage(child))}\\fR", *_options(child)]
    for title, items in _SECTIONS:
        lines.append(f".SH {title}")
        for key, text in items:
            lines += [".TP", f"\\fB{roff(key)}\\fR", roff(text)]
    lines += [".SH SEE ALSO", "systemd.service(5), journalctl(1), systemd-oomd(8), "
              "earlyoom(1); docs/daemon.md, docs/policies.md in the source"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage())
