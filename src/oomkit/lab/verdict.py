"""What a run comes to: the figures ``oomkit compare`` puts in its table.

Definitions (docs/lab.md repeats them for users):

- **culprit**: in the domain of a kill (the memcg subtree of an OOM at a memcg's limit,
  constraint MEMCG; the whole machine otherwise: a system-wide OOM, an OOM a policy
  declared where pressure showed, a kill without an OOM event), among the processes a
  killer may take (oom_score_adj above -1000), those of the *job* whose programs ask for
  the most memory together. A job is a leaf cgroup (each process of the root cgroup is
  one by itself): a batch of eight workers of 75M is one job of 600M, larger than a 400M
  database beside it. A program asks for the largest sum of its ``alloc`` steps (anon,
  shmem, file) minus its ``free`` steps, or the size of a ``touch`` working set,
  whichever is larger, at any point. This is the scenario's own statement of who brings
  the memory in
  (a thrashing reader, a leak, a throttled service that keeps trying to grow), read from
  what the process asks for, not from what it got: a process throttled at memory.high
  or one whose charge keeps failing still asks.
- **bystander**: a killed process that is not a culprit and does not share its cgroup
  with one (a cgroup killed whole with memory.oom.group, whose culprit is inside, takes
  no bystanders). Killing a bystander is the error users complain about.
- **work lost**: seconds of useful work the killed processes had done and lost (the
  simulator's accounting in the summary).
- **full pressure**: seconds during which every non-idle task of the machine stalled on
  memory (the summary's memory full total), and the same for IO (from the last sample).
- **time to relief**: from the first sample interval in which the machine's memory or IO
  "some" pressure reached :data:`PRESSURE_PCT` percent, to the end of the last such
  interval; None when pressure never came, "not relieved" when it lasts to the end.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from oomkit.kernel.sim import ProcessSpec, Scenario
from oomkit.lab.timeline import Timeline

PRESSURE_PCT: Final = 10.0
OOM_SCORE_ADJ_MIN: Final = -1000


def demand(p: ProcessSpec) -> int:
    """The most memory ``p``'s program asks for at any point, in bytes."""
    held = peak = 0
    for s in p.program:
        if s.op == "alloc":
            held += s.size
        elif s.op == "free":
            held = max(0, held - s.size)
        elif s.op == "touch":
            peak = max(peak, s.size)
        peak = max(peak, held)
    return peak


def _in_domain(cgroup: str, domain: str | None) -> bool:
    if domain is None or domain == "/":
        return True
    return cgroup == domain or cgroup.startswith(domain.rstrip("/") + "/")


def _job(p: ProcessSpec) -> str:
    """The job a process belongs to: its cgroup, or itself in the root cgroup."""
    return p.cgroup if p.cgroup.strip("/") else f"process {p.name}"


def culprits(scenario: Scenario, domain: str | None) -> set[str]:
    """Names of the killable processes of the job (see the module doc) with the largest
    summed demand in ``domain`` (ties: every such job)."""
    procs = [p for p in scenario.processes
             if _in_domain(p.cgroup, domain) and p.oom_score_adj > OOM_SCORE_ADJ_MIN]
    if not procs:
        return set()
    jobs: dict[str, int] = {}
    for p in procs:
        jobs[_job(p)] = jobs.get(_job(p), 0) + demand(p)
    top = max(jobs.values())
    return {p.name for p in procs if jobs[_job(p)] == top}


@dataclass(frozen=True, slots=True)
class Kill:
    time: float
    name: str
    cgroup: str
    why: str
    bystander: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    ooms: int
    kills: tuple[Kill, ...]
    bystanders: int
    work_lost_s: float
    full_s: float
    io_full_s: float
    first_pressure_s: float | None
    relief_s: float | None  # time to relief; None when not relieved or no pressure

    def to_dict(self) -> dict[str, Any]:
        return {"ooms": self.ooms, "kills": len(self.kills), "bystanders": self.bystanders,
                "work_lost_s": round(self.work_lost_s, 3), "full_s": round(self.full_s, 3),
                "io_full_s": round(self.io_full_s, 3),
                "first_pressure_s": self.first_pressure_s, "relief_s": self.relief_s,
                "victims": [{"time": k.time, "name": k.name, "cgroup": k.cgroup,
                             "why": k.why, "bystander": k.bystander} for k in self.kills]}


def _kills(scenario: Scenario, tl: Timeline) -> list[Kill]:
    out: list[Kill] = []
    seen: set[int] = set()
    cgroup_of = {p.name: p.cgroup for p in scenario.processes}

    def judge(name: str, cgroup: str, domain: str | None) -> bool:
        guilty = culprits(scenario, domain)
        return name not in guilty and cgroup not in {cgroup_of.get(g) for g in guilty}

    for ev in tl.events("oom"):
        why = ev.get("constraint_text") or ev.get("constraint") or "OOM"
        by = ev.get("policy") if ev.get("resolved_by") == "handler" else ev.get("resolved_by")
        domain = ev.get("memcg") if ev.get("constraint") == "MEMCG" else None
        for v in ev.get("victims", ()):
            seen.add(int(v["pid"]))
            out.append(Kill(float(ev["time"]), str(v["comm"]), str(v["cgroup"]),
                            f"{why}, by {by}", judge(str(v["comm"]), str(v["cgroup"]),
                                                     domain)))
    for p in tl.summary.get("processes", ()):
        if p.get("status") == "killed" and int(p["pid"]) not in seen and p.get("killed_at"):
            out.append(Kill(float(p["killed_at"]), str(p["name"]), str(p["cgroup"]),
                            "killed by a handler", judge(str(p["name"]), str(p["cgroup"]),
                                                         None)))
    return sorted(out, key=lambda k: k.time)


def _pressure_window(samples: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(first pressure, time to relief) from the machine's some totals (microseconds)."""
    first = last = None
    for a, b in itertools.pairwise(samples):
        dt = (b["time"] - a["time"]) * 1e6
        ra, rb = a["cgroups"].get("/"), b["cgroups"].get("/")
        if dt <= 0 or ra is None or rb is None:
            continue
        pct = max((100.0 * (rb["psi"][r][2] - ra["psi"][r][2]) / dt
                   for r in ("memory", "io") if ra["psi"].get(r) and rb["psi"].get(r)),
                  default=0.0)
        if pct >= PRESSURE_PCT:
            if first is None:
                first = float(a["time"])
            last = float(b["time"])
    if first is None or last is None:
        return None, None
    if samples and last >= samples[-1]["time"]:
        return first, None
    return first, round(last - first, 3)


def judge_run(scenario: Scenario, tl: Timeline) -> Verdict:
    kills = _kills(scenario, tl)
    procs = tl.summary.get("processes", ())
    samples = tl.samples()
    io_full = 0.0
    io_line = samples[-1]["cgroups"].get("/", {}).get("psi", {}).get("io") if samples else None
    if io_line:
        io_full = io_line[3] / 1e6
    first, relief = _pressure_window(samples)
    return Verdict(int(tl.summary.get("ooms", 0)), tuple(kills),
                   sum(k.bystander for k in kills),
                   sum(float(p.get("work_lost_s", 0)) for p in procs),
                   float(tl.summary.get("full_pressure_s", 0)), io_full, first, relief)
