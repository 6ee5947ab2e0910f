"""The engine's error classes: what a failed activity means for the workflow that called it.

Every adapter (the directory over LDAP, the hosts over WinRM/PSRP) maps what its protocol reports to one of
these, in one table of its own, and raises it; the activity boundary turns it into a Temporal
`ApplicationError` whose `type` is the stable `error_type` and whose retryability follows the kind:

- configuration: the request or the estate is wrong; retrying cannot help, the message carries the remedy.
- transient: the network or the far side is busy or down; Temporal retries with backoff.
- admission: a host's migration limit is reached; the workflow requeues the move (not a failure), so the
  activity itself is not retried.
- unknown: not recognised; retried a bounded number of times by the activity's retry policy, then surfaced.

Messages and details never hold a secret (DESIGN.md invariant 1): name the account, never its password.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

from temporalio.exceptions import ApplicationError

__all__ = [
    "AdmissionError",
    "ConfigurationError",
    "ErrorKind",
    "SnlmError",
    "TransientError",
    "UnknownError",
    "UnknownHostError",
]


class ErrorKind(enum.StrEnum):
    CONFIGURATION = "configuration"
    TRANSIENT = "transient"
    ADMISSION = "admission"
    UNKNOWN = "unknown"


class SnlmError(Exception):
    """Base of the engine's errors.

    Args:
        message: what went wrong, naming the object (host, account) involved; never a secret.
        error_type: a stable name, the `ApplicationError.type` a workflow matches on
            (e.g. "DirectoryInsufficientRights").
        remedy: what an operator should do; appended to the message.
        details: plain, JSON-serialisable facts for the workflow (never a secret).
    """

    kind: ClassVar[ErrorKind] = ErrorKind.UNKNOWN
    retryable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        remedy: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.reason = message
        self.error_type = error_type
        self.remedy = remedy
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{message} Remedy: {remedy}" if remedy else message)

    @property
    def message(self) -> str:
        return str(self)

    def to_application_error(self) -> ApplicationError:
        """The Temporal form of this error: `type` is `error_type`, retryable as the kind says."""
        detail = {"kind": str(self.kind), "error_type": self.error_type, "remedy": self.remedy, **self.details}
        return ApplicationError(self.message, detail, type=self.error_type, non_retryable=not self.retryable)


class ConfigurationError(SnlmError):
    """The request, the settings or the estate are wrong: not retried; the remedy says what to change."""

    kind = ErrorKind.CONFIGURATION
    retryable = False


class UnknownHostError(ConfigurationError):
    """A host (or its directory account) that the inventory or the directory does not know."""


class TransientError(SnlmError):
    """The far side is unreachable, busy or not yet consistent: retried with backoff."""

    kind = ErrorKind.TRANSIENT
    retryable = True


class AdmissionError(SnlmError):
    """A host's concurrent-migration limit is reached: the workflow requeues, the activity is not retried."""

    kind = ErrorKind.ADMISSION
    retryable = False


class UnknownError(SnlmError):
    """Not recognised: retried a bounded number of times by the retry policy, then surfaced with its record."""

    kind = ErrorKind.UNKNOWN
    retryable = True
