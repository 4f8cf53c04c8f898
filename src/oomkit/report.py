"""Readable rendering of events: the story ``oomkit simulate`` tells, and ``oomkit events``.

Works on event dicts (the JSON form), so the same code renders live events, simulated
ones, and lines read back from the event log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TextIO

from oomkit.units import format_size

Ev = Mapping[str, Any]


def _victims(victims: list[Ev]) -> str:
    return ", ".join(
        f"{v['comm']} (pid {v['pid']}, {v['cgroup']}, rss {format_size(int(v['rss']))})"
        for v in victims
    )


def _where(memcg: str | None) -> str:
    return memcg if memcg else "the whole machine"


def _oom_lines(e: Ev) -> list[str]:
    lines: list[str] = []
    what = {"MEMCG": "hit its memory.max", "NONE": "ran out of memory",
            "DECLARED": "was declared out of memory"}.get(e["constraint"], e["constraint"])
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
        where = "system-wide" if h["cgroup_id"] == 0 else f"cgroup id {h['cgroup_id']}"
        lines.append(f"          asked {h['name']} ({where}): {verdict}, {h['duration_us']} us")
    by = e["resolved_by"]
    victims = e.get("victims", [])
    if by == "handler":
        tail = f"resolved by handler {e['policy']}"
    elif by == "kernel":
        tail = "resolved by the kernel's own OOM killer"
    else:
        tail = "no handler made progress: the default killer ran"
    if victims:
        tail += f"; killed {_victims(victims)}"
    lines.append(f"          {tail}")
    if e.get("note"):
        lines.append(f"          ({e['note']})")
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
        return [f"end       {e['ooms']} OOMs, {e['kills']} kills, machine in full memory "
                f"pressure for {e['full_pressure_s']:.2f} s"]
    return [f"{kind}  {dict(e)}"]


def write_event(out: TextIO, e: Ev) -> None:
    lines = event_lines(e)
    out.write(f"{e.get('time', 0.0):8.2f}s  {lines[0]}\n")
    for line in lines[1:]:
        out.write(f"{'':10}{line}\n")
    out.flush()


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
        rows.append([p["name"], str(p["pid"]), p["cgroup"], p["status"], killed,
                     f"{p['stall_s']:.2f}s", f"{p['work_done_s']:.2f}s",
                     f"{p['work_lost_s']:.2f}s", format_size(int(p["peak_rss"]))])
    out.write("\n")
    write_table(out, rows, ["process", "pid", "cgroup", "status", "killed", "stalled",
                            "work done", "work lost", "peak rss"])
