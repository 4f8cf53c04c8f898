"""What the peers' detectors share: a poll, and "above a limit for a duration".

earlyoom, systemd-oomd and oomd poll (/proc/meminfo, memory.pressure) every 100 ms to
1 s. A PsiOps has no timer; it has triggers. :class:`PollWatch` takes a machine-wide
memory "some" trigger of ``wake`` per ``window`` as its poll: it looks whenever reclaim
stalls anyone, at most once per window (the kernel fires a trigger once per window), and
samples the cgroups' counters for the rankers (oomkit.policies.cause). The presets ask
for the kernel's shortest window, 500 ms (the closest to their daemons' 100 ms to 1 s);
where the caller may not (no CAP_SYS_RESOURCE) the watch falls back to 2 s.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence

from oomkit.errors import OomkitError
from oomkit.kernel.base import Cgroup, PolicyKernel, PsiTrigger, Resource
from oomkit.ops import Psi, PsiOps
from oomkit.policies import cause
from oomkit.policy_args import check_trigger

#: The window every caller may use (unprivileged PSI triggers: multiples of 2 s).
FALLBACK_WINDOW_US = 2_000_000


class PollWatch(PsiOps):
    """Subclasses set ``name``, call ``super().__init__(wake, window)`` and write poll().
    ``samples_tree``: whether each look also samples every cgroup's counters (the
    rankers of systemd-oomd and oomd need them; earlyoom ranks by oom_score alone, and a
    walk of the tree twice a second is what overran its budget in a TCG guest)."""

    samples_tree = True

    def __init__(self, wake: float, window: float) -> None:
        check_trigger(wake, window, "wake", "window")  # QA Q6: refused at load
        self.wake_us, self.window_us = int(wake * 1e6), int(window * 1e6)

    def init(self, psi: Psi) -> int:
        try:
            psi.create_trigger(0, Resource.MEMORY, self.wake_us, self.window_us, full=False)
        except OomkitError:
            if self.window_us % FALLBACK_WINDOW_US == 0:
                raise
            # Windows that are not a multiple of 2 s need CAP_SYS_RESOURCE (kernel/sched/
            # psi.c psi_trigger_create): without it, look half as often, not never.
            self.window_us = FALLBACK_WINDOW_US
            psi.create_trigger(0, Resource.MEMORY, self.wake_us, self.window_us, full=False)
        if self.samples_tree:
            cause.tracker(psi.kernel).note_tree(psi.kernel.root_mem_cgroup(),
                                                psi.kernel.clock.now())
        return 0

    def handle_psi_event(self, psi: Psi, trigger: PsiTrigger) -> None:
        kernel, now = psi.kernel, psi.kernel.clock.now()
        try:
            self.poll(kernel, now)
        finally:
            if self.samples_tree:
                cause.tracker(kernel).note_tree(kernel.root_mem_cgroup(), now)

    def poll(self, kernel: PolicyKernel, now: float) -> None:
        raise NotImplementedError


class Sustained:
    """Which of the cgroups matching ``globs`` have had ``read(cg)`` above ``limit`` for
    ``duration`` seconds (as systemd-oomd's mem_pressure_limit_hit_start and oomd's
    PressureAbove duration count it); each is reported once, then counted afresh."""

    def __init__(self, globs: Sequence[str], limit: float, duration: float,
                 read: Callable[[Cgroup], float]) -> None:
        self.globs, self.limit, self.duration, self.read = tuple(globs), limit, duration, read
        self._since: dict[int, float] = {}

    def due(self, root: Cgroup, now: float) -> Iterator[Cgroup]:
        for cg in root.walk():
            if cg.parent is None or not any(fnmatch.fnmatchcase(cg.path, g)
                                            for g in self.globs):
                continue
            if self.read(cg) <= self.limit:
                self._since.pop(cg.id, None)
            elif now - self._since.setdefault(cg.id, now) >= self.duration:
                self._since.pop(cg.id, None)
                yield cg
