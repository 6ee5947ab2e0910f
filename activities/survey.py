"""Survey: what one host holds and what it has room for, read-only, for generated plans (`snlm plan ...`).

`survey_host` reads a host in two round trips (one when no VM has a VHD) of one session of the worker's pool
(activities/hosts.py `HostSessions`; the session's open is one more when the pool had none idle):

1. in one batch (`HostClient.batch`, read and judged as preflight reads, activities/preflight.py `_HostReads`):
   its VMs (`Get-VM`), its memory and VirtualMachinePath (`Get-VMHost`), its free memory (`Get-CimInstance
   Win32_OperatingSystem`, FreePhysicalMemory, as preflight judges a destination), its virtual switches
   (`Get-VMSwitch`), its volumes (`Get-Volume`), and every VM's hard disk drives and network adapters
   (`Get-VM | Get-VMHardDiskDrive`, `Get-VM | Get-VMNetworkAdapter`: whole pipelines, so no VM is named);
2. the VHD files' sizes (`Get-VHD -Path <every VHD path>`), only when some VM has one; and one more round
   trip per level of differencing disks, for their parents (a VM with checkpoints runs on an .avhdx).

Nothing is handed to the host as a name: VMs are listed whole and their drives and adapters matched to them by
VMId (DESIGN.md invariant 9). Planned VMs (what a failed move left behind) are not the host's VMs and are left
out; VMs that share a name are all reported, each with its Id (a plan cannot name one of them: the planner says so).

What placement needs of a VM:
- memory: MemoryStartup, or MemoryAssigned when the VM runs and has more (dynamic memory grew it): the larger
  of the two, which is what preflight requires free on a destination, so a plan never places a VM where its own
  preflight would block it. An off VM counts its MemoryStartup: the memory it needs when it starts.
- disks: the sum of its VHD files' FileSize, their parents' included (what a move with its storage copies); a
  pass-through disk has no file and counts nothing (preflight blocks such a VM anyway). A VHD the host cannot
  open counts nothing too, and is logged (the campaign's own check reports that VM), unless none could be
  opened: then the host's error is raised.
- switches: the SwitchName of its network adapters (an adapter connected to no switch names none).

Errors are the host client's (activities/hosts.py and its one error table): an unknown host is UnknownHost, a
host that cannot be reached or is busy is transient (Temporal retries the activity), and an error record of any
read but the VHDs' is raised as its engine error, as preflight judges its reads. Inside an activity every
SnlmError leaves as an ApplicationError of its stable type (activities/boundary.py).
"""

from __future__ import annotations

import logging
import ntpath
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from temporalio import activity

from activities.errors import TransientError
from activities.host_settings import settings_commands
from activities.hosts import Command, HostClient, HostSessions, Statement
from activities.inventory import Inventory
from activities.preflight import _dicts, _heartbeat, _HostReads, _read
from activities.vms import is_planned, vhd_paths, vm_id
from workflows.contracts import HYPERV_DEFAULT_MAX_MIGRATIONS, ActivityName, HostRef, HostSurvey, SurveyedVm

__all__ = ["SurveyActivities", "run_survey", "survey_statements"]

log = logging.getLogger(__name__)
_RUNNING = "Running"
# Levels of differencing disks followed to their base: far beyond Hyper-V's own checkpoint limit (50).
_MAX_CHAIN = 64


def survey_statements() -> dict[str, Statement]:
    """The first round trip's reads, by key: every one a read of the whole host, none naming a VM."""
    vmhost, _, _ = settings_commands()
    return {
        "vms": Command("Get-VM"),
        "host": vmhost,
        "os": Command("Get-CimInstance", {"ClassName": "Win32_OperatingSystem"}),
        "switches": Command("Get-VMSwitch"),
        "volumes": Command("Get-Volume"),
        "drives": [Command("Get-VM"), Command("Get-VMHardDiskDrive")],
        "adapters": [Command("Get-VM"), Command("Get-VMNetworkAdapter")],
    }


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _memory_need(vm: Mapping[str, Any]) -> int:
    """What the VM needs of a host's memory (the module's docstring says why the larger of the two)."""
    need = _int(vm.get("MemoryStartup"))
    if str(vm.get("State") or "") == _RUNNING:
        need = max(need, _int(vm.get("MemoryAssigned")))
    return need


def _by_vm(devices: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Devices (drives, adapters) by their VM's Id: their own `Id` is the device's, their `VMId` the VM's."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for device in devices:
        grouped[vm_id({"VMId": device.get("VMId")})].append(device)
    return grouped


def _free_disk(volumes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Free bytes per drive letter (upper case, no colon); volumes without a letter cannot hold a VM path."""
    free: dict[str, int] = {}
    for volume in volumes:
        letter = str(volume.get("DriveLetter") or "").rstrip(":\\").upper()
        if len(letter) == 1:
            free[letter] = _int(volume.get("SizeRemaining"))
    return free


def _vhds(client: HostClient, paths: Sequence[str]) -> dict[str, tuple[int, str]]:
    """FileSize and ParentPath of every VHD in `paths` and of the parents they name, by path (lower case, as
    Windows compares paths): one round trip, and one more per level of differencing disks (a VM with checkpoints
    runs on an .avhdx whose parents move with it). A VHD the host cannot open counts 0 and is logged; a transient
    failure, or a read in which no file could be opened, is raised (Temporal retries the activity)."""
    found: dict[str, tuple[int, str]] = {}
    pending = list(paths)
    for _ in range(_MAX_CHAIN):
        if not pending:
            break
        (result,) = _read(client, [Command("Get-VHD", {"Path": pending})])
        # A file the host cannot open is an error record of its own (HostCommandFailed, as Get-VHD gives no
        # better id), the other files still read: only a transient failure, or every file failing, is the host's.
        for error in result.errors:
            if isinstance(error, TransientError) or not result.output:
                raise error
        found.update(dict.fromkeys((path.lower() for path in pending), (0, "")))
        for vhd in _dicts(result):
            found[str(vhd.get("Path") or "").lower()] = (_int(vhd.get("FileSize")), str(vhd.get("ParentPath") or ""))
        for error in result.errors:
            _log().warning("%s: a VHD could not be read, its size counts as 0: %s", client.host, error.reason)
        parents = (parent for _, parent in found.values() if parent and parent.lower() not in found)
        pending = list({parent.lower(): parent for parent in parents}.values())
    return found


def _chain_bytes(paths: Sequence[str], vhds: Mapping[str, tuple[int, str]]) -> int:
    """The bytes of the VHDs in `paths` and of their parents, each file once."""
    seen: set[str] = set()
    total = 0
    for path in paths:
        key = path.lower()
        while key and key not in seen:
            seen.add(key)
            size, parent = vhds.get(key, (0, ""))
            total += size
            key = parent.lower()
    return total


def _log() -> logging.LoggerAdapter[logging.Logger] | logging.Logger:
    return activity.logger if activity.in_activity() else log


def survey(client: HostClient) -> HostSurvey:
    """Read the host of `client` (module docstring): two round trips, one when no VM has a VHD."""
    reads = _HostReads.read(client, survey_statements())
    vms = [vm for vm in reads.dicts("vms") if not is_planned(vm)]
    vmhost, os_info = reads.one("host"), reads.one("os")
    drives, adapters = _by_vm(reads.dicts("drives")), _by_vm(reads.dicts("adapters"))
    switches = tuple(str(s["Name"]) for s in reads.dicts("switches") if s.get("Name"))
    free_disk = _free_disk(reads.dicts("volumes"))
    _heartbeat(f"survey {client.host}: host read")
    paths = {path.lower(): path for vm in vms for path in vhd_paths(drives.get(vm_id(vm), []))}
    vhds = _vhds(client, list(paths.values())) if paths else {}
    surveyed = []
    for vm in vms:
        guid = vm_id(vm)
        names = [str(a.get("SwitchName") or "") for a in adapters.get(guid, [])]
        surveyed.append(
            SurveyedVm(
                name=str(vm.get("Name") or ""),
                vm_id=guid,
                state=str(vm.get("State") or ""),
                memory_bytes=_memory_need(vm),
                disk_bytes=_chain_bytes(vhd_paths(drives.get(guid, [])), vhds),
                switches=tuple(dict.fromkeys(name for name in names if name)),
                clustered=bool(vm.get("IsClustered")),
            )
        )
    vm_path = str(vmhost.get("VirtualMachinePath") or "")
    return HostSurvey(
        host=client.host,
        vms=tuple(surveyed),
        memory_bytes=_int(vmhost.get("MemoryCapacity")),
        # Win32_OperatingSystem.FreePhysicalMemory is in KiB.
        free_memory_bytes=_int(os_info.get("FreePhysicalMemory")) * 1024,
        switches=switches,
        max_migrations=_int(vmhost.get("MaximumVirtualMachineMigrations")) or HYPERV_DEFAULT_MAX_MIGRATIONS,
        free_disk_bytes=free_disk,
        vm_path=ntpath.normpath(vm_path) if vm_path else "",
    )


def run_survey(
    inventory: Inventory, request: HostRef, *, sessions: HostSessions | None = None, **client_options: Any
) -> HostSurvey:
    """Survey `request.host` on a session of `sessions` (the worker's); without, on a pool made for this call
    (with `client_options`) and closed at its end."""
    if sessions is None:
        own = HostSessions(inventory, **client_options)
        try:
            return run_survey(inventory, request, sessions=own)
        finally:
            own.close_all()
    if client_options:
        raise ValueError("client options belong to the shared sessions: pass them to HostSessions")
    with sessions.session(request.host) as client:
        return survey(client)


class SurveyActivities:
    """The survey activity; synchronous (PSRP blocks), so the worker runs it on a thread pool.

    Args:
        inventory: the worker's host inventory.
        sessions: the worker's host sessions, shared with the other activities; by default a pool of this
            instance's own, over `inventory`, with `client_options` (HostClient keyword arguments).
    """

    def __init__(self, inventory: Inventory, sessions: HostSessions | None = None, **client_options: Any) -> None:
        if sessions is not None and client_options:
            raise ValueError("client options belong to the shared sessions: pass them to HostSessions")
        self._inventory = inventory
        self.sessions = sessions if sessions is not None else HostSessions(inventory, **client_options)

    @activity.defn(name=ActivityName.SURVEY_HOST)
    def survey_host(self, request: HostRef) -> HostSurvey:
        """The host's VMs (memory, disks, switches, clustered) and its room: memory, switches, free disk."""
        return run_survey(self._inventory, request, sessions=self.sessions)
