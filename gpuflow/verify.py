"""Verify book reconstruction against independent oracles.

* :func:`verify_lobster`: replay a LOBSTER message file on the book of its first
  orderbook row and compare the top N levels after every message with the next
  orderbook row, every level of every row.
* :func:`verify_binance`: rebuild a Binance book from the REST snapshot and the
  diff-depth stream (exact sync rules, resync on gaps) and compare the best bid
  and ask with every bookTicker that describes the same state.

Both are used by ``gpuflow verify`` and by the test suite.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numba import njit

from gpuflow.schema import KIND_ADD, KIND_CANCEL, KIND_DELETE, KIND_EXECUTE

__all__ = ["LobsterVerification", "verify_lobster", "BinanceVerification", "verify_binance"]


@dataclass
class LobsterVerification:
    """Result of :func:`verify_lobster` (``ok`` when no row mismatches)."""

    message_file: str
    orderbook_file: str
    levels: int
    rows: int
    levels_checked: int
    levels_entered: int
    mismatched_rows: int
    first_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatched_rows == 0 and self.rows > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


_MAX_REPORTED = 20


@njit(cache=True)
def _lobster_replay(kind, side, price, qty, bp, bq, ap, aq, dummy_bid, dummy_ask, mism):  # pragma: no cover
    """Replay messages 1..n-1 on row 0's levels and compare with rows 1..n-1.

    State per side: the sorted levels we know (those of the last row, plus levels
    created by messages since).  After each row the state becomes that row's
    levels: identical to our replay truncated to N plus the levels that entered
    the window from beyond N when the row matches; a resync when it does not.
    ``mism`` (k x 5: row, side, level, expected price, found price) receives the
    first mismatches.  Returns (rows, levels_checked, levels_entered, mismatched_rows).
    """
    n, N = bp.shape
    cap = N + 4
    sp = np.zeros((2, cap), np.int64)
    sq = np.zeros((2, cap), np.int64)
    cnt = np.zeros(2, np.int64)
    rp = np.empty((2, N), np.int64)
    rq = np.empty((2, N), np.int64)

    # initial state: row 0
    for s in range(2):
        c = 0
        for m in range(N):
            p = bp[0, m] if s == 0 else ap[0, m]
            q = bq[0, m] if s == 0 else aq[0, m]
            if p == dummy_bid or p == dummy_ask or q == 0:
                break
            sp[s, c] = p
            sq[s, c] = q
            c += 1
        cnt[s] = c
    levels_checked = 0
    entered = 0
    mismatched = 0
    reported = 0
    for i in range(1, n):
        k = kind[i]
        delta = np.int64(0)
        if k == KIND_ADD:
            delta = qty[i]
        elif k == KIND_CANCEL or k == KIND_DELETE or k == KIND_EXECUTE:
            delta = -qty[i]
        if delta != 0:
            s = 0 if side[i] > 0 else 1
            p = price[i]
            pos = 0
            # bids sorted descending, asks ascending
            while pos < cnt[s] and ((s == 0 and sp[s, pos] > p) or (s == 1 and sp[s, pos] < p)):
                pos += 1
            if pos < cnt[s] and sp[s, pos] == p:
                sq[s, pos] += delta
                if sq[s, pos] == 0:
                    for j in range(pos, cnt[s] - 1):
                        sp[s, j] = sp[s, j + 1]
                        sq[s, j] = sq[s, j + 1]
                    cnt[s] -= 1
            elif cnt[s] < cap:
                for j in range(cnt[s], pos, -1):
                    sp[s, j] = sp[s, j - 1]
                    sq[s, j] = sq[s, j - 1]
                sp[s, pos] = p
                sq[s, pos] = delta
                cnt[s] += 1
        row_bad = False
        for s in range(2):
            for m in range(N):
                rp[s, m] = bp[i, m] if s == 0 else ap[i, m]
                rq[s, m] = bq[i, m] if s == 0 else aq[i, m]
            kk = 0
            for m in range(N):
                levels_checked += 1
                p = rp[s, m]
                bad = False
                found = np.int64(0)
                if p == dummy_bid or p == dummy_ask or rq[s, m] == 0:
                    if kk < cnt[s]:
                        bad = True  # we hold a level where the book shows none
                        found = sp[s, kk]
                        kk += 1
                elif kk < cnt[s]:
                    found = sp[s, kk]
                    if found == p:
                        bad = sq[s, kk] != rq[s, m]
                        kk += 1
                    else:
                        bad = True
                        if (s == 0 and found > p) or (s == 1 and found < p):
                            kk += 1  # our level is better than the book's: it should not exist
                else:
                    entered += 1  # beyond every level we know: it entered the window from beyond N
                if bad:
                    row_bad = True
                    if reported < mism.shape[0]:
                        mism[reported, 0] = i
                        mism[reported, 1] = 1 if s == 0 else -1
                        mism[reported, 2] = m + 1
                        mism[reported, 3] = p
                        mism[reported, 4] = found
                        reported += 1
            # the state becomes the row's levels (equal to our truncated replay when the row matched)
            c = 0
            for m in range(N):
                p = rp[s, m]
                if p == dummy_bid or p == dummy_ask or rq[s, m] == 0:
                    break
                sp[s, c] = p
                sq[s, c] = rq[s, m]
                c += 1
            cnt[s] = c
        if row_bad:
            mismatched += 1
    return n - 1, levels_checked, entered, mismatched


def verify_lobster(message_file: Any, orderbook_file: Any | None = None) -> LobsterVerification:
    """Replay a LOBSTER message file and compare every level of every orderbook row.

    Parameters
    ----------
    message_file : path
        ``*_message_N.csv[.gz]``.
    orderbook_file : path, optional
        ``*_orderbook_N.csv[.gz]``; found beside the message file by default.

    Returns
    -------
    LobsterVerification
        ``rows`` compared (all rows after the first), ``levels_checked`` (2 N per row),
        ``levels_entered`` (levels that came into the top N from beyond it and so
        were taken from the orderbook file) and ``mismatched_rows``.

    Notes
    -----
    Row 0 of the orderbook file is the book after message 0; replay starts from
    it, so orders resting before the file starts are part of its levels (their
    cancels and executions are not errors).  A level that enters the window from
    beyond level N can only come from the orderbook file: it is taken from there
    and counted; every other level must equal the replay.  After a mismatched row
    the replay resyncs to that row (and counts it).
    """
    from gpuflow.io.lobster import (ASK_DUMMY_PRICE, BID_DUMMY_PRICE, find_orderbook, read_lobster,
                                    read_lobster_orderbook)

    msg_path = os.fspath(message_file)
    ob_path = os.fspath(orderbook_file) if orderbook_file is not None else os.fspath(find_orderbook(msg_path))
    ev = read_lobster(msg_path).tables[0]
    book = read_lobster_orderbook(ob_path)
    n_msg = ev.num_rows
    if book.rows != n_msg:
        from gpuflow.errors import SchemaError

        msg = (f"{ob_path}: {book.rows} orderbook rows but {msg_path} has {n_msg} messages; "
               "a LOBSTER orderbook file has exactly one row per message (pair message_N with orderbook_N)")
        raise SchemaError(msg)
    mism = np.zeros((_MAX_REPORTED, 5), np.int64)
    cols = [ev.column(c).to_numpy() for c in ("kind", "side", "price", "qty")]
    rows, checked, entered, bad = _lobster_replay(*cols, book.bid_price, book.bid_size, book.ask_price,
                                                  book.ask_size, np.int64(BID_DUMMY_PRICE),
                                                  np.int64(ASK_DUMMY_PRICE), mism)
    first = [{"row": int(r[0]), "side": "bid" if r[1] > 0 else "ask", "level": int(r[2]),
              "expected_price": int(r[3]), "replay_price": int(r[4])} for r in mism[: min(bad, _MAX_REPORTED)]]
    return LobsterVerification(msg_path, ob_path, book.levels, int(rows), int(checked), int(entered), int(bad),
                               first)


@dataclass
class BinanceVerification:
    """Result of :func:`verify_binance` (``ok`` when nothing mismatches and something was checked)."""

    recording: str
    symbol: str
    checked: int
    skipped: int
    mismatches: int
    unsynced: int
    diffs_applied: int
    resyncs: int
    gaps: int
    first_mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0 and self.checked > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def verify_binance(recording: Any, *, symbol: str | None = None, backend: str | None = "cpu"
                   ) -> BinanceVerification:
    """Rebuild the book from snapshot + diffs and compare with every matching bookTicker.

    Parameters
    ----------
    recording : path or list of paths
        One recording, or consecutive files of one recording (a file without a
        snapshot continues the previous one, e.g. spot 20240808 then 20240809).

    Notes
    -----
    A bookTicker with update id ``u`` is compared when ``u`` equals the final
    update id of an applied diff (both describe the same book state); bookTickers
    whose id falls inside a diff's aggregated range are counted as ``skipped``,
    those outside every applied diff (before the first sync, or during a gap) as
    ``unsynced``.  The book follows Binance's sync rules (:mod:`gpuflow.sync`).
    """
    from gpuflow.sync import binance_l2_compare

    return binance_l2_compare(recording, symbol=symbol, backend=backend)
