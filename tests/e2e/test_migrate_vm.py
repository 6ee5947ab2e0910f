"""MigrateVm end to end: the real Temporal dev server, the lab's hosts over WinRM/PSRP, Samba as Active Directory.

Nothing is mocked. Assertions are on the lab's truth (where the VMs, files, settings and jobs really are), on
what Samba stores, and on what the workflow reports; never on wall time.
"""

from __future__ import annotations

import asyncio
import ntpath
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from lab.model.directory import TRUSTED_TO_AUTH_FOR_DELEGATION
from tests.e2e.conftest import E2E, result_of
from workflows.contracts import (
    DESTINATION_DISK_FULL,
    MIGRATION_SERVICE,
    PREFLIGHT_BLOCKED,
    CompensationOutcome,
    HaChoice,
    HaOutcome,
    MigrationPolicy,
    PreflightReport,
    Step,
    migration_slots_workflow_id,
)
from workflows.migrate_vm import MigrateVmWorkflow

pytestmark = pytest.mark.timeout(120)


# -- reading the truth ----------------------------------------------------------------------------------------
def vm_entries(truth: dict[str, Any], vm: str) -> list[dict[str, Any]]:
    return [entry for entry in truth["vms"] if entry["name"] == vm]


def files_of(truth: dict[str, Any], host: str) -> dict[str, int]:
    return {f["path"].lower(): f["size"] for f in truth["hosts"][host]["files"]}


def vm_files(truth: dict[str, Any], host: str, vm: str) -> list[str]:
    return [path for path in files_of(truth, host) if f"\\{vm}\\" in path or f"\\{vm}." in path]


def settings_of(truth: dict[str, Any], host: str) -> dict[str, Any]:
    h = truth["hosts"][host]
    return {
        "live_migration": h["live_migration"],
        "migration_networks": h["migration_networks"],
        "firewall_live_migration_open": h["firewall_live_migration_open"],
    }


def roles(truth: dict[str, Any], cluster: str) -> dict[str, dict[str, Any]]:
    return {role["name"]: role for role in truth["clusters"][cluster.upper()]["roles"]}


def state(truth: dict[str, Any]) -> dict[str, Any]:
    """What a move could change: VMs (with their hosts, files and settings), cluster roles, host settings and
    files. Time, jobs, faults and endpoints are left out."""
    return {
        "vms": sorted(truth["vms"], key=lambda v: (v["name"], v["host"])),
        "locations": truth["locations"],
        "clusters": truth["clusters"],
        "move_starts": truth["move_starts"],
        "hosts": {
            name: {**settings_of(truth, name), "files": host["files"], "directory": host["directory"]}
            for name, host in truth["hosts"].items()
        },
    }


def delegates_to(entry: dict[str, Any], peer: str) -> bool:
    values = {v.casefold() for v in entry["msDS-AllowedToDelegateTo"]}
    wanted = {
        f"{service}/{name}".casefold() for service in ("cifs", MIGRATION_SERVICE) for name in (peer, peer + ".lab.test")
    }
    return wanted <= values and bool(entry["userAccountControl"] & TRUSTED_TO_AUTH_FOR_DELEGATION)


def failure_of(caught: pytest.ExceptionInfo[WorkflowFailureError]) -> ApplicationError:
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    return cause


async def truth(e2e: E2E) -> dict[str, Any]:
    return await asyncio.to_thread(e2e.lab.truth)


# -- happy paths ----------------------------------------------------------------------------------------------
async def test_standalone_vm_moves_and_the_delegation_is_written_to_samba(e2e: E2E) -> None:
    n = e2e.names
    src, dst = n.s1, n.s2
    before = await truth(e2e)
    source_files = vm_files(before, src, "std1")
    assert source_files, "the VM has files on its source"
    assert e2e.delegation(src, dst)[src]["msDS-AllowedToDelegateTo"] == []

    handle = await e2e.start("std1", src, dst)
    result = await result_of(handle)

    after = await truth(e2e)
    assert after["locations"]["std1"] == [dst]
    [entry] = vm_entries(after, "std1")
    assert entry["host"] == dst
    assert entry["state"] == "Running"
    assert not entry["planned"]
    assert vm_files(after, src, "std1") == []
    assert vm_files(after, dst, "std1")
    assert [m["starts"] for m in after["move_starts"].values() if m["vm"] == "std1"] == [1]

    # Samba now holds constrained delegation with protocol transition, both ways.
    stored = e2e.delegation(src, dst)
    assert delegates_to(stored[src], dst), stored[src]
    assert delegates_to(stored[dst], src), stored[dst]

    progress = await handle.query(MigrateVmWorkflow.progress)
    assert progress.step == Step.DONE
    assert progress.attempt == 1
    assert result.vm == "std1"
    assert result.source == src
    assert result.destination == dst
    assert result.moved
    assert not result.already_there
    assert {v.casefold() for v in result.delegation_added} >= {f"{MIGRATION_SERVICE}/{dst}".casefold()}
    assert result.settings_changed == (dst,), "only the destination had Hyper-V's defaults"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_clustered_vm_loses_its_role_moves_and_is_made_highly_available_on_the_destination(e2e: E2E) -> None:
    n = e2e.names
    src, dst = n.a1, n.b1
    before = await truth(e2e)
    assert "clu1" in roles(before, n.cluster_a)
    assert vm_entries(before, "clu1")[0]["clustered"]

    # No HA choice in the request: the destination is a cluster node, so the role is made there by default.
    handle = await e2e.start("clu1", src, dst)
    result = await result_of(handle)

    after = await truth(e2e)
    assert result.moved
    assert "clu1" not in roles(after, n.cluster_a), "the role was removed from the source's cluster"
    assert after["locations"]["clu1"] == [dst]
    [entry] = vm_entries(after, "clu1")
    assert entry["state"] == "Running"
    assert entry["clustered"]
    role = roles(after, n.cluster_b)["clu1"]
    assert role["owner_node"] == dst
    assert role["state"] == "Online"
    assert vm_files(after, src, "clu1") == []
    assert [m["starts"] for m in after["move_starts"].values() if m["vm"] == "clu1"] == [1]
    assert (await handle.query(MigrateVmWorkflow.progress)).step == Step.DONE
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled.index("remove_cluster_role") < scheduled.index("start_or_attach_move")
    assert scheduled[-1] == "restore_cluster_role", "HA restored on the destination after the move"
    assert result.ha == HaOutcome.RESTORED_ON_DESTINATION
    assert result.ha_cluster.casefold() == n.cluster_b.casefold()
    stored = e2e.delegation(src, dst)
    assert delegates_to(stored[src], dst)
    assert delegates_to(stored[dst], src)


async def test_storage_moves_to_the_given_path(e2e: E2E) -> None:
    n = e2e.names
    target = r"D:\Custom\Place\std2"
    result = await e2e.migrate("std2", n.s1, n.s2, storage_path=target)

    after = await truth(e2e)
    assert result.moved
    assert after["locations"]["std2"] == [n.s2]
    [entry] = vm_entries(after, "std2")
    assert entry["path"].lower() == target.lower()
    assert entry["disks"]
    assert all(ntpath.dirname(d).lower() == target.lower() for d in entry["disks"])
    under = [p for p in files_of(after, n.s2) if p.startswith(target.lower() + "\\")]
    assert {d.lower() for d in entry["disks"]} <= set(under)
    assert any(p.endswith(".vmcx") for p in under), under
    assert vm_files(after, n.s1, "std2") == []


# -- preflight blockers: nothing changes -------------------------------------------------------------------------
BLOCKERS = [
    pytest.param("sw1", "s2", "switch-missing", id="switch-missing-on-destination"),
    pytest.param("pt1", "s2", "passthrough-disk", id="pass-through-disk"),
    pytest.param("cpu1", "amd", "cpu-vendor-mismatch", id="amd-destination"),
    pytest.param("ver1", "s2", "config-version-unsupported", id="config-version-too-new"),
    pytest.param("bak1", "s2", "backup-in-progress", id="backup-in-progress"),
    pytest.param("fw1", "fw", "firewall-6600-closed", id="tcp-6600-firewall-closed"),
]


@pytest.mark.parametrize(("vm", "destination", "blocker"), BLOCKERS)
async def test_a_preflight_blocker_fails_the_run_before_any_change(
    e2e: E2E, vm: str, destination: str, blocker: str
) -> None:
    n = e2e.names
    src, dst = n.s1, getattr(n, destination)
    before = await truth(e2e)
    directory_before = e2e.delegation(src, dst)

    handle = await e2e.start(vm, src, dst)
    with pytest.raises(WorkflowFailureError) as caught:
        await result_of(handle)

    error = failure_of(caught)
    assert error.type == PREFLIGHT_BLOCKED
    assert error.non_retryable
    assert blocker in error.message
    [details] = error.details
    assert isinstance(details, dict)
    assert blocker in {c["id"] for c in details["concerns"] if c["severity"] == "blocker"}
    report = await handle.query(MigrateVmWorkflow.preflight_report)
    assert isinstance(report, PreflightReport)
    assert blocker in {c.id for c in report.blockers}
    assert await handle.query(MigrateVmWorkflow.compensations) == []
    assert (await handle.query(MigrateVmWorkflow.progress)).step == Step.FAILED

    after = await truth(e2e)
    assert state(after) == state(before)
    assert not [job for job in after["jobs"] if job["vm_name"] == vm]
    assert e2e.delegation(src, dst) == directory_before


# -- failures and their compensation -----------------------------------------------------------------------------
async def test_a_partition_at_40_percent_is_retried_and_the_vm_ends_on_one_host(e2e: E2E) -> None:
    n = e2e.names
    src, dst = n.s1, n.s2
    e2e.lab.inject_fault("fail_move_at", vm="part1", percent=40, action="partition", partition_seconds=10)

    result = await e2e.migrate("part1", src, dst)

    after = await truth(e2e)
    assert result.moved
    assert after["locations"]["part1"] == [dst], "on exactly one host"
    assert [e["host"] for e in vm_entries(after, "part1")] == [dst], "no planned VM left anywhere"
    assert [m["starts"] for m in after["move_starts"].values() if m["vm"] == "part1"] == [2]
    # (The failed attempt's job is no longer listed: hosts keep ended jobs for 5 simulated minutes.)
    assert [f for f in after["hosts"][dst]["files"] if f["partial"]] == [], "leftovers of the failed attempt cleaned"
    assert vm_files(after, src, "part1") == []
    [entry] = vm_entries(after, "part1")
    assert entry["state"] == "Running"
    assert {f.lower() for f in entry["disks"]} <= set(files_of(after, dst))


async def test_a_full_destination_volume_fails_the_move_and_everything_is_put_back(e2e: E2E) -> None:
    n = e2e.names
    src, dst = n.a1, n.s2
    e2e.lab.set_time_scale(5)  # a move of clu2 (100 GB of disk) takes long enough to fill the volume during it
    before = await truth(e2e)
    directory_before = e2e.delegation(src, dst)
    assert "clu2" in roles(before, n.cluster_a)

    # To a standalone host: the request drops HA explicitly; the failure puts the role back on the source anyway.
    handle = await e2e.start("clu2", src, dst, policy=MigrationPolicy(revert_delegation=True, ha=HaChoice.DROP))
    await e2e.wait_truth(
        lambda t: any(j["vm_name"] == "clu2" and j["active"] and j["percent_complete"] > 0 for j in t["jobs"])
    )
    fault = e2e.lab.inject_fault("fill_volume", host=dst, drive="D", seconds=3600, leave_gb=0)
    with pytest.raises(WorkflowFailureError) as caught:
        await result_of(handle)

    error = failure_of(caught)
    assert error.type == DESTINATION_DISK_FULL, error.message
    assert "compensation:" in error.message
    outcomes = await handle.query(MigrateVmWorkflow.compensations)
    assert all(isinstance(o, CompensationOutcome) and o.ok for o in outcomes), outcomes
    assert [o.step for o in outcomes] == [
        f"clean leftovers on {dst}",
        f"restore settings on {dst}",
        f"restore settings on {src}",
        "revert delegation",
        "restore cluster role on source",
    ]
    [details] = error.details
    assert [d["step"] for d in details["compensations"]] == [o.step for o in outcomes]
    assert details["compensation_failed"] is False

    after = await truth(e2e)
    # The VM runs on the source, highly available again with its preferred owners.
    assert after["locations"]["clu2"] == [src]
    assert [(e["host"], e["state"], e["clustered"]) for e in vm_entries(after, "clu2")] == [(src, "Running", True)]
    role = roles(after, n.cluster_a)["clu2"]
    assert role["owner_node"] == src
    assert role["preferred_owners"] == roles(before, n.cluster_a)["clu2"]["preferred_owners"]
    # Both hosts' settings as before; the destination holds nothing of the move (only the fault's filler).
    assert settings_of(after, src) == settings_of(before, src)
    assert settings_of(after, dst) == settings_of(before, dst)
    filler = f"d:\\lab-fault-{fault['id']}.fill"
    left = files_of(after, dst)
    assert left.pop(filler, None) is not None, "the volume was full"
    assert left == files_of(before, dst)
    assert files_of(after, src) == files_of(before, src)
    # The delegation this run added is gone again.
    assert e2e.delegation(src, dst) == directory_before
    e2e.lab.clear_fault(fault["id"])


async def test_cancel_during_the_move_terminates_the_host_job_and_compensates(e2e: E2E) -> None:
    n = e2e.names
    src, dst = n.s1, n.s2
    e2e.lab.set_time_scale(5)  # big1's 100 GB take many seconds to copy: the move is watchable
    before = await truth(e2e)

    handle = await e2e.start("big1", src, dst)
    seen = await e2e.wait_progress(handle, lambda p: p.step == Step.MOVE and p.percent > 0)
    assert seen.percent < 100
    # The host's job reports a percent only; the bytes are the preflight's estimate (memory + disks) times it.
    assert seen.bytes_total > 100 * 1024**3
    assert 0 < seen.bytes_done < seen.bytes_total
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as caught:
        await result_of(handle)

    assert isinstance(caught.value.cause, CancelledError), repr(caught.value.cause)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    after = await truth(e2e)
    jobs = [job for job in after["jobs"] if job["vm_name"] == "big1"]
    assert [(job["state"], job["active"]) for job in jobs] == [("Terminated", False)]
    assert after["locations"]["big1"] == [src]
    assert [(e["host"], e["state"]) for e in vm_entries(after, "big1")] == [(src, "Running")]
    outcomes = await handle.query(MigrateVmWorkflow.compensations)
    assert [o.step for o in outcomes] == [
        f"clean leftovers on {dst}",
        f"restore settings on {dst}",
        f"restore settings on {src}",
    ]
    assert all(o.ok for o in outcomes), outcomes
    assert files_of(after, dst) == files_of(before, dst), "the partial copy was removed"
    assert settings_of(after, dst) == settings_of(before, dst)
    assert settings_of(after, src) == settings_of(before, src)


# -- secrets ------------------------------------------------------------------------------------------------------
async def test_no_password_is_in_the_event_history(e2e: E2E) -> None:
    n = e2e.names
    lab_password = e2e.lab.password_file.read_text().strip()
    secrets = {
        "lab WinRM": lab_password,
        "Samba Administrator": e2e.samba.admin_password,
        "Samba operator": e2e.samba.operator_password,
    }
    assert all(secrets.values())
    handle = await e2e.start("hist1", n.s1, n.s2)
    result = await result_of(handle)
    assert result.moved
    assert result.delegation_added

    histories = [(await handle.fetch_history()).to_json()]
    entity = e2e.client.get_workflow_handle(migration_slots_workflow_id(e2e.task_queue))
    histories.append((await entity.fetch_history()).to_json())
    assert "ensure_delegation" in histories[0]
    assert "start_or_attach_move" in histories[0]
    for text in histories:
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} password is in an event history"
