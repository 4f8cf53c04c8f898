"""Fault injection, issue 14 item 1: the daemon never arms the memcg that holds it.

The runtime runs in T/oomkit (T: a throwaway memcg below our own) with a system-wide
handler, the way the fault campaign ran it. On v1 arming T/oomkit, or T above it, would
let an OOM there put the daemon and its watchdog to sleep with the killer disabled. Then
the handler allocates far past T/oomkit's limit while T/app is under OOM: the kernel
kills the runtime (T/oomkit is not armed), its watchdog gives T/app back to the kernel
killer, the hog dies, and every oom_kill_disable is back to its original.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import LiveCgroups, MiB, set_limit, wait_for
from .test_watchdog_hung import oom_control, running

pytestmark = pytest.mark.privileged

RUNTIME = """
import os, sys, threading
from pathlib import Path
Path(sys.argv[3], "cgroup.procs").write_text(str(os.getpid()))  # into T/oomkit first
from oomkit.kernel.linux import LinuxKernel
from oomkit.live import install_signal_handlers, serve
from oomkit.ops import OomOps
from oomkit.runtime import Runtime

class Greedy(OomOps):
    name = "greedy"
    def handle_out_of_memory(self, ctx, oc):
        junk = b"x" * (160 << 20)  # far past T/oomkit's limit
        return bool(junk)

kernel = LinuxKernel(sys.argv[1], state_file=sys.argv[2])
runtime = Runtime(kernel, budget_s=5.0)
link = runtime.attach_oom(Greedy(), None)
print(link.mechanism if hasattr(link, "mechanism") else "", file=sys.stderr, flush=True)
stop = threading.Event()
install_signal_handlers(stop)
serve(kernel, runtime, stop, on_ready=lambda: print("ready", flush=True))
"""


def test_the_memcg_holding_the_daemon_is_never_armed(live_v1: LiveCgroups,
                                                     tmp_path: Path) -> None:
    live = live_v1
    home = live.mkdir("oomkit", limit=96 * MiB)
    app = live.mkdir("app", limit=64 * MiB)
    state = tmp_path / "restore.json"
    err = tmp_path / "runtime.stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", RUNTIME, str(live.root), str(state),
                                 str(home)], stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", \
            err.read_text()
        assert oom_control(app)["oom_kill_disable"] == 1  # armed: the handlers go first
        assert oom_control(home)["oom_kill_disable"] == 0  # holds the daemon: never
        assert oom_control(live.root)["oom_kill_disable"] == 0  # covers it (v1): never

        start = time.monotonic()
        hog = live.spawn(app, "anon", 100 * MiB)
        assert hog.wait_dead(20), "the OOM in T/app never ended"
        elapsed = time.monotonic() - start
        assert proc.wait(10) == -signal.SIGKILL  # the kernel killed the greedy runtime
        assert wait_for(lambda: not state.exists(), 5), "the watchdog restored and left"
        for d in (app, home, live.root):
            assert oom_control(d)["oom_kill_disable"] == 0, d
        print(f"\nOOM in T/app ended after {elapsed:.2f} s (runtime killed in T/oomkit)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        set_limit(home, 512 * MiB)
        with contextlib.suppress(OSError):
            for d in (app, home, live.root):
                (d / "memory.oom_control").write_text("0")
        wait_for(lambda: not any(running(int(p)) for p in
                                 (home / "cgroup.procs").read_text().split()), 5)
        for p in (home / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                os.kill(int(p), signal.SIGKILL)
