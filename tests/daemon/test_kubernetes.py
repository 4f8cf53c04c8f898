"""packaging/kubernetes and the Containerfile: the manifest validated, the pod-security
labels, both kubelet cgroup drivers, a reload that reaches the daemon."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.daemon import service
from oomkit.daemon.eventlog import read_events
from oomkit.meta import package_version

from .conftest import Setup

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "packaging" / "kubernetes" / "oomkit-daemonset.yaml"


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def configmap_config() -> str:
    m = re.search(r"  oomkit.toml: \|\n((?:    .*\n|\n)+)", MANIFEST.read_text())
    assert m is not None
    return "\n".join(line[4:] for line in m.group(1).splitlines()) + "\n"


def test_kubernetes_validate_strict() -> None:
    tool = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent /
                                                      "kubernetes-validate")
    if not os.access(tool, os.X_OK):
        pytest.skip("kubernetes-validate not installed (the dev extra of pyproject.toml)")
    r = subprocess.run([tool, "--strict", "--quiet", str(MANIFEST)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_pod_security_labels_and_the_command() -> None:
    text = MANIFEST.read_text()
    assert "pod-security.kubernetes.io/enforce: privileged" in text
    assert f"image: oomkit:{package_version()}" in text
    command = re.search(r"command: (\[.*\])", text)
    assert command is not None and "--watch-config" in command.group(1)
    assert "--quiet" not in command.group(1)
    assert "kill -HUP 1" not in text.replace("not `kill -HUP 1`", "")


def test_the_containerfile_builds_from_this_repository() -> None:
    text = (REPO / "Containerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    assert "pip wheel --no-cache-dir --no-deps" in text  # as test_wheel.py builds it
    assert 'ENTRYPOINT ["oomkit"]' in text


@pytest.mark.parametrize(("driver", "made"), [("systemd", "kubepods.slice"),
                                               ("cgroupfs", "kubepods")])
def test_both_cgroup_drivers(tmp_path: Path, driver: str, made: str) -> None:
    root = tmp_path / "cgroup"  # a v2 layout: cgroup.procs at the root
    (root / made).mkdir(parents=True)
    (root / "cgroup.procs").write_text("")
    config = configmap_config().replace('"/host/sys/fs/cgroup"', f'"{root}"')
    path = tmp_path / "oomkit.toml"
    path.write_text(config)
    code, text = cli("check-config", str(path))
    assert code == 0, text
    assert f"oom  largest_leaf (LargestLeaf) /{made} (the first that exists of" in text


def test_watch_config_reloads_when_the_mounted_file_is_swapped(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """kubelet updates a ConfigMap volume by pointing ..data at a new directory."""
    monkeypatch.setattr(service, "CONFIG_CHECK_S", 0.02)
    mount = setup.tmp / "configmap"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..v1" / "oomkit.toml").write_text(setup.config.read_text())
    (mount / "..data").symlink_to("..v1")
    (mount / "oomkit.toml").symlink_to("..data/oomkit.toml")
    d = setup.daemon()
    d._watch_config = str(mount / "oomkit.toml")

    def update() -> None:
        (mount / "..v2").mkdir()
        (mount / "..v2" / "oomkit.toml").write_text(setup.config.read_text() + "\n# v2\n")
        (mount / "..data_tmp").symlink_to("..v2")
        os.replace(mount / "..data_tmp", mount / "..data")
        time.sleep(0.3)  # the housekeeper's next wake sees it

    setup.at(1.0, update)
    d.start()
    assert d.run() == 0
    assert d.reloads == 1
    assert [r["action"] for r in setup.records("daemon")] == ["start", "reload", "stop"]


def test_oomkit_reload_signals_the_pid_in_the_status_file(tmp_path: Path) -> None:
    config = tmp_path / "oomkit.toml"
    config.write_text('[metrics]\nlisten = "127.0.0.1:0"\n\n[[oom]]\npolicy = "largest_leaf"\n')
    state = tmp_path / "state"
    daemon = subprocess.Popen([sys.executable, "-m", "oomkit", "run", "--dry-run", "--quiet",
                               "--config", str(config), "--state-dir", str(state)],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(r.get("action") == "start" for r in read_events(
                str(state / "events.jsonl"))):
            assert daemon.poll() is None and time.monotonic() < deadline, \
                daemon.stderr.read() if daemon.stderr else ""
            time.sleep(0.1)
        code, text = cli("reload", "--state-dir", str(state))
        assert code == 0 and f"pid {daemon.pid}" in text
        while not any(r.get("action") == "reload" for r in read_events(
                str(state / "events.jsonl"))):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert cli("reload", "--state-dir", str(state))[0] == 3  # stopped: nothing to reload
