"""Events into the systemd journal: one entry per event, with structured fields.

Standard library only (the daemon's decision path stays on it). The native protocol, as
systemd's "Native Journal Protocol" document describes it: one datagram per entry to
``/run/systemd/journal/socket``, each field ``NAME=value\\n``, or ``NAME\\n`` + the value's
length as 64-bit little endian + the value + ``\\n`` when the value holds a newline. An entry
too big for a datagram goes in a sealed memfd passed with SCM_RIGHTS (``sd_journal_sendv``
in systemd's src/libsystemd/sd-journal/journal-send.c does the same).

When the socket cannot be written (no journald, or one too slow to take the datagram
now: sends never block), the entry's MESSAGE goes to the fallback stream (the
journal's stdout stream under systemd) as one line with an ``<N>`` priority prefix, which
journald reads as the priority (``SyslogLevelPrefix=`` defaults to yes; sd-daemon(3)).

An OOM entry carries ``MESSAGE_ID`` :data:`MESSAGE_ID_OOM` and the fields ``OOMKIT_MEMCG``,
``OOMKIT_CONSTRAINT``, ``OOMKIT_RESOLVED_BY``, ``OOMKIT_POLICY``, and per victim
``OOMKIT_VICTIM_PID``, ``OOMKIT_VICTIM_COMM``, ``OOMKIT_VICTIM_CGROUP``,
``OOMKIT_VICTIM_RSS``, ``OOMKIT_VICTIM_REASON`` (the handler's kill message; repeated
for several victims, as journald allows), so
``journalctl MESSAGE_ID=...`` lists every OOM and ``journalctl OOMKIT_VICTIM_COMM=java`` the
kills of one program.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, TextIO

from oomkit.events import Event
from oomkit.report import record_lines

JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
#: ``journalctl MESSAGE_ID=...`` finds every OOM oomkit logged (made once with uuid4).
MESSAGE_ID_OOM: Final = "9fe832d58ce740abb1c8f94e0bf9eb13"
IDENTIFIER: Final = "oomkit"

# syslog priorities (sd-daemon(3): SD_ERR "<3>", SD_WARNING "<4>", SD_NOTICE "<5>", ...)
LOG_ERR: Final = 3
LOG_WARNING: Final = 4
LOG_NOTICE: Final = 5
LOG_INFO: Final = 6

Fields = list[tuple[str, str]]


def priority_of(record: Mapping[str, Any]) -> int:
    kind = record.get("event")
    if kind in ("error", "handler_error"):
        return LOG_ERR
    if kind in ("oom", "detach"):
        return LOG_WARNING
    if kind == "daemon":
        return LOG_NOTICE
    return LOG_INFO


def journal_fields(record: Mapping[str, Any]) -> Fields:
    """The journal entry of one event record (the daemon's JSON form). Pure."""
    lines = [line.strip() for line in record_lines(record)]
    fields: Fields = [("MESSAGE", "; ".join(lines)), ("PRIORITY", str(priority_of(record))),
                      ("SYSLOG_IDENTIFIER", IDENTIFIER),
                      ("OOMKIT_EVENT", str(record.get("event", "")))]
    if record.get("event") == "oom":
        fields.append(("MESSAGE_ID", MESSAGE_ID_OOM))
        fields.append(("OOMKIT_MEMCG", str(record.get("memcg") or "/")))
        for key in ("constraint", "resolved_by", "policy"):
            fields.append((f"OOMKIT_{key.upper()}", str(record.get(key, ""))))
        if record.get("constraint_text"):
            fields.append(("OOMKIT_CONSTRAINT_TEXT", str(record["constraint_text"])))
        if record.get("dry_run"):
            fields.append(("OOMKIT_DRY_RUN", "1"))
        for victim in record.get("victims", ()):
            for key in ("pid", "comm", "cgroup", "rss", "reason"):
                fields.append((f"OOMKIT_VICTIM_{key.upper()}", str(victim.get(key, ""))))
    elif record.get("event") == "error":
        fields.append(("OOMKIT_WHERE", str(record.get("where", ""))))
    return fields


def encode(fields: Iterable[tuple[str, str]]) -> bytes:
    """Fields in the native protocol's serialisation."""
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def decode(datagram: bytes) -> list[tuple[str, str]]:
    """The inverse of :func:`encode` (what journald parses; used by the tests)."""
    fields: list[tuple[str, str]] = []
    i = 0
    while i < len(datagram):
        end = datagram.index(b"\n", i)
        line = datagram[i:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields.append((name.decode(), value.decode()))
            i = end + 1
        else:
            (size,) = struct.unpack("<Q", datagram[end + 1:end + 9])
            start = end + 9
            fields.append((line.decode(), datagram[start:start + size].decode()))
            if datagram[start + size:start + size + 1] != b"\n":
                raise ValueError("a binary field does not end with a newline")
            i = start + size + 1
    return fields


def journal_stream_is(fd: int, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``fd`` is the journal stream systemd connected (``$JOURNAL_STREAM`` is the
    ``device:inode`` of it, per systemd.exec(5)): then we talk to the journal natively."""
    value = (environ if environ is not None else os.environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(fd)
        return bool(value) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


class Journal:
    """A daemon output: each event as one journal entry (see the module's docstring)."""

    def __init__(self, fallback: TextIO | None = None, *,
                 socket_path: str = JOURNAL_SOCKET) -> None:
        self.socket_path = socket_path
        self.fallback = fallback if fallback is not None else sys.stdout
        # Non-blocking: a journald that does not read (its queue of datagrams is full)
        # must not stall an OOM; the entry goes to the fallback stream instead.
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                   | socket.SOCK_NONBLOCK)
        self._lock = threading.Lock()
        self.sent = 0
        self.fell_back = 0

    def __call__(self, event: Event, record: Mapping[str, Any]) -> None:
        fields = journal_fields(record)
        if not self.send(fields):
            self.fell_back += 1
            message = fields[0][1]
            self.fallback.write(f"<{priority_of(record)}>{message}\n")
            self.fallback.flush()

    def send(self, fields: Fields) -> bool:
        data = encode(fields)
        with self._lock:
            try:
                self._sock.sendto(data, self.socket_path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    return False
                if not self._send_memfd(data):
                    return False
        self.sent += 1
        return True

    def _send_memfd(self, data: bytes) -> bool:
        """A datagram too big: the entry in a sealed memfd, its descriptor sent alone."""
        try:
            fd = os.memfd_create("oomkit-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            return False
        try:
            os.write(fd, data)
            seals = (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                     | fcntl.F_SEAL_SEAL)  # journald refuses an unsealed memfd
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                     struct.pack("i", fd))], 0, self.socket_path)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
