"""lab/psrp/create_pipeline.py: CREATE_PIPELINE read without psrpcore's objects, every statement as psrpcore reads it.

The messages compared are real ones: what pypsrp sends a lab host over the wire (the engine's own preflight
batches, and pipelines with every kind of value the engine passes), recorded as the lab received them, each read
both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from psrpcore import PowerShell as CorePowerShell
from psrpcore.types import PSCryptoProvider, PSObject, deserialize
from pypsrp.powershell import PowerShell, RunspacePool

import lab.psrp.engine as engine
from activities.hosts import HostSessions
from activities.inventory import load_inventory
from activities.preflight import run_preflight
from lab.commands import CommandSpec
from lab.lab import Lab
from lab.psrp.create_pipeline import ParsedPipeline, read_create_pipeline
from lab.psrp.pipeline import parse_statements
from tests.lab.conftest import TOPOLOGIES, lab_wsman
from workflows.contracts import PreflightInput

pytestmark = pytest.mark.timeout(120)

HOST = "HV-A"
Recorded = list[tuple[bytes, ParsedPipeline | None]]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = Path(tmp_path_factory.mktemp("create-pipeline"))
    with Lab.from_topology(
        TOPOLOGIES / "pair.yaml", workdir=workdir, time_scale=60, inventory_path=workdir / "inventory.yaml"
    ) as started:
        yield started


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """Every CREATE_PIPELINE the lab receives during the test, with what the fast reader made of it."""
    seen: Recorded = []

    def record(data: bytes, cipher: Any, **kwargs: Any) -> ParsedPipeline | None:
        parsed = read_create_pipeline(data, cipher, **kwargs)
        seen.append((data, parsed))
        return parsed

    monkeypatch.setattr(engine, "read_create_pipeline", record)
    return seen


def _psrpcore_reads(data: bytes) -> tuple[str, bool]:
    frame = deserialize(ElementTree.fromstring(data), PSCryptoProvider())  # noqa: S314
    assert isinstance(frame, PSObject)
    pipeline = CorePowerShell.FromPSObjectForRemoting(frame)
    return repr(parse_statements(pipeline)), bool(pipeline.no_input)


def _assert_read_alike(seen: Recorded) -> None:
    assert seen, "no CREATE_PIPELINE reached the lab"
    for data, parsed in seen:
        assert parsed is not None, data[:400]
        assert (repr(parsed.statements), parsed.no_input) == _psrpcore_reads(data)


def _run(lab: Lab, build: Callable[[PowerShell], object], input: list[Any] | None = None) -> PowerShell:
    with lab_wsman(lab, HOST) as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        build(ps)
        ps.invoke(input)  # type: ignore[arg-type]  # a list is what pypsrp sends whole (see test_wire_statements)
        return ps


def test_the_engines_preflight_batches_read_as_psrpcore_reads_them(lab: Lab, recorded: Recorded) -> None:
    inventory = load_inventory(lab.inventory_path)
    sessions = HostSessions(inventory)
    try:
        report = run_preflight(inventory, PreflightInput("vm-a1", "HV-A", "HV-B"), sessions=sessions)
    finally:
        sessions.close_all()
    assert not report.blockers
    assert len(recorded) >= 5  # both hosts' batches of host facts, the VM's reads, Compare-VM, the files
    assert max(sum(len(s) for s in parsed.statements) for _, parsed in recorded if parsed) >= 10
    _assert_read_alike(recorded)


def test_values_of_every_kind_the_engine_passes(lab: Lab, recorded: Recorded) -> None:
    hostile = "a_x0041_b \U0001f600 <&> \"quoted\" 'single'\nnext line\ttab _X_ \\\\server\\share"

    def build(ps: PowerShell) -> None:
        ps.add_cmdlet("Write-Output").add_parameter("InputObject", hostile)
        ps.add_statement()
        ps.add_cmdlet("Write-Output").add_parameter("InputObject", [1, -2, 2**31 - 1, True, False, "two", None])
        ps.add_statement()
        ps.add_cmdlet("Write-Output").add_parameter("InputObject", {"RequestedState": 4, "Nested": {"a": [1, "b"]}})
        ps.add_statement()
        ps.add_cmdlet("Get-VM").add_argument("vm-a1").add_parameter("ErrorAction", "SilentlyContinue")
        ps.add_cmdlet("Select-Object").add_parameter("Property", ["Name", "State"])
        ps.add_statement()
        ps.add_cmdlet("Test-Path").add_parameter("LiteralPath", ["C:\\a", "C:\\a", ""]).add_parameter("IsValid")
        ps.add_statement()
        ps.add_cmdlet("Write-Output").add_parameter("InputObject", "").merge_error("output")

    ps = _run(lab, build)
    _assert_read_alike(recorded)
    assert ps.output[0] == hostile
    (parsed,) = [p for _, p in recorded if p is not None]
    assert [s[0].name for s in parsed.statements] == [
        "Write-Output",
        "Write-Output",
        "Write-Output",
        "Get-VM",
        "Test-Path",
        "Write-Output",
    ]
    assert [c.name for c in parsed.statements[3]] == ["Get-VM", "Select-Object"]
    assert parsed.statements[3][0].parameters[0].name is None  # a positional argument
    assert parsed.statements[4][0].parameters[1].is_switch
    assert parsed.statements[5][0].merge_errors_to_output


def test_a_pipeline_with_input_waits_for_it(lab: Lab, recorded: Recorded) -> None:
    ps = _run(lab, lambda ps: ps.add_cmdlet("Write-Output"), input=["first", "second"])
    _assert_read_alike(recorded)
    (parsed,) = [p for _, p in recorded if p is not None]
    assert parsed.no_input is False
    assert ps.output == ["first", "second"]


def test_a_message_not_read_here_goes_psrpcores_way(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "read_create_pipeline", lambda data, cipher, **kwargs: None)
    ps = _run(lab, lambda ps: ps.add_cmdlet("Get-VM").add_parameter("Name", "vm-a1"))
    assert not ps.had_errors
    assert [vm.adapted_properties["Name"] for vm in ps.output] == ["vm-a1"]


_FRAME = '<Obj RefId="0"><MS><B N="NoInput">true</B><Obj RefId="1" N="PowerShell"><MS>{cmds}</MS></Obj></MS></Obj>'
_COMMAND = (
    '<Obj RefId="3"><MS><S N="Cmd">Get-VM</S><B N="IsScript">false</B>'
    '<Obj RefId="4" N="Args"><LST>{args}</LST></Obj></MS></Obj>'
)


@pytest.mark.parametrize(
    ("what", "xml"),
    [
        ("not XML", "<Obj"),
        ("no PowerShell", '<Obj RefId="0"><MS><B N="NoInput">true</B></MS></Obj>'),
        ("a list without LST", _FRAME.format(cmds='<Obj RefId="2" N="Cmds"></Obj>')),
        ("an empty statement", _FRAME.format(cmds='<Obj RefId="2" N="Cmds"><LST /></Obj>')),
        (
            "a value that refers to the frame",
            _FRAME.format(
                cmds='<Obj RefId="2" N="Cmds"><LST>'
                + _COMMAND.format(args='<Obj RefId="5"><MS><S N="N">Name</S><Ref RefId="1" N="V" /></MS></Obj>')
                + "</LST></Obj>"
            ),
        ),
        ("a command without a name", _FRAME.format(cmds='<Obj RefId="2" N="Cmds"><LST><Obj><MS /></Obj></LST></Obj>')),
    ],
)
def test_shapes_it_does_not_expect_are_left_to_psrpcore(what: str, xml: str) -> None:
    assert read_create_pipeline(xml.encode(), None) is None, what


def test_the_smallest_frame_reads() -> None:
    xml = _FRAME.format(
        cmds='<Obj RefId="2" N="Cmds"><LST>'
        + _COMMAND.format(args='<Obj RefId="5"><MS><S N="N">Name</S><S N="V">vm_x0041_</S></MS></Obj>')
        + "</LST></Obj>"
    )
    parsed = read_create_pipeline(xml.encode(), None)
    assert parsed is not None
    assert parsed.no_input
    ((command,),) = parsed.statements
    assert (command.name, command.parameters[0].name, command.parameters[0].value) == ("Get-VM", "Name", "vmA")


def test_the_event_it_makes_says_what_it_holds() -> None:
    event = engine._ParsedCreatePipelineEvent(
        uuid.uuid4(), uuid.uuid4(), ParsedPipeline([[CommandSpec(name="Get-VM")]], no_input=True)
    )
    assert "Get-VM" in repr(event)
