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
    QUOTA_MAX_SHELLS = 0x803381A5  # 2150859173: the user's MaxShellsPerUser is reached (catalogue 6.3)


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
    # A captured Windows fault (catalogue 6.3): s:Sender, w:QuotaLimit, this generic reason, and the limit in
    # the f:Message.
    FaultCode.QUOTA_MAX_SHELLS: _FaultShape(
        "s:Sender",
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. The maximum number of concurrent shells for this "
        "user has been exceeded. Close existing shells or raise the quota for this user.",
    ),
}

COMMANDS_PER_SHELL_MESSAGE = (
    "The WS-Management service cannot process the request. The maximum number of concurrent commands per shell "
    "has been exceeded. Retry the request later or raise the Maximum Commands per Shell quota."
)


def shell_not_found_message(shell_id: str) -> str:
    """The text Windows puts in the WSManFault for a ShellId it does not know (code 2150858843)."""
    return (
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not "
        "found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer "
        "exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
    )


class WSManFault(Exception):
    """Raised by the SOAP layer; the server answers it as a SOAP fault with HTTP 500.

    `detail=False` renders a fault without the f:WSManFault element, `message` then being the s:Reason text:
    pypsrp reports such a fault with the subcode (`w:InternalError`) as its code and no machine.
    """

    def __init__(self, code: FaultCode, message: str | None = None, *, detail: bool = True) -> None:
        self.code = code
        self.shape = _SHAPES[code]
        self.message = message or self.shape.reason
        self.detail = detail
        super().__init__(f"WSMan fault {int(code) if detail else self.shape.subcode}: {self.message}")

    @classmethod
    def shell_not_found(cls, shell_id: str) -> WSManFault:
        """The fault for a missing shell, e.g. after a WinRM service restart (`drop_all_shells`)."""
        return cls(FaultCode.UNEXPECTED_SELECTORS, shell_not_found_message(shell_id))

    @classmethod
    def shell_quota(cls, limit: int) -> WSManFault:
        """The fault for one shell more than the user's MaxShellsPerUser (code 2150859173)."""
        return cls(
            FaultCode.QUOTA_MAX_SHELLS,
            f"The WS-Management service cannot process the request. This user is allowed a maximum number of "
            f"{limit} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this "
            "user.",
        )

    @classmethod
    def commands_per_shell(cls) -> WSManFault:
        """The fault for a Command on a shell that has run MaxConcurrentCommandsPerShell pipelines.

        The one public capture (pypsrp#148, Windows Server 2012 R2) shows pypsrp reporting the code
        `w:InternalError` and no machine: a fault without f:WSManFault, so no numeric code is sent.
        """
        return cls(FaultCode.PROVIDER_FAILURE, COMMANDS_PER_SHELL_MESSAGE, detail=False)

    @classmethod
    def timed_out(cls) -> WSManFault:
        """The fault for an empty long-poll Receive."""
        return cls(FaultCode.OPERATION_TIMEDOUT)
