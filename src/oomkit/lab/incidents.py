"""The daemon's flight recorder: its thread, and an incident file for every OOM.

Standard library only (the daemon imports it). On the OOM path the daemon's event
dispatch calls :meth:`Incidents.on_record` before the event log writes the OOM's line:
it copies the ring (a list copy, no I/O), names the incident file in the record
(``"incident": PATH``) and hands the writing to the housekeeping thread, so the OOM path
never waits for the disk. Incident files live beside the event log and go when the event
log file that names them is rotated out (:func:`oomkit.lab.recorder.prune_incidents`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from oomkit.daemon.eventlog import log_files
from oomkit.events import CgroupOnlineEvent, Event, OomEvent
from oomkit.kernel.base import Cgroup, Kernel
from oomkit.lab.recorder import (
    FlightRecorder,
    RecorderSettings,
    incident_name,
    prune_incidents,
    write_incident,
)


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
        self._seq = 0
        self.written: list[str] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self.recorder.run, args=(self._stop,),
                                        name="oomkit-recorder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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
        self._seq += 1
        path = incident_name(os.path.dirname(self.event_log) or ".", self._wall(), self._seq)
        record["incident"] = path
        oom_line = dict(record)

        def job() -> None:
            try:
                write_incident(path, header, lines, [oom_line])
                self.written.append(path)
            except OSError as exc:
                self._on_error(f"incident {path}: {exc.strerror or exc}")
                return
            files = log_files(self.event_log)
            with contextlib.suppress(OSError):
                prune_incidents(os.path.dirname(path), _first_wall(files[0]) if files else None)

        self._defer(f"incident {path}", job)
