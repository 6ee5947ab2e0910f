"""Topology files: the YAML that describes a lab's hosts, clusters and VMs, validated before anything starts.

A bad file gets one error that names the file and the field (`hosts[2].cpu.vendor: ...`), and no lab.
Defaults are Hyper-V's own (live migration off, CredSSP, Compression, two simultaneous migrations), so a
topology only states what differs from a freshly installed host.
"""

from __future__ import annotations

import ipaddress
import ntpath
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.model import checks
from lab.model.clock import LabClock
from lab.model.directory import (
    NOT_DELEGATED,
    TRUSTED_FOR_DELEGATION,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    ComputerAccount,
    TopologyDirectory,
)
from lab.model.state import (
    GIB,
    MIB,
    Checkpoint,
    Cluster,
    ClusterGroup,
    ControllerType,
    Cpu,
    DvdDrive,
    FirewallRule,
    HardDisk,
    Host,
    HostNic,
    LiveMigrationSettings,
    MigrationAuthenticationType,
    MigrationNetwork,
    NetworkAdapter,
    OsVersion,
    SwitchType,
    TransferSettings,
    VhdType,
    VirtualMachine,
    VirtualSwitch,
    VMMigrationPerformance,
    VMState,
    Volume,
    World,
    stable_guid,
)

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topologies" / "default.yaml"


class TopologyError(ValueError):
    """A topology file that cannot be loaded; the message names the file and the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuSpec(_Model):
    vendor: Literal["GenuineIntel", "AuthenticAMD"]
    model: str
    sockets: Annotated[int, Field(ge=1, le=8)] = 2
    cores_per_socket: Annotated[int, Field(ge=1, le=256)] = 16
    threads_per_core: Annotated[int, Field(ge=1, le=2)] = 2


class VolumeSpec(_Model):
    drive: Annotated[str, Field(pattern=r"^[A-Za-z]$")]
    label: str = ""
    size_gb: Annotated[float, Field(gt=0)]
    free_gb: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _free_fits(self) -> VolumeSpec:
        if self.free_gb > self.size_gb:
            raise ValueError(f"free_gb ({self.free_gb}) exceeds size_gb ({self.size_gb})")
        return self


class SwitchSpec(_Model):
    name: Annotated[str, Field(min_length=1)]
    type: Literal["External", "Internal", "Private"] = "External"


class NicSpec(_Model):
    """A physical adapter; `bindings` are Get-NetAdapterBinding component ids (ms_msclient, ms_server).

    `bandwidth_gbps` is the link speed in each direction; `full_duplex: false` makes sending and receiving
    share it (lab/README.md "The transfer model")."""

    name: str
    ip: ipaddress.IPv4Address
    prefix: Annotated[int, Field(ge=1, le=32)] = 24
    bandwidth_gbps: Annotated[float, Field(gt=0)] = 10.0
    full_duplex: bool = True
    bindings: dict[str, bool] = Field(default_factory=lambda: {"ms_msclient": True, "ms_server": True})


class MigrationNetworkSpec(_Model):
    subnet: str
    priority: Annotated[int, Field(ge=0)] = 5

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        return str(ipaddress.ip_network(value, strict=False))


class LiveMigrationSpec(_Model):
    enabled: bool = False
    authentication: Literal["CredSSP", "Kerberos"] = "CredSSP"
    performance: Literal["TCPIP", "Compression", "SMB"] = "Compression"
    use_any_network: bool = False
    networks: list[MigrationNetworkSpec] = Field(default_factory=list)
    max_vm_migrations: Annotated[int, Field(ge=1, le=64)] = 2
    max_storage_migrations: Annotated[int, Field(ge=1, le=64)] = 2


class HostSpec(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")]
    fqdn: str | None = None
    domain: str | None = None
    os: OsVersion = OsVersion.WS2022
    cpu: CpuSpec
    memory_gb: Annotated[float, Field(gt=0)]
    memory_reserved_gb: Annotated[float, Field(ge=0)] = 4
    volumes: list[VolumeSpec]
    switches: list[SwitchSpec] = Field(default_factory=list)
    nics: list[NicSpec]
    live_migration: LiveMigrationSpec = Field(default_factory=LiveMigrationSpec)
    firewall_live_migration_rule: bool = True
    smb2_enabled: bool = True
    virtual_machine_path: str | None = None
    virtual_hard_disk_path: str | None = None
    isos: list[str] = Field(default_factory=list)

    @field_validator("nics")
    @classmethod
    def _nics(cls, value: list[NicSpec]) -> list[NicSpec]:
        if not value:
            raise ValueError("a host needs at least one network adapter")
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[VolumeSpec]) -> list[VolumeSpec]:
        drives = [v.drive.upper() for v in value]
        if len(set(drives)) != len(drives):
            raise ValueError(f"duplicate drive letters: {drives}")
        if not value:
            raise ValueError("a host needs at least one volume")
        return value


class ClusterRoleSpec(_Model):
    priority: Literal[0, 1000, 2000, 3000] = 2000
    preferred_owners: list[str] = Field(default_factory=list)
    anti_affinity: list[str] = Field(default_factory=list)


class ClusterSpec(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")]
    nodes: Annotated[list[str], Field(min_length=1)]
    max_parallel_migrations: Annotated[int, Field(ge=1, le=64)] = 1


class AdapterSpec(_Model):
    name: str = "Network Adapter"
    switch: str | None
    ip: list[str] = Field(default_factory=list)
    mac: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{12}$")] | None = None


class DiskSpec(_Model):
    path: str
    size_gb: Annotated[float, Field(gt=0)]
    file_gb: Annotated[float, Field(gt=0)] | None = None
    type: Literal["Fixed", "Dynamic", "Differencing"] = "Dynamic"
    controller: Literal["IDE", "SCSI"] = "SCSI"


class PassThroughDiskSpec(_Model):
    disk_number: Annotated[int, Field(ge=0)]
    size_gb: Annotated[float, Field(gt=0)] = 100


class VmSpec(_Model):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    id: uuid.UUID | None = None
    host: str
    state: Literal["Running", "Off", "Saved", "Paused"] = "Running"
    memory_gb: Annotated[float, Field(gt=0)] = 4
    dynamic_memory: bool = False
    dirty_rate_mbps: Annotated[float, Field(ge=0)] = 20
    processors: Annotated[int, Field(ge=1, le=240)] = 2
    processor_compatibility: bool = False
    generation: Literal[1, 2] = 2
    version: str = "9.0"
    path: str | None = None
    adapters: list[AdapterSpec] = Field(default_factory=list)
    disks: list[DiskSpec] = Field(default_factory=list)
    passthrough_disks: list[PassThroughDiskSpec] = Field(default_factory=list)
    iso: str | None = None
    checkpoints: list[str] = Field(default_factory=list)
    backup_in_progress: bool = False
    clustered: bool = False
    cluster_role: ClusterRoleSpec = Field(default_factory=ClusterRoleSpec)
    guest_answers: bool = True
    notes: str = ""


class ComputerAccountSpec(_Model):
    allowed_to_delegate_to: list[str] = Field(default_factory=list)
    protocol_transition: bool = False
    unconstrained: bool = False
    sensitive: bool = False


class WinRMSpec(_Model):
    """WinRM's quotas on every host of the lab (catalogue 6.3); the field names are those of
    `lab.wsman.WinRMQuotas`, which the lab builds from them."""

    # Shells (runspace pools) one user may have open at once on a host: the lower of the Winrs (30) and the
    # PowerShell endpoint (25) defaults.
    max_shells_per_user: Annotated[int, Field(ge=1)] = 25
    # Pipelines one shell may run over its whole life (the endpoint's MaxConcurrentCommandsPerShell).
    max_commands_per_shell: Annotated[int, Field(ge=1)] = 1000


class TransferSpec(_Model):
    """The transfer model's constants (lab/README.md "The transfer model"), defaults from `TransferSettings`."""

    # A fraction of the slower adapter of the move: above 0 (a stream that never moves is a fault, not a
    # setting), at most 1 (a stream cannot beat its link).
    tcp_stream_fraction: Annotated[float, Field(gt=0, le=1)] = TransferSettings.tcp_stream_fraction
    smb_stream_fraction: Annotated[float, Field(gt=0, le=1)] = TransferSettings.smb_stream_fraction
    # Simulated seconds. The upper bound catches milliseconds written where seconds are meant.
    setup_seconds: Annotated[float, Field(ge=0, le=600)] = TransferSettings.setup_seconds
    switchover_seconds: Annotated[float, Field(ge=0, le=600)] = TransferSettings.switchover_seconds

    def settings(self) -> TransferSettings:
        return TransferSettings(
            tcp_stream_fraction=self.tcp_stream_fraction,
            smb_stream_fraction=self.smb_stream_fraction,
            setup_seconds=self.setup_seconds,
            switchover_seconds=self.switchover_seconds,
        )


class LabSpec(_Model):
    domain: str = "lab.test"
    netbios_domain: str = "LAB"
    time_scale: Annotated[float, Field(gt=0)] = 60.0
    # Compare-VM MessageIds by check, over lab/model/checks.py MESSAGE_IDS: a rehearsal can give the ids a
    # real host sends, and a test can show that a client does not depend on them.
    compare_vm_message_ids: dict[str, int] = Field(default_factory=dict)
    winrm: WinRMSpec = Field(default_factory=WinRMSpec)
    transfer: TransferSpec = Field(default_factory=TransferSpec)

    @field_validator("compare_vm_message_ids")
    @classmethod
    def _known_checks(cls, value: dict[str, int]) -> dict[str, int]:
        checks.message_ids(value)
        return value


class TopologySpec(_Model):
    lab: LabSpec = Field(default_factory=LabSpec)
    hosts: Annotated[list[HostSpec], Field(min_length=1)]
    clusters: list[ClusterSpec] = Field(default_factory=list)
    vms: list[VmSpec] = Field(default_factory=list)
    directory: dict[str, ComputerAccountSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> TopologySpec:
        names = [h.name.upper() for h in self.hosts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate host names: {duplicates}")
        hosts = {h.name.upper(): h for h in self.hosts}
        membership: dict[str, str] = {}
        for index, cluster in enumerate(self.clusters):
            for node in cluster.nodes:
                if node.upper() not in hosts:
                    raise ValueError(f"clusters[{index}].nodes: unknown host {node!r}")
                if node.upper() in membership:
                    raise ValueError(f"clusters[{index}].nodes: {node!r} is already in {membership[node.upper()]}")
                membership[node.upper()] = cluster.name
        seen: dict[str, VmSpec] = {}
        ids: set[uuid.UUID] = set()
        for index, vm in enumerate(self.vms):
            where = f"vms[{index}] ({vm.name})"
            host = hosts.get(vm.host.upper())
            if host is None:
                raise ValueError(f"{where}.host: unknown host {vm.host!r}")
            # Hyper-V lets two VMs share a name; the lab allows it when each gives its own `id` (the default id
            # comes from the name) and none is clustered (a role is named after its VM).
            twin = seen.get(vm.name.lower())
            if twin is not None and (vm.id is None or twin.id is None or vm.clustered or twin.clustered):
                raise ValueError(f"{where}.name: duplicate VM name (give each VM of this name its own id)")
            seen[vm.name.lower()] = vm
            if vm.id is not None:
                if vm.id in ids:
                    raise ValueError(f"{where}.id: duplicate VM id")
                ids.add(vm.id)
            switch_names = {s.name.lower() for s in host.switches}
            for a_index, adapter in enumerate(vm.adapters):
                if adapter.switch is not None and adapter.switch.lower() not in switch_names:
                    raise ValueError(
                        f"{where}.adapters[{a_index}].switch: {adapter.switch!r} is not a switch of {host.name}"
                    )
            drives = {v.drive.upper() for v in host.volumes}
            for d_index, disk in enumerate(vm.disks):
                if disk.path[:1].upper() not in drives or disk.path[1:3] != ":\\":
                    raise ValueError(f"{where}.disks[{d_index}].path: {disk.path!r} is not on a volume of {host.name}")
            if vm.clustered and vm.host.upper() not in membership:
                raise ValueError(f"{where}.clustered: host {host.name} is in no cluster")
        for name in self.directory:
            if name.upper() not in hosts:
                raise ValueError(f"directory.{name}: unknown host")
        return self


def _format_error(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ""
        for part in item["loc"]:
            location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
        lines.append(f"{source}: {location or '<top>'}: {item['msg']}")
    return "\n".join(lines)


def load_topology(path: Path | str | None = None) -> TopologySpec:
    """Read and validate a topology file (the built-in default when `path` is None)."""
    source = Path(path) if path is not None else DEFAULT_TOPOLOGY
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopologyError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{source}: not valid YAML: {exc}") from None
    return parse_topology(raw, source=str(source))


def parse_topology(raw: Any, *, source: str = "<topology>") -> TopologySpec:
    if not isinstance(raw, dict):
        raise TopologyError(f"{source}: the topology must be a mapping with 'hosts', 'clusters', 'vms'")
    try:
        return TopologySpec.model_validate(raw)
    except ValidationError as exc:
        raise TopologyError(_format_error(source, exc)) from None


def _mac(vm_name: str, index: int) -> str:
    digest = stable_guid("mac", vm_name, str(index)).hex[:6].upper()
    return "00155D" + digest  # Hyper-V's own OUI


def build_world(spec: TopologySpec, *, time_scale: float | None = None) -> World:
    """Turn a validated topology into the lab's live state."""
    clock = LabClock(time_scale or spec.lab.time_scale)
    now = clock.now()
    domain = spec.lab.domain.lower()
    hosts: dict[str, Host] = {}
    for hs in spec.hosts:
        host_domain = (hs.domain or domain).lower()
        vm_path = hs.virtual_machine_path or rf"{hs.volumes[-1].drive.upper()}:\Hyper-V"
        lm = hs.live_migration
        host = Host(
            name=hs.name.upper(),
            fqdn=(hs.fqdn or f"{hs.name}.{host_domain}").lower(),
            domain=host_domain,
            os=hs.os,
            cpu=Cpu(hs.cpu.vendor, hs.cpu.model, hs.cpu.sockets, hs.cpu.cores_per_socket, hs.cpu.threads_per_core),
            memory_capacity=int(hs.memory_gb * GIB),
            memory_reserved=int(hs.memory_reserved_gb * GIB),
            volumes={},
            switches=[
                VirtualSwitch(
                    s.name, SwitchType[s.type], stable_guid("switch", hs.name, s.name), f"{s.name} Team Adapter"
                )
                for s in hs.switches
            ],
            nics=[
                HostNic(
                    n.name,
                    str(n.ip),
                    n.prefix,
                    int(n.bandwidth_gbps * 10**9),
                    dict(n.bindings),
                    full_duplex=n.full_duplex,
                )
                for n in hs.nics
            ],
            live_migration=LiveMigrationSettings(
                enabled=lm.enabled,
                authentication=MigrationAuthenticationType[lm.authentication],
                performance=VMMigrationPerformance[lm.performance],
                use_any_network=lm.use_any_network,
                networks=[MigrationNetwork(n.subnet, n.priority) for n in lm.networks],
                max_vm_migrations=lm.max_vm_migrations,
                max_storage_migrations=lm.max_storage_migrations,
            ),
            firewall_rules=[
                FirewallRule(
                    name="VIRT-MIGL-In-TCP-NoScope",
                    display_name="Hyper-V (MIG-TCP-In)",
                    group="Hyper-V",
                    description="Inbound rule for Hyper-V to allow planned failover of virtual machines. [TCP 6600]",
                    enabled=hs.firewall_live_migration_rule,
                    local_port="6600",
                ),
                FirewallRule(
                    name="VIRT-REMOTEDESKTOP-In-TCP-NoScope",
                    display_name="Hyper-V - Remote Desktop (TCP-In)",
                    group="Hyper-V",
                    description="Inbound rule for Hyper-V to allow remote connection to virtual machine. [TCP 2179]",
                    enabled=True,
                    local_port="2179",
                ),
            ],
            smb2_enabled=hs.smb2_enabled,
            virtual_machine_path=vm_path,
            virtual_hard_disk_path=hs.virtual_hard_disk_path or ntpath.join(vm_path, "Virtual Hard Disks"),
        )
        for iso in hs.isos:
            host.add_file(iso, 5 * GIB)
        hosts[host.name] = host

    clusters: dict[str, Cluster] = {}
    for cs in spec.clusters:
        cluster = Cluster(cs.name.upper(), [n.upper() for n in cs.nodes], cs.max_parallel_migrations)
        clusters[cluster.name] = cluster
        for node in cluster.nodes:
            hosts[node].cluster = cluster.name

    for vs in spec.vms:
        host = hosts[vs.host.upper()]
        vm_id = vs.id or stable_guid("vm", vs.name)
        path = vs.path or ntpath.join(host.virtual_machine_path, vs.name)
        vm = VirtualMachine(
            name=vs.name,
            id=vm_id,
            state=VMState[vs.state],
            generation=vs.generation,
            version=vs.version,
            processor_count=vs.processors,
            memory_startup=int(vs.memory_gb * GIB),
            dynamic_memory=vs.dynamic_memory,
            path=path,
            processor_compatibility=vs.processor_compatibility,
            backup_in_progress=vs.backup_in_progress,
            is_clustered=vs.clustered,
            dirty_rate=int(vs.dirty_rate_mbps * MIB),
            guest_answers=vs.guest_answers,
            started_at=now - timedelta(days=3) if vs.state == "Running" else None,
            created_at=now - timedelta(days=90),
            notes=vs.notes,
        )
        for index, adapter in enumerate(vs.adapters):
            vm.adapters.append(
                NetworkAdapter(
                    adapter.name,
                    adapter.switch,
                    (adapter.mac or _mac(vs.name, index)).upper(),
                    list(adapter.ip),
                    stable_guid("nic", vs.name, str(index)),
                )
            )
        for index, disk in enumerate(vs.disks):
            size = int(disk.size_gb * GIB)
            file_size = int(disk.file_gb * GIB) if disk.file_gb else size
            vm.disks.append(
                HardDisk(
                    path=disk.path,
                    size=size,
                    file_size=file_size,
                    controller_type=ControllerType[disk.controller],
                    controller_location=index,
                    vhd_type=VhdType[disk.type],
                )
            )
            host.add_file(disk.path, file_size)
        for index, pt in enumerate(vs.passthrough_disks, start=len(vm.disks)):
            vm.disks.append(
                HardDisk(
                    path=f"Disk {pt.disk_number} {pt.size_gb:.2f} GB Bus 0 Lun {index} Target 0",
                    size=int(pt.size_gb * GIB),
                    file_size=0,
                    controller_location=index,
                    vhd_type=VhdType.Unknown,
                    disk_number=pt.disk_number,
                )
            )
        vm.dvd_drives.append(DvdDrive(vs.iso, controller_location=len(vm.disks)))
        for index, name in enumerate(vs.checkpoints):
            vm.checkpoints.append(
                Checkpoint(name, stable_guid("checkpoint", vs.name, name), now - timedelta(days=30 - index))
            )
        for file in vm.state_files:
            host.add_file(file, 64 * 1024 if file.endswith(".vmcx") else MIB)
        host.vms[vm.id] = vm
        if vs.clustered and host.cluster:
            cluster = clusters[host.cluster]
            cluster.groups[vs.name.lower()] = ClusterGroup(
                name=vs.name,
                vm_id=vm.id,
                owner_node=host.name,
                priority=vs.cluster_role.priority,
                preferred_owners=[n.upper() for n in vs.cluster_role.preferred_owners],
                anti_affinity_class_names=list(vs.cluster_role.anti_affinity),
                id=stable_guid("group", vs.name),
            )

    # Free space is given as it is with the VMs in place: what the lab does not model as files is fixed here.
    for hs in spec.hosts:
        host = hosts[hs.name.upper()]
        for vol in hs.volumes:
            drive = vol.drive.upper()
            size = int(vol.size_gb * GIB)
            wanted_free = int(vol.free_gb * GIB)
            used_by_files = host.used_on(drive)
            host.volumes[drive] = Volume(drive, vol.label, size, max(0, size - wanted_free - used_by_files))

    directory = TopologyDirectory()
    for name, account in spec.directory.items():
        uac = 0x1000
        if account.protocol_transition:
            uac |= TRUSTED_TO_AUTH_FOR_DELEGATION
        if account.unconstrained:
            uac |= TRUSTED_FOR_DELEGATION
        if account.sensitive:
            uac |= NOT_DELEGATED
        directory.put(ComputerAccount(name.upper(), frozenset(account.allowed_to_delegate_to), uac))
    for host in hosts.values():
        if directory.computer(host.name) is None:
            directory.put(ComputerAccount(host.name))

    return World(
        clock=clock,
        domain=domain,
        hosts=hosts,
        clusters=clusters,
        directory=directory,
        transfer=spec.lab.transfer.settings(),
    )
