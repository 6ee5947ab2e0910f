"""Topology files: the built-in ones load and contain what their comments promise; bad ones fail clearly."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lab.model.directory import MIGRATION_SERVICE
from lab.model.state import GIB, World
from lab.model.topology import DEFAULT_TOPOLOGY, TopologyError, build_world, load_topology
from lab.truth import documented_problems, world_truth

PAIR_TOPOLOGY = DEFAULT_TOPOLOGY.with_name("pair.yaml")


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(load_topology(DEFAULT_TOPOLOGY))


def _vm(world: World, name: str):
    found = world.locate_vm(name)
    assert len(found) == 1, f"{name} is registered on {[h.name for h, _ in found]}"
    return found[0]


def test_default_topology_shape(world: World) -> None:
    assert world.domain == "lab.test"
    assert set(world.hosts) == {"HV-E1", "HV-E2", "HV-W1", "HV-W2", "HV-S1", "HV-S2", "HV-S3", "HV-S4", "HV-OLD"}
    assert {name: c.nodes for name, c in world.clusters.items()} == {
        "CL-EAST": ["HV-E1", "HV-E2"],
        "CL-WEST": ["HV-W1", "HV-W2"],
    }
    vms = [vm for host in world.hosts.values() for vm in host.vms.values()]
    assert 30 <= len(vms) <= 40
    # Clustered VMs live on cluster nodes and each has its role, owned by the node that runs it.
    for host in world.hosts.values():
        for vm in host.vms.values():
            if vm.is_clustered:
                cluster = world.cluster_of(host)
                assert cluster is not None
                assert cluster.groups[vm.name.lower()].owner_node == host.name
    # Every host has a 1 Gbit/s management adapter and a 10 Gbit/s adapter in the migration subnet.
    for host in world.hosts.values():
        speeds = {n.name: n.bandwidth_bps for n in host.nics}
        assert speeds == {"Management": 10**9, "Migration": 10 * 10**9}
        assert any(n.ip.startswith("10.10.10.") for n in host.nics)
    # Most hosts keep Hyper-V's live migration defaults; the prepared ones use Kerberos on the migration net.
    defaults = [h for h in world.hosts.values() if not h.live_migration.enabled]
    assert len(defaults) > len(world.hosts) / 2
    for host in defaults:
        assert host.live_migration.authentication.name == "CredSSP"
        assert host.live_migration.performance.name == "Compression"
        assert host.live_migration.networks == []
    for host in world.hosts.values():
        if host.live_migration.enabled:
            assert host.live_migration.authentication.name == "Kerberos"
            assert [n.subnet for n in host.live_migration.networks] == ["10.10.10.0/24"]
    # Every VM fits the configuration versions its own host runs.
    for host in world.hosts.values():
        for vm in host.vms.values():
            assert vm.version in host.os.supported_vm_versions, (host.name, vm.name)


# One check per documented problem: the comment in default.yaml says it, the built world must really have it.
def _ms_server_unbound(world: World) -> None:
    host = world.hosts["HV-E2"]
    assert host.migration_nic().name == "Migration"
    assert host.migration_nic().bindings["ms_server"] is False
    assert all(h.migration_nic().bindings["ms_server"] for h in world.hosts.values() if h.name != "HV-E2")


def _volume_nearly_full(world: World) -> None:
    free = world.hosts["HV-W1"].free_space("C")
    smallest = min(sum(d.file_size for d in vm.disks) for h in world.hosts.values() for vm in h.vms.values())
    assert free < smallest
    assert free == 10 * GIB


def _memory_tight(world: World) -> None:
    host = world.hosts["HV-W2"]
    assert host.memory_available() == 4 * GIB
    assert any(vm.memory_startup > 4 * GIB for h in world.hosts.values() for vm in h.vms.values())


def _firewall_6600(world: World) -> None:
    assert not world.hosts["HV-S1"].live_migration_port_open()
    assert all(h.live_migration_port_open() for h in world.hosts.values() if h.name != "HV-S1")


def _cpu_vendor(world: World) -> None:
    vendors = {h.name: h.cpu.manufacturer for h in world.hosts.values()}
    assert vendors.pop("HV-S3") == "AuthenticAMD"
    assert set(vendors.values()) == {"GenuineIntel"}


def _smb2_off(world: World) -> None:
    assert [h.name for h in world.hosts.values() if not h.smb2_enabled] == ["HV-OLD"]


def _passthrough_disk(world: World) -> None:
    _, vm = _vm(world, "sql03")
    assert [d.disk_number for d in vm.disks if d.is_passthrough] == [2]


def _version_too_new(world: World) -> None:
    _, vm = _vm(world, "app-legacy01")
    assert vm.version not in world.hosts["HV-OLD"].os.supported_vm_versions


def _switch_missing(world: World) -> None:
    host, vm = _vm(world, "bak01")
    assert host.name == "HV-S2"
    assert "Backup" in {a.switch_name for a in vm.adapters}
    assert world.hosts["HV-S4"].switch("Backup") is None


def _iso_missing(world: World) -> None:
    host, vm = _vm(world, "file02")
    (iso,) = [d.path for d in vm.dvd_drives if d.path]
    assert host.has_file(iso)
    assert not any(h.has_file(iso) for h in world.hosts.values() if h is not host)


def _backup_in_progress(world: World) -> None:
    assert _vm(world, "file03")[1].backup_in_progress
    busy = [vm.name for h in world.hosts.values() for vm in h.vms.values() if vm.backup_in_progress]
    assert busy == ["file03"]


def _checkpoints(world: World) -> None:
    assert [c.name for c in _vm(world, "app07")[1].checkpoints] == ["before-patch-2024-11", "before-upgrade"]


PROBLEM_CHECKS = {
    "ms-server-unbound": _ms_server_unbound,
    "volume-nearly-full": _volume_nearly_full,
    "memory-tight": _memory_tight,
    "firewall-6600": _firewall_6600,
    "cpu-vendor": _cpu_vendor,
    "smb2-off": _smb2_off,
    "passthrough-disk": _passthrough_disk,
    "version-too-new": _version_too_new,
    "switch-missing": _switch_missing,
    "iso-missing": _iso_missing,
    "backup-in-progress": _backup_in_progress,
    "checkpoints": _checkpoints,
}


def test_every_documented_problem_is_checked() -> None:
    problems = documented_problems(DEFAULT_TOPOLOGY)
    assert sorted(p.id for p in problems) == sorted(PROBLEM_CHECKS)
    for problem in problems:
        assert len(problem.text) > 40, problem  # the comment says what and why, continuation lines joined


@pytest.mark.parametrize("problem", sorted(PROBLEM_CHECKS))
def test_documented_problem_is_real(world: World, problem: str) -> None:
    PROBLEM_CHECKS[problem](world)


def test_directory_delegation_for_two_pairs(world: World) -> None:
    def allowed(source: str, target: str) -> bool:
        account = world.directory.computer(source)
        assert account is not None
        fqdn = world.hosts[target].fqdn
        return account.may_delegate_to(MIGRATION_SERVICE, target, fqdn) and account.may_delegate_to(
            "cifs", target, fqdn
        )

    for source, target in [("HV-S2", "HV-S4"), ("HV-S4", "HV-S2"), ("HV-S1", "HV-S2"), ("HV-S2", "HV-S1")]:
        assert allowed(source, target), (source, target)
    assert not allowed("HV-E1", "HV-W1")
    for name in ("HV-S1", "HV-S2", "HV-S4"):
        account = world.directory.computer(name)
        assert account is not None
        assert account.protocol_transition
        assert not account.unconstrained
    # Hosts the topology leaves alone still have a (plain) computer account.
    plain = world.directory.computer("HV-OLD")
    assert plain is not None
    assert not plain.allowed_to_delegate_to


def test_pair_topology() -> None:
    world = build_world(load_topology(PAIR_TOPOLOGY))
    assert set(world.hosts) == {"HV-A", "HV-B"}
    assert documented_problems(PAIR_TOPOLOGY) == []
    assert all(h.live_migration.enabled for h in world.hosts.values())


def test_truth_is_json_and_complete(world: World) -> None:
    truth = world_truth(world)
    text = json.dumps(truth)
    assert json.loads(text) == truth
    assert len(truth["vms"]) == sum(len(h.vms) for h in world.hosts.values())
    assert truth["locations"]["web01"] == ["HV-E1"]
    assert truth["hosts"]["HV-S1"]["firewall_live_migration_open"] is False
    assert truth["hosts"]["HV-S2"]["migration_networks"] == [{"subnet": "10.10.10.0/24", "priority": 1}]
    roles = {r["name"]: r["owner_node"] for r in truth["clusters"]["CL-EAST"]["roles"]}
    assert roles["sql01"] == "HV-E1"
    assert truth["move_starts"] == {}
    assert truth["jobs"] == []
    files = {f["path"] for f in truth["hosts"]["HV-S2"]["files"]}
    assert r"D:\ISO\en-us_windows_server_2022_x64.iso" in files


# -- validation errors name the file and the field -----------------------------------------------------
_MINIMAL = """
hosts:
  - name: HV-X
    cpu: {vendor: GenuineIntel, model: Xeon}
    memory_gb: 64
    volumes: [{drive: D, size_gb: 100, free_gb: 50}]
    switches: [{name: Production}]
    nics: [{name: Management, ip: 10.0.0.1}]
vms:
  - name: vm1
    host: HV-X
    adapters: [{switch: Production}]
    disks: [{path: 'D:\\vm1.vhdx', size_gb: 10}]
"""


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (("vendor: GenuineIntel", "vendor: Intel"), "hosts[0].cpu.vendor"),
        (("{switch: Production}]\n    disks", "{switch: Backup}]\n    disks"), "vms[0] (vm1).adapters[0].switch"),
        (("host: HV-X\n", "host: HV-Y\n"), "vms[0] (vm1).host"),
        (("free_gb: 50", "free_gb: 500"), "hosts[0].volumes[0]"),
        (("memory_gb: 64", "memory_gb: 64\n    colour: blue"), "hosts[0].colour"),
        (("ip: 10.0.0.1", "ip: 10.0.0.300"), "hosts[0].nics[0].ip"),
        (("path: 'D:\\vm1.vhdx'", "path: 'Q:\\vm1.vhdx'"), "vms[0] (vm1).disks[0].path"),
    ],
)
def test_validation_error_names_file_and_field(tmp_path: Path, replace: tuple[str, str], expected: str) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(_MINIMAL)
    load_topology(good)  # the baseline is valid
    bad = tmp_path / "bad.yaml"
    assert replace[0] in _MINIMAL
    bad.write_text(_MINIMAL.replace(replace[0], replace[1]))
    with pytest.raises(TopologyError) as caught:
        load_topology(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ")
    assert expected in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(TopologyError, match=r"missing\.yaml: cannot read"):
        load_topology(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("hosts: [\n  - name: x\n  ::: }")
    with pytest.raises(TopologyError, match=r"broken\.yaml: not valid YAML"):
        load_topology(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text(textwrap.dedent("just a string\n"))
    with pytest.raises(TopologyError, match=r"scalar\.yaml: the topology must be a mapping"):
        load_topology(scalar)
