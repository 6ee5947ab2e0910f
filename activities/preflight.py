"""Preflight: read-only facts from the source and destination hosts -> a report of concerns.

Step 1 of MigrateVm (DESIGN.md). Nothing here changes a host: only Get-* cmdlets, Test-Path,
Test-NetConnection and Compare-VM (which creates nothing: its planned VM lives only in the report). Each host
gets ONE session of the worker's pool (activities/hosts.py `HostSessions`), and the reads that do not depend on
each other share a round trip (`HostClient.batch`): on the source its VMs with its host facts, then the VM's
reads by its Id, then its VHDs with Compare-VM (which needs the storage path the destination decides); on the
destination its VMs with its host facts, then the files and volume the move would use (and, only when an
earlier move left files there, whose disks they are). `PreflightReport.round_trips` says how many PSRP round
trips each host cost (the session's open included when this preflight opened it): 3 and 2 on open sessions.

Preflight also reads what the saga would otherwise read again moments later (`PreflightFacts`): the VM's files
as `read_vm` reports them (activities/vms.py `vm_files`) and both hosts' live-migration settings as
`read_migration_settings` reads them (activities/host_settings.py). A read made only for those facts never
changes a verdict: when it fails, the facts are left out and the saga reads them itself.

`preflight_batch` preflights several VMs of one host pair: each host's reads are made once for all of them, the
VMs' reads are batched together (20 VMs a batch), and each VM costs one round trip of its own, its Compare-VM
(whose expected errors tell VMs apart only by the statement they come with). Each VM's report is what
`preflight` alone finds for it.

Severities follow reference/hyperv-facts.md ("Requirements to check before a move", the failures table):
what makes Move-VM fail and cannot be fixed by the saga is a blocker; what the saga fixes (live migration
disabled, an ISO to eject, HA to remove) is a warning or info marked auto-remediable; the rest is info.

The VM is found by its name taken literally (activities/vms.py: the host lists its VMs, snlm compares names),
then every command addresses it by its Id. No VM of that name is a `vm-not-found` blocker, several are
`vm-name-ambiguous`; a different VM of that name on the destination is `vm-name-clash`, never a leftover.

Compare-VM's findings are judged by what snlm read itself first, and by their MessageId and Source type only
where its own reads say nothing: a finding about an object a fact check already judged adds nothing but the
host's words to that concern (so an ISO missing on the destination stays the warning the saga fixes, whatever
id the host gives it); a known id (catalogue 6.2) with the Source type it belongs to becomes its concern; any
other finding is a `compare-vm-incompatibility` blocker that quotes the host's message, id and Source type.

Errors: a host that cannot be reached, a session that breaks, a busy host are the host client's transient
errors and propagate (Temporal retries the activity); a VM that is not there is a `vm-not-found` blocker, not
an exception. Inside an activity every SnlmError leaves as an ApplicationError of its stable type.
"""

from __future__ import annotations

import dataclasses
import ntpath
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from temporalio import activity

from activities.errors import TransientError, UnknownError
from activities.host_settings import FIREWALL_RULE, firewall_rule_absent, migration_settings, settings_commands
from activities.hosts import Command, CommandResult, HostClient, HostSessions, Statement, side_by_side
from activities.inventory import Inventory
from activities.vms import (
    by_id,
    by_name,
    config_file_candidates,
    existing_paths,
    folder_name_problem,
    is_planned,
    vm_commands,
    vm_files,
    vm_id,
    vm_index,
)
from workflows.contracts import (
    CLUSTER_SERVICE_UNAVAILABLE,
    HOST_COMMAND_FAILED,
    MIGRATION_NETWORK_ERROR,
    SEVERITY_BLOCKER,
    SEVERITY_INFO,
    SEVERITY_WARNING,
    VM_IS_CLUSTERED,
    ActivityName,
    Concern,
    ConcernId,
    HostMigrationSettings,
    PreflightBatchInput,
    PreflightBatchReport,
    PreflightFacts,
    PreflightInput,
    PreflightReport,
    Severity,
)

__all__ = ["COMPARE_VM_IDS", "UNKNOWN_INCOMPATIBILITY", "PreflightActivities", "run_preflight", "run_preflight_batch"]

GIB = 1024**3
MIGRATION_PORT = 6600
# MSFT_NetFirewallRule.Enabled: 1 True, 2 False.
_RULE_ENABLED = 1
ISO_MISSING: Final = ConcernId.ISO_MISSING_ON_DESTINATION
LEFTOVERS: Final = ConcernId.DESTINATION_LEFTOVERS
UNKNOWN_INCOMPATIBILITY: Final = ConcernId.COMPARE_VM_INCOMPATIBILITY

# Compare-VM's Source types (catalogue 6.2).
_ADAPTER, _PROCESSOR, _MEMORY = "VMNetworkAdapter", "VMProcessor", "VMMemory"
_DISK, _DVD, _VM, _CHECKPOINT, _FC = "HardDiskDrive", "DvdDrive", "VirtualMachine", "VMSnapshot", "VMFibreChannelHba"
_NONE = ""  # Source null


@dataclass(frozen=True)
class _Known:
    """A Compare-VM MessageId the Hyper-V client library defines: the concern it is, for the Source types it
    comes with (another Source type means another finding, judged as unknown)."""

    concern: ConcernId
    sources: frozenset[str]


def _known(concern: ConcernId, *sources: str) -> _Known:
    return _Known(concern, frozenset(sources))


_MEMORY_IDS = range(40012, 40041, 2)  # MemoryWeightAboveMax .. DynamicMemoryNumaSpanningConflict
_STORAGE_PATH_IDS = (32900, 32906, 32908, 32928)
# MessageId -> concern (NEON ValidationErrorId, catalogue 6.2; 33012 also PSD Compare-VM example 2).
COMPARE_VM_IDS: dict[int, _Known] = {
    33010: _known(ConcernId.SWITCH_MISSING, _ADAPTER),
    33012: _known(ConcernId.SWITCH_MISSING, _ADAPTER),
    33014: _known(ConcernId.SWITCH_MISSING, _ADAPTER),
    24002: _known(ConcernId.CPU_VENDOR_MISMATCH, _PROCESSOR),
    24004: _known(ConcernId.PROCESSOR_INCOMPATIBLE, _PROCESSOR),
    24006: _known(ConcernId.CONFIG_VERSION_UNSUPPORTED, _VM),
    24008: _known(ConcernId.DEVICE_INCOMPATIBLE, _ADAPTER, _DISK, _DVD, _FC, "VMComPort", _VM),
    25014: _known(ConcernId.PROCESSOR_INCOMPATIBLE, _VM, _PROCESSOR),
    40008: _known(ConcernId.PASSTHROUGH_DISK, _DISK),
    27106: _known(ConcernId.PASSTHROUGH_DISK, _DISK),
    40010: _known(ConcernId.VHD_NOT_REACHABLE, _DISK),
    21016: _known(ConcernId.SAVED_STATE_INCOMPATIBLE, _VM, _CHECKPOINT),
    40002: _known(ConcernId.VM_FILES_MISSING, _VM, _CHECKPOINT),
    40004: _known(ConcernId.VM_FILES_MISSING, _VM, _CHECKPOINT),
    40006: _known(ConcernId.VM_FILES_MISSING, _VM, _CHECKPOINT),
    32172: _known(ConcernId.FIBRE_CHANNEL_SAN_MISSING, _FC),
    32173: _known(ConcernId.FIBRE_CHANNEL_SAN_MISSING, _FC),
    13000: _known(ConcernId.DESTINATION_PATH, _VM, _NONE),
    16350: _known(ConcernId.DESTINATION_PATH, _VM, _CHECKPOINT, _NONE),
    16352: _known(ConcernId.DESTINATION_PATH, _VM, _NONE),
    32605: _known(ConcernId.REMOTEFX_INCOMPATIBLE, _VM, _NONE),
    **{i: _known(ConcernId.MEMORY, _MEMORY) for i in _MEMORY_IDS},
    23134: _known(ConcernId.MEMORY, _MEMORY),
    **{i: _known(ConcernId.PROCESSOR_SETTINGS, _PROCESSOR) for i in (14390, 14400, 14410, 14420, 14424)},
    **{i: _known(ConcernId.DESTINATION_PATH, _VM, _DISK, _NONE) for i in _STORAGE_PATH_IDS},
}
# The blockers a fact check states for each Source type: a finding the engine cannot place more precisely
# (unknown id) is folded into one of these when the run is blocked for it anyway.
_BLOCKERS_BY_SOURCE: dict[str, tuple[ConcernId, ...]] = {
    _ADAPTER: (ConcernId.SWITCH_MISSING,),
    _PROCESSOR: (ConcernId.CPU_VENDOR_MISMATCH, ConcernId.PROCESSOR_INCOMPATIBLE),
    _MEMORY: (ConcernId.MEMORY,),
    _DISK: (ConcernId.PASSTHROUGH_DISK, ConcernId.DISK_SPACE),
    _VM: (ConcernId.BACKUP_IN_PROGRESS, ConcernId.CONFIG_VERSION_UNSUPPORTED, ConcernId.VM_ON_BOTH_HOSTS),
}
# An allowance over the VHD file sizes: configuration, runtime state and headroom.
_SPACE_MARGIN = 1 * GIB
_OBJECT_NOT_FOUND = 13  # ErrorCategory.ObjectNotFound: Get-Volume -DriveLetter of a volume the host does not have


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
        self, id: ConcernId, severity: Severity, message: str, remedy: str, *, host: str = "", auto: bool = False
    ) -> None:
        if any(c.id == id and c.host == host for c in self.concerns):
            return
        self.concerns.append(Concern(id, severity, message, remedy, auto, host))

    def has(self, id: ConcernId) -> bool:
        return any(c.id == id for c in self.concerns)

    def get(self, id: ConcernId) -> Concern | None:
        return next((c for c in self.concerns if c.id == id), None)

    def note(self, id: str, text: str) -> None:
        """Add `text` to the concern `id` (once): the host's words on a finding it already states."""
        for index, concern in enumerate(self.concerns):
            if concern.id == id and text not in concern.message:
                self.concerns[index] = dataclasses.replace(concern, message=f"{concern.message} {text}")
                return

    def block(self, id: str) -> None:
        """Make the concern `id` a blocker (the host confirms what snlm's reads could only suspect)."""
        self.concerns = [
            dataclasses.replace(c, severity=SEVERITY_BLOCKER, auto_remediable=False) if c.id == id else c
            for c in self.concerns
        ]

    def fact(self, key: str, value: Any) -> None:
        self.facts[key] = "" if value is None else str(value)


# -- reading the hosts ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Incompatibility:
    """One VMCompatibilityError of Compare-VM's report: its text and id, the .NET type of its Source (its last
    name segment; "" for null) and the Source's properties when they came over the wire."""

    message: str
    message_id: int
    source_type: str
    source: Mapping[str, Any]


def _type_name(obj: Any) -> str:
    types = getattr(obj, "types", None) or []
    name = str(types[0]) if types else ""
    return name.removeprefix("Deserialized.").rsplit(".", 1)[-1]


def _raw_items(report: Any, name: str) -> list[Any]:
    for bag in (getattr(report, "adapted_properties", None) or {}, getattr(report, "extended_properties", None) or {}):
        if name in bag:
            value = bag[name]
            return list(value) if isinstance(value, list | tuple) else []
    return []


def _incompatibilities(result: CommandResult) -> list[_Incompatibility]:
    """The report's findings, with each Source's type read from the objects as deserialized (the flattened
    output keeps properties only)."""
    report = _one(result)
    flat = report.get("Incompatibilities") or []
    raw = _raw_items(result.raw_output[0], "Incompatibilities") if result.raw_output else []
    found = []
    for index, item in enumerate(flat if isinstance(flat, list) else []):
        if not isinstance(item, dict):
            continue
        raw_item = raw[index] if index < len(raw) else None
        raw_source = None
        for bag in (
            getattr(raw_item, "adapted_properties", None) or {},
            getattr(raw_item, "extended_properties", None) or {},
        ):
            raw_source = bag.get("Source", raw_source)
        source = item.get("Source")
        try:
            message_id = int(item.get("MessageId") or 0)
        except (TypeError, ValueError):
            message_id = 0
        found.append(
            _Incompatibility(
                message=str(item.get("Message") or ""),
                message_id=message_id,
                source_type=_type_name(raw_source) if raw_source is not None else "",
                source=source if isinstance(source, dict) else {},
            )
        )
    return found


# -- the reads, batched ---------------------------------------------------------------------------------------
def _checked(result: CommandResult) -> CommandResult:
    """A read judged as `HostClient.run` judges it (`check=True`): its first error raised."""
    if result.errors:
        raise result.errors[0]
    return result


_UNSEEN = "Unknown"  # CommandResult.state of a statement of a batch whose end the client did not see


def _read(client: HostClient, statements: Sequence[Statement]) -> list[CommandResult]:
    """Run `statements` in one round trip (`HostClient.batch`), each result with its errors left in it
    (`check=False`) for the caller to judge as it would judge the command run alone.

    A statement that ends the whole invocation (a cmdlet's terminating error, an error under an action preference
    of Stop) leaves the statements after it run unseen (state "Unknown", no output): those go again, in a batch of
    their own, one more round trip in that rare case rather than a read lost."""
    results: list[CommandResult | None] = [None] * len(statements)
    pending = list(range(len(statements)))
    while pending:
        got = client.batch([statements[i] for i in pending], check=False)
        unseen = [i for i, result in zip(pending, got, strict=True) if result.state == _UNSEEN]
        if len(unseen) == len(pending):
            raise UnknownError(
                f"{client.host}: a batch of {len(pending)} reads ended before any ran",
                error_type=HOST_COMMAND_FAILED,
                remedy="retried; see the host's records",
                details={"host": client.host, "commands": [got[0].command]},
            )
        for i, result in zip(pending, got, strict=True):
            if result.state != _UNSEEN:
                results[i] = result
        pending = unseen
    return [result for result in results if result is not None]


def _source_statements() -> dict[str, Statement]:
    """What preflight reads of the source whatever the VM: its VMs' index (to find the one named), then host
    facts."""
    host, networks, rules = settings_commands()
    return {
        "vms": vm_index(),
        "host": host,
        "cpus": Command("Get-CimInstance", {"ClassName": "Win32_Processor"}),
        "networks": networks,
        "rules": rules,
        "cluster": Command("Get-Cluster"),
    }


def _destination_statements() -> dict[str, Statement]:
    """What preflight reads of the destination whatever the VM: its VMs' index (a name or an Id already there),
    then host facts."""
    host, networks, rules = settings_commands()
    return {
        "vms": vm_index(),
        "host": host,
        "switches": Command("Get-VMSwitch"),
        "cpus": Command("Get-CimInstance", {"ClassName": "Win32_Processor"}),
        "os": Command("Get-CimInstance", {"ClassName": "Win32_OperatingSystem"}),
        "networks": networks,
        "rules": rules,
        "smb": Command("Get-SmbServerConfiguration"),
        "bindings": Command("Get-NetAdapterBinding", {"ComponentID": ["ms_msclient", "ms_server"]}),
        "cluster": Command("Get-Cluster"),
    }


@dataclass
class _HostReads:
    """One host's reads that serve every VM of the preflight, made in one batch and judged when first used: a
    read failing is an error only for a preflight that needed it, as when each command ran on its own."""

    host: str  # the inventory's name, which HostMigrationSettings carries
    results: dict[str, CommandResult]

    @classmethod
    def read(cls, client: HostClient, statements: Mapping[str, Statement]) -> _HostReads:
        return cls(client.host, dict(zip(statements, _read(client, list(statements.values())), strict=True)))

    def dicts(self, key: str) -> list[dict[str, Any]]:
        return _dicts(_checked(self.results[key]))

    def one(self, key: str) -> dict[str, Any]:
        return _one(_checked(self.results[key]))

    def cluster(self) -> str:
        """The failover cluster this host is a node of, or "" when it is none.

        A standalone host answers Get-Cluster with "the cluster service is not running" (or has no
        FailoverClusters module at all): that is the answer here, not a fault to retry. A node whose cluster
        service is down reads as no node too, which errs on the safe side: the saga then asks before it lets the
        VM lose HA.
        """
        found = self.results["cluster"]
        _raise_if_transient(found, findings=frozenset({CLUSTER_SERVICE_UNAVAILABLE}))
        return str(_one(found).get("Name") or "")

    def settings(self) -> HostMigrationSettings | None:
        """The live-migration settings as `read_migration_settings` reads them, or None when a read failed (the
        saga then reads them itself; preflight's verdicts never depend on them)."""
        host, networks, rules = (self.results[key] for key in ("host", "networks", "rules"))
        if host.errors or networks.errors or not all(firewall_rule_absent(info) for info in rules.records):
            return None
        return migration_settings(self.host, _dicts(host), _dicts(networks), _dicts(rules))


@dataclass
class _Vm:
    """One VM of a preflight: its request, the VMs of its name on the source, and what was read of it."""

    request: PreflightInput
    named: list[Mapping[str, Any]] = field(default_factory=list)
    src: dict[str, Any] | None = None
    dst: dict[str, Any] | None = None
    # The configuration files that exist (read_vm's reading), None when that read failed.
    config: list[str] | None = None
    # Round trips made for this VM alone, per host (a batch's shared reads are the batch's).
    trips: Counter[str] = field(default_factory=Counter)

    @property
    def vm(self) -> dict[str, Any] | None:
        return dict(self.named[0]) if len(self.named) == 1 else None


def _vm_statements(guid: str, candidates: Sequence[str]) -> list[Statement]:
    """The reads of one VM on the source, by its Id: the VM itself (the index has only its name), drives, adapters,
    DVD drives, processor, and which of its configuration files exist (read_vm's reading, for the saga)."""
    of_vm = [vm_commands(guid), *(vm_commands(guid, Command(cmdlet)) for cmdlet in _VM_CMDLETS)]
    return [*of_vm, *([Command("Test-Path", {"LiteralPath": list(candidates)})] if candidates else [])]


_VM_CMDLETS = ("Get-VMHardDiskDrive", "Get-VMNetworkAdapter", "Get-VMDvdDrive", "Get-VMProcessor")
# VMs whose reads share one batch: bounds a batch's message and the objects it brings back.
_VMS_PER_BATCH = 20


def _chunks(items: Sequence[_Vm]) -> list[Sequence[_Vm]]:
    return [items[i : i + _VMS_PER_BATCH] for i in range(0, len(items), _VMS_PER_BATCH)]


def _read_sources(client: HostClient, host: _HostReads, vms: Sequence[_Vm], destination: str) -> None:
    """Every VM's facts on the source (`_Vm.src`): the VMs' reads batched together, with the one
    Test-NetConnection to the destination; the Get-VHD each VM needs goes with its Compare-VM (`_compare`)."""
    vmhost, cpus = host.one("host"), host.dicts("cpus")
    tnc: dict[str, Any] = {}
    for index, chunk in enumerate(_chunks(vms)):
        candidates = [config_file_candidates(v.named[0]) for v in chunk]
        statements: list[Statement] = []
        for v, paths in zip(chunk, candidates, strict=True):
            statements += _vm_statements(vm_id(v.named[0]), paths)
        if index == 0:  # the path between the hosts: once for the pair
            statements.append(Command("Test-NetConnection", {"ComputerName": destination, "Port": MIGRATION_PORT}))
        results = iter(_read(client, statements))
        read = [
            (next(results), [next(results) for _ in _VM_CMDLETS], next(results) if paths else None)
            for paths in candidates
        ]
        if index == 0:
            found = next(results)
            _raise_if_transient(found)
            tnc = _one(found)
        # A failed Test-Path of one VM's configuration files cannot be told from another VM's in the same batch:
        # then none of them says which files exist, and the saga reads them itself (read_vm).
        config_read = not any(tested is not None and tested.errors for _, _, tested in read)
        for v, paths, (whole, of_vm, tested) in zip(chunk, candidates, read, strict=True):
            drives, adapters, dvds, processors = of_vm
            vm = _one(_checked(whole))
            processor = _dicts(_checked(processors))
            v.src = {
                "vm": vm,
                "drives": _dicts(_checked(drives)),
                "adapters": _dicts(_checked(adapters)),
                "dvds": _dicts(_checked(dvds)),
                "processor": processor[0] if processor else {},
                "host": vmhost,
                "cpus": cpus,
                "tnc": tnc,
                "cluster": host.cluster() if vm.get("IsClustered") else "",
                "vhds": [],
            }
            if config_read:
                v.config = existing_paths(paths, tested.output if tested is not None else ())


def _storage_path(request: PreflightInput, host: Mapping[str, Any]) -> str:
    """Where the move puts the VM's files on the destination: what the move activity passes to Move-VM."""
    if request.storage_path:
        return request.storage_path
    base = str(host.get("VirtualMachinePath") or "")
    return ntpath.join(base, request.vm) if request.include_storage and base else ""


def _read_destinations(client: HostClient, host: _HostReads, vms: Sequence[_Vm]) -> None:
    """Every VM's facts on the destination (`_Vm.dst`): the host's, shared, then in one batch a Test-Path per VM
    (the ISOs it has mounted and the files its move will write) and a Get-Volume per volume the moves use, and,
    only when an earlier move left files there, whose disks those are."""
    facts: dict[str, Any] = {"host": host.one("host"), "cluster": host.cluster()}
    facts["switches"] = host.dicts("switches")
    facts["cpus"] = host.dicts("cpus")
    facts["os"] = host.one("os")
    facts["firewall"] = _dicts(host.results["rules"])  # errors not judged: a host without the rule has none
    facts["smb"] = host.one("smb")
    facts["bindings"] = host.dicts("bindings")
    volumes: dict[str, dict[str, Any]] = {}
    missing: set[str] = set()  # drive letters the host has no volume for
    for chunk in _chunks(vms):
        files: list[tuple[_Vm, list[str], list[str]]] = []
        letters: list[str] = []  # the volumes not read yet
        for v in chunk:
            assert v.src is not None
            storage = _storage_path(v.request, facts["host"])
            drive = ntpath.splitdrive(storage or str(facts["host"].get("VirtualMachinePath") or ""))[0].rstrip(":")
            v.dst = {**facts, "storage": storage, "drive": drive, "target_owners": {}}
            if drive and drive not in volumes and drive not in letters:
                letters.append(drive)
            isos = [str(d["Path"]) for d in v.src["dvds"] if d.get("Path")]
            vhds = [str(d["Path"]) for d in v.src["drives"] if d.get("DiskNumber") is None and d.get("Path")]
            files.append(
                (v, isos, _dedupe([ntpath.join(storage, ntpath.basename(p)) for p in vhds]) if storage else [])
            )
        tested = [(v, isos, targets) for v, isos, targets in files if isos or targets]
        statements: list[Statement] = [Command("Test-Path", {"LiteralPath": [*i, *t]}) for _, i, t in tested]
        statements += [Command("Get-Volume", {"DriveLetter": letter}) for letter in letters]
        results = _read(client, statements) if statements else []
        for result in results[: len(tested)]:
            _raise_if_transient(result)
        for letter, result in zip(letters, results[len(tested) :], strict=True):
            # No such volume (ObjectNotFound) is a fact about the storage path, judged with the others.
            if not all(info.category == _OBJECT_NOT_FOUND for info in result.records):
                _raise_if_transient(result)
            volumes[letter] = _one(result)
            if not result.output:
                missing.add(letter)
        present = {
            id(v): [value is True for value in result.output]
            for (v, _, _), result in zip(tested, results[: len(tested)], strict=True)
        }
        for v, isos, targets in files:
            assert v.dst is not None
            found = present.get(id(v), [])
            v.dst["isos"] = {path: found[i] if i < len(found) else False for i, path in enumerate(isos)}
            v.dst["existing_targets"] = [
                t for i, t in enumerate(targets, start=len(isos)) if i < len(found) and found[i]
            ]
            v.dst["volume"] = volumes.get(v.dst["drive"], {})
            v.dst["volume_missing"] = v.dst["drive"] in missing
    if any(v.dst and v.dst["existing_targets"] for v in vms):
        # Whose disk is each of those files? Only a file no other VM uses is a leftover the move may remove.
        (disks,) = _read(client, [[Command("Get-VM"), Command("Get-VMHardDiskDrive")]])
        for disk in _dicts(_checked(disks)):
            path = str(disk.get("Path") or "")
            for v in vms:
                assert v.dst is not None
                if any(path.lower() == t.lower() for t in v.dst["existing_targets"]):
                    v.dst["target_owners"][path.lower()] = (str(disk.get("VMId") or ""), str(disk.get("VMName") or ""))


def _compare(client: HostClient, v: _Vm, storage: str) -> None:
    """The VM's VHDs (Get-VHD of the paths its drives name) and `Get-VM -Id <id> | Compare-VM` with the storage
    path the move will use, in one round trip of the VM's own: Compare-VM's errors are expected (a clustered VM,
    hosts that cannot reach each other) and are told apart only by the statement they come with."""
    assert v.src is not None
    request, src = v.request, v.src
    parameters: dict[str, Any] = {"DestinationHost": request.destination}
    switches: tuple[str, ...] = ()
    if storage:
        parameters["DestinationStoragePath"] = storage
        switches = ("IncludeStorage",)
    elif request.include_storage:
        switches = ("IncludeStorage",)
    paths = [d["Path"] for d in src["drives"] if d.get("DiskNumber") is None and d.get("Path")]
    statements: list[Statement] = [Command("Get-VHD", {"Path": paths})] if paths else []
    # Compare-VM last: whatever error the host cannot place goes to the statement that ran last.
    statements.append(vm_commands(vm_id(src["vm"]), Command("Compare-VM", parameters, switches)))
    before = client.round_trips
    *vhds, compare = _read(client, statements)
    v.trips[request.source] += client.round_trips - before
    src["vhds"] = _dicts(_checked(vhds[0])) if vhds else []
    _raise_if_transient(compare, findings=frozenset({MIGRATION_NETWORK_ERROR}))
    src["incompatibilities"] = _incompatibilities(compare)
    src["compare_errors"] = [str(error) for error in compare.errors]
    src["compare_unreachable"] = [
        str(error) for error in compare.errors if getattr(error, "error_type", "") == MIGRATION_NETWORK_ERROR
    ]
    src["compare_clustered"] = [
        str(error) for error in compare.errors if getattr(error, "error_type", "") == VM_IS_CLUSTERED
    ]


def _dedupe(paths: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for path in paths:
        seen.setdefault(path.lower(), path)
    return list(seen.values())


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
            ConcernId.VM_CLUSTERED,
            SEVERITY_INFO,
            f"{request.vm} on {s} is a clustered VM: shared-nothing live migration cannot move it as it is.",
            "the saga snapshots and removes its cluster role first, and restores it on failure",
            auto=True,
            host=s,
        )
    status = " ".join(str(x) for x in (vm.get("Status"), vm.get("SecondaryOperationalStatus")) if x)
    if "Backing up" in status or "BackingUp" in status:
        f.add(
            ConcernId.BACKUP_IN_PROGRESS,
            SEVERITY_BLOCKER,
            f"a backup of {request.vm} is running on {s} (status '{vm.get('Status')}'): the move is blocked.",
            "wait for the backup to finish (or stop the backup job), then run the migration again",
            host=s,
        )
    if vm.get("ParentSnapshotId"):
        f.add(
            ConcernId.CHECKPOINTS,
            SEVERITY_WARNING,
            f"{request.vm} has checkpoints (latest '{vm.get('ParentSnapshotName')}'): their differencing disks "
            "(.avhdx) move with it and add to the data to copy.",
            "delete or merge the checkpoints that are no longer needed before the move, or accept a longer copy",
            host=s,
        )
    for drive in src["drives"]:
        if drive.get("DiskNumber") is not None:
            f.add(
                ConcernId.PASSTHROUGH_DISK,
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
            ConcernId.CPU_VENDOR_MISMATCH,
            SEVERITY_BLOCKER if running else SEVERITY_WARNING,
            f"{s} has {src_vendor} processors and {d} has {dst_vendor}: a running VM ({request.vm}) cannot "
            "live-migrate between processor vendors, even with processor compatibility on.",
            "choose a destination with the same processor vendor, or shut the VM down and move it offline",
            host=d,
        )
    elif _model(src["cpus"]) != _model(dst["cpus"]) and not src["processor"].get("CompatibilityForMigrationEnabled"):
        f.add(
            ConcernId.PROCESSOR_COMPATIBILITY,
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
                ConcernId.LIVE_MIGRATION_DISABLED,
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
            ConcernId.DIFFERENT_DOMAIN,
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
            ConcernId.CONFIG_VERSION_UNSUPPORTED,
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
                ConcernId.SWITCH_MISSING,
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
            ConcernId.MEMORY,
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
    if storage and dst.get("volume_missing"):
        f.add(
            ConcernId.DESTINATION_PATH,
            SEVERITY_BLOCKER,
            f"{d} has no {dst['drive']}: volume, where {request.vm}'s files would go "
            f"({dst.get('storage') or dst['drive'] + ':'}).",
            _REMEDIES[ConcernId.DESTINATION_PATH].format(d=d),
            host=d,
        )
    if storage and volume:
        remaining = int(volume.get("SizeRemaining") or 0)
        f.fact(f"{d}.free_space_{dst['drive']}_gb", _gb(remaining))
        if vhd_bytes + _SPACE_MARGIN > remaining:
            f.add(
                ConcernId.DISK_SPACE,
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
                ConcernId.ISO_MISSING_ON_DESTINATION,
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
            ConcernId.FIREWALL_6600_CLOSED,
            SEVERITY_BLOCKER,
            f"the inbound firewall rule 'Hyper-V (MIG-TCP-In)' ({FIREWALL_RULE}, TCP {MIGRATION_PORT}) is disabled "
            f"on {d}: migrations into it are refused (0x8007274D).",
            f"enable the rule on {d} (Enable-NetFirewallRule -Name {FIREWALL_RULE})",
            host=d,
        )
    tnc = src["tnc"]
    f.fact("tcp_6600_reachable", tnc.get("TcpTestSucceeded"))
    if tnc and not tnc.get("TcpTestSucceeded") and not f.has(ConcernId.FIREWALL_6600_CLOSED):
        f.add(
            ConcernId.PORT_6600_UNREACHABLE,
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
            ConcernId.SMB2_DISABLED,
            smb_severity,
            f"SMB 2/3 is disabled on {d} (EnableSMB2Protocol False): a move with storage needs SMB 3.",
            f"enable it on {d}: Set-SmbServerConfiguration -EnableSMB2Protocol $true",
            host=d,
        )
    for binding in dst["bindings"]:
        if binding.get("Enabled") is False:
            f.add(
                ConcernId.BINDING_MISSING,
                smb_severity,
                f"'{binding.get('DisplayName')}' ({binding.get('ComponentID')}) is not bound on {d}'s adapter "
                f"'{binding.get('Name')}'.",
                f"bind it: Enable-NetAdapterBinding -Name '{binding.get('Name')}' -ComponentID "
                f"{binding.get('ComponentID')} on {d}",
                host=d,
            )


def _folder_checks(f: _Findings, dst: Mapping[str, Any], request: PreflightInput) -> None:
    """Without a storage path the move puts the VM's files in a folder named after it, which Windows must be able
    to create: a name snlm moves literally may hold characters no folder name can."""
    problem = "" if request.storage_path else folder_name_problem(request.vm)
    if not problem:
        return
    base = str(dst["host"].get("VirtualMachinePath") or "the destination's VirtualMachinePath")
    f.add(
        ConcernId.VM_NAME_NOT_A_FOLDER,
        SEVERITY_BLOCKER,
        f"without a storage path the files of '{request.vm}' would go to {base}\\{request.vm}, which Windows cannot "
        f"create: {problem}.",
        "give the move a storage path (--storage-path), or rename the VM",
        host=request.destination,
    )


def _ha_checks(f: _Findings, src: Mapping[str, Any], dst: Mapping[str, Any], request: PreflightInput) -> None:
    """A highly available VM keeps HA only when the destination is a cluster node (the saga makes its role there)."""
    if not src["vm"].get("IsClustered"):
        return
    cluster, destination_cluster = src.get("cluster") or "its cluster", dst.get("cluster") or ""
    f.fact(f"{request.destination}.cluster", destination_cluster)
    if destination_cluster:
        f.add(
            ConcernId.HA_RESTORED_ON_DESTINATION,
            SEVERITY_INFO,
            f"{request.vm} is highly available in {cluster}; {request.destination} is a node of "
            f"{destination_cluster}, where the saga makes it highly available again after the move.",
            "nothing to do; --ha drop moves it without HA",
            host=request.destination,
        )
        return
    f.add(
        ConcernId.HA_LOST,
        SEVERITY_WARNING,
        f"{request.vm} is highly available in {cluster} and {request.destination} is not a cluster node: after the "
        "move it will no longer be highly available.",
        "choose a destination that is a cluster node, or accept it explicitly: the move needs --ha drop "
        "(policy ha: drop) before anything changes",
        host=request.destination,
    )


def _destination_vm_checks(
    f: _Findings,
    src: Mapping[str, Any],
    dst: Mapping[str, Any],
    dst_vms: Sequence[Mapping[str, Any]],
    request: PreflightInput,
) -> None:
    """What the destination already holds of this VM (by Id) or of its name (another VM), and the files the move
    would write. Only a planned VM with this VM's Id, or files no other VM uses, are leftovers of a failed move."""
    s, d, name = request.source, request.destination, request.vm
    guid = vm_id(src["vm"])
    same = by_id(dst_vms, guid)
    if same is not None and is_planned(same):
        f.add(
            LEFTOVERS,
            SEVERITY_WARNING,
            f"{d} holds a planned VM with the Id of '{name}' ({guid}), left by an earlier failed move.",
            "the saga removes the planned VM and its partial files on the destination before moving",
            host=d,
            auto=True,
        )
    elif same is not None:
        f.add(
            ConcernId.VM_ON_BOTH_HOSTS,
            SEVERITY_BLOCKER,
            f"the VM with the Id of '{name}' ({guid}) is registered and realized on both {s} and {d} "
            f"(there named '{same.get('Name')}').",
            "decide by hand which copy is authoritative and remove the other; snlm will not guess",
            host=d,
        )
    others = [vm for vm in by_name(dst_vms, name) if vm_id(vm) != guid and not is_planned(vm)]
    if others:
        ids = ", ".join(sorted(vm_id(vm) for vm in others))
        f.add(
            ConcernId.VM_NAME_CLASH,
            SEVERITY_BLOCKER,
            f"{d} already has a different VM named '{name}' (Id {ids}, {others[0].get('State')}): after the move two "
            f"VMs would share the name on {d}. It is not a leftover and snlm never removes it.",
            "rename one of them (Rename-VM), or choose another destination",
            host=d,
        )
    owners: Mapping[str, tuple[str, str]] = dst["target_owners"]
    ours = [t for t in dst["existing_targets"] if _same_guid(owners.get(t.lower(), (guid, ""))[0], guid)]
    used = [t for t in dst["existing_targets"] if t not in ours]
    if ours:
        text = (
            f"{d} already has {', '.join(ours)} where the move will write the disks of '{name}', probably left by "
            "an earlier failed move."
        )
        if f.has(LEFTOVERS):
            f.note(LEFTOVERS, text)
        else:
            f.add(
                LEFTOVERS,
                SEVERITY_WARNING,
                text,
                "the saga removes the planned VM and its partial files on the destination before moving",
                host=d,
                auto=True,
            )
    if used:
        users = ", ".join(f"{t} ('{owners[t.lower()][1]}', {owners[t.lower()][0]})" for t in used)
        f.add(
            ConcernId.DESTINATION_FILE_IN_USE,
            SEVERITY_BLOCKER,
            f"the move of '{name}' would write its disks over files another VM on {d} uses: {users}.",
            f"give the move another storage path on {d}, or choose another destination",
            host=d,
        )


def _same_guid(a: str, b: str) -> bool:
    return a.strip("{}").lower() == b.strip("{}").lower()


def _compare_checks(f: _Findings, src: Mapping[str, Any], dst: Mapping[str, Any], request: PreflightInput) -> None:
    for text in src.get("compare_unreachable", []):
        if not f.has(ConcernId.PORT_6600_UNREACHABLE) and not f.has(ConcernId.FIREWALL_6600_CLOSED):
            f.add(
                ConcernId.PORT_6600_UNREACHABLE,
                SEVERITY_BLOCKER,
                f"{request.source} cannot reach {request.destination} for a migration: {text}",
                f"check the network between the hosts and that {request.destination}'s vmms listens on TCP "
                f"{MIGRATION_PORT}",
                host=request.destination,
            )
    if src.get("compare_clustered") and f.has(ConcernId.VM_CLUSTERED):
        # Hyper-V's Compare-VM refuses a clustered VM until its role is removed, which preflight must not do: the
        # checks above, read from both hosts, stand in for it, and the move itself is the final word.
        f.add(
            ConcernId.COMPARE_VM_AFTER_HA_REMOVAL,
            SEVERITY_INFO,
            f"Compare-VM cannot check {request.vm} while it is clustered; the host checks above stand in for it.",
            "nothing to do: the saga removes the cluster role before the move",
            host=request.source,
        )
    for text in src["compare_errors"]:
        if text in src.get("compare_unreachable", []) or text in src.get("compare_clustered", []):
            continue
        f.add(
            ConcernId.COMPARE_VM_FAILED,
            SEVERITY_WARNING,
            f"Compare-VM for {request.vm} from {request.source} to {request.destination} failed: {text}",
            "see the other concerns; the move will report the same error",
            host=request.source,
        )
    for item in src["incompatibilities"]:
        _judge(f, src, dst, request, item)


def _judge(
    f: _Findings, src: Mapping[str, Any], dst: Mapping[str, Any], request: PreflightInput, item: _Incompatibility
) -> None:
    """One Compare-VM finding: folded into what snlm's own reads found about the same object, else its known
    concern, else folded into a blocker about the same kind of object, else a blocker quoting the host."""
    s, d = request.source, request.destination
    quote = (
        f'Compare-VM on {s} says: "{item.message}" (MessageId {item.message_id}, Source {item.source_type or "none"}).'
    )
    own = _explained(f, src, dst, item)
    if own is not None:
        f.note(own, quote)
        if own in _CONFIRMED:
            f.block(own)
        return
    known = COMPARE_VM_IDS.get(item.message_id)
    if known is not None and item.source_type in known.sources:
        if f.has(known.concern):
            f.note(known.concern, quote)
        else:
            f.add(
                known.concern,
                SEVERITY_BLOCKER,
                f"Compare-VM ({s} -> {d}) finds '{request.vm}' incompatible: {item.message} "
                f"(MessageId {item.message_id}, Source {item.source_type or 'none'}).",
                _REMEDIES.get(known.concern, _GENERIC_REMEDY).format(d=d),
                host=d,
            )
        return
    for candidate in _BLOCKERS_BY_SOURCE.get(item.source_type, ()):
        concern = f.get(candidate)
        if concern is not None and concern.severity == SEVERITY_BLOCKER:
            f.note(candidate, quote)
            return
    if f.has(UNKNOWN_INCOMPATIBILITY):
        f.note(UNKNOWN_INCOMPATIBILITY, quote)
        return
    f.add(
        UNKNOWN_INCOMPATIBILITY,
        SEVERITY_BLOCKER,
        f"Compare-VM ({s} -> {d}) finds '{request.vm}' incompatible for a reason snlm does not know, so the move "
        f"would fail. {quote}",
        _GENERIC_REMEDY.format(d=d),
        host=d,
    )


def _explained(f: _Findings, src: Mapping[str, Any], dst: Mapping[str, Any], item: _Incompatibility) -> str | None:
    """The concern snlm's own reads already hold about the object this finding's Source is, if any. The host's
    id plays no part: what the saga may fix is decided from snlm's reads alone."""
    source, kind = item.source, item.source_type
    if kind == _DVD and f.has(ISO_MISSING):
        missing = [path.lower() for path, present in dst["isos"].items() if not present]
        path = str(source.get("Path") or "").lower()
        if (path and path in missing) or (not path and missing):
            return ISO_MISSING
    if kind == _ADAPTER and f.has(ConcernId.SWITCH_MISSING):
        have = {str(sw.get("Name", "")).lower() for sw in dst["switches"]}
        switch, name = str(source.get("SwitchName") or ""), str(source.get("Name") or "")
        lacking = [a for a in src["adapters"] if a.get("SwitchName") and str(a["SwitchName"]).lower() not in have]
        if (switch and switch.lower() not in have) or (
            not switch and (not name or any(str(a.get("Name")) == name for a in lacking))
        ):
            return ConcernId.SWITCH_MISSING
    if kind == _PROCESSOR:
        for concern in (ConcernId.CPU_VENDOR_MISMATCH, ConcernId.PROCESSOR_COMPATIBILITY):
            if f.has(concern):
                return concern
    if kind == _MEMORY and f.has(ConcernId.MEMORY):
        return ConcernId.MEMORY
    if kind == _VM and f.has(LEFTOVERS) and is_planned(source) and vm_id(source) == vm_id(src["vm"]):
        return LEFTOVERS
    storage = str(dst.get("storage") or "")
    if dst.get("volume_missing") and storage and storage.lower() in item.message.lower():
        return ConcernId.DESTINATION_PATH  # a folder on the volume the destination lacks, which snlm read
    if kind == _DISK:
        if source.get("DiskNumber") is not None and f.has(ConcernId.PASSTHROUGH_DISK):
            return ConcernId.PASSTHROUGH_DISK
        path = str(source.get("Path") or "")
        if path and storage and f.has(LEFTOVERS):
            target = ntpath.join(storage, ntpath.basename(path)).lower()
            if any(target == t.lower() for t in dst["existing_targets"]):
                return LEFTOVERS
    return None


# Warnings of snlm's own that say the move may fail: the host's finding about the same object says it will.
_CONFIRMED = frozenset({ConcernId.PROCESSOR_COMPATIBILITY})
_GENERIC_REMEDY = "read the host's message, fix what it names on the VM or on {d}, then run the preflight again"
_REMEDIES: dict[ConcernId, str] = {
    ConcernId.SWITCH_MISSING: "create the virtual switch on {d} with the same name, or reconnect the adapter to a "
    "switch {d} has",
    ConcernId.CPU_VENDOR_MISMATCH: "choose a destination with the same processor vendor, or shut the VM down and move "
    "it offline",
    ConcernId.PROCESSOR_INCOMPATIBLE: "turn on processor compatibility for the VM (Set-VMProcessor "
    "-CompatibilityForMigrationEnabled $true, with the VM off), or choose a host with the same processor",
    ConcernId.CONFIG_VERSION_UNSUPPORTED: "choose a destination running the same or a newer Windows Server",
    ConcernId.PASSTHROUGH_DISK: "convert the pass-through disk to a VHDX (or detach it) before the move",
    ConcernId.VHD_NOT_REACHABLE: "move the VM with its storage, or put its virtual disks where {d} can open them",
    ConcernId.MEMORY: "free memory on {d} (move or stop other VMs), fix the VM's memory settings, or choose another "
    "destination",
    ConcernId.DESTINATION_PATH: "choose a storage path on a volume {d} has, where it can create folders",
}


# -- the activity ---------------------------------------------------------------------------------------------
@dataclass
class _Pair:
    """What a preflight read of a host pair, for one VM or several: each host's shared reads, the VMs listed on
    the destination, each VM's facts."""

    source: _HostReads
    destination: _HostReads
    dst_vms: list[dict[str, Any]]
    vms: list[_Vm]


def _read_pair(src_client: HostClient, dst_client: HostClient, requests: Sequence[PreflightInput]) -> _Pair:
    """Read both hosts for every request (all of the same pair) in few round trips, the two hosts side by side:
    on the source its VMs and host facts in one batch, then the VMs found, by Id, in one more (per 20 VMs), then
    one round trip per VM for its VHDs and Compare-VM (which needs the storage path the destination decides); on
    the destination meanwhile its VMs and host facts in one, then the files and volumes the moves would use in one
    (per 20 VMs). Three round trips of wall time for one VM, where one host after the other took five."""
    label = requests[0].vm if len(requests) == 1 else f"{len(requests)} VMs"

    def source_side() -> tuple[_HostReads, list[_Vm]]:
        source = _HostReads.read(src_client, _source_statements())
        vms = [_Vm(r, [vm for vm in by_name(source.dicts("vms"), r.vm) if not is_planned(vm)]) for r in requests]
        found = [v for v in vms if v.vm is not None]
        if found:
            _read_sources(src_client, source, found, requests[0].destination)
        return source, vms

    (source, vms), destination = side_by_side(
        source_side, lambda: _HostReads.read(dst_client, _destination_statements())
    )
    _heartbeat(f"preflight {label}: hosts read")
    found = [v for v in vms if v.vm is not None]
    if found:
        host = destination.one("host")

        def compare_all() -> None:
            for index, v in enumerate(found, start=1):
                _compare(src_client, v, _storage_path(v.request, host))
                _heartbeat(
                    f"preflight {label}: compared"
                    if len(requests) == 1
                    else f"preflight {label}: {v.request.vm} compared ({index}/{len(found)})"
                )

        # Compare-VM on the source while the destination's files are read: neither needs the other's answer.
        side_by_side(compare_all, lambda: _read_destinations(dst_client, destination, found))
    _heartbeat(f"preflight {label}: destination read")
    return _Pair(source, destination, destination.dicts("vms"), vms)


def _report(pair: _Pair, one: _Vm, trips: dict[str, int]) -> PreflightReport:
    """Judge one VM from what was read."""
    request, named, src, dst, dst_vms = one.request, one.named, one.src, one.dst, pair.dst_vms
    f = _Findings(request.vm, request.source, request.destination)
    s, d = request.source, request.destination
    if len(named) > 1:
        f.add(
            ConcernId.VM_NAME_AMBIGUOUS,
            SEVERITY_BLOCKER,
            f"{len(named)} VMs on {s} are named '{request.vm}' (Ids {', '.join(sorted(vm_id(v) for v in named))}): "
            "snlm will not guess which one to move.",
            f"rename all but one of them on {s} (Rename-VM), then submit the move again",
            host=s,
        )
    elif src is None or dst is None:
        there = [v for v in by_name(dst_vms, request.vm) if not is_planned(v)]
        if len(there) == 1:
            f.fact("vm.id", vm_id(there[0]))
            f.add(
                ConcernId.VM_ALREADY_ON_DESTINATION,
                SEVERITY_INFO,
                f"no VM named '{request.vm}' on {s}, and {d} runs one (Id {vm_id(there[0])}): nothing to move.",
                "none: the move is already done",
                host=d,
            )
        elif there:
            f.add(
                ConcernId.VM_NAME_AMBIGUOUS,
                SEVERITY_BLOCKER,
                f"no VM named '{request.vm}' on {s}, and {len(there)} on {d} (Ids "
                f"{', '.join(sorted(vm_id(v) for v in there))}): snlm cannot tell which one was meant.",
                f"check where the VM runs (Get-VM on the hosts) and rename all but one of them on {d}",
                host=d,
            )
        else:
            f.add(
                ConcernId.VM_NOT_FOUND,
                SEVERITY_BLOCKER,
                f"no VM named '{request.vm}' on {s} (nor on {d}); names are compared exactly, never as patterns.",
                "check the VM's name and which host it runs on (Get-VM on the hosts), then submit the move again",
                host=s,
            )
    else:
        f.fact("vm.id", vm_id(src["vm"]))
        _destination_vm_checks(f, src, dst, dst_vms, request)
        _vm_checks(f, src, request)
        _host_checks(f, src, dst, request)
        _compare_checks(f, src, dst, request)
        _ha_checks(f, src, dst, request)
        _folder_checks(f, dst, request)
    order = {SEVERITY_BLOCKER: 0, SEVERITY_WARNING: 1, SEVERITY_INFO: 2}
    concerns = tuple(sorted(f.concerns, key=lambda c: order.get(c.severity, 3)))
    summary = PreflightFacts()
    if src is not None and dst is not None:
        moved = f.facts.get("vm.move_bytes", "")
        src_settings, dst_settings = pair.source.settings(), pair.destination.settings()
        summary = PreflightFacts(
            vm_id=vm_id(src["vm"]),
            clustered=bool(src["vm"].get("IsClustered")),
            cluster=str(src.get("cluster") or ""),
            destination_cluster=str(dst.get("cluster") or ""),
            move_bytes=int(moved) if moved.isdigit() else 0,
            vm_files=vm_files(one.config, src["drives"]) if one.config is not None else (),
            vm_read=one.config is not None,
            settings=(src_settings, dst_settings) if src_settings and dst_settings else (),
            storage_path=str(dst.get("storage") or ""),
        )
    return PreflightReport(
        request.vm, request.source, request.destination, concerns, dict(f.facts), trips, summary=summary
    )


def run_preflight(
    inventory: Inventory, request: PreflightInput, *, sessions: HostSessions | None = None, **client_options: Any
) -> PreflightReport:
    """Read both hosts and judge. Raises the host client's errors (transient ones are retried by Temporal).

    Sessions come from `sessions` (the worker's); without, from a pool made for this call (with
    `client_options`) and closed at its end. The report's `round_trips` counts every round trip of this preflight
    on each host."""
    if sessions is None:
        own = HostSessions(inventory, **client_options)
        try:
            return run_preflight(inventory, request, sessions=own)
        finally:
            own.close_all()
    if client_options:
        raise ValueError("client options belong to the shared sessions: pass them to HostSessions")
    pair, trips = _preflight_pair(sessions, request.source, request.destination, [request])
    (v,) = pair.vms
    return _report(pair, v, trips)


def run_preflight_batch(
    inventory: Inventory, request: PreflightBatchInput, *, sessions: HostSessions | None = None, **client_options: Any
) -> PreflightBatchReport:
    """Preflight every VM of `request` (one host pair): each host's reads made once for all, the VMs' reads
    batched, one round trip per VM for its Compare-VM. Each report is what `run_preflight` finds for its VM, but
    for `round_trips`, which counts only the round trips made for that VM alone (the batch's report counts them
    all). A VM that is not there, or whose name is no VM, is its report's blocker; an error raised while reading
    a host is raised, as `run_preflight` raises it (the caller may then preflight the VMs one by one)."""
    if sessions is None:
        own = HostSessions(inventory, **client_options)
        try:
            return run_preflight_batch(inventory, request, sessions=own)
        finally:
            own.close_all()
    if client_options:
        raise ValueError("client options belong to the shared sessions: pass them to HostSessions")
    if not request.vms:
        return PreflightBatchReport((), {})
    requests = [PreflightInput(vm.vm, request.source, request.destination, vm.storage_path) for vm in request.vms]
    pair, trips = _preflight_pair(sessions, request.source, request.destination, requests)
    reports = tuple(
        _report(pair, v, {request.source: v.trips[request.source], request.destination: v.trips[request.destination]})
        for v in pair.vms
    )
    return PreflightBatchReport(reports, trips)


def _preflight_pair(
    sessions: HostSessions, source: str, destination: str, requests: Sequence[PreflightInput]
) -> tuple[_Pair, dict[str, int]]:
    """Read the pair for `requests` on one session of each host; the round trips each host cost (its session's
    open included when this call opened it)."""
    trips: dict[str, int] = {}
    with sessions.session(source) as src_client:
        try:
            with sessions.session(destination) as dst_client:
                try:
                    pair = _read_pair(src_client, dst_client, requests)
                finally:
                    trips[destination] = dst_client.usage().round_trips
        finally:
            trips[source] = src_client.usage().round_trips
    return pair, trips


class PreflightActivities:
    """The preflight activity; synchronous (PSRP blocks), so the worker runs it on a thread pool.

    Args:
        inventory: the worker's host inventory.
        sessions: the worker's host sessions, shared with the other activities; by default a pool of this
            instance's own, over `inventory`, with `client_options` (HostClient keyword arguments).
    """

    def __init__(self, inventory: Inventory, *, sessions: HostSessions | None = None, **client_options: Any) -> None:
        if sessions is not None and client_options:
            raise ValueError("client options belong to the shared sessions: pass them to HostSessions")
        self._inventory = inventory
        self.sessions = sessions if sessions is not None else HostSessions(inventory, **client_options)

    @activity.defn(name=ActivityName.PREFLIGHT)
    def preflight(self, request: PreflightInput) -> PreflightReport:
        return run_preflight(self._inventory, request, sessions=self.sessions)

    @activity.defn(name=ActivityName.PREFLIGHT_BATCH)
    def preflight_batch(self, request: PreflightBatchInput) -> PreflightBatchReport:
        return run_preflight_batch(self._inventory, request, sessions=self.sessions)
