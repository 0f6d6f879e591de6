"""Run configurations for backtests and sweeps (YAML files), and the market data they name.

A run configuration holds, for one strategy, everything a backtest or a sweep needs
besides the code: the parameter set, the engine settings, where the data is and which
signals the strategy reads, and the parameter space to sweep.  Every key is checked
against the keys this module knows; an unknown one is a :class:`ConfigError` that names
the file, the section and the key, and lists the valid keys.

File layout (YAML; every section but ``strategy`` is optional)::

    strategy: market_making            # a name of gpuflow.backtest.strategies.STRATEGIES
    description: free text
    params:                            # one parameter set; missing ones take the strategy's default
      half_spread_ticks: 2
      order_lots: {size: "0.002"}      # in currency units: converted with the instrument's lot size
      skew_ticks_per_lot: 0.5
    engine:                            # BacktestConfig fields
      entry_latency_ns: 1ms            # durations: an integer of ns or a number with ns/us/ms/s/min
      maker_fee_bps: -0.25
      levels: 5
    data:                              # the default data (--data on the command line replaces path)
      path: ../data/recording.gz       # a raw file (relative to this file) or a gpuflow store folder
      format: binance                  # lobster | binance | tardis | databento (default: detected)
      symbol: BTCUSDT                  # which instrument of a store or of a multi-instrument file
      venue: binance-futures
      start: "2024-08-08T23:55:00"     # ts_local range [start, end): ISO time (UTC) or int ns
      end: null
      clean: true                      # raw files: run gpuflow.clean's rules first (as ingest does)
      # two instruments (stat_arb):  instruments: [{path: a.gz}, {path: b.gz}]
      # (keys given beside ``instruments`` are defaults for both)
    signals:                           # per-event float columns the strategy reads as sig[e, j]
      - {name: ofi_1s, feature: ofi, levels: 1, window_ns: 1s}
    space:                             # for `gpuflow sweep`: one entry per swept parameter
      half_spread_ticks: [1, 2, 3]             # values (grid; a choice for random / optuna)
      skew_ticks_per_lot: {low: 0, high: 2}    # a range (random / optuna; grid needs num:)
      order_lots: {low: 1, high: 100, log: true, int: true}
    sweep:
      search: grid                     # grid | random | optuna
      trials: 64                       # random / optuna
      batch_size: 64                   # parameter sets per engine launch and per results file
      seed: 0
      objective: pnl                   # metric optimised by optuna and used to rank results
      direction: maximize
    checks:
      on_bad_actions: warn             # warn | raise: NaN decisions, malformed orders

Parameter values
    A number in the strategy's units, or:

    * ``{price: "0.30"}`` for a parameter whose name ends in ``_ticks`` (or ``_ticks_<n>``) and
      ``{size: "0.002"}`` for one ending in ``_lots`` (``_lots_<n>``): a value in currency units, converted with the tick / lot
      size of the data's instrument (``instrument: 1`` picks the second one) once the data is
      known.  A value that is not a whole number of ticks (lots) is a :class:`ConfigError`
      naming the field and the step: the engine only knows integer ticks and lots, and
      rounding a price silently would backtest another strategy than the one written down;
    * for a parameter ending in ``_ns``: a duration (``"10s"``) or ``{time: "2024-08-08T23:55:00"}``
      (ns since the epoch, UTC);
    * ``{data: tick_ratio}``: a value taken from the data (:data:`DATA_VALUES`).

Signals (``feature:``)
    ``ofi`` (Cont-Kukanov-Stoikov order-flow imbalance, summed over ``levels`` levels; lots),
    ``vwofi``, ``spread_adjusted_ofi`` (flows: :mod:`gpuflow.features.ofi`), ``spread``,
    ``mid``, ``microprice`` (ticks), ``depth_imbalance`` (levels; :mod:`gpuflow.features.book`),
    ``traded_lots`` (cumulative traded lots of the instrument through each event, trades and
    L3 executions: the ``traded_lots`` column of :func:`gpuflow.backtest.execution.execution_signals`)
    and ``file`` (a column of a ``.npy`` / ``.parquet`` file with one value per merged event,
    e.g. model predictions).

    Book features read complete books only: the rows that end a message (``FLAG_EOM``; a row
    inside a multi-row message is a book half-way through an update), in the order the book
    evolved, each known at the running maximum of ``ts_local``.  Flows compare consecutive
    complete books; the first one is compared with itself (zero flow before the data starts).
    A flow with ``window_ns: W`` is summed over the complete books known in ``(t - W, t]`` where
    t is the event's ``ts_local``; a window holding a NaN value is NaN.  ``instrument: m``
    (default 0) reads instrument m's book: each event gets the latest value of the rows merged
    at or before it, so a value at event e uses only events up to e (before the first row a
    window sum is 0, an empty sum; any other value is NaN).
    ``transform: sign`` keeps the sign (-1, 0, +1; NaN stays NaN), e.g. as scripted entries.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from gpuflow.backtest.engine import BacktestConfig, ConfigError, MarketData
from gpuflow.errors import GpuflowError

__all__ = [
    "DATA_VALUES",
    "FEATURES",
    "SEARCHES",
    "DataSpec",
    "DataValue",
    "Quantity",
    "Range",
    "RunConfig",
    "SignalSpec",
    "SweepSettings",
    "Values",
    "build_signals",
    "complete_rows",
    "detect_format",
    "load_config",
    "load_data",
    "load_events",
    "resolve_value",
]

#: search methods of ``gpuflow sweep``
SEARCHES = ("grid", "random", "optuna")
#: signal features a config can name (``signals[i].feature``); flows may take ``window_ns``
FEATURES = {
    "ofi": "flow", "vwofi": "flow", "spread_adjusted_ofi": "flow", "spread": "level", "mid": "level",
    "microprice": "level", "depth_imbalance": "level", "traded_lots": "trades", "file": "file",
}
#: parameter values a config can take from the loaded data (``{data: NAME}``): name -> description
DATA_VALUES = {
    "tick_ratio": "tick_size of instrument 1 / tick_size of instrument 0 (exact decimals; stat_arb)",
}
_TOP_KEYS = ("strategy", "description", "params", "engine", "data", "signals", "space", "sweep", "checks")
_DATA_KEYS = ("path", "paths", "instruments", "format", "symbol", "venue", "start", "end", "clean")
_ONE_DATA_KEYS = ("path", "format", "symbol", "venue", "start", "end", "clean")
_SIGNAL_KEYS = ("name", "feature", "levels", "window_ns", "instrument", "path", "column", "transform")
_SWEEP_KEYS = ("search", "trials", "batch_size", "seed", "objective", "direction")
_CHECK_KEYS = ("on_bad_actions",)
_RANGE_KEYS = ("low", "high", "log", "int", "num")
_DURATION = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*(ns|us|ms|s|min)?\s*$")
_NS_PER = {None: 1, "ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "min": 60_000_000_000}


# ----------------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Quantity:
    """A price (``kind="price"``) or size (``"size"``) in currency units, converted with the instrument's step."""

    kind: str
    text: str
    instrument: int = 0


@dataclass(frozen=True)
class DataValue:
    """A parameter taken from the data: ``{data: tick_ratio}`` (see :data:`DATA_VALUES`)."""

    name: str


@dataclass(frozen=True)
class Values:
    """Swept values of one parameter (a grid axis; a categorical choice for random / optuna)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    """A swept range ``[low, high]`` (log-uniform with ``log``; integers with ``int``; ``num`` points on a grid)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    num: int | None = None


@dataclass
class DataSpec:
    """Where one instrument's events come from: a raw file or a store folder, and which part of it."""

    path: str | None = None
    format: str | None = None
    symbol: str | None = None
    venue: str | None = None
    start: Any = None
    end: Any = None
    clean: bool = True


@dataclass
class SignalSpec:
    """One signal column (see the module docstring)."""

    name: str
    feature: str
    levels: int = 1
    window_ns: int | None = None
    instrument: int = 0
    path: str | None = None
    column: Any = None
    transform: str | None = None


@dataclass
class SweepSettings:
    """How ``gpuflow sweep`` searches the space."""

    search: str = "grid"
    trials: int | None = None
    batch_size: int | None = None
    seed: int = 0
    objective: str = "pnl"
    direction: str = "maximize"


@dataclass
class RunConfig:
    """A validated run configuration (see the module docstring for the file layout).

    Attributes
    ----------
    strategy : str
        Registered strategy name (:data:`gpuflow.backtest.strategies.STRATEGIES`).
    params : dict
        One parameter set: numbers or :class:`Quantity` (resolved by :meth:`resolved_params`).
    engine : BacktestConfig
    data : list of DataSpec
        One per instrument (empty: the data must be given on the command line).
    signals : list of SignalSpec
    space : dict of name -> Values or Range
    sweep : SweepSettings
    on_bad_actions : {"warn", "raise"}
    source : str
        The file it was read from (for messages).
    """

    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    engine: BacktestConfig = field(default_factory=BacktestConfig)
    data: list[DataSpec] = field(default_factory=list)
    signals: list[SignalSpec] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)
    sweep: SweepSettings = field(default_factory=SweepSettings)
    on_bad_actions: str = "warn"
    description: str = ""
    source: str = "<config>"

    @property
    def strategy_module(self) -> Any:
        """The strategy module (``NAME``, ``PARAMS``, ``step``, ...)."""
        return _strategy(self.strategy, self.source)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<config>", base_dir: str | os.PathLike[str] | None = None
                  ) -> RunConfig:
        """Validate a parsed configuration (the mapping a YAML file holds).

        Parameters
        ----------
        d : mapping
            Sections as in the module docstring.
        source : str
            Name used in error messages (the file path).
        base_dir : path, optional
            Folder relative data and signal paths are taken from (the config file's folder).

        Raises
        ------
        ConfigError
            An unknown key, a value of the wrong type or out of the strategy's declared range.
        """
        if not isinstance(d, Mapping):
            msg = f"{source}: expected a mapping of sections {list(_TOP_KEYS)}, got {type(d).__name__}"
            raise ConfigError(msg)
        _check_keys(d, _TOP_KEYS, source, "top level")
        if "strategy" not in d:
            from gpuflow.backtest.strategies import STRATEGIES

            msg = f"{source}: missing key 'strategy'; expected one of {sorted(STRATEGIES)}"
            raise ConfigError(msg)
        name = d["strategy"]
        mod = _strategy(name, source)
        base = Path(base_dir) if base_dir is not None else None
        params = _parse_params(_section(d, "params", source), mod, source)
        engine = _parse_engine(_section(d, "engine", source), source)
        data = _parse_data(d.get("data"), source, base)
        signals = _parse_signals(d.get("signals"), source, base, len(data) or 1)
        space = _parse_space(_section(d, "space", source), mod, source)
        sweep = _parse_sweep(_section(d, "sweep", source), source)
        checks = _section(d, "checks", source)
        _check_keys(checks, _CHECK_KEYS, source, "checks")
        on_bad = checks.get("on_bad_actions", "warn")
        if on_bad not in ("warn", "raise"):
            msg = f"{source}: checks.on_bad_actions is {on_bad!r}; expected 'warn' or 'raise'"
            raise ConfigError(msg)
        desc = d.get("description") or ""
        return cls(str(name), params, engine, data, signals, space, sweep, on_bad, str(desc), source)

    def with_params(self, overrides: Mapping[str, Any]) -> RunConfig:
        """A copy with some parameters replaced (validated as in the file; values may be YAML text)."""
        parsed = {}
        for k, v in overrides.items():
            parsed[k] = _yaml_scalar(v) if isinstance(v, str) else v
        merged = {**self.params, **_parse_params(parsed, self.strategy_module, self.source + " (overrides)")}
        return replace(self, params=merged)

    def with_data(self, paths: Sequence[str | os.PathLike[str]] | None = None, **keys: Any) -> RunConfig:
        """A copy whose data paths (one per instrument) and/or data keys (format, symbol, ...) are replaced."""
        specs = [replace(s) for s in self.data]
        if paths:
            paths = [os.fspath(p) for p in paths]
            if specs and len(specs) != len(paths):
                if len(specs) == 1:
                    specs = [replace(specs[0]) for _ in paths]
                else:
                    msg = (f"{self.source}: the config names {len(specs)} instruments' data but {len(paths)} "
                           f"path(s) were given ({paths}); give one path per instrument")
                    raise ConfigError(msg)
            if not specs:
                specs = [DataSpec() for _ in paths]
            for s, p in zip(specs, paths):
                s.path = p
        bad = [k for k in keys if k not in _ONE_DATA_KEYS]
        if bad:
            msg = f"with_data: unknown data key(s) {bad}; valid: {list(_ONE_DATA_KEYS)}"
            raise ConfigError(msg)
        for k, v in keys.items():
            if v is None:
                continue
            if k in ("start", "end"):
                v = _time_arg(v)
            for s in specs:
                setattr(s, k, v)
        if "format" in keys and keys["format"] is not None:
            _check_format_name(keys["format"], "--format")
        return replace(self, data=specs)

    def resolved_params(self, instruments: Sequence[Any] | None = None) -> dict[str, float]:
        """The full parameter set (defaults filled in) with currency values converted to ticks / lots."""
        mod = self.strategy_module
        out = {}
        for k, (default, (lo, hi)) in mod.PARAMS.items():
            v = self.params.get(k, default)
            where = f"{self.source}: params.{k}"
            out[k] = resolve_value(v, instruments, where)
            if not lo <= out[k] <= hi:
                msg = f"{where}: {v} is {out[k]!r} in the strategy's units, out of its range [{lo}, {hi}]"
                raise ConfigError(msg)
        return out

    def resolved_space(self, instruments: Sequence[Any] | None = None) -> dict[str, Values | Range]:
        """The sweep space with currency values converted (see :meth:`resolved_params`)."""
        out: dict[str, Values | Range] = {}
        for k, s in self.space.items():
            if isinstance(s, Values):
                out[k] = Values(tuple(resolve_value(v, instruments, f"{self.source}: space.{k}") for v in s.values))
            else:
                out[k] = s
        _check_space_bounds(out, self.strategy_module, self.source)
        return out


# ----------------------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and validate a YAML run configuration.

    Parameters
    ----------
    path : str or path
        A YAML file laid out as in the module docstring.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, or holds an unknown key or a bad value (the message
        names the file and the key and lists the valid ones).

    Examples
    --------
    >>> from pathlib import Path
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "mm.yaml"
    >>> _ = p.write_text("strategy: market_making\\nparams: {half_spread_ticks: 3}\\n")
    >>> load_config(p).resolved_params()["half_spread_ticks"]
    3.0
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        msg = f"{p}: cannot read the config file ({exc.strerror or exc})"
        raise ConfigError(msg) from None
    import yaml

    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{p}: not valid YAML ({exc})"
        raise ConfigError(msg) from None
    if d is None:
        msg = f"{p}: empty config; expected at least 'strategy:'"
        raise ConfigError(msg)
    return RunConfig.from_dict(d, source=str(p), base_dir=p.parent)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The raw format of ``path`` from its name and first bytes: lobster, binance, tardis or databento.

    Raises
    ------
    ConfigError
        The format cannot be told; the message asks for ``format:`` (or ``--format``).
    """
    p = os.fspath(path)
    name = os.path.basename(p).lower()
    if ".dbn" in name:
        return "databento"
    if re.search(r"_message_\d+\.csv", name):
        return "lobster"
    head = _head(p)
    if head.startswith(b"DBN"):
        return "databento"
    first = head.split(b"\n", 1)[0].strip()
    if re.match(rb"^\d{9,}\s+[\[{]", first):
        return "binance"
    if first.startswith(b"exchange,symbol,timestamp,local_timestamp"):
        return "tardis"
    if re.match(rb"^[0-9.]+,[1-7],[0-9]+,[0-9]+,-?[0-9]+,-?1$", first):
        return "lobster"
    from gpuflow.io import FORMATS

    msg = (f"{p}: cannot tell the raw format from the name or the first line ({first[:80]!r}); "
           f"set data.format in the config (or --format) to one of {sorted(FORMATS)}")
    raise ConfigError(msg)


def load_events(spec: DataSpec, where: str = "data") -> Any:
    """One instrument's events (a pyarrow Table with instrument metadata) for ``spec``.

    A folder is read as a gpuflow store (:meth:`gpuflow.store.Store.load` with symbol, venue and
    the time range); a file with the reader of its format, cleaned with :func:`gpuflow.clean.clean`
    unless ``clean`` is false, then cut to the time range.
    """
    import pyarrow as pa

    if not spec.path:
        msg = (f"{where}: no data path; give --data PATH (a raw file or a gpuflow store folder) or "
               "data.path in the config")
        raise ConfigError(msg)
    path = Path(spec.path)
    if path.is_dir():
        from gpuflow.store import Store

        return Store(path).load(venue=spec.venue, symbol=spec.symbol, start=spec.start, end=spec.end)
    if not path.is_file():
        msg = f"{where}: data path {os.fspath(path)!r} does not exist; expected a raw file or a gpuflow store folder"
        raise ConfigError(msg)
    fmt = spec.format or detect_format(path)
    _check_format_name(fmt, f"{where}.format")
    if spec.clean:
        from gpuflow.ingest import clean_file

        tables = clean_file(fmt, path).tables
    else:
        from gpuflow.io import read

        tables = read(fmt, path).tables
    from gpuflow.schema import instrument_of

    cand = [t for t in tables if (spec.symbol is None or instrument_of(t).symbol == spec.symbol)
            and (spec.venue is None or instrument_of(t).venue == spec.venue)]
    if len(cand) != 1:
        held = ", ".join(f"{instrument_of(t).venue}/{instrument_of(t).symbol}" for t in tables) or "nothing"
        what = "no instrument matches" if not cand else "several instruments match"
        msg = (f"{where}: {os.fspath(path)}: {what} venue={spec.venue!r}, symbol={spec.symbol!r}; the file "
               f"holds {held}; set data.symbol (and data.venue)")
        raise ConfigError(msg)
    t = cand[0]
    if spec.start is not None or spec.end is not None:
        from gpuflow.store import _to_ns

        ts = t.column("ts_local").to_numpy()
        keep = np.ones(ts.size, bool)
        lo, hi = _to_ns(spec.start, "start"), _to_ns(spec.end, "end")
        if lo is not None:
            keep &= ts >= lo
        if hi is not None:
            keep &= ts < hi
        t = t.filter(pa.array(keep))
    if t.num_rows == 0:
        msg = f"{where}: {os.fspath(path)}: no events in [start={spec.start!r}, end={spec.end!r})"
        raise ConfigError(msg)
    return t


def load_data(source: Any = None, *, config: RunConfig | None = None, format: str | None = None,
              symbol: str | None = None, venue: str | None = None, start: Any = None, end: Any = None,
              levels: int | None = None, signals: Sequence[SignalSpec | Mapping[str, Any]] | None = None,
              clean: bool | None = None, backend: Any = "cpu") -> MarketData:
    """Market data for a backtest from raw files or a gpuflow store, with the config's signals.

    Parameters
    ----------
    source : path, list of paths, DataSpec or list of DataSpec, optional
        A raw file of a supported format (detected from its name and content unless ``format``
        is given) or a gpuflow store folder; two of them for a two-instrument strategy.
        Default: the config's ``data``.
    config : RunConfig, optional
        Supplies the data defaults, ``levels`` (``engine.levels``) and the signal spec.
    format, symbol, venue, start, end, clean
        Override the config's data keys (see :class:`DataSpec`).
    levels : int, optional
        Book levels (default: the config's ``engine.levels``, else 5).
    signals : list of SignalSpec or mappings, optional
        Signal spec (default: the config's).
    backend : str or Backend
        Backend of the book rebuild (:func:`gpuflow.backtest.engine.prepare_market`).

    Returns
    -------
    MarketData
        Host arrays; ``signals`` holds one column per signal (a zero column when there is none).

    Raises
    ------
    ConfigError
        No data given, a path that does not exist, an undetectable format, an ambiguous
        instrument, an empty time range, or a bad signal spec.
    """
    from gpuflow.backtest.engine import prepare_market

    where = config.source if config is not None else "load_data"
    specs: list[DataSpec]
    if source is None:
        specs = [replace(s) for s in config.data] if config is not None else []
    else:
        items = list(source) if isinstance(source, (list, tuple)) else [source]
        base = [replace(s) for s in config.data] if config is not None else []
        if base and len(base) != len(items) and len(base) != 1:
            msg = (f"{where}: the config names {len(base)} instruments' data but {len(items)} source(s) were "
                   "given; give one per instrument")
            raise ConfigError(msg)
        specs = []
        for i, it in enumerate(items):
            if isinstance(it, DataSpec):
                specs.append(replace(it))
                continue
            s = replace(base[i] if len(base) == len(items) else base[0]) if base else DataSpec()
            s.path = os.fspath(it)
            specs.append(s)
    for s in specs:
        for k, v in (("format", format), ("symbol", symbol), ("venue", venue), ("start", start), ("end", end),
                     ("clean", clean)):
            if v is not None:
                setattr(s, k, v)
    if not specs:
        msg = (f"{where}: no data given; pass --data PATH (a raw file or a gpuflow store folder) or set data.path "
               "in the config")
        raise ConfigError(msg)
    from gpuflow.kernels import backtest as kb

    if len(specs) > kb.MAX_INSTRUMENTS:
        msg = f"{where}: {len(specs)} instruments' data given; the engine takes at most {kb.MAX_INSTRUMENTS}"
        raise ConfigError(msg)
    tables = [load_events(s, f"{where}: data[{i}]" if len(specs) > 1 else f"{where}: data")
              for i, s in enumerate(specs)]
    lv = levels if levels is not None else (config.engine.levels if config is not None else 5)
    market = prepare_market(tables, levels=int(lv), backend=backend)
    sig_specs = [s if isinstance(s, SignalSpec) else _parse_signal(s, i, where, None, len(tables))
                 for i, s in enumerate(signals if signals is not None else (config.signals if config else []))]
    if sig_specs:
        sig = build_signals(market, sig_specs, complete=complete_rows(tables), where=where)
        market = replace(market, signals=sig, signal_names=[s.name for s in sig_specs])
    return market


def build_signals(market: MarketData, specs: Sequence[SignalSpec], *, complete: np.ndarray | None = None,
                  where: str = "signals", backend: Any = "cpu") -> np.ndarray:
    """Signal columns (float64, shape (n_events, len(specs))) aligned with ``market``'s merged events.

    See the module docstring for the features and the window rule.  Each value at event e is
    computed from instrument m's book rows at or before e (causal: no row after e is read).

    Parameters
    ----------
    market : MarketData
    specs : list of SignalSpec
    complete : bool array (n_book_rows,), optional
        Book rows that end a message (:func:`complete_rows`); book features read only those.
        Default: every row.
    """
    n = market.n_events
    out = np.full((n, max(len(specs), 1)), np.nan, np.float64)
    for j, s in enumerate(specs):
        out[:, j] = _signal_column(market, s, f"{where}: signals[{j}] ({s.name})", backend, complete)
    return out


# ----------------------------------------------------------------------------------------- helpers
def resolve_value(v: Any, instruments: Sequence[Any] | None, where: str) -> float:
    """A parameter value as a float in the strategy's units (ticks / lots for :class:`Quantity`)."""
    if isinstance(v, DataValue):
        return _data_value(v.name, instruments, where)
    if not isinstance(v, Quantity):
        return float(v)
    if not instruments:
        msg = (f"{where}: {v.kind} {v.text} is in currency units; it needs the data's instrument (tick and lot "
               "size) to be converted; load the data first")
        raise ConfigError(msg)
    if v.instrument >= len(instruments):
        msg = f"{where}: instrument {v.instrument} named, but the data holds {len(instruments)} instrument(s)"
        raise ConfigError(msg)
    ins = instruments[v.instrument]
    step_text = ins.tick_size if v.kind == "price" else ins.lot_size
    unit = "ticks" if v.kind == "price" else "lots"
    stepname = "tick_size" if v.kind == "price" else "lot_size"
    q = Decimal(v.text) / Decimal(step_text)
    if q != q.to_integral_value():
        msg = (f"{where}: {v.kind} {v.text} is not a whole number of {unit} ({stepname}={step_text} for "
               f"{ins.venue}/{ins.symbol}: {v.text} / {step_text} = {q.normalize()}); use a multiple of {step_text}")
        raise ConfigError(msg)
    return float(int(q))


def _data_value(name: str, instruments: Sequence[Any] | None, where: str) -> float:
    if name == "tick_ratio":
        if not instruments or len(instruments) != 2:
            n = len(instruments) if instruments else 0
            msg = f"{where}: {{data: tick_ratio}} needs data of 2 instruments, got {n}"
            raise ConfigError(msg)
        return float(Decimal(instruments[1].tick_size) / Decimal(instruments[0].tick_size))
    msg = f"{where}: unknown data value {name!r}; expected one of {sorted(DATA_VALUES)}"  # pragma: no cover
    raise ConfigError(msg)


def _strategy(name: Any, source: str) -> Any:
    from gpuflow.backtest.strategies import STRATEGIES, get_strategy

    if not isinstance(name, str) or name not in STRATEGIES:
        msg = f"{source}: strategy {name!r} is not known; expected one of {sorted(STRATEGIES)}"
        raise ConfigError(msg)
    return get_strategy(name)


def _check_keys(d: Mapping[str, Any], valid: Sequence[str], source: str, section: str) -> None:
    bad = [k for k in d if k not in valid]
    if bad:
        key = bad[0]
        msg = (f"{source}: unknown key {key!r} in {section}" + (f" (and {bad[1:]})" if len(bad) > 1 else "")
               + f"; valid keys: {list(valid)}")
        raise ConfigError(msg)


def _section(d: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    v = d.get(name)
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        msg = f"{source}: section {name!r} must be a mapping (key: value lines), got {type(v).__name__} {v!r}"
        raise ConfigError(msg)
    return v


def _yaml_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or v is None:
        msg = f"{where}: expected a number, got {v!r}"
        raise ConfigError(msg)
    try:
        x = float(v)
    except (TypeError, ValueError):
        msg = f"{where}: expected a number, got {v!r}"
        raise ConfigError(msg) from None
    if not np.isfinite(x):
        msg = f"{where}: expected a finite number, got {v!r}"
        raise ConfigError(msg)
    return x


def _decimal_text(v: Any, where: str) -> str:
    if isinstance(v, bool) or v is None:
        msg = f"{where}: expected a decimal number (e.g. \"0.10\"), got {v!r}"
        raise ConfigError(msg)
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        d = Decimal("NaN")
    if not d.is_finite():
        msg = f"{where}: expected a decimal number (e.g. \"0.10\"), got {v!r}"
        raise ConfigError(msg)
    return str(v)


def _quantity(v: Mapping[str, Any], name: str, source: str, section: str, many: bool = False) -> Any:
    """``{price: x}`` / ``{size: x}`` (x a list when ``many``) -> Quantity (or a tuple of them)."""
    where = f"{source}: {section}"
    kinds = [k for k in ("price", "size") if k in v]
    _check_keys(v, ("price", "size", "instrument"), source, section)
    if len(kinds) != 1:
        msg = f"{where}: expected exactly one of 'price' or 'size' (a value in currency units), got {dict(v)}"
        raise ConfigError(msg)
    kind = kinds[0]
    need = "_ticks" if kind == "price" else "_lots"
    if not re.search(need + r"(_\d+)?$", name):
        msg = (f"{where}: {{{kind}: ...}} converts a currency value to {need[1:]}, but parameter {name!r} is not in "
               f"{need[1:]} (its name does not end in {need!r} or {need + '_<n>'!r}); give the value in the strategy's units")
        raise ConfigError(msg)
    inst = v.get("instrument", 0)
    if not isinstance(inst, int) or isinstance(inst, bool) or inst < 0:
        msg = f"{where}.instrument: expected an instrument index (0 or 1), got {inst!r}"
        raise ConfigError(msg)
    raw = v[kind]
    if many:
        if not isinstance(raw, list) or not raw:
            msg = f"{where}: expected a non-empty list of {kind}s, got {raw!r}"
            raise ConfigError(msg)
        return tuple(Quantity(kind, _decimal_text(x, f"{where}.{kind}[{i}]"), inst) for i, x in enumerate(raw))
    return Quantity(kind, _decimal_text(raw, f"{where}.{kind}"), inst)


def _parse_params(d: Mapping[str, Any], mod: Any, source: str) -> dict[str, Any]:
    spec = mod.PARAMS
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k not in spec:
            msg = (f"{source}: unknown parameter {k!r} in params for strategy {mod.NAME!r}; "
                   f"valid parameters: {list(spec)}")
            raise ConfigError(msg)
        where = f"{source}: params.{k}"
        if isinstance(v, Mapping) and "data" in v:
            _check_keys(v, ("data",), source, f"params.{k}")
            if v["data"] not in DATA_VALUES:
                msg = f"{where}.data: {v['data']!r} is not a data value; expected one of {sorted(DATA_VALUES)}"
                raise ConfigError(msg)
            out[k] = DataValue(v["data"])
            continue
        if isinstance(v, Mapping) and "time" in v and k.endswith("_ns"):
            _check_keys(v, ("time",), source, f"params.{k}")
            from gpuflow.store import _to_ns

            try:
                v = _to_ns(v["time"], k)
            except GpuflowError:
                msg = f"{where}.time: {v['time']!r} is not a time; expected an ISO time (UTC) or int ns since the epoch"
                raise ConfigError(msg) from None
        elif isinstance(v, str) and k.endswith("_ns"):
            v = _duration_ns(v, where, signed=True)
        if isinstance(v, Mapping):
            out[k] = _quantity(v, k, source, f"params.{k}")
            continue
        x = _number(v, where)
        lo, hi = spec[k][1]
        if not lo <= x <= hi:
            msg = f"{where}: {v!r} is out of the strategy's range [{lo}, {hi}]"
            raise ConfigError(msg)
        out[k] = x
    return out


def _duration_ns(v: Any, where: str, allow_none: bool = False, signed: bool = False) -> int | None:
    """An int of ns, or a number with a unit (``"1ms"``, ``"1.5s"``, ``1e9``)."""
    if v is None and allow_none:
        return None
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        x = int(v)
    else:
        text = (repr(v) if isinstance(v, float) else str(v)).strip()
        neg = text.startswith("-")
        m = None if isinstance(v, bool) else _DURATION.match(text[1:] if neg else text)
        if m is None:
            msg = f"{where}: expected a duration (int ns, or a number with ns/us/ms/s/min such as '1ms'), got {v!r}"
            raise ConfigError(msg)
        d = Decimal(m.group(1).replace("_", "")) * _NS_PER[m.group(2)]
        if d != d.to_integral_value():
            msg = f"{where}: {v!r} is not a whole number of ns"
            raise ConfigError(msg)
        x = -int(d) if neg else int(d)
    if x < 0 and not signed:
        msg = f"{where}: expected a non-negative duration, got {v!r}"
        raise ConfigError(msg)
    return x


def _int(v: Any, where: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        msg = f"{where}: expected an integer >= {lo}, got {v!r}"
        raise ConfigError(msg)
    return int(v)


def _parse_engine(d: Mapping[str, Any], source: str) -> BacktestConfig:
    names = [f.name for f in fields(BacktestConfig)]
    _check_keys(d, names, source, "engine")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        where = f"{source}: engine.{k}"
        if k == "feed_latency_ns" and v == "data":
            kw[k] = "data"  # each event's own latency (ts_local - ts_exch, less its minimum)
        elif k.endswith("_ns"):
            kw[k] = _duration_ns(v, where, signed=False)
        elif k in ("levels", "max_fills"):
            kw[k] = _int(v, where, 1 if k == "levels" else 0)
        elif k == "partial_fills":
            if not isinstance(v, bool):
                msg = f"{where}: expected true or false, got {v!r}"
                raise ConfigError(msg)
            kw[k] = v
        elif k.endswith("_bps"):
            kw[k] = _decimal_text(v, where)
        else:
            kw[k] = v
    cfg = BacktestConfig(**kw)
    try:
        cfg.vector()
    except ConfigError as exc:
        msg = f"{source}: engine: {exc}"
        raise ConfigError(msg) from None
    return cfg


def _time_arg(v: Any) -> Any:
    """A time given as text of digits (command line) is int ns since the epoch; other text is parsed later."""
    if isinstance(v, str) and re.fullmatch(r"\s*-?[0-9]+\s*", v):
        return int(v)
    return v


def _check_format_name(fmt: Any, where: str) -> None:
    from gpuflow.io import FORMATS

    if fmt not in FORMATS:
        msg = f"{where}: unknown format {fmt!r}; expected one of {sorted(FORMATS)}"
        raise ConfigError(msg)


def _one_data(d: Mapping[str, Any], defaults: Mapping[str, Any], source: str, section: str,
              base: Path | None) -> DataSpec:
    where = f"{source}: {section}"
    _check_keys(d, _ONE_DATA_KEYS, source, section)
    m = {**defaults, **d}
    s = DataSpec(**{k: m.get(k, getattr(DataSpec, k)) for k in _ONE_DATA_KEYS})
    if s.path is not None:
        s.path = os.fspath(s.path)
        if base is not None and not os.path.isabs(os.path.expanduser(s.path)):
            s.path = os.fspath(base / s.path)
        else:
            s.path = os.path.expanduser(s.path)
    if s.format is not None:
        _check_format_name(s.format, f"{where}.format")
    s.start, s.end = _time_arg(s.start), _time_arg(s.end)
    if not isinstance(s.clean, bool):
        msg = f"{where}.clean: expected true or false, got {s.clean!r}"
        raise ConfigError(msg)
    for k in ("symbol", "venue"):
        if getattr(s, k) is not None and not isinstance(getattr(s, k), str):
            setattr(s, k, str(getattr(s, k)))
    return s


def _parse_data(d: Any, source: str, base: Path | None) -> list[DataSpec]:
    if d is None:
        return []
    if isinstance(d, (str, os.PathLike)):
        d = {"path": d}
    if not isinstance(d, Mapping):
        msg = f"{source}: section 'data' must be a mapping or a path, got {type(d).__name__}"
        raise ConfigError(msg)
    _check_keys(d, _DATA_KEYS, source, "data")
    many = [k for k in ("paths", "instruments") if k in d]
    if len(many) > 1 or (many and "path" in d):
        msg = f"{source}: data: give one of 'path', 'paths' or 'instruments', got {sorted(k for k in d if k in ('path', 'paths', 'instruments'))}"
        raise ConfigError(msg)
    defaults = {k: v for k, v in d.items() if k in _ONE_DATA_KEYS and k != "path"}
    if not many:
        return [_one_data(d, {}, source, "data", base)]
    items = d[many[0]]
    if not isinstance(items, list) or not 1 <= len(items) <= 2:
        msg = f"{source}: data.{many[0]}: expected a list of 1 or 2 entries (one per instrument), got {items!r}"
        raise ConfigError(msg)
    out = []
    for i, it in enumerate(items):
        if many[0] == "paths":
            it = {"path": it}
        if not isinstance(it, Mapping):
            msg = f"{source}: data.instruments[{i}]: expected a mapping with keys {list(_ONE_DATA_KEYS)}, got {it!r}"
            raise ConfigError(msg)
        out.append(_one_data(it, defaults, source, f"data.{many[0]}[{i}]", base))
    return out


def _parse_signal(d: Any, i: int, source: str, base: Path | None, n_inst: int) -> SignalSpec:
    where = f"{source}: signals[{i}]"
    if not isinstance(d, Mapping):
        msg = f"{where}: expected a mapping with keys {list(_SIGNAL_KEYS)}, got {d!r}"
        raise ConfigError(msg)
    _check_keys(d, _SIGNAL_KEYS, source, f"signals[{i}]")
    feat = d.get("feature")
    if feat not in FEATURES:
        msg = f"{where}.feature: {feat!r} is not a known feature; expected one of {sorted(FEATURES)}"
        raise ConfigError(msg)
    name = str(d.get("name") or f"{feat}_{i}")
    levels = _int(d.get("levels", 1), f"{where}.levels", 1)
    win = _duration_ns(d.get("window_ns"), f"{where}.window_ns", allow_none=True)
    if win is not None and FEATURES[feat] != "flow":
        flows = sorted(k for k, v in FEATURES.items() if v == "flow")
        msg = f"{where}.window_ns: a trailing window sums a flow; feature {feat!r} is a level (flows: {flows})"
        raise ConfigError(msg)
    if win is not None and win <= 0:
        msg = f"{where}.window_ns: expected a positive duration, got {d.get('window_ns')!r}"
        raise ConfigError(msg)
    inst = _int(d.get("instrument", 0), f"{where}.instrument", 0)
    if inst >= n_inst:
        msg = f"{where}.instrument: {inst} named, but the config's data holds {n_inst} instrument(s)"
        raise ConfigError(msg)
    path = d.get("path")
    if feat == "file":
        if not path:
            msg = f"{where}: feature 'file' needs path: (a .npy or .parquet file, one value per merged event)"
            raise ConfigError(msg)
        path = os.fspath(path)
        if base is not None and not os.path.isabs(path):
            path = os.fspath(base / path)
    elif path is not None or d.get("column") is not None:
        msg = f"{where}: 'path' and 'column' apply to feature 'file' only (feature is {feat!r})"
        raise ConfigError(msg)
    tr = d.get("transform")
    if tr not in (None, "sign"):
        msg = f"{where}.transform: {tr!r}; expected 'sign' (the sign of the value: -1, 0, +1; NaN stays NaN)"
        raise ConfigError(msg)
    return SignalSpec(name, feat, levels, win, inst, path, d.get("column"), tr)


def _parse_signals(d: Any, source: str, base: Path | None, n_inst: int) -> list[SignalSpec]:
    if d is None:
        return []
    if not isinstance(d, list):
        msg = f"{source}: section 'signals' must be a list of mappings (one per signal column), got {type(d).__name__}"
        raise ConfigError(msg)
    out = [_parse_signal(x, i, source, base, n_inst) for i, x in enumerate(d)]
    names = [s.name for s in out]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        msg = f"{source}: signals: duplicate name(s) {dup}"
        raise ConfigError(msg)
    return out


def _parse_space(d: Mapping[str, Any], mod: Any, source: str) -> dict[str, Values | Range]:
    spec = mod.PARAMS
    out: dict[str, Values | Range] = {}
    for k, v in d.items():
        where = f"{source}: space.{k}"
        if k not in spec:
            msg = (f"{source}: unknown parameter {k!r} in space for strategy {mod.NAME!r}; "
                   f"valid parameters: {list(spec)}")
            raise ConfigError(msg)
        if isinstance(v, list):
            if not v:
                msg = f"{where}: empty list of values"
                raise ConfigError(msg)
            if k.endswith("_ns"):  # durations may carry a unit ("500ms")
                v = [_duration_ns(x, f"{where}[{i}]", signed=True) if isinstance(x, str) else x
                     for i, x in enumerate(v)]
            out[k] = Values(tuple(_number(x, f"{where}[{i}]") for i, x in enumerate(v)))
        elif isinstance(v, Mapping) and ("price" in v or "size" in v):
            out[k] = Values(_quantity(v, k, source, f"space.{k}", many=True))
        elif isinstance(v, Mapping) and "values" in v:
            _check_keys(v, ("values",), source, f"space.{k}")
            vals = v["values"]
            if not isinstance(vals, list) or not vals:
                msg = f"{where}.values: expected a non-empty list, got {vals!r}"
                raise ConfigError(msg)
            out[k] = Values(tuple(_number(x, f"{where}.values[{i}]") for i, x in enumerate(vals)))
        elif isinstance(v, Mapping):
            _check_keys(v, _RANGE_KEYS, source, f"space.{k}")
            if "low" not in v or "high" not in v:
                msg = f"{where}: a range needs low: and high: (and optionally log:, int:, num:), got {dict(v)}"
                raise ConfigError(msg)
            lo, hi = _number(v["low"], f"{where}.low"), _number(v["high"], f"{where}.high")
            log, integer = v.get("log", False), v.get("int", False)
            for name_, b in (("log", log), ("int", integer)):
                if not isinstance(b, bool):
                    msg = f"{where}.{name_}: expected true or false, got {b!r}"
                    raise ConfigError(msg)
            if not lo < hi:
                msg = f"{where}: low ({lo}) must be below high ({hi})"
                raise ConfigError(msg)
            if log and lo <= 0:
                msg = f"{where}: a log range needs low > 0, got low={lo}"
                raise ConfigError(msg)
            num = v.get("num")
            if num is not None:
                num = _int(num, f"{where}.num", 2)
            out[k] = Range(lo, hi, log, integer, num)
        else:
            x = _number(v, where)
            out[k] = Values((x,))
    _check_space_bounds(out, mod, source)
    return out


def _check_space_bounds(space: Mapping[str, Any], mod: Any, source: str) -> None:
    for k, s in space.items():
        lo, hi = mod.PARAMS[k][1]
        vals = [s.low, s.high] if isinstance(s, Range) else [x for x in s.values if not isinstance(x, Quantity)]
        for x in vals:
            if not lo <= x <= hi:
                msg = f"{source}: space.{k}: {x!r} is out of the strategy's range [{lo}, {hi}]"
                raise ConfigError(msg)


def _parse_sweep(d: Mapping[str, Any], source: str) -> SweepSettings:
    _check_keys(d, _SWEEP_KEYS, source, "sweep")
    s = SweepSettings()
    if "search" in d:
        if d["search"] not in SEARCHES:
            msg = f"{source}: sweep.search is {d['search']!r}; expected one of {list(SEARCHES)}"
            raise ConfigError(msg)
        s.search = d["search"]
    if d.get("trials") is not None:
        s.trials = _int(d["trials"], f"{source}: sweep.trials", 1)
    if d.get("batch_size") is not None:
        s.batch_size = _int(d["batch_size"], f"{source}: sweep.batch_size", 1)
    if "seed" in d:
        s.seed = _int(d["seed"], f"{source}: sweep.seed", 0)
    if "objective" in d:
        s.objective = str(d["objective"])
    if "direction" in d:
        if d["direction"] not in ("maximize", "minimize"):
            msg = f"{source}: sweep.direction is {d['direction']!r}; expected 'maximize' or 'minimize'"
            raise ConfigError(msg)
        s.direction = d["direction"]
    return s


def _head(path: str, n: int = 4096) -> bytes:
    """The first ``n`` decompressed bytes (gzip / zstd detected from the magic bytes)."""
    with open(path, "rb") as f:
        raw = f.read(n)
    try:
        if raw[:2] == b"\x1f\x8b":
            import zlib

            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, n)
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)[:n]
    except Exception:  # noqa: BLE001 - a truncated prefix of a valid stream may not decode; the name decides then
        return b""
    return raw


# ----------------------------------------------------------------------------------------- signals
def complete_rows(tables: Sequence[Any]) -> np.ndarray:
    """Which book rows of :func:`prepare_market` (concatenated over ``tables``) end a message (``FLAG_EOM``).

    Follows ``prepare_market``'s row order: Binance diff streams in synced order.  Signals read only
    these rows: a row inside a multi-row message is a book half-way through an update.
    """
    from gpuflow.schema import FLAG_EOM, KIND_DIFF
    from gpuflow.sync import synced_events

    out = []
    for t in tables:
        if (t.column("kind").to_numpy() == KIND_DIFF).any():
            t, _ = synced_events(t)
        out.append((t.column("flags").to_numpy() & FLAG_EOM) != 0)
    return np.concatenate(out) if out else np.zeros(0, bool)


def _signal_column(market: MarketData, s: SignalSpec, where: str, backend: Any,
                   complete: np.ndarray | None) -> np.ndarray:
    n = market.n_events
    if s.feature == "file":
        return _file_column(s, n, where)
    m = s.instrument
    if m >= len(market.instruments):
        msg = f"{where}: instrument {m} named, but the data holds {len(market.instruments)} instrument(s)"
        raise ConfigError(msg)
    if s.feature == "traded_lots":
        from gpuflow.schema import KIND_EXECUTE, KIND_TRADE

        trade = (market.inst == m) & ((market.kind == KIND_TRADE) | (market.kind == KIND_EXECUTE))
        return np.cumsum(np.where(trade, market.qty, 0)).astype(np.float64)
    if s.levels > market.levels:
        msg = f"{where}: levels={s.levels} but the book holds {market.levels} (engine.levels)"
        raise ConfigError(msg)
    use = market.inst == m
    if complete is not None:
        use &= complete[market.row]
    # instrument m's usable book rows in book order (the order the book evolved in; a merge by ts_local
    # can reorder rows whose ts_local is not monotonic, e.g. a Binance snapshot synced before its time)
    pos = np.nonzero(use)[0]
    order = np.argsort(market.row[pos], kind="stable")
    rows = market.row[pos][order]
    # the time each row became known: the running maximum of ts_local in book order
    known = np.maximum.accumulate(market.ts[pos][order]) if rows.size else np.zeros(0, np.int64)
    frame = {"bid_price": market.bid_price[rows], "bid_qty": market.bid_qty[rows],
             "ask_price": market.ask_price[rows], "ask_qty": market.ask_qty[rows], "ts_local": known}
    vals = _feature_values(s.feature, frame, s.levels, backend)
    # k[e]: the latest book-order row of instrument m among those merged at or before event e (-1: none yet)
    k = np.full(n, -1, np.int64)
    k[pos[order]] = np.arange(rows.size)
    k = np.maximum.accumulate(k) if n else k
    out = np.full(n, np.nan)
    have = k >= 0
    if s.window_ns is None:
        out[have] = vals[k[have]]
    else:
        # trailing window (t - W, t]: rows lo .. k with known time > t - W (``known`` is sorted)
        finite = np.isfinite(vals)
        acc = np.int64 if vals.dtype.kind in "iu" else np.float64  # integer flows (OFI) sum exactly
        cs = np.concatenate([[0], np.cumsum(np.where(finite, vals, 0), dtype=acc)])
        bad = np.concatenate([[0], np.cumsum(~finite)])
        hi = k + 1
        lo = np.minimum(np.searchsorted(known, market.ts - s.window_ns, side="right"), hi)
        tot = (cs[hi] - cs[lo]).astype(np.float64)
        tot[(bad[hi] - bad[lo]) > 0] = np.nan
        out = tot  # before the first row the window is empty: its sum is 0
    if s.transform == "sign":
        out = np.sign(out)
    return out


def _feature_values(feat: str, frame: Mapping[str, np.ndarray], levels: int, backend: Any) -> np.ndarray:
    from gpuflow.backend import Backend, get_backend
    from gpuflow.features import book as fb
    from gpuflow.features import ofi as fo

    be = backend if isinstance(backend, Backend) else get_backend(backend)
    n = frame["ts_local"].size
    if n == 0:
        return np.zeros(0)
    # the flow before the first row is taken as zero (prev = row 0), not the build-up from an empty book
    prev = {k: frame[k][0] for k in ("bid_price", "bid_qty", "ask_price", "ask_qty")}
    if feat == "ofi":
        v = fo.ofi(frame, levels, prev=prev, backend=be)
    elif feat == "spread_adjusted_ofi":
        v = fo.spread_adjusted_ofi(frame, levels, prev=prev, backend=be)
    elif feat == "vwofi":
        v = fo.vwofi(frame, levels, prev=prev, backend=be)
    elif feat == "spread":
        v = fb.spread(frame, backend=be)
    elif feat == "mid":
        v = fb.mid(frame, backend=be)
    elif feat == "microprice":
        v = fb.microprice(frame, backend=be)
    else:
        v = fb.depth_imbalance(frame, levels, backend=be)
    v = be.to_host(v)
    if v.ndim == 2:
        v = v.sum(axis=1)  # multi-level OFI: the sum of the level OFIs (integers stay exact)
    return v


def _file_column(s: SignalSpec, n: int, where: str) -> np.ndarray:
    p = s.path or ""
    if not os.path.isfile(p):
        msg = f"{where}: signal file {p!r} does not exist"
        raise ConfigError(msg)
    if p.endswith(".npy"):
        a = np.load(p, allow_pickle=False)
        if a.ndim == 2:
            col = 0 if s.column is None else s.column
            if not isinstance(col, int) or not 0 <= col < a.shape[1]:
                msg = f"{where}: column {s.column!r} is not a column index of {p} (shape {a.shape})"
                raise ConfigError(msg)
            a = a[:, col]
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        col = t.column_names[0] if s.column is None else s.column
        if col not in t.column_names:
            msg = f"{where}: column {col!r} is not in {p}; it holds {t.column_names}"
            raise ConfigError(msg)
        a = t.column(col).to_numpy(zero_copy_only=False)
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size != n:
        msg = f"{where}: {p} holds {a.size} values; expected one per merged event ({n})"
        raise ConfigError(msg)
    return a
