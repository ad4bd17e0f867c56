"""Bucket math: the kernel's quantize/lquantize/llquantize functions and exact ``le``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dtagent.dtrace import buckets as bk

int64s = st.integers(bk.INT64_MIN, bk.INT64_MAX)
int32s = st.integers(bk.INT32_MIN, bk.INT32_MAX)


@st.composite
def lquantize_params(draw: st.DrawFn) -> tuple[int, ...]:
    base = draw(st.integers(-(10**6), 10**6))
    step = draw(st.integers(1, 1000))
    levels = draw(st.integers(1, 300))
    return (base, base + levels * step + draw(st.integers(0, step - 1)), step)


@st.composite
def llquantize_params(draw: st.DrawFn) -> tuple[int, ...]:
    factor = draw(st.sampled_from([2, 3, 4, 5, 8, 10, 16]))
    # nsteps: factor * a divisor of some power of factor (the compiler's rule)
    mult = draw(st.sampled_from([1, factor, factor * factor]))
    nsteps = factor * mult
    low = draw(st.integers(0, 4))
    high = draw(st.integers(low + 1, low + 6))
    params = (factor, low, high, nsteps)
    assume(bk.check_llquantize(params) is None)
    return params


@st.composite
def schemes(draw: st.DrawFn) -> bk.Buckets:
    kind = draw(st.sampled_from(bk.HISTOGRAM_FUNCTIONS))
    if kind == "quantize":
        return bk.Buckets("quantize", ())
    if kind == "lquantize":
        return bk.Buckets("lquantize", draw(lquantize_params()))
    return bk.Buckets("llquantize", draw(llquantize_params()))


def test_reference_examples() -> None:
    q = bk.Buckets("quantize", ())
    assert q.count == 127
    assert q.index(1000) == 73 and q.bounds(73) == (512, 1023)
    assert [q.bounds(i) for i in (61, 62, 63, 64, 65, 66)] == [
        (-3, -2), (-1, -1), (0, 0), (1, 1), (2, 3), (4, 7)
    ]
    assert q.bounds(0) == (bk.INT64_MIN, -(2**62)) and q.bounds(126) == (2**62, bk.INT64_MAX)
    assert bk.Buckets("llquantize", (10, 3, 11, 100)).count == 812
    ll = bk.Buckets("llquantize", (10, 3, 9, 10))
    assert ll.count == 65
    assert ll.bounds(0) == (bk.INT64_MIN, 999) and ll.bounds(1) == (1000, 1999)
    assert ll.bounds(10) == (10000, 19999) and ll.bounds(64)[0] == 10**10
    assert bk.Buckets("llquantize", (2, 0, 10, 2)).count == 13
    lq = bk.Buckets("lquantize", (0, 1000, 10))
    assert lq.count == 102 and lq.bounds(0) == (bk.INT32_MIN, -1) and lq.bounds(1) == (0, 9)
    assert lq.bounds(101) == (1000, bk.INT32_MAX)
    assert lq.index(2**32 + 5) == 1  # the kernel truncates to int32


@given(int64s)
def test_quantize_fast_matches_the_kernel_loops(value: int) -> None:
    assert bk.quantize_bucket(value) == bk.quantize_bucket_literal(value)


@pytest.mark.parametrize("value", [0, 1, -1, 2**62 - 1, 2**62, -(2**62), bk.INT64_MIN,
                                   bk.INT64_MAX, 2**64 - 1])
def test_quantize_edges(value: int) -> None:
    assert bk.quantize_bucket(value) == bk.quantize_bucket_literal(value)


@settings(max_examples=300)
@given(schemes(), st.data())
def test_buckets_partition_the_values(b: bk.Buckets, data: st.DataObject) -> None:
    top = bk.INT32_MAX if b.function == "lquantize" else bk.INT64_MAX
    bottom = bk.INT32_MIN if b.function == "lquantize" else bk.INT64_MIN
    assert b.bounds(0)[0] == bottom and b.bounds(b.count - 1)[1] == top
    i = data.draw(st.integers(0, b.count - 2))
    lo, hi = b.bounds(i)
    assert lo <= hi and b.bounds(i + 1)[0] == hi + 1
    assert b.index(lo) == i and b.index(hi) == i and b.index(hi + 1) == i + 1
    assert b.index_of_lower(b.lower(i)) == i
    if hi > lo:
        assert b.index_of_lower(lo + 1) is None
    v = data.draw(st.integers(bottom, top))
    j = b.index(v)
    assert b.bounds(j)[0] <= v <= b.bounds(j)[1]


@settings(max_examples=300)
@given(schemes(), st.data())
def test_le_counts_exactly_the_values_at_or_below(b: bk.Buckets, data: st.DataObject) -> None:
    scale = data.draw(st.sampled_from([1.0, 1e-9, 1e-6, 1e-3, 0.5, 1024.0]))
    offset = data.draw(st.integers(-5, 5))
    picked = sorted(set(data.draw(st.lists(st.integers(0, b.count - 2), min_size=1,
                                           max_size=8))))
    # floats hold integers exactly up to 2^53: keep bounds and values well inside
    picked = [i for i in picked if abs(b.bounds(i)[1]) < 2**50]
    assume(picked)
    le = [(b.bounds(i)[1] + offset) * scale for i in picked]
    assume(all(x < y for x, y in itertools.pairwise(le)))
    le_idx = bk.le_indexes(b, le, scale, offset)
    assert list(le_idx) == picked
    lo_r = bk.INT32_MIN if b.function == "lquantize" else -(2**50)
    hi_r = bk.INT32_MAX if b.function == "lquantize" else 2**50
    near = [b.bounds(i)[1] + d for i in picked for d in (-1, 0, 1)]
    values = data.draw(st.lists(st.one_of(st.integers(lo_r, hi_r), st.sampled_from(near)),
                                min_size=1, max_size=30))
    cumulative = [0] * len(le)
    total = 0
    for r in values:
        r = max(lo_r, min(hi_r, r))
        v = r + offset  # the true value in recorded units
        slot = bk.slot_of(le_idx, b.index(r))
        for j in range(len(le)):
            counted = j >= slot
            assert counted == (v * scale <= le[j]), (r, v, le[j])
            cumulative[j] += counted
        total += 1
    assert cumulative == sorted(cumulative) and (not cumulative or cumulative[-1] <= total)


def test_le_not_a_boundary_names_the_nearest() -> None:
    b = bk.Buckets("llquantize", (10, 3, 9, 10))
    with pytest.raises(ValueError, match=r"nearest bounds: 1\.999e-06, 2\.999e-06"):
        bk.le_indexes(b, [2.5e-6], 1e-9, 0)
    assert bk.le_indexes(b, [2e-6, 1e-5], 1e-9, 1) == (1, 9)
    with pytest.raises(ValueError, match="strictly increasing"):
        bk.le_indexes(b, [2e-6, 2e-6], 1e-9, 1)
    with pytest.raises(ValueError, match="not an integer"):
        bk.le_indexes(b, [1.5e-9], 1e-9, 0)


@pytest.mark.parametrize(
    ("function", "params", "message"),
    [
        ("lquantize", (0, 2**31, 1), "32-bit"),
        ("lquantize", (10, 5, 1), "less than limit"),
        ("lquantize", (0, 10, 0), "positive"),
        ("lquantize", (0, 10, 70000), "16-bit"),
        ("lquantize", (0, 10, 11), "at least one"),
        ("lquantize", (0, 70000, 1), "too small"),
        ("llquantize", (1, 0, 2, 1), "two or more"),
        ("llquantize", (10, 3, 3, 10), "greater than low"),
        ("llquantize", (10, 0, 3, 5), "must be <="),
        ("llquantize", (10, 0, 3, 15), "evenly divide"),
        ("llquantize", (6, 0, 3, 24), "evenly divide"),
        ("llquantize", (10, 0, 18, 10), "overflows"),
        ("llquantize", (70000, 0, 3, 70000), "16-bit"),
    ],
)
def test_compiler_checks(function: str, params: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bk.Buckets(function, params)


def test_arg_params_are_what_the_record_arg_word_decodes_to() -> None:
    # sys/dtrace.h DTRACE_LQUANTIZE_*: levels = (limit - base) / step
    assert bk.Buckets("lquantize", (0, 100, 10)).arg_params() == (0, 10, 10)
    assert bk.Buckets("lquantize", (-5, 5)).arg_params() == (-5, 10, 1)
    assert bk.Buckets("llquantize", (10, 3, 9, 10)).arg_params() == (10, 3, 9, 10)
    assert bk.Buckets("quantize", ()).arg_params() == ()
