"""Generated references stay in step with the code; the README's claims hold."""

from __future__ import annotations

import json
from pathlib import Path

from dtagent import docgen
from dtagent.config import SCHEMA


def test_generated_docs_are_current(repo_root: Path) -> None:
    for name, make in docgen.DOCS.items():
        committed = (repo_root / "docs" / name).read_text(encoding="utf-8")
        assert committed == make(), (
            f"docs/{name} is stale: run `python -m dtagent.docgen` and commit the result"
        )


def test_metrics_reference_lists_every_declared_metric(repo_root: Path) -> None:
    text = (repo_root / "docs" / "metrics.md").read_text(encoding="utf-8")
    names = docgen.all_metric_names()
    assert "dtagent_collector_success" in names
    for name in names:
        assert f"| `{name}` |" in text


def test_readme_documents_every_setting_and_default(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    for section, settings in SCHEMA.items():
        for key, setting in settings.items():
            row = f"| `{section}.{key}` |"
            assert row in readme, f"README lacks {section}.{key}"
            line = next(ln for ln in readme.splitlines() if ln.startswith(row))
            assert f"`{_as_toml(setting.default)}`" in line, (
                f"README's default for {section}.{key} is not {setting.default!r}"
            )


def _as_toml(value: object) -> str:
    """A default as the README shows it (TOML spelling, strings unquoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)
