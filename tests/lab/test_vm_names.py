"""How a lab host resolves `-Name` and `-VMName`, over the wire, as the Hyper-V module does (catalogue 6.1).

A name with an unescaped `*`, `?` or `[` is a case-insensitive pattern; any other name is matched exactly but
for case, backticks included, so escaping finds nothing; a literal name that matches nothing is the not-found
error, a pattern that matches nothing gives nothing without error. Move-VM and Compare-VM resolve their single
`-Name` through the same locator and act on every match; cmdlets that take a VM from the pipeline take each.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from lab.lab import Lab
from lab.model import checks
from lab.model.topology import TopologyError, parse_topology
from tests.lab import hostile_names as h
from tests.lab.conftest import lab_wsman
from tests.lab.test_lab_wire import prop, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    with h.hostile_labs(tmp_path) as make:
        yield make


def names(ps: PowerShell) -> list[str]:
    return sorted(str(prop(vm, "Name")) for vm in ps.output)


def errors(ps: PowerShell) -> list[str]:
    return [str(prop(record.exception, "Message")) for record in ps.streams.error]


def truth_state(lab: Lab) -> dict[str, Any]:
    truth = lab.truth()
    return {key: truth[key] for key in ("vms", "locations", "move_starts", "jobs")}


def test_get_vm_names_are_patterns_or_exact(estate: Callable[..., Lab]) -> None:
    lab = estate()
    before = truth_state(lab)
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        # Patterns: every match, case-insensitive; no match is no error.
        ps = run(pool, "Get-VM", Name="WEB*")
        assert names(ps) == ["web08", "web1", "web[1]"]
        assert not errors(ps)
        assert names(run(pool, "Get-VM", Name=h.BRACKETS)) == ["web1"]  # `[1]` is a class: web[1] is not found
        assert names(run(pool, "Get-VM", Name=h.STAR)) == ["a*b", "ab", "axb"]
        assert names(run(pool, "Get-VM", Name=h.QMARK)) == ["db1", "db?"]
        ps = run(pool, "Get-VM", Name="web0[78]")
        assert names(ps) == ["web08"]
        assert not errors(ps)
        ps = run(pool, "Get-VM", Name="nothing*")
        assert ps.output == []
        assert not errors(ps)
        # Escaping does not help: the backticks are part of the name looked for.
        ps = run(pool, "Get-VM", Name="web`[1`]")
        assert ps.output == []
        assert errors(ps) == ['Hyper-V was unable to find a virtual machine with name "web`[1`]".']
        # Literal names: exact but for case, every character counted.
        for name in (h.BACKTICK, h.QUOTES, h.LONG, h.UNICODE, "TWIN"):
            ps = run(pool, "Get-VM", Name=name)
            assert [str(prop(vm, "Name")).casefold() for vm in ps.output] == [name.casefold()] * (
                2 if name == "TWIN" else 1
            ), name
            assert not errors(ps), name
        assert names(run(pool, "Get-VM", Name=h.UNICODE.upper())) == [h.UNICODE]
        for missing in (h.LONG + "y", h.LONG[:-1], "ünïcødé-вм", "it's", "web1 "):
            ps = run(pool, "Get-VM", Name=missing)
            assert ps.output == [], missing
            assert errors(ps) == [f'Hyper-V was unable to find a virtual machine with name "{missing}".']
        # A pattern WildcardPattern refuses is an error, not a match.
        ps = run(pool, "Get-VM", Name="web[")
        assert ps.output == []
        assert errors(ps) == ["The specified wildcard character pattern is not valid: web["]
        # Device cmdlets resolve -VMName the same way.
        ps = run(pool, "Get-VMHardDiskDrive", VMName="web?")
        assert sorted(str(prop(d, "VMName")) for d in ps.output) == ["web1"]
        ps = run(pool, "Get-VMNetworkAdapter", VMName="web`[1`]")
        assert ps.output == []
        assert "ObjectNotFound" in str(ps.streams.error[0].fq_error)
    assert truth_state(lab) == before


def _vm_id(lab: Lab, name: str, host: str = "HV-A") -> uuid.UUID:
    (vm,) = [v for v in lab.truth()["vms"] if v["name"] == name and v["host"] == host]
    return uuid.UUID(vm["id"])


def pipeline(pool: RunspacePool, *commands: tuple[str, dict[str, Any]]) -> PowerShell:
    """Several cmdlets as one pipeline (`A | B`), named parameters only (True is a switch; None is $null)."""
    ps = PowerShell(pool)
    for cmdlet, parameters in commands:
        ps.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            if value is True:
                ps.add_parameter(name)
            else:
                ps.add_parameter(name, value)
    ps.invoke()
    return ps


def test_cmdlets_take_the_vm_from_get_vm_by_id(estate: Callable[..., Lab]) -> None:
    lab = estate()
    vm_id = _vm_id(lab, h.BRACKETS)
    by_id = ("Get-VM", {"Id": [vm_id]})
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        for cmdlet in ("Get-VMHardDiskDrive", "Get-VMNetworkAdapter", "Get-VMDvdDrive", "Get-VMProcessor"):
            ps = pipeline(pool, by_id, (cmdlet, {}))
            assert not errors(ps), cmdlet
            assert [prop(item, "VMId") for item in ps.output] == [vm_id], cmdlet
        (report,) = pipeline(pool, by_id, ("Compare-VM", {"DestinationHost": "HV-B", "IncludeStorage": True})).output
        assert prop(prop(report, "VM"), "Id") == vm_id
        assert prop(report, "Incompatibilities") in (None, [])
        ps = pipeline(
            pool,
            by_id,
            (
                "Move-VM",
                {
                    "DestinationHost": "HV-B",
                    "IncludeStorage": True,
                    "DestinationStoragePath": "D:\\Hyper-V\\moved",
                    "AsJob": True,
                },
            ),
        )
        assert not errors(ps)
        assert ps.output[0].types[0] == "Microsoft.HyperV.PowerShell.Commands.VmJob"
    _wait(lambda: lab.truth()["locations"][h.BRACKETS] == ["HV-B"], "web[1] on HV-B")
    locations = lab.truth()["locations"]
    assert locations["web1"] == ["HV-A"], "only the VM with that Id moved"


def _wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_move_vm_by_name_moves_every_match(estate: Callable[..., Lab]) -> None:
    lab = estate()
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        # A literal name with no such VM, and a pattern with no match: neither moves anything.
        ps = run(pool, "Move-VM", Name="ghost", DestinationHost="HV-B")
        assert [str(r.fq_error) for r in ps.streams.error] == [
            "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.MoveVM"
        ]
        ps = run(pool, "Move-VM", Name="ghost*", DestinationHost="HV-B")
        assert ps.output == []
        assert not errors(ps)
        assert lab.truth()["move_starts"] == {}
        # Compare-VM -Name web* reports on each VM the pattern matches.
        ps = run(pool, "Compare-VM", Name="web*", DestinationHost="HV-B", IncludeStorage=True)
        assert sorted(str(prop(prop(r, "VM"), "Name")) for r in ps.output) == ["web08", "web1", "web[1]"]
        # Move-VM -Name, despite its help, moves every VM the pattern matches, one after the other.
        ps = run(pool, "Move-VM", Name="web[0-9]*", DestinationHost="HV-B", IncludeStorage=True)
        assert not errors(ps), errors(ps)
    locations = lab.truth()["locations"]
    assert locations["web08"] == ["HV-B"]
    assert locations["web1"] == ["HV-B"]
    assert locations[h.BRACKETS] == ["HV-A"]  # `web[0-9]*` needs a digit after "web"
    assert sorted(m["vm"] for m in lab.truth()["move_starts"].values()) == ["web08", "web1"]


def test_each_vm_down_the_pipeline_is_moved(estate: Callable[..., Lab]) -> None:
    lab = estate()
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        ps = pipeline(
            pool, ("Get-VM", {"Name": "a*"}), ("Move-VM", {"DestinationHost": "HV-B", "IncludeStorage": True})
        )
        assert not errors(ps), errors(ps)
    locations = lab.truth()["locations"]
    assert [locations[name] for name in (h.STAR, "ab", "axb")] == [["HV-B"]] * 3


def _incompatibilities(pool: RunspacePool, vm: str) -> list[tuple[int, str]]:
    ps = run(pool, "Compare-VM", Name=vm, DestinationHost="HV-B", IncludeStorage=True)
    assert not errors(ps), errors(ps)
    (report,) = ps.output
    found = prop(report, "Incompatibilities") or []
    return [(int(prop(i, "MessageId")), prop(i, "Source").types[0] if prop(i, "Source") else "") for i in found]


def test_compare_vm_ids_and_sources_and_their_override(estate: Callable[..., Lab]) -> None:
    # The destination lacks web08's switch, its ISO, and the memory for it.
    lab = estate()
    world = lab.world
    with world.lock:
        destination = world.hosts["HV-B"]
        destination.switches = []
        vm = next(v for v in world.hosts["HV-A"].vms.values() if v.name == "web08")
        vm.dvd_drives[0].path = "D:\\ISO\\tools.iso"
        world.hosts["HV-A"].add_file("D:\\ISO\\tools.iso", 1024)
        destination.memory_reserved = destination.memory_capacity
    hv = "Microsoft.HyperV.PowerShell"
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        assert _incompatibilities(pool, "web08") == [
            (33012, f"{hv}.VMNetworkAdapter"),
            (21502, f"{hv}.DvdDrive"),  # no id is known for a missing ISO: the generic migration failure
            (40014, f"{hv}.VMMemory"),
        ]

    other = estate(compare_vm_message_ids={"switch": 90001, "iso": 90002, "memory": 90003})
    with other.world.lock:
        destination = other.world.hosts["HV-B"]
        destination.switches = []
        destination.memory_reserved = destination.memory_capacity
    with RunspacePool(lab_wsman(other, "HV-A")) as pool:
        assert [i for i, _ in _incompatibilities(pool, "web08")] == [90001, 90003]
    with pytest.raises(TopologyError, match="unknown Compare-VM checks"):
        parse_topology(h.topology(compare_vm_message_ids={"no-such-check": 1}))
    assert set(checks.MESSAGE_IDS) >= {"switch", "iso", "memory", "backup", "disk_space", "planned_vm_exists"}


def test_a_name_may_be_shared_only_by_vms_with_ids_of_their_own() -> None:
    raw = h.topology()
    raw["vms"].append({**raw["vms"][0], "id": None})  # a second web[1] without an id
    with pytest.raises(TopologyError, match="duplicate VM name"):
        parse_topology(raw)
