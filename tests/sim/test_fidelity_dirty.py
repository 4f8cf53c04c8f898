"""Dirty page cache and writeback: throttled writers, pages reclaim cannot take."""

from __future__ import annotations

import pytest

from oomkit import SimKernel
from oomkit.errors import ConfigError
from oomkit.kernel.base import Resource
from oomkit.kernel.sim import MachineSpec, Step, parse_scenario
from oomkit.kernel.sim.writeback import DIRTY_EXPIRE_NS

from .conftest import M

S = 1_000_000_000


def writer(**machine: int) -> tuple[SimKernel, object]:
    k = SimKernel(MachineSpec(memory=M("4G"), write_bandwidth=M("100M"), **machine))
    cg = k.create_cgroup("/w", memory_max=M("256M"))
    k.spawn("writer", "/w", (Step("alloc", "file", M("400M"), rate=M("1G"), path="/out",
                                  write=True), Step("sleep")))
    return k, cg


def test_a_fast_writer_is_held_to_the_device_by_balance_dirty_pages() -> None:
    k, cg = writer()
    k.run(S)
    # 1G/s asked, ~100M/s written back: the memcg's dirty pages stay near its limit
    # (20% of 256M dirtyable) and the writer waits on IO, not memory.
    assert M("80M") < k.process("writer").step_done < M("200M")
    assert cg.page_state("file_dirty") <= M("56M")  # type: ignore[attr-defined]
    k.run(6 * S)
    assert k.process("writer").pc == 1 and k.ooms == 0
    assert cg.pressure(Resource.IO).some.total > 2_000_000  # type: ignore[attr-defined]
    assert cg.pressure(Resource.MEMORY).some.total == 0  # type: ignore[attr-defined]
    # Below the background threshold the rest waits for dirty_expire, then goes.
    assert cg.page_state("file_dirty") > 0  # type: ignore[attr-defined]
    k.run(7 * S + DIRTY_EXPIRE_NS)
    assert cg.page_state("file_dirty") == 0  # type: ignore[attr-defined]


def test_dirty_pages_are_not_reclaimed_until_written_and_reclaim_waits_for_them() -> None:
    """No throttling before the limit (dirty_ratio 100): the memcg fills with dirty
    pages; reclaim cannot take them, so the writer stalls on memory while the flusher
    writes them back, and no OOM is declared."""
    k, cg = writer(dirty_ratio=100, dirty_background_ratio=100)
    k.run(5 * S)
    assert k.ooms == 0
    assert cg.vm_events("pgsteal_file") > 0  # type: ignore[attr-defined]
    assert cg.pressure(Resource.MEMORY).some.total > 500_000  # type: ignore[attr-defined]
    assert k.process("writer").step_done < M("400M")  # held to what writeback frees


def test_write_is_for_page_cache_only() -> None:
    with pytest.raises(ConfigError, match="key 'write': only page cache written by write"):
        parse_scenario('[[process]]\nname = "p"\n'
                       'program = [{ op = "alloc", kind = "anon", size = "1M", write = true }]\n')
    sc = parse_scenario('[machine]\nwrite_bandwidth = "50M/s"\ndirty_ratio = 40\n'
                        '[[process]]\nname = "p"\nprogram = [{ op = "alloc", kind = "file", '
                        'size = "1M", path = "/f", write = true }]\n')
    assert sc.machine.write_bandwidth == M("50M") and sc.machine.dirty_ratio == 40
    assert sc.processes[0].program[0].write
