"""Ready policies, one per module. ``BUILTIN`` maps the names the command line accepts."""

from __future__ import annotations

BUILTIN: dict[str, str] = {
    "largest_leaf": "oomkit.policies.largest_leaf:LargestLeaf",
    "kill_cgroup": "oomkit.policies.kill_cgroup:KillCgroup",
    "tmpfs_cleanup": "oomkit.policies.tmpfs_cleanup:TmpfsCleanup",
    "psi_declare": "oomkit.policies.psi_declare:PsiDeclare",
    "thrash_guard": "oomkit.policies.thrash_guard:ThrashGuard",
    "kill_cause": "oomkit.policies.kill_cause:KillCause",
    "pressure_guard": "oomkit.policies.pressure_guard:PressureGuard",
    "earlyoom": "oomkit.policies.earlyoom:EarlyoomWatch",
    "earlyoom_kill": "oomkit.policies.earlyoom:Earlyoom",
    "systemd_oomd": "oomkit.policies.systemd_oomd:SystemdOomdWatch",
    "systemd_oomd_kill": "oomkit.policies.systemd_oomd:SystemdOomd",
    "oomd": "oomkit.policies.oomd:OomdWatch",
    "oomd_kill": "oomkit.policies.oomd:Oomd",
    "lmkd": "oomkit.policies.lmkd:LmkdWatch",
    "lmkd_kill": "oomkit.policies.lmkd:Lmkd",
}
