"""Loading the guest harness and its kernel fetcher into a bench, by path.

tests/vm is not a package on sys.path; the benches that boot the QEMU guest (or unpack a
peer daemon from its cache) load its files the way tests/vm/conftest.py does.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_module(name: str, path: Path) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (registered in sys.modules, as the
    harness's dataclasses need)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def vm_harness() -> ModuleType:
    """tests/vm/harness.py: boot the guest, run a command in it."""
    return load_module("oomkit_vm_harness", REPO / "tests/vm/harness.py")
