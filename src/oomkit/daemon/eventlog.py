"""The event log: JSON lines, append-only, synced per OOM, rotated without losing a line.

Writing (the daemon's sink, :class:`EventLog`):

* one ``write(2)`` per line on an ``O_APPEND`` descriptor, straight from the emitting thread:
  once ``write`` returned, the line survives a crash of the daemon (it is in the page cache);
* every OOM line is then made durable with ``fsync``, handed to ``defer`` (the daemon's
  housekeeping thread) so that the OOM path never waits for the disk while the machine
  thrashes; without ``defer`` it is synced inline;
* rotation happens *before* a line that would take the file past ``max_bytes``: ``.N-1``
  becomes ``.N`` ... the live file becomes ``.1`` (renames, so the descriptor stays valid),
  then a new file is opened. If that open fails the next lines still go to the renamed
  file: a line is never dropped for the sake of rotation.

Reading (``oomkit events``): :func:`read_events` walks the rotated files oldest first;
:func:`follow` tails the live file and notices a rotation by its inode, finishing the old
file before it opens the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from oomkit import forkguard
from oomkit.privfile import make_private_dirs, open_private

Defer = Callable[[str, Callable[[], None]], None]

SYNCED_KINDS: Final = frozenset({"oom", "error", "handler_error"})


def rotated_name(path: str, n: int) -> str:
    return path if n == 0 else f"{path}.{n}"


class EventLog:
    """Append JSON lines to ``path``; rotate at ``max_bytes``, keeping ``keep`` old files.

    Thread-safe. Never raises from :meth:`write`: a line that cannot be written is counted
    in ``errors`` and reported once on stderr, because the OOM path must go on regardless.
    """

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = 10 << 20,
        keep: int = 5,
        defer: Defer | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError("keep at least one rotated file (rotation must not drop lines)")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._defer = defer
        self._on_error = on_error
        self._lock = threading.Lock()
        self.errors = 0
        self.lines = 0
        self.rotations = 0
        make_private_dirs(os.path.dirname(os.path.abspath(path)))
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        # Descriptors replaced by a rotation, still to be synced and closed (by _sync_old).
        self._retired: list[int] = []

    def _open(self) -> int:
        # 0600, never through a link planted at the name (privfile); a handler's forked
        # child gets /dev/null in its place (forkguard).
        return forkguard.hold(open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT))

    # -- writing -----------------------------------------------------------------------------
    def write(self, record: Mapping[str, Any], *, sync: bool | None = None) -> bool:
        """Append one record as a JSON line. ``sync`` defaults to True for OOM and error
        records. Returns False when the line could not be written."""
        try:
            data = (json.dumps(record, separators=(", ", ": "), default=str) + "\n").encode()
        except (TypeError, ValueError) as exc:  # a policy put something odd in an event
            self._fail(f"event not serializable: {exc}")
            return False
        if sync is None:
            sync = record.get("event") in SYNCED_KINDS
        rotated = False
        with self._lock:
            if self._fd < 0:
                self._fail("event log is closed")
                return False
            if self._size and self._size + len(data) > self.max_bytes:
                rotated = self._rotate_locked()
            written = self._write_all(data)
            if written:
                self._size += len(data)
                self.lines += 1
        if rotated:
            self._schedule(f"eventlog-rotate:{id(self)}", self._sync_retired)
        if written and sync:
            self._schedule(f"eventlog-sync:{id(self)}", self._sync_current)
        return written

    def _write_all(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError as exc:
                self._fail(f"{self.path}: write failed: {exc.strerror}")
                return False
            view = view[n:]
        return True

    def _fail(self, message: str) -> None:
        self.errors += 1
        if self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error(message)
        if self.errors == 1 or self.errors % 1000 == 0:
            with contextlib.suppress(Exception):
                print(f"oomkit: event log: {message} ({self.errors} so far)", file=sys.stderr)

    def _rotate_locked(self) -> bool:
        """Shift the rotated files up by one, rename the live file to .1, open a new one.

        Renames keep every open descriptor valid, so nothing written before the rotation is
        lost; the oldest file (.keep) is the only one replaced."""
        try:
            if self._still_at_path():
                for n in range(self.keep - 1, 0, -1):
                    src = rotated_name(self.path, n)
                    if os.path.exists(src):
                        os.rename(src, rotated_name(self.path, n + 1))
                os.rename(self.path, rotated_name(self.path, 1))
            # else: an earlier rotation renamed it and could not open a new file; only
            # the open is left to do.
        except OSError as exc:
            self._fail(f"rotation failed, writing on: {exc}")
            return False
        try:
            new_fd = self._open()
        except OSError as exc:
            # Keep writing to the renamed file; the next line tries the rotation again.
            self._fail(f"cannot open a new {self.path} after rotation, writing on to .1: {exc}")
            return False
        self._retired.append(self._fd)
        self._fd = new_fd
        self._size = 0
        self.rotations += 1
        return True

    def _still_at_path(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except OSError:
            return False

    # -- syncing -----------------------------------------------------------------------------
    def _schedule(self, key: str, job: Callable[[], None]) -> None:
        if self._defer is not None:
            self._defer(key, job)
        else:
            job()

    def _sync_current(self) -> None:
        # The live descriptor is only closed by close(), which syncs first and takes the
        # lock: holding the lock only to read it, fsync runs without blocking writers.
        with self._lock:
            fd = self._fd
            if fd < 0:
                return
            dup = os.dup(fd)
        try:
            os.fsync(dup)
        except OSError as exc:
            self._fail(f"fsync failed: {exc.strerror}")
        finally:
            os.close(dup)

    def _sync_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for fd in retired:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            forkguard.release(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        # The renames and the new file are directory entries: make them durable too.
        with contextlib.suppress(OSError):
            dfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def sync(self) -> None:
        """fsync now, in the calling thread."""
        self._sync_retired()
        self._sync_current()

    def close(self) -> None:
        self.sync()
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            forkguard.release(fd)
            os.close(fd)


# -- reading --------------------------------------------------------------------------------


def log_files(path: str) -> list[str]:
    """The log's files, oldest first: path.N ... path.1, path (those that exist)."""
    directory, base = os.path.split(path)
    numbered: list[tuple[int, str]] = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        names = []
    for name in names:
        head, dot, tail = name.rpartition(".")
        if dot and head == base and tail.isdigit() and int(tail) > 0:
            numbered.append((int(tail), os.path.join(directory, name)))
    found = [p for _, p in sorted(numbered, reverse=True)]
    if os.path.exists(path):
        found.append(path)
    return found


def parse_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


def read_events(path: str, *, rotated: bool = True) -> Iterator[dict[str, Any]]:
    """Every record of the log, oldest first; unreadable lines are skipped."""
    files = log_files(path) if rotated else ([path] if os.path.exists(path) else [])
    for name in files:
        try:
            with open(name, encoding="utf-8", errors="replace") as f:
                for line in f:
                    record = parse_line(line)
                    if record is not None:
                        yield record
        except FileNotFoundError:
            continue  # rotated away while we read: its lines are in the next file


def follow(path: str, stop: threading.Event, *, poll_s: float = 0.25,
           sleep: Callable[[float], None] | None = None) -> Iterator[dict[str, Any]]:
    """New records appended to the live file from now on, across rotations."""
    wait = sleep or (lambda s: stop.wait(s))
    f = None
    inode = -1
    partial = ""
    first = True  # only a file that existed when we started is read from its end
    while not stop.is_set():
        if f is None:
            try:
                f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except FileNotFoundError:
                first = False
                wait(poll_s)
                continue
            inode = os.fstat(f.fileno()).st_ino
            if first:
                f.seek(0, os.SEEK_END)
            first = False
            partial = ""
        chunk = f.read()
        if chunk:
            partial += chunk
            *complete, partial = partial.split("\n")
            for line in complete:
                record = parse_line(line)
                if record is not None:
                    yield record
            continue
        try:
            rotated = os.stat(path).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            # Lines written between our last read and the rename are still in the old file:
            # drain it, then go on with the new file from its start. (The writer never
            # writes to a file again once it renamed it.)
            rest = partial + f.read()
            for line in rest.split("\n"):
                record = parse_line(line)
                if record is not None:
                    yield record
            f.close()
            f = None
            continue
        wait(poll_s)
    if f is not None:
        f.close()


def wall_clock() -> float:
    """Seconds since the epoch, for the ``wall`` stamp of each line (the events' own
    ``time`` is the kernel's monotonic clock)."""
    return time.time()
