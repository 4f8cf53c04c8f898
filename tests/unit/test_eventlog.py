"""The event log: append-only JSON lines, synced per OOM, rotated without losing a line."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from oomkit.daemon.eventlog import EventLog, follow, log_files, read_events, rotated_name


def rec(n: int, kind: str = "psi") -> dict[str, object]:
    # Every line the same length, whatever n is (below 10**6).
    return {"event": kind, "time": 0.0, "n": n, "pad": "x" * (46 - len(str(n)))}


def numbers(path: Path) -> list[int]:
    return [int(r["n"]) for r in read_events(str(path))]


def test_lines_are_json_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "log" / "events.jsonl"
    log = EventLog(str(path))
    for n in range(3):
        assert log.write(rec(n))
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [0, 1, 2]
    log2 = EventLog(str(path))  # a restart appends
    log2.write(rec(3))
    log2.close()
    assert numbers(path) == [0, 1, 2, 3]
    assert (path.stat().st_mode & 0o777) == 0o600  # whatever the umask (privfile)


def test_oom_and_error_lines_are_synced_others_not(tmp_path: Path) -> None:
    synced: list[str] = []

    def defer(key: str, job: Callable[[], None]) -> None:
        synced.append(key)
        job()

    log = EventLog(str(tmp_path / "e.jsonl"), defer=defer)
    log.write(rec(0, "psi"))
    log.write(rec(1, "attach"))
    assert synced == []
    log.write(rec(2, "oom"))
    log.write(rec(3, "error"))
    log.write(rec(4, "psi"), sync=True)
    assert len(synced) == 3 and all(k.startswith("eventlog-sync") for k in synced)
    log.close()


def test_fsync_really_happens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    log = EventLog(str(tmp_path / "e.jsonl"))
    log.write(rec(0, "oom"))
    assert len(calls) == 1
    log.close()


def test_rotation_keeps_n_files_and_every_line_until_the_oldest_goes(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    line = len(json.dumps(rec(0), separators=(", ", ": "))) + 1
    log = EventLog(str(path), max_bytes=line * 10, keep=3)
    for n in range(45):
        log.write(rec(n))
    log.close()
    files = log_files(str(path))
    assert files == [rotated_name(str(path), k) for k in (3, 2, 1)] + [str(path)]
    # 10 lines a file; four rotations, so the first file (0..9) was the one dropped.
    assert numbers(path) == list(range(10, 45))
    for name in files:
        assert os.path.getsize(name) <= line * 10
    assert log.rotations == 4


def test_rotation_never_splits_or_loses_lines_under_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    log = EventLog(str(path), max_bytes=4096, keep=1000)
    threads = [threading.Thread(target=lambda base=t: [log.write(rec(base * 1000 + i))
                                                       for i in range(300)])
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    got = numbers(path)
    assert sorted(got) == sorted(t * 1000 + i for t in range(4) for i in range(300))
    for name in log_files(str(path)):
        for raw in Path(name).read_text().splitlines():
            json.loads(raw)


def test_a_failed_reopen_keeps_writing_to_the_renamed_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "e.jsonl"
    errors: list[str] = []
    log = EventLog(str(path), max_bytes=200, keep=2, on_error=errors.append)
    log.write(rec(0))
    log.write(rec(1))
    monkeypatch.setattr(log, "_open", lambda: (_ for _ in ()).throw(OSError(24, "EMFILE")))
    log.write(rec(2))  # rotation renames, reopen fails: the line goes to .1
    monkeypatch.undo()
    log.write(rec(3))  # the next rotation works again
    log.close()
    assert numbers(path) == [0, 1, 2, 3]
    assert errors and "writing on" in errors[0]


def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    log = EventLog(str(tmp_path / "e.jsonl"), on_error=lambda m: None)
    log.close()
    assert not log.write(rec(0))
    assert log.errors == 1
    bad = {"event": "oom", "x": object()}
    log2 = EventLog(str(tmp_path / "f.jsonl"))
    assert log2.write(bad)  # default=str makes anything serializable
    log2.close()


def test_keep_zero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EventLog(str(tmp_path / "e.jsonl"), keep=0)


def test_read_events_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"event": "oom", "n": 1}\nnot json\n[1, 2]\n{"no": "event"}\n\n'
                    '{"event": "psi", "n": 2}\n')
    assert numbers(path) == [1, 2]


def test_follow_sees_new_lines_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    log = EventLog(str(path), max_bytes=300, keep=50)
    log.write(rec(-1))  # before following: not shown
    stop = threading.Event()
    got: list[int] = []
    steps = iter(range(40))

    def sleep(_s: float) -> None:
        # Each time the follower would wait, the writer writes one more line.
        n = next(steps, None)
        if n is None:
            stop.set()
        else:
            log.write(rec(n))

    for r in follow(str(path), stop, sleep=sleep):
        got.append(int(r["n"]))
    log.close()
    assert got == list(range(40))
    assert log.rotations > 5


def test_follow_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    stop = threading.Event()
    calls = {"n": 0}

    def sleep(_s: float) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            EventLog(str(path)).write(rec(7))
        if calls["n"] > 4:
            stop.set()

    assert [int(r["n"]) for r in follow(str(path), stop, sleep=sleep)] == [7]
