"""A running lab: simulated Hyper-V hosts that speak WinRM/PSRP, assembled from a topology.

    with Lab.from_topology(None, workdir=Path(".snlm/lab")) as lab:
        print(lab.inventory_path)      # what the engine's worker reads
        lab.inject_fault("partition", hosts=["HV-S2", "HV-S4"], seconds=120)
        print(lab.truth()["locations"]["web07"])

`start()` builds the world from the topology, the fault injector and the move engine (its scheduler thread),
then one WinRM endpoint per host (HTTP and HTTPS on 127.0.0.1, certificates from a per-lab CA) in front of
that host's cmdlets, wires the injector's wire-level faults to the endpoints, and writes the inventory, the
password file it points to, and the control API's token. `stop()` undoes all of it in reverse.

The engine must not be able to tell the lab from Windows (DESIGN.md): the only difference it sees is the
address, port and credentials in the inventory this class writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lab.cmdlets import HostRunner
from lab.control import (
    ClockRequest,
    ControlError,
    ControlServer,
    DelegationRequest,
    FailMoveAtFault,
    FaultRequest,
    FillVolumeFault,
    GuestHeartbeatFault,
    LeaveSourceFilesFault,
    MemoryPressureFault,
    PartitionFault,
    RefuseWinRMFault,
    RestartVmmsFault,
    RestartWinRMFault,
    SlowHostFault,
    validate,
    validate_fault,
)
from lab.faults import FaultInjector, FaultKind
from lab.inventory import AuthKind, HostEntry, Inventory, dump_inventory
from lab.model.directory import (
    NOT_DELEGATED,
    TRUSTED_FOR_DELEGATION,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    ComputerAccount,
    Directory,
    TopologyDirectory,
)
from lab.model.migration import MoveEngine
from lab.model.state import GIB, World
from lab.model.topology import DEFAULT_TOPOLOGY, TopologySpec, build_world, load_topology
from lab.truth import DocumentedProblem, documented_problems, jobs_truth, winrm_truth, world_truth
from lab.wsman import CertificateAuthority, HostEndpoint, WinRMQuotas

log = logging.getLogger(__name__)

LAB_AUTH_MODES = ("ntlm", "negotiate", "basic", "credssp")
SERVICE_ACCOUNT = "svc-snlm"  # the lab account's name is this plus a random suffix, per lab
# What a Windows host's WinRM service accepts out of the box (Negotiate, which covers NTLM); an inventory
# that asks for Basic or CredSSP gets that enabled too, as `winrm set winrm/config/service/auth` would.
_DEFAULT_HOST_AUTH = frozenset({"ntlm", "negotiate"})


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable only by the lab's user (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


@dataclass(frozen=True)
class HostAccess:
    """How a host's WinRM is reached, as written to the inventory."""

    scheme: str
    auth: str


class Lab:
    """A lab of simulated Hyper-V hosts. Not reusable: one start(), one stop()."""

    def __init__(
        self,
        spec: TopologySpec,
        *,
        workdir: Path,
        topology_path: Path | None = None,
        time_scale: float | None = None,
        auth: str | Mapping[str, str] = "ntlm",
        scheme: str = "http",
        directory: Directory | None = None,
        inventory_path: Path | None = None,
        control_port: int | None = 0,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {scheme!r}")
        self.spec = spec
        self.topology_path = topology_path
        self.workdir = Path(workdir).resolve()
        self.scheme = scheme
        self._time_scale = time_scale
        self._access = self._host_access(spec, auth, scheme)
        self._directory = directory
        self._inventory_path = (inventory_path or self.workdir / "inventory.yaml").resolve()
        self._control_port = control_port
        # A random suffix per lab: the NTLM user file is process-wide (lab.wsman.auth), so two labs in one
        # process (parallel tests, a rehearsal beside the demo) need distinct accounts for their passwords.
        self._account = f"{SERVICE_ACCOUNT}-{secrets.token_hex(3)}"
        self._username = f"{spec.lab.netbios_domain}\\{self._account}"
        self._world: World | None = None
        self._faults: FaultInjector | None = None
        self._engine: MoveEngine | None = None
        self._endpoints: dict[str, HostEndpoint] = {}
        self._control: ControlServer | None = None
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False

    @classmethod
    def from_topology(
        cls,
        path: Path | str | None,
        *,
        workdir: Path,
        time_scale: float | None = None,
        auth: str | Mapping[str, str] = "ntlm",
        scheme: str = "http",
        directory: Directory | None = None,
        inventory_path: Path | None = None,
        control_port: int | None = 0,
    ) -> Lab:
        """A lab from a topology file (the built-in default when `path` is None); raises TopologyError."""
        source = Path(path) if path is not None else DEFAULT_TOPOLOGY
        return cls(
            load_topology(source),
            workdir=workdir,
            topology_path=source,
            time_scale=time_scale,
            auth=auth,
            scheme=scheme,
            directory=directory,
            inventory_path=inventory_path,
            control_port=control_port,
        )

    @staticmethod
    def _host_access(spec: TopologySpec, auth: str | Mapping[str, str], scheme: str) -> dict[str, HostAccess]:
        names = {h.name.upper() for h in spec.hosts}
        if isinstance(auth, str):
            per_host = dict.fromkeys(names, auth)
        else:
            unknown = sorted({k.upper() for k in auth} - names)
            if unknown:
                raise ValueError(f"auth: unknown hosts {unknown}")
            per_host = dict.fromkeys(names, "ntlm") | {k.upper(): v for k, v in auth.items()}
        for name, mode in per_host.items():
            if mode not in LAB_AUTH_MODES:
                # Kerberos needs a KDC; the lab has none (see reference/samba-ad-recipe.md for a real one).
                raise ValueError(f"auth for {name}: {mode!r} is not one of {', '.join(LAB_AUTH_MODES)}")
        return {name: HostAccess(scheme, mode) for name, mode in per_host.items()}

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> Lab:
        with self._lock:
            if self._started or self._stopped:
                raise RuntimeError("a lab starts once; make a new one")
            self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        world = build_world(self.spec, time_scale=self._time_scale)
        if self._directory is not None:
            world.directory = self._directory
        self._world = world
        self._faults = FaultInjector(world)
        self._engine = MoveEngine(world, faults=self._faults, message_ids=self.spec.lab.compare_vm_message_ids)
        self._engine.start()

        password = secrets.token_urlsafe(24)
        secrets_dir = self.password_file.parent
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(secrets_dir, 0o700)
        _write_private(self.password_file, password + "\n")
        credentials = {self._username: password}

        ca = CertificateAuthority.create(self.workdir)
        tls_dir = self.workdir / "tls"
        for name, host in world.hosts.items():
            access = self._access[name]
            tls = ca.issue_server_certificate(tls_dir, host.fqdn, (host.name, host.name.lower()))
            endpoint = HostEndpoint(
                name,
                HostRunner(world, self._engine, name, faults=self._faults),
                credentials,
                tls=tls,
                auth_modes=_DEFAULT_HOST_AUTH | {access.auth},
                # WinRM's AllowUnencrypted: only when the inventory asks for Basic over plain HTTP.
                allow_unencrypted=access.auth == "basic" and access.scheme == "http",
                # The shells and pipelines Windows allows a user (catalogue 6.3), as the topology sets them.
                quotas=WinRMQuotas(**self.spec.lab.winrm.model_dump()),
            )
            endpoint.start()
            self._endpoints[name] = endpoint
        self._faults.on_winrm_refuse(self._on_winrm_refuse)
        self._faults.on_slow(self._on_slow)

        if self._control_port is not None:
            token = secrets.token_urlsafe(32)
            _write_private(self._token_path, token + "\n")
            self._control = ControlServer(self, token, port=self._control_port)
            self._control.start()
        self._write_inventory()
        self._write_state()
        log.info("lab started: %d hosts, inventory %s", len(self._endpoints), self._inventory_path)

    def stop(self) -> None:
        """Stop everything this lab started (safe to call twice, and after a failed start)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._control is not None:
            self._control.stop()
        for endpoint in self._endpoints.values():
            try:
                endpoint.stop()
            except Exception:
                log.exception("stopping the endpoint of %s failed", endpoint.name)
        if self._engine is not None:
            self._engine.stop()
        if self._world is not None:
            # The password and the token die with the lab: nothing else can use them now.
            self.password_file.unlink(missing_ok=True)
            self._token_path.unlink(missing_ok=True)
            (self._inventory_path.parent / "lab.json").unlink(missing_ok=True)
        log.info("lab stopped")

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- wiring of the wire-level faults ---------------------------------------------------------------------
    def _on_winrm_refuse(self, host: str, refusing: bool) -> None:
        endpoint = self._endpoints.get(host)
        if endpoint is None:
            return
        if refusing:
            # The endpoint reopens by itself after the window (wall-clock); the injector also calls back when the
            # window ends or the fault is cleared (the branch below), so a cleared fault ends at once.
            endpoint.refuse_connections(self.world.clock.to_real(self._remaining(FaultKind.REFUSE_WINRM, host)))
        elif not endpoint.accepting:
            endpoint.refuse_connections(0.0)

    def _on_slow(self, host: str, delay: float) -> None:
        endpoint = self._endpoints.get(host)
        if endpoint is not None:
            endpoint.answer_delay = delay

    def _remaining(self, kind: FaultKind, host: str) -> float:
        now = self.world.clock.elapsed()
        ends = [f.ends for f in self.faults.active() if f.kind == kind and host in f.hosts]
        return max((e - now for e in ends), default=0.0)

    # -- what the lab exposes ----------------------------------------------------------------------------------
    @property
    def world(self) -> World:
        if self._world is None:
            raise RuntimeError("the lab is not started")
        return self._world

    @property
    def engine(self) -> MoveEngine:
        if self._engine is None:
            raise RuntimeError("the lab is not started")
        return self._engine

    @property
    def faults(self) -> FaultInjector:
        if self._faults is None:
            raise RuntimeError("the lab is not started")
        return self._faults

    @property
    def inventory_path(self) -> Path:
        return self._inventory_path

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def password_file(self) -> Path:
        # Beside the inventory that points to it.
        return self._inventory_path.parent / "secrets" / f"{self._account}.password"

    @property
    def username(self) -> str:
        return self._username

    @property
    def control_url(self) -> str | None:
        return self._control.url if self._control is not None else None

    @property
    def _token_path(self) -> Path:
        return self._inventory_path.parent / "control.token"

    @property
    def control_token_file(self) -> Path | None:
        return self._token_path if self._control is not None else None

    def endpoint(self, host: str) -> HostEndpoint:
        host_obj = self.world.host(host)
        if host_obj is None or host_obj.name not in self._endpoints:
            raise KeyError(f"no lab host {host!r}")
        return self._endpoints[host_obj.name]

    @property
    def endpoints(self) -> dict[str, HostEndpoint]:
        return dict(self._endpoints)

    def documented_problems(self) -> list[DocumentedProblem]:
        return documented_problems(self.topology_path) if self.topology_path is not None else []

    def jobs_truth(self) -> dict[str, Any]:
        """The migration jobs and the hosts' limits only (lab.truth.jobs_truth): cheap at any size."""
        return jobs_truth(self.world, self.engine)

    def truth(self) -> dict[str, Any]:
        """The world's true state (lab.truth.world_truth) plus the active faults and the endpoints."""
        truth = world_truth(self.world, self.engine)
        truth["faults"] = self.faults.snapshot()
        truth["endpoints"] = {
            name: {"http_port": e.http_port, "https_port": e.https_port, "accepting": e.accepting}
            for name, e in self._endpoints.items()
        }
        truth["documented_problems"] = [{"id": p.id, "text": p.text} for p in self.documented_problems()]
        truth["winrm"] = winrm_truth(self._endpoints)
        return truth

    # -- inventory ---------------------------------------------------------------------------------------------
    def inventory(self) -> Inventory:
        """The inventory for this lab's hosts (what `inventory_path` holds)."""
        hosts: dict[str, HostEntry] = {}
        for name, endpoint in self._endpoints.items():
            host = self.world.hosts[name]
            access = self._access[name]
            port = endpoint.https_port if access.scheme == "https" else endpoint.http_port
            hosts[name] = HostEntry(
                name=name,
                address="127.0.0.1",
                port=port,
                scheme="https" if access.scheme == "https" else "http",
                auth=cast(AuthKind, access.auth),  # checked against LAB_AUTH_MODES in __init__
                username=self._username,
                password_file=self.password_file,
                ca_file=self.ca_file,
                encryption="never" if access.auth == "basic" and access.scheme == "http" else "auto",
                fqdn=host.fqdn,
                cluster=host.cluster,
                # The adapter the lab's transfer model moves this host's migrations over as the lab starts.
                migration_link_gbps=host.migration_nic().bandwidth_bps / 10**9,
            )
        return Inventory(hosts=hosts)

    def _write_inventory(self) -> None:
        header = (
            f"snlm lab inventory, written by `python -m lab` (topology {self.topology_path or '<in memory>'}).\n"
            "Passwords are not in this file: password_file points to them (mode 0600); they end with the lab."
        )
        dump_inventory(self.inventory(), self._inventory_path, header=header)

    def _write_state(self) -> None:
        """lab.json beside the inventory: where a rehearsal script finds the control API and the CA."""
        state = {
            "pid": os.getpid(),
            "inventory": str(self._inventory_path),
            "ca_file": str(self.ca_file),
            "control_url": self.control_url,
            "control_token_file": str(self.control_token_file) if self.control_token_file else None,
        }
        path = self._inventory_path.parent / "lab.json"
        path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    # -- control operations (the control API serves these) ----------------------------------------------------
    def list_faults(self) -> list[dict[str, Any]]:
        return self.faults.snapshot()

    def inject_fault(self, kind: str, **args: Any) -> dict[str, Any]:
        """Inject a fault of `kind` (see lab.control.FAULT_KINDS); raises ControlError naming a bad field."""
        request = validate_fault(kind, args, self.world)
        fault = self._apply(request)
        return fault.to_dict(self.world.clock.elapsed())

    def _apply(self, request: FaultRequest) -> Any:
        faults = self.faults
        try:
            match request:
                case PartitionFault(hosts=[a, b], seconds=seconds):
                    return faults.partition(a, b, seconds)
                case RefuseWinRMFault(host=host, seconds=seconds):
                    return faults.refuse_winrm(host, seconds)
                case RestartWinRMFault(host=host, seconds=seconds):
                    # Shells first: a client that reconnects after the window finds its shell gone.
                    self._endpoints[host].drop_all_shells()
                    return faults.refuse_winrm(host, seconds)
                case SlowHostFault(host=host, seconds=seconds, delay=delay):
                    return faults.slow_host(host, seconds, delay)
                case RestartVmmsFault(host=host, seconds=seconds):
                    return faults.restart_vmms(host, seconds)
                case FillVolumeFault(host=host, drive=drive, seconds=seconds, leave_gb=leave_gb):
                    return faults.fill_volume(host, drive[0], seconds, int(leave_gb * GIB))
                case MemoryPressureFault(host=host, gb=gb, seconds=seconds):
                    return faults.memory_pressure(host, int(gb * GIB), seconds)
                case FailMoveAtFault():
                    return faults.fail_move_at(
                        request.vm,
                        request.percent,
                        kind=request.action,
                        seconds=request.seconds,
                        partition_seconds=request.partition_seconds,
                    )
                case LeaveSourceFilesFault(vm=vm, seconds=seconds):
                    return faults.leave_source_files(vm, seconds)
                case GuestHeartbeatFault(vm=vm, heartbeat=heartbeat, seconds=seconds):
                    return faults.guest_heartbeat(vm, heartbeat, seconds)
        except (KeyError, ValueError) as exc:
            # The models check what they can; the injector has the last word (for example a race with a
            # host's state) and its messages name the argument.
            raise ControlError(400, str(exc).strip("'\"")) from None
        raise ControlError(400, f"unsupported fault request {type(request).__name__}")

    def clear_fault(self, fault_id: str) -> bool:
        return self.faults.clear(fault_id)

    def set_delegation(self, host: str, **args: Any) -> dict[str, Any]:
        """Set a computer account's delegation in the lab's own directory (not a real one)."""
        target = self.world.host(host)
        if target is None:
            raise ControlError(404, f"host: unknown host {host!r}")
        directory = self.world.directory
        if not isinstance(directory, TopologyDirectory):
            raise ControlError(409, "the lab reads a real directory: change delegation there")
        request: DelegationRequest = validate(DelegationRequest, args)
        current = directory.computer(target.name) or ComputerAccount(target.name)
        uac = current.user_account_control
        for flag, wanted in (
            (TRUSTED_TO_AUTH_FOR_DELEGATION, request.protocol_transition),
            (TRUSTED_FOR_DELEGATION, request.unconstrained),
            (NOT_DELEGATED, request.sensitive),
        ):
            if wanted is not None:
                uac = (uac | flag) if wanted else (uac & ~flag)
        spns = current.allowed_to_delegate_to
        if request.allowed_to_delegate_to is not None:
            spns = frozenset(request.allowed_to_delegate_to)
        account = ComputerAccount(target.name, spns, uac)
        directory.put(account)
        return {
            "host": account.name,
            "allowed_to_delegate_to": sorted(account.allowed_to_delegate_to, key=str.lower),
            "protocol_transition": account.protocol_transition,
            "unconstrained": account.unconstrained,
            "sensitive": bool(account.user_account_control & NOT_DELEGATED),
        }

    def set_time_scale(self, time_scale: float) -> dict[str, Any]:
        request: ClockRequest = validate(ClockRequest, {"time_scale": time_scale})
        self.world.clock.time_scale = request.time_scale
        # A refusing endpoint reopens on its own wall-clock timer: re-arm it for the new speed, so a slower
        # clock does not reopen it before the fault's (simulated) window ends.
        for fault in self.faults.active():
            if fault.kind == FaultKind.REFUSE_WINRM:
                self._on_winrm_refuse(fault.hosts[0], True)
        return {"time_scale": self.world.clock.time_scale, "time": self.world.clock.now().isoformat()}
