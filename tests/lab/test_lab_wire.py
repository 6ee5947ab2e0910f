"""A whole lab over the wire: an unmodified pypsrp client, configured only from the lab's inventory.

These are the lab's acceptance tests as a product: what the engine will see of a host (objects, error
records, progress, jobs that outlive the session, the migration limit, refused scripts), for each
authentication and transport the inventory can name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from lab.lab import Lab
from tests.lab.conftest import lab_wsman

pytestmark = pytest.mark.timeout(120)

VM_TYPE = "Microsoft.HyperV.PowerShell.VirtualMachine"
MIGRATION_JOB_TYPE = "Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/Msvm_MigrationJob"


def prop(obj: Any, name: str) -> Any:
    """A property of a deserialized object, wherever the server put it (adapted or extended)."""
    for bag in (getattr(obj, "adapted_properties", {}), getattr(obj, "extended_properties", {})):
        if name in bag:
            return bag[name]
    raise KeyError(f"{name} not in {sorted(getattr(obj, 'adapted_properties', {}))}")


def command(pool: RunspacePool, cmdlet: str, **parameters: Any) -> PowerShell:
    """A structured command (cmdlet + named parameters; True means a switch), not yet invoked."""
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in parameters.items():
        if value is True:
            ps.add_parameter(name)
        else:
            ps.add_parameter(name, value)
    return ps


def run(pool: RunspacePool, cmdlet: str, **parameters: Any) -> PowerShell:
    ps = command(pool, cmdlet, **parameters)
    ps.invoke()
    return ps


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def move_parameters(vm: str, destination: str) -> dict[str, Any]:
    return {
        "Name": vm,
        "DestinationHost": destination,
        "IncludeStorage": True,
        "DestinationStoragePath": rf"D:\Hyper-V\{vm}",
    }


def active_jobs(lab: Lab) -> list[dict[str, Any]]:
    return [j for j in lab.truth()["jobs"] if j["active"]]


# -- reading a host ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scheme", "auth"),
    [("http", "ntlm"), ("http", "negotiate"), ("https", "ntlm"), ("https", "basic"), ("http", "credssp")],
)
def test_get_vm_and_vmhost_for_each_transport(lab_factory: Callable[..., Lab], scheme: str, auth: str) -> None:
    lab = lab_factory("pair", scheme=scheme, auth=auth)
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        ps = run(pool, "Get-VM")
        assert not ps.had_errors
        assert not ps.streams.error
        vms = {prop(o, "Name"): o for o in ps.output}
        assert set(vms) == {"vm-a1", "vm-a2", "vm-a3", "vm-a4"}
        vm = vms["vm-a1"]
        assert vm.types[0] == VM_TYPE
        assert str(prop(vm, "State")) == "Running"
        assert prop(vm, "ComputerName") == "HV-A"
        assert str(prop(vm, "Id")) == next(v["id"] for v in lab.truth()["vms"] if v["name"] == "vm-a1")
        assert prop(vm, "MemoryStartup") == 2 * 1024**3

        ps = run(pool, "Get-VMHost")
        (host,) = ps.output
        assert host.types[0] == "Microsoft.HyperV.PowerShell.VMHost"
        assert prop(host, "VirtualMachineMigrationEnabled") is True
        assert str(prop(host, "VirtualMachineMigrationAuthenticationType")) == "Kerberos"
        assert str(prop(host, "VirtualMachineMigrationPerformanceOption")) == "Compression"
        assert prop(host, "MaximumVirtualMachineMigrations") == 2
        assert prop(host, "MemoryCapacity") == 128 * 1024**3


def test_error_records_over_the_wire(pair_lab: Lab) -> None:
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
        # A non-terminating error: the pipeline completes, the record is in the error stream.
        ps = run(pool, "Get-VM", Name="ghost")
        assert ps.state == 4  # Completed
        assert not ps.had_errors
        assert ps.output == []
        (record,) = ps.streams.error
        assert record.fq_error == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
        assert record.category == 5  # InvalidArgument
        assert record.reason == "VirtualizationException"
        assert record.target_name == "ghost"
        assert prop(record.exception, "Message") == 'Hyper-V was unable to find a virtual machine with name "ghost".'

        # A terminating error: an unknown cmdlet fails the pipeline.
        ps = run(pool, "Get-Foo")
        assert ps.state == 5  # Failed
        assert ps.had_errors
        assert ps.streams.error[0].fq_error == "CommandNotFoundException"

        # A parameter the cmdlet does not have.
        ps = run(pool, "Get-VM", Colour="blue")
        assert ps.had_errors
        assert ps.streams.error[0].fq_error == "NamedParameterNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM"


def test_scripts_are_refused(pair_lab: Lab) -> None:
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-VM | Remove-VM -Force")
        ps.invoke()
        assert ps.state == 5  # Failed
        assert ps.had_errors
        assert ps.output == []
        assert ps.streams.error[0].fq_error == "ScriptsNotSupported,Lab.HostRunner"
    # Nothing was removed: the lab has no PowerShell parser to run it with.
    assert len(pair_lab.truth()["locations"]) == 5


# -- moves ---------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_move_progress_outcome_and_clean_source(pair_lab: Lab) -> None:
    before = {f["path"] for f in pair_lab.truth()["hosts"]["HV-A"]["files"] if "vm-a1" in f["path"]}
    assert before
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
        ps = run(pool, "Move-VM", **move_parameters("vm-a1", "HV-B"))
        assert ps.state == 4
        assert not ps.had_errors, [str(e) for e in ps.streams.error]
        assert not ps.streams.error
        progress = ps.streams.progress
        assert progress, "a synchronous Move-VM writes progress records"
        percents = [p.percent_complete for p in progress]
        assert percents == sorted(percents)
        assert progress[-1].percent_complete == 100
        assert str(progress[-1].progress_type) == "Completed"
        assert all(p.description == f"{p.percent_complete}%" for p in progress)
    truth = pair_lab.truth()
    assert truth["locations"]["vm-a1"] == ["HV-B"]
    assert [v for v in truth["vms"] if v["name"] == "vm-a1" and v["planned"]] == []
    vm_id = next(v["id"] for v in truth["vms"] if v["name"] == "vm-a1")
    assert truth["move_starts"][vm_id]["starts"] == 1
    assert not {f["path"] for f in truth["hosts"]["HV-A"]["files"] if "vm-a1" in f["path"]}
    on_b = [f for f in truth["hosts"]["HV-B"]["files"] if "vm-a1" in f["path"]]
    assert on_b
    assert not [f for f in on_b if f["partial"]]
    (job,) = [j for j in truth["jobs"] if j["vm_name"] == "vm-a1"]
    assert job["state"] == "Completed"
    assert job["percent_complete"] == 100


@pytest.mark.timeout(60)
def test_partition_at_40_percent_fails_the_move_and_leaves_debris(pair_lab: Lab) -> None:
    pair_lab.set_time_scale(20)
    pair_lab.inject_fault("fail_move_at", vm="vm-a2", percent=40, action="partition", partition_seconds=30)
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
        ps = run(pool, "Move-VM", **move_parameters("vm-a2", "HV-B"))
        assert ps.streams.error, "the failed move writes an error record"
        record = ps.streams.error[0]
        assert record.fq_error == "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"
        message = str(prop(record.exception, "Message"))
        assert "vm-a2" in message
        assert "0x80072746" in message  # the connection was reset
        percents = [p.percent_complete for p in ps.streams.progress if p.percent_complete < 100]
        assert percents
        assert max(percents) >= 40
    truth = pair_lab.truth()
    # The VM keeps running on the source; the destination keeps what the failed move left there.
    assert truth["locations"]["vm-a2"] == ["HV-A"]
    source_vm = next(v for v in truth["vms"] if v["name"] == "vm-a2" and v["host"] == "HV-A")
    assert source_vm["state"] == "Running"
    debris = [f for f in truth["hosts"]["HV-B"]["files"] if "vm-a2" in f["path"]]
    planned = [v for v in truth["vms"] if v["name"] == "vm-a2" and v["planned"]]
    assert debris or planned
    (job,) = [j for j in truth["jobs"] if j["vm_name"] == "vm-a2"]
    assert job["state"] == "Exception"
    assert job["percent_complete"] >= 40
    # The fault fired once and started the partition it asked for.
    kinds = [f["kind"] for f in truth["faults"]]
    assert "fail_move_at" not in kinds
    assert "partition" in kinds


@pytest.mark.timeout(60)
def test_job_goes_on_after_the_client_disconnects(pair_lab: Lab) -> None:
    # Slow enough that the move is still running when the pool closes.
    pair_lab.set_time_scale(2)
    pool = RunspacePool(lab_wsman(pair_lab, "HV-A"))
    pool.open()
    ps = command(pool, "Move-VM", **move_parameters("vm-a3", "HV-B"))
    ps.begin_invoke()
    wait_for(
        lambda: [j for j in active_jobs(pair_lab) if j["vm_name"] == "vm-a3" and j["percent_complete"] > 0],
        20,
        "the move to be under way",
    )
    # The orchestrator goes away in the middle of the move: the job belongs to vmms, not to the session.
    pool.close()
    pair_lab.set_time_scale(200)
    wait_for(lambda: pair_lab.truth()["locations"].get("vm-a3") == ["HV-B"], 30, "the move to complete")
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as again:
        ps2 = run(again, "Get-CimInstance", Namespace=r"root\virtualization\v2", ClassName="Msvm_MigrationJob")
        assert not ps2.streams.error
        jobs = [j for j in ps2.output if str(prop(j, "ElementName")).startswith("Moving Virtual Machine")]
        assert jobs
        job = next(j for j in jobs if str(prop(j, "VirtualSystemName")).lower() == _vm_id(pair_lab, "vm-a3"))
        assert MIGRATION_JOB_TYPE in job.types
        assert prop(job, "JobState") == 7
        assert prop(job, "PercentComplete") == 100
    vm_id = _vm_id(pair_lab, "vm-a3")
    assert pair_lab.truth()["move_starts"][vm_id]["starts"] == 1


def _vm_id(lab: Lab, name: str) -> str:
    return next(v["id"] for v in lab.truth()["vms"] if v["name"] == name).lower()


@pytest.mark.timeout(90)
def test_concurrent_moves_never_exceed_the_host_limit(pair_lab: Lab) -> None:
    pair_lab.set_time_scale(5)
    outcomes: dict[str, PowerShell] = {}
    failures: list[BaseException] = []

    def move(vm: str) -> None:
        try:
            with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
                outcomes[vm] = run(pool, "Move-VM", **move_parameters(vm, "HV-B"))
        except BaseException as exc:  # reported below, with the VM's name
            failures.append(exc)

    threads = [threading.Thread(target=move, args=(vm,), daemon=True) for vm in ("vm-a1", "vm-a2", "vm-a3")]
    for thread in threads:
        thread.start()
    # All three are submitted; HV-A allows two at a time, so one waits (JobState New) for a slot.
    wait_for(lambda: len([j for j in active_jobs(pair_lab) if j["source"] == "HV-A"]) == 3, 20, "three jobs")
    most_running = 0
    saw_waiting = False
    while any(t.is_alive() for t in threads):
        jobs = active_jobs(pair_lab)
        running = [j for j in jobs if j["state"] == "Running"]
        most_running = max(most_running, len(running))
        saw_waiting = saw_waiting or any(j["state"] == "New" for j in jobs)
        pair_lab.set_time_scale(min(60.0, pair_lab.world.clock.time_scale * 1.5))
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    assert most_running == 2
    assert saw_waiting
    for vm, ps in outcomes.items():
        assert not ps.streams.error, (vm, [str(e) for e in ps.streams.error])
    assert {vm: pair_lab.truth()["locations"][vm] for vm in outcomes} == {vm: ["HV-B"] for vm in outcomes}


# -- the built-in estate: its deliberate problems are visible over the wire, its clean path is clean --------
@pytest.mark.timeout(60)
def test_default_estate_problems_over_the_wire_and_a_clean_move(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory("default", time_scale=600)
    with RunspacePool(lab_wsman(lab, "HV-S2")) as pool:

        def incompatibilities(vm: str) -> list[int]:
            ps = run(pool, "Compare-VM", **move_parameters(vm, "HV-S4"))
            assert not ps.streams.error, [str(e) for e in ps.streams.error]
            (report,) = ps.output
            assert report.types[0] == "Microsoft.HyperV.PowerShell.VMCompatibilityReport"
            return [prop(i, "MessageId") for i in prop(report, "Incompatibilities") or []]

        assert incompatibilities("web07") == []
        assert incompatibilities("bak01") == [33012]  # PROBLEM[switch-missing]
        # The clean path: Kerberos on both hosts, delegation already in the directory.
        ps = run(pool, "Move-VM", **move_parameters("web07", "HV-S4"))
        assert not ps.streams.error, [str(e) for e in ps.streams.error]
    assert lab.truth()["locations"]["web07"] == ["HV-S4"]

    with RunspacePool(lab_wsman(lab, "HV-S1")) as pool:
        (rule,) = run(pool, "Get-NetFirewallRule", Name="VIRT-MIGL-In-TCP-NoScope").output
        assert prop(rule, "Enabled") == 2  # False: PROBLEM[firewall-6600]
    with RunspacePool(lab_wsman(lab, "HV-OLD")) as pool:
        (smb,) = run(pool, "Get-SmbServerConfiguration").output
        assert prop(smb, "EnableSMB2Protocol") is False  # PROBLEM[smb2-off]
    with RunspacePool(lab_wsman(lab, "HV-E2")) as pool:
        (binding,) = run(pool, "Get-NetAdapterBinding", Name="Migration", ComponentID="ms_server").output
        assert prop(binding, "Enabled") is False  # PROBLEM[ms-server-unbound]
    assert len(lab.truth()["documented_problems"]) == 12
