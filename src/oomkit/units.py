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

Anything else is a ValueError whose text says what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# re.ASCII: \d would take any script's digits ("１s", "٣M"), which float() then reads.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?B|i)?|(B))?\s*$",
                   re.IGNORECASE | re.ASCII)
_SI_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])B\s*$", re.IGNORECASE | re.ASCII)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|m|h)\s*$", re.ASCII)
_SECONDS = re.compile(r"\s*\d+(\.\d+)?\s*", re.ASCII)
_MULT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DUR_NS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000,
           "m": 60_000_000_000, "h": 3_600_000_000_000}
SIZE_HELP = "a size like 64M, 64Mi or 1G (powers of 1024)"
DURATION_HELP = "a duration like 500ms, 2s, 1min or 1h"


def parse_size(value: object) -> int:
    """'80M' -> 83886080 ('80Mi', '80MiB' too). Integers are bytes. Fractions are allowed
    with a suffix ('1.5G'). 'MB' and friends are refused (see the module's docstring)."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
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
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    number, suffix = m.group(1), (m.group(2) or "").upper()
    if "." in number and not suffix:
        raise ValueError(f"a size in bytes must be a whole number, got {value!r}")
    return int(float(number) * _MULT[suffix]) if "." in number else int(number) * _MULT[suffix]


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
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    return round(float(m.group(1)) * _DUR_NS[m.group(2)])


def parse_rate(value: object) -> int:
    """'100M/s' -> bytes per second."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"expected a rate like 100M/s, got {value!r}")
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
            raise ValueError(f"expected a whole number, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {v}")
        return v

    return parse
