"""The status file ``oomkit status`` reads: handlers, watched cgroups, the last OOMs.

The daemon keeps the state in memory and rewrites the file (a temporary file renamed over
the old one, so a reader never sees half of it) on attach, detach, OOM, reload and exit.
The write itself goes through ``defer`` (the housekeeping thread), never the OOM path.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any, Final

from oomkit.events import AttachEvent, DetachEvent, ErrorEvent, Event, OomEvent
from oomkit.privfile import make_private_dirs, replace_private

STATUS_VERSION: Final = 1
KEEP_OOMS: Final = 10

Defer = Callable[[str, Callable[[], None]], None]


def _oom_brief(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("time", "wall", "memcg", "constraint", "constraint_text", "policy", "resolved_by",
            "victims", "note", "dry_run", "would")
    return {k: record[k] for k in keys if k in record}


class Status:
    def __init__(
        self,
        path: str,
        *,
        info: dict[str, Any],
        handlers: Callable[[], list[dict[str, Any]]],
        watched: Callable[[], int],
        wall: Callable[[], float],
        defer: Defer | None = None,
    ) -> None:
        self.path = path
        self._info = dict(info)
        self._handlers = handlers
        self._watched = watched
        self._wall = wall
        self._defer = defer
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ooms: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEEP_OOMS)
        self._counts = {"ooms": 0, "kills": 0, "errors": 0}
        self._reloads: dict[str, Any] = {"ok": 0, "failed": 0, "last_error": None,
                                         "last_wall": None}
        self._last_error: dict[str, Any] | None = None
        self._running = True
        self._started = wall()
        self.writes = 0

    # -- the sink ----------------------------------------------------------------------------
    def __call__(self, event: Event, record: dict[str, Any]) -> None:
        if isinstance(event, OomEvent):
            with self._lock:
                self._ooms.append(_oom_brief(record))
                self._counts["ooms"] += 1
                self._counts["kills"] += len(event.victims)
        elif isinstance(event, ErrorEvent):
            with self._lock:
                self._counts["errors"] += 1
                self._last_error = {"wall": record.get("wall"), "where": event.where,
                                    "error": event.error}
        elif not isinstance(event, AttachEvent | DetachEvent):
            return
        self.changed()

    def note_reload(self, ok: bool, error: str | None = None) -> None:
        with self._lock:
            self._reloads["ok" if ok else "failed"] += 1
            self._reloads["last_error"] = None if ok else error
            self._reloads["last_wall"] = round(self._wall(), 3)
        self.changed()

    def update_info(self, **info: Any) -> None:
        with self._lock:
            self._info.update(info)
        self.changed()

    def changed(self) -> None:
        if self._defer is not None:
            self._defer(f"status:{id(self)}", self.write)
        else:
            self.write()

    # -- the file ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        handlers = self._handlers()
        watched = self._watched()
        with self._lock:
            return {
                "version": STATUS_VERSION,
                **self._info,
                "running": self._running,
                "started": round(self._started, 3),
                "updated": round(self._wall(), 3),
                "handlers": handlers,
                "watched_cgroups": watched,
                "counts": dict(self._counts),
                "reloads": dict(self._reloads),
                "last_error": self._last_error,
                "last_ooms": list(self._ooms),
            }

    def write(self) -> None:
        with self._write_lock:  # the housekeeping thread, and close() at the end
            data = json.dumps(self.snapshot(), indent=1, default=str) + "\n"
            make_private_dirs(os.path.dirname(os.path.abspath(self.path)))
            replace_private(self.path, data.encode())  # 0600 via mkstemp (O_EXCL)
            self.writes += 1

    def close(self) -> None:
        """The daemon stops: say so in the file (it stays, for a post-mortem)."""
        with self._lock:
            self._running = False
        with contextlib.suppress(OSError):
            self.write()


def read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
