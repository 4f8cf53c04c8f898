"""journald: one native-protocol entry per event, parsed from a socket the test binds."""

from __future__ import annotations

import array
import io
import os
import socket
from pathlib import Path

import pytest

from oomkit.daemon.backend import SimBackend
from oomkit.daemon.journal import (
    MESSAGE_ID_OOM,
    Journal,
    decode,
    encode,
    journal_fields,
    journal_stream_is,
)
from oomkit.daemon.service import Daemon

from .conftest import Setup


def receive(sock: socket.socket) -> list[list[tuple[str, str]]]:
    """Every entry waiting on ``sock``: a datagram, or a memfd passed with SCM_RIGHTS."""
    entries = []
    sock.setblocking(False)
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
        except BlockingIOError:
            return entries
        for level, kind, payload in ancdata:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            fd = array.array("i", payload[:4])[0]
            try:
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
        entries.append(decode(data))


def bound(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    return sock


def test_the_protocol_round_trips_newlines() -> None:
    fields = [("MESSAGE", "two\nlines"), ("PRIORITY", "4"), ("OOMKIT_X", "a=b")]
    data = encode(fields)
    assert data.startswith(b"MESSAGE\n" + (9).to_bytes(8, "little") + b"two\nlines\n")
    assert decode(data) == fields


def test_one_entry_per_oom_with_its_fields(setup: Setup, tmp_path: Path) -> None:
    sock = bound(tmp_path)
    journal = Journal(io.StringIO(), socket_path=str(tmp_path / "journal.sock"))
    cfg, policies = setup.load()
    d = Daemon(cfg, policies, SimBackend(str(setup.scenario)), journal=journal,
               self_protect=False)
    d.start()
    assert d.run() == 0
    entries = receive(sock)
    sock.close()
    assert journal.fell_back == 0 and journal.sent == len(entries)
    ooms = [dict(e) for e in entries if ("MESSAGE_ID", MESSAGE_ID_OOM) in e]
    assert len(ooms) == len(setup.records("oom")) == 2
    first, second = ooms
    assert first["OOMKIT_MEMCG"] == "/a" and first["OOMKIT_CONSTRAINT"] == "MEMCG"
    assert first["OOMKIT_RESOLVED_BY"] == "handler" and first["OOMKIT_POLICY"] == "largest_leaf"
    assert first["OOMKIT_VICTIM_COMM"] == "a_big" and first["OOMKIT_VICTIM_CGROUP"] == "/a/x"
    assert int(first["OOMKIT_VICTIM_PID"]) > 0
    assert first["OOMKIT_VICTIM_REASON"] == "largest_leaf: /a/x"  # the handler's message
    assert first["PRIORITY"] == "4" and first["SYSLOG_IDENTIFIER"] == "oomkit"
    assert "killed a_big" in first["MESSAGE"] and "\n" not in first["MESSAGE"]
    assert second["OOMKIT_RESOLVED_BY"] == "default" and second["OOMKIT_VICTIM_COMM"] == "b_big"
    assert second["OOMKIT_VICTIM_REASON"] == ""  # the default killer's why is in its note
    kinds = [dict(e)["OOMKIT_EVENT"] for e in entries]
    assert kinds.count("oom") == 2 and "daemon" in kinds and "attach" in kinds


def test_a_big_entry_goes_in_a_memfd(tmp_path: Path) -> None:
    sock = bound(tmp_path)
    journal = Journal(io.StringIO(), socket_path=str(tmp_path / "journal.sock"))
    big = "x" * (4 << 20)  # past any datagram size: EMSGSIZE
    assert journal.send([("MESSAGE", big), ("PRIORITY", "6")])
    [entry] = receive(sock)
    sock.close()
    assert dict(entry)["MESSAGE"] == big


def test_without_a_socket_lines_with_priority_prefixes(setup: Setup, tmp_path: Path) -> None:
    out = io.StringIO()
    journal = Journal(out, socket_path=str(tmp_path / "absent.sock"))
    cfg, policies = setup.load()
    d = Daemon(cfg, policies, SimBackend(str(setup.scenario)), journal=journal,
               self_protect=False)
    d.start()
    d.run()
    lines = out.getvalue().splitlines()
    ooms = [line for line in lines if line.startswith("<4>OOM ")]
    assert len(ooms) == 2 and "killed a_big" in ooms[0]
    assert all(line[0] == "<" and line[2] == ">" for line in lines)
    assert journal.sent == 0 and journal.fell_back == len(lines)


def test_journal_stream_is_matched_by_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        assert journal_stream_is(f.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal_stream_is(f.fileno(), {"JOURNAL_STREAM": f"{st.st_dev}:1"})
        assert not journal_stream_is(f.fileno(), {})


def test_a_journal_that_does_not_read_never_blocks(tmp_path: Path) -> None:
    """A full datagram queue (journald stuck): the entry falls back, the send returns."""
    sock = bound(tmp_path)
    out = io.StringIO()
    journal = Journal(out, socket_path=str(tmp_path / "journal.sock"))
    record = {"event": "error", "where": "x", "error": "y", "time": 0.0}
    for _ in range(2000):  # far past net.unix.max_dgram_qlen and the socket buffer
        journal(None, record)  # type: ignore[arg-type]
    assert journal.sent > 0 and journal.fell_back > 0
    assert journal.sent + journal.fell_back == 2000
    assert out.getvalue().splitlines()[0] == "<3>error     x: y"
    sock.close()


def test_an_error_reaches_the_journal_once(setup: Setup, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Under systemd stderr is the journal too: an error goes as its entry, not also as a
    stderr line."""
    sock = bound(tmp_path)
    journal = Journal(io.StringIO(), socket_path=str(tmp_path / "journal.sock"))
    cfg, policies = setup.load()
    d = Daemon(cfg, policies, SimBackend(str(setup.scenario)), journal=journal,
               self_protect=False)
    d.start()
    d.emit_error("reload", "broken")
    d.shutdown()
    errors = [dict(e) for e in receive(sock) if ("OOMKIT_EVENT", "error") in e]
    sock.close()
    assert [(e["OOMKIT_WHERE"], e["PRIORITY"]) for e in errors] == [("reload", "3")]
    assert "broken" not in capsys.readouterr().err


def test_control_characters_stay_inside_their_entry() -> None:
    """An exception message with a newline, a comm with an escape sequence: one fallback
    line per event (journald would read a second line as an entry of its own, at the
    default priority), and nothing that drives a terminal in the readable forms."""
    from oomkit.report import write_record

    oom = {"event": "oom", "time": 1.0, "wall": 1.0, "memcg": "/a", "constraint": "MEMCG",
           "resolved_by": "default", "policy": None, "note": "",
           "handlers": [{"name": "bad", "cgroup_id": 0, "returned": False,
                         "memory_freed": False, "duration_us": 5,
                         "error": "ValueError: one\ntwo"}],
           "victims": [{"pid": 7, "comm": "x\x1b[2Jy", "cgroup": "/a", "rss": 1 << 20}]}
    error = {"event": "error", "time": 1.0, "wall": 1.0, "where": "bad",
             "error": "first\nsecond\r\x00"}
    out = io.StringIO()
    journal = Journal(out, socket_path="/nonexistent/journal.sock")
    for record in (oom, error):
        journal(None, record)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("<4>") and lines[1].startswith("<3>")
    assert "one\\ntwo" in lines[0] and "x\\x1b[2Jy" in lines[0]
    assert "first\\nsecond\\r\\x00" in lines[1]
    table = io.StringIO()
    for record in (oom, error):
        write_record(table, record)
    assert "\x1b" not in table.getvalue() and "\r" not in table.getvalue()
    assert len(table.getvalue().splitlines()) == 4  # OOM: head, asked, killed; error: 1
    assert [f for f in journal_fields(oom) if f[0] == "OOMKIT_VICTIM_COMM"] == [
        ("OOMKIT_VICTIM_COMM", "x\x1b[2Jy")]  # the structured field keeps the bytes
