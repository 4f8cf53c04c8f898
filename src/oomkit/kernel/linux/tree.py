"""The cgroup tree: an index of cgroup ids to paths, kept current with inotify.

Cgroup ids are the directories' inode numbers (what the kernel calls the cgroup id, as in
``/proc/PID/fdinfo`` and BPF). Directories get an inotify watch for IN_CREATE/IN_DELETE,
so a cgroup made or removed reaches ``on_online``/``on_offline`` without rescanning; the
same inotify fd carries the IN_MODIFY watches of single files (v2 ``memory.events``,
``memory.max``) for the guard band. An inotify queue overflow rescans everything.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomkit.errors import CgroupGone, KernelError, OomkitError
from oomkit.kernel.linux import fsio
from oomkit.kernel.linux.cgroup import LinuxCgroup
from oomkit.kernel.linux.loop import EventLoop

if TYPE_CHECKING:
    from oomkit.kernel.linux.kernel import LinuxKernel


class CgroupTree:
    """Index and inotify watches of the cgroups below ``root_dir``."""

    def __init__(
        self,
        kernel: LinuxKernel,
        root_dir: str,
        loop: EventLoop,
        lock: threading.RLock,
        on_online: Callable[[LinuxCgroup], None],
        on_offline: Callable[[int, str], None],
    ) -> None:
        self._kernel = kernel
        self.root_dir = root_dir
        self._loop = loop
        self._lock = lock
        self._on_online = on_online
        self._on_offline = on_offline
        self._ids: dict[int, str] = {}
        self._paths: dict[str, int] = {}
        self._inotify: fsio.Inotify | None = None
        self._dir_wds: dict[int, str] = {}
        self._watched: set[str] = set()
        self._file_wds: dict[int, Callable[[], None]] = {}

    # -- lookup ------------------------------------------------------------------------
    def dir_of(self, path: str) -> str:
        return self.root_dir if path == "/" else self.root_dir + path

    def cgroup_at(self, path: str) -> LinuxCgroup:
        """The cgroup at ``path`` (below the root); CgroupGone if there is none."""
        directory = self.dir_of(path)
        return LinuxCgroup(self._kernel, fsio.inode(directory), path, directory)

    def by_id(self, cg_id: int) -> LinuxCgroup | None:
        """The cgroup with this id, from the index, else from a rescan; None if none."""
        with self._lock:
            known = self._ids.get(cg_id)
        if known is not None:
            try:
                cg = self.cgroup_at(known)
                if cg.id == cg_id:
                    return cg
            except CgroupGone:
                pass
        for cg in self.rescan():
            if cg.id == cg_id:
                return cg
        return None

    def _index(self, cg_id: int, path: str) -> None:
        with self._lock:
            old = self._paths.get(path)
            if old is not None and old != cg_id:
                self._ids.pop(old, None)
            self._ids[cg_id] = path
            self._paths[path] = cg_id

    def _unindex(self, path: str) -> int | None:
        with self._lock:
            cg_id = self._paths.pop(path, None)
            if cg_id is not None:
                self._ids.pop(cg_id, None)
            return cg_id

    def rescan(self) -> list[LinuxCgroup]:
        """Index every cgroup below the root; returns them (pre-order)."""
        found: list[LinuxCgroup] = []
        try:
            root = self.cgroup_at("/")
        except CgroupGone:
            return found
        for cg in root.walk():
            assert isinstance(cg, LinuxCgroup)
            self._index(cg.id, cg.path)
            found.append(cg)
        return found

    # -- inotify -------------------------------------------------------------------------
    def start(self) -> None:
        """Watch every directory (no inotify available: the index is rescanned on lookups)."""
        try:
            self._inotify = fsio.Inotify()
        except KernelError:
            self._inotify = None
        if self._inotify is not None:
            self._loop.add_fd(self._inotify.fd, select.EPOLLIN, self._on_inotify)
            for cg in self.rescan():
                self._watch_dir(cg.path)

    def _watch_dir(self, path: str) -> bool:
        """Watch a cgroup directory for children; True if it was not watched yet."""
        if self._inotify is None:
            return False
        with self._lock:
            if path in self._watched:
                return False
        try:
            wd = self._inotify.add(
                self.dir_of(path), fsio.IN_CREATE | fsio.IN_DELETE | fsio.IN_ONLYDIR
            )
        except OomkitError:
            return False
        with self._lock:
            self._dir_wds[wd] = path
            self._watched.add(path)
        return True

    def watch_file(self, path: str, cb: Callable[[], None]) -> int:
        """Call ``cb`` when the file is modified; the watch descriptor (-1: no inotify)."""
        if self._inotify is None:
            return -1
        wd = self._inotify.add(path, fsio.IN_MODIFY)
        with self._lock:
            self._file_wds[wd] = cb
        return wd

    def unwatch_file(self, wd: int) -> None:
        if wd < 0 or self._inotify is None:
            return
        with self._lock:
            self._file_wds.pop(wd, None)
        self._inotify.remove(wd)

    def _on_inotify(self, _mask: int) -> None:
        assert self._inotify is not None
        file_cbs: list[Callable[[], None]] = []
        for wd, mask, name in self._inotify.read():
            if mask & fsio.IN_Q_OVERFLOW:
                self.resync()
                continue
            with self._lock:
                parent = self._dir_wds.get(wd)
                file_cb = self._file_wds.get(wd)
            if mask & fsio.IN_IGNORED:
                with self._lock:
                    self._dir_wds.pop(wd, None)
                    self._file_wds.pop(wd, None)
                continue
            if file_cb is not None and mask & fsio.IN_MODIFY:
                if file_cb not in file_cbs:
                    file_cbs.append(file_cb)
                continue
            if parent is None or not mask & fsio.IN_ISDIR:
                continue
            path = (parent.rstrip("/") + "/" + name) if parent != "/" else "/" + name
            if mask & fsio.IN_CREATE:
                self._online(path)
            elif mask & fsio.IN_DELETE:
                self._offline(path)
        for cb in file_cbs:
            cb()

    def _online(self, path: str) -> None:
        try:
            cg = self.cgroup_at(path)
        except CgroupGone:
            return
        # Children made before our watch was in place would never be seen: look now.
        for c in [c for c in cg.walk() if isinstance(c, LinuxCgroup)]:
            if not self._watch_dir(c.path):
                continue
            self._index(c.id, c.path)
            self._on_online(c)

    def _offline(self, path: str) -> None:
        with self._lock:
            self._watched.discard(path)
        cg_id = self._unindex(path)
        if cg_id is not None:
            self._on_offline(cg_id, path)

    def resync(self) -> None:
        """Rescan after lost events: offline what went, online what came."""
        with self._lock:
            before = set(self._watched)
        now = {cg.path for cg in self.rescan()}
        for path in sorted(before - now, reverse=True):
            self._offline(path)
        for path in sorted(now - before):
            self._online(path)

    def close(self) -> None:
        if self._inotify is not None:
            self._loop.del_fd(self._inotify.fd)
            self._inotify.close()
