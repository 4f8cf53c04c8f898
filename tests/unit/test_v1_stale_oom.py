"""v1: ``under_oom 1`` left behind by OOM sleepers that were woken but have not retried.

After a victim exits, its uncharge wakes the memcg's sleepers (``memcg1_oom_recover``), but
``under_oom`` reads 1 until each of them has run again; on a busy machine that takes tenths
of a second. An OOM dispatched meanwhile found 30 MiB free below a 90 MiB limit and killed a
second task (the seed test's ``h5`` dying after ``h4``, 1 run in 4 to 30 with three CPU
burners on two cores)."""

from oomkit.kernel.linux.decisions import V1_STALE_ROOM, v1_oom_stale

MiB = 1 << 20


def test_stale_needs_room_below_every_limit() -> None:
    limit = 64 * MiB
    assert v1_oom_stale(limit - V1_STALE_ROOM, limit)
    assert not v1_oom_stale(limit - V1_STALE_ROOM + 1, limit)
    assert not v1_oom_stale(limit, limit)
    # memory+swap is the limit that was hit: memory alone has room, memsw none.
    assert not v1_oom_stale(10 * MiB, limit, 96 * MiB, 96 * MiB)
    assert v1_oom_stale(10 * MiB, None, 10 * MiB, 96 * MiB)
    assert not v1_oom_stale(10 * MiB, None)  # no limit read: the handlers decide
