"""MigrationSlots against a real Temporal dev server: pairs granted together, host limits, leases checked with the
holder's workflow instead of renewed, the entity started only when a signal finds none, the book carried across
continue-as-new, and a cancelled wait leaving the queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC

from temporalio import workflow
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import (
        MIGRATION_SLOTS_RUN_EVENTS,
        MIGRATION_SLOTS_TASK_TIMEOUT,
        HostCapacity,
        HostLimit,
        MigrationSlotsInput,
        MigrationSlotsStatus,
        PairGrant,
        PairHolder,
        PairRequest,
        ReleaseSlotRequest,
        SetHostCapacityRequest,
        migration_slots_workflow_id,
    )
    from workflows.migration_slots import MigrationSlotsWorkflow, _PairInbox, acquire_slots


@dataclass(frozen=True)
class MoveInput:
    source: str
    destination: str
    hold_seconds: float
    lease_seconds: float = 300.0
    limit: int = 0
    book: str = ""


@dataclass(frozen=True)
class Held:
    hosts: list[str]
    acquired_at: float
    released_at: float


@workflow.defn
class SlotMoveWorkflow:
    """Stands in for the MigrateVm move step: both slots together, a while, release on every path."""

    @workflow.run
    async def run(self, input: MoveInput) -> Held:
        limits = {input.source: input.limit, input.destination: input.limit} if input.limit else None
        held = await acquire_slots(
            input.source,
            input.destination,
            workflow.info().workflow_id,
            lease_seconds=input.lease_seconds,
            host_limits=limits,
            book=input.book,
        )
        acquired_at = workflow.now().timestamp()
        try:
            await workflow.sleep(input.hold_seconds)
        finally:
            await held.release()
        return Held(list(held.hosts), acquired_at, workflow.now().timestamp())


@workflow.defn
class GrantWaitWorkflow:
    """A holder that only waits for its grant: its request was made before, it stands in the book as started."""

    @workflow.run
    async def run(self, holder_id: str) -> list[str]:
        inbox = _PairInbox.installed()
        await workflow.wait_condition(lambda: holder_id in inbox.grants)
        return list(inbox.grants[holder_id].hosts)


def _host() -> str:
    return f"HV-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def _worker(client: Client, task_queue: str, *, cached: int = 100) -> AsyncIterator[list[WorkflowHandle]]:
    """A worker; the entity of its task queue is terminated at the end (its timers must not outlive the test)."""
    started: list[WorkflowHandle] = []
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[MigrationSlotsWorkflow, SlotMoveWorkflow, GrantWaitWorkflow],
            max_cached_workflows=cached,
        ):
            yield started
    finally:
        for handle in [*started, client.get_workflow_handle(migration_slots_workflow_id(task_queue))]:
            with contextlib.suppress(RPCError):
                await handle.terminate(reason="end of the test")


def _entity(client: Client, task_queue: str) -> WorkflowHandle:
    return client.get_workflow_handle_for(MigrationSlotsWorkflow.run, migration_slots_workflow_id(task_queue))


async def _start_entity(client: Client, task_queue: str, **input: object) -> WorkflowHandle:
    await client.start_workflow(
        MigrationSlotsWorkflow.run,
        MigrationSlotsInput(**input),  # type: ignore[arg-type]
        id=migration_slots_workflow_id(task_queue),
        task_queue=task_queue,
        task_timeout=MIGRATION_SLOTS_TASK_TIMEOUT,  # as a move starts it
    )
    return _entity(client, task_queue)


async def _status(handle: WorkflowHandle) -> MigrationSlotsStatus:
    status: MigrationSlotsStatus = await handle.query(MigrationSlotsWorkflow.status)
    return status


async def _until(handle: WorkflowHandle, check: Callable[[MigrationSlotsStatus], bool]) -> MigrationSlotsStatus:
    status = None
    for _ in range(600):
        with contextlib.suppress(RPCError):
            status = await _status(handle)
            if check(status):
                return status
        await asyncio.sleep(0.025)
    raise AssertionError(f"condition never met; last status {status}")


def _use(status: MigrationSlotsStatus, host: str) -> tuple[int, int]:
    use = next(h for h in status.hosts if h.host.casefold() == host.casefold())
    return use.in_use, use.peak_in_use


async def _acquire(handle: WorkflowHandle, holder: str, *hosts: str, lease: float = 600) -> PairGrant:
    while True:
        try:
            grant: PairGrant = await handle.execute_update(
                MigrationSlotsWorkflow.acquire, PairRequest(holder, hosts, lease_seconds=lease, wait_seconds=10)
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            continue  # reached a run in the instant it continued as new: the request kept its place
        if grant.granted:
            return grant


async def _events(handle: WorkflowHandle, kind: int) -> int:
    return len([event async for event in handle.fetch_history_events() if event.event_type == kind])


async def test_a_ring_of_moves_never_exceeds_a_host_and_never_holds_half_a_pair(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    hosts = sorted(_host() for _ in range(4))
    async with _worker(client, task_queue) as started:
        entity = await _start_entity(client, task_queue, hosts=tuple(HostCapacity(h, 1) for h in hosts))
        # Each VM from host k to host k+1, three rounds: every host sends and receives, with a limit of 1.
        for n in range(12):
            source, destination = hosts[n % 4], hosts[(n + 1) % 4]
            started.append(
                await client.start_workflow(
                    SlotMoveWorkflow.run,
                    MoveInput(source, destination, 0.3, book=task_queue),
                    id=f"move-{n}-{uuid.uuid4()}",
                    task_queue=task_queue,
                )
            )
        done = await asyncio.wait_for(asyncio.gather(*(h.result() for h in started)), 90)
        # Intervals over each host never overlap: a limit of 1 held by one move at a time.
        for host in hosts:
            spans = sorted((d.acquired_at, d.released_at) for d in done if host in d.hosts)
            assert len(spans) == 6
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        status = await _until(entity, lambda s: not s.holders)
        assert all(_use(status, h) == (0, 1) for h in hosts)
        assert status.waiters == ()
        # Twelve requests and twelve releases woke the book without a timer each: one stands for the soonest lease.
        assert await _events(entity, EventType.EVENT_TYPE_TIMER_STARTED) <= 2


async def test_the_first_move_starts_the_entity_and_later_ones_only_signal_it(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    a, b = _host(), _host()
    async with _worker(client, task_queue):
        first = await client.start_workflow(
            SlotMoveWorkflow.run,
            MoveInput(a, b, 0.1, limit=3, book=task_queue),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        await first.result()
        second = await client.start_workflow(
            SlotMoveWorkflow.run,
            MoveInput(b, a, 0.1, book=task_queue),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        await second.result()
        starts = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
        assert await _events(first, starts) == 1
        assert await _events(second, starts) == 0
        status = await _status(_entity(client, task_queue))
        # The limit the first move read is the hosts' capacity.
        assert {(h.host_limit, h.capacity) for h in status.hosts} == {(3, 3)}


async def test_a_terminated_holder_frees_both_hosts_within_one_lease_and_a_running_one_keeps_them(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    lease = 3.0
    a, b = sorted([_host(), _host()])
    async with _worker(client, task_queue, cached=0) as started:
        entity = await _start_entity(client, task_queue, hosts=(HostCapacity(a, 1), HostCapacity(b, 1)))
        keeper = await client.start_workflow(
            SlotMoveWorkflow.run,
            MoveInput(a, b, 4 * lease, lease, book=task_queue),
            id=f"keep-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(keeper)
        # Kept for four leases without a single renewal from the holder.
        kept = await asyncio.wait_for(keeper.result(), 60)
        assert kept.released_at - kept.acquired_at >= 4 * lease
        # It sent its request and its release, nothing else; the entity asked it once per lease (signals in).
        assert await _events(keeper, EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED) == 2
        assert await _events(keeper, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) >= 4

        first = await client.start_workflow(
            SlotMoveWorkflow.run,
            MoveInput(a, b, 3600, lease, book=task_queue),
            id=f"first-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(first)
        await _until(entity, lambda s: [h.holder_id for h in s.holders] == [first.id])
        second = await client.start_workflow(
            SlotMoveWorkflow.run,
            MoveInput(b, a, 0.1, lease, book=task_queue),
            id=f"second-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        started.append(second)
        await _until(entity, lambda s: [w.holder_id for w in s.waiters] == [second.id])
        await first.terminate(reason="test: a move terminated mid-move")
        terminated_at = None
        async for event in first.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
                terminated_at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        assert terminated_at is not None
        held = await asyncio.wait_for(second.result(), 60)
        assert terminated_at < held.acquired_at <= terminated_at + lease + 1
        status = await _until(entity, lambda s: not s.holders)
        assert _use(status, a) == (0, 1)
        assert _use(status, b) == (0, 1)


async def test_a_cancelled_wait_leaves_the_queue_holding_nothing(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    a, b = _host(), _host()
    async with _worker(client, task_queue) as started:
        entity = await _start_entity(client, task_queue, hosts=(HostCapacity(a, 1), HostCapacity(b, 1)))
        await _acquire(entity, "someone-else", a)
        move = await client.start_workflow(
            SlotMoveWorkflow.run, MoveInput(b, a, 60, book=task_queue), id=f"move-{uuid.uuid4()}", task_queue=task_queue
        )
        started.append(move)
        status = await _until(entity, lambda s: [w.holder_id for w in s.waiters] == [move.id])
        assert _use(status, b) == (0, 0)  # waiting for a, it holds nothing on b
        await move.cancel()
        for _ in range(400):
            if (await move.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.025)
        assert (await move.describe()).status == WorkflowExecutionStatus.CANCELED
        status = await _until(entity, lambda s: s.waiters == ())
        assert [h.holder_id for h in status.holders] == ["someone-else"]


async def test_clients_acquire_release_and_set_capacity_across_continue_as_new(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    a, b = sorted([_host(), _host()])
    async with _worker(client, task_queue):
        entity = await _start_entity(
            client, task_queue, hosts=(HostCapacity(a, 2), HostCapacity(b, 2)), continue_as_new_after_events=40
        )
        for n in range(6):
            grant = await _acquire(entity, f"c{n}", a, b)
            assert grant.hosts == (a, b)
            await entity.execute_update(MigrationSlotsWorkflow.release, ReleaseSlotRequest(f"c{n}"))
        await _acquire(entity, "held", a, b)
        await entity.execute_update(MigrationSlotsWorkflow.set_capacity, SetHostCapacityRequest(a, 1))
        # A limit the next request reads is taken; the lowered capacity stays below it.
        await entity.signal(
            MigrationSlotsWorkflow.request_pair,
            PairRequest("waiting", (a,), host_limits=(HostLimit(a, 4),), reply_to=""),
        )
        status = await _until(entity, lambda s: any(w.holder_id == "waiting" for w in s.waiters))
        use = next(h for h in status.hosts if h.host == a)
        assert (use.host_limit, use.capacity, use.in_use, use.waiting) == (4, 1, 1, 1)
        assert [h.holder_id for h in status.holders] == ["held"]
        # It continued as new (14 updates and a signal are well past 40 events), and the book came along.
        query = f"WorkflowId = '{migration_slots_workflow_id(task_queue)}'"
        runs: list[object] = []
        for _ in range(200):  # visibility is eventually consistent
            runs = [w async for w in client.list_workflows(query)]
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(runs) >= 2


async def _runs(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of a workflow id, first to last, followed through each run's link to the one it continued."""
    histories: list[WorkflowHistory] = []
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.insert(0, history)
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
    return histories


def _check_hand_overs(runs: list[WorkflowHistory], length: int) -> None:
    """Each run but the last ended near `length` in one task whose one command continued it as new, refused at most
    once for a signal that came in during that task and never timed out."""
    for run, history in enumerate(runs[:-1]):
        events = list(history.events)
        kinds = [event.event_type for event in events]
        assert len(events) <= length + 60
        # A task that ran out of time replays the run again (a sticky task not picked up in 5 s only moves queue).
        timeouts = [
            event.workflow_task_timed_out_event_attributes.timeout_type
            for event in events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        ]
        assert TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE not in timeouts, f"run {run}: {timeouts}"
        assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) <= 1
        assert kinds[-2:] == [
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        ]
        handed = events[-1].workflow_execution_continued_as_new_event_attributes
        assert handed.workflow_task_timeout.ToTimedelta() == MIGRATION_SLOTS_TASK_TIMEOUT


async def test_the_book_hands_over_in_one_task_under_a_constant_stream_of_moves(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    """A campaign never lets the book go quiet: every move signals it at its start and its end. Each run still ends
    near its length in one task that waits on nothing (grants still to send are carried to the next run); every move
    gets its grant, none waits for a lost one, and no host ever holds more than its capacity."""
    client = temporal_env.client
    hosts = sorted(_host() for _ in range(6))
    pairs = [(hosts[n % 6], hosts[(n + 1 + n // 6) % 6]) for n in range(72)]
    pairs = [(a, b) for a, b in pairs if a != b][:60]
    # Every move stays cached: an evicted book would replay, which is not what this measures.
    async with _worker(client, task_queue, cached=len(pairs) + 10) as started:
        entity = await _start_entity(
            client, task_queue, hosts=tuple(HostCapacity(h, 2) for h in hosts), continue_as_new_after_events=120
        )
        started.extend(
            await asyncio.gather(
                *(
                    client.start_workflow(
                        SlotMoveWorkflow.run,
                        MoveInput(a, b, 0.05 + (n % 5) * 0.05, book=task_queue),
                        id=f"move-{n}-{uuid.uuid4()}",
                        task_queue=task_queue,
                    )
                    for n, (a, b) in enumerate(pairs)
                )
            )
        )
        # A grant lost in a hand-over would leave its move waiting for its 600 s re-ask: far past this bound.
        done = await asyncio.wait_for(asyncio.gather(*(h.result() for h in started)), 120)
        status = await _until(entity, lambda s: not s.holders)
        runs = await _runs(client, migration_slots_workflow_id(task_queue))
    for host in hosts:
        spans = [(d.acquired_at, d.released_at) for d in done if host in d.hosts]
        edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        assert max(itertools.accumulate(step for _, step in edges)) <= 2
    assert status.waiters == ()
    assert all(use.peak_in_use <= use.capacity == 2 for use in status.hosts)
    assert len(runs) >= 3
    _check_hand_overs(runs, 120)
    # Every run replays as it ran, the hand-overs and the grants they carried included.
    replayer = Replayer(workflows=[MigrationSlotsWorkflow])
    for history in runs:
        await replayer.replay_workflow(history)


async def test_a_book_started_by_a_move_has_its_own_length_and_task_timeout(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The default book (as a move starts it) continues as new by MIGRATION_SLOTS_RUN_EVENTS, not at the ~4,100 events
    the SDK suggests: a refused hand-over replays the run, and a long one outran the task timeout in a campaign."""
    client = temporal_env.client
    a, b = _host(), _host()
    async with _worker(client, task_queue):
        first = await client.start_workflow(
            SlotMoveWorkflow.run,
            MoveInput(a, b, 0.01, book=task_queue),
            id=f"move-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        await first.result()
        entity = _entity(client, task_queue)
        # Client holders (no reply) asking and leaving one by one: each signal is a workflow task of the book's.
        for n in range(MIGRATION_SLOTS_RUN_EVENTS // 3):
            await entity.signal(MigrationSlotsWorkflow.request_pair, PairRequest(f"c{n}", (a, b), reply_to=""))
            await entity.signal(MigrationSlotsWorkflow.release_pair, ReleaseSlotRequest(f"c{n}"))
        status = await _until(entity, lambda s: not s.holders)
        runs = await _runs(client, migration_slots_workflow_id(task_queue))
    assert status.waiters == ()
    assert len(runs) >= 2
    started = runs[0].events[0].workflow_execution_started_event_attributes
    assert started.workflow_task_timeout.ToTimedelta() == MIGRATION_SLOTS_TASK_TIMEOUT
    assert started.parent_workflow_execution.workflow_id == first.id
    _check_hand_overs(runs, MIGRATION_SLOTS_RUN_EVENTS)


async def test_grants_handed_over_are_sent_before_the_next_hand_over_and_a_quiet_run_stays(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    """A run whose first task is already past its length (a flood of signals) still sends the grants the run before
    handed it, then hands over; a run that heard nothing never does, so a length below a run's first task cannot
    chain runs without end."""
    client = temporal_env.client
    a, b = sorted([_host(), _host()])
    async with _worker(client, task_queue) as started:
        waiter = await client.start_workflow(
            GrantWaitWorkflow.run, "held", id=f"wait-{uuid.uuid4()}", task_queue=task_queue
        )
        started.append(waiter)
        # The run a hand-over started: "held" granted, its grant still to send; a signal in its first task.
        await client.start_workflow(
            MigrationSlotsWorkflow.run,
            MigrationSlotsInput(
                hosts=(HostCapacity(a, 2), HostCapacity(b, 2)),
                holders=(PairHolder("held", (a, b), 600, 10**10, reply_to=waiter.id),),
                resend=("held",),
                continue_as_new_after_events=3,
            ),
            id=migration_slots_workflow_id(task_queue),
            task_queue=task_queue,
            task_timeout=MIGRATION_SLOTS_TASK_TIMEOUT,
            start_signal="request_pair",
            start_signal_args=[PairRequest("client", (a,), reply_to="")],
        )
        assert await asyncio.wait_for(waiter.result(), 30) == [a, b]
        entity = _entity(client, task_queue)
        status = await _until(entity, lambda s: {h.holder_id for h in s.holders} == {"held", "client"})
        await asyncio.sleep(1)  # time for a chain of runs to show, were there one
        runs = await _runs(client, migration_slots_workflow_id(task_queue))
    assert status.waiters == ()
    first = [event.event_type for event in runs[0].events]
    # The first run sent the grant, then handed over (it had heard the signal); the second heard nothing and stays.
    assert EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED in first
    assert first[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert len(runs) == 2
    handed = runs[0].events[-1].workflow_execution_continued_as_new_event_attributes
    carried = await DataConverter.default.decode(handed.input.payloads, [MigrationSlotsInput])
    assert carried[0].resend == ()


async def test_a_move_ends_normally_when_the_book_was_terminated_by_hand(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = temporal_env.client
    a, b = _host(), _host()
    async with _worker(client, task_queue) as started:
        move = await client.start_workflow(
            SlotMoveWorkflow.run, MoveInput(a, b, 2, book=task_queue), id=f"move-{uuid.uuid4()}", task_queue=task_queue
        )
        started.append(move)
        entity = _entity(client, task_queue)
        await _until(entity, lambda s: [h.holder_id for h in s.holders] == [move.id])
        await entity.terminate(reason="test: an operator ends the book")
        held = await asyncio.wait_for(move.result(), 30)
        assert held.released_at >= held.acquired_at
