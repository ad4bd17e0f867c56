"""DTrace's bucket functions, re-implemented, and the exact mapping to Prometheus ``le``.

The kernel puts every recorded value of a quantize-family aggregation into one bucket;
libdtrace hands the consumer an array of bucket counts. To export exact Prometheus
histograms the agent needs, for each bucket, the inclusive range of values it holds,
and for each Prometheus bound ``le`` the bucket whose upper bound it is.

Sources:

- quantize: ``dtrace_aggregate_quantize`` and ``DTRACE_QUANTIZE_*`` (illumos-gate
  usr/src/uts/common/dtrace/dtrace.c, usr/src/uts/common/sys/dtrace.h): 127 buckets,
  zero bucket 63, ``BUCKETVAL(b)`` = -2^(62-b) below it, 2^(b-64) above it.
- lquantize: ``dtrace_aggregate_lquantize``: the value is truncated to int32 first;
  bucket 0 holds values < base, bucket k holds [base+(k-1)step, base+k*step-1],
  bucket levels+1 holds values >= base+levels*step.
- llquantize: ``dtrace_aggregate_llquantize_bucket``; parameter checks from
  ``dt_compile_agg`` (illumos-gate usr/src/lib/libdtrace/common/dt_cc.c).

Everything here is integer arithmetic on recorded values; floats only appear in the
``le`` check, which is done with a relative tolerance and then mapped to an integer.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
UINT16_MAX = 2**16 - 1

# usr/src/uts/common/sys/dtrace.h
QUANTIZE_NBUCKETS = (64 - 1) * 2 + 1  # DTRACE_QUANTIZE_NBUCKETS = 127
QUANTIZE_ZEROBUCKET = 64 - 1  # DTRACE_QUANTIZE_ZEROBUCKET = 63

HISTOGRAM_FUNCTIONS = ("quantize", "lquantize", "llquantize")


def to_int64(value: int) -> int:
    """The value as the kernel sees it: a uint64 argument cast to int64."""
    value &= 2**64 - 1
    return value - 2**64 if value > INT64_MAX else value


def to_int32(value: int) -> int:
    """``(int32_t)nval``, as ``dtrace_aggregate_lquantize`` does."""
    value &= 2**32 - 1
    return value - 2**32 if value > INT32_MAX else value


def quantize_bucketval(b: int) -> int:
    """DTRACE_QUANTIZE_BUCKETVAL(b)."""
    if b < QUANTIZE_ZEROBUCKET:
        return -(1 << (QUANTIZE_ZEROBUCKET - 1 - b))
    if b == QUANTIZE_ZEROBUCKET:
        return 0
    return 1 << (b - QUANTIZE_ZEROBUCKET - 1)


def quantize_bucket(value: int) -> int:
    """The bucket ``dtrace_aggregate_quantize`` increments for ``value`` (by bit length)."""
    val = to_int64(value)
    if val > 0:
        return min(QUANTIZE_ZEROBUCKET + val.bit_length(), QUANTIZE_NBUCKETS - 1)
    if val == 0:
        return QUANTIZE_ZEROBUCKET
    return max(0, QUANTIZE_ZEROBUCKET - (-val).bit_length())


def quantize_bucket_literal(value: int) -> int:
    """``dtrace_aggregate_quantize``'s loops, literally (the tests compare the two)."""
    val = to_int64(value)
    if val < 0:
        for i in range(QUANTIZE_ZEROBUCKET):
            if val <= quantize_bucketval(i):
                return i
        raise AssertionError("unreachable")  # pragma: no cover
    for i in range(QUANTIZE_ZEROBUCKET + 1, QUANTIZE_NBUCKETS):
        if val < quantize_bucketval(i):
            return i - 1
    return QUANTIZE_NBUCKETS - 1


def lquantize_levels(base: int, limit: int, step: int) -> int:
    """Number of levels the compiler encodes: (limit - base) / step."""
    return (limit - base) // step


def lquantize_bucket(base: int, levels: int, step: int, value: int) -> int:
    """The bucket ``dtrace_aggregate_lquantize`` increments (levels + 2 buckets)."""
    val = to_int32(value)
    if val < base:
        return 0
    level = (val - base) // step
    if level < levels:
        return level + 1
    return levels + 1


def llquantize_bucket(factor: int, low: int, high: int, nsteps: int, value: int) -> int:
    """``dtrace_aggregate_llquantize_bucket``, statement for statement.

    Parameters must pass :func:`check_llquantize` (then no int64 arithmetic overflows
    and every division is exact).
    """
    value = to_int64(value)
    this = int(factor**low)
    if value < this:
        return 0
    last = this
    base = 1
    this *= factor
    for _order in range(low, high + 1):
        nbuckets = nsteps if this > nsteps else this
        nxt = this * factor
        if value < this:
            return base + (value - last) // (this // nbuckets)
        base += nbuckets - nbuckets // factor
        last = this
        this = nxt
    return base


def check_lquantize(params: Sequence[int]) -> str | None:
    """The compiler's checks (dt_cc.c ``dt_compile_agg``); None when valid."""
    if len(params) not in (2, 3):
        return "lquantize takes [base, limit] or [base, limit, step]"
    base, limit = params[0], params[1]
    step = params[2] if len(params) == 3 else 1
    if not INT32_MIN <= base <= INT32_MAX:
        return f"lquantize base {base} must be a 32-bit quantity"
    if not INT32_MIN <= limit <= INT32_MAX:
        return f"lquantize limit {limit} must be a 32-bit quantity"
    if limit < base:
        return f"lquantize base {base} must be less than limit {limit}"
    if step <= 0:
        return f"lquantize step {step} must be a non-zero positive integer"
    if step > UINT16_MAX:
        return f"lquantize step {step} must be a 16-bit quantity"
    levels = lquantize_levels(base, limit, step)
    if levels == 0:
        return f"lquantize step {step} too large: must have at least one quantization level"
    if levels > UINT16_MAX:
        return f"lquantize step {step} too small: {levels} levels, at most 65535"
    return None


def check_llquantize(params: Sequence[int]) -> str | None:
    """The compiler's checks (dt_cc.c), plus factor^(high+2) within int64 (see below)."""
    if len(params) != 4:
        return "llquantize takes [factor, low, high, nsteps]"
    for what, v in zip(("factor", "low", "high", "nsteps"), params, strict=True):
        if not 0 <= v <= UINT16_MAX:
            return f"llquantize {what} {v} must be an unsigned 16-bit quantity"
    factor, low, high, nsteps = params
    if factor < 2:
        return "llquantize factor must be two or more"
    if low >= high:
        return f"llquantize high magnitude {high} must be greater than low magnitude {low}"
    if nsteps < factor:
        return f"llquantize factor {factor} must be <= the number of steps {nsteps}"
    v = factor
    while v < nsteps:
        v *= factor
    if nsteps % factor or v % nsteps:
        return (
            f"llquantize factor {factor} must evenly divide the number of steps {nsteps}, "
            "and the number of steps must evenly divide a power of the factor"
        )
    # The compiler refuses factor^(high+2) overflowing 64 bits; the kernel computes
    # factor^(high+2) in int64, so dtagent keeps it within INT64_MAX (exact buckets).
    if factor ** (high + 2) > INT64_MAX:
        return f"llquantize factor {factor} to the power high+2 ({high + 2}) overflows int64"
    return None


@dataclass(frozen=True)
class Buckets:
    """The buckets of one quantize-family aggregation: value ↔ index ↔ range."""

    function: str
    params: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.function == "quantize":
            if self.params:
                raise ValueError("quantize takes no parameters")
        elif self.function == "lquantize":
            problem = check_lquantize(self.params)
            if problem:
                raise ValueError(problem)
        elif self.function == "llquantize":
            problem = check_llquantize(self.params)
            if problem:
                raise ValueError(problem)
        else:
            raise ValueError(f"{self.function} has no buckets")

    def arg_params(self) -> tuple[int, ...]:
        """What the record's arg word decodes to (sys/dtrace.h DTRACE_LQUANTIZE_* and
        DTRACE_LLQUANTIZE_*): (base, levels, step) for lquantize, the four parameters
        for llquantize; quantize has no arg word."""
        if self.function == "lquantize":
            return self._lq
        if self.function == "llquantize":
            return tuple(self.params)
        return ()

    # -- lquantize helpers
    @property
    def _lq(self) -> tuple[int, int, int]:
        base, limit = self.params[0], self.params[1]
        step = self.params[2] if len(self.params) == 3 else 1
        return base, lquantize_levels(base, limit, step), step

    @property
    def count(self) -> int:
        """Number of buckets in the kernel's array (excluding lquantize's arg word)."""
        if self.function == "quantize":
            return QUANTIZE_NBUCKETS
        if self.function == "lquantize":
            return self._lq[1] + 2
        factor, low, high, nsteps = self.params
        return llquantize_bucket(factor, low, high, nsteps, INT64_MAX) + 1

    def index(self, value: int) -> int:
        """The bucket the kernel puts a recorded value in."""
        if self.function == "quantize":
            return quantize_bucket(value)
        if self.function == "lquantize":
            base, levels, step = self._lq
            return lquantize_bucket(base, levels, step, value)
        factor, low, high, nsteps = self.params
        return llquantize_bucket(factor, low, high, nsteps, value)

    def bounds(self, i: int) -> tuple[int, int]:
        """Inclusive (lo, hi) of the recorded values bucket ``i`` holds.

        The underflow buckets of lquantize/llquantize start at INT32_MIN/INT64_MIN
        (lquantize truncates values to int32, so its top bucket ends at INT32_MAX).
        """
        if not 0 <= i < self.count:
            raise IndexError(f"bucket {i} out of range 0..{self.count - 1}")
        if self.function == "quantize":
            if i == 0:
                return INT64_MIN, quantize_bucketval(0)
            if i < QUANTIZE_ZEROBUCKET:
                return quantize_bucketval(i - 1) + 1, quantize_bucketval(i)
            if i == QUANTIZE_NBUCKETS - 1:
                return quantize_bucketval(i), INT64_MAX
            return quantize_bucketval(i), quantize_bucketval(i + 1) - 1
        if self.function == "lquantize":
            base, levels, step = self._lq
            if i == 0:
                return INT32_MIN, base - 1
            if i == levels + 1:
                return base + levels * step, INT32_MAX
            lo = base + (i - 1) * step
            return lo, lo + step - 1
        factor, low, high, nsteps = self.params
        if i == 0:
            return INT64_MIN, factor**low - 1
        base = 1
        last = factor**low
        this = last * factor
        for _order in range(low, high + 1):
            nb = nsteps if this > nsteps else this
            n = nb - nb // factor
            if i < base + n:
                width = this // nb
                lo = last + (i - base) * width
                return lo, lo + width - 1
            base += n
            last = this
            this *= factor
        return last, INT64_MAX

    def lower(self, i: int) -> int | None:
        """The bucket's lower bound as delta records carry it (None: underflow bucket)."""
        if i == 0 and self.function != "quantize":
            return None
        return self.bounds(i)[0]

    def index_of_lower(self, lo: int | None) -> int | None:
        """The bucket whose :meth:`lower` is ``lo``; None when ``lo`` is no boundary."""
        if lo is None:
            return 0 if self.function != "quantize" else None
        if self.function == "lquantize" and not INT32_MIN <= lo <= INT32_MAX:
            return None
        if not INT64_MIN <= lo <= INT64_MAX:
            return None
        i = self.index(lo)
        return i if self.lower(i) == lo else None

    def upper_bounds_near(self, hi: int) -> tuple[int, ...]:
        """Upper bounds of the bucket holding ``hi`` and the one below (for messages)."""
        i = self.index(hi)
        return tuple(self.bounds(j)[1] for j in (i - 1, i) if 0 <= j < self.count)


def _close(a: float, b: int) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def le_indexes(
    buckets: Buckets, le: Sequence[float], scale: float, offset: int = 0
) -> tuple[int, ...]:
    """For each Prometheus bound, the DTrace bucket whose upper bound it is.

    A script records ``r = v - offset`` for a true value ``v`` (in recorded units;
    ``v * scale`` is in base units). ``le`` is exact when ``le / scale == hi + offset``
    for the upper bound ``hi`` of some bucket: then every value ``v * scale <= le``
    lands at or below that bucket and none above. Raises ValueError otherwise.
    """
    out: list[int] = []
    prev: float | None = None
    for bound in le:
        if prev is not None and not bound > prev:
            raise ValueError(f"le bounds must be strictly increasing ({prev} then {bound})")
        prev = bound
        target = bound / scale - offset
        hi = round(target)
        if not _close(target, hi) or not INT64_MIN <= hi <= INT64_MAX:
            raise ValueError(
                f"le {bound} is {target} recorded units after scale and offset: "
                "not an integer, so it cannot be a bucket boundary"
            )
        i = buckets.index(hi)
        if buckets.bounds(i)[1] != hi:
            near = ", ".join(
                f"{(h + offset) * scale:g}" for h in buckets.upper_bounds_near(hi)
            )
            raise ValueError(
                f"le {bound} (recorded {hi}) is not the upper bound of a "
                f"{buckets.function} bucket; nearest bounds: {near}"
            )
        out.append(i)
    return tuple(out)


def slot_of(le_idx: Sequence[int], bucket: int) -> int:
    """Index of the first ``le`` at or above the bucket (len(le_idx): only +Inf)."""
    return bisect.bisect_left(le_idx, bucket)
