"""The tester's round-3 wrong-victim scenarios (qa-findings-3 Q17, Q13, Q10), copied into
qa3/ and run through the recommended config as a user would (``oomkit run --sim SCEN
--config packaging/oomkit.toml``): the cause dies, not the largest steady process, and a
declared OOM with no cause kills nobody."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from .conftest import run_with_config

REPO = Path(__file__).resolve().parents[2]
RECOMMENDED = REPO / "packaging" / "oomkit.toml"
QA3 = Path(__file__).parent / "qa3"


@pytest.mark.parametrize(("case", "leak", "steady"), [
    ("s16_big_machine_slow_leak", "api", "db"),  # 64G, 40M/s beside a 40G database
    ("s16b_16G_slow_leak", "api", "db"),  # 16G, 10M/s beside 10G
    ("s16c_4G_slow_leak", "api", "db"),  # 4G, 3M/s beside 2.5G
    ("s17_pod_sidecar_leak", "envoy", "app"),  # a pod's limit, 2M/s beside 1.2G
])
def test_a_slow_leak_dies_not_the_bigger_steady_service(case: str, leak: str, steady: str,
                                                         tmp_path: Path) -> None:
    """QA Q17: the leak added all of what was added over the long baseline and still
    adds; below 1/16 of the domain and 1/128 of it a second, it ranked by footprint and
    the steady service died (as the kernel's size rule would have it)."""
    o = run_with_config(QA3 / f"{case}.toml", RECOMMENDED, tmp_path)
    assert o.killed == [leak], o.ooms
    assert o.alive(steady)
    assert "added" in o.ooms[0]["victims"][0]["reason"]


def test_a_startup_spike_with_no_cause_kills_nobody(tmp_path: Path) -> None:
    """QA Q13: the IDE's start-up reads declare the machine's OOM once; nothing grows,
    streams or added memory since the daemon started but the services' own start-up
    fill. The declared OOM is dismissed ("no cause found"), the steady 1.2G service that
    neither stalled nor grew lives."""
    o = run_with_config(QA3 / "s14b_app_start_300M.toml", RECOMMENDED, tmp_path)
    assert o.killed == [], o.ooms
    assert o.ooms and all(e["constraint"] == "DECLARED" for e in o.ooms)
    assert any("no cause found" in e["note"] for e in o.ooms)


def test_a_compositor_burst_does_not_outrank_the_browser_that_holds_the_machine(
        tmp_path: Path) -> None:
    """QA Q10: gnome-shell grows 900M in 9 s beside a 3.3G browser that has held the
    machine since the start: the browser dies, not the session."""
    o = run_with_config(QA3 / "s10_compositor_burst.toml", RECOMMENDED, tmp_path)
    assert o.killed == ["firefox"], o.ooms
    assert o.alive("gnome-shell")
    assert "burst" in o.ooms[0]["victims"][0]["reason"]


@pytest.mark.parametrize("comm", ["gnome-shell", "kwin_wayland", "kwin_x11", "Xorg",
                                  "Xwayland", "sway", "mutter", "plasmashell", "gdm",
                                  "gdm-wayland-session", "sshd", "systemd-journald"])
def test_the_recommended_config_spares_compositors_and_display_servers(comm: str) -> None:
    """QA Q10: protect_comm of the recommended config names the usual compositors and
    display servers (nohang and earlyoom ship such avoid lists)."""
    import re

    config = tomllib.loads(RECOMMENDED.read_text())
    (args,) = [h["args"] for h in config["oom"] if h.get("policy") == "kill_cause"]
    assert re.fullmatch(args["protect_comm"], comm)
    assert not re.fullmatch(args["protect_comm"], "firefox")
