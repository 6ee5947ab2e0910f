"""WS-Management faults as a Windows WinRM service sends them.

Codes and texts are the ones in Windows' wsmerror.h; the SOAP shape (s:Code/s:Subcode, s:Reason,
s:Detail/f:WSManFault with Code, Machine and f:Message) is what pypsrp's `WSMan._parse_wsman_fault` reads:
it takes the integer `Code` attribute, `Machine`, and the Message text, and raises `WSManFaultError`.
The HTTP status of a fault is 500, which pypsrp turns into a WinRMTransportError whose body it parses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FaultCode(enum.IntEnum):
    """WSMan error codes (wsmerror.h) the lab can answer with."""

    RESOURCE_NOT_FOUND = 0x80338000  # 2150858752
    INVALID_ACTIONURI = 0x80338001
    PROVIDER_FAILURE = 0x80338003
    INVALID_MESSAGE_INFORMATION_HEADER = 0x8033800F
    ACTION_NOT_SUPPORTED = 0x80338013  # 2150858771
    INVALID_SOAP_BODY = 0x80338027
    OPERATION_TIMEDOUT = 0x80338029  # 2150858793: pypsrp's poll_invoke swallows it and polls again
    INVALID_SELECTORS = 0x8033803D
    UNEXPECTED_SELECTORS = 0x8033805B  # 2150858843: what Windows sends for a shell that does not exist
    ACCESS_DENIED = 5  # ERROR_ACCESS_DENIED: a shell used by someone other than its creator


@dataclass(frozen=True)
class _FaultShape:
    code: str  # SOAP 1.2 s:Code/s:Value
    subcode: str  # s:Subcode/s:Value, qualified with the prefix of its namespace
    reason: str


# The SOAP code / subcode pairs follow the annotations in wsmerror.h ("wsman, code=Receiver,
# subcode=WS-Management Timedout", ...).
_SHAPES: dict[FaultCode, _FaultShape] = {
    FaultCode.RESOURCE_NOT_FOUND: _FaultShape(
        "s:Sender",
        "w:DestinationUnreachable",
        "The WS-Management service cannot process the request. The service cannot find the resource "
        "identified by the resource URI and selectors.",
    ),
    FaultCode.INVALID_ACTIONURI: _FaultShape(
        "s:Sender",
        "a:ActionNotSupported",
        "The WS-Management service cannot process the request. The WS-Addressing action URI is invalid.",
    ),
    FaultCode.PROVIDER_FAILURE: _FaultShape(
        "s:Receiver", "w:InternalError", "An error was encountered inside the plugin."
    ),
    FaultCode.INVALID_MESSAGE_INFORMATION_HEADER: _FaultShape(
        "s:Sender",
        "a:InvalidMessageInformationHeader",
        "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers.",
    ),
    FaultCode.ACTION_NOT_SUPPORTED: _FaultShape(
        "s:Sender",
        "a:ActionNotSupported",
        "The WS-Management service does not support the action specified in the request.",
    ),
    FaultCode.INVALID_SOAP_BODY: _FaultShape(
        "s:Sender",
        "w:InvalidBody",
        "The WS-Management service cannot process the request because the request packet does not have a "
        "valid SOAP body.",
    ),
    FaultCode.OPERATION_TIMEDOUT: _FaultShape(
        "s:Receiver",
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
    ),
    FaultCode.INVALID_SELECTORS: _FaultShape(
        "s:Sender",
        "w:InvalidSelectors",
        "The WS-Management service cannot process the request because the selectors for the resource are not valid.",
    ),
    FaultCode.UNEXPECTED_SELECTORS: _FaultShape(
        "s:Sender",
        "w:InvalidSelectors",
        "The WS-Management service cannot process the request because the request contained invalid "
        "selectors for the resource.",
    ),
    FaultCode.ACCESS_DENIED: _FaultShape("s:Sender", "w:AccessDenied", "Access is denied."),
}


def shell_not_found_message(shell_id: str) -> str:
    """The text Windows puts in the WSManFault for a ShellId it does not know (code 2150858843)."""
    return (
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not "
        "found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer "
        "exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
    )


class WSManFault(Exception):
    """Raised by the SOAP layer; the server answers it as a SOAP fault with HTTP 500."""

    def __init__(self, code: FaultCode, message: str | None = None) -> None:
        self.code = code
        self.shape = _SHAPES[code]
        self.message = message or self.shape.reason
        super().__init__(f"WSMan fault {int(code)}: {self.message}")

    @classmethod
    def shell_not_found(cls, shell_id: str) -> WSManFault:
        """The fault for a missing shell, e.g. after a WinRM service restart (`drop_all_shells`)."""
        return cls(FaultCode.UNEXPECTED_SELECTORS, shell_not_found_message(shell_id))

    @classmethod
    def timed_out(cls) -> WSManFault:
        """The fault for an empty long-poll Receive."""
        return cls(FaultCode.OPERATION_TIMEDOUT)
