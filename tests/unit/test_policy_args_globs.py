"""QA Q14: a protect/avoid/prefer (or oomd's cgroups/candidates, systemd-oomd's monitored)
entry is an fnmatch glob on an absolute cgroup path; one that cannot start with "/" can
never match, and used to protect nothing with an "OK" from check-config."""

from __future__ import annotations

import pytest

from oomkit.daemon.config import load_policies, parse_config
from oomkit.errors import ConfigError


@pytest.mark.parametrize(("kind", "policy", "args", "key", "glob"), [
    ("oom", "kill_cause", 'protect = ["system.slice/sshd.service"]', "protect",
     "system.slice/sshd.service"),
    ("oom", "kill_cause", 'avoid = ["/ok", "user.slice"]', "avoid", "user.slice"),
    ("oom", "kill_cause", 'prefer = ["batch.slice/*"]', "prefer", "batch.slice/*"),
    ("oom", "oomd_kill", 'candidates = ["system.slice/*"]', "candidates", "system.slice/*"),
    ("psi", "oomd", 'cgroups = ["user.slice"]', "cgroups", "user.slice"),
    ("psi", "systemd_oomd", 'monitored = ["system.slice"]', "monitored", "system.slice"),
])
def test_a_cgroup_glob_without_a_leading_slash_is_refused(kind: str, policy: str, args: str,
                                                          key: str, glob: str) -> None:
    cfg = parse_config(f'[[{kind}]]\npolicy = "{policy}"\nargs = {{ {args} }}\n', "c.toml")
    with pytest.raises(ConfigError) as info:
        load_policies(cfg, secure=False)
    msg = str(info.value)
    assert msg.startswith(f"c.toml:3: [[{kind}]] 1, key 'args.{key}': "), msg
    assert f"'{glob}' can never match: cgroup paths start with \"/\" (\"/{glob}\"" in msg


def test_absolute_globs_and_wildcards_pass() -> None:
    cfg = parse_config('[[oom]]\npolicy = "kill_cause"\nargs = { protect = '
                       '["/system.slice/sshd.service", "*/sshd.service", "/user.slice/*"] }\n')
    (_entry, ops) = load_policies(cfg, secure=False).oom[0]
    assert ops.prefs.protect == (  # type: ignore[attr-defined]
        "/system.slice/sshd.service", "*/sshd.service", "/user.slice/*")


def test_sizes_take_units_and_plain_numbers_say_theirs() -> None:
    """QA Q16: tmpfs_cleanup's target takes "64M" as min_free beside it does; a number
    whose unit is in its name (threshold_ms) says which unit when given "500ms"."""
    cfg = parse_config('[[oom]]\npolicy = "tmpfs_cleanup"\nargs = { target = "64M" }\n')
    (_entry, ops) = load_policies(cfg, secure=False).oom[0]
    assert ops.target == 64 << 20  # type: ignore[attr-defined]
    cfg = parse_config('[[psi]]\npolicy = "psi_declare"\nargs = { threshold_ms = "500ms" }\n')
    with pytest.raises(ConfigError, match=r"expected a whole number, got '500ms' "
                                          r"\(threshold_ms: a plain number, milliseconds\)"):
        load_policies(cfg, secure=False)
