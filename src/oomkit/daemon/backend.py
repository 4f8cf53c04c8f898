"""What the daemon runs on: a kernel and the loop that feeds its events to the runtime.

The daemon does not care which kernel it drives; a :class:`Backend` opens one, serves its
events until told to stop, and closes it (restoring every kernel setting it changed):

* :class:`LiveBackend`: the real kernel (``oomkit.kernel.linux.LinuxKernel``) served by
  ``oomkit.live.serve_until`` (the loop of ``oomkit.live.serve``), with the watchdog's
  restore journal;
* :class:`SimBackend`: the simulator running a scenario (tests, and
  ``oomkit run --sim SCENARIO`` to try a config without a live kernel).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Protocol

from oomkit.daemon.config import Config
from oomkit.errors import ConfigError, OomkitError
from oomkit.kernel.base import Kernel, ServedKernel
from oomkit.runtime import Runtime


class Backend(Protocol):
    name: str
    #: A reload loads the new config on a thread while serving goes on (the live kernel:
    #: OOMs do not wait for a policy's import); False: serving waits for the load (the
    #: simulator, whose clock would otherwise run on while the import takes wall time).
    reload_in_background: bool

    def open(self, config: Config) -> Kernel:
        """The kernel to drive, ready for Runtime(kernel)."""
        ...

    def serve(self, kernel: Kernel, runtime: Runtime, stop: threading.Event) -> bool:
        """Deliver the kernel's events (OOMs, PSI, cgroups) to the runtime until ``stop``
        is set; return soon after it is. True when there will never be more events (a
        finished simulation), False when stopped."""
        ...

    def close(self, kernel: Kernel) -> None:
        """Give the kernel back as it was: every setting restored, the watchdog released."""
        ...

    def watched_cgroups(self, kernel: Kernel) -> int | None:
        """How many memcgs the kernel has armed, if it keeps count (None: it does not)."""
        ...

    def notes(self, config: Config) -> list[str]:
        """Lines for the start of the run: what of the config this backend leaves out."""
        ...


def system_watch_settings(config: Config) -> dict[str, float]:
    """The config's ``[system]`` as the system-wide watch takes it (live and simulated)."""
    sysw = config.system
    return {"min_available": sysw.min_available, "min_swap_free": sysw.min_swap_free,
            "lead_s": sysw.lead_s, "max_fill_rate": sysw.max_fill_rate}


class SimBackend:
    """A scenario on the simulator, run in slices so that stop and reload get a turn."""

    name = "sim"
    reload_in_background = False

    def __init__(self, scenario: str, *, slice_s: float = 0.1,
                 on_slice: Callable[[float], None] | None = None) -> None:
        self.scenario = scenario
        self.slice_ns = int(slice_s * 1e9)
        self.on_slice = on_slice
        self.summary_emitted = False

    def open(self, config: Config) -> Kernel:
        from oomkit.kernel.sim import SimKernel, load_scenario

        kernel = SimKernel.from_scenario(load_scenario(self.scenario))
        # [system] as LiveBackend passes it to LinuxKernel.open: the same watch, simulated
        kernel.enable_system_watch(**system_watch_settings(config))
        return kernel

    def serve(self, kernel: Kernel, runtime: Runtime, stop: threading.Event) -> bool:
        from oomkit.kernel.sim import SimKernel
        from oomkit.sim_summary import summarize

        assert isinstance(kernel, SimKernel)
        end = kernel.machine.duration_ns
        while not stop.is_set():
            now = kernel.clock.now_ns()
            if now >= end:
                if not self.summary_emitted:
                    self.summary_emitted = True
                    runtime.emit(summarize(kernel))
                return True
            kernel.run(min(end, now + self.slice_ns))
            if self.on_slice is not None:
                self.on_slice(kernel.clock.now())
        return False

    def close(self, kernel: Kernel) -> None:
        return None

    def watched_cgroups(self, kernel: Kernel) -> int | None:
        return None

    def notes(self, config: Config) -> list[str]:
        """One line naming what the config sets and the simulator does not run, if any:
        ``[guard]`` (the live v2 guard band: a memcg's OOM reaches the handlers when its
        usage stays within the margin under memory.max; simulated, at memory.max itself)
        and ``daemon.cgroup_root`` (the scenario's tree is the root)."""
        written = config.positions
        left = []
        if written is not None and written.line("guard") is not None:
            left.append("[guard] (memcg OOMs reach the handlers at memory.max, not in the "
                        "guard band below it)")
        if config.daemon.cgroup_root:
            left.append("daemon.cgroup_root (the scenario's tree is the root)")
        if not left:
            return []
        return ["not simulated: " + "; ".join(left)]


#: What the watchdog adds to the longest budget before it hands a stuck OOM to the
#: kernel killer: the runtime's own hand-over and a victim's exit come first.
WATCHDOG_MARGIN_S = 2.0
WATCHDOG_MIN_S = 3.0


def watchdog_deadline(config: Config) -> float:
    """How long a memcg may stay under OOM with the kernel killer disabled by us before
    the watchdog (another process) hands it over: the longest handler budget plus a
    margin, at least 3 s, at most the watchdog's default (15 s) or $OOMKIT_WATCHDOG_
    HUNG_AFTER. A handler that never lets the runtime run again (one holding the GIL in
    native code) is thus bounded by its budget too, without touching the decision path."""
    from oomkit.kernel.linux.watchdog import default_hung_after

    budgets = [config.daemon.budget_s]
    budgets += [e.budget_s for e in config.oom if e.budget_s is not None]
    budgets += [p.budget_s for p in config.psi if p.budget_s is not None]
    return min(default_hung_after(), max(WATCHDOG_MIN_S, max(budgets) + WATCHDOG_MARGIN_S))


class LiveBackend:
    """The live kernel: LinuxKernel (with its restore journal and watchdog), polled.

    The loop is ``oomkit.live.serve_until``, the one ``oomkit.live.serve`` runs; serve()
    also closes the runtime and the kernel when it returns, but the daemon has to keep both
    across a reload (serving stops for the swap, then goes on), so closing is left to
    :meth:`close`.
    """

    name = "live"
    reload_in_background = True

    def __init__(self) -> None:
        self._kernels: dict[int, ServedKernel] = {}

    def open(self, config: Config) -> Kernel:
        try:
            linux = importlib.import_module("oomkit.kernel.linux")
        except ImportError as exc:
            raise ConfigError("the live backend (oomkit.kernel.linux) is not available in "
                              f"this build: {exc}") from None
        d = config.daemon
        try:
            kernel: ServedKernel = linux.LinuxKernel.open(
                cgroup_root=d.cgroup_root or None,
                state_file=d.state_file,
                guard_margin=config.guard.of,
                **{f"system_{k}": v for k, v in system_watch_settings(config).items()},
                watchdog_hung_after=watchdog_deadline(config),
                event_log=d.event_log,
            )
        except OomkitError as exc:
            key = "cgroup_root" if d.cgroup_root else "state_file"
            raise config.error(("daemon", key), f"cannot open the kernel: {exc}") from None
        except RuntimeError as exc:  # the restore journal belongs to a running oomkit
            raise config.error(("daemon", "state_file"), str(exc)) from None
        self._kernels[id(kernel)] = kernel
        return kernel

    def _served(self, kernel: Kernel) -> ServedKernel:
        served = self._kernels.get(id(kernel))
        if served is None or served is not kernel:
            raise ValueError("not a kernel this backend opened")
        return served

    def serve(self, kernel: Kernel, runtime: Runtime, stop: threading.Event) -> bool:
        from oomkit.live import serve_until

        serve_until(self._served(kernel), stop)
        return False

    def close(self, kernel: Kernel) -> None:
        self._served(kernel).close()
        self._kernels.pop(id(kernel), None)

    def watched_cgroups(self, kernel: Kernel) -> int | None:
        return self._served(kernel).watched_cgroups()

    def notes(self, config: Config) -> list[str]:
        return []
