"""ZFS pool health, space, vdev errors and scans from ``zpool list -Hp`` and
``zpool status -p`` (formats in dtagent.parsers.zpool).

Both commands are run at most every ``refresh`` seconds (they read the pool
configuration, which is cheap, but a pool with a hung device can make them slow), with
a ``command_timeout``. Health is a state set: one series per pool and state, 1 for the
current one, so ``illumos_zpool_health{state="ONLINE"} == 0`` catches every bad state,
an unknown one included (all states 0, logged once). Error counts are per vdev as
``zpool status`` prints them: they only grow until ``zpool clear`` resets them.

Partial results: each pool keeps what was understood. A vdev line of an unseen shape is
left out (the rest of the tree stays); a scan line not understood leaves the scan
series out; a truncated output keeps every complete line before the cut.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtagent.collectors.base import Collector, Families
from dtagent.metrics import MetricFamily, MetricSpec, MetricType
from dtagent.parsers.zpool import (
    HEALTH_STATES,
    LIST_ARGV,
    STATUS_ARGV,
    ListParsed,
    PoolStatus,
    StatusParsed,
    parse_zpool_list,
    parse_zpool_status,
)
from dtagent.settings import duration, timeout
from dtagent.snapshot import CommandRequest, CommandResult, HostSnapshot, KstatSnapshot

LIST_SRC = " ".join(LIST_ARGV)
STATUS_SRC = " ".join(STATUS_ARGV)


def _spec(
    name: str, mtype: MetricType, help_: str, labels: tuple[str, ...], unit: str, src: str
) -> MetricSpec:
    return MetricSpec(f"illumos_zpool_{name}", mtype, help_, labels, unit, src)


HEALTH = _spec(
    "health",
    "gauge",
    "Pool health as a state set: 1 for the pool's current state (ONLINE, DEGRADED, "
    "FAULTED, OFFLINE, REMOVED, UNAVAIL, SUSPENDED), 0 for the others; all 0 when zpool "
    "printed a state the agent does not know.",
    ("pool", "state"),
    "",
    LIST_SRC,
)
SIZE = _spec("size_bytes", "gauge", "Pool size.", ("pool",), "bytes", LIST_SRC)
ALLOC = _spec("allocated_bytes", "gauge", "Space allocated in the pool.", ("pool",), "bytes",
              LIST_SRC)
FREE = _spec("free_bytes", "gauge", "Space not allocated in the pool.", ("pool",), "bytes",
             LIST_SRC)
FRAG = _spec(
    "fragmentation_ratio",
    "gauge",
    "Fragmentation of the pool's free space, 0-1 (absent where zpool prints '-').",
    ("pool",),
    "ratio",
    LIST_SRC,
)
CAPACITY = _spec("capacity_ratio", "gauge", "Allocated share of the pool's size, 0-1.",
                 ("pool",), "ratio", LIST_SRC)
DEDUP = _spec("dedup_ratio", "gauge", "Deduplication ratio (1 when no data is deduplicated).",
              ("pool",), "ratio", LIST_SRC)
VDEV_LABELS = ("pool", "vdev", "parent", "role")
READ_ERR = _spec(
    "vdev_read_errors_total",
    "counter",
    "Read errors of the vdev as zpool status counts them (reset by zpool clear).",
    VDEV_LABELS,
    "",
    STATUS_SRC,
)
WRITE_ERR = _spec(
    "vdev_write_errors_total",
    "counter",
    "Write errors of the vdev as zpool status counts them (reset by zpool clear).",
    VDEV_LABELS,
    "",
    STATUS_SRC,
)
CKSUM_ERR = _spec(
    "vdev_checksum_errors_total",
    "counter",
    "Checksum errors of the vdev as zpool status counts them (reset by zpool clear).",
    VDEV_LABELS,
    "",
    STATUS_SRC,
)
VDEV_STATE = _spec(
    "vdev_info",
    "gauge",
    "Each vdev of the pool's tree, always 1, with its state (ONLINE, DEGRADED, FAULTED, "
    "UNAVAIL, AVAIL for a spare, ...), its parent vdev and its role (data, log, cache, "
    "spare, special, dedup).",
    (*VDEV_LABELS, "state"),
    "",
    STATUS_SRC,
)
SCAN_ACTIVE = _spec(
    "scan_in_progress",
    "gauge",
    "1 while a scrub or resilver runs (paused counts as running), else 0.",
    ("pool", "function"),
    "",
    STATUS_SRC,
)
SCAN_PROGRESS = _spec(
    "scan_progress_ratio",
    "gauge",
    "Share of the running scrub or resilver done, 0-1; 1 for the last one when it "
    "finished (none after a canceled one).",
    ("pool", "function"),
    "ratio",
    STATUS_SRC,
)
SCAN_END = _spec(
    "scan_last_end_time_seconds",
    "gauge",
    "When the last scrub or resilver finished (or was canceled), Unix time.",
    ("pool", "function"),
    "seconds",
    STATUS_SRC,
)
SCAN_ERRORS = _spec(
    "scan_last_errors",
    "gauge",
    "Errors the last finished scrub or resilver could not repair.",
    ("pool", "function"),
    "",
    STATUS_SRC,
)
SCAN_REPAIRED = _spec(
    "scan_repaired_bytes",
    "gauge",
    "Bytes the last (or running) scrub or resilver repaired (zpool prints them rounded).",
    ("pool", "function"),
    "bytes",
    STATUS_SRC,
)
DATA_ERRORS = _spec(
    "data_errors",
    "gauge",
    "Data errors zpool status reports for the pool (files or objects with permanent "
    "errors).",
    ("pool",),
    "",
    STATUS_SRC,
)
STATUS_AGE = MetricSpec(
    "illumos_zpool_status_age_seconds",
    "gauge",
    "How old the zpool list and zpool status outputs in use are.",
    ("command",),
    "seconds",
    f"{LIST_SRC}; {STATUS_SRC}",
)

ALL = (
    HEALTH, SIZE, ALLOC, FREE, FRAG, CAPACITY, DEDUP, READ_ERR, WRITE_ERR, CKSUM_ERR,
    VDEV_STATE, SCAN_ACTIVE, SCAN_PROGRESS, SCAN_END, SCAN_ERRORS, SCAN_REPAIRED,
    DATA_ERRORS, STATUS_AGE,
)


class ZpoolCollector(Collector):
    name = "zpool"
    description = (
        "ZFS pool health (state set), space, fragmentation, dedup ratio, per-vdev read/"
        "write/checksum errors, scrub and resilver state from zpool list and zpool status"
    )
    specs = ALL
    settings = {
        "refresh": duration(60.0, "seconds between runs of zpool list and zpool status"),
        "command_timeout": timeout(
            10.0, "seconds zpool may take before it is killed", maximum=60.0
        ),
    }

    def __init__(self, refresh: float = 60.0, command_timeout: float = 10.0) -> None:
        super().__init__()
        self.refresh = float(refresh)
        self.command_timeout = float(command_timeout)

    def commands(self, kstats: KstatSnapshot) -> Iterable[CommandRequest]:
        for argv in (LIST_ARGV, STATUS_ARGV):
            yield CommandRequest(argv, refresh=self.refresh, timeout=self.command_timeout)

    def _run(self, snap: HostSnapshot, argv: tuple[str, ...]) -> CommandResult | None:
        res = snap.commands.get(argv)
        if res is None:
            return None  # not run yet
        if not res.ok:
            self.warn_once(
                f"cmd:{argv[1]}",
                "zpool command failed; its series are left out",
                argv=list(argv),
                rc=res.returncode,
                error=res.error,
                stderr=res.stderr.strip()[:300],
            )
            return None
        return res

    def _bad(self, what: str, parsed: ListParsed | StatusParsed) -> None:
        if parsed.bad:
            lineno, line, reason = parsed.bad[0]
            self.warn_once(
                f"parse:{what}:{reason}",
                "zpool output lines not understood; they are left out",
                command=what,
                count=len(parsed.bad),
                first_line=lineno,
                text=line[:200],
                reason=reason,
            )

    def collect(self, snap: HostSnapshot) -> Iterable[MetricFamily]:
        fams = Families(self.specs)
        listed = self._run(snap, LIST_ARGV)
        if listed is not None:
            fams[STATUS_AGE.name].add(("list",), listed.age)
            parsed = parse_zpool_list(listed.stdout)
            self._bad("zpool list", parsed)
            for row in parsed.rows:
                p = (row.name,)
                if row.health not in HEALTH_STATES:
                    self.warn_once(f"health:{row.health}", "unknown pool health",
                                   pool=row.name, health=row.health)
                for state in HEALTH_STATES:
                    fams[HEALTH.name].add((row.name, state), 1 if row.health == state else 0)
                for spec, value in (
                    (SIZE, row.size),
                    (ALLOC, row.allocated),
                    (FREE, row.free),
                    (FRAG, row.fragmentation),
                    (CAPACITY, row.capacity),
                    (DEDUP, row.dedupratio),
                ):
                    if value is not None:
                        fams[spec.name].add(p, value)
        status = self._run(snap, STATUS_ARGV)
        if status is not None:
            fams[STATUS_AGE.name].add(("status",), status.age)
            sparsed = parse_zpool_status(status.stdout)
            self._bad("zpool status", sparsed)
            for pool in sparsed.pools:
                self._pool_status(fams, pool)
        return fams.all()

    def _pool_status(self, fams: Families, pool: PoolStatus) -> None:
        seen: set[tuple[str, str, str]] = set()
        for v in pool.vdevs:
            key = (v.name, v.parent, v.role)
            if key in seen:  # the same device twice (a spare in use and in spares)
                continue
            seen.add(key)
            labels = (pool.name, v.name, v.parent, v.role)
            fams[VDEV_STATE.name].add((*labels, v.state), 1)
            for spec, value in (
                (READ_ERR, v.read_errors),
                (WRITE_ERR, v.write_errors),
                (CKSUM_ERR, v.checksum_errors),
            ):
                if value is not None:
                    fams[spec.name].add(labels, value)
        if pool.data_errors is not None:
            fams[DATA_ERRORS.name].add((pool.name,), pool.data_errors)
        scan = pool.scan
        if scan is None or scan.state == "none":
            if scan is not None:
                for function in ("scrub", "resilver"):
                    fams[SCAN_ACTIVE.name].add((pool.name, function), 0)
            return
        key2 = (pool.name, scan.function)
        running = scan.state in ("in_progress", "paused")
        for function in ("scrub", "resilver"):
            fams[SCAN_ACTIVE.name].add(
                (pool.name, function), 1 if running and function == scan.function else 0
            )
        if running and scan.progress is not None:
            fams[SCAN_PROGRESS.name].add(key2, scan.progress)
        elif scan.state == "finished":
            fams[SCAN_PROGRESS.name].add(key2, 1.0)
        if scan.ended is not None:
            fams[SCAN_END.name].add(key2, scan.ended)
        if scan.errors is not None:
            fams[SCAN_ERRORS.name].add(key2, scan.errors)
        if scan.repaired_bytes is not None:
            fams[SCAN_REPAIRED.name].add(key2, scan.repaired_bytes)
