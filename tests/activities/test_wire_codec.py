"""The host client's wire codec (activities/hosts.py, "the wire codec") against pypsrp's own.

What the client sends must be what pypsrp would send for the same commands, byte for byte, and what it makes of
a host's answer must be what pypsrp makes of it, object for object: the codec only makes both cheaper. Outgoing
messages are compared offline; incoming ones are a lab host's real answers (raw Receive bytes over the wire, no
mock of pypsrp), each decoded both ways.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.complex_objects import ApartmentState, HostInfo, Pipeline, PSInvocationState, RemoteStreamOptions
from pypsrp.messages import CreatePipeline, Destination, Message, MessageType
from pypsrp.powershell import Fragmenter, PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from activities.hosts import (
    NULL,
    Command,
    HostClient,
    _Fragmenter,
    _PipelineMessage,
    _PipelineWriter,
    _PowerShell,
    _RunspacePool,
    _Serializer,
    _settle_environment,
    _WireStatement,
)
from activities.inventory import HostEntry, load_inventory
from lab.lab import Lab
from lab.model.topology import DEFAULT_TOPOLOGY

pytestmark = pytest.mark.timeout(120)

TRICKY = [
    "plain",
    "",
    "a & b < c > d",
    "_x0041_ and _X0041_ and _x",
    "line\nbreak\ttab\rreturn\x00nul\x7fdel\x85nel",
    "é日本😀",
    "C:\\Hyper-V\\vm_x1\\disk.vhdx",
    "quote \" and ' apostrophe",
]
VALUES: list[Any] = [
    *TRICKY,
    0,
    -7,
    2**40,
    True,
    False,
    NULL,
    1.5,
    b"\x00\x01bytes",
    uuid.UUID(int=5),
    ["a", "b&c", ""],
    [uuid.UUID(int=1), uuid.UUID(int=2)],
    [1, 2, 3],
    {"RequestedState": 4},
    {"Outer": {"Inner": ["x", 1]}, "Other": "y"},
    [],
]


def _commands() -> list[list[Command]]:
    """Statements (each a pipeline of commands) covering every kind of argument the client sends."""
    return [
        [Command("Get-VM")],
        [Command("Get-VM", {"Id": [uuid.UUID(int=9)]}), Command("Get-VMHardDiskDrive")],
        [Command("Set-Thing", {f"P{i}": value for i, value in enumerate(VALUES)})],
        [Command("klist", arguments=("purge", "-li", "0x3e7"))],
        [Command("Remove-Item", {"LiteralPath": ["a", "b"], "Skipped": None}, switches=("Force", "WhatIf"))],
        [Command("Get-Name_With_Underscore", {"Name": "_x2A_"}, arguments=(1, None, "x"))],
        [Command("Get-VMHost"), Command("Select-Object", {"Property": ["Name", "VirtualMachinePath"]})],
    ]


def _reference_message(
    version: str, statements: list[list[Command]], error_action_stop: bool, pid: str, rpid: str, max_size: int
) -> list[bytes]:
    """The CREATE_PIPELINE fragments as pypsrp itself builds them: its PowerShell's add_* calls, then what its
    begin_invoke builds from them, serialized and fragmented by its own classes."""
    pool = RunspacePool(WSMan("127.0.0.1", ssl=False, auth="basic", username="u", password="p", encryption="never"))
    pool.protocol_version = version
    ps = PowerShell(pool)
    for statement in statements:
        for command in statement:
            ps.add_cmdlet(command.cmdlet)
            for name, value in command.parameters.items():
                if value is NULL:
                    ps.add_parameter(name, None)
                elif value is not None:
                    ps.add_parameter(name, value)
            for switch in command.switches:
                ps.add_parameter(switch)
            for argument in command.arguments:
                ps.add_argument(argument)
            if error_action_stop:
                ps.add_parameter("ErrorAction", "Stop")
        ps.add_statement()
    pipeline = Pipeline(is_nested=ps.is_nested, cmds=ps.commands, history=ps.history_string, redirect_err_to_out=False)
    create = CreatePipeline(
        True,
        ApartmentState(value=pool.apartment_state),
        RemoteStreamOptions(value=RemoteStreamOptions.ADD_INVOCATION_INFO),
        False,
        HostInfo(host=pool.host),
        pipeline,
        ps.is_nested,
    )
    fragmenter = Fragmenter(max_size, Serializer())
    fragmenter.outgoing_counter = 7
    return list(fragmenter.fragment(create, rpid, pid))


def _our_message(
    version: str, statements: list[list[Command]], error_action_stop: bool, pid: str, rpid: str, max_size: int
) -> list[bytes]:
    client = HostClient.__new__(HostClient)  # only its `_wire`, which counts calls
    client.calls = Counter()
    wire: list[_WireStatement] = [[client._wire(command, error_action_stop) for command in s] for s in statements]
    serializer = _Serializer()
    body = _PipelineWriter(serializer, version).message(wire, ApartmentState.UNKNOWN)
    fragmenter = _Fragmenter(max_size, serializer)
    fragmenter.outgoing_counter = 7
    return fragmenter.fragment(_PipelineMessage(body), rpid, pid)


@pytest.mark.parametrize("version", ["2.3", "2.2", "2.1"])
@pytest.mark.parametrize("error_action_stop", [False, True])
def test_create_pipeline_is_the_bytes_pypsrp_sends(version: str, error_action_stop: bool) -> None:
    rpid, pid = str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()
    cases = [[statement] for statement in _commands()] + [_commands()]  # each alone, then all as one batch
    for statements in cases:
        for max_size in (150_000, 700):  # one fragment, then many
            ours = _our_message(version, statements, error_action_stop, pid, rpid, max_size)
            theirs = _reference_message(version, statements, error_action_stop, pid, rpid, max_size)
            assert ours == theirs, [statement[0].cmdlet for statement in statements]


def test_the_batch_markers_are_written_as_pypsrp_writes_them() -> None:
    statements = [[Command("Write-Output", {"InputObject": f"{uuid.uuid4().hex}:{i}"})] for i in range(3)]
    rpid, pid = str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()
    assert _our_message("2.3", statements, False, pid, rpid, 150_000) == _reference_message(
        "2.3", statements, False, pid, rpid, 150_000
    )


@pytest.mark.parametrize("text", [*TRICKY, "_x000A_", "a_x0041_b_x00E9_", "_xD83D__xDE00_", "_x12"])
def test_strings_read_as_pypsrp_reads_them(text: str) -> None:
    assert _Serializer()._deserialize_string(text) == Serializer()._deserialize_string(text)


# -- a host's answers, decoded both ways --------------------------------------------------------------------
def _shape(value: Any, depth: int = 0) -> Any:
    """A comparable picture of what pypsrp made of a message: types and attributes all the way down, without
    `ComplexObject._xml` (the text pypsrp keeps of nested objects; see `_Serializer`)."""
    assert depth < 60, "object graph too deep"
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_shape(item, depth + 1) for item in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(_shape(k, depth + 1)), _shape(v, depth + 1)) for k, v in value.items()))
    if type(value).__module__.startswith("pypsrp") and hasattr(value, "__dict__"):
        attributes = {k: _shape(v, depth + 1) for k, v in vars(value).items() if k != "_xml"}
        return (type(value).__qualname__, sorted(attributes.items()))
    return (type(value).__name__, value)


def _wsman(entry: HostEntry) -> WSMan:
    validation: Any = str(entry.ca_file) if entry.use_tls and entry.ca_file else True
    return WSMan(
        entry.address,
        port=entry.effective_port,
        ssl=entry.use_tls,
        auth=entry.auth,
        username=entry.username,
        password=entry.resolve_password().get_secret_value(),
        cert_validation=validation,
        encryption=entry.encryption,
        operation_timeout=10,
        read_timeout=30,
        connection_timeout=5,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab.from_topology(
        DEFAULT_TOPOLOGY.parent / "pair.yaml", workdir=Path(tmp_path_factory.mktemp("codec")), time_scale=600
    ) as started:
        yield started


@pytest.fixture(scope="module")
def pool(lab: Lab) -> Iterator[RunspacePool]:
    with _RunspacePool(_wsman(load_inventory(lab.inventory_path).host("HV-A"))) as opened:
        yield opened


READS: list[list[Command]] = [
    [Command("Get-VM")],
    [Command("Get-VMHost")],
    [Command("Get-VM", {"Name": "ghost-vm-that-is-not-there"})],
    [Command("Get-CimInstance", {"ClassName": "Win32_OperatingSystem"})],
    [Command("Get-Cluster")],
    [Command("Get-NoSuchCmdlet")],
    [Command("Test-Path", {"LiteralPath": ["C:\\", "Q:\\nowhere"]})],
    [Command("Get-VMSwitch")],
    [Command("Get-NetAdapterBinding", {"ComponentID": ["ms_msclient", "ms_server"]})],
]


_ENDED = frozenset({PSInvocationState.COMPLETED, PSInvocationState.FAILED, PSInvocationState.STOPPED})


def _ends_the_pipeline(message: Message) -> bool:
    """A PIPELINE_STATE that ends the pipeline (a host may send Running first, alone in a Receive when busy)."""
    return message.message_type == MessageType.PIPELINE_STATE and getattr(message.data, "state", None) in _ENDED


@pytest.mark.parametrize("statement", READS, ids=lambda s: s[0].cmdlet)
def test_a_hosts_answer_reads_as_pypsrp_reads_it(pool: RunspacePool, statement: list[Command]) -> None:
    client = HostClient.__new__(HostClient)
    client.calls = Counter()
    ps = _PowerShell(pool, [[client._wire(command, False) for command in statement]])
    ps.begin_invoke()
    ours = _Fragmenter(pool.connection.max_payload_size, _Serializer())
    theirs = Fragmenter(pool.connection.max_payload_size, Serializer())
    seen: list[Message] = []
    while not any(_ends_the_pipeline(message) for message in seen):
        raw = pool.shell.receive("stdout", command_id=ps._command_id)[2]["stdout"]
        mine, reference = ours.defragment(raw), theirs.defragment(raw)
        assert len(mine) == len(reference)
        for a, b in zip(mine, reference, strict=True):
            assert (a.destination, a.message_type, a.rpid, a.pid) == (b.destination, b.message_type, b.rpid, b.pid)
            assert _shape(a.data) == _shape(b.data)
            assert getattr(a.data, "_xml", None) == getattr(b.data, "_xml", None)  # a message's own object keeps it
        seen += mine
    assert all(message.destination == Destination.CLIENT for message in seen)
    # An answer: objects or records before the end, or the error record a Failed end carries (an unknown cmdlet).
    answered = [message for message in seen if message.message_type != MessageType.PIPELINE_STATE]
    failed = getattr(seen[-1].data, "state", None) == PSInvocationState.FAILED
    assert answered or failed or statement[0].cmdlet == "Get-Cluster"


# -- the client over the wire -------------------------------------------------------------------------------
def test_pipeline_input_goes_through_pypsrp_itself(lab: Lab) -> None:
    with HostClient(load_inventory(lab.inventory_path).host("HV-A")) as client:
        result = client.pipeline([Command("Write-Output")], input=["p", "q & r"])
        assert result.output == ("p", "q & r")
        batch = client.batch([Command("Write-Output", {"InputObject": ["a", "_x0041_"]}), Command("Get-VMHost")])
        assert batch[0].output == ("a", "_x0041_")
        assert batch[1].output
        assert batch[1].output[0]["Name"]


def test_the_session_keeps_what_it_was_built_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the per-request environment scan goes: certificate validation, proxies and authentication stay."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here\n")
    validations: list[Any] = [True, False, str(ca)]  # pypsrp annotates bool; requests takes a CA path too
    for validation in validations:
        options: dict[str, Any] = {"ssl": True, "auth": "ntlm", "username": "u", "password": "p"}
        settled = WSMan("hv01.example.test", cert_validation=validation, **options)
        _settle_environment(settled)
        plain = WSMan("hv01.example.test", cert_validation=validation, **options)
        reference = plain.transport._build_session()
        session = settled.transport.session
        assert session is not None
        assert session.trust_env is False
        assert session.verify == reference.verify
        if validation is False or isinstance(validation, str):
            assert session.verify == validation
        else:
            assert session.verify  # True, or the CA bundle the environment names: validated either way
        assert session.proxies == reference.proxies == {"https": "http://proxy.invalid:3128"}
        assert type(session.auth) is type(reference.auth)
        assert dict(session.headers) == dict(reference.headers)
        assert session.adapters.keys() == reference.adapters.keys()
