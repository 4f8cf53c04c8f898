"""The closing summary of a simulation: what each process waited on, and where."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from oomkit.cli import main

REPO = Path(__file__).resolve().parents[2]


def simulate(*argv: str) -> str:
    out = io.StringIO()
    assert main(["simulate", *argv], out) == 0
    return out.getvalue()


def table(text: str) -> dict[str, dict[str, str]]:
    """The process table as {name: {column: cell}} (columns split on 2+ spaces)."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("process "))
    head = re.split(r"\s{2,}", lines[at].strip())
    rows = {}
    for line in lines[at + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(head, cells, strict=True))
    return rows


def test_a_reader_stuck_on_io_shows_its_io_stall_beside_its_memory_stall() -> None:
    """The thrashing reader waits on its disk nearly the whole run while its memory stall
    is small: both are columns, named for what they count."""
    scen = str(REPO / "examples" / "thrash.toml")
    rows = table(simulate(scen, "--bare"))
    reader = rows["reader"]
    assert "stalled" not in reader
    mem, io_ = (float(reader[c].rstrip("s")) for c in ("mem stall", "io stall"))
    assert io_ > 40 and mem < io_ / 10, reader
    (summary,) = [json.loads(line) for line in simulate(scen, "--bare", "--json").splitlines()
                  if '"summary"' in line]
    (p,) = summary["processes"]
    assert p["io_stall_s"] > 40 and abs(p["stall_s"] - mem) < 0.01


def test_a_process_that_never_started_shows_its_scenario_cgroup(tmp_path: Path) -> None:
    scen = tmp_path / "s.toml"
    scen.write_text('[machine]\nmemory = "256M"\nduration = "3s"\n\n'
                    '[[process]]\nname = "early"\ncgroup = "/a"\n'
                    'program = [ { op = "sleep" } ]\n\n'
                    '[[process]]\nname = "late"\ncgroup = "/svc/late"\nstart = "10s"\n'
                    'program = [ { op = "sleep" } ]\n')
    rows = table(simulate(str(scen)))
    assert rows["late"]["cgroup"] == "/svc/late" and rows["late"]["pid"] == "-"
    assert rows["late"]["status"] == "not started"
    assert rows["early"]["cgroup"] == "/a" and rows["early"]["pid"] != "-"
