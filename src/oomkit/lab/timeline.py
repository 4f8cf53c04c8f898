"""Run a scenario on the simulator and keep its time series: samples and events.

The kernel is driven with ``SimKernel.run(until_ns=...)`` one sample interval at a time;
the simulator lands on the same tick grid however a run is cut (its run() contract), so
a sampled run reaches the same decisions as an unsampled one.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from oomkit.events import Event, SummaryEvent
from oomkit.kernel.sim import Scenario, SimKernel
from oomkit.lab.contender import Contender, attach
from oomkit.lab.samples import take_sample
from oomkit.runtime import Runtime
from oomkit.sim_summary import summarize

DEFAULT_INTERVAL_NS = 1_000_000_000


@dataclass(slots=True)
class Timeline:
    """What one run left: ``records`` are samples and event dicts in time order (the
    lines of a samples file), ``summary`` the run's last event."""

    scenario: str
    label: str
    duration: float
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def samples(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == "sample"]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") != "sample"
                and (kind is None or r.get("event") == kind)]

    def write(self, out: TextIO, *, tagged: bool = False) -> None:
        """The records as JSON lines; ``tagged`` adds ``"run": label`` to each, so that
        several runs in one file (simulate with several --policy) stay apart."""
        for r in self.records:
            rec = {**r, "run": self.label} if tagged else r
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")


def perturb(scenario: Scenario, seed: int) -> Scenario:
    """The scenario as written for seed 0; for another seed, each process starts up to
    0.5 s later and each rate of its program is scaled by 0.9-1.1, drawn from
    random.Random(seed). The simulator itself is deterministic: seeds are how the lab
    asks "would a small change in timing change the verdict?"."""
    if seed == 0:
        return scenario
    rng = random.Random(seed)
    procs = []
    for p in scenario.processes:
        shift = int(rng.uniform(0, 0.5) * 1e9)
        prog = tuple(replace(s, rate=int(s.rate * rng.uniform(0.9, 1.1)))
                     if s.rate else s for s in p.program)
        procs.append(replace(p, start_ns=p.start_ns + shift, program=prog))
    return replace(scenario, processes=tuple(procs),
                   machine=replace(scenario.machine, seed=seed))


def _sample_growth(kernel: SimKernel) -> None:
    """The daemon's growth sample (daemon/service.py ``_sample_growth``): only where a
    loaded policy ranks by cause (it imported the module)."""
    cause = sys.modules.get("oomkit.policies.cause")
    if cause is not None:
        cause.tracker(kernel).note_tree(kernel.root_mem_cgroup(), kernel.clock.now())


def run_timeline(scenario: Scenario, contender: Contender | None, *,
                 interval_ns: int = DEFAULT_INTERVAL_NS, label: str | None = None,
                 bare: bool = False, sink: Callable[[Event], None] | None = None,
                 budget_s: float = 1.0,
                 growth_samples_s: Sequence[float] = ()) -> Timeline:
    """Run ``scenario`` under ``contender`` (None: the scenario's own suggested policies,
    or none with ``bare``), sampling every ``interval_ns``. ``sink`` also gets every event
    as it happens (the printer of ``oomkit simulate``). ``growth_samples_s``: times
    (seconds, ascending) at which the cause ranking samples growth, as the daemon does at
    each of its recorder's samples (a replay passes the incident's; taken at the first
    sample interval's end at or after each). Raises ConfigError for a policy that cannot
    load or attach."""
    kernel = SimKernel.from_scenario(scenario)
    tl = Timeline(scenario.name, label or (contender.label if contender else "scenario"),
                  scenario.machine.duration_ns / 1e9)

    def keep(event: Event) -> None:
        tl.records.append(event.to_dict())
        if sink is not None:
            sink(event)

    rt = Runtime(kernel, sink=keep, budget_s=budget_s)
    if contender is None:
        oom: list[str] = []
        psi: list[str] = []
        if not bare:
            for text in scenario.policies:
                (psi if text.startswith("psi:") else oom).append(
                    text.removeprefix("psi:").removeprefix("oom:"))
        contender = Contender(tl.label, tuple(oom), tuple(psi))
    try:
        tl.notes = attach(rt, contender)
        interval_ns = max(interval_ns, scenario.machine.tick_ns)
        end = scenario.machine.duration_ns
        tl.records.append(take_sample(kernel))
        t = 0
        growth = iter(growth_samples_s)
        next_growth = next(growth, None)
        while t < end:
            t = min(end, t + interval_ns)
            kernel.run(until_ns=t)
            tl.records.append(take_sample(kernel))
            if next_growth is not None and next_growth * 1e9 <= t:
                _sample_growth(kernel)
                while next_growth is not None and next_growth * 1e9 <= t:
                    next_growth = next(growth, None)
        summary: SummaryEvent = summarize(kernel)
    finally:
        rt.close()
    keep(summary)
    tl.summary = summary.to_dict()
    return tl
