"""Property tests of the book rebuild (hypothesis; CI runs them with -m "not gpu")."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuflow.book import rebuild_book
from gpuflow.schema import EMPTY_ASK_PRICE, EMPTY_BID_PRICE, FLAG_EOM, KIND_CLEAR, KIND_SET, KIND_TRADE, events_table

pytestmark = pytest.mark.hypothesis

row = st.tuples(st.sampled_from([KIND_SET, KIND_SET, KIND_SET, KIND_TRADE, KIND_CLEAR]),
                st.sampled_from([-1, 1]), st.integers(0, 15), st.integers(0, 6), st.booleans())


def _events(rows, consistent=False):
    a = np.array(rows, dtype=np.int64).reshape(-1, 5)
    kind, side, off, qty, eom = a.T
    # consistent streams keep bids below 50 and asks above: the book can never cross
    price = np.where(side > 0, 50 - off, 51 + off) if consistent else 40 + off
    eom = eom.astype(bool)
    if eom.size:
        eom[-1] = True
    return events_table({"ts_local": np.arange(len(a), dtype=np.int64), "kind": kind, "side": side, "price": price,
                         "qty": qty, "flags": np.where(eom, FLAG_EOM, 0)})


@settings(max_examples=60, deadline=None)
@given(st.lists(row, min_size=1, max_size=80))
def test_consistent_stream_never_crosses_and_sizes_are_positive(rows):
    f = rebuild_book(_events(rows, consistent=True), levels=3).to_host()
    has_both = (f.bid_price[:, 0] != EMPTY_BID_PRICE) & (f.ask_price[:, 0] != EMPTY_ASK_PRICE)
    assert (f.bid_price[has_both, 0] < f.ask_price[has_both, 0]).all()
    assert (f.bid_qty >= 0).all() and (f.ask_qty >= 0).all()
    # non-empty levels are strictly ordered away from the touch, and empty levels only follow them
    nb, na = f.bid_qty[:, 1:] > 0, f.ask_qty[:, 1:] > 0
    assert (np.diff(f.bid_price, axis=1)[nb] < 0).all() and (np.diff(f.ask_price, axis=1)[na] > 0).all()
    assert not ((f.bid_qty[:, :-1] == 0) & nb).any() and not ((f.ask_qty[:, :-1] == 0) & na).any()


@settings(max_examples=60, deadline=None)
@given(st.lists(row, min_size=2, max_size=80), st.integers(1, 79))
def test_replaying_in_pieces_equals_replaying_the_whole(rows, cut):
    ev = _events(rows)
    cut = min(cut, ev.num_rows - 1)
    whole = rebuild_book(ev, levels=3, ofi=True).to_host()
    a = rebuild_book(ev.slice(0, cut), levels=3).to_host()
    b = rebuild_book(ev.slice(cut), levels=3, init=a.final_book).to_host()
    np.testing.assert_array_equal(np.concatenate([a.bid_price, b.bid_price]), whole.bid_price)
    np.testing.assert_array_equal(np.concatenate([a.ask_qty, b.ask_qty]), whole.ask_qty)
    for k in ("side", "price", "qty"):
        np.testing.assert_array_equal(b.final_book[k], whole.final_book[k])


@settings(max_examples=40, deadline=None)
@given(st.lists(row, min_size=2, max_size=60), st.integers(0, 58), st.lists(row, min_size=1, max_size=20))
def test_no_look_ahead(rows, t, tail_rows):
    """Outputs at rows <= t never change when the events after t are replaced."""
    ev = _events(rows)
    t = min(t, ev.num_rows - 1)
    other = _events(tail_rows)
    mixed = pa.concat_tables([ev.slice(0, t + 1), other.replace_schema_metadata(ev.schema.metadata)])
    f = rebuild_book(ev, levels=2, ofi=True, every=1).to_host()
    g = rebuild_book(mixed, levels=2, ofi=True, every=1).to_host()
    for a in ("bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(f, a)[: t + 1], getattr(g, a)[: t + 1], err_msg=a)


@settings(max_examples=15, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=40), chunk=st.integers(1, 9))
def test_cuda_twin_equals_cpu_twin(rows, chunk):
    from gpuflow.backend import get_backend

    device_backend = get_backend("gpu")  # the simulator in CI, the device with GPUFLOW_TEST_GPU=1
    ev = _events(rows)
    cpu = rebuild_book(ev, levels=2, ofi=True, every=0).to_host()
    gpu = rebuild_book(ev, levels=2, ofi=True, every=0, backend=device_backend, chunk=chunk).to_host()
    for a in ("index", "bid_price", "bid_qty", "ask_price", "ask_qty", "ofi"):
        np.testing.assert_array_equal(getattr(gpu, a), getattr(cpu, a), err_msg=a)
