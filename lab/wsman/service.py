"""The WS-Management service of one lab host: SOAP in, SOAP out, no sockets.

`WSManService.handle()` takes a plaintext envelope and the authenticated identity and returns the HTTP
status and the response envelope. It dispatches Create / Command / Send / Receive / Signal / Delete on the
PowerShell resource URI and Get on the shell (pypsrp's `RunspacePool.is_alive()`) to `lab.psrp.PoolShell`.

WinRM's quotas are enforced per service (`WinRMQuotas`): at most `max_shells_per_user` shells open at once
per authenticated user (one more Create gets fault 2150859173), and at most `max_commands_per_shell` Commands
over a shell's whole life (the next one gets the commands-per-shell fault, catalogue 6.3). A deleted or
dropped shell frees its place. `usage()` reports both for the lab's truth.

A client whose read timed out resends the identical envelope (pypsrp retries a Receive up to 5 times with the
same MessageID): every shell keeps a bounded cache of its recent responses by MessageID and answers a repeat
with the identical bytes, so output already dequeued for the lost answer is never lost (wire notes).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psrpcore import PSRPCoreError

from lab.commands import CommandRunner
from lab.psrp.engine import PoolShell, ShellClosedError, UnknownPipelineError, payload_budget
from lab.wsman import soap
from lab.wsman.auth import Identity
from lab.wsman.faults import FaultCode, WSManFault
from lab.wsman.soap import NS_POWERSHELL, NS_SHELL, Action, WSManRequest

log = logging.getLogger(__name__)

_CACHE_SIZE = 32  # responses kept per shell; pypsrp resends only its latest request
_DUPLICATE_WAIT_SECONDS = 120.0
_LONG_POLL_SHARE = 0.75  # answer an empty Receive well inside the client's OperationTimeout


@dataclass
class _CachedResponse:
    ready: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    body: bytes = b""


class ResponseCache:
    """Recent responses of one shell by request MessageID (bounded, thread-safe)."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, _CachedResponse] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, message_id: str) -> tuple[_CachedResponse, bool]:
        """The entry for `message_id` and whether this caller must produce it (False: a repeat)."""
        with self._lock:
            entry = self._entries.get(message_id)
            if entry is not None:
                return entry, False
            entry = _CachedResponse()
            self._entries[message_id] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
            return entry, True

    def peek(self, message_id: str) -> _CachedResponse | None:
        """The entry for `message_id`, if any."""
        with self._lock:
            return self._entries.get(message_id)


@dataclass(frozen=True)
class WinRMQuotas:
    """The WinRM quotas a runspace pool meets on Windows (catalogue 6.3).

    `max_shells_per_user`: shells one user may have open at once; 25 is the lower of the Winrs
    MaxShellsPerUser (30) and the PowerShell endpoint's (25). `max_commands_per_shell`: pipelines one shell
    may run over its whole life, the endpoint's MaxConcurrentCommandsPerShell (1000), which Windows counts
    in total rather than at once.
    """

    max_shells_per_user: int = 25
    max_commands_per_shell: int = 1000

    def __post_init__(self) -> None:
        if self.max_shells_per_user < 1 or self.max_commands_per_shell < 1:
            raise ValueError("WinRM quotas must be at least 1")


@dataclass
class _Shell:
    engine: PoolShell
    owner: str
    client_ip: str
    cache: ResponseCache = field(default_factory=ResponseCache)
    commands: int = 0  # Commands accepted over the shell's life


@dataclass
class ServiceCounters:
    """Hooks the endpoint uses to count what happened."""

    pool_opened: Callable[[], None] = lambda: None
    pipeline_started: Callable[[], None] = lambda: None


class WSManService:
    """WinRM's shell operations for the PowerShell plugin of one host."""

    def __init__(
        self,
        machine: str,
        runner: CommandRunner,
        *,
        long_poll_seconds: float = 15.0,
        stop_grace_seconds: float = 2.0,
        counters: ServiceCounters | None = None,
        quotas: WinRMQuotas | None = None,
    ) -> None:
        self.machine = machine
        # Read on every Create and Command: a new value applies to the next one.
        self.quotas = quotas or WinRMQuotas()
        self.runner = runner
        self.long_poll_seconds = long_poll_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.counters = counters or ServiceCounters()
        self._shells: dict[str, _Shell] = {}
        self._lock = threading.Lock()
        self._refused_shells = 0
        self._refused_commands = 0

    # --- public ------------------------------------------------------------------------------------------

    def handle(self, envelope: bytes, identity: Identity, client_ip: str, endpoint_url: str) -> tuple[int, bytes]:
        """Answer one request: (HTTP status, response envelope). Faults are HTTP 500."""
        try:
            request = soap.parse_request(envelope)
        except WSManFault as fault:
            return 500, soap.fault_envelope(fault, None, self.machine)
        try:
            repeated = self._repeated_create(request)
            if repeated is not None:
                return repeated
            shell = self._shell_for(request, identity)
            if shell is None:
                body_action = self._dispatch_shellless(request, identity, client_ip, endpoint_url)
                return 200, soap.envelope(body_action[0], request.message_id, body_action[1])
            entry, produce = shell.cache.claim(request.message_id)
            if not produce:
                # A resend of a request already answered (or still being answered): same bytes.
                entry.ready.wait(_DUPLICATE_WAIT_SECONDS)
                log.info("answering repeated MessageID %s from the cache", request.message_id)
                return entry.status, entry.body
            try:
                entry.status, entry.body = self._answer(request, lambda: self._dispatch_shell(request, shell))
            finally:
                entry.ready.set()
            return entry.status, entry.body
        except WSManFault as fault:
            return 500, soap.fault_envelope(fault, request.message_id, self.machine, request.locale)
        except Exception:
            log.exception("unexpected failure answering %s", request.action)
            internal = WSManFault(FaultCode.PROVIDER_FAILURE)
            return 500, soap.fault_envelope(internal, request.message_id, self.machine, request.locale)

    def _answer(self, request: WSManRequest, dispatch: Callable[[], tuple[str, str]]) -> tuple[int, bytes]:
        """Run `dispatch` and render its result or its fault (so a cached answer is always complete)."""
        try:
            action, body = dispatch()
            return 200, soap.envelope(action, request.message_id, body)
        except WSManFault as fault:
            return 500, soap.fault_envelope(fault, request.message_id, self.machine, request.locale)
        except Exception:
            log.exception("unexpected failure answering %s", request.action)
            internal = WSManFault(FaultCode.PROVIDER_FAILURE)
            return 500, soap.fault_envelope(internal, request.message_id, self.machine, request.locale)

    def drop_all_shells(self) -> int:
        """A WinRM service restart: every shell and its pipelines are gone. Returns how many there were."""
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
        for shell in shells:
            shell.engine.close()
        return len(shells)

    @property
    def shell_count(self) -> int:
        """Number of open shells (runspace pools)."""
        with self._lock:
            return len(self._shells)

    def usage(self) -> dict[str, Any]:
        """The quotas and what the clients use of them, as plain JSON: open shells per user, the Commands
        each open shell has run, and how many Creates and Commands the quotas refused."""
        with self._lock:
            shells = list(self._shells.values())
            refused = {"shells": self._refused_shells, "commands": self._refused_commands}
        per_user: dict[str, int] = {}
        for shell in shells:
            per_user[shell.owner] = per_user.get(shell.owner, 0) + 1
        return {
            "max_shells_per_user": self.quotas.max_shells_per_user,
            "max_commands_per_shell": self.quotas.max_commands_per_shell,
            "shells_per_user": per_user,
            "shells": [
                {"shell_id": shell.engine.shell_id, "user": shell.owner, "commands": shell.commands} for shell in shells
            ],
            "refused": refused,
        }

    # --- dispatch ------------------------------------------------------------------------------------------

    def _repeated_create(self, request: WSManRequest) -> tuple[int, bytes] | None:
        """The cached answer when a Create is a resend of one that already made its shell."""
        if request.action != Action.CREATE or request.body is None:
            return None
        shell_id = (request.body.get("ShellId") or "").upper()
        with self._lock:
            shell = self._shells.get(shell_id)
        entry = shell.cache.peek(request.message_id) if shell is not None else None
        if entry is None:
            return None
        entry.ready.wait(_DUPLICATE_WAIT_SECONDS)
        return entry.status, entry.body

    def _shell_for(self, request: WSManRequest, identity: Identity) -> _Shell | None:
        """The shell a shell-scoped request addresses (None for Create, config Get, unknown actions)."""
        if request.action == Action.CREATE:
            return None
        if request.action == Action.GET and request.resource_uri != soap.SHELL_RESOURCE_URI:
            return None
        if request.action not in (
            Action.GET,
            Action.COMMAND,
            Action.SEND,
            Action.RECEIVE,
            Action.SIGNAL,
            Action.DELETE,
        ):
            return None
        expected = soap.SHELL_RESOURCE_URI if request.action == Action.GET else soap.POWERSHELL_RESOURCE_URI
        if request.resource_uri != expected:
            raise WSManFault(FaultCode.RESOURCE_NOT_FOUND)
        shell_id = request.shell_id
        if not shell_id:
            raise WSManFault(FaultCode.INVALID_SELECTORS)
        with self._lock:
            shell = self._shells.get(shell_id)
        if shell is None:
            raise WSManFault.shell_not_found(shell_id)
        if shell.owner.lower() != identity.user.lower():
            # WinRM lets only the creator of a shell use it.
            raise WSManFault(FaultCode.ACCESS_DENIED)
        return shell

    def _dispatch_shellless(
        self, request: WSManRequest, identity: Identity, client_ip: str, endpoint_url: str
    ) -> tuple[str, str]:
        if request.action == Action.CREATE:
            if request.resource_uri != soap.POWERSHELL_RESOURCE_URI:
                raise WSManFault(FaultCode.RESOURCE_NOT_FOUND)
            return soap.response_action(Action.CREATE), self._create(request, identity, client_ip, endpoint_url)
        if request.action == Action.GET and request.resource_uri == soap.CONFIG_RESOURCE_URI:
            return soap.response_action(Action.GET), soap.config_body(500)
        if request.action == Action.GET:
            raise WSManFault(FaultCode.RESOURCE_NOT_FOUND)
        raise WSManFault(FaultCode.ACTION_NOT_SUPPORTED)

    def _create(self, request: WSManRequest, identity: Identity, client_ip: str, endpoint_url: str) -> str:
        body = request.body
        if body is None or body.tag != soap.qname(NS_SHELL, "Shell"):
            raise WSManFault(FaultCode.INVALID_SOAP_BODY)
        shell_id = (body.get("ShellId") or str(uuid.uuid4())).upper()
        creation = soap.find_text(body, NS_POWERSHELL, "creationXml")
        if not creation:
            raise WSManFault(FaultCode.INVALID_SOAP_BODY, "The Create request has no creationXml.")
        data = _b64(creation)
        engine = PoolShell(
            shell_id,
            self.runner,
            user=identity.user,
            auth=identity.mode,
            stop_grace_seconds=self.stop_grace_seconds,
            on_pipeline_start=self.counters.pipeline_started,
        )
        engine.set_max_envelope_size(request.max_envelope_size)
        shell = _Shell(engine=engine, owner=identity.user, client_ip=client_ip)
        with self._lock:
            if shell_id in self._shells:
                raise WSManFault(FaultCode.PROVIDER_FAILURE, f"A shell with ShellId {shell_id} already exists.")
            limit = self.quotas.max_shells_per_user
            # WinRM counts a user's shells by the authenticated account, whatever the case of its name.
            if sum(1 for s in self._shells.values() if s.owner.lower() == identity.user.lower()) >= limit:
                self._refused_shells += 1
                raise WSManFault.shell_quota(limit)
            self._shells[shell_id] = shell
        entry, _ = shell.cache.claim(request.message_id)
        try:
            engine.open(data)
        except (PSRPCoreError, ValueError) as exc:
            with self._lock:
                self._shells.pop(shell_id, None)
            raise WSManFault(FaultCode.PROVIDER_FAILURE, f"The runspace pool could not be opened: {exc}") from None
        self.counters.pool_opened()
        response = soap.create_response_body(
            shell_id, endpoint_url, soap.shell_xml(shell_id, identity.user, client_ip, 7200)
        )
        entry.status = 200
        entry.body = soap.envelope(soap.response_action(Action.CREATE), request.message_id, response)
        entry.ready.set()
        return response

    def _dispatch_shell(self, request: WSManRequest, shell: _Shell) -> tuple[str, str]:
        engine = shell.engine
        action = request.action
        engine.set_max_envelope_size(request.max_envelope_size)
        try:
            if action == Action.GET:
                return soap.response_action(action), soap.shell_xml(engine.shell_id, shell.owner, shell.client_ip, 7200)
            if action == Action.COMMAND:
                return soap.response_action(action), self._command(request, shell)
            if action == Action.SEND:
                self._send(request, engine)
                return soap.response_action(action), "<rsp:SendResponse/>"
            if action == Action.RECEIVE:
                return soap.response_action(action), self._receive(request, engine)
            if action == Action.SIGNAL:
                self._signal(request, engine)
                return soap.response_action(action), "<rsp:SignalResponse/>"
            if action == Action.DELETE:
                with self._lock:
                    self._shells.pop(engine.shell_id, None)
                engine.close()
                return soap.response_action(action), ""
        except ShellClosedError:
            raise WSManFault.shell_not_found(engine.shell_id) from None
        except UnknownPipelineError as exc:
            raise WSManFault(
                FaultCode.UNEXPECTED_SELECTORS,
                f"The request for the Windows Remote Shell with ShellId {engine.shell_id} failed because the "
                f"command {str(exc).upper()} was not found.",
            ) from None
        except PSRPCoreError as exc:
            log.warning("PSRP error in shell %s: %s", engine.shell_id, exc)
            raise WSManFault(FaultCode.PROVIDER_FAILURE, f"The PowerShell plugin rejected the data: {exc}") from None
        raise WSManFault(FaultCode.ACTION_NOT_SUPPORTED)

    def _command(self, request: WSManRequest, shell: _Shell) -> str:
        body = request.body
        if body is None or body.tag != soap.qname(NS_SHELL, "CommandLine"):
            raise WSManFault(FaultCode.INVALID_SOAP_BODY)
        engine = shell.engine
        with self._lock:
            if shell.commands >= self.quotas.max_commands_per_shell:
                self._refused_commands += 1
                raise WSManFault.commands_per_shell()
            shell.commands += 1
        command_id = body.get("CommandId") or str(uuid.uuid4()).upper()
        arguments = soap.find_text(body, NS_SHELL, "Arguments")
        engine.create_pipeline(_uuid(command_id), _b64(arguments or ""))
        return soap.command_response_body(command_id)

    def _send(self, request: WSManRequest, engine: PoolShell) -> None:
        body = request.body
        if body is None or body.tag != soap.qname(NS_SHELL, "Send"):
            raise WSManFault(FaultCode.INVALID_SOAP_BODY)
        for stream in body.findall(soap.qname(NS_SHELL, "Stream")):
            if stream.get("Name") not in ("stdin", "pr"):
                raise WSManFault(FaultCode.INVALID_SOAP_BODY, f"Unknown input stream {stream.get('Name')!r}.")
            command_id = stream.get("CommandId")
            engine.send(_b64(stream.text or ""), _uuid(command_id) if command_id else None)

    def _receive(self, request: WSManRequest, engine: PoolShell) -> str:
        body = request.body
        desired = body.find(soap.qname(NS_SHELL, "DesiredStream")) if body is not None else None
        if body is None or body.tag != soap.qname(NS_SHELL, "Receive") or desired is None:
            raise WSManFault(FaultCode.INVALID_SOAP_BODY)
        if (desired.text or "").split() != ["stdout"]:
            # The PowerShell plugin has only `stdout`; pypsrp raises KeyError on a stream it did not ask for.
            raise WSManFault(FaultCode.INVALID_SOAP_BODY, "The PowerShell plugin only offers the stdout stream.")
        command_id = desired.get("CommandId")
        wait = min(self.long_poll_seconds, max(request.operation_timeout * _LONG_POLL_SHARE, 0.5))
        result = engine.receive(
            _uuid(command_id) if command_id else None, payload_budget(request.max_envelope_size), wait
        )
        if not result.payloads and not result.done:
            raise WSManFault.timed_out()
        return soap.receive_response_body(result.payloads, command_id, result.done)

    def _signal(self, request: WSManRequest, engine: PoolShell) -> None:
        body = request.body
        if body is None or body.tag != soap.qname(NS_SHELL, "Signal"):
            raise WSManFault(FaultCode.INVALID_SOAP_BODY)
        command_id = body.get("CommandId")
        code = (soap.find_text(body, NS_SHELL, "Code") or "").strip()
        if not command_id:
            raise WSManFault(FaultCode.INVALID_SOAP_BODY, "A Signal needs a CommandId.")
        pipeline_id = _uuid(command_id)
        if code in soap.SignalCode.PS_CTRL_C or code == soap.SignalCode.CTRL_C:
            engine.stop_pipeline(pipeline_id)
        elif code == soap.SignalCode.TERMINATE:
            engine.terminate_pipeline(pipeline_id)
        else:
            raise WSManFault(FaultCode.INVALID_SOAP_BODY, f"Unsupported signal code {code!r}.")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WSManFault(FaultCode.INVALID_SOAP_BODY, "The stream data is not valid base64.") from None


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise WSManFault(FaultCode.INVALID_SELECTORS, f"{text!r} is not a valid CommandId.") from None
