"""The first command a page of docs/ shows does what the page says it shows."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

from oomkit.cli import main

REPO = Path(__file__).resolve().parents[2]


def first_command(page: Path) -> list[str]:
    """argv of the first ``oomkit`` line in a fenced block of the page."""
    block = re.search(r"```\n(.*?)```", page.read_text(), re.S)
    assert block, f"{page}: no fenced block"
    line = next(x for x in block.group(1).splitlines() if "oomkit " in x)
    argv = shlex.split(line)
    argv = argv[argv.index(next(a for a in argv if a.endswith("oomkit"))) + 1:]
    # paths are the repository's, whatever the directory the tests run in
    return [str(REPO / a) if (REPO / a).is_file() else a for a in argv]


def test_the_simulator_page_opens_with_a_run_where_something_happens() -> None:
    argv = first_command(REPO / "docs" / "simulator.md")
    assert argv[0] == "simulate"
    out = io.StringIO()
    assert main([*argv, "--json"] if "--json" not in argv else argv, out) == 0
    story = out.getvalue()
    assert '"event": "psi"' in story and '"event": "oom"' in story, story[-2000:]
