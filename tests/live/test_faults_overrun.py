"""QA G3: a handler call that overruns its budget. Python code is interrupted (the daemon
gets its CPU and GIL back); a call blocked in native code, which nothing can stop, is not
called again while it runs (no second thread, an error naming it); the fallback to the
next handler is intact either way. Live, v1: /box (32M) under a 64M hog, twice."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from oomkit.cli import main

from . import daemon
from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged

POLICY = '''
import time
from oomkit import OomOps

class Spins(OomOps):
    name = "spins"

    def handle_out_of_memory(self, ctx, oc):
        while True:
            pass

class Sleeps(OomOps):
    name = "sleeps"

    def handle_out_of_memory(self, ctx, oc):
        time.sleep(60)  # native code: no exception reaches it before it returns
        return False
'''


def records(tmp_path: Path, kind: str) -> list[dict[str, object]]:
    log = tmp_path / "log" / "events.jsonl"
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == kind]


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def two_ooms(live: LiveCgroups, tmp_path: Path, name: str
             ) -> tuple[list[dict[str, object]], list[int], float, str]:
    """Start the daemon with ``name`` at /box before largest_leaf (system-wide), two OOMs
    in /box; the oom records, the daemon's thread count before and after each, its
    CPU seconds in the 2 s after the second OOM, and what `oomkit status` said then."""
    box = live.mkdir("box", limit=32 * MiB)
    policy = daemon.policy_file(tmp_path, "bad", POLICY)
    cfg = daemon.config(tmp_path, live.root,
                        f'[[oom]]\npolicy = "{policy}:{name}"\ncgroup = "/box"\n'
                        '[[oom]]\npolicy = "largest_leaf"\n',
                        daemon='budget = "500ms"\nmax_failures = 3\n')
    cfg.write_text(cfg.read_text().replace('status_file = ""',
                                           f'status_file = "{tmp_path}/status.json"'))
    proc = daemon.start(cfg)
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        counts = [threads(proc.pid)]
        for n in (1, 2):
            hog = live.spawn(box, "anon", 64 * MiB)
            assert hog.wait_dead(10), f"OOM {n} was never resolved"
            assert wait_for(lambda n=n: len(records(tmp_path, "oom")) == n, 5)
            time.sleep(0.2)
            counts.append(threads(proc.pid))
        before = cpu_s(proc.pid)
        time.sleep(2.0)
        busy = cpu_s(proc.pid) - before
        assert proc.poll() is None
        out = io.StringIO()
        main(["status", "--config", str(cfg)], out=out)
    finally:
        daemon.kill(proc)
    return records(tmp_path, "oom"), counts, busy, out.getvalue()


def handlers(oom: dict[str, object]) -> list[tuple[object, object]]:
    return [(h["name"], h.get("error")) for h in oom["handlers"]]  # type: ignore[union-attr]


def test_a_spinning_handler_is_interrupted_and_the_next_handler_kills(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    ooms, counts, busy, status = two_ooms(live_v1, tmp_path, "Spins")
    print(f"\nthreads {counts}; daemon CPU {busy:.2f} s in the 2 s after the 2nd OOM; "
          "largest_leaf took " + ", ".join(
              f"{h['duration_us'] / 1000:.1f} ms" for o in ooms
              for h in o["handlers"] if h["name"] == "largest_leaf"))  # type: ignore[union-attr]
    assert counts[2] == counts[1], f"one more thread per OOM: {counts}"
    assert busy < 0.5, f"the spinner still runs: {busy:.2f} s of CPU in 2 s"
    for oom in ooms:
        assert (oom["memcg"], oom["policy"], oom["resolved_by"]) == ("/box", "largest_leaf",
                                                                     "handler"), oom
        (spins, _), (leaf, leaf_error) = handlers(oom)
        assert (spins, leaf, leaf_error) == ("spins", "largest_leaf", None)
        errors = [h["error"] for h in oom["handlers"]]  # type: ignore[union-attr]
        assert "overran its budget of 0.5 s; interrupted" in str(errors[0])
    assert "still running" not in status, status


def test_a_handler_blocked_in_native_code_is_not_called_again_while_it_runs(
        live_v1: LiveCgroups, tmp_path: Path) -> None:
    ooms, counts, busy, status = two_ooms(live_v1, tmp_path, "Sleeps")
    print(f"\nthreads {counts}; daemon CPU {busy:.2f} s in the 2 s after the 2nd OOM")
    first, second = ooms
    assert counts[2] == counts[1], f"a second thread for the stuck handler: {counts}"
    for oom in ooms:
        assert (oom["memcg"], oom["policy"], oom["resolved_by"]) == ("/box", "largest_leaf",
                                                                     "handler"), oom
    (_, err1), _ = handlers(first)
    (_, err2), _ = handlers(second)
    assert "overran its budget of 0.5 s; still running" in str(err1)
    assert "a call of sleeps is still running, for" in str(err2)
    assert "restart the daemon to stop it" in str(err2)
    (line,) = [ln for ln in status.splitlines() if ln.startswith("a call of")]
    print(line)
    assert line.startswith("a call of sleeps is still running (for ")
