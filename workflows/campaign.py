"""Campaign: many VMs moved in waves, inside maintenance windows, in the order the planner chooses (DESIGN.md
"The workflows").

Each VM moves through its own MigrateVm child under the id the one-VM path uses (`migrate_vm_workflow_id`: the VM
and its source), so a plan run twice, a VM listed twice, a ticket and a second campaign naming the same move all
land on one run: a running one is followed, not started again, and a new run of a finished one finds the VM
already on its destination (the saga's own check) and moves nothing. Moving the VM back later is another id.

The planner (`workflows/scheduling.py`) picks which moves start each time a slot frees; MigrationSlots still
grants every move both hosts' slots, so no host is ever asked for more than its limit whatever starts them.

History: a move costs the campaign three events (child initiated, started, ended) plus its share of workflow
tasks; a run continues as new when the SDK suggests it or near CAMPAIGN_HISTORY_EVENTS_LIMIT, carrying every move's
state in one string. Children are started with the ABANDON close policy so they outlive the run that started them;
the next run follows them through the `watch_move` activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import (
        CAMPAIGN_STATE_INVALID,
        MOVE_STATE_CODES,
        MOVE_STATES_BY_CODE,
        MOVES_PAGE_MAX,
        SA_CAMPAIGN,
        SEVERITY_BLOCKER,
        SEVERITY_WARNING,
        ActivityName,
        CampaignAnswer,
        CampaignCarry,
        CampaignCommand,
        CampaignCounts,
        CampaignInput,
        CampaignMove,
        CampaignPhase,
        CampaignProgress,
        CampaignResult,
        CampaignWave,
        CheckInput,
        CheckResult,
        ConcernId,
        ForecastInput,
        ForecastSummary,
        HostProfile,
        MigrateVmInput,
        MigrateVmResult,
        MigrationPerformance,
        MoveRecord,
        MovesPage,
        MovesQuery,
        MoveState,
        PreflightBatchInput,
        PreflightBatchReport,
        PreflightVm,
        VmCheck,
        WatchMoveInput,
        WatchMoveResult,
        WaveFailurePolicy,
        pack_moves,
        watch_task_queue,
    )
    from workflows.scheduling import UNCALIBRATED_MODEL, Schedule, TransferModel, transfer_model, with_setup
    from workflows.windows import end_inside_windows, next_opening, open_window, seconds_until_open

_CAMPAIGN_KEY = SearchAttributeKey.for_keyword(SA_CAMPAIGN)
_QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)
# A check's batch of one host pair: enough VMs to share each host's reads, few enough that one report stays small.
CHECK_BATCH_VMS = 25
# Batches of a check running at once: each opens sessions on two hosts.
CHECK_PARALLEL = 8
# Moves one CampaignCheck child preflights: its history keeps the full reports, the campaign only the summary.
CHECK_CHILD_VMS = 500
# The watch of a move started elsewhere: a heartbeat every few minutes tells a dead worker from a long move.
_WATCH_HEARTBEAT = timedelta(minutes=5)
# Workflow changes that alter the command sequence of running workflows go behind a patch (invariant 8).
_PATCH_WATCH_QUEUE = "campaign-watch-queue"
# Moves prepared ahead of their turn (MigrateVmInput.prepared_ahead) and sent `go` when the planner starts them.
_PATCH_PREPARE_AHEAD = "campaign-prepare-ahead"
# The run continues as new only once the starts and cancels it sent have their answers (`_quiet_enough`), and never
# in its first pass.
_PATCH_QUIET_HANDOVER = "campaign-quiet-handover"
# The planner's transfer model follows the performance option the policy sets on the hosts (scheduling.transfer_model)
# instead of one stream cap for every byte: its decisions differ, so runs that decided with the old model keep it.
_PATCH_CALIBRATED_MODEL = "campaign-calibrated-model"
# At each decision, the running moves asked what their end would start (`Schedule.after`), oldest first: each
# answer costs a decision, and the oldest moves are the likeliest to end next.
_PREPARE_PEEKS = 16


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _failure_text(error: BaseException) -> str:
    inner = _innermost(error)
    kind = inner.type if isinstance(inner, ApplicationError) and inner.type else type(inner).__name__
    message = inner.message if isinstance(inner, ApplicationError) else str(inner)
    return f"{kind}: {message}"[:2000]


def check_batches(moves: Sequence[CampaignMove], *, size: int = CHECK_BATCH_VMS) -> list[PreflightBatchInput]:
    """The moves grouped by host pair (case-insensitive), in first-seen order, cut into batches of `size`."""
    pairs: dict[tuple[str, str], list[CampaignMove]] = {}
    for move in moves:
        pairs.setdefault((move.source.casefold(), move.destination.casefold()), []).append(move)
    batches: list[PreflightBatchInput] = []
    for group in pairs.values():
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            batches.append(
                PreflightBatchInput(
                    source=chunk[0].source,
                    destination=chunk[0].destination,
                    vms=tuple(PreflightVm(m.vm, m.storage_path) for m in chunk),
                )
            )
    return batches


@workflow.defn(name="CampaignCheck")
class CampaignCheckWorkflow:
    """Preflight many VMs, read-only, and keep a compact summary: per VM its blockers, warnings and sizes; per
    host its concurrent migrations. `snlm campaign check` runs it; a campaign runs it before its first move."""

    @workflow.run
    async def run(self, input: CheckInput) -> CheckResult:
        limit = asyncio.Semaphore(CHECK_PARALLEL)

        async def one(batch: PreflightBatchInput) -> PreflightBatchReport:
            async with limit:
                report: PreflightBatchReport = await workflow.execute_activity(
                    ActivityName.PREFLIGHT_BATCH,
                    batch,
                    result_type=PreflightBatchReport,
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=timedelta(minutes=2),
                    retry_policy=_QUICK_RETRY,
                )
                return report

        reports = await asyncio.gather(*(one(batch) for batch in input.pairs))
        vms: list[VmCheck] = []
        slots: dict[str, int] = {}
        round_trips = 0
        for batch, batch_report in zip(input.pairs, reports, strict=True):
            round_trips += sum(batch_report.round_trips.values())
            for report in batch_report.reports:
                summary = report.summary
                facts = report.facts or {}
                memory = _memory_bytes(facts.get("vm.memory_startup_gb", ""))
                total = summary.move_bytes if summary is not None else 0
                for settings in summary.settings if summary is not None else ():
                    cap = settings.max_vm_migrations
                    if input.max_migrations_per_host is not None:
                        cap = min(cap, input.max_migrations_per_host)
                    slots[settings.host] = max(1, cap)
                vms.append(
                    VmCheck(
                        vm=report.vm,
                        source=batch.source,
                        destination=batch.destination,
                        blockers=tuple(
                            f"{c.id}: {c.message}" for c in report.concerns if c.severity == SEVERITY_BLOCKER
                        ),
                        warnings=tuple(
                            f"{c.id}: {c.message}" for c in report.concerns if c.severity == SEVERITY_WARNING
                        ),
                        memory_bytes=memory,
                        disk_bytes=max(0, total - memory),
                        already_there=any(c.id == ConcernId.VM_ALREADY_ON_DESTINATION for c in report.concerns),
                    )
                )
        return CheckResult(vms=tuple(vms), host_slots=slots, round_trips=round_trips)


def _memory_bytes(gigabytes: str) -> int:
    try:
        return int(float(gigabytes) * 2**30)
    except ValueError:
        return 0


@workflow.defn(name="Campaign")
class CampaignWorkflow:
    """A plan of moves, in waves and windows, each VM moved exactly once, in the order the planner picks."""

    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        self._input = input
        packed = input.moves
        # The same move listed twice (the VM and its source, case-insensitive) is one move, the first entry's: the
        # others never run and count nowhere (`duplicates` says how many there were). Every run derives the same
        # list from the same input, so the carried states line up.
        self._moves: list[CampaignMove] = []
        self._wave_of: list[int] = []
        seen: set[str] = set()
        for number in range(len(packed)):
            move = packed.move(number)
            if move.key not in seen:
                seen.add(move.key)
                self._moves.append(move)
                self._wave_of.append(packed.wave[number])
        self._duplicates = len(packed) - len(self._moves)
        self._members: list[list[int]] = []
        self._index_of = {move.key: index for index, move in enumerate(self._moves)}
        self._schedule: Schedule | None = None
        self._schedule_for = (-1, -1)
        # Bumped when moves that had ended become pending again (retry-failed): the schedule is rebuilt.
        self._generation = 0
        carry = input.carry
        count = len(self._moves)
        if carry is not None:
            self._states = [MOVE_STATES_BY_CODE[c] for c in carry.states]
            # Carried as whole seconds after the epoch, plus one so that 0 still means "not yet".
            self._started = [carry.epoch + s - 1 if s else 0.0 for s in carry.started]
            self._ended = [carry.epoch + e - 1 if e else 0.0 for e in carry.ended]
            self._errors = dict(carry.errors)
            self._attached = set(carry.attached)
            prepared: tuple[int, ...] = carry.prepared
            self._phase = carry.phase
            self._wave = carry.wave
            self._paused_reason = carry.paused_reason
            self._runs = carry.runs
            self._rounds = carry.rounds
            self._epoch = carry.epoch
        else:
            self._states = [MoveState.PENDING] * count
            self._started = [0.0] * count
            self._ended = [0.0] * count
            self._errors = {}
            self._attached = set()
            prepared = ()
            self._phase = CampaignPhase.CHECKING if input.check else CampaignPhase.RUNNING
            self._wave = 0
            self._paused_reason = ""
            self._runs = 1
            self._rounds = 0
            self._epoch = 0.0
        self._hosts: dict[str, HostProfile] = {h.host.casefold(): h for h in input.hosts}
        # Per wave: moves not ended, moves failed (kept by `_become`).
        self._open = [0] * len(input.waves)
        self._failed = [0] * len(input.waves)
        for index, state in enumerate(self._states):
            self._open[self._wave_of[index]] += not state.ended
            self._failed[self._wave_of[index]] += state == MoveState.FAILED
        self._running: set[int] = {i for i, s in enumerate(self._states) if s == MoveState.RUNNING}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        # Requests on their way to a move's run (a cancel, a `go`, a start): each ends in an event of this run.
        self._cancel_requests: set[asyncio.Task[None]] = set()
        self._go_signals: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._quiet = False
        # The moves this run prepares ahead, and their runs once started: `go` reaches them through their handle.
        self._ahead_here: set[int] = set()
        self._handles: dict[int, workflow.ChildWorkflowHandle[Any, MigrateVmResult]] = {}
        self._changed = False
        self._cancel_requested = False
        self._close_requested = False
        self._acknowledged_failures: dict[int, int] = {}
        self._forecast_end = 0.0
        self._forecast_makespan = 0.0
        # The rule the first run chose, kept by every later run: choosing simulates the plan once per rule (10 s at
        # 10,000 moves instead of 3.4), and a campaign that changed its rule at each hand-over would follow none.
        self._carried_rule = carry.planner_rule if carry is not None else None
        # The planner's rule (scheduling.PLANNER_RULES) this run decides with: its forecast's.
        self._rule = self._carried_rule or 0
        # The planner's model of a move, and the performance option it follows (None: the model before it did).
        self._model: TransferModel = UNCALIBRATED_MODEL
        self._performance: MigrationPerformance | None = None
        self._window_opens = 0.0
        self._watches_apart: bool | None = None
        # Moves started ahead of their turn and not yet given it (their state stays pending).
        self._prepared: dict[int, None] = dict.fromkeys(prepared)
        # Prepared moves that ended before their turn: the schedule forgets them at its next decision.
        self._left_early: list[int] = []
        # Moves found running under another request when the campaign tried to prepare them: started at their turn.
        self._not_ahead: set[int] = set()
        self._ahead = False

    # -- queries ------------------------------------------------------------------------------------------------
    @workflow.query
    def progress(self) -> CampaignProgress:
        counts = self._counts()
        moved = sum(self._bytes(i) for i, s in enumerate(self._states) if s == MoveState.MOVED)
        left = sum(self._bytes(i) for i, s in enumerate(self._states) if s in (MoveState.PENDING, MoveState.RUNNING))
        sizes = [len(self._wave_members(wave)) for wave in range(len(self._input.waves))]
        ended = [size - open_ for size, open_ in zip(sizes, self._open, strict=True)]
        return CampaignProgress(
            name=self._input.name,
            phase=self._phase,
            counts=counts,
            total=len(self._moves),
            wave=self._wave,
            waves=tuple(w.name for w in self._input.waves),
            bytes_moved=moved,
            bytes_left=left,
            forecast_end=self._forecast_end,
            forecast_makespan_seconds=self._forecast_makespan,
            window_opens=self._window_opens,
            paused_reason=self._paused_reason,
            run=self._runs,
            duplicates=self._duplicates,
            history_events=workflow.info().get_current_history_length(),
            wave_sizes=tuple(sizes),
            waves_ended=tuple(ended),
            ready=len(self._prepared),
            planner_rule=self._rule,
        )

    @workflow.query
    def moves(self, query: MovesQuery) -> MovesPage:
        wanted = set(query.states)
        indices = [i for i, s in enumerate(self._states) if not wanted or s in wanted]
        page = indices[query.offset : query.offset + max(0, min(query.limit, MOVES_PAGE_MAX))]
        return MovesPage(records=tuple(self._record(i) for i in page), offset=query.offset, total=len(indices))

    # -- commands -----------------------------------------------------------------------------------------------
    @workflow.update
    def pause(self, command: CampaignCommand) -> CampaignAnswer:
        self._phase = CampaignPhase.PAUSED
        self._paused_reason = f"paused by {command.by or 'an operator'}" + (
            f": {command.reason}" if command.reason else ""
        )
        self._wake()
        ready = f", {len(self._prepared)} prepared move(s) wait" if self._prepared else ""
        return CampaignAnswer(self._phase, f"paused; {len(self._running)} move(s) in flight finish, none starts{ready}")

    @pause.validator
    def _validate_pause(self, command: CampaignCommand) -> None:
        if self._phase in (CampaignPhase.CANCELLING, CampaignPhase.ENDED, CampaignPhase.CLOSED):
            raise ApplicationError(f"cannot pause a campaign that is {self._phase}", type=CAMPAIGN_STATE_INVALID)
        if self._phase == CampaignPhase.PAUSED:
            raise ApplicationError("the campaign is already paused", type=CAMPAIGN_STATE_INVALID)

    @workflow.update
    def resume(self, command: CampaignCommand) -> CampaignAnswer:
        self._phase = CampaignPhase.RUNNING
        self._paused_reason = ""
        # A wave that paused for its failures goes on: the failures so far are acknowledged.
        self._acknowledged_failures[self._wave] = self._wave_failures(self._wave)
        self._wake()
        return CampaignAnswer(self._phase, "resumed")

    @resume.validator
    def _validate_resume(self, command: CampaignCommand) -> None:
        if self._phase != CampaignPhase.PAUSED:
            raise ApplicationError(f"cannot resume a campaign that is {self._phase}", type=CAMPAIGN_STATE_INVALID)

    @workflow.update
    async def cancel(self, command: CampaignCommand) -> CampaignAnswer:
        self._cancel_requested = True
        self._phase = CampaignPhase.CANCELLING
        # A move prepared ahead has a run (it may have changed its hosts' settings): it is cancelled as one in
        # flight, and its compensations put them back.
        pending = [i for i, s in enumerate(self._states) if s == MoveState.PENDING and i not in self._prepared]
        for index in pending:
            self._set(index, MoveState.CANCELLED, "cancelled before it started")
        in_flight = len(self._running) + len(self._prepared)
        self._wake()
        # The answer comes once every move in flight has ended (its compensations run): nothing is left half-done.
        await workflow.wait_condition(lambda: not self._running and not self._prepared)
        return CampaignAnswer(
            self._phase,
            f"cancelled: {len(pending)} pending move(s) will not start, {in_flight} in flight ended",
            affected=len(pending) + in_flight,
        )

    @cancel.validator
    def _validate_cancel(self, command: CampaignCommand) -> None:
        if self._phase in (CampaignPhase.CANCELLING, CampaignPhase.CLOSED):
            raise ApplicationError(f"the campaign is already {self._phase}", type=CAMPAIGN_STATE_INVALID)

    @workflow.update
    def retry_failed(self, command: CampaignCommand) -> CampaignAnswer:
        again = [i for i, s in enumerate(self._states) if s in (MoveState.FAILED, MoveState.BLOCKED)]
        for index in again:
            self._become(index, MoveState.PENDING)
            self._started[index] = self._ended[index] = 0.0
            self._errors.pop(index, None)
        self._wave = min(self._wave_of[i] for i in again)
        self._generation += 1
        self._acknowledged_failures.clear()
        self._phase = CampaignPhase.RUNNING
        self._paused_reason = ""
        self._wake()
        return CampaignAnswer(self._phase, f"{len(again)} failed move(s) will run again", affected=len(again))

    @retry_failed.validator
    def _validate_retry(self, command: CampaignCommand) -> None:
        if self._phase in (CampaignPhase.CANCELLING, CampaignPhase.CLOSED):
            raise ApplicationError(f"cannot retry in a campaign that is {self._phase}", type=CAMPAIGN_STATE_INVALID)
        if not any(s in (MoveState.FAILED, MoveState.BLOCKED) for s in self._states):
            raise ApplicationError("no move of this campaign failed", type=CAMPAIGN_STATE_INVALID)

    @workflow.update
    def close(self, command: CampaignCommand) -> CampaignAnswer:
        self._close_requested = True
        self._wake()
        return CampaignAnswer(CampaignPhase.CLOSED, "closed")

    @close.validator
    def _validate_close(self, command: CampaignCommand) -> None:
        if self._phase != CampaignPhase.ENDED:
            raise ApplicationError(
                f"only a campaign whose moves all ended can be closed (it is {self._phase}); cancel it first",
                type=CAMPAIGN_STATE_INVALID,
            )

    # -- the run ------------------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: CampaignInput) -> CampaignResult:
        if self._running or self._prepared:
            # Decided before the first await, so the patch's marker lies in the run's first task: a replay resolves
            # the forecast's local activity inside that task, where the first execution may have gone on only in
            # the next one, and a marker written after it would be met before the replay asks.
            self._watch_queue()
        # Decided first for the same reason; a run that started without it never prepares ahead.
        self._ahead = input.prepare_ahead > 0 and workflow.patched(_PATCH_PREPARE_AHEAD)
        self._quiet = workflow.patched(_PATCH_QUIET_HANDOVER)
        if workflow.patched(_PATCH_CALIBRATED_MODEL):
            self._performance = input.policy.performance
            self._model = transfer_model(self._performance)
        # A plan's measured set-up (None in every run before plans could give one: the model stays as it was).
        self._model = with_setup(self._model, input.setup_seconds)
        if input.carry is None:
            self._epoch = workflow.now().timestamp()
            workflow.upsert_search_attributes([_CAMPAIGN_KEY.value_set(input.name)])
            if input.check:
                await self._check()
                if self._phase == CampaignPhase.CHECKING:
                    self._phase = CampaignPhase.RUNNING
        await self._forecast()
        # Moves a previous run started (or found running under their id) are followed to their end.
        for index in sorted(self._running) + sorted(self._prepared):
            self._tasks[index] = asyncio.create_task(self._watch(index))
        # The run's first decision is made whatever its history's length: that first pass follows the forecast's
        # local activity, whose result a replay delivers in the run's first task where the first execution may
        # have gone on only in the next one, so the two would read different lengths and decide differently.
        first = self._quiet
        while True:
            if self._close_requested:
                break
            if self._phase == CampaignPhase.ENDED:
                if not await self._linger():
                    break
                continue
            if not first and self._should_continue_as_new():
                await workflow.wait_condition(self._quiet_enough)
                workflow.continue_as_new(self._continued())
            first = False
            self._changed = False
            if self._cancel_requested:
                if not self._running and not self._prepared:
                    break
            elif self._phase == CampaignPhase.PAUSED:
                pass
            else:
                self._advance_waves()
                if self._wave >= len(input.waves):
                    if not self._running:
                        self._phase = CampaignPhase.ENDED
                        continue
                elif not self._paused():
                    waited = await self._wait_for_window()
                    if waited:
                        continue
                    self._start_next()
            await workflow.wait_condition(lambda: self._changed)
        # The cancel update answers once the moves in flight ended: let it, before the run completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        counts = self._counts()
        self._phase = CampaignPhase.CLOSED
        return CampaignResult(
            name=input.name,
            counts=counts,
            total=len(self._moves),
            runs=self._runs,
            started=self._epoch,
            ended=workflow.now().timestamp(),
        )

    def _quiet_enough(self) -> bool:
        """Nothing this run sent is still to be answered. The server rejects the task that continues as new when an
        event arrives while it runs, and the worker then replays the whole run (seconds at 4,000 events) while moves
        keep ending; the answers to starts and cancels it sent are such events, and they come within milliseconds."""
        # A `go` still on its way is one: the next run would count its move as running and wait forever for a move
        # that waits for its turn. (`_keep` forgets a request once it is answered.)
        if not workflow.all_handlers_finished() or self._go_signals:
            return False
        return not self._quiet or (not self._starting and not self._cancel_requests)

    async def _linger(self) -> bool:
        """Every move ended: stay open for retry-failed until closed or the linger time passes (False: end)."""
        self._changed = False
        try:
            await workflow.wait_condition(lambda: self._changed, timeout=timedelta(seconds=self._input.linger_seconds))
        except TimeoutError:
            return False
        return not self._close_requested

    async def _check(self) -> None:
        """Preflight every pending move (CampaignCheck children, each a part of the plan): blocked moves never
        start, sizes and host limits feed the planner."""
        indices = [i for i, s in enumerate(self._states) if s == MoveState.PENDING]
        parts = [indices[n : n + CHECK_CHILD_VMS] for n in range(0, len(indices), CHECK_CHILD_VMS)]
        cap = self._input.policy.max_migrations_per_host

        async def one(number: int, part: list[int]) -> CheckResult:
            result: CheckResult = await workflow.execute_child_workflow(
                CampaignCheckWorkflow.run,
                CheckInput(tuple(check_batches([self._moves[i] for i in part])), max_migrations_per_host=cap),
                id=f"{workflow.info().workflow_id}-check-{number}",
                task_queue=self._input.task_queue or workflow.info().task_queue,
            )
            return result

        results = await asyncio.gather(*(one(n, part) for n, part in enumerate(parts)))
        for part, result in zip(parts, results, strict=True):
            by_key = {(c.vm, c.source.casefold(), c.destination.casefold()): c for c in result.vms}
            for index in part:
                move = self._moves[index]
                check = by_key.get((move.vm, move.source.casefold(), move.destination.casefold()))
                if check is None:
                    continue
                if check.memory_bytes or check.disk_bytes:
                    self._moves[index] = CampaignMove(
                        vm=move.vm,
                        source=move.source,
                        destination=move.destination,
                        storage_path=move.storage_path,
                        priority=move.priority,
                        memory_bytes=check.memory_bytes or move.memory_bytes,
                        disk_bytes=check.disk_bytes or move.disk_bytes,
                        dirty_bytes_per_second=move.dirty_bytes_per_second,
                    )
                if check.blockers and not check.already_there:
                    self._set(index, MoveState.BLOCKED, "; ".join(check.blockers))
            for host, slots in result.host_slots.items():
                known = self._hosts.get(host.casefold())
                if known is None:
                    self._hosts[host.casefold()] = HostProfile(host, slots=slots)
                elif slots < known.slots:
                    self._hosts[host.casefold()] = HostProfile(known.host, slots, known.link_bits_per_second)

    # -- scheduling ---------------------------------------------------------------------------------------------
    def _advance_waves(self) -> None:
        """The next wave starts when every move of the current one ended; a wave with `pause` pauses the campaign
        once its failures reach the threshold."""
        while self._wave < len(self._input.waves):
            spec = self._input.waves[self._wave]
            failures = self._wave_failures(self._wave) - self._acknowledged_failures.get(self._wave, 0)
            if spec.on_failure == WaveFailurePolicy.PAUSE and failures >= spec.pause_after_failures:
                self._phase = CampaignPhase.PAUSED
                self._paused_reason = (
                    f"wave {spec.name}: {failures} move(s) failed (the wave pauses after {spec.pause_after_failures})"
                )
                return
            if self._open[self._wave]:
                return
            self._wave += 1

    def _paused(self) -> bool:
        return self._phase == CampaignPhase.PAUSED

    def _wave_members(self, wave: int) -> list[int]:
        # Computed once: every round asks for the current wave's moves, and a campaign has thousands.
        if not self._members:
            self._members = [[] for _ in self._input.waves]
            for index, of in enumerate(self._wave_of):
                self._members[of].append(index)
        return self._members[wave] if wave < len(self._members) else []

    def _wave_failures(self, wave: int) -> int:
        return self._failed[wave] if wave < len(self._failed) else 0

    async def _wait_for_window(self) -> bool:
        """Outside every window: wait (a durable timer) for the next one, or for a command. True when it waited."""
        windows = self._input.windows
        if not windows or open_window(workflow.now(), windows) is not None:
            self._window_opens = 0.0
            if self._phase == CampaignPhase.WAITING_FOR_WINDOW:
                self._phase = CampaignPhase.RUNNING
            return False
        self._phase = CampaignPhase.WAITING_FOR_WINDOW
        opening = next_opening(workflow.now(), windows)
        self._window_opens = opening.timestamp() if opening is not None else 0.0
        seconds = seconds_until_open(workflow.now(), windows)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._changed, timeout=timedelta(seconds=max(1.0, seconds)))
        if self._phase == CampaignPhase.WAITING_FOR_WINDOW:
            self._phase = CampaignPhase.RUNNING
        return True

    def _start_next(self) -> None:
        schedule = self._current_schedule()
        if not schedule.pending:
            return
        self._rounds += 1
        for move in schedule.choose(self._rounds):
            index = self._index_of[move.key]
            self._become(index, MoveState.RUNNING)
            self._started[index] = workflow.now().timestamp()
            self._running.add(index)
            if index in self._prepared:
                # Its run is there (preparing, or ready): it goes on; a task of this run already follows it.
                del self._prepared[index]
                self._keep(self._go_signals, asyncio.create_task(self._go(index)))
            else:
                self._tasks[index] = asyncio.create_task(self._run_move(index))
        if self._ahead:
            self._prepare_next(schedule)

    def _prepare_next(self, schedule: Schedule) -> None:
        """Start, ahead of their turn, the moves the planner would start next: those that the end of a running move
        would start (asked of the oldest first), within `prepare_ahead` moves per host. A move that is not the next
        after all waits a little longer, holding nothing; the planner's decisions stay its own."""
        budget = self._input.prepare_ahead
        touching: Counter[str] = Counter(h for i in self._prepared for h in self._hosts_of(i))
        oldest = sorted(self._running, key=lambda i: (self._started[i], i))
        for index in oldest[:_PREPARE_PEEKS]:
            key = self._moves[index].key
            if not schedule.is_running(key):
                continue
            for move in schedule.after(key, self._rounds + 1):
                candidate = self._index_of[move.key]
                if candidate in self._prepared or candidate in self._not_ahead:
                    continue
                hosts = self._hosts_of(candidate)
                if any(touching[h] >= budget for h in hosts):
                    continue
                touching.update(hosts)
                self._prepared[candidate] = None
                self._ahead_here.add(candidate)
                self._tasks[candidate] = asyncio.create_task(self._run_move(candidate, ahead=True))

    def _hosts_of(self, index: int) -> set[str]:
        move = self._moves[index]
        return {move.source.casefold(), move.destination.casefold()}

    async def _go(self, index: int) -> None:
        """Tell a move prepared ahead that its turn has come. A run that ended meanwhile cannot hear it: the task
        that follows the move reports its end."""
        if index in self._ahead_here:
            # Started by this run: its start may still be on its way, and a signal before it finds no run.
            await workflow.wait_condition(lambda: index in self._handles or index not in self._ahead_here)
            handle = self._handles.get(index)
            if handle is None:
                return
            with contextlib.suppress(FailureError):
                await handle.signal("go")
            return
        with contextlib.suppress(FailureError):
            await workflow.get_external_workflow_handle(self._moves[index].key).signal("go")

    def _current_schedule(self) -> Schedule:
        """The planner's state for the current wave, kept across decisions (rebuilt for a new wave, after
        retry-failed, and in each run): a decision then costs what changed since the last, not the whole plan,
        where one from scratch at 10,000 moves outlasted the workflow task of a replay that repeats hundreds."""
        built_for = (self._wave, self._generation)
        schedule = self._schedule
        if schedule is None or self._schedule_for != built_for:
            members = self._wave_members(self._wave)
            schedule = Schedule(
                [self._moves[i] for i in members if self._states[i] == MoveState.PENDING],
                [self._moves[i] for i in sorted(self._running)],
                self._hosts,
                scheduler=self._input.scheduler,
                seed=self._input.seed,
                rule=self._rule,
                model=self._model,
            )
            self._schedule, self._schedule_for = schedule, built_for
            return schedule
        for index in self._left_early:
            key = self._moves[index].key
            if schedule.is_pending(key):
                schedule.drop(key)
        self._left_early.clear()
        # Moves end in tasks of their own (and a cancel stops following another request's move): the slots of the
        # moves that are no longer running go back here, in one place.
        running = {self._moves[i].key for i in self._running}
        for key in sorted(schedule.running() - running):
            schedule.ended(key)
        return schedule

    # -- one move -----------------------------------------------------------------------------------------------
    async def _run_move(self, index: int, *, ahead: bool = False) -> None:
        try:
            await self._start_and_follow(index, ahead=ahead)
        finally:
            self._ahead_here.discard(index)
            self._handles.pop(index, None)

    async def _start_and_follow(self, index: int, *, ahead: bool) -> None:
        move = self._moves[index]
        request = MigrateVmInput(
            vm=move.vm,
            source=move.source,
            destination=move.destination,
            storage_path=move.storage_path,
            policy=self._input.policy,
            campaign=self._input.name,
            prepared_ahead=ahead,
        )
        try:
            handle = await self._start_child(move.key, request)
        except WorkflowAlreadyStartedError:
            if ahead and index in self._prepared:
                # Another request moves it: at its turn the campaign follows that run instead of preparing one.
                self._not_ahead.add(index)
                del self._prepared[index]
                self._tasks.pop(index, None)
                return
            # Running already (a ticket, another campaign, or this one before a restart): follow it, never start
            # a second.
            self._attached.add(index)
            await self._watch(index)
            return
        if ahead:
            self._handles[index] = handle
        try:
            result: MigrateVmResult = await handle
        except ChildWorkflowError as error:
            cancelled = is_cancelled_exception(error) or isinstance(_innermost(error), asyncio.CancelledError)
            self._finish(index, MoveState.CANCELLED if cancelled else MoveState.FAILED, _failure_text(error))
            return
        self._finish(index, MoveState.MOVED if result.moved else MoveState.ALREADY_THERE, "")

    async def _start_child(
        self, key: str, request: MigrateVmInput
    ) -> workflow.ChildWorkflowHandle[Any, MigrateVmResult]:
        self._starting += 1
        try:
            return await workflow.start_child_workflow(
                "MigrateVm",
                request,
                id=key,
                task_queue=self._input.task_queue or workflow.info().task_queue,
                result_type=MigrateVmResult,
                # The move outlives this run (continue-as-new) and even a cancelled campaign: a move is never cut
                # off mid-flight by its campaign closing; cancel reaches it explicitly.
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        finally:
            self._starting -= 1

    async def _watch(self, index: int) -> None:
        """Follow a move this run did not start to its end (the `watch_move` activity waits on its result)."""
        queue = self._watch_queue()
        try:
            watched: WatchMoveResult = await workflow.execute_activity(
                ActivityName.WATCH_MOVE,
                WatchMoveInput(self._moves[index].key),
                result_type=WatchMoveResult,
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=self._input.policy.move_timeout_seconds + 3600),
                heartbeat_timeout=_WATCH_HEARTBEAT,
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5)),
            )
        except ActivityError as error:
            self._finish(index, MoveState.FAILED, _failure_text(error))
            return
        self._finish(index, watched.state, watched.error)

    def _watch_queue(self) -> str | None:
        """The watch's task queue: its own (`watch_task_queue`), or, for runs before the patch, the campaign's."""
        if self._watches_apart is None:
            self._watches_apart = workflow.patched(_PATCH_WATCH_QUEUE)
        return watch_task_queue(workflow.info().task_queue) if self._watches_apart else None

    def _finish(self, index: int, state: MoveState, error: str) -> None:
        if index in self._prepared:
            # Ended before its turn (failed while preparing, cancelled, or its VM had moved already).
            del self._prepared[index]
            self._left_early.append(index)
            self._started[index] = self._started[index] or workflow.now().timestamp()
            if state == MoveState.CANCELLED:
                error = (
                    f"cancelled while prepared ahead, before its turn: nothing moved, its compensations ran ({error})"
                )
        self._set(index, state, error)
        self._running.discard(index)
        self._tasks.pop(index, None)
        self._wake()

    def _set(self, index: int, state: MoveState, error: str) -> None:
        self._become(index, state)
        if state.ended:
            self._ended[index] = workflow.now().timestamp()
        if error:
            self._errors[index] = error
        else:
            self._errors.pop(index, None)

    def _become(self, index: int, state: MoveState) -> None:
        """Every change of a move's state goes here, so each wave's counts stay exact: the loop asks them after
        every move's end, and counting 10,000 states each time cost milliseconds a decision."""
        wave = self._wave_of[index]
        before = self._states[index]
        self._open[wave] += (not state.ended) - (not before.ended)
        self._failed[wave] += (state == MoveState.FAILED) - (before == MoveState.FAILED)
        self._states[index] = state

    def _wake(self) -> None:
        self._changed = True
        if self._cancel_requested:
            for index in sorted(self._running):
                if index in self._attached:
                    # Another request's move: the campaign stops following it and leaves it running.
                    task = self._tasks.pop(index, None)
                    if task is not None:
                        task.cancel()
                    self._running.discard(index)
                    self._set(
                        index,
                        MoveState.CANCELLED,
                        f"left running: {self._moves[index].key} was started by "
                        "another request, which the campaign's cancel does not stop",
                    )
                    continue
                self._cancel_move(index)
            for index in sorted(self._prepared):
                self._cancel_move(index)

    def _cancel_move(self, index: int) -> None:
        key = self._moves[index].key
        if key in self._cancelling:
            return
        self._cancelling.add(key)
        self._keep(self._cancel_requests, asyncio.create_task(workflow.get_external_workflow_handle(key).cancel()))

    @staticmethod
    def _keep(tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        """Hold a reference to `task` until it ends (the loop keeps only weak ones), and not after."""
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # -- continue-as-new ----------------------------------------------------------------------------------------
    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._input.history_limit

    def _continued(self) -> CampaignInput:
        epoch = self._epoch
        carry = CampaignCarry(
            states="".join(MOVE_STATE_CODES[s] for s in self._states),
            started=tuple(int(s - epoch) + 1 if s else 0 for s in self._started),
            ended=tuple(int(e - epoch) + 1 if e else 0 for e in self._ended),
            errors=dict(self._errors),
            attached=tuple(sorted(self._attached)),
            phase=self._phase,
            wave=self._wave,
            paused_reason=self._paused_reason,
            runs=self._runs + 1,
            rounds=self._rounds,
            epoch=epoch,
            prepared=tuple(sorted(self._prepared)),
            planner_rule=self._rule,
        )
        packed = self._input.moves
        return CampaignInput(
            name=self._input.name,
            waves=self._input.waves,
            moves=packed,
            windows=self._input.windows,
            policy=self._input.policy,
            hosts=tuple(self._hosts.values()),
            scheduler=self._input.scheduler,
            seed=self._input.seed,
            task_queue=self._input.task_queue,
            check=False,
            linger_seconds=self._input.linger_seconds,
            history_limit=self._input.history_limit,
            carry=carry,
            prepare_ahead=self._input.prepare_ahead,
            setup_seconds=self._input.setup_seconds,
        )

    # -- figures ------------------------------------------------------------------------------------------------
    async def _forecast(self) -> None:
        """The planner's forecast of the moves left (pending and in flight, the latter as if from their start):
        a local activity, since the simulation of thousands of moves outlasts what a workflow task may take."""
        left = [i for i, s in enumerate(self._states) if s in (MoveState.PENDING, MoveState.RUNNING)]
        if not left:
            return
        waves = tuple(CampaignWave(spec.name, ()) for spec in self._input.waves)
        grouped = [
            replace(wave, moves=tuple(self._moves[i] for i in left if self._wave_of[i] == n))
            for n, wave in enumerate(waves)
        ]
        summary: ForecastSummary = await workflow.execute_local_activity(
            ActivityName.FORECAST_CAMPAIGN,
            ForecastInput(
                moves=pack_moves(tuple(grouped)),
                hosts=tuple(self._hosts.values()),
                scheduler=self._input.scheduler,
                seed=self._input.seed,
                rule=self._carried_rule,
                performance=self._performance,
                setup_seconds=self._input.setup_seconds,
            ),
            result_type=ForecastSummary,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
        self._forecast_makespan = summary.makespan_seconds
        # The rule whose simulated campaign ends first decides this run's moves (read back from the history on replay).
        self._rule = summary.planner_rule
        # Work advances only inside the windows: the end is where the makespan's seconds of open window run out.
        self._forecast_end = end_inside_windows(
            workflow.now(), self._input.windows, summary.makespan_seconds
        ).timestamp()

    def _counts(self) -> CampaignCounts:
        tally = dict.fromkeys(MoveState, 0)
        for state in self._states:
            tally[state] += 1
        return CampaignCounts(
            pending=tally[MoveState.PENDING],
            running=tally[MoveState.RUNNING],
            moved=tally[MoveState.MOVED],
            already_there=tally[MoveState.ALREADY_THERE],
            blocked=tally[MoveState.BLOCKED],
            failed=tally[MoveState.FAILED],
            cancelled=tally[MoveState.CANCELLED],
        )

    def _bytes(self, index: int) -> int:
        move = self._moves[index]
        return move.memory_bytes + move.disk_bytes

    def _record(self, index: int) -> MoveRecord:
        move = self._moves[index]
        return MoveRecord(
            index=index,
            vm=move.vm,
            source=move.source,
            destination=move.destination,
            wave=self._wave_of[index],
            state=self._states[index],
            started=self._started[index],
            ended=self._ended[index],
            error=self._errors.get(index, ""),
            bytes=self._bytes(index),
            attached=index in self._attached,
        )
