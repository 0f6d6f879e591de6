"""``gpuflow sweep`` end to end on one backend at several batch sizes: wall time and time by phase.

The same random search over the market-making space of ``bench_backtest_gpu.py`` (its engine settings, the USD-M
recording or a synthetic stream), run through :func:`gpuflow.backtest.runner.sweep` with each batch size of
``--batches`` (``default``: the runner's own choice), each ``--repeat`` times; prints one JSON object with the
best wall time per batch size and that run's ``phase_s``.

    python experiments/bench/bench_sweep_batches.py --sets 512 --batches default,8,16,32 --repeat 3 \\
        --market-cache shared/market_usdm.pkl.gz
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", type=int, default=512)
    ap.add_argument("--batches", default="default,8,16,32")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--source", choices=("binance", "synthetic"), default="binance")
    ap.add_argument("--market-cache", default=None)
    ap.add_argument("--synthetic-events", type=float, default=2e6)
    ap.add_argument("--decision-interval-ns", type=int, default=100_000_000)
    args = ap.parse_args(argv)

    import bench_backtest_gpu as bb

    from gpuflow.backend import get_backend
    from gpuflow.backtest import runner

    be = get_backend(args.backend)
    ns = argparse.Namespace(path=str(bb.BINANCE), market_cache=args.market_cache, max_events=0,
                            synthetic_events=int(args.synthetic_events), seed=7)
    market, desc = bb.load_market(args.source, ns)
    cfg = bb._config(market, args.decision_interval_ns)
    rc = bb.runner_config(cfg)
    with tempfile.TemporaryDirectory() as d:  # JIT
        runner.sweep(rc, market, out=d, trials=16, backend=be, warn=False)
    rows = []
    for spec in args.batches.split(","):
        bs = None if spec == "default" else int(spec)
        best = None
        for _ in range(max(args.repeat, 1)):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                rep = runner.sweep(rc, market, out=d, trials=args.sets, backend=be, warn=False, batch_size=bs)
                wall = time.perf_counter() - t
            if best is None or wall < best["wall_s"]:
                best = {"batch": spec, "batch_size": rep.batch_size, "batches": rep.batches, "wall_s": wall,
                        "phase_s": rep.phase_s}
        rows.append(best)
        print(f"  batch {spec} ({best['batch_size']} sets, {best['batches']} batches): {best['wall_s']:.2f} s, "
              f"by phase {best['phase_s']}", flush=True)
    print(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "command": " ".join([sys.executable, *sys.argv]), "cpus": os.cpu_count(), "backend": be.name,
                      "source": desc.get("source"), "sets": args.sets, "repeat": args.repeat, "runs": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
