"""Move-VM, Compare-VM, Msvm_MigrationJob and RequestStateChange against the lab's MoveEngine."""

from __future__ import annotations

import threading
import time

from lab.commands import CommandSpec, ErrorCategory, ParameterSpec, PipelineRequest
from lab.model.directory import ComputerAccount, TopologyDirectory
from tests.lab.test_cmdlets_support import SWITCH, Lab, RecordingIO, cmd, prop

HV = "Microsoft.HyperV.PowerShell"
MIGRATION_JOB = "Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/Msvm_MigrationJob"


def ready_lab() -> Lab:
    """The default lab, with web01's ISO ejected (HV02 does not have it: 0xC03A0014 otherwise)."""
    lab = Lab()
    io = lab.run(
        CommandSpec("Set-VMDvdDrive", (ParameterSpec("VMName", "web01"), ParameterSpec("Path", True, is_switch=True)))
    )
    assert io.errors == []
    return lab


def move(**extra: object):
    return cmd("Move-VM", "web01", "HV02", IncludeStorage=SWITCH, DestinationStoragePath=r"D:\VMs\web01", **extra)


def test_move_vm_synchronous_with_progress_and_passthru() -> None:
    lab = ready_lab()
    io = lab.run(move(Passthru=SWITCH))
    assert io.errors == []
    (vm,) = io.output
    assert vm.PSObject.type_names[0] == f"{HV}.VirtualMachine"
    assert prop(vm, "ComputerName") == "HV02"
    assert lab.world.hosts["HV02"].find_vm("web01") is not None
    assert lab.world.hosts["HV01"].find_vm("web01") is None
    assert io.progress[-1].completed
    assert io.progress[-1].percent == 100
    assert io.progress[-1].status == "100%"
    assert all(p.activity == "Moving Virtual Machine and Storage" for p in io.progress)
    assert all(p.status == f"{p.percent}%" for p in io.progress)
    assert lab.world.move_starts[prop(vm, "Id")] == 1


def test_move_vm_not_found_and_asjob_with_passthru() -> None:
    lab = Lab()
    io = lab.run(cmd("Move-VM", "ghost", "HV02"))
    assert io.errors[0].fully_qualified_error_id == "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    assert io.errors[0].message == 'Hyper-V was unable to find a virtual machine with name "ghost".'
    io = lab.run(cmd("Move-VM", "web01", "HV02", AsJob=SWITCH, Passthru=SWITCH))
    assert io.errors[0].message == "The Asjob and Passthru switches cannot be set at the same time."
    assert io.errors[0].fully_qualified_error_id == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    assert not lab.world.move_starts


def test_move_vm_refused_by_the_module() -> None:
    lab = Lab()
    lab.world.hosts["HV02"].live_migration.enabled = False
    io = lab.run(move())
    (error,) = io.errors
    assert error.fully_qualified_error_id == "InvalidOperation,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    assert error.message.startswith("The destination host is not configured for live migration.")
    spec, _ = lab.fail(move(ErrorAction="Stop"))
    assert spec.fully_qualified_error_id == "InvalidOperation,Microsoft.HyperV.PowerShell.Commands.MoveVM"


def test_move_vm_failure_is_a_composed_non_terminating_record() -> None:
    lab = Lab()
    directory = lab.world.directory
    assert isinstance(directory, TopologyDirectory)
    directory.put(ComputerAccount("HV01"))  # no delegation any more
    lab.engine.purge_tickets("HV01")
    io = lab.run(move())
    (error,) = io.errors
    assert error.fully_qualified_error_id == "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    assert error.category == ErrorCategory.NotSpecified
    assert error.category_message == "NotSpecified: (:) [Move-VM], VirtualizationException"
    assert "0x8009030E" in error.message
    assert "\r\n\r\n" in error.message
    assert io.progress[-1].completed
    assert lab.world.hosts["HV01"].find_vm("web01") is not None


def test_move_vm_as_job_then_watch_and_cancel_through_cim() -> None:
    lab = Lab(world=None)
    lab.world.clock.time_scale = 5  # slow enough to catch it running
    io = lab.run(move(AsJob=SWITCH))
    (job,) = io.output
    assert job.PSObject.type_names[:2] == [
        "Microsoft.HyperV.PowerShell.Commands.VmJob",
        "System.Management.Automation.Job",
    ]
    assert prop(job, "State") == "Running"
    assert prop(job, "Location") == "HV01"
    jobs = lab.run(cmd("Get-CimInstance", Namespace="root\\virtualization\\v2", ClassName="Msvm_MigrationJob")).output
    (wmi_job,) = jobs
    assert wmi_job.PSObject.type_names[0] == MIGRATION_JOB
    assert prop(wmi_job, "ElementName") == "Moving Virtual Machine and Storage"
    assert int(prop(wmi_job, "JobType")) == 306
    assert int(prop(wmi_job, "MigrationType")) == 32771
    assert prop(wmi_job, "DestinationHost") == "HV02"
    vm_guid = prop(wmi_job, "VirtualSystemName")
    assert vm_guid == vm_guid.upper()
    assert prop(wmi_job, "Owner") == "LAB\\admin"
    filtered = lab.run(
        cmd(
            "Get-CimInstance",
            "Msvm_MigrationJob",
            Namespace="root/virtualization/v2",
            Filter=f"VirtualSystemName='{vm_guid.lower()}'",
        )
    ).output
    assert len(filtered) == 1
    (service,) = lab.run(
        cmd("Get-CimInstance", "Msvm_VirtualSystemMigrationService", Namespace="root/virtualization/v2")
    ).output
    assert int(prop(service, "ActiveVirtualSystemMigrationCount")) == 1
    (result,) = lab.run(
        cmd("Invoke-CimMethod", MethodName="RequestStateChange", Arguments={"RequestedState": 4}), input=[wmi_job]
    ).output
    assert int(prop(result, "ReturnValue")) == 4096
    deadline = time.monotonic() + 10
    state = 0
    while time.monotonic() < deadline:
        (current,) = lab.run(cmd("Get-CimInstance", "Msvm_MigrationJob", Namespace="root/virtualization/v2")).output
        state = int(prop(current, "JobState"))
        if state >= 7:
            break
        time.sleep(0.02)
    assert state == 8
    assert lab.world.hosts["HV01"].find_vm("web01") is not None


def test_stopping_a_synchronous_move_does_not_cancel_it() -> None:
    lab = ready_lab()
    lab.world.clock.time_scale = 5
    io = RecordingIO()
    runner = lab.runner()
    thread = threading.Thread(target=runner.run, args=(PipelineRequest([move()]), io))
    thread.start()
    deadline = time.monotonic() + 5
    while not io.progress and time.monotonic() < deadline:
        time.sleep(0.01)
    io.stop_event.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    lab.world.clock.time_scale = 2000
    deadline = time.monotonic() + 10
    while lab.world.hosts["HV02"].find_vm("web01") is None and time.monotonic() < deadline:
        lab.engine.jobs("HV01")
        time.sleep(0.02)
    assert lab.world.hosts["HV02"].find_vm("web01") is not None


def test_compare_vm_reports_a_missing_switch() -> None:
    lab = Lab()
    lab.world.hosts["HV02"].switches.clear()
    (report,) = lab.run(
        cmd("Compare-VM", "web01", "HV02", IncludeStorage=SWITCH, DestinationStoragePath=r"D:\VMs\web01")
    ).output
    assert report.PSObject.type_names[0] == f"{HV}.VMCompatibilityReport"
    assert prop(report, "OperationType").name == "MoveVirtualMachineAndStorage"
    assert prop(report, "Destination") == "HV02"
    assert prop(prop(report, "VM"), "VirtualMachineType").name == "PlannedVirtualMachine"
    errors = prop(report, "Incompatibilities")
    switch_error = next(e for e in errors if int(prop(e, "MessageId")) == 33012)
    assert prop(switch_error, "Message") == "Could not find Ethernet switch 'Production'."
    assert prop(switch_error, "Source").PSObject.type_names[0] == f"{HV}.VMNetworkAdapter"
