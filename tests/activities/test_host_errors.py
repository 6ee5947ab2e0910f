"""The table of what hosts say (activities/host_errors.py), offline: records and exceptions shaped as the lab
and the catalogue show them, each mapped to the engine's error class, stable type and remedy.

The same table over the wire (a failed Move-VM, a wrong password, a refused connection) is in test_hosts.py.
"""

from __future__ import annotations

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from activities.errors import (
    ConfigurationError,
    ErrorKind,
    SnlmError,
    TransientError,
    UnknownError,
)
from activities.host_errors import RULES, ErrorInfo, Match, breaks_session, classify, classify_exception
from workflows import contracts as c


def assert_no_secret(error: SnlmError, *secrets: str) -> None:
    app = error.to_application_error()
    texts = [str(error), repr(error), repr(error.details), error.remedy, str(app), repr(app.details)]
    for secret in secrets:
        assert secret
        for text in texts:
            assert secret not in text


VIRT = ("Microsoft.HyperV.PowerShell.VirtualizationException", "System.Exception", "System.Object")
MOVE_FQID = "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"
SUMMARY = "Virtual machine migration operation for 'vm1' failed at migration source 'HV01'.\r\n\r\n"


def move_record(text: str) -> ErrorInfo:
    return ErrorInfo(
        fq_error=MOVE_FQID,
        message=SUMMARY + text,
        category=0,
        reason="VirtualizationException",
        activity="Move-VM",
        exception_types=VIRT,
        hresult=-2146233088,
    )


@pytest.mark.parametrize(
    ("record", "kind", "error_type"),
    [
        (move_record("No credentials are available in the security package (0x8009030E)."),
         ErrorKind.CONFIGURATION, c.DELEGATION_MISSING),
        (move_record("The credentials supplied to the package were not recognized (0x8009030D)."),
         ErrorKind.CONFIGURATION, c.MIGRATION_CREDENTIALS_REJECTED),
        (move_record("The target principal name is incorrect. (0x80090322)."),
         ErrorKind.CONFIGURATION, c.MIGRATION_TARGET_PRINCIPAL_INCORRECT),
        (move_record("actively refused it. (0x8007274D)"), ErrorKind.TRANSIENT, c.MIGRATION_NETWORK_ERROR),
        (move_record("forcibly closed by the remote host. (0x80072746)"), ErrorKind.TRANSIENT,
         c.MIGRATION_NETWORK_ERROR),
        (move_record("'vm1' could not initialize memory: Ran out of memory (0x8007000E)."),
         ErrorKind.CONFIGURATION, c.DESTINATION_OUT_OF_MEMORY),
        (move_record("Failed to create partition: Insufficient system resources (0x800705AA)"),
         ErrorKind.CONFIGURATION, c.DESTINATION_OUT_OF_MEMORY),
        (move_record('Failed to restore with Error "A virtual disk support provider..." (0xC03A0014).'),
         ErrorKind.CONFIGURATION, c.ISO_MISSING_ON_DESTINATION),
        (move_record('Failed to perform migration on virtual machine "vm1" because virtual machine migration limit '
                     '"2" was reached, please wait for completion of an ongoing migration operation.'),
         ErrorKind.ADMISSION, c.MIGRATION_LIMIT_REACHED),
        (move_record("Virtual machine migration limit 1 was reached, please wait for completion of an ongoing "
                     "migration operation."), ErrorKind.ADMISSION, c.MIGRATION_LIMIT_REACHED),
        (move_record("Logon failure: the user has not been granted the requested logon type (0x80070569)"),
         ErrorKind.CONFIGURATION, c.MIGRATION_LOGON_FAILURE),
        (move_record("Could not find Ethernet switch 'Production'."), ErrorKind.CONFIGURATION,
         c.SWITCH_MISSING_ON_DESTINATION),
        (ErrorInfo(fq_error="UnauthorizedAccess,X", message="Access is denied.", hresult=-2147024891),
         ErrorKind.CONFIGURATION, c.HOST_ACCESS_DENIED),
        (ErrorInfo(fq_error="CommandNotFoundException", message="The term 'Get-Foo' is not recognized",
                   category=13), ErrorKind.CONFIGURATION, c.COMMAND_NOT_FOUND),
        (ErrorInfo(fq_error="ParameterArgumentValidationError,Microsoft.HyperV.PowerShell.Commands.MoveVM",
                   reason="ParameterBindingValidationException",
                   exception_types=("System.Management.Automation.ParameterBindingValidationException",
                                    "System.Management.Automation.ParameterBindingException")),
         ErrorKind.CONFIGURATION, c.PARAMETER_BINDING_FAILED),
        (ErrorInfo(fq_error="ObjectInUse,Microsoft.HyperV.PowerShell.Commands.SetVM", message="busy", category=19),
         ErrorKind.TRANSIENT, c.HOST_BUSY),
        (ErrorInfo(fq_error="Weird,Thing", message="something new", category=0), ErrorKind.UNKNOWN,
         c.HOST_COMMAND_FAILED),
    ],
)  # fmt: skip
def test_classify_records(record: ErrorInfo, kind: ErrorKind, error_type: str) -> None:
    error = classify(record, "HV01", "Move-VM", context={"user": "LAB\\svc"})
    assert error.kind is kind
    assert error.error_type == error_type
    assert str(error).startswith("Move-VM on HV01: ")
    assert error.details["record"]["fq_error"] == record.fq_error
    assert error.to_application_error().type == error_type


def test_unknown_record_carries_the_whole_record_and_never_a_secret() -> None:
    secret = "S3cret-in-a-message"
    record = ErrorInfo(
        fq_error="Strange,Vendor.Module",
        message=f"the provider echoed {secret} back",
        category=7,
        category_info="InvalidOperation: (:) [Get-Thing], StrangeException",
        reason="StrangeException",
        activity="Get-Thing",
        target="t1",
        exception_types=("Vendor.StrangeException",),
        hresult=-2146233079,
    )
    error = classify(record, "HV01", "Get-Thing", secrets=[secret])
    assert isinstance(error, UnknownError)
    assert error.details["record"] == {**record.to_details(), "message": "the provider echoed ******** back"}
    assert error.details["record"]["hresult"] == "0x80131509"
    assert_no_secret(error, secret)


def test_classify_exceptions() -> None:
    context = {"user": "LAB\\svc", "address": "10.0.0.1", "port": 5986, "password_ref": "password_env PW"}
    cases: list[tuple[BaseException, type[SnlmError], str]] = [
        (requests.exceptions.ConnectionError("refused"), TransientError, c.HOST_UNREACHABLE),
        (requests.exceptions.ConnectTimeout("slow"), TransientError, c.HOST_UNREACHABLE),
        (requests.exceptions.ReadTimeout("slow"), TransientError, c.HOST_TIMEOUT),
        (requests.exceptions.SSLError("bad cert"), ConfigurationError, c.HOST_TLS_FAILURE),
        (AuthenticationError("Failed to authenticate the user LAB\\svc with ntlm"), ConfigurationError,
         c.HOST_AUTHENTICATION_FAILED),
        (WSManFaultError(2150858843, "HV01", "shell not found", "", "", ""), TransientError, c.HOST_SESSION_LOST),
        (WSManFaultError(2150858793, "HV01", "timed out", "", "", ""), TransientError, c.HOST_OPERATION_TIMEOUT),
        (WSManFaultError(5, "HV01", "Access is denied.", "", "", ""), ConfigurationError, c.HOST_ACCESS_DENIED),
        (WSManFaultError(1, "HV01", "odd", "", "", ""), UnknownError, c.HOST_TRANSPORT_ERROR),
        (WinRMTransportError("http", 400, ""), TransientError, c.HOST_SESSION_LOST),
        (RuntimeError("new"), UnknownError, c.HOST_TRANSPORT_ERROR),
    ]  # fmt: skip
    for exc, cls, error_type in cases:
        error = classify_exception(exc, "HV01", "Get-VM", context=context)
        assert type(error) is cls, exc
        assert error.error_type == error_type, exc
        assert str(error).startswith("Get-VM on HV01: "), error
    auth = classify_exception(AuthenticationError("x"), "HV01", "open", context=context)
    assert "wrong credentials for LAB\\svc on HV01" in str(auth)
    assert "password_env PW" in auth.remedy


def test_the_table_is_data() -> None:
    # Every rule's error type is a contract name, and every match kind is used.
    names = {value for key, value in vars(c).items() if key.isupper() and isinstance(value, str)}
    assert {rule.error_type for rule in RULES} <= names
    assert {rule.match for rule in RULES} == set(Match)


def test_the_first_matching_rule_wins() -> None:
    # A Move-VM record carries a generic summary and an access-denied HResult; the specific code in the text
    # comes earlier in the table and decides.
    record = ErrorInfo(
        fq_error=MOVE_FQID,
        message=SUMMARY + "No credentials are available in the security package (0x8009030E). Access is denied.",
        hresult=-2147024891,  # 0x80070005, HOST_ACCESS_DENIED further down
    )
    assert classify(record, "HV01", "Move-VM").error_type == c.DELEGATION_MISSING


def test_an_exception_without_context_reads_plainly_and_never_holds_a_secret() -> None:
    secret = "S3cret-echoed-by-a-transport"
    error = classify_exception(AuthenticationError(f"bad password {secret}"), "HV01", "opening", secrets=[secret])
    assert isinstance(error, ConfigurationError)
    assert "wrong credentials for the account on HV01" in str(error)
    assert "password_env / password_file" in error.remedy
    assert error.details["exception"] == "pypsrp.exceptions.AuthenticationError"
    assert_no_secret(error, secret)


# -- WinRM quotas (catalogue 6.3) and what a failure means for the session -------------------------------------
SHELLS_QUOTA = (
    "The WS-Management service cannot process the request. This user is allowed a maximum number of 25 concurrent "
    "shells, which has been exceeded. Close existing shells or raise the quota for this user."
)
OPERATIONS_QUOTA = (
    "The WS-Management service cannot process the request. This user is allowed a maximum number of 1500 "
    "concurrent operations, which has been exceeded. Close existing operations for this user, or raise the quota "
    "for this user."
)
COMMANDS_PER_SHELL = (
    "The WS-Management service cannot process the request. The maximum number of concurrent commands per shell has "
    "been exceeded. Retry the request later or raise the Maximum Commands per Shell quota."
)


@pytest.mark.parametrize(
    ("exc", "error_type", "broken"),
    [
        # The shell quota, with the WSManFault's code, and with only the SOAP subcode pypsrp falls back to.
        (WSManFaultError(2150859173, "HV01", SHELLS_QUOTA, "", "", ""), c.HOST_BUSY, False),
        (WSManFaultError("w:QuotaLimit", "HV01", SHELLS_QUOTA, "", "", ""), c.HOST_BUSY, False),
        (WSManFaultError(2150859174, "HV01", OPERATIONS_QUOTA, "", "", ""), c.HOST_BUSY, False),
        (WSManFaultError("w:QuotaLimit", "HV01", "a quota nobody named", "", "", ""), c.HOST_BUSY, False),
        # pypsrp#148: w:InternalError and no code; the session is spent and must be replaced.
        (WSManFaultError("w:InternalError", "HV01", COMMANDS_PER_SHELL, "", "", ""), c.HOST_SESSION_LOST, True),
        (WSManFaultError(2150858843, "HV01", "shell not found", "", "", ""), c.HOST_SESSION_LOST, True),
        (WSManFaultError(5, "HV01", "Access is denied.", "", "", ""), c.HOST_ACCESS_DENIED, False),
        (requests.exceptions.ConnectionError("refused"), c.HOST_UNREACHABLE, True),
        (requests.exceptions.ReadTimeout("slow"), c.HOST_TIMEOUT, True),
        (WinRMTransportError("http", 400, ""), c.HOST_SESSION_LOST, True),
        (RuntimeError("new"), c.HOST_TRANSPORT_ERROR, True),  # not recognised: not trusted either
    ],
)  # fmt: skip
def test_quota_faults_and_broken_sessions(exc: BaseException, error_type: str, broken: bool) -> None:
    context = {"user": "LAB\\svc"}
    error = classify_exception(exc, "HV01", "Get-VM", context=context)
    assert error.error_type == error_type
    assert breaks_session(exc) is broken
    if error_type == c.HOST_BUSY:
        assert isinstance(error, TransientError)
        assert not error.to_application_error().non_retryable


def test_the_shell_quota_names_the_setting_and_the_account() -> None:
    error = classify_exception(
        WSManFaultError(2150859173, "HV01", SHELLS_QUOTA, "", "", ""), "HV01", "opening a PowerShell session",
        context={"user": "LAB\\svc"},
    )  # fmt: skip
    assert isinstance(error, TransientError)
    assert "MaxShellsPerUser" in error.remedy
    assert "LAB\\svc" in str(error)
    assert error.details["wsman_fault"] == 2150859173
    spent = classify_exception(WSManFaultError("w:InternalError", "HV01", COMMANDS_PER_SHELL, "", "", ""), "HV01", "x")
    assert "MaxConcurrentCommandsPerShell" in str(spent)
    assert isinstance(spent, TransientError)


def test_an_error_record_never_breaks_a_session() -> None:
    assert not any(rule.breaks_session for rule in RULES if rule.match not in (Match.WSMAN_FAULT,
                   Match.WSMAN_FAULT_TEXT, Match.TRANSPORT))  # fmt: skip
    # An engine error that reached the client already classified is not a transport failure.
    assert not breaks_session(TransientError("busy", error_type=c.HOST_BUSY))
