"""Live migration as Hyper-V's Virtual Machine Management Service runs it: jobs, physics, outcome.

INTERFACE DRAFT: the dataclasses and signatures below are the contract the cmdlets (`Move-VM`,
`Get-CimInstance Msvm_MigrationJob`, `Invoke-CimMethod RequestStateChange`) are written against.
"""

from __future__ import annotations

import enum
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from lab.commands import ErrorCategory


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
    message_id: int  # 33012 for a missing switch (sourced); others are the lab's own, see lab/README.md
    source_kind: str  # "VMNetworkAdapter", "VMProcessor", "VMMemory", "HardDiskDrive", "DvdDrive", "VirtualMachine", ""
    source_name: str = ""  # the adapter / drive name, when there is one


class MoveEngine:
    """Runs every migration of the world on one scheduler thread (INTERFACE DRAFT: to be implemented).

    Thread-safe. Durations are simulated seconds (lab.model.clock).
    """

    def __init__(self, world: object) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Start the scheduler thread that advances every job."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def compare(self, request: MoveRequest) -> list[Incompatibility]:
        """What Compare-VM reports for this move: the same checks a move makes, without moving."""
        raise NotImplementedError

    def start_move(self, request: MoveRequest) -> MigrationJob:
        """Admit a move: raise MoveRefused for the module's own pre-checks, else return the job (which may
        still fail, for example at under 10 % for an incompatibility, like a real host)."""
        raise NotImplementedError

    def jobs(self, host: str) -> list[MigrationJob]:
        """Msvm_MigrationJob instances listed on `host`: running ones and those ended under 5 minutes ago."""
        raise NotImplementedError

    def request_state_change(self, host: str, instance_id: str, requested_state: int) -> int:
        """Msvm_MigrationJob.RequestStateChange: 4 terminates a running job; returns the WMI result code."""
        raise NotImplementedError

    def purge_tickets(self, host: str) -> None:
        """`klist purge -li 0x3e7` on the host: its next migration reads the directory afresh."""
        raise NotImplementedError
