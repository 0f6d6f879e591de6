"""Equity metrics of a sweep's batch on the host: gpuflow's jitted pass against numpy vectorised over sets.

``gpuflow sweep`` computes every parameter set's metrics on the host after each batch; on a GPU a batch is tens of
thousands of sets (one wave of the sweep kernel), so this step is part of the sweep's end-to-end time.  The
reference is the numpy implementation gpuflow used until 2026-11-27 (vectorised over sets: a dozen passes over
(sets x samples) temporaries), kept here as the anchor; both give the same values (checked each run).

    python experiments/bench/bench_metrics.py --sets 105600 --samples 601 --repeat 3

Prints one JSON object (times are the best of ``--repeat``, after a first untimed call of each).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time

import numpy as np


def numpy_equity_metrics(eq: np.ndarray, ts: np.ndarray, t0: int, capital: float, ppy: float) -> dict:
    """The vectorised numpy version (gpuflow.backtest.metrics.equity_metrics before 2026-11-27)."""
    P, K = eq.shape
    ann = np.sqrt(ppy)
    e = np.concatenate([np.zeros((P, 1)), eq], axis=1)
    tt = np.concatenate([[np.int64(t0)], ts])
    r = np.diff(e, axis=1) / capital
    mean = r.mean(axis=1)
    vol = r.std(axis=1, ddof=1)
    down = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(vol != 0, mean / vol, np.nan) * ann
        sortino = np.where(down != 0, mean / down, np.nan) * ann
    peak = np.maximum.accumulate(e, axis=1)
    dd = peak - e
    idx = np.arange(K + 1)
    at_peak = dd == 0
    pidx = np.maximum.accumulate(np.where(at_peak, idx, 0), axis=1)
    rows = np.arange(P)
    trough = np.argmax(dd, axis=1)
    max_dd = dd[rows, trough]
    rec_mask = (idx[None, :] > trough[:, None]) & at_peak
    rec = np.where(rec_mask.any(axis=1), np.argmax(rec_mask, axis=1), K)
    dur = np.where(max_dd > 0, tt[rec] - tt[pidx[rows, trough]], 0).astype(np.int64)
    nxt = np.minimum(idx + 1, K)
    span = np.where(dd > 0, tt[nxt][None, :] - tt[pidx], 0)
    longest = span.max(axis=1).astype(np.int64)
    return {"mean_return": mean, "volatility": vol, "sharpe": sharpe, "sortino": sortino, "max_drawdown": max_dd,
            "max_drawdown_duration_ns": dur, "longest_drawdown_ns": longest}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", type=int, default=105_600)
    ap.add_argument("--samples", type=int, default=601)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numba

    from gpuflow.backtest.metrics import equity_metrics

    rng = np.random.default_rng(args.seed)
    # random-walk equity in whole cents, so that drawdowns recover exactly at old peaks now and then
    eq = np.cumsum(rng.integers(-100, 101, size=(args.sets, args.samples)), axis=1) / 100.0
    ts = np.arange(1, args.samples + 1, dtype=np.int64) * 10**9
    capital, ppy = 10_000.0, 365 * 86_400.0

    def best(f):
        f()
        times = []
        for _ in range(max(args.repeat, 1)):
            t = time.perf_counter()
            out = f()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_new, new = best(lambda: equity_metrics(eq, ts, 0, capital=capital, periods_per_year=ppy))
    t_ref, ref = best(lambda: numpy_equity_metrics(eq, ts, 0, capital, ppy))
    same = {}
    for k, v in ref.items():
        if v.dtype.kind == "f":
            same[k] = bool(np.allclose(new[k], v, rtol=1e-9, atol=1e-12, equal_nan=True))
        else:
            same[k] = bool(np.array_equal(new[k], v))
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}",
           "sets": args.sets, "samples": args.samples, "gpuflow_s": t_new, "numpy_reference_s": t_ref,
           "speedup": t_ref / t_new, "same_values": same}
    print(json.dumps(res))
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
