"""QA G8: the presets shipped with oomkit are named ``preset:NAME`` wherever a config file
is (run --config, check-config), and ``oomkit policies`` lists them with their paths."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from oomkit.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_check_config_takes_a_preset_by_name() -> None:
    out = io.StringIO()
    assert main(["check-config", "preset:earlyoom"], out=out) == 0, out.getvalue()
    first = out.getvalue().splitlines()[0]
    assert first.endswith("data/presets/earlyoom.toml: OK"), first
    shipped = Path(first.rsplit(":", 1)[0])
    assert shipped.read_text() == (REPO / "packaging" / "presets" / "earlyoom.toml").read_text()


def test_an_unknown_preset_is_one_line_naming_the_known_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", "preset:earlyom", "--sim", "x.toml"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown preset 'earlyom' (presets: preset:earlyoom, preset:lmkd" in err


def test_policies_lists_the_presets_with_their_paths() -> None:
    out = io.StringIO()
    assert main(["policies"], out=out) == 0
    rows = [line.split() for line in out.getvalue().splitlines() if line.startswith("preset:")]
    names = sorted(p.stem for p in (REPO / "packaging" / "presets").glob("*.toml"))
    assert [r[0] for r in rows] == [f"preset:{n}" for n in names]
    assert all(Path(r[1]).is_file() for r in rows)
