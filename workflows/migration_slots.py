"""MigrationSlots: the entity workflow that grants a move the slots of both its hosts together.

A host refuses a move beyond its MaximumVirtualMachineMigrations (event 21501), so every move first takes a slot on
its source and its destination. Taken host by host (workflows/host_slots.py, the per-host entities that runs started
before this existed still use), a move held one host's slot idle while it queued for the other's. Here every host's
slots live in one book (workflows/slot_book.py: the pure grant rule) and a move is granted both slots in one step.

Two ways in, on the same book:
- clients (operators, tests, later the campaign's tools) use the updates `acquire` (long-poll up to `wait_seconds`,
  then "not yet" with the queue place, the request staying queued), `release`, `renew`, `set_capacity`, and the
  query `status`;
- workflows (the MigrateVm saga) use `acquire_slots` below, which speaks signals both ways: `request_pair` with the
  caller's workflow id as `reply_to`, the grant signalled back, `release_pair` when done.

Leases: a client holder renews its lease or loses the slots when it runs out. A workflow holder renews nothing: when
its lease runs out the entity signals the grant to it again; the signal fails only when that workflow has ended
(completed, terminated, reset away), and then its slots are reclaimed at once, otherwise the lease starts over. So
a move pays one signal per lease, not a timer and a signal per renewal, a run terminated mid-move frees its hosts
within one lease, and a move whose workers are down for hours (its host job still copying) keeps them.

Runs: the book never goes quiet in a campaign (every move signals it twice), so it continues as new every
MIGRATION_SLOTS_RUN_EVENTS events in one task that waits on nothing, carrying the grants it had still to send. The
server refuses that task when a signal came in during it, and then turns signals away (they are retried) while the
retry runs: a short run replays fast enough for the retry to succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import (
        MIGRATION_SLOTS_RUN_EVENTS,
        MIGRATION_SLOTS_TASK_TIMEOUT,
        SLOT_CAPACITY_INVALID,
        SLOT_NOT_HELD,
        SLOT_REQUEST_INVALID,
        SLOT_WAIT_TIMEOUT,
        HostLimit,
        MigrationSlotsInput,
        MigrationSlotsStatus,
        PairGrant,
        PairHolder,
        PairRequest,
        ReleaseSlotRequest,
        ReleaseSlotResult,
        RenewSlotRequest,
        SetHostCapacityRequest,
        migration_slots_workflow_id,
    )
    from workflows.slot_book import SlotBook, pair_hosts

REQUEST_PAIR_SIGNAL = "request_pair"
RELEASE_PAIR_SIGNAL = "release_pair"
PAIR_GRANTED_SIGNAL = "snlm_pair_granted"

# An idle entity still wakes up now and then: every wait in the workflow is bounded.
_IDLE_TICK = timedelta(hours=1)
# The wake-up timer stands across the loop's passes while its deadline still holds (a signal ends a wait without
# cancelling it): a move's request and release cost no timer each, where each pass started one and a signal
# cancelled it (four events and two actions per move).
_PATCH_STANDING_TIMER = "slots-standing-timer"
# Runs of MIGRATION_SLOTS_RUN_EVENTS at most with a 60 s task timeout, and a hand-over that waits on nothing: the grants
# still to signal go to the next run, so the task that continues as new is the one that decided to, and one refused
# for a signal that came in meanwhile succeeds on its retry (the server turns signals away while it runs).
_PATCH_SHORT_RUNS = "slots-short-runs"


def _woken_or_fired(woken: Callable[[], bool], timer: asyncio.Future[None]) -> bool:
    return woken() or timer.done()


@workflow.defn(name="MigrationSlots")
class MigrationSlotsWorkflow:
    """Grants moves the slots of both their hosts together, never more on a host than its capacity."""

    @workflow.init
    def __init__(self, input: MigrationSlotsInput) -> None:
        # Built here, not in `run`: on a new run the first signals and updates are handled before `run` starts.
        self._book = SlotBook(
            input.hosts, input.holders, input.waiters, peaks=input.peaks, bypass_limit=input.bypass_limit
        )
        self._outbox: dict[str, PairHolder] = {}  # grants to signal to workflow holders, by holder id
        for holder_id in input.resend:
            holder = self._book.holder(holder_id)
            if holder is not None and holder.reply_to:
                self._outbox[holder_id] = holder
        # Grants handed over by the previous run: this run sends them before it hands over in turn, so a flood of
        # signals that fills each new run at once cannot pass them on from run to run unsent.
        self._owed = frozenset(self._outbox)
        self._changed = False
        self._draining = False
        self._limit = 0  # continue as new past this history length (0: when the SDK suggests it)
        self._short = False  # a run of _PATCH_SHORT_RUNS
        # A signal or update reached this run: a run that heard none has nothing to shed, and handing it over would
        # only start the next one as long (a limit below a run's first task would chain runs without end).
        self._heard = False

    @workflow.run
    async def run(self, input: MigrationSlotsInput) -> None:
        standing = workflow.patched(_PATCH_STANDING_TIMER)
        self._short = workflow.patched(_PATCH_SHORT_RUNS)
        self._limit = input.continue_as_new_after_events or (MIGRATION_SLOTS_RUN_EVENTS if self._short else 0)
        timer: asyncio.Future[None] | None = None
        timer_at = math.inf

        def woken() -> bool:
            return self._changed or bool(self._outbox) or self._over()

        while True:
            self._settle()
            if self._handing_over():
                break
            await self._send_grants()
            await self._check_expired()
            if self._over():
                break
            self._changed = False
            if not standing:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(woken, timeout=self._next_wake())
                continue
            # A new timer only when none stands or the next wake-up comes sooner than the standing one (a lease
            # shorter than the others'); one that fires early costs a pass of this loop, nothing else.
            wake = self._next_wake()
            if timer is None or timer.done() or self._now() + wake < timer_at:
                if timer is not None and not timer.done():
                    timer.cancel()
                timer, timer_at = asyncio.ensure_future(asyncio.sleep(wake)), self._now() + wake
            await workflow.wait_condition(functools.partial(_woken_or_fired, woken, timer))
        # Let handlers end first (waiting acquires answer "not yet"; their callers ask the next run), then carry
        # the whole book. Every handler here ends in this same task, so the hand-over is one task with no command
        # to wait on: grants still to signal are carried, not sent (a signal awaited here would take another task,
        # and each one is a window for a signal to come in and the server to refuse the hand-over).
        self._draining = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._settle()
        if not self._short:
            await self._send_grants()
        book = self._book
        workflow.continue_as_new(
            MigrationSlotsInput(
                hosts=book.hosts,
                holders=book.holders,
                waiters=book.waiters,
                peaks=book.peaks(),
                bypass_limit=book.bypass_limit,
                continue_as_new_after_events=input.continue_as_new_after_events,
                resend=tuple(self._outbox) if self._short else (),
            ),
            task_timeout=MIGRATION_SLOTS_TASK_TIMEOUT if self._short else None,
        )

    # -- updates and queries (clients) ----------------------------------------------------------------------
    @workflow.update
    async def acquire(self, request: PairRequest) -> PairGrant:
        """Take a slot on each of the request's hosts together, waiting at most `wait_seconds`."""
        self._heard = True
        self._request(request)
        holder_id = request.holder_id
        if self._book.holder(holder_id) is None:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        self._book.holder(holder_id) is not None
                        or self._draining
                        or not self._book.is_waiting(holder_id)
                    ),
                    timeout=request.wait_seconds,
                )
        return self._book.answer(holder_id)

    @acquire.validator
    def _validate_acquire(self, request: PairRequest) -> None:
        _check_request(request)

    @workflow.update
    def release(self, request: ReleaseSlotRequest) -> ReleaseSlotResult:
        """Give the slots back or leave the queue; releasing twice, or after expiry, does nothing."""
        self._heard = True
        return self._release(request.holder_id)

    @workflow.update
    def renew(self, request: RenewSlotRequest) -> PairGrant:
        """Extend a held lease from now; SlotNotHeld when it already ran out or was released."""
        self._heard = True
        self._reclaim_client_holders()  # an expired lease must not be revived
        if self._book.renew(request.holder_id, self._now(), request.lease_seconds) is None:
            raise ApplicationError(f"{request.holder_id} holds no migration slots", type=SLOT_NOT_HELD)
        self._changed = True
        return self._book.answer(request.holder_id)

    @workflow.update
    def set_capacity(self, request: SetHostCapacityRequest) -> MigrationSlotsStatus:
        """Set a host's capacity (0: its own limit); holders above a lowered capacity keep their slots."""
        self._heard = True
        self._book.set_capacity(request.host, request.capacity, request.host_limit)
        self._changed = True
        self._settle()
        return self._book.status()

    @set_capacity.validator
    def _validate_set_capacity(self, request: SetHostCapacityRequest) -> None:
        limit = request.host_limit or next(
            (h.host_limit for h in self._book.hosts if h.host.casefold() == request.host.casefold()), 0
        )
        if not request.host or limit < 1 or not 0 <= request.capacity <= limit:
            raise ApplicationError(
                f"capacity {request.capacity} of {request.host or '(no host)'} must be between 1 and the host's "
                f"limit ({limit or 'unknown: give host_limit'}), or 0 for the limit itself",
                type=SLOT_CAPACITY_INVALID,
                non_retryable=True,
            )

    @workflow.query
    def status(self) -> MigrationSlotsStatus:
        return self._book.status()

    # -- signals (workflow callers, see acquire_slots) -------------------------------------------------------
    @workflow.signal(name=REQUEST_PAIR_SIGNAL)
    def request_pair(self, request: PairRequest) -> None:
        self._heard = True
        try:
            _check_request(request)
        except ApplicationError as error:
            workflow.logger.warning("ignoring slot request: %s", error)
            return
        self._request(request)
        holder = self._book.holder(request.holder_id)
        if holder is not None and holder.reply_to:
            # A repeated request from a holder: answer again (the caller may have been reset since the grant).
            self._outbox[holder.holder_id] = holder

    @workflow.signal(name=RELEASE_PAIR_SIGNAL)
    def release_pair(self, request: ReleaseSlotRequest) -> None:
        self._heard = True
        self._release(request.holder_id)

    # -- state ----------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return workflow.now().timestamp()

    def _request(self, request: PairRequest) -> None:
        if self._book.request(request, self._now()):
            self._changed = True
            self._settle()

    def _release(self, holder_id: str) -> ReleaseSlotResult:
        released = self._book.release(holder_id)
        self._outbox.pop(holder_id, None)
        if released.released or released.dequeued:
            self._changed = True
            self._settle()
        return ReleaseSlotResult(released=released.released, dequeued=released.dequeued)

    def _settle(self) -> None:
        self._reclaim_client_holders()
        for holder in self._book.settle(self._now()):
            self._changed = True
            if holder.reply_to:
                self._outbox[holder.holder_id] = holder

    def _reclaim_client_holders(self) -> None:
        for holder in self._book.expired(self._now()):
            if not holder.reply_to:
                workflow.logger.info("lease of %s ran out: slots on %s reclaimed", holder.holder_id, holder.hosts)
                self._book.release(holder.holder_id)
                self._changed = True

    async def _check_expired(self) -> None:
        """Workflow holders whose lease ran out: re-signal the grant; a holder that has ended loses its slots."""
        for holder in self._book.expired(self._now()):
            if holder.reply_to and holder.holder_id not in self._outbox:
                renewed = self._book.renew(holder.holder_id, self._now())
                if renewed is not None:
                    self._outbox[holder.holder_id] = renewed
        await self._send_grants()

    def _next_wake(self) -> float:
        wake = _IDLE_TICK.total_seconds()
        soonest = self._book.next_expiry()
        if soonest is not None:
            wake = min(wake, soonest - self._now())
        return max(wake, 0.001)

    async def _send_grants(self) -> None:
        while self._outbox and not self._handing_over():
            batch = list(self._outbox.values())
            self._outbox.clear()
            results = await asyncio.gather(
                *(
                    workflow.get_external_workflow_handle(holder.reply_to).signal(
                        PAIR_GRANTED_SIGNAL, self._book.answer(holder.holder_id)
                    )
                    for holder in batch
                ),
                return_exceptions=True,
            )
            for holder, result in zip(batch, results, strict=True):
                if isinstance(result, FailureError):
                    # The holder's workflow has ended: nobody will use or release these slots.
                    workflow.logger.warning("%s has ended (%s): its slots are reclaimed", holder.reply_to, result)
                    self._release(holder.holder_id)
                elif isinstance(result, BaseException):
                    raise result
            self._settle()

    def _over(self) -> bool:
        """Time for this run to end: by the short runs' rule, or (runs before it) past the length or when suggested."""
        return self._handing_over() if self._short else self._should_continue_as_new()

    def _handing_over(self) -> bool:
        """Time to continue as new, in a run that hands over without waiting: grants go to the next run unsent.

        The retry of a refused hand-over replays the run and handles the signals that came in meanwhile; the grants
        they make must not be sent there (awaiting their answer takes another task, and reopens the race). Not before
        the run heard a signal or an update, nor while grants the previous run handed over are still unsent.
        """
        if not self._short or not self._heard or not self._owed.isdisjoint(self._outbox):
            return False
        return self._should_continue_as_new()

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        return self._limit > 0 and info.get_current_history_length() >= self._limit


def _check_request(request: PairRequest) -> None:
    hosts = pair_hosts(request.hosts)
    if not request.holder_id or not 1 <= len(hosts) <= 2 or request.lease_seconds <= 0 or request.wait_seconds <= 0:
        raise ApplicationError(
            f"invalid slot request {request!r}: a holder id, one or two hosts, and a positive lease and wait",
            type=SLOT_REQUEST_INVALID,
            non_retryable=True,
        )


# -- acquire_slots: both hosts of a move, for workflow code ----------------------------------------------------
class _PairInbox:
    """The caller workflow's inbox for grant signals, registered once per run."""

    def __init__(self) -> None:
        self.grants: dict[str, PairGrant] = {}

    def on_grant(self, grant: PairGrant) -> None:
        if grant.granted:
            self.grants[grant.holder_id] = grant

    @staticmethod
    def installed() -> _PairInbox:
        handler = workflow.get_signal_handler(PAIR_GRANTED_SIGNAL)
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, _PairInbox):
            return owner
        inbox = _PairInbox()
        workflow.set_signal_handler(PAIR_GRANTED_SIGNAL, inbox.on_grant)
        return inbox


@dataclass
class HeldSlots:
    """The slots of a move's hosts, granted together."""

    hosts: tuple[str, ...]
    holder_id: str
    grant: PairGrant

    book: str = ""

    async def release(self) -> None:
        """Give both slots back; idempotent. Call it on every path (a `finally` of the move step)."""
        try:
            await _entity(self.book).signal(RELEASE_PAIR_SIGNAL, ReleaseSlotRequest(self.holder_id))
        except FailureError as error:
            # The book is gone (terminated by hand): it holds nothing for anyone any more, and the move's own
            # outcome must not turn into this failure.
            workflow.logger.warning("releasing the slots of %s: the book is gone (%s)", self.holder_id, error)


def _entity(book: str) -> workflow.ExternalWorkflowHandle:
    return workflow.get_external_workflow_handle(migration_slots_workflow_id(book))


async def _signal_request(request: PairRequest, book: str) -> None:
    """Signal the entity; start it first only when the signal finds none (the usual case costs one signal)."""
    try:
        await _entity(book).signal(REQUEST_PAIR_SIGNAL, request)
        return
    except FailureError:
        pass  # no entity running (a first move, or it was terminated by hand)
    with contextlib.suppress(WorkflowAlreadyStartedError):  # another move started it meanwhile
        await workflow.start_child_workflow(
            MigrationSlotsWorkflow.run,
            MigrationSlotsInput(),
            id=migration_slots_workflow_id(book),
            # It outlives the move that happened to start it.
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            task_timeout=MIGRATION_SLOTS_TASK_TIMEOUT,
        )
    await _entity(book).signal(REQUEST_PAIR_SIGNAL, request)


async def acquire_slots(
    source: str,
    destination: str,
    holder_id: str,
    lease_seconds: float = 300.0,
    *,
    host_limits: Mapping[str, int] | None = None,
    timeout_seconds: float = 6 * 3600.0,
    poll_seconds: float = 600.0,
    book: str = "",
) -> HeldSlots:
    """Take a migration slot on both hosts together: both granted, or nothing held.

    Args:
        source, destination: the two hosts (case-insensitive; the same host twice takes one slot).
        holder_id: the holder, usually the MigrateVm workflow id; a retry with the same id takes no second pair.
        lease_seconds: how often the entity checks that this workflow still runs once granted (no renewal needed).
        host_limits: MaximumVirtualMachineMigrations per host as the move read it (the entity's capacity follows).
        timeout_seconds: the bound on the whole wait; then SlotWaitTimeout, with nothing held or queued.
        poll_seconds: how often a waiting request is repeated (idempotent; it keeps its queue place).
        book: which book of slots (see migration_slots_workflow_id); "" the namespace's one.

    If anything fails or the caller is cancelled before the grant, the request is withdrawn before the error
    propagates (a grant that raced the withdrawal is released with it).
    """
    hosts = pair_hosts((source, destination))
    inbox = _PairInbox.installed()
    inbox.grants.pop(holder_id, None)
    limits = tuple(HostLimit(host, limit) for host, limit in sorted((host_limits or {}).items()) if limit > 0)
    request = PairRequest(
        holder_id,
        hosts,
        lease_seconds=lease_seconds,
        wait_seconds=poll_seconds,
        reply_to=workflow.info().workflow_id,
        host_limits=limits,
    )
    deadline = workflow.now().timestamp() + timeout_seconds
    try:
        while True:
            await _signal_request(request, book)
            remaining = deadline - workflow.now().timestamp()
            if remaining <= 0:
                raise ApplicationError(
                    f"no migration slots on {' and '.join(hosts)} for {holder_id} within {timeout_seconds:g} s",
                    type=SLOT_WAIT_TIMEOUT,
                )
            try:
                await workflow.wait_condition(lambda: holder_id in inbox.grants, timeout=min(poll_seconds, remaining))
            except TimeoutError:
                continue  # ask again: idempotent, and it re-sends a grant already made
            return HeldSlots(hosts, holder_id, inbox.grants[holder_id], book)
    except BaseException:
        # A timeout, a failure or a cancellation: leave the queue (or give back a grant that just arrived).
        with contextlib.suppress(FailureError):  # no entity: nothing queued there either
            await _entity(book).signal(RELEASE_PAIR_SIGNAL, ReleaseSlotRequest(holder_id))
        raise
