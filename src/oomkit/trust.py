"""Files root may run: only root can have written them, and nothing is swapped on the way.

A path is *trusted* when every directory from ``/`` down to it, and the file itself, is
owned by root and not writable by group or others, and no component is a symbolic link.
A root-owned directory with the sticky bit (``/tmp``) counts as closed: others may add
entries there but not rename or remove root's. This is the rule of OpenSSH's StrictModes
(``auth.c``, ``safe_path``: every parent up to ``/``) and sudo's checks of its plugins,
with symlinks refused outright instead of followed.

The walk is done on file descriptors: each component is opened with ``O_PATH|O_NOFOLLOW``
relative to the descriptor of its parent (openat), checked with ``fstat`` on that
descriptor, and the file's text is read from the very descriptor that was checked, so a
rename race between check and use cannot run another file.

Errors are :class:`~oomkit.errors.ConfigError` lines naming the component at fault.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from oomkit.errors import ConfigError

_OPEN_DIR: Final = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # FIFOs


def _check(st: os.stat_result, where: str, what: str, *, is_dir: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{what}: {where} is a symbolic link; give the real path "
                          "(a link could be changed to point elsewhere)")
    if is_dir and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what}: {where} is not a directory")
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: {where} is not a regular file")
    if st.st_uid != 0:
        raise ConfigError(f"{what}: {where} is owned by uid {st.st_uid}, not root; it runs "
                          "as root, so only root may own it and the directories above it")
    sticky = is_dir and st.st_mode & stat.S_ISVTX
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
        raise ConfigError(f"{what}: {where} is writable by group or others "
                          f"(mode {stat.filemode(st.st_mode)}); run chmod go-w {where}")


def _components(path: str) -> list[str]:
    # abspath folds ".." lexically: every real component is then checked without links.
    return [p for p in os.path.abspath(path).split("/") if p]


def _open_walk(path: str, what: str, *, final_dir: bool) -> int:
    """An fd of ``path`` (O_PATH for a directory, O_RDONLY for a file) after checking it
    and every directory above it. The caller closes it."""
    parts = _components(path)
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    where = "/"
    try:
        _check(os.fstat(fd), where, what, is_dir=True)
        for n, name in enumerate(parts):
            last = n == len(parts) - 1
            where = os.path.join(where, name)
            flags = _OPEN_DIR if (not last or final_dir) else _OPEN_FILE
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                raise ConfigError(f"{what}: no such file {where}") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                    raise ConfigError(f"{what}: {where} is a symbolic link; give the real "
                                      "path (a link could be changed to point elsewhere)"
                                      ) from None
                raise ConfigError(f"{what}: cannot open {where}: {exc.strerror}") from None
            os.close(fd)
            fd = child
            _check(os.fstat(fd), where, what, is_dir=not last or final_dir)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_trusted(path: str, what: str, *, is_dir: bool = False) -> None:
    """Raise ConfigError unless ``path`` and every directory above it are root's alone."""
    os.close(_open_walk(path, what, final_dir=is_dir))


def read_trusted(path: str, what: str, limit: int = 4 << 20) -> bytes:
    """The bytes of a trusted file, read from the descriptor that was checked."""
    fd = _open_walk(path, what, final_dir=False)
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ConfigError(f"{what}: {path} is larger than {limit >> 20} MiB")
        return b"".join(chunks)
    finally:
        os.close(fd)
