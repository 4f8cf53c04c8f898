"""Shared test configuration: where the recorded kernel files are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
