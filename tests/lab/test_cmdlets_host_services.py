"""CIM classes, firewall, bindings, SMB, volumes, files, connectivity, klist and the cluster cmdlets."""

from __future__ import annotations

from psrpcore.types import PSUInt64

from lab.commands import ErrorCategory
from lab.faults import FaultInjector
from tests.lab.test_cmdlets_support import SWITCH, Lab, cmd, prop

CIM = "Microsoft.Management.Infrastructure.CimInstance"
FC = "Microsoft.FailoverClusters.PowerShell"


def test_win32_classes() -> None:
    lab = Lab()
    cpus = lab.run(cmd("Get-CimInstance", "Win32_Processor")).output
    assert len(cpus) == 2
    assert prop(cpus[0], "Manufacturer") == "GenuineIntel"
    assert cpus[0].PSObject.type_names[0] == f"{CIM}#root/cimv2/Win32_Processor"
    (cs,) = lab.run(cmd("Get-CimInstance", ClassName="Win32_ComputerSystem")).output
    assert (prop(cs, "Domain"), prop(cs, "PartOfDomain"), prop(cs, "Name")) == ("lab.test", True, "HV01")
    assert isinstance(prop(cs, "TotalPhysicalMemory"), PSUInt64)
    (os_,) = lab.run(cmd("Get-CimInstance", "Win32_OperatingSystem")).output
    assert prop(os_, "Caption") == "Microsoft Windows Server 2022 Datacenter"
    assert prop(os_, "Version") == "10.0.20348"
    io = lab.run(cmd("Get-CimInstance", "Win32_Nothing"))
    assert io.errors[0].fully_qualified_error_id == (
        "HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand"
    )
    assert lab.run(cmd("Get-CimInstance", "Msvm_MigrationJob", Namespace="root/virtualization/v2")).output == []


def test_firewall_rules() -> None:
    lab = Lab()
    (rule,) = lab.run(cmd("Get-NetFirewallRule", DisplayName="Hyper-V (MIG-TCP-In)")).output
    assert prop(rule, "Name") == "VIRT-MIGL-In-TCP-NoScope"
    assert int(prop(rule, "Enabled")) == 1
    assert rule.PSObject.type_names[0] == f"{CIM}#root/StandardCimv2/MSFT_NetFirewallRule"
    assert len(lab.run(cmd("Get-NetFirewallRule", DisplayGroup="Hyper-V")).output) == 2
    io = lab.run(cmd("Get-NetFirewallRule", Name="Nope"))
    assert io.errors[0].fully_qualified_error_id == "CmdletizationQuery_NotFound_Name,Get-NetFirewallRule"
    assert io.errors[0].category == ErrorCategory.ObjectNotFound
    lab.world.hosts["HV02"].firewall_rules[0].enabled = False
    io = lab.run(cmd("Test-NetConnection", ComputerName="HV02", Port=6600))
    assert prop(io.output[0], "TcpTestSucceeded") is False
    assert io.warnings == ["TCP connect to (10.0.10.12 : 6600) failed"]
    assert io.errors == []
    lab.run(cmd("Enable-NetFirewallRule", Name="VIRT-MIGL-In-TCP-NoScope"), host="HV02")
    io = lab.run(cmd("Test-NetConnection", "HV02", Port=6600))
    assert prop(io.output[0], "TcpTestSucceeded") is True
    assert io.warnings == []
    assert io.output[0].PSObject.type_names[0] == "TestNetConnectionResult"


def test_partition_fails_connectivity() -> None:
    lab = Lab(faults=True)
    assert isinstance(lab.faults, FaultInjector)
    lab.faults.partition("HV01", "HV02", 600)
    io = lab.run(cmd("Test-NetConnection", "HV02", Port=6600))
    assert prop(io.output[0], "TcpTestSucceeded") is False
    assert prop(io.output[0], "PingSucceeded") is False
    assert io.warnings[-1] == "Ping to 10.0.10.12 failed with status: TimedOut"
    assert lab.run(cmd("Test-Connection", "HV02", Count=1, Quiet=SWITCH)).output == [False]
    assert lab.run(cmd("Test-Connection", "HV01", Count=1, Quiet=SWITCH)).output == [True]


def test_bindings_smb_volume() -> None:
    lab = Lab()
    lab.world.hosts["HV01"].nics[0].bindings["ms_server"] = False
    rows = lab.run(cmd("Get-NetAdapterBinding", Name="LM", ComponentID=["ms_server"])).output
    assert [(prop(r, "ComponentID"), prop(r, "Enabled")) for r in rows] == [("ms_server", False)]
    lab.run(cmd("Enable-NetAdapterBinding", Name="LM", ComponentID="ms_server"))
    assert lab.world.hosts["HV01"].nics[0].bindings["ms_server"] is True
    (smb,) = lab.run(cmd("Get-SmbServerConfiguration")).output
    assert prop(smb, "EnableSMB2Protocol") is True
    (vol,) = lab.run(cmd("Get-Volume", DriveLetter="D")).output
    assert prop(vol, "FileSystemLabel") == "VMs"
    assert int(prop(vol, "Size")) == 2000 * 1024**3
    assert int(prop(vol, "SizeRemaining")) == lab.world.hosts["HV01"].free_space("D")
    io = lab.run(cmd("Get-Volume", "Z"))
    assert io.errors[0].fully_qualified_error_id == "CmdletizationQuery_NotFound_DriveLetter,Get-Volume"


def test_test_path_and_remove_item() -> None:
    lab = Lab()
    host = lab.world.hosts["HV02"]
    host.add_file(r"D:\VMs\web01\Virtual Hard Disks\web01.vhdx", 1024, partial=True)
    assert lab.run(cmd("Test-Path", r"D:\VMs\web01"), host="HV02").output == [True]
    assert lab.run(
        cmd("Test-Path", Path=[r"D:\VMs\web01\Virtual Hard Disks\web01.vhdx", r"D:\nope"]), host="HV02"
    ).output == [True, False]
    io = lab.run(cmd("Remove-Item", r"D:\VMs\web01"), host="HV02")
    assert io.errors[0].message.startswith(r"The item at D:\VMs\web01 has children")
    lab.run(cmd("Remove-Item", r"D:\VMs\web01", Recurse=SWITCH, Force=SWITCH), host="HV02")
    assert lab.run(cmd("Test-Path", r"D:\VMs\web01"), host="HV02").output == [False]
    io = lab.run(cmd("Remove-Item", r"D:\VMs\web01"), host="HV02")
    assert io.errors[0].message == r"Cannot find path 'D:\VMs\web01' because it does not exist."
    assert io.errors[0].fully_qualified_error_id == "PathNotFound,Microsoft.PowerShell.Commands.RemoveItemCommand"
    io = lab.run(cmd("Remove-Item", r"D:\Hyper-V\web01\web01.vhdx"))
    assert (
        io.errors[0].fully_qualified_error_id
        == "RemoveFileSystemItemIOError,Microsoft.PowerShell.Commands.RemoveItemCommand"
    )
    assert lab.world.hosts["HV01"].has_file(r"D:\Hyper-V\web01\web01.vhdx")


def test_klist_purge() -> None:
    lab = Lab()
    host = lab.world.hosts["HV01"]
    host.ticket_cache["HV01"] = frozenset()
    host.ticket_cache_time = 1.0
    io = lab.run(cmd("klist", "purge", "-li", "0x3e7"))
    assert io.output[0] == ""
    assert io.output[2:] == [
        "Targeted LogonId is 0:0x3e7",
        "\tDeleting all tickets:",
        "\tTicket(s) purged!",
    ]
    assert host.ticket_cache == {}
    assert host.ticket_cache_time is None


def test_cluster_role_removal_and_restore() -> None:
    lab = Lab()
    (group,) = lab.run(cmd("Get-ClusterGroup", "db01"), host="HV03").output
    assert group.PSObject.type_names[0] == f"{FC}.ClusterGroup"
    assert str(prop(group, "OwnerNode")) == "HV03"
    assert prop(group, "State").name == "Online"
    assert prop(group, "GroupType").name == "VirtualMachine"
    assert int(prop(group, "GroupType")) == 111
    (owners,) = lab.run(cmd("Get-ClusterOwnerNode", Group="db01"), host="HV03").output
    assert [str(n) for n in prop(owners, "OwnerNodes")] == ["HV03"]
    io = lab.run(cmd("Get-ClusterGroup", "ghost"), host="HV03")
    assert io.errors[0].fully_qualified_error_id == f"ClusterCmdletException,{FC}.GetClusterGroupCommand"
    assert io.errors[0].category == ErrorCategory.ObjectNotFound
    lab.run(cmd("Remove-ClusterGroup", "db01", RemoveResources=SWITCH, Force=SWITCH), host="HV03")
    vm = lab.world.hosts["HV03"].find_vm("db01")
    assert vm is not None
    assert vm.is_clustered is False
    assert "db01" not in lab.world.clusters["CL01"].groups
    (restored,) = lab.run(cmd("Add-ClusterVirtualMachineRole", VMName="db01", Cluster="CL01"), host="HV04").output
    assert prop(restored, "Name") == "db01"
    assert vm.is_clustered is True
    lab.run(cmd("Set-ClusterOwnerNode", Group="db01", Owners=["HV03", "HV04"]), host="HV03")
    assert lab.world.clusters["CL01"].groups["db01"].preferred_owners == ["HV03", "HV04"]
    io = lab.run(cmd("Get-Cluster"))
    assert io.errors[0].fully_qualified_error_id == f"ClusterEndpointNotRegistered,{FC}.GetClusterCommand"
    assert io.errors[0].category == ErrorCategory.ConnectionError
    (cluster,) = lab.run(cmd("Get-Cluster"), host="HV03").output
    assert prop(cluster, "Name") == "CL01"
