"""The OOMs the watchdog handed to the kernel killer, read back from the event log.

The watchdog records each OOM it hands over in the daemon's event log (``policy:
"watchdog"``, ``time`` on CLOCK_MONOTONIC). When the daemon was only stopped (SIGSTOP, a
long pause), it sees the kernel's kill of that OOM in /dev/kmsg afterwards: the same OOM,
already recorded, so it must not be logged (and counted) a second time.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Final

#: How much of the event log's end is read: hand-overs are seconds old when looked up.
TAIL_BYTES: Final = 64 * 1024


def handed_over_since(event_log: str, since: float) -> set[str]:
    """The memcgs (the event log's names, ``/a/b``) the watchdog handed over at CLOCK_MONOTONIC
    ``since`` or later, from the last TAIL_BYTES of ``event_log``; empty when it cannot be
    read (no link is followed; a file not ours is not read)."""
    try:
        fd = os.open(event_log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return set()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return set()
        start = max(0, st.st_size - TAIL_BYTES)
        data = os.pread(fd, st.st_size - start, start)
    except OSError:
        return set()
    finally:
        os.close(fd)
    found: set[str] = set()
    for line in data.split(b"\n"):
        if b'"watchdog"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the first, cut line of the tail, or a torn write
        if not isinstance(record, dict) or record.get("policy") != "watchdog":
            continue
        at, memcg = record.get("time"), record.get("memcg")
        if isinstance(at, int | float) and isinstance(memcg, str) and at >= since:
            found.add(memcg)
    return found
