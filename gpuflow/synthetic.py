r"""Seeded zero-intelligence Poisson limit order book (Cont, Stoikov and Talreja 2010).

Generates schema events (:data:`gpuflow.schema.EVENTS`) of any size, for demos and
for benchmarks far larger than the real samples.  The simulation runs in one numba
``njit`` core that writes into preallocated numpy arrays; a :class:`ZIGenerator`
carries the state between chunks, so a billion events can be produced in bounded
memory and the chunks concatenate to exactly the stream that one call produces.

Model
-----
The model is the one of R. Cont, S. Stoikov and R. Talreja, "A stochastic model for
order book dynamics", *Operations Research* 58(3):549-563, 2010 (CST), on an
integer tick grid, with order sizes in lots.  Write :math:`p_B` and :math:`p_A`
for the best bid and ask (ticks) and :math:`n_B(i)` (:math:`n_A(i)`) for the
number of orders resting on the bid (ask) at distance :math:`i` ticks from the
*opposite* best quote, i.e. at price :math:`p_A - i` (:math:`p_B + i`).
Independent Poisson clocks, all rates per model time unit:

* limit buy at price :math:`p_A - i` with rate :math:`\lambda(i)`, limit sell at
  :math:`p_B + i` with rate :math:`\lambda(i)`, :math:`i = 1, \dots, K`
  (``n_levels``); by default CST's power-law fit

  .. math:: \lambda(i) = \frac{k}{i^{\alpha}}, \qquad k = 1.92,\ \alpha = 0.52,

  or any profile given as ``lambdas``;
* market buy and market sell, each with rate :math:`\mu` (default CST's 0.94);
* every resting order at distance :math:`i` is cancelled with rate
  :math:`\theta(i)` (so a level's cancellation rate is :math:`\theta(i)\,n(i)`).
  The default is CST's estimate
  :math:`\theta(1..5) = 0.71, 0.81, 0.68, 0.56, 0.47`, held at its last value
  beyond the given profile (:math:`\theta(i) = \theta(L)` for :math:`i > L`).

The defaults are the parameter estimates CST report for their Tokyo Stock
Exchange sample (raw arrival rates :math:`\lambda(1..5) = 1.85, 1.51, 1.09, 0.88,
0.77`, exported as ``CST_LAMBDAS``, to which the power law above is their fit;
:math:`\mu = 0.94`; :math:`\theta` as above), in orders per second with the
average order size as the unit.  Here one model time unit is ``time_unit_ns``
(default 1 ms, so the default book runs a thousand times faster than CST's
sample: tens of thousands of events per second, the pace of a liquid modern
market; set ``time_unit_ns=10**9`` for CST's clock).

The book is a continuous-time Markov chain; it is simulated exactly (Gillespie):
with total rate

.. math::

   R = 2\mu + 2\sum_{i=1}^{K}\lambda(i)
       + \sum_{i \ge 1} \theta(i)\,\bigl(n_B(i) + n_A(i)\bigr),

the time to the next event is exponential with mean :math:`1/R` and the event is
picked with probability rate / :math:`R`.  A cancelled order is chosen uniformly
among the orders at its level (each order has its own clock); a market order
executes against the orders at the opposite best quote in FIFO order and walks
to the next level when a level is exhausted.

Sizes: limit orders (and orders of the initial book) have size 1 lot by default,
or a geometric size on :math:`\{1, 2, \dots\}` with mean ``limit_size_mean``;
market orders likewise with ``market_size_mean`` (capped at the quantity
resting on the opposite side).

Boundary conditions (ours; CST work on a finite price grid, and these two rules
play that role).  They keep the book finite and never empty:

* *Refill*: if an event leaves a side without orders, ``initial_depth`` orders
  are placed on that side at distance ``K`` from the opposite best quote (the
  far level of the arrival window), in the same message.
* *Window*: orders farther than ``max_distance`` ticks (default :math:`4K`) from
  the opposite best quote are deleted (in the same message) when the opposite
  quote moves away from them.  Because both best quotes then stay within
  ``max_distance`` of each other, every live order lies in a span of fewer than
  ``2 * max_distance`` ticks, and the book is held in dense arrays of level sizes
  indexed by ``price mod W`` (``W`` a power of two above that span): no
  re-centring is ever needed as the price wanders.

Prices are not otherwise bounded: the mid wanders like a random walk (at the
defaults, a few hundred ticks over 10**7 events, some thousands over 10**9), so the
default start price of 1,000,000 ticks keeps prices positive in any practical run.

Output
------
Every simulated event becomes one *message* of one or more rows sharing one
timestamp; ``FLAG_EOM`` marks the last row of each message (the book is
consistent after it).  ``seq`` is the row index in the stream (0, 1, ...),
``ts_exch = start_ns + floor(t * time_unit_ns)`` with ``t`` the model time, and
``ts_local = ts_exch + latency_ns``.

``mode="l2"``: the initial book is a ``KIND_CLEAR`` row (``FLAG_SNAPSHOT |
FLAG_SNAPSHOT_BEGIN``) followed by one ``KIND_SNAPSHOT`` row per level (bids best
to deep, then asks), the last with ``FLAG_SNAPSHOT_END | FLAG_EOM``.  Each later
change of a level is a ``KIND_SET`` row (side, price, new level size).  A market
order emits, per level it trades at, a ``KIND_TRADE`` row (side = aggressor,
price, traded lots) and then the ``KIND_SET`` row of that level.

``mode="l3"``: the initial book is a ``KIND_CLEAR`` row and one ``KIND_ADD`` row
per order (flagged as a snapshot as above).  A limit order is a ``KIND_ADD`` with
a new ``order_id`` (unique, increasing from 1); a cancellation (and a window
deletion) is a ``KIND_DELETE`` of that order with ``qty`` its remaining size; a
market order emits, per level, a ``KIND_TRADE`` row (aggressor side) followed by
one ``KIND_EXECUTE`` row per resting order it fills (``side`` the resting side,
``qty`` the executed lots, head of the queue first); an order whose remaining
size reaches 0 is gone.  ``trades=False`` drops the ``KIND_TRADE`` rows in both
modes.

With the same seed and parameters the two modes simulate the same book: the
levels of the ``l3`` stream aggregated after each message equal the ``l2``
stream's levels after the same message.

Exactly ``n_events`` rows are returned.  The stream is infinite and
``generate(n)`` is its first ``n`` rows, so the last message may be cut short
(its last row then lacks ``FLAG_EOM``); the next chunk of a :class:`ZIGenerator`
continues it.

Randomness
----------
The core draws its own numbers with xoshiro256** (Blackman and Vigna), whose
256-bit state is seeded from ``numpy.random.SeedSequence(seed)`` and carried in
the generator state between chunks; waiting times come from a 256-layer
Marsaglia-Tsang ziggurat for the exponential law.  Numba's built-in ``np.random`` is not used
because its state is global per thread and cannot be saved between chunks.  Same
seed and parameters give identical output on every platform; the draws do not
depend on ``mode``, ``trades``, ``latency_ns`` or the chunking.

Examples
--------
>>> from gpuflow.synthetic import generate
>>> t = generate(1000, seed=7)
>>> t.num_rows
1000
>>> generate(1000, seed=7).equals(t)
True
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from numba import njit
from numpy.typing import NDArray

from gpuflow.errors import GpuflowError
from gpuflow.schema import (
    EVENT_COLUMNS,
    EVENT_DTYPES,
    FLAG_EOM,
    FLAG_SNAPSHOT,
    FLAG_SNAPSHOT_BEGIN,
    FLAG_SNAPSHOT_END,
    KIND_ADD,
    KIND_CLEAR,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
    events_table,
)

__all__ = [
    "CST_LAMBDAS", "CST_THETAS", "DEFAULT_INSTRUMENT", "DEFAULT_START_NS", "ParameterError", "ZIGenerator",
    "ZIParams", "ZIState", "generate", "generate_arrays", "iter_chunks",
]

#: CST's estimated cancellation rates per resting order at distance 1..5 ticks (TSE data).
CST_THETAS: tuple[float, ...] = (0.71, 0.81, 0.68, 0.56, 0.47)
#: CST's estimated limit-order arrival rates at distance 1..5 ticks (the default uses their power-law fit).
CST_LAMBDAS: tuple[float, ...] = (1.85, 1.51, 1.09, 0.88, 0.77)
#: 2024-01-01T00:00:00Z in ns since the Unix epoch.
DEFAULT_START_NS = 1_704_067_200_000_000_000
#: Instrument metadata of generated tables unless another is given.
DEFAULT_INSTRUMENT = Instrument(venue="synthetic", symbol="ZI", tick_size="0.01", lot_size="1",
                                source="synthetic")
_META_KEY = b"gpuflow.synthetic"


class ParameterError(GpuflowError, ValueError):
    """A generator parameter is out of range (the message names it and its value)."""


# ---- parameters -------------------------------------------------------------------------------------

def _bad(name: str, value: Any, expected: str) -> ParameterError:
    return ParameterError(f"ZI generator parameter {name!r}: expected {expected}, got {value!r}")


def _check_int(name: str, value: Any, lo: int, expected: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < lo:
        raise _bad(name, value, expected or f"an integer >= {lo}")
    return int(value)


def _check_float(name: str, value: Any, lo: float, strict: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > lo if strict else v >= lo)
    if not ok:
        raise _bad(name, value, f"a finite number {'>' if strict else '>='} {lo}")
    return float(value)


def _check_profile(name: str, value: Any, length: int | None) -> tuple[float, ...]:
    try:
        vals = tuple(value)
    except TypeError:
        raise _bad(name, value, "a sequence of non-negative rates") from None
    if not vals or (length is not None and len(vals) != length):
        want = f"{length} non-negative rates (one per level)" if length else "a non-empty sequence of rates"
        raise _bad(name, value, want)
    for i, v in enumerate(vals):
        _check_float(f"{name}[{i}]", v, 0.0)
    return tuple(float(v) for v in vals)


@dataclass(frozen=True)
class ZIParams:
    """Parameters of the zero-intelligence book (see the module docstring for the model).

    Rates are per model time unit; prices are in ticks and sizes in lots.

    Parameters
    ----------
    n_levels : int
        ``K``: limit orders arrive at distance 1..K ticks from the opposite best quote.
    k, alpha : float
        Power-law arrival profile ``lambda(i) = k / i**alpha`` (CST's fit: 1.92, 0.52).
    lambdas : sequence of float, optional
        Explicit arrival rates for distances 1..K (overrides ``k`` and ``alpha``);
        ``lambdas=CST_LAMBDAS, n_levels=5`` gives CST's raw estimates.
    mu : float
        Rate of market buy orders, and of market sell orders.
    thetas : sequence of float
        Cancellation rate of one resting order at distance 1, 2, ... ticks from the
        opposite best quote; held at the last value for larger distances.
    max_distance : int, optional
        Orders farther than this from the opposite best quote are deleted (window
        rule); default ``4 * n_levels``.  Must be >= ``n_levels`` and >= ``len(thetas)``.
    initial_depth : int
        Orders per level in the initial book (K levels per side) and in a refill.
    limit_size_mean, market_size_mean : float
        Mean order size in lots: 1 gives unit sizes, above 1 a geometric size on 1, 2, ...
    time_unit_ns : int
        Nanoseconds per model time unit.
    start_price_ticks : int
        Initial best bid in ticks (the best ask is one tick above).
    queue_capacity : int
        Most orders one level can hold when orders are tracked (``mode="l3"`` or
        ``limit_size_mean > 1``), rounded up to a power of two; exceeding it raises.

    Raises
    ------
    ParameterError
        A parameter is out of range; the message names it and its value.

    Examples
    --------
    >>> p = ZIParams(n_levels=5, lambdas=CST_LAMBDAS, time_unit_ns=1_000_000_000)
    >>> p.arrival_rates[0], p.theta(7), p.distance
    (1.85, 0.47, 20)
    """

    n_levels: int = 10
    k: float = 1.92
    alpha: float = 0.52
    lambdas: tuple[float, ...] | None = None
    mu: float = 0.94
    thetas: tuple[float, ...] = CST_THETAS
    max_distance: int | None = None
    initial_depth: int = 5
    limit_size_mean: float = 1.0
    market_size_mean: float = 1.0
    time_unit_ns: int = 1_000_000
    start_price_ticks: int = 1_000_000
    queue_capacity: int = 256

    def __post_init__(self) -> None:
        # validate, and store plain Python numbers and tuples (numpy scalars would not go to JSON)
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        K = _check_int("n_levels", self.n_levels, 1)
        put("n_levels", K)
        put("k", _check_float("k", self.k, 0.0, strict=True))
        put("alpha", _check_float("alpha", self.alpha, 0.0))
        if self.lambdas is not None:
            put("lambdas", _check_profile("lambdas", self.lambdas, K))
        put("mu", _check_float("mu", self.mu, 0.0))
        put("thetas", _check_profile("thetas", self.thetas, None))
        nt = len(self.thetas)
        if self.max_distance is not None:
            put("max_distance", _check_int("max_distance", self.max_distance, max(K, nt),
                                           f"an integer >= n_levels ({K}) and >= len(thetas) ({nt})"))
        elif 4 * K < nt:
            raise _bad("thetas", self.thetas, f"at most max_distance = 4 * n_levels = {4 * K} rates "
                       "(or set max_distance)")
        put("initial_depth", _check_int("initial_depth", self.initial_depth, 1))
        put("limit_size_mean", _check_float("limit_size_mean", self.limit_size_mean, 1.0))
        put("market_size_mean", _check_float("market_size_mean", self.market_size_mean, 1.0))
        put("time_unit_ns", _check_int("time_unit_ns", self.time_unit_ns, 1))
        put("start_price_ticks", _check_int("start_price_ticks", self.start_price_ticks, self.distance + 1,
                                            f"an integer > max_distance ({self.distance}) so that prices "
                                            "stay positive"))
        put("queue_capacity", _check_int("queue_capacity", self.queue_capacity, self.initial_depth,
                                         f"an integer >= initial_depth ({self.initial_depth})"))
        if self.mu == 0 and sum(self.arrival_rates) == 0:
            msg = (f"ZI generator parameters 'mu' ({self.mu}) and the arrival rates ({self.arrival_rates}) "
                   "are all 0: nothing would ever happen; make one positive")
            raise ParameterError(msg)

    @property
    def distance(self) -> int:
        """``max_distance`` resolved (ticks)."""
        return int(self.max_distance) if self.max_distance is not None else 4 * int(self.n_levels)

    @property
    def arrival_rates(self) -> tuple[float, ...]:
        """``lambda(i)`` for i = 1..K."""
        if self.lambdas is not None:
            return tuple(self.lambdas)
        return tuple(self.k / i ** self.alpha for i in range(1, self.n_levels + 1))

    def theta(self, i: int) -> float:
        """Cancellation rate of one resting order at distance ``i >= 1`` ticks."""
        return self.thetas[min(i, len(self.thetas)) - 1]


# ---- jitted core ------------------------------------------------------------------------------------
# Every jitted function is compiled with numba's ``_nrt=False``: none of them allocates, and
# without it numba reference-counts the many array arguments (atomic increments) at every
# helper call, which measured as more than half the run time.  The core is one loop with no
# per-message call; output columns travel as one tuple ``o`` (ts, kind, side, price, qty,
# order_id, flags).  The book state is "dense level arrays indexed by price mod W".

_FAST = {"_nrt": False}

# integer parameters (ipar)
_P_K, _P_D, _P_LT, _P_WMASK, _P_CMASK, _P_DEPTH, _P_TRACK, _P_L3, _P_TRADES, _P_START_NS = range(10)
_N_IPAR = 10
# float parameters (fpar)
_F_MU, _F_LAM, _F_GL_LIMIT, _F_GL_MARKET, _F_UNIT_NS = range(5)
_N_FPAR = 5
# integer state (ist): best bid/ask, orders and lots per side, next order id, flags
_S_B, _S_A, _S_NB, _S_NA, _S_QB, _S_QA, _S_OID, _S_STARTED, _S_ERR, _S_ERR_PRICE, _S_DIRTY = range(11)
_N_IST = 11
# float state (fst): model time, cancellation rates of the bid and the ask side
_T_TIME, _T_CB, _T_CA = range(3)
_N_FST = 3

_INV_2_53 = 1.0 / 9007199254740992.0


@njit(**_FAST)
def _rotl(x, k):  # pragma: no cover - jitted
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(**_FAST)
def _next_u64(s):  # pragma: no cover - jitted
    """xoshiro256** step on the uint64[4] state ``s``; returns the next uint64."""
    s0 = s[0]
    s1 = s[1]
    s2 = s[2]
    s3 = s[3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    s[0] = s0
    s[1] = s1
    s[2] = s2
    s[3] = s3
    return result


@njit(**_FAST)
def _uniform(s):  # pragma: no cover - jitted
    """Uniform float64 on [0, 1) from the top 53 bits."""
    return np.float64(_next_u64(s) >> np.uint64(11)) * _INV_2_53


def _ziggurat_tables() -> tuple[float, NDArray[np.float64], NDArray[np.uint64], NDArray[np.float64]]:
    """Marsaglia-Tsang (2000) ziggurat for Exp(1): 256 layers of equal area ``v``.

    Layer 0 is the base, of width ``x[0] = v / f(r)`` (its part beyond ``r`` stands
    for the tail); layer ``i >= 1`` spans ``[0, x[i]]`` between heights ``f(x[i])``
    and ``f(x[i + 1])``, with ``x[i + 1] = f^-1(v / x[i] + f(x[i]))`` and ``x[256] = 0``.
    For a 53-bit integer ``ri``: ``x = ri * W[i]``, accepted at once when ``ri < K[i]``
    (that is ``x < x[i + 1]``, under the curve).
    """
    r = 7.69711747013104972
    v = math.exp(-r) * (r + 1.0)
    x = np.zeros(257)
    x[0] = v / math.exp(-r)
    x[1] = r
    for i in range(1, 255):
        x[i + 1] = -math.log(v / x[i] + math.exp(-x[i]))
    w = x[:256] / 2.0 ** 53
    k = np.array([int(x[i + 1] / x[i] * 2.0 ** 53) for i in range(256)], dtype=np.uint64)
    return r, w, k, np.exp(-x)


_ZIG_R, _ZIG_W, _ZIG_K, _ZIG_F = _ziggurat_tables()


@njit(**_FAST)
def _exponential(s):  # pragma: no cover - jitted
    """Exp(1) draw by the ziggurat (about 1.01 uint64 draws and rarely a log)."""
    while True:
        r = _next_u64(s)
        i = np.int64(r & np.uint64(255))
        ri = r >> np.uint64(11)  # bits 11..63, disjoint from the layer bits 0..7
        x = np.float64(ri) * _ZIG_W[i]
        if ri < _ZIG_K[i]:
            return x
        if i == 0:
            return _ZIG_R - math.log1p(-_uniform(s))
        if _ZIG_F[i] + _uniform(s) * (_ZIG_F[i + 1] - _ZIG_F[i]) < math.exp(-x):
            return x


@njit(cache=True)
def _xoshiro_draws(s, n):  # pragma: no cover - jitted
    """``n`` raw xoshiro256** outputs (tests compare them with the reference algorithm)."""
    out = np.empty(n, np.uint64)
    for i in range(n):
        out[i] = _next_u64(s)
    return out


@njit(cache=True)
def _exponential_draws(s, n):  # pragma: no cover - jitted
    """``n`` Exp(1) draws (tests check the ziggurat's distribution)."""
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = _exponential(s)
    return out


@njit(**_FAST)
def _size(s, gl):  # pragma: no cover - jitted
    """Order size in lots: 1 when ``gl == 0`` (no draw), else geometric on 1, 2, ... with
    ``P(size > m) = exp(gl * m)``, ``gl = log(1 - 1 / mean)``."""
    if gl == 0.0:
        return np.int64(1)
    return np.int64(1) + np.int64(math.log1p(-_uniform(s)) / gl)


@njit(**_FAST)
def _emit(o, p, ts, kind, side, price, q, oid, flags):  # pragma: no cover - jitted
    """Write one row at ``p`` of the output columns ``o``; return ``p + 1``."""
    o[0][p] = ts
    o[1][p] = kind
    o[2][p] = side
    o[3][p] = price
    o[4][p] = q
    o[5][p] = oid
    o[6][p] = flags
    return p + 1


@njit(**_FAST)
def _remove_at(fid, fsz, fhead, n, slot, j, cmask):  # pragma: no cover - jitted
    """Remove the ``j``-th order (0 = head) of the ring buffer at ``slot`` holding ``n`` orders,
    shifting the shorter side so that queue order is kept."""
    h = fhead[slot]
    if j < n - 1 - j:
        for t in range(j, 0, -1):  # orders ahead of j move back one place, the head advances
            fid[slot, (h + t) & cmask] = fid[slot, (h + t - 1) & cmask]
            fsz[slot, (h + t) & cmask] = fsz[slot, (h + t - 1) & cmask]
        fhead[slot] = (h + 1) & cmask
    else:
        for t in range(j, n - 1):
            fid[slot, (h + t) & cmask] = fid[slot, (h + t + 1) & cmask]
            fsz[slot, (h + t) & cmask] = fsz[slot, (h + t + 1) & cmask]


@njit(**_FAST)
def _add_orders(o, p, ts, flags, side, price, count, rng, ipar, fpar, ist, qty, nord, fid, fsz,
                fhead):  # pragma: no cover - jitted
    """Rest ``count`` new orders at (side, price) (initial book, refill); emit one ADD row per
    order (l3) or one SNAPSHOT/SET row (l2).  Returns the next row, or -1 on queue overflow."""
    slot = price & ipar[_P_WMASK]
    track = ipar[_P_TRACK] != 0
    l3 = ipar[_P_L3] != 0
    cmask = ipar[_P_CMASK]
    for _ in range(count):
        sz = _size(rng, fpar[_F_GL_LIMIT])
        oid = ist[_S_OID]
        ist[_S_OID] = oid + 1
        if track:
            n = nord[slot]
            if n > cmask:
                ist[_S_ERR] = 1
                ist[_S_ERR_PRICE] = price
                return -1
            pos = (fhead[slot] + n) & cmask
            fid[slot, pos] = oid
            fsz[slot, pos] = sz
        qty[slot] += sz
        nord[slot] += 1
        if side > 0:
            ist[_S_NB] += 1
            ist[_S_QB] += sz
        else:
            ist[_S_NA] += 1
            ist[_S_QA] += sz
        if l3:
            p = _emit(o, p, ts, KIND_ADD, side, price, sz, oid, flags)
    if not l3:
        kind = KIND_SNAPSHOT if flags & FLAG_SNAPSHOT else KIND_SET
        p = _emit(o, p, ts, kind, side, price, qty[slot], 0, flags)
    return p


@njit(**_FAST)
def _delete_level(o, p, ts, side, price, ipar, ist, qty, nord, fid, fsz, fhead):  # pragma: no cover
    """Delete every order at (side, price) (window rule): DELETE rows (l3) or one SET 0 (l2)."""
    slot = price & ipar[_P_WMASK]
    n = nord[slot]
    cmask = ipar[_P_CMASK]
    if ipar[_P_L3] != 0:
        h = fhead[slot]
        for t in range(n):
            pos = (h + t) & cmask
            p = _emit(o, p, ts, KIND_DELETE, side, price, fsz[slot, pos], fid[slot, pos], 0)
    else:
        p = _emit(o, p, ts, KIND_SET, side, price, 0, 0, 0)
    if side > 0:
        ist[_S_NB] -= n
        ist[_S_QB] -= qty[slot]
    else:
        ist[_S_NA] -= n
        ist[_S_QA] -= qty[slot]
    qty[slot] = 0
    nord[slot] = 0
    fhead[slot] = 0
    return p


@njit(cache=True, **_FAST)
def _run_(n_out, p, o, rng, ipar, fpar, ist, fst, qty, nord, fid, fsz, fhead, alias,
          theta):  # pragma: no cover - jitted
    """Simulate events and append their messages at row ``p`` of the columns ``o`` until at
    least ``n_out`` rows are filled.

    The columns must hold ``n_out`` rows plus the largest possible message: the rows past
    ``n_out`` start the next chunk.  Returns the rows filled (>= ``n_out``), or -1 when a
    level's queue overflows (``ist[_S_ERR_PRICE]`` says where).

    Book: ``qty[p & M]`` / ``nord[p & M]`` are the lots / orders at price ``p`` (every live
    price lies in a span shorter than ``W = M + 1``); with order tracking, ``fid``/``fsz``
    hold each level's FIFO of order ids / sizes as a ring buffer starting at ``fhead``.
    ``alias`` is the (2, K) alias table of the arrival profile, ``theta`` the per-order
    cancellation rates at distance 1..LT (flat beyond).
    """
    K = ipar[_P_K]
    D = ipar[_P_D]
    LT = ipar[_P_LT]
    M = ipar[_P_WMASK]
    cmask = ipar[_P_CMASK]
    depth = ipar[_P_DEPTH]
    track = ipar[_P_TRACK] != 0
    l3 = ipar[_P_L3] != 0
    trades = ipar[_P_TRADES] != 0
    start_ns = ipar[_P_START_NS]
    mu = fpar[_F_MU]
    lam = fpar[_F_LAM]
    gl_limit = fpar[_F_GL_LIMIT]
    gl_market = fpar[_F_GL_MARKET]
    unit_ns = fpar[_F_UNIT_NS]
    th_far = theta[LT - 1]
    lam_k = K / lam if lam > 0.0 else 0.0
    o_flags = o[6]

    while p < n_out:
        if ist[_S_STARTED] == 0:
            # initial book: CLEAR, then K levels per side of initial_depth orders each
            ist[_S_STARTED] = 1
            B = ist[_S_B]
            A = ist[_S_A]
            p = _emit(o, p, start_ns, KIND_CLEAR, 0, 0, 0, 0, FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN)
            for side in (1, -1):
                for i in range(1, K + 1):
                    price = A - i if side > 0 else B + i
                    p = _add_orders(o, p, start_ns, FLAG_SNAPSHOT, side, price, depth, rng, ipar, fpar, ist,
                                    qty, nord, fid, fsz, fhead)
                    if p < 0:
                        return -1
            o_flags[p - 1] |= FLAG_SNAPSHOT_END | FLAG_EOM
            continue

        B0 = ist[_S_B]
        A0 = ist[_S_A]
        NB = ist[_S_NB]
        NA = ist[_S_NA]

        # cancellation rates cb = sum_i theta(i) n_B(i) and ca likewise: recomputed after a
        # quote moved or a multi-row event, else updated by the one order that came or went
        # (deterministically, so chunking cannot change the stream)
        if ist[_S_DIRTY] != 0:
            cb = 0.0
            ca = 0.0
            nb_near = np.int64(0)
            na_near = np.int64(0)
            for i in range(1, LT + 1):
                nb = nord[(A0 - i) & M]
                na = nord[(B0 + i) & M]
                cb += theta[i - 1] * nb
                ca += theta[i - 1] * na
                nb_near += nb
                na_near += na
            cb += th_far * (NB - nb_near)
            ca += th_far * (NA - na_near)
            ist[_S_DIRTY] = 0
        else:
            cb = fst[_T_CB]
            ca = fst[_T_CA]
        rate = 2.0 * mu + 2.0 * lam + cb + ca

        # Gillespie step: exponential waiting time, then the event with probability rate / total
        t = fst[_T_TIME] + _exponential(rng) / rate
        fst[_T_TIME] = t
        ts = start_ns + np.int64(t * unit_ns)
        x = _uniform(rng) * rate

        if x < 2.0 * mu:
            # ---- market order: aggressor +1 (buy) eats asks, -1 (sell) eats bids, FIFO per level
            agg = 1 if x < mu else -1
            rest = -agg
            size = min(_size(rng, gl_market), ist[_S_QA] if agg > 0 else ist[_S_QB])
            price = A0 if agg > 0 else B0
            while size > 0:
                slot = price & M
                take = min(qty[slot], size)
                if trades:
                    p = _emit(o, p, ts, KIND_TRADE, agg, price, take, 0, 0)
                removed = np.int64(0)
                if track:
                    left = take
                    while left > 0:
                        h = fhead[slot]
                        hs = fsz[slot, h]
                        e = min(hs, left)
                        if l3:
                            p = _emit(o, p, ts, KIND_EXECUTE, rest, price, e, fid[slot, h], 0)
                        left -= e
                        if e == hs:
                            fhead[slot] = (h + 1) & cmask
                            nord[slot] -= 1
                            removed += 1
                        else:
                            fsz[slot, h] = hs - e
                else:
                    nord[slot] -= take  # unit orders: one order per lot
                    removed = take
                qty[slot] -= take
                size -= take
                if nord[slot] == 0:
                    fhead[slot] = 0
                if rest > 0:
                    ist[_S_NB] -= removed
                    ist[_S_QB] -= take
                else:
                    ist[_S_NA] -= removed
                    ist[_S_QA] -= take
                if not l3:
                    p = _emit(o, p, ts, KIND_SET, rest, price, qty[slot], 0, 0)
                if qty[slot] == 0:
                    if (ist[_S_NB] if rest > 0 else ist[_S_NA]) == 0:
                        break  # the side is empty: refilled below
                    # the next level away from the spread (exists: the side is not empty)
                    price -= rest
                    while nord[price & M] == 0:
                        price -= rest
            if rest > 0:
                ist[_S_B] = price
            else:
                ist[_S_A] = price
            ist[_S_DIRTY] = 1
        else:
            x -= 2.0 * mu
            if x < 2.0 * lam:
                # ---- limit order at distance i + 1 from the opposite best quote
                side = 1
                if x >= lam:
                    side = -1
                    x -= lam
                # Walker's alias method on v = K x / lam, uniform on [0, K)
                v = x * lam_k
                i = min(np.int64(v), K - 1)
                if v - i >= alias[0, i]:
                    i = np.int64(alias[1, i])
                price = A0 - (i + 1) if side > 0 else B0 + (i + 1)
                slot = price & M
                sz = _size(rng, gl_limit)
                oid = ist[_S_OID]
                ist[_S_OID] = oid + 1
                if track:
                    n = nord[slot]
                    if n > cmask:
                        ist[_S_ERR] = 1
                        ist[_S_ERR_PRICE] = price
                        return -1
                    pos = (fhead[slot] + n) & cmask
                    fid[slot, pos] = oid
                    fsz[slot, pos] = sz
                qty[slot] += sz
                nord[slot] += 1
                if side > 0:
                    ist[_S_NB] = NB + 1
                    ist[_S_QB] += sz
                    cb += theta[i]  # i + 1 <= K <= LT
                    if price > B0:
                        ist[_S_B] = price
                        ist[_S_DIRTY] = 1
                else:
                    ist[_S_NA] = NA + 1
                    ist[_S_QA] += sz
                    ca += theta[i]
                    if price < A0:
                        ist[_S_A] = price
                        ist[_S_DIRTY] = 1
                if l3:
                    p = _emit(o, p, ts, KIND_ADD, side, price, sz, oid, 0)
                else:
                    p = _emit(o, p, ts, KIND_SET, side, price, qty[slot], 0, 0)
            else:
                # ---- cancellation of one resting order, uniform among the orders of its level
                x -= 2.0 * lam
                side = 1
                ref = A0
                ntot = NB
                if x >= cb:
                    side = -1
                    ref = B0
                    ntot = NA
                    x -= cb
                chosen = np.int64(0)
                j = np.int64(-1)
                last = np.int64(0)
                nnear = np.int64(0)
                th = th_far
                for i in range(1, LT + 1):
                    price = ref - i if side > 0 else ref + i
                    n = nord[price & M]
                    if n > 0:
                        last = price
                        nnear += n
                        w = theta[i - 1] * n
                        if x < w:
                            # x / theta(i) is uniform on [0, n): the order's place in the queue
                            chosen = price
                            th = theta[i - 1]
                            j = min(np.int64(x / th), n - 1)
                            break
                        x -= w
                if j < 0 and ntot > nnear:
                    # beyond LT every order has rate th_far: the m-th far order
                    m = np.int64(x / th_far) if th_far > 0.0 else np.int64(0)
                    m = min(m, ntot - nnear - 1)
                    for i in range(LT + 1, D + 1):
                        price = ref - i if side > 0 else ref + i
                        n = nord[price & M]
                        if n > 0:
                            last = price
                            if m < n:
                                chosen = price
                                j = m
                                break
                            m -= n
                if j < 0:
                    # only reachable through float rounding at the end of the walk
                    chosen = last
                    j = nord[last & M] - 1
                    ist[_S_DIRTY] = 1
                slot = chosen & M
                n = nord[slot]
                if track:
                    pos = (fhead[slot] + j) & cmask
                    sz = fsz[slot, pos]
                    oid = fid[slot, pos]
                    _remove_at(fid, fsz, fhead, n, slot, j, cmask)
                else:
                    sz = np.int64(1)
                    oid = np.uint64(0)
                qty[slot] -= sz
                nord[slot] = n - 1
                if n == 1:
                    fhead[slot] = 0
                if side > 0:
                    ist[_S_NB] = NB - 1
                    ist[_S_QB] -= sz
                    cb -= th
                else:
                    ist[_S_NA] = NA - 1
                    ist[_S_QA] -= sz
                    ca -= th
                if l3:
                    p = _emit(o, p, ts, KIND_DELETE, side, chosen, sz, oid, 0)
                else:
                    p = _emit(o, p, ts, KIND_SET, side, chosen, qty[slot], 0, 0)
                if n == 1 and chosen == (B0 if side > 0 else A0):
                    # the best level went: the next one (if the side is empty, refilled below)
                    ist[_S_DIRTY] = 1
                    if (NB if side > 0 else NA) > 1:
                        b = chosen - side
                        while nord[b & M] == 0:
                            b -= side
                        if side > 0:
                            ist[_S_B] = b
                        else:
                            ist[_S_A] = b
        fst[_T_CB] = cb
        fst[_T_CA] = ca

        # ---- refill an emptied side at distance K from the opposite quote
        if ist[_S_NB] == 0 or ist[_S_NA] == 0:
            side = 1 if ist[_S_NB] == 0 else -1
            price = ist[_S_A] - K if side > 0 else ist[_S_B] + K
            p = _add_orders(o, p, ts, 0, side, price, depth, rng, ipar, fpar, ist, qty, nord, fid, fsz, fhead)
            if p < 0:
                return -1
            ist[_S_B if side > 0 else _S_A] = price
            ist[_S_DIRTY] = 1

        # ---- window rule: delete orders now farther than D from the opposite quote
        for price in range(A0 - D, ist[_S_A] - D):
            if nord[price & M] > 0:
                p = _delete_level(o, p, ts, 1, price, ipar, ist, qty, nord, fid, fsz, fhead)
                ist[_S_DIRTY] = 1
        for price in range(ist[_S_B] + D + 1, B0 + D + 1):
            if nord[price & M] > 0:
                p = _delete_level(o, p, ts, -1, price, ipar, ist, qty, nord, fid, fsz, fhead)
                ist[_S_DIRTY] = 1

        o_flags[p - 1] |= FLAG_EOM
    return p


# ---- Python façade ----------------------------------------------------------------------------------

_CORE_COLUMNS = ("ts_exch", "kind", "side", "price", "qty", "order_id", "flags")


def _alias_table(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Walker/Vose alias table, shape (2, K): for ``v`` uniform on [0, K) the drawn index is
    ``j = floor(v)`` if ``v - j < table[0, j]``, else ``table[1, j]``."""
    k = len(weights)
    prob = np.asarray(weights, dtype=np.float64) * (k / float(np.sum(weights)))
    table = np.zeros((2, k), dtype=np.float64)
    table[1] = np.arange(k)
    small = [i for i in range(k) if prob[i] < 1.0]
    large = [i for i in range(k) if prob[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        table[0, s] = prob[s]
        table[1, s] = g
        prob[g] -= 1.0 - prob[s]
        (small if prob[g] < 1.0 else large).append(g)
    for i in small + large:  # what is left has probability 1 up to rounding
        table[0, i] = 1.0
        table[1, i] = i
    return table


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _seed_state(seed: Any) -> NDArray[np.uint64]:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise _bad("seed", seed, "a non-negative integer")
    s = np.random.SeedSequence(int(seed)).generate_state(4, dtype=np.uint64)
    if not s.any():  # xoshiro's one forbidden state
        s[0] = 1
    return s


@dataclass
class ZIState:
    """Everything a :class:`ZIGenerator` carries from one chunk to the next (host numpy arrays).

    Attributes
    ----------
    rng : ndarray of uint64, shape (4,)
        xoshiro256** state.
    ist : ndarray of int64
        Best bid and ask (ticks), orders and lots per side, next order id, flags.
    fst : ndarray of float64, shape (3,)
        Model time of the last event (model time units) and the cancellation rates of
        the bid and the ask side.
    qty_lots, n_orders : ndarray of int64, shape (W,)
        Lots and orders resting at price ``p`` (either side), at index ``p % W``.
    fifo_id, fifo_lots : ndarray of uint64 / int64, shape (W, C)
        Per-level ring buffers of resting order ids and sizes, oldest first from
        ``fifo_head`` (shape (W, 1) and unused when orders are not tracked).
    fifo_head : ndarray of int64, shape (W,)
        Ring-buffer position of each level's oldest order.
    carry : tuple of ndarray
        Rows of the message cut at the end of the last chunk, which open the next chunk
        (columns ts_exch, kind, side, price, qty, order_id, flags).
    rows_emitted : int
        Rows produced so far: the ``seq`` of the next row.
    """

    rng: NDArray[np.uint64]
    ist: NDArray[np.int64]
    fst: NDArray[np.float64]
    qty_lots: NDArray[np.int64]
    n_orders: NDArray[np.int64]
    fifo_id: NDArray[np.uint64]
    fifo_lots: NDArray[np.int64]
    fifo_head: NDArray[np.int64]
    carry: tuple[np.ndarray, ...]
    rows_emitted: int = 0

    def copy(self) -> ZIState:
        """A deep copy: a checkpoint that a generator can resume from (``gen.state = copy``)."""
        return ZIState(self.rng.copy(), self.ist.copy(), self.fst.copy(), self.qty_lots.copy(),
                       self.n_orders.copy(), self.fifo_id.copy(), self.fifo_lots.copy(),
                       self.fifo_head.copy(), tuple(c.copy() for c in self.carry), self.rows_emitted)

    @property
    def best_bid_ticks(self) -> int:
        """Best bid after the last simulated message."""
        return int(self.ist[_S_B])

    @property
    def best_ask_ticks(self) -> int:
        """Best ask after the last simulated message."""
        return int(self.ist[_S_A])

    @property
    def model_time(self) -> float:
        """Model time of the last simulated message (model time units)."""
        return float(self.fst[_T_TIME])


class ZIGenerator:
    """A zero-intelligence event stream produced chunk by chunk.

    The book state lives in :attr:`state` (host memory, a few hundred kB at the
    defaults); each :meth:`take_arrays` call continues the stream where the last
    one stopped, so the chunks concatenate to one :func:`generate` call.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed and parameters give the same stream.
    mode : {"l2", "l3"}
        Level sets (``"l2"``) or per-order events (``"l3"``); see the module docstring.
    params : ZIParams, optional
        Model parameters (default ``ZIParams()``).
    start_ns : int
        Timestamp (ns since the Unix epoch, UTC) of model time 0; default 2024-01-01T00:00:00Z.
    instrument : Instrument, optional
        Metadata of the tables (default :data:`DEFAULT_INSTRUMENT`).
    trades : bool
        Emit a ``KIND_TRADE`` row for each level a market order trades at.
    latency_ns : int
        Constant ``ts_local - ts_exch`` (ns).

    Examples
    --------
    >>> g = ZIGenerator(seed=1, mode="l3")
    >>> a = g.take_arrays(500)
    >>> b = g.take_arrays(500)  # continues the same stream
    >>> int(b["seq"][0])
    500
    """

    def __init__(self, *, seed: int, mode: Literal["l2", "l3"] = "l2", params: ZIParams | None = None,
                 start_ns: int = DEFAULT_START_NS, instrument: Instrument | None = None, trades: bool = True,
                 latency_ns: int = 0) -> None:
        if mode not in ("l2", "l3"):
            raise _bad("mode", mode, "'l2' or 'l3'")
        if params is None:
            params = ZIParams()
        elif not isinstance(params, ZIParams):
            raise _bad("params", params, "a ZIParams instance")
        if instrument is not None and not isinstance(instrument, Instrument):
            raise _bad("instrument", instrument, "a gpuflow.schema.Instrument or None")
        self.seed = seed
        self.mode = mode
        self.params = params
        self.start_ns = _check_int("start_ns", start_ns, 0, "a non-negative integer (ns since the epoch)")
        self.instrument = instrument or DEFAULT_INSTRUMENT
        self.trades = bool(trades)
        self.latency_ns = _check_int("latency_ns", latency_ns, 0)
        self._rng0 = _seed_state(seed)
        self._setup()
        self.state = self._initial_state()

    def _setup(self) -> None:
        pr = self.params
        K = pr.n_levels
        D = pr.distance
        self._theta = np.array(pr.thetas + (pr.thetas[-1],) * max(0, K - len(pr.thetas)), dtype=np.float64)
        lam = np.array(pr.arrival_rates, dtype=np.float64)
        self._alias = _alias_table(lam) if lam.sum() > 0 else np.zeros((2, K))
        l3 = self.mode == "l3"
        self._track = l3 or pr.limit_size_mean > 1.0
        # every live price lies in a span < 2D (module docstring), so p % W never collides
        self._W = _pow2_at_least(2 * D + 2)
        self._C = _pow2_at_least(pr.queue_capacity) if self._track else 1
        depth = pr.initial_depth
        # most rows one message can take: the initial book, or (l3) a market order through a
        # whole side plus a refill plus window deletions of the other side (l2: per level)
        init_rows = 1 + (2 * K * depth if l3 else 2 * K)
        msg_rows = 3 * 2 * D * self._C + depth + 8 if l3 else 3 * D + 8
        self._msg_rows = max(init_rows, msg_rows)
        ipar = np.zeros(_N_IPAR, np.int64)
        ipar[_P_K] = K
        ipar[_P_D] = D
        ipar[_P_LT] = len(self._theta)
        ipar[_P_WMASK] = self._W - 1
        ipar[_P_CMASK] = self._C - 1
        ipar[_P_DEPTH] = depth
        ipar[_P_TRACK] = int(self._track)
        ipar[_P_L3] = int(l3)
        ipar[_P_TRADES] = int(self.trades)
        ipar[_P_START_NS] = self.start_ns
        self._ipar = ipar
        fpar = np.zeros(_N_FPAR, np.float64)
        fpar[_F_MU] = pr.mu
        fpar[_F_LAM] = float(lam.sum())
        fpar[_F_GL_LIMIT] = math.log1p(-1.0 / pr.limit_size_mean) if pr.limit_size_mean > 1.0 else 0.0
        fpar[_F_GL_MARKET] = math.log1p(-1.0 / pr.market_size_mean) if pr.market_size_mean > 1.0 else 0.0
        fpar[_F_UNIT_NS] = float(pr.time_unit_ns)
        self._fpar = fpar

    def _initial_state(self) -> ZIState:
        ist = np.zeros(_N_IST, np.int64)
        ist[_S_B] = self.params.start_price_ticks
        ist[_S_A] = self.params.start_price_ticks + 1
        ist[_S_OID] = 1
        ist[_S_DIRTY] = 1
        W, C = self._W, self._C
        carry = tuple(np.zeros(0, EVENT_DTYPES[c]) for c in _CORE_COLUMNS)
        return ZIState(self._rng0.copy(), ist, np.zeros(_N_FST, np.float64), np.zeros(W, np.int64),
                       np.zeros(W, np.int64), np.zeros((W, C), np.uint64), np.zeros((W, C), np.int64),
                       np.zeros(W, np.int64), carry, 0)

    def take_arrays(self, n_events: int) -> dict[str, NDArray[Any]]:
        """The next ``n_events`` rows as host numpy columns (schema dtypes); advances the state.

        Returns
        -------
        dict of str to ndarray
            One array per event column, in ``EVENT_COLUMNS`` order.

        Raises
        ------
        ParameterError
            ``n_events`` is negative.
        GpuflowError
            A level's queue outgrew ``ZIParams.queue_capacity``; the generator is then unusable.
        """
        n = _check_int("n_events", n_events, 0)
        st = self.state
        if st.ist[_S_ERR]:
            msg = "this ZIGenerator failed earlier (queue overflow); create a new one"
            raise GpuflowError(msg)
        n_carry = len(st.carry[0])
        if n_carry >= n:
            # the rest of the last message covers this chunk
            out = tuple(a[:n].copy() for a in st.carry)
            st.carry = tuple(a[n:].copy() for a in st.carry)
        else:
            # room for n rows plus the largest message, which may run past n into the next chunk
            buf = tuple(np.empty(n + self._msg_rows, EVENT_DTYPES[c]) for c in _CORE_COLUMNS)
            for a, b in zip(buf, st.carry):
                a[:n_carry] = b
            r = _run_(n, n_carry, buf, st.rng, self._ipar, self._fpar, st.ist, st.fst, st.qty_lots,
                      st.n_orders, st.fifo_id, st.fifo_lots, st.fifo_head, self._alias, self._theta)
            if r < 0:
                msg = (f"ZI generator: the queue at price {int(st.ist[_S_ERR_PRICE])} ticks outgrew "
                       f"queue_capacity={self.params.queue_capacity} (rounded up to {self._C} orders) after "
                       f"about {st.rows_emitted:,} rows; raise ZIParams.queue_capacity or lower the arrival "
                       "rates")
                raise GpuflowError(msg)
            st.carry = tuple(a[n:r].copy() for a in buf)
            # views would keep the slack alive: fine for big chunks, copy small ones
            big = n >= 8 * self._msg_rows
            out = tuple(a[:n] if big else a[:n].copy() for a in buf)
        cols = dict(zip(_CORE_COLUMNS, out))
        cols["seq"] = np.arange(st.rows_emitted, st.rows_emitted + n, dtype=np.int64)
        ts = cols["ts_exch"]
        cols["ts_local"] = ts + np.int64(self.latency_ns) if self.latency_ns else ts.copy()
        st.rows_emitted += n
        return {c: cols[c] for c in EVENT_COLUMNS}

    def take(self, n_events: int) -> pa.Table:
        """The next ``n_events`` rows as an events table (see :meth:`take_arrays`)."""
        return self.to_table(self.take_arrays(n_events))

    def to_table(self, columns: dict[str, NDArray[Any]]) -> pa.Table:
        """Wrap columns from :meth:`take_arrays` in an events table, with the instrument and the
        generator's settings (:meth:`describe`, key ``gpuflow.synthetic``) in the schema metadata."""
        t = events_table(columns, self.instrument)
        meta = dict(t.schema.metadata or {})
        meta[_META_KEY] = json.dumps(self.describe(), sort_keys=True).encode()
        return t.replace_schema_metadata(meta)

    def describe(self) -> dict[str, Any]:
        """The generator's settings as JSON-able values."""
        return {"model": "cont-stoikov-talreja-2010", "seed": int(self.seed), "mode": self.mode,
                "trades": self.trades, "latency_ns": self.latency_ns, "start_ns": self.start_ns,
                "params": asdict(self.params)}


# ---- functions --------------------------------------------------------------------------------------

def generate_arrays(n_events: int, *, seed: int, mode: Literal["l2", "l3"] = "l2",
                    params: ZIParams | None = None, start_ns: int = DEFAULT_START_NS, trades: bool = True,
                    latency_ns: int = 0) -> dict[str, NDArray[Any]]:
    """Generate ``n_events`` rows as host numpy columns (no Arrow), for benchmarks.

    Parameters are those of :func:`generate`.

    Returns
    -------
    dict of str to ndarray
        One array per event column (``EVENT_COLUMNS``), schema dtypes, length ``n_events``,
        host memory.

    See Also
    --------
    generate : the same rows as an events table.
    """
    g = ZIGenerator(seed=seed, mode=mode, params=params, start_ns=start_ns, trades=trades,
                    latency_ns=latency_ns)
    return g.take_arrays(n_events)


def generate(n_events: int, *, seed: int, mode: Literal["l2", "l3"] = "l2", params: ZIParams | None = None,
             start_ns: int = DEFAULT_START_NS, instrument: Instrument | None = None, trades: bool = True,
             latency_ns: int = 0) -> pa.Table:
    """Generate a zero-intelligence (Cont-Stoikov-Talreja) event stream.

    Parameters
    ----------
    n_events : int
        Rows to return, exactly (the last message may be cut: see the module docstring).
    seed : int
        Non-negative seed.  The same seed and parameters give the same table.
    mode : {"l2", "l3"}
        ``"l2"``: level sets and trades; ``"l3"``: per-order adds, deletes, executions and trades.
    params : ZIParams, optional
        Model parameters (default ``ZIParams()``: CST's estimates, 10 levels, 1 ms time unit).
    start_ns : int
        ns since the Unix epoch (UTC) of model time 0; default 2024-01-01T00:00:00Z.
    instrument : Instrument, optional
        Table metadata; default venue ``synthetic``, symbol ``ZI``, tick ``0.01``, lot ``1``.
    trades : bool
        Emit ``KIND_TRADE`` rows for market orders.
    latency_ns : int
        Constant ``ts_local - ts_exch`` (ns).

    Returns
    -------
    pyarrow.Table
        Schema :data:`gpuflow.schema.EVENTS`, instrument metadata attached, ``n_events`` rows.

    Raises
    ------
    ParameterError
        An argument is out of range.

    See Also
    --------
    generate_arrays : the same columns as numpy arrays.
    iter_chunks : the same stream in bounded-memory chunks.

    Examples
    --------
    >>> from gpuflow.schema import validate
    >>> t = validate(generate(100, seed=0, mode="l3"))
    >>> t.column("seq").to_pylist()[:3]
    [0, 1, 2]
    """
    g = ZIGenerator(seed=seed, mode=mode, params=params, start_ns=start_ns, instrument=instrument,
                    trades=trades, latency_ns=latency_ns)
    return g.take(n_events)


def iter_chunks(n_events: int, chunk_events: int, *, seed: int, mode: Literal["l2", "l3"] = "l2",
                params: ZIParams | None = None, start_ns: int = DEFAULT_START_NS,
                instrument: Instrument | None = None, trades: bool = True, latency_ns: int = 0,
                arrays: bool = False) -> Iterator[Any]:
    """Yield the rows of :func:`generate` in chunks of ``chunk_events`` (the last may be shorter).

    The chunks concatenate to exactly ``generate(n_events, seed=seed, ...)``; memory stays
    bounded by one chunk plus the book state.

    Parameters
    ----------
    n_events : int
        Total rows.
    chunk_events : int
        Rows per chunk (>= 1).
    arrays : bool
        Yield dicts of numpy columns (as :func:`generate_arrays`) instead of tables.
    seed, mode, params, start_ns, instrument, trades, latency_ns
        As in :func:`generate`.

    Yields
    ------
    pyarrow.Table or dict of str to ndarray

    Raises
    ------
    ParameterError
        An argument is out of range (raised by the call, before iteration).

    Examples
    --------
    >>> import pyarrow as pa
    >>> parts = list(iter_chunks(1000, 300, seed=3))
    >>> [p.num_rows for p in parts]
    [300, 300, 300, 100]
    >>> pa.concat_tables(parts).equals(generate(1000, seed=3))
    True
    """
    n = _check_int("n_events", n_events, 0)
    c = _check_int("chunk_events", chunk_events, 1)
    g = ZIGenerator(seed=seed, mode=mode, params=params, start_ns=start_ns, instrument=instrument,
                    trades=trades, latency_ns=latency_ns)
    return _chunks(g, n, c, arrays)


def _chunks(g: ZIGenerator, n: int, c: int, arrays: bool) -> Iterator[Any]:
    done = 0
    while done < n:
        m = min(c, n - done)
        cols = g.take_arrays(m)
        done += m
        yield cols if arrays else g.to_table(cols)
