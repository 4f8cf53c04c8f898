"""The seed's cgroup_iter_memcg body on the simulator (tests/live runs it on the kernel)."""

from __future__ import annotations

from oomkit import SimKernel
from oomkit.kernel.base import Cgroup
from oomkit.kernel.sim import MachineSpec, Step
from oomkit.kernel.sim.memcg import SimCgroup

from .memcg_stats import check_memcg_stats


class _SimHandle:
    def __init__(self, kernel: SimKernel) -> None:
        self.kernel = kernel

    def wait_ready(self) -> bool:
        self.kernel.run(self.kernel.clock.now_ns() + 200_000_000)  # 16M takes ~8 ms
        return True


def test_memcg_stats_on_the_simulator() -> None:
    kernel = SimKernel(MachineSpec(memory=1 << 30))
    kernel.create_cgroup("/stats")
    cg = kernel.create_cgroup("/stats/leaf", memory_max=64 << 20)

    def spawn(cgroup: Cgroup, kind: str, size: int, path: str) -> _SimHandle:
        assert isinstance(cgroup, SimCgroup)
        if kind == "file":
            # A MAP_SHARED write of a file: page cache, mapped.
            step = Step("alloc", kind="file", size=size, path=path, mapped=True)
        else:
            step = Step("alloc", kind=kind, size=size)
        kernel.spawn(f"{kind}-user", cgroup, (step, Step("sleep")))
        return _SimHandle(kernel)

    check_memcg_stats(kernel, cg, spawn, "/sim")
