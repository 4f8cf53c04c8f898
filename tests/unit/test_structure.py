"""The source tree's shape (issue 9): small modules, the kernel layer below the runtime, and
docs/live.md naming every module of the live backend."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "oomkit"
MAX_LINES = 700
#: What kernel/ may never import, even lazily inside a function: the layers above it.
ABOVE_THE_KERNEL = ("oomkit.ops", "oomkit.runtime", "oomkit.events", "oomkit.handler_call")


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_in_src_is_over_700_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules(SRC)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def _imported(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path`` (or ``text``, as if it were that file), at
    any depth (functions included), relative ones resolved against the module's package;
    for ``from X import Y`` both X and X.Y (Y may be a module)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    source = path.read_text() if text is None else text
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _upward(path: Path, text: str | None = None) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line}: {name}" for line, name in _imported(path, text)
            if any(name == up or name.startswith(up + ".") for up in ABOVE_THE_KERNEL)]


def test_nothing_in_kernel_imports_the_layers_above_it() -> None:
    bad = [hit for p in _modules(SRC / "kernel") for hit in _upward(p)]
    assert not bad, bad


def test_the_import_check_sees_lazy_and_relative_imports() -> None:
    """The check itself: an import inside a function, relative or absolute, is caught."""
    probe = SRC / "kernel" / "linux" / "probe.py"  # never written: names the package only
    text = ("import os\n\ndef f():\n    from ...ops import OomControl\n"
            "    import oomkit.events\n    from .. import base\n")
    hits = _upward(probe, text)
    assert [h.split(": ")[1] for h in hits] == ["oomkit.ops", "oomkit.ops.OomControl",
                                                 "oomkit.events"], hits


def test_docs_live_md_names_every_module_of_the_live_backend() -> None:
    text = (REPO / "docs" / "live.md").read_text()
    missing = [p.name for p in _modules(SRC / "kernel" / "linux")
               if p.name != "__init__.py" and f"`{p.name}`" not in text]
    assert not missing, f"docs/live.md does not map {missing}"
