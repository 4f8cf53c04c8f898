"""The restore journal: every kernel setting the live backend changes, with its original.

``record`` is called *before* each change; with a state file the journal is kept on disk
too, and the first record starts the watchdog process (:mod:`.watchdog`), which writes the
originals back if this process dies or hangs. A state file left by a dead runtime is
restored when a new journal opens it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading

from oomkit.kernel.linux.watchdog import (
    STATE_VERSION,
    Setting,
    default_hung_after,
    pid_alive,
    read_state,
    restore_file,
    restore_setting,
    spawn_watchdog,
)


class RestoreJournal:
    """What the runtime changed, kept in memory and, with a ``state_file``, on disk.

    ``record`` comes *before* each change, so a crash between the two only restores a
    value that was never changed. With ``watchdog=True`` the first record starts the
    watchdog process. Thread-safe: handlers act from the runtime's worker thread.
    ``hung_after``: how long a memcg may stay under OOM with the kernel killer disabled by
    us before the watchdog hands it to the kernel killer (None: ``default_hung_after()``;
    0: never).
    """

    def __init__(
        self,
        state_file: str | None = None,
        *,
        watchdog: bool = True,
        hung_after: float | None = None,
    ) -> None:
        self.state_file = state_file
        self.hung_after = default_hung_after() if hung_after is None else hung_after
        if self.hung_after < 0:
            raise ValueError("hung_after must be >= 0")
        self._use_watchdog = watchdog and state_file is not None
        self._lock = threading.Lock()
        self._settings: dict[str, Setting] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self.leftovers: list[tuple[Setting, str | None]] = []
        if state_file is not None:
            owner, _ = read_state(state_file)
            if owner and owner != os.getpid() and pid_alive(owner):
                raise RuntimeError(
                    f"{state_file} belongs to a running oomkit (pid {owner}); "
                    "use another state file"
                )
            # A crashed run's settings (its watchdog should have restored them already;
            # restoring twice writes the same original values).
            self.leftovers = restore_file(state_file)

    # -- the runtime's side --------------------------------------------------------------
    def record(self, path: str, original: str, dir_inode: int = 0) -> None:
        """Remember ``path``'s original value, unless it is already remembered."""
        with self._lock:
            if path in self._settings:
                return
            self._settings[path] = Setting(path, original, dir_inode)
            self._persist()

    def update_original(self, path: str, original: str) -> None:
        """The user changed the setting meanwhile: that is the value to restore now."""
        with self._lock:
            old = self._settings.get(path)
            if old is not None and old.original != original:
                self._settings[path] = Setting(path, original, old.dir_inode)
                self._persist()

    def original(self, path: str) -> str | None:
        with self._lock:
            s = self._settings.get(path)
            return s.original if s is not None else None

    def forget(self, path: str) -> None:
        """The original value is back in place (we restored it, or the cgroup is gone)."""
        with self._lock:
            if self._settings.pop(path, None) is not None:
                self._persist()

    def restore(self, path: str) -> str | None:
        """Write one original back and forget it."""
        with self._lock:
            s = self._settings.get(path)
        if s is None:
            return None
        why = restore_setting(s)
        self.forget(path)
        return why

    def entries(self) -> list[Setting]:
        with self._lock:
            return list(self._settings.values())

    def restore_all(self) -> list[tuple[Setting, str | None]]:
        return [(s, self.restore(s.path)) for s in self.entries()]

    def close(self) -> list[tuple[Setting, str | None]]:
        """Restore everything, then let the watchdog go (it finds nothing left to do)."""
        results = self.restore_all()
        with self._lock:
            proc, self._proc = self._proc, None
            if self.state_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.state_file)
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return results

    @property
    def watchdog_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _persist(self) -> None:
        # Called with the lock held. Atomic replace: the watchdog never reads half a file.
        if self.state_file is None:
            return
        directory = os.path.dirname(self.state_file) or "."
        # Before the watchdog starts: it watches this directory for the journal's updates.
        os.makedirs(directory, exist_ok=True)
        if self._use_watchdog and self._proc is None:
            self._proc = spawn_watchdog(self.state_file, self.hung_after)
        data = {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "watchdog_pid": self._proc.pid if self._proc is not None else None,
            "settings": [s.to_json() for s in self._settings.values()],
        }
        tmp = f"{self.state_file}.{os.getpid()}.tmp"
        # json.dumps, not json.dump: dump() streams through the pure-Python encoder, ten
        # times slower, and arming a thousand cgroups rewrites this file a thousand times.
        text = json.dumps(data)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.state_file)
