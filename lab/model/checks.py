"""The checks vmms makes before and at the start of a live migration, as pure functions.

Compare-VM reports the compatibility findings (`compatibility`); a move runs the same functions early in
its job and fails at under 10 % with their texts (reference/hyperv-facts.md, "Requirements to check before
a move"; texts from reference/hyperv-fidelity-catalogue.md 2.2). Nothing here mutates the world.

Each finding carries the Compare-VM MessageId (the host's Msvm_Error id) of its check, from `MESSAGE_IDS`:
the ids the Hyper-V client library defines (catalogue 6.2) where one fits, the generic migration-failure event
21502 where none is known. A lab can be given other ids (topology `lab.compare_vm_message_ids`), so that a
client can be shown not to depend on them.
"""

from __future__ import annotations

import ipaddress
import ntpath
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from lab.model.state import GIB, MIB, ControllerType, Host, VirtualMachine, VMMigrationPerformance, norm_path

if TYPE_CHECKING:
    from lab.model.migration import MoveRequest

# Compare-VM MessageId (Msvm_Error.Id) by check: catalogue 6.2, NEON ValidationErrorId.
_GENERIC_MIGRATION_FAILURE: Final = 21502  # vmms's "migration failed" event (hyperv-facts.md)
MESSAGE_IDS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "switch": 33012,  # EthernetSwitchNotFound [S] PSD Compare-VM example 2
        "processor_vendor": 24002,  # ProcessorVendorMismatch [D]
        "processor_features": 24004,  # ProcessorFeaturesNotSupported [D]
        "version": 24006,  # VmVersionNotSupported [D]
        "passthrough": 40008,  # PassThroughDiskDetected [D]
        "vhd_not_reachable": 40010,  # VhdFileMissing [D]
        # MemoryQuantityAboveMax [D]; that a destination short of free memory reports it is the lab's reading.
        "memory": 40014,
        # ConfigurationDataRootCreationFailure [D]; that a folder on a volume the host lacks reports it: the lab's.
        "destination_path": 13000,
        # No id is known for these [U] (catalogue 6.2): the generic event, with the failing object as Source.
        "destination_vhd_path": _GENERIC_MIGRATION_FAILURE,
        "iso": _GENERIC_MIGRATION_FAILURE,
        "backup": _GENERIC_MIGRATION_FAILURE,
        "disk_space": _GENERIC_MIGRATION_FAILURE,
        "planned_vm_exists": _GENERIC_MIGRATION_FAILURE,
        "destination_file_exists": _GENERIC_MIGRATION_FAILURE,
    }
)


def message_ids(overrides: Mapping[str, int] | None = None) -> Mapping[str, int]:
    """`MESSAGE_IDS` with `overrides` (check -> MessageId) applied; an unknown check is a ValueError."""
    unknown = sorted(set(overrides or {}) - set(MESSAGE_IDS))
    if unknown:
        raise ValueError(f"unknown Compare-VM checks {unknown}; known: {', '.join(sorted(MESSAGE_IDS))}")
    return MappingProxyType({**MESSAGE_IDS, **(overrides or {})})


# Size the lab gives a VM's runtime files when it has no record of them (config .vmcx, .vmgs, .VMRS).
DEFAULT_STATE_FILE_SIZE: Final = MIB


@dataclass(frozen=True)
class Finding:
    """One incompatibility: Compare-VM's VMCompatibilityError and the lines a failed move reports."""

    message: str
    message_id: int
    source_kind: str  # VMNetworkAdapter, VMProcessor, VMMemory, HardDiskDrive, DvdDrive, VirtualMachine
    source_name: str = ""  # the adapter's name, the disk's or ISO's path on the source
    # Lines of the job's ErrorDescription when the move fails on this finding; `message` when empty.
    job_lines: tuple[str, ...] = ()
    # The Source is the destination's VM with this VM's Id (a leftover), not the VM being moved.
    on_destination: bool = False

    @property
    def lines(self) -> tuple[str, ...]:
        return self.job_lines or (self.message,)


@dataclass(frozen=True)
class FileCopy:
    """One file a storage move copies to the destination."""

    source_path: str
    destination_path: str
    size: int


@dataclass(frozen=True)
class Layout:
    """Where the VM's files are on the destination once the move is done."""

    storage: bool  # whether the move copies files (Move-VM -IncludeStorage and friends)
    vm_path: str
    disk_paths: tuple[tuple[str, str], ...]  # (source path, destination path) of every VHD, pass-through excluded
    copies: tuple[FileCopy, ...]  # the VHDs a storage move copies, in order

    def destination_of(self, source_path: str) -> str:
        key = norm_path(source_path)
        return next((dst for src, dst in self.disk_paths if norm_path(src) == key), source_path)


# -- texts ---------------------------------------------------------------------------------------------
def source_summary(vm: VirtualMachine, source: Host) -> str:
    """The job's ErrorSummaryDescription (TTB transcript: single quotes, upper-case VM id)."""
    return (
        f"Virtual machine migration operation for '{vm.name}' failed at migration source '{source.name}'. "
        f"(Virtual machine ID {str(vm.id).upper()})"
    )


def destination_summary(vm: VirtualMachine, destination: Host) -> str:
    """The line vmms puts first when the destination side failed (SA-LM, with TTB's single quotes)."""
    return (
        f"Virtual machine migration operation for '{vm.name}' failed at migration destination "
        f"'{destination.name}'. (Virtual machine ID {str(vm.id).upper()})"
    )


def refused_text(destination_name: str) -> str:
    """0x8007274D: nothing listens on TCP 6600 (firewall rule off, vmms down) (SA-LM)."""
    return (
        "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine "
        f'migration with host "{destination_name}": No connection could be made because the target machine '
        "actively refused it. (0x8007274D)"
    )


def timeout_text(destination_name: str) -> str:
    """0x8007274C: the destination does not answer (network partition) (SA-LM)."""
    return (
        "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine "
        f'migration with host "{destination_name}": A connection attempt failed because the connected party '
        "did not properly respond after a period of time, or established connection failed because connected "
        "host has failed to respond. (0x8007274C)."
    )


# 0x80072746: the connection broke during the transfer (SA-LM).
RESET_TEXT: Final = (
    "Failed to send data for a Virtual Machine migration: An existing connection was forcibly closed by the "
    "remote host. (0x80072746)"
)

# The listener has no address to listen on (SA-LM).
LISTENER_DISABLED_TEXT: Final = (
    "The Virtual Machine Management Service disabled the listener for Virtual Machine migration connections."
)

# ERROR_DISK_FULL 0x80070070, as a storage copy reports it when the destination volume fills up mid-copy.
DISK_FULL_TEXT: Final = "There is not enough space on the disk. (0x80070070)"


def no_credentials_lines(destination_name: str) -> tuple[str, ...]:
    """0x8009030E: CredSSP started remotely, or Kerberos without delegation (TTB transcript)."""
    return (
        "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine "
        f"migration with host '{destination_name}': No credentials are available in the security package "
        "(0x8009030E).",
        "Failed to authenticate the connection at the source host: no suitable credentials available.",
    )


def limit_text(vm_name: str, limit: int, *, wording: str = "classic") -> str:
    """Event 21501, in the two wordings SA-LM ("classic") and SA-LMG ("newer") show."""
    if wording == "newer":
        return (
            f"Virtual machine migration limit {limit} was reached, please wait for completion of an ongoing "
            "migration operation."
        )
    return (
        f'Failed to perform migration on virtual machine "{vm_name}" because virtual machine migration limit '
        f'"{limit}" was reached, please wait for completion of an ongoing migration operation.'
    )


def _gb(size: int) -> str:
    return f"{size / GIB:.2f} GB"


# -- layout ----------------------------------------------------------------------------------------------
def is_storage_move(request: MoveRequest) -> bool:
    return bool(
        request.include_storage or request.destination_storage_path or request.virtual_machine_path or request.vhds
    )


def vhds_names_match(request: MoveRequest) -> bool:
    """Move-VM -Vhds: the file name must stay the same (NEON resx, catalogue 2.2)."""
    return all(
        ntpath.basename(src).lower() == ntpath.basename(dst).lower() and ntpath.basename(dst)
        for src, dst in request.vhds
    )


def destination_layout(vm: VirtualMachine, destination: Host, request: MoveRequest) -> Layout:
    """Where each file goes.

    -DestinationStoragePath P puts the configuration under P and each VHD at P\\<file name>; -VirtualMachinePath
    and -Vhds place them one by one (a VHD not listed in -Vhds goes next to the configuration: the lab's
    choice, unverified); -IncludeStorage alone uses the destination's default paths. Without storage nothing
    is copied and every path stays as it is.
    """
    vhds = [d for d in vm.disks if not d.is_passthrough]
    if not is_storage_move(request):
        return Layout(False, vm.path, tuple((d.path, d.path) for d in vhds), ())
    explicit = {norm_path(src): dst for src, dst in request.vhds}
    if request.destination_storage_path:
        vm_path = request.destination_storage_path
        vhd_folder = vm_path
    elif request.virtual_machine_path:
        vm_path = request.virtual_machine_path
        vhd_folder = vm_path
    else:
        vm_path = destination.virtual_machine_path
        vhd_folder = destination.virtual_hard_disk_path
    pairs = []
    copies = []
    for disk in vhds:
        target = explicit.get(norm_path(disk.path)) or ntpath.join(vhd_folder, ntpath.basename(disk.path))
        pairs.append((disk.path, target))
        copies.append(FileCopy(disk.path, target, disk.file_size))
    return Layout(True, vm_path, tuple(pairs), tuple(copies))


def _drive(path: str) -> str:
    return path[:1].upper() if path[1:3] == ":\\" else ""


# -- compatibility checks (Compare-VM and the first seconds of a move) --------------------------------------
def check_switches(vm: VirtualMachine, destination: Host, ids: Mapping[str, int] = MESSAGE_IDS) -> list[Finding]:
    """Every switch the adapters use must exist, by name, on the destination (event 21502, MessageId 33012)."""
    return [
        Finding(
            f"Could not find Ethernet switch '{adapter.switch_name}'.",
            ids["switch"],
            "VMNetworkAdapter",
            adapter.name,
        )
        for adapter in vm.adapters
        if adapter.switch_name is not None and destination.switch(adapter.switch_name) is None
    ]


def check_processor(
    vm: VirtualMachine, source: Host, destination: Host, ids: Mapping[str, int] = MESSAGE_IDS
) -> list[Finding]:
    """Same CPU vendor always; same model unless processor compatibility is on (SA-LM, WSD-LM, SA-LMG)."""
    features = (
        f'Virtual machine "{vm.name}" is using processor-specific features not supported on host "{destination.name}".'
    )
    if source.cpu.manufacturer != destination.cpu.manufacturer:
        # A different vendor is never possible, compatibility mode or not.
        second = (
            "The virtual machine cannot be moved to the destination computer. The hardware on the destination "
            "computer is not compatible with the hardware requirements of this virtual machine."
        )
        message_id = ids["processor_vendor"]
    elif source.cpu.model != destination.cpu.model and not vm.processor_compatibility:
        second = (
            "To allow for migration of this virtual machine to a server with a different processor, modify the "
            "virtual machine settings to limit the processor features used by the virtual machine."
        )
        message_id = ids["processor_features"]
    else:
        return []
    return [Finding(features, message_id, "VMProcessor", "Processor", (features, second))]


def check_memory(
    vm: VirtualMachine, destination: Host, *, reserved: int = 0, ids: Mapping[str, int] = MESSAGE_IDS
) -> list[Finding]:
    """The destination must hold the VM's memory (0x8007000E / 0x800705AA, fails at < 10 %).

    `reserved` is memory already promised to other moves arriving on the destination.
    """
    needed = vm.memory_assigned
    if needed == 0 or destination.memory_available() - reserved >= needed:
        return []
    message = f"'{vm.name}' could not initialize memory: Ran out of memory (0x8007000E)."
    return [
        Finding(
            message,
            ids["memory"],
            "VMMemory",
            "Memory",
            (
                destination_summary(vm, destination),
                message,
                "Failed to create partition: Insufficient system resources exist to complete the requested "
                "service. (0x800705AA)",
            ),
        )
    ]


def check_destination_paths(
    vm: VirtualMachine, destination: Host, layout: Layout, ids: Mapping[str, int] = MESSAGE_IDS
) -> list[Finding]:
    """A storage move needs every destination folder on a volume the destination has (lab text, 0x80070003)."""
    if not layout.storage:
        return []
    findings = []
    # The configuration folder is the VM's; a VHD's folder is its disk's (Source HardDiskDrive).
    places = [(layout.vm_path, "destination_path", "VirtualMachine", vm.name)]
    places += [(dst, "destination_vhd_path", "HardDiskDrive", src) for src, dst in layout.disk_paths]
    for path, check, kind, name in places:
        if _drive(path) not in destination.volumes:
            # ERROR_PATH_NOT_FOUND text; the sentence around it is the lab's own.
            findings.append(
                Finding(
                    f"Failed to create '{path}' on '{destination.name}': The system cannot find the path "
                    "specified. (0x80070003)",
                    ids[check],
                    kind,
                    name,
                )
            )
    return findings


def check_disk_space(
    vm: VirtualMachine,
    destination: Host,
    layout: Layout,
    *,
    reserved: Mapping[str, int] | None = None,
    ids: Mapping[str, int] = MESSAGE_IDS,
) -> list[Finding]:
    """A storage move needs room for the VHDs on each destination volume (hyperv-facts; text is the lab's own
    around ERROR_DISK_FULL 0x80070070). `reserved`: bytes per drive other moves still have to write there."""
    if not layout.storage:
        return []
    needed: dict[str, int] = {}
    for copy in layout.copies:
        drive = _drive(copy.destination_path)
        if drive in destination.volumes:
            needed[drive] = needed.get(drive, 0) + copy.size
    findings = []
    for drive, size in sorted(needed.items()):
        free = destination.free_space(drive) - (reserved or {}).get(drive, 0)
        if size > free:
            findings.append(
                Finding(
                    f"There is not enough space on the disk. (0x80070070) The virtual hard disks of '{vm.name}' "
                    f"need {_gb(size)} on {drive}: of '{destination.name}', which has {_gb(max(0, free))} free.",
                    ids["disk_space"],
                    "HardDiskDrive",
                    next(c.source_path for c in layout.copies if _drive(c.destination_path) == drive),
                )
            )
    return findings


def check_passthrough(vm: VirtualMachine, ids: Mapping[str, int] = MESSAGE_IDS) -> list[Finding]:
    """A pass-through disk cannot be migrated (hyperv-facts; the exact text is unsourced, catalogue 5.5)."""
    return [
        Finding(
            f"Virtual machine '{vm.name}' cannot be migrated because the hard disk drive '{disk.path}' is a "
            "pass-through disk. Remove the pass-through disk and try again.",
            ids["passthrough"],
            "HardDiskDrive",
            disk.path,
        )
        for disk in vm.disks
        if disk.is_passthrough
    ]


def check_version(vm: VirtualMachine, destination: Host, ids: Mapping[str, int] = MESSAGE_IDS) -> list[Finding]:
    """The destination OS must run the VM's configuration version (events 10698, 21502; text the lab's own)."""
    if vm.version in destination.os.supported_vm_versions:
        return []
    return [
        Finding(
            f"The virtual machine '{vm.name}' is using configuration version {vm.version}, which is not "
            f"supported on '{destination.name}' (Windows Server {destination.os.value}). Supported versions: "
            f"{', '.join(destination.os.supported_vm_versions)}.",
            ids["version"],
            "VirtualMachine",
            vm.name,
        )
    ]


def check_iso(vm: VirtualMachine, destination: Host, ids: Mapping[str, int] = MESSAGE_IDS) -> list[Finding]:
    """An attached ISO must exist at the same path on the destination (SA-LM, 0xC03A0014)."""
    findings = []
    for drive in vm.dvd_drives:
        if drive.path and not destination.has_file(drive.path):
            controller = (
                "Synthetic SCSI Controller" if drive.controller_type == ControllerType.SCSI else "IDE Controller"
            )
            findings.append(
                Finding(
                    f'"{vm.name}" {controller}: Failed to restore with Error "A virtual disk support provider for '
                    'the specified file was not found." (0xC03A0014).',
                    ids["iso"],
                    "DvdDrive",
                    drive.path,
                )
            )
    return findings


def check_backup(vm: VirtualMachine, ids: Mapping[str, int] = MESSAGE_IDS) -> list[Finding]:
    """A VM being backed up cannot move (hyperv-facts; text the lab's own around the real state message)."""
    if not vm.backup_in_progress:
        return []
    return [
        Finding(
            "The operation cannot be performed while the virtual machine is in its current state. "
            f"'{vm.name}' is being backed up.",
            ids["backup"],
            "VirtualMachine",
            vm.name,
        )
    ]


def check_vhds_reachable(
    vm: VirtualMachine, destination: Host, layout: Layout, ids: Mapping[str, int] = MESSAGE_IDS
) -> list[Finding]:
    """Without storage the destination opens the VHDs where they are: a local path only the source has fails.

    The lab counts a VHD as reachable when the destination has a file at that path (storage both hosts see)
    or the path is a UNC path. Text: the vmms "Failed to open attachment" form with ERROR_FILE_NOT_FOUND
    (the lab's choice).
    """
    if layout.storage:
        return []
    return [
        Finding(
            f"'{vm.name}': Failed to open attachment '{disk.path}'. Error: 'The system cannot find the file "
            "specified.' (0x80070002).",
            ids["vhd_not_reachable"],
            "HardDiskDrive",
            disk.path,
        )
        for disk in vm.disks
        if not disk.is_passthrough and not disk.path.startswith("\\\\") and not destination.has_file(disk.path)
    ]


def check_destination_leftovers(
    vm: VirtualMachine, destination: Host, layout: Layout, ids: Mapping[str, int] = MESSAGE_IDS
) -> list[Finding]:
    """What an earlier failed move left on the destination blocks this one until someone cleans it.

    The first line's prefix is vmms's ("Failed to create Planned Virtual Machine at migration destination:",
    SA-LM 0x80070569) with ERROR_ALREADY_EXISTS; the second sentence and the file-exists text are the lab's.
    """
    findings = []
    existing = destination.vms.get(vm.id)
    if existing is not None:
        kind = "A planned virtual machine" if existing.planned else "A virtual machine"
        findings.append(
            Finding(
                "Failed to create Planned Virtual Machine at migration destination: Cannot create a file when "
                f"that file already exists. (0x800700B7) {kind} with ID {str(vm.id).upper()} ('{existing.name}') "
                f"is already registered on '{destination.name}'; remove it before you retry.",
                ids["planned_vm_exists"],
                "VirtualMachine",
                existing.name,
                on_destination=True,
            )
        )
    for copy in layout.copies:
        if destination.has_file(copy.destination_path):
            findings.append(
                Finding(
                    f"Failed to copy '{copy.source_path}' to '{copy.destination_path}' on '{destination.name}': "
                    "The file exists. (0x80070050)",
                    ids["destination_file_exists"],
                    "HardDiskDrive",
                    copy.source_path,
                )
            )
    return findings


def compatibility(
    vm: VirtualMachine,
    source: Host,
    destination: Host,
    layout: Layout,
    *,
    reserved_memory: int = 0,
    reserved_disk: Mapping[str, int] | None = None,
    ids: Mapping[str, int] = MESSAGE_IDS,
) -> list[Finding]:
    """Every incompatibility of this move, in the order vmms meets them."""
    return [
        *check_switches(vm, destination, ids),
        *check_processor(vm, source, destination, ids),
        *check_version(vm, destination, ids),
        *check_passthrough(vm, ids),
        *check_backup(vm, ids),
        *check_iso(vm, destination, ids),
        *check_vhds_reachable(vm, destination, layout, ids),
        *check_destination_paths(vm, destination, layout, ids),
        *check_disk_space(vm, destination, layout, reserved=reserved_disk, ids=ids),
        *check_memory(vm, destination, reserved=reserved_memory, ids=ids),
        *check_destination_leftovers(vm, destination, layout, ids),
    ]


# -- connection checks (a move only: Compare-VM talks to the destination over WMI, not TCP 6600) -----------
def _listener_addresses(host: Host) -> list[str]:
    """Where the host's vmms listens for migrations: every address, or those inside its migration networks."""
    if host.live_migration.use_any_network:
        return [nic.ip for nic in host.nics]
    subnets = [ipaddress.ip_network(n.subnet, strict=False) for n in host.live_migration.networks]
    return [nic.ip for nic in host.nics if any(ipaddress.ip_address(nic.ip) in s for s in subnets)]


def connection_lines(source: Host, destination: Host, destination_name: str) -> tuple[str, ...] | None:
    """Why the source cannot open the migration connection to the destination, or None."""
    if not _listener_addresses(destination):
        return (refused_text(destination_name), LISTENER_DISABLED_TEXT)
    if not destination.live_migration_port_open():
        return (refused_text(destination_name),)
    return None


def domain_lines(source: Host, destination: Host, destination_name: str) -> tuple[str, ...] | None:
    """Both hosts must be in the same domain (hyperv-facts); the explanation is the lab's own text."""
    if source.domain.lower() == destination.domain.lower():
        return None
    return (
        *no_credentials_lines(destination_name)[:1],
        f"The hosts are in different domains ('{source.domain}' and '{destination.domain}'): live migration "
        "needs both hosts in the same Active Directory domain.",
    )


def smb_lines(source: Host, destination: Host, layout: Layout) -> tuple[str, ...] | None:
    """Files travel over SMB (storage moves, and memory with the SMB performance option): the destination
    needs SMB 2/3 on and File and Printer Sharing (ms_server) bound, the source Client for Microsoft Networks
    (ms_msclient) on its migration adapter. Text: ERROR_BAD_NETPATH 0x80070035 in the lab's sentence."""
    if not layout.storage and source.live_migration.performance != VMMigrationPerformance.SMB:
        return None
    problems = []
    if not destination.smb2_enabled:
        problems.append(f"SMB 2/3 is disabled on '{destination.name}'")
    if not destination.migration_nic().bindings.get("ms_server", False):
        problems.append(f"File and Printer Sharing (ms_server) is not bound on '{destination.name}'")
    if not source.migration_nic().bindings.get("ms_msclient", False):
        problems.append(f"Client for Microsoft Networks (ms_msclient) is not bound on '{source.name}'")
    if not problems:
        return None
    return (
        f"Failed to copy files to '{destination.name}' for a Virtual Machine migration: The network path was "
        "not found. (0x80070035)",
        "; ".join(problems) + ".",
    )


def state_file_sizes(vm: VirtualMachine, host: Host) -> list[tuple[str, int]]:
    """The VM's runtime files as the host has them (the lab gives unknown ones a default size)."""
    sizes = []
    for path in vm.state_files:
        entry = host.files.get(norm_path(path))
        sizes.append((path, entry.size if entry else DEFAULT_STATE_FILE_SIZE))
    return sizes
