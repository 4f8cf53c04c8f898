"""The daemon's outputs: event log, metrics, status file, terminal or journal, behind one
Dispatch.

:class:`Outputs` opens what a config asks for (``open``), moves or reopens what a reload
changes (``apply``: a failure keeps the old output and is reported, never raised), and
closes everything (``close``, safe after a failed start). The daemon owns the kernel, the
runtime and the handlers; this module owns where their events go.

Outputs never sit on the OOM path except through :class:`Dispatch`, which catches every
failure: a full disk or a closed terminal does not stop a kill.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TextIO

from oomkit.daemon.config import Config, Listen
from oomkit.daemon.eventlog import EventLog
from oomkit.daemon.journal import Journal
from oomkit.daemon.sinks import Dispatch, Record
from oomkit.daemon.status import Defer, Status
from oomkit.errors import ConfigError
from oomkit.events import Event
from oomkit.report import Printer

#: Called with (where, message) for a problem the outputs met and survived.
Report = Callable[[str, str], None]


class Outputs:
    """Where the daemon's events go. ``dispatch`` is the runtime's sink."""

    def __init__(
        self,
        *,
        wall: Callable[[], float],
        defer: Defer,
        backend_name: str,
        handlers: Callable[[], list[dict[str, Any]]],
        watched: Callable[[], int],
        take_would: Callable[[], list[str]] | None = None,
        out: TextIO | None = None,
        as_json: bool = False,
        journal: Journal | None = None,
    ) -> None:
        self._wall = wall
        self._defer = defer
        self._backend_name = backend_name
        self._handlers = handlers
        self._watched = watched
        self._out = out
        self._as_json = as_json
        self.journal = journal
        self.dispatch = Dispatch(wall=wall, take_would=take_would)
        self.eventlog: EventLog | None = None
        self.status: Status | None = None
        self.metrics: Any = None  # oomkit.daemon.metrics.Metrics, imported only when used
        self.metrics_server: Any = None

    # -- open --------------------------------------------------------------------------------
    def open(self, cfg: Config) -> list[tuple[str, str]]:
        """Open every output ``cfg`` asks for. An event log or metrics server that cannot
        start is left out: returned as (where, ConfigError text naming the key) for the
        caller to report, since OOM handling must not depend on it."""
        failed: list[tuple[str, str]] = []
        try:
            self.eventlog = self._open_eventlog(cfg)
        except ConfigError as exc:
            failed.append(("event log", str(exc)))
        self.dispatch.add("event log", self._log_record)
        if cfg.metrics is not None:
            try:
                self._start_metrics(cfg)
            except ConfigError as exc:
                failed.append(("metrics", str(exc)))
        if cfg.daemon.status_file:
            self.status = self._new_status(cfg)
            self.dispatch.add("status", self.status)
        if self.journal is not None:  # under systemd: entries with fields, not lines
            self.dispatch.add("journal", self.journal)
        elif self._out is not None:
            self.dispatch.add("terminal", Printer(self._out, self._as_json,
                                                  wall_stamps=self._backend_name != "sim"))
        return failed

    def _open_eventlog(self, cfg: Config) -> EventLog:
        d = cfg.daemon
        try:
            return EventLog(d.event_log, max_bytes=d.event_log_max, keep=d.event_log_keep,
                            defer=self._defer)
        except OSError as exc:
            raise cfg.error(("daemon", "event_log"), f"cannot open {d.event_log}: "
                            f"{exc.strerror}") from None

    def _log_record(self, event: Event, record: Record) -> None:
        log = self.eventlog
        if log is not None:
            log.write(record)

    def _start_metrics(self, cfg: Config) -> None:
        from oomkit.daemon.metrics import Metrics, MetricsServer

        assert cfg.metrics is not None
        if self.metrics is None:
            self.metrics = Metrics()
            self.metrics.watch_cgroups(self._watched)
            self.metrics.dry_run.set(1 if cfg.daemon.dry_run else 0)
            self.metrics.up_since.set(self._wall())
            self.dispatch.add_event_sink("metrics", self.metrics)
        try:
            self.metrics_server = MetricsServer(self.metrics, cfg.metrics)
        except OSError as exc:
            raise cfg.error(("metrics", "listen"), str(exc.strerror or exc)) from None
        if self.status is not None:
            self.status.update_info(metrics=self.metrics_address)

    @property
    def metrics_address(self) -> str | None:
        """Where /metrics is served (with the real port when the config said 0)."""
        server = self.metrics_server
        if server is None:
            return None
        return str(Listen(server.listen.host, server.port))

    def event_log_path(self, cfg: Config) -> str:
        """The event log being written (the config's unless a reload could not open it)."""
        return self.eventlog.path if self.eventlog is not None else cfg.daemon.event_log

    def _new_status(self, cfg: Config) -> Status:
        info = {"pid": os.getpid(), "config": cfg.path, "dry_run": cfg.daemon.dry_run,
                "backend": self._backend_name, "event_log": self.event_log_path(cfg),
                "metrics": self.metrics_address}
        return Status(cfg.daemon.status_file, info=info, handlers=self._handlers,
                      watched=self._watched, wall=self._wall, defer=self._defer)

    # -- reload ------------------------------------------------------------------------------
    def note_reload(self, ok: bool, error: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels("ok" if ok else "failed").inc()
        if self.status is not None:
            self.status.note_reload(ok, error)

    def apply(self, old: Config, new: Config, report: Report) -> None:
        """Event log, metrics and status settings take effect on reload; a failure there is
        reported and the old output kept."""
        od, nd = old.daemon, new.daemon
        # Compared with the log in use, not the old config's: a reload that could not open
        # its log kept the one before, and a later reload must still move to the new one.
        using = self.eventlog
        in_use = (using.path, using.max_bytes, using.keep) if using is not None else None
        if in_use != (nd.event_log, nd.event_log_max, nd.event_log_keep):
            try:
                log = self._open_eventlog(new)
            except ConfigError as exc:
                report("reload", f"{exc}; keeping {using.path if using else od.event_log}")
            else:
                old_log, self.eventlog = self.eventlog, log
                if old_log is not None:
                    old_log.close()
        if old.metrics != new.metrics:
            self._move_metrics(old, new, report)
        if od.status_file != nd.status_file:
            if self.status is not None:
                self.status.close()
                self.dispatch.remove("status")
                self.status = None
            if nd.status_file:
                self.status = self._new_status(new)
                self.dispatch.add("status", self.status)
        if self.status is not None:
            self.status.update_info(config=new.path, event_log=self.event_log_path(new),
                                    metrics=self.metrics_address)

    def _move_metrics(self, old: Config, new: Config, report: Report) -> None:
        """Serve /metrics where the new config says; on failure keep the old address."""
        previous, self.metrics_server = self.metrics_server, None
        if new.metrics is None:
            if previous is not None:
                previous.close()
            return
        try:
            self._start_metrics(new)  # the old server still runs: a new port is free
        except ConfigError:
            if previous is not None:
                previous.close()  # same port on another address: free it first
                previous = None
            try:
                self._start_metrics(new)
            except ConfigError as exc:
                report("reload", f"{exc}; metrics stay on {old.metrics}")
                if old.metrics is not None:
                    with contextlib.suppress(ConfigError):
                        self._start_metrics(old)
        if previous is not None:
            previous.close()

    # -- close -------------------------------------------------------------------------------
    def log_error(self, where: str, message: str) -> None:
        """An error written straight to the event log (when the runtime is gone)."""
        if self.eventlog is not None:
            self.eventlog.write({"event": "error", "time": 0.0, "wall": self._wall(),
                                 "where": where, "error": message})

    def close_servers(self) -> None:
        """Stop serving /metrics and write the status file a last time."""
        if self.metrics_server is not None:
            with contextlib.suppress(Exception):
                self.metrics_server.close()
            self.metrics_server = None
        if self.status is not None:
            with contextlib.suppress(Exception):
                self.status.close()
        if self.journal is not None:
            self.journal.close()

    def close_eventlog(self) -> None:
        """Close the event log (after the housekeeper, which may still sync it, stopped)."""
        if self.eventlog is not None:
            with contextlib.suppress(Exception):
                self.eventlog.close()
            self.eventlog = None
