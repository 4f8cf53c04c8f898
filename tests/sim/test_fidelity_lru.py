"""Reclaim takes pages in LRU order across a cgroup, not from the largest process."""

from __future__ import annotations

import pytest

from oomkit import SimKernel
from oomkit.errors import ConfigError
from oomkit.kernel.sim import MachineSpec, Step, parse_scenario
from oomkit.kernel.sim.reclaim import LRU_AGE_NS, lru_order

from .conftest import M, hold

S = 1_000_000_000


def test_untouched_owners_go_first_longest_untouched_first_then_in_proportion() -> None:
    now = 10 * S
    owners = [("hot_big", M("300M"), now), ("cold_new", M("20M"), now - LRU_AGE_NS - 1),
              ("hot_small", M("100M"), now), ("cold_old", M("10M"), 0)]
    got = lru_order(owners, M("70M"), now)
    assert got[:2] == [("cold_old", M("10M")), ("cold_new", M("20M"))]
    rest = dict(got[2:])
    assert rest == {"hot_big": M("30M"), "hot_small": M("10M")}
    assert sum(n for _, n in got) == M("70M")


def test_lru_order_never_takes_more_than_asked_or_held() -> None:
    owners = [("a", M("3M"), 5 * S), ("b", M("1M"), 5 * S)]
    assert sum(n for _, n in lru_order(owners, M("64M"), 5 * S)) == M("4M")
    assert lru_order(owners, 0, 5 * S) == []


def test_swap_takes_an_idle_process_before_the_larger_busy_one() -> None:
    """A sleeping shell's anon goes to swap first; then the two busy processes lose in
    proportion to their size (the old model took the largest process only)."""
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M("1G")))
    cg = k.create_cgroup("/s")
    k.spawn("shell", "/s", hold("40M"))
    touch = lambda size: (Step("alloc", size=M(size)),  # noqa: E731
                          Step("touch", size=M(size), duration_ns=60 * S))
    k.spawn("big", "/s", touch("300M"), start_ns=2 * S)
    k.spawn("small", "/s", touch("100M"), start_ns=2 * S)
    k.run(3 * S)
    assert k.reclaim(cg, M("80M")) == M("80M")  # memory.reclaim, between two ticks
    shell, big, small = (k.process(n) for n in ("shell", "big", "small"))
    assert shell.swapped == M("40M")
    assert (big.swapped, small.swapped) == (M("30M"), M("10M"))


def reader(lru: str, file: str) -> SimKernel:
    k = SimKernel(MachineSpec(memory=M("1G"), lru=lru))
    k.create_cgroup("/r", memory_max=M("64M"))
    k.spawn("r", "/r", (Step("touch", "file", M(file), path="/f", duration_ns=20 * S),))
    k.run(20 * S)
    return k


def test_mglru_counts_no_activations_for_read_refaults_and_a_wider_window() -> None:
    """Under the multi-gen LRU a read() refault is recent within the whole file list
    (MAX_NR_GENS generations), not the active half: more restores (memory stalls) for a
    near-fit reader; activations are counted only in the fault path."""
    classic, mglru = reader("classic", "96M"), reader("mglru", "96M")
    c, g = classic.mem_cgroup("/r"), mglru.mem_cgroup("/r")
    assert c is not None and g is not None
    assert c.vm_events("workingset_activate_file") > 0
    assert g.vm_events("workingset_activate_file") == 0
    refaults = g.vm_events("workingset_refault_file")
    share_g = g.vm_events("workingset_restore_file") / refaults
    share_c = c.vm_events("workingset_restore_file") / c.vm_events("workingset_refault_file")
    assert share_g > share_c
    assert g.pressure().some.total > c.pressure().some.total


def test_lru_is_a_machine_setting() -> None:
    text = '[machine]\nlru = "mglru"\ncpus = 2\n'
    m = parse_scenario(text + '[[process]]\nname = "p"\nprogram = [{ op = "sleep" }]\n').machine
    assert (m.lru, m.cpus) == ("mglru", 2)
    with pytest.raises(ConfigError, match="lru is classic or mglru"):
        parse_scenario('[machine]\nlru = "clock"\n')
