"""The daemon over the simulator: event log, status, metrics, reload, dry run, crash."""

from __future__ import annotations

import gc
import os
import signal
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oomkit.daemon.backend import SimBackend
from oomkit.daemon.config import load_config, load_policies
from oomkit.daemon.service import Daemon
from oomkit.errors import ConfigError
from oomkit.kernel.base import Kernel
from oomkit.runtime import Runtime

from .conftest import CONFIG_A, Setup


def run(d: Daemon) -> int:
    d.start()
    return d.run()


def victims(record: dict[str, Any]) -> list[str]:
    return [v["comm"] for v in record["victims"]]


def test_every_oom_is_logged_whoever_resolved_it(setup: Setup) -> None:
    assert run(setup.daemon()) == 0
    ooms = setup.records("oom")
    assert [(r["memcg"], r["resolved_by"], r["policy"]) for r in ooms] == [
        ("/a", "handler", "largest_leaf"), ("/b", "default", "default")]
    assert victims(ooms[0]) == ["a_big"] and victims(ooms[1]) == ["b_big"]
    assert all(isinstance(r["wall"], float) for r in ooms)
    kinds = [r["event"] for r in setup.records()]
    assert kinds[:2] == ["attach", "daemon"]
    assert kinds[-3:] == ["summary", "daemon", "detach"]


def test_the_status_file_follows_the_daemon(setup: Setup) -> None:
    seen: dict[str, Any] = {}

    def look() -> None:
        d.housekeeper.drain()  # type: ignore[union-attr]
        seen.update(setup.status())

    d = setup.daemon()
    setup.at(2.0, look)
    run(d)
    assert seen["running"] is True and seen["pid"] == os.getpid()
    assert [(h["ops"], h["policy"], h["cgroup"]) for h in seen["handlers"]] == [
        ("oom", "largest_leaf", "/a")]
    assert seen["watched_cgroups"] == 3  # /a, /a/x, /a/y
    assert [o["memcg"] for o in seen["last_ooms"]] == ["/a"]
    assert seen["metrics"].startswith("127.0.0.1:") and not seen["metrics"].endswith(":0")
    final = setup.status()
    assert final["running"] is False
    assert final["counts"] == {"ooms": 2, "kills": 2, "errors": 0}
    assert [o["resolved_by"] for o in final["last_ooms"]] == ["handler", "default"]


def test_metrics_are_served_while_running_and_count_the_oom(setup: Setup) -> None:
    texts: list[str] = []

    def scrape() -> None:
        url = f"http://{d.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            texts.append(resp.read().decode())

    d = setup.daemon()
    setup.at(2.0, scrape)
    run(d)
    families = {f.name: f for f in text_string_to_metric_families(texts[0])}
    ooms = [(s.labels, s.value) for s in families["oomkit_ooms"].samples
            if s.name == "oomkit_ooms_total"]
    assert ooms == [({"resolved_by": "handler", "policy": "largest_leaf",
                      "constraint": "memcg"}, 1.0)]
    assert families["oomkit_watched_cgroups"].samples[0].value == 3
    attached = {s.labels["ops"]: s.value for s in families["oomkit_attached_handlers"].samples}
    assert attached == {"oom": 1.0, "psi": 0.0}
    assert d.metrics_server is None  # closed at the end


def test_sighup_with_a_broken_config_keeps_the_running_one(setup: Setup) -> None:
    def break_and_hup() -> None:
        setup.config.write_text(setup.config.read_text() + '\n[[oom]]\npolicy = "largest_leaf"'
                                '\ncgroup = "/b"\nbudget = "soon"\n')
        os.kill(os.getpid(), signal.SIGHUP)  # a real signal, handled in this (main) thread

    d = setup.daemon()
    d.install_signals()
    setup.at(0.5, break_and_hup)
    run(d)
    errors = setup.records("error")
    assert len(errors) == 1 and errors[0]["where"] == "reload"
    assert "oomkit.toml:17: [[oom]] 2, key 'budget'" in errors[0]["error"]
    # The old config went on: /a's OOM at 1 s still went to largest_leaf, /b's to default.
    assert [r["resolved_by"] for r in setup.records("oom")] == ["handler", "default"]
    status = setup.status()
    assert status["reloads"]["failed"] == 1 and "budget" in status["reloads"]["last_error"]
    assert d.reloads == 0
    assert signal.getsignal(signal.SIGHUP) is not d._on_signal  # put back at shutdown


def test_sighup_with_a_good_config_swaps_the_handlers(setup: Setup) -> None:
    def change() -> None:
        setup.write_config('[[oom]]\npolicy = "kill_cgroup"\ncgroup = "/a"\n\n'
                           '[[oom]]\npolicy = "largest_leaf"\ncgroup = "/b"\n')
        d.request_reload()

    d = setup.daemon()
    setup.at(0.5, change)
    run(d)
    ooms = setup.records("oom")
    assert [(r["memcg"], r["policy"]) for r in ooms] == [("/a", "kill_cgroup"),
                                                        ("/b", "largest_leaf")]
    assert sorted(victims(ooms[0])) == ["a_big", "a_late"]  # the whole of /a
    assert d.reloads == 1
    detach = [r for r in setup.records("detach")]
    assert detach[0]["name"] == "largest_leaf"
    reload = [r for r in setup.records("daemon") if r["action"] == "reload"]
    assert len(reload) == 1


def test_a_reload_whose_attach_fails_puts_the_old_handlers_back(setup: Setup) -> None:
    failing = setup.tmp / "failing.py"
    failing.write_text("from oomkit import PsiOps\n\n\nclass Fails(PsiOps):\n"
                       "    def init(self, psi):\n        return -22\n")

    def change() -> None:
        setup.write_config('[[oom]]\npolicy = "kill_cgroup"\ncgroup = "/a"\n\n'
                           f'[[psi]]\npolicy = "{failing}:Fails"\n')
        d.request_reload()

    d = setup.daemon()
    setup.at(0.5, change)
    run(d)
    errors = setup.records("error")
    assert len(errors) == 1
    assert "oomkit.toml:14: [[psi]] 1, key 'policy': cannot attach" in errors[0]["error"]
    assert "running config is kept" in errors[0]["error"]
    assert [r["policy"] for r in setup.records("oom")] == ["largest_leaf", "default"]


def test_a_handler_for_a_missing_cgroup_waits_for_it(setup: Setup) -> None:
    setup.write_config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/later"\n')
    assert run(setup.daemon()) == 0
    (attach,) = [r for r in setup.records("attach") if r["ops"] == "oom"]
    assert attach["cgroup"] == "/later" and "does not exist yet" in attach["mechanism"]
    assert [r["policy"] for r in setup.records("oom")] == ["default", "default"]


def test_a_reload_cannot_switch_dry_run(setup: Setup) -> None:
    def change() -> None:
        setup.write_config(CONFIG_A, extra="dry_run = true")
        d.request_reload()

    d = setup.daemon()
    setup.at(0.5, change)
    run(d)
    (error,) = setup.records("error")
    assert "daemon.dry_run cannot change on reload" in error["error"]


def test_a_reload_moves_the_event_log(setup: Setup, tmp_path: Path) -> None:
    def change() -> None:
        setup.config.write_text(setup.config.read_text().replace(
            "log/events.jsonl", "log2/events.jsonl"))
        d.request_reload()

    d = setup.daemon()
    setup.at(2.0, change)
    run(d)
    first = [r["event"] for r in setup.records()]
    from oomkit.daemon.eventlog import read_events

    second = [r["event"] for r in read_events(str(tmp_path / "log2" / "events.jsonl"))]
    assert "oom" in first and "oom" in second  # /a's OOM before, /b's after


def test_dry_run_kills_nothing_itself_and_logs_the_kernel_kills(setup: Setup) -> None:
    setup.write_config(CONFIG_A, extra="dry_run = true")
    d = setup.daemon()
    run(d)
    (attach,) = setup.records("attach")
    assert attach["mechanism"].startswith("dry run: not armed")
    ooms = setup.records("oom")
    assert [(r["memcg"], r["resolved_by"], r["dry_run"]) for r in ooms] == [
        ("/a", "kernel", True), ("/b", "kernel", True)]
    assert victims(ooms[0]) == ["a_big"]  # the kernel's choice, not the handler's


PSI_SCENARIO = """\
[machine]
memory = "1G"
duration = "6s"

[[cgroup]]
path = "/app"
"memory.max" = "128M"

[[process]]
name = "web"
cgroup = "/app/web"
program = [ { op = "alloc", kind = "anon", size = "60M" }, { op = "sleep" } ]

[[process]]
name = "indexer"
cgroup = "/app/indexer"
start = "1s"
program = [ { op = "touch", kind = "file", size = "80M", path = "/data/index", duration = "60s" } ]
# A working set that nearly fits: its refaults are workingset refaults, memory stalls.
"""


def test_dry_run_shows_what_declared_ooms_would_kill(setup: Setup) -> None:
    setup.scenario.write_text(PSI_SCENARIO)
    setup.write_config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/app"\n\n'
                       '[[psi]]\npolicy = "psi_declare"\n', extra="dry_run = true")
    run(setup.daemon())
    ooms = setup.records("oom")
    assert ooms, "psi_declare declared no OOM"
    assert all(r["constraint"] == "DECLARED" and r["dry_run"] is True for r in ooms)
    first = next(r for r in ooms if r["memcg"] == "/app")
    assert first["resolved_by"] == "handler" and first["policy"] == "largest_leaf"
    assert any(w.startswith("kill pid") for w in first["would"])
    summary = setup.records("summary")[-1]
    assert all(p["status"] != "killed" for p in summary["processes"])  # nobody died


def test_a_crash_restores_and_exits_non_zero(setup: Setup) -> None:
    closed: list[str] = []

    class Crashing(SimBackend):
        def serve(self, kernel: Kernel, runtime: Runtime, stop: threading.Event) -> bool:
            super().serve(kernel, runtime, stop) if False else None
            raise RuntimeError("boom")

        def close(self, kernel: Kernel) -> None:
            closed.append("closed")

    cfg, policies = setup.load()
    d = Daemon(cfg, policies, Crashing(str(setup.scenario)), self_protect=False)
    d.start()
    assert d.run() == 1
    assert closed == ["closed"]
    errors = setup.records("error")
    assert "the daemon crashed: RuntimeError: boom" in errors[0]["error"]
    assert setup.records("detach")[0]["reason"] == "runtime closed"
    assert setup.status()["running"] is False


def test_startup_fails_cleanly_when_an_attach_fails(setup: Setup) -> None:
    failing = setup.tmp / "failing.py"
    failing.write_text("from oomkit import PsiOps\n\n\nclass Fails(PsiOps):\n"
                       "    def init(self, psi):\n        return -22\n")
    setup.write_config(f'\n[[psi]]\npolicy = "{failing}:Fails"\n')
    d = setup.daemon()
    with pytest.raises(ConfigError, match=r"oomkit.toml:\d+: \[\[psi\]\] 1, key 'policy': "
                                          r"cannot attach: Fails: attach failed"):
        d.start()
    assert d.runtime is None and d.metrics_server is None and d.housekeeper is None


def test_an_unusable_event_log_names_its_key(setup: Setup, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    setup.config.write_text(setup.config.read_text().replace(
        f"{tmp_path}/log/events.jsonl", f"{blocker}/events.jsonl"))
    # Reported with its key, and the daemon handles OOMs without it (issue 14, item 8).
    assert run(setup.daemon()) == 0
    error = setup.status()["last_error"]
    assert error["where"] == "event log"
    assert "oomkit.toml:2: key 'daemon.event_log': cannot" in error["error"]


def test_gc_is_frozen_and_off_while_running_and_back_after(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from oomkit.daemon import protect

    monkeypatch.setattr(protect, "set_oom_score_adj", lambda *a, **k: None)
    monkeypatch.setattr(protect, "raise_priority", lambda *a, **k: None)  # not pytest's
    setup.write_config(CONFIG_A, extra="mlock = false")
    seen: dict[str, Any] = {}
    d = setup.daemon(self_protect=True)
    setup.at(1.0, lambda: seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count()))
    assert gc.isenabled()
    run(d)
    assert seen["enabled"] is False and seen["frozen"] > 1000
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_loading_the_example_packaging_config(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(str(repo / "packaging" / "oomkit.toml"))
    policies = load_policies(cfg, secure=False)
    assert [e.policy for e, _ in policies.oom] == ["tmpfs_cleanup", "kill_cause"]
    assert [e.policy for e, _ in policies.psi] == ["pressure_guard"]


def test_systemd_is_told_ready_reloading_and_stopping(setup: Setup, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    addr = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(0)
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    d = setup.daemon()
    setup.at(0.5, d.request_reload)
    run(d)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    sock.close()
    heads = [m.split("\n")[0] for m in messages]
    assert heads == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    assert f"MAINPID={os.getpid()}" in messages[0]


def test_a_reload_can_turn_metrics_off(setup: Setup) -> None:
    seen: dict[str, Any] = {}

    def change() -> None:
        setup.config.write_text(setup.config.read_text().replace(
            'listen = "127.0.0.1:0"', 'listen = ""'))
        d.request_reload()

    d = setup.daemon()
    setup.at(0.5, change)
    setup.at(1.0, lambda: seen.update(server=d.metrics_server))
    run(d)
    assert seen["server"] is None and d.reloads == 1


def test_a_reload_to_a_taken_port_keeps_metrics_where_they_were(setup: Setup) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    codes: list[int] = []

    def change() -> None:
        setup.config.write_text(setup.config.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
        d.request_reload()

    def scrape() -> None:
        with urllib.request.urlopen(f"http://{d.metrics_address}/metrics", timeout=5) as r:
            codes.append(r.status)

    d = setup.daemon()
    setup.at(0.5, change)
    setup.at(2.0, scrape)
    try:
        run(d)
    finally:
        taken.close()
    assert codes == [200]
    (error,) = setup.records("error")
    assert "metrics stay on 127.0.0.1:0" in error["error"]
