"""The daemon's config file (TOML), parsed strictly; see docs/daemon.md.

Two steps, both needed before a config may replace the running one:

1. :func:`parse_config` checks every key and value and builds a :class:`Config`;
2. :func:`load_policies` imports and instantiates every policy it names.

Every error is one :class:`oomkit.ConfigError` line naming the file, the line and the key::

    /etc/oomkit/oomkit.toml:14: [[oom]] 2, key 'budget': expected a duration like 500ms ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar

from oomkit.errors import ConfigError, unknown_key
from oomkit.lab.recorder import RecorderSettings
from oomkit.ops import OomOps, PsiOps
from oomkit.policy_loader import BadArgument, load_oom, load_psi
from oomkit.runtime import DEFAULT_BUDGET_S
from oomkit.tomlpos import TomlPositions, load_toml, read_toml
from oomkit.units import (
    check_budget_s,
    int_between,
    parse_budget_s,
    parse_cgroup_path,
    parse_duration_ns,
    parse_rate,
    parse_size,
    shown,
)

T = TypeVar("T")

DEFAULT_CONFIG: Final = "/etc/oomkit/oomkit.toml"


def recommended_config() -> str:
    """The recommended config shipped with oomkit (a copy of packaging/oomkit.toml): what
    `oomkit run` uses when given nothing and DEFAULT_CONFIG does not exist."""
    from importlib.resources import files

    return str(files("oomkit") / "data" / "oomkit.toml")
#: ``--config preset:NAME`` names a preset shipped with oomkit (data/presets/NAME.toml).
PRESET_PREFIX: Final = "preset:"


def presets() -> dict[str, str]:
    """{name: path} of the presets shipped with oomkit (other daemons' rules, one file
    each: packaging/presets/ in a checkout, oomkit/data/presets/ in the wheel)."""
    from importlib.resources import files

    folder = files("oomkit") / "data" / "presets"
    return {p.name[:-len(".toml")]: str(p) for p in sorted(folder.iterdir(), key=str)
            if p.name.endswith(".toml")}


def config_file(arg: str) -> str:
    """A config argument as a path: ``preset:NAME`` is that shipped preset's file (QA G8:
    the wheel ships them where no user would look); anything else is a path as given.
    Raises ConfigError for an unknown preset, naming the known ones."""
    if not arg.startswith(PRESET_PREFIX):
        return arg
    name = arg[len(PRESET_PREFIX):]
    known = presets()
    if name not in known:
        raise ConfigError(f"unknown preset {name!r} (presets: "
                          f"{', '.join(PRESET_PREFIX + n for n in known) or 'none'})")
    return known[name]


DEFAULT_EVENT_LOG: Final = "/var/log/oomkit/events.jsonl"
DEFAULT_STATUS_FILE: Final = "/run/oomkit/status.json"
DEFAULT_STATE_FILE: Final = "/run/oomkit/restore.json"
DEFAULT_LISTEN: Final = "127.0.0.1:9727"
DEFAULT_PORT: Final = 9727

_TOP_KEYS: Final = frozenset({"daemon", "guard", "metrics", "recorder", "oom", "psi", "system"})
_DAEMON_KEYS: Final = frozenset({
    "dry_run", "budget", "max_failures", "event_log", "event_log_max", "event_log_keep",
    "status_file", "state_file", "cgroup_root", "mlock", "gc_interval", "post_action_delay",
    "min_victim",
})
_GUARD_KEYS: Final = frozenset({"margin"})
_SYSTEM_KEYS: Final = frozenset({"min_available", "min_swap_free", "lead", "max_fill_rate"})
_METRICS_KEYS: Final = frozenset({"listen"})
_RECORDER_KEYS: Final = frozenset({"size", "interval", "pressure_interval", "procs",
                                   "cgroups"})
_OOM_KEYS: Final = frozenset({"policy", "cgroup", "args", "budget"})
_PSI_KEYS: Final = frozenset({"policy", "args", "budget"})

#: Settings a SIGHUP cannot change: they shape the kernel backend, which lives as long as
#: the process (a dry run never arms a guard; the guard band and restore journal are set up
#: once). Changing them needs a restart.
RESTART_ONLY: Final = ("daemon.dry_run", "daemon.state_file", "daemon.cgroup_root",
                       "daemon.mlock", "guard.margin", "system")


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class GuardMargin:
    """The v2 guard band: memory.high = memory.max minus this (a share, or bytes)."""

    percent: float | None = 5.0
    nbytes: int | None = None

    def of(self, memory_max: int) -> int:
        if self.nbytes is not None:
            return self.nbytes
        return int(memory_max * (self.percent or 0.0) / 100)


@dataclass(frozen=True, slots=True)
class SystemSettings:
    """The system-wide MemAvailable watch (oomkit.kernel.linux.memwatch). Shares (a float
    in [0, 1)) are of MemTotal / SwapTotal; ints are bytes."""

    min_available: float | int = 0.05
    min_swap_free: float | int = 0.10
    lead_s: float = 0.25
    max_fill_rate: int = 6000 << 20  # bytes/s: earlyoom's figure (main.c sleep_time_ms)


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    dry_run: bool = False
    budget_s: float = DEFAULT_BUDGET_S
    max_failures: int = 3
    event_log: str = DEFAULT_EVENT_LOG
    event_log_max: int = 10 << 20
    event_log_keep: int = 5
    status_file: str = DEFAULT_STATUS_FILE  # "" = none
    state_file: str = DEFAULT_STATE_FILE
    cgroup_root: str = ""  # "": the memory controller's mount (v2 preferred)
    mlock: bool = True
    gc_interval_s: float = 60.0
    post_action_delay_s: float = 2.0  # declared OOMs wait this long after victims exit
    min_victim: int = 0  # declared OOMs: the default killer spares tasks under this (bytes)


@dataclass(frozen=True, slots=True)
class OomEntry:
    """One ``[[oom]]`` table: an OomOps for a cgroup (None: system-wide)."""

    policy: str
    cgroup: str | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    budget_s: float | None = None  # None: the daemon's budget
    index: int = 0
    line: int | None = None
    origin: str = ""  # "--oom-policy SPEC" for one given on the command line
    # ``cgroup = ["/kubepods.slice", "/kubepods"]``: the paths after the first, for
    # :func:`resolve_cgroups` to try in order (one config for both kubelet cgroup drivers).
    alternatives: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.origin or f"[[oom]] {self.index + 1}"

    @property
    def slot(self) -> str:
        return self.cgroup or "system-wide"


@dataclass(frozen=True, slots=True)
class PsiEntry:
    """One ``[[psi]]`` table: a PsiOps."""

    policy: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    budget_s: float | None = None
    index: int = 0
    line: int | None = None
    origin: str = ""  # "--psi-policy SPEC" for one given on the command line

    @property
    def label(self) -> str:
        return self.origin or f"[[psi]] {self.index + 1}"


@dataclass(frozen=True, slots=True)
class Config:
    path: str = "<defaults>"
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    guard: GuardMargin = field(default_factory=GuardMargin)
    metrics: Listen | None = field(default_factory=lambda: Listen("127.0.0.1", DEFAULT_PORT))
    oom: tuple[OomEntry, ...] = ()
    psi: tuple[PsiEntry, ...] = ()
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    system: SystemSettings = field(default_factory=SystemSettings)
    positions: TomlPositions | None = field(default=None, compare=False, repr=False)

    def error(self, path: tuple[str | int, ...], msg: str) -> ConfigError:
        """A ConfigError naming this file, the line of ``path`` and the key."""
        return _error(self.path, self.positions, path, msg)

    def restart_only_changes(self, new: Config) -> list[str]:
        """The keys of RESTART_ONLY whose value differs in ``new``."""
        old_d, new_d = self.daemon, new.daemon
        changed = []
        pairs = {
            "daemon.dry_run": (old_d.dry_run, new_d.dry_run),
            "daemon.state_file": (old_d.state_file, new_d.state_file),
            "daemon.cgroup_root": (old_d.cgroup_root, new_d.cgroup_root),
            "daemon.mlock": (old_d.mlock, new_d.mlock),
            "guard.margin": (self.guard, new.guard),
            "system": (self.system, new.system),
        }
        for key in RESTART_ONLY:
            old, now = pairs[key]
            if old != now:
                changed.append(key)
        return changed


def _render_key(path: tuple[str | int, ...]) -> str:
    """('oom', 1, 'args', 'x') -> "[[oom]] 2, key 'args.x'"; ('daemon', 'budget') ->
    "key 'daemon.budget'"."""
    if len(path) >= 2 and isinstance(path[1], int):
        head = f"[[{path[0]}]] {path[1] + 1}"
        rest = ".".join(str(p) for p in path[2:])
        return f"{head}, key '{rest}'" if rest else head
    return "key '" + ".".join(str(p) for p in path) + "'"


def _error(file: str, pos: TomlPositions | None, path: tuple[str | int, ...],
           msg: str) -> ConfigError:
    line = pos.line(*path) if pos is not None else None
    loc = f"{file}:{line}" if line else file
    return ConfigError(f"{loc}: {_render_key(path)}: {msg}")


# -- value parsers: each raises ValueError with the text of the message ----------------------


def _bool(v: object) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"expected true or false, got {shown(v)}")


def _duration_s(v: object) -> float:
    ns = parse_duration_ns(v)
    if ns <= 0:
        raise ValueError(f"must be more than zero, got {shown(v)}")
    return ns / 1e9


def _duration_s_or_zero(v: object) -> float:
    ns = parse_duration_ns(v)
    if ns < 0:
        raise ValueError(f"must not be negative, got {v!r}")
    return ns / 1e9


def _handler_budget_s(v: object) -> float:
    """A handler's own budget: the bounds of ``[daemon] budget`` (above zero, at most 60 s)."""
    seconds = _duration_s(v)
    if seconds > 60:
        raise ValueError("must be at most 60s: the kernel is waiting")
    return seconds


def _abs_path(v: object) -> str:
    if not isinstance(v, str) or not v.startswith("/"):
        raise ValueError(f"expected an absolute path, got {shown(v)}")
    if not v.isprintable():
        raise ValueError(f"a path has no control characters, got {shown(v)}")
    return os.path.normpath(v)


def _abs_path_or_empty(v: object) -> str:
    if v == "":
        return ""
    return _abs_path(v)


_cgroup_path = parse_cgroup_path


def _cgroup_paths(v: object) -> tuple[str, ...]:
    """A cgroup path, or a list of them (the first that exists is used)."""
    if isinstance(v, list):
        if not 1 <= len(v) <= 8:
            raise ValueError("a list of cgroup paths has 1 to 8 entries")
        return tuple(_cgroup_path(item) for item in v)
    return (_cgroup_path(v),)


def resolve_cgroups(config: Config, exists: Callable[[str], bool | None]) -> Config:
    """``config`` with each ``[[oom]]`` that lists several cgroups set to the first that
    ``exists`` (the first of all when none does, so attaching names it in its error)."""
    from dataclasses import replace

    ooms = []
    for entry in config.oom:
        if entry.alternatives and entry.cgroup is not None:
            for path in (entry.cgroup, *entry.alternatives):
                if exists(path):
                    entry = replace(entry, cgroup=path)
                    break
        ooms.append(entry)
    return replace(config, oom=tuple(ooms))


def _policy(v: object) -> str:
    if not isinstance(v, str) or not v.strip() or not v.isprintable():
        raise ValueError("expected a policy name or SPEC (module:Name, file.py:Name), got "
                         f"{shown(v)}")
    return v.strip()


def _margin(v: object) -> GuardMargin:
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            number = v.strip()[:-1]
            if not number.isascii():  # float() takes Unicode digits
                raise ValueError(number)
            pct = float(number)
        except ValueError:
            raise ValueError("expected a share like 5% or a size like 64M, got "
                             f"{shown(v)}") from None
        if not 0 < pct < 50:
            raise ValueError(f"a share must be more than 0% and less than 50%, got {v!r}")
        return GuardMargin(percent=pct, nbytes=None)
    try:
        nbytes = parse_size(v)
    except ValueError as exc:
        if "ambiguous" in str(exc):  # 64MB: say which M is meant, as every size key does
            raise
        raise ValueError(f"expected a share like 5% or a size like 64M, got {shown(v)}"
                         ) from None
    if nbytes <= 0:
        raise ValueError(f"must be more than zero, got {v!r}")
    return GuardMargin(percent=None, nbytes=nbytes)


def _share_or_size(v: object) -> float | int:
    """'5%' -> 0.05 (a share), '64M' -> bytes."""
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            pct = float(v.strip()[:-1])
        except ValueError:
            raise ValueError(f"expected a share like 5% or a size like 64M, got {v!r}") from None
        if not 0 <= pct < 100:
            raise ValueError(f"a share must be at least 0% and less than 100%, got {v!r}")
        return pct / 100
    try:
        return parse_size(v)
    except ValueError:
        raise ValueError(f"expected a share like 5% or a size like 64M, got {v!r}") from None


def parse_listen(v: object) -> Listen | None:
    """'127.0.0.1:9727', '[::1]:9727', 'localhost:9000'; '' disables (None)."""
    if not isinstance(v, str):
        raise ValueError(f"expected \"HOST:PORT\" (or \"\" to disable), got {shown(v)}")
    text = v.strip()
    if not text:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or len(port) > 5 or (
        not host.isprintable()
    ):
        raise ValueError(f"expected \"HOST:PORT\" like \"127.0.0.1:{DEFAULT_PORT}\", got "
                         f"{shown(v)}")
    number = int(port)
    if not 0 <= number < 65536:  # 0: any free port (tests)
        raise ValueError(f"a port is 1..65535, got {number}")
    return Listen(host, number)


def _args(v: object) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise ValueError("expected a table like { threshold_ms = 500 }")
    for key in v:
        if not key.isidentifier():
            raise ValueError(f"argument {shown(key)} is not a Python name")
    return MappingProxyType(dict(v))


# -- the parser ------------------------------------------------------------------------------


class _Parser:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.pos = TomlPositions(text)

    def error(self, keypath: tuple[str | int, ...], msg: str) -> ConfigError:
        return _error(self.path, self.pos, keypath, msg)

    def table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise self.error((name,), f"must be a table, written [{name}]")
        return raw

    def entries(self, data: dict[str, Any], name: str) -> list[dict[str, Any]]:
        raw = data.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise self.error((name,), f"entries are tables, written [[{name}]]")
        return raw

    def check_keys(self, raw: Mapping[str, Any], allowed: frozenset[str],
                   at: tuple[str | int, ...]) -> None:
        for key in raw:
            if key not in allowed:
                raise self.error((*at, key), unknown_key(key, allowed))

    def get(self, raw: Mapping[str, Any], at: tuple[str | int, ...], key: str,
            parse: Callable[[object], T], default: T) -> T:
        if key not in raw:
            return default
        try:
            return parse(raw[key])
        except (ValueError, TypeError) as exc:
            raise self.error((*at, key), str(exc)) from None


def parse_config(text: str, path: str = "<config>") -> Config:
    """Check a config text completely (policies are not imported yet: see load_policies)."""
    data = load_toml(text, path)
    p = _Parser(path, text)
    p.check_keys(data, _TOP_KEYS, ())

    draw = p.table(data, "daemon")
    p.check_keys(draw, _DAEMON_KEYS, ("daemon",))
    at: tuple[str | int, ...] = ("daemon",)
    d = DaemonSettings()
    daemon = DaemonSettings(
        dry_run=p.get(draw, at, "dry_run", _bool, d.dry_run),
        budget_s=p.get(draw, at, "budget", parse_budget_s, d.budget_s),
        max_failures=p.get(draw, at, "max_failures", int_between(1, 1000), d.max_failures),
        event_log=p.get(draw, at, "event_log", _abs_path, d.event_log),
        event_log_max=p.get(draw, at, "event_log_max", parse_size, d.event_log_max),
        event_log_keep=p.get(draw, at, "event_log_keep", int_between(1, 1000),
                             d.event_log_keep),
        status_file=p.get(draw, at, "status_file", _abs_path_or_empty, d.status_file),
        state_file=p.get(draw, at, "state_file", _abs_path, d.state_file),
        cgroup_root=p.get(draw, at, "cgroup_root", _abs_path_or_empty, d.cgroup_root),
        mlock=p.get(draw, at, "mlock", _bool, d.mlock),
        gc_interval_s=p.get(draw, at, "gc_interval", _duration_s, d.gc_interval_s),
        post_action_delay_s=p.get(draw, at, "post_action_delay", _duration_s_or_zero,
                                  d.post_action_delay_s),
        min_victim=p.get(draw, at, "min_victim", parse_size, d.min_victim),
    )
    if daemon.event_log_max < 4096:
        raise p.error(("daemon", "event_log_max"), "must be at least 4K")

    graw = p.table(data, "guard")
    p.check_keys(graw, _GUARD_KEYS, ("guard",))
    guard = p.get(graw, ("guard",), "margin", _margin, GuardMargin())

    sraw = p.table(data, "system")
    p.check_keys(sraw, _SYSTEM_KEYS, ("system",))
    sd, sat = SystemSettings(), ("system",)
    system = SystemSettings(
        min_available=p.get(sraw, sat, "min_available", _share_or_size, sd.min_available),
        min_swap_free=p.get(sraw, sat, "min_swap_free", _share_or_size, sd.min_swap_free),
        lead_s=p.get(sraw, sat, "lead", _duration_s, sd.lead_s),
        max_fill_rate=p.get(sraw, sat, "max_fill_rate", parse_rate, sd.max_fill_rate),
    )
    if system.lead_s > 10:
        raise p.error(("system", "lead"), "must be at most 10s")

    mraw = p.table(data, "metrics")
    p.check_keys(mraw, _METRICS_KEYS, ("metrics",))
    metrics = p.get(mraw, ("metrics",), "listen", parse_listen, parse_listen(DEFAULT_LISTEN))
    recorder = _recorder(p, p.table(data, "recorder"))

    ooms: list[OomEntry] = []
    slots: dict[str, int] = {}
    for i, raw in enumerate(p.entries(data, "oom")):
        at = ("oom", i)
        p.check_keys(raw, _OOM_KEYS, at)
        if "policy" not in raw:
            raise p.error(at, "key 'policy' is required")
        paths = p.get(raw, at, "cgroup", _cgroup_paths, None)
        entry = OomEntry(
            policy=p.get(raw, at, "policy", _policy, ""),
            cgroup=paths[0] if paths else None,
            args=p.get(raw, at, "args", _args, MappingProxyType({})),
            budget_s=p.get(raw, at, "budget", _handler_budget_s, None),
            index=i,
            line=p.pos.line(*at),
            alternatives=paths[1:] if paths else (),
        )
        if entry.slot in slots:
            first = ooms[slots[entry.slot]]
            raise p.error((*at, "cgroup") if entry.cgroup else at,
                          f"{entry.slot} already has a handler ({first.label}, line "
                          f"{first.line}): one OomOps per cgroup and one system-wide")
        slots[entry.slot] = len(ooms)
        ooms.append(entry)

    psis: list[PsiEntry] = []
    for i, raw in enumerate(p.entries(data, "psi")):
        at = ("psi", i)
        p.check_keys(raw, _PSI_KEYS, at)
        if "policy" not in raw:
            raise p.error(at, "key 'policy' is required")
        psis.append(PsiEntry(
            policy=p.get(raw, at, "policy", _policy, ""),
            args=p.get(raw, at, "args", _args, MappingProxyType({})),
            budget_s=p.get(raw, at, "budget", _handler_budget_s, None),
            index=i,
            line=p.pos.line(*at),
        ))
    return Config(path, daemon, guard, metrics, tuple(ooms), tuple(psis), recorder, system,
                  p.pos)


def _recorder(p: _Parser, raw: dict[str, Any]) -> RecorderSettings:
    """``[recorder]``: the flight recorder (oomkit.lab.recorder); size = "0" turns it off."""
    at: tuple[str | int, ...] = ("recorder",)
    p.check_keys(raw, _RECORDER_KEYS, at)
    d = RecorderSettings()
    r = RecorderSettings(
        size_bytes=p.get(raw, at, "size", parse_size, d.size_bytes),
        interval_s=p.get(raw, at, "interval", _duration_s, d.interval_s),
        pressure_interval_s=p.get(raw, at, "pressure_interval", _duration_s,
                                  d.pressure_interval_s),
        procs=p.get(raw, at, "procs", int_between(0, 10_000), d.procs),
        cgroups=p.get(raw, at, "cgroups", int_between(1, 100_000), d.cgroups),
    )
    if r.size_bytes > 256 << 20:
        raise p.error((*at, "size"), "must be at most 256M (it is locked in memory)")
    if r.size_bytes and not 0.05 <= r.pressure_interval_s <= r.interval_s <= 3600:
        raise p.error((*at, "interval"), "needs 50ms <= pressure_interval <= interval <= 1h")
    return r


def load_config(path: str) -> Config:
    """Read and check a config file. A missing or unreadable file is a ConfigError."""
    text = read_toml(path, "config")
    return parse_config(text, path)


# -- policies ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    """Every policy of a config, imported and instantiated: ready to attach."""

    oom: tuple[tuple[OomEntry, OomOps], ...] = ()
    psi: tuple[tuple[PsiEntry, PsiOps], ...] = ()


_ARG_TROUBLE: Final = ("bad arguments", "takes no arguments", "failed to start")


def _policy_error(config: Config, at: tuple[str | int, ...], origin: str, has_args: bool,
                  exc: ConfigError) -> ConfigError:
    msg = str(exc)
    if origin:
        return ConfigError(f"{origin}: {msg}")
    if isinstance(exc, BadArgument):
        return config.error((*at, "args", exc.arg), msg)
    key = "args" if has_args and any(t in msg for t in _ARG_TROUBLE) else "policy"
    return config.error((*at, key), msg)


def load_policies(config: Config, *, secure: bool = True) -> LoadedPolicies:
    """Import and instantiate every policy of ``config``.

    ``secure``: a policy given as a file must be owned by root and writable by nobody else
    (policies run as root in the daemon); see oomkit.policy_loader.check_file_secure.
    """
    oom: list[tuple[OomEntry, OomOps]] = []
    for entry in config.oom:
        at = ("oom", entry.index)
        try:
            ops = load_oom(entry.policy, secure=secure, args=dict(entry.args))
        except ConfigError as exc:
            raise _policy_error(config, at, entry.origin, bool(entry.args), exc) from None
        oom.append((entry, ops))
    psi: list[tuple[PsiEntry, PsiOps]] = []
    for pentry in config.psi:
        at = ("psi", pentry.index)
        try:
            pops = load_psi(pentry.policy, secure=secure, args=dict(pentry.args))
        except ConfigError as exc:
            raise _policy_error(config, at, pentry.origin, bool(pentry.args), exc) from None
        psi.append((pentry, pops))
    return LoadedPolicies(tuple(oom), tuple(psi))


def state_paths(state_dir: str) -> tuple[str, str, str]:
    """(event log, status file, restore journal) in one directory (``--state-dir``)."""
    return (os.path.join(state_dir, "events.jsonl"), os.path.join(state_dir, "status.json"),
            os.path.join(state_dir, "restore.json"))


def with_cli(config: Config, oom_specs: list[str], psi_specs: list[str], *,
             dry_run: bool = False, budget_s: float | None = None,
             state_dir: str | None = None) -> Config:
    """``config`` plus the policies and switches given on the command line
    (``--oom-policy SPEC[@CGROUP]``, ``--psi-policy``, ``--dry-run``, ``--budget``,
    ``--state-dir``: the event log, status file and restore journal in that directory)."""
    from dataclasses import replace

    from oomkit.policy_loader import split_at

    ooms = list(config.oom)
    slots = {e.slot: e for e in ooms}
    for n, text in enumerate(oom_specs):
        ps = split_at(text)
        try:
            cgroup = _cgroup_path(ps.cgroup) if ps.cgroup is not None else None
        except ValueError as exc:
            raise ConfigError(f"--oom-policy {text}: {exc}") from None
        entry = OomEntry(ps.spec, cgroup, index=len(config.oom) + n,
                         origin=f"--oom-policy {text}")
        if entry.slot in slots:
            held = slots[entry.slot]
            where = f"{config.path}:{held.line}" if held.line else "--oom-policy"
            raise ConfigError(f"--oom-policy {text}: {entry.slot} already has a handler "
                              f"({held.policy}, {where})")
        slots[entry.slot] = entry
        ooms.append(entry)
    psis = list(config.psi)
    for n, spec in enumerate(psi_specs):
        psis.append(PsiEntry(spec, index=len(config.psi) + n, origin=f"--psi-policy {spec}"))
    daemon = config.daemon
    if dry_run:
        daemon = replace(daemon, dry_run=True)
    if budget_s is not None:
        try:
            check_budget_s(budget_s)
        except ValueError as exc:
            raise ConfigError(f"--budget {budget_s!r}: {exc}") from None
        daemon = replace(daemon, budget_s=budget_s)
    if state_dir is not None:
        event_log, status_file, state_file = state_paths(state_dir)
        daemon = replace(daemon, event_log=event_log, status_file=status_file,
                         state_file=state_file)
    return replace(config, daemon=daemon, oom=tuple(ooms), psi=tuple(psis))
