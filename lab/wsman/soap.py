"""WS-Management SOAP envelopes: parse requests, write responses and faults.

Parsing uses the standard library's ElementTree after refusing any document that declares a DOCTYPE, so
no entity can be defined, let alone expanded. Responses are written as text from fixed templates: every
value is escaped, and the namespace prefixes match what Windows sends, without touching ElementTree's
process-wide prefix registry (pypsrp, in the same process during tests, registers its own).
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from lab.wsman.faults import FaultCode, WSManFault

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_WSMV = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_CONFIG = "http://schemas.microsoft.com/wbem/wsman/1/config"
NS_POWERSHELL = "http://schemas.microsoft.com/powershell"

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
POWERSHELL_RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CONFIG_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"


class Action:
    """wsa:Action URIs the lab serves (MS-WSMV 3.1.4)."""

    CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
    DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
    GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
    COMMAND = f"{NS_SHELL}/Command"
    SEND = f"{NS_SHELL}/Send"
    RECEIVE = f"{NS_SHELL}/Receive"
    SIGNAL = f"{NS_SHELL}/Signal"
    FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"


class SignalCode:
    """Signal codes; MS-PSRP spells the PowerShell one `crtl_c`, pypsrp sends `ctrl_c`: accept both."""

    PS_CTRL_C = ("powershell/signal/ctrl_c", "powershell/signal/crtl_c")
    TERMINATE = f"{NS_SHELL}/signal/Terminate"
    CTRL_C = f"{NS_SHELL}/signal/ctrl_c"


class CommandState:
    """rsp:CommandState/@State values."""

    DONE = f"{NS_SHELL}/CommandState/Done"
    RUNNING = f"{NS_SHELL}/CommandState/Running"


# pypsrp's default until the server reports protocol 2.2 (wire notes: "MaxEnvelopeSize").
DEFAULT_MAX_ENVELOPE_SIZE = 153600
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str | None, default: float) -> float:
    """Seconds in an xs:duration such as `PT20S` or `PT60.000S`; `default` when absent or unreadable."""
    if not text:
        return default
    match = _DURATION.match(text.strip())
    if not match or not any(match.groupdict().values()):
        return default
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


@dataclass
class WSManRequest:
    """The parts of a WS-Management request the lab acts on."""

    action: str
    message_id: str
    resource_uri: str
    max_envelope_size: int
    operation_timeout: float
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None
    locale: str = "en-US"

    @property
    def shell_id(self) -> str | None:
        """The ShellId selector, normalised to upper case (pypsrp sends the pool id upper-cased)."""
        value = self.selectors.get("ShellId")
        return value.upper() if value else None


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def parse_request(data: bytes) -> WSManRequest:
    """Parse a SOAP envelope; raise `WSManFault` for anything that is not a well-formed WS-Man request."""
    if _DOCTYPE.search(data):
        # No DTDs at all: this closes entity expansion and external entities before the parser runs.
        raise WSManFault(FaultCode.INVALID_SOAP_BODY, "Document type declarations are not accepted.")
    try:
        # Safe: a document with a DTD was refused above, so only the five predefined entities exist.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        raise WSManFault(FaultCode.INVALID_SOAP_BODY, f"The request is not well-formed XML: {exc}") from None
    if root.tag != _q(NS_SOAP, "Envelope"):
        raise WSManFault(FaultCode.INVALID_SOAP_BODY, "The request is not a SOAP 1.2 envelope.")
    header = root.find(_q(NS_SOAP, "Header"))
    body = root.find(_q(NS_SOAP, "Body"))
    if header is None or body is None:
        raise WSManFault(FaultCode.INVALID_MESSAGE_INFORMATION_HEADER)

    def text(ns: str, tag: str) -> str | None:
        element = header.find(_q(ns, tag))
        return element.text.strip() if element is not None and element.text else None

    action = text(NS_ADDRESSING, "Action")
    message_id = text(NS_ADDRESSING, "MessageID")
    if not action or not message_id:
        raise WSManFault(FaultCode.INVALID_MESSAGE_INFORMATION_HEADER)
    try:
        max_envelope = int(text(NS_WSMAN, "MaxEnvelopeSize") or DEFAULT_MAX_ENVELOPE_SIZE)
    except ValueError:
        max_envelope = DEFAULT_MAX_ENVELOPE_SIZE
    selectors: dict[str, str] = {}
    selector_set = header.find(_q(NS_WSMAN, "SelectorSet"))
    if selector_set is not None:
        for selector in selector_set.findall(_q(NS_WSMAN, "Selector")):
            selectors[selector.get("Name", "")] = (selector.text or "").strip()
    options: dict[str, str] = {}
    option_set = header.find(_q(NS_WSMAN, "OptionSet"))
    if option_set is not None:
        for option in option_set.findall(_q(NS_WSMAN, "Option")):
            options[option.get("Name", "")] = (option.text or "").strip()
    locale_element = header.find(_q(NS_WSMAN, "Locale"))
    locale = (
        locale_element.get("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
        if locale_element is not None
        else "en-US"
    )
    children = list(body)
    return WSManRequest(
        action=action,
        message_id=message_id,
        resource_uri=text(NS_WSMAN, "ResourceURI") or "",
        max_envelope_size=max(max_envelope, 8192),
        operation_timeout=parse_duration(text(NS_WSMAN, "OperationTimeout"), 60.0),
        selectors=selectors,
        options=options,
        body=children[0] if children else None,
        locale=locale,
    )


_ENVELOPE_OPEN = (
    f'<s:Envelope xml:lang="en-US" xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDRESSING}" '
    f'xmlns:x="{NS_TRANSFER}" xmlns:w="{NS_WSMAN}" xmlns:rsp="{NS_SHELL}" xmlns:p="{NS_WSMV}">'
)


def envelope(action: str, relates_to: str | None, body: str) -> bytes:
    """A response envelope; `body` is already-escaped XML. wsa:RelatesTo must equal the request MessageID
    or pypsrp raises ("Received related id does not match")."""
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    text = (
        f'<?xml version="1.0" encoding="utf-8"?>{_ENVELOPE_OPEN}<s:Header>'
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>{relates}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
    return text.encode("utf-8")


def fault_envelope(fault: WSManFault, relates_to: str | None, machine: str, locale: str = "en-US") -> bytes:
    """The SOAP fault Windows sends: s:Code/s:Subcode, s:Reason and a f:WSManFault with Code and Machine (or,
    for a fault without detail, the message as s:Reason and nothing else)."""
    shape = fault.shape
    if not fault.detail:
        body = (
            f"<s:Fault><s:Code><s:Value>{shape.code}</s:Value><s:Subcode><s:Value>{shape.subcode}</s:Value>"
            f"</s:Subcode></s:Code><s:Reason><s:Text xml:lang={quoteattr(locale)}>{escape(fault.message)}"
            "</s:Text></s:Reason></s:Fault>"
        )
        return envelope(Action.FAULT, relates_to, body)
    body = (
        f"<s:Fault><s:Code><s:Value>{shape.code}</s:Value><s:Subcode><s:Value>{shape.subcode}</s:Value>"
        f"</s:Subcode></s:Code><s:Reason><s:Text xml:lang={quoteattr(locale)}>{escape(shape.reason)}"
        f"</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f={quoteattr(NS_FAULT)} "
        f"Code={quoteattr(str(int(fault.code)))} Machine={quoteattr(machine)}>"
        f"<f:Message>{escape(fault.message)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    return envelope(Action.FAULT, relates_to, body)


def create_response_body(shell_id: str, endpoint: str, shell_element: str) -> str:
    """Create response: pypsrp reads the ShellId selector from ResourceCreated/ReferenceParameters."""
    return (
        f"<x:ResourceCreated><a:Address>{escape(endpoint)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{POWERSHELL_RESOURCE_URI}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{escape(shell_id)}</w:Selector></w:SelectorSet>'
        f"</a:ReferenceParameters></x:ResourceCreated>{shell_element}"
    )


def shell_xml(shell_id: str, owner: str, client_ip: str, idle_seconds: int, state: str = "Connected") -> str:
    """The rsp:Shell element of Create and Get responses."""
    return (
        f"<rsp:Shell><rsp:ShellId>{escape(shell_id)}</rsp:ShellId><rsp:Name>Runspace1</rsp:Name>"
        f"<rsp:ResourceUri>{POWERSHELL_RESOURCE_URI}</rsp:ResourceUri><rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP><rsp:IdleTimeOut>PT{idle_seconds}.000S</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
        "<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale>"
        "<rsp:DataLocale>en-US</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode>"
        "<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>"
        f"<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>{escape(state)}</rsp:State>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        "</rsp:Shell>"
    )


def command_response_body(command_id: str) -> str:
    """Command response: pypsrp reads rsp:CommandResponse/rsp:CommandId."""
    return f"<rsp:CommandResponse><rsp:CommandId>{escape(command_id)}</rsp:CommandId></rsp:CommandResponse>"


def receive_response_body(payloads: list[bytes], command_id: str | None, done: bool) -> str:
    """Receive response: one `stdout` stream element per PSRP payload (pypsrp concatenates them)."""
    attr = f" CommandId={quoteattr(command_id)}" if command_id else ""
    streams = "".join(
        f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(p).decode("ascii")}</rsp:Stream>' for p in payloads
    )
    state = ""
    if command_id:
        value = CommandState.DONE if done else CommandState.RUNNING
        state = f'<rsp:CommandState{attr} State="{value}"/>'
    return f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>"


def config_body(max_envelope_kb: int) -> str:
    """A minimal winrm/config answer for `WSMan.update_max_payload_size()`."""
    return (
        f'<cfg:Config xmlns:cfg="{NS_CONFIG}"><cfg:MaxEnvelopeSizekb>{max_envelope_kb}</cfg:MaxEnvelopeSizekb>'
        "<cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms></cfg:Config>"
    )


def response_action(action: str) -> str:
    """The wsa:Action of the response to `action`."""
    return action + "Response"


def find_text(element: ET.Element | None, ns: str, tag: str) -> str | None:
    """Text of the first `ns:tag` child of `element`, or None."""
    if element is None:
        return None
    child = element.find(_q(ns, tag))
    return child.text if child is not None else None


def qname(ns: str, tag: str) -> str:
    """ElementTree's `{namespace}tag` form."""
    return _q(ns, tag)
