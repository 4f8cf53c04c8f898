"""Helpers for simulator tests: build a SimKernel by hand, with a Runtime and its events."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oomkit import Runtime, SimKernel
from oomkit.cli import main
from oomkit.events import EventList, OomEvent
from oomkit.kernel.sim import MachineSpec, Step
from oomkit.units import parse_size


def M(text: str) -> int:
    return parse_size(text)


def hold(size: str, kind: str = "anon") -> tuple[Step, ...]:
    """Allocate size, then sleep forever."""
    return (Step("alloc", kind=kind, size=M(size)), Step("sleep"))


class Sim:
    def __init__(self, memory: str = "1G", swap: str = "0", **kw: int) -> None:
        self.kernel = SimKernel(MachineSpec(memory=M(memory), swap=M(swap), **kw))
        self.events = EventList()
        self.rt = Runtime(self.kernel, sink=self.events)

    def ooms(self) -> list[OomEvent]:
        return [e for e in self.events.events if isinstance(e, OomEvent)]

    def run(self, seconds: float) -> None:
        self.kernel.run(self.kernel.clock.now_ns() + int(seconds * 1e9))


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = Sim()
    yield s
    s.rt.close()


def seed_oom_layout(s: Sim) -> None:
    """The BPF OOM selftest's layout (prog_tests/test_oom.c)."""
    k = s.kernel
    k.create_cgroup("/oom_test", memory_max=M("80M"), swap_max=0)
    for leaf in ("cg1", "cg2", "cg3/cg4", "cg3/cg5"):
        k.create_cgroup(f"/oom_test/{leaf}")
    k.spawn("cg1", "/oom_test/cg1", hold("10M"), oom_score_adj=1000)
    k.spawn("cg2", "/oom_test/cg2", hold("40M"), oom_score_adj=-1000)
    k.spawn("cg4", "/oom_test/cg3/cg4", hold("30M"))
    k.spawn("cg5", "/oom_test/cg3/cg5", hold("20M"), start_ns=500_000_000)


@dataclass
class Outcome:
    ooms: list[dict[str, Any]]
    procs: dict[str, dict[str, Any]]

    @property
    def killed(self) -> list[str]:
        return [v["comm"] for e in self.ooms for v in e["victims"]]

    def killed_at(self, name: str) -> float:
        at = self.procs[name]["killed_at"]
        assert at is not None, f"{name} was not killed: {self.ooms}"
        return float(at)

    def alive(self, *names: str) -> bool:
        return all(self.procs[n]["killed_at"] is None for n in names)


def run_with_config(scenario: Path, config_file: Path, tmp_path: Path) -> Outcome:
    """``oomkit run --sim scenario --config config_file --json``, the config's files moved
    to tmp_path: the OOM events and each process's summary."""
    text = config_file.read_text()
    for key, name in (("event_log", "events.jsonl"), ("status_file", "status.json"),
                      ("state_file", "restore.json")):
        text = re.sub(rf"(?m)^{key}\s*=.*$", f'{key} = "{tmp_path / name}"', text)
    if "[daemon]" not in text:
        text = "[daemon]\n" + text
    text = text.replace("[daemon]\n", "[daemon]\n" + "".join(
        f'{key} = "{tmp_path / name}"\n' for key, name in (
            ("event_log", "events.jsonl"), ("status_file", "status.json"),
            ("state_file", "restore.json")) if f"\n{key} =" not in text), 1)
    text = re.sub(r'(?m)^listen\s*=.*$', 'listen = ""', text)
    if "[metrics]" not in text:
        text += '\n[metrics]\nlisten = ""\n'
    config = tmp_path / "oomkit.toml"
    config.write_text(text)
    out = io.StringIO()
    assert main(["run", "--sim", str(scenario), "--config", str(config), "--json"], out) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    (summary,) = [e for e in events if e["event"] == "summary"]
    return Outcome([e for e in events if e["event"] == "oom"],
                   {p["name"]: p for p in summary["processes"]})
