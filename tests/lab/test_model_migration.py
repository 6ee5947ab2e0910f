"""The move engine against the real model: physics, admission, checks, authentication, outcome, cancel.

Worlds are built from small inline topologies at a high time scale, so a move of minutes of simulated time
plays in a fraction of a second; every wait is bounded.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.commands import ErrorCategory
from lab.faults import FaultInjector
from lab.model import checks
from lab.model.directory import MIGRATION_SERVICE
from lab.model.migration import (
    JobState,
    MigrationJob,
    MigrationType,
    MoveEngine,
    MoveRefused,
    MoveRequest,
)
from lab.model.state import GIB, VMState, World, stable_guid
from lab.model.topology import build_world, parse_topology

TIME_SCALE = 600.0
WAIT = 10.0  # real seconds: the longest any test waits for one thing


# -- builders (also used by test_model_faults and test_model_kerberos) --------------------------------------
def host_spec(name: str, index: int, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "os": "2022",
        "cpu": {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"},
        "memory_gb": 256,
        "volumes": [
            {"drive": "C", "size_gb": 200, "free_gb": 100},
            {"drive": "D", "size_gb": 2000, "free_gb": 1500},
        ],
        "switches": [{"name": "Production"}],
        "nics": [{"name": "LM", "ip": f"10.10.10.{10 + index}", "bandwidth_gbps": 1}],
        "live_migration": {"enabled": True, "authentication": "Kerberos", "use_any_network": True},
        "isos": [r"C:\ISO\tools.iso"],
    }
    for key, value in overrides.items():
        if key == "live_migration":
            spec["live_migration"] = {**spec["live_migration"], **value}
        else:
            spec[key] = value
    return spec


def vm_spec(name: str, host: str = "HV01", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "host": host,
        "memory_gb": 4,
        "adapters": [{"switch": "Production"}],
        "disks": [{"path": rf"D:\Hyper-V\{name}\{name}.vhdx", "size_gb": 40, "file_gb": 6}],
    }
    spec.update(overrides)
    return spec


def full_delegation(names: list[str], domain: str = "lab.test") -> dict[str, Any]:
    """Constrained delegation with protocol transition between every pair of hosts."""
    directory = {}
    for name in names:
        spns = []
        for peer in names:
            if peer != name:
                for service in (MIGRATION_SERVICE, "cifs"):
                    spns += [f"{service}/{peer}", f"{service}/{peer.lower()}.{domain}"]
        directory[name] = {"allowed_to_delegate_to": spns, "protocol_transition": True}
    return directory


def make_world(
    hosts: list[dict[str, Any]] | None = None,
    vms: list[dict[str, Any]] | None = None,
    *,
    directory: dict[str, Any] | None = None,
    clusters: list[dict[str, Any]] | None = None,
    time_scale: float = TIME_SCALE,
    transfer: dict[str, Any] | None = None,
) -> World:
    hosts = hosts if hosts is not None else [host_spec("HV01", 1), host_spec("HV02", 2)]
    raw = {
        "lab": {"transfer": transfer or {}},
        "hosts": hosts,
        "vms": vms if vms is not None else [vm_spec("web01")],
        "directory": directory if directory is not None else full_delegation([h["name"] for h in hosts]),
        "clusters": clusters or [],
    }
    return build_world(parse_topology(raw), time_scale=time_scale)


def vm_id(name: str) -> uuid.UUID:
    return stable_guid("vm", name)


def request(name: str, source: str = "HV01", destination: str = "HV02", **fields: Any) -> MoveRequest:
    return MoveRequest(source=source, vm_id=vm_id(name), destination=destination, **fields)


def storage_request(name: str, source: str = "HV01", destination: str = "HV02", **fields: Any) -> MoveRequest:
    fields.setdefault("include_storage", True)
    fields.setdefault("destination_storage_path", rf"D:\VMs\{name}")
    return request(name, source, destination, **fields)


def wait_done(job: MigrationJob, timeout: float = WAIT) -> MigrationJob:
    assert job.done.wait(timeout), f"job {job.vm_name} still {job.state.name} at {job.percent_complete} %"
    return job


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def skip(world: World, seconds: float) -> None:
    """Let at least `seconds` of simulated time pass, quickly."""
    start = world.clock.elapsed()
    scale = world.clock.time_scale
    world.clock.time_scale = max(scale, seconds / 0.02)
    try:
        wait_until(lambda: world.clock.elapsed() - start >= seconds)
    finally:
        world.clock.time_scale = scale


def sim_duration(job: MigrationJob) -> float:
    assert job.start_time is not None
    assert job.end_time is not None
    return (job.end_time - job.start_time).total_seconds()


def start_engines() -> Iterator[Callable[..., MoveEngine]]:
    """A `running` fixture body: start engines with their scheduler thread, stop them after the test."""
    engines: list[MoveEngine] = []

    def start(world: World, **kwargs: Any) -> MoveEngine:
        engine = MoveEngine(world, tick=0.005, **kwargs)
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


@pytest.fixture
def running() -> Iterator[Callable[..., MoveEngine]]:
    yield from start_engines()


def assert_failed_at_source(job: MigrationJob, *lines: str) -> None:
    assert job.state == JobState.Exception
    assert job.error_code == 32768
    assert job.error_summary == (
        f"Virtual machine migration operation for '{job.vm_name}' failed at migration source '{job.source}'. "
        f"(Virtual machine ID {str(job.vm_id).upper()})"
    )
    for line in lines:
        assert line in job.error_description.split("\r\n"), job.error_description


# -- success -------------------------------------------------------------------------------------------------
def test_live_move_without_storage_keeps_paths_and_moves_the_vm(running):
    # No VHD: nothing a destination would have to reach (see the shared-storage test below).
    world = make_world(vms=[vm_spec("app01", disks=[])])
    engine = running(world)
    source, destination = world.hosts["HV01"], world.hosts["HV02"]
    vm = source.vms[vm_id("app01")]
    old_path, config = vm.path, vm.config_file

    job = wait_done(engine.start_move(request("app01", session_user="LAB\\svc-snlm")))

    assert job.state == JobState.Completed
    assert job.percent_complete == 100
    assert job.error_code == 0
    assert (job.job_type, job.element_name, job.migration_type) == (
        305,
        "Moving Virtual Machine",
        MigrationType.VirtualSystem,
    )
    assert job.instance_id == job.instance_id.upper()
    assert uuid.UUID(job.instance_id)
    assert job.owner == "LAB\\svc-snlm"
    assert job.destination == "HV02"
    assert vm.id not in source.vms
    assert destination.vms[vm.id] is vm
    assert vm.state == VMState.Running
    assert not vm.planned
    assert vm.path == old_path
    assert destination.has_file(config)
    assert not source.has_file(config)
    assert world.move_starts[vm.id] == 1
    assert job.bytes_done == job.bytes_total >= vm.memory_startup
    assert 1 <= job.memory_passes <= 10


def test_live_move_with_vhd_on_storage_both_hosts_reach(running):
    world = make_world()
    engine = running(world)
    vm = world.hosts["HV01"].vms[vm_id("web01")]
    disk_path = vm.disks[0].path
    world.hosts["HV02"].add_file(disk_path, vm.disks[0].file_size)  # the same file seen from both hosts

    job = wait_done(engine.start_move(request("web01")))

    assert job.state == JobState.Completed
    assert vm.disks[0].path == disk_path
    assert world.hosts["HV01"].has_file(disk_path)  # nothing copied, nothing removed


def test_storage_move_places_files_under_destination_storage_path(running):
    world = make_world()
    engine = running(world)
    source, destination = world.hosts["HV01"], world.hosts["HV02"]
    vm = source.vms[vm_id("web01")]
    old_vhd, old_config = vm.disks[0].path, vm.config_file

    job = wait_done(engine.start_move(storage_request("web01")))

    assert job.state == JobState.Completed
    assert (job.job_type, job.element_name) == (306, "Moving Virtual Machine and Storage")
    assert job.migration_type == MigrationType.VirtualSystemAndStorage
    assert vm.path == r"D:\VMs\web01"
    assert vm.disks[0].path == r"D:\VMs\web01\web01.vhdx"
    assert vm.config_file.startswith("D:\\VMs\\web01\\Virtual Machines\\")
    entry = destination.files[checks.norm_path(vm.disks[0].path)]
    assert entry.size == 6 * GIB
    assert not entry.partial
    assert destination.has_file(vm.config_file)
    assert not source.has_file(old_vhd)
    assert not source.has_file(old_config)
    assert destination.vms[vm.id] is vm
    assert vm.id not in source.vms
    assert job.bytes_total >= 6 * GIB + vm.memory_startup
    assert world.move_starts[vm.id] == 1


def test_storage_move_with_vhds_and_virtual_machine_path(running):
    world = make_world()
    engine = running(world)
    vm = world.hosts["HV01"].vms[vm_id("web01")]
    req = request(
        "web01",
        virtual_machine_path=r"C:\Config\web01",
        vhds=((vm.disks[0].path, r"D:\Disks\web01.vhdx"),),
        retain_vhd_copies_on_source=True,
    )
    old_vhd = vm.disks[0].path
    wait_done(engine.start_move(req))
    assert vm.path == r"C:\Config\web01"
    assert vm.disks[0].path == r"D:\Disks\web01.vhdx"
    assert world.hosts["HV02"].has_file(r"D:\Disks\web01.vhdx")
    assert world.hosts["HV01"].has_file(old_vhd)  # -RetainVhdCopiesOnSource


def test_progress_is_monotonic_and_reaches_100_only_at_completion(running):
    world = make_world()
    engine = running(world)
    job = engine.start_move(storage_request("web01"))
    seen: list[tuple[int, JobState]] = []
    deadline = time.monotonic() + WAIT
    while not job.done.is_set():
        seen.append((job.percent_complete, job.state))
        assert time.monotonic() < deadline
        time.sleep(0.001)
    seen.append((job.percent_complete, job.state))
    percents = [p for p, _ in seen]
    assert percents == sorted(percents)
    assert all(p < 100 for p, state in seen if state != JobState.Completed)
    assert len(set(percents)) > 5, percents  # it really moved through the range
    assert job.percent_complete == 100


def test_compression_is_faster_than_tcpip(running):
    durations = {}
    for option in ("Compression", "TCPIP"):
        hosts = [host_spec(n, i, live_migration={"performance": option}) for i, n in enumerate(("HV01", "HV02"), 1)]
        world = make_world(hosts, [vm_spec("app01", disks=[], memory_gb=16)])
        job = wait_done(running(world).start_move(request("app01")))
        durations[option] = sim_duration(job)
    assert durations["Compression"] < durations["TCPIP"] * 0.7


def test_two_concurrent_moves_share_the_link_and_take_longer(running):
    vms = [vm_spec("a", disks=[], memory_gb=16), vm_spec("b", disks=[], memory_gb=16)]
    # Streams as fast as the link, so that sharing it halves each move's rate (test_model_transfer has the
    # stream cap).
    world = make_world(vms=vms, transfer={"tcp_stream_fraction": 1})
    engine = running(world)
    alone = sim_duration(wait_done(engine.start_move(request("a"))))

    world2 = make_world(vms=vms, transfer={"tcp_stream_fraction": 1})
    engine2 = running(world2)
    with world2.lock:  # submit both at the same instant
        jobs = [engine2.start_move(request("a")), engine2.start_move(request("b"))]
    together = [sim_duration(wait_done(job)) for job in jobs]
    assert all(t > alone * 1.6 for t in together), (alone, together)


def test_dirty_memory_makes_more_passes_and_a_longer_blackout(running):
    quiet = make_world(vms=[vm_spec("db", disks=[], memory_gb=8, dirty_rate_mbps=1)])
    busy = make_world(vms=[vm_spec("db", disks=[], memory_gb=8, dirty_rate_mbps=400)])
    quiet_job = wait_done(running(quiet).start_move(request("db")))
    busy_job = wait_done(running(busy).start_move(request("db")))
    assert busy_job.state == quiet_job.state == JobState.Completed
    assert busy_job.memory_passes > quiet_job.memory_passes
    assert busy_job.blackout_seconds > quiet_job.blackout_seconds
    assert busy_job.bytes_total > quiet_job.bytes_total


# -- admission -------------------------------------------------------------------------------------------------
def _three_vm_world(memory_gb: float = 32) -> World:
    hosts = [host_spec("HV01", 1), host_spec("HV02", 2)]
    return make_world(hosts, [vm_spec(n, disks=[], memory_gb=memory_gb) for n in ("a", "b", "c")])


def test_third_move_waits_then_fails_with_event_21501(running):
    world = _three_vm_world()
    engine = running(world, admission_timeout=20.0)
    with world.lock:
        jobs = [engine.start_move(request(n)) for n in ("a", "b", "c")]
    assert [j.state for j in jobs] == [JobState.Running, JobState.Running, JobState.New]
    third = wait_done(jobs[2])
    assert_failed_at_source(
        third,
        'Failed to perform migration on virtual machine "c" because virtual machine migration limit "2" was '
        "reached, please wait for completion of an ongoing migration operation.",
    )
    assert third.percent_complete == 0
    assert world.hosts["HV01"].vms[vm_id("c")].state == VMState.Running
    assert all(wait_done(j).state == JobState.Completed for j in jobs[:2])


def test_waiting_move_starts_when_a_slot_frees(running):
    world = _three_vm_world(memory_gb=8)
    engine = running(world)  # 240 s of patience: enough for one of the first two to finish
    with world.lock:
        jobs = [engine.start_move(request(n)) for n in ("a", "b", "c")]
    assert jobs[2].state == JobState.New
    assert all(wait_done(j).state == JobState.Completed for j in jobs)
    assert jobs[2].start_time is not None
    assert jobs[0].end_time is not None
    assert jobs[2].start_time >= min(jobs[0].end_time, jobs[1].end_time)


def test_newer_limit_wording_and_cluster_limit_wins(running):
    hosts = [host_spec("HV01", 1, live_migration={"max_vm_migrations": 4}), host_spec("HV02", 2)]
    world = make_world(
        hosts,
        [vm_spec(n, disks=[], memory_gb=32) for n in ("a", "b")],
        clusters=[{"name": "CL1", "nodes": ["HV01"], "max_parallel_migrations": 1}],
    )
    engine = running(world, admission_timeout=10.0, limit_wording="newer")
    with world.lock:
        first, second = engine.start_move(request("a")), engine.start_move(request("b"))
    wait_done(second)
    assert second.error_description == (
        "Virtual machine migration limit 1 was reached, please wait for completion of an ongoing migration operation."
    )
    wait_done(first)


# -- module pre-checks -------------------------------------------------------------------------------------------
def _refusal(engine: MoveEngine, req: MoveRequest) -> MoveRefused:
    with pytest.raises(MoveRefused) as info:
        engine.start_move(req)
    return info.value


def test_pre_checks_refuse_with_the_modules_texts():
    hosts = [
        host_spec("HV01", 1),
        host_spec("HV02", 2, live_migration={"enabled": False}),
        host_spec("HV03", 3, live_migration={"use_any_network": False}),
        host_spec("HV04", 4),
    ]
    vms = [vm_spec("web01"), vm_spec("ha01", host="HV04", clustered=True)]
    world = make_world(hosts, vms, clusters=[{"name": "CL1", "nodes": ["HV04"]}])
    engine = MoveEngine(world)

    missing = _refusal(engine, MoveRequest(source="HV01", vm_id=uuid.uuid4(), destination="HV02"))
    assert (missing.error_id, missing.category) == ("ObjectNotFound", ErrorCategory.ObjectNotFound)
    assert missing.message.startswith("Hyper-V was unable to find a virtual machine with id")
    elsewhere = _refusal(engine, request("ha01", source="HV01"))
    assert elsewhere.message == 'Hyper-V was unable to find a virtual machine with name "ha01".'

    disabled = _refusal(engine, request("web01", destination="HV02"))
    assert disabled.category == ErrorCategory.InvalidOperation
    assert disabled.message == (
        "The destination host is not configured for live migration. Use the Enable-VMMigration cmdlet to modify "
        "the Hyper-V settings on the destination host to enable migration."
    )
    no_networks = _refusal(engine, request("web01", destination="hv03.lab.test"))
    assert no_networks.message.startswith(
        "Live migrations of virtual machines cannot be sent to the destination host because no migration networks "
        "are specified for incoming live migrations."
    )
    clustered = _refusal(engine, request("ha01", source="HV04", destination="HV01"))
    assert clustered.message == (
        "This operation is not supported on a clustered virtual machine. To perform this operation, remove the "
        "virtual machine from the cluster and then try again."
    )
    renamed = _refusal(engine, request("web01", destination="HV04", vhds=((r"D:\a\web01.vhdx", r"D:\b\other.vhdx"),)))
    assert renamed.message == "The source and destination file names in the Vhds parameter must match."
    unknown = _refusal(engine, request("web01", destination="NOPE"))
    assert "NOPE" in unknown.message
    assert "0x800706BA" in unknown.message
    assert unknown.category == ErrorCategory.ConnectionError

    world.hosts["HV01"].live_migration.enabled = False
    source_off = _refusal(engine, request("web01", destination="HV04"))
    assert source_off.message.startswith("The source host is not configured for live migration.")
    assert sum(world.move_starts.values()) == 0  # nothing was started


def test_destination_by_address_and_fqdn(running):
    world = make_world(vms=[vm_spec("a", disks=[]), vm_spec("b", disks=[])])
    engine = running(world)
    assert wait_done(engine.start_move(request("a", destination="10.10.10.12"))).state == JobState.Completed
    assert wait_done(engine.start_move(request("b", destination="HV02.LAB.TEST"))).state == JobState.Completed


def test_a_second_move_of_a_migrating_vm_fails_and_still_counts(running):
    world = make_world()
    engine = running(world)
    with world.lock:
        first = engine.start_move(storage_request("web01"))
        second = engine.start_move(storage_request("web01"))
    assert second.done.is_set()
    assert_failed_at_source(
        second, "The operation cannot be performed while the virtual machine is in its current state."
    )
    assert world.move_starts[vm_id("web01")] == 2
    assert engine.active_job_for_vm(vm_id("web01")) is first
    assert wait_done(first).state == JobState.Completed


# -- vmms checks (Compare-VM and the first seconds of a move) -----------------------------------------------------
CHECK_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool, str, int, str]] = [
    # (case, destination host overrides, VM overrides, storage move, expected line, MessageId, Source)
    (
        "switch",
        {"switches": [{"name": "Other"}]},
        {},
        True,
        "Could not find Ethernet switch 'Production'.",
        33012,
        "VMNetworkAdapter",
    ),
    (
        "cpu vendor",
        {"cpu": {"vendor": "AuthenticAMD", "model": "AMD EPYC 7763"}},
        {"processor_compatibility": True},
        True,
        'Virtual machine "web01" is using processor-specific features not supported on host "HV02".',
        24002,
        "VMProcessor",
    ),
    (
        "cpu model",
        {"cpu": {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6430"}},
        {},
        True,
        "To allow for migration of this virtual machine to a server with a different processor, modify the virtual "
        "machine settings to limit the processor features used by the virtual machine.",
        24004,
        "VMProcessor",
    ),
    (
        "memory",
        {"memory_gb": 8, "memory_reserved_gb": 6},
        {},
        True,
        "'web01' could not initialize memory: Ran out of memory (0x8007000E).",
        40014,
        "VMMemory",
    ),
    (
        "disk space",
        {"volumes": [{"drive": "C", "size_gb": 200, "free_gb": 100}, {"drive": "D", "size_gb": 100, "free_gb": 2}]},
        {},
        True,
        "There is not enough space on the disk. (0x80070070)",
        21502,
        "HardDiskDrive",
    ),
    (
        "pass-through",
        {},
        {"passthrough_disks": [{"disk_number": 2}]},
        True,
        "pass-through disk",
        40008,
        "HardDiskDrive",
    ),
    (
        "version",
        {"os": "2019"},
        {"version": "10.0"},
        True,
        "configuration version 10.0",
        24006,
        "VirtualMachine",
    ),
    (
        "iso",
        {"isos": []},
        {"iso": r"C:\ISO\tools.iso"},
        True,
        '"web01" Synthetic SCSI Controller: Failed to restore with Error "A virtual disk support provider for the '
        'specified file was not found." (0xC03A0014).',
        21502,
        "DvdDrive",
    ),
    (
        "backup",
        {},
        {"backup_in_progress": True},
        True,
        "being backed up",
        21502,
        "VirtualMachine",
    ),
    (
        "vhd not reachable",
        {},
        {},
        False,
        "Failed to open attachment",
        40010,
        "HardDiskDrive",
    ),
]


@pytest.mark.parametrize(
    ("destination", "vm", "storage", "line", "message_id", "source_kind"),
    [case[1:] for case in CHECK_CASES],
    ids=[case[0] for case in CHECK_CASES],
)
def test_each_check_fails_the_move_early_and_shows_in_compare(
    running, destination, vm, storage, line, message_id, source_kind
):
    world = make_world([host_spec("HV01", 1), host_spec("HV02", 2, **destination)], [vm_spec("web01", **vm)])
    engine = running(world)
    req = storage_request("web01") if storage else request("web01")

    report = engine.compare(req)
    assert [i.message_id for i in report] == [message_id], report
    assert report[0].source_kind == source_kind
    assert world.move_starts[vm_id("web01")] == 0  # Compare-VM moves nothing

    job = wait_done(engine.start_move(req))
    assert job.state == JobState.Exception
    assert job.error_code == 32768
    assert job.percent_complete < 10
    lines = job.error_description.split("\r\n")
    assert any(line in text for text in lines), job.error_description
    assert report[0].message in lines  # Compare-VM's message is the move's error line
    assert job.error_summary.startswith(
        "Virtual machine migration operation for 'web01' failed at migration source 'HV01'."
    )
    vm_now = world.hosts["HV01"].vms[vm_id("web01")]
    assert vm_now.state == VMState.Running
    assert vm_id("web01") not in world.hosts["HV02"].vms


def test_memory_failure_names_the_destination_and_the_partition_error(running):
    world = make_world([host_spec("HV01", 1), host_spec("HV02", 2, memory_gb=8, memory_reserved_gb=6)])
    job = wait_done(running(world).start_move(storage_request("web01")))
    assert job.error_description.split("\r\n") == [
        "Virtual machine migration operation for 'web01' failed at migration destination 'HV02'. "
        f"(Virtual machine ID {str(vm_id('web01')).upper()})",
        "'web01' could not initialize memory: Ran out of memory (0x8007000E).",
        "Failed to create partition: Insufficient system resources exist to complete the requested service. "
        "(0x800705AA)",
    ]


def test_processor_compatibility_allows_a_different_model(running):
    dest = host_spec("HV02", 2, cpu={"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6430"})
    world = make_world([host_spec("HV01", 1), dest], [vm_spec("web01", processor_compatibility=True)])
    engine = running(world)
    assert engine.compare(storage_request("web01")) == []
    assert wait_done(engine.start_move(storage_request("web01"))).state == JobState.Completed


def test_compare_lists_every_incompatibility_at_once():
    dest = host_spec("HV02", 2, switches=[], os="2019", isos=[])
    world = make_world([host_spec("HV01", 1), dest], [vm_spec("web01", version="10.0", iso=r"C:\ISO\tools.iso")])
    report = MoveEngine(world).compare(storage_request("web01"))
    assert [i.message_id for i in report] == [33012, 24006, 21502]
    assert report[0].source_name == "Network Adapter"


CONNECTION_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "firewall",
        {"firewall_live_migration_rule": False},
        "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine migration "
        'with host "HV02": No connection could be made because the target machine actively refused it. (0x8007274D)',
    ),
    (
        "listener",
        {"live_migration": {"use_any_network": False, "networks": [{"subnet": "192.168.50.0/24"}]}},
        "The Virtual Machine Management Service disabled the listener for Virtual Machine migration connections.",
    ),
    ("smb off", {"smb2_enabled": False}, "(0x80070035)"),
    (
        "ms_server unbound",
        {
            "nics": [
                {
                    "name": "LM",
                    "ip": "10.10.10.12",
                    "bandwidth_gbps": 1,
                    "bindings": {"ms_msclient": True, "ms_server": False},
                }
            ]
        },
        "File and Printer Sharing (ms_server) is not bound on 'HV02'.",
    ),
    ("domain", {"domain": "other.test"}, "live migration needs both hosts in the same Active Directory domain."),
]


@pytest.mark.parametrize(
    ("destination", "line"), [c[1:] for c in CONNECTION_CASES], ids=[c[0] for c in CONNECTION_CASES]
)
def test_connection_problems_fail_the_move(running, destination, line):
    world = make_world([host_spec("HV01", 1), host_spec("HV02", 2, **destination)])
    engine = running(world)
    assert engine.compare(storage_request("web01")) == []  # Compare-VM does not use TCP 6600
    job = wait_done(engine.start_move(storage_request("web01")))
    assert job.state == JobState.Exception
    assert job.percent_complete < 10
    assert any(line in text for text in job.error_description.split("\r\n")), job.error_description


def test_smb_binding_does_not_matter_for_a_live_only_move(running):
    nic = {
        "name": "LM",
        "ip": "10.10.10.12",
        "bandwidth_gbps": 1,
        "bindings": {"ms_msclient": True, "ms_server": False},
    }
    world = make_world([host_spec("HV01", 1), host_spec("HV02", 2, nics=[nic])], [vm_spec("app01", disks=[])])
    assert wait_done(running(world).start_move(request("app01"))).state == JobState.Completed


# -- authentication ----------------------------------------------------------------------------------------------
def test_credssp_started_remotely_fails_with_no_credentials(running):
    hosts = [host_spec(n, i, live_migration={"authentication": "CredSSP"}) for i, n in enumerate(("HV01", "HV02"), 1)]
    world = make_world(hosts, [vm_spec("a", disks=[]), vm_spec("b", disks=[])], directory={})
    engine = running(world)
    job = wait_done(engine.start_move(request("a", session_auth="negotiate")))
    assert_failed_at_source(
        job,
        "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine migration "
        "with host 'HV02': No credentials are available in the security package (0x8009030E).",
        "Failed to authenticate the connection at the source host: no suitable credentials available.",
    )
    assert "double hop" in job.lab_detail
    # A CredSSP session brings the credentials to the source: one hop, it works.
    assert wait_done(engine.start_move(request("b", session_auth="credssp"))).state == JobState.Completed


def test_credssp_breaks_under_credential_guard_on_2025(running):
    hosts = [
        host_spec(n, i, os="2025", live_migration={"authentication": "CredSSP"})
        for i, n in enumerate(("HV01", "HV02"), 1)
    ]
    world = make_world(hosts, [vm_spec("a", disks=[])], directory={})
    job = wait_done(running(world).start_move(request("a", session_auth="credssp")))
    assert job.state == JobState.Exception
    assert "Credential Guard" in job.lab_detail


# -- cancel and listing --------------------------------------------------------------------------------------------
def test_terminate_via_request_state_change(running):
    world = make_world()
    engine = running(world)
    job = engine.start_move(storage_request("web01"))
    wait_until(lambda: job.percent_complete >= 5)
    assert engine.request_state_change("HV01", job.instance_id, 4) == 4096
    wait_done(job)
    assert job.state == JobState.Terminated
    assert job.job_status == "Job was terminated"
    assert 5 <= job.percent_complete < 100
    vm = world.hosts["HV01"].vms[vm_id("web01")]
    assert vm.state == VMState.Running
    planned = world.hosts["HV02"].vms[vm.id]
    assert planned.planned
    assert planned.state == VMState.Off
    assert engine.request_state_change("HV01", job.instance_id, 4) == 4097  # already over
    assert engine.request_state_change("HV01", "0" * 8 + "-0000-0000-0000-" + "0" * 12, 4) == 5
    assert engine.request_state_change("HV02", job.instance_id, 4) == 5  # the job lives on the source


def test_terminate_a_job_waiting_for_a_slot(running):
    world = _three_vm_world()
    engine = running(world)
    with world.lock:
        jobs = [engine.start_move(request(n)) for n in ("a", "b", "c")]
        assert engine.request_state_change("HV01", jobs[2].instance_id.lower(), 4) == 4096
    assert wait_done(jobs[2]).state == JobState.Terminated
    assert engine.request_state_change("HV01", jobs[0].instance_id, 2) == 1
    for job in jobs[:2]:
        wait_done(job)


def test_jobs_are_listed_on_the_source_for_five_minutes_after_they_end(running):
    world = make_world(vms=[vm_spec("app01", disks=[])])
    engine = running(world)
    job = wait_done(engine.start_move(request("app01")))
    assert engine.jobs("HV01") == [job]
    assert engine.jobs("hv01.lab.test") == [job]
    assert engine.jobs("HV02") == []
    skip(world, 310)
    assert engine.jobs("HV01") == []


def test_jobs_run_without_the_scheduler_thread_when_advanced():
    world = make_world(vms=[vm_spec("app01", disks=[])])
    engine = MoveEngine(world)  # never started: every call catches the jobs up with the clock
    job = engine.start_move(request("app01"))
    wait_until(lambda: engine.jobs("HV01")[0].finished)
    assert job.state == JobState.Completed


# -- what a failed move leaves, and the next attempt ----------------------------------------------------------------
def test_a_leftover_planned_vm_blocks_the_next_move_until_cleaned(running):
    world = make_world()
    faults = FaultInjector(world)
    engine = running(world, faults=faults)
    faults.fail_move_at("web01", 30)
    first = wait_done(engine.start_move(storage_request("web01")))
    assert first.state == JobState.Exception
    destination = world.hosts["HV02"]
    planned = destination.vms[vm_id("web01")]
    assert planned.planned
    assert planned.disks[0].path == r"D:\VMs\web01\web01.vhdx"

    second = wait_done(engine.start_move(storage_request("web01")))
    assert second.state == JobState.Exception
    assert "Failed to create Planned Virtual Machine at migration destination" in second.error_description
    assert "The file exists. (0x80070050)" in second.error_description
    assert engine.compare(storage_request("web01"))  # Compare-VM sees the leftovers too

    # The engine's compensation: remove the planned VM and the partial files, then retry.
    del destination.vms[vm_id("web01")]
    destination.remove_file(r"D:\VMs\web01\web01.vhdx")
    third = wait_done(engine.start_move(storage_request("web01")))
    assert third.state == JobState.Completed
    assert world.move_starts[vm_id("web01")] == 3


def test_a_vm_that_is_off_moves_without_memory(running):
    world = make_world(vms=[vm_spec("cold", state="Off")])
    job = wait_done(running(world).start_move(storage_request("cold")))
    assert job.state == JobState.Completed
    assert job.memory_passes == 0
    vm = world.hosts["HV02"].vms[vm_id("cold")]
    assert vm.state == VMState.Off
    assert job.bytes_total == 6 * GIB


def test_the_vm_record_is_not_copied_on_success(running):
    world = make_world()
    vm = world.hosts["HV01"].vms[vm_id("web01")]
    snapshot = copy.deepcopy(vm)
    wait_done(running(world).start_move(storage_request("web01")))
    moved = world.hosts["HV02"].vms[vm.id]
    assert moved is vm
    assert moved.name == snapshot.name
    assert moved.memory_startup == snapshot.memory_startup
