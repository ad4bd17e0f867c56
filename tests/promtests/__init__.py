"""promtool unit tests of the alert rules (*.yml) and helpers for the dashboard tests."""
