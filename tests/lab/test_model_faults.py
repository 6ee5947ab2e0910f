"""Fault injection against the real model and move engine: each fault's effect, bounds and listing."""

from __future__ import annotations

import pytest

from lab.faults import FaultInjector, FaultKind
from lab.model import checks
from lab.model.migration import JobState, MoveRefused
from lab.model.state import GIB, VMState, norm_path
from tests.lab.test_model_migration import (
    make_world,
    request,
    skip,
    start_engines,
    storage_request,
    vm_id,
    vm_spec,
    wait_done,
    wait_until,
)


@pytest.fixture
def running():
    yield from start_engines()


VHD_AT_DESTINATION = r"D:\VMs\web01\web01.vhdx"


@pytest.fixture
def lab(running):
    world = make_world(vms=[vm_spec("web01"), vm_spec("app01", disks=[])])
    faults = FaultInjector(world)
    engine = running(world, faults=faults)
    return world, faults, engine


def test_partition_mid_move_leaves_planned_vm_and_partial_files(lab):
    world, faults, engine = lab
    fault = faults.partition_at_percent("web01", 40, seconds=30)
    job = wait_done(engine.start_move(storage_request("web01")))

    assert job.state == JobState.Exception
    assert job.error_code == 32768
    assert 40 <= job.percent_complete < 50
    assert job.error_description == checks.RESET_TEXT
    assert fault.triggered
    source, destination = world.hosts["HV01"], world.hosts["HV02"]
    vm = source.vms[vm_id("web01")]
    assert vm.state == VMState.Running
    assert not vm.planned
    planned = destination.vms[vm.id]
    assert planned.planned
    assert planned.state == VMState.Off
    assert planned is not vm
    entry = destination.files[norm_path(VHD_AT_DESTINATION)]
    assert entry.partial
    assert 0 < entry.size < 6 * GIB
    assert source.has_file(vm.disks[0].path)  # nothing removed on the source
    assert world.move_starts[vm.id] == 1

    # The partition the fault started is in force: a new move between the hosts times out.
    partitions = [f for f in faults.active() if f.kind == FaultKind.PARTITION]
    assert len(partitions) == 1
    assert partitions[0].hosts == ("HV01", "HV02")
    timed_out = wait_done(engine.start_move(request("app01")))
    assert timed_out.error_description == checks.timeout_text("HV02")
    assert "0x8007274C" in timed_out.error_description


def test_partition_started_by_hand_breaks_a_move_in_flight(lab):
    world, faults, engine = lab
    job = engine.start_move(storage_request("web01"))
    wait_until(lambda: job.percent_complete >= 10)
    faults.partition("hv02.lab.test", "HV01", seconds=60)
    wait_done(job)
    assert job.state == JobState.Exception
    assert checks.RESET_TEXT in job.error_description
    assert world.hosts["HV02"].vms[vm_id("web01")].planned


def test_partition_expires(lab):
    world, faults, engine = lab
    fault = faults.partition("HV01", "HV02", seconds=30)
    assert faults.partitioned("HV02", "HV01")
    with pytest.raises(MoveRefused):  # Compare-VM cannot reach the destination either
        engine.compare(request("app01"))
    skip(world, 31)
    assert not faults.partitioned("HV01", "HV02")
    assert fault.ended
    assert faults.active() == []
    assert wait_done(engine.start_move(request("app01"))).state == JobState.Completed


def test_fail_move_at_is_one_shot(lab):
    world, faults, engine = lab
    fault = faults.fail_move_at("WEB01", 25)
    job = wait_done(engine.start_move(storage_request("web01")))
    assert job.state == JobState.Exception
    assert 25 <= job.percent_complete < 35
    assert job.error_description == checks.RESET_TEXT
    assert fault.id in job.lab_detail
    assert fault.ended
    assert fault.triggered
    assert faults.active() == []
    destination = world.hosts["HV02"]
    del destination.vms[vm_id("web01")]
    destination.remove_file(VHD_AT_DESTINATION)
    assert wait_done(engine.start_move(storage_request("web01"))).state == JobState.Completed


def test_fill_volume_fails_new_storage_moves_and_is_undone(lab):
    world, faults, engine = lab
    destination = world.hosts["HV02"]
    free_before = destination.free_space("D")
    fault = faults.fill_volume("HV02", "d:", seconds=120, leave_bytes=GIB)
    assert destination.free_space("D") == GIB
    report = engine.compare(storage_request("web01"))
    assert [i.message_id for i in report] == [checks.MESSAGE_IDS["disk_space"]]
    job = wait_done(engine.start_move(storage_request("web01")))
    assert job.state == JobState.Exception
    assert job.percent_complete < 10
    assert faults.snapshot()[0]["bytes"] == fault.amount
    assert faults.clear(fault.id)
    assert not faults.clear(fault.id)
    assert destination.free_space("D") == free_before


def test_fill_volume_mid_copy_fails_with_disk_full(lab):
    world, faults, engine = lab
    job = engine.start_move(storage_request("web01"))
    wait_until(lambda: job.percent_complete >= 5)
    faults.fill_volume("HV02", "D", seconds=60)
    wait_done(job)
    assert job.state == JobState.Exception
    assert job.error_description.split("\r\n")[-1] == checks.DISK_FULL_TEXT
    assert world.hosts["HV02"].files[norm_path(VHD_AT_DESTINATION)].partial
    skip(world, 61)
    faults.sweep()
    assert world.hosts["HV02"].free_space("D") > 6 * GIB  # the filler is gone, the partial file stays


def test_memory_pressure_blocks_moves_until_it_expires(lab):
    world, faults, engine = lab
    destination = world.hosts["HV02"]
    reserved = destination.memory_reserved
    faults.memory_pressure("HV02", destination.memory_available() - GIB, seconds=60)
    job = wait_done(engine.start_move(request("app01")))
    assert "'app01' could not initialize memory: Ran out of memory (0x8007000E)." in job.error_description
    skip(world, 61)
    faults.sweep()
    assert destination.memory_reserved == reserved
    assert wait_done(engine.start_move(request("app01"))).state == JobState.Completed


def test_restart_vmms_on_the_source_kills_moves(lab):
    world, faults, engine = lab
    job = engine.start_move(storage_request("web01"))
    wait_until(lambda: job.percent_complete >= 5)
    faults.restart_vmms("HV01", seconds=10)
    assert job.done.is_set()
    assert job.state == JobState.Killed
    assert world.hosts["HV01"].vmms_restarts == 1
    assert world.hosts["HV01"].vms[vm_id("web01")].state == VMState.Running
    with pytest.raises(MoveRefused) as refused:  # the module cannot reach vmms while it restarts
        engine.start_move(request("app01"))
    assert "Virtual Machine Management service" in refused.value.message
    skip(world, 11)
    assert wait_done(engine.start_move(request("app01"))).state == JobState.Completed


def test_restart_vmms_on_the_destination_breaks_moves_and_refuses_new_ones(lab):
    _world, faults, engine = lab
    job = engine.start_move(storage_request("web01"))
    wait_until(lambda: job.percent_complete >= 5)
    faults.restart_vmms("HV02", seconds=600)
    assert job.state == JobState.Exception
    assert checks.RESET_TEXT in job.error_description
    refused = wait_done(engine.start_move(request("app01")))
    assert refused.error_description == checks.refused_text("HV02")


def test_leave_source_files_is_one_shot(lab):
    world, faults, engine = lab
    source = world.hosts["HV01"]
    vm = source.vms[vm_id("web01")]
    old_vhd, old_config = vm.disks[0].path, vm.config_file
    fault = faults.leave_source_files("web01")
    job = wait_done(engine.start_move(storage_request("web01")))
    assert job.state == JobState.Completed
    assert fault.id in job.lab_detail
    assert source.has_file(old_vhd)
    assert source.has_file(old_config)
    assert vm.id not in source.vms
    assert world.hosts["HV02"].vms[vm.id] is vm
    assert fault.ended
    assert faults.active() == []


def test_wire_faults_call_listeners_and_expire(lab):
    world, faults, _engine = lab
    refused: list[tuple[str, bool]] = []
    slow: list[tuple[str, float]] = []
    faults.on_winrm_refuse(lambda host, on: refused.append((host, on)))
    faults.on_slow(lambda host, delay: slow.append((host, delay)))

    faults.refuse_winrm("hv01.lab.test", seconds=20)
    faults.slow_host("HV02", seconds=40, delay=2.5)
    assert faults.winrm_refused("HV01")
    assert not faults.winrm_refused("HV02")
    assert faults.slow_delay("HV02") == 2.5
    kinds = {entry["kind"]: entry for entry in faults.snapshot()}
    assert kinds["slow_host"]["delay"] == 2.5
    assert kinds["refuse_winrm"]["hosts"] == ["HV01"]
    assert 0 < kinds["refuse_winrm"]["remaining_seconds"] <= 20

    skip(world, 21)
    faults.sweep()
    assert not faults.winrm_refused("HV01")
    assert faults.slow_delay("HV02") == 2.5
    skip(world, 20)
    faults.sweep()
    assert faults.slow_delay("HV02") == 0.0
    assert refused == [("HV01", True), ("HV01", False)]
    assert slow == [("HV02", 2.5), ("HV02", 0.0)]


def test_faults_are_bounded_and_validated(lab):
    _world, faults, _engine = lab
    with pytest.raises(ValueError, match="positive"):
        faults.partition("HV01", "HV02", 0)
    with pytest.raises(KeyError):
        faults.refuse_winrm("NOPE", 10)
    with pytest.raises(KeyError):
        faults.fill_volume("HV01", "Q", 10)
    with pytest.raises(ValueError, match="percent"):
        faults.fail_move_at("web01", 100)
    one_shot = faults.leave_source_files("web01")
    assert one_shot.ends - one_shot.started > 0
    faults.memory_pressure("HV01", GIB, 30)
    assert faults.clear_all() == 2
    assert faults.active() == []
