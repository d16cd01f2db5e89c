"""What every online store must do, checked through FeatureStore and the store interface."""

from __future__ import annotations

import math
import random
import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest
from conftest import NOW, OnlineWorld

from tiffin import FieldStatus
from tiffin.errors import EntityDataFrameError, EntityValueError, FeatureNotFoundError
from tiffin.online.base import PairRows
from tiffin.online.reader import MAX_KEYS_PER_READ

P, NV, NF, OLD = (FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.NOT_FOUND,
                  FieldStatus.OUTSIDE_MAX_AGE)


def test_write_then_read_every_type(world):
    ts_value = NOW - timedelta(days=3)
    row = {"driver_id": 1, "__event_ts": NOW - timedelta(minutes=5), "i32": -7, "i64": 2**40,
           "f32": 0.5, "f64": 1.25, "s": "héllo", "b": True, "raw": b"\x00\xff",
           "ts": ts_value, "ai64": [1, None, 3], "as": ["a", "b"], "af64": []}
    world.write("driver_stats", [row])
    names = ["i32", "i64", "f32", "f64", "s", "b", "raw", "ts", "ai64", "as", "af64"]
    resp = world.read([f"driver_stats:{n}" for n in names], [{"driver_id": 1}])
    got = resp.to_dict()
    assert got == {"driver_id": [1], "i32": [-7], "i64": [2**40], "f32": [0.5], "f64": [1.25],
                   "s": ["héllo"], "b": [True], "raw": [b"\x00\xff"], "ts": [ts_value],
                   "ai64": [[1, None, 3]], "as": [["a", "b"]], "af64": [[]]}
    assert all(resp.statuses[n] == [P] for n in names)
    assert resp.event_timestamps("i32") == [NOW - timedelta(minutes=5)]
    # Arrow and pandas forms carry the declared types.
    table = resp.to_arrow()
    assert str(table.schema.field("f32").type) == "float"
    assert resp.to_df()["s"].tolist() == ["héllo"]


def test_edge_values_round_trip_exactly(world):
    # Values a store's encoding could bend: non-finite floats, the ends of Int64,
    # empty text and bytes, and doubles that need all 17 digits.
    rows = [
        {"driver_id": 1, "__event_ts": NOW, "f64": math.nan, "f32": math.inf,
         "i64": 2**63 - 1, "s": "", "raw": b"", "af64": [math.nan, -math.inf, 0.1 + 0.2]},
        {"driver_id": 2, "__event_ts": NOW, "f64": -0.0, "f32": -math.inf,
         "i64": -2**63, "s": "a|b\\c\u00e9\U0001f600", "raw": b"\xc0\x00", "af64": [None]},
    ]
    world.write("driver_stats", rows)
    names = ["f64", "f32", "i64", "s", "raw", "af64"]
    got = world.read([f"driver_stats:{n}" for n in names],
                     [{"driver_id": 1}, {"driver_id": 2}]).to_dict()
    assert math.isnan(got["f64"][0]) and got["f64"][1] == 0.0  # SQLite drops zero's sign
    assert got["f32"] == [math.inf, -math.inf]
    assert got["i64"] == [2**63 - 1, -2**63]
    assert got["s"] == ["", "a|b\\c\u00e9\U0001f600"]
    assert got["raw"] == [b"", b"\xc0\x00"]
    first = got["af64"][0]
    assert math.isnan(first[0]) and first[1:] == [-math.inf, 0.1 + 0.2]
    assert got["af64"][1] == [None]


@pytest.mark.parametrize("reconnect", [False, True])
def test_a_nan_written_by_another_client_is_read_as_nan(world, reconnect):
    # A reader that has already answered (and cached what it needs) sees a NaN written
    # by another client of the same store, also after closing and reconnecting.
    from tiffin import FeatureStore
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "f64": 1.0}])
    assert world.read(["driver_stats:f64"], [{"driver_id": 1}]).to_dict()["f64"] == [1.0]
    if reconnect:
        world.store.online_store.close()
    other = FeatureStore(repo_path=world.tmp, config=world.config)
    try:
        view = other.get_feature_view("driver_stats")
        from tiffin.offline.base import online_batch_schema
        schema = online_batch_schema(view)
        row = {"driver_id": 1, "__event_ts": NOW + timedelta(seconds=1), "f64": math.nan}
        other.online_store.write(view, pa.RecordBatch.from_pydict(
            {f.name: [row.get(f.name)] for f in schema}, schema=schema))
    finally:
        other.close()
    got = world.read(["driver_stats:f64"], [{"driver_id": 1}])
    assert math.isnan(got.to_dict()["f64"][0]) and got.statuses["f64"] == [P]


def test_rows_holding_bytes_and_arrays_are_rewritten_monotonically(world):
    # The monotonic check must read the stored row whatever its values hold.
    first = {"driver_id": 1, "__event_ts": NOW - timedelta(minutes=2), "raw": b"\x00old",
             "as": ["a"], "i64": 1}
    world.write("driver_stats", [first, {"driver_id": 2, "__event_ts": NOW, "raw": b"x"}])
    world.write("driver_stats", [
        {"driver_id": 1, "__event_ts": NOW - timedelta(minutes=1), "raw": b"\xffnew",
         "as": ["b"], "i64": 2},
        {"driver_id": 2, "__event_ts": NOW - timedelta(minutes=5), "raw": b"older"}])
    got = world.read(["driver_stats:raw", "driver_stats:as", "driver_stats:i64"],
                     [{"driver_id": 1}, {"driver_id": 2}]).to_dict()
    assert got["raw"] == [b"\xffnew", b"x"] and got["as"] == [["b"], None]
    assert got["i64"] == [2, None]


def test_unknown_key_is_not_found_and_stored_null_is_null_value(world):
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "i64": None, "s": "x"}])
    resp = world.read(["driver_stats:i64", "driver_stats:s"], [{"driver_id": 1}, {"driver_id": 2}])
    assert resp.to_dict() == {"driver_id": [1, 2], "i64": [None, None], "s": ["x", None]}
    assert resp.statuses == {"i64": [NV, NF], "s": [P, NF]}
    # The server's JSON names, computed per view: the same answer
    assert {n: resp.status_names(n) for n in ("i64", "s")} == {
        n: [x.name for x in v] for n, v in resp.statuses.items()}


@pytest.mark.parametrize("age, expected_status", [
    (timedelta(hours=1, minutes=59), P),
    (timedelta(hours=2, minutes=1), OLD),
    (timedelta(days=400), OLD),
])
def test_ttl_is_enforced_on_read(world, age, expected_status):
    # Aged from now, not from NOW (taken at import): a long run must not age the row.
    now = datetime.now(timezone.utc)
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": now - age, "i64": 5}])
    resp = world.read(["driver_stats:i64"], [{"driver_id": 1}])
    assert resp.statuses["i64"] == [expected_status]
    assert resp.status_names("i64") == [expected_status.name]
    assert resp.to_dict()["i64"] == ([5] if expected_status == P else [None])


def test_every_status_in_one_answer(world):
    world.write("driver_stats", [
        {"driver_id": 1, "__event_ts": NOW, "i64": None, "s": "fresh"},
        {"driver_id": 2, "__event_ts": NOW - timedelta(hours=3), "i64": 7, "s": "old"},
        {"driver_id": 3, "__event_ts": NOW, "i64": 9, "s": None}])
    rows = {"driver_id": [1, 2, 3, 4, 3, None]}
    resp = world.read(["driver_stats:i64", "driver_stats:s"], rows)
    assert resp.to_dict() == {"driver_id": [1, 2, 3, 4, 3, None],
                              "i64": [None, None, 9, None, 9, None],
                              "s": ["fresh", None, None, None, None, None]}
    assert resp.statuses == {"i64": [NV, OLD, P, NF, P, NF], "s": [P, OLD, NV, NF, NV, NF]}
    assert {n: resp.status_names(n) for n in ("i64", "s")} == {
        n: [x.name for x in v] for n, v in resp.statuses.items()}
    times = resp.event_timestamps("i64")
    assert times[3] is None and times[5] is None and times[1] == NOW - timedelta(hours=3)


def test_view_without_ttl_never_expires(world):
    world.write("customer_stats", [{"customer_id": "c1", "__event_ts": NOW - timedelta(days=3650),
                                    "spend": 9.5, "tier": "gold"}])
    resp = world.read(["customer_stats:spend"], [{"customer_id": "c1"}])
    assert resp.to_dict()["spend"] == [9.5] and resp.statuses["spend"] == [P]


@pytest.mark.parametrize("first, second, winner", [
    # (event offset minutes, created offset minutes) pairs; later write loses unless newer
    ((0, 0), (-10, 0), "first"),       # older event never overwrites a newer one
    ((-10, 0), (0, 0), "second"),      # newer event wins
    ((0, 5), (0, 1), "first"),         # same event, older created: ignored
    ((0, 1), (0, 5), "second"),        # same event, newer created: replaces
])
def test_writes_are_monotonic_in_event_time(world, first, second, winner):
    def row(offsets, value):
        ev, cr = offsets
        return {"driver_id": 1, "__event_ts": NOW + timedelta(minutes=ev - 30),
                "__created_ts": NOW + timedelta(minutes=cr), "i64": value}
    world.write("driver_stats", [row(first, 1)])
    world.write("driver_stats", [row(second, 2)])
    assert world.read(["driver_stats:i64"], [{"driver_id": 1}]).to_dict()["i64"] == \
        [1 if winner == "first" else 2]


def test_monotonic_within_one_batch(world):
    world.write("driver_stats", [
        {"driver_id": 1, "__event_ts": NOW, "i64": 1},
        {"driver_id": 1, "__event_ts": NOW - timedelta(minutes=1), "i64": 2},
    ])
    assert world.read(["driver_stats:i64"], [{"driver_id": 1}]).to_dict()["i64"] == [1]


def test_features_come_back_in_request_order_across_views(world):
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "i64": 10, "s": "d"}])
    world.write("customer_stats", [{"customer_id": "c", "__event_ts": NOW, "spend": 1.5,
                                    "tier": "t"}])
    feats = ["customer_stats:tier", "driver_stats:i64", "customer_stats:spend", "driver_stats:s"]
    got = world.read(feats, [{"driver_id": 1, "customer_id": "c"}]).to_dict()
    assert list(got) == ["driver_id", "customer_id", "tier", "i64", "spend", "s"]
    full = world.read(feats, [{"driver_id": 1, "customer_id": "c"}], full_feature_names=True)
    assert list(full.to_dict())[2:] == ["customer_stats__tier", "driver_stats__i64",
                                        "customer_stats__spend", "driver_stats__s"]


def test_every_entity_column_sent_comes_back_in_the_callers_order(world):
    # As Feast: a join key of another entity of the project, used by no requested
    # feature, is returned too (not looked up), where the caller put it; a column that
    # is no entity's join key is not.
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "i64": 10}])
    rows = [{"customer_id": "c", "driver_id": 1, "note": "x"},
            {"customer_id": None, "driver_id": 2, "note": "y"}]
    resp = world.read(["driver_stats:i64"], rows)
    assert resp.to_dict() == {"customer_id": ["c", None], "driver_id": [1, 2], "i64": [10, None]}
    assert resp.feature_names == ["customer_id", "driver_id", "i64"]
    assert list(resp.to_df().columns) == ["customer_id", "driver_id", "i64"]
    assert resp.to_arrow().column("customer_id").to_pylist() == ["c", None]
    as_cols = world.read(["driver_stats:i64"], {"driver_id": [1], "customer_id": ["c"]})
    assert list(as_cols.to_dict()) == ["driver_id", "customer_id", "i64"]
    as_df = world.read(["driver_stats:i64"], pd.DataFrame({"customer_id": ["c"],
                                                           "driver_id": [1]}))
    assert as_df.to_dict() == {"customer_id": ["c"], "driver_id": [1], "i64": [10]}
    full = world.read(["driver_stats:i64"], rows[:1], full_feature_names=True)
    assert list(full.to_dict()) == ["customer_id", "driver_id", "driver_stats__i64"]
    # Statuses are the features' only: the echoed columns are not read from the store.
    assert list(resp.statuses) == ["i64"] and resp.statuses["i64"] == [P, NF]


def test_an_echoed_entity_column_is_checked_like_a_join_key(world):
    with pytest.raises(EntityValueError, match="customer_id.*String.*int"):
        world.read(["driver_stats:i64"], [{"driver_id": 1, "customer_id": 5}])
    # Sent in the first row only: the later rows lack it, which is bad input, not a null.
    with pytest.raises(EntityDataFrameError, match="missing join key 'customer_id'.*row 1"):
        world.read(["driver_stats:i64"], [{"driver_id": 1, "customer_id": "c"},
                                          {"driver_id": 2}])


def test_composite_keys(world):
    world.write("pair_stats", [
        {"driver_id": 1, "customer_id": "a", "__event_ts": NOW, "trips": 3},
        {"driver_id": 1, "customer_id": "b", "__event_ts": NOW, "trips": 4},
        {"driver_id": 2, "customer_id": "a", "__event_ts": NOW, "trips": 5},
    ])
    rows = {"driver_id": [1, 2, 1, 2], "customer_id": ["b", "a", "a", "b"]}
    resp = world.read(["pair_stats:trips"], rows)
    assert resp.to_dict()["trips"] == [4, 5, 3, None]
    assert resp.statuses["trips"] == [P, P, P, NF]


def test_duplicate_rows_and_row_shapes_agree(world):
    world.write("driver_stats", [{"driver_id": d, "__event_ts": NOW, "i64": d * 10}
                                 for d in (1, 2)])
    as_list = world.read(["driver_stats:i64"], [{"driver_id": 2}, {"driver_id": 1},
                                                {"driver_id": 2}]).to_dict()
    as_cols = world.read(["driver_stats:i64"], {"driver_id": [2, 1, 2]}).to_dict()
    as_df = world.read(["driver_stats:i64"], pd.DataFrame({"driver_id": [2, 1, 2]})).to_dict()
    assert as_list == as_cols == as_df == {"driver_id": [2, 1, 2], "i64": [20, 10, 20]}


def test_many_keys_are_read_in_bounded_chunks(world):
    n = MAX_KEYS_PER_READ * 2 + 17
    world.write("driver_stats", [{"driver_id": d, "__event_ts": NOW, "i64": d} for d in range(n)])
    ids = list(range(n + 5))
    got = world.read(["driver_stats:i64"], {"driver_id": ids}).to_dict()["i64"]
    assert got == list(range(n)) + [None] * 5


def test_rows_answer_their_keys_in_order_with_repeats_misses_and_null_keys(world):
    # Stores answer row for row (no key is matched back in Python), so order matters:
    # shuffled keys, repeats, keys without a row and null keys, across read chunks.
    rng = random.Random(5)
    world.write("driver_stats", [{"driver_id": d, "__event_ts": NOW, "i64": d * 3}
                                 for d in range(0, 600, 2)])
    ids = [rng.randrange(-50, 650) for _ in range(MAX_KEYS_PER_READ + 500)] + [None, 8, None]
    rng.shuffle(ids)

    def stored(d):
        return d * 3 if d is not None and 0 <= d < 600 and d % 2 == 0 else None

    resp = world.read(["driver_stats:i64"], {"driver_id": ids})
    assert resp.to_dict()["i64"] == [stored(d) for d in ids]
    assert resp.statuses["i64"] == [NF if stored(d) is None else P for d in ids]

    # The store interface itself: one row per key, (event time, values...) or no row.
    keys = [(d,) for d in ids if d is not None][:300]
    rows = world.store.online_store.read(world.view("driver_stats"), keys, ["i64"])
    assert len(rows) == len(keys)
    # Flat (event time, i64) rows, or (event time, (i64,)) pairs from a PairRows store.
    pairs = isinstance(rows, PairRows)
    assert [None if r is None or r[0] is None else r[1][0] if pairs else r[1]
            for r in rows] == [stored(k[0]) for k in keys]

    world.write("pair_stats", [{"driver_id": d, "customer_id": c, "__event_ts": NOW,
                                "trips": d * 10 + ord(c)} for d in range(20) for c in "ab"])
    pairs = [(rng.randrange(-2, 22), rng.choice("abc")) for _ in range(400)]
    got = world.read(["pair_stats:trips"], {"driver_id": [d for d, _ in pairs],
                                            "customer_id": [c for _, c in pairs]})
    assert got.to_dict()["trips"] == [d * 10 + ord(c) if 0 <= d < 20 and c != "c" else None
                                      for d, c in pairs]


def test_bad_entity_input_is_a_clear_request_error(world):
    with pytest.raises(EntityValueError, match="driver_id.*Int64.*str"):
        world.read(["driver_stats:i64"], [{"driver_id": "1"}])
    with pytest.raises(EntityDataFrameError, match="missing join key 'driver_id'") as e:
        world.read(["driver_stats:i64"], [{"driver": 1}])
    assert isinstance(e.value, ValueError)
    with pytest.raises(FeatureNotFoundError, match="did you mean 'driver_stats:i64'"):
        world.read(["driver_stats:i46"], [{"driver_id": 1}])


def test_teardown_removes_data_and_reads_stay_safe(world):
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "i64": 1}])
    view = world.view("driver_stats")
    world.store.online_store.teardown([view])
    resp = world.read(["driver_stats:i64"], [{"driver_id": 1}])
    assert resp.statuses["i64"] == [NF]
    world.store.online_store.prepare([view], [])  # prepare is idempotent and recreates
    world.store.online_store.prepare([view], [])
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "i64": 2}])
    assert world.read(["driver_stats:i64"], [{"driver_id": 1}]).to_dict()["i64"] == [2]


def _micros(t):
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def test_newest_event_time_is_kept_per_view_across_writers_and_teardown(world):
    # Freshness from event time: the newest event ever written, whatever wrote it,
    # never moved back by an older batch, and gone with the view's data.
    from tiffin import FeatureStore
    from tiffin.offline.base import online_batch_schema
    online = world.store.online_store
    views = [world.view(n) for n in ("driver_stats", "customer_stats", "pair_stats")]
    assert online.newest_event_times(views) == {}
    # The newest row sits mid-batch, past the first 500 (Redis writes in chunks of 500).
    world.write("driver_stats", [{"driver_id": k, "__event_ts": NOW - timedelta(
        minutes=0 if k == 700 else 1 + k % 50)} for k in range(1200)])
    world.write("driver_stats", [{"driver_id": 9, "__event_ts": NOW - timedelta(hours=5)}])
    assert online.newest_event_times(views) == {"driver_stats": _micros(NOW)}
    other = FeatureStore(repo_path=world.tmp, config=world.config)
    try:  # another client of the same store writes a newer event
        view = other.get_feature_view("customer_stats")
        schema = online_batch_schema(view)
        later = NOW + timedelta(seconds=7, microseconds=5)
        other.online_store.write(view, pa.RecordBatch.from_pydict(
            {"customer_id": ["c"], "__event_ts": [later], "__created_ts": [None],
             "spend": [1.0], "tier": ["t"]}, schema=schema))
    finally:
        other.close()
    assert online.newest_event_times(views) == {"driver_stats": _micros(NOW),
                                                "customer_stats": _micros(later)}
    assert online.newest_event_times(views[:1]) == {"driver_stats": _micros(NOW)}
    online.teardown(views[:1])
    assert online.newest_event_times(views) == {"customer_stats": _micros(later)}
    online.prepare(views[:1], [])
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW - timedelta(days=1)}])
    assert online.newest_event_times(views)["driver_stats"] == \
        _micros(NOW - timedelta(days=1))


def test_adding_a_feature_keeps_existing_rows(world, online_backend):
    from tiffin import Field
    from tiffin.types import Int64
    world.write("customer_stats", [{"customer_id": "c", "__event_ts": NOW, "spend": 2.0,
                                    "tier": "t"}])
    pq_path = world.tmp / "customers.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = pq.read_schema(pq_path).append(pa.field("visits", pa.int64()))
    pq.write_table(schema.empty_table(), pq_path)
    view = world.customer_stats
    view.schema = list(view.schema) + [Field(name="visits", dtype=Int64)]
    world.store.apply([view])
    resp = world.read(["customer_stats:spend", "customer_stats:visits"], [{"customer_id": "c"}])
    assert resp.to_dict() == {"customer_id": ["c"], "spend": [2.0], "visits": [None]}
    assert resp.statuses == {"spend": [P], "visits": [NV]}


def test_rows_from_before_and_after_a_new_array_feature_read_together(world):
    # One answer mixes a row written before the view gained a feature (it reads null)
    # and one written after (its array comes back as a list).
    import pyarrow.parquet as pq

    from tiffin import Field
    from tiffin.types import Array, Int64
    world.write("customer_stats", [{"customer_id": "old", "__event_ts": NOW, "spend": 1.0,
                                    "tier": "a"}])
    pq_path = world.tmp / "customers.parquet"
    schema = pq.read_schema(pq_path).append(pa.field("tags", pa.list_(pa.int64())))
    pq.write_table(schema.empty_table(), pq_path)
    view = world.customer_stats
    view.schema = list(view.schema) + [Field(name="tags", dtype=Array(Int64))]
    world.store.apply([view])
    world.write("customer_stats", [{"customer_id": "new", "__event_ts": NOW, "spend": 2.0,
                                    "tier": "b", "tags": [1, 2]}])
    feats = ["customer_stats:tags", "customer_stats:spend", "customer_stats:tier"]
    for features in (feats, feats[:1]):
        resp = world.read(features, [{"customer_id": "new"}, {"customer_id": "old"},
                                     {"customer_id": "none"}])
        got = resp.to_dict()
        assert got["tags"] == [[1, 2], None, None] and type(got["tags"][0]) is list
        assert resp.statuses["tags"] == [P, NV, NF]
        if len(features) > 1:
            assert got["spend"] == [2.0, 1.0, None] and got["tier"] == ["b", "a", None]


def test_concurrent_readers_never_see_time_go_backwards(world):
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer():
        try:
            for i in range(200):
                world.write("driver_stats", [{"driver_id": k, "__event_ts": NOW + timedelta(
                    seconds=i), "i64": i} for k in range(5)])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            stop.set()

    def reader():
        last = -1
        try:
            while not stop.is_set():
                vals = world.read(["driver_stats:i64"], {"driver_id": list(range(5))}).to_dict()["i64"]
                seen = [v for v in vals if v is not None]
                if seen:
                    assert min(seen) >= last
                    last = max(last, min(seen))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert world.read(["driver_stats:i64"], [{"driver_id": 0}]).to_dict()["i64"] == [199]


def test_store_that_was_never_prepared_answers_not_found(tmp_path, online_backend):
    w = OnlineWorld(tmp_path, online_backend)
    w.store.online_store.teardown(w.store.list_feature_views())
    resp = w.read(["pair_stats:trips"], {"driver_id": [1], "customer_id": ["a"]})
    assert resp.statuses["trips"] == [NF]
    w.close()
