"""Loading a config again for a reload: parse the file, import and instantiate its policies,
and refuse what a reload cannot change, without touching the running daemon.

:func:`load_again` does it where it is called (the simulator's daemon, whose clock stands
still meanwhile); :class:`BackgroundLoad` does it on a thread of its own, so that the live
daemon's loop goes on serving the running handlers while a policy's import takes its time
(up to ``policy_loader.IMPORT_DEADLINE_S``; QA G14: the loop used to wait, an OOM with it).
The swap itself is the daemon's, in its serve loop (:mod:`oomkit.daemon.service`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from oomkit.daemon.config import Config, LoadedPolicies
from oomkit.errors import ConfigError

#: What a load gives: the new config and its policies, or the error that refuses them.
Loaded = tuple[Config, LoadedPolicies] | str

#: How often ``--watch-config`` looks at the config file, at most (seconds): kubelet takes a
#: minute or so to update a mounted ConfigMap anyway.
CONFIG_CHECK_S = 30.0


def file_signature(path: str) -> tuple[int, ...] | None:
    """(device, inode, size, mtime) of what ``path`` leads to; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def load_again(load: Callable[[], tuple[Config, LoadedPolicies]], running: Config) -> Loaded:
    """``load()``, refused (as a message) when it fails in any way or changes a key that
    needs a restart; ``running`` is only read."""
    try:
        new, policies = load()
        changed = running.restart_only_changes(new)
        if changed:
            raise ConfigError(f"{new.path}: {', '.join(changed)} cannot change on reload; "
                              "restart oomkit to change it (the running config is kept)")
    except ConfigError as exc:
        return str(exc)
    except BaseException as exc:  # a policy's import ran code that failed oddly
        return f"{type(exc).__name__}: {exc}"
    return new, policies


class BackgroundLoad:
    """:func:`load_again` on a daemon thread; ``wake`` is set once :attr:`result` is there
    (the serve loop's stop event: it stops serving at a quiet point and swaps). The
    running config must not change until then (one load at a time)."""

    __slots__ = ("_thread", "result")

    def __init__(self, load: Callable[[], tuple[Config, LoadedPolicies]], running: Config,
                 wake: threading.Event) -> None:
        self.result: Loaded | None = None

        def run() -> None:
            self.result = load_again(load, running)
            wake.set()

        self._thread = threading.Thread(target=run, name="oomkit-reload", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
