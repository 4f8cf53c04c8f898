"""The field cases (../shared/field/) and further cases of the same kinds
(field_kinds/): each run as a user would, ``oomkit run --sim CASE --config
packaging/oomkit.toml``, and held to the outcome its description states."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import Outcome, run_with_config

REPO = Path(__file__).resolve().parents[2]
RECOMMENDED = REPO / "packaging" / "oomkit.toml"
SHARED = Path(os.environ.get("OOMKIT_SHARED", REPO / ".." / "shared"))
FIELD = SHARED / "field"
KINDS = Path(__file__).parent / "field_kinds"


def run_case(scenario: Path, tmp_path: Path) -> Outcome:
    return run_with_config(scenario, RECOMMENDED, tmp_path)


def field(name: str) -> Path:
    path = FIELD / name
    if not path.exists():
        pytest.skip(f"the field cases are not here: {FIELD} (set OOMKIT_SHARED)")
    return path


# -- ../shared/field ----------------------------------------------------------------------


def test_f02_one_kill_while_the_victims_memory_comes_back(tmp_path: Path) -> None:
    o = run_case(field("f02_slow_release.toml"), tmp_path)
    assert o.killed == ["job"]
    assert o.alive("editor", "desktop")


def test_f04_the_linker_dies_within_10s_of_the_build_storm(tmp_path: Path) -> None:
    o = run_case(field("f04_build_storm_single.toml"), tmp_path)
    assert o.killed_at("ld") <= 2 + 10
    assert o.alive("shell", "editor")


def test_f05_restarts_stop_dying_once_the_tmpfs_file_goes(tmp_path: Path) -> None:
    o = run_case(field("f05_tmpfs_restart_loop.toml"), tmp_path)
    assert o.alive("restart1", "restart2")


def test_f07_the_service_throttled_at_memory_high_dies_not_the_idle_one(
        tmp_path: Path) -> None:
    o = run_case(field("f07_high_throttled_vs_idle.toml"), tmp_path)
    assert o.killed == ["bloat"]
    assert o.alive("chill")


def test_f10_without_swap_the_hog_dies_not_the_programs_rereading_files(
        tmp_path: Path) -> None:
    o = run_case(field("f10_noswap_cache_thrash.toml"), tmp_path)
    assert o.killed == ["hog"]
    assert o.killed_at("hog") <= 4 + 10  # the hog fills memory at 4 s
    assert o.alive("browser", "mail", "ide")


# -- the same kinds, other names, sizes and shapes ------------------------------------------


def test_slow_release_two_levels_down_without_swap(tmp_path: Path) -> None:
    o = run_case(KINDS / "slow_release_nested.toml", tmp_path)
    assert o.killed == ["batch"]
    assert o.alive("viewer", "panel")


def test_the_throttled_service_among_three(tmp_path: Path) -> None:
    o = run_case(KINDS / "high_throttled_among_three.toml", tmp_path)
    assert o.killed == ["render"]
    assert o.alive("cache", "api")


def test_a_growing_heap_that_pushes_two_programs_files_out(tmp_path: Path) -> None:
    o = run_case(KINDS / "noswap_thrash_two_readers.toml", tmp_path)
    assert o.killed == ["db"]
    assert o.killed_at("db") <= 11 + 10  # the heap is full at about 11 s
    assert o.alive("indexer", "reporter")


def test_a_lone_reader_streaming_more_than_fits_is_left_alone(tmp_path: Path) -> None:
    o = run_case(KINDS / "lone_reader.toml", tmp_path)
    assert o.killed == []


def test_a_build_storm_loses_its_largest_process_not_the_session(tmp_path: Path) -> None:
    o = run_case(KINDS / "build_storm_one_scope.toml", tmp_path)
    assert o.killed == ["linker"]
    assert o.killed_at("linker") <= 1 + 10
    assert o.alive("shell")
