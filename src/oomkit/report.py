"""Readable rendering of events: the story ``oomkit simulate`` and ``oomkit run`` tell, and
``oomkit events``.

Works on event dicts (the JSON form), so the same code renders live events, simulated
ones, and lines read back from the event log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

from oomkit.events import Event
from oomkit.units import counted, format_size

Ev = Mapping[str, Any]


def _victims(victims: list[Ev]) -> str:
    """"a (pid 1, /cg, rss 10M), b (...): why; c (...): why else": each run of victims
    killed for one reason (a handler's kill message) followed by it once."""
    runs: list[tuple[str, list[str]]] = []
    for v in victims:
        who = f"{v['comm']} (pid {v['pid']}, {v['cgroup']}, rss {format_size(int(v['rss']))})"
        reason = str(v.get("reason") or "")
        if runs and runs[-1][0] == reason:
            runs[-1][1].append(who)
        else:
            runs.append((reason, [who]))
    return "; ".join(", ".join(whos) + (f": {reason}" if reason else "")
                     for reason, whos in runs)


def _where(memcg: str | None) -> str:
    return memcg if memcg else "the whole machine"


def _oom_lines(e: Ev) -> list[str]:
    lines: list[str] = []
    what = {"MEMCG": "hit its memory.max", "NONE": "ran out of memory",
            "DECLARED": "was declared out of memory"}.get(e["constraint"], e["constraint"])
    if e["constraint"] == "NONE" and str(e.get("constraint_text") or "").startswith("MemAvailable"):
        what = "ran short of memory ([system] watch)"  # declared before the kernel's OOM
    head = f"OOM       {_where(e.get('memcg'))} {what}"
    if e.get("constraint_text"):
        head += f" ({e['constraint_text']})"
    lines.append(head)
    for h in e.get("handlers", []):
        if h.get("error"):
            verdict = f"failed: {h['error']}"
        elif h["returned"] and h["memory_freed"]:
            verdict = "freed memory"
        elif h["returned"]:
            verdict = "returned True but freed nothing: walk goes on"
        else:
            verdict = "declined"
        if h.get("returned_value") is not None:  # SPEC: -> bool; taken by its truth
            verdict = (f"returned {h['returned_value']}, not a bool (taken as "
                       f"{bool(h['returned'])}): "
                       + verdict.removeprefix("returned True but "))
        where = "system-wide" if h["cgroup_id"] == 0 else f"cgroup id {h['cgroup_id']}"
        lines.append(f"          asked {h['name']} ({where}): {verdict}, {h['duration_us']} us")
    by = e["resolved_by"]
    victims = e.get("victims", [])
    if by == "handler":
        tail = f"resolved by handler {e['policy']}"
    elif by == "kernel":
        tail = "resolved by the kernel's own OOM killer"
    elif not victims and e.get("note"):
        # The note says why nobody was killed (a victim still exiting, the post-action
        # delay, min_victim, no killable task): "the default killer ran" would read as a kill.
        tail = ("no handler made progress" if e.get("handlers")
                else "no handler was asked") + ", nobody killed"
    elif e.get("handlers"):
        tail = "no handler made progress: the default killer ran"
    else:  # none attached on the OOM's path (`simulate --bare`)
        tail = "no handler was asked: the default killer ran"
    if victims:
        tail += f"; killed {_victims(victims)}"
    lines.append(f"          {tail}")
    if e.get("note"):
        lines.append(f"          ({e['note']})")
    if e.get("incident"):  # the flight recorder's file of the minutes before (docs/lab.md)
        lines.append(f"          incident {e['incident']} (oomkit replay it)")
    return lines


def event_lines(e: Ev) -> list[str]:
    """One event as indented lines (without the time column)."""
    kind = e.get("event")
    if kind == "oom":
        return _oom_lines(e)
    if kind == "attach":
        where = e.get("cgroup") or "system-wide"
        how = f" via {e['mechanism']}" if e.get("mechanism") else ""
        return [f"attach    {e['name']} ({e['ops']}) {where}{how}"]
    if kind == "detach":
        return [f"detach    {e['name']} ({e['ops']}): {e['reason']}"]
    if kind == "handler_error":
        what = "overran its budget" if e.get("timeout") else "raised"
        return [f"error     {e['name']}.{e['callback']} {what}: {e['error']} "
                f"(failure {e['failures']})"]
    if kind == "psi":
        state = "full" if e.get("full") else "some"
        return [f"pressure  {_where(e.get('cgroup'))}: {e['resource']} {state} stall reached "
                f"{e['threshold_us'] / 1000:g} ms within {e['window_us'] / 1e6:g} s"]
    if kind == "cgroup_online":
        return [f"cgroup    {e['cgroup']} created (id {e['cgroup_id']})"]
    if kind == "cgroup_offline":
        return [f"cgroup    {e['cgroup']} removed (id {e['cgroup_id']})"]
    if kind == "error":
        return [f"error     {e['where']}: {e['error']}"]
    if kind == "summary":
        return [f"end       {counted(e['ooms'], 'OOM')}, {counted(e['kills'], 'kill')}, "
                f"machine in full memory "
                f"pressure for {e['full_pressure_s']:.2f} s"]
    return [f"{kind}  {dict(e)}"]


def format_wall(wall: float | None) -> str:
    """An epoch time as local ``YYYY-MM-DD HH:MM:SS.mmm`` ("-" for None)."""
    if wall is None:
        return "-"
    t = time.localtime(wall)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{int((wall % 1) * 1000):03d}"


def record_lines(record: Ev) -> list[str]:
    """A record as readable lines: :func:`event_lines`, plus what a dry run adds."""
    dry = bool(record.get("dry_run")) and record.get("event") == "oom" and \
        record.get("resolved_by") != "kernel"
    if record.get("event") == "daemon":
        lines = [f"daemon    {record.get('action', '?')}: {record.get('detail', '')}"]
    elif dry:
        # The victims of a dry run are the would-be victims: shown as "would kill" below,
        # with the note that explains them; a note without them (waiting for a would-be
        # victim to exit) is the only account of why nothing would happen.
        would = record.get("would", [])
        lines = [line.replace("the default killer ran", "the default killer would run")
                 for line in event_lines({**record, "victims": [],
                                          "note": "" if would else record.get("note", "")})]
        lines[0] += "  [DRY RUN: nothing was killed]"
        lines.extend(f"          would {w}" for w in would)
    else:
        lines = event_lines(record)
    return [_CONTROL.sub(_escape, line) for line in lines]


#: Control characters (C0, DEL, C1). Event text holds what others wrote: an exception's
#: message, a task's comm (any bytes but NUL, set with prctl(PR_SET_NAME)). A newline there
#: would start a line of its own (a second journal entry, a forged record in the table), an
#: escape sequence would drive the terminal; each is shown escaped instead, as repr() does.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def write_record(out: TextIO, record: Ev) -> None:
    """One record, stamped with its wall-clock time when it has one (the daemon's, the event
    log's), else with its kernel time in seconds (the simulator's). A simulation's summary
    adds its table of processes."""
    lines = record_lines(record)
    wall = record.get("wall")
    stamp = format_wall(wall) if wall is not None else f"{record.get('time', 0.0):8.2f}s"
    out.write(f"{stamp}  {lines[0]}\n")
    pad = " " * (len(stamp) + 2)
    for line in lines[1:]:
        out.write(f"{pad}{line}\n")
    if record.get("event") == "summary" and record.get("processes"):
        write_summary(out, record)


class Printer:
    """Events as they come, for ``oomkit simulate`` and ``oomkit run`` alike: JSON lines, or
    the readable form of :func:`write_record`.

    A runtime sink (called with the event) and a daemon output (called with the event and
    the record the daemon made of it, which adds ``wall`` and the dry-run fields).
    ``wall_stamps=False`` stamps the readable lines with the kernel's time even so: a
    simulation's OOMs all happen within the same wall-clock second, at their own
    scenario times (the JSON lines keep both)."""

    def __init__(self, out: TextIO, as_json: bool, wall_stamps: bool = True) -> None:
        self.out = out
        self.as_json = as_json
        self.wall_stamps = wall_stamps

    def __call__(self, event: Event, record: Ev | None = None) -> None:
        rec = record if record is not None else event.to_dict()
        if self.as_json:
            self.out.write(json.dumps(rec, separators=(", ", ": "), default=str) + "\n")
        elif self.wall_stamps or "wall" not in rec:
            write_record(self.out, rec)
        else:
            write_record(self.out, {k: v for k, v in rec.items() if k != "wall"})
        self.out.flush()


def write_table(out: TextIO, rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt: Callable[[list[str]], str] = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
    out.write(fmt(header) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in rows:
        out.write(fmt(r) + "\n")


def write_summary(out: TextIO, e: Ev) -> None:
    rows = []
    for p in e.get("processes", []):
        killed = f"{p['killed_at']:.2f}s" if p.get("killed_at") is not None else "-"
        rows.append([p["name"], str(p["pid"]) if p["pid"] else "-", p["cgroup"], p["status"],
                     killed, f"{p['stall_s']:.2f}s", f"{p.get('io_stall_s', 0.0):.2f}s",
                     f"{p['work_done_s']:.2f}s", f"{p['work_lost_s']:.2f}s",
                     format_size(int(p["peak_rss"]))])
    out.write("\n")
    # Memory and IO stall apart: a reader waiting on its disk stalls little on memory.
    write_table(out, rows, ["process", "pid", "cgroup", "status", "killed", "mem stall",
                            "io stall", "work done", "work lost", "peak rss"])
