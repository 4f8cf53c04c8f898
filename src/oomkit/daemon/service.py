"""The daemon: a config, a backend, a runtime, and the outputs around them.

Life cycle (``Daemon.start``, ``Daemon.run``, ``Daemon.shutdown``):

1. self-protection (small thread stacks, imports, ``oom_score_adj``, ``mlockall``);
2. the outputs (:mod:`oomkit.daemon.outputs`): housekeeping thread, event log, metrics
   server, status file, terminal;
3. the backend opens the kernel (wrapped in :class:`DryRunKernel` for a dry run), the
   runtime binds to it and the config's policies (already imported) are attached;
4. one event is formatted as a warm-up, the garbage collector is frozen and switched off;
5. ``run`` serves the kernel's events until SIGTERM/SIGINT; a SIGHUP reloads the config:
   on the live kernel it is parsed and its policies imported on a thread of its own while
   the loop goes on serving the running handlers (an import may take up to its 10 s
   limit: QA G14), then the loop swaps the handlers at a quiet point; a broken config
   keeps the running one and logs an ``error`` event. The simulator, on its own clock,
   stands still while a reload loads;
6. ``shutdown``, also after a crash: every handler detached (the backend restores the
   kernel settings it changed), the backend closed (its watchdog released), outputs closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, ClassVar, TextIO

from oomkit.daemon.backend import Backend
from oomkit.daemon.config import Config, LoadedPolicies, OomEntry, PsiEntry
from oomkit.daemon.dryrun import DryRunKernel
from oomkit.daemon.eventlog import wall_clock
from oomkit.daemon.housekeeper import Housekeeper
from oomkit.daemon.journal import Journal
from oomkit.daemon.outputs import Outputs
from oomkit.daemon.protect import GcControl, Protection, lock_memory, protect
from oomkit.daemon.reload import CONFIG_CHECK_S, BackgroundLoad, Loaded, file_signature, load_again
from oomkit.errors import ConfigError, OomkitError
from oomkit.events import (
    CgroupOfflineEvent,
    CgroupOnlineEvent,
    ErrorEvent,
    Event,
    OomEvent,
)
from oomkit.kernel.base import Cgroup, Kernel, Victim
from oomkit.lab.incidents import Incidents
from oomkit.runtime import OomLink, PsiLink, Runtime


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) how we are: READY=1 once armed, RELOADING=1, STOPPING=1.
    A no-op outside systemd (no $NOTIFY_SOCKET). Never blocks: a datagram the receiver's
    full queue cannot take is dropped (False), as a daemon that waits on its supervisor
    during an OOM would leave the OOM waiting too."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a full queue: EAGAIN, not a wait
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None, pid: int | None = None
                      ) -> float | None:
    """Seconds between WATCHDOG=1 pings when systemd asks for them (``WatchdogSec=`` sets
    ``$WATCHDOG_USEC``; ``$WATCHDOG_PID``, when set, must be ours; sd_watchdog_enabled(3)):
    half the timeout, as that page advises. None without a watchdog."""
    env = environ if environ is not None else dict(os.environ)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    wanted_pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (wanted_pid and wanted_pid != str(pid if pid is not None else os.getpid())):
        return None
    return usec / 2e6


@dataclass(frozen=True, slots=True)
class DaemonEvent(Event):
    """The daemon's own milestones in the event log: start, reload, stop."""

    kind: ClassVar[str] = "daemon"
    action: str
    detail: str = ""


class Daemon:
    def __init__(
        self,
        config: Config,
        policies: LoadedPolicies,
        backend: Backend,
        *,
        reload_config: Callable[[], tuple[Config, LoadedPolicies]] | None = None,
        out: TextIO | None = None,
        as_json: bool = False,
        journal: Journal | None = None,
        watch_config: str | None = None,
        self_protect: bool = True,
        wall: Callable[[], float] = wall_clock,
        strict_outputs: bool = False,
    ) -> None:
        self.config = config
        self.policies = policies
        self.backend = backend
        self._reload_config = reload_config
        self._out = out
        self._as_json = as_json
        self._journal = journal
        self._watch_config = watch_config
        self._config_seen: tuple[int, ...] | None = None
        self._self_protect = self_protect
        self._strict_outputs = strict_outputs  # a trial run: refuse rather than go on
        self._wall = wall
        self.protection = Protection()
        self.gc = GcControl()
        self.housekeeper: Housekeeper | None = None
        self.outputs: Outputs | None = None
        self.kernel: Kernel | None = None  # what the runtime drives (maybe DryRunKernel)
        self.real_kernel: Kernel | None = None
        self.runtime: Runtime | None = None
        self.incidents: Incidents | None = None  # the flight recorder ([recorder])
        self._oom_links: list[tuple[OomEntry, OomLink]] = []
        self._psi_links: list[tuple[PsiEntry, PsiLink]] = []
        self._serving = threading.Event()
        self._terminate = False
        self._reload_requested = False
        self._loading: BackgroundLoad | None = None  # a reload loading (live backend)
        self._load_again = False  # asked again while loading: load once more afterwards
        self._watched_cache: int | None = None
        self.reloads = 0
        self.exit_code = 0
        self._old_signals: dict[int, Any] = {}
        self._serve_thread: threading.Thread | None = None

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        if self._self_protect:
            self.protection = protect(mlock=False)  # memory is locked once all is loaded
        self._ping_s = watchdog_interval()
        intervals = [s for s in (self._ping_s,
                                 CONFIG_CHECK_S if self._watch_config else None) if s]
        if self._watch_config:
            self._config_seen = file_signature(self._watch_config)
        self.housekeeper = Housekeeper(gc_control=self.gc if self._self_protect else None,
                                       gc_interval_s=cfg.daemon.gc_interval_s,
                                       tick=self._tick if intervals else None,
                                       tick_interval_s=min(intervals) if intervals else 0.0)
        self.housekeeper.start()
        try:
            self._start_outputs()
            self._start_kernel()
            self._start_recorder()
        except BaseException:
            self.shutdown()
            raise
        self._warm_up()
        self._lock_memory()
        for step, why in self.protection.steps.items():
            if why is not None:
                self.emit_error(f"self-protection: {step}", why)
        self._emit(DaemonEvent(self._now(), "start", self._describe()))
        for note in self.backend.notes(self.config):  # what the backend leaves out
            self._emit(DaemonEvent(self._now(), "note", note))
        self._note_leftovers()
        if self._self_protect:
            self.gc.startup_done()
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self._describe()}")

    def _note_leftovers(self) -> None:
        """A journal left by a run that died with its watchdog (both SIGKILLed, a machine
        that froze): restored by the kernel backend before anything was armed, and said
        here, since no watchdog lived to write its ``died`` record (QA G7)."""
        journal = getattr(self.real_kernel, "journal", None)
        leftovers = getattr(journal, "leftovers", None) or []
        if leftovers:
            restored = sum(why is None for _, why in leftovers)
            self._emit(DaemonEvent(self._now(), "restored", (
                f"the previous oomkit ended without stopping, its watchdog too: {restored} "
                f"of {len(leftovers)} kernel settings restored from its journal "
                f"{self.config.daemon.state_file}; its OOMs after that were not logged")))

    def _tick(self) -> None:
        if self._ping_s:
            self._watchdog_ping()
        if self._watch_config:
            self._check_config_file(self._watch_config)

    def _check_config_file(self, path: str) -> None:
        """Reload when the config file is another file now (a ConfigMap update swaps the
        ``..data`` symlink: a new inode) or was rewritten."""
        seen = file_signature(path)
        if seen is not None and seen != self._config_seen:
            self._config_seen = seen
            self.request_reload()

    def _watchdog_ping(self) -> None:
        """WATCHDOG=1 from the housekeeping thread, at its wakes (no timer of its own): the
        process is scheduled, its threads take the GIL, and the serve loop still runs. A
        handler that hangs is not this watchdog's business: its budget ends the call, and
        the kernel killer's own watchdog process covers a stuck v1 OOM."""
        serving = self._serve_thread
        if serving is None or serving.is_alive():
            sd_notify("WATCHDOG=1")

    def _lock_memory(self) -> None:
        """mlockall, now that every library, module and buffer of the decision path is
        loaded (again after a reload: new policies may bring new modules)."""
        if self._self_protect and self.config.daemon.mlock:
            self.protection.steps["mlockall"] = lock_memory()

    def _describe(self) -> str:
        cfg = self.config
        bits = [f"pid {os.getpid()}", f"config {cfg.path}", f"backend {self.backend.name}",
                f"{len(self._oom_links)} oom and {len(self._psi_links)} psi handlers"]
        if cfg.daemon.dry_run:
            bits.append("DRY RUN")
        return ", ".join(bits)

    def _start_outputs(self) -> None:
        cfg = self.config
        assert self.housekeeper is not None
        self.outputs = Outputs(
            wall=self._wall, defer=self.housekeeper.submit, backend_name=self.backend.name,
            handlers=self.handlers, watched=self.watched_cgroups,
            take_would=self._take_would if cfg.daemon.dry_run else None,
            out=self._out, as_json=self._as_json, journal=self._journal)
        self.outputs.dispatch.add_event_sink("cgroups", self._on_cgroup_event)
        # Before the event log (open adds it): names the OOM's incident file in its line.
        self.outputs.dispatch.add("flight recorder", self._incident_record)
        # An output that cannot start (a read-only log directory, a busy port) is reported
        # and left out: OOM handling never depends on it (issue 14, item 8).
        failed = self.outputs.open(cfg)
        if failed and self._strict_outputs:
            raise ConfigError(failed[0][1])
        for where, message in failed:
            self.emit_error(where, f"{message}; OOM handling goes on without it")

    @property
    def metrics(self) -> Any:
        return self.outputs.metrics if self.outputs is not None else None

    def _start_recorder(self) -> None:
        cfg = self.config
        if cfg.recorder.size_bytes <= 0 or self.real_kernel is None:
            return
        assert self.housekeeper is not None
        self.incidents = Incidents(self.real_kernel, cfg.recorder,
                                   event_log=cfg.daemon.event_log, roots=self._watched_roots,
                                   wall=self._wall, defer=self.housekeeper.submit,
                                   on_error=lambda msg: self.emit_error("recorder", msg),
                                   context=lambda: {"config": os.path.abspath(self.config.path),
                                                    "handlers": self.handlers()})
        self.incidents.recorder.on_sample = self._sample_growth
        if self.backend.name == "sim":
            # The simulator is not thread-safe and runs on its own clock: sample it
            # between its slices, in simulated time.
            inner = getattr(self.backend, "on_slice", None)
            tick = self.incidents.recorder.tick

            def on_slice(now: float) -> None:
                tick()
                if inner is not None:
                    inner(now)

            self.backend.on_slice = on_slice  # type: ignore[attr-defined]
        else:
            # On the live kernel's loop: no thread of its own, its probe rides on the
            # loop's wake-ups (issue 10: idle CPU at or below earlyoom's).
            self.incidents.start(getattr(self.real_kernel, "loop", None))

    def _sample_growth(self, now: float) -> None:
        """The recorder's samples (every 10 s; every 0.5 s near a limit or under pressure)
        are also the growth samples of the cause ranking (oomkit.policies.cause): without
        them a memcg OOM that no stall announced ranks by size alone. Only where a loaded
        policy uses that ranking (it imported the module): no reads for nothing."""
        cause = sys.modules.get("oomkit.policies.cause")
        kernel = self.real_kernel
        if cause is not None and kernel is not None:
            cause.tracker(kernel).note_tree(kernel.root_mem_cgroup(), now)

    def _incident_record(self, event: Event, record: dict[str, Any]) -> None:
        # An incident lives beside the event log, is named in its OOM line and rotates
        # with it: with no event log open (reported once at start) there is none to write.
        if self.incidents is not None and self.outputs is not None \
                and self.outputs.eventlog is not None:
            self.incidents.on_record(event, record)

    @property
    def metrics_server(self) -> Any:
        return self.outputs.metrics_server if self.outputs is not None else None

    @property
    def metrics_address(self) -> str | None:
        """Where /metrics is served (with the real port when the config said 0)."""
        return self.outputs.metrics_address if self.outputs is not None else None

    def _start_kernel(self) -> None:
        cfg = self.config
        assert self.outputs is not None
        self.real_kernel = self.backend.open(cfg)
        self.kernel = DryRunKernel(self.real_kernel) if cfg.daemon.dry_run else self.real_kernel
        self.runtime = Runtime(self.kernel, sink=self.outputs.dispatch,
                               budget_s=cfg.daemon.budget_s,
                               max_failures=cfg.daemon.max_failures,
                               post_action_delay_s=cfg.daemon.post_action_delay_s,
                               min_victim=cfg.daemon.min_victim)
        self._attach(cfg, self.policies)

    def _warm_up(self) -> None:
        """Run the event formatting once, so the first OOM finds it all initialised."""
        assert self.outputs is not None
        if self.runtime is not None:
            self.runtime.warm_up()
        probe = OomEvent(0.0, "/", "MEMCG", None, "default", "default",
                         (Victim(0, "warm-up", "/", 0),))
        with contextlib.suppress(Exception):
            json.dumps(self.outputs.dispatch.record_of(probe), separators=(", ", ": "), default=str)

    # -- attach ------------------------------------------------------------------------------
    def _attach(self, cfg: Config, policies: LoadedPolicies) -> None:
        """Attach every policy; on a failure detach those attached and raise ConfigError
        naming the entry."""
        rt = self.runtime
        assert rt is not None
        oom_links: list[tuple[OomEntry, OomLink]] = []
        psi_links: list[tuple[PsiEntry, PsiLink]] = []
        try:
            for entry, ops in policies.oom:
                try:
                    budget: float | bool = entry.budget_s if entry.budget_s is not None else True
                    # A cgroup that does not exist yet is attached when it appears.
                    oom_links.append((entry, rt.attach_oom(ops, entry.cgroup, budget_s=budget,
                                                           wait=entry.cgroup is not None)))
                except OomkitError as exc:
                    key = "cgroup" if entry.cgroup is not None else "policy"
                    raise self._entry_error(cfg, ("oom", entry.index, key), entry.origin,
                                            f"cannot attach {entry.policy}: {exc}") from None
            for pentry, pops in policies.psi:
                try:
                    budget = pentry.budget_s if pentry.budget_s is not None else True
                    psi_links.append((pentry, rt.attach_psi(pops, budget_s=budget)))
                except OomkitError as exc:
                    raise self._entry_error(cfg, ("psi", pentry.index, "policy"),
                                            pentry.origin, f"cannot attach: {exc}") from None
        except ConfigError:
            for _, link in oom_links:
                link.detach()
            for _, plink in psi_links:
                plink.detach()
            raise
        self._oom_links = oom_links
        self._psi_links = psi_links
        self._watched_cache = None

    @staticmethod
    def _entry_error(cfg: Config, at: tuple[str | int, ...], origin: str,
                     msg: str) -> ConfigError:
        if origin:
            return ConfigError(f"{origin}: {msg}")
        return cfg.error(at, msg)

    def _detach_all(self) -> None:
        for _, link in self._oom_links:
            link.detach()
        for _, plink in self._psi_links:
            plink.detach()
        self._oom_links = []
        self._psi_links = []
        self._watched_cache = None

    # -- what the outputs ask ----------------------------------------------------------------
    def handlers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for entry, link in list(self._oom_links):
            if link.attached:
                out.append({"ops": "oom", "name": link.name, "policy": entry.policy,
                            "cgroup": link.cgroup_path, "cgroup_id": link.cgroup_id,
                            "budget_s": link.budget_s, "failures": link.failures,
                            **self._still_running(link)})
        for pentry, plink in list(self._psi_links):
            if plink.attached:
                out.append({"ops": "psi", "name": plink.name, "policy": pentry.policy,
                            "triggers": len(plink.triggers), "budget_s": plink.budget_s,
                            "failures": plink.failures, **self._still_running(plink)})
        return out

    def _still_running(self, link: OomLink | PsiLink) -> dict[str, float]:
        """``running_for_s``: how long a call that overran its budget and could not be
        stopped has been running (QA G3), for the status file; nothing otherwise."""
        running = link.running
        if running is None or not running[0].is_alive():
            return {}
        return {"running_for_s": round(max(0.0, self._now() - running[1]), 1)}

    def _watched_roots(self) -> list[Cgroup]:
        """The cgroups of the attached OOM handlers (the root for a system-wide one)."""
        kernel = self.real_kernel
        if kernel is None:
            return []
        roots: list[Cgroup] = []
        for _, link in list(self._oom_links):
            if not link.attached:
                continue
            if link.cgroup_id == 0:
                return [kernel.root_mem_cgroup()]
            cg = kernel.mem_cgroup(link.cgroup_id)
            if cg is not None:
                roots.append(cg)
        return roots

    def watched_cgroups(self) -> int:
        """Cgroups whose OOMs reach a handler: the backend's count when it keeps one, else
        the cgroups under the attached handlers (everything for a system-wide one)."""
        kernel = self.real_kernel
        if kernel is None:
            return 0
        count = self.backend.watched_cgroups(kernel)
        if count is not None:
            return count
        cached = self._watched_cache
        if cached is not None:
            return cached
        roots = []
        for _, link in list(self._oom_links):
            if not link.attached:
                continue
            if link.cgroup_id == 0:
                roots = [kernel.root_mem_cgroup()]
                break
            cg = kernel.mem_cgroup(link.cgroup_id)
            if cg is not None:
                roots.append(cg)
        seen: set[int] = set()
        try:
            for root in roots:
                for cg in root.walk():
                    seen.add(cg.id)
        except OomkitError:
            pass
        self._watched_cache = len(seen)
        return self._watched_cache

    def _on_cgroup_event(self, event: Event) -> None:
        if isinstance(event, CgroupOnlineEvent | CgroupOfflineEvent):
            self._watched_cache = None

    def _take_would(self) -> list[str]:
        kernel = self.kernel
        return kernel.take_actions() if isinstance(kernel, DryRunKernel) else []

    # -- events of our own ------------------------------------------------------------------
    def _now(self) -> float:
        kernel = self.kernel
        return kernel.clock.now() if kernel is not None else 0.0

    def _emit(self, event: Event) -> None:
        if self.runtime is not None:
            self.runtime.emit(event)
        elif self.outputs is not None:
            self.outputs.dispatch(event)

    def emit_error(self, where: str, error: str) -> None:
        if self._journal is None:  # the journal gets the error event itself, once
            print(f"oomkit: {where}: {error}", file=sys.stderr)
        self._emit(ErrorEvent(self._now(), where, error))

    # -- signals and the serve loop --------------------------------------------------------
    def request_reload(self) -> None:
        self._reload_requested = True
        self._serving.set()

    def request_stop(self) -> None:
        self._terminate = True
        self._serving.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.request_reload()
        else:
            self.request_stop()

    def install_signals(self) -> None:
        """SIGHUP reloads, SIGTERM and SIGINT stop (main thread only); shutdown puts the
        previous handlers back."""
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self._old_signals[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        old, self._old_signals = self._old_signals, {}
        for sig, handler in old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)

    def run(self) -> int:
        """Serve until stopped; returns the exit code. Always shuts down."""
        assert self.runtime is not None and self.real_kernel is not None
        self._serve_thread = threading.current_thread()
        try:
            while True:
                self._serving.clear()
                if not (self._terminate or self._reload_requested or self._loaded()):
                    finished = self.backend.serve(self.real_kernel, self.runtime,
                                                  self._serving)
                else:
                    finished = False
                if self._terminate:
                    break
                if self._loaded():
                    self._finish_reload()
                    continue
                if self._reload_requested:
                    self._reload_requested = False
                    if getattr(self.backend, "reload_in_background", False):
                        self._begin_reload()
                    else:
                        self.reload()
                    continue
                if finished:
                    break
        except BaseException as exc:
            self.exit_code = 1
            what = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.emit_error("serve", f"the daemon crashed: {what}; restoring the kernel")
            traceback.print_exc()
        finally:
            self.shutdown()
        return self.exit_code

    # -- reload ------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Load the config again and swap it in, waiting for the load (the serve loop of a
        live backend uses :meth:`_begin_reload` instead); on any error keep the running
        one."""
        if self._reload_config is None:
            self.emit_error("reload", "no config file to reload")
            return False
        self._reload_starts()
        try:
            return self._apply_reload(self._load())
        finally:
            sd_notify(f"READY=1\nSTATUS={self._describe()}")

    def _reload_starts(self) -> None:
        sd_notify("RELOADING=1")
        if self._watch_config:  # a SIGHUP after an edit: no second reload at the next tick
            self._config_seen = file_signature(self._watch_config)

    def _begin_reload(self) -> None:
        """Start loading the config on a thread of its own (:class:`BackgroundLoad`): the
        serve loop goes on with the running handlers and swaps once the load has its answer
        (QA G14). A request while one loads is served by one more load after it (the file
        may have changed again)."""
        if self._reload_config is None:
            self.emit_error("reload", "no config file to reload")
            return
        if self._loading is not None:
            self._load_again = True
            return
        self._reload_starts()
        self._loading = BackgroundLoad(self._reload_config, self.config, self._serving)

    def _loaded(self) -> bool:
        return self._loading is not None and self._loading.result is not None

    def _finish_reload(self) -> None:
        """The serve loop's half of a background reload: swap in (or refuse) what loaded."""
        loading, self._loading = self._loading, None
        assert loading is not None and loading.result is not None
        loading.join(1.0)  # it has set its result: only its return is left
        try:
            self._apply_reload(loading.result)
        finally:
            sd_notify(f"READY=1\nSTATUS={self._describe()}")
        if self._load_again:
            self._load_again = False
            self._begin_reload()

    def _load(self) -> Loaded:
        assert self._reload_config is not None
        return load_again(self._reload_config, self.config)

    def _apply_reload(self, loaded: Loaded) -> bool:
        if isinstance(loaded, str):
            self._reload_failed(loaded)
            return False
        new, policies = loaded
        try:
            self._swap(new, policies)
        except ConfigError as exc:
            self._reload_failed(f"{exc} (the running config is kept)")
            return False
        self.reloads += 1
        if self.incidents is not None:  # sizes and intervals; on/off needs a restart
            self.incidents.recorder.settings = new.recorder
        if self.outputs is not None:
            self.outputs.note_reload(True)
        self._emit(DaemonEvent(self._now(), "reload", self._describe()))
        if self._self_protect:
            self._lock_memory()
            self.gc.refreeze()
        return True

    def _reload_failed(self, message: str) -> None:
        if self.outputs is not None:
            self.outputs.note_reload(False, message)
        self.emit_error("reload", message)

    def _swap(self, new: Config, policies: LoadedPolicies) -> None:
        """Detach the old handlers, attach the new ones; if one fails, put the old back."""
        rt = self.runtime
        assert rt is not None
        old_cfg, old_policies = self.config, self.policies
        self._detach_all()
        rt.budget_s = new.daemon.budget_s
        rt.max_failures = new.daemon.max_failures
        rt.post_action_delay_s = new.daemon.post_action_delay_s
        rt.min_victim = new.daemon.min_victim
        try:
            self._attach(new, policies)
        except ConfigError:
            rt.budget_s = old_cfg.daemon.budget_s
            rt.max_failures = old_cfg.daemon.max_failures
            rt.post_action_delay_s = old_cfg.daemon.post_action_delay_s
            rt.min_victim = old_cfg.daemon.min_victim
            try:
                self._attach(old_cfg, old_policies)
            except ConfigError as exc:
                # The old config's cgroup went away meanwhile: attach what still can be.
                self.emit_error("reload", f"could not re-attach the running config: {exc}")
                self._attach_what_can(old_cfg, old_policies)
            raise
        self.config, self.policies = new, policies
        if self.outputs is not None:
            self.outputs.apply(old_cfg, new, self.emit_error)

    def _attach_what_can(self, cfg: Config, policies: LoadedPolicies) -> None:
        for entry, ops in policies.oom:
            with contextlib.suppress(ConfigError):
                self._attach(cfg, LoadedPolicies(((entry, ops),), ()))
        for pentry, pops in policies.psi:
            with contextlib.suppress(ConfigError):
                self._attach(cfg, LoadedPolicies((), ((pentry, pops),)))

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Restore the kernel and close everything; safe to call twice and after errors."""
        sd_notify("STOPPING=1")
        problems: list[str] = []
        if self.incidents is not None:
            self.incidents.close()
        rt, self.runtime = self.runtime, None
        if rt is not None:
            self.runtime = rt  # so that the stop event still reaches the outputs
            try:
                self._emit(DaemonEvent(self._now(), "stop", f"exit code {self.exit_code}"))
            except Exception:
                pass
            try:
                rt.close()  # detaches everything: each unwatch_oom restores its setting
            except Exception as exc:
                problems.append(f"runtime close: {exc}")
            self.runtime = None
            self._oom_links, self._psi_links = [], []
        kernel, self.real_kernel = self.real_kernel, None
        if kernel is not None:
            try:
                self.backend.close(kernel)
            except Exception as exc:
                problems.append(f"backend close: {exc}")
        for message in problems:
            print(f"oomkit: shutdown: {message}", file=sys.stderr)
            if self.outputs is not None:
                self.outputs.log_error("shutdown", message)
        if self.outputs is not None:
            self.outputs.close_servers()
        if self.housekeeper is not None:
            self.housekeeper.close()
            self.housekeeper = None
        if self.outputs is not None:
            self.outputs.close_eventlog()
        if self._self_protect:
            self.gc.restore()
        self._restore_signals()
