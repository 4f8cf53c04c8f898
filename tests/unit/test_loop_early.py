"""Timers that may come early ride on another wake-up of the loop (issue 10: idle CPU is
the number of wake-ups), and never run late or on a wake-up of their own too soon."""

from __future__ import annotations

import threading

from oomkit.clock import ManualClock
from oomkit.kernel.linux.loop import EventLoop

S = 1_000_000_000


def _loop() -> tuple[EventLoop, ManualClock]:
    clock = ManualClock()
    return EventLoop(clock, threading.RLock()), clock


def test_an_early_timer_runs_with_a_timer_due_within_its_span() -> None:
    loop, clock = _loop()
    ran: list[str] = []
    try:
        loop.call_later(10.0, lambda: ran.append("beat"))
        loop.call_later(10.35, lambda: ran.append("look"), early=1.7)
        loop.call_later(20.0, lambda: ran.append("later"), early=1.0)  # not in its span
        clock.set_ns(10 * S)
        loop.poll(0)
        assert ran == ["beat", "look"]
        clock.set_ns(int(18.5 * S))  # nothing else due: no early run on its own
        loop.poll(0)
        assert ran == ["beat", "look"]
        clock.set_ns(20 * S)
        loop.poll(0)
        assert ran == ["beat", "look", "later"]
    finally:
        loop.close()


def test_an_early_timer_outside_its_span_or_cancelled_waits_or_drops() -> None:
    loop, clock = _loop()
    ran: list[str] = []
    try:
        loop.call_later(1.0, lambda: ran.append("beat"))
        loop.call_later(5.0, lambda: ran.append("far"), early=2.0)
        gone = loop.call_later(1.5, lambda: ran.append("gone"), early=1.0)
        gone.cancelled = True
        clock.set_ns(1 * S)
        loop.poll(0)
        assert ran == ["beat"]
        clock.set_ns(5 * S)  # due: runs on time all the same
        loop.poll(0)
        assert ran == ["beat", "far"]
    finally:
        loop.close()


def test_a_wake_up_from_another_thread_counts_as_awake() -> None:
    loop, clock = _loop()
    ran: list[str] = []
    try:
        loop.call_later(3.0, lambda: ran.append("look"), early=2.0)
        clock.set_ns(2 * S)
        loop.wakeup()  # an fd event (here the loop's own eventfd)
        loop.poll(0)
        assert ran == ["look"]
    finally:
        loop.close()


def test_a_timer_from_another_thread_wakes_the_loop_only_if_it_would_oversleep() -> None:
    """The flight recorder books its next step from the housekeeping thread: a step due
    after the loop's own next wake-up costs no wake-up of its own (issue 10)."""
    loop, _clock = _loop()
    ran: list[str] = []
    try:
        loop.call_later(100.0, lambda: ran.append("look"))  # the manual clock stays at 0
        sleeper = threading.Thread(target=loop.poll)  # sleeps 100 s (real) in epoll
        sleeper.start()
        deadline = threading.Event()
        while loop._sleeps_until != 100.0 and not deadline.wait(0.01):
            pass
        booker = threading.Thread(target=lambda: loop.call_later(
            150.0, lambda: ran.append("step"), early=75.0))
        booker.start()
        booker.join()
        sleeper.join(0.5)
        assert sleeper.is_alive()  # not woken: the look's wake-up comes first
        booker = threading.Thread(target=lambda: loop.call_later(
            5.0, lambda: ran.append("sooner")))
        booker.start()
        booker.join()
        sleeper.join(10)
        assert not sleeper.is_alive()  # woken: it would have slept past this one
        assert ran == []  # none due yet on the manual clock
    finally:
        loop.wakeup()
        loop.close()
