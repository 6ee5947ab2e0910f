"""SurveyHosts: what several hosts hold and have room for, read-only, for `snlm plan evacuate|rebalance`.

One `survey_host` activity per host, run concurrently (at most SURVEY_PARALLEL at once, so that a survey of a
whole inventory leaves the worker's activity slots to the moves), results in the order the hosts were asked. A
host that stays unreachable through the retries fails the survey with that host's error: a plan made without one
of its hosts would place VMs on a picture that is not the estate's.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import ActivityName, HostRef, HostSurvey, SurveyInput, SurveyResult

__all__ = ["SURVEY_PARALLEL", "SurveyHostsWorkflow"]

# Hosts surveyed at once: each survey holds one of the worker's activity slots and one session of its host.
SURVEY_PARALLEL = 16
# A survey is two reads: retried as the saga retries its reads (transient errors with backoff, configuration
# errors, non-retryable, not at all).
_QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)
_SURVEY_TIMEOUT = timedelta(minutes=10)
# The activity heartbeats between its two round trips; a read that alone takes this long is a sick host.
_SURVEY_HEARTBEAT = timedelta(minutes=2)


@workflow.defn(name="SurveyHosts")
class SurveyHostsWorkflow:
    """Survey every host of the input (one activity each, concurrently) and return the surveys in input order."""

    @workflow.run
    async def run(self, input: SurveyInput) -> SurveyResult:
        limit = asyncio.Semaphore(SURVEY_PARALLEL)

        async def one(host: str) -> HostSurvey:
            async with limit:
                survey: HostSurvey = await workflow.execute_activity(
                    ActivityName.SURVEY_HOST,
                    HostRef(host),
                    result_type=HostSurvey,
                    start_to_close_timeout=_SURVEY_TIMEOUT,
                    heartbeat_timeout=_SURVEY_HEARTBEAT,
                    retry_policy=_QUICK_RETRY,
                )
                return survey

        surveys = await asyncio.gather(*(one(host) for host in input.hosts))
        return SurveyResult(tuple(surveys))
