"""Tests of the tardis.dev CSV reader on the five real fixtures and on hand-made files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.instruments import lookup
from gpuflow.io import read
from gpuflow.io.tardis import detect_data_type, read_tardis
from gpuflow.schema import (
    FLAG_EOM,
    FLAG_SNAPSHOT,
    FLAG_SNAPSHOT_BEGIN,
    FLAG_SNAPSHOT_END,
    FLAG_TS_EXCH_MISSING,
    KIND_BBO,
    KIND_CLEAR,
    KIND_SET,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
    instrument_of,
    validate,
)

SNAP = FLAG_SNAPSHOT
SNAP_BEGIN = FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN
SNAP_LAST = FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM


def _tardis(shared_data: Path, name: str) -> Path:
    return shared_data / "nautilus_fixtures" / "tardis" / name


def test_trades(shared_data: Path) -> None:
    path = _tardis(shared_data, "binance-futures_trades_BTCUSDT.csv")
    res = read_tardis(path)
    (t,) = res.tables
    validate(t, str(path))
    assert res.stats["data_type"] == "trades" and t.num_rows == 9_999 and res.rejected.num_rows == 0
    side = t.column("side").to_numpy()
    assert (side == 1).sum() == 5_267 and (side == -1).sum() == 4_732
    assert set(t.column("kind").to_pylist()) == {KIND_TRADE}
    assert np.all(t.column("flags").to_numpy() == FLAG_EOM)
    # binance-futures,BTCUSDT,1582329602111000,1582329602418379,42377944,buy,9682,0.132
    assert t.slice(0, 1).to_pylist()[0] == {
        "ts_exch": 1_582_329_602_111_000_000, "ts_local": 1_582_329_602_418_379_000, "seq": 42_377_944,
        "kind": KIND_TRADE, "side": 1, "price": 968_200, "qty": 132, "order_id": 0, "flags": FLAG_EOM,
        "src_line": 2}
    # binance-futures,BTCUSDT,1582337147728000,1582337147852384,42387942,sell,9666.84,0.07
    assert t.slice(t.num_rows - 1).to_pylist()[0] == {
        "ts_exch": 1_582_337_147_728_000_000, "ts_local": 1_582_337_147_852_384_000, "seq": 42_387_942,
        "kind": KIND_TRADE, "side": -1, "price": 966_684, "qty": 70, "order_id": 0, "flags": FLAG_EOM,
        "src_line": 10_000}
    # The built-in table has today's 0.10 tick; in 2020 it was 0.01: inferred, with a note.
    inst = instrument_of(t)
    assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size) == ("binance-futures", "BTCUSDT", "0.01",
                                                                        "0.001")
    known = lookup("binance-futures", "BTCUSDT")
    assert known is not None and known.tick_size == "0.10" and known.lot_size == "0.001"
    assert inst.tick_size_inferred and not inst.lot_size_inferred
    assert "not on the built-in tick_size 0.10" in res.stats["instrument_notes"][0]
    # every row against an independent pandas read (floats are fine for an oracle at this precision)
    df = pd.read_csv(path)
    exp_price = np.round(df["price"].to_numpy() * 100).astype(np.int64)
    exp_qty = np.round(df["amount"].to_numpy() * 1000).astype(np.int64)
    assert np.array_equal(t.column("price").to_numpy(), exp_price)
    assert np.array_equal(t.column("qty").to_numpy(), exp_qty)
    assert np.array_equal(t.column("ts_local").to_numpy(), df["local_timestamp"].to_numpy() * 1000)
    assert np.array_equal(t.column("seq").to_numpy(), df["id"].to_numpy())


def test_quotes(shared_data: Path) -> None:
    res = read_tardis(_tardis(shared_data, "binance-futures_quotes_BTCUSDT.csv"))
    (t,) = res.tables
    assert res.stats["data_type"] == "quotes" and t.num_rows == 2 * 9_999
    assert set(t.column("kind").to_pylist()) == {KIND_BBO}
    rows = t.slice(0, 2).to_pylist()
    # binance-futures,BTCUSDT,1582329601096000,1582329603502092,0.84,9682,9681.92,0.67
    common = {"ts_exch": 1_582_329_601_096_000_000, "ts_local": 1_582_329_603_502_092_000, "seq": 0,
              "kind": KIND_BBO, "order_id": 0, "src_line": 2}
    assert rows[0] == dict(common, side=1, price=968_192, qty=670, flags=0)
    assert rows[1] == dict(common, side=-1, price=968_200, qty=840, flags=FLAG_EOM)
    # last: ...,1582329827061000,1582329827181582,0.031,9672.09,9671.19,0.012
    rows = t.slice(t.num_rows - 2).to_pylist()
    common = {"ts_exch": 1_582_329_827_061_000_000, "ts_local": 1_582_329_827_181_582_000, "seq": 9_998,
              "kind": KIND_BBO, "order_id": 0, "src_line": 10_000}
    assert rows == [dict(common, side=1, price=967_119, qty=12, flags=0),
                    dict(common, side=-1, price=967_209, qty=31, flags=FLAG_EOM)]
    px = t.column("price").to_numpy()
    assert np.all(px[1::2] > px[0::2])


@pytest.mark.parametrize("levels, rows", [(5, 10), (25, 10)])
def test_book_snapshots(shared_data: Path, levels: int, rows: int) -> None:
    res = read_tardis(_tardis(shared_data, f"binance-futures_book_snapshot_{levels}_BTCUSDT.csv"))
    (t,) = res.tables
    width = 1 + 2 * levels
    assert res.stats["data_type"] == f"book_snapshot_{levels}" and t.num_rows == rows * width
    kind = t.column("kind").to_numpy().reshape(rows, width)
    side = t.column("side").to_numpy().reshape(rows, width)
    flags = t.column("flags").to_numpy().reshape(rows, width)
    assert np.all(kind[:, 0] == KIND_CLEAR) and np.all(kind[:, 1:] == KIND_SNAPSHOT)
    assert np.all(side[:, 0] == 0) and np.all(side[:, 1:1 + levels] == 1)
    assert np.all(side[:, 1 + levels:] == -1)
    assert np.all(flags[:, 0] == SNAP_BEGIN) and np.all(flags[:, 1:-1] == SNAP)
    assert np.all(flags[:, -1] == SNAP_LAST)
    price = t.column("price").to_numpy().reshape(rows, width)
    qty = t.column("qty").to_numpy().reshape(rows, width)
    # first line: asks[0] 11657.08 x 1.714, bids[0] 11657.07 x 10.896,
    #             asks[1] 11657.54 x 5.4,   bids[1] 11656.97 x 0.2
    assert (price[0, 1], qty[0, 1]) == (1_165_707, 10_896)
    assert (price[0, 2], qty[0, 2]) == (1_165_697, 200)
    assert (price[0, 1 + levels], qty[0, 1 + levels]) == (1_165_708, 1_714)
    assert (price[0, 2 + levels], qty[0, 2 + levels]) == (1_165_754, 5_400)
    assert np.all(np.diff(price[:, 1:1 + levels], axis=1) < 0)
    assert np.all(np.diff(price[:, 1 + levels:], axis=1) > 0)
    ts = t.column("ts_local").to_numpy().reshape(rows, width)
    assert ts[0, 0] == 1_598_918_403_810_979_000
    if levels == 25:
        # last line ends with asks[24] 11659.28 x 0.06 (bids[24] 11653.25 x 1.003 before the asks)
        assert ts[-1, -1] == 1_598_918_404_009_468_000
        assert (price[-1, levels], qty[-1, levels]) == (1_165_325, 1_003)
        assert (price[-1, -1], qty[-1, -1]) == (1_165_928, 60)
    assert t.column("seq").to_numpy().reshape(rows, width)[:, 0].tolist() == list(range(rows))


def test_incremental_l2_deribit(shared_data: Path) -> None:
    res = read_tardis(_tardis(shared_data, "deribit_incremental_book_L2_BTC-PERPETUAL.csv"))
    (t,) = res.tables
    assert res.stats["data_type"] == "incremental_book_L2" and t.num_rows == 16
    rows = t.to_pylist()
    ts = {"ts_exch": 1_585_699_200_245_000_000, "ts_local": 1_585_699_200_355_684_000}
    assert rows[0] == dict(ts, seq=0, kind=KIND_CLEAR, side=0, price=0, qty=0, order_id=0, flags=SNAP_BEGIN,
                           src_line=2)
    # deribit,BTC-PERPETUAL,1585699200245000,1585699200355684,true,ask,6421.5,18640
    assert rows[1] == dict(ts, seq=0, kind=KIND_SNAPSHOT, side=-1, price=64_215, qty=18_640, order_id=0,
                           flags=SNAP, src_line=2)
    # last: ...,true,ask,6428.5,39950
    assert rows[-1] == dict(ts, seq=14, kind=KIND_SNAPSHOT, side=-1, price=64_285, qty=39_950, order_id=0,
                            flags=SNAP_LAST, src_line=16)
    assert all(r["flags"] == SNAP for r in rows[2:-1])
    inst = instrument_of(t)
    assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size) == \
        ("deribit", "BTC-PERPETUAL", "0.1", "1")
    assert inst.tick_size_inferred and inst.lot_size_inferred
    assert res.stats["instrument_notes"] == []


HEADER_L2 = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
HEADER_TRADES = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_l2_snapshot_runs_and_messages(tmp_path: Path) -> None:
    text = HEADER_L2 + (
        "x,AB,100,110,true,bid,10.5,1\n"     # line 2  snapshot 1 (one message)
        "x,AB,100,110,true,ask,11,2\n"       # line 3
        "x,AB,200,210,false,bid,10.5,0\n"    # line 4  message of two updates
        "x,AB,200,210,false,ask,11.5,3\n"    # line 5
        "x,AB,300,310,false,ask,11,0\n"      # line 6  one update
        "x,AB,400,410,true,bid,10,4\n"       # line 7  snapshot 2 (new run after updates)
        "x,AB,400,410,true,ask,12,5\n")      # line 8
    t = read_tardis(_write(tmp_path, "l2.csv", text)).tables[0]
    got = [(r["kind"], r["side"], r["price"], r["qty"], r["flags"], r["seq"], r["src_line"])
           for r in t.to_pylist()]
    assert got == [
        (KIND_CLEAR, 0, 0, 0, SNAP_BEGIN, 0, 2),
        (KIND_SNAPSHOT, 1, 105, 1, SNAP, 0, 2),
        (KIND_SNAPSHOT, -1, 110, 2, SNAP_LAST, 1, 3),
        (KIND_SET, 1, 105, 0, 0, 2, 4),
        (KIND_SET, -1, 115, 3, FLAG_EOM, 3, 5),
        (KIND_SET, -1, 110, 0, FLAG_EOM, 4, 6),
        (KIND_CLEAR, 0, 0, 0, SNAP_BEGIN, 5, 7),
        (KIND_SNAPSHOT, 1, 100, 4, SNAP, 5, 7),
        (KIND_SNAPSHOT, -1, 120, 5, SNAP_LAST, 6, 8),
    ]
    assert t.column("ts_exch").to_pylist()[:3] == [100_000] * 3


def test_streams_sorting_and_missing_exchange_time(tmp_path: Path) -> None:
    text = HEADER_TRADES + (
        "x,AB,100,120,7,buy,10.5,1\n"
        "x,CD,100,105,abc,unknown,3,2\n"
        "x,AB,,115,8,sell,10.25,0.5\n"      # no exchange time; earlier local time than line 2
        "x,CD,101,106,def,sell,3.5,1\n")
    res = read_tardis(_write(tmp_path, "t.csv", text))
    ab, cd = res.tables
    assert [s["symbol"] for s in res.stats["streams"]] == ["AB", "CD"]
    assert instrument_of(ab).tick_size == "0.01" and instrument_of(ab).lot_size == "0.1"
    rows = ab.to_pylist()
    assert [r["src_line"] for r in rows] == [4, 2]
    assert rows[0]["ts_exch"] == rows[0]["ts_local"] == 115_000
    assert rows[0]["flags"] == FLAG_EOM | FLAG_TS_EXCH_MISSING
    assert [r["seq"] for r in rows] == [8, 7]
    # non-numeric ids: seq is the data-row index
    assert cd.column("seq").to_pylist() == [1, 3]
    assert cd.column("side").to_pylist() == [0, -1]
    assert instrument_of(cd).tick_size == "0.1"
    with pytest.raises(SchemaError, match="holds 2 instruments but one Instrument was given"):
        read_tardis(_write(tmp_path, "t.csv", text), instrument=Instrument("x", "AB", "0.01", "0.1"))
    res = read_tardis(_write(tmp_path, "t.csv", text),
                      instrument={"AB": Instrument("x", "AB", "0.05", "0.5")})
    assert instrument_of(res.tables[0]).tick_size == "0.05"
    assert res.tables[0].column("price").to_pylist() == [205, 210]


def test_quotes_empty_side(tmp_path: Path) -> None:
    text = ("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
            "x,AB,1,2,,,10.5,3\n"
            "x,AB,3,4,1,,10.5,3\n")
    res = read_tardis(_write(tmp_path, "q.csv", text), errors="quarantine")
    rows = res.tables[0].to_pylist()
    assert [(r["side"], r["price"], r["qty"]) for r in rows] == [(1, 105, 3), (-1, 0, 0)]
    assert [(r["line"], r["rule"], r["field"]) for r in res.rejected.to_pylist()] == [(3, "missing_value",
                                                                                       "ask_price")]


def test_off_grid_price_raise_and_quarantine(tmp_path: Path) -> None:
    text = HEADER_TRADES + ("binance-futures,BTCUSDT,100,110,1,buy,9682.1,0.001\n"
                            "binance-futures,BTCUSDT,101,111,2,buy,9682.05,0.002\n"
                            "binance-futures,BTCUSDT,102,112,3,sell,9682.2,0.0005\n")
    p = _write(tmp_path, "trades.csv", text)
    inst = Instrument("binance-futures", "BTCUSDT", "0.1", "0.001", source="tardis")
    with pytest.raises(SchemaError, match=(r"trades\.csv: line 3: field 'price' \(column 7\): "
                                           r"expected a whole "
                                           r"number of ticks \(tick_size=0\.1\), found '9682\.05' "
                                           r"\(1 more bad rows follow\)")):
        read_tardis(p, instrument=inst)
    res = read_tardis(p, instrument=inst, errors="quarantine")
    assert res.tables[0].column("price").to_pylist() == [96821]
    assert [(r["line"], r["rule"], r["field"], r["raw"]) for r in res.rejected.to_pylist()] == [
        (3, "off_grid_price", "price", "binance-futures,BTCUSDT,101,111,2,buy,9682.05,0.002"),
        (4, "off_grid_size", "amount", "binance-futures,BTCUSDT,102,112,3,sell,9682.2,0.0005")]
    res = read_tardis(p, tick_size="0.05", lot_size="0.0001")
    assert res.tables[0].column("price").to_pylist() == [193642, 193641, 193644]
    assert not instrument_of(res.tables[0]).tick_size_inferred


def test_garbage_rows(tmp_path: Path) -> None:
    text = HEADER_TRADES + ("x,AB,100,110,1,buy,10,1\n"
                            "x,AB,1e,110,2,buy,10,1\n"
                            "x,AB,100,110,3,up,10,1\n"
                            "x,AB,100,110,4,buy,10\n"
                            ",AB,100,110,5,buy,10,1\n"
                            "x,AB,100,110,6,buy,10,-1\n")
    p = _write(tmp_path, "g.csv", text)
    with pytest.raises(ParseError,
                       match=r"g\.csv: line 3: field 'timestamp' \(column 3\): expected microseconds"):
        read_tardis(p)
    res = read_tardis(p, errors="quarantine")
    got = [(r["line"], r["rule"], r["field"]) for r in res.rejected.to_pylist()]
    assert got == [(3, "bad_number", "timestamp"), (4, "bad_value", "side"), (5, "field_count", "line"),
                   (6, "missing_value", "exchange"), (7, "bad_value", "amount")]
    assert res.tables[0].num_rows == 1


def test_missing_column(shared_data: Path, tmp_path: Path) -> None:
    lines = _tardis(shared_data, "binance-futures_trades_BTCUSDT.csv").read_text().splitlines()[:5]
    text = "\n".join(",".join(x.split(",")[:-1]) for x in lines) + "\n"
    with pytest.raises(ParseError, match=(r"line 1 \(header\): missing column\(s\) \['amount'\] "
                                          r"for tardis trades; "
                                          r"expected columns .* found \['exchange', 'symbol', 'timestamp', "
                                          r"'local_timestamp', 'id', 'side', 'price'\]")):
        read_tardis(_write(tmp_path, "trades.csv", text))
    with pytest.raises(ParseError,
                       match=r"missing column\(s\) \['id', 'side', 'price', 'amount'\] for tardis trades"):
        read_tardis(_tardis(shared_data, "binance-futures_quotes_BTCUSDT.csv"), data_type="trades")


def test_wrong_format(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(FormatError,
                       match="expected a tardis.dev CSV whose header starts .* found a line of numbers"):
        read_tardis(shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz")
    with pytest.raises(FormatError, match="expected a tardis.dev CSV .* found a JSON line"):
        read_tardis(shared_data / "binance" / "spot" / "btcusdt_20240808.gz")
    p = _write(tmp_path, "ticker.csv",
               "exchange,symbol,timestamp,local_timestamp,funding_rate,open_interest\n")
    with pytest.raises(FormatError, match="cannot tell the tardis data type from the header"):
        read_tardis(p)
    with pytest.raises(FormatError, match="data_type='options_chain': expected one of"):
        read_tardis(p, data_type="options_chain")
    assert detect_data_type(["exchange", "symbol"], "deribit_incremental_book_L2_2020-04-01.csv.gz") == \
        "incremental_book_L2"


def test_gzip_and_truncation(shared_data: Path, tmp_path: Path) -> None:
    raw = _tardis(shared_data, "binance-futures_quotes_BTCUSDT.csv").read_bytes()
    p = tmp_path / "binance-futures_quotes_2020-02-22_BTCUSDT.csv.gz"
    data = gzip.compress(raw)
    p.write_bytes(data)
    res = read("tardis", p)
    assert res.n_events == 2 * 9_999 and res.stats["compression"] == "gzip"
    p.write_bytes(data[:-100])
    with pytest.raises(ParseError,
                       match=r"truncated gzip file: the compressed stream ends after [\d,]+ bytes"):
        read_tardis(p)


def test_symbol_with_slash(tmp_path: Path) -> None:
    res = read_tardis(_write(tmp_path, "k.csv", HEADER_TRADES + "kraken,XBT/USD,1,2,5,buy,100.5,0.25\n"))
    assert instrument_of(res.tables[0]).symbol == "XBT-USD"
    assert "named kraken XBT-USD" in res.stats["instrument_notes"][0]
