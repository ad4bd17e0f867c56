"""The worker ⇄ agent record protocol: every kind survives JSON both ways, and
anything malformed becomes an Invalid record with a reason, never an exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dtagent.dtrace.records import (
    Drop,
    Histogram,
    Histograms,
    Invalid,
    Record,
    ScriptError,
    Status,
    Tick,
    Value,
    Values,
    combine,
    parse,
    per_key,
    to_json,
)

RECORDS: list[Record] = [
    Value("every", "calls", (3, "read"), 7),
    Value("every", "avglat", ("read",), (2, 30)),
    Histogram("every", "lat", (3,), ((None, 1), (1000, 2))),
    Drop("dynamic", 4),
    ScriptError("every", 2, "invalid address (0x0) in action #1"),
    Status("broken", "failed", "probe description does not match any probes"),
    Status("every", "running"),
    Tick(12, 1700000000.5),
    Values("every", "calls", ((3, "read"), (5, "write")), (7, 1)),
    Values("every", "avglat", (("read",),), ((2, 30),)),
    Histograms("every", "lat", ((3,), (0,)), ((None, 1, 1000, 2), (2000, 5))),
]


def test_every_kind_round_trips_through_a_json_line() -> None:
    for rec in RECORDS:
        line = json.dumps(to_json(rec))
        assert parse(json.loads(line)) == rec


def test_the_wire_format_is_the_bundle_format() -> None:
    assert to_json(RECORDS[0]) == {"script": "every", "agg": "calls", "key": [3, "read"],
                                   "value": 7}
    assert to_json(RECORDS[2])["buckets"] == [[None, 1], [1000, 2]]
    assert to_json(RECORDS[4])["error"] == "runtime"


def test_the_worker_writes_one_line_per_aggregation() -> None:
    """Every key of an aggregation in one record, values or flat lo, n buckets parallel
    to the keys (docs/bundle-dtrace.md, "Batched records")."""
    assert to_json(RECORDS[10]) == {"script": "every", "agg": "lat", "keys": [[3], [0]],
                                    "buckets": [[None, 1, 1000, 2], [2000, 5]]}
    assert per_key(RECORDS[10]) == [Histogram("every", "lat", (3,), ((None, 1), (1000, 2))),
                                    Histogram("every", "lat", (0,), ((2000, 5),))]
    assert per_key(RECORDS[8]) == [Value("every", "calls", (3, "read"), 7),
                                   Value("every", "calls", (5, "write"), 1)]
    # one-key records grouped back: the same records, per aggregation, in first place
    mixed = [*per_key(RECORDS[8]), RECORDS[3], *per_key(RECORDS[10]), RECORDS[0]]
    assert combine(mixed) == [
        Values("every", "calls", ((3, "read"), (5, "write"), (3, "read")), (7, 1, 7)),
        RECORDS[3], RECORDS[10]]


def test_malformed_batches_are_invalid_with_a_reason() -> None:
    def batch(**fields: object) -> dict[str, object]:
        return {"script": "s", "agg": "a", "keys": [[1]], **fields}

    cases = {
        "keys must be a list of keys (lists)": batch(keys=[1, 2], values=[1, 1]),
        "keys must all have the same length": batch(keys=[[1], [1, 2]], values=[1, 1]),
        "a key must be a list of integers and strings": batch(keys=[[True]], values=[1]),
        "values must be a list of one value per key": batch(values=[1, 2]),
        "values must be all integers or all [count, total]": batch(
            keys=[[1], [2]], values=[1, [1, 2]]),
        "buckets must be a list of one bucket list per key": batch(buckets=[1000, 1]),
        "a bucket list must be lo, n pairs": batch(buckets=[[1000, 1, 2000]]),
        "bucket lo must be an integer or null, n a count": batch(buckets=[[1000, -1]]),
    }
    for problem, obj in cases.items():
        rec = parse(obj)
        assert isinstance(rec, Invalid) and rec.problem == problem, (obj, rec)
    for lo in (1.5, "1000", True):
        assert isinstance(parse(batch(buckets=[[lo, 1]])), Invalid)


def test_malformed_records_are_invalid_with_a_reason() -> None:
    cases = {
        "not an object": [1, 2],
        "value must be an integer or [count, total]": {"script": "s", "agg": "a", "key": [],
                                                       "value": True},
        "bucket lo must be an integer or null, n a count": {
            "script": "s", "agg": "a", "key": [], "buckets": [[1000, -1]]},
        "drop kind 'Bad Kind'": {"drop": "Bad Kind", "count": 1},
        "status 'sleeping'": {"script": "s", "status": "sleeping"},
        "key must be a list of integers and strings": {"script": "s", "agg": "a",
                                                       "key": [1.5], "value": 1},
    }
    for problem, obj in cases.items():
        rec = parse(obj)
        assert isinstance(rec, Invalid) and rec.problem == problem, (obj, rec)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["script", "agg", "key", "keys", "value", "values", "buckets",
                         "drop", "count",
                         "error", "status", "message", "tick", "time"]), kids, max_size=6),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(JSONISH)
def test_parse_never_raises(obj: object) -> None:
    rec = parse(obj)
    if not isinstance(rec, Invalid):
        assert parse(json.loads(json.dumps(to_json(rec)))) == rec
