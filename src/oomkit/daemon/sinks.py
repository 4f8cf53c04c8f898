"""One runtime sink that fans each event out to the daemon's outputs, none of which may fail.

:class:`Dispatch` turns an event into its JSON record once, adds what the daemon knows
(``wall``: the epoch time; in a dry run ``dry_run`` and the ``would`` actions), and hands
event and record to each output: the event log, the status file, metrics, the terminal.
An output that raises is reported on stderr (rate-limited) and skipped: the runtime calls
sinks inside the OOM path, which must not fail because of a full disk or a closed pipe.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from oomkit.events import Event, OomEvent
from oomkit.report import event_lines

Record = dict[str, Any]
RecordSink = Callable[[Event, Record], None]


class Dispatch:
    def __init__(
        self,
        *,
        wall: Callable[[], float],
        take_would: Callable[[], list[str]] | None = None,
    ) -> None:
        self._wall = wall
        self._take_would = take_would
        self._outputs: list[tuple[str, RecordSink]] = []
        self._lock = threading.Lock()
        self.failures: dict[str, int] = {}

    def add(self, name: str, sink: RecordSink) -> None:
        self._outputs.append((name, sink))

    def add_event_sink(self, name: str, sink: Callable[[Event], None]) -> None:
        self._outputs.append((name, lambda event, _record: sink(event)))

    def remove(self, name: str) -> None:
        self._outputs = [(n, s) for n, s in self._outputs if n != name]

    def record_of(self, event: Event) -> Record:
        record = event.to_dict()
        record["wall"] = round(self._wall(), 3)
        if self._take_would is not None:
            record["dry_run"] = True
            if isinstance(event, OomEvent):
                record["would"] = self._take_would()
        return record

    def __call__(self, event: Event) -> None:
        try:
            record = self.record_of(event)
        except Exception as exc:
            self._failed("record", exc)
            return
        for name, sink in list(self._outputs):
            try:
                sink(event, record)
            except Exception as exc:
                self._failed(name, exc)

    def _failed(self, name: str, exc: Exception) -> None:
        with self._lock:
            n = self.failures.get(name, 0) + 1
            self.failures[name] = n
        if n == 1 or n % 1000 == 0:
            try:
                print(f"oomkit: output {name} failed ({n}x): {type(exc).__name__}: {exc}",
                      file=sys.stderr)
            except Exception:
                pass


def format_wall(wall: float | None) -> str:
    if wall is None:
        return "-"
    t = time.localtime(wall)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{int((wall % 1) * 1000):03d}"


def record_lines(record: Record) -> list[str]:
    """A record as readable lines: report.event_lines, plus what a dry run adds."""
    dry = bool(record.get("dry_run")) and record.get("event") == "oom" and \
        record.get("resolved_by") != "kernel"
    if record.get("event") == "daemon":
        lines = [f"daemon    {record.get('action', '?')}: {record.get('detail', '')}"]
    elif dry:
        # The victims of a dry run are the would-be victims: shown as "would kill" below.
        lines = [line.replace("the default killer ran", "the default killer would run")
                 for line in event_lines({**record, "victims": [], "note": ""})]
        lines[0] += "  [DRY RUN: nothing was killed]"
        lines.extend(f"          would {w}" for w in record.get("would", []))
    else:
        lines = event_lines(record)
    return lines


def write_record(out: TextIO, record: Record) -> None:
    """One record with its wall-clock time (the event log's readable form)."""
    lines = record_lines(record)
    stamp = format_wall(record.get("wall"))
    out.write(f"{stamp}  {lines[0]}\n")
    pad = " " * (len(stamp) + 2)
    for line in lines[1:]:
        out.write(f"{pad}{line}\n")


class Printer:
    """Events on a terminal: JSON lines, or the readable form."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json

    def __call__(self, event: Event, record: Record) -> None:
        if self.as_json:
            self.out.write(json.dumps(record, separators=(", ", ": "), default=str) + "\n")
        else:
            write_record(self.out, record)
        self.out.flush()
