"""Budgets are validated and capped everywhere they are given (issue 14, item 3).

A budget is how long the kernel waits for a handler with the OOM killer disabled: nan, inf,
zero, negative or past units.MAX_BUDGET_S is refused with one line and exit code 2.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from oomkit import cli
from oomkit.daemon.config import Config, parse_config, with_cli
from oomkit.errors import ConfigError
from oomkit.units import MAX_BUDGET_S, check_budget_s


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv, out=io.StringIO())
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, err.getvalue()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "61", "1e400", "x", "١"])
def test_command_line_budget_refused(value: str, tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text('[machine]\nduration = "1s"\n')
    for argv in (["simulate", str(scenario), "--budget", value],
                 ["run", "--sim", str(scenario), "--oom-policy", "largest_leaf",
                  "--budget", value]):
        rc, err = _run(argv)
        assert rc == 2, (argv, err)
        assert "--budget" in err.strip().splitlines()[-1], err  # argparse: usage, then it


@pytest.mark.parametrize("where", ["[daemon]\nbudget = {}\n",
                                   '[[oom]]\npolicy = "largest_leaf"\nbudget = {}\n',
                                   '[[psi]]\npolicy = "psi_declare"\nbudget = {}\n'])
@pytest.mark.parametrize("value", ['"1000h"', '"61s"', '"0ms"'])
def test_config_budget_capped_in_every_table(where: str, value: str) -> None:
    text = where.format(value)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.toml")
    msg = str(err.value)
    assert msg.startswith("c.toml:") and "budget" in msg and "\n" not in msg, msg


def test_with_cli_refuses_what_argparse_would_not_see() -> None:
    for bad in (float("nan"), float("inf"), 0.0, MAX_BUDGET_S + 1):
        with pytest.raises(ConfigError, match="--budget"):
            with_cli(Config(), [], [], budget_s=bad)
    assert with_cli(Config(), [], [], budget_s=0.25).daemon.budget_s == 0.25
    assert check_budget_s(MAX_BUDGET_S) == MAX_BUDGET_S
