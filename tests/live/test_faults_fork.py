"""Fault injection, issue 14 item 8 on the live kernel: a handler that forks (no exec)
leaves no child holding a descriptor of the daemon (its memcgs' memory.oom_control, the
event log, the metrics socket, the journal, /dev/kmsg, the loop's eventfds), and the
child's os._exit ends the child, not the daemon."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from . import daemon as d
from .conftest import LiveCgroups, MiB, wait_for
from .test_watchdog_hung import oom_control

pytestmark = pytest.mark.privileged

POLICY = '''
import json, os
from oomkit import OomOps

class Forks(OomOps):
    name = "forks"

    def handle_out_of_memory(self, ctx, oc):
        pid = os.fork()
        if pid == 0:  # the child: what does it hold?
            links = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    links[fd] = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    pass
            with open(OUT + ".tmp", "w") as f:
                json.dump(links, f)
            os.rename(OUT + ".tmp", OUT)
            os._exit(0)
        os.waitpid(pid, 0)
        return False
'''


def test_a_forking_handlers_child_holds_nothing_of_the_daemon(live_v1: LiveCgroups,
                                                               tmp_path: Path) -> None:
    live = live_v1
    box = live.mkdir("box", limit=32 * MiB)
    out = tmp_path / "child-fds.json"
    policy = d.policy_file(tmp_path, "forks", f"OUT = {str(out)!r}\n" + POLICY)
    log = tmp_path / "log" / "events.jsonl"
    proc = d.start(d.config(tmp_path, live.root,
                            f'[[oom]]\npolicy = "{policy}:Forks"\ncgroup = "/box"\n',
                            metrics="127.0.0.1:0"))
    try:
        assert wait_for(lambda: oom_control(box)["oom_kill_disable"] == 1, 15), "not armed"
        hog = live.spawn(box, "anon", 64 * MiB)
        assert hog.wait_dead(10), "the OOM did not end"
        assert wait_for(out.exists, 5), "the handler's child wrote nothing"
        time.sleep(0.5)
        assert proc.poll() is None, "the child's os._exit ended the daemon"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        d.kill(proc)
    links = json.loads(out.read_text())
    daemon_things = ("/sys/fs/cgroup", str(log), str(tmp_path / "run"), "/dev/kmsg",
                     "socket:", "anon_inode:")
    held = {fd: link for fd, link in links.items() if link.startswith(daemon_things)}
    assert held == {}, f"the forked child holds the daemon's {held}"
    assert oom_control(box)["oom_kill_disable"] == 0, "restored after stop"
