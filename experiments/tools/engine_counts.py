"""Per-set work of the backtest engine, counted (not timed): a pure-Python run of the engine's cores.

The sweep kernel keeps each parameter set's order table, notice table, counters and action rows in
thread-local memory; on a GPU every read of them is a memory access that can miss L1 and L2 when many
sets run at once.  This tool runs one parameter set through the very functions the CPU and CUDA engines
compile (``gpuflow.kernels.backtest.simulate`` and the cores it calls, with the strategy's step bound as
``engine_pair`` binds it), in plain Python over arrays that count their reads and writes, and checks that
its counters equal the compiled exact engine's run of the same set (so the counts are of the real path)::

    python experiments/tools/engine_counts.py                         # market making, USD-M recording
    python experiments/tools/engine_counts.py --sets 0,1,2 --json
    python experiments/tools/engine_counts.py --synthetic 20000       # a synthetic ZI market instead
    GPUFLOW_BACKTEST_SKIP_BLOCK=4 GPUFLOW_BACKTEST_SKIP_LEVELS=3 python experiments/tools/engine_counts.py
                                                                      # skip blocks of 4, 16 and 64 events
    python experiments/tools/engine_counts.py --warp 1500             # the 32 sets of one warp of a 100,000-set
                                                                      # sweep, and the events the warp walks

Reported per set: reads and writes of each per-set array (by array and by engine function), the walked
events (reads of the receive times by ``simulate``: the events a set did not pass over in a quiet block),
the block checks (reads of the block summaries' first column; also by level of summaries), and the hot
footprint: how many distinct per-set values (8 bytes each) take 95 % of the accesses (and in which arrays they
are), and what that is for a warp (32 sets: a warp's access to one local value touches 256 bytes) and for
100,000 sets.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "bench"))

#: the engine's per-set arrays (thread-local on a GPU), in the order of ``simulate``'s arguments
LOCAL = ("ordv", "lv", "acct", "seen", "pend", "cnt", "sst", "acts", "cur", "mid2")


class Counted(np.ndarray):
    """An array that counts element reads and writes into ``log[(name, 'r'|'w', index, function)]``."""

    name: str = ""
    log: collections.Counter | None = None

    def _note(self, rw: str, key: Any) -> None:
        if self.log is not None:
            self.log[(self.name, rw, repr(key), sys._getframe(2).f_code.co_name)] += 1

    def __getitem__(self, key: Any) -> Any:
        self._note("r", key)
        return np.ndarray.__getitem__(self.view(np.ndarray), key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._note("w", key)
        np.ndarray.__setitem__(self.view(np.ndarray), key, value)


def counted(a: np.ndarray, name: str, log: collections.Counter) -> Counted:
    c = np.array(a).view(Counted)
    c.name = name
    c.log = log
    return c


def python_engine(strategy: Any) -> dict[str, Any]:
    """The engine's cores as plain Python functions sharing one namespace, bound as ``engine_pair`` binds
    them for the CPU (the CPU's votes, no event tiles, the strategy's step and cores)."""
    import gpuflow.kernels.backtest as kb

    g = dict(kb.__dict__)
    g.update(warp_all=kb.warp_all_cpu, warp_any=kb.warp_all_cpu, ev_tile=kb.ev_tile_none,
             STATE_SIZE=max(int(getattr(strategy, "STATE_SIZE", 1)), 1), ACTION_ROWS=kb.action_rows(strategy))
    sg = dict(strategy.step.__globals__)
    for name, f in list(kb.__dict__.items()):
        if isinstance(f, types.FunctionType) and f.__module__ == kb.__name__:
            g[name] = types.FunctionType(f.__code__, g, name, f.__defaults__, f.__closure__)
    for c in getattr(strategy, "CORES", ()):
        sg[c.__name__] = types.FunctionType(c.__code__, sg, c.__name__, c.__defaults__, c.__closure__)
    g["strategy_step"] = types.FunctionType(strategy.step.__code__, sg, "strategy_step", strategy.step.__defaults__,
                                            strategy.step.__closure__)
    return g


def capture_engine_args(strategy: Any, params: np.ndarray, market: Any, cfg: Any) -> tuple:
    """Run the compiled exact engine on ``params`` and return the arguments it launched its kernel with."""
    from gpuflow import backend as gb
    from gpuflow.backtest import run

    seen: dict[str, tuple] = {}
    orig = gb.Backend.launch

    def launch(self: Any, pair: Any, n: int, *args: Any, threads: int | None = None) -> None:
        if pair.name.startswith("backtest"):
            seen["args"] = args
        orig(self, pair, n, *args, threads=threads)

    gb.Backend.launch = launch
    try:
        run(strategy, params, market, cfg, engine="exact", record_fills=False)
    finally:
        gb.Backend.launch = orig
    return seen["args"]


def count_set(g: dict[str, Any], args: tuple, p: int) -> dict[str, Any]:
    """Run set ``p`` of the captured launch through the Python engine with counting arrays."""
    import gpuflow.kernels.backtest as kb

    (ts, tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params, cfgv, n_inst, fills, eqs, out_cnt,
     out_acct, out_sst, blk) = args
    log: collections.Counter = collections.Counter()
    size = g["STATE_SIZE"]
    shapes = {"ordv": ((kb.MAX_ORDERS, kb.NCOL), np.int64), "lv": ((kb.MAX_ORDERS, kb.NCOL), np.int64),
              "acct": ((kb.MAX_INSTRUMENTS, kb.NACC), np.int64), "seen": (kb.MAX_INSTRUMENTS, np.int64),
              "pend": ((kb.PEND_ROWS, 5), np.int64), "cnt": (kb.NCNT, np.int64), "sst": (size, np.float64),
              "acts": ((kb.MAX_ACTIONS, 6), np.int64), "cur": (kb.MAX_INSTRUMENTS, np.int64),
              "mid2": (kb.MAX_INSTRUMENTS, np.int64)}
    loc = {n: counted(np.zeros(*shapes[n]), n, log) for n in LOCAL}
    o_cnt, o_acct, o_sst = np.zeros_like(out_cnt), np.zeros_like(out_acct), np.zeros_like(out_sst)
    t0 = time.perf_counter()
    g["simulate"](p, counted(ts, "ts", log), tx, ev, vst, ev_row, price, qty, bp, bq, ap, aq, nlev, sig, params,
                  cfgv, n_inst, *(loc[n] for n in LOCAL), fills, np.zeros_like(eqs), o_cnt, o_acct, o_sst,
                  np.zeros((1, kb.NTL), np.int64), ts.size, counted(blk, "blk", log), g["ACTION_ROWS"],
                  max(int(cfgv[kb.C_SKIP_LEVELS]), 1))
    wall = time.perf_counter() - t0
    if not (np.array_equal(o_cnt[p], out_cnt[p]) and np.array_equal(o_acct[p], out_acct[p])):
        msg = f"set {p}: the Python run's counters differ from the compiled engine's ({o_cnt[p]} vs {out_cnt[p]})"
        raise SystemExit(msg)
    levels = int(cfgv[kb.C_SKIP_LEVELS]) if cfgv[kb.C_SKIP] else 0
    starts = [0, int(cfgv[kb.C_BOFF1]), int(cfgv[kb.C_BOFF2])][:levels]
    return summarise(log, p, wall, o_cnt[p], int(ts.size), starts)


def summarise(log: collections.Counter, p: int, wall: float, cnt: np.ndarray, n_events: int,
              level_starts: list[int] | None = None) -> dict[str, Any]:
    """Counts of one set's run; ``level_starts``: the first summary row of each level of block summaries (the
    block checks are also counted by level)."""
    import bisect

    import gpuflow.kernels.backtest as kb

    starts = level_starts or [0]
    checks_by_level = [0] * len(starts)

    by_array: collections.Counter = collections.Counter()
    by_fn: collections.Counter = collections.Counter()
    per_value: collections.Counter = collections.Counter()
    walked = blocks = 0
    walked_at = []
    for (name, rw, key, fn), n in log.items():
        if name == "ts":
            if rw == "r" and fn == "simulate":
                walked += n
                walked_at.append(int(re.search(r"\d+", key.replace("np.int64", "")).group()))
            continue
        if name == "blk":
            if rw == "r" and key.endswith(", 0)"):
                blocks += n
                row = int(re.match(r"\((?:np\.int64\()?(\d+)", key).group(1))  # key: "(np.int64(k), 0)" or "(k, 0)"
                checks_by_level[bisect.bisect_right(starts, row) - 1] += n
            continue
        by_array[f"{name}.{rw}"] += n
        by_fn[f"{name}.{rw}.{fn}"] += n
        per_value[(name, key)] += n
    total = sum(by_array.values())
    acc = 0
    hot_by_array: collections.Counter = collections.Counter()  # which arrays the hot values live in
    for (name, _), n in per_value.most_common():
        if acc >= 0.95 * total:
            break
        acc += n
        hot_by_array[name] += 1
    hot = sum(hot_by_array.values())
    return {"set": p, "events": n_events, "walked_events": walked, "block_checks": blocks,
            "block_checks_by_level": checks_by_level,
            "decisions": int(cnt[kb.N_DECISIONS]), "orders": int(cnt[kb.N_ORDERS]), "cancels": int(cnt[kb.N_CANCELS]),
            "fills": int(cnt[kb.N_FILLS]), "slots_used": int(cnt[kb.N_SLOTS]),
            "local_accesses": total, "local_reads": sum(v for k, v in by_array.items() if k.endswith(".r")),
            "by_array": dict(by_array.most_common()), "by_function": dict(by_fn.most_common(20)),
            "distinct_values": len(per_value), "hot_values_95pct": hot,
            "hot_values_by_array": dict(hot_by_array.most_common()), "hot_kb_per_warp": hot * 256 / 1024,
            "hot_mb_at_100000_sets": hot * 256 * (100_000 / 32) / 1e6, "python_s": round(wall, 2),
            "_walked_at": np.unique(np.asarray(walked_at, np.int64))}


def warp_summary(out: list[dict[str, Any]]) -> dict[str, Any]:
    """What a warp of these sets walks on a GPU, where it passes a block over only when all its sets can: the
    union of the sets' walked events, against its longest set's walk (each set's walk is its own: a set that
    walks an event it could have passed over changes nothing)."""
    walks = [r["_walked_at"] for r in out]
    union = np.unique(np.concatenate(walks)).size if walks else 0
    longest = max((w.size for w in walks), default=0)
    return {"sets": len(out), "union_walked_events": int(union), "longest_set_walk": int(longest),
            "mean_set_walk": float(np.mean([w.size for w in walks])) if walks else 0.0,
            "union_over_longest": round(union / longest, 3) if longest else None,
            "block_checks_mean": float(np.mean([r["block_checks"] for r in out])) if out else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="0", help="comma list of rows of the bench's parameter grid")
    ap.add_argument("--synthetic", type=int, default=0, help="a synthetic ZI L2 market of this many events instead "
                                                            "of the USD-M recording")
    ap.add_argument("--market-cache", default=None, help="the bench's pickle of the prepared recording")
    ap.add_argument("--warp", type=int, default=None,
                    help="the 32 sets of this warp of a GPU sweep of the bench's first --grid-sets sets (sorted as "
                         "the sweep sorts them) instead of --sets, and the events the warp walks (their union)")
    ap.add_argument("--grid-sets", type=int, default=100_000, help="the sweep's sets for --warp")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import bench_backtest_gpu as bb

    from gpuflow.backtest import prepare_market
    from gpuflow.backtest.strategies import get_strategy

    if args.synthetic:
        from gpuflow.synthetic import generate

        market = prepare_market(generate(args.synthetic, seed=7, mode="l2"), levels=5, backend="cpu")
    else:
        ns = argparse.Namespace(market_cache=args.market_cache, max_events=0, path=str(bb.BINANCE))
        market, _ = bb.load_market("binance", ns)
    strategy = get_strategy("market_making")  # the bench's strategy and parameter grid
    if args.warp is not None:  # the warp's sets: the sweep's lexicographic order over the parameters
        grid = bb.param_grid(args.grid_sets, seed=7)
        rows = [int(r) for r in np.lexsort(grid.T[::-1])[32 * args.warp: 32 * args.warp + 32]]
        if not rows:
            msg = f"--warp {args.warp}: a sweep of {args.grid_sets:,} sets has {-(-args.grid_sets // 32):,} warps"
            raise SystemExit(msg)
        params = grid[rows]
    else:
        rows = [int(s) for s in args.sets.split(",")]
        params = bb.param_grid(max(rows) + 1, seed=7)[rows]
    # 8 sets or more: the engine skips quiet blocks by default (its CPU setting), as in the bench's CPU reference;
    # the launch's first rows are the sets asked for, padded with the first one
    reps = np.concatenate([params, np.repeat(params[:1], max(0, 8 - len(rows)), axis=0)])
    launch = capture_engine_args(strategy, reps, market, bb._config(market, bb.SETTINGS["decision_interval_ns"]))
    g = python_engine(strategy)
    out = [count_set(g, launch, i) for i in range(len(rows))]
    for r, row in zip(out, rows):
        r["grid_row"] = row
    warp = warp_summary(out) if args.warp is not None else None
    for r in out:
        del r["_walked_at"]
    if args.json:
        print(json.dumps(out if warp is None else {"warp": {"index": args.warp, **warp}, "sets": out}, indent=1))
    else:
        if warp is not None:
            print(f"warp {args.warp} of {args.grid_sets:,} sorted sets: walks {warp['union_walked_events']:,} events "
                  f"(the union of its sets' walks), {warp['union_over_longest']}x its longest set's "
                  f"{warp['longest_set_walk']:,}; {warp['block_checks_mean']:,.0f} block checks per set")
        for r in out:
            print(f"set {r['grid_row']}: {r['walked_events']:,} of {r['events']:,} events walked, "
                  f"{r['block_checks']:,} block checks (by level, finest first: "
                  f"{', '.join(f'{c:,}' for c in r['block_checks_by_level'])}), "
                  f"{r['decisions']:,} decisions, {r['orders']:,} orders, "
                  f"{r['cancels']:,} cancels, {r['fills']:,} fills, {r['slots_used']} order slots used")
            print(f"  per-set (thread-local) accesses: {r['local_accesses']:,} ({r['local_reads']:,} reads); "
                  f"{r['hot_values_95pct']} values take 95 % of them: {r['hot_kb_per_warp']:.0f} KB per warp, "
                  f"{r['hot_mb_at_100000_sets']:.0f} MB at 100,000 sets")
            print("  by array:", ", ".join(f"{k} {v:,}" for k, v in r["by_array"].items()))
            print("  by function:", ", ".join(f"{k} {v:,}" for k, v in list(r["by_function"].items())[:10]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
