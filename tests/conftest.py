"""Shared test configuration: where the recorded kernel files are."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import settings

# No per-example deadline: hypothesis' default 200 ms is a timed assertion, and a CI runner
# or a machine busy with QEMU guests exceeds it on examples that take 0.1 ms when idle.
# Speed is measured in bench/, not in unit tests.
settings.register_profile("oomkit", deadline=None)
settings.load_profile("oomkit")

REPO = Path(__file__).resolve().parents[1]


#: Set by scripts/check (so in CI): a checker the packaging tests run (systemd-analyze,
#: promtool, kubernetes-validate) that scripts/setup and scripts/tools did not provide fails
#: its test instead of skipping it, so that "clean inside scripts/check" is measured.
REQUIRE_CHECKERS_ENV = "OOMKIT_REQUIRE_CHECKERS"


def missing_checker(why: str) -> NoReturn:
    """Skip for want of an external checker, or fail under scripts/check."""
    if os.environ.get(REQUIRE_CHECKERS_ENV) == "1":
        pytest.fail(f"{why}; scripts/check needs it ({REQUIRE_CHECKERS_ENV}=1)", pytrace=False)
    pytest.skip(why)


def fixtures_dir() -> Path:
    """../shared/fixtures beside the checkout, or $OOMKIT_FIXTURES."""
    env = os.environ.get("OOMKIT_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    d = fixtures_dir()
    if not d.is_dir():
        pytest.skip(f"recorded kernel files not found at {d} (set OOMKIT_FIXTURES)")
    return d
