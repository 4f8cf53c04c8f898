"""kill_cgroup: end the OOM by killing the whole cgroup that ran out.

For cgroups that hold one job (a container, a systemd unit): a half-killed job is worse
than a dead one. On an OOM in a cgroup it kills every task in that cgroup (and below)
with cgroup.kill; on a system-wide OOM it declines, leaving it to the next handler or the
kernel's default killer.
"""

from __future__ import annotations

from oomkit.ops import OomContext, OomControl, OomOps


class KillCgroup(OomOps):
    name = "kill_cgroup"

    def handle_out_of_memory(self, ctx: OomContext, oc: OomControl) -> bool:
        if oc.memcg is None or oc.memcg.parent is None:
            return False
        return oc.kill_cgroup(oc.memcg, "kill_cgroup") > 0
