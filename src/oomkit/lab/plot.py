"""Pictures of timelines (matplotlib, the optional extra ``oomkit[plot]``).

Only the lab imports this module, and only when asked for a picture: the daemon never
does. :func:`require` turns a missing matplotlib into one ConfigError line.

``plot_timelines`` draws one column per run and one row per concern, on a shared time
axis: memory charged per leaf cgroup (anonymous and swap-backed below, page cache above,
stacked) against each memory.max; memory pressure; IO pressure. Every kill is a vertical
line through all rows, labelled with who and why. ``plot_kills`` draws the verdicts of a
comparison: one row per scenario and contender, a marker per kill.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from oomkit.errors import ConfigError
from oomkit.lab.timeline import Timeline

MISSING = ("--plot needs matplotlib: pip install 'oomkit[plot]' "
           "(or pip install 'matplotlib>=3.8,<4')")
MIB = 1 << 20
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan")


def require() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); ConfigError if absent."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_suffix(path: str) -> None:
    """ConfigError unless ``path`` ends in .png/.svg/.pdf and its directory exists:
    callers check before a run, so a long compare does not end in a traceback."""
    if Path(path).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"--plot {path}: the name must end in .png, .svg or .pdf")
    if not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"--plot {path}: no such directory")


def _save(fig: Any, path: str, dpi: int) -> None:
    try:
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise ConfigError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None


def _leaves(paths: Sequence[str]) -> list[str]:
    """Cgroups no other sampled cgroup is below: their usages add up without overlap."""
    return [p for p in paths if p != "/" and not any(
        q != p and q.startswith(p.rstrip("/") + "/") for q in paths)]


def _one_label_per_oom(kills: Sequence[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """Kills of one moment and reason (one OOM killing a cgroup's tasks) under one label:
    "a (/cg), b (/cg) +6", so that the victims of a later OOM still get theirs."""
    groups: dict[tuple[float, str], list[str]] = {}
    for when, who, why in kills:
        groups.setdefault((when, why), []).append(who)
    return [(when, ", ".join(who[:2]) + (f" +{len(who) - 2}" if len(who) > 2 else ""), why)
            for (when, why), who in groups.items()]


def kills_of(tl: Timeline) -> list[tuple[float, str, str]]:
    """(time, who, why) of every kill: the OOM events' victims, then processes the summary
    says were killed without an OOM event (a PSI handler that killed by itself)."""
    out: list[tuple[float, str, str]] = []
    seen: set[int] = set()
    for ev in tl.events("oom"):
        why = ev.get("constraint_text") or ev.get("constraint") or "OOM"
        by = ev.get("policy") if ev.get("resolved_by") == "handler" else ev.get("resolved_by")
        for v in ev.get("victims", ()):
            seen.add(int(v["pid"]))
            out.append((float(ev["time"]), f"{v['comm']} ({v['cgroup']})", f"{why}, by {by}"))
    for p in tl.summary.get("processes", ()):
        if p.get("status") == "killed" and p["pid"] not in seen and p.get("killed_at"):
            out.append((float(p["killed_at"]), f"{p['name']} ({p['cgroup']})", "killed"))
    return sorted(out)


def _series(samples: list[dict[str, Any]], path: str, key: str) -> list[float]:
    return [float(s["cgroups"].get(path, {}).get(key) or 0) for s in samples]


def _psi(samples: list[dict[str, Any]], path: str, res: str, idx: int) -> list[float]:
    out = []
    for s in samples:
        line = (s["cgroups"].get(path) or {}).get("psi", {}).get(res)
        out.append(float(line[idx]) if line else 0.0)
    return out


def _draw_usage(ax: Any, tl: Timeline, samples: list[dict[str, Any]]) -> None:
    t = [s["time"] for s in samples]
    paths = list(dict.fromkeys(p for s in samples for p in s["cgroups"]))
    leaves = _leaves(paths) or ["/"]
    base = [0.0] * len(t)
    for i, path in enumerate(leaves):
        colour = COLOURS[i % len(COLOURS)]
        anon = [(a + sh) / MIB for a, sh in zip(_series(samples, path, "anon"),
                                                 _series(samples, path, "shmem"), strict=True)]
        usage = [u / MIB for u in _series(samples, path, "usage")]
        # What usage holds beyond anon+shmem is page cache and kernel memory.
        other = [max(0.0, u - a) for u, a in zip(usage, anon, strict=True)]
        top1 = [b + a for b, a in zip(base, anon, strict=True)]
        top2 = [b + o for b, o in zip(top1, other, strict=True)]
        ax.fill_between(t, base, top1, color=colour, alpha=0.85, linewidth=0,
                        label=f"{path} anon+shmem" if any(anon) else None)
        ax.fill_between(t, top1, top2, color=colour, alpha=0.35, linewidth=0,
                        hatch="//", label=f"{path} page cache" if any(other) else None)
        base = top2
    for i, path in enumerate(p for p in paths if p != "/"):
        lim = _series(samples, path, "max")
        if any(lim):
            ax.step(t, [x / MIB if x else float("nan") for x in lim], where="post",
                    color=COLOURS[leaves.index(path) % len(COLOURS)] if path in leaves
                    else "black", linestyle="--", linewidth=1.4,
                    label=f"{path} memory.max")
        if i > 12:
            break
    ax.set_ylabel("charged (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)


def _draw_psi(ax: Any, samples: list[dict[str, Any]], res: str) -> None:
    t = [s["time"] for s in samples]
    paths = list(dict.fromkeys(p for s in samples for p in s["cgroups"]))
    # The machine's pressure ("/") and, when there are few, each leaf's.
    leaves = _leaves(paths)
    shown = leaves if len(leaves) <= 3 else []
    machine = (_psi(samples, "/", res, 0), _psi(samples, "/", res, 1))
    if not any(machine == (_psi(samples, p, res, 0), _psi(samples, p, res, 1))
               for p in shown):
        shown = ["/", *shown]  # the machine's own line, unless a leaf's is the same
    for i, path in enumerate(shown):
        colour = "black" if path == "/" else COLOURS[leaves.index(path) % len(COLOURS)]
        name = "machine" if path == "/" else path
        ax.plot(t, _psi(samples, path, res, 0), color=colour, linewidth=1.2 + (i == 0),
                label=f"{name} some")
        ax.plot(t, _psi(samples, path, res, 1), color=colour, linewidth=1.2 + (i == 0),
                linestyle=":", label=f"{name} full")
    if not any(v for path in shown for i in (0, 1) for v in _psi(samples, path, res, i)):
        ax.text(0.5, 0.5, f"no {res} pressure", transform=ax.transAxes, ha="center",
                va="center", color="grey")
    ax.set_ylabel(f"{res} PSI avg10 (%)")
    ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)


def _draw_aftermath(ax: Any, samples: list[dict[str, Any]], last_kill: float,
                    cgroups: set[str]) -> None:
    """Say in words what the victims' cgroups still hold after the last kill: page
    cache and shmem are not freed with their process (they stay charged to the cgroup
    until reclaimed)."""
    end = samples[-1]
    if end["time"] <= last_kill:
        return
    lines = []
    for path in _leaves(list(end["cgroups"])):
        if path not in cgroups:
            continue
        cg = end["cgroups"][path]
        if cg["usage"] > 0:
            lines.append(f"{path}: {cg['usage'] / MIB:.0f} MiB still charged "
                         f"({(cg['file'] or 0) / MIB:.0f} MiB page cache) at {end['time']:g}s")
    if lines:
        ax.text(0.98, 0.04, "after the kill:\n" + "\n".join(lines[:4]), ha="right",
                va="bottom", transform=ax.transAxes, fontsize=7.5,
                bbox={"boxstyle": "round", "fc": "lightyellow", "ec": "grey"})


def plot_timelines(timelines: Sequence[Timeline], path: str) -> None:
    """Write the timelines side by side to ``path`` (.png, .svg or .pdf).
    Raises ConfigError when matplotlib is missing or the name has another suffix."""
    check_suffix(path)
    plt = require()
    n = len(timelines)
    fig, axes = plt.subplots(3, n, figsize=(7.5 * n, 8.5), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1, 1]})
    for col, tl in enumerate(timelines):
        samples = tl.samples()
        top, mem, io = axes[0][col], axes[1][col], axes[2][col]
        _draw_usage(top, tl, samples)
        _draw_psi(mem, samples, "memory")
        _draw_psi(io, samples, "io")
        for ev in tl.events("psi"):
            ax = io if ev.get("resource") == "io" else mem
            ax.plot([ev["time"]], [ax.get_ylim()[1] * 0.97], marker="v", color="purple",
                    markersize=6, linestyle="none")
        for res, ax in (("memory", mem), ("io", io)):
            if any(ev.get("resource") == res for ev in tl.events("psi")):
                ax.plot([], [], marker="v", color="purple", linestyle="none",
                        label="PSI trigger fired")
                ax.legend(loc="upper right", fontsize=7, framealpha=0.85)
        kills = kills_of(tl)
        ymax = top.get_ylim()[1]
        for when, _, _ in kills:
            for ax in (top, mem, io):
                ax.axvline(when, color="red", linewidth=1.2, alpha=0.8)
        for k, (when, who, why) in enumerate(_one_label_per_oom(kills)):
            if k < 6:  # more labels than that cover the picture; the table has them all
                top.annotate(f"killed {who}\n{why} @ {when:.2f}s", xy=(when, ymax),
                             xytext=(4, -12 - 24 * k), textcoords="offset points",
                             fontsize=7.5, color="darkred", va="top",
                             bbox={"boxstyle": "round", "fc": "white", "ec": "red",
                                   "alpha": 0.9})
        if kills and samples:
            _draw_aftermath(top, samples, kills[-1][0],
                            {who.rsplit(" (", 1)[-1].rstrip(")") for _, who, _ in kills})
        title = f"{tl.label}: {tl.scenario}" if tl.scenario else tl.label
        top.set_title(title if len(title) < 70 else title[:67] + "...", fontsize=10)
        io.set_xlabel("time (s)")
        io.set_xlim(0, max(tl.duration, 1e-3))
        for ax in (top, mem, io):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        _save(fig, path, 90)
    finally:
        plt.close(fig)


def _group(kills: Sequence[tuple[float, str, bool]]) -> list[tuple[float, str, bool]]:
    """Kills at the same moment (one OOM, a group kill) under one label."""
    out: list[tuple[float, list[str], bool]] = []
    for when, who, bystander in sorted(kills):
        if out and when - out[-1][0] < 0.05:
            out[-1][1].append(who)
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] or bystander)
        else:
            out.append((when, [who], bystander))
    return [(w, ", ".join(n[:2]) + (f" +{len(n) - 2}" if len(n) > 2 else ""), b)
            for w, n, b in out]


#: Kills closer than this share of the time axis share a label ("a; b"): one label per
#: kill would be written over the last (a panel is about 6 inches for the whole run).
NEAR: Final = 0.12


def _near(kills: Sequence[tuple[float, str, bool]], gap: float
          ) -> list[tuple[float, str, bool]]:
    out: list[tuple[float, str, bool]] = []
    for when, who, bystander in kills:
        if out and when - out[-1][0] < gap:
            out[-1] = (out[-1][0], f"{out[-1][1]}; {who}", out[-1][2] or bystander)
        else:
            out.append((when, who, bystander))
    return out


def plot_kills(rows: Sequence[dict[str, Any]], path: str) -> None:
    """The verdicts of ``oomkit compare`` (its JSON rows): one panel per scenario, one
    lane per contender, the seeds of a contender side by side in its lane; a cross per
    kill, red for a culprit and orange for a bystander, labelled with the victims."""
    check_suffix(path)
    plt = require()
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    labels = list(dict.fromkeys(r["contender"] for r in rows))
    seeds = sorted({int(r["seed"]) for r in rows})
    ncol = 2 if len(scenarios) > 1 else 1
    nrow = -(-len(scenarios) // ncol)
    lane_h = 0.42 * len(labels) + 0.9
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.2 * ncol, lane_h * nrow + 0.6),
                             squeeze=False)
    spread = 0.5 / max(1, len(seeds))
    for k, scen in enumerate(scenarios):
        ax = axes[k // ncol][k % ncol]
        duration = max(float(r["duration"]) for r in rows if r["scenario"] == scen)
        for r in rows:
            if r["scenario"] != scen:
                continue
            y = labels.index(r["contender"]) + (seeds.index(int(r["seed"]))
                                                - (len(seeds) - 1) / 2) * spread
            ax.plot([0, duration], [y, y], color="lightgrey", linewidth=2, zorder=1)
            if "error" in r:
                ax.text(0, y, " error: " + r["error"][:50], va="center", fontsize=7,
                        color="grey")
                continue
            victims = [(float(v["time"]), str(v["name"]), bool(v["bystander"]))
                       for v in r.get("victims", ())]
            if not victims:
                ax.plot([duration], [y], marker="o", color="green", markersize=4)
            for when, _who, bystander in _group(victims):
                ax.plot([when], [y], marker="X", markersize=7, zorder=3,
                        color="darkorange" if bystander else "red")
            if int(r["seed"]) == seeds[0]:
                for when, who, bystander in _near(_group(victims), duration * NEAR):
                    ax.annotate(who, (when, y), xytext=(4, 2), textcoords="offset points",
                                fontsize=7, color="darkorange" if bystander else "darkred")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlim(0, duration * 1.02)
        ax.set_title(Path(scen).stem, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    for k in range(len(scenarios), nrow * ncol):
        axes[k // ncol][k % ncol].set_visible(False)
    note = (f"x: a kill (red: the culprit; orange: a bystander); o: no kill; "
            f"{len(seeds)} seed(s) per lane, labels from seed {seeds[0]}; time in s")
    fig.suptitle("who was killed when, per scenario and policy\n" + note, fontsize=9)
    fig.tight_layout()
    try:
        _save(fig, path, 80)
    finally:
        plt.close(fig)
