"""The control API over HTTP: every fault kind, its effect on the lab, and requests it must refuse."""

from __future__ import annotations

import socket
import stat
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from lab.control import ControlClient, ControlError
from lab.lab import Lab
from lab.model.state import GIB
from tests.lab.conftest import lab_wsman

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(pair_lab: Lab) -> Iterator[ControlClient]:
    assert pair_lab.control_url is not None
    assert pair_lab.control_token_file is not None
    token = pair_lab.control_token_file.read_text().strip()
    control = ControlClient(pair_lab.control_url, token)
    yield control
    control.close()


def _connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _host(client: ControlClient, name: str) -> dict[str, Any]:
    host: dict[str, Any] = client.truth()["hosts"][name]
    return host


def _move_by_hand(lab: Lab, vm: str) -> None:
    """Move-VM of `vm` from HV-A to HV-B with its storage, over the wire, to its end."""
    with RunspacePool(lab_wsman(lab, "HV-A")) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Move-VM").add_parameter("Name", vm).add_parameter("DestinationHost", "HV-B")
        ps.add_parameter("IncludeStorage").add_parameter("DestinationStoragePath", f"D:\\Hyper-V\\{vm}")
        ps.invoke()
        assert not ps.streams.error, [str(e) for e in ps.streams.error]


def test_token_file_and_authorization(pair_lab: Lab) -> None:
    token_file = pair_lab.control_token_file
    assert token_file is not None
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    url = pair_lab.control_url
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    assert requests.get(f"{url}/health", timeout=5).json() == {"ok": True}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        response = requests.get(f"{url}/truth", headers=headers, timeout=5)
        assert response.status_code == 401
        assert "token" in response.json()["error"]
    response = requests.post(f"{url}/faults/partition", json={"hosts": ["HV-A", "HV-B"], "seconds": 5}, timeout=5)
    assert response.status_code == 401
    assert pair_lab.list_faults() == []


def test_truth_over_http(client: ControlClient, pair_lab: Lab) -> None:
    truth = client.truth()
    assert truth["locations"] == {
        "vm-a1": ["HV-A"],
        "vm-a2": ["HV-A"],
        "vm-a3": ["HV-A"],
        "vm-a4": ["HV-A"],
        "vm-b1": ["HV-B"],
    }
    assert truth["endpoints"]["HV-A"]["http_port"] == pair_lab.endpoint("HV-A").http_port
    assert truth["faults"] == []
    assert truth["documented_problems"] == []


def test_the_jobs_view_is_the_truths_jobs_and_limits_without_the_vms(client: ControlClient, pair_lab: Lab) -> None:
    _move_by_hand(pair_lab, "vm-a3")
    truth = client.truth()
    jobs = client.jobs_truth()
    assert set(jobs) == {"time", "time_scale", "limits", "jobs"}
    assert [job["vm_name"] for job in jobs["jobs"]] == ["vm-a3"]
    assert jobs["jobs"] == truth["jobs"]
    assert jobs["time_scale"] == truth["time_scale"]
    assert jobs["limits"] == {
        name: host["live_migration"]["max_vm_migrations"] for name, host in truth["hosts"].items()
    }


def test_partition_listed_and_cleared(client: ControlClient) -> None:
    fault = client.inject_fault("partition", hosts=["hv-a", "HV-B"], seconds=600)
    assert fault["kind"] == "partition"
    assert fault["hosts"] == ["HV-A", "HV-B"]
    assert 0 < fault["remaining_seconds"] <= 600
    assert [f["id"] for f in client.faults()] == [fault["id"]]
    client.clear_fault(fault["id"])
    assert client.faults() == []
    with pytest.raises(ControlError) as caught:
        client.clear_fault(fault["id"])
    assert caught.value.status == 404


def test_refuse_winrm_closes_the_listeners_until_cleared(client: ControlClient, pair_lab: Lab) -> None:
    endpoint = pair_lab.endpoint("HV-A")
    port = endpoint.http_port
    fault = client.inject_fault("refuse_winrm", host="HV-A", seconds=3600)
    assert _connect_refused(port)
    assert not _connect_refused(pair_lab.endpoint("HV-B").http_port)
    client.clear_fault(fault["id"])
    _wait(lambda: endpoint.accepting, 5, "the listeners to reopen")
    assert endpoint.http_port == port
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-VMHost")
        assert len(ps.invoke()) == 1


def test_refuse_winrm_ends_by_itself(client: ControlClient, pair_lab: Lab) -> None:
    endpoint = pair_lab.endpoint("HV-B")
    client.inject_fault("refuse_winrm", host="HV-B", seconds=30)  # 0.5 s at time x60
    assert _connect_refused(endpoint.http_port)
    _wait(lambda: endpoint.accepting, 10, "the window to end")
    assert not _connect_refused(endpoint.http_port)


def test_restart_winrm_drops_the_shells(lab_factory: Callable[..., Lab]) -> None:
    # Over HTTPS: a sealed NTLM-over-HTTP session cannot survive its connection being reset (the client
    # re-authenticates but resends a body sealed with the old keys, wire notes), so it would not get as far
    # as the shell; over TLS it reconnects and learns that its shell is gone, as after a real WinRM restart.
    lab = lab_factory("pair", scheme="https")
    assert lab.control_url is not None
    assert lab.control_token_file is not None
    control = ControlClient(lab.control_url, lab.control_token_file.read_text().strip())
    pool = RunspacePool(lab_wsman(lab, "HV-A"))
    pool.open()
    control.inject_fault("restart_winrm", host="HV-A", seconds=1)
    _wait(lambda: lab.endpoint("HV-A").accepting, 10, "WinRM to come back")
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-VM")
    with pytest.raises(WSManFaultError) as caught:
        ps.invoke()
    assert caught.value.code == 2150858843  # the shell is gone
    # Closing a shell the server no longer has fails the same way.
    with pytest.raises(WSManFaultError):
        pool.close()
    control.close()


def test_slow_host_delays_answers_for_its_window(client: ControlClient, pair_lab: Lab) -> None:
    fault = client.inject_fault("slow_host", host="HV-A", seconds=600, delay=0.1)
    assert fault["delay"] == 0.1
    assert pair_lab.endpoint("HV-A").answer_delay == 0.1
    assert pair_lab.endpoint("HV-B").answer_delay == 0
    with RunspacePool(lab_wsman(pair_lab, "HV-A")) as pool:
        started = time.monotonic()
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-VMHost")
        ps.invoke()
        # Every request of the exchange waited at least the delay (a functional check, not a benchmark).
        assert time.monotonic() - started >= 0.1
    client.clear_fault(fault["id"])
    assert pair_lab.endpoint("HV-A").answer_delay == 0


def test_restart_vmms(client: ControlClient) -> None:
    before = _host(client, "HV-B")["vmms_restarts"]
    fault = client.inject_fault("restart_vmms", host="HV-B")
    assert fault["kind"] == "restart_vmms"
    assert _host(client, "HV-B")["vmms_restarts"] == before + 1


def test_fill_volume_and_release(client: ControlClient) -> None:
    fault = client.inject_fault("fill_volume", host="HV-B", drive="D:", seconds=600, leave_gb=2)
    assert _host(client, "HV-B")["volumes"]["D"]["free"] == 2 * GIB
    client.clear_fault(fault["id"])
    assert _host(client, "HV-B")["volumes"]["D"]["free"] > 1000 * GIB


def test_memory_pressure_and_release(client: ControlClient) -> None:
    before = _host(client, "HV-B")["memory_available"]
    fault = client.inject_fault("memory_pressure", host="HV-B", gb=100, seconds=600)
    assert _host(client, "HV-B")["memory_available"] == before - 100 * GIB
    client.clear_fault(fault["id"])
    assert _host(client, "HV-B")["memory_available"] == before


def test_fail_move_at_is_armed(client: ControlClient) -> None:
    fault = client.inject_fault("fail_move_at", vm="vm-a1", percent=40, action="partition", partition_seconds=30)
    assert fault["percent"] == 40
    assert fault["action"] == "partition"
    assert fault["vm_name"] == "vm-a1"


def test_leave_source_files_after_a_move(client: ControlClient, pair_lab: Lab) -> None:
    client.inject_fault("leave_source_files", vm="vm-a4")
    _move_by_hand(pair_lab, "vm-a4")
    truth = client.truth()
    assert truth["locations"]["vm-a4"] == ["HV-B"]
    assert [f for f in truth["hosts"]["HV-A"]["files"] if "vm-a4" in f["path"]]
    assert [f for f in truth["faults"] if f["kind"] == "leave_source_files"] == []


def test_directory_and_clock(client: ControlClient, pair_lab: Lab) -> None:
    account = client.set_delegation("hv-a", allowed_to_delegate_to=["cifs/HV-B"], protocol_transition=False)
    assert account == {
        "host": "HV-A",
        "allowed_to_delegate_to": ["cifs/HV-B"],
        "protocol_transition": False,
        "unconstrained": False,
        "sensitive": False,
    }
    directory = client.truth()["hosts"]["HV-A"]["directory"]
    assert directory["allowed_to_delegate_to"] == ["cifs/HV-B"]
    assert directory["protocol_transition"] is False
    # Omitted fields keep their value.
    assert client.set_delegation("HV-A", protocol_transition=True)["allowed_to_delegate_to"] == ["cifs/HV-B"]
    assert client.set_time_scale(250)["time_scale"] == 250
    assert pair_lab.world.clock.time_scale == 250


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        ("POST", "/faults/partition", {"hosts": ["HV-A"], "seconds": 5}, 400, "hosts: List should have at least 2"),
        ("POST", "/faults/partition", {"hosts": ["HV-A", "HV-A"], "seconds": 5}, 400, "hosts: a partition needs two"),
        ("POST", "/faults/partition", {"hosts": ["HV-A", "HV-X"], "seconds": 5}, 400, "hosts: unknown host 'HV-X'"),
        ("POST", "/faults/refuse_winrm", {"host": "HV-A", "seconds": 0}, 400, "seconds: Input should be greater"),
        ("POST", "/faults/refuse_winrm", {"host": "HV-A", "seconds": 10**7}, 400, "seconds: Input should be less"),
        ("POST", "/faults/refuse_winrm", {"host": "HV-A"}, 400, "seconds: Field required"),
        ("POST", "/faults/slow_host", {"host": "HV-A", "seconds": 5, "delay": -1}, 400, "delay: Input should be"),
        ("POST", "/faults/fill_volume", {"host": "HV-A", "drive": "Q", "seconds": 5}, 400, "drive: HV-A has no"),
        ("POST", "/faults/memory_pressure", {"host": "HV-A", "gb": "lots", "seconds": 5}, 400, "gb: Input should"),
        ("POST", "/faults/fail_move_at", {"vm": "vm-a1", "percent": 150}, 400, "percent: Input should be less"),
        ("POST", "/faults/fail_move_at", {"vm": "ghost", "percent": 10}, 400, "vm: no host has a VM named 'ghost'"),
        ("POST", "/faults/fail_move_at", {"vm": "vm-a1", "percent": 10, "action": "melt"}, 400, "action: Input"),
        ("POST", "/faults/leave_source_files", {"vm": "vm-a1", "colour": "red"}, 400, "colour: Extra inputs"),
        ("POST", "/faults/meteor", {"host": "HV-A"}, 404, "unknown fault kind 'meteor'"),
        ("POST", "/faults/partition", [1, 2], 400, "body: must be a JSON object"),
        ("POST", "/directory/HV-A", {"allowed_to_delegate_to": ["not-an-spn"]}, 400, "allowed_to_delegate_to.0"),
        ("POST", "/directory/HV-Z", {"protocol_transition": True}, 404, "unknown host 'HV-Z'"),
        ("POST", "/clock", {"time_scale": -3}, 400, "time_scale: Input should be greater"),
        ("POST", "/clock", {"speed": 3}, 400, "time_scale: Field required"),
        ("GET", "/nowhere", None, 404, "no such endpoint"),
    ],
)
def test_bad_requests_name_the_field(
    pair_lab: Lab, method: str, path: str, body: Any, status: int, expected: str
) -> None:
    assert pair_lab.control_token_file is not None
    token = pair_lab.control_token_file.read_text().strip()
    response = requests.request(
        method,
        f"{pair_lab.control_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == status, response.text
    assert expected in response.json()["error"]
    assert pair_lab.list_faults() == []


def test_malformed_json_body(pair_lab: Lab) -> None:
    assert pair_lab.control_token_file is not None
    token = pair_lab.control_token_file.read_text().strip()
    response = requests.post(
        f"{pair_lab.control_url}/faults/partition",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("body: not valid JSON")


def test_in_process_operations_validate_the_same_way(pair_lab: Lab) -> None:
    with pytest.raises(ControlError, match="percent: Input should be less than or equal to 99") as caught:
        pair_lab.inject_fault("fail_move_at", vm="vm-a1", percent=100)
    assert caught.value.status == 400
    fault = pair_lab.inject_fault("memory_pressure", host="HV-A", gb=1, seconds=60)
    assert pair_lab.clear_fault(fault["id"])
    with pytest.raises(ControlError, match="time_scale"):
        pair_lab.set_time_scale(0)


def test_refuse_window_follows_a_slower_clock(client: ControlClient, pair_lab: Lab) -> None:
    endpoint = pair_lab.endpoint("HV-A")
    fault = client.inject_fault("refuse_winrm", host="HV-A", seconds=30)  # 0.5 s of wall clock at x60 ...
    client.set_time_scale(1)  # ... but now 30 s: the listener must stay closed past the first deadline
    time.sleep(1.0)
    assert not endpoint.accepting
    assert _connect_refused(endpoint.http_port)
    client.clear_fault(fault["id"])
    _wait(lambda: endpoint.accepting, 5, "the listeners to reopen")
