"""The restore journal: every kernel setting the live backend changes, with its original.

``record`` is called *before* each change; with a state file the journal is kept on disk
too, and the first record starts the watchdog process (:mod:`.watchdog`), which writes the
originals back if this process dies or hangs. A state file left by a dead runtime is
restored when a new journal opens it.

One runtime owns a state file: ``STATE.lock`` is held with ``flock`` by the runtime and,
inherited, by its watchdog, so a second daemon on the same state file is refused while
either lives, and a stale journal whose PID now belongs to an unrelated process does not
block a start (the lock, not the PID, says who owns it). The journal is written 0600 in
a directory made 0700 (whatever the umask), through a temporary file created with
O_EXCL; an existing file at the state path that is not an oomkit journal is refused, never
overwritten or removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import select
import stat
import subprocess
import sys
import threading
import time
import weakref

from oomkit.errors import KernelError
from oomkit.kernel.linux import watchdog
from oomkit.kernel.linux.handover_log import EventLog, KmsgTail, is_domain, under_oom
from oomkit.kernel.linux.restore import (
    STATE_VERSION,
    V1_OOM_CONTROL,
    Setting,
    check_setting,
    load_state,
    restore_file,
    restore_setting,
)
from oomkit.kernel.linux.watchdog import (
    DEFAULT_HUNG_AFTER,
    IDLE_BEAT,
    beat_byte,
    beat_interval,
    default_hung_after,
)
from oomkit.privfile import make_private_dirs, replace_private

#: How long the runtime waits for the watchdog to say "ready" (seconds).
READY_TIMEOUT = 3.0


def spawn_watchdog(
    state_file: str,
    hung_after: float = DEFAULT_HUNG_AFTER,
    root: str | None = None,
    lock_fd: int | None = None,
    event_log: str | None = None,
    tree_root: str | None = None,
    kmsg_prefix: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start the watchdog (:mod:`.watchdog`, run by its file path): a new session (a Ctrl-C
    or SIGTERM of the runtime's process group does not reach it), stdin the pipe whose EOF
    means "the runtime is gone" and whose bytes are the runtime's heartbeat (our end
    non-blocking: a stopped watchdog never blocks a beat). ``lock_fd`` (the journal's
    flock) is inherited: the state file stays locked until the watchdog, too, is done."""
    # -I: no environment, no user site; -S: no site module either (a venv's .pth files
    # import setuptools' hooks): the watchdog needs the standard library and its siblings.
    argv = [sys.executable, "-I", "-S", os.path.abspath(watchdog.__file__), state_file,
            str(os.getpid()), repr(float(hung_after))]
    if root is not None:
        argv.append(root)
        if event_log:
            argv += [event_log, tree_root or root, kmsg_prefix or ""]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        pass_fds=(lock_fd,) if lock_fd is not None else (),
    )
    assert proc.stdin is not None and proc.stdout is not None
    os.set_blocking(proc.stdin.fileno(), False)
    # Wait (a little) until it watches the journal and the memcgs: a memcg made below an
    # armed one right after would otherwise be made before the watchdog looks.
    with contextlib.suppress(OSError, ValueError):
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        if ready:
            proc.stdout.readline()
    proc.stdout.close()
    # The first heartbeat: the runtime's next may be an idle one away.
    with contextlib.suppress(OSError):
        os.write(proc.stdin.fileno(), bytes([beat_byte(IDLE_BEAT)]))
    # No handshake needed: if we die before it opened its pidfd of us, pidfd_open fails (or
    # the pipe is already at EOF) and it restores at once.
    return proc


def _below(settings: list[Setting]) -> list[str]:
    """The memory.oom_control of every memcg below those of ``settings``."""
    found: list[str] = []
    for s in settings:
        top = os.path.dirname(s.path)
        for directory, subdirs, _ in os.walk(top):
            subdirs.sort()
            if directory != top:
                found.append(os.path.join(directory, V1_OOM_CONTROL))
    return found


def _inherited(ctl_path: str) -> Setting | None:
    """A memcg below a journaled one whose oom_kill_disable is 1: inherited from ours."""
    try:
        with open(ctl_path, encoding="ascii", errors="replace") as f:
            flags = dict(line.split(None, 1) for line in f if " " in line)
        inode = os.stat(os.path.dirname(ctl_path)).st_ino
    except OSError:
        return None
    if flags.get("oom_kill_disable", "0").strip() != "1":
        return None
    return Setting(ctl_path, "0", inode)


#: how long a start waits for the watchdog of a dead run to finish its restore and let go
#: of the lock (it inherited the lock with the daemon's pid in it; a restart right after a
#: crash, by hand or by Restart=, met it still there)
LOCK_WAIT_DEAD_S = 10.0


def _flock_soon(fd: int) -> bool:
    """flock fd; if a dead run's watchdog holds it (the pid in the file is gone), wait for
    it up to LOCK_WAIT_DEAD_S. False: a live oomkit holds it, or the wait ran out."""
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if deadline is None:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if not text.isdigit() or watchdog.pid_alive(int(text)):
                return False
            deadline = time.monotonic() + LOCK_WAIT_DEAD_S
        elif time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _take_lock(state_file: str) -> tuple[int, bool]:
    """flock STATE.lock (created 0600, never through a link); RuntimeError if taken.
    Returns the fd and whether this call created the file."""
    path = f"{state_file}.lock"
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        fd, created = os.open(path, flags), False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise RuntimeError(f"{path}: not a regular file of ours: refusing to use it")
        os.fchmod(fd, 0o600)
        if not _flock_soon(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RuntimeError(f"{state_file} belongs to a running oomkit (pid {holder}, or "
                               "its watchdog); use another state file") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd, created


class JournalError(KernelError):
    """The journal could not be written (ENOSPC, EROFS, fork failing for the watchdog):
    the change it was to guard must not be made; the memcg stays with the kernel."""


def warn(message: str) -> None:
    """One line on stderr (the daemon's goes to the journal under systemd)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"oomkit: {message}", file=sys.stderr, flush=True)


def _drop_in_child(ref: weakref.ref[RestoreJournal]) -> None:
    """After fork, in the child: put /dev/null where the watchdog pipe and the lock were
    (dup2 keeps the numbers valid for objects that will close them later)."""
    journal = ref()
    if journal is None:
        return
    fds = [journal._lock_fd]
    proc = journal._proc
    if proc is not None and proc.stdin is not None:
        fds.append(proc.stdin.fileno())
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    os.close(null)


class RestoreJournal:
    """What the runtime changed, kept in memory and, with a ``state_file``, on disk.

    ``record`` comes *before* each change, so a crash between the two only restores a
    value that was never changed. With ``watchdog=True`` the first record starts the
    watchdog process. Thread-safe: handlers act from the runtime's worker thread.
    ``hung_after``: how long a memcg may stay under OOM with the kernel killer disabled by
    us before the watchdog hands it to the kernel killer (None: ``default_hung_after()``;
    0: never). ``cgroup_root``: the hierarchy every entry must lie below (None: any).
    Raises RuntimeError when another oomkit holds the state file, or the file there is not
    a journal.
    """

    def __init__(
        self,
        state_file: str | None = None,
        *,
        watchdog: bool = True,
        hung_after: float | None = None,
        cgroup_root: str | None = None,
        event_log: str | None = None,
        tree_root: str | None = None,
        kmsg_prefix: str | None = None,
    ) -> None:
        self.state_file = state_file
        self.hung_after = default_hung_after() if hung_after is None else hung_after
        if self.hung_after < 0:
            raise ValueError("hung_after must be >= 0")
        self._use_watchdog = watchdog and state_file is not None
        self.cgroup_root = cgroup_root
        self.event_log = event_log  # where the watchdog records the OOMs it hands over
        self.tree_root = tree_root
        self.kmsg_prefix = kmsg_prefix  # the tree root as /dev/kmsg names it
        self._lock = threading.Lock()
        self._settings: dict[str, Setting] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self.leftovers: list[tuple[Setting, str | None]] = []
        # A handler that forks (and does not exec) must not leave a child holding the
        # watchdog's pipe (its EOF is how the watchdog learns we died) or the lock.
        os.register_at_fork(after_in_child=functools.partial(_drop_in_child,
                                                             weakref.ref(self)))
        if state_file is not None:
            make_private_dirs(os.path.dirname(os.path.abspath(state_file)))
            self._lock_fd, created = _take_lock(state_file)
            kind, _, _ = load_state(state_file)
            if kind == "other":
                if created:  # leave nothing of ours beside a file that is not ours
                    with contextlib.suppress(OSError):
                        os.unlink(f"{state_file}.lock")
                os.close(self._lock_fd)
                self._lock_fd = None
                raise RuntimeError(f"{state_file} exists and is not an oomkit restore "
                                   "journal: refusing to overwrite it")
            # A crashed run's settings (its watchdog should have restored them already;
            # restoring twice writes the same original values). Only entries of the form
            # oomkit writes, below the cgroup root, are restored (restore.check_setting).
            self.leftovers = self._restore_leftovers(state_file)

    def _restore_leftovers(self, state_file: str) -> list[tuple[Setting, str | None]]:
        """Restore a dead run's journal. Its OOMs still waiting (its watchdog died too:
        the killer still disabled by us) go to the kernel killer now and are recorded
        once, with the kernel's victims, as its watchdog would have; so are those of
        memcgs made below its entries that inherited oom_kill_disable 1 (v1)."""
        _, _, settings = load_state(state_file)
        ours = [s for s in settings if check_setting(s, self.cgroup_root) is None
                and os.path.basename(s.path) == V1_OOM_CONTROL and s.original.strip() == "0"]
        inherited = [s for s in map(_inherited, _below(ours)) if s is not None]
        pending = [s.path for s in ours + inherited if under_oom(s.path) and is_domain(s.path)]
        log = None
        if self.event_log and pending:
            log = EventLog(self.event_log, self.tree_root or self.cgroup_root or "/",
                           self.kmsg_prefix)
        tail = KmsgTail() if log is not None else None
        results = restore_file(state_file, self.cgroup_root)
        results += [(s, restore_setting(s, self.cgroup_root)) for s in inherited]
        if log is not None:
            log.handed_over(pending, "found under OOM at start, its runtime and watchdog "
                            "gone: handed to the kernel OOM killer", tail)
        if tail is not None:
            tail.close()
        return results

    # -- the runtime's side --------------------------------------------------------------
    def record(self, path: str, original: str, dir_inode: int = 0) -> None:
        """Remember ``path``'s original value, unless it is already remembered."""
        with self._lock:
            if path in self._settings:
                return
            self._settings[path] = Setting(path, original, dir_inode)
            try:
                self._persist()
            except OSError as exc:
                # Not on disk: the watchdog could not undo it, so it must not be done.
                del self._settings[path]
                raise JournalError(f"{self.state_file}: cannot write the restore journal "
                                   f"({exc.strerror or exc}): {os.path.dirname(path)} is "
                                   "left to the kernel OOM killer", exc.errno) from None

    def update_original(self, path: str, original: str) -> None:
        """The user changed the setting meanwhile: that is the value to restore now."""
        with self._lock:
            old = self._settings.get(path)
            if old is not None and old.original != original:
                self._settings[path] = Setting(path, original, old.dir_inode)
                self._persist_or_warn()

    def original(self, path: str) -> str | None:
        with self._lock:
            s = self._settings.get(path)
            return s.original if s is not None else None

    def forget(self, path: str) -> None:
        """The original value is back in place (we restored it, or the cgroup is gone)."""
        with self._lock:
            if self._settings.pop(path, None) is not None:
                self._persist_or_warn()

    def restore(self, path: str) -> str | None:
        """Write one original back and forget it."""
        with self._lock:
            s = self._settings.get(path)
        if s is None:
            return None
        why = restore_setting(s, self.cgroup_root)
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
        with self._lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # the lock file stays: unlinking it would race
                self._lock_fd = None
        return results

    @property
    def beat_interval(self) -> float | None:
        """Seconds between heartbeats to the watchdog (None: there is none to send to)."""
        if not self._use_watchdog or self.hung_after <= 0:
            return None
        return beat_interval(self.hung_after)

    def beat(self, next_in: float) -> None:
        """One heartbeat to the watchdog (nothing before it runs): the caller's loop is
        serving, and beats again within ``next_in`` seconds (sent as one byte, whole
        seconds 1..255). A full pipe (the watchdog stopped) or a gone watchdog is not our
        problem here: its death is seen through the pidfd and the pipe's EOF as ever."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                os.write(proc.stdin.fileno(), bytes([beat_byte(next_in)]))

    @property
    def watchdog_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _persist_or_warn(self) -> None:
        # The disk copy is behind (it may list a value already restored): the watchdog
        # would write an original again, which is harmless; crashing is not.
        try:
            self._persist()
        except OSError as exc:
            warn(f"{self.state_file}: cannot update the restore journal: "
                  f"{exc.strerror or exc}")

    def _persist(self) -> None:
        # Called with the lock held. Atomic replace: the watchdog never reads half a file.
        if self.state_file is None:
            return
        directory = os.path.dirname(os.path.abspath(self.state_file))
        # Before the watchdog starts: it watches this directory for the journal's updates.
        make_private_dirs(directory)
        spawn = self._use_watchdog and self._proc is None
        self._write()
        if spawn:
            # After the first write: the watchdog's first read sees the setting (and
            # watches its memcg for children) before the change is made.
            self._proc = spawn_watchdog(self.state_file, self.hung_after, self.cgroup_root,
                                        self._lock_fd, self.event_log, self.tree_root,
                                        self.kmsg_prefix)
            self._write()  # with its pid

    def _write(self) -> None:
        assert self.state_file is not None
        data = {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "watchdog_pid": self._proc.pid if self._proc is not None else None,
            "settings": [s.to_json() for s in self._settings.values()],
        }
        # json.dumps, not json.dump: dump() streams through the pure-Python encoder, ten
        # times slower, and arming a thousand cgroups rewrites this file a thousand times.
        text = json.dumps(data).encode()
        # mkstemp: O_EXCL|O_NOFOLLOW, 0600 and a random name (nothing planted is followed);
        # the rename is atomic: the watchdog never reads half a file.
        replace_private(self.state_file, text)
