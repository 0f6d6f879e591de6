"""``gpuflow sweep``: grid / random / optuna search in batches, Parquet output, interruption and resume, Ray."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from gpuflow.backtest.config import RunConfig, load_config, load_data
from gpuflow.backtest.engine import ConfigError, prepare_market
from gpuflow.backtest.runner import MANIFEST, StrategyError, load_results, run_backtest, sweep
from gpuflow.cli import main
from gpuflow.demo import sample_path
from gpuflow.schema import FLAG_EOM, KIND_SET, KIND_TRADE, Instrument, events_table

SAMPLE = str(sample_path())

MM = {
    "strategy": "market_making",
    "params": {"max_position_lots": 5},
    "engine": {"entry_latency_ns": "1ms", "response_latency_ns": "1ms", "maker_fee_bps": -0.5, "taker_fee_bps": 5,
               "decision_interval_ns": "100ms", "sample_ns": "1s"},
    "space": {"half_spread_ticks": [0, 1, 3], "skew_ticks_per_lot": [0, 0.5]},
    "sweep": {"batch_size": 4},
}


@pytest.fixture(scope="module")
def sample_market():
    return load_data(SAMPLE, config=RunConfig.from_dict(MM))


def _same(a, b):
    """Tables equal column by column (NaN equal to NaN, as the metrics hold NaN where undefined)."""
    assert a.column_names == b.column_names and a.num_rows == b.num_rows
    for c in a.column_names:
        np.testing.assert_array_equal(a.column(c).to_numpy(zero_copy_only=False),
                                      b.column(c).to_numpy(zero_copy_only=False), err_msg=c)
    return True


class Stop(Exception):
    """Injected failure."""


def _cfg(**changes):
    d = json.loads(json.dumps(MM))
    for k, v in changes.items():
        d[k] = v
    return RunConfig.from_dict(d, source="test.yaml")


def test_grid_sweep_writes_one_row_per_set_equal_to_single_runs(tmp_path, sample_market):
    cfg = _cfg()
    rep = sweep(cfg, sample_market, out=tmp_path / "out")
    assert (rep.n_sets, rep.batches, rep.batches_run, rep.batches_skipped, rep.sets_run) == (6, 2, 2, 0, 6)
    # the batches' time by phase, summed; the files do not keep it (their content does not depend on timing)
    assert set(rep.phase_s) == {"engine", "engine_other", "metrics", "write"}
    assert all(v >= 0 for v in rep.phase_s.values()) and sum(rep.phase_s.values()) <= rep.seconds
    t = load_results(tmp_path / "out")
    assert b"gpuflow.sweep.phase_s" not in (t.schema.metadata or {})
    assert t.num_rows == 6 and t.column("set_id").to_pylist() == list(range(6))
    assert t.column("batch").to_pylist() == [0, 0, 0, 0, 1, 1]
    # the grid in order, the last parameter fastest; the other parameters at the config's values
    assert list(zip(t.column("half_spread_ticks").to_pylist(), t.column("skew_ticks_per_lot").to_pylist())) == [
        (0, 0), (0, 0.5), (1, 0), (1, 0.5), (3, 0), (3, 0.5)]
    assert set(t.column("max_position_lots").to_pylist()) == {5.0} and set(t.column("order_lots").to_pylist()) == {1}
    # every row equals the exact engine's run of that set alone
    for i in (1, 4):
        one = run_backtest(cfg.with_params({"half_spread_ticks": t.column("half_spread_ticks")[i].as_py(),
                                            "skew_ticks_per_lot": t.column("skew_ticks_per_lot")[i].as_py()}),
                           sample_market)
        for k in ("pnl", "fees", "n_fills", "sharpe", "max_drawdown", "n_orders", "position_lots_0"):
            assert t.column(k)[i].as_py() == pytest.approx(one.metrics[k], nan_ok=True, rel=0, abs=0), k
    assert rep.best["set_id"] == int(np.argmax(t.column("pnl").to_numpy()))
    m = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert sorted(m["completed"]) == ["0", "1"] and m["fingerprint"]["search"] == "grid"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp") or p.name == ".sweep.lock"]


def test_an_interrupted_sweep_keeps_its_batches_and_resume_runs_only_the_missing_ones(tmp_path, sample_market):
    cfg = _cfg(space={"half_spread_ticks": [0, 1, 2, 3, 5], "skew_ticks_per_lot": [0, 0.5]},
               sweep={"batch_size": 3})
    whole = sweep(cfg, sample_market, out=tmp_path / "whole")
    calls = []

    def fail_after_first(b, table):
        calls.append(b)
        raise Stop(f"injected failure after batch {b}")

    out = tmp_path / "cut"
    with pytest.raises(Stop):
        sweep(cfg, sample_market, out=out, on_batch=fail_after_first)
    assert calls == [0]
    kept = load_results(out)
    assert kept.num_rows == 3 and kept.column("batch").to_pylist() == [0, 0, 0]
    assert sorted(p.name for p in out.iterdir()) == ["batch-000000.parquet", MANIFEST]  # no temp files, no lock
    # without --resume the folder is not overwritten
    with pytest.raises(ConfigError, match=r"already holds a sweep \(1 batch\(es\) written\); pass --resume"):
        sweep(cfg, sample_market, out=out)
    # a changed configuration cannot resume into it
    other = _cfg(space={"half_spread_ticks": [0, 1, 2, 3, 6], "skew_ticks_per_lot": [0, 0.5]},
                 sweep={"batch_size": 3})
    with pytest.raises(ConfigError, match=r"cannot resume: the sweep recorded there differs in \['n_sets', 'space'\]|"
                                          r"cannot resume: the sweep recorded there differs in \['space'\]"):
        sweep(other, sample_market, out=out, resume=True)
    done = []
    rep = sweep(cfg, sample_market, out=out, resume=True, on_batch=lambda b, t: done.append(b))
    assert done == [1, 2, 3] and rep.batches_skipped == 1 and rep.batches_run == 3 and rep.sets_run == 7
    a, b = load_results(out), load_results(tmp_path / "whole")
    assert a.num_rows == b.num_rows == whole.n_sets == 10
    assert _same(a, b)
    # resuming a finished sweep runs nothing
    rep = sweep(cfg, sample_market, out=out, resume=True)
    assert rep.batches_run == 0 and rep.batches_skipped == 4


def test_random_search_is_seeded_and_stays_in_the_space(tmp_path, sample_market):
    space = {"half_spread_ticks": {"low": 0, "high": 6, "int": True}, "skew_ticks_per_lot": {"low": 0.01, "high": 1,
                                                                                               "log": True},
             "order_lots": [1, 2]}
    cfg = _cfg(space=space, sweep={"search": "random", "trials": 5, "batch_size": 2, "seed": 3})
    sweep(cfg, sample_market, out=tmp_path / "a")
    sweep(cfg, sample_market, out=tmp_path / "b")
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    assert a.num_rows == 5 and _same(a, b)
    h = a.column("half_spread_ticks").to_numpy()
    s = a.column("skew_ticks_per_lot").to_numpy()
    assert (h == np.round(h)).all() and h.min() >= 0 and h.max() <= 6
    assert (s >= 0.01).all() and (s <= 1).all()
    assert set(a.column("order_lots").to_pylist()) <= {1.0, 2.0}
    # a grid needs values (or num:) for every swept parameter
    with pytest.raises(ConfigError, match=r"space.half_spread_ticks is a range .* a grid needs values"):
        sweep(cfg, sample_market, out=tmp_path / "c", search="grid")
    with pytest.raises(ConfigError, match=r"trials=3 applies to random and optuna searches"):
        sweep(_cfg(), sample_market, out=tmp_path / "g", trials=3)
    with pytest.raises(ConfigError, match=r"search 'random' needs the number of parameter sets: sweep.trials"):
        sweep(_cfg(space=space), sample_market, out=tmp_path / "d", search="random")
    # an unknown objective is named with the metrics one can choose
    with pytest.raises(ConfigError, match=r"sweep.objective 'profit' is not a metric; choose one of \[.*'pnl'"):
        sweep(_cfg(sweep={"objective": "profit"}), sample_market, out=tmp_path / "e")


def test_optuna_asks_in_batches_and_resumes_from_recorded_trials(tmp_path, sample_market):
    pytest.importorskip("optuna")
    space = {"half_spread_ticks": {"low": 0, "high": 5, "int": True}, "skew_ticks_per_lot": {"low": 0, "high": 1}}
    cfg = _cfg(space=space, sweep={"search": "optuna", "trials": 7, "batch_size": 3, "seed": 1})
    out = tmp_path / "opt"

    def stop(b, table):
        if b == 1:
            raise Stop("injected")

    with pytest.raises(Stop):
        sweep(cfg, sample_market, out=out, on_batch=stop)
    assert load_results(out).num_rows == 6
    rep = sweep(cfg, sample_market, out=out, resume=True)
    assert rep.batches_skipped == 2 and rep.batches_run == 1 and rep.sets_run == 1
    t = load_results(out)
    assert t.num_rows == 7 and t.column("set_id").to_pylist() == list(range(7))
    h = t.column("half_spread_ticks").to_numpy()
    assert (h == np.round(h)).all() and h.min() >= 0 and h.max() <= 5
    assert rep.best is not None and rep.best["pnl"] == max(t.column("pnl").to_pylist())


def test_cli_sweep_and_resume(tmp_path, capsys):
    cfg = tmp_path / "mm.yaml"
    cfg.write_text(textwrap.dedent("""\
        strategy: market_making
        engine: {decision_interval_ns: 100ms, entry_latency_ns: 1ms, response_latency_ns: 1ms}
        space:
          half_spread_ticks: [0, 2]
          skew_ticks_per_lot: {low: 0, high: 1, num: 3}
        sweep: {batch_size: 4}
        """))
    out = tmp_path / "res"
    assert main(["sweep", str(cfg), "--data", SAMPLE, "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["command"] == "sweep" and d["n_sets"] == 6 and d["batches"] == 2 and d["batches_run"] == 2
    assert d["best"]["set_id"] in range(6) and d["out"] == str(out)
    assert main(["sweep", str(cfg), "--data", SAMPLE, "--out", str(out)]) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert main(["sweep", str(cfg), "--data", SAMPLE, "--out", str(out), "--resume"]) == 0
    text = capsys.readouterr().out
    assert "ran 0 batch(es)" in text and "skipped 2 already written" in text
    t = pq.read_table(out / "batch-000001.parquet")
    assert t.column("skew_ticks_per_lot").to_pylist() == [0.5, 1.0]
    assert main(["sweep", str(cfg), "--data", SAMPLE, "--out", str(tmp_path / "r2"), "--search", "random"]) == 1
    assert "needs the number of parameter sets" in capsys.readouterr().err


INS = Instrument("test", "X", "1", "1")


def _small_market(n=120, seed=5):
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for _ in range(n):
        t += int(rng.integers(1, 5))
        if rng.random() < 0.25:
            rows.append((t, KIND_TRADE, int(rng.choice([-1, 1])), int(rng.integers(95, 106)), int(rng.integers(1, 8))))
        else:
            sd = int(rng.choice([-1, 1]))
            rows.append((t, KIND_SET, sd, int(rng.integers(94, 100)) if sd > 0 else int(rng.integers(101, 107)),
                         int(rng.integers(0, 15))))
    a = np.array(rows, dtype=np.int64)
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.full(len(a), FLAG_EOM)}, INS)
    return prepare_market(ev, levels=3)


def test_sweep_on_the_cuda_engine_equals_the_exact_engine(tmp_path, device_backend):
    # the CUDA simulator runs each thread in Python: a small market and 4 sets
    cfg = RunConfig.from_dict({"strategy": "market_making", "params": {"max_position_lots": 4},
                               "engine": {"levels": 3, "sample_ns": 50, "entry_latency_ns": 3, "response_latency_ns": 2,
                                          "maker_fee_bps": -0.25, "taker_fee_bps": 5, "decision_interval_ns": 7,
                                          "queue_model": "probabilistic"},
                               "space": {"half_spread_ticks": [0, 2], "skew_ticks_per_lot": [0, 0.5]},
                               "sweep": {"batch_size": 4}})
    m = _small_market()
    gpu = sweep(cfg, m, out=tmp_path / "gpu", backend=device_backend)
    ex = sweep(cfg, m, out=tmp_path / "ex", engine="exact")
    assert gpu.backend == device_backend.name and ex.backend == "cpu"
    a, b = load_results(tmp_path / "gpu"), load_results(tmp_path / "ex")
    assert a.column("n_fills").to_numpy().sum() > 0
    assert _same(a, b)


def test_strict_sweep_stops_at_a_batch_with_bad_actions_and_does_not_write_it(tmp_path):
    rows = [(0, KIND_SET, 1, 99, 10), (1, KIND_SET, -1, 101, 5), (2, KIND_TRADE, -1, 97, 1), (3, KIND_TRADE, -1, 97, 1)]
    a = np.array(rows, dtype=np.int64)
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.full(len(a), FLAG_EOM)}, INS)
    sig = np.zeros((4, 5))
    sig[1] = (1, 1, 99, 1, 0)
    sig[2] = np.nan
    m = prepare_market(ev, levels=3, signals=sig)
    cfg = RunConfig.from_dict({"strategy": "scripted", "engine": {"levels": 3, "sample_ns": 10},
                               "space": {"scale_qty": [1, 0]}, "sweep": {"batch_size": 1}})
    # scale 0 turns the order into a zero-size one; both sets have the NaN decision
    with pytest.warns(Warning) as rec:
        rep = sweep(cfg, m, out=tmp_path / "warn")
    msgs = [str(w.message) for w in rec]
    assert any("strategy 'scripted': 1 order action(s) refused as malformed" in x and "parameter set(s) 1" in x
               for x in msgs)
    assert any("N_NAN_ACTIONS" in x for x in msgs) and rep.warnings == msgs
    t = load_results(tmp_path / "warn")
    assert t.column("n_bad_actions").to_pylist() == [0, 1] and t.column("n_nan_actions").to_pylist() == [1, 1]
    with pytest.raises(StrategyError, match="N_NAN_ACTIONS"):
        sweep(cfg, m, out=tmp_path / "strict", on_bad_actions="raise")
    assert load_results(tmp_path / "strict").num_rows == 0


def test_experiment_config_sweeps_parse_their_space():
    root = Path(__file__).resolve().parents[2] / "experiments" / "configs"
    for p in sorted(root.glob("*.yaml")):
        c = load_config(p)
        assert c.sweep.search in ("grid", "random", "optuna"), p
        if c.sweep.search != "grid":
            assert c.sweep.trials, p


@pytest.mark.slow
def test_ray_sweep_on_a_local_instance_equals_the_local_sweep(tmp_path, sample_market):
    ray = pytest.importorskip("ray")
    cfg = _cfg()
    local = sweep(cfg, sample_market, out=tmp_path / "local")
    # one worker: it compiles the engine once (each Ray worker process JIT-compiles it, ~10 s) and then
    # runs every batch; a second worker would only add a second compile on a small CI machine
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        rep = sweep(cfg, sample_market, out=tmp_path / "ray", ray=True, backend="cpu")
        assert rep.ray == "local" and rep.batches_run == 2
        assert rep.phase_s["engine"] > 0 and rep.phase_s["write"] > 0  # the workers' phases reach the report
        # a failure after the first batch keeps it; resume finishes on Ray
        out = tmp_path / "ray-cut"

        def stop(b, table):
            raise Stop("injected")

        with pytest.raises(Stop):
            sweep(cfg, sample_market, out=out, ray=True, backend="cpu", on_batch=stop)
        assert load_results(out).num_rows == 4  # batch 0 (one task in flight at a time on one CPU)
        rep2 = sweep(cfg, sample_market, out=out, ray=True, backend="cpu", resume=True)
        assert rep2.batches_run + rep2.batches_skipped == 2
    finally:
        ray.shutdown()
    b = load_results(tmp_path / "local")
    assert _same(load_results(tmp_path / "ray"), b) and local.n_sets == 6
    assert _same(load_results(tmp_path / "ray-cut"), b)


def test_a_resumed_sweep_keeps_the_batch_size_it_was_started_with(tmp_path, sample_market):
    # the automatic batch size depends on the machine (a GPU's SMs and memory): a resume without one takes
    # the size recorded with the batches already written, instead of refusing a changed fingerprint
    cfg = _cfg(sweep={})
    out = tmp_path / "cut"
    with pytest.raises(Stop):
        sweep(cfg, sample_market, out=out, batch_size=4, on_batch=lambda b, t: (_ for _ in ()).throw(Stop(b)))
    rep = sweep(cfg, sample_market, out=out, resume=True)
    assert (rep.batch_size, rep.batches, rep.batches_skipped, rep.batches_run) == (4, 2, 1, 1)
    assert load_results(out).num_rows == 6


def test_gpu_batch_plan_is_one_wave_of_the_kernel_within_the_memory_budget():
    from gpuflow.backtest.runner import gpu_batch_plan

    # 132 SMs, 32 threads a block; by default (no register cap) the kernel's 128 registers: 65,536 // (32 x 128)
    # = 16 blocks per SM, one wave = 132 x 16 x 32 = 67,584 sets.  A 10-minute recording sampled each second:
    # 601 samples, one instrument, 3 x 8 x 601 = 14,424 B of equity per set; 20 GB hold
    # 20e9 // (14,424 + 1,024 x 72) = 226,880 sets > a wave.  The fills take the rest:
    # (20e9 - 67,584 x 14,424) // (67,584 x 72) = 19,025,168,384 // 4,866,048 = 3,909.
    assert gpu_batch_plan(601, 1, sms=132, threads=32, budget=20 * 10**9, max_fills=100_000) == (67_584, 3_909)
    # the kernel as compiled takes 144 registers (grid_mm, twap, vwap, pov by ptxas sm_90): 65,536 // (32 x 144)
    # = 14 blocks per SM, 132 x 14 x 32 = 59,136 sets (67,584 would take a second wave for their last 8,448);
    # fills (20e9 - 59,136 x 14,424) // (59,136 x 72) = 4,496
    assert gpu_batch_plan(601, 1, sms=132, threads=32, budget=20 * 10**9, max_fills=100_000,
                          natural=144) == (59_136, 4_496)
    # a register cap asked for wins over the compiled count
    assert gpu_batch_plan(601, 1, sms=132, threads=32, budget=20 * 10**9, max_fills=100_000, registers="auto",
                          natural=144)[0] == 105_600
    # at the 80-register cap ('auto'): 65,536 // (32 x 80) = 25 blocks per SM, 132 x 25 x 32 = 105,600 sets;
    # fills (20e9 - 105,600 x 14,424) // (105,600 x 72) = 18,476,825,600 // 7,603,200 = 2,430
    kw = {"sms": 132, "budget": 20 * 10**9, "registers": "auto"}
    assert gpu_batch_plan(601, 1, threads=32, max_fills=100_000, **kw) == (105_600, 2_430)
    # the config's max_fills caps the fills per set
    assert gpu_batch_plan(601, 1, threads=32, max_fills=500, **kw) == (105_600, 500)
    # a day sampled each second on two instruments: 3 x 8 x 86,401 x 2 = 4,147,248 B per set; with 1,024 fills
    # 4,220,976 B, 20e9 // that = 4,738 sets, 4,736 in whole blocks of 32; fills (20e9 - 4,736 x 4,147,248)
    # // (4,736 x 72) = 358,633,472 // 340,992 = 1,051
    assert gpu_batch_plan(86_401, 2, threads=32, max_fills=100_000, **kw) == (4_736, 1_051)
    # blocks of 64 at the cap: 65,536 // (64 x 80) = 12 per SM, 132 x 12 x 64 = 101,376
    assert gpu_batch_plan(601, 1, threads=64, max_fills=100_000, **kw)[0] == 101_376
    # a budget too small for even one block still runs one block (its fills buffer shrinks, here to none)
    assert gpu_batch_plan(86_401, 2, sms=132, threads=32, budget=10**6, max_fills=100_000) == (32, 0)
    # a batch size given by the user is kept; the fills take what its equity samples leave:
    # (20e9 - 16,384 x 14,424) // (16,384 x 72) = 19,763,677,184 // 1,179,648 = 16,753
    assert gpu_batch_plan(601, 1, sms=132, threads=32, budget=20 * 10**9, max_fills=100_000,
                          batch=16_384) == (16_384, 16_753)
    # a register cap set by hand sizes the wave: 96 registers, 65,536 // (32 x 96) = 21 blocks per SM, 132 x 21
    # x 32 = 88,704 sets
    assert gpu_batch_plan(601, 1, sms=132, threads=32, budget=20 * 10**9, max_fills=100_000,
                          registers=96)[0] == 88_704


def test_sweep_batch_plan_on_a_gpu_reads_the_device_and_the_market(monkeypatch, sample_market):
    import gpuflow.backend as gb
    from gpuflow.backend import Backend
    from gpuflow.backtest import runner

    monkeypatch.setattr(gb, "device_sm_count", lambda: 132)
    monkeypatch.setattr(runner, "_gpu_budget", lambda: 20 * 10**9)
    cfg = _cfg(sweep={})
    span = int(sample_market.ts[-1]) - int(sample_market.ts[0])
    n_samples = span // 10**9 + 1  # sample_ns 1 s: one sample per started second, and one at the start
    eq = 3 * 8 * n_samples * len(sample_market.instruments)
    import gpuflow.backtest.engine as be_mod

    calls = []
    regs = [None]  # the uncapped kernel's registers as compiled (None: not known, NATURAL_REGISTERS)

    def compiled(strategy, params, market, config, be, record_fills=True):
        calls.append((strategy.NAME, dict(params), market is sample_market, record_fills))
        return regs[0]

    monkeypatch.setattr(be_mod, "sweep_kernel_registers", compiled)
    base = cfg.resolved_params(sample_market.instruments)
    B, F = runner._batch_plan(Backend("gpu", np), sample_market, cfg, None, base)
    assert B == 67_584 and F == min(cfg.engine.max_fills, (20 * 10**9 - B * eq) // (B * 72))  # one uncapped wave
    assert calls == [("market_making", base, True, True)]  # its kernel compiled with a set of the sweep
    regs[0] = 144
    assert runner._batch_plan(Backend("gpu", np), sample_market, cfg, None, base)[0] == 132 * 14 * 32
    assert runner._batch_plan(Backend("gpu", np), sample_market, cfg, 1000, base)[0] == 1000
    assert len(calls) == 2  # a batch size given: no compile needed
    # the CPU: 16 sets per core, a 2 GiB fills buffer (mapped as fills are written)
    B, F = runner._batch_plan(Backend("cpu", np), sample_market, cfg, None, base)
    assert B == max(8, 16 * (os.cpu_count() or 1))
    assert F == min(cfg.engine.max_fills, runner.FILL_BUFFER_BYTES // (B * 72))


def test_sweep_kernel_registers_read_from_the_compiled_kernel():
    import types

    from gpuflow.kernels.backtest import compiled_registers

    from gpuflow.backend import get_backend
    from gpuflow.backtest.engine import sweep_kernel_registers

    # a dispatcher's compiled kernels (one per signature): the most registers of any; none before a launch
    disp = types.SimpleNamespace(overloads={"a": 1, "b": 2}, get_regs_per_thread=lambda: {"a": 128, "b": 144})
    assert compiled_registers(types.SimpleNamespace(cuda=disp)) == 144
    assert compiled_registers(types.SimpleNamespace(cuda=types.SimpleNamespace(overloads={}))) is None
    assert compiled_registers(types.SimpleNamespace(cuda=object())) is None  # the simulator's dispatcher
    # no device: no registers (the CPU twin), and nothing is run
    assert sweep_kernel_registers(None, {}, None, None, get_backend("cpu")) is None


@pytest.mark.parametrize("skip,levels,want", [("auto", 1, "backtest[market_making]"),
                                              ("auto", 3, "backtest[market_making][levels 3]"),
                                              (0, 3, "backtest[market_making]")])
def test_sweep_kernel_registers_compile_the_sweeps_own_kernel(monkeypatch, fake_gpu, skip, levels, want):
    """On a device the registers are read from the kernel the sweep will launch: the one of its skip levels (a
    compile-time constant; one level when no blocks are skipped), compiled by a one-set run when no run has yet;
    a one-set run skips no blocks by default, so the run is told to."""
    from gpuflow.kernels import backtest as kb

    from gpuflow import backend as gb
    from gpuflow.backtest import BacktestConfig
    from gpuflow.backtest import engine as eng
    from gpuflow.backtest.strategies import get_strategy
    from gpuflow.config import config_context

    launched = []

    def record(cpu, pair, n, *args):  # a device backend to the engine (not the simulator), the CPU twin underneath
        if pair.name.startswith("backtest"):
            launched.append(pair.name)
        return cpu.launch(pair, n, *args)

    mm = get_strategy("market_making")
    for lv in (1, 3):  # built before the engine is told it runs on a device (the kernels are the simulator's)
        kb.engine_pair(mm, max_registers=0, skip_levels=lv)
    monkeypatch.setattr(gb, "simulator_enabled", lambda: False)
    monkeypatch.setattr(eng, "Backend", fake_gpu)
    monkeypatch.setattr(kb, "compiled_registers", lambda pair: 150 if pair.name in launched else None)
    with config_context(backtest_skip_block=skip, backtest_skip_levels=levels):
        regs = eng.sweep_kernel_registers(mm, {}, _small_market(), BacktestConfig(levels=3), fake_gpu(record))
    assert launched == [want] and regs == 150
