"""Tests of gpuflow.store: layout, round trip, time-range pushdown, atomic and idempotent ingest."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpuflow.clean import clean
from gpuflow.errors import BackendUnavailableError, GpuflowError, SchemaError, StoreError
from gpuflow.io import ReadResult, rejected_table
from gpuflow.schema import (EVENT_COLUMNS, EVENT_DTYPES, EVENTS, KIND_BBO, KIND_SET, KIND_TRADE, Instrument,
                            events_table, instrument_of)
from gpuflow.store import MANIFEST_NAME, Store, fingerprint

INS = Instrument(venue="binance-futures", symbol="BTCUSDT", tick_size="0.10", lot_size="0.001",
                 source="binance")
NS = 1_000_000_000
DAY = 86_400 * NS
MIDNIGHT = 1_723_161_600 * NS  # 2024-08-09T00:00:00Z


def events(ts, price=None, ins=INS, seq=None, kind=KIND_TRADE) -> pa.Table:
    ts = np.asarray(ts, dtype=np.int64)
    n = ts.size
    return events_table({"ts_local": ts, "ts_exch": ts + 7, "kind": np.full(n, kind),
                         "side": np.where(np.arange(n) % 2 == 0, 1, -1),
                         "price": np.arange(1000, 1000 + n) if price is None else np.asarray(price),
                         "qty": np.arange(1, n + 1), "seq": np.arange(n) if seq is None else np.asarray(seq)},
                        ins, src_line=np.arange(1, n + 1))


def tree(root: Path) -> dict[str, str]:
    """Every file under root with the sha256 of its bytes."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
def test_round_trip_values_dtypes_metadata(tmp_path):
    n = 40
    ts = MIDNIGHT + np.arange(n) * 1000
    t = events_table({
        "ts_local": ts, "ts_exch": ts - 5, "seq": np.arange(n) * 3,
        "kind": np.tile([KIND_SET, KIND_TRADE, KIND_BBO, 11], n // 4),
        "side": np.tile([1, -1, 0, 1], n // 4), "price": -50 + np.arange(n),
        "qty": np.arange(n) * 2, "order_id": np.full(n, 2**63 + 5, dtype=np.uint64),
        "flags": np.full(n, 0xFFFF, dtype=np.uint16)}, INS, src_line=np.arange(n))
    st = Store(tmp_path / "store")
    rep = st.ingest(t, source_id="src-a")
    assert (rep.events, rep.skipped) == (n, False)
    assert rep.partitions == ["venue=binance-futures/symbol=BTCUSDT/date=2024-08-09"]
    back = st.load(symbol="BTCUSDT")
    assert back.schema.remove_metadata() == EVENTS
    assert back.equals(t.select(list(EVENT_COLUMNS)).replace_schema_metadata(None).cast(EVENTS)
                       .replace_schema_metadata(back.schema.metadata))
    assert instrument_of(back) == INS
    arrays = st.load(venue="binance-futures", symbol="BTCUSDT", as_="numpy")
    assert list(arrays) == list(EVENT_COLUMNS)
    for c in EVENT_COLUMNS:
        assert arrays[c].dtype == EVENT_DTYPES[c]
        np.testing.assert_array_equal(arrays[c], t.column(c).to_numpy())
    dev = st.load(symbol="BTCUSDT", as_="device", backend="cpu", columns=["price", "qty"])
    assert list(dev) == ["price", "qty"]
    np.testing.assert_array_equal(dev["price"], t.column("price").to_numpy())
    # every part file carries the instrument in its schema metadata
    (part,) = rep.files
    assert part.startswith("venue=binance-futures/symbol=BTCUSDT/date=2024-08-09/part-")
    assert Instrument.from_metadata(pq.read_schema(tmp_path / "store" / part).metadata) == INS


def test_partitioning_by_utc_date_across_midnight(tmp_path):
    # unsorted input; two rows share a timestamp (order must be kept: prices 2 then 3)
    ts = [MIDNIGHT + 5, MIDNIGHT - 1, MIDNIGHT - 2, MIDNIGHT, MIDNIGHT - 1, MIDNIGHT + DAY + 1]
    t = events(ts, price=[0, 1, 2, 3, 4, 5])
    st = Store(tmp_path)
    st.ingest(t, source_id="a")
    parts = st.partitions()
    assert [(p["date"], p["events"]) for p in parts] == [("2024-08-08", 3), ("2024-08-09", 2),
                                                          ("2024-08-10", 1)]
    day8 = list((tmp_path / "venue=binance-futures" / "symbol=BTCUSDT" / "date=2024-08-08").iterdir())
    assert len(day8) == 1
    f = pq.read_table(day8[0])
    assert f.column("ts_local").to_pylist() == [MIDNIGHT - 2, MIDNIGHT - 1, MIDNIGHT - 1]
    assert f.column("price").to_pylist() == [2, 1, 4]
    assert st.load().column("price").to_pylist() == [2, 1, 4, 3, 0, 5]
    info = st.info()
    assert len(info) == 1
    assert info[0] | {} == {**info[0], "venue": "binance-futures", "symbol": "BTCUSDT", "partitions": 3,
                            "files": 3, "events": 6, "first_ts": MIDNIGHT - 2, "last_ts": MIDNIGHT + DAY + 1,
                            "sources": 1, "tick_size": "0.10", "lot_size": "0.001"}
    assert info[0]["first"] == "2024-08-08T23:59:59.999999998"


def test_time_range_pushdown_is_exact(tmp_path):
    ts = np.sort(np.concatenate([MIDNIGHT + np.arange(-30, 30) * (DAY // 20), [MIDNIGHT, MIDNIGHT, MIDNIGHT + DAY]]))
    t = events(ts)
    st = Store(tmp_path, row_group_size=7)
    st.ingest(t, source_id="a")
    cases = [(None, None), (MIDNIGHT, None), (None, MIDNIGHT), (MIDNIGHT, MIDNIGHT + DAY),
             (MIDNIGHT - 1, MIDNIGHT + 1), (MIDNIGHT + 1, MIDNIGHT + DAY + 1), (int(ts[5]), int(ts[9])),
             (MIDNIGHT + 3 * DAY, None), (MIDNIGHT, MIDNIGHT)]
    for lo, hi in cases:
        got = st.load(symbol="BTCUSDT", start=lo, end=hi, columns=["ts_local", "price"])
        m = np.ones(ts.size, bool)
        if lo is not None:
            m &= ts >= lo
        if hi is not None:
            m &= ts < hi
        assert got.column("ts_local").to_pylist() == ts[m].tolist(), (lo, hi)
        assert got.column_names == ["ts_local", "price"]
    # strings and datetimes are UTC
    a = st.load(start="2024-08-09", end=datetime(2024, 8, 10, tzinfo=timezone.utc))
    b = st.load(start=MIDNIGHT, end=MIDNIGHT + DAY)
    assert a.equals(b) and a.num_rows == int(((ts >= MIDNIGHT) & (ts < MIDNIGHT + DAY)).sum())
    # partitions outside the range are never opened: damage one and load around it
    (bad,) = [p for p in st.partitions() if p["date"] == "2024-08-07"]
    for f in (tmp_path / "venue=binance-futures/symbol=BTCUSDT/date=2024-08-07").iterdir():
        f.write_bytes(b"not parquet")
    assert st.load(start=MIDNIGHT - DAY).num_rows == int((ts >= MIDNIGHT - DAY).sum())
    with pytest.raises(StoreError, match="cannot read part files"):
        st.load(start=MIDNIGHT - 2 * DAY)
    assert bad["events"] > 0


def test_reingest_same_source_is_idempotent(tmp_path):
    t = events(MIDNIGHT + np.arange(10) * NS)
    st = Store(tmp_path)
    first = st.ingest(t, source_id="abc")
    before_tree = tree(tmp_path)
    second = st.ingest(t, source_id="abc")
    assert second.skipped and second.events == 0
    assert second.files == first.files and second.partitions == first.partitions
    assert tree(tmp_path) == before_tree
    assert st.load().num_rows == 10


def test_failure_mid_ingest_leaves_store_as_it_was(tmp_path):
    st = Store(tmp_path)
    st.ingest(events(MIDNIGHT + np.arange(10) * NS), source_id="first")
    before_tree = tree(tmp_path)
    before = st.load()

    def chunks():
        yield events(MIDNIGHT + np.arange(5) * NS + 1)
        yield events(MIDNIGHT + DAY + np.arange(5) * NS)   # a new partition
        raise RuntimeError("reader failed on purpose mid-file")

    with pytest.raises(RuntimeError, match="on purpose"):
        st.ingest(chunks(), source_id="second")
    assert tree(tmp_path) == before_tree
    assert st.load().equals(before)
    assert "second" not in st.sources()
    # the lock was released: the same source ingests fine afterwards
    rep = st.ingest([events(MIDNIGHT + np.arange(5) * NS + 1)], source_id="second")
    assert rep.events == 5 and st.load().num_rows == 15


def test_failure_while_committing_leaves_store_as_it_was(tmp_path, monkeypatch):
    st = Store(tmp_path)
    st.ingest(events(MIDNIGHT + np.arange(3) * NS), source_id="first")
    before_tree = tree(tmp_path)

    def fail(self, m):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Store, "_write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        st.ingest(events(MIDNIGHT + np.arange(3) * NS + 1), source_id="second")
    assert tree(tmp_path) == before_tree


def test_leftovers_of_a_crash_are_ignored_then_cleaned(tmp_path):
    st = Store(tmp_path)
    st.ingest(events(MIDNIGHT + np.arange(4) * NS), source_id="first")
    expected = st.load()
    # what a killed ingest leaves: a staging folder, an unlisted part file, a manifest temp file
    part_dir = tmp_path / "venue=binance-futures/symbol=BTCUSDT/date=2024-08-09"
    pq.write_table(events([MIDNIGHT + 1]), part_dir / "part-dead-000009-00000.parquet")
    (tmp_path / "_staging" / "tok").mkdir(parents=True)
    (tmp_path / "_staging" / "tok" / "x.parquet").write_bytes(b"half")
    (tmp_path / f".{MANIFEST_NAME}.zz.tmp").write_text("{")
    orphan_dir = tmp_path / "venue=binance-futures/symbol=BTCUSDT/date=2024-09-01"
    orphan_dir.mkdir(parents=True)
    pq.write_table(events([MIDNIGHT + 30 * DAY]), orphan_dir / "part-dead-000009-00001.parquet")
    assert st.load().equals(expected)
    rep = st.ingest(events([MIDNIGHT + 2 * DAY]), source_id="next")
    assert sorted(rep.removed_orphans) == sorted([
        "_staging", f".{MANIFEST_NAME}.zz.tmp",
        "venue=binance-futures/symbol=BTCUSDT/date=2024-08-09/part-dead-000009-00000.parquet",
        "venue=binance-futures/symbol=BTCUSDT/date=2024-09-01/part-dead-000009-00001.parquet"])
    assert not (tmp_path / "_staging").exists() and not orphan_dir.exists()
    assert st.load().num_rows == 5
    assert st.vacuum() == []


def test_second_source_in_same_partition_adds_rows(tmp_path):
    st = Store(tmp_path)
    st.ingest(events(MIDNIGHT + np.array([1, 3, 5]), price=[10, 30, 50]), source_id="a")
    st.ingest(events(MIDNIGHT + np.array([2, 3, 4]), price=[20, 31, 40]), source_id="b")
    got = st.load()
    assert got.column("ts_local").to_pylist() == (MIDNIGHT + np.array([1, 2, 3, 3, 4, 5])).tolist()
    assert got.column("price").to_pylist() == [10, 20, 30, 31, 40, 50]  # tie: ingest order
    (p,) = st.partitions()
    assert (p["files"], p["events"]) == (2, 6)
    assert st.info()[0]["sources"] == 2
    assert st.load(start=MIDNIGHT + 3, end=MIDNIGHT + 4).column("price").to_pylist() == [30, 31]


def test_chunked_ingest_equals_whole(tmp_path):
    ts = MIDNIGHT - DAY // 2 + np.arange(30) * (DAY // 20)
    t = events(ts)
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    a.ingest(t, source_id="s")
    b.ingest((t.slice(i, 7) for i in range(0, 30, 7)), source_id="s")
    assert a.load().equals(b.load())
    assert sum(p["files"] for p in b.partitions()) > sum(p["files"] for p in a.partitions())
    reader = pa.RecordBatchReader.from_batches(t.schema, t.to_batches(max_chunksize=4))
    c = Store(tmp_path / "c")
    c.ingest(reader, source_id="s")
    assert c.load().equals(a.load())


def test_corrupt_or_missing_manifest_is_a_clear_error(tmp_path):
    st = Store(tmp_path)
    with pytest.raises(StoreError, match="no gpuflow store here"):
        st.load(symbol="BTCUSDT")
    st.ingest(events([MIDNIGHT]), source_id="a")
    path = tmp_path / MANIFEST_NAME
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    with pytest.raises(StoreError, match=r"_manifest\.json: manifest is corrupt \(not valid JSON"):
        st.load()
    with pytest.raises(StoreError, match="manifest is corrupt"):
        st.ingest(events([MIDNIGHT + 1]), source_id="b")
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreError, match="not a gpuflow store manifest"):
        st.load()
    m = json.loads(good)
    m["files"] = []
    path.write_text(json.dumps(m))
    with pytest.raises(StoreError, match="manifest field 'files' is list, expected dict"):
        st.info()
    path.unlink()
    with pytest.raises(StoreError, match="manifest missing, but the store holds data folders"):
        st.load()
    with pytest.raises(StoreError, match="manifest missing"):
        st.ingest(events([MIDNIGHT + 1]), source_id="b")
    path.write_text(good)
    (rel,) = json.loads(good)["files"]
    (tmp_path / rel).unlink()
    with pytest.raises(StoreError, match="file listed in the manifest is missing"):
        st.load()
    with pytest.raises(StoreError, match="is a file"):
        Store(path)


def test_lock_excludes_a_second_writer(tmp_path):
    st = Store(tmp_path)
    st.ingest(events([MIDNIGHT]), source_id="a")
    lock = tmp_path / "_lock"
    import socket

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(StoreError, match=r"locked by another writer \(pid \d+ on .*lock file .*_lock\)"):
        st.ingest(events([MIDNIGHT + 1]), source_id="b")
    assert lock.exists()  # someone else's lock is left alone
    # a lock left by a process that died is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    assert st.ingest(events([MIDNIGHT + 1]), source_id="b").events == 1
    assert not lock.exists()


def test_instrument_mismatch_and_schema_errors(tmp_path):
    st = Store(tmp_path)
    st.ingest(events([MIDNIGHT]), source_id="a")
    other = INS.with_(tick_size="0.01")
    with pytest.raises(StoreError, match=r"tick_size='0.01'.*store holds it with tick_size='0.10'"):
        st.ingest(events([MIDNIGHT + 1], ins=other), source_id="b")
    with pytest.raises(SchemaError, match="no gpuflow instrument metadata"):
        st.ingest(events([MIDNIGHT + 1]).replace_schema_metadata(None), source_id="c")
    with pytest.raises(StoreError, match="source_id must be a non-empty string"):
        st.ingest(events([MIDNIGHT + 1]), source_id="")
    assert sorted(st.sources()) == ["a"]


def test_load_selection_errors(tmp_path):
    st = Store(tmp_path)
    st.ingest(events([MIDNIGHT]), source_id="a")
    st.ingest(events([MIDNIGHT], ins=INS.with_(venue="binance")), source_id="b")
    st.ingest(events([MIDNIGHT], ins=INS.with_(symbol="ETHUSDT")), source_id="c")
    with pytest.raises(StoreError, match="matches several instruments"):
        st.load(symbol="BTCUSDT")
    with pytest.raises(StoreError, match="no data for venue=None, symbol='XRPUSDT'; the store holds "
                                         "binance/BTCUSDT, binance-futures/BTCUSDT, binance-futures/ETHUSDT"):
        st.load(symbol="XRPUSDT")
    assert instrument_of(st.load(venue="binance", symbol="BTCUSDT")).venue == "binance"
    assert st.load(symbol="ETHUSDT").num_rows == 1
    with pytest.raises(GpuflowError, match="as_='pandas'"):
        st.load(symbol="ETHUSDT", as_="pandas")
    with pytest.raises(SchemaError, match="unknown column"):
        st.load(symbol="ETHUSDT", columns=["px"])
    with pytest.raises(GpuflowError, match="start='yesterday-ish' is not a time"):
        st.load(symbol="ETHUSDT", start="yesterday-ish")
    try:
        import cudf  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="needs cudf"):
            st.load(symbol="ETHUSDT", as_="cudf")
    assert len(st.info()) == 3


def test_quarantine_is_stored_with_its_source(tmp_path):
    t = events(MIDNIGHT + np.array([1, 2, 2, 3]), price=[10, 11, 11, 12])
    t = t.set_column(5, "price", pa.array([10, 11, 11, 12], pa.int64()))
    dup = pa.concat_tables([t, t.slice(1, 1)])
    rej = rejected_table("f.gz", [99], "malformed_line", "line", "bad json", ["{oops"])
    res = clean(ReadResult(tables=[dup], rejected=rej, source="f.gz"), rules=["duplicates"])
    st = Store(tmp_path)
    rep = st.ingest(res, source_id="f")
    assert rep.quarantined == res.quarantine.num_rows == 2
    assert st.load().num_rows == res.table.num_rows
    q = st.load_quarantine()
    assert q.equals(res.quarantine)
    assert st.load_quarantine("f").num_rows == 2
    assert any(p.startswith("_quarantine/") for p in tree(tmp_path))
    with pytest.raises(StoreError, match="source 'nope' is not in the store"):
        st.load_quarantine("nope")
    # an extra quarantine table is stored too
    st2 = Store(tmp_path / "s2")
    st2.ingest(t, source_id="g", quarantine=rej)
    assert st2.load_quarantine().column("rule").to_pylist() == ["malformed_line"]


def test_replace_swaps_a_source(tmp_path):
    st = Store(tmp_path)
    st.ingest(events(MIDNIGHT + np.arange(3)), source_id="a")
    old_files = set(tree(tmp_path))
    rep = st.ingest(events(MIDNIGHT + DAY + np.arange(2)), source_id="a", replace=True)
    assert rep.replaced and rep.events == 2
    assert st.load().column("ts_local").to_pylist() == (MIDNIGHT + DAY + np.arange(2)).tolist()
    left = set(tree(tmp_path))
    assert not any("date=2024-08-09" in p for p in left)
    assert (old_files - {MANIFEST_NAME}) & left == set()  # every part file is new


def test_fingerprint(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    a = fingerprint(p)
    assert len(a) == 64 and a == fingerprint(str(p))
    assert fingerprint(p, fmt="binance") != a
    assert fingerprint(p, fmt="binance", x=1) == fingerprint(p, x=1, fmt="binance")
    p.write_bytes(b"abd")
    assert fingerprint(p) != a
    with pytest.raises(StoreError, match="cannot read source file"):
        fingerprint(tmp_path / "missing.gz")


def test_empty_input_is_recorded(tmp_path):
    st = Store(tmp_path)
    rep = st.ingest(events([]), source_id="empty")
    assert rep.events == 0 and rep.files == []
    assert st.ingest(events([]), source_id="empty").skipped
    assert st.load(symbol="BTCUSDT").num_rows == 0
    assert st.load(symbol="BTCUSDT").schema.remove_metadata() == EVENTS
