"""The saga's host activities over the wire, against labs (lab.lab.Lab) reached only through their inventories.

No mock of pypsrp: every call talks WinRM/PSRP to simulated Hyper-V hosts, and the lab's truth (not the
activities' own answers) decides whether the world is as it should be. The move tests run the activity inside
temporalio.testing.ActivityEnvironment, which gives it heartbeats, heartbeat details and real cancellation (an
exception thrown into the activity's thread, as a worker does).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from activities.errors import SnlmError
from activities.hosts import Command, HostClient, SessionReport, add_session_observer
from activities.inventory import load_inventory
from activities.migration import ISO_MISSING, MigrationActivities, _pace
from lab.lab import Lab
from lab.model.topology import DEFAULT_TOPOLOGY
from workflows import contracts as c
from workflows.contracts import (
    CleanupInput,
    EnsureSettingsInput,
    EnsureSettingsResult,
    HostRef,
    MigrationAuthentication,
    MigrationPerformance,
    MoveHeartbeat,
    MoveInput,
    PurgeTicketsInput,
    RemediateInput,
    RestoreClusterRoleInput,
    VerifyInput,
    VmFacts,
    VmOnHost,
)
from workflows.settings_plan import settings_in_place

pytestmark = pytest.mark.timeout(120)

PAIR = DEFAULT_TOPOLOGY.parent / "pair.yaml"
FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10, "command_timeout": 60.0}
POLL = 0.05
KERBEROS, COMPRESSION = MigrationAuthentication.KERBEROS, MigrationPerformance.COMPRESSION


def _activities(lab: Lab) -> MigrationActivities:
    return MigrationActivities(load_inventory(lab.inventory_path), poll_seconds=POLL, terminate_timeout=30.0, **FAST)


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The default topology (clusters, defaults-only HV-S1, the ISO problem); tests here put back what they change."""
    lab = Lab.from_topology(
        None, workdir=tmp_path_factory.mktemp("migration-estate"), time_scale=600.0, control_port=None
    )
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """A fresh two-host lab per call (it starts in milliseconds): moves change the world."""
    started: list[Lab] = []

    def make(time_scale: float = 600.0) -> Lab:
        lab = Lab.from_topology(
            PAIR, workdir=tmp_path / f"pair-{len(started)}", time_scale=time_scale, control_port=None
        ).start()
        started.append(lab)
        return lab

    yield make
    for lab in started:
        lab.stop()


class Recorder:
    """An ActivityEnvironment whose heartbeats are kept, with a hook to act on them."""

    def __init__(self) -> None:
        self.env = ActivityEnvironment()
        self.beats: list[Any] = []
        self.on_beat: Callable[[Any], None] = lambda detail: None
        self.env.on_heartbeat = self._beat

    def _beat(self, *details: Any) -> None:
        self.beats.extend(details)
        for detail in details:
            self.on_beat(detail)

    @property
    def moves(self) -> list[MoveHeartbeat]:
        return [beat for beat in self.beats if isinstance(beat, MoveHeartbeat)]


def _truth_vm(lab: Lab, name: str) -> list[dict[str, Any]]:
    return [vm for vm in lab.truth()["vms"] if vm["name"] == name]


def _starts(lab: Lab, vm_id: str) -> int:
    return int(lab.truth()["move_starts"].get(vm_id.lower(), {}).get("starts", 0))


def _files_under(lab: Lab, host: str, folder: str) -> list[str]:
    prefix = folder.lower().rstrip("\\") + "\\"
    return [f["path"] for f in lab.truth()["hosts"][host]["files"] if f["path"].lower().startswith(prefix)]


def _settings_truth(lab: Lab, host: str) -> dict[str, Any]:
    entry = lab.truth()["hosts"][host]
    return {key: entry[key] for key in ("live_migration", "migration_networks", "firewall_live_migration_open")}


def _calls(reports: list[SessionReport], host: str) -> Counter[str]:
    calls = Counter[str]()
    for report in reports:
        if report.host == host:
            calls.update(report.calls)
    return calls


def _copy_realized(lab: Lab, vm_id: str, source: str, destination: str) -> None:
    """Register a realized copy of the VM on `destination` too, as a move half undone by hand would leave it."""
    with lab.world.lock:
        original = lab.world.hosts[source].vms[uuid.UUID(vm_id)]
        lab.world.hosts[destination].vms[original.id] = copy.deepcopy(original)


def _move(acts: MigrationActivities, facts: VmFacts, destination: str) -> MoveInput:
    return MoveInput(facts.vm, facts.vm_id, facts.host, destination)


# -- host settings ----------------------------------------------------------------------------------------------
def test_settings_ensure_then_restore_puts_everything_back(estate: Lab) -> None:
    # HV-S1 keeps Hyper-V's defaults: migration off, CredSSP, no networks; its TCP 6600 rule is disabled.
    acts = _activities(estate)
    before = _settings_truth(estate, "HV-S1")
    assert before["live_migration"]["enabled"] is False
    assert before["firewall_live_migration_open"] is False

    ensured = acts.ensure_migration_settings(
        EnsureSettingsInput("HV-S1", KERBEROS, COMPRESSION, ("10.10.10.0/24", "10.20.0.0/16"))
    )
    assert ensured.changed
    assert ensured.previous.enabled is False
    assert ensured.previous.authentication == "CredSSP"
    assert ensured.previous.networks == ()
    assert not ensured.previous.firewall_rule_enabled
    assert ensured.current.max_vm_migrations == before["live_migration"]["max_vm_migrations"]
    during = _settings_truth(estate, "HV-S1")
    assert during["live_migration"]["enabled"] is True
    assert during["live_migration"]["authentication"] == "Kerberos"
    assert during["live_migration"]["use_any_network"] is False
    assert {n["subnet"] for n in during["migration_networks"]} == {"10.10.10.0/24", "10.20.0.0/16"}
    assert during["firewall_live_migration_open"] is True
    assert {s for s, _ in ensured.current.networks} == {"10.10.10.0/24", "10.20.0.0/16"}

    # At-least-once: a second run changes nothing and reports the state it found.
    request = EnsureSettingsInput("HV-S1", KERBEROS, COMPRESSION, ("10.10.10.0/24", "10.20.0.0/16"))
    again = acts.ensure_migration_settings(request)
    assert not again.changed
    assert again.previous == ensured.current
    # The saga's judgement from a reading agrees with the host: what the ensure left is in place, what it found
    # was not (so the saga skips the first and calls the activity for the second).
    reading = acts.read_migration_settings(HostRef("HV-S1"))
    assert settings_in_place(reading, request) == EnsureSettingsResult(reading, reading, changed=False)
    assert settings_in_place(ensured.previous, request) is None

    acts.restore_migration_settings(ensured.previous)
    assert _settings_truth(estate, "HV-S1") == before
    acts.restore_migration_settings(ensured.previous)  # idempotent
    assert _settings_truth(estate, "HV-S1") == before


def test_settings_without_networks_use_any_network_and_restore(estate: Lab) -> None:
    acts = _activities(estate)
    before = _settings_truth(estate, "HV-S1")
    ensured = acts.ensure_migration_settings(EnsureSettingsInput("HV-S1", KERBEROS, MigrationPerformance.TCPIP))
    assert ensured.current.use_any_network
    assert ensured.current.performance == "TCPIP"
    during = _settings_truth(estate, "HV-S1")["live_migration"]
    assert during["use_any_network"] is True
    assert during["performance"] == "TCPIP"
    acts.restore_migration_settings(ensured.previous)
    assert _settings_truth(estate, "HV-S1") == before


def test_settings_already_in_place_change_nothing(pair: Callable[..., Lab]) -> None:
    lab = pair()
    acts = _activities(lab)
    before = _settings_truth(lab, "HV-A")
    ensured = acts.ensure_migration_settings(EnsureSettingsInput("HV-A", KERBEROS, COMPRESSION, ("10.10.10.0/24",)))
    assert not ensured.changed
    assert ensured.previous == ensured.current
    assert ensured.current.networks == (("10.10.10.0/24", 1),)
    assert ensured.current.max_vm_migrations == 2
    assert _settings_truth(lab, "HV-A") == before


# -- cluster HA -------------------------------------------------------------------------------------------------
def _role(lab: Lab, cluster: str, name: str) -> dict[str, Any] | None:
    roles = lab.truth()["clusters"][cluster]["roles"]
    return next((role for role in roles if role["name"] == name), None)


def test_cluster_role_snapshot_remove_restore(estate: Lab) -> None:
    acts = _activities(estate)
    before = _role(estate, "CL-EAST", "web02")
    assert before is not None
    assert before["preferred_owners"] == ["HV-E2", "HV-E1"]

    snapshot = acts.snapshot_cluster_role(VmOnHost("web02", "HV-E2"))
    assert snapshot.clustered
    assert snapshot.cluster == "CL-EAST"
    assert snapshot.group == "web02"
    assert snapshot.owner_node == "HV-E2"
    assert snapshot.preferred_owners == ("HV-E2", "HV-E1")
    assert snapshot.priority == 3000
    assert snapshot.anti_affinity_class_names == ("web",)

    acts.remove_cluster_role(snapshot)
    assert _role(estate, "CL-EAST", "web02") is None
    vm = _truth_vm(estate, "web02")[0]
    assert vm["clustered"] is False
    assert vm["state"] == "Running"
    assert vm["host"] == "HV-E2"
    acts.remove_cluster_role(snapshot)  # already gone: success
    assert not acts.snapshot_cluster_role(VmOnHost("web02", "HV-E2")).clustered

    acts.restore_cluster_role(RestoreClusterRoleInput(snapshot, "HV-E2"))
    after = _role(estate, "CL-EAST", "web02")
    assert after is not None
    assert after["owner_node"] == "HV-E2"
    assert after["state"] == "Online"
    assert after["preferred_owners"] == ["HV-E2", "HV-E1"]
    assert after["vm_id"] == before["vm_id"]
    assert _truth_vm(estate, "web02")[0]["clustered"] is True
    acts.restore_cluster_role(RestoreClusterRoleInput(snapshot, "HV-E2"))  # already clustered: success
    assert [r["name"] for r in estate.truth()["clusters"]["CL-EAST"]["roles"]].count("web02") == 1


def test_cluster_snapshot_of_a_standalone_vm(estate: Lab) -> None:
    acts = _activities(estate)
    snapshot = acts.snapshot_cluster_role(VmOnHost("web07", "HV-S2"))
    assert not snapshot.clustered
    acts.remove_cluster_role(snapshot)  # nothing to do
    acts.restore_cluster_role(RestoreClusterRoleInput(snapshot, "HV-S2"))
    assert _truth_vm(estate, "web07")[0]["clustered"] is False


# -- tickets, remediation, read ---------------------------------------------------------------------------------
def test_purge_tickets_on_each_host(pair: Callable[..., Lab]) -> None:
    lab = pair()
    for name in ("HV-A", "HV-B"):
        lab.world.hosts[name].ticket_cache["stale"] = frozenset({"cifs/peer"})
    _activities(lab).purge_tickets(PurgeTicketsInput(("HV-A", "HV-B")))
    assert not lab.world.hosts["HV-A"].ticket_cache
    assert not lab.world.hosts["HV-B"].ticket_cache


def test_remediate_ejects_the_iso_and_ignores_unknown_concerns(estate: Lab) -> None:
    acts = _activities(estate)
    assert _truth_vm(estate, "file02")[0]["iso"]
    result = acts.remediate(RemediateInput("file02", "HV-S2", (ISO_MISSING, "no-such-concern")))
    assert result.fixed == (ISO_MISSING,)
    assert _truth_vm(estate, "file02")[0]["iso"] == []
    assert acts.remediate(RemediateInput("file02", "HV-S2", (ISO_MISSING,))).fixed == (ISO_MISSING,)  # idempotent
    assert acts.remediate(RemediateInput("file02", "HV-S2", ("memory",))).fixed == ()


def test_read_vm(pair: Callable[..., Lab]) -> None:
    lab = pair()
    facts = _activities(lab).read_vm(VmOnHost("vm-a1", "HV-A"))
    truth = _truth_vm(lab, "vm-a1")[0]
    assert facts.vm_id.lower() == truth["id"]
    assert not facts.clustered
    assert set(facts.files) == set(_files_under(lab, "HV-A", truth["path"]))
    assert len(facts.files) == 4  # vmcx, vmgs, VMRS, the VHDX
    with pytest.raises(SnlmError) as raised:
        ActivityEnvironment().run(_activities(lab).read_vm, VmOnHost("ghost", "HV-A"))
    assert raised.value.error_type == c.VM_NOT_FOUND
    assert not raised.value.retryable


# -- the move ---------------------------------------------------------------------------------------------------
def test_move_success_then_already_moved_verify_and_no_cleanup(pair: Callable[..., Lab]) -> None:
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    rec = Recorder()
    result = rec.env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    assert result.started
    assert not result.already_moved
    assert result.job_id
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1
    # The beats before the job exists name none; every later one names this job.
    assert rec.moves
    assert {beat.job_id for beat in rec.moves} == {"", result.job_id}
    started = next(k for k, beat in enumerate(rec.moves) if beat.job_id)
    assert all(beat.job_id == result.job_id for beat in rec.moves[started:])
    assert _files_under(lab, "HV-A", "D:\\Hyper-V\\vm-a1") == []
    assert "D:\\Hyper-V\\vm-a1\\vm-a1.vhdx" in _files_under(lab, "HV-B", "D:\\Hyper-V\\vm-a1")

    # A retry after success (lost completion): nothing is started again.
    again = Recorder().env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    assert again.already_moved
    assert not again.started
    assert _starts(lab, facts.vm_id) == 1

    verified = acts.verify_move(VerifyInput("vm-a1", facts.vm_id, "HV-A", "HV-B", facts.files))
    assert verified.running_on_destination
    assert verified.gone_from_source
    assert verified.guest_answers
    assert verified.cleaned_source_files == ()
    assert verified.destination_path == "D:\\Hyper-V\\vm-a1"

    # The compensation after a successful move must never touch the realized VM.
    cleaned = acts.clean_destination(CleanupInput("vm-a1", facts.vm_id, "HV-B"))
    assert cleaned == c.CleanupResult()
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    assert _truth_vm(lab, "vm-a1")[0]["state"] == "Running"


def test_a_move_reads_each_thing_once(pair: Callable[..., Lab]) -> None:
    """The destination's VM is read once (cleaning leftovers uses that reading), the new job comes back with the
    Move-VM in one round trip, and the watch starts from it."""
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    reports: list[SessionReport] = []
    remove = add_session_observer(reports.append)
    try:
        rec = Recorder()
        result = rec.env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    finally:
        remove()
    assert result.started
    calls = {host: _calls(reports, host) for host in ("HV-A", "HV-B")}
    assert calls["HV-B"] == {"Get-VM": 1, "Get-VMHost": 1, "Test-Path": 1}
    # Source: its jobs, the VM and its disks (two Get-VM), then Get-VM | Move-VM with the job read, then the polls.
    assert calls["HV-A"]["Move-VM"] == 1
    assert calls["HV-A"]["Get-VM"] == 3
    polls = calls["HV-A"]["Get-CimInstance"] - 2
    # Before the job exists, a beat at the start and one before Move-VM keep the attempt alive; then one beat per
    # reading of the job, the first the one read with the move.
    before, watched = rec.moves[:2], rec.moves[2:]
    assert [(beat.job_id, beat.percent) for beat in before] == [("", 0), ("", 0)]
    assert len(watched) == polls + 1
    assert all(beat.job_id == result.job_id for beat in watched)


def test_a_move_with_its_storage_path_reads_the_destination_once_leftovers_included(pair: Callable[..., Lab]) -> None:
    """With the storage path given, the files the move will write are known before the destination is read: which
    of them exist comes back with the destination's Get-VM, and a leftover among them is removed before Move-VM.
    (The first attempt's one-round-trip start comes first: vmms fails it on the leftover before copying anything.)"""
    lab = pair(time_scale=60.0)
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    storage = "D:\\Hyper-V\\vm-a1"
    # A move cut at 40 % leaves a planned VM and partial disks; the planned VM removed by hand leaves the disks.
    lab.inject_fault("fail_move_at", vm="vm-a1", percent=40, action="partition", partition_seconds=5)
    with pytest.raises(SnlmError):
        Recorder().env.run(
            acts.start_or_attach_move, dataclasses.replace(_move(acts, facts, "HV-B"), storage_path=storage)
        )
    with HostClient(load_inventory(lab.inventory_path).host("HV-B"), **FAST) as client:
        client.pipeline([Command("Get-VM", {"Id": facts.vm_id}), Command("Remove-VM", switches=("Force",))])
    leftovers = _files_under(lab, "HV-B", storage)
    assert leftovers
    assert not [vm for vm in _truth_vm(lab, "vm-a1") if vm["host"] == "HV-B"]
    _wait_for("the partition to end", lambda: not any(f["kind"] == "partition" for f in lab.list_faults()))

    with acts.sessions.session("HV-B") as warm:  # the move's checkout then opens nothing: only its own trips count
        warm.run("Get-VMHost")
    reports: list[SessionReport] = []
    remove = add_session_observer(reports.append)
    try:
        result = Recorder().env.run(
            acts.start_or_attach_move, dataclasses.replace(_move(acts, facts, "HV-B"), storage_path=storage)
        )
    finally:
        remove()

    assert result.started
    on_destination = [report for report in reports if report.host == "HV-B"]
    assert [dict(report.calls) for report in on_destination] == [{"Get-VM": 1, "Test-Path": 1, "Remove-Item": 1}]
    # One round trip to read, one to remove the leftovers (Get-VMHost is not needed: the path is given).
    assert [report.round_trips for report in on_destination] == [2]
    truth = lab.truth()
    assert truth["locations"]["vm-a1"] == ["HV-B"]
    assert not [vm for vm in truth["vms"] if vm["name"] == "vm-a1" and vm["planned"]]
    # The partitioned move, the quick start vmms failed on the leftover, and the move after the clean-up.
    assert _starts(lab, facts.vm_id) == 3
    jobs = [job for job in truth["jobs"] if job["vm_name"] == "vm-a1"]
    assert [job["state"] for job in jobs][-2:] == ["Exception", "Completed"], jobs
    assert jobs[-2]["error_code"] != 0


STORAGE = "D:\\Hyper-V\\vm-a1"


def _quick(facts: VmFacts, destination: str = "HV-B", storage: str = STORAGE) -> MoveInput:
    """A move whose storage path is known, as the saga passes it after preflight: its first attempt may start at
    once."""
    return MoveInput(facts.vm, facts.vm_id, facts.host, destination, storage)


def test_a_first_attempt_with_its_storage_path_starts_the_move_in_one_round_trip(pair: Callable[..., Lab]) -> None:
    """Its jobs, Get-VM | Move-VM and its jobs again in one round trip to the source; the destination is not read
    before the move (vmms checks it), and the watch starts from the job read with the move."""
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    with acts.sessions.session("HV-A") as warm:  # an open session: the move's own trips are all that count
        warm.run("Get-VMHost")
    reports: list[SessionReport] = []
    remove = add_session_observer(reports.append)
    try:
        rec = Recorder()
        result = rec.env.run(acts.start_or_attach_move, _quick(facts))
    finally:
        remove()
    assert result.started
    assert not result.already_moved
    assert _calls(reports, "HV-B") == {}
    source = _calls(reports, "HV-A")
    assert source["Move-VM"] == 1
    assert source["Get-VM"] == 1
    polls = source["Get-CimInstance"] - 2
    trips = sum(report.round_trips for report in reports if report.host == "HV-A")
    assert trips == 1 + polls
    before, watched = rec.moves[:1], rec.moves[1:]
    assert [(beat.job_id, beat.percent) for beat in before] == [("", 0)]
    assert len(watched) == polls + 1
    assert all(beat.job_id == result.job_id for beat in watched)
    truth = lab.truth()
    assert truth["locations"]["vm-a1"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1
    assert STORAGE + "\\vm-a1.vhdx" in _files_under(lab, "HV-B", STORAGE)


def test_a_quick_start_of_a_vm_already_moved_finds_it_moved_and_starts_nothing(pair: Callable[..., Lab]) -> None:
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    assert Recorder().env.run(acts.start_or_attach_move, _quick(facts)).started
    # A lost completion: the saga asks again, a first attempt of a new activity, with the path known.
    again = Recorder().env.run(acts.start_or_attach_move, _quick(facts))
    assert again.already_moved
    assert not again.started
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1


def test_a_quick_start_beside_a_running_migration_reattaches_to_it(pair: Callable[..., Lab]) -> None:
    """Someone's Move-VM of this VM runs: vmms refuses the quick start, and the attempt watches the running job."""
    lab = pair(time_scale=10.0)
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    job_id = _start_job_by_hand(lab, "vm-a1")
    result = Recorder().env.run(acts.start_or_attach_move, _quick(facts))
    assert not result.started
    assert result.job_id == job_id
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    jobs = [job for job in lab.truth()["jobs"] if job["vm_name"] == "vm-a1"]
    # The hand's move, and the quick start vmms refused at once (it counts as a request to vmms).
    assert sorted(job["state"] for job in jobs) == ["Completed", "Exception"]
    assert _starts(lab, facts.vm_id) == 2


def test_a_quick_start_of_a_vm_realized_on_both_hosts_changes_nothing_and_says_so(pair: Callable[..., Lab]) -> None:
    lab = pair(time_scale=10.0)  # a failed job stays listed 5 minutes: 30 s here
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    _copy_realized(lab, facts.vm_id, "HV-A", "HV-B")
    files_before = _files_under(lab, "HV-B", STORAGE)
    with pytest.raises(SnlmError) as raised:
        Recorder().env.run(acts.start_or_attach_move, _quick(facts))
    assert raised.value.error_type == c.VERIFY_FAILED
    assert "registered and realized on both HV-A and HV-B" in str(raised.value)
    truth = lab.truth()
    assert sorted((vm["host"], vm["planned"]) for vm in truth["vms"] if vm["name"] == "vm-a1") == [
        ("HV-A", False),
        ("HV-B", False),
    ]
    assert _files_under(lab, "HV-B", STORAGE) == files_before
    # vmms failed the quick start at preparation, on the copy with this Id: nothing was copied.
    assert _starts(lab, facts.vm_id) == 1
    assert [job["state"] for job in truth["jobs"] if job["vm_name"] == "vm-a1"] == ["Exception"]


def test_a_later_attempt_reads_both_hosts_before_it_starts(pair: Callable[..., Lab]) -> None:
    """A retry may have a job of its own to find, so it never starts at once, even with the path known."""
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    reports: list[SessionReport] = []
    remove = add_session_observer(reports.append)
    try:
        rec = Recorder()
        rec.env.info = dataclasses.replace(rec.env.info, attempt=2)
        result = rec.env.run(acts.start_or_attach_move, _quick(facts))
    finally:
        remove()
    assert result.started
    assert _calls(reports, "HV-B")["Get-VM"] == 1  # read before Move-VM
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1


def _start_job_by_hand(lab: Lab, vm: str) -> str:
    """Move-VM -AsJob as another session would: returns the host's migration job id."""
    inventory = load_inventory(lab.inventory_path)
    with HostClient(inventory.host("HV-A"), **FAST) as client:
        client.run(
            "Move-VM",
            {"Name": vm, "DestinationHost": "HV-B", "DestinationStoragePath": f"D:\\Hyper-V\\{vm}"},
            switches=("IncludeStorage", "AsJob"),
        )
    jobs = [j for j in lab.truth()["jobs"] if j["vm_name"] == vm and j["active"]]
    assert len(jobs) == 1
    return str(jobs[0]["instance_id"])


def test_reattaches_to_a_running_migration(pair: Callable[..., Lab]) -> None:
    lab = pair(time_scale=10.0)
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    job_id = _start_job_by_hand(lab, "vm-a1")
    rec = Recorder()
    result = rec.env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    assert not result.started
    assert not result.already_moved
    assert result.job_id == job_id
    assert len({beat.percent for beat in rec.moves}) > 1  # it watched the job progress
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1


def test_reattaches_to_the_job_in_its_heartbeat_details(pair: Callable[..., Lab]) -> None:
    lab = pair(time_scale=10.0)
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a2", "HV-A"))
    job_id = _start_job_by_hand(lab, "vm-a2")
    rec = Recorder()
    # The next attempt of an activity gets the details of the last heartbeat as the data converter made them.
    rec.env.info = dataclasses.replace(rec.env.info, attempt=2, heartbeat_details=[{"job_id": job_id, "percent": 5}])
    result = rec.env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    assert not result.started
    assert result.job_id == job_id
    assert lab.truth()["locations"]["vm-a2"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1


def test_a_move_that_ends_between_the_reads_of_its_two_hosts_is_not_taken_for_two_copies(
    pair: Callable[..., Lab],
) -> None:
    """The attempt reads the source, then the destination; another session's Move-VM (as a previous attempt still
    running beside this one, after a heartbeat timeout, would) ends in between. Both readings show the VM realized;
    looking again shows where it is: moved, once."""
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    # HV-B answers a second late, so the other session's move ends before the attempt's read of it is answered.
    fault = lab.inject_fault("slow_host", host="HV-B", seconds=36000, delay=1.0)
    seen = len(lab.world.command_log)

    def other_session() -> None:
        # The attempt's first batch on the source ends with Get-VMHardDiskDrive: its Get-VM has been answered.
        _wait_for(
            "the attempt's read of the source", lambda: ("HV-A", "Get-VMHardDiskDrive") in lab.world.command_log[seen:]
        )
        with HostClient(load_inventory(lab.inventory_path).host("HV-A"), **FAST) as client:
            client.run(
                "Move-VM",
                {"Name": "vm-a1", "DestinationHost": "HV-B", "DestinationStoragePath": "D:\\Hyper-V\\vm-a1"},
                switches=("IncludeStorage",),
            )

    mover = threading.Thread(target=other_session, daemon=True)
    mover.start()
    try:
        result = Recorder().env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    finally:
        mover.join(30)
        lab.clear_fault(fault["id"])
    assert result.already_moved
    assert not result.started
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]
    assert _starts(lab, facts.vm_id) == 1


def test_a_vm_realized_on_both_hosts_is_reported_and_left_alone(pair: Callable[..., Lab]) -> None:
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    _copy_realized(lab, facts.vm_id, "HV-A", "HV-B")
    with pytest.raises(SnlmError) as raised:
        Recorder().env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    assert raised.value.error_type == c.VERIFY_FAILED
    assert "registered and realized on both HV-A and HV-B" in str(raised.value)
    assert sorted(vm["host"] for vm in _truth_vm(lab, "vm-a1")) == ["HV-A", "HV-B"]
    assert _starts(lab, facts.vm_id) == 0


@pytest.mark.parametrize("storage", [None, STORAGE], ids=["path-read-at-move", "path-known"])
def test_partition_at_40_percent_then_the_retry_cleans_and_moves(pair: Callable[..., Lab], storage: str | None) -> None:
    """With the path known, the retry's quick start meets the planned VM and partial disks: vmms fails it at
    preparation, and the careful way cleans them and moves."""
    lab = pair(time_scale=60.0)
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    request = dataclasses.replace(_move(acts, facts, "HV-B"), storage_path=storage)
    lab.inject_fault("fail_move_at", vm="vm-a1", percent=40, action="partition", partition_seconds=20)
    with pytest.raises(SnlmError) as raised:
        Recorder().env.run(acts.start_or_attach_move, request)
    assert raised.value.error_type == c.MIGRATION_NETWORK_ERROR
    assert raised.value.retryable
    # The VM still runs on the source; the destination holds the planned VM and partial files.
    assert lab.truth()["locations"]["vm-a1"] == ["HV-A"]
    planned = [vm for vm in _truth_vm(lab, "vm-a1") if vm["planned"]]
    assert [vm["host"] for vm in planned] == ["HV-B"]
    assert _files_under(lab, "HV-B", "D:\\Hyper-V\\vm-a1")

    _wait_for("the partition to end", lambda: not any(f["kind"] == "partition" for f in lab.list_faults()))
    result = Recorder().env.run(acts.start_or_attach_move, request)
    assert result.started
    truth = lab.truth()
    assert truth["locations"]["vm-a1"] == ["HV-B"]  # exactly one host
    assert not [vm for vm in truth["vms"] if vm["name"] == "vm-a1" and vm["planned"]]
    # Requests to vmms: the partitioned one, the quick start failed on the leftovers (path known), the move.
    assert _starts(lab, facts.vm_id) == (3 if storage else 2)
    states = [job["state"] for job in truth["jobs"] if job["vm_name"] == "vm-a1"]
    assert states.count("Completed") == 1, states  # one VM moved, by the last request
    assert states[-1] == "Completed", states


def test_cancel_terminates_the_host_job_and_the_vm_stays(pair: Callable[..., Lab]) -> None:
    lab = pair(time_scale=5.0)
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a1", "HV-A"))
    rec = Recorder()
    halfway = threading.Event()
    rec.on_beat = lambda beat: halfway.set() if isinstance(beat, MoveHeartbeat) and beat.percent >= 20 else None

    def cancel_halfway() -> None:
        if halfway.wait(60):
            rec.env.cancel()

    canceller = threading.Thread(target=cancel_halfway, daemon=True)
    canceller.start()
    with pytest.raises(CancelledError):
        rec.env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    canceller.join(5)
    jobs = [j for j in lab.truth()["jobs"] if j["vm_name"] == "vm-a1"]
    assert [j["state"] for j in jobs] == ["Terminated"]
    assert lab.truth()["locations"]["vm-a1"] == ["HV-A"]
    assert _starts(lab, facts.vm_id) == 1

    # What the terminated move left on the destination, the compensation removes.
    assert _files_under(lab, "HV-B", "D:\\Hyper-V\\vm-a1")
    cleaned = acts.clean_destination(CleanupInput("vm-a1", facts.vm_id, "HV-B"))
    assert cleaned.removed_planned_vm
    assert cleaned.removed_files
    assert _files_under(lab, "HV-B", "D:\\Hyper-V\\vm-a1") == []
    assert [vm["host"] for vm in _truth_vm(lab, "vm-a1")] == ["HV-A"]
    assert acts.clean_destination(CleanupInput("vm-a1", facts.vm_id, "HV-B")) == c.CleanupResult()  # idempotent


def test_verify_cleans_files_the_move_left_on_the_source(pair: Callable[..., Lab]) -> None:
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a3", "HV-A"))
    lab.inject_fault("leave_source_files", vm="vm-a3")
    Recorder().env.run(acts.start_or_attach_move, _move(acts, facts, "HV-B"))
    assert lab.truth()["locations"]["vm-a3"] == ["HV-B"]
    left = _files_under(lab, "HV-A", "D:\\Hyper-V\\vm-a3")
    assert left
    verified = acts.verify_move(VerifyInput("vm-a3", facts.vm_id, "HV-A", "HV-B", facts.files))
    assert verified.running_on_destination
    assert verified.gone_from_source
    assert set(verified.cleaned_source_files) == set(left)
    assert _files_under(lab, "HV-A", "D:\\Hyper-V\\vm-a3") == []
    assert acts.verify_move(VerifyInput("vm-a3", facts.vm_id, "HV-A", "HV-B", facts.files)).cleaned_source_files == ()


def test_verify_before_the_move_and_for_a_vm_nowhere(pair: Callable[..., Lab]) -> None:
    lab = pair()
    acts = _activities(lab)
    facts = acts.read_vm(VmOnHost("vm-a4", "HV-A"))
    not_yet = acts.verify_move(VerifyInput("vm-a4", facts.vm_id, "HV-A", "HV-B", facts.files))
    assert not not_yet.running_on_destination
    assert not not_yet.gone_from_source
    assert not not_yet.cleaned_source_files
    assert set(_files_under(lab, "HV-A", "D:\\Hyper-V\\vm-a4")) == set(facts.files)  # files in use stay
    ghost = "7edeeaa1-7a03-4fe5-9d59-584d5c8356d5"
    with pytest.raises(SnlmError) as raised:
        ActivityEnvironment().run(acts.verify_move, VerifyInput("ghost", ghost, "HV-A", "HV-B"))
    assert raised.value.error_type == c.VERIFY_FAILED
    assert not raised.value.retryable


def test_the_move_polls_at_its_expected_end_rather_than_a_whole_interval_after(estate: Lab) -> None:
    acts = MigrationActivities(load_inventory(estate.inventory_path), poll_seconds=2.0)
    started = time.monotonic() - 10.0
    assert acts._next_poll(None, 0) == 2.0  # no pace known yet
    assert acts._next_poll((started, 10), 10) == 2.0  # no progress since
    assert acts._next_poll((started, 10), 20) == 2.0  # 1 %/s, 80 s left: the configured interval
    assert acts._next_poll((started, 10), 99) == 0.2  # 8.9 %/s, 0.11 s left: never below a tenth of the interval
    assert acts._next_poll((started, 50), 95) == pytest.approx(5 / 4.5, rel=0.05)  # 4.5 %/s, 5 % left: 1.1 s


def test_the_pace_is_measured_from_the_last_reading_before_the_percent_moved() -> None:
    # A job that connects and prepares at 0 % for 4 s, then copies 80 % in 1 s: the pace is 80 %/s, not 16 %/s.
    paced = _pace(None, 100.0, 0)
    for now in (101.0, 102.0, 104.0):
        paced = _pace(paced, now, 0)
    assert paced == (104.0, 0)
    assert _pace(paced, 105.0, 80) == (104.0, 0)  # progress: the baseline stays, 80 %/s from it
    assert _pace((104.0, 0), 105.5, 90) == (104.0, 0)
    assert _pace((104.0, 0), 106.0, 0) == (106.0, 0)  # a job that starts again from 0 (a retry's) is paced anew
