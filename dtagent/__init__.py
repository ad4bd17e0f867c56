"""dtagent: SmartOS/illumos telemetry for Prometheus (DTrace, kstats, zone caps)."""

__version__ = "0.1.0"
