"""Kernels for the VM guest: Debian kernels fetched for it, or one given by path.

A choice is a name or a path:

* ``6.1``: Debian's ``linux-image-amd64`` from suite ``bookworm``;
* ``6.12``: the same from suite ``trixie``;
* ``7.3``: the same from ``trixie-backports`` (no memcg v1, MGLRU on);
* a path to a ``vmlinuz`` whose modules sit in ``lib/modules/<release>`` beside it (a
  kernel installed in ``/boot`` works so: ``/boot/vmlinuz-<release>``).

All three are fetched (nothing is installed on the host for them). Fetched kernels never
touch the host's apt state or its installed packages: ``apt-get update`` and ``apt-get
download`` run with a private configuration (sources list, lists, cache and an empty
dpkg status, all under the kernel cache), and the ``.deb`` files are unpacked with
``dpkg -x`` into ``<cache>/<release>/root``. The mirror and keyring are the ones the
host's own apt sources use for Debian (``OOMKIT_VM_APT_MIRROR`` overrides the mirror).
Debian ships no ``modules.dep`` in the packages (depmod makes it at install time), so a
module's dependencies are read from its own ``.modinfo`` ELF section.

Standard library only (the harness runs with any python3).
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

DEFAULT_CHOICE = "6.1"
# name -> the Debian suite whose linux-image-amd64 it is
FETCHED = {"6.1": "bookworm", "6.12": "trixie", "7.3": "trixie-backports"}
CHOICES = tuple(FETCHED)
META_PACKAGE = "linux-image-amd64"
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class KernelError(RuntimeError):
    """A kernel could not be found, fetched or read."""


@dataclasses.dataclass(frozen=True)
class GuestKernel:
    name: str  # the choice ("6.12") or the path it was given as
    release: str  # what uname -r says in the guest
    vmlinuz: Path
    moddir: Path  # .../lib/modules/<release>: kernel/**.ko*, modules.builtin

    def config(self) -> dict[str, str]:
        """The kernel's build config (CONFIG_X -> value; unset options are absent)."""
        for path in (
            self.moddir / "config",
            self.vmlinuz.parent / f"config-{self.release}",
        ):
            if path.exists():
                out = {}
                for line in path.read_text(errors="replace").splitlines():
                    key, sep, value = line.partition("=")
                    if sep and key.startswith("CONFIG_"):
                        out[key] = value
                return out
        return {}


def cache_dir() -> Path:
    """Where fetched kernels live: $OOMKIT_VM_KERNEL_CACHE, else ~/.cache/oomkit-vm/kernels.

    Outside the checkout, so every worktree (and a CI clone on the same machine) shares it.
    """
    env = os.environ.get("OOMKIT_VM_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oomkit-vm" / "kernels"


def version_key(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def default_choice() -> str:
    return os.environ.get("OOMKIT_VM_KERNEL") or DEFAULT_CHOICE


def resolve(choice: str | None = None, cache: Path | None = None) -> GuestKernel:
    """The kernel for a choice (None: $OOMKIT_VM_KERNEL, else 6.1); fetches on first use."""
    choice = choice or default_choice()
    if choice in FETCHED:
        return fetched_kernel(choice, cache or cache_dir())
    if "/" in choice or Path(choice).exists():
        return kernel_at(Path(choice))
    raise KernelError(
        f"unknown guest kernel {choice!r}: one of {', '.join(CHOICES)} or a path to a vmlinuz"
    )


# --------------------------------------------------------------------------- by path


def kernel_at(path: Path) -> GuestKernel:
    """A vmlinuz by path: <root>/boot/vmlinuz-<rel>, or <root>/[usr/]lib/modules/<rel>/vmlinuz."""
    path = path.resolve()
    if not path.is_file():
        raise KernelError(f"{path}: no such kernel image")
    if path.name == "vmlinuz":
        return GuestKernel(str(path), path.parent.name, path, path.parent)
    release = path.name.removeprefix("vmlinuz-")
    root = path.parent.parent
    for moddir in (
        root / "lib/modules" / release,
        root / "usr/lib/modules" / release,
        Path("/lib/modules") / release,
    ):
        if (moddir / "kernel").is_dir():
            return GuestKernel(str(path), release, path, moddir)
    raise KernelError(f"{path}: no lib/modules/{release} beside it nor in /lib/modules")


# -------------------------------------------------------------------------- fetching


def host_mirror() -> tuple[str, Path]:
    """(Debian mirror URI, keyring) from the host's own apt sources ($OOMKIT_VM_APT_MIRROR wins).

    The first ``deb`` entry with component ``main`` that is not a -security suite.
    """
    entries: list[tuple[str, list[str], list[str], str]] = []  # uri, suites, comps, signed-by
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((
                    uri, fields.get("suites", "").split(), fields.get("components", "").split(),
                    fields.get("signed-by", ""),
                ))  # fmt: skip
    lists = [Path("/etc/apt/sources.list")]
    if sources.is_dir():
        lists += sorted(sources.glob("*.list"))
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
            if m:
                opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
                entries.append((m.group(2), [m.group(3)], m.group(4).split(),
                                opts.get("signed-by", "")))  # fmt: skip
    override = os.environ.get("OOMKIT_VM_APT_MIRROR")
    for uri, suites, comps, signed_by in entries:
        if "main" in comps and not any(s.endswith("-security") for s in suites):
            keyring = Path(signed_by) if signed_by.startswith("/") else DEFAULT_KEYRING
            return (override or uri), keyring if keyring.exists() else DEFAULT_KEYRING
    if override:
        return override, DEFAULT_KEYRING
    raise KernelError(
        "no Debian mirror in the host's apt sources (a 'deb' entry with 'main'): "
        "set OOMKIT_VM_APT_MIRROR"
    )


def _apt_opts(apt_dir: Path) -> list[str]:
    opts = {
        "Dir::Etc::sourcelist": apt_dir / "sources.list",
        "Dir::Etc::sourceparts": "-",
        "Dir::State::Lists": apt_dir / "lists",
        "Dir::State::status": apt_dir / "status",  # empty: nothing "installed" here
        "Dir::Cache": apt_dir / "cache",
        "APT::Sandbox::User": "root",  # the cache is root's; _apt could not write it
    }
    return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise KernelError(f"'{' '.join(cmd)}' failed with exit status {proc.returncode}:\n{tail}")
    return proc.stdout


def private_apt(suite: str, cache: Path) -> list[str]:
    """apt options for a private configuration of one suite (updated on first use)."""
    apt_dir = cache / f"apt-{suite}"
    opts = _apt_opts(apt_dir)
    if (apt_dir / "updated").exists():
        return opts
    uri, keyring = host_mirror()
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "status").write_text("")
    (apt_dir / "sources.list").write_text(f"deb [signed-by={keyring}] {uri} {suite} main\n")
    _run(["apt-get", *opts, "update"])
    (apt_dir / "updated").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    return opts


def _package_closure(opts: list[str], start: str) -> list[str]:
    """name=version of start and every linux-* package it depends on (the kernel's parts).

    Other dependencies (kmod, initramfs-tools) are for installing, which never happens.
    """
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        spec = todo.pop()
        name = spec.split("=")[0]
        if name in seen:
            continue
        text = _run(["apt-cache", *opts, "show", "--no-all-versions", spec])
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", text, re.M))
        seen[name] = fields["Version"]
        for group in fields.get("Depends", "").split(","):
            first = group.split("|")[0].strip()
            m = re.match(r"(linux-[\w.+-]+)(?:\s*\(=\s*([^)]+)\))?", first)
            if m:
                todo.append(f"{m.group(1)}={m.group(2)}" if m.group(2) else m.group(1))
    return [f"{n}={v}" for n, v in seen.items()]


def _find_release(root: Path) -> tuple[str, Path, Path]:
    for moddir in sorted([*root.glob("usr/lib/modules/*"), *root.glob("lib/modules/*")]):
        release = moddir.name
        for vmlinuz in (moddir / "vmlinuz", root / "boot" / f"vmlinuz-{release}"):
            if vmlinuz.is_file() and (moddir / "kernel").is_dir():
                return release, vmlinuz, moddir
    raise KernelError(f"no vmlinuz with lib/modules/<release>/kernel under {root}")


def fetched_kernel(name: str, cache: Path, *, refresh: bool = False) -> GuestKernel:
    """The Debian kernel of choice `name`, fetched and unpacked into cache on first use.

    <cache>/<name>.json names the release; <cache>/<release>/root is the unpacked tree.
    refresh=True asks the mirror again (a newer upload replaces the cached one).
    """
    suite = FETCHED[name]
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch at a time (worktrees share the cache)
        index = cache / f"{name}.json"
        if index.exists() and not refresh:
            info = json.loads(index.read_text())
            root = cache / info["release"] / "root"
            if root.is_dir():
                release, vmlinuz, moddir = _find_release(root)
                return GuestKernel(name, release, vmlinuz, moddir)
        if refresh:
            (cache / f"apt-{suite}" / "updated").unlink(missing_ok=True)
        opts = private_apt(suite, cache)
        packages = _package_closure(opts, META_PACKAGE)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
        try:
            debs = staging / "debs"
            debs.mkdir()
            _run(["apt-get", *opts, "download", *packages], cwd=debs)
            root = staging / "root"
            for deb in sorted(debs.glob("*.deb")):
                _run(["dpkg", "-x", str(deb), str(root)])
            shutil.rmtree(debs)
            release, _, _ = _find_release(root)
            if not release.startswith(name + "."):
                print(
                    f"oomkit vm: suite {suite} now serves {release}, not {name}.x",
                    file=sys.stderr,
                )
            (staging / "kernel.json").write_text(json.dumps(
                {"name": name, "suite": suite, "release": release, "packages": packages,
                 "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1,
            ) + "\n")  # fmt: skip
            final = cache / release
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        index.write_text(json.dumps({"release": release, "suite": suite}) + "\n")
        release, vmlinuz, moddir = _find_release(final / "root")
        return GuestKernel(name, release, vmlinuz, moddir)


def host_suite() -> str:
    """The host's Debian codename (VERSION_CODENAME in /etc/os-release)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    m = re.search(r"^VERSION_CODENAME=\"?([a-z-]+)\"?$", text, re.M)
    if m is None:
        raise KernelError("no VERSION_CODENAME in /etc/os-release: not a Debian host?")
    return m.group(1)


def unpacked_package(package: str, cache: Path | None = None, suite: str | None = None) -> Path:
    """The root of a Debian package (of the host's suite unless given) unpacked into the
    cache on first use, never installed: e.g. earlyoom for the guest's benches, without
    an earlyoom service started on the host."""
    cache = cache or cache_dir()
    suite = suite or host_suite()
    root = cache / "packages" / suite / package
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir():
            return root
        opts = private_apt(suite, cache)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
        try:
            _run(["apt-get", *opts, "download", package], cwd=staging)
            for deb in sorted(staging.glob("*.deb")):
                _run(["dpkg", "-x", str(deb), str(staging / "root")])
            root.parent.mkdir(parents=True, exist_ok=True)
            (staging / "root").rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


# --------------------------------------------------------------------------- modules


def modname(path: str | Path) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def module_bytes(path: Path) -> bytes:
    """A module file, decompressed (.ko.xz and .ko.gz in Python; .ko.zst needs zstd)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        # Debian's 6.1, 6.12 and 7.3 all use xz; zstd (not stdlib before 3.14) only here.
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

            return bytes(zstd.decompress(data))
        except ImportError:
            pass
        tool = shutil.which("zstd")
        if tool is None:
            raise KernelError(f"{path} is zstd-compressed and no zstd is installed")
        return subprocess.run([tool, "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def modinfo(elf: bytes) -> dict[str, str]:
    """The key=value strings of a module's .modinfo section (ELF64 little-endian)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise KernelError("not an ELF64 little-endian module")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:  # name offset, file offset, size
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize
        )
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = elf[str_off : str_off + str_size]
    for i in range(shnum):
        name_off, offset, size = section(i)
        if names[name_off : names.index(b"\0", name_off)] == b".modinfo":
            out: dict[str, str] = {}
            for item in elf[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    out.setdefault(key, value)
            return out
    return {}


def resolve_modules(
    kernel: GuestKernel, roots: Iterable[str]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """([(name, decompressed .ko)] in load order, names built in or not found).

    Dependencies come from each module's modinfo "depends=" (what depmod reads too).
    """
    paths = {modname(p): p for p in (kernel.moddir / "kernel").rglob("*.ko*")}
    ordered: list[tuple[str, bytes]] = []
    done: set[str] = set()
    absent: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done or name in absent or name in stack:
            return
        if name not in paths:
            absent.append(name)  # built in (modules.builtin) or simply not there
            return
        data = module_bytes(paths[name])
        for dep in modinfo(data).get("depends", "").split(","):
            if dep:
                visit(dep.replace("-", "_"), (*stack, name))
        done.add(name)
        ordered.append((name, data))

    for root in roots:
        visit(root, ())
    return ordered, absent


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tests/vm/kernels.py", description=__doc__.split("\n")[0])
    parser.add_argument("choices", nargs="*", default=list(CHOICES))
    parser.add_argument("--refresh", action="store_true", help="ask the mirror again")
    ns = parser.parse_args(argv)
    for choice in ns.choices:
        k = fetched_kernel(choice, cache_dir(), refresh=True) if (
            ns.refresh and choice in FETCHED) else resolve(choice)  # fmt: skip
        cfg = k.config()
        print(f"{choice}: {k.release} {k.vmlinuz} memcg_v1={cfg.get('CONFIG_MEMCG_V1', 'n')} "
              f"lru_gen_enabled={cfg.get('CONFIG_LRU_GEN_ENABLED', 'n')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
