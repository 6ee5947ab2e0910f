"""Fixtures for the lab's wire-layer tests: TLS material, a scripted CommandRunner, started endpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.wsman import WSMan

from lab.commands import (
    ErrorCategory,
    ErrorSpec,
    PipelineIO,
    PipelineRequest,
    TerminatingError,
)
from lab.psrp import PipelineStoppedError
from lab.wsman import HostEndpoint, TlsMaterial, make_tls_material

WIRE_USER = "LAB\\admin"
WIRE_PASSWORD = "Lab-Pa55w.rd!"

NOT_FOUND = ErrorSpec(
    message='Hyper-V was unable to find a virtual machine with name "ghost".',
    fully_qualified_error_id="InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM",
    category=ErrorCategory.InvalidArgument,
    activity="Get-VM",
    exception_types=("Microsoft.HyperV.PowerShell.VirtualizationException", "System.Exception", "System.Object"),
    target_name="ghost",
    target_type="String",
    target_object="ghost",
    exception_properties=(("ErrorCode", 32779),),
)

MOVE_FAILED = ErrorSpec(
    message="Virtual machine migration operation for 'vm1' failed at migration source 'HV01'.",
    fully_qualified_error_id="OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM",
    category=ErrorCategory.NotSpecified,
    activity="Move-VM",
    exception_types=("Microsoft.HyperV.PowerShell.VirtualizationException", "System.Exception", "System.Object"),
    hresult=-2146233088,
)


class WireRunner:
    """A CommandRunner with a few scripted commands that exercise every part of the wire.

    Echo-Parameters  one output string per parameter ("name=value" or "name=<switch>"), then the input
    Get-Identity     "<user>|<auth>" of the request
    Emit-Large       -Count objects of -Size characters
    Measure-Input    number of input objects and their total length
    Write-Records    a non-terminating error, a warning, a verbose record and two progress records
    Throw-Terminating / Throw-Unexpected   TerminatingError(MOVE_FAILED) / RuntimeError
    Wait-Stop        blocks until stop_event, then tries to write (which must raise PipelineStoppedError)
    Wait-Then-Echo   waits -Seconds on stop_event (nobody sets it), then writes "done"
    Anything else (including scripts) is recorded in `self.seen` and echoed as "<name>|<is_script>".
    """

    def __init__(self) -> None:
        self.seen: list[PipelineRequest] = []
        self.blocking_started = threading.Event()
        self.stop_observed = threading.Event()
        self.write_after_stop_raised = threading.Event()

    def run(self, request: PipelineRequest, io: PipelineIO) -> None:
        self.seen.append(request)
        command = request.commands[0]
        named: dict[str, Any] = {p.name: p.value for p in command.parameters if p.name}
        if command.name == "Echo-Parameters":
            for parameter in command.parameters:
                value = "<switch>" if parameter.is_switch else repr(parameter.value)
                io.write_output(f"{parameter.name}={value}")
            for item in request.input:
                io.write_output(item)
        elif command.name == "Get-Identity":
            io.write_output(f"{request.user}|{request.auth}")
        elif command.name == "Emit-Large":
            chunk = "x" * int(named["Size"])
            for index in range(int(named["Count"])):
                io.write_output(f"{index:06d}{chunk}")
        elif command.name == "Measure-Input":
            io.write_output(len(request.input))
            io.write_output(sum(len(str(item)) for item in request.input))
        elif command.name == "Write-Records":
            io.write_error(NOT_FOUND)
            io.write_warning("The host is busy.")
            io.write_verbose("Looking up the VM.")
            io.write_progress("Moving Virtual Machine", "50%", 50, activity_id=3)
            io.write_progress("Moving Virtual Machine", "100%", 100, activity_id=3, completed=True)
            io.write_output("after-records")
        elif command.name == "Throw-Terminating":
            io.write_output("before")
            raise TerminatingError(MOVE_FAILED)
        elif command.name == "Throw-Unexpected":
            raise RuntimeError("the lab model is inconsistent")
        elif command.name == "Wait-Stop":
            self.blocking_started.set()
            if io.stop_event.wait(30):
                self.stop_observed.set()
            try:
                io.write_output("too late")
            except PipelineStoppedError:
                self.write_after_stop_raised.set()
                raise
        elif command.name == "Wait-Then-Echo":
            io.stop_event.wait(float(named["Seconds"]))
            io.write_output("done")
        else:
            io.write_output(f"{command.name}|{command.is_script}")


@pytest.fixture(scope="session")
def wire_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A lab CA and a server certificate for localhost / 127.0.0.1."""
    return make_tls_material(Path(tmp_path_factory.mktemp("wire-tls")), "hv01.lab.test")


@pytest.fixture
def wire_runner() -> WireRunner:
    """A fresh scripted runner."""
    return WireRunner()


@pytest.fixture
def wire_endpoint_factory(wire_tls: TlsMaterial, wire_runner: WireRunner) -> Iterator[Callable[..., HostEndpoint]]:
    """Start endpoints (HTTP + HTTPS on 127.0.0.1) and stop them all at teardown."""
    started: list[HostEndpoint] = []

    def make(**kwargs: Any) -> HostEndpoint:
        kwargs.setdefault("tls", wire_tls)
        kwargs.setdefault("credentials", {WIRE_USER: WIRE_PASSWORD})
        runner = kwargs.pop("runner", wire_runner)
        endpoint = HostEndpoint(kwargs.pop("name", "hv01"), runner, **kwargs)
        endpoint.start()
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        endpoint.stop()


@pytest.fixture
def wire_endpoint(wire_endpoint_factory: Callable[..., HostEndpoint]) -> HostEndpoint:
    """One started endpoint with the default account."""
    return wire_endpoint_factory()


@pytest.fixture
def wire_connect(wire_tls: TlsMaterial) -> Callable[..., WSMan]:
    """`wire_connect(endpoint, mode, **kwargs)`: see `connect`."""

    def make(endpoint: HostEndpoint, mode: str, **kwargs: Any) -> WSMan:
        return connect(endpoint, mode, wire_tls, **kwargs)

    return make


def connect(
    endpoint: HostEndpoint,
    mode: str,
    tls: TlsMaterial,
    *,
    username: str = WIRE_USER,
    password: str = WIRE_PASSWORD,
    **kwargs: Any,
) -> WSMan:
    """A pypsrp WSMan for `mode`: basic (HTTPS), ntlm / negotiate / credssp (HTTP, sealed),
    ntlm-https / credssp-https (HTTPS). HTTPS always validates the certificate against the lab CA."""
    https = mode in ("basic", "ntlm-https", "credssp-https")
    # pypsrp annotates cert_validation as bool but hands it to requests' `verify`, which takes a CA path.
    validation: Any = str(tls.ca_path) if https else True
    kwargs.setdefault("operation_timeout", 20)
    kwargs.setdefault("read_timeout", 30)
    kwargs.setdefault("connection_timeout", 5)
    return WSMan(
        "localhost" if https else "127.0.0.1",
        port=endpoint.https_port if https else endpoint.http_port,
        ssl=https,
        auth=mode.split("-")[0],
        username=username,
        password=password,
        cert_validation=validation,
        **kwargs,
    )


# -- whole-lab fixtures (lab.lab.Lab started from a topology, reached through its own inventory) -----------
from lab.inventory import load_inventory  # noqa: E402
from lab.lab import Lab  # noqa: E402
from lab.model.topology import DEFAULT_TOPOLOGY  # noqa: E402

TOPOLOGIES = DEFAULT_TOPOLOGY.parent


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """`lab_factory("pair" | "default", **Lab.from_topology kwargs)`: start labs in tmp_path, stop them all."""
    started: list[Lab] = []

    def make(topology: str = "pair", *, time_scale: float = 60.0, **kwargs: Any) -> Lab:
        lab = Lab.from_topology(
            TOPOLOGIES / f"{topology}.yaml",
            workdir=tmp_path / f"lab-{len(started)}",
            time_scale=time_scale,
            **kwargs,
        )
        started.append(lab)
        lab.start()
        return lab

    yield make
    for lab in started:
        lab.stop()


@pytest.fixture
def pair_lab(lab_factory: Callable[..., Lab]) -> Lab:
    """The two-host lab (HV-A, HV-B), NTLM over HTTP, time x60."""
    return lab_factory("pair")


def lab_wsman(lab: Lab, host: str, **kwargs: Any) -> WSMan:
    """A pypsrp WSMan for one lab host, built only from the lab's inventory file (as the engine does)."""
    entry = load_inventory(lab.inventory_path).host(host)
    # pypsrp annotates cert_validation as bool but hands it to requests' `verify`, which takes a CA path.
    validation: Any = str(entry.ca_file) if entry.use_tls and entry.ca_file else True
    kwargs.setdefault("operation_timeout", 20)
    kwargs.setdefault("read_timeout", 30)
    kwargs.setdefault("connection_timeout", 5)
    return WSMan(
        entry.address,
        port=entry.effective_port,
        ssl=entry.use_tls,
        auth=entry.auth,
        username=entry.username,
        password=entry.resolve_password().get_secret_value(),
        cert_validation=validation,
        encryption=entry.encryption,
        **kwargs,
    )
