"""The simulator's scenario file (SPEC section 6), parsed strictly.

Every error is a ConfigError whose one line names the file, the line when it can be found,
the entry (``process "cg5"``, ``cgroup[2]``) and the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from oomkit.errors import ConfigError, unknown_key
from oomkit.kernel.base import OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN
from oomkit.tomlpos import TomlPositions, load_toml, read_toml
from oomkit.units import (
    int_between,
    parse_cgroup_path,
    parse_duration_ns,
    parse_file_path,
    parse_limit,
    parse_rate,
    parse_size,
    shown,
)

T = TypeVar("T")

KINDS = ("anon", "file", "shmem")
CGROUP_KEYS = {
    "memory.max": "memory_max",
    "memory.high": "memory_high",
    "memory.low": "memory_low",
    "memory.min": "memory_min",
    "memory.swap.max": "swap_max",
    "memory.oom.group": "oom_group",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One program step. Fields a step kind does not use stay at their defaults."""

    op: str  # alloc | free | touch | work | sleep | exit
    kind: str = "anon"
    size: int = 0
    rate: int | None = None  # bytes per second
    path: str | None = None
    duration_ns: int | None = None
    mapped: bool = False  # file pages mapped MAP_SHARED (count in file_mapped and rss)
    pattern: str = "random"  # touch: "random" or "sequential" (passes in order)
    write: bool = False  # alloc of file pages by write(): dirty until written back
    # alloc: ``rate`` is a wall-clock pace (a program that sleeps when ahead of it):
    # behind it after a stall, the task allocates at machine.alloc_rate until caught up.
    paced: bool = False


@dataclass(frozen=True, slots=True)
class MachineSpec:
    memory: int = 1 << 30
    swap: int = 0
    duration_ns: int = 20_000_000_000
    seed: int = 1
    tick_ns: int = 10_000_000
    # How long the kernel needs to tear down a killed task (oom_reaper and exit).
    exit_latency_ns: int = 10_000_000
    # Cost of bringing one evicted 4K page back (a major fault from disk or swap).
    refault_ns: int = 100_000
    # How fast a process touches memory it already has (memset speed, per byte).
    touch_rate: int = 4 << 30
    # Default allocation speed when a step gives no rate.
    alloc_rate: int = 2 << 30
    # CPU time a miss costs besides its IO (page allocation, charging, the fault or
    # read path): busy time, not a stall.
    miss_cpu_ns: int = 0
    # The time a refault that stalls on memory (a restore, see refault_stall) spends
    # inside psi_memstall_enter() besides its IO wait: submitting the read and waiting
    # for a CPU once it completed (folio_wait_bit_common() holds the memstall until the
    # task runs again). None: all of miss_cpu (the model before it was measured).
    restore_cpu_ns: int | None = None
    # Restores come in clumps (docs/sim-vs-kernel.md, "bursty stall"): the share of
    # refaults that stall on memory is scaled, per restore_burst_period, by a seeded
    # lognormal factor of mean 1 and this coefficient of variation (0: steady).
    restore_burst_cv: float = 0.0
    restore_burst_period_ns: int = 2_000_000_000
    # Sequential reads come in readahead batches: one refault_ns per batch, plus the
    # transfer at read_bandwidth (bytes per second).
    readahead: int = 128 << 10
    read_bandwidth: int = 1 << 30
    # Direct reclaim, counted as a memory stall: per 4K page of small folios, and per 4K
    # page of the large folios sequential readahead brings in.
    reclaim_ns: int = 1_000
    reclaim_large_ns: int = 100
    # Memory stall per anonymous 4K page reclaim writes to swap (add_to_swap(), unmap,
    # pageout() to the swap device, all inside the reclaim's memstall). None: reclaim_ns.
    swap_out_ns: int | None = None
    # Anonymous pages reclaim scans per page it swaps out (1.0: each one it looks at
    # goes). The multi-gen LRU's aging and look-around look at anon folios they keep
    # (referenced or young ones, moved up a generation): measured, 1.5-2 on 6.12 and 7.3.
    # The memory stall of those scans is inside swap_out_ns, measured per page stolen.
    anon_scan_ratio: float = 1.0
    # File pages reclaim scans per clean page it reclaims from a cgroup that has dirty
    # page cache (1.0: dirty pages are met once each, as meet_dirty() counts them). On
    # 7.x's multi-gen LRU reclaim isolates dirty file folios and puts them back a
    # generation or two up (lru_gen_add_folio(): PG_reclaim and dirty goes to
    # max_seq - 1), so it meets them again within a generation turnover while the
    # writer keeps adding new dirty folios to the oldest generations: measured on a
    # writer that is not a row of the fidelity suite.
    dirty_scan_ratio: float = 1.0
    # Which refaults are memory stalls. "all": every miss, as if the working set would
    # fit (the simulator's original model, and the default). "workingset": the kernel's
    # rule, only refaults its workingset detection flags; cold misses and streaming
    # refaults are IO stalls only (measured: docs/sim-vs-kernel.md).
    refault_stall: str = "workingset"
    # Without CAP_SYS_RESOURCE (Linux 6.5+) triggers need windows that are multiples of
    # 2 s and are evaluated by the averaging work, once per PSI period, instead of by
    # psimon every window/10.
    cap_sys_resource: bool = True
    # CPUs: processes are placed on their run queues and PSI is kept per CPU and
    # aggregated by non-idle time, as kernel/sched/psi.c does (see sched.py).
    cpus: int = 4
    # The page reclaim's LRU: "classic" (active/inactive lists) or "mglru" (multi-gen
    # LRU, Debian's 7.x default): which refaults are recent, and which count activations.
    lru: str = "classic"
    # Writeback (writeback.py): the device's write rate in bytes a second, and
    # vm.dirty_ratio / vm.dirty_background_ratio in percent of dirtyable memory.
    write_bandwidth: int = 200 << 20
    dirty_ratio: int = 20
    dirty_background_ratio: int = 10
    # cgroup writeback (v2): a memcg with a memory.max is a dirty domain of its own.
    # false: v1, where only the machine's dirty limits throttle writers.
    cgroup_writeback: bool = True


@dataclass(frozen=True, slots=True)
class CgroupSpec:
    path: str
    memory_max: int | None = None
    memory_high: int | None = None
    memory_low: int = 0
    memory_min: int = 0
    swap_max: int | None = None
    oom_group: bool = False
    create_ns: int = 0
    remove_ns: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    cgroup: str
    program: tuple[Step, ...]
    oom_score_adj: int = 0
    start_ns: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    machine: MachineSpec
    cgroups: tuple[CgroupSpec, ...] = ()
    processes: tuple[ProcessSpec, ...] = ()
    name: str = ""
    description: str = ""
    source: str = "<scenario>"
    policies: tuple[str, ...] = field(default=())
    # The line of each entry of ``policies`` (None: not found), so that a policy that
    # fails to load is reported at its place in the file.
    policy_lines: tuple[int | None, ...] = field(default=(), compare=False)

    def policy_error(self, n: int, msg: str) -> ConfigError:
        """A ConfigError for entry ``n`` of ``policies``: "FILE:LINE: key 'policies[n]': ..."."""
        line = self.policy_lines[n] if n < len(self.policy_lines) else None
        loc = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{loc}: key 'policies[{n}]': {msg}")


Index = int | tuple[int | str, ...] | None


class _Where:
    """Names the file and line of a table entry and key, for error messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self._pos: TomlPositions | None = None

    def error(self, table: str, index: Index, entry: str, key: str | None, msg: str
              ) -> ConfigError:
        if self._pos is None:
            self._pos = TomlPositions(self.text)  # only on the error path
        parts: list[int | str] = [table] if table else []
        if isinstance(index, tuple):
            parts.extend(index)
        elif index is not None:
            parts.append(index)
        if key:
            parts.append(key)
        line = self._pos.line(*parts)
        loc = f"{self.path}:{line}" if line else self.path
        what = f"{entry}, key '{key}'" if key else entry
        return ConfigError(f"{loc}: {what}: {msg}")


def _get(raw: dict[str, Any], key: str, parse: Callable[[object], T], where: _Where,
         table: str, index: Index, entry: str, default: T) -> T:
    if key not in raw:
        return default
    try:
        return parse(raw[key])
    except (ValueError, TypeError) as exc:
        raise where.error(table, index, entry, key, str(exc)) from None


def _str(v: object) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {shown(v)}")
    return v


def _text(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {shown(v)}")
    return v


_cgroup_path = parse_cgroup_path


def _refault_stall(v: object) -> str:
    if v not in ("all", "workingset"):
        raise ValueError(f"refault_stall is all or workingset, got {shown(v)}")
    return str(v)


def _lru(v: object) -> str:
    if v not in ("classic", "mglru"):
        raise ValueError(f"lru is classic or mglru, got {v!r}")
    return str(v)


def _pattern(v: object) -> str:
    if v not in ("random", "sequential"):
        raise ValueError(f"pattern is random or sequential, got {shown(v)}")
    return str(v)


def _cv(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10:
        raise ValueError(f"a coefficient of variation is a number from 0 to 10, got {shown(v)}")
    return float(v)


def _scan_ratio(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 100:
        raise ValueError(f"pages scanned per page reclaimed is a number from 1 to 100, "
                         f"got {shown(v)}")
    return float(v)


def _bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1, "0", "1"):
        return v in (1, "1")
    raise ValueError(f"expected true or false, got {shown(v)}")


def _tables(data: dict[str, Any], name: str, where: _Where, entry: str
            ) -> list[dict[str, Any]]:
    """The entries of an array of tables ([[cgroup]]); anything else is an error."""
    raw = data.get(name, [])
    if not isinstance(raw, list):
        raise where.error("", None, "top level", name, f"entries are written [[{name}]]")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise where.error(name, i, f"{entry}[{i + 1}]", None,
                              f"entries are tables, written [[{name}]], got {shown(item)}")
    return raw


def _check_keys(raw: dict[str, Any], allowed: set[str], where: _Where, table: str,
                index: Index, entry: str) -> None:
    for key in raw:
        if key not in allowed:
            raise where.error(table, index, entry, key, unknown_key(key, allowed))


_STEP_KEYS = {
    "alloc": {"op", "kind", "size", "rate", "path", "mapped", "write", "paced"},
    "free": {"op", "kind", "size", "path"},
    "touch": {"op", "kind", "size", "path", "duration", "pattern"},
    "work": {"op", "duration"},
    "sleep": {"op", "duration"},
    "exit": {"op"},
}


def _step(raw: object, where: _Where, index: int, entry: str, n: int) -> Step:
    label = f"{entry}, program step {n + 1}"
    at: Index = (index, "program", n)
    if not isinstance(raw, dict):
        raise where.error("process", at, label, "program", "a step is a table like "
                          "{ op = \"alloc\", kind = \"anon\", size = \"10M\" }")
    op = raw.get("op")
    if not isinstance(op, str) or op not in _STEP_KEYS:
        raise where.error("process", at, label, "op",
                          f"unknown op {shown(op)} (known: {', '.join(_STEP_KEYS)})")
    _check_keys(raw, _STEP_KEYS[op], where, "process", at, f"{label} ({op})")

    def g(key: str, parse: Callable[[object], T], default: T) -> T:
        return _get(raw, key, parse, where, "process", at, f"{label} ({op})", default)

    def kind(v: object) -> str:
        allowed = KINDS
        if v not in allowed:
            raise ValueError(f"kind is one of {', '.join(allowed)}, got {shown(v)}")
        return str(v)

    if op in ("alloc", "free", "touch"):
        k = g("kind", kind, "anon")
        size = g("size", parse_size, -1)
        if size < 0:
            raise where.error("process", at, f"{label} ({op})", "size", "is required")
        path = g("path", parse_file_path, None)
        if op == "alloc" and k == "shmem" and path is not None and not path.startswith("/"):
            raise where.error("process", at, f"{label} ({op})", "path", "must be absolute")
        if op == "touch" and k == "shmem" and (path is None or not path.startswith("/")):
            raise where.error("process", at, f"{label} ({op})", "path",
                              "a touch of shmem names the tmpfs file (an absolute path)")
        write = g("write", _bool, False) if op == "alloc" else False
        if write and (k != "file" or g("mapped", _bool, False)):
            raise where.error("process", at, f"{label} ({op})", "write",
                              "only page cache written by write() (kind file, not mapped)")
        return Step(op, k, size, g("rate", parse_rate, None) if op == "alloc" else None, path,
                    g("duration", parse_duration_ns, None) if op == "touch" else None,
                    g("mapped", _bool, False) if op == "alloc" else False,
                    g("pattern", _pattern, "random") if op == "touch" else "random", write,
                    g("paced", _bool, False) if op == "alloc" else False)
    if op in ("work", "sleep"):
        dur = g("duration", parse_duration_ns, None)
        if op == "work" and dur is None:
            raise where.error("process", at, f"{label} (work)", "duration", "is required")
        return Step(op, duration_ns=dur)
    return Step("exit")


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    where = _Where(path, text)
    data = load_toml(text, path)
    _check_keys(data, {"machine", "cgroup", "process", "name", "description", "policies"},
                where, "", None, "top level")
    mraw = data.get("machine", {})
    if not isinstance(mraw, dict):
        raise where.error("", None, "top level", "machine", "must be a table, written [machine]")
    mkeys = {"memory", "swap", "duration", "seed", "tick", "exit_latency", "refault_latency",
             "touch_rate", "alloc_rate", "miss_cpu", "readahead", "read_bandwidth", "reclaim_cost",
             "reclaim_cost_large", "swap_out_cost", "anon_scan_ratio", "dirty_scan_ratio",
             "cap_sys_resource",
             "refault_stall", "cpus", "lru",
             "restore_cpu", "restore_burst_cv", "restore_burst_period",
             "write_bandwidth", "dirty_ratio", "dirty_background_ratio",
             "cgroup_writeback"}
    _check_keys(mraw, mkeys, where, "machine", None, "[machine]")

    def mg(key: str, parse: Callable[[object], T], default: T) -> T:
        return _get(mraw, key, parse, where, "machine", None, "[machine]", default)

    d = MachineSpec()
    machine = MachineSpec(
        memory=mg("memory", parse_size, d.memory),
        swap=mg("swap", parse_size, d.swap),
        duration_ns=mg("duration", parse_duration_ns, d.duration_ns),
        seed=mg("seed", int_between(0, 2**63), d.seed),
        tick_ns=mg("tick", parse_duration_ns, d.tick_ns),
        exit_latency_ns=mg("exit_latency", parse_duration_ns, d.exit_latency_ns),
        refault_ns=mg("refault_latency", parse_duration_ns, d.refault_ns),
        touch_rate=mg("touch_rate", parse_rate, d.touch_rate),
        alloc_rate=mg("alloc_rate", parse_rate, d.alloc_rate),
        miss_cpu_ns=mg("miss_cpu", parse_duration_ns, d.miss_cpu_ns),
        restore_cpu_ns=mg("restore_cpu", parse_duration_ns, d.restore_cpu_ns),
        restore_burst_cv=mg("restore_burst_cv", _cv, d.restore_burst_cv),
        restore_burst_period_ns=mg("restore_burst_period", parse_duration_ns,
                                   d.restore_burst_period_ns),
        readahead=mg("readahead", parse_size, d.readahead),
        read_bandwidth=mg("read_bandwidth", parse_rate, d.read_bandwidth),
        reclaim_ns=mg("reclaim_cost", parse_duration_ns, d.reclaim_ns),
        reclaim_large_ns=mg("reclaim_cost_large", parse_duration_ns, d.reclaim_large_ns),
        swap_out_ns=mg("swap_out_cost", parse_duration_ns, d.swap_out_ns),
        anon_scan_ratio=mg("anon_scan_ratio", _scan_ratio, d.anon_scan_ratio),
        dirty_scan_ratio=mg("dirty_scan_ratio", _scan_ratio, d.dirty_scan_ratio),
        cap_sys_resource=mg("cap_sys_resource", _bool, d.cap_sys_resource),
        refault_stall=mg("refault_stall", _refault_stall, d.refault_stall),
        cpus=mg("cpus", int_between(1, 4096), d.cpus),
        lru=mg("lru", _lru, d.lru),
        write_bandwidth=mg("write_bandwidth", parse_rate, d.write_bandwidth),
        dirty_ratio=mg("dirty_ratio", int_between(1, 100), d.dirty_ratio),
        dirty_background_ratio=mg("dirty_background_ratio", int_between(0, 100),
                                  d.dirty_background_ratio),
        cgroup_writeback=mg("cgroup_writeback", _bool, d.cgroup_writeback),
    )
    if machine.memory < (1 << 20):
        raise where.error("machine", None, "[machine]", "memory", "must be at least 1M")
    if not 100_000 <= machine.tick_ns <= 100_000_000:
        raise where.error("machine", None, "[machine]", "tick", "must be 100us..100ms")
    if machine.readahead < 4096:
        raise where.error("machine", None, "[machine]", "readahead", "must be at least 4K")

    cgroups: list[CgroupSpec] = []
    craw_list = _tables(data, "cgroup", where, "cgroup")
    seen: set[str] = set()
    for i, craw in enumerate(craw_list):
        entry = f"cgroup[{i + 1}]"
        _check_keys(craw, {"path", "create", "remove", *CGROUP_KEYS}, where, "cgroup", i, entry)
        cpath = _get(craw, "path", _cgroup_path, where, "cgroup", i, entry, "")
        if not cpath:
            raise where.error("cgroup", i, entry, "path", "is required")
        entry = f'cgroup "{cpath}"'
        if cpath in seen:
            raise where.error("cgroup", i, entry, "path", "is listed twice")
        seen.add(cpath)

        def cg(key: str, parse: Callable[[object], T], default: T,
               _c: dict[str, Any] = craw, _i: int = i, _e: str = entry) -> T:
            return _get(_c, key, parse, where, "cgroup", _i, _e, default)

        zero: int | None = 0
        low = cg("memory.low", parse_limit, zero)
        mn = cg("memory.min", parse_limit, zero)
        cgroups.append(CgroupSpec(
            path=cpath,
            memory_max=cg("memory.max", parse_limit, None),
            memory_high=cg("memory.high", parse_limit, None),
            memory_low=low if low is not None else machine.memory,
            memory_min=mn if mn is not None else machine.memory,
            swap_max=cg("memory.swap.max", parse_limit, None),
            oom_group=cg("memory.oom.group", _bool, False),
            create_ns=cg("create", parse_duration_ns, 0),
            remove_ns=cg("remove", parse_duration_ns, None),
        ))

    processes: list[ProcessSpec] = []
    praw_list = _tables(data, "process", where, "process")
    names: set[str] = set()
    for i, praw in enumerate(praw_list):
        entry = f"process[{i + 1}]"
        _check_keys(praw, {"name", "cgroup", "oom_score_adj", "start", "program"},
                    where, "process", i, entry)
        name = _get(praw, "name", _str, where, "process", i, entry, "")
        if not name:
            raise where.error("process", i, entry, "name", "is required")
        entry = f'process "{name}"'
        if name in names:
            raise where.error("process", i, entry, "name", "is used twice")
        names.add(name)
        prog_raw = praw.get("program")
        if not isinstance(prog_raw, list) or not prog_raw:
            raise where.error("process", i, entry, "program", "is required: a list of steps")
        processes.append(ProcessSpec(
            name=name,
            cgroup=_get(praw, "cgroup", _cgroup_path, where, "process", i, entry, "/"),
            oom_score_adj=_get(praw, "oom_score_adj", int_between(OOM_SCORE_ADJ_MIN,
                               OOM_SCORE_ADJ_MAX), where, "process", i, entry, 0),
            start_ns=_get(praw, "start", parse_duration_ns, where, "process", i, entry, 0),
            program=tuple(_step(s, where, i, entry, n) for n, s in enumerate(prog_raw)),
        ))
    _check_programs(processes, cgroups, where)
    pol = data.get("policies", [])
    if not isinstance(pol, list):
        raise where.error("", None, "top level", "policies",
                          "is a list of policy specs (strings)")
    for n, spec in enumerate(pol):
        if not isinstance(spec, str) or not spec.strip() or not spec.isprintable():
            raise where.error("policies", n, f"policies[{n}]", None,
                              f"expected a policy spec like \"largest_leaf@/a\", got "
                              f"{shown(spec)}")
    lines: tuple[int | None, ...] = ()
    if pol:
        pos = TomlPositions(text)
        lines = tuple(pos.line("policies", n) for n in range(len(pol)))
    top = "top level"
    return Scenario(machine, tuple(cgroups), tuple(processes),
                    _get(data, "name", _text, where, "", None, top, ""),
                    _get(data, "description", _text, where, "", None, top, ""), path,
                    tuple(pol), lines)


def _check_programs(processes: list[ProcessSpec], cgroups: list[CgroupSpec],
                    where: _Where) -> None:
    """What the steps alone cannot tell: a touch of anonymous memory the process has not
    allocated (the simulator would take it as resident) or of a tmpfs file no step
    writes, a free of a file that no step
    of the scenario brings into memory (it would free nothing), a process that starts in
    a cgroup after the scenario removes it (it would re-create it without its limits)."""
    known_files = {s.path for p in processes for s in p.program
                   if s.op in ("alloc", "touch") and s.kind != "anon" and s.path}
    tmpfs_files = {s.path for p in processes for s in p.program
                   if s.op == "alloc" and s.kind == "shmem" and s.path}
    removed = {c.path: c.remove_ns for c in cgroups if c.remove_ns is not None}
    for i, proc in enumerate(processes):
        entry = f'process "{proc.name}"'
        for path, at in removed.items():
            inside = proc.cgroup == path or proc.cgroup.startswith(path + "/")
            if inside and proc.start_ns >= at:
                raise where.error("process", i, entry, "start",
                                  f"starts at {proc.start_ns / 1e9:g}s in {proc.cgroup}, but "
                                  f"cgroup {path} is removed at {at / 1e9:g}s")
        anon = 0
        for n, step in enumerate(proc.program):
            label = f"{entry}, program step {n + 1} ({step.op})"
            at_step: Index = (i, "program", n)
            if step.kind == "anon" and step.op in ("alloc", "free", "touch"):
                size = (step.size + 4095) // 4096 * 4096
                if step.op == "alloc":
                    anon += size
                elif step.op == "free":
                    anon = max(0, anon - size)
                elif size > anon:
                    have = f"only {anon >> 20}M" if anon else "none"
                    raise where.error("process", at_step, label, "size",
                                      f"touches {step.size >> 20}M of anonymous memory but "
                                      f"has allocated {have} by then (alloc it first)")
            if step.op == "touch" and step.kind == "shmem" and step.path not in tmpfs_files:
                raise where.error("process", at_step, label, "path",
                                  f"no step of the scenario writes the tmpfs file {step.path}")
            if step.op == "free" and step.kind != "anon" and not (
                    step.kind == "shmem" and step.path is None):
                if step.path is None:
                    raise where.error("process", at_step, label, "path",
                                      f"is required to free {step.kind} pages (the file's path)")
                if step.path not in known_files:
                    raise where.error("process", at_step, label, "path",
                                      f"no step of the scenario allocates or reads {step.path}")


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(read_toml(str(path), "scenario"), str(path))
