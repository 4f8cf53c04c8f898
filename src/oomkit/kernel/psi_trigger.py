"""PSI triggers, done the way the Linux kernel does them (``kernel/sched/psi.c``).

:class:`PsiWindow` / :func:`window_update` (``window_update()``), :class:`PsiTriggerState`
(``update_triggers()``: a trigger fires when the stall grows by its threshold within its
window, at most once per window), :func:`validate_trigger` and :func:`parse_trigger`
(``psi_trigger_create()``). The averaging arithmetic they sit beside is
:mod:`oomkit.kernel.psi_math`. Units: nanoseconds unless a name ends in ``_us``.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, replace
from typing import Final

from oomkit.kernel.psi_math import (
    _U32,
    _U64,
    UNPRIVILEGED_WINDOW_STEP_US,
    WINDOW_MAX_US,
    WINDOW_MIN_US_LEGACY,
    _require_unsigned,
)


@dataclass(frozen=True, slots=True)
class PsiWindow:
    """A trigger's tracking window (``struct psi_window``); all fields in ns."""

    size: int
    start_time: int
    start_value: int
    prev_growth: int


def window_reset(win: PsiWindow, now: int, value: int, prev_growth: int) -> PsiWindow:
    """Start a new window at ``now`` (psi.c window_reset())."""
    return replace(win, start_time=now, start_value=value, prev_growth=prev_growth)


def window_update(win: PsiWindow, now: int, value: int) -> tuple[PsiWindow, int]:
    """Stall growth over the last window, approximated (psi.c window_update()).

    Returns the (possibly reset) window and the growth. Rather than keep a history, the
    kernel counts growth since the window started and adds the previous window's growth
    prorated to the part of the window still inside the look-back, assuming that growth
    was linear. Once more than a window has elapsed, the window restarts with the measured
    growth as the new ``prev_growth``.

    Two C-width effects are kept. ``remaining`` is a u32 in the kernel, so for windows
    longer than 2**32 ns (about 4.29 s) it wraps while more than that is left, and the
    prorated share comes out wrong; and the product ``prev_growth * remaining`` is a u64.
    """
    elapsed = now - win.start_time
    growth = value - win.start_value
    if elapsed > win.size:
        return window_reset(win, now, value, growth), growth
    remaining = (win.size - elapsed) & _U32
    growth += ((win.prev_growth * remaining) & _U64) // win.size
    return win, growth


class PsiTriggerState:
    """One PSI trigger's evaluation state (psi.c ``struct psi_trigger`` + update_triggers()).

    Call :meth:`update` each time the kernel would evaluate the trigger, with the current
    cumulative stall total of the trigger's state. The caller owns the cadence, which
    depends on who created the trigger (6.5 and later):

    * privileged (CAP_SYS_RESOURCE): psimon, every :func:`rtpoll_period_ns` while the
      group is in rtpoll mode; entering that mode resets the window (call :meth:`reset`,
      mirroring init_rtpoll_triggers());
    * unprivileged: the averaging work, once per PSI period, just before
      update_averages(): when ``now >= averager.avg_next_update``, call
      ``update(now, total, baseline_ns=averager.avg_total_some_ns)`` (or ``_full_``) and
      only then :meth:`PsiAverager.tick`.

    Semantics kept from the kernel:

    * Nothing is evaluated unless the total changed since the previous evaluation (no new
      stall means no window update, and no event) -- unless an event is pending.
    * An event fires when the window growth reaches ``threshold_ns`` (``>=``), at most once
      per window: not while ``now < last_event_time + window``. ``last_event_time`` starts
      at 0 as in psi_trigger_create(), so no event can fire before ``now >= window``.
    * With ``defer_rate_limited`` (the default: "sched/psi: Fix possible missing or delayed
      pending event", merged for 6.2 and backported to stable trees) a breach that happens
      while rate-limited is remembered and fires at the first evaluation after the window
      has passed, even if no new stall arrived by then. With it off, the 6.1-and-earlier
      mainline behaviour: such a breach is dropped, and firing needs fresh stall.
    """

    __slots__ = (
        "_defer",
        "_last_event_time",
        "_last_growth",
        "_last_total",
        "_pending_event",
        "_threshold_ns",
        "_win",
    )

    def __init__(
        self,
        threshold_ns: int,
        window_ns: int,
        now_ns: int,
        total_ns: int,
        *,
        defer_rate_limited: bool = True,
    ) -> None:
        """Create as psi_trigger_create() does: window started now at the current total."""
        _require_unsigned(now_ns=now_ns, total_ns=total_ns)
        if window_ns <= 0:
            raise ValueError(f"window_ns must be > 0, got {window_ns}")
        if threshold_ns <= 0:
            raise ValueError(f"threshold_ns must be > 0, got {threshold_ns}")
        self._threshold_ns = threshold_ns
        self._win = PsiWindow(size=window_ns, start_time=now_ns, start_value=total_ns,
                              prev_growth=0)
        self._last_event_time = 0
        self._pending_event = False
        self._last_total = total_ns
        self._last_growth = 0
        self._defer = defer_rate_limited

    @property
    def threshold_ns(self) -> int:
        return self._threshold_ns

    @property
    def window_ns(self) -> int:
        return self._win.size

    @property
    def window(self) -> PsiWindow:
        return self._win

    @property
    def last_event_time(self) -> int:
        return self._last_event_time

    @property
    def pending_event(self) -> bool:
        return self._pending_event

    @property
    def last_growth(self) -> int:
        """Growth computed by the most recent window update (0 before any)."""
        return self._last_growth

    def reset(self, now_ns: int, total_ns: int) -> None:
        """Restart the window with no history (init_rtpoll_triggers() on entering polling)."""
        self._win = window_reset(self._win, now_ns, total_ns, 0)
        self._last_total = total_ns

    def update(self, now_ns: int, total_ns: int, *, baseline_ns: int | None = None) -> bool:
        """Evaluate the trigger at ``now_ns``; True if an event is generated.

        ``baseline_ns`` is the total the kernel compares against to decide whether there is
        new stall. It defaults to the total seen at the previous evaluation, which is what
        psimon does (``rtpoll_total``). The averaging work instead compares against the
        averager's ``avg_total`` (:attr:`PsiAverager.avg_total_some_ns`), which lags the
        total while samples are being clamped; pass that to mirror unprivileged triggers.
        """
        baseline = self._last_total if baseline_ns is None else baseline_ns
        new_stall = total_ns != baseline
        self._last_total = total_ns
        if not new_stall and not self._pending_event:
            return False
        if new_stall:
            self._win, growth = window_update(self._win, now_ns, total_ns)
            self._last_growth = growth
            if not self._pending_event:
                if growth < self._threshold_ns:
                    return False
                self._pending_event = self._defer
        if now_ns < self._last_event_time + self._win.size:
            return False
        self._last_event_time = now_ns
        self._pending_event = False
        return True


def validate_trigger(
    threshold_us: int,
    window_us: int,
    privileged: bool,
    *,
    kernel: tuple[int, int] = (6, 5),
) -> None:
    """Apply psi_trigger_create()'s checks; raise ValueError (the kernel's EINVAL).

    Since Linux 6.5: ``0 < window <= 10 s``; without CAP_SYS_RESOURCE the window must be a
    multiple of 2 s (such triggers ride on the 2 s averaging work instead of spawning the
    RT psimon thread); ``0 < threshold <= window``.

    Before 6.5 (``kernel < (6, 5)``): ``500 ms <= window <= 10 s`` and the same threshold
    rule; ``privileged`` does not change the window rule there. (On those kernels an
    unprivileged writer is refused earlier, at open() of a /proc/pressure file, with EPERM;
    that is outside this function.)

    Both values are u32 in the kernel; larger ones cannot be expressed and are refused.
    """
    for name, value in (("threshold_us", threshold_us), ("window_us", window_us)):
        if not 0 <= value <= _U32:
            raise ValueError(f"{name} must fit in a u32, got {value}")
    if kernel >= (6, 5):
        if window_us == 0 or window_us > WINDOW_MAX_US:
            raise ValueError(f"window {window_us} us is outside 1..{WINDOW_MAX_US} us")
        if not privileged and window_us % UNPRIVILEGED_WINDOW_STEP_US:
            raise ValueError(
                f"window {window_us} us is not a multiple of "
                f"{UNPRIVILEGED_WINDOW_STEP_US} us, required without CAP_SYS_RESOURCE"
            )
    elif window_us < WINDOW_MIN_US_LEGACY or window_us > WINDOW_MAX_US:
        raise ValueError(
            f"window {window_us} us is outside {WINDOW_MIN_US_LEGACY}..{WINDOW_MAX_US} us"
        )
    if threshold_us == 0 or threshold_us > window_us:
        raise ValueError(f"threshold {threshold_us} us is outside 1..{window_us} us (the window)")


def trigger_refused(exc: BaseException) -> bool:
    """Did the kernel refuse a trigger's values, as opposed to there being no pressure
    file to put it on? psi_trigger_create() returns EINVAL for a threshold or window out
    of its limits (see validate_trigger; the backends raise KernelError(EINVAL)), and
    before 6.5 opening /proc/pressure/* without CAP_SYS_RESOURCE is EPERM. A cgroup v1
    hierarchy has no per-cgroup pressure files (KernelError(EOPNOTSUPP)) and a cgroup that
    went has none either (CgroupGone): those are no error of the policy's."""
    from oomkit.errors import KernelError

    return isinstance(exc, KernelError) and exc.errno in (errno.EINVAL, errno.EPERM)


# The kernel parses with sscanf(buf, "some %u %u") and then "full %u %u": the keyword must
# start the buffer, a format space skips any (even no) whitespace, %u skips leading
# whitespace and reads decimal digits greedily, and anything after the second number is
# ignored. The possessive ``++`` stops the regex from splitting one digit run in two, which
# sscanf never does.
_KSPACE: Final = r"[ \t\n\v\f\r\xa0]*"  # the kernel's isspace(), which counts 0xA0 too
_TRIGGER_RE: Final = re.compile(rf"(some|full){_KSPACE}(\d++){_KSPACE}(\d++)", re.ASCII)


def parse_trigger(text: str) -> tuple[bool, int, int]:
    """Parse a trigger request like ``"some 150000 1000000"``.

    Returns ``(full, threshold_us, window_us)``; raises ValueError where the kernel's
    sscanf() would not find both numbers (EINVAL). Numbers too big for a u32 wrap around
    as they do when the kernel stores them in its ``u32`` variables. The values are not
    range-checked here; see :func:`validate_trigger`.
    """
    match = _TRIGGER_RE.match(text)
    if match is None:
        raise ValueError(f"not a PSI trigger ('some|full <threshold_us> <window_us>'): {text!r}")
    return (
        match.group(1) == "full",
        int(match.group(2)) & _U32,
        int(match.group(3)) & _U32,
    )


def proc_write_to_trigger_text(data: bytes) -> str:
    """The text psi_trigger_create() sees for a write() of ``data`` to /proc/pressure/*.

    psi_write() copies at most 32 bytes and then overwrites the *last copied byte* with a
    NUL, so the writer must include a terminator: the documented example writes
    ``strlen(trig) + 1`` bytes. Writing ``b"some 150000 1000000"`` without one makes the
    kernel see ``"some 150000 100000"`` -- a 100 ms window. (cgroup ``*.pressure`` files
    go through kernfs, which terminates the buffer itself.)
    """
    if not data:
        raise ValueError("empty write (the kernel returns EINVAL)")
    buf = data[:32]
    buf = buf[: len(buf) - 1]
    return buf.split(b"\0", 1)[0].decode("latin-1")
