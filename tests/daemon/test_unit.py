"""The systemd unit as `oomkit install-unit` writes it: systemd-analyze verify, the
watchdog (READY=1, then WATCHDOG=1 from the housekeeper's wakes), conditions."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from oomkit import daemon_cli
from oomkit.cli import main
from oomkit.daemon.config import recommended_config
from oomkit.daemon.housekeeper import Housekeeper
from oomkit.daemon.service import watchdog_interval
from tests.conftest import missing_checker

from .conftest import Setup

REPO = Path(__file__).resolve().parents[2]
OOMKIT = str(Path(sys.executable).parent / "oomkit")


def install(tmp_path: Path) -> tuple[Path, Path]:
    out = io.StringIO()
    code = main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir",
                 str(tmp_path / "man" / "man8"), "--oomkit", OOMKIT, "--config-file",
                 str(tmp_path / "etc" / "oomkit.toml")], out=out)
    assert code == 0, out.getvalue()
    return tmp_path / "unit" / "oomkit.service", tmp_path / "man" / "man8" / "oomkit.8"


def test_install_unit_names_this_oomkit(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # ProtectHome stays as shipped (a venv whose python resolves under /root, as pyenv's
    # does, gets read-only: see test_install_unit_under_a_protected_home_...)
    monkeypatch.setattr(daemon_cli, "PROTECTED_HOMES", ())
    unit, page = install(tmp_path)
    text = unit.read_text()
    assert f"ExecStart={OOMKIT} run --config /etc/oomkit/oomkit.toml\n" in text
    assert f"ExecStartPre={OOMKIT} check-config /etc/oomkit/oomkit.toml\n" in text
    assert f"ExecReload={OOMKIT} reload --config /etc/oomkit/oomkit.toml\n" in text
    assert "--quiet" not in text.split("ExecStart=", 1)[1].splitlines()[0]
    assert "\nWatchdogSec=3min\n" in text
    assert "\nConditionControlGroupController=memory\n" in text
    assert "\nDocumentation=man:oomkit(8)\n" in text
    assert page.read_text().startswith(".TH OOMKIT 8")
    shipped = (REPO / "packaging" / "oomkit.service").read_text().splitlines()
    written = text.splitlines()
    assert len(shipped) == len(written)
    assert [a for a, b in zip(shipped, written, strict=True) if a != b] == [
        line for line in shipped
        if line.startswith(("ExecStart=", "ExecStartPre=", "ExecReload="))]


def test_install_unit_writes_the_recommended_config_only_when_missing(tmp_path: Path) -> None:
    """What `oomkit run` runs without a config, so that installing the unit does not
    change what `oomkit run` does (QA G5: a config with no handlers took its place)."""
    install(tmp_path)
    config = tmp_path / "etc" / "oomkit.toml"
    assert config.read_text() == Path(recommended_config()).read_text()
    out = io.StringIO()
    assert main(["check-config", str(config)], out=out) == 0
    assert "no handlers" not in out.getvalue()
    config.write_text("# mine\n")
    install(tmp_path)
    assert config.read_text() == "# mine\n"


def test_install_unit_into_other_directories_leaves_etc_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA G5: `--unit-dir D --man-dir M` wrote /etc/oomkit/oomkit.toml too. Nothing is
    written outside the directories named (the writes are recorded, not done)."""
    written: list[str] = []
    monkeypatch.setattr(daemon_cli, "_write_file", lambda path, text: written.append(path))
    out = io.StringIO()
    assert main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir",
                 str(tmp_path / "man"), "--oomkit", OOMKIT], out=out) == 0
    assert written == [str(tmp_path / "unit" / "oomkit.service"),
                       str(tmp_path / "man" / "oomkit.8")], out.getvalue()
    assert "no config written" in out.getvalue() and "--config-file FILE" in out.getvalue()


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of ``unit``, with install-unit's man page on MANPATH
    (verify runs ``man oomkit(8)`` for Documentation=)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_checker("systemd-analyze not found (Debian package systemd; scripts/tools "
                        "installs it as root)")
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={**os.environ, "MANPATH": str(tmp_path / "man"),
                               "SYSTEMD_LOG_LEVEL": "notice"})


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    unit, _ = install(tmp_path)
    r = verify(unit, tmp_path)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def test_systemd_analyze_verify_sees_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a key systemd does not know, or a missing binary."""
    unit, _ = install(tmp_path)
    text = unit.read_text()
    unit.write_text(text.replace("[Service]\n", "[Service]\nRestartSecs=1\n", 1))
    r = verify(unit, tmp_path)
    assert "RestartSecs" in r.stdout + r.stderr, r.stdout + r.stderr
    unit.write_text(text.replace(OOMKIT, str(tmp_path / "no" / "oomkit"), 1))
    r = verify(unit, tmp_path)
    assert r.returncode != 0 and "no/oomkit" in r.stdout + r.stderr, r.stdout + r.stderr


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "180000000"}) == 90.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "2"}, pid=2) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "x"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def now_ns(self) -> int:
        return int(self.t * 1e9)


def test_the_tick_rides_on_the_housekeepers_wakes() -> None:
    """The wait is bounded by the tick interval; a tick runs at every wake, so a collection
    due more often than the tick interval leaves the tick no wake-up of its own."""
    from oomkit.daemon.protect import GcControl

    clock = FakeClock()
    hk = Housekeeper(gc_control=GcControl(), gc_interval_s=60.0, clock=clock,
                     tick=lambda: None, tick_interval_s=90.0)
    assert hk._wait_s(0.0) == 60.0  # the collection comes first
    hk._run_tick()
    assert hk.ticks == 1
    alone = Housekeeper(clock=clock, tick=lambda: None, tick_interval_s=5.0)
    assert alone._wait_s(0.0) == 5.0
    assert Housekeeper(clock=clock)._wait_s(0.0) is None  # no collection, no tick: no wake


def test_ready_then_watchdog_pings(setup: Setup, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    states: list[str] = []
    done = threading.Event()

    def receive() -> None:  # as systemd does: read all along (sd_notify never waits)
        while True:
            try:
                states.append(sock.recv(4096).decode())
            except TimeoutError:
                if done.is_set():
                    return

    reader = threading.Thread(target=receive)
    reader.start()
    d = setup.daemon()
    setup.at(1.0, lambda: time.sleep(0.3))  # the serve loop runs a while in real time
    try:
        d.start()
        d.run()
    finally:
        done.set()
        reader.join()
        sock.close()
    ready = [i for i, s in enumerate(states) if s.startswith("READY=1\nMAINPID=")]
    assert len(ready) == 1, states
    assert states[ready[0]:].count("WATCHDOG=1") >= 2, states
    assert "STOPPING=1" in states


def test_an_oomkit_path_with_blanks_and_percent(tmp_path: Path) -> None:
    """A venv under "/opt/my tools %i/": quoted and %-escaped in Exec*=, so systemd runs
    that file (unquoted, systemd runs "/opt/my" with the rest as arguments)."""
    from oomkit.daemon_cli import exec_path

    assert exec_path("/usr/bin/oomkit") == "/usr/bin/oomkit"
    assert exec_path("/opt/my tools %i/oomkit") == '"/opt/my tools %%i/oomkit"'
    assert exec_path('/a"b\\c/oomkit') == '"/a\\"b\\\\c/oomkit"'
    odd = tmp_path / "my venv %i" / "bin"
    odd.mkdir(parents=True)
    (odd / "oomkit").symlink_to(OOMKIT)
    out = io.StringIO()
    assert main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir",
                 str(tmp_path / "man" / "man8"), "--config-file", "", "--oomkit",
                 str(odd / "oomkit")], out=out) == 0
    text = (tmp_path / "unit" / "oomkit.service").read_text()
    assert f'ExecStart="{tmp_path}/my venv %%i/bin/oomkit" run --config' in text
    r = verify(tmp_path / "unit" / "oomkit.service", tmp_path)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def test_install_unit_says_which_config_the_unit_runs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--config-file elsewhere (a staging tree) writes the starter config there, but the unit
    runs /etc/oomkit/oomkit.toml: the output says so instead of leaving a unit whose
    ExecStartPre fails for want of that file."""
    monkeypatch.setattr(daemon_cli, "PROTECTED_HOMES", ())
    out = io.StringIO()
    config = tmp_path / "etc" / "oomkit.toml"
    assert main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir", "",
                 "--oomkit", OOMKIT, "--config-file", str(config)], out=out) == 0
    text = out.getvalue()
    assert f"note: the unit runs --config /etc/oomkit/oomkit.toml, not {config}" in text
    out = io.StringIO()
    assert main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir", "",
                 "--oomkit", OOMKIT, "--config-file", ""], out=out) == 0
    assert "note:" not in out.getvalue()


def test_sd_notify_never_waits_on_a_receiver_that_does_not_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A notify socket whose queue is full (a supervisor that stopped reading): the
    datagram is dropped and sd_notify returns False at once, where a blocking send waited
    for good (seen: a test run hung in sendto)."""
    from oomkit.daemon.service import sd_notify

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    result = []
    sender = threading.Thread(target=lambda: result.extend(
        sd_notify("WATCHDOG=1") for _ in range(5000)), daemon=True)
    sender.start()
    sender.join(20)
    sock.close()
    assert not sender.is_alive(), "sd_notify blocked on a full queue"
    assert result[0] is True and result[-1] is False


def test_install_unit_under_a_protected_home_says_so_and_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA Q18: an oomkit in a venv under /root or /home (or pip --user) cannot start under
    ProtectHome=yes. The unit gets ProtectHome=read-only and the output says why; one
    elsewhere keeps ProtectHome=yes. (The protected homes are this test's tmp_path.)"""
    home = tmp_path / "home"
    venv = home / "me" / "venv" / "bin"
    venv.mkdir(parents=True)
    python = venv / "python"
    python.symlink_to(sys.executable)
    script = venv / "oomkit"
    script.write_text(f"#!{python}\nimport sys\n")
    script.chmod(0o755)
    monkeypatch.setattr(daemon_cli, "PROTECTED_HOMES", (str(home),))
    out = io.StringIO()
    assert main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir", "",
                 "--config-file", "", "--oomkit", str(script)], out=out) == 0
    text = (tmp_path / "unit" / "oomkit.service").read_text()
    assert "\nProtectHome=read-only\n" in text and "ProtectHome=yes" not in text
    said = out.getvalue()
    assert f"note: {script}, {python} is under {home}, which ProtectHome=yes hides" in said
    # the same oomkit elsewhere: the shipped ProtectHome=yes
    monkeypatch.setattr(daemon_cli, "PROTECTED_HOMES", (str(tmp_path / "elsewhere"),))
    out = io.StringIO()
    assert main(["install-unit", "--unit-dir", str(tmp_path / "unit"), "--man-dir", "",
                 "--config-file", "", "--oomkit", str(script)], out=out) == 0
    assert "\nProtectHome=yes\n" in (tmp_path / "unit" / "oomkit.service").read_text()
    assert "ProtectHome" not in out.getvalue()
