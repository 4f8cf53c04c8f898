"""Preferences every ready policy shares: protect, avoid and prefer a victim.

By cgroup (a glob on the cgroup path, matching the cgroup or any ancestor, so
``/system.slice/sshd.service`` covers everything below it) and by command (a regular
expression searched in the task's comm, as earlyoom's ``--prefer``/``--avoid``/``--ignore``
do). ``protect``: never chosen. ``avoid``: chosen only when nothing else is left.
``prefer``: chosen before anything else.

systemd's ``ManagedOOMPreference=avoid|omit`` is read from the cgroup directory's extended
attributes, as systemd-oomd does (src/oom/oomd-util.c, oomd_fetch_cgroup_oom_preference):
``user.oomd_omit`` (never a candidate) wins over ``user.oomd_avoid``; both are honoured only
on a cgroup owned by root or by the owner of its parent (a user may not exempt itself from
a slice it does not own). systemd before v250 wrote ``trusted.oomd_*``; those count too.
Only the live backends have cgroup directories; elsewhere there are no attributes.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from oomkit.kernel.base import Cgroup, Task

OMIT = None  # never a candidate
AVOID = -1
NEUTRAL = 0
PREFER = 1

_TRUE = (b"1", b"y", b"yes", b"true", b"on")


def _globs(v: Sequence[str] | str | None) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    return tuple(v)


def _matches(globs: tuple[str, ...], cg: Cgroup) -> bool:
    c: Cgroup | None = cg
    while c is not None:
        if any(fnmatch.fnmatchcase(c.path, g) for g in globs):
            return True
        c = c.parent
    return False


def _xattr_true(path: str, names: Iterable[str]) -> bool:
    for name in names:
        try:
            if os.getxattr(path, name).strip().lower() in _TRUE:
                return True
        except OSError:
            continue  # absent, unsupported (cgroup v1), or not permitted
    return False


def managed_oom_preference(cg: Cgroup) -> int | None:
    """OMIT, AVOID or NEUTRAL from the cgroup directory's oomd attributes (live only)."""
    path = getattr(cg, "dir", None)
    if not isinstance(path, str):
        return NEUTRAL
    try:
        owner = os.stat(path).st_uid
        if owner != 0 and owner != os.stat(os.path.dirname(path)).st_uid:
            return NEUTRAL
    except OSError:
        return NEUTRAL
    if _xattr_true(path, ("user.oomd_omit", "trusted.oomd_omit")):
        return OMIT
    if _xattr_true(path, ("user.oomd_avoid", "trusted.oomd_avoid")):
        return AVOID
    return NEUTRAL


@dataclass(frozen=True, slots=True)
class Preferences:
    """protect/avoid/prefer: cgroup globs; *_comm: regular expressions on the comm."""

    protect: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    protect_comm: re.Pattern[str] | None = None
    avoid_comm: re.Pattern[str] | None = None
    prefer_comm: re.Pattern[str] | None = None
    xattrs: bool = True

    @classmethod
    def of(cls, protect: Sequence[str] = (), avoid: Sequence[str] = (),
           prefer: Sequence[str] = (), protect_comm: str = "", avoid_comm: str = "",
           prefer_comm: str = "", xattrs: bool = True) -> Preferences:
        """Raises re.error for a broken expression (the config loader reports it)."""
        return cls(_globs(protect), _globs(avoid), _globs(prefer),
                   re.compile(protect_comm) if protect_comm else None,
                   re.compile(avoid_comm) if avoid_comm else None,
                   re.compile(prefer_comm) if prefer_comm else None, xattrs)

    @property
    def has_comm_rules(self) -> bool:
        return any(r is not None for r in (self.protect_comm, self.avoid_comm,
                                           self.prefer_comm))

    def cgroup(self, cg: Cgroup) -> int | None:
        """OMIT, AVOID, NEUTRAL or PREFER for a cgroup."""
        if _matches(self.protect, cg):
            return OMIT
        pref = managed_oom_preference(cg) if self.xattrs else NEUTRAL
        if pref is OMIT:
            return OMIT
        if _matches(self.avoid, cg):
            return AVOID
        if _matches(self.prefer, cg):
            return PREFER
        return pref

    def protected_by_comm(self, task: Task, cgroup_pref: int | None = NEUTRAL) -> bool:
        """OMIT by ``protect_comm`` alone (its cgroup and the kernel would allow it)."""
        return (not task.unkillable and cgroup_pref is not OMIT
                and self.protect_comm is not None
                and self.protect_comm.search(task.comm) is not None)

    def task(self, task: Task, cgroup_pref: int | None = NEUTRAL) -> int | None:
        """OMIT, AVOID, NEUTRAL or PREFER for a task (its cgroup's preference given)."""
        if task.unkillable or cgroup_pref is OMIT:
            return OMIT
        if self.protect_comm is not None and self.protect_comm.search(task.comm):
            return OMIT
        if self.avoid_comm is not None and self.avoid_comm.search(task.comm):
            return AVOID
        if self.prefer_comm is not None and self.prefer_comm.search(task.comm):
            return PREFER
        return cgroup_pref


def all_tasks(root: Cgroup) -> list[Task]:
    """Every task at or below root (tasks of cgroups that vanish meanwhile are skipped)."""
    from oomkit.errors import OomkitError

    out: list[Task] = []
    try:
        for cg in root.walk():
            try:
                out.extend(cg.tasks())
            except OomkitError:
                continue
    except OomkitError:
        pass
    return out
