"""Book reconstruction against independent oracles: LOBSTER orderbook files and Binance bookTicker."""
from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pytest

from gpuflow.schema import KIND_SET
from gpuflow.sync import compare_book_ticker, synced_order
from gpuflow.verify import verify_binance, verify_lobster

LOBSTER = ["AAPL_2012-06-21_34200000_57600000_message_1.csv.gz",
           "GOOG_2012-06-21_34200000_57600000_message_1.csv.gz",
           "GOOG_2012-06-21_34200000_57600000_message_5.csv.gz",
           "GOOG_2012-06-21_34200000_57600000_message_10.csv.gz"]


@pytest.mark.parametrize("name", LOBSTER)
def test_lobster_every_row_every_level(shared_data, name):
    r = verify_lobster(shared_data / "lobster" / name)
    n_levels = int(name.split("_")[-1].split(".")[0])
    rows = {"AAPL": 118_497, "GOOG": {1: 49_482, 5: 112_673, 10: 147_916}[n_levels]}[name[:4]]
    assert r.rows == rows - 1
    assert r.levels_checked == r.rows * 2 * n_levels
    assert r.mismatched_rows == 0, r.first_mismatches
    assert 0 < r.levels_entered < r.levels_checked
    assert r.ok


def _lobster_copy(src, dst, edit_row, edit):
    lines = gzip.open(src, "rt").read().splitlines()
    f = lines[edit_row].split(",")
    edit(f)
    lines[edit_row] = ",".join(f)
    with gzip.open(dst, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


def test_lobster_detects_a_wrong_size(shared_data, tmp_path):
    name = LOBSTER[1]
    msg = tmp_path / name
    ob = tmp_path / name.replace("message", "orderbook")
    ob.write_bytes((shared_data / "lobster" / name.replace("message", "orderbook")).read_bytes())
    # row 100 of GOOG level 1: change the size of the message; the replay must disagree with the book there

    def bump(f):
        f[3] = str(int(f[3]) + 1)

    _lobster_copy(shared_data / "lobster" / name, msg, 100, bump)
    r = verify_lobster(msg)
    assert r.mismatched_rows >= 1
    assert r.first_mismatches[0]["row"] == 100
    assert not r.ok


def test_lobster_row_count_mismatch_is_an_error(shared_data, tmp_path):
    from gpuflow.errors import SchemaError

    name = LOBSTER[1]
    with pytest.raises(SchemaError, match="orderbook rows but .* messages"):
        verify_lobster(shared_data / "lobster" / name,
                       shared_data / "lobster" / LOBSTER[0].replace("message", "orderbook"))


@pytest.mark.parametrize("files", [["usdm/btcusdt_20240808.gz"], ["spot/btcusdt_20240808.gz"],
                                   ["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"]])
def test_binance_book_ticker(shared_data, files):
    r = verify_binance([shared_data / "binance" / f for f in files])
    assert r.mismatches == 0, r.first_mismatches
    assert r.checked > 500
    assert r.gaps == 0
    assert r.ok


def test_binance_continuation_file_alone_cannot_sync(shared_data):
    r = verify_binance(shared_data / "binance" / "spot" / "btcusdt_20240809.gz")
    assert r.checked == 0 and not r.ok
    assert "no snapshot" in r.first_mismatches[0]["error"]


def _usdm(shared_data):
    from gpuflow.io.binance import read_binance

    return read_binance(shared_data / "binance" / "usdm" / "btcusdt_20240808.gz").tables[0]


def test_binance_detects_a_corrupted_level(shared_data):
    t = _usdm(shared_data)
    r0 = compare_book_ticker(t)
    assert r0.ok
    # double the size of every level set at the best bid price of the last bookTicker: the book must disagree
    kind = t.column("kind").to_numpy()
    qty = t.column("qty").to_numpy().copy()
    price = t.column("price").to_numpy()
    side = t.column("side").to_numpy()
    target = np.nonzero((kind == KIND_SET) & (side > 0) & (qty > 0))[0][-50:]
    qty[target] += 7
    bad = t.set_column(t.column_names.index("qty"), "qty", pa.array(qty))
    r = compare_book_ticker(bad)
    assert r.mismatches > 0
    assert price[target].size


def test_binance_gap_is_counted_and_resynced_only_by_a_snapshot(shared_data):
    t = _usdm(shared_data)
    from gpuflow.schema import KIND_DIFF

    kind = t.column("kind").to_numpy()
    diffs = np.nonzero(kind == KIND_DIFF)[0]
    # drop one diff message in the middle (its marker and levels): a gap in the pu chain
    k = diffs.size // 2
    drop = np.arange(diffs[k], diffs[k + 1])
    keep = np.setdiff1d(np.arange(t.num_rows), drop)
    gapped = t.take(pa.array(keep))
    order, applied, info = synced_order(gapped)
    assert info.gaps == 1
    assert info.gap_rows == [int(diffs[k + 1] - drop.size)]  # the first diff after the dropped one
    assert info.applied < diffs.size // 2 + 10  # nothing after the gap is applied (no later snapshot)
    r = compare_book_ticker(gapped)
    assert r.gaps == 1 and r.mismatches == 0 and r.unsynced > 1000
