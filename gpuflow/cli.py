"""The ``gpuflow`` command line: argparse over library functions (no logic of its own).

Every command accepts ``--json``: the last line of output is then one JSON
object for scripts.  Errors print a one-line message to stderr and exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from gpuflow import config
from gpuflow.errors import GpuflowError

__all__ = ["main", "build_parser"]


def _progress(iterable: Any, desc: str, total: int | None = None) -> Any:
    if not config.get_option("progress"):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="file", file=sys.stderr, leave=False)


def _print(args: argparse.Namespace, text: str) -> None:
    if text:
        print(text, flush=True)


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, default=_default, sort_keys=True), flush=True)


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


# ------------------------------------------------------------------------------------------ commands
def cmd_ingest(args: argparse.Namespace) -> int:
    from gpuflow.ingest import ingest_file
    from gpuflow.store import Store

    store = Store(args.store)
    results = []
    failed = 0
    for path in _progress(args.paths, f"ingest {args.format}", len(args.paths)):
        try:
            r = ingest_file(args.format, path, store, do_clean=not args.no_clean,
                            errors="raise" if args.strict else "quarantine", replace=args.replace)
        except GpuflowError as exc:
            failed += 1
            results.append({"source": os.fspath(path), "error": str(exc)})
            print(f"error: {exc}", file=sys.stderr)
            continue
        results.append(r)
        if not args.json:
            if r["skipped"]:
                _print(args, f"{path}: already in the store (same bytes and options): skipped")
            else:
                _print(args, f"{path}: {r['events']:,} events written, {r['quarantined']:,} rows quarantined, "
                             f"{len(r['partitions'])} partition(s): {', '.join(r['partitions'])}")
            if r.get("orderbook"):
                _print(args, f"  LOBSTER orderbook file beside it: {r['orderbook']} "
                             f"(check with: gpuflow verify lobster {path})")
    out = {"command": "ingest", "store": os.fspath(args.store), "files": results,
           "events": sum(r.get("events", 0) for r in results),
           "quarantined": sum(r.get("quarantined", 0) for r in results), "failed": failed}
    if args.json:
        _emit_json(out)
    else:
        _print(args, f"total: {out['events']:,} events, {out['quarantined']:,} quarantined, {failed} failed")
    return 1 if failed else 0


def cmd_clean(args: argparse.Namespace) -> int:
    from gpuflow.clean import write_quarantine
    from gpuflow.ingest import clean_file

    reports = []
    for path in _progress(args.paths, f"clean {args.format}", len(args.paths)):
        res = clean_file(args.format, path, errors="raise" if args.strict else "quarantine")
        reports.append(res.report.to_dict())
        if args.report and not args.json:
            _print(args, res.report.to_table())
        if args.quarantine:
            q = args.quarantine if len(args.paths) == 1 else f"{args.quarantine}.{len(reports) - 1}"
            write_quarantine(res, q)
            if not args.json:
                _print(args, f"quarantine: {res.quarantine.num_rows} row(s) -> {q}")
        elif not args.report and not args.json:
            _print(args, f"{path}: kept {res.report.rows_kept:,} rows, quarantined {res.report.rows_quarantined:,}")
    if args.json:
        _emit_json({"command": "clean", "reports": reports})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from gpuflow.store import Store

    store = Store(args.store)
    store.manifest(must_exist=True)  # a clear StoreError when the folder holds no store
    info = store.info()
    parts = store.partitions()
    if args.json:
        _emit_json({"command": "info", "store": os.fspath(args.store), "instruments": info, "partitions": parts})
        return 0
    if not info:
        _print(args, f"{args.store}: empty store")
        return 0
    _print(args, f"{'venue':18s} {'symbol':10s} {'parts':>5s} {'events':>12s}  {'first (UTC)':29s}  "
                 f"{'last (UTC)':29s}  tick / lot")
    for e in info:
        _print(args, f"{e['venue']:18s} {e['symbol']:10s} {e['partitions']:5d} {e['events']:12,d}  "
                     f"{e['first']:29s}  {e['last']:29s}  {e['tick_size']} / {e['lot_size']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from gpuflow import verify

    if args.source == "lobster":
        if len(args.files) not in (1, 2):
            msg = "verify lobster takes MESSAGE_FILE [ORDERBOOK_FILE]"
            raise GpuflowError(msg)
        r = verify.verify_lobster(args.files[0], args.files[1] if len(args.files) == 2 else None)
        d = r.to_dict()
        text = (f"{r.message_file}: {r.rows:,} rows, {r.levels_checked:,} levels checked, "
                f"{r.levels_entered:,} entered from beyond level {r.levels}, {r.mismatched_rows} mismatched rows")
    else:
        r = verify.verify_binance(args.files, backend=args.backend)
        d = r.to_dict()
        text = (f"{r.recording}: {r.checked:,} bookTickers checked, {r.skipped:,} skipped (inside a diff's "
                f"range), {r.unsynced:,} unsynced, {r.mismatches} mismatches; {r.diffs_applied:,} diffs applied, "
                f"{r.gaps} gaps, {r.resyncs} resyncs")
    if args.json:
        _emit_json(d)
    else:
        _print(args, text)
        for m in d.get("first_mismatches", [])[:5]:
            _print(args, f"  mismatch: {m}")
    return 0 if r.ok else 1


def cmd_generate(args: argparse.Namespace) -> int:
    from gpuflow.store import Store
    from gpuflow.synthetic import generate

    t = generate(int(float(args.events)), seed=args.seed, mode=args.mode)
    store = Store(args.store)
    rep = store.ingest(t, f"synthetic:{args.mode}:{args.seed}:{t.num_rows}")
    out = {"command": "generate", "events": rep.events, "partitions": rep.partitions, "skipped": rep.skipped}
    if args.json:
        _emit_json(out)
    else:
        _print(args, f"{rep.events:,} synthetic {args.mode} events -> {', '.join(rep.partitions)}"
                     + (" (already stored)" if rep.skipped else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gpuflow.demo import run_demo

    root = args.store or tempfile.mkdtemp(prefix="gpuflow-demo-")
    t0 = time.perf_counter()
    summary = run_demo(root, echo=None if args.json else (lambda s: _print(args, s)))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        _emit_json(summary)
    return 0 if summary.get("ok") else 1


def _run_config(args: argparse.Namespace) -> Any:
    """The run configuration with the command line's data and parameter overrides applied."""
    from gpuflow.backtest.config import load_config

    cfg = load_config(args.config)
    overrides = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in args.param or [])
    if overrides:
        cfg = cfg.with_params(overrides)
    return cfg.with_data(args.data, format=args.format, symbol=args.symbol, venue=args.venue, start=args.start,
                         end=args.end)


def _say_warnings(args: argparse.Namespace, msgs: list[str]) -> None:
    for m in msgs:
        print(f"warning: {m}", file=sys.stderr, flush=True)


def cmd_backtest(args: argparse.Namespace) -> int:
    from gpuflow.backtest.runner import run_backtest

    cfg = _run_config(args)
    rep = run_backtest(cfg, engine=args.engine, on_bad_actions="raise" if args.strict else None, warn=False)
    _say_warnings(args, rep.warnings)
    if args.fills:
        import pyarrow.parquet as pq

        pq.write_table(rep.fills(), args.fills)
    if args.json:
        _emit_json(rep.to_dict())
    else:
        _print(args, rep.to_text())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from gpuflow.backtest.runner import sweep

    cfg = _run_config(args)
    out = args.out or f"sweep-{os.path.splitext(os.path.basename(args.config))[0]}"
    echo = None if args.json else (lambda b, t: print(f"batch {b}: {t.num_rows} sets written", file=sys.stderr,
                                                       flush=True))
    rep = sweep(cfg, out=out, search=args.search, trials=args.trials, batch_size=args.batch_size,
                resume=args.resume, ray=args.ray, engine=args.engine,
                on_bad_actions="raise" if args.strict else None, warn=False, on_batch=echo)
    _say_warnings(args, rep.warnings)
    if args.json:
        _emit_json(rep.to_dict())
    else:
        _print(args, rep.to_text())
    return 0


# ------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpuflow", description="GPU-first limit-order-book research framework")
    p.add_argument("--backend", choices=["cpu", "gpu"], default=None,
                   help="compute backend (default: GPU if present; env GPUFLOW_BACKEND)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="print one JSON object as the last line")
        sp.set_defaults(fn=fn)
        return sp

    fmts = ["lobster", "binance", "tardis", "databento"]
    sp = add("ingest", cmd_ingest, "normalise, clean and store raw files (idempotent, atomic)")
    sp.add_argument("format", choices=fmts)
    sp.add_argument("paths", nargs="+")
    sp.add_argument("--store", required=True, help="store root directory")
    sp.add_argument("--no-clean", action="store_true", help="store without running the cleaning rules")
    sp.add_argument("--strict", action="store_true", help="fail on the first bad row instead of quarantining it")
    sp.add_argument("--replace", action="store_true", help="re-ingest sources already stored")

    sp = add("clean", cmd_clean, "read and clean raw files; report what each rule found")
    sp.add_argument("format", choices=fmts)
    sp.add_argument("paths", nargs="+")
    sp.add_argument("--report", action="store_true", help="print the per-rule table")
    sp.add_argument("--quarantine", help="write rejected rows to this Parquet file")
    sp.add_argument("--strict", action="store_true")

    sp = add("info", cmd_info, "partitions, events and time range per symbol of a store")
    sp.add_argument("--store", required=True)

    sp = add("verify", cmd_verify, "check book reconstruction against an independent oracle")
    sp.add_argument("source", choices=["lobster", "binance"])
    sp.add_argument("files", nargs="+", help="lobster: MESSAGE_FILE [ORDERBOOK_FILE]; binance: RECORDING...")

    sp = add("generate", cmd_generate, "store a synthetic zero-intelligence order-book stream")
    sp.add_argument("events", help="number of events, e.g. 1e6")
    sp.add_argument("--store", required=True)
    sp.add_argument("--mode", choices=["l2", "l3"], default="l2")
    sp.add_argument("--seed", type=int, default=0)

    def add_run(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="YAML run configuration (see gpuflow.backtest.config)")
        sp.add_argument("--data", action="append", metavar="PATH",
                        help="raw file or gpuflow store folder (repeat for a second instrument); "
                             "default: the config's data")
        sp.add_argument("--format", choices=fmts, default=None, help="raw format (default: detected)")
        sp.add_argument("--symbol", default=None, help="instrument of a store or multi-instrument file")
        sp.add_argument("--venue", default=None)
        sp.add_argument("--start", default=None, help="first ts_local (ISO time UTC or int ns)")
        sp.add_argument("--end", default=None, help="end of the ts_local range (exclusive)")
        sp.add_argument("--param", action="append", metavar="NAME=VALUE", help="override a parameter")
        sp.add_argument("--strict", action="store_true",
                        help="fail on NaN decisions or malformed orders instead of warning")

    sp = add("backtest", cmd_backtest, "run one parameter set of a strategy; print its metrics and fills")
    add_run(sp)
    sp.add_argument("--engine", choices=["exact", "sweep"], default="exact",
                    help="exact: the CPU reference engine; sweep: the GPU sweep engine (CPU twin without a GPU)")
    sp.add_argument("--fills", metavar="PARQUET", default=None, help="write the fills to this Parquet file")

    sp = add("sweep", cmd_sweep, "evaluate a parameter space in batches; results appended to Parquet files")
    add_run(sp)
    sp.add_argument("--out", default=None, help="results folder (default: sweep-<config name>)")
    sp.add_argument("--search", choices=["grid", "random", "optuna"], default=None,
                    help="default: the config's sweep.search (grid)")
    sp.add_argument("--trials", type=int, default=None, help="parameter sets for random / optuna")
    sp.add_argument("--batch-size", type=int, default=None, help="parameter sets per engine launch and file")
    sp.add_argument("--resume", action="store_true", help="continue the sweep in --out (missing batches only)")
    sp.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="run batches as Ray tasks: a local Ray instance, or the cluster at ADDRESS "
                         "(give --ray after CONFIG, or as --ray=ADDRESS)")
    sp.add_argument("--engine", choices=["sweep", "exact"], default="sweep")

    sp = add("demo", cmd_demo, "ingest, clean, store and check the bundled sample (no network, no GPU)")
    sp.add_argument("--store", default=None, help="store root (default: a new temporary directory)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "backend", None):
        config.set_option("backend", args.backend)
    if args.no_progress or getattr(args, "json", False):
        config.set_option("progress", False)
    if not hasattr(args, "backend"):
        args.backend = None
    try:
        return int(args.fn(args))
    except GpuflowError as exc:
        print(f"gpuflow {args.command}: error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):
            _emit_json({"command": args.command, "error": str(exc), "type": type(exc).__name__})
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
