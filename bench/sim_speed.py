"""How fast the simulator runs a busy machine: simulated seconds per wall-clock second.

    .venv/bin/python bench/sim_speed.py [--minutes 10] [--profile] [--seed 1]

The machine (built with SimKernel.create_cgroup/spawn, deterministic for a seed): 16G of
RAM and 1G of swap; 100 cgroups (10 groups with a memory.max, 9 leaves each); 1,000
processes; 10 simulated minutes at the default 10 ms tick. A Runtime has LargestLeaf
attached system-wide and PsiDeclare watching every cgroup, so the run has:

- services (most processes): a few MiB of heap, then bursts of work between sleeps;
- growers: a few per group, started at staggered times, allocating until the group's
  memory.max is hit: memcg OOMs, resolved by LargestLeaf (which kills a whole leaf);
- throttled leaves: memory.high below what their processes want: throttling penalties;
- page-cache thrashers: a random reader of a file 1.25x its leaf's memory.max, which
  thrashes in memory PSI until PsiDeclare declares an OOM on it;
- swap on two groups, so reclaim also swaps anon out.

The baseline, measured in the same run: a pure-Python loop that does only the least any
tick-driven simulator must do — visit each live process once per tick and update one
counter — over the same number of processes and ticks. It shows what scanning everything
every tick would cost; the simulator skips sleeping and working processes instead.

Prints both as simulated seconds per wall second (the target is at least 200x).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import sys
from dataclasses import dataclass

from oomkit import Runtime, SimKernel
from oomkit.clock import wall_perf_ns
from oomkit.events import EventList, OomEvent, PsiEventRecord
from oomkit.kernel.sim import MachineSpec, Step
from oomkit.policies.largest_leaf import LargestLeaf
from oomkit.policies.psi_declare import PsiDeclare
from oomkit.sim_summary import summarize

M = 1 << 20
G = 1 << 30
S = 1_000_000_000
GROUPS = 10
LEAVES = 9
PROCESSES = 1000
TARGET = 200.0


def service(rng: random.Random, minutes: float) -> tuple[Step, ...]:
    steps = [Step("alloc", "anon", rng.randrange(4, 16) * M)]
    t = 0.0
    while t < minutes * 60:
        work = rng.uniform(0.1, 1.0)
        nap = rng.uniform(5.0, 30.0)
        steps += [Step("work", duration_ns=int(work * S)), Step("sleep", duration_ns=int(nap * S))]
        t += work + nap
    steps.append(Step("sleep"))
    return tuple(steps)


def grower(rng: random.Random) -> tuple[Step, ...]:
    steps: list[Step] = []
    for _ in range(40):
        steps += [Step("alloc", "anon", rng.randrange(40, 80) * M),
                  Step("work", duration_ns=int(rng.uniform(0.5, 2.0) * S))]
    steps.append(Step("sleep"))
    return tuple(steps)


def throttled(rng: random.Random) -> tuple[Step, ...]:
    # Together the three of a leaf want more than its memory.high: the later pieces are
    # throttled.
    steps: list[Step] = []
    for _ in range(5):
        steps += [Step("alloc", "anon", 8 * M), Step("work", duration_ns=2 * S),
                  Step("sleep", duration_ns=int(rng.uniform(3, 8) * S))]
    steps.append(Step("sleep"))
    return tuple(steps)


def thrasher(path: str, size: int, seconds: float) -> tuple[Step, ...]:
    return (Step("touch", "file", size, path=path, duration_ns=int(seconds * S)),
            Step("sleep"))


@dataclass
class Built:
    kernel: SimKernel
    runtime: Runtime
    events: EventList


def build(minutes: float, seed: int) -> Built:
    rng = random.Random(seed)
    duration = int(minutes * 60 * S)
    k = SimKernel(MachineSpec(memory=16 * G, swap=1 * G, duration_ns=duration, seed=seed))
    # Per group: l0 the thrasher's (memory.max), l1 throttled (memory.high), l2..l7
    # services, l8 the growers'.
    leaves: list[str] = []
    for g in range(GROUPS):
        swap = 256 * M if g < 2 else 0
        k.create_cgroup(f"/g{g}", memory_max=1536 * M, swap_max=swap)
        k.create_cgroup(f"/g{g}/l0", memory_max=64 * M)
        k.create_cgroup(f"/g{g}/l1", memory_high=96 * M)
        for leaf in range(2, LEAVES):
            k.create_cgroup(f"/g{g}/l{leaf}")
            if leaf < LEAVES - 1:
                leaves.append(f"/g{g}/l{leaf}")
    n = 0
    for g in range(GROUPS):
        # One thrasher per group, each starting at its own time, for a minute.
        start = int(rng.uniform(0, minutes * 60 * 0.8) * S)
        k.spawn(f"thrash{g}", f"/g{g}/l0", thrasher(f"/data/g{g}", 80 * M, 60), 0, start)
        # Three throttled processes in leaf 1.
        for i in range(3):
            k.spawn(f"thr{g}.{i}", f"/g{g}/l1", throttled(rng), 0, int(rng.uniform(0, 30) * S))
        # Four growers per group, staggered over the run.
        for i in range(4):
            start = int(rng.uniform(0, minutes * 60 * 0.9) * S)
            k.spawn(f"grow{g}.{i}", f"/g{g}/l{LEAVES - 1}", grower(rng), 0, start)
        n += 1 + 3 + 4
    i = 0
    while n < PROCESSES:
        leaf = leaves[rng.randrange(len(leaves))]
        k.spawn(f"svc{i}", leaf, service(rng, minutes), rng.choice((0, 0, 0, 100, 500)),
                int(rng.uniform(0, 10) * S))
        i += 1
        n += 1
    events = EventList()
    rt = Runtime(k, sink=events)
    rt.attach_oom(LargestLeaf())
    rt.attach_psi(PsiDeclare())
    return Built(k, rt, events)


def run_sim(minutes: float, seed: int, profile: bool) -> tuple[float, Built]:
    b = build(minutes, seed)
    prof = cProfile.Profile() if profile else None
    t0 = wall_perf_ns()
    if prof is not None:
        prof.enable()
    b.kernel.run()
    if prof is not None:
        prof.disable()
    wall = (wall_perf_ns() - t0) / 1e9
    b.runtime.close()
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return wall, b


def baseline(processes: int, ticks: int) -> float:
    """The naive tick loop: every process visited every tick, one counter updated."""
    procs = [{"pid": i, "state": "running", "ns": 0} for i in range(processes)]
    tick = 10_000_000
    t0 = wall_perf_ns()
    for _ in range(ticks):
        for p in procs:
            if p["state"] == "running":
                p["ns"] += tick
    return (wall_perf_ns() - t0) / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    args = ap.parse_args(argv)
    sim_s = args.minutes * 60
    wall, b = run_sim(args.minutes, args.seed, args.profile)
    k, ev = b.kernel, b.events.events
    ooms = [e for e in ev if isinstance(e, OomEvent)]
    declared = [e for e in ooms if e.constraint == "DECLARED"]
    psi = [e for e in ev if isinstance(e, PsiEventRecord)]
    high = sum(cg.memory_events("high") for cg in k.root.walk() if cg.parent is not None
               and cg.parent.parent is None)
    summary = summarize(k)
    killed = sum(1 for p in summary.processes if p.status == "killed")
    print(f"simulated: {sim_s:.0f} s of {len(summary.processes)} processes in 100 cgroups, "
          f"tick {k.machine.tick_ns // 1_000_000} ms")
    print(f"  {len(ooms)} OOMs ({len(declared)} declared from {len(psi)} PSI events), "
          f"{killed} processes killed, {high} memory.high events, "
          f"{k.swap_used // M} MiB in swap at the end")
    print(f"  wall {wall:.2f} s: {sim_s / wall:.0f} simulated s per wall s "
          f"(target {TARGET:.0f}x)")
    ticks = int(sim_s * 1e9) // k.machine.tick_ns
    base = baseline(PROCESSES, ticks)
    print(f"baseline (a loop visiting {PROCESSES} processes every tick, nothing else): "
          f"wall {base:.2f} s: {sim_s / base:.0f} simulated s per wall s")
    return 0 if sim_s / wall >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
