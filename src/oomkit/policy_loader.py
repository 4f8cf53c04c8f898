"""Turn a policy SPEC into a handler object.

SPEC is one of:
- a built-in name (``largest_leaf``), see ``oomkit.policies.BUILTIN``;
- a name registered by an installed package in the ``oomkit.policies`` entry-point group;
- ``package.module:Name``;
- ``path/to/file.py:Name``.
``Name`` is an OomOps/PsiOps subclass (instantiated with the given keyword arguments,
none on the command line) or an instance. Every failure is a ConfigError of one line.

Policies are code that runs as root in the daemon: with ``secure=True`` a policy file (and
its directory) must be owned by root and not writable by group or others.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomkit.errors import ConfigError
from oomkit.ops import OomOps, PsiOps
from oomkit.policies import BUILTIN
from oomkit.policy_args import ArgError, check

ENTRY_POINT_GROUP = "oomkit.policies"


class BadArgument(ConfigError):
    """A policy argument that does not fit the policy's signature (``arg``: its name)."""

    def __init__(self, message: str, arg: str) -> None:
        super().__init__(message)
        self.arg = arg


@dataclass(frozen=True, slots=True)
class PolicySpec:
    spec: str
    cgroup: str | None = None  # for OomOps: where to attach (None: system-wide)


def split_at(text: str) -> PolicySpec:
    """'largest_leaf@/oom_test' -> PolicySpec('largest_leaf', '/oom_test')."""
    spec, sep, cgroup = text.rpartition("@") if "@" in text else (text, "", "")
    if sep and not cgroup:
        raise ConfigError(f"policy {text!r}: nothing after '@' (expected a cgroup path)")
    if not spec:
        raise ConfigError(f"policy {text!r}: empty policy name")
    return PolicySpec(spec, cgroup or None)


def entry_points() -> dict[str, str]:
    """Names installed packages register in the ``oomkit.policies`` group -> their SPEC."""
    return _entry_points()


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def check_file_secure(path: Path) -> None:
    """Refuse a policy file root does not own, or that group/others can write."""
    for p in (path, path.parent):
        st = p.stat()
        if st.st_uid != 0:
            raise ConfigError(f"policy file {path}: {p} is owned by uid {st.st_uid}, not root;"
                              " policies run as root, so only root may own them")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (
            p == path.parent and st.st_mode & stat.S_ISVTX
        ):
            raise ConfigError(f"policy file {path}: {p} is writable by group or others "
                              f"(mode {stat.filemode(st.st_mode)}); run chmod go-w {p}")


def _import_file(path: Path, secure: bool) -> Any:
    if not path.is_file():
        raise ConfigError(f"policy file {path}: no such file")
    if secure:
        check_file_secure(path)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    modname = f"oomkit_policy_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"policy file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(modname, None)
        raise ConfigError(f"policy file {path}: syntax error at line {exc.lineno}: {exc.msg}"
                          ) from None
    except Exception as exc:
        sys.modules.pop(modname, None)
        raise ConfigError(f"policy file {path}: does not import: {type(exc).__name__}: {exc}"
                          ) from None
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"policy module {name!r}: not found ({exc.name} is missing)") from None
    except Exception as exc:
        raise ConfigError(f"policy module {name!r}: does not import: "
                          f"{type(exc).__name__}: {exc}") from None


def resolve(spec: str, *, secure: bool = False) -> Any:
    """The object a SPEC names (a class or an instance), not yet instantiated."""
    target = BUILTIN.get(spec)
    if target is None:
        target = _entry_points().get(spec)
    if target is None:
        target = spec
    where, sep, attr = target.rpartition(":")
    if not sep:
        known = ", ".join(sorted(BUILTIN) + sorted(_entry_points()))
        raise ConfigError(f"unknown policy {spec!r}: not a built-in (known: {known}) and not "
                          "'module:Name' or 'file.py:Name'")
    if not attr.isidentifier():
        raise ConfigError(f"policy {spec!r}: {attr!r} is not a Python name")
    if where.endswith(".py") or os.sep in where:
        module = _import_file(Path(where), secure)
    else:
        module = _import_module(where)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"policy {spec!r}: {where} has no {attr!r}") from None


def load(spec: str, kind: type[OomOps] | type[PsiOps], *, secure: bool = False,
         args: dict[str, Any] | None = None) -> Any:
    """Resolve and instantiate a policy of the given kind (OomOps or PsiOps)."""
    obj = resolve(spec, secure=secure)
    label = "OomOps" if kind is OomOps else "PsiOps"
    if isinstance(obj, type):
        if not issubclass(obj, kind):
            raise ConfigError(f"policy {spec!r}: {obj.__name__} is not an {label} subclass")
        try:
            kwargs = check(obj, dict(args or {}))
        except ArgError as exc:
            raise BadArgument(f"policy {spec!r}: {exc}", exc.key) from None
        try:
            return obj(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"policy {spec!r}: bad arguments: {exc}") from None
        except Exception as exc:
            raise ConfigError(f"policy {spec!r}: failed to start: "
                              f"{type(exc).__name__}: {exc}") from None
    if isinstance(obj, kind):
        if args:
            raise ConfigError(f"policy {spec!r}: is an instance; it takes no arguments")
        return obj
    raise ConfigError(f"policy {spec!r}: is not an {label} (got {type(obj).__name__})")


def load_oom(spec: str, *, secure: bool = False, args: dict[str, Any] | None = None) -> OomOps:
    ops: OomOps = load(spec, OomOps, secure=secure, args=args)
    return ops


def load_psi(spec: str, *, secure: bool = False, args: dict[str, Any] | None = None) -> PsiOps:
    ops: PsiOps = load(spec, PsiOps, secure=secure, args=args)
    return ops


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What `oomkit policies` shows of one policy."""

    name: str
    spec: str
    kind: str  # "oom", "psi", or "?" when it does not import
    summary: str
    args: tuple[tuple[str, str, str], ...]  # (name, type, default) - default "" = required
    origin: str  # "built-in" or "package <dist>"


def _info(name: str, spec: str, origin: str) -> PolicyInfo:
    import inspect

    from oomkit.policy_args import describe, parameters

    try:
        obj = resolve(spec)
    except ConfigError as exc:
        return PolicyInfo(name, spec, "?", str(exc), (), origin)
    cls = obj if isinstance(obj, type) else type(obj)
    kind = "oom" if issubclass(cls, OomOps) else "psi" if issubclass(cls, PsiOps) else "?"
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
    summary = doc.splitlines()[0].removeprefix(name + ":").strip() if doc else ""
    args = []
    if isinstance(obj, type):
        for pname, tp, default in parameters(cls):
            shown = "" if default is inspect.Parameter.empty else _show(default, describe(tp))
            args.append((pname, describe(tp), shown))
    return PolicyInfo(name, spec, kind, summary, tuple(args), origin)


def _show(value: Any, kind: str) -> str:
    from oomkit.units import format_size

    if kind == "size" and isinstance(value, int):
        return format_size(value)
    if kind == "duration" and isinstance(value, int | float):
        return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"
    if kind == "percent" and isinstance(value, int | float):
        return f"{value:g}%"
    return repr(value)


def policy_infos() -> list[PolicyInfo]:
    """Every built-in policy, then those installed packages register."""
    out = [_info(name, BUILTIN[name], "built-in") for name in sorted(BUILTIN)]
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        out.append(_info(ep.name, ep.value, f"package {dist}"))
    return out
