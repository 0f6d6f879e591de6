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
