"""Operators' executable plugins (CMON's drop-in convention): the results of
dtagent.sources.plugins, which runs them off the scrape path.

Per plugin: whether its last run succeeded, how long it took and when it finished; and
its metrics (the text format it printed) when it succeeded. Two plugins defining the
same metric: the second (by file name) is dropped and reported as failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.settings import text, timeout
from dtagent.snapshot import HostSnapshot
from dtagent.sources.plugins import PluginRunner

SRC = "[collectors.plugins] directory"
SUCCESS = MetricSpec("dtagent_plugin_success", "gauge",
                     "1 when the plugin's last run succeeded and its output was accepted.",
                     ("plugin",), "", SRC)
DURATION = MetricSpec("dtagent_plugin_duration_seconds", "gauge",
                      "How long the plugin's last run took.", ("plugin",), "seconds", SRC)
LAST_RUN = MetricSpec("dtagent_plugin_last_run_timestamp_seconds", "gauge",
                      "When the plugin's last run finished, Unix time.", ("plugin",), "seconds",
                      SRC)


class PluginsCollector(Collector):
    name = "plugins"
    description = (
        "Operators' executable plugins from a directory, run on their own interval with a "
        "timeout: their metrics and per-plugin success, duration and last run"
    )
    specs = (SUCCESS, DURATION, LAST_RUN)
    illumos_only = False
    settings = {
        "directory": text(
            "",
            "directory of executable plugins (empty: none are run)",
            expected="a directory path, or empty",
        ),
        "interval": timeout(60.0, "seconds between runs of the plugins"),
        "timeout": timeout(
            10.0, "seconds a plugin may take before it is killed (at most interval)"
        ),
    }

    @classmethod
    def settings_problems(cls, values: Mapping[str, Any]) -> dict[str, str]:
        if values["timeout"] > values["interval"]:
            return {"timeout": f"at most interval ({values['interval']:g} s)"}
        return {}

    def __init__(self, directory: str = "", interval: float = 60.0,
                 timeout: float = 10.0) -> None:
        super().__init__()
        self.runner = PluginRunner(directory, interval, timeout) if directory else None

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        if self.runner is None:
            return []
        self.runner.start()  # the first scrape starts the runs; none block a scrape
        fams = Families(self.specs)
        own: list[MetricFamily] = []
        owner: dict[str, str] = {}
        for name, res in sorted(self.runner.results().items()):
            ok = res.ok
            clash = next((f.name for f in res.families if f.name in owner), None)
            if clash is not None:
                self.warn_once(f"clash:{name}:{clash}", "plugin metric defined by another "
                               "plugin; this plugin's output is dropped", plugin=name,
                               metric=clash, other=owner[clash])
                ok = False
            elif ok:
                for f in res.families:
                    owner[f.name] = name
                own.extend(res.families)
            fams[SUCCESS.name].add((name,), 1 if ok else 0)
            fams[DURATION.name].add((name,), res.duration)
            fams[LAST_RUN.name].add((name,), res.finished)
        return [*fams.all(), *own]
