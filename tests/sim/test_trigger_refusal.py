"""QA Q6: a PSI trigger the kernel refuses is an error, at config load and at run time.

psi_trigger_create() (kernel/sched/psi.c) returns EINVAL for a threshold over its window
or a window over 10 s (under 500 ms before 6.5; not a multiple of 2 s without
CAP_SYS_RESOURCE). A config asking for one is refused with the key and its line by
check-config and at start-up; a trigger the kernel refuses at run time is not taken for
"no pressure files here" (cgroup v1) and dropped in silence."""

from __future__ import annotations

import dataclasses

import pytest

from oomkit import Runtime, SimKernel
from oomkit.daemon.config import load_policies, parse_config
from oomkit.errors import AttachError, ConfigError
from oomkit.events import EventList, HandlerErrorEvent
from oomkit.kernel.sim import MachineSpec
from oomkit.policies.pressure_guard import PressureGuard
from oomkit.policies.psi_declare import PsiDeclare

from .conftest import M


@pytest.mark.parametrize(("policy", "args", "key", "why"), [
    ("pressure_guard", 'threshold = "5s", window = "2s"', "threshold",
     "5s is longer than the window 2s: the kernel refuses"),
    ("pressure_guard", 'threshold = "500ms", window = "20s"', "window",
     "20s is outside 500ms..10s"),
    ("pressure_guard", 'threshold = "100ms", window = "200ms"', "window",
     "200ms is outside 500ms..10s"),
    ("pressure_guard", 'threshold = "0s"', "threshold", "a threshold of 0"),
    ("psi_declare", "threshold_ms = 5000, window_ms = 2000", "threshold_ms",
     "5000 ms is longer than the window 2000 ms"),
    ("thrash_guard", "window_ms = 60000", "window_ms", "60000 ms is outside 500ms..10s"),
    ("lmkd", 'complete_stall = "1500ms"', "complete_stall",
     "3s (1500ms a second) is longer than the window 2s"),
    ("lmkd", 'window = "11s"', "window", "11s is outside"),
    ("earlyoom", 'window = "100ms"', "window", "100ms is outside 500ms..10s"),
    ("systemd_oomd", 'wake = "1s"', "wake", "1s is longer than the window 500ms"),
    ("oomd", 'wake = "3s"', "wake", "3s is longer than the window 2s"),
])
def test_check_config_refuses_a_trigger_the_kernel_refuses(policy: str, args: str, key: str,
                                                           why: str) -> None:
    cfg = parse_config(f'[daemon]\n\n[[psi]]\npolicy = "{policy}"\nargs = {{ {args} }}\n',
                       "c.toml")
    with pytest.raises(ConfigError) as info:
        load_policies(cfg, secure=False)
    msg = str(info.value)
    assert msg.startswith(f"c.toml:5: [[psi]] 1, key 'args.{key}': "), msg
    assert why in msg, msg


def test_the_shipped_windows_pass() -> None:
    for window, threshold in (("2s", "2s"), ("500ms", "1ms"), ("10s", "500ms")):
        cfg = parse_config('[[psi]]\npolicy = "pressure_guard"\n'
                           f'args = {{ threshold = "{threshold}", window = "{window}" }}\n')
        load_policies(cfg, secure=False)


def _unprivileged() -> SimKernel:
    k = SimKernel(dataclasses.replace(MachineSpec(memory=M("1G")), cap_sys_resource=False))
    k.create_cgroup("/app", memory_max=M("256M"))
    return k


@pytest.mark.parametrize("ops", [
    lambda: PressureGuard(threshold=0.5, window=3.0),
    lambda: PsiDeclare(threshold_ms=500, window_ms=3000),
])
def test_a_trigger_refused_at_start_fails_the_attach(ops: object) -> None:
    # A 3 s window needs CAP_SYS_RESOURCE: the kernel refuses it (EINVAL), which used to
    # read as "no pressure files here" and leave the policy running with no trigger.
    rt = Runtime(_unprivileged(), sink=EventList())
    with pytest.raises(AttachError, match="not a multiple of 2000000 us"):
        rt.attach_psi(ops())  # type: ignore[operator]
    rt.close()


def test_a_trigger_refused_for_a_new_cgroup_is_a_handler_error() -> None:
    k = _unprivileged()
    events = EventList()
    rt = Runtime(k, sink=events)
    guards = [PressureGuard(), PsiDeclare()]
    for g in guards:
        rt.attach_psi(g)
    for g in guards:
        g.window_us = 3_000_000  # as if the new cgroup's trigger asked for what it may not
    k.create_cgroup("/late", memory_max=M("128M"))
    errors = [e for e in events.events if isinstance(e, HandlerErrorEvent)]
    assert [(e.name, e.callback) for e in errors] == [
        ("pressure_guard", "handle_cgroup_online"), ("psi_declare", "handle_cgroup_online")]
    assert all("not a multiple of 2000000 us" in e.error for e in errors)
    rt.close()


def test_no_pressure_files_is_no_error() -> None:
    # A cgroup gone before its trigger (CgroupGone) is skipped, as on cgroup v1.
    k = _unprivileged()
    events = EventList()
    rt = Runtime(k, sink=events)
    guard = PressureGuard()
    rt.attach_psi(guard)
    assert guard.window_us == 2_000_000
    link_psi = rt._psi_links[0].psi
    assert link_psi is not None
    guard._watch(link_psi, 987654)  # no such cgroup
    assert not [e for e in events.events if isinstance(e, HandlerErrorEvent)]
    rt.close()
