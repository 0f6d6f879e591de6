"""Cross-check of the exact backtest engine against hftbacktest 2.4.4 on one market-making run.

    python experiments/crosscheck/hftbacktest_mm.py [--path ../shared/data/binance/usdm/btcusdt_20240808.gz]
                                                    [--json out.json]

The strategy (ANCHORS.md's hftbacktest run and :mod:`gpuflow.backtest.strategies.market_making`):
every 100 ms cancel all open orders, then post one post-only (GTX) bid and one ask of 0.01 BTC
(10 lots) two ticks outside the mid, in integer ticks::

    bid = floor(mid) - 2 = (best_bid + best_ask) // 2 - 2
    ask = ceil(mid) + 2  = (best_bid + best_ask + 1) // 2 + 2

no bid while the known position is >= 0.1 BTC (100 lots), no ask while it is <= -0.1 BTC.
Both engines: Binance USD-M BTCUSDT, tick 0.1, lot 0.001, order entry and response latency
10 ms, maker 2 bp / taker 5 bp of notional, a conservative queue (hftbacktest
``risk_adverse_queue_model`` + ``no_partial_fill_exchange``; ours ``queue_model="risk_averse"``,
``partial_fills=False``).  hftbacktest's own example strategies quote ``np.round(price / tick)``,
which rounds a half-tick mid half-to-even, i.e. one tick up or down depending on the parity of the
best bid; the integer floor/ceil above is the symmetric choice and is used on both sides.

Rows of the comparison (see README.md next to this file for the discussion):

``hftbacktest``
    hftbacktest as it is normally run: exchange side in the order of Binance's transaction time
    ``T`` (ms), local side at the receive time shifted by the smallest feed latency
    (``correct_local_timestamp``), so each event has its own feed latency; decisions on a fixed
    100 ms clock (``elapse``).
``hftbacktest-constlat``
    the same data with every exchange time replaced by ``local - F`` (one constant feed latency
    F, the median of hftbacktest's corrected feed latencies): the timeline our engine models.
``gpuflow-timer``
    our exact engine with feed latency F and a timer row at each of hftbacktest's decision times
    (the strategy acts only there; a timer row is a ``KIND_STATUS`` row with qty 0, which neither
    the book nor the fill model reads), so decisions see the same local events as hftbacktest's.
``gpuflow``
    ``market_making`` as is: ``decision_interval_ns = 100 ms`` (the first event at least 100 ms
    after the previous decision), feed latency F.

Times: hftbacktest's local clock is ours plus a constant offset (``OFFSET``: 1,272,156,851 ns on
this file, the recorder clock being that far behind the exchange); all times below are in our
(recorder) clock.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SETTINGS",
    "TIMER_STRATEGY",
    "compare",
    "feed_latency",
    "load",
    "match_fills",
    "run_gpuflow",
    "run_hftbacktest",
    "with_timer_rows",
]

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance" / "usdm" / "btcusdt_20240808.gz"

#: the run both engines simulate (prices in ticks of 0.1 USDT, sizes in lots of 0.001 BTC)
SETTINGS = {
    "tick_size": 0.1, "lot_size": 0.001, "entry_latency_ns": 10_000_000, "response_latency_ns": 10_000_000,
    "maker_fee_bps": 2, "taker_fee_bps": 5, "interval_ns": 100_000_000, "half_spread_ticks": 2,
    "order_lots": 10, "max_position_lots": 100, "levels": 5,
}
_EXCH_EVENT = 1 << 31
_LOCAL_EVENT = 1 << 30


# ----------------------------------------------------------------------------- data
def load(path: str | Path) -> dict[str, Any]:
    """Both engines' inputs from one recording.

    Returns a dict: ``hb`` (hftbacktest's converted rows), ``table`` (our events table),
    ``offset_ns`` (hftbacktest local time - our ts_local, constant) and ``snapshot_local_ns``
    (our ts_local of the REST snapshot line).
    """
    import contextlib
    import io

    from hftbacktest.data.utils import binancefutures

    from gpuflow.io.binance import read_binance
    from gpuflow.schema import KIND_SNAPSHOT, KIND_TRADE

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its progress
        hb = binancefutures.convert(str(path), output_filename=None, combined_stream=True, buffer_size=5_000_000)
    table = read_binance(path).tables[0]
    kind = table.column("kind").to_numpy()
    ts = table.column("ts_local").to_numpy()
    # trades are one row each in both, in the same (file) order: their local times give the offset
    loc = (hb["ev"] & _LOCAL_EVENT) != 0
    h_tr = hb["local_ts"][loc & ((hb["ev"] & 0xFF) == 2)]
    o_tr = ts[kind == KIND_TRADE]
    d = h_tr - o_tr
    if d.size == 0 or d.size != h_tr.size or (d != d[0]).any():
        msg = f"{path}: hftbacktest's and our trade rows do not line up ({h_tr.size} vs {o_tr.size} rows)"
        raise RuntimeError(msg)
    return {"hb": hb, "table": table, "offset_ns": int(d[0]),
            "snapshot_local_ns": int(ts[kind == KIND_SNAPSHOT][0]), "path": str(path)}


def feed_latency(hb: np.ndarray) -> int:
    """Median of hftbacktest's corrected feed latency ``local_ts - exch_ts`` over its local rows (ns).

    hftbacktest shifts local time so that the fastest event has zero latency; the median is the
    one constant that best lines up our ``ts_local - feed_latency_ns`` exchange timeline with its
    per-event exchange times (``T`` of each message, in ms).
    """
    loc = (hb["ev"] & _LOCAL_EVENT) != 0
    return int(np.median(hb["local_ts"][loc] - hb["exch_ts"][loc]))


def constant_latency(hb: np.ndarray, feed_ns: int) -> np.ndarray:
    """hftbacktest rows on one timeline: each event once, exchange time = local time - ``feed_ns``."""
    rows = hb[(hb["ev"] & _LOCAL_EVENT) != 0].copy()
    rows["exch_ts"] = rows["local_ts"] - feed_ns
    rows["ev"] = rows["ev"] | np.uint64(_EXCH_EVENT | _LOCAL_EVENT)
    return rows


def exchange_order(hb: np.ndarray, feed_ns: int) -> np.ndarray:
    """hftbacktest rows on the exchange timeline: each event once, in ``T`` order, local time = ``T + feed_ns``."""
    rows = hb[(hb["ev"] & _EXCH_EVENT) != 0].copy()
    rows["local_ts"] = rows["exch_ts"] + feed_ns
    rows["ev"] = rows["ev"] | np.uint64(_EXCH_EVENT | _LOCAL_EVENT)
    return rows


# ----------------------------------------------------------------------------- hftbacktest
_HBT_LOOP = None


def _hbt_loop() -> Any:
    """The hftbacktest strategy loop (@njit; compiled on first use)."""
    global _HBT_LOOP
    if _HBT_LOOP is not None:
        return _HBT_LOOP
    from hftbacktest import GTX, LIMIT
    from numba import njit

    @njit
    def _record(hbt, lot, fills, nf, nexp):
        vals = hbt.orders(0).values()
        while vals.has_next():
            o = vals.get()
            if o.status == 3 and nf < fills.shape[0]:  # FILLED
                fills[nf, 0] = o.exch_timestamp
                fills[nf, 1] = o.side
                fills[nf, 2] = o.exec_price_tick
                fills[nf, 3] = np.int64(round(o.exec_qty / lot))
                fills[nf, 4] = 1 if o.arr[0].maker else 2
                nf += 1
            elif o.status == 2:  # EXPIRED: a post-only order that would have taken
                nexp += 1
        hbt.clear_inactive_orders(0)
        return nf, nexp

    @njit
    def loop(hbt, interval, first_step, hs, lots, maxl, start, fills, dec):
        lot = hbt.depth(0).lot_size
        tick = hbt.depth(0).tick_size
        oid = 1
        nf = 0
        nd = 0
        nexp = 0
        step = first_step
        while hbt.elapse(step) == 0:
            step = interval
            nf, nexp = _record(hbt, lot, fills, nf, nexp)
            t = hbt.current_timestamp
            d = hbt.depth(0)
            if t < start or d.best_bid_qty <= 0 or d.best_ask_qty <= 0:
                continue
            if nd < dec.size:
                dec[nd] = t
            nd += 1
            vals = hbt.orders(0).values()
            while vals.has_next():
                o = vals.get()
                if o.cancellable:
                    hbt.cancel(0, o.order_id, False)
            pos = np.int64(round(hbt.position(0) / lot))
            m2 = d.best_bid_tick + d.best_ask_tick
            if pos < maxl:
                hbt.submit_buy_order(0, oid, (m2 // 2 - hs) * tick, lots * lot, GTX, LIMIT, False)
                oid += 1
            if pos > -maxl:
                hbt.submit_sell_order(0, oid, ((m2 + 1) // 2 + hs) * tick, lots * lot, GTX, LIMIT, False)
                oid += 1
        nf, nexp = _record(hbt, lot, fills, nf, nexp)
        return nf, nd, nexp

    _HBT_LOOP = loop
    return loop


def hbt_asset(hb: np.ndarray, s: dict[str, Any] = SETTINGS) -> Any:
    """hftbacktest's asset for ``hb`` with the run's settings.

    The ROI (price range ``ROIVectorMarketDepth`` keeps as a dense vector; HashMap ignores it) is the
    traded price range +- 5%: the recording holds an ask level at 621,368.7 USDT, ten times the price,
    and a ROI reaching it would make the ROI vector 5.6 M ticks per side (90 MB to allocate per run).
    """
    from hftbacktest import BacktestAsset

    trade = (hb["ev"] & 0xFF) == 2
    lo, hi = float(hb["px"][trade].min()) * 0.95, float(hb["px"][trade].max()) * 1.05
    return (BacktestAsset().data(hb).linear_asset(1.0)
            .constant_order_latency(s["entry_latency_ns"], s["response_latency_ns"])
            .risk_adverse_queue_model().no_partial_fill_exchange()
            .trading_value_fee_model(s["maker_fee_bps"] * 1e-4, s["taker_fee_bps"] * 1e-4)
            .tick_size(s["tick_size"]).lot_size(s["lot_size"]).roi_lb(lo).roi_ub(hi))


def run_hftbacktest(hb: np.ndarray, *, offset_ns: int, start_local_ns: int = 0, grid_origin_ns: int | None = None,
                    depth: str = "hashmap", s: dict[str, Any] = SETTINGS) -> dict[str, Any]:
    """Run the strategy in hftbacktest; fills and decision times come back in our clock (ns).

    ``start_local_ns`` (our clock): no decisions before it.  ``grid_origin_ns`` (our clock): decide at
    ``grid_origin_ns + k * interval`` (default: hftbacktest's own grid, which starts at the earliest
    timestamp of the data).  ``depth``: "hashmap" or "roivector".
    """
    from hftbacktest import HashMapMarketDepthBacktest, ROIVectorMarketDepthBacktest

    cls = HashMapMarketDepthBacktest if depth == "hashmap" else ROIVectorMarketDepthBacktest
    hbt = cls([hbt_asset(hb, s)])
    span = int(hb["local_ts"].max() - min(hb["exch_ts"].min(), hb["local_ts"].min()))
    n_dec = span // s["interval_ns"] + 2
    fills = np.empty((2 * n_dec + 16, 5), np.int64)  # at most two orders per decision
    dec = np.empty(n_dec, np.int64)
    start = start_local_ns + offset_ns if start_local_ns else 0
    interval = s["interval_ns"]
    first_step = interval
    if grid_origin_ns is not None:
        ex = hb["exch_ts"][(hb["ev"] & _EXCH_EVENT) != 0]
        lo = hb["local_ts"][(hb["ev"] & _LOCAL_EVENT) != 0]
        t0 = min(int(ex[0]), int(lo[0]))  # where hftbacktest's clock starts
        first_step = (grid_origin_ns + offset_ns - t0) % interval or interval
    t = time.perf_counter()
    nf, nd, nexp = _hbt_loop()(hbt, interval, first_step, s["half_spread_ticks"], s["order_lots"],
                         s["max_position_lots"], start, fills, dec)
    secs = time.perf_counter() - t
    sv = hbt.state_values(0)
    d = hbt.depth(0)
    out = {"seconds": secs, "decisions": int(nd), "decision_ts": dec[:nd] - offset_ns, "rejects": int(nexp),
           "best_bid": int(d.best_bid_tick), "best_ask": int(d.best_ask_tick),
           "fills_local": int(sv.num_trades), "position_btc": float(sv.position), "balance_usdt": float(sv.balance),
           "fee_usdt": float(sv.fee)}
    f = fills[:nf].copy()
    f[:, 0] -= offset_ns
    out["fills"] = f[np.argsort(f[:, 0], kind="stable")]
    hbt.close()
    return out


# ----------------------------------------------------------------------------- gpuflow
def _timer_step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts):  # pragma: no cover
    """market_making's step, taken only at the events flagged in ``sig[e, 0]``."""
    if sig[e, 0] == 0:
        return 0
    return mm_step(params, state, t, e, inst, cur, bp, bq, ap, aq, nlev, sig, seen, orders, acts)  # noqa: F821


def _timer_strategy() -> Any:
    from gpuflow.backtest.strategies import market_making as mm

    return types.SimpleNamespace(NAME="crosscheck_market_making_timer", PARAMS=mm.PARAMS, STATE_SIZE=mm.STATE_SIZE,
                                 CORES=(*mm.CORES, ("mm_step", mm.step)), step=_timer_step)


#: market_making acting only at flagged (timer) events; registered under its own engine name
TIMER_STRATEGY = _timer_strategy()


def with_timer_rows(table: Any, times_ns: np.ndarray) -> tuple[Any, np.ndarray]:
    """``table`` plus one timer row (``KIND_STATUS``, qty 0) at each time, after the rows at that time.

    Returns the new table (stably sorted by ts_local) and the boolean mask of the timer rows in it.
    """
    import pyarrow as pa

    from gpuflow.schema import FLAG_EOM, KIND_STATUS

    n = int(np.asarray(times_ns).size)
    cols = {}
    for name, typ in zip(table.schema.names, table.schema.types):
        if name in ("ts_local", "ts_exch"):
            a = np.asarray(times_ns, np.int64)
        elif name == "kind":
            a = np.full(n, KIND_STATUS)
        elif name == "flags":
            a = np.full(n, FLAG_EOM)
        else:
            a = np.zeros(n)
        cols[name] = pa.array(a.astype(typ.to_pandas_dtype()), type=typ)
    extra = pa.table(cols, schema=table.schema)
    both = pa.concat_tables([table, extra])
    ts = both.column("ts_local").to_numpy()
    order = np.argsort(ts, kind="stable")
    timer = np.zeros(both.num_rows, bool)
    timer[table.num_rows:] = True
    return both.take(pa.array(order)), timer[order]


def run_gpuflow(table: Any, *, feed_latency_ns: int, timer_ns: np.ndarray | None = None,
                s: dict[str, Any] = SETTINGS) -> dict[str, Any]:
    """Run ``market_making`` in our exact engine.

    ``timer_ns`` (our clock): decide exactly at these times (timer rows; see the module docstring);
    None: the engine's own clock (``decision_interval_ns``).
    """
    from gpuflow.kernels import backtest as kb

    from gpuflow.backtest import BacktestConfig, prepare_market, run
    from gpuflow.backtest.strategies import get_strategy

    cfg = BacktestConfig(entry_latency_ns=s["entry_latency_ns"], response_latency_ns=s["response_latency_ns"],
                         feed_latency_ns=int(feed_latency_ns), maker_fee_bps=s["maker_fee_bps"],
                         taker_fee_bps=s["taker_fee_bps"], queue_model="risk_averse", partial_fills=False,
                         decision_interval_ns=0 if timer_ns is not None else s["interval_ns"], levels=s["levels"])
    params = {"half_spread_ticks": s["half_spread_ticks"], "order_lots": s["order_lots"],
              "max_position_lots": s["max_position_lots"]}
    if timer_ns is None:
        market = prepare_market(table, levels=s["levels"])
        strategy = get_strategy("market_making")
    else:
        t2, timer = with_timer_rows(table, timer_ns)
        # the synced order moves only depth rows; timer rows keep their place among the others
        from gpuflow.schema import KIND_STATUS
        from gpuflow.sync import synced_order

        order, _, _ = synced_order(t2)
        flags = _merged_flags(t2, order, timer)
        market = prepare_market(t2, levels=s["levels"], signals=flags)
        if not (market.kind[flags[:, 0] != 0] == KIND_STATUS).all() or int(flags.sum()) != len(timer_ns):
            msg = "run_gpuflow: timer flags do not line up with prepare_market's merged events"
            raise RuntimeError(msg)
        strategy = TIMER_STRATEGY
    res = run(strategy, params, market, cfg)
    c = res.counters[0]
    f = res.fills_of(0)
    fills = np.stack([f[:, kb.F_TS], f[:, kb.F_SIDE], f[:, kb.F_PRICE], f[:, kb.F_QTY], f[:, kb.F_LIQ]], axis=1)
    a = res.account[0, 0]
    return {"seconds": res.seconds, "decisions": int(c[kb.N_DECISIONS]) if timer_ns is None else int(timer_ns.size),
            "fills": fills, "best_bid": int(market.bid_price[-1, 0]), "best_ask": int(market.ask_price[-1, 0]),
            "position_lots": int(a[0]), "cash_ticks_lots": int(a[1]), "fee_ppm_ticks_lots": int(a[2]) * 1_000_000 + int(a[5]),
            "orders": int(c[kb.N_ORDERS]), "rejects": int(c[kb.N_REJECTS]), "result": res, "market": market}


def _merged_flags(table: Any, synced: np.ndarray, timer: np.ndarray) -> np.ndarray:
    """Timer flags aligned with prepare_market's events (one instrument: the synced order, unsorted)."""
    return timer[synced].astype(np.float64)[:, None]


def summary(fills: np.ndarray, *, position_lots: int, best_bid: int, best_ask: int,
            s: dict[str, Any] = SETTINGS) -> dict[str, Any]:
    """Counts and PnL from a fill list (columns ts, side, price ticks, qty lots, liquidity 1 maker / 2 taker).

    PnL is marked to the final mid ``(best_bid + best_ask) / 2``; fees at the run's rates.
    """
    side, price, qty, liq = fills[:, 1], fills[:, 2], fills[:, 3], fills[:, 4]
    notional = price * qty  # ticks x lots
    unit = s["tick_size"] * s["lot_size"]  # USDT per tick x lot
    cash = -(side * notional).sum() * unit
    pos = int((side * qty).sum())
    mid = (best_bid + best_ask) / 2 * s["tick_size"]
    fee = (notional[liq == 1].sum() * s["maker_fee_bps"] + notional[liq == 2].sum() * s["taker_fee_bps"]) * 1e-4 * unit
    gross = cash + pos * s["lot_size"] * mid
    return {"fills": int(fills.shape[0]), "maker": int((liq == 1).sum()), "taker": int((liq == 2).sum()),
            "buys": int((side > 0).sum()), "sells": int((side < 0).sum()),
            "volume_btc": round(float(qty.sum()) * s["lot_size"], 6),
            "final_position_btc": round(pos * s["lot_size"], 6), "position_check": pos == position_lots,
            "pnl_gross_usdt": round(gross, 4), "fees_usdt": round(fee, 4), "pnl_net_usdt": round(gross - fee, 4)}


def match_fills(a: np.ndarray, b: np.ndarray, tol_ns: int) -> int:
    """Fills of ``a`` and ``b`` with the same side, price and size within ``tol_ns`` of each other (greedy)."""
    used = np.zeros(b.shape[0], bool)
    n = 0
    for row in a:
        cand = np.nonzero(~used & (b[:, 1] == row[1]) & (b[:, 2] == row[2]) & (b[:, 3] == row[3])
                          & (np.abs(b[:, 0] - row[0]) <= tol_ns))[0]
        if cand.size:
            used[cand[np.argmin(np.abs(b[cand, 0] - row[0]))]] = True
            n += 1
    return n


def compare(path: str | Path = DEFAULT, *, feed_ns: int | None = None) -> dict[str, Any]:
    """All rows of the comparison (see the module docstring) on one recording."""
    data = load(path)
    hb, table, off, snap = data["hb"], data["table"], data["offset_ns"], data["snapshot_local_ns"]
    F = feed_latency(hb) if feed_ns is None else int(feed_ns)
    runs: dict[str, dict[str, Any]] = {}
    # hftbacktest trading from its first decision (before the snapshot has arrived its book holds the
    # diffs only); every other run starts at the first decision after the snapshot line
    h_any = run_hftbacktest(hb, offset_ns=off)
    runs["hftbacktest"] = run_hftbacktest(hb, offset_ns=off, start_local_ns=snap)
    dec = runs["hftbacktest"]["decision_ts"]
    origin = int(dec[0])  # every run decides on this grid: origin + k * 100 ms (our clock)
    runs["hftbacktest-constlat"] = run_hftbacktest(constant_latency(hb, F), offset_ns=off, start_local_ns=snap,
                                                   grid_origin_ns=origin)
    runs["hftbacktest-constlat-T"] = run_hftbacktest(exchange_order(hb, F), offset_ns=off, start_local_ns=snap,
                                                     grid_origin_ns=origin)
    runs["gpuflow-timer"] = run_gpuflow(table, feed_latency_ns=F, timer_ns=runs["hftbacktest-constlat"]["decision_ts"])
    runs["gpuflow-timer-F0"] = run_gpuflow(table, feed_latency_ns=0, timer_ns=dec)
    runs["gpuflow"] = run_gpuflow(table, feed_latency_ns=F)
    rows = {}
    for name, r in runs.items():
        if name.startswith("hftbacktest"):
            pos = round(r["position_btc"] / SETTINGS["lot_size"])
        else:
            pos = r["position_lots"]
        rows[name] = summary(r["fills"], position_lots=pos, best_bid=r["best_bid"], best_ask=r["best_ask"])
        rows[name]["decisions"] = r["decisions"]
        rows[name]["post_only_rejects"] = r["rejects"]
        rows[name]["seconds"] = round(r["seconds"], 4)
    for name, r in runs.items():
        rows[name]["common_with_hftbacktest_100ms"] = match_fills(r["fills"], runs["hftbacktest"]["fills"],
                                                                  100_000_000)
        rows[name]["identical_to_constlat"] = match_fills(r["fills"], runs["hftbacktest-constlat"]["fills"], 0)
    return {"file": data["path"], "feed_latency_ns": F, "offset_ns": off, "snapshot_local_ns": snap,
            "grid_origin_ns": origin, "hftbacktest_from_start_fills": int(h_any["fills"].shape[0]),
            "same_decisions": bool(np.array_equal(dec, runs["hftbacktest-constlat"]["decision_ts"])),
            "rows": rows, "runs": runs}


def _table(rows: dict[str, dict[str, Any]]) -> str:
    keys = ["fills", "maker", "taker", "buys", "sells", "volume_btc", "final_position_btc", "pnl_gross_usdt",
            "fees_usdt", "pnl_net_usdt", "decisions", "post_only_rejects", "common_with_hftbacktest_100ms", "identical_to_constlat"]
    names = list(rows)
    w = max(len(k) for k in keys)
    out = [f"{'':{w}} | " + " | ".join(f"{n:>21}" for n in names)]
    for k in keys:
        out.append(f"{k:{w}} | " + " | ".join(f"{rows[n][k]!s:>21}" for n in names))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=str(DEFAULT))
    ap.add_argument("--feed-latency-ns", type=int, default=None,
                    help="our feed latency (default: median of hftbacktest's corrected feed latencies)")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    out = compare(args.path, feed_ns=args.feed_latency_ns)
    print(f"file {out['file']}; feed latency F = {out['feed_latency_ns']} ns; hftbacktest local offset "
          f"{out['offset_ns']} ns; hftbacktest trading from the start: {out['hftbacktest_from_start_fills']} fills")
    print(_table(out["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
