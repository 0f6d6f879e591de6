"""Run strategies over market data with the exact engine or the sweep engine.

:func:`prepare_market` turns events of one or two instruments into the arrays the
engine reads: the events merged in ``ts_local`` order, and each instrument's top-N
book after every one of its events (:func:`gpuflow.book.rebuild_book`; Binance
diff streams are first put in synced order by :mod:`gpuflow.sync`).  :func:`run`
then simulates one or many parameter sets of a strategy:

* ``engine="exact"``: the CPU engine (numba njit), the reference;
* ``engine="sweep"``: the same core on the GPU, one thread per parameter set
  (on the CPU twin when there is no GPU).  Both give identical fills and PnL.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from gpuflow import config as options
from gpuflow.backend import Backend, get_backend
from gpuflow.errors import GpuflowError, SchemaError
from gpuflow.schema import (KIND_ADD, KIND_CANCEL, KIND_CLEAR, KIND_DELETE, KIND_DIFF, KIND_EXECUTE, KIND_MODIFY,
                            KIND_SET, KIND_SNAPSHOT, Instrument, instrument_of)

__all__ = ["BacktestConfig", "MarketData", "BacktestResult", "ConfigError", "prepare_market", "run",
           "param_matrix"]


class ConfigError(GpuflowError, ValueError):
    """A backtest configuration or parameter set is invalid (names the field)."""


def _ppm(value: Any, name: str) -> int:
    """A fee in basis points (decimal) -> integer parts per million, exactly."""
    try:
        d = Decimal(str(value)) * 100
    except (InvalidOperation, ValueError):
        d = Decimal("NaN")
    if not d.is_finite() or d != d.to_integral_value():
        msg = f"BacktestConfig.{name}: expected basis points with at most 2 decimals (e.g. 2 or -0.25), got {value!r}"
        raise ConfigError(msg)
    return int(d)


@dataclass
class BacktestConfig:
    """Engine settings shared by every parameter set of a run.

    Attributes
    ----------
    entry_latency_ns, response_latency_ns : int
        Order entry (local -> exchange) and response (exchange -> local) latency.
    feed_latency_ns : int or "data"
        Exchange time of an event = ``ts_local - feed_latency_ns`` (ts_local clock); ``"data"``:
        each event's own latency ``ts_local - ts_exch`` less its minimum over the data (the clock
        offset between recorder and exchange; as hftbacktest's ``correct_local_timestamp``).
    maker_fee_bps, taker_fee_bps : float or str
        Fees in basis points of notional (negative: rebate), at most 2 decimals.
    queue_model : {"risk_averse", "probabilistic"}
    partial_fills : bool
        A queue passed partly fills partly (True) or the whole order (False, as hftbacktest's
        ``no_partial_fill_exchange``).
    decision_interval_ns : int
        Time between decisions (0: after every message).  A decision is taken after a complete
        message (the last event of a receive time), the first one at or after its decision time.
    decision_clock : {"grid", "event"}
        ``grid``: decision times on a fixed clock ``t0 + k * interval`` (as hftbacktest's
        ``elapse``); ``event``: ``interval`` after the previous decision.
    sample_ns : int
        Equity sampling interval (for Sharpe, drawdown and the equity curve).
    levels : int
        Book levels the engine and the strategies see.
    max_fills : int
        Fills recorded per parameter set (the rest are counted).
    """

    entry_latency_ns: int = 0
    response_latency_ns: int = 0
    feed_latency_ns: int = 0
    maker_fee_bps: Any = 0
    taker_fee_bps: Any = 0
    queue_model: str = "risk_averse"
    partial_fills: bool = True
    decision_interval_ns: int = 0
    decision_clock: str = "grid"
    sample_ns: int = 1_000_000_000
    levels: int = 5
    max_fills: int = 100_000

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "BacktestConfig":
        known = {f.name for f in fields(cls)}
        bad = [k for k in d if k not in known]
        if bad:
            msg = f"{where}: unknown engine setting(s) {bad}; known: {sorted(known)}"
            raise ConfigError(msg)
        return cls(**dict(d))

    def vector(self) -> np.ndarray:
        from gpuflow.kernels import backtest as kb

        if self.queue_model not in ("risk_averse", "probabilistic"):
            msg = f"BacktestConfig.queue_model: expected 'risk_averse' or 'probabilistic', got {self.queue_model!r}"
            raise ConfigError(msg)
        for name in ("entry_latency_ns", "response_latency_ns", "decision_interval_ns", "sample_ns"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0 or (name == "sample_ns" and v <= 0):
                msg = f"BacktestConfig.{name}: expected a non-negative integer of ns, got {v!r}"
                raise ConfigError(msg)
        if self.decision_clock not in ("grid", "event"):
            msg = f"BacktestConfig.decision_clock: expected 'grid' or 'event', got {self.decision_clock!r}"
            raise ConfigError(msg)
        c = np.zeros(kb.NCFG, np.int64)
        c[kb.C_ENTRY] = self.entry_latency_ns
        c[kb.C_RESP] = self.response_latency_ns
        if self.feed_latency_ns != "data":
            if not isinstance(self.feed_latency_ns, (int, np.integer)) or self.feed_latency_ns < 0:
                msg = (f"BacktestConfig.feed_latency_ns: expected a non-negative integer of ns or 'data', "
                       f"got {self.feed_latency_ns!r}")
                raise ConfigError(msg)
            c[kb.C_FEED] = self.feed_latency_ns
        c[kb.C_MAKER] = _ppm(self.maker_fee_bps, "maker_fee_bps")
        c[kb.C_TAKER] = _ppm(self.taker_fee_bps, "taker_fee_bps")
        c[kb.C_QMODEL] = 0 if self.queue_model == "risk_averse" else 1
        c[kb.C_PARTIAL] = 1 if self.partial_fills else 0
        c[kb.C_INTERVAL] = self.decision_interval_ns
        c[kb.C_SAMPLE] = self.sample_ns
        c[kb.C_GRID] = 1 if self.decision_clock == "grid" else 0
        return c


@dataclass
class MarketData:
    """Engine inputs (host numpy arrays; moved to the device by :func:`run` for the sweep engine)."""

    ts: np.ndarray
    ts_exch: np.ndarray
    inst: np.ndarray
    row: np.ndarray
    kind: np.ndarray
    side: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    bid_price: np.ndarray
    bid_qty: np.ndarray
    ask_price: np.ndarray
    ask_qty: np.ndarray
    instruments: list[Instrument]
    signals: np.ndarray
    signal_names: list[str] = field(default_factory=list)
    # init=False: dataclasses.replace (a window, new signals) gives the copy its own, empty caches
    _device: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _blocks: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _view: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    _ARRAYS = ("ts", "inst", "row", "kind", "side", "price", "qty", "bid_price", "bid_qty", "ask_price", "ask_qty",
               "signals")

    def on(self, be: Backend) -> dict[str, Any]:
        """The engine's input arrays on ``be``'s device, copied once and kept (sweep batches reuse them)."""
        if not be.uses_cuda:
            return {k: getattr(self, k) for k in self._ARRAYS}
        if be.name not in self._device:
            self._device[be.name] = {k: be.asarray(getattr(self, k)) for k in self._ARRAYS}
        return self._device[be.name]

    def view(self, be: Backend) -> tuple[Any, Any]:
        """The event view (``kernels.backtest.event_view``: per-event flags and book-row prices, and the current
        rows and mids after each event) on ``be``'s device: computed once per market, copied once and kept."""
        from gpuflow.kernels import backtest as kb

        if "cpu" not in self._view:
            self._view["cpu"] = kb.event_view(self.ts, self.inst, self.row, self.kind, self.side, self.bid_price,
                                              self.bid_qty, self.ask_price, self.ask_qty)
        if be.uses_cuda and be.name not in self._view:
            self._view[be.name] = tuple(be.asarray(a) for a in self._view["cpu"])
        return self._view[be.name if be.uses_cuda else "cpu"]

    def with_signals(self, signals: np.ndarray, names: Sequence[str]) -> MarketData:
        """A copy with other signals: new device arrays (the signals move with them), the same event view
        (it depends only on the events and book rows, which the copy shares)."""
        out = replace(self, signals=signals, signal_names=list(names))
        out._view.update(self._view)
        return out

    def blocks(self, tx: np.ndarray, key: Any, size: int, be: Backend, levels: int = 1) -> Any:
        """The summaries of blocks of ``size`` events at ``levels`` levels (``kernels.backtest.event_blocks``)
        for exchange times ``tx`` (``key`` names them: the feed-latency setting, the size and the levels), on
        ``be``'s device; computed once per key and kept."""
        from gpuflow.kernels import backtest as kb

        if key not in self._blocks:
            ev = self.view(get_backend("cpu"))[0]
            self._blocks[key] = {"cpu": kb.event_blocks(self.ts, tx, self.price, ev, block=size, levels=levels)}
        cache = self._blocks[key]
        if be.uses_cuda and be.name not in cache:
            cache[be.name] = be.asarray(cache["cpu"])
        return cache[be.name if be.uses_cuda else "cpu"]

    def window(self, start: int, n: int) -> MarketData:
        """Events ``start .. start + n`` (the book rows whole: events index into them), as a market of their own."""
        sl = slice(int(start), int(start) + int(n))
        return replace(self, ts=self.ts[sl], ts_exch=self.ts_exch[sl], inst=self.inst[sl], row=self.row[sl],
                       kind=self.kind[sl], side=self.side[sl], price=self.price[sl], qty=self.qty[sl],
                       signals=np.ascontiguousarray(self.signals[sl]))

    @property
    def n_events(self) -> int:
        return int(self.ts.size)

    @property
    def levels(self) -> int:
        return int(self.bid_price.shape[1])


def equity_samples(market: MarketData, sample_ns: int) -> int:
    """Equity samples per parameter set and instrument of a run over ``market`` (one every ``sample_ns`` from
    its first event, the last at or after its last event)."""
    span = int(market.ts[-1]) - int(market.ts[0]) if market.n_events else 0
    return span // int(sample_ns) + 1


def sweep_kernel_registers(strategy: Any, params: Any, market: MarketData, config: BacktestConfig, be: Backend, *,
                           record_fills: bool = True) -> int | None:
    """Registers per thread of the sweep kernel that :func:`run` launches for ``strategy`` on ``be`` (uncapped,
    the options' tile and block size), as the device's toolchain built it: compiled here, if no run has compiled
    it yet, by a run of the first set of ``params`` over the market's first events (a prefix of the sweep's own
    runs).  None without a real device (the CPU twin, the simulator).  Kernels differ by strategy (ptxas sm_90
    on 2026-11-27: 128 registers for most, 144-148 for grid_mm, twap, vwap and pov) and by toolchain (the
    device has built 2 more than ptxas here), and the registers set how many sets a wave of blocks holds
    (:func:`gpuflow.backtest.runner.gpu_batch_plan`)."""
    from gpuflow.backend import simulator_enabled
    from gpuflow.kernels import backtest as kb

    if not be.uses_cuda or simulator_enabled():
        return None
    # the sweep's kernel: its skip levels too (a compile-time constant of the kernel)
    bsize = options.get_option("backtest_skip_block")
    pair = kb.engine_pair(strategy, max_registers=0, skip_levels=kernel_skip_levels(bsize))
    regs = kb.compiled_registers(pair)
    if regs is None:
        # one set skips no blocks by default ('auto'): the block size is set so that the run compiles that kernel
        with options.config_context(backtest_max_registers=0,
                                    backtest_skip_block=kb.SKIP_BLOCK if bsize == "auto" else bsize):
            run(strategy, param_matrix(strategy, params)[:1], market.window(0, min(market.n_events, 64)), config,
                engine="sweep", backend=be, record_fills=record_fills)
        regs = kb.compiled_registers(pair)
    return regs


def kernel_skip_levels(block: int | str) -> int:
    """Levels of event-block summaries the engine kernels are compiled for when they skip blocks of ``block``
    events (the ``backtest_skip_block`` setting, ``auto`` included): the ``backtest_skip_levels`` option, and
    one when no blocks are skipped (``block`` 0), so that such runs share the one-level kernel."""
    return 1 if block == 0 else int(options.get_option("backtest_skip_levels"))


def _register_cap(n_sets: int, be: Backend) -> int:
    """The sweep kernel's register cap for ``n_sets`` (the ``backtest_max_registers`` option; ``auto``: see
    :func:`gpuflow.kernels.backtest.auto_register_cap`, on a real device only)."""
    from gpuflow.backend import device_sm_count, simulator_enabled
    from gpuflow.kernels import backtest as kb

    if not be.uses_cuda:
        return 0  # the CPU twin has no registers to cap (and a cap would only key a second CPU compile)
    cap = options.get_option("backtest_max_registers")
    if cap != "auto":
        return int(cap)
    if simulator_enabled():
        return 0
    return kb.auto_register_cap(n_sets, int(options.get_option("backtest_block_threads")), device_sm_count())


def prepare_market(tables: pa.Table | Sequence[pa.Table], *, levels: int = 5, signals: Any = None,
                   signal_names: Sequence[str] | None = None, sync: bool = True,
                   backend: str | Backend | None = "cpu") -> MarketData:
    """Merge one or two instruments' events and attach each one's book after every event.

    Parameters
    ----------
    tables : pyarrow.Table or list of them
        Schema events, one table per instrument (at most 2), each in ``ts_local`` order.
    levels : int
        Book levels to keep (the fill model walks at most these).
    signals : float array (n_events, S), optional
        Per-event signals (features, model predictions) aligned with the merged events.
    sync : bool
        Put Binance diff streams in synced order (snapshot + bridging diffs first).
    """
    from gpuflow.book import rebuild_book
    from gpuflow.kernels import backtest as kb
    from gpuflow.sync import synced_events

    tables = [tables] if isinstance(tables, pa.Table) else list(tables)
    if not 1 <= len(tables) <= kb.MAX_INSTRUMENTS:
        msg = f"prepare_market: expected 1 to {kb.MAX_INSTRUMENTS} instruments' tables, got {len(tables)}"
        raise ConfigError(msg)
    parts, books, insts = [], [], []
    offset = 0
    book_kinds = np.zeros(256, bool)
    book_kinds[[KIND_SET, KIND_SNAPSHOT, KIND_CLEAR, KIND_ADD, KIND_MODIFY, KIND_CANCEL, KIND_DELETE,
                KIND_EXECUTE]] = True
    for m, t in enumerate(tables):
        ins = instrument_of(t)
        if sync and (t.column("kind").to_numpy() == KIND_DIFF).any():
            t, _ = synced_events(t)
        f = rebuild_book(t, levels=levels, every=1, backend=backend).to_host()
        n = t.num_rows
        # synced order applies the diffs buffered before a snapshot after it: the book they give is
        # known at the snapshot's time at the earliest, so receive times are made non-decreasing
        ts = np.maximum.accumulate(t.column("ts_local").to_numpy())
        kind = t.column("kind").to_numpy()
        # an event that does not change the book points at the row of the last one that did (the
        # engine then skips its book checks)
        idx = np.arange(n, dtype=np.int64)
        last = np.maximum.accumulate(np.where(book_kinds[kind], idx, -1))
        parts.append({"ts": ts, "ts_exch": t.column("ts_exch").to_numpy(), "inst": np.full(n, m, np.int64), "row": np.where(last >= 0, last, idx) + offset,
                      "kind": kind, "side": t.column("side").to_numpy(), "price": t.column("price").to_numpy(),
                      "qty": t.column("qty").to_numpy()})
        books.append(f)
        insts.append(ins)
        offset += n
    if len(parts) == 1:
        cat = parts[0]
    else:
        cat = {k: np.concatenate([p_[k] for p_ in parts]) for k in parts[0]}
        order = np.argsort(cat["ts"], kind="stable")
        cat = {k: np.ascontiguousarray(v[order]) for k, v in cat.items()}
    n = cat["ts"].size
    if signals is None:
        sig = np.zeros((n, 1), np.float64)
        names: list[str] = []
    else:
        sig = np.asarray(signals, dtype=np.float64)
        if sig.ndim == 1:
            sig = sig[:, None]
        if sig.shape[0] != n:
            msg = f"prepare_market: signals have {sig.shape[0]} rows, expected one per merged event ({n})"
            raise SchemaError(msg)
        names = list(signal_names or [f"signal_{i}" for i in range(sig.shape[1])])
    def stack(name: str) -> np.ndarray:
        arrs = [getattr(b, name) for b in books]
        return arrs[0] if len(arrs) == 1 else np.concatenate(arrs)

    return MarketData(cat["ts"].astype(np.int64), cat["ts_exch"].astype(np.int64), cat["inst"], cat["row"], cat["kind"].astype(np.uint8),
                      cat["side"].astype(np.int8), cat["price"].astype(np.int64), cat["qty"].astype(np.int64),
                      stack("bid_price"), stack("bid_qty"), stack("ask_price"), stack("ask_qty"),
                      insts, np.ascontiguousarray(sig), names)


def param_matrix(strategy: Any, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | np.ndarray
                 ) -> np.ndarray:
    """Parameter sets as a float64 matrix in the strategy's declared order; unknown names are errors."""
    spec = strategy.PARAMS
    names = list(spec)
    if isinstance(params, np.ndarray):
        m = np.asarray(params, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != len(names):
            msg = f"{strategy.NAME}: parameter matrix must have shape (n, {len(names)}) for {names}, got {m.shape}"
            raise ConfigError(msg)
        rows = m
    else:
        sets = [params] if isinstance(params, Mapping) else list(params)
        rows = np.empty((len(sets), len(names)), np.float64)
        for i, d in enumerate(sets):
            bad = [k for k in d if k not in spec]
            if bad:
                msg = (f"{strategy.NAME}: unknown parameter(s) {bad} in set {i}; "
                       f"the strategy declares {names}")
                raise ConfigError(msg)
            for j, k in enumerate(names):
                rows[i, j] = float(d.get(k, spec[k][0]))
    for j, k in enumerate(names):
        lo, hi = spec[k][1]
        col = rows[:, j]
        bad = ~np.isfinite(col) | (col < lo) | (col > hi)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            msg = f"{strategy.NAME}: parameter {k!r} of set {i} is {col[i]!r}; expected a number in [{lo}, {hi}]"
            raise ConfigError(msg)
    return np.ascontiguousarray(rows)


@dataclass
class BacktestResult:
    """What a run produced, per parameter set (host arrays)."""

    strategy: str
    params: np.ndarray
    param_names: list[str]
    counters: np.ndarray
    account: np.ndarray
    equity2: np.ndarray
    equity_fee: np.ndarray
    equity_fee_rem: np.ndarray
    sample_ts: np.ndarray
    fills: np.ndarray
    instruments: list[Instrument]
    config: BacktestConfig
    engine: str
    backend: str
    state: np.ndarray
    seconds: float = 0.0

    def fills_of(self, p: int = 0) -> np.ndarray:
        """The recorded fills of parameter set ``p`` (rows of gpuflow.kernels.backtest.F_* columns)."""
        from gpuflow.kernels import backtest as kb

        n = min(int(self.counters[p, kb.N_FILLS]), self.fills.shape[1])
        return self.fills[p, :n]

    def metrics(self) -> Any:
        from gpuflow.backtest.metrics import compute_metrics

        return compute_metrics(self)


def run(strategy: Any, params: Any, market: MarketData, config: BacktestConfig | None = None, *,
        engine: str = "exact", backend: str | Backend | None = None, record_fills: bool = True) -> BacktestResult:
    """Simulate parameter sets of ``strategy`` over ``market``.

    Parameters
    ----------
    strategy : module or object
        With ``NAME``, ``PARAMS`` ({name: (default, (lo, hi))}), ``STATE_SIZE``, ``step`` and ``CORES``.
    params : mapping, list of mappings, or float array (n_sets, n_params)
    market : MarketData
    config : BacktestConfig
    engine : {"exact", "sweep"}
        ``exact``: the CPU engine; ``sweep``: the GPU engine (its CPU twin without a GPU).
    """
    import time

    from gpuflow.kernels import backtest as kb

    cfg = config or BacktestConfig()
    if engine not in ("exact", "sweep"):
        msg = f"run: engine must be 'exact' or 'sweep', got {engine!r}"
        raise ConfigError(msg)
    if cfg.levels != market.levels:
        msg = f"run: config.levels={cfg.levels} but the market data holds {market.levels} levels"
        raise ConfigError(msg)
    pm = param_matrix(strategy, params)
    be = get_backend("cpu") if engine == "exact" else (backend if isinstance(backend, Backend)
                                                       else get_backend(backend))
    # on a GPU (or the simulator) the sets run in sorted order (lexicographic over the parameters), so that
    # neighbouring threads of a warp hold similar sets and take the same branches more often; the results
    # are put back in the caller's order below
    order = None
    pm_run = pm
    if be.name != "cpu" and pm.shape[0] > 1 and pm.shape[1] and bool(options.get_option("backtest_sort_sets")):
        order = np.lexsort(pm.T[::-1])
        pm_run = pm[order]
    cv = cfg.vector()
    t0 = int(market.ts[0]) if market.n_events else 0
    cv[kb.C_T0] = t0
    n_samples = equity_samples(market, cfg.sample_ns)
    P = pm_run.shape[0]
    M = len(market.instruments)
    xp = be.xp
    F = cfg.max_fills if record_fills else 0
    fills = be.zeros((P, max(F, 1), kb.NFILL), xp.int64)
    if not record_fills:
        fills = fills[:, :0]
    # equity samples (sample, value, instrument, set): a warp's stores of one sample are adjacent
    # (kb.record_sample); the result holds each value as (set, sample, instrument)
    eqs = be.zeros((n_samples, kb.NEQ, M, P), xp.int64)
    out_cnt = be.zeros((P, kb.NCNT), xp.int64)
    out_acct = be.zeros((P, M, kb.NACC), xp.int64)
    size = max(int(getattr(strategy, "STATE_SIZE", 1)), 1)
    out_sst = be.zeros((P, size), xp.float64)
    if cfg.feed_latency_ns == "data":
        lat = market.ts - market.ts_exch
        corr = lat - (lat.min() if lat.size else 0)
        tx = market.ts - corr
        cv[kb.C_FEED] = int(np.median(corr)) if corr.size else 0  # equity samples: the typical latency
    else:
        tx = market.ts - cfg.feed_latency_ns
    d = market.on(be)
    ev, vst = market.view(be)
    # event-block summaries: the engines pass over blocks of events that cannot touch a set
    bsize = options.get_option("backtest_skip_block")
    if bsize == "auto":
        # when the summaries pay for themselves: built once per market (about 10 ns per event on the CPU, kept
        # on the market) against about 2 ns per event and set saved on the USD-M recording; on a GPU the warp
        # votes (1.26-1.29x on the H200 at 1,000-100,000 sets, 2026-11-27)
        bsize = kb.SKIP_BLOCK if P >= 8 else 0
    bsize = int(bsize)
    levels = kernel_skip_levels(bsize)
    coarsest = bsize << (levels - 1) * kb.SKIP_FANOUT_SHIFT
    tile = int(options.get_option("backtest_event_tile")) if be.uses_cuda else 0
    if bsize and tile % coarsest:
        what = (f"backtest_skip_block={bsize}" if levels == 1 else
                f"the coarsest skip block ({coarsest} events: backtest_skip_block={bsize}, "
                f"backtest_skip_levels={levels})")
        msg = (f"{what} does not divide backtest_event_tile={tile}: the GPU kernel skips blocks inside its event "
               f"tiles, so a tile must hold whole blocks (choose a block of at most {tile} events, or 0)")
        raise ConfigError(msg)
    if bsize:
        blk = market.blocks(tx, (cfg.feed_latency_ns, bsize, levels), bsize, be, levels)
        cv[kb.C_SKIP] = bsize.bit_length() - 1
        offs = kb.skip_offsets(market.n_events, bsize, levels)
        cv[kb.C_SKIP_LEVELS] = levels
        cv[kb.C_BOFF1] = offs[1]
        cv[kb.C_BOFF2] = offs[min(2, levels)]
    else:
        blk = be.zeros((0, kb.NBLK), xp.int64)
    # the levels are a constant of the compiled kernels
    pair = kb.engine_pair(strategy, max_registers=_register_cap(P, be), skip_levels=levels)
    start = time.perf_counter()
    be.launch(pair, P, d["ts"], be.asarray(tx), ev, vst, d["row"], d["price"], d["qty"], d["bid_price"],
              d["bid_qty"], d["ask_price"], d["ask_qty"], np.int64(market.levels), d["signals"], be.asarray(pm_run),
              be.asarray(cv), np.int64(M), fills, eqs, out_cnt, out_acct, out_sst, blk)
    be.synchronize()
    secs = time.perf_counter() - start
    cnt = be.to_host(out_cnt)
    inv = None
    if order is not None:
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
    to_caller = _CallerOrder(inv, be)
    if record_fills and P:
        fills_h = recorded_fills(fills, np.minimum(cnt[:, kb.N_FILLS], F), order, be)
    else:
        fills_h = to_caller(fills)
    eq2, eqfee, eqfrem = (to_caller(xp.ascontiguousarray(eqs[:, v].transpose(2, 0, 1))) for v in range(kb.NEQ))
    return BacktestResult(getattr(strategy, "NAME", "strategy"), pm, list(strategy.PARAMS), to_caller(cnt),
                          to_caller(out_acct), eq2, eqfee, eqfrem,
                          t0 + cfg.sample_ns * np.arange(1, n_samples + 1, dtype=np.int64), fills_h,
                          list(market.instruments), cfg, engine, be.name, to_caller(out_sst), secs)


class _CallerOrder:
    """A result array (a row per set, in the order the sets ran) on the host, in the caller's order (``inv``: the
    run's row of each caller's set; None: the same order).  Reordered where the array is: a device array in
    device memory before its copy, a host array (the counters, already copied) on the host; a host array indexed
    with a device array fails on a GPU (cupy refuses the implicit copy), which the simulator, whose "device"
    arrays are numpy's, cannot show."""

    def __init__(self, inv: np.ndarray | None, be: Backend) -> None:
        self.inv, self.be = inv, be
        self.inv_dev = None if inv is None or not be.uses_cuda else be.asarray(inv)

    def __call__(self, a: Any) -> np.ndarray:
        if self.inv is None:
            return self.be.to_host(a)
        if isinstance(a, np.ndarray):
            return a[self.inv]
        return self.be.to_host(a[self.inv_dev])


def recorded_fills(fills: Any, nrec: np.ndarray, order: np.ndarray | None, be: Backend) -> np.ndarray:
    """The fills the sets recorded, on the host: (sets, the most any set recorded, NFILL), sets in the caller's
    order (``order[j]``: the caller's set run as row ``j``; None: the same order), a set's unused rows zero.

    ``fills`` is the engine's buffer (rows in run order), ``nrec`` (host) the fills each set recorded.  On a
    device only the recorded rows travel: they are packed there (a boolean mask over (set, fill)) and unpacked
    on the host into a zeroed array, whose untouched pages are never mapped.  The padded copy took every set's
    rows up to the busiest set's: the bench grid's 100,000 market-making sets on the USD-M recording record 115
    fills on average and 449 at most, so it moved and mapped 3.9x the recorded bytes (a batch of 105,600 sets:
    3.4 GB instead of 0.87 GB)."""
    from gpuflow.kernels import backtest as kb

    P = int(nrec.size)
    fu = int(nrec.max()) if P else 0
    if not be.uses_cuda:  # already in host memory (the CPU engine never reorders)
        f = fills[:, :fu]
        return f if order is None else f[np.argsort(order)]
    xp = be.xp
    mask = xp.arange(fu)[None, :] < be.asarray(nrec)[:, None]
    packed = be.to_host(fills[:, :fu][mask])  # (recorded fills, NFILL): set by set in run order, each in order
    out = np.zeros((P, fu, kb.NFILL), np.int64)
    rows = np.repeat(np.arange(P) if order is None else np.asarray(order), nrec)
    cols = np.arange(packed.shape[0]) - np.repeat(np.cumsum(nrec) - nrec, nrec)
    out[rows, cols] = packed
    return out


