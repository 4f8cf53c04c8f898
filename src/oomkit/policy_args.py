"""Policy arguments checked against the policy's signature when a config is loaded.

A policy's ``__init__`` says what it takes; its annotations say how a config value is
read:

- ``Size`` (bytes): ``"64M"``, ``"1G"`` or a whole number of bytes, as elsewhere in the
  config; ``Duration`` (seconds, a float): ``"500ms"``, ``"2s"``, ``"1m"``, or a number of
  seconds; ``Percent`` (a float 0..100): ``"90%"`` or a number;
- ``int``, ``float``, ``bool``, ``str``: that TOML type (an int is a float too; ``"64M"``
  is not an int: annotate Size to take units);
- ``list[str]``/``Sequence[str]`` (a string is not a list), ``X | None``; ``CgroupGlobs``:
  a list of globs on absolute cgroup paths, each starting with "/" (or a wildcard).

:func:`check` returns the converted keyword arguments or raises :class:`ArgError` naming
the argument, before anything is instantiated. Unannotated parameters take any value. A
policy refuses values it cannot use together (a PSI trigger the kernel would refuse:
:func:`check_trigger`) by raising ArgError from its ``__init__``: the loader names the
argument as it does for a wrong type.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Annotated, Any

from oomkit.units import parse_duration_ns, parse_size


class _Unit:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SIZE = _Unit("size")
DURATION = _Unit("duration")
PERCENT = _Unit("percent")
CGROUP_GLOBS = _Unit("cgroup globs")

Size = Annotated[int, SIZE]
Duration = Annotated[float, DURATION]
Percent = Annotated[float, PERCENT]
#: fnmatch globs on absolute cgroup paths ("/system.slice/*.service"): one that cannot
#: start with "/" can never match (QA Q14: "system.slice/sshd.service" protected nothing)
CgroupGlobs = Annotated[collections.abc.Sequence[str], CGROUP_GLOBS]


class ArgError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"argument {key!r}: {message}")
        self.key = key


#: psi_trigger_create()'s window limits (kernel/sched/psi.c): at most 10 s on every
#: kernel (WINDOW_MAX_US); at least 500 ms before Linux 6.5 (WINDOW_MIN_US, removed by
#: 519fabc7aaba), so a config that must start on 6.1 as on 6.12 keeps to 500 ms..10 s.
TRIGGER_WINDOW_MIN_S = 0.5
TRIGGER_WINDOW_MAX_S = 10.0


def _seconds(value: float, unit: str) -> str:
    """``value`` seconds as the config wrote it: "2s", "500ms" (``unit`` "ms": in ms)."""
    if unit == "ms":
        return f"{value * 1000:g} ms"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def check_trigger(threshold_s: float, window_s: float, threshold_key: str,
                  window_key: str, unit: str = "s", threshold_of: str = "") -> None:
    """Refuse a PSI trigger the kernel would refuse, when the config is loaded: raises
    ArgError naming the argument. psi_trigger_create() (kernel/sched/psi.c) returns
    EINVAL for a threshold of 0 or over the window ("a stall of 5 s within 2 s" can never
    happen) and for a window over 10 s; kernels before 6.5 also for one under 500 ms.
    Without CAP_SYS_RESOURCE a window must be a multiple of 2 s since 6.5 (the daemon
    runs as root: that one is left to start-up, where the kernel is known).
    ``threshold_of``: how the threshold was derived, for the message (lmkd's stalls are
    per second: " (700ms a second)")."""
    shown_w = _seconds(window_s, unit)
    if not TRIGGER_WINDOW_MIN_S <= window_s <= TRIGGER_WINDOW_MAX_S:
        raise ArgError(window_key, f"{shown_w} is outside 500ms..10s, the PSI trigger "
                       "windows every kernel takes (kernel/sched/psi.c psi_trigger_create; "
                       "under 500ms only from Linux 6.5)")
    if threshold_s <= 0:
        raise ArgError(threshold_key, "a threshold of 0: the kernel refuses such a trigger "
                       "(psi_trigger_create wants 1 us of stall or more)")
    if threshold_s > window_s:
        raise ArgError(threshold_key, f"{_seconds(threshold_s, unit)}{threshold_of} is "
                       f"longer than the window {shown_w}: the kernel refuses such a "
                       "trigger (a stall within a window is at most the window)")


def _percent(v: object) -> float:
    if isinstance(v, str) and v.strip().endswith("%"):
        v = v.strip()[:-1]
        try:
            pct = float(v)
        except ValueError:
            raise ValueError(f"expected a share like 90%, got {v!r}%") from None
    elif isinstance(v, int | float) and not isinstance(v, bool):
        pct = float(v)
    else:
        raise ValueError(f"expected a share like 90%, got {v!r}")
    if not 0 <= pct <= 100:
        raise ValueError(f"a share is 0% to 100%, got {v!r}")
    return pct


def _cgroup_globs(globs: object) -> object:
    for g in globs if isinstance(globs, list) else ():
        if not g.startswith(("/", "*", "?", "[")):
            raise ValueError(f"{g!r} can never match: cgroup paths start with \"/\" "
                             f"(\"/{g}\"; globs on the path below the cgroup root)")
    return globs


def _duration(v: object) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        seconds = float(v)
    else:
        seconds = parse_duration_ns(v) / 1e9
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {v!r}")
    return seconds


def _plain(v: object, tp: type) -> object:
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise ValueError(f"expected true or false, got {v!r}")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise ValueError(f"expected a whole number, got {v!r}")
    if tp is float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        raise ValueError(f"expected a number, got {v!r}")
    if tp is str:
        if isinstance(v, str):
            return v
        raise ValueError(f"expected a string, got {v!r}")
    return v


def convert(v: object, tp: Any) -> object:
    """``v`` read as annotation ``tp``; ValueError with the reason."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        if SIZE in meta:
            return parse_size(v)
        if DURATION in meta:
            return _duration(v)
        if PERCENT in meta:
            return _percent(v)
        if CGROUP_GLOBS in meta:
            return _cgroup_globs(convert(v, base))
        return convert(v, base)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if v is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(v, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; or ".join(errors))
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(v, list):
            raise ValueError(f"expected a list like [\"a\", \"b\"], got {v!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return [convert(x, item) for x in v]
    if tp is Any or not isinstance(tp, type):
        return v
    return _plain(v, tp)


def parameters(cls: type) -> list[tuple[str, Any, Any]]:
    """(name, annotation, default) of each keyword argument of ``cls``; default is
    ``inspect.Parameter.empty`` when required."""
    init: Any = cls.__init__  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception:  # an annotation that does not resolve: take values as they are
        hints = {}
    out = []
    for name, p in inspect.signature(init).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append((name, hints.get(name, Any), p.default))
    return out


def _unit_hint(key: str, tp: Any) -> str:
    """For a plain number whose unit is in its name (``threshold_ms``): which unit, as a
    config's "500ms" is refused there (QA Q16)."""
    if tp not in (int, float):
        return ""
    for suffix, unit in (("_per_s", "a number per second"), ("_ms", "milliseconds"),
                         ("_us", "microseconds"), ("_s", "seconds")):
        if key.endswith(suffix):
            return f" ({key}: a plain number, {unit})"
    return ""


def check(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """Check and convert ``args`` for ``cls(**args)``; raises ArgError."""
    params = {name: (tp, default) for name, tp, default in parameters(cls)}
    init: Any = cls.__init__  # type: ignore[misc]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values())
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key not in params:
            if takes_any:
                out[key] = value
                continue
            known = ", ".join(params) or "none"
            raise ArgError(key, f"{cls.__name__} takes no such argument (it takes: {known})")
        try:
            out[key] = convert(value, params[key][0])
        except ValueError as exc:
            raise ArgError(key, str(exc) + _unit_hint(key, params[key][0])) from None
    for name, (_, default) in params.items():
        if default is inspect.Parameter.empty and name not in out:
            raise ArgError(name, "required")
    return out


def describe(tp: Any) -> str:
    """A short name for an annotation, as `oomkit policies` prints it."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        for unit in (SIZE, DURATION, PERCENT, CGROUP_GLOBS):
            if unit in meta:
                return unit.name
        return describe(base)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(describe(a) for a in typing.get_args(tp))
        return f"list[{args}]" if args else "list"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))
