#!/usr/bin/env python3
"""Issue 14's nine kinds of fault, re-run against the daemon the way they were found: live
cgroup v1, small memcgs below our own, ``oomkit run`` as root.

For each scenario it prints one row: how long the OOM took to end (against the budget
plus the hand-over time), whether every ``oom_kill_disable`` below the test memcg was
back to its original after the daemon stopped (v1 has no memory.high), whether a file
that is not oomkit's own was written or removed (sentinels owned by another user, and
whatever the scenario plants), and the OOMs in the event log against the OOMs caused.

    sudo .venv/bin/python scripts/fault_campaign.py [--only KIND,...]

Needs root and the cgroup v1 memory controller; every memcg and process it makes is
removed and killed afterwards, failures included. Runs in about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.live.conftest import (  # noqa: E402
    HOG,
    Hog,
    destroy,
    own_memcg_dir,
    set_limit,
)

MiB = 1 << 20
BUDGET_S = 0.5
HANDOVER_S = 3.0  # the watchdog's deadline for budget 0.5 s (backend.watchdog_deadline)
NOBODY = 65534


@dataclass
class Row:
    kind: int
    scenario: str
    ended_s: float | None = None  # None: no OOM in this scenario
    restored: bool = True
    foreign_ok: bool = True
    ooms_logged: int = 0
    ooms_caused: int = 0
    note: str = ""

    def ok(self) -> bool:
        bound = BUDGET_S + HANDOVER_S + 1.0
        return (self.restored and self.foreign_ok and self.ooms_logged == self.ooms_caused
                and (self.ended_s is None or self.ended_s <= bound))


@dataclass
class Scene:
    """One scenario's memcgs, files and processes, removed by close()."""

    root: Path
    tmp: Path
    foreign: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    hogs: list[Hog] = field(default_factory=list)
    sums: dict[str, str] = field(default_factory=dict)

    def mkdir(self, rel: str, limit: int | None = None) -> Path:
        d = self.root / rel
        d.mkdir(parents=True, exist_ok=True)
        if limit is not None:
            set_limit(d, limit)
        return d

    def config(self, body: str, daemon: str = "", metrics: str = "") -> Path:
        c = self.tmp / "oomkit.toml"
        c.write_text(
            f'[daemon]\ncgroup_root = "{self.root}"\nstate_file = "{self.tmp}/run/restore.json"\n'
            f'event_log = "{self.tmp}/log/events.jsonl"\nstatus_file = "{self.tmp}/run/'
            f'status.json"\nbudget = "{BUDGET_S}s"\nmlock = false\n{daemon}'
            f'[metrics]\nlisten = "{metrics}"\n{body}')
        return c

    def policy(self, name: str, source: str) -> Path:
        p = self.tmp / f"{name}.py"
        p.write_text(source)
        os.chmod(p, 0o644)
        return p

    def daemon(self, config: Path, *extra: str, cgroup: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        pre = None
        if cgroup is not None:
            procs = str(cgroup / "cgroup.procs")

            def pre() -> None:
                Path(procs).write_text(str(os.getpid()))
        run_env = {k: v for k, v in os.environ.items() if k != "OOMKIT_WATCHDOG_HUNG_AFTER"}
        run_env.update(env or {})
        proc = subprocess.Popen([sys.executable, "-m", "oomkit.cli", "run", "--config",
                                 str(config), "--quiet", *extra], stderr=subprocess.PIPE,
                                env=run_env, preexec_fn=pre, cwd=self.tmp)
        self.procs.append(proc)
        return proc

    def hog(self, cgroup: Path, size: int = 64 * MiB) -> Hog:
        proc = subprocess.Popen([sys.executable, "-I", "-c", HOG, "anon", str(size), ""],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        hog = Hog(proc, cgroup, "anon", size)
        self.hogs.append(hog)
        (cgroup / "cgroup.procs").write_text(str(proc.pid))
        hog.go()
        return hog

    def snapshot(self, *extra: Path) -> None:
        self.sums = _sums([self.foreign, *extra])

    def foreign_intact(self, *extra: Path) -> bool:
        return _sums([self.foreign, *extra]) == self.sums

    def ooms(self) -> int:
        log = self.tmp / "log" / "events.jsonl"
        if not log.exists() or log.is_symlink():
            return 0
        return sum(1 for line in log.read_text().splitlines()
                   if line.strip() and json.loads(line).get("event") == "oom")

    def restored(self) -> bool:
        for d, _, _ in os.walk(self.root):
            ctl = Path(d, "memory.oom_control")
            with contextlib.suppress(OSError):
                if "oom_kill_disable 1" in ctl.read_text():
                    return False
        return True

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        for hog in self.hogs:
            hog.kill()
        destroy(self.root)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _sums(paths: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for top in paths:
        if top.is_file() or top.is_symlink():
            files = [top]
        else:
            files = [Path(d, f) for d, _, fs in os.walk(top) for f in fs]
        for f in files:
            try:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError as exc:
                out[str(f)] = f"unreadable: {exc.strerror}"
    return out


_n = 0


@contextlib.contextmanager
def scene() -> Iterator[Scene]:
    global _n
    own = own_memcg_dir()
    if own is None or not (own / "memory.oom_control").exists():
        sys.exit("needs the cgroup v1 memory controller and a memcg of our own")
    _n += 1
    root = own / f"oomkit-campaign-{os.getpid()}-{_n}"
    root.mkdir()
    set_limit(root, 512 * MiB)
    tmp = Path(tempfile.mkdtemp(prefix="oomkit-campaign-"))
    os.chmod(tmp, 0o755)
    foreign = tmp / "other-user"
    foreign.mkdir()
    (foreign / "data.txt").write_text("another user's file\n")
    for p in (foreign, foreign / "data.txt"):
        os.chown(p, NOBODY, NOBODY)
    s = Scene(root, tmp, foreign)
    s.snapshot()
    try:
        yield s
    finally:
        s.close()


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def armed(d: Path) -> bool:
    return "oom_kill_disable 1" in (d / "memory.oom_control").read_text()


def oom_ended(s: Scene, hog: Hog, timeout: float = 20.0) -> float | None:
    start = time.monotonic()
    return time.monotonic() - start if hog.wait_dead(timeout) else None


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def settle(s: Scene) -> None:
    """The watchdog is done when the journal is gone."""
    wait_for(lambda: not (s.tmp / "run" / "restore.json").exists(), 10)


def one_oom(s: Scene, row: Row, proc: subprocess.Popen[bytes], box: Path,
            before_stop: Callable[[], None] | None = None) -> Row:
    hog = s.hog(box)
    row.ended_s = oom_ended(s, hog)
    row.ooms_caused = 1
    if before_stop is not None:
        before_stop()
    rc = stop(proc)
    settle(s)
    row.restored = s.restored()
    row.ooms_logged = s.ooms()
    row.note = (row.note + f" exit {rc}").strip()
    return row


GIL = '''
import re
from oomkit import OomOps
class Gil(OomOps):
    name = "gil"
    def handle_out_of_memory(self, ctx, oc):
        re.match(r"(a+)+$", "a" * 64 + "b")
        return False
'''


# -- the kinds --------------------------------------------------------------------------------
def kind1() -> list[Row]:
    """The daemon in T/oomkit with a system-wide [[oom]] and a handler that allocates."""
    rows = []
    with scene() as s:
        home = s.mkdir("oomkit", 96 * MiB)
        app = s.mkdir("app", 32 * MiB)
        pol = s.policy("alloc", "from oomkit import OomOps\nclass Alloc(OomOps):\n"
                       "    name = 'alloc'\n    def handle_out_of_memory(self, ctx, oc):\n"
                       "        b = bytearray(200 << 20)\n        return False\n")
        proc = s.daemon(s.config(f'[[oom]]\npolicy = "{pol}:Alloc"\n'), cgroup=home)
        wait_for(lambda: armed(app), 15)
        row = Row(1, "system-wide [[oom]], daemon's memcg, allocating handler")
        row.note = "daemon memcg armed" if armed(home) else "daemon memcg not armed"
        rows.append(one_oom(s, row, proc, app))
        row.foreign_ok = s.foreign_intact()
    return rows


def kind2() -> list[Row]:
    rows = []
    with scene() as s:
        box = s.mkdir("box", 256 * MiB)
        proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'))
        wait_for(lambda: armed(box), 15)
        time.sleep(1.5)
        os.kill(proc.pid, signal.SIGSTOP)
        new = s.mkdir("box/new", 32 * MiB)
        row = Row(2, "memcg made below an armed one while the daemon is SIGSTOPped")
        rows.append(one_oom(s, row, proc, new,
                            before_stop=lambda: os.kill(proc.pid, signal.SIGCONT)))
        row.foreign_ok = s.foreign_intact()
    with scene() as s:
        box = s.mkdir("box", 256 * MiB)
        proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'))
        wait_for(lambda: armed(box), 15)
        os.kill(proc.pid, signal.SIGSTOP)
        new = s.mkdir("box/new", 32 * MiB)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        settle(s)
        row = Row(2, "memcg made while SIGSTOPped, then daemon SIGKILLed")
        row.restored = s.restored()
        hog = s.hog(new)
        row.ended_s, row.ooms_caused = oom_ended(s, hog), 0  # no daemon: the kernel's
        row.ooms_logged = s.ooms()
        row.foreign_ok = s.foreign_intact()
        rows.append(row)
    return rows


def kind3() -> list[Row]:
    rows = []
    with scene() as s:
        box = s.mkdir("box", 32 * MiB)
        pol = s.policy("gil", GIL)
        proc = s.daemon(s.config(f'[[oom]]\npolicy = "{pol}:Gil"\ncgroup = "/box"\n'))
        wait_for(lambda: armed(box), 15)
        hog = s.hog(box)
        row = Row(3, "handler holding the GIL (regex), budget 0.5 s")
        row.ended_s, row.ooms_caused = oom_ended(s, hog), 1
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(10)
            row.note = f"SIGTERM ended it in {time.monotonic() - t:.2f} s (rc {rc})"
        except subprocess.TimeoutExpired:
            row.note = "SIGTERM ignored for 10 s"
            row.restored = False
        settle(s)
        row.restored = row.restored and s.restored()
        row.ooms_logged = s.ooms()
        row.foreign_ok = s.foreign_intact()
        rows.append(row)
    with scene() as s:
        for bad in ('"1000h"', '"nan"', '"inf"'):
            cfg = s.config('[[oom]]\npolicy = "largest_leaf"\n', daemon=f"budget = {bad}\n")
            cfg.write_text(cfg.read_text().replace(f'budget = "{BUDGET_S}s"\n', "", 1))
            got = subprocess.run([sys.executable, "-m", "oomkit.cli", "check-config", str(cfg)],
                                 capture_output=True, text=True)
            one = got.returncode == 2 and len(got.stderr.strip().splitlines()) == 1 \
                and "Traceback" not in got.stderr
            rows.append(Row(3, f"config budget = {bad}", foreign_ok=s.foreign_intact(),
                            restored=one, note=f"exit {got.returncode}: "
                            f"{got.stderr.strip()[-70:]}"))
    return rows


def kind4() -> list[Row]:
    rows = []
    for what, body in (("sys.exit at import", "import sys\nsys.exit(0)\n"),
                       ("os._exit at import", "import os\nos._exit(0)\n"),
                       ("import blocks", "import time\ntime.sleep(3600)\n")):
        with scene() as s:
            box = s.mkdir("box", 32 * MiB)
            cfg = s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n')
            proc = s.daemon(cfg)
            wait_for(lambda b=box: armed(b), 15)  # type: ignore[misc]
            bad = s.policy("bad", body + "from oomkit import OomOps\nclass P(OomOps):\n"
                           "    name = 'p'\n")
            cfg.write_text(cfg.read_text().replace('"largest_leaf"', f'"{bad}:P"'))
            t = time.monotonic()
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0 if "blocks" not in what else 12.0)
            row = Row(4, f"SIGHUP to a policy whose {what}")
            alive = proc.poll() is None
            row.note = f"alive after reload: {alive} ({time.monotonic() - t:.1f} s)"
            if not alive:
                row.restored = False
            rows.append(one_oom(s, row, proc, box))
            row.foreign_ok = s.foreign_intact()
    return rows


def kind5() -> list[Row]:
    rows = []
    with scene() as s:
        victim = s.foreign / "data.txt"
        (s.tmp / "run").mkdir(mode=0o700)
        planted = {"version": 1, "pid": 1, "settings": [
            {"path": str(victim), "original": "owned", "dir_inode": 0}]}
        (s.tmp / "run" / "restore.json").write_text(json.dumps(planted))
        box = s.mkdir("box", 32 * MiB)
        proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'))
        wait_for(lambda: armed(box) or proc.poll() is not None, 15)
        row = Row(5, "journal planted at the state path naming another user's file")
        rows.append(one_oom(s, row, proc, box))
        row.foreign_ok = s.foreign_intact()
    with scene() as s:
        target = s.tmp / "not-a-journal.txt"
        target.write_text("keep me\n")
        s.snapshot(target)
        cfg = s.config('[[oom]]\npolicy = "largest_leaf"\n')
        cfg.write_text(cfg.read_text().replace(f"{s.tmp}/run/restore.json", str(target)))
        proc = s.daemon(cfg)
        rc = proc.wait(15)
        rows.append(Row(5, "state_file naming an existing file", restored=s.restored(),
                        foreign_ok=s.foreign_intact(target) and target.exists(),
                        note=f"exit {rc}"))
    with scene() as s:
        box = s.mkdir("box", 32 * MiB)
        old = os.umask(0)
        try:
            proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'))
            wait_for(lambda: armed(box), 15)
        finally:
            os.umask(old)
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in
                 (s.tmp / "run", s.tmp / "run" / "restore.json", s.tmp / "log")}
        twin = s.daemon(s.tmp / "oomkit.toml")
        rc2 = twin.wait(15)
        row = Row(5, "umask 000, and a second daemon on the same state file")
        row.note = f"modes {modes}; second daemon exit {rc2}"
        rows.append(one_oom(s, row, proc, box))
        row.foreign_ok = s.foreign_intact()
    return rows


def kind6() -> list[Row]:
    rows = []
    with scene() as s:
        victim = s.foreign / "data.txt"
        (s.tmp / "log").mkdir(mode=0o700)
        os.symlink(victim, s.tmp / "log" / "events.jsonl")
        box = s.mkdir("box", 32 * MiB)
        proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'))
        wait_for(lambda: armed(box), 15)
        row = Row(6, "event log path is a link to another user's file")
        one_oom(s, row, proc, box)
        row.ooms_logged, row.ooms_caused = 0, 0  # no log to count (refused, reported)
        row.foreign_ok = s.foreign_intact()
        rows.append(row)
    with scene() as s:
        real = s.policy("real", "from oomkit import OomOps\nclass P(OomOps):\n  name='p'\n")
        os.chown(real, NOBODY, NOBODY)
        link = s.tmp / "linked.py"
        os.symlink(real, link)
        cfg = s.config(f'[[oom]]\npolicy = "{link}:P"\n')
        got = subprocess.run([sys.executable, "-m", "oomkit.cli", "check-config", str(cfg)],
                             capture_output=True, text=True)
        rows.append(Row(6, "policy file through a link to another user's file",
                        restored=got.returncode == 2, foreign_ok=s.foreign_intact(),
                        note=f"exit {got.returncode}: {got.stderr.strip()[-60:]}"))
    with scene() as s:
        shm = Path(tempfile.mkdtemp(prefix="oomkit-campaign-", dir="/dev/shm"))
        try:
            os.chmod(shm, 0o1777)
            outside = Path(tempfile.mkdtemp(prefix="oomkit-campaign-out-", dir="/dev/shm"))
            (outside / "keep.bin").write_bytes(b"x" * MiB)
            os.symlink(outside, shm / "cache")
            s.snapshot(outside)
            box = s.mkdir("box", 32 * MiB)
            proc = s.daemon(s.config(
                f'[[oom]]\npolicy = "tmpfs_cleanup"\ncgroup = "/box"\n'
                f'args = {{ paths = ["{shm}/cache"] }}\n'))
            wait_for(lambda: armed(box), 15)
            row = Row(6, "tmpfs_cleanup over a cache dir that is a planted link")
            one_oom(s, row, proc, box)
            row.foreign_ok = s.foreign_intact(outside)
            rows.append(row)
        finally:
            shutil.rmtree(shm, ignore_errors=True)
            with contextlib.suppress(NameError):
                shutil.rmtree(outside, ignore_errors=True)
    return rows


def kind7() -> list[Row]:
    rows = []
    with scene() as s:
        box = s.mkdir("box", 32 * MiB)
        other = s.mkdir("other", 64 * MiB)
        bystander = s.hog(other, 4 * MiB)
        bystander.wait_ready()
        outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        s.procs.append(outside)
        pol = s.policy("wrong", f'''
import os, json
from oomkit import OomOps
from oomkit.kernel.base import Task
class Wrong(OomOps):
    name = "wrong"
    def handle_out_of_memory(self, ctx, oc):
        k = oc.kernel
        state = json.load(open("{s.tmp}/run/restore.json"))
        for pid in (os.getpid(), state["watchdog_pid"], {outside.pid}, {bystander.pid}):
            try:
                oc.kill_process(Task(pid, "x", k.mem_cgroup("/other"), 0, 1 << 20, 0, 0))
            except Exception:
                pass
        return True
''')
        proc = s.daemon(s.config(f'[[oom]]\npolicy = "{pol}:Wrong"\ncgroup = "/box"\n'))
        wait_for(lambda: armed(box), 15)
        row = Row(7, "handler kills the daemon, its watchdog, an outsider, a sibling")
        one_oom(s, row, proc, box, before_stop=lambda: setattr(
            row, "note", f"daemon alive {proc.poll() is None}, outsider alive "
            f"{outside.poll() is None}, sibling alive {bystander.alive()}"))
        row.foreign_ok = s.foreign_intact()
        rows.append(row)
    return rows


def kind8() -> list[Row]:
    rows = []
    with scene() as s:  # a busy metrics port
        import socket
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        box = s.mkdir("box", 32 * MiB)
        proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n',
                                 metrics=f"127.0.0.1:{sock.getsockname()[1]}"))
        started = wait_for(lambda: armed(box), 15)
        rows.append(one_oom(s, Row(8, "metrics port busy", note=f"armed {started}"),
                            proc, box))
        rows[-1].foreign_ok = s.foreign_intact()
        sock.close()
    with scene() as s:  # a read-only event-log directory
        box = s.mkdir("box", 32 * MiB)
        logdir = s.tmp / "log"
        logdir.mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "oomkit-ro", str(logdir)],
                       check=True)
        try:
            proc = s.daemon(s.config('[[oom]]\npolicy = "largest_leaf"\ncgroup = "/box"\n'))
            started = wait_for(lambda: armed(box), 15)
            row = Row(8, "event log directory read-only", note=f"armed {started}")
            one_oom(s, row, proc, box)
            row.ooms_caused = 0  # nowhere to log: reported on stderr
            row.foreign_ok = s.foreign_intact()
            rows.append(row)
        finally:
            subprocess.run(["umount", "-l", str(logdir)], check=False)
    for how in ("SIGKILL during the OOM", "handler calls os._exit", "handler forks"):
        with scene() as s:
            box = s.mkdir("box", 32 * MiB)
            body = {"SIGKILL during the OOM": GIL,
                    "handler calls os._exit": "import os\nfrom oomkit import OomOps\n"
                    "class Gil(OomOps):\n    name='x'\n    def handle_out_of_memory(self, c, o):"
                    "\n        os._exit(0)\n",
                    "handler forks": "import os, time\nfrom oomkit import OomOps\n"
                    "class Gil(OomOps):\n    name='x'\n    def handle_out_of_memory(self, c, o):"
                    "\n        if os.fork() == 0:\n            time.sleep(5)\n"
                    "            os._exit(0)\n        return False\n"}[how]
            pol = s.policy("p", body)
            proc = s.daemon(s.config(f'[[oom]]\npolicy = "{pol}:Gil"\ncgroup = "/box"\n'))
            wait_for(lambda b=box: armed(b), 15)  # type: ignore[misc]
            row = Row(8, how)
            if how.startswith("SIGKILL"):
                hog = s.hog(box)
                time.sleep(0.3)
                proc.kill()
                proc.wait()
                row.ended_s, row.ooms_caused = oom_ended(s, hog), 1
                settle(s)
                row.restored, row.ooms_logged = s.restored(), s.ooms()
                row.note = "daemon SIGKILLed 0.3 s into the OOM"
            else:
                one_oom(s, row, proc, box, before_stop=lambda r=row, p=proc: setattr(
                    r, "note", f"daemon alive after the OOM: {p.poll() is None};"))
            row.foreign_ok = s.foreign_intact()
            rows.append(row)
    return rows


def kind9() -> list[Row]:
    rows = []
    inputs = {
        "400-digit number": "[daemon]\nbudget = " + "9" * 400 + "\n",
        "array nested 900 deep": "[daemon]\nx = " + "[" * 900 + "]" * 900 + "\n",
        "non-UTF-8": b"[daemon]\nbudget = \"\xff\xfe\"\n",
        "cgroup = [true]": '[[oom]]\npolicy = "largest_leaf"\ncgroup = [true]\n',
    }
    with scene() as s:
        for what, text in inputs.items():
            f = s.tmp / "bad.toml"
            if isinstance(text, bytes):
                f.write_bytes(text)
            else:
                f.write_text(text)
            got = subprocess.run([sys.executable, "-m", "oomkit.cli", "check-config", str(f)],
                                 capture_output=True, text=True)
            one = got.returncode == 2 and len(got.stderr.strip().splitlines()) == 1
            rows.append(Row(9, f"check-config: {what}", restored=one,
                            foreign_ok=s.foreign_intact(),
                            note=f"exit {got.returncode}: {got.stderr.strip()[-60:]}"))
        scen = s.tmp / "bad-scenario.toml"
        scen.write_text('[machine]\nmemory = "1G"\n[[process]]\nname = "a"\ncgroup = "/a"\n'
                        'program = [ { op = [] } ]\n')
        got = subprocess.run([sys.executable, "-m", "oomkit.cli", "simulate", str(scen)],
                             capture_output=True, text=True)
        one = got.returncode == 2 and len(got.stderr.strip().splitlines()) == 1
        rows.append(Row(9, "simulate: op = []", restored=one, foreign_ok=s.foreign_intact(),
                        note=f"exit {got.returncode}: {got.stderr.strip()[-60:]}"))
    return rows


KINDS = {1: kind1, 2: kind2, 3: kind3, 4: kind4, 5: kind5, 6: kind6, 7: kind7, 8: kind8,
         9: kind9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated kinds (1-9)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("fault_campaign: needs root", file=sys.stderr)
        return 2
    kinds = [int(k) for k in args.only.split(",") if k] or list(KINDS)
    bound = BUDGET_S + HANDOVER_S + 1.0
    print(f"OOM bound: budget {BUDGET_S} s + hand-over {HANDOVER_S} s + 1 s = {bound} s; "
          "'restored/one-line': oom_kill_disable back (or: refused with one line, exit 2)")
    print(f"{'kind':4} {'ok':3} {'ended':>7} {'restored':8} {'foreign':7} {'ooms':>5}  "
          "scenario / note")
    bad = 0
    for k in kinds:
        for row in KINDS[k]():
            ended = "-" if row.ended_s is None else f"{row.ended_s:.2f}s"
            ok = row.ok()
            bad += not ok
            print(f"{row.kind:<4} {'yes' if ok else 'NO':3} {ended:>7} "
                  f"{'yes' if row.restored else 'NO':8} "
                  f"{'intact' if row.foreign_ok else 'TOUCHED':7} "
                  f"{row.ooms_logged}/{row.ooms_caused:<3}  {row.scenario}"
                  + (f" [{row.note}]" if row.note else ""), flush=True)
    print(f"{bad} scenario(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
