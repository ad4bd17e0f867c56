"""KstatSnapshot: the indexes collectors read, however the snapshot was built."""

from __future__ import annotations

from dtagent.snapshot import Kstat, KstatSnapshot


def _indexes(snap: KstatSnapshot, kstats: list[Kstat]) -> tuple[object, ...]:
    modules = sorted({ks.module for ks in kstats})
    classes = sorted({ks.ks_class for ks in kstats})
    return (
        [id(ks) for ks in snap],
        {m: [id(ks) for ks in snap.module(m)] for m in modules},
        {c: [id(ks) for ks in snap.klass(c)] for c in classes},
        {ks.key: id(snap.get(*ks.key)) for ks in kstats},
        len(snap),
        snap.time,
    )


def test_a_snapshot_built_at_once_indexes_as_one_built_kstat_by_kstat() -> None:
    kstats = [
        Kstat("zones", 1, "a", "zone_misc"),
        Kstat("caps", 1, "cpucaps_zone_1", "zone_caps"),
        Kstat("zones", 2, "b", "zone_misc"),
        Kstat("link", 0, "net0", "net"),
        Kstat("caps", 2, "cpucaps_zone_2", "zone_caps"),
    ]
    fresh = KstatSnapshot.of(kstats, 5.0)
    assert _indexes(fresh, kstats) == _indexes(KstatSnapshot(kstats, 5.0), kstats)
    assert [ks.name for ks in fresh.module("zones")] == ["a", "b"]
    assert [ks.name for ks in fresh.klass("zone_caps")] == ["cpucaps_zone_1", "cpucaps_zone_2"]
    # a key twice: the last one wins everywhere, as add() has it
    again = Kstat("zones", 1, "a", "zone_other")
    dup = [*kstats, again]
    snap = KstatSnapshot.of(dup, 6.0)
    assert _indexes(snap, dup) == _indexes(KstatSnapshot(dup, 6.0), dup)
    assert snap.get("zones", 1, "a") is again
    assert [ks.name for ks in snap.module("zones")] == ["b", "a"]
    assert snap.klass("zone_misc") == [kstats[2]]


def test_a_derived_value_is_made_once_per_snapshot_and_again_after_a_change() -> None:
    from dtagent.zonemap import running_zones

    snap = KstatSnapshot.of(
        [Kstat("zones", 1, "a", "zone_misc", data={"zonename": "a"})], 5.0
    )
    calls: list[KstatSnapshot] = []

    def count(s: KstatSnapshot) -> int:
        calls.append(s)
        return len(s)

    assert snap.derived(count) == 1 and snap.derived(count) == 1
    assert calls == [snap]
    assert running_zones(snap) is running_zones(snap) == {1: "a"}
    snap.add(Kstat("zones", 2, "b", "zone_misc", data={"zonename": "b"}))
    assert snap.derived(count) == 2 and len(calls) == 2
    assert running_zones(snap) == {1: "a", 2: "b"}


def test_integer_statistics_keep_their_checks_on_the_fast_path() -> None:
    from dtagent.collectors.zone_common import uint
    from dtagent.collectors.zone_info import ZoneInfoCollector

    ks = Kstat("zones", 1, "a", data={"n": 3, "b": True, "neg": -1, "big": 1 << 64,
                                      "f": 1.5, "s": "x"})
    assert [ks.int_stat(k) for k in ("n", "b", "neg", "f", "s", "none")] == [
        3, None, -1, None, None, None]
    coll = ZoneInfoCollector()
    assert [uint(coll, ks, k) for k in ("n", "b", "neg", "big", "f", "s", "none")] == [
        3, None, None, None, None, None, None]


def test_a_stat_row_reads_as_the_dict_of_its_names_and_values() -> None:
    import json
    import pickle

    import pytest

    from dtagent.snapshot import StatRow

    index = {"rss": 0, "zonename": 1, "ratio": 2}
    row = StatRow(index, (4096, "web-1", 0.5))
    as_dict = {"rss": 4096, "zonename": "web-1", "ratio": 0.5}
    assert row == as_dict and as_dict == row and row != {"rss": 4096}
    assert (row["rss"], row.get("zonename"), row.get("absent"), row.get("absent", 7)) == (
        4096, "web-1", None, 7)
    assert "ratio" in row and "absent" not in row and 4096 not in row
    assert (list(row), len(row), list(row.items())) == (
        ["rss", "zonename", "ratio"], 3, list(as_dict.items()))
    with pytest.raises(KeyError):
        row["absent"]
    # copied, pickled and written as what it reads as: a dict
    assert pickle.loads(pickle.dumps(row)) == as_dict
    assert type(pickle.loads(pickle.dumps(row))) is dict
    assert json.loads(json.dumps(dict(row))) == as_dict
    assert repr(row) == f"StatRow({as_dict!r})"
    with pytest.raises(ValueError, match="2 values for 3 statistic names"):
        StatRow(index, (1, 2))
    # the checked getters read it as they read a dict
    ks = Kstat("zones", 1, "web-1", data=row)
    assert (ks.int_stat("rss"), ks.str_stat("zonename"), ks.num_stat("ratio")) == (
        4096, "web-1", 0.5)
    assert (ks.int_stat("zonename"), ks.str_stat("rss"), ks.int_stat("absent")) == (
        None, None, None)
    assert ks == Kstat("zones", 1, "web-1", data=as_dict)


def test_get_indexes_only_the_module_it_is_asked_about() -> None:
    """A real host's unix module has hundreds of kmem cache kstats beside system_misc
    (which boot_time() reads at every collection): get() indexes that module alone,
    never every kstat of the snapshot, until add() makes the full index."""
    caches = [Kstat("unix", 0, f"kmem_cache_{i}", "kmem_cache") for i in range(500)]
    misc = Kstat("unix", 0, "system_misc", "misc", data={"boot_time": 1_700_000_000})
    links = [Kstat("link", i, f"vnic{i}", "net") for i in range(1000)]
    snap = KstatSnapshot.of([*caches, misc, *links], 1.0)
    for _ in range(3):
        assert snap.boot_time() == 1_700_000_000.0
        snap._boot = None  # asked again, as every collection does
    assert snap.get("unix", 0, "kmem_cache_7") is caches[7]
    assert snap.get("unix", 1, "system_misc") is None and snap.get("nope", 0, "x") is None
    assert snap._by_key is None and set(snap._in_module) == {"unix", "nope"}
    assert len(snap._in_module["unix"]) == 501
    assert snap.get("link", 3, "vnic3") is links[3] and snap.get("link", 3, "vnic4") is None
    # add() after either way of looking up: a replaced kstat keeps its place
    again = Kstat("unix", 0, "kmem_cache_0", "kmem_cache")
    snap.add(again)
    assert next(iter(snap)) is again and len(snap) == 1501
    assert snap.get("unix", 0, "kmem_cache_0") is again and snap._in_module == {}
    assert snap.module("unix")[-1] is again and len(snap.module("unix")) == 501
