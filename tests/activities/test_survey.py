"""The survey of a host (activities/survey.py) over the wire: what it reads is what the lab holds, in two round
trips (one without VHDs), names taken literally, and the host client's errors for a host it cannot read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.errors import ConfigurationError, TransientError
from activities.hosts import HostSessions
from activities.inventory import Inventory, load_inventory
from activities.survey import SurveyActivities, survey
from lab.lab import Lab
from lab.model.topology import parse_topology
from tests.lab import hostile_names as h
from workflows.contracts import HOST_UNREACHABLE, UNKNOWN_HOST, HostRef, HostSurvey

pytestmark = pytest.mark.timeout(300)

FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10}
GIB = 2**30
DEFAULT_HOSTS = ("HV-E1", "HV-E2", "HV-W1", "HV-W2", "HV-S1", "HV-S2", "HV-S3", "HV-S4", "HV-OLD")


def _host(name: str, index: int) -> dict[str, Any]:
    return {
        "name": name,
        "os": "2022",
        "cpu": {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz"},
        "memory_gb": 64,
        "memory_reserved_gb": 4,
        "volumes": [
            {"drive": "C", "label": "System", "size_gb": 200, "free_gb": 120},
            {"drive": "E", "label": "VMs", "size_gb": 1000, "free_gb": 700},
        ],
        "virtual_machine_path": "E:\\VMs",
        "switches": [{"name": "Production"}, {"name": "Backup"}],
        "nics": [{"name": "Management", "ip": f"10.0.0.{80 + index}", "bandwidth_gbps": 1}],
        "live_migration": {"enabled": True, "authentication": "Kerberos", "max_vm_migrations": 5},
    }


def _vm(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "host": "HV-X",
        "memory_gb": 2,
        "path": f"E:\\VMs\\{name}",
        "adapters": [{"switch": "Production"}],
        "disks": [{"path": f"E:\\VMs\\{name}\\{name}.vhdx", "size_gb": 40, "file_gb": 3}],
        **extra,
    }


# A host with VMs in every state and shape a survey must read, and a host with none.
ODD_ESTATE: dict[str, Any] = {
    "lab": {"domain": "lab.test", "netbios_domain": "LAB", "time_scale": 600},
    "hosts": [_host("HV-X", 1), _host("HV-EMPTY", 2)],
    "vms": [
        _vm("dynamic", memory_gb=6, dynamic_memory=True),
        _vm("off", state="Off", memory_gb=3),
        _vm("saved", state="Saved"),
        _vm("paused", state="Paused"),
        # Two adapters on one switch, one on another, one on none.
        _vm(
            "adapters",
            adapters=[{"switch": "Backup"}, {"switch": "Production"}, {"switch": "Backup"}, {"switch": None}],
        ),
        _vm(
            "two-disks",
            disks=[
                {"path": "E:\\VMs\\two-disks\\os.vhdx", "size_gb": 40, "file_gb": 5},
                {"path": "E:\\VMs\\two-disks\\data.vhdx", "size_gb": 400, "file_gb": 7.5},
            ],
        ),
        _vm("no-disk", disks=[]),
        _vm("passthrough", disks=[], passthrough_disks=[{"disk_number": 3}]),
    ],
}


def _lab(workdir: Path, topology: dict[str, Any] | None) -> Lab:
    if topology is None:
        return Lab.from_topology(None, workdir=workdir, time_scale=600.0, control_port=None).start()
    return Lab(parse_topology(topology, source="survey"), workdir=workdir, time_scale=600.0, control_port=None).start()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = _lab(tmp_path_factory.mktemp("survey"), None)
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = _lab(tmp_path_factory.mktemp("survey-odd"), ODD_ESTATE)
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = h.hostile_lab(tmp_path_factory.mktemp("survey-hostile"))
    yield lab
    lab.stop()


class Surveyor:
    """A lab's inventory, one pool of sessions, and the activity over it."""

    def __init__(self, lab: Lab) -> None:
        self.inventory: Inventory = load_inventory(lab.inventory_path)
        self.sessions = HostSessions(self.inventory, **FAST)
        self.activities = SurveyActivities(self.inventory, self.sessions)

    def __call__(self, host: str) -> HostSurvey:
        return self.activities.survey_host(HostRef(host))

    def round_trips(self, host: str) -> tuple[HostSurvey, int]:
        """A survey on an open session, and the round trips it cost."""
        with self.sessions.session(host) as client:
            before = client.round_trips
            result = survey(client)
            return result, client.round_trips - before


@pytest.fixture
def surveyor(lab: Lab) -> Iterator[Surveyor]:
    s = Surveyor(lab)
    yield s
    s.sessions.close_all()


@pytest.fixture
def odd_surveyor(odd: Lab) -> Iterator[Surveyor]:
    s = Surveyor(odd)
    yield s
    s.sessions.close_all()


def vhd_bytes(truth_host: dict[str, Any], paths: list[str]) -> int:
    files = {f["path"].lower(): f["size"] for f in truth_host["files"]}
    return sum(files[p.lower()] for p in paths if p.lower() in files)


# -- what it reads ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", DEFAULT_HOSTS)
def test_a_survey_reads_what_the_host_holds(lab: Lab, surveyor: Surveyor, host: str) -> None:
    result = surveyor(host)
    truth = lab.truth()
    th = truth["hosts"][host]
    assert result.host == host
    assert result.memory_bytes == th["memory_capacity"]
    assert result.free_memory_bytes == th["memory_available"] // 1024 * 1024  # FreePhysicalMemory is in KiB
    assert set(result.switches) == set(th["switches"])
    assert result.free_disk_bytes == {drive: v["free"] for drive, v in th["volumes"].items()}
    assert result.max_migrations == th["live_migration"]["max_vm_migrations"]
    assert result.vm_path.lower().startswith(("c:\\", "d:\\"))
    expected = {vm["id"]: vm for vm in truth["vms"] if vm["host"] == host and not vm["planned"]}
    assert {vm.vm_id for vm in result.vms} == set(expected)
    for vm in result.vms:
        want = expected[vm.vm_id]
        assert vm.name == want["name"]
        assert vm.state == want["state"]
        assert vm.clustered == want["clustered"]
        assert sorted(vm.switches) == want["switches"]
        assert vm.memory_bytes == want["memory_startup"]
        assert vm.disk_bytes == vhd_bytes(th, want["disks"])
        assert vm.disk_bytes > 0


def test_a_survey_costs_two_round_trips_and_one_without_vhds(odd_surveyor: Surveyor) -> None:
    odd_surveyor("HV-X")  # the session opened
    _, trips = odd_surveyor.round_trips("HV-X")
    assert trips == 2
    empty, trips = odd_surveyor.round_trips("HV-EMPTY")
    assert empty.vms == ()
    assert trips == 1  # no VHD to read


def test_every_state_and_shape_of_vm(odd: Lab, odd_surveyor: Surveyor) -> None:
    result = odd_surveyor("HV-X")
    vms = {vm.name: vm for vm in result.vms}
    assert set(vms) == {vm["name"] for vm in ODD_ESTATE["vms"]}
    assert {name: vm.state for name, vm in vms.items() if name in ("off", "saved", "paused")} == {
        "off": "Off",
        "saved": "Saved",
        "paused": "Paused",
    }
    # Off, an off VM still needs its startup memory wherever it starts.
    assert vms["off"].memory_bytes == 3 * GIB
    assert vms["dynamic"].memory_bytes == 6 * GIB
    # Adapters in order, each switch once, an unconnected adapter naming none.
    assert vms["adapters"].switches == ("Backup", "Production")
    assert vms["two-disks"].disk_bytes == round(12.5 * GIB)
    assert vms["no-disk"].disk_bytes == 0
    assert vms["passthrough"].disk_bytes == 0
    assert result.vm_path == "E:\\VMs"
    assert result.free_disk_bytes == {"C": 120 * GIB, "E": odd.truth()["hosts"]["HV-X"]["volumes"]["E"]["free"]}
    assert result.max_migrations == 5
    assert result.switches == ("Production", "Backup")


def test_free_memory_is_what_the_host_answers(lab: Lab, surveyor: Surveyor) -> None:
    before = surveyor("HV-S3")
    fault = lab.inject_fault("memory_pressure", host="HV-S3", gb=8, seconds=3600)
    try:
        after = surveyor("HV-S3")
    finally:
        lab.clear_fault(fault["id"])
    assert before.free_memory_bytes - after.free_memory_bytes == 8 * GIB
    assert after.memory_bytes == before.memory_bytes


def test_names_are_taken_literally(hostile: Lab) -> None:
    surveyor = Surveyor(hostile)
    try:
        result = surveyor("HV-A")
    finally:
        surveyor.sessions.close_all()
    names = [vm.name for vm in result.vms]
    for name in (*h.HOSTILE, *h.SIBLINGS):
        assert names.count(name) == 1, name
    twins = sorted(vm.vm_id for vm in result.vms if vm.name == h.TWIN)
    assert twins == sorted(str(i) for i in h.TWIN_IDS)
    assert len(result.vms) == sum(1 for vm in hostile.truth()["vms"] if vm["host"] == "HV-A")


# -- errors -----------------------------------------------------------------------------------------------------
def test_an_unknown_host_is_a_configuration_error(surveyor: Surveyor) -> None:
    with pytest.raises(ConfigurationError) as caught:
        surveyor("HV-NOWHERE")
    assert caught.value.error_type == UNKNOWN_HOST
    assert caught.value.to_application_error().non_retryable


def test_a_host_that_refuses_is_transient(odd: Lab, odd_surveyor: Surveyor) -> None:
    fault = odd.inject_fault("refuse_winrm", host="HV-EMPTY", seconds=3600)
    try:
        with pytest.raises(TransientError) as caught:
            odd_surveyor("HV-EMPTY")
    finally:
        odd.clear_fault(fault["id"])
    assert caught.value.error_type == HOST_UNREACHABLE
    assert not caught.value.to_application_error().non_retryable
