"""Error records as the real modules build them (fidelity catalogue section 2), as `ErrorSpec`.

Texts marked LAB-OWN below have no public source: they are the lab's best guess, kept in one place so
they can be corrected against a real host (see lab/README.md).
"""

from __future__ import annotations

from typing import Any

from lab.commands import ErrorCategory, ErrorSpec, TerminatingError

HV_COMMANDS = "Microsoft.HyperV.PowerShell.Commands"
FC_COMMANDS = "Microsoft.FailoverClusters.PowerShell"

VIRTUALIZATION_EXCEPTION = ("Microsoft.HyperV.PowerShell.VirtualizationException", "System.Exception", "System.Object")
_RUNTIME = (
    "System.Management.Automation.RuntimeException",
    "System.SystemException",
    "System.Exception",
    "System.Object",
)
PARAMETER_BINDING_EXCEPTION = ("System.Management.Automation.ParameterBindingException", *_RUNTIME)
PARAMETER_VALIDATION_EXCEPTION = (
    "System.Management.Automation.ParameterBindingValidationException",
    *PARAMETER_BINDING_EXCEPTION,
)
PARAMETER_TRANSFORMATION_EXCEPTION = (
    "System.Management.Automation.ParameterBindingArgumentTransformationException",
    *PARAMETER_BINDING_EXCEPTION,
)
COMMAND_NOT_FOUND_EXCEPTION = ("System.Management.Automation.CommandNotFoundException", *_RUNTIME)
CLUSTER_CMDLET_EXCEPTION = (
    "Microsoft.FailoverClusters.PowerShell.ClusterCmdletException",
    "System.Exception",
    "System.Object",
)
CIM_JOB_EXCEPTION = (
    "Microsoft.PowerShell.Cmdletization.Cim.CimJobException",
    "System.SystemException",
    "System.Exception",
    "System.Object",
)
CIM_EXCEPTION = ("Microsoft.Management.Infrastructure.CimException", "System.Exception", "System.Object")
ITEM_NOT_FOUND_EXCEPTION = (
    "System.Management.Automation.ItemNotFoundException",
    "System.Management.Automation.SessionStateException",
    *_RUNTIME,
)
IO_EXCEPTION = ("System.IO.IOException", "System.SystemException", "System.Exception", "System.Object")

HRESULT_RUNTIME = -2146233087  # 0x80131501 COR_E_SYSTEM: RuntimeException and what derives from it
HRESULT_IO = -2146232800  # 0x80131620 COR_E_IO


def hyperv_class(cmdlet: str) -> str:
    """`Move-VM` → `Microsoft.HyperV.PowerShell.Commands.MoveVM` (ws2016+: no `Command` suffix, catalogue 2.0)."""
    return f"{HV_COMMANDS}.{cmdlet.replace('-', '')}"


def virtualization_error(
    cmdlet: str,
    error_id: str,
    category: ErrorCategory,
    message: str,
    *,
    target: str | None = None,
    target_object: Any = None,
) -> ErrorSpec:
    """A Hyper-V module record: VirtualizationException, FQEID `<Id>,...PowerShell.Commands.<VerbNoun>`."""
    return ErrorSpec(
        message=message,
        fully_qualified_error_id=f"{error_id},{hyperv_class(cmdlet)}",
        category=category,
        activity=cmdlet,
        exception_types=VIRTUALIZATION_EXCEPTION,
        target_name=target or "",
        target_type="String" if target else "",
        target_object=target_object if target_object is not None else target,
    )


# --- Hyper-V texts (catalogue 2.1-2.3; NEON resx) ------------------------------------------------------
def vm_not_found_by_name(cmdlet: str, name: str) -> ErrorSpec:
    text = f'Hyper-V was unable to find a virtual machine with name "{name}".'
    if cmdlet == "Get-VM":
        # Get-VM's own lookup: InvalidArgument with the name as target (minikube#8970, AutoLab#133).
        return virtualization_error(cmdlet, "InvalidParameter", ErrorCategory.InvalidArgument, text, target=name)
    # Every other cmdlet resolving -VMName / -Name: ObjectNotFound, no target (AutoLab#133, Easy-GPU-PV#449).
    return virtualization_error(cmdlet, "ObjectNotFound", ErrorCategory.ObjectNotFound, text)


def vm_not_found_by_id(cmdlet: str, vm_id: str) -> ErrorSpec:
    text = f'Hyper-V was unable to find a virtual machine with id "{vm_id}".'
    return virtualization_error(cmdlet, "ObjectNotFound", ErrorCategory.ObjectNotFound, text)


def switch_not_found(cmdlet: str, name: str) -> ErrorSpec:
    text = f'Hyper-V was unable to find a virtual switch with name "{name}".'
    return virtualization_error(cmdlet, "InvalidParameter", ErrorCategory.InvalidArgument, text, target=name)


MIGRATION_NETWORK_NOT_FOUND = (
    "Windows cannot find the specified subnet in the list of subnets allowed for migration. "
    "Use the Get-VMMigrationNetwork cmdlet to list all subnets allowed for migration."
)
SET_VMHOST_NO_PARAMETERS = (
    "No changes were made to the host because no parameters were specified. To make changes to the host, "
    "run Set-VMHost with one or more parameters."
)
ASJOB_AND_PASSTHRU = "The Asjob and Passthru switches cannot be set at the same time."
VHDS_NAMES_MUST_MATCH = "The source and destination file names in the Vhds parameter must match."
# Seen next to the access-denied text in a real Get-VM stderr parser (catalogue 2.1); ErrorId is LAB-OWN.
INVALID_VM_STATE = "The operation cannot be performed while the virtual machine is in its current state."

# WMI job ErrorCode → (ErrorId, ErrorCategory), NEON ExceptionHelper.cs (catalogue 2.0).
_WMI_ERROR_MAP: dict[int, tuple[str, ErrorCategory]] = {
    32768: ("OperationFailed", ErrorCategory.NotSpecified),
    32769: ("AccessDenied", ErrorCategory.PermissionDenied),
    32770: ("NotSupported", ErrorCategory.InvalidOperation),
    32772: ("OperationTimeout", ErrorCategory.OperationTimeout),
    32773: ("InvalidParameter", ErrorCategory.InvalidArgument),
    32774: ("ObjectInUse", ErrorCategory.ResourceBusy),
    32775: ("InvalidState", ErrorCategory.InvalidOperation),
    32776: ("StatusIncorrectType", ErrorCategory.InvalidOperation),
    32777: ("StatusUnavailable", ErrorCategory.ResourceUnavailable),
    32778: ("OutOfMemory", ErrorCategory.FromStdErr),
    32779: ("ObjectNotFound", ErrorCategory.ObjectNotFound),
    32783: ("RebootRequired", ErrorCategory.FromStdErr),
    32789: ("ObjectNotFound", ErrorCategory.ObjectNotFound),
}


def wmi_error_id(error_code: int) -> tuple[str, ErrorCategory]:
    return _WMI_ERROR_MAP.get(error_code, ("Unspecified", ErrorCategory.NotSpecified))


def compose_job_message(summary: str, description: str, fallback: str) -> str:
    """NEON View.GetErrorInformationFromTask: summary + CRLF CRLF + description, unless the description
    already starts with the summary; the client's own text when the host gave none."""
    summary = summary or ""
    description = description or ""
    if description and summary and description.startswith(summary):
        return description
    if summary and description:
        return f"{summary}\r\n\r\n{description}"
    return summary or description or fallback


def job_failure(cmdlet: str, error_code: int, summary: str, description: str, vm_name: str) -> ErrorSpec:
    error_id, category = wmi_error_id(error_code)
    message = compose_job_message(summary, description, f"Migration operation on '{vm_name}' failed.")
    return virtualization_error(cmdlet, error_id, category, message)


# --- PowerShell engine records (catalogue 2.5, 2.6; PS ParameterBinderStrings / DiscoveryExceptions) ----
def command_not_found(name: str) -> ErrorSpec:
    """Windows PowerShell 5.1's text (the 7.x text differs), a newline between its two sentences
    (catalogue 2.5); always terminating, even under -ErrorAction SilentlyContinue."""
    return ErrorSpec(
        message=(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable "
            "program.\r\nCheck the spelling of the name, or if a path was included, verify that the path is correct "
            "and try again."
        ),
        fully_qualified_error_id="CommandNotFoundException",
        category=ErrorCategory.ObjectNotFound,
        activity="",
        exception_types=COMMAND_NOT_FOUND_EXCEPTION,
        hresult=HRESULT_RUNTIME,
        target_name=name,
        target_type="String",
        target_object=name,
    )


def script_refused(script: str) -> ErrorSpec:
    """LAB-OWN: the lab runs structured commands only (DESIGN.md invariant 2)."""
    first_line = script.strip().splitlines()[0] if script.strip() else ""
    return ErrorSpec(
        message=(
            "This Hyper-V lab host runs structured commands only (add_cmdlet / add_parameter): it has no "
            f"PowerShell parser, so it refuses scripts. Refused script: '{first_line[:80]}'"
        ),
        fully_qualified_error_id="ScriptsNotSupported,Lab.HostRunner",
        category=ErrorCategory.NotImplemented,
        activity="",
        exception_types=(
            "System.Management.Automation.PSNotSupportedException",
            "System.NotSupportedException",
            "System.SystemException",
            "System.Exception",
            "System.Object",
        ),
        hresult=-2146233067,  # 0x80131515 COR_E_NOTSUPPORTED
    )


def binding_error(
    cmdlet: str,
    cmdlet_class: str,
    error_id: str,
    message: str,
    *,
    category: ErrorCategory = ErrorCategory.InvalidArgument,
    exception_types: tuple[str, ...] = PARAMETER_BINDING_EXCEPTION,
) -> TerminatingError:
    """A ParameterBindingException record: statement-terminating, `(:)` target."""
    return TerminatingError(
        ErrorSpec(
            message=message,
            fully_qualified_error_id=f"{error_id},{cmdlet_class}",
            category=category,
            activity=cmdlet,
            exception_types=exception_types,
            hresult=HRESULT_RUNTIME,
        )
    )


# --- Failover clustering (catalogue 2.4) ----------------------------------------------------------------
def cluster_error(
    cmdlet_class: str, cmdlet: str, error_id: str, category: ErrorCategory, message: str, target: str = ""
) -> ErrorSpec:
    return ErrorSpec(
        message=message,
        fully_qualified_error_id=f"{error_id},{FC_COMMANDS}.{cmdlet_class}",
        category=category,
        activity=cmdlet,
        exception_types=CLUSTER_CMDLET_EXCEPTION,
        target_name=target,
        target_type="String" if target else "",
        target_object=target or None,
    )


def cluster_service_not_running(cmdlet_class: str, cmdlet: str) -> ErrorSpec:
    """Sourced (HealthChecker#195, FailoverClusterDsc#7): ClusterEndpointNotRegistered / ConnectionError."""
    return cluster_error(
        cmdlet_class,
        cmdlet,
        "ClusterEndpointNotRegistered",
        ErrorCategory.ConnectionError,
        "The cluster service is not running.  Make sure that the service is running on all nodes in the cluster.\r\n"
        "    There are no more endpoints available from the endpoint mapper",
    )


def cluster_group_not_found(cmdlet_class: str, cmdlet: str, name: str) -> ErrorSpec:
    # LAB-OWN text and ErrorId (catalogue 5.4: no public transcript of a missing cluster group).
    return cluster_error(
        cmdlet_class,
        cmdlet,
        "ClusterCmdletException",
        ErrorCategory.ObjectNotFound,
        f"An error occurred opening cluster group '{name}'.\r\n    The group specified was not found",
        target=name,
    )
