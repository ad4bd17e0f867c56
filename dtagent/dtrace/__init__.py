"""The DTrace engine: D script specs, exact bucket math, the libdtrace worker and the
accumulator that turns its deltas into cumulative Prometheus metrics.

Modules: :mod:`spec` (scripts/d/NAME.toml), :mod:`buckets` (kernel bucket functions),
:mod:`accumulator` (deltas → families), :mod:`libdtrace` (ctypes binding),
:mod:`worker` (the consumer process), :mod:`supervisor` (runs and restarts it),
:mod:`provider` (what the agent calls each scrape), :mod:`cli`, :mod:`docs`.
"""
