"""The one seam where the live backends meet the file system, and OSError becomes oomkit's.

Every read and write of a cgroup or /proc file goes through here, so the translation is
done once (as psutil does it):

- ``ENOENT``/``ENODEV`` -> the object is gone: :class:`~oomkit.errors.CgroupGone` for a
  cgroup file (``ENODEV`` is what kernfs returns on an fd opened before the rmdir),
  :class:`~oomkit.errors.TaskGone` for a /proc/PID file. Which one is the caller's
  ``gone``. But only when the object really is gone: a file missing from a cgroup or
  /proc/PID directory that is still there (a file this kernel does not have, such as
  ``memory.reclaim`` before 5.19) is ``KernelError(ENOENT)``, as psutil checks that the
  process is gone before it says ``NoSuchProcess``.
- ``ESRCH`` -> :class:`~oomkit.errors.TaskGone` (a pidfd whose process exited).
- anything else -> :class:`~oomkit.errors.KernelError` carrying the kernel's errno.

Writes are one ``write(2)`` of the whole value, as cgroup files require (kernfs parses each
write on its own and a split write would be two values).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from oomkit.errors import CgroupGone, KernelError, OomkitError, TaskGone

GoneError = type[CgroupGone] | type[TaskGone] | None

_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV})


def error_for(
    exc: OSError, where: str, gone: GoneError = CgroupGone, *, home: str | None = None
) -> OomkitError:
    """The oomkit error for an OSError raised while using ``where``. ``home``: the
    directory of the cgroup or process ``where`` is a file of (None: ``where`` is that
    directory itself); ENOENT is ``gone`` only if ``home`` is gone too."""
    code = exc.errno or errno.EIO
    if code in _GONE_ERRNOS and gone is not None:
        if code == errno.ENOENT and home is not None and os.path.isdir(home):
            return KernelError(f"{where}: no such file", code)
        return gone(f"{where}: gone ({os.strerror(code)})", code)
    if code == errno.ESRCH:
        return TaskGone(f"{where}: no such process", code)
    return KernelError(f"{where}: {os.strerror(code)}", code)


@contextmanager
def translate(where: str, gone: GoneError = CgroupGone) -> Iterator[None]:
    """Run a block, turning OSError into the matching oomkit error."""
    try:
        yield
    except OSError as exc:
        raise error_for(exc, where, gone) from exc


def read_text(path: str, gone: GoneError = CgroupGone) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Kernel files are small; 64 KiB covers memory.stat and /proc/PID/status in one
            # read, and seq_file files return whole records anyway.
            chunks = [os.read(fd, 65536)]
            while len(chunks[-1]) == 65536:
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
    except OSError as exc:
        raise error_for(exc, path, gone, home=os.path.dirname(path)) from exc
    return b"".join(chunks).decode("utf-8", "replace")


def read_int(path: str, gone: GoneError = CgroupGone) -> int:
    text = read_text(path, gone).strip()
    try:
        return int(text)
    except ValueError:
        raise KernelError(f"{path}: not an integer: {text!r}", errno.EINVAL) from None


def pread_text(fd: int, where: str, gone: GoneError = CgroupGone) -> str:
    """Read an already open file from offset 0 (kernfs re-generates it on each read)."""
    try:
        return os.pread(fd, 65536, 0).decode("utf-8", "replace")
    except OSError as exc:
        raise error_for(exc, where, gone, home=os.path.dirname(where)) from exc


def write_text(path: str, value: str | bytes, gone: GoneError = CgroupGone) -> None:
    data = value.encode() if isinstance(value, str) else value
    try:
        # O_TRUNC as a shell's ">" does: cgroupfs and procfs ignore it, regular files (a
        # fake tree in tests) need it.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise error_for(exc, path, gone, home=os.path.dirname(path)) from exc


def open_fd(path: str, flags: int, gone: GoneError = CgroupGone) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise error_for(exc, path, gone, home=os.path.dirname(path)) from exc


def write_fd(fd: int, data: bytes, where: str, gone: GoneError = CgroupGone) -> None:
    try:
        os.write(fd, data)
    except OSError as exc:
        raise error_for(exc, where, gone, home=os.path.dirname(where)) from exc


def inode(path: str, gone: GoneError = CgroupGone) -> int:
    try:
        return os.stat(path).st_ino
    except OSError as exc:
        raise error_for(exc, path, gone) from exc


def subdirs(path: str, gone: GoneError = CgroupGone) -> list[tuple[str, int]]:
    """(name, inode) of every directory in ``path``, oldest first: by inode, which cgroupfs
    hands out in increasing order, so this is the order the kernel walks a cgroup's
    children in (css_next_child: creation order), not readdir's."""
    try:
        with os.scandir(path) as it:
            found = [(e.name, e.inode()) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError as exc:
        raise error_for(exc, path, gone) from exc
    found.sort(key=lambda e: (e[1], e[0]))
    return found


def remove_tree(path: str, attempts: int = 100, pause_s: float = 0.02) -> bool:
    """rmdir a cgroup directory and everything below it, deepest first.

    A cgroup whose last task just died can refuse rmdir (EBUSY) for a moment while the
    kernel finishes the exit, so each directory is retried. Returns True when it is all
    gone; never raises (for cleanup paths).
    """
    import time  # only here: the decision path never removes cgroups

    if not os.path.isdir(path):
        return True
    for d, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        for _ in range(attempts):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(pause_s)
    return not os.path.isdir(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


# -- inotify (ctypes on libc: the standard library has no binding) -------------------------

IN_MODIFY: Final = 0x00000002
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_ISDIR: Final = 0x40000000
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
_EVENT_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


class Inotify:
    """An inotify instance: ``fd`` for epoll, ``add``/``remove`` watches, ``read`` events."""

    __slots__ = ("_libc", "fd")

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise KernelError(f"inotify_init1: {os.strerror(code)}", code)
        self.fd: int = fd

    def add(self, path: str, mask: int, gone: GoneError = CgroupGone) -> int:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask))
        if wd < 0:
            code = ctypes.get_errno()
            raise error_for(OSError(code, os.strerror(code)), path, gone)
        return int(wd)

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # EINVAL when already gone: nothing to do

    def read(self) -> list[tuple[int, int, str]]:
        """Pending events as (wd, mask, name); empty when none."""
        out: list[tuple[int, int, str]] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            except OSError as exc:
                raise error_for(exc, "inotify", None) from exc
            pos = 0
            while pos + _EVENT_HEADER.size <= len(buf):
                wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(buf, pos)
                pos += _EVENT_HEADER.size
                name = buf[pos : pos + length].split(b"\0", 1)[0].decode("utf-8", "replace")
                pos += length
                out.append((wd, mask, name))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
