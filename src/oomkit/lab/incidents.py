"""The daemon's flight recorder: its timer on the event loop, and an incident file per OOM.

Standard library only (the daemon imports it). On the OOM path the daemon's event
dispatch calls :meth:`Incidents.on_record` before the event log writes the OOM's line:
it copies the ring (a list copy, no I/O), names the incident file in the record
(``"incident": PATH``) and hands the writing to the housekeeping thread, so the OOM path
never waits for the disk. Incident files live beside the event log and go when the event
log file that names them is rotated out (:func:`oomkit.lab.recorder.prune_incidents`).

Two OOMs need more than the ring:

- one in a memcg the recorder does not sample (a kernel OOM where no handler watches):
  one more sample of that memcg's subtree is taken at once (its limits and the tasks
  left; the recorder's samples already hold the machine's largest processes), and the
  recorder samples it from then on;
- one the handlers passed to the kernel's killer (a hand-over: ``resolved_by``
  "default", no victim of ours): the kernel kills after the event. The writer waits up
  to :data:`KILL_WAIT_S` for a task of the memcg, as last sampled, to vanish and names
  it as the victim, with its comm and rss from the kernel's "Killed process" line in
  /dev/kmsg when readable (``"victims_from"``: ``"/dev/kmsg"`` or ``"vanished"``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from oomkit.daemon.eventlog import log_files
from oomkit.errors import OomkitError
from oomkit.events import CgroupOnlineEvent, Event, OomEvent
from oomkit.kernel.base import Cgroup, Kernel
from oomkit.lab.recorder import (
    FlightRecorder,
    RecorderSettings,
    incident_name,
    prune_incidents,
    write_incident,
)
from oomkit.lab.samples import machine_tasks, take_sample

KILL_WAIT_S: Final = 5.0  # a hand-over's kill: v2 waits for memory.max, a TCG guest is slow
KMSG: Final = "/dev/kmsg"


class Scheduler(Protocol):
    """What :meth:`Incidents.start` needs of an event loop
    (oomkit.kernel.linux.loop.EventLoop): a callback on the loop's thread ``delay`` s from
    now, or up to ``early`` s sooner if the loop is awake anyway; the returned timer has
    ``early`` and a ``cancelled`` flag that drops it."""

    def call_later(self, delay: float, callback: Callable[[], None],
                   early: float = 0.0) -> Any: ...


def _first_wall(path: str) -> float | None:
    """The ``wall`` of the first record of an event log file (None if it has none)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
        wall = json.loads(line).get("wall")
        return float(wall) if wall is not None else None
    except (OSError, ValueError, AttributeError):
        return None


class Incidents:
    """``event_log``: the daemon's event log path (incidents go to its directory);
    ``defer(key, job)``: run a job on
    the housekeeping thread; ``on_error(message)``: report a failed write; ``context()``:
    more header fields (the daemon's config path and attached handlers, for the replay)."""

    def __init__(self, kernel: Kernel, settings: RecorderSettings, *, event_log: str,
                 roots: Callable[[], Iterable[Cgroup]] | None,
                 wall: Callable[[], float],
                 defer: Callable[[str, Callable[[], None]], None],
                 on_error: Callable[[str], None],
                 context: Callable[[], dict[str, Any]] | None = None) -> None:
        self.recorder = FlightRecorder(kernel, settings, roots=roots, wall=wall)
        self.event_log = event_log
        self._wall = wall
        self._defer = defer
        self._on_error = on_error
        self._context = context
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: Scheduler | None = None  # start(loop): the recorder rides on it
        self._timer: Any = None  # the loop's Timer of the next probe or sample
        self._timer_lock = threading.Lock()
        self._seq = 0
        self._waiting: list[threading.Thread] = []  # hand-overs waiting for the kill
        self.written: list[str] = []

    def start(self, loop: Scheduler | None = None) -> None:
        """Sample from now on. With ``loop`` (the live kernel's event loop) the recorder has
        no thread: its probe runs on the loop's thread, booked as a timer that may come up
        to half its delay early, so that it rides on the wake-ups the loop has anyway (the
        MemAvailable watch's, the heartbeat's) instead of waking the daemon itself; a due
        sample (tens of cgroup files, a tree walk now and then) is handed to ``defer``
        (the housekeeping thread), never taking the loop's time from an OOM. Without
        ``loop``: a thread of its own (:meth:`FlightRecorder.run`)."""
        if loop is None:
            self._thread = threading.Thread(target=self.recorder.run, args=(self._stop,),
                                            name="oomkit-recorder", daemon=True)
            self._thread.start()
            return
        self._loop = loop
        # The first sample waits a second: the daemon's start-up goes first.
        self._book(min(1.0, self.recorder.settings.interval_s))

    def _book(self, delay: float) -> None:
        """(Re)book the recorder's timer ``delay`` s from now (any thread)."""
        loop = self._loop
        if loop is None or self._stop.is_set():
            return
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancelled = True
            self._timer = loop.call_later(delay, self._on_timer, early=delay / 2)

    def _on_timer(self) -> None:
        """On the loop's thread: probe if due; a due sample goes to the housekeeping
        thread, which books the next step once it is taken."""
        rec = self.recorder
        with self._timer_lock:
            timer, self._timer = self._timer, None
        now = rec.kernel.clock.now()
        early = timer.early if timer is not None else 0.0
        if self._stop.is_set():
            return
        if rec.wants_sample(now, early):
            self._defer("flight recorder sample", self._sample)
            return
        self._book(rec.next_step(now))

    def _sample(self) -> None:
        """The housekeeping thread's job: one sample, then the next step booked."""
        rec = self.recorder
        rec.sample_due()
        self._book(rec.next_step(rec.kernel.clock.now()))

    def close(self) -> None:
        self._stop.set()
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancelled = True
                self._timer = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for waiter in self._waiting:  # they stop waiting now and hand the write over
            waiter.join(timeout=5)
        self._waiting = []

    def on_record(self, event: Event, record: dict[str, Any]) -> None:
        """A dispatch sink: for an OOM, name an incident file in its record and have it
        written. Must run before the event log's sink."""
        if isinstance(event, CgroupOnlineEvent):
            self.recorder.invalidate()
            return
        if not isinstance(event, OomEvent):
            return
        lines = self.recorder.snapshot()
        header = self.recorder.header("oom")
        if self._context is not None:
            with contextlib.suppress(Exception):
                header.update(self._context())  # which config and handlers ran
        if event.memcg is not None and self.recorder.watch_also(event.memcg):
            lines = [*lines, *self._sample_of(event.memcg)]
        if not lines:  # an OOM before the first sample (in the daemon's first second)
            lines = self._sample_of(None)
        self._seq += 1
        path = incident_name(os.path.dirname(self.event_log) or ".", self._wall(), self._seq)
        record["incident"] = path
        oom_line = dict(record)
        handed_over = (event.resolved_by == "default" and not event.victims
                       and event.memcg is not None and "kernel OOM killer acts" in event.note
                       and getattr(self.recorder.kernel, "procfs", None) is not None)

        def job() -> None:
            if handed_over and lines:
                self._kernel_victims(oom_line, str(event.memcg), lines[-1])
                self._defer(f"incident {path}", write)  # the waiting is done: write it
                return
            write()

        def write() -> None:
            try:
                write_incident(path, header, lines, [oom_line])
                self.written.append(path)
            except OSError as exc:
                self._on_error(f"incident {path}: {exc.strerror or exc}")
                return
            files = log_files(self.event_log)
            with contextlib.suppress(OSError):
                prune_incidents(os.path.dirname(path), _first_wall(files[0]) if files else None)

        if handed_over and lines:
            # Waiting for the kernel's kill takes seconds: on a thread of its own, not the
            # housekeeping thread's (status file, event log sync).
            waiter = threading.Thread(target=job, name="oomkit-incident", daemon=True)
            self._waiting = [t for t in self._waiting if t.is_alive()] + [waiter]
            waiter.start()
        else:
            self._defer(f"incident {path}", job)

    def _sample_of(self, memcg: str | None) -> list[str]:
        """One sample of ``memcg``'s subtree now (after its OOM); none if it is gone.
        None: the root cgroup and the machine's largest processes."""
        kernel = self.recorder.kernel
        cg = kernel.mem_cgroup(memcg) if memcg is not None else kernel.root_mem_cgroup()
        if cg is None:
            return []
        n = self.recorder.settings.procs
        try:
            sample = take_sample(kernel, list(cg.walk()) if memcg is not None else [cg],
                                 max_procs=n,
                                 more_tasks=machine_tasks(kernel, n) if memcg is None else ())
        except (OomkitError, OSError):
            return []
        sample["after_oom"] = True
        return [json.dumps(sample, separators=(",", ":"))]

    def _kernel_victims(self, oom_line: dict[str, Any], memcg: str, last: str) -> None:
        """A hand-over: the kernel's victim, as a task of ``memcg`` in the ``last`` sample
        that vanished after the OOM (named as /dev/kmsg's "Killed process" line names it,
        if readable). Runs on the housekeeping thread; waits at most KILL_WAIT_S."""
        try:
            procs = [p for p in json.loads(last)["procs"]
                     if p["cgroup"] == memcg or p["cgroup"].startswith(memcg.rstrip("/") + "/")]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if not procs:
            return
        kernel = self.recorder.kernel
        deadline = kernel.clock.now() + KILL_WAIT_S
        gone: list[dict[str, Any]] = []
        while True:
            alive: set[int] = set()
            for cgroup in {p["cgroup"] for p in procs}:
                cg = kernel.mem_cgroup(cgroup)
                with contextlib.suppress(OomkitError):
                    alive.update(t.pid for t in (cg.tasks() if cg is not None else ()))
            gone = [p for p in procs if p["pid"] not in alive]
            if gone or kernel.clock.now() >= deadline or self._stop.wait(0.05):
                break
        if not gone:
            oom_line["victims_from"] = f"none within {KILL_WAIT_S:g} s"
            return
        killed = _kmsg_killed({p["pid"] for p in gone})
        victims = []
        for p in gone:
            k = killed.get(p["pid"])
            victims.append({"pid": p["pid"], "comm": k[0] if k else p["comm"],
                            "cgroup": p["cgroup"], "rss": k[1] if k else p["rss"]})
        oom_line["victims"] = victims
        oom_line["victims_from"] = KMSG if killed else "vanished"


def _kmsg_killed(pids: set[int]) -> dict[int, tuple[str, int]]:
    """pid -> (comm, rss bytes) of the kernel OOM killer's "Killed process" records for
    ``pids`` in /dev/kmsg (the whole buffer, the latest record per pid); empty when
    /dev/kmsg is not readable (no CAP_SYSLOG)."""
    from oomkit.kernel.linux import kmsg

    found: dict[int, tuple[str, int]] = {}
    try:
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return found
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # overwritten while we read: go on from the next
                break
            if not record:
                break
            parsed = kmsg.parse_message(kmsg.split_record(record))
            if isinstance(parsed, kmsg.KilledProcess) and parsed.pid in pids:
                found[parsed.pid] = (parsed.comm, parsed.rss)
    finally:
        os.close(fd)
    return found
