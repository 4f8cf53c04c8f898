"""A system-wide leak in the guest, recorded by the flight recorder and replayed (VM only).

The leak and the live setup are test_guest_system_oom's: a leaker in its own cgroup grows
until the guest runs short, the system-wide watch hands the OOM to a system-wide
LargestLeaf, which kills the leaker's cgroup. Here the runtime's events also go to the
daemon's incident writer (oomkit.lab.incidents) with its recorder sampling the whole
tree; the OOM's incident file must replay, under the same handler, to the same victim's
cgroup, and say what the kernel's own killer would have done.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from oomkit.cli import main
from oomkit.daemon.eventlog import wall_clock
from oomkit.events import Event, EventList
from oomkit.kernel.linux import LinuxKernel
from oomkit.lab.incidents import Incidents
from oomkit.lab.recorder import RecorderSettings
from oomkit.lab.replay import load_incident
from oomkit.live import serving as served
from oomkit.policies.largest_leaf import LargestLeaf
from oomkit.runtime import Runtime

from .conftest import GUEST_ONLY, V2Tree, wait_for
from .test_guest_lab_daemon import leaker
from .test_guest_system_oom import SLOW, protected

pytestmark = GUEST_ONLY


def test_a_system_wide_leak_is_recorded_and_replays_to_the_same_cgroup(
        tree: V2Tree, tmp_path: Path) -> None:
    leak = tree.mkdir("leak")
    (tree.root / "memory.max").write_text("max")  # a real system-wide shortage
    kernel = LinuxKernel(state_file=str(tmp_path / "restore.json"),
                         system_psi=(10_000, 500_000), system_min_available=0.10)
    ev = EventList()
    errors: list[str] = []
    incidents = Incidents(
        kernel, RecorderSettings(interval_s=1.0, pressure_interval_s=0.2),
        event_log=str(tmp_path / "events.jsonl"), roots=None, wall=wall_clock,
        defer=lambda _key, job: job(), on_error=errors.append,
        context=lambda: {"handlers": [{"ops": "oom", "policy": "largest_leaf",
                                       "cgroup": None}]})
    records: list[dict[str, Any]] = []

    def sink(event: Event) -> None:  # the daemon's dispatch, reduced to what matters here
        record = event.to_dict()
        incidents.on_record(event, record)  # names the incident file in the OOM's record
        records.append(record)
        ev(event)

    runtime = Runtime(kernel, sink=sink)
    runtime.attach_oom(LargestLeaf(), None)
    incidents.start()
    try:
        with protected(), served(kernel, runtime):
            time.sleep(3)  # a few quiet samples first
            hog = leaker(tree, leak)  # fast to 30 % of MemTotal only: see there
            hog.go()
            assert hog.wait_dead(SLOW * 2), "the system-wide handler should kill the leaker"
            assert wait_for(lambda: any(r.get("incident") for r in records), SLOW)
    finally:
        incidents.close()
    assert not errors, errors
    oom = next(r for r in records if r.get("incident"))
    assert oom["memcg"] is None and oom["resolved_by"] == "handler"
    live_cgroups = [v["cgroup"] for v in oom["victims"]]
    assert live_cgroups and live_cgroups[0].endswith("/leak")
    path = str(oom["incident"])
    inc = load_incident(path)
    print("sample times", [s["time"] for s in inc.samples], oom["time"])
    assert inc.header["machine"]["memory"] > 0 and len(inc.samples) > 5

    out = io.StringIO()
    assert main(["replay", path], out=out) == 0
    text = out.getvalue()
    print(text[-1500:])
    assert "same decision as live: yes" in text, text
    out = io.StringIO()
    assert main(["replay", path, "--kernel"], out=out) == 0
    print(out.getvalue()[-600:])
    assert "replay: killed" in out.getvalue()
