"""Throughput of the zero-intelligence event generator (gpuflow.synthetic), rows per second.

    python experiments/bench/bench_synthetic.py --events 1e7 --modes l2,l3 --chunk 0,1e6

For each mode and chunk size it times ``generate_arrays(events)`` (chunk 0: one call, one
allocation of the whole output) or a :class:`~gpuflow.synthetic.ZIGenerator` taking
``chunk`` rows at a time (bounded memory), after one small warm-up call that leaves the JIT
compilation out.  Wall and process CPU time are both reported: on a shared machine the CPU
time is the steadier number.  The core runs on one CPU thread; no GPU is involved.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _versions() -> dict:
    import numba
    import pyarrow

    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "pyarrow": pyarrow.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def run(events: int, mode: str, chunk: int, seed: int) -> dict:
    from gpuflow.synthetic import ZIGenerator, generate_arrays

    generate_arrays(10_000, seed=seed, mode=mode)  # JIT warm-up (and numba cache load)
    t, c = time.perf_counter(), time.process_time()
    if chunk <= 0:
        cols = generate_arrays(events, seed=seed, mode=mode)
        lo, hi = int(cols["price"][1:].min()), int(cols["price"][1:].max())
    else:
        g = ZIGenerator(seed=seed, mode=mode)
        done, lo, hi = 0, None, None
        while done < events:
            cols = g.take_arrays(min(chunk, events - done))
            done += len(cols["seq"])
            px = cols["price"][cols["kind"] != 9]  # skip the CLEAR row
            lo = int(px.min()) if lo is None else min(lo, int(px.min()))
            hi = int(px.max()) if hi is None else max(hi, int(px.max()))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"mode": mode, "events": events, "chunk": chunk, "wall_s": wall, "cpu_s": cpu,
            "rows_per_s_wall": events / wall, "rows_per_s_cpu": events / cpu, "price_range_ticks": hi - lo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=float, default=1e7)
    ap.add_argument("--modes", default="l2,l3")
    ap.add_argument("--chunk", default="0,1e6", help="comma list; 0 = one generate_arrays call")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    res = {"versions": _versions(), "runs": []}
    print(json.dumps(res["versions"]))
    for mode in args.modes.split(","):
        for chunk in (int(float(c)) for c in args.chunk.split(",")):
            r = run(int(args.events), mode, chunk, args.seed)
            res["runs"].append(r)
            print(f"{mode} chunk={chunk:>10,}: {r['rows_per_s_wall'] / 1e6:6.1f} M rows/s wall, "
                  f"{r['rows_per_s_cpu'] / 1e6:6.1f} M rows/s cpu ({r['wall_s']:.2f} s; price range "
                  f"{r['price_range_ticks']} ticks)", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
