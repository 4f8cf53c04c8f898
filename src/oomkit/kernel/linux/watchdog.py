"""The safety net: the kernel OOM killer never stays disabled, whatever happens to oomkit.

The live backend changes kernel settings to run handlers first: ``oom_kill_disable 1`` in
a v1 ``memory.oom_control``, a lowered ``memory.high`` on v2. Each change is written to a
state file (the restore journal, :mod:`.journal`) *before* it is made, with the original
value. A small separate process, this module run as a script, holds the read end of a pipe from the
runtime and a pidfd of it; when either says the runtime is gone (SIGKILL, a crash, a clean
exit alike) it writes every original value back and exits. A runtime starting with a
leftover state file of a dead one restores it first.

It also covers a runtime that is alive but *hung* (a deadlocked main loop, a stopped
process): for every v1 ``memory.oom_control`` the journal says we set ``oom_kill_disable``
on, it registers an eventfd of its own. When one fires and that memcg is still
``under_oom`` ``hung_after`` seconds later (default 15 s, well beyond the runtime's own
``max_stall_s`` hand-back), it writes ``oom_kill_disable 0`` so that the kernel killer
resolves the OOM. The journal entry stays (the runtime, if it recovers, owns it). The
journal is followed with inotify on its directory; nothing is polled while no OOM is
pending.

Run as ``python -m oomkit.kernel.linux.watchdog STATE_FILE [RUNTIME_PID [HUNG_AFTER]]``
(stdin: the pipe), or by file path, which is how the journal starts it: this file uses only
the standard library and imports nothing from oomkit, so the safety net works even if
the package does not. ``HUNG_AFTER`` (seconds; 0 turns the hung-runtime check off) defaults
to ``$OOMKIT_WATCHDOG_HUNG_AFTER``, else 15.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Final

STATE_VERSION: Final = 1
DEFAULT_STATE_FILE: Final = "/run/oomkit/restore.json"
DEFAULT_HUNG_AFTER: Final = 15.0
HUNG_AFTER_ENV: Final = "OOMKIT_WATCHDOG_HUNG_AFTER"
V1_OOM_CONTROL: Final = "memory.oom_control"
V1_EVENT_CONTROL: Final = "cgroup.event_control"


def default_hung_after() -> float:
    """``$OOMKIT_WATCHDOG_HUNG_AFTER`` if it is a number >= 0, else 15 s."""
    try:
        value = float(os.environ.get(HUNG_AFTER_ENV, ""))
    except ValueError:
        return DEFAULT_HUNG_AFTER
    return value if value >= 0 else DEFAULT_HUNG_AFTER


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


def spawn_watchdog(
    state_file: str, hung_after: float = DEFAULT_HUNG_AFTER
) -> subprocess.Popen[bytes]:
    """Start the watchdog: a new session (a Ctrl-C or SIGTERM of the runtime's process group
    does not reach it), stdin the pipe whose EOF means "the runtime is gone"."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-I",
            os.path.abspath(__file__),
            state_file,
            str(os.getpid()),
            repr(float(hung_after)),
        ],
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


def _log(msg: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"oomkit watchdog: {msg}", file=sys.stderr, flush=True)


# inotify through ctypes (the standard library has no binding). Only the journal's
# directory is watched: the runtime replaces the journal with os.replace (IN_MOVED_TO).
_IN_CLOSE_WRITE: Final = 0x00000008
_IN_MOVED_TO: Final = 0x00000080
_IN_DELETE: Final = 0x00000200
_IN_Q_OVERFLOW: Final = 0x00004000
_INOTIFY_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len


def _inotify_watch_dir(directory: str) -> int:
    """A non-blocking inotify fd watching ``directory`` for files written or moved in."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"inotify_init1: {os.strerror(code)}")
    mask = _IN_MOVED_TO | _IN_CLOSE_WRITE | _IN_DELETE
    if libc.inotify_add_watch(fd, os.fsencode(directory), ctypes.c_uint32(mask)) < 0:
        code = ctypes.get_errno()
        os.close(fd)
        raise OSError(code, f"inotify_add_watch {directory}: {os.strerror(code)}")
    return fd


def _inotify_names(fd: int) -> list[str] | None:
    """Names in the pending events (drained); None on a queue overflow (re-read anyway)."""
    names: list[str] = []
    overflow = False
    while True:
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            break
        except OSError:
            break
        if not buf:
            break
        pos = 0
        while pos + _INOTIFY_EVENT.size <= len(buf):
            _wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(buf, pos)
            pos += _INOTIFY_EVENT.size
            names.append(os.fsdecode(buf[pos : pos + length].split(b"\0", 1)[0]))
            pos += length
            if mask & _IN_Q_OVERFLOW:
                overflow = True
    return None if overflow else names


@dataclass(slots=True)
class _OomWatch:
    """Our own eventfd on one v1 memcg whose OOM killer the runtime disabled."""

    setting: Setting
    efd: int
    ctl_fd: int
    deadline: float | None = None  # under OOM since the notification: hand over at this time

    def close(self) -> None:
        # Closing the eventfd unregisters the event in the kernel.
        for fd in (self.efd, self.ctl_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def under_oom(self) -> bool | None:
        """Is the memcg under OOM now? None when it is gone."""
        try:
            text = os.pread(self.ctl_fd, 4096, 0).decode()
        except OSError:
            return None  # ENODEV (removed), or anything else: stop watching it
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "under_oom":
                return value.strip() not in ("", "0")
        return False


def _is_ours(s: Setting) -> bool:
    """A v1 oom_control whose killer we disabled (the original value was 0)."""
    return os.path.basename(s.path) == V1_OOM_CONTROL and s.original.strip() == "0"


def _register(s: Setting) -> _OomWatch | None:
    directory = os.path.dirname(s.path)
    ctl_fd = efd = -1
    try:
        ctl_fd = os.open(s.path, os.O_RDONLY | os.O_CLOEXEC)
        if s.dir_inode and os.stat(directory).st_ino != s.dir_inode:
            raise FileNotFoundError(errno.ENOENT, "cgroup was replaced")
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ec = os.open(os.path.join(directory, V1_EVENT_CONTROL), os.O_WRONLY | os.O_CLOEXEC)
        try:
            # Registering while the memcg is already under OOM signals at once.
            os.write(ec, f"{efd} {ctl_fd}".encode())
        finally:
            os.close(ec)
    except OSError as exc:
        for fd in (efd, ctl_fd):
            if fd >= 0:
                os.close(fd)
        if exc.errno not in (errno.ENOENT, errno.ENODEV):
            _log(f"{s.path}: cannot watch for OOMs: {exc.strerror} (errno {exc.errno})")
        return None
    return _OomWatch(s, efd, ctl_fd)


class _HungGuard:
    """The hung-runtime safety net: eventfds per journaled v1 memcg, deadlines while under
    OOM. Every method is called from the watchdog's one loop."""

    def __init__(self, state_file: str, hung_after: float, ep: select.epoll) -> None:
        self.state_file = state_file
        self.name = os.path.basename(state_file)
        self.hung_after = hung_after
        # While an OOM is pending: look at under_oom this often (a memcg whose OOM the
        # runtime resolved is no longer pending; no deadline, no wake-ups).
        self.check_every = max(0.05, min(1.0, hung_after / 4))
        self.ep = ep
        self.by_efd: dict[int, _OomWatch] = {}
        self.by_path: dict[str, _OomWatch] = {}
        self.inotify_fd = _inotify_watch_dir(os.path.dirname(state_file) or ".")
        ep.register(self.inotify_fd, select.EPOLLIN)
        self.reload()  # after the watch: an update in between is not missed

    def reload(self) -> None:
        _, settings = read_state(self.state_file)
        wanted = {s.path: s for s in settings if _is_ours(s)}
        for path, w in list(self.by_path.items()):
            if wanted.get(path) != w.setting:
                self._drop(w)
        for path, s in wanted.items():
            if path not in self.by_path:
                new = _register(s)
                if new is not None:
                    self.by_path[path] = new
                    self.by_efd[new.efd] = new
                    self.ep.register(new.efd, select.EPOLLIN)

    def _drop(self, w: _OomWatch) -> None:
        self.by_path.pop(w.setting.path, None)
        self.by_efd.pop(w.efd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(w.efd)
        w.close()

    def on_fd(self, fd: int) -> bool:
        """Handle ``fd`` if it is one of ours."""
        if fd == self.inotify_fd:
            names = _inotify_names(fd)
            if names is None or self.name in names:
                self.reload()
            return True
        w = self.by_efd.get(fd)
        if w is None:
            return False
        with contextlib.suppress(OSError):
            os.eventfd_read(w.efd)
        state = w.under_oom()
        if state is None:
            self._drop(w)  # the eventfd is also signalled when the memcg is removed
        elif state and w.deadline is None:
            w.deadline = time.monotonic() + self.hung_after
        return True

    def timeout(self) -> float:
        """epoll timeout in seconds: -1 (none) while no OOM is pending."""
        pending = [w.deadline for w in self.by_path.values() if w.deadline is not None]
        if not pending:
            return -1
        return max(0.0, min(min(pending) - time.monotonic(), self.check_every))

    def check(self) -> None:
        now = time.monotonic()
        for w in list(self.by_path.values()):
            if w.deadline is None:
                continue
            state = w.under_oom()
            if state is None:
                self._drop(w)
            elif not state:
                w.deadline = None  # resolved (by the runtime, or the kernel)
            elif now >= w.deadline:
                w.deadline = None
                self._hand_over(w)

    def _hand_over(self, w: _OomWatch) -> None:
        # The original value (0): the kernel killer acts. The journal entry stays.
        why = restore_setting(w.setting)
        if why is None:
            _log(
                f"{w.setting.path}: under OOM for {self.hung_after:g} s and the runtime did "
                "not resolve it (hung?): oom_kill_disable 0, the kernel OOM killer acts"
            )
        elif why in ("cgroup is gone", "cgroup was replaced"):
            self._drop(w)
        else:
            _log(f"{w.setting.path}: could not hand the OOM to the kernel killer: {why}")

    def close(self) -> None:
        for w in list(self.by_path.values()):
            self._drop(w)
        with contextlib.suppress(OSError):
            os.close(self.inotify_fd)


def watch(
    state_file: str, runtime_pid: int, pipe_fd: int = 0, hung_after: float | None = None
) -> int:
    """Block until the runtime is gone (pipe EOF or its pidfd readable), then restore.

    Meanwhile, with ``hung_after`` > 0, hand a memcg that stays under OOM that long to the
    kernel killer (the runtime may be alive but hung)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    _protect_self()
    if hung_after is None:
        hung_after = default_hung_after()
    ep = select.epoll()
    ep.register(pipe_fd, select.EPOLLIN)
    pidfd = -1
    if runtime_pid > 0:
        try:
            pidfd = os.pidfd_open(runtime_pid)
            ep.register(pidfd, select.EPOLLIN)
        except OSError:
            return _finish(state_file)  # already gone: restore right away
    guard: _HungGuard | None = None
    if hung_after > 0:
        try:
            guard = _HungGuard(state_file, hung_after, ep)
        except OSError as exc:  # the restore on the runtime's death works regardless
            _log(f"no hung-runtime check: {exc}")
    try:
        while True:
            timeout = guard.timeout() if guard is not None else -1
            for fd, _ in ep.poll(timeout):
                if fd == pidfd:
                    return _finish(state_file)
                if fd == pipe_fd:
                    try:
                        data = os.read(pipe_fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        return _finish(state_file)
                elif guard is not None:
                    guard.on_fd(fd)
            if guard is not None:
                guard.check()
    finally:
        if guard is not None:
            guard.close()


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
        print(
            "usage: python -m oomkit.kernel.linux.watchdog STATE_FILE"
            " [RUNTIME_PID [HUNG_AFTER]]",
            file=sys.stderr,
        )
        return 2
    state_file = args[0]
    runtime_pid = int(args[1]) if len(args) > 1 else os.getppid()
    hung_after = float(args[2]) if len(args) > 2 else None
    return watch(state_file, runtime_pid, hung_after=hung_after)


if __name__ == "__main__":
    sys.exit(main())
