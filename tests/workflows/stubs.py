"""Stub activities for the MigrateVm saga, registered under the real activity names (worker.py `activities_for`).

This is how the Temporal samples mock an activity: another function with `@activity.defn(name=ActivityName.REAL_NAME)`
on the worker, so the workflow code runs unchanged on a real (time-skipping) server while the steps answer
at once with the contract's types. Every call is recorded in order with its argument and attempt, so a test
can assert the exact sequence of steps and compensations.

A test shapes the estate through the constructor (clustered or not, what the ensures change, how often a host
refuses a move for its limit) and picks failures and one step that blocks until the run is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.contracts import (
    CIFS_SERVICE,
    MIGRATION_LIMIT_REACHED,
    MIGRATION_SERVICE,
    SEVERITY_WARNING,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    ActivityName,
    CleanupInput,
    CleanupResult,
    ClusterRoleSnapshot,
    ComputerDelegation,
    Concern,
    ConcernId,
    DelegationChange,
    DelegationHost,
    EnsureDelegationInput,
    EnsureDelegationResult,
    EnsureSettingsInput,
    EnsureSettingsResult,
    HostMigrationSettings,
    HostRef,
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
    VerifyInput,
    VerifyResult,
    VmFacts,
    VmOnHost,
)

ISO_CONCERN = ConcernId.ISO_MISSING_ON_DESTINATION
MOVE_BYTES = 6 * 2**30  # the VM's memory plus disks, as preflight estimates them


@dataclass(frozen=True)
class Call:
    """One activity execution as a stub saw it.

    Attributes:
        name: the activity name.
        argument: what the workflow passed.
        attempt: Temporal's attempt number (1 unless the retry policy retried it).
        host: the one host the call is about, for the per-host steps ("" for the others).
    """

    name: str
    argument: Any
    attempt: int
    host: str = ""

    @property
    def label(self) -> str:
        """`name@host` for per-host calls, else `name`: what the tests compare sequences of."""
        return f"{self.name}@{self.host}" if self.host else self.name


def delegation_values(host: str, peer: str) -> tuple[str, ...]:
    """The msDS-AllowedToDelegateTo values `host` needs to move VMs to and from `peer` (short name only)."""
    return (f"{CIFS_SERVICE}/{peer}", f"{MIGRATION_SERVICE}/{peer}")


def admission_refusal(host: str) -> ApplicationError:
    """What the move activity raises for event 21501: admission, marked non-retryable (activities/errors.py)."""
    return ApplicationError(
        f"Move-VM on {host}: the host's concurrent live-migration limit was reached (event 21501)",
        {"kind": "admission", "error_type": MIGRATION_LIMIT_REACHED, "remedy": "wait for a migration slot"},
        type=MIGRATION_LIMIT_REACHED,
        non_retryable=True,
    )


# Activities the saga calls for both hosts at once.
_SIDE_BY_SIDE: Final = frozenset(
    str(name) for name in (ActivityName.READ_MIGRATION_SETTINGS, ActivityName.ENSURE_MIGRATION_SETTINGS)
)


class SagaStubs:
    """The saga's activities, answering from a small in-memory estate and recording every call.

    Args:
        vm, source, destination: the move the stubs answer for.
        clustered: the VM has a cluster role on the source (in CL-WEST), as preflight reports it.
        destination_cluster: the cluster the destination is a node of, as preflight reports it ("" for none).
        delegation_changed: `ensure_delegation` adds the entries (else everything was already there).
        settings_changed: `ensure_migration_settings` changes both hosts (else they were already right).
        iso_missing: preflight reports the auto-remediable ISO concern.
        admission_refusals: how many times `start_or_attach_move` refuses with MigrationLimitReached first.
        delegation_entries: `read_computer_delegation`'s msDS-AllowedToDelegateTo per host; by default each host
            lists its peer's cifs and migration services.
        failures: an error to raise, keyed by activity name or `name@host` (the host wins), on every call.
        guest_heartbeat: what verify reads of the moved guest's heartbeat (not starting with "Ok": no answer).
        block: the activity (or `name@host`) that heartbeats until it is cancelled instead of answering.
        storage_path: where preflight says the VM's files go on the destination ("": it does not say).
        networks: the migration networks a host has when its settings are right (by host; none by default).
    """

    def __init__(
        self,
        vm: str,
        source: str,
        destination: str,
        *,
        clustered: bool = True,
        destination_cluster: str = "CL-EAST",
        delegation_changed: bool = True,
        settings_changed: bool = True,
        iso_missing: bool = False,
        admission_refusals: int = 0,
        delegation_entries: Mapping[str, tuple[str, ...]] | None = None,
        failures: Mapping[str, ApplicationError] | None = None,
        guest_heartbeat: str = "OkApplicationsHealthy",
        block: str = "",
        storage_path: str = "",
        networks: Mapping[str, tuple[tuple[str, int], ...]] | None = None,
    ) -> None:
        self.vm, self.source, self.destination = vm, source, destination
        self.vm_id = "5c3f7a1e-0d2b-4e8f-9a61-2b7c4d8e9f10"
        self.files = (
            rf"D:\VMs\{vm}\Virtual Machines\{self.vm_id.upper()}.vmcx",
            rf"D:\VMs\{vm}\Virtual Hard Disks\{vm}.vhdx",
        )
        self.clustered = clustered
        self.destination_cluster = destination_cluster
        self.guest_heartbeat = guest_heartbeat
        self.delegation_changed = delegation_changed
        self.settings_changed = settings_changed
        self.iso_missing = iso_missing
        self.admission_refusals = admission_refusals
        self.delegation_entries = dict(
            delegation_entries
            if delegation_entries is not None
            else {source: delegation_values(source, destination), destination: delegation_values(destination, source)}
        )
        self.failures = dict(failures or {})
        self.block = block
        self.storage_path = storage_path
        self.networks = dict(networks or {})
        self.calls: list[Call] = []
        self.blocked = asyncio.Event()  # set when the blocking stub has started
        self.release = asyncio.Event()  # set by a test to let the blocking stub go on and finish
        self.cancelled: list[str] = []  # labels of stubs that saw their cancellation
        self.log: list[str] = []  # call labels and "<label> cancelled", in the order they happened
        self.ensured: list[EnsureDelegationResult] = []  # what ensure_delegation returned, in order

    def activities(self) -> list[Callable[..., Any]]:
        """Everything the worker registers, under the real names."""
        return [
            self.preflight,
            self.read_vm,
            self.snapshot_cluster_role,
            self.remove_cluster_role,
            self.restore_cluster_role,
            self.read_migration_settings,
            self.ensure_migration_settings,
            self.restore_migration_settings,
            self.purge_tickets,
            self.remediate,
            self.clean_destination,
            self.start_or_attach_move,
            self.verify_move,
            self.ensure_delegation,
            self.revert_delegation,
            self.read_computer_delegation,
        ]

    # -- what the tests read -----------------------------------------------------------------------------------
    def trail(self) -> list[str]:
        """Call labels in order; the calls the saga makes to both hosts at once (one step's, side by side) are
        listed source first, whichever the worker happened to start first."""
        order = {self.source: 0, self.destination: 1}
        calls = list(self.calls)
        for i in range(len(calls) - 1):
            a, b = calls[i], calls[i + 1]
            if a.name == b.name and a.name in _SIDE_BY_SIDE and order.get(a.host, 0) > order.get(b.host, 0):
                calls[i], calls[i + 1] = b, a
        return [call.label for call in calls]

    def arguments(self, name: str) -> list[Any]:
        return [call.argument for call in self.calls if call.name == name]

    # -- the machinery every stub goes through -----------------------------------------------------------------
    async def _enter(self, name: ActivityName, argument: Any, host: str = "") -> None:
        call = Call(str(name), argument, activity.info().attempt, host)
        self.calls.append(call)
        self.log.append(call.label)
        if self.block in (call.name, call.label):
            await self._hold(call.label)
        error = self.failures.get(call.label) or self.failures.get(call.name)
        if error is not None:
            # A fresh error each time: the SDK attaches the failure to the instance it raises.
            raise ApplicationError(error.message, *error.details, type=error.type, non_retryable=error.non_retryable)

    async def _hold(self, label: str) -> None:
        """Heartbeat until cancelled (a workflow cancel reaches an activity only through its heartbeats), or until
        the test releases the stub."""
        self.blocked.set()
        try:
            while not self.release.is_set():
                activity.heartbeat(label)
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled.append(label)
            self.log.append(f"{label} cancelled")
            raise

    def _settings(self, host: str, *, wanted: bool) -> HostMigrationSettings:
        if wanted or not self.settings_changed:
            return HostMigrationSettings(
                host,
                enabled=True,
                authentication="Kerberos",
                performance="Compression",
                use_any_network=True,
                networks=self.networks.get(host, ()),
                max_vm_migrations=2,
            )
        return HostMigrationSettings(
            host,
            enabled=False,
            authentication="CredSSP",
            performance="TCPIP",
            use_any_network=False,
            networks=(("10.0.0.0/24", 1),),
            max_vm_migrations=2,
        )

    # -- the stubs, one per real activity ----------------------------------------------------------------------
    @activity.defn(name=ActivityName.PREFLIGHT)
    async def preflight(self, request: PreflightInput) -> PreflightReport:
        await self._enter(ActivityName.PREFLIGHT, request)
        concerns: list[Concern] = []
        if self.iso_missing:
            concerns.append(
                Concern(
                    ISO_CONCERN,
                    SEVERITY_WARNING,
                    "the ISO is not on the destination",
                    "eject it",
                    auto_remediable=True,
                    host=request.destination,
                )
            )
        summary = PreflightFacts(
            vm_id=self.vm_id,
            clustered=self.clustered,
            cluster="CL-WEST" if self.clustered else "",
            destination_cluster=self.destination_cluster,
            move_bytes=MOVE_BYTES,
            storage_path=self.storage_path,
        )
        facts = {"vm.clustered": str(self.clustered), "vm.move_bytes": str(MOVE_BYTES)}
        return PreflightReport(request.vm, request.source, request.destination, tuple(concerns), facts, summary=summary)

    @activity.defn(name=ActivityName.READ_VM)
    async def read_vm(self, request: VmOnHost) -> VmFacts:
        await self._enter(ActivityName.READ_VM, request)
        return VmFacts(request.vm, self.vm_id, request.host, self.files, clustered=self.clustered)

    @activity.defn(name=ActivityName.SNAPSHOT_CLUSTER_ROLE)
    async def snapshot_cluster_role(self, request: VmOnHost) -> ClusterRoleSnapshot:
        await self._enter(ActivityName.SNAPSHOT_CLUSTER_ROLE, request)
        if not self.clustered:
            return ClusterRoleSnapshot(request.vm, request.host, clustered=False)
        return ClusterRoleSnapshot(
            request.vm,
            request.host,
            clustered=True,
            cluster="CL-WEST",
            group=request.vm,
            owner_node=request.host,
            preferred_owners=(request.host,),
            priority=3000,
        )

    @activity.defn(name=ActivityName.REMOVE_CLUSTER_ROLE)
    async def remove_cluster_role(self, snapshot: ClusterRoleSnapshot) -> None:
        await self._enter(ActivityName.REMOVE_CLUSTER_ROLE, snapshot)

    @activity.defn(name=ActivityName.RESTORE_CLUSTER_ROLE)
    async def restore_cluster_role(self, request: RestoreClusterRoleInput) -> None:
        await self._enter(ActivityName.RESTORE_CLUSTER_ROLE, request, request.host)

    @activity.defn(name=ActivityName.READ_MIGRATION_SETTINGS)
    async def read_migration_settings(self, request: HostRef) -> HostMigrationSettings:
        await self._enter(ActivityName.READ_MIGRATION_SETTINGS, request, request.host)
        return self._settings(request.host, wanted=False)

    @activity.defn(name=ActivityName.ENSURE_MIGRATION_SETTINGS)
    async def ensure_migration_settings(self, request: EnsureSettingsInput) -> EnsureSettingsResult:
        await self._enter(ActivityName.ENSURE_MIGRATION_SETTINGS, request, request.host)
        previous = self._settings(request.host, wanted=False)
        return EnsureSettingsResult(previous, self._settings(request.host, wanted=True), self.settings_changed)

    @activity.defn(name=ActivityName.RESTORE_MIGRATION_SETTINGS)
    async def restore_migration_settings(self, previous: HostMigrationSettings) -> None:
        await self._enter(ActivityName.RESTORE_MIGRATION_SETTINGS, previous, previous.host)

    @activity.defn(name=ActivityName.PURGE_TICKETS)
    async def purge_tickets(self, request: PurgeTicketsInput) -> None:
        await self._enter(ActivityName.PURGE_TICKETS, request)

    @activity.defn(name=ActivityName.REMEDIATE)
    async def remediate(self, request: RemediateInput) -> RemediateResult:
        await self._enter(ActivityName.REMEDIATE, request)
        return RemediateResult(fixed=request.concern_ids)

    @activity.defn(name=ActivityName.CLEAN_DESTINATION)
    async def clean_destination(self, request: CleanupInput) -> CleanupResult:
        await self._enter(ActivityName.CLEAN_DESTINATION, request, request.host)
        return CleanupResult(removed_planned_vm=True, removed_files=self.files[1:])

    @activity.defn(name=ActivityName.START_OR_ATTACH_MOVE)
    async def start_or_attach_move(self, request: MoveInput) -> MoveResult:
        await self._enter(ActivityName.START_OR_ATTACH_MOVE, request)
        if self.admission_refusals > 0:
            self.admission_refusals -= 1
            raise admission_refusal(request.source)
        return MoveResult(
            request.vm,
            request.destination,
            started=True,
            job_id="job-1",
            bytes_total=request.bytes_estimate,
            seconds=42.0,
        )

    @activity.defn(name=ActivityName.VERIFY_MOVE)
    async def verify_move(self, request: VerifyInput) -> VerifyResult:
        await self._enter(ActivityName.VERIFY_MOVE, request)
        return VerifyResult(
            running_on_destination=True,
            gone_from_source=True,
            cleaned_source_files=request.source_files[:1],
            guest_answers=self.guest_heartbeat.startswith("Ok"),
            destination_path=rf"E:\VMs\{request.vm}",
            guest_heartbeat=self.guest_heartbeat,
        )

    @activity.defn(name=ActivityName.ENSURE_DELEGATION)
    async def ensure_delegation(self, request: EnsureDelegationInput) -> EnsureDelegationResult:
        await self._enter(ActivityName.ENSURE_DELEGATION, request)
        pairs = ((request.source, request.destination), (request.destination, request.source))
        result = EnsureDelegationResult(
            tuple(
                DelegationChange(
                    f"{host.name}$",
                    f"CN={host.name},OU=Hyper-V,DC=example,DC=test",
                    delegation_values(host.name, peer.name),
                    TRUSTED_TO_AUTH_FOR_DELEGATION,
                )
                for host, peer in pairs
                if self.delegation_changed
            )
        )
        self.ensured.append(result)
        return result

    @activity.defn(name=ActivityName.REVERT_DELEGATION)
    async def revert_delegation(self, result: EnsureDelegationResult) -> RevertDelegationResult:
        await self._enter(ActivityName.REVERT_DELEGATION, result)
        return RevertDelegationResult(removed=result.changes)

    @activity.defn(name=ActivityName.READ_COMPUTER_DELEGATION)
    async def read_computer_delegation(self, host: DelegationHost) -> ComputerDelegation:
        await self._enter(ActivityName.READ_COMPUTER_DELEGATION, host, host.name)
        return ComputerDelegation(
            name=host.name,
            account_dn=f"CN={host.name},OU=Hyper-V,DC=example,DC=test",
            dns_host_name=f"{host.name.lower()}.example.test",
            allowed_to_delegate_to=self.delegation_entries.get(host.name, ()),
            service_principal_names=(f"HOST/{host.name}",),
            user_account_control=0x1000 | TRUSTED_TO_AUTH_FOR_DELEGATION,
        )
