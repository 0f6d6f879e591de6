"""Tests of the Binance recording reader (gpuflow.io.binance).

Real files: the shared recordings (counts checked against MANIFEST.md, a few rows
against the raw line text by hand, independent orjson counts).  Bad input: small
hand-made files under ``tmp_path``.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest

from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.io import read
from gpuflow.io.binance import read_binance
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
    instrument_of,
    validate,
)

COLS = ("ts_exch", "ts_local", "seq", "kind", "side", "price", "qty", "flags", "src_line")

# Counts from shared/data/MANIFEST.md.
MANIFEST = {
    "usdm/btcusdt_20240808.gz": {"lines": 93_954, "depthUpdate": 6_551, "bookTicker": 66_089, "trade": 21_313,
                                 "snapshot": 1, "first_ts": 1723161255030314667, "last_ms": 1723161599833},
    "spot/btcusdt_20240808.gz": {"lines": 41_249, "depthUpdate": 3_451, "bookTicker": 28_040, "trade": 9_757,
                                 "snapshot": 1, "first_ts": 1723161253937085768, "last_ms": 1723161599999},
    "spot/btcusdt_20240809.gz": {"lines": 58_325, "depthUpdate": 3_044, "bookTicker": 45_134, "trade": 10_147,
                                 "snapshot": 0, "first_ts": 1723161600001658384, "last_ms": 1723161904535},
}


def _cols(table) -> dict[str, np.ndarray]:
    return {c: table.column(c).to_numpy() for c in COLS}


def _row(cols: dict[str, np.ndarray], k: int) -> tuple[int, ...]:
    return tuple(int(cols[c][k]) for c in COLS)


def _rows_of_line(cols: dict[str, np.ndarray], line: int) -> list[tuple[int, ...]]:
    idx = np.flatnonzero(cols["src_line"] == line)
    return [_row(cols, k) for k in idx]


def _raw_messages(path: Path) -> list[tuple[int, dict]]:
    out = []
    with gzip.open(path) as f:
        for line in f:
            sp = line.index(b" ")
            out.append((int(line[:sp]), orjson.loads(line[sp + 1:])))
    return out


@pytest.fixture(scope="module")
def usdm(shared_data):
    path = shared_data / "binance" / "usdm" / "btcusdt_20240808.gz"
    return path, read_binance(path)


@pytest.fixture(scope="module")
def spot(shared_data):
    paths = [shared_data / "binance" / "spot" / f"btcusdt_2024080{d}.gz" for d in (8, 9)]
    return [(p, read_binance(p)) for p in paths]


def _write(tmp_path: Path, lines: list[str], name: str = "btcusdt_test.gz", gz: bool = True) -> Path:
    path = tmp_path / name
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ---- real recordings ---------------------------------------------------------------------------
@pytest.mark.parametrize("rel", sorted(MANIFEST))
def test_counts_match_manifest(shared_data, rel):
    res = read_binance(shared_data / "binance" / rel)
    exp = MANIFEST[rel]
    st = res.stats
    assert (st["lines"], st["depthUpdate"], st["bookTicker"], st["trade"], st["snapshot"]) == (
        exp["lines"], exp["depthUpdate"], exp["bookTicker"], exp["trade"], exp["snapshot"])
    assert st["aggTrade"] == 0 and st["unknown"] == 0 and st["rejected_lines"] == 0
    assert res.rejected.num_rows == 0
    assert len(res.tables) == 1
    t = validate(res.tables[0], source=rel)
    assert t.num_rows == st["rows"] == st["rows_per_symbol"]["BTCUSDT"]
    c = _cols(t)
    assert int(c["ts_local"][0]) == exp["first_ts"]
    assert int(c["ts_local"].max()) // 1_000_000 == exp["last_ms"]
    # sorted by ts_local, ties keep file order
    assert np.all(np.diff(c["ts_local"]) >= 0)
    assert np.all(np.diff(c["src_line"]) >= 0)
    # exactly one end-of-message row per message
    n_msgs = exp["depthUpdate"] + exp["bookTicker"] + exp["trade"] + exp["snapshot"]
    assert int(((c["flags"] & FLAG_EOM) != 0).sum()) == n_msgs
    assert int((c["kind"] == KIND_DIFF).sum()) == exp["depthUpdate"]
    assert int((c["kind"] == KIND_BBO).sum()) == 2 * exp["bookTicker"]
    assert int((c["kind"] == KIND_TRADE).sum()) == exp["trade"]


def test_usdm_instrument_and_snapshot(usdm):
    _, res = usdm
    t = res.tables[0]
    inst = instrument_of(t)
    assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size, inst.source) == (
        "binance-futures", "BTCUSDT", "0.10", "0.001", "binance")
    assert not inst.tick_size_inferred and not inst.lot_size_inferred
    c = _cols(t)
    clear = np.flatnonzero(c["kind"] == KIND_CLEAR)
    snap = np.flatnonzero(c["kind"] == KIND_SNAPSHOT)
    assert len(clear) == 1 and len(snap) == 2000
    assert int((c["side"][snap] == 1).sum()) == 1000 and int((c["side"][snap] == -1).sum()) == 1000
    assert set(c["seq"][np.r_[clear, snap]].tolist()) == {5123107852948}
    assert set(c["src_line"][np.r_[clear, snap]].tolist()) == {55}
    # line 55: {"lastUpdateId":5123107852948,"E":1723161256501,"T":1723161256493,
    #           "bids":[["61800.20","2.909"],...],"asks":[...,["61976.20","0.002"]]}
    rows = _rows_of_line(c, 55)
    assert rows[0] == (1723161256501000000, 1723161255319702566, 5123107852948, KIND_CLEAR, 0, 0, 0,
                       FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN, 55)
    assert rows[1] == (1723161256501000000, 1723161255319702566, 5123107852948, KIND_SNAPSHOT, 1, 618002, 2909,
                       FLAG_SNAPSHOT, 55)
    assert rows[-1] == (1723161256501000000, 1723161255319702566, 5123107852948, KIND_SNAPSHOT, -1, 619762, 2,
                        FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM, 55)
    # bids first, then asks, in the order of the file
    assert [r[4] for r in rows[1:]] == [1] * 1000 + [-1] * 1000


def test_usdm_rows_by_hand(usdm):
    _, res = usdm
    c = _cols(res.tables[0])
    # line 1: {"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5123107832006,
    #          "u":5123107837557,"pu":5123107831937,"b":[["58710.20","0.014"],["61496.50","0.010"],
    #          ["61510.90","0.000"],...
    rows = _rows_of_line(c, 1)
    ts, tl, u = 1723161256299000000, 1723161255030314667, 5123107837557
    assert rows[0] == (ts, tl, u, KIND_DIFF, 0, 5123107832006, 5123107831937, 0, 1)
    assert rows[1] == (ts, tl, u, KIND_SET, 1, 587102, 14, 0, 1)
    assert rows[2] == (ts, tl, u, KIND_SET, 1, 614965, 10, 0, 1)
    assert rows[3] == (ts, tl, u, KIND_SET, 1, 615109, 0, 0, 1)
    assert rows[-1][7] == FLAG_EOM and rows[-1][4] == -1
    assert all(r[7] == 0 for r in rows[:-1])
    # line 2: {"e":"bookTicker","u":5123107839020,"s":"BTCUSDT","b":"61800.20","B":"2.507",
    #          "a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}
    assert _rows_of_line(c, 2) == [
        (1723161256313000000, 1723161255088169167, 5123107839020, KIND_BBO, 1, 618002, 2507, 0, 2),
        (1723161256313000000, 1723161255088169167, 5123107839020, KIND_BBO, -1, 618003, 2510, FLAG_EOM, 2)]
    # line 3: {"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":5266583935,
    #          "p":"61800.30","q":"0.006","X":"MARKET","m":false}
    assert _rows_of_line(c, 3) == [
        (1723161256322000000, 1723161255088176367, 5266583935, KIND_TRADE, 1, 618003, 6, FLAG_EOM, 3)]
    # last line: ..."U":5123135475514,"u":5123135475514,"pu":5123135221461,
    #            "b":[["61631.70","0.283"],["61632.60","0.000"]],"a":[]}
    assert _rows_of_line(c, 93_954) == [
        (1723161601105000000, 1723161599833492584, 5123135475514, KIND_DIFF, 0, 5123135475514, 5123135221461, 0,
         93_954),
        (1723161601105000000, 1723161599833492584, 5123135475514, KIND_SET, 1, 616317, 283, 0, 93_954),
        (1723161601105000000, 1723161599833492584, 5123135475514, KIND_SET, 1, 616326, 0, FLAG_EOM, 93_954)]


def test_usdm_diff_chain_and_levels(usdm):
    path, res = usdm
    c = _cols(res.tables[0])
    d = c["kind"] == KIND_DIFF
    u, first, pu = c["seq"][d], c["price"][d], c["qty"][d]
    assert len(u) == 6_551
    assert np.array_equal(pu[1:], u[:-1])  # pu == previous u: no gap
    assert np.all(first <= u)
    # the bridging diff precedes the snapshot: U <= lastUpdateId <= u
    assert int(((first <= 5123107852948) & (5123107852948 <= u)).sum()) == 1
    # every [p, q] pair of every depthUpdate is one KIND_SET row, counted independently
    msgs = _raw_messages(path)
    pairs = sum(len(m["data"]["b"]) + len(m["data"]["a"]) for _, m in msgs
                if m.get("data", {}).get("e") == "depthUpdate")
    assert int((c["kind"] == KIND_SET).sum()) == pairs
    # level sets carry the message's final update id
    s = c["kind"] == KIND_SET
    marker_of_row = np.maximum.accumulate(np.where(d, np.arange(len(d)), 0))
    assert np.array_equal(c["seq"][s], c["seq"][marker_of_row[s]])


def test_usdm_trades_sides_and_ids(usdm):
    path, res = usdm
    c = _cols(res.tables[0])
    tr = c["kind"] == KIND_TRADE
    raw = [m["data"] for _, m in _raw_messages(path) if m.get("data", {}).get("e") == "trade"]
    assert int(tr.sum()) == len(raw) == 21_313
    assert c["seq"][tr].tolist() == [m["t"] for m in raw]
    assert c["side"][tr].tolist() == [-1 if m["m"] else 1 for m in raw]
    assert c["ts_exch"][tr].tolist() == [m["T"] * 1_000_000 for m in raw]
    assert np.all(np.diff(c["seq"][tr]) > 0)
    assert np.all(c["flags"][tr] == FLAG_EOM)
    assert res.stats["trades_not_market"] == 0


def test_spot_rows_by_hand_and_chain(spot):
    (_, r8), (_, r9) = spot
    for r in (r8, r9):
        inst = instrument_of(r.tables[0])
        assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size) == ("binance", "BTCUSDT", "0.01",
                                                                             "0.00000001")
    c = _cols(r8.tables[0])
    # line 1: {"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT","U":50093239189,"u":50093239202,
    #          "b":[["61737.63000000","0.00000000"],...  (spot: no pu, marker qty -1)
    rows = _rows_of_line(c, 1)
    assert rows[0] == (1723161255208000000, 1723161253937085768, 50093239202, KIND_DIFF, 0, 50093239189, -1, 0, 1)
    assert rows[1] == (1723161255208000000, 1723161253937085768, 50093239202, KIND_SET, 1, 6173763, 0, 0, 1)
    # line 3: {"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000",
    #          "a":"61837.64000000","A":"1.54698000"}  (no E: ts_exch = ts_local, flagged)
    tl = 1723161254087891268
    assert _rows_of_line(c, 3) == [
        (tl, tl, 50093239212, KIND_BBO, 1, 6183763, 378826000, FLAG_TS_EXCH_MISSING, 3),
        (tl, tl, 50093239212, KIND_BBO, -1, 6183764, 154698000, FLAG_TS_EXCH_MISSING | FLAG_EOM, 3)]
    # line 4: {"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000",
    #          "q":"0.02000000","T":1723161255342,"m":true,"M":true}  (buyer is maker: seller aggressed)
    assert _rows_of_line(c, 4) == [
        (1723161255342000000, 1723161254087896568, 3735683259, KIND_TRADE, -1, 6183763, 2000000, FLAG_EOM, 4)]
    # line 8: REST snapshot without E/T
    snap = _rows_of_line(c, 8)
    ts8 = 1723161254206652067
    assert snap[0] == (ts8, ts8, 50093239218, KIND_CLEAR, 0, 0, 0,
                       FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN | FLAG_TS_EXCH_MISSING, 8)
    assert snap[1] == (ts8, ts8, 50093239218, KIND_SNAPSHOT, 1, 6183763, 378826000,
                       FLAG_SNAPSHOT | FLAG_TS_EXCH_MISSING, 8)
    assert len(snap) == 2001
    assert snap[-1][7] == FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM | FLAG_TS_EXCH_MISSING
    # diff chain: U == previous u + 1, within each file and across the file boundary
    u_all, U_all = [], []
    for r in (r8, r9):
        cc = _cols(r.tables[0])
        d = cc["kind"] == KIND_DIFF
        assert np.all(cc["qty"][d] == -1)
        u, first = cc["seq"][d], cc["price"][d]
        assert np.array_equal(first[1:], u[:-1] + 1)
        u_all.append(u)
        U_all.append(first)
    assert int(U_all[1][0]) == int(u_all[0][-1]) + 1 == 50093421585
    # level rows == [p, q] pairs counted independently
    for path, r in spot:
        pairs = sum(len(m["data"]["b"]) + len(m["data"]["a"]) for _, m in _raw_messages(path)
                    if m.get("data", {}).get("e") == "depthUpdate")
        cc = _cols(r.tables[0])
        assert int((cc["kind"] == KIND_SET).sum()) == pairs


def test_read_by_format_name(shared_data):
    res = read("binance", shared_data / "binance" / "spot" / "btcusdt_20240809.gz")
    assert res.stats["depthUpdate"] == 3_044


# ---- hand-made files: normalisation ----------------------------------------------------------------
T0 = 1723161255000000000  # local stamps are ns since the epoch (smaller values would read as ms or us)
DEPTH = ('{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256299,"T":1723161256298,'
         '"s":"BTCUSDT","U":100,"u":110,"pu":99,"b":[["61800.20","0.014"],["61800.10","1.5"]],'
         '"a":[["61800.30","2.000"]]}}')
TRADE = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256321,"s":"BTCUSDT",'
         '"t":7,"p":"61800.30","q":"0.006","X":"MARKET","m":true}}')


def L(dt: int, msg: str) -> str:
    """A line of a recording: local stamp ``T0 + dt`` ns, then the message."""
    return f"{T0 + dt} {msg}"


def test_key_order_and_spacing_do_not_matter(tmp_path):
    canonical = _write(tmp_path, [L(1, DEPTH), L(2, TRADE)], "a.gz")
    shuffled = _write(tmp_path, [
        L(1, '{"data":{"a":[["61800.30","2.000"]],"b":[["61800.20","0.014"],["61800.10","1.5"]],"pu":99,'
             '"u":110,"U":100,"T":1723161256298,"E":1723161256299,"e":"depthUpdate","s":"btcusdt"},'
             '"stream":"btcusdt@depth@0ms"}'),
        L(2, '{ "data" : { "m" : true , "q" : "0.006", "p":"61800.30", "t":7, "X":"MARKET", "s":"BTCUSDT",'
             ' "T":1723161256321, "E":1723161256322, "e":"trade"} , "stream":"btcusdt@trade" }')], "b.gz")
    a = read_binance(canonical)
    b = read_binance(shuffled)
    for col in COLS:
        assert np.array_equal(a.tables[0].column(col).to_numpy(), b.tables[0].column(col).to_numpy()), col
    c = _cols(a.tables[0])
    assert [_row(c, k) for k in range(5)] == [
        (1723161256299000000, T0 + 1, 110, KIND_DIFF, 0, 100, 99, 0, 1),
        (1723161256299000000, T0 + 1, 110, KIND_SET, 1, 618002, 14, 0, 1),
        (1723161256299000000, T0 + 1, 110, KIND_SET, 1, 618001, 1500, 0, 1),
        (1723161256299000000, T0 + 1, 110, KIND_SET, -1, 618003, 2000, FLAG_EOM, 1),
        (1723161256321000000, T0 + 2, 7, KIND_TRADE, -1, 618003, 6, FLAG_EOM, 2)]


def test_aggtrade_unknown_streams_blank_lines_and_sorting(tmp_path):
    agg = ('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161256400,"s":"BTCUSDT","a":55,'
           '"p":"61800.40","q":"0.100","f":1,"l":3,"T":1723161256399,"m":false}}')
    mark = ('{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1723161256400,"s":"BTCUSDT",'
            '"p":"61800.12345","i":"61790.1","r":"0.0001","T":1723161600000}}')
    partial = ('{"stream":"btcusdt@depth5@100ms","data":{"e":"depthUpdate","E":1723161256400,"T":1723161256399,'
               '"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["61800.20","0.014"]],"a":[["61800.30","2.000"]]}}')
    error = '{"code":-1121,"msg":"Invalid symbol."}'
    path = _write(tmp_path, [L(3000, agg), "", L(2000, mark), L(2000, TRADE), "   ", L(1000, partial),
                             L(2000, error), L(1500, DEPTH) + "\r"])
    res = read_binance(path)
    st = res.stats
    assert (st["lines"], st["empty_lines"], st["aggTrade"], st["trade"], st["depthUpdate"], st["unknown"]) == (
        8, 2, 1, 1, 1, 3)
    c = _cols(res.tables[0])
    # sorted by ts_local: the depth message (+1500), the trade (+2000), the aggTrade (+3000)
    assert c["src_line"].tolist() == [8, 8, 8, 8, 4, 1]
    assert _row(c, 5) == (1723161256399000000, T0 + 3000, 55, KIND_TRADE, 1, 618004, 100,
                          FLAG_EOM | FLAG_AGGREGATED, 1)


def test_ties_keep_file_order(tmp_path):
    t8 = TRADE.replace('"t":7', '"t":8')
    t6 = TRADE.replace('"t":7', '"t":6')
    c = _cols(read_binance(_write(tmp_path, [L(2, TRADE), L(1, DEPTH), L(2, t8), L(1, t6)])).tables[0])
    assert c["src_line"].tolist() == [2, 2, 2, 2, 4, 1, 3]
    assert c["seq"][-3:].tolist() == [6, 7, 8]


def test_timestamp_units(tmp_path):
    # local stamps and E/T in ms, us or ns are told apart by magnitude
    lines = [f"1723161255123 {TRADE}", f"1723161255123456 {TRADE.replace('1723161256321', '1723161256321000')}"]
    c = _cols(read_binance(_write(tmp_path, lines)).tables[0])
    assert c["ts_local"].tolist() == [1723161255123000000, 1723161255123456000]
    assert c["ts_exch"].tolist() == [1723161256321000000, 1723161256321000000]


def test_plain_text_and_multi_member_gzip(tmp_path):
    plain = _write(tmp_path, [L(1, DEPTH), L(2, TRADE)], "btcusdt.txt", gz=False)
    assert read_binance(plain).stats["rows"] == 5
    multi = tmp_path / "btcusdt_multi.gz"
    multi.write_bytes(gzip.compress((L(1, DEPTH) + "\n").encode()) + gzip.compress(L(2, TRADE).encode()))
    res = read_binance(multi)
    assert (res.stats["lines"], res.stats["rows"]) == (2, 5)
    empty = _write(tmp_path, [], "btcusdt_empty.gz")
    res = read_binance(empty)
    assert (res.tables, res.stats["lines"], res.stats["rows"]) == ([], 0, 0)


def test_unknown_symbol_infers_steps(tmp_path):
    line = ('{"stream":"foousdt@depth@100ms","data":{"e":"depthUpdate","E":1723161256299,"s":"FOOUSDT",'
            '"U":1,"u":2,"b":[["1.2500","10.50"]],"a":[["1.3","7"]]}}')
    res = read_binance(_write(tmp_path, [L(1, line)], "foousdt_x.gz"))
    inst = instrument_of(res.tables[0])
    assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size) == ("binance", "FOOUSDT", "0.01", "0.1")
    assert inst.tick_size_inferred and inst.lot_size_inferred
    c = _cols(res.tables[0])
    assert c["price"].tolist() == [1, 125, 130] and c["qty"].tolist() == [-1, 105, 70]


def test_venue_from_payload_shape(tmp_path):
    agg = ('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161256400,"s":"BTCUSDT","a":55,'
           '"p":"61800.40","q":"0.100","f":1,"l":3,"T":1723161256399,"m":false%s}}')
    fut = read_binance(_write(tmp_path, [L(1, agg % "")], "f.gz"))  # futures aggTrade: no "M"
    spot = read_binance(_write(tmp_path, [L(1, agg % ',"M":true')], "s.gz"))  # spot aggTrade carries "M"
    assert instrument_of(fut.tables[0]).venue == "binance-futures"
    assert instrument_of(spot.tables[0]).venue == "binance"
    assert int(fut.tables[0].column("price")[0].as_py()) == 618004
    assert int(spot.tables[0].column("price")[0].as_py()) == 6180040


def test_snapshot_only_file_takes_the_symbol_from_its_name(tmp_path):
    snap = '{"lastUpdateId":105,"bids":[["61800.20","1.00000000"]],"asks":[["61800.21","0.5"]]}'
    res = read_binance(_write(tmp_path, [L(1, snap)], "btcusdt_20240808.gz"))
    inst = instrument_of(res.tables[0])
    assert (inst.venue, inst.symbol, inst.tick_size) == ("binance", "BTCUSDT", "0.01")  # no E: spot REST
    c = _cols(res.tables[0])
    assert c["kind"].tolist() == [KIND_CLEAR, KIND_SNAPSHOT, KIND_SNAPSHOT]
    assert c["price"].tolist() == [0, 6180020, 6180021]
    assert c["flags"].tolist() == [FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN | FLAG_TS_EXCH_MISSING,
                                   FLAG_SNAPSHOT | FLAG_TS_EXCH_MISSING,
                                   FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM | FLAG_TS_EXCH_MISSING]
    with pytest.raises(SchemaError, match="snapshot line carries no symbol"):
        read_binance(_write(tmp_path, [L(1, snap)], "snapshot.gz"))


def test_user_instrument_and_several_symbols(tmp_path):
    eth = DEPTH.replace("btcusdt", "ethusdt").replace("BTCUSDT", "ETHUSDT")
    snap = '{"lastUpdateId":105,"E":1723161256000,"bids":[["61800.20","1.000"]],"asks":[]}'
    path = _write(tmp_path, [L(1, DEPTH), L(2, eth), L(3, snap)], "mixed.gz")
    with pytest.raises(SchemaError, match="snapshot line carries no symbol.*2 symbols.*pass symbol="):
        read_binance(path)
    res = read_binance(path, symbol="btcusdt")
    assert [instrument_of(t).symbol for t in res.tables] == ["BTCUSDT", "ETHUSDT"]
    assert res.stats["rows_per_symbol"] == {"BTCUSDT": 6, "ETHUSDT": 4}
    c = _cols(res.tables[0])
    assert c["kind"].tolist() == [KIND_DIFF, KIND_SET, KIND_SET, KIND_SET, KIND_CLEAR, KIND_SNAPSHOT]
    assert int(c["flags"][-1]) == FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM
    assert instrument_of(res.tables[1]).tick_size == "0.01"  # ETHUSDT futures from the built-in table
    fine = Instrument(venue="binance-futures", symbol="BTCUSDT", tick_size="0.01", lot_size="0.0001")
    res = read_binance(path, symbol="BTCUSDT", instrument=fine)
    assert instrument_of(res.tables[0]) == fine
    assert int(_cols(res.tables[0])["price"][1]) == 6180020
    # the file name names the snapshot's symbol when the file holds several
    named = _write(tmp_path, [L(1, DEPTH), L(2, eth), L(3, snap)], "ethusdt_20240808.gz")
    assert read_binance(named).stats["rows_per_symbol"] == {"BTCUSDT": 4, "ETHUSDT": 6}


# ---- hand-made files: bad input ------------------------------------------------------------------
@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """Run a test with ISA-L (when installed) and with the zlib fallback."""
    from gpuflow.io import binance

    if request.param == "zlib":
        monkeypatch.setattr(binance, "_isal_zlib", None)
    elif binance._isal_zlib is None:
        pytest.skip("isal not installed")
    return request.param


def test_inflaters_agree(tmp_path, inflater):
    path = _write(tmp_path, [L(1, DEPTH), L(2, TRADE)])
    res = read_binance(path)
    assert res.stats["inflater"] == inflater
    assert res.stats["rows"] == 5


def test_truncated_gzip_raises(tmp_path, shared_data, inflater):
    raw = (shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").read_bytes()
    path = tmp_path / "btcusdt_cut.gz"
    path.write_bytes(raw[:200_000])
    with pytest.raises(ParseError, match=r"btcusdt_cut\.gz: truncated gzip stream: the data ends in line \d+"):
        read_binance(path)
    with pytest.raises(ParseError, match="truncated gzip"):
        read_binance(path, errors="quarantine")  # file-level problems always raise


def test_corrupt_gzip_raises(tmp_path, inflater):
    data = bytearray(gzip.compress((L(1, DEPTH) + "\n").encode() * 50))
    data[-6] ^= 0xFF  # CRC
    path = tmp_path / "btcusdt_crc.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(ParseError, match="corrupt gzip stream"):
        read_binance(path)


def test_malformed_line_raise_and_quarantine(tmp_path):
    cut = TRADE[:70]
    path = _write(tmp_path, [L(1, DEPTH), L(2, cut), L(3, TRADE)])
    with pytest.raises(ParseError, match=r"btcusdt_test\.gz: line 2: malformed line at column \d+: expected"):
        read_binance(path)
    res = read_binance(path, errors="quarantine")
    rej = res.rejected.to_pylist()
    assert len(rej) == 1
    assert (rej[0]["line"], rej[0]["rule"], rej[0]["raw"]) == (2, "malformed_line", L(2, cut))
    assert rej[0]["source"] == str(path)
    c = _cols(res.tables[0])
    assert sorted(set(c["src_line"].tolist())) == [1, 3]
    assert (res.stats["trade"], res.stats["rejected_lines"]) == (1, 1)


def test_missing_field_and_bad_values(tmp_path):
    no_p = TRADE.replace('"p":"61800.30",', "")
    with pytest.raises(ParseError, match="line 1: trade message has no field 'p'"):
        read_binance(_write(tmp_path, [L(1, no_p)], "a.gz"))
    bad = TRADE.replace('"61800.30"', '"61800.3x"')
    with pytest.raises(ParseError, match=r"line 1: field 'p' \(price\): expected a decimal number, got '61800.3x'"):
        read_binance(_write(tmp_path, [L(1, bad)], "b.gz"))
    bad_ts = _write(tmp_path, [L(1, DEPTH), "17231612550x " + TRADE], "c.gz")
    with pytest.raises(ParseError, match="line 2: malformed line at column 12: expected a local timestamp"):
        read_binance(bad_ts)
    wrong_type = TRADE.replace('"t":7', '"t":"seven"')
    with pytest.raises(ParseError, match="line 1: .*expected an integer.*field 't'"):
        read_binance(_write(tmp_path, [L(1, wrong_type)], "d.gz"))


def test_off_grid_price_raise_and_quarantine(tmp_path):
    off = DEPTH.replace('[["61800.20","0.014"],["61800.10","1.5"]]',
                        '[["61800.20","0.014"],["61800.10","1.5"],["61800.00","1"],["61800.25","0.1"]]')
    path = _write(tmp_path, [L(1, TRADE), L(2, off), L(3, DEPTH)])
    with pytest.raises(SchemaError, match=r"line 2: field 'b\[3\]\[0\]' \(price\): expected a whole number of "
                                          r"tick_size=0\.10 \(binance-futures BTCUSDT\), got '61800\.25'"):
        read_binance(path)
    res = read_binance(path, errors="quarantine")
    rej = res.rejected.to_pylist()
    assert [(r["line"], r["rule"], r["field"], r["raw"]) for r in rej] == [
        (2, "off_grid_price", "b[3][0]", L(2, off))]
    c = _cols(res.tables[0])
    assert sorted(set(c["src_line"].tolist())) == [1, 3]  # nothing of line 2
    assert (res.stats["depthUpdate"], res.stats["rows"]) == (1, 5)
    off_qty = TRADE.replace('"0.006"', '"0.0065"')
    with pytest.raises(SchemaError, match=r"field 'q' \(qty\): expected a whole number of lot_size=0\.001"):
        read_binance(_write(tmp_path, [L(1, off_qty)], "q.gz"))
    off_bbo = ('{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":1,"s":"BTCUSDT","b":"61800.20",'
               '"B":"2.507","a":"61800.35","A":"2.510","T":1723161256313,"E":1723161256313}}')
    res = read_binance(_write(tmp_path, [L(1, off_bbo), L(2, TRADE)], "bbo.gz"), errors="quarantine")
    assert [(r["rule"], r["field"]) for r in res.rejected.to_pylist()] == [("off_grid_price", "a")]
    assert res.stats["bookTicker"] == 0 and res.stats["rows"] == 1


def test_wrong_format_raises(tmp_path, shared_data):
    lobster = shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz"
    with pytest.raises(FormatError, match=r"line 1: expected '<ns timestamp> <json>' lines"):
        read_binance(lobster)
    csv = _write(tmp_path, ["timestamp,price,qty", "1,2,3"], "data.csv", gz=False)
    with pytest.raises(FormatError, match=r"data\.csv: line 1: expected '<ns timestamp> <json>' lines.*'timestamp,"):
        read_binance(csv)


def test_bad_arguments(tmp_path):
    path = _write(tmp_path, [L(1, TRADE)])
    with pytest.raises(SchemaError, match="errors: expected 'raise' or 'quarantine', got 'ignore'"):
        read_binance(path, errors="ignore")
    with pytest.raises(SchemaError, match="instrument: expected a gpuflow.schema.Instrument"):
        read_binance(path, instrument="BTCUSDT")
