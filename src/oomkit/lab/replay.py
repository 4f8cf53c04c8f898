"""``oomkit replay INCIDENT``: an incident file becomes a scenario, run on the simulator.

How the recorded minutes become a scenario (all of it is written out as TOML the user can
read and edit, ``--write-scenario``):

- the machine: the recorded MemTotal and SwapTotal; the scenario's time 0 is the first
  sample, and it lasts until 30 s after the last record (a live OOM declared early, as
  the system-wide watch does at low MemAvailable, comes later on a simulator that only
  runs out when memory is full);
- the cgroup tree: every sampled cgroup with its last memory.max, memory.high and
  memory.swap.max (a v1 "unlimited" is no limit), the root's too where it has them (a
  daemon whose ``cgroup_root`` is a subtree records that subtree as "/");
- each process seen in a sample (named by its comm; ``comm.PID`` when two share one)
  starts when it was first seen, with ``oom_score_adj`` as recorded, and follows its
  footprint as its memcg charged it (``_charged``: anon, not rss, plus swap) from
  sample to sample: ``alloc`` at the rate it grew, ``free``
  what it gave back, ``sleep`` while it stayed; an OOM victim's rss in the OOM's event
  line is its last point. After its last sample a process that was
  growing keeps growing at its last rate (the minutes before an OOM end with someone
  growing: that is how the replay reaches it); one that was not sleeps;
- what a cgroup held beyond its processes' footprints at the first sample (page cache,
  tmpfs) is one ``<cgroup>.cache`` pseudo-process per cgroup allocating that much page
  cache and shmem, with oom_score_adj -1000 so that no killer picks it: it stands for
  memory, not for a task.

Under the policy that ran live (the config the daemon named in the incident, else the
handlers it listed) the replay should reach the decision the live kernel saw; ``replay``
says whether it did. Rss counts the file pages a process maps, which its memcg charges
only when it paged them in first; the replay leaves them out (QA G12).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from oomkit.errors import ConfigError
from oomkit.kernel.sim import Scenario, parse_scenario
from oomkit.lab.contender import LAB_BUDGET_S, Contender, from_config, from_policy_text
from oomkit.lab.recorder import INCIDENT_VERSION
from oomkit.lab.timeline import Timeline, run_timeline
from oomkit.report import Printer
from oomkit.units import counted

TAIL_S: Final = 30.0
UNLIMITED: Final = 1 << 60  # v1 reports PAGE_COUNTER_MAX pages as a huge byte count
MIN_CACHE: Final = 1 << 20
MIN_OTHER: Final = 4 << 20
REPLAY_INTERVAL_NS: Final = 100_000_000  # the replay's samples, for --plot


@dataclass(slots=True)
class Incident:
    path: str
    header: dict[str, Any]
    samples: list[dict[str, Any]]
    events: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def oom(self) -> dict[str, Any] | None:
        """The OOM that caused the incident (its last OOM record), if any."""
        ooms = [e for e in self.events if e.get("event") == "oom"]
        return ooms[-1] if ooms else None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="turn an incident file into a scenario and run it")
    p.add_argument("incident", help="an incident file (JSON lines, from the daemon or record)")
    p.add_argument("--oom-policy", action="append", default=[], metavar="SPEC[@CGROUP]")
    p.add_argument("--psi-policy", action="append", default=[], metavar="SPEC")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a daemon config's handlers (default: the one that ran live)")
    p.add_argument("--kernel", action="store_true",
                   help="no handler at all: what the kernel's own killer would do")
    p.add_argument("--write-scenario", default=None, metavar="FILE",
                   help="write the scenario as TOML (edit it, then oomkit simulate it)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="the replay's timeline (needs oomkit[plot])")
    p.add_argument("--json", action="store_true", help="events as JSON lines")


def load_incident(path: str) -> Incident:
    """Read an incident file. Raises ConfigError naming the line of a bad record, or for
    an incident of a newer format than this oomkit reads. A last line cut off (a copy
    truncated in the middle of a record: the daemon writes whole files only) is left out
    with a note in ``Incident.notes``."""
    header: dict[str, Any] | None = None
    samples: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    if not line.endswith("\n") and header is not None:
                        notes.append(f"{path}:{n}: the last line is cut off (a truncated "
                                     "file): left out")
                        break
                    raise ConfigError(f"{path}:{n}: not JSON: {exc.msg}") from None
                if not isinstance(rec, dict):
                    raise ConfigError(f"{path}:{n}: not a JSON object")
                kind = rec.get("event")
                if kind == "incident":
                    _check_version(path, n, rec.get("version", INCIDENT_VERSION))
                    header = rec
                elif kind == "sample":
                    if not isinstance(rec.get("cgroups"), dict) or not isinstance(
                            rec.get("procs"), list):
                        raise ConfigError(f"{path}:{n}: a sample needs cgroups and procs")
                    samples.append(rec)
                else:
                    events.append(rec)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not an incident file (not UTF-8 text)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if header is None:
        raise ConfigError(f"{path}: not an incident file (no \"incident\" header line)")
    if not samples:
        raise ConfigError(f"{path}: the incident has no sample")
    return Incident(path, header, samples, events, notes)


def _check_version(path: str, line: int, version: Any) -> None:
    """Incidents of format INCIDENT_VERSION and older are read; a newer one may mean
    something else by the same fields."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{path}:{line}: incident version {version!r} is not a format "
                          "version (a whole number from 1)")
    if version > INCIDENT_VERSION:
        raise ConfigError(f"{path}:{line}: incident format version {version}, newer than "
                          f"this oomkit reads ({INCIDENT_VERSION}): replay it with the "
                          "oomkit that wrote it")


# -- the scenario ----------------------------------------------------------------------------


def _q(s: str) -> str:
    return json.dumps(s)  # a TOML basic string is a JSON string for what we write


def _size(n: int) -> str:
    """A size as a TOML value a person reads: "40M" when exact, else bytes."""
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f'"{n // mult}{unit}"'
    return str(n)


def _limit(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and 0 <= v < UNLIMITED else None


def _charged(p: dict[str, Any], share: float = 1.0) -> int:
    """A sampled process's footprint as its memcg charged it: its anonymous pages
    (``anon``, else rss in an incident from before samples had it, or a simulator's),
    times ``share`` (:func:`_shares`), plus swap. Rss also counts the file pages it maps
    (an interpreter's libraries, paged in by whoever ran it first and charged there):
    replayed as anonymous memory they filled a memcg early, with other sizes than live
    (QA G12)."""
    anon = p.get("anon")
    base = int(p.get("rss") or 0) if anon is None else int(anon)
    return int(base * share) + int(p.get("swap") or 0)


def _shares(sample: dict[str, Any]) -> dict[str, float]:
    """Per cgroup of ``sample``, the part of its processes' anon (or rss) that its
    memory.stat anon covers, where that is less: rss counts file pages charged
    elsewhere, and pages a process touched before it was moved into the cgroup stay
    charged to the old one (v1 without memory.move_charge_at_immigrate, and v2). 1.0
    where the cgroup's anon is unknown or not less."""
    held: dict[str, int] = {}
    for p in sample["procs"]:
        base = p.get("anon") if p.get("anon") is not None else p.get("rss")
        held[p["cgroup"]] = held.get(p["cgroup"], 0) + int(base or 0)
    out: dict[str, float] = {}
    for path, total in held.items():
        anon = (sample["cgroups"].get(path) or {}).get("anon")
        if path != "/" and isinstance(anon, int) and 0 < anon < total:
            out[path] = anon / total
    return out


def _names(inc: Incident) -> dict[int, str]:
    comms: dict[int, str] = {}
    for s in inc.samples:
        for p in s["procs"]:
            comms.setdefault(int(p["pid"]), str(p["comm"]))
    for v in (inc.oom or {}).get("victims", ()):
        comms.setdefault(int(v.get("pid", -1)), str(v.get("comm")))
    count: dict[str, int] = {}
    for c in comms.values():
        count[c] = count.get(c, 0) + 1
    return {pid: (c if count[c] == 1 else f"{c}.{pid}") for pid, c in comms.items()}


def _program(points: list[tuple[float, int]], growing_tail: bool,
             victim: bool = False) -> list[str]:
    steps: list[str] = []
    first = points[0][1]
    if first > 0:
        steps.append(f'{{ op = "alloc", kind = "anon", size = {_size(first)} }}')
    rate = 0
    grew = 0  # the last rate it grew at
    idle_ms = 0  # consecutive quiet intervals become one sleep

    def flush() -> None:
        nonlocal idle_ms
        if idle_ms > 0:
            steps.append(f'{{ op = "sleep", duration = "{idle_ms}ms" }}')
        idle_ms = 0

    for (t0, a), (t1, b) in itertools.pairwise(points):
        dt = max(t1 - t0, 0.001)
        if b > a:
            flush()
            rate = grew = max(1, int((b - a) / dt))
            steps.append(f'{{ op = "alloc", kind = "anon", size = {_size(b - a)}, '
                         f'rate = "{rate}/s" }}')
        else:
            rate = 0
            if b < a:
                flush()
                steps.append(f'{{ op = "free", kind = "anon", size = {_size(a - b)} }}')
            idle_ms += int(dt * 1000)
    flush()
    if victim and rate == 0:
        # A sample taken while the OOM was being handled (after its start) can show the
        # victim flat: it was killed growing, so it goes on at the rate it last grew.
        rate = grew
    if growing_tail and rate > 0:
        steps.append(f'{{ op = "alloc", kind = "anon", size = {_size(rate * 3600)}, '
                     f'rate = "{rate}/s" }}')
    steps.append('{ op = "sleep" }')
    return steps


def scenario_toml(inc: Incident) -> str:
    """The incident as scenario TOML (see the module docstring for how). Raises
    ConfigError for a record whose fields are not what the recorder writes (a pid that
    is no number, a sample without a time): the file is input, not our own state."""
    try:
        return _scenario_toml(inc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(f"{inc.path}: a record is not as the recorder writes it: "
                          f"{what}") from None


def _scenario_toml(inc: Incident) -> str:
    samples = inc.samples
    t0 = float(samples[0]["time"])
    end = max([float(samples[-1]["time"])] + [float(e.get("time", 0)) for e in inc.events])
    machine = inc.header.get("machine") or {}
    memory = int(machine.get("memory") or 0)
    if memory <= 0:
        memory = max(int(samples[-1]["cgroups"].get("/", {}).get("usage") or 0) * 2, 1 << 30)
    oom = inc.oom
    out = [f"name = {_q('replay of ' + os.path.basename(inc.path))}",
           'description = """',
           f"Recorded by oomkit ({inc.header.get('reason', '?')}) over "
           f"{end - t0:.1f} s; {counted(len(samples), 'sample')}.",
           ]
    if oom is not None:
        victims = ", ".join(f"{v.get('comm')} ({v.get('cgroup')})" for v in oom.get("victims",
                                                                                    ()))
        out.append(f"Live: OOM at {oom.get('memcg') or 'system-wide'} "
                   f"({oom.get('constraint')}), resolved by {oom.get('resolved_by')} "
                   f"({oom.get('policy')}): killed {victims or 'nobody'}.")
    out += ['"""', "", "[machine]", f"memory = {_size(memory)}",
            f"swap = {_size(int(machine.get('swap') or 0))}",
            f'duration = "{int((end - t0 + TAIL_S) * 1000)}ms"', ""]
    last_cg: dict[str, dict[str, Any]] = {}
    for s in samples:
        for path, cg in s["cgroups"].items():
            last_cg[path] = cg
    for path, cg in last_cg.items():
        limits = [(toml_key, v) for key, toml_key in (
            ("max", "memory.max"), ("high", "memory.high"), ("swap_max", "memory.swap.max"))
            if (v := _limit(cg.get(key))) is not None]
        if path == "/" and not limits:
            continue  # the machine's root: no limit but the machine's size
        # "/" with limits: a daemon whose cgroup_root is a subtree recorded that subtree
        # as "/"; its limit is where the live OOM was (QA Q8)
        out += ["[[cgroup]]", f"path = {_q(path)}"]
        out += [f"{_q(toml_key)} = {_size(v)}" for toml_key, v in limits]
        out.append("")
    names = _names(inc)
    series: dict[int, list[tuple[float, int]]] = {}
    info: dict[int, dict[str, Any]] = {}
    killed = {int(v.get("pid", -1)) for v in (oom or {}).get("victims", ())}
    for s in samples:
        shares = _shares(s)
        for p in s["procs"]:
            pid = int(p["pid"])
            if s.get("after_oom") and pid in killed:
                continue  # still listed while it exits (rss 0): the OOM's line is its end
            series.setdefault(pid, []).append(
                (float(s["time"]) - t0, _charged(p, shares.get(p["cgroup"], 1.0))))
            info[pid] = p
    # The OOM's victims, as the OOM found them: the last point of their growth.
    unseen: list[int] = []
    if oom is not None and oom.get("time") is not None:
        for v in oom.get("victims", ()):
            pid = int(v.get("pid", -1))
            t = float(oom["time"]) - t0
            if pid in series and str(v.get("cgroup")) != str(info[pid].get("cgroup")):
                # Sampled just after its fork, still in its parent's cgroup with the
                # parent's oom_score_adj (a protected launcher's -1000): the OOM saw it
                # where it went, and killable.
                adj = int(info[pid].get("adj") or 0)
                info[pid] = {**info[pid], "cgroup": v.get("cgroup"),
                             "adj": 0 if adj == -1000 else adj}
            if pid in series and t > series[pid][-1][0]:
                series[pid].append((t, int(v.get("rss") or 0) + series[pid][-1][1]
                                    - int(info[pid].get("rss") or 0)))
            elif pid not in series and int(v.get("rss") or 0) > 0:
                # Never sampled: it grew between two idle samples. From the last sample
                # before the OOM (where it was not among the largest) to its rss at the
                # OOM, at one rate: the slowest growth that gets there.
                before_t = [float(s["time"]) - t0 for s in samples if float(s["time"]) - t0 < t]
                start = before_t[-1] if before_t else max(0.0, t - 1.0)
                series[pid] = [(start, 0), (t, int(v["rss"]))]
                info[pid] = {"pid": pid, "comm": v.get("comm"), "cgroup": v.get("cgroup"),
                             "rss": v["rss"], "adj": 0}
                unseen.append(pid)
    # Who was still there at the end: the last sample before the OOM (one taken after it,
    # of a memcg the recorder did not watch, holds that memcg's tasks only), and the
    # OOM's victims, which were killed, not done.
    before = [s for s in samples if not s.get("after_oom")] or samples
    last_pids = {int(p["pid"]) for p in before[-1]["procs"]}
    if oom is not None:
        last_pids.update(int(v.get("pid", -1)) for v in oom.get("victims", ()))
    # Memory a cgroup held beyond its processes at the first sample: cache and tmpfs.
    first = samples[0]
    held: dict[str, int] = {}
    first_shares = _shares(first)
    for p in first["procs"]:
        held[p["cgroup"]] = held.get(p["cgroup"], 0) + _charged(
            p, first_shares.get(p["cgroup"], 1.0)) - int(p.get("swap") or 0)
    for path, cg in first["cgroups"].items():
        children = [q for q in first["cgroups"] if q != path and q.startswith(
            path.rstrip("/") + "/")]
        if path == "/" or children:
            continue  # a parent's charge is its children's
        file_b, shmem_b = int(cg.get("file") or 0), int(cg.get("shmem") or 0)
        extra = int(cg.get("usage") or 0) - held.get(path, 0)
        cache = min(max(extra, 0), file_b + shmem_b)
        if cache < MIN_CACHE:
            continue
        shm = min(shmem_b, cache)
        steps = []
        if cache - shm > 0:
            steps.append(f'{{ op = "alloc", kind = "file", size = {_size(cache - shm)}, '
                         f'path = {_q("/replay" + path + "/cache")} }}')
        if shm > 0:
            steps.append(f'{{ op = "alloc", kind = "shmem", size = {_size(shm)}, '
                         f'path = {_q("/replay" + path + "/shm")} }}')
        steps.append('{ op = "sleep" }')
        out += ["[[process]]", f"name = {_q(path.strip('/').replace('/', '.') + '.cache')}",
                f"cgroup = {_q(path)}", "oom_score_adj = -1000",
                "program = [\n  " + ",\n  ".join(steps) + ",\n]", ""]
    # What the machine used beyond every sampled cgroup and task (kernel memory, the
    # cgroups the recorder did not sample): one pseudo-process in the root.
    root = first["cgroups"].get("/")
    if root is not None:
        leaves = [q for q in first["cgroups"] if q != "/" and not any(
            r != q and r.startswith(q.rstrip("/") + "/") for r in first["cgroups"])]
        accounted = sum(int(first["cgroups"][q].get("usage") or 0) for q in leaves)
        accounted += sum(_charged(p) for p in first["procs"] if p["cgroup"] == "/")
        other = int(root.get("usage") or 0) - accounted
        if other >= MIN_OTHER:
            out += ["[[process]]", 'name = "system.other"', 'cgroup = "/"',
                    "oom_score_adj = -1000",
                    f'program = [ {{ op = "alloc", kind = "anon", size = {_size(other)} }}, '
                    '{ op = "sleep" } ]', ""]
    for pid, points in series.items():
        p = info[pid]
        adj = max(-1000, min(1000, int(p.get("adj") or 0)))
        start = points[0][0]
        if pid in unseen:
            out.append(f"# {p['comm']} (pid {pid}) is in no sample: grown from the last sample "
                       "before the OOM to its rss at the OOM, at one rate")
        out += ["[[process]]", f"name = {_q(names[pid])}", f"cgroup = {_q(str(p['cgroup']))}"]
        if adj:
            out.append(f"oom_score_adj = {adj}")
        if start > 0:
            out.append(f'start = "{int(start * 1000)}ms"')
        rel = [(t - start, b) for t, b in points]
        prog = _program(rel, growing_tail=pid in last_pids, victim=pid in killed)
        if pid not in last_pids:
            prog[-1] = '{ op = "exit" }'
        out += ["program = [\n  " + ",\n  ".join(prog) + ",\n]", ""]
    if unseen:
        note = (f"{', '.join(names[pid] for pid in unseen)} killed live but in no sample (it "
                "grew between two of the recorder's samples): replayed as growing at one "
                "rate from the last sample to its rss at the OOM")
        if note not in inc.notes:
            inc.notes.append(note)
    return "\n".join(out)


def to_scenario(inc: Incident) -> Scenario:
    return parse_scenario(scenario_toml(inc), inc.path + " (replayed)")


# -- the command -----------------------------------------------------------------------------


def live_contender(inc: Incident) -> Contender:
    """The policies that ran live: the config the daemon named, if it is still there and
    loads; else the handlers the incident lists (without their arguments), with a note
    (QA Q9: a config broken after the incident, as a refused reload leaves it, made every
    old replay fail)."""
    cfg = inc.header.get("config")
    if isinstance(cfg, str) and cfg and Path(cfg).is_file():
        from oomkit.daemon.config import load_config, load_policies

        try:
            load_policies(load_config(cfg), secure=False)
        except ConfigError as exc:
            inc.notes.append(f"the live config does not load now ({exc}): replayed with the "
                             "handlers the incident lists, without their arguments")
        else:
            return from_config(cfg, label="live config")
    items = []
    for h in inc.header.get("handlers") or ():
        kind = "psi" if h.get("ops") == "psi" else "oom"
        at = f"@{h['cgroup']}" if kind == "oom" and h.get("cgroup") is not None else ""
        items.append(f"{kind}:{h.get('policy') or h.get('name')}{at}")
    if not items:
        return Contender("kernel")
    return from_policy_text(",".join(items))


def _victims(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(str(v.get("comm")), str(v.get("cgroup"))) for e in records
            if e.get("event") == "oom" for v in e.get("victims", ())]


def _base(comm: str) -> str:
    head, dot, tail = comm.rpartition(".")
    return head if dot and tail.isdigit() else comm


def _runner_up_unsampled(inc: Incident) -> list[str]:
    """The cgroups the live kill messages name as runner-up ("runner-up /db: ...", see
    oomkit.policies.kill_cause) of which no sample holds a process: the live decision
    weighed them, the replay cannot (QA Q8: the recorder's only sample predated the
    runner-up's process)."""
    named: set[str] = set()
    for v in (inc.oom or {}).get("victims", ()):
        reason = str(v.get("reason") or "")
        at = reason.find("runner-up /")
        if at >= 0:
            named.add(reason[at + len("runner-up "):].split()[0].rstrip(":,;"))
    held = {str(p.get("cgroup")) for s in inc.samples for p in s.get("procs", ())}
    return sorted(named - held)


def _unsampled(inc: Incident, live: list[tuple[str, str]]) -> list[str]:
    """The live OOM's memcg and victims' cgroups that no sample covers (a kernel OOM in a
    cgroup no handler watched): without them the replay has nothing to reach."""
    sampled: set[str] = set().union(*(s["cgroups"] for s in inc.samples))
    wanted = {g for _, g in live}
    if inc.oom is not None and isinstance(inc.oom.get("memcg"), str):
        wanted.add(inc.oom["memcg"])
    return sorted(wanted - sampled)


def run(args: argparse.Namespace, out: TextIO) -> int:
    chosen = [flag for flag, given in (("--kernel", args.kernel), ("--config", args.config),
                                       ("--oom-policy/--psi-policy",
                                        args.oom_policy or args.psi_policy)) if given]
    if len(chosen) > 1:  # one of them would be silently ignored
        raise ConfigError(f"{' and '.join(chosen)}: give one way to choose the policies")
    inc = load_incident(args.incident)
    text = scenario_toml(inc)
    scenario = parse_scenario(text, inc.path + " (replayed)")
    if args.write_scenario:
        try:
            Path(args.write_scenario).write_text(text)
        except OSError as exc:
            raise ConfigError(f"--write-scenario {args.write_scenario}: {exc.strerror}") from None
    if args.kernel:
        contender = Contender("kernel")
    elif args.oom_policy or args.psi_policy:
        label = ",".join([*args.oom_policy, *(f"psi:{s}" for s in args.psi_policy)])
        contender = Contender(label, tuple(args.oom_policy), tuple(args.psi_policy))
    elif args.config:
        contender = from_config(args.config)
    else:
        contender = live_contender(inc)
    if args.plot:
        from oomkit.lab.plot import check_suffix, require

        check_suffix(args.plot)
        require()
    printer = Printer(out, args.json)

    if not args.json:
        out.write(f"oomkit replay: {inc.path}: {counted(len(inc.samples), 'sample')}, "
                  f"{counted(len(scenario.processes), 'process', 'processes')}, "
                  f"{counted(len(scenario.cgroups), 'cgroup')}; "
                  f"under {contender.label}\n\n")
    t0 = float(inc.samples[0]["time"])
    # Live, the daemon samples growth for kill_cause at each of its recorder's samples:
    # without them the replay ranked by size alone (QA G12).
    tl: Timeline = run_timeline(scenario, contender, sink=printer, budget_s=LAB_BUDGET_S,
                                interval_ns=REPLAY_INTERVAL_NS,
                                growth_samples_s=[float(s["time"]) - t0 for s in inc.samples
                                                  if not s.get("after_oom")])
    if args.plot:
        from oomkit.lab.plot import plot_timelines

        plot_timelines([tl], args.plot)
    if args.json:
        return 0
    live = _victims(inc.events)
    first_oom = next((e for e in tl.records if e.get("event") == "oom"), None)
    replayed = _victims([first_oom]) if first_oom else []
    out.write("\n")
    if inc.oom is not None:
        out.write(f"live:   killed {', '.join(f'{c} ({g})' for c, g in live) or 'nobody'} "
                  f"(resolved by {inc.oom.get('resolved_by')}, {inc.oom.get('policy')})\n")
    out.write(f"replay: killed {', '.join(f'{_base(c)} ({g})' for c, g in replayed) or 'nobody'}"
              + (f" (resolved by {first_oom.get('resolved_by')}, {first_oom.get('policy')})"
                 if first_oom else "") + f" under {contender.label}\n")
    if inc.oom is not None:
        same = sorted(live) == sorted((_base(c), g) for c, g in replayed)
        out.write(f"same decision as live: {'yes' if same else 'no'}\n")
        unseen = _unsampled(inc, live)
        if unseen:
            out.write(f"note: {', '.join(unseen)} not in the incident's samples (the "
                      "recorder samples the cgroups OOM handlers watch): the replay cannot "
                      "reach the live decision; attach a handler at or above it\n")
        for path in _runner_up_unsampled(inc):
            out.write(f"note: the live decision ranked {path} second (its runner-up), but "
                      "no sample holds a process of it: the replay weighs it without them\n")
    for note in [*inc.notes, *tl.notes]:
        out.write(f"note: {note}\n")
    changed = _config_changed(inc, contender)
    if changed:
        out.write(f"note: {changed} changed after the incident was written: the replay ran "
                  "it as it is now, not as it ran live\n")
    if args.plot:
        out.write(f"plot: {args.plot}\n")
    return 0


def _config_changed(inc: Incident, contender: Contender) -> str | None:
    """The live config, when the replay runs it and it was modified after the incident
    (mtime later than the header's wall time): a later edit, not what decided live."""
    wall = inc.header.get("wall")
    if contender.config is None or contender.config != inc.header.get("config") or not (
            isinstance(wall, (int, float))):
        return None
    try:
        return contender.config if os.stat(contender.config).st_mtime > wall else None
    except OSError:
        return None
