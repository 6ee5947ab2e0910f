"""The seam between the lab's PSRP engine and its cmdlets.

The PSRP engine (`lab.psrp`) turns a CREATE_PIPELINE message into a list of `CommandSpec` and hands it,
with a `PipelineIO`, to a `CommandRunner` (`lab.cmdlets`). The runner knows nothing of the wire; the
engine knows nothing of Hyper-V. Error records cross the seam as `ErrorSpec`, a plain description that the
engine serialises into a real `System.Management.Automation.ErrorRecord`.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol


class ErrorCategory(enum.IntEnum):
    """System.Management.Automation.ErrorCategory (PowerShell engine/ErrorPackage.cs)."""

    NotSpecified = 0
    OpenError = 1
    CloseError = 2
    DeviceError = 3
    DeadlockDetected = 4
    InvalidArgument = 5
    InvalidData = 6
    InvalidOperation = 7
    InvalidResult = 8
    InvalidType = 9
    MetadataError = 10
    NotImplemented = 11
    NotInstalled = 12
    ObjectNotFound = 13
    OperationStopped = 14
    OperationTimeout = 15
    SyntaxError = 16
    ParserError = 17
    PermissionDenied = 18
    ResourceBusy = 19
    ResourceExists = 20
    ResourceUnavailable = 21
    ReadError = 22
    WriteError = 23
    FromStdErr = 24
    SecurityError = 25
    ProtocolError = 26
    ConnectionError = 27
    AuthenticationError = 28
    LimitsExceeded = 29
    QuotaExceeded = 30
    NotEnabled = 31


@dataclass(frozen=True)
class ErrorSpec:
    """Everything a PowerShell ErrorRecord carries that a client can read.

    `exception_types` is the .NET type chain of the exception, most derived first, for example
    `["Microsoft.HyperV.PowerShell.VirtualizationException", "System.Exception", "System.Object"]`;
    its first entry's short name becomes CategoryInfo.Reason. `fully_qualified_error_id` is the
    FullyQualifiedErrorId as PowerShell prints it (`ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM`).
    `activity` is the cmdlet name (`Get-VM`). `target_name` / `target_type` fill CategoryInfo's `(name:type)`.
    """

    message: str
    fully_qualified_error_id: str
    category: ErrorCategory
    activity: str
    exception_types: tuple[str, ...]
    hresult: int = -2146233088  # 0x80131500, the HResult of a plain System.Exception
    target_name: str = ""
    target_type: str = ""
    target_object: Any = None
    # Extra adapted properties of the serialized exception (for example ErrorCode on a WMI error).
    exception_properties: tuple[tuple[str, Any], ...] = ()

    @property
    def reason(self) -> str:
        return self.exception_types[0].rsplit(".", 1)[-1] if self.exception_types else "Exception"

    @property
    def category_message(self) -> str:
        """CategoryInfo.ToString(): `{Category}: ({TargetName}:{TargetType}) [{Activity}], {Reason}`."""
        return f"{self.category.name}: ({self.target_name}:{self.target_type}) [{self.activity}], {self.reason}"


class TerminatingError(Exception):
    """Raised by a cmdlet to end the pipeline in the Failed state with this record.

    This is PowerShell's ThrowTerminatingError: the engine sends the record in the PIPELINE_STATE message
    only, as a real host does; pypsrp then sets `had_errors` and puts the record in `streams.error`.
    """

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter as the client sent it: `name` is None for a positional argument.

    A switch sent as `add_parameter("Force")` arrives with `value=True` and `is_switch=True`.
    """

    name: str | None
    value: Any
    is_switch: bool = False


@dataclass(frozen=True)
class CommandSpec:
    """One command of a pipeline, as sent by `PowerShell.add_cmdlet(...).add_parameter(...)`."""

    name: str
    parameters: tuple[ParameterSpec, ...] = ()
    is_script: bool = False  # True when the client used add_script: the lab refuses scripts
    merge_errors_to_output: bool = False


@dataclass
class PipelineRequest:
    commands: list[CommandSpec]
    # Objects the client sent with PIPELINE_INPUT, complete once END_OF_PIPELINE_INPUT arrived.
    input: list[Any] = field(default_factory=list)
    # The user the WinRM layer authenticated (DOMAIN\user), and how (basic, ntlm, negotiate, credssp, kerberos).
    user: str = ""
    auth: str = ""


class PipelineIO(Protocol):
    """What a running pipeline may do. Implemented by the PSRP engine; every method is thread-safe."""

    def write_output(self, value: Any) -> None: ...

    def write_error(self, spec: ErrorSpec) -> None: ...

    def write_warning(self, message: str) -> None: ...

    def write_verbose(self, message: str) -> None: ...

    def write_progress(
        self,
        activity: str,
        status: str,
        percent_complete: int = -1,
        *,
        activity_id: int = 0,
        completed: bool = False,
        seconds_remaining: int = -1,
    ) -> None: ...

    @property
    def stop_event(self) -> threading.Event:
        """Set when the client asked to stop the pipeline (`PowerShell.stop()`, signal ctrl_c)."""
        ...


class CommandRunner(Protocol):
    """Runs one pipeline for one host. Called on a worker thread; may block (Move-VM does).

    Returns normally when the pipeline completed (errors written with `write_error` leave it Completed);
    raises `TerminatingError` to end it Failed. Raising anything else ends it Failed with a generic record.
    """

    def run(self, request: PipelineRequest, io: PipelineIO) -> None: ...
