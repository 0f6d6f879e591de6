"""Tests of the Databento MBO reader on the real ESH4 file, checked against databento_dbn's decoder."""
from __future__ import annotations

import struct
from pathlib import Path

import databento_dbn
import numpy as np
import pytest
import zstandard

from gpuflow.errors import FormatError, ParseError, SchemaError
from gpuflow.io import read
from gpuflow.io.databento import MBO_DTYPE, mbo_records, read_databento
from gpuflow.schema import (
    FLAG_EOM,
    FLAG_SNAPSHOT,
    FLAG_SNAPSHOT_BEGIN,
    FLAG_SNAPSHOT_END,
    KIND_ADD,
    KIND_CANCEL,
    KIND_CLEAR,
    KIND_EXECUTE,
    KIND_MODIFY,
    KIND_TRADE,
    Instrument,
    instrument_of,
    validate,
)

NAME = "esh4-glbx-mdp3-20231225.mbo.dbn.zst"


@pytest.fixture(scope="module")
def dbn_path(shared_data: Path) -> Path:
    return shared_data / "nautilus_fixtures" / "databento" / NAME


@pytest.fixture(scope="module")
def raw_dbn(dbn_path: Path) -> bytes:
    """The decompressed DBN bytes (the file holds two zstd frames)."""
    return zstandard.ZstdDecompressor().stream_reader(dbn_path.read_bytes(), read_across_frames=True).read()


def test_counts_and_instrument(dbn_path: Path) -> None:
    res = read_databento(dbn_path)
    (t,) = res.tables
    validate(t, NAME)
    # 68,792 records + the CLEAR row that opens the snapshot
    assert t.num_rows == 68_793 and res.rejected.num_rows == 0
    assert res.stats["actions"] == {"A": 29_216, "C": 17_999, "M": 12_233, "T": 2_973, "F": 6_371}
    kind = t.column("kind").to_numpy()
    flags = t.column("flags").to_numpy()
    for k, count in ((KIND_ADD, 29_216), (KIND_CANCEL, 17_999), (KIND_MODIFY, 12_233), (KIND_TRADE, 2_973),
                     (KIND_EXECUTE, 6_371)):
        assert (kind == k).sum() == count
    assert (kind == KIND_CLEAR).sum() == 1 and kind[0] == KIND_CLEAR
    assert flags[0] == FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN
    snap = (flags & FLAG_SNAPSHOT) != 0
    assert snap.sum() == 1 + 8_725 and np.all(kind[1:][snap[1:]] == KIND_ADD) and np.all(snap[:8_726])
    assert ((flags & FLAG_SNAPSHOT_BEGIN) != 0).sum() == 1
    assert np.flatnonzero(flags & FLAG_SNAPSHOT_END).tolist() == [8_725]
    assert flags[8_725] == FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM
    assert np.all(np.diff(t.column("ts_local").to_numpy()) >= 0)
    inst = instrument_of(t)
    assert (inst.venue, inst.symbol, inst.tick_size, inst.lot_size, inst.source) == \
        ("glbx-mdp3", "ESH4", "0.25", "1", "databento")
    assert not inst.tick_size_inferred


def test_first_and_last_records(dbn_path: Path) -> None:
    t = read_databento(dbn_path).tables[0]
    clear, *first = t.slice(0, 3).to_pylist()
    assert clear == {"ts_exch": 1_703_422_805_243_925_307, "ts_local": 1_703_462_400_000_000_000,
                     "seq": 682, "kind": KIND_CLEAR, "side": 0, "price": 0, "qty": 0, "order_id": 0,
                     "flags": FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN, "src_line": 1}
    # MboMsg(ts_recv=1703462400000000000, ts_event=1703422805243925307, action='A', side='B',
    #        price=4799000000000, size=2, order_id=6412777162812, flags=SNAPSHOT|BAD_TS_RECV (40),
    #        sequence=682)
    assert first[0] == {"ts_exch": 1_703_422_805_243_925_307, "ts_local": 1_703_462_400_000_000_000,
                        "seq": 682, "kind": KIND_ADD, "side": 1, "price": 4799 * 4, "qty": 2,
                        "order_id": 6_412_777_162_812,
                        "flags": FLAG_SNAPSHOT, "src_line": 1}
    assert first[1]["order_id"] == 6_412_777_162_851 and first[1]["qty"] == 6
    last = t.slice(t.num_rows - 1).to_pylist()[0]
    # MboMsg(ts_recv=1703548799446821072, ts_event=1703548799446724905, action='M', side='A',
    #        price=4810500000000, size=1, order_id=6412777285103, flags=LAST|PUBLISHER_SPECIFIC (130),
    #        sequence=59585)
    assert last == {"ts_exch": 1_703_548_799_446_724_905, "ts_local": 1_703_548_799_446_821_072,
                    "seq": 59_585,
                    "kind": KIND_MODIFY, "side": -1, "price": 19_242, "qty": 1, "order_id": 6_412_777_285_103,
                    "flags": FLAG_EOM, "src_line": 68_792}


def test_matches_dbn_decoder(dbn_path: Path, raw_dbn: bytes) -> None:
    dec = databento_dbn.DBNDecoder()
    dec.write(raw_dbn)
    recs = [r for r in dec.decode() if isinstance(r, databento_dbn.MBOMsg)]
    ours, meta, info = mbo_records(dbn_path)
    assert len(recs) == ours.size == 68_792
    for name in ("ts_event", "ts_recv", "order_id", "price", "size", "flags", "sequence", "instrument_id",
                 "ts_in_delta", "channel_id", "publisher_id"):
        dt = np.uint64 if name == "order_id" else np.int64
        theirs = np.array([int(getattr(r, name)) for r in recs], dtype=dt)
        assert np.array_equal(ours[name].astype(theirs.dtype), theirs), name
    for name in ("action", "side"):
        theirs = np.array([ord(str(getattr(r, name))) for r in recs], dtype=np.uint8)
        assert np.array_equal(ours[name], theirs), name
    t = read_databento(dbn_path).tables[0].slice(1)  # after the inserted CLEAR
    # events follow the decoder's records one to one (the file is already in ts_recv order)
    side = {"B": 1, "A": -1, "N": 0}
    assert t.column("side").to_pylist() == [side[str(r.side)] for r in recs]
    assert t.column("price").to_pylist() == [r.price // 250_000_000 for r in recs]
    last = np.array([(r.flags & databento_dbn.F_LAST) != 0 for r in recs])
    last[8_724] = True  # the end of the snapshot
    assert np.array_equal(t.column("flags").to_numpy() & FLAG_EOM != 0, last)
    assert meta.dataset == "GLBX.MDP3" and info["version"] == 1


def test_mixed_record_types(tmp_path: Path, raw_dbn: bytes) -> None:
    """A non-MBO record between MBO records is skipped; record numbers count it."""
    mlen = struct.unpack("<I", raw_dbn[4:8])[0]
    head, body = raw_dbn[: 8 + mlen], raw_dbn[8 + mlen:]
    other = bytes([4, 0x17]) + bytes(14)  # a 16-byte record of another rtype
    data = head + body[:56 * 3] + other + body[56 * 3: 56 * 10]
    p = tmp_path / "mixed.dbn"
    p.write_bytes(data)
    res = read_databento(p)
    t = res.tables[0]
    assert t.num_rows == 1 + 10 and res.stats["other_records"] == 1 and res.stats["records"] == 11
    assert t.column("src_line").to_pylist() == [1, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert t.column("price").to_pylist()[:4] == [0] + [4799 * 4] * 3


def test_off_grid_price(dbn_path: Path) -> None:
    inst = Instrument("glbx-mdp3", "ESH4", "0.5", "1", source="databento")
    recs, _, _ = mbo_records(dbn_path)
    n_bad = int((recs["price"] % 500_000_000 != 0).sum())
    first_bad = int(np.argmax(recs["price"] % 500_000_000 != 0))
    assert n_bad > 0
    with pytest.raises(SchemaError, match=(rf"{NAME}: record {first_bad + 1}: field 'price': "
                                           r"expected a whole "
                                           r"number of ticks \(tick_size=0\.5, prices in 1e-9 units\), found "
                                           rf"'{int(recs['price'][first_bad])}'")):
        read_databento(dbn_path, instrument=inst)
    res = read_databento(dbn_path, instrument=inst, errors="quarantine")
    assert res.rejected.num_rows == n_bad and res.tables[0].num_rows == 1 + 68_792 - n_bad
    assert set(res.rejected.column("rule").to_pylist()) == {"off_grid_price"}
    assert res.rejected.column("raw").to_pylist()[0].startswith("MboMsg(instrument_id=17077")


def test_unknown_instrument_infers_tick(tmp_path: Path, raw_dbn: bytes) -> None:
    p = tmp_path / "x.dbn"
    p.write_bytes(raw_dbn)
    t = read_databento(p, venue="cme").tables[0]  # ("cme", "ESH4") is not in the built-in table
    inst = instrument_of(t)
    assert (inst.venue, inst.tick_size, inst.tick_size_inferred) == ("cme", "0.25", True)
    assert read("databento", p).n_events == 68_793


def test_truncated(dbn_path: Path, raw_dbn: bytes, tmp_path: Path) -> None:
    data = dbn_path.read_bytes()
    p = tmp_path / NAME
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match=(rf"{NAME}: truncated zstd file: the compressed stream ends after "
                                          r"498,619 bytes without its end marker; "
                                          r"decompressed [\d,]+ bytes")):
        read_databento(p)
    q = tmp_path / "cut.dbn"
    mlen = struct.unpack("<I", raw_dbn[4:8])[0]
    q.write_bytes(raw_dbn[: 8 + mlen + 56 * 100 + 20])
    with pytest.raises(ParseError, match=(r"truncated or corrupt DBN records: record 101 "
                                          r"at byte [\d,]+ declares "
                                          r"56 bytes, 20 left; 100 complete records before it")):
        read_databento(q)
    q.write_bytes(raw_dbn[:100])
    with pytest.raises(ParseError, match=r"truncated DBN file: the metadata needs 198 bytes"):
        read_databento(q)


def test_wrong_format(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(FormatError,
                       match=r"expected a Databento DBN file \(starting with b'DBN'\), found a JSON"):
        read_databento(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz")
    with pytest.raises(FormatError, match="expected a Databento DBN file .* found a CSV text file"):
        read_databento(shared_data / "lobster" / "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz")
    meta = databento_dbn.Metadata(dataset="GLBX.MDP3", schema=databento_dbn.Schema.TRADES, start=0,
                                  stype_in=databento_dbn.SType.RAW_SYMBOL,
                                  stype_out=databento_dbn.SType.INSTRUMENT_ID, symbols=["ESH4"], partial=[],
                                  not_found=[], mappings=[])
    p = tmp_path / "trades.dbn"
    p.write_bytes(meta.encode())
    with pytest.raises(FormatError,
                       match="expected a Databento MBO file \\(schema 'mbo'\\), found schema 'trades'"):
        read_databento(p)


def test_clear_undefined_price_and_bad_action(tmp_path: Path, raw_dbn: bytes) -> None:
    mlen = struct.unpack("<I", raw_dbn[4:8])[0]
    recs = np.frombuffer(raw_dbn[8 + mlen: 8 + mlen + 56 * 4], dtype=MBO_DTYPE).copy()
    recs[1]["action"], recs[1]["side"], recs[1]["price"] = ord("R"), ord("N"), np.iinfo(np.int64).max
    recs[2]["action"] = ord("N")
    recs[3]["action"] = ord("X")
    p = tmp_path / "edited.dbn"
    p.write_bytes(raw_dbn[: 8 + mlen] + recs.tobytes())
    with pytest.raises(ParseError, match=r"edited\.dbn: record 4: field 'action': "
                                         r"expected one of A, C, M, T, F, R, N, found 'X'"):
        read_databento(p)
    res = read_databento(p, errors="quarantine")
    rows = res.tables[0].to_pylist()
    assert [(r["kind"], r["side"], r["price"], r["src_line"]) for r in rows] == [
        (KIND_CLEAR, 0, 0, 1), (KIND_ADD, 1, 4799 * 4, 1), (KIND_CLEAR, 0, 0, 2)]
    assert [r["flags"] for r in rows] == [FLAG_SNAPSHOT | FLAG_SNAPSHOT_BEGIN, FLAG_SNAPSHOT,
                                          FLAG_SNAPSHOT | FLAG_SNAPSHOT_END | FLAG_EOM]
    assert res.stats["skipped"] == 1
    rejected = [(r["line"], r["rule"], r["field"]) for r in res.rejected.to_pylist()]
    assert rejected == [(4, "bad_value", "action")]
