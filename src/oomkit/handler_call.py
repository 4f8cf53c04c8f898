"""Handler calls: each one on a helper thread under a time budget, so that a handler that
raises, hangs or calls ``os._exit`` costs the runtime nothing but that call.

The runtime (:mod:`oomkit.runtime`) decides what to call and what the outcome means; this
module only runs the call: :class:`Worker` (the thread, abandoned when a call overruns),
:func:`guard_exit` (``os._exit`` inside a handler call raises :class:`HandlerExit`), and
SIGTERM/SIGINT ending the process at once while a call holds the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import posix
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from oomkit.clock import wall_perf_ns


class HandlerOverrun(BaseException):
    """Raised inside a handler call that overran its budget, to end it (a BaseException:
    a handler's ``except Exception`` does not swallow it)."""


class HandlerExit(BaseException):
    """``os._exit`` called from a handler call (raised in its place, reported as the
    handler's error)."""


#: The pid a thread runs handler calls for (unset: not in a handler call). A forked child
#: keeps the forking thread's value under another pid: its os._exit is a real one.
_in_handler = threading.local()
_real_exit = os._exit


def _guarded_exit(status: int) -> None:
    if getattr(_in_handler, "pid", None) == os.getpid():
        raise HandlerExit(f"os._exit({status}) called by the handler")
    _real_exit(status)


def guard_exit() -> None:
    """``os._exit`` in a handler call raises HandlerExit instead of ending the process:
    the daemon would end with exit code 0 before anything could be written, and its
    watchdog would have to hand the OOM over. Everywhere else (the daemon's own code, a
    handler's forked child) it is the real one. Installed once per process."""
    if os._exit is not _guarded_exit and posix._exit is _real_exit:
        os._exit = posix._exit = _guarded_exit  # type: ignore[assignment]


@contextlib.contextmanager
def _handler_call() -> Iterator[None]:
    _in_handler.pid = os.getpid()
    try:
        yield
    finally:
        _in_handler.pid = None


@dataclass(slots=True)
class Outcome:
    ok: bool
    value: Any = None
    error: str | None = None
    timed_out: bool = False
    duration_us: int = 0
    #: the thread of a call that overran and could not be interrupted: still running
    still_running: threading.Thread | None = None

    def __post_init__(self) -> None:
        # An exception without text (``raise KeyboardInterrupt``) reads as its name alone,
        # not "KeyboardInterrupt: " (as errors.exception_text writes it).
        if self.error is not None and self.error.endswith(": "):
            self.error = self.error[:-2]


class Worker:
    """Runs handler calls on a helper thread so a hung handler cannot hang the runtime.

    A call that overruns is interrupted (:func:`interrupt`); one that cannot be (blocked
    in native code) is abandoned: its thread is left to finish on its own (Python cannot
    kill a thread) and named in the Outcome, so that the runtime does not call that
    handler again while it runs; its OomControl is expired so it can no longer act, and
    the next call gets a fresh thread.
    """

    __slots__ = ("_jobs", "_nested", "_thread")

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], list[Outcome], threading.Event] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # A handler may cause another handler call (a PsiOps declaring an OOM): that one
        # runs on the next worker down, since this worker's thread is busy with the first.
        self._nested: Worker | None = None

    def _loop(self, jobs: queue.SimpleQueue[Any]) -> None:
        try:
            self._serve(jobs)
        except HandlerOverrun:
            return  # the interruption came just after the call had ended: nothing to stop

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[Any]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, slot, done = job
            try:
                with _handler_call():
                    slot.append(Outcome(ok=True, value=fn()))
            except BaseException as exc:  # a policy's bug is reported, never propagated
                slot.append(Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"))
            done.set()

    def call(self, fn: Callable[[], Any], budget_s: float | None) -> Outcome:
        start = wall_perf_ns()
        if budget_s is None:
            try:
                with _handler_call():
                    out = Outcome(ok=True, value=fn())
            except (Exception, SystemExit, HandlerExit) as exc:  # never the runtime's end
                out = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        elif self._thread is not None and threading.current_thread() is self._thread:
            if self._nested is None:
                self._nested = Worker()
            return self._nested.call(fn, budget_s)
        else:
            if self._thread is None or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._loop, args=(self._jobs,), name="oomkit-handler", daemon=True
                )
                self._thread.start()
            slot: list[Outcome] = []
            done = threading.Event()
            with _hard_stop_signals():
                self._jobs.put((fn, slot, done))
                finished = done.wait(budget_s)
            if finished:
                out = slot[0]
            else:
                # Abandon this thread: the stuck call keeps it; tell it to exit afterwards.
                stuck, self._thread = self._thread, None
                self._jobs.put(None)
                stopped = interrupt(stuck)
                out = Outcome(
                    ok=False, timed_out=True,
                    error=f"overran its budget of {budget_s:g} s" + (
                        "; interrupted" if stopped else
                        "; still running (blocked in native code, or it caught the "
                        "interruption): not called again until it returns"),
                    still_running=None if stopped else stuck)
        out.duration_us = (wall_perf_ns() - start) // 1000
        return out

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
        if self._nested is not None:
            self._nested.close()


#: How long an overrun call is given to end once interrupted (seconds): a pure-Python loop
#: sees the exception at its next bytecode, within the interpreter's switch interval (5 ms).
INTERRUPT_WAIT_S: Final = 0.02


def interrupt(thread: threading.Thread) -> bool:
    """Raise HandlerOverrun in ``thread`` (CPython's PyThreadState_SetAsyncExc) and wait
    INTERRUPT_WAIT_S for it to end: True when it did. Python code (``while True: pass``)
    ends at its next bytecode; a call blocked in native code (a sleep, a regex, a read)
    sees it only when that returns, and a handler may catch BaseException: such a thread
    runs on (QA G3: a spinning handler kept a CPU busy and the GIL shared, decisions 10x
    slower, one more thread per OOM)."""
    ident = thread.ident
    if ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                   ctypes.py_object(HandlerOverrun))
    thread.join(INTERRUPT_WAIT_S)
    return not thread.is_alive()


#: Signals that stop the daemon: while a handler runs they end the process at once.
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _hard_stop_signals() -> Iterator[None]:
    """While a handler call runs, SIGTERM/SIGINT take the kernel's default action (the
    process ends) instead of Python's handler: a handler that holds the GIL in native code
    (a regex backtracking, a C loop) never lets the main thread run that handler, and the
    daemon ignored SIGTERM for good. Ended this way, the watchdog restores every setting
    from the journal and records the OOM in flight. Only the main thread may change signal
    handlers, and only handlers Python installed are swapped (two sigactions a call)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = [(sig, signal.getsignal(sig)) for sig in _STOP_SIGNALS]
    swapped = [(sig, h) for sig, h in saved if callable(h)]
    for sig, _ in swapped:
        signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in swapped:
            signal.signal(sig, handler)
