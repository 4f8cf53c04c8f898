"""The lab's acceptance on cgroup v2 (VM only): the daemon with the recommended config
(packaging/oomkit.toml, only its file paths moved to a temporary directory and /metrics
off) records every OOM as an incident, and ``oomkit replay`` of the incident reaches the
live decision under the policy that acted live, and says what largest_leaf and the
kernel's own killer would have done.

Two OOMs, one per test:

- a memcg OOM in a tree of three workloads: /app (150M) holds a (30M) and b (40M), which
  sit, and c, which grows 4M every 0.5 s until /app runs out: the guard band hands the
  OOM to the handlers, kill_cause (system-wide) takes c;
- a system-wide leak: the leaker of test_guest_system_oom in its own cgroup (fast to 30 %
  of MemTotal, then 16 MiB/s), no limit anywhere, until the guest runs short: the
  daemon's MemAvailable watch (or the kernel, if it is first) resolves it.

The recorder keeps its defaults (a sample every 10 s, every 0.5 s under pressure, a
probe of usage every second between): both growths take less than the idle interval,
and the incident must still hold them, sample by sample. Everything is killed and removed
afterwards (the ``tree`` fixture), failures included; the daemon is stopped.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from oomkit.cli import main
from oomkit.lab.replay import load_incident
from tests.daemon.test_daemon_live import LiveDaemon
from tests.live.conftest import Hog

from .conftest import GUEST_ONLY, JOIN, MiB, V2Tree, wait_for
from .test_guest_system_oom import CHUNK, LEAKER, RATE, SLOW, meminfo, protected

pytestmark = GUEST_ONLY

REPO = Path(__file__).resolve().parents[3]
RECOMMENDED = REPO / "packaging" / "oomkit.toml"

# argv (after JOIN's): step bytes, pause seconds. Grows by `step` every `pause`, forever.
GROW = JOIN + r"""
import mmap, time
step, pause = int(sys.argv[7]), float(sys.argv[8])
keep = []
while True:
    m = mmap.mmap(-1, step, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, step, 4096):
        m[i] = 1
    keep.append(m)
    time.sleep(pause)
"""


def recommended_config(d: Path) -> Path:
    """packaging/oomkit.toml with its paths below ``d`` and /metrics off (the guest has
    no loopback); every policy, budget, guard and recorder setting as shipped."""
    text = RECOMMENDED.read_text()
    for key, value in (("event_log", f"{d}/events.jsonl"), ("status_file", f"{d}/status.json"),
                       ("state_file", f"{d}/restore.json"), ("listen", "")):
        text, n = re.subn(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', text)
        assert n == 1, key
    cfg = d / "oomkit.toml"
    cfg.write_text(text)
    return cfg


@contextlib.contextmanager
def daemon(d: Path) -> Iterator[LiveDaemon]:
    cfg = recommended_config(d)
    proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config", str(cfg),
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO)
    live = LiveDaemon(proc, d, cfg)
    try:
        live.wait_ready(SLOW)
        yield live
    finally:
        live.stop()


def grower(cgroup: Path, step: int, pause: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-I", "-c", GROW, "", "", "", str(cgroup),
                             "/proc/self/oom_score_adj", "0", str(step), str(pause)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, close_fds=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"joined"
    return proc


def leaker(tree: V2Tree, cgroup: Path) -> Hog:
    """test_guest_system_oom's leaker, at full speed only to 30 % of MemTotal (not 60 %):
    after the guest suite's other tests less is free, and at full speed the leak ran out
    of memory between the first sample and the next probe; at 16 MiB/s after that it
    lasts long enough to be recorded as it grows."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", LEAKER, str(cgroup), str(CHUNK), str(RATE),
         str(int(meminfo("MemTotal") * 0.3))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
    hog = Hog(proc, cgroup, "leak", 0)
    tree.hogs.append(hog)  # killed by the fixture whatever happens
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"joined"
    return hog


def replay(*argv: str) -> str:
    out = io.StringIO()
    assert main(["replay", *argv], out=out) == 0
    print(out.getvalue()[-1500:])
    return out.getvalue()


def replayed_cgroups(text: str) -> list[str]:
    """The cgroups of the replay's "replay: killed NAME (CGROUP), ..." line."""
    line = next(x for x in text.splitlines() if x.startswith("replay: killed"))
    return re.findall(r"\((/[^)]*)\)", line.split(" under ")[0])


def check_replays(oom: dict[str, Any], path: str) -> None:
    """Under the live config: the same cgroup as live. Under largest_leaf and the kernel's
    killer: a report of whom each kills."""
    inc = load_incident(path)
    assert inc.header["cgroup_version"] == 2 and inc.header["config"]
    live = sorted({v["cgroup"] for v in (inc.oom or {}).get("victims", ())})
    assert live, f"the incident names no victim: {inc.oom}"
    # The growth itself is recorded: the probe between idle samples saw it coming.
    pid = (inc.oom or {})["victims"][0]["pid"]
    grown = [p["rss"] for s in inc.samples for p in s["procs"] if p["pid"] == pid]
    print(f"{len(inc.samples)} samples; the victim's rss in them: {[g >> 20 for g in grown]}")
    assert len(grown) >= 3 and grown[-1] > grown[0], grown
    text = replay(path)
    assert "under live config" in text and "same decision as live: yes" in text, text
    assert sorted(set(replayed_cgroups(text))) == live
    for argv in (["--oom-policy", "largest_leaf"], ["--kernel"]):
        text = replay(path, *argv)
        assert "live:   killed" in text and "same decision as live:" in text, text
        assert replayed_cgroups(text), text  # whom it would have killed, named


def test_a_memcg_oom_among_three_workloads_is_recorded_and_replays(
        tree: V2Tree, tmp_path: Path) -> None:
    d = tmp_path / "oomkit"
    d.mkdir()
    app = tree.mkdir("app", max=150 * MiB)
    a, b, c = (tree.mkdir(f"app/{n}") for n in "abc")
    with protected(), daemon(d) as live:
        hog_a = tree.spawn(a, "anon", 30 * MiB)
        hog_b = tree.spawn(b, "anon", 40 * MiB)
        assert hog_a.wait_ready(SLOW) and hog_b.wait_ready(SLOW)
        proc = grower(c, 4 * MiB, 0.5)
        try:
            oom = live.wait_record(lambda r: r["event"] == "oom", timeout=SLOW * 2)
            assert wait_for(lambda: proc.poll() is not None, SLOW), "c survived"
        finally:
            proc.kill()
            proc.wait(10)
        print(oom)
        rel = "/" + str(app.relative_to("/sys/fs/cgroup"))
        assert oom["memcg"] == rel and oom["resolved_by"] == "handler"
        assert oom["policy"] == "kill_cause", oom
        assert [v["cgroup"] for v in oom["victims"]] == [f"{rel}/c"], oom
        assert hog_a.alive() and hog_b.alive()
        path = str(oom["incident"])
        assert wait_for(lambda: Path(path).exists(), SLOW)
    check_replays(oom, path)


def test_a_system_wide_leak_is_recorded_and_replays(tree: V2Tree, tmp_path: Path) -> None:
    d = tmp_path / "oomkit"
    d.mkdir()
    leak = tree.mkdir("leak")
    (tree.root / "memory.max").write_text("max")  # a real system-wide shortage
    with protected(), daemon(d) as live:
        hog = leaker(tree, leak)
        time.sleep(2)  # the recorder's first sample (1 s after the start) comes first
        hog.go()
        assert hog.wait_dead(SLOW * 2), "the leaker should be killed"
        oom = live.wait_record(lambda r: r["event"] == "oom" and bool(r["victims"]),
                               timeout=SLOW)
        print(oom)
        assert oom["memcg"] in (None, "/") and oom["victims"][0]["pid"] == hog.pid, oom
        path = str(oom["incident"])
        assert wait_for(lambda: Path(path).exists(), SLOW)
    check_replays(oom, path)
