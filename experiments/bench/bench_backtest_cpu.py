"""One market-making backtest on the CPU: our exact engine vs hftbacktest 2.4.4, in one process run.

    python experiments/bench/bench_backtest_cpu.py [--path ../shared/data/binance/usdm/btcusdt_20240808.gz]
                                                   [--repeat 7] [--json]

The run is the cross-check's (experiments/crosscheck/hftbacktest_mm.py): every 100 ms cancel all,
post one post-only bid and ask of 10 lots two ticks outside the mid, position limit 100 lots, 10 ms
entry and response latency, 2 / 5 bp fees, risk-averse queue without partial fills.

* hftbacktest: its own converter's rows (not timed), then per run: ``BacktestAsset`` +
  ``HashMapMarketDepthBacktest`` or ``ROIVectorMarketDepthBacktest`` + the @njit strategy loop
  (``elapse(100 ms)``) + ``close``.
* gpuflow: ``read_binance`` (not timed), then
  - ``engine``: :func:`gpuflow.backtest.run` with the exact engine on a prepared market
    (``market_making``, ``decision_interval_ns`` = 100 ms); ``engine_kernel`` is the compiled loop
    alone (``BacktestResult.seconds``: no output allocation or Python wrapper);
  - ``prepare+engine``: :func:`gpuflow.backtest.prepare_market` (Binance sync, top-5 book after every
    event) and the market's event view (``kernels.backtest.event_view``, built once per market and kept on
    it, so ``engine`` reuses it; timed apart), followed by the engine run;
  - for information: the engine passing over quiet blocks of 16 events (``backtest_skip_block``, the
    default from 8 parameter sets on, not for this single set) and its block summaries, built once per
    market and feed latency (cached on the market), timed apart.

JIT compilation is excluded by one warm-up call of everything; each figure is the best of
``--repeat`` runs.  Rates are per row of each engine's own input (hftbacktest: its converted rows,
exchange and local copies included; gpuflow: its merged events, bookTicker rows included); the
ratio is hftbacktest's time / ours on the same recording and strategy.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
DEFAULT = HERE.parents[3] / "shared" / "data" / "binance" / "usdm" / "btcusdt_20240808.gz"
CROSSCHECK = HERE.parents[1] / "crosscheck" / "hftbacktest_mm.py"


def _best(fn, repeat: int) -> tuple[float, object]:
    out = fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    os.environ.setdefault("GPUFLOW_BACKEND", "cpu")

    import hftbacktest
    import numba
    from gpuflow.kernels import backtest as kb

    from gpuflow.backtest import BacktestConfig, prepare_market, run
    from gpuflow.backtest.strategies import get_strategy

    spec = importlib.util.spec_from_file_location("crosscheck_hftbacktest_mm", CROSSCHECK)
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    s = cc.SETTINGS

    data = cc.load(args.path)
    hb, table, off = data["hb"], data["table"], data["offset_ns"]
    F = cc.feed_latency(hb)

    # ---- hftbacktest
    def hbt_run(depth: str) -> dict:
        return cc.run_hftbacktest(hb, offset_ns=off, depth=depth)

    t_hash, r_hash = _best(lambda: hbt_run("hashmap"), args.repeat)
    t_roi, r_roi = _best(lambda: hbt_run("roivector"), args.repeat)

    # ---- gpuflow
    mm = get_strategy("market_making")
    cfg = BacktestConfig(entry_latency_ns=s["entry_latency_ns"], response_latency_ns=s["response_latency_ns"],
                         feed_latency_ns=F, maker_fee_bps=s["maker_fee_bps"], taker_fee_bps=s["taker_fee_bps"],
                         queue_model="risk_averse", partial_fills=False, decision_interval_ns=s["interval_ns"],
                         levels=s["levels"])
    params = {"half_spread_ticks": s["half_spread_ticks"], "order_lots": s["order_lots"],
              "max_position_lots": s["max_position_lots"]}
    t_prep, market = _best(lambda: prepare_market(table, levels=s["levels"]), args.repeat)
    kernel = []

    def engine():
        r = run(mm, params, market, cfg, engine="exact")
        kernel.append(r.seconds)
        return r

    t_eng, res = _best(engine, args.repeat)
    t_kernel = min(kernel[1:])
    n = market.n_events
    # for information: the same run passing over quiet blocks of 16 events (the engines' default from 8 sets on;
    # one set by default does not skip): the summaries are built once per market and feed latency and cached
    # on the market, so they are timed apart
    from gpuflow.config import config_context

    tx = market.ts - F
    t_view, (ev, _) = _best(lambda: kb.event_view(market.ts, market.inst, market.row, market.kind, market.side,
                                                  market.bid_price, market.bid_qty, market.ask_price,
                                                  market.ask_qty), args.repeat)
    t_blk, _ = _best(lambda: kb.event_blocks(market.ts, tx, market.price, ev), args.repeat)
    # the event view is built once per market (kept on it, so the engine runs above reuse it): counted with
    # the market's preparation
    t_both = t_prep + t_view + t_eng
    with config_context(backtest_skip_block=kb.SKIP_BLOCK):
        t_skip, res_skip = _best(lambda: run(mm, params, market, cfg, engine="exact"), args.repeat)
    if int(res_skip.counters[0, kb.N_FILLS]) != int(res.counters[0, kb.N_FILLS]):
        msg = "the engine with skip blocks made different fills"
        raise SystemExit(msg)

    out = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "numba_threads": numba.get_num_threads(),
                    "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                    "hftbacktest": getattr(hftbacktest, "__version__", "2.4.4"), "gpuflow_rev": _git_rev()},
        "file": args.path, "repeat": args.repeat, "feed_latency_ns": F,
        "hftbacktest_rows": int(hb.size), "gpuflow_events": int(n),
        "fills": {"hftbacktest_hashmap": int(r_hash["fills"].shape[0]),
                  "hftbacktest_roivector": int(r_roi["fills"].shape[0]),
                  "gpuflow": int(res.counters[0, kb.N_FILLS])},
        "seconds": {"hftbacktest_hashmap": t_hash, "hftbacktest_roivector": t_roi, "gpuflow_engine": t_eng,
                    "gpuflow_engine_kernel": t_kernel, "gpuflow_prepare_market": t_prep, "gpuflow_event_view": t_view,
                    "gpuflow_event_blocks": t_blk, "gpuflow_engine_skip16": t_skip,
                    "gpuflow_prepare_plus_engine": t_both},
        "rows_per_s": {"hftbacktest_hashmap": hb.size / t_hash, "hftbacktest_roivector": hb.size / t_roi,
                       "gpuflow_engine": n / t_eng, "gpuflow_engine_kernel": n / t_kernel,
                       "gpuflow_prepare_plus_engine": n / t_both},
        "speedup": {"engine_vs_hashmap": t_hash / t_eng, "engine_vs_roivector": t_roi / t_eng,
                    "prepare_plus_engine_vs_hashmap": t_hash / t_both,
                    "prepare_plus_engine_vs_roivector": t_roi / t_both},
    }
    if not args.json:
        print(f"{out['date']}  {out['machine']['cpu']} x{out['machine']['cores']}  numba {numba.__version__}  "
              f"hftbacktest {out['machine']['hftbacktest']}  best of {args.repeat}")
        rows = [("hftbacktest HashMap (asset + backtest + loop)", t_hash, hb.size, r_hash["fills"].shape[0]),
                ("hftbacktest ROIVector (asset + backtest + loop)", t_roi, hb.size, r_roi["fills"].shape[0]),
                ("gpuflow engine (run, exact)", t_eng, n, out["fills"]["gpuflow"]),
                ("gpuflow engine kernel only", t_kernel, n, out["fills"]["gpuflow"]),
                ("gpuflow prepare_market", t_prep, n, None),
                ("gpuflow event view (once per market)", t_view, n, None),
                ("gpuflow prepare_market + event view + engine", t_both, n, out["fills"]["gpuflow"]),
                ("(info) engine skipping quiet blocks of 16 events", t_skip, n, out["fills"]["gpuflow"]),
                ("(info) its block summaries (once per market)", t_blk, n, None)]
        for name, t, rows_, fills in rows:
            print(f"  {name:48} {t * 1e3:9.2f} ms  {rows_ / t / 1e6:7.1f} M rows/s"
                  + (f"  fills {fills}" if fills is not None else ""))
        sp = out["speedup"]
        print(f"  ratio hftbacktest time / ours: engine {sp['engine_vs_hashmap']:.2f}x (HashMap), "
              f"{sp['engine_vs_roivector']:.2f}x (ROIVector); prepare+engine {sp['prepare_plus_engine_vs_hashmap']:.2f}x"
              f" (HashMap), {sp['prepare_plus_engine_vs_roivector']:.2f}x (ROIVector)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
