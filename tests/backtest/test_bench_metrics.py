"""experiments/bench/bench_metrics.py: the jitted equity metrics equal the numpy reference it times them against."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "bench_metrics.py"


def test_bench_runs_and_both_implementations_agree(capsys):
    spec = importlib.util.spec_from_file_location("bench_metrics", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_metrics"] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--sets", "300", "--samples", "50", "--repeat", "1", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sets"] == 300 and all(out["same_values"].values()) and out["gpuflow_s"] > 0
