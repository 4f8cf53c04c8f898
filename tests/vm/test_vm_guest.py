"""Host side of the VM tests: boots the cgroup v2 guest once, runs tests/vm/guest in it.

``guest_suite`` (tests/vm/conftest.py) does the single boot; the tests here only read
its result. test_guest_suite_passes fails on any guest failure with the guest's whole
pytest output; test_guest_case reports each guest test function on its own line.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.vm


def _describe(suite: Any) -> str:
    res = suite.result
    return (
        f"guest pytest exit status {res.returncode} (kernel {res.kernel_release}; "
        f"boot {res.boot_seconds:.1f} s, "
        f"total {res.total_seconds:.1f} s; logs in {res.run_dir})\n"
        f"----- guest pytest output -----\n{res.output}"
    )


def test_guest_suite_passes(guest_suite: Any) -> None:
    returncode, cases = guest_suite.returncode, guest_suite.cases
    assert returncode == 0, _describe(guest_suite)
    assert cases, "the guest wrote no junit xml\n" + _describe(guest_suite)


def test_guest_case(guest_suite: Any, guest_case: str, vm_harness: ModuleType) -> None:
    cases = vm_harness.cases_for(guest_suite.cases, guest_case)
    if not cases:
        pytest.fail(
            f"{guest_case} did not run in the guest\n{_describe(guest_suite)}", pytrace=False
        )
    bad = [c for c in cases if c.outcome in ("failed", "error")]
    if bad:
        pytest.fail(
            "\n\n".join(f"guest {c.outcome}: {c.nodeid}\n{c.details}" for c in bad),
            pytrace=False,
        )
    if all(c.outcome == "skipped" for c in cases):
        pytest.skip(f"skipped in the guest: {cases[0].message}")
