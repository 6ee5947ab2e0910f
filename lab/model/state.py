"""The lab's world: hosts, virtual machines, disks, switches, clusters, as mutable state.

These are the lab's own records, not what goes on the wire: `lab.cmdlets` turns them into the objects a
real host returns (`Microsoft.HyperV.PowerShell.VirtualMachine`, ...). Every mutation happens under
`World.lock`. Sizes are bytes; times are simulated (see `lab.model.clock`).
"""

from __future__ import annotations

import enum
import ntpath
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from lab.model.clock import LabClock

if TYPE_CHECKING:
    from lab.model.directory import Directory

GIB = 1024**3
MIB = 1024**2


class OsVersion(enum.StrEnum):
    """Windows Server releases the lab models; the value is how topology files name them."""

    WS2012 = "2012"
    WS2012R2 = "2012R2"
    WS2016 = "2016"
    WS2019 = "2019"
    WS2022 = "2022"
    WS2025 = "2025"

    @property
    def caption(self) -> str:
        """Win32_OperatingSystem.Caption."""
        name = {"2012R2": "2012 R2"}.get(self.value, self.value)
        return f"Microsoft Windows Server {name} Datacenter"

    @property
    def build(self) -> str:
        """Win32_OperatingSystem.Version."""
        return {
            "2012": "6.2.9200",
            "2012R2": "6.3.9600",
            "2016": "10.0.14393",
            "2019": "10.0.17763",
            "2022": "10.0.20348",
            "2025": "10.0.26100",
        }[self.value]

    @property
    def max_vm_version(self) -> float:
        """Highest VM configuration version the release runs (Get-VMHostSupportedVersion)."""
        return {"2012": 4.0, "2012R2": 5.0, "2016": 8.0, "2019": 9.0, "2022": 10.0, "2025": 12.0}[self.value]

    @property
    def supported_vm_versions(self) -> tuple[str, ...]:
        table = {
            "2012": ("4.0",),
            "2012R2": ("5.0",),
            "2016": ("5.0", "6.2", "7.0", "7.1", "8.0"),
            "2019": ("5.0", "6.2", "7.0", "7.1", "8.0", "8.1", "8.2", "8.3", "9.0"),
            "2022": ("5.0", "6.2", "7.0", "7.1", "8.0", "8.1", "8.2", "8.3", "9.0", "9.1", "9.2", "9.3", "10.0"),
            "2025": (
                "8.0",
                "8.1",
                "8.2",
                "8.3",
                "9.0",
                "9.1",
                "9.2",
                "9.3",
                "10.0",
                "11.0",
                "12.0",
            ),
        }
        return table[self.value]

    @property
    def is_2016_or_later(self) -> bool:
        return self not in (OsVersion.WS2012, OsVersion.WS2012R2)


class VMState(enum.IntEnum):
    """Microsoft.HyperV.PowerShell.VMState (fidelity catalogue section 4)."""

    Other = 1
    Running = 2
    Off = 3
    Stopping = 4
    Saved = 6
    Paused = 9
    Starting = 10
    Reset = 11
    Saving = 32773
    Pausing = 32776
    Resuming = 32777


class MigrationAuthenticationType(enum.IntEnum):
    CredSSP = 0
    Kerberos = 1


class VMMigrationPerformance(enum.IntEnum):
    TCPIP = 0
    Compression = 1
    SMB = 2


class SwitchType(enum.IntEnum):
    Private = 0
    Internal = 1
    External = 2


class ControllerType(enum.IntEnum):
    IDE = 0
    SCSI = 1
    PMEM = 2


class VhdType(enum.IntEnum):
    Unknown = 0
    Fixed = 2
    Dynamic = 3
    Differencing = 4


class VhdFormat(enum.IntEnum):
    Unknown = 0
    VHD = 2
    VHDX = 3
    VHDSet = 4


class ClusterGroupState(enum.IntEnum):
    Unknown = -1
    Online = 0
    Offline = 1
    Failed = 2
    PartialOnline = 3
    Pending = 4


def norm_path(path: str) -> str:
    """Windows paths compare case-insensitively and with either slash."""
    return ntpath.normcase(ntpath.normpath(path))


def stable_guid(*parts: str) -> uuid.UUID:
    """A GUID derived from names, so the same topology always yields the same ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "snlm-lab:" + "/".join(p.lower() for p in parts))


@dataclass
class Cpu:
    manufacturer: str  # Win32_Processor.Manufacturer: "GenuineIntel" or "AuthenticAMD"
    model: str  # Win32_Processor.Name
    sockets: int = 2
    cores_per_socket: int = 16
    threads_per_core: int = 2

    @property
    def logical_processors(self) -> int:
        return self.sockets * self.cores_per_socket * self.threads_per_core


@dataclass
class Volume:
    drive: str  # "D"
    label: str
    size: int
    # Bytes used by things the lab does not model as files (the OS, other data): fixed at load time so
    # that free space follows the VM files the lab adds and removes.
    other_used: int = 0


@dataclass
class VirtualSwitch:
    name: str
    switch_type: SwitchType = SwitchType.External
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    net_adapter_description: str = ""


@dataclass
class HostNic:
    """A physical adapter of the management OS: migration traffic crosses it."""

    name: str
    ip: str
    prefix_length: int = 24
    bandwidth_bps: int = 10 * 10**9
    # Get-NetAdapterBinding component ids -> enabled. Real hosts bind both by default.
    bindings: dict[str, bool] = field(default_factory=lambda: {"ms_msclient": True, "ms_server": True})
    # Ethernet is full duplex: the adapter sends `bandwidth_bps` and receives `bandwidth_bps` at once. A
    # half-duplex adapter (or a link modelled as one shared figure) carries both directions in one budget.
    full_duplex: bool = True


@dataclass(frozen=True)
class TransferSettings:
    """The lab-wide constants of the transfer model (lab/README.md "The transfer model"); the topology's
    `lab.transfer` sets them.

    `tcp_stream_fraction`: one live-migration TCP connection (the TCPIP and Compression options) carries at
    most this fraction of the slower of its two adapters. `smb_stream_fraction`: the same for what goes over
    SMB (the SMB option's memory, every storage move's VHDs), which SMB Multichannel spreads over several
    connections. `setup_seconds`: from admission to the first byte (connection, authentication,
    compatibility checks, the planned VM). `switchover_seconds`: after the last byte, the VM paused while the
    destination takes it over.
    """

    tcp_stream_fraction: float = 0.7
    smb_stream_fraction: float = 1.0
    setup_seconds: float = 4.0
    switchover_seconds: float = 2.0


@dataclass
class MigrationNetwork:
    subnet: str  # "10.10.10.0/24"
    priority: int


@dataclass
class LiveMigrationSettings:
    """Get-VMHost's live-migration properties, with Hyper-V's real defaults (reference/hyperv-facts.md)."""

    enabled: bool = False
    authentication: MigrationAuthenticationType = MigrationAuthenticationType.CredSSP
    performance: VMMigrationPerformance = VMMigrationPerformance.Compression
    use_any_network: bool = False
    networks: list[MigrationNetwork] = field(default_factory=list)
    max_vm_migrations: int = 2
    max_storage_migrations: int = 2


@dataclass
class FirewallRule:
    name: str  # InstanceID, e.g. VIRT-MIGL-In-TCP-NoScope
    display_name: str
    group: str
    description: str
    enabled: bool
    local_port: str
    protocol: str = "TCP"
    direction: int = 1  # Inbound
    action: int = 2  # Allow


@dataclass
class FileEntry:
    """A file on a host's volume; the lab tracks only the VM files and ISOs it needs."""

    path: str
    size: int
    partial: bool = False  # a VHDX a failed storage move left half-copied


@dataclass
class NetworkAdapter:
    name: str
    switch_name: str | None
    mac_address: str
    ip_addresses: list[str] = field(default_factory=list)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class HardDisk:
    """A VM's hard disk drive: a VHD(X) file, or a pass-through physical disk when `disk_number` is set."""

    path: str  # the VHDX path; for a pass-through disk the physical drive's friendly name
    size: int  # virtual size
    file_size: int  # bytes on disk
    controller_type: ControllerType = ControllerType.SCSI
    controller_number: int = 0
    controller_location: int = 0
    vhd_type: VhdType = VhdType.Dynamic
    disk_number: int | None = None
    parent_path: str | None = None

    @property
    def is_passthrough(self) -> bool:
        return self.disk_number is not None


@dataclass
class DvdDrive:
    path: str | None  # ISO path, or None when empty
    controller_type: ControllerType = ControllerType.SCSI
    controller_number: int = 0
    controller_location: int = 1


@dataclass
class Checkpoint:
    name: str
    id: uuid.UUID
    created: datetime


@dataclass
class VirtualMachine:
    name: str
    id: uuid.UUID
    state: VMState
    generation: int
    version: str  # configuration version, "9.0"
    processor_count: int
    memory_startup: int
    dynamic_memory: bool
    path: str  # the VM's configuration folder, e.g. D:\Hyper-V\web01
    adapters: list[NetworkAdapter] = field(default_factory=list)
    disks: list[HardDisk] = field(default_factory=list)
    dvd_drives: list[DvdDrive] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    processor_compatibility: bool = False
    backup_in_progress: bool = False
    is_clustered: bool = False
    # Memory the guest dirties while it runs, bytes per simulated second: it drives the pre-copy passes.
    dirty_rate: int = 20 * MIB
    # A planned VM is what a failed or interrupted move leaves on the destination (VirtualMachineType 4).
    planned: bool = False
    guest_answers: bool = True
    started_at: datetime | None = None
    created_at: datetime | None = None
    notes: str = ""

    @property
    def memory_assigned(self) -> int:
        return self.memory_startup if self.state == VMState.Running else 0

    @property
    def config_file(self) -> str:
        return ntpath.join(self.path, "Virtual Machines", f"{str(self.id).upper()}.vmcx")

    @property
    def state_files(self) -> list[str]:
        """The configuration and runtime files that move with the VM (config, runtime state)."""
        base = ntpath.join(self.path, "Virtual Machines", str(self.id).upper())
        return [self.config_file, base + ".vmgs", base + ".VMRS"]

    def vhd_paths(self) -> list[str]:
        return [d.path for d in self.disks if not d.is_passthrough]


@dataclass
class ClusterGroup:
    """A cluster role (Get-ClusterGroup); for a VM role the group name is the VM's name."""

    name: str
    vm_id: uuid.UUID | None
    owner_node: str
    state: ClusterGroupState = ClusterGroupState.Online
    group_type: int = 111  # VirtualMachine
    priority: int = 2000  # Medium
    preferred_owners: list[str] = field(default_factory=list)
    anti_affinity_class_names: list[str] = field(default_factory=list)
    failover_threshold: int = 4294967295
    failover_period: int = 6
    auto_failback_type: int = 0
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class Cluster:
    name: str
    nodes: list[str]
    max_parallel_migrations: int = 1
    groups: dict[str, ClusterGroup] = field(default_factory=dict)  # key: group name, lower case
    csv_root: str = r"C:\ClusterStorage"
    service_running: bool = True


@dataclass
class Host:
    name: str  # NetBIOS name, e.g. HV01
    fqdn: str
    domain: str
    os: OsVersion
    cpu: Cpu
    memory_capacity: int
    memory_reserved: int  # what the management OS keeps for itself
    volumes: dict[str, Volume]  # key: drive letter, upper case
    switches: list[VirtualSwitch]
    nics: list[HostNic]
    live_migration: LiveMigrationSettings
    firewall_rules: list[FirewallRule]
    smb2_enabled: bool = True
    virtual_machine_path: str = r"C:\ProgramData\Microsoft\Windows\Hyper-V"
    virtual_hard_disk_path: str = r"C:\Users\Public\Documents\Hyper-V\Virtual Hard Disks"
    cluster: str | None = None
    vms: dict[uuid.UUID, VirtualMachine] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)  # key: norm_path(path)
    # The Kerberos view of the directory the host's machine account last fetched (see lab.model.directory).
    ticket_cache_time: float | None = None
    ticket_cache: dict[str, frozenset[str]] = field(default_factory=dict)
    ticket_cache_transition: dict[str, bool] = field(default_factory=dict)
    # userAccountControl of the cached accounts: NOT_DELEGATED and TRUSTED_FOR_DELEGATION matter too.
    ticket_cache_uac: dict[str, int] = field(default_factory=dict)
    vmms_restarts: int = 0

    # -- files and space --------------------------------------------------------------------------
    def add_file(self, path: str, size: int, *, partial: bool = False) -> None:
        self.files[norm_path(path)] = FileEntry(path=path, size=size, partial=partial)

    def remove_file(self, path: str) -> FileEntry | None:
        return self.files.pop(norm_path(path), None)

    def has_file(self, path: str) -> bool:
        return norm_path(path) in self.files

    def has_folder(self, path: str) -> bool:
        prefix = norm_path(path).rstrip("\\") + "\\"
        return any(key.startswith(prefix) for key in self.files) or norm_path(path) in self.files

    def used_on(self, drive: str) -> int:
        prefix = drive.upper().rstrip(":\\") + ":"
        return sum(f.size for f in self.files.values() if f.path[:2].upper() == prefix)

    def free_space(self, drive: str) -> int:
        volume = self.volumes.get(drive.upper().rstrip(":\\"))
        if volume is None:
            return 0
        return max(0, volume.size - volume.other_used - self.used_on(volume.drive))

    # -- memory -----------------------------------------------------------------------------------
    def memory_in_use(self) -> int:
        return self.memory_reserved + sum(vm.memory_assigned for vm in self.vms.values() if not vm.planned)

    def memory_available(self) -> int:
        return max(0, self.memory_capacity - self.memory_in_use())

    # -- lookups ----------------------------------------------------------------------------------
    def find_vm(self, name: str, *, include_planned: bool = False) -> VirtualMachine | None:
        lowered = name.lower()
        for vm in self.vms.values():
            if vm.name.lower() == lowered and (include_planned or not vm.planned):
                return vm
        return None

    def realized_vms(self) -> list[VirtualMachine]:
        return [vm for vm in self.vms.values() if not vm.planned]

    def switch(self, name: str) -> VirtualSwitch | None:
        return next((s for s in self.switches if s.name.lower() == name.lower()), None)

    def migration_nic(self) -> HostNic:
        """The adapter live migration uses: the first one inside a migration network, else the first."""
        import ipaddress

        for network in sorted(self.live_migration.networks, key=lambda n: n.priority):
            subnet = ipaddress.ip_network(network.subnet, strict=False)
            for nic in self.nics:
                if ipaddress.ip_address(nic.ip) in subnet:
                    return nic
        return self.nics[0]

    def firewall_rule(self, name: str) -> FirewallRule | None:
        return next((r for r in self.firewall_rules if r.name.lower() == name.lower()), None)

    def live_migration_port_open(self) -> bool:
        return any(r.enabled and r.local_port == "6600" for r in self.firewall_rules)


@dataclass
class World:
    """The whole lab: every host, cluster and VM, the directory view and the clock.

    `lock` guards every read that must be consistent and every mutation; cmdlets take it for the
    duration of one operation, never across a wait.
    """

    clock: LabClock
    domain: str
    hosts: dict[str, Host]  # key: host name, upper case
    clusters: dict[str, Cluster]  # key: cluster name, upper case
    directory: Directory
    transfer: TransferSettings = field(default_factory=TransferSettings)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # How many Move-VM operations were started for each VM id: the truth behind "moved at most once".
    move_starts: Counter[uuid.UUID] = field(default_factory=Counter)
    # Every command each host ran (name only), for round-trip accounting in tests and benchmarks.
    command_log: list[tuple[str, str]] = field(default_factory=list)

    def host(self, name: str) -> Host | None:
        """Find a host by NetBIOS name, FQDN or an address the lab gave it."""
        key = name.upper()
        if key in self.hosts:
            return self.hosts[key]
        short = key.split(".", 1)[0]
        host = self.hosts.get(short)
        if host is not None and host.fqdn.upper() == key:
            return host
        return None

    def cluster_of(self, host: Host) -> Cluster | None:
        return self.clusters.get(host.cluster.upper()) if host.cluster else None

    def locate_vm(self, name_or_id: str | uuid.UUID) -> list[tuple[Host, VirtualMachine]]:
        """Every host where a realized VM of that name or id is registered (the truth should say one)."""
        found: list[tuple[Host, VirtualMachine]] = []
        for host in self.hosts.values():
            for vm in host.realized_vms():
                if isinstance(name_or_id, uuid.UUID):
                    if vm.id == name_or_id:
                        found.append((host, vm))
                elif vm.name.lower() == name_or_id.lower() or str(vm.id).lower() == name_or_id.lower():
                    found.append((host, vm))
        return found
