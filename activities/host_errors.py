"""What a Hyper-V host can say when something fails, and what it means for the engine: one data-driven table.

`RULES` maps what a host reports — error-record text (event 21501...), HResults found in the message or the
exception (0x8009030E...), FullyQualifiedErrorId prefixes, exception types (ParameterBindingException...),
error categories, WSMan fault codes, and transport exceptions (requests, pypsrp, CredSSP) — to one of the
engine's error classes (activities/errors.py), a stable `error_type` (workflows/contracts.py) and a remedy.
The first matching rule wins, so the most specific signatures come first; anything unrecognised becomes
`UnknownError` carrying the full error record (or the exception's class and text) in its details. A rule also
says whether the PowerShell session it came through can still be used (`breaks_session`): an error record
never breaks one, most transport failures and some WSMan faults do (`breaks_session()`).

`classify()` (an error record) and `classify_exception()` (an exception raised while talking to a host) are
pure functions, testable offline; `ErrorInfo` is an ErrorRecord as plain, JSON-serialisable data. Every
message names the host and the command; no message or detail ever holds a password: the caller passes its
secrets and they are scrubbed out of everything built here, as a last line of defence.

The client that runs commands and calls these is in activities/hosts.py; the directory's own table is
activities/directory_errors.py.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pypsrp.exceptions import WSManFaultError

from activities.errors import (
    AdmissionError,
    ConfigurationError,
    SnlmError,
    TransientError,
    UnknownError,
)
from workflows import contracts as c

__all__ = [
    "RULES",
    "ErrorInfo",
    "Match",
    "Rule",
    "breaks_session",
    "classify",
    "classify_exception",
]

# "(0x8009030E)", "0x80072746" in a host's message.
_HEX_CODE: Final = re.compile(r"0x([0-9A-Fa-f]{8})\b")
# How much of a host's message goes into an error message (the details keep all of it).
_MESSAGE_LIMIT: Final = 1500
_REDACTED: Final = "********"


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
    WSMAN_FAULT = "wsman_fault"  # a WSManFault code (pypsrp WSManFaultError.code): an int, or the SOAP subcode
    WSMAN_FAULT_TEXT = "wsman_fault_text"  # a regular expression searched in a WSManFault's message
    TRANSPORT = "transport"  # a Python exception class, by dotted name, anywhere in the raised type's MRO


@dataclass(frozen=True)
class Rule:
    """One row of the table. `meaning` and `remedy` may name `{host}`, `{command}`, `{user}`, `{address}`,
    `{port}` and `{password_ref}` (where the inventory points for the password: a reference, never a value).

    `breaks_session`: the PowerShell session (runspace pool) the failure came through cannot be used again; the
    host client's pool closes it and opens a fresh one (activities/hosts.py `HostSessions`)."""

    match: Match
    keys: tuple[Any, ...]
    error: type[SnlmError]
    error_type: str
    meaning: str
    remedy: str = ""
    auto_remediable: bool = False
    breaks_session: bool = False

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
            if not isinstance(exc, WSManFaultError):
                return False
            # pypsrp gives the WSManFault's Code when there is one, else the SOAP subcode ("w:QuotaLimit").
            code, text = _fault_code(exc), str(exc.code or "").lower()
            return any(key.lower() == text if isinstance(key, str) else key == code for key in self.keys)
        if self.match is Match.WSMAN_FAULT_TEXT:
            said = str(exc.reason or "") if isinstance(exc, WSManFaultError) else ""
            return any(re.search(key, said, re.IGNORECASE) for key in self.keys)
        if self.match is Match.TRANSPORT:
            names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
            return any(key in names for key in self.keys)
        return False


_RETRY_NOTE = "retried with backoff"
_NETWORK_REMEDY = (
    "check that the destination's vmms listens on TCP 6600 (firewall rule 'Hyper-V (MIG-TCP-In)') and that "
    "the migration network between the hosts is up; " + _RETRY_NOTE
)

_SHELLS_REMEDY = (
    "close the PowerShell sessions {user} holds on {host} (each snlm worker keeps at most its per_host sessions "
    "per host), or raise MaxShellsPerUser (WinRM's winrs quota and the Microsoft.PowerShell endpoint's; the lower "
    "one binds); " + _RETRY_NOTE
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
    # A shell refuses its 1001st pipeline on 2012 R2 (pypsrp#148, catalogue 6.3): w:InternalError, no code.
    Rule(
        Match.WSMAN_FAULT_TEXT,
        (r"maximum number of concurrent commands per shell",),
        TransientError,
        c.HOST_SESSION_LOST,
        "the PowerShell session ran out of commands (the host's MaxConcurrentCommandsPerShell quota)",
        "a new session is opened on retry (snlm replaces a session before it runs max_pipelines commands; keep "
        "that below the host's quota)",
        breaks_session=True,
    ),
    Rule(
        Match.WSMAN_FAULT,
        (2150859173,),
        TransientError,
        c.HOST_BUSY,
        "{user} holds as many PowerShell sessions on the host as its quota allows (MaxShellsPerUser)",
        _SHELLS_REMEDY,
    ),
    Rule(
        Match.WSMAN_FAULT,
        (2150859174,),
        TransientError,
        c.HOST_BUSY,
        "{user} runs as many WinRM operations on the host as its quota allows (MaxConcurrentOperationsPerUser)",
        "other clients of {user} are busy on {host}, or raise MaxConcurrentOperationsPerUser "
        "(winrm/config/Service); " + _RETRY_NOTE,
    ),
    Rule(
        Match.WSMAN_FAULT_TEXT,
        (r"maximum number of \d+ concurrent shells", r"maximum number of concurrent shells"),
        TransientError,
        c.HOST_BUSY,
        "{user} holds as many PowerShell sessions on the host as its quota allows (MaxShellsPerUser)",
        _SHELLS_REMEDY,
    ),
    Rule(
        Match.WSMAN_FAULT,
        ("w:QuotaLimit",),
        TransientError,
        c.HOST_BUSY,
        "a WinRM quota of {user} on the host is reached",
        "close other sessions of {user} on {host} or raise the quota the message names; " + _RETRY_NOTE,
    ),
    Rule(
        Match.WSMAN_FAULT,
        (2150858843,),
        TransientError,
        c.HOST_SESSION_LOST,
        "the PowerShell session is gone from the host (WinRM restarted?)",
        "a new session is opened on retry",
        breaks_session=True,
    ),
    Rule(
        Match.WSMAN_FAULT,
        (2150858793,),
        TransientError,
        c.HOST_OPERATION_TIMEOUT,
        "the WinRM operation timed out",
        _RETRY_NOTE,
        breaks_session=True,
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
        breaks_session=True,
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
        breaks_session=True,
    ),
    Rule(
        Match.TRANSPORT,
        ("requests.exceptions.ReadTimeout",),
        TransientError,
        c.HOST_TIMEOUT,
        "the host did not answer in time",
        _RETRY_NOTE,
        breaks_session=True,
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
        breaks_session=True,
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
        breaks_session=True,
    ),
)


# -- classification ---------------------------------------------------------------------------------------
def _rule_for_exception(exc: BaseException) -> Rule | None:
    return next((r for r in RULES if r.matches_exception(exc)), None)


def breaks_session(exc: BaseException) -> bool:
    """Whether the PowerShell session an exception came through is finished: its rule says so, and an exception
    nobody recognised is not trusted either (the exchange it interrupted is in an unknown state)."""
    if isinstance(exc, SnlmError):
        return False
    rule = _rule_for_exception(exc)
    return rule.breaks_session if rule is not None else True


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
    rule = _rule_for_exception(exc)
    details: dict[str, Any] = {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    said = str(exc)
    if isinstance(exc, WSManFaultError):
        details["wsman_fault"] = _fault_code(exc)
        said = str(exc.reason or said)
    fallback = (UnknownError, c.HOST_TRANSPORT_ERROR, "unrecognised failure", "see the exception in the details")
    details["exception_message"] = _clip(said)
    return _build(rule, fallback, host, command, said, details, context, secrets)
