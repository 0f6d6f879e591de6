"""Tests of gpuflow.clean on small hand-worked tables (expected results written out)."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpuflow.clean import RULES, CleanReport, CleanResult, clean, write_quarantine
from gpuflow.errors import GpuflowError, SchemaError
from gpuflow.io import ReadResult, rejected_table
from gpuflow.schema import (FLAG_AGGREGATED, FLAG_EOM, FLAG_SNAPSHOT, FLAG_SNAPSHOT_BEGIN, FLAG_SNAPSHOT_END,
                            KIND_ADD, KIND_BBO, KIND_CANCEL, KIND_CLEAR, KIND_DIFF, KIND_EXECUTE, KIND_SET,
                            KIND_SNAPSHOT, KIND_STATUS, KIND_TRADE, QUARANTINE, Instrument, events_table,
                            instrument_of)

INS = Instrument(venue="binance-futures", symbol="BTCUSDT", tick_size="0.10", lot_size="0.001",
                 source="test")
E = FLAG_EOM
SB = FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN
SE = FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM


def table(rows: list[tuple], src_line: bool = True) -> pa.Table:
    """Rows as (ts_local, kind, side, price, qty, seq, flags[, ts_exch]); src_line = 10, 11, ..."""
    cols = {"ts_local": [r[0] for r in rows], "kind": [r[1] for r in rows], "side": [r[2] for r in rows],
            "price": [r[3] for r in rows], "qty": [r[4] for r in rows], "seq": [r[5] for r in rows],
            "flags": [r[6] for r in rows], "ts_exch": [r[7] if len(r) > 7 else r[0] for r in rows]}
    cols = {k: np.asarray(v) for k, v in cols.items()}
    return events_table(cols, INS, src_line=np.arange(10, 10 + len(rows)) if src_line else None)


def col(t: pa.Table, name: str) -> list:
    return t.column(name).to_pylist()


# ---------------------------------------------------------------------------------------------
def test_duplicates_keep_first_and_quarantine_later_copies():
    t = table([
        (1, KIND_TRADE, 1, 100, 1, 1, 0),      # 10
        (2, KIND_TRADE, -1, 101, 2, 2, 0),     # 11
        (2, KIND_TRADE, -1, 101, 2, 2, 0),     # 12 copy of 11
        (2, KIND_TRADE, -1, 101, 2, 2, E),     # 13 differs in flags: kept
        (3, KIND_TRADE, 1, 102, 1, 3, 0),      # 14
        (2, KIND_TRADE, -1, 101, 2, 2, 0),     # 15 copy of 11 (not adjacent)
        (1, KIND_TRADE, 1, 100, 1, 1, 0),      # 16 copy of 10
    ])
    res = clean(t, rules=["duplicates"])
    assert col(res.table, "src_line") == [10, 11, 13, 14]
    q = res.quarantine
    assert col(q, "line") == [12, 15, 16]
    assert col(q, "rule") == ["duplicates"] * 3
    assert col(q, "detail") == ["exact duplicate of line 11", "exact duplicate of line 11",
                                "exact duplicate of line 10"]
    assert col(q, "raw")[0] == ("ts_exch=2 ts_local=2 seq=2 kind=trade side=-1 price=101 qty=2 "
                                "order_id=0 flags=0")
    r = res.report["duplicates"]
    assert (r.found, r.quarantined, r.action) == (3, 3, "quarantine")
    assert res.report.rows_in == 7 and res.report.rows_kept == 4


def test_line_is_row_index_without_src_line():
    t = table([(1, KIND_TRADE, 1, 100, 1, 1, 0), (1, KIND_TRADE, 1, 100, 1, 1, 0)], src_line=False)
    res = clean(t, rules=["duplicates"])
    assert col(res.quarantine, "line") == [1]
    assert res.table.column_names == t.column_names


def test_kept_table_keeps_schema_metadata_and_order():
    t = table([(3, KIND_TRADE, 1, 100, 1, 1, 0), (1, KIND_TRADE, 1, 100, 1, 2, 0),
               (4, KIND_TRADE, 1, 100, 0, 3, 0), (5, KIND_TRADE, 1, 100, 1, 4, 0)])
    res = clean(t)
    assert res.table.schema == t.schema
    assert res.table.schema.metadata == t.schema.metadata
    assert instrument_of(res.table) == INS
    assert col(res.table, "seq") == [1, 4]
    assert res.quarantine.schema == QUARANTINE
    assert col(res.quarantine, "rule") == ["out_of_order", "nonpositive_size"]


def test_out_of_order_against_running_max():
    t = table([(1, KIND_TRADE, 1, 100, 1, 0, 0), (3, KIND_TRADE, 1, 100, 1, 0, 0),
               (2, KIND_TRADE, 1, 100, 1, 0, 0), (3, KIND_TRADE, 1, 100, 2, 0, 0),
               (5, KIND_TRADE, 1, 100, 1, 0, 0), (4, KIND_TRADE, 1, 100, 1, 0, 0),
               (6, KIND_TRADE, 1, 100, 1, 0, 0)])
    res = clean(t, rules=["out_of_order"])
    assert col(res.table, "ts_local") == [1, 3, 3, 5, 6]
    assert col(res.quarantine, "line") == [12, 15]
    assert col(res.quarantine, "field") == ["ts_local", "ts_local"]
    assert col(res.quarantine, "detail") == ["ts_local 2 < running max 3 (1 ns earlier)",
                                             "ts_local 4 < running max 5 (1 ns earlier)"]


def test_nonpositive_size():
    t = table([
        (1, KIND_SET, 1, 100, 0, 0, E),        # 10 delete: fine
        (2, KIND_SET, 1, 100, -1, 0, E),       # 11 negative
        (3, KIND_TRADE, 1, 100, 0, 0, 0),      # 12 zero trade
        (4, KIND_ADD, 1, 100, 0, 0, 0),        # 13 zero add
        (5, KIND_EXECUTE, 1, 100, 0, 0, 0),    # 14 zero execute
        (6, KIND_BBO, 1, 100, 0, 0, 0),        # 15 zero bbo
        (7, KIND_SNAPSHOT, 1, 100, 0, 0, 0),   # 16 fine
        (8, KIND_DIFF, 0, 5, -1, 9, 0),        # 17 spot diff marker: qty is pu = -1, not a size
        (9, KIND_STATUS, 0, 0, -1, 0, 0),      # 18 halt: qty -1 is a code
        (10, KIND_CANCEL, 1, 100, 0, 0, 0),    # 19 fine
        (11, KIND_TRADE, 1, 100, 3, 0, 0),     # 20 fine
    ])
    res = clean(t, rules=["nonpositive_size"])
    assert col(res.quarantine, "line") == [11, 12, 13, 14, 15]
    assert col(res.table, "src_line") == [10, 16, 17, 18, 19, 20]
    assert col(res.quarantine, "detail")[:2] == ["qty -1 on a set row (expected > 0, or 0 = delete)",
                                                 "qty 0 on a trade row (expected > 0)"]


def diff(ts, u, U, pu, levels=((1, 100, 1),)):
    """A Binance diff message: marker row + level rows with the same seq."""
    rows = [(ts, KIND_DIFF, 0, U, pu, u, 0)]
    for i, (s, p, q) in enumerate(levels):
        rows.append((ts, KIND_SET, s, p, q, u, E if i == len(levels) - 1 else 0))
    return rows


def snapshot(ts, last_update_id):
    return [(ts, KIND_CLEAR, 0, 0, 0, last_update_id, SB),
            (ts, KIND_SNAPSHOT, 1, 99, 5, last_update_id, FLAG_SNAPSHOT),
            (ts, KIND_SNAPSHOT, -1, 101, 5, last_update_id, SE)]


def test_futures_diff_chain_like_the_recording_has_no_gaps():
    # the bridging diff (U <= 1000 < u) is recorded before the REST snapshot, as in usdm/btcusdt_20240808
    rows = (diff(1, 990, 985, 980) + diff(2, 996, 991, 990) + diff(3, 1003, 997, 996)
            + snapshot(4, 1000) + diff(5, 1010, 1004, 1003) + diff(6, 1020, 1011, 1010))
    res = clean(table(rows), rules=["sequence"])
    rep = res.report
    assert rep.found("sequence_gap") == 0
    assert rep.found("update_id_not_monotone") == 0
    # the two diffs before the bridging one are superseded by the snapshot
    assert rep.found("pre_snapshot") == 2
    assert [ln for ln, _ in rep["pre_snapshot"].examples] == [10, 12]
    assert res.table.num_rows == len(rows)


def test_futures_diff_chain_gap_stale_and_snapshot_bridge():
    rows = (snapshot(0, 5)                                      # 10-12
            + diff(1, 10, 5, 4)                                 # 13,14   bridges 5 (pu 4 <= 5 < 10)
            + diff(2, 20, 11, 10)                               # 15,16   ok
            + diff(3, 30, 25, 22, ((1, 100, 2), (-1, 101, 3)))  # 17-19   gap: pu 22 != 20
            + diff(4, 30, 25, 22)                               # 20,21   stale duplicate: u 30 <= 30
            + diff(5, 25, 21, 20)                               # 22,23   stale: u 25 <= 30
            + snapshot(6, 45)                                   # 24-26   resync at 45
            + diff(7, 40, 31, 30)                               # 27,28   pre_snapshot (u <= 45)
            + diff(8, 50, 41, 40)                               # 29,30   bridges 45 (pu 40 <= 45 < 50)
            + diff(9, 60, 51, 50)                               # 31,32   ok
            + diff(10, 70, 65, 61))                             # 33,34   gap: pu 61 != 60
    res = clean(table(rows), rules=["sequence"])
    rep = res.report
    assert rep.found("sequence_gap") == 2
    assert rep["sequence_gap"].action == "count" and rep["sequence_gap"].quarantined == 0
    assert rep["sequence_gap"].examples == [
        (17, "diff u=30: pu=22, expected 20 (previous u or snapshot lastUpdateId)"),
        (33, "diff u=70: pu=61, expected 60 (previous u or snapshot lastUpdateId)")]
    assert rep.found("pre_snapshot") == 1 and rep["pre_snapshot"].examples[0][0] == 27
    assert rep.found("update_id_not_monotone") == 4  # 2 markers + their 2 level rows
    q = res.quarantine
    assert col(q, "line") == [20, 21, 22, 23]
    assert col(q, "rule") == ["update_id_not_monotone"] * 4
    assert col(q, "detail") == [
        "diff u=30 <= previous u=30 (stale or duplicate message)",
        "level of stale diff message u=30 <= previous u=30",
        "diff u=25 <= previous u=30 (stale or duplicate message)",
        "level of stale diff message u=25 <= previous u=30"]
    assert res.table.num_rows == len(rows) - 4


def test_chain_without_snapshot_and_breaks_before_the_first_snapshot():
    # no snapshot at all: the first diff starts the chain, breaks are gaps
    rows = diff(1, 10, 5, 4) + diff(2, 20, 11, 10) + diff(3, 30, 25, 22)
    rep = clean(table(rows), rules=["sequence"]).report
    assert rep.found("sequence_gap") == 1 and rep.found("pre_snapshot") == 0
    # the same diffs before a snapshot with lastUpdateId 30 are superseded by it: not gaps
    rows = rows + snapshot(4, 30) + diff(5, 40, 31, 30)
    rep = clean(table(rows), rules=["sequence"]).report
    assert rep.found("sequence_gap") == 0 and rep.found("pre_snapshot") == 3


def test_snapshot_not_bridged_is_a_gap():
    rows = snapshot(1, 100) + diff(2, 110, 105, 104)  # pu 104 > lastUpdateId 100: ids 101..104 missing
    rep = clean(table(rows), rules=["sequence"]).report
    assert rep.found("sequence_gap") == 1
    assert rep["sequence_gap"].examples[0] == (13, ("diff u=110: pu=104, expected 100 (previous u or "
                                                    "snapshot lastUpdateId)"))


def test_spot_diff_chain():
    # spot markers: qty = -1, chain holds when U == previous u + 1
    rows = (snapshot(1, 100) + diff(2, 99, 90, -1)        # 13,14 pre_snapshot
            + diff(3, 105, 98, -1)                          # 15,16 bridges 101 (U 98 <= 101 <= 105)
            + diff(4, 110, 106, -1)                         # 17,18 ok
            + diff(5, 120, 112, -1)                         # 19,20 gap: U 112 != 111
            + diff(6, 120, 112, -1))                        # 21,22 duplicate -> quarantine
    res = clean(table(rows), rules=["sequence", "nonpositive_size"])
    rep = res.report
    assert rep.found("pre_snapshot") == 1
    assert rep.found("sequence_gap") == 1
    assert rep["sequence_gap"].examples[0] == (19, ("diff u=120: U-1=111, expected 110 (previous u or "
                                                    "snapshot lastUpdateId)"))
    assert col(res.quarantine, "line") == [21, 22]
    assert rep.found("nonpositive_size") == 0  # marker qty -1 is pu, not a size


def test_trade_ids():
    T = KIND_TRADE
    rows = [
        (1, T, 1, 100, 1, 1, 0, 1),     # 10
        (2, T, 1, 100, 1, 2, 0, 2),     # 11
        (3, T, 1, 100, 1, 5, 0, 3),     # 12 gap: 3, 4 missing (info)
        (4, T, 1, 100, 1, 4, 0, 4),     # 13 stale: 4 < 5
        (5, T, 1, 100, 1, 5, 0, 3),     # 14 replay of 12 (same id, ts_exch, price, qty, side)
        (6, T, 1, 101, 2, 5, 0, 3),     # 15 second print of the same match: kept
        (7, T, 1, 100, 1, 6, 0, 7),     # 16
        (8, T, 1, 100, 1, 0, 0, 8),     # 17 no id (0): not checked
        (9, T, 1, 100, 1, 1, FLAG_AGGREGATED, 9),   # 18 aggTrade stream has its own ids
        (10, T, 1, 100, 1, 2, FLAG_AGGREGATED, 10),  # 19
    ]
    res = clean(table(rows), rules=["sequence"])
    rep = res.report
    assert rep.found("trade_id_gap") == 1
    assert rep["trade_id_gap"].examples == [(12, "trade id 5 follows 2 (2 ids missing)")]
    assert rep["trade_id_gap"].action == "info"
    assert col(res.quarantine, "line") == [13, 14]
    assert col(res.quarantine, "detail") == ["trade id 4 < earlier id 5 (stale)",
                                             "trade id 5 repeats id 5 (replayed trade)"]
    assert col(res.table, "src_line") == [10, 11, 12, 15, 16, 17, 18, 19]


def test_crossed_bbo_pairs_are_quarantined():
    B = KIND_BBO
    rows = [(1, B, 1, 100, 1, 1, 0), (1, B, -1, 101, 1, 1, 0),   # 10,11 fine
            (2, B, 1, 102, 1, 2, 0), (2, B, -1, 101, 1, 2, 0),   # 12,13 crossed
            (3, B, -1, 103, 1, 3, 0), (3, B, 1, 103, 1, 3, 0),   # 14,15 locked (bid == ask), ask first
            (4, B, 1, 104, 1, 4, 0),                             # 16 unpaired (seq differs)
            (4, B, -1, 103, 1, 5, 0)]                            # 17 unpaired
    res = clean(table(rows), rules=["crossed_book"])
    assert col(res.quarantine, "line") == [12, 13, 14, 15]
    assert col(res.quarantine, "rule") == ["crossed_bbo"] * 4
    assert col(res.quarantine, "detail")[:2] == ["bbo bid 102 >= ask 101 (quote lines 12/13)"] * 2
    assert res.report.found("crossed_book") == 0


def test_crossed_l2_book_is_counted_not_quarantined():
    rows = [(1, KIND_CLEAR, 0, 0, 0, 0, SB),
            (1, KIND_SNAPSHOT, 1, 100, 5, 0, FLAG_SNAPSHOT),
            (1, KIND_SNAPSHOT, -1, 101, 5, 0, SE),      # 12 bid 100 / ask 101
            (2, KIND_SET, 1, 102, 1, 0, E),             # 13 bid 102 >= ask 101: crossed
            (3, KIND_SET, -1, 101, 0, 0, 0),            # 14 mid-message (not checked)
            (3, KIND_SET, -1, 103, 2, 0, E),            # 15 bid 102 / ask 103
            (4, KIND_SET, -1, 102, 1, 0, E),            # 16 bid 102 == ask 102: crossed (locked)
            (5, KIND_SET, -1, 102, 0, 0, E)]            # 17 bid 102 / ask 103
    res = clean(table(rows), rules=["crossed_book"])
    rep = res.report["crossed_book"]
    assert (rep.found, rep.quarantined, rep.action) == (2, 0, "count")
    assert rep.examples == [(13, "best bid 102 >= best ask 101 after this message"),
                            (16, "best bid 102 >= best ask 102 after this message")]
    assert res.table.num_rows == len(rows)
    assert res.quarantine.num_rows == 0


def test_price_outlier_hand_worked():
    # window 5, min_periods 3, k 3, floor 3 % of the median
    px = [100, 101, 100, 102, 100, 150, 101, 100]
    rows = [(i, KIND_TRADE, 1, p, 1, 0, 0) for i, p in enumerate(px)]
    rows.insert(5, (4, KIND_SET, 1, 999, 1, 0, E))   # book rows are not judged nor in the window
    res = clean(table(rows), rules=["price_outlier"], outlier_window=5, outlier_k=3.0,
                outlier_min_frac=0.03, outlier_min_periods=3)
    # before 150: window [100, 101, 100, 102, 100] -> median 100, MAD 0, threshold max(0, 3.0) = 3
    assert col(res.quarantine, "line") == [16]
    assert col(res.quarantine, "detail") == [
        "trade price 150 deviates from the rolling median 100 by 50 > threshold 3"]
    assert 999 in col(res.table, "price")


def test_price_outlier_is_causal_and_uses_mad():
    rng = np.random.default_rng(0)
    px = 10_000 + rng.integers(-20, 21, 400)
    px[250] = 10_400                      # 4 %: far outside
    px[300] = 10_030                      # inside the 0.5 % floor (50 ticks)
    kinds = np.where(np.arange(400) % 2 == 0, KIND_TRADE, KIND_BBO)
    rows = [(i, int(k), 1, int(p), 1, 0, 0) for i, (k, p) in enumerate(zip(kinds, px))]
    res = clean(table(rows), rules=["price_outlier"])
    assert col(res.quarantine, "line") == [260]
    # editing rows after 250 does not change the verdict on rows up to 250
    px2 = px.copy()
    px2[251:] = 20_000
    rows2 = [(i, int(k), 1, int(p), 1, 0, 0) for i, (k, p) in enumerate(zip(kinds, px2))]
    lines2 = col(clean(table(rows2), rules=["price_outlier"]).quarantine, "line")
    assert [ln for ln in lines2 if ln <= 260] == [260]


def test_reader_rejects_are_folded_in():
    t = table([(1, KIND_TRADE, 1, 100, 1, 1, 0), (1, KIND_TRADE, 1, 100, 1, 1, 0)])
    rej = rejected_table("f.gz", [3, 7, 9], ["off_grid_price", "malformed_line", "off_grid_price"],
                         ["price", "line", "price"], ["price 100.05 is not a multiple of 0.10", "bad json",
                                                      "price 1.01 is not a multiple of 0.10"],
                         ["a", "b", "c"])
    rr = ReadResult(tables=[t], rejected=rej, source="f.gz")
    res = clean(rr, rules=["duplicates"])
    rep = res.report
    assert list(rep.rules)[:3] == ["off_grid_price", "malformed_line", "duplicates"]
    assert (rep["off_grid_price"].found, rep["off_grid_price"].quarantined) == (2, 2)
    assert rep["off_grid_price"].stage == "read"
    assert rep["malformed_line"].examples == [(7, "bad json")]
    assert rep.rows_quarantined == 4
    assert col(res.quarantine, "rule") == ["off_grid_price", "malformed_line", "off_grid_price", "duplicates"]
    assert col(res.quarantine, "source") == ["f.gz"] * 4
    # the same through the argument, and through merge()
    res2 = clean(t, rules=["duplicates"], rejected=rej, source="f.gz")
    assert res2.report.to_dict() == rep.to_dict()
    rep3 = clean(t, rules=["duplicates"], source="f.gz").report
    rep3b = CleanReport(source="f.gz").merge(rej).merge(rep3)
    assert [r.to_dict() for r in rep3b.rules.values()] == [r.to_dict() for r in rep.rules.values()]


def test_report_text_and_json():
    t = table([(1, KIND_TRADE, 1, 100, 1, 1, 0), (1, KIND_TRADE, 1, 100, 1, 1, 0),
               (2, KIND_TRADE, 1, 100, 0, 2, 0)])
    rep = clean(t).report
    text = rep.to_table()
    lines = text.splitlines()
    assert lines[0].split() == ["rule", "stage", "action", "found", "quarantined", "first", "lines"]
    # every row has the "found" column right-aligned at the same position
    end = lines[0].index("found") + len("found")
    for ln in lines[2:-1]:
        assert ln[end - 1] != " ", ln
    assert "duplicates" in text and lines[-1] == "rows: in 3, kept 1, quarantined 2  (binance-futures:BTCUSDT)"
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["rows_in"] == 3 and d["rows_kept"] == 1 and d["rows_quarantined"] == 2
    names = [r["rule"] for r in d["rules"]]
    assert names == ["duplicates", "out_of_order", "nonpositive_size", "update_id_not_monotone",
                     "sequence_gap", "pre_snapshot", "seq_not_monotone", "trade_id_gap", "crossed_bbo",
                     "crossed_book", "price_outlier"]
    assert d["rules"][0]["examples"] == [{"line": 11, "detail": "exact duplicate of line 10"}]


def test_empty_table_and_options():
    t = table([])
    res = clean(t)
    assert res.table.num_rows == 0 and res.quarantine.num_rows == 0
    assert all(r.found == 0 for r in res.report.rules.values())
    with pytest.raises(GpuflowError, match="unknown rule 'dupes'"):
        clean(t, rules=["dupes"])
    with pytest.raises(GpuflowError, match="outlier_window=0"):
        clean(t, outlier_window=0)
    with pytest.raises(SchemaError, match="missing event column"):
        clean(t.drop(["qty"]))
    assert set(RULES) == {"duplicates", "out_of_order", "nonpositive_size", "sequence", "crossed_book",
                          "price_outlier"}


def test_multi_table_result():
    t = table([(1, KIND_TRADE, 1, 100, 1, 1, 0)])
    res = clean(ReadResult(tables=[t, t], source="x"))
    assert len(res.tables) == 2 and res.report.rows_in == 2
    with pytest.raises(GpuflowError, match="use .tables"):
        res.table  # noqa: B018
    assert isinstance(res, CleanResult)


def test_write_quarantine_atomic(tmp_path):
    t = table([(1, KIND_TRADE, 1, 100, 1, 1, 0), (1, KIND_TRADE, 1, 100, 1, 1, 0)])
    res = clean(t)
    path = tmp_path / "q" / "quarantine.parquet"
    assert write_quarantine(res, path) == path
    back = pq.read_table(path)
    assert back.equals(res.quarantine)
    # overwriting replaces the file whole and leaves no temp files behind
    write_quarantine(clean(table([])).quarantine, path)
    assert pq.read_table(path).num_rows == 0
    assert os.listdir(path.parent) == ["quarantine.parquet"]
    with pytest.raises(SchemaError, match="expected a quarantine table"):
        write_quarantine(t, tmp_path / "bad.parquet")


def test_large_table_runs_vectorised():
    # 200k rows, half duplicates: checks the hash-sort path and that nothing loops per row in Python
    n = 100_000
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(0, 10**9, n))
    cols = {"ts_local": np.concatenate([ts, ts]), "kind": np.full(2 * n, KIND_TRADE),
            "price": np.concatenate([1000 + np.arange(n) % 7] * 2), "qty": np.ones(2 * n),
            "seq": np.zeros(2 * n)}
    t = events_table(cols, INS)
    res = clean(t, rules=["duplicates"])
    assert res.report.found("duplicates") == n
    assert res.table.num_rows == n


@pytest.mark.parametrize("rel", ["usdm/btcusdt_20240808.gz", "spot/btcusdt_20240808.gz",
                                 "spot/btcusdt_20240809.gz"])
def test_real_binance_recordings_have_no_gaps(shared_data, rel):
    # MANIFEST.md: every depth diff chain in these recordings is gap-free and all lines parse
    binance = pytest.importorskip("gpuflow.io.binance")
    if not hasattr(binance, "read_binance"):
        pytest.skip("gpuflow.io.binance.read_binance not written yet")
    rr = binance.read_binance(shared_data / "binance" / rel)
    res = clean(rr)
    rep = res.report
    for rule in ("sequence_gap", "update_id_not_monotone", "seq_not_monotone", "duplicates", "out_of_order",
                 "nonpositive_size", "crossed_bbo"):
        assert rep.found(rule) == 0, (rule, rep.to_table())
    assert sum(t.num_rows for t in res.tables) + res.quarantine.num_rows == rr.n_events + rr.rejected.num_rows
    if rel.startswith("usdm"):
        # the diffs recorded before the REST snapshot (line 55) with u <= lastUpdateId 5123107852948
        assert rep.found("pre_snapshot") == 4
