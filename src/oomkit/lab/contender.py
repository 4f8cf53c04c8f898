"""A contender: one set of policies the lab runs a scenario under.

A contender comes from ``--policy TEXT`` (comma-separated items, each
``[oom:|psi:]SPEC[@CGROUP]``; without a prefix the kind is the class's own; ``kernel``
alone is the kernel's killer with no handler), from ``--config FILE`` (the daemon's
``[[oom]]`` and ``[[psi]]`` entries) or from ``--preset NAME``
(``packaging/presets/NAME.toml``, a config file). :func:`attach` puts it on a Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from oomkit.errors import AttachError, ConfigError
from oomkit.ops import PsiOps
from oomkit.policy_loader import load_oom, load_psi, resolve, split_at
from oomkit.runtime import Runtime

#: Where --preset looks: the presets ship inside the package (oomkit/data/presets; the
#: repository's packaging/presets is a link to them), so an installed oomkit has them too.
PRESET_DIR: Final = Path(__file__).resolve().parents[1] / "data" / "presets"
KERNEL_ONLY: Final = "kernel"
#: The least handler budget in compare and replay (wall seconds). The daemon's budgets
#: (500 ms by default) are for a daemon on an idle core; compare runs one simulator per
#: core beside whatever else the machine runs, where a call can take a second because the
#: host is busy (it did, on a 2-core machine with load 6), and an overrun counts as no
#: progress: the table would depend on the host's load. Simulated time stands still during
#: a call, so a longer budget changes no simulated outcome; a policy that hangs is still
#: cut off, after this long.
LAB_BUDGET_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Contender:
    """``label`` names it in tables and plots; ``oom``/``psi`` are SPEC[@CGROUP] texts;
    ``config`` a daemon config file whose policies are attached too."""

    label: str
    oom: tuple[str, ...] = ()
    psi: tuple[str, ...] = ()
    config: str | None = None


def _is_psi(spec: str) -> bool:
    obj = resolve(spec)
    cls = obj if isinstance(obj, type) else type(obj)
    return issubclass(cls, PsiOps)


def from_policy_text(text: str) -> Contender:
    """``"largest_leaf@/app,psi:thrash_guard"`` -> Contender. Raises ConfigError."""
    if text.strip() == KERNEL_ONLY:
        return Contender(KERNEL_ONLY)
    oom: list[str] = []
    psi: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(f"--policy {text!r}: empty item")
        if item.startswith("psi:"):
            psi.append(item[4:])
        elif item.startswith("oom:"):
            oom.append(item[4:])
        elif _is_psi(split_at(item).spec):
            psi.append(item)
        else:
            oom.append(item)
    return Contender(text, tuple(oom), tuple(psi))


def from_config(path: str, label: str | None = None) -> Contender:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    return Contender(label or Path(path).stem, config=path)


def from_preset(name: str) -> Contender:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        have = sorted(p.stem for p in PRESET_DIR.glob("*.toml")) if PRESET_DIR.is_dir() else []
        raise ConfigError(f"--preset {name}: no {path} (presets: {', '.join(have) or 'none'})")
    return Contender(name, config=str(path))


def attach(rt: Runtime, contender: Contender) -> list[str]:
    """Attach every policy of ``contender``; returns notes on what was left out (a
    cgroup-scoped handler whose cgroup the scenario does not have). Raises ConfigError."""
    notes: list[str] = []
    if contender.config is not None:
        from oomkit.daemon.config import load_config, load_policies, resolve_cgroups

        # As the daemon runs it (run --sim does the same): the first cgroup alternative the
        # scenario has, and the [daemon] rules for declared OOMs.
        cfg = resolve_cgroups(load_config(contender.config),
                              lambda cg: rt.kernel.mem_cgroup(cg) is not None)
        loaded = load_policies(cfg, secure=False)
        rt.budget_s = max(cfg.daemon.budget_s, LAB_BUDGET_S)
        rt.max_failures = cfg.daemon.max_failures
        rt.post_action_delay_s = cfg.daemon.post_action_delay_s
        rt.min_victim = cfg.daemon.min_victim
        for entry, ops in loaded.oom:
            if entry.cgroup is not None and rt.kernel.mem_cgroup(entry.cgroup) is None:
                notes.append(f"{entry.policy}@{entry.cgroup}: no such cgroup here")
                continue
            budget: float | bool = (max(entry.budget_s, LAB_BUDGET_S)
                                    if entry.budget_s is not None else True)
            rt.attach_oom(ops, entry.cgroup, budget_s=budget)
        for pentry, pops in loaded.psi:
            budget = max(pentry.budget_s, LAB_BUDGET_S) if pentry.budget_s is not None else True
            rt.attach_psi(pops, budget_s=budget)
    for text in contender.oom:
        ps = split_at(text)
        try:
            rt.attach_oom(load_oom(ps.spec), ps.cgroup)
        except AttachError as exc:
            if ps.cgroup is not None and rt.kernel.mem_cgroup(ps.cgroup) is None:
                notes.append(f"{text}: no such cgroup here")
                continue
            raise ConfigError(f"{text}: {exc}") from None
    for spec in contender.psi:
        try:
            rt.attach_psi(load_psi(spec))
        except AttachError as exc:
            raise ConfigError(f"psi:{spec}: {exc}") from None
    return notes
