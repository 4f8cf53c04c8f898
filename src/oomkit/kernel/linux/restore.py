"""The restore journal's entries: a kernel file oomkit changed and its original value, the
check that an entry is one oomkit would have written, the write-back, and the file that
holds them.

Shared by the runtime's side of the journal (:mod:`.journal`, which writes it) and the
watchdog process (:mod:`.watchdog`, which restores it when the runtime is gone). Standard
library only, importing nothing of the oomkit package: the watchdog, run as
``python -I -S watchdog.py``, loads this file by path.

A journal is trusted no further than what oomkit itself writes (:func:`check_setting`): an
entry is restored only if it names a file oomkit changes (``memory.oom_control``,
``memory.high``) below the cgroup root, by a normalized absolute path, with an original
value of that file's form, and the file is opened without following a link.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy takes it as True)

if TYPE_CHECKING:
    from typing import Any, Final

STATE_VERSION: Final = 1
V1_OOM_CONTROL: Final = "memory.oom_control"
#: The files oomkit changes, and the form of their original values.
KNOWN_SETTINGS: Final = {
    V1_OOM_CONTROL: re.compile(r"[01]"),
    "memory.high": re.compile(r"max|[0-9]{1,20}"),
}


class Setting:
    """A kernel file we changed: write ``original`` back to ``path`` to undo it.

    ``dir_inode`` is the inode of the file's cgroup directory when we changed it; a cgroup
    removed and re-created under the same name is another cgroup and is left alone.
    Immutable, compared and hashed by value. A plain class, not a dataclass: the watchdog
    loads this file, and dataclasses (with inspect, ast, dis) and typing would cost it
    about 2 MiB, locked.
    """

    __slots__ = ("dir_inode", "original", "path")
    path: str
    original: str
    dir_inode: int

    def __init__(self, path: str, original: str, dir_inode: int = 0) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "dir_inode", dir_inode)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Setting):
            return NotImplemented
        return (self.path, self.original, self.dir_inode) == (
            other.path, other.original, other.dir_inode)

    def __hash__(self) -> int:
        return hash((self.path, self.original, self.dir_inode))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __repr__(self) -> str:
        return (f"Setting(path={self.path!r}, original={self.original!r}, "
                f"dir_inode={self.dir_inode!r})")

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "original": self.original, "dir_inode": self.dir_inode}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Setting:
        return Setting(str(d["path"]), str(d["original"]), int(d.get("dir_inode", 0)))


def check_setting(s: Setting, root: str | None) -> str | None:
    """Why ``s`` is not an entry oomkit would have written (None: it is). ``root``: the
    cgroup hierarchy the entry must lie below (None: not checked)."""
    p = s.path
    if not p.startswith("/") or os.path.normpath(p) != p or not p.isprintable():
        return "not a normalized absolute path"
    name = os.path.basename(p)
    form = KNOWN_SETTINGS.get(name)
    if form is None:
        return f"{name} is not a file oomkit changes"
    if not form.fullmatch(s.original.strip()):
        return f"{s.original[:40]!r} is not a value of {name}"
    if root is not None:
        top = os.path.normpath(root).rstrip("/") + "/"
        if not p.startswith(top):
            return f"not below the cgroup root {top}"
    return None


def restore_setting(s: Setting, root: str | None = None) -> str | None:
    """Write the original value back. Returns None, or why it was not done/failed."""
    refused = check_setting(s, root)
    if refused is not None:
        return f"refused: {refused}"
    if s.dir_inode:
        try:
            if os.stat(os.path.dirname(s.path)).st_ino != s.dir_inode:
                return "cgroup was replaced"
        except FileNotFoundError:
            return "cgroup is gone"
    try:
        # O_NONBLOCK: a FIFO planted under the name would block the open.
        fd = os.open(s.path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "refused: not a regular file"
            os.write(fd, s.original.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODEV):
            return "cgroup is gone"
        return f"{exc.strerror} (errno {exc.errno})"
    return None


def load_state(path: str) -> tuple[str, int, list[Setting]]:
    """(kind, owner pid, settings) of a state file. kind: "none" (no file), "journal", or
    "other" (a file that is not an oomkit journal: never overwritten or removed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return "none", 0, []
    except OSError:
        return "other", 0, []  # a symbolic link (ELOOP), unreadable...
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "other", 0, []
        with os.fdopen(os.dup(fd), "rb") as f:
            data = json.loads(f.read(4 << 20))
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not (
            isinstance(data.get("settings"), list)
        ):
            return "other", 0, []
        settings = [Setting.from_json(d) for d in data["settings"]]
        pid = data.get("pid", 0)
        return "journal", pid if isinstance(pid, int) else 0, settings
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return "other", 0, []
    finally:
        os.close(fd)


def read_state(path: str) -> tuple[int, list[Setting]]:
    """(owner pid, settings) of a state file; (0, []) when there is no journal."""
    _, pid, settings = load_state(path)
    return pid, settings


def restore_file(path: str, root: str | None = None) -> list[tuple[Setting, str | None]]:
    """Restore every valid setting of a journal, then remove it (a file that is not an
    oomkit journal is left alone)."""
    kind, _, settings = load_state(path)
    if kind != "journal":
        return []
    results = [(s, restore_setting(s, root)) for s in settings]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return results
