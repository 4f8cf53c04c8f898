"""Self-protection: the daemon must still decide while the machine thrashes.

A process that has to fault its own code back in from disk while reclaim is evicting
everything is exactly as stuck as the processes it should rescue. So, at startup:

* every module the decision path needs is imported, and a first event is formatted, before
  the first OOM (no import, no ``.pyc`` read, no first-use initialisation inside an OOM);
* ``mlockall(MCL_CURRENT | MCL_FUTURE)`` keeps all of it resident (mm/mlock.c; needs
  CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK: a failure is reported, not fatal); the
  few big libraries only startup uses are locked as far as they were touched
  (``MCL_ONFAULT``) rather than read in whole, see :data:`COLD_MAPPINGS`;
* threads get small stacks (256 KiB instead of 8 MiB: every page of a stack that is ever
  touched stays locked);
* glibc gets one malloc arena (by default each new thread may get its own, and each extra
  arena reserves 64 MiB of address space, which ``mlockall`` counts as locked: VmLck). The
  interpreter allocates under the GIL anyway, so a second arena buys no parallelism;
* both are set before the first thread starts (:func:`prepare`: the policies are imported
  in a thread of their own, before the daemon starts): glibc keeps the stack of a finished
  thread for reuse, and an 8 MiB one cached at startup would be read in and locked whole;
* ``oom_score_adj`` -1000: the kernel's killer never picks the daemon (needs
  CAP_SYS_RESOURCE to go below the current value);
* nice -10 (:data:`DAEMON_NICE`) for the threads started from then on (Linux: a thread's
  own, inherited at creation): a system-wide OOM is decided while the leak and the rest
  of the machine keep every CPU busy, and at nice 0 the decision got its fair share only
  (0.3-1.5 s for ``kill_cause`` in a 2-vCPU guest beside a busy service and the leak).
  earlyoom's ``-p`` sets -20 for the same reason, lmkd runs SCHED_FIFO. Idle, the daemon
  sleeps: the priority costs the machine nothing then (needs CAP_SYS_NICE);
* the cyclic garbage collector is switched off and run only at idle times, after
  ``gc.freeze()`` moved everything that exists at startup out of its reach, so an OOM is
  never handled in the middle of a full collection.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

MCL_CURRENT: Final = 1
MCL_FUTURE: Final = 2
MCL_ONFAULT: Final = 4  # since 4.4
M_ARENA_MAX: Final = -8  # glibc malloc.h
THREAD_STACK: Final = 256 << 10
EINVAL: Final = 22

#: Mappings that are loaded at startup but not used to decide (OpenSSL for hashlib and
#: prometheus-client's optional TLS): locked page by page when touched, never read in
#: whole. Everything else (the interpreter, libc, the heap, every module's code) is
#: populated and locked up front. Together about 5 MiB of RSS saved.
COLD_MAPPINGS: Final = ("libcrypto.so", "libssl.so", "/_ssl.", "/_hashlib.", "unicodedata.",
                        "locale-archive")
OOM_SCORE_ADJ_MIN: Final = -1000

#: What the OOM path touches, imported up front (the policies add their own modules).
DECISION_PATH_MODULES: Final = (
    "errno", "json", "json.encoder", "queue", "threading", "dataclasses",
    "oomkit.runtime", "oomkit.ops", "oomkit.events", "oomkit.kernel.base",
    "oomkit.daemon.eventlog", "oomkit.daemon.dryrun", "oomkit.daemon.status",
    "oomkit.daemon.sinks",
    # imported at the first OOM otherwise (the root's tmpfs_cleanup of the recommended
    # config): 60-160 ms in a TCG guest without bytecode cache, the leak going on
    "oomkit.kernel.linux.tmpfs",
)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def lock_memory(maps: str = "/proc/self/maps") -> str | None:
    """Lock the daemon's memory: mlockall(MCL_CURRENT | MCL_FUTURE), all of it resident
    from now on, except COLD_MAPPINGS, which are only locked as far as they are used (with
    MCL_ONFAULT, then mlock() of every other mapping, which reads it in and locks it).
    Kernels without MCL_ONFAULT lock everything. None when done, else why not."""
    try:
        libc = _libc()
        libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
            code = ctypes.get_errno()
            if code != EINVAL or libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
                code = ctypes.get_errno()
                hint = (" (needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK)"
                        if code in (1, 12) else "")
                return f"mlockall failed: {os.strerror(code)}{hint}"
            return None
        failed = 0
        for start, end in _hot_ranges(maps):
            if libc.mlock(start, end - start) != 0:
                failed += 1
        if failed:
            return f"mlockall done, but {failed} mappings could not be read in and locked"
    except (OSError, AttributeError) as exc:
        return f"mlockall unavailable: {exc}"
    return None


def _hot_ranges(maps: str) -> list[tuple[int, int]]:
    """Readable mappings of /proc/self/maps that are not COLD_MAPPINGS."""
    out: list[tuple[int, int]] = []
    with open(maps, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 5 or not parts[1].startswith("r"):
                continue  # guard pages (---p) cannot be populated
            name = parts[5].strip() if len(parts) > 5 else ""
            if name in ("[vvar]", "[vsyscall]") or any(c in name for c in COLD_MAPPINGS):
                continue
            lo, _, hi = parts[0].partition("-")
            out.append((int(lo, 16), int(hi, 16)))
    return out


def unlock_memory() -> None:
    try:
        _libc().munlockall()
    except (OSError, AttributeError):
        pass


def limit_malloc_arenas(n: int = 1) -> str | None:
    try:
        if _libc().mallopt(M_ARENA_MAX, n) != 1:
            return "mallopt(M_ARENA_MAX) refused"
    except (OSError, AttributeError) as exc:
        return f"mallopt unavailable: {exc}"
    return None


#: The daemon's nice value (see the module doc).
DAEMON_NICE: Final = -10


def raise_priority(nice: int = DAEMON_NICE) -> str | None:
    """Lower the calling thread's nice value to ``nice`` (never raise it: a value set by
    the service manager, ``Nice=`` in the unit, stays if lower). Threads started later
    inherit it. None when done, else why not."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        hint = " (needs CAP_SYS_NICE)" if exc.errno in (1, 13) else ""
        return f"nice {nice}: {exc.strerror}{hint}"
    return None


def set_oom_score_adj(value: int = OOM_SCORE_ADJ_MIN, proc: str = "/proc") -> str | None:
    """Write our oom_score_adj. None when done, else why not."""
    path = os.path.join(proc, "self", "oom_score_adj")
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(str(value))
    except OSError as exc:
        hint = " (needs CAP_SYS_RESOURCE)" if exc.errno in (1, 13) else ""
        return f"oom_score_adj {value}: {exc.strerror}{hint}"
    return None


def limit_thread_stacks(size: int = THREAD_STACK) -> None:
    """Stack size of threads started from now on (before any is)."""
    threading.stack_size(size)


def preimport(names: Iterable[str]) -> list[str]:
    """Import modules now; returns the messages of those that failed."""
    failed: list[str] = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


def prepare() -> str | None:
    """What must be set before the process starts any thread: small thread stacks and one
    malloc arena. None when done, else why not (the arenas; stacks cannot fail)."""
    limit_thread_stacks()
    return limit_malloc_arenas()


@dataclass(slots=True)
class Protection:
    """What self-protection achieved: each step and None (done) or why it was not."""

    steps: dict[str, str | None] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        return [why for why in self.steps.values() if why is not None]


def protect(*, mlock: bool = True, oom_score_adj: bool = True,
            proc: str = "/proc") -> Protection:
    """The startup steps that need no config: stacks, arenas, imports, memory, score,
    priority."""
    p = Protection()
    p.steps["malloc arenas"] = prepare()
    failed = preimport(DECISION_PATH_MODULES)
    p.steps["imports"] = "; ".join(failed) if failed else None
    if oom_score_adj:
        p.steps["oom_score_adj"] = set_oom_score_adj(OOM_SCORE_ADJ_MIN, proc)
    p.steps["priority"] = raise_priority()
    if mlock:
        p.steps["mlockall"] = lock_memory()
    return p


class GcControl:
    """The cyclic collector off the decision path: frozen after startup, run when idle."""

    __slots__ = ("collections", "enabled_before")

    def __init__(self) -> None:
        self.enabled_before = gc.isenabled()
        self.collections = 0

    def startup_done(self) -> None:
        """Collect once, freeze the survivors (imports, config, policies), stop the
        automatic collector."""
        gc.collect()
        gc.freeze()
        gc.disable()

    def collect_idle(self) -> int:
        """A full collection now (called when nothing happened for a while)."""
        self.collections += 1
        return gc.collect()

    def refreeze(self) -> None:
        """After a reload: the old policies are garbage now, the new ones live for long."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def restore(self) -> None:
        gc.unfreeze()
        if self.enabled_before:
            gc.enable()
