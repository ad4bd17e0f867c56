"""Operators' executable plugins (CMON's drop-in convention): the runs the plugin
source (dtagent.sources.plugins) made off the scrape path, parsed here.

Per plugin: whether its last run succeeded, how long it took and when it finished; and
its metrics (the text format it printed) when it succeeded and its output parses. Two
plugins defining the same metric: the second (by file name) is dropped and reported as
failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers.textformat import TextFormatError, parse_exposition
from dtagent.settings import text, timeout
from dtagent.snapshot import HostSnapshot, PluginRequest, PluginRun

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
        self.request = PluginRequest(directory, interval, timeout)
        # plugin -> (the run, its families or why its output was refused): a run's
        # output is parsed once, not at every scrape until the next run
        self._parsed: dict[str, tuple[PluginRun, list[MetricFamily] | str]] = {}

    def plugins(self) -> Iterable[PluginRequest]:
        return (self.request,)

    def _families(self, run: PluginRun) -> list[MetricFamily] | str:
        cached = self._parsed.get(run.name)
        if cached is not None and cached[0] == run:
            return cached[1]
        result: list[MetricFamily] | str
        if not run.ok:
            result = run.reason  # the plugin source logged it
        else:
            try:
                result = parse_exposition(run.stdout, f"plugin {run.name}")
            except TextFormatError as exc:
                result = str(exc)
                self.warn_once(f"parse:{run.name}:{result}", "plugin failed",
                               plugin=run.name, error=result)
        self._parsed[run.name] = (run, result)
        return result

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        runs = snap.plugins.get(self.request)
        if runs is None:
            return []  # not run yet, or no directory configured
        fams = Families(self.specs)
        own: list[MetricFamily] = []
        owner: dict[str, str] = {}
        for run in sorted(runs, key=lambda r: r.name):
            parsed = self._families(run)
            ok = not isinstance(parsed, str)
            if isinstance(parsed, list):
                clash = next((f.name for f in parsed if f.name in owner), None)
                if clash is not None:
                    self.warn_once(f"clash:{run.name}:{clash}", "plugin metric defined by "
                                   "another plugin; this plugin's output is dropped",
                                   plugin=run.name, metric=clash, other=owner[clash])
                    ok = False
                else:
                    for f in parsed:
                        owner[f.name] = run.name
                    own.extend(parsed)
            fams[SUCCESS.name].add((run.name,), 1 if ok else 0)
            fams[DURATION.name].add((run.name,), run.duration)
            fams[LAST_RUN.name].add((run.name,), run.finished)
        names = {r.name for r in runs}
        for gone in [n for n in self._parsed if n not in names]:
            del self._parsed[gone]
        return [*fams.all(), *own]
