"""The [system] table: the system-wide MemAvailable watch's thresholds."""

from __future__ import annotations

import pytest

from oomkit.daemon.config import SystemSettings, parse_config
from oomkit.errors import ConfigError

MiB = 1 << 20


def test_defaults_are_earlyoom_like() -> None:
    s = parse_config("", "c.toml").system
    assert s == SystemSettings(0.05, 0.10, 0.25, 6000 * MiB)


def test_shares_sizes_durations_and_rates() -> None:
    cfg = parse_config(
        '[system]\nmin_available = "64M"\nmin_swap_free = "5%"\nlead = "100ms"\n'
        'max_fill_rate = "2G/s"\n',
        "c.toml",
    )
    assert cfg.system == SystemSettings(64 * MiB, 0.05, 0.1, 2048 * MiB)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('min_available = "150%"', "less than 100%"),
        ('min_available = "lots"', "a share like 5% or a size like 64M"),
        ('lead = "20s"', "at most 10s"),
        ('max_fill_rate = "6G"', "a rate like 100M/s"),
        ('min_avail = "5%"', "min_avail"),
    ],
)
def test_bad_values_are_one_line_errors_with_the_key(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[system]\n{line}\n", "c.toml")
    text = str(exc.value)
    assert "\n" not in text and "c.toml" in text and message in text


def test_a_change_needs_a_restart() -> None:
    old = parse_config("", "c.toml")
    new = parse_config('[system]\nmin_available = "10%"\n', "c.toml")
    assert old.restart_only_changes(new) == ["system"]
