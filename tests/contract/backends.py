"""The backends the contract suite runs on, behind one small harness each.

A harness gives a test a kernel and the few things a test must do *to* it that the Kernel
interface does not offer (make and remove a memcg, start tasks), so that each test body is
written once and runs on:

- ``sim``: the simulator (it models cgroup v2);
- ``fake_v2`` / ``fake_v1``: LinuxKernel on a tmp tree built from the recorded kernel files
  (``../shared/fixtures``, see its README). The tests play the kernel's part by writing the
  files. Tasks are real processes of this test (stopped twins, see below) with a fake
  /proc entry each, so a kill is a real SIGKILL of our own child and nothing else. The
  fake v2 cgroups have no ``cgroup.kill`` (a regular file cannot kill anything), so
  kill_cgroup takes the per-task path, as on kernels before 5.14;
- ``live_v1`` (``privileged``): LinuxKernel on a real memcg below our own, here;
- ``guest_v2`` (``vm``): not here; tests/vm runs the guest.

Tasks come as *twins*: one helper process forks the children and each stops itself at
once (SIGSTOP) before doing anything else, so they have the same RSS and page tables to
the page (checked, and made again if not) and thus equal ``oom_badness`` on the live
kernel too; they sort in fork order (PID order, the order they join their cgroup).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import pytest

from oomkit.kernel.base import Cgroup, Kernel
from oomkit.kernel.linux import LinuxKernel
from oomkit.kernel.linux import cgroupfs as cf
from oomkit.kernel.sim import MachineSpec, SimKernel, Step

MiB = 1 << 20
V2 = "linux-6.1-cgroup2"
V1 = "linux-6.18-cgroup1-memory"

TWINS = r"""
import os, signal, sys, time
n = int(sys.argv[1])
pids = [0] * n
for i in range(2):  # warm up: the fork path's own pages are faulted in before the twins
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
for i in range(n):
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    pids[i] = pid
sys.stdout.write(" ".join(map(str, pids)) + "\n")
sys.stdout.flush()
time.sleep(3600)
"""


class Harness(Protocol):
    name: str
    version: int  # 1 or 2 (the simulator models v2)

    @property
    def kernel(self) -> Kernel: ...

    #: PSI triggers can be created and polled (not on a fake tree: regular files do not
    #: poll).
    psi_triggers: bool
    #: memory.oom.group exists (not on v1).
    oom_group: bool
    #: the tree is this kernel's whole hierarchy (its root is the root memcg).
    owns_root: bool

    def mkcg(self, rel: str, memory_max: int | None = None, oom_group: bool = False) -> Cgroup:
        """A new memcg at ``/rel`` below the kernel's root (parents must exist)."""
        ...

    def rmcg(self, cg: Cgroup) -> None:
        """rmdir an empty memcg."""
        ...

    def spawn(
        self, cg: Cgroup, n: int, oom_score_adj: int = 0, into: list[Cgroup] | None = None
    ) -> list[int]:
        """``n`` tasks of equal badness in ``cg`` (or the i-th in ``into[i]``), in fork
        order; their PIDs."""
        ...

    def close(self) -> None: ...


class _Twins:
    """Stopped twin processes (real), killed at close."""

    def __init__(self) -> None:
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def start(self, n: int) -> list[int]:
        """``n`` stopped twins with the same RSS, swap and page tables (retried until so:
        the helper may fault a page in between two forks)."""
        for _ in range(10):
            pids = self._start(n)
            sizes = {self._sizes(pid) for pid in pids}
            if len(sizes) == 1:
                return pids
            self._kill(pids)
        raise AssertionError("could not make twins of equal size")

    @staticmethod
    def _sizes(pid: int) -> tuple[str, ...]:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return tuple(line for line in status if line.startswith(("VmRSS", "VmSwap", "VmPTE")))

    def _kill(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            self.pids.remove(pid)

    def _start(self, n: int) -> list[int]:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", TWINS, str(n)], stdout=subprocess.PIPE, close_fds=True
        )
        self.helpers.append(proc)
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == n, "the twins helper failed"
        self.pids.extend(pids)
        for pid in pids:  # stopped before they did anything
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state in ("T", "t"):
                    break
                time.sleep(0.005)
        return pids

    def close(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.helpers:
            proc.kill()
            proc.wait(5)
        for pid in self.pids:  # the helper's zombies go with it; ours, if any, here
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


# -- the simulator -------------------------------------------------------------------------------
class SimHarness:
    name = "sim"
    version = 2
    psi_triggers = True
    oom_group = True
    owns_root = True

    def __init__(self) -> None:
        self.kernel: SimKernel = SimKernel(MachineSpec(memory=1 << 30, duration_ns=10**12))

    def mkcg(self, rel: str, memory_max: int | None = None, oom_group: bool = False) -> Cgroup:
        return self.kernel.create_cgroup("/" + rel, memory_max=memory_max, oom_group=oom_group)

    def rmcg(self, cg: Cgroup) -> None:
        self.kernel.remove_cgroup(cg.path)

    def spawn(
        self, cg: Cgroup, n: int, oom_score_adj: int = 0, into: list[Cgroup] | None = None
    ) -> list[int]:
        program = (Step("alloc", kind="anon", size=8 * MiB), Step("sleep"))
        where = into or [cg] * n
        procs = [
            self.kernel.spawn(f"twin{i}", where[i].path, program, oom_score_adj)
            for i in range(n)
        ]
        self.kernel.run(self.kernel.clock.now_ns() + 100_000_000)
        return [p.pid for p in procs]

    def close(self) -> None:
        return None


# -- LinuxKernel on a tree of recorded files -------------------------------------------------------
class FakeHarness:
    """LinuxKernel over tmp/cg (the cgroup tree) and tmp/proc (procfs), both fake."""

    psi_triggers = False
    owns_root = True

    def __init__(self, fixtures: Path, tmp: Path, version: int) -> None:
        self.version = version
        self.name = f"fake_v{version}"
        self.oom_group = version == 2
        self.cg_root = tmp / "cg"
        self.proc = tmp / "proc"
        if version == 2:
            src = fixtures / V2
            shutil.copytree(src / "root", self.cg_root)
            shutil.copytree(src / "proc", self.proc)
            self.template = src / "app.service"
        else:
            # The recording has one memcg, app: it serves as the root (a v1 root has the
            # same files) and as the template of every memcg made here.
            src = fixtures / V1
            self.template = src / "app"
            self._copy_cgroup(self.cg_root, None)
            shutil.copytree(src / "proc", self.proc)
            shutil.copy(fixtures / V2 / "proc" / "meminfo", self.proc / "meminfo")
        self.twins = _Twins()
        self.kernel: LinuxKernel = LinuxKernel(
            str(self.cg_root), str(self.proc), kmsg_path=None, state_file=None, watchdog=False
        )

    def _copy_cgroup(self, d: Path, memory_max: int | None, oom_group: bool = False) -> None:
        shutil.copytree(self.template, d)
        (d / cf.CGROUP_PROCS).write_text("")
        if self.version == 2:
            (d / cf.CGROUP_KILL).unlink()
            (d / cf.MEMORY_MAX).write_text(cf.format_limit_v2(memory_max) + "\n")
            (d / cf.MEMORY_HIGH).write_text("max\n")
            (d / cf.MEMORY_OOM_GROUP).write_text("1\n" if oom_group else "0\n")
        else:
            limit = str(cf.V1_UNLIMITED if memory_max is None else memory_max)
            (d / cf.V1_LIMIT).write_text(limit + "\n")
            (d / cf.V1_MEMSW_LIMIT).write_text(limit + "\n")
            (d / cf.V1_OOM_CONTROL).write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
            # Write-only on the kernel, so not in the recording; arming writes to it.
            (d / cf.V1_EVENT_CONTROL).write_text("")

    def dir(self, cg: Cgroup) -> Path:
        return self.cg_root / cg.path.lstrip("/")

    def mkcg(self, rel: str, memory_max: int | None = None, oom_group: bool = False) -> Cgroup:
        self._copy_cgroup(self.cg_root / rel, memory_max, oom_group)
        cg = self.kernel.mem_cgroup("/" + rel)
        assert cg is not None
        return cg

    def rmcg(self, cg: Cgroup) -> None:
        shutil.rmtree(self.dir(cg))

    def spawn(
        self, cg: Cgroup, n: int, oom_score_adj: int = 0, into: list[Cgroup] | None = None
    ) -> list[int]:
        pids = self.twins.start(n)
        for i, pid in enumerate(pids):
            d = self.proc / str(pid)
            d.mkdir()
            # The real stat (its start time is what a kill checks), a recorded-style
            # status with the same sizes for every twin.
            (d / "stat").write_text(Path(f"/proc/{pid}/stat").read_text())
            (d / "status").write_text(
                f"Name:\ttwin\nPid:\t{pid}\nVmRSS:\t    8192 kB\nVmSwap:\t       0 kB\n"
                "VmPTE:\t      64 kB\nShdPnd:\t0000000000000000\nSigPnd:\t0000000000000000\n"
            )
            (d / "oom_score_adj").write_text(f"{oom_score_adj}\n")
            procs = self.dir(into[i] if into else cg) / cf.CGROUP_PROCS
            procs.write_text(procs.read_text() + f"{pid}\n")
        return pids

    def close(self) -> None:
        self.kernel.close()
        self.twins.close()


# -- LinuxKernel on a real v1 memcg here --------------------------------------------------------
_counter = itertools.count()


class _LiveHarness:
    """What the live harnesses share: ``root`` (our memcg below which all is made), the
    twins, and the cleanup."""

    root: Path
    twins: _Twins
    kernel: LinuxKernel

    def rmcg(self, cg: Cgroup) -> None:
        from oomkit.kernel.linux import fsio

        assert fsio.remove_tree(str(self.root / cg.path.lstrip("/")))

    def spawn(
        self, cg: Cgroup, n: int, oom_score_adj: int = 0, into: list[Cgroup] | None = None
    ) -> list[int]:
        pids = self.twins.start(n)
        for i, pid in enumerate(pids):
            Path(f"/proc/{pid}/oom_score_adj").write_text(str(oom_score_adj))
            target = into[i] if into else cg
            (self.root / target.path.lstrip("/") / cf.CGROUP_PROCS).write_text(str(pid))
        return pids

    def close(self) -> None:
        from tests.live.conftest import destroy

        try:
            self.kernel.close()
        finally:
            self.twins.close()
            kill = self.root / cf.CGROUP_KILL  # v2: everything at once
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
            destroy(self.root)


class LiveV1Harness(_LiveHarness):
    """A fresh memcg below our own (limited to 256M as a backstop) as the kernel's root."""

    name = "live_v1"
    version = 1
    psi_triggers = True
    oom_group = False
    owns_root = False

    def __init__(self) -> None:
        from tests.live.conftest import own_memcg_dir

        own = own_memcg_dir()
        if os.geteuid() != 0:
            pytest.skip("the live backend needs root")
        if own is None or not (own / cf.V1_OOM_CONTROL).exists():
            pytest.skip("needs a cgroup v1 memory controller of our own (memory.oom_control)")
        self.root = own / f"oomkit-contract-{os.getpid()}-{next(_counter)}"
        try:
            self.root.mkdir()
        except OSError as exc:
            pytest.skip(f"cannot create a memory cgroup below {own}: {exc}")
        self.twins = _Twins()
        self._set_limit(self.root, 256 * MiB)
        self.kernel: LinuxKernel = LinuxKernel(
            str(self.root), kmsg_path=None, state_file=None, watchdog=False
        )

    @staticmethod
    def _set_limit(d: Path, nbytes: int) -> None:
        from tests.live.conftest import set_limit

        set_limit(d, nbytes)

    def mkcg(self, rel: str, memory_max: int | None = None, oom_group: bool = False) -> Cgroup:
        d = self.root / rel
        d.mkdir()
        if memory_max is not None:
            self._set_limit(d, memory_max)
        cg = self.kernel.mem_cgroup("/" + rel)
        assert cg is not None
        return cg


# -- LinuxKernel on real cgroup v2 (the QEMU guest) ----------------------------------------------
class LiveV2Harness(_LiveHarness):
    """A fresh cgroup below /sys/fs/cgroup (memory.max 512M, no swap) as the kernel's root.
    Only in the guest (tests/vm/guest/test_guest_contract.py runs the suite there)."""

    name = "live_v2"
    version = 2
    psi_triggers = True
    oom_group = True
    owns_root = False

    def __init__(self) -> None:
        import secrets

        top = Path("/sys/fs/cgroup")
        controllers = top / cf.CGROUP_CONTROLLERS
        if not controllers.exists() or "memory" not in controllers.read_text().split():
            pytest.skip("no cgroup v2 memory controller at /sys/fs/cgroup (the VM guest has it)")
        if os.geteuid() != 0:
            pytest.skip("the live backend needs root")
        self.root = top / f"oomkit-contract-{secrets.token_hex(4)}"
        self._enable_memory(top)
        self.root.mkdir()
        (self.root / cf.MEMORY_MAX).write_text(str(512 * MiB))
        (self.root / cf.MEMORY_SWAP_MAX).write_text("0")
        self.twins = _Twins()
        self.kernel: LinuxKernel = LinuxKernel(
            str(self.root), kmsg_path=None, state_file=None, watchdog=False
        )

    @staticmethod
    def _enable_memory(d: Path) -> None:
        ctl = d / cf.CGROUP_SUBTREE_CONTROL
        if "memory" not in ctl.read_text().split():
            ctl.write_text("+memory")

    def mkcg(self, rel: str, memory_max: int | None = None, oom_group: bool = False) -> Cgroup:
        d = self.root / rel
        self._enable_memory(d.parent)
        d.mkdir()
        if memory_max is not None:
            (d / cf.MEMORY_MAX).write_text(str(memory_max))
        if oom_group:
            (d / cf.MEMORY_OOM_GROUP).write_text("1")
        cg = self.kernel.mem_cgroup("/" + rel)
        assert cg is not None
        return cg
