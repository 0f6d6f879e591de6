"""Backtests and parameter sweeps from run configurations: what ``gpuflow backtest`` and ``gpuflow sweep`` do.

:func:`run_backtest` runs one parameter set of a :class:`~gpuflow.backtest.config.RunConfig` with
the exact engine (or the sweep engine: same fills and PnL) and reports its metrics
(:func:`gpuflow.backtest.metrics.compute_metrics`) and fills.

:func:`sweep` evaluates many parameter sets in batches, one engine launch per batch (the GPU
sweep engine when a GPU is present, else its CPU twin on all cores), locally or as Ray tasks:

* ``grid``: the Cartesian product of the values of every swept parameter, in order (the last
  parameter of ``space`` varies fastest);
* ``random``: ``trials`` sets drawn with ``numpy.random.default_rng(seed)``: a value list is a
  uniform choice, a range uniform (log-uniform with ``log``; integers with ``int``);
* ``optuna``: an Optuna study (TPE sampler seeded with ``seed``) asks ``batch_size`` trials at a
  time, the batch runs in one launch, and each trial is told its ``objective`` metric (a
  non-finite value is a failed trial).

Results, one row per parameter set (``set_id``, ``batch``, the parameters, then the metrics),
go to ``OUT/batch-NNNNNN.parquet``, one file per batch, each written to a temporary file and
renamed, then recorded in ``OUT/manifest.json`` (also replaced atomically).  A sweep that stops
(an error, Ctrl-C, a lost machine) keeps every batch it finished; ``resume=True`` checks that the
configuration and data are the same as recorded and runs only the batches that are missing.  An
Optuna study is rebuilt from the recorded trials on resume, so it continues the search but does
not replay the exact sequence an uninterrupted run would have drawn.

Bad actions.  The engine counts, per parameter set, decisions where the strategy returned -1
(``N_NAN_ACTIONS``: no valid decision, e.g. a NaN input) and order actions it refused
(``N_BAD_ACTIONS``: size <= 0, side not +1/-1, instrument out of range, unknown code).  Neither
stops a run: a strategy whose signals start with a warm-up window legitimately skips those
decisions.  The runner therefore *warns* (:class:`StrategyWarning`, naming the strategy, the
counts, the parameter sets and the signals holding NaN) and records the counts in the report and
in every results row; with ``on_bad_actions="raise"`` (config ``checks.on_bad_actions``, CLI
``--strict``) it raises :class:`StrategyError` instead.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpuflow.backtest.config import Range, RunConfig, Values, load_data
from gpuflow.backtest.engine import BacktestResult, ConfigError, MarketData, equity_samples, param_matrix, run
from gpuflow.errors import GpuflowError

__all__ = [
    "CPU_SETS_PER_CORE",
    "FILL_BUFFER_BYTES",
    "GPU_MIN_FILLS",
    "GPU_RESULTS_FRACTION",
    "MANIFEST",
    "BacktestReport",
    "StrategyError",
    "StrategyWarning",
    "SweepReport",
    "check_actions",
    "evaluate_batch",
    "gpu_batch_plan",
    "load_results",
    "run_backtest",
    "sweep",
]

log = logging.getLogger(__name__)

#: the manifest of a sweep's output folder
MANIFEST = "manifest.json"
#: schema metadata key of a batch's time by phase, from its evaluation to the sweep's report (not written)
_PHASES = b"gpuflow.sweep.phase_s"
#: fills buffer per batch of a CPU sweep (bytes); fills beyond it per set are counted, not recorded.  Zeroed
#: host memory is mapped as it is written, so only the fills recorded take memory
FILL_BUFFER_BYTES = 2 << 30
#: parameter sets per core in a CPU sweep batch: the engine runs a batch's sets in parallel over the cores, and
#: sets of unequal cost even out over many per core, while each batch costs its own metrics, Parquet file and
#: manifest update.  512 sets of market making on the USD-M recording, 2 CPUs (2026-11-27, best of 3;
#: experiments/bench/bench_sweep_batches.py): 1.89 s in batches of 8 (4 per core, the default until then), 1.54 s
#: in batches of 16, 1.41 s in batches of 32
CPU_SETS_PER_CORE = 16
#: share of the smaller of the device's and the host's memory that one GPU batch's results may take
GPU_RESULTS_FRACTION = 0.25
#: fills recorded per set that the automatic GPU batch size keeps room for, at least
GPU_MIN_FILLS = 1024
_FILL_ROW_BYTES = 9 * 8
_MANIFEST_VERSION = 1


class StrategyError(GpuflowError, RuntimeError):
    """A strategy produced invalid decisions or orders (with ``on_bad_actions="raise"``)."""


class StrategyWarning(UserWarning):
    """A strategy produced invalid decisions or orders; the run went on without them."""


# ----------------------------------------------------------------------------------------- checks
def check_actions(result: BacktestResult, market: MarketData | None = None, *, policy: str = "warn",
                  set_offset: int = 0) -> list[str]:
    """Messages about NaN decisions and refused order actions of ``result``; raise or warn per ``policy``.

    Parameters
    ----------
    result : BacktestResult
    market : MarketData, optional
        Used to name the signals holding NaN values.
    policy : {"warn", "raise", "report"}
        ``warn``: :class:`StrategyWarning` per message; ``raise``: :class:`StrategyError` with all
        messages; ``report``: only return them.
    set_offset : int
        Added to parameter-set indices in messages (a sweep batch's first set id).

    Returns
    -------
    list of str
        Empty when every decision was valid and every action well formed.
    """
    if policy not in ("warn", "raise", "report"):
        msg = f"check_actions: policy must be 'warn', 'raise' or 'report', got {policy!r}"
        raise ConfigError(msg)
    msgs = _action_messages(result.strategy, np.asarray(result.counters), market, set_offset)
    _apply_policy(msgs, policy)
    return msgs


def _apply_policy(msgs: list[str], policy: str) -> None:
    if msgs and policy == "raise":
        raise StrategyError("; ".join(msgs))
    if policy == "warn":
        for m in msgs:
            warnings.warn(m, StrategyWarning, stacklevel=3)


def _action_messages(name: str, cnt: np.ndarray, market: MarketData | None, set_offset: int) -> list[str]:
    from gpuflow.kernels import backtest as kb

    msgs = []
    nan = cnt[:, kb.N_NAN_ACTIONS]
    if nan.any():
        sets = _sets_text(np.nonzero(nan)[0] + set_offset)
        dec = int(cnt[nan > 0, kb.N_DECISIONS].sum())
        hint = ""
        if market is not None and market.signal_names:
            bad = {n: int(np.isnan(market.signals[:, j]).sum()) for j, n in enumerate(market.signal_names)}
            bad = {k: v for k, v in bad.items() if v}
            if bad:
                hint = (" signals with NaN values: " + ", ".join(f"{k} ({v} of {market.n_events} events)"
                                                             for k, v in bad.items()) + ";")
        msgs.append(f"strategy {name!r}: {int(nan.sum())} of {dec} decisions returned no valid action "
                    f"(N_NAN_ACTIONS: the step returned -1, e.g. on a NaN input) in parameter set(s) {sets};{hint} "
                    "those decisions sent nothing; check the signal spec (warm-up windows) or the strategy")
    bad_act = cnt[:, kb.N_BAD_ACTIONS]
    if bad_act.any():
        sets = _sets_text(np.nonzero(bad_act)[0] + set_offset)
        msgs.append(f"strategy {name!r}: {int(bad_act.sum())} order action(s) refused as malformed "
                    f"(N_BAD_ACTIONS: size <= 0 lots, side not +1/-1, instrument out of range or an unknown "
                    f"action code) in parameter set(s) {sets}; no order was sent for them")
    return msgs


def _sets_text(idx: np.ndarray, limit: int = 8) -> str:
    s = ", ".join(str(int(i)) for i in idx[:limit])
    return s + (f", ... ({idx.size} sets)" if idx.size > limit else "")


# ----------------------------------------------------------------------------------------- backtest
@dataclass
class BacktestReport:
    """One parameter set's run: the engine result, its metrics and the checks' messages."""

    strategy: str
    params: dict[str, float]
    engine: str
    backend: str
    result: BacktestResult
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def n_fills(self) -> int:
        from gpuflow.kernels import backtest as kb

        return int(self.result.counters[0, kb.N_FILLS])

    def fills(self) -> Any:
        """The recorded fills as a pyarrow Table (event, ts, instrument, side, price_ticks, qty_lots, liquidity,
        queue_ahead_lots, order_id)."""
        import pyarrow as pa

        f = self.result.fills_of(0)
        names = ["event", "ts", "instrument", "side", "price_ticks", "qty_lots", "liquidity", "queue_ahead_lots",
                 "order_id"]
        return pa.table({n: np.ascontiguousarray(f[:, j]) for j, n in enumerate(names)})

    def to_dict(self) -> dict[str, Any]:
        from gpuflow.kernels import backtest as kb

        acct = self.result.account[0]
        return {"command": "backtest", "strategy": self.strategy, "params": self.params, "engine": self.engine,
                "backend": self.backend, "fills": self.n_fills, "metrics": self.metrics,
                "account": [{"instrument": f"{i.venue}/{i.symbol}", "position_lots": int(acct[m, 0]),
                             "cash_ticks_lots": int(acct[m, 1]), "fees_ppm_ticks_lots": int(acct[m, 2]) * 1_000_000 + int(acct[m, 5]),
                             "volume_lots": int(acct[m, 3])} for m, i in enumerate(self.result.instruments)],
                "counters": {n: int(self.result.counters[0, getattr(kb, n)]) for n in _COUNTERS},
                "seconds": round(float(self.result.seconds), 6), "warnings": list(self.warnings),
                "data": self.data}

    def to_text(self) -> str:
        d = self.to_dict()
        m = self.metrics
        lines = [(f"{self.strategy} on {d['data'].get('events', '?'):,} events "
                 f"({', '.join(a['instrument'] for a in d['account'])}), engine {self.engine} ({self.backend}), "
                 f"{self.result.seconds:.3f} s"),
                 "params: " + ", ".join(f"{k}={_num(v)}" for k, v in self.params.items()),
                 (f"fills: {self.n_fills:,} (maker {d['counters']['N_MAKER']:,}, taker {d['counters']['N_TAKER']:,}); "
                 f"orders {d['counters']['N_ORDERS']:,}, cancels {d['counters']['N_CANCELS']:,}, "
                 f"rejects {d['counters']['N_REJECTS']:,}, decisions {d['counters']['N_DECISIONS']:,}")]
        keys = [k for k in _HEADLINE if k in m]
        lines.append("metrics: " + ", ".join(f"{k}={_num(m[k])}" for k in keys))
        rest = [k for k in m if k not in _HEADLINE]
        if rest:
            lines.append("         " + ", ".join(f"{k}={_num(m[k])}" for k in rest))
        for a in d["account"]:
            lines.append(f"end position {a['instrument']}: {a['position_lots']:,} lots")
        return "\n".join(lines)


_COUNTERS = ("N_ORDERS", "N_CANCELS", "N_FILLS", "N_MAKER", "N_TAKER", "MAKER_LOTS", "TAKER_LOTS", "N_REJECTS",
             "N_FILLS_DROPPED", "N_UNFILLED_MARKET", "N_BAD_ACTIONS", "N_NAN_ACTIONS", "N_DECISIONS", "MAX_ABS_POS")
_HEADLINE = ("pnl", "pnl_gross", "fees", "sharpe", "sortino", "max_drawdown", "win_rate", "fill_ratio", "n_fills")


def _num(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if not math.isfinite(x):
            return str(x)
        return f"{int(x):,}" if x == int(x) and abs(x) < 1e15 else f"{x:.6g}"
    return str(v)


def _metrics_of(result: BacktestResult) -> Any:
    """The metrics table of a run (:func:`gpuflow.backtest.metrics.compute_metrics`)."""
    from gpuflow.backtest.metrics import compute_metrics

    return compute_metrics(result)


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _data_info(market: MarketData) -> dict[str, Any]:
    return {"events": market.n_events, "instruments": [f"{i.venue}/{i.symbol}" for i in market.instruments],
            "first_ts": int(market.ts[0]) if market.n_events else None,
            "last_ts": int(market.ts[-1]) if market.n_events else None, "signals": list(market.signal_names)}


def run_backtest(cfg: RunConfig, market: MarketData | None = None, *, data: Any = None, engine: str = "exact",
                 backend: Any = None, on_bad_actions: str | None = None, warn: bool = True) -> BacktestReport:
    """Run the configuration's parameter set once and compute its metrics.

    Parameters
    ----------
    cfg : RunConfig
    market : MarketData, optional
        Prepared data; default: :func:`gpuflow.backtest.config.load_data` of ``data`` (or the config's).
    data : path or list of paths, optional
        Raw files or store folders (one per instrument), replacing the config's data paths.
    engine : {"exact", "sweep"}
        ``exact``: the CPU reference engine; ``sweep``: the sweep engine (GPU, or its CPU twin), which
        gives the same fills and PnL.
    backend : str or Backend, optional
        Backend of the sweep engine (default: the ``backend`` option, else the GPU if present).
    on_bad_actions : {"warn", "raise"}, optional
        Default: the config's ``checks.on_bad_actions``.
    warn : bool
        Emit :class:`StrategyWarning` s (the messages are in the report either way).

    Returns
    -------
    BacktestReport

    Raises
    ------
    ConfigError
        Bad configuration or data (see :func:`~gpuflow.backtest.config.load_data`).
    StrategyError
        NaN decisions or malformed orders with ``on_bad_actions="raise"``.
    """
    if market is None:
        market = load_data(data, config=cfg)
    mod = cfg.strategy_module
    params = cfg.resolved_params(market.instruments)
    res = run(mod, params, market, cfg.engine, engine=engine, backend=backend)
    policy = on_bad_actions or cfg.on_bad_actions
    msgs = check_actions(res, market, policy="raise" if policy == "raise" else ("warn" if warn else "report"))
    mt = _metrics_of(res)
    metrics = {k: _scalar(v[0]) for k, v in mt.columns.items()}
    return BacktestReport(mod.NAME, params, engine, res.backend, res, metrics, msgs, _data_info(market))


# ----------------------------------------------------------------------------------------- sweep plans
def _grid_axes(space: Mapping[str, Values | Range], where: str) -> list[np.ndarray]:
    axes = []
    for k, s in space.items():
        if isinstance(s, Values):
            axes.append(np.asarray(s.values, np.float64))
        elif s.num is not None:
            a = np.geomspace(s.low, s.high, s.num) if s.log else np.linspace(s.low, s.high, s.num)
            if s.integer:
                a = np.unique(np.round(a))
            axes.append(a)
        else:
            msg = (f"{where}: space.{k} is a range ({s.low} .. {s.high}); a grid needs values (a list) or "
                   "num: (points on the range); or use --search random / optuna")
            raise ConfigError(msg)
    return axes


def _grid_rows(axes: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """Rows ``start .. stop-1`` of the Cartesian product of ``axes`` (last axis fastest), without building it."""
    idx = np.arange(start, stop, dtype=np.int64)
    out = np.empty((idx.size, len(axes)), np.float64)
    for j in range(len(axes) - 1, -1, -1):
        n = axes[j].size
        out[:, j] = axes[j][idx % n]
        idx //= n
    return out


def _random_rows(space: Mapping[str, Values | Range], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(space)), np.float64)
    for j, s in enumerate(space.values()):
        if isinstance(s, Values):
            vals = np.asarray(s.values, np.float64)
            out[:, j] = vals[rng.integers(0, vals.size, n)]
        elif s.integer and not s.log:
            out[:, j] = rng.integers(math.ceil(s.low), math.floor(s.high) + 1, n)
        elif s.log:
            x = np.exp(rng.uniform(math.log(s.low), math.log(s.high), n))
            out[:, j] = np.clip(np.round(x), math.ceil(s.low), math.floor(s.high)) if s.integer else x
        else:
            out[:, j] = rng.uniform(s.low, s.high, n)
    return out


def _full_rows(strategy: Any, base: Mapping[str, float], space_names: Sequence[str], rows: np.ndarray
               ) -> np.ndarray:
    """Parameter matrix in the strategy's order: the base set with the swept columns replaced."""
    names = list(strategy.PARAMS)
    pm = np.tile(np.array([base[k] for k in names], np.float64), (rows.shape[0], 1))
    for j, k in enumerate(space_names):
        pm[:, names.index(k)] = rows[:, j]
    return param_matrix(strategy, pm)


# ----------------------------------------------------------------------------------------- evaluation
def evaluate_batch(strategy_name: str, pm: np.ndarray, market: MarketData, engine_cfg: Any, *,
                   engine: str = "sweep", backend: Any = None, max_fills: int | None = None,
                   first_set: int = 0, batch: int = 0, threads: int | None = None) -> tuple[Any, np.ndarray]:
    """Run one batch of parameter sets and return (results table, counters).

    The table has one row per set: ``set_id`` (``first_set + i``), ``batch``, the parameters and the
    metrics.  This is also the body of a Ray task (everything it takes is picklable).
    """
    import dataclasses

    import pyarrow as pa

    from gpuflow.backtest.strategies import get_strategy

    if threads:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    mod = get_strategy(strategy_name)
    cfg = engine_cfg if max_fills is None else dataclasses.replace(engine_cfg, max_fills=max_fills)
    t0 = time.perf_counter()
    res = run(mod, pm, market, cfg, engine=engine, backend=backend, record_fills=cfg.max_fills > 0)
    t1 = time.perf_counter()
    t = _metrics_of(res).to_table()
    n = t.num_rows
    t = t.set_column(0, "set_id", pa.array(np.arange(first_set, first_set + n, dtype=np.int64)))
    t = t.add_column(1, "batch", pa.array(np.full(n, batch, np.int64)))
    meta = dict(t.schema.metadata or {})
    meta[b"gpuflow.sweep.backend"] = res.backend.encode()
    # where the batch's time went (taken off the table before it is written: see the sweep's phase_s)
    meta[_PHASES] = json.dumps({"engine": res.seconds, "engine_other": t1 - t0 - res.seconds,
                                "metrics": time.perf_counter() - t1}).encode()
    return t.replace_schema_metadata(meta), np.asarray(res.counters)


def _local_batches(jobs: Sequence[tuple[int, int, np.ndarray]], run_one: Callable[..., Any]
                   ) -> Iterator[tuple[int, int, np.ndarray, Any]]:
    for b, first, pm in jobs:
        yield b, first, pm, run_one(pm, first, b)


def _ray_batches(jobs: Sequence[tuple[int, int, np.ndarray]], market_ref: Any, kw: dict[str, Any],
                 max_in_flight: int) -> Iterator[tuple[int, int, np.ndarray, Any]]:
    import ray

    task = ray.remote(evaluate_batch)
    if kw.get("backend") == "gpu":
        task = task.options(num_gpus=1)
    queue = list(jobs)
    pending: dict[Any, tuple[int, int, np.ndarray]] = {}
    try:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                b, first, pm = queue.pop(0)
                ref = task.remote(kw["strategy"], pm, market_ref, kw["engine_cfg"], engine=kw["engine"],
                                  backend=kw["backend"], max_fills=kw["max_fills"], first_set=first, batch=b,
                                  threads=1)
                pending[ref] = (b, first, pm)
            done, _ = ray.wait(list(pending), num_returns=1)
            b, first, pm = pending.pop(done[0])
            yield b, first, pm, ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref)


@dataclass
class _Ray:
    """A Ray connection for one sweep: started here (and stopped after) unless one is already up."""

    address: str | None
    started: bool = False
    cpus: int = 1

    def __enter__(self) -> _Ray:  # noqa: PYI034
        try:
            import ray
        except ImportError as exc:
            msg = f"--ray needs the ray package, which is not importable ({exc}); pip install 'gpuflow[dist]'"
            raise GpuflowError(msg) from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
            if self.address not in (None, "", "local"):
                kw["address"] = self.address
            ray.init(**kw)
            self.started = True
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


# ----------------------------------------------------------------------------------------- output folder
def _fingerprint_market(market: MarketData) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (market.ts, market.inst, market.kind, market.side, market.price, market.qty, market.signals):
        h.update(np.ascontiguousarray(a).tobytes())
    for i in market.instruments:
        h.update(f"{i.venue}/{i.symbol}/{i.tick_size}/{i.lot_size}".encode())
    return h.hexdigest()


def _space_repr(space: Mapping[str, Values | Range]) -> dict[str, Any]:
    return {k: ({"values": [float(x) for x in s.values]} if isinstance(s, Values) else asdict(s))
            for k, s in space.items()}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _write_batch(out: Path, b: int, table: Any) -> str:
    import pyarrow.parquet as pq

    name = f"batch-{b:06d}.parquet"
    tmp = out / f".{name}.{os.getpid()}.tmp"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return name


class _Lock:
    """``OUT/.sweep.lock`` (pid inside): one sweep writes a folder at a time; a dead owner's lock is taken over."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".sweep.lock"

    def __enter__(self) -> _Lock:  # noqa: PYI034
        from gpuflow.store import _pid_alive

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    msg = (f"{self.path.parent}: another sweep (pid {pid}) is writing this folder; wait for it "
                           f"or choose another --out (remove {self.path} if that process is gone)")
                    raise ConfigError(msg) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        msg = f"{self.path}: cannot take the sweep lock"
        raise ConfigError(msg)

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def load_results(out: str | os.PathLike[str]) -> Any:
    """The results of a sweep folder (completed batches, in batch order) as one pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    mpath = out / MANIFEST
    if not mpath.is_file():
        msg = f"{out}: no {MANIFEST}; expected the --out folder of a gpuflow sweep"
        raise GpuflowError(msg)
    m = json.loads(mpath.read_text())
    parts = [pq.read_table(out / v["file"]) for _, v in sorted(m["completed"].items(), key=lambda kv: int(kv[0]))]
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="default")


# ----------------------------------------------------------------------------------------- sweep
@dataclass
class SweepReport:
    """What a sweep did; the rows are in ``out`` (:func:`load_results`).

    ``seconds`` is the wall time of the batches run here, including the engine's JIT compile on its
    first use in the process (and in each Ray worker).
    """

    out: str
    strategy: str
    search: str
    n_sets: int
    batch_size: int
    batches: int
    batches_run: int
    batches_skipped: int
    sets_run: int
    seconds: float
    engine: str
    backend: str
    objective: str
    direction: str
    best: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    ray: str | None = None
    #: seconds of the batches run here, summed by phase: ``engine`` (the engine's own timing of its run: the
    #: kernel on a GPU), ``engine_other`` (the rest of the engine call: allocations, copies, fills copied back),
    #: ``metrics`` (metrics and results table), ``write`` (Parquet file and manifest); with Ray, the workers' sums
    phase_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = "sweep"
        d["sets_per_second"] = round(self.sets_run / self.seconds, 3) if self.seconds > 0 else None
        return d

    def to_text(self) -> str:
        rate = f", {self.sets_run / self.seconds:,.1f} sets/s" if self.seconds > 0 and self.sets_run else ""
        lines = [(f"{self.strategy}: {self.search} sweep of {self.n_sets:,} parameter sets in {self.batches} "
                 f"batch(es) of up to {self.batch_size} -> {self.out}"),
                 f"ran {self.batches_run} batch(es) ({self.sets_run:,} sets) in {self.seconds:.2f} s{rate}, "
                 f"skipped {self.batches_skipped} already written; engine {self.engine} ({self.backend})"
                 + (f", Ray {self.ray}" if self.ray else "")]
        if self.best:
            params = ", ".join(f"{k}={_num(v)}" for k, v in self.best.get("params", {}).items())
            lines.append(f"best {self.objective} ({self.direction}): {_num(self.best.get(self.objective))} "
                         f"at set {self.best.get('set_id')}: {params}")
        return "\n".join(lines)


def gpu_batch_plan(n_samples: int, n_instruments: int, *, sms: int, threads: int, budget: int,
                   max_fills: int, batch: int = 0, registers: int | str = 0,
                   natural: int | None = None) -> tuple[int, int]:
    """(sets per batch, fills recorded per set) of a GPU sweep that holds ``budget`` bytes of results.

    The batch is one *wave* of the sweep kernel: as many blocks of ``threads`` sets as the ``sms`` SMs hold at
    once at the kernel's register cap (``registers``: the ``backtest_max_registers`` option; ``auto`` is
    :data:`~gpuflow.kernels.backtest.AUTO_REGISTER_CAP`, 0 (the option's default) the uncapped kernel's own:
    ``natural``, as compiled (:func:`gpuflow.backtest.engine.sweep_kernel_registers`: 144-148 for some
    strategies, where a wave planned at 128 would take two), else
    :data:`~gpuflow.kernels.backtest.NATURAL_REGISTERS`; :func:`gpuflow.backend.blocks_per_sm`), since each wave costs
    about one thread's walk over the events (H200, market making on the USD-M recording, uncapped, 2026-11-27:
    1,000 to 50,000 sets 0.31-0.33 s, 100,000 sets, about 1.5 waves, 0.45 s).  It shrinks, in whole blocks,
    until each set's equity samples (``n_samples`` x ``n_instruments`` x 3 int64) plus :data:`GPU_MIN_FILLS`
    fill records fit ``budget``; the fills buffer then takes what the equity samples leave, at most
    ``max_fills`` per set.  ``batch`` (> 0) fixes the batch size instead.
    """
    from gpuflow.backend import blocks_per_sm
    from gpuflow.kernels import backtest as kb

    regs = kb.AUTO_REGISTER_CAP if registers == "auto" else (int(registers) or natural or kb.NATURAL_REGISTERS)
    wave = int(sms) * blocks_per_sm(regs, threads) * threads
    eq = kb.NEQ * 8 * max(int(n_samples), 1) * max(int(n_instruments), 1)
    fit = int(budget) // (eq + GPU_MIN_FILLS * _FILL_ROW_BYTES)
    B = int(batch) if batch > 0 else max(threads, min(wave, fit // threads * threads))
    F = int(min(max_fills, max(int(budget) - B * eq, 0) // (B * _FILL_ROW_BYTES)))
    return B, F


def _gpu_budget() -> int:
    """Bytes of sweep results one GPU batch may hold: :data:`GPU_RESULTS_FRACTION` of the smaller of the
    device's and the host's total memory (the results are copied to the host).  Totals, not free memory, so
    that the same machine always records the same number of fills per set."""
    from gpuflow.backend import device_memory_total

    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(device_memory_total(), host) * GPU_RESULTS_FRACTION)


def _batch_plan(be: Any, market: MarketData, cfg: RunConfig, batch_size: int | None, base: Mapping[str, float]
                ) -> tuple[int, int]:
    """(sets per batch, fills recorded per set) of a sweep (see :func:`gpu_batch_plan` on a GPU; ``base``: a
    parameter set of the sweep, for compiling its kernel to learn its registers)."""
    B = int(batch_size or cfg.sweep.batch_size or 0)
    if be.name == "gpu":
        from gpuflow import config as _config
        from gpuflow.backend import device_sm_count
        from gpuflow.backtest.engine import sweep_kernel_registers

        regs = _config.get_option("backtest_max_registers")
        natural = None
        if not B and regs == 0:
            natural = sweep_kernel_registers(cfg.strategy_module, base, market, cfg.engine, be,
                                             record_fills=cfg.engine.max_fills > 0)
        return gpu_batch_plan(equity_samples(market, cfg.engine.sample_ns), len(market.instruments),
                              sms=device_sm_count(),
                              threads=int(_config.get_option("backtest_block_threads")), budget=_gpu_budget(),
                              max_fills=cfg.engine.max_fills, batch=B, registers=regs, natural=natural)
    B = B or max(8, CPU_SETS_PER_CORE * (os.cpu_count() or 1))
    return B, int(min(cfg.engine.max_fills, FILL_BUFFER_BYTES // (B * _FILL_ROW_BYTES)))


def sweep(cfg: RunConfig, market: MarketData | None = None, *, out: str | os.PathLike[str], data: Any = None,
          search: str | None = None, trials: int | None = None, batch_size: int | None = None,
          resume: bool = False, ray: str | bool | None = None, engine: str = "sweep", backend: Any = None,
          on_bad_actions: str | None = None, warn: bool = True,
          on_batch: Callable[[int, Any], None] | None = None) -> SweepReport:
    """Evaluate the configuration's parameter space in batches and append the results to ``out``.

    Parameters
    ----------
    cfg : RunConfig
        Its ``space`` (values or ranges per parameter), ``sweep`` settings and base ``params``.
    market : MarketData, optional
        Default: :func:`~gpuflow.backtest.config.load_data` of ``data`` (or the config's data).
    out : path
        Results folder (created): ``batch-NNNNNN.parquet`` files and ``manifest.json``.
    search : {"grid", "random", "optuna"}, optional
        Default: the config's ``sweep.search``.
    trials : int, optional
        Parameter sets for random / optuna (default: ``sweep.trials``).
    batch_size : int, optional
        Sets per engine launch and per file (default: ``sweep.batch_size``, else on a GPU one wave of the
        sweep kernel that fits a quarter of the device's memory (:func:`gpu_batch_plan`; 67,584 sets on a
        132-SM H100/H200 when the equity samples are small) and :data:`CPU_SETS_PER_CORE` sets per CPU on the
        CPU; on resume, the batch size recorded in ``out``).
    resume : bool
        Continue a sweep in ``out``: only the batches missing from its manifest run.  Without it, a
        folder that already holds results is an error.
    ray : str or bool, optional
        Run batches as Ray tasks: True or ``"local"`` starts a local Ray instance, an address
        (``"ray://host:10001"``, ``"auto"``) connects to a cluster; an instance already started in
        this process is used as it is.  Workers need gpuflow importable.
    engine : {"sweep", "exact"}
    backend : str or Backend, optional
        Backend of the sweep engine (default: the ``backend`` option, else the GPU if present).
    on_bad_actions : {"warn", "raise"}, optional
        Default: the config's ``checks.on_bad_actions`` (see the module docstring).
    warn : bool
        Emit :class:`StrategyWarning` s (they are in the report either way).
    on_batch : callable(batch, table), optional
        Called after each batch is written (progress; an exception raised here stops the sweep with
        the batches written so far kept).

    Returns
    -------
    SweepReport

    Raises
    ------
    ConfigError
        No space, a range in a grid, missing ``trials``, an unknown objective, a folder holding
        another sweep (or, on resume, a changed configuration or data: the message names what changed).
    StrategyError
        With ``on_bad_actions="raise"``, a batch with NaN decisions or malformed orders (not written).
    """
    from gpuflow.backend import Backend, get_backend

    where = cfg.source
    if market is None:
        market = load_data(data, config=cfg)
    mod = cfg.strategy_module
    search = search or cfg.sweep.search
    if search not in ("grid", "random", "optuna"):
        msg = f"sweep: search must be 'grid', 'random' or 'optuna', got {search!r}"
        raise ConfigError(msg)
    if engine not in ("exact", "sweep"):
        msg = f"sweep: engine must be 'exact' or 'sweep', got {engine!r}"
        raise ConfigError(msg)
    space = cfg.resolved_space(market.instruments)
    if not space:
        msg = f"{where}: no 'space' section: nothing to sweep (give values or a range per swept parameter)"
        raise ConfigError(msg)
    base = cfg.resolved_params(market.instruments)
    names = list(space)
    if search == "grid" and trials is not None:
        msg = (f"{where}: trials={trials} applies to random and optuna searches; a grid runs every combination "
               "of the space's values")
        raise ConfigError(msg)
    trials = trials if trials is not None else cfg.sweep.trials
    if search == "grid":
        axes = _grid_axes(space, where)
        n_sets = int(np.prod([a.size for a in axes]))
    else:
        if not trials:
            msg = f"{where}: search {search!r} needs the number of parameter sets: sweep.trials (or --trials N)"
            raise ConfigError(msg)
        n_sets = int(trials)
    if ray and ray is not True and not isinstance(ray, str):
        msg = f"sweep: ray must be True, 'local' or a cluster address, got {ray!r}"
        raise ConfigError(msg)
    ray_addr = None if not ray else ("local" if ray is True else str(ray))
    if engine == "exact":
        be = get_backend("cpu")
    else:
        be = backend if isinstance(backend, Backend) else get_backend(backend)
    # Ray workers resolve their own backend unless one was asked for (argument, option or GPUFLOW_BACKEND)
    from gpuflow import config as _config

    asked = backend if backend is not None else _config.get_option("backend")
    task_backend = asked.name if isinstance(asked, Backend) else asked
    if engine == "exact":
        task_backend = "cpu"
    outp = Path(out)
    if resume and not (batch_size or cfg.sweep.batch_size) and (outp / MANIFEST).is_file():
        # the batches already written fix the batch size (an automatic one depends on the machine)
        batch_size = json.loads((outp / MANIFEST).read_text()).get("fingerprint", {}).get("batch_size")
    # fills beyond max_fills per set are counted (fills_complete False), not recorded: bounded memory per batch
    B, max_fills = _batch_plan(be, market, cfg, batch_size, base)
    objective, direction = cfg.sweep.objective, cfg.sweep.direction
    outp.mkdir(parents=True, exist_ok=True)
    fp = {"version": _MANIFEST_VERSION, "strategy": mod.NAME, "search": search, "n_sets": n_sets, "batch_size": B,
          "seed": cfg.sweep.seed, "params": base, "space": _space_repr(space), "engine": engine,
          "engine_config": asdict(cfg.engine), "data": _fingerprint_market(market), "objective": objective,
          "direction": direction}
    fp = json.loads(json.dumps(fp, default=_jsonable))
    policy = on_bad_actions or cfg.on_bad_actions
    msgs: list[str] = []
    t_start = time.perf_counter()
    ran = skipped = sets_run = 0
    with _Lock(outp):
        mpath = outp / MANIFEST
        if mpath.is_file():
            manifest = json.loads(mpath.read_text())
            if manifest.get("completed") and not resume:
                msg = (f"{outp}: already holds a sweep ({len(manifest['completed'])} batch(es) written); pass "
                       "--resume (resume=True) to continue it, or choose another --out")
                raise ConfigError(msg)
            old = manifest.get("fingerprint", {})
            diff = [k for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k)]
            if manifest.get("completed") and diff:
                msg = (f"{outp}: cannot resume: the sweep recorded there differs in {diff} "
                       f"(recorded: {[old.get(k) for k in diff]!r:.400}); rerun with the same config and data, "
                       "or choose another --out")
                raise ConfigError(msg)
            manifest["fingerprint"] = fp
        else:
            manifest = {"fingerprint": fp, "completed": {}}
        manifest.setdefault("completed", {})
        _write_json(mpath, manifest)
        done = {int(k) for k in manifest["completed"]}

        def run_local(pm: np.ndarray, first: int, b: int) -> Any:
            return evaluate_batch(mod.NAME, pm, market, cfg.engine, engine=engine, backend=be, max_fills=max_fills,
                                  first_set=first, batch=b)

        phase_s: dict[str, float] = {}

        def record(b: int, first: int, table: Any, counters: np.ndarray) -> None:
            nonlocal ran, sets_run
            if objective not in table.column_names:
                msg = (f"{where}: sweep.objective {objective!r} is not a metric; choose one of "
                       f"{[c for c in table.column_names if c not in names and c not in ('set_id', 'batch')]}")
                raise ConfigError(msg)
            m = _action_messages(mod.NAME, counters, market, first)
            _apply_policy(m, "raise" if policy == "raise" else "report")
            msgs.extend(m)
            dropped = np.asarray(table.column("fills_dropped")) if "fills_dropped" in table.column_names else []
            if len(dropped) and (dropped > 0).any():
                msgs.append(f"batch {b}: {int((dropped > 0).sum())} parameter set(s) filled more than the {max_fills} "
                            f"fills recorded per set in a sweep (the results buffer / batch_size); their FIFO metrics "
                            "(win_rate, notional, fill_ratio, ...) are NaN (fills_complete is False); PnL, fees and "
                            "counters are exact; use a smaller batch_size to record more fills per set")
            tw = time.perf_counter()
            meta = dict(table.schema.metadata or {})
            for k, v in json.loads(meta.pop(_PHASES, b"{}")).items():
                phase_s[k] = phase_s.get(k, 0.0) + float(v)
            table = table.replace_schema_metadata(meta)
            name = _write_batch(outp, b, table)
            manifest["completed"][str(b)] = {"file": name, "rows": table.num_rows, "first_set": first}
            _write_json(mpath, manifest)
            phase_s["write"] = phase_s.get("write", 0.0) + time.perf_counter() - tw
            ran += 1
            sets_run += table.num_rows
            log.info("sweep %s: batch %d written (%d sets)", outp, b, table.num_rows)
            if on_batch is not None:
                on_batch(b, table)

        ray_ctx = _Ray(ray_addr) if ray_addr else None
        if ray_ctx is not None:
            ray_ctx.__enter__()
        try:
            if ray_ctx is not None:
                import ray as _ray

                kw = {"strategy": mod.NAME, "engine_cfg": cfg.engine, "engine": engine, "backend": task_backend,
                      "max_fills": max_fills}
                mref = _ray.put(market)

                def evaluate(jobs: list[tuple[int, int, np.ndarray]]) -> Iterator[Any]:
                    return _ray_batches(jobs, mref, kw, max(1, ray_ctx.cpus))
            else:
                def evaluate(jobs: list[tuple[int, int, np.ndarray]]) -> Iterator[Any]:
                    return _local_batches(jobs, run_local)

            if search in ("grid", "random"):
                n_b = -(-n_sets // B)
                rand = _random_rows(space, n_sets, cfg.sweep.seed) if search == "random" else None
                jobs = []
                for b in range(n_b):
                    if b in done:
                        skipped += 1
                        continue
                    lo, hi = b * B, min(n_sets, (b + 1) * B)
                    rows = _grid_rows(axes, lo, hi) if search == "grid" else rand[lo:hi]
                    jobs.append((b, lo, _full_rows(mod, base, names, rows)))
                for b, first, _pm, (table, counters) in evaluate(jobs):
                    record(b, first, table, counters)
                n_batches = n_b
            else:
                n_batches, sk = _optuna_sweep(cfg, mod, base, space, names, n_sets, B, outp, manifest, evaluate,
                                              record, objective, direction, ray_ctx.cpus if ray_ctx else 1)
                skipped += sk
        finally:
            if ray_ctx is not None:
                ray_ctx.__exit__(None, None, None)
    secs = time.perf_counter() - t_start
    if msgs and warn and policy != "raise":
        for m in msgs:
            warnings.warn(m, StrategyWarning, stacklevel=2)
    best = _best(outp, objective, direction, names)
    return SweepReport(os.fspath(outp), mod.NAME, search, n_sets, B, n_batches, ran, skipped, sets_run, secs, engine,
                       be.name, objective, direction, best, msgs, ray_addr,
                       {k: round(v, 4) for k, v in phase_s.items()})


def _best(out: Path, objective: str, direction: str, names: Sequence[str]) -> dict[str, Any] | None:
    t = load_results(out)
    if t.num_rows == 0 or objective not in t.column_names:
        return None
    v = t.column(objective).to_numpy(zero_copy_only=False).astype(np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return None
    i = int(np.nanargmax(np.where(ok, v, -np.inf)) if direction == "maximize"
            else np.nanargmin(np.where(ok, v, np.inf)))
    row = {c: _scalar(t.column(c)[i].as_py()) for c in t.column_names}
    row["params"] = {k: row.get(k, row.get(f"param_{k}")) for k in names}
    return row


def _optuna_sweep(cfg: RunConfig, mod: Any, base: Mapping[str, float], space: Mapping[str, Values | Range],
                  names: list[str], n_trials: int, B: int, outp: Path, manifest: dict[str, Any],
                  evaluate: Callable[[list[tuple[int, int, np.ndarray]]], Iterator[Any]],
                  record: Callable[[int, int, Any, np.ndarray], None], objective: str, direction: str,
                  per_round: int = 1) -> tuple[int, int]:
    """Ask-and-tell in batches; recorded trials are added to a fresh study on resume."""
    try:
        import optuna
    except ImportError as exc:
        msg = f"--search optuna needs the optuna package, which is not importable ({exc}); pip install 'gpuflow[ml]'"
        raise GpuflowError(msg) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, Any] = {}
    for k, s in space.items():
        if isinstance(s, Values):
            dists[k] = optuna.distributions.CategoricalDistribution([float(x) for x in s.values])
        elif s.integer:
            dists[k] = optuna.distributions.IntDistribution(math.ceil(s.low), math.floor(s.high), log=s.log)
        else:
            dists[k] = optuna.distributions.FloatDistribution(s.low, s.high, log=s.log)
    sampler = optuna.samplers.TPESampler(seed=cfg.sweep.seed)
    study = optuna.create_study(direction=direction, sampler=sampler)
    done = sorted(int(b) for b in manifest["completed"])
    n_done = 0
    if done:
        import pyarrow.parquet as pq

        recorded = []
        for b in done:
            t = pq.read_table(outp / manifest["completed"][str(b)]["file"])
            cols = {k: t.column(k if k in t.column_names else f"param_{k}").to_numpy() for k in names}
            vals = t.column(objective).to_numpy(zero_copy_only=False).astype(np.float64)
            for i in range(t.num_rows):
                params = {k: (int(cols[k][i]) if isinstance(dists[k], optuna.distributions.IntDistribution)
                              else float(cols[k][i])) for k in names}
                v = float(vals[i])
                state = optuna.trial.TrialState.COMPLETE if math.isfinite(v) else optuna.trial.TrialState.FAIL
                recorded.append(optuna.trial.create_trial(params=params, distributions=dists,
                                                          value=v if math.isfinite(v) else None, state=state))
            n_done += t.num_rows
        study.add_trials(recorded)
    b = (max(done) + 1) if done else 0
    while n_done < n_trials:
        jobs, asked = [], {}
        for _ in range(per_round):
            n = min(B, n_trials - n_done - sum(len(x) for x in asked.values()))
            if n <= 0:
                break
            trials = [study.ask(dists) for _ in range(n)]
            rows = np.array([[float(t.params[k]) for k in names] for t in trials], np.float64)
            first = n_done + sum(len(x) for x in asked.values())
            jobs.append((b, first, _full_rows(mod, base, names, rows)))
            asked[b] = trials
            b += 1
        for bb, first, _pm, (table, counters) in evaluate(jobs):
            vals = table.column(objective).to_numpy(zero_copy_only=False).astype(np.float64) \
                if objective in table.column_names else np.full(table.num_rows, np.nan)
            record(bb, first, table, counters)
            for t, v in zip(asked[bb], vals):
                if math.isfinite(float(v)):
                    study.tell(t, float(v))
                else:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
            n_done += table.num_rows
    return b, len(done)
