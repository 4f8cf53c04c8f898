"""tmpfs pages are swap-backed: reclaim swaps them out with the anon memory of their memcg
(in LRU order), within swap.max and the machine's swap, never without swap; a touch
brings them back; removing the file frees RAM and swap alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomkit import SimKernel
from oomkit.errors import ConfigError
from oomkit.kernel.sim import MachineSpec, Step, parse_scenario

from .conftest import M, run_with_config

S = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]


def machine(swap: str = "1G", swap_max: str | None = None) -> SimKernel:
    """/s: a writer that wrote 200M to /tmp/f at 0 s and exits, and an app that keeps
    touching 300M of anon; 3 s later the file is the coldest thing on the anon LRU."""
    k = SimKernel(MachineSpec(memory=M("1G"), swap=M(swap)))
    k.create_cgroup("/s", swap_max=None if swap_max is None else M(swap_max))
    k.spawn("writer", "/s", (Step("alloc", "shmem", M("200M"), path="/tmp/f"), Step("exit")))
    k.spawn("app", "/s", (Step("alloc", size=M("300M")),
                          Step("touch", size=M("300M"), duration_ns=60 * S)))
    k.run(3 * S)
    return k


def test_cold_tmpfs_pages_are_swapped_before_a_hot_working_set() -> None:
    k = machine()
    cg = k.mem_cgroup("/s")
    assert cg is not None
    assert k.reclaim(cg, M("100M")) == M("100M")
    f, app = k.files["/tmp/f"], k.process("app")
    assert (f.resident, f.swapped) == (M("100M"), M("100M"))
    assert app.swapped == 0 and app.anon == M("300M")
    # memory.stat: shmem (and file, which counts it) is what is in RAM; the swapped part
    # is in the memcg's swap and the machine's.
    assert cg.page_state("shmem") == M("100M")
    assert cg.page_state("file") == M("100M")
    assert cg.page_state("swap") == M("100M")
    assert k.swap_used == M("100M")
    assert cg.usage() == M("400M")
    assert cg.vm_events("pgsteal_anon") == M("100M") // 4096
    # Reclaim goes on into the hot app once the file's resident pages are gone.
    assert k.reclaim(cg, M("150M")) == M("150M")
    assert (f.resident, f.swapped, app.swapped) == (0, M("200M"), M("50M"))


def test_without_swap_tmpfs_pages_stay_resident() -> None:
    k = machine(swap="0")
    cg = k.mem_cgroup("/s")
    assert cg is not None
    assert k.reclaim(cg, M("100M")) == 0
    assert (k.files["/tmp/f"].resident, k.files["/tmp/f"].swapped) == (M("200M"), 0)
    # A hog that needs the room is OOM-killed; the file stays in RAM all along.
    k2 = SimKernel(MachineSpec(memory=M("512M")))
    k2.spawn("writer", "/w", (Step("alloc", "shmem", M("300M"), path="/tmp/f"), Step("exit")))
    k2.spawn("hog", "/h", (Step("alloc", size=M("400M")), Step("sleep")), start_ns=S)
    k2.run(3 * S)
    assert k2.process("hog").exit_status == "killed"
    assert (k2.files["/tmp/f"].resident, k2.files["/tmp/f"].swapped) == (M("300M"), 0)
    assert k2.swap_used == 0


def test_memory_swap_max_and_the_machines_swap_bound_what_goes_out() -> None:
    k = machine(swap_max="50M")
    cg = k.mem_cgroup("/s")
    assert cg is not None
    assert k.reclaim(cg, M("100M")) == M("50M")
    assert k.files["/tmp/f"].swapped == M("50M") and cg.swap_charged == M("50M")
    assert k.process("app").swapped == 0
    k = machine(swap="30M")
    cg = k.mem_cgroup("/s")
    assert cg is not None
    assert k.reclaim(cg, M("100M")) == M("30M")
    assert k.files["/tmp/f"].swapped == M("30M") and k.swap_used == M("30M")


def test_removing_the_file_frees_its_ram_and_its_swap_its_writers_exit_neither() -> None:
    k = machine()
    cg = k.mem_cgroup("/s")
    assert cg is not None
    k.reclaim(cg, M("100M"))
    assert k.process("writer").exit_status == "exited"
    # What the kernel lists (st_blocks counts swapped tmpfs pages too) and removal frees.
    assert k.tmpfs_files("/tmp") == [("/tmp/f", M("200M"))]
    before = cg.usage()
    assert k.remove_file("/tmp/f") == M("200M")
    assert before - cg.usage() == M("100M")
    assert (cg.swap_charged, k.swap_used, cg.page_state("shmem")) == (0, 0, 0)
    assert "/tmp/f" not in k.files


def test_a_touch_brings_swapped_tmpfs_pages_back_charged_to_the_files_memcg() -> None:
    k = machine()
    cg = k.mem_cgroup("/s")
    assert cg is not None
    k.reclaim(cg, M("100M"))
    k.spawn("reader", "/r", (Step("touch", "shmem", M("200M"), path="/tmp/f",
                                  duration_ns=10 * S),))
    k.run(13 * S)
    f = k.files["/tmp/f"]
    assert (f.resident, f.swapped) == (M("200M"), 0)
    assert (cg.swap_charged, k.swap_used) == (0, 0)
    assert cg.page_state("shmem") == M("200M")
    reader = k.mem_cgroup("/r")
    assert reader is not None and reader.usage() == 0  # charged to /s, which owns it
    assert reader.vm_events("workingset_refault_anon") == M("100M") // 4096


def test_a_touch_of_tmpfs_names_a_file_some_step_writes() -> None:
    head = '[machine]\nmemory = "1G"\n[[process]]\nname = "a"\ncgroup = "/a"\nprogram = '
    with pytest.raises(ConfigError, match="names the tmpfs file"):
        parse_scenario(head + '[ { op = "touch", kind = "shmem", size = "10M" } ]\n')
    with pytest.raises(ConfigError, match="writes the tmpfs file /dev/shm/x"):
        parse_scenario(head + '[ { op = "touch", kind = "shmem", size = "10M", '
                       'path = "/dev/shm/x" } ]\n')


def test_n01_the_apps_recover_once_the_idle_tmp_file_is_swapped_out(tmp_path: Path) -> None:
    """tests/field_cases/n01 (nohang#95): a 1.4G file kept open in a tmpfs /tmp on 2G of
    RAM and 1G of swap. A kernel swaps the idle file out and the apps' working sets fit;
    the simulator used to keep it resident and the apps thrashed until one was killed."""
    o = run_with_config(REPO / "tests" / "field_cases" /
                        "n01_tmp_tmpfs_filled_by_small_writer.toml",
                        REPO / "packaging" / "oomkit.toml", tmp_path)
    assert not {"desktop", "browser", "editor"} & set(o.killed), o.killed


def test_n01_on_the_kernel_alone_the_idle_file_goes_to_swap_not_the_apps() -> None:
    """The kernel alone (no handler): once the extractor has written its file, the file
    is the coldest memory on the anon LRU; what does not fit goes out of it, and the apps'
    working sets come back and stay (they thrashed for the whole 30 s before)."""
    path = REPO / "tests" / "field_cases" / "n01_tmp_tmpfs_filled_by_small_writer.toml"
    k = SimKernel.from_scenario(parse_scenario(path.read_text(), str(path)))
    k.run()
    f = k.files["/tmp/extract.img"]
    assert f.swapped > M("100M") and f.resident + f.swapped == M("1400M")
    for name in ("desktop", "browser", "editor"):
        app = k.process(name)
        assert app.swapped == 0 and app.stall_ns < 3 * S, (name, app.swapped, app.stall_ns)
    assert k.kills == 0
