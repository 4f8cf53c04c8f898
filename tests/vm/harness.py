"""Run commands inside a QEMU guest that has a real cgroup v2 memory controller.

The host kernel keeps its memory controller on cgroup v1, so tests that need cgroup v2
(``memory.events``, ``memory.pressure``, ``cgroup.kill`` ...) run inside a small guest:

* kernel: Debian's generic ``linux-image-amd64`` of a chosen release (6.1, 6.12, 7.3),
  fetched into a cache and unpacked there, never installed (tests/vm/kernels.py);
* initramfs: static busybox plus the virtio/9p/overlay modules, built here and cached;
* root filesystem: the host's ``/``, exported read-only over virtio-9p, with a tmpfs
  overlay on top, so the guest sees the repository and its ``.venv`` at the same paths
  and may write anywhere without touching the host;
* cgroup2 at ``/sys/fs/cgroup`` with ``+memory +cpu +io +pids`` in the root's
  ``cgroup.subtree_control``; the command runs as root in the root cgroup;
* optionally a raw disk image (``disk=``), attached read-only as a virtio-blk device,
  ``/dev/vda`` in the guest, which the command mounts itself (e.g. ``mount -o ro,noload``);
* a per-run host directory (``OOMKIT_VM_OUT`` in the guest, ``GuestResult.run_dir`` on
  the host), shared read-write, which holds the job script, ``junit.xml``, ``dmesg.txt``.

Channels: the guest console (ttyS0: kernel messages, init messages) goes to
``console.log``; the command's stdout+stderr go to a second serial port (ttyS1) written
to ``output.log``, between marker lines that carry a per-run nonce. Kernel noise can
therefore never be mistaken for command output, nor output for an exit status.

Usage by hand::

    python tests/vm/harness.py shell
    python tests/vm/harness.py pytest tests/vm/guest/test_guest_smoke.py -k oom
    python tests/vm/harness.py run -- cat /sys/fs/cgroup/cgroup.controllers

Standard library only; emulation is TCG (KVM does not boot a stock kernel here).
"""

from __future__ import annotations

import argparse
import ast
import codecs
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import lzma
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TextIO

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_TESTS = REPO_ROOT / "tests/vm/guest"  # tests that run only inside the guest
DEFAULT_CACHE_DIR = Path(os.environ.get("OOMKIT_VM_CACHE", REPO_ROOT / "tests/vm/.cache"))
GUEST_OUT = "/run/vm-out"  # where the per-run host directory appears in the guest
GUEST_CMDLINE_FLAG = "oomkit.guest=1"
# The guest's kernels are fetched, not installed (tests/vm/kernels.py): only the tools.
APT_PACKAGES = ("qemu-system-x86", "busybox-static")
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
# Roots of the module set; their dependencies are added from their modinfo. The order is
# the one known to work; the dependency sort keeps it where it can.
MODULE_ROOTS = (
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
    "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "overlay",
    # a disk image given with disk= appears as /dev/vda; ext4 on it is a real block
    # device's page cache, refaults and IO pressure, which 9p's cache is not
    "virtio_blk", "crc32c_generic", "ext4",
)  # fmt: skip
# The host root is read-only underneath, so no cache; the hypothesis plugin alone costs
# ~8 s of imports under TCG (a test that imports hypothesis still works without it).
GUEST_PYTEST_OPTS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
KEEP_RUNS = 20  # per-run directories kept under <cache>/runs
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HarnessError(RuntimeError):
    """The guest could not be prepared, booted, or did not report an exit status."""


class GuestTimeout(HarnessError):
    """The guest did not finish in time; qemu was killed. Carries the partial output."""

    def __init__(self, message: str, partial_output: str, run_dir: Path) -> None:
        super().__init__(message)
        self.partial_output = partial_output
        self.run_dir = run_dir


@dataclasses.dataclass(frozen=True)
class GuestResult:
    returncode: int
    output: str  # the command's stdout and stderr, interleaved, exactly as written
    boot_seconds: float  # qemu start until the command started
    total_seconds: float  # qemu start until qemu exited
    run_dir: Path  # host directory with console.log, output.log, job.sh, dmesg.txt ...
    kernel_release: str = ""  # the guest's uname -r

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"


@dataclasses.dataclass(frozen=True)
class GuestCase:
    """One test case from the guest's junit xml."""

    classname: str  # e.g. "tests.vm.guest.test_guest_smoke" or "...test_x.TestClass"
    name: str  # e.g. "test_oom_kill" or "test_p[1]"
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str
    details: str  # traceback / captured output for failures, the reason for skips
    seconds: float

    @property
    def nodeid(self) -> str:
        return f"{self.classname}::{self.name}"


@dataclasses.dataclass(frozen=True)
class GuestPytestResult:
    result: GuestResult
    cases: tuple[GuestCase, ...]  # empty when pytest wrote no junit xml

    @property
    def returncode(self) -> int:
        return self.result.returncode

    @property
    def output(self) -> str:
        return self.result.output

    def failures(self) -> list[GuestCase]:
        return [c for c in self.cases if c.outcome in ("failed", "error")]


def in_guest() -> bool:
    """True inside a guest booted by this harness."""
    try:
        return GUEST_CMDLINE_FLAG in Path("/proc/cmdline").read_text().split()
    except OSError:
        return False


# --------------------------------------------------------------------------- packages


def _dpkg_installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip() == "install ok installed"


def _missing_packages() -> list[str]:
    missing = [p for p in APT_PACKAGES if not _dpkg_installed(p)]
    if shutil.which(QEMU) is None and "qemu-system-x86" not in missing:
        missing.append("qemu-system-x86")
    if not BUSYBOX.exists() and "busybox-static" not in missing:
        missing.append("busybox-static")
    return missing


def ensure_packages() -> None:
    """apt-get install qemu and static busybox if missing (the kernels are fetched)."""
    missing = _missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise HarnessError(
            f"missing Debian packages {' '.join(missing)} and not root: "
            f"run 'apt-get update && apt-get install -y {' '.join(APT_PACKAGES)}' as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_lock = ["-o", "DPkg::Lock::Timeout=600"]  # another apt/dpkg may be running
    for cmd in (
        ["apt-get", *wait_lock, "update"],
        ["apt-get", *wait_lock, "install", "-y", "--no-install-recommends", *missing],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise HarnessError(
                f"'{' '.join(cmd)}' failed with exit status {proc.returncode} while installing "
                f"the VM test prerequisites ({' '.join(missing)}):\n{tail}"
            )
    still = _missing_packages()
    if still:
        raise HarnessError(f"apt-get reported success but {' '.join(still)} still missing")


# ---------------------------------------------------------------------------- kernel


def _load_kernels() -> ModuleType:
    # tests/vm/kernels.py, by path: the harness is imported as tests.vm.harness, loaded by
    # path from the conftest, and run as a script, and must find its sibling in each case.
    name = "oomkit_vm_kernels"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("kernels.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kernels = _load_kernels()
GuestKernel = kernels.GuestKernel
KERNEL_CHOICES = kernels.CHOICES


def find_kernel(choice: str | None = None) -> GuestKernel:
    """The guest kernel for a choice: "6.1", "6.12", "7.3", or a path.

    None means $OOMKIT_VM_KERNEL, else "6.1". Each is fetched (once, cached in
    ~/.cache/oomkit-vm/kernels) from Debian with a private apt configuration, never
    installed: see tests/vm/kernels.py. Raises HarnessError if it cannot be had.
    """
    try:
        return kernels.resolve(choice)
    except kernels.KernelError as exc:
        raise HarnessError(str(exc)) from None


# ------------------------------------------------------------------------- initramfs

INIT_SCRIPT = r"""#!/bin/busybox sh
# oomkit VM guest init: mount the host root read-only over 9p with a tmpfs overlay,
# set up cgroup2, run /run/vm-out/job.sh chrooted, report its exit status, power off.
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
NONCE=none
MODE=batch
for w in $(cat /proc/cmdline); do
    case "$w" in
        oomkit.nonce=*) NONCE="${w#*=}" ;;
        oomkit.mode=*) MODE="${w#*=}" ;;
    esac
done
stty -F /dev/ttyS1 raw -echo 2>/dev/null
say() {  # a marker line on the console and on the output channel
    echo "@@OOMKIT-VM $NONCE $*@@" > /dev/ttyS0
    echo "@@OOMKIT-VM $NONCE $*@@" > /dev/ttyS1
}
die() {
    say "FAIL $*"
    dmesg | tail -n 40 > /dev/ttyS0
    poweroff -f
    sleep 5
    reboot -f
}
say INIT
for m in $(cat /etc/modules.load); do
    insmod "/lib/modules/$m.ko" 2>/dev/null || echo "oomkit-vm: insmod $m failed (built in?)"
done
mkdir -p /mnt/lower /mnt/rw /mnt/root
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose host /mnt/lower \
    || mount -t 9p -o ro,trans=virtio,version=9p2000.L host /mnt/lower \
    || die "cannot mount the host root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw || die "cannot mount tmpfs"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \
    overlay /mnt/root || die "cannot mount the overlay"
R=/mnt/root
mkdir -p $R/proc $R/sys $R/dev $R/tmp $R/run
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
# /tmp stays the host's (through the writable overlay): a checkout under /tmp, as CI may
# make one, must be visible in the guest at the same path.
mount -t tmpfs -o mode=0755 tmpfs $R/run
mount -t cgroup2 -o nsdelegate cgroup2 $R/sys/fs/cgroup || die "cannot mount cgroup2"
for c in memory cpu io pids; do
    echo "+$c" > $R/sys/fs/cgroup/cgroup.subtree_control \
        || echo "oomkit-vm: cannot enable the $c controller"
done
mkdir -p $R/run/vm-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out $R/run/vm-out \
    || die "cannot mount the run directory"
[ -f $R/run/vm-out/job.sh ] || die "no job.sh in the run directory"
cat /proc/mounts > $R/run/vm-out/mounts.txt  # init's view: includes /mnt/lower
hostname oomkit-vm
say START
if [ "$MODE" = shell ]; then
    chroot $R /usr/bin/setsid -c -w /bin/sh /run/vm-out/job.sh \
        < /dev/ttyS0 > /dev/ttyS0 2>&1
    rc=$?
else
    chroot $R /bin/sh /run/vm-out/job.sh < /dev/null > /dev/ttyS1 2>&1
    rc=$?
fi
dmesg > $R/run/vm-out/dmesg.txt 2>/dev/null
sync
echo "@@OOMKIT-VM $NONCE END rc=$rc@@" > /dev/ttyS0
# A newline first: the command's output need not end with one. The host drops it.
printf '\n@@OOMKIT-VM %s END rc=%s@@\n' "$NONCE" "$rc" > /dev/ttyS1
poweroff -f
sleep 5
reboot -f
"""


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    ino = int.from_bytes(hashlib.sha1(name.encode()).digest()[:3], "big") + 1
    encoded = name.encode() + b"\0"
    fields = (
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0,
    )  # fmt: skip
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def _cpio(entries: Iterable[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    buf = io.BytesIO()
    for name, mode, data, rdev in entries:
        buf.write(_cpio_entry(name, mode, data, rdev))
    buf.write(_cpio_entry("TRAILER!!!", 0))
    return buf.getvalue()


def build_initramfs(
    cache_dir: Path = DEFAULT_CACHE_DIR, kernel: str | GuestKernel | None = None
) -> tuple[Path, Path]:
    """Build (or reuse) the initramfs for a kernel; return (vmlinuz, initramfs.cpio.gz).

    kernel: a choice for find_kernel() or a GuestKernel. Cached by kernel release + a
    hash of the init script, the modules, the kernel image and busybox, so a kernel
    upgrade or an edit of INIT_SCRIPT rebuilds it.
    """
    k = kernel if isinstance(kernel, GuestKernel) else find_kernel(kernel)
    release, vmlinuz = k.release, k.vmlinuz
    try:
        modules, _absent = kernels.resolve_modules(k, MODULE_ROOTS)
    except (kernels.KernelError, OSError, lzma.LZMAError) as exc:
        raise HarnessError(f"cannot read the modules of {release}: {exc}") from None
    h = hashlib.sha256(INIT_SCRIPT.encode())
    for p in (vmlinuz, BUSYBOX):
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for name, data in modules:
        h.update(name.encode() + hashlib.sha256(data).digest())
    target = Path(cache_dir) / f"initramfs-{release}-{h.hexdigest()[:16]}.cpio.gz"
    if target.exists():
        return vmlinuz, target
    if not BUSYBOX.exists():
        raise HarnessError(f"{BUSYBOX} missing: apt-get install busybox-static")
    dirs = ["bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "run", "sys", "tmp"]
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        (d, stat.S_IFDIR | 0o755, b"", (0, 0)) for d in dirs
    ]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    entries.append(("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes(), (0, 0)))
    entries.append(("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode(), (0, 0)))
    names = []
    for name, data in modules:
        names.append(name)
        entries.append((f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, data, (0, 0)))
    entries.append(
        ("etc/modules.load", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode(), (0, 0))
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(gzip.compress(_cpio(entries), compresslevel=6))
    tmp.replace(target)
    for old in target.parent.glob(f"initramfs-{release}-*.cpio.gz"):
        if old != target:
            old.unlink(missing_ok=True)
    return vmlinuz, target


# ------------------------------------------------------------------------------ runs


def _new_run_dir(cache_dir: Path) -> Path:
    runs = Path(cache_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in runs.iterdir() if p.is_dir())
    for old in existing[: max(0, len(existing) - (KEEP_RUNS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = runs / f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}"
    run_dir.mkdir()
    return run_dir


def _job_script(argv: Sequence[str], cwd: str, env: Mapping[str, str], interactive: bool) -> str:
    lines = ["# written by tests/vm/harness.py; run by the guest's init, chrooted"]
    if interactive:
        size = shutil.get_terminal_size((80, 24))
        lines.append(f"stty rows {size.lines} cols {size.columns} 2>/dev/null")
    lines.append(f"cd {shlex.quote(cwd)} || exit 125")
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    lines.append(f"exec env -i {assigns} {shlex.join(argv)}")
    return "\n".join(lines) + "\n"


def _guest_env(env: Mapping[str, str] | None, interactive: bool) -> dict[str, str]:
    base = {
        "PATH": GUEST_PATH,
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "LANG": "C.UTF-8",
        "TERM": os.environ.get("TERM", "xterm") if interactive else "dumb",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "OOMKIT_VM_GUEST": "1",
        "OOMKIT_VM_OUT": GUEST_OUT,
    }
    base.update(env or {})
    return base


def _qemu_argv(
    vmlinuz: Path, initrd: Path, run_dir: Path, memory: str, nonce: str, interactive: bool,
    smp: int, disk: Path | None = None,
) -> list[str]:  # fmt: skip
    append = [
        "console=ttyS0",
        "loglevel=1" if interactive else "quiet",
        "panic=-1",  # a panic reboots, and -no-reboot turns that into qemu exiting
        "cgroup_no_v1=all",
        "psi=1",
        "mitigations=off",
        "tsc=reliable",
        "8250.nr_uarts=2",
        GUEST_CMDLINE_FLAG,
        f"oomkit.nonce={nonce}",
        f"oomkit.mode={'shell' if interactive else 'batch'}",
    ]
    return [
        QEMU,
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-accel", "tcg", "-cpu", "max", "-smp", str(smp), "-m", memory,
        "-display", "none",
        "-monitor", "none",
        "-serial", "mon:stdio" if interactive else "stdio",
        "-serial", f"file:{run_dir / 'output.log'}",
        "-kernel", str(vmlinuz), "-initrd", str(initrd),
        "-append", " ".join(append),
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={run_dir},mount_tag=out,security_model=none,multidevs=remap",
    ] + ([  # cache=none: the host's page cache does not answer the guest's reads (O_DIRECT)
        "-drive", f"file={disk},if=virtio,format=raw,readonly=on,cache=none",
    ] if disk is not None else [])  # fmt: skip


class _Tail(threading.Thread):
    """Copies what appears in a file to a stream while qemu runs."""

    def __init__(self, path: Path, stream: TextIO, nonce: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stream = stream
        self.marker = re.compile(re.escape(f"@@OOMKIT-VM {nonce} ") + r"[^@]*@@")
        self.stop = threading.Event()

    def run(self) -> None:
        offset = 0
        pending = ""
        owed = False  # a line ended; its newline goes out with whatever comes next
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            done = self.stop.is_set()
            try:
                with self.path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            pending += decoder.decode(chunk, final=done)
            # Marker lines are dropped, and so is the newline before them (the guest
            # writes one before END). A partial line (pytest's progress dots) goes out at
            # once unless it may be the start of a marker.
            *lines, pending = pending.split("\n")
            text = ""
            for line in lines:
                if self.marker.fullmatch(line):
                    owed = False
                    continue
                text += ("\n" if owed else "") + line
                owed = True
            if pending and (done or not "@@OOMKIT-VM".startswith(pending[:11])):
                text += ("\n" if owed else "") + pending
                pending, owed = "", False
            if done and owed:
                text += "\n"
            if text:
                self.stream.write(text)
                self.stream.flush()
            if done:
                return
            self.stop.wait(0.2)


def _marker(nonce: str, what: str) -> str:
    return f"@@OOMKIT-VM {nonce} {what}@@"


def _parse_output(text: str, nonce: str) -> tuple[str | None, int | None, str | None]:
    """(output, returncode, failure) from the output channel."""
    fail = re.search(re.escape(f"@@OOMKIT-VM {nonce} FAIL ") + r"(.*?)@@", text)
    start_marker = _marker(nonce, "START") + "\n"
    start = text.find(start_marker)
    if start < 0:
        return None, None, fail.group(1) if fail else None
    body = text[start + len(start_marker) :]
    end = re.search(re.escape(f"\n@@OOMKIT-VM {nonce} END rc=") + r"(-?\d+)@@", body)
    if end is None:
        return body, None, fail.group(1) if fail else None
    return body[: end.start()], int(end.group(1)), None


def _tail_lines(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").replace("\r\n", "\n").splitlines()
    except OSError:
        return "(no console log)"
    return "\n".join(lines[-n:])


def run_in_guest(
    argv: Sequence[str],
    memory: str = "1G",
    timeout: float | None = 600,
    cwd: str | os.PathLike[str] = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    *,
    stream: TextIO | None = None,
    interactive: bool = False,
    smp: int = 2,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    kernel: str | None = None,
    disk: Path | None = None,
) -> GuestResult:
    """Boot the guest, run argv as root in cwd, return its exit status and output.

    kernel: "6.1", "6.12", "7.3" or a vmlinuz path (None: $OOMKIT_VM_KERNEL, else 6.1).
    disk: a raw disk image on the host, attached read-only as virtio-blk (/dev/vda in the
    guest; virtio_blk and ext4 are loaded at boot), or None for no block device at all.

    stream, if given, receives the command's output live (the console always goes to
    <run_dir>/console.log). interactive=True puts the command on the terminal (ttyS0)
    instead; its output is then not captured. Raises GuestTimeout after timeout seconds
    (qemu killed) and HarnessError if the guest fails before reporting an exit status.
    """
    if not re.fullmatch(r"\d+[MG]", memory):
        raise ValueError(f"memory must look like '512M' or '2G', not {memory!r}")
    if shutil.which(QEMU) is None:
        raise HarnessError(f"{QEMU} not found: call ensure_packages() (needs root)")
    if disk is not None and not Path(disk).is_file():
        raise HarnessError(f"disk image {disk} is not a file")
    guest_kernel = find_kernel(kernel)
    vmlinuz, initrd = build_initramfs(cache_dir, guest_kernel)
    run_dir = _new_run_dir(cache_dir)
    nonce = secrets.token_hex(8)
    (run_dir / "job.sh").write_text(
        _job_script(argv, os.fspath(cwd), _guest_env(env, interactive), interactive)
    )
    qemu_argv = _qemu_argv(vmlinuz, initrd, run_dir, memory, nonce, interactive, smp, disk)
    (run_dir / "qemu.argv").write_text(shlex.join(qemu_argv) + "\n")
    console_log = run_dir / "console.log"
    output_log = run_dir / "output.log"
    start_line = _marker(nonce, "START")
    started = time.monotonic()
    booted: list[float] = []
    tail = _Tail(output_log, stream, nonce) if stream is not None and not interactive else None

    def pump(pipe: io.BufferedReader) -> None:
        with console_log.open("wb") as log:
            for raw in iter(pipe.readline, b""):
                log.write(raw)
                log.flush()
                if not booted and start_line.encode() in raw:
                    booted.append(time.monotonic() - started)

    if interactive:
        console_log.write_text("(interactive: the console went to the terminal)\n")
        proc = subprocess.Popen(qemu_argv)
        reader = None
    else:
        proc = subprocess.Popen(
            qemu_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
        reader.start()
    if tail is not None:
        tail.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if reader is not None:
            reader.join(timeout=10)
        if tail is not None:
            tail.stop.set()
            tail.join(timeout=10)
    total = time.monotonic() - started
    try:
        raw_text = output_log.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        raw_text = ""
    output, returncode, failure = _parse_output(raw_text, nonce)
    boot = booted[0] if booted else total
    if timed_out:
        raise GuestTimeout(
            f"guest timed out after {timeout:.0f} s (booted in {boot:.1f} s); qemu was killed. "
            f"Logs in {run_dir}. Last console lines:\n{_tail_lines(console_log)}\n"
            f"Last output:\n{(output or '')[-3000:]}",
            output or "",
            run_dir,
        )
    if returncode is None:
        why = f"guest init failed: {failure}" if failure else (
            f"qemu exited with status {proc.returncode} before the command reported an exit "
            "status" if output is not None else
            f"qemu exited with status {proc.returncode} before the command started"
        )  # fmt: skip
        raise HarnessError(
            f"{why}. Logs in {run_dir}. Last console lines:\n{_tail_lines(console_log)}"
            + (f"\nOutput so far:\n{output[-3000:]}" if output else "")
        )
    return GuestResult(
        returncode=returncode,
        output=output or "",
        boot_seconds=boot,
        total_seconds=total,
        run_dir=run_dir,
        kernel_release=guest_kernel.release,
    )


# ---------------------------------------------------------------------------- pytest


def parse_junit(path: Path) -> tuple[GuestCase, ...]:
    """The test cases of a pytest junit xml file (empty if it does not exist)."""
    if not path.exists():
        return ()
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message, details = "passed", "", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = el.get("message", "")
                details = el.text or message
                break
        out = tc.find("system-out")
        err = tc.find("system-err")
        for label, el in (("stdout", out), ("stderr", err)):
            if el is not None and el.text and outcome in ("failed", "error"):
                details += f"\n--- captured {label} ---\n{el.text}"
        cases.append(
            GuestCase(
                classname=tc.get("classname", ""),
                name=tc.get("name", ""),
                outcome=outcome,
                message=message,
                details=details,
                seconds=float(tc.get("time", "0") or 0),
            )
        )
    return tuple(cases)


def discover_guest_tests(guest_dir: Path = GUEST_TESTS) -> list[str]:
    """Ids like "test_x.py::test_f" / "sub/test_y.py::TestC::test_g" found statically.

    Parametrized variants collapse into their function; tests generated at run time are
    not seen here (the whole-suite check still covers them).
    """
    ids: list[str] = []
    for path in sorted(guest_dir.rglob("test_*.py")):
        rel = path.relative_to(guest_dir).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name.startswith("test")
            ):
                ids.append(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                ids.extend(
                    f"{rel}::{node.name}::{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    and item.name.startswith("test")
                )
    return ids


def cases_for(
    cases: Iterable[GuestCase], case_id: str, guest_dir: Path = GUEST_TESTS
) -> list[GuestCase]:
    """The junit cases (parametrized variants included) of one discover_guest_tests id."""
    rel, _, qualname = case_id.partition("::")
    module = (guest_dir / rel).relative_to(REPO_ROOT).with_suffix("").as_posix()
    *cls, func = qualname.split("::")
    classname = ".".join([module.replace("/", "."), *cls])
    return [
        c
        for c in cases
        if c.classname == classname and (c.name == func or c.name.startswith(func + "["))
    ]


def run_pytest_in_guest(
    pytest_args: Sequence[str],
    memory: str = "1G",
    timeout: float | None = 600,
    env: Mapping[str, str] | None = None,
    *,
    stream: TextIO | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    kernel: str | None = None,
    disk: Path | None = None,
) -> GuestPytestResult:
    """Run <repo>/.venv/bin/python -m pytest <pytest_args> in the guest, in the repo root.

    The guest writes junit xml to the run directory; its cases come back parsed.
    """
    python = REPO_ROOT / ".venv/bin/python"
    if not python.exists():
        raise HarnessError(f"{python} missing: run scripts/setup first")
    argv = [
        str(python), "-m", "pytest", *GUEST_PYTEST_OPTS,
        f"--junitxml={GUEST_OUT}/junit.xml", "-o", "junit_logging=all", *pytest_args,
    ]  # fmt: skip
    result = run_in_guest(
        argv,
        memory=memory,
        timeout=timeout,
        env=env,
        stream=stream,
        cache_dir=cache_dir,
        kernel=kernel,
        disk=disk,
    )
    return GuestPytestResult(result=result, cases=parse_junit(result.run_dir / "junit.xml"))


# ------------------------------------------------------------------------------ main


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/vm/harness.py", description="Run things in the cgroup v2 QEMU guest."
    )
    parser.add_argument("--memory", default="1G", help="guest RAM, e.g. 512M or 2G")
    parser.add_argument("--timeout", type=float, default=600, help="seconds (not for shell)")
    parser.add_argument(
        "--kernel",
        default=None,
        help=f"guest kernel: {', '.join(KERNEL_CHOICES)} or a vmlinuz path "
        "(default: $OOMKIT_VM_KERNEL, else 6.1)",
    )
    parser.add_argument(
        "--disk", type=Path, default=None, help="raw disk image: /dev/vda (read-only) in the guest"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("shell", help="interactive shell in the guest (Ctrl-A x kills qemu)")
    p_py = sub.add_parser("pytest", help="run the project's pytest in the guest")
    p_py.add_argument("args", nargs=argparse.REMAINDER)
    p_run = sub.add_parser("run", help="run a command in the guest")
    p_run.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("initramfs", help="build the initramfs and print the kernel and its path")
    ns = parser.parse_args(args)

    try:
        ensure_packages()
        if ns.cmd == "initramfs":
            vmlinuz, initrd = build_initramfs(kernel=ns.kernel)
            print(f"{vmlinuz}\n{initrd}")
            return 0
        if ns.cmd == "shell":
            print(
                "booting the guest (TCG, ~10 s); 'exit' or Ctrl-D powers it off, "
                "Ctrl-A x kills qemu",
                file=sys.stderr,
            )
            res = run_in_guest(
                ["/bin/bash", "-l"],
                memory=ns.memory,
                timeout=None,
                interactive=True,
                kernel=ns.kernel,
                disk=ns.disk,
            )
            return res.returncode
        if ns.cmd == "pytest":
            pres = run_pytest_in_guest(
                ns.args,
                memory=ns.memory,
                timeout=ns.timeout,
                stream=sys.stdout,
                kernel=ns.kernel,
                disk=ns.disk,
            )
            res = pres.result
        else:
            argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
            if not argv:
                parser.error("run needs a command")
            res = run_in_guest(
                argv,
                memory=ns.memory,
                timeout=ns.timeout,
                stream=sys.stdout,
                kernel=ns.kernel,
                disk=ns.disk,
            )
    except HarnessError as exc:
        print(f"\nvm harness: {exc}", file=sys.stderr)
        return 124 if isinstance(exc, GuestTimeout) else 125
    print(
        f"\nvm harness: exit status {res.returncode} (kernel {res.kernel_release}); "
        f"boot {res.boot_seconds:.1f} s, "
        f"total {res.total_seconds:.1f} s; logs in {res.run_dir}",
        file=sys.stderr,
    )
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
