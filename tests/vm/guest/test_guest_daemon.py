"""The daemon's real-kernel acceptance (tests/daemon/test_daemon_live.py) on cgroup v2.

The bodies are test_daemon_live's own, unchanged: each test here only calls one, with
the same fixtures (``live``: a throwaway memcg below ours, here below the guest's root
cgroup; ``daemon_dir``). On v2 the daemon arms through the memory.high guard band and
sees kernel kills in memory.events and /dev/kmsg.

The guest boots with ``lo`` down; the module fixture brings it up (``ip link set lo up``)
so the /metrics scrape of the first test runs too. Without ``ip`` that test still checks
everything else and skips with test_daemon_live's "no loopback network here" reason.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import test_daemon_live as dl
from tests.daemon.test_daemon_live import daemon_dir as daemon_dir  # the fixture
from tests.live.conftest import LiveCgroups
from tests.live.conftest import live as live  # the fixture

from .conftest import GUEST_ONLY

pytestmark = GUEST_ONLY


@pytest.fixture(scope="module", autouse=True)
def loopback() -> Iterator[None]:
    """``lo`` up for the /metrics scrape (the guest boots with it down)."""
    ip = shutil.which("ip")
    if ip is not None:
        subprocess.run([ip, "link", "set", "lo", "up"], capture_output=True, check=False)
    yield


@pytest.fixture
def v2_live(live: LiveCgroups) -> LiveCgroups:
    assert not live.v1, f"{live.root}: expected cgroup v2 in the guest"
    return live


def test_a_memcg_oom_is_handled_logged_with_its_victim_and_counted(
    v2_live: LiveCgroups, daemon_dir: Path
) -> None:
    dl.test_a_memcg_oom_is_handled_logged_with_its_victim_and_counted(v2_live, daemon_dir)


def test_a_kernel_resolved_oom_outside_the_handlers_scope_is_in_the_same_log(
    v2_live: LiveCgroups, daemon_dir: Path
) -> None:
    dl.test_a_kernel_resolved_oom_outside_the_handlers_scope_is_in_the_same_log(
        v2_live, daemon_dir
    )


def test_sighup_with_a_broken_file_keeps_the_old_config(
    v2_live: LiveCgroups, daemon_dir: Path
) -> None:
    dl.test_sighup_with_a_broken_file_keeps_the_old_config(v2_live, daemon_dir)


def test_a_group_writable_policy_file_is_refused(
    v2_live: LiveCgroups, daemon_dir: Path, tmp_path: Path
) -> None:
    dl.test_a_group_writable_policy_file_is_refused(v2_live, daemon_dir, tmp_path)


def test_sigkill_leaves_the_restoring_to_the_watchdog(
    v2_live: LiveCgroups, daemon_dir: Path
) -> None:
    dl.test_sigkill_leaves_the_restoring_to_the_watchdog(v2_live, daemon_dir)


def test_dry_run_arms_nothing_and_logs_the_kernel_kill(
    v2_live: LiveCgroups, daemon_dir: Path
) -> None:
    dl.test_dry_run_arms_nothing_and_logs_the_kernel_kill(v2_live, daemon_dir)


def test_self_protection_of_the_running_daemon(v2_live: LiveCgroups, daemon_dir: Path) -> None:
    dl.test_self_protection_of_the_running_daemon(v2_live, daemon_dir)
