"""The approval step of MigrateVm against real servers and the lab (pair.yaml, delegation policy `skip`).

- The deadline, on the time-skipping test server: an hour passes in workflow time without anyone approving, the
  run fails with ApprovalTimedOut and the lab shows nothing changed. The test does not wait the hour.
- Approved before the deadline (dev server): the saga goes on and moves the VM, once.
- Rejected (dev server): ApprovalRejected, nothing changed.

The time-skipping server knows no search attribute until it is told: MigrateVm upserts snlm's, and without the
registration below its first workflow task fails over and over ("search attribute SnlmTicket is not defined"),
so the run would never get anywhere. The test server implements OperatorService.AddSearchAttributes (not
ListSearchAttributes), which is enough.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from lab.lab import Lab
from tests.conftest import _binary, register_search_attributes
from tests.e2e.durable import wait_for
from tests.workflows.record_history import PAIR, start_dev_server
from worker import build_worker
from workflows.contracts import (
    APPROVAL_REJECTED,
    APPROVAL_TIMED_OUT,
    ApproveRequest,
    DelegationPolicy,
    MigrateVmInput,
    MigrateVmResult,
    MigrationPolicy,
    Step,
    migrate_vm_workflow_id,
)
from workflows.migrate_vm import MigrateVmWorkflow

APPROVAL = MigrationPolicy(delegation=DelegationPolicy.SKIP, require_approval=True, approval_timeout_seconds=3600)
TIMEOUT = 90.0  # the bound on every wait for a run (they take a second or two)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of this module's own, with snlm's search attributes registered."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_binary("temporal-test-server"))
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this module's own (the moves start the HostSlots entities on this module's task queue)."""
    env = await start_dev_server(_binary("temporal"))
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="module")
def module_queue() -> str:
    return f"approval-{uuid.uuid4()}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab.from_topology(PAIR, workdir=tmp_path / "lab", time_scale=300) as running:
        yield running


def state(truth: dict[str, Any]) -> dict[str, Any]:
    """What a move could change: where the VMs are, each host's files and live-migration settings, the directory,
    the migration jobs and the Move-VM starts (the clock and uptimes left out)."""
    return {
        "vms": sorted((v["name"], v["host"], v["planned"], v["state"], tuple(v["disks"])) for v in truth["vms"]),
        "hosts": {
            name: {key: host[key] for key in ("live_migration", "migration_networks", "files", "directory", "nics")}
            for name, host in truth["hosts"].items()
        },
        "jobs": truth["jobs"],
        "move_starts": truth["move_starts"],
    }


def starts(truth: dict[str, Any], vm: str) -> int:
    return sum(entry["starts"] for entry in truth["move_starts"].values() if entry["vm"] == vm)


async def _start(client: Client, lab: Lab, task_queue: str, vm: str) -> WorkflowHandle[Any, MigrateVmResult]:
    return await client.start_workflow(
        MigrateVmWorkflow.run,
        MigrateVmInput(vm, "HV-A", "HV-B", policy=APPROVAL),
        id=f"{migrate_vm_workflow_id(vm, 'HV-A')}-{uuid.uuid4()}",
        task_queue=task_queue,
    )


async def _at_approval(handle: WorkflowHandle[Any, MigrateVmResult]) -> None:
    async def waiting() -> bool:
        progress = await handle.query(MigrateVmWorkflow.progress)
        return progress.step == Step.APPROVAL and progress.waiting_for == "approval"

    await wait_for(waiting, timeout=TIMEOUT, what="the run to wait for its approval")


async def test_no_approval_within_the_deadline_fails_with_nothing_changed(
    skipping_env: WorkflowEnvironment, lab: Lab
) -> None:
    client, task_queue = skipping_env.client, f"tq-{uuid.uuid4()}"
    before = state(lab.truth())
    settings = Settings(inventory=lab.inventory_path, task_queue=task_queue, move_poll_seconds=0.1)
    async with build_worker(client, settings):
        handle = await _start(client, lab, task_queue, "vm-a1")
        with pytest.raises(WorkflowFailureError) as failed:
            # result() lets the test server skip time while the run only waits for its timer.
            await asyncio.wait_for(handle.result(), TIMEOUT)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == APPROVAL_TIMED_OUT, repr(cause)
    assert "nothing was changed" in str(cause)

    after = lab.truth()
    assert state(after) == before
    assert after["move_starts"] == {}
    assert after["locations"]["vm-a1"] == ["HV-A"]

    # The hour passed in workflow time: a timer of 3600 s fired, and only preflight ran (read-only).
    history = await handle.fetch_history()
    events = history.events
    timers = [e.timer_started_event_attributes for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    assert [t.start_to_fire_timeout.ToTimedelta() for t in timers] == [timedelta(hours=1)]
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in events)
    workflow_time = events[-1].event_time.ToDatetime() - events[0].event_time.ToDatetime()
    assert workflow_time >= timedelta(hours=1)
    activities = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert activities == ["preflight"]


async def test_approved_before_the_deadline_moves_once(
    dev_env: WorkflowEnvironment, module_queue: str, lab: Lab
) -> None:
    client = dev_env.client
    before = state(lab.truth())
    settings = Settings(inventory=lab.inventory_path, task_queue=module_queue, move_poll_seconds=0.1)
    async with build_worker(client, settings):
        handle = await _start(client, lab, module_queue, "vm-a2")
        await _at_approval(handle)
        assert state(lab.truth()) == before, "something changed before the approval"
        answer = await handle.execute_update(
            MigrateVmWorkflow.approve, ApproveRequest("alice", comment="CHG-1234 window")
        )
        assert answer == "approved"
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
    assert result.moved
    truth = lab.truth()
    assert truth["locations"]["vm-a2"] == ["HV-B"]
    assert [v["host"] for v in truth["vms"] if v["name"] == "vm-a2"] == ["HV-B"]
    assert starts(truth, "vm-a2") == 1


async def test_rejected_fails_with_nothing_changed(dev_env: WorkflowEnvironment, module_queue: str, lab: Lab) -> None:
    client = dev_env.client
    before = state(lab.truth())
    settings = Settings(inventory=lab.inventory_path, task_queue=module_queue, move_poll_seconds=0.1)
    async with build_worker(client, settings):
        handle = await _start(client, lab, module_queue, "vm-a3")
        await _at_approval(handle)
        answer = await handle.execute_update(
            MigrateVmWorkflow.approve, ApproveRequest("bob", approved=False, comment="not this week")
        )
        assert answer == "rejected"
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), TIMEOUT)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == APPROVAL_REJECTED, repr(cause)
    assert "bob" in str(cause)
    assert state(lab.truth()) == before
