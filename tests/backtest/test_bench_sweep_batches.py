"""experiments/bench/bench_sweep_batches.py runs the sweep at each batch size and reports its phases."""
from __future__ import annotations

import json


def test_bench_reports_each_batch_size(capsys, load_script):
    mod = load_script("experiments/bench/bench_sweep_batches.py")
    assert mod.main(["--sets", "12", "--batches", "default,4", "--repeat", "1", "--source", "synthetic",
                     "--synthetic-events", "20000"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = {r["batch"]: r for r in out["runs"]}
    assert runs["4"]["batch_size"] == 4 and runs["4"]["batches"] == 3
    assert set(runs["default"]["phase_s"]) == {"engine", "engine_other", "metrics", "write"}
