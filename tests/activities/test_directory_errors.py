"""The directory's error table (activities/directory_errors.py), offline: each row maps as it says.

Answers and exceptions are shaped as ldap3 hands them over (a `conn.result` dict; ssl and ldap3 exceptions
with the texts seen against Samba AD). The same table against a real directory is in test_directory.py.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from ldap3.core import exceptions as ldap_exc

from activities.directory_errors import (
    RULES,
    UNKNOWN_BIND,
    UNKNOWN_OPERATION,
    Match,
    ResultCode,
    Rule,
    When,
    classify_exception,
    classify_result,
    match_exception,
    match_result,
    none_usable,
)
from activities.errors import (
    ConfigurationError,
    SnlmError,
    TransientError,
    UnknownError,
    UnknownHostError,
)
from workflows import contracts as c

URI = "ldaps://dc1.corp.example"
CONTEXT = {
    "uri": URI,
    "who": "svc-snlm@corp.example",
    "what": "add delegation entries on HV01$",
    "account": "HV01$",
    "password_ref": "file /run/secrets/bind",
    "ca": "/etc/snlm/ca.pem",
}
PRIVILEGE_MESSAGE = (
    "00002098: SecErr: DSID-03150F94, problem 4003 (INSUFF_ACCESS_RIGHTS), data 0 (needs SeEnableDelegationPrivilege)"
)


def result(code: int, description: str = "", message: str = "") -> dict[str, Any]:
    return {"result": code, "description": description, "message": message, "dn": "", "referrals": None}


# (where, what ldap3 handed over, error class, error type, failover, words the message must hold)
SAMPLES: list[tuple[When, Any, type[SnlmError], str, bool, str]] = [
    # connecting
    (When.CONNECT, ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
     ConfigurationError, c.DIRECTORY_TLS_FAILURE, True, f"TLS with {URI} failed: [SSL: CERTIFICATE_VERIFY_FAILED]"),
    (When.CONNECT, ldap_exc.LDAPStartTLSError("wrap socket error: EOF occurred in violation of protocol"),
     ConfigurationError, c.DIRECTORY_TLS_FAILURE, True, "wrap socket error"),
    (When.CONNECT, ldap_exc.LDAPSocketOpenError("socket ssl wrapping error: certificate doesn't match 'dc9'"),
     ConfigurationError, c.DIRECTORY_TLS_FAILURE, True, "socket ssl wrapping error"),
    (When.CONNECT, ldap_exc.LDAPSocketOpenError("socket connection error while opening: [Errno 111] refused"),
     TransientError, c.DIRECTORY_UNREACHABLE, True, f"{URI} did not answer: socket connection error"),
    (When.CONNECT, result(2, "protocolError", "unsupported extended operation"),
     ConfigurationError, c.DIRECTORY_TLS_FAILURE, True, f"{URI} refused StartTLS: protocolError"),
    # the bind's answer
    (When.BIND, result(ResultCode.INVALID_CREDENTIALS, "invalidCredentials", "80090308: LdapErr: DSID-0C09044E"),
     ConfigurationError, c.DIRECTORY_INVALID_CREDENTIALS, False,
     f"refused the bind account svc-snlm@corp.example on {URI}: invalid credentials"),
    (When.BIND, result(ResultCode.BUSY, "busy"), TransientError, c.DIRECTORY_UNREACHABLE, True,
     f"{URI} answered the bind with busy"),
    (When.BIND, result(ResultCode.UNAVAILABLE, "unavailable"), TransientError, c.DIRECTORY_UNREACHABLE, True,
     "answered the bind with unavailable"),
    (When.BIND, result(ResultCode.STRONGER_AUTH_REQUIRED, "strongerAuthRequired"), ConfigurationError,
     c.DIRECTORY_CONFIGURATION, False, "requires a stronger authentication for svc-snlm@corp.example"),
    (When.BIND, result(ResultCode.UNWILLING_TO_PERFORM, "unwillingToPerform", "odd"), UnknownError,
     c.DIRECTORY_BIND_FAILED, False, "refused the bind of svc-snlm@corp.example: unwillingToPerform (53) odd"),
    # reads and writes
    (When.WRITE, result(ResultCode.INSUFFICIENT_ACCESS_RIGHTS, "insufficientAccessRights", PRIVILEGE_MESSAGE),
     ConfigurationError, c.DIRECTORY_INSUFFICIENT_RIGHTS, False,
     "svc-snlm@corp.example may not add delegation entries on HV01$: the directory requires "
     "SeEnableDelegationPrivilege"),
    (When.WRITE, result(ResultCode.INSUFFICIENT_ACCESS_RIGHTS, "insufficientAccessRights", "no write access"),
     ConfigurationError, c.DIRECTORY_INSUFFICIENT_RIGHTS, False, "insufficient access rights (no write access)"),
    (When.READ, result(ResultCode.INSUFFICIENT_ACCESS_RIGHTS, "insufficientAccessRights", PRIVILEGE_MESSAGE),
     ConfigurationError, c.DIRECTORY_INSUFFICIENT_RIGHTS, False, "insufficient access rights (00002098"),
    (When.READ, result(ResultCode.BUSY, "busy", "try later"), TransientError, c.DIRECTORY_UNREACHABLE, False,
     f"The directory {URI} could not add delegation entries on HV01$ now: busy (try later)"),
    (When.WRITE, result(ResultCode.UNAVAILABLE, "unavailable"), TransientError, c.DIRECTORY_UNREACHABLE, False,
     "now: unavailable"),
    (When.WRITE, result(ResultCode.UNWILLING_TO_PERFORM, "unwillingToPerform"), TransientError,
     c.DIRECTORY_UNREACHABLE, False, "now: unwillingToPerform"),
    (When.READ, result(ResultCode.OTHER, "other"), TransientError, c.DIRECTORY_UNREACHABLE, False, "now: other"),
    (When.WRITE, result(ResultCode.NO_SUCH_OBJECT, "noSuchObject"), UnknownHostError, c.DIRECTORY_NO_SUCH_COMPUTER,
     False, "The computer account HV01$ no longer exists (while trying to add delegation entries on HV01$)"),
    (When.READ, result(ResultCode.NO_SUCH_OBJECT, "noSuchObject"), UnknownHostError, c.DIRECTORY_NO_SUCH_COMPUTER,
     False, "no longer exists"),
    (When.READ, ldap_exc.LDAPSocketReceiveError("error receiving data: [Errno 104] Connection reset by peer"),
     TransientError, c.DIRECTORY_UNREACHABLE, False,
     f"The directory {URI} stopped answering while trying to add delegation entries on HV01$: error receiving"),
    (When.WRITE, ldap_exc.LDAPSessionTerminatedByServerError("session terminated by server"), TransientError,
     c.DIRECTORY_UNREACHABLE, False, "stopped answering"),
    (When.WRITE, result(19, "constraintViolation", "0000202F: value out of range"), UnknownError,
     c.DIRECTORY_OPERATION_FAILED, False,
     f"The directory {URI} refused to add delegation entries on HV01$: constraintViolation (19) 0000202F"),
    (When.READ, result(1, "operationsError"), UnknownError, c.DIRECTORY_OPERATION_FAILED, False,
     "operationsError (1)"),
]  # fmt: skip


def _match(when: When, said: Any) -> Rule:
    return match_exception(said, when) if isinstance(said, BaseException) else match_result(said, when)


def _classify(when: When, said: Any) -> SnlmError:
    if isinstance(said, BaseException):
        return classify_exception(said, when, CONTEXT, {"uri": URI})
    return classify_result(said, when, CONTEXT, {"account": "HV01$", "uri": URI})


@pytest.mark.parametrize(("when", "said", "cls", "error_type", "failover", "words"), SAMPLES)
def test_each_answer_maps_as_its_row_says(
    when: When, said: Any, cls: type[SnlmError], error_type: str, failover: bool, words: str
) -> None:
    rule = _match(when, said)
    error = _classify(when, said)

    assert type(error) is cls
    assert error.error_type == error_type
    assert rule.failover is failover
    assert words in str(error)
    assert "{" not in str(error) + error.remedy  # every placeholder filled
    assert not error.remedy or error.remedy.endswith(".")
    app = error.to_application_error()
    assert app.type == error_type
    assert app.non_retryable is not error.retryable
    if isinstance(said, BaseException):
        assert error.details["exception"] == f"{type(said).__module__}.{type(said).__qualname__}"
    else:
        assert error.details["result"] == said["result"]
        assert type(error.details["result"]) is int  # plain data for the history


def test_every_row_is_reached_and_tested() -> None:
    # No row is shadowed by an earlier one, and a new row without a sample above fails here.
    reached = {id(_match(when, said)) for when, said, *_ in SAMPLES}
    assert reached == {id(rule) for rule in (*RULES, UNKNOWN_BIND, UNKNOWN_OPERATION)}


def test_the_table_is_data() -> None:
    names = {value for key, value in vars(c).items() if key.startswith("DIRECTORY_") and isinstance(value, str)}
    rows = (*RULES, UNKNOWN_BIND, UNKNOWN_OPERATION)
    assert {rule.error_type for rule in rows} <= names
    assert {rule.match for rule in rows} == set(Match)
    # Results and exceptions from every situation have a row.
    for when in When:
        assert any(rule.when & when for rule in RULES), when
    # A DC is skipped only while connecting or binding; an operation's failure is the answer.
    assert all(not rule.failover for rule in RULES if rule.when & When.OPERATION)


def test_remedies_name_the_password_reference_never_a_password() -> None:
    error = classify_result(result(ResultCode.INVALID_CREDENTIALS, "invalidCredentials"), When.BIND, CONTEXT)
    assert "check the account name and the password in file /run/secrets/bind" in error.remedy
    tls = classify_exception(ssl.SSLError(1, "certificate verify failed"), When.CONNECT, CONTEXT)
    assert "signed by a CA in /etc/snlm/ca.pem" in tls.remedy


def test_missing_template_values_read_plainly() -> None:
    error = classify_result(result(ResultCode.INSUFFICIENT_ACCESS_RIGHTS, "insufficientAccessRights"), When.READ, {})
    assert error.reason == "the bind account may not do this: insufficient access rights ()."
    assert error.remedy == "give the bind account read access to the computer objects."


def test_no_usable_controller_a_tls_failure_decides() -> None:
    down = classify_exception(ldap_exc.LDAPSocketOpenError("[Errno 111] refused"), When.CONNECT, {"uri": "ldaps://a"})
    bad_cert = classify_exception(
        ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        When.CONNECT,
        {"uri": "ldaps://b"},
    )

    error = none_usable([down, bad_cert], ["ldaps://a", "ldaps://b"])

    assert isinstance(error, ConfigurationError)
    assert error.error_type == c.DIRECTORY_TLS_FAILURE
    assert error.remedy == bad_cert.remedy
    assert str(error).startswith("No directory server could be used. ldaps://a did not answer: [Errno 111] refused.")
    assert "TLS with ldaps://b failed: [SSL: CERTIFICATE_VERIFY_FAILED]" in str(error)
    assert error.details == {"uris": ["ldaps://a", "ldaps://b"]}


def test_no_usable_controller_all_down_is_retried() -> None:
    failures = [
        classify_exception(ldap_exc.LDAPSocketOpenError("timed out"), When.CONNECT, {"uri": uri})
        for uri in ("ldaps://a", "ldap://b")
    ]
    error = none_usable(failures, ["ldaps://a", "ldap://b"])
    assert isinstance(error, TransientError)
    assert error.error_type == c.DIRECTORY_UNREACHABLE
    assert not error.to_application_error().non_retryable
    with pytest.raises(ValueError, match="no directory server"):
        none_usable([], [])
