"""The safety net: the kernel OOM killer never stays disabled, whatever happens to oomkit.

The live backend changes kernel settings to run handlers first: ``oom_kill_disable 1`` in
a v1 ``memory.oom_control``, a lowered ``memory.high`` on v2. Each change is written to a
state file (:class:`RestoreJournal`) *before* it is made, with the original value. A small
separate process, this module run as a script, holds the read end of a pipe from the
runtime and a pidfd of it; when either says the runtime is gone (SIGKILL, a crash, a clean
exit alike) it writes every original value back and exits. A runtime starting with a
leftover state file of a dead one restores it first.

Run as ``python -m oomkit.kernel.watchdog STATE_FILE`` (stdin: the pipe), or by file path,
which is how :class:`RestoreJournal` starts it: this file uses only the standard library
and imports nothing from oomkit, so the safety net works even if the package does not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Final

STATE_VERSION: Final = 1
DEFAULT_STATE_FILE: Final = "/run/oomkit/restore.json"


@dataclass(frozen=True, slots=True)
class Setting:
    """A kernel file we changed: write ``original`` back to ``path`` to undo it.

    ``dir_inode`` is the inode of the file's cgroup directory when we changed it; a cgroup
    removed and re-created under the same name is another cgroup and is left alone.
    """

    path: str
    original: str
    dir_inode: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "original": self.original, "dir_inode": self.dir_inode}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Setting:
        return Setting(str(d["path"]), str(d["original"]), int(d.get("dir_inode", 0)))


def restore_setting(s: Setting) -> str | None:
    """Write the original value back. Returns None, or why it was not done/failed."""
    if s.dir_inode:
        try:
            if os.stat(os.path.dirname(s.path)).st_ino != s.dir_inode:
                return "cgroup was replaced"
        except FileNotFoundError:
            return "cgroup is gone"
    try:
        fd = os.open(s.path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, s.original.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODEV):
            return "cgroup is gone"
        return f"{exc.strerror} (errno {exc.errno})"
    return None


def read_state(path: str) -> tuple[int, list[Setting]]:
    """(owner pid, settings) of a state file; (0, []) when there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return 0, []
    except (OSError, ValueError):
        return 0, []
    settings = [Setting.from_json(d) for d in data.get("settings", [])]
    return int(data.get("pid", 0)), settings


def restore_file(path: str) -> list[tuple[Setting, str | None]]:
    """Restore every setting listed in a state file, then remove the file."""
    _, settings = read_state(path)
    results = [(s, restore_setting(s)) for s in settings]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return results


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RestoreJournal:
    """What the runtime changed, kept in memory and, with a ``state_file``, on disk.

    ``record`` comes *before* each change, so a crash between the two only restores a
    value that was never changed. With ``watchdog=True`` the first record starts the
    watchdog process. Thread-safe: handlers act from the runtime's worker thread.
    """

    def __init__(self, state_file: str | None = None, *, watchdog: bool = True) -> None:
        self.state_file = state_file
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
        if self._use_watchdog and self._proc is None:
            self._proc = spawn_watchdog(self.state_file)
        data = {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "watchdog_pid": self._proc.pid if self._proc is not None else None,
            "settings": [s.to_json() for s in self._settings.values()],
        }
        directory = os.path.dirname(self.state_file) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.state_file}.{os.getpid()}.tmp"
        # json.dumps, not json.dump: dump() streams through the pure-Python encoder, ten
        # times slower, and arming a thousand cgroups rewrites this file a thousand times.
        text = json.dumps(data)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.state_file)


def spawn_watchdog(state_file: str) -> subprocess.Popen[bytes]:
    """Start the watchdog: a new session (a Ctrl-C or SIGTERM of the runtime's process group
    does not reach it), stdin the pipe whose EOF means "the runtime is gone"."""
    proc = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), state_file, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    # No handshake needed: if we die before it opened its pidfd of us, pidfd_open fails (or
    # the pipe is already at EOF) and it restores at once.
    return proc


# -- the watchdog process ------------------------------------------------------------------


def _protect_self() -> None:
    # The safety net must not be the OOM killer's victim (best effort; needs privilege).
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError:
        pass


def watch(state_file: str, runtime_pid: int, pipe_fd: int = 0) -> int:
    """Block until the runtime is gone (pipe EOF or its pidfd readable), then restore."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    _protect_self()
    poller = select.poll()
    poller.register(pipe_fd, select.POLLIN | select.POLLHUP)
    pidfd = -1
    if runtime_pid > 0:
        try:
            pidfd = os.pidfd_open(runtime_pid)
            poller.register(pidfd, select.POLLIN)
        except OSError:
            return _finish(state_file)  # already gone: restore right away
    while True:
        for fd, _ in poller.poll():
            if fd == pidfd:
                return _finish(state_file)
            try:
                data = os.read(pipe_fd, 4096)
            except OSError:
                data = b""
            if not data:
                return _finish(state_file)


def _finish(state_file: str) -> int:
    failed = 0
    for setting, why in restore_file(state_file):
        if why is not None and why not in ("cgroup is gone", "cgroup was replaced"):
            failed += 1
            print(f"oomkit watchdog: {setting.path}: {why}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m oomkit.kernel.watchdog STATE_FILE [RUNTIME_PID]", file=sys.stderr)
        return 2
    state_file = args[0]
    runtime_pid = int(args[1]) if len(args) > 1 else os.getppid()
    return watch(state_file, runtime_pid)


if __name__ == "__main__":
    sys.exit(main())
