"""Record a real memcg OOM under the daemon, then replay the incident on the simulator.

Three workloads below /app (limit 150M, memory+swap on v1): a and b sit, c grows 5M every
200 ms until /app runs out; the daemon's largest_leaf handler at /app resolves it. The
incident the daemon writes must replay, under the same config, to the same victim.
Everything runs in a throwaway memcg below our own (tests/live/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomkit.cli import main
from oomkit.lab.replay import load_incident
from tests.daemon.test_daemon_live import LiveDaemon, config_text
from tests.live.conftest import LiveCgroups, MiB, wait_for
from tests.live.conftest import live as live  # the fixture, re-exported

pytestmark = pytest.mark.privileged

GROW = r"""
import mmap, sys, time
step, total = int(sys.argv[1]), int(sys.argv[2])
keep = []
done = 0
while done < total:
    m = mmap.mmap(-1, step, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, step, 4096):
        m[i] = 1
    keep.append(m)
    done += step
    time.sleep(0.2)
time.sleep(3600)
"""

BODY = '\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/app"\n'
RECORDER = '\n[recorder]\ninterval = "1s"\npressure_interval = "100ms"\n'


@contextlib.contextmanager
def running(live: LiveCgroups, d: Path, body: str) -> Iterator[LiveDaemon]:
    """tests/daemon's ``running``, with time for a daemon starting in a busy TCG guest
    (more than its 20 s once, after the rest of the guest suite)."""
    config = d / "oomkit.toml"
    config.write_text(config_text(d, live.root, body))
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                             str(config), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    daemon = LiveDaemon(proc, d, config)
    try:
        daemon.wait_ready(90)
        yield daemon
    finally:
        daemon.stop()


def grower(live: LiveCgroups, cgroup: Path, step: int, total: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-I", "-c", GROW, str(step), str(total)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        (cgroup / "cgroup.procs").write_text(str(proc.pid))
    except OSError:
        proc.kill()
        raise
    return proc


def test_a_live_memcg_oom_replays_to_the_same_victim(live: LiveCgroups,
                                                     tmp_path: Path) -> None:
    d = tmp_path / "oomkit"
    d.mkdir()
    if not live.v1:  # v2: a child has memory.max only where its parent enables it
        (live.root / "cgroup.subtree_control").write_text("+memory")
    app = live.mkdir("app", 150 * MiB)
    if not live.v1:
        (app / "cgroup.subtree_control").write_text("+memory")
    a, b, c = (live.mkdir(f"app/{n}") for n in "abc")
    with running(live, d, BODY + RECORDER) as daemon:
        hog_a = live.spawn(a, "anon", 30 * MiB)
        hog_b = live.spawn(b, "anon", 40 * MiB)
        assert hog_a.wait_ready(60) and hog_b.wait_ready(60)  # a TCG guest is slow
        proc = grower(live, c, 5 * MiB, 400 * MiB)
        try:
            oom = daemon.wait_record(lambda r: r["event"] == "oom", timeout=120)
            assert proc.wait(30) is not None  # c was the one killed
        finally:
            proc.kill()
            proc.wait(5)
        assert [v["cgroup"] for v in oom["victims"]] == ["/app/c"], daemon.records("oom")
        assert oom["policy"] == "largest_leaf" and oom["resolved_by"] == "handler"
        path = oom["incident"]
        assert wait_for(lambda: Path(path).exists(), 30, 0.05)
        assert hog_a.alive() and hog_b.alive()
    inc = load_incident(path)
    assert inc.header["cgroup_version"] in (1, 2)
    paths = set().union(*(s["cgroups"] for s in inc.samples))
    assert {"/app", "/app/a", "/app/b", "/app/c"} <= paths
    assert len(inc.samples) >= 5  # every 100 ms as c closes in on the limit
    assert app.exists()
    out = io.StringIO()
    assert main(["replay", path], out=out) == 0
    text = out.getvalue()
    print(text)
    assert "same decision as live: yes" in text, text
    out = io.StringIO()
    assert main(["replay", path, "--kernel"], out=out) == 0
    assert "resolved by default" in out.getvalue()


def test_record_samples_the_live_kernel_without_the_daemon(live: LiveCgroups,
                                                           tmp_path: Path) -> None:
    if not live.v1:
        (live.root / "cgroup.subtree_control").write_text("+memory")
    hog = live.spawn(live.mkdir("rec"), "anon", 20 * MiB)
    assert hog.wait_ready(60)
    rel = "/" + str(live.root.relative_to(_mount_of(live.root))).strip("/") + "/rec"
    out_file = tmp_path / "rec.jsonl"
    out = io.StringIO()
    assert main(["record", "--duration", "1s", "--interval", "200ms", "--cgroup", rel,
                 "--out", str(out_file)], out=out) == 0
    assert "samples over 1 s" in out.getvalue()
    inc = load_incident(str(out_file))
    assert inc.header["reason"] == "record" and len(inc.samples) >= 3  # a TCG guest is slow
    last = inc.samples[-1]
    assert last["cgroups"][rel]["usage"] >= 20 * MiB
    assert [p["pid"] for p in last["procs"] if p["cgroup"] == rel] == [hog.pid]
    assert hog.alive()  # recording changes nothing


def _mount_of(path: Path) -> Path:
    """The cgroup mount holding ``path`` (v1: the memory hierarchy; v2: the unified one)."""
    p = path
    while p.parent != p and (p.parent / "cgroup.procs").exists():
        p = p.parent
    return p


RAISES = '\n[[oom]]\npolicy = "tests.live.test_live_oom:Raises"\ncgroup = "/app"\n'


def test_a_handed_over_oom_names_the_kernels_victim_in_its_incident(
        live: LiveCgroups, tmp_path: Path) -> None:
    """The handler at /app raises: the OOM falls through to the kernel's killer, after
    the OOM's event line. The incident still names whom the kernel killed (the task that
    vanished, as /dev/kmsg names it), and replays to the same cgroup under --kernel."""
    d = tmp_path / "oomkit"
    d.mkdir()
    if not live.v1:
        (live.root / "cgroup.subtree_control").write_text("+memory")
    app = live.mkdir("app", 100 * MiB)
    if not live.v1:
        (app / "cgroup.subtree_control").write_text("+memory")
    a, c = live.mkdir("app/a"), live.mkdir("app/c")
    with running(live, d, RAISES + RECORDER) as daemon:
        hog_a = live.spawn(a, "anon", 20 * MiB)
        assert hog_a.wait_ready(60)
        proc = grower(live, c, 5 * MiB, 400 * MiB)
        try:
            oom = daemon.wait_record(lambda r: r["event"] == "oom", timeout=120)
            assert proc.wait(30) is not None  # the kernel killed c
        finally:
            proc.kill()
            proc.wait(5)
        assert oom["resolved_by"] == "default" and oom["victims"] == [], oom
        path = oom["incident"]
        assert wait_for(lambda: Path(path).exists(), 30, 0.05)
        assert hog_a.alive()
    inc = load_incident(path)
    assert inc.oom is not None
    assert [(v["pid"], v["cgroup"]) for v in inc.oom["victims"]] == [(proc.pid, "/app/c")]
    assert inc.oom["victims_from"] in ("/dev/kmsg", "vanished")
    if os.access("/dev/kmsg", os.R_OK):
        assert inc.oom["victims_from"] == "/dev/kmsg"
    out = io.StringIO()
    assert main(["replay", path, "--kernel"], out=out) == 0
    text = out.getvalue()
    print(text)
    assert "same decision as live: yes" in text, text


def test_a_kernel_oom_no_handler_watches_has_its_processes_in_the_incident(
        live: LiveCgroups, tmp_path: Path) -> None:
    """The daemon's handler watches /h only; /app's OOM is the kernel's, seen afterwards.
    Its incident holds the growing task all the same (the machine's largest processes
    are in every sample) and /app's limit (one more sample after the OOM), and replays
    to the kernel's victim under --kernel."""
    d = tmp_path / "oomkit"
    d.mkdir()
    if not live.v1:
        (live.root / "cgroup.subtree_control").write_text("+memory")
    live.mkdir("h", 64 * MiB)
    app = live.mkdir("app", 100 * MiB)
    if not live.v1:
        (app / "cgroup.subtree_control").write_text("+memory")
    c = live.mkdir("app/c")
    body = '\n[[oom]]\npolicy = "largest_leaf"\ncgroup = "/h"\n'
    with running(live, d, body + RECORDER) as daemon:
        time.sleep(2)  # a sample or two before the growth
        proc = grower(live, c, 5 * MiB, 400 * MiB)
        try:
            oom = daemon.wait_record(lambda r: r["event"] == "oom", timeout=120)
            assert proc.wait(30) is not None
        finally:
            proc.kill()
            proc.wait(5)
        assert oom["resolved_by"] == "kernel" and oom["memcg"] == "/app", oom
        path = oom["incident"]
        assert wait_for(lambda: Path(path).exists(), 30, 0.05)
    inc = load_incident(path)
    grown = [p["rss"] for s in inc.samples for p in s["procs"]
             if p["pid"] == proc.pid and not s.get("after_oom")]  # after: exiting, rss 0
    assert len(grown) >= 2 and grown[-1] > grown[0], grown
    assert inc.samples[-1].get("after_oom") and inc.samples[-1]["cgroups"]["/app"]["max"] \
        == 100 * MiB
    out = io.StringIO()
    assert main(["replay", path, "--kernel"], out=out) == 0
    text = out.getvalue()
    print(text)
    assert "same decision as live: yes" in text and "not in the incident's samples" not in text


CAUSE = '\n[[oom]]\npolicy = "kill_cause"\ncgroup = "/app"\n'


def test_an_idle_interpreter_beside_a_grower_replays_to_the_grower(
        live: LiveCgroups, tmp_path: Path) -> None:
    """QA G12: /app 64M, an idle 26M holder (a Python interpreter: its rss counts the
    interpreter's shared file pages, which the memcg does not charge) and a grower. Live,
    kill_cause takes the grower; the replay must too, with the charged share (RssAnon +
    swap) as each process's footprint, not rss: with rss the replay's /app filled 0.7 s
    early and the idle holder, bigger by its libraries, ranked first."""
    d = tmp_path / "oomkit"
    d.mkdir()
    if not live.v1:
        (live.root / "cgroup.subtree_control").write_text("+memory")
    app = live.mkdir("app", 64 * MiB)
    if not live.v1:
        (app / "cgroup.subtree_control").write_text("+memory")
    a, b = live.mkdir("app/a"), live.mkdir("app/b")
    with running(live, d, CAUSE + RECORDER) as daemon:
        holder = live.spawn(a, "anon", 26 * MiB)
        assert holder.wait_ready(60)
        time.sleep(2)  # the holder is idle well before the grower starts
        proc = grower(live, b, 2 * MiB, 400 * MiB)
        try:
            oom = daemon.wait_record(lambda r: r["event"] == "oom", timeout=120)
            assert proc.wait(30) is not None
        finally:
            proc.kill()
            proc.wait(5)
        assert [v["cgroup"] for v in oom["victims"]] == ["/app/b"], daemon.records("oom")
        path = oom["incident"]
        assert wait_for(lambda: Path(path).exists(), 30, 0.05)
        assert holder.alive()
    out = io.StringIO()
    assert main(["replay", path], out=out) == 0
    text = out.getvalue()
    print(text)
    assert "same decision as live: yes" in text, text
    # The grower ranks first by its growth, as live, not by size alone: the replay
    # samples growth at the recorder's sample times, as the daemon did.
    growth = re.search(r"in /app/b: .*?; cgroup score \S+ \(footprint \S+, growth (\S+)/s",
                       text)
    assert growth is not None and growth[1] != "0B", text
