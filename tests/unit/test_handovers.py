"""Reading the watchdog's hand-over records back from the event log's tail (qa4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from oomkit.kernel.linux.handovers import TAIL_BYTES, handed_over_since


def rec(memcg: str, at: float, policy: str = "watchdog") -> str:
    return json.dumps({"event": "oom", "time": at, "memcg": memcg, "policy": policy,
                       "resolved_by": "kernel"}) + "\n"


def test_recent_watchdog_records_only(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text("x" * (TAIL_BYTES + 10) + "\n" + rec("/old", 5.0) + rec("/a/new", 20.0)
                   + rec("/b", 21.0, policy="largest_leaf") + '{"torn": ')
    assert handed_over_since(str(log), 10.0) == {"/a/new"}
    assert handed_over_since(str(log), 0.0) == {"/old", "/a/new"}


def test_no_link_is_followed_and_a_missing_log_is_empty(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_text(rec("/a", 20.0))
    link = tmp_path / "events.jsonl"
    os.symlink(real, link)
    assert handed_over_since(str(link), 0.0) == set()
    assert handed_over_since(str(tmp_path / "none.jsonl"), 0.0) == set()
