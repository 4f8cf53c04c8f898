"""One runtime sink that fans each event out to the daemon's outputs, none of which may fail.

:class:`Dispatch` turns an event into its JSON record once, adds what the daemon knows
(``wall``: the epoch time; in a dry run ``dry_run`` and the ``would`` actions), and hands
event and record to each output: the event log, the status file, metrics, the terminal.
An output that raises is reported on stderr (rate-limited) and skipped: the runtime calls
sinks inside the OOM path, which must not fail because of a full disk or a closed pipe.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from oomkit.events import Event, OomEvent

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
