"""Guest-only fixtures: throwaway cgroup v2 trees under /sys/fs/cgroup/oomkit-test-*.

The hogs are the live suite's (tests/live/conftest.py HOG script), but each one moves
*itself* into its cgroup and sets its own oom_score_adj as its first statement: the
interpreter's start-up memory is then charged to the root cgroup, and only the hog's
allocation (plus well under a MiB) lands in the limited cgroup, which keeps the
limits of the seed tests meaningful. Everything is killed and removed afterwards,
failures included.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.live.conftest import HOG, Hog, destroy

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CONTROLLERS = CGROUP_ROOT / "cgroup.controllers"

# The marks of every guest test file: real cgroup v2 with the memory controller, and root.
GUEST_ONLY = [
    pytest.mark.skipif(
        not _CONTROLLERS.exists() or "memory" not in _CONTROLLERS.read_text().split(),
        reason="no cgroup v2 memory controller at /sys/fs/cgroup: run inside the VM guest "
        "(python tests/vm/harness.py pytest tests/vm/guest)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups"),
]
MiB = 1 << 20

# argv: kind size path cgroup_dir oom_score_adj; joins its cgroup before anything else.
JOIN = (
    "import os, sys\n"
    "open(sys.argv[5], 'w').write(sys.argv[6])\n"
    "open(os.path.join(sys.argv[4], 'cgroup.procs'), 'w').write(str(os.getpid()))\n"
    "print('joined', flush=True)\n"
)


def events(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def wait_for(cond, timeout: float = 30.0, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


@dataclass
class V2Tree:
    root: Path
    hogs: list[Hog] = field(default_factory=list)

    def mkdir(self, rel: str, *, max: int | None = None, high: int | None = None) -> Path:
        d = self.root
        for part in rel.split("/"):
            ctl = d / "cgroup.subtree_control"
            if "memory" not in ctl.read_text().split():
                ctl.write_text("+memory")
            d = d / part
            d.mkdir(exist_ok=True)
        if max is not None:
            (d / "memory.max").write_text(str(max))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
        if high is not None:
            (d / "memory.high").write_text(str(high))
        return d

    def spawn(
        self, cgroup: Path, kind: str, size: int, path: str = "", *, oom_score_adj: int = 0
    ) -> Hog:
        proc = subprocess.Popen(
            [
                sys.executable, "-I", "-c", JOIN + HOG, kind, str(size), path,
                str(cgroup), "/proc/self/oom_score_adj", str(oom_score_adj),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )  # fmt: skip
        hog = Hog(proc, cgroup, kind, size)
        self.hogs.append(hog)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"joined":
            hog.kill()
            raise AssertionError(f"hog did not join {cgroup}: {line!r}")
        hog.go()
        return hog


@pytest.fixture
def tree() -> Iterator[V2Tree]:
    """/sys/fs/cgroup/oomkit-test-<hex> (memory.max 512M backstop), removed afterwards."""
    root = CGROUP_ROOT / f"oomkit-test-{secrets.token_hex(4)}"
    root.mkdir()
    t = V2Tree(root)
    try:
        (root / "memory.max").write_text(str(512 * MiB))
        (root / "memory.swap.max").write_text("0")
        yield t
    finally:
        for hog in t.hogs:
            hog.kill()
        if (root / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (root / "cgroup.kill").write_text("1")
        destroy(root)


@pytest.fixture
def ramfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mount: page cache that is neither shmem (tmpfs) nor on 9p."""
    d = tmp_path / "ramfs"
    d.mkdir()
    rc = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(d)], capture_output=True)
    if rc.returncode != 0:
        pytest.skip(f"cannot mount ramfs: {rc.stderr.decode(errors='replace')}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        with contextlib.suppress(OSError):
            os.rmdir(d)
