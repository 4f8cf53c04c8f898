#!/usr/bin/env python3
"""How the kernel's memory stall is spread over trigger windows: the random reader of a
file in a small memcg (scripts/compare_thrash.py's harness), its v2 group's pressure
totals sampled every 100 ms, cut into the 2 s windows an unprivileged "some 200000
2000000" trigger looks at.

For each run: the memory stall of every 2 s window (the trigger fires on a window over
10 %), the CPU and IO stall of the same windows, and the system-wide workingset
counters per window (the reader dominates them). The question it answers (issue 12,
item 2): what makes a 3-4 % average stall pass 10 % in some windows, so that the
simulator can be given that cause.

    sudo .venv/bin/python scripts/stall_windows.py --runs 3 --size 256M   # ~1.5 min
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("compare_thrash", HERE / "compare_thrash.py")
assert _spec is not None and _spec.loader is not None
ct = importlib.util.module_from_spec(_spec)
sys.modules["compare_thrash"] = ct
_spec.loader.exec_module(ct)

M = 1 << 20
WINDOW_S = 2.0


def windows(m: ct.Measured, window_s: float = WINDOW_S) -> list[dict[str, float]]:
    """The samples cut into consecutive windows: stall shares (% of the window) of the
    reader's group and the counters' deltas per window."""
    out: list[dict[str, float]] = []
    if not m.samples:
        return out
    t0, p0, v0 = m.samples[0]
    for t, p, v in m.samples[1:]:
        if t - t0 < window_s - 1e-3:
            continue
        span_us = (t - t0) * 1e6
        row = {f"{k}%": 100.0 * (p[k] - p0[k]) / span_us
               for k in ("memory_some", "io_some", "cpu_some")}
        row.update({k: float(v[k] - v0[k]) for k in v})
        row["t"] = t
        out.append(row)
        t0, p0, v0 = t, p, v
    return out


def correlation(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", default="256M")
    ap.add_argument("--limit", default="64M")
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--sample", type=float, default=0.1,
                    help="seconds between reads of the group's pressure files (0: none, "
                    "only the trigger; reading them can skip a trigger evaluation, see "
                    "docs/sim-vs-kernel.md)")
    args = ap.parse_args(argv)
    size, limit = ct.parse_size(args.size), ct.parse_size(args.limit)
    if ct.own_v2_group() is None:
        raise SystemExit("needs a v2 group of our own for the reader's pressure files")
    every: list[dict[str, float]] = []
    with ct.data_file(args.dir, size, "windows") as path:
        for i in range(args.runs):
            m = ct.run_reader(path, "random", limit, seconds=args.seconds, triggers=True,
                              v2=True, seed=i + 1, sample_s=args.sample)
            ws = windows(m)
            every += ws
            first = "never" if m.first_cg is None else f"{m.first_cg:.1f} s"
            print(f"run {i + 1}: own trigger {first}; memory some per 2 s window (%): "
                  + " ".join(f"{w['memory_some%']:.1f}" for w in ws))
            print("        cpu some per window (%):    "
                  + " ".join(f"{w['cpu_some%']:.1f}" for w in ws))
            print("        restores per window:        "
                  + " ".join(f"{w['workingset_restore_file']:.0f}" for w in ws))
    mem = [w["memory_some%"] for w in every]
    print(f"windows: {len(every)}; memory some mean {sum(mem) / max(1, len(mem)):.1f}%, "
          f"max {max(mem, default=0):.1f}%, over 10%: {sum(x > 10 for x in mem)}")
    for key in ("cpu_some%", "io_some%", "workingset_restore_file",
                "workingset_activate_file", "pgdeactivate", "pgscan_file"):
        print(f"correlation of the window's memory some with {key}: "
              f"{correlation(mem, [w[key] for w in every]):+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
