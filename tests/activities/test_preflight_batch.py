"""Preflight's round trips, the facts it hands the saga, and the preflight of several VMs of one host pair.

Over the wire, against the default lab estate and the estate of hostile names (tests/lab/hostile_names.py). A
preflight reads each host in few batches (activities/preflight.py); a batch preflight makes each host's reads once
for all its VMs and one round trip per VM for its Compare-VM, and finds for each VM what a preflight of that VM
alone finds.
"""

from __future__ import annotations

import dataclasses
import ntpath
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio.converter import DataConverter
from temporalio.testing import ActivityEnvironment

from activities import preflight as preflight_module
from activities.hosts import Command, HostSessions
from activities.inventory import Inventory, load_inventory
from activities.migration import MigrationActivities
from activities.preflight import PreflightActivities
from lab.lab import Lab
from tests.lab import hostile_names as h
from workflows.contracts import (
    VM_NOT_FOUND,
    ConcernId,
    HostRef,
    MoveInput,
    PreflightBatchInput,
    PreflightBatchReport,
    PreflightInput,
    PreflightReport,
    PreflightVm,
    VmOnHost,
)

pytestmark = pytest.mark.timeout(300)

FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10}
# One round trip per VM in a batch: its VHDs and Compare-VM (whose errors are told apart by statement only).
PER_VM = 1
# A batch's round trips whatever its VMs, sessions open: the source's VMs and host facts, then its VMs' reads;
# the destination's VMs and host facts, then the files and volumes the moves would use.
SHARED = {"source": 2, "destination": 2}
ELSEWHERE = r"D:\Hyper-V\elsewhere"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.from_topology(
        None, workdir=tmp_path_factory.mktemp("preflight-batch"), time_scale=600.0, control_port=None
    )
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = h.hostile_lab(tmp_path_factory.mktemp("preflight-batch-hostile"))
    yield lab
    lab.stop()


@dataclasses.dataclass
class Pool:
    """A lab's inventory, one pool of sessions, and the activities over it."""

    inventory: Inventory
    sessions: HostSessions

    @property
    def preflight(self) -> PreflightActivities:
        return PreflightActivities(self.inventory, sessions=self.sessions)

    @property
    def migration(self) -> MigrationActivities:
        return MigrationActivities(self.inventory, poll_seconds=0.05, sessions=self.sessions)


@pytest.fixture
def pool(lab: Lab) -> Iterator[Pool]:
    inventory = load_inventory(lab.inventory_path)
    sessions = HostSessions(inventory, **FAST)
    yield Pool(inventory, sessions)
    sessions.close_all()


@pytest.fixture
def hostile_pool(hostile: Lab) -> Iterator[Pool]:
    inventory = load_inventory(hostile.inventory_path)
    sessions = HostSessions(inventory, **FAST)
    yield Pool(inventory, sessions)
    sessions.close_all()


def without_trips(report: PreflightReport) -> PreflightReport:
    return dataclasses.replace(report, round_trips=None)


def batch(source: str, destination: str, vms: Sequence[str | PreflightVm]) -> PreflightBatchInput:
    return PreflightBatchInput(source, destination, tuple(PreflightVm(v) if isinstance(v, str) else v for v in vms))


def alone(preflight: PreflightActivities, request: PreflightBatchInput) -> list[PreflightReport]:
    return [
        preflight.preflight(PreflightInput(vm.vm, request.source, request.destination, vm.storage_path))
        for vm in request.vms
    ]


def ids(report: PreflightReport) -> dict[str, str]:
    return {concern.id: concern.severity for concern in report.concerns}


def vm_id_on(pool: Pool, name: str, host: str) -> str:
    return pool.migration.read_vm(VmOnHost(name, host)).vm_id.lower()


# -- what one preflight hands the saga ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("vm", "source", "destination"),
    [
        ("web07", "HV-S2", "HV-S4"),  # clean
        ("file02", "HV-S2", "HV-S4"),  # two disks, an ISO
        ("sql03", "HV-S1", "HV-S2"),  # a pass-through disk: no VHD file of it
        ("app07", "HV-S2", "HV-S4"),  # checkpoints
        ("web01", "HV-E1", "HV-E2"),  # clustered, both hosts nodes
        ("app-legacy01", "HV-S1", "HV-OLD"),  # live migration off on the source, an older destination
    ],
    ids=lambda v: v,
)
def test_preflight_reads_the_vm_and_the_settings_as_the_saga_would(
    pool: Pool, vm: str, source: str, destination: str
) -> None:
    report = pool.preflight.preflight(PreflightInput(vm, source, destination))
    facts = pool.migration.read_vm(VmOnHost(vm, source))
    settings = tuple(pool.migration.read_migration_settings(HostRef(host)) for host in (source, destination))
    summary = report.summary
    assert summary is not None
    print(vm, report.round_trips, summary.vm_files)
    assert summary.vm_read
    assert summary.vm_files == facts.files
    assert summary.vm_id == facts.vm_id.lower()
    assert summary.clustered == facts.clustered
    assert summary.settings == settings
    # The storage path preflight checked (the destination's VirtualMachinePath and the VM's name): the move's.
    with pool.sessions.session(destination) as client:
        base = client.run("Get-VMHost").output[0]["VirtualMachinePath"]
    assert summary.storage_path == ntpath.join(base, vm)
    given = pool.preflight.preflight(PreflightInput(vm, source, destination, "E:\\Moved\\" + vm)).summary
    assert given is not None
    assert given.storage_path == "E:\\Moved\\" + vm
    assert sum((report.round_trips or {}).values()) <= 8  # both sessions' opens included


def test_no_vm_no_facts_for_the_saga(pool: Pool) -> None:
    report = pool.preflight.preflight(PreflightInput("ghost", "HV-S2", "HV-S4"))
    assert report.summary is not None
    assert not report.summary.vm_read
    assert report.summary.vm_files == ()
    assert report.summary.settings == ()
    # The VM list of each host, and nothing else (the sessions' opens included).
    assert report.round_trips == {"HV-S2": 2, "HV-S4": 2}


# -- several VMs of one pair ---------------------------------------------------------------------------------
def test_a_batch_finds_for_each_vm_what_its_own_preflight_finds(lab: Lab, pool: Pool) -> None:
    # Every VM of HV-S2, moved to HV-S4: a clean one, a missing switch, an ISO, a backup running, checkpoints...
    names = sorted({vm["name"] for vm in lab.truth()["vms"] if vm["host"] == "HV-S2" and not vm["planned"]})
    request = batch("HV-S2", "HV-S4", [*names, PreflightVm("web07", storage_path=r"D:\Hyper-V\web07-copy")])
    result = pool.preflight.preflight_batch(request)
    singles = alone(pool.preflight, request)
    print("batch:", result.round_trips, "one by one:", [r.round_trips for r in singles])
    assert [r.vm for r in result.reports] == [vm.vm for vm in request.vms]
    assert [without_trips(r) for r in result.reports] == [without_trips(r) for r in singles]
    assert {ConcernId.SWITCH_MISSING, ConcernId.ISO_MISSING_ON_DESTINATION, ConcernId.CHECKPOINTS} <= {
        c.id for r in result.reports for c in r.concerns
    }
    for report in result.reports:
        assert report.round_trips == {"HV-S2": PER_VM, "HV-S4": 0}
    # The batch opened both sessions: one round trip each, besides its reads.
    assert result.round_trips == {
        "HV-S2": 1 + SHARED["source"] + PER_VM * len(request.vms),
        "HV-S4": 1 + SHARED["destination"],
    }


def test_round_trips_grow_by_a_small_constant_per_vm(hostile_pool: Pool) -> None:
    names = [*h.HOSTILE, *h.SIBLINGS[:3]]
    assert len(names) == 10
    preflight = hostile_pool.preflight
    preflight.preflight_batch(batch("HV-A", "HV-B", names[:1]))  # the sessions opened, then reused
    trips = {n: preflight.preflight_batch(batch("HV-A", "HV-B", names[:n])).round_trips for n in (1, 5, 10)}
    singles = alone(preflight, batch("HV-A", "HV-B", names))
    print("batch of 1, 5, 10:", trips, "; ten alone:", sum(sum((r.round_trips or {}).values()) for r in singles))
    for n, per_host in trips.items():
        assert per_host == {"HV-A": SHARED["source"] + PER_VM * n, "HV-B": SHARED["destination"]}, n
    ten = preflight.preflight_batch(batch("HV-A", "HV-B", names))
    assert [without_trips(r) for r in ten.reports] == [without_trips(r) for r in singles]


def test_a_batch_reports_an_unknown_vm_and_a_hostile_name_each_on_its_own(hostile_pool: Pool) -> None:
    request = batch(
        "HV-A",
        "HV-B",
        [
            "web08",
            "ghost",  # on neither host
            h.STAR,  # a name Hyper-V would take as a pattern matching "ab" and "axb"
            "web*",  # a pattern, no VM's name
            h.TWIN,  # two VMs of that name
            h.CLASH,  # another VM of that name on the destination
            "web07",  # on the destination already
            PreflightVm(h.QMARK, storage_path=ELSEWHERE),  # an ISO only the source has
        ],
    )
    result = hostile_pool.preflight.preflight_batch(request)
    by_vm = {r.vm: r for r in result.reports}
    assert len(by_vm) == len(request.vms)
    assert ids(by_vm["ghost"]) == {ConcernId.VM_NOT_FOUND: "blocker"}
    assert ids(by_vm["web*"]) == {ConcernId.VM_NOT_FOUND: "blocker"}
    assert ids(by_vm[h.TWIN]) == {ConcernId.VM_NAME_AMBIGUOUS: "blocker"}
    assert ids(by_vm["web07"]) == {ConcernId.VM_ALREADY_ON_DESTINATION: "info"}
    assert ids(by_vm[h.CLASH]).get(ConcernId.VM_NAME_CLASH) == "blocker"
    assert ids(by_vm[h.QMARK]).get(ConcernId.ISO_MISSING_ON_DESTINATION) == "warning"
    assert by_vm["web08"].ok
    star = by_vm[h.STAR]
    assert star.summary is not None
    assert star.facts is not None
    assert star.summary.vm_id == vm_id_on(hostile_pool, h.STAR, "HV-A")
    assert ConcernId.VM_NOT_FOUND not in ids(star)
    assert [without_trips(r) for r in result.reports] == [
        without_trips(r) for r in alone(hostile_pool.preflight, request)
    ]
    for report in result.reports:
        assert report.round_trips == {"HV-A": PER_VM if report.summary and report.summary.vm_id else 0, "HV-B": 0}


def test_a_batch_of_many_vms_reads_them_in_chunks(hostile_pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three VMs per batch of reads instead of twenty: ten VMs need four batches on each host, and find the same.
    monkeypatch.setattr(preflight_module, "_VMS_PER_BATCH", 3)
    names = [*h.HOSTILE, *h.SIBLINGS[:3]]
    preflight = hostile_pool.preflight
    singles = alone(preflight, batch("HV-A", "HV-B", names))
    result = preflight.preflight_batch(batch("HV-A", "HV-B", names))
    print(result.round_trips)
    assert result.round_trips == {"HV-A": 1 + 4 + PER_VM * len(names), "HV-B": 1 + 4}
    assert [without_trips(r) for r in result.reports] == [without_trips(r) for r in singles]


def test_what_a_failed_move_left_is_read_once_for_the_batch(tmp_path: Path) -> None:
    with h.hostile_labs(tmp_path) as make:
        lab = make()
        inventory = load_inventory(lab.inventory_path)
        sessions = HostSessions(inventory, **FAST)
        try:
            pool = Pool(inventory, sessions)
            facts = pool.migration.read_vm(VmOnHost(h.BRACKETS, "HV-A"))
            lab.inject_fault("fail_move_at", vm=h.BRACKETS, percent=40, action="partition", partition_seconds=1)
            with pytest.raises(Exception):  # noqa: B017, PT011 - the move fails as the fault says; its type is not ours
                ActivityEnvironment().run(
                    pool.migration.start_or_attach_move, MoveInput(h.BRACKETS, facts.vm_id, "HV-A", "HV-B")
                )
            wait_for(lambda: not any(f["kind"] == "partition" for f in lab.list_faults()))
            request = batch("HV-A", "HV-B", [h.BRACKETS, "web1", "web08"])
            singles = alone(pool.preflight, request)
            assert ids(singles[0]) == {ConcernId.DESTINATION_LEFTOVERS: "warning"}
            result = pool.preflight.preflight_batch(request)
        finally:
            sessions.close_all()
    assert [without_trips(r) for r in result.reports] == [without_trips(r) for r in singles]
    # Whose disks the files left there are: one more read of the destination, for the whole batch.
    # (The sessions were open already.)
    assert result.round_trips == {"HV-A": SHARED["source"] + PER_VM * 3, "HV-B": SHARED["destination"] + 1}


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reads_cut_short_by_a_statement_that_ends_the_batch_are_read_again(hostile_pool: Pool) -> None:
    # An error under -ErrorAction Stop ends the whole invocation where it stands: the reads after it run unseen, so
    # they go again, and each result is that of its own statement.
    stop = Command("Get-VM", {"Id": [uuid.UUID(int=7)], "ErrorAction": "Stop"})
    with hostile_pool.sessions.session("HV-A") as client:
        before = client.round_trips
        host, missing, switches = preflight_module._read(client, [Command("Get-VMHost"), stop, Command("Get-VMSwitch")])
        trips = client.round_trips - before
    assert trips == 2
    assert host.ok
    assert host.output[0]["Name"] == "HV-A"
    assert missing.errors
    assert missing.errors[0].error_type == VM_NOT_FOUND
    assert switches.ok
    assert [s["Name"] for s in switches.output] == ["Production"]


def test_a_batch_of_no_vm_reads_nothing(hostile_pool: Pool) -> None:
    assert hostile_pool.preflight.preflight_batch(PreflightBatchInput("HV-A", "HV-B", ())) == PreflightBatchReport(
        (), {}
    )
    assert hostile_pool.sessions.stats().opened == 0


# -- as an activity ------------------------------------------------------------------------------------------
def test_the_activity_heartbeats_per_vm_and_its_report_crosses_the_wire(hostile_pool: Pool) -> None:
    request = batch("HV-A", "HV-B", ["web08", h.BRACKETS, "ghost"])
    env = ActivityEnvironment()
    beats: list[str] = []
    env.on_heartbeat = lambda *details: beats.extend(str(d) for d in details)
    result = env.run(hostile_pool.preflight.preflight_batch, request)
    print(beats)
    for vm in ("web08", h.BRACKETS):
        assert any(vm in beat and "compared" in beat for beat in beats), (vm, beats)
    # What Temporal stores and hands the workflow: the same report, typed.
    converter = DataConverter.default.payload_converter
    (back,) = converter.from_payloads(converter.to_payloads([result]), [PreflightBatchReport])
    assert back == result
