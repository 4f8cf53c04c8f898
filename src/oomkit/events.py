"""Event records, the same from the simulator and the live kernel (SPEC section 7).

Every event is a frozen dataclass with an ``event`` kind and a ``time`` (seconds on the
kernel's clock); ``to_dict`` gives its JSON form, one object a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from oomkit.kernel.base import Victim


@dataclass(frozen=True, slots=True)
class HandlerCall:
    """One handler asked during an OOM."""

    name: str
    cgroup_id: int
    returned: bool | None  # None: it raised or overran
    memory_freed: bool
    duration_us: int
    error: str | None = None
    # repr() of a return value that is not a bool (SPEC: handle_out_of_memory -> bool),
    # taken by its truth as Python would; None when it returned a bool, raised or overran.
    returned_value: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: ClassVar[str] = "event"
    time: float

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"event": self.kind}
        d.update(asdict(self))
        d["time"] = round(self.time, 6)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(", ", ": "))


@dataclass(frozen=True, slots=True)
class OomEvent(Event):
    kind: ClassVar[str] = "oom"
    memcg: str | None
    constraint: str
    constraint_text: str | None
    policy: str
    resolved_by: str  # handler | default | kernel
    victims: tuple[Victim, ...] = ()
    handlers: tuple[HandlerCall, ...] = ()
    order: int = 0
    totalpages: int = 0
    note: str = ""


@dataclass(frozen=True, slots=True)
class PsiEventRecord(Event):
    kind: ClassVar[str] = "psi"
    cgroup_id: int
    cgroup: str | None
    resource: str
    full: bool
    threshold_us: int
    window_us: int
    handlers: tuple[HandlerCall, ...] = ()


@dataclass(frozen=True, slots=True)
class AttachEvent(Event):
    kind: ClassVar[str] = "attach"
    name: str
    ops: str  # "oom" | "psi"
    cgroup_id: int
    cgroup: str | None
    mechanism: str = ""


@dataclass(frozen=True, slots=True)
class DetachEvent(Event):
    kind: ClassVar[str] = "detach"
    name: str
    ops: str
    cgroup_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class HandlerErrorEvent(Event):
    kind: ClassVar[str] = "handler_error"
    name: str
    callback: str
    cgroup_id: int
    error: str
    timeout: bool
    failures: int


@dataclass(frozen=True, slots=True)
class CgroupOnlineEvent(Event):
    kind: ClassVar[str] = "cgroup_online"
    cgroup_id: int
    cgroup: str


@dataclass(frozen=True, slots=True)
class CgroupOfflineEvent(Event):
    kind: ClassVar[str] = "cgroup_offline"
    cgroup_id: int
    cgroup: str


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """Something went wrong outside a handler (a config reload, a vanished file...)."""

    kind: ClassVar[str] = "error"
    where: str
    error: str


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    name: str
    pid: int
    cgroup: str
    status: str  # running | exited | killed | sleeping
    killed_at: float | None
    stall_s: float  # memory stall
    work_done_s: float
    work_lost_s: float
    peak_rss: int
    io_stall_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SummaryEvent(Event):
    kind: ClassVar[str] = "summary"
    duration: float
    ooms: int
    kills: int
    full_pressure_s: float
    processes: tuple[ProcessSummary, ...] = field(default=())


EventSink = Callable[[Event], None]


class EventList:
    """A sink that keeps every event, in order (tests, the simulator's report)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
