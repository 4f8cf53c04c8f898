"""packaging/: the systemd unit, the DaemonSet and the example config stay what we ship."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oomkit.daemon.config import load_policies, parse_config

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (PACKAGING / "oomkit.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_the_unit_has_the_settings_a_root_oom_daemon_needs() -> None:
    u = unit_settings()
    assert u["OOMScoreAdjust"] == ["-1000"]
    assert u["Restart"] == ["always"]
    assert u["ProtectSystem"] == ["strict"]
    assert "/sys/fs/cgroup" in u["ReadWritePaths"][0].split()
    assert "/var/log/oomkit" in u["ReadWritePaths"][0].split()
    assert u["ProtectHome"] == ["yes"] and u["NoNewPrivileges"] == ["yes"]
    assert u["LimitMEMLOCK"] == ["infinity"]
    assert "MemoryMin" in u and "MemoryLow" in u and "CPUWeight" in u
    assert "MemoryMax" not in u
    caps = set(u["CapabilityBoundingSet"][0].split())
    assert {"CAP_KILL", "CAP_IPC_LOCK", "CAP_SYS_RESOURCE"} <= caps
    assert "CAP_SYS_ADMIN" not in caps
    assert u["Type"] == ["notify"]
    assert u["ExecReload"] == ["/usr/local/bin/oomkit reload --config /etc/oomkit/oomkit.toml"]
    assert "ProtectControlGroups" not in u and u["ProtectKernelLogs"] == ["no"]


def test_the_daemonset_has_what_a_fleet_needs() -> None:
    text = (PACKAGING / "kubernetes" / "oomkit-daemonset.yaml").read_text()
    assert re.search(r"^\s+hostPID: true$", text, re.M)
    assert re.search(r"^\s+priorityClassName: system-node-critical$", text, re.M)
    assert 'prometheus.io/scrape: "true"' in text and 'prometheus.io/port: "9727"' in text
    assert re.search(r"path: /sys/fs/cgroup\n\s+type: Directory", text)
    assert '"KILL", "IPC_LOCK", "SYS_RESOURCE"' in text


def test_the_daemonsets_config_is_valid() -> None:
    text = (PACKAGING / "kubernetes" / "oomkit-daemonset.yaml").read_text()
    m = re.search(r"  oomkit.toml: \|\n((?:    .*\n|\n)+)", text)
    assert m is not None
    config = "\n".join(line[4:] for line in m.group(1).splitlines())
    cfg = parse_config(config, "oomkit-daemonset.yaml")
    assert cfg.metrics is not None and cfg.metrics.port == 9727
    load_policies(cfg, secure=False)


@pytest.mark.privileged
def test_the_overhead_bench_runs_and_cleans_up(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the bench needs root")
    from tests.live.conftest import own_memcg_dir

    own = own_memcg_dir()
    if own is None:
        pytest.skip("no memory cgroup of our own")
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "daemon_overhead.py"),
                             "--seconds", "1", "--cgroups", "20", "--settle", "0.2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["oomkit"]["extra"].startswith("watching 21 cgroups")
    assert result["oomkit"]["rss_kib"] > 0
    # Its own memcg (named by its pid) is gone; another bench running beside it may have one.
    assert not (own / f"oomkit-bench-{proc.pid}").exists()


def test_the_recommended_config_ships_inside_the_package() -> None:
    from oomkit.daemon.config import recommended_config

    shipped = Path(recommended_config()).read_text()
    assert shipped == (PACKAGING / "oomkit.toml").read_text(), \
        "copy packaging/oomkit.toml to src/oomkit/data/oomkit.toml"
