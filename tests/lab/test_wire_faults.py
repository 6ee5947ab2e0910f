"""Fault hooks, WSMan faults, long polling, resent MessageIDs and the sealing framing."""

from __future__ import annotations

import base64
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest
import requests
from psrpcore import ClientPowerShell, ClientRunspacePool, Command, PSRPPayload, StreamType
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from lab.wsman import HostEndpoint, Identity, WSManService
from lab.wsman.encryption import CREDSSP_PROTOCOL, SPNEGO_PROTOCOL, EncryptionError, unwrap, wrap
from lab.wsman.soap import NS_SHELL, NS_SOAP, NS_WSMAN, parse_duration
from tests.lab.conftest import WIRE_USER

pytestmark = pytest.mark.timeout(90)

SHELL_NOT_FOUND = 2150858843


def _xml(data: bytes) -> ET.Element:
    """Parse an answer of the lab's own service (trusted: produced by the code under test)."""
    return ET.fromstring(data)  # noqa: S314


OPERATION_TIMED_OUT = 2150858793


def _run(pool: RunspacePool, name: str = "Get-Identity") -> list:
    ps = PowerShell(pool)
    ps.add_cmdlet(name)
    return ps.invoke()


def test_drop_all_shells_gives_the_missing_shell_fault(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "basic")
    with wsman:
        pool = RunspacePool(wsman)
        pool.open()
        assert _run(pool)
        assert wire_endpoint.drop_all_shells() == 1
        with pytest.raises(WSManFaultError) as info:
            _run(pool)
        assert info.value.code == SHELL_NOT_FOUND
        assert info.value.machine == "hv01"
        assert "shell was not found on the server" in info.value.reason
        # pypsrp's is_alive() reads that fault as "closed".
        assert not pool.is_alive()
        # A new pool works: the service is back.
        with RunspacePool(wsman) as fresh:
            assert _run(fresh)


def test_is_alive_on_a_live_pool(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "ntlm")
    with wsman, RunspacePool(wsman) as pool:
        assert pool.is_alive()


def test_refuse_connections_then_recover(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "basic")
    with wsman, RunspacePool(wsman) as pool:
        assert _run(pool)
        http_port, https_port = wire_endpoint.http_port, wire_endpoint.https_port
        wire_endpoint.refuse_connections(1.0)
        assert not wire_endpoint.accepting
        with pytest.raises(requests.exceptions.ConnectionError), wire_connect(wire_endpoint, "basic") as other:
            RunspacePool(other).open()
        with pytest.raises(requests.exceptions.ConnectionError):
            _run(pool)
        assert wire_endpoint.wait_until_accepting(10)
        assert (wire_endpoint.http_port, wire_endpoint.https_port) == (http_port, https_port)
        # Basic over HTTPS recovers on a new connection; the shell survived the outage.
        assert _run(pool)[0].startswith(WIRE_USER)
        # A window can also be ended early by the fault injector.
        wire_endpoint.refuse_connections(60)
        assert not wire_endpoint.accepting
        wire_endpoint.accept_connections()
        assert wire_endpoint.accepting
        assert _run(pool)[0].startswith(WIRE_USER)


def test_answer_delay_slows_every_answer(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "basic")
    with wsman, RunspacePool(wsman) as pool:
        started = time.monotonic()
        _run(pool)
        fast = time.monotonic() - started
        wire_endpoint.answer_delay = 0.3
        before = wire_endpoint.stats.snapshot()["requests"]
        started = time.monotonic()
        _run(pool)
        slow = time.monotonic() - started
        requests_made = wire_endpoint.stats.snapshot()["requests"] - before
        wire_endpoint.answer_delay = 0.0
    assert requests_made >= 2
    assert slow >= 0.3 * requests_made
    assert slow > fast


def test_empty_long_poll_is_swallowed_by_the_client(wire_endpoint_factory, wire_connect) -> None:
    endpoint = wire_endpoint_factory(name="hv-poll", long_poll_seconds=0.3)
    wsman = wire_connect(endpoint, "ntlm")
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Wait-Then-Echo").add_parameter("Seconds", 1.5)
        assert ps.invoke() == ["done"]
        assert ps.state == 4
    # Several Receives timed out with fault 2150858793 and pypsrp polled again each time.
    assert endpoint.stats.snapshot()["faults"] >= 2


# --- core level: the WSManService with hand-built envelopes ------------------------------------------------


@dataclass
class _Client:
    """A tiny WS-Man client on psrpcore's client classes, to post exact envelopes twice."""

    service: WSManService
    pool: ClientRunspacePool
    shell_id: str
    identity: Identity = field(default_factory=lambda: Identity(WIRE_USER, "basic"))

    def post(
        self,
        action: str,
        body: str,
        *,
        message_id: str | None = None,
        selectors: bool = True,
        resource: str = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell",
        timeout: str = "PT20S",
    ) -> tuple[int, bytes]:
        return self.service.handle(
            _envelope(
                action,
                body,
                message_id or f"uuid:{uuid.uuid4()}",
                self.shell_id if selectors else None,
                resource,
                timeout,
            ),
            self.identity,
            "127.0.0.1",
            "http://127.0.0.1:5985/wsman",
        )

    def feed(self, response: bytes) -> None:
        root = _xml(response)
        for stream in root.iter(f"{{{NS_SHELL}}}Stream"):
            self.pool.receive_data(PSRPPayload(base64.b64decode(stream.text or ""), StreamType.default, None))
        while self.pool.next_event() is not None:
            pass


def _envelope(action: str, body: str, message_id: str, shell_id: str | None, resource: str, timeout: str) -> bytes:
    selectors = f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>' if shell_id else ""
    return (
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        f'xmlns:w="{NS_WSMAN}" xmlns:rsp="{NS_SHELL}"><s:Header>'
        f"<a:Action>{action}</a:Action><a:MessageID>{message_id}</a:MessageID>"
        f"<w:ResourceURI>{resource}</w:ResourceURI><w:MaxEnvelopeSize>512000</w:MaxEnvelopeSize>"
        f"<w:OperationTimeout>{timeout}</w:OperationTimeout>{selectors}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"


@pytest.fixture
def core_client(wire_runner):
    service = WSManService("hv-core", wire_runner, long_poll_seconds=0.2)
    pool = ClientRunspacePool()
    pool.open()
    creation = pool.data_to_send()
    assert creation is not None
    shell_id = str(pool.runspace_pool_id).upper()
    client = _Client(service, pool, shell_id)
    status, _ = client.post(
        _CREATE,
        f'<rsp:Shell ShellId="{shell_id}"><rsp:InputStreams>stdin pr</rsp:InputStreams>'
        "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
        f'<creationXml xmlns="http://schemas.microsoft.com/powershell">{base64.b64encode(creation.data).decode()}'
        "</creationXml></rsp:Shell>",
        selectors=False,
    )
    assert status == 200
    status, response = client.post(
        f"{_SHELL}/Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>"
    )
    assert status == 200
    client.feed(response)
    yield client
    service.drop_all_shells()


def test_repeated_message_id_gets_the_identical_answer(core_client: _Client) -> None:
    ps = ClientPowerShell(core_client.pool)
    ps.add_command(Command("Emit-Large").add_parameter("Count", 3).add_parameter("Size", 10))
    ps.start()
    payload = core_client.pool.data_to_send()
    assert payload is not None
    command_id = str(ps.pipeline_id).upper()
    status, _ = core_client.post(
        f"{_SHELL}/Command",
        f'<rsp:CommandLine CommandId="{command_id}"><rsp:Command/>'
        f"<rsp:Arguments>{base64.b64encode(payload.data).decode()}</rsp:Arguments></rsp:CommandLine>",
    )
    assert status == 200
    receive = f'<rsp:Receive><rsp:DesiredStream CommandId="{command_id}">stdout</rsp:DesiredStream></rsp:Receive>'
    message_id = f"uuid:{uuid.uuid4()}"
    first = core_client.post(f"{_SHELL}/Receive", receive, message_id=message_id)
    second = core_client.post(f"{_SHELL}/Receive", receive, message_id=message_id)
    assert first[0] == 200
    assert first == second  # byte for byte: the output dequeued for the first answer is not lost
    root = _xml(first[1])
    assert root.find(f".//{{{NS_SHELL}}}Stream") is not None
    # A new MessageID is a new poll: nothing left, the pipeline is done.
    status, third = core_client.post(f"{_SHELL}/Receive", receive)
    assert status == 200
    state = _xml(third).find(f".//{{{NS_SHELL}}}CommandState")
    assert state is not None
    assert state.get("State", "").endswith("/Done")


def test_empty_receive_is_the_timeout_fault(core_client: _Client) -> None:
    status, response = core_client.post(
        f"{_SHELL}/Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>"
    )
    assert status == 500
    assert f'Code="{OPERATION_TIMED_OUT}"' in response.decode()
    assert "w:TimedOut" in response.decode()


def test_relates_to_is_the_request_message_id(core_client: _Client) -> None:
    message_id = f"uuid:{uuid.uuid4()}"
    status, response = core_client.post(
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get", "", message_id=message_id, resource=_SHELL
    )
    assert status == 200
    root = _xml(response)
    relates = root.find(
        "{http://www.w3.org/2003/05/soap-envelope}Header/{http://schemas.xmlsoap.org/ws/2004/08/addressing}RelatesTo"
    )
    assert relates is not None
    assert relates.text == message_id
    assert root.find(f".//{{{NS_SHELL}}}State") is not None


def test_faults_for_unknown_action_resource_and_shell(core_client: _Client) -> None:
    status, response = core_client.post("http://example.test/NoSuchAction", "")
    assert status == 500
    assert 'Code="2150858771"' in response.decode()
    status, response = core_client.post(f"{_SHELL}/Receive", "<rsp:Receive/>", resource="http://example.test/other")
    assert 'Code="2150858752"' in response.decode()
    core_client.shell_id = str(uuid.uuid4()).upper()
    status, response = core_client.post(
        f"{_SHELL}/Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>"
    )
    assert f'Code="{SHELL_NOT_FOUND}"' in response.decode()


def test_other_users_cannot_use_a_shell(core_client: _Client) -> None:
    core_client.identity = Identity("LAB\\mallory", "basic")
    status, response = core_client.post(
        f"{_SHELL}/Receive", "<rsp:Receive><rsp:DesiredStream>stdout</rsp:DesiredStream></rsp:Receive>"
    )
    assert status == 500
    assert 'Code="5"' in response.decode()


def test_doctype_is_rejected(wire_runner) -> None:
    service = WSManService("hv-core", wire_runner)
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/><s:Body>&b;</s:Body></s:Envelope>'
    )
    status, response = service.handle(evil, Identity(WIRE_USER, "basic"), "127.0.0.1", "http://x/wsman")
    assert status == 500
    assert b"w:InvalidBody" in response


def test_parse_duration() -> None:
    assert parse_duration("PT20S", 1) == 20
    assert parse_duration("PT60.500S", 1) == 60.5
    assert parse_duration("P0DT0H1M2S", 1) == 62
    assert parse_duration("nonsense", 7) == 7
    assert parse_duration(None, 7) == 7


# --- the sealing framing -----------------------------------------------------------------------------------


class _XorContext:
    """A stand-in security context: XOR 'sealing' with a 16-byte signature header."""

    @dataclass
    class _Result:
        header: bytes
        data: bytes
        padding_length: int = 0

    def wrap_winrm(self, data: bytes) -> _XorContext._Result:
        return self._Result(b"S" * 16, bytes(b ^ 0x5A for b in data))

    def unwrap_winrm(self, header: bytes, data: bytes) -> bytes:
        assert header == b"S" * 16
        return bytes(b ^ 0x5A for b in data)


@pytest.mark.parametrize(
    ("protocol", "size"),
    [(SPNEGO_PROTOCOL, 100), (SPNEGO_PROTOCOL, 70_000), (CREDSSP_PROTOCOL, 100), (CREDSSP_PROTOCOL, 70_000)],
)
def test_framing_round_trip(protocol: str, size: int) -> None:
    message = bytes(range(256)) * (size // 256) + b"--Encrypted Boundary\r\n"
    content_type, body = wrap(message, _XorContext(), protocol)
    multi = protocol == CREDSSP_PROTOCOL and size > 16384
    assert content_type.startswith("multipart/x-multi-encrypted" if multi else "multipart/encrypted")
    assert f'protocol="{protocol}"' in content_type
    assert body.count(b"\tContent-Type: application/octet-stream") == ((len(message) + 16383) // 16384 if multi else 1)
    assert unwrap(body, content_type, _XorContext()) == message


def test_framing_rejects_a_wrong_length() -> None:
    content_type, body = wrap(b"hello", _XorContext(), SPNEGO_PROTOCOL)
    with pytest.raises(EncryptionError):
        unwrap(body.replace(b"Length=5", b"Length=6"), content_type, _XorContext())
    with pytest.raises(EncryptionError):
        unwrap(b"garbage", content_type, _XorContext())


def test_receive_answers_fit_the_client_envelope(core_client: _Client) -> None:
    ps = ClientPowerShell(core_client.pool)
    ps.add_command(Command("Emit-Large").add_parameter("Count", 4).add_parameter("Size", 300_000))
    ps.start()
    payload = core_client.pool.data_to_send()
    assert payload is not None
    command_id = str(ps.pipeline_id).upper()
    status, _ = core_client.post(
        f"{_SHELL}/Command",
        f'<rsp:CommandLine CommandId="{command_id}"><rsp:Command/>'
        f"<rsp:Arguments>{base64.b64encode(payload.data).decode()}</rsp:Arguments></rsp:CommandLine>",
    )
    assert status == 200
    receive = f'<rsp:Receive><rsp:DesiredStream CommandId="{command_id}">stdout</rsp:DesiredStream></rsp:Receive>'
    sizes = []
    while True:
        status, response = core_client.post(f"{_SHELL}/Receive", receive)
        assert status == 200
        sizes.append(len(response))
        state = _xml(response).find(f".//{{{NS_SHELL}}}CommandState")
        if state is not None and state.get("State", "").endswith("/Done"):
            break
    # 1.2 MB of output in answers no larger than the 512000-byte MaxEnvelopeSize the client announced.
    assert len(sizes) >= 3
    assert max(sizes) <= 512_000
