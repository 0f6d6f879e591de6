"""Ingest speed of a raw Binance recording: gpuflow's reader against hftbacktest's converter.

    python experiments/bench/bench_ingest.py [--path FILE.gz] [--repeat 5] [--json]

In one run, on the same file, it times

(a) ``hftbacktest.data.utils.binancefutures.convert(path, output_filename=None,
    combined_stream=True, buffer_size=...)`` (its Python line loop plus its jitted
    latency and order correction), and
(b) ``gpuflow.io.binance.read_binance(path)`` (inflate, byte scan, Arrow tables), with
    the time of each stage and, separately, inflate alone with zlib and with ISA-L,

each after one warm-up call (JIT compile / cache load), best of ``--repeat``; wall and
process CPU time are both reported (on a shared machine CPU time is the steadier
number).  Then it checks that both produce the same depth and trade events:
hftbacktest writes an event twice (an exchange-only and a local-only copy) when its
exchange and local orders disagree, so only its rows flagged ``EXCH_EVENT`` are kept
(each source row is there exactly once); it also shifts local timestamps by the
smallest feed latency, so local times are compared after removing one constant.
Prices and sizes are compared in ticks and lots (``round(px / tick)``).

The default file is the shared USD-M BTCUSDT recording (``../shared/data`` next to the
repository, or ``$GPUFLOW_SHARED_DATA``).  ``--json`` prints one JSON object as the
last line.  No GPU is involved.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _default_path() -> Path:
    env = os.environ.get("GPUFLOW_SHARED_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    if not base.is_dir() and (REPO / "shared" / "data").is_dir():
        base = REPO / "shared" / "data"
    return base / "binance" / "usdm" / "btcusdt_20240808.gz"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpu": model, "cores": os.cpu_count(), "loadavg_1m_at_start": round(load[0], 2),
            "python": platform.python_version(), "numpy": np.__version__, "numba": _version("numba"),
            "pyarrow": _version("pyarrow"), "hftbacktest": _version("hftbacktest"), "isal": _version("isal"),
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence stdout at the file-descriptor level (hftbacktest prints from Python and from numba)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best wall s, best CPU s, last result) over ``repeat`` calls after one warm-up call."""
    out = fn()
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), out


def _count_lines(path: Path) -> int:
    import gzip

    with gzip.open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _sorted_keys(*cols: np.ndarray) -> np.ndarray:
    """Rows of ``cols`` (int64) sorted lexicographically: a canonical form of the multiset."""
    m = np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=1)
    order = np.lexsort(tuple(m[:, k] for k in range(m.shape[1] - 1, -1, -1)))
    return m[order]


def compare(hbt: np.ndarray, table: Any) -> dict[str, Any]:
    """Compare hftbacktest's converted rows with gpuflow's events table; returns counts and verdicts."""
    from hftbacktest.types import (
        BUY_EVENT,
        DEPTH_CLEAR_EVENT,
        DEPTH_EVENT,
        DEPTH_SNAPSHOT_EVENT,
        EXCH_EVENT,
        LOCAL_EVENT,
        SELL_EVENT,
        TRADE_EVENT,
    )

    from gpuflow.schema import (
        KIND_BBO,
        KIND_CLEAR,
        KIND_DIFF,
        KIND_SET,
        KIND_SNAPSHOT,
        KIND_TRADE,
        instrument_of,
    )

    inst = instrument_of(table)
    tick, lot = float(Decimal(inst.tick_size)), float(Decimal(inst.lot_size))
    ev = hbt["ev"].astype(np.uint64)
    exch = (ev & np.uint64(EXCH_EVENT)) != 0
    local = (ev & np.uint64(LOCAL_EVENT)) != 0
    kind = (ev & np.uint64(0xFF)).astype(np.int64)
    side = np.where((ev & np.uint64(BUY_EVENT)) != 0, 1, np.where((ev & np.uint64(SELL_EVENT)) != 0, -1, 0))
    px = np.rint(hbt["px"] / tick).astype(np.int64)
    qty = np.rint(hbt["qty"] / lot).astype(np.int64)
    c = {name: table.column(name).to_numpy() for name in ("ts_exch", "ts_local", "kind", "side", "price", "qty")}
    res: dict[str, Any] = {
        "hbt_rows": len(hbt), "hbt_rows_exch_and_local": int((exch & local).sum()),
        "hbt_rows_exch_only": int((exch & ~local).sum()), "hbt_rows_local_only": int((local & ~exch).sum()),
        "gpuflow_rows": int(table.num_rows),
        "gpuflow_diff_markers": int((c["kind"] == KIND_DIFF).sum()),
        "gpuflow_bbo_rows": int((c["kind"] == KIND_BBO).sum()),
    }
    h = exch  # every source row exactly once
    hd = h & (kind == DEPTH_EVENT)
    ht = h & (kind == TRADE_EVENT)
    hs = h & (kind == DEPTH_SNAPSHOT_EVENT)
    hc = h & (kind == DEPTH_CLEAR_EVENT)
    gd = c["kind"] == KIND_SET
    gt = c["kind"] == KIND_TRADE
    gs = c["kind"] == KIND_SNAPSHOT
    gc = c["kind"] == KIND_CLEAR
    # hftbacktest adds one constant to every local timestamp (minus the smallest feed latency)
    shift = int(hbt["local_ts"][hd | ht].min()) - int(c["ts_local"][gd | gt].min())
    res["hbt_local_ts_shift_ns"] = shift
    hloc = hbt["local_ts"].astype(np.int64) - shift
    # depth: same (local ts, side, price, qty) multiset; exchange time is T there and E here
    a = _sorted_keys(hloc[hd], side[hd], px[hd], qty[hd], hbt["exch_ts"][hd])
    b = _sorted_keys(c["ts_local"][gd], c["side"][gd], c["price"][gd], c["qty"][gd], c["ts_exch"][gd])
    res["depth_rows"] = {"hftbacktest": int(hd.sum()), "gpuflow": int(gd.sum())}
    res["depth_match"] = bool(a.shape == b.shape and np.array_equal(a[:, :4], b[:, :4]))
    if res["depth_match"]:
        e_minus_t = (b[:, 4] - a[:, 4]) // 1_000_000
        res["depth_E_minus_T_ms"] = [int(e_minus_t.min()), int(e_minus_t.max())]
    # trades: exchange time is T on both sides
    a = _sorted_keys(hloc[ht], hbt["exch_ts"][ht], side[ht], px[ht], qty[ht])
    b = _sorted_keys(c["ts_local"][gt], c["ts_exch"][gt], c["side"][gt], c["price"][gt], c["qty"][gt])
    res["trade_rows"] = {"hftbacktest": int(ht.sum()), "gpuflow": int(gt.sum())}
    res["trade_match"] = bool(a.shape == b.shape and np.array_equal(a, b))
    # snapshot levels (hftbacktest: one clear per side "up to" the worst snapshot price; gpuflow: one CLEAR)
    a = _sorted_keys(hloc[hs], side[hs], px[hs], qty[hs])
    b = _sorted_keys(c["ts_local"][gs], c["side"][gs], c["price"][gs], c["qty"][gs])
    res["snapshot_rows"] = {"hftbacktest": int(hs.sum()), "gpuflow": int(gs.sum())}
    res["snapshot_match"] = bool(a.shape == b.shape and np.array_equal(a, b))
    res["clear_rows"] = {"hftbacktest": int(hc.sum()), "gpuflow": int(gc.sum())}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, default=_default_path(), help="Binance recording (.gz)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per tool after one warm-up (best of N)")
    ap.add_argument("--hbt-buffer", type=int, default=5_000_000,
                    help="hftbacktest convert buffer_size (rows preallocated; 5e6 as in ANCHORS.md)")
    ap.add_argument("--skip-hftbacktest", action="store_true", help="time gpuflow only")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)

    from gpuflow.io import binance as gb

    path: Path = args.path
    if not path.is_file():
        print(f"no such file: {path} (pass --path or set GPUFLOW_SHARED_DATA)", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"machine": _machine(), "file": str(path), "bytes_gz": path.stat().st_size,
                           "repeat": args.repeat}
    m = out["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, load {m['loadavg_1m_at_start']}; python {m['python']}, "
          f"numpy {m['numpy']}, numba {m['numba']}, pyarrow {m['pyarrow']}, hftbacktest {m['hftbacktest']}, "
          f"isal {m['isal']}; {m['date_utc']}")
    lines = _count_lines(path)
    raw = path.read_bytes()
    text = zlib.decompress(raw, 31)
    out.update(lines=lines, bytes_text=len(text))
    print(f"file: {path} ({len(raw):,} B gzip, {len(text):,} B text, {lines:,} lines); best of {args.repeat} "
          "after one warm-up call")

    # inflate alone
    z_wall, _, _ = _best(lambda: zlib.decompress(raw, 31), args.repeat)
    out["inflate_zlib_s"] = z_wall
    if gb._isal_zlib is not None:
        i_wall, _, _ = _best(lambda: gb._isal_zlib.decompress(raw, 31), args.repeat)
        out["inflate_isal_s"] = i_wall
        print(f"inflate alone: zlib {z_wall * 1e3:.1f} ms, isal {i_wall * 1e3:.1f} ms")
    else:
        print(f"inflate alone: zlib {z_wall * 1e3:.1f} ms (isal not installed)")

    # (b) gpuflow
    runs: list[dict[str, float]] = []

    def ours() -> Any:
        r = gb.read_binance(path, progress=False)
        runs.append(r.stats["timings_s"])
        return r

    g_wall, g_cpu, res = _best(ours, args.repeat)
    best_run = min(runs[1:], key=lambda t: t["total"])
    rows = res.stats["rows"]
    out["gpuflow"] = {"wall_s": g_wall, "cpu_s": g_cpu, "rows": rows, "lines_per_s": lines / g_wall,
                      "rows_per_s": rows / g_wall, "stages_s_best_run": best_run,
                      "scan_passes": res.stats["passes"], "inflater": res.stats["inflater"]}
    print(f"gpuflow read_binance: {g_wall * 1e3:7.1f} ms wall, {g_cpu * 1e3:7.1f} ms cpu; "
          f"{lines / g_wall / 1e6:6.2f} M lines/s, {rows / g_wall / 1e6:6.2f} M rows/s ({rows:,} rows)")
    print(f"  stages of the best run: inflate ({res.stats['inflater']}) {best_run['inflate'] * 1e3:.1f} ms, "
          f"scan ({res.stats['passes']} passes: 1 MiB head + full) {best_run['scan'] * 1e3:.1f} ms, "
          f"Arrow tables {best_run['build'] * 1e3:.1f} ms")

    # the bare scan: the jitted scanner on the inflated buffer, no inflate, no tables
    buf = np.frombuffer(text, dtype=np.uint8)
    state = gb._State()
    gb._run_scan(buf, buf.size, state, 1 << 62)
    gb._resolve(state, None, None, str(path), final=True)
    s_wall, s_cpu, run = _best(lambda: gb._run_scan(buf, buf.size, state, 1 << 62), args.repeat)
    out["gpuflow_bare_scan"] = {"wall_s": s_wall, "cpu_s": s_cpu, "rows": run.rows,
                                "bytes_per_s": len(text) / s_wall, "lines_per_s": lines / s_wall}
    print(f"  bare scan (one full pass on the inflated buffer): {s_wall * 1e3:.1f} ms, "
          f"{len(text) / s_wall / 1e9:.2f} GB/s, {lines / s_wall / 1e6:.2f} M lines/s")

    if not args.skip_hftbacktest:
        from hftbacktest.data.utils import binancefutures

        def theirs() -> np.ndarray:
            with _quiet():
                return binancefutures.convert(str(path), output_filename=None, combined_stream=True,
                                              buffer_size=args.hbt_buffer)

        h_wall, h_cpu, hbt = _best(theirs, args.repeat)
        out["hftbacktest"] = {"wall_s": h_wall, "cpu_s": h_cpu, "rows": len(hbt),
                              "lines_per_s": lines / h_wall, "rows_per_s": len(hbt) / h_wall}
        print(f"hftbacktest convert:  {h_wall * 1e3:7.1f} ms wall, {h_cpu * 1e3:7.1f} ms cpu; "
              f"{lines / h_wall / 1e6:6.2f} M lines/s, {len(hbt) / h_wall / 1e6:6.2f} M rows/s ({len(hbt):,} rows)")
        out["ratio_wall"] = h_wall / g_wall
        out["ratio_cpu"] = h_cpu / g_cpu
        print(f"ratio (hftbacktest / gpuflow): {h_wall / g_wall:.1f}x wall, {h_cpu / g_cpu:.1f}x cpu "
              f"(target >= 5x)")

        cmp = compare(hbt, res.tables[0])
        out["check"] = cmp
        same = cmp["depth_match"] and cmp["trade_match"] and cmp["snapshot_match"]
        out["same_events"] = same
        print(f"check: depth {cmp['depth_rows']} match={cmp['depth_match']}; trades {cmp['trade_rows']} "
              f"match={cmp['trade_match']}; snapshot levels {cmp['snapshot_rows']} match={cmp['snapshot_match']}")
        print(f"  hftbacktest rows {cmp['hbt_rows']:,} = {cmp['hbt_rows_exch_and_local']:,} exch+local "
              f"+ {cmp['hbt_rows_exch_only']:,} exch-only + {cmp['hbt_rows_local_only']:,} local-only copies; "
              "compared: the rows flagged EXCH_EVENT (each source row once)")
        print(f"  local timestamps: hftbacktest adds {cmp['hbt_local_ts_shift_ns']:,} ns to every one "
              "(minus the smallest feed latency); compared after removing that constant")
        if "depth_E_minus_T_ms" in cmp:
            lo, hi = cmp["depth_E_minus_T_ms"]
            print(f"  depth exchange time: gpuflow keeps E (event time), hftbacktest T (transaction time); "
                  f"E - T is {lo}..{hi} ms, so depth rows are matched on (local ts, side, price, qty)")
        print(f"  not in hftbacktest's output (by design): {cmp['gpuflow_diff_markers']:,} KIND_DIFF update-id "
              f"markers, {cmp['gpuflow_bbo_rows']:,} bookTicker rows (it drops bookTicker unless opt='t'); "
              f"clears: hftbacktest {cmp['clear_rows']['hftbacktest']} (one per side, 'up to' the worst "
              f"snapshot price), gpuflow {cmp['clear_rows']['gpuflow']} (whole book)")
        print("events identical: " + ("yes" if same else "NO"))
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
