"""What every cmdlet gets: the world, the move engine, its bound parameters, its input, and the streams.

Cmdlets are plain functions registered with `@cmdlet(CmdletInfo(...))`; they return (or yield) their output
objects and write errors, warnings and progress through the `Context`, which applies -ErrorAction and
-WarningAction the way PowerShell's `WriteError` / `WriteWarning` do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.cmdlets.binder import ActionPreference, Bound, CmdletInfo
from lab.cmdlets.errors import virtualization_error
from lab.commands import ErrorCategory, ErrorSpec, PipelineIO, PipelineRequest, TerminatingError
from lab.faults import FaultInjector
from lab.model.migration import JobState, MigrationJob, MoveEngine
from lab.model.state import Host, VirtualMachine, World

CmdletFunc = Callable[["Context"], Iterable[Any] | None]


@dataclass
class Context:
    world: World
    engine: MoveEngine
    host_name: str
    faults: FaultInjector | None
    request: PipelineRequest
    io: PipelineIO
    info: CmdletInfo
    bound: Bound
    input: list[Any] = field(default_factory=list)
    # The only properties the next command keeps of this one's output (a Select-Object of plain names), or None:
    # a cmdlet whose objects are costly may build just those. The output after Select-Object is the same.
    wanted: frozenset[str] | None = None

    @property
    def host(self) -> Host:
        return self.world.hosts[self.host_name]

    @property
    def name(self) -> str:
        return self.info.name

    # -- streams ---------------------------------------------------------------------------------------
    def write_error(self, spec: ErrorSpec) -> None:
        """WriteError: non-terminating unless -ErrorAction Stop; silent under SilentlyContinue / Ignore."""
        action = self.bound.error_action
        if action == ActionPreference.Stop:
            raise TerminatingError(spec)
        if action in (ActionPreference.SilentlyContinue, ActionPreference.Ignore):
            return
        self.io.write_error(spec)

    def write_warning(self, message: str) -> None:
        action = self.bound.warning_action
        if action in (ActionPreference.SilentlyContinue, ActionPreference.Ignore):
            return
        self.io.write_warning(message)
        if action == ActionPreference.Stop:
            raise TerminatingError(
                ErrorSpec(
                    message=(
                        'The running command stopped because the preference variable "WarningPreference" or common '
                        f"parameter is set to Stop: {message}"
                    ),
                    fully_qualified_error_id="ActionPreferenceStop",
                    category=ErrorCategory.OperationStopped,
                    activity=self.name,
                    exception_types=(
                        "System.Management.Automation.ActionPreferenceStopException",
                        "System.Management.Automation.RuntimeException",
                        "System.SystemException",
                        "System.Exception",
                        "System.Object",
                    ),
                )
            )

    def write_verbose(self, message: str) -> None:
        if self.bound.switch("Verbose"):
            self.io.write_verbose(message)

    # -- model helpers ---------------------------------------------------------------------------------
    def jobs(self) -> list[MigrationJob]:
        """The migration jobs vmms lists on this host (empty when the engine is not running)."""
        try:
            return list(self.engine.jobs(self.host_name))
        except NotImplementedError:
            return []

    def running_job_for(self, vm_id: uuid.UUID) -> MigrationJob | None:
        for job in self.jobs():
            if job.vm_id == vm_id and not job.finished and job.state != JobState.New:
                return job
        return None

    def target_host(self) -> Host | None:
        """The host a Hyper-V cmdlet acts on: this one, or the one its -ComputerName names (the lab does not
        model the WMI hop to another host). An unknown name writes the error and gives None."""
        names = self.bound.get("ComputerName") or []
        name = str(names[0]) if names else ""
        host = self.host
        if not name or name.lower() in ("localhost", ".", host.name.lower(), host.fqdn.lower()):
            return host if self.vmms_reachable(host) else None
        other = self.world.host(name)
        if other is not None and not self.vmms_reachable(other):
            return None
        if other is None:
            # LAB-OWN text: what a real module writes for an unreachable computer is not in the catalogue.
            self.write_error(
                virtualization_error(
                    self.name,
                    "ObjectNotFound",
                    ErrorCategory.ObjectNotFound,
                    f'Hyper-V was unable to find a computer with name "{name}".',
                )
            )
        return other

    def vmms_reachable(self, host: Host) -> bool:
        """False (with the error written) while a fault has the host's vmms down."""
        if self.faults is None or not self.faults.vmms_down(host.name):
            return True
        # The text the move engine uses for the same case (Hyper-V's wording; unverified, see lab/README.md).
        self.write_error(
            virtualization_error(
                self.name,
                "ObjectNotFound",
                ErrorCategory.ObjectNotFound,
                f"Hyper-V encountered an error trying to access an object on computer '{host.name}' because the "
                "object was not found. The object might have been deleted. Verify that the Virtual Machine "
                "Management service on the computer is running.",
            )
        )
        return False

    def find_vm(self, name: str, *, include_planned: bool = True) -> VirtualMachine | None:
        return self.host.find_vm(name, include_planned=include_planned)


REGISTRY: dict[str, tuple[CmdletInfo, CmdletFunc]] = {}


def cmdlet(info: CmdletInfo) -> Callable[[CmdletFunc], CmdletFunc]:
    """Register a cmdlet implementation under its real name (looked up case-insensitively)."""

    def register(func: CmdletFunc) -> CmdletFunc:
        REGISTRY[info.name.lower()] = (info, func)
        return func

    return register
