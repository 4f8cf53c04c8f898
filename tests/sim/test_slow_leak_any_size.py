"""QA Q17: a leak of a few MB/s beside a bigger steady service is the cause whatever the
machine's size. The main adder (cause.adds_most) needed 1/16 of the domain added in the
30-60 s baseline: 4G on 64G, more than a 40M/s leak adds in a minute, so the steady 40G
database died (the kernel's choice); now ADDED_RATE (1M/s) over the baseline is enough
when the floor by size is higher."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_with_config

REPO = Path(__file__).resolve().parents[2]

SERVER = """
name = "a steady database beside a slow leak"
[machine]
memory = "{memory}"
swap = "0"
duration = "{duration}"
seed = 16
[[process]]
name = "db"
cgroup = "/system.slice/db.service"
program = [ {{ op = "alloc", kind = "anon", size = "{db}", rate = "4G/s" }},
            {{ op = "work", duration = "{duration}" }} ]
[[process]]
name = "api"
cgroup = "/system.slice/api.service"
program = [ {{ op = "alloc", kind = "anon", size = "{api}", rate = "2G/s" }},
            {{ op = "alloc", kind = "anon", size = "{memory}", rate = "{leak}" }},
            {{ op = "sleep" }} ]
"""

POD = """
name = "a pod at its limit: the main container steady, the sidecar leaking 2M/s"
[machine]
memory = "16G"
swap = "0"
duration = "500s"
seed = 17
[[cgroup]]
path = "/kubepods/pod1"
"memory.max" = "2G"
"memory.swap.max" = "0"
[[process]]
name = "app"
cgroup = "/kubepods/pod1/app"
program = [ { op = "alloc", kind = "anon", size = "1200M", rate = "1G/s" },
            { op = "work", duration = "500s" } ]
[[process]]
name = "envoy"
cgroup = "/kubepods/pod1/sidecar"
program = [ { op = "alloc", kind = "anon", size = "100M" },
            { op = "alloc", kind = "anon", size = "2G", rate = "2M/s" }, { op = "sleep" } ]
"""


@pytest.mark.parametrize(("memory", "db", "api", "leak", "duration"), [
    ("64G", "40G", "10G", "40M/s", "600s"),
    ("16G", "10G", "2500M", "10M/s", "600s"),
    ("4G", "2500M", "300M", "3M/s", "600s"),
])
def test_the_slow_leak_dies_not_the_bigger_steady_database(
        tmp_path: Path, memory: str, db: str, api: str, leak: str, duration: str) -> None:
    scen = tmp_path / "server.toml"
    scen.write_text(SERVER.format(memory=memory, db=db, api=api, leak=leak,
                                  duration=duration))
    out = run_with_config(scen, REPO / "packaging" / "oomkit.toml", tmp_path)
    assert out.killed[:1] == ["api"], out.killed
    assert out.alive("db")
    reason = out.ooms[0]["victims"][0]["reason"]
    assert "the cgroup added" in reason and "over half (ahead of any steady cgroup)" in reason
    assert "runner-up /system.slice/db.service: steady, larger but ranked below it" in reason


def test_a_sidecar_leaking_2m_a_second_dies_not_the_pods_app(tmp_path: Path) -> None:
    scen = tmp_path / "pod.toml"
    scen.write_text(POD)
    out = run_with_config(scen, REPO / "packaging" / "oomkit.toml", tmp_path)
    assert out.ooms[0]["memcg"] == "/kubepods/pod1"
    assert out.killed[:1] == ["envoy"], out.killed
    assert out.alive("app")
