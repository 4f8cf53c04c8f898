"""One slow metrics client does not block the scrapes of others (issue 14, item 8)."""

from __future__ import annotations

import socket
import time
import urllib.request

from oomkit.daemon.config import Listen
from oomkit.daemon.metrics import Metrics, MetricsServer


def test_a_stalled_client_does_not_block_a_scrape() -> None:
    server = MetricsServer(Metrics(), Listen("127.0.0.1", 0))
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        for s in stalled:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end
        time.sleep(0.1)
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics",
                                    timeout=1.5) as r:
            body = r.read().decode()
        assert "oomkit_ooms_total" in body or "oomkit_" in body
        assert time.monotonic() - t0 < 1.5
    finally:
        for s in stalled:
            s.close()
        server.close()
