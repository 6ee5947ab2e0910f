"""A VM by its name, taken literally.

Hyper-V's cmdlets take `-Name` as a wildcard pattern whenever it holds `*`, `?` or `[`, and escaping does not
help: a backtick-escaped name is compared with its backticks and found nowhere (reference/hyperv-fidelity-
catalogue.md section 6.1). So snlm never hands a host a VM's name: it lists the host's VMs (`Get-VM` without
`-Name`), compares names itself, exactly but for case as Hyper-V compares them, and from then on addresses
the one VM it found by its Id (`Get-VM -Id <id> | <cmdlet>`, DESIGN.md invariant 9).
"""

from __future__ import annotations

import ntpath
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from activities.errors import ConfigurationError
from activities.hosts import Command, HostClient
from workflows import contracts as c

__all__ = [
    "CONFIG_EXTENSIONS",
    "PLANNED",
    "by_id",
    "by_name",
    "config_file_candidates",
    "existing_paths",
    "folder_name_problem",
    "is_planned",
    "list_vms",
    "resolve_vm",
    "same_name",
    "vhd_paths",
    "vm_commands",
    "vm_files",
    "vm_id",
    "vm_index",
]

PLANNED: Final = "PlannedVirtualMachine"
# The files Hyper-V keeps in "<ConfigurationLocation>\Virtual Machines" named after the VM's id: configuration
# version 6.2 and later (vmcx, vmgs, VMRS), and the older XML format (xml, bin, vsv).
CONFIG_EXTENSIONS: Final = (".vmcx", ".vmgs", ".VMRS", ".xml", ".bin", ".vsv")
# What a Windows folder name may not hold or be (Win32 naming rules): a VM name may hold any of these.
_NOT_IN_FOLDER_NAMES: Final = frozenset('<>:"/\\|?*')
_RESERVED_NAMES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)


def folder_name_problem(name: str) -> str:
    """Why Windows cannot create a folder named `name` ("" when it can): the move's default storage path is one."""
    bad = sorted({ch for ch in name if ch in _NOT_IN_FOLDER_NAMES or ord(ch) < 32})
    if bad:
        return "a folder name cannot hold " + " ".join(repr(ch) for ch in bad)
    if name.endswith((".", " ")):
        return "a folder name cannot end with a dot or a space"
    if name.split(".", 1)[0].upper() in _RESERVED_NAMES:
        return f"{name.split('.', 1)[0]} is a reserved device name"
    if len(name) > 255:
        return "a folder name holds at most 255 characters"
    return ""


def _upper(text: str) -> str:
    # One character to one, as .NET's ordinal case-insensitive comparison maps them (no "ß" -> "SS").
    return "".join(u if len(u := ch.upper()) == 1 else ch for ch in text)


def same_name(a: str, b: str) -> bool:
    """Whether two VM names are the same name to Hyper-V: equal but for case, every character counted."""
    return len(a) == len(b) and _upper(a) == _upper(b)


def vm_id(vm: Mapping[str, Any]) -> str:
    """The VM's Id as a lower-case GUID string ("" when the object has none)."""
    value = vm.get("Id") or vm.get("VMId")
    try:
        return str(uuid.UUID(str(value).strip("{}")))
    except ValueError:
        return ""


def is_planned(vm: Mapping[str, Any] | None) -> bool:
    return vm is not None and str(vm.get("VirtualMachineType") or "") == PLANNED


def list_vms(client: HostClient) -> list[dict[str, Any]]:
    """Every VM the host lists, realized and planned (`Get-VM` with no name: nothing to be read as a pattern)."""
    return [vm for vm in client.run("Get-VM").output if isinstance(vm, dict)]


def by_name(vms: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [vm for vm in vms if same_name(str(vm.get("Name") or ""), name)]


def by_id(vms: Sequence[Mapping[str, Any]], wanted: str) -> Mapping[str, Any] | None:
    key = wanted.lower()
    return next((vm for vm in vms if vm_id(vm) == key), None)


def ambiguous(name: str, host: str, vms: Sequence[Mapping[str, Any]]) -> ConfigurationError:
    ids = sorted(vm_id(vm) for vm in vms)
    return ConfigurationError(
        f"{len(ids)} VMs on {host} are named {name!r} (ids {', '.join(ids)}): snlm will not guess which to move",
        error_type=c.VM_NAME_AMBIGUOUS,
        remedy=f"rename all but one of them on {host} (Rename-VM), then submit the move again",
        details={"vm": name, "host": host, "vm_ids": ids},
    )


def resolve_vm(client: HostClient, name: str) -> dict[str, Any]:
    """The one realized VM named `name` on the host. None: VmNotFound; several: VmNameAmbiguous (naming ids)."""
    found = [vm for vm in by_name(list_vms(client), name) if not is_planned(vm)]
    if not found:
        raise ConfigurationError(
            f"no VM named {name!r} on {client.host}",
            error_type=c.VM_NOT_FOUND,
            remedy="check the VM's name and which host it is on (Get-VM on the host)",
            details={"vm": name, "host": client.host},
        )
    if len(found) > 1:
        raise ambiguous(name, client.host, found)
    return dict(found[0])


# What a host's list of VMs needs to find one by name, tell it from another of the same name or Id, and name its
# configuration files. A list of whole VM objects costs kilobytes per VM on the wire and in both parsers, on every
# preflight, for the sake of one VM: on a host of a hundred VMs that was most of a move's bytes.
VM_INDEX_PROPERTIES: Final = ("Id", "Name", "State", "VirtualMachineType", "ConfigurationLocation", "Path")


def vm_index() -> list[Command]:
    """`Get-VM | Select-Object -Property <VM_INDEX_PROPERTIES>`: every VM of the host (no name to be read as a
    pattern), each as the few properties that find it; the whole object is read by Id once found."""
    return [Command("Get-VM"), Command("Select-Object", {"Property": list(VM_INDEX_PROPERTIES)})]


def vm_commands(vm: str, *then: Command) -> list[Command]:
    """`Get-VM -Id <vm> | <then>`: the commands act on exactly this VM, whatever its name."""
    return [Command("Get-VM", {"Id": [uuid.UUID(vm)]}), *then]


# -- the VM's files (what read_vm reports and verify cleans on the source) ----------------------------------------
def config_file_candidates(vm: Mapping[str, Any]) -> list[str]:
    """The configuration files the VM (a Get-VM object) may have; a Test-Path of them says which it has."""
    guid = str(vm.get("Id") or vm.get("VMId"))
    location = _text(vm.get("ConfigurationLocation") or vm.get("Path"))
    base = ntpath.join(location, "Virtual Machines", guid.upper()) if location else ""
    return [base + ext for ext in CONFIG_EXTENSIONS] if base else []


def existing_paths(paths: Sequence[str], tested: Sequence[Any]) -> list[str]:
    """The paths a `Test-Path -LiteralPath <paths>` found (its output: one bool per path, in order)."""
    return [path for path, found in zip(paths, tested, strict=False) if found is True]


def vhd_paths(drives: Sequence[Mapping[str, Any]]) -> list[str]:
    """The VHD files of the VM's hard disk drives (Get-VMHardDiskDrive objects); a pass-through disk has none."""
    return [_text(d.get("Path")) for d in drives if d.get("Path") and d.get("DiskNumber") is None]


def vm_files(config: Sequence[str], drives: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The VM's files: the configuration files that exist (`config`), then its VHDs, each path once (paths
    compare without case, as Windows compares them)."""
    seen: dict[str, str] = {}
    for path in [*config, *vhd_paths(drives)]:
        if path:
            seen.setdefault(path.lower(), path)
    return tuple(seen.values())


def _text(value: Any) -> str:
    return "" if value is None else str(value)
