"""Prometheus metrics: an event sink that counts, and a small HTTP server for ``/metrics``.

The sink only increments counters (a dict lookup and a short lock per metric): the OOM path
never waits for a scrape, and a failure here is swallowed, never raised into the runtime.
The series and their text format are :mod:`oomkit.daemon.prom` (prometheus-client would
bring OpenSSL, urllib and http.server into the locked daemon: see there); the HTTP side is
``socketserver`` and a request parser of a few lines, which is all a scrape needs.

The server runs in one thread of its own, blocked in ``select`` with no timeout (no idle
wake-ups); each connection gets a thread (at most 16 at once) and a 2 s socket timeout, so
a stuck client can only hold its own thread.

Conventions, as exporters keep them (node_exporter, the Prometheus "Writing exporters"
guide): no ``_created`` series (they double every counter); ``oomkit_build_info`` with the
version; label values from fixed sets (``resolved_by``, ``constraint``, error ``where``),
or names sanitised to ``[A-Za-z0-9_.:-]`` (handlers and policies, which the config names);
``GET``/``HEAD /metrics`` answer 200, ``/`` a short page, any other path 404, any other
method 405, a request that is not HTTP 400. ``promtool check metrics`` passes on a scrape
(tests/unit/test_metrics.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

from oomkit import forkguard
from oomkit.daemon.config import Listen
from oomkit.daemon.prom import CONTENT_TYPE, Counter, Gauge, Histogram, Registry, process_lines
from oomkit.events import (
    AttachEvent,
    DetachEvent,
    ErrorEvent,
    Event,
    HandlerErrorEvent,
    OomEvent,
    PsiEventRecord,
)
from oomkit.meta import package_version

#: Handler durations: budgets are around 0.1-1 s; most handlers take microseconds.
DURATION_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 5.0, 10.0)

#: Label values of ``resolved_by`` (who ended the OOM: SPEC section 2).
RESOLVED_BY: Final = ("handler", "default", "kernel")
#: Label values of ``constraint``: the kernel's ``enum oom_constraint`` in lower case
#: (``none`` is the whole machine), and ``declared`` for ``out_of_memory()`` (PSI policies).
CONSTRAINTS: Final = ("none", "cpuset", "memory_policy", "memcg", "declared")
#: Label values of ``oomkit_errors_total{where}``: the first word of an error's place.
ERROR_PLACES: Final = ("reload", "self_protection", "serve", "shutdown", "event_log",
                       "output", "other")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


def name_label(name: str) -> str:
    """A handler or policy name as a label value: no spaces, quotes or slashes, at most 64
    characters (names come from the config, so their number is bounded)."""
    return _UNSAFE.sub("_", name)[:64] or "_"


def error_place(where: str) -> str:
    """'self-protection: mlockall' -> 'self_protection'; an unknown place -> 'other'."""
    head = where.split(":", 1)[0].strip().lower().replace("-", "_").replace(" ", "_")
    return head if head in ERROR_PLACES else "other"


class Metrics:
    """The daemon's metrics in a registry of their own (plus the process collector)."""

    def __init__(self, *, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        r.add_collector(process_lines)
        self.build_info = Gauge("oomkit_build_info", "Always 1: the oomkit version running",
                                ["version", "python_version"], registry=r)
        # sys.version's first word is what platform.python_version() returns
        self.build_info.labels(package_version(), sys.version.split()[0]).set(1)
        self.ooms = Counter("oomkit_ooms", "OOMs seen, by who resolved them, the policy that "
                            "made progress and the kind of OOM (none: the whole machine)",
                            ["resolved_by", "policy", "constraint"], registry=r)
        self.kills = Counter("oomkit_kills", "Processes killed for OOMs, by who resolved them "
                             "and the kind of OOM", ["resolved_by", "constraint"], registry=r)
        self.handler_duration = Histogram(
            "oomkit_handler_duration_seconds", "Time one handle_out_of_memory call took",
            ["handler"], buckets=DURATION_BUCKETS, registry=r)
        self.handler_errors = Counter(
            "oomkit_handler_errors", "Handler calls that raised or overran their budget",
            ["handler", "callback", "kind"], registry=r)
        self.psi_events = Counter("oomkit_psi_events", "PSI trigger events",
                                  ["resource", "kind"], registry=r)
        self.errors = Counter("oomkit_errors", "Errors outside handlers (config reloads, "
                              "event log, self-protection)", ["where"], registry=r)
        self.attached = Gauge("oomkit_attached_handlers", "Attached handlers", ["ops"],
                              registry=r)
        self.watched = Gauge("oomkit_watched_cgroups",
                             "Cgroups whose OOMs reach the handlers", registry=r)
        self.reloads = Counter("oomkit_config_reloads", "Config reloads (SIGHUP), by result",
                               ["result"], registry=r)
        self.dry_run = Gauge("oomkit_dry_run", "1 when the daemon only reports what it "
                             "would kill", registry=r)
        self.up_since = Gauge("oomkit_start_time_seconds", "When the daemon started (epoch)",
                              registry=r)
        for resolved_by in RESOLVED_BY:  # present from the start, at 0
            for constraint in CONSTRAINTS:
                self.kills.labels(resolved_by, constraint)
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        for ops in ("oom", "psi"):
            self.attached.labels(ops)
        for place in ERROR_PLACES:
            self.errors.labels(place)

    def watch_cgroups(self, count: Callable[[], int]) -> None:
        """The watched-cgroups gauge asks ``count`` at each scrape."""
        self.watched.set_function(lambda: float(count()))

    # -- the sink ----------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        try:
            self._count(event)
        except Exception:  # metrics never break the OOM path
            pass

    def _count(self, event: Event) -> None:
        if isinstance(event, OomEvent):
            constraint = event.constraint.lower()
            if constraint not in CONSTRAINTS:
                constraint = "none"
            self.ooms.labels(event.resolved_by, name_label(event.policy), constraint).inc()
            if event.victims:
                self.kills.labels(event.resolved_by, constraint).inc(len(event.victims))
            for call in event.handlers:
                self.handler_duration.labels(name_label(call.name)).observe(
                    call.duration_us / 1e6)
        elif isinstance(event, HandlerErrorEvent):
            kind = "timeout" if event.timeout else "exception"
            self.handler_errors.labels(name_label(event.name), name_label(event.callback),
                                       kind).inc()
        elif isinstance(event, PsiEventRecord):
            self.psi_events.labels(event.resource, "full" if event.full else "some").inc()
        elif isinstance(event, AttachEvent):
            self.attached.labels(event.ops).inc()
        elif isinstance(event, DetachEvent):
            self.attached.labels(event.ops).dec()
        elif isinstance(event, ErrorEvent):
            self.errors.labels(error_place(event.where)).inc()


_INDEX: Final = (b"<html><head><title>oomkit</title></head><body><h1>oomkit</h1>"
                 b'<p><a href="/metrics">Metrics</a></p></body></html>\n')
_NOT_FOUND: Final = b"Not found: try /metrics\n"
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def routed(metrics_app: WsgiApp) -> WsgiApp:
    """``/metrics`` (GET and HEAD), ``/`` a page linking to it, 404 elsewhere, 405 for any
    other method. HEAD gets GET's headers without the body, whatever the path (the server sends
    whatever the app returns)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(_NOT_FOUND)))])
            return [b""] if method == "HEAD" else [_NOT_FOUND]
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                      ("Content-Type", "text/plain")])
            return [b"Method not allowed\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Content-Length", str(len(_INDEX)))])
            return [b""] if method == "HEAD" else [_INDEX]
        if method == "HEAD":
            got: list[Any] = []
            body = b"".join(metrics_app({**environ, "REQUEST_METHOD": "GET"},
                                        lambda status, headers, *_: got.extend((status,
                                                                                headers))))
            headers = [(k, v) for k, v in got[1] if k.lower() != "content-length"]
            start_response(got[0], [*headers, ("Content-Length", str(len(body)))])
            return [b""]
        return metrics_app(environ, start_response)

    return app


def exposition_app(registry: Registry) -> WsgiApp:
    """The exposition of ``registry`` as a WSGI-style app (what :func:`routed` wraps)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = registry.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


_REQUEST_LINE: Final = re.compile(r"([A-Z]{1,16}) (\S{1,4096}) HTTP/1\.[01]")
MAX_HEADER_LINES: Final = 100


class _Handler(socketserver.StreamRequestHandler):
    """One request per connection (HTTP/1.0 answers, then close): the request line, the
    headers skipped up to the blank line, the routed app's answer."""

    timeout = 2  # seconds a client may take; socketserver applies it to the connection
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(4200).decode("latin-1").rstrip("\r\n")
        match = _REQUEST_LINE.fullmatch(line)
        for _ in range(MAX_HEADER_LINES):
            header = self.rfile.readline(8200)
            if header in (b"\r\n", b"\n", b""):
                break
        else:
            match = None
        if match is None:
            self._answer("400 Bad Request", [("Content-Type", "text/plain")],
                         [b"Bad request\n"])
            return
        method, target = match.groups()
        got: list[Any] = []
        body = self.server.app({"REQUEST_METHOD": method,
                                "PATH_INFO": target.split("?", 1)[0]},
                               lambda status, headers, *_: got.extend((status, headers)))
        self._answer(got[0], got[1], body)

    def _answer(self, status: str, headers: list[tuple[str, str]],
                body: Iterable[bytes]) -> None:
        head = [f"HTTP/1.0 {status}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for chunk in body:
            self.wfile.write(chunk)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """One thread per connection (at most MAX_CLIENTS): a slow or stalled client never
    holds up another scrape."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    MAX_CLIENTS = 16

    def __init__(self, address: tuple[str, int], app: WsgiApp) -> None:
        self.app = app
        super().__init__(address, _Handler)
        self._slots = threading.BoundedSemaphore(self.MAX_CLIENTS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: this one is dropped
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out or hung up: its problem, not a line on our stderr

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """``/metrics`` over HTTP on ``listen``, served from one thread until close()."""

    def __init__(self, metrics: Metrics, listen: Listen) -> None:
        self.listen = listen
        app = routed(exposition_app(metrics.registry))
        server_class = _Server6 if ":" in listen.host else _Server
        try:
            self._httpd = server_class((listen.host, listen.port), app)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics: cannot listen on {listen}: {exc.strerror}"
                          ) from None
        # handle_request() selects again with this timeout: a client that went away between
        # our select and its accept costs half a second, never a hung thread.
        self._httpd.timeout = 0.5
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # A handler's forked child must not keep the listening socket (forkguard).
        self._fds = [forkguard.hold(fd) for fd in (self._httpd.fileno(), self._wake_r,
                                                   self._wake_w)]
        self._thread = threading.Thread(target=self._serve, name="oomkit-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel_fd = forkguard.hold(sel.fileno())
        sel.register(self._httpd.socket, selectors.EVENT_READ, "http")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    with contextlib.suppress(Exception):
                        self._httpd.handle_request()
        finally:
            forkguard.release(sel_fd)
            sel.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in self._fds:
            forkguard.release(fd)
        self._httpd.server_close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
