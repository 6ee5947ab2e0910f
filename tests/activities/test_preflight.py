"""Preflight over the wire, against the default lab topology and its twelve deliberate problems."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from activities.hosts import HostSessions
from activities.inventory import load_inventory
from activities.preflight import UNKNOWN_INCOMPATIBILITY, PreflightActivities
from lab.lab import Lab
from lab.model import checks
from lab.model.topology import DEFAULT_TOPOLOGY, parse_topology
from workflows.contracts import Concern, PreflightInput, PreflightReport

pytestmark = pytest.mark.timeout(300)

FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10}
# Round trips of one preflight (activities/preflight.py): on the source its VMs and host facts, the VM's reads,
# then its VHDs with Compare-VM; on the destination its VMs and host facts, then the files and volume the move
# would use. Plus each session's open when the preflight opened it.
SOURCE_ROUND_TRIPS = 3
DESTINATION_ROUND_TRIPS = 2


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.from_topology(None, workdir=tmp_path_factory.mktemp("preflight"), time_scale=600.0, control_port=None)
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def activities(lab: Lab) -> PreflightActivities:
    return PreflightActivities(load_inventory(lab.inventory_path), **FAST)


def ids(report: PreflightReport) -> dict[str, str]:
    return {concern.id: concern.severity for concern in report.concerns}


def test_clean_pair_has_no_blockers(activities: PreflightActivities) -> None:
    report = activities.preflight(PreflightInput("web07", "HV-S2", "HV-S4"))
    print(report.round_trips, [(c.id, c.severity) for c in report.concerns])
    assert report.ok, report.blockers
    assert report.facts is not None
    assert report.facts["vm.state"] == "Running"


# (problem marker in default.yaml, vm, source, destination, concern id, severity)
PROBLEMS = [
    ("switch-missing", "bak01", "HV-S2", "HV-S4", "switch-missing", "blocker"),
    ("cpu-vendor", "web05", "HV-S1", "HV-S3", "cpu-vendor-mismatch", "blocker"),
    ("passthrough-disk", "sql03", "HV-S1", "HV-S2", "passthrough-disk", "blocker"),
    ("iso-missing", "file02", "HV-S2", "HV-S4", "iso-missing-on-destination", "warning"),
    ("backup-in-progress", "file03", "HV-S2", "HV-S4", "backup-in-progress", "blocker"),
    ("version-too-new", "app-legacy01", "HV-S1", "HV-OLD", "config-version-unsupported", "blocker"),
    ("firewall-6600", "web07", "HV-S2", "HV-S1", "firewall-6600-closed", "blocker"),
    ("ms-server-unbound", "web07", "HV-S2", "HV-E2", "binding-missing", "blocker"),
    ("smb2-off", "app-legacy01", "HV-S1", "HV-OLD", "smb2-disabled", "blocker"),
    ("volume-nearly-full", "web08", "HV-S2", "HV-W1", "disk-space", "blocker"),
    ("memory-tight", "app06", "HV-S2", "HV-W2", "memory", "blocker"),
    ("checkpoints", "app07", "HV-S2", "HV-S4", "checkpoints", "warning"),
]


def test_every_documented_problem_is_covered(lab: Lab) -> None:
    documented = {problem["id"] for problem in lab.truth()["documented_problems"]}
    assert documented == {p[0] for p in PROBLEMS}


@pytest.mark.parametrize(("problem", "vm", "source", "destination", "concern", "severity"), PROBLEMS, ids=lambda v: v)
def test_problem_found(
    activities: PreflightActivities,
    problem: str,
    vm: str,
    source: str,
    destination: str,
    concern: str,
    severity: str,
) -> None:
    report = activities.preflight(PreflightInput(vm, source, destination))
    found = ids(report)
    print(problem, report.round_trips, found)
    assert found.get(concern) == severity, found
    match = next(c for c in report.concerns if c.id == concern)
    assert match.remedy
    assert vm in match.message or destination in match.message or source in match.message
    if concern == "iso-missing-on-destination":
        assert match.auto_remediable


def test_side_concerns(activities: PreflightActivities) -> None:
    # HV-S1 keeps Hyper-V's defaults: live migration disabled, which the saga fixes.
    report = activities.preflight(PreflightInput("web05", "HV-S1", "HV-S2"))
    found: dict[str, Concern] = {c.id: c for c in report.concerns}
    assert found["live-migration-disabled"].severity == "warning"
    assert found["live-migration-disabled"].auto_remediable
    # A clustered VM: info, the saga removes HA.
    report = activities.preflight(PreflightInput("web01", "HV-E1", "HV-E2"))
    assert ids(report).get("vm-clustered") == "info"
    # Compare-VM refuses a clustered VM: said once, as info, not as a failed check.
    assert ids(report).get("compare-vm-after-ha-removal") == "info"
    assert "compare-vm-failed" not in ids(report)


def test_round_trips_are_few(lab: Lab) -> None:
    # Sessions of its own, so that the first preflight opens them and the second finds them open.
    sessions = HostSessions(load_inventory(lab.inventory_path), **FAST)
    preflight = PreflightActivities(load_inventory(lab.inventory_path), sessions=sessions)
    try:
        first = preflight.preflight(PreflightInput("file02", "HV-S2", "HV-S4"))
        again = preflight.preflight(PreflightInput("file02", "HV-S2", "HV-S4"))
    finally:
        sessions.close_all()
    print("round trips per host, opening the sessions:", first.round_trips, "reusing them:", again.round_trips)
    assert first.round_trips == {"HV-S2": SOURCE_ROUND_TRIPS + 1, "HV-S4": DESTINATION_ROUND_TRIPS + 1}
    assert again.round_trips == {"HV-S2": SOURCE_ROUND_TRIPS, "HV-S4": DESTINATION_ROUND_TRIPS}
    assert dataclasses.replace(first, round_trips=None) == dataclasses.replace(again, round_trips=None)


def test_preflight_changes_nothing(lab: Lab, activities: PreflightActivities) -> None:
    before = lab.truth()
    for vm, source, destination in [
        ("bak01", "HV-S2", "HV-S4"),
        ("web07", "HV-S2", "HV-S1"),
        ("sql03", "HV-S1", "HV-S2"),
    ]:
        activities.preflight(PreflightInput(vm, source, destination))
    after = lab.truth()
    assert after["move_starts"] == before["move_starts"]
    assert after["vms"] == before["vms"]
    assert after["locations"] == before["locations"]
    for key in ("hosts", "clusters", "jobs"):
        assert _stable(after[key]) == _stable(before[key]), key


def _stable(value: Any) -> Any:
    """The truth without the fields that move with the clock (uptimes, timestamps)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(t in k.lower() for t in ("time", "uptime", "at"))}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_a_storage_path_on_a_volume_the_destination_lacks_is_one_blocker_that_names_it(
    activities: PreflightActivities,
) -> None:
    """Get-Volume of a drive the host has not is ObjectNotFound: a fact about the path, not a preflight that fails
    (it raised an unknown error and was retried before); Compare-VM's findings about the same folders fold into it."""
    report = activities.preflight(PreflightInput("web07", "HV-S2", "HV-S4", "Q:\\Moved\\web07"))
    assert ids(report) == {"destination-path": "blocker"}
    (concern,) = report.concerns
    assert concern.message.startswith("HV-S4 has no Q: volume, where web07's files would go (Q:\\Moved\\web07).")
    assert "MessageId 13000" in concern.message
    assert concern.host == "HV-S4"
    assert report.summary is not None
    assert report.summary.storage_path == "Q:\\Moved\\web07"


def test_unknown_vm_is_a_blocker(activities: PreflightActivities) -> None:
    report = activities.preflight(PreflightInput("ghost", "HV-S2", "HV-S4"))
    assert ids(report) == {"vm-not-found": "blocker"}
    assert "ghost" in report.concerns[0].message
    assert not report.ok


def test_vm_already_on_destination_is_info(activities: PreflightActivities) -> None:
    # web07 runs on HV-S2: asked to move it from HV-S4 to HV-S2, there is nothing to move.
    report = activities.preflight(PreflightInput("web07", "HV-S4", "HV-S2"))
    assert ids(report) == {"vm-already-on-destination": "info"}
    assert report.ok


def test_hosts_that_cannot_reach_each_other_are_a_blocker_not_a_retry(
    lab: Lab, activities: PreflightActivities
) -> None:
    # A partition between the hosts is a fact preflight reports (Compare-VM and Test-NetConnection both fail on
    # TCP 6600), not a transient failure of preflight's own sessions to retry.
    fault = lab.inject_fault("partition", hosts=["HV-S2", "HV-S4"], seconds=600)
    try:
        report = activities.preflight(PreflightInput("web07", "HV-S2", "HV-S4"))
    finally:
        lab.clear_fault(fault["id"])
    assert ids(report).get("port-6600-unreachable") == "blocker"
    assert not report.ok


# -- names taken literally ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["web0[78]", "*", "web0?", "WEB0*"])
def test_a_pattern_is_no_vm_and_blames_no_other(lab: Lab, activities: PreflightActivities, pattern: str) -> None:
    # HV-S2 runs web07, web08 and more; the hosts would take each of these as a pattern matching several.
    before = lab.truth()
    report = activities.preflight(PreflightInput(pattern, "HV-S2", "HV-S4"))
    assert not report.ok
    assert ids(report) == {"vm-not-found": "blocker"}, report.concerns
    assert f"'{pattern}'" in report.concerns[0].message
    after = lab.truth()
    for key in ("vms", "locations", "move_starts", "jobs"):
        assert after[key] == before[key], key


# -- Compare-VM's ids are the host's, not snlm's --------------------------------------------------------------------
RENUMBERED = {check: 96000 + index for index, check in enumerate(sorted(checks.MESSAGE_IDS))}


@pytest.fixture(scope="module")
def renumbered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreflightActivities]:
    """The default estate behind hosts that give every Compare-VM finding an id snlm has never seen."""
    raw = yaml.safe_load(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
    raw.setdefault("lab", {})["compare_vm_message_ids"] = RENUMBERED
    lab = Lab(
        parse_topology(raw, source="renumbered"),
        workdir=tmp_path_factory.mktemp("renumbered"),
        topology_path=DEFAULT_TOPOLOGY,
        time_scale=600.0,
        control_port=None,
    ).start()
    yield PreflightActivities(load_inventory(lab.inventory_path), **FAST)
    lab.stop()


def verdict(report: PreflightReport) -> set[tuple[str, str, bool]]:
    return {(c.id, str(c.severity), c.auto_remediable) for c in report.concerns}


@pytest.mark.parametrize(
    ("vm", "source", "destination"),
    [(p[1], p[2], p[3]) for p in PROBLEMS] + [("web07", "HV-S2", "HV-S4")],
    ids=lambda v: v,
)
def test_verdicts_do_not_depend_on_the_hosts_ids(
    activities: PreflightActivities, renumbered: PreflightActivities, vm: str, source: str, destination: str
) -> None:
    request = PreflightInput(vm, source, destination)
    usual, other = activities.preflight(request), renumbered.preflight(request)
    assert verdict(other) == verdict(usual)
    assert other.ok == usual.ok


def test_the_iso_stays_the_warning_the_saga_fixes(renumbered: PreflightActivities) -> None:
    report = renumbered.preflight(PreflightInput("file02", "HV-S2", "HV-S4"))
    assert report.ok, report.blockers
    (iso,) = [c for c in report.concerns if c.id == "iso-missing-on-destination"]
    assert iso.auto_remediable
    assert f"MessageId {RENUMBERED['iso']}, Source DvdDrive" in iso.message  # the host's word, quoted


def test_an_unknown_id_is_a_blocker_that_quotes_the_host(
    activities: PreflightActivities, renumbered: PreflightActivities
) -> None:
    # A move without storage: web07's VHD is on a local volume of HV-S2 that HV-S4 cannot open. snlm reads
    # nothing that says so; only Compare-VM does.
    request = PreflightInput("web07", "HV-S2", "HV-S4", include_storage=False)
    known = activities.preflight(request)
    assert ids(known).get("vhd-not-reachable") == "blocker"  # VhdFileMissing, 40010
    report = renumbered.preflight(request)
    assert not report.ok
    (unknown,) = [c for c in report.blockers if c.id == UNKNOWN_INCOMPATIBILITY]
    assert "Failed to open attachment" in unknown.message
    assert f"MessageId {RENUMBERED['vhd_not_reachable']}" in unknown.message
    assert "Source HardDiskDrive" in unknown.message
    assert unknown.remedy
