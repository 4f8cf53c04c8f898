"""Policy code runs as root: files and modules checked along the whole path (issue 14,
item 6), and nothing a policy's import does ends the caller (item 4)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

import pytest

from oomkit import cli
from oomkit.errors import ConfigError
from oomkit.ops import OomOps
from oomkit.policy_loader import load_oom
from oomkit.trust import check_trusted, read_trusted

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="root-owned files need root")
NOBODY = 65534
POLICY = "from oomkit import OomOps\n\nclass Mine(OomOps):\n    name = 'mine'\n"


def _tree(tmp: Path) -> Path:
    """tmp/a/b/mine.py, all root's, 0755/0644 (tmp itself is pytest's 0700 root dir)."""
    d = tmp / "a" / "b"
    d.mkdir(parents=True)
    for p in (tmp / "a", d):
        os.chmod(p, 0o755)
    f = d / "mine.py"
    f.write_text(POLICY)
    os.chmod(f, 0o644)
    return f


@ROOT_ONLY
def test_a_trusted_policy_file_loads(tmp_path: Path) -> None:
    f = _tree(tmp_path)
    assert isinstance(load_oom(f"{f}:Mine", secure=True), OomOps)
    assert read_trusted(str(f), "x") == POLICY.encode()


@ROOT_ONLY
def test_a_writable_grandparent_is_refused(tmp_path: Path) -> None:
    f = _tree(tmp_path)
    os.chmod(tmp_path / "a", 0o777)  # another user could rename b and put their own there
    with pytest.raises(ConfigError, match=r"/a is writable by group or others"):
        load_oom(f"{f}:Mine", secure=True)
    os.chmod(tmp_path / "a", 0o1777)  # sticky, like /tmp: others cannot rename root's b
    assert isinstance(load_oom(f"{f}:Mine", secure=True), OomOps)


@ROOT_ONLY
def test_a_grandparent_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    f = _tree(tmp_path)
    os.chown(tmp_path / "a", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=r"/a is owned by uid 65534, not root"):
        load_oom(f"{f}:Mine", secure=True)


@ROOT_ONLY
def test_symbolic_links_are_refused_at_every_component(tmp_path: Path) -> None:
    f = _tree(tmp_path)
    (tmp_path / "link.py").symlink_to(f)
    with pytest.raises(ConfigError, match=r"link\.py is a symbolic link"):
        load_oom(f"{tmp_path / 'link.py'}:Mine", secure=True)
    (tmp_path / "dirlink").symlink_to(tmp_path / "a")
    with pytest.raises(ConfigError, match="dirlink is a symbolic link"):
        load_oom(f"{tmp_path / 'dirlink' / 'b' / 'mine.py'}:Mine", secure=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_trusted(str(tmp_path / "dirlink"), "x", is_dir=True)


@ROOT_ONLY
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.py", 0o644)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_oom(f"{tmp_path / 'p.py'}:Mine", secure=True)


@ROOT_ONLY
def test_a_module_from_an_untrusted_path_entry_is_never_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = tmp_path / "cwd"
    evil.mkdir(mode=0o777)
    os.chmod(evil, 0o777)  # like a user's current directory, or a PYTHONPATH entry
    marker = tmp_path / "ran"
    (evil / "oomkit_evil_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n" + POLICY)
    monkeypatch.syspath_prepend(str(evil))
    with pytest.raises(ConfigError, match=r"policy module 'oomkit_evil_mod': .*cwd is "
                                          "writable by group or others"):
        load_oom("oomkit_evil_mod:Mine", secure=True)
    assert not marker.exists() and "oomkit_evil_mod" not in sys.modules
    # a package: its __init__ is checked before anything of it runs
    pkg = evil / "oomkit_evil_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "m.py").write_text(POLICY)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_oom("oomkit_evil_pkg.m:Mine", secure=True)
    assert not marker.exists()
    # the same module where only root can write: loads
    os.chmod(evil, 0o755)
    assert isinstance(load_oom("oomkit_evil_pkg.m:Mine", secure=True), OomOps)
    for name in ("oomkit_evil_pkg", "oomkit_evil_pkg.m", "oomkit_evil_mod"):
        sys.modules.pop(name, None)


# -- item 4: whatever the import does ---------------------------------------------------------


@pytest.mark.parametrize(("body", "shown"), [
    ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("class Odd(BaseException):\n    pass\nraise Odd('odd')\n", "Odd: odd"),
    ("import os\nos.environ['X'] = '1'\nraise GeneratorExit\n", "GeneratorExit"),
])
def test_an_import_that_exits_is_a_config_error(tmp_path: Path, body: str, shown: str) -> None:
    f = tmp_path / "p.py"
    f.write_text(body + POLICY)
    with pytest.raises(ConfigError, match=f"does not import: {shown}"):
        load_oom(f"{f}:Mine")


def test_a_constructor_that_exits_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text(POLICY + "    def __init__(self):\n        raise SystemExit(0)\n")
    with pytest.raises(ConfigError, match="failed to start: SystemExit: 0"):
        load_oom(f"{f}:Mine")


def test_an_import_that_blocks_is_given_up_after_the_deadline(tmp_path: Path) -> None:
    from oomkit.policy_loader import load

    f = tmp_path / "p.py"
    f.write_text("import time\ntime.sleep(30)\n" + POLICY)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not finish importing within 0\.3 s"):
        load(f"{f}:Mine", OomOps, deadline_s=0.3)
    assert time.monotonic() - t0 < 5


def test_check_config_reports_an_exiting_policy(tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text("import sys\nsys.exit(0)\n" + POLICY)
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o755)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[oom]]\npolicy = "{f}:Mine"\n')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(["check-config", str(cfg)], out=io.StringIO())
    assert rc == 2
    line = err.getvalue()
    assert line.count("\n") == 1 and line.startswith(f"oomkit: {cfg}:2: [[oom]] 1, key 'policy'")
    if os.geteuid() == 0:
        assert "SystemExit: 0" in line
