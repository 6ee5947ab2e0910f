"""Move-VM and Compare-VM (reference/hyperv-facts.md "Move-VM"; catalogue 1.10, 2.2, 3).

Move-VM hands the move to vmms (the lab's MoveEngine) and, unless -AsJob, watches the Msvm_MigrationJob
every simulated second, writing `<pct>%` progress records and a final Completed one. A stopped pipeline
stops the watching only: the cmdlet has no StopProcessing, so the host's migration goes on (catalogue 3).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections.abc import Iterable
from typing import Any

from psrpcore.types import PSObject

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.errors import hyperv_class
from lab.cmdlets.hyperv_host import CIM_SESSION, COMPUTER_NAME, CREDENTIAL
from lab.cmdlets.hyperv_vm import find_vms
from lab.cmdlets.psobj import HV, OperationTypeEnum, as_guid, get_prop
from lab.commands import ErrorCategory
from lab.model import checks
from lab.model.migration import Incompatibility, JobState, MigrationJob, MoveRefused, MoveRequest
from lab.model.state import Host, VirtualMachine

NAME_SINGLE = "NameSingleDestination"
NAME_MULTI = "NameMultipleDestinations"
VM_SINGLE = "VMSingleDestination"
VM_MULTI = "VMMultipleDestinations"
REPORT = "CompatibilityReport"
NAME_SETS = (NAME_SINGLE, NAME_MULTI)
VM_SETS = (VM_SINGLE, VM_MULTI)
SINGLE = (NAME_SINGLE, VM_SINGLE)
MULTI = (NAME_MULTI, VM_MULTI)
NOT_REPORT = NAME_SETS + VM_SETS

MOVE_ACTIVITY = "Move a virtual machine"  # NEON resx TaskDescriptions MoveVM: when ElementName is empty
POLL_SECONDS = 1.0  # Constants.TaskUpdateProgressThreshold (NEON): one simulated second
MIN_REAL_POLL = 0.1  # never poll faster than this in real time, whatever the time scale

_DESTINATION_PARAMS: tuple[Param, ...] = (
    Param("Name", Kind.STRING, position=0, mandatory=True, sets=NAME_SETS, aliases=("VMName",), not_null_or_empty=True),
    Param("VM", Kind.OBJECT, type_name=f"{HV}.VirtualMachine", position=0, mandatory=True, sets=VM_SETS, pipeline=True),
    Param(
        "CompatibilityReport",
        Kind.OBJECT,
        type_name=f"{HV}.VMCompatibilityReport",
        position=0,
        mandatory=True,
        sets=(REPORT,),
        pipeline=True,
    ),
    Param("DestinationHost", Kind.STRING, position=1, mandatory=True, sets=NOT_REPORT, not_null_or_empty=True),
    Param("IncludeStorage", Kind.SWITCH, sets=SINGLE),
    Param("DestinationStoragePath", Kind.STRING, sets=SINGLE, not_null_or_empty=True),
    Param("VirtualMachinePath", Kind.STRING, sets=MULTI, not_null_or_empty=True),
    Param("SnapshotFilePath", Kind.STRING, sets=MULTI, not_null_or_empty=True),
    Param("SmartPagingFilePath", Kind.STRING, sets=MULTI, not_null_or_empty=True),
    Param("Vhds", Kind.HASHTABLES, sets=MULTI),
    Param("ResourcePoolName", Kind.STRING, sets=NOT_REPORT),
    Param("DestinationCredential", Kind.ANY, sets=NOT_REPORT),
    COMPUTER_NAME,
    CREDENTIAL,
    CIM_SESSION,
)

MOVE_VM = CmdletInfo(
    "Move-VM",
    hyperv_class("Move-VM"),
    (
        *_DESTINATION_PARAMS,
        Param("RetainVhdCopiesOnSource", Kind.SWITCH),
        Param("RemoveSourceUnmanagedVhds", Kind.SWITCH),
        Param("AsJob", Kind.SWITCH),
        Param("Passthru", Kind.SWITCH),
    ),
    default_set=NAME_SINGLE,
    should_process=True,
)

COMPARE_VM = CmdletInfo(
    "Compare-VM",
    hyperv_class("Compare-VM"),
    _DESTINATION_PARAMS,
    default_set=NAME_SINGLE,
)

_job_ids = itertools.count(1)


def _vhd_pairs(tables: list[dict[Any, Any]] | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for table in tables or []:
        source = get_prop(table, "SourceFilePath")
        destination = get_prop(table, "DestinationFilePath")
        pairs.append((str(source or ""), str(destination or "")))
    return tuple(pairs)


def _resolve(ctx: Context) -> list[tuple[Host, VirtualMachine, str]]:
    """The VMs to move or check and the destination as typed, from -Name, -VM or -CompatibilityReport.

    -Name is a single string, but the module resolves it through the same locator as Get-VM (catalogue 6.1):
    a pattern selects every realized VM it matches (`Move-VM -Name web*` moves each in turn), a literal name
    matches exactly or writes ObjectNotFound."""
    b = ctx.bound
    destination = b.get("DestinationHost") or ""
    if b.has("CompatibilityReport"):
        report = b.get("CompatibilityReport")
        vm_obj = get_prop(report, "VM")
        vm_id = as_guid(get_prop(vm_obj, "Id")) or as_guid(get_prop(vm_obj, "VMId"))
        destination = str(get_prop(report, "Destination") or destination)
        with ctx.world.lock:
            vm = ctx.host.vms.get(vm_id) if vm_id else None
        if vm is None:
            ctx.write_error(errors.vm_not_found_by_id(ctx.name, str(vm_id)))
            return []
        return [(ctx.host, vm, destination)]
    if b.has("VM"):
        vm_obj = b.get("VM")
        vm_id = as_guid(get_prop(vm_obj, "Id")) or as_guid(get_prop(vm_obj, "VMId"))
        with ctx.world.lock:
            vm = ctx.host.vms.get(vm_id) if vm_id else None
        if vm is None or vm.planned:
            ctx.write_error(errors.vm_not_found_by_id(ctx.name, str(vm_id)))
            return []
        return [(ctx.host, vm, destination)]
    host = ctx.target_host()
    if host is None:
        return []
    return [(host, vm, destination) for vm in find_vms(ctx, host, [b.get("Name")], include_planned=False)]


def _request(ctx: Context, host: Host, vm: VirtualMachine, destination: str) -> MoveRequest:
    b = ctx.bound
    report = b.get("CompatibilityReport")
    if report is not None:
        # A report carries the paths it was made with (catalogue 1.10).
        return MoveRequest(
            source=host.name,
            vm_id=vm.id,
            destination=destination,
            include_storage=int(get_prop(report, "OperationType") or 0)
            == int(OperationTypeEnum.MoveVirtualMachineAndStorage),
            destination_storage_path=get_prop(report, "Path"),
            session_auth=ctx.request.auth or "negotiate",
            session_user=ctx.request.user,
        )
    return MoveRequest(
        source=host.name,
        vm_id=vm.id,
        destination=destination,
        include_storage=b.switch("IncludeStorage"),
        destination_storage_path=b.get("DestinationStoragePath"),
        virtual_machine_path=b.get("VirtualMachinePath"),
        snapshot_file_path=b.get("SnapshotFilePath"),
        smart_paging_file_path=b.get("SmartPagingFilePath"),
        vhds=_vhd_pairs(b.get("Vhds")),
        retain_vhd_copies_on_source=b.switch("RetainVhdCopiesOnSource"),
        remove_source_unmanaged_vhds=b.switch("RemoveSourceUnmanagedVhds"),
        session_auth=ctx.request.auth or "negotiate",
        session_user=ctx.request.user,
    )


def _refused(ctx: Context, refused: MoveRefused) -> None:
    ctx.write_error(errors.virtualization_error(ctx.name, refused.error_id, refused.category, refused.message))


@cmdlet(MOVE_VM)
def move_vm(ctx: Context) -> Iterable[Any]:
    b = ctx.bound
    if b.switch("AsJob") and b.switch("Passthru"):
        ctx.write_error(
            errors.virtualization_error(
                ctx.name, "InvalidParameter", ErrorCategory.InvalidArgument, errors.ASJOB_AND_PASSTHRU
            )
        )
        return []
    out: list[Any] = []
    started: list[tuple[Host, MigrationJob]] = []
    # One VM after the other, as the module's ProcessOneOperand does: each move is watched to its end before
    # the next starts (with -AsJob the lab starts them all and returns one job; see lab/README.md).
    for host, vm, destination in _resolve(ctx):
        request = _request(ctx, host, vm, destination)
        if b.switch("WhatIf"):
            continue
        try:
            job = ctx.engine.start_move(request)
        except MoveRefused as refused:
            _refused(ctx, refused)
            continue
        if b.switch("AsJob"):
            started.append((host, job))
            continue
        out.extend(_watch(ctx, host, job))
        if ctx.io.stop_event.is_set():
            break
    if started:
        host, job = started[0]
        with ctx.world.lock:
            status = job.job_status
        out.append(
            objects.vm_job(next(_job_ids), uuid.uuid4(), host, "Move-VM", "Running", status, ctx.world.clock.now())
        )
    return out


def _snapshot(ctx: Context, job: MigrationJob) -> tuple[int, bool]:
    ctx.engine.jobs(ctx.host_name)  # a WMI query of the job brings vmms's view up to date
    with ctx.world.lock:
        return job.percent_complete, job.finished


def _watch(ctx: Context, host: Host, job: MigrationJob) -> list[PSObject]:
    activity = job.element_name or MOVE_ACTIVITY
    interval = max(MIN_REAL_POLL, ctx.world.clock.to_real(POLL_SECONDS))
    percent, finished = _snapshot(ctx, job)
    while not finished:
        ctx.io.write_progress(activity, f"{percent}%", percent)
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and not job.done.is_set():
            if ctx.io.stop_event.is_set():
                # PipelineStoppedException: the cmdlet stops watching; the host's job goes on.
                return []
            job.done.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        if ctx.io.stop_event.is_set():
            return []
        percent, finished = _snapshot(ctx, job)
    ctx.io.write_progress(activity, f"{percent}%", percent, completed=True)
    with ctx.world.lock:
        succeeded = job.state in (JobState.Completed, JobState.CompletedWithWarnings) and job.error_code == 0
        spec = None
        if not succeeded:
            spec = errors.job_failure(
                ctx.name, job.error_code or 32768, job.error_summary, job.error_description, job.vm_name
            )
        moved = None
        target = ctx.world.host(job.destination) or next(
            (h for h in ctx.world.hosts.values() if job.vm_id in h.vms and h is not host), None
        )
        if succeeded and ctx.bound.switch("Passthru") and target is not None:
            vm = target.vms.get(job.vm_id)
            if vm is not None:
                moved = objects.virtual_machine(vm, target, ctx.world.clock.now())
    if spec is not None:
        ctx.write_error(spec)
        return []
    return [moved] if moved is not None else []


def _source_object(ctx: Context, host: Host, target: Host | None, vm: VirtualMachine, item: Incompatibility) -> Any:
    """The `Source` of a VMCompatibilityError: the device, VM or checkpoint that failed, or null (NEON
    VMCompatibilityError). A finding about the destination's own VM (a leftover with this VM's Id) has that VM."""
    kind, name = item.source_kind, item.source_name
    if kind == "VMNetworkAdapter":
        adapter = next((a for a in vm.adapters if a.name == name), vm.adapters[0] if vm.adapters else None)
        return objects.network_adapter(host, vm, adapter) if adapter else None
    if kind == "VMProcessor":
        return objects.vm_processor(host, vm)
    if kind == "VMMemory":
        return objects.vm_memory(host, vm)
    if kind == "HardDiskDrive":
        disk = next((d for d in vm.disks if d.path == name or name in objects.hard_drive_text(vm, d)), None)
        return objects.hard_disk_drive(host, vm, disk) if disk else None
    if kind == "DvdDrive":
        drive = next((d for d in vm.dvd_drives if d.path == name), vm.dvd_drives[0] if vm.dvd_drives else None)
        return objects.dvd_drive(host, vm, drive) if drive else None
    if kind == "VirtualMachine":
        if item.on_destination and target is not None:
            there = target.vms.get(vm.id)
            return objects.virtual_machine(there, target, ctx.world.clock.now()) if there is not None else None
        return objects.virtual_machine(vm, host, ctx.world.clock.now())
    return None


@cmdlet(COMPARE_VM)
def compare_vm(ctx: Context) -> Iterable[Any]:
    # One report per VM the name resolves to (NEON CompareVM.CreateObjects).
    return [report for host, vm, destination in _resolve(ctx) for report in _compare_one(ctx, host, vm, destination)]


def _compare_one(ctx: Context, host: Host, vm: VirtualMachine, destination: str) -> list[Any]:
    request = _request(ctx, host, vm, destination)
    try:
        found = ctx.engine.compare(request)
    except MoveRefused as refused:
        _refused(ctx, refused)
        return []
    storage = checks.is_storage_move(request)
    with ctx.world.lock:
        target = ctx.world.host(destination)
        # The report's VM is the planned VM the check created on the destination (NEON VMCompatibilityReport).
        planned = dataclasses.replace(vm, planned=True)
        vm_object = objects.virtual_machine(
            planned, host, ctx.world.clock.now(), computer_name=target.name if target else destination
        )
        incompatibilities = [
            objects.compatibility_error(item, _source_object(ctx, host, target, vm, item)) for item in found
        ]
        return [
            objects.compatibility_report(
                vm_object,
                OperationTypeEnum.MoveVirtualMachineAndStorage if storage else OperationTypeEnum.MoveVirtualMachine,
                destination,
                incompatibilities,
                path=request.virtual_machine_path or request.destination_storage_path,
                snapshot_path=request.snapshot_file_path or request.destination_storage_path,
                vhd_destination_path=request.destination_storage_path,
                vhd_source_path=None,
            )
        ]
