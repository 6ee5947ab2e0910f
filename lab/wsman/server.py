"""The WinRM listener of one lab host: HTTP and HTTPS on 127.0.0.1, stdlib `http.server`, keep-alive.

Per connection: the HTTP handler owns a `ConnectionAuth` (NTLM / Negotiate / CredSSP contexts are bound to
the TCP connection). Per request: authenticate (401 + WWW-Authenticate otherwise), unseal the body when it
is `multipart/encrypted`, hand the envelope to `WSManService`, seal the answer the same way. Every response,
401s included, carries Content-Length so that keep-alive works (wire notes).

Fault hooks for the lab's fault injector: `refuse_connections()` (listeners closed, established connections
reset, reopened on the same ports after the window), `answer_delay` (a slow host) and `drop_all_shells()` (a
WinRM service restart).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lab.commands import CommandRunner
from lab.wsman.auth import AUTH_MODES, Authenticator, ConnectionAuth, CredentialTable, Identity, NtlmUserStore
from lab.wsman.encryption import EncryptionError, is_encrypted, unwrap, wrap
from lab.wsman.service import ServiceCounters, WinRMQuotas, WSManService
from lab.wsman.tls import TlsMaterial

log = logging.getLogger(__name__)

_MAX_BODY = 8 * 1024 * 1024  # far above pypsrp's 512000-byte envelopes plus sealing overhead
_IDLE_TIMEOUT = 120.0  # seconds an idle keep-alive connection is kept
_TLS_HANDSHAKE_TIMEOUT = 10.0
_SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"


@dataclass
class EndpointStats:
    """Counters of one endpoint, for benchmarks and assertions (read with `snapshot()`)."""

    requests: int = 0
    auth_failures: int = 0
    faults: int = 0
    pools_opened: int = 0
    commands_run: int = 0
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        """Increment counter `name`."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters."""
        with self._lock:
            return {
                "requests": self.requests,
                "auth_failures": self.auth_failures,
                "faults": self.faults,
                "pools_opened": self.pools_opened,
                "commands_run": self.commands_run,
                "connections": self.connections,
            }


@dataclass(frozen=True)
class RequestLog:
    """Who the last requests ran as: user and auth mode (no secrets), for tests and the control API."""

    user: str
    auth: str
    transport: str  # "http" or "https"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a long-polling handler must not block stop()
    allow_reuse_address = True  # rebind the same port after refuse_connections()

    def __init__(self, address: tuple[str, int], endpoint: HostEndpoint, tls: ssl.SSLContext | None) -> None:
        self.endpoint = endpoint
        self.tls = tls
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop connections or fail TLS are routine here; keep them out of stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    server: _Server

    def setup(self) -> None:
        self.auth_state = ConnectionAuth()
        # http.server writes the headers and the body separately; with Nagle's algorithm on, the body waits
        # for the client's delayed ACK (about 40 ms on Linux) on every answer, three times per command.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.tls is not None:
            # Handshake on the handler's thread, so a slow client cannot stall the accept loop.
            self.request.settimeout(_TLS_HANDSHAKE_TIMEOUT)
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        # Track the socket the connection really uses (wrap_socket detaches the plain one).
        self._tracked: socket.socket = self.request
        self.server.endpoint._track(self._tracked, add=True)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.endpoint._track(self._tracked, add=False)

    def do_POST(self) -> None:
        self.server.endpoint._handle(self)

    def do_GET(self) -> None:
        self._send_plain(405, [])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send_plain(self, status: int, auth_headers: list[str]) -> None:
        self.send_response(status)
        for value in auth_headers:
            self.send_header("WWW-Authenticate", value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Listener:
    """One listening socket and its serve thread."""

    def __init__(self, endpoint: HostEndpoint, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.server = _Server((host, port), endpoint, tls)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"wsman-{endpoint.name}-{port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class HostEndpoint:
    """A simulated Windows host's WinRM service: HTTP and HTTPS listeners in front of a `CommandRunner`.

    `credentials` maps `DOMAIN\\user` (or `user`) to its password. `tls` enables the HTTPS listener.
    `allow_unencrypted` is WinRM's AllowUnencrypted: Basic and unsealed bodies over plain HTTP.
    `long_poll_seconds` bounds how long an empty Receive waits before the timeout fault (pypsrp re-polls).
    `quotas` are WinRM's shell and command quotas (default: Windows' own, `WinRMQuotas()`).
    """

    def __init__(
        self,
        name: str,
        runner: CommandRunner,
        credentials: dict[str, str],
        *,
        tls: TlsMaterial | None = None,
        host: str = "127.0.0.1",
        http_port: int = 0,
        https_port: int = 0,
        auth_modes: frozenset[str] = AUTH_MODES,
        allow_unencrypted: bool = False,
        long_poll_seconds: float = 15.0,
        stop_grace_seconds: float = 2.0,
        quotas: WinRMQuotas | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.tls = tls
        self.stats = EndpointStats()
        self.answer_delay: float = 0.0
        self.recent_identities: list[RequestLog] = []
        self._requested_ports = (http_port, https_port)
        self._ports = (http_port, https_port)
        self._table = CredentialTable(credentials)
        self._authenticator = Authenticator(
            credentials,
            auth_modes,
            hostname=name,
            allow_unencrypted=allow_unencrypted,
            channel_binding=tls.channel_binding_application_data() if tls else None,
        )
        self.service = WSManService(
            name,
            runner,
            long_poll_seconds=long_poll_seconds,
            stop_grace_seconds=stop_grace_seconds,
            counters=ServiceCounters(
                pool_opened=lambda: self.stats.add("pools_opened"),
                pipeline_started=lambda: self.stats.add("commands_run"),
            ),
            quotas=quotas,
        )
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []
        self._connections: set[socket.socket] = set()
        self._reopen_timer: threading.Timer | None = None
        self._stopping = threading.Event()
        self._accepting = threading.Event()
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the listeners (ports 0 pick free ports; read them back from http_port / https_port)."""
        with self._lock:
            if self._started:
                return
            NtlmUserStore.register(self, self._table)
            self._stopping.clear()
            self._open_listeners(self._requested_ports)
            self._started = True
        log.info("lab host %s listening on http %d, https %d", self.name, self.http_port, self.https_port)

    def stop(self) -> None:
        """Close the listeners and connections, end every shell, forget this endpoint's NTLM users."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stopping.set()
            if self._reopen_timer is not None:
                self._reopen_timer.cancel()
                self._reopen_timer = None
            self._close_listeners()
            self._drop_connections()
        self.service.drop_all_shells()
        NtlmUserStore.unregister(self)

    def __enter__(self) -> HostEndpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def http_port(self) -> int:
        """The HTTP listener's port."""
        return self._ports[0]

    @property
    def https_port(self) -> int:
        """The HTTPS listener's port (0 without TLS material)."""
        return self._ports[1]

    # --- fault hooks ---------------------------------------------------------------------------------------

    def refuse_connections(self, seconds: float) -> None:
        """Close the listeners (new connections are refused) and reset established ones; reopen on the
        same ports by itself after `seconds`. A second call restarts the window."""
        with self._lock:
            if not self._started:
                raise RuntimeError("endpoint is not started")
            if self._reopen_timer is not None:
                self._reopen_timer.cancel()
            self._close_listeners()
            self._drop_connections()
            self._reopen_timer = threading.Timer(seconds, self._reopen)
            self._reopen_timer.daemon = True
            self._reopen_timer.start()
        log.info("lab host %s refuses connections for %.1f s", self.name, seconds)

    def accept_connections(self) -> None:
        """End a refuse window now: reopen the listeners on the same ports (no-op when open)."""
        with self._lock:
            if self._reopen_timer is not None:
                self._reopen_timer.cancel()
                self._reopen_timer = None
        self._reopen()

    def drop_all_shells(self) -> int:
        """A WinRM service restart: every shell is gone; later calls on it get fault 2150858843."""
        count = self.service.drop_all_shells()
        log.info("lab host %s dropped %d shells", self.name, count)
        return count

    def winrm_usage(self) -> dict[str, Any]:
        """The WinRM quotas and their use: open shells per user, Commands per open shell, refusals."""
        return self.service.usage()

    @property
    def accepting(self) -> bool:
        """Whether the listeners are open."""
        return self._accepting.is_set()

    def wait_until_accepting(self, timeout: float) -> bool:
        """Block until the listeners are open (e.g. after a refuse window); False on timeout."""
        return self._accepting.wait(timeout)

    # --- internals -----------------------------------------------------------------------------------------

    def _open_listeners(self, ports: tuple[int, int]) -> None:
        http = _Listener(self, self.host, ports[0], None)
        listeners = [http]
        https_port = 0
        if self.tls is not None:
            https = _Listener(self, self.host, ports[1], self.tls.server_context)
            listeners.append(https)
            https_port = https.port
        self._listeners = listeners
        self._ports = (http.port, https_port)
        self._accepting.set()

    def _close_listeners(self) -> None:
        self._accepting.clear()
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    def _drop_connections(self) -> None:
        for sock in list(self._connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._connections.clear()

    def _reopen(self) -> None:
        with self._lock:
            self._reopen_timer = None
            if not self._started or self._listeners:
                return
            try:
                self._open_listeners(self._ports)
            except OSError:
                log.exception("lab host %s could not reopen its listeners", self.name)
                return
        log.info("lab host %s accepts connections again", self.name)

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(sock)
                self.stats.add("connections")
            else:
                self._connections.discard(sock)

    def _handle(self, handler: _Handler) -> None:
        """One POST: authenticate, unseal, dispatch, seal, answer."""
        self.stats.add("requests")
        if self.answer_delay > 0 and self._stopping.wait(self.answer_delay):
            handler.close_connection = True
            return
        is_https = handler.server.tls is not None
        path = handler.path.split("?", 1)[0].rstrip("/").lower()
        length_text = handler.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY or handler.headers.get("Transfer-Encoding"):
            handler.close_connection = True
            handler._send_plain(413 if length > _MAX_BODY else 411, [])
            return
        body = handler.rfile.read(length) if length else b""
        if path != "/wsman":
            handler._send_plain(404, [])
            return

        conn = handler.auth_state
        auth_header = handler.headers.get("Authorization")
        identity: Identity | None
        extra_headers: list[str] = []
        if auth_header:
            outcome = self._authenticator.authenticate(auth_header, conn, is_https)
            if outcome.identity is None:
                if outcome.failed:
                    self.stats.add("auth_failures")
                handler._send_plain(401, outcome.headers)
                return
            identity, extra_headers = outcome.identity, outcome.headers
        elif conn.identity is not None:
            identity = conn.identity
        else:
            handler._send_plain(401, self._authenticator.challenge(is_https))
            return

        content_type = handler.headers.get("Content-Type", "")
        sealed = is_encrypted(content_type)
        if sealed:
            if conn.identity is None or conn.context is None:
                handler._send_plain(400, [])
                return
            try:
                envelope = unwrap(body, content_type, conn.context)
            except EncryptionError as exc:
                log.warning("lab host %s: %s", self.name, exc)
                handler.close_connection = True
                handler._send_plain(400, [])
                return
        elif not body:
            # pypsrp's empty first POST that sets up the security context for message encryption.
            handler._send_plain(200, extra_headers)
            return
        elif not is_https and not self._authenticator.allow_unencrypted:
            # AllowUnencrypted=false: a plaintext envelope over HTTP is refused.
            handler._send_plain(401, self._authenticator.challenge(is_https))
            return
        else:
            envelope = body

        self._remember(identity, "https" if is_https else "http")
        client_ip = handler.client_address[0]
        scheme = "https" if is_https else "http"
        url = f"{scheme}://{self.host}:{handler.server.server_address[1]}/wsman"
        status, answer = self.service.handle(envelope, identity, client_ip, url)
        if status != 200:
            self.stats.add("faults")
        if sealed:
            response_type, payload = wrap(answer, conn.context, conn.sealing_protocol)
        else:
            response_type, payload = _SOAP_CONTENT_TYPE, answer
        try:
            handler.send_response(status)
            for value in extra_headers:
                handler.send_header("WWW-Authenticate", value)
            handler.send_header("Content-Type", response_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            # The client went away (read timeout, reset): it will resend the same MessageID.
            handler.close_connection = True

    def _remember(self, identity: Identity, transport: str) -> None:
        with self._lock:
            self.recent_identities.append(RequestLog(identity.user, identity.mode, transport))
            del self.recent_identities[:-50]
