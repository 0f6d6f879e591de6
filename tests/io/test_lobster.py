"""Tests of the LOBSTER reader on the real sample files and on hand-made bad files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpuflow.errors import FormatError, GpuflowError, ParseError, SchemaError
from gpuflow.io import read
from gpuflow.io.lobster import (
    ASK_DUMMY_PRICE,
    BID_DUMMY_PRICE,
    find_orderbook,
    parse_lobster_name,
    read_lobster,
    read_lobster_orderbook,
)
from gpuflow.schema import (
    EMPTY_ASK_PRICE,
    EMPTY_BID_PRICE,
    FLAG_AUCTION,
    FLAG_EOM,
    FLAG_HIDDEN,
    KIND_ADD,
    KIND_CANCEL,
    KIND_DELETE,
    KIND_EXECUTE,
    KIND_STATUS,
    KIND_TRADE,
    instrument_of,
    validate,
)

# 2012-06-21 is day 15512 after 1970-01-01; New York is on EDT (UTC-4), so local
# midnight is 15512 * 86400 + 4 * 3600 = 1340251200 s after the epoch.
MIDNIGHT_NS = 1_340_251_200 * 10**9

# name -> (rows, count per type, first time text, last time text) from MANIFEST.md
FILES = {
    "AAPL_2012-06-21_34200000_57600000_message_1.csv.gz":
        (118_497, {1: 54_818, 2: 252, 3: 28_437, 4: 23_658, 5: 11_332}, 34200_004241176, 57599_913117637),
    "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz":
        (49_482, {1: 24_368, 2: 7, 3: 13_429, 4: 7_765, 5: 3_913}, 34200_015105074, 57599_320718269),
    "GOOG_2012-06-21_34200000_57600000_message_5.csv.gz":
        (112_673, {1: 54_907, 2: 16, 3: 46_072, 4: 7_765, 5: 3_913}, 34200_015105074, 57599_871751084),
    "GOOG_2012-06-21_34200000_57600000_message_10.csv.gz":
        (147_916, {1: 71_258, 2: 19, 3: 64_961, 4: 7_765, 5: 3_913}, 34200_015105074, 57599_871751084),
}
KIND_OF_TYPE = {1: KIND_ADD, 2: KIND_CANCEL, 3: KIND_DELETE, 4: KIND_EXECUTE, 5: KIND_TRADE}


def _raw_frame(path: Path) -> pd.DataFrame:
    """The message file read independently (pandas, times kept as text)."""
    df = pd.read_csv(path, header=None, names=["time", "type", "oid", "size", "price", "dir"],
                     dtype={"time": str})
    whole, frac = df["time"].str.split(".", n=1, expand=True).fillna("0").values.T
    frac = pd.Series(frac).str.ljust(9, "0")
    df["t_ns"] = pd.Series(whole).astype(np.int64) * 10**9 + frac.astype(np.int64)
    return df


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_files_counts_and_timestamps(shared_data: Path, name: str) -> None:
    rows, types, first_ns, last_ns = FILES[name]
    res = read_lobster(shared_data / "lobster" / name)
    (t,) = res.tables
    validate(t, name)
    assert t.num_rows == rows
    assert res.rejected.num_rows == 0
    assert res.stats["types"] == types
    kind = t.column("kind").to_numpy()
    flags = t.column("flags").to_numpy()
    for typ, count in types.items():
        if typ == 5:
            assert ((kind == KIND_TRADE) & (flags & FLAG_HIDDEN != 0)).sum() == count
        else:
            assert (kind == KIND_OF_TYPE[typ]).sum() == count
    assert np.all(flags & FLAG_EOM)
    ts = t.column("ts_local").to_numpy()
    assert ts[0] == MIDNIGHT_NS + first_ns
    assert ts[-1] == MIDNIGHT_NS + last_ns
    assert np.array_equal(ts, t.column("ts_exch").to_numpy())
    assert np.all(np.diff(ts) >= 0)
    assert np.array_equal(t.column("seq").to_numpy(), np.arange(rows))
    assert np.array_equal(t.column("src_line").to_numpy(), np.arange(1, rows + 1))
    inst = instrument_of(t)
    assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size, inst.source) == \
        ("nasdaq", name[:4], "0.0001", "1", "lobster")


def test_aapl_every_row_against_pandas(shared_data: Path) -> None:
    path = shared_data / "lobster" / "AAPL_2012-06-21_34200000_57600000_message_1.csv.gz"
    t = read_lobster(path).tables[0]
    df = _raw_frame(path)
    assert np.array_equal(t.column("ts_local").to_numpy(), MIDNIGHT_NS + df["t_ns"].to_numpy())
    typ = df["type"].to_numpy()
    direction = df["dir"].to_numpy()
    exp_side = np.where(typ == 5, -direction, direction)
    assert np.array_equal(t.column("side").to_numpy(), exp_side)
    assert np.array_equal(t.column("price").to_numpy(), df["price"].to_numpy())
    assert np.array_equal(t.column("qty").to_numpy(), df["size"].to_numpy())
    assert np.array_equal(t.column("order_id").to_numpy(), df["oid"].to_numpy().astype(np.uint64))
    # The last row is a hidden execution at a half-cent price: exact with tick 0.0001.
    last = t.slice(t.num_rows - 1).to_pylist()[0]
    assert last == {"ts_exch": MIDNIGHT_NS + 57599_913117637, "ts_local": MIDNIGHT_NS + 57599_913117637,
                    "seq": 118_496, "kind": KIND_TRADE, "side": 1, "price": 5776350, "qty": 52,
                    "order_id": 0, "flags": FLAG_HIDDEN | FLAG_EOM, "src_line": 118_497}


def test_goog_first_rows_by_hand(shared_data: Path) -> None:
    t = read_lobster(shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz").tables[0]
    rows = t.slice(0, 3).to_pylist()
    # 34200.015105074,4,15818974,4,5794000,1
    assert rows[0] == {"ts_exch": 1_340_285_400_015_105_074, "ts_local": 1_340_285_400_015_105_074, "seq": 0,
                       "kind": KIND_EXECUTE, "side": 1, "price": 5794000, "qty": 4, "order_id": 15818974,
                       "flags": FLAG_EOM, "src_line": 1}
    # 34200.05990197 has 8 decimals: 059901970 ns.
    assert rows[1]["ts_local"] == 1_340_285_400_059_901_970
    # 34200.113246707,5,0,1,5795100,1: hidden execution of a buy order -> sell aggressor.
    assert rows[2] == {"ts_exch": 1_340_285_400_113_246_707, "ts_local": 1_340_285_400_113_246_707, "seq": 2,
                       "kind": KIND_TRADE, "side": -1, "price": 5795100, "qty": 1, "order_id": 0,
                       "flags": FLAG_HIDDEN | FLAG_EOM, "src_line": 3}


def test_executions_identical_for_every_level(shared_data: Path) -> None:
    execs = []
    for n in (1, 5, 10):
        path = shared_data / "lobster" / f"GOOG_2012-06-21_34200000_57600000_message_{n}.csv.gz"
        t = read_lobster(path).tables[0]
        k = t.column("kind").to_numpy()
        sel = (k == KIND_EXECUTE) | (k == KIND_TRADE)
        execs.append(np.stack([t.column(c).to_numpy()[sel].astype(np.int64)
                               for c in ("ts_local", "side", "price", "qty")]))
    assert np.array_equal(execs[0], execs[1]) and np.array_equal(execs[0], execs[2])


@pytest.mark.parametrize("levels", [1, 5, 10])
def test_orderbook_files(shared_data: Path, levels: int) -> None:
    msg = shared_data / "lobster" / f"GOOG_2012-06-21_34200000_57600000_message_{levels}.csv.gz"
    ob_path = find_orderbook(msg)
    assert ob_path.name == f"GOOG_2012-06-21_34200000_57600000_orderbook_{levels}.csv.gz"
    ob = read_lobster_orderbook(ob_path)
    rows = read_lobster(msg).tables[0].num_rows
    assert ob.levels == levels
    for a in ob.as_dict().values():
        assert a.shape == (rows, levels) and a.dtype == np.int64
    # 5802300,100,5794000,496,5804300,100,5787000,400,...
    assert ob.ask_price[0, 0] == 5802300 and ob.ask_size[0, 0] == 100
    assert ob.bid_price[0, 0] == 5794000 and ob.bid_size[0, 0] == 496
    if levels >= 5:
        assert ob.ask_price[0, 1] == 5804300 and ob.bid_price[0, 1] == 5787000
    if levels == 10:
        # last row: ... ,5657500,100,5649100,100
        assert ob.ask_price[-1, 9] == 5657500 and ob.bid_price[-1, 9] == 5649100
    assert np.all(ob.ask_price[:, 0] > ob.bid_price[:, 0])


def test_orderbook_dummies_and_tick(tmp_path: Path) -> None:
    p = tmp_path / "XYZ_2012-06-21_34200000_57600000_orderbook_2.csv"
    p.write_text("5859400,200,5853300,18,9999999999,0,-9999999999,0\n")
    ob = read_lobster_orderbook(p)
    assert ob.ask_price.tolist() == [[5859400, ASK_DUMMY_PRICE]]
    assert ob.bid_price.tolist() == [[5853300, BID_DUMMY_PRICE]]
    assert ob.ask_size.tolist() == [[200, 0]]
    ob = read_lobster_orderbook(p, tick_size="0.01")
    assert ob.ask_price.tolist() == [[58594, ASK_DUMMY_PRICE]]
    ob = read_lobster_orderbook(p, empty_prices="schema")
    assert ob.ask_price.tolist() == [[5859400, EMPTY_ASK_PRICE]]
    assert ob.bid_price.tolist() == [[5853300, EMPTY_BID_PRICE]]
    p.write_text("5859450,200,5853300,18,9999999999,0,-9999999999,0\n")
    with pytest.raises(SchemaError, match=r"line 1: field 'ask_price' level 1 \(column 1\).*tick_size=0.01"):
        read_lobster_orderbook(p, tick_size="0.01")
    with pytest.raises(FormatError, match="expected a LOBSTER orderbook file with 3 level"):
        read_lobster_orderbook(p, levels=3)


def _write(tmp_path: Path, text: str, name: str = "TEST_2012-06-21_34200000_57600000_message_1.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = ("34200.004241176,1,16113575,18,5853300,1\n"
        "34200.025551909,1,16120456,18,5859100,-1\n")


def test_off_grid_price_raise_and_quarantine(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD + "34200.201743336,3,16120456,18,5853300.5,-1\n")
    with pytest.raises(SchemaError, match=(r"TEST_.*message_1\.csv: line 3: field 'price' \(column 5\): "
                                           r"expected a whole number of ticks \(tick_size=0.0001.*"
                                           r"found '5853300.5'")):
        read_lobster(p)
    res = read_lobster(p, errors="quarantine")
    assert res.tables[0].num_rows == 2
    rej = res.rejected.to_pylist()
    assert [(r["line"], r["rule"], r["field"]) for r in rej] == [(3, "off_grid_price", "price")]
    assert rej[0]["raw"] == "34200.201743336,3,16120456,18,5853300.5,-1"


def test_tick_size_override(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD + "34200.3,1,1,5,5853350,1\n")
    with pytest.raises(SchemaError, match=r"line 3: field 'price'.*tick_size=0.01.*found '5853350'"):
        read_lobster(p, tick_size="0.01")
    res = read_lobster(p, tick_size="0.01", errors="quarantine")
    assert res.tables[0].column("price").to_pylist() == [58533, 58591]
    assert instrument_of(res.tables[0]).tick_size == "0.01"
    assert res.rejected.column("rule").to_pylist() == ["off_grid_price"]


def test_garbage_rows(tmp_path: Path) -> None:
    text = (GOOD
            + "abc,1,1,1,5853300,1\n"          # line 3: time not a number
            + "34200.5,9,1,1,5853300,1\n"      # line 4: type out of range
            + "34200.6,1,1,1,5853300,0\n"      # line 5: direction 0
            + "34200.7,1,1,1,5853300\n"        # line 6: 5 fields
            + "34200.8,1,1,-5,5853300,1\n"     # line 7: negative size
            + "34200.9,1,1,1,,1\n"             # line 8: empty price
            + "34200.0000000001,1,1,1,5853300,1\n"  # line 9: below 1 ns
            + "34201,2,16113575,8,5853300,1\n")     # line 10: fine
    p = _write(tmp_path, text)
    with pytest.raises(ParseError, match=r"line 3: field 'time' \(column 1\): "
                                         r"expected seconds after midnight.*"
                                         r"found 'abc' \(6 more bad rows follow\)"):
        read_lobster(p)
    res = read_lobster(p, errors="quarantine")
    got = [(r["line"], r["rule"], r["field"]) for r in res.rejected.to_pylist()]
    assert got == [(3, "bad_number", "time"), (4, "bad_value", "type"), (5, "bad_value", "direction"),
                   (6, "field_count", "line"), (7, "bad_value", "size"), (8, "missing_value", "price"),
                   (9, "bad_timestamp", "time")]
    t = res.tables[0]
    assert t.column("src_line").to_pylist() == [1, 2, 10]
    assert t.column("seq").to_pylist() == [0, 1, 9]
    assert t.column("kind").to_pylist() == [KIND_ADD, KIND_ADD, KIND_CANCEL]
    assert res.stats["rejected"] == 7


def test_halts_cross_trades_blank_lines_and_sorting(tmp_path: Path) -> None:
    text = ("36023,7,0,0,-1,-1\n"
            "\n"
            "36323,7,0,0,0,-1\n"
            "36000.5,6,77,300,5853300,-1\n"
            "36723,7,0,0,1,-1\n")
    res = read_lobster(_write(tmp_path, text))
    t = res.tables[0].to_pylist()
    assert res.stats["blank_lines"] == 1
    # stably sorted by time: the cross trade (line 4) comes first
    assert [r["src_line"] for r in t] == [4, 1, 3, 5]
    assert [r["seq"] for r in t] == [2, 0, 1, 3]
    assert t[0]["kind"] == KIND_TRADE and t[0]["flags"] == FLAG_AUCTION | FLAG_EOM and t[0]["side"] == 0
    assert t[0]["price"] == 5853300 and t[0]["qty"] == 300
    assert [(r["kind"], r["qty"], r["price"]) for r in t[1:]] == [(KIND_STATUS, -1, 0), (KIND_STATUS, 0, 0),
                                                                  (KIND_STATUS, 1, 0)]
    assert t[1]["ts_local"] == MIDNIGHT_NS + 36023 * 10**9
    p = _write(tmp_path, "36023,7,0,0,5,-1\n", "BAD_2012-06-21_0_1_message_1.csv")
    with pytest.raises(SchemaError, match=r"line 1: field 'price'.*-1 \(halt\), 0 \(quoting\) or 1"):
        read_lobster(p)


def test_standard_time_and_name_options(tmp_path: Path) -> None:
    # 2012-01-03 is EST (UTC-5): day 15342 -> midnight 15342 * 86400 + 5 * 3600 s.
    p = _write(tmp_path, "34200.5,1,1,10,100,1\n", "XYZ_2012-01-03_34200000_57600000_message_1.csv.gz")
    p.write_bytes(gzip.compress(b"34200.5,1,1,10,100,1\n"))
    t = read_lobster(p, venue="nyse").tables[0]
    assert t.column("ts_local").to_pylist() == [(15342 * 86400 + 5 * 3600 + 34200) * 10**9 + 500_000_000]
    assert instrument_of(t).venue == "nyse" and instrument_of(t).symbol == "XYZ"
    q = _write(tmp_path, "34200.5,1,1,10,100,1\n", "messages.csv")
    with pytest.raises(ParseError, match="cannot tell the trading day.*pass date="):
        read_lobster(q)
    t = read_lobster(q, date="2012-06-21", symbol="ABC").tables[0]
    assert t.column("ts_local").to_pylist() == [MIDNIGHT_NS + 34200_500000000]
    assert read("lobster", q, date="2012-06-21", symbol="ABC").n_events == 1
    assert parse_lobster_name(p).levels == 1


def test_wrong_formats(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="expected a LOBSTER message file, found an orderbook file"):
        read_lobster(shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_orderbook_5.csv.gz")
    # the same content under a message name: recognised from the columns
    ob = (shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_orderbook_5.csv.gz").read_bytes()
    p = tmp_path / "GOOG_2012-06-21_34200000_57600000_message_5.csv.gz"
    p.write_bytes(ob)
    with pytest.raises(FormatError, match=r"found 20 numeric fields: "
                                          r"this looks like a LOBSTER orderbook file "
                                          r"with 5 level\(s\)"):
        read_lobster(p)
    rec = (shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").read_bytes()
    p.write_bytes(rec)
    with pytest.raises(FormatError, match="expected a LOBSTER message file .* found a JSON line"):
        read_lobster(p)
    tardis = (shared_data / "nautilus_fixtures" / "tardis"
              / "binance-futures_trades_BTCUSDT.csv").read_bytes()
    p.write_bytes(tardis)
    with pytest.raises(FormatError, match=r"found 8 field\(s\) on the first line: 'exchange,symbol"):
        read_lobster(p)
    with pytest.raises(FormatError, match="expected a LOBSTER orderbook file, found a message file"):
        read_lobster_orderbook(shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_5.csv.gz")


def test_truncated_gzip(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "lobster" / "AAPL_2012-06-21_34200000_57600000_message_1.csv.gz").read_bytes()
    p = tmp_path / "AAPL_2012-06-21_34200000_57600000_message_1.csv.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=(r"AAPL_.*: truncated gzip file: the compressed stream ends after "
                                          r"622,766 bytes.*decompressed [\d,]+ bytes "
                                          r"\([\d,]+ complete lines\)")):
        read_lobster(p)


def test_find_orderbook_missing(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)
    with pytest.raises(FileNotFoundError, match="no orderbook file beside it"):
        find_orderbook(p)
    (tmp_path / "TEST_2012-06-21_34200000_57600000_orderbook_1.csv").write_text("1,1,1,1\n")
    assert find_orderbook(p).name == "TEST_2012-06-21_34200000_57600000_orderbook_1.csv"


def test_progress_and_errors_argument(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)
    calls: list[tuple[int, int]] = []
    read_lobster(p, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 2)]
    with pytest.raises(GpuflowError, match="errors='ignore': expected 'raise' or 'quarantine'"):
        read_lobster(p, errors="ignore")
    with pytest.raises(ParseError, match="date='21/06/2012': expected 'YYYY-MM-DD'"):
        read_lobster(p, date="21/06/2012")
