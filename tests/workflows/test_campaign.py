"""The Campaign workflow on the time-skipping server: waves in order, host limits, windows, pause and resume,
cancel, retry-failed only, continue-as-new with every count, and every VM moved once however often it is named.

MigrateVm is replaced by a stand-in registered under its name (the samples' way of standing in for a part): it
moves the VM in a small world kept by this test's activities, the way the saga would: a VM already on its
destination is not moved again. The real saga is exercised against the lab in tests/e2e/test_campaign.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent, WorkflowExecutionContinuedAsNewEventAttributes
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.campaign import CampaignActivities, forecast_campaign
from workflows.campaign import CampaignWorkflow
from workflows.contracts import (
    MOVES_PAGE_MAX,
    CampaignCommand,
    CampaignInput,
    CampaignMove,
    CampaignPhase,
    CampaignPlan,
    CampaignProgress,
    CampaignResult,
    CampaignWave,
    HostProfile,
    MaintenanceWindow,
    MigrateVmInput,
    MigrateVmResult,
    MoveRecord,
    MovesPage,
    MovesQuery,
    MoveState,
    WaveFailurePolicy,
    campaign_input,
    campaign_workflow_id,
    watch_task_queue,
)

GIB = 2**30


@dataclass
class World:
    """Where each VM runs, the moves really made, and the VMs whose next move fails."""

    where: dict[str, str] = field(default_factory=dict)
    moves: list[tuple[str, str, str]] = field(default_factory=list)
    fail_next: set[str] = field(default_factory=set)
    cancelled: list[str] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)
    fail_prepare: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class WorldMove:
    vm: str
    source: str
    destination: str


class WorldActivities:
    def __init__(self, world: World) -> None:
        self.world = world

    @activity.defn(name="test_world_move")
    def move(self, request: WorldMove) -> str:
        here = self.world.where.get(request.vm)
        if here == request.destination:
            return "already-there"
        if request.vm in self.world.fail_next:
            self.world.fail_next.discard(request.vm)
            raise ApplicationError(f"{request.vm}: the host refused", type="MoveFailed", non_retryable=True)
        self.world.moves.append((request.vm, request.source, request.destination))
        self.world.where[request.vm] = request.destination
        return "moved"

    @activity.defn(name="test_world_cancelled")
    def cancelled(self, vm: str) -> None:
        self.world.cancelled.append(vm)

    @activity.defn(name="test_world_prepared")
    def prepared(self, vm: str) -> None:
        if vm in self.world.fail_prepare:
            raise ApplicationError(f"{vm}: preflight found a blocker", type="PreflightBlocked", non_retryable=True)
        self.world.prepared.append(vm)


@workflow.defn(name="MigrateVm")
class StandInMigrateVm:
    """A move that takes a second per GiB of memory (workflow time), then changes the world once."""

    def __init__(self) -> None:
        self._go = False

    @workflow.signal
    def go(self) -> None:
        self._go = True

    @workflow.run
    async def run(self, input: MigrateVmInput) -> MigrateVmResult:
        try:
            if input.prepared_ahead:
                # Ready at once, as the saga is after its settings; the move waits for its turn.
                await workflow.execute_activity(
                    "test_world_prepared", input.vm, start_to_close_timeout=timedelta(seconds=10)
                )
                await workflow.wait_condition(lambda: self._go)
            await workflow.sleep(timedelta(seconds=max(1, hash_size(input.vm))))
        except asyncio.CancelledError:
            await workflow.execute_activity(
                "test_world_cancelled", input.vm, start_to_close_timeout=timedelta(seconds=10)
            )
            raise
        outcome = await workflow.execute_activity(
            "test_world_move",
            WorldMove(input.vm, input.source, input.destination),
            result_type=str,
            start_to_close_timeout=timedelta(seconds=10),
        )
        return MigrateVmResult(
            vm=input.vm,
            source=input.source,
            destination=input.destination,
            moved=outcome == "moved",
            already_there=outcome == "already-there",
        )


def hash_size(vm: str) -> int:
    """The stand-in's move length in seconds: deterministic from the name (the number after the dash); one second
    for names starting with "quick" (the test server does not skip time while an activity runs, and a campaign
    that continued as new follows its moves in flight through the watch_move activity)."""
    if vm.startswith("quick"):
        return 1
    digits = "".join(ch for ch in vm if ch.isdigit())
    return 10 + (int(digits) % 7) * 10 if digits else 10


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def campaign_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own. Campaigns that continued as new follow their moves through
    watch_move activities, and the test server does not release its time-skipping lock for an activity a stopped
    worker left running; a server shared with later tests would stop skipping time for them."""
    # Imported here: the workflow sandbox re-imports this module's top level, and the fixtures' module with it.
    from tests.conftest import _binary, register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_binary("temporal-test-server"))
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def campaign_env(
    campaign_server: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[tuple[WorkflowEnvironment, World, str]]:
    time_skipping_env = campaign_server
    world = World()
    activities = WorldActivities(world)
    # watch_move waits on a move's result with a client of its own, as the worker's is: the environment's client
    # takes and releases the test server's time-skipping lock around each wait, and a wait cut short when this
    # test's worker stops would leave the shared server unable to skip time for the tests after it.
    plain = await Client.connect(time_skipping_env.client.service_client.config.target_host)
    main = Worker(
        time_skipping_env.client,
        task_queue=task_queue,
        workflows=[CampaignWorkflow, StandInMigrateVm],
        activities=[activities.move, activities.cancelled, activities.prepared, forecast_campaign],
        activity_executor=__import__("concurrent.futures").futures.ThreadPoolExecutor(4),
        # Fewer activity slots than a campaign has moves in flight when it continues as new: the watches of the
        # next run must not take the slots the moves they wait for need to end (a deadlock at 10,000 VMs).
        max_concurrent_activities=2,
    )
    watches = Worker(
        time_skipping_env.client,
        task_queue=watch_task_queue(task_queue),
        activities=[CampaignActivities(plain).watch_move],
    )
    async with main, watches:
        try:
            yield time_skipping_env, world, task_queue
        finally:
            await _end_everything(time_skipping_env)


# Every campaign a test started and every move it names: ended after the test. The time-skipping server is shared
# by the session; a campaign left lingering would hold workflow tasks nobody polls once this test's worker is gone,
# and the server skips no time while a task is outstanding.
_STARTED: list[str] = []


async def _end_everything(env: WorkflowEnvironment) -> None:
    ids, _STARTED[:] = list(_STARTED), []
    for workflow_id in ids:
        with contextlib.suppress(RPCError):
            await env.client.get_workflow_handle(workflow_id).terminate(reason="end of the test")


def plan(name: str, waves: list[list[tuple[str, str, str]]], **kwargs: object) -> CampaignPlan:
    built = tuple(
        CampaignWave(f"wave-{n}", tuple(CampaignMove(vm, s, d, memory_bytes=4 * GIB) for vm, s, d in wave))
        for n, wave in enumerate(waves)
    )
    return CampaignPlan(name=name, waves=built, **kwargs)  # type: ignore[arg-type]


async def start(
    env: WorkflowEnvironment, task_queue: str, request: CampaignInput
) -> WorkflowHandle[CampaignWorkflow, Any]:
    _STARTED.append(campaign_workflow_id(request.name))
    _STARTED.extend(request.moves.move(i).key for i in range(len(request.moves)))
    return await env.client.start_workflow(
        CampaignWorkflow.run, request, id=campaign_workflow_id(request.name), task_queue=task_queue
    )


async def query_progress(handle: WorkflowHandle[CampaignWorkflow, Any]) -> CampaignProgress:
    """The campaign's progress, asked again when the time-skipping server lets a query lapse: that server holds a
    query that arrives while a workflow task is in flight until the task completes, and a task that continues the
    campaign as new completes the run without answering it (the query then runs into its deadline). A real
    server answers such a query from the closed run. The lapse reaches the client as DEADLINE_EXCEEDED, or as
    CANCELLED "Timeout expired" when the client's own deadline ends the call first (seen on a busy machine)."""
    for _ in range(2):
        try:
            return await handle.query(CampaignWorkflow.progress, rpc_timeout=timedelta(seconds=5))
        except RPCError as error:
            if error.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise
    return await handle.query(CampaignWorkflow.progress, rpc_timeout=timedelta(seconds=5))


async def until_phase(
    env: WorkflowEnvironment, handle: WorkflowHandle[CampaignWorkflow, Any], *phases: CampaignPhase
) -> CampaignProgress:
    """Query until the campaign reaches one of `phases`, skipping 5 s of workflow time between queries (bounded:
    a day of workflow time)."""
    for _ in range(17280):
        progress = await query_progress(handle)
        if progress.phase in phases:
            return progress
        await env.sleep(5)
    raise AssertionError(f"campaign never reached {phases}: {progress}")


async def records(handle: WorkflowHandle[CampaignWorkflow, Any]) -> list[MoveRecord]:
    records: list[MoveRecord] = []
    while True:
        page: MovesPage = await handle.query(CampaignWorkflow.moves, MovesQuery(offset=len(records), limit=5000))
        assert len(page.records) <= MOVES_PAGE_MAX
        records.extend(page.records)
        if not page.records or len(records) >= page.total:
            return records


Handover = tuple[list[HistoryEvent], WorkflowExecutionContinuedAsNewEventAttributes]


async def handed_over(env: WorkflowEnvironment, handle: WorkflowHandle[CampaignWorkflow, Any]) -> list[Handover]:
    """The campaign's runs that continued as new, oldest first: each one's history events and its hand-over (the
    continued-as-new event's attributes, with the next run's input)."""
    runs: list[Handover] = []
    run_id: str | None = handle.first_execution_run_id
    while run_id:
        events = list((await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()).events)
        last = events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            break
        runs.append((events, last.workflow_execution_continued_as_new_event_attributes))
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return runs


def peak_per_host(recs: list[MoveRecord]) -> dict[str, int]:
    """The most moves any host had at once, from the records' start and end times."""
    events: list[tuple[float, int, str]] = []
    for r in recs:
        if r.started and r.ended:
            for host in (r.source.casefold(), r.destination.casefold()):
                events += [(r.started, 1, host), (r.ended, -1, host)]
    peak: dict[str, int] = {}
    now: dict[str, int] = {}
    for _, delta, host in sorted(events, key=lambda e: (e[0], e[1])):
        now[host] = now.get(host, 0) + delta
        peak[host] = max(peak.get(host, 0), now[host])
    return peak


def new_name() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


@pytest.mark.asyncio(loop_scope="session")
async def test_waves_in_order_within_host_limits(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, world, queue = campaign_env
    hosts = [f"hv{n}" for n in range(4)]
    wave0 = [(f"a{n}-{uuid.uuid4().hex[:4]}", hosts[n % 4], hosts[(n + 1) % 4]) for n in range(10)]
    wave1 = [(f"b{n}-{uuid.uuid4().hex[:4]}", hosts[(n + 1) % 4], hosts[n % 4]) for n in range(6)]
    request = campaign_input(
        plan(new_name(), [wave0, wave1], hosts=tuple(HostProfile(h, slots=2) for h in hosts)),
        task_queue=queue,
        check=False,
    )
    handle = await start(env, queue, request)
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert progress.counts.moved == 16
    assert progress.total == 16
    assert (progress.wave_sizes, progress.waves_ended) == ((10, 6), (10, 6))
    assert progress.forecast_makespan_seconds > 0
    recs = await records(handle)
    assert all(r.state == MoveState.MOVED for r in recs)
    last_of_wave0 = max(r.ended for r in recs if r.wave == 0)
    assert all(r.started >= last_of_wave0 for r in recs if r.wave == 1)
    assert max(peak_per_host(recs).values()) <= 2
    assert sorted(vm for vm, _, _ in world.moves if vm in {m[0] for m in wave0 + wave1}) == sorted(
        m[0] for m in wave0 + wave1
    )
    await handle.execute_update(CampaignWorkflow.close, CampaignCommand(by="test"))
    result = await handle.result()
    assert isinstance(result, CampaignResult)
    assert result.counts.moved == 16


@pytest.mark.asyncio(loop_scope="session")
async def test_the_campaign_forecasts_with_the_plans_measured_set_up(
    campaign_env: tuple[WorkflowEnvironment, World, str],
) -> None:
    env, _, queue = campaign_env
    hosts = ("hs0", "hs1")
    forecasts: dict[float | None, float] = {}
    for setup in (None, 34.0):
        tag = uuid.uuid4().hex[:4]
        moves = [(f"s{n}-{tag}", hosts[0], hosts[1]) for n in range(4)]
        profiles = tuple(HostProfile(h, slots=2) for h in hosts)
        request = campaign_input(
            plan(new_name(), [moves], hosts=profiles, setup_seconds=setup), task_queue=queue, check=False
        )
        handle = await start(env, queue, request)
        progress = await until_phase(env, handle, CampaignPhase.ENDED)
        assert progress.counts.moved == 4
        forecasts[setup] = progress.forecast_makespan_seconds
        await handle.execute_update(CampaignWorkflow.close, CampaignCommand(by="test"))
    # 30 s more than the model's own 4 per move, four moves two at a time on hs0: two rounds, 60 s later.
    assert forecasts[34.0] - forecasts[None] == pytest.approx(60, abs=1)


@pytest.mark.asyncio(loop_scope="session")
async def test_plan_run_twice_and_duplicate_vm_move_once(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, world, queue = campaign_env
    vm = f"dup-{uuid.uuid4().hex[:6]}"
    moves = [(vm, "hva", "hvb"), (vm.upper(), "HVA", "hvb")]  # the same VM twice, spelled differently
    first = campaign_input(plan(new_name(), [moves]), task_queue=queue, check=False)
    second = campaign_input(plan(new_name(), [[(vm, "hva", "hvb")]]), task_queue=queue, check=False)
    one, two = await start(env, queue, first), await start(env, queue, second)
    for handle in (one, two):
        progress = await until_phase(env, handle, CampaignPhase.ENDED)
        assert progress.counts.moved + progress.counts.already_there == progress.total
    # The plan again, after the move: found on its destination, moved by nobody.
    again = await start(env, queue, replace(first, name=new_name()))
    progress = await until_phase(env, again, CampaignPhase.ENDED)
    assert progress.counts.already_there == progress.total
    assert [m for m in world.moves if m[0].casefold() == vm.casefold()] == [(vm, "hva", "hvb")] or [
        m for m in world.moves if m[0].casefold() == vm.casefold()
    ] == [(vm.upper(), "HVA", "hvb")]


@pytest.mark.asyncio(loop_scope="session")
async def test_retry_failed_reruns_only_the_failures(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, world, queue = campaign_env
    tag = uuid.uuid4().hex[:4]
    moves = [(f"r{n}-{tag}", "hvx", "hvy") for n in range(4)]
    world.fail_next.add(moves[1][0])
    handle = await start(env, queue, campaign_input(plan(new_name(), [moves]), task_queue=queue, check=False))
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert (progress.counts.moved, progress.counts.failed) == (3, 1)
    failed = [r for r in await records(handle) if r.state == MoveState.FAILED]
    assert [r.vm for r in failed] == [moves[1][0]]
    assert "the host refused" in failed[0].error
    answer = await handle.execute_update(CampaignWorkflow.retry_failed, CampaignCommand(by="test"))
    assert answer.affected == 1
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert progress.counts.moved == 4
    assert sorted(vm for vm, _, _ in world.moves if vm.endswith(tag)) == sorted(m[0] for m in moves)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(CampaignWorkflow.retry_failed, CampaignCommand(by="test"))


@pytest.mark.asyncio(loop_scope="session")
async def test_wave_pauses_after_failures_and_resumes(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, world, queue = campaign_env
    tag = uuid.uuid4().hex[:4]
    wave0 = tuple(CampaignMove(f"p{n}-{tag}", "hvp", "hvq") for n in range(3))
    wave1 = tuple(CampaignMove(f"q{n}-{tag}", "hvq", "hvp") for n in range(2))
    world.fail_next.add(wave0[0].vm)
    request = campaign_input(
        CampaignPlan(
            new_name(),
            (CampaignWave("w0", wave0, WaveFailurePolicy.PAUSE, 1), CampaignWave("w1", wave1)),
        ),
        task_queue=queue,
        check=False,
    )
    handle = await start(env, queue, request)
    progress = await until_phase(env, handle, CampaignPhase.PAUSED)
    assert "wave w0" in progress.paused_reason
    assert progress.counts.failed == 1
    await env.sleep(600)
    assert (await query_progress(handle)).wave == 0  # wave 1 never started while paused
    await handle.execute_update(CampaignWorkflow.resume, CampaignCommand(by="test"))
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert (progress.counts.moved, progress.counts.failed) == (4, 1)


@pytest.mark.asyncio(loop_scope="session")
async def test_pause_starts_nothing_until_resumed(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, world, queue = campaign_env
    tag = uuid.uuid4().hex[:4]
    moves = [(f"s{n}-{tag}", "hvs", "hvt") for n in range(6)]
    request = campaign_input(
        plan(new_name(), [moves], hosts=(HostProfile("hvs", 1), HostProfile("hvt", 1))), task_queue=queue, check=False
    )
    handle = await start(env, queue, request)
    answer = await handle.execute_update(CampaignWorkflow.pause, CampaignCommand(by="test", reason="change freeze"))
    assert answer.phase == CampaignPhase.PAUSED
    await env.sleep(3600)
    progress = await query_progress(handle)
    assert progress.phase == CampaignPhase.PAUSED
    assert "change freeze" in progress.paused_reason
    assert progress.counts.moved <= 1
    assert progress.counts.running == 0
    # A move prepared before the pause waits, ready, without moving.
    prepared = [vm for vm in world.prepared if vm.endswith(tag)]
    assert progress.ready == len(prepared) <= 1
    assert not {vm for vm, _, _ in world.moves} & set(prepared)
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(CampaignWorkflow.pause, CampaignCommand(by="test"))
    await handle.execute_update(CampaignWorkflow.resume, CampaignCommand(by="test"))
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert progress.counts.moved == 6


@pytest.mark.asyncio(loop_scope="session")
async def test_cancel_ends_moves_in_flight_and_starts_no_more(
    campaign_env: tuple[WorkflowEnvironment, World, str],
) -> None:
    env, world, queue = campaign_env
    tag = uuid.uuid4().hex[:4]
    moves = [(f"k{n}-{tag}", "hvk", "hvl") for n in range(5)]
    request = campaign_input(
        plan(new_name(), [moves], hosts=(HostProfile("hvk", 2), HostProfile("hvl", 2))), task_queue=queue, check=False
    )
    handle = await start(env, queue, request)
    for _ in range(200):
        if (await query_progress(handle)).counts.running == 2:
            break
        await asyncio.sleep(0.05)
    answer = await handle.execute_update(CampaignWorkflow.cancel, CampaignCommand(by="test"))
    assert answer.affected == 5
    result = await handle.result()
    assert isinstance(result, CampaignResult)
    assert result.counts.cancelled == 5
    assert result.counts.running == 0
    # The next move, prepared ahead of its turn, had a run too: it is cancelled as one in flight (its compensations
    # run), not dropped as a pending one.
    assert sorted(vm for vm in world.cancelled if vm.endswith(tag)) == sorted(m[0] for m in moves[:3])
    assert {vm for vm in world.prepared if vm.endswith(tag)} <= {moves[2][0]}
    assert not [m for m in world.moves if m[0].endswith(tag)]
    prepared = next(r for r in await records(handle) if r.vm == moves[2][0])
    assert prepared.state == MoveState.CANCELLED
    assert prepared.error.startswith("cancelled while prepared ahead, before its turn: nothing moved")


@pytest.mark.asyncio(loop_scope="session")
async def test_moves_prepared_ahead_wait_for_their_turn(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    """Each next move is prepared while the one before it runs, yet none moves before its turn: with one slot per
    host they still run one at a time, in the planner's order. A move that fails while prepared is recorded as
    failed at once and never started; the campaign goes on without it."""
    env, world, queue = campaign_env
    tag = uuid.uuid4().hex[:4]
    moves = [(f"r{n}-{tag}", "hvr", "hvu") for n in range(5)]
    world.fail_prepare.add(moves[3][0])
    request = campaign_input(
        plan(new_name(), [moves], hosts=(HostProfile("hvr", 1), HostProfile("hvu", 1))), task_queue=queue, check=False
    )
    assert request.prepare_ahead == 1
    handle = await start(env, queue, request)
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert (progress.counts.moved, progress.counts.failed, progress.counts.pending) == (4, 1, 0)
    recs = await records(handle)
    assert peak_per_host([r for r in recs if r.state == MoveState.MOVED]) == {"hvr": 1, "hvu": 1}
    ran = sorted((r for r in recs if r.state == MoveState.MOVED), key=lambda r: r.started)
    assert [r.vm for r in ran] == [vm for vm, _, _ in moves if vm != moves[3][0]]
    assert [m[0] for m in world.moves if m[0].endswith(tag)] == [r.vm for r in ran]
    # Every move after the first was readied while another ran.
    assert [vm for vm in world.prepared if vm.endswith(tag)] == [moves[n][0] for n in (1, 2, 4)]
    failed = next(r for r in recs if r.state == MoveState.FAILED)
    assert failed.vm == moves[3][0]
    assert "blocker" in failed.error


@pytest.mark.asyncio(loop_scope="session")
async def test_moves_start_only_inside_windows(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, _world, queue = campaign_env
    now = await env.get_current_time()
    opens = (now + timedelta(hours=3)).replace(second=0, microsecond=0)
    window = MaintenanceWindow(start=f"{opens:%H:%M}", duration_minutes=60, time_zone="UTC")
    tag = uuid.uuid4().hex[:4]
    moves = [(f"w{n}-{tag}", "hvw", "hvz") for n in range(4)]
    handle = await start(
        env, queue, campaign_input(plan(new_name(), [moves], windows=(window,)), task_queue=queue, check=False)
    )
    progress = await until_phase(env, handle, CampaignPhase.WAITING_FOR_WINDOW)
    assert progress.window_opens == pytest.approx(opens.timestamp(), abs=1)
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert progress.counts.moved == 4
    for record in await records(handle):
        started = datetime.fromtimestamp(record.started, UTC)
        assert opens <= started < opens + timedelta(minutes=60), record


# What a run sent that the server answers with an event of that run, and the events that answer each.
_ASKED_AND_ANSWERED: dict[str, tuple[str, str]] = {
    "START_CHILD_WORKFLOW_EXECUTION_INITIATED": (
        "CHILD_WORKFLOW_EXECUTION_STARTED",
        "START_CHILD_WORKFLOW_EXECUTION_FAILED",
    ),
    "REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED": (
        "EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED",
        "REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED",
    ),
    "SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED": (
        "EXTERNAL_WORKFLOW_EXECUTION_SIGNALED",
        "SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED",
    ),
}


def _unanswered(events: list[Any]) -> list[str]:
    """The starts, cancels and signals a run sent whose answer is not in its history."""
    asked: dict[int, str] = {}
    for event in events:
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        if kind in _ASKED_AND_ANSWERED:
            asked[event.event_id] = kind
            continue
        if any(kind in answers for answers in _ASKED_AND_ANSWERED.values()):
            attributes = getattr(event, f"{kind.lower()}_event_attributes")
            asked.pop(attributes.initiated_event_id, None)
    return [f"{kind} (event {event_id})" for event_id, kind in sorted(asked.items())]


@pytest.mark.asyncio(loop_scope="session")
async def test_continue_as_new_keeps_every_count(campaign_env: tuple[WorkflowEnvironment, World, str]) -> None:
    env, world, queue = campaign_env
    tag = uuid.uuid4().hex[:4]
    hosts = [f"hc{n}" for n in range(6)]
    moves = [(f"quick{n}-{tag}", hosts[n % 6], hosts[(n + 3) % 6]) for n in range(30)]
    world.fail_next.add(moves[7][0])
    request = replace(
        campaign_input(plan(new_name(), [moves[:20], moves[20:]], setup_seconds=12.0), task_queue=queue, check=False),
        history_limit=60,
    )
    handle = await start(env, queue, request)
    progress = await until_phase(env, handle, CampaignPhase.ENDED)
    assert progress.run > 2
    assert (progress.counts.moved, progress.counts.failed, progress.total) == (29, 1, 30)
    recs = await records(handle)
    assert all(r.started and r.ended for r in recs)
    assert [r.vm for r in recs if r.state == MoveState.FAILED] == [moves[7][0]]
    assert sorted(vm for vm, _, _ in world.moves if vm.endswith(tag)) == sorted(m[0] for m in moves if m != moves[7])
    # A start, a cancel or a `go` still unanswered when a run continues as new is an event that arrives while that
    # task runs: the server rejects the task and the worker replays the whole run. Each run hands over without one.
    runs = await handed_over(env, handle)
    for number, (events, _) in enumerate(runs, start=1):
        assert _unanswered(events) == [], f"run {number} continued as new with these unanswered"
    assert len(runs) == progress.run - 1
    # The plan's measured set-up goes with every run (each one forecasts and decides with it).
    for _, handover in runs:
        carried = await DataConverter.default.decode(handover.input.payloads, [CampaignInput])
        assert carried[0].setup_seconds == 12.0
