"""The error boundary (activities/boundary.py) in a real worker on the time-skipping test server.

A tiny workflow calls test activities that raise each of the engine's error classes, a plain exception and an
`ApplicationError` of their own, as synchronous activities on a thread pool (as the real ones are) and as
`async def` ones. What the workflow's caller and the history see shows the boundary: the type, message, remedy
and details as `SnlmError` builds them; one attempt for configuration and admission, retries for transient
and unknown; no chained cause (each raised error chains an exception whose text holds a secret, and the
history never holds it); everything else unchanged, a cancellation included.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.worker import Interceptor, Worker

with workflow.unsafe.imports_passed_through():
    import pytest
    import pytest_asyncio
    from temporalio.testing import WorkflowEnvironment

    from activities.boundary import ErrorBoundary
    from activities.errors import (
        AdmissionError,
        ConfigurationError,
        SnlmError,
        TransientError,
        UnknownError,
    )

SECRET = "Pa55-in-a-chained-exception"
MESSAGE = "HV01$ may not be changed."
REMEDY = "grant the bind account write access to HV01$."
DETAILS = {"account": "HV01$", "uri": "ldaps://dc1.corp.example"}
SNLM_ERRORS: dict[str, type[SnlmError]] = {
    "configuration": ConfigurationError,
    "transient": TransientError,
    "admission": AdmissionError,
    "unknown": UnknownError,
}


@dataclass(frozen=True)
class Trial:
    """What the test activity raises (`error`), under which name it runs, and when it stops raising."""

    activity: str
    error: str
    maximum_attempts: int
    succeed_on_attempt: int = 0  # 0: never


@workflow.defn
class BoundaryWorkflow:
    @workflow.run
    async def run(self, trial: Trial) -> int:
        attempt: int = await workflow.execute_activity(
            trial.activity,
            trial,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=10),
                backoff_coefficient=1.0,
                maximum_attempts=trial.maximum_attempts,
            ),
            result_type=int,
        )
        return attempt


@workflow.defn
class CancelWorkflow:
    """Starts an activity that runs until cancelled, and cancels it when told."""

    def __init__(self) -> None:
        self._cancel = False

    @workflow.signal
    def cancel_activity(self) -> None:
        self._cancel = True

    @workflow.run
    async def run(self, name: str) -> str:
        handle = workflow.start_activity(
            name,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=30),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await workflow.wait_condition(lambda: self._cancel)
        handle.cancel()
        try:
            await handle
        except ActivityError as error:
            return type(error.cause).__name__
        return "completed"


def _error(kind: str) -> Exception:
    if kind in SNLM_ERRORS:
        return SNLM_ERRORS[kind](MESSAGE, error_type=f"Test{kind.title()}", remedy=REMEDY, details=DETAILS)
    if kind == "application":
        return ApplicationError("raised as it is", {"own": True}, type="OwnType", non_retryable=True)
    return ValueError("not one of the engine's errors")


class Raisers:
    """The test activities; `attempts` records the last attempt of each workflow's activity."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.started = threading.Event()
        self.cancelled: list[str] = []

    def _attempt(self, trial: Trial) -> int:
        info = activity.info()
        assert info.workflow_id is not None  # always called from a workflow here
        self.attempts[info.workflow_id] = info.attempt
        if trial.succeed_on_attempt and info.attempt >= trial.succeed_on_attempt:
            return info.attempt
        try:
            # What an adapter does: a protocol exception whose text may echo what was sent, chained.
            raise OSError(f"the far side echoed {SECRET}")
        except OSError as exc:
            raise _error(trial.error) from exc

    @activity.defn(name="raise_sync")
    def raise_sync(self, trial: Trial) -> int:
        return self._attempt(trial)

    @activity.defn(name="raise_async")
    async def raise_async(self, trial: Trial) -> int:
        return self._attempt(trial)

    @activity.defn(name="wait_sync")
    def wait_sync(self) -> None:
        self.started.set()
        try:
            while True:
                activity.heartbeat()
                time.sleep(0.02)
        except CancelledError:
            self.cancelled.append("wait_sync")
            raise

    @activity.defn(name="wait_async")
    async def wait_async(self) -> None:
        self.started.set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            self.cancelled.append("wait_async")
            raise


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


@dataclass
class Bench:
    client: Client
    task_queue: str
    raisers: Raisers
    executor: ThreadPoolExecutor

    def worker(self, interceptors: list[Interceptor]) -> Worker:
        return Worker(
            self.client,
            task_queue=self.task_queue,
            workflows=[BoundaryWorkflow, CancelWorkflow],
            activities=[
                self.raisers.raise_sync,
                self.raisers.raise_async,
                self.raisers.wait_sync,
                self.raisers.wait_async,
            ],
            activity_executor=self.executor,
            interceptors=interceptors,
            # A cancel reaches an activity through its heartbeats: let them through at once.
            max_heartbeat_throttle_interval=timedelta(milliseconds=50),
            default_heartbeat_throttle_interval=timedelta(milliseconds=50),
        )

    async def run(self, trial: Trial) -> WorkflowHandle[Any, int]:
        return await self.client.start_workflow(
            BoundaryWorkflow.run, trial, id=f"boundary-{uuid.uuid4()}", task_queue=self.task_queue
        )


@pytest_asyncio.fixture
async def bench(time_skipping_env: WorkflowEnvironment, task_queue: str, executor: ThreadPoolExecutor) -> Bench:
    return Bench(time_skipping_env.client, task_queue, Raisers(), executor)


@pytest_asyncio.fixture
async def bounded(bench: Bench) -> AsyncIterator[Bench]:
    """A worker with the boundary, as the real worker registers it."""
    async with bench.worker([ErrorBoundary()]):
        yield bench


async def _activity_failure(handle: WorkflowHandle[Any, int]) -> tuple[ActivityError, ApplicationError]:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    return activity_error, cause


async def _history(handle: WorkflowHandle[Any, int]) -> str:
    history = await handle.fetch_history()
    return history.to_json()


ACTIVITIES = pytest.mark.parametrize("name", ["raise_sync", "raise_async"])


@ACTIVITIES
@pytest.mark.parametrize("kind", ["configuration", "admission"])
async def test_a_non_retryable_error_fails_at_once_with_its_type_remedy_and_details(
    bounded: Bench, name: str, kind: str
) -> None:
    handle = await bounded.run(Trial(name, kind, maximum_attempts=5))
    activity_error, cause = await _activity_failure(handle)

    assert bounded.raisers.attempts[handle.id] == 1
    assert activity_error.retry_state is RetryState.NON_RETRYABLE_FAILURE
    assert cause.type == f"Test{kind.title()}"
    assert cause.non_retryable
    assert cause.message == f"{MESSAGE} Remedy: {REMEDY}"
    assert cause.details == ({"kind": kind, "error_type": f"Test{kind.title()}", "remedy": REMEDY, **DETAILS},)
    # Nothing chained: the protocol exception under the engine's error stays in the worker.
    assert cause.cause is None
    assert cause.failure is not None
    assert not cause.failure.HasField("cause")
    assert SECRET not in await _history(handle)


@ACTIVITIES
async def test_a_transient_error_is_retried_until_the_activity_succeeds(bounded: Bench, name: str) -> None:
    handle = await bounded.run(Trial(name, "transient", maximum_attempts=5, succeed_on_attempt=3))

    assert await handle.result() == 3  # the attempt that succeeded
    assert bounded.raisers.attempts[handle.id] == 3


@ACTIVITIES
async def test_an_unknown_error_is_retried_as_the_policy_allows_then_surfaced(bounded: Bench, name: str) -> None:
    handle = await bounded.run(Trial(name, "unknown", maximum_attempts=3))
    activity_error, cause = await _activity_failure(handle)

    assert bounded.raisers.attempts[handle.id] == 3
    assert activity_error.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert cause.type == "TestUnknown"
    assert not cause.non_retryable
    assert cause.message == f"{MESSAGE} Remedy: {REMEDY}"
    assert cause.details[0]["kind"] == "unknown"
    assert cause.cause is None
    assert SECRET not in await _history(handle)


@ACTIVITIES
async def test_a_plain_exception_passes_through_as_a_retryable_failure_of_its_class(bounded: Bench, name: str) -> None:
    handle = await bounded.run(Trial(name, "value", maximum_attempts=2))
    activity_error, cause = await _activity_failure(handle)

    assert bounded.raisers.attempts[handle.id] == 2
    assert activity_error.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert cause.type == "ValueError"
    assert cause.message == "not one of the engine's errors"
    assert not cause.non_retryable
    assert isinstance(cause.cause, ApplicationError)  # its own chain is kept, as Temporal keeps any
    assert cause.cause.type == "OSError"


@ACTIVITIES
async def test_an_application_error_passes_through_unchanged(bounded: Bench, name: str) -> None:
    handle = await bounded.run(Trial(name, "application", maximum_attempts=5))
    activity_error, cause = await _activity_failure(handle)

    assert bounded.raisers.attempts[handle.id] == 1
    assert activity_error.retry_state is RetryState.NON_RETRYABLE_FAILURE
    assert cause.type == "OwnType"
    assert cause.message == "raised as it is"
    assert cause.details == ({"own": True},)


@pytest.mark.parametrize("name", ["wait_sync", "wait_async"])
async def test_a_cancellation_passes_through(bounded: Bench, name: str) -> None:
    handle = await bounded.client.start_workflow(
        CancelWorkflow.run, name, id=f"boundary-cancel-{uuid.uuid4()}", task_queue=bounded.task_queue
    )
    assert await asyncio.to_thread(bounded.raisers.started.wait, 30)
    await handle.signal(CancelWorkflow.cancel_activity)

    assert await handle.result() == "CancelledError"
    assert bounded.raisers.cancelled == [name]
    history = await handle.fetch_history()
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED in {event.event_type for event in history.events}


async def test_without_the_boundary_the_engine_error_is_retried_and_leaks_its_chain(bench: Bench) -> None:
    # The control: what the boundary prevents, so the assertions above cannot pass by accident.
    async with bench.worker([]):
        handle = await bench.run(Trial("raise_sync", "configuration", maximum_attempts=2))
        activity_error, cause = await _activity_failure(handle)

    assert bench.raisers.attempts[handle.id] == 2  # a configuration error, retried
    assert activity_error.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert cause.type == "ConfigurationError"
    assert SECRET in await _history(handle)
