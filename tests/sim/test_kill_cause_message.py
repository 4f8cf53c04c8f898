"""kill_cause's kill message: why its victim ranked first, in numbers that add up."""

from __future__ import annotations

import re

from oomkit.kernel.sim import Step
from oomkit.policies import cause
from oomkit.policies.kill_cause import KillCause

from .conftest import M, Sim, hold


def test_kill_cause_says_why_its_victim_ranked_first() -> None:
    """The kill message (the victim's reason in the event) gives the winner's score and
    its terms, footprint + GROWTH_WEIGHT x growth (+ REFAULT_WEIGHT refaulted pages in a
    limited domain), and the runner-up's: the numbers add up."""
    s = Sim(memory="1G")
    k = s.kernel
    k.create_cgroup("/app", memory_max=M("400M"), swap_max=0)
    k.spawn("steady", "/app/steady", hold("150M"))
    k.spawn("grower", "/app/grower", (Step("alloc", kind="anon", size=M("200M")),
                                      Step("alloc", kind="anon", size=M("100M"),
                                           rate=M("50M")), Step("sleep")))
    s.run(0.5)
    cause.tracker(k).note_tree(k.root_mem_cgroup(), k.clock.now())
    s.rt.attach_oom(KillCause(), "/app")
    s.run(2.5)  # /app reaches its memory.max: a memcg OOM, a limited domain
    ((victim,),) = [e.victims for e in s.ooms()]
    assert victim.comm == "grower"
    terms = (r"score (\S+) \(footprint (\S+), growth (\S+)/s, (?:added \S+ in \d+ s, )?"
             r"refaults (\d+)/s"
             r"(?:, takes in (\S+)/s \((\d+)% its own working set\))?\)")
    m = re.fullmatch(rf"kill_cause: grower in /app/grower, {terms}; runner-up /app/steady, "
                     rf"{terms}", victim.reason)
    assert m, victim.reason
    # what came in: the grower's 50M/s, none of it refaults of its own working set
    assert M(m.group(5)) >= M("40M") and m.group(6) == "0" and m.group(11) is None
    for at in (1, 7):
        score, fp, growth = (M(x) for x in m.group(at, at + 1, at + 2))
        pages = int(m.group(at + 3))
        expect = fp + cause.GROWTH_WEIGHT * growth + cause.REFAULT_WEIGHT * pages * 4096
        assert abs(score - expect) <= expect // 50, (m.groups(), expect)
    assert M(m.group(3)) >= M("40M") and M(m.group(9)) == 0  # the grower grows
    s.rt.close()
