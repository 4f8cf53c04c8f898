"""kill_cause's kill message: the rule that ranked the victim's cgroup first, in words.

kill_cause orders the cgroups of an OOM's domain by (preference, level, score): a
preference (``prefer``/``avoid``) first, then the level (a grower or streamer, the main
adder, a steady cgroup whose chosen task has oom_score_adj 1000, a steady one), then the
cause score. A score alone therefore does not say why a smaller cgroup lost to a larger
one: the message leads with the deciding rule (QA Q5), labels what is the task's and what
its cgroup's, and names a cause it could not kill (QA Q4):

    kill_cause: leaky in /system.slice/leaky.service: the cgroup grows 49M/s, over 1/128
    of the machine a second (ahead of any steady cgroup); cgroup score 1.5G (footprint
    1.4G, ...); runner-up /system.slice/db.service: steady, larger but ranked below it
    by the rule above; cgroup score 2.4G (...)

Sizes are human (format_size); rates are per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from oomkit.errors import OomkitError
from oomkit.kernel.base import OOM_SCORE_ADJ_MAX, Cgroup, Task
from oomkit.policies import prefs
from oomkit.units import format_size

#: rank levels (kill_cause.KillCause.choose): above every steady cgroup come the main
#: adder and above it a grower or streamer; a steady cgroup whose chosen task has
#: oom_score_adj OOM_SCORE_ADJ_MAX ranks above the other steady ones (Pick.adj_first)
GROWER, ADDER, STEADY = 2, 1, 0


@dataclass(frozen=True, slots=True)
class Pick:
    """One cgroup's candidate as kill_cause ranked it."""

    cg: Cgroup
    task: Task
    pref: int  # prefs.AVOID, NEUTRAL or PREFER
    level: int  # GROWER, ADDER or STEADY
    adj_first: bool  # steady, its task at oom_score_adj 1000: above the other steady ones
    score: int  # the cause score (bytes), before a negative oom_score_adj
    adj_bytes: int  # what a negative oom_score_adj took off the score (bytes, <= 0)
    growth: float  # the cgroup's footprint growth, bytes/s
    streamer: bool
    task_growth: float = 0.0  # the task's RSS + swap growth (bytes/s) when it grows fastest
    burst: bool = False  # a short burst beside a bigger holder, ranked steady (QA Q10)


@dataclass(frozen=True, slots=True)
class Domain:
    """Where the OOM is: its name in a message, its size, what its cgroups added."""

    name: str  # "the machine" or "/job's limit"
    size: int  # bytes
    added: int  # bytes all its cgroups added since the long baseline (cause.adds_most)
    bursts: int = 0  # growers ranked steady as short bursts (kill_cause.KillCause._bursts)


def rate(bytes_per_s: float) -> str:
    return f"{format_size(int(bytes_per_s))}/s"


def rule(p: Pick, d: Domain, added: int, since: float | None) -> str:
    """Why p's cgroup ranked where it did, a clause: "the cgroup grows 49M/s, over 1/128
    of the machine a second (ahead of any steady cgroup)"."""
    if p.level == GROWER and p.streamer:
        text = ("the cgroup streams: it takes in new pages at over 1/128 of "
                f"{d.name} a second while the others refault theirs (ahead of any steady "
                "cgroup)")
    elif p.level == GROWER:
        text = (f"the cgroup grows {rate(p.growth)}, over 1/128 of {d.name} a second "
                "(ahead of any steady cgroup)")
    elif p.level == ADDER:
        back = f" in the last {since:.0f} s" if since is not None else ""
        text = (f"the cgroup added {format_size(added)} of the {format_size(d.added)} the "
                f"cgroups of {d.name} added{back}, over half (ahead of any steady cgroup)")
    elif p.adj_first:
        text = (f"no killable cgroup grows fast or added most, and {p.task.comm} has "
                f"oom_score_adj {OOM_SCORE_ADJ_MAX}, kill me first (ahead of the other "
                "steady cgroups)")
    elif d.bursts:
        text = ("the cgroups that grow only burst (their growth began within the last "
                "minute and they hold under a third of this cgroup, which holds half of "
                f"{d.name} or more): the cgroup with the highest cause score")
    else:
        text = "no killable cgroup grows fast or added most: the highest cause score"
    if p.pref == prefs.PREFER:
        text = "preferred (prefer) and " + text
    elif p.pref == prefs.AVOID:
        text = "only avoided cgroups left, and " + text
    if p.adj_bytes:
        text += (f"; its oom_score_adj {p.task.oom_score_adj} counts "
                 f"-{format_size(-p.adj_bytes)}")
    return text


def task_words(p: Pick) -> str:
    """The victim's own part: "leaky (task grows 1M/s, oom_score_adj 1000)"."""
    notes = []
    if p.task_growth > 0:
        notes.append(f"task grows {rate(p.task_growth)}, the fastest in its cgroup")
    if p.task.oom_score_adj:
        notes.append(f"oom_score_adj {p.task.oom_score_adj}")
    return p.task.comm + (f" ({', '.join(notes)})" if notes else "")


def runner_words(runner: Pick, chosen: Pick) -> str:
    """The runner-up: its level in words, and why it lost when it is larger."""
    if runner.level == GROWER:
        what = "streams" if runner.streamer else f"grows {rate(runner.growth)}"
    elif runner.level == ADDER:
        what = "added most"
    elif runner.burst:
        what = f"a short burst, grows {rate(runner.growth)}, ranked as steady"
    elif runner.adj_first:
        what = f"steady, {runner.task.comm} at oom_score_adj {OOM_SCORE_ADJ_MAX}"
    else:
        what = "steady"
    lost = ""
    if (runner.pref, runner.level, runner.adj_first) < (chosen.pref, chosen.level,
                                                          chosen.adj_first):
        if runner.score + runner.adj_bytes > chosen.score + chosen.adj_bytes:
            lost = ", larger but ranked below it by the rule above"
    elif runner.adj_bytes:
        lost = (f", its oom_score_adj {runner.task.oom_score_adj} counts "
                f"-{format_size(-runner.adj_bytes)}")
    return f"{what}{lost}"


def not_killable(cg: Cgroup, p: prefs.Preferences, min_victim: int) -> str:
    """Why a cause's cgroup had no task to kill: "has only oom_score_adj -1000 tasks"."""
    try:
        tasks = cg.tasks()
    except OomkitError:
        return "is gone"
    if not tasks:
        return "has no tasks of its own"
    if all(t.unkillable for t in tasks):
        if all(t.oom_score_adj <= -OOM_SCORE_ADJ_MAX for t in tasks):
            return "has only oom_score_adj -1000 tasks (the kernel may not kill them)"
        return "has only unkillable tasks (oom_score_adj -1000, init, kernel threads)"
    if all(t.unkillable or p.protected_by_comm(t) for t in tasks):
        return "has only tasks protected by protect_comm or oom_score_adj -1000"
    if all(t.unkillable or t.is_oom_victim for t in tasks):
        return "has only tasks exiting already"
    return f"has only tasks under min_victim ({format_size(min_victim)})"


def skipped_cause(cg: Cgroup, level: int, growth: float, streamer: bool,
                  reason: str) -> str:
    """A cause ranked above the victim that had nothing to kill: "cause /job/agent
    (grows 50M/s) has only oom_score_adj -1000 tasks (...)"."""
    what = ("streams" if streamer else f"grows {rate(growth)}") if level == GROWER \
        else "added most"
    return f"cause {cg.path} ({what}) {reason}"
