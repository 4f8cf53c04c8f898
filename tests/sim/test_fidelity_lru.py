"""Reclaim takes pages in LRU order across a cgroup, not from the largest process."""

from __future__ import annotations

from oomkit import SimKernel
from oomkit.kernel.sim import MachineSpec, Step
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
