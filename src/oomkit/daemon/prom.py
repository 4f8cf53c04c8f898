"""Counters, gauges and histograms in the Prometheus text format (version 0.0.4).

Why not prometheus-client: its package imports its whole exposition module, and that
imports ``ssl`` (OpenSSL and its tables), ``urllib.request``, ``http.server`` (the email
parser), ``wsgiref`` and ``gzip`` on any import. The daemon locks everything it has loaded
(mlockall), and those modules were 7.8 MiB of its RSS and 10 MiB of its locked memory,
a third of its budget (bench/daemon_overhead.py, issue 10), for a server that answers one
GET. What the daemon exports is a dozen series, so the format is written here; tests parse
every scrape with prometheus-client's own parser and check it with ``promtool``.

The format, as the Prometheus "Exposition formats" page defines it: per family a ``# HELP``
and a ``# TYPE`` line, then ``name{label="value",...} value`` lines; counters carry the
``_total`` suffix; a histogram has cumulative ``_bucket{le=...}`` lines ending with
``le="+Inf"``, then ``_count`` and ``_sum``. HELP text escapes ``\\`` and newline; label
values also escape ``"``.

Thread-safe: the runtime's thread counts, the server's thread renders; one lock per
registry, held for a dict update or one rendering.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def format_value(v: float) -> str:
    """A sample value as Go's ParseFloat reads it: ``+Inf``, ``-Inf``, ``NaN``, else the
    shortest round-trip decimal (``1.0``, ``0.0005``, ``1.7e+09``)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Child:
    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def samples(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...], float]]:
        raise NotImplementedError


C = TypeVar("C", bound=_Child)


class Registry:
    """The families to render, in the order they were made, and one lock for all (held
    to change a value or to copy a list; never while rendering or asking a function)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._families: list[_Family[Any]] = []
        self._collectors: list[Callable[[], Iterator[str]]] = []

    def add(self, family: _Family[Any]) -> None:
        with self.lock:
            if any(f.name == family.name for f in self._families):
                raise ValueError(f"duplicate metric {family.name}")
            self._families.append(family)

    def add_collector(self, collect: Callable[[], Iterator[str]]) -> None:
        """A function that yields exposition lines of its own at each scrape."""
        self._collectors.append(collect)

    def render(self) -> bytes:
        """The whole exposition, UTF-8, one sample per line, ending with a newline."""
        lines: list[str] = []
        with self.lock:  # only to copy: a gauge's function is never asked under the lock
            families = list(self._families)
        for family in families:
            lines.extend(family.lines())
        for collect in self._collectors:
            lines.extend(collect())
        return ("\n".join(lines) + "\n").encode()

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None
                         ) -> float | None:
        """The value of one sample as rendered (``oomkit_ooms_total``, a histogram's
        ``_count``...), None when there is no such sample: what tests read."""
        wanted = labels or {}
        with self.lock:
            families = list(self._families)
        for family in families:
            for sample, names, values, value in family.samples():
                if sample == name and dict(zip(names, values, strict=True)) == wanted:
                    return value
        return None


class _Family(Generic[C]):
    """A metric with a fixed set of label names; its children are the label values seen."""

    kind: str = "untyped"
    suffix: str = ""

    def __init__(self, name: str, documentation: str, labelnames: list[str] | tuple[str, ...]
                 = (), *, registry: Registry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._registry = registry
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()
        registry.add(self)

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        """The child of these label values (made at 0 on first use)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._registry.lock:
                child = self._children.setdefault(key, self._new_child())
        return child

    def _only(self) -> C:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels: use .labels(...)")
        return self._children[()]

    def samples(self) -> Iterator[tuple[str, tuple[str, ...], tuple[str, ...], float]]:
        """(sample name, label names, label values, value) of every child."""
        for values, child in list(self._children.items()):
            for suffix, extra_names, extra_values, value in child.samples():
                yield (self.name + suffix, self.labelnames + extra_names,
                       values + extra_values, value)

    def lines(self) -> list[str]:
        exposed = self.name + self.suffix
        out = [f"# HELP {exposed} {_escape_help(self.documentation)}",
               f"# TYPE {exposed} {self.kind}"]
        for sample, names, values, value in self.samples():
            out.append(f"{sample}{_labels(names, values)} {format_value(value)}")
        return out


class _CounterChild(_Child):
    __slots__ = ("value",)

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self.value += amount

    def samples(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...], float]]:
        return [("_total", (), (), self.value)]


class Counter(_Family[_CounterChild]):
    """A count that only goes up; exposed as ``NAME_total``."""

    kind = "counter"
    suffix = "_total"

    def _new_child(self) -> _CounterChild:
        return _CounterChild(self._registry.lock)

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)


class _GaugeChild(_Child):
    __slots__ = ("function", "value")

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """The value is ``function()``, asked at each scrape."""
        self.function = function

    def samples(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...], float]]:
        value = self.value
        if self.function is not None:
            try:
                value = float(self.function())
            except Exception:  # a scrape shows NaN rather than failing
                value = math.nan
        return [("", (), (), value)]


class Gauge(_Family[_GaugeChild]):
    """A value that goes up and down, or a function asked at each scrape."""

    kind = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild(self._registry.lock)

    def set(self, value: float) -> None:
        self._only().set(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self._only().set_function(function)


class _HistogramChild(_Child):
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        super().__init__(lock)
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self.sum += value
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    self.counts[i] += 1
                    break

    def samples(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...], float]]:
        out: list[tuple[str, tuple[str, ...], tuple[str, ...], float]] = []
        with self._lock:  # the buckets, count and sum of one moment
            counts, total_sum = list(self.counts), self.sum
        total = 0
        for bound, count in zip(self.bounds, counts, strict=True):
            total += count
            out.append(("_bucket", ("le",), (format_value(bound),), float(total)))
        out.append(("_count", (), (), float(total)))
        out.append(("_sum", (), (), total_sum))
        return out


class Histogram(_Family[_HistogramChild]):
    """Observations counted in cumulative buckets (upper bounds, ``+Inf`` added)."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: list[str] | tuple[str, ...]
                 = (), *, buckets: tuple[float, ...], registry: Registry) -> None:
        bounds = tuple(sorted(float(b) for b in buckets))
        self.bounds = bounds if bounds and math.isinf(bounds[-1]) else (*bounds, math.inf)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._registry.lock, self.bounds)


def process_lines(proc: str = "/proc/self") -> Iterator[str]:
    """The standard ``process_*`` series of the exporter guidelines, from procfs: CPU
    seconds (utime + stime), virtual and resident memory, start time (seconds since the
    epoch), open and maximum file descriptors. A field that cannot be read is left out."""
    try:
        with open(f"{proc}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
        vsize, rss = int(fields[20]), int(fields[21])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        pass
    else:
        yield from _process_family("process_cpu_seconds_total", "counter",
                                   "Total user and system CPU time spent in seconds.",
                                   (utime + stime) / _TICKS)
        yield from _process_family("process_virtual_memory_bytes", "gauge",
                                   "Virtual memory size in bytes.", vsize)
        yield from _process_family("process_resident_memory_bytes", "gauge",
                                   "Resident memory size in bytes.", rss * _PAGE)
        yield from _process_family("process_start_time_seconds", "gauge",
                                   "Start time of the process since unix epoch in seconds.",
                                   btime + start / _TICKS)
    try:
        fds = len(os.listdir(f"{proc}/fd"))
    except OSError:
        pass
    else:
        yield from _process_family("process_open_fds", "gauge",
                                   "Number of open file descriptors.", fds)
    try:
        with open(f"{proc}/limits", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    if soft.isdigit():
                        yield from _process_family("process_max_fds", "gauge",
                                                   "Maximum number of open file descriptors.",
                                                   int(soft))
    except OSError:
        pass


def _process_family(name: str, kind: str, documentation: str, value: float) -> Iterator[str]:
    yield f"# HELP {name} {documentation}"
    yield f"# TYPE {name} {kind}"
    yield f"{name} {format_value(float(value))}"
