"""``gpuflow backtest``: run configurations (YAML), data loading, signals, and how bad input is reported."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from gpuflow.kernels import backtest as kb

from gpuflow.backtest.config import (
    DataSpec,
    RunConfig,
    SignalSpec,
    build_signals,
    complete_rows,
    detect_format,
    load_config,
    load_data,
    load_events,
)
from gpuflow.backtest.engine import ConfigError, prepare_market
from gpuflow.backtest.runner import StrategyError, StrategyWarning, run_backtest
from gpuflow.cli import main
from gpuflow.demo import sample_path
from gpuflow.schema import FLAG_EOM, KIND_SET, KIND_TRADE, Instrument, events_table

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"
SAMPLE = str(sample_path())

MM = """\
strategy: market_making
params:
  half_spread_ticks: 1
  skew_ticks_per_lot: 0.5
  max_position_lots: 5
engine:
  entry_latency_ns: 1ms
  response_latency_ns: 1ms
  maker_fee_bps: -0.5
  taker_fee_bps: 5
  decision_interval_ns: 100ms
  sample_ns: 1s
"""


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


# ----------------------------------------------------------------------------------------- the command
def test_backtest_prints_metrics_and_sweep_engine_prints_the_same(tmp_path, capsys):
    cfg = _write(tmp_path, MM)
    assert main(["backtest", str(cfg), "--data", SAMPLE, "--json"]) == 0
    ex = _last_json(capsys)
    assert ex["command"] == "backtest" and ex["engine"] == "exact" and ex["strategy"] == "market_making"
    assert ex["fills"] > 0 and ex["fills"] == ex["counters"]["N_FILLS"] == ex["metrics"]["n_fills"]
    assert ex["data"]["events"] == 56_440 and ex["data"]["instruments"] == ["binance-futures/BTCUSDT"]
    assert ex["params"] == {"half_spread_ticks": 1.0, "order_lots": 1.0, "max_position_lots": 5.0,
                            "skew_ticks_per_lot": 0.5}
    m = ex["metrics"]
    assert np.isclose(m["pnl"], m["pnl_gross"] - m["fees"]) and m["fees"] < 0  # maker rebates
    assert ex["warnings"] == []
    # the same run through the sweep engine (its CPU twin here): the same fills, PnL and counters
    assert main(["backtest", str(cfg), "--data", SAMPLE, "--json", "--engine", "sweep"]) == 0
    sw = _last_json(capsys)
    assert sw["engine"] == "sweep"
    assert sw["fills"] == ex["fills"] and sw["metrics"] == ex["metrics"] and sw["counters"] == ex["counters"]
    assert sw["account"] == ex["account"]
    # text output, a parameter override and the fills file
    fills = tmp_path / "fills.parquet"
    assert main(["backtest", str(cfg), "--data", SAMPLE, "--param", "half_spread_ticks=3", "--fills",
                 str(fills)]) == 0
    out = capsys.readouterr().out
    assert "half_spread_ticks=3" in out and "fills:" in out and "pnl=" in out
    import pyarrow.parquet as pq

    f = pq.read_table(fills)
    assert f.num_rows > 0 and set(f.column("liquidity").to_pylist()) <= {1, 2}


def test_backtest_from_a_store_with_symbol_and_time_range(tmp_path, capsys):
    from gpuflow.ingest import ingest_file
    from gpuflow.store import Store

    store = tmp_path / "store"
    ingest_file("binance", SAMPLE, Store(store))
    cfg = _write(tmp_path, MM)
    assert main(["backtest", str(cfg), "--data", str(store), "--symbol", "BTCUSDT", "--json"]) == 0
    whole = _last_json(capsys)
    assert main(["backtest", str(cfg), "--data", SAMPLE, "--json"]) == 0
    assert _last_json(capsys)["metrics"] == whole["metrics"]  # the store holds the cleaned file
    t0 = whole["data"]["first_ts"]
    assert main(["backtest", str(cfg), "--data", str(store), "--start", str(t0 + 10**10), "--json"]) == 0
    part = _last_json(capsys)
    assert part["data"]["first_ts"] >= t0 + 10**10 and part["data"]["events"] < whole["data"]["events"]
    assert main(["backtest", str(cfg), "--data", str(store), "--symbol", "ETHUSDT"]) == 1
    assert "ETHUSDT" in capsys.readouterr().err


def test_no_data_and_missing_data_are_clear_errors(tmp_path, capsys):
    cfg = _write(tmp_path, MM)
    assert main(["backtest", str(cfg)]) == 1
    assert "no data given; pass --data PATH" in capsys.readouterr().err
    assert main(["backtest", str(cfg), "--data", str(tmp_path / "nope.gz"), "--json"]) == 1
    d = _last_json(capsys)
    assert d["type"] == "ConfigError" and "nope.gz" in d["error"] and "does not exist" in d["error"]


# ----------------------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("text, match", [
    ("strategy: market_making\nengin: {}\n", r"run.yaml: unknown key 'engin' in top level; valid keys: \['strategy'"),
    ("strategy: market_making\nengine: {latency_ns: 5}\n",
     r"run.yaml: unknown key 'latency_ns' in engine; valid keys: \['entry_latency_ns'"),
    ("strategy: market_making\nparams: {half_spread: 2}\n",
     (r"run.yaml: unknown parameter 'half_spread' in params for strategy 'market_making'; valid parameters: "
     r"\['half_spread_ticks'")),
    ("strategy: market_making\nspace: {spread: [1, 2]}\n", r"unknown parameter 'spread' in space"),
    ("strategy: market_making\ndata: {path: x.gz, fmt: binance}\n", r"unknown key 'fmt' in data; valid keys"),
    ("strategy: market_making\nsignals: [{feature: ofi, window: 5}]\n", r"unknown key 'window' in signals\[0\]"),
    ("strategy: market_making\nsweep: {trails: 5}\n", r"unknown key 'trails' in sweep"),
    ("strategy: market_maker\n", r"strategy 'market_maker' is not known; expected one of \["),
    ("params: {}\n", r"missing key 'strategy'"),
    ("strategy: market_making\nparams: {half_spread_ticks: -1}\n",
     r"params.half_spread_ticks: -1 is out of the strategy's range \[0.0, "),
    ("strategy: market_making\nengine: {queue_model: fifo}\n", r"engine: .*queue_model"),
    ("strategy: market_making\nengine: {entry_latency_ns: 1.5ns}\n", r"engine.entry_latency_ns: .* whole number of ns"),
    ("strategy: market_making\nengine: {maker_fee_bps: 0.001}\n", r"maker_fee_bps"),
    ("strategy: market_making\nsignals: [{feature: mid, window_ns: 1s}]\n", r"a trailing window sums a flow"),
    ("strategy: market_making\nspace: {skew_ticks_per_lot: {low: 1, high: 0}}\n", r"low \(1.0\) must be below high"),
    ("strategy: market_making\nparams: {max_position_lots: {price: '0.1'}}\n",
     (r"params.max_position_lots: \{price: ...\} converts a currency value to ticks, but parameter "
     r"'max_position_lots' is not in ticks")),
    ("strategy: market_making\n: [\n", r"run.yaml: not valid YAML"),
])
def test_config_errors_name_the_file_and_the_field(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_cli_unknown_parameter_names_it(tmp_path, capsys):
    cfg = _write(tmp_path, MM)
    assert main(["backtest", str(cfg), "--data", SAMPLE, "--param", "spread=3", "--json"]) == 1
    d = _last_json(capsys)
    assert d["type"] == "ConfigError" and "unknown parameter 'spread'" in d["error"]
    assert "half_spread_ticks" in d["error"]  # the valid ones are listed


def test_durations_times_and_values_from_the_data(tmp_path):
    c = load_config(_write(tmp_path, """\
        strategy: twap
        params: {interval_ns: 1.5s, start_ns: {time: "2024-08-08T23:54:16"}, end_ns: 1e18}
        engine: {entry_latency_ns: 250us, feed_latency_ns: 2ms, sample_ns: 1_000_000_000, decision_interval_ns: 0.5s}
        space: {interval_ns: [500ms, 2s, 3000000000]}
        """))
    assert c.engine.entry_latency_ns == 250_000 and c.engine.feed_latency_ns == 2_000_000
    assert c.engine.sample_ns == 10**9 and c.engine.decision_interval_ns == 5 * 10**8
    p = c.resolved_params()
    assert p["interval_ns"] == 1.5e9 and p["start_ns"] == 1_723_161_256 * 10**9 and p["end_ns"] == 1e18
    assert c.space["interval_ns"].values == (5e8, 2e9, 3e9)
    c = RunConfig.from_dict({"strategy": "stat_arb", "params": {"tick_ratio": {"data": "tick_ratio"}}})
    spot = Instrument("binance", "BTCUSDT", "0.01", "0.00000001")
    perp = Instrument("binance-futures", "BTCUSDT", "0.10", "0.001")
    assert c.resolved_params([spot, perp])["tick_ratio"] == 10.0
    with pytest.raises(ConfigError, match=r"params.tick_ratio: \{data: tick_ratio\} needs data of 2 instruments"):
        c.resolved_params([spot])


# ----------------------------------------------------------------------------------------- bad input
def test_price_off_the_tick_grid_in_a_config_is_an_error_naming_field_and_tick(tmp_path, capsys):
    cfg = _write(tmp_path, MM.replace("half_spread_ticks: 1", 'half_spread_ticks: {price: "0.25"}'))
    assert main(["backtest", str(cfg), "--data", SAMPLE, "--json"]) == 1
    d = _last_json(capsys)
    assert d["type"] == "ConfigError"
    assert ("params.half_spread_ticks: price 0.25 is not a whole number of ticks (tick_size=0.10 for "
            "binance-futures/BTCUSDT: 0.25 / 0.10 = 2.5); use a multiple of 0.10") in d["error"]
    # on the grid it converts: 0.30 = 3 ticks; a size in currency converts with the lot size
    on_grid = 'half_spread_ticks: {price: "0.30"}\n  order_lots: {size: "0.002"}'
    c = load_config(_write(tmp_path, MM.replace("half_spread_ticks: 1", on_grid)))
    ins = [Instrument("binance-futures", "BTCUSDT", "0.10", "0.001")]
    p = c.resolved_params(ins)
    assert p["half_spread_ticks"] == 3.0 and p["order_lots"] == 2.0
    # a size that is not a whole number of lots
    c = load_config(_write(tmp_path, MM + "space:\n  order_lots: {size: ['0.001', '0.0015']}\n"))
    with pytest.raises(ConfigError, match=r"space.order_lots: size 0.0015 is not a whole number of lots "
                                          r"\(lot_size=0.001 for binance-futures/BTCUSDT"):
        c.resolved_space(ins)
    # a zero size converts to 0 lots, outside the strategy's declared range
    c = load_config(_write(tmp_path, MM.replace("  max_position_lots: 5", '  order_lots: {size: "0"}')))
    with pytest.raises(ConfigError, match=r"params.order_lots: .* out of its range \[1.0, "):
        c.resolved_params(ins)


INS = Instrument("test", "X", "1", "1")
GTC = 1
BOOK = [(0, KIND_SET, 1, 99, 10), (1, KIND_SET, 1, 98, 20), (2, KIND_SET, -1, 101, 5), (3, KIND_SET, -1, 102, 7)]


def _events(rows):
    a = np.array(rows, dtype=np.int64)
    return events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                         "flags": np.full(len(rows), FLAG_EOM)}, INS)


def _scripted_market(actions):
    rows = [*BOOK, (10, KIND_TRADE, -1, 97, 1), (11, KIND_TRADE, -1, 97, 1)]
    sig = np.zeros((len(rows), 5))
    for i, a in actions.items():
        sig[i] = a
    return prepare_market(_events(rows), levels=3, signals=sig, signal_names=["code", "side", "px", "qty", "slot"])


def test_nan_decisions_and_malformed_orders_warn_or_raise_naming_strategy_and_count():
    cfg = RunConfig.from_dict({"strategy": "scripted", "engine": {"levels": 3, "sample_ns": 1000}})
    market = _scripted_market({2: (np.nan, 0, 0, 0, 0), 4: (np.nan, 0, 0, 0, 0), 3: (GTC, 1, 99, 0, 0)})
    with pytest.warns(StrategyWarning) as rec:
        rep = run_backtest(cfg, market)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 2 and msgs == rep.warnings
    assert msgs[0].startswith("strategy 'scripted': 2 of 6 decisions returned no valid action (N_NAN_ACTIONS")
    assert "signals with NaN values: code (2 of 6 events)" in msgs[0]
    assert msgs[1].startswith("strategy 'scripted': 1 order action(s) refused as malformed (N_BAD_ACTIONS")
    assert rep.metrics["n_nan_actions"] == 2 and rep.metrics["n_bad_actions"] == 1
    assert rep.result.counters[0, kb.N_ORDERS] == 0  # the zero-size order was not sent
    with pytest.raises(StrategyError, match=r"strategy 'scripted': 2 of 6 decisions .*; strategy 'scripted': 1 order"):
        run_backtest(cfg, market, on_bad_actions="raise")
    # checks.on_bad_actions: raise in the config does the same
    strict = RunConfig.from_dict({"strategy": "scripted", "engine": {"levels": 3, "sample_ns": 1000},
                                  "checks": {"on_bad_actions": "raise"}})
    with pytest.raises(StrategyError, match="N_NAN_ACTIONS"):
        run_backtest(strict, market)
    # a clean run reports nothing
    ok = run_backtest(cfg, _scripted_market({3: (GTC, 1, 99, 4, 0)}))
    assert ok.warnings == [] and ok.n_fills == 1


def test_cli_reports_bad_actions_and_strict_fails(tmp_path, capsys):
    from gpuflow.store import Store

    rows = [*BOOK, (10, KIND_TRADE, -1, 97, 1), (11, KIND_TRADE, -1, 97, 1)]
    store = tmp_path / "store"
    Store(store).ingest(_events(rows), "hand-built")
    acts = np.zeros((len(rows), 5))
    acts[2] = np.nan
    acts[3] = (GTC, 1, 99, 0, 0)  # zero size
    np.save(tmp_path / "acts.npy", acts)
    sig = "\n".join(f"  - {{name: c{j}, feature: file, path: acts.npy, column: {j}}}" for j in range(5))
    cfg = _write(tmp_path, f"strategy: scripted\nengine: {{levels: 3, sample_ns: 1000}}\nsignals:\n{sig}\n")
    assert main(["backtest", str(cfg), "--data", str(store), "--json"]) == 0
    captured = capsys.readouterr()
    d = json.loads(captured.out.strip().splitlines()[-1])
    assert len(d["warnings"]) == 2 and d["metrics"]["n_nan_actions"] == 1 and d["metrics"]["n_bad_actions"] == 1
    assert "warning: strategy 'scripted': 1 of 6 decisions returned no valid action" in captured.err
    assert "signals with NaN values: c0 (1 of 6 events)" in captured.err
    assert main(["backtest", str(cfg), "--data", str(store), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "gpuflow backtest: error: strategy 'scripted': 1 of 6 decisions" in err and "N_BAD_ACTIONS" in err


# ----------------------------------------------------------------------------------------- data and signals
def test_detect_format():
    assert detect_format(SAMPLE) == "binance"


def test_detect_format_of_the_shared_samples(shared_data):
    assert detect_format(shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz") == "lobster"
    tardis = shared_data / "nautilus_fixtures" / "tardis"
    assert detect_format(tardis / "binance-futures_trades_BTCUSDT.csv") == "tardis"
    db = shared_data / "nautilus_fixtures" / "databento" / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"
    assert detect_format(db) == "databento"
    assert detect_format(shared_data / "binance" / "spot" / "btcusdt_20240808.gz") == "binance"
    with pytest.raises(ConfigError, match=r"cannot tell the raw format .* set data.format in the config \(or --format\)"):
        detect_format(shared_data / "lobster" / "LOBSTER_SampleFiles_ReadMe.txt")


def _ofi1(b0, b1):
    """Best-level OFI between books b0 -> b1 ((bid px, bid qty, ask px, ask qty)), the CKS formula."""
    pb0, qb0, pa0, qa0 = b0
    pb1, qb1, pa1, qa1 = b1
    return ((pb1 >= pb0) * qb1 - (pb1 <= pb0) * qb0 - (pa1 <= pa0) * qa1 + (pa1 >= pa0) * qa0)


def test_windowed_ofi_signal_equals_the_obvious_loop(rng):
    # random two-sided updates in messages of 1-3 rows (FLAG_EOM on the last), ts_local with ties
    rows, flags, t = [], [], 0
    for _ in range(60):
        t += int(rng.integers(0, 4))
        k = int(rng.integers(1, 4))
        for j in range(k):
            sd = int(rng.choice([-1, 1]))
            px = int(rng.integers(95, 100)) if sd > 0 else int(rng.integers(101, 106))
            rows.append((t, KIND_SET, sd, px, int(rng.integers(0, 6))))
            flags.append(FLAG_EOM if j == k - 1 else 0)
    a = np.array(rows, dtype=np.int64)
    ev = events_table({"ts_local": a[:, 0], "kind": a[:, 1], "side": a[:, 2], "price": a[:, 3], "qty": a[:, 4],
                       "flags": np.array(flags)}, INS)
    m = prepare_market(ev, levels=3)
    W = 5
    specs = [SignalSpec("ofi", "ofi", 1, W), SignalSpec("mid", "mid", 1)]
    sig = build_signals(m, specs, complete=complete_rows([ev]))
    book = [(m.bid_price[r, 0], m.bid_qty[r, 0], m.ask_price[r, 0], m.ask_qty[r, 0]) for r in range(m.n_events)]
    complete = [r for r in range(m.n_events) if flags[r]]
    for e in range(m.n_events):
        seen = [r for r in complete if r <= e]
        want = sum(_ofi1(book[seen[i - 1] if i else seen[0]], book[r]) for i, r in enumerate(seen)
                   if a[r, 0] > a[e, 0] - W)
        assert sig[e, 0] == want, e
        if seen:
            r = seen[-1]
            both = book[r][1] > 0 and book[r][3] > 0
            assert (sig[e, 1] == (book[r][0] + book[r][2]) / 2) if both else np.isnan(sig[e, 1]), e
        else:
            assert np.isnan(sig[e, 1])
    # causal: changing the rows after event e leaves the signals up to e as they were
    cut = m.n_events // 2
    a2 = a.copy()
    a2[cut + 1:, 4] = 3
    ev2 = events_table({"ts_local": a2[:, 0], "kind": a2[:, 1], "side": a2[:, 2], "price": a2[:, 3],
                        "qty": a2[:, 4], "flags": np.array(flags)}, INS)
    m2 = prepare_market(ev2, levels=3)
    sig2 = build_signals(m2, specs, complete=complete_rows([ev2]))
    np.testing.assert_array_equal(sig2[:cut + 1], sig[:cut + 1])


def test_load_data_builds_the_configs_signals_on_the_sample():
    cfg = load_config(CONFIGS / "ofi_momentum.yaml")
    m = load_data(SAMPLE, config=cfg)
    assert m.signal_names == ["ofi_1s"] and m.signals.shape == (m.n_events, 1)
    assert np.isfinite(m.signals).all() and (m.signals != 0).mean() > 0.5
    pov = load_data(SAMPLE, config=load_config(CONFIGS / "pov.yaml"))
    from gpuflow.backtest.execution import execution_signals

    np.testing.assert_array_equal(pov.signals[:, 0], execution_signals(pov)[0][:, 0])
    with pytest.raises(ConfigError, match=r"several instruments match|no instrument matches"):
        load_events(DataSpec(path=SAMPLE, symbol="ETHUSDT"))


def test_every_experiment_config_loads():
    from gpuflow.backtest.strategies import STRATEGIES

    found = {p.stem: load_config(p) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert set(found) == set(STRATEGIES)  # one config per registered strategy
    for name, c in found.items():
        assert c.strategy == name and c.space, name
        assert c.data and c.data[0].path, name
