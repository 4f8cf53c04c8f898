"""The contract's memcg statistics body (the seed's cgroup_iter_memcg) on the real kernel,
plus the accessors of SPEC section 3 on a live memcg."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from oomkit.errors import CgroupGone, KernelError
from oomkit.kernel.base import Cgroup, Resource
from oomkit.kernel.linux import LinuxCgroup, LinuxKernel
from tests.contract.memcg_stats import check_memcg_stats

from .conftest import Hog, LiveCgroups, MiB

pytestmark = pytest.mark.privileged


def test_memcg_stats_move(live: LiveCgroups, tmp_path: Path) -> None:
    live.mkdir("stats", limit=128 * MiB)
    kernel = LinuxKernel(str(live.root), kmsg_path=None)
    cg = kernel.mem_cgroup("/stats")
    assert cg is not None

    def spawn(cgroup: Cgroup, kind: str, size: int, path: str) -> Hog:
        assert isinstance(cgroup, LinuxCgroup)
        return live.spawn(Path(cgroup.dir), kind, size, path)

    try:
        check_memcg_stats(kernel, cg, spawn, str(tmp_path))
    finally:
        kernel.close()


def test_accessors(live: LiveCgroups) -> None:
    d = live.mkdir("acc/leaf", limit=64 * MiB)
    kernel = LinuxKernel(str(live.root), kmsg_path=None)
    try:
        root = kernel.root_mem_cgroup()
        assert root.path == "/" and root.parent is None
        leaf = kernel.mem_cgroup("/acc/leaf")
        assert leaf is not None
        assert leaf.id == os.stat(d).st_ino  # the kernel's id: the directory inode
        assert kernel.mem_cgroup(leaf.id) == leaf
        assert kernel.mem_cgroup(str(d)) == leaf
        assert leaf.parent is not None and leaf.parent.path == "/acc"
        assert [c.path for c in root.walk("post")] == ["/acc/leaf", "/acc", "/"]
        assert root.nr_descendants == 2
        assert leaf.memory_max == 64 * MiB
        assert kernel.mem_cgroup("/acc").memory_max is None  # type: ignore[union-attr]
        assert leaf.memory_events("oom_kill") == 0
        hog = live.spawn(d, "anon", 8 * MiB)
        assert hog.wait_ready()
        tasks = leaf.tasks()
        assert [t.pid for t in tasks] == [hog.pid]
        t = tasks[0]
        assert t.rss >= 8 * MiB and t.comm and t.start_time > 0 and t.pgtables_bytes > 0
        assert t.oom_badness(kernel.oom_totalpages(leaf)) is not None
        assert kernel.oom_totalpages(leaf) == 64 * MiB // 4096  # no swap here... or memsw
        assert leaf.usage() >= 8 * MiB
        sys_pressure = root.pressure(Resource.MEMORY)
        assert sys_pressure.some.total >= 0
        if kernel.version == 1:
            with pytest.raises(KernelError) as exc:
                leaf.pressure()
            assert exc.value.errno == errno.EOPNOTSUPP
            assert kernel.reclaim(leaf, MiB) == 0
        kernel.set_memory_max(leaf, 96 * MiB)
        assert leaf.memory_max == 96 * MiB
        kernel.set_memory_max(leaf, 48 * MiB)
        assert leaf.memory_max == 48 * MiB
        kernel.set_memory_max(leaf, None)
        assert leaf.memory_max is None
        # kill_cgroup: every task, verified by pidfd; the memcg empties.
        killed = kernel.kill_cgroup(kernel.mem_cgroup("/acc"), "test")  # type: ignore[arg-type]
        assert [k.pid for k in killed] == [hog.pid]
        assert hog.wait_dead()
        assert hog.proc.returncode == -9
    finally:
        kernel.close()


def test_removed_cgroup_is_gone(live: LiveCgroups) -> None:
    d = live.mkdir("gone")
    kernel = LinuxKernel(str(live.root), kmsg_path=None)
    try:
        cg = kernel.mem_cgroup("/gone")
        assert cg is not None
        d.rmdir()
        with pytest.raises(CgroupGone):
            cg.usage()
        with pytest.raises(CgroupGone):
            cg.page_state("anon")
        assert kernel.mem_cgroup("/gone") is None
        assert kernel.mem_cgroup(cg.id) is None
    finally:
        kernel.close()
