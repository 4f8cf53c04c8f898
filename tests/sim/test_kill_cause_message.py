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
    # the deciding rule in words first, then the cgroup's numbers, labelled as its
    m = re.fullmatch(rf"kill_cause: grower in /app/grower: the cgroup grows \S+/s, over 1/128 "
                     rf"of /app's limit a second \(ahead of any steady cgroup\); cgroup {terms}; "
                     rf"runner-up /app/steady: steady; cgroup {terms}", victim.reason)
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


def _note_all(s: Sim) -> None:
    cause.tracker(s.kernel).note_tree(s.kernel.root_mem_cgroup(), s.kernel.clock.now())


def test_the_message_labels_the_tasks_numbers_and_the_cgroups() -> None:
    """QA Q5: a leak in a scope beside a bigger steady service. The message leads with
    the rule that ranked the scope first, says which growth is the task's and which the
    cgroup's, and why the larger runner-up lost."""
    s = Sim(memory="2G")
    k = s.kernel
    k.spawn("db", "/db", hold("900M"))
    k.spawn("server", "/scope", hold("300M"))
    k.spawn("leak", "/scope", (Step("alloc", kind="anon", size=M("1G"), rate=M("40M")),
                               Step("sleep")))
    s.run(0.5)
    _note_all(s)
    s.run(1.2)
    _note_all(s)  # the scope grew: its tasks are sampled from here on
    s.run(1.2)
    s.rt.attach_oom(KillCause())
    assert k.out_of_memory(None) == 1
    ((victim,),) = [e.victims for e in s.ooms()]
    m = re.match(r"kill_cause: leak \(task grows (\S+)/s, the fastest in its cgroup\) in "
                 r"/scope: the cgroup grows (\S+)/s, over 1/128 of the machine a second "
                 r"\(ahead of any steady cgroup\); cgroup score (\S+) \(footprint (\S+),",
                 victim.reason)
    assert m, victim.reason
    task_rate, cg_rate, _, footprint = (M(x) for x in m.groups())
    assert M("30M") <= task_rate <= M("50M") and M("30M") <= cg_rate <= M("50M")
    assert footprint < M("900M")  # smaller than db, which lost by the rule, not the score
    assert ("runner-up /db: steady, larger but ranked below it by the rule above; cgroup "
            "score 900M") in victim.reason
    assert not re.search(r"\d{5,}", victim.reason)  # human sizes, no raw byte counts
    s.rt.close()
