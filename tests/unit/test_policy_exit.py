"""A policy whose import calls os._exit is one error line, exit 2: check-config and a
reload would otherwise end silently with exit code 0 (issue 14, item 4; found by qa4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

POLICY = "from oomkit import OomOps\n\nclass Mine(OomOps):\n    name = 'mine'\n"


@pytest.mark.parametrize("call", ["import os\nos._exit(0)\n", "import posix\nposix._exit(0)\n"])
def test_check_config_on_a_policy_whose_import_calls_os_exit_fails_with_one_line(
        tmp_path: Path, call: str) -> None:
    pol = tmp_path / "bad.py"
    pol.write_text(call + POLICY)
    config = tmp_path / "oomkit.toml"
    config.write_text(f'[[oom]]\npolicy = "{pol}:Mine"\n')
    proc = subprocess.run([sys.executable, "-m", "oomkit.cli", "check-config", str(config)],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and f"{config}:2:" in lines[0] and "_exit(0)" in lines[0], lines


def test_the_process_goes_on_after_a_policy_called_os_exit_and_exit_works_again(
        tmp_path: Path) -> None:
    pol = tmp_path / "bad.py"
    pol.write_text("import os\nos._exit(0)\n" + POLICY)
    code = (
        "import os, sys\n"
        "from oomkit import policy_loader\n"
        "from oomkit.errors import ConfigError\n"
        "from oomkit.ops import OomOps\n"
        f"try:\n    policy_loader.load({str(pol) + ':Mine'!r}, OomOps)\n"
        "except ConfigError as exc:\n    print('refused:', exc)\n"
        "sys.stdout.flush()\n"
        "os._exit(7)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 7, (proc.returncode, proc.stdout, proc.stderr)
    assert "refused:" in proc.stdout and "os._exit(0)" in proc.stdout, proc.stdout
