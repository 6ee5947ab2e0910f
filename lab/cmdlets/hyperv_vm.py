"""VM-level Hyper-V cmdlets: Get-VM, its devices, Get-VHD, checkpoints, Set-VMDvdDrive, Remove-VM."""

from __future__ import annotations

import ntpath
import uuid
from collections.abc import Iterable
from typing import Any

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.errors import hyperv_class
from lab.cmdlets.hyperv_host import CIM_SESSION, COMPUTER_NAME, CREDENTIAL, PASSTHRU, hv
from lab.cmdlets.psobj import HV, as_guid, get_prop, resolve_names, wildcard_match
from lab.commands import ErrorCategory, ErrorSpec
from lab.model.state import HardDisk, Host, VirtualMachine, VMState

VM_TYPE = f"{HV}.VirtualMachine"


def invalid_pattern(cmdlet: str, pattern: str) -> ErrorSpec:
    # PowerShell's WildcardPatternException text; the ErrorId and category around it are LAB-OWN.
    return errors.virtualization_error(
        cmdlet,
        "InvalidParameter",
        ErrorCategory.InvalidArgument,
        f"The specified wildcard character pattern is not valid: {pattern}",
        target=pattern,
    )


def find_vms(
    ctx: Context, host: Host, patterns: Iterable[str], *, include_planned: bool = True
) -> list[VirtualMachine]:
    """The VMs `-Name` / `-VMName` selects on `host`, as the module's locator resolves names (catalogue 6.1):
    patterns where a name has an unescaped `*`, `?` or `[`, exact names otherwise (backticks are part of the
    name, so escaping finds nothing). A name that matches nothing writes the not-found record of this cmdlet; a
    pattern that matches nothing gives nothing, silently."""
    with ctx.world.lock:
        vms = [vm for vm in host.vms.values() if include_planned or not vm.planned]
    indexes, missing, invalid = resolve_names(list(patterns), [vm.name for vm in vms])
    for pattern in invalid:
        ctx.write_error(invalid_pattern(ctx.name, pattern))
    for name in missing:
        ctx.write_error(errors.vm_not_found_by_name(ctx.name, name))
    return [vms[i] for i in indexes]


def resolve_vms(ctx: Context, *, name_param: str = "VMName", vm_param: str = "VM") -> list[tuple[Host, VirtualMachine]]:
    """The VMs a device cmdlet acts on: by -VMName (see `find_vms`) or by VirtualMachine objects (-VM or the
    pipeline, each found again by its Id). A missing name writes the ObjectNotFound record every Hyper-V cmdlet
    but Get-VM writes."""
    found: list[tuple[Host, VirtualMachine]] = []
    objs = ctx.bound.get(vm_param)
    if objs is not None:
        for obj in objs if isinstance(objs, list) else [objs]:
            vm_id = as_guid(get_prop(obj, "Id")) or as_guid(get_prop(obj, "VMId"))
            computer = get_prop(obj, "ComputerName")
            owner = (ctx.world.host(str(computer)) if computer else None) or ctx.host
            with ctx.world.lock:
                vm = owner.vms.get(vm_id) if vm_id else None
            if vm is None:
                ctx.write_error(errors.vm_not_found_by_id(ctx.name, str(vm_id)))
                continue
            found.append((owner, vm))
        return found
    host = ctx.target_host()
    if host is None:
        return found
    names = ctx.bound.get(name_param) or []
    if isinstance(names, str):
        names = [names]
    return [(host, vm) for vm in find_vms(ctx, host, names)]


def _migrating_ids(ctx: Context) -> set[uuid.UUID]:
    # Read the engine's jobs before taking world.lock: the engine has locks of its own.
    return {job.vm_id for job in ctx.jobs() if not job.finished}


@cmdlet(
    hv(
        "Get-VM",
        Param("Name", Kind.STRINGS, position=0, aliases=("VMName",), sets=("Name",), pipeline=True),
        Param("Id", Kind.GUIDS, position=0, sets=("Id",)),
        Param("ClusterObject", Kind.ANYS, sets=("ClusterObject",), mandatory=True),
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
        default_set="Name",
    )
)
def get_vm(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    migrating = _migrating_ids(ctx)
    now = ctx.world.clock.now()
    out: list[Any] = []
    with ctx.world.lock:
        vms = list(host.vms.values())

        def build(vm: VirtualMachine) -> Any:
            heartbeat = ctx.faults.heartbeat_of(vm.name) if ctx.faults is not None else None
            return objects.virtual_machine(
                vm, host, now, migrating=vm.id in migrating, heartbeat=heartbeat, only=ctx.wanted
            )

        if ctx.bound.has("Id"):
            for vm_id in ctx.bound.get("Id"):
                vm = host.vms.get(vm_id)
                if vm is None:
                    ctx.write_error(errors.vm_not_found_by_id(ctx.name, str(vm_id)))
                else:
                    out.append(build(vm))
        elif ctx.bound.has("Name"):
            out.extend(build(vm) for vm in find_vms(ctx, host, ctx.bound.get("Name")))
        elif ctx.bound.has("ClusterObject"):
            for group in ctx.bound.get("ClusterObject"):
                vm = host.find_vm(str(get_prop(group, "Name") or group))
                if vm is not None:
                    out.append(build(vm))
        else:
            out.extend(build(vm) for vm in vms)
    return out


def _device_params(*extra: Param) -> tuple[Param, ...]:
    return (
        Param("VMName", Kind.STRINGS, position=0, mandatory=True, sets=("VMName",), not_null_or_empty=True),
        Param("VM", Kind.OBJECTS, type_name=VM_TYPE, position=0, mandatory=True, sets=("VMObject",), pipeline=True),
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
        *extra,
    )


@cmdlet(
    CmdletInfo(
        "Get-VMNetworkAdapter",
        hyperv_class("Get-VMNetworkAdapter"),
        (
            Param(
                "VMName",
                Kind.STRINGS,
                position=0,
                mandatory=True,
                sets=("VMName",),
                not_null_or_empty=True,
            ),
            Param("VM", Kind.OBJECTS, type_name=VM_TYPE, position=0, mandatory=True, sets=("VMObject",), pipeline=True),
            Param("ManagementOS", Kind.SWITCH, mandatory=True, sets=("ManagementOS",)),
            Param("All", Kind.SWITCH, mandatory=True, sets=("All",)),
            Param("Name", Kind.STRING),
            Param("SwitchName", Kind.STRING, sets=("ManagementOS",)),
            COMPUTER_NAME,
            CREDENTIAL,
            CIM_SESSION,
        ),
        default_set="VMName",
    )
)
def get_vmnetwork_adapter(ctx: Context) -> Iterable[Any]:
    name = ctx.bound.get("Name")
    out: list[Any] = []
    if ctx.bound.parameter_set == "ManagementOS":
        host = ctx.target_host()
        if host is None:
            return out
        with ctx.world.lock:
            for switch in host.switches:
                if switch.switch_type.value == 0:
                    continue
                if name and not wildcard_match(name, switch.name):
                    continue
                if ctx.bound.get("SwitchName") and not wildcard_match(ctx.bound.get("SwitchName"), switch.name):
                    continue
                out.append(objects.management_os_adapter(host, switch))
        return out
    if ctx.bound.parameter_set == "All":
        host = ctx.target_host()
        pairs = [(host, vm) for vm in host.vms.values()] if host else []
    else:
        pairs = resolve_vms(ctx)
    with ctx.world.lock:
        for host, vm in pairs:
            for adapter in vm.adapters:
                if name is None or wildcard_match(name, adapter.name):
                    out.append(objects.network_adapter(host, vm, adapter))
    return out


def _controller_filter(ctx: Context, controller_type: Any, number: int, location: int) -> bool:
    b = ctx.bound
    if b.has("ControllerType") and str(b.get("ControllerType")).lower() != controller_type.name.lower():
        return False
    if b.has("ControllerNumber") and b.get("ControllerNumber") != number:
        return False
    return not (b.has("ControllerLocation") and b.get("ControllerLocation") != location)


_CONTROLLER_PARAMS = (
    Param("ControllerType", Kind.STRING),
    Param("ControllerNumber", Kind.INT32),
    Param("ControllerLocation", Kind.INT32),
)


@cmdlet(
    CmdletInfo(
        "Get-VMHardDiskDrive",
        hyperv_class("Get-VMHardDiskDrive"),
        _device_params(*_CONTROLLER_PARAMS),
        default_set="VMName",
    )
)
def get_vmhard_disk_drive(ctx: Context) -> Iterable[Any]:
    out: list[Any] = []
    pairs = resolve_vms(ctx)
    with ctx.world.lock:
        for host, vm in pairs:
            for disk in vm.disks:
                if _controller_filter(ctx, disk.controller_type, disk.controller_number, disk.controller_location):
                    out.append(objects.hard_disk_drive(host, vm, disk))
    return out


@cmdlet(
    CmdletInfo(
        "Get-VMDvdDrive", hyperv_class("Get-VMDvdDrive"), _device_params(*_CONTROLLER_PARAMS), default_set="VMName"
    )
)
def get_vmdvd_drive(ctx: Context) -> Iterable[Any]:
    out: list[Any] = []
    pairs = resolve_vms(ctx)
    with ctx.world.lock:
        for host, vm in pairs:
            for drive in vm.dvd_drives:
                if _controller_filter(ctx, drive.controller_type, drive.controller_number, drive.controller_location):
                    out.append(objects.dvd_drive(host, vm, drive))
    return out


@cmdlet(CmdletInfo("Get-VMProcessor", hyperv_class("Get-VMProcessor"), _device_params(), default_set="VMName"))
def get_vmprocessor(ctx: Context) -> Iterable[Any]:
    pairs = resolve_vms(ctx)
    with ctx.world.lock:
        return [objects.vm_processor(host, vm) for host, vm in pairs]


@cmdlet(
    CmdletInfo(
        "Get-VMSnapshot",
        hyperv_class("Get-VMSnapshot"),
        _device_params(Param("Name", Kind.STRINGS, position=1)),
        default_set="VMName",
    )
)
def get_vmsnapshot(ctx: Context) -> Iterable[Any]:
    names = ctx.bound.get("Name")
    out: list[Any] = []
    pairs = resolve_vms(ctx)
    with ctx.world.lock:
        for host, vm in pairs:
            for index, checkpoint in enumerate(vm.checkpoints):
                if names is None or any(wildcard_match(n, checkpoint.name) for n in names):
                    out.append(objects.vm_snapshot(host, vm, index))
    return out


VHD_CLASS = "Microsoft.Vhd.PowerShell.Cmdlets.GetVHD"


@cmdlet(
    CmdletInfo(
        "Get-VHD",
        VHD_CLASS,
        (
            Param(
                "Path", Kind.STRINGS, position=0, mandatory=True, sets=("Path",), pipeline=True, aliases=("FullName",)
            ),
            Param("VMId", Kind.GUIDS, mandatory=True, sets=("VMId",)),
            Param("DiskNumber", Kind.UINT32, mandatory=True, sets=("Number",)),
            COMPUTER_NAME,
            CREDENTIAL,
            CIM_SESSION,
        ),
        default_set="Path",
    )
)
def get_vhd(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    out: list[Any] = []
    with ctx.world.lock:
        attached: dict[str, tuple[HardDisk, VirtualMachine]] = {}
        for registered in host.vms.values():
            for disk in registered.disks:
                if not disk.is_passthrough:
                    attached[ntpath.normcase(disk.path)] = (disk, registered)
        if ctx.bound.has("VMId"):
            for vm_id in ctx.bound.get("VMId"):
                owner = host.vms.get(vm_id)
                if owner is None:
                    ctx.write_error(errors.vm_not_found_by_id(ctx.name, str(vm_id)))
                    continue
                for disk in owner.disks:
                    if not disk.is_passthrough:
                        out.append(objects.virtual_hard_disk(host, disk, owner.state == VMState.Running))
            return out
        for path in ctx.bound.get("Path") or []:
            key = ntpath.normcase(path)
            if key in attached:
                disk, vm = attached[key]
                out.append(objects.virtual_hard_disk(host, disk, vm.state == VMState.Running))
            elif host.has_file(path) and path.lower().endswith((".vhd", ".vhdx", ".avhdx")):
                entry = host.files[ntpath.normcase(ntpath.normpath(path))]
                loose = HardDisk(path=entry.path, size=entry.size, file_size=entry.size)
                out.append(objects.virtual_hard_disk(host, loose, False))
            else:
                # LAB-OWN text; the ErrorId/category follow the module's ObjectNotFound rule (catalogue 2.0).
                ctx.write_error(
                    ErrorSpec(
                        message=f"Getting the mounted storage instance for the path '{path}' failed.\r\n\r\n"
                        "The system cannot find the file specified.",
                        fully_qualified_error_id=f"ObjectNotFound,{VHD_CLASS}",
                        category=ErrorCategory.ObjectNotFound,
                        activity=ctx.name,
                        exception_types=errors.VIRTUALIZATION_EXCEPTION,
                    )
                )
    return out


@cmdlet(
    CmdletInfo(
        "Set-VMDvdDrive",
        hyperv_class("Set-VMDvdDrive"),
        (
            Param("VMName", Kind.STRING, position=0, mandatory=True, sets=("VMName",), not_null_or_empty=True),
            Param(
                "VMDvdDrive",
                Kind.OBJECTS,
                type_name=f"{HV}.DvdDrive",
                position=0,
                mandatory=True,
                sets=("Object",),
                pipeline=True,
            ),
            Param("ControllerNumber", Kind.INT32, position=1, sets=("VMName",)),
            Param("ControllerLocation", Kind.INT32, position=2, sets=("VMName",)),
            Param("Path", Kind.STRING, position=3),
            Param("ToControllerNumber", Kind.INT32),
            Param("ToControllerLocation", Kind.INT32),
            Param("ResourcePoolName", Kind.STRING),
            Param("AllowUnverifiedPaths", Kind.SWITCH),
            COMPUTER_NAME,
            CREDENTIAL,
            CIM_SESSION,
            PASSTHRU,
        ),
        default_set="VMName",
        should_process=True,
    )
)
def set_vmdvd_drive(ctx: Context) -> Iterable[Any]:
    path = ctx.bound.get("Path")
    targets: list[tuple[Host, VirtualMachine, int | None, int | None]] = []
    if ctx.bound.parameter_set == "Object":
        for obj in ctx.bound.get("VMDvdDrive"):
            vm_id = as_guid(get_prop(obj, "VMId"))
            computer = get_prop(obj, "ComputerName")
            host = (ctx.world.host(str(computer)) if computer else None) or ctx.host
            vm = host.vms.get(vm_id) if vm_id else None
            if vm is None:
                ctx.write_error(errors.vm_not_found_by_id(ctx.name, str(vm_id)))
                continue
            targets.append((host, vm, get_prop(obj, "ControllerNumber"), get_prop(obj, "ControllerLocation")))
    else:
        for host, vm in resolve_vms(ctx):
            targets.append((host, vm, ctx.bound.get("ControllerNumber"), ctx.bound.get("ControllerLocation")))
    out: list[Any] = []
    for host, vm, number, location in targets:
        with ctx.world.lock:
            drives = [
                d
                for d in vm.dvd_drives
                if (number is None or d.controller_number == number)
                and (location is None or d.controller_location == location)
            ]
            if path and not host.has_file(path) and not ctx.bound.switch("AllowUnverifiedPaths"):
                # LAB-OWN text for an ISO the host does not have.
                ctx.write_error(
                    errors.virtualization_error(
                        ctx.name,
                        "ObjectNotFound",
                        ErrorCategory.ObjectNotFound,
                        f"Failed to add device 'Virtual CD/DVD Disk'.\r\n\r\nThe system cannot find the file '{path}'.",
                    )
                )
                continue
            if not drives:
                ctx.write_error(
                    errors.virtualization_error(
                        ctx.name,
                        "ObjectNotFound",
                        ErrorCategory.ObjectNotFound,
                        f"No DVD drive was found on virtual machine '{vm.name}' at the specified location.",  # LAB-OWN
                    )
                )
                continue
            if not ctx.bound.switch("WhatIf"):
                for drive in drives:
                    drive.path = path or None  # -Path $null ejects the media
            if ctx.bound.switch("Passthru"):
                out.extend(objects.dvd_drive(host, vm, d) for d in drives)
    return out


@cmdlet(
    hv(
        "Remove-VM",
        Param(
            "Name",
            Kind.STRINGS,
            position=0,
            mandatory=True,
            aliases=("VMName",),
            sets=("Name",),
            not_null_or_empty=True,
        ),
        Param("VM", Kind.OBJECTS, type_name=VM_TYPE, position=0, mandatory=True, sets=("VMObject",), pipeline=True),
        Param("Force", Kind.SWITCH),
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
        PASSTHRU,
        default_set="Name",
        should_process=True,
    )
)
def remove_vm(ctx: Context) -> Iterable[Any]:
    """Unregister a VM and delete its configuration files (its VHDs stay, as on a real host).

    This is how an orchestrator destroys the planned VM a failed move left on the destination."""
    pairs = resolve_vms(ctx, name_param="Name")
    out: list[Any] = []
    now = ctx.world.clock.now()
    for host, vm in pairs:
        with ctx.world.lock:
            if vm.state != VMState.Off and not vm.planned:
                ctx.write_error(
                    errors.virtualization_error(
                        ctx.name, "InvalidState", ErrorCategory.InvalidOperation, errors.INVALID_VM_STATE
                    )
                )
                continue
            if ctx.bound.switch("Passthru"):
                out.append(objects.virtual_machine(vm, host, now))
            if ctx.bound.switch("WhatIf"):
                continue
            for file in vm.state_files:
                host.remove_file(file)
            host.vms.pop(vm.id, None)
    return out
