"""Hyper-V cmdlets: object types, property names and .NET types, enums, not-found records; the runner itself."""

from __future__ import annotations

import uuid

from psrpcore.types import PSCryptoProvider, PSInt64, PSUInt, serialize

from lab.commands import CommandSpec, ErrorCategory
from tests.lab.test_cmdlets_support import SWITCH, Lab, adapted_names, cmd, extended_names, prop

HV = "Microsoft.HyperV.PowerShell"


def test_script_is_refused() -> None:
    spec, _ = Lab().fail(CommandSpec("Get-VM | Remove-VM", is_script=True))
    assert "no PowerShell parser" in spec.message
    assert spec.fully_qualified_error_id == "ScriptsNotSupported,Lab.HostRunner"


def test_unknown_command_is_command_not_found() -> None:
    lab = Lab()
    spec, _ = lab.fail(cmd("Get-Foo"), cmd("Get-VM"))
    assert spec.message == (
        "The term 'Get-Foo' is not recognized as the name of a cmdlet, function, script file, or operable program."
        "\r\nCheck the spelling of the name, or if a path was included, verify that the path is correct and try again."
    )
    assert spec.fully_qualified_error_id == "CommandNotFoundException"
    assert spec.category == ErrorCategory.ObjectNotFound
    assert spec.category_message == "ObjectNotFound: (Get-Foo:String) [], CommandNotFoundException"
    assert ("HV01", "Get-Foo") in lab.world.command_log


def test_command_log_records_each_command() -> None:
    lab = Lab()
    lab.run(cmd("Hyper-V\\Get-VM", "web01"), cmd("Select-Object", Property=["Name"]))
    assert lab.world.command_log[-2:] == [("HV01", "Get-VM"), ("HV01", "Select-Object")]


def test_get_vm_object_shape() -> None:
    io = Lab().run(cmd("Get-VM", "web01"))
    (vm,) = io.output
    assert vm.PSObject.type_names == [
        f"{HV}.VirtualMachine",
        f"{HV}.VirtualMachineBase",
        f"{HV}.ComputeResource",
        f"{HV}.VirtualizationObject",
        "System.Object",
    ]
    assert {
        "Name",
        "Id",
        "State",
        "Status",
        "MemoryAssigned",
        "IsClustered",
        "Version",
        "Uptime",
        "ComputerName",
    } <= set(adapted_names(vm))
    assert {"VMName", "VMId", "CheckpointFileLocation", "ParentCheckpointName"} <= set(extended_names(vm))
    state = prop(vm, "State")
    assert str(state.PSObject.type_names[0]) == f"{HV}.VMState"
    assert state.name == "Running"
    assert int(state) == 2
    assert isinstance(prop(vm, "MemoryAssigned"), PSInt64)
    assert prop(vm, "MemoryAssigned") == 4 * 1024**3
    assert isinstance(prop(vm, "ProcessorCount"), PSInt64)
    assert prop(vm, "Status") == "Operating normally"
    assert prop(vm, "ComputerName") == "HV01"
    assert prop(vm, "ParentCheckpointName") == "before-patch"
    assert isinstance(prop(vm, "Id"), uuid.UUID)
    assert str(vm) == f"VirtualMachine (Name = 'web01') [Id = '{prop(vm, 'Id')}']"
    xml = serialize(vm, PSCryptoProvider())
    state_xml = next(e for e in xml.iter("Obj") if e.attrib.get("N") == "State")
    assert state_xml.findtext("ToString") == "Running"
    assert state_xml.findtext("I32") == "2"


def test_get_vm_not_found_records() -> None:
    lab = Lab()
    io = lab.run(cmd("Get-VM", Name=["ghost", "web01"]))
    assert [prop(o, "Name") for o in io.output] == ["web01"]
    (error,) = io.errors
    assert error.message == 'Hyper-V was unable to find a virtual machine with name "ghost".'
    assert error.category_message == "InvalidArgument: (ghost:String) [Get-VM], VirtualizationException"
    assert error.fully_qualified_error_id == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    io = lab.run(cmd("Get-VM", Name="gh*"))
    assert io.output == []
    assert io.errors == []
    missing = uuid.UUID(int=7)
    io = lab.run(cmd("Get-VM", Id=str(missing)))
    assert io.errors[0].message == f'Hyper-V was unable to find a virtual machine with id "{missing}".'
    assert io.errors[0].category_message == "ObjectNotFound: (:) [Get-VM], VirtualizationException"


def test_other_cmdlets_write_object_not_found_for_a_vm_name() -> None:
    io = Lab().run(cmd("Get-VMNetworkAdapter", VMName="ghost"))
    assert (
        io.errors[0].fully_qualified_error_id
        == "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.GetVMNetworkAdapter"
    )
    assert io.errors[0].category_message == "ObjectNotFound: (:) [Get-VMNetworkAdapter], VirtualizationException"


def test_a_select_of_plain_names_gets_from_get_vm_what_it_gets_from_the_whole_objects() -> None:
    """Get-VM builds only the properties a Select-Object of plain names keeps; Write-Output between them hands the
    Select-Object the whole objects. Either way the same rows, property for property, go over the wire."""
    from xml.etree import ElementTree

    lab = Lab()
    for names in (
        ["Id", "Name", "State", "VirtualMachineType", "ConfigurationLocation", "Path"],
        ["name", "VMName", "NetworkAdapters", "HardDrives", "MemoryAssigned"],
        ["Bogus", "Name"],
    ):
        fast = lab.run(cmd("Get-VM"), cmd("Select-Object", Property=names)).output
        whole = lab.run(cmd("Get-VM"), cmd("Write-Output"), cmd("Select-Object", Property=names)).output
        assert len(fast) == len(whole) > 1
        for row, expected in zip(fast, whole, strict=True):
            assert extended_names(row) == extended_names(expected)
            texts = [ElementTree.tostring(serialize(r, PSCryptoProvider())).decode() for r in (row, expected)]
            assert texts[0] == texts[1], names
    # Anything but plain names gets the whole objects.
    (row,) = lab.run(cmd("Get-VM", "web01"), cmd("Select-Object", Property=["*Name"])).output
    assert {"Name", "VMName", "ComputerName"} <= set(extended_names(row))


def test_pipeline_between_commands() -> None:
    lab = Lab()
    io = lab.run(cmd("Get-VM", Name="web01"), cmd("Select-Object", Property=["Name", "State"]))
    (row,) = io.output
    assert row.PSObject.type_names[:2] == [
        f"Selected.{HV}.VirtualMachine",
        "System.Management.Automation.PSCustomObject",
    ]
    assert extended_names(row) == ["Name", "State"]
    assert prop(row, "Name") == "web01"
    assert prop(row, "State").name == "Running"
    io = lab.run(cmd("Get-VM", "web01"), cmd("Get-VMHardDiskDrive"))
    (drive,) = io.output
    assert drive.PSObject.type_names[0] == f"{HV}.HardDiskDrive"
    assert prop(drive, "Path") == r"D:\Hyper-V\web01\web01.vhdx"
    assert prop(drive, "ControllerType").name == "SCSI"
    assert prop(drive, "DiskNumber") is None
    # Pipeline input from the client (PIPELINE_INPUT) binds the same way.
    vm = lab.run(cmd("Get-VM", "web01")).output[0]
    io = lab.run(cmd("Get-VMProcessor"), input=[vm])
    assert prop(io.output[0], "Count") == 2
    assert prop(io.output[0], "CompatibilityForMigrationEnabled") is False
    assert extended_names(io.output[0]) == ["VMCheckpointId", "VMCheckpointName"]


def test_get_vmhost_and_set_vmhost() -> None:
    lab = Lab()
    (host,) = lab.run(cmd("Get-VMHost")).output
    assert host.PSObject.type_names[0] == f"{HV}.VMHost"
    assert prop(host, "VirtualMachineMigrationEnabled") is True
    auth = prop(host, "VirtualMachineMigrationAuthenticationType")
    assert auth.name == "Kerberos"
    assert auth.PSObject.type_names[0] == f"{HV}.MigrationAuthenticationType"
    assert prop(host, "VirtualMachineMigrationPerformanceOption").name == "Compression"
    assert isinstance(prop(host, "MaximumVirtualMachineMigrations"), PSUInt)
    assert prop(host, "FullyQualifiedDomainName") == "lab.test"
    io = lab.run(
        cmd(
            "Set-VMHost",
            VirtualMachineMigrationAuthenticationType="CredSSP",
            VirtualMachineMigrationPerformanceOption="TCPIP",
            UseAnyNetworkForMigration=True,
            MaximumVirtualMachineMigrations=4,
            Passthru=SWITCH,
        )
    )
    assert prop(io.output[0], "VirtualMachineMigrationAuthenticationType").name == "CredSSP"
    lm = lab.world.hosts["HV01"].live_migration
    assert (lm.authentication.name, lm.performance.name, lm.use_any_network, lm.max_vm_migrations) == (
        "CredSSP",
        "TCPIP",
        True,
        4,
    )
    io = lab.run(cmd("Set-VMHost"))
    assert io.errors[0].message.startswith("No changes were made to the host because no parameters were specified.")
    assert io.errors[0].fully_qualified_error_id == "InvalidOperation,Microsoft.HyperV.PowerShell.Commands.SetVMHost"


def test_enable_disable_migration_and_networks() -> None:
    lab = Lab()
    lab.run(cmd("Disable-VMMigration"))
    assert lab.world.hosts["HV01"].live_migration.enabled is False
    lab.run(cmd("Enable-VMMigration"))
    assert lab.world.hosts["HV01"].live_migration.enabled is True
    lab.run(cmd("Add-VMMigrationNetwork", Subnet="10.0.20.0/24", Priority=3))
    nets = lab.run(cmd("Get-VMMigrationNetwork")).output
    assert [(prop(n, "Subnet"), prop(n, "Priority")) for n in nets] == [("10.0.10.0/24", 5), ("10.0.20.0/24", 3)]
    assert nets[0].PSObject.type_names[0] == f"{HV}.VMMigrationNetwork"
    lab.run(cmd("Remove-VMMigrationNetwork", "10.0.20.0/24"))
    io = lab.run(cmd("Get-VMMigrationNetwork", Subnet="10.0.20.0/24"))
    assert io.output == []
    assert io.errors[0].message.startswith("Windows cannot find the specified subnet in the list of subnets allowed")


def test_switches_adapters_dvd_vhd_snapshots() -> None:
    lab = Lab()
    (switch,) = lab.run(cmd("Get-VMSwitch")).output
    assert prop(switch, "SwitchType").name == "External"
    assert int(prop(switch, "SwitchType")) == 2
    io = lab.run(cmd("Get-VMSwitch", "Backup"))
    assert io.errors[0].message == 'Hyper-V was unable to find a virtual switch with name "Backup".'
    (adapter,) = lab.run(cmd("Get-VMNetworkAdapter", "web01")).output
    assert prop(adapter, "SwitchName") == "Production"
    assert prop(adapter, "VMName") == "web01"
    assert prop(adapter, "Id").startswith("Microsoft:")
    assert (
        lab.run(cmd("Get-VMNetworkAdapter", ManagementOS=SWITCH)).output[0].PSObject.type_names[0]
        == f"{HV}.VMInternalNetworkAdapter"
    )
    (dvd,) = lab.run(cmd("Get-VMDvdDrive", VMName="web01")).output
    assert prop(dvd, "DvdMediaType").name == "ISO"
    assert prop(dvd, "Path") == r"D:\ISO\tools.iso"
    lab.run(
        CommandSpec(
            "Set-VMDvdDrive", (ParameterSpecNamed("VMName", "web01"), ParameterSpecNamed("Path", None, switch=True))
        )
    )
    (dvd,) = lab.run(cmd("Get-VMDvdDrive", VMName="web01")).output
    assert str(prop(dvd, "DvdMediaType")) == "DvdMediaTypeEnum.none"
    assert prop(dvd, "Path") is None
    (vhd,) = lab.run(cmd("Get-VHD", Path=r"d:\hyper-v\WEB01\web01.vhdx")).output
    assert vhd.PSObject.type_names[0] == "Microsoft.Vhd.PowerShell.VirtualHardDisk"
    assert prop(vhd, "VhdFormat").name == "VHDX"
    assert prop(vhd, "Size") == 40 * 1024**3
    assert prop(vhd, "FileSize") == 10 * 1024**3
    (snap,) = lab.run(cmd("Get-VMSnapshot", VMName="web01")).output
    assert prop(snap, "Name") == "before-patch"
    assert snap.PSObject.type_names[0] == f"{HV}.VMSnapshot"


def ParameterSpecNamed(name: str, value: object, switch: bool = False):
    from lab.commands import ParameterSpec

    return ParameterSpec(name, True if switch else value, is_switch=switch)


def test_remove_vm_removes_a_planned_vm() -> None:
    lab = Lab()
    host = lab.world.hosts["HV02"]
    source_vm = lab.world.hosts["HV01"].find_vm("web01")
    assert source_vm is not None
    import dataclasses

    planned = dataclasses.replace(source_vm, planned=True, id=uuid.uuid4(), adapters=[], disks=[], dvd_drives=[])
    host.vms[planned.id] = planned
    for file in planned.state_files:
        host.add_file(file, 1024)
    (listed,) = lab.run(cmd("Get-VM", "web01"), host="HV02").output
    assert prop(listed, "VirtualMachineType").name == "PlannedVirtualMachine"
    lab.run(cmd("Remove-VM", "web01", Force=SWITCH), host="HV02")
    assert planned.id not in host.vms
    assert not any(host.has_file(f) for f in planned.state_files)
    io = lab.run(cmd("Remove-VM", "web01", Force=SWITCH))
    assert (
        io.errors[0].message == "The operation cannot be performed while the virtual machine is in its current state."
    )
