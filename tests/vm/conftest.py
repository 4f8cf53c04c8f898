"""VM test plumbing: keeps host pytest out of tests/vm/guest, boots the guest once.

* On the host, tests/vm/guest/ is not collected (those tests need the guest's cgroup v2).
* ``guest_suite`` (session scope) boots the guest ONCE per guest kernel and runs all of
  tests/vm/guest in it; host tests in tests/vm/test_vm_guest.py report on that run.
* ``guest_kernel`` is parametrized with the kernels of ``OOMKIT_VM_KERNELS`` (comma
  separated: 6.1, 6.12, 7.3 or vmlinuz paths; default: ``OOMKIT_VM_KERNEL``, else 6.1).
  scripts/check sets it to run the suite on 6.12 and 7.3.
* ``guest_case`` is parametrized with every test function found in tests/vm/guest, so
  the host report has one line per guest test and kernel. A new guest test file needs no
  wiring.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent


def _load_harness() -> ModuleType:
    # Loaded by path under a unique name, so no sys.path games and no clash with any
    # other "harness" module in the test tree.
    name = "oomkit_vm_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

collect_ignore = [] if harness.in_guest() else ["guest"]


@pytest.fixture(scope="session")
def vm_harness() -> ModuleType:
    """The tests/vm/harness.py module."""
    return harness


def guest_kernels() -> list[str]:
    """The kernels the guest suite runs on: $OOMKIT_VM_KERNELS, else the one default."""
    listed = os.environ.get("OOMKIT_VM_KERNELS", "")
    return [k.strip() for k in listed.split(",") if k.strip()] or [
        harness.kernels.default_choice()
    ]


@pytest.fixture(scope="session")
def guest_suite(guest_kernel: str) -> object:
    """One guest boot running all of tests/vm/guest: a harness.GuestPytestResult.

    OOMKIT_VM_MEMORY (default 1G) and OOMKIT_VM_TIMEOUT (seconds, default 600) tune it.
    """
    if harness.in_guest():
        pytest.skip("already inside the VM guest: the guest suite is not booted recursively")
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (apt-get install of qemu/kernel, 9p export of /)")
    harness.ensure_packages()
    return harness.run_pytest_in_guest(
        [str(harness.GUEST_TESTS.relative_to(harness.REPO_ROOT)), "-q"],
        memory=os.environ.get("OOMKIT_VM_MEMORY", "1G"),
        timeout=float(os.environ.get("OOMKIT_VM_TIMEOUT", "600")),
        kernel=guest_kernel,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "guest_kernel" in metafunc.fixturenames:
        # Session scope: one boot per kernel, shared by every test reading its result.
        metafunc.parametrize("guest_kernel", guest_kernels(), scope="session")
    if "guest_case" in metafunc.fixturenames:
        ids = harness.discover_guest_tests()
        metafunc.parametrize("guest_case", ids, ids=ids)
