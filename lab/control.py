"""The lab's control API: read the truth, inject and clear faults, edit the lab's directory, change the clock.

JSON over HTTP on 127.0.0.1 only, for rehearsals and tests that run the lab in another process. The API can
break hosts, so every request but GET /health needs `Authorization: Bearer <token>`; the token is random
per lab and sits in a 0600 file beside the inventory, so only the lab's own user can drive it.

    GET    /health                  liveness (no token needed, says nothing else)
    GET    /truth                   lab.truth.world_truth() plus the active faults, endpoints and WinRM quota use
    GET    /faults                  the active faults
    POST   /faults/<kind>           inject one; JSON arguments (see FAULT_KINDS); 201 with the fault
    DELETE /faults/<id>             end it now; 404 when no such fault is active
    POST   /directory/<host>        set a computer account's delegation in the lab's own directory
    POST   /clock                   {"time_scale": N}

Every fault is bounded in time (`seconds`, simulated, at most a simulated day) and validated before it
touches anything: a bad request gets 400 with a message that names the field. The same operations are
methods of `lab.lab.Lab`, which validates through the same models, so in-process and HTTP callers agree.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import unquote

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lab.model.state import World
from lab.truth import WinRMUsageSource, winrm_truth

log = logging.getLogger(__name__)

MAX_FAULT_SECONDS = 86400.0  # a simulated day: every fault ends by itself
_MAX_BODY = 64 * 1024


class ControlError(Exception):
    """A request the lab refuses; `status` is the HTTP status the control API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- request models ------------------------------------------------------------------------------------------
Seconds = Annotated[float, Field(gt=0, le=MAX_FAULT_SECONDS)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _world(info: ValidationInfo) -> World | None:
    world = (info.context or {}).get("world")
    return world if isinstance(world, World) else None


def _known_host(value: str, info: ValidationInfo) -> str:
    world = _world(info)
    if world is None:
        return value
    host = world.host(value)
    if host is None:
        raise ValueError(f"unknown host {value!r}; the lab's hosts are {', '.join(sorted(world.hosts))}")
    return host.name


class _HostFault(_Request):
    host: str
    seconds: Seconds

    @field_validator("host")
    @classmethod
    def _host(cls, value: str, info: ValidationInfo) -> str:
        return _known_host(value, info)


class PartitionFault(_Request):
    """The two hosts cannot reach each other for `seconds`: moves between them fail (0x80072746 / 0x8007274C)."""

    hosts: Annotated[list[str], Field(min_length=2, max_length=2)]
    seconds: Seconds

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str], info: ValidationInfo) -> list[str]:
        names = [_known_host(v, info) for v in value]
        if names[0] == names[1]:
            raise ValueError("a partition needs two different hosts")
        return names


class RefuseWinRMFault(_HostFault):
    """The host's WinRM listeners refuse connections (connection refused) for `seconds`."""


class RestartWinRMFault(_Request):
    """The WinRM service restarts: every shell is gone (fault 2150858843) and it refuses connections for
    `seconds` while it comes back."""

    host: str
    seconds: Seconds = 2.0

    @field_validator("host")
    @classmethod
    def _host(cls, value: str, info: ValidationInfo) -> str:
        return _known_host(value, info)


class SlowHostFault(_HostFault):
    """Every WinRM answer of the host takes `delay` wall-clock seconds longer, for `seconds` (simulated).

    The delay is wall-clock because it is what the client's own timeouts measure."""

    delay: Annotated[float, Field(gt=0, le=120)]


class RestartVmmsFault(_Request):
    """vmms restarts: the moves it ran die, and it answers no migration for `seconds`."""

    host: str
    seconds: Seconds = 5.0

    @field_validator("host")
    @classmethod
    def _host(cls, value: str, info: ValidationInfo) -> str:
        return _known_host(value, info)


class FillVolumeFault(_HostFault):
    """A volume fills up until `leave_gb` is free, for `seconds`."""

    drive: Annotated[str, Field(pattern=r"^[A-Za-z]:?\\?$")]
    leave_gb: Annotated[float, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _drive_exists(self, info: ValidationInfo) -> FillVolumeFault:
        world = _world(info)
        letter = self.drive[0].upper()
        if world is not None and letter not in world.hosts[self.host].volumes:
            raise ValueError(f"drive: {self.host} has no volume {letter}:")
        return self


class MemoryPressureFault(_HostFault):
    """Something else takes `gb` of the host's memory for `seconds`."""

    gb: Annotated[float, Field(gt=0, le=65536)]


def _known_vm(value: str, info: ValidationInfo) -> str:
    world = _world(info)
    if world is not None and not world.locate_vm(value):
        raise ValueError(f"no host has a VM named {value!r}")
    return value


class FailMoveAtFault(_Request):
    """One-shot: the VM's next move dies at `percent`; action "reset" breaks its connection, "partition"
    partitions its two hosts for `partition_seconds`. Armed for at most `seconds`."""

    vm: str
    percent: Annotated[int, Field(ge=0, le=99)]
    action: Literal["reset", "partition"] = "reset"
    partition_seconds: Seconds = 60.0
    seconds: Seconds = 3600.0

    @field_validator("vm")
    @classmethod
    def _vm(cls, value: str, info: ValidationInfo) -> str:
        return _known_vm(value, info)


class LeaveSourceFilesFault(_Request):
    """One-shot: the VM's next successful move leaves its files on the source (armed for at most `seconds`)."""

    vm: str
    seconds: Seconds = 3600.0

    @field_validator("vm")
    @classmethod
    def _vm(cls, value: str, info: ValidationInfo) -> str:
        return _known_vm(value, info)


class GuestHeartbeatFault(_Request):
    """For `seconds`, the VM's guest heartbeat reads `heartbeat` wherever the VM runs (catalogue 6.4)."""

    vm: str
    heartbeat: Literal[
        "NoContact", "LostCommunication", "Error", "OkApplicationsCritical", "Paused", "Disabled", "Unknown"
    ] = "NoContact"
    seconds: Seconds = 60.0

    @field_validator("vm")
    @classmethod
    def _vm(cls, value: str, info: ValidationInfo) -> str:
        return _known_vm(value, info)


FaultRequest = (
    PartitionFault
    | RefuseWinRMFault
    | RestartWinRMFault
    | SlowHostFault
    | RestartVmmsFault
    | FillVolumeFault
    | MemoryPressureFault
    | FailMoveAtFault
    | LeaveSourceFilesFault
    | GuestHeartbeatFault
)

FAULT_KINDS: dict[str, type[FaultRequest]] = {
    "partition": PartitionFault,
    "refuse_winrm": RefuseWinRMFault,
    "restart_winrm": RestartWinRMFault,
    "slow_host": SlowHostFault,
    "restart_vmms": RestartVmmsFault,
    "fill_volume": FillVolumeFault,
    "memory_pressure": MemoryPressureFault,
    "fail_move_at": FailMoveAtFault,
    "leave_source_files": LeaveSourceFilesFault,
    "guest_heartbeat": GuestHeartbeatFault,
}


class DelegationRequest(_Request):
    """A computer account's delegation in the lab's own directory; omitted fields keep their value."""

    allowed_to_delegate_to: list[Annotated[str, Field(min_length=3, pattern=r"^[^/\s][^/]*/[^/\s]+$")]] | None = None
    protocol_transition: bool | None = None
    unconstrained: bool | None = None
    sensitive: bool | None = None


class ClockRequest(_Request):
    time_scale: Annotated[float, Field(gt=0, le=100000)]


def _field_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def validate(model: type[BaseModel], args: Any, world: World | None = None) -> Any:
    """Validate arguments with the API's models; raise ControlError(400) naming each bad field."""
    if not isinstance(args, dict):
        raise ControlError(400, "body: must be a JSON object")
    try:
        return model.model_validate(args, context={"world": world})
    except ValidationError as exc:
        raise ControlError(400, _field_errors(exc)) from None


def validate_fault(kind: str, args: Any, world: World | None = None) -> FaultRequest:
    model = FAULT_KINDS.get(kind)
    if model is None:
        raise ControlError(404, f"unknown fault kind {kind!r}; known kinds: {', '.join(sorted(FAULT_KINDS))}")
    result: FaultRequest = validate(model, args, world)
    return result


# -- the server --------------------------------------------------------------------------------------------
class LabControl(Protocol):
    """The operations the control API serves (implemented by lab.lab.Lab)."""

    def truth(self) -> dict[str, Any]: ...

    def jobs_truth(self) -> dict[str, Any]: ...

    @property
    def endpoints(self) -> Mapping[str, WinRMUsageSource]: ...

    def list_faults(self) -> list[dict[str, Any]]: ...

    def inject_fault(self, kind: str, **args: Any) -> dict[str, Any]: ...

    def clear_fault(self, fault_id: str) -> bool: ...

    def set_delegation(self, host: str, **args: Any) -> dict[str, Any]: ...

    def set_time_scale(self, time_scale: float) -> dict[str, Any]: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], control: LabControl, token: str) -> None:
        super().__init__(address, _Handler)
        self.control = control
        self.token = token


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "snlm-lab-control"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _answer(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, indent=1).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="snlm-lab"')
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.server.token.encode())

    def _raw_body(self) -> bytes:
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            # The body is not read, so this connection cannot carry another request.
            self.close_connection = True
            raise ControlError(
                413 if length > _MAX_BODY else 400, f"body: at most {_MAX_BODY} bytes, with a Content-Length"
            )
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw: bytes) -> Any:
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ControlError(400, f"body: not valid JSON ({exc})") from None

    def _dispatch(self, method: str) -> None:
        parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/") if p]
        try:
            # Read the body whatever happens next: an unread body would be taken for the next request on this
            # keep-alive connection. Parse it only for an authorized caller.
            raw = self._raw_body()
            if parts == ["health"] and method == "GET":
                self._answer(200, {"ok": True})
                return
            if not self._authorized():
                raise ControlError(401, "missing or wrong bearer token (see the control token file)")
            body = self._json(raw) if method == "POST" else None
            status, payload = self._route(method, parts, body)
            self._answer(status, payload)
        except ControlError as exc:
            self._answer(exc.status, {"error": exc.message})
        except Exception:
            log.exception("control API: %s %s failed", method, self.path)
            self._answer(500, {"error": "internal error in the lab; see its log"})

    def _route(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        control = self.server.control
        match (method, parts):
            case ("GET", ["truth"]):
                truth = control.truth()
                truth.setdefault("winrm", winrm_truth(control.endpoints))
                return 200, truth
            case ("GET", ["truth", "jobs"]):
                return 200, control.jobs_truth()
            case ("GET", ["faults"]):
                return 200, {"faults": control.list_faults()}
            case ("POST", ["faults", kind]):
                if not isinstance(body, dict):
                    raise ControlError(400, "body: must be a JSON object")
                return 201, control.inject_fault(kind, **body)
            case ("DELETE", ["faults", fault_id]):
                if not control.clear_fault(fault_id):
                    raise ControlError(404, f"no active fault {fault_id!r}")
                return 200, {"cleared": fault_id}
            case ("POST", ["directory", host]):
                if not isinstance(body, dict):
                    raise ControlError(400, "body: must be a JSON object")
                return 200, control.set_delegation(host, **body)
            case ("POST", ["clock"]):
                request: ClockRequest = validate(ClockRequest, body)
                return 200, control.set_time_scale(request.time_scale)
        known = {"GET": ("truth", "faults", "health"), "POST": ("faults", "directory", "clock"), "DELETE": ("faults",)}
        if method in known and parts and parts[0] in known[method]:
            raise ControlError(404, f"{method} /{'/'.join(parts)}: wrong path")
        raise ControlError(404, f"{method} /{'/'.join(parts)}: no such endpoint")


class ControlServer:
    """The control API's HTTP server, on 127.0.0.1 only."""

    def __init__(self, control: LabControl, token: str, *, port: int = 0, host: str = "127.0.0.1") -> None:
        if host != "127.0.0.1":
            # The API can break hosts: it never listens beyond the loopback interface.
            raise ValueError(f"the control API listens on the loopback interface only, not {host!r}")
        self._server = _Server((host, port), control, token)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="lab-control", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


class ControlClient:
    """A small client of the control API, for rehearsals and tests that run the lab in another process."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ControlClient({self.url!r})"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._session.request(method, self.url + path, json=body, timeout=self.timeout)
        payload = response.json()
        if response.status_code >= 400:
            raise ControlError(response.status_code, payload.get("error", response.reason))
        return payload

    def truth(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/truth")
        return result

    def jobs_truth(self) -> dict[str, Any]:
        """`/truth/jobs`: the migration jobs and the hosts' limits, without the VMs."""
        result: dict[str, Any] = self._call("GET", "/truth/jobs")
        return result

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return result

    def inject_fault(self, kind: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/faults/{kind}", args)
        return result

    def clear_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/faults/{fault_id}")

    def set_delegation(self, host: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/directory/{host}", args)
        return result

    def set_time_scale(self, time_scale: float) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/clock", {"time_scale": time_scale})
        return result

    def close(self) -> None:
        self._session.close()
