"""MigrateVm: one VM's shared-nothing live migration as a saga of durable steps (DESIGN.md "The workflows").

preflight -> approval -> cluster HA -> delegation -> host settings -> move -> verify. Each step that changes
something registers its compensation before it runs (invariant 3); when a later step fails, or the run is
cancelled, the compensations run in reverse order, and the original error is raised again with their outcome
attached. Activities are called by name: their code lives in `activities/` and never enters the sandbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar, cast

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import (
        APPROVAL_REJECTED,
        APPROVAL_TIMED_OUT,
        DELEGATION_NOT_CONFIGURED,
        GUEST_NOT_ANSWERING,
        HA_CHOICE_REQUIRED,
        HA_RESTORE_IMPOSSIBLE,
        MIGRATION_LIMIT_REACHED,
        MOVE_FAILED,
        PREFLIGHT_BLOCKED,
        SA_CAMPAIGN,
        SA_DESTINATION,
        SA_SOURCE,
        SA_STEP,
        SA_TICKET,
        SA_VM,
        SEVERITY_WARNING,
        SLOT_LEASE_INVALID,
        SLOT_RENEWALS_PER_LEASE,
        VERIFY_FAILED,
        ActivityName,
        ApproveRequest,
        CleanupInput,
        ClusterRoleSnapshot,
        CompensationOutcome,
        ComputerDelegation,
        ConcernId,
        DelegationHost,
        DelegationPolicy,
        EnsureDelegationInput,
        EnsureDelegationResult,
        EnsureSettingsInput,
        EnsureSettingsResult,
        GuestCheck,
        HaChoice,
        HaOutcome,
        HostMigrationSettings,
        HostRef,
        MigrateVmInput,
        MigrateVmResult,
        MigrationProgress,
        MoveHeartbeat,
        MoveInput,
        MoveResult,
        PreflightFacts,
        PreflightInput,
        PreflightReport,
        PurgeTicketsInput,
        RemediateInput,
        RemediateResult,
        RestoreClusterRoleInput,
        RevertDelegationResult,
        Step,
        VerifyInput,
        VerifyResult,
        VmFacts,
        VmOnHost,
        move_task_queue,
        slot_lease_problem,
    )
    from workflows.host_slots import SlotPair, acquire_pair
    from workflows.migration_slots import acquire_slots
    from workflows.settings_plan import settings_in_place

T = TypeVar("T")

# Retries: host and directory calls are idempotent, so a bounded number of attempts with backoff is safe;
# errors the activities mark non-retryable (configuration) stop at once whatever the policy says.
_QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)
_MOVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2), maximum_attempts=4
)
_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1), maximum_attempts=10
)
_SHORT = timedelta(minutes=2)
_READ = timedelta(minutes=5)
# Before the cheap-moves patch: the move activity's heartbeat timeout (the policy sets it since).
_MOVE_HEARTBEAT = timedelta(seconds=20)
# A heartbeat timeout shorter than this makes the move cost an action every second or two; longer, and a cancel
# takes minutes to reach the host's job.
_MOVE_HEARTBEAT_RANGE = (2.0, 120.0)
# A host refusing a move for its concurrency limit (event 21501) is admission, not failure: wait and ask again.
_ADMISSION_BACKOFF = timedelta(seconds=30)

# Workflow changes that alter the command sequence of running workflows go behind a patch (invariant 8); the
# recorded histories in tests/workflows/histories/ replay both sides of each.
_PATCH_CLUSTER_FROM_PREFLIGHT = "cluster-snapshot-from-preflight"
_PATCH_SLOT_LEASE_RENEWAL = "slot-lease-renewal"
# Both hosts' slots granted together by MigrationSlots (no renewals), the move activity on its own task queue with
# the policy's heartbeat timeout, and one search-attribute upsert per step change.
_PATCH_CHEAP_MOVES = "cheap-moves"
# A VM that was not running before its move is verified as moved when it is on the destination and gone from the
# source (it is not expected to run there).
_PATCH_OFF_VMS_MOVE = "off-vms-move"
# Both hosts' live-migration settings ensured at once instead of one after the other.
_PATCH_SETTINGS_SIDE_BY_SIDE = "settings-side-by-side"
# Fewer waits around the move: a host whose settings, as read moments before, already are what the move needs is
# not asked to ensure them; and a moved VM's slots are given back while it is verified, not before.
_PATCH_FEWER_WAITS = "fewer-waits"
# One marker for all of the three above: a run recording it takes every change of cheap-moves,
# settings-side-by-side and fewer-waits, where each patch costs a run a marker event and the SDK's upsert of
# TemporalChangeVersion (a billed action and an index write). Histories recorded before it ask for the three one by
# one and replay as they ran. Its own change: a move prepared ahead whose turn came before it was ready writes its
# step once, not `ready` and then `move` in the same workflow task.
_PATCH_ONE_MARKER = "moves-one-marker"


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, in order, once all have ended; the first error (in order) when any failed. Unlike a plain
    `gather`, nothing is left running when an error is raised."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(list[T], outcomes)


_KEYS = {
    name: SearchAttributeKey.for_keyword(name)
    for name in (SA_VM, SA_SOURCE, SA_DESTINATION, SA_CAMPAIGN, SA_TICKET, SA_STEP)
}


@dataclass
class _Compensation:
    step: str
    action: Callable[[], Awaitable[Any]]


def _error_type(error: BaseException) -> str:
    """The ApplicationError type behind an activity or child failure ("" when there is none)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause.type or ""
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return ""


def _message(error: BaseException) -> str:
    cause: BaseException | None = error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return str(cause) if cause is not None else str(error)


@dataclass(frozen=True)
class _HaPlan:
    """What this run does with the VM's cluster role after the move, and in which cluster."""

    outcome: HaOutcome
    cluster: str = ""


def _summary(report: PreflightReport) -> PreflightFacts:
    """The typed facts; a report recorded before they existed carries only the display mapping."""
    if report.summary is not None:
        return report.summary
    facts = report.facts or {}
    estimate = facts.get("vm.move_bytes", "")
    return PreflightFacts(
        clustered=(facts.get("vm.clustered") or "").casefold() == "true",
        move_bytes=int(estimate) if estimate.isdigit() else 0,
    )


def _ha_plan(input: MigrateVmInput, facts: PreflightFacts) -> _HaPlan:
    """Restore HA on a destination cluster node unless the request drops it; refuse to guess otherwise."""
    if not facts.clustered:
        return _HaPlan(HaOutcome.NOT_CLUSTERED)
    choice = input.policy.ha
    where = f"in {facts.cluster}" if facts.cluster else "in its cluster"
    if choice == HaChoice.DROP:
        return _HaPlan(HaOutcome.DROPPED, facts.cluster)
    if facts.destination_cluster:
        return _HaPlan(HaOutcome.RESTORED_ON_DESTINATION, facts.destination_cluster)
    if choice == HaChoice.RESTORE:
        raise ApplicationError(
            f"{input.vm} is highly available {where} and cannot be made highly available again on "
            f"{input.destination}, which is not a cluster node; nothing was changed. Remedy: choose a destination "
            "that is a cluster node, or move it without HA (--ha drop)",
            type=HA_RESTORE_IMPOSSIBLE,
            non_retryable=True,
        )
    raise ApplicationError(
        f"{input.vm} is highly available {where} and {input.destination} is not a cluster node: after the move it "
        "would no longer be highly available; nothing was changed. Remedy: say so with --ha drop (policy ha: drop), "
        "or choose a destination that is a cluster node",
        type=HA_CHOICE_REQUIRED,
        non_retryable=True,
    )


@workflow.defn(name="MigrateVm")
class MigrateVmWorkflow:
    """One VM, from its source host to its destination host, exactly once."""

    @workflow.init
    def __init__(self, input: MigrateVmInput) -> None:
        self._input = input
        self._step = Step.PENDING
        self._waiting_for = ""
        self._report: PreflightReport | None = None
        self._approval: ApproveRequest | None = None
        self._move = MoveHeartbeat(job_id="", percent=0)
        self._attempt = 0
        self._compensations: list[_Compensation] = []
        self._outcomes: list[CompensationOutcome] = []
        self._ha = _HaPlan(HaOutcome.NOT_CLUSTERED)
        self._cheap = False
        self._settings_side_by_side = False
        self._fewer_waits = False
        self._one_marker = False
        self._releasing: asyncio.Future[None] | None = None  # the slots being given back beside the verify
        self._attributes: list[Any] = []  # search attributes for the next upsert
        self._go = False

    # -- queries, updates, signals ------------------------------------------------------------------------------
    @workflow.query
    def progress(self) -> MigrationProgress:
        return MigrationProgress(
            vm=self._input.vm,
            source=self._input.source,
            destination=self._input.destination,
            step=self._step,
            # A finished move is whole, whatever the last progress signal said (one may be lost in a restart).
            percent=100 if self._step == Step.DONE else self._move.percent,
            bytes_done=self._move.bytes_done,
            bytes_total=self._move.bytes_total,
            attempt=self._attempt,
            waiting_for=self._waiting_for,
        )

    @workflow.query
    def preflight_report(self) -> PreflightReport | None:
        return self._report

    @workflow.query
    def compensations(self) -> list[CompensationOutcome]:
        return list(self._outcomes)

    @workflow.update
    def approve(self, request: ApproveRequest) -> str:
        self._approval = request
        return "approved" if request.approved else "rejected"

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:
        if self._approval is not None:
            raise ApplicationError("this move was already decided")
        if not request.approver:
            raise ApplicationError("an approval names its approver")

    @workflow.signal
    def move_progress(self, beat: MoveHeartbeat) -> None:
        """Sent by the move activity as the host's job advances, so `progress` shows the percent done."""
        if beat.percent >= self._move.percent or beat.job_id != self._move.job_id:
            self._move = beat

    @workflow.signal
    def go(self) -> None:
        """Sent by the campaign that prepared this move ahead: its turn has come (it may come before the run is
        ready; the run then goes on without waiting)."""
        self._go = True

    # -- the saga ----------------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: MigrateVmInput) -> MigrateVmResult:
        # Decided once, first: a run that started before the patch keeps its old command sequence to the end.
        self._one_marker = workflow.patched(_PATCH_ONE_MARKER)
        if self._one_marker:
            self._cheap = self._settings_side_by_side = self._fewer_waits = True
        else:
            self._cheap = workflow.patched(_PATCH_CHEAP_MOVES)
            self._settings_side_by_side = self._cheap and workflow.patched(_PATCH_SETTINGS_SIDE_BY_SIDE)
            self._fewer_waits = self._settings_side_by_side and workflow.patched(_PATCH_FEWER_WAITS)
        self._attributes = [
            _KEYS[SA_VM].value_set(input.vm),
            _KEYS[SA_SOURCE].value_set(input.source),
            _KEYS[SA_DESTINATION].value_set(input.destination),
            _KEYS[SA_CAMPAIGN].value_set(input.campaign),
            _KEYS[SA_TICKET].value_set(input.ticket),
        ]
        if not self._cheap:
            self._upsert()
        try:
            return await self._saga(input)
        except BaseException as error:
            cancelled = is_cancelled_exception(error)
            final = Step.CANCELLED if cancelled else Step.FAILED
            if not self._compensations:
                self._set_step(final)
                raise
            self._set_step(Step.COMPENSATING)
            # Shielded: a cancelled run still undoes what it changed before it ends.
            await asyncio.shield(asyncio.ensure_future(self._compensate()))
            self._set_step(final)
            if cancelled:
                raise
            failed = [o for o in self._outcomes if not o.ok]
            summary = "; ".join(f"{o.step}: {'ok' if o.ok else 'FAILED ' + o.detail}" for o in self._outcomes)
            raise ApplicationError(
                f"{_message(error)} (compensation: {summary})",
                {"compensations": [o.__dict__ for o in self._outcomes], "compensation_failed": bool(failed)},
                type=_error_type(error) or MOVE_FAILED,
                non_retryable=True,
            ) from error

    async def _saga(self, input: MigrateVmInput) -> MigrateVmResult:
        policy = input.policy
        vm, source, destination = input.vm, input.source, input.destination
        if source.casefold() == destination.casefold():
            raise ApplicationError(f"{vm}: source and destination are the same host ({source})", non_retryable=True)
        # Checked before anything changes (a lease the move cannot keep would otherwise fail after the delegation
        # and the settings were written).
        problem = slot_lease_problem(policy.slot_lease_seconds, policy.move_timeout_seconds)
        if problem:
            raise ApplicationError(f"{vm}: {problem}", type=SLOT_LEASE_INVALID, non_retryable=True)
        low, high = _MOVE_HEARTBEAT_RANGE
        if self._cheap and not low <= policy.move_heartbeat_seconds <= high:
            raise ApplicationError(
                f"{vm}: move_heartbeat_seconds {policy.move_heartbeat_seconds:g} is outside {low:g}-{high:g} s. "
                "Remedy: 30 s (a cancel reaches the host within it; each heartbeat is a billed action)",
                type=SLOT_LEASE_INVALID,
                non_retryable=True,
            )

        # 1. preflight: read-only; blockers stop the run before any change.
        self._set_step(Step.PREFLIGHT)
        report = await self._activity(
            ActivityName.PREFLIGHT,
            PreflightInput(vm, source, destination, storage_path=input.storage_path),
            PreflightReport,
            timeout=_READ,
            heartbeat=timedelta(minutes=1),
        )
        self._report = report
        concern_ids = {c.id for c in report.concerns}
        if ConcernId.VM_ALREADY_ON_DESTINATION in concern_ids:
            # An earlier request already moved it (or a resumed run after the move): never move it twice.
            facts = await self._activity(ActivityName.READ_VM, VmOnHost(vm, destination), VmFacts, timeout=_SHORT)
            return await self._verify(input, facts, already_there=True)
        if report.blockers:
            raise ApplicationError(
                f"{vm}: preflight found {len(report.blockers)} blocker(s): "
                + "; ".join(f"{c.id}: {c.message}" for c in report.blockers),
                report,
                type=PREFLIGHT_BLOCKED,
                non_retryable=True,
            )
        warnings = tuple(f"{c.id}: {c.message}" for c in report.concerns if c.severity == SEVERITY_WARNING)
        # Decided before anything changes: a VM must not lose its high availability unless the request says so.
        self._ha = _ha_plan(input, _summary(report))

        # 2. approval, when the policy asks for one.
        if policy.require_approval:
            self._set_step(Step.APPROVAL)
            self._waiting_for = "approval"
            self._flush()
            try:
                await workflow.wait_condition(
                    lambda: self._approval is not None, timeout=timedelta(seconds=policy.approval_timeout_seconds)
                )
            except TimeoutError:
                raise ApplicationError(
                    f"{vm}: no approval within {policy.approval_timeout_seconds:.0f} s; nothing was changed",
                    type=APPROVAL_TIMED_OUT,
                    non_retryable=True,
                ) from None
            finally:
                self._waiting_for = ""
            assert self._approval is not None
            if not self._approval.approved:
                raise ApplicationError(
                    f"{vm}: rejected by {self._approval.approver}: {self._approval.comment}",
                    type=APPROVAL_REJECTED,
                    non_retryable=True,
                )

        summary = _summary(report)
        if self._cheap and summary.vm_read and not policy.require_approval:
            # Preflight read the VM moments ago, exactly as read_vm would: no second session for the same answer.
            facts = VmFacts(vm, summary.vm_id, source, summary.vm_files, summary.clustered)
        else:
            facts = await self._activity(ActivityName.READ_VM, VmOnHost(vm, source), VmFacts, timeout=_SHORT)

        # 3. cluster HA (after the wait for its turn when prepared ahead: a VM never waits without its cluster).
        if not input.prepared_ahead:
            await self._cluster(input, report, facts)

        # 4. delegation between the two hosts, by policy.
        self._set_step(Step.DELEGATION)
        added: tuple[str, ...] = ()
        if policy.delegation == DelegationPolicy.MANAGE:
            pair = EnsureDelegationInput(DelegationHost(source), DelegationHost(destination), policy.delegation_mode)
            # The revert removes exactly what the ensure reports, so it needs the ensure's result even when the run
            # is cancelled meanwhile: the ensure is shielded (it is short, and does not watch for cancellation), and
            # the revert, registered before it, awaits its outcome. An ensure that fails undoes itself.
            ensuring = asyncio.ensure_future(
                self._activity(ActivityName.ENSURE_DELEGATION, pair, EnsureDelegationResult)
            )
            if policy.revert_delegation:
                self._register("revert delegation", lambda: self._revert_delegation(ensuring))
            ensured = await asyncio.shield(ensuring)
            added = tuple(v for change in ensured.changes for v in change.added_values)
            if ensured.changed:
                # A host sees new delegation only with a new ticket (klist purge on the machine's logon session).
                await self._activity(ActivityName.PURGE_TICKETS, PurgeTicketsInput((source, destination)), type(None))
        elif policy.delegation == DelegationPolicy.VERIFY:
            await self._verify_delegation(source, destination)

        # 5. live-migration settings on both hosts; the previous ones are what the compensation restores.
        self._set_step(Step.SETTINGS)
        read_by_preflight = {s.host.casefold(): s for s in summary.settings} if self._cheap else {}

        async def previous(host: str) -> HostMigrationSettings:
            # Read before changing, and register the restore with what was read: a retried ensure would otherwise
            # report its own first attempt's change as "previous". Preflight's reading, seconds old, is such a
            # reading (after an approval wait it is read again).
            reading = read_by_preflight.get(host.casefold()) if not policy.require_approval else None
            if reading is None:
                reading = await self._activity(
                    ActivityName.READ_MIGRATION_SETTINGS, HostRef(host), HostMigrationSettings
                )
            return reading

        def wanted(host: str) -> EnsureSettingsInput:
            return EnsureSettingsInput(host, policy.authentication, policy.performance, policy.migration_networks)

        def ensure(host: str) -> Awaitable[EnsureSettingsResult]:
            return self._activity(ActivityName.ENSURE_MIGRATION_SETTINGS, wanted(host), EnsureSettingsResult)

        async def settle(host: str, reading: HostMigrationSettings | None) -> EnsureSettingsResult:
            # A reading moments old that already has what the move needs: ensure would change nothing. (A change
            # made on the host since then is met by the move as it would be after an ensure.)
            in_place = settings_in_place(reading, wanted(host)) if reading is not None else None
            return in_place if in_place is not None else await ensure(host)

        hosts = (source, destination)
        settled: list[EnsureSettingsResult] = []
        if self._settings_side_by_side:
            # The two hosts at once: both readings, then both restores registered (source first, so they are
            # undone destination first, as before), then both ensures. Each phase ends (or fails) whole before the
            # next: a compensation must never restore a host's settings while its ensure still runs.
            readings: list[HostMigrationSettings | None] = [None] * len(hosts)
            if policy.restore_settings:
                read = await _all(previous(host) for host in hosts)
                for host, reading in zip(hosts, read, strict=True):
                    self._register(f"restore settings on {host}", self._settings_restorer(reading))
                readings = list(read)
            elif not policy.require_approval:
                readings = [read_by_preflight.get(host.casefold()) for host in hosts]
            if self._fewer_waits:
                settled = await _all(settle(host, reading) for host, reading in zip(hosts, readings, strict=True))
            else:
                settled = await _all(ensure(host) for host in hosts)
        else:
            for host in hosts:
                if policy.restore_settings:
                    self._register(f"restore settings on {host}", self._settings_restorer(await previous(host)))
                settled.append(await ensure(host))
        limits: dict[str, int] = {}
        settings_changed: list[str] = []
        for host, ensured_settings in zip(hosts, settled, strict=True):
            limits[host] = min(ensured_settings.current.max_vm_migrations, policy.max_migrations_per_host or 1 << 30)
            if ensured_settings.changed:
                settings_changed.append(host)

        if input.prepared_ahead:
            self._set_step(Step.READY)
            self._waiting_for = f"its turn in campaign {input.campaign}" if input.campaign else "its turn"
            if not (self._one_marker and self._go):
                self._flush()
            try:
                await workflow.wait_condition(lambda: self._go)
            finally:
                self._waiting_for = ""
            await self._cluster(input, report, facts)

        # 6. the move: fix what can be fixed, hold a slot on both hosts, clean leftovers, move, watch.
        self._set_step(Step.MOVE)
        fixable = tuple(
            c.id for c in report.concerns if c.auto_remediable and c.id == ConcernId.ISO_MISSING_ON_DESTINATION
        )
        if fixable and policy.eject_missing_iso:
            await self._activity(ActivityName.REMEDIATE, RemediateInput(vm, source, fixable), RemediateResult)
        if self._cheap:
            await self._move_with_slots(input, facts, limits)
        else:
            await self._move_with_host_slots(input, facts, limits)

        # 7. verify, and make the VM highly available again on the destination when asked.
        try:
            result = await self._verify(input, facts, already_there=False)
        finally:
            if self._releasing is not None:
                await self._releasing
        return replace(
            result,
            delegation_added=added,
            settings_changed=tuple(settings_changed),
            warnings=warnings + result.warnings,
        )

    async def _cluster(self, input: MigrateVmInput, report: PreflightReport, facts: VmFacts) -> None:
        """Step 3, cluster HA: snapshot the role, register its restore on the source, then remove it."""
        vm, source = input.vm, input.source
        self._set_step(Step.CLUSTER)
        # A cheap-moves run is newer than that patch: no second marker (and search-attribute event) to say so.
        if not _summary(report).clustered and (self._cheap or workflow.patched(_PATCH_CLUSTER_FROM_PREFLIGHT)):
            # Preflight already read IsClustered: no second session just to learn there is no role. (Should the VM
            # be clustered in between, Move-VM refuses it as clustered, non-retryable, and nothing is lost.)
            snapshot = ClusterRoleSnapshot(vm=vm, host=source, clustered=False)
        else:
            snapshot = await self._activity(
                ActivityName.SNAPSHOT_CLUSTER_ROLE, VmOnHost(vm, source), ClusterRoleSnapshot
            )
        if snapshot.clustered:
            self._register(
                "restore cluster role on source",
                lambda: self._compensation_activity(
                    ActivityName.RESTORE_CLUSTER_ROLE, RestoreClusterRoleInput(snapshot, source, vm_id=facts.vm_id)
                ),
            )
            await self._activity(ActivityName.REMOVE_CLUSTER_ROLE, snapshot, type(None))

    async def _move_with_slots(self, input: MigrateVmInput, facts: VmFacts, limits: dict[str, int]) -> None:
        """Both hosts' slots granted together (nothing held while waiting), the move, the slots given back."""
        source, destination = input.source, input.destination
        self._waiting_for = f"migration slots on {source} and {destination}"
        self._flush()
        held = await acquire_slots(
            source,
            destination,
            workflow.info().workflow_id,
            lease_seconds=input.policy.slot_lease_seconds,
            host_limits=limits,
            book=input.policy.slot_book,
        )
        self._waiting_for = ""
        try:
            cleanup = CleanupInput(input.vm, facts.vm_id, destination)
            self._register(
                f"clean leftovers on {destination}",
                lambda: self._compensation_activity(ActivityName.CLEAN_DESTINATION, cleanup),
            )
            await self._run_move(input, facts)
            self._moved(input, facts)
            if self._fewer_waits:
                # Verify only reads the hosts: the slots go back while it runs (the run waits for that before it
                # ends), not a signal's round trip before it starts.
                self._releasing = asyncio.ensure_future(held.release())
        finally:
            if self._releasing is None:
                await held.release()

    async def _move_with_host_slots(self, input: MigrateVmInput, facts: VmFacts, limits: dict[str, int]) -> None:
        """Runs started before the cheap-moves patch: a slot per host entity, taken in sorted order."""
        vm, source, destination, policy = input.vm, input.source, input.destination, input.policy
        renewing = workflow.patched(_PATCH_SLOT_LEASE_RENEWAL)
        # A lease of minutes, renewed while the move runs: a run terminated mid-move (no compensation, no release)
        # frees both hosts within one lease, where a lease as long as the move (before the patch) held them for hours.
        lease = policy.slot_lease_seconds if renewing else policy.move_timeout_seconds + 900
        self._waiting_for = f"migration slots on {source} and {destination}"
        slots: SlotPair = await acquire_pair(
            source,
            destination,
            workflow.info().workflow_id,
            lease_seconds=lease,
            host_limits=limits,
        )
        self._waiting_for = ""
        try:
            cleanup = CleanupInput(vm, facts.vm_id, destination)
            self._register(
                f"clean leftovers on {destination}",
                lambda: self._compensation_activity(ActivityName.CLEAN_DESTINATION, cleanup),
            )
            if renewing:
                await self._move_holding(slots, lease, input, facts)
            else:
                await self._run_move(input, facts)
            self._moved(input, facts)
        finally:
            await slots.release()

    def _moved(self, input: MigrateVmInput, facts: VmFacts) -> None:
        """The VM is on the destination: undoing what came before (its role on the source, the hosts' settings)
        would now be wrong, whatever happens next. What is left to do even if verify fails or the run is
        cancelled is the VM's high availability at its new home."""
        self._compensations.clear()
        if self._ha.outcome == HaOutcome.RESTORED_ON_DESTINATION:
            snapshot = ClusterRoleSnapshot(vm=input.vm, host=input.destination, clustered=True)
            restore = RestoreClusterRoleInput(snapshot, input.destination, vm_id=facts.vm_id)
            self._register(
                f"make the cluster role on {input.destination}",
                lambda: self._compensation_activity(ActivityName.RESTORE_CLUSTER_ROLE, restore),
            )

    async def _move_holding(self, slots: SlotPair, lease: float, input: MigrateVmInput, facts: VmFacts) -> None:
        """The move with its slots renewed all along: through admission backoff, and through a cancellation until
        the host's job is terminated (the move activity waits for that)."""
        async with slots.renewed_every(lease / SLOT_RENEWALS_PER_LEASE):
            await self._run_move(input, facts)

    async def _run_move(self, input: MigrateVmInput, facts: VmFacts) -> MoveResult:
        checked = _summary(self._report) if self._report else PreflightFacts()
        move = MoveInput(
            input.vm,
            facts.vm_id,
            input.source,
            input.destination,
            # The path preflight checked (space, Compare-VM): known, it lets the move start in one round trip.
            input.storage_path or checked.storage_path or None,
            bytes_estimate=checked.move_bytes,
        )
        while True:
            self._attempt += 1
            self._flush()
            try:
                result: MoveResult = await workflow.execute_activity(
                    ActivityName.START_OR_ATTACH_MOVE,
                    move,
                    result_type=MoveResult,
                    task_queue=move_task_queue(workflow.info().task_queue) if self._cheap else None,
                    start_to_close_timeout=timedelta(seconds=input.policy.move_timeout_seconds),
                    heartbeat_timeout=(
                        timedelta(seconds=input.policy.move_heartbeat_seconds) if self._cheap else _MOVE_HEARTBEAT
                    ),
                    retry_policy=_MOVE_RETRY,
                    # The host's job must be terminated before compensation starts (temporal-notes: TRY_CANCEL
                    # would let the compensation race the still-running migration).
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
            except ActivityError as error:
                if _error_type(error) != MIGRATION_LIMIT_REACHED:
                    raise
                # Admission: the host is busy with moves snlm does not know about; requeue, not a failure.
                self._waiting_for = f"host migration limit ({_message(error)})"
                await workflow.sleep(_ADMISSION_BACKOFF)
                self._waiting_for = ""
            else:
                # The VM is on the destination: its move is whole from here on (verify, a failure after it, the end),
                # which the move's heartbeats, read only while it runs, cannot say once it has ended.
                total = result.bytes_total or move.bytes_estimate
                self._move = MoveHeartbeat(result.job_id, 100, bytes_done=total, bytes_total=total)
                return result

    async def _verify(self, input: MigrateVmInput, facts: VmFacts, *, already_there: bool) -> MigrateVmResult:
        self._set_step(Step.VERIFY)
        policy = input.policy
        verified = await self._activity(
            ActivityName.VERIFY_MOVE,
            VerifyInput(
                input.vm,
                facts.vm_id,
                input.source,
                input.destination,
                facts.files if not already_there else (),
                guest_timeout_seconds=policy.guest_timeout_seconds,
            ),
            VerifyResult,
            timeout=_READ + timedelta(seconds=policy.guest_timeout_seconds),
            heartbeat=timedelta(minutes=1),
        )
        moved_as_it_was = (
            verified.gone_from_source
            and not verified.running_on_destination
            # A VM that was off (or saved) before the move is off after it: moved, not failed; one found already
            # moved is wherever its owner left it. Runs recorded before this rule failed here; the patch keeps
            # their replay.
            and (already_there or not self._was_running())
            and workflow.patched(_PATCH_OFF_VMS_MOVE)
        )
        if not (verified.running_on_destination and verified.gone_from_source) and not moved_as_it_was:
            raise ApplicationError(
                f"{input.vm}: after the move it is "
                f"{'running' if verified.running_on_destination else 'not running'} on {input.destination} and "
                f"{'gone from' if verified.gone_from_source else 'still on'} {input.source}",
                verified,
                type=VERIFY_FAILED,
                non_retryable=True,
            )
        # The move succeeded: nothing before it is to be undone any more.
        self._compensations.clear()
        ha = self._ha
        if ha.outcome == HaOutcome.RESTORED_ON_DESTINATION:
            # Idempotent: a VM already clustered there (an earlier attempt restored it) is left as it is.
            snapshot = ClusterRoleSnapshot(vm=input.vm, host=input.destination, clustered=True)
            await self._activity(
                ActivityName.RESTORE_CLUSTER_ROLE,
                RestoreClusterRoleInput(snapshot, input.destination, vm_id=facts.vm_id),
                type(None),
            )
        warnings: tuple[str, ...] = ()
        if ha.outcome == HaOutcome.DROPPED:
            was = ha.cluster or "a cluster"
            warnings += (f"ha-dropped: {input.vm} is no longer highly available (it was in {was})",)
        if not verified.guest_answers:
            said = (
                f"guest-not-answering: {input.vm}'s guest heartbeat on {input.destination} reads "
                f"{verified.guest_heartbeat or 'nothing'} after {policy.guest_timeout_seconds:g} s"
            )
            if policy.guest_check == GuestCheck.FAIL:
                self._set_step(Step.FAILED)
                raise ApplicationError(
                    f"{said}; the VM was moved and stays on {input.destination} (a move is not undone)",
                    verified,
                    type=GUEST_NOT_ANSWERING,
                    non_retryable=True,
                )
            warnings += (said,)
        self._set_step(Step.DONE)
        return MigrateVmResult(
            vm=input.vm,
            source=input.source,
            destination=input.destination,
            moved=not already_there,
            already_there=already_there,
            cleaned_source_files=verified.cleaned_source_files,
            warnings=warnings,
            ha=ha.outcome,
            ha_cluster=ha.cluster if ha.outcome == HaOutcome.RESTORED_ON_DESTINATION else "",
            guest_answers=verified.guest_answers,
        )

    async def _verify_delegation(self, source: str, destination: str) -> None:
        missing: list[str] = []
        for host, peer in ((source, destination), (destination, source)):
            account = await self._activity(
                ActivityName.READ_COMPUTER_DELEGATION, DelegationHost(host), ComputerDelegation, timeout=_SHORT
            )
            if not account.may_delegate_to("Microsoft Virtual System Migration Service", peer):
                missing.append(f"{host} -> {peer}")
        if missing:
            raise ApplicationError(
                "delegation policy 'verify': constrained delegation is missing for " + ", ".join(missing),
                type=DELEGATION_NOT_CONFIGURED,
                non_retryable=True,
            )

    # -- compensation ------------------------------------------------------------------------------------------
    def _register(self, step: str, action: Callable[[], Awaitable[Any]]) -> None:
        self._compensations.append(_Compensation(step, action))

    async def _compensate(self) -> None:
        while self._compensations:
            compensation = self._compensations.pop()
            try:
                await compensation.action()
                self._outcomes.append(CompensationOutcome(compensation.step, ok=True))
            except Exception as error:
                # One failed compensation must not stop the others: the outcome says what is left to do by hand.
                workflow.logger.warning("compensation %s failed: %s", compensation.step, _message(error))
                self._outcomes.append(CompensationOutcome(compensation.step, ok=False, detail=_message(error)))

    async def _compensation_activity(self, name: ActivityName, argument: Any) -> None:
        self._flush()
        await workflow.execute_activity(name, argument, start_to_close_timeout=_READ, retry_policy=_COMPENSATION_RETRY)

    async def _revert_delegation(self, ensuring: asyncio.Future[EnsureDelegationResult]) -> None:
        try:
            ensured = await ensuring
        except Exception:
            return  # the ensure failed and undid its own writes
        if ensured.changed:
            self._flush()
            await workflow.execute_activity(
                ActivityName.REVERT_DELEGATION,
                ensured,
                result_type=RevertDelegationResult,
                start_to_close_timeout=_READ,
                retry_policy=_COMPENSATION_RETRY,
            )

    def _settings_restorer(self, previous: HostMigrationSettings) -> Callable[[], Awaitable[None]]:
        async def restore() -> None:
            await self._compensation_activity(ActivityName.RESTORE_MIGRATION_SETTINGS, previous)

        return restore

    # -- helpers -----------------------------------------------------------------------------------------------
    def _was_running(self) -> bool:
        """The VM ran when preflight read it (unknown counts as running: the stricter check)."""
        facts = (self._report.facts if self._report is not None else None) or {}
        state = facts.get("vm.state", "Running")
        return state in ("Running", "2", "")

    def _set_step(self, step: Step) -> None:
        """The step the `progress` query reports at once; the search attribute follows at the next wait.

        Steps that pass without waiting for anything (a skipped delegation, a VM without cluster role) would each
        cost an upsert event and an index update that nobody could ever see: the step's attribute is written when
        the run next waits (`_flush`), and always when it ends.
        """
        if self._cheap and step == self._step:
            return
        self._step = step
        self._attributes = [a for a in self._attributes if a.key.name != SA_STEP]
        self._attributes.append(_KEYS[SA_STEP].value_set(str(step)))
        if not self._cheap or step in (Step.DONE, Step.FAILED, Step.CANCELLED):
            self._upsert()

    def _flush(self) -> None:
        """Write the search attributes that changed since the last wait (cheap-moves runs)."""
        if self._cheap and self._attributes:
            self._upsert()

    def _upsert(self) -> None:
        attributes, self._attributes = self._attributes, []
        workflow.upsert_search_attributes(attributes)

    async def _activity(
        self,
        name: ActivityName,
        argument: Any,
        result_type: type[T],
        *,
        timeout: timedelta = _SHORT,
        heartbeat: timedelta | None = None,
    ) -> T:
        self._flush()
        result: T = await workflow.execute_activity(
            name,
            argument,
            result_type=result_type,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry_policy=_QUICK_RETRY,
        )
        return result


@workflow.defn(name="Preflight")
class PreflightWorkflow:
    """Preflight alone: the report of what a move would meet, with nothing changed (`snlm preflight`)."""

    @workflow.run
    async def run(self, input: PreflightInput) -> PreflightReport:
        report: PreflightReport = await workflow.execute_activity(
            ActivityName.PREFLIGHT,
            input,
            result_type=PreflightReport,
            start_to_close_timeout=_READ,
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=_QUICK_RETRY,
        )
        return report
