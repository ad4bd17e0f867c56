"""zpool, smf and fma collectors: real outputs through the collectors, failures, and the
simulated host's outputs over a run (healthy, degraded with a resilver, healthy again)."""

from __future__ import annotations

from collections.abc import Sequence

from dtagent.collectors.fma import FmaCollector
from dtagent.collectors.smf import SmfCollector
from dtagent.collectors.zpool import ZpoolCollector
from dtagent.parsers.fma import FMADM_ARGV, FMSTAT_ARGV
from dtagent.parsers.smf import SVCS_ARGV
from dtagent.parsers.zpool import LIST_ARGV, STATUS_ARGV
from dtagent.simulate import frames, make_host
from dtagent.snapshot import CommandRequest, CommandResult, CommandResults
from tests.helpers import Answers, Samples, collected, samples_of, snapshot_of
from tests.test_health_parsers import fixture


def answers(outputs: dict[tuple[str, ...], str]) -> Answers:
    return Answers(lambda argv: outputs.get(argv, ""))


class Failing:
    """A command source whose every command fails."""

    def results(self, requests: Sequence[CommandRequest]) -> CommandResults:
        def latest(req: CommandRequest) -> tuple[CommandResult, None]:
            return CommandResult(req.argv, 1, "", "internal error: out of memory\n"), None

        return CommandResults.select(requests, latest, 0.0)

    def settle(self, timeout: float) -> bool:
        return True


def test_zpool_real_degraded_status_and_list() -> None:
    got = collected(
        ZpoolCollector(),
        [],
        answers({
            LIST_ARGV: "zones\t3980232092549\t2957686278717\t1029718409216\t2\t74\t1.00\t"
                       "DEGRADED\n",
            STATUS_ARGV: fixture("zpool/status_degraded_scrub_errors_smartos.txt"),
        }),
    )
    assert got[("illumos_zpool_health", ("zones", "DEGRADED"))] == 1
    assert got[("illumos_zpool_health", ("zones", "ONLINE"))] == 0
    assert got[("illumos_zpool_capacity_ratio", ("zones",))] == 0.74
    disk = ("zones", "c0t0d0", "raidz1-0", "data")
    assert got[("illumos_zpool_vdev_checksum_errors_total", disk)] == 542
    assert got[("illumos_zpool_vdev_info", (*disk, "DEGRADED"))] == 1
    assert got[("illumos_zpool_scan_last_errors", ("zones", "scrub"))] == 0
    assert got[("illumos_zpool_scan_in_progress", ("zones", "scrub"))] == 0
    assert ("illumos_zpool_data_errors", ("zones",)) not in got  # cut before errors:


def test_zpool_resilver_in_progress() -> None:
    got = collected(ZpoolCollector(), [],
                    answers({STATUS_ARGV: fixture("zpool/status_resilver_illumos.txt")}))
    assert got[("illumos_zpool_scan_in_progress", ("big", "resilver"))] == 1
    assert got[("illumos_zpool_scan_progress_ratio", ("big", "resilver"))] == 0
    assert got[("illumos_zpool_data_errors", ("big",))] == 0


def test_unknown_health_sets_every_state_to_zero() -> None:
    got = collected(ZpoolCollector(), [],
                    answers({LIST_ARGV: "p\t1\t1\t0\t0\t100\t1.00\tWEIRD\n"}))
    health = {k[1][1]: v for k, v in got.items() if k[0] == "illumos_zpool_health"}
    assert len(health) == 7 and set(health.values()) == {0}


def test_failing_commands_give_no_series_and_no_error() -> None:
    for collector in (ZpoolCollector(), SmfCollector(), FmaCollector()):
        assert samples_of(collector, snapshot_of([collector], [], Failing())) == {}


def test_smf_counts_and_per_instance_state_sets() -> None:
    got = collected(SmfCollector(), [],
                    answers({SVCS_ARGV: fixture("smf/svcs_zones_illumos.txt")}))
    assert got[("illumos_smf_services", ("cube-pkgsrc", "maintenance"))] == 1
    assert got[("illumos_smf_services", ("cube-pkgsrc", "online"))] == 4
    assert got[("illumos_smf_services", ("global", "legacy_run"))] == 3
    states = {k[1]: v for k, v in got.items() if k[0] == "illumos_smf_service_state"}
    fmri = "svc:/system/filesystem/local:default"
    assert states[("cube-pkgsrc", fmri, "maintenance")] == 1
    assert states[("cube-pkgsrc", fmri, "online")] == 0
    assert {k[:2] for k in states} == {("cube-pkgsrc", fmri)}  # only the noisy one


def test_smf_bounds_its_per_instance_series() -> None:
    text = "".join(f"z{i} maintenance svc:/app/s{i}:default\n" for i in range(20))
    got = collected(SmfCollector(max_instances=5), [], answers({SVCS_ARGV: text}))
    assert len({k[1][:2] for k in got if k[0] == "illumos_smf_service_state"}) == 5
    assert got[("illumos_smf_service_state_omitted", ())] == 15


def test_fma_open_faults_and_modules() -> None:
    got = collected(FmaCollector(), [], answers({
        FMADM_ARGV: fixture("fma/fmadm_faulty_composed.txt"),
        FMSTAT_ARGV: fixture("fma/fmstat_illumos.txt"),
    }))
    assert got[("illumos_fma_open_faults", ())] == 2
    assert got[("illumos_fma_faults", ("fault.fs.zfs.vdev.checksum", "zfs"))] == 1
    assert got[("illumos_fma_module_open_cases", ("software-diagnosis",))] == 2
    assert got[("illumos_fma_module_events_received_total", ("zfs-diagnosis",))] == 35


def test_fma_healthy_host_exports_zero() -> None:
    got = collected(FmaCollector(), [], answers({}))
    assert got[("illumos_fma_open_faults", ())] == 0


def _run_of_simulated_host() -> list[Samples]:
    host = make_host(12, 1, 1_790_000_000.0, 60.0, 3600.0)
    history: dict[tuple[str, ...], CommandResult] = {}
    out: list[Samples] = []
    collectors = (ZpoolCollector(), SmfCollector(), FmaCollector())
    for frame in frames(host, 61):
        for res in frame.commands:
            history[res.argv] = res
        snap = snapshot_of(collectors, frame.snapshot(),
                           answers({a: r.stdout for a, r in history.items()}), frame.time)
        got: Samples = {}
        for c in collectors:
            got.update(samples_of(c, snap))
        out.append(got)
    return out


def test_simulated_host_degrades_resilvers_and_recovers() -> None:
    run = _run_of_simulated_host()
    first, middle, last = run[0], run[30], run[-1]
    assert first[("illumos_zpool_health", ("zones", "ONLINE"))] == 1
    assert middle[("illumos_zpool_health", ("zones", "DEGRADED"))] == 1
    assert middle[("illumos_zpool_scan_in_progress", ("zones", "resilver"))] == 1
    assert 0 < middle[("illumos_zpool_scan_progress_ratio", ("zones", "resilver"))] < 1
    assert middle[("illumos_fma_open_faults", ())] == 2
    assert last[("illumos_zpool_health", ("zones", "ONLINE"))] == 1
    assert last[("illumos_fma_open_faults", ())] == 1  # the SMF defect stays open
    maint = [k[1][:2] for k, v in last.items()
             if k[0] == "illumos_smf_service_state" and k[1][2] == "maintenance" and v == 1]
    assert len(maint) == 2 and ("global", "svc:/network/ntp:default") in maint
