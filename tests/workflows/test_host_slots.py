"""HostSlots against real Temporal servers: capacity, FIFO, idempotency, leases and their renewal, capacity changes,
continue-as-new, and acquire_pair's fixed order, release on every path and renewal while a move runs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, timedelta

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    import pytest

    from workflows.contracts import (
        SLOT_CAPACITY_INVALID,
        SLOT_NOT_HELD,
        AcquireSlotRequest,
        HostSlotsInput,
        HostSlotsStatus,
        MigrationPolicy,
        ReleaseSlotRequest,
        ReleaseSlotResult,
        RenewSlotRequest,
        SetCapacityRequest,
        SlotGrant,
        host_slots_workflow_id,
        slot_lease_problem,
    )
    from workflows.host_slots import HostSlotsWorkflow, acquire_pair


@dataclass(frozen=True)
class PairMoveInput:
    source: str
    destination: str
    hold_seconds: float


@workflow.defn
class PairMoveWorkflow:
    """Stands in for the MigrateVm move step: both slots, a while, release on every path."""

    @workflow.run
    async def run(self, input: PairMoveInput) -> list[str]:
        holder = workflow.info().workflow_id
        pair = await acquire_pair(input.source, input.destination, holder, lease_seconds=600, poll_seconds=5)
        try:
            await workflow.sleep(input.hold_seconds)
        finally:
            await pair.release()
        return list(pair.hosts)


@dataclass(frozen=True)
class RenewingMoveInput:
    source: str
    destination: str
    hold_seconds: float
    lease_seconds: float


@dataclass(frozen=True)
class Held:
    """When a RenewingMoveWorkflow had both slots, in workflow time (seconds since the epoch)."""

    acquired_at: float
    released_at: float


@workflow.defn
class RenewingMoveWorkflow:
    """The MigrateVm move step with short leases: both slots, renewed while it holds them for many leases."""

    @workflow.run
    async def run(self, input: RenewingMoveInput) -> Held:
        pair = await acquire_pair(
            input.source, input.destination, workflow.info().workflow_id, lease_seconds=input.lease_seconds
        )
        acquired_at = workflow.now().timestamp()
        try:
            async with pair.renewed_every(input.lease_seconds / 3):
                await workflow.sleep(input.hold_seconds)
        finally:
            await pair.release()
        return Held(acquired_at, workflow.now().timestamp())


def _host() -> str:
    return f"HV-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def _worker(client: Client, task_queue: str, *, cached: int = 100) -> AsyncIterator[Worker]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[HostSlotsWorkflow, PairMoveWorkflow, RenewingMoveWorkflow],
        max_cached_workflows=cached,
    ) as worker:
        yield worker


@asynccontextmanager
async def _tidy_worker(client: Client, task_queue: str, *, cached: int = 100) -> AsyncIterator[list[WorkflowHandle]]:
    """A worker; the workflows put in the list it yields are terminated at the end.

    The servers live for the session. A HostSlots entity left running keeps its timers (lease expiry, idle
    wake-up), which later fire for a task queue no worker serves any more; on the time-skipping server a later
    test's update after `env.sleep` then ran into its RPC deadline.
    """
    started: list[WorkflowHandle] = []
    try:
        async with _worker(client, task_queue, cached=cached):
            yield started
    finally:
        for handle in started:
            with contextlib.suppress(RPCError):
                await handle.terminate(reason="end of the test")


async def _start(
    client: Client, task_queue: str, host: str, capacity: int, continue_as_new_after_events: int = 0
) -> WorkflowHandle:
    await client.start_workflow(
        HostSlotsWorkflow.run,
        HostSlotsInput(host=host, capacity=capacity, continue_as_new_after_events=continue_as_new_after_events),
        id=host_slots_workflow_id(host),
        task_queue=task_queue,
    )
    # A handle without a run id follows the entity across continue-as-new.
    return client.get_workflow_handle_for(HostSlotsWorkflow.run, host_slots_workflow_id(host))


async def _acquire(handle: WorkflowHandle, holder: str, *, lease: float = 600, wait: float = 10) -> SlotGrant:
    """What a client does: ask until granted (each ask is a bounded long-poll that keeps the queue place)."""
    while True:
        try:
            grant: SlotGrant = await handle.execute_update(
                HostSlotsWorkflow.acquire, AcquireSlotRequest(holder, lease_seconds=lease, wait_seconds=wait)
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            # An update that reaches a run in the instant it continues as new is not carried to the next run;
            # the server lets the call run into its RPC deadline. The request kept its place in the queue
            # (holder ids are idempotent), so asking again is safe.
            continue
        if grant.granted:
            return grant


async def _release(handle: WorkflowHandle, holder: str) -> ReleaseSlotResult:
    result: ReleaseSlotResult = await handle.execute_update(HostSlotsWorkflow.release, ReleaseSlotRequest(holder))
    return result


async def _status(handle: WorkflowHandle) -> HostSlotsStatus:
    status: HostSlotsStatus = await handle.query(HostSlotsWorkflow.status)
    return status


async def _until(handle: WorkflowHandle, check: Callable[[HostSlotsStatus], bool]) -> HostSlotsStatus:
    for _ in range(400):
        status = await _status(handle)
        if check(status):
            return status
        await asyncio.sleep(0.025)
    raise AssertionError(f"condition never met; last status {status}")


def _ids(items: Sequence[object]) -> list[str]:
    return [item.holder_id for item in items]  # type: ignore[attr-defined]


async def test_capacity_is_never_exceeded(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        handle = await _start(client, task_queue, _host(), capacity=2)
        in_use = 0
        peak = 0

        async def move(n: int) -> None:
            nonlocal in_use, peak
            await _acquire(handle, f"vm-{n}")
            in_use += 1
            peak = max(peak, in_use)
            await asyncio.sleep(0.05)
            in_use -= 1
            await _release(handle, f"vm-{n}")

        await asyncio.gather(*(move(n) for n in range(8)))
        status = await _status(handle)
        assert peak <= 2
        assert status.peak_in_use == 2
        assert status.holders == ()
        assert status.waiters == ()


async def test_waiters_are_served_first_come_first_served(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        handle = await _start(client, task_queue, _host(), capacity=1)
        await _acquire(handle, "first")
        order: list[str] = []

        async def wait_then_release(holder: str) -> None:
            await _acquire(handle, holder)
            order.append(holder)
            await _release(handle, holder)

        tasks = []
        for n, holder in enumerate(["w1", "w2", "w3"], 1):
            tasks.append(asyncio.create_task(wait_then_release(holder)))
            await _until(handle, lambda s, n=n: len(s.waiters) == n)  # type: ignore[misc]
        status = await _status(handle)
        assert _ids(status.waiters) == ["w1", "w2", "w3"]
        assert _ids(status.holders) == ["first"]

        # Releasing the slot hands it to the next waiter.
        assert await _release(handle, "first") == ReleaseSlotResult(released=True)
        await asyncio.gather(*tasks)
        assert order == ["w1", "w2", "w3"]


async def test_acquire_and_release_are_idempotent(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        handle = await _start(client, task_queue, _host(), capacity=2)
        first = await _acquire(handle, "vm-1")
        again = await _acquire(handle, "vm-1")  # a retried activity or update
        assert again == first
        assert _ids((await _status(handle)).holders) == ["vm-1"]

        assert await _release(handle, "vm-1") == ReleaseSlotResult(released=True)
        assert await _release(handle, "vm-1") == ReleaseSlotResult()
        assert await _release(handle, "never-asked") == ReleaseSlotResult()

        # A queued request leaves the queue on release.
        await _acquire(handle, "a")
        await _acquire(handle, "b")
        queued = await handle.execute_update(HostSlotsWorkflow.acquire, AcquireSlotRequest("c", wait_seconds=0.1))
        assert not queued.granted
        assert queued.position == 1
        assert await _release(handle, "c") == ReleaseSlotResult(dequeued=True)
        assert (await _status(handle)).waiters == ()

        # Renewing a slot one does not hold fails by name.
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(HostSlotsWorkflow.renew, RenewSlotRequest("c"))
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == SLOT_NOT_HELD


async def test_lowering_capacity_holds_new_grants_back(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        handle = await _start(client, task_queue, _host(), capacity=3)
        for holder in ("a", "b", "c"):
            await _acquire(handle, holder)

        status = await handle.execute_update(HostSlotsWorkflow.set_capacity, SetCapacityRequest(1))
        assert status.capacity == 1
        assert _ids(status.holders) == ["a", "b", "c"]  # lowering revokes nothing

        waiter = asyncio.create_task(_acquire(handle, "d"))
        await _until(handle, lambda s: _ids(s.waiters) == ["d"])
        await _release(handle, "a")
        await _release(handle, "b")
        status = await _status(handle)
        assert _ids(status.holders) == ["c"]
        assert _ids(status.waiters) == ["d"]
        await _release(handle, "c")
        assert (await waiter).granted

        # Never above the host's own limit (MaximumVirtualMachineMigrations), nor below 1.
        for capacity in (4, 0):
            with pytest.raises(WorkflowUpdateFailedError) as rejected:
                await handle.execute_update(HostSlotsWorkflow.set_capacity, SetCapacityRequest(capacity))
            assert isinstance(rejected.value.cause, ApplicationError)
            assert rejected.value.cause.type == SLOT_CAPACITY_INVALID
        # A new reading of the host may raise the limit itself.
        status = await handle.execute_update(HostSlotsWorkflow.set_capacity, SetCapacityRequest(4, host_limit=4))
        assert (status.capacity, status.host_limit) == (4, 4)


async def test_continue_as_new_carries_holders_and_waiters(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        handle = await _start(client, task_queue, _host(), capacity=1, continue_as_new_after_events=40)
        first_run = (await handle.describe()).run_id
        held = await _acquire(handle, "holder")
        # The waiters ask with a short long-poll and come back later, so no acquire is in flight when the
        # entity continues as new (an update in flight at that instant is the open case of this workflow).
        for name in ("w1", "w2"):
            grant = await handle.execute_update(
                HostSlotsWorkflow.acquire, AcquireSlotRequest(name, lease_seconds=600, wait_seconds=0.05)
            )
            assert not grant.granted
        await _until(handle, lambda s: len(s.waiters) == 2)

        # Renewals grow the history past the threshold: the entity continues as new and the state comes along.
        for _ in range(25):
            renewed = await handle.execute_update(HostSlotsWorkflow.renew, RenewSlotRequest("holder"))
            assert renewed.granted
        assert (await handle.describe()).run_id != first_run
        status = await _status(handle)
        assert _ids(status.holders) == ["holder"]
        assert status.holders[0].expires_at >= held.expires_at
        assert _ids(status.waiters) == ["w1", "w2"]

        await _release(handle, "holder")
        w1 = await asyncio.wait_for(_acquire(handle, "w1", wait=5), timeout=30)
        assert w1.granted
        status = await _status(handle)
        assert _ids(status.holders) == ["w1"]
        assert _ids(status.waiters) == ["w2"]
        await _release(handle, "w1")
        assert (await asyncio.wait_for(_acquire(handle, "w2", wait=5), timeout=30)).granted


async def test_a_crashed_holder_loses_its_slot_when_the_lease_expires(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with _tidy_worker(client, task_queue) as started:
        handle = await _start(client, task_queue, _host(), capacity=1)
        started.append(handle)
        await handle.execute_update(HostSlotsWorkflow.acquire, AcquireSlotRequest("crashed", lease_seconds=120))
        queued = await handle.execute_update(
            HostSlotsWorkflow.acquire, AcquireSlotRequest("next", lease_seconds=120, wait_seconds=1)
        )
        assert not queued.granted
        assert queued.position == 1

        # "crashed" never renews nor releases; two minutes of workflow time later its slot is reclaimed.
        await time_skipping_env.sleep(timedelta(seconds=60))
        assert _ids((await _status(handle)).holders) == ["crashed"]
        await time_skipping_env.sleep(timedelta(seconds=90))
        status = await _status(handle)
        assert _ids(status.holders) == ["next"]
        assert status.waiters == ()
        again = await handle.execute_update(HostSlotsWorkflow.acquire, AcquireSlotRequest("next"))
        assert again.granted


async def test_a_renewed_lease_is_kept_and_a_lease_no_longer_renewed_ends_on_time(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = time_skipping_env
    async with _tidy_worker(env.client, task_queue) as started:
        handle = await _start(env.client, task_queue, _host(), capacity=1)
        started.append(handle)
        grant = await handle.execute_update(HostSlotsWorkflow.acquire, AcquireSlotRequest("mover", lease_seconds=120))
        queued = await handle.execute_update(
            HostSlotsWorkflow.acquire, AcquireSlotRequest("next", lease_seconds=120, wait_seconds=1)
        )
        assert not queued.granted

        # Renewed every 80 s for 320 s of workflow time, well past the first lease: each renewal extends the lease
        # by a whole lease from the moment it arrives, and the waiter keeps waiting.
        for _ in range(4):
            await env.sleep(timedelta(seconds=80))
            renewed: SlotGrant = await handle.execute_update(HostSlotsWorkflow.renew, RenewSlotRequest("mover"))
            now = (await env.get_current_time()).timestamp()
            assert renewed.granted
            assert renewed.expires_at > grant.expires_at
            assert 119 <= renewed.expires_at - now <= 120
            grant = renewed
            status = await _status(handle)
            assert _ids(status.holders) == ["mover"]
            assert _ids(status.waiters) == ["next"]

        # It stops renewing: the slot is held to the end of the last lease, then goes to the waiter at once.
        await env.sleep(timedelta(seconds=110))
        assert _ids((await _status(handle)).holders) == ["mover"]
        await env.sleep(timedelta(seconds=20))
        status = await _status(handle)
        assert _ids(status.holders) == ["next"]
        assert status.waiters == ()
        assert status.peak_in_use == 1
        # Granted when the old lease ended (its new lease runs from then), not at the next idle wake-up.
        assert grant.expires_at + 120 <= status.holders[0].expires_at <= grant.expires_at + 125
        with pytest.raises(WorkflowUpdateFailedError) as late:
            await handle.execute_update(HostSlotsWorkflow.renew, RenewSlotRequest("mover"))
        assert isinstance(late.value.cause, ApplicationError)
        assert late.value.cause.type == SLOT_NOT_HELD


def test_a_move_lease_is_minutes_long_and_fits_the_move() -> None:
    policy = MigrationPolicy()
    assert 60 <= policy.slot_lease_seconds <= 600
    assert slot_lease_problem(policy.slot_lease_seconds, policy.move_timeout_seconds) == ""
    assert slot_lease_problem(20, 600) == ""
    for lease in (0, 5, -1, float("nan"), float("inf"), 2 * 3600):
        assert "outside" in slot_lease_problem(lease, 600)
    # Renewed every third of a lease for a 12 h move, a 60 s lease would grow the move's history past its bound.
    problem = slot_lease_problem(60, 12 * 3600)
    assert "at least 259.2 s" in problem


# The two tests below run on the dev server, in real time, with leases of seconds: on the time-skipping server a
# signal that arrives while the receiver's workflow task runs makes that task's completion fail ("Expired workflow
# task"), and the retry waits for a workflow task timeout that time skipping jumps over, so renewals land late.
LEASE = 6.0  # renewed every 2 s: a renewal may be 4 s late on a busy machine before the slot is lost


async def test_a_move_renewing_its_slots_keeps_them_for_many_leases(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    async with _tidy_worker(client, task_queue) as started:
        a, b = sorted([_host(), _host()])
        slots = [await _start(client, task_queue, host, capacity=1) for host in (a, b)]
        started.extend(slots)
        first = await client.start_workflow(
            RenewingMoveWorkflow.run,
            RenewingMoveInput(a, b, hold_seconds=3 * LEASE, lease_seconds=LEASE),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(first)
        await _until(slots[1], lambda s: _ids(s.holders) == [first.id])
        second = await client.start_workflow(
            RenewingMoveWorkflow.run,
            RenewingMoveInput(b, a, hold_seconds=0.1, lease_seconds=LEASE),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(second)
        await _until(slots[0], lambda s: _ids(s.waiters) == [second.id])

        held_first, held_second = await asyncio.wait_for(asyncio.gather(first.result(), second.result()), 60)
        # Three leases long (in workflow time), and the waiter got the slots only once they were released.
        assert held_first.released_at - held_first.acquired_at >= 3 * LEASE
        assert held_second.acquired_at >= held_first.released_at
        for handle in slots:
            status = await _status(handle)
            assert status.peak_in_use == 1
            assert status.holders == ()
            assert status.waiters == ()


async def _terminated_at(handle: WorkflowHandle) -> float:
    """When the server recorded the run's termination (seconds since the epoch)."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            return event.event_time.ToDatetime(tzinfo=UTC).timestamp()
    raise AssertionError(f"{handle.id} was not terminated")


async def test_a_terminated_move_frees_its_slots_within_one_lease(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    # No workflow cache: every workflow task replays the history so far (so the renewals are replayed too), and the
    # terminated run, of which the worker is never told, is not left in a cache to be torn down at shutdown.
    async with _tidy_worker(client, task_queue, cached=0) as started:
        a, b = sorted([_host(), _host()])
        slots = [await _start(client, task_queue, host, capacity=1) for host in (a, b)]
        started.extend(slots)
        first = await client.start_workflow(
            RenewingMoveWorkflow.run,
            RenewingMoveInput(a, b, hold_seconds=12 * 3600, lease_seconds=LEASE),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(first)
        await _until(slots[1], lambda s: _ids(s.holders) == [first.id])
        second = await client.start_workflow(
            RenewingMoveWorkflow.run,
            RenewingMoveInput(a, b, hold_seconds=0.1, lease_seconds=LEASE),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(second)
        await _until(slots[0], lambda s: _ids(s.waiters) == [second.id])

        # Terminated: no release, no compensation; only the lease running out frees the slots.
        await first.terminate(reason="test: a move terminated mid-move")
        held = await asyncio.wait_for(second.result(), 60)
        terminated_at = await _terminated_at(first)
        # In the server's time: renewed every third of a lease, the last lease ran out within one lease.
        assert terminated_at < held.acquired_at <= terminated_at + LEASE + 1
        for handle in slots:
            status = await _status(handle)
            assert status.peak_in_use == 1
            assert status.holders == ()
            assert status.waiters == ()


async def test_acquire_pair_in_opposite_directions_does_not_deadlock(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        a, b = sorted([_host(), _host()])
        slots = [await _start(client, task_queue, host, capacity=1) for host in (a, b)]
        moves = [
            await client.start_workflow(
                PairMoveWorkflow.run, PairMoveInput(src, dst, 0.5), id=f"move-{n}-{uuid.uuid4()}", task_queue=task_queue
            )
            for n, (src, dst) in enumerate([(a, b), (b, a), (a, b), (b, a)])
        ]
        results = await asyncio.wait_for(asyncio.gather(*(m.result() for m in moves)), timeout=40)
        assert results == [[a, b]] * 4  # always taken in the same, sorted order
        for handle in slots:
            status = await _status(handle)
            assert status.peak_in_use == 1
            assert status.holders == ()
            assert status.waiters == ()


async def test_acquire_pair_releases_the_first_slot_when_cancelled(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        a, b = sorted([_host(), _host()])
        slot_a = await _start(client, task_queue, a, capacity=1)
        slot_b = await _start(client, task_queue, b, capacity=1)
        await _acquire(slot_b, "someone-else")

        move = await client.start_workflow(
            PairMoveWorkflow.run, PairMoveInput(b, a, 60), id=f"move-{uuid.uuid4()}", task_queue=task_queue
        )
        await _until(slot_a, lambda s: _ids(s.holders) == [move.id])
        await _until(slot_b, lambda s: _ids(s.waiters) == [move.id])

        await move.cancel()
        status = (await move.describe()).status
        for _ in range(200):
            if status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.025)
            status = (await move.describe()).status
        assert status == WorkflowExecutionStatus.CANCELED
        await _until(slot_a, lambda s: s.holders == ())
        await _until(slot_b, lambda s: s.waiters == () and _ids(s.holders) == ["someone-else"])


async def test_acquire_pair_starts_a_missing_entity(temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    client = temporal_env.client
    async with _worker(client, task_queue):
        a, b = _host(), _host()
        move = await client.start_workflow(
            PairMoveWorkflow.run, PairMoveInput(a, b, 0.1), id=f"move-{uuid.uuid4()}", task_queue=task_queue
        )
        assert await asyncio.wait_for(move.result(), timeout=20) == sorted([a, b], key=str.casefold)
        for host in (a, b):
            handle = client.get_workflow_handle_for(HostSlotsWorkflow.run, host_slots_workflow_id(host))
            status = await _status(handle)
            assert status.capacity == 2  # Hyper-V's default MaximumVirtualMachineMigrations
            assert status.holders == ()
