"""One launch of a GPU kernel of interest, for Nsight Compute (``ncu``) to profile on the device.

    ncu --launch-count 2 -k regex:run_cuda python experiments/tools/profile_gpu.py sweep --variant t0s1,t128s1
    ncu --launch-count 3 -k regex:"prepare_cuda|summarise_cuda|replay" python experiments/tools/profile_gpu.py book

``sweep``: the market-making sweep engine (``bench_backtest_gpu.py``'s grid and settings) on a window of the
Binance USD-M recording (``--events``), one launch per variant of ``--variant`` (tTsS as in the bench,
comma-separated).  ``book``: the
rebuild of ``--events`` synthetic ZI L2 events with top-5 + OFI every ``--every`` events.  Nothing is
timed here (ncu replays the kernel); the script only makes the launch happen, then prints the kernel time
of each run for reference.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "bench"))


def sweep(args: argparse.Namespace) -> None:
    import bench_backtest_gpu as bb

    from gpuflow.backtest import run
    from gpuflow.backtest.strategies import get_strategy

    ns = argparse.Namespace(path=args.path or str(bb.BINANCE), max_events=args.events, synthetic_events=0, seed=7)
    market, _ = bb.load_market("binance", ns)
    cfg = bb._config(market, bb.SETTINGS["decision_interval_ns"])
    grid = bb.param_grid(args.sets, seed=7)
    mm = get_strategy("market_making")
    for v in bb._variants(args.variant):
        for rep in range(args.reps):
            with bb._variant(v):
                r = run(mm, grid, market, cfg, engine="sweep", backend="gpu", record_fills=False)
            print(f"sweep [{v}] {args.sets} sets x {market.n_events:,} events: kernel {r.seconds:.3f} s "
                  f"(run {rep})", flush=True)


def book(args: argparse.Namespace) -> None:
    import bench_book_gpu as bg

    from gpuflow.backend import get_backend
    from gpuflow.book import rebuild_book

    be = get_backend("gpu")
    host, _ = bg.make_events(int(args.events), 1)
    dev = {k: be.asarray(v) for k, v in host.items()}
    for rep in range(args.reps):
        t = time.perf_counter()
        f = rebuild_book(dev, levels=5, every=args.every, ofi=True, backend=be,
                         chunk=None if args.replay == "warp" else args.chunk, profile=True, replay=args.replay)
        be.synchronize()
        print(f"book every {args.every}: {time.perf_counter() - t:.3f} s, phases {f.stats.get('phase_s')}",
              flush=True)
        del f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("sweep", "book"))
    ap.add_argument("--events", type=float, default=0)
    ap.add_argument("--sets", type=int, default=4096)
    ap.add_argument("--variant", default="t0s1")
    ap.add_argument("--path", default=None)
    ap.add_argument("--every", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=4096, help="ops per chunk of the thread replay")
    ap.add_argument("--replay", choices=("thread", "warp"), default="thread",
                    help="book: the GPU replay design (warp: one warp per chunk, chunks from the device size)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    if args.what == "sweep":
        sweep(args)
    else:
        args.events = args.events or 2e7
        book(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
