"""Per-zone dataset space: used, available, referenced and quota of each running
zone's datasets, and how full the quota is.

One ``zfs list -Hp -t filesystem,volume -o name,used,available,referenced,quota -r
ROOT`` for all zones (format in dtagent.parsers.zones), run by the command source
every ``zfs_list_interval`` seconds (space changes slowly; cmon-agent caches its
per-zone ``zfs list`` for 300 s, TritonDataCenter/triton-cmon-agent
lib/instrumenter/collectors-vm/zfs.js), with the age of the output exported. A zone's
datasets are ``ROOT/<zonename>`` (the SmartOS zone root, which carries the quota), its
children (``ROOT/<zonename>/data``, delegated) and
``ROOT/<zonename>-disk<N>`` (bhyve and KVM disk volumes). Only running zones (zone_misc
kstats) are reported, so a zone that halts disappears at the next scrape even though its
datasets stay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.collectors.zone_common import ratio
from dtagent.metrics import MetricFamily, MetricSpec
from dtagent.parsers import ParseMemo
from dtagent.parsers.zones import DatasetEntry, parse_zfs_list, zfs_list_argv
from dtagent.settings import duration, text, timeout
from dtagent.snapshot import CommandRequest, HostSnapshot, KstatSnapshot
from dtagent.zonemap import ZONES, running_zones

SRC = "zfs list -Hp -t filesystem,volume -o name,used,available,referenced,quota -r ROOT"
ZD = ("zonename", "dataset")
_DISK = re.compile(r"^-disk[0-9]+$")
# A dataset name: a pool name (begins with a letter) and components of alphanumerics
# and _ - : . separated by '/', shorter than ZFS_MAX_DATASET_NAME_LEN (256) (illumos-gate
# usr/src/common/zfs/zfs_namecheck.c, zpool(8) "Naming").
_DATASET = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*")


def _dataset_name_ok(name: str) -> bool:
    return len(name) < 256 and _DATASET.fullmatch(name) is not None

USED = MetricSpec(
    "illumos_zone_dataset_used_bytes",
    "gauge",
    "Space used by the dataset and its descendants (snapshots included).",
    ZD,
    "bytes",
    SRC + " used",
)
AVAIL = MetricSpec(
    "illumos_zone_dataset_available_bytes",
    "gauge",
    "Space still available to the dataset (its quota and the pool allowing).",
    ZD,
    "bytes",
    SRC + " available",
)
REFER = MetricSpec(
    "illumos_zone_dataset_referenced_bytes",
    "gauge",
    "Data the dataset itself references.",
    ZD,
    "bytes",
    SRC + " referenced",
)
QUOTA = MetricSpec(
    "illumos_zone_dataset_quota_bytes",
    "gauge",
    "The dataset's quota; no series without one.",
    ZD,
    "bytes",
    SRC + " quota",
)
QUOTA_RATIO = MetricSpec(
    "illumos_zone_quota_ratio",
    "gauge",
    "Space used against the dataset's quota, 0-1; only for datasets with a quota.",
    ZD,
    "ratio",
    SRC + " used ÷ quota",
)
AGE = MetricSpec(
    "illumos_zone_dataset_space_age_seconds",
    "gauge",
    "How old the zfs list output the dataset figures come from is (it is cached).",
    (),
    "seconds",
    SRC,
)


class ZoneDatasetCollector(Collector):
    name = "zone_dataset"
    description = "Space and quota of each running zone's ZFS datasets (one cached zfs list)"
    specs = (USED, AVAIL, REFER, QUOTA, QUOTA_RATIO, AGE)
    kstat_inputs = (ZONES,)
    settings = {
        "zfs_list_interval": duration(
            300.0, "seconds a zfs list output is reused before zfs runs again"
        ),
        "command_timeout": timeout(
            5.0,
            "seconds zfs list may take before it is killed (a hang costs one scrape this "
            "long, then the failure is cached for zfs_list_interval)",
            maximum=60.0,
        ),
        "root": text(
            "zones",
            "dataset under which the zones' datasets live (SmartOS: zones)",
            expected="a ZFS dataset name, such as zones or rpool/zones",
            valid=_dataset_name_ok,
        ),
    }

    def __init__(
        self, zfs_list_interval: float = 300.0, command_timeout: float = 5.0, root: str = "zones"
    ) -> None:
        super().__init__()
        self.zfs_list_interval = float(zfs_list_interval)
        self._zfs_list = ParseMemo(parse_zfs_list)
        self.command_timeout = float(command_timeout)
        self.root = root.rstrip("/")
        self.argv = zfs_list_argv(self.root)
        self._listed: frozenset[str] = frozenset()  # zones running at the last listing

    def _owner(self, dataset: str, zones: set[str]) -> str | None:
        prefix = self.root + "/"
        if not dataset.startswith(prefix):
            return None
        rest = dataset[len(prefix) :]
        head = rest.split("/", 1)[0]
        if head in zones:
            return head
        base, sep, disk = head.rpartition("-disk")
        if sep and base in zones and _DISK.match(sep + disk):
            return base
        return None

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        zones = set(running_zones(kstats).values())
        if not zones:
            return
        # A zone not in the last listing (just created) forces a new one; zones
        # halting or rebooting (same name, same datasets) do not.
        if not zones <= self._listed:
            self._listed = frozenset(zones)
        yield CommandRequest(
            self.argv,
            refresh=self.zfs_list_interval,
            timeout=self.command_timeout,
            generation=self._listed,
        )

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        zones = set(running_zones(snap.kstats).values())
        res = snap.commands.get(self.argv)
        if not zones or res is None:
            return []
        if not res.ok:
            self.warn_once(
                "cmd:zfs",
                "zfs list failed; zone dataset series are left out until it works",
                argv=list(self.argv),
                rc=res.returncode,
                error=res.error,
                stderr=res.stderr.strip()[:300],
            )
            return []
        parsed = self._zfs_list(res.stdout)
        if parsed.bad:
            lineno, line, reason = parsed.bad[0]
            self.warn_once(
                "parse:zfs",
                "zfs list lines not understood; they are left out",
                count=len(parsed.bad),
                first_line=lineno,
                text=line[:200],
                reason=reason,
            )
        fams = Families(self.specs)
        seen: set[str] = set()
        for ds in parsed.rows:
            zone = self._owner(ds.name, zones)
            if zone is None or ds.name in seen:
                continue
            seen.add(ds.name)
            self._add(fams, zone, ds)
        fams[AGE.name].add((), max(0.0, res.age))
        return fams.all()

    @staticmethod
    def _add(fams: Families, zone: str, ds: DatasetEntry) -> None:
        labels = (zone, ds.name)
        fams[USED.name].add(labels, ds.used)
        fams[AVAIL.name].add(labels, ds.available)
        fams[REFER.name].add(labels, ds.referenced)
        quota = ds.quota  # 0 (no quota) is None already; zfs has no other sentinel
        if quota is not None:
            fams[QUOTA.name].add(labels, quota)
            r = ratio(ds.used, quota)
            if r is not None:
                fams[QUOTA_RATIO.name].add(labels, r)
