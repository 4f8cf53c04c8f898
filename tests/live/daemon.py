"""``oomkit run`` as the fault-injection tests start it: a config over a throwaway memcg
tree, the daemon as a subprocess, its event log read back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from oomkit.kernel.linux.watchdog import HUNG_AFTER_ENV


def policy_file(tmp_path: Path, name: str, source: str) -> Path:
    """A policy file the daemon accepts (root's, not writable by others)."""
    os.chmod(tmp_path, 0o755)
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    os.chmod(path, 0o644)
    return path


def config(tmp_path: Path, root: Path, oom: str, *, daemon: str = "",
           metrics: str = "") -> Path:
    """``oomkit.toml`` with its state in tmp_path/run and log in tmp_path/log/events.jsonl;
    ``oom``: the [[oom]] tables, ``daemon``: more [daemon] keys."""
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "oomkit.toml"
    path.write_text(
        f'[daemon]\ncgroup_root = "{root}"\nstate_file = "{tmp_path}/run/restore.json"\n'
        f'event_log = "{tmp_path}/log/events.jsonl"\nstatus_file = ""\nmlock = false\n'
        f'{daemon}[metrics]\nlisten = "{metrics}"\n{oom}')
    return path


def start(config_file: Path, *, hung_after: float | None = None,
          stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """``oomkit run --config``; ``hung_after``: the watchdog's deadline (None: what the
    config's budgets make it)."""
    env = {k: v for k, v in os.environ.items() if k != HUNG_AFTER_ENV}
    if hung_after is not None:
        env[HUNG_AFTER_ENV] = str(hung_after)
    return subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config_file), "--quiet"], stderr=stderr, env=env)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """The end of every test, also after a failure: a stopped daemon is continued first."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait()


def ooms(tmp_path: Path) -> list[dict[str, Any]]:
    """The ``oom`` records of the event log in tmp_path/log."""
    log = tmp_path / "log" / "events.jsonl"
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "oom"]
