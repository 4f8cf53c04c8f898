"""The live backend's decisions and detection, as functions of plain values."""

from __future__ import annotations

import pytest

from oomkit.errors import KernelError
from oomkit.kernel.base import PAGE_SIZE
from oomkit.kernel.linux.decisions import guard_band, stuck_in_band, v1_oom_domain
from oomkit.kernel.linux.kmsgwatch import from_kernel_path
from oomkit.kernel.linux.mounts import (
    detect_root,
    freezer_root,
    kernel_version,
    mount_prefix,
    parse_mountinfo,
)

MiB = 1 << 20

HYBRID = """\
25 1 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
40 30 0:28 /box /srv/box rw - cgroup cgroup rw,memory
bad line without separator
"""


# -- the guard band ----------------------------------------------------------------------------
def test_band_is_the_margin_below_max_page_aligned() -> None:
    assert guard_band(1000 * MiB, 0.05, 4 * MiB) == 950 * MiB
    high = guard_band(100 * MiB + 123, 0.05, 4 * MiB)
    assert high % PAGE_SIZE == 0 and high <= 100 * MiB + 123 - 5 * MiB


def test_band_at_least_min_bytes_at_most_half() -> None:
    assert guard_band(64 * MiB, 0.01, 4 * MiB) == 60 * MiB  # 1% is 0.64 MiB: 4 MiB wins
    assert guard_band(6 * MiB, 0.05, 4 * MiB) == 3 * MiB  # half, not 2 MiB
    assert guard_band(0, 0.05, 4 * MiB) == 0


def test_band_margin_as_a_function_of_max() -> None:
    assert guard_band(64 * MiB, lambda m: 8 * MiB, 4 * MiB) == 56 * MiB
    assert guard_band(64 * MiB, lambda m: 1 * MiB, 4 * MiB) == 60 * MiB


@pytest.mark.parametrize(
    ("usage", "high", "high_before", "stuck"),
    [
        (60 * MiB, 12, 10, True),  # at the guard, still throttled
        (60 * MiB - 100 * 1024, 12, 10, True),  # within a batch of it
        (50 * MiB, 12, 10, False),  # well below: reclaim is winning
        (60 * MiB, 10, 10, False),  # no new "high" events: not throttled any more
    ],
)
def test_stuck_in_band(usage: int, high: int, high_before: int, stuck: bool) -> None:
    assert stuck_in_band(usage, 60 * MiB, high, high_before) is stuck


# -- v1 OOM domain -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("marks", "domain"),
    [
        ([], None),
        ([False], None),
        ([False, True], None),  # the memcg itself is over: nothing to do
        ([True], 0),
        ([True, False, True], 0),  # a marked grandparent beyond an unmarked parent: not ours
        ([True, True, True], 2),
        ([True, True, False], 1),
    ],
)
def test_v1_oom_domain(marks: list[bool], domain: int | None) -> None:
    assert v1_oom_domain(marks) == domain


# -- system short ------------------------------------------------------------------------------
def test_parse_mountinfo() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert [m.fstype for m in mounts] == ["tmpfs", "cgroup2", "cgroup", "cgroup", "cgroup"]
    assert mounts[2].point == "/sys/fs/cgroup/memory" and "memory" in mounts[2].options
    assert mounts[4].root == "/box"
    assert freezer_root(mounts) == "/sys/fs/cgroup/freezer"


def test_kernel_version() -> None:
    assert kernel_version("6.18.44-fc-v657") == (6, 18)
    assert kernel_version("5.4rc1") == (5, 4)
    assert kernel_version("garbage") == (0, 0)


def _probe(files: dict[str, str]) -> tuple[object, object]:
    def exists(p: str) -> bool:
        return p in files

    def read(p: str) -> str:
        if p not in files:
            raise KernelError(p, 2)
        return files[p]

    return exists, read


def test_detect_prefers_v2_with_memory_else_v1() -> None:
    mounts = parse_mountinfo(HYBRID)
    exists, read = _probe({"/sys/fs/cgroup/unified/cgroup.controllers": "cpu io"})
    assert detect_root(None, mounts, exists, read) == ("/sys/fs/cgroup/memory", 1)  # type: ignore[arg-type]
    exists, read = _probe({"/sys/fs/cgroup/unified/cgroup.controllers": "cpu memory"})
    assert detect_root(None, mounts, exists, read) == ("/sys/fs/cgroup/unified", 2)  # type: ignore[arg-type]


def test_detect_a_given_directory() -> None:
    mounts = parse_mountinfo(HYBRID)
    exists, read = _probe({"/x/memory.oom_control": ""})
    assert detect_root("/x", mounts, exists, read) == ("/x", 1)  # type: ignore[arg-type]
    exists, read = _probe({"/y/cgroup.controllers": "memory pids"})
    assert detect_root("/y", mounts, exists, read) == ("/y", 2)  # type: ignore[arg-type]
    exists, read = _probe({"/y/cgroup.controllers": "pids"})
    with pytest.raises(KernelError, match="not enabled"):
        detect_root("/y", mounts, exists, read)  # type: ignore[arg-type]
    exists, read = _probe({})
    with pytest.raises(KernelError, match="not a memory cgroup"):
        detect_root("/z", mounts, exists, read)  # type: ignore[arg-type]
    # The hybrid tmpfs: the memory controller's mount below it.
    assert detect_root("/sys/fs/cgroup", mounts, exists, read) == ("/sys/fs/cgroup/memory", 1)  # type: ignore[arg-type]


def test_mount_prefix_and_kernel_paths() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert mount_prefix("/sys/fs/cgroup/memory", mounts) == ""
    assert mount_prefix("/sys/fs/cgroup/memory/a/b", mounts) == "/a/b"
    assert mount_prefix("/srv/box/leaf", mounts) == "/box/leaf"  # a bind of a subtree
    assert mount_prefix("/tmp", mounts) is None
    assert from_kernel_path("/a/b", "/a/b/c") == "/c"
    assert from_kernel_path("/a/b", "/a/b") == "/"
    assert from_kernel_path("/a/b", "/a/bc") is None
    assert from_kernel_path("", "/a") == "/a"
