"""The migration saga's host activities: cluster HA, host settings, tickets, remediation, the move, cleanup, verify.

Steps 3, 5, 6 and 7 of MigrateVm (DESIGN.md). Every activity here is at-least-once (Temporal may run it again
after a crash or a lost completion), so each one reads the state first, changes only what differs, and returns
what its compensation needs (invariant 3). Commands are structured cmdlets through the host client (invariant
2); the only query strings are WQL filters over values validated as GUIDs.

The move (invariant 4) never starts a second migration of a VM: before it starts one it looks for the VM on
both hosts and for a migration job of this VM on the source (the job belongs to vmms, not to a PowerShell
session, reference/hyperv-facts.md "Watching and cancelling a move"), and re-attaches to a running job. It
watches the job's Msvm_MigrationJob, heartbeating `MoveHeartbeat`; a cancelled activity terminates the host's
job (RequestStateChange 4), waits for it to end, and re-raises the cancellation.

Cancellation reaches a synchronous activity as an exception thrown into its thread (reference/temporal-notes.md).
An exception thrown in the middle of a PSRP exchange would leave the session unusable and the host's job
running, so the move runs shielded (`activity.shield_thread_cancel_exception`) and checks
`activity.is_cancelled()` between polls instead. Outside an activity (plain calls, scripts) every activity
works the same, without heartbeats or cancellation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import ntpath
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.errors import (
    ConfigurationError,
    SnlmError,
    TransientError,
    UnknownError,
)
from activities.host_errors import ErrorInfo, classify
from activities.host_settings import FIREWALL_RULE, firewall_rule_absent, migration_settings, settings_commands
from activities.hosts import NULL, Command, CommandResult, HostClient, HostSessions, side_by_side
from activities.inventory import Inventory
from activities.vms import config_file_candidates, folder_name_problem, resolve_vm, same_name, vm_files
from workflows import contracts as c
from workflows.contracts import (
    ActivityName,
    CleanupInput,
    CleanupResult,
    ClusterRoleSnapshot,
    EnsureSettingsInput,
    EnsureSettingsResult,
    HostMigrationSettings,
    HostRef,
    MoveHeartbeat,
    MoveInput,
    MoveResult,
    PurgeTicketsInput,
    RemediateInput,
    RemediateResult,
    RestoreClusterRoleInput,
    VerifyInput,
    VerifyResult,
    VmFacts,
    VmOnHost,
)
from workflows.settings_plan import plan_settings, settings_changed

__all__ = [
    "FIREWALL_RULE",
    "ISO_MISSING",
    "MigrationActivities",
    "clean_destination",
]

log = logging.getLogger(__name__)

ISO_MISSING: Final = "iso-missing-on-destination"  # the preflight concern remediate() fixes
VIRT_NAMESPACE: Final = "root/virtualization/v2"
MIGRATION_JOB: Final = "Msvm_MigrationJob"
PLANNED: Final = "PlannedVirtualMachine"
# CIM_ConcreteJob.JobState (hyperv-facts "Watching and cancelling a move").
JOB_NEW, JOB_STARTING, JOB_RUNNING = 2, 3, 4
JOB_COMPLETED, JOB_TERMINATED, JOB_KILLED, JOB_EXCEPTION = 7, 8, 9, 10
JOB_COMPLETED_WITH_WARNINGS = 32768
# VMHeartbeatStatus values that say nothing of the guest (catalogue 6.4): the service is off, or unknown.
_HEARTBEAT_SILENT: Final = frozenset({"", "Unknown", "Disabled"})
_SUCCEEDED: Final = frozenset({JOB_COMPLETED, JOB_COMPLETED_WITH_WARNINGS})
REQUEST_TERMINATE: Final = 4  # Msvm_MigrationJob.RequestStateChange RequestedState
_DURATION: Final = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)

T = TypeVar("T")


# -- small helpers ----------------------------------------------------------------------------------------------
def _in_activity() -> bool:
    return activity.in_activity()


def _heartbeat(*details: Any) -> None:
    if _in_activity():
        activity.heartbeat(*details)


def _cancelled() -> bool:
    return _in_activity() and activity.is_cancelled()


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Delay a cancellation thrown into this thread to the end of the block (a no-op outside an activity)."""
    if _in_activity():
        with activity.shield_thread_cancel_exception():
            yield
    else:
        yield


def _pause(seconds: float) -> None:
    """Sleep `seconds`, or less when the activity is cancelled meanwhile."""
    if _in_activity():
        activity.wait_for_cancelled_sync(seconds)
    else:
        time.sleep(seconds)


def _dicts(result: CommandResult) -> list[dict[str, Any]]:
    return [item for item in result.output if isinstance(item, dict)]


def _guid(value: str, what: str) -> str:
    """`value` as an upper-case GUID string (the only data that goes into a WQL filter), or a configuration error."""
    try:
        return str(uuid.UUID(str(value).strip("{}"))).upper()
    except ValueError:
        raise ConfigurationError(
            f"{what} {value!r} is not a GUID", error_type=c.PARAMETER_BINDING_FAILED, remedy="pass the VM's id"
        ) from None


def _same_host(a: str, b: str) -> bool:
    """Host names compare case-insensitively, a NetBIOS name matching its FQDN."""
    return a.split(".", 1)[0].lower() == b.split(".", 1)[0].lower()


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def _name(value: Any) -> str:
    """A node as a name: the nested object's Name, or its text."""
    if isinstance(value, dict):
        return _text(value.get("Name") or value.get("NodeName"))
    return _text(value)


def _seconds(duration: Any) -> float | None:
    """An ISO 8601 duration as PSRP carries a TimeSpan ("PT6.88S"), in seconds."""
    match = _DURATION.match(_text(duration))
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {key: float(value) if value else 0.0 for key, value in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def _raise_unexpected(result: CommandResult, *, ignore: Callable[[ErrorInfo], bool] = lambda info: False) -> None:
    """After a `check=False` probe: raise the first error that `ignore` does not accept (and, for a statement
    of a batch whose end the client did not see because an earlier one ended the batch, say so rather than read
    it as empty)."""
    for info, error in zip(result.records, result.errors, strict=False):
        if not ignore(info):
            raise error
    if result.state == "Unknown":
        raise UnknownError(
            f"{result.command} on {result.host}: no result (an earlier command of its batch ended it)",
            error_type=c.HOST_COMMAND_FAILED,
            remedy="retried; see the host's record of the earlier command",
            details={"host": result.host, "command": result.command},
        )


def _not_found(info: ErrorInfo) -> bool:
    return info.category == 13 or "not found" in info.message.lower() or "unable to find" in info.message.lower()


# -- reading a host ---------------------------------------------------------------------------------------------
def _get_vm(vm_id: str) -> Command:
    return Command("Get-VM", {"Id": [uuid.UUID(vm_id)]})


def _vm_by_id(client: HostClient, vm_id: str) -> dict[str, Any] | None:
    """The VM with this id on the host (realized or planned), or None."""
    return _vm_in(client, client.pipeline([_get_vm(vm_id)], check=False))


def _vm_in(client: HostClient, *results: CommandResult) -> dict[str, Any] | None:
    """The VM a `check=False` Get-VM -Id (and pipelines from it) found, or None; errors but VmNotFound raised."""
    for result in results:
        _raise_unexpected(result, ignore=lambda info: _error_type(client, info) == c.VM_NOT_FOUND)
    found = _dicts(results[0])
    return found[0] if found else None


def _error_type(client: HostClient, info: ErrorInfo) -> str:
    return classify(info, client.host, info.activity or "Get-VM").error_type


def _is_planned(vm: Mapping[str, Any] | None) -> bool:
    return vm is not None and _text(vm.get("VirtualMachineType")) == PLANNED


def _realized(vm: Mapping[str, Any] | None) -> bool:
    return vm is not None and not _is_planned(vm)


def _vm_commands(vm_id: str, *then: Command) -> list[Command]:
    """`Get-VM -Id <id> | <then>`: act on exactly this VM (a name may be shared by a planned VM)."""
    return [_get_vm(vm_id), *then]


def _move_vm(vm_id: str, destination: str, storage: str) -> list[Command]:
    """`Get-VM -Id <id> | Move-VM -IncludeStorage -AsJob`: Move-VM -Name would take the name as a pattern and move
    every VM it matches."""
    return _vm_commands(
        vm_id,
        Command(
            "Move-VM",
            {"DestinationHost": destination, "DestinationStoragePath": storage},
            switches=("IncludeStorage", "AsJob"),
        ),
    )


def _jobs_command(*, vm_id: str | None = None, job_id: str | None = None) -> Command:
    """Get-CimInstance of Msvm_MigrationJob, filtered by the VM's id or the job's InstanceID."""
    if job_id is not None:
        wql = f"InstanceID='{_guid(job_id, 'job id')}'"
    elif vm_id is not None:
        wql = f"VirtualSystemName='{_guid(vm_id, 'VM id')}'"
    else:
        wql = None
    return Command("Get-CimInstance", {"ClassName": MIGRATION_JOB, "Namespace": VIRT_NAMESPACE, "Filter": wql})


def _jobs(client: HostClient, *, vm_id: str | None = None, job_id: str | None = None) -> list[dict[str, Any]]:
    """Msvm_MigrationJob instances on the host, filtered by the VM's id or the job's InstanceID."""
    return _dicts(client.pipeline([_jobs_command(vm_id=vm_id, job_id=job_id)]))


def _job_state(job: Mapping[str, Any]) -> int:
    return _int(job.get("JobState"))


# A VM read as realized on both hosts is read again this many times, this far apart, before it is reported as two
# copies: the two hosts are read one after the other, and a move may end between the reads.
_SETTLE_LOOKS: Final = 3
_SETTLE_PAUSE: Final = 1.0


class _BothRealized(Exception):
    """The source's reading and the destination's, taken one after the other, both show the VM realized."""


def _running(job: Mapping[str, Any]) -> bool:
    return _job_state(job) < JOB_COMPLETED


def _test_paths(paths: Sequence[str]) -> Command:
    """One Test-Path for all `paths` (a bool per path, in order)."""
    return Command("Test-Path", {"LiteralPath": list(paths)})


def _existing(paths: Sequence[str], result: CommandResult) -> list[str]:
    return [path for path, found in zip(paths, result.output, strict=False) if found is True]


def _file_exists(client: HostClient, paths: Sequence[str]) -> list[str]:
    """The paths among `paths` that exist on the host (one Test-Path for all)."""
    if not paths:
        return []
    return _existing(paths, client.pipeline([_test_paths(paths)]))


def _remove_files(client: HostClient, paths: Sequence[str]) -> tuple[str, ...]:
    """Remove the files among `paths` that exist; returns those removed. A file in use stays (and is not listed)."""
    return _remove_existing(client, _file_exists(client, paths))


def _remove_existing(client: HostClient, existing: Sequence[str]) -> tuple[str, ...]:
    """Remove `existing` (files Test-Path found); returns those removed. A file in use stays (and is not listed)."""
    if not existing:
        return ()
    result = client.run("Remove-Item", {"LiteralPath": list(existing)}, switches=("Force",), check=False)
    failed: set[str] = set()
    for info, error in zip(result.records, result.errors, strict=False):
        if isinstance(error, TransientError) or not info.target:
            raise error
        failed.add(info.target.lower())
        log.warning("could not remove %s on %s: %s", info.target, client.host, info.message)
    return tuple(path for path in existing if path.lower() not in failed)


def _dedupe(paths: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for path in paths:
        if path:
            seen.setdefault(path.lower(), path)
    return list(seen.values())


class _Unread(enum.Enum):
    """The type of `_UNREAD`."""

    UNREAD = "unread"


_UNREAD: Final = _Unread.UNREAD  # "not read yet", where None already means "read: not there"


def clean_destination(
    client: HostClient,
    vm_id: str,
    *,
    also: Sequence[str] = (),
    found: dict[str, Any] | _Unread | None = _UNREAD,
    tested: CommandResult | None = None,
) -> CleanupResult:
    """Remove what a failed move left on the host `client` talks to: the planned VM with this id and its
    (partial) disks, plus any of `also` that exist (the files a move to the same place would write).

    `found` is the VM with this id as the caller just read it on that host (None: it is not there); by default it
    is read here. A realized VM with this id means the move succeeded: nothing is removed, not even `also`.
    `tested` is the caller's Test-Path of `also` (without repeats, in order), made with that reading: when no VM
    was found, it says which of them to remove without a round trip of its own.
    """
    if found is _UNREAD:
        found = _vm_by_id(client, vm_id)
    if _realized(found):
        return CleanupResult()
    if found is None and tested is not None:
        _raise_unexpected(tested)
        return CleanupResult(removed_files=_remove_existing(client, _existing(_dedupe(also), tested)))
    paths: list[str] = []
    removed_planned = False
    if found is not None:
        drives = client.pipeline(_vm_commands(vm_id, Command("Get-VMHardDiskDrive")))
        paths += [_text(d.get("Path")) for d in _dicts(drives) if d.get("Path") and d.get("DiskNumber") is None]
        # The planned VM first (vmms holds its files while it is registered); its configuration files go with it.
        client.pipeline(_vm_commands(vm_id, Command("Remove-VM", switches=("Force",))))
        removed_planned = True
    removed = _remove_files(client, _dedupe([*paths, *also]))
    return CleanupResult(removed_planned_vm=removed_planned, removed_files=removed)


# -- host settings ----------------------------------------------------------------------------------------------
def _read_settings(client: HostClient) -> HostMigrationSettings:
    """The host's live-migration settings: three independent reads in one round trip, parsed as preflight parses
    them (activities/host_settings.py), so what preflight hands the saga is what a restore puts back."""
    host, migration_networks, rules = client.batch(list(settings_commands()), check=False)
    _raise_unexpected(host)
    _raise_unexpected(migration_networks)
    _raise_unexpected(rules, ignore=firewall_rule_absent)
    return migration_settings(client.host, _dicts(host), _dicts(migration_networks), _dicts(rules))


def _set_vmhost(client: HostClient, now: HostMigrationSettings, want: HostMigrationSettings) -> None:
    parameters: dict[str, Any] = {}
    if want.authentication and want.authentication.lower() != now.authentication.lower():
        parameters["VirtualMachineMigrationAuthenticationType"] = want.authentication
    if want.performance and want.performance.lower() != now.performance.lower():
        parameters["VirtualMachineMigrationPerformanceOption"] = want.performance
    if want.use_any_network != now.use_any_network:
        parameters["UseAnyNetworkForMigration"] = want.use_any_network
    if parameters:
        client.run("Set-VMHost", parameters)


# -- the move ---------------------------------------------------------------------------------------------------
@dataclass
class _Move:
    """One attempt of start_or_attach_move: what it learned (sessions are checked out around each read)."""

    request: MoveInput
    vm_id: str
    started: bool = False
    job_id: str = ""
    t0: float = field(default_factory=time.monotonic)


def _previous_job_id() -> str:
    """The job id a previous attempt heartbeated (a MoveHeartbeat, or the dict it arrives as)."""
    if not _in_activity():
        return ""
    details = activity.info().heartbeat_details
    if not details:
        return ""
    last = details[-1]
    if isinstance(last, MoveHeartbeat):
        return last.job_id
    if isinstance(last, Mapping):
        return _text(last.get("job_id"))
    return ""


def _first_attempt() -> bool:
    """The activity's first attempt, with no job heartbeated by an earlier one (outside an activity: true)."""
    return (not _in_activity() or activity.info().attempt <= 1) and not _previous_job_id()


def _pace(baseline: tuple[float, int] | None, now: float, percent: int) -> tuple[float, int]:
    """The baseline the job's pace is measured from: the first reading, moved to each later one while the percent
    has not gone past it. So the pace is known at the first reading that shows progress (not one poll later), and
    the seconds a job spends connecting and preparing at 0 % (4 s or more on real hosts) do not count as slow
    copying: counted, they made the watch expect the end later than it came, and poll up to a whole interval after
    it while both hosts' slots were held."""
    if baseline is None or percent <= baseline[1]:
        return (now, percent)
    return baseline


def _job_error(host: str, job: Mapping[str, Any], request: MoveInput) -> SnlmError:
    """The engine's error for a migration job that ended without moving the VM."""
    state = _job_state(job)
    description = _text(job.get("ErrorDescription"))
    summary = _text(job.get("ErrorSummaryDescription"))
    details = {
        "vm": request.vm,
        "source": request.source,
        "destination": request.destination,
        "job_id": _text(job.get("InstanceID")),
        "job_state": state,
        "percent": _int(job.get("PercentComplete")),
        "error_code": _int(job.get("ErrorCode")),
        "error_description": description,
        "error_summary": summary,
    }
    said = " ".join(part for part in (summary, description) if part)
    if state == JOB_TERMINATED:
        return ConfigurationError(
            f"Move-VM of {request.vm} on {host}: the migration job was terminated by someone else: {said}".strip(),
            error_type=c.MOVE_CANCELLED,
            remedy="find out who cancelled the migration, then submit the move again",
            details=details,
        )
    if state == JOB_KILLED:
        return TransientError(
            f"Move-VM of {request.vm} on {host}: the migration job was killed (vmms restarted?): {said}".strip(),
            error_type=c.MOVE_FAILED,
            remedy="the move is retried once the host's Virtual Machine Management Service answers",
            details=details,
        )
    error = classify(
        ErrorInfo(message=said or f"migration job ended in state {state}", activity="Move-VM"), host, "Move-VM"
    )
    error.details.update(details)
    if isinstance(error, UnknownError):
        return UnknownError(error.reason, error_type=c.MOVE_FAILED, remedy=error.remedy, details=error.details)
    return error


class MigrationActivities:
    """The saga's host activities; synchronous (PSRP blocks), so the worker runs them on a thread pool.

    Args:
        inventory: the worker's host inventory (addresses and credential references).
        poll_seconds: how often the move reads the host's migration job (and heartbeats); real seconds.
        terminate_timeout: how long a cancelled move waits for the host's job to read Terminated.
        max_move_seconds: the longest one attempt watches a move before it terminates it (the workflow's
            start-to-close timeout should be the tighter bound).
        progress: called with (workflow id, heartbeat) as a move advances, so the workflow can answer its
            `progress` query (the worker sends it as a signal); never allowed to fail the move.
        sessions: the worker's host sessions, shared with the other activities; by default a pool of this
            instance's own, over `inventory`.
        client_options: HostClient keyword arguments (connect_timeout, read_timeout, operation_timeout,
            command_timeout) for that pool of its own; a shared pool has its own.

    Every activity checks a session out only around the commands it runs, never across a wait (the move
    checks one out per poll of the host's job), and reads what it needs of one host in one batch where the
    reads do not depend on each other.
    """

    def __init__(
        self,
        inventory: Inventory,
        *,
        poll_seconds: float = 1.0,
        terminate_timeout: float = 120.0,
        max_move_seconds: float = 24 * 3600.0,
        progress: Callable[[str, MoveHeartbeat], None] | None = None,
        sessions: HostSessions | None = None,
        **client_options: Any,
    ) -> None:
        if poll_seconds <= 0 or terminate_timeout <= 0 or max_move_seconds <= 0:
            raise ValueError("poll_seconds, terminate_timeout and max_move_seconds must be positive")
        if sessions is not None and client_options:
            raise ValueError("client options belong to the shared sessions: pass them to HostSessions")
        self.sessions = sessions if sessions is not None else HostSessions(inventory, **client_options)
        read_timeout = float(self.sessions.client_options.get("read_timeout", 30.0))
        if poll_seconds >= read_timeout:
            raise ValueError(f"poll_seconds ({poll_seconds}) must be shorter than the read timeout ({read_timeout})")
        self._inventory = inventory
        self._poll = poll_seconds
        self._terminate_timeout = terminate_timeout
        self._max_move = max_move_seconds
        self._progress = progress

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _client(self, host: str) -> contextlib.AbstractContextManager[HostClient]:
        """A session of `host` checked out for a `with` block."""
        return self.sessions.session(host)

    # -- read_vm ----------------------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.READ_VM)
    def read_vm(self, request: VmOnHost) -> VmFacts:
        """The VM's id, files (configuration and VHDs that exist) and clustered flag. No VM: VmNotFound."""
        return self._read_vm(request)

    def _read_vm(self, request: VmOnHost) -> VmFacts:
        with self._client(request.host) as client:
            # The name taken literally (never as a pattern); exactly one VM, then its Id from here on.
            vm = resolve_vm(client, request.vm)
            vm_id = str(vm.get("Id") or vm.get("VMId"))
            candidates = config_file_candidates(vm)
            # Its disks and which configuration files exist: one round trip.
            drives, *tested = client.batch(
                [
                    _vm_commands(vm_id, Command("Get-VMHardDiskDrive")),
                    *([_test_paths(candidates)] if candidates else []),
                ]
            )
            config = _existing(candidates, tested[0]) if tested else []
        # The same files preflight hands the saga (PreflightFacts.vm_files), computed by the same code.
        return VmFacts(
            vm=_text(vm.get("Name")) or request.vm,
            vm_id=vm_id,
            host=request.host,
            files=vm_files(config, _dicts(drives)),
            clustered=bool(vm.get("IsClustered")),
        )

    # -- cluster HA -------------------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.SNAPSHOT_CLUSTER_ROLE)
    def snapshot_cluster_role(self, request: VmOnHost) -> ClusterRoleSnapshot:
        """What restoring the VM's cluster role needs; `clustered` False when Get-VM says IsClustered false."""
        return self._snapshot(request)

    def _snapshot(self, request: VmOnHost) -> ClusterRoleSnapshot:
        with self._client(request.host) as client:
            if not resolve_vm(client, request.vm).get("IsClustered"):
                return ClusterRoleSnapshot(vm=request.vm, host=request.host, clustered=False)
            # The role is named after its VM; the cluster's groups are listed and compared here, as VM names are
            # (Get-ClusterGroup -Name takes wildcards too).
            groups = [g for g in _dicts(client.run("Get-ClusterGroup")) if same_name(_text(g.get("Name")), request.vm)]
            group = groups[0] if groups else {}
            name = _text(group.get("Name")) or request.vm
            owners = _dicts(client.run("Get-ClusterOwnerNode", {"Group": name}))
        preferred = tuple(_name(node) for entry in owners for node in (entry.get("OwnerNodes") or []))
        anti = group.get("AntiAffinityClassNames") or []
        return ClusterRoleSnapshot(
            vm=request.vm,
            host=request.host,
            clustered=True,
            cluster=_text(group.get("Cluster")),
            group=name,
            owner_node=_name(group.get("OwnerNode")),
            preferred_owners=tuple(owner for owner in preferred if owner),
            priority=_int(group.get("Priority"), 2000),
            anti_affinity_class_names=tuple(_text(a) for a in anti) if isinstance(anti, list) else (),
        )

    @activity.defn(name=ActivityName.REMOVE_CLUSTER_ROLE)
    def remove_cluster_role(self, snapshot: ClusterRoleSnapshot) -> None:
        """Remove-ClusterGroup -RemoveResources -Force (never offline first); a role already gone is success."""
        self._remove_role(snapshot)

    def _remove_role(self, snapshot: ClusterRoleSnapshot) -> None:
        if not snapshot.clustered:
            return
        group = snapshot.group or snapshot.vm
        with self._client(snapshot.host) as client:
            found = client.run("Get-ClusterGroup", {"Name": group}, check=False)
            _raise_unexpected(found, ignore=_not_found)
            if not _dicts(found):
                return
            removed = client.run(
                "Remove-ClusterGroup", {"Name": group}, switches=("RemoveResources", "Force"), check=False
            )
            _raise_unexpected(removed, ignore=_not_found)  # removed meanwhile: the same outcome

    @activity.defn(name=ActivityName.RESTORE_CLUSTER_ROLE)
    def restore_cluster_role(self, request: RestoreClusterRoleInput) -> None:
        """Make the VM highly available again on `request.host`'s cluster, with the snapshot's preferred owners
        when that is the snapshot's cluster. Already clustered is success."""
        self._restore_role(request)

    def _restore_role(self, request: RestoreClusterRoleInput) -> None:
        snapshot = request.snapshot
        if not snapshot.clustered:
            return
        group_name = snapshot.group or snapshot.vm
        same_cluster_host = _same_host(request.host, snapshot.host)
        with self._client(request.host) as client:
            if request.vm_id:
                # By Id: a name is a pattern to Hyper-V and may match several VMs (catalogue 6.1).
                by_id = _vm_by_id(client, _guid(request.vm_id, "VM id"))
                vms = [by_id] if _realized(by_id) and by_id is not None else []
            else:
                vms = [vm for vm in _dicts(client.run("Get-VM", {"Name": snapshot.vm})) if _realized(vm)]
            if not vms:
                raise ConfigurationError(
                    f"Add-ClusterVirtualMachineRole on {request.host}: {snapshot.vm} is not on {request.host}",
                    error_type=c.CLUSTER_ROLE_FAILED,
                    remedy=f"make {snapshot.vm} highly available by hand on the node that runs it",
                    details={"vm": snapshot.vm, "host": request.host},
                )
            if vms[0].get("IsClustered"):
                groups = _dicts(client.run("Get-ClusterGroup", {"Name": group_name}, check=False))
            else:
                parameters: dict[str, Any] = (
                    {"VMId": [uuid.UUID(request.vm_id)]} if request.vm_id else {"VMName": snapshot.vm}
                )
                if request.vm_id or group_name.lower() != snapshot.vm.lower():
                    parameters["Name"] = group_name
                if same_cluster_host and snapshot.cluster:
                    parameters["Cluster"] = snapshot.cluster
                groups = _dicts(client.run("Add-ClusterVirtualMachineRole", parameters))
            cluster = _text(groups[0].get("Cluster")) if groups else ""
            if not snapshot.preferred_owners or not cluster or cluster.lower() != snapshot.cluster.lower():
                # Another cluster's nodes cannot own the role; its own defaults stand.
                return
            lists = _dicts(client.run("Get-ClusterOwnerNode", {"Group": group_name}))
            current = [_name(node) for entry in lists for node in (entry.get("OwnerNodes") or [])]
            if [o.lower() for o in current] != [o.lower() for o in snapshot.preferred_owners]:
                client.run("Set-ClusterOwnerNode", {"Group": group_name, "Owners": list(snapshot.preferred_owners)})
            # Priority and anti-affinity are properties (`(Get-ClusterGroup X).Priority = n`), not cmdlet
            # parameters: they come back with the role's defaults and stay in the snapshot for the record.

    def _publish(self, beat: MoveHeartbeat) -> None:
        workflow_id = activity.info().workflow_id if _in_activity() else None
        if self._progress is None or workflow_id is None:
            return
        try:
            self._progress(workflow_id, beat)
        except Exception:  # progress is for people watching; the move goes on without it
            log.warning("could not report move progress", exc_info=True)

    # -- host settings ----------------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.READ_MIGRATION_SETTINGS)
    def read_migration_settings(self, request: HostRef) -> HostMigrationSettings:
        """The host's live-migration settings as they are: what a later restore puts back. The saga reads them
        before it changes anything, so a retried ensure cannot mistake its own change for the original."""

        def read() -> HostMigrationSettings:
            with self._client(request.host) as client:
                return _read_settings(client)

        return read()

    @activity.defn(name=ActivityName.ENSURE_MIGRATION_SETTINGS)
    def ensure_migration_settings(self, request: EnsureSettingsInput) -> EnsureSettingsResult:
        """Live migration enabled with the wanted authentication, performance option and networks, and the
        firewall rule for TCP 6600 enabled; returns the previous settings (what restore puts back)."""
        return self._ensure_settings(request)

    def _ensure_settings(self, request: EnsureSettingsInput) -> EnsureSettingsResult:
        with self._client(request.host) as client:
            previous = _read_settings(client)
            plan = plan_settings(previous, request)
            networks = list(previous.networks)
            for subnet in plan.add:
                added = _dicts(client.run("Add-VMMigrationNetwork", {"Subnet": subnet}, switches=("Passthru",)))
                networks.append((subnet, _int(added[0].get("Priority")) if added else 0))
            want = dataclasses.replace(plan.want, networks=tuple(networks))
            _set_vmhost(client, previous, want)
            if not previous.enabled:
                client.run("Enable-VMMigration")
            if not previous.firewall_rule_enabled:
                client.run("Enable-NetFirewallRule", {"Name": FIREWALL_RULE})
        return EnsureSettingsResult(previous=previous, current=want, changed=settings_changed(previous, want))

    @activity.defn(name=ActivityName.RESTORE_MIGRATION_SETTINGS)
    def restore_migration_settings(self, previous: HostMigrationSettings) -> None:
        """Put the host's live-migration settings back exactly as `previous` says (idempotent)."""
        self._restore_settings(previous)

    def _restore_settings(self, previous: HostMigrationSettings) -> None:
        with self._client(previous.host) as client:
            now = _read_settings(client)
            wanted = dict(previous.networks)
            present = {subnet for subnet, _ in now.networks}
            for subnet in present - wanted.keys():
                client.run("Remove-VMMigrationNetwork", {"Subnet": subnet})
            for subnet, priority in previous.networks:
                if subnet not in present:
                    client.run("Add-VMMigrationNetwork", {"Subnet": subnet, "Priority": priority or None})
            _set_vmhost(client, now, previous)
            if previous.enabled != now.enabled:
                client.run("Enable-VMMigration" if previous.enabled else "Disable-VMMigration")
            if previous.firewall_rule_enabled != now.firewall_rule_enabled:
                rule = "Enable-NetFirewallRule" if previous.firewall_rule_enabled else "Disable-NetFirewallRule"
                client.run(rule, {"Name": FIREWALL_RULE})

    # -- tickets and remediation ------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.PURGE_TICKETS)
    def purge_tickets(self, request: PurgeTicketsInput) -> None:
        """`klist purge -li 0x3e7` on each host: the machine account fetches tickets with the new delegation."""
        self._purge(request)

    def _purge(self, request: PurgeTicketsInput) -> None:
        for host in dict.fromkeys(request.hosts):
            with self._client(host) as client:
                client.run("klist", arguments=("purge", "-li", "0x3e7"))
            _heartbeat(f"tickets purged on {host}")

    @activity.defn(name=ActivityName.REMEDIATE)
    def remediate(self, request: RemediateInput) -> RemediateResult:
        """Fix the auto-remediable concerns it knows (today: eject an ISO the destination lacks); unknown
        concern ids are ignored and not reported fixed."""
        return self._remediate(request)

    def _remediate(self, request: RemediateInput) -> RemediateResult:
        fixed: list[str] = []
        if ISO_MISSING in request.concern_ids:
            with self._client(request.host) as client:
                vm_id = str(resolve_vm(client, request.vm).get("Id"))
                for drive in _dicts(client.pipeline(_vm_commands(vm_id, Command("Get-VMDvdDrive")))):
                    if not drive.get("Path"):
                        continue
                    # Get-VM -Id | Get-VMDvdDrive (this drive) | Set-VMDvdDrive -Path $null: ejects its media.
                    client.pipeline(
                        _vm_commands(
                            vm_id,
                            Command(
                                "Get-VMDvdDrive",
                                {
                                    "ControllerNumber": _int(drive.get("ControllerNumber")),
                                    "ControllerLocation": _int(drive.get("ControllerLocation")),
                                },
                            ),
                            Command("Set-VMDvdDrive", {"Path": NULL}),
                        )
                    )
            fixed.append(ISO_MISSING)
        return RemediateResult(fixed=tuple(fixed))

    # -- cleanup ----------------------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.CLEAN_DESTINATION)
    def clean_destination(self, request: CleanupInput) -> CleanupResult:
        """Remove the planned VM and partial disks a failed move left on `request.host`; a realized VM with that
        id (the move succeeded) means nothing is removed."""
        return self._clean(request)

    def _clean(self, request: CleanupInput) -> CleanupResult:
        vm_id = _guid(request.vm_id, "VM id")
        with self._client(request.host) as client:
            return clean_destination(client, vm_id)

    # -- the move ---------------------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.START_OR_ATTACH_MOVE)
    def start_or_attach_move(self, request: MoveInput) -> MoveResult:
        """Move the VM with its storage, or re-attach to the migration already running, and watch it to the end.

        Never starts a second migration of the VM (invariant 4). A cancelled attempt terminates the host's job,
        waits for it to end and re-raises the cancellation.
        """
        return self._move(request)

    def _move(self, request: MoveInput) -> MoveResult:
        vm_id = _guid(request.vm_id, "VM id")
        with _shielded():
            if request.storage_path and _first_attempt():
                started = self._start_at_once(_Move(request, vm_id))
                if started is not None:
                    return started
            # Nothing was changed when the hosts disagreed: look again from the jobs on.
            for _ in range(_SETTLE_LOOKS - 1):
                with contextlib.suppress(_BothRealized):
                    return self._start_or_attach(_Move(request, vm_id))
                _pause(_SETTLE_PAUSE)
            try:
                return self._start_or_attach(_Move(request, vm_id))
            except _BothRealized:
                raise self._two_places(request) from None

    def _start_at_once(self, move: _Move) -> MoveResult | None:
        """The first attempt's move in one round trip to the source: its jobs, `Get-VM -Id | Move-VM -AsJob`, its
        jobs again. None when the careful way must decide (it reads both hosts, cleans, and starts or re-attaches).

        Nothing here needs the destination read first: vmms refuses a move of a VM that is already migrating, and
        fails one at preparation, before anything is copied, when the destination holds a VM with this Id (a
        leftover planned VM, or a realized copy) or a file the move would write. Those are the careful way's
        cases, and it meets them after the refusal as it would have before: it reads the jobs and re-attaches to a
        running one, finds a VM already moved or in two places, cleans leftovers, then starts. Only a first
        attempt with no job heartbeated comes here: any later one may have a job of its own to find.
        """
        request, vm_id = move.request, move.vm_id
        _heartbeat(MoveHeartbeat("", 0, 0, request.bytes_estimate))
        if _cancelled():
            raise CancelledError("cancelled before the move started")
        storage = request.storage_path or ""
        with self._client(request.source) as source:
            before_read, moved, after_read = source.batch(
                [
                    _jobs_command(vm_id=vm_id),
                    _move_vm(vm_id, request.destination, storage),
                    _jobs_command(vm_id=vm_id),
                ],
                check=False,
            )
            host = source.host
        if not (before_read.ok and after_read.ok) or moved.state != "Completed":
            # A job may have started unseen: the careful way reads the jobs first and re-attaches to it.
            return None
        if any(_running(job) for job in _dicts(before_read)):
            return None  # someone else's move of this VM runs (this Move-VM was refused): re-attach to it
        if moved.records:
            if all(_error_type(source, info) == c.VM_NOT_FOUND for info in moved.records):
                return None  # not on the source: moved already, or nowhere; the careful way says which
            _raise_unexpected(moved)  # refused as the careful way's Move-VM would have been (a host limit, ...)
        move.started = True
        before = {_text(job.get("InstanceID")) for job in _dicts(before_read)}
        fresh = [job for job in _dicts(after_read) if _text(job.get("InstanceID")) not in before]
        if not fresh:
            return self._outcome_without_job(move)
        move.job_id = _text(fresh[0].get("InstanceID"))
        try:
            return self._watch(move, fresh[0], host)
        except SnlmError as error:
            if error.error_type != c.DESTINATION_LEFTOVERS:
                raise
            log.info(
                "the move of %s met leftovers on %s before copying anything: %s", request.vm, request.destination, error
            )
            return None

    def _start_or_attach(self, move: _Move) -> MoveResult:
        request, vm_id = move.request, move.vm_id
        # Alive before the job exists: under load the reads and the clean-up before Move-VM can outlast the heartbeat
        # timeout, and the server then starts the next attempt beside this one (the job id seen last is kept).
        _heartbeat(MoveHeartbeat(_previous_job_id(), 0, 0, request.bytes_estimate))
        with self._client(request.source) as source:
            # The VM's migration jobs, the VM and its disks, in one round trip. Both Get-VM statements fail alike
            # (VmNotFound) when the VM is not there, so it does not matter which of them a record is placed in.
            jobs_read, vm_read, drives_read = source.batch(
                [_jobs_command(vm_id=vm_id), _get_vm(vm_id), _vm_commands(vm_id, Command("Get-VMHardDiskDrive"))],
                check=False,
            )
            _raise_unexpected(jobs_read)
            on_source = _vm_in(source, vm_read, drives_read)
        jobs = _dicts(jobs_read)
        # 1. A job this request already has: the previous attempt's, then any running job of this VM.
        previous = _previous_job_id().lower()
        running = [job for job in jobs if _running(job)]
        mine = [job for job in running if previous and _text(job.get("InstanceID")).lower() == previous]
        if mine or running:
            job = (mine or running)[0]
            target = _text(job.get("DestinationHost"))
            if not mine and target and not _same_host(target, request.destination):
                raise ConfigurationError(
                    f"Move-VM of {request.vm} on {request.source}: a migration to {target} is already running",
                    error_type=c.MOVE_FAILED,
                    remedy=f"let the migration to {target} finish (or cancel it), then submit the move again",
                    details={"vm": request.vm, "job_id": _text(job.get("InstanceID")), "destination": target},
                )
            move.job_id = _text(job.get("InstanceID"))
            # The job as just read is the watch's first reading.
            return self._watch(move, job, source.host)
        # 2. Where the VM is; 3. clean what an earlier failed move left on the destination. With the storage path
        # given, the files the move will write are known now: which of them exist is read with the VM.
        vhds = [_text(d.get("Path")) for d in _dicts(drives_read) if d.get("Path") and d.get("DiskNumber") is None]
        given = request.storage_path
        targets = _dedupe([ntpath.join(given, ntpath.basename(p)) for p in vhds]) if given else []
        with self._client(request.destination) as destination:
            if not given:
                reads = destination.batch([_get_vm(vm_id), Command("Get-VMHost")], check=False)
            else:
                reads = destination.batch([_get_vm(vm_id), *([_test_paths(targets)] if targets else [])], check=False)
            on_destination = _vm_in(destination, reads[0])
            if _realized(on_destination):
                if _realized(on_source):
                    # The source was read before the destination: a move that ended in between (another attempt's,
                    # or anyone's) looks like this too. `_move` looks again before calling it two copies.
                    raise _BothRealized
                return MoveResult(request.vm, request.destination, started=False, already_moved=True)
            if not _realized(on_source):
                raise ConfigurationError(
                    f"{request.vm} ({vm_id}) is on neither {request.source} nor {request.destination}",
                    error_type=c.VM_NOT_FOUND,
                    remedy="find where the VM runs (Get-VM on the hosts), then submit the move again",
                    details={"vm": request.vm, "vm_id": vm_id},
                )
            if _cancelled():
                raise CancelledError("cancelled before the move started")
            storage = request.storage_path or self._default_storage(request, reads[1])
            cleaned = clean_destination(
                destination,
                vm_id,
                also=[ntpath.join(storage, ntpath.basename(p)) for p in vhds],  # the storage path's: `targets` if given
                found=on_destination,  # read a moment ago, in the batch above
                tested=reads[1] if targets else None,
            )
        if cleaned.removed_planned_vm or cleaned.removed_files:
            log.info("cleaned leftovers of %s on %s: %s", request.vm, request.destination, cleaned)
        # The jobs read in step 1 are those from before this move: none of them was running then, and a move
        # of this VM started meanwhile by anyone else would make this Move-VM fail.
        before = {_text(job.get("InstanceID")) for job in jobs}
        move.t0 = time.monotonic()
        _heartbeat(MoveHeartbeat(_previous_job_id(), 0, 0, request.bytes_estimate))
        with self._client(request.source) as source:
            # The job it started is read in the same round trip: a read, so nothing changes if the move failed (its
            # error is raised; the read after it may have run unseen).
            _, jobs_read = source.batch([_move_vm(vm_id, request.destination, storage), _jobs_command(vm_id=vm_id)])
            move.started = True
            host = source.host
        fresh = [job for job in _dicts(jobs_read) if _text(job.get("InstanceID")) not in before]
        if not fresh:
            # Ended and gone already (a very fast move, or vmms restarted): the hosts say how it went.
            return self._outcome_without_job(move)
        move.job_id = _text(fresh[0].get("InstanceID"))
        return self._watch(move, fresh[0], host)

    @staticmethod
    def _default_storage(request: MoveInput, vmhost: CommandResult) -> str:
        """The destination's VirtualMachinePath joined with a folder named after the VM."""
        _raise_unexpected(vmhost)
        hosts = _dicts(vmhost)
        base = _text(hosts[0].get("VirtualMachinePath")) if hosts else ""
        if not base:
            raise ConfigurationError(
                f"Get-VMHost on {request.destination}: no VirtualMachinePath",
                error_type=c.MOVE_FAILED,
                remedy="give the move a storage path",
            )
        problem = folder_name_problem(request.vm)
        if problem:
            raise ConfigurationError(
                f"Move-VM of {request.vm}: its files cannot go to a folder named after it under {base}: {problem}",
                error_type=c.MOVE_FAILED,
                remedy="give the move a storage path, or rename the VM",
            )
        return ntpath.join(base, request.vm)

    def _watch(self, move: _Move, first: Mapping[str, Any], host: str) -> MoveResult:
        """Watch the job to its end, from `first`, the job as read on the source `host` a moment ago."""
        request = move.request
        deadline = time.monotonic() + self._max_move
        # The pace's baseline (monotonic time, percent): the last reading before the percent moved (see `_pace`).
        paced: tuple[float, int] | None = None
        reading: Mapping[str, Any] | None = first
        while True:
            if reading is None:
                # A session per poll: between polls it serves the worker's other activities.
                with self._client(request.source) as source:
                    jobs = _jobs(source, job_id=move.job_id)
                    host = source.host
                if not jobs:
                    return self._outcome_without_job(move)
                reading = jobs[0]
            job, reading = reading, None
            state, percent = _job_state(job), _int(job.get("PercentComplete"))
            paced = _pace(paced, time.monotonic(), percent)
            total = request.bytes_estimate
            beat = MoveHeartbeat(move.job_id, percent, bytes_done=total * percent // 100, bytes_total=total)
            _heartbeat(beat)
            self._publish(beat)
            if state in _SUCCEEDED:
                return self._result(move, job)
            if state >= JOB_COMPLETED:
                raise _job_error(host, job, request)
            if _cancelled():
                self._terminate(move)
                raise CancelledError(f"the move of {request.vm} was cancelled; its migration job was terminated")
            if time.monotonic() > deadline:
                self._terminate(move)
                raise TransientError(
                    f"Move-VM of {request.vm} on {request.source}: still running after {self._max_move:g} s; "
                    "terminated",
                    error_type=c.HOST_TIMEOUT,
                    remedy="check the migration network's bandwidth; the move is retried",
                    details={"vm": request.vm, "job_id": move.job_id, "percent": percent},
                )
            _pause(self._next_poll(paced, percent))

    def _next_poll(self, paced: tuple[float, int] | None, percent: int) -> float:
        """The next poll's delay: the configured one, or less when the job's own pace says it ends sooner.

        Both hosts' slots are held until the move is seen to end; polling at the expected end instead of up to a
        whole interval after it gives them back sooner, for a round trip or two more per move.
        """
        if paced is None or percent <= paced[1]:
            return self._poll
        rate = (percent - paced[1]) / max(time.monotonic() - paced[0], 1e-3)  # percent per second
        remaining = (100 - percent) / rate
        return min(self._poll, max(self._poll / 10, remaining))

    def _result(self, move: _Move, job: Mapping[str, Any] | None) -> MoveResult:
        elapsed = _seconds(job.get("ElapsedTime")) if job is not None else None
        return MoveResult(
            vm=move.request.vm,
            destination=move.request.destination,
            started=move.started,
            job_id=move.job_id,
            bytes_total=move.request.bytes_estimate,
            seconds=elapsed if elapsed is not None else round(time.monotonic() - move.t0, 3),
        )

    def _outcome_without_job(self, move: _Move) -> MoveResult:
        """The job is no longer listed (ended over 5 minutes ago, or vmms restarted): where is the VM?"""
        request = move.request
        for look in range(_SETTLE_LOOKS):
            with self._client(request.source) as source:
                on_source = _vm_by_id(source, move.vm_id)
            with self._client(request.destination) as destination:
                on_destination = _vm_by_id(destination, move.vm_id)
            # Realized on both may be a switch-over seen half before and half after: look again.
            if not (_realized(on_source) and _realized(on_destination)) or look == _SETTLE_LOOKS - 1:
                break
            _pause(_SETTLE_PAUSE)
        if _realized(on_destination) and not _realized(on_source):
            return self._result(move, None)
        if _realized(on_source) and not _realized(on_destination):
            raise TransientError(
                f"Move-VM of {request.vm} on {request.source}: the migration job ended out of sight and the VM is "
                f"still on {request.source}",
                error_type=c.MOVE_FAILED,
                remedy="the move is retried (its leftovers on the destination are cleaned first)",
                details={"vm": request.vm, "job_id": move.job_id},
            )
        if _realized(on_source):
            raise self._two_places(request)
        raise ConfigurationError(
            f"{request.vm} ({move.vm_id}) is on neither {request.source} nor {request.destination} after its move",
            error_type=c.VERIFY_FAILED,
            remedy="find the VM (Get-VM on both hosts and the cluster) before anything else",
            details={"vm": request.vm, "vm_id": move.vm_id, "job_id": move.job_id},
        )

    @staticmethod
    def _two_places(request: MoveInput) -> ConfigurationError:
        return ConfigurationError(
            f"{request.vm} is registered and realized on both {request.source} and {request.destination}",
            error_type=c.VERIFY_FAILED,
            remedy="decide by hand which copy is authoritative and remove the other; snlm will not guess",
            details={"vm": request.vm, "vm_id": request.vm_id, "hosts": [request.source, request.destination]},
        )

    def _terminate(self, move: _Move) -> None:
        """RequestStateChange(4) on every running job of this VM on the source, then wait (bounded) for the end."""
        request = move.request
        deadline = time.monotonic() + self._terminate_timeout
        with self._client(request.source) as source:
            running = [job for job in _jobs(source, vm_id=move.vm_id) if _running(job)]
            for job in running:
                instance = _guid(_text(job.get("InstanceID")), "job id")
                result = source.pipeline(
                    [
                        _jobs_command(job_id=instance),
                        Command(
                            "Invoke-CimMethod",
                            {"MethodName": "RequestStateChange", "Arguments": {"RequestedState": REQUEST_TERMINATE}},
                        ),
                    ],
                    check=False,
                )
                codes = [_int(item.get("ReturnValue"), -1) for item in _dicts(result)]
                log.info(
                    "terminate %s on %s: return %s %s", instance, source.host, codes, [str(e) for e in result.errors]
                )
        while running and time.monotonic() < deadline:
            with self._client(request.source) as source:
                running = [job for job in _jobs(source, vm_id=move.vm_id) if _running(job)]
            if running:
                _heartbeat(MoveHeartbeat(move.job_id, _int(running[0].get("PercentComplete"))))
                time.sleep(min(self._poll, max(0.0, deadline - time.monotonic())))
        if running:
            log.warning(
                "the migration job of %s on %s did not end within %g s",
                request.vm,
                request.source,
                self._terminate_timeout,
            )

    # -- verify -----------------------------------------------------------------------------------------------
    @activity.defn(name=ActivityName.VERIFY_MOVE)
    def verify_move(self, request: VerifyInput) -> VerifyResult:
        """The VM runs on the destination, is gone from the source with its files (leftovers are removed and
        reported), and its guest answers. In neither place or in both: VerifyFailed."""
        return self._verify(request)

    def _verify(self, request: VerifyInput) -> VerifyResult:
        vm_id = _guid(request.vm_id, "VM id")
        files = _dedupe(list(request.source_files))
        # The move has ended: both hosts are read at once. On the source the VM and which of its old files are still
        # there, in one round trip (Test-Path changes nothing).
        with self._client(request.source) as source, self._client(request.destination) as destination:
            (here_read, *tested), there = side_by_side(
                lambda: source.batch([_get_vm(vm_id), *([_test_paths(files)] if files else [])], check=False),
                lambda: _vm_by_id(destination, vm_id),
            )
            here = _vm_in(source, here_read)
            if _realized(there) == _realized(here):
                where = "both" if _realized(there) else "neither of"
                raise ConfigurationError(
                    f"{request.vm} ({vm_id}) is on {where} {request.source} and {request.destination} after its move",
                    error_type=c.VERIFY_FAILED,
                    remedy="find the VM (Get-VM on both hosts) and decide by hand; snlm changes nothing more",
                    details={
                        "vm": request.vm,
                        "vm_id": vm_id,
                        "on_source": _realized(here),
                        "on_destination": _realized(there),
                    },
                )
            if not _realized(there):
                # Still (only) on the source: the move did not happen. Its files are in use: leave them.
                return VerifyResult(running_on_destination=False, gone_from_source=False, guest_answers=False)
            for result in tested:
                _raise_unexpected(result)
            cleaned = _remove_existing(source, _existing(files, tested[0]) if tested else [])
        _heartbeat(f"verify {request.vm}: source checked")
        assert there is not None
        running = _text(there.get("State")) == "Running"
        guest, heartbeat = False, _text(there.get("Heartbeat"))
        if running:
            guest, heartbeat = self._wait_for_guest(request.destination, vm_id, there, request.guest_timeout_seconds)
        return VerifyResult(
            running_on_destination=running,
            gone_from_source=True,
            cleaned_source_files=cleaned,
            guest_answers=guest,
            destination_path=_text(there.get("ConfigurationLocation") or there.get("Path")),
            guest_heartbeat=heartbeat,
        )

    def _wait_for_guest(self, host: str, vm_id: str, vm: Mapping[str, Any], timeout: float) -> tuple[bool, str]:
        """Whether the guest answers, and its Heartbeat as last read, waiting up to `timeout` seconds for it.

        A guest reads NoContact while it boots and may read LostCommunication for a while after its integration
        service reconnects (catalogue 6.4): those are waited out. A VM whose heartbeat service is off or unknown
        (Disabled, Unknown, none) cannot say; its first address answering a ping from the host stands in.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            heartbeat = _text(vm.get("Heartbeat"))
            if heartbeat.startswith("Ok"):
                return True, heartbeat
            if heartbeat in _HEARTBEAT_SILENT:
                with self._client(host) as client:
                    return self._guest_pings(client, vm_id), heartbeat
            if time.monotonic() >= deadline or _cancelled():
                return False, heartbeat
            _heartbeat(f"verify: guest heartbeat {heartbeat or 'none'}")
            _pause(min(self._poll, max(0.0, deadline - time.monotonic())))
            with self._client(host) as client:
                vm = _vm_by_id(client, vm_id) or {}

    @staticmethod
    def _guest_pings(client: HostClient, vm_id: str) -> bool:
        """The guest's first address answers a ping from the host."""
        adapters = _dicts(client.pipeline(_vm_commands(vm_id, Command("Get-VMNetworkAdapter"))))
        addresses = [_text(a) for adapter in adapters for a in (adapter.get("IPAddresses") or [])]
        ipv4 = [a for a in addresses if a.count(".") == 3] or addresses
        if not ipv4:
            return False
        answer = client.run("Test-Connection", {"ComputerName": ipv4[0], "Count": 2}, switches=("Quiet",), check=False)
        return any(item is True for item in answer.output)
