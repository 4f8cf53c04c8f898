"""Scenario parsing: strict sizes and durations, errors that name file, line, entry, key."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomkit.errors import ConfigError
from oomkit.kernel.sim import load_scenario, parse_scenario
from oomkit.units import parse_duration_ns, parse_limit, parse_rate, parse_size

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[machine]
memory = "1G"
duration = "20s"

[[cgroup]]
path = "/oom_test"
"memory.max" = "80M"
"memory.swap.max" = "0"

[[process]]
name = "cg1"
cgroup = "/oom_test/cg1"
oom_score_adj = 1000
program = [ { op = "alloc", kind = "anon", size = "10M" }, { op = "sleep" } ]
"""


def test_sizes_and_durations() -> None:
    assert parse_size("80M") == 80 << 20
    assert parse_size("1G") == 1 << 30
    assert parse_size("4096") == 4096
    assert parse_size("1.5G") == 3 << 29
    assert parse_limit("max") is None
    assert parse_duration_ns("100ms") == 100_000_000
    assert parse_duration_ns("2s") == 2_000_000_000
    assert parse_duration_ns("1m") == 60_000_000_000
    assert parse_rate("100M/s") == 100 << 20
    for bad in ("80MB/s", "-1", "12X", "", "1.5"):
        with pytest.raises(ValueError):
            parse_size(bad)
    for bad in ("10", "5 sec", "ms"):
        with pytest.raises(ValueError):
            parse_duration_ns(bad)


def test_good_scenario() -> None:
    s = parse_scenario(GOOD, "good.toml")
    assert s.machine.memory == 1 << 30
    assert s.cgroups[0].memory_max == 80 << 20 and s.cgroups[0].swap_max == 0
    assert s.processes[0].oom_score_adj == 1000
    assert [st.op for st in s.processes[0].program] == ["alloc", "sleep"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (('size = "10M"', 'size = "10Q"'),
         'bad.toml:15: process "cg1", program step 1 (alloc), key \'size\''),
        (('op = "sleep"', 'op = "slep"'),
         'bad.toml:15: process "cg1", program step 2, key \'op\': unknown op \'slep\''),
        (('"memory.max" = "80M"', '"memory.maxx" = "80M"'),
         "bad.toml:8: cgroup[1], key 'memory.maxx': unknown key"),
        (('duration = "20s"', 'duration = "20"'),
         "bad.toml:4: [machine], key 'duration'"),
        (('oom_score_adj = 1000', 'oom_score_adj = 1001'),
         'bad.toml:14: process "cg1", key \'oom_score_adj\': must be between -1000 and 1000'),
        (('cgroup = "/oom_test/cg1"', 'cgroup = "oom_test"'),
         'bad.toml:13: process "cg1", key \'cgroup\''),
    ],
)
def test_errors_name_file_line_entry_and_key(edit: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "bad.toml")
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_scenario("[machine\n", "x.toml")
    with pytest.raises(ConfigError, match="cannot read scenario"):
        load_scenario(tmp_path / "nope.toml")


def test_every_example_loads() -> None:
    examples = sorted((REPO / "examples").glob("*.toml"))
    assert len(examples) >= 5
    for path in examples:
        s = load_scenario(path)
        assert s.processes, path


def test_a_bad_step_in_a_long_program_names_its_own_line() -> None:
    text = """[machine]
memory = "1G"

[[process]]
name = "p"
program = [
  { op = "alloc", kind = "anon", size = "10M" },
  { op = "work", duration = "1s" },
  { op = "alloc", kind = "anon", size = "lots" },
]
"""
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "p.toml")
    assert str(err.value).startswith(
        "p.toml:9: process \"p\", program step 3 (alloc), key 'size'"), str(err.value)
