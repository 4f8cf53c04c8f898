"""memory.stat counters as the kernel keeps them."""

from __future__ import annotations

from oomkit import SimKernel
from oomkit.kernel.base import PAGE_SIZE
from oomkit.kernel.sim import MachineSpec, Step

from .conftest import M

S = 1_000_000_000


def squeeze(mapped: bool) -> SimKernel:
    """A 64M memcg that reads (or maps and touches) a 128M file at random."""
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M("1G")))
    k.create_cgroup("/r", memory_max=M("64M"))
    k.spawn("r", "/r", (Step("alloc", "file", M("32M"), path="/f", mapped=mapped),
                        Step("touch", "file", M("128M"), path="/f", duration_ns=3 * S)))
    k.run(4 * S)
    return k


def test_refaults_by_read_are_not_page_faults_but_by_a_mapping_they_are() -> None:
    read, mapped = squeeze(False), squeeze(True)
    for k in (read, mapped):
        cg = k.mem_cgroup("/r")
        assert cg is not None and cg.vm_events("workingset_refault_file") > 1000
    rcg, mcg = read.mem_cgroup("/r"), mapped.mem_cgroup("/r")
    assert rcg is not None and mcg is not None
    assert rcg.vm_events("pgmajfault") == 0
    # Mapped: the alloc's minor faults, then one major fault per page brought in.
    assert mcg.vm_events("pgmajfault") > 1000
    assert mcg.vm_events("pgfault") == mcg.vm_events("pgmajfault") + M("32M") // PAGE_SIZE


def test_pgscan_and_pgsteal_by_kind_add_up_and_are_hierarchical() -> None:
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M("1G")))
    cg = k.create_cgroup("/p/a", memory_max=M("64M"))
    k.spawn("cache", "/p/a", (Step("alloc", "file", M("40M"), path="/c"), Step("sleep")))
    k.spawn("anon", "/p/a", (Step("alloc", "anon", M("80M")), Step("sleep")), start_ns=S)
    k.run(3 * S)
    parent = k.mem_cgroup("/p")
    assert parent is not None
    for c in (cg, parent):
        assert c.vm_events("pgsteal_file") == M("40M") // PAGE_SIZE  # all the cache
        assert c.vm_events("pgsteal_anon") > 0  # then swap for the rest
        assert c.vm_events("pgsteal") == (c.vm_events("pgsteal_file")
                                          + c.vm_events("pgsteal_anon"))
        assert c.vm_events("pgsteal_direct") == c.vm_events("pgsteal")
        assert c.vm_events("pgscan_kswapd") == 0  # no kswapd in the simulator
