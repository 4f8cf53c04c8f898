"""Mounts and versions, read from text: which memory controller, where, and how the kernel
names our root in its messages. Pure: callers pass the file contents and a probe.

- :func:`parse_mountinfo`: ``/proc/self/mountinfo`` lines (proc(5)).
- :func:`detect_root`: the memory controller's directory and its interface version (v2
  preferred when both are mounted, as systemd's hybrid layout allows).
- :func:`mount_prefix`: our root as the kernel prints cgroup paths (``/dev/kmsg``'s
  ``oom_memcg=``/``task_memcg=``), i.e. relative to the hierarchy's root, not the mount.
- :func:`kernel_version`: ``uname -r`` as (major, minor).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from oomkit.errors import KernelError, OomkitError
from oomkit.kernel.linux import cgroupfs as cf


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of mountinfo: mount point, the filesystem's root there, type, options."""

    point: str
    root: str
    fstype: str
    options: frozenset[str]


def parse_mountinfo(text: str) -> list[Mount]:
    """``35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory`` lines."""
    out: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        out.append(Mount(lf[4], lf[3], rf[0], frozenset(rf[2].split(","))))
    return out


def kernel_version(release: str) -> tuple[int, int]:
    """``"6.18.0-1-amd64"`` -> (6, 18); (0, 0) if unreadable."""
    parts = release.split(".")
    try:
        minor = parts[1]
        digits = len(minor) - len(minor.lstrip("0123456789"))
        return int(parts[0]), int(minor[:digits] or 0)
    except (IndexError, ValueError):
        return (0, 0)


def detect_root(
    root: str | None,
    mounts: list[Mount],
    exists: Callable[[str], bool],
    read: Callable[[str], str],
) -> tuple[str, Literal[1, 2]]:
    """The memory cgroup directory to use and its version.

    ``root`` None: the cgroup2 mount with the memory controller enabled, else the v1
    memory hierarchy. ``root`` a directory holding per-controller mounts (hybrid
    ``/sys/fs/cgroup``): the memory controller's mount below it. Otherwise ``root`` itself,
    v1 if it has v1 memory files, v2 if its ``cgroup.controllers`` lists memory.
    ``exists``/``read`` probe files (``read`` raises OomkitError). Raises KernelError
    (ENOENT) when there is no memory controller there.
    """
    if root is None:
        for m in mounts:
            if m.fstype == "cgroup2":
                try:
                    ctl = read(os.path.join(m.point, cf.CGROUP_CONTROLLERS))
                except OomkitError:
                    continue
                if "memory" in ctl.split():
                    return m.point, 2
        for m in mounts:
            if m.fstype == "cgroup" and "memory" in m.options:
                return m.point, 1
        raise KernelError("no memory cgroup controller is mounted", errno.ENOENT)
    root = os.path.abspath(root)
    below = [m for m in mounts if m.point.startswith(root.rstrip("/") + "/")]
    if below and not exists(os.path.join(root, cf.CGROUP_CONTROLLERS)):
        try:
            return detect_root(None, below, exists, read)
        except KernelError:
            pass
    if exists(os.path.join(root, cf.V1_USAGE)) or exists(os.path.join(root, cf.V1_OOM_CONTROL)):
        return root, 1
    ctl_path = os.path.join(root, cf.CGROUP_CONTROLLERS)
    if exists(ctl_path):
        if "memory" not in read(ctl_path).split():
            raise KernelError(f"{root}: the memory controller is not enabled", errno.ENOENT)
        return root, 2
    raise KernelError(f"{root}: not a memory cgroup directory", errno.ENOENT)


def hierarchy_point(root_dir: str, mounts: list[Mount]) -> str:
    """The mount point of the cgroup hierarchy holding ``root_dir`` (``root_dir`` itself
    when it is on no cgroup mount: a fake tree in tests)."""
    best = ""
    for m in mounts:
        if m.fstype in ("cgroup", "cgroup2") and len(m.point) > len(best) and (
            root_dir == m.point or root_dir.startswith(m.point.rstrip("/") + "/")
        ):
            best = m.point
    return best or root_dir


def mount_prefix(root_dir: str, mounts: list[Mount]) -> str | None:
    """``root_dir``'s path as the kernel prints it ("" for a hierarchy's root); None if it
    is on no cgroup mount."""
    best: Mount | None = None
    for m in mounts:
        if m.fstype not in ("cgroup", "cgroup2"):
            continue
        inside = root_dir == m.point or root_dir.startswith(m.point.rstrip("/") + "/")
        if inside and (best is None or len(m.point) > len(best.point)):
            best = m
    if best is None:
        return None
    rel = os.path.relpath(root_dir, best.point)
    joined = posixpath.normpath(posixpath.join(best.root, "" if rel == "." else rel))
    return "" if joined == "/" else joined


def freezer_root(mounts: list[Mount]) -> str | None:
    """The v1 freezer hierarchy's mount point, if mounted."""
    return next((m.point for m in mounts if m.fstype == "cgroup" and "freezer" in m.options), None)
