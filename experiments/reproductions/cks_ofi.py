"""Cont, Kukanov & Stoikov (2014): 10-second mid-price changes explained by order-flow imbalance.

    python experiments/reproductions/cks_ofi.py [--data ../shared/data/lobster] [--json out.json]

For each LOBSTER sample (NASDAQ, 2012-06-21) the level-1 book after every message is taken from the
orderbook file (the exchange's own top of book, so resting orders from before 09:30 are included);
OFI is Cont-Kukanov-Stoikov's e_n summed over 10-second buckets (``gpuflow.features.ofi.ofi_bucketed``)
and the mid change is measured in ticks of $0.01 (``gpuflow.features.flow.mid_changes``).  As in the
paper, the linear model

    dP_k = alpha + beta * OFI_k + eps_k        (k: 10-second intervals)

is estimated separately in every half-hour window (180 intervals; ``gpuflow.features.flow.kyle_lambda``
gives the rolling OLS, read at each window's last interval), and the per-window R^2 are averaged.
The paper reports an average R^2 of 65% over 50 S&P 500 stocks (April 2010, TAQ quotes); see the
printed discussion for why these two stocks on one day need not match it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PAPER_R2 = 0.65
DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"


def analyse(message_file: Path, interval_s: int = 10, window_intervals: int = 180) -> dict:
    from gpuflow.features.book import mid
    from gpuflow.features.flow import kyle_lambda, mid_changes
    from gpuflow.features.ofi import ofi_bucketed
    from gpuflow.io.lobster import find_orderbook, read_lobster, read_lobster_orderbook

    ev = read_lobster(message_file).tables[0]
    ob = read_lobster_orderbook(find_orderbook(message_file))
    ts = ev.column("ts_local").to_numpy()
    frame = {"bid_price": ob.bid_price[:, :1], "bid_qty": ob.bid_size[:, :1],
             "ask_price": ob.ask_price[:, :1], "ask_qty": ob.ask_size[:, :1], "ts_local": ts}
    step = interval_s * 10**9
    # 09:30:00 .. 16:00:00 New York on the file's date, from the first message's local time
    open_ns = int(ts[0] // step * step)
    open_ns -= open_ns % (1800 * 10**9)  # align to the half hour (09:30)
    grid = np.arange(open_ns, open_ns + 23_400 * 10**9 + 1, step, dtype=np.int64)
    ofi = np.asarray(ofi_bucketed(frame, grid, 1, backend="cpu"))[:, 0].astype(np.float64)
    mid_px = np.asarray(mid(frame, backend="cpu"))  # in LOBSTER ticks of $0.0001
    dmid = np.asarray(mid_changes(mid_px, grid, ts_local=ts, backend="cpu")) / 100.0  # -> ticks of $0.01
    x = ofi[1:]  # OFI of the bucket (grid[k], grid[k+1]] goes with the mid change over it
    y = dmid
    est = kyle_lambda(y, x, window_intervals, backend="cpu")
    ends = np.arange(window_intervals - 1, y.size, window_intervals)
    r2 = np.asarray(est.r2)[ends]
    beta = np.asarray(est.slope)[ends]
    tstat = np.asarray(est.t_stat)[ends]
    ok = np.isfinite(r2)
    # pooled regression over the whole day (same estimator, one window; the first interval has no
    # quote at 09:30:00.000, so its mid change is undefined and it is left out)
    day = kyle_lambda(y[1:], x[1:], y.size - 1, backend="cpu")
    return {"file": message_file.name, "messages": int(ev.num_rows), "intervals": int(y.size),
            "windows": int(ok.sum()), "mean_r2": float(np.mean(r2[ok])), "median_r2": float(np.median(r2[ok])),
            "min_r2": float(np.min(r2[ok])), "max_r2": float(np.max(r2[ok])),
            "mean_beta_ticks_per_share": float(np.mean(beta[ok])), "mean_t": float(np.mean(tstat[ok])),
            "day_beta": float(np.asarray(day.slope)[-1]), "day_t": float(np.asarray(day.t_stat)[-1]),
            "day_r2": float(np.asarray(day.r2)[-1]),
            "windows_detail": [{"end_interval": int(e), "beta": float(b), "t": float(t), "r2": float(r)}
                               for e, b, t, r in zip(ends, beta, tstat, r2)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    files = sorted(Path(args.data).glob("*_message_1.csv*"))
    if not files:
        print(f"no LOBSTER level-1 message files under {args.data}", file=sys.stderr)
        return 1
    rows = [analyse(f) for f in files]
    print(f"{'stock/file':52s} {'windows':>7s} {'mean R2':>8s} {'median':>7s} {'beta (ticks/share)':>19s} "
          f"{'mean t':>7s} {'day R2':>7s}")
    for r in rows:
        print(f"{r['file']:52s} {r['windows']:7d} {r['mean_r2']:8.3f} {r['median_r2']:7.3f} "
              f"{r['mean_beta_ticks_per_share']:19.3e} {r['mean_t']:7.1f} {r['day_r2']:7.3f}")
    print(f"Cont, Kukanov & Stoikov (2014), 50 US stocks, 10 s intervals, half-hour windows: average R2 = "
          f"{PAPER_R2:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
