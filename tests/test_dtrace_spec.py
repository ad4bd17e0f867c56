"""Script specs: loading, every check, light D parsing, option merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtagent.dtrace import spec as sp

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dtrace"
EVERY_D = (FIXTURES / "every.d").read_text()
EVERY_TOML = (FIXTURES / "every.toml").read_text()


def write(tmp: Path, name: str = "every", d: str = EVERY_D, toml: str | None = EVERY_TOML) -> Path:
    (tmp / f"{name}.d").write_text(d)
    if toml is not None:
        (tmp / f"{name}.toml").write_text(toml)
    return tmp / f"{name}.d"


def test_fixture_loads() -> None:
    s = sp.load_script(FIXTURES / "every.d")
    assert s.name == "every" and s.providers == ("syscall",) and not s.fbt
    assert s.probes == ("syscall:::entry", "syscall:::return")
    assert s.options["dynvarsize"] == "8m" and s.options["aggsize"] == "1048576"
    assert s.options["bufsize"] == sp.DEFAULT_OPTIONS["bufsize"]
    assert [a.function for a in s.aggregations] == [
        "count", "llquantize", "quantize", "sum", "min", "max", "avg", "lquantize"
    ]
    lat = s.aggregation("lat")
    assert lat is not None and lat.sum == "lat_sum" and lat.offset == 1
    assert lat.params == (10, 3, 9, 10) and lat.le_buckets == (0, 1, 4, 9, 18, 27)
    assert lat.labels == ("zonename",)
    calls = s.aggregation("calls")
    assert calls is not None
    assert calls.keys[1] == sp.KeySpec("string", "syscall", ("read", "write", "open"), None)
    assert s.sum_aggregations()["qlat_sum"].name == "qlat"
    assert "@calls" in s.source


BAD = [
    # (old, new, key in the message, expected words)
    ('description = "Test fixture: every aggregating action"\n', "", "description", "required"),
    ("fbt = false", 'fbt = "no"', "fbt", "true or false"),
    ('providers = ["syscall"]', "providers = 3", "providers", "list of strings"),
    ('"syscall:::entry", ', '"syscall::entry", ', "probes", "provider:module"),
    ('dynvarsize = "8m"', 'dynvarsize = "8 MB"', "options.dynvarsize", "size"),
    ('dynvarsize = "8m"', 'flowindent = "1"', "options.flowindent", "known options"),
    ('dynvarsize = "8m"', "dynvarsize = true", "options.dynvarsize", "string or an integer"),
    ("overhead = ", "overhed = ", "overhed", "one of"),
    ('function = "count"', 'function = "stddev"', "aggregation[calls].function", "one of"),
    ('type = "counter"\nhelp = "System calls."', 'type = "gauge"\nhelp = "System calls."',
     "aggregation[calls].type", "'counter' for count()"),
    ('metric = "test_syscalls_total"', 'metric = "test_syscalls"', "aggregation[calls].metric",
     "ending in _total"),
    ('metric = "test_syscalls_total"', 'metric = "test syscalls_total"',
     "aggregation[calls].metric", "metric name"),
    ('help = "System calls."', 'help = ""', "aggregation[calls].help", "non-empty"),
    ("params = [10, 3, 9, 10]", "params = [10, 3, 9, 15]", "aggregation[lat].params",
     "evenly divide"),
    ("params = [0, 100, 10]", "params = [0, 100, 0]", "aggregation[pct].params", "positive"),
    ("le = [1e-6, 2e-6,", "le = [1.5e-6, 2e-6,", "aggregation[lat].le", "not the upper bound"),
    ("le = [1e-6, 2e-6,", "le = [2e-6, 1e-6,", "aggregation[lat].le", "strictly increasing"),
    ('sum = "lat_sum"\n', "", "aggregation[lat].sum", "required"),
    ("scale = 1e-9\noffset = 1", "scale = 0\noffset = 1", "aggregation[lat].scale",
     "greater than 0"),
    ('label = "syscall"\nallow = ["read", "write", "open"]', 'label = "syscall"',
     "aggregation[calls].keys[1]", "allow list or max_values"),
    ('label = "failed"\nallow = [0, 1]', 'label = "failed"\nallow = ["0"]',
     "aggregation[bytes].keys[1].allow", "list of integers"),
    ('label = "failed"', 'label = "le"', "aggregation[bytes].keys[1].label", "other than le"),
    ('kind = "integer"', 'kind = "float"', "aggregation[bytes].keys[1].kind", "one of"),
    ('help = "Bytes returned."', 'help = "Bytes returned."\nle = [1.0]', "aggregation[bytes].le",
     "only histograms"),
    ('metric = "test_bytes_total"', 'metric = "test_syscalls_total"',
     "aggregation[bytes].metric", "used once"),
]


@pytest.mark.parametrize(("old", "new", "key", "words"), BAD)
def test_bad_specs_name_file_key_and_expectation(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    assert old in EVERY_TOML
    path = write(tmp_path, toml=EVERY_TOML.replace(old, new, 1))
    with pytest.raises(sp.SpecError) as info:
        sp.load_script(path)
    msg = str(info.value)
    assert str(tmp_path / "every.toml") in msg
    assert f"key {key!r}" in msg, msg
    assert words in msg, msg


BAD_D = [
    ("@lat_sum[curpsinfo->pr_zoneid] = sum(this->d);", "", "aggregation[lat].sum",
     "@lat_sum[…] = sum(…)"),
    ("@calls[curpsinfo->pr_zoneid, probefunc] = count();", "@calls[probefunc] = count();",
     "aggregation[calls]", "@calls[1 keys] = count(…)"),
    ("@minlat[probefunc] = min(this->d);", "@minlat[probefunc] = max(this->d);",
     "aggregation[minlat]", "= max(…)"),
    ("llquantize(this->d - 1, 10, 3, 9, 10)", "llquantize(this->d - 1, 10, 3, 8, 10)",
     "aggregation[lat].params", "[10, 3, 8, 10]"),
    ("lquantize(this->d / 10000000, 0, 100, 10)", "lquantize(this->d / 10000000, 0, 100)",
     "aggregation[pct].params", "[0, 100, 1]"),
]


@pytest.mark.parametrize(("old", "new", "key", "words"), BAD_D)
def test_d_text_must_match_the_spec(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    assert old in EVERY_D
    path = write(tmp_path, d=EVERY_D.replace(old, new, 1))
    with pytest.raises(sp.SpecError) as info:
        sp.load_script(path)
    assert f"key {key!r}" in str(info.value) and words in str(info.value), str(info.value)


def test_comments_do_not_count_as_aggregations(tmp_path: Path) -> None:
    d = EVERY_D.replace("@lat_sum[curpsinfo->pr_zoneid] = sum(this->d);",
                        "/* @lat_sum[curpsinfo->pr_zoneid] = sum(this->d); */")
    with pytest.raises(sp.SpecError, match="lat_sum"):
        sp.load_script(write(tmp_path, d=d))


def test_missing_toml_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(sp.SpecError, match=r"every\.toml: missing"):
        sp.load_script(write(tmp_path, toml=None))
    with pytest.raises(sp.SpecError, match="not valid TOML"):
        sp.load_script(write(tmp_path, toml="description = "))


def test_find_aggregations_light_parse() -> None:
    uses = sp.find_aggregations(
        '@a[f(x, y), "s,t"] = lquantize(g(1, 2), -5, 5, 1); @ = count(); @b = sum(1)'
    )
    assert [(u.name, u.nkeys, u.function) for u in uses] == [
        ("a", 2, "lquantize"), ("_", 0, "count"), ("b", 0, "sum")
    ]
    assert uses[0].args == ("g(1, 2)", "-5", "5", "1")


def test_load_scripts_override_and_errors(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write(a)
    write(b, toml=EVERY_TOML.replace("enabled = true", "enabled = false"))
    specs = sp.load_scripts([a, b, tmp_path / "missing"])
    assert [s.name for s in specs] == ["every"] and not specs[0].enabled
    assert specs[0].path == b / "every.d"
    # a second script declaring the same metrics is refused (the first by name wins)
    write(a, name="other")
    errors: list[sp.SpecError] = []
    specs = sp.load_scripts([a, b], errors)
    assert [s.name for s in specs] == ["every"]
    assert len(errors) == 1 and "also in every" in str(errors[0])
    with pytest.raises(sp.SpecError):
        sp.load_scripts([a, b])
    # the same aggregation names in two scripts would share one aggregation in the handle
    (a / "other.toml").write_text(EVERY_TOML.replace("test_", "other_"))
    errors = []
    specs = sp.load_scripts([a, b], errors)
    assert [s.name for s in specs] == ["every"]
    assert "one namespace across" in str(errors[0]) and "@calls" in str(errors[0])
    (a / "other.d").unlink()
    (a / "other.toml").unlink()
    write(a, name="broken", toml="description = 1")
    errors = []
    sp.load_scripts([a], errors)
    assert any("broken.toml" in str(e) for e in errors)


def test_enabled_and_merge_options(tmp_path: Path) -> None:
    s1 = sp.load_script(FIXTURES / "every.d")
    s2 = sp.load_script(write(tmp_path, name="two", toml=EVERY_TOML.replace(
        'dynvarsize = "8m"', 'dynvarsize = "2m"\naggrate = "10hz"\nstrsize = 256'
    ).replace("test_", "two_")))
    assert [s.name for s in sp.enabled_scripts([s1, s2], {"two": False})] == ["every"]
    merged = sp.merge_options([s1, s2])
    assert merged["dynvarsize"] == str(10 * 2**20)
    assert merged["aggsize"] == str(2 * 2**20)
    assert merged["bufsize"] == str(2 * 64 * 1024)
    assert merged["strsize"] == "256"
    assert merged["aggrate"] == "100000000ns"


def test_shipped_scripts_load_if_present() -> None:
    """Every script in scripts/d (written against this spec format) loads cleanly."""
    d = sp.shipped_dir()
    if not d.is_dir():
        pytest.skip("no shipped scripts yet")
    specs = sp.load_scripts([d])
    assert {s.name for s in specs} == {p.stem for p in d.glob("*.d") if "." not in p.stem}


def test_le_may_name_a_preset(tmp_path: Path) -> None:
    """The standard latency bounds are one named preset, not a list copied per script."""
    toml = EVERY_TOML.replace("le = [1e-6, 2e-6, 5e-6, 1e-5, 1e-4, 1e-3]", 'le = "latency"')
    assert toml != EVERY_TOML
    spec = sp.load_script(write(tmp_path, toml=toml))
    lat = spec.aggregation("lat")
    assert lat is not None and lat.le == sp.LE_PRESETS["latency"] and len(lat.le) == 22
    with pytest.raises(sp.SpecError, match=r"'aggregation\[lat\]\.le': expected a list of "
                       r"bounds or a preset: latency, latency_coarse, got 'fast'"):
        sp.load_script(write(tmp_path, toml=toml.replace('"latency"', '"fast"')))


def test_one_naming_rule_for_specs_and_metric_specs() -> None:
    from dtagent import selfmon
    from dtagent.collectors import available
    from dtagent.metrics import MetricSpec, suffix_problem

    assert suffix_problem("counter", "x_total") is None
    assert suffix_problem("gauge", "x_total") == "a gauge name not ending in _total"
    with pytest.raises(ValueError, match="expected a counter name ending in _total"):
        MetricSpec("x", "counter", "help")
    # every name the agent itself declares follows the whole rule
    declared = [s for c in available().values() for s in c.specs] + list(selfmon.SPECS)
    assert [s.name for s in declared if suffix_problem(s.type, s.name)] == []


def test_zone_buckets_coarsens_only_per_zone_latency_presets() -> None:
    """[dtrace] zone_buckets = "1-10": every shipped per-zone histogram (le = "latency")
    gets one bound per decade, each still an exact bucket edge; bounds given as a list
    (the fixture's) and "1-2-5" change nothing."""
    shipped = sp.load_scripts([sp.shipped_dir()])
    every = sp.load_script(FIXTURES / "every.d")
    assert sp.with_zone_buckets([*shipped, every], "1-2-5") == [*shipped, every]
    coarse = sp.with_zone_buckets([*shipped, every], "1-10")
    assert coarse[-1] == every
    changed = 0
    for old, new in zip(shipped, coarse, strict=False):
        for a, b in zip(old.aggregations, new.aggregations, strict=True):
            zoned = any(k.kind == "zoneid" for k in a.keys)
            if a.le_preset == "latency" and zoned:
                changed += 1
                assert b.le == sp.LATENCY_COARSE_LE and b.le_preset == "latency_coarse"
                assert set(b.le) <= set(a.le)
                # each coarse le is the DTrace bucket of the same fine le
                assert b.le_buckets == tuple(a.le_buckets[a.le.index(x)] for x in b.le)
            else:
                assert b == a
    assert changed >= 8  # runq, cpucaps, syscall, syscall_by_name, fs, disk x2, tcpconn, zil


def test_a_spec_may_name_the_coarse_preset(tmp_path: Path) -> None:
    toml = EVERY_TOML.replace("le = [1e-6, 2e-6, 5e-6, 1e-5, 1e-4, 1e-3]",
                              'le = "latency_coarse"')
    assert toml != EVERY_TOML
    lat = sp.load_script(write(tmp_path, toml=toml)).aggregation("lat")
    assert lat is not None and lat.le == sp.LATENCY_COARSE_LE
