"""The live serve loop behind ``oomkit run``: the runtime on the real kernel until told to stop.

Usage (what ``oomkit run`` does)::

    kernel = LinuxKernel(state_file=live.default_state_file())
    runtime = Runtime(kernel, sink=...)
    runtime.attach_oom(...); runtime.attach_psi(...)
    stop = threading.Event()
    live.install_signal_handlers(stop)      # SIGTERM, SIGINT, SIGHUP -> stop
    live.serve(kernel, runtime, stop)       # returns after stop; everything restored

``serve`` owns shutdown: it detaches every handler (``runtime.close()``) and closes the
kernel, which writes back every setting it changed and dismisses the watchdog. If this
process dies instead (SIGKILL, a crash), the watchdog does the restoring.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from oomkit.kernel.base import ServedKernel
from oomkit.runtime import Runtime


def default_state_file() -> str:
    """/run/oomkit/restore.json when /run is writable (root), else a per-user tmp path."""
    if os.access("/run", os.W_OK):
        return "/run/oomkit/restore.json"
    return f"/tmp/oomkit-{os.getuid()}/restore.json"


def install_signal_handlers(
    stop: threading.Event,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP),
) -> None:
    """Make these signals set ``stop`` (main thread only, as Python requires)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in signals:
        signal.signal(sig, handler)


def serve_until(kernel: ServedKernel, stop: threading.Event) -> None:
    """The live loop: ``kernel.poll()`` until ``stop`` is set (from any thread or a signal
    handler); a helper thread wakes the poll when it is. Closes nothing: the daemon keeps
    the runtime and the kernel across a reload and serves again."""

    def waker() -> None:
        stop.wait()
        kernel.wakeup()

    thread = threading.Thread(target=waker, name="oomkit-stop", daemon=True)
    thread.start()
    while not stop.is_set():
        kernel.poll()


def serve(
    kernel: ServedKernel,
    runtime: Runtime,
    stop: threading.Event,
    *,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the event loop until ``stop`` is set, then restore everything.

    The loop sleeps in epoll until the kernel has something to say (an OOM notification,
    a PSI trigger, a cgroup created or removed, a kernel OOM kill in /dev/kmsg), so an idle
    runtime uses no CPU. ``stop`` may be set from any thread or a signal handler.
    ``on_ready`` is called once the loop is about to wait for the first time.
    """
    if runtime.kernel is not kernel:
        raise ValueError("the runtime drives another kernel")
    try:
        if on_ready is not None:
            on_ready()
        serve_until(kernel, stop)
    finally:
        stop.set()
        try:
            runtime.close()
        finally:
            kernel.close()


@contextmanager
def serving(kernel: ServedKernel, runtime: Runtime, *, timeout_s: float = 30.0
            ) -> Iterator[threading.Event]:
    """serve() on a background thread for the duration of a with-block.

    Yields the stop event. Leaving the block stops the loop and restores every setting;
    raises TimeoutError if the loop did not come up, or did not stop, within timeout_s.
    """
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(target=serve, args=(kernel, runtime, stop),
                              kwargs={"on_ready": ready.set}, name="oomkit-serve",
                              daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        stop.set()
        raise TimeoutError(f"the oomkit loop did not start within {timeout_s:g} s")
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"the oomkit loop did not stop within {timeout_s:g} s")
