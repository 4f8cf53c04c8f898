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
from dataclasses import fields
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.daemon import service
from oomkit.daemon.config import Config, load_config, parse_config
from oomkit.daemon.eventlog import read_events
from oomkit.meta import package_version
from tests.conftest import missing_checker

from ..sim.conftest import run_with_config
from ..sim.test_cases import CASES, EXPECT
from .conftest import Setup

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "packaging" / "kubernetes" / "oomkit-daemonset.yaml"
RECOMMENDED = REPO / "packaging" / "oomkit.toml"
#: The only place a ConfigMap handler may sit apart from the recommended config's: the
#: pods' cgroup under either kubelet cgroup driver (documented in the ConfigMap).
KUBEPODS = ("/kubepods.slice", "/kubepods")
#: The node's paths: where the pod finds the node's files, not how it decides.
NODE_PATHS = ("event_log", "status_file", "state_file", "cgroup_root")
#: The Kubernetes cases (tests/sim/cases): a node OOM with a sidecar at adj 999, a fork
#: bomb in a sidecar, a cache-heavy pod at its limit, QoS classes on a node OOM.
KUBERNETES_CASES = ("k07_fork_bomb_sidecar", "k15_cache_heavy_in_pod",
                    "k22_node_oom_qos_classes", "k23_sidecar_with_high_adj")


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def configmap_config() -> str:
    m = re.search(r"  oomkit.toml: \|\n((?:    .*\n|\n)+)", MANIFEST.read_text())
    assert m is not None
    return "\n".join(line[4:] for line in m.group(1).splitlines()) + "\n"


def handlers(config: Config) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The [[oom]] and [[psi]] tables as they decide: policy, cgroup (with its
    alternatives), args, budget."""
    return ([(e.policy, (e.cgroup, *e.alternatives), dict(e.args), e.budget_s)
             for e in config.oom],
            [(e.policy, dict(e.args), e.budget_s) for e in config.psi])


def test_the_configmap_parses_with_the_config_loader(tmp_path: Path) -> None:
    path = tmp_path / "oomkit.toml"
    path.write_text(configmap_config())
    config = load_config(str(path))
    assert config.daemon.cgroup_root == "/host/sys/fs/cgroup"
    assert config.oom and config.psi


def test_the_configmap_decides_as_the_recommended_config() -> None:
    """The same handlers, arguments, budgets and decision settings as
    packaging/oomkit.toml: a handler may sit on the pods' cgroup instead, nothing else
    may differ (the two drifted apart once: the ConfigMap ran largest_leaf and
    psi_declare, which fail k07 and k23)."""
    ours = parse_config(configmap_config(), str(MANIFEST))
    recommended = load_config(str(RECOMMENDED))
    (ours_oom, ours_psi), (rec_oom, rec_psi) = handlers(ours), handlers(recommended)
    assert ours_psi == rec_psi
    assert len(ours_oom) == len(rec_oom), (ours_oom, rec_oom)
    for mine, theirs in zip(ours_oom, rec_oom, strict=True):
        if mine[1] == KUBEPODS:
            mine = (mine[0], theirs[1], *mine[2:])
        assert mine == theirs
    for f in fields(ours.daemon):
        if f.name not in NODE_PATHS:
            assert getattr(ours.daemon, f.name) == getattr(recommended.daemon, f.name), f.name
    assert (ours.guard, ours.system, ours.recorder) == (
        recommended.guard, recommended.system, recommended.recorder)


@pytest.mark.parametrize("case", KUBERNETES_CASES)
def test_the_configmap_over_the_kubernetes_cases(case: str, tmp_path: Path) -> None:
    """``oomkit run --sim CASE --config CONFIGMAP`` ends as the case's description says
    (the node's paths moved to tmp_path)."""
    config = tmp_path / "configmap.toml"
    config.write_text(re.sub(r'(?m)^cgroup_root\s*=.*$', 'cgroup_root = ""',
                             configmap_config()))
    die, live, _ = EXPECT[case]
    o = run_with_config(CASES / f"{case}.toml", config, tmp_path)
    killed = set(o.killed)
    assert not killed & live, f"killed {o.killed}"
    assert killed & die, f"killed {o.killed}"


def kubernetes_validate(manifest: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent /
                                                      "kubernetes-validate")
    if not os.access(tool, os.X_OK):
        missing_checker("kubernetes-validate not installed (the dev extra of pyproject.toml)")
    return subprocess.run([tool, "--strict", "--quiet", str(manifest)], capture_output=True,
                          text=True, timeout=300)


def test_kubernetes_validate_strict() -> None:
    r = kubernetes_validate(MANIFEST)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_kubernetes_validate_strict_sees_a_broken_manifest(tmp_path: Path) -> None:
    """The check above can fail: a field the DaemonSet schema does not have (--strict)."""
    broken = tmp_path / "broken.yaml"
    text = MANIFEST.read_text()
    assert "hostPID: true" in text
    broken.write_text(text.replace("hostPID: true", "hostPid: true", 1))
    r = kubernetes_validate(broken)
    assert r.returncode != 0 and "hostPid" in r.stdout + r.stderr, r.stdout + r.stderr


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
    assert "oom  kill_cause (KillCause) system-wide" in text


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
