"""A handler that forks (no exec) leaves no child holding the loop's fds (qa4, item 8)."""

from __future__ import annotations

import os
import select
import threading

from oomkit.clock import MonotonicClock
from oomkit.kernel.linux.loop import EventLoop


def test_a_forked_child_holds_null_in_place_of_the_loops_fds() -> None:
    loop = EventLoop(MonotonicClock(), threading.RLock())
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    loop.add_fd(efd, select.EPOLLIN, lambda _mask: None)
    null = os.stat(os.devnull).st_rdev
    try:
        pid = os.fork()
        if pid == 0:  # the child: every watched fd and the epoll fd are /dev/null now
            fds = [efd, loop._ep.fileno()]
            ok = all(os.fstat(fd).st_rdev == null and
                     os.readlink(f"/proc/self/fd/{fd}") == os.devnull for fd in fds)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # the parent keeps its own
        assert os.readlink(f"/proc/self/fd/{efd}") == "anon_inode:[eventfd]"
    finally:
        loop.del_fd(efd)
        os.close(efd)
        loop.close()
