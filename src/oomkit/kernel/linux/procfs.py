"""Tasks from /proc: pure parsers, a reader rooted anywhere, and pidfd-based killing.

The reader takes its root as an argument (``Procfs("/proc")``) so tests point it at a
recorded tree. Killing goes through a pidfd: the PID is opened first and the process's
start time checked afterwards, so a PID recycled between listing and killing is never hit;
``process_mrelease`` then reaps the victim's memory at once instead of waiting for its exit.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from dataclasses import dataclass
from typing import Final

from oomkit.errors import KernelError, OomkitError, TaskGone
from oomkit.kernel.linux import fsio

PF_KTHREAD: Final = 0x00200000  # include/linux/sched.h
PF_EXITING: Final = 0x00000004  # include/linux/sched.h: getting shut down (do_exit)
SIGKILL_BIT: Final = 1 << (signal.SIGKILL - 1)
SYS_PROCESS_MRELEASE: Final = 448  # x86-64 and the generic table; since Linux 5.15


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    flags: int
    start_time: int  # clock ticks after boot (field 22)


# /proc/PID/stat, 6.18 (comm may hold spaces and parentheses; it ends at the last ')'):
#   615 (python3) R 574 570 1447 0 -1 4194368 9569 0 0 0 1 8 0 0 20 0 1 0 190694 ...
def parse_stat(text: str) -> ProcStat:
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return ProcStat(
        pid=int(text[:open_paren]),
        comm=text[open_paren + 1 : close_paren],
        state=rest[0],
        ppid=int(rest[1]),
        flags=int(rest[6]),
        start_time=int(rest[19]),
    )


# /proc/PID/status: "Key:\tvalue" lines; sizes as "  39616 kB".
def parse_status(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def kb_field(status: dict[str, str], key: str) -> int:
    """A ``"1234 kB"`` field in bytes; 0 when absent (kernel threads have no Vm* lines)."""
    value = status.get(key)
    if not value:
        return 0
    return int(value.split()[0]) * 1024


# /proc/meminfo: "MemAvailable:   24310508 kB"; HugePages_* have no unit.
def parse_meminfo(text: str) -> dict[str, int]:
    """Every field, in bytes (unit-less counters as they are)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        parts = value.split()
        if not parts:
            continue
        n = int(parts[0])
        out[key] = n * 1024 if len(parts) > 1 and parts[1] == "kB" else n
    return out


# /proc/PID/cgroup, hybrid mode:  "4:memory:/system.slice/app.service"  and  "0::/"
def parse_proc_cgroup(text: str) -> dict[str, str]:
    """controller -> path; the unified (v2) hierarchy is under the key ``""``.

    A v1 line naming several controllers ("2:cpu,cpuacct:/x") gives each its entry.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        for name in controllers.split(","):
            if name:
                out[name] = path
    return out


def own_memcg_dir(proc_root: str = "/proc", mount: str = "/sys/fs/cgroup") -> str | None:
    """The directory of this process's own memory cgroup: in the v1 memory hierarchy
    (hybrid mode) or the unified one when it has the memory controller; None otherwise."""
    try:
        cgroups = parse_proc_cgroup(fsio.read_text(f"{proc_root}/self/cgroup", gone=TaskGone))
    except OomkitError:
        return None
    v1_root = os.path.join(mount, "memory")
    if "memory" in cgroups and os.path.isdir(v1_root):
        return v1_root + cgroups["memory"].rstrip("/")
    if "" in cgroups:
        try:
            controllers = fsio.read_text(os.path.join(mount, "cgroup.controllers")).split()
        except OomkitError:
            return None
        if "memory" in controllers:
            return os.path.join(mount, cgroups[""].lstrip("/"))
    return None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one process, in the units of :class:`oomkit.kernel.base.Task`."""

    pid: int
    comm: str
    start_time: int
    rss: int  # bytes: anon + file + shmem resident (get_mm_rss)
    swapents: int  # pages
    pgtables_bytes: int
    oom_score_adj: int
    kthread: bool
    sigkill_pending: bool
    exiting: bool = False  # PF_EXITING, or a zombie: its memory is going or gone


class Procfs:
    """Reads processes below ``root`` (normally /proc)."""

    __slots__ = ("root",)

    def __init__(self, root: str = "/proc") -> None:
        self.root = root.rstrip("/") or "/"

    def path(self, *parts: str | int) -> str:
        return os.path.join(self.root, *(str(p) for p in parts))

    def read(self, *parts: str | int) -> str:
        return fsio.read_text(self.path(*parts), gone=TaskGone)

    def stat(self, pid: int) -> ProcStat:
        return parse_stat(self.read(pid, "stat"))

    def task(self, pid: int) -> TaskInfo:
        """One process; raises TaskGone when it exited (or is a zombie with no mm left)."""
        st = self.stat(pid)
        if st.flags & PF_KTHREAD:
            # Never a victim (oom_unkillable_task): its status and oom_score_adj are not
            # read. On cgroup v2 the root cgroup lists every kernel thread (~200 in a small
            # VM): three reads each made a system-wide OOM's choice take 0.4-1.4 s in the
            # TCG guest with the machine busy, while the leak went on.
            return TaskInfo(pid=pid, comm=st.comm, start_time=st.start_time, rss=0,
                            swapents=0, pgtables_bytes=0, oom_score_adj=0, kthread=True,
                            sigkill_pending=False,
                            exiting=bool(st.flags & PF_EXITING) or st.state in ("Z", "X"))
        status = parse_status(self.read(pid, "status"))
        adj = int(self.read(pid, "oom_score_adj"))
        pending = 0
        for key in ("ShdPnd", "SigPnd"):
            if key in status:
                pending |= int(status[key], 16)
        kthread = status.get("Kthread", "0") == "1"  # since 6.2; PF_KTHREAD caught above
        return TaskInfo(
            pid=pid,
            comm=st.comm,
            start_time=st.start_time,
            rss=kb_field(status, "VmRSS"),
            swapents=kb_field(status, "VmSwap") // 4096,
            pgtables_bytes=kb_field(status, "VmPTE"),
            oom_score_adj=adj,
            kthread=kthread,
            sigkill_pending=bool(pending & SIGKILL_BIT),
            exiting=bool(st.flags & PF_EXITING) or st.state in ("Z", "X"),
        )

    def pids(self) -> list[int]:
        with fsio.translate(self.root, gone=None):
            return sorted(int(n) for n in os.listdir(self.root) if n.isdigit())

    def meminfo(self) -> dict[str, int]:
        return parse_meminfo(fsio.read_text(self.path("meminfo"), gone=None))

    def cgroups_of(self, pid: int) -> dict[str, str]:
        return parse_proc_cgroup(self.read(pid, "cgroup"))


# -- killing ------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _syscall() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid``; TaskGone if there is no such process."""
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        raise fsio.error_for(exc, f"pidfd_open({pid})", gone=TaskGone) from exc


def pidfd_kill(pidfd: int, pid: int) -> None:
    """SIGKILL through the pidfd; TaskGone when the process already exited."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError as exc:
        raise fsio.error_for(exc, f"pidfd_send_signal({pid})", gone=TaskGone) from exc


def process_mrelease(pidfd: int) -> bool:
    """Reap a SIGKILLed process's memory now (the oom_reaper's work, done synchronously).

    Returns False when the kernel declined: the process already released its mm (ESRCH),
    is not dying yet (EINVAL), or the syscall is missing (ENOSYS, before 5.15). None of
    these matter: the process frees its memory on exit anyway.
    """
    res = _syscall().syscall(SYS_PROCESS_MRELEASE, pidfd, 0)
    if res == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ESRCH, errno.EINVAL, errno.ENOSYS, errno.EINTR):
        return False
    raise KernelError(f"process_mrelease: {os.strerror(code)}", code)
