"""Metrics: the sink counts events; the server answers /metrics in the Prometheus format."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oomkit.daemon.config import Listen
from oomkit.daemon.metrics import Metrics, MetricsServer
from oomkit.events import (
    AttachEvent,
    DetachEvent,
    ErrorEvent,
    HandlerCall,
    HandlerErrorEvent,
    OomEvent,
    PsiEventRecord,
)
from oomkit.kernel.base import Victim
from tests.conftest import missing_checker


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def oom(resolved_by: str, policy: str, victims: int = 1, us: int = 300) -> OomEvent:
    return OomEvent(1.0, "/a", "MEMCG", None, policy, resolved_by,
                    tuple(Victim(10 + i, "hog", "/a", 1 << 20) for i in range(victims)),
                    (HandlerCall(policy, 5, True, True, us),) if resolved_by == "handler"
                    else ())


def test_ooms_kills_and_durations() -> None:
    m = Metrics()
    m(oom("handler", "largest_leaf", victims=2, us=400))
    m(oom("handler", "largest_leaf"))
    m(oom("kernel", "kernel", victims=1))
    m(oom("default", "default", victims=0))
    memcg = {"constraint": "memcg"}
    assert sample(m, "oomkit_ooms_total", resolved_by="handler", policy="largest_leaf",
                  **memcg) == 2
    assert sample(m, "oomkit_ooms_total", resolved_by="kernel", policy="kernel", **memcg) == 1
    assert sample(m, "oomkit_ooms_total", resolved_by="default", policy="default", **memcg) == 1
    assert sample(m, "oomkit_kills_total", resolved_by="handler", **memcg) == 3
    assert sample(m, "oomkit_kills_total", resolved_by="kernel", **memcg) == 1
    assert sample(m, "oomkit_kills_total", resolved_by="default", **memcg) == 0
    assert sample(m, "oomkit_handler_duration_seconds_count", handler="largest_leaf") == 2
    assert sample(m, "oomkit_handler_duration_seconds_sum",
                  handler="largest_leaf") == pytest.approx(0.0007)


def test_errors_psi_and_attachments() -> None:
    m = Metrics()
    m(HandlerErrorEvent(1.0, "bad", "handle_out_of_memory", 0, "boom", False, 1))
    m(HandlerErrorEvent(1.0, "bad", "handle_out_of_memory", 0, "slow", True, 2))
    m(PsiEventRecord(1.0, 0, None, "memory", True, 500_000, 2_000_000))
    m(AttachEvent(1.0, "x", "oom", 3, "/a"))
    m(AttachEvent(1.0, "y", "psi", 0, None))
    m(DetachEvent(1.0, "x", "oom", 3, "gone"))
    m(ErrorEvent(1.0, "reload", "broken"))
    assert sample(m, "oomkit_handler_errors_total", handler="bad",
                  callback="handle_out_of_memory", kind="exception") == 1
    assert sample(m, "oomkit_handler_errors_total", handler="bad",
                  callback="handle_out_of_memory", kind="timeout") == 1
    assert sample(m, "oomkit_psi_events_total", resource="memory", kind="full") == 1
    assert sample(m, "oomkit_attached_handlers", ops="oom") == 0
    assert sample(m, "oomkit_attached_handlers", ops="psi") == 1
    assert sample(m, "oomkit_errors_total", where="reload") == 1


def test_watched_cgroups_is_asked_at_scrape_time() -> None:
    m = Metrics()
    count = {"n": 3}
    m.watch_cgroups(lambda: count["n"])
    assert sample(m, "oomkit_watched_cgroups") == 3
    count["n"] = 1000
    assert sample(m, "oomkit_watched_cgroups") == 1000


def test_the_sink_never_raises() -> None:
    m = Metrics()
    m.ooms = None  # type: ignore[assignment]
    m(oom("handler", "x"))  # swallowed


def test_the_server_serves_parseable_text() -> None:
    m = Metrics()
    m.watch_cgroups(lambda: 7)
    m(oom("handler", "largest_leaf"))
    server = MetricsServer(m, Listen("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        for _ in range(3):  # one thread, several requests in a row
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        ooms = families["oomkit_ooms"]
        assert [(s.labels, s.value) for s in ooms.samples if s.name == "oomkit_ooms_total"] == [
            ({"resolved_by": "handler", "policy": "largest_leaf", "constraint": "memcg"}, 1.0)]
        assert families["oomkit_watched_cgroups"].samples[0].value == 7
        assert "process_resident_memory_bytes" in families
    finally:
        server.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass


def test_a_silent_client_does_not_block_the_next_scrape() -> None:
    m = Metrics()
    server = MetricsServer(m, Listen("127.0.0.1", 0))
    try:
        idle = socket.create_connection(("127.0.0.1", server.port), 2)  # sends nothing
        try:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
        finally:
            idle.close()
    finally:
        server.close()


def test_a_taken_port_is_a_clear_error() -> None:
    m = Metrics()
    first = MetricsServer(m, Listen("127.0.0.1", 0))
    try:
        with pytest.raises(OSError, match=r"metrics: cannot listen on 127\.0\.0\.1:"):
            MetricsServer(Metrics(), Listen("127.0.0.1", first.port))
    finally:
        first.close()


def populated() -> Metrics:
    """Every series of ours with a sample: OOMs of each constraint, errors, PSI, reloads."""
    m = Metrics()
    m.watch_cgroups(lambda: 4)
    for constraint in ("MEMCG", "NONE", "DECLARED"):
        m(OomEvent(1.0, "/a" if constraint != "NONE" else None, constraint,
                   "CONSTRAINT_PSI_MEM" if constraint == "DECLARED" else None, "largest_leaf",
                   "handler", (Victim(10, "hog", "/a", 1 << 20),),
                   (HandlerCall("largest_leaf", 5, True, True, 300),)))
    m(oom("kernel", "kernel"))
    m(HandlerErrorEvent(1.0, "bad one", "handle_out_of_memory", 0, "boom", True, 1))
    m(PsiEventRecord(1.0, 0, None, "memory", False, 500_000, 2_000_000))
    m(AttachEvent(1.0, "x", "oom", 3, "/a"))
    m(ErrorEvent(1.0, "self-protection: mlockall", "ENOMEM"))
    m(ErrorEvent(1.0, "what: a place we never heard of", "x"))
    m.reloads.labels("ok").inc()
    m.dry_run.set(0)
    m.up_since.set(1.7e9)
    return m


def scrape(m: Metrics) -> str:
    return m.registry.render().decode()


def test_exporter_conventions() -> None:
    """No _created series, a build_info, label values from fixed sets, a constraint label."""
    from oomkit.daemon.metrics import CONSTRAINTS, ERROR_PLACES

    text = scrape(populated())
    assert "_created" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["oomkit_build_info"].samples[0]
    assert info.name == "oomkit_build_info" and info.value == 1
    assert set(info.labels) == {"version", "python_version"}
    ooms = [s for s in families["oomkit_ooms"].samples if s.value]
    assert {s.labels["constraint"] for s in ooms} == {"memcg", "none", "declared"}
    for family in families.values():
        for s in family.samples:
            for key, value in s.labels.items():
                assert " " not in value and "/" not in value, (s.name, key, value)
            if "constraint" in s.labels:
                assert s.labels["constraint"] in CONSTRAINTS
            if s.name == "oomkit_errors_total":
                assert s.labels["where"] in ERROR_PLACES
    errors = {s.labels["where"]: s.value for s in families["oomkit_errors"].samples}
    assert errors["self_protection"] == 1 and errors["other"] == 1
    handler = [s for s in families["oomkit_handler_errors"].samples if s.value]
    assert handler[0].labels["handler"] == "bad_one"


def _promtool() -> str | None:
    venv_bin = Path(sys.executable).parent / "promtool"
    return shutil.which("promtool") or (str(venv_bin) if venv_bin.exists() else None)


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    promtool = _promtool()
    if promtool is None:
        missing_checker("promtool not found (Debian package prometheus; scripts/tools fetches "
                        "it)")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "LC_ALL": "C"})


def test_promtool_check_metrics_on_a_full_scrape() -> None:
    r = promtool_check(scrape(populated()))
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def test_promtool_sees_a_broken_scrape() -> None:
    """The check above can fail: a counter without ``_total`` (a lint), a malformed line."""
    text = scrape(populated())
    r = promtool_check(text + "# HELP oomkit_bad A counter.\n# TYPE oomkit_bad counter\n"
                       "oomkit_bad 1\n")
    assert r.returncode != 0 and "oomkit_bad" in r.stdout + r.stderr, r.stdout + r.stderr
    r = promtool_check(text.replace("# TYPE", "#TYPE", 1) + "oomkit_x{a=b} 1\n")
    assert r.returncode != 0, r.stdout + r.stderr


def _request(method: str, url: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_head_and_404() -> None:
    server = MetricsServer(populated(), Listen("127.0.0.1", 0))
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, headers, body = _request("GET", base + "/metrics")
        assert code == 200 and b"oomkit_ooms_total" in body
        code, head_headers, head_body = _request("HEAD", base + "/metrics")
        assert code == 200 and head_body == b""
        assert head_headers["Content-Type"] == headers["Content-Type"]
        assert int(head_headers["Content-Length"]) > 1000
        assert _request("GET", base + "/")[0] == 200
        assert _request("HEAD", base + "/")[0] == 200
        assert _request("GET", base + "/nope")[0] == 404
        assert _request("GET", base + "/metrics/x")[0] == 404
        code, headers, _ = _request("POST", base + "/metrics")
        assert code == 405 and headers["Allow"] == "GET, HEAD"
    finally:
        server.close()


def test_head_never_gets_a_body() -> None:
    """A HEAD response has no content (RFC 9110 9.3.2), a 404 included: wsgiref sends
    whatever the app returns, so the app itself must return nothing."""
    from oomkit.daemon.metrics import routed

    def exporter(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise AssertionError("only /metrics reaches the exporter")

    app = routed(exporter)
    headers: dict[str, str] = {}
    for path in ("/nope", "/metrics/x", "/"):
        headers.clear()
        body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "HEAD"},
                            lambda status, hdrs, *_: headers.update(hdrs)))
        assert body == b"", path
        get_body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                                lambda *_: None))
        assert headers["Content-Length"] == str(len(get_body)), path
