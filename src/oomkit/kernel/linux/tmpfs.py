"""Deleting a file to free memory, as root, without being turned against the system.

``LinuxKernel.remove_file`` unlinks only what frees memory and nothing another user could
have steered it to:

- the file is a regular file on tmpfs (its ``st_dev`` is a tmpfs mount's in
  /proc/self/mountinfo; the same fact as ``statfs`` f_type TMPFS_MAGIC 0x01021994):
  deleting anything else frees no memory and may destroy data;
- the path is walked component by component with ``openat(O_PATH|O_NOFOLLOW)``; a symbolic
  link is followed only where it sits in a directory that only root can write (root put
  it there: ``/var/run -> /run``), never one in a directory others can write (``/tmp``,
  ``/dev/shm``: anyone could have planted it); the last component is never followed, and
  the unlink is done relative to the directory descriptor that was checked;
- no process has the file open or mapped (``/proc/*/fd``, ``/proc/*/maps``), nor may have
  it where that cannot be read: its memory would not come back, and a process that uses
  it would lose it.

Every refusal is a KernelError (EPERM, EBUSY) naming the reason; callers such as
``tmpfs_cleanup`` skip the file and go on.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from oomkit.errors import KernelError

TMPFS_MAGIC: Final = 0x01021994
_MAX_LINKS: Final = 40  # the kernel's MAXSYMLINKS


def tmpfs_devices(proc_root: str = "/proc") -> set[int]:
    """st_dev of every tmpfs mount (mountinfo: "... MAJ:MIN ... - tmpfs SOURCE OPTS")."""
    found: set[int] = set()
    try:
        with open(f"{proc_root}/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                head, sep, tail = line.partition(" - ")
                fields = head.split()
                if sep and len(fields) > 2 and tail.split()[:1] == ["tmpfs"]:
                    major, _, minor = fields[2].partition(":")
                    found.add(os.makedev(int(major), int(minor)))
    except (OSError, ValueError):
        pass
    return found


def _closed_to_others(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_parent(path: str) -> tuple[int, str]:
    """(fd of the directory holding ``path``, its last component), walked as described
    above. Raises KernelError(EPERM) for an untrusted link, OSError otherwise."""
    if not path.startswith("/"):
        raise KernelError(f"{path}: not an absolute path", errno.EINVAL)
    todo = [p for p in path.split("/") if p]
    if not todo or todo[-1] in (".", ".."):
        raise KernelError(f"{path}: not a file path", errno.EINVAL)
    last = todo.pop()
    todo.reverse()  # a stack: next component at the end
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            child = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            st = os.fstat(child)
            if stat.S_ISLNK(st.st_mode):
                os.close(child)
                if not _closed_to_others(os.fstat(fd)):
                    raise KernelError(f"{path}: {name} is a symbolic link in a directory "
                                      "others can write: not followed", errno.EPERM)
                links += 1
                if links > _MAX_LINKS:
                    raise KernelError(f"{path}: too many symbolic links", errno.ELOOP)
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                todo.extend(reversed([p for p in target.split("/") if p]))
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.close(child)
                raise KernelError(f"{path}: {name} is not a directory", errno.ENOTDIR)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, last


def _maps_hold(maps: str, dev: int, ino: int) -> bool:
    """Does a /proc/PID/maps text map the file (dev, ino)? Each line is "start-end perms
    offset MAJ:MIN inode path", the device in hex (fs/proc/task_mmu.c show_map_vma)."""
    want = str(ino)
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[4] != want:
            continue
        major, _, minor = parts[3].partition(":")
        try:
            if os.makedev(int(major, 16), int(minor, 16)) == dev:
                return True
        except ValueError:
            continue
    return False


def _uid_of(proc_root: str, pid: str) -> int | None:
    try:
        return os.stat(f"{proc_root}/{pid}").st_uid
    except OSError:
        return None


def holder_of(st: os.stat_result, proc_root: str = "/proc") -> tuple[int, str] | None:
    """(pid, how) of a process that has the file ``st`` open or mapped, or that may have
    it and cannot be looked at; None when no process holds it.

    A mapping counts: POSIX shared memory is often mapped and its descriptor closed
    (PostgreSQL's dsm_impl_posix does); unlinked, its pages stay mapped (nothing is
    freed) and a process that attaches to it later by name finds it gone (QA G16).
    Following another user's /proc/PID/fd links and reading its maps needs ptrace
    access (CAP_SYS_PTRACE, which the shipped unit and pod do not grant): such a process
    of another user that would have made or shared the file (the file's owner, or any
    user when group or others may write it) counts as a holder, not as proof that nobody
    holds it."""
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir(proc_root) if p.isdigit() and p != me]
    except OSError:
        return None
    shared = bool(st.st_mode & 0o022)  # others may write it: a shared segment
    unseen: list[str] = []
    for pid in pids:
        try:
            fds = os.listdir(f"{proc_root}/{pid}/fd")
        except PermissionError:
            unseen.append(pid)
            continue
        except OSError:
            continue  # gone
        for n in fds:
            try:
                fst = os.stat(f"{proc_root}/{pid}/fd/{n}")  # follows the magic link
            except PermissionError:
                unseen.append(pid)
                break
            except OSError:
                continue
            if fst.st_ino == st.st_ino and fst.st_dev == st.st_dev:
                return int(pid), "open"
    unseen_set = set(unseen)
    # Descriptors first, in every process; maps only when none holds it (reading maps
    # takes each process's mmap_lock).
    for pid in pids:
        if pid in unseen_set:
            continue
        try:
            with open(f"{proc_root}/{pid}/maps", encoding="ascii", errors="replace") as f:
                if _maps_hold(f.read(), st.st_dev, st.st_ino):
                    return int(pid), "mapped"
        except PermissionError:
            unseen.append(pid)
        except OSError:
            continue
    me_uid = os.geteuid()
    for pid in unseen:
        uid = _uid_of(proc_root, pid)
        # Our own uid's unreadable ones are non-dumpable processes (prctl, setuid), which
        # CAP_SYS_PTRACE would not open either: skipped, as before.
        if uid is not None and uid != me_uid and (uid == st.st_uid or shared):
            return int(pid), "maybe holding it (its descriptors and maps cannot be read " \
                "without CAP_SYS_PTRACE)"
    return None


def list_tmpfs_files(path: str, proc_root: str = "/proc") -> list[tuple[str, int]]:
    """(path, bytes allocated) of the regular tmpfs files directly in directory ``path``,
    or of ``path`` itself when it is one; largest first. ``path`` is opened without
    following a final link (a planted link lists nothing) and entries are never followed.
    Which of them are still open is left to :func:`remove_tmpfs_file`: that scan of
    /proc/*/fd is paid only for the files actually tried."""
    devices = tmpfs_devices(proc_root)
    found: list[tuple[str, int]] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return found  # missing, a link (ELOOP), or unreadable: nothing to list
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if st.st_dev in devices:
                found.append((path, st.st_blocks * 512))
        elif stat.S_ISDIR(st.st_mode) and st.st_dev in devices:
            with os.scandir(fd) as entries:
                for entry in entries:
                    est = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(est.st_mode) and est.st_dev in devices:
                        found.append((os.path.join(path, entry.name), est.st_blocks * 512))
    except OSError:
        pass
    finally:
        os.close(fd)
    return sorted(found, key=lambda f: f[1], reverse=True)


def remove_tmpfs_file(path: str, proc_root: str = "/proc") -> int:
    """Unlink ``path`` if it is a closed regular file on tmpfs reached without an untrusted
    link; the bytes freed (0 when other hard links keep it). Raises KernelError."""
    try:
        dfd, name = open_parent(path)
    except FileNotFoundError:
        raise KernelError(f"{path}: no such file", errno.ENOENT) from None
    except OSError as exc:
        raise KernelError(f"{path}: {exc.strerror}", exc.errno) from None
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            raise KernelError(f"{path}: {exc.strerror}", exc.errno) from None
        if not stat.S_ISREG(st.st_mode):
            raise KernelError(f"{path}: not a regular file: not removed", errno.EPERM)
        if st.st_dev not in tmpfs_devices(proc_root):
            raise KernelError(f"{path}: not on tmpfs (deleting it frees no memory): not "
                              "removed", errno.EPERM)
        holder = holder_of(st, proc_root)
        if holder is not None:
            pid, how = holder
            raise KernelError(f"{path}: pid {pid} {how}: not removed", errno.EBUSY)
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError as exc:
            raise KernelError(f"{path}: {exc.strerror}", exc.errno) from None
    finally:
        os.close(dfd)
    return st.st_blocks * 512 if st.st_nlink <= 1 else 0
