"""The host client: structured PowerShell commands on a Hyper-V host over WinRM/PSRP, with one error table.

`HostClient(entry)` is a context manager that opens ONE runspace pool for its life (one activity attempt:
a short-lived pool, because a WinRM session that broke cannot be trusted again, reference/psrp-wire-notes.md)
and runs structured commands on it: cmdlet + named parameters + switches + positional arguments, never
PowerShell text (DESIGN.md invariant 2; there is no `add_script` in this module). Every result is checked
for `had_errors` AND the error stream: pypsrp 0.9.1 reports a non-terminating error (Hyper-V's usual way:
`Get-VM -Name ghost`, a failed `Move-VM`) with state Completed and `had_errors` False.

Whatever goes wrong, the caller gets one of the engine's errors (activities/errors.py), chosen by one
data-driven table, `RULES`, that maps what a host can say — error-record text (event 21501...), HResults
found in the message or the exception (0x8009030E...), FullyQualifiedErrorId prefixes, exception types
(ParameterBindingException...), error categories, WSMan fault codes, and transport exceptions (requests,
pypsrp, CredSSP) — to an error class, a stable `error_type` (workflows/contracts.py) and a remedy. The first
matching rule wins; anything unrecognised becomes `UnknownError` carrying the full error record in its
details. Every message names the host and the command; no message or detail ever holds a password (the
client scrubs its own password out of anything it raises, as a last line of defence).

`classify()` and `classify_exception()` are pure functions over an error record or an exception, so the
table is testable offline; `props()` flattens a deserialized .NET object into a dict.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from pydantic import SecretStr
from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from activities.errors import (
    AdmissionError,
    ConfigurationError,
    SnlmError,
    TransientError,
    UnknownError,
)
from activities.inventory import HostEntry
from workflows import contracts as c

__all__ = [
    "NULL",
    "RULES",
    "Command",
    "CommandResult",
    "ErrorInfo",
    "HostClient",
    "Match",
    "ProgressInfo",
    "Rule",
    "classify",
    "classify_exception",
    "props",
]

log = logging.getLogger(__name__)

# A cmdlet name as PowerShell spells one (Verb-Noun, or a bare name such as `klist`), and a parameter name.
# Anything else is refused before it reaches the wire: these are names, never PowerShell text.
_CMDLET_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9_]+)?$")
_PARAMETER_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# "(0x8009030E)", "0x80072746" in a host's message.
_HEX_CODE: Final = re.compile(r"0x([0-9A-Fa-f]{8})\b")
# How deep props() follows nested objects (Hyper-V objects arrive serialized to depth 1 anyway).
_MAX_DEPTH: Final = 3
# How much of a host's message goes into an error message (the details keep all of it).
_MESSAGE_LIMIT: Final = 1500
_REDACTED: Final = "********"


class _Null:
    """The type of `NULL`: a parameter value sent as PowerShell's `$null` (a plain None leaves the parameter out)."""

    def __repr__(self) -> str:
        return "NULL"


NULL: Final = _Null()


# -- error records, as plain data -------------------------------------------------------------------------
def _to_unsigned(value: int) -> int:
    return value & 0xFFFFFFFF


def _prop(obj: Any, name: str) -> Any:
    for bag in (getattr(obj, "adapted_properties", None) or {}, getattr(obj, "extended_properties", None) or {}):
        if name in bag:
            return bag[name]
    return None


@dataclass(frozen=True)
class ErrorInfo:
    """The parts of a PowerShell ErrorRecord the table reads (all plain values, JSON-serialisable).

    Attributes:
        fq_error: FullyQualifiedErrorId, e.g. `InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM`.
        message: the exception's Message (the text a person reads), or the record's CategoryInfo when absent.
        category: ErrorCategory as an int (5 InvalidArgument, 13 ObjectNotFound, ...).
        category_info: `ErrorCategory_Message`, the CategoryInfo line, e.g.
            `InvalidArgument: (ghost:String) [Get-VM], VirtualizationException`.
        reason: the exception type's short name.
        activity: the cmdlet that wrote the record.
        target: TargetObject as text ("" when null).
        exception_types: the exception's type names, most derived first.
        hresult: the exception's HResult (signed, as .NET has it), when it has one.
    """

    fq_error: str = ""
    message: str = ""
    category: int = 0
    category_info: str = ""
    reason: str = ""
    activity: str = ""
    target: str = ""
    exception_types: tuple[str, ...] = ()
    hresult: int | None = None

    @classmethod
    def from_record(cls, record: Any) -> ErrorInfo:
        """From a pypsrp ErrorRecord(Message) as it arrives in `streams.error`."""
        exception = getattr(record, "exception", None)
        message = _prop(exception, "Message") if exception is not None else None
        hresult = _prop(exception, "HResult") if exception is not None else None
        category = getattr(record, "category", 0)
        return cls(
            fq_error=str(getattr(record, "fq_error", "") or ""),
            message=str(message if message is not None else getattr(record, "message", "") or ""),
            category=int(category) if isinstance(category, int) else 0,
            category_info=str(getattr(record, "message", "") or ""),
            reason=str(getattr(record, "reason", "") or ""),
            activity=str(getattr(record, "activity", "") or ""),
            target=str(getattr(record, "target_name", "") or ""),
            exception_types=tuple(str(t) for t in (getattr(exception, "types", None) or ())),
            hresult=hresult if isinstance(hresult, int) and not isinstance(hresult, bool) else None,
        )

    @property
    def codes(self) -> tuple[int, ...]:
        """Every HResult-like code the record carries: those written in the message, then the exception's."""
        found = [int(match, 16) for match in _HEX_CODE.findall(self.message)]
        if self.hresult is not None:
            found.append(_to_unsigned(self.hresult))
        return tuple(dict.fromkeys(found))

    def to_details(self) -> dict[str, Any]:
        return {
            "fq_error": self.fq_error,
            "category": self.category,
            "category_info": self.category_info,
            "reason": self.reason,
            "activity": self.activity,
            "target": self.target,
            "message": self.message,
            "exception_types": list(self.exception_types),
            "hresult": f"0x{_to_unsigned(self.hresult):08X}" if self.hresult is not None else None,
            "codes": [f"0x{code:08X}" for code in self.codes],
        }


# -- the table ------------------------------------------------------------------------------------------
class Match(enum.Enum):
    """What a rule looks at."""

    TEXT = "text"  # a regular expression searched in the record's message
    HRESULT = "hresult"  # a code written in the message ("(0x8009030E)") or the exception's HResult
    FQID = "fqid"  # a FullyQualifiedErrorId prefix (case-insensitive)
    EXCEPTION_TYPE = "exception_type"  # a .NET exception type name among the record's exception types
    CATEGORY = "category"  # an ErrorCategory int
    WSMAN_FAULT = "wsman_fault"  # a WSManFault code (pypsrp WSManFaultError.code)
    TRANSPORT = "transport"  # a Python exception class, by dotted name, anywhere in the raised type's MRO


@dataclass(frozen=True)
class Rule:
    """One row of the table. `meaning` and `remedy` may name `{host}`, `{command}`, `{user}`, `{address}`,
    `{port}` and `{password_ref}` (where the inventory points for the password: a reference, never a value)."""

    match: Match
    keys: tuple[Any, ...]
    error: type[SnlmError]
    error_type: str
    meaning: str
    remedy: str = ""
    auto_remediable: bool = False

    def matches_record(self, info: ErrorInfo) -> bool:
        if self.match is Match.TEXT:
            return any(re.search(key, info.message, re.IGNORECASE) for key in self.keys)
        if self.match is Match.HRESULT:
            return any(key in info.codes for key in self.keys)
        if self.match is Match.FQID:
            # A key ending in "," or "." is a prefix (an ErrorId of any cmdlet, a namespace); else exact.
            fq_error = info.fq_error.lower()
            return any(
                fq_error.startswith(key.lower()) if key.endswith((",", ".")) else fq_error == key.lower()
                for key in self.keys
            )
        if self.match is Match.EXCEPTION_TYPE:
            names = {*info.exception_types, info.reason}
            short = {name.rsplit(".", 1)[-1] for name in names}
            return any(key in names or key in short for key in self.keys)
        if self.match is Match.CATEGORY:
            return info.category in self.keys
        return False

    def matches_exception(self, exc: BaseException) -> bool:
        if self.match is Match.WSMAN_FAULT:
            return isinstance(exc, WSManFaultError) and _fault_code(exc) in self.keys
        if self.match is Match.TRANSPORT:
            names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
            return any(key in names for key in self.keys)
        return False


_RETRY_NOTE = "retried with backoff"
_NETWORK_REMEDY = (
    "check that the destination's vmms listens on TCP 6600 (firewall rule 'Hyper-V (MIG-TCP-In)') and that "
    "the migration network between the hosts is up; " + _RETRY_NOTE
)

# The one table. Order matters: the first matching rule wins, so the most specific signatures come first
# (a Move-VM record carries a generic summary line AND the specific code; the code decides).
RULES: Final[tuple[Rule, ...]] = (
    # --- Move-VM outcomes (reference/hyperv-facts.md, "Failures and their classes"; catalogue 2.2) ---
    Rule(
        Match.TEXT,
        (r"migration limit \"?\d+\"? was reached",),
        AdmissionError,
        c.MIGRATION_LIMIT_REACHED,
        "the host's concurrent live-migration limit was reached (event 21501)",
        "wait for a migration slot: the workflow requeues the move",
    ),
    Rule(
        Match.HRESULT,
        (0x8009030E,),
        ConfigurationError,
        c.DELEGATION_MISSING,
        "the source host has no credentials to present to the destination (0x8009030E)",
        "with Kerberos, configure constrained delegation (cifs and 'Microsoft Virtual System Migration Service' "
        "to the peer, 'use any authentication protocol' on Windows Server 2016+) and purge the hosts' tickets "
        "(klist purge -li 0x3e7); with CredSSP the move must be started on the source host itself",
    ),
    Rule(
        Match.HRESULT,
        (0x8009030D,),
        ConfigurationError,
        c.MIGRATION_CREDENTIALS_REJECTED,
        "the credentials supplied for the migration were not recognized (0x8009030D)",
        "check the delegation entries, purge the hosts' Kerberos tickets (klist purge -li 0x3e7), then retry",
    ),
    Rule(
        Match.HRESULT,
        (0x80090322,),
        ConfigurationError,
        c.MIGRATION_TARGET_PRINCIPAL_INCORRECT,
        "the target principal name is incorrect (0x80090322)",
        "check the migration networks' order and the hosts' SPNs (the destination name must resolve to the "
        "host that owns the SPN)",
    ),
    Rule(
        Match.HRESULT,
        (0x80070569,),
        ConfigurationError,
        c.MIGRATION_LOGON_FAILURE,
        "the destination refused the logon type (0x80070569)",
        "grant the migration account the required logon right on the destination (check group policy)",
    ),
    Rule(
        Match.HRESULT,
        (0x8007274D, 0x8007274C, 0x80072746),
        TransientError,
        c.MIGRATION_NETWORK_ERROR,
        "the hosts could not connect, or lost the connection, for the migration",
        _NETWORK_REMEDY,
    ),
    Rule(
        Match.HRESULT,
        (0x8007271D,),
        ConfigurationError,
        c.MIGRATION_PORT_BLOCKED,
        "a firewall or antivirus forbids the migration socket (0x8007271D)",
        "allow TCP 6600 between the hosts",
    ),
    Rule(
        Match.HRESULT,
        (0x800705AA, 0x8007000E),
        ConfigurationError,
        c.DESTINATION_OUT_OF_MEMORY,
        "the destination does not have the memory for the VM",
        "free memory on the destination host (or pick another destination), then retry",
    ),
    Rule(
        Match.HRESULT,
        (0xC03A0014,),
        ConfigurationError,
        c.ISO_MISSING_ON_DESTINATION,
        "an attached ISO does not exist on the destination (0xC03A0014)",
        "eject the ISO from the VM's DVD drive (or copy it to the same path on the destination), then retry",
        auto_remediable=True,
    ),
    Rule(
        Match.HRESULT,
        (0x80070070,),
        ConfigurationError,
        c.DESTINATION_DISK_FULL,
        "the destination volume is full (0x80070070)",
        "free space on the destination volume or choose another destination path, then clean the partial files",
    ),
    Rule(
        Match.HRESULT,
        (0x800700B7, 0x80070050),
        ConfigurationError,
        c.DESTINATION_LEFTOVERS,
        "an earlier move left a VM or files on the destination",
        "remove the planned VM and partial files the failed move left on the destination, then retry",
        auto_remediable=True,
    ),
    Rule(
        Match.HRESULT,
        (0x80070005,),
        ConfigurationError,
        c.HOST_ACCESS_DENIED,
        "access denied (0x80070005)",
        "give the account {user} the rights it needs on {host} (Hyper-V Administrators, or local Administrators)",
    ),
    # --- requirement failures a move or Compare-VM reports (catalogue 2.2, hyperv-facts requirements) ---
    Rule(
        Match.TEXT,
        (r"Could not find Ethernet switch",),
        ConfigurationError,
        c.SWITCH_MISSING_ON_DESTINATION,
        "a virtual switch the VM uses does not exist on the destination",
        "create the switch, by the same name, on the destination, or reconnect the VM's adapter",
    ),
    Rule(
        Match.TEXT,
        (r"processor-specific features not supported",),
        ConfigurationError,
        c.PROCESSOR_INCOMPATIBLE,
        "the destination's processor lacks features the VM uses",
        "turn on processor compatibility for the VM (it must be off to change it), or choose a host with the "
        "same processor",
    ),
    Rule(
        Match.TEXT,
        (r"not configured for live migration", r"not configured to allow migrations"),
        ConfigurationError,
        c.MIGRATION_DISABLED,
        "live migration is not enabled on a host",
        "enable live migration on both hosts (Enable-VMMigration)",
        auto_remediable=True,
    ),
    Rule(
        Match.TEXT,
        (r"no migration networks are specified",),
        ConfigurationError,
        c.MIGRATION_NETWORKS_MISSING,
        "the destination has no migration network for incoming live migrations",
        "add the migration network on the destination (Add-VMMigrationNetwork)",
        auto_remediable=True,
    ),
    Rule(
        Match.TEXT,
        (r"not supported on a clustered virtual machine",),
        ConfigurationError,
        c.VM_IS_CLUSTERED,
        "the VM is clustered",
        "remove the VM's cluster role first (the workflow's cluster step does this)",
    ),
    # --- lookups (catalogue 2.1) ---
    Rule(
        Match.TEXT,
        (r"unable to find a virtual machine with",),
        ConfigurationError,
        c.VM_NOT_FOUND,
        "no such VM on the host",
        "check the VM's name and which host it is on",
    ),
    Rule(
        Match.TEXT,
        (r"unable to find a virtual switch with",),
        ConfigurationError,
        c.SWITCH_NOT_FOUND,
        "no such virtual switch on the host",
        "check the switch's name",
    ),
    Rule(
        Match.TEXT,
        (r"You do not have the required permission",),
        ConfigurationError,
        c.HOST_ACCESS_DENIED,
        "the account is not allowed to manage Hyper-V on the host",
        "add {user} to Hyper-V Administrators on {host}",
    ),
    Rule(
        Match.FQID,
        ("InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",),
        ConfigurationError,
        c.VM_NOT_FOUND,
        "no such VM on the host",
        "check the VM's name and which host it is on",
    ),
    # --- the PowerShell engine (catalogue 2.5, 2.6) ---
    Rule(
        Match.FQID,
        ("CommandNotFoundException",),
        ConfigurationError,
        c.COMMAND_NOT_FOUND,
        "the command does not exist on the host",
        "install the PowerShell module that provides {command} on {host} (Hyper-V, FailoverClusters, NetSecurity...)",
    ),
    Rule(
        Match.EXCEPTION_TYPE,
        ("System.Management.Automation.ParameterBindingException", "ParameterBindingException"),
        ConfigurationError,
        c.PARAMETER_BINDING_FAILED,
        "the host rejected the command's parameters",
        "this is a bug in snlm (the command it built does not bind on this host's module version): report it "
        "with this error's details",
    ),
    Rule(
        Match.FQID,
        ("ClusterEndpointNotRegistered,", "ClusterRpcConnection,"),
        TransientError,
        c.CLUSTER_SERVICE_UNAVAILABLE,
        "the cluster service does not answer",
        "check the cluster service on the cluster's nodes; " + _RETRY_NOTE,
    ),
    Rule(
        Match.CATEGORY,
        (15, 19),  # OperationTimeout, ResourceBusy
        TransientError,
        c.HOST_BUSY,
        "the host is busy",
        _RETRY_NOTE,
    ),
    Rule(
        Match.CATEGORY,
        (18,),  # PermissionDenied
        ConfigurationError,
        c.HOST_ACCESS_DENIED,
        "permission denied",
        "give the account {user} the rights it needs on {host}",
    ),
    # --- WSMan faults (MS-WSMV; reference/psrp-wire-notes.md) ---
    Rule(
        Match.WSMAN_FAULT,
        (2150858843,),
        TransientError,
        c.HOST_SESSION_LOST,
        "the PowerShell session is gone from the host (WinRM restarted?)",
        "a new session is opened on retry",
    ),
    Rule(
        Match.WSMAN_FAULT,
        (2150858793,),
        TransientError,
        c.HOST_OPERATION_TIMEOUT,
        "the WinRM operation timed out",
        _RETRY_NOTE,
    ),
    Rule(
        Match.WSMAN_FAULT,
        (5, 0x80070005),
        ConfigurationError,
        c.HOST_ACCESS_DENIED,
        "WinRM denied access to {user}",
        "allow {user} to use PowerShell remoting on {host} (Remote Management Users or Administrators)",
    ),
    # --- transport (requests, pypsrp, CredSSP) ---
    Rule(
        Match.TRANSPORT,
        ("requests.exceptions.SSLError",),
        ConfigurationError,
        c.HOST_TLS_FAILURE,
        "TLS validation failed for {host}",
        "set ca_file in the inventory to the CA that signed {host}'s WinRM certificate, and check that the "
        "certificate names {address}",
    ),
    Rule(
        Match.TRANSPORT,
        (
            "pypsrp.exceptions.AuthenticationError",
            "requests_credssp.exceptions.NTStatusException",
            "spnego.exceptions.SpnegoError",
        ),
        ConfigurationError,
        c.HOST_AUTHENTICATION_FAILED,
        "wrong credentials for {user} on {host}",
        "check the inventory's password reference ({password_ref}) for {user}, and that the account may log "
        "on to {host} over WinRM",
    ),
    Rule(
        Match.TRANSPORT,
        ("requests.exceptions.ReadTimeout",),
        TransientError,
        c.HOST_TIMEOUT,
        "the host did not answer in time",
        _RETRY_NOTE,
    ),
    Rule(
        Match.TRANSPORT,
        (
            "requests.exceptions.ConnectionError",
            "requests.exceptions.Timeout",
            "builtins.ConnectionError",
            "builtins.TimeoutError",
        ),
        TransientError,
        c.HOST_UNREACHABLE,
        "host unreachable at {address}:{port}",
        "check that {host} is up and WinRM listens on {address}:{port}; " + _RETRY_NOTE,
    ),
    Rule(
        Match.TRANSPORT,
        (
            "pypsrp.exceptions.InvalidPSRPOperation",
            "pypsrp.exceptions.InvalidRunspacePoolStateError",
            "requests_credssp.exceptions.AuthenticationException",
            # An HTTP error status without a WSMan fault: what a sealed NTLM/CredSSP session looks like once the
            # host dropped it (reference/psrp-wire-notes.md); a new pool on the next attempt recovers.
            "pypsrp.exceptions.WinRMTransportError",
        ),
        TransientError,
        c.HOST_SESSION_LOST,
        "the PowerShell session with the host broke",
        "a new session is opened on retry",
    ),
)


# -- classification ---------------------------------------------------------------------------------------
def _fault_code(exc: WSManFaultError) -> int | None:
    try:
        return int(exc.code)
    except (TypeError, ValueError, IndexError):
        return None


class _Blank(dict[str, str]):
    """Template values: a placeholder nobody supplied shows as a readable word, never raises."""

    def __missing__(self, key: str) -> str:
        return {"user": "the account", "password_ref": "password_env / password_file"}.get(key, f"<{key}>")


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, _REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, secrets) for item in value]
    return value


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _build(
    rule: Rule | None,
    fallback: tuple[type[SnlmError], str, str, str],
    host: str,
    command: str,
    said: str,
    details: dict[str, Any],
    context: Mapping[str, Any] | None,
    secrets: Sequence[str],
) -> SnlmError:
    values = _Blank({key: str(value) for key, value in (context or {}).items() if value is not None})
    values.update(host=host, command=command)
    if rule is not None:
        cls, error_type, meaning, remedy = rule.error, rule.error_type, rule.meaning, rule.remedy
        auto = rule.auto_remediable
    else:
        cls, error_type, meaning, remedy = fallback
        auto = False
    meaning = meaning.format_map(values)
    remedy = remedy.format_map(values)
    message = f"{command} on {host}: {meaning}"
    if said:
        message += f": {_clip(said)}"
    details = {"host": host, "command": command, "auto_remediable": auto, **details}
    return cls(_scrub(message, secrets), error_type=error_type, remedy=remedy, details=_scrub(details, secrets))


def classify(
    record: ErrorInfo | Any,
    host: str,
    command: str,
    *,
    context: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> SnlmError:
    """The engine's error for one PowerShell error record (an `ErrorInfo` or a pypsrp ErrorRecord).

    Args:
        record: the record.
        host: the host's name, for the message.
        command: the command that wrote it (e.g. "Move-VM"), for the message.
        context: template values for the remedy (`user`, `address`, `port`, `password_ref`).
        secrets: strings that must never appear in the result (scrubbed from message and details).
    """
    info = record if isinstance(record, ErrorInfo) else ErrorInfo.from_record(record)
    rule = next((r for r in RULES if r.matches_record(info)), None)
    fallback = (UnknownError, c.HOST_COMMAND_FAILED, "unrecognised error", "see the error record in the details")
    return _build(rule, fallback, host, command, info.message, {"record": info.to_details()}, context, secrets)


def classify_exception(
    exc: BaseException,
    host: str,
    command: str,
    *,
    context: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> SnlmError:
    """The engine's error for an exception raised while talking to a host (transport, WSMan fault, PSRP)."""
    if isinstance(exc, SnlmError):
        return exc
    rule = next((r for r in RULES if r.matches_exception(exc)), None)
    details: dict[str, Any] = {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    said = str(exc)
    if isinstance(exc, WSManFaultError):
        details["wsman_fault"] = _fault_code(exc)
        said = str(exc.reason or said)
    fallback = (UnknownError, c.HOST_TRANSPORT_ERROR, "unrecognised failure", "see the exception in the details")
    details["exception_message"] = _clip(said)
    return _build(rule, fallback, host, command, said, details, context, secrets)


# -- results ------------------------------------------------------------------------------------------------
def _plain(value: Any, depth: int) -> Any:
    if isinstance(value, GenericComplexObject):
        if (value.adapted_properties or value.extended_properties) and depth < _MAX_DEPTH:
            return props(value, _depth=depth + 1)
        # An enum (its ToString is the name) or an object serialized past its depth (ToString).
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item, depth) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, depth) for key, item in value.items()}
    if isinstance(value, str | int | float | bool | bytes) or value is None:
        return value
    if type(value).__module__.startswith("pypsrp"):
        return str(value)
    return value  # uuid.UUID, Decimal, datetime...


def props(obj: Any, *, _depth: int = 0) -> dict[str, Any]:
    """A deserialized .NET object's properties as a dict: adapted (the .NET properties) and extended (the
    ps1xml aliases, Select-Object / PSCustomObject members), enums as their names, nested objects as dicts."""
    out: dict[str, Any] = {}
    for bag in (getattr(obj, "adapted_properties", None) or {}, getattr(obj, "extended_properties", None) or {}):
        for name, value in bag.items():
            out[str(name)] = _plain(value, _depth)
    return out


def _output_value(value: Any) -> Any:
    if isinstance(value, GenericComplexObject) and (value.adapted_properties or value.extended_properties):
        return props(value)
    return _plain(value, 0)


@dataclass(frozen=True)
class ProgressInfo:
    """One progress record (a synchronous Move-VM writes "<pct>%" records, then a Completed one)."""

    activity: str
    description: str
    percent_complete: int
    record_type: str  # "Processing" or "Completed"
    current_operation: str = ""
    seconds_remaining: int = -1


@dataclass(frozen=True)
class Command:
    """One structured command: a cmdlet, named parameters (a None value is left out; `NULL` passes `$null`, as
    in `Set-VMDvdDrive -Path $null`), switches, positional arguments. Values are serialized by pypsrp as typed
    CLIXML, never spliced into text."""

    cmdlet: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    switches: tuple[str, ...] = ()
    arguments: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not _CMDLET_NAME.match(self.cmdlet):
            raise ValueError(f"not a cmdlet name: {self.cmdlet!r} (structured commands only)")
        for name in (*self.parameters, *self.switches):
            if not _PARAMETER_NAME.match(name):
                raise ValueError(f"not a parameter name: {name!r} (for {self.cmdlet})")


@dataclass(frozen=True)
class CommandResult:
    """What a command returned.

    Attributes:
        host, command: where and what ("Get-VM", or "Get-VM | Select-Object" for a pipeline).
        output: each output object flattened (`props()` for objects, plain values otherwise).
        raw_output: the objects as pypsrp deserialized them.
        warnings, verbose: the records' messages.
        progress: the progress records.
        records: every error record, as ErrorInfo.
        errors: the engine's error for each record (only ever non-empty with `check=False`).
        state: "Completed", "Failed" or "Stopped".
    """

    host: str
    command: str
    output: tuple[Any, ...] = ()
    raw_output: tuple[Any, ...] = ()
    warnings: tuple[str, ...] = ()
    verbose: tuple[str, ...] = ()
    progress: tuple[ProgressInfo, ...] = ()
    records: tuple[ErrorInfo, ...] = ()
    errors: tuple[SnlmError, ...] = ()
    state: str = "Completed"

    @property
    def ok(self) -> bool:
        return not self.records and self.state == "Completed"


# -- observers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionReport:
    """What one closed session did: its host, round trips and commands (no arguments, so no data leaks)."""

    host: str
    round_trips: int
    calls: dict[str, int]


_observers: list[Callable[[SessionReport], None]] = []


def add_session_observer(observer: Callable[[SessionReport], None]) -> Callable[[], None]:
    """Call `observer` as each HostClient closes (on the activity's thread, so `activity.info()` says which
    step it served); returns the function that removes it. Used for round-trip accounting per step."""
    _observers.append(observer)
    return lambda: _observers.remove(observer)


# -- the client -----------------------------------------------------------------------------------------
class HostClient:
    """One host, one runspace pool, for the life of a `with` block (an activity attempt).

    Args:
        entry: the host's inventory entry (address, auth, password reference, TLS).
        connect_timeout: seconds to establish a TCP/TLS connection.
        read_timeout: seconds to wait for any HTTP answer; must exceed `operation_timeout`.
        operation_timeout: the WSMan OperationTimeout (seconds a Receive may long-poll on the host).
        command_timeout: the default bound on one command, start to end; a command still running then is
            stopped and TransientError(HostTimeout) raised. Per call: `run(..., timeout=)`.

    `round_trips` counts the pool's open and close and every command invoked (for the benchmark "PSRP round
    trips per migration, by step"); `calls` counts commands by cmdlet.
    """

    def __init__(
        self,
        entry: HostEntry,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        operation_timeout: int = 20,
        command_timeout: float = 600.0,
    ) -> None:
        if read_timeout <= operation_timeout:
            raise ValueError(
                f"read_timeout ({read_timeout}) must exceed operation_timeout ({operation_timeout}): the host "
                "long-polls for up to operation_timeout before it answers"
            )
        if min(connect_timeout, operation_timeout, command_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        self.entry = entry
        self.host = entry.name
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.operation_timeout = operation_timeout
        self.command_timeout = command_timeout
        self.round_trips = 0
        self.calls: Counter[str] = Counter()
        self._pool: RunspacePool | None = None
        self._password: SecretStr | None = None

    def __repr__(self) -> str:
        return f"HostClient({self.host!r}, {self.entry.scheme}://{self.entry.address}:{self.entry.effective_port})"

    # -- context -----------------------------------------------------------------------------------------
    def _context(self) -> dict[str, Any]:
        entry = self.entry
        if entry.password_env is not None:
            ref = f"password_env {entry.password_env}"
        elif entry.password_file is not None:
            ref = f"password_file {entry.password_file}"
        else:
            ref = "no password reference"
        return {
            "user": entry.username,
            "address": entry.address,
            "port": entry.effective_port,
            "password_ref": ref,
        }

    def _secrets(self) -> tuple[str, ...]:
        return (self._password.get_secret_value(),) if self._password is not None else ()

    def _fail(self, exc: BaseException, command: str) -> SnlmError:
        return classify_exception(exc, self.host, command, context=self._context(), secrets=self._secrets())

    # -- lifecycle -----------------------------------------------------------------------------------------
    def open(self) -> HostClient:
        """Open the runspace pool (one round trip); raise the engine's error when the host cannot be reached."""
        if self._pool is not None:
            raise RuntimeError(f"{self!r} is already open")
        entry = self.entry
        if entry.auth != "kerberos" or entry.password_env is not None or entry.password_file is not None:
            self._password = entry.resolve_password()  # InventoryError (configuration) naming the field
        try:
            # pypsrp annotates these as bool / int, but hands them to requests, which takes a CA path for
            # `verify` and float timeouts.
            options: dict[str, Any] = {
                "cert_validation": entry.tls_verify,
                "connection_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
            }
            connection = WSMan(
                entry.address,
                port=entry.effective_port,
                ssl=entry.use_tls,
                auth=entry.auth,
                username=entry.username,
                password=self._password.get_secret_value() if self._password is not None else None,
                encryption=entry.encryption,
                operation_timeout=self.operation_timeout,
                **options,
            )
            pool = RunspacePool(connection)
            self.round_trips += 1
            pool.open()
        except Exception as exc:
            raise self._fail(exc, "opening a PowerShell session") from exc
        self._pool = pool
        log.debug("opened a runspace pool on %s", self.host)
        return self

    def close(self) -> None:
        """Close the pool (one round trip). A failure to close is logged, never raised: the work is done, and
        the host drops an idle shell by itself."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self.round_trips += 1
        try:
            pool.close()
        except Exception as exc:
            log.warning("closing the PowerShell session on %s failed: %s", self.host, self._fail(exc, "close"))
        report = SessionReport(self.host, self.round_trips, dict(self.calls))
        for observer in list(_observers):
            try:
                observer(report)
            except Exception:  # accounting must never break a host session
                log.warning("a session observer failed", exc_info=True)

    def __enter__(self) -> HostClient:
        return self if self._pool is not None else self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------------------------
    def run(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        switches: Iterable[str] = (),
        arguments: Iterable[Any] = (),
        input: Iterable[Any] | None = None,
        error_action_stop: bool = False,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one cmdlet with named `parameters` (None values left out), `switches` and positional
        `arguments`; `input` objects go down its pipeline. With `error_action_stop` the cmdlet runs with
        `-ErrorAction Stop` (its first error ends the pipeline Failed).

        Raises the engine's error for the first error record (`check=True`, the default), or returns them in
        `CommandResult.errors` (`check=False`, for probes such as "is the VM still on the source?").
        """
        command = Command(cmdlet, dict(parameters or {}), tuple(switches), tuple(arguments))
        return self.pipeline([command], input=input, error_action_stop=error_action_stop, check=check, timeout=timeout)

    def pipeline(
        self,
        commands: Sequence[Command],
        *,
        input: Iterable[Any] | None = None,
        error_action_stop: bool = False,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run several commands as ONE pipeline (`A | B`), in one round trip."""
        if not commands:
            raise ValueError("a pipeline needs at least one command")
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"{self!r} is not open: use it as a context manager")
        name = " | ".join(command.cmdlet for command in commands)
        ps = PowerShell(pool)
        for command in commands:
            ps.add_cmdlet(command.cmdlet)
            for parameter, value in command.parameters.items():
                if value is NULL:
                    ps.add_parameter(parameter, None)
                elif value is not None:
                    ps.add_parameter(parameter, value)
            for switch in command.switches:
                ps.add_parameter(switch)
            for argument in command.arguments:
                ps.add_argument(argument)
            if error_action_stop:
                ps.add_parameter("ErrorAction", "Stop")
            self.calls[command.cmdlet] += 1
        self.round_trips += 1
        limit = self.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            pipeline_input: Any = list(input) if input is not None else None
            ps.begin_invoke(input=pipeline_input)
            while ps.state == PSInvocationState.RUNNING:
                if time.monotonic() > deadline:
                    self._stop(ps)
                    raise TransientError(
                        f"{name} on {self.host}: still running after {limit:g} s; stopped",
                        error_type=c.HOST_TIMEOUT,
                        remedy="the host is slow or the command long: retried with backoff",
                        details={"host": self.host, "command": name, "timeout_seconds": limit},
                    )
                ps.poll_invoke()
        except SnlmError:
            raise
        except Exception as exc:
            raise self._fail(exc, name) from exc
        return self._result(ps, name, check)

    @staticmethod
    def _stop(ps: PowerShell) -> None:
        try:
            ps.stop()
        except Exception as exc:
            log.debug("stopping a pipeline failed: %s", type(exc).__name__)

    def _result(self, ps: PowerShell, name: str, check: bool) -> CommandResult:
        records = tuple(ErrorInfo.from_record(record) for record in ps.streams.error)
        if ps.had_errors and not records:
            # Failed without a record: still a failure (pypsrp sets had_errors only for state Failed).
            records = (ErrorInfo(message=f"the pipeline ended {_state_name(ps.state)} without an error record"),)
        errors = tuple(
            classify(info, self.host, info.activity or name, context=self._context(), secrets=self._secrets())
            for info in records
        )
        if errors and check:
            first = errors[0]
            if len(errors) > 1:
                first.details["other_errors"] = [str(error) for error in errors[1:5]]
            raise first
        return CommandResult(
            host=self.host,
            command=name,
            output=tuple(_output_value(item) for item in ps.output),
            raw_output=tuple(ps.output),
            warnings=tuple(str(getattr(record, "message", record)) for record in ps.streams.warning),
            verbose=tuple(str(getattr(record, "message", record)) for record in ps.streams.verbose),
            progress=tuple(_progress(record) for record in ps.streams.progress),
            records=records,
            errors=errors,
            state=_state_name(ps.state),
        )


def _state_name(state: int) -> str:
    return {
        PSInvocationState.COMPLETED: "Completed",
        PSInvocationState.FAILED: "Failed",
        PSInvocationState.STOPPED: "Stopped",
    }.get(state, str(state))


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _progress(record: Any) -> ProgressInfo:
    return ProgressInfo(
        activity=str(getattr(record, "activity", "") or ""),
        description=str(getattr(record, "description", "") or ""),
        percent_complete=_int(getattr(record, "percent_complete", None), -1),
        record_type=str(getattr(record, "progress_type", "") or ""),
        current_operation=str(getattr(record, "current_operation", "") or ""),
        seconds_remaining=_int(getattr(record, "seconds_remaining", None), -1),
    )
