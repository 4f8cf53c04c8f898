"""The daemon's config file: every key checked, every error naming the key and the line."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from oomkit.daemon.config import (
    Config,
    GuardMargin,
    Listen,
    load_config,
    load_policies,
    parse_config,
    parse_listen,
    with_cli,
)
from oomkit.errors import ConfigError
from oomkit.policies.kill_cgroup import KillCgroup
from oomkit.policies.largest_leaf import LargestLeaf
from oomkit.policies.psi_declare import PsiDeclare

REPO = Path(__file__).resolve().parents[2]

FULL = """\
[daemon]
dry_run = false
budget = "250ms"
max_failures = 5
event_log = "/var/log/oomkit/events.jsonl"
event_log_max = "1M"
event_log_keep = 3
status_file = "/run/oomkit/status.json"

[guard]
margin = "64M"

[metrics]
listen = "[::1]:9100"

[[oom]]
policy = "largest_leaf"
cgroup = "/system.slice"

[[oom]]
policy = "kill_cgroup"
budget = "100ms"

[[psi]]
policy = "psi_declare"
args = { threshold_ms = 300, window_ms = 2000 }
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml")
    return str(info.value)


def test_defaults() -> None:
    cfg = parse_config("", "c.toml")
    assert cfg.daemon.budget_s == 0.5
    assert cfg.daemon.max_failures == 3
    assert cfg.daemon.event_log == "/var/log/oomkit/events.jsonl"
    assert cfg.daemon.event_log_max == 10 << 20
    assert cfg.daemon.event_log_keep == 5
    assert cfg.daemon.status_file == "/run/oomkit/status.json"
    assert cfg.metrics == Listen("127.0.0.1", 9727)
    assert cfg.guard == GuardMargin(percent=5.0)
    assert cfg.oom == () and cfg.psi == ()
    assert not cfg.daemon.dry_run


def test_a_full_config() -> None:
    cfg = parse_config(FULL, "c.toml")
    assert cfg.daemon.budget_s == 0.25
    assert cfg.daemon.max_failures == 5
    assert cfg.daemon.event_log_max == 1 << 20
    assert cfg.daemon.event_log_keep == 3
    assert cfg.guard == GuardMargin(percent=None, nbytes=64 << 20)
    assert cfg.metrics == Listen("::1", 9100)
    assert [(e.policy, e.cgroup, e.budget_s) for e in cfg.oom] == [
        ("largest_leaf", "/system.slice", None), ("kill_cgroup", None, 0.1)]
    assert cfg.oom[0].line == 16 and cfg.oom[1].line == 20
    assert dict(cfg.psi[0].args) == {"threshold_ms": 300, "window_ms": 2000}


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load_config(str(REPO / "packaging" / "oomkit.toml"))
    load_policies(cfg, secure=False)


@pytest.mark.parametrize(("text", "where", "key"), [
    ('[daemon]\nbudget = "fast"\n', ":2:", "key 'daemon.budget'"),
    ('[daemon]\n\nbudget = 5\n', ":3:", "key 'daemon.budget'"),
    ('[daemon]\nbudget = "0ms"\n', ":2:", "key 'daemon.budget'"),
    ('[daemon]\nbudget = "2m"\n', ":2:", "key 'daemon.budget'"),
    ('[daemon]\nmax_failures = 0\n', ":2:", "key 'daemon.max_failures'"),
    ('[daemon]\nmax_failures = true\n', ":2:", "key 'daemon.max_failures'"),
    ('[daemon]\nevent_log = "relative.jsonl"\n', ":2:", "key 'daemon.event_log'"),
    ('[daemon]\nevent_log_max = "10Q"\n', ":2:", "key 'daemon.event_log_max'"),
    ('[daemon]\nevent_log_max = "1K"\n', ":2:", "key 'daemon.event_log_max'"),
    ('[daemon]\nevent_log_keep = 0\n', ":2:", "key 'daemon.event_log_keep'"),
    ('[daemon]\ndry_run = "yes"\n', ":2:", "key 'daemon.dry_run'"),
    ('[daemon]\nbudgte = "1s"\n', ":2:", "key 'daemon.budgte'"),
    ('[guard]\nmargin = "60%"\n', ":2:", "key 'guard.margin'"),
    ('[guard]\nmargin = "lots"\n', ":2:", "key 'guard.margin'"),
    ('[metrics]\nlisten = "9727"\n', ":2:", "key 'metrics.listen'"),
    ('[metrics]\nlisten = "127.0.0.1:99999"\n', ":2:", "key 'metrics.listen'"),
    ('[metrix]\n', ":1:", "key 'metrix'"),
    ('daemon = 3\n', ":1:", "key 'daemon'"),
    ('[[oom]]\ncgroup = "/a"\n', ":1:", "[[oom]] 1"),
    ('[[oom]]\npolicy = "x"\n\n[[oom]]\npolicy = "y"\ncgroup = "a/b"\n', ":6:",
     "[[oom]] 2, key 'cgroup'"),
    ('[[oom]]\npolicy = "x"\ncgroup = "/a/../b"\n', ":3:", "[[oom]] 1, key 'cgroup'"),
    ('[[oom]]\npolicy = "x"\nargs = 3\n', ":3:", "[[oom]] 1, key 'args'"),
    ('[[oom]]\npolicy = "x"\nargs = { "not a name" = 1 }\n', ":3:", "[[oom]] 1, key 'args'"),
    ('[[oom]]\npolicy = "x"\nbudget = "soon"\n', ":3:", "[[oom]] 1, key 'budget'"),
    ('[[oom]]\npolicy = "x"\nwhere = "/a"\n', ":3:", "[[oom]] 1, key 'where'"),
    ('[[oom]]\npolicy = ""\n', ":2:", "[[oom]] 1, key 'policy'"),
    ('[[psi]]\nargs = {}\n', ":1:", "[[psi]] 1"),
    ('[[psi]]\npolicy = "p"\n[[psi]]\npolicy = "q"\ncgroup = "/x"\n', ":5:",
     "[[psi]] 2, key 'cgroup'"),
    ('oom = 1\n', ":1:", "key 'oom'"),
])
def test_errors_name_the_line_and_the_key(text: str, where: str, key: str) -> None:
    msg = error_of(text)
    assert msg.startswith("c.toml" + where), msg
    assert key in msg, msg


def test_two_handlers_for_one_cgroup_are_refused_with_both_lines() -> None:
    text = ('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/a"\n\n'
            '[[oom]]\npolicy = "kill_cgroup"\ncgroup = "/a"\n')
    msg = error_of(text)
    assert msg.startswith("c.toml:7: [[oom]] 2, key 'cgroup'")
    assert "line 1" in msg


def test_two_system_wide_handlers_are_refused() -> None:
    msg = error_of('[[oom]]\npolicy = "a"\n[[oom]]\npolicy = "b"\n')
    assert msg.startswith("c.toml:3: [[oom]] 2") and "system-wide" in msg


def test_a_toml_syntax_error_names_the_line() -> None:
    msg = error_of('[daemon]\nbudget = "1s\n')
    assert msg.startswith("c.toml:2: not valid TOML")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(bad))


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9727", Listen("127.0.0.1", 9727)),
    ("localhost:80", Listen("localhost", 80)),
    ("[::1]:9727", Listen("::1", 9727)),
    ("0.0.0.0:0", Listen("0.0.0.0", 0)),
    ("", None),
])
def test_listen(text: str, expected: Listen | None) -> None:
    assert parse_listen(text) == expected


def test_listen_renders_back() -> None:
    assert str(Listen("::1", 9)) == "[::1]:9"
    assert str(Listen("127.0.0.1", 9)) == "127.0.0.1:9"


def test_guard_margin() -> None:
    assert GuardMargin(percent=5.0).of(100 << 20) == 5 << 20
    assert GuardMargin(percent=None, nbytes=4096).of(100 << 20) == 4096


def test_guard_margin_in_mb_says_which_m() -> None:
    """"64MB" in the margin gets the hint every other size key gives."""
    with pytest.raises(ConfigError, match=r"key 'guard.margin': '64MB' is ambiguous"):
        parse_config('[guard]\nmargin = "64MB"\n', "c.toml")


# -- policies ----------------------------------------------------------------------------------


def test_policies_are_loaded_with_their_arguments() -> None:
    cfg = parse_config(FULL, "c.toml")
    loaded = load_policies(cfg, secure=True)
    assert isinstance(loaded.oom[0][1], LargestLeaf)
    assert isinstance(loaded.oom[1][1], KillCgroup)
    psi = loaded.psi[0][1]
    assert isinstance(psi, PsiDeclare)
    assert psi.threshold_us == 300_000


def test_an_unknown_policy_names_the_policy_line() -> None:
    cfg = parse_config('[daemon]\n\n[[oom]]\npolicy = "no_such_thing"\n', "c.toml")
    with pytest.raises(ConfigError, match=r"^c\.toml:4: \[\[oom\]\] 1, key 'policy': unknown"):
        load_policies(cfg)


def test_bad_arguments_name_the_args_line() -> None:
    cfg = parse_config('[[psi]]\npolicy = "psi_declare"\n\nargs = { threshold = 1 }\n', "c.toml")
    with pytest.raises(ConfigError, match=r"^c\.toml:4: \[\[psi\]\] 1, key 'args.threshold': "
                                          r".*takes no such argument \(it takes: threshold_ms"):
        load_policies(cfg)


@pytest.mark.parametrize(("args", "line", "key", "why"), [
    ('{ paths = "/dev/shm" }', 3, "paths", "expected a list"),
    ('{ paths = ["/a"], target = "64 megs" }', 3, "target", "expected a size like 64M"),
    ('{ paths = [1] }', 3, "paths", "expected a string, got 1"),
    ('{ target = true }', 3, "target", "expected a size like 64M, 64Mi or 1G (powers of 1024), "
                                         "got True"),
    ('{ target = 0 }', 3, "target", "a size of at least 1 byte, got 0"),
])
def test_policy_arguments_are_checked_against_the_signature(args: str, line: int, key: str,
                                                             why: str) -> None:
    cfg = parse_config(f'[[oom]]\npolicy = "tmpfs_cleanup"\nargs = {args}\n', "c.toml")
    with pytest.raises(ConfigError) as info:
        load_policies(cfg, secure=False)
    msg = str(info.value)
    assert msg.startswith(f"c.toml:{line}: [[oom]] 1, key 'args.{key}': ") and why in msg


def test_sizes_and_durations_in_arguments_take_the_configs_units() -> None:
    cfg = parse_config('[[oom]]\npolicy = "kill_cause"\n[oom.args]\nmin_victim = "1M"\n\n'
                       '[[psi]]\npolicy = "pressure_guard"\n'
                       'args = { threshold = "300ms", window = "4s", min_free = "5%" }\n')
    loaded = load_policies(cfg, secure=False)
    oom = loaded.oom[0][1]
    psi = loaded.psi[0][1]
    assert oom.min_victim == 1 << 20  # type: ignore[attr-defined]
    assert (psi.threshold_us, psi.window_us, psi.min_free) == (  # type: ignore[attr-defined]
        300_000, 4_000_000, 5.0)
    bad = parse_config('[[psi]]\npolicy = "pressure_guard"\n\n'
                       'args = { window = "4 seconds" }\n', "c.toml")
    with pytest.raises(ConfigError, match=r"^c\.toml:4: \[\[psi\]\] 1, key 'args.window': .*"
                                          r"expected a duration like 500ms"):
        load_policies(bad, secure=False)


def _policy_file(directory: Path, mode: int) -> Path:
    directory.mkdir(mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    f = directory / "mine.py"
    f.write_text("from oomkit import OomOps\n\nclass Mine(OomOps):\n    name = 'mine'\n")
    os.chmod(f, mode)
    return f


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned policy files need root")
def test_a_root_owned_policy_file_loads(tmp_path: Path) -> None:
    f = _policy_file(tmp_path / "pol", 0o644)
    cfg = parse_config(f'[[oom]]\npolicy = "{f}:Mine"\n', "c.toml")
    assert type(load_policies(cfg, secure=True).oom[0][1]).__name__ == "Mine"


@pytest.mark.skipif(os.geteuid() != 0, reason="root-owned policy files need root")
@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_group_or_world_writable_policy_file_is_refused(tmp_path: Path, mode: int) -> None:
    f = _policy_file(tmp_path / "pol", mode)
    cfg = parse_config(f'# policies\n[[oom]]\npolicy = "{f}:Mine"\n', "c.toml")
    with pytest.raises(ConfigError) as info:
        load_policies(cfg, secure=True)
    msg = str(info.value)
    assert msg.startswith("c.toml:3: [[oom]] 1, key 'policy'")
    assert "writable by group or others" in msg and "chmod go-w" in msg
    assert stat.filemode(mode | stat.S_IFREG) in msg


def test_a_policy_file_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    f = _policy_file(tmp_path / "pol", 0o644)
    if os.geteuid() == 0:
        os.chown(f, 12345, 12345)
    cfg = parse_config(f'[[oom]]\npolicy = "{f}:Mine"\n', "c.toml")
    with pytest.raises(ConfigError, match=r"^c\.toml:2: .*not root"):
        load_policies(cfg, secure=True)


def test_entry_point_policies_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    from oomkit import policy_loader

    ep = md.EntryPoint("shipped", "oomkit.policies.kill_cgroup:KillCgroup",
                       policy_loader.ENTRY_POINT_GROUP)

    def fake(group: str) -> list[md.EntryPoint]:
        return [ep] if group == policy_loader.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(md, "entry_points", lambda group="": fake(group))
    cfg = parse_config('[[oom]]\npolicy = "shipped"\n', "c.toml")
    assert isinstance(load_policies(cfg).oom[0][1], KillCgroup)


# -- command-line additions --------------------------------------------------------------------


def test_with_cli_adds_policies_and_switches() -> None:
    cfg = parse_config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/a"\n', "c.toml")
    out = with_cli(cfg, ["kill_cgroup@/b", "largest_leaf"], ["psi_declare"], dry_run=True,
                   budget_s=0.2)
    assert [e.slot for e in out.oom] == ["/a", "/b", "system-wide"]
    assert out.oom[1].origin == "--oom-policy kill_cgroup@/b"
    assert out.daemon.dry_run and out.daemon.budget_s == 0.2
    assert out.psi[0].policy == "psi_declare"


def test_with_cli_refuses_a_taken_slot_naming_the_config_line() -> None:
    cfg = parse_config('\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/a"\n', "c.toml")
    with pytest.raises(ConfigError, match=re.escape("/a already has a handler (largest_leaf, "
                                                    "c.toml:2)")):
        with_cli(cfg, ["kill_cgroup@/a"], [])


def test_a_bad_command_line_policy_names_the_option() -> None:
    cfg = with_cli(Config(), ["nope@/x"], [])
    with pytest.raises(ConfigError, match=r"^--oom-policy nope@/x: unknown policy"):
        load_policies(cfg)


def test_restart_only_settings() -> None:
    a = parse_config("", "c.toml")
    b = parse_config('[daemon]\ndry_run = true\n[guard]\nmargin = "10%"\n', "c.toml")
    assert a.restart_only_changes(b) == ["daemon.dry_run", "guard.margin"]
    assert a.restart_only_changes(parse_config('[daemon]\nbudget = "1s"\n', "c")) == []


def test_the_declared_oom_rules_are_daemon_keys() -> None:
    cfg = parse_config('[daemon]\npost_action_delay = "15s"\nmin_victim = "4M"\n')
    assert (cfg.daemon.post_action_delay_s, cfg.daemon.min_victim) == (15.0, 4 << 20)
    assert parse_config('[daemon]\npost_action_delay = "0s"\n').daemon.post_action_delay_s == 0
    with pytest.raises(ConfigError, match=r":2: key 'daemon.min_victim'"):
        parse_config('[daemon]\nmin_victim = "lots"\n', "c.toml")


def test_run_with_nothing_uses_etc_or_else_the_recommended_config(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import argparse

    from oomkit import daemon_cli
    from oomkit.daemon.config import recommended_config

    args = argparse.Namespace(config=None, oom_policy=[], psi_policy=[])
    monkeypatch.setattr(daemon_cli, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
    assert daemon_cli._config_path(args) == recommended_config()
    load_policies(load_config(recommended_config()), secure=False)
    present = tmp_path / "oomkit.toml"
    present.write_text("")
    monkeypatch.setattr(daemon_cli, "DEFAULT_CONFIG", str(present))
    assert daemon_cli._config_path(args) == str(present)
    args.psi_policy = ["pressure_guard"]
    assert daemon_cli._config_path(args) is None


@pytest.mark.parametrize("table", ["[[oom]]\npolicy = \"largest_leaf\"",
                                   "[[psi]]\npolicy = \"psi_declare\""])
def test_a_handler_budget_has_the_daemon_budgets_bounds(table: str) -> None:
    with pytest.raises(ConfigError, match=r":3: .*key 'budget': must be at most 60s"):
        parse_config(f'{table}\nbudget = "1h"\n', "c.toml")
    assert parse_config(f'{table}\nbudget = "60s"\n', "c.toml") is not None
