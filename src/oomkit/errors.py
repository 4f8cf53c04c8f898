"""oomkit's exceptions.

    OomkitError
     ├── AttachError        attaching a handler failed (errno EBUSY, EINVAL, ...)
     ├── Unkillable         kill refused: -1000, init or a kernel thread (errno EPERM)
     ├── CgroupGone         the cgroup was removed while we used it (errno ENOENT)
     ├── TaskGone           the task exited while we used it (errno ESRCH)
     ├── KernelError        the kernel refused a read or write (errno from the OS)
     ├── HandlerExpired     an action on an OomControl whose OOM has been dealt with
     └── ConfigError        a scenario, policy spec or config file is wrong (exit code 2)

Every backend raises these and nothing else for kernel-side failures: the live backends
translate OSError at one seam (``oomkit.kernel.linux.fsio``), the simulator raises them
directly.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterable


class OomkitError(Exception):
    """Base class of every error oomkit raises on purpose."""

    errno: int = 0

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class AttachError(OomkitError):
    """A handler could not be attached (``errno == EBUSY`` when the slot is taken)."""

    errno = _errno.EBUSY


class Unkillable(OomkitError):
    """The task may not be killed: oom_score_adj -1000, init or a kernel thread."""

    errno = _errno.EPERM


class CgroupGone(OomkitError):
    """The cgroup disappeared (rmdir) while it was being read or acted on."""

    errno = _errno.ENOENT


class TaskGone(OomkitError):
    """The task exited (or its PID was reused) while it was being read or acted on."""

    errno = _errno.ESRCH


class KernelError(OomkitError):
    """The kernel refused an operation; ``errno`` is the kernel's."""

    errno = _errno.EIO


class HandlerExpired(OomkitError):
    """An ``OomControl`` was used after its OOM ended (e.g. by a handler that overran)."""

    errno = _errno.ESTALE


class ConfigError(OomkitError):
    """Bad user input: a scenario, a policy spec, a config file. Printed as one line."""

    errno = _errno.EINVAL


def exception_text(exc: BaseException) -> str:
    """``"ValueError: bad size"``, on one line; the bare class name when the exception has
    no text (``raise KeyboardInterrupt``: not "KeyboardInterrupt: ")."""
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unknown_key(key: str, known: Iterable[str]) -> str:
    """The text of an unknown-key error: the nearest known key when there is one (difflib's
    ratio of at least 0.6, as ``git`` and argparse suggest), then the known keys."""
    import difflib

    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}known: {', '.join(names)})"
