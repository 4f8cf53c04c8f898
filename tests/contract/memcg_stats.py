"""The seed's cgroup_iter_memcg selftest as a body any backend can run.

The selftest allocates anonymous memory (mmap + memset), shmem, and a MAP_SHARED file
write in a memcg and checks that the memcg's statistics move: ``anon``, ``shmem``,
``file``, ``file_mapped``, and the ``pgfault`` event counter.

``check_memcg_stats(kernel, cgroup, spawn, workdir)`` needs:

- ``kernel``/``cgroup``: any backend and an empty memcg of it, with room for ~40 MiB;
- ``spawn(cgroup, kind, size, path)``: start a process in ``cgroup`` doing ``kind``
  (``"anon"``, ``"shmem"``, ``"file"`` = MAP_SHARED write of ``path``) of ``size`` bytes
  touching every page, and return a handle whose ``wait_ready()`` returns True once it
  has allocated (it then stays alive, holding the memory);
- ``workdir``: a directory for the file (on a disk-backed file system for the live kernel).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from oomkit.kernel.base import PAGE_SIZE, Cgroup, Kernel

MiB = 1 << 20


class Ready(Protocol):
    def wait_ready(self) -> bool: ...


SpawnIn = Callable[[Cgroup, str, int, str], Any]


def _items(cg: Cgroup) -> dict[str, int]:
    cg.flush_stats()
    out = {k: cg.page_state(k) for k in ("anon", "shmem", "file", "file_mapped")}
    out["pgfault"] = cg.vm_events("pgfault")
    return out


def check_memcg_stats(kernel: Kernel, cgroup: Cgroup, spawn: SpawnIn, workdir: str) -> None:
    size = 16 * MiB
    slack = 2 * MiB  # per-CPU stat batching and the process's own small allocations
    pages = size // PAGE_SIZE

    before = _items(cgroup)
    assert spawn(cgroup, "anon", size, "").wait_ready()
    after = _items(cgroup)
    assert after["anon"] - before["anon"] >= size - slack, (before, after)
    assert after["pgfault"] - before["pgfault"] >= pages * 9 // 10, (before, after)
    assert cgroup.usage() >= size

    before = after
    assert spawn(cgroup, "shmem", size, "").wait_ready()
    after = _items(cgroup)
    assert after["shmem"] - before["shmem"] >= size - slack, (before, after)
    # shmem is page cache too: it counts in "file" as well (on both cgroup versions).
    assert after["file"] - before["file"] >= size - slack, (before, after)
    # ... and not in "anon" (the new process's own small heap aside).
    assert after["anon"] - before["anon"] < size // 2, (before, after)

    before = after
    path = os.path.join(workdir, "memcg-stats-file")
    assert spawn(cgroup, "file", size, path).wait_ready()
    after = _items(cgroup)
    assert after["file_mapped"] - before["file_mapped"] >= size - slack, (before, after)
    assert after["file"] - before["file"] >= size - slack, (before, after)
    assert after["shmem"] - before["shmem"] < size // 2, (before, after)
    assert after["pgfault"] > before["pgfault"]

    # Hierarchical: the parent sees it all too.
    parent = cgroup.parent
    if parent is not None and parent.parent is not None:
        assert parent.page_state("anon") >= after["anon"] - slack
