"""GPU book rebuild + top-5 + OFI throughput vs the CPU twin and a plain streaming kernel.

Run on a machine with a CUDA GPU (prepared to run in one go on the device tool)::

    python experiments/bench/bench_book_gpu.py --events 1e9 --batch 1.25e8 --json-out results.json

Events: a seeded zero-intelligence L2 stream (gpuflow.synthetic, Cont-Stoikov-Talreja style) of
``--batch`` events, generated on the host and copied to the device once.  The rebuild processes it
``events / batch`` times in sequence, each batch starting from the previous batch's final book, so
the total number of events replayed is ``--events``.  A configuration written ``NAME@B`` (e.g.
``every64_ofi@4e8``) uses batches of ``B`` events instead (a prefix of one stream generated at the
largest batch size): more chunks per launch keep more of the GPU busy.  JIT compilation is excluded
(one warm-up on a small slice) and the device is synchronised before every clock read.  The CPU twin (sequential njit
replay) runs on the first ``--cpu-events`` events of the same stream on the same machine; its first
rows are compared with the GPU's for exact equality.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

import numpy as np


def _versions() -> dict:
    from gpuflow.backend import describe_machine

    return describe_machine()


def _regs(lay: str) -> int:
    """The thread replay's register cap of a layout token: ``"1021r128"`` -> 128 (no ``r``: 0, none)."""
    return int(lay.split("r", 1)[1]) if "r" in lay else 0


def _layout(lay: str) -> tuple:
    """``"1021"`` -> (interleaved ops, level-major books, row output mode, int32 level sizes); ``"w"`` /
    ``"w1"``: the warp replay (its own op order and row writes), with int32 level sizes for ``w1``.  A suffix
    ``rN`` (``"1021r128"``) caps the thread replay's registers at N (:func:`_regs`)."""
    lay = lay.split("r", 1)[0]
    if lay.startswith("w"):
        return (False, False, 0, lay[1:2] == "1")
    return (lay[0] == "1", lay[1] == "1", int(lay[2]) if len(lay) > 2 else 0, len(lay) > 3 and lay[3] == "1")


def _replay_kw(lay: str, warps: int | None = None) -> dict:
    """rebuild_book's replay options for a layout token."""
    return {"replay": "warp", "warps": warps} if lay.startswith("w") else {}


def _free_device_memory() -> None:
    """Return cupy's cached device memory (after a configuration ran out of it)."""
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001, S110 - best effort
        pass


def make_events(n: int, seed: int) -> tuple[dict, str]:
    """A ZI L2 stream from gpuflow.synthetic (host numpy arrays)."""
    from gpuflow.synthetic import generate_arrays

    cols = generate_arrays(n, seed=seed, mode="l2")
    keep = ("ts_local", "kind", "side", "price", "qty", "flags")
    return {k: np.ascontiguousarray(cols[k]) for k in keep}, "gpuflow.synthetic ZI (l2)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=float, default=1e9)
    ap.add_argument("--batch", type=float, default=1.25e8)
    ap.add_argument("--cpu-events", type=float, default=2e7)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--configs", default="every1_ofi,every64_ofi,every1_noofi")
    ap.add_argument("--chunks", default="auto", help="comma list of ops per chunk (thread replay), or auto")
    ap.add_argument("--layouts", default="100", help="comma list of GPU layouts: <interleaved ops><level-major rows>"
                    "[<every-event row output: 0 direct, 1 slot records + gather, 2 staged in shared memory>"
                    "[<int32 level sizes where they fit>]][r<register cap of the thread replay>]; w or w1: the warp "
                    "replay (w1: int32 level sizes)")
    ap.add_argument("--warps", default="auto", help="comma list of warp-replay groups (warps), or auto")
    ap.add_argument("--threads", default="64", help="comma list of replay threads per block")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stream-threads", type=int, default=132 * 2048 * 2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)

    from gpuflow.kernels.stream import STREAM_CHECKSUM

    from gpuflow import config
    from gpuflow.backend import get_backend
    from gpuflow.book import rebuild_book

    be = get_backend("gpu")
    res: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join([sys.executable, *sys.argv]), "versions": _versions()}
    batch = int(args.batch)
    cfg_batches = [int(float(c.split("@")[1])) if "@" in c else batch for c in args.configs.split(",")]
    n_gen = max([batch, *cfg_batches])
    t = time.perf_counter()
    host, source = make_events(n_gen, args.seed)
    res["generate_s"] = time.perf_counter() - t
    res["source"] = source
    res["batch_events"] = batch
    res["generated_events"] = n_gen
    pr = host["price"][host["kind"] == 1]
    res["price_range_ticks"] = int(pr.max() - pr.min()) if pr.size else 0
    print(f"generated {n_gen:,} events in {res['generate_s']:.1f}s; price range {res['price_range_ticks']} ticks",
          flush=True)
    t = time.perf_counter()
    dev = {k: be.to_device(v) for k, v in host.items()}
    be.synchronize()
    res["h2d_s"] = time.perf_counter() - t

    # ceiling: one streaming pass reading ts_local, price, qty (24 B/event) over the default batch
    full = dev
    dev = {k: v[:batch] for k, v in full.items()}
    out = be.zeros(1, np.int64)
    be.launch(STREAM_CHECKSUM, args.stream_threads, dev["ts_local"], dev["price"], dev["qty"], out)
    be.synchronize()
    reps = args.reps
    t = time.perf_counter()
    for _ in range(reps):
        be.launch(STREAM_CHECKSUM, args.stream_threads, dev["ts_local"], dev["price"], dev["qty"], out)
    be.synchronize()
    dt_s = (time.perf_counter() - t) / reps
    res["stream_ceiling_events_per_s"] = batch / dt_s
    res["stream_ceiling_tb_per_s"] = batch * 24 / dt_s / 1e12
    print(f"stream ceiling: {batch / dt_s:.3e} events/s ({batch * 24 / dt_s / 1e12:.2f} TB/s)", flush=True)

    small = {k: v[:100_000] for k, v in dev.items()}
    chunks = [None if c == "auto" else int(c) for c in args.chunks.split(",")]
    runs = []
    for cfg_name, cb in zip(args.configs.split(","), cfg_batches):
        cfg = cfg_name.split("@")[0]
        every = int(cfg.split("_")[0].replace("every", ""))
        ofi = cfg.endswith("_ofi")
        n_batches = max(1, int(round(args.events / cb)))
        data = {k: v[:cb] for k, v in full.items()}
        # the row-output mode (3rd layout digit) only matters when every event emits a row
        lays = [lo for lo in args.layouts.split(",") if every == 1 or len(lo) < 3 or lo[2] == "0"]
        warps = [None if x == "auto" else int(x) for x in args.warps.split(",")]
        # threads per block apply to the thread replay, warp counts to the warp replay
        # the warp replay sizes its chunks from its warp count (--warps), the thread replay from --chunks
        combos = [(None, lo, None, wp) if lo.startswith("w") else (c, lo, int(t), None)
                  for c in chunks for lo in lays for t in args.threads.split(",") for wp in warps]
        combos = list(dict.fromkeys(combos))
        for chunk, lay, tpb, wp in combos:
            layout = _layout(lay)
            rkw = _replay_kw(lay, wp)
            # the thread replay's register cap of this layout (rN), for its warm-up and timed runs
            with config.config_context(book_replay_max_registers=_regs(lay)):
                try:
                    rebuild_book(small, levels=args.levels, every=every, ofi=ofi, backend=be, chunk=chunk,
                                 layout=layout, threads=tpb, **rkw)  # JIT warm-up
                    be.synchronize()
                    init = None
                    phase_tot: dict = {}
                    t = time.perf_counter()
                    for b in range(n_batches):
                        f = rebuild_book(data, levels=args.levels, every=every, ofi=ofi, backend=be, chunk=chunk,
                                         init=init, profile=(b == 0), layout=layout, threads=tpb, **rkw)
                        init = f.final_book
                        if b == 0:
                            phase_tot = f.stats.get("phase_s", {})
                            st = {k: v for k, v in f.stats.items() if k != "phase_s"}
                        del f
                    be.synchronize()
                    el = time.perf_counter() - t
                except Exception as exc:  # noqa: BLE001 - e.g. out of device memory: record it, go on with the rest
                    _free_device_memory()
                    runs.append({"config": cfg_name, "batch_events": cb, "chunk": chunk, "layout": lay, "threads": tpb,
                                 "warps": wp, "error": f"{type(exc).__name__}: {exc}"[:500]})
                    print(f"{cfg_name} chunk={chunk} layout={lay} threads={tpb} warps={wp}: FAILED "
                          f"{type(exc).__name__}: {str(exc)[:300]}", flush=True)
                    continue
            r = {"config": cfg_name, "batch_events": cb, "batches": n_batches, "chunk": chunk, "layout": lay,
                 "threads": tpb, "warps": wp, "levels": args.levels, "every": every, "ofi": ofi,
                 "seconds": el, "events_per_s": cb * n_batches / el, "first_batch_phase_s": phase_tot,
                 "stats": {k: (list(v) if isinstance(v, tuple) else v) for k, v in st.items()}}
            runs.append(r)
            print(f"{cfg_name} chunk={chunk} layout={lay} threads={tpb} warps={wp}: {r['events_per_s']:.3e} events/s over "
                  f"{cb * n_batches:,} events; "
                  f"phases(first batch)={ {k: round(v, 4) for k, v in phase_tot.items()} }", flush=True)
    res["gpu_runs"] = runs
    from gpuflow.kernels import book as kb

    kstats = {}
    caps = sorted({_regs(lo) for lo in args.layouts.split(",")} | {0})
    pairs = [(f"replay{f'_r{r}' if r else ''}", kb.replay_pair(args.levels, registers=r)) for r in caps]
    pairs += [(f"replay_staged{f'_r{r}' if r else ''}", kb.replay_pair(args.levels, True, registers=r)) for r in caps]
    for name, pair in (*pairs, ("replay_warp", kb.warp_replay_pair(args.levels)), ("summarise", kb.SUMMARISE),
                       ("prepare", kb.PREPARE)):
        kstats[f"{name}.lto"] = str(getattr(pair.cuda, "targetoptions", {}).get("lto"))
        for what in ("get_regs_per_thread", "get_local_mem_per_thread", "get_shared_mem_per_block"):
            try:
                kstats[f"{name}.{what}"] = str(getattr(pair.cuda, what)())
            except Exception as exc:  # noqa: BLE001 - informative only
                kstats[f"{name}.{what}"] = f"n/a ({type(exc).__name__})"
    res["kernel_resources"] = kstats
    print("kernel resources:", kstats, flush=True)

    # CPU twin on the same machine, same stream prefix; exact equality of its rows with the GPU's
    n_cpu = int(min(args.cpu_events, batch))
    hsl = {k: v[:n_cpu] for k, v in host.items()}
    dsl = {k: v[:n_cpu] for k, v in dev.items()}
    rebuild_book({k: v[:10_000] for k, v in hsl.items()}, levels=args.levels, ofi=True, backend="cpu")
    t = time.perf_counter()
    cpu = rebuild_book(hsl, levels=args.levels, every=1, ofi=True, backend="cpu")
    cpu_s = time.perf_counter() - t
    res["cpu_twin_events"] = n_cpu
    res["cpu_twin_events_per_s"] = n_cpu / cpu_s
    same_by_layout = {}
    for lay in dict.fromkeys(["100", *args.layouts.split(",")]):  # the default layout first, then each measured
        try:
            with config.config_context(book_replay_max_registers=_regs(lay)):
                g = rebuild_book(dsl, levels=args.levels, every=1, ofi=True, backend=be, layout=_layout(lay),
                                 **_replay_kw(lay)).to_host()
        except Exception as exc:  # noqa: BLE001 - reported with the rest
            same_by_layout[lay] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        same_by_layout[lay] = all(np.array_equal(getattr(g, a), getattr(cpu, a))
                                  for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"))
        del g
    same = all(v is True for v in same_by_layout.values())
    res["gpu_equals_cpu_on_prefix"] = bool(same)
    res["gpu_equals_cpu_on_prefix_by_layout"] = same_by_layout
    main_run = max((r for r in runs if r["config"].split("@")[0] == "every1_ofi" and "error" not in r),
                   key=lambda r: r["events_per_s"])
    res["best_every1_ofi"] = {k: main_run.get(k) for k in ("chunk", "layout", "threads", "warps", "events_per_s")}
    res["speedup_vs_cpu_twin"] = main_run["events_per_s"] / res["cpu_twin_events_per_s"]
    res["fraction_of_stream_ceiling"] = main_run["events_per_s"] / res["stream_ceiling_events_per_s"]
    print(f"CPU twin: {res['cpu_twin_events_per_s']:.3e} events/s on {n_cpu:,} events; GPU==CPU: {same} "
          f"{same_by_layout}; "
          f"speedup {res['speedup_vs_cpu_twin']:.0f}x", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(res, fh, indent=2, default=str)
    print(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
