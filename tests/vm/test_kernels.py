"""Host side of the guest kernel choice (tests/vm/kernels.py): module dependencies and mirrors."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


def test_unknown_choice_is_refused(vm_harness: ModuleType) -> None:
    with pytest.raises(vm_harness.HarnessError, match=r"unknown guest kernel '5\.10'"):
        vm_harness.find_kernel("5.10")


def test_modinfo_depends_orders_a_module_after_its_dependencies(vm_harness: ModuleType) -> None:
    try:
        kernel = vm_harness.find_kernel("6.1")
    except vm_harness.HarnessError as exc:
        pytest.skip(f"the 6.1 kernel could not be fetched: {exc}")
    modules, absent = vm_harness.kernels.resolve_modules(kernel, ["9p"])
    names = [name for name, _ in modules]
    # 9p needs 9pnet (and on Debian's 6.1 netfs, fscache); each comes before its user.
    assert names[-1] == "9p" and "9pnet" in names, (names, absent)
    for name, data in modules:
        info = vm_harness.kernels.modinfo(data)
        assert info["name"] == name
        for dep in filter(None, info.get("depends", "").split(",")):
            assert dep.replace("-", "_") in names[: names.index(name)], (name, dep, names)


def test_host_mirror_comes_from_the_host_apt_sources(
    vm_harness: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/etc/apt").is_dir():
        pytest.skip("not a Debian host")
    monkeypatch.delenv("OOMKIT_VM_APT_MIRROR", raising=False)
    uri, keyring = vm_harness.kernels.host_mirror()
    assert uri.startswith(("http://", "https://", "file:/")), uri
    assert keyring.exists()
    monkeypatch.setenv("OOMKIT_VM_APT_MIRROR", "http://mirror.invalid/debian")
    assert vm_harness.kernels.host_mirror()[0] == "http://mirror.invalid/debian"


def test_guest_kernels_follow_the_environment(
    vm_harness: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.vm import conftest

    monkeypatch.setenv("OOMKIT_VM_KERNELS", "6.12, 7.3")
    assert conftest.guest_kernels() == ["6.12", "7.3"]
    monkeypatch.delenv("OOMKIT_VM_KERNELS")
    monkeypatch.setenv("OOMKIT_VM_KERNEL", "7.3")
    assert conftest.guest_kernels() == ["7.3"]
