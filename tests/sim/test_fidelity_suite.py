"""scripts/fidelity.py's simulator side runs (the live side needs root and a v1 memcg)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fidelity.py"


def test_the_simulator_side_of_the_suite_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("fidelity", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fidelity"] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--sim-only", "--rows", "leak,high"]) == 0
    out = capsys.readouterr().out
    assert "| victims | not run | leaker |" in out
    assert "cgroup v1 has no memory.high" in out
