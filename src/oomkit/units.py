"""Strict parsers for sizes, durations and rates as they appear in scenarios and configs.

Sizes: a whole number with an optional suffix K, M, G or T (powers of 1024, as cgroup files
accept them), or "max" where a limit is meant. Durations: a number with ms, s or m (h too).
Anything else is a ValueError whose text says what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)\s*$")
_MULT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DUR_NS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
           "h": 3_600_000_000_000}


def parse_size(value: object) -> int:
    """'80M' -> 83886080. Integers are bytes. Fractions are allowed with a suffix."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 64M, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 64M, got {value!r}")
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"expected a size like 64M or 1G, got {value!r}")
    number, suffix = m.group(1), m.group(2).upper()
    if "." in number and not suffix:
        raise ValueError(f"a size in bytes must be a whole number, got {value!r}")
    return int(float(number) * _MULT[suffix]) if "." in number else int(number) * _MULT[suffix]


def parse_limit(value: object) -> int | None:
    """A cgroup limit: a size, or "max" (None)."""
    if isinstance(value, str) and value.strip() == "max":
        return None
    return parse_size(value)


def parse_duration_ns(value: object) -> int:
    """'100ms' -> 100_000_000. A bare number is refused: the unit must be said."""
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 500ms, 2s or 1m, got {value!r}")
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"expected a duration like 500ms, 2s or 1m, got {value!r}")
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
    """83886080 -> '80M'; None -> 'max'."""
    if nbytes is None:
        return "max"
    for suffix, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= mult:
            value = nbytes / mult
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
