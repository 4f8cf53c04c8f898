"""``oomkit compare``: every contender over every scenario and seed, in parallel processes.

Scenarios come from files, directories (every ``*.toml`` in it that parses as a
scenario, other files skipped with a note, and every ``incident-*.jsonl``) and incident
files (``*.jsonl``: turned into a scenario by oomkit.lab.replay). Runs are independent,
so they go to a process pool (concurrent.futures: one process per core, at most
``--jobs``); the table keeps the input order whatever order they finish in. It
informs: the exit code is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from oomkit.errors import ConfigError
from oomkit.kernel.sim import Scenario, load_scenario
from oomkit.lab.contender import (
    LAB_BUDGET_S,
    Contender,
    from_config,
    from_policy_text,
    from_preset,
)
from oomkit.lab.timeline import perturb, run_timeline
from oomkit.lab.verdict import judge_run


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="run policies over scenarios and incidents; one table")
    p.add_argument("inputs", nargs="+", metavar="SCENARIO|DIR|INCIDENT")
    p.add_argument("--policy", action="append", default=[], metavar="TEXT",
                   help="a contender: comma-separated [oom:|psi:]SPEC[@CGROUP], or "
                        "'kernel' (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="a contender: a daemon config's handlers (repeatable)")
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="a contender: packaging/presets/NAME.toml (repeatable)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="runs per scenario: seed 0 as written, seeds 1..N-1 with start "
                        "times and rates jittered (default 1)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="parallel processes (default: one per core)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="who was killed when, per scenario and contender (needs oomkit[plot])")
    p.add_argument("--json", action="store_true", help="one JSON object per run")


@dataclass(frozen=True, slots=True)
class Job:
    index: int
    source: str
    scenario: Scenario
    contender: Contender
    seed: int


def collect(inputs: Sequence[str], notes: list[str]) -> list[tuple[str, Scenario]]:
    """(source, scenario) of every input, in order. Raises ConfigError for a named file
    that is not a scenario or incident; in a directory such files are skipped with a
    note."""
    out: list[tuple[str, Scenario]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            for f in sorted(path.glob("*.toml")):
                try:
                    out.append((str(f), load_scenario(f)))
                except ConfigError as exc:
                    notes.append(f"skipped {f}: {str(exc).splitlines()[0][:120]}")
            for f in sorted(path.glob("incident-*.jsonl")):
                try:  # a log directory may hold an older or damaged one: skip it too
                    out.append((str(f), _incident(f, notes)))
                except ConfigError as exc:
                    notes.append(f"skipped {f}: {str(exc).splitlines()[0][:120]}")
        elif path.suffix == ".jsonl":
            out.append((text, _incident(path, notes)))
        elif path.exists():
            out.append((text, load_scenario(path)))
        else:
            raise ConfigError(f"{text}: no such scenario, directory or incident")
    if not out:
        raise ConfigError("no scenario found in " + " ".join(inputs))
    return out


def _incident(path: Path, notes: list[str]) -> Scenario:
    from oomkit.lab.replay import load_incident, to_scenario

    inc = load_incident(str(path))
    notes.extend(inc.notes)
    return to_scenario(inc)


def contenders(args: argparse.Namespace) -> list[Contender]:
    out = [from_policy_text(t) for t in args.policy]
    out += [from_config(c) for c in args.config]
    out += [from_preset(n) for n in args.preset]
    if not out:
        raise ConfigError("nothing to compare: give --policy, --config or --preset")
    stems = [c.label for c in out]
    # Two configs of one name (/etc/oomkit/oomkit.toml against a candidate oomkit.toml):
    # named by their paths instead, as given.
    out = [replace(c, label=c.config) if c.config is not None and stems.count(c.label) > 1
           else c for c in out]
    labels = [c.label for c in out]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ConfigError(f"two contenders are named {', '.join(sorted(dup))}")
    return out


def run_job(job: Job) -> dict[str, Any]:
    """One run, in a worker process; its row of the table (JSON-ready)."""
    scen = perturb(job.scenario, job.seed)
    row: dict[str, Any] = {"scenario": job.source, "name": job.scenario.name,
                           "contender": job.contender.label, "seed": job.seed,
                           "duration": scen.machine.duration_ns / 1e9}
    try:
        tl = run_timeline(scen, job.contender, budget_s=LAB_BUDGET_S)
    except ConfigError as exc:
        row["error"] = str(exc)
        return row
    row.update(judge_run(scen, tl).to_dict())
    notes = list(tl.notes)
    # A handler that raised or overran leaves the OOM to the default killer: the row then
    # looks like the kernel's own, so say so (one note per distinct error).
    raised: dict[str, int] = {}
    for ev in tl.events("handler_error"):
        how = "overran its budget" if ev.get("timeout") else f"raised: {ev.get('error')}"
        what = f"{ev.get('name')}.{ev.get('callback')} {how}"
        raised[what] = raised.get(what, 0) + 1
    notes += [f"{what} ({n}x)" for what, n in raised.items()]
    if notes:
        row["notes"] = notes
    return row


def _fmt_s(v: float | None, pressure: float | None) -> str:
    if pressure is None:
        return "-"
    return "never" if v is None else f"{v:g}s"


def write_table(out: TextIO, rows: Sequence[dict[str, Any]]) -> None:
    head = ("scenario", "policy", "seed", "OOMs", "kills", "bystanders", "work lost",
            "mem full", "io full", "relief", "victims")
    lines = [head]
    for r in rows:
        name = Path(r["scenario"]).stem
        if "error" in r:  # the message in the last column, whole: no column widens
            lines.append((name, r["contender"], str(r["seed"]), "error", "", "", "", "", "",
                          "", r["error"]))
            continue
        victims = ", ".join(f"{v['name']}{'*' if v['bystander'] else ''}@{v['time']:g}s"
                            for v in r["victims"][:4])
        if len(r["victims"]) > 4:
            victims += f" +{len(r['victims']) - 4}"
        lines.append((name, r["contender"], str(r["seed"]), str(r["ooms"]), str(r["kills"]),
                      str(r["bystanders"]), f"{r['work_lost_s']:g}s", f"{r['full_s']:.2f}s",
                      f"{r['io_full_s']:.2f}s", _fmt_s(r["relief_s"], r["first_pressure_s"]),
                      victims or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    for n, line in enumerate(lines):
        cells = [c.ljust(w) for c, w in zip(line, widths, strict=False)] + [line[-1]]
        out.write("  ".join(cells).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in [*widths, len(head[-1])]) + "\n")
    out.write("\n* a bystander: killed, but not of the culprit job (the leaf cgroup whose "
              "processes ask for the most memory in the OOM's domain; docs/lab.md)\n")
    seen: set[tuple[str, str, str]] = set()  # a note repeats for every seed: once
    for r in rows:
        for note in r.get("notes", ()):
            key = (Path(r["scenario"]).stem, r["contender"], note)
            if key not in seen:
                seen.add(key)
                out.write(f"note: {key[0]} under {key[1]}: {note}\n")


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: at least 1")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: at least 1")
    if args.plot:
        from oomkit.lab.plot import check_suffix, require

        check_suffix(args.plot)
        require()
    notes: list[str] = []
    scenarios = collect(args.inputs, notes)
    cons = contenders(args)
    for c in cons:  # a broken config fails here once, not in every worker
        if c.config is not None:
            from oomkit.daemon.config import load_config, load_policies

            load_policies(load_config(c.config), secure=False)
    jobs = [Job(0, src, scen, c, seed) for src, scen in scenarios for c in cons
            for seed in range(args.seeds)]
    jobs = [Job(i, j.source, j.scenario, j.contender, j.seed) for i, j in enumerate(jobs)]
    workers = max(1, min(args.jobs, len(jobs)))
    if workers == 1:
        rows = [run_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(run_job, jobs, chunksize=1))
    if args.json:
        for r in rows:
            out.write(json.dumps(r, separators=(",", ":")) + "\n")
    else:
        for note in notes:
            out.write(f"note: {note}\n")
        write_table(out, rows)
    if args.plot:
        from oomkit.lab.plot import plot_kills

        plot_kills(rows, args.plot)
        if not args.json:
            out.write(f"plot: {args.plot}\n")
    return 0
