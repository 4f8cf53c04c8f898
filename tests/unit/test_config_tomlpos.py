"""oomkit.tomlpos: the line of every key, table and array element of a TOML text."""

from __future__ import annotations

import tomllib

from oomkit.tomlpos import TomlPositions, describe

TEXT = '''\
# a comment with key = "value" and [table] in it
title = "x"   # trailing comment
"quoted key" = 1
dotted.key = 2

[daemon]
budget = "500ms"
notes = """
not_a_key = 1
[not_a_table]
"""
after = 'literal # not a comment'

[[oom]]
policy = "largest_leaf"
args = { target = "64M", nested = { deep = 1 } }

[[oom]]
policy = "kill_cgroup"
cgroup = "/a"
args = {}


[oom_extra.sub]
k = [
  1,
  { op = "alloc", size = "10M" },
  # a comment between elements
  { op = "sleep" },
]
'''


def test_the_text_is_valid_toml() -> None:
    tomllib.loads(TEXT)


def test_top_level_keys() -> None:
    pos = TomlPositions(TEXT)
    assert pos.line("title") == 2
    assert pos.line("quoted key") == 3
    assert pos.line("dotted") == 4
    assert pos.line("dotted", "key") == 4


def test_tables_and_keys_in_them() -> None:
    pos = TomlPositions(TEXT)
    assert pos.line("daemon") == 6
    assert pos.line("daemon", "budget") == 7
    assert pos.line("daemon", "notes") == 8
    assert pos.line("daemon", "after") == 12


def test_multiline_strings_hide_what_looks_like_keys_and_tables() -> None:
    pos = TomlPositions(TEXT)
    assert pos.exact("daemon", "not_a_key") is None
    assert pos.exact("not_a_table") is None


def test_arrays_of_tables_are_numbered_from_zero() -> None:
    pos = TomlPositions(TEXT)
    assert pos.line("oom") == 14
    assert pos.line("oom", 0) == 14
    assert pos.line("oom", 0, "policy") == 15
    assert pos.line("oom", 1) == 18
    assert pos.line("oom", 1, "cgroup") == 20


def test_inline_tables() -> None:
    pos = TomlPositions(TEXT)
    assert pos.line("oom", 0, "args", "target") == 16
    assert pos.line("oom", 0, "args", "nested", "deep") == 16
    assert pos.line("oom", 1, "args") == 21


def test_array_elements_and_their_keys() -> None:
    pos = TomlPositions(TEXT)
    assert pos.line("oom_extra", "sub", "k") == 25
    assert pos.line("oom_extra", "sub", "k", 0) == 26
    assert pos.line("oom_extra", "sub", "k", 1, "size") == 27
    assert pos.line("oom_extra", "sub", "k", 2, "op") == 29


def test_unwritten_paths_fall_back_to_the_nearest_ancestor() -> None:
    pos = TomlPositions(TEXT)
    assert pos.line("oom", 1, "budget") == 18  # the [[oom]] header
    assert pos.exact("oom", 1, "budget") is None
    assert pos.line("nowhere", "at", "all") is None


def test_never_raises_on_odd_text() -> None:
    for text in ("", "[", "[[", "a =", '"unterminated', "a = [1, 2", "= 1", "\x00"):
        TomlPositions(text)


def test_describe() -> None:
    assert describe(("oom", 1, "args", "x")) == "oom[1].args.x"
    assert describe(("daemon", "budget")) == "daemon.budget"
