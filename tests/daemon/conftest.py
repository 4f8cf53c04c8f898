"""Daemon tests: a config and a scenario in a temp dir, and the daemon over the simulator.

The scenario has two OOMs at known times: /a at about 1 s (where the configs attach a
handler) and /b at about 3 s (left to the default killer unless a config says otherwise).
Each daemon gets its own event log, status file and metrics port (0: any free one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from oomkit.daemon.backend import SimBackend
from oomkit.daemon.config import Config, LoadedPolicies, load_config, load_policies
from oomkit.daemon.eventlog import read_events
from oomkit.daemon.service import Daemon

SCENARIO = """\
name = "two OOMs: /a at 1 s, /b at 3 s"
[machine]
memory = "1G"
duration = "5s"

[[cgroup]]
path = "/a"
"memory.max" = "100M"

[[cgroup]]
path = "/b"
"memory.max" = "100M"

[[process]]
name = "a_big"
cgroup = "/a/x"
program = [ { op = "alloc", kind = "anon", size = "60M" }, { op = "sleep" } ]

[[process]]
name = "a_late"
cgroup = "/a/y"
start = "1s"
program = [
  { op = "alloc", kind = "anon", size = "30M" },
  { op = "alloc", kind = "anon", size = "30M" },
  { op = "sleep" },
]

[[process]]
name = "b_big"
cgroup = "/b/x"
program = [ { op = "alloc", kind = "anon", size = "60M" }, { op = "sleep" } ]

[[process]]
name = "b_late"
cgroup = "/b/y"
start = "3s"
program = [
  { op = "alloc", kind = "anon", size = "30M" },
  { op = "alloc", kind = "anon", size = "30M" },
  { op = "sleep" },
]
"""


def daemon_section(tmp: Path, extra: str = "") -> str:
    return (f'[daemon]\nevent_log = "{tmp}/log/events.jsonl"\n'
            f'status_file = "{tmp}/run/status.json"\nstate_file = "{tmp}/run/restore.json"\n'
            f'event_log_max = "64K"\n{extra}\n[metrics]\nlisten = "127.0.0.1:0"\n')


CONFIG_A = '\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/a"\n'


@dataclass
class Setup:
    tmp: Path
    scenario: Path
    config: Path
    slices: list[Callable[[float], None]] = field(default_factory=list)

    @property
    def event_log(self) -> Path:
        return self.tmp / "log" / "events.jsonl"

    @property
    def status_file(self) -> Path:
        return self.tmp / "run" / "status.json"

    def write_config(self, body: str, extra: str = "") -> None:
        self.config.write_text(daemon_section(self.tmp, extra) + body)

    def load(self) -> tuple[Config, LoadedPolicies]:
        cfg = load_config(str(self.config))
        return cfg, load_policies(cfg, secure=False)

    def daemon(self, *, self_protect: bool = False) -> Daemon:
        cfg, policies = self.load()

        def on_slice(now: float) -> None:
            for fn in list(self.slices):
                fn(now)

        backend = SimBackend(str(self.scenario), on_slice=on_slice)
        return Daemon(cfg, policies, backend, reload_config=self.load,
                      self_protect=self_protect)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Call fn once, at the first slice at or after simulated time ``when``."""
        done = {"v": False}

        def check(now: float) -> None:
            if not done["v"] and now >= when:
                done["v"] = True
                fn()

        self.slices.append(check)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_events(str(self.event_log)) if kind is None or
                r["event"] == kind]

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.status_file.read_text())
        return data


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    scenario = tmp_path / "two_ooms.toml"
    scenario.write_text(SCENARIO)
    s = Setup(tmp_path, scenario, tmp_path / "oomkit.toml")
    s.write_config(CONFIG_A)
    yield s
