"""CPU book rebuild vs hftbacktest on the same Binance USD-M recording, in one process run.

    python experiments/bench/bench_book_cpu.py [--path ../shared/data/binance/usdm/btcusdt_20240808.gz]

* hftbacktest 2.4.4: the recording converted with its own converter
  (``hftbacktest.data.utils.binancefutures.convert``), then replayed to the end of data with no
  strategy: ``HashMapMarketDepthBacktest`` (an @njit function calling ``hbt._goto_end()``) and
  ``ROIVectorMarketDepthBacktest`` (``while hbt.elapse(10**12) == 0``), as in ANCHORS.md.
* gpuflow: the same recording read by ``read_binance``, put in synced order (snapshot + diffs,
  ``gpuflow.sync``) and rebuilt on the CPU backend emitting the top 5 levels per side after every
  event (and, in a second configuration, multi-level OFI too).

Both replay the whole file; the ratio is hftbacktest's replay time / ours.  Rates are also given per
row of each engine's own input.  Conversion / reading is not timed here (see bench_ingest.py).
JIT compilation is excluded by one warm-up call; the best of ``--repeat`` runs is kept.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance" / "usdm" / "btcusdt_20240808.gz"


def _best(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("GPUFLOW_BACKEND", "cpu")

    import hftbacktest
    import numba
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest, ROIVectorMarketDepthBacktest
    from hftbacktest.data.utils import binancefutures
    from numba import njit

    from gpuflow.book import rebuild_book
    from gpuflow.io.binance import read_binance
    from gpuflow.sync import synced_events

    hb = binancefutures.convert(args.path, output_filename=None, combined_stream=True)
    px = hb["px"]
    lo, hi = float(px[px > 0].min()) - 1000, float(px.max()) + 1000

    def asset():
        return (BacktestAsset().data(hb).linear_asset(1.0).constant_order_latency(10_000_000, 10_000_000)
                .risk_adverse_queue_model().no_partial_fill_exchange().trading_value_fee_model(0.0002, 0.0005)
                .tick_size(0.1).lot_size(0.001).roi_lb(lo).roi_ub(hi))

    @njit
    def goto_end(hbt):
        hbt._goto_end()
        return 0

    @njit
    def elapse_all(hbt):
        while hbt.elapse(10**12) == 0:
            pass
        return 0

    def run_hashmap():
        hbt = HashMapMarketDepthBacktest([asset()])
        goto_end(hbt)
        hbt.close()

    def run_roi():
        hbt = ROIVectorMarketDepthBacktest([asset()])
        elapse_all(hbt)
        hbt.close()

    t_hash = _best(run_hashmap, args.repeat)
    t_roi = _best(run_roi, args.repeat)

    res = read_binance(args.path)
    ev, info = synced_events(res.tables[0])
    cols = {c: ev.column(c).to_numpy() for c in ("ts_local", "kind", "side", "price", "qty", "flags")}
    t_ours = _best(lambda: rebuild_book(cols, levels=5, every=1, backend="cpu"), args.repeat)
    t_ours_ofi = _best(lambda: rebuild_book(cols, levels=5, every=1, ofi=True, backend="cpu"), args.repeat)
    f = rebuild_book(cols, levels=5, every=1, backend="cpu")

    hb_depth = int(((hb["ev"] & 0xFF) == 1).sum())
    out = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                    "hftbacktest": getattr(hftbacktest, "__version__", "2.4.4")},
        "file": args.path,
        "hftbacktest_rows": int(hb.size), "hftbacktest_depth_rows": hb_depth,
        "gpuflow_rows": int(ev.num_rows), "gpuflow_rows_emitted": int(f.index.size),
        "hftbacktest_hashmap_s": t_hash, "hftbacktest_roivector_s": t_roi,
        "gpuflow_top5_s": t_ours, "gpuflow_top5_ofi_s": t_ours_ofi,
        "hftbacktest_hashmap_rows_per_s": hb.size / t_hash, "hftbacktest_roivector_rows_per_s": hb.size / t_roi,
        "gpuflow_top5_rows_per_s": ev.num_rows / t_ours, "gpuflow_top5_ofi_rows_per_s": ev.num_rows / t_ours_ofi,
        "speedup_vs_hashmap": t_hash / t_ours, "speedup_vs_roivector": t_roi / t_ours,
        "speedup_top5_ofi_vs_roivector": t_roi / t_ours_ofi,
        "last_top": {"bid": int(f.bid_price[-1, 0]), "ask": int(f.ask_price[-1, 0])},
    }
    if not args.json:
        print(f"hftbacktest HashMap  _goto_end : {t_hash * 1e3:8.2f} ms ({hb.size / t_hash / 1e6:.1f} M rows/s)")
        print(f"hftbacktest ROIVector elapse   : {t_roi * 1e3:8.2f} ms ({hb.size / t_roi / 1e6:.1f} M rows/s)")
        print(f"gpuflow top-5 every event (cpu): {t_ours * 1e3:8.2f} ms ({ev.num_rows / t_ours / 1e6:.1f} M rows/s)")
        print(f"gpuflow top-5 + OFI (cpu)      : {t_ours_ofi * 1e3:8.2f} ms "
              f"({ev.num_rows / t_ours_ofi / 1e6:.1f} M rows/s)")
        print(f"ratio (hftbacktest time / ours): HashMap {t_hash / t_ours:.2f}x, ROIVector {t_roi / t_ours:.2f}x")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
