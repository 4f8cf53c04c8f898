"""Real-kernel fixtures: a throwaway memcg below our own, and hogs to put in it.

Every test gets its own memory cgroup *below the one this process is in* (never anywhere
else), and everything is removed afterwards, failures included: the processes in it are
killed and the directories removed bottom-up. Tests skip, with the reason, where that
cannot be done (not root, no memory controller, cannot mkdir).

Hogs are small Python processes: started, moved into their cgroup, given their
oom_score_adj, and only then told (one byte on stdin) to allocate; they print "ready"
when done and sleep. Every allocation runs inside a limited memcg (memory and memory+swap
limits), so no test can cause a system-wide OOM.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oomkit.kernel.linux import fsio, procfs

MiB = 1 << 20

HOG = r"""
import mmap, os, sys, time
kind, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.read(0, 1)
PAGE = 4096
keep = []
if kind == "anon":            # anonymous private memory, touched page by page
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, size, PAGE):
        m[i] = 1
    keep.append(m)
elif kind == "shmem":         # a memfd (shmem) mapped shared and touched
    fd = os.memfd_create("oomkit-test")
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    for i in range(0, size, PAGE):
        m[i] = 1
    keep.append(m)
elif kind == "file":          # a MAP_SHARED write to a regular file: mapped page cache
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    for i in range(0, size, PAGE):
        m[i] = 1
    keep.append(m)
elif kind == "thrash":        # re-read a file bigger than the memcg, forever
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    print("ready", flush=True)
    n = len(m)
    while True:
        for i in range(0, n, PAGE):
            m[i]
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def own_memcg_dir() -> Path | None:
    """Our own memory cgroup directory (v1 memory hierarchy or v2 unified), if any."""
    found = procfs.own_memcg_dir()
    return Path(found) if found is not None else None


def can_lower_oom_score_adj() -> bool:
    """Setting a negative oom_score_adj (e.g. -1000) needs CAP_SYS_RESOURCE."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def is_v1(directory: Path) -> bool:
    return (directory / "memory.oom_control").exists()


def set_limit(directory: Path, nbytes: int) -> None:
    """Memory and memory+swap limit (v1), or memory.max and swap 0 (v2)."""
    if is_v1(directory):
        memsw = directory / "memory.memsw.limit_in_bytes"
        # memsw >= limit at all times: raise memsw first when growing, lower it last.
        current = int((directory / "memory.limit_in_bytes").read_text())
        if memsw.exists() and nbytes > current:
            memsw.write_text(str(nbytes))
        (directory / "memory.limit_in_bytes").write_text(str(nbytes))
        if memsw.exists():
            memsw.write_text(str(nbytes))
    else:
        (directory / "memory.max").write_text(str(nbytes))
        swap = directory / "memory.swap.max"
        if swap.exists():
            swap.write_text("0")


def procs_below(directory: Path) -> list[int]:
    pids: list[int] = []
    for d, _, _ in os.walk(directory):
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in Path(d, "cgroup.procs").read_text().split())
    return pids


def destroy(directory: Path) -> None:
    """Kill everything below ``directory`` and remove it, bottom-up. Never raises."""
    if not directory.exists():
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = procs_below(directory)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    if is_v1(directory):
        # A waiting OOM must not keep anything alive: let the kernel kill if needed.
        for d, _, _ in os.walk(directory):
            with contextlib.suppress(OSError):
                Path(d, "memory.oom_control").write_text("0")
    fsio.remove_tree(str(directory))


@dataclass
class Hog:
    proc: subprocess.Popen[bytes]
    cgroup: Path
    kind: str
    size: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"g")
        self.proc.stdin.flush()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once it allocated everything; False if it died or timed out."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return False
        return os.read(fd, 64).startswith(b"ready")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_dead(self, timeout: float = 5.0) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


Spawn = Callable[..., Hog]


@dataclass
class LiveCgroups:
    """A fresh memcg below our own, and helpers to make children and hogs in it."""

    root: Path
    hogs: list[Hog]

    @property
    def v1(self) -> bool:
        return is_v1(self.root)

    def mkdir(self, rel: str, limit: int | None = None) -> Path:
        d = self.root / rel
        d.mkdir(parents=True, exist_ok=True)
        if limit is not None:
            set_limit(d, limit)
        return d

    def spawn(
        self,
        cgroup: Path | str,
        kind: str,
        size: int,
        path: str = "",
        *,
        oom_score_adj: int = 0,
        go: bool = True,
    ) -> Hog:
        directory = self.root / cgroup if isinstance(cgroup, str) else cgroup
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", HOG, kind, str(size), path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        hog = Hog(proc, directory, kind, size)
        self.hogs.append(hog)
        try:
            Path(f"/proc/{proc.pid}/oom_score_adj").write_text(str(oom_score_adj))
            (directory / "cgroup.procs").write_text(str(proc.pid))
        except OSError:
            hog.kill()
            raise
        if go:
            hog.go()
        return hog


_counter = itertools.count()


def _make_root() -> Path:
    own = own_memcg_dir()
    if own is None:
        pytest.skip("no memory cgroup of our own (neither v1 memory nor v2 with memory)")
    if os.geteuid() != 0:
        pytest.skip("real-kernel tests need root")
    d = own / f"oomkit-test-{os.getpid()}-{next(_counter)}"
    try:
        d.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup below our own ({own}): {exc}")
    if not is_v1(d) and not (d / "memory.max").exists():
        with contextlib.suppress(OSError):
            d.rmdir()
        pytest.skip(f"{own}: the memory controller is not enabled below our cgroup")
    return d


@pytest.fixture
def live() -> Iterator[LiveCgroups]:
    """A throwaway memcg (limited to 512M as a backstop) below our own, removed after."""
    root = _make_root()
    cgs = LiveCgroups(root, [])
    try:
        set_limit(root, 512 * MiB)
        yield cgs
    finally:
        for hog in cgs.hogs:
            hog.kill()
        destroy(root)


@pytest.fixture
def live_v1(live: LiveCgroups) -> LiveCgroups:
    if not live.v1:
        pytest.skip("needs the cgroup v1 memory controller (memory.oom_control)")
    return live


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
