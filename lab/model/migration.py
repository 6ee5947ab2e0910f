"""Live migration as Hyper-V's Virtual Machine Management Service runs it: jobs, physics, outcome.

The dataclasses below are the contract the cmdlets (`Move-VM`, `Compare-VM`, `Get-CimInstance
Msvm_MigrationJob`, `Invoke-CimMethod RequestStateChange`) are written against; `MoveEngine` runs them.

A move goes through the phases vmms shows (reference/hyperv-facts.md, fidelity catalogue 2.2 and 3):
admission against the hosts' migration limit (event 21501 when it never comes), the connection to the
destination on TCP 6600 with its authentication (0x8009030E, 0x8007274C/D), the compatibility checks and the
planned VM on the destination (failures at under 10 %), then the bytes: the VHDs of a storage move, the
memory in pre-copy passes, the blackout, and the switch-over. Each tick of one scheduler thread advances
simulated time (`world.clock`) through every job, event by event, so rates change exactly when a concurrent
move starts or ends. A job belongs to vmms: nothing here depends on the PowerShell session that started it.

The transfer model (lab/README.md "The transfer model", constants in `world.transfer`): every host's migration
adapter carries its bandwidth out and its bandwidth in at once; the moves in flight share those capacities
max-min fairly (`max_min_rates`), each also held under its stream cap (a fraction of the slower of its two
adapters); a fixed set-up precedes the first byte and a fixed switch-over follows the last.
"""

from __future__ import annotations

import copy
import enum
import logging
import math
import threading
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, TypeVar

from lab.commands import ErrorCategory
from lab.model import checks, kerberos
from lab.model.clock import LabClock
from lab.model.state import (
    Host,
    MigrationAuthenticationType,
    OsVersion,
    TransferSettings,
    VirtualMachine,
    VMMigrationPerformance,
    VMState,
    World,
)

if TYPE_CHECKING:
    from lab.faults import FaultInjector

log = logging.getLogger(__name__)


class JobState(enum.IntEnum):
    """CIM_ConcreteJob.JobState (Msvm_MigrationJob), fidelity catalogue section 4."""

    New = 2
    Starting = 3
    Running = 4
    Suspended = 5
    ShuttingDown = 6
    Completed = 7
    Terminated = 8
    Killed = 9
    Exception = 10
    Service = 11
    CompletedWithWarnings = 32768


class MigrationType(enum.IntEnum):
    """Msvm_VirtualSystemMigrationSettingData.MigrationType."""

    VirtualSystem = 32768
    Storage = 32769
    Staged = 32770
    VirtualSystemAndStorage = 32771


@dataclass(frozen=True)
class MoveRequest:
    """One Move-VM call, after parameter binding, as the source host's vmms receives it."""

    source: str  # host name (NetBIOS, upper case) the command ran on
    vm_id: uuid.UUID
    destination: str  # as the caller typed it (name or FQDN): Compare-VM and messages echo it
    include_storage: bool = False
    destination_storage_path: str | None = None
    virtual_machine_path: str | None = None
    snapshot_file_path: str | None = None
    smart_paging_file_path: str | None = None
    vhds: tuple[tuple[str, str], ...] = ()  # (SourceFilePath, DestinationFilePath)
    retain_vhd_copies_on_source: bool = False
    remove_source_unmanaged_vhds: bool = False
    # How the WinRM session that issued the command authenticated: a CredSSP session carries the user's
    # credentials to the source host, any other kind does not (the double hop of reference/hyperv-facts.md).
    session_auth: str = "negotiate"
    session_user: str = ""


class MoveRefused(Exception):
    """A check the Hyper-V module makes before it asks vmms for anything (for example migration disabled).

    The cmdlet turns it into an ErrorRecord `<error_id>,Microsoft.HyperV.PowerShell.Commands.MoveVM`.
    """

    def __init__(self, error_id: str, category: ErrorCategory, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.category = category
        self.message = message


@dataclass
class MigrationJob:
    """An Msvm_MigrationJob on the source host. It belongs to vmms, not to the PowerShell session."""

    instance_id: str  # uppercase GUID string
    source: str
    destination: str
    vm_id: uuid.UUID
    vm_name: str
    job_type: int  # 305 Moving Virtual Machine, 306 Moving Virtual Machine and Storage
    migration_type: MigrationType
    element_name: str  # "Moving Virtual Machine" / "Moving Virtual Machine and Storage"
    owner: str
    time_submitted: datetime
    state: JobState = JobState.New
    percent_complete: int = 0
    error_code: int = 0  # 0, or 32768 (Failed) and friends: the cmdlet maps them (catalogue 2.0)
    error_summary: str = ""
    error_description: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    cancellable: bool = True
    bytes_total: int = 0
    bytes_done: int = 0
    # The lab's own additions (not Msvm_MigrationJob properties): how the move went, and why it failed in
    # plain words (the wire only carries the vmms texts).
    memory_passes: int = 0
    blackout_seconds: float = 0.0
    lab_detail: str = ""
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.state >= JobState.Completed

    @property
    def job_status(self) -> str:
        """Msvm_MigrationJob.JobStatus text."""
        return {
            JobState.New: "Job is new",
            JobState.Starting: "Job is starting",
            JobState.Running: "Job is running",
            JobState.Completed: "Job completed successfully",
            JobState.Terminated: "Job was terminated",
            JobState.Killed: "Job was killed",
            JobState.Exception: "Job failed",
        }.get(self.state, "Job is running")


@dataclass(frozen=True)
class Incompatibility:
    """One Msvm_Error of a compatibility check; Compare-VM returns them as VMCompatibilityError."""

    message: str
    message_id: int  # the check's id in the engine's `message_ids` (checks.MESSAGE_IDS unless overridden)
    source_kind: str  # "VMNetworkAdapter", "VMProcessor", "VMMemory", "HardDiskDrive", "DvdDrive", "VirtualMachine", ""
    source_name: str = ""  # the adapter / drive name, when there is one
    on_destination: bool = False  # the Source is the destination's VM with this VM's Id (a leftover)


# -- physics and timing (simulated seconds, bytes) -----------------------------------------------------------
# The defaults of the topology's `lab.transfer` (lab/README.md "The transfer model" gives the reasons).
# From admission to the first byte: opening the migration connection and authenticating it (the first
# CONNECT_SECONDS of it, when a refused or unauthenticated connection fails), then the compatibility checks
# and the planned VM on the destination (moves that fail there fail at under 10 %).
SETUP_SECONDS: Final = TransferSettings.setup_seconds
CONNECT_SECONDS: Final = 1.0
PREPARE_SECONDS: Final = SETUP_SECONDS - CONNECT_SECONDS
# After the last byte: the VM stays paused while the destination takes it over and the source lets it go.
SWITCHOVER_SECONDS: Final = TransferSettings.switchover_seconds
# What one move can draw of the slower of its two adapters: a single TCP connection (TCPIP, Compression),
# or SMB with Multichannel (the SMB option's memory, a storage move's VHDs).
TCP_STREAM_FRACTION: Final = TransferSettings.tcp_stream_fraction
SMB_STREAM_FRACTION: Final = TransferSettings.smb_stream_fraction
# A connection attempt to a host that does not answer gives up after about 21 s: Windows' TCP SYN retries
# (the same 21 s per address Test-NetConnection shows, fidelity catalogue 1.16).
CONNECT_TIMEOUT_SECONDS: Final = 21.0
# Pre-copy stops when what the guest dirtied during a pass is this small, or after this many passes; the
# rest moves during the blackout, with the VM paused.
PRECOPY_STOP_BYTES: Final = 32 * 1024 * 1024
MAX_PRECOPY_PASSES: Final = 10
# Memory bytes per wire byte for each VirtualMachineMigrationPerformanceOption. Compression trades source CPU
# for about half the bytes on the wire; SMB (without RDMA in the lab) and TCPIP send memory as it is.
COMPRESSION_FACTOR: Final = 2.0
SMB_FACTOR: Final = 1.0
TCPIP_FACTOR: Final = 1.0
PERFORMANCE_FACTORS: Final = {
    VMMigrationPerformance.TCPIP: TCPIP_FACTOR,
    VMMigrationPerformance.Compression: COMPRESSION_FACTOR,
    VMMigrationPerformance.SMB: SMB_FACTOR,
}
# Msvm_MigrationJob.TimeBeforeRemoval: a finished job stays listed 5 minutes (fidelity catalogue 1.11).
JOB_RETENTION_SECONDS: Final = 300.0
# Windows Server 2025 turns Credential Guard on for domain members: CredSSP migration breaks (hyperv-facts).
CREDENTIAL_GUARD_OS: Final = frozenset({OsVersion.WS2025})

# Msvm_MigrationJob.ErrorCode of a failed job (WMI "Failed", fidelity catalogue 4).
ERROR_FAILED: Final = 32768
# CIM_ConcreteJob.RequestStateChange (fidelity catalogue 3).
RSC_TERMINATE: Final = 4
RSC_NOT_SUPPORTED: Final = 1
RSC_INVALID_PARAMETER: Final = 5
RSC_JOB_STARTED: Final = 4096
RSC_INVALID_STATE_TRANSITION: Final = 4097

# Texts the lab had to choose (no public transcript): kept here so a client can see what is the lab's own.
CANCELLED_TEXT: Final = "The operation was canceled by the user. (0x800704C7)"  # ERROR_CANCELLED
IN_USE_TEXT: Final = "The operation cannot be performed while the virtual machine is in its current state."

_EPSILON_BYTES: Final = 0.5
_MIN_STEP: Final = 1e-6
_MAX_EVENTS_PER_ADVANCE: Final = 200_000
# Relative slack under which a capacity counts as used up in progressive filling (float rounding).
_FILL_TOLERANCE: Final = 1e-9

FlowKey = TypeVar("FlowKey", bound=Hashable)
LinkKey = TypeVar("LinkKey", bound=Hashable)


def max_min_rates(
    flows: Mapping[FlowKey, tuple[float, Sequence[LinkKey]]], capacities: Mapping[LinkKey, float]
) -> dict[FlowKey, float]:
    """Max-min fair rates by progressive filling.

    Args:
        flows: per flow, its own cap and the links it crosses (keys of `capacities`).
        capacities: what each link carries in total.

    Returns:
        Per flow, its rate: every flow not yet held back grows at the same pace until a link it crosses is
        full or it reaches its cap; then it keeps that rate and the others grow on. No flow can go faster
        without slowing one that goes no faster than it.
    """
    rates: dict[FlowKey, float] = dict.fromkeys(flows, 0.0)
    left = {link: float(capacity) for link, capacity in capacities.items()}
    growing = {key for key, (cap, links) in flows.items() if cap > 0 and all(left[link] > 0 for link in links)}
    # Each round fills at least one link or one cap, which holds back at least one flow.
    for _ in range(len(flows) + 1):
        if not growing:
            break
        users: dict[LinkKey, int] = {}
        for key in growing:
            for link in flows[key][1]:
                users[link] = users.get(link, 0) + 1
        step = min(
            min((left[link] / count for link, count in users.items()), default=math.inf),
            min(flows[key][0] - rates[key] for key in growing),
        )
        step = max(step, 0.0)
        for key in growing:
            rates[key] += step
        for link, count in users.items():
            left[link] -= step * count
        full = {link for link in users if left[link] <= _FILL_TOLERANCE * capacities[link]}
        growing = {
            key
            for key in growing
            if rates[key] < flows[key][0] * (1 - _FILL_TOLERANCE) and not any(link in full for link in flows[key][1])
        }
    return rates


class _Phase(enum.IntEnum):
    WAITING = 0  # waiting for a migration slot on both hosts
    CONNECTING = 1
    PREPARING = 2
    COPYING = 3  # the VHDs of a storage move
    MEMORY = 4  # pre-copy passes
    BLACKOUT = 5  # the VM is paused; the last dirty pages move
    SWITCHOVER = 6  # no bytes left; the destination takes the VM over (still paused)
    DONE = 7


_TRANSFERRING: Final = frozenset({_Phase.COPYING, _Phase.MEMORY, _Phase.BLACKOUT})
_ADMITTED: Final = frozenset({_Phase.CONNECTING, _Phase.PREPARING, *_TRANSFERRING, _Phase.SWITCHOVER})
# Once the destination holds the planned VM, a broken connection leaves it (and partial files) behind.
_CONNECTED: Final = frozenset({_Phase.PREPARING, *_TRANSFERRING, _Phase.SWITCHOVER})


@dataclass(eq=False)
class _Run:
    """The engine's working state of one job."""

    job: MigrationJob
    request: MoveRequest
    source: Host
    destination: Host
    vm: VirtualMachine
    layout: checks.Layout
    submitted: float
    phase: _Phase = _Phase.WAITING
    phase_ends: float = 0.0
    unreachable: bool = False  # the destination did not answer when the connection was opened
    copy_index: int = 0
    copy_done: float = 0.0
    memory: int = 0
    pass_left: float = 0.0
    dirtied: float = 0.0
    blackout_left: float = 0.0
    done_bytes: float = 0.0
    reserved_memory: int = 0
    disk_full: bool = False
    terminate: bool = False
    ended_at: float | None = None

    @property
    def active(self) -> bool:
        return self.phase != _Phase.DONE

    def involves(self, host: str) -> bool:
        return host in (self.source.name, self.destination.name)

    def remaining_on(self, drive: str) -> int:
        """Bytes this storage move has still to write on a destination drive."""
        left = 0.0
        for index, item in enumerate(self.layout.copies):
            if item.destination_path[:1].upper() != drive:
                continue
            if index > self.copy_index or self.phase in (_Phase.WAITING, _Phase.CONNECTING, _Phase.PREPARING):
                left += item.size
            elif index == self.copy_index and self.phase == _Phase.COPYING:
                left += item.size - self.copy_done
        return int(left)

    def remaining_known(self) -> float:
        """A lower bound of the bytes still to move (the estimate grows to it when passes take longer)."""
        left = self.pass_left + self.blackout_left
        if self.phase == _Phase.COPYING:
            left += sum(c.size for c in self.layout.copies[self.copy_index :]) - self.copy_done + self.memory
        return left


def _clock_epoch(clock: LabClock) -> datetime:
    """The simulated wall-clock time at elapsed 0, so that a job's times are exact to the microsecond.

    `now()` and `elapsed()` are two reads of the clock; a thread switch between them (seconds of simulated time
    at a high time scale) only ever makes the difference early, so the latest of a few samples is the closest.
    """
    return max(clock.now() - timedelta(seconds=clock.elapsed()) for _ in range(5))


class MoveEngine:
    """Runs every migration of the world on one scheduler thread. Thread-safe (it works under `world.lock`).

    Durations are simulated seconds (lab.model.clock). `limit_wording` picks the event 21501 text: "classic"
    (SA-LM) or "newer" (SA-LMG).
    """

    def __init__(
        self,
        world: World,
        *,
        tick: float = 0.05,
        admission_timeout: float = 240.0,
        faults: FaultInjector | None = None,
        limit_wording: str = "classic",
        message_ids: Mapping[str, int] | None = None,
    ) -> None:
        if limit_wording not in ("classic", "newer"):
            raise ValueError(f"limit_wording must be 'classic' or 'newer', got {limit_wording!r}")
        self.world = world
        # Compare-VM's MessageId per check (checks.MESSAGE_IDS, with the topology's overrides).
        self.message_ids = checks.message_ids(message_ids)
        self.tick = tick
        self.admission_timeout = admission_timeout
        self.faults = faults
        self.limit_wording = limit_wording
        self._runs: list[_Run] = []
        self._now = world.clock.elapsed()
        self._epoch = _clock_epoch(world.clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if faults is not None:
            faults.on_vmms_restart(self._on_vmms_restart)

    # -- the scheduler thread --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler thread that advances every job."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lab-move-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.advance()
            except Exception:
                # One bad tick must not stop every migration of the lab; the next tick tries again.
                log.exception("move engine tick failed")

    def advance(self) -> None:
        """Bring every job up to the clock's present (the scheduler thread calls this each tick)."""
        with self.world.lock:
            self._catch_up()
            if self.faults is not None:
                self.faults.sweep()
            self._forget_old_jobs()

    # -- public operations -----------------------------------------------------------------------------------
    def compare(self, request: MoveRequest) -> list[Incompatibility]:
        """What Compare-VM reports for this move: the same checks a move makes, without moving.

        Compare-VM does not refuse a host with live migration disabled (the lab's reading: it checks the VM
        against the destination, the host settings are Move-VM's concern), so a preflight can run before
        the hosts are configured.
        """
        with self.world.lock:
            self._catch_up()
            source, vm, destination = self._resolve(request, for_move=False)
            if self.faults is not None and (
                self.faults.partitioned(source.name, destination.name) or self.faults.vmms_down(destination.name)
            ):
                raise MoveRefused(
                    "OperationFailed", ErrorCategory.ConnectionError, checks.timeout_text(request.destination)
                )
            layout = checks.destination_layout(vm, destination, request)
            findings = checks.compatibility(
                vm,
                source,
                destination,
                layout,
                reserved_memory=self._reserved_memory(destination),
                reserved_disk=self._reserved_disk(destination),
                ids=self.message_ids,
            )
            return [
                Incompatibility(f.message, f.message_id, f.source_kind, f.source_name, f.on_destination)
                for f in findings
            ]

    def start_move(self, request: MoveRequest) -> MigrationJob:
        """Admit a move: raise MoveRefused for the module's own pre-checks, else return the job (which may
        still fail, for example at under 10 % for an incompatibility, like a real host)."""
        with self.world.lock:
            self._catch_up()
            source, vm, destination = self._resolve(request, for_move=True)
            storage = checks.is_storage_move(request)
            self.world.move_starts[vm.id] += 1
            job = MigrationJob(
                instance_id=str(uuid.uuid4()).upper(),
                source=source.name,
                destination=request.destination,
                vm_id=vm.id,
                vm_name=vm.name,
                job_type=306 if storage else 305,
                migration_type=MigrationType.VirtualSystemAndStorage if storage else MigrationType.VirtualSystem,
                element_name="Moving Virtual Machine and Storage" if storage else "Moving Virtual Machine",
                owner=request.session_user,
                time_submitted=self._sim_now(),
            )
            run = _Run(
                job=job,
                request=request,
                source=source,
                destination=destination,
                vm=vm,
                layout=checks.destination_layout(vm, destination, request),
                submitted=self._now,
            )
            busy = any(r.active and r.vm.id == vm.id for r in self._runs)
            self._runs.append(run)
            if busy:
                # A second move of a VM that is already migrating: vmms refuses it at once (lab text around
                # the real state message). The start still counts in move_starts: that is what it measures.
                self._finish(
                    run,
                    JobState.Exception,
                    lines=(IN_USE_TEXT, f"'{vm.name}' is already being migrated."),
                    detail="a migration of this VM is already running",
                )
            else:
                self._settle()
            return job

    def jobs(self, host: str) -> list[MigrationJob]:
        """Msvm_MigrationJob instances listed on `host`: running ones and those ended under 5 minutes ago."""
        with self.world.lock:
            self._catch_up()
            target = self._find_host(host)
            if target is None:
                return []
            return [
                r.job
                for r in self._runs
                if r.source is target and (r.ended_at is None or self._now - r.ended_at <= JOB_RETENTION_SECONDS)
            ]

    def job(self, instance_id: str) -> MigrationJob | None:
        """A job by InstanceID, on any host, while it is still listed."""
        with self.world.lock:
            run = self._run_by_id(instance_id)
            return run.job if run is not None else None

    def active_job_for_vm(self, vm_id: uuid.UUID) -> MigrationJob | None:
        """The job moving this VM now, if any (Get-VM's "Migrating" status; re-attaching after a crash)."""
        with self.world.lock:
            self._catch_up()
            return next((r.job for r in self._runs if r.active and r.vm.id == vm_id), None)

    def request_state_change(self, host: str, instance_id: str, requested_state: int) -> int:
        """Msvm_MigrationJob.RequestStateChange: 4 terminates a running job; returns the WMI result code."""
        with self.world.lock:
            self._catch_up()
            target = self._find_host(host)
            run = self._run_by_id(instance_id)
            if target is None or run is None or run.source is not target:
                return RSC_INVALID_PARAMETER
            if requested_state != RSC_TERMINATE:
                # Start 2, Suspend 3, Kill 5, Service 6 mean nothing for a migration (KillJob is "not supported").
                return RSC_NOT_SUPPORTED if requested_state in (2, 3, 5, 6) else RSC_INVALID_PARAMETER
            if not run.active or not run.job.cancellable:
                return RSC_INVALID_STATE_TRANSITION
            # The transition runs as vmms's own work: the job reads Terminated on the next tick, and the
            # client waits for it (Hyper-V's VMTaskView.Cancel accepts 4096 then requires JobState 8 or 9).
            run.terminate = True
            return RSC_JOB_STARTED

    def purge_tickets(self, host: str) -> None:
        """`klist purge -li 0x3e7` on the host: its next migration reads the directory afresh."""
        target = self._find_host(host)
        if target is None:
            raise KeyError(f"unknown host {host!r}")
        kerberos.purge_tickets(self.world, target)

    # -- resolution and module pre-checks --------------------------------------------------------------------
    def _find_host(self, name: str) -> Host | None:
        """A host by NetBIOS name, FQDN or one of its addresses."""
        host = self.world.host(name)
        if host is not None:
            return host
        return next((h for h in self.world.hosts.values() if any(n.ip == name for n in h.nics)), None)

    def _resolve(self, request: MoveRequest, *, for_move: bool) -> tuple[Host, VirtualMachine, Host]:
        source = self._find_host(request.source)
        if source is None:
            raise MoveRefused(
                "ObjectNotFound", ErrorCategory.ObjectNotFound, f"Unknown source host '{request.source}'."
            )
        if self.faults is not None and self.faults.vmms_down(source.name):
            # The module cannot reach the source's vmms (text as Hyper-V cmdlets print it; unverified wording).
            raise MoveRefused(
                "ObjectNotFound",
                ErrorCategory.ObjectNotFound,
                f"Hyper-V encountered an error trying to access an object on computer '{source.name}' because the "
                "object was not found. The object might have been deleted. Verify that the Virtual Machine "
                "Management service on the computer is running.",
            )
        vm = source.vms.get(request.vm_id)
        if vm is None or vm.planned:
            elsewhere = self.world.locate_vm(request.vm_id)
            message = (
                f'Hyper-V was unable to find a virtual machine with name "{elsewhere[0][1].name}".'
                if elsewhere
                else f'Hyper-V was unable to find a virtual machine with id "{request.vm_id}".'
            )
            raise MoveRefused("ObjectNotFound", ErrorCategory.ObjectNotFound, message)
        destination = self._find_host(request.destination)
        if destination is None:
            # The module connects to the destination first; a name nobody resolves fails there (the lab's
            # text: the RPC error such a connection reports).
            raise MoveRefused(
                "OperationFailed",
                ErrorCategory.ConnectionError,
                f"The operation on computer '{request.destination}' failed: The RPC server is unavailable. "
                "(0x800706BA)",
            )
        if destination is source:
            raise MoveRefused(
                "InvalidParameter",
                ErrorCategory.InvalidArgument,
                f"The virtual machine '{vm.name}' is already on '{source.name}': the source and destination hosts "
                "of a migration must differ.",
            )
        if for_move:
            for host, side in ((source, "source"), (destination, "destination")):
                if not host.live_migration.enabled:
                    raise MoveRefused(
                        "InvalidOperation",
                        ErrorCategory.InvalidOperation,
                        f"The {side} host is not configured for live migration. Use the Enable-VMMigration cmdlet "
                        f"to modify the Hyper-V settings on the {side} host to enable migration.",
                    )
            lm = destination.live_migration
            if not lm.use_any_network and not lm.networks:
                raise MoveRefused(
                    "InvalidOperation",
                    ErrorCategory.InvalidOperation,
                    "Live migrations of virtual machines cannot be sent to the destination host because no migration "
                    "networks are specified for incoming live migrations. To specify networks, run the "
                    "Add-VMMigrationNetwork cmdlet on the destination host. To use any available network for live "
                    "migration, run the command Set-VMHost -UseAnyNetworkForMigration $true on the destination host.",
                )
        if vm.is_clustered:
            raise MoveRefused(
                "OperationFailed",
                ErrorCategory.InvalidOperation,
                "This operation is not supported on a clustered virtual machine. To perform this operation, remove "
                "the virtual machine from the cluster and then try again.",
            )
        if not checks.vhds_names_match(request):
            raise MoveRefused(
                "InvalidParameter",
                ErrorCategory.InvalidArgument,
                "The source and destination file names in the Vhds parameter must match.",
            )
        return source, vm, destination

    # -- time ------------------------------------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Advance every job from the engine's last instant to the clock's present, event by event."""
        target = self.world.clock.elapsed()
        for _ in range(_MAX_EVENTS_PER_ADVANCE):
            self._settle()
            if self._now >= target:
                return
            rates = self._rates()
            step = target - self._now
            for run in self._runs:
                if run.active:
                    step = min(step, self._time_to_event(run, rates.get(id(run), 0.0)))
            step = max(step, _MIN_STEP)
            self._flow(step, rates)
            self._now += step
        log.warning("move engine: event budget exhausted; jumping to t=%.3f", target)
        self._now = target
        self._settle()

    def _sim_now(self) -> datetime:
        """The wall-clock time of the engine's present instant: events carry the time they happened, not the
        (slightly later) time the scheduler thread got to them."""
        return self._epoch + timedelta(seconds=self._now)

    def _limit(self, host: Host) -> int:
        # In a cluster, (Get-Cluster).MaximumParallelMigrations takes precedence (fidelity catalogue 1.2).
        cluster = self.world.cluster_of(host)
        return cluster.max_parallel_migrations if cluster is not None else host.live_migration.max_vm_migrations

    def _rates(self, *, memory_of: _Run | None = None) -> dict[int, float]:
        """Wire bytes per second of each transferring move (and of `memory_of` as if its memory were moving).

        The links are each host's migration adapter, outgoing and incoming apart when it is full duplex
        (one link for both when not); every move crosses its source's outgoing link and its destination's
        incoming one, under its own stream cap; `max_min_rates` shares them."""
        moving = [(r, r.phase) for r in self._runs if r.phase in _TRANSFERRING and r is not memory_of]
        if memory_of is not None:
            moving.append((memory_of, _Phase.MEMORY))
        flows: dict[int, tuple[float, tuple[tuple[str, str], ...]]] = {}
        capacities: dict[tuple[str, str], float] = {}
        for run, phase in moving:
            out_nic, in_nic = run.source.migration_nic(), run.destination.migration_nic()
            out_link = (run.source.name, "out" if out_nic.full_duplex else "both")
            in_link = (run.destination.name, "in" if in_nic.full_duplex else "both")
            capacities[out_link] = out_nic.bandwidth_bps / 8
            capacities[in_link] = in_nic.bandwidth_bps / 8
            slower = min(out_nic.bandwidth_bps, in_nic.bandwidth_bps) / 8
            flows[id(run)] = (self._stream_fraction(run, phase) * slower, (out_link, in_link))
        return max_min_rates(flows, capacities)

    def _stream_fraction(self, run: _Run, phase: _Phase) -> float:
        """The share of the slower adapter one move can draw: VHDs go over SMB (a storage move needs the cifs
        delegation for it), memory over the source's performance option."""
        transfer = self.world.transfer
        if phase == _Phase.COPYING or run.source.live_migration.performance == VMMigrationPerformance.SMB:
            return transfer.smb_stream_fraction
        return transfer.tcp_stream_fraction

    @staticmethod
    def _factor(run: _Run) -> float:
        """Memory bytes moved per wire byte: the source's performance option decides."""
        return PERFORMANCE_FACTORS.get(run.source.live_migration.performance, 1.0)

    def _logical_rate(self, run: _Run, wire_rate: float) -> float:
        return wire_rate * self._factor(run) if run.phase in (_Phase.MEMORY, _Phase.BLACKOUT) else wire_rate

    def _time_to_event(self, run: _Run, wire_rate: float) -> float:
        if run.phase == _Phase.WAITING:
            return max(0.0, run.submitted + self.admission_timeout - self._now)
        if run.phase in (_Phase.CONNECTING, _Phase.PREPARING, _Phase.SWITCHOVER):
            return max(0.0, run.phase_ends - self._now)
        rate = self._logical_rate(run, wire_rate)
        if rate <= 0:
            return math.inf
        if run.phase == _Phase.COPYING:
            item = run.layout.copies[run.copy_index]
            left = item.size - run.copy_done
            free = run.destination.free_space(item.destination_path[:1])
            left = min(left, free) if free > 0 else 0.0
        elif run.phase == _Phase.MEMORY:
            left = run.pass_left
        else:
            left = run.blackout_left
        when = left / rate
        if self.faults is not None and run.job.bytes_total:
            for fault in self.faults.armed_move_faults(run.vm.name):
                target = (fault.percent or 0) * run.job.bytes_total / 100 + 1.0
                if target > run.done_bytes:
                    when = min(when, (target - run.done_bytes) / rate)
        return max(0.0, when)

    def _flow(self, step: float, rates: dict[int, float]) -> None:
        for run in self._runs:
            if run.phase not in _TRANSFERRING:
                continue
            rate = self._logical_rate(run, rates.get(id(run), 0.0))
            budget = rate * step
            if run.phase == _Phase.COPYING:
                item = run.layout.copies[run.copy_index]
                free = run.destination.free_space(item.destination_path[:1])
                moved = min(budget, item.size - run.copy_done, float(free))
                if moved < min(budget, item.size - run.copy_done) - _EPSILON_BYTES:
                    run.disk_full = True
                run.copy_done += moved
                run.destination.add_file(item.destination_path, int(run.copy_done), partial=True)
            elif run.phase == _Phase.MEMORY:
                moved = min(budget, run.pass_left)
                run.pass_left -= moved
                # While a pass runs the guest keeps writing: that is the next pass.
                run.dirtied = min(float(run.memory), run.dirtied + run.vm.dirty_rate * step)
            else:
                moved = min(budget, run.blackout_left)
                run.blackout_left -= moved
                run.job.blackout_seconds += step if moved > 0 else 0.0
            run.done_bytes += moved
            self._update_progress(run)

    def _update_progress(self, run: _Run) -> None:
        job = run.job
        job.bytes_total = int(max(job.bytes_total, run.done_bytes + run.remaining_known()))
        job.bytes_done = int(run.done_bytes)
        if job.bytes_total:
            # Monotonic, and 100 only once the job completed.
            percent = min(99, int(100 * run.done_bytes // job.bytes_total))
            job.percent_complete = max(job.percent_complete, percent)

    # -- events ------------------------------------------------------------------------------------------------
    def _settle(self) -> None:
        """Apply everything due at the engine's present instant, until nothing changes."""
        for _ in range(10_000):
            changed = False
            for run in list(self._runs):
                if run.active and self._step_run(run):
                    changed = True
            if self._admit():
                changed = True
            if not changed:
                return

    def _step_run(self, run: _Run) -> bool:
        """Move one run on if something is due; True when it changed."""
        if run.terminate:
            self._finish(run, JobState.Terminated, lines=(CANCELLED_TEXT,), detail="terminated", error_code=0)
            return True
        if run.phase == _Phase.WAITING:
            if self._now >= run.submitted + self.admission_timeout:
                self._fail_admission(run)
                return True
            return False
        faults = self.faults
        if run.phase in _CONNECTED and faults is not None:
            if faults.partitioned(run.source.name, run.destination.name):
                self._finish(run, JobState.Exception, lines=(checks.RESET_TEXT,), detail="network partition")
                return True
            if run.phase in _TRANSFERRING and run.job.bytes_total:
                for fault in faults.armed_move_faults(run.vm.name):
                    if run.job.percent_complete >= (fault.percent or 0):
                        faults.trigger(fault)
                        if fault.action == "partition":
                            faults.partition(run.source.name, run.destination.name, fault.partition_seconds)
                        self._finish(
                            run,
                            JobState.Exception,
                            lines=(checks.RESET_TEXT,),
                            detail=f"fault {fault.id}: {fault.action} at {fault.percent} %",
                        )
                        return True
        if run.phase == _Phase.CONNECTING and self._now >= run.phase_ends:
            self._connected(run)
            return True
        if run.phase == _Phase.PREPARING and self._now >= run.phase_ends:
            self._prepared(run)
            return True
        if run.phase == _Phase.COPYING:
            if run.disk_full:
                lines = (checks.destination_summary(run.vm, run.destination), checks.DISK_FULL_TEXT)
                self._finish(run, JobState.Exception, lines=lines, detail="destination volume full")
                return True
            item = run.layout.copies[run.copy_index]
            if run.copy_done >= item.size - _EPSILON_BYTES:
                run.destination.add_file(item.destination_path, item.size)
                run.copy_index += 1
                run.copy_done = 0.0
                if run.copy_index >= len(run.layout.copies):
                    self._start_memory(run)
                return True
            return False
        if run.phase == _Phase.MEMORY and run.pass_left <= _EPSILON_BYTES:
            run.job.memory_passes += 1
            if run.dirtied <= PRECOPY_STOP_BYTES or run.job.memory_passes >= MAX_PRECOPY_PASSES:
                # Switch-over: past this point vmms no longer accepts a cancel.
                run.phase = _Phase.BLACKOUT
                run.blackout_left = run.dirtied
                run.pass_left = 0.0
                run.job.cancellable = False
            else:
                run.pass_left, run.dirtied = run.dirtied, 0.0
            return True
        if run.phase == _Phase.BLACKOUT and run.blackout_left <= _EPSILON_BYTES:
            self._switch_over(run)
            return True
        if run.phase == _Phase.SWITCHOVER and self._now >= run.phase_ends:
            self._complete(run)
            return True
        return False

    def _switch_over(self, run: _Run) -> None:
        """The last byte moved: the destination takes the VM over in a fixed time, the VM paused throughout
        (for a VM that runs, part of the blackout); nothing cancels it any more."""
        run.phase = _Phase.SWITCHOVER
        seconds = self.world.transfer.switchover_seconds
        run.phase_ends = self._now + seconds
        run.job.cancellable = False
        if run.memory:
            run.job.blackout_seconds += seconds

    def _admit(self) -> bool:
        """Start waiting jobs, oldest first, where both hosts have a free migration slot."""
        used: dict[str, int] = {}
        for run in self._runs:
            if run.phase in _ADMITTED:
                used[run.source.name] = used.get(run.source.name, 0) + 1
                used[run.destination.name] = used.get(run.destination.name, 0) + 1
        admitted = False
        for run in self._runs:
            if run.phase != _Phase.WAITING or run.terminate:
                continue
            source, destination = run.source, run.destination
            if used.get(source.name, 0) >= self._limit(source) or used.get(destination.name, 0) >= self._limit(
                destination
            ):
                continue
            used[source.name] = used.get(source.name, 0) + 1
            used[destination.name] = used.get(destination.name, 0) + 1
            run.phase = _Phase.CONNECTING
            run.job.state = JobState.Running
            run.job.start_time = self._sim_now()
            run.unreachable = self.faults is not None and self.faults.partitioned(source.name, destination.name)
            connect = min(CONNECT_SECONDS, self.world.transfer.setup_seconds)
            run.phase_ends = self._now + (CONNECT_TIMEOUT_SECONDS if run.unreachable else connect)
            admitted = True
        return admitted

    def _fail_admission(self, run: _Run) -> None:
        """Event 21501: no slot came within the admission timeout."""
        used: dict[str, int] = {}
        for other in self._runs:
            if other.phase in _ADMITTED:
                for name in (other.source.name, other.destination.name):
                    used[name] = used.get(name, 0) + 1
        full = run.source if used.get(run.source.name, 0) >= self._limit(run.source) else run.destination
        limit = self._limit(full)
        self._finish(
            run,
            JobState.Exception,
            lines=(checks.limit_text(run.vm.name, limit, wording=self.limit_wording),),
            detail=f"no migration slot on {full.name} (limit {limit}) within {self.admission_timeout:.0f} s",
        )

    def _connected(self, run: _Run) -> None:
        """The end of the connection phase: network, listener, domain, authentication."""
        source, destination, request = run.source, run.destination, run.request
        faults = self.faults
        if run.unreachable or (faults is not None and faults.partitioned(source.name, destination.name)):
            self._finish(run, JobState.Exception, lines=(checks.timeout_text(request.destination),), detail="no answer")
            return
        if faults is not None and faults.vmms_down(destination.name):
            self._finish(
                run,
                JobState.Exception,
                lines=(checks.refused_text(request.destination),),
                detail=f"vmms on {destination.name} is restarting",
            )
            return
        lines = checks.connection_lines(source, destination, request.destination)
        if lines is None:
            lines = checks.domain_lines(source, destination, request.destination)
        if lines is not None:
            self._finish(run, JobState.Exception, lines=lines, detail="connection refused")
            return
        problem = self._authentication_problem(run)
        if problem is not None:
            self._finish(
                run, JobState.Exception, lines=checks.no_credentials_lines(request.destination), detail=problem
            )
            return
        run.phase = _Phase.PREPARING
        # The rest of the set-up: what the connection did not take of it.
        run.phase_ends = self._now + max(0.0, self.world.transfer.setup_seconds - CONNECT_SECONDS)

    def _authentication_problem(self, run: _Run) -> str | None:
        """hyperv-facts "Authentication and delegation": the double hop, and Kerberos constrained delegation."""
        source, destination = run.source, run.destination
        auth = source.live_migration.authentication
        if run.request.session_auth.lower() == "credssp":
            # The session brought the user's credentials to the source: no delegation is needed, unless
            # Credential Guard keeps CredSSP from using them.
            if auth == MigrationAuthenticationType.CredSSP and source.os in CREDENTIAL_GUARD_OS:
                return f"Credential Guard on Windows Server {source.os.value} blocks CredSSP delegation"
            return None
        if auth == MigrationAuthenticationType.CredSSP:
            return f"CredSSP migration started remotely (session auth {run.request.session_auth!r}): double hop"
        needs_cifs = run.layout.storage or source.live_migration.performance == VMMigrationPerformance.SMB
        return kerberos.delegation_problem(self.world, source, destination, needs_cifs=needs_cifs)

    def _prepared(self, run: _Run) -> None:
        """The end of the preparation: compatibility, then the planned VM on the destination."""
        source, destination, vm = run.source, run.destination, run.vm
        if source.vms.get(vm.id) is not vm:
            self._finish(
                run,
                JobState.Exception,
                lines=(f'Hyper-V was unable to find a virtual machine with id "{vm.id}".',),
                detail="the VM left the source during the move",
            )
            return
        findings = checks.compatibility(
            vm,
            source,
            destination,
            run.layout,
            reserved_memory=self._reserved_memory(destination, exclude=run),
            reserved_disk=self._reserved_disk(destination, exclude=run),
            ids=self.message_ids,
        )
        if findings:
            lines = tuple(dict.fromkeys(line for f in findings for line in f.lines))
            self._finish(run, JobState.Exception, lines=lines, detail="incompatible: " + findings[0].message)
            return
        smb = checks.smb_lines(source, destination, run.layout)
        if smb is not None:
            self._finish(run, JobState.Exception, lines=smb, detail="SMB transport unavailable")
            return
        run.reserved_memory = vm.memory_assigned
        destination.vms[vm.id] = self._planned_copy(vm, run.layout)
        run.memory = vm.memory_assigned
        run.job.bytes_total = int(self._estimate(run))
        if run.layout.copies:
            run.phase = _Phase.COPYING
            run.copy_index = 0
            run.copy_done = 0.0
        else:
            self._start_memory(run)

    def _planned_copy(self, vm: VirtualMachine, layout: checks.Layout) -> VirtualMachine:
        """The planned VM vmms creates on the destination (VirtualMachineType 4), off, same id."""
        planned = copy.deepcopy(vm)
        planned.planned = True
        planned.state = VMState.Off
        planned.started_at = None
        planned.path = layout.vm_path
        for disk in planned.disks:
            if not disk.is_passthrough:
                disk.path = layout.destination_of(disk.path)
        return planned

    def _estimate(self, run: _Run) -> float:
        """Bytes the move will carry: the VHDs, then the pre-copy passes at today's rate, then the blackout."""
        total = float(sum(c.size for c in run.layout.copies))
        if not run.memory:
            return total
        # The memory's rate beside today's other moves.
        wire = self._rates(memory_of=run).get(id(run), 0.0)
        ratio = run.vm.dirty_rate / (wire * self._factor(run)) if wire > 0 else 1.0
        chunk = float(run.memory)
        for passes in range(1, MAX_PRECOPY_PASSES + 1):
            total += chunk
            chunk = min(float(run.memory), chunk * ratio)
            if chunk <= PRECOPY_STOP_BYTES or passes == MAX_PRECOPY_PASSES:
                break
        return total + chunk

    def _start_memory(self, run: _Run) -> None:
        if run.memory == 0:
            # A VM that is off or saved moves no memory.
            self._switch_over(run)
            return
        run.phase = _Phase.MEMORY
        run.pass_left = float(run.memory)
        run.dirtied = 0.0

    def _reserved_memory(self, destination: Host, exclude: _Run | None = None) -> int:
        return sum(
            r.reserved_memory for r in self._runs if r.active and r is not exclude and r.destination is destination
        )

    def _reserved_disk(self, destination: Host, exclude: _Run | None = None) -> dict[str, int]:
        """Bytes other moves have yet to write on each of the destination's drives (their partial files
        already count in free space)."""
        reserved: dict[str, int] = {}
        for run in self._runs:
            if run is exclude or not run.active or run.destination is not destination or run.phase == _Phase.WAITING:
                continue
            for drive in destination.volumes:
                reserved[drive] = reserved.get(drive, 0) + run.remaining_on(drive)
        return reserved

    # -- outcomes ----------------------------------------------------------------------------------------------
    def _complete(self, run: _Run) -> None:
        """Switch-over: the VM now runs on the destination; the source lets go of it and (usually) its files."""
        source, destination, vm, layout = run.source, run.destination, run.vm, run.layout
        if source.vms.get(vm.id) is not vm:
            self._finish(
                run,
                JobState.Exception,
                lines=(f'Hyper-V was unable to find a virtual machine with id "{vm.id}".',),
                detail="the VM left the source during the move",
            )
            return
        old_state_files = checks.state_file_sizes(vm, source)
        leave = self.faults.take_leave_source_files(vm.name) if self.faults is not None else None
        del source.vms[vm.id]
        destination.vms.pop(vm.id, None)  # the planned VM becomes the realized one
        if layout.storage:
            vm.path = layout.vm_path
            for disk in vm.disks:
                if not disk.is_passthrough:
                    disk.path = layout.destination_of(disk.path)
            for item in layout.copies:
                destination.add_file(item.destination_path, item.size)
        for (_old_path, size), new_path in zip(old_state_files, vm.state_files, strict=True):
            destination.add_file(new_path, size)
        if leave is None:
            for old_path, _size in old_state_files:
                source.remove_file(old_path)
            if layout.storage and not run.request.retain_vhd_copies_on_source:
                for item in layout.copies:
                    source.remove_file(item.source_path)
        vm.planned = False
        destination.vms[vm.id] = vm
        run.job.bytes_total = run.job.bytes_done = int(run.done_bytes)
        run.job.percent_complete = 100
        self._finish(
            run,
            JobState.Completed,
            detail=f"left the source's files (fault {leave.id})" if leave is not None else "",
            error_code=0,
        )

    def _finish(
        self,
        run: _Run,
        state: JobState,
        *,
        lines: tuple[str, ...] = (),
        detail: str = "",
        error_code: int = ERROR_FAILED,
    ) -> None:
        """End a job. Whatever a failed move left on the destination (the planned VM, partial VHDs) stays there
        for the next attempt to deal with, as on a real host; the VM keeps running on the source."""
        job = run.job
        job.state = state
        job.error_code = error_code
        if lines:
            job.error_summary = checks.source_summary(run.vm, run.source)
            # One line per Msvm_Error, as Windows joins them.
            job.error_description = "\r\n".join(lines)
        job.lab_detail = detail
        job.cancellable = False
        job.end_time = self._sim_now()
        if job.start_time is None:
            job.start_time = job.end_time
        run.phase = _Phase.DONE
        run.ended_at = self._now
        run.reserved_memory = 0
        run.terminate = False
        job.done.set()

    def _on_vmms_restart(self, host: str) -> None:
        """vmms restarted on `host`: the jobs it ran as source are killed; moves to it lose their connection."""
        with self.world.lock:
            self._catch_up()
            for run in self._runs:
                if not run.active:
                    continue
                if run.source.name == host:
                    self._finish(
                        run,
                        JobState.Killed,
                        lines=(
                            f"The Virtual Machine Management Service on '{host}' stopped while the migration was "
                            "in progress.",
                        ),
                        detail=f"vmms restarted on {host}",
                    )
                elif run.destination.name == host and run.phase in _CONNECTED:
                    self._finish(
                        run,
                        JobState.Exception,
                        lines=(checks.destination_summary(run.vm, run.destination), checks.RESET_TEXT),
                        detail=f"vmms restarted on {host}",
                    )

    def _run_by_id(self, instance_id: str) -> _Run | None:
        wanted = instance_id.strip("{}").upper()
        return next((r for r in self._runs if r.job.instance_id == wanted), None)

    def _forget_old_jobs(self) -> None:
        self._runs = [r for r in self._runs if r.ended_at is None or self._now - r.ended_at <= JOB_RETENTION_SECONDS]
