"""What the daemon and its watchdog load: everything imported stays, locked, for good.

The figures are bench/daemon_overhead.py's; these tests only keep the big modules that no
OOM decision needs from creeping back in (issue 10: the daemon and its watchdog together
lock at most 30 MiB).
"""

from __future__ import annotations

import json
import subprocess
import sys

import oomkit.kernel.linux.watchdog as watchdog

#: Loaded by none of the daemon's modules: the simulator, the lab's comparison pool,
#: importlib.metadata (the email parser), OpenSSL and the HTTP/URL stacks.
NOT_IN_THE_DAEMON = ("oomkit.kernel.sim", "oomkit.lab.compare", "oomkit.lab.simulate",
                     "importlib.metadata", "email", "ssl", "http.server", "http.client",
                     "urllib.request", "wsgiref", "prometheus_client", "multiprocessing",
                     "concurrent.futures")

DAEMON = """
import json, sys
from oomkit.cli import build_parser
build_parser(lean=True).parse_args(["run", "--config", "x.toml"])
import oomkit.daemon_cli, oomkit.daemon.service, oomkit.daemon.backend
import oomkit.kernel.linux.kernel, oomkit.kernel.linux.v1, oomkit.kernel.linux.v2
from oomkit.daemon.config import Listen
from oomkit.daemon.metrics import Metrics, MetricsServer
from oomkit.meta import package_version
package_version()
MetricsServer(Metrics(), Listen("127.0.0.1", 0)).close()
print(json.dumps(sorted(sys.modules)))
"""


def test_oomkit_run_loads_no_module_it_does_not_decide_with() -> None:
    r = subprocess.run([sys.executable, "-c", DAEMON], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)
    found = [m for m in loaded for bad in NOT_IN_THE_DAEMON
             if m == bad or m.startswith(bad + ".")]
    assert not found, found


def test_the_watchdog_process_imports_the_standard_library_it_uses_only() -> None:
    """Started as spawn_watchdog starts it (-I -S, by file path): no site, no subprocess
    or threading, no dataclasses or typing (about 2 MiB of RSS with inspect, ast, dis),
    nothing of the oomkit package (its siblings are loaded by path)."""
    r = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", watchdog.__file__,
                        "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage:" in r.stderr, r.stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
              if line.startswith("import time:") and "imported package" not in line}
    assert {"json", "ctypes", "select"} <= loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in
                   ("subprocess", "site", "oomkit", "threading", "email", "ssl",
                    "dataclasses", "typing", "inspect"))
    assert not heavy, heavy
