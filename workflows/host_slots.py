"""HostSlots: one entity workflow per Hyper-V host that grants migration slots (DESIGN.md invariant 5).

Runs of MigrateVm started before the `cheap-moves` patch take their slots here, host by host; every newer run takes
both hosts' slots together from MigrationSlots (workflows/migration_slots.py). This stays registered until no run of
the older kind is in flight (their histories replay against it in tests/workflows/test_replay.py). While both kinds
run at once, a host may see one move more than its slots allow; the host's own limit then refuses it (event 21501)
and the saga requeues it.

A host refuses a move beyond its MaximumVirtualMachineMigrations (event 21501); rather than let hosts refuse,
every move first takes a slot on both of its hosts from the host's HostSlots workflow (`snlm-host-<host>`),
which never grants more slots at once than its capacity (the host's limit, or less by policy).

Two ways in, on the same state:
- clients (starters, the CLI, tests) use the updates `acquire` (long-poll: waits up to `wait_seconds`, then
  answers "not yet" with the queue place, the request staying queued), `release`, `renew`, `set_capacity`
  and the query `status`;
- workflows (the MigrateVm saga) use `acquire_pair` below, which speaks signals both ways.

A slot is a lease: a holder that crashes stops renewing and its slot is reclaimed when the lease runs out,
measured in workflow time by a timer, so no slot leaks forever. A workflow holder renews both of its slots with
`SlotPair.renewed_every` for as long as it uses them, so its lease can be minutes long however long it holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import (
        HYPERV_DEFAULT_MAX_MIGRATIONS,
        SLOT_CAPACITY_INVALID,
        SLOT_NOT_HELD,
        SLOT_REQUEST_INVALID,
        SLOT_WAIT_TIMEOUT,
        AcquireSlotRequest,
        HostSlotsInput,
        HostSlotsStatus,
        ReleaseSlotRequest,
        ReleaseSlotResult,
        RenewSlotRequest,
        SetCapacityRequest,
        SlotGrant,
        SlotHolder,
        SlotWaiter,
        host_slots_workflow_id,
    )

# Signal names: the entity's inbox for workflow callers, and the caller's inbox for grants.
REQUEST_SLOT_SIGNAL = "request_slot"
RELEASE_SLOT_SIGNAL = "release_slot"
RENEW_SLOT_SIGNAL = "renew_slot"
SLOT_GRANTED_SIGNAL = "snlm_slot_granted"

# An idle entity still wakes up now and then: every wait in the workflow is bounded.
_IDLE_TICK = timedelta(hours=1)


@workflow.defn
class HostSlotsWorkflow:
    """Grants at most `capacity` concurrent migration slots on one host, first come first served."""

    @workflow.init
    def __init__(self, input: HostSlotsInput) -> None:
        # State comes from the input here, not in `run`: on a new run the first updates and signals are handled
        # before `run` starts, and they must see the carried holders and waiters.
        self._host = input.host
        self._host_limit = input.host_limit or input.capacity
        self._capacity = input.capacity
        self._holders: dict[str, SlotHolder] = {h.holder_id: h for h in input.holders}
        self._waiters: list[SlotWaiter] = [w for w in input.waiters if w.holder_id not in self._holders]
        self._outbox: list[tuple[str, SlotGrant]] = []  # grants to signal to workflow callers
        self._changed = False
        self._draining = False  # continuing as new: waiting updates answer "not yet" and end
        self._peak = len(self._holders)

    @workflow.run
    async def run(self, input: HostSlotsInput) -> None:
        if not 1 <= input.capacity <= self._host_limit:
            raise ApplicationError(
                f"capacity {input.capacity} must be between 1 and the host's limit {self._host_limit}",
                type=SLOT_CAPACITY_INVALID,
                non_retryable=True,
            )
        # Carried holders whose lease ran out during the hand-over are reclaimed by the first _settle.
        while True:
            self._settle()
            await self._send_grants()
            if self._should_continue_as_new(input.continue_as_new_after_events):
                break
            self._changed = False
            # On timeout a lease may have run out: the next _settle reclaims it.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        self._changed
                        or bool(self._outbox)
                        or self._should_continue_as_new(input.continue_as_new_after_events)
                    ),
                    timeout=self._next_wake(),
                )

        # Let handlers end first (waiting acquires answer "not yet" and their callers ask the next run), so no
        # update is lost and no UnfinishedUpdateHandlersWarning; then carry the state.
        self._draining = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._settle()
        await self._send_grants()
        workflow.continue_as_new(
            HostSlotsInput(
                host=self._host,
                capacity=self._capacity,
                host_limit=self._host_limit,
                holders=tuple(self._holders.values()),
                waiters=tuple(self._waiters),
                continue_as_new_after_events=input.continue_as_new_after_events,
            )
        )

    # -- updates and queries (clients) ----------------------------------------------------------------------

    @workflow.update
    async def acquire(self, request: AcquireSlotRequest) -> SlotGrant:
        """Take a slot, waiting at most `wait_seconds`; a holder that already holds one gets it back."""
        self._enqueue(request)
        if request.holder_id not in self._holders:
            # On timeout the answer is "not yet", with the queue place; the request stays queued.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        request.holder_id in self._holders or self._draining or not self._is_waiting(request.holder_id)
                    ),
                    timeout=request.wait_seconds,
                )
        return self._answer(request.holder_id)

    @acquire.validator
    def _validate_acquire(self, request: AcquireSlotRequest) -> None:
        _check_request(request)

    @workflow.update
    def release(self, request: ReleaseSlotRequest) -> ReleaseSlotResult:
        """Give a slot back or leave the queue; releasing twice, or after expiry, does nothing."""
        return self._release(request.holder_id)

    @workflow.update
    def renew(self, request: RenewSlotRequest) -> SlotGrant:
        """Extend a held lease from now; fails with SlotNotHeld when the lease already ran out."""
        self._settle()  # an expired lease must not be revived
        if not self._renew(request):
            raise ApplicationError(
                f"{request.holder_id} holds no slot on {self._host} (released or lease expired)", type=SLOT_NOT_HELD
            )
        return self._answer(request.holder_id)

    @workflow.update
    def set_capacity(self, request: SetCapacityRequest) -> HostSlotsStatus:
        """Set the capacity; holders above a lowered capacity keep their slot until they release it."""
        self._host_limit = request.host_limit or self._host_limit
        self._capacity = request.capacity
        self._touch()
        return self.status()

    @set_capacity.validator
    def _validate_set_capacity(self, request: SetCapacityRequest) -> None:
        # Rejected in the validator, so an invalid request leaves no trace in the history.
        limit = request.host_limit or self._host_limit
        if not 1 <= request.capacity <= limit:
            raise ApplicationError(
                f"capacity {request.capacity} must be between 1 and the host's limit {limit}",
                type=SLOT_CAPACITY_INVALID,
                non_retryable=True,
            )

    @workflow.query
    def status(self) -> HostSlotsStatus:
        return HostSlotsStatus(
            host=self._host,
            capacity=self._capacity,
            host_limit=self._host_limit,
            holders=tuple(self._holders.values()),
            waiters=tuple(self._waiters),
            peak_in_use=self._peak,
        )

    # -- signals (workflow callers, see acquire_pair) ---------------------------------------------------------

    @workflow.signal(name=REQUEST_SLOT_SIGNAL)
    def request_slot(self, request: AcquireSlotRequest) -> None:
        try:
            _check_request(request)
        except ApplicationError as error:
            workflow.logger.warning("ignoring slot request: %s", error)
            return
        self._enqueue(request)
        holder = self._holders.get(request.holder_id)
        if holder is not None and request.reply_to:
            # A repeated request from a holder: answer again (its first answer may predate a reset of the caller).
            self._outbox.append((request.reply_to, self._answer(request.holder_id)))
            self._touch()

    @workflow.signal(name=RELEASE_SLOT_SIGNAL)
    def release_slot(self, request: ReleaseSlotRequest) -> None:
        self._release(request.holder_id)

    @workflow.signal(name=RENEW_SLOT_SIGNAL)
    def renew_slot(self, request: RenewSlotRequest) -> None:
        self._settle()
        if not self._renew(request):
            workflow.logger.warning("renew for %s: it holds no slot on %s", request.holder_id, self._host)

    # -- state ------------------------------------------------------------------------------------------------

    def _now(self) -> float:
        return workflow.now().timestamp()

    def _touch(self) -> None:
        self._changed = True
        self._settle()

    def _is_waiting(self, holder_id: str) -> bool:
        return any(w.holder_id == holder_id for w in self._waiters)

    def _enqueue(self, request: AcquireSlotRequest) -> None:
        if request.holder_id in self._holders or self._is_waiting(request.holder_id):
            return  # idempotent: a retry keeps its slot or its place
        self._waiters.append(SlotWaiter(request.holder_id, request.lease_seconds, request.reply_to))
        self._touch()

    def _release(self, holder_id: str) -> ReleaseSlotResult:
        released = self._holders.pop(holder_id, None) is not None
        dequeued = self._is_waiting(holder_id)
        self._waiters = [w for w in self._waiters if w.holder_id != holder_id]
        if released or dequeued:
            self._touch()
        return ReleaseSlotResult(released=released, dequeued=dequeued)

    def _renew(self, request: RenewSlotRequest) -> bool:
        holder = self._holders.get(request.holder_id)
        if holder is None:
            return False
        lease = request.lease_seconds or holder.lease_seconds
        self._holders[request.holder_id] = replace(holder, lease_seconds=lease, expires_at=self._now() + lease)
        self._changed = True
        return True

    def _settle(self) -> None:
        """Reclaim expired leases, then grant free slots to the head of the queue (FIFO)."""
        now = self._now()
        for holder in [h for h in self._holders.values() if h.expires_at <= now]:
            workflow.logger.info("lease of %s on %s expired: slot reclaimed", holder.holder_id, self._host)
            del self._holders[holder.holder_id]
            self._changed = True
        while self._waiters and len(self._holders) < self._capacity:
            waiter = self._waiters.pop(0)
            holder = SlotHolder(waiter.holder_id, waiter.lease_seconds, now + waiter.lease_seconds, waiter.reply_to)
            self._holders[holder.holder_id] = holder
            if holder.reply_to:
                self._outbox.append((holder.reply_to, self._answer(holder.holder_id)))
            self._changed = True
        self._peak = max(self._peak, len(self._holders))

    def _answer(self, holder_id: str) -> SlotGrant:
        holder = self._holders.get(holder_id)
        if holder is not None:
            return SlotGrant(self._host, holder_id, granted=True, expires_at=holder.expires_at)
        position = next((i for i, w in enumerate(self._waiters, 1) if w.holder_id == holder_id), 0)
        return SlotGrant(self._host, holder_id, granted=False, position=position)

    def _next_wake(self) -> float:
        wake = _IDLE_TICK.total_seconds()
        if self._holders:
            soonest = min(h.expires_at for h in self._holders.values()) - self._now()
            wake = min(wake, soonest)
        return max(wake, 0.001)

    async def _send_grants(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            results = await asyncio.gather(
                *(
                    workflow.get_external_workflow_handle(reply_to).signal(SLOT_GRANTED_SIGNAL, grant)
                    for reply_to, grant in batch
                ),
                return_exceptions=True,
            )
            for (reply_to, grant), result in zip(batch, results, strict=True):
                if isinstance(result, FailureError):
                    # The caller is gone (completed, terminated): nobody will use or release this slot.
                    workflow.logger.warning("%s is gone (%s): slot of %s reclaimed", reply_to, result, grant.holder_id)
                    self._release(grant.holder_id)
                elif isinstance(result, BaseException):
                    raise result
            self._settle()

    def _should_continue_as_new(self, after_events: int) -> bool:
        info = workflow.info()
        if info.is_continue_as_new_suggested():
            return True
        return after_events > 0 and info.get_current_history_length() >= after_events


def _check_request(request: AcquireSlotRequest) -> None:
    if not request.holder_id or request.lease_seconds <= 0 or request.wait_seconds <= 0:
        raise ApplicationError(
            f"invalid slot request {request!r}: holder id, lease and wait must be set and positive",
            type=SLOT_REQUEST_INVALID,
            non_retryable=True,
        )


# -- acquire_pair: slots on both hosts of a move, for workflow code -----------------------------------------------
#
# Why signals and not an update: a workflow cannot send an update (only clients can), so the alternatives are an
# activity holding a Client that calls `acquire`, or signals both ways. An activity would occupy a worker's activity
# slot for as long as the queue is long (hours in a big campaign), need heartbeats to survive that, and need the
# client wiring in activities/; signals are durable commands recorded in both histories, cost no worker slot while
# waiting, and the entity learns that a caller is gone when its grant signal fails. So a workflow caller signals
# `request_slot` with its own workflow id as `reply_to`, and the entity signals the grant back; every wait is a
# bounded wait_condition and a re-request is idempotent by holder id.
#
# The entity is started if needed as a child with ParentClosePolicy.ABANDON: it outlives the move that started it,
# and a second start of the same id fails with WorkflowAlreadyStartedError, which means it is already there.


class _GrantInbox:
    """The caller workflow's inbox for grant signals, registered once per run."""

    def __init__(self) -> None:
        self.grants: dict[tuple[str, str], SlotGrant] = {}

    def on_grant(self, grant: SlotGrant) -> None:
        self.grants[(grant.host, grant.holder_id)] = grant

    @staticmethod
    def installed() -> _GrantInbox:
        handler = workflow.get_signal_handler(SLOT_GRANTED_SIGNAL)
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, _GrantInbox):
            return owner
        inbox = _GrantInbox()
        workflow.set_signal_handler(SLOT_GRANTED_SIGNAL, inbox.on_grant)
        return inbox


@dataclass
class SlotPair:
    """Slots held on both hosts of a move, in the fixed (sorted) order they were taken."""

    hosts: tuple[str, ...]
    holder_id: str
    grants: tuple[SlotGrant, ...]

    async def renew(self, lease_seconds: float = 0.0) -> None:
        """Extend both leases from now (0 keeps their length); call well before the soonest `expires_at`."""
        request = RenewSlotRequest(self.holder_id, lease_seconds)
        # Both signals in one workflow task: a renewal costs one round trip, not one per host.
        results = await asyncio.gather(
            *(_entity(host).signal(RENEW_SLOT_SIGNAL, request) for host in self.hosts), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @contextlib.asynccontextmanager
    async def renewed_every(self, every_seconds: float) -> AsyncIterator[SlotPair]:
        """Renew both leases every `every_seconds` (a fraction of the lease) for as long as the block runs.

        The renewals run beside the block, so they go on whatever the block waits on (an activity, a timer, a
        cancellation that is still being completed). A run that is terminated stops renewing with it, and its
        slots are reclaimed when the lease runs out. On leaving, the renewals stop before the block's outcome
        propagates: no timer or signal of theirs is left behind.
        """
        done = False

        async def renew_until_done() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: done, timeout=every_seconds)
                if done:
                    return
                try:
                    await self.renew()
                except FailureError as error:
                    # The entity is gone (terminated by hand): nothing to renew there; the move goes on, and the
                    # host's own limit still stands (event 21501).
                    workflow.logger.warning("renewing the slots of %s failed: %s", self.holder_id, error)

        renewer = asyncio.create_task(renew_until_done())
        try:
            yield self
        finally:
            done = True
            # Shielded: a cancellation arriving here must not cancel a renewal signal half sent.
            await asyncio.shield(renewer)

    async def release(self) -> None:
        """Give both slots back; idempotent. Call it on every path (a `finally` of the move step)."""
        await _release_all(self.hosts, self.holder_id)


def _entity(host: str) -> workflow.ExternalWorkflowHandle:
    return workflow.get_external_workflow_handle(host_slots_workflow_id(host))


async def _release_all(hosts: tuple[str, ...], holder_id: str) -> None:
    # Reverse order of acquisition; each release is a signal, so it is recorded even if this run is cancelled later.
    for host in reversed(hosts):
        await _entity(host).signal(RELEASE_SLOT_SIGNAL, ReleaseSlotRequest(holder_id))


async def _ensure_entity(host: str, host_limits: Mapping[str, int]) -> None:
    limit = host_limits.get(host, HYPERV_DEFAULT_MAX_MIGRATIONS)
    # WorkflowAlreadyStartedError is the usual case: the host's entity is running.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await workflow.start_child_workflow(
            HostSlotsWorkflow.run,
            HostSlotsInput(host=host, capacity=limit, host_limit=limit),
            id=host_slots_workflow_id(host),
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )


async def _acquire_one(
    inbox: _GrantInbox, host: str, holder_id: str, lease_seconds: float, poll_seconds: float, deadline: float
) -> SlotGrant:
    key = (host, holder_id)
    inbox.grants.pop(key, None)
    request = AcquireSlotRequest(holder_id, lease_seconds, poll_seconds, reply_to=workflow.info().workflow_id)
    while True:
        await _entity(host).signal(REQUEST_SLOT_SIGNAL, request)
        remaining = deadline - workflow.now().timestamp()
        if remaining <= 0:
            raise ApplicationError(f"no migration slot on {host} for {holder_id} in time", type=SLOT_WAIT_TIMEOUT)
        try:
            await workflow.wait_condition(lambda: key in inbox.grants, timeout=min(poll_seconds, remaining))
            return inbox.grants[key]
        except TimeoutError:
            continue  # ask again (idempotent): it also re-sends a grant if one was already made


async def acquire_pair(
    source: str,
    destination: str,
    holder_id: str,
    lease_seconds: float = 900.0,
    *,
    host_limits: Mapping[str, int] | None = None,
    timeout_seconds: float = 6 * 3600.0,
    poll_seconds: float = 300.0,
) -> SlotPair:
    """Take a migration slot on both hosts, in sorted host order so two moves in opposite directions never deadlock.

    Args:
        source, destination: the two hosts (case-insensitive; the same host twice takes one slot).
        holder_id: the slot holder, usually the MigrateVm workflow id; a retry with the same id takes no second slot.
        lease_seconds: each slot's lease; keep it with `SlotPair.renewed_every` (or `SlotPair.renew`).
        host_limits: MaximumVirtualMachineMigrations per host, used only to start a host's entity that is not
            running yet (default HYPERV_DEFAULT_MAX_MIGRATIONS).
        timeout_seconds: the bound on the whole wait; then SlotWaitTimeout, with nothing held.
        poll_seconds: how often a waiting request is repeated (it keeps its queue place).

    If anything fails or the caller is cancelled before both slots are held, whatever was taken or queued is
    released before the error propagates.
    """
    hosts = tuple(sorted({source.casefold(): source, destination.casefold(): destination}.values(), key=str.casefold))
    inbox = _GrantInbox.installed()
    deadline = workflow.now().timestamp() + timeout_seconds
    touched: list[str] = []
    grants: list[SlotGrant] = []
    try:
        for host in hosts:
            await _ensure_entity(host, host_limits or {})
            touched.append(host)
            grants.append(await _acquire_one(inbox, host, holder_id, lease_seconds, poll_seconds, deadline))
    except BaseException:
        # Covers a timeout, a failure and a cancellation (asyncio.CancelledError): without this the first host's
        # slot would stay held until its lease ran out.
        await _release_all(tuple(touched), holder_id)
        raise
    return SlotPair(hosts=hosts, holder_id=holder_id, grants=tuple(grants))
