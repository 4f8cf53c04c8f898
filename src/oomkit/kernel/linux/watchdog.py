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
journal is followed with inotify on its directory. The runtime's loop sends heartbeats
on the pipe, each one byte giving the seconds until the next (seldom while the machine is
quiet, every :func:`beat_interval` once an OOM began, and one as each OOM begins); a
runtime in the stopped state, or whose heartbeat is ``hung_after`` late, is stuck: an OOM
of ours goes to the kernel killer at once, and a v2 memcg held at its guard band (no OOM
event reaches us on v2) gets its ``memory.high`` back.

On v1 a memcg made below one with ``oom_kill_disable 1`` inherits the flag. One made while
the runtime cannot journal it (stopped, hung, its journal unwritable) would stay disabled
for good: the watchdog watches each journaled memcg's directory (inotify IN_CREATE), takes
every new child that inherited the flag under the same hung-runtime check, and writes it
back to 0 when the runtime is gone, as if it had been journaled.

A journal is trusted no further than what oomkit itself writes (:func:`.restore.check_setting`):
a journal planted at the state file's path cannot make root write anything else anywhere.

Run as ``python -m oomkit.kernel.linux.watchdog STATE_FILE [RUNTIME_PID [HUNG_AFTER
[CGROUP_ROOT]]]``
(stdin: the pipe), or by file path, which is how the journal starts it: this file uses only
the standard library and imports nothing from the oomkit package, only its siblings by
path (standard library only too): ``restore.py`` (the journal's entries and their
write-back), ``handover_log.py`` and ``kmsg.py`` (the records of the OOMs it hands over);
the safety net works even if the package does not.
``HUNG_AFTER`` (seconds; 0 turns the hung-runtime check off) defaults to
``$OOMKIT_WATCHDOG_HUNG_AFTER``, else 15.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import select
import signal
import struct
import sys
import time

# Neither dataclasses (with inspect, ast, dis) nor typing: about 2 MiB of this process,
# locked for good. typing.TYPE_CHECKING without importing typing (mypy takes it as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

if TYPE_CHECKING or __package__:
    from oomkit.kernel.linux import handover_log
    from oomkit.kernel.linux.restore import (
        V1_OOM_CONTROL,
        Setting,
        check_setting,
        read_state,
        restore_file,
        restore_setting,
    )
else:  # run by path: its sibling files, never the package (which may not even import)
    import importlib.util

    def _load_sibling(name: str) -> Any:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"_oomkit_watchdog_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    # The journal's entries and their restore: without them there is no safety net, so a
    # failure here ends the watchdog (and the runtime's start, which waits for "ready").
    _restore = _load_sibling("restore")
    V1_OOM_CONTROL = _restore.V1_OOM_CONTROL
    Setting = _restore.Setting
    check_setting = _restore.check_setting
    read_state = _restore.read_state
    restore_file = _restore.restore_file
    restore_setting = _restore.restore_setting

    try:
        handover_log = _load_sibling("handover_log")
    except Exception as exc:  # no records then; the restore does not depend on them
        print(f"oomkit watchdog: no OOM records: {exc}", file=sys.stderr)
        handover_log = None

DEFAULT_STATE_FILE: Final = "/run/oomkit/restore.json"
DEFAULT_HUNG_AFTER: Final = 15.0
#: Seconds between heartbeats of a quiet runtime (each announces the next, so staleness is
#: judged by what was announced): one wake-up of runtime and watchdog in ten seconds,
#: where a beat every second cost more idle CPU than earlyoom's whole poll.
IDLE_BEAT: Final = 10.0
HUNG_AFTER_ENV: Final = "OOMKIT_WATCHDOG_HUNG_AFTER"
V1_EVENT_CONTROL: Final = "cgroup.event_control"


def beat_interval(hung_after: float) -> float:
    """Seconds between the runtime's heartbeats (one byte on the pipe, from its event loop):
    a third of ``hung_after``, 1 to 5 s. The watchdog takes a runtime that sent none for
    ``hung_after`` plus this as stuck (stopped, its loop wedged, the GIL held): a handler
    call blocks the loop for at most its budget, and ``hung_after`` is at least the
    longest budget plus a margin."""
    return min(5.0, max(1.0, hung_after / 3))


def beat_byte(next_in: float) -> int:
    """A heartbeat's byte: the seconds until the next one, rounded up, 1..255."""
    return min(255, max(1, math.ceil(next_in)))


def _stopped(pid: int) -> bool:
    """``pid`` is in the stopped or traced state (proc(5), /proc/PID/stat field 3)."""
    if pid <= 0:
        return False
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        data = os.read(fd, 1024)
    except OSError:
        return False
    finally:
        os.close(fd)
    fields = data[data.rfind(b")") + 2:].split(b" ", 1)
    return bool(fields) and fields[0] in (b"T", b"t")


def default_hung_after() -> float:
    """``$OOMKIT_WATCHDOG_HUNG_AFTER`` if it is a number >= 0, else 15 s."""
    try:
        value = float(os.environ.get(HUNG_AFTER_ENV, ""))
    except ValueError:
        return DEFAULT_HUNG_AFTER
    return value if value >= 0 else DEFAULT_HUNG_AFTER


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
_IN_CREATE: Final = 0x00000100
_IN_Q_OVERFLOW: Final = 0x00004000
_IN_ISDIR: Final = 0x40000000
_INOTIFY_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len


def _inotify_init() -> int:
    """A non-blocking inotify fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"inotify_init1: {os.strerror(code)}")
    return fd


def _inotify_add(fd: int, path: str, mask: int) -> int:
    """inotify_add_watch; the watch descriptor, or -1 (the directory is gone)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(mask)))


def _inotify_watch_dir(directory: str) -> int:
    """A non-blocking inotify fd watching ``directory`` for files written or moved in."""
    fd = _inotify_init()
    if _inotify_add(fd, directory, _IN_MOVED_TO | _IN_CLOSE_WRITE | _IN_DELETE) < 0:
        code = ctypes.get_errno()
        os.close(fd)
        raise OSError(code, f"inotify_add_watch {directory}: {os.strerror(code)}")
    return fd


def _inotify_events(fd: int) -> list[tuple[int, int, str]]:
    """(wd, mask, name) of the pending events (drained)."""
    out: list[tuple[int, int, str]] = []
    while True:
        try:
            buf = os.read(fd, 65536)
        except OSError:  # BlockingIOError: drained
            break
        if not buf:
            break
        pos = 0
        while pos + _INOTIFY_EVENT.size <= len(buf):
            wd, mask, _cookie, length = _INOTIFY_EVENT.unpack_from(buf, pos)
            pos += _INOTIFY_EVENT.size
            out.append((wd, mask, os.fsdecode(buf[pos : pos + length].split(b"\0", 1)[0])))
            pos += length
    return out


def _inotify_names(fd: int) -> list[str] | None:
    """Names in the pending events (drained); None on a queue overflow (re-read anyway)."""
    events = _inotify_events(fd)
    if any(mask & _IN_Q_OVERFLOW for _, mask, _ in events):
        return None
    return [name for _, _, name in events]


class _OomWatch:
    """Our own eventfd on one v1 memcg whose OOM killer the runtime disabled."""

    __slots__ = ("ctl_fd", "deadline", "efd", "setting")

    def __init__(self, setting: Setting, efd: int, ctl_fd: int) -> None:
        self.setting = setting
        self.efd = efd
        self.ctl_fd = ctl_fd
        # Under OOM since the notification: hand over at this time.
        self.deadline: float | None = None

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

    def __init__(self, state_file: str, hung_after: float, ep: select.epoll,
                 root: str | None = None, log: handover_log.EventLog | None = None,
                 runtime_pid: int = 0) -> None:
        self.state_file = state_file
        self.runtime_pid = runtime_pid
        self.root = root
        self.log = log
        self.name = os.path.basename(state_file)
        self.hung_after = hung_after
        # While an OOM is pending: look at under_oom this often (a memcg whose OOM the
        # runtime resolved is no longer pending; no deadline, no wake-ups).
        self.check_every = max(0.05, min(1.0, hung_after / 4))
        self.ep = ep
        self.by_efd: dict[int, _OomWatch] = {}
        self.by_path: dict[str, _OomWatch] = {}
        self.waiting: set[_OomWatch] = set()  # those with a deadline (under OOM)
        self.inotify_fd = _inotify_watch_dir(os.path.dirname(state_file) or ".")
        ep.register(self.inotify_fd, select.EPOLLIN)
        # New memcgs below journaled ones (v1 inheritance of oom_kill_disable).
        self.cg_fd = _inotify_init()
        ep.register(self.cg_fd, select.EPOLLIN)
        self.cg_wds: dict[int, str] = {}  # watch descriptor -> memcg directory
        self.watched_dirs: set[str] = set()
        self.inherited: dict[str, Setting] = {}  # oom_control path -> its "0" to restore
        self.journaled: set[str] = set()
        self.bands: list[Setting] = []
        # The runtime's heartbeat: None until its first (a runtime that sends none is
        # judged by the OOM deadlines alone).
        self.last_beat: float | None = None
        self.stale_after = hung_after + beat_interval(hung_after)
        self.said_stuck = False
        self.why_stuck = ""
        self.reload()  # after the watch: an update in between is not missed

    def beat(self, next_in: int) -> None:
        """A heartbeat that announced the next within ``next_in`` s (its byte)."""
        self.last_beat = time.monotonic()
        self.stale_after = self.hung_after + max(1, next_in)
        if self.said_stuck:
            self.said_stuck = False
            _log("the runtime answers again")

    def stuck(self, now: float) -> bool:
        """The runtime cannot serve an OOM now: it is stopped (SIGSTOP, a tracer: state T
        or t in /proc/PID/stat), or its heartbeat is ``hung_after`` late (a wedged loop,
        the GIL held)."""
        if _stopped(self.runtime_pid):
            why = "the runtime is stopped (SIGSTOP or a tracer)"
        elif self.last_beat is not None and now - self.last_beat >= self.stale_after:
            why = (f"no heartbeat from the runtime for {now - self.last_beat:.1f} s "
                   "(stopped or hung)")
        else:
            self.said_stuck = False  # continued (SIGCONT) and not late
            return False
        self.why_stuck = why
        if not self.said_stuck:
            self.said_stuck = True
            _log(f"{why}: its OOMs go to the kernel OOM killer at once")
        return True

    def reload(self) -> None:
        _, settings = read_state(self.state_file)
        # v2 guard bands: given back to the kernel while the runtime is stuck.
        self.bands = [s for s in settings if os.path.basename(s.path) == "memory.high"
                      and check_setting(s, self.root) is None]
        wanted = {s.path: s for s in settings if _is_ours(s) and check_setting(s, self.root)
                  is None}
        self.journaled = set(wanted)
        for path in wanted:
            self.inherited.pop(path, None)  # journaled now: the runtime owns it
        for path, s in self.inherited.items():
            wanted.setdefault(path, s)  # ours until the runtime journals it
        for path in wanted:
            self._watch_children(os.path.dirname(path))
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

    def _watch_children(self, directory: str) -> None:
        if directory in self.watched_dirs:
            return
        wd = _inotify_add(self.cg_fd, directory, _IN_CREATE)
        if wd >= 0:
            self.cg_wds[wd] = directory
            self.watched_dirs.add(directory)

    def _on_children(self) -> None:
        """A memcg made below a disabled one: take it if it inherited the flag."""
        for wd, mask, name in _inotify_events(self.cg_fd):
            parent = self.cg_wds.get(wd)
            if parent is None or not (mask & _IN_CREATE and mask & _IN_ISDIR):
                continue
            child = os.path.join(parent, name)
            ctl = os.path.join(child, V1_OOM_CONTROL)
            try:
                inode = os.stat(child).st_ino
                with open(ctl, encoding="ascii", errors="replace") as f:
                    flags = dict(line.split(None, 1) for line in f if " " in line)
            except OSError:
                continue
            if flags.get("oom_kill_disable", "0").strip() != "1" or ctl in self.by_path:
                continue
            s = Setting(ctl, "0", inode)
            if check_setting(s, self.root) is not None:
                continue
            self.inherited[ctl] = s
            self._watch_children(child)  # and its children in turn
            new = _register(s)
            if new is not None:
                self.by_path[ctl] = new
                self.by_efd[new.efd] = new
                self.ep.register(new.efd, select.EPOLLIN)

    def unjournaled(self) -> list[Setting]:
        """Memcgs that inherited oom_kill_disable and the runtime never journaled."""
        return [s for p, s in self.inherited.items() if p not in self.journaled]

    def _drop(self, w: _OomWatch) -> None:
        self.inherited.pop(w.setting.path, None)
        self.by_path.pop(w.setting.path, None)
        self.by_efd.pop(w.efd, None)
        self.waiting.discard(w)
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
        if fd == self.cg_fd:
            self._on_children()
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
            now = time.monotonic()
            # A stuck runtime will not answer: no point waiting for it.
            w.deadline = now if self.stuck(now) else now + self.hung_after
            self.waiting.add(w)
        return True

    def timeout(self) -> float:
        """epoll timeout in seconds: -1 (none) while no OOM is pending."""
        pending = [w.deadline for w in self.waiting if w.deadline is not None]
        if self.bands and self.last_beat is not None:  # v2: no OOM event reaches us
            pending.append(max(self.last_beat + self.stale_after, time.monotonic()
                               + self.check_every if self.said_stuck else 0.0))
        if not pending:
            return -1
        return max(0.0, min(min(pending) - time.monotonic(), self.check_every))

    def check(self) -> None:
        now = time.monotonic()
        # Shallowest first: v1 marks the whole subtree of the OOMing memcg under OOM and
        # signals each eventfd in it; the OOM is the top one's, and handing that over
        # ends it for the memcgs below too.
        # Only the memcgs under OOM (self.waiting): a beat of an idle runtime that armed
        # a thousand memcgs must not look at them all (most of the watchdog's idle CPU).
        waiting = [w for w in self.waiting if w.deadline is not None]
        pending = bool(self.bands) or bool(waiting)
        stuck = pending and self.stuck(now)  # nothing waits: no /proc read on a beat
        if stuck and self.bands and handover_log is not None:
            handover_log.release_bands(
                self.bands, lambda s: restore_setting(s, self.root), self.log,
                f"handed to the kernel OOM killer by the watchdog: {self.why_stuck}")
        for w in sorted(waiting, key=lambda w: w.setting.path.count("/")):
            if w.deadline is None:
                continue
            if stuck:
                w.deadline = min(w.deadline, now)
            state = w.under_oom()
            if state is None:
                self._drop(w)
            elif not state:
                w.deadline = None  # resolved (by the runtime, or the kernel)
                self.waiting.discard(w)
            elif now >= w.deadline:
                w.deadline = None
                self.waiting.discard(w)
                self._hand_over(w)

    def _hand_over(self, w: _OomWatch) -> None:
        # The original value (0): the kernel killer acts. The journal entry stays. The
        # kernel's kill is read from /dev/kmsg, opened before it can happen.
        # Below a memcg under OOM: part of that memcg's OOM, recorded with it (once).
        domain = handover_log is not None and handover_log.is_domain(w.setting.path)
        tail = handover_log.KmsgTail() if self.log is not None and domain else None
        if self.said_stuck and self.why_stuck:  # set by stuck(), also with no beat yet
            reason = self.why_stuck
        else:
            reason = f"under OOM for {self.hung_after:g} s and the runtime did not end it"
        why = restore_setting(w.setting, self.root)
        if why is None and self.log is not None and domain:
            self.log.handed_over([w.setting.path], "handed to the kernel OOM killer by the "
                                 f"watchdog: {reason}", tail)
        if tail is not None:
            tail.close()
        if why is None:
            _log(f"{w.setting.path}: {reason}: oom_kill_disable 0, the kernel OOM killer acts")
        elif why in ("cgroup is gone", "cgroup was replaced"):
            self._drop(w)
        else:
            _log(f"{w.setting.path}: could not hand the OOM to the kernel killer: {why}")

    def close(self) -> None:
        for w in list(self.by_path.values()):
            self._drop(w)
        for fd in (self.inotify_fd, self.cg_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def watch(
    state_file: str,
    runtime_pid: int,
    pipe_fd: int = 0,
    hung_after: float | None = None,
    root: str | None = None,
    log: handover_log.EventLog | None = None,
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
            return _finish(state_file, root, None, log, runtime_pid)  # already gone: restore now
    guard: _HungGuard | None = None
    if hung_after > 0:
        try:
            guard = _HungGuard(state_file, hung_after, ep, root, log, runtime_pid)
        except OSError as exc:  # the restore on the runtime's death works regardless
            _log(f"no hung-runtime check: {exc}")
    with contextlib.suppress(OSError):  # "ready": the runtime may go on arming
        os.write(1, b"ready\n")
        os.close(1)
    try:
        while True:
            timeout = guard.timeout() if guard is not None else -1
            for fd, _ in ep.poll(timeout):
                if fd == pidfd:
                    return _finish(state_file, root, guard, log, runtime_pid)
                if fd == pipe_fd:
                    try:
                        data = os.read(pipe_fd, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        return _finish(state_file, root, guard, log, runtime_pid)
                    if guard is not None:
                        guard.beat(data[-1])
                elif guard is not None:
                    guard.on_fd(fd)
            if guard is not None:
                guard.check()
    finally:
        if guard is not None:
            guard.close()


def _finish(state_file: str, root: str | None = None, guard: _HungGuard | None = None,
            log: handover_log.EventLog | None = None, runtime_pid: int = 0) -> int:
    failed = 0
    # A runtime that stops removes its journal before it lets us go: one still there
    # means it died (QA G7: the log ended with its last record and never said why).
    died = os.path.exists(state_file)
    if guard is not None:
        guard.on_fd(guard.cg_fd)  # memcgs made just before the runtime went
    extra = guard.unjournaled() if guard is not None else []
    if handover_log is not None:  # v2 memcgs held in their band: the kernel's now
        handover_log.release_bands(read_state(state_file)[1], lambda s: restore_setting(
            s, root), log, "the runtime was gone during this OOM: handed to the kernel OOM "
            "killer by the watchdog")
    # OOMs the runtime did not live to end (or to record): recorded here, once.
    _, journaled = read_state(state_file)
    pending = [s.path for s in (*journaled, *extra) if _is_ours(s) and handover_log is not None
               and handover_log.under_oom(s.path) and handover_log.is_domain(s.path)]
    tail = handover_log.KmsgTail() if log is not None and pending else None
    results = restore_file(state_file, root) + [(s, restore_setting(s, root)) for s in extra]
    if log is not None:
        log.handed_over(pending, "the runtime was gone during this OOM: handed to the "
                        "kernel OOM killer by the watchdog", tail)
    if tail is not None:
        tail.close()
    for setting, why in results:
        if why is not None and why not in ("cgroup is gone", "cgroup was replaced"):
            failed += 1
            print(f"oomkit watchdog: {setting.path}: {why}", file=sys.stderr)
    if died and log is not None:
        log.daemon_died(runtime_pid, sum(why is None for _, why in results), failed)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: python -m oomkit.kernel.linux.watchdog STATE_FILE"
            " [RUNTIME_PID [HUNG_AFTER [CGROUP_ROOT [EVENT_LOG [TREE_ROOT [KMSG_PREFIX]]]]]]",
            file=sys.stderr,
        )
        return 2
    state_file = args[0]
    runtime_pid = int(args[1]) if len(args) > 1 else os.getppid()
    hung_after = float(args[2]) if len(args) > 2 else None
    root = args[3] if len(args) > 3 else None
    log = None
    if len(args) > 4 and handover_log is not None:
        log = handover_log.EventLog(args[4], args[5] if len(args) > 5 else root or "/",
                                    (args[6] if len(args) > 6 else "") or None)
    return watch(state_file, runtime_pid, hung_after=hung_after, root=root, log=log)


if __name__ == "__main__":
    sys.exit(main())
