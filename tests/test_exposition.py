"""The renderer's output is what Prometheus's own parser reads back, sample for sample."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dtagent.exposition import Renderer, format_value, render
from dtagent.metrics import MetricFamily, MetricSpec

GAUGE = MetricSpec("t_gauge", "gauge", "A gauge.", ("zonename", "mode"))
COUNTER = MetricSpec("t_ops_total", "counter", "Ops.\nSecond line \\ here.", ("zonename",))
HIST = MetricSpec(
    "t_latency_seconds", "histogram", "Latency.", ("zonename",), buckets=(0.001, 0.01, 1.0)
)


def parse(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def test_gauge_counter_and_histogram_round_trip() -> None:
    g, c, h = GAUGE.family(), COUNTER.family(), HIST.family()
    g.add(("z1", "user"), 1.5)
    g.add(('we"ird\\zone\nname', "sys"), 2)
    c.add(("z1",), 42)
    h.add_histogram(("z1",), [1, 3, 7], 2.5, 9)
    text = render([g, c, h])
    assert b"# HELP t_ops_total Ops.\\nSecond line \\\\ here.\n" in text
    parsed = parse(text)
    assert parsed["t_gauge"] == [
        ("t_gauge", {"zonename": "z1", "mode": "user"}, 1.5),
        ("t_gauge", {"zonename": 'we"ird\\zone\nname', "mode": "sys"}, 2.0),
    ]
    assert parsed["t_ops"] == [("t_ops_total", {"zonename": "z1"}, 42.0)]
    assert parsed["t_latency_seconds"] == [
        ("t_latency_seconds_bucket", {"zonename": "z1", "le": "0.001"}, 1.0),
        ("t_latency_seconds_bucket", {"zonename": "z1", "le": "0.01"}, 3.0),
        ("t_latency_seconds_bucket", {"zonename": "z1", "le": "1.0"}, 7.0),
        ("t_latency_seconds_bucket", {"zonename": "z1", "le": "+Inf"}, 9.0),
        ("t_latency_seconds_sum", {"zonename": "z1"}, 2.5),
        ("t_latency_seconds_count", {"zonename": "z1"}, 9.0),
    ]


def test_empty_families_are_left_out() -> None:
    assert render([GAUGE.family(), HIST.family()]) == b""


def test_special_values() -> None:
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value(18446744073709551615) == "18446744073709551615"
    assert format_value(3.0) == "3"
    assert format_value(0.1) == "0.1"
    assert format_value(True) == "1"
    assert format_value(1e16) == "1e+16"


@given(
    st.lists(
        st.tuples(
            st.text(max_size=20),
            st.one_of(
                st.integers(min_value=-(2**63), max_value=2**64),
                st.floats(allow_nan=False, allow_infinity=True),
            ),
        ),
        max_size=20,
        unique_by=lambda t: t[0],
    )
)
def test_any_label_value_and_number_survives_parsing(samples: list[tuple[str, float]]) -> None:
    fam = MetricSpec("t_any", "gauge", "Any.", ("v",)).family()
    for label, value in samples:
        fam.add((label,), value)
    parsed = parse(render([fam])).get("t_any", [])
    assert len(parsed) == len(samples)
    for (label, value), (_, labels, got) in zip(samples, parsed, strict=True):
        assert labels == {"v": label}
        if math.isinf(value):
            assert got == value
        else:
            assert math.isclose(got, float(value), rel_tol=1e-15)


_COUNTS = st.one_of(
    st.lists(st.integers(0, 2**64), min_size=3, max_size=3),  # whole: one % per series
    st.lists(st.floats(0, 1e18), min_size=3, max_size=3),  # line by line
    st.lists(st.booleans(), min_size=3, max_size=3),  # written 1/0, line by line
)


_LABEL = st.sampled_from(["z\0", "\0%s", "%d%%"]) | st.text(max_size=6)


@given(st.lists(st.tuples(_LABEL, _COUNTS, st.integers(0, 2**64) | st.floats(0, 9)),
                min_size=1, max_size=6, unique_by=lambda s: s[0]))
def test_any_histogram_series_survives_parsing(
    series: list[tuple[str, list[float], float]]
) -> None:
    """Whole counts take the template path, others the line-by-line one; a label value
    may hold anything, the template's mark (NUL) and % included."""
    unlabelled = MetricSpec("t_flat_seconds", "histogram", "Flat.", buckets=HIST.buckets)
    h, flat = HIST.family(), unlabelled.family()
    for label, counts, count in series:
        cumulative = sorted(counts)
        h.add_histogram((label,), cumulative, 0.5, count)
    flat.add_histogram((), sorted(series[0][1]), 2.0, series[0][2])
    kept = Renderer()
    b"".join(kept.chunks([h, flat]))
    text = b"".join(kept.chunks([h, flat]))
    assert text == render([h, flat])
    parsed = parse(text)
    got = parsed["t_latency_seconds"]
    assert len(got) == 6 * len(series)
    for i, (label, counts, count) in enumerate(series):
        lines = got[6 * i : 6 * i + 6]
        assert all(labels["zonename"] == label for _, labels, _ in lines)
        values = [float(v) for v in (*sorted(counts), count, 0.5, count)]
        assert [float(v) for _, _, v in lines] == values
    assert [float(v) for _, _, v in parsed["t_flat_seconds"]][-3:] == [
        float(series[0][2]), 2.0, float(series[0][2])
    ]


@given(st.lists(st.text(max_size=12), min_size=1, max_size=8, unique=True))
def test_label_blocks_shared_across_families_stay_their_own(zones: list[str]) -> None:
    """Label blocks are reused within a render: every family still gets its own."""
    g, c, h = GAUGE.family(), COUNTER.family(), HIST.family()
    for i, z in enumerate(zones):
        g.add((z, "user"), i)
        c.add((z,), i + 0.5)
        h.add_histogram((z,), [i, i, i], float(i), i)
    parsed = parse(render([g, c, h]))
    assert [s[1] for s in parsed["t_gauge"]] == [{"zonename": z, "mode": "user"} for z in zones]
    assert [(s[1], s[2]) for s in parsed["t_ops"]] == [
        ({"zonename": z}, i + 0.5) for i, z in enumerate(zones)
    ]
    counts = [s for s in parsed["t_latency_seconds"] if s[0].endswith("_count")]
    assert [(s[1], s[2]) for s in counts] == [({"zonename": z}, i) for i, z in enumerate(zones)]


def _host(zones: list[str], step: int) -> list[MetricFamily]:
    g, c, h = GAUGE.family(), COUNTER.family(), HIST.family()
    for i, z in enumerate(zones):
        g.add((z, "user"), i * step + 0.25)
        c.add((z,), i + step)
        h.add_histogram((z,), [i, i + step, i + 2 * step], float(step), i + 2 * step)
        h.add_histogram((z + "-b",), [0.5, 1.0, float(step)], 1.5, step)  # float counts
    flat = MetricSpec("t_up", "gauge", "Up.").family()
    flat.add((), step)
    return [g, c, flat, h]


@given(st.lists(st.lists(st.text(max_size=8), max_size=6, unique=True), min_size=1,
                max_size=5))
def test_a_kept_renderer_renders_every_scrape_as_a_fresh_one(hosts: list[list[str]]) -> None:
    """Zones come and go between scrapes: what a kept renderer reuses never shows."""
    kept = Renderer()
    for step, zones in enumerate(hosts):
        families = _host(zones, step)
        assert b"".join(kept.chunks(families)) == render(families)


def test_a_kept_renderer_lets_a_halted_zones_series_go_at_once() -> None:
    kept = Renderer()
    b"".join(kept.chunks(_host(["z1", "z2", "z3"], 1)))
    held = str(vars(kept))
    assert "z2" in held
    b"".join(kept.chunks(_host(["z1", "z3"], 2)))
    held = str(vars(kept))
    assert "z2" not in held and "z1" in held and "z3" in held


def test_a_render_while_another_runs_gets_a_renderer_of_its_own() -> None:
    kept = Renderer()
    first = kept.chunks(_host(["z1", "z2"], 1))
    head = next(first)  # the first render is under way
    second = b"".join(kept.chunks(_host(["z9"], 3)))
    assert second == render(_host(["z9"], 3))
    assert head + b"".join(first) == render(_host(["z1", "z2"], 1))


def test_a_large_family_comes_in_pieces_that_add_up_to_it() -> None:
    """A family of thousands of series is handed on in pieces of bounded size (the
    gzip body compresses each and lets it go), and the pieces join to its exposition."""
    zones = [f"zone-{i:05d}" for i in range(5000)]
    g, h = GAUGE.family(), HIST.family()
    for i, z in enumerate(zones):
        g.add((z, "user"), i)
        h.add_histogram((z,), [i, 2 * i, 3 * i], 0.5, 3 * i + 1)
    chunks = list(Renderer().chunks([g, h]))
    assert len(chunks) > 10
    assert max(map(len, chunks)) < 400_000  # about 200 KB a piece, never the family
    parsed = parse(b"".join(chunks))
    assert [s[1]["zonename"] for s in parsed["t_gauge"]] == zones
    counts = [s for s in parsed["t_latency_seconds"] if s[0].endswith("_count")]
    assert [(s[1]["zonename"], s[2]) for s in counts] == [
        (z, 3 * i + 1) for i, z in enumerate(zones)]
