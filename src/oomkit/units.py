"""Strict parsers for sizes, durations and rates: one grammar for scenarios, configs and
the command line.

Sizes: a whole number of bytes, or a number with a binary suffix: ``K``/``Ki``/``KiB``,
``M``/``Mi``/``MiB``, ``G``/``Gi``/``GiB``, ``T``/``Ti``/``TiB``, all powers of 1024 (as the
cgroup files read them: ``echo 10M > memory.max`` is 10 MiB; Kubernetes writes ``10Mi``).
``KB``/``MB``/``GB``/``TB`` are refused with a hint: elsewhere they mean powers of 1000 (SI,
Kubernetes' ``10M``), here ``M`` means MiB, so the unit would be read two ways. ``"max"``
where a limit is meant. Sizes are echoed back with :func:`format_size` (``10M``).

Durations: a number with ``us``, ``ms``, ``s``, ``min`` or ``m`` (minutes, both as systemd
writes them), or ``h``. A bare number is refused: the unit must be said.

Anything else is a ValueError whose text says what was expected. Digits are ASCII only
(``\\d`` would take "١٢M"), and every value is bounded (MAX_SIZE, MAX_DURATION_NS) so that
no later arithmetic overflows a float or a C long.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

# re.ASCII: \d would take any script's digits ("１s", "٣M"), which float() then reads.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?B|i)?|(B))?\s*$",
                   re.IGNORECASE | re.ASCII)
_SI_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])B\s*$", re.IGNORECASE | re.ASCII)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|m|h)\s*$", re.ASCII)
_SECONDS = re.compile(r"\s*\d+(\.\d+)?\s*", re.ASCII)
#: 1 EiB: more than any machine, less than the 2**63 of a cgroup file or a C long.
MAX_SIZE = 1 << 60
#: About 31 years: durations past this are typing errors, and stay exact in a float.
MAX_DURATION_NS = 10**18
_MULT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DUR_NS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000,
           "m": 60_000_000_000, "h": 3_600_000_000_000}
SIZE_HELP = "a size like 64M, 64Mi or 1G (powers of 1024)"
DURATION_HELP = "a duration like 500ms, 2s, 1min or 1h"


def counted(n: int, noun: str, plural: str = "") -> str:
    """``"1 process"``, ``"2 processes"``: ``plural`` when it is not ``noun + "s"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def parse_size(value: object) -> int:
    """'80M' -> 83886080 ('80Mi', '80MiB' too). Integers are bytes. Fractions are allowed
    with a suffix ('1.5G'). 'MB' and friends are refused (see the module's docstring)."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {shown(value)}")
        if value > MAX_SIZE:
            raise ValueError(f"a size is at most 1024T, got {shown(value)}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    si = _SI_SIZE.match(value)
    if si is not None:
        n, u = si.group(1), si.group(2).upper()
        k = "KMGT".index(u) + 1
        raise ValueError(f"{value!r} is ambiguous: {u}B is 10^{3 * k} bytes (SI), {u} here is "
                         f"2^{10 * k}; write {n}{u} or {n}{u}i for 2^{10 * k}, or a number of "
                         "bytes")
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"expected {SIZE_HELP}, got {shown(value)}")
    number, suffix = m.group(1), (m.group(2) or "").upper()
    if "." in number and not suffix:
        raise ValueError(f"a size in bytes must be a whole number, got {shown(value)}")
    if len(number.partition(".")[0]) > 19:
        raise ValueError(f"a size is at most 1024T, got {shown(value)}")
    size = int(float(number) * _MULT[suffix]) if "." in number else int(number) * _MULT[suffix]
    if size > MAX_SIZE:
        raise ValueError(f"a size is at most 1024T, got {shown(value)}")
    return size


def size_arg(value: str) -> int:
    """:func:`parse_size` for argparse (``type=size_arg``): errors become usage errors."""
    import argparse

    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_arg(value: str) -> float:
    """A duration for argparse in seconds: :func:`parse_duration_ns`, or a bare number of
    seconds (``--budget 0.2``, as the option always took)."""
    import argparse

    try:
        return float(value) if _SECONDS.fullmatch(value) else \
            parse_duration_ns(value) / 1e9
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_limit(value: object) -> int | None:
    """A cgroup limit: a size, or "max" (None)."""
    if isinstance(value, str) and value.strip() == "max":
        return None
    return parse_size(value)


def parse_duration_ns(value: object) -> int:
    """'100ms' -> 100_000_000. A bare number is refused: the unit must be said."""
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HELP}, got {shown(value)}")
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"expected {DURATION_HELP}, got {shown(value)}")
    number = m.group(1)
    if len(number.partition(".")[0]) > 19:
        raise ValueError(f"a duration is at most 31 years, got {shown(value)}")
    ns = round(float(number) * _DUR_NS[m.group(2)])
    if ns > MAX_DURATION_NS:
        raise ValueError(f"a duration is at most 31 years, got {shown(value)}")
    return ns


def parse_rate(value: object) -> int:
    """'100M/s' -> bytes per second."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"expected a rate like 100M/s, got {shown(value)}")
    size, _, per = value.partition("/")
    if per.strip() != "s":
        raise ValueError(f"a rate is per second, like 100M/s, got {value!r}")
    rate = parse_size(size)
    if rate == 0:
        raise ValueError(f"a rate must be more than zero, got {value!r}")
    return rate


def format_size(nbytes: int | None) -> str:
    """83886080 -> '80M'; None -> 'max'. Read back by :func:`parse_size` (to 0.1 of the
    unit)."""
    if nbytes is None:
        return "max"
    units = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))
    for i, (suffix, mult) in enumerate(units):
        if nbytes >= mult:
            value = nbytes / mult
            if round(value, 1) >= 1024 and i > 0:  # 1G - 1 byte: "1.0G", not "1024.0M"
                suffix, value = units[i - 1][0], value / 1024
            return f"{value:.0f}{suffix}" if value == int(value) else f"{value:.1f}{suffix}"
    return f"{nbytes}B"


def int_between(lo: int, hi: int) -> Callable[[object], int]:
    """A parser for a whole number in [lo, hi] (booleans refused, though TOML has them)."""

    def parse(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected a whole number, got {shown(v)}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {shown(v)}")
        return v

    return parse


def shown(value: object, width: int = 40) -> str:
    """``repr(value)`` cut to ``width`` characters, for one-line messages (a 400-digit
    number or a long string stays readable)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


#: The longest a handler may keep the kernel waiting: an OOM blocks every allocating task
#: of its memcg, and the watchdog hands it to the kernel killer past this anyway.
MAX_BUDGET_S = 60.0


def check_budget_s(value: float) -> float:
    """A handler budget in seconds: finite, more than zero, at most MAX_BUDGET_S.

    Raises ValueError (nan, inf, zero, negative, too long) with the reason."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a duration, got {shown(value)}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a budget must be a finite time more than zero, got {value!r}")
    if value > MAX_BUDGET_S:
        raise ValueError(f"a budget is at most {MAX_BUDGET_S:g} s (the kernel is waiting), "
                         f"got {value:g} s")
    return float(value)


def parse_budget_s(value: object) -> float:
    """A budget as configs write it ("500ms", "2s"), checked by check_budget_s."""
    return check_budget_s(parse_duration_ns(value) / 1e9)


def parse_cgroup_path(value: object) -> str:
    """A cgroup path below the root: "/", "/a/b". Refused: relative, empty parts, "." or
    "..", and control characters (a NUL would cut the path at the kernel's boundary)."""
    if not isinstance(value, str) or not value.startswith("/") or "//" in value or (
        value != "/" and value.endswith("/")
    ):
        raise ValueError("a cgroup path starts with / and has no empty parts, got "
                         f"{shown(value)}")
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"a cgroup path has no . or .. parts, got {shown(value)}")
    if not value.isprintable():
        raise ValueError(f"a cgroup path has no control characters, got {shown(value)}")
    return value


def parse_file_path(value: object) -> str:
    """A file name as scenarios give it: non-empty, no ".." part, no control characters."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {shown(value)}")
    if ".." in value.split("/"):
        raise ValueError(f"a file path has no .. parts, got {shown(value)}")
    if not value.isprintable():
        raise ValueError(f"a file path has no control characters, got {shown(value)}")
    return value
