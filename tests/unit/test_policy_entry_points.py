"""A package that ships policies through the ``oomkit.policies`` entry-point group is found
by name, through the real importlib.metadata discovery (an installed distribution's
dist-info on sys.path, as pip leaves it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oomkit import OomOps
from oomkit.errors import ConfigError
from oomkit.policy_loader import load_oom, resolve


def install_fake_dist(root: Path) -> None:
    (root / "acme_oom.py").write_text(
        "from oomkit import OomOps\n\n"
        "class Spare(OomOps):\n"
        "    name = 'acme_spare'\n"
    )
    info = root / "acme_oom-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-oom\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[oomkit.policies]\nacme_spare = acme_oom:Spare\n")


def test_an_installed_package_ships_a_policy(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown policy 'acme_spare'"):
        resolve("acme_spare")
    install_fake_dist(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ops = load_oom("acme_spare")
    assert isinstance(ops, OomOps) and ops.name == "acme_spare"
    monkeypatch.delitem(sys.modules, "acme_oom", raising=False)


def test_oomkit_policies_lists_kinds_arguments_and_installed_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from oomkit.cli import main

    install_fake_dist(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = io.StringIO()
    assert main(["policies"], out) == 0
    text = out.getvalue()
    monkeypatch.delitem(sys.modules, "acme_oom", raising=False)
    assert "kill_cause        oom " in text and "pressure_guard    psi " in text
    assert "min_victim (size) = 4M" in text and "threshold (duration) = 500ms" in text
    assert 'paths (list[str]) = ["/dev/shm"]' in text  # as a config writes it
    assert "acme_spare        oom " in text and "[package acme-oom: acme_oom:Spare]" in text
