"""snlm takes a VM's name literally, over the wire, against hosts that resolve `-Name` as Hyper-V does.

The estate (tests/lab/hostile_names.py) has VMs named like patterns beside the VMs those patterns match, names
with backticks, quotes, 100 characters and non-ASCII letters, two VMs sharing a name, and a different VM of the
same name on the destination. Preflight, read_vm, remediate and the move must each act on exactly the VM named,
or say clearly that there is none or more than one; the lab's truth shows nothing else changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import SnlmError
from activities.hosts import HostClient
from activities.inventory import load_inventory
from activities.migration import ISO_MISSING, MigrationActivities
from activities.preflight import PreflightActivities
from activities.vms import (
    VM_INDEX_PROPERTIES,
    by_id,
    by_name,
    config_file_candidates,
    folder_name_problem,
    is_planned,
    list_vms,
    vm_id,
    vm_index,
)
from lab.lab import Lab
from lab.model import checks
from tests.lab import hostile_names as h
from workflows import contracts as c
from workflows.contracts import (
    VM_NAME_AMBIGUOUS,
    MoveInput,
    PreflightInput,
    PreflightReport,
    RemediateInput,
    VerifyInput,
    VmOnHost,
)

pytestmark = pytest.mark.timeout(300)

FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10, "command_timeout": 60.0}
# Names that are no VM's name here, though Hyper-V would take most of them as patterns matching several.
NOT_NAMES = (
    "*",
    "web0[78]",
    "web?",
    "db*",
    "web`[1`]",
    "a`*b",
    "[a-z]*",
    h.LONG + "y",
    "x" * 200,
    "ünï*",
    "Ünïcødé",
    "it's",
    '"quoted"',
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The estate, read-only: tests that change it start their own."""
    lab = h.hostile_lab(tmp_path_factory.mktemp("hostile"))
    yield lab
    lab.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    with h.hostile_labs(tmp_path) as make:
        yield make


def preflight(lab: Lab, vm: str, source: str = "HV-A", destination: str = "HV-B") -> PreflightReport:
    acts = PreflightActivities(load_inventory(lab.inventory_path), **FAST)
    return acts.preflight(PreflightInput(vm, source, destination))


def lab_preflight_with_path(lab: Lab, vm: str) -> PreflightReport:
    acts = PreflightActivities(load_inventory(lab.inventory_path), **FAST)
    return acts.preflight(PreflightInput(vm, "HV-A", "HV-B", storage_path=r"D:\Hyper-V\elsewhere"))


def migration(lab: Lab) -> MigrationActivities:
    return MigrationActivities(load_inventory(lab.inventory_path), poll_seconds=0.05, **FAST)


def ids(report: PreflightReport) -> dict[str, str]:
    return {concern.id: concern.severity for concern in report.concerns}


def truth_id(lab: Lab, name: str, host: str = "HV-A") -> str:
    (vm,) = [v for v in lab.truth()["vms"] if v["name"] == name and v["host"] == host and not v["planned"]]
    return str(vm["id"])


def state(lab: Lab) -> dict[str, Any]:
    truth = lab.truth()
    return {key: truth[key] for key in ("vms", "locations", "move_starts", "jobs")}


def failure(call: Callable[[], Any]) -> ApplicationError:
    """What the worker's error boundary makes of the engine error the call raises."""
    with pytest.raises(SnlmError) as raised:
        call()
    return raised.value.to_application_error()


def test_each_name_finds_exactly_its_vm(lab: Lab) -> None:
    acts = migration(lab)
    before = state(lab)
    for name in (*h.HOSTILE, *h.SIBLINGS):
        report = preflight(lab, name)
        expected = truth_id(lab, name)
        assert report.facts is not None
        assert report.facts["vm.id"] == expected, name
        assert report.summary is not None
        assert report.summary.vm_id == expected, name
        # The concerns a clean move may have; a VM named like a pattern is never "not found" nor "ambiguous". A
        # name no Windows folder can have needs a storage path (the default path is a folder named after the VM).
        allowed = {"iso-missing-on-destination"} | ({"vm-name-not-a-folder"} if folder_name_problem(name) else set())
        assert set(ids(report)) <= allowed, (name, report.concerns)
        if folder_name_problem(name):
            assert "vm-name-not-a-folder" in ids(report), name
            with_path = lab_preflight_with_path(lab, name)
            assert "vm-name-not-a-folder" not in ids(with_path), name
        facts = acts.read_vm(VmOnHost(name, "HV-A"))
        assert (facts.vm, facts.vm_id.lower()) == (name, expected)
        assert facts.files, name
        assert all(f.lower().startswith("d:\\hyper-v\\vm") for f in facts.files)
    assert state(lab) == before


def test_the_index_finds_what_the_whole_objects_find(lab: Lab) -> None:
    # Preflight finds a VM by name in the host's index (a few properties per VM) and reads the whole object by Id
    # only for the one it moves: on this estate of shared names, patterns and planned VMs, the index must answer
    # every question the whole objects answered, and carry nothing more.
    inventory = load_inventory(lab.inventory_path)
    for host in ("HV-A", "HV-B"):
        with HostClient(inventory.host(host), **FAST) as client:
            (index,) = client.batch([vm_index()])
            whole = list_vms(client)
        rows = [vm for vm in index.output if isinstance(vm, dict)]
        assert len(rows) == len(whole) > 1, host
        assert all(set(row) <= set(VM_INDEX_PROPERTIES) for row in rows), rows[0]
        for vm in whole:
            row = by_id(rows, vm_id(vm))
            assert row is not None, vm["Name"]
            assert (row["Name"], row["State"], is_planned(row)) == (vm["Name"], vm["State"], is_planned(vm))
            assert config_file_candidates(row) == config_file_candidates(vm)
        for name in (*h.HOSTILE, *h.SIBLINGS, *NOT_NAMES):
            assert sorted(map(vm_id, by_name(rows, name))) == sorted(map(vm_id, by_name(whole, name))), name


@pytest.mark.parametrize("name", NOT_NAMES)
def test_a_name_no_vm_has_is_not_found_and_changes_nothing(lab: Lab, name: str) -> None:
    before = state(lab)
    report = preflight(lab, name)
    assert ids(report) == {"vm-not-found": "blocker"}, report.concerns
    assert f"'{name}'" in report.concerns[0].message
    assert report.concerns[0].host == "HV-A"
    env = ActivityEnvironment()
    acts = migration(lab)
    assert failure(lambda: env.run(acts.read_vm, VmOnHost(name, "HV-A"))).type == c.VM_NOT_FOUND
    assert failure(lambda: env.run(acts.snapshot_cluster_role, VmOnHost(name, "HV-A"))).type == c.VM_NOT_FOUND
    remediate = RemediateInput(name, "HV-A", (ISO_MISSING,))
    assert failure(lambda: env.run(acts.remediate, remediate)).type == c.VM_NOT_FOUND
    assert state(lab) == before


def test_the_issue_case_a_pattern_and_web07_running_on_the_destination(lab: Lab) -> None:
    # HV-A runs web08, HV-B runs web07: `web0[78]` would match both on a host; it names neither.
    report = preflight(lab, "web0[78]")
    assert not report.ok
    assert ids(report) == {"vm-not-found": "blocker"}
    assert "destination-leftovers" not in ids(report)
    # web07 itself, asked from HV-A, is already where it should be.
    assert ids(preflight(lab, "web07")) == {"vm-already-on-destination": "info"}


def test_two_vms_of_one_name_are_never_guessed_between(lab: Lab) -> None:
    before = state(lab)
    report = preflight(lab, h.TWIN)
    assert ids(report) == {"vm-name-ambiguous": "blocker"}
    assert all(str(vm_id) in report.concerns[0].message for vm_id in h.TWIN_IDS)
    env = ActivityEnvironment()
    error = failure(lambda: env.run(migration(lab).read_vm, VmOnHost(h.TWIN, "HV-A")))
    assert error.type == VM_NAME_AMBIGUOUS
    assert error.non_retryable
    assert all(str(vm_id) in str(error) for vm_id in h.TWIN_IDS)
    assert state(lab) == before


def test_another_vm_of_the_name_on_the_destination_is_a_clash_not_a_leftover(lab: Lab) -> None:
    before = state(lab)
    report = preflight(lab, h.CLASH)
    found = ids(report)
    assert found.get("vm-name-clash") == "blocker", report.concerns
    assert "destination-leftovers" not in found
    clash = next(concern for concern in report.concerns if concern.id == "vm-name-clash")
    assert str(h.CLASH_IDS[1]) in clash.message
    assert clash.host == "HV-B"
    assert state(lab) == before
    assert sorted(lab.truth()["locations"][h.CLASH]) == ["HV-A", "HV-B"]


def test_remediate_ejects_the_iso_of_the_vm_named_only(fresh: Callable[..., Lab]) -> None:
    lab = fresh()
    report = lab_preflight_with_path(lab, h.QMARK)
    assert ids(report) == {"iso-missing-on-destination": "warning"}
    assert report.concerns[0].auto_remediable
    result = migration(lab).remediate(RemediateInput(h.QMARK, "HV-A", (ISO_MISSING,)))
    assert result.fixed == (ISO_MISSING,)
    isos = {vm["name"]: vm["iso"] for vm in lab.truth()["vms"]}
    assert isos[h.QMARK] == []
    assert isos["db1"] == [h.ISO]  # `db?` as a pattern would have matched it too


def _wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_vms_named_like_patterns_move_alone(fresh: Callable[..., Lab]) -> None:
    lab = fresh()
    acts = migration(lab)
    env = ActivityEnvironment()
    for name in (h.BRACKETS, h.STAR, h.QUOTES, h.UNICODE, h.LONG):
        facts = acts.read_vm(VmOnHost(name, "HV-A"))
        # A name no folder can have (`a*b`) moves with a storage path; without one the move says so, changing nothing.
        storage = rf"D:\Hyper-V\moved-{facts.vm_id}" if folder_name_problem(name) else None
        if storage is not None:
            request = MoveInput(name, facts.vm_id, "HV-A", "HV-B")
            refused = failure(lambda: acts.start_or_attach_move(request))  # noqa: B023 - called at once
            assert "storage path" in refused.message, name
        result = env.run(acts.start_or_attach_move, MoveInput(name, facts.vm_id, "HV-A", "HV-B", storage))
        assert result.started, name
        verified = acts.verify_move(VerifyInput(name, facts.vm_id, "HV-A", "HV-B", facts.files))
        assert verified.running_on_destination, name
        assert verified.gone_from_source, name
    truth = lab.truth()
    moved = {h.BRACKETS, h.STAR, h.QUOTES, h.UNICODE, h.LONG}
    for name, hosts in truth["locations"].items():
        expected = ["HV-B"] if name in moved else sorted(hosts)
        assert sorted(hosts) == expected, name
    for sibling in h.SIBLINGS:
        assert truth["locations"][sibling] == ["HV-A"], sibling
    assert sorted(m["vm"] for m in truth["move_starts"].values()) == sorted(moved)
    assert all(m["starts"] == 1 for m in truth["move_starts"].values())


def test_what_a_failed_move_left_is_a_leftover_whatever_ids_the_host_sends(fresh: Callable[..., Lab]) -> None:
    # Compare-VM's ids for every check renumbered: the verdict comes from snlm's own reads.
    renumbered = {check: 97000 + index for index, check in enumerate(sorted(checks.MESSAGE_IDS))}
    lab = fresh(compare_vm_message_ids=renumbered)
    acts = migration(lab)
    facts = acts.read_vm(VmOnHost(h.BRACKETS, "HV-A"))
    lab.inject_fault("fail_move_at", vm=h.BRACKETS, percent=40, action="partition", partition_seconds=5)
    error = failure(
        lambda: ActivityEnvironment().run(acts.start_or_attach_move, MoveInput(h.BRACKETS, facts.vm_id, "HV-A", "HV-B"))
    )
    assert error.type == c.MIGRATION_NETWORK_ERROR
    _wait(lambda: not any(f["kind"] == "partition" for f in lab.list_faults()), "the partition to end")
    planned = [vm for vm in lab.truth()["vms"] if vm["name"] == h.BRACKETS and vm["planned"]]
    assert [vm["host"] for vm in planned] == ["HV-B"]

    report = preflight(lab, h.BRACKETS)
    assert ids(report) == {"destination-leftovers": "warning"}, report.concerns
    (leftovers,) = report.concerns
    assert leftovers.auto_remediable
    assert facts.vm_id.lower() in leftovers.message
    assert "disk01.vhdx" in leftovers.message
    # The host's own findings about the same leftovers are quoted, with the ids it sent, not added as blockers.
    assert f"MessageId {renumbered['planned_vm_exists']}" in leftovers.message
