"""experiments/bench/bench_backtest_gpu.py runs end to end (tiny sizes; the CUDA simulator in CI)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "bench_backtest_gpu.py"


@pytest.mark.slow
def test_small_run_sweep_equals_exact(tmp_path, device_backend):
    spec = importlib.util.spec_from_file_location("bench_backtest_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    assert mod.main(["--small", "--source", "synthetic", "--json-out", str(out)]) == 0
    r = json.loads(out.read_text())
    (m,) = r["markets"]
    assert m["check"]["equal"] and sum(m["check"]["fills_per_set"]) > 0
    assert set(m["check"]["fields"]) == {"t16s1"}  # the sweep kernel with event tiles of 16
    assert [(g["variant"], g["sets"]) for g in m["gpu"]] == [("t16s1", 4), ("t16s1", 8)]
    assert all(g["counters_equal_cpu_first_sets"] == 4 for g in m["gpu"])


def test_variant_names_select_the_engine_options():
    from gpuflow.config import get_option

    spec = importlib.util.spec_from_file_location("bench_backtest_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod._variants("t0s1k0, t128s0r96,t0s1r128k32b64") == ["t0s1k0", "t128s0r96", "t0s1r128k32b64"]
    with pytest.raises(SystemExit, match="t0s1k0"):
        mod._variants("t0s1,k16")
    default_skip = get_option("backtest_skip_block")
    default_levels = get_option("backtest_skip_levels")
    default_threads = get_option("backtest_block_threads")
    default_regs = get_option("backtest_max_registers")
    for v, want in (("t0s1k0", (0, True, default_regs, 0, default_levels, default_threads)),
                    ("t128s0r96", (128, False, 96, default_skip, default_levels, default_threads)),
                    ("t0s1r0", (0, True, 0, default_skip, default_levels, default_threads)),
                    ("t0s1r128k32b64", (0, True, 128, 32, default_levels, 64)),
                    ("t0s1k4l3", (0, True, default_regs, 4, 3, default_threads)),
                    ("t0s1k8l2b64", (0, True, default_regs, 8, 2, 64))):
        with mod._variant(v):
            got = tuple(get_option(o) for o in ("backtest_event_tile", "backtest_sort_sets",
                                                 "backtest_max_registers", "backtest_skip_block",
                                                 "backtest_skip_levels", "backtest_block_threads"))
        assert got == want, v
    with pytest.raises(SystemExit, match="t0s1k4l4"):
        mod._variants("t0s1k4l4")


def test_occupancy_probe_runs_the_same_sets_in_every_warp():
    # on the CPU twin (one "SM"): 32 sets, then the same 32 twice; every warp's counters are the first warp's
    from gpuflow.backend import get_backend
    from gpuflow.backtest import prepare_market
    from gpuflow.backtest.strategies import get_strategy
    from gpuflow.synthetic import generate

    spec = importlib.util.spec_from_file_location("bench_backtest_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    market = prepare_market(generate(3000, seed=1, mode="l2"), levels=5, backend="cpu")
    cfg = mod._config(market, 2_000_000)
    grid = mod.param_grid(64)
    rows = mod.occupancy_probe(get_strategy("market_making"), grid, market, cfg, get_backend("cpu"), "t0s1", "1,2")
    assert [(r["warps_per_sm"], r["sets"]) for r in rows] == [(1, 32), (2, 64)]
    assert all(r["every_warp_same_counters"] and r["kernel_s"] > 0 for r in rows)
    assert rows[1]["fills_total"] == 2 * rows[0]["fills_total"] > 0
