"""File descriptors of the daemon that a forked child must not keep.

``O_CLOEXEC`` covers a child that calls ``exec``; a handler that forks and does *not* exec
(``os.fork`` then Python code, multiprocessing's fork start method) keeps every descriptor
of the daemon: the event log it could write into, the ``memory.oom_control`` files it keeps
referenced, the metrics socket. Each holder registers its descriptor here while it is
open; in the child, right after ``fork`` (``os.register_at_fork``), every registered
number is pointed at ``/dev/null`` (``dup2``: the number stays valid for the objects that
will close it later, and nothing of the daemon is reachable through it). The event loop
and the restore journal do the same for their own descriptors.
"""

from __future__ import annotations

import contextlib
import os
import threading

_held: set[int] = set()
_lock = threading.Lock()


def hold(fd: int) -> int:
    """Register ``fd`` (returned unchanged) as one a forked child must not keep."""
    if fd >= 0:
        with _lock:
            _held.add(fd)
    return fd


def release(fd: int) -> None:
    """``fd`` is about to be closed: forget it (its number may be reused by anyone)."""
    with _lock:
        _held.discard(fd)


def held() -> frozenset[int]:
    with _lock:
        return frozenset(_held)


def _drop_in_child() -> None:
    # Only the forking thread exists in the child; the lock may have been held by another
    # thread at the fork: never wait for it, and give the child a fresh one.
    global _lock
    _lock = threading.Lock()
    fds = list(_held)
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


os.register_at_fork(after_in_child=_drop_in_child)
