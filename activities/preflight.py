"""Preflight: read-only facts from the source and destination hosts -> a report of concerns.

Step 1 of MigrateVm (DESIGN.md). Nothing here changes a host: only Get-* cmdlets, Test-Path,
Test-NetConnection and Compare-VM (which creates nothing: its planned VM lives only in the report). Each host
gets ONE runspace pool and one command per fact group; `PreflightReport.round_trips` says how many PSRP round
trips each host cost (pool open and close included).

Severities follow reference/hyperv-facts.md ("Requirements to check before a move", the failures table):
what makes Move-VM fail and cannot be fixed by the saga is a blocker; what the saga fixes (live migration
disabled, an ISO to eject, HA to remove) is a warning or info marked auto-remediable; the rest is info.

Errors: a host that cannot be reached, a session that breaks, a busy host are the host client's transient
errors and propagate (Temporal retries the activity); a VM that is not there is a `vm-not-found` blocker, not
an exception. Inside an activity every SnlmError leaves as an ApplicationError of its stable type.
"""

from __future__ import annotations

import ntpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

from activities.errors import SnlmError, TransientError, UnknownError
from activities.hosts import CommandResult, HostClient
from activities.inventory import Inventory
from workflows.contracts import (
    CLUSTER_SERVICE_UNAVAILABLE,
    MIGRATION_NETWORK_ERROR,
    SEVERITY_BLOCKER,
    SEVERITY_INFO,
    SEVERITY_WARNING,
    VM_IS_CLUSTERED,
    Concern,
    PreflightFacts,
    PreflightInput,
    PreflightReport,
    Severity,
)

__all__ = ["COMPARE_VM_IDS", "PreflightActivities", "run_preflight"]

GIB = 1024**3
FIREWALL_RULE = "VIRT-MIGL-In-TCP-NoScope"
MIGRATION_PORT = 6600
# MSFT_NetFirewallRule.Enabled: 1 True, 2 False.
_RULE_ENABLED = 1
# Compare-VM MessageId -> concern id. 33012 is documented; the 390xx ids are the lab's own (lab/model/checks.py,
# LAB_MESSAGE_IDS): a real host sends other numbers, which fall through to `incompatibility-<id>`.
COMPARE_VM_IDS: dict[int, str] = {
    33012: "switch-missing",
    39001: "processor-incompatible",
    39002: "memory",
    39003: "disk-space",
    39004: "passthrough-disk",
    39005: "config-version-unsupported",
    39006: "iso-missing-on-destination",
    39007: "backup-in-progress",
    39008: "vhd-not-reachable",
    39009: "destination-path",
    39010: "destination-leftovers",
    39011: "destination-leftovers",
}
# Concerns a fact check already states more precisely than Compare-VM's generic finding.
_SUPERSEDES = {"cpu-vendor-mismatch": "processor-incompatible"}
# An allowance over the VHD file sizes: configuration, runtime state and headroom.
_SPACE_MARGIN = 1 * GIB


def _heartbeat(note: str) -> None:
    if activity.in_activity():
        activity.heartbeat(note)


def _gb(value: int) -> str:
    return f"{value / GIB:.1f} GB"


def _one(result: CommandResult) -> dict[str, Any]:
    first = result.output[0] if result.output else None
    return first if isinstance(first, dict) else {}


def _dicts(result: CommandResult) -> list[dict[str, Any]]:
    return [item for item in result.output if isinstance(item, dict)]


def _raise_if_transient(result: CommandResult, *, findings: frozenset[str] = frozenset()) -> None:
    """A probe run with check=False still lets a transient failure (or an unknown one) propagate for a retry.

    `findings` are error types that are facts about the hosts rather than trouble with this session: Compare-VM
    failing with a migration network error (0x8007274C...) says the hosts cannot reach each other on TCP 6600,
    which preflight reports as a blocker instead of retrying.
    """
    for error in result.errors:
        if isinstance(error, TransientError | UnknownError) and error.error_type not in findings:
            raise error


@dataclass
class _Findings:
    vm: str
    source: str
    destination: str
    concerns: list[Concern] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    def add(
        self, id: str, severity: Severity, message: str, remedy: str, *, host: str = "", auto: bool = False
    ) -> None:
        if any(c.id == id and c.host == host for c in self.concerns):
            return
        self.concerns.append(Concern(id, severity, message, remedy, auto, host))

    def has(self, id: str) -> bool:
        return any(c.id == id for c in self.concerns)

    def fact(self, key: str, value: Any) -> None:
        self.facts[key] = "" if value is None else str(value)


# -- reading the hosts ----------------------------------------------------------------------------------------
def _find_vm(client: HostClient, vm: str) -> dict[str, Any] | None:
    """The realized VM by name, or None (a planned VM left by a failed move is reported separately)."""
    result = client.run("Get-VM", {"Name": vm}, check=False)
    _raise_if_transient(result)
    for error in result.errors:
        if error.error_type != "VmNotFound":
            raise error
    found = _dicts(result)
    return found[0] if found else None


def _read_source(client: HostClient, request: PreflightInput, vm: dict[str, Any]) -> dict[str, Any]:
    name = request.vm
    facts: dict[str, Any] = {"vm": vm}
    facts["drives"] = _dicts(client.run("Get-VMHardDiskDrive", {"VMName": name}))
    paths = [d["Path"] for d in facts["drives"] if d.get("DiskNumber") is None and d.get("Path")]
    facts["vhds"] = _dicts(client.run("Get-VHD", {"Path": paths})) if paths else []
    facts["adapters"] = _dicts(client.run("Get-VMNetworkAdapter", {"VMName": name}))
    facts["dvds"] = _dicts(client.run("Get-VMDvdDrive", {"VMName": name}))
    facts["processor"] = _one(client.run("Get-VMProcessor", {"VMName": name}))
    facts["host"] = _one(client.run("Get-VMHost"))
    facts["cpus"] = _dicts(client.run("Get-CimInstance", {"ClassName": "Win32_Processor"}))
    _heartbeat(f"preflight {name}: source read")
    tnc = client.run("Test-NetConnection", {"ComputerName": request.destination, "Port": MIGRATION_PORT}, check=False)
    _raise_if_transient(tnc)
    facts["tnc"] = _one(tnc)
    facts["cluster"] = _cluster_name(client) if vm.get("IsClustered") else ""
    parameters: dict[str, Any] = {"Name": name, "DestinationHost": request.destination}
    switches: tuple[str, ...] = ()
    if request.storage_path:
        parameters["DestinationStoragePath"] = request.storage_path
    elif request.include_storage:
        switches = ("IncludeStorage",)
    compare = client.run("Compare-VM", parameters, switches=switches, check=False)
    _raise_if_transient(compare, findings=frozenset({MIGRATION_NETWORK_ERROR}))
    facts["compare"] = _one(compare)
    facts["compare_errors"] = [str(error) for error in compare.errors]
    facts["compare_unreachable"] = [
        str(error) for error in compare.errors if getattr(error, "error_type", "") == MIGRATION_NETWORK_ERROR
    ]
    facts["compare_clustered"] = [
        str(error) for error in compare.errors if getattr(error, "error_type", "") == VM_IS_CLUSTERED
    ]
    return facts


def _cluster_name(client: HostClient) -> str:
    """The failover cluster this host is a node of, or "" when it is none.

    A standalone host answers Get-Cluster with "the cluster service is not running" (or has no FailoverClusters
    module at all): that is the answer here, not a fault to retry. A node whose cluster service is down reads as
    no node too, which errs on the safe side: the saga then asks before it lets the VM lose HA.
    """
    found = client.run("Get-Cluster", check=False)
    _raise_if_transient(found, findings=frozenset({CLUSTER_SERVICE_UNAVAILABLE}))
    return str(_one(found).get("Name") or "")


def _read_destination(client: HostClient, request: PreflightInput, iso_paths: Sequence[str]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    facts["host"] = _one(client.run("Get-VMHost"))
    facts["cluster"] = _cluster_name(client)
    facts["switches"] = _dicts(client.run("Get-VMSwitch"))
    facts["cpus"] = _dicts(client.run("Get-CimInstance", {"ClassName": "Win32_Processor"}))
    facts["os"] = _one(client.run("Get-CimInstance", {"ClassName": "Win32_OperatingSystem"}))
    facts["firewall"] = _dicts(client.run("Get-NetFirewallRule", {"Name": FIREWALL_RULE}, check=False))
    facts["smb"] = _one(client.run("Get-SmbServerConfiguration"))
    facts["bindings"] = _dicts(client.run("Get-NetAdapterBinding", {"ComponentID": ["ms_msclient", "ms_server"]}))
    storage = request.storage_path or str(facts["host"].get("VirtualMachinePath") or "")
    drive = ntpath.splitdrive(storage)[0].rstrip(":")
    facts["drive"] = drive
    volume = client.run("Get-Volume", {"DriveLetter": drive}, check=False) if drive else None
    if volume is not None:
        _raise_if_transient(volume)
    facts["volume"] = _one(volume) if volume is not None else {}
    facts["isos"] = {}
    if iso_paths:
        found = client.run("Test-Path", {"Path": list(iso_paths)}, check=False)
        _raise_if_transient(found)
        facts["isos"] = {path: bool(value) for path, value in zip(iso_paths, found.output, strict=False)}
    return facts


# -- judging ------------------------------------------------------------------------------------------------
def _vendor(cpus: Sequence[Mapping[str, Any]]) -> str:
    return str(cpus[0].get("Manufacturer", "")) if cpus else ""


def _model(cpus: Sequence[Mapping[str, Any]]) -> str:
    return str(cpus[0].get("Name", "")) if cpus else ""


def _vm_checks(f: _Findings, src: Mapping[str, Any], request: PreflightInput) -> None:
    vm, s = src["vm"], request.source
    f.fact("vm.state", vm.get("State"))
    f.fact("vm.version", vm.get("Version"))
    f.fact("vm.generation", vm.get("Generation"))
    f.fact("vm.clustered", vm.get("IsClustered"))
    f.fact("vm.memory_startup_gb", _gb(int(vm.get("MemoryStartup") or 0)))
    if vm.get("IsClustered"):
        f.add(
            "vm-clustered",
            SEVERITY_INFO,
            f"{request.vm} on {s} is a clustered VM: shared-nothing live migration cannot move it as it is.",
            "the saga snapshots and removes its cluster role first, and restores it on failure",
            auto=True,
            host=s,
        )
    status = " ".join(str(x) for x in (vm.get("Status"), vm.get("SecondaryOperationalStatus")) if x)
    if "Backing up" in status or "BackingUp" in status:
        f.add(
            "backup-in-progress",
            SEVERITY_BLOCKER,
            f"a backup of {request.vm} is running on {s} (status '{vm.get('Status')}'): the move is blocked.",
            "wait for the backup to finish (or stop the backup job), then run the migration again",
            host=s,
        )
    if vm.get("ParentSnapshotId"):
        f.add(
            "checkpoints",
            SEVERITY_WARNING,
            f"{request.vm} has checkpoints (latest '{vm.get('ParentSnapshotName')}'): their differencing disks "
            "(.avhdx) move with it and add to the data to copy.",
            "delete or merge the checkpoints that are no longer needed before the move, or accept a longer copy",
            host=s,
        )
    for drive in src["drives"]:
        if drive.get("DiskNumber") is not None:
            f.add(
                "passthrough-disk",
                SEVERITY_BLOCKER,
                f"{request.vm} has a pass-through disk (physical disk {drive.get('DiskNumber')}, "
                f"{drive.get('Name')}): a shared-nothing live migration cannot move it.",
                "convert the pass-through disk to a VHDX (or detach it) before the move",
                host=s,
            )
    processor = src["processor"]
    f.fact("vm.processor_compatibility", processor.get("CompatibilityForMigrationEnabled"))
    f.fact("source.cpu", f"{_vendor(src['cpus'])} {_model(src['cpus'])}".strip())


def _host_checks(f: _Findings, src: Mapping[str, Any], dst: Mapping[str, Any], request: PreflightInput) -> None:
    vm, s, d = src["vm"], request.source, request.destination
    running = vm.get("State") == "Running"
    storage = request.include_storage or bool(request.storage_path)
    # processor
    src_vendor, dst_vendor = _vendor(src["cpus"]), _vendor(dst["cpus"])
    f.fact("destination.cpu", f"{dst_vendor} {_model(dst['cpus'])}".strip())
    if src_vendor and dst_vendor and src_vendor != dst_vendor:
        f.add(
            "cpu-vendor-mismatch",
            SEVERITY_BLOCKER if running else SEVERITY_WARNING,
            f"{s} has {src_vendor} processors and {d} has {dst_vendor}: a running VM ({request.vm}) cannot "
            "live-migrate between processor vendors, even with processor compatibility on.",
            "choose a destination with the same processor vendor, or shut the VM down and move it offline",
            host=d,
        )
    elif _model(src["cpus"]) != _model(dst["cpus"]) and not src["processor"].get("CompatibilityForMigrationEnabled"):
        f.add(
            "processor-compatibility",
            SEVERITY_WARNING,
            f"{request.vm} runs without processor compatibility and {d}'s processor ({_model(dst['cpus'])}) differs "
            f"from {s}'s ({_model(src['cpus'])}): the move may be refused for processor features.",
            "turn on processor compatibility for the VM (Set-VMProcessor -CompatibilityForMigrationEnabled $true, "
            "with the VM off), or choose a host with the same processor",
            host=d,
        )
    # live migration on both hosts
    for host_name, host in ((s, src["host"]), (d, dst["host"])):
        f.fact(f"{host_name}.migration_enabled", host.get("VirtualMachineMigrationEnabled"))
        f.fact(f"{host_name}.migration_auth", host.get("VirtualMachineMigrationAuthenticationType"))
        f.fact(f"{host_name}.max_vm_migrations", host.get("MaximumVirtualMachineMigrations"))
        if host and not host.get("VirtualMachineMigrationEnabled"):
            f.add(
                "live-migration-disabled",
                SEVERITY_WARNING,
                f"live migration is disabled on {host_name}.",
                "the saga enables it (Enable-VMMigration, Kerberos, the migration networks) and restores the "
                "previous settings afterwards by policy",
                host=host_name,
                auto=True,
            )
    src_domain, dst_domain = src["host"].get("FullyQualifiedDomainName"), dst["host"].get("FullyQualifiedDomainName")
    if src_domain and dst_domain and str(src_domain).lower() != str(dst_domain).lower():
        f.add(
            "different-domain",
            SEVERITY_BLOCKER,
            f"{s} is in domain {src_domain} and {d} in {dst_domain}: both hosts must be in the same AD domain "
            "(or trusting domains) for Kerberos live migration.",
            "join both hosts to the same domain, or choose a destination in the source's domain",
            host=d,
        )
    # configuration version
    supported = [str(v) for v in (dst["host"].get("SupportedVmVersions") or [])]
    version = str(vm.get("Version") or "")
    if supported and version and version not in supported:
        f.add(
            "config-version-unsupported",
            SEVERITY_BLOCKER,
            f"{request.vm} is at configuration version {version}, which {d} does not run (it supports "
            f"{', '.join(supported)}); events 10698 / 21502.",
            "choose a destination running the same or a newer Windows Server; a configuration version cannot be "
            "lowered",
            host=d,
        )
    # switches
    dst_switches = {str(sw.get("Name", "")).lower() for sw in dst["switches"]}
    for adapter in src["adapters"]:
        switch = adapter.get("SwitchName")
        if switch and str(switch).lower() not in dst_switches:
            f.add(
                "switch-missing",
                SEVERITY_BLOCKER,
                f"{request.vm}'s adapter '{adapter.get('Name')}' is on switch '{switch}', which {d} does not have "
                "(Compare-VM MessageId 33012).",
                f"create a virtual switch named '{switch}' on {d}, or reconnect the adapter to a switch {d} has",
                host=d,
            )
    # memory
    free = int(dst["os"].get("FreePhysicalMemory") or 0) * 1024
    need = int(vm.get("MemoryStartup") or 0)
    if running:
        need = max(need, int(vm.get("MemoryAssigned") or 0))
    f.fact(f"{d}.free_memory_gb", _gb(free))
    if dst["os"] and need > free:
        f.add(
            "memory",
            SEVERITY_BLOCKER,
            f"{request.vm} needs {_gb(need)} of memory and {d} has {_gb(free)} free (the move would fail with "
            "0x8007000E / 0x800705AA).",
            f"free memory on {d} (move or stop other VMs) or choose another destination",
            host=d,
        )
    # disk space
    vhd_bytes = sum(int(v.get("FileSize") or 0) for v in src["vhds"])
    f.fact("vm.vhd_file_size_gb", _gb(vhd_bytes))
    # What a move carries (memory once, the disks' bytes), for the move's progress in bytes.
    f.fact("vm.move_bytes", int(vm.get("MemoryStartup") or 0) + vhd_bytes)
    volume = dst["volume"]
    if storage and volume:
        remaining = int(volume.get("SizeRemaining") or 0)
        f.fact(f"{d}.free_space_{dst['drive']}_gb", _gb(remaining))
        if vhd_bytes + _SPACE_MARGIN > remaining:
            f.add(
                "disk-space",
                SEVERITY_BLOCKER,
                f"{request.vm}'s disks take {_gb(vhd_bytes)} and {d}'s {dst['drive']}: volume has {_gb(remaining)} "
                "free.",
                f"free space on {d}'s {dst['drive']}: volume, or choose another storage path or destination",
                host=d,
            )
    # ISO
    for path, present in dst["isos"].items():
        if not present:
            f.add(
                "iso-missing-on-destination",
                SEVERITY_WARNING,
                f"{request.vm} has the ISO {path} mounted and {d} has no such file (the move would fail with "
                "0xC03A0014).",
                f"the saga ejects the ISO from the VM's DVD drive; or copy it to {path} on {d} first",
                host=d,
                auto=True,
            )
    # firewall and the path to TCP 6600
    rules = dst["firewall"]
    if rules and all(rule.get("Enabled") != _RULE_ENABLED for rule in rules):
        f.add(
            "firewall-6600-closed",
            SEVERITY_BLOCKER,
            f"the inbound firewall rule 'Hyper-V (MIG-TCP-In)' ({FIREWALL_RULE}, TCP {MIGRATION_PORT}) is disabled "
            f"on {d}: migrations into it are refused (0x8007274D).",
            f"enable the rule on {d} (Enable-NetFirewallRule -Name {FIREWALL_RULE})",
            host=d,
        )
    tnc = src["tnc"]
    f.fact("tcp_6600_reachable", tnc.get("TcpTestSucceeded"))
    if tnc and not tnc.get("TcpTestSucceeded") and not f.has("firewall-6600-closed"):
        f.add(
            "port-6600-unreachable",
            SEVERITY_BLOCKER,
            f"{s} cannot open TCP {MIGRATION_PORT} on {d} (Test-NetConnection from {s} failed).",
            f"check the network between the hosts and that {d}'s vmms listens on TCP {MIGRATION_PORT}",
            host=d,
        )
    # SMB and bindings (the storage side of a shared-nothing move)
    smb_severity = SEVERITY_BLOCKER if storage else SEVERITY_WARNING
    f.fact(f"{d}.smb2_enabled", dst["smb"].get("EnableSMB2Protocol"))
    if dst["smb"] and dst["smb"].get("EnableSMB2Protocol") is False:
        f.add(
            "smb2-disabled",
            smb_severity,
            f"SMB 2/3 is disabled on {d} (EnableSMB2Protocol False): a move with storage needs SMB 3.",
            f"enable it on {d}: Set-SmbServerConfiguration -EnableSMB2Protocol $true",
            host=d,
        )
    for binding in dst["bindings"]:
        if binding.get("Enabled") is False:
            f.add(
                "binding-missing",
                smb_severity,
                f"'{binding.get('DisplayName')}' ({binding.get('ComponentID')}) is not bound on {d}'s adapter "
                f"'{binding.get('Name')}'.",
                f"bind it: Enable-NetAdapterBinding -Name '{binding.get('Name')}' -ComponentID "
                f"{binding.get('ComponentID')} on {d}",
                host=d,
            )


def _ha_checks(f: _Findings, src: Mapping[str, Any], dst: Mapping[str, Any], request: PreflightInput) -> None:
    """A highly available VM keeps HA only when the destination is a cluster node (the saga makes its role there)."""
    if not src["vm"].get("IsClustered"):
        return
    cluster, destination_cluster = src.get("cluster") or "its cluster", dst.get("cluster") or ""
    f.fact(f"{request.destination}.cluster", destination_cluster)
    if destination_cluster:
        f.add(
            "ha-restored-on-destination",
            SEVERITY_INFO,
            f"{request.vm} is highly available in {cluster}; {request.destination} is a node of "
            f"{destination_cluster}, where the saga makes it highly available again after the move.",
            "nothing to do; --ha drop moves it without HA",
            host=request.destination,
        )
        return
    f.add(
        "ha-lost",
        SEVERITY_WARNING,
        f"{request.vm} is highly available in {cluster} and {request.destination} is not a cluster node: after the "
        "move it will no longer be highly available.",
        "choose a destination that is a cluster node, or accept it explicitly: the move needs --ha drop "
        "(policy ha: drop) before anything changes",
        host=request.destination,
    )


def _compare_checks(f: _Findings, src: Mapping[str, Any], request: PreflightInput) -> None:
    for text in src.get("compare_unreachable", []):
        if not f.has("port-6600-unreachable") and not f.has("firewall-6600-closed"):
            f.add(
                "port-6600-unreachable",
                SEVERITY_BLOCKER,
                f"{request.source} cannot reach {request.destination} for a migration: {text}",
                f"check the network between the hosts and that {request.destination}'s vmms listens on TCP "
                f"{MIGRATION_PORT}",
                host=request.destination,
            )
    if src.get("compare_clustered") and f.has("vm-clustered"):
        # Hyper-V's Compare-VM refuses a clustered VM until its role is removed, which preflight must not do: the
        # checks above, read from both hosts, stand in for it, and the move itself is the final word.
        f.add(
            "compare-vm-after-ha-removal",
            SEVERITY_INFO,
            f"Compare-VM cannot check {request.vm} while it is clustered; the host checks above stand in for it.",
            "nothing to do: the saga removes the cluster role before the move",
            host=request.source,
        )
    for text in src["compare_errors"]:
        if text in src.get("compare_unreachable", []) or text in src.get("compare_clustered", []):
            continue
        f.add(
            "compare-vm-failed",
            SEVERITY_WARNING,
            f"Compare-VM for {request.vm} from {request.source} to {request.destination} failed: {text}",
            "see the other concerns; the move will report the same error",
            host=request.source,
        )
    incompatibilities = src["compare"].get("Incompatibilities") or []
    for item in incompatibilities if isinstance(incompatibilities, list) else []:
        if not isinstance(item, dict):
            continue
        message_id = int(item.get("MessageId") or 0)
        message = str(item.get("Message") or "")
        concern_id = COMPARE_VM_IDS.get(message_id)
        if concern_id is None and "Could not find Ethernet switch" in message:
            concern_id = "switch-missing"
        concern_id = concern_id or f"incompatibility-{message_id}"
        if f.has(concern_id) or any(f.has(k) for k, v in _SUPERSEDES.items() if v == concern_id):
            continue
        auto = concern_id in ("iso-missing-on-destination", "destination-leftovers")
        f.add(
            concern_id,
            SEVERITY_WARNING if auto else SEVERITY_BLOCKER,
            f"Compare-VM ({request.source} -> {request.destination}): {message} (MessageId {message_id})",
            "fix the incompatibility on the VM or the destination, then run the migration again",
            host=request.destination,
            auto=auto,
        )


# -- the activity ---------------------------------------------------------------------------------------------
def run_preflight(inventory: Inventory, request: PreflightInput, **client_options: Any) -> PreflightReport:
    """Read both hosts and judge. Raises the host client's errors (transient ones are retried by Temporal)."""
    f = _Findings(request.vm, request.source, request.destination)
    trips: dict[str, int] = {}
    source_entry, destination_entry = inventory.host(request.source), inventory.host(request.destination)
    src_client = HostClient(source_entry, **client_options)
    try:
        with src_client:
            vm = _find_vm(src_client, request.vm)
            src = _read_source(src_client, request, vm) if vm is not None else None
    finally:
        trips[request.source] = src_client.round_trips
    _heartbeat(f"preflight {request.vm}: source done")
    iso_paths = [str(d["Path"]) for d in (src["dvds"] if src else []) if d.get("Path")]
    dst_client = HostClient(destination_entry, **client_options)
    try:
        with dst_client:
            on_destination = _find_vm(dst_client, request.vm)
            dst = _read_destination(dst_client, request, iso_paths) if src is not None else None
    finally:
        trips[request.destination] = dst_client.round_trips
    _heartbeat(f"preflight {request.vm}: destination done")

    planned = on_destination is not None and on_destination.get("VirtualMachineType") == "PlannedVirtualMachine"
    if src is None:
        if on_destination is not None and not planned:
            f.add(
                "vm-already-on-destination",
                SEVERITY_INFO,
                f"{request.vm} is not on {request.source} but already runs on {request.destination}: nothing to move.",
                "none: the move is already done",
                host=request.destination,
            )
        else:
            f.add(
                "vm-not-found",
                SEVERITY_BLOCKER,
                f"no VM named {request.vm} on {request.source} (nor on {request.destination}).",
                "check the VM's name and which host it runs on (Get-VM on the hosts), then submit the move again",
                host=request.source,
            )
    else:
        if on_destination is not None:
            f.add(
                "destination-leftovers",
                SEVERITY_WARNING,
                f"{request.destination} already lists a VM named {request.vm} "
                f"({on_destination.get('VirtualMachineType')}), probably left by an earlier failed move.",
                "the saga removes the planned VM and its partial files on the destination before moving",
                host=request.destination,
                auto=planned,
            )
        assert dst is not None
        _vm_checks(f, src, request)
        _host_checks(f, src, dst, request)
        _compare_checks(f, src, request)
        _ha_checks(f, src, dst, request)
    order = {SEVERITY_BLOCKER: 0, SEVERITY_WARNING: 1, SEVERITY_INFO: 2}
    concerns = tuple(sorted(f.concerns, key=lambda c: order.get(c.severity, 3)))
    summary = PreflightFacts()
    if src is not None and dst is not None:
        moved = f.facts.get("vm.move_bytes", "")
        summary = PreflightFacts(
            vm_id=str(src["vm"].get("Id") or src["vm"].get("VMId") or ""),
            clustered=bool(src["vm"].get("IsClustered")),
            cluster=str(src.get("cluster") or ""),
            destination_cluster=str(dst.get("cluster") or ""),
            move_bytes=int(moved) if moved.isdigit() else 0,
        )
    return PreflightReport(
        request.vm, request.source, request.destination, concerns, dict(f.facts), trips, summary=summary
    )


class PreflightActivities:
    """The preflight activity; synchronous (PSRP blocks), so the worker runs it on a thread pool."""

    def __init__(self, inventory: Inventory, **client_options: Any) -> None:
        self._inventory = inventory
        self._client_options = client_options

    @activity.defn(name="preflight")
    def preflight(self, request: PreflightInput) -> PreflightReport:
        try:
            return run_preflight(self._inventory, request, **self._client_options)
        except SnlmError as error:
            if activity.in_activity():
                raise error.to_application_error() from None
            raise
