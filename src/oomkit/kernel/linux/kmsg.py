"""The kernel OOM killer's own log lines, read from /dev/kmsg.

Every kill of the kernel's OOM killer logs two records (mm/oom_kill.c, dump_oom_victim()
and __oom_kill_process(); 6.18):

    oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
        oom_memcg=/x/exp1,task_memcg=/x/exp1/leaf,task=python3,pid=31429,uid=0
    Memory cgroup out of memory: Killed process 31429 (python3) total-vm:82140kB,
        anon-rss:6784kB, file-rss:6660kB, shmem-rss:30464kB, UID:0 pgtables:136kB
        oom_score_adj:0

(a system-wide OOM says ``global_oom`` instead of ``oom_memcg=`` and "Out of memory:"),
and with memory.oom.group, more "Killed process" lines follow one "oom-kill:" line.
/dev/kmsg hands out one record per read(2): ``PRI,SEQ,USEC,FLAGS;MESSAGE``.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy takes it as True)

if TYPE_CHECKING:
    from typing import Final

# Plain classes with __slots__, not dataclasses: the watchdog loads this file, and
# dataclasses (with inspect, ast, dis) and typing would cost it about 2 MiB, locked.

_SUMMARY_RE: Final = re.compile(r"oom-kill:constraint=(?P<constraint>\w+),(?P<rest>.*)")
_KILLED_RE: Final = re.compile(
    r"Killed process (?P<pid>\d+) \((?P<comm>.*)\) total-vm:(?P<vm>\d+)kB, "
    r"anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB, shmem-rss:(?P<shmem>\d+)kB"
)
_FIELD_RE: Final = re.compile(r"(oom_memcg|task_memcg|task|pid)=([^,]*)")


class OomSummary:
    """The ``oom-kill:`` record (immutable, compared and hashed by value)."""

    __slots__ = ("constraint", "oom_memcg", "pid", "task", "task_memcg")
    constraint: str  # CONSTRAINT_MEMCG, CONSTRAINT_NONE, ...
    oom_memcg: str | None  # None for a global OOM
    task_memcg: str | None
    task: str
    pid: int

    def __init__(self, constraint: str, oom_memcg: str | None, task_memcg: str | None,
                 task: str, pid: int) -> None:
        object.__setattr__(self, "constraint", constraint)
        object.__setattr__(self, "oom_memcg", oom_memcg)
        object.__setattr__(self, "task_memcg", task_memcg)
        object.__setattr__(self, "task", task)
        object.__setattr__(self, "pid", pid)

    def _key(self) -> tuple[str, str | None, str | None, str, int]:
        return (self.constraint, self.oom_memcg, self.task_memcg, self.task, self.pid)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, OomSummary) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __repr__(self) -> str:
        return (f"OomSummary(constraint={self.constraint!r}, oom_memcg={self.oom_memcg!r}, "
                f"task_memcg={self.task_memcg!r}, task={self.task!r}, pid={self.pid!r})")


class KilledProcess:
    """A ``Killed process`` record; ``rss`` in bytes (anon + file + shmem). Immutable,
    compared and hashed by value."""

    __slots__ = ("comm", "pid", "rss")
    pid: int
    comm: str
    rss: int

    def __init__(self, pid: int, comm: str, rss: int) -> None:
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "comm", comm)
        object.__setattr__(self, "rss", rss)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KilledProcess):
            return NotImplemented
        return (self.pid, self.comm, self.rss) == (other.pid, other.comm, other.rss)

    def __hash__(self) -> int:
        return hash((self.pid, self.comm, self.rss))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __repr__(self) -> str:
        return f"KilledProcess(pid={self.pid!r}, comm={self.comm!r}, rss={self.rss!r})"


class PendingOom:
    """One kernel OOM being assembled from its records."""

    __slots__ = ("killed", "summary")

    def __init__(self, summary: OomSummary, killed: list[KilledProcess] | None = None
                 ) -> None:
        self.summary = summary
        self.killed: list[KilledProcess] = [] if killed is None else killed

    def __repr__(self) -> str:
        return f"PendingOom(summary={self.summary!r}, killed={self.killed!r})"


def split_record(record: bytes) -> str:
    """The message of one /dev/kmsg record (continuation lines dropped)."""
    text = record.decode("utf-8", "replace")
    _, _, message = text.partition(";")
    return message.split("\n", 1)[0]


def parse_message(message: str) -> OomSummary | KilledProcess | None:
    m = _SUMMARY_RE.match(message)
    if m is not None:
        fields = dict(_FIELD_RE.findall(m.group("rest")))
        return OomSummary(
            constraint=m.group("constraint"),
            oom_memcg=fields.get("oom_memcg"),
            task_memcg=fields.get("task_memcg"),
            task=fields.get("task", ""),
            pid=int(fields.get("pid", "0") or 0),
        )
    k = _KILLED_RE.search(message)
    if k is not None:
        rss_kb = int(k.group("anon")) + int(k.group("file")) + int(k.group("shmem"))
        return KilledProcess(int(k.group("pid")), k.group("comm"), rss_kb * 1024)
    return None
