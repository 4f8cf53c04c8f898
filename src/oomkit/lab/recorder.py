"""The flight recorder: a bounded ring of samples, written out as an incident file.

The daemon keeps one (``[recorder]`` in its config); ``oomkit record`` runs one on its
own. Standard library only: the daemon imports this module.

A sample (oomkit.lab.samples) of the watched cgroups and their largest processes is
taken every ``interval_s``, or every ``pressure_interval_s`` while the machine is under
pressure (the root's memory some avg10 at 20 % or more, memory full at 5 %, IO full at
10 %, or a sampled cgroup within 10 % of its memory.max, or growing
fast enough to get there before the next idle sample; and for 10 s after): the minutes
before an OOM are the ones a replay needs in detail. Between idle samples a probe each
second reads the usage of the root and of the 8 sampled cgroups nearest their
memory.max, and samples at once (and fast from then on) when one grew by 5 % of its
limit since the last sample: a leak must not fill a memcg between two idle samples.
Samples are kept serialised, and the oldest dropped once they take more than
``size_bytes``.

An incident file is JSON lines: a header (``"event": "incident"``: why it was written,
the machine's memory and swap, the cgroup version, the intervals), the samples oldest
first, then the records that caused it (the OOM's event line). oomkit.lab.replay reads
it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from oomkit.errors import OomkitError
from oomkit.kernel.base import Cgroup, Kernel
from oomkit.lab.samples import Limits, machine_tasks, take_sample

# The machine is "under pressure" for the recorder at these avg10s (percent): well above
# what a busy but healthy machine shows (a few percent of memory some is common), well
# below where the recommended psi_declare acts (500 ms of full stall in 2 s: 25 %).
MEMORY_SOME_AVG10: Final = 20.0
MEMORY_FULL_AVG10: Final = 5.0
IO_FULL_AVG10: Final = 10.0
NEAR_LIMIT: Final = 0.9
PRESSURE_HOLD_S: Final = 10.0
MIN_USAGE: Final = 1 << 20  # below: usage and limits only (see samples.sample_cgroup)
PROBE_S: Final = 1.0  # between idle samples: see FlightRecorder.probe
#: ... while every probed cgroup has more than PROBE_ROOMY of its limit free, the probe
#: waits PROBE_ROOMY_S instead: a wake-up a second was most of the idle daemon's CPU, and
#: a cgroup half empty fills in one such gap only at 12 % of its limit per second
PROBE_ROOMY: Final = 0.5
PROBE_ROOMY_S: Final = 4.0
PROBE_CGROUPS: Final = 8
PROBE_GROWTH: Final = 0.05
#: A quiet machine (no pressure, no sampled cgroup moving by QUIET_SHARE of its limit, or
#: of the machine's memory, per idle interval) is sampled ever more rarely, doubling the
#: gap up to IDLE_STRETCH idle intervals: the daemon must idle as cheaply as earlyoom
#: (issue 10). A cgroup that starts to move brings the idle interval back at once.
IDLE_STRETCH: Final = 6
QUIET_SHARE: Final = 0.01
#: The tree is walked again (the largest cgroups picked anew) this often while idle; a
#: cgroup made or removed asks for a walk at once (invalidate), pressure every 10 s.
IDLE_WALK_S: Final = 1800.0
INCIDENT_VERSION: Final = 1
INCIDENT_GLOB: Final = re.compile(r"^incident-(\d{8}T\d{6}\.\d{3})(?:-\d+)?\.jsonl$")


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    """``[recorder]`` of the daemon's config. ``size_bytes`` 0 turns it off."""

    size_bytes: int = 4 << 20
    interval_s: float = 10.0
    pressure_interval_s: float = 0.5
    procs: int = 16
    cgroups: int = 64


def machine_of(kernel: Kernel) -> dict[str, int]:
    """The machine's memory and swap in bytes: /proc/meminfo live, the scenario's machine
    on the simulator; zeros when the backend has neither."""
    procfs = getattr(kernel, "procfs", None)
    if procfs is not None:
        with contextlib.suppress(OomkitError, OSError):
            info = procfs.meminfo()
            return {"memory": int(info.get("MemTotal", 0)),
                    "swap": int(info.get("SwapTotal", 0))}
    machine = getattr(kernel, "machine", None)
    if machine is not None:
        return {"memory": int(machine.memory), "swap": int(machine.swap)}
    return {"memory": 0, "swap": 0}


def _under_pressure(sample: dict[str, Any], prev: dict[str, Any] | None,
                    ahead_s: float) -> bool:
    """Pressure now, or a cgroup that, growing as it did since ``prev``, comes within
    10 % of its memory.max in ``ahead_s`` (a fast leak must not slip between samples)."""
    dt = sample["time"] - prev["time"] if prev is not None else 0.0
    for path, cg in sample["cgroups"].items():
        limit = cg.get("max")
        before = prev["cgroups"].get(path) if prev is not None and dt > 0 else None
        if limit and before is not None:
            rate = (cg["usage"] - before["usage"]) / dt
            if rate > 0 and cg["usage"] + rate * ahead_s >= NEAR_LIMIT * limit:
                return True
        psi = cg.get("psi") or {}
        if path == "/":
            mem, io = psi.get("memory"), psi.get("io")
            if mem and (mem[0] >= MEMORY_SOME_AVG10 or mem[1] >= MEMORY_FULL_AVG10):
                return True
            if io and io[1] >= IO_FULL_AVG10:
                return True
        limit = cg.get("max")
        if limit and cg["usage"] >= NEAR_LIMIT * limit:
            return True
    return False


def _quiet(sample: dict[str, Any], prev: dict[str, Any] | None, interval_s: float,
           memory: int) -> bool:
    """No sampled cgroup changed by more than QUIET_SHARE of its memory.max (of
    ``memory``, the machine's, without one) per ``interval_s`` since ``prev``, and the same
    cgroups were sampled."""
    if prev is None or sample["cgroups"].keys() != prev["cgroups"].keys():
        return False
    dt = sample["time"] - prev["time"]
    if dt <= 0:
        return False
    for path, cg in sample["cgroups"].items():
        limit = cg.get("max") or memory
        moved = abs(cg["usage"] - prev["cgroups"][path]["usage"]) * interval_s / dt
        if not limit or moved > QUIET_SHARE * limit:
            return False
    return True


class FlightRecorder:
    """Samples ``kernel`` into a ring. ``roots`` gives the cgroups to watch (each with
    its subtree; None or none given: the whole tree); at most ``settings.cgroups`` of
    them are sampled, the root and then the largest by usage. Thread-safe: ``run``
    samples on one thread while ``snapshot`` is called from another (the OOM path)."""

    def __init__(self, kernel: Kernel, settings: RecorderSettings, *,
                 roots: Callable[[], Iterable[Cgroup]] | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        self.kernel = kernel
        self.settings = settings
        self._roots = roots
        self._wall = wall
        self._ring: deque[str] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._cgroups: list[Cgroup] = []
        self._refresh_at = 0.0
        self._limits: Limits = {}
        self.pressure = False
        self.samples_taken = 0
        self._next_due = 0.0
        self._prev: dict[str, Any] | None = None
        self._fast_until = -1.0
        self.dropped = 0
        self._also: list[str] = []  # cgroups that had an OOM outside the watched roots
        self._partial = False  # the roots leave part of the tree out
        self._probes: list[tuple[Cgroup, int, int]] = []  # (cgroup, limit, usage then)
        self._probe_s = PROBE_S  # the gap to the next probe (see probe())
        self._probe_due = 0.0  # tick(): the next probe on the kernel's clock
        self._idle_s = settings.interval_s  # the idle gap now (see _next_interval)
        self._memory_total: int | None = None
        # called with the kernel's time after every sample (the daemon feeds the cause
        # ranking's growth samples from it); an error there never stops the recorder
        self.on_sample: Callable[[float], None] | None = None

    # -- sampling ----------------------------------------------------------------------------
    def _pick_cgroups(self) -> list[Cgroup]:
        root = self.kernel.root_mem_cgroup()
        roots = (list(self._roots()) if self._roots is not None else []) or [root]
        self._partial = root not in roots
        for path in self._also:
            cg = self.kernel.mem_cgroup(path)
            if cg is not None:
                roots.append(cg)
        seen: dict[int, Cgroup] = {root.id: root}
        for r in roots:
            try:
                for cg in r.walk():
                    seen.setdefault(cg.id, cg)
            except OomkitError:
                continue
        rest = [cg for cg in seen.values() if cg != root]
        if len(rest) >= self.settings.cgroups:
            sized: list[tuple[int, Cgroup]] = []
            for cg in rest:
                with contextlib.suppress(OomkitError):
                    sized.append((cg.usage(), cg))
            sized.sort(key=lambda x: -x[0])
            rest = [cg for _, cg in sized[: self.settings.cgroups - 1]]
        return [root, *rest]

    def sample_once(self) -> float:
        """Take one sample; the seconds until the next one is due."""
        now = self.kernel.clock.now()
        if now >= self._refresh_at or not self._cgroups:
            # Walking the tree (and reading the limits) every sample would cost more than
            # the sample: walk again every IDLE_WALK_S, every 10 s under pressure, and when
            # told (invalidate(): the daemon does on every cgroup_online event).
            self._cgroups = self._pick_cgroups()
            self._limits.clear()
            self._refresh_at = now + (10.0 if self.pressure else IDLE_WALK_S)
        # Watching part of the tree, the largest processes of the whole machine too: a
        # kernel OOM elsewhere must still find its processes' growth in the incident.
        more = machine_tasks(self.kernel, self.settings.procs) if self._partial else ()
        sample = take_sample(self.kernel, self._cgroups, max_procs=self.settings.procs,
                             limits=self._limits, min_usage=MIN_USAGE, more_tasks=more)
        if self._wall is not None:
            sample["wall"] = round(self._wall(), 3)
        if len(sample["cgroups"]) < len(self._cgroups):
            self._refresh_at = 0.0  # one vanished: walk again next time
        was = self.pressure
        prev = self._prev
        if _under_pressure(sample, prev, self.settings.interval_s):
            # Stay fast for a while: growth comes in steps, and one quiet sample
            # between them must not drop back to the idle interval.
            self._fast_until = now + PRESSURE_HOLD_S
        self.pressure = now < self._fast_until
        self._prev = sample
        self._set_probes(sample)
        if self.pressure and not was:
            self._refresh_at = 0.0
        self._push(json.dumps(sample, separators=(",", ":")))
        self.samples_taken += 1
        if self.on_sample is not None:
            with contextlib.suppress(Exception):
                self.on_sample(now)
        return self._next_interval(sample, prev)

    def _next_interval(self, sample: dict[str, Any], prev: dict[str, Any] | None) -> float:
        """pressure_interval_s under pressure; else interval_s, doubled (up to IDLE_STRETCH
        times) while the samples stay quiet and no cgroup, growing as it did, could come
        near its limit within the longer gap."""
        s = self.settings
        if self.pressure:
            self._idle_s = s.interval_s
            return s.pressure_interval_s
        longer = min(self._idle_s * 2, s.interval_s * IDLE_STRETCH)
        if self._memory_total is None:
            self._memory_total = machine_of(self.kernel)["memory"]
        quiet = (_quiet(sample, prev, s.interval_s, self._memory_total)
                 and not _under_pressure(sample, prev, longer))
        self._idle_s = longer if quiet else s.interval_s
        return self._idle_s

    def watch_also(self, path: str) -> bool:
        """Sample the cgroup at ``path`` (and its subtree) from now on, though no handler
        watches it: it had an OOM (at most 16 such, the newest kept). False if it is
        sampled already."""
        if path in self._also or any(cg.path == path for cg in self._cgroups):
            return False
        self._also = [*self._also[-15:], path]
        self._refresh_at = 0.0
        return True

    def invalidate(self) -> None:
        """The cgroup tree changed: walk it again at the next sample."""
        self._refresh_at = 0.0

    def tick(self) -> None:
        """Sample if one is due on the kernel's clock (for a caller that owns the loop,
        as the simulator's serve loop does), probing between idle samples as run() does:
        a simulated leak must be seen as early as a live one (tests/sim/cases/k09)."""
        if self.wants_sample(self.kernel.clock.now()):
            self.sample_due()

    def wants_sample(self, now: float, early: float = 0.0) -> bool:
        """Probe if a probe is due (``early`` s of slack: a caller that rides on another
        wake-up may come that much before the due time), then whether a sample is due.
        Never raises: a probe that fails is skipped."""
        if now + early < self._next_due and not self.pressure \
                and now + early >= self._probe_due:
            self._probe_due = now + self._probe_s
            try:
                if self.probe():
                    self._fast_until = now + PRESSURE_HOLD_S
                    self._next_due = now
            except Exception:
                pass
        return now + early >= self._next_due

    def sample_due(self) -> None:
        """Take the sample that :meth:`wants_sample` found due and plan the next one and
        the next probe. Never raises: a sample that fails is skipped."""
        now = self.kernel.clock.now()
        try:
            delay = self.sample_once()
        except Exception:
            delay = self.settings.interval_s
        self._next_due = now + delay
        self._probe_due = now + self._probe_s  # the sample is this probe's baseline

    def next_step(self, now: float) -> float:
        """Seconds from ``now`` until :meth:`wants_sample` has work: the next sample, or
        the next probe between idle samples."""
        due = self._next_due if self.pressure else min(self._next_due, self._probe_due)
        return max(0.0, due - now)

    def _push(self, line: str) -> None:
        with self._lock:
            self._ring.append(line)
            self._bytes += len(line) + 1
            while self._bytes > self.settings.size_bytes and len(self._ring) > 1:
                self._bytes -= len(self._ring.popleft()) + 1
                self.dropped += 1

    def run(self, stop: threading.Event) -> None:
        """Sample until ``stop`` is set (the recorder thread's body). A sample that fails
        is skipped: the recorder must never take the daemon down. The first sample waits
        a second: the daemon's start-up (imports, attach, mlockall) goes first."""
        if stop.wait(min(1.0, self.settings.interval_s)):
            return
        while not stop.is_set():
            try:
                delay = self.sample_once()
            except Exception:
                delay = self.settings.interval_s
            # Between idle samples a probe every second: a leak that fills a memcg (or the
            # machine) in less than the idle interval must not fall between two samples.
            while delay > self._probe_s and not self.pressure:
                if stop.wait(self._probe_s):
                    return
                delay -= self._probe_s
                try:
                    if self.probe():
                        self._fast_until = self.kernel.clock.now() + PRESSURE_HOLD_S
                        delay = 0.0
                except Exception:
                    pass
            stop.wait(delay)

    def probe(self) -> bool:
        """Whether the root or one of the (at most PROBE_CGROUPS) sampled cgroups nearest
        their memory.max grew by PROBE_GROWTH of its limit (the machine's memory for the
        root) since the last sample, or came within 10 % of it: one usage read each.
        Sets the gap to the next probe: PROBE_S, or PROBE_ROOMY_S while every one has more
        than PROBE_ROOMY of its limit free."""
        free = 1.0
        for cg, limit, before in self._probes:
            try:
                usage = cg.usage()
            except OomkitError:
                continue
            free = min(free, 1.0 - usage / limit)
            if usage >= NEAR_LIMIT * limit or usage - before >= PROBE_GROWTH * limit:
                self._probe_s = PROBE_S
                return True
        self._probe_s = PROBE_ROOMY_S if free > PROBE_ROOMY else PROBE_S
        return False

    def _set_probes(self, sample: dict[str, Any]) -> None:
        by_path = {cg.path: cg for cg in self._cgroups}
        if self._memory_total is None:
            self._memory_total = machine_of(self.kernel)["memory"]
        probes: list[tuple[Cgroup, int, int]] = []
        for path, one in sample["cgroups"].items():
            limit = self._memory_total if path == "/" else one.get("max")
            cg = by_path.get(path)
            if cg is not None and isinstance(limit, int) and 0 < limit < 1 << 60:
                probes.append((cg, limit, int(one["usage"])))
        probes.sort(key=lambda x: (x[0].path != "/", -x[2] / x[1]))
        self._probes = probes[:PROBE_CGROUPS]
        free = min((1.0 - usage / limit for _, limit, usage in self._probes), default=1.0)
        self._probe_s = PROBE_ROOMY_S if free > PROBE_ROOMY else PROBE_S

    # -- reading it out ----------------------------------------------------------------------
    def snapshot(self) -> list[str]:
        """The ring's lines, oldest first (a copy: cheap enough for the OOM path)."""
        with self._lock:
            return list(self._ring)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def header(self, reason: str) -> dict[str, Any]:
        h: dict[str, Any] = {
            "event": "incident", "version": INCIDENT_VERSION, "reason": reason,
            "time": round(self.kernel.clock.now(), 6), "machine": machine_of(self.kernel),
            "cgroup_version": getattr(self.kernel, "version", None),
            "interval_s": self.settings.interval_s,
            "pressure_interval_s": self.settings.pressure_interval_s}
        if self._wall is not None:
            h["wall"] = round(self._wall(), 3)
        return h


def write_incident(path: str, header: dict[str, Any], lines: Iterable[str],
                   records: Iterable[dict[str, Any]] = ()) -> None:
    """Write an incident file (0600, via a temporary name and a rename, so a reader never
    sees half of one). Raises OSError."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(header, separators=(",", ":")) + "\n")
        for line in lines:
            f.write(line + "\n")
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
    os.replace(tmp, path)


def incident_name(directory: str, wall: float, seq: int) -> str:
    """``DIR/incident-YYYYmmddTHHMMSS.mmm-N.jsonl`` (UTC): sorts by time."""
    import time

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}"
    return os.path.join(directory, f"incident-{stamp}-{seq}.jsonl")


def prune_incidents(directory: str, oldest_wall: float | None, *, keep_max: int = 100) -> int:
    """Remove incident files older than ``oldest_wall`` (the first record of the oldest
    event log file still kept: their OOM lines are gone with it), and all but the newest
    ``keep_max``. Returns how many were removed."""
    import calendar
    import time

    try:
        names = sorted(n for n in os.listdir(directory) if INCIDENT_GLOB.match(n))
    except OSError:
        return 0
    drop: list[str] = names[:max(0, len(names) - keep_max)]
    if oldest_wall is not None:
        for n in names[len(drop):]:
            m = INCIDENT_GLOB.match(n)
            assert m is not None
            stamp = m.group(1)
            t = calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S"))
            if t + 1 < oldest_wall:
                drop.append(n)
    removed = 0
    for n in drop:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, n))
            removed += 1
    return removed
