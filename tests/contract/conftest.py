"""``be``: each contract test runs once per backend (see backends.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fixtures_dir

from .backends import FakeHarness, Harness, LiveV1Harness, SimHarness

BACKENDS = [
    pytest.param("sim", id="sim"),
    pytest.param("fake_v2", id="fake_v2"),
    pytest.param("fake_v1", id="fake_v1"),
    pytest.param("live_v1", id="live_v1", marks=pytest.mark.privileged),
]


@pytest.fixture(params=BACKENDS)
def be(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    name = request.param
    harness: Harness
    if name == "sim":
        harness = SimHarness()
    elif name.startswith("fake_"):
        fixtures = fixtures_dir()
        if not fixtures.is_dir():
            pytest.skip(f"recorded kernel files not found at {fixtures} (set OOMKIT_FIXTURES)")
        harness = FakeHarness(fixtures, tmp_path, int(name[-1]))
    else:
        harness = LiveV1Harness()
    try:
        yield harness
    finally:
        harness.close()
