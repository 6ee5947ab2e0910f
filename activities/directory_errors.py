"""What a directory can answer when something fails, and what it means for the engine: one data-driven table.

`RULES` maps an LDAP result code (RFC 4511), or an exception raised while connecting or operating (ssl,
ldap3), to one of the engine's error classes (activities/errors.py), a stable `error_type`
(workflows/contracts.py, the DIRECTORY_* names), what it means and the remedy. A row applies in some
situations only (`When`: securing the connection, the bind's answer, a read, a write), because the same code
means different things there: 50 on a read wants read access, on a write the delegation privilege. The first
matching row wins, so the specific ones come first; anything unrecognised falls back to `UnknownError`
(`DirectoryBindFailed` or `DirectoryOperationFailed`) with the result code in its details.

A row marked `failover` describes a domain controller that cannot be used (unreachable, busy, TLS refused):
the client tries the next one and raises only when none could be used. The codes that are not failures but
steer the client (an attribute value already there, an object gone before a revert) are `ResultCode`s it
compares itself.

The client that binds, reads and writes is in activities/directory.py; the hosts' table is
activities/host_errors.py. Messages name the DC, the bind account and the computer account, never a password:
ldap3's exception texts and a DC's diagnostic messages name hosts and reasons, not credentials.
"""

from __future__ import annotations

import enum
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ldap3.core import exceptions as ldap_exc

from activities.errors import ConfigurationError, SnlmError, TransientError, UnknownError, UnknownHostError
from workflows.contracts import (
    DIRECTORY_BIND_FAILED,
    DIRECTORY_CONFIGURATION,
    DIRECTORY_INSUFFICIENT_RIGHTS,
    DIRECTORY_INVALID_CREDENTIALS,
    DIRECTORY_NO_SUCH_COMPUTER,
    DIRECTORY_OPERATION_FAILED,
    DIRECTORY_TLS_FAILURE,
    DIRECTORY_UNREACHABLE,
)

__all__ = [
    "RULES",
    "UNKNOWN_BIND",
    "UNKNOWN_OPERATION",
    "Match",
    "ResultCode",
    "Rule",
    "When",
    "brief",
    "classify_exception",
    "classify_result",
    "match_exception",
    "match_result",
    "none_usable",
]


class ResultCode(enum.IntEnum):
    """The LDAP result codes (RFC 4511, section 4.1.9) the directory client tells apart."""

    SUCCESS = 0
    SIZE_LIMIT_EXCEEDED = 4
    STRONGER_AUTH_REQUIRED = 8
    NO_SUCH_ATTRIBUTE = 16
    ATTRIBUTE_OR_VALUE_EXISTS = 20
    NO_SUCH_OBJECT = 32
    INVALID_CREDENTIALS = 49
    INSUFFICIENT_ACCESS_RIGHTS = 50
    BUSY = 51
    UNAVAILABLE = 52
    UNWILLING_TO_PERFORM = 53
    OTHER = 80


class When(enum.Flag):
    """Where in the client's work a failure happened."""

    CONNECT = enum.auto()  # opening the connection and securing it (TLS, StartTLS)
    BIND = enum.auto()  # the simple bind's answer
    READ = enum.auto()  # a search
    WRITE = enum.auto()  # a modify of msDS-AllowedToDelegateTo / userAccountControl
    OPERATION = READ | WRITE


class Match(enum.Enum):
    """What a row looks at."""

    RESULT = "result"  # the result code of an answer (no keys: any code)
    EXCEPTION = "exception"  # an exception of one of these classes (ssl, ldap3)


@dataclass(frozen=True)
class Rule:
    """One row of the table.

    `meaning` is the error's message and `remedy` what to do; both may name `{uri}` (the DC), `{who}` (the bind
    account), `{what}` (the operation, e.g. "add delegation entries on HV01$"), `{account}`, `{password_ref}`
    (where the bind password is read from: a reference, never the value), `{ca}`, and what the directory said:
    `{code}`, `{description}`, `{server_message}` for a result, and `{said}`: the whole answer in one line
    (description, code and server message of a result; the text of an exception).

    Attributes:
        text: when set, a regular expression that the server's message (a result) or the exception's text must
            contain, case-insensitively.
        failover: this DC cannot be used; while connecting, try the next one.
    """

    match: Match
    keys: tuple[Any, ...]
    when: When
    error: type[SnlmError]
    error_type: str
    meaning: str
    remedy: str = ""
    text: str = ""
    failover: bool = False

    def matches_result(self, result: Mapping[str, Any], when: When) -> bool:
        if self.match is not Match.RESULT or not when & self.when:
            return False
        if self.keys and result.get("result") not in self.keys:
            return False
        return not self.text or re.search(self.text, str(result.get("message") or ""), re.IGNORECASE) is not None

    def matches_exception(self, exc: BaseException, when: When) -> bool:
        if self.match is not Match.EXCEPTION or not when & self.when or not isinstance(exc, self.keys):
            return False
        return not self.text or re.search(self.text, str(exc), re.IGNORECASE) is not None

    def for_result(
        self, result: Mapping[str, Any], context: Mapping[str, Any], details: Mapping[str, Any] | None = None
    ) -> SnlmError:
        """This row's error for an LDAP answer (ldap3's `conn.result`); the result code is added to `details`."""
        code = result.get("result")
        code = int(code) if isinstance(code, int) else code  # a ResultCode travels as a plain number
        description = str(result.get("description") or "")
        server_message = str(result.get("message") or "").strip()
        said = {
            "code": code,
            "description": description,
            "server_message": server_message,
            "said": f"{description} ({code}) {server_message}".strip(),
        }
        return self._build({**context, **said}, {**(details or {}), "result": code})

    def for_exception(
        self, exc: BaseException, context: Mapping[str, Any], details: Mapping[str, Any] | None = None
    ) -> SnlmError:
        """This row's error for an exception; its class is added to `details`."""
        exception = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return self._build({**context, "said": brief(exc)}, {**(details or {}), "exception": exception})

    def _build(self, context: Mapping[str, Any], details: Mapping[str, Any]) -> SnlmError:
        values = _Blank({key: str(value) for key, value in context.items() if value is not None})
        message = " ".join(self.meaning.format_map(values).split())
        return self.error(message, error_type=self.error_type, remedy=self.remedy.format_map(values), details=details)


_RETRIED = "the step is retried"
_TLS_REMEDY = (
    "make sure the DCs' certificates are signed by a CA in {ca}, carry the name used in the URI (or one listed "
    "in tls_server_names), and are valid now."
)
_UNREACHABLE_REMEDY = "check that a domain controller is running and reachable from the worker on the LDAP port."
_PRIVILEGE = r"SeEnableDelegationPrivilege|SePrivEnableDelegation"

# The one table. Order matters: the first matching row wins.
RULES: Final[tuple[Rule, ...]] = (
    # --- connecting: the DC cannot be used, try the next one ---
    Rule(
        Match.EXCEPTION,
        (ssl.SSLError, ldap_exc.LDAPStartTLSError),
        When.CONNECT,
        ConfigurationError,
        DIRECTORY_TLS_FAILURE,
        "TLS with {uri} failed: {said}.",
        _TLS_REMEDY,
        failover=True,
    ),
    # ldap3 re-creates socket errors as LDAPSocketOpenError, sometimes mixed with the ssl error's class and
    # sometimes only with its text ("socket ssl wrapping error: certificate ... doesn't match ...").
    Rule(
        Match.EXCEPTION,
        (ldap_exc.LDAPException,),
        When.CONNECT,
        ConfigurationError,
        DIRECTORY_TLS_FAILURE,
        "TLS with {uri} failed: {said}.",
        _TLS_REMEDY,
        text=r"ssl wrapping error|certificate",
        failover=True,
    ),
    Rule(
        Match.EXCEPTION,
        (ldap_exc.LDAPException,),
        When.CONNECT,
        TransientError,
        DIRECTORY_UNREACHABLE,
        "{uri} did not answer: {said}.",
        _UNREACHABLE_REMEDY,
        failover=True,
    ),
    # Plain LDAP is never used: a DC on ldap:// that refuses StartTLS is as unusable as a bad certificate.
    Rule(
        Match.RESULT,
        (),
        When.CONNECT,
        ConfigurationError,
        DIRECTORY_TLS_FAILURE,
        "{uri} refused StartTLS: {description}.",
        _TLS_REMEDY,
        failover=True,
    ),
    # --- the bind's answer ---
    Rule(
        Match.RESULT,
        (ResultCode.INVALID_CREDENTIALS,),
        When.BIND,
        ConfigurationError,
        DIRECTORY_INVALID_CREDENTIALS,
        "The directory refused the bind account {who} on {uri}: invalid credentials.",
        "check the account name and the password in {password_ref}, and that the account is enabled, not locked "
        "out and its password not expired.",
    ),
    Rule(
        Match.RESULT,
        (ResultCode.BUSY, ResultCode.UNAVAILABLE),
        When.BIND,
        TransientError,
        DIRECTORY_UNREACHABLE,
        "{uri} answered the bind with {description}.",
        _UNREACHABLE_REMEDY,
        failover=True,
    ),
    Rule(
        Match.RESULT,
        (ResultCode.STRONGER_AUTH_REQUIRED,),
        When.BIND,
        ConfigurationError,
        DIRECTORY_CONFIGURATION,
        "The directory {uri} requires a stronger authentication for {who}.",
        "use ldaps:// or ldap:// (always with StartTLS); check the DC's LDAP signing policy.",
    ),
    # --- reads and writes ---
    Rule(
        Match.RESULT,
        (ResultCode.INSUFFICIENT_ACCESS_RIGHTS,),
        When.WRITE,
        ConfigurationError,
        DIRECTORY_INSUFFICIENT_RIGHTS,
        "{who} may not {what}: the directory requires SeEnableDelegationPrivilege to change "
        "msDS-AllowedToDelegateTo or the protocol-transition bit, and the account lacks it. Nothing was changed on "
        "that account.",
        'grant {who} SeEnableDelegationPrivilege ("Enable computer and user accounts to be trusted for delegation", '
        "in the Default Domain Controllers Policy) or bind as an account that has it, plus write access to the "
        "computer objects.",
        text=_PRIVILEGE,
    ),
    Rule(
        Match.RESULT,
        (ResultCode.INSUFFICIENT_ACCESS_RIGHTS,),
        When.WRITE,
        ConfigurationError,
        DIRECTORY_INSUFFICIENT_RIGHTS,
        "{who} may not {what}: insufficient access rights ({server_message}). Nothing was changed on that account.",
        "give {who} write access to msDS-AllowedToDelegateTo and userAccountControl of the computer objects and "
        "SeEnableDelegationPrivilege.",
    ),
    Rule(
        Match.RESULT,
        (ResultCode.INSUFFICIENT_ACCESS_RIGHTS,),
        When.READ,
        ConfigurationError,
        DIRECTORY_INSUFFICIENT_RIGHTS,
        "{who} may not {what}: insufficient access rights ({server_message}).",
        "give {who} read access to the computer objects.",
    ),
    Rule(
        Match.RESULT,
        (ResultCode.BUSY, ResultCode.UNAVAILABLE, ResultCode.UNWILLING_TO_PERFORM, ResultCode.OTHER),
        When.OPERATION,
        TransientError,
        DIRECTORY_UNREACHABLE,
        "The directory {uri} could not {what} now: {description} ({server_message}).",
        _RETRIED + "; if it persists, check the domain controller's health.",
    ),
    Rule(
        Match.RESULT,
        (ResultCode.NO_SUCH_OBJECT,),
        When.OPERATION,
        UnknownHostError,
        DIRECTORY_NO_SUCH_COMPUTER,
        "The computer account {account} no longer exists (while trying to {what}).",
        "check that the host is still joined to the domain.",
    ),
    Rule(
        Match.EXCEPTION,
        (ldap_exc.LDAPException,),
        When.OPERATION,
        TransientError,
        DIRECTORY_UNREACHABLE,
        "The directory {uri} stopped answering while trying to {what}: {said}.",
        "check that the domain controller is running; " + _RETRIED + ".",
    ),
)

# When no row matches: an answer nobody recognised, retried a bounded number of times, then surfaced with its code.
_UNKNOWN_REMEDY = "look for this answer in the domain controller's log; " + _RETRIED + " a bounded number of times."
UNKNOWN_BIND: Final = Rule(
    Match.RESULT,
    (),
    When.CONNECT | When.BIND,
    UnknownError,
    DIRECTORY_BIND_FAILED,
    "The directory {uri} refused the bind of {who}: {said}",
    _UNKNOWN_REMEDY,
)
UNKNOWN_OPERATION: Final = Rule(
    Match.RESULT,
    (),
    When.OPERATION,
    UnknownError,
    DIRECTORY_OPERATION_FAILED,
    "The directory {uri} refused to {what}: {said}",
    _UNKNOWN_REMEDY,
)


class _Blank(dict[str, str]):
    """Template values: one nobody supplied reads as nothing (or a plain word), never raises."""

    def __missing__(self, key: str) -> str:
        return _DEFAULTS.get(key, "")


_DEFAULTS: Final = {
    "uri": "the domain controller",
    "who": "the bind account",
    "what": "do this",
    "account": "the account",
    "password_ref": "the bind password's reference",
    "ca": "the system trust store",
}


def _fallback(when: When) -> Rule:
    return UNKNOWN_OPERATION if when & When.OPERATION else UNKNOWN_BIND


def match_result(result: Mapping[str, Any], when: When) -> Rule:
    """The first row for an LDAP answer (ldap3's `conn.result`), or the unknown fallback."""
    return next((rule for rule in RULES if rule.matches_result(result, when)), _fallback(when))


def match_exception(exc: BaseException, when: When) -> Rule:
    """The first row for an exception raised while connecting or operating, or the unknown fallback."""
    return next((rule for rule in RULES if rule.matches_exception(exc, when)), _fallback(when))


def brief(exc: BaseException) -> str:
    """An ldap3 or ssl exception as one line (their messages name hosts and reasons, never credentials)."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def classify_result(
    result: Mapping[str, Any], when: When, context: Mapping[str, Any], details: Mapping[str, Any] | None = None
) -> SnlmError:
    """The engine's error for an LDAP answer that is a failure.

    Args:
        result: ldap3's `conn.result` (`result`, `description`, `message`).
        when: where it happened.
        context: template values (`uri`, `who`, `what`, `account`, `password_ref`, `ca`).
        details: facts for the workflow (never a secret); the result code is added.
    """
    return match_result(result, when).for_result(result, context, details)


def classify_exception(
    exc: BaseException, when: When, context: Mapping[str, Any], details: Mapping[str, Any] | None = None
) -> SnlmError:
    """The engine's error for an exception raised while connecting (`When.CONNECT`) or operating."""
    return match_exception(exc, when).for_exception(exc, context, details)


def none_usable(failures: Sequence[SnlmError], uris: Sequence[str]) -> SnlmError:
    """The error when no DC could be used, from what each one said (rows marked `failover`).

    A configuration failure on any DC (its certificate does not validate, it refuses StartTLS) is the one an
    operator must fix, so it decides the class, type and remedy over DCs that were merely down or busy.
    """
    if not failures:
        raise ValueError("no directory server was tried")
    chosen = next((failure for failure in failures if not failure.retryable), failures[0])
    reasons = " ".join(failure.reason for failure in failures)
    return type(chosen)(
        f"No directory server could be used. {reasons}",
        error_type=chosen.error_type,
        remedy=chosen.remedy,
        details={"uris": list(uris)},
    )
