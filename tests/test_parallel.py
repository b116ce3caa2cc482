"""The elastic thread pool and the core share that stages running at once divide the cores with."""
from __future__ import annotations

import threading
import time

import pytest

from deepmetabin._parallel import CoreShare, elastic_map


def _tracker():
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "log": []}

    def fn(x):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["log"].append(state["now"])
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return x * x

    return fn, state


@pytest.mark.parametrize("threads", [1, 3])
def test_every_item_once_with_its_index(threads):
    fn, state = _tracker()
    out = dict(elastic_map(fn, range(20), threads))
    assert out == {i: i * i for i in range(20)}
    assert state["peak"] <= threads
    if threads > 1:
        assert state["peak"] > 1


def test_core_share_bounds_the_pool_and_hands_back_cores():
    share = CoreShare(3)
    fn, state = _tracker()
    with share.hold(2):
        assert share.free() == 1
        results = elastic_map(fn, range(40), share)
        first = [next(results) for _ in range(10)]
        assert state["peak"] == 1  # two of three cores held: one worker at a time
    rest = list(results)  # released: the other workers join in
    assert sorted(i for i, _ in first + rest) == list(range(40))
    assert state["peak"] >= 2
    assert share.free() == 3


def test_core_share_never_offers_less_than_one_core():
    share = CoreShare(2)
    with share.hold(2):
        assert share.free() == 1
    assert int(share) == 2


def test_an_error_in_a_worker_is_raised_and_stops_the_pool():
    seen = []

    def fn(x):
        seen.append(x)
        if x == 3:
            raise KeyError("boom")
        time.sleep(0.01)
        return x

    with pytest.raises(KeyError, match="boom"):
        list(elastic_map(fn, range(1000), 2))
    assert len(seen) < 1000
    assert not [t for t in threading.enumerate() if t.name.startswith("deepmetabin-pool")]
