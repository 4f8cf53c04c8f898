"""remove_file as root deletes only closed tmpfs files reached without a planted link, and
tmpfs_cleanup scans only its own directories (issue 14, item 6). Needs root and a tmpfs at
/dev/shm; every file and directory made here is removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.errors import ConfigError, KernelError
from oomkit.kernel.linux.tmpfs import list_tmpfs_files, remove_tmpfs_file, tmpfs_devices
from oomkit.policies.tmpfs_cleanup import TmpfsCleanup
from oomkit.policy_loader import load_oom

SHM = Path("/dev/shm")


@pytest.fixture
def shm() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (files of another owner, a root-only directory)")
    if not SHM.is_dir() or os.stat(SHM).st_dev not in tmpfs_devices():
        pytest.skip("/dev/shm is not a tmpfs here")
    d = Path(tempfile.mkdtemp(prefix="oomkit-test-", dir=SHM))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _file(path: Path, size: int = 1 << 20) -> Path:
    path.write_bytes(b"x" * size)
    return path


def test_a_closed_tmpfs_file_is_removed(shm: Path) -> None:
    f = _file(shm / "cache.bin")
    assert remove_tmpfs_file(str(f)) >= 1 << 20
    assert not f.exists()


def test_a_file_not_on_tmpfs_is_kept(tmp_path: Path, shm: Path) -> None:
    if os.stat(tmp_path).st_dev in tmpfs_devices():
        pytest.skip("the temp dir is on tmpfs here")
    f = _file(tmp_path / "data.bin")
    with pytest.raises(KernelError, match="not on tmpfs"):
        remove_tmpfs_file(str(f))
    assert f.exists()


def test_a_file_still_open_is_kept(shm: Path) -> None:
    f = _file(shm / "open.bin")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; f = open(sys.argv[1]); print('ok', flush=True);"
                               " time.sleep(60)", str(f)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        with pytest.raises(KernelError, match=f"pid {holder.pid} open: not removed"):
            remove_tmpfs_file(str(f))
        assert f.exists()
    finally:
        holder.kill()
        holder.wait()


#: Maps the file MAP_SHARED and closes its descriptor, as PostgreSQL's dynamic shared
#: memory does (dsm_impl_posix: shm_open, mmap, close); Python's mmap would keep a dup.
MAP_AND_CLOSE = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
addr = libc.mmap(None, size, 3, 1, fd, 0)  # PROT_READ | PROT_WRITE, MAP_SHARED
assert addr not in (None, ctypes.c_void_p(-1).value)
os.close(fd)
print("ok", flush=True)
time.sleep(60)
"""


def test_a_file_mapped_without_a_descriptor_is_kept(shm: Path) -> None:
    """Unlinking it would free nothing (the pages stay mapped) and a process attaching to
    the segment by name later would find it gone (QA G16: tmpfs_cleanup deleted such a
    segment and the OOM record said "declined")."""
    f = _file(shm / "PostgreSQL.1804289383")
    holder = subprocess.Popen([sys.executable, "-c", MAP_AND_CLOSE, str(f)],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        assert str(f) not in [os.path.realpath(p) for p in
                              Path(f"/proc/{holder.pid}/fd").iterdir()]  # no descriptor
        with pytest.raises(KernelError, match=f"pid {holder.pid} mapped: not removed"):
            remove_tmpfs_file(str(f))
        assert f.exists()
    finally:
        holder.kill()
        holder.wait()
    assert remove_tmpfs_file(str(f)) >= 1 << 20  # once unmapped, it goes


NOBODY = 65534

REMOVE = """
import sys
from oomkit.errors import KernelError
from oomkit.kernel.linux.tmpfs import remove_tmpfs_file
try:
    print("removed", remove_tmpfs_file(sys.argv[1]))
except KernelError as exc:
    print("refused:", exc)
"""


def _without_ptrace(path: Path) -> str:
    """remove_tmpfs_file(path) as root without CAP_SYS_PTRACE, as the shipped unit and
    pod run it: another user's /proc/PID/fd links and maps cannot be read."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_SYS_PTRACE")
    r = subprocess.run([setpriv, "--bounding-set", "-sys_ptrace", "--", sys.executable,
                        "-c", REMOVE, str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_without_ptrace_a_file_another_user_may_hold_is_kept(shm: Path) -> None:
    """Without CAP_SYS_PTRACE, a process of the file's owner cannot be looked at: it may
    hold the file, so it stays (QA G17: it was deleted while open). A root file that
    such a process could not open is still removed."""
    d = shm / "nobody"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    f = d / "PostgreSQL.42"
    python = "/usr/bin/python3"  # one user nobody may run (the venv's may be in /root)
    if not os.access(python, os.X_OK):
        pytest.skip("needs /usr/bin/python3 for a process of another user")
    holder = subprocess.Popen(
        [python, "-c", "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR |"
         " os.O_CREAT, 0o600); os.write(fd, b'x' * (1 << 20)); print('ok', flush=True);"
         " time.sleep(60)", str(f)],
        stdout=subprocess.PIPE, user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ok\n"
        out = _without_ptrace(f)
        assert out.startswith("refused:") and "CAP_SYS_PTRACE" in out, out
        assert f.exists()
        mine = _file(shm / "root-only.bin")
        os.chmod(mine, 0o600)
        assert _without_ptrace(mine).startswith("removed"), "nobody could have opened it"
        assert not mine.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_link_planted_in_a_world_writable_directory_is_not_followed(shm: Path) -> None:
    victim_dir = shm / "elsewhere"
    victim_dir.mkdir()
    victim = _file(victim_dir / "precious.bin")
    planted = Path(tempfile.mktemp(prefix="oomkit-test-link-", dir=SHM))  # in 1777 /dev/shm
    planted.symlink_to(victim_dir)
    try:
        with pytest.raises(KernelError, match="symbolic link in a directory others can write"):
            remove_tmpfs_file(f"{planted}/precious.bin")
        assert victim.exists()
    finally:
        planted.unlink()


def test_a_link_root_put_in_its_own_directory_is_followed(shm: Path) -> None:
    (shm / "real").mkdir()
    f = _file(shm / "real" / "a.bin")
    (shm / "alias").symlink_to("real")  # shm is root's, 0755: like /var/run -> /run
    assert remove_tmpfs_file(str(shm / "alias" / "a.bin")) > 0
    assert not f.exists()


def test_the_last_component_is_never_followed(shm: Path) -> None:
    target = _file(shm / "target.bin")
    (shm / "l.bin").symlink_to(target)
    with pytest.raises(KernelError, match="not a regular file"):
        remove_tmpfs_file(str(shm / "l.bin"))
    assert target.exists()


def test_cleanup_scans_only_its_directories_never_through_links(shm: Path) -> None:
    (shm / "cache").mkdir()
    _file(shm / "cache" / "big.bin", 2 << 20)
    _file(shm / "cache" / "small.bin", 1 << 10)
    outside = _file(shm / "outside.bin")
    (shm / "cache" / "link.bin").symlink_to(outside)
    (shm / "linked_cache").symlink_to(shm / "cache")
    policy = TmpfsCleanup(paths=[str(shm / "cache"), str(shm / "linked_cache")])

    class Listing:  # what LinuxKernel.tmpfs_files runs, without a cgroup tree
        tmpfs_files = staticmethod(list_tmpfs_files)

    names = [p for _, p in policy.candidates(Listing())]  # type: ignore[arg-type]
    assert names == [str(shm / "cache" / "big.bin"), str(shm / "cache" / "small.bin")]


@pytest.mark.parametrize("paths", ['"/dev/shm"', "[1]", '["relative"]', '["/a\\u0000"]'])
def test_paths_must_be_a_list_of_absolute_paths(paths: str) -> None:
    import tomllib

    args = tomllib.loads(f"paths = {paths}")
    # Refused by the policy's signature check (policy_args) or by its own constructor.
    with pytest.raises(ConfigError,
                       match=r"argument 'paths'|bad arguments: paths is a list of absolute"):
        load_oom("tmpfs_cleanup", args=args)
