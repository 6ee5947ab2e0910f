"""A clustered VM's high availability is never lost without a word, and verify asks the moved guest to answer.

Real parts: the lab over WinRM/PSRP, Samba for delegation, a real Temporal server and worker. The HA choice is
made before anything changes, so a refused run leaves the lab's truth exactly as it was.
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from tests.e2e.conftest import E2E, result_of
from tests.e2e.test_migrate_vm import failure_of, roles, state, truth, vm_entries
from workflows.contracts import (
    GUEST_NOT_ANSWERING,
    HA_CHOICE_REQUIRED,
    HA_RESTORE_IMPOSSIBLE,
    GuestCheck,
    HaChoice,
    HaOutcome,
    MigrationPolicy,
    PreflightReport,
    Step,
)
from workflows.migrate_vm import MigrateVmWorkflow


@pytest.mark.parametrize(
    ("choice", "error_type"), [(None, HA_CHOICE_REQUIRED), (HaChoice.RESTORE, HA_RESTORE_IMPOSSIBLE)]
)
async def test_a_clustered_vm_is_not_moved_to_a_standalone_host_without_an_explicit_choice(
    e2e: E2E, choice: HaChoice | None, error_type: str
) -> None:
    n = e2e.names
    before = await truth(e2e)

    handle = await e2e.start("clu1", n.a1, n.s1, policy=MigrationPolicy(ha=choice))
    with pytest.raises(WorkflowFailureError) as caught:
        await result_of(handle)

    failure = failure_of(caught)
    assert failure.type == error_type
    assert "nothing was changed" in failure.message
    assert "--ha drop" in failure.message
    assert state(await truth(e2e)) == state(before), "the role, the VM and both hosts are as they were"
    report = await handle.query(MigrateVmWorkflow.preflight_report)
    assert isinstance(report, PreflightReport)
    [lost] = [c for c in report.concerns if c.id == "ha-lost"]
    assert lost.severity == "warning"
    assert n.cluster_a.casefold() in lost.message.casefold()
    assert (await handle.query(MigrateVmWorkflow.progress)).step == Step.FAILED


async def test_ha_drop_moves_a_clustered_vm_to_a_standalone_host_and_says_where_the_role_went(e2e: E2E) -> None:
    n = e2e.names
    assert "clu1" in roles(await truth(e2e), n.cluster_a)

    result = await e2e.migrate("clu1", n.a1, n.s1, policy=MigrationPolicy(ha=HaChoice.DROP))

    after = await truth(e2e)
    assert result.moved
    assert result.ha == HaOutcome.DROPPED
    assert result.ha_cluster == ""
    assert any(w.startswith("ha-dropped:") and n.cluster_a in w for w in result.warnings), result.warnings
    assert after["locations"]["clu1"] == [n.s1]
    [entry] = vm_entries(after, "clu1")
    assert not entry["clustered"]
    assert "clu1" not in roles(after, n.cluster_a)


async def test_ha_drop_is_honoured_even_when_the_destination_is_a_cluster_node(e2e: E2E) -> None:
    n = e2e.names

    result = await e2e.migrate("clu1", n.a1, n.b1, policy=MigrationPolicy(ha=HaChoice.DROP))

    after = await truth(e2e)
    assert result.ha == HaOutcome.DROPPED
    assert after["locations"]["clu1"] == [n.b1]
    assert "clu1" not in roles(after, n.cluster_b)
    assert not vm_entries(after, "clu1")[0]["clustered"]


async def test_a_guest_that_reads_no_contact_for_a_while_is_waited_for(e2e: E2E) -> None:
    n = e2e.names
    # 60 simulated seconds at the e2e time scale of 60: about one real second of NoContact.
    e2e.lab.inject_fault("guest_heartbeat", vm="std1", heartbeat="NoContact", seconds=60)

    result = await e2e.migrate("std1", n.s1, n.s2, policy=MigrationPolicy(guest_timeout_seconds=20))

    assert result.moved
    assert result.guest_answers
    assert not [w for w in result.warnings if w.startswith("guest-not-answering")]


async def test_a_guest_that_lost_communication_is_a_warning_by_default(e2e: E2E) -> None:
    n = e2e.names
    e2e.lab.inject_fault("guest_heartbeat", vm="std1", heartbeat="LostCommunication", seconds=3600)

    result = await e2e.migrate("std1", n.s1, n.s2, policy=MigrationPolicy(guest_timeout_seconds=1))

    assert result.moved
    assert not result.guest_answers
    [warning] = [w for w in result.warnings if w.startswith("guest-not-answering")]
    assert "LostCommunication" in warning
    assert (await truth(e2e))["locations"]["std1"] == [n.s2]


async def test_a_guest_that_lost_communication_fails_the_run_when_the_policy_says_so(e2e: E2E) -> None:
    n = e2e.names
    e2e.lab.inject_fault("guest_heartbeat", vm="std1", heartbeat="LostCommunication", seconds=3600)

    handle = await e2e.start(
        "std1", n.s1, n.s2, policy=MigrationPolicy(guest_timeout_seconds=1, guest_check=GuestCheck.FAIL)
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await result_of(handle)

    failure = failure_of(caught)
    assert failure.type == GUEST_NOT_ANSWERING
    assert "stays on" in failure.message
    # A move is not undone: the VM runs on the destination, once.
    after = await truth(e2e)
    assert after["locations"]["std1"] == [n.s2]
    assert [m["starts"] for m in after["move_starts"].values() if m["vm"] == "std1"] == [1]
