"""The host client over the wire, against a lab (lab.lab.Lab) reached only through the inventory it writes.

No mock of pypsrp anywhere: every test that talks to a host talks WinRM/PSRP to a simulated Hyper-V host.
The error table itself, offline, is tested in test_host_errors.py.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.errors import (
    AdmissionError,
    ConfigurationError,
    ErrorKind,
    SnlmError,
    TransientError,
)
from activities.host_errors import ErrorInfo, classify
from activities.hosts import Command, HostClient, side_by_side
from activities.inventory import HostEntry, Inventory, load_inventory
from lab.lab import Lab
from lab.model.topology import DEFAULT_TOPOLOGY
from workflows import contracts as c

pytestmark = pytest.mark.timeout(120)

TOPOLOGIES = DEFAULT_TOPOLOGY.parent
FAST: dict[str, Any] = {"connect_timeout": 3.0, "read_timeout": 15.0, "operation_timeout": 5}


def _start(workdir: Path, *, scheme: str, auth: Any, time_scale: float = 600.0) -> Lab:
    lab = Lab.from_topology(
        TOPOLOGIES / "pair.yaml", workdir=workdir, time_scale=time_scale, scheme=scheme, auth=auth, control_port=None
    )
    lab.start()
    return lab


@pytest.fixture(scope="module")
def http_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Read-only tests share it: HV-A by NTLM, HV-B by CredSSP, over http with message encryption."""
    lab = _start(tmp_path_factory.mktemp("hosts-http"), scheme="http", auth={"HV-A": "ntlm", "HV-B": "credssp"})
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def https_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """HV-A by Basic, HV-B by NTLM, over https with the lab's CA."""
    lab = _start(tmp_path_factory.mktemp("hosts-https"), scheme="https", auth={"HV-A": "basic"})
    yield lab
    lab.stop()


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """A lab of one's own, for tests that change the world (faults, moves, delegation)."""
    started: list[Lab] = []

    def make(*, scheme: str = "http", auth: Any = "ntlm", time_scale: float = 600.0) -> Lab:
        lab = _start(tmp_path / f"lab-{len(started)}", scheme=scheme, auth=auth, time_scale=time_scale)
        started.append(lab)
        return lab

    yield make
    for lab in started:
        lab.stop()


def entry(lab: Lab, host: str) -> HostEntry:
    return load_inventory(lab.inventory_path).host(host)


def password(lab: Lab) -> str:
    return lab.password_file.read_text().strip()


def rewritten(lab: Lab, tmp_path: Path, host: str, **changes: Any) -> HostEntry:
    """The lab's inventory with one host's entry changed (a value None removes the key), loaded anew."""
    raw = yaml.safe_load(lab.inventory_path.read_text())
    fields = raw["hosts"][host]
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    path = tmp_path / f"inventory-{host}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_inventory(path).host(host)


def assert_no_secret(error: SnlmError, *secrets: str) -> None:
    app = error.to_application_error()
    texts = [str(error), repr(error), repr(error.details), error.remedy, str(app), repr(app.details)]
    for secret in secrets:
        assert secret
        for text in texts:
            assert secret not in text


def move(vm: str, destination: str = "HV-B") -> dict[str, Any]:
    return {"Name": vm, "DestinationHost": destination, "DestinationStoragePath": rf"D:\Hyper-V\{vm}"}


# -- reading hosts, for each transport -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lab_name", "host", "auth"),
    [("http_lab", "HV-A", "ntlm"), ("http_lab", "HV-B", "credssp"), ("https_lab", "HV-A", "basic"),
     ("https_lab", "HV-B", "ntlm")],
)  # fmt: skip
def test_read_host_and_vms(request: pytest.FixtureRequest, lab_name: str, host: str, auth: str) -> None:
    lab: Lab = request.getfixturevalue(lab_name)
    target = entry(lab, host)
    assert target.auth == auth
    if target.use_tls:
        assert target.tls_verify == str(lab.ca_file)  # validated against the lab CA, not switched off
    with HostClient(target, **FAST) as client:
        result = client.run("Get-VMHost")
        (vmhost,) = result.output
        assert result.ok
        assert result.state == "Completed"
        assert vmhost["Name"] == host
        assert vmhost["MaximumVirtualMachineMigrations"] == 2
        assert vmhost["VirtualMachineMigrationEnabled"] is True
        assert vmhost["VirtualMachineMigrationAuthenticationType"] == "Kerberos"  # an enum, by its name
        assert result.raw_output[0].types[0] == "Microsoft.HyperV.PowerShell.VMHost"

        vms = client.run("Get-VM").output
        names = {vm["Name"] for vm in vms}
        expected = {"vm-a1", "vm-a2", "vm-a3", "vm-a4"} if host == "HV-A" else {"vm-b1"}
        assert names == expected
        vm = next(vm for vm in vms if vm["Name"] in expected)
        assert vm["State"] == "Running"
        assert vm["ComputerName"] == host
        assert vm["VMName"] == vm["Name"]  # the ps1xml alias, an extended property
        assert vm["MemoryStartup"] == 2 * 1024**3
        assert client.round_trips == 3
    assert client.round_trips == 4  # open, two commands, close
    assert client.calls == {"Get-VMHost": 1, "Get-VM": 1}


def test_pipeline_arguments_switches_and_warnings(http_lab: Lab) -> None:
    with HostClient(entry(http_lab, "HV-A"), **FAST) as client:
        # Get-VM | Select-Object Name, State: one pipeline, one round trip.
        selected = client.pipeline([Command("Get-VM"), Command("Select-Object", {"Property": ["Name", "State"]})])
        assert selected.command == "Get-VM | Select-Object"
        assert sorted(item["Name"] for item in selected.output) == ["vm-a1", "vm-a2", "vm-a3", "vm-a4"]
        assert all(set(item) == {"Name", "State"} for item in selected.output)
        # Positional arguments (klist purge -li 0x3e7) and a None-valued parameter left out.
        purge = client.run("klist", {"Unused": None}, arguments=["purge", "-li", "0x3e7"])
        assert any("purged" in str(line) for line in purge.output)
        # A switch, and warnings returned with the output.
        probe = client.run(
            "Test-NetConnection", {"ComputerName": "nowhere.lab.test", "InformationLevel": "Quiet"}, switches=()
        )
        assert probe.output == (False,)
        assert probe.warnings == ("Name resolution of nowhere.lab.test failed",)
        assert client.round_trips == 4


def test_structured_commands_only() -> None:
    with pytest.raises(ValueError, match="not a cmdlet name"):
        Command("Get-VM | Remove-VM -Force")
    with pytest.raises(ValueError, match="not a parameter name"):
        Command("Get-VM", {"Name; Remove-VM": "x"})
    with pytest.raises(ValueError, match="not a parameter name"):
        Command("Get-VM", switches=("-Force",))


# -- error records over the wire ---------------------------------------------------------------------------
def test_non_terminating_error_is_vm_not_found(http_lab: Lab) -> None:
    with HostClient(entry(http_lab, "HV-A"), **FAST) as client:
        with pytest.raises(ConfigurationError) as caught:
            client.run("Get-VM", {"Name": "ghost"})
        error = caught.value
        assert error.error_type == c.VM_NOT_FOUND
        assert "Get-VM on HV-A" in str(error)
        assert 'unable to find a virtual machine with name "ghost"' in str(error)
        assert error.details["record"]["fq_error"] == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
        assert error.details["record"]["target"] == "ghost"
        assert error.to_application_error().non_retryable
        assert_no_secret(error, password(http_lab))

        # check=False: a probe gets the error back instead (is the VM still on this host?).
        probe = client.run("Get-VM", {"Name": "ghost"}, check=False)
        assert probe.state == "Completed"
        assert not probe.ok
        assert [e.error_type for e in probe.errors] == [c.VM_NOT_FOUND]

        # -ErrorAction Stop makes it terminating; the same classification.
        with pytest.raises(ConfigurationError) as stopped:
            client.run("Get-VM", {"Name": "ghost"}, error_action_stop=True)
        assert stopped.value.error_type == c.VM_NOT_FOUND


def test_unknown_cmdlet_and_bad_parameter(http_lab: Lab) -> None:
    with HostClient(entry(http_lab, "HV-B"), **FAST) as client:  # CredSSP
        with pytest.raises(ConfigurationError) as missing:
            client.run("Get-ClusterFoo")
        assert missing.value.error_type == c.COMMAND_NOT_FOUND
        assert "Get-ClusterFoo on HV-B" in str(missing.value)
        assert "install the PowerShell module that provides Get-ClusterFoo on HV-B" in missing.value.remedy

        with pytest.raises(ConfigurationError) as binding:
            client.run("Get-VM", {"Colour": "blue"})
        assert binding.value.error_type == c.PARAMETER_BINDING_FAILED
        assert "bug in snlm" in binding.value.remedy
        assert binding.value.details["record"]["fq_error"].startswith("NamedParameterNotFound,")
        assert_no_secret(binding.value, password(http_lab))


# -- transport failures ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lab_name", "host"), [("http_lab", "HV-A"), ("http_lab", "HV-B"), ("https_lab", "HV-A")])
def test_wrong_password_is_a_configuration_error_without_the_password(
    request: pytest.FixtureRequest, tmp_path: Path, lab_name: str, host: str
) -> None:
    lab: Lab = request.getfixturevalue(lab_name)
    wrong = "Wr0ng-Pa55-" + "x" * 12
    secret_file = tmp_path / "wrong.password"
    secret_file.write_text(wrong + "\n")
    target = rewritten(lab, tmp_path, host, password_file=str(secret_file))
    client = HostClient(target, **FAST)
    with pytest.raises(ConfigurationError) as caught:
        client.open()
    error = caught.value
    assert error.error_type == c.HOST_AUTHENTICATION_FAILED
    assert f"wrong credentials for {target.username} on {host}" in str(error)
    assert f"password_file {secret_file}" in error.remedy
    assert error.details["host"] == host
    assert_no_secret(error, wrong, password(lab))
    assert client.round_trips == 1


def test_password_reference_missing_names_the_field(http_lab: Lab, tmp_path: Path) -> None:
    target = rewritten(http_lab, tmp_path, "HV-A", password_file=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match=r"hosts\.HV-A\.password_file: cannot read") as caught:
        HostClient(target, **FAST).open()
    assert caught.value.error_type == c.INVENTORY_INVALID


def test_tls_validation_is_on_by_default(https_lab: Lab, tmp_path: Path) -> None:
    # Without ca_file the system store is used, which does not know the lab's CA.
    target = rewritten(https_lab, tmp_path, "HV-B", ca_file=None)
    assert target.tls_verify is True
    with pytest.raises(ConfigurationError) as caught:
        HostClient(target, **FAST).open()
    assert caught.value.error_type == c.HOST_TLS_FAILURE
    assert "TLS validation failed for HV-B" in str(caught.value)
    assert "set ca_file" in caught.value.remedy
    # Turning validation off is possible, but only by writing it in the inventory.
    unchecked = rewritten(https_lab, tmp_path, "HV-B", ca_file=None, cert_validation=False)
    assert unchecked.tls_verify is False
    with HostClient(unchecked, **FAST) as client:
        assert client.run("Get-VMHost").output[0]["Name"] == "HV-B"


def test_refused_connection_is_transient(fresh_lab: Callable[..., Lab]) -> None:
    lab = fresh_lab()
    target = entry(lab, "HV-B")
    fault = lab.inject_fault("refuse_winrm", host="HV-B", seconds=3600)
    with pytest.raises(TransientError) as caught:
        HostClient(target, **FAST).open()
    error = caught.value
    assert error.error_type == c.HOST_UNREACHABLE
    assert error.kind is ErrorKind.TRANSIENT
    assert f"host unreachable at 127.0.0.1:{target.effective_port}" in str(error)
    assert not error.to_application_error().non_retryable
    assert_no_secret(error, password(lab))
    lab.clear_fault(fault["id"])
    with open_eventually(target) as client:
        assert client.run("Get-VMHost").ok


def open_eventually(target: HostEntry, seconds: float = 10.0) -> HostClient:
    """A client opened once the host listens again (a listener comes back asynchronously)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return HostClient(target, **FAST).open()
        except TransientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_winrm_restart_loses_the_session(fresh_lab: Callable[..., Lab]) -> None:
    lab = fresh_lab()
    with HostClient(entry(lab, "HV-A"), **FAST) as client:
        lab.inject_fault("restart_winrm", host="HV-A", seconds=1)
        time.sleep(0.5)
        with pytest.raises(TransientError) as caught:
            client.run("Get-VMHost")
        assert caught.value.error_type in (c.HOST_SESSION_LOST, c.HOST_UNREACHABLE)
    # Closing a pool whose shell is gone is not an error; the next attempt opens a new pool.
    with open_eventually(entry(lab, "HV-A")) as again:
        assert again.run("Get-VMHost").ok


# -- failed moves ------------------------------------------------------------------------------------------
def test_partitioned_move_is_a_transient_network_error(fresh_lab: Callable[..., Lab]) -> None:
    lab = fresh_lab()
    lab.inject_fault("partition", hosts=["HV-A", "HV-B"], seconds=3600)
    with HostClient(entry(lab, "HV-A"), **FAST) as client, pytest.raises(TransientError) as caught:
        client.run("Move-VM", move("vm-a1"), switches=["IncludeStorage"])
    error = caught.value
    assert error.error_type == c.MIGRATION_NETWORK_ERROR
    assert "Move-VM on HV-A" in str(error)
    assert "0x8007274C" in error.details["record"]["codes"]
    assert error.details["record"]["fq_error"] == "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    assert "TCP 6600" in error.remedy
    assert lab.truth()["locations"]["vm-a1"] == ["HV-A"]


def test_move_without_delegation_is_delegation_missing(fresh_lab: Callable[..., Lab]) -> None:
    lab = fresh_lab()
    lab.set_delegation("HV-A", allowed_to_delegate_to=[])
    with HostClient(entry(lab, "HV-A"), **FAST) as client:
        with pytest.raises(ConfigurationError) as caught:
            client.run("Move-VM", move("vm-a2"), switches=["IncludeStorage"])
        progress = client.run("Get-VMHost")  # the pool is still usable after a failed command
        assert progress.ok
    error = caught.value
    assert error.error_type == c.DELEGATION_MISSING
    assert "0x8009030E" in str(error)
    assert "constrained delegation" in error.remedy
    assert error.to_application_error().type == c.DELEGATION_MISSING


def test_migration_limit_is_admission(fresh_lab: Callable[..., Lab]) -> None:
    # Slow time, so the first move holds HV-A's only slot while the second waits past the admission timeout.
    lab = fresh_lab(time_scale=1.0)
    lab.engine.admission_timeout = 1.0  # simulated seconds (Hyper-V waits minutes; the lab's default is 240)
    with HostClient(entry(lab, "HV-A"), **FAST) as client:
        client.run("Set-VMHost", {"MaximumVirtualMachineMigrations": 1})
        assert client.run("Get-VMHost").output[0]["MaximumVirtualMachineMigrations"] == 1
        started = client.run("Move-VM", move("vm-a3"), switches=["IncludeStorage", "AsJob"])
        assert started.ok
        with pytest.raises(AdmissionError) as caught:
            client.run("Move-VM", move("vm-a4"), switches=["IncludeStorage"], timeout=30)
        # Progress records arrive with a synchronous move; the failed one wrote some before failing.
        assert client.round_trips == 5
    error = caught.value
    assert error.error_type == c.MIGRATION_LIMIT_REACHED
    assert error.kind is ErrorKind.ADMISSION
    assert 'migration limit "1" was reached' in str(error)
    assert error.to_application_error().non_retryable  # requeued by the workflow, not retried
    # The same record, classified offline, gives the same answer.
    record = ErrorInfo(**_info_fields(error.details["record"]))
    assert classify(record, "HV-A", "Move-VM").error_type == c.MIGRATION_LIMIT_REACHED


def test_command_timeout_stops_the_command(fresh_lab: Callable[..., Lab]) -> None:
    lab = fresh_lab(time_scale=1.0)
    with HostClient(entry(lab, "HV-A"), **FAST) as client:
        began = time.monotonic()
        with pytest.raises(TransientError) as caught:
            client.run("Move-VM", move("vm-a1"), switches=["IncludeStorage"], timeout=1.0)
        assert time.monotonic() - began < 10
    assert caught.value.error_type == c.HOST_TIMEOUT
    assert "still running after 1 s" in str(caught.value)


def test_host_client_refuses_inconsistent_timeouts(http_lab: Lab) -> None:
    with pytest.raises(ValueError, match="read_timeout"):
        HostClient(entry(http_lab, "HV-A"), read_timeout=10, operation_timeout=20)
    client = HostClient(entry(http_lab, "HV-A"))
    with pytest.raises(RuntimeError, match="not open"):
        client.run("Get-VM")


def _info_fields(record: dict[str, Any]) -> dict[str, Any]:
    hresult = record["hresult"]
    return {
        "fq_error": record["fq_error"],
        "message": record["message"],
        "category": record["category"],
        "category_info": record["category_info"],
        "reason": record["reason"],
        "activity": record["activity"],
        "target": record["target"],
        "exception_types": tuple(record["exception_types"]),
        "hresult": int(hresult, 16) - (1 << 32) if hresult and int(hresult, 16) >= 1 << 31 else None,
    }


def test_inventory_object_hides_the_password(http_lab: Lab) -> None:
    inventory: Inventory = load_inventory(http_lab.inventory_path)
    client = HostClient(inventory.host("hv-a.lab.test"), **FAST)
    with client:
        assert password(http_lab) not in repr(client)
        assert password(http_lab) not in repr(client.__dict__.get("_password"))


# -- two hosts read side by side --------------------------------------------------------------------------------
_SERVING: contextvars.ContextVar[str] = contextvars.ContextVar("serving", default="")


def test_side_by_side_runs_both_at_once_in_the_caller_s_context() -> None:
    both = threading.Barrier(2, timeout=5)  # broken (an error) unless both calls are running at the same time
    _SERVING.set("preflight vm-a1")

    def read(host: str) -> tuple[str, str, str]:
        both.wait()
        return host, _SERVING.get(), threading.current_thread().name

    (first, second) = side_by_side(lambda: read("HV-A"), lambda: read("HV-B"))

    assert first == ("HV-A", "preflight vm-a1", threading.current_thread().name)
    assert second[:2] == ("HV-B", "preflight vm-a1")
    assert second[2] != threading.current_thread().name


def test_side_by_side_raises_only_once_both_ended_the_first_call_s_error_first() -> None:
    ended: list[str] = []

    def slow(outcome: Exception | None) -> str:
        time.sleep(0.2)
        ended.append("slow")
        if outcome is not None:
            raise outcome
        return "read"

    def fails(name: str) -> str:
        ended.append(name)
        raise RuntimeError(name)

    with pytest.raises(RuntimeError, match="second"):
        side_by_side(lambda: slow(None), lambda: fails("second"))
    with pytest.raises(RuntimeError, match="first"):
        side_by_side(lambda: fails("first"), lambda: slow(None))
    assert ended[-1] == "slow", "the error waited for the other call to end"
    with pytest.raises(RuntimeError, match="first"):
        side_by_side(lambda: fails("first"), lambda: slow(RuntimeError("second")))
