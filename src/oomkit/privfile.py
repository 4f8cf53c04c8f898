"""Files the daemon writes as root (event log, status file, restore journal): private and
never reached through a link.

- Directories oomkit creates are 0700 and its files 0600, whatever the umask (the mode is
  set with chmod after creation; directories that already exist, like /run, are left as
  they are).
- Files are opened with O_NOFOLLOW (a symlink planted at the name is refused, not
  followed) and O_NONBLOCK (a FIFO there cannot block the daemon); what was opened must be
  a regular file owned by us, else the open fails with EPERM.
- Temporary names come from mkstemp: O_EXCL|O_NOFOLLOW and a random name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dirs(directory: str) -> None:
    """Create ``directory`` and its missing parents, each 0700."""
    missing: list[str] = []
    d = os.path.abspath(directory)
    while not os.path.lexists(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)
            os.chmod(d, DIR_MODE, follow_symlinks=False)


def open_private(path: str, flags: int) -> int:
    """os.open(path, flags) as described above; raises OSError (ELOOP for a link, EPERM
    for a file that is not a regular file of ours)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"{path} is not a regular file of ours: refused")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_private(path: str, data: bytes) -> None:
    """Write ``data`` to a new 0600 temporary file beside ``path`` and rename it over."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
