"""While a policy loads, ``os._exit`` raises in the loading process only: a reload now
loads while handlers run (QA G14), and a child a handler forks meanwhile must still exit
for real."""

from __future__ import annotations

import os
import posix

import pytest

from oomkit.policy_loader import PolicyExit, with_deadline


def test_a_child_forked_while_loading_exits_for_real() -> None:
    real = posix._exit

    def fork_and_wait() -> int:
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(7)
            finally:  # os._exit raised: leave the child anyway, with another code
                real(3)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert with_deadline(fork_and_wait, 10, "test") == 7


def test_os_exit_in_the_loading_process_still_raises() -> None:
    def exits() -> None:
        os._exit(5)

    with pytest.raises(Exception, match=r"os\._exit\(5\) called while loading"):
        with_deadline(exits, 10, "test")
    assert PolicyExit.__mro__[1] is BaseException
