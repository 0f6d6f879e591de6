"""experiments/bench/bench_metrics.py: the jitted equity metrics equal the numpy reference it times them against."""
from __future__ import annotations

import json


def test_bench_runs_and_both_implementations_agree(capsys, load_script):
    mod = load_script("experiments/bench/bench_metrics.py")
    assert mod.main(["--sets", "300", "--samples", "50", "--repeat", "1", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sets"] == 300 and all(out["same_values"].values()) and out["gpuflow_s"] > 0
