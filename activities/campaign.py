"""Activities of a campaign that talk to Temporal itself: following a move the campaign did not start.

A campaign starts each move as its child; a move that was already running under its id (a ticket, another
campaign), or that an earlier run of the campaign started before it continued as new, is no child of this run.
`watch_move` waits for that run's result with the worker's client and tells the campaign how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError, RPCStatusCode

from workflows.contracts import (
    ActivityName,
    ForecastInput,
    ForecastSummary,
    MigrateVmResult,
    MoveState,
    WatchMoveInput,
    WatchMoveResult,
)
from workflows.scheduling import UNCALIBRATED_MODEL, simulate, transfer_model, with_setup

# A heartbeat well inside the campaign's heartbeat timeout for the watch (5 min): the watch costs a few actions an
# hour, and a dead worker's watch is retried elsewhere within minutes.
HEARTBEAT_SECONDS = 60.0


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


class CampaignActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=ActivityName.WATCH_MOVE)
    async def watch_move(self, input: WatchMoveInput) -> WatchMoveResult:
        """The end of the MigrateVm run under `input.workflow_id` (the latest run: a retried or reset move
        counts by its last run)."""
        handle = self._client.get_workflow_handle(input.workflow_id, result_type=MigrateVmResult)
        beating = asyncio.create_task(self._heartbeat())
        try:
            result = await handle.result(follow_runs=True, rpc_timeout=timedelta(minutes=5))
        except WorkflowFailureError as error:
            cause = error.cause
            if isinstance(cause, CancelledError):
                return WatchMoveResult(MoveState.CANCELLED, "cancelled")
            if isinstance(cause, TerminatedError):
                return WatchMoveResult(MoveState.FAILED, f"terminated: {cause.message}")
            if isinstance(cause, TimeoutError):
                return WatchMoveResult(MoveState.FAILED, f"timed out: {cause.message}")
            inner = _innermost(cause)
            kind = inner.type if isinstance(inner, ApplicationError) and inner.type else type(inner).__name__
            message = inner.message if isinstance(inner, ApplicationError) else str(inner)
            return WatchMoveResult(MoveState.FAILED, f"{kind}: {message}"[:2000])
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise ApplicationError(
                    f"no move {input.workflow_id} in this namespace", type="MoveNotFound", non_retryable=True
                ) from error
            raise
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        return WatchMoveResult(MoveState.MOVED if result.moved else MoveState.ALREADY_THERE)

    @staticmethod
    async def _heartbeat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_SECONDS)


@activity.defn(name=ActivityName.FORECAST_CAMPAIGN)
def forecast_campaign(input: ForecastInput) -> ForecastSummary:
    """The planner's simulation of the moves left, run as a local activity: at 10,000 moves it takes seconds, longer
    than a workflow task may block, and only its result belongs in the campaign's history (with the planner's rule
    that ends soonest, which the campaign then decides with: a replay reads it from there)."""
    moves = [input.moves.move(i) for i in range(len(input.moves))]
    waves: dict[int, list[str]] = {}
    for index, move in enumerate(moves):
        waves.setdefault(input.moves.wave[index], []).append(move.key)
    order = sorted(waves)
    forecast = simulate(
        moves,
        {h.host.casefold(): h for h in input.hosts},
        scheduler=input.scheduler,
        seed=input.seed,
        waves=[waves[w] for w in order],
        rule=input.rule,
        model=with_setup(
            UNCALIBRATED_MODEL if input.performance is None else transfer_model(input.performance), input.setup_seconds
        ),
    )
    # Waves by their index in the campaign (the simulation numbers only the waves it was given).
    ends = dict(zip(order, forecast.waves, strict=False))
    return ForecastSummary(
        makespan_seconds=forecast.makespan_seconds,
        wave_ends=tuple(ends.get(w, 0.0) for w in range(max(order) + 1)) if order else (),
        host_ends={host: figures.last_end for host, figures in forecast.hosts.items()},
        planner_rule=forecast.rule,
    )
