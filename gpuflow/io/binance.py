"""Reader for raw Binance WebSocket recordings (``<local ns> <raw JSON>`` lines, gzip text).

Each line of a recording is ``<local receive timestamp> <raw JSON>``: combined-stream
messages ``{"stream": .., "data": {..}}`` (or bare stream payloads) of ``depthUpdate``
diffs, ``bookTicker``, ``trade`` and ``aggTrade``, and REST depth snapshot lines
``{"lastUpdateId": .., "bids": [[p, q], ..], "asks": [..]}``.  They are normalised
into one events table per symbol (:data:`gpuflow.schema.EVENTS` plus ``src_line``):

==============  ==========================================================================
message         rows
==============  ==========================================================================
depthUpdate     one ``KIND_DIFF`` marker (``seq`` = u, ``price`` = U, ``qty`` = pu, or -1 on
                spot, ``side`` 0), then one ``KIND_SET`` per level (``b`` +1 then ``a`` -1),
                all with ``seq`` = u; ``ts_exch`` = ``E`` (event time; futures also carry
                the transaction time ``T``, which is not kept)
bookTicker      two ``KIND_BBO`` rows (bid +1: ``b``/``B``; ask -1: ``a``/``A``), ``seq`` = u;
                ``ts_exch`` = ``E``, or ``ts_local`` with ``FLAG_TS_EXCH_MISSING`` (spot)
trade           one ``KIND_TRADE`` row, ``seq`` = t, ``ts_exch`` = ``T``, ``side`` = -1 when
                ``m`` (the buyer is the maker, so the seller aggressed), else +1
aggTrade        as trade with ``seq`` = a and ``FLAG_AGGREGATED``
snapshot        one ``KIND_CLEAR`` (``FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN``), then
                ``KIND_SNAPSHOT`` rows, bids then asks, ``seq`` = lastUpdateId; the last row
                has ``FLAG_SNAPSHOT_END``; ``ts_exch`` = ``E`` or ``ts_local`` (+ missing flag)
==============  ==========================================================================

The last row of every message carries ``FLAG_EOM``.  Exchange times in ms (or us /
ns, recognised by magnitude) become ns; the local stamp is read the same way.
Partial-depth streams (``<sym>@depth5``, ...) and every other stream are skipped and
counted as ``unknown``.  Rows are stably sorted by ``ts_local`` (ties keep file order).

Speed: the file is inflated once (ISA-L ``isal_zlib`` when installed, else zlib),
then one compiled byte scanner (numba ``njit``) walks the whole buffer: it finds the
lines, parses the timestamp, recognises each message by its keys (any key order),
and turns decimal text into integer ticks and lots straight into preallocated
``int64`` columns (a fused digit loop for plain decimals on the grid; anything else
goes to :func:`gpuflow.decimals.parse_steps`, which has the last word, so the
results are those of ``parse_steps``).  No Python object is made per line;
``orjson`` is only used to word an error message.  The first call compiles the
scanner (about 30 s; cached on disk by numba afterwards).

Instrument: ``instrument=`` when given, else the built-in table
(:func:`gpuflow.instruments.lookup`; venue ``binance-futures`` when the diffs carry
``pu``, a trade carries ``X``, a trade or aggTrade lacks spot's ``M``, or a bookTicker
carries ``E``; else ``binance``), else
the finest decimal step present in the file (``tick_size_inferred`` /
``lot_size_inferred``).  A short first pass over the head of the file finds the
symbols and the venue, so that the full scan can convert prices exactly in one go.
"""
from __future__ import annotations

import logging
import re
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

from gpuflow import config
from gpuflow.decimals import OFF_GRID, STATUS_TEXT, parse_steps
from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.instruments import lookup
from gpuflow.io import ReadResult, empty_rejected, rejected_table
from gpuflow.schema import (
    FLAG_AGGREGATED,
    FLAG_EOM,
    FLAG_SNAPSHOT,
    FLAG_SNAPSHOT_BEGIN,
    FLAG_SNAPSHOT_END,
    FLAG_TS_EXCH_MISSING,
    KIND_BBO,
    KIND_CLEAR,
    KIND_DIFF,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
    decimal_step,
    events_table,
)

try:  # ISA-L inflates about 2-3x faster than zlib; optional.
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _isal_zlib = None

__all__ = ["read_binance"]

_log = logging.getLogger(__name__)

# ---- scanner constants ------------------------------------------------------
_NCOL = 10  # rows of the (column, row) output array
_C_TS_EXCH, _C_TS_LOCAL, _C_SEQ, _C_KIND, _C_SIDE, _C_PRICE, _C_QTY, _C_FLAGS, _C_SYM, _C_LINE = range(10)

_MAXSYM = 64  # symbols per file; slot _MAXSYM collects snapshot lines not yet attributed
_SYMLEN = 32

_ST_OK, _ST_GROW, _ST_ERR, _ST_EMPTY = 0, 1, 2, 3

_M_UNKNOWN, _M_DEPTH, _M_BBO, _M_TRADE, _M_AGG, _M_SNAP = 0, 1, 2, 3, 4, 5
_MTYPE_NAMES = ("unknown", "depthUpdate", "bookTicker", "trade", "aggTrade", "snapshot")
_S_EMPTY, _S_BAD, _S_NOT_MARKET = 6, 7, 8  # further stats slots
_NSTATS = 9

_R_MALFORMED, _R_OFFGRID_PRICE, _R_OFFGRID_QTY, _R_BADNUM = 1, 2, 3, 4
_RULES = {_R_MALFORMED: "malformed_line", _R_OFFGRID_PRICE: "off_grid_price",
          _R_OFFGRID_QTY: "off_grid_qty", _R_BADNUM: "bad_number"}

# einfo slots (error detail written by the scanner)
_EI_RULE, _EI_FIELD, _EI_IDX, _EI_COMP, _EI_VS, _EI_VE, _EI_STATUS, _EI_POS, _EI_EXPECT, _EI_MTYPE, _EI_SLOT = \
    range(11)
_NEI = 11
# errs columns: line, line start, line end, then the einfo slots
_NERRCOL = 3 + _NEI

# key codes
(_K_OTHER, _K_e, _K_E, _K_T, _K_s, _K_U, _K_u, _K_pu, _K_b, _K_a, _K_B, _K_A, _K_p, _K_q, _K_t, _K_m,
 _K_X, _K_LUI, _K_BIDS, _K_ASKS, _K_DATA, _K_STREAM, _K_M) = range(23)
_NK = 23
_FIELD_NAMES = ("?", "e", "E", "T", "s", "U", "u", "pu", "b", "a", "B", "A", "p", "q", "t", "m", "X",
                "lastUpdateId", "bids", "asks", "data", "stream", "M")

# field kinds (fh)
_F_NONE, _F_INT, _F_STR, _F_ARR, _F_BAD, _F_BOOL = 0, 1, 2, 3, 4, 5

# what the scanner expected when a line is malformed
(_X_NONE, _X_TS, _X_OBJ, _X_KEY, _X_COLON, _X_COMMA_OBJ, _X_VALUE, _X_PAIR, _X_COMMA_ARR, _X_EOL, _X_INT,
 _X_BOOL, _X_MISSING, _X_STRING, _X_DUP, _X_SYMBOL, _X_ARRAY, _X_COMMA) = range(18)
_EXPECT_TEXT = {
    _X_TS: "a local timestamp (digits) followed by a space",
    _X_OBJ: "'{' (a JSON object)",
    _X_KEY: "a quoted key",
    _X_COLON: "':'",
    _X_COMMA_OBJ: "',' or '}'",
    _X_VALUE: "a complete JSON value",
    _X_PAIR: "a [price, qty] pair",
    _X_COMMA_ARR: "',' or ']'",
    _X_EOL: "the end of the line after the JSON object",
    _X_INT: "an integer",
    _X_BOOL: "true or false",
    _X_STRING: "a decimal string",
    _X_DUP: "one level array per side",
    _X_SYMBOL: f"a symbol of at most {_SYMLEN} characters (and at most {_MAXSYM} symbols per file)",
    _X_ARRAY: "an array of [price, qty] pairs",
    _X_COMMA: "','",
}

_LIT_DEPTH = np.frombuffer(b"depthUpdate", dtype=np.uint8).copy()
_LIT_BBO = np.frombuffer(b"bookTicker", dtype=np.uint8).copy()
_LIT_TRADE = np.frombuffer(b"trade", dtype=np.uint8).copy()
_LIT_AGG = np.frombuffer(b"aggTrade", dtype=np.uint8).copy()
_LIT_DATA = np.frombuffer(b"data", dtype=np.uint8).copy()
_LIT_BIDS = np.frombuffer(b"bids", dtype=np.uint8).copy()
_LIT_ASKS = np.frombuffer(b"asks", dtype=np.uint8).copy()
_LIT_STREAM = np.frombuffer(b"stream", dtype=np.uint8).copy()
_LIT_LUI = np.frombuffer(b"lastUpdateId", dtype=np.uint8).copy()
_LIT_MARKET = np.frombuffer(b"MARKET", dtype=np.uint8).copy()
_LIT_DEPTHW = np.frombuffer(b"depth", dtype=np.uint8).copy()
_LIT_TRUE = np.frombuffer(b"true", dtype=np.uint8).copy()
_LIT_FALSE = np.frombuffer(b"false", dtype=np.uint8).copy()

_SNIFF_BYTES = 1 << 20  # head of the file read first to find symbols and venue
_POW10 = np.array([10 ** k for k in range(19)], dtype=np.int64)


# ---- jitted code ------------------------------------------------------------
# Numba does not inline an njit function that takes arrays, and each such call costs
# tens of ns (array structs passed field by field, NRT reference counting); closures
# are inlined but make the compile very slow.  So the hot helpers take the buffer's
# address and read bytes with the _ld intrinsic: their arguments are scalars, LLVM
# inlines them, and numba types each once.  The few closures left in _scan touch the
# output arrays; array-taking njit functions run on cold paths only (errors,
# discovery of decimals, symbol registration, the parse_steps fallback).
@njit(cache=True, nogil=True)
def _ts_ns(v):  # pragma: no cover - jitted
    """Epoch time in ms, us or ns (told apart by magnitude) -> ns."""
    if v < 100_000_000_000_000:
        return v * 1_000_000
    if v < 100_000_000_000_000_000:
        return v * 1_000
    return v


@njit(cache=True, nogil=True)
def _decimals(buf, s, e):  # pragma: no cover - jitted
    """Significant fraction digits of a decimal (trailing zeros ignored); -1 if not a decimal."""
    while s < e and (buf[s] == 32 or buf[s] == 34):
        s += 1
    while e > s and (buf[e - 1] == 32 or buf[e - 1] == 34 or buf[e - 1] == 13):
        e -= 1
    if s >= e:
        return -1
    if buf[s] == 45 or buf[s] == 43:
        s += 1
    nd = 0
    frac = 0
    last_nz = 0
    dot = False
    while s < e:
        c = buf[s]
        if 48 <= c <= 57:
            nd += 1
            if dot:
                frac += 1
                if c != 48:
                    last_nz = frac
        elif c == 46 and not dot:
            dot = True
        elif c == 101 or c == 69:
            break
        else:
            return -1
        s += 1
    if nd == 0:
        return -1
    if s < e:
        s += 1
        neg = False
        if s < e and (buf[s] == 45 or buf[s] == 43):
            neg = buf[s] == 45
            s += 1
        ex = 0
        ne = 0
        while s < e and 48 <= buf[s] <= 57:
            ex = ex * 10 + (buf[s] - 48)
            ne += 1
            s += 1
        if ne == 0 or s < e or ex > 40:
            return -1
        last_nz = last_nz + ex if neg else last_nz - ex
    return max(last_nz, 0)


@njit(cache=True, nogil=True)
def _seterr(einfo, rule, field, idx, comp, vs, ve, status, pos, expect):  # pragma: no cover - jitted
    einfo[_EI_RULE] = rule
    einfo[_EI_FIELD] = field
    einfo[_EI_IDX] = idx
    einfo[_EI_COMP] = comp
    einfo[_EI_VS] = vs
    einfo[_EI_VE] = ve
    einfo[_EI_STATUS] = status
    einfo[_EI_POS] = pos
    einfo[_EI_EXPECT] = expect


@njit(cache=True, nogil=True)
def _num_err(einfo, st, field, idx, comp, s, e):  # pragma: no cover - jitted
    if st == OFF_GRID:
        rule = _R_OFFGRID_PRICE if comp == 0 else _R_OFFGRID_QTY
    else:
        rule = _R_BADNUM
    _seterr(einfo, rule, field, idx, comp, s, e, st, s, _X_NONE)


@njit(cache=True, nogil=True)
def _slot_of(buf, s, e, syms, symlen, nsym, register):  # pragma: no cover - jitted
    """Slot of the symbol ``buf[s:e]`` (upper-cased); -1 if new and not ``register``; -2 if it cannot be."""
    n = e - s
    if n <= 0 or n > _SYMLEN:
        return -2
    for k in range(nsym[0]):
        if symlen[k] != n:
            continue
        same = True
        for j in range(n):
            c = buf[s + j]
            if 97 <= c <= 122:
                c -= 32
            if syms[k, j] != c:
                same = False
                break
        if same:
            return k
    if not register:
        return -1
    k = nsym[0]
    if k >= _MAXSYM:
        return -2
    for j in range(n):
        c = buf[s + j]
        if 97 <= c <= 122:
            c -= 32
        syms[k, j] = c
    symlen[k] = n
    nsym[0] = k + 1
    return k


@intrinsic
def _ld(typingctx, p, i):  # pragma: no cover - compiled
    """Byte ``i`` of the buffer at address ``p`` (zero-extended to int64); the caller checks bounds."""
    sig = types.int64(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        base, idx = args
        addr = builder.inttoptr(builder.add(base, idx), llvm_ir.IntType(8).as_pointer())
        return builder.zext(builder.load(addr), llvm_ir.IntType(64))

    return sig, codegen


@njit(cache=True, nogil=True)
def _ch(p, i, end):  # pragma: no cover - jitted
    """Byte at ``i``, or 0 at or past ``end`` (every read of the scanner is bounds-checked so)."""
    if i < end:
        return _ld(p, i)
    return np.int64(0)


@njit(cache=True, nogil=True)
def _ws(p, i, end):  # pragma: no cover - jitted
    while i < end:
        c = _ld(p, i)
        if c == 32 or c == 9 or c == 13:
            i += 1
        else:
            break
    return i


@njit(cache=True, nogil=True)
def _is_delim(c):  # pragma: no cover - jitted
    return c == 44 or c == 125 or c == 93 or c == 32 or c == 9 or c == 13 or c == 10 or c == 0


@njit(cache=True, nogil=True)
def _str_end(p, i, end):  # pragma: no cover - jitted
    """Index of the closing quote of a string whose content starts at ``i``; -1 if none on the line."""
    while i < end:
        c = _ld(p, i)
        if c == 34:
            return i
        if c == 92:
            i += 2
            continue
        if c == 10:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _skip(p, i, end):  # pragma: no cover - jitted
    """End of the JSON value starting at ``i`` (strings, nested containers, scalars); -1 if malformed."""
    c = _ch(p, i, end)
    if c == 34:
        j = _str_end(p, i + 1, end)
        if j < 0:
            return -1
        return j + 1
    if c == 123 or c == 91:
        depth = 0
        while i < end:
            c = _ld(p, i)
            if c == 34:
                j = _str_end(p, i + 1, end)
                if j < 0:
                    return -1
                i = j + 1
                continue
            if c == 123 or c == 91:
                depth += 1
            elif c == 125 or c == 93:
                depth -= 1
                if depth == 0:
                    return i + 1
            elif c == 10:
                return -1
            i += 1
        return -1
    if not (c == 45 or (48 <= c <= 57) or c == 116 or c == 102 or c == 110):
        return -1
    while i < end and not _is_delim(_ld(p, i)):
        i += 1
    return i


@njit(cache=True, nogil=True)
def _token(p, i, end):  # pragma: no cover - jitted
    """Span of a decimal given as a string or a bare number: (start, stop, next); start -1 if none."""
    c = _ch(p, i, end)
    if c == 34:
        j = i + 1
        while j < end and _ld(p, j) != 34 and _ld(p, j) != 10:
            j += 1
        if j >= end or _ld(p, j) != 34:
            return -1, -1, i
        return i + 1, j, j + 1
    if c == 45 or (48 <= c <= 57):
        j = i
        while j < end and not _is_delim(_ld(p, j)):
            j += 1
        return i, j, j
    return -1, -1, i


@njit(cache=True, nogil=True)
def _parse_int(p, i, end):  # pragma: no cover - jitted
    """Integer (optionally quoted): (value, next, ok)."""
    quoted = False
    if _ch(p, i, end) == 34:
        quoted = True
        i += 1
    neg = False
    if _ch(p, i, end) == 45:
        neg = True
        i += 1
    v = np.int64(0)
    nd = 0
    while i < end:
        d = _ld(p, i) - 48
        if 0 <= d <= 9:
            v = v * 10 + d
            nd += 1
            i += 1
        else:
            break
    if nd == 0 or nd > 19 or v < 0:
        return np.int64(0), i, False
    if quoted:
        if _ch(p, i, end) != 34:
            return np.int64(0), i, False
        i += 1
    if not _is_delim(_ch(p, i, end)):
        return np.int64(0), i, False
    if neg:
        v = -v
    return v, i, True


@njit(cache=True, nogil=True)
def _is4(p, s, a, b, c, d):  # pragma: no cover - jitted
    return _ld(p, s) == a and _ld(p, s + 1) == b and _ld(p, s + 2) == c and _ld(p, s + 3) == d


@njit(cache=True, nogil=True)
def _key_code(p, s, e):  # pragma: no cover - jitted
    """Code (_K_*) of the key ``buf[s:e]``."""
    n = e - s
    if n == 1:
        c = _ld(p, s)
        if c == 101:
            return _K_e
        if c == 69:
            return _K_E
        if c == 84:
            return _K_T
        if c == 115:
            return _K_s
        if c == 85:
            return _K_U
        if c == 117:
            return _K_u
        if c == 98:
            return _K_b
        if c == 97:
            return _K_a
        if c == 66:
            return _K_B
        if c == 65:
            return _K_A
        if c == 112:
            return _K_p
        if c == 113:
            return _K_q
        if c == 116:
            return _K_t
        if c == 109:
            return _K_m
        if c == 88:
            return _K_X
        if c == 77:
            return _K_M
        return _K_OTHER
    if n == 2:
        if _ld(p, s) == 112 and _ld(p, s + 1) == 117:
            return _K_pu
        return _K_OTHER
    if n == 4:
        if _is4(p, s, 100, 97, 116, 97):  # data
            return _K_DATA
        if _is4(p, s, 98, 105, 100, 115):  # bids
            return _K_BIDS
        if _is4(p, s, 97, 115, 107, 115):  # asks
            return _K_ASKS
        return _K_OTHER
    if n == 6 and _is4(p, s, 115, 116, 114, 101) and _ld(p, s + 4) == 97 and _ld(p, s + 5) == 109:  # stream
        return _K_STREAM
    if (n == 12 and _is4(p, s, 108, 97, 115, 116) and _is4(p, s + 4, 85, 112, 100, 97)
            and _is4(p, s + 8, 116, 101, 73, 100)):  # lastUpdateId
        return _K_LUI
    return _K_OTHER


@njit(cache=True, nogil=True)
def _digits(p, i, end, scale, mant):  # pragma: no cover - jitted
    """Fast path for a plain decimal ``[-]digits[.digits]`` at ``i``: (steps, ok, stop).

    Reads up to the first byte that is neither a digit nor the first dot.  ``ok`` is
    False for anything unusual (no digits, over 18 digits, off the grid, a step
    mantissa that does not divide): the caller then asks
    :func:`gpuflow.decimals.parse_steps`, which has the last word, so results are
    identical.  ``step = mant * 10**-scale`` with ``mant`` free of trailing zeros.
    """
    neg = False
    if i < end and _ld(p, i) == 45:
        neg = True
        i += 1
    m = np.int64(0)
    nd = 0
    fe = 0  # fraction digits held in m
    pend = 0  # fraction zeros not yet multiplied in (dropped when trailing)
    dot = False
    while i < end:
        d = _ld(p, i) - 48
        if 0 <= d <= 9:
            nd += 1
            if not dot:
                m = m * 10 + d
            elif d == 0:
                pend += 1
            else:
                while pend > 0:
                    m *= 10
                    fe += 1
                    pend -= 1
                m = m * 10 + d
                fe += 1
            i += 1
        elif d == -2 and not dot:  # '.'
            dot = True
            i += 1
        else:
            break
    shift = scale - fe
    if nd == 0 or nd > 18 or shift < 0 or nd + shift > 18:
        return np.int64(0), False, i
    v = m * _POW10[shift]
    if mant != 1:
        if v % mant != 0:
            return np.int64(0), False, i
        v //= mant
    if neg:
        v = -v
    return v, True, i


@njit(cache=True, nogil=True)
def _scan(buf, begin, end, out, steps, known, syms, symlen, nsym, snap_slot, fut, dec, disc_used, slot_msgs,
          stats, errs, stop_after):  # pragma: no cover - jitted
    """Scan the lines of ``buf[begin:end]`` into ``out`` (columns x rows, grown as needed).

    ``steps[k]`` = (tick mantissa, tick scale, lot mantissa, lot scale) of symbol
    slot ``k`` when ``known[k]``; unknown slots are read in discovery mode (only
    the decimals, into ``dec``; their rows are placeholders and ``disc_used`` says
    so).  Bad lines go to ``errs`` (nothing of them is emitted); the scan stops
    after ``stop_after`` of them.

    Returns (out, rows, errs, n_errors, stop position, lines read).
    """
    p = buf.ctypes.data  # helpers read bytes through this address (scalar arguments: inlined by LLVM)
    ctx = np.zeros(4, np.int64)  # [last symbol slot, trades with X != MARKET]
    ctx[0] = 0 if nsym[0] > 0 else -1
    einfo = np.zeros(_NEI, np.int64)
    fh = np.zeros(_NK, np.int64)  # per key of the current message: kind (_F_*), start, stop, value
    fs = np.zeros(_NK, np.int64)
    fe = np.zeros(_NK, np.int64)
    fv = np.zeros(_NK, np.int64)

    def eq(s, e, lit):
        if e - s != lit.size:
            return False
        for k in range(lit.size):
            if _ld(p, s + k) != lit[k]:
                return False
        return True

    def find_slot(s, e):
        """Slot of a registered symbol (case-insensitive), or -1."""
        n = e - s
        for k in range(nsym[0]):
            if symlen[k] != n:
                continue
            same = True
            for j in range(n):
                c = _ld(p, s + j)
                if 97 <= c <= 122:
                    c -= 32
                if syms[k, j] != c:
                    same = False
                    break
            if same:
                return k
        return -1

    def num(s, e, mant, scale, disc, dslot, comp):
        """One price (comp 0) or size (comp 1) in steps, or (discovery) only its decimals."""
        if disc:
            d = _decimals(buf, s, e)
            if d < 0:
                return np.int64(0), np.int64(1)  # SYNTAX
            dec[dslot, comp] = max(dec[dslot, comp], d)
            return np.int64(0), np.int64(0)
        v, ok, stop = _digits(p, s, end, scale, mant)
        if ok and stop == e:
            return v, np.int64(0)
        v2, st = parse_steps(buf, s, e, mant, scale)
        return v2, np.int64(st)

    def need(code, kind):
        """Is field ``code`` present with ``kind``?  Else fill ``einfo``."""
        h = fh[code]
        if h == kind:
            return True
        if h == _F_NONE:
            _seterr(einfo, _R_MALFORMED, code, -1, -1, 0, 0, 0, -1, _X_MISSING)
            return False
        if kind == _F_INT:
            x = _X_INT
        elif kind == _F_BOOL:
            x = _X_BOOL
        elif kind == _F_ARR:
            x = _X_ARRAY
        else:
            x = _X_STRING
        _seterr(einfo, _R_MALFORMED, code, -1, -1, fs[code], fs[code], 0, fs[code], x)
        return False

    def levels(o, i, r, side, slot, disc, dslot, field):
        """Parse a ``[[p, q], ...]`` array at ``buf[i] == '['`` into rows from ``r``: (status, next, r).

        _ST_GROW: no room (the caller grows ``o`` and reads the line again);
        _ST_ERR: ``einfo`` says why.
        """
        cap = o.shape[1]
        tm = steps[slot, 0]
        tsc = steps[slot, 1]
        lm = steps[slot, 2]
        lsc = steps[slot, 3]
        i = _ws(p, i + 1, end)
        if _ch(p, i, end) == 93:
            return _ST_OK, i + 1, r
        idx = 0
        while True:
            # fast path: ["<decimal>","<decimal>"] with both on the grid
            if not disc and i + 1 < end and buf[i] == 91 and buf[i + 1] == 34:
                pv, ok, j = _digits(p, i + 2, end, tsc, tm)
                if ok and j + 2 < end and buf[j] == 34 and buf[j + 1] == 44 and buf[j + 2] == 34:
                    q, ok2, k = _digits(p, j + 3, end, lsc, lm)
                    if ok2 and k + 1 < end and buf[k] == 34 and buf[k + 1] == 93:
                        if r >= cap:
                            return _ST_GROW, i, r
                        o[_C_SIDE, r] = side
                        o[_C_PRICE, r] = pv
                        o[_C_QTY, r] = q
                        r += 1
                        idx += 1
                        i = _ws(p, k + 2, end)
                        c = _ch(p, i, end)
                        if c == 44:
                            i = _ws(p, i + 1, end)
                            continue
                        if c == 93:
                            return _ST_OK, i + 1, r
                        _seterr(einfo, _R_MALFORMED, field, idx, -1, i, i, 0, i, _X_COMMA_ARR)
                        return _ST_ERR, i, r
            # general path: any spacing, bare numbers, extra elements, and the error reports
            if _ch(p, i, end) != 91:
                _seterr(einfo, _R_MALFORMED, field, idx, -1, i, i, 0, i, _X_PAIR)
                return _ST_ERR, i, r
            i = _ws(p, i + 1, end)
            ps, pe, i = _token(p, i, end)
            if ps < 0:
                _seterr(einfo, _R_MALFORMED, field, idx, 0, i, i, 0, i, _X_STRING)
                return _ST_ERR, i, r
            i = _ws(p, i, end)
            if _ch(p, i, end) != 44:
                _seterr(einfo, _R_MALFORMED, field, idx, -1, i, i, 0, i, _X_COMMA)
                return _ST_ERR, i, r
            i = _ws(p, i + 1, end)
            qs, qe, i = _token(p, i, end)
            if qs < 0:
                _seterr(einfo, _R_MALFORMED, field, idx, 1, i, i, 0, i, _X_STRING)
                return _ST_ERR, i, r
            i = _ws(p, i, end)
            while _ch(p, i, end) == 44:  # extra elements (old REST format ["p", "q", []])
                j = _skip(p, _ws(p, i + 1, end), end)
                if j < 0:
                    _seterr(einfo, _R_MALFORMED, field, idx, -1, i, i, 0, i + 1, _X_VALUE)
                    return _ST_ERR, i, r
                i = _ws(p, j, end)
            if _ch(p, i, end) != 93:
                _seterr(einfo, _R_MALFORMED, field, idx, -1, i, i, 0, i, _X_COMMA_ARR)
                return _ST_ERR, i, r
            i += 1
            if r >= cap:
                return _ST_GROW, i, r
            pv, st = num(ps, pe, tm, tsc, disc, dslot, 0)
            if st != 0:
                _num_err(einfo, st, field, idx, 0, ps, pe)
                return _ST_ERR, i, r
            q, st = num(qs, qe, lm, lsc, disc, dslot, 1)
            if st != 0:
                _num_err(einfo, st, field, idx, 1, qs, qe)
                return _ST_ERR, i, r
            o[_C_SIDE, r] = side
            o[_C_PRICE, r] = pv
            o[_C_QTY, r] = q
            r += 1
            idx += 1
            i = _ws(p, i, end)
            c = _ch(p, i, end)
            if c == 44:
                i = _ws(p, i + 1, end)
                continue
            if c == 93:
                return _ST_OK, i + 1, r
            _seterr(einfo, _R_MALFORMED, field, idx, -1, i, i, 0, i, _X_COMMA_ARR)
            return _ST_ERR, i, r

    def parse_line(o, pos, line_no, row):
        """Parse the line at ``pos``: (status, next line start or error position, rows end, type, slot).

        Rows are written from ``row``; on error nothing of the line is kept.
        """
        cap = o.shape[1]
        i = _ws(p, pos, end)
        c = _ch(p, i, end)
        if i >= end or c == 10:
            return _ST_EMPTY, i + 1, row, _M_UNKNOWN, -1
        # ---- local timestamp
        tl = np.int64(0)
        nd = 0
        while i < end and 48 <= buf[i] <= 57:
            tl = tl * 10 + (buf[i] - 48)
            nd += 1
            i += 1
        c = _ch(p, i, end)
        if nd == 0 or nd > 19 or tl < 0 or (c != 32 and c != 9):
            _seterr(einfo, _R_MALFORMED, _K_OTHER, -1, -1, i, i, 0, i, _X_TS)
            return _ST_ERR, i, row, _M_UNKNOWN, -1
        ts_local = _ts_ns(tl)
        i = _ws(p, i, end)
        if _ch(p, i, end) != 123:
            _seterr(einfo, _R_MALFORMED, _K_OTHER, -1, -1, i, i, 0, i, _X_OBJ)
            return _ST_ERR, i, row, _M_UNKNOWN, -1
        if row + 2 > cap:
            return _ST_GROW, pos, row, _M_UNKNOWN, -1
        row0 = row
        r = row + 1  # row0 is kept for the marker / clear / trade / bid row
        for k in range(_NK):
            fh[k] = _F_NONE
        s_slot = -1
        stream_slot = -1
        stream_at = -1
        einfo[_EI_MTYPE] = 0
        einfo[_EI_SLOT] = -1
        stream_partial = False
        stream_bbo = False
        has_data = False
        has_bid = False
        has_ask = False
        bid_key = _K_b
        ask_key = _K_a
        bid_s = 0
        ask_s = 0
        bid_r0 = -1
        ask_r0 = -1
        defer = False
        lv_slot = -1
        pend_err = False
        level = 0
        i = _ws(p, i + 1, end)
        done = False
        if _ch(p, i, end) == 125:
            i += 1
            done = True
        while not done:
            # ---- key
            i = _ws(p, i, end)
            if _ch(p, i, end) != 34:
                _seterr(einfo, _R_MALFORMED, _K_OTHER, -1, -1, i, i, 0, i, _X_KEY)
                return _ST_ERR, i, row, _M_UNKNOWN, -1
            ke = _str_end(p, i + 1, end)
            if ke < 0:
                _seterr(einfo, _R_MALFORMED, _K_OTHER, -1, -1, i, i, 0, i, _X_KEY)
                return _ST_ERR, i, row, _M_UNKNOWN, -1
            code = _key_code(p, i + 1, ke)
            i = _ws(p, ke + 1, end)
            if _ch(p, i, end) != 58:
                _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_COLON)
                return _ST_ERR, i, row, _M_UNKNOWN, -1
            i = _ws(p, i + 1, end)
            c = _ch(p, i, end)
            vstart = i
            # ---- value
            if code == _K_DATA and level == 0 and c == 123:
                has_data = True
                i = _ws(p, i + 1, end)
                if _ch(p, i, end) != 125:
                    level = 1
                    continue
                i += 1
            elif (code == _K_E or code == _K_T or code == _K_U or code == _K_u or code == _K_pu or code == _K_t
                  or code == _K_LUI or (code == _K_a and (c == 45 or 48 <= c <= 57))):
                v, j, ok = _parse_int(p, i, end)
                fs[code] = vstart
                if ok:
                    fh[code] = _F_INT
                    fv[code] = v
                    i = j
                else:
                    j = _skip(p, i, end)
                    if j < 0:
                        _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_VALUE)
                        return _ST_ERR, i, row, _M_UNKNOWN, -1
                    fh[code] = _F_BAD
                    i = j
            elif (code == _K_b or code == _K_a or code == _K_BIDS or code == _K_ASKS) and c == 91:
                side = 1 if (code == _K_b or code == _K_BIDS) else -1
                if (side > 0 and has_bid) or (side < 0 and has_ask):
                    _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_DUP)
                    return _ST_ERR, i, row, _M_UNKNOWN, -1
                fh[code] = _F_ARR
                fs[code] = vstart
                r_start = r
                if fh[_K_s] == _F_STR:
                    g = s_slot
                elif stream_slot >= 0:
                    g = stream_slot
                elif level == 0 and not has_data:
                    g = snap_slot
                else:
                    g = ctx[0]
                parsed = False
                if g >= 0 and known[g] != 0 and not defer and not pend_err:
                    st, j, r2 = levels(o, i, r, side, g, False, g, code)
                    if st == _ST_GROW:
                        return _ST_GROW, pos, row, _M_UNKNOWN, -1
                    if st == _ST_OK:
                        parsed = True
                        if lv_slot >= 0 and lv_slot != g:
                            defer = True
                        lv_slot = g
                        r = r2
                        i = j
                    elif einfo[_EI_RULE] == _R_MALFORMED:
                        return _ST_ERR, j, row, _M_UNKNOWN, -1
                    elif fh[_K_s] == _F_STR:
                        pend_err = True  # a real bad number; reported if the message is one we emit
                    else:
                        defer = True  # the symbol was a guess: read it again once the symbol is known
                else:
                    defer = True
                if not parsed:
                    r = r_start
                    j = _skip(p, i, end)
                    if j < 0:
                        _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_VALUE)
                        return _ST_ERR, i, row, _M_UNKNOWN, -1
                    i = j
                if side > 0:
                    has_bid = True
                    bid_key = code
                    bid_s = vstart
                    bid_r0 = r_start
                else:
                    has_ask = True
                    ask_key = code
                    ask_s = vstart
                    ask_r0 = r_start
            elif (code == _K_e or code == _K_s or code == _K_b or code == _K_a or code == _K_B or code == _K_A
                  or code == _K_p or code == _K_q or code == _K_X or code == _K_STREAM):
                fs[code] = vstart
                if c == 34:
                    j = _str_end(p, i + 1, end)
                    if j < 0:
                        _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_VALUE)
                        return _ST_ERR, i, row, _M_UNKNOWN, -1
                    fh[code] = _F_STR
                    fs[code] = i + 1
                    fe[code] = j
                    i = j + 1
                    if code == _K_s:
                        # look up only: a symbol is registered when one of its messages is emitted
                        s_slot = find_slot(fs[code], j)
                    elif code == _K_STREAM:
                        at = -1
                        for k in range(fs[code], j):
                            if buf[k] == 64:
                                at = k
                                break
                        if at > fs[code]:
                            stream_at = at
                            stream_slot = find_slot(fs[code], at)
                            sfx = at + 1
                            if (j - sfx > 5 and eq(sfx, sfx + 5, _LIT_DEPTHW)
                                    and 48 <= buf[sfx + 5] <= 57):
                                stream_partial = True
                            elif eq(sfx, j, _LIT_BBO):
                                stream_bbo = True
                elif (c == 45 or 48 <= c <= 57) and (code == _K_B or code == _K_A or code == _K_p
                                                       or code == _K_q or code == _K_b or code == _K_a):
                    ts_, te_, j = _token(p, i, end)
                    fh[code] = _F_STR
                    fs[code] = ts_
                    fe[code] = te_
                    i = j
                else:
                    j = _skip(p, i, end)
                    if j < 0:
                        _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_VALUE)
                        return _ST_ERR, i, row, _M_UNKNOWN, -1
                    fh[code] = _F_BAD
                    i = j
            elif code == _K_m:
                fs[code] = vstart
                if i + 4 <= end and eq(i, i + 4, _LIT_TRUE) and _is_delim(_ch(p, i + 4, end)):
                    fh[code] = _F_BOOL
                    fv[code] = 1
                    i += 4
                elif i + 5 <= end and eq(i, i + 5, _LIT_FALSE) and _is_delim(_ch(p, i + 5, end)):
                    fh[code] = _F_BOOL
                    fv[code] = 0
                    i += 5
                else:
                    j = _skip(p, i, end)
                    if j < 0:
                        _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_VALUE)
                        return _ST_ERR, i, row, _M_UNKNOWN, -1
                    fh[code] = _F_BAD
                    i = j
            else:
                j = _skip(p, i, end)
                if j < 0:
                    _seterr(einfo, _R_MALFORMED, code, -1, -1, i, i, 0, i, _X_VALUE)
                    return _ST_ERR, i, row, _M_UNKNOWN, -1
                if code != _K_OTHER:
                    fh[code] = _F_BAD  # present (only its presence is used: "M")
                i = j
            # ---- after a value: ',' or '}' (which may close "data" and then the line's object)
            while True:
                i = _ws(p, i, end)
                c = _ch(p, i, end)
                if c == 44:
                    i += 1
                    break
                if c == 125:
                    i += 1
                    if level == 1:
                        level = 0
                        continue
                    done = True
                    break
                _seterr(einfo, _R_MALFORMED, _K_OTHER, -1, -1, i, i, 0, i, _X_COMMA_OBJ)
                return _ST_ERR, i, row, _M_UNKNOWN, -1
        # ---- end of line
        i = _ws(p, i, end)
        if i < end and buf[i] != 10:
            _seterr(einfo, _R_MALFORMED, _K_OTHER, -1, -1, i, i, 0, i, _X_EOL)
            return _ST_ERR, i, row, _M_UNKNOWN, -1
        nxt = i + 1 if i < end else end
        # ---- which message is it
        mtype = _M_UNKNOWN
        if stream_partial:
            mtype = _M_UNKNOWN
        elif fh[_K_e] == _F_STR:
            es = fs[_K_e]
            ee = fe[_K_e]
            if eq(es, ee, _LIT_DEPTH):
                mtype = _M_DEPTH
            elif eq(es, ee, _LIT_BBO):
                mtype = _M_BBO
            elif eq(es, ee, _LIT_TRADE):
                mtype = _M_TRADE
            elif eq(es, ee, _LIT_AGG):
                mtype = _M_AGG
        elif fh[_K_LUI] != _F_NONE and (has_bid or has_ask) and not has_data and fh[_K_STREAM] == _F_NONE:
            mtype = _M_SNAP
        elif stream_bbo or (fh[_K_u] == _F_INT and fh[_K_b] == _F_STR and fh[_K_a] == _F_STR
                            and fh[_K_B] == _F_STR and fh[_K_A] == _F_STR):
            mtype = _M_BBO
        if mtype == _M_UNKNOWN:
            return _ST_OK, nxt, row0, _M_UNKNOWN, -1
        einfo[_EI_MTYPE] = mtype
        # ---- symbol slot: "s", else the stream name, else (snapshot) the caller's choice
        if fh[_K_s] == _F_STR:
            fsl = s_slot
            if fsl < 0:
                fsl = _slot_of(buf, fs[_K_s], fe[_K_s], syms, symlen, nsym, True)
        elif stream_at >= 0:
            fsl = stream_slot
            if fsl < 0:
                fsl = _slot_of(buf, fs[_K_STREAM], stream_at, syms, symlen, nsym, True)
        elif mtype == _M_SNAP:
            fsl = snap_slot
        else:
            _seterr(einfo, _R_MALFORMED, _K_s, -1, -1, 0, 0, 0, -1, _X_MISSING)
            return _ST_ERR, nxt, row, mtype, -1
        if fsl == -2:
            _seterr(einfo, _R_MALFORMED, _K_s, -1, -1, fs[_K_s], fe[_K_s], 0, fs[_K_s], _X_SYMBOL)
            return _ST_ERR, nxt, row, mtype, -1
        einfo[_EI_SLOT] = fsl
        dslot = fsl if fsl >= 0 else _MAXSYM
        disc = known[dslot] == 0
        # ---- required fields
        if mtype == _M_DEPTH:
            ok = (need(_K_E, _F_INT) and need(_K_U, _F_INT)
                  and need(_K_u, _F_INT) and need(_K_b, _F_ARR)
                  and need(_K_a, _F_ARR))
            if ok and fh[_K_pu] != _F_NONE:
                ok = need(_K_pu, _F_INT)
        elif mtype == _M_BBO:
            ok = (need(_K_u, _F_INT) and need(_K_b, _F_STR)
                  and need(_K_B, _F_STR) and need(_K_a, _F_STR)
                  and need(_K_A, _F_STR))
            if ok and fh[_K_E] != _F_NONE:
                ok = need(_K_E, _F_INT)
        elif mtype == _M_TRADE or mtype == _M_AGG:
            ok = (need(_K_T, _F_INT) and need(_K_t if mtype == _M_TRADE else _K_a,
                                                              _F_INT)
                  and need(_K_p, _F_STR) and need(_K_q, _F_STR)
                  and need(_K_m, _F_BOOL))
        else:
            ok = (need(_K_LUI, _F_INT) and need(_K_BIDS, _F_ARR)
                  and need(_K_ASKS, _F_ARR))
            if ok and fh[_K_E] != _F_NONE:
                ok = need(_K_E, _F_INT)
        if not ok:
            return _ST_ERR, nxt, row, mtype, -1
        if pend_err:
            einfo[_EI_MTYPE] = mtype
            einfo[_EI_SLOT] = fsl
            return _ST_ERR, nxt, row, mtype, -1
        # ---- level arrays: read again when the symbol was guessed wrong, unknown, or asks came first
        if (has_bid or has_ask) and (defer or lv_slot != dslot or disc
                                     or (has_bid and has_ask and ask_r0 < bid_r0)):
            r = row0 + 1
            for sd in range(2):  # one call site: the closure is inlined once
                if sd == 0:
                    if not has_bid:
                        continue
                    a_s = bid_s
                    a_key = bid_key
                    sgn = 1
                else:
                    if not has_ask:
                        continue
                    a_s = ask_s
                    a_key = ask_key
                    sgn = -1
                st, j, r = levels(o, a_s, r, sgn, dslot, disc, dslot, a_key)
                if st == _ST_GROW:
                    return _ST_GROW, pos, row, _M_UNKNOWN, -1
                if st == _ST_ERR:
                    einfo[_EI_MTYPE] = mtype
                    einfo[_EI_SLOT] = fsl
                    return _ST_ERR, nxt, row, mtype, -1
        tm = steps[dslot, 0]
        tsc = steps[dslot, 1]
        lm = steps[dslot, 2]
        lsc = steps[dslot, 3]
        # ---- rows
        if mtype == _M_DEPTH:
            tsx = _ts_ns(fv[_K_E])
            seq = fv[_K_u]
            kind_lv = KIND_SET
            flags_lv = 0
            o[_C_KIND, row0] = KIND_DIFF
            o[_C_SIDE, row0] = 0
            o[_C_PRICE, row0] = fv[_K_U]
            o[_C_QTY, row0] = fv[_K_pu] if fh[_K_pu] == _F_INT else -1
            if fh[_K_pu] == _F_INT:
                fut[dslot] = 1
        elif mtype == _M_BBO:
            bp, st = num(fs[_K_b], fe[_K_b], tm, tsc, disc, dslot, 0)
            if st != 0:
                _num_err(einfo, st, _K_b, -1, 0, fs[_K_b], fe[_K_b])
                return _ST_ERR, nxt, row, mtype, -1
            bq, st = num(fs[_K_B], fe[_K_B], lm, lsc, disc, dslot, 1)
            if st != 0:
                _num_err(einfo, st, _K_B, -1, 1, fs[_K_B], fe[_K_B])
                return _ST_ERR, nxt, row, mtype, -1
            ap, st = num(fs[_K_a], fe[_K_a], tm, tsc, disc, dslot, 0)
            if st != 0:
                _num_err(einfo, st, _K_a, -1, 0, fs[_K_a], fe[_K_a])
                return _ST_ERR, nxt, row, mtype, -1
            aq, st = num(fs[_K_A], fe[_K_A], lm, lsc, disc, dslot, 1)
            if st != 0:
                _num_err(einfo, st, _K_A, -1, 1, fs[_K_A], fe[_K_A])
                return _ST_ERR, nxt, row, mtype, -1
            if fh[_K_E] == _F_INT:
                tsx = _ts_ns(fv[_K_E])
                flags_lv = 0
            else:
                tsx = ts_local
                flags_lv = FLAG_TS_EXCH_MISSING
            if fh[_K_E] == _F_INT or fh[_K_e] == _F_STR or fh[_K_T] == _F_INT:
                fut[dslot] = 1
            seq = fv[_K_u]
            kind_lv = KIND_BBO
            o[_C_KIND, row0] = KIND_BBO
            o[_C_SIDE, row0] = 1
            o[_C_PRICE, row0] = bp
            o[_C_QTY, row0] = bq
            o[_C_SIDE, row0 + 1] = -1
            o[_C_PRICE, row0 + 1] = ap
            o[_C_QTY, row0 + 1] = aq
            r = row0 + 2
        elif mtype == _M_TRADE or mtype == _M_AGG:
            pv, st = num(fs[_K_p], fe[_K_p], tm, tsc, disc, dslot, 0)
            if st != 0:
                _num_err(einfo, st, _K_p, -1, 0, fs[_K_p], fe[_K_p])
                return _ST_ERR, nxt, row, mtype, -1
            q, st = num(fs[_K_q], fe[_K_q], lm, lsc, disc, dslot, 1)
            if st != 0:
                _num_err(einfo, st, _K_q, -1, 1, fs[_K_q], fe[_K_q])
                return _ST_ERR, nxt, row, mtype, -1
            tsx = _ts_ns(fv[_K_T])
            # futures trades carry X (execution type); spot trades and aggTrades carry M
            if fh[_K_X] != _F_NONE or fh[_K_M] == _F_NONE:
                fut[dslot] = 1
            if mtype == _M_TRADE:
                seq = fv[_K_t]
                flags_lv = 0
                if fh[_K_X] == _F_STR and not eq(fs[_K_X], fe[_K_X], _LIT_MARKET):
                    ctx[1] += 1
            else:
                seq = fv[_K_a]
                flags_lv = FLAG_AGGREGATED
            kind_lv = KIND_TRADE
            o[_C_KIND, row0] = KIND_TRADE
            o[_C_SIDE, row0] = -1 if fv[_K_m] != 0 else 1
            o[_C_PRICE, row0] = pv
            o[_C_QTY, row0] = q
            r = row0 + 1
        else:  # snapshot
            if fh[_K_E] == _F_INT:
                tsx = _ts_ns(fv[_K_E])
                flags_lv = FLAG_SNAPSHOT
                fut[dslot] = 1
            else:
                tsx = ts_local
                flags_lv = FLAG_SNAPSHOT | FLAG_TS_EXCH_MISSING
            seq = fv[_K_LUI]
            kind_lv = KIND_SNAPSHOT
            o[_C_KIND, row0] = KIND_CLEAR
            o[_C_SIDE, row0] = 0
            o[_C_PRICE, row0] = 0
            o[_C_QTY, row0] = 0
        for k in range(row0, r):
            o[_C_TS_EXCH, k] = tsx
            o[_C_TS_LOCAL, k] = ts_local
            o[_C_SEQ, k] = seq
            o[_C_FLAGS, k] = flags_lv
            o[_C_SYM, k] = dslot
            o[_C_LINE, k] = line_no
        for k in range(row0 + 1, r):
            o[_C_KIND, k] = kind_lv
        if mtype == _M_BBO:
            o[_C_KIND, row0 + 1] = KIND_BBO
        if mtype == _M_SNAP:
            o[_C_FLAGS, row0] = flags_lv | FLAG_SNAPSHOT_BEGIN
            o[_C_FLAGS, r - 1] |= FLAG_SNAPSHOT_END
        o[_C_FLAGS, r - 1] |= FLAG_EOM
        if disc:
            disc_used[dslot] = 1
        if fsl >= 0:
            ctx[0] = fsl
        return _ST_OK, nxt, r, mtype, dslot

    row = 0
    nerr = 0
    line_no = 1
    pos = begin
    while pos < end:
        st, nxt, nrow, mtype, slot = parse_line(out, pos, line_no, row)
        if st == _ST_GROW:
            newcap = max(out.shape[1] * 2, row + 4096)
            grown = np.empty((_NCOL, newcap), np.int64)
            grown[:, :row] = out[:, :row]
            out = grown
            continue
        if st == _ST_OK:
            row = nrow
            stats[mtype] += 1
            if mtype != _M_UNKNOWN:
                slot_msgs[slot] += 1
        elif st == _ST_EMPTY:
            stats[_S_EMPTY] += 1
        else:
            le = max(nxt - 1, pos)
            while le < end and buf[le] != 10:
                le += 1
            if nerr >= errs.shape[0]:
                grown_e = np.zeros((errs.shape[0] * 2 + 16, _NERRCOL), np.int64)
                grown_e[:nerr] = errs[:nerr]
                errs = grown_e
            errs[nerr, 0] = line_no
            errs[nerr, 1] = pos
            errs[nerr, 2] = le
            for k in range(_NEI):
                errs[nerr, 3 + k] = einfo[k]
                einfo[k] = 0
            nerr += 1
            stats[_S_BAD] += 1
            nxt = le + 1
            if nerr >= stop_after:
                pos = min(nxt, end)
                line_no += 1
                break
        pos = nxt
        line_no += 1
    stats[_S_NOT_MARKET] += ctx[1]
    return out, row, errs, nerr, pos, line_no - 1


# ---- host side --------------------------------------------------------------
class _State:
    """Symbol registry, instrument steps and evidence shared by the scans of one file."""

    def __init__(self) -> None:
        self.syms = np.zeros((_MAXSYM, _SYMLEN), np.uint8)
        self.symlen = np.zeros(_MAXSYM, np.int64)
        self.nsym = np.zeros(1, np.int64)
        self.steps = np.ones((_MAXSYM + 1, 4), np.int64)
        self.known = np.zeros(_MAXSYM + 1, np.uint8)
        self.fut = np.zeros(_MAXSYM + 1, np.int64)
        self.dec = np.zeros((_MAXSYM + 1, 2), np.int64)
        self.dec_complete = np.zeros(_MAXSYM + 1, np.bool_)
        self.seen = np.zeros(_MAXSYM + 1, np.int64)  # messages per slot over all scans
        self.snap_slot = -1
        self.insts: dict[int, Instrument] = {}

    def names(self) -> list[str]:
        return [bytes(self.syms[k, : self.symlen[k]]).decode("ascii", "replace") for k in range(int(self.nsym[0]))]

    def register(self, name: str) -> int:
        b = np.frombuffer(name.upper().encode("ascii", "replace"), np.uint8)
        k = int(_slot_of(b, 0, b.size, self.syms, self.symlen, self.nsym, True))
        if k < 0:
            msg = f"cannot register symbol {name!r}: at most {_MAXSYM} symbols of {_SYMLEN} characters per file"
            raise SchemaError(msg)
        return k


class _Run:
    """The outcome of one scan."""

    def __init__(self, out: np.ndarray, rows: int, errs: np.ndarray, nerr: int, stop: int, lines: int,
                 stats: np.ndarray, slot_msgs: np.ndarray, disc_used: np.ndarray, full: bool) -> None:
        self.out, self.rows, self.errs, self.nerr = out, rows, errs, nerr
        self.stop, self.lines, self.stats = stop, lines, stats
        self.slot_msgs, self.disc_used, self.full = slot_msgs, disc_used, full


def _run_scan(buf: np.ndarray, limit: int, state: _State, stop_after: int) -> _Run:
    cap = max(limit // 40, 0) + 4096
    out = np.empty((_NCOL, cap), np.int64)
    stats = np.zeros(_NSTATS, np.int64)
    slot_msgs = np.zeros(_MAXSYM + 1, np.int64)
    disc_used = np.zeros(_MAXSYM + 1, np.uint8)
    errs = np.zeros((16, _NERRCOL), np.int64)
    known_before = state.known.copy()
    out, rows, errs, nerr, stop, lines = _scan(
        buf, 0, limit, out, state.steps, state.known, state.syms, state.symlen, state.nsym,
        np.int64(state.snap_slot), state.fut, state.dec, disc_used, slot_msgs, stats, errs, np.int64(stop_after))
    full = limit >= buf.size and stop >= limit
    if full:  # decimals of slots read in discovery mode cover the whole file
        unknown = known_before == 0
        unknown[int(state.nsym[0]):_MAXSYM] = False
        state.dec_complete |= unknown
    np.maximum(state.seen, slot_msgs, out=state.seen)
    return _Run(out, int(rows), errs, int(nerr), int(stop), int(lines), stats, slot_msgs, disc_used, full)


def _file_symbol(source: str) -> str | None:
    """The symbol a file name starts with, as in ``btcusdt_20240808.gz`` (``<symbol>_<anything>``)."""
    m = re.match(r"([A-Za-z0-9]{2,32})[_\-]", Path(source).name)
    return m.group(1).upper() if m else None


def _norm_step(mant: int, scale: int) -> tuple[int, int]:
    """Drop trailing zeros of the step's mantissa (``0.10`` -> (1, 1)): same step, faster path."""
    while mant % 10 == 0 and scale > 0:
        mant //= 10
        scale -= 1
    return mant, scale


def _finest(d: int) -> str:
    return "1" if d <= 0 else "0." + "0" * (d - 1) + "1"


def _resolve(state: _State, instrument: Instrument | None, symbol: str | None, source: str,
             final: bool) -> None:
    """Attribute snapshot lines and fix each active symbol's instrument (and steps)."""
    names = state.names()
    active = [k for k in range(len(names)) if state.seen[k] > 0]
    if state.seen[_MAXSYM] > 0 or state.snap_slot >= 0:
        k = state.snap_slot
        if k < 0:
            fsym = _file_symbol(source)
            if symbol:
                k = state.register(symbol)
            elif len(active) == 1:
                k = active[0]
            elif fsym is not None and (fsym in names or not active):
                k = state.register(fsym)
            elif final:
                msg = (f"{source}: a REST depth snapshot line carries no symbol and the file holds "
                       f"{len(active)} symbols {[names[j] for j in active]}; pass symbol='...' to say "
                       "which symbol the snapshot belongs to")
                raise SchemaError(msg)
        if k >= 0:
            state.snap_slot = k
            state.fut[k] |= state.fut[_MAXSYM]
            state.dec[k] = np.maximum(state.dec[k], state.dec[_MAXSYM])
            names = state.names()
            active = sorted(set(active) | {k})
    for k in active:
        name = names[k]
        venue = "binance-futures" if state.fut[k] else "binance"
        inst = None
        if instrument is not None and (instrument.symbol.upper() == name or len(active) == 1):
            inst = instrument
        if inst is None:
            inst = lookup(venue, name, source="binance")
        if inst is None and state.dec_complete[k]:
            if state.dec[k, 0] > 18 or state.dec[k, 1] > 18:
                msg = (f"{source}: symbol {name}: cannot infer the tick/lot size ({state.dec[k, 0]} / "
                       f"{state.dec[k, 1]} decimals); pass instrument=Instrument(...)")
                raise SchemaError(msg)
            inst = Instrument(venue=venue, symbol=name, tick_size=_finest(int(state.dec[k, 0])),
                              lot_size=_finest(int(state.dec[k, 1])), source="binance",
                              tick_size_inferred=True, lot_size_inferred=True)
        if inst is None:
            state.known[k] = 0
            state.insts.pop(k, None)
            continue
        tm, ts_ = _norm_step(*decimal_step(inst.tick_size))
        lm, ls_ = _norm_step(*decimal_step(inst.lot_size))
        state.steps[k] = (tm, ts_, lm, ls_)
        state.known[k] = 1
        state.insts[k] = inst


def _inflate(raw: bytes, source: str) -> tuple[bytes, str]:
    """Decompress gzip (all members) or return plain text as is; (text, inflater name)."""
    if raw[:2] != b"\x1f\x8b":
        return raw, "none"
    mod = _isal_zlib if _isal_zlib is not None else zlib
    errors: tuple[type[BaseException], ...] = (zlib.error,)
    if _isal_zlib is not None:
        errors = (zlib.error, _isal_zlib.error)
    parts: list[bytes] = []
    data = raw
    while True:
        d = mod.decompressobj(31)
        try:
            parts.append(d.decompress(data))
        except errors as exc:
            got = b"".join(parts)
            nl = got.count(b"\n")
            msg = (f"{source}: corrupt gzip stream ({exc}) in line {nl + 1} "
                   f"(after {len(got):,} uncompressed bytes); the file is damaged, re-download or re-record it")
            raise ParseError(msg) from None
        if not d.eof:
            got = b"".join(parts)
            nl = got.count(b"\n")
            msg = (f"{source}: truncated gzip stream: the data ends in line {nl + 1} "
                   f"(after {len(got):,} uncompressed bytes) before the gzip end-of-stream marker; "
                   "the file is incomplete, re-download or re-record it")
            raise ParseError(msg)
        data = d.unused_data
        if not data.strip(b"\x00"):
            break
        if data[:2] != b"\x1f\x8b":
            got = b"".join(parts)
            nl = got.count(b"\n")
            msg = (f"{source}: {len(data):,} bytes of trailing garbage after the gzip stream "
                   f"(after line {nl}); the file is damaged")
            raise ParseError(msg)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), ("isal" if mod is _isal_zlib else "zlib")


_LINE_RE = re.compile(rb"[ \t]*\d{1,19}[ \t]+\{")


def _check_format(text: bytes, source: str) -> None:
    """Raise FormatError unless the first non-blank line looks like ``<ns timestamp> {json}``."""
    pos = 0
    line_no = 1
    while pos < len(text) and line_no < 1000:
        end = text.find(b"\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end]
        if line.strip():
            if not _LINE_RE.match(line):
                shown = line[:80].decode("utf-8", "replace")
                msg = (f"{source}: line {line_no}: expected '<ns timestamp> <json>' lines (a raw Binance "
                       f"recording), found {shown!r}; use the reader of that file's format")
                raise FormatError(msg)
            return
        pos = end + 1
        line_no += 1


def _role(field: int, comp: int) -> str:
    if comp == 0 or field in (_K_p,) or (comp < 0 and field in (_K_b, _K_a)):
        return "price"
    if comp == 1 or field in (_K_q, _K_B, _K_A):
        return "qty"
    return "value"


def _describe(e: np.ndarray, text: bytes, state: _State) -> tuple[str, str, str, type[Exception]]:
    """(rule, field, detail, exception class) for one scanner error row."""
    ls, le = int(e[1]), int(e[2])
    rule_code = int(e[3 + _EI_RULE])
    field = int(e[3 + _EI_FIELD])
    idx = int(e[3 + _EI_IDX])
    comp = int(e[3 + _EI_COMP])
    vs, ve = int(e[3 + _EI_VS]), int(e[3 + _EI_VE])
    status = int(e[3 + _EI_STATUS])
    pos = int(e[3 + _EI_POS])
    expect = int(e[3 + _EI_EXPECT])
    mtype = int(e[3 + _EI_MTYPE])
    slot = int(e[3 + _EI_SLOT])
    rule = _RULES.get(rule_code, "malformed_line")
    fname = _FIELD_NAMES[field] if 0 <= field < len(_FIELD_NAMES) else "?"
    if idx >= 0 and comp >= 0:
        fname = f"{fname}[{idx}][{comp}]"
    elif idx >= 0:
        fname = f"{fname}[{idx}]"
    if rule_code in (_R_OFFGRID_PRICE, _R_OFFGRID_QTY):
        value = text[vs:ve].decode("utf-8", "replace")
        inst = state.insts.get(slot)
        what, step_name = ("price", "tick_size") if rule_code == _R_OFFGRID_PRICE else ("qty", "lot_size")
        step = (inst.tick_size if what == "price" else inst.lot_size) if inst else "?"
        where = f" ({inst.venue} {inst.symbol})" if inst else ""
        detail = (f"field {fname!r} ({what}): expected a whole number of {step_name}={step}{where}, "
                  f"got {value!r}; pass instrument=... with the right {step_name}, or errors='quarantine' "
                  "to skip the line")
        return rule, fname, detail, SchemaError
    if rule_code == _R_BADNUM:
        value = text[vs:ve].decode("utf-8", "replace")
        detail = (f"field {fname!r} ({_role(field, comp)}): expected a decimal number, got {value!r} "
                  f"({STATUS_TEXT.get(status, 'bad number')})")
        return rule, fname, detail, ParseError
    # malformed line
    mname = _MTYPE_NAMES[mtype] if 0 < mtype < len(_MTYPE_NAMES) else "message"
    if expect == _X_MISSING:
        detail = f"{mname} message has no field {fname!r}; expected it in every {mname} message"
        return rule, fname, detail, ParseError
    col = pos - ls + 1
    found = text[pos:min(pos + 24, le)].decode("utf-8", "replace") if 0 <= pos < le else ""
    found_txt = repr(found) if found else "the end of the line"
    what = _EXPECT_TEXT.get(expect, "valid JSON")
    detail = f"malformed line at column {col}: expected {what}, found {found_txt}"
    if field not in (_K_OTHER,) and expect not in (_X_TS,):
        detail += f" (field {fname!r}"
        detail += f", {mname} message)" if 0 < mtype < len(_MTYPE_NAMES) else ")"
    try:
        import orjson

        raw = text[ls:le]
        sp = raw.find(b" ")
        if sp > 0:
            orjson.loads(raw[sp + 1:])
    except Exception as exc:  # noqa: BLE001 - only to word the message
        detail += f"; JSON parser says: {exc}"
    return rule, fname, detail, ParseError


def _progress_on(progress: Any, nbytes: int) -> bool:
    if progress is None:
        return bool(config.get_option("progress")) and nbytes > (64 << 20)
    return bool(progress)


def read_binance(path: Any, *, instrument: Instrument | None = None, errors: str = "raise",
                 progress: Any = None, symbol: str | None = None) -> ReadResult:
    """Read a raw Binance WebSocket recording into gpuflow event tables.

    Parameters
    ----------
    path : str or path-like
        Gzip (any number of members) or plain text file of ``<local ns> <raw JSON>`` lines.
    instrument : Instrument, optional
        Tick and lot size to use: for the symbol of the same name, or for the only
        symbol of the file.  Other symbols use the built-in table, else the finest
        decimal step present in the file (marked as inferred).
    errors : {"raise", "quarantine"}
        ``"raise"``: raise at the first bad line.  ``"quarantine"``: put each bad line
        (rules ``off_grid_price``, ``off_grid_qty``, ``bad_number``, ``malformed_line``;
        raw = the line text) into ``rejected`` and emit nothing of it.
    progress : bool, optional
        Log the stages (inflate, scan, build) at INFO level; by default only for files
        over 64 MiB when the ``progress`` option is on.
    symbol : str, optional
        Symbol of the REST snapshot lines (which carry none).  Needed only when the
        file holds several symbols and its name does not start with one
        (``btcusdt_20240808.gz``).

    Returns
    -------
    ReadResult
        ``tables``: one events table per symbol (host, schema EVENTS + ``src_line``,
        1-based line number), stably sorted by ``ts_local``.  ``stats``: ``lines``,
        messages per stream type (``depthUpdate``, ``bookTicker``, ``trade``,
        ``aggTrade``, ``snapshot``, ``unknown``), ``rows``, ``empty_lines``,
        ``rejected_lines``, ``trades_not_market`` (futures ``X`` other than MARKET:
        kept), ``rows_per_symbol``, ``inflater`` and ``timings_s``.

    Raises
    ------
    FormatError
        The file is not a ``<ns timestamp> <json>`` recording (checked on its first line).
    ParseError
        Truncated or corrupt gzip (always); a malformed line or bad number (``errors="raise"``).
    SchemaError
        A price or size off the instrument's grid (``errors="raise"``), or snapshot
        lines that cannot be attributed to a symbol.

    See Also
    --------
    gpuflow.io.read : read any supported format by name.

    Examples
    --------
    >>> res = read_binance("btcusdt_20240808.gz")            # doctest: +SKIP
    >>> res.stats["depthUpdate"], res.tables[0].num_rows     # doctest: +SKIP
    (6551, 605564)
    """
    if errors not in ("raise", "quarantine"):
        msg = f"errors: expected 'raise' or 'quarantine', got {errors!r}"
        raise SchemaError(msg)
    if instrument is not None and not isinstance(instrument, Instrument):
        msg = f"instrument: expected a gpuflow.schema.Instrument, got {type(instrument).__name__}"
        raise SchemaError(msg)
    source = str(path)
    t0 = time.perf_counter()
    raw = Path(path).read_bytes()
    text, inflater = _inflate(raw, source)
    del raw
    t1 = time.perf_counter()
    show = _progress_on(progress, len(text))
    if show:
        _log.info("%s: inflated %s bytes with %s in %.3f s", source, f"{len(text):,}", inflater, t1 - t0)
    _check_format(text, source)
    buf = np.frombuffer(text, dtype=np.uint8)
    state = _State()
    stop_after = 1 if errors == "raise" else 1 << 62
    n = buf.size
    # First a look at the head (symbols, venue), then full scans until the steps are settled.
    limit = n
    if n > 2 * _SNIFF_BYTES:
        nl = text.find(b"\n", _SNIFF_BYTES)
        limit = n if nl < 0 else nl + 1
    passes = 0
    run = None
    for _attempt in range(6):
        # Stop at the first bad line only on a run expected to be the last (every symbol's steps known).
        settled = limit >= n and all(state.known[k] for k in range(int(state.nsym[0])) if state.seen[k] > 0)
        run = _run_scan(buf, limit, state, stop_after if settled else 1 << 62)
        passes += 1
        before = (state.steps.copy(), state.known.copy(), state.snap_slot)
        _resolve(state, instrument, symbol, source, final=run.full)
        changed = (not np.array_equal(before[0], state.steps) or not np.array_equal(before[1], state.known)
                   or before[2] != state.snap_slot)
        used_disc = bool(np.any((run.disc_used != 0) & (run.slot_msgs > 0)))
        if limit < n:
            limit = n
            continue
        if not changed and not used_disc:
            break
    assert run is not None
    t2 = time.perf_counter()
    if show:
        _log.info("%s: scanned %s lines in %d pass(es), %.3f s", source, f"{run.lines:,}", passes, t2 - t1)
    # ---- errors
    rejected = empty_rejected()
    if run.nerr:
        descs = [_describe(run.errs[k], text, state) for k in range(run.nerr)]
        if errors == "raise":
            _, _, detail, cls = descs[0]
            msg = f"{source}: line {int(run.errs[0, 0])}: {detail}"
            raise cls(msg)
        raws = [text[int(run.errs[k, 1]):int(run.errs[k, 2])].rstrip(b"\r").decode("utf-8", "replace")
                for k in range(run.nerr)]
        rejected = rejected_table(source, [int(run.errs[k, 0]) for k in range(run.nerr)],
                                  [d[0] for d in descs], [d[1] for d in descs], [d[2] for d in descs], raws)
    # ---- tables
    rows = run.rows
    cols = run.out[:, :rows]
    ts_local = cols[_C_TS_LOCAL]
    if rows > 1 and bool(np.any(ts_local[1:] < ts_local[:-1])):
        perm = np.argsort(ts_local, kind="stable")
        cols = cols[:, perm]
    names = state.names()
    sym = cols[_C_SYM]
    slots = [k for k in range(len(names)) if k in state.insts]
    present = np.unique(sym) if rows else np.zeros(0, np.int64)
    tables = []
    rows_per_symbol: dict[str, int] = {}
    for k in slots:
        if k not in present:
            continue
        if len(present) == 1:
            part = cols
        else:
            part = cols[:, sym == k]
        tables.append(events_table({
            "ts_exch": part[_C_TS_EXCH], "ts_local": part[_C_TS_LOCAL], "seq": part[_C_SEQ],
            "kind": part[_C_KIND], "side": part[_C_SIDE], "price": part[_C_PRICE], "qty": part[_C_QTY],
            "flags": part[_C_FLAGS]}, state.insts[k], src_line=part[_C_LINE]))
        rows_per_symbol[names[k]] = int(part.shape[1])
    t3 = time.perf_counter()
    if show:
        _log.info("%s: built %d table(s), %s rows, in %.3f s", source, len(tables), f"{rows:,}", t3 - t2)
    st = run.stats
    stats: dict[str, Any] = {
        "lines": run.lines,
        "depthUpdate": int(st[_M_DEPTH]), "bookTicker": int(st[_M_BBO]), "trade": int(st[_M_TRADE]),
        "aggTrade": int(st[_M_AGG]), "snapshot": int(st[_M_SNAP]), "unknown": int(st[_M_UNKNOWN]),
        "rows": int(rows), "empty_lines": int(st[_S_EMPTY]), "rejected_lines": int(run.nerr),
        "trades_not_market": int(st[_S_NOT_MARKET]), "rows_per_symbol": rows_per_symbol,
        "symbols": [names[k] for k in slots if k in present], "bytes": int(n), "inflater": inflater,
        "passes": passes,
        "timings_s": {"inflate": t1 - t0, "scan": t2 - t1, "build": t3 - t2, "total": t3 - t0},
    }
    return ReadResult(tables=tables, rejected=rejected, source=source, stats=stats)
