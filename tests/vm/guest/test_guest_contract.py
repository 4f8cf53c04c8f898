"""The contract suite (tests/contract) on real cgroup v2, in the guest: backend live_v2."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.backends import Harness, LiveV2Harness
from tests.contract.test_contract import *  # noqa: F403 - the same test bodies, collected here
from tests.contract.test_contract import runtime  # noqa: F401 - its fixture, too

from .conftest import GUEST_ONLY

pytestmark = [*GUEST_ONLY]


@pytest.fixture
def be() -> Iterator[Harness]:
    harness = LiveV2Harness()
    try:
        yield harness
    finally:
        harness.close()
