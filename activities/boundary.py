"""The one error boundary between the engine's activities and Temporal: an activity inbound interceptor.

Activities and the adapters under them (activities/hosts.py, activities/directory.py) raise the engine's own
errors (activities/errors.py: configuration, transient, admission, unknown). Temporal only understands an
`ApplicationError`: its `type` is what a workflow matches on, `non_retryable` decides whether the activity's
retry policy runs at all, and its message and details are written to the workflow history. `ErrorBoundary`,
registered once in the worker, makes that translation for every activity, so no activity converts by hand:

- an `SnlmError` leaves as `error.to_application_error()`: type `error_type`, retryable as its kind says
  (configuration and admission never retried; transient and unknown retried by the policy), the remedy and
  the details in the failure's details, the message as `SnlmError` builds it;
- it leaves without a cause and without a context. Temporal's failure converter records `__cause__`, and
  `__context__` unless suppressed, as the failure's cause chain, each link with its message and stack trace;
  the adapters chain the protocol's exception (a pypsrp, requests or ldap3 error whose text can echo what was
  sent), so a chained error would carry into the history what the engine's message deliberately leaves out
  (DESIGN.md invariant 1). The converted error is raised after the `except` block, `from None`, so it holds no
  reference to the original at all;
- anything else passes through unchanged: `ApplicationError` an activity raised itself, a cancellation
  (`asyncio.CancelledError` / `temporalio.exceptions.CancelledError`, which the SDK must see as it was to report
  the activity cancelled), and a plain exception, which Temporal reports as a retryable failure of its class.

Synchronous activities run on the worker's thread pool, but the SDK awaits them from its inbound interceptor
chain on the event loop, so their exceptions reach `execute_activity` here like those of `async def` ones.
"""

from __future__ import annotations

from typing import Any

from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.errors import SnlmError

__all__ = ["ErrorBoundary"]


class ErrorBoundary(Interceptor):
    """Turns the engine's errors into Temporal's `ApplicationError` for every activity of the worker.

    Register it with `Worker(..., interceptors=[ErrorBoundary()])`.
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityErrorBoundary(next)


class _ActivityErrorBoundary(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await self.next.execute_activity(input)
        except SnlmError as error:
            failure = error.to_application_error()
        # Raised outside the handler so the ApplicationError has no __context__ pointing at the original.
        raise failure from None
