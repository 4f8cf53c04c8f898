"""Delete /dev/shm/scratch before killing anyone (see examples/tmpfs.toml)."""

from oomkit.policies.tmpfs_cleanup import TmpfsCleanup


class ScratchCleanup(TmpfsCleanup):
    name = "scratch_cleanup"

    def __init__(self) -> None:
        super().__init__(paths=["/dev/shm/scratch"], target=1)
