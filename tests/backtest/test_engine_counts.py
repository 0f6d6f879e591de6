"""experiments/tools/engine_counts.py: the engine's per-set work counted by a pure-Python run of its cores."""
from __future__ import annotations

import json

SCRIPT = "experiments/tools/engine_counts.py"


def test_python_run_of_the_cores_equals_the_compiled_engine_and_counts_add_up(capsys, load_script):
    """The counted run is the engine's own path: its counters and accounts equal the compiled exact engine's
    for each set (the tool stops otherwise); the counts are consistent with the events and the blocks."""
    mod = load_script(SCRIPT)
    assert mod.main(["--synthetic", "20000", "--sets", "0,3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["grid_row"] for r in out] == [0, 3]
    for r in out:
        assert 0 < r["walked_events"] <= r["events"] == 20_000
        assert r["block_checks"] >= -(-r["events"] // 16)  # every block asked once, some again after an event
        assert r["decisions"] > 0 and r["orders"] > 0 and 1 <= r["slots_used"] <= 16
        assert sum(r["by_array"].values()) == r["local_accesses"] > r["local_reads"] > 0
        assert 0 < r["hot_values_95pct"] <= r["distinct_values"]
        assert sum(r["hot_values_by_array"].values()) == r["hot_values_95pct"]


def test_a_python_run_that_strays_from_the_engine_is_refused(monkeypatch, load_script):
    """If the Python path differed from the compiled engine (here: a step that never trades) the tool stops
    instead of reporting counts of another path."""
    import pytest

    mod = load_script(SCRIPT)
    orig = mod.python_engine

    def stray(strategy):
        g = orig(strategy)
        g["strategy_step"] = lambda *a: 0
        return g

    monkeypatch.setattr(mod, "python_engine", stray)
    with pytest.raises(SystemExit, match="differ from the compiled engine"):
        mod.main(["--synthetic", "20000", "--sets", "0"])


def test_warp_option_counts_the_union_of_its_sets_walks(capsys, load_script):
    """--warp W: the 32 sets of warp W of a sweep of the bench's first --grid-sets sets, in the sweep's sorted
    order; the warp walks the union of its sets' walked events, at least its longest set's walk and at most the
    sum of them (or all events)."""
    import numpy as np
    import pytest

    mod = load_script(SCRIPT)  # puts experiments/bench on the path
    import bench_backtest_gpu as bb

    assert mod.main(["--synthetic", "3000", "--warp", "1", "--grid-sets", "96", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    grid = bb.param_grid(96, seed=7)
    want = [int(r) for r in np.lexsort(grid.T[::-1])[32:64]]
    assert [r["grid_row"] for r in out["sets"]] == want
    w = out["warp"]
    walks = [r["walked_events"] for r in out["sets"]]
    assert w["index"] == 1 and w["sets"] == 32 and w["longest_set_walk"] == max(walks)
    assert max(walks) <= w["union_walked_events"] <= min(sum(walks), 3000)
    assert w["union_over_longest"] == round(w["union_walked_events"] / max(walks), 3)
    with pytest.raises(SystemExit, match="--warp 5: a sweep of 96 sets has 3 warps"):
        mod.main(["--synthetic", "3000", "--warp", "5", "--grid-sets", "96"])
