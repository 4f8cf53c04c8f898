"""The daemon on the real kernel: ``oomkit run --config`` as a process of its own.

Every test gets a throwaway memcg below our own (tests/live/conftest.py's ``live``
fixture: removed afterwards, failures included), points the daemon's ``cgroup_root`` at
it, so the daemon sees and arms nothing else, and runs every hog inside a limited child
memcg (memory and memory+swap limits): no test can cause a system-wide OOM.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oomkit.daemon.eventlog import read_events
from tests.live.conftest import LiveCgroups, MiB, wait_for
from tests.live.conftest import live as live  # the fixture, re-exported

pytestmark = pytest.mark.privileged


def kmsg_readable() -> bool:
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


@dataclass
class LiveDaemon:
    proc: subprocess.Popen[str]
    dir: Path
    config: Path

    @property
    def event_log(self) -> Path:
        return self.dir / "events.jsonl"

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_events(str(self.event_log))
                if kind is None or r["event"] == kind]

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    # 60 s: in a TCG guest on a busy host the daemon took 6-21 s to report running
    def wait_ready(self, timeout: float = 60.0) -> None:
        ok = wait_for(lambda: bool(self.status().get("running")) and
                      self.proc.poll() is None and
                      any(r["event"] == "daemon" for r in self.records()), timeout, 0.05)
        if not ok:
            self.stop()
            out = self.proc.stdout.read() if self.proc.stdout else ""
            raise AssertionError(f"the daemon did not start (exit {self.proc.returncode}): "
                                 f"{out[-2000:]}")

    def wait_record(self, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def look() -> bool:
            found[:] = [r for r in self.records() if pred(r)]
            return bool(found)

        assert wait_for(look, timeout, 0.05), f"no such record; log: {self.records()}"
        return found[0]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def config_text(d: Path, root: Path, body: str, extra: str = "") -> str:
    return (f'[daemon]\nevent_log = "{d}/events.jsonl"\nstatus_file = "{d}/status.json"\n'
            f'state_file = "{d}/restore.json"\ncgroup_root = "{root}"\nbudget = "500ms"\n'
            f'{extra}\n[metrics]\nlisten = "127.0.0.1:0"\n{body}')


HANDLER_H = '\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/h"\n'


@pytest.fixture
def daemon_dir(tmp_path: Path) -> Path:
    d = tmp_path / "oomkit"
    d.mkdir()
    return d


@contextlib.contextmanager
def running(live: LiveCgroups, d: Path, body: str = HANDLER_H, extra: str = "", *,
            quiet: bool = True, stdout: Any = subprocess.PIPE,
            env: dict[str, str] | None = None) -> Iterator[LiveDaemon]:
    config = d / "oomkit.toml"
    config.write_text(config_text(d, live.root, body, extra))
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), *(["-q"] if quiet else [])], stdout=stdout,
                            stderr=subprocess.STDOUT, text=True, env=env)
    daemon = LiveDaemon(proc, d, config)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()


def oom_control(cgroup: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in
                                   (cgroup / "memory.oom_control").read_text().splitlines())}


def mkdir(live: LiveCgroups, rel: str, limit: int | None = None) -> Path:
    """live.mkdir, with the memory controller enabled on the way down on v2 (a child has
    memory.max only when its parent's cgroup.subtree_control says +memory)."""
    if not live.v1:
        d = live.root
        for part in rel.split("/"):
            with contextlib.suppress(OSError):
                (d / "cgroup.subtree_control").write_text("+memory")
            d = d / part
            d.mkdir(exist_ok=True)
    return live.mkdir(rel, limit)


def hog_into(live: LiveCgroups, rel: str, limit: int, size: int) -> Any:
    parent = mkdir(live, rel.rsplit("/", 1)[0], limit) if "/" in rel else None
    leaf = mkdir(live, rel, None if parent is not None else limit)
    return live.spawn(leaf, "anon", size)


def test_a_memcg_oom_is_handled_logged_with_its_victim_and_counted(
        live: LiveCgroups, daemon_dir: Path) -> None:
    mkdir(live, "h", 64 * MiB)
    with running(live, daemon_dir) as d:
        if live.v1:
            assert oom_control(live.root / "h")["oom_kill_disable"] == 1
        hog = hog_into(live, "h/leaf", 64 * MiB, 100 * MiB)
        assert hog.wait_dead(15), "the hog survived"
        rec = d.wait_record(lambda r: r["event"] == "oom" and r["resolved_by"] == "handler")
        assert rec["memcg"] == "/h" and rec["policy"] == "largest_leaf"
        assert [(v["pid"], v["cgroup"]) for v in rec["victims"]] == [(hog.pid, "/h/leaf")]
        # The status file is rewritten right after the log line: wait for it, briefly.
        deadline = time.monotonic() + 10
        status = d.status()
        while not status["last_ooms"] and time.monotonic() < deadline:
            time.sleep(0.05)
            status = d.status()
        assert status["last_ooms"][-1]["victims"][0]["pid"] == hog.pid
        shown = subprocess.run([sys.executable, "-m", "oomkit.cli", "status", "--status-file",
                                str(d.dir / "status.json")], capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "oomkit running" in shown.stdout and "largest_leaf" in shown.stdout
        assert f"killed python3 (pid {hog.pid}" in shown.stdout or \
            f"(pid {hog.pid}, /h/leaf" in shown.stdout
        # /metrics parses and counts it (last: the cgroup v2 test guest has no loopback).
        address = d.status()["metrics"]
        try:
            resp = urllib.request.urlopen(f"http://{address}/metrics", timeout=5)
        except urllib.error.URLError as exc:
            if getattr(exc.reason, "errno", None) != errno.ENETUNREACH:
                raise
            no_loopback = True
        else:
            no_loopback = False
            with resp:
                text = resp.read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            ooms = {tuple(sorted(s.labels.items())): s.value
                    for s in families["oomkit_ooms"].samples if s.name == "oomkit_ooms_total"}
            assert ooms[(("constraint", "memcg"), ("policy", "largest_leaf"),
                         ("resolved_by", "handler"))] == 1
            kills = {(s.labels["resolved_by"], s.labels["constraint"]): s.value
                     for s in families["oomkit_kills"].samples
                     if s.name == "oomkit_kills_total"}
            assert kills["handler", "memcg"] == 1
            assert families["oomkit_watched_cgroups"].samples[0].value >= 2  # /h, /h/leaf
    assert d.proc.returncode == 0
    # SIGTERM gave the kernel its killer back.
    if live.v1:
        assert oom_control(live.root / "h")["oom_kill_disable"] == 0
    else:
        assert (live.root / "h" / "memory.high").read_text().strip() == "max"
    if no_loopback:
        pytest.skip("everything but /metrics checked: no loopback network here")
    assert not (daemon_dir / "restore.json").exists()


def test_a_kernel_resolved_oom_outside_the_handlers_scope_is_in_the_same_log(
        live: LiveCgroups, daemon_dir: Path) -> None:
    if not kmsg_readable():
        pytest.skip("/dev/kmsg is not readable: kernel OOM kills outside the handlers' "
                    "scope are only seen through it")
    mkdir(live, "h", 64 * MiB)
    with running(live, daemon_dir) as d:
        hog = hog_into(live, "k/leaf", 32 * MiB, 64 * MiB)  # /k: no handler
        assert hog.wait_dead(15)
        rec = d.wait_record(lambda r: r["event"] == "oom" and r["resolved_by"] == "kernel")
        assert rec["memcg"] == "/k"
        assert [v["pid"] for v in rec["victims"]] == [hog.pid]
        assert rec["victims"][0]["cgroup"] == "/k/leaf"


def test_sighup_with_a_broken_file_keeps_the_old_config(
        live: LiveCgroups, daemon_dir: Path) -> None:
    mkdir(live, "h", 64 * MiB)
    with running(live, daemon_dir) as d:
        good = d.config.read_text()
        d.config.write_text(good + '\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/k"\n'
                            'budget = "whenever"\n')
        d.proc.send_signal(signal.SIGHUP)
        err = d.wait_record(lambda r: r["event"] == "error" and r["where"] == "reload")
        assert "key 'budget'" in err["error"] and str(d.config) in err["error"]
        assert d.proc.poll() is None
        # status.json is rewritten by the housekeeping thread, shortly after the event.
        assert wait_for(lambda: d.status().get("reloads", {}).get("failed") == 1, 5.0, 0.05), \
            d.status()
        # Still armed, still handled by the old config's handler.
        if live.v1:
            assert oom_control(live.root / "h")["oom_kill_disable"] == 1
        hog = hog_into(live, "h/leaf", 64 * MiB, 100 * MiB)
        assert hog.wait_dead(15)
        rec = d.wait_record(lambda r: r["event"] == "oom" and r["resolved_by"] == "handler")
        assert rec["victims"][0]["pid"] == hog.pid
        # A good file then does take effect.
        d.config.write_text(good.replace('cgroup = "/h"', 'cgroup = "/h2"'))
        mkdir(live, "h2", 64 * MiB)
        d.proc.send_signal(signal.SIGHUP)
        d.wait_record(lambda r: r["event"] == "daemon" and r["action"] == "reload")
        if live.v1:
            assert oom_control(live.root / "h")["oom_kill_disable"] == 0
            assert oom_control(live.root / "h2")["oom_kill_disable"] == 1


def test_a_group_writable_policy_file_is_refused(live: LiveCgroups, daemon_dir: Path,
                                                 tmp_path: Path) -> None:
    pol = tmp_path / "policies"
    pol.mkdir(mode=0o755)
    os.chmod(pol, 0o755)
    f = pol / "mine.py"
    f.write_text("from oomkit import OomOps\n\nclass Mine(OomOps):\n    name = 'mine'\n")
    os.chmod(f, 0o664)
    mkdir(live, "h", 64 * MiB)
    config = daemon_dir / "oomkit.toml"
    config.write_text(config_text(daemon_dir, live.root,
                                  f'\n[[oom]]\npolicy = "{f}:Mine"\ncgroup = "/h"\n'))
    out = subprocess.run([sys.executable, "-m", "oomkit.cli", "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{config}:12: [[oom]] 1, key 'policy'" in out.stderr
    assert "writable by group or others" in out.stderr
    if live.v1:
        assert oom_control(live.root / "h")["oom_kill_disable"] == 0  # nothing was armed


def test_sigkill_leaves_the_restoring_to_the_watchdog(live: LiveCgroups,
                                                      daemon_dir: Path) -> None:
    h = mkdir(live, "h", 64 * MiB)

    def armed() -> bool:
        if live.v1:
            return oom_control(h)["oom_kill_disable"] == 1
        return (h / "memory.high").read_text().strip() != "max"  # the guard band

    with running(live, daemon_dir) as d:
        assert armed()
        d.stop(signal.SIGKILL)
        assert wait_for(lambda: not armed(), 10)


def test_dry_run_arms_nothing_and_logs_the_kernel_kill(live: LiveCgroups,
                                                      daemon_dir: Path) -> None:
    if not kmsg_readable():
        pytest.skip("/dev/kmsg is not readable: a dry run sees kernel kills only through it")
    mkdir(live, "h", 64 * MiB)
    with running(live, daemon_dir, extra="dry_run = true") as d:
        if live.v1:
            assert oom_control(live.root / "h")["oom_kill_disable"] == 0
        attach = d.wait_record(lambda r: r["event"] == "attach")
        assert attach["mechanism"].startswith("dry run")
        hog = hog_into(live, "h/leaf", 64 * MiB, 100 * MiB)
        assert hog.wait_dead(15)
        rec = d.wait_record(lambda r: r["event"] == "oom")
        assert rec["resolved_by"] == "kernel" and rec["dry_run"] is True
        assert [v["pid"] for v in rec["victims"]] == [hog.pid]


def test_self_protection_of_the_running_daemon(live: LiveCgroups, daemon_dir: Path) -> None:
    mkdir(live, "h", 64 * MiB)
    with running(live, daemon_dir) as d:
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert int(fields["VmLck"].split()[0]) > 10_000, "mlockall did not lock"
        adj = Path(f"/proc/{d.proc.pid}/oom_score_adj").read_text().strip()
        errors = [r["where"] for r in d.records("error")]
        assert adj == "-1000" or "self-protection: oom_score_adj" in errors
        time.sleep(0.1)


def test_a_handler_for_a_cgroup_made_later_attaches_when_it_appears(
        live: LiveCgroups, daemon_dir: Path) -> None:
    with running(live, daemon_dir) as d:  # /h does not exist yet
        rec = d.wait_record(lambda r: r["event"] == "attach" and r.get("cgroup") == "/h")
        assert "does not exist yet" in rec["mechanism"]
        mkdir(live, "h", 64 * MiB)
        rec = d.wait_record(lambda r: r["event"] == "attach" and "appeared" in
                            r.get("mechanism", ""))
        assert rec["cgroup"] == "/h"
        if live.v1:
            assert oom_control(live.root / "h")["oom_kill_disable"] == 1
        hog = hog_into(live, "h/leaf", 64 * MiB, 100 * MiB)
        assert hog.wait_dead(15), "the hog survived"
        rec = d.wait_record(lambda r: r["event"] == "oom" and r["resolved_by"] == "handler")
        assert rec["policy"] == "largest_leaf" and rec["victims"][0]["pid"] == hog.pid
