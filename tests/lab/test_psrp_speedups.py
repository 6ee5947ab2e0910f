"""lab/psrp/speedups.py: psrpcore's lookup and escaping made cheap, with every byte and every answer unchanged."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from psrpcore.types import (
    PSCryptoProvider,
    PSCustomObject,
    PSNoteProperty,
    PSObject,
    PSString,
    deserialize,
    serialize,
)

from lab.cmdlets.psobj import VMStateEnum, custom_object, make_object
from lab.psrp import speedups
from lab.psrp.records import error_record
from tests.lab.test_cmdlets_support import SWITCH, Lab, cmd

# What the lab's hosts answer, every kind of object the engine reads: VMs, hosts, disks, adapters, switches,
# snapshots, volumes, cluster groups, CIM jobs, Compare-VM's report, Select-Object's custom objects.
_COMMANDS = [
    ("HV01", [cmd("Get-VM")]),
    ("HV01", [cmd("Get-VMHost")]),
    ("HV01", [cmd("Get-VMHardDiskDrive", VMName="web01")]),
    ("HV01", [cmd("Get-VMNetworkAdapter", VMName="web01")]),
    ("HV01", [cmd("Get-VMDvdDrive", VMName="web01")]),
    ("HV01", [cmd("Get-VMSnapshot", VMName="web01")]),
    ("HV01", [cmd("Get-VMSwitch")]),
    ("HV01", [cmd("Get-VMMigrationNetwork")]),
    ("HV01", [cmd("Get-Volume")]),
    ("HV01", [cmd("Get-VHD", r"D:\Hyper-V\web01\web01.vhdx")]),
    ("HV01", [cmd("Compare-VM", Name="web01", DestinationHost="HV02")]),
    ("HV01", [cmd("Get-VM", "web01"), cmd("Select-Object", Property=["Name", "State", "MemoryAssigned"])]),
    ("HV03", [cmd("Get-ClusterGroup")]),
    ("HV01", [cmd("Move-VM", "web01", DestinationHost="HV02", IncludeStorage=SWITCH, AsJob=SWITCH)]),
    ("HV01", [cmd("Get-CimInstance", Namespace="root\\virtualization\\v2", ClassName="Msvm_MigrationJob")]),
    ("HV01", [cmd("Test-Path", r"D:\Hyper-V\web01\web01.vhdx")]),
]


_CIPHER = PSCryptoProvider()


@pytest.fixture
def psrpcore_own() -> Iterator[None]:
    """psrpcore's own paths for the length of a test, then the lab's again."""
    speedups.uninstall()
    try:
        yield
    finally:
        speedups.install()


def _objects() -> list[Any]:
    lab = Lab()
    found: list[Any] = []
    for host, commands in _COMMANDS:
        io = lab.run(*commands, host=host)
        assert io.output, f"{commands[0].name} on {host} gave nothing to compare"
        found.extend(io.output)
    found.append(error_record(lab.fail(cmd("Get-VM", "ghost", ErrorAction="Stop"))[0]))
    duplicate = make_object(["Lab.Duplicate", "System.Object"], [("Name", "adapted")], [("Name", "extended")])
    surrogate = custom_object([("Text", "a_x0041_b \U0001f600 \x00 _X_"), ("Nested", custom_object([("A", 1)]))])
    string_with_props = PSString("decorated")
    string_with_props.PSObject.extended_properties.append(PSNoteProperty("Note", "x"))
    return [*found, duplicate, surrogate, string_with_props, VMStateEnum.Running, [1, "two", None], {"k": "v"}]


def _wire(objects: list[Any]) -> list[bytes]:
    return [ET.tostring(serialize(obj, _CIPHER)) for obj in objects]


def test_installed_with_the_checked_psrpcore() -> None:
    assert speedups.installed()


def test_the_lab_objects_serialize_to_the_same_bytes(psrpcore_own: None) -> None:
    objects = _objects()
    own = _wire(objects)
    own_reread = _wire(_reread(own))
    assert speedups.install()
    assert _wire(objects) == own
    # The remembered escapes answer the same a second time; what a client reads back writes the same again.
    assert _wire(objects) == own
    assert _wire(_reread(own)) == own_reread


def _reread(wire: list[bytes]) -> list[Any]:
    return [deserialize(ET.fromstring(data), _CIPHER) for data in wire]  # noqa: S314 - bytes written just above


def _answers(obj: Any, names: list[str]) -> list[tuple[str, str, Any]]:
    answers: list[tuple[str, str, Any]] = []
    for name in names:
        try:
            answers.append((name, "value", repr(getattr(obj, name))))
        except AttributeError as error:
            answers.append((name, "AttributeError", str(error)))
    return answers


def test_attribute_reads_answer_as_psrpcore_does(psrpcore_own: None) -> None:
    vm = Lab().run(cmd("Get-VM", "web01")).output[0]
    duplicate = make_object(["Lab.Duplicate"], [("Name", "adapted"), ("Name", "adapted-2")], [("Other", 1)])
    duplicate.PSObject.extended_properties.append(PSNoteProperty("Name", "extended"))
    custom = PSCustomObject(Shadow="note")
    custom.PSObject.extended_properties.append(PSNoteProperty("PSObject", "a note that a real attribute hides"))
    names = ["Name", "State", "MemoryAssigned", "Other", "Shadow", "PSObject", "__class__", "missing", "__dict__"]
    cases = [vm, duplicate, custom, VMStateEnum.Off, PSString("plain")]
    own = [_answers(obj, names) for obj in cases]
    assert speedups.install()
    assert [_answers(obj, names) for obj in cases] == own
    assert _answers(duplicate, ["Name"]) == [("Name", "value", "'extended'")]


def test_an_object_without_its_psobject_yet_fails_as_before(psrpcore_own: None) -> None:
    bare = object.__new__(PSObject)
    with pytest.raises(AttributeError) as own:
        _ = bare.anything
    assert speedups.install()
    with pytest.raises(AttributeError) as lazy:
        _ = bare.anything
    assert str(lazy.value) == str(own.value)
    assert isinstance(bare, PSObject)
