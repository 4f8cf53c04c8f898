"""The daemon as systemd runs it, on cgroup v2 (guest only): its events as native journal
entries, and the guard band surviving systemd's rewrites of memory.high.

The guest has no systemd: the test binds /run/systemd/journal/socket itself (a throwaway
VM) and gives the daemon what systemd would: stdout on a stream whose device:inode is in
$JOURNAL_STREAM. It parses every datagram the daemon sent (tests/daemon/test_journal.py
has the parser's own tests).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.daemon.journal import JOURNAL_SOCKET, MESSAGE_ID_OOM, decode
from tests.daemon.test_daemon_live import LiveDaemon, hog_into, mkdir, running
from tests.daemon.test_daemon_live import daemon_dir as daemon_dir  # the fixture
from tests.live.conftest import LiveCgroups, MiB, wait_for
from tests.live.conftest import live as live  # the fixture

from .conftest import GUEST_ONLY

pytestmark = GUEST_ONLY


@pytest.fixture
def journal() -> Iterator[list[dict[str, list[str]]]]:
    """A stand-in journald: binds the socket and reads every entry as it comes, into the
    list it yields."""
    path = Path(JOURNAL_SOCKET)
    if path.exists():
        pytest.skip(f"{path} exists: a real journald runs here; not binding over it")
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    got: list[dict[str, list[str]]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            fields: dict[str, list[str]] = {}
            for name, value in decode(data):
                fields.setdefault(name, []).append(value)
            got.append(fields)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield got
    finally:
        stop.set()
        reader.join(5)
        sock.close()
        path.unlink()


@contextlib.contextmanager
def under_systemd(live: LiveCgroups, d: Path) -> Iterator[LiveDaemon]:
    """`oomkit run --config` with stdout on a file named by $JOURNAL_STREAM (no -q)."""
    with open(d / "stdout", "w") as stdout:
        st = os.fstat(stdout.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        with running(live, d, quiet=False, stdout=stdout, env=env) as daemon:
            yield daemon


def test_an_oom_is_one_journal_entry_with_its_fields(
        live: LiveCgroups, daemon_dir: Path, journal: list[dict[str, list[str]]]) -> None:
    mkdir(live, "h", 64 * MiB)
    with under_systemd(live, daemon_dir) as d:
        hog = hog_into(live, "h/leaf", 64 * MiB, 100 * MiB)
        assert hog.wait_dead(15), "the hog survived"
        rec = d.wait_record(lambda r: r["event"] == "oom" and r["resolved_by"] == "handler")
        assert wait_for(lambda: any(e.get("MESSAGE_ID") == [MESSAGE_ID_OOM]
                                    for e in journal), 10)
    got = list(journal)
    ooms = [e for e in got if e.get("MESSAGE_ID") == [MESSAGE_ID_OOM]]
    assert len(ooms) == 1, ooms
    oom = ooms[0]
    assert oom["OOMKIT_VICTIM_PID"] == [str(hog.pid)]
    assert oom["OOMKIT_VICTIM_COMM"] == [rec["victims"][0]["comm"]]
    assert oom["OOMKIT_VICTIM_CGROUP"] == [rec["victims"][0]["cgroup"]]
    assert oom["OOMKIT_RESOLVED_BY"] == ["handler"] and oom["OOMKIT_POLICY"] == ["largest_leaf"]
    assert oom["OOMKIT_CONSTRAINT"] == ["MEMCG"] and oom["PRIORITY"] == ["4"]
    assert oom["SYSLOG_IDENTIFIER"] == ["oomkit"]
    kinds = [e["OOMKIT_EVENT"][0] for e in got]
    assert "attach" in kinds and "daemon" in kinds
    # Everything went to the socket: nothing fell back to the stream.
    assert "OOM " not in (daemon_dir / "stdout").read_text()


def test_the_band_survives_systemd_rewriting_memory_high(
        live: LiveCgroups, daemon_dir: Path) -> None:
    """systemd writes memory.high from MemoryHigh= (`max` by default) on daemon-reload,
    set-property and restarts: the daemon sees the write and sets the band again."""
    h = mkdir(live, "h", 64 * MiB)
    with under_systemd(live, daemon_dir):
        high = h / "memory.high"
        assert wait_for(lambda: high.read_text().strip() != "max", 10)
        band = int(high.read_text())
        assert band < 64 * MiB
        for _ in range(3):  # as often as systemd pleases
            high.write_text("max")
            assert wait_for(lambda: high.read_text().strip() == str(band), 10), \
                f"memory.high stayed {high.read_text().strip()}"
            time.sleep(0.2)
    assert high.read_text().strip() == "max"  # restored at exit: the value systemd wrote
    said = (daemon_dir / "stdout").read_text()  # stderr: the journal's, under systemd
    assert said.count("memory.high was rewritten to max") >= 1, said[-2000:]
    assert f"the guard band is back at {band}" in said
