"""One sample of memory state, taken through the public Kernel/Cgroup/Task accessors.

The same code samples the simulator and the live kernel, so a simulated timeline and a
recorded incident have one shape. A sample is one JSON object (one line of a samples
file, or of an incident file), with ``"event": "sample"`` so it interleaves with the
events of SPEC section 7::

    {"event": "sample", "time": 4.0,
     "cgroups": {"/thrash": {"usage": 67108864, "max": 67108864, "high": null,
                             "swap_max": null,
                             "anon": 0, "file": 67108864, "shmem": 0, "swap": 0,
                             "psi": {"memory": [0.12, 0.1, 3200, 2900],
                                     "io": [61.0, 58.5, 2400000, 2300000]}}},
     "procs": [{"pid": 100, "comm": "reader", "cgroup": "/thrash", "rss": 0,
                "swap": 0, "adj": 0, "state": "R"}]}

Live samples give each process its ``anon`` too (RssAnon, bytes: what of its rss the
memcg charged it for; rss also counts the shared file pages it maps); the simulator's
have none (its rss is what it allocated).

Sizes are bytes. ``psi`` holds, per resource, ``[some avg10, full avg10, some total,
full total]``: averages in percent, totals in microseconds (the four numbers of a
pressure file a plot and a replay need; None where the backend has no such file, as
cgroup v1 below the root). A stat item the backend lacks is None. ``state`` is ``"R"``
for a live task and ``"V"`` for one already chosen as an OOM victim (TIF_MEMDIE /
MMF_OOM_SKIP: it is dying).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Final

from oomkit.errors import OomkitError
from oomkit.kernel.base import Cgroup, Kernel, Resource, Task

#: memory.stat items a sample keeps (v2 names; the live backends translate v1's).
STAT_ITEMS: Final = ("anon", "file", "shmem")
#: PSI resources a sample keeps. cpu is left out: memory handling does not act on it.
PSI_RESOURCES: Final = (Resource.MEMORY, Resource.IO)
PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")  # statm counts pages


def _stat(cg: Cgroup) -> dict[str, int] | None:
    """memory.stat at once where the backend can (one read instead of one per item)."""
    stat = getattr(cg, "stat", None)
    if callable(stat):
        try:
            got = stat()
        except OomkitError:
            return None
        return got if isinstance(got, dict) else None
    return None


def limits_of(cg: Cgroup) -> tuple[int | None, int | None, int | None]:
    """(memory.max, memory.high, memory.swap.max) in bytes, None for no limit."""
    return cg.memory_max, cg.memory_high, cg.swap_max


def sample_cgroup(cg: Cgroup,
                  limits: tuple[int | None, int | None, int | None] | None = None,
                  *, min_usage: int = 0) -> dict[str, Any]:
    """usage, limits, page states and pressure of one cgroup. ``limits``: the
    :func:`limits_of` the caller already knows (they change rarely; read when None).
    A cgroup below ``min_usage`` bytes gets usage and limits only (an empty cgroup has
    nothing more to tell, and reading it would cost the recorder most of its time).

    usage raises the backend's OomkitError (a vanished cgroup); an item the backend lacks
    (no per-cgroup PSI on cgroup v1, no swap item) is None.
    """
    usage = cg.usage()
    lim = limits if limits is not None else limits_of(cg)
    out: dict[str, Any] = {"usage": usage, "max": lim[0], "high": lim[1], "swap_max": lim[2]}
    if usage < min_usage and cg.path != "/":
        return out
    stat = _stat(cg)
    for item in (*STAT_ITEMS, "swap"):
        if stat is not None:
            out[item] = stat.get(item)
            continue
        try:
            out[item] = cg.page_state(item)
        except OomkitError:
            out[item] = None
    psi: dict[str, list[float] | None] = {}
    for res in PSI_RESOURCES:
        try:
            p = cg.pressure(res)
        except OomkitError:
            psi[res.value] = None
            continue
        psi[res.value] = [p.some.avg10, p.full.avg10, p.some.total, p.full.total]
    out["psi"] = psi
    return out


def rss_anon(kernel: Kernel, pid: int) -> int | None:
    """Bytes of the process's resident anonymous pages (RssAnon: statm's resident minus
    shared, the latter RssFile + RssShmem), None without procfs (the simulator) or when
    it exited. Unlike rss it leaves out the file pages it maps (an interpreter's
    libraries: ~9M of a Python's rss), which its memcg charges only when the process
    faulted them in first; a replay charges what the memcg charged."""
    procfs = getattr(kernel, "procfs", None)
    if procfs is None:
        return None
    try:
        with open(procfs.path(pid, "statm"), "rb") as f:
            fields = f.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def sample_task(task: Task, kernel: Kernel) -> dict[str, Any]:
    """One process: sizes in bytes; ``anon`` (live only) is :func:`rss_anon`."""
    out = {"pid": task.pid, "comm": task.comm, "cgroup": task.cgroup.path, "rss": task.rss,
           "swap": task.swapents * 4096, "adj": task.oom_score_adj,
           "state": "V" if kernel.task_is_oom_victim(task) else "R"}
    anon = rss_anon(kernel, task.pid)
    if anon is not None:
        out["anon"] = min(anon, task.rss)
    return out


Limits = dict[int, tuple[int | None, int | None, int | None]]


def machine_tasks(kernel: Kernel, count: int) -> list[Task]:
    """The ``count`` largest processes of the whole machine by rss, wherever their cgroup
    (what the flight recorder adds when it watches only part of the tree: an OOM in a
    cgroup it does not watch must still find its processes in the samples).

    Live: one read of /proc/PID/statm per process (its second field, resident pages:
    ~1 ms per 100 processes), then /proc/PID/cgroup and /proc/PID/status of the largest
    only; a process outside the kernel's cgroup root is left out. The simulator (no
    procfs): every task of the tree. Kernel threads have no mm (statm all zeros) and are
    never among them. Never raises for a process that exits meanwhile."""
    procfs = getattr(kernel, "procfs", None)
    if procfs is None:
        out = [t for cg in kernel.root_mem_cgroup().walk() for t in cg.tasks()
               if t.cgroup == cg and not t.kthread]
        return sorted(out, key=lambda t: t.rss, reverse=True)[:count]
    sized: list[tuple[int, int]] = []
    try:
        pids = procfs.pids()
    except OomkitError:
        return []
    for pid in pids:
        try:
            with open(procfs.path(pid, "statm"), "rb") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if pages > 0:
            sized.append((pages, pid))
    sized.sort(reverse=True)
    from oomkit.kernel.linux.kmsgwatch import from_kernel_path

    key = "memory" if getattr(kernel, "version", 2) == 1 else ""
    prefix = getattr(kernel, "prefix", None)
    tasks: list[Task] = []
    for _, pid in sized:
        if len(tasks) >= count:
            break
        try:
            path = from_kernel_path(prefix, procfs.cgroups_of(pid).get(key))
            cg = kernel.mem_cgroup(path) if path is not None else None
            if cg is None:
                continue
            info = procfs.task(pid)
        except OomkitError:
            continue  # exited meanwhile
        if not info.kthread:
            tasks.append(Task(pid=info.pid, comm=info.comm, cgroup=cg,
                              oom_score_adj=info.oom_score_adj, rss=info.rss,
                              swapents=info.swapents, pgtables_bytes=info.pgtables_bytes,
                              start_time=info.start_time))
    return tasks


def take_sample(kernel: Kernel, cgroups: Iterable[Cgroup] | None = None,
                *, max_procs: int | None = None, limits: Limits | None = None,
                min_usage: int = 0, more_tasks: Iterable[Task] = ()) -> dict[str, Any]:
    """A sample of ``cgroups`` (default: every cgroup, the root first, in pre-order) and
    of their tasks.

    ``max_procs`` keeps only the largest tasks by rss (the flight recorder's bound); None
    keeps them all. ``limits``: a cache of :func:`limits_of` by cgroup id, filled as
    needed (the flight recorder clears it when it walks the tree again); ``min_usage``:
    see :func:`sample_cgroup` (no task of a cgroup below it is listed). A cgroup that
    vanishes while it is read is left out (the kernel may
    remove it at any moment), never an error. ``more_tasks``: tasks to list besides
    those of ``cgroups`` (:func:`machine_tasks`), within the same ``max_procs``.
    """
    if cgroups is None:
        cgroups = list(kernel.root_mem_cgroup().walk())
    cg_out: dict[str, Any] = {}
    tasks: list[Task] = []
    for cg in cgroups:
        try:
            lim = None
            if limits is not None:
                lim = limits.get(cg.id)
                if lim is None:
                    lim = limits[cg.id] = limits_of(cg)
            one = cg_out[cg.path] = sample_cgroup(cg, lim, min_usage=min_usage)
            if "psi" in one:  # not skipped as (nearly) empty: its tasks count
                # Kernel threads hold no memory of their own and no killer takes them.
                tasks.extend(t for t in cg.tasks() if t.cgroup == cg and not t.kthread)
        except OomkitError:
            cg_out.pop(cg.path, None)
    seen = {t.pid for t in tasks}
    tasks.extend(t for t in more_tasks if t.pid not in seen)
    if max_procs is not None and len(tasks) > max_procs:
        tasks = sorted(tasks, key=lambda t: t.rss, reverse=True)[:max_procs]
    tasks.sort(key=lambda t: t.pid)
    return {"event": "sample", "time": round(kernel.clock.now(), 6), "cgroups": cg_out,
            "procs": [sample_task(t, kernel) for t in tasks]}
