"""tmpfs_cleanup without ``paths`` (as ``--oom-policy tmpfs_cleanup`` gives it: the
command line passes no arguments) scans /dev/shm, the recommended config's directory;
``paths = []`` scans nothing."""

from __future__ import annotations

import io
from pathlib import Path

from oomkit.cli import main
from oomkit.kernel.sim import Step
from oomkit.policies.tmpfs_cleanup import TmpfsCleanup

from .conftest import Sim

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tmpfs.toml"


def test_the_command_line_policy_frees_the_examples_scratch_file() -> None:
    out = io.StringIO()
    assert main(["simulate", str(EXAMPLE), "--oom-policy", "tmpfs_cleanup@/svc"], out) == 0
    text = out.getvalue()
    assert "resolved by handler tmpfs_cleanup" in text, text
    assert "0 kills" in text and "killed" not in text.split("end ")[0], text


def test_no_paths_means_dev_shm_and_an_empty_list_means_none(sim: Sim) -> None:
    k = sim.kernel
    k.create_cgroup("/svc")
    k.spawn("writer", "/svc", (Step("alloc", kind="shmem", size=8 << 20,
                                    path="/dev/shm/scratch"), Step("exit")))
    sim.run(1.0)
    assert [p for _, p in TmpfsCleanup().candidates(k)] == ["/dev/shm/scratch"]
    assert TmpfsCleanup(paths=[]).candidates(k) == []
