"""The wheel as a user gets it: built with `pip wheel --no-deps`, installed into a fresh
venv, then `oomkit --version`, `python -m oomkit --help`, `oomkit events | head -1`,
`man ./oomkit.8` and bash completion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import missing_checker

REPO = Path(__file__).resolve().parents[2]


def sh(cmd: list[str] | str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,  # type: ignore[call-overload]
                          shell=isinstance(cmd, str), executable="/bin/bash"
                          if isinstance(cmd, str) else None, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    r = sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
            str(tmp / "dist"), str(REPO)])
    assert r.returncode == 0, r.stderr[-3000:]
    [wheel] = (tmp / "dist").glob("oomkit-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    py = tmp / "venv" / "bin" / "python"
    r = sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            f"{wheel}[completion]"])
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "venv" / "bin"


def test_version_and_python_m(installed: Path) -> None:
    from oomkit.meta import package_version

    r = sh([str(installed / "oomkit"), "--version"])
    assert r.returncode == 0 and r.stdout.strip() == f"oomkit {package_version()}"
    r = sh([str(installed / "python"), "-m", "oomkit", "--help"])
    assert r.returncode == 0 and "install-unit" in r.stdout and "completion" in r.stdout
    r = sh([str(installed / "python"), "-c", "import importlib.metadata as m; "
            "print(m.metadata('oomkit')['License-Expression'])"])
    assert r.stdout.strip() == "Apache-2.0"


def test_events_into_head(installed: Path, tmp_path: Path) -> None:
    oomkit = installed / "oomkit"
    r = sh(f"{oomkit} run --sim {REPO}/examples/default.toml --state-dir {tmp_path} --quiet "
           f"--oom-policy largest_leaf && {oomkit} events --state-dir {tmp_path} | head -1",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip() == ""
    assert "attach    largest_leaf" in r.stdout and len(r.stdout.splitlines()) == 1


def test_man_page(installed: Path, tmp_path: Path) -> None:
    if shutil.which("man") is None:
        missing_checker("man not found (Debian package man-db; scripts/tools installs it as "
                        "root)")
    page = tmp_path / "oomkit.8"
    r = sh([str(installed / "python"), "-m", "oomkit.manpage"])
    assert r.returncode == 0
    page.write_text(r.stdout)
    r = sh("man ./oomkit.8 | cat", cwd=tmp_path, env={**os.environ, "MANWIDTH": "100",
                                                       "MANPAGER": "cat"})
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "OOMKIT(8)" in text and "SYNOPSIS" in text and "EXIT STATUS" in text
    for command in ("simulate", "run", "check-config", "events", "status", "reload"):
        assert f"oomkit {command} [-h]" in " ".join(text.split()), command
    assert "--state-dir DIR" in text
    assert not [line for line in r.stderr.splitlines() if "warning" in line.lower()]


def test_bash_completion(installed: Path) -> None:
    script = sh([str(installed / "oomkit"), "completion", "bash"])
    assert script.returncode == 0, script.stderr
    probe = ('source /dev/stdin; complete -p oomkit >/dev/null || exit 9; '
             'COMP_WORDS=(oomkit sim); COMP_CWORD=1; _shtab_oomkit; echo "${COMPREPLY[*]}"; '
             'COMP_WORDS=(oomkit events --kind han); COMP_CWORD=3; _shtab_oomkit; '
             'echo "${COMPREPLY[*]}"')
    r = sh(["bash", "-c", probe], input=script.stdout)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["simulate", "handler_error"]


def test_the_presets_and_the_recommended_config_are_in_the_wheel(installed: Path,
                                                                 tmp_path: Path) -> None:
    # `oomkit compare --preset NAME` on an installed oomkit (not only from a checkout).
    r = sh([str(installed / "oomkit"), "compare", f"{REPO}/examples/default.toml",
            "--preset", "earlyoom", "--preset", "oomd", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no such" not in r.stderr and "presets: none" not in r.stderr
    assert '"earlyoom"' in r.stdout and '"oomd"' in r.stdout
    # named where a config file goes, from the installed wheel (QA G8)
    r = sh([str(installed / "oomkit"), "check-config", "preset:earlyoom"], cwd=tmp_path)
    assert r.returncode == 0 and "site-packages/oomkit/data/presets/earlyoom.toml: OK" in \
        r.stdout, r.stdout + r.stderr


def test_the_containerfile_build_stage_replayed_without_a_container(
        installed: Path, tmp_path: Path) -> None:
    """No container engine here (nor in CI): the build stage's COPY lines are replayed into
    an empty directory and its RUN line is run there. What it builds must be the wheel the
    repository builds, so a file the build needs and the Containerfile does not copy fails
    this test, not the image build."""
    lines = (REPO / "Containerfile").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(starts) == 2 and lines[starts[0]].endswith(" AS build"), starts
    stage = lines[starts[0] + 1 : starts[1]]
    context = tmp_path / "src"
    context.mkdir()
    runs = []
    for line in stage:
        words = line.split()
        if words[:1] == ["COPY"]:
            *sources, dest = words[1:]
            for source in sources:
                target = context / dest / source if dest.endswith("/") else context / dest
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, target,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / source, target)
        elif words[:1] == ["RUN"]:
            runs.append(line[4:])
    assert runs == ["pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ."], runs
    out = tmp_path / "wheels"
    r = sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps",
            "--wheel-dir", str(out), "."], cwd=context)
    assert r.returncode == 0, r.stderr[-3000:]
    [wheel] = out.glob("oomkit-*.whl")
    [reference] = (installed.parent.parent / "dist").glob("oomkit-*.whl")
    with zipfile.ZipFile(wheel) as built, zipfile.ZipFile(reference) as ours:
        assert sorted(built.namelist()) == sorted(ours.namelist())
        differ = [n for n in ours.namelist() if built.read(n) != ours.read(n)]
        assert not differ, differ  # METADATA too: README.md is the long description
