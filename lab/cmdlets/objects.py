"""Builders: lab model records → the objects a real host returns (fidelity catalogue section 1).

Every builder gives the real .NET type-name chain, the real property names and .NET types (Int64 as
PSInt64, UInt32 as PSUInt, ...), the .NET properties as adapted properties (`<Props>`) and the
type-data (ps1xml) members as extended ones (`<MS>`), enums as enum objects. Nested Hyper-V objects
(NetworkAdapters, HardDrives, DVDDrives) are sent as their ToString text, as the default remoting
serialization depth of 1 does (catalogue 1.0, [U]).

Callers hold `world.lock` while building from live records.
"""

from __future__ import annotations

import ntpath
import uuid
from datetime import datetime, timedelta
from typing import Any

from psrpcore.types import PSInt64, PSObject, PSUInt, PSUInt16, PSUInt64

from lab.cmdlets.psobj import (
    FC,
    HV,
    CheckpointTypeEnum,
    ClusterGroupStateEnum,
    ClusterNodeDrainStatusEnum,
    ClusterNodeStateEnum,
    ControllerTypeEnum,
    CriticalErrorActionEnum,
    DvdMediaTypeEnum,
    EnhancedSessionTransportTypeEnum,
    GroupTypeEnum,
    MigrationAuthenticationTypeEnum,
    OnOffStateEnum,
    OperationTypeEnum,
    Props,
    StartActionEnum,
    StopActionEnum,
    VhdFormatEnum,
    VhdTypeEnum,
    VirtualMachineSubTypeEnum,
    VirtualMachineTypeEnum,
    VMHeartbeatStatusEnum,
    VMMigrationPerformanceEnum,
    VMOperationalStatusEnum,
    VMReplicationHealthStateEnum,
    VMReplicationModeEnum,
    VMReplicationStateEnum,
    VMStateEnum,
    VMSwitchBandwidthModeEnum,
    VMSwitchTypeEnum,
    make_object,
    ps_array,
)
from lab.model.migration import Incompatibility, JobState, MigrationJob
from lab.model.state import (
    MIB,
    Cluster,
    ClusterGroup,
    DvdDrive,
    FirewallRule,
    HardDisk,
    Host,
    HostNic,
    MigrationNetwork,
    NetworkAdapter,
    VirtualMachine,
    VirtualSwitch,
    VMState,
)

ZERO_GUID = uuid.UUID(int=0)
CIM = "Microsoft.Management.Infrastructure.CimInstance"
CIM_SESSION_TEXT = "CimSession: ."  # a local CimSession's ToString, as depth-1 serialization leaves it
# VMProcessor's device id in every real capture (MFD): Microsoft:<VMID>\b637f346-...\0
PROCESSOR_DEVICE = "b637f346-6a0e-4dec-af52-bd70cb80a21d"
HARD_DRIVE_DEVICE = "83F8638B-8DCA-4152-9EDA-2CA8B33039B4"  # Msvm_ResourceAllocationSettingData, LAB-OWN
DVD_DRIVE_DEVICE = "D422512D-2BF2-4752-809D-7B82B5FCB1B4"  # LAB-OWN
MEMORY_DEVICE = "4764334D-E001-4176-82EE-5594EC9B530E"  # LAB-OWN

VM_CHAIN = [
    f"{HV}.VirtualMachine",
    f"{HV}.VirtualMachineBase",
    f"{HV}.ComputeResource",
    f"{HV}.VirtualizationObject",
    "System.Object",
]
DEVICE_TAIL = [f"{HV}.VMDevice", f"{HV}.VMComponentObject", f"{HV}.VirtualizationObject", "System.Object"]


def _guid_upper(value: uuid.UUID) -> str:
    return str(value).upper()


# --- Hyper-V ----------------------------------------------------------------------------------------------
def vm_status(vm: VirtualMachine, migrating: bool) -> tuple[str, list[VMOperationalStatusEnum]]:
    if migrating:
        # "Migrating virtual machine" is what a real host showed during a move (MCZ, azure-docs PR #85995).
        return "Migrating virtual machine", [
            VMOperationalStatusEnum.Ok,
            VMOperationalStatusEnum.MigratingVirtualMachine,
        ]
    if vm.backup_in_progress:
        return "Backing up", [VMOperationalStatusEnum.Ok, VMOperationalStatusEnum.BackingUpVirtualMachine]
    return "Operating normally", [VMOperationalStatusEnum.Ok]


def virtual_machine(
    vm: VirtualMachine,
    host: Host,
    now: datetime,
    *,
    migrating: bool = False,
    computer_name: str | None = None,
    heartbeat: str | None = None,
    only: frozenset[str] | None = None,
) -> PSObject:
    """Get-VM → Microsoft.HyperV.PowerShell.VirtualMachine (catalogue 1.1); `only` (lowercase names): just those
    properties, for a Select-Object that keeps no others (an estate's hosts list every VM for each preflight).

    A planned VM (what a failed move leaves on a destination) is listed by the lab's Get-VM with
    VirtualMachineType PlannedVirtualMachine and State Off, so an orchestrator can find and remove it (LAB
    decision: whether a real Get-VM lists planned VMs is unverified; os-win reads them from WMI)."""
    state = VMStateEnum.Off if vm.planned else VMStateEnum(int(vm.state))
    running = vm.state == VMState.Running and not vm.planned
    status, operational = vm_status(vm, migrating)
    descriptions = ["Operating normally"] + ([status] if status != "Operating normally" else [])
    uptime = (now - vm.started_at) if running and vm.started_at else timedelta(0)
    memory = vm.memory_assigned if not vm.planned else 0
    dynamic = vm.dynamic_memory
    guest: Any = None
    if running and heartbeat:
        guest = VMHeartbeatStatusEnum[heartbeat]
    elif running:
        guest = VMHeartbeatStatusEnum.OkApplicationsHealthy if vm.guest_answers else VMHeartbeatStatusEnum.NoContact
    parent = vm.checkpoints[-1] if vm.checkpoints else None
    adapters = [network_adapter_text(vm, a) for a in vm.adapters]
    drives = [hard_drive_text(vm, d) for d in vm.disks]
    dvds = [dvd_drive_text(vm, d) for d in vm.dvd_drives]
    adapted: Props = [
        ("ConfigurationLocation", vm.path),
        ("SmartPagingFileInUse", False),
        ("SmartPagingFilePath", vm.path),
        ("SnapshotFileLocation", vm.path),
        ("AutomaticStartAction", StartActionEnum.StartIfRunning),
        ("AutomaticStartDelay", 0),
        ("AutomaticStopAction", StopActionEnum.Save),
        ("AutomaticCriticalErrorAction", CriticalErrorActionEnum.Pause),
        ("AutomaticCriticalErrorActionTimeout", 30),
        ("AutomaticCheckpointsEnabled", True),
        ("CPUUsage", 3 if running else 0),
        ("MemoryAssigned", PSInt64(memory)),
        ("MemoryDemand", PSInt64(memory * 6 // 10)),
        ("MemoryStatus", "OK" if dynamic and running else ""),
        ("NumaAligned", None),
        ("NumaNodesCount", 1),
        ("NumaSocketCount", 1),
        ("Heartbeat", guest),
        ("IntegrationServicesState", "Up to date" if running else ""),
        ("IntegrationServicesVersion", None),
        ("Uptime", uptime),
        ("OperationalStatus", ps_array(operational, f"{HV}.VMOperationalStatus")),
        ("PrimaryOperationalStatus", operational[0]),
        ("SecondaryOperationalStatus", operational[1] if len(operational) > 1 else None),
        ("StatusDescriptions", ps_array(descriptions, "System.String")),
        ("PrimaryStatusDescription", "Operating normally"),
        ("SecondaryStatusDescription", status if len(operational) > 1 else None),
        ("Status", status),
        ("ReplicationHealth", VMReplicationHealthStateEnum.NotApplicable),
        ("ReplicationMode", VMReplicationModeEnum.none),
        ("ReplicationState", VMReplicationStateEnum.Disabled),
        ("ResourceMeteringEnabled", False),
        ("CheckpointType", CheckpointTypeEnum.Production),
        ("EnhancedSessionTransportType", EnhancedSessionTransportTypeEnum.VMBus),
        ("Groups", ps_array([], f"{HV}.VMGroup")),
        ("Version", vm.version),
        (
            "VirtualMachineType",
            VirtualMachineTypeEnum.PlannedVirtualMachine
            if vm.planned
            else VirtualMachineTypeEnum.RealizedVirtualMachine,
        ),
        ("VirtualMachineSubType", VirtualMachineSubTypeEnum(vm.generation)),
        ("Notes", vm.notes),
        ("State", state),
        ("ComPort1", None),
        ("ComPort2", None),
        ("DVDDrives", ps_array(dvds, "System.String")),
        ("FibreChannelHostBusAdapters", ps_array([], "System.String")),
        ("FloppyDrive", None),
        ("HardDrives", ps_array(drives, "System.String")),
        ("RemoteFxAdapter", None),
        ("VMIntegrationService", ps_array([], "System.String")),
        ("DynamicMemoryEnabled", dynamic),
        ("MemoryMaximum", PSInt64(1024 * 1024 * MIB if dynamic else vm.memory_startup)),
        ("MemoryMinimum", PSInt64(512 * MIB if dynamic else vm.memory_startup)),
        ("MemoryStartup", PSInt64(vm.memory_startup)),
        ("ProcessorCount", PSInt64(vm.processor_count)),
        ("BatteryPassthroughEnabled", False),
        ("Generation", vm.generation),
        ("IsClustered", vm.is_clustered),
        ("ParentSnapshotId", parent.id if parent else None),
        ("ParentSnapshotName", parent.name if parent else None),
        ("Path", vm.path),
        ("SizeOfSystemFiles", PSInt64(64 * 1024 + 2 * MIB)),
        ("GuestControlledCacheTypes", False),
        ("LowMemoryMappedIoSpace", PSUInt(128 * MIB)),
        ("HighMemoryMappedIoSpace", PSUInt64(512 * MIB)),
        ("LockOnDisconnect", OnOffStateEnum.Off),
        ("CreationTime", vm.created_at or now),
        ("Id", vm.id),
        ("Name", vm.name),
        ("NetworkAdapters", ps_array(adapters, "System.String")),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", computer_name or host.name),
        ("IsDeleted", False),
    ]
    extended: Props = [
        ("VMName", vm.name),
        ("VMId", vm.id),
        ("CheckpointFileLocation", vm.path),
        ("ParentCheckpointId", parent.id if parent else None),
        ("ParentCheckpointName", parent.name if parent else None),
    ]
    if only is not None:
        adapted = [(name, value) for name, value in adapted if name.lower() in only]
        extended = [(name, value) for name, value in extended if name.lower() in only]
    return make_object(VM_CHAIN, adapted, extended, f"VirtualMachine (Name = '{vm.name}') [Id = '{vm.id}']")


def vm_host(host: Host, cluster: Cluster | None = None) -> PSObject:
    """Get-VMHost → Microsoft.HyperV.PowerShell.VMHost (catalogue 1.2)."""
    lm = host.live_migration
    use_any = lm.use_any_network
    adapted: Props = [
        ("ComputerName", host.name),
        ("LogicalProcessorCount", host.cpu.logical_processors),
        ("ResourceMeteringSaveInterval", timedelta(hours=1)),
        ("HostNumaStatus", ps_array([], "System.String")),
        ("NumaStatus", ps_array([], "System.String")),
        ("IovSupport", False),
        ("IovSupportReasons", ps_array(["The chipset on the system does not do DMA remapping."], "System.String")),
        (
            "InternalNetworkAdapters",
            ps_array([s.name for s in host.switches if s.switch_type.value != 0], "System.String"),
        ),
        ("ExternalNetworkAdapters", ps_array([n.name for n in host.nics], "System.String")),
        ("SupportedVmVersions", ps_array(host.os.supported_vm_versions, "System.String")),
        ("SecureBootTemplates", ps_array(["MicrosoftWindows", "MicrosoftUEFICertificateAuthority"], "System.String")),
        ("EnableEnhancedSessionMode", False),
        ("FibreChannelWwnn", "C003FF0000FFFF00"),
        ("FibreChannelWwpnMaximumDefault", "C003FF7F0D45FFFF"),
        ("FibreChannelWwpnMinimumDefault", "C003FF7F0D450000"),
        ("MacAddressMaximum", "00155D0AFFFF"),
        ("MacAddressMinimum", "00155D0A0000"),
        ("NumaSpanningEnabled", True),
        ("MaximumStorageMigrations", PSUInt(lm.max_storage_migrations)),
        ("MaximumVirtualMachineMigrations", PSUInt(lm.max_vm_migrations)),
        ("UseAnyNetworkForMigration", use_any),
        ("VirtualMachineMigrationAuthenticationType", MigrationAuthenticationTypeEnum(int(lm.authentication))),
        ("VirtualMachineMigrationEnabled", lm.enabled),
        ("VirtualMachineMigrationPerformanceOption", VMMigrationPerformanceEnum(int(lm.performance))),
        ("FullyQualifiedDomainName", host.domain),  # NEON VMHost.cs: Win32_ComputerSystem.Domain (catalogue 1.2)
        ("MemoryCapacity", PSInt64(host.memory_capacity)),
        ("Name", host.name),
        ("VirtualHardDiskPath", host.virtual_hard_disk_path),
        ("VirtualMachinePath", host.virtual_machine_path),
        ("CimSession", CIM_SESSION_TEXT),
        ("IsDeleted", False),
    ]
    return make_object(
        [f"{HV}.VMHost", f"{HV}.VirtualizationObject", "System.Object"], adapted, [], f"VMHost (Name = '{host.name}')"
    )


def migration_network(host: Host, network: MigrationNetwork) -> PSObject:
    adapted: Props = [
        ("Subnet", network.subnet),
        ("Priority", network.priority),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]
    return make_object(
        [f"{HV}.VMMigrationNetwork", f"{HV}.VirtualizationObject", "System.Object"], adapted, [], network.subnet
    )


def vm_switch(host: Host, switch: VirtualSwitch) -> PSObject:
    """Get-VMSwitch → Microsoft.HyperV.PowerShell.VMSwitch (catalogue 1.4)."""
    external = switch.switch_type.value == 2
    adapted: Props = [
        ("Name", switch.name),
        ("Id", switch.id),
        ("Notes", ""),
        ("Extensions", ps_array([], f"{HV}.VMSwitchExtension")),
        ("BandwidthReservationMode", VMSwitchBandwidthModeEnum.Absolute),
        ("PacketDirectEnabled", False),
        ("EmbeddedTeamingEnabled", False),
        ("IovEnabled", False),
        ("SwitchType", VMSwitchTypeEnum(int(switch.switch_type))),
        ("AllowManagementOS", switch.switch_type.value != 0),
        ("NetAdapterInterfaceDescription", switch.net_adapter_description if external else None),
        (
            "NetAdapterInterfaceDescriptions",
            ps_array([switch.net_adapter_description] if external else [], "System.String"),
        ),
        ("NetAdapterInterfaceGuid", ps_array([], "System.Guid")),
        ("IovSupport", False),
        ("IovSupportReasons", ps_array([], "System.String")),
        ("AvailableIPSecSA", PSUInt(0)),
        ("NumberIPSecSAAllocated", PSUInt(0)),
        ("AvailableVMQueues", PSUInt(0)),
        ("NumberVmqAllocated", PSUInt(0)),
        ("IovQueuePairCount", PSUInt(0)),
        ("IovQueuePairsInUse", PSUInt(0)),
        ("IovVirtualFunctionCount", PSUInt(0)),
        ("IovVirtualFunctionsInUse", PSUInt(0)),
        ("PacketDirectInUse", False),
        ("DefaultQueueVrssEnabled", False),
        ("DefaultQueueVmmqEnabled", False),
        ("DefaultQueueVrssMaxQueuePairs", PSUInt(16)),
        ("DefaultQueueVrssMinQueuePairs", PSUInt(1)),
        ("DefaultQueueVmmqQueuePairs", PSUInt(16)),
        ("SoftwareRscEnabled", True),
        ("BandwidthPercentage", PSUInt(0)),
        ("DefaultFlowMinimumBandwidthAbsolute", PSUInt64(0)),
        ("DefaultFlowMinimumBandwidthWeight", PSUInt64(0)),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]
    return make_object(
        [f"{HV}.VMSwitch", f"{HV}.VirtualizationObject", "System.Object"],
        adapted,
        [],
        f"VMSwitch (Name = '{switch.name}') [Id = '{switch.id}']",
    )


def network_adapter_text(vm: VirtualMachine, adapter: NetworkAdapter) -> str:
    return f"VMNetworkAdapter (Name = '{adapter.name}', VMName = '{vm.name}') [VMId = '{vm.id}']"


def network_adapter(host: Host, vm: VirtualMachine, adapter: NetworkAdapter) -> PSObject:
    """Get-VMNetworkAdapter → Microsoft.HyperV.PowerShell.VMNetworkAdapter (catalogue 1.5)."""
    switch = host.switch(adapter.switch_name) if adapter.switch_name else None
    adapted: Props = [
        ("ClusterMonitored", True),
        ("MacAddress", adapter.mac_address),
        ("DynamicMacAddressEnabled", True),
        ("AllowPacketDirect", False),
        ("IsLegacy", False),
        ("IsSynthetic", True),
        ("IPAddresses", ps_array(adapter.ip_addresses if vm.state == VMState.Running else [], "System.String")),
        ("DeviceNaming", OnOffStateEnum.Off),
        ("IovWeight", PSUInt(0)),
        ("IovQueuePairsRequested", PSUInt(1)),
        ("IovInterruptModeration", None),
        ("PacketDirectNumProcs", PSUInt(0)),
        ("PacketDirectModerationCount", PSUInt(64)),
        ("PacketDirectModerationInterval", PSUInt(1000000)),
        ("VrssEnabledRequested", True),
        ("VmmqEnabledRequested", True),
        ("VmmqQueuePairsRequested", PSUInt(16)),
        ("VMQWeight", PSUInt(100)),
        ("MacAddressSpoofing", OnOffStateEnum.Off),
        ("AllowTeaming", OnOffStateEnum.Off),
        ("RouterGuard", OnOffStateEnum.Off),
        ("DhcpGuard", OnOffStateEnum.Off),
        ("IeeePriorityTag", OnOffStateEnum.Off),
        ("FixSpeed10G", OnOffStateEnum.Off),
        ("PoolName", ""),
        ("Connected", switch is not None),
        ("SwitchName", adapter.switch_name),
        ("AdapterId", str(adapter.id).upper()),
        ("StatusDescription", ps_array(["OK"] if vm.state == VMState.Running else [], "System.String")),
        ("MediaType", "Ethernet"),
        ("BandwidthPercentage", PSUInt(0)),
        ("IsManagementOs", False),
        ("IsExternalAdapter", False),
        ("Id", f"Microsoft:{_guid_upper(vm.id)}\\{_guid_upper(adapter.id)}"),
        ("SwitchId", switch.id if switch else None),
        ("Name", adapter.name),
        ("VMId", vm.id),
        ("VMName", vm.name),
        ("VMSnapshotId", ZERO_GUID),
        ("VMSnapshotName", ""),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]
    chain = [f"{HV}.VMNetworkAdapter", f"{HV}.VMNetworkAdapterBase", *DEVICE_TAIL]
    extended: Props = [("VMCheckpointId", ZERO_GUID), ("VMCheckpointName", "")]
    return make_object(chain, adapted, extended, network_adapter_text(vm, adapter))


def management_os_adapter(host: Host, switch: VirtualSwitch) -> PSObject:
    """Get-VMNetworkAdapter -ManagementOS → VMInternalNetworkAdapter: one per switch shared with the host."""
    device_id = _guid_upper(uuid.uuid5(switch.id, "internal-adapter"))
    adapted: Props = [
        ("DeviceId", f"Microsoft:{device_id}"),
        ("IsManagementOs", True),
        ("IsExternalAdapter", False),
        ("Name", switch.name),
        ("Id", f"Microsoft:{device_id}"),
        ("SwitchName", switch.name),
        ("SwitchId", switch.id),
        ("Connected", True),
        ("MacAddress", "00155D0A" + device_id[:4]),
        ("DynamicMacAddressEnabled", True),
        ("StatusDescription", ps_array(["OK"], "System.String")),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]
    chain = [
        f"{HV}.VMInternalNetworkAdapter",
        f"{HV}.VMInternalOrExternalNetworkAdapter",
        f"{HV}.VMNetworkAdapterBase",
        *DEVICE_TAIL,
    ]
    return make_object(chain, adapted, [], f"VMInternalNetworkAdapter (Name = '{switch.name}')")


def _drive_name(kind: str, controller_type: Any, number: int, location: int) -> str:
    return f"{kind} on {controller_type.name} controller number {number} at location {location}"


def hard_drive_text(vm: VirtualMachine, disk: HardDisk) -> str:
    name = _drive_name("Hard Drive", disk.controller_type, disk.controller_number, disk.controller_location)
    return f"HardDiskDrive (Name = '{name}', VMName = '{vm.name}') [VMId = '{vm.id}']"


def hard_disk_drive(host: Host, vm: VirtualMachine, disk: HardDisk) -> PSObject:
    """Get-VMHardDiskDrive → Microsoft.HyperV.PowerShell.HardDiskDrive (catalogue 1.6)."""
    name = _drive_name("Hard Drive", disk.controller_type, disk.controller_number, disk.controller_location)
    adapted: Props = [
        ("Path", disk.path),
        ("DiskNumber", disk.disk_number),
        ("MaximumIOPS", PSUInt64(0)),
        ("MinimumIOPS", PSUInt64(0)),
        ("QoSPolicyID", ZERO_GUID),
        ("SupportPersistentReservations", False),
        ("WriteHardeningMethod", None),
        *_drive_base(host, vm, disk, name, HARD_DRIVE_DEVICE),
    ]
    chain = [f"{HV}.HardDiskDrive", f"{HV}.Drive", f"{HV}.DriveBase", *DEVICE_TAIL]
    extended: Props = [("VMCheckpointId", ZERO_GUID), ("VMCheckpointName", "")]
    return make_object(chain, adapted, extended, hard_drive_text(vm, disk))


def _drive_base(host: Host, vm: VirtualMachine, drive: HardDisk | DvdDrive, name: str, device: str) -> Props:
    """The properties HardDiskDrive and DvdDrive inherit from DriveBase and VMDevice (catalogue 1.6, 1.9)."""
    return [
        ("ControllerLocation", drive.controller_location),
        ("ControllerNumber", drive.controller_number),
        ("ControllerType", ControllerTypeEnum(int(drive.controller_type))),
        ("Name", name),
        ("PoolName", "Primordial"),
        (
            "Id",
            f"Microsoft:{_guid_upper(vm.id)}\\{device}\\{drive.controller_number}\\{drive.controller_location}\\D",
        ),
        ("VMId", vm.id),
        ("VMName", vm.name),
        ("VMSnapshotId", ZERO_GUID),
        ("VMSnapshotName", ""),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]


def dvd_drive_text(vm: VirtualMachine, drive: DvdDrive) -> str:
    name = _drive_name("DVD Drive", drive.controller_type, drive.controller_number, drive.controller_location)
    return f"DvdDrive (Name = '{name}', VMName = '{vm.name}') [VMId = '{vm.id}']"


def dvd_drive(host: Host, vm: VirtualMachine, drive: DvdDrive) -> PSObject:
    """Get-VMDvdDrive → Microsoft.HyperV.PowerShell.DvdDrive (catalogue 1.9)."""
    name = _drive_name("DVD Drive", drive.controller_type, drive.controller_number, drive.controller_location)
    adapted: Props = [
        ("DvdMediaType", DvdMediaTypeEnum.ISO if drive.path else DvdMediaTypeEnum.none),
        ("Path", drive.path),
        *_drive_base(host, vm, drive, name, DVD_DRIVE_DEVICE),
    ]
    chain = [f"{HV}.DvdDrive", f"{HV}.Drive", f"{HV}.DriveBase", *DEVICE_TAIL]
    extended: Props = [("VMCheckpointId", ZERO_GUID), ("VMCheckpointName", "")]
    return make_object(chain, adapted, extended, dvd_drive_text(vm, drive))


def vm_processor(host: Host, vm: VirtualMachine) -> PSObject:
    """Get-VMProcessor → Microsoft.HyperV.PowerShell.VMProcessor (catalogue 1.8, the MFD capture)."""
    adapted: Props = [
        ("ResourcePoolName", "Primordial"),
        ("Count", PSInt64(vm.processor_count)),
        ("CompatibilityForMigrationEnabled", vm.processor_compatibility),
        ("CompatibilityForOlderOperatingSystemsEnabled", False),
        ("HwThreadCountPerCore", PSInt64(0)),
        ("ExposeVirtualizationExtensions", False),
        ("EnablePerfmonPmu", False),
        ("EnablePerfmonLbr", False),
        ("EnablePerfmonPebs", False),
        ("EnablePerfmonIpt", False),
        ("EnableLegacyApicMode", False),
        ("AllowACountMCount", True),
        ("CpuBrandString", ""),
        ("PerfCpuFreqCapMhz", PSUInt(0)),
        ("Maximum", PSInt64(100)),
        ("Reserve", PSInt64(0)),
        ("RelativeWeight", 100),
        ("MaximumCountPerNumaNode", PSInt64(host.cpu.cores_per_socket * host.cpu.threads_per_core)),
        ("MaximumCountPerNumaSocket", PSInt64(1)),
        ("EnableHostResourceProtection", False),
        ("StatusDescription", ps_array(["OK", "Host resource protection is disabled."], "System.String")),
        ("Name", "Processor"),
        ("Id", f"Microsoft:{_guid_upper(vm.id)}\\{PROCESSOR_DEVICE}\\0"),
        ("VMId", vm.id),
        ("VMName", vm.name),
        ("VMSnapshotId", ZERO_GUID),
        ("VMSnapshotName", ""),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]
    extended: Props = [("VMCheckpointId", ZERO_GUID), ("VMCheckpointName", "")]
    return make_object(
        [f"{HV}.VMProcessor", *DEVICE_TAIL], adapted, extended, f"VMProcessor (VMName = '{vm.name}') [VMId = '{vm.id}']"
    )


def virtual_hard_disk(host: Host, disk: HardDisk, attached: bool) -> PSObject:
    """Get-VHD → Microsoft.Vhd.PowerShell.VirtualHardDisk (catalogue 1.7)."""
    extension = ntpath.splitext(disk.path)[1].lower()
    fmt = {".vhdx": VhdFormatEnum.VHDX, ".vhd": VhdFormatEnum.VHD, ".vhds": VhdFormatEnum.VHDSet}.get(
        extension, VhdFormatEnum.Unknown
    )
    vhd_type = VhdTypeEnum(int(disk.vhd_type))
    adapted: Props = [
        ("ComputerName", host.name),
        ("Path", disk.path),
        ("VhdFormat", fmt),
        ("VhdType", vhd_type),
        ("FileSize", PSUInt64(disk.file_size)),
        ("Size", PSUInt64(disk.size)),
        ("MinimumSize", PSUInt64(disk.size)),
        ("LogicalSectorSize", PSUInt(512)),
        ("PhysicalSectorSize", PSUInt(4096)),
        ("BlockSize", PSUInt(0 if vhd_type == VhdTypeEnum.Fixed else 32 * MIB)),
        ("ParentPath", disk.parent_path if vhd_type == VhdTypeEnum.Differencing else None),
        ("DiskIdentifier", _guid_upper(uuid.uuid5(uuid.NAMESPACE_URL, disk.path.lower()))),
        ("FragmentationPercentage", PSUInt(0)),
        ("Alignment", PSUInt(1)),
        ("Attached", attached),
        ("DiskNumber", None),
        ("IsPMEMCompatible", False),
    ]
    return make_object(["Microsoft.Vhd.PowerShell.VirtualHardDisk", "System.Object"], adapted, [], disk.path)


def vm_snapshot(host: Host, vm: VirtualMachine, index: int) -> PSObject:
    checkpoint = vm.checkpoints[index]
    parent = vm.checkpoints[index - 1] if index > 0 else None
    adapted: Props = [
        ("Name", checkpoint.name),
        ("Id", checkpoint.id),
        ("VMName", vm.name),
        ("VMId", vm.id),
        ("State", VMStateEnum.Off),
        ("CreationTime", checkpoint.created),
        ("ParentSnapshotId", parent.id if parent else None),
        ("ParentSnapshotName", parent.name if parent else None),
        ("Path", vm.path),
        ("Notes", ""),
        ("Generation", vm.generation),
        ("Version", vm.version),
        ("IsDeleted", False),
        ("ComputerName", host.name),
    ]
    chain = [
        f"{HV}.VMSnapshot",
        f"{HV}.VirtualMachineBase",
        f"{HV}.ComputeResource",
        f"{HV}.VirtualizationObject",
        "System.Object",
    ]
    extended: Props = [
        ("VMCheckpointId", checkpoint.id),
        ("ParentCheckpointId", parent.id if parent else None),
        ("ParentCheckpointName", parent.name if parent else None),
    ]
    return make_object(chain, adapted, extended, f"VMSnapshot (Name = '{checkpoint.name}', VMName = '{vm.name}')")


def compatibility_report(
    vm_object: PSObject,
    operation: OperationTypeEnum,
    destination: str,
    incompatibilities: list[PSObject],
    *,
    path: str | None = None,
    snapshot_path: str | None = None,
    vhd_destination_path: str | None = None,
    vhd_source_path: str | None = None,
) -> PSObject:
    """Compare-VM → Microsoft.HyperV.PowerShell.VMCompatibilityReport (catalogue 1.10)."""
    adapted: Props = [
        ("VM", vm_object),
        ("OperationType", operation),
        ("Destination", destination),
        ("Path", path),
        ("SnapshotPath", snapshot_path),
        ("VhdDestinationPath", vhd_destination_path),
        ("VhdSourcePath", vhd_source_path),
        ("Incompatibilities", ps_array(incompatibilities, f"{HV}.VMCompatibilityError")),
    ]
    return make_object([f"{HV}.VMCompatibilityReport", "System.Object"], adapted, [], f"{HV}.VMCompatibilityReport")


def vm_memory(host: Host, vm: VirtualMachine) -> PSObject:
    """Microsoft.HyperV.PowerShell.VMMemory (STUB-HV property names), as the Source of a memory finding."""
    adapted: Props = [
        ("ResourcePoolName", "Primordial"),
        ("Buffer", 20),
        ("DynamicMemoryEnabled", vm.dynamic_memory),
        ("Maximum", PSInt64(1024**4 if vm.dynamic_memory else vm.memory_startup)),
        ("MaximumPerNumaNode", PSInt64(host.memory_capacity)),
        ("Minimum", PSInt64(512 * 1024**2 if vm.dynamic_memory else vm.memory_startup)),
        ("Priority", 50),
        ("Startup", PSInt64(vm.memory_startup)),
        ("Name", "Memory"),
        ("Id", f"Microsoft:{_guid_upper(vm.id)}\\{MEMORY_DEVICE}"),
        ("VMId", vm.id),
        ("VMName", vm.name),
        ("VMSnapshotId", ZERO_GUID),
        ("VMSnapshotName", ""),
        ("CimSession", CIM_SESSION_TEXT),
        ("ComputerName", host.name),
        ("IsDeleted", False),
    ]
    extended: Props = [("VMCheckpointId", ZERO_GUID), ("VMCheckpointName", "")]
    return make_object(
        [f"{HV}.VMMemory", *DEVICE_TAIL], adapted, extended, f"VMMemory (VMName = '{vm.name}') [VMId = '{vm.id}']"
    )


def compatibility_error(item: Incompatibility, source: Any) -> PSObject:
    adapted: Props = [("Message", item.message), ("MessageId", PSInt64(item.message_id)), ("Source", source)]
    return make_object([f"{HV}.VMCompatibilityError", "System.Object"], adapted, [], item.message)


def vm_job(
    job_id: int,
    instance_id: uuid.UUID,
    host: Host,
    command: str,
    state: str,
    status_message: str,
    begin: datetime,
) -> PSObject:
    """Move-VM -AsJob → Microsoft.HyperV.PowerShell.Commands.VmJob (catalogue 3)."""
    adapted: Props = [
        ("HasMoreData", True),
        ("StatusMessage", status_message),
        ("Location", host.name),
        ("Command", command),
        ("JobStateInfo", state),
        ("Finished", "System.Threading.ManualResetEvent"),
        ("InstanceId", instance_id),
        ("Id", job_id),
        ("Name", f"Job{job_id}"),
        ("ChildJobs", ps_array([], "System.Management.Automation.Job")),
        ("PSBeginTime", begin),
        ("PSEndTime", None),
        ("PSJobTypeName", None),
        ("Output", ps_array([], "System.Management.Automation.PSObject")),
        ("Error", ps_array([], "System.Management.Automation.ErrorRecord")),
        ("Progress", ps_array([], "System.Management.Automation.ProgressRecord")),
        ("Verbose", ps_array([], "System.Management.Automation.VerboseRecord")),
        ("Debug", ps_array([], "System.Management.Automation.DebugRecord")),
        ("Warning", ps_array([], "System.Management.Automation.WarningRecord")),
        ("Information", ps_array([], "System.Management.Automation.InformationRecord")),
    ]
    # `State` is a types.ps1xml script property of Job ($this.JobStateInfo.State.ToString()).
    extended: Props = [("State", state)]
    chain = ["Microsoft.HyperV.PowerShell.Commands.VmJob", "System.Management.Automation.Job", "System.Object"]
    return make_object(chain, adapted, extended, "Microsoft.HyperV.PowerShell.Commands.VmJob")


# --- CIM --------------------------------------------------------------------------------------------------
def cim_instance(
    namespace: str, classes: list[str], props: Props, computer: str | None, key: tuple[str, Any] | None = None
) -> PSObject:
    """A CimInstance as remoting serializes it: `CimInstance#<namespace>/<class>` for the class and each of its
    superclasses, the CIM properties adapted, PSComputerName in the member set."""
    chain = [f"{CIM}#{namespace}/{c}" for c in classes] + [CIM, "System.Object"]
    to_string = f'{classes[0]} ({key[0]} = "{key[1]}")' if key else classes[0]
    return make_object(chain, props, [("PSComputerName", computer)], to_string)


def win32_processors(host: Host) -> list[PSObject]:
    cpu = host.cpu
    out = []
    for socket in range(cpu.sockets):
        props: Props = [
            ("Caption", f"{'Intel64' if cpu.manufacturer == 'GenuineIntel' else 'AMD64'} Family 6 Model 85 Stepping 7"),
            (
                "Description",
                "Intel64 Family 6 Model 85 Stepping 7"
                if cpu.manufacturer == "GenuineIntel"
                else "AMD64 Family 25 Model 1 Stepping 1",
            ),
            ("Name", cpu.model),
            ("Status", "OK"),
            ("DeviceID", f"CPU{socket}"),
            ("SystemName", host.name),
            ("Architecture", PSUInt16(9)),
            ("Manufacturer", cpu.manufacturer),
            ("MaxClockSpeed", PSUInt(2600)),
            ("CurrentClockSpeed", PSUInt(2600)),
            ("NumberOfCores", PSUInt(cpu.cores_per_socket)),
            ("NumberOfEnabledCore", PSUInt(cpu.cores_per_socket)),
            ("NumberOfLogicalProcessors", PSUInt(cpu.cores_per_socket * cpu.threads_per_core)),
            ("ThreadCount", PSUInt(cpu.cores_per_socket * cpu.threads_per_core)),
            ("SocketDesignation", f"CPU{socket + 1}"),
            ("VirtualizationFirmwareEnabled", True),
            ("SecondLevelAddressTranslationExtensions", True),
            ("VMMonitorModeExtensions", True),
        ]
        out.append(
            cim_instance(
                "root/cimv2",
                [
                    "Win32_Processor",
                    "CIM_Processor",
                    "CIM_LogicalDevice",
                    "CIM_LogicalElement",
                    "CIM_ManagedSystemElement",
                ],
                props,
                None,
                ("DeviceID", f"CPU{socket}"),
            )
        )
    return out


def win32_computer_system(host: Host) -> PSObject:
    props: Props = [
        ("Name", host.name),
        ("Domain", host.domain),
        ("PartOfDomain", True),
        ("DNSHostName", host.name.lower()),
        ("Workgroup", None),
        ("DomainRole", PSUInt16(3)),  # Member Server
        ("Manufacturer", "Lab"),
        ("Model", "Simulated Hyper-V host"),
        ("NumberOfProcessors", PSUInt(host.cpu.sockets)),
        ("NumberOfLogicalProcessors", PSUInt(host.cpu.logical_processors)),
        ("TotalPhysicalMemory", PSUInt64(host.memory_capacity)),
        ("HypervisorPresent", True),
        ("Status", "OK"),
    ]
    chain = [
        "Win32_ComputerSystem",
        "CIM_UnitaryComputerSystem",
        "CIM_ComputerSystem",
        "CIM_System",
        "CIM_LogicalElement",
        "CIM_ManagedSystemElement",
    ]
    return cim_instance("root/cimv2", chain, props, None, ("Name", host.name))


def win32_operating_system(host: Host, now: datetime) -> PSObject:
    free_kb = host.memory_available() // 1024
    props: Props = [
        ("Caption", host.os.caption),
        ("Version", host.os.build),
        ("BuildNumber", host.os.build.rsplit(".", 1)[-1]),
        ("CSName", host.name),
        ("OSArchitecture", "64-bit"),
        ("FreePhysicalMemory", PSUInt64(free_kb)),
        ("TotalVisibleMemorySize", PSUInt64(host.memory_capacity // 1024)),
        ("LastBootUpTime", now - timedelta(days=10)),
        ("LocalDateTime", now),
        ("Status", "OK"),
    ]
    chain = ["Win32_OperatingSystem", "CIM_OperatingSystem", "CIM_LogicalElement", "CIM_ManagedSystemElement"]
    return cim_instance(
        "root/cimv2", chain, props, None, ("Name", f"{host.os.caption}|C:\\Windows|\\Device\\Harddisk0\\Partition2")
    )


MIGRATION_JOB_CHAIN = [
    "Msvm_MigrationJob",
    "Msvm_ConcreteJob",
    "CIM_ConcreteJob",
    "CIM_Job",
    "CIM_LogicalElement",
    "CIM_ManagedSystemElement",
    "CIM_ManagedElement",
]


def migration_job(job: MigrationJob, now: datetime) -> PSObject:
    """Msvm_MigrationJob (catalogue 1.11): every key property of the MOF, values as a real host shows them."""
    failed = job.state == JobState.Exception or (job.finished and job.error_code != 0)
    end = job.end_time or now
    elapsed = (end - job.start_time) if job.start_time else timedelta(0)
    props: Props = [
        ("InstanceID", job.instance_id),
        ("Caption", job.element_name),
        ("Description", job.element_name),
        ("ElementName", job.element_name),
        ("InstallDate", None),
        ("Name", job.element_name),
        ("OperationalStatus", ps_array([PSUInt16(6 if failed else 2)], "System.UInt16")),
        ("StatusDescriptions", ps_array(["Error" if failed else "OK"], "System.String")),
        ("Status", "Error" if failed else "OK"),
        ("HealthState", PSUInt16(20 if failed else 5)),
        ("CommunicationStatus", None),
        ("DetailedStatus", None),
        ("OperatingStatus", None),
        ("PrimaryStatus", None),
        ("JobStatus", job.job_status),
        ("TimeSubmitted", job.time_submitted),
        ("ScheduledStartTime", None),
        ("StartTime", job.start_time),
        ("ElapsedTime", elapsed),
        ("JobRunTimes", PSUInt(1)),
        ("RunMonth", None),
        ("RunDay", None),
        ("RunDayOfWeek", None),
        ("RunStartInterval", None),
        ("LocalOrUtcTime", PSUInt16(2)),
        ("UntilTime", None),
        ("Notify", None),
        ("Owner", job.owner),
        ("Priority", PSUInt(0)),
        ("PercentComplete", PSUInt16(job.percent_complete)),
        ("DeleteOnCompletion", False),
        ("ErrorCode", PSUInt16(job.error_code)),
        ("ErrorDescription", job.error_description),
        ("ErrorSummaryDescription", job.error_summary),
        ("RecoveryAction", PSUInt16(3)),
        ("OtherRecoveryAction", None),
        ("JobState", PSUInt16(int(job.state))),
        ("TimeOfLastStateChange", job.end_time or job.start_time or job.time_submitted),
        ("TimeBeforeRemoval", timedelta(minutes=5)),
        ("Cancellable", job.cancellable and not job.finished),
        ("MigrationType", PSUInt16(int(job.migration_type))),
        ("VirtualSystemName", str(job.vm_id).upper()),
        ("DestinationHost", job.destination),
        ("NewSystemSettingData", None),
        ("NewResourceSettingData", None),
        ("JobType", PSUInt16(job.job_type)),
    ]
    return cim_instance("root/virtualization/v2", MIGRATION_JOB_CHAIN, props, None, ("InstanceID", job.instance_id))


def migration_service(host: Host, jobs: list[MigrationJob]) -> PSObject:
    active = [j for j in jobs if not j.finished]
    vs = sum(1 for j in active if j.migration_type.name != "Storage")
    storage = sum(1 for j in active if j.migration_type.name in ("Storage", "VirtualSystemAndStorage"))
    props: Props = [
        ("Caption", "Virtual System Migration Service"),
        ("Description", "Microsoft Virtual System Migration Service"),
        ("ElementName", "Virtual System Migration Service"),
        ("Name", "vsms"),
        ("CreationClassName", "Msvm_VirtualSystemMigrationService"),
        ("SystemCreationClassName", "Msvm_ComputerSystem"),
        ("SystemName", host.name),
        ("EnabledState", PSUInt16(2)),
        ("HealthState", PSUInt16(5)),
        ("Started", True),
        ("ActiveVirtualSystemMigrationCount", PSUInt(vs)),
        ("ActiveStorageMigrationCount", PSUInt(storage)),
        ("MigrationServiceListenerIPAddressList", ps_array([n.ip for n in host.nics], "System.String")),
    ]
    chain = [
        "Msvm_VirtualSystemMigrationService",
        "CIM_VirtualSystemMigrationService",
        "CIM_Service",
        "CIM_EnabledLogicalElement",
        "CIM_LogicalElement",
        "CIM_ManagedSystemElement",
        "CIM_ManagedElement",
    ]
    return cim_instance("root/virtualization/v2", chain, props, None, ("Name", "vsms"))


def migration_service_setting_data(host: Host) -> PSObject:
    lm = host.live_migration
    props: Props = [
        ("InstanceID", "Microsoft:MigrationServiceSettingData"),
        ("ElementName", "Microsoft Virtual System Migration Service Setting Data"),
        ("EnableVirtualSystemMigration", lm.enabled),
        ("AuthenticationType", PSUInt(int(lm.authentication))),
        ("EnableCompression", lm.performance.name == "Compression"),
        ("EnableSmbTransport", lm.performance.name == "SMB"),
        ("MaximumActiveVirtualSystemMigration", PSUInt(lm.max_vm_migrations)),
        ("MaximumActiveStorageMigration", PSUInt(lm.max_storage_migrations)),
    ]
    chain = ["Msvm_VirtualSystemMigrationServiceSettingData", "CIM_SettingData", "CIM_ManagedElement"]
    return cim_instance(
        "root/virtualization/v2", chain, props, None, ("InstanceID", "Microsoft:MigrationServiceSettingData")
    )


def cim_method_result(return_value: int) -> PSObject:
    """Invoke-CimMethod output: ReturnValue (UInt32) and the method's out parameters (LAB shape, [U])."""
    adapted: Props = [("ReturnValue", PSUInt(return_value)), ("Job", None)]
    chain = [
        "Microsoft.Management.Infrastructure.CimMethodResult",
        "Microsoft.Management.Infrastructure.CimMethodResultBase",
        "System.Object",
    ]
    return make_object(
        chain, adapted, [("PSComputerName", None)], "Microsoft.Management.Infrastructure.CimMethodResult"
    )


def firewall_rule(rule: FirewallRule) -> PSObject:
    """Get-NetFirewallRule → MSFT_NetFirewallRule (catalogue 1.13): CIM encodings, Enabled 1 True / 2 False."""
    props: Props = [
        ("Name", rule.name),
        ("ID", rule.name),
        ("InstanceID", rule.name),
        ("DisplayName", rule.display_name),
        ("Description", rule.description),
        ("DisplayGroup", rule.group),
        ("Group", "@%systemroot%\\system32\\vmms.exe,-2001" if rule.group == "Hyper-V" else rule.group),
        ("Enabled", PSUInt16(1 if rule.enabled else 2)),
        ("Profiles", PSUInt16(0)),
        ("Direction", PSUInt16(rule.direction)),
        ("Action", PSUInt16(rule.action)),
        ("EdgeTraversalPolicy", PSUInt16(0)),
        ("PrimaryStatus", PSUInt16(1)),
        ("Status", "The rule was parsed successfully from the store. (65536)"),
        ("EnforcementStatus", PSUInt16(0)),
        ("PolicyStoreSource", "PersistentStore"),
        ("PolicyStoreSourceType", PSUInt16(1)),
        ("Owner", None),
    ]
    return cim_instance("root/StandardCimv2", ["MSFT_NetFirewallRule"], props, None, ("InstanceID", rule.name))


BINDING_NAMES = {
    "ms_msclient": "Client for Microsoft Networks",
    "ms_server": "File and Printer Sharing for Microsoft Networks",
    "ms_tcpip": "Internet Protocol Version 4 (TCP/IPv4)",
    "ms_tcpip6": "Internet Protocol Version 6 (TCP/IPv6)",
}


def net_adapter_binding(host: Host, nic: HostNic, component: str, enabled: bool) -> PSObject:
    props: Props = [
        ("Name", nic.name),
        ("InterfaceDescription", f"{nic.name} Adapter"),
        ("DisplayName", BINDING_NAMES.get(component, component)),
        ("ComponentID", component),
        ("Enabled", enabled),
        ("BindName", component.upper()),
        ("ComponentClassName", None),
        ("Caption", None),
        ("Description", None),
        ("ElementName", None),
        ("InstanceID", f"{{{_guid_upper(uuid.uuid5(uuid.NAMESPACE_URL, host.name + nic.name))}}}::{component}"),
        ("SystemName", host.fqdn),
    ]
    return cim_instance("ROOT/StandardCimv2", ["MSFT_NetAdapterBindingSettingData"], props, None, ("Name", nic.name))


def smb_server_configuration(host: Host) -> PSObject:
    props: Props = [
        ("AnnounceServer", False),
        ("AuditSmb1Access", False),
        ("EnableMultiChannel", True),
        ("EnableSMB1Protocol", False),
        ("EnableSMB2Protocol", host.smb2_enabled),
        ("EnableSecuritySignature", False),
        ("EncryptData", False),
        ("RejectUnencryptedAccess", True),
        ("RequireSecuritySignature", False),
        ("ServerHidden", True),
        ("EnableSMBQUIC", True),
    ]
    return cim_instance("ROOT/Microsoft/Windows/SMB", ["MSFT_SmbServerConfiguration"], props, None)


def volume(host: Host, drive: str) -> PSObject:
    vol = host.volumes[drive]
    props: Props = [
        ("DriveLetter", vol.drive),
        ("FileSystemLabel", vol.label),
        ("FileSystem", "NTFS"),
        ("FileSystemType", PSUInt16(14)),
        ("DriveType", PSUInt(3)),
        ("HealthStatus", PSUInt16(0)),
        ("OperationalStatus", ps_array([PSUInt16(2)], "System.UInt16")),
        ("Size", PSUInt64(vol.size)),
        ("SizeRemaining", PSUInt64(host.free_space(vol.drive))),
        ("Path", f"\\\\?\\Volume{{{uuid.uuid5(uuid.NAMESPACE_URL, host.name + vol.drive)}}}\\"),
        (
            "ObjectId",
            f'{{1}}\\\\{host.name}\\root/Microsoft/Windows/Storage/Providers_v2\\WSP_Volume.ObjectId="{vol.drive}"',
        ),
    ]
    return cim_instance(
        "ROOT/Microsoft/Windows/Storage", ["MSFT_Volume", "MSFT_StorageObject"], props, None, ("ObjectId", vol.drive)
    )


def test_net_connection_result(
    computer: str, remote_address: str | None, port: int, source: HostNic, ping: bool, tcp: bool
) -> PSObject:
    """Test-NetConnection → TestNetConnectionResult (catalogue 1.16; the type name is [U])."""
    props: Props = [
        ("ComputerName", computer),
        ("RemoteAddress", remote_address),
        ("RemotePort", PSUInt(port)),
        ("InterfaceAlias", source.name),
        ("SourceAddress", source.ip),
        ("NameResolutionSucceeded", remote_address is not None),
        ("PingSucceeded", ping),
        ("PingReplyDetails", None),
        ("TcpTestSucceeded", tcp),
        ("NetworkIsolationContext", "Private Network"),
        ("IsAdmin", True),
    ]
    return make_object(["TestNetConnectionResult", "System.Object"], props, [], "TestNetConnectionResult")


# --- Failover clustering (catalogue 1.12) -----------------------------------------------------------------
def cluster(c: Cluster, domain: str) -> PSObject:
    props: Props = [
        ("Name", c.name),
        ("Domain", domain),
        ("Id", str(uuid.uuid5(uuid.NAMESPACE_URL, "cluster:" + c.name))),
        ("MaximumParallelMigrations", PSUInt(c.max_parallel_migrations)),
        ("SharedVolumesRoot", c.csv_root),
    ]
    return make_object([f"{FC}.Cluster", "System.Object"], props, [], c.name)


def cluster_node(c: Cluster, node: str, world_hosts: dict[str, Host]) -> PSObject:
    host = world_hosts.get(node)
    build = host.os.build.rsplit(".", 1)[-1] if host else "0"
    props: Props = [
        ("Name", node),
        ("NodeName", node),
        ("Id", str(c.nodes.index(node) + 1)),
        ("State", ClusterNodeStateEnum.Up if c.service_running else ClusterNodeStateEnum.Down),
        ("DrainStatus", ClusterNodeDrainStatusEnum.NotInitiated),
        ("NodeWeight", PSUInt(1)),
        ("DynamicWeight", PSUInt(1)),
        ("BuildNumber", PSUInt(int(build))),
        ("MajorVersion", PSUInt(10)),
        ("MinorVersion", PSUInt(0)),
        ("Cluster", c.name),
    ]
    return make_object([f"{FC}.ClusterNode", "System.Object"], props, [], node)


def cluster_group(c: Cluster, group: ClusterGroup, world_hosts: dict[str, Host]) -> PSObject:
    props: Props = [
        ("Name", group.name),
        ("OwnerNode", cluster_node(c, group.owner_node, world_hosts)),
        ("State", ClusterGroupStateEnum(int(group.state))),
        ("GroupType", GroupTypeEnum(group.group_type) if group.group_type in (1, 2, 111) else PSUInt(group.group_type)),
        ("Id", str(group.id)),
        ("Cluster", c.name),
        ("Description", ""),
        ("IsCoreGroup", False),
        ("Priority", PSUInt(group.priority)),
        ("DefaultOwner", PSUInt(4294967295)),
        ("AutoFailbackType", PSUInt(group.auto_failback_type)),
        ("FailoverThreshold", PSUInt(group.failover_threshold)),
        ("FailoverPeriod", PSUInt(group.failover_period)),
        ("FailbackWindowStart", PSUInt(4294967295)),
        ("FailbackWindowEnd", PSUInt(4294967295)),
        ("PersistentState", PSUInt(1)),
        ("AntiAffinityClassNames", ps_array(group.anti_affinity_class_names, "System.String")),
        ("StatusInformation", PSUInt64(0)),
    ]
    return make_object([f"{FC}.ClusterGroup", "System.Object"], props, [], group.name)


def cluster_owner_node_list(cluster_object: PSObject, owners: list[PSObject]) -> PSObject:
    props: Props = [("ClusterObject", cluster_object), ("OwnerNodes", ps_array(owners, f"{FC}.ClusterNode"))]
    return make_object([f"{FC}.ClusterOwnerNodeList", "System.Object"], props, [], str(cluster_object))
