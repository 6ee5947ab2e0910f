"""The MigrateVm saga's logic, fast: stub activities under the real names on the time-skipping test server.

The workflow code is the real one (with HostSlots for the move's slots); every activity is a stub from
tests/workflows/stubs.py that answers at once with the contract's types and records its call, so these tests
assert the exact order of steps and compensations, and the run's outcome, in seconds:

- the happy path, step by step;
- a failing move after every step changed something: compensations in exact reverse order, the original error
  type raised again with the outcome attached; and a compensation that fails while the others still run;
- admission (event 21501): the move is requeued after a timer, not failed, not compensated;
- the delegation policies `verify` (missing entries stop the run before any host setting changes) and `skip`;
- HA: restored on a destination cluster node, refused before any change without a choice, dropped on request;
- a guest whose heartbeat is not OK after the move: a warning, or a failure by policy, never an undone move;
- a cancel in each step: the run ends cancelled, the compensations of the completed steps ran in reverse, and
  nothing after the step ran.

Every history these tests make is replayed afterwards on the same code.

Each test takes a fresh task queue, workflow id and host names: the HostSlots entities a move starts are named
after its hosts and outlive it, on the task queue of the move that started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from tests.conftest import _binary, register_search_attributes
from tests.e2e.durable import wait_for
from tests.workflows.stubs import ISO_CONCERN, MOVE_BYTES, SagaStubs, delegation_values
from workflows.contracts import (
    DELEGATION_NOT_CONFIGURED,
    DESTINATION_DISK_FULL,
    GUEST_NOT_ANSWERING,
    HA_CHOICE_REQUIRED,
    HA_RESTORE_IMPOSSIBLE,
    HOST_ACCESS_DENIED,
    MIGRATION_LIMIT_REACHED,
    MIGRATION_SERVICE,
    SA_STEP,
    CleanupInput,
    CompensationOutcome,
    DelegationPolicy,
    GuestCheck,
    HaChoice,
    HaOutcome,
    HostMigrationSettings,
    MigrateVmInput,
    MigrateVmResult,
    MigrationPolicy,
    MigrationSlotsStatus,
    MoveInput,
    PairHolder,
    RestoreClusterRoleInput,
    Step,
    VerifyInput,
    migration_slots_workflow_id,
    move_task_queue,
)
from workflows.host_slots import HostSlotsWorkflow
from workflows.migrate_vm import MigrateVmWorkflow
from workflows.migration_slots import MigrationSlotsWorkflow

TIMEOUT = 30.0  # the bound on every wait (each run takes well under a second)
VM = "app04"
# A clustered VM, delegation and both hosts' settings changed, and revert of delegation asked: every
# compensation the saga knows is registered by the time the move starts.
EVERYTHING = MigrationPolicy(revert_delegation=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own (the session's is shared with modules that leave workflows)."""
    server = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_binary("temporal-test-server"))
    try:
        await register_search_attributes(server.client)
        yield server
    finally:
        await server.shutdown()


@dataclass
class Move:
    """One test's move: its hosts, stubs and queue, all fresh."""

    client: Client
    source: str
    destination: str
    task_queue: str
    workflow_id: str
    started: list[WorkflowHandle[Any, MigrateVmResult]] = field(default_factory=list)

    @property
    def hosts(self) -> tuple[str, str]:
        return (self.source, self.destination)

    def stubs(self, **estate: Any) -> SagaStubs:
        return SagaStubs(VM, self.source, self.destination, **estate)

    @asynccontextmanager
    async def worker(self, stubs: SagaStubs) -> AsyncIterator[Worker]:
        # As the real worker: every activity on the task queue, the move also alone on its own queue.
        throttle: dict[str, Any] = {
            # A cancel reaches a stub through its heartbeats: let them through at once instead of every 24 s.
            "max_heartbeat_throttle_interval": timedelta(milliseconds=50),
            "default_heartbeat_throttle_interval": timedelta(milliseconds=50),
        }
        async with (
            Worker(
                self.client,
                task_queue=self.task_queue,
                workflows=[MigrateVmWorkflow, MigrationSlotsWorkflow, HostSlotsWorkflow],
                activities=stubs.activities(),
                **throttle,
            ) as worker,
            Worker(
                self.client,
                task_queue=move_task_queue(self.task_queue),
                activities=[stubs.start_or_attach_move],
                **throttle,
            ),
        ):
            yield worker

    async def start(
        self, policy: MigrationPolicy = EVERYTHING, *, prepared_ahead: bool = False
    ) -> WorkflowHandle[Any, MigrateVmResult]:
        handle = await self.client.start_workflow(
            MigrateVmWorkflow.run,
            # A book of slots of this test's own, like its hosts and queue.
            MigrateVmInput(
                VM,
                self.source,
                self.destination,
                policy=replace(policy, slot_book=self.task_queue),
                campaign="wave-test",
                prepared_ahead=prepared_ahead,
            ),
            id=self.workflow_id,
            task_queue=self.task_queue,
        )
        self.started.append(handle)
        return handle

    async def slots(self, host: str) -> HostHolders:
        status: MigrationSlotsStatus = await self.client.get_workflow_handle(
            migration_slots_workflow_id(self.task_queue)
        ).query(MigrationSlotsWorkflow.status)
        return HostHolders(tuple(h for h in status.holders if host in h.hosts))


@dataclass(frozen=True)
class HostHolders:
    """Who holds a slot on one host."""

    holders: tuple[PairHolder, ...]


@pytest_asyncio.fixture(loop_scope="session")
async def move(env: WorkflowEnvironment) -> AsyncIterator[Move]:
    tag = uuid.uuid4().hex[:8]
    fresh = Move(env.client, f"HV-S-{tag}", f"HV-D-{tag}", f"saga-{tag}", f"snlm-vm-{VM}@hv-s-{tag}")
    yield fresh
    # The slots entity outlives the move, on this test's queue that no worker polls any more. Left running, the next
    # timer of its the server skips to opens a workflow task nobody takes, and the test server stops skipping time
    # until it is done: a later test's 30 s admission timer would then take 30 real seconds.
    handles = [*fresh.started, env.client.get_workflow_handle(migration_slots_workflow_id(fresh.task_queue))]
    for handle in handles:
        with contextlib.suppress(RPCError):  # already closed, or never started (no move reached the slots)
            await handle.terminate("the test is over")
    # Every history these tests make replays on the same code: what a worker restarted mid-run would do.
    for handle in handles:
        try:
            history = await handle.fetch_history()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        replayed = await Replayer(
            workflows=[MigrateVmWorkflow, MigrationSlotsWorkflow, HostSlotsWorkflow]
        ).replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None, f"{handle.id}: {replayed.replay_failure!r}"


async def _failure(handle: WorkflowHandle[Any, Any]) -> BaseException:
    with pytest.raises(WorkflowFailureError) as failed:
        # result() lets the test server skip time while the run only waits for a timer.
        await asyncio.wait_for(handle.result(), TIMEOUT)
    cause = failed.value.cause
    assert cause is not None
    return cause


async def _compensations(handle: WorkflowHandle[Any, Any]) -> list[CompensationOutcome]:
    outcomes: list[CompensationOutcome] = await handle.query(MigrateVmWorkflow.compensations)
    return outcomes


def _timers(events: Sequence[Any]) -> list[timedelta]:
    return [
        e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for e in events
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]


def _steps_until_move(m: Move) -> list[str]:
    """Everything the saga calls before the move, in order, for a clustered VM whose hosts all change (the two
    hosts' settings side by side: both read, then both ensured)."""
    s, d = m.source, m.destination
    return [
        "preflight",
        "read_vm",
        "snapshot_cluster_role",
        "remove_cluster_role",
        "ensure_delegation",
        "purge_tickets",
        f"read_migration_settings@{s}",
        f"read_migration_settings@{d}",
        f"ensure_migration_settings@{s}",
        f"ensure_migration_settings@{d}",
    ]


def _undo_all(m: Move) -> list[str]:
    """Every compensation, in the reverse of the order the steps registered them."""
    s, d = m.source, m.destination
    return [
        f"clean_destination@{d}",
        f"restore_migration_settings@{d}",
        f"restore_migration_settings@{s}",
        "revert_delegation",
        f"restore_cluster_role@{s}",
    ]


def _undo_steps(m: Move) -> list[str]:
    """The compensation outcomes' step names for _undo_all, in the same order."""
    return [
        f"clean leftovers on {m.destination}",
        f"restore settings on {m.destination}",
        f"restore settings on {m.source}",
        "revert delegation",
        "restore cluster role on source",
    ]


# -- the happy path -----------------------------------------------------------------------------------------------


async def test_the_happy_path_calls_every_step_in_order(move: Move) -> None:
    stubs = move.stubs(iso_missing=True)
    async with move.worker(stubs):
        handle = await move.start()
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        progress = await handle.query(MigrateVmWorkflow.progress)
        outcomes = await _compensations(handle)
        held = [await move.slots(host) for host in move.hosts]

    s, d = move.source, move.destination
    assert stubs.trail() == [
        *_steps_until_move(move),
        "remediate",
        "start_or_attach_move",
        "verify_move",
        # The destination is a node of CL-EAST: the VM is made highly available there once it runs there.
        f"restore_cluster_role@{d}",
    ]
    assert all(call.attempt == 1 for call in stubs.calls)

    # What crossed the contract: the VM's id from read_vm addresses the move and verify; the preflight estimate
    # sizes the move; the ISO the destination lacks is ejected on the source before the move.
    (remediate,) = stubs.arguments("remediate")
    assert (remediate.host, remediate.concern_ids) == (s, (ISO_CONCERN,))
    (moved,) = stubs.arguments("start_or_attach_move")
    assert moved == MoveInput(VM, stubs.vm_id, s, d, None, bytes_estimate=MOVE_BYTES)
    (verified,) = stubs.arguments("verify_move")
    assert verified == VerifyInput(VM, stubs.vm_id, s, d, stubs.files, guest_timeout_seconds=120.0)
    (restored,) = stubs.arguments("restore_cluster_role")
    assert (restored.host, restored.vm_id, restored.snapshot.clustered) == (d, stubs.vm_id, True)
    (purged,) = stubs.arguments("purge_tickets")
    assert purged.hosts == (s, d)
    (removed,) = stubs.arguments("remove_cluster_role")
    assert (removed.clustered, removed.host, removed.cluster) == (True, s, "CL-WEST")

    assert result.moved
    assert not result.already_there
    assert result.settings_changed == (s, d)
    assert set(result.delegation_added) == {*delegation_values(s, d), *delegation_values(d, s)}
    assert result.cleaned_source_files == stubs.files[:1]
    assert result.warnings == (f"{ISO_CONCERN}: the ISO is not on the destination",)
    assert (result.ha, result.ha_cluster, result.guest_answers) == (HaOutcome.RESTORED_ON_DESTINATION, "CL-EAST", True)
    assert (progress.step, progress.percent) == (Step.DONE, 100)
    assert outcomes == []
    # The move gave its slots back on both hosts.
    assert [status.holders for status in held] == [(), ()]


async def test_hosts_whose_settings_are_in_place_are_not_asked_to_ensure_them(move: Move) -> None:
    """Both hosts read as the move needs them: no ensure (a round trip each, for nothing), nothing said changed,
    and the storage path preflight checked goes to the move, which may then start in one round trip."""
    stubs = move.stubs(settings_changed=False, storage_path=r"D:\VMs\app04")
    async with move.worker(stubs):
        handle = await move.start()
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
    s, d = move.source, move.destination
    assert stubs.trail() == [
        *(step for step in _steps_until_move(move) if not step.startswith("ensure_migration_settings")),
        "start_or_attach_move",
        "verify_move",
        f"restore_cluster_role@{d}",
    ]
    (moved,) = stubs.arguments("start_or_attach_move")
    assert moved == MoveInput(VM, stubs.vm_id, s, d, r"D:\VMs\app04", bytes_estimate=MOVE_BYTES)
    assert result.moved
    assert result.settings_changed == ()


async def test_a_host_whose_settings_differ_is_ensured_and_the_other_is_not(move: Move) -> None:
    """Only the destination lacks what the move needs (here: the migration network the policy names)."""
    s, d = move.source, move.destination
    stubs = move.stubs(settings_changed=False, networks={s: (("10.9.0.0/24", 1),)})
    async with move.worker(stubs):
        handle = await move.start(replace(EVERYTHING, migration_networks=("10.9.0.0/24",)))
        await asyncio.wait_for(handle.result(), TIMEOUT)
    calls = [step for step in stubs.trail() if step.startswith("ensure_migration_settings")]
    assert calls == [f"ensure_migration_settings@{d}"]


async def test_a_moved_vm_shows_its_move_whole_while_it_is_verified(move: Move) -> None:
    # The move's percent comes from its activity's heartbeats while it runs; once it has ended the run itself must
    # say the bytes are across, or `status` and `campaign watch` show a moved VM at 0 % while it is verified.
    stubs = move.stubs(block="verify_move")
    async with move.worker(stubs):
        handle = await move.start()
        await asyncio.wait_for(stubs.blocked.wait(), TIMEOUT)
        verifying = await handle.query(MigrateVmWorkflow.progress)

        # Verify only reads: both hosts' slots are given back while it runs, not a round trip before it starts.
        async def given_back() -> bool:
            return [(await move.slots(host)).holders for host in move.hosts] == [(), ()]

        await wait_for(given_back, timeout=TIMEOUT, what="the slots to be given back during the verify")
        stubs.release.set()
        await asyncio.wait_for(handle.result(), TIMEOUT)
        events = list((await handle.fetch_history()).events)

    def scheduled(name: str) -> int:
        return next(
            i
            for i, event in enumerate(events)
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and event.activity_task_scheduled_event_attributes.activity_type.name == name
        )

    # The verify was scheduled in the task that sent the release, before the release was confirmed.
    moved, verified = scheduled("start_or_attach_move"), scheduled("verify_move")
    kinds = [event.event_type for event in events]
    confirmed = kinds.index(EventType.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED, moved)
    assert moved < verified < confirmed

    assert verifying.step == Step.VERIFY
    assert (verifying.percent, verifying.bytes_done, verifying.bytes_total) == (100, MOVE_BYTES, MOVE_BYTES)


async def _ready(move: Move, handle: WorkflowHandle[Any, MigrateVmResult]) -> None:
    async def ready() -> bool:
        progress = await handle.query(MigrateVmWorkflow.progress)
        return progress.step == Step.READY

    await wait_for(ready, timeout=TIMEOUT, what="the prepared run to be ready")
    progress = await handle.query(MigrateVmWorkflow.progress)
    assert progress.waiting_for == "its turn in campaign wave-test"


async def test_a_move_prepared_ahead_waits_for_its_turn_with_the_vm_untouched(move: Move) -> None:
    stubs = move.stubs()
    async with move.worker(stubs):
        handle = await move.start(prepared_ahead=True)
        await _ready(move, handle)
        # Ready: the checks, the directory and the hosts' settings are done; the VM keeps its cluster role and no
        # slot is held while the run waits.
        at_ready = stubs.trail()
        with pytest.raises(RPCError) as no_book:
            await move.slots(move.source)
        await handle.signal(MigrateVmWorkflow.go)
        result = await asyncio.wait_for(handle.result(), TIMEOUT)

    steps = _steps_until_move(move)
    cluster = ["snapshot_cluster_role", "remove_cluster_role"]
    assert at_ready == [step for step in steps if step not in cluster]
    # No move of this test reached its slots yet: the slot book has not even started.
    assert no_book.value.status == RPCStatusCode.NOT_FOUND
    after_go = stubs.trail()[len(at_ready) :]
    assert after_go[:3] == [*cluster, "start_or_attach_move"]
    assert result.moved


async def test_a_move_prepared_ahead_that_is_cancelled_before_its_turn_undoes_only_the_hosts(move: Move) -> None:
    stubs = move.stubs()
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(revert_delegation=True), prepared_ahead=True)
        await _ready(move, handle)
        await handle.cancel()
        cause = await _failure(handle)
        outcomes = await _compensations(handle)

    assert isinstance(cause, CancelledError), repr(cause)
    # The cluster role was never touched, so nothing puts it back; the settings and the delegation are undone.
    assert not [call for call in stubs.trail() if "cluster_role" in call]
    assert [o.step for o in outcomes] == [
        f"restore settings on {move.destination}",
        f"restore settings on {move.source}",
        "revert delegation",
    ]
    assert all(o.ok for o in outcomes)


# -- compensation ---------------------------------------------------------------------------------------------------


async def test_a_failed_move_runs_every_compensation_in_reverse(move: Move) -> None:
    failure = ApplicationError(
        "Move-VM: not enough space on the disk (0x80070070)", type=DESTINATION_DISK_FULL, non_retryable=True
    )
    stubs = move.stubs(failures={"start_or_attach_move": failure})
    async with move.worker(stubs):
        handle = await move.start()
        cause = await _failure(handle)
        outcomes = await _compensations(handle)
        progress = await handle.query(MigrateVmWorkflow.progress)
        held = [await move.slots(host) for host in move.hosts]

    assert stubs.trail() == [*_steps_until_move(move), "start_or_attach_move", *_undo_all(move)]
    # Non-retryable: one attempt of the move, and every compensation succeeded at its first attempt.
    assert all(call.attempt == 1 for call in stubs.calls)

    # Each compensation undoes exactly what its step changed.
    (reverted,) = stubs.arguments("revert_delegation")
    assert reverted == stubs.ensured[0]
    assert reverted.changed
    restored = stubs.arguments("restore_migration_settings")
    assert [r.host for r in restored] == [move.destination, move.source]
    assert all(
        isinstance(r, HostMigrationSettings) and not r.enabled and r.authentication == "CredSSP" for r in restored
    ), "restore puts back what was read before the change"
    (cleanup,) = stubs.arguments("clean_destination")
    assert cleanup == CleanupInput(VM, stubs.vm_id, move.destination)
    (role,) = stubs.arguments("restore_cluster_role")
    assert isinstance(role, RestoreClusterRoleInput)
    assert (role.host, role.vm_id, role.snapshot.clustered, role.snapshot.cluster, role.snapshot.priority) == (
        move.source,
        stubs.vm_id,
        True,
        "CL-WEST",
        3000,
    )

    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == DESTINATION_DISK_FULL
    assert "not enough space" in cause.message
    details = cause.details[0]
    assert details["compensation_failed"] is False
    assert [(c["step"], c["ok"]) for c in details["compensations"]] == [(step, True) for step in _undo_steps(move)]
    assert outcomes == [CompensationOutcome(step, ok=True) for step in _undo_steps(move)]
    assert progress.step == Step.FAILED
    assert [status.holders for status in held] == [(), ()]


async def test_one_host_s_settings_failing_undoes_both_once_the_other_s_ensure_ended(move: Move) -> None:
    s, d = move.source, move.destination
    refused = ApplicationError("Set-VMHost: access denied", type="AccessDenied", non_retryable=True)
    # The two hosts' settings are ensured side by side: the source's fails while the destination's still runs.
    stubs = move.stubs(failures={f"ensure_migration_settings@{s}": refused}, block=f"ensure_migration_settings@{d}")
    async with move.worker(stubs):
        handle = await move.start()
        await asyncio.wait_for(stubs.blocked.wait(), TIMEOUT)
        await asyncio.sleep(0.5)
        # No restore while the destination's ensure runs: it could restore the old settings and then be overwritten.
        assert not [label for label in stubs.log if label.startswith("restore_migration_settings")], stubs.log
        stubs.release.set()
        cause = await _failure(handle)
        outcomes = await _compensations(handle)

    assert "AccessDenied" in repr(cause), repr(cause)
    assert stubs.trail() == [*_steps_until_move(move), *_undo_all(move)[1:]]
    assert stubs.log.index(f"restore_migration_settings@{d}") > stubs.log.index(f"ensure_migration_settings@{d}")
    assert [o.step for o in outcomes] == _undo_steps(move)[1:]
    assert all(o.ok for o in outcomes)


async def test_a_failing_compensation_does_not_stop_the_others(move: Move) -> None:
    refused = ApplicationError("Set-VMHost: access denied (0x80070005)", type=HOST_ACCESS_DENIED, non_retryable=True)
    failure = ApplicationError("Move-VM: not enough space on the disk", type=DESTINATION_DISK_FULL, non_retryable=True)
    stubs = move.stubs(
        failures={"start_or_attach_move": failure, f"restore_migration_settings@{move.destination}": refused}
    )
    async with move.worker(stubs):
        handle = await move.start()
        cause = await _failure(handle)
        outcomes = await _compensations(handle)

    # The one that failed was tried once (non-retryable), and the three after it still ran, in order.
    assert stubs.trail() == [*_steps_until_move(move), "start_or_attach_move", *_undo_all(move)]
    assert all(call.attempt == 1 for call in stubs.calls)

    expected_ok = [step != f"restore settings on {move.destination}" for step in _undo_steps(move)]
    assert [(o.step, o.ok) for o in outcomes] == list(zip(_undo_steps(move), expected_ok, strict=True))
    (failed,) = [o for o in outcomes if not o.ok]
    assert "access denied" in failed.detail

    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == DESTINATION_DISK_FULL, "the original error's type, not the compensation's"
    details = cause.details[0]
    assert details["compensation_failed"] is True
    assert [c["ok"] for c in details["compensations"]] == expected_ok
    assert f"restore settings on {move.destination}: FAILED" in cause.message


# -- admission (event 21501) ------------------------------------------------------------------------------------------


async def test_a_host_at_its_migration_limit_requeues_the_move(move: Move) -> None:
    stubs = move.stubs(admission_refusals=2)
    async with move.worker(stubs):
        handle = await move.start()
        result = await asyncio.wait_for(handle.result(), TIMEOUT)
        progress = await handle.query(MigrateVmWorkflow.progress)
        outcomes = await _compensations(handle)
        history = await handle.fetch_history()

    # Asked three times, each a fresh activity at attempt 1: the refusals spent none of the retry policy's
    # attempts, and nothing was compensated between them.
    moves = [call for call in stubs.calls if call.name == "start_or_attach_move"]
    assert [call.attempt for call in moves] == [1, 1, 1]
    assert stubs.trail() == [
        *_steps_until_move(move),
        *["start_or_attach_move"] * 3,
        "verify_move",
        f"restore_cluster_role@{move.destination}",
    ]
    assert result.moved
    assert outcomes == []
    assert (progress.step, progress.attempt, progress.waiting_for) == (Step.DONE, 3, "")
    # Between the tries, the saga slept on a timer (skipped here, not waited for).
    assert _timers(history.events).count(timedelta(seconds=30)) == 2
    failed_moves = [
        e.activity_task_failed_event_attributes.failure.application_failure_info.type
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failed_moves == [MIGRATION_LIMIT_REACHED] * 2


# -- delegation policies ---------------------------------------------------------------------------------------------


async def test_verify_policy_stops_before_any_host_setting_when_entries_are_missing(move: Move) -> None:
    s, d = move.source, move.destination
    # The source may delegate to the destination; the destination lists nothing for the source.
    stubs = move.stubs(clustered=False, delegation_entries={s: delegation_values(s, d), d: ()})
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(delegation=DelegationPolicy.VERIFY))
        cause = await _failure(handle)
        outcomes = await _compensations(handle)
        progress = await handle.query(MigrateVmWorkflow.progress)

    # Preflight said the VM is not clustered: no cluster call; both accounts read; nothing written anywhere.
    assert stubs.trail() == ["preflight", "read_vm", f"read_computer_delegation@{s}", f"read_computer_delegation@{d}"]
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == DELEGATION_NOT_CONFIGURED
    assert f"{d} -> {s}" in cause.message
    assert f"{s} -> {d}" not in cause.message
    assert outcomes == []
    assert progress.step == Step.FAILED


async def test_verify_policy_goes_on_when_the_entries_are_there(move: Move) -> None:
    s, d = move.source, move.destination
    # As the directory stores them: another case, and only the migration service is what verify asks for.
    entries = {s: (f"{MIGRATION_SERVICE.upper()}/{d.lower()}",), d: (f"{MIGRATION_SERVICE}/{s}",)}
    stubs = move.stubs(clustered=False, delegation_entries=entries)
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(delegation=DelegationPolicy.VERIFY))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)

    assert stubs.trail() == [
        "preflight",
        "read_vm",
        f"read_computer_delegation@{s}",
        f"read_computer_delegation@{d}",
        f"read_migration_settings@{s}",
        f"read_migration_settings@{d}",
        f"ensure_migration_settings@{s}",
        f"ensure_migration_settings@{d}",
        "start_or_attach_move",
        "verify_move",
    ]
    assert result.moved
    assert result.delegation_added == ()


async def test_skip_policy_calls_no_directory_activity(move: Move) -> None:
    stubs = move.stubs(clustered=False)
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(delegation=DelegationPolicy.SKIP, revert_delegation=True))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)

    directory = {"ensure_delegation", "revert_delegation", "read_computer_delegation", "purge_tickets"}
    assert not directory & {call.name for call in stubs.calls}
    assert stubs.trail() == [
        "preflight",
        "read_vm",
        f"read_migration_settings@{move.source}",
        f"read_migration_settings@{move.destination}",
        f"ensure_migration_settings@{move.source}",
        f"ensure_migration_settings@{move.destination}",
        "start_or_attach_move",
        "verify_move",
    ]
    assert result.moved
    assert result.delegation_added == ()


# -- high availability and the guest ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "error_type"), [(None, HA_CHOICE_REQUIRED), (HaChoice.RESTORE, HA_RESTORE_IMPOSSIBLE)]
)
async def test_a_clustered_vm_to_a_standalone_host_needs_a_choice_before_anything_changes(
    move: Move, choice: HaChoice | None, error_type: str
) -> None:
    stubs = move.stubs(destination_cluster="")
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(revert_delegation=True, ha=choice))
        cause = await _failure(handle)
        outcomes = await _compensations(handle)
        progress = await handle.query(MigrateVmWorkflow.progress)

    assert stubs.trail() == ["preflight"]
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == error_type
    assert "nothing was changed" in cause.message
    assert "--ha drop" in cause.message
    assert outcomes == []
    assert progress.step == Step.FAILED


async def test_dropping_ha_moves_the_vm_without_a_role_on_the_destination(move: Move) -> None:
    stubs = move.stubs(destination_cluster="")
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(revert_delegation=True, ha=HaChoice.DROP))
        result = await asyncio.wait_for(handle.result(), TIMEOUT)

    # The role is removed on the source as usual, and never created again anywhere.
    assert stubs.trail() == [*_steps_until_move(move), "start_or_attach_move", "verify_move"]
    assert (result.ha, result.ha_cluster) == (HaOutcome.DROPPED, "")
    assert f"ha-dropped: {VM} is no longer highly available (it was in CL-WEST)" in result.warnings


async def test_a_silent_guest_is_a_warning_by_default(move: Move) -> None:
    stubs = move.stubs(clustered=False, guest_heartbeat="NoContact")
    async with move.worker(stubs):
        handle = await move.start()
        result = await asyncio.wait_for(handle.result(), TIMEOUT)

    assert stubs.trail()[-2:] == ["start_or_attach_move", "verify_move"]
    assert result.moved
    assert not result.guest_answers
    (warning,) = [w for w in result.warnings if w.startswith("guest-not-answering")]
    assert "NoContact" in warning


async def test_a_silent_guest_fails_the_run_by_policy_without_undoing_the_move(move: Move) -> None:
    stubs = move.stubs(guest_heartbeat="LostCommunication")
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(revert_delegation=True, guest_check=GuestCheck.FAIL))
        cause = await _failure(handle)
        outcomes = await _compensations(handle)
        progress = await handle.query(MigrateVmWorkflow.progress)
        held = [await move.slots(host) for host in move.hosts]

    # Verified where it runs, HA restored there; nothing compensated: a move is not undone.
    assert stubs.trail() == [
        *_steps_until_move(move),
        "start_or_attach_move",
        "verify_move",
        f"restore_cluster_role@{move.destination}",
    ]
    assert isinstance(cause, ApplicationError), repr(cause)
    assert cause.type == GUEST_NOT_ANSWERING
    assert "LostCommunication" in cause.message
    assert outcomes == []
    # Failed after the move: the bytes are across all the same, and the slots were given back before the end.
    assert (progress.step, progress.percent) == (Step.FAILED, 100)
    assert [status.holders for status in held] == [(), ()]


# -- a cancel in each step ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelCase:
    """Where the run is cancelled, and what must have run by then (calls and compensations) for a move `m`."""

    step: Step
    block: Callable[[Move], str]  # the stub that holds the run in this step ("" for the approval wait)
    ran: Callable[[Move], list[str]]  # the calls up to and including the one cancelled
    undone: Callable[[Move], list[str]]  # the compensation calls, in order
    outcomes: Callable[[Move], list[str]]  # the compensation outcomes' steps, in order


def _before(m: Move, last: str) -> list[str]:
    steps = _steps_until_move(m)
    return steps[: steps.index(last) + 1]


CANCEL_CASES = [
    CancelCase(Step.PREFLIGHT, lambda m: "preflight", lambda m: ["preflight"], lambda m: [], lambda m: []),
    CancelCase(Step.APPROVAL, lambda m: "", lambda m: ["preflight"], lambda m: [], lambda m: []),
    CancelCase(
        Step.CLUSTER,
        lambda m: "remove_cluster_role",
        lambda m: _before(m, "remove_cluster_role"),
        # Registered before the removal: a role removed as the cancel arrived is still put back.
        lambda m: [f"restore_cluster_role@{m.source}"],
        lambda m: ["restore cluster role on source"],
    ),
    CancelCase(
        Step.DELEGATION,
        lambda m: "purge_tickets",
        lambda m: _before(m, "purge_tickets"),
        lambda m: ["revert_delegation", f"restore_cluster_role@{m.source}"],
        lambda m: ["revert delegation", "restore cluster role on source"],
    ),
    CancelCase(
        Step.SETTINGS,
        lambda m: f"ensure_migration_settings@{m.destination}",
        lambda m: _steps_until_move(m),
        lambda m: _undo_all(m)[1:],
        lambda m: _undo_steps(m)[1:],
    ),
    CancelCase(
        Step.MOVE,
        lambda m: "start_or_attach_move",
        lambda m: [*_steps_until_move(m), "start_or_attach_move"],
        lambda m: _undo_all(m),
        lambda m: _undo_steps(m),
    ),
    CancelCase(
        Step.VERIFY,
        lambda m: "verify_move",
        lambda m: [*_steps_until_move(m), "start_or_attach_move", "verify_move"],
        # The VM moved: nothing before the move is undone (its old role, the hosts' settings), and its high
        # availability is made at its new home even though verify never finished.
        lambda m: [f"restore_cluster_role@{m.destination}"],
        lambda m: [f"make the cluster role on {m.destination}"],
    ),
]


async def test_a_cancel_during_the_delegation_write_still_reverts_what_it_wrote(move: Move) -> None:
    stubs = move.stubs(block="ensure_delegation")
    async with move.worker(stubs):
        handle = await move.start(MigrationPolicy(revert_delegation=True))
        await asyncio.wait_for(stubs.blocked.wait(), TIMEOUT)
        await handle.cancel()
        # The directory write does not watch for cancellation: the saga lets it finish and learns what it wrote.
        await asyncio.sleep(0.3)
        assert "ensure_delegation cancelled" not in stubs.log
        stubs.release.set()
        cause = await _failure(handle)
        outcomes = await _compensations(handle)

    assert isinstance(cause, CancelledError), repr(cause)
    [written] = stubs.ensured
    assert written.changed
    assert stubs.arguments("revert_delegation") == [written], "the revert removes exactly what the ensure wrote"
    assert stubs.trail()[-2:] == ["revert_delegation", f"restore_cluster_role@{move.source}"]
    assert [o.step for o in outcomes] == ["revert delegation", "restore cluster role on source"]
    assert all(o.ok for o in outcomes)


@pytest.mark.parametrize("case", CANCEL_CASES, ids=lambda case: str(case.step))
async def test_a_cancel_in_each_step_undoes_exactly_what_was_done(move: Move, case: CancelCase) -> None:
    block = case.block(move)
    stubs = move.stubs(block=block)
    policy = MigrationPolicy(revert_delegation=True, require_approval=case.step == Step.APPROVAL)
    async with move.worker(stubs):
        handle = await move.start(policy)
        if block:
            await asyncio.wait_for(stubs.blocked.wait(), TIMEOUT)
        else:

            async def waiting() -> bool:
                progress = await handle.query(MigrateVmWorkflow.progress)
                return progress.step == Step.APPROVAL and progress.waiting_for == "approval"

            await wait_for(waiting, timeout=TIMEOUT, what="the run to wait for its approval")
        progress = await handle.query(MigrateVmWorkflow.progress)
        assert progress.step == case.step
        await handle.cancel()
        if block:
            # The cancel reached the blocked stub through its heartbeat.
            await wait_for(lambda: block in stubs.cancelled, timeout=TIMEOUT, what=f"{block} to see the cancel")
        cause = await _failure(handle)
        outcomes = await _compensations(handle)
        after = await handle.query(MigrateVmWorkflow.progress)
        if case.step in (Step.MOVE, Step.VERIFY):
            held = [await move.slots(host) for host in move.hosts]
            assert [status.holders for status in held] == [(), ()], "the cancelled move kept a slot"

    assert isinstance(cause, CancelledError), repr(cause)
    assert stubs.trail() == [*case.ran(move), *case.undone(move)]
    if case.step == Step.MOVE:
        # The host's job ended (the move saw its cancel) before anything was undone around it.
        assert stubs.log.index("start_or_attach_move cancelled") < stubs.log.index(
            f"clean_destination@{move.destination}"
        )
    assert outcomes == [CompensationOutcome(step, ok=True) for step in case.outcomes(move)]
    assert (after.step, after.waiting_for) == (Step.CANCELLED, "")


# -- the history's own cost ---------------------------------------------------------------------------------------


def _patches(history: Any) -> list[str]:
    """The patch ids the run recorded, in order (the SDK's `core_patch` markers)."""
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                found.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found


def _steps_written_per_task(history: Any) -> list[list[str]]:
    """For each workflow task that wrote snlm's step attribute, the steps it wrote (the SDK's own upserts, of
    TemporalChangeVersion, apart)."""
    tasks: list[list[str]] = [[]]
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            tasks.append([])
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if SA_STEP in fields:
                tasks[-1].append(json.loads(fields[SA_STEP].data))
    return [steps for steps in tasks if steps]


async def test_a_run_records_one_patch_marker_and_writes_its_step_once_per_task(move: Move) -> None:
    async with move.worker(move.stubs()):
        handle = await move.start()
        assert (await asyncio.wait_for(handle.result(), TIMEOUT)).moved
    history = await handle.fetch_history()
    # One marker (and one TemporalChangeVersion upsert by the SDK) stands for every change the run takes.
    assert _patches(history) == ["moves-one-marker"]
    written = _steps_written_per_task(history)
    assert all(len(steps) == 1 for steps in written), written
    assert written[-1] == [Step.DONE]


async def test_a_turn_that_came_before_the_run_was_ready_writes_move_not_ready(move: Move) -> None:
    stubs = move.stubs()
    async with move.worker(stubs):
        handle = await move.start(prepared_ahead=True)
        # The campaign's `go` arrives while preflight runs: the run never waits in `ready`.
        await handle.signal(MigrateVmWorkflow.go)
        assert (await asyncio.wait_for(handle.result(), TIMEOUT)).moved
    written = _steps_written_per_task(await handle.fetch_history())
    assert all(len(steps) == 1 for steps in written), written
    assert Step.READY not in [step for steps in written for step in steps]
    assert Step.MOVE in [step for steps in written for step in steps]
