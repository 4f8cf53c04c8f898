"""Turn a policy SPEC into a handler object.

SPEC is one of:
- a built-in name (``largest_leaf``), see ``oomkit.policies.BUILTIN``;
- a name registered by an installed package in the ``oomkit.policies`` entry-point group;
- ``package.module:Name``;
- ``path/to/file.py:Name``.
``Name`` is an OomOps/PsiOps subclass (instantiated with the given keyword arguments,
none on the command line) or an instance. Every failure is a ConfigError of one line.

Policies are code that runs as root in the daemon: with ``secure=True`` a policy file, and
every directory above it, must be root's alone and no symlink (:mod:`oomkit.trust`); the
file is read from the descriptor that was checked. A ``package.module:Name`` is imported
only from such a place too: a module in the current directory or in a ``PYTHONPATH``
entry another user can write is refused (before any of its code runs).

Whatever a policy's import or constructor does (``sys.exit``, ``os._exit``,
``KeyboardInterrupt``, any BaseException, or never returning) ends as a ConfigError: loading
runs in a thread given ``deadline_s`` (IMPORT_DEADLINE_S) to finish, and while it runs
``os._exit`` raises instead of ending the process (a reload or ``check-config`` would
otherwise end silently, exit code 0).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import posix
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from oomkit.errors import ConfigError, exception_text
from oomkit.ops import OomOps, PsiOps
from oomkit.policies import BUILTIN
from oomkit.policy_args import ArgError, check
from oomkit.trust import check_trusted, read_trusted

ENTRY_POINT_GROUP = "oomkit.policies"
#: How long a policy's import and constructor may take (a reload waits for them).
IMPORT_DEADLINE_S = 10.0

T = TypeVar("T")


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
    import importlib.metadata  # here: a few MiB a daemon with built-in policies never needs

    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def check_file_secure(path: Path) -> None:
    """Refuse a policy file that is not root's alone, along its whole path (oomkit.trust)."""
    check_trusted(str(path), f"policy file {path}")


def _import_file(path: Path, secure: bool) -> Any:
    what = f"policy file {path}"
    if secure:
        source = read_trusted(str(path), what)  # checked and read through one descriptor
    else:
        try:
            source = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{what}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read: {exc.strerror}") from None
    import hashlib

    digest = hashlib.sha1(str(path.absolute()).encode()).hexdigest()[:12]
    modname = f"oomkit_policy_{path.stem}_{digest}"
    module = types.ModuleType(modname)
    module.__file__ = str(path)
    sys.modules[modname] = module  # dataclasses and pickling look the module up
    try:
        code = compile(source, str(path), "exec")
        exec(code, module.__dict__)
    except SyntaxError as exc:
        sys.modules.pop(modname, None)
        raise ConfigError(f"{what}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the daemon goes on
        sys.modules.pop(modname, None)
        raise ConfigError(f"{what}: does not import: {_what(exc)}") from None
    return module


def _what(exc: BaseException) -> str:
    return exception_text(exc)


def _check_module_source(name: str) -> None:
    """Refuse to import ``name`` unless each file it would run (its packages' __init__
    and the module) is trusted. Found without importing anything (PathFinder)."""
    top = name.partition(".")[0]
    if top == "oomkit" or name in sys.modules:
        return  # our own package, or code already running in this process
    search: list[str] | None = None
    parts = name.split(".")
    for n in range(1, len(parts) + 1):
        prefix = ".".join(parts[:n])
        if prefix in sys.modules:
            pkg = sys.modules[prefix]
            search = list(getattr(pkg, "__path__", []) or [])
            continue
        spec = (importlib.util.find_spec(prefix) if n == 1
                else importlib.machinery.PathFinder.find_spec(prefix, search))
        if spec is None:
            return  # import_module will say "not found"
        if spec.origin and spec.has_location:
            check_trusted(spec.origin, f"policy module {name!r}")
        for location in spec.submodule_search_locations or ():
            check_trusted(location, f"policy module {name!r}", is_dir=True)
        search = list(spec.submodule_search_locations or [])


def _import_module(name: str, secure: bool = False) -> Any:
    if secure:
        _check_module_source(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"policy module {name!r}: not found ({exc.name} is missing)") from None
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the daemon goes on
        raise ConfigError(f"policy module {name!r}: does not import: {_what(exc)}") from None


class PolicyExit(BaseException):
    """``os._exit`` called while a policy was loading (raised in place of the exit)."""


#: (the pid loading, the os._exit it replaced) while a load runs
_loading: tuple[int, Callable[[int], Any]] = (0, os._exit)


def _refuse_exit(status: int) -> None:
    pid, real_exit = _loading
    if os.getpid() != pid:  # a child forked meanwhile (a handler's, during a reload): real
        real_exit(status)
        return
    raise PolicyExit(f"os._exit({status}) called while loading")


_exit_guard = threading.Lock()


def with_deadline(fn: Callable[[], T], deadline_s: float, what: str) -> T:
    """``fn()`` in a thread; its BaseException is re-raised here, and past ``deadline_s`` a
    ConfigError (the thread is left blocked: a daemon thread, it holds nothing of ours).
    ``os._exit`` raises PolicyExit meanwhile: the daemon never calls it, and a policy that
    did would end the daemon with exit code 0, before any error could be written."""
    global _loading
    with _exit_guard:
        real_exit = os._exit
        _loading = (os.getpid(), real_exit)
        os._exit = posix._exit = _refuse_exit  # type: ignore[assignment]
        try:
            return _with_deadline(fn, deadline_s, what)
        finally:
            os._exit = posix._exit = real_exit


def _with_deadline(fn: Callable[[], T], deadline_s: float, what: str) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    worker = threading.Thread(target=run, name="oomkit-policy-import", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise ConfigError(f"{what}: did not finish importing within {deadline_s:g} s "
                          "(blocked at import or in its constructor)")
    if error:
        exc = error[0]
        if isinstance(exc, ConfigError):
            raise exc
        raise ConfigError(f"{what}: failed to start: {_what(exc)}") from None
    return result[0]


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
        module = _import_module(where, secure)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"policy {spec!r}: {where} has no {attr!r}") from None


def load(spec: str, kind: type[OomOps] | type[PsiOps], *, secure: bool = False,
         args: dict[str, Any] | None = None,
         deadline_s: float | None = None) -> Any:
    """Resolve and instantiate a policy of the given kind (OomOps or PsiOps), within
    ``deadline_s`` (None: IMPORT_DEADLINE_S); every failure is a ConfigError."""
    return with_deadline(lambda: _load(spec, kind, secure, args),
                         IMPORT_DEADLINE_S if deadline_s is None else deadline_s,
                         f"policy {spec!r}")


def _load(spec: str, kind: type[OomOps] | type[PsiOps], secure: bool,
          args: dict[str, Any] | None) -> Any:
    obj = resolve(spec, secure=secure)
    label = "an OomOps" if kind is OomOps else "a PsiOps"
    if isinstance(obj, type):
        if not issubclass(obj, kind):
            other = next((f" (it is {name})" for cls, name in
                          ((OomOps, "an OomOps"), (PsiOps, "a PsiOps")) if issubclass(obj, cls)),
                         "")
            raise ConfigError(f"policy {spec!r}: {obj.__name__} is not {label} subclass{other}")
        try:
            kwargs = check(obj, dict(args or {}))
        except ArgError as exc:
            raise BadArgument(f"policy {spec!r}: {exc}", exc.key) from None
        try:
            return obj(**kwargs)
        except ArgError as exc:  # the policy refused a value (policy_args.check_trigger)
            raise BadArgument(f"policy {spec!r}: {exc}", exc.key) from None
        except TypeError as exc:
            raise ConfigError(f"policy {spec!r}: bad arguments: {exc}") from None
        except BaseException as exc:
            raise ConfigError(f"policy {spec!r}: failed to start: {_what(exc)}") from None
    if isinstance(obj, kind):
        if args:
            raise ConfigError(f"policy {spec!r}: is an instance; it takes no arguments")
        return obj
    raise ConfigError(f"policy {spec!r}: is not {label} (got {type(obj).__name__})")


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
    if isinstance(value, list | tuple):
        import json

        return json.dumps(list(value))  # as a config writes it: ["/dev/shm"], []
    return repr(value)


def policy_infos() -> list[PolicyInfo]:
    """Every built-in policy, then those installed packages register."""
    import importlib.metadata

    out = [_info(name, BUILTIN[name], "built-in") for name in sorted(BUILTIN)]
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        out.append(_info(ep.name, ep.value, f"package {dist}"))
    return out
