"""scripts/fidelity.py's simulator side runs (the live side needs root and a v1 memcg)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fidelity.py"


def test_the_simulator_side_of_the_suite_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("fidelity", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fidelity"] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--sim-only", "--rows", "leak,high"]) == 0
    out = capsys.readouterr().out
    assert "| victims | not run | leaker |" in out
    assert "cgroup v1 has no memory.high" in out


def _load(name: str) -> object:
    path = SCRIPT.parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_kernel_scans_are_the_memcg_steal_plus_the_machines_rotated_pages() -> None:
    fid = _load("fidelity")
    ct = sys.modules["compare_thrash"]
    m = ct.Measured(seconds=2.0, stat={"total_pgpgout": 1000},  # type: ignore[attr-defined]
                    vmstat={"pgscan_file": 5000, "pgsteal_file": 4600, "pgscan_anon": 10,
                            "pgsteal_anon": 10})
    side = fid.kernel_side([m], lambda m: "none")  # type: ignore[attr-defined]
    assert side.steals_s == 500 and side.scans_s == 700
    # v2: the memcg's own counters, exact.
    m2 = ct.Measured(seconds=2.0, stat={"pgscan": 900, "pgsteal": 800},  # type: ignore[attr-defined]
                     vmstat={"pgscan_file": 5000, "pgsteal_file": 10})
    side2 = fid.kernel_side([m2], lambda m: "none")  # type: ignore[attr-defined]
    assert side2.scans_s == 450 and side2.steals_s == 400


def test_the_writer_speed_comes_from_its_first_free_bytes_in_the_runs() -> None:
    fid = _load("fidelity")
    ct = sys.modules["compare_thrash"]
    M = 1 << 20
    runs = [ct.Measured(extra=[str(250_000_000)]),  # type: ignore[attr-defined]
            ct.Measured(extra=[str(250_000_000)])]  # type: ignore[attr-defined]
    assert fid.write_speed(runs, 128 * M) == 512 * M  # type: ignore[attr-defined]
    assert fid.write_speed([ct.Measured()], 128 * M) == 1024 * M  # type: ignore[attr-defined]


def test_stall_windows_cut_the_samples_into_two_second_windows() -> None:
    sw = _load("stall_windows")
    ct = sys.modules["compare_thrash"]
    keys = {"memory_some": 0, "io_some": 0, "cpu_some": 0}
    samples = []
    for i in range(41):  # 4 s at 100 ms; 100 ms of memory stall a second, then 300 ms
        t = i / 10
        mem = int(min(t, 2.0) * 100_000 + max(0.0, t - 2.0) * 300_000)
        samples.append((t, {**keys, "memory_some": mem}, {"workingset_restore_file": i}))
    ws = sw.windows(ct.Measured(samples=samples))  # type: ignore[attr-defined]
    assert [round(w["memory_some%"]) for w in ws] == [10, 30]
    assert [w["workingset_restore_file"] for w in ws] == [20, 20]
    assert sw.correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)  # type: ignore[attr-defined]


def test_the_kernels_cpu_pressure_is_shown_and_left_out_of_the_verdict() -> None:
    """cpu some says where a kernel run's time went (the simulator has no CPU
    contention): printed on the kernel's side, "n/a" on the simulator's, and no part of
    the PSI item of the acceptance."""
    fid = _load("fidelity")
    ct = sys.modules["compare_thrash"]
    psi = {"memory_some": 100_000, "memory_full": 100_000, "io_some": 0, "io_full": 0,
           "cpu_some": 1_500_000}
    m = ct.Measured(seconds=5.0, psi_cg=psi,  # type: ignore[attr-defined]
                    stat={"pgscan": 0, "pgsteal": 0})
    kern = fid.kernel_side([m], lambda m: "none")  # type: ignore[attr-defined]
    assert kern.psi["cpu_some"] == pytest.approx(30.0)
    sim = fid.Side(runs=1, victims=["none"], firsts=[None],  # type: ignore[attr-defined]
                   psi={"memory_some": 2.0, "memory_full": 2.0, "io_some": 0.0,
                        "io_full": 0.0}, scans_s=0.0, steals_s=0.0, seconds=5.0)
    row = fid.Row("x", "x", kern, sim)  # type: ignore[attr-defined]
    text = fid.table(row)  # type: ignore[attr-defined]
    assert "| 30.0% | n/a |" in text
    assert "PSI: within 0.0 points" in text


def test_the_leak_with_swap_row_says_why_the_kernel_did_not_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    fid = _load("fidelity")
    assert fid.main(["--sim-only", "--rows", "leak-swap"]) == 0  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "Anonymous leak with 1,024M of swap" in out
    assert "| victims | not run | none |" in out


def test_steady_costs_split_the_steady_readers_time(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """On MGLRU the calibration takes a reader's costs from steady thrashing: IO stall
    per refault, memory stall per page reclaimed, and the CPU per miss (refaults plus
    the file's first reads) left when the stalls and the hits are taken out."""
    _load("fidelity")
    ct = sys.modules["compare_thrash"]
    M = 1 << 20
    m = ct.Measured(seconds=20.0, pages_read=300_000,  # type: ignore[attr-defined]
                    stat={"workingset_refault_file": 200_000, "pgsteal": 250_000},
                    psi_cg={"io_some": 2_000_000, "memory_some": 1_500_000})

    class _File:
        def __enter__(self) -> Path:
            return tmp_path / "f"

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(ct, "data_file", lambda *a, **k: _File())
    monkeypatch.setattr(ct, "run_reader", lambda *a, **k: m)
    io_ns, reclaim_ns, miss_ns = ct.steady_costs(  # type: ignore[attr-defined]
        tmp_path, 128 * M, 64 * M, touch_rate=4096 * 1_000_000)
    assert io_ns == 10_000  # 2 s of IO stall over 200K refaults
    assert reclaim_ns == 6_000  # 1.5 s over 250K pages reclaimed
    # 20 s less 3.5 s of stalls less 67,232 hits at 1 us: over 232,768 misses.
    misses = 200_000 + 128 * M // 4096
    hits = 300_000 - misses
    assert miss_ns == int((16.5e9 - hits * 1_000) / misses)


def test_the_reader_rows_scale_the_cpu_costs_to_the_hosts_speed_in_the_runs() -> None:
    """A host twice as busy during the runs as during the calibration: cached reads at
    half the speed, and the CPU a miss and a reclaimed page take doubled; IO unchanged."""
    from oomkit.kernel.sim import MachineSpec

    mod = _load("fidelity")
    M = 1 << 20
    base = MachineSpec(touch_rate=200 * M, miss_cpu_ns=40_000, reclaim_ns=3_000,
                       reclaim_large_ns=1_000, refault_ns=500)
    slow = mod.at_host_speed(base, 100 * M)  # type: ignore[attr-defined]
    assert slow.touch_rate == 100 * M
    assert (slow.miss_cpu_ns, slow.reclaim_ns, slow.reclaim_large_ns) == (80_000, 6_000, 2_000)
    assert slow.refault_ns == 500
