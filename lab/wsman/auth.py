"""HTTP authentication for the lab's WinRM listeners: Basic, NTLM, Negotiate and CredSSP.

The server side of NTLM, Negotiate (SPNEGO around NTLM; there is no KDC here, so no Kerberos) and CredSSP
is pyspnego. NTLM and CredSSP security contexts are bound to the TCP connection (wire notes), so the
per-connection state lives in `ConnectionAuth`, owned by the HTTP handler of that connection.

pyspnego's NTLM acceptor looks users up in the file named by the process-wide `NTLM_USER_FILE` variable.
`NtlmUserStore` keeps one such file for every endpoint of the process: it holds the union of all
endpoints' users (as NT/LM hashes in smbpasswd format, never the passwords), and each endpoint then checks
that the authenticated user is one of its own, so several lab hosts with different accounts coexist.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import hmac
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
import spnego.channel_bindings
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

from lab.wsman.encryption import CREDSSP_PROTOCOL, SPNEGO_PROTOCOL

log = logging.getLogger(__name__)

AUTH_MODES = frozenset({"basic", "ntlm", "negotiate", "credssp"})
_NTLM_SIGNATURE = b"NTLMSSP\x00"


def split_user(name: str) -> tuple[str, str]:
    """`DOMAIN\\user` -> ("DOMAIN", "user"); `user` or `user@REALM` -> ("", name)."""
    if "\\" in name:
        domain, user = name.split("\\", 1)
        return domain, user
    return "", name


class CredentialTable:
    """An endpoint's accounts, matched as Windows does: case-insensitive names, exact passwords."""

    def __init__(self, credentials: dict[str, str]) -> None:
        self._by_key: dict[tuple[str, str], tuple[str, str]] = {}
        for name, password in credentials.items():
            domain, user = split_user(name)
            self._by_key[(domain.upper(), user.upper())] = (name, password)

    def lookup(self, name: str) -> tuple[str, str] | None:
        """The canonical account name and password for `name`, or None."""
        domain, user = split_user(name)
        return self._by_key.get((domain.upper(), user.upper()))

    def verify(self, name: str, password: str) -> str | None:
        """The canonical account name when `password` is right for `name`, else None (constant time)."""
        found = self.lookup(name)
        expected = found[1] if found else "\x00invalid\x00"
        ok = hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8"))
        return found[0] if found and ok else None

    def items(self) -> list[tuple[str, str, str]]:
        """(domain, user, password) of every account."""
        return [(*split_user(name), password) for name, password in self._by_key.values()]


class NtlmUserStore:
    """The process-wide NTLM user file (`NTLM_USER_FILE`), shared by every endpoint of the process."""

    _lock = threading.Lock()
    _owners: dict[int, CredentialTable] = {}
    _path: Path | None = None

    @classmethod
    def register(cls, owner: object, table: CredentialTable) -> None:
        """Add `owner`'s accounts; raise ValueError if one conflicts with another endpoint's password."""
        with cls._lock:
            merged = cls._merged(extra=table)
            cls._owners[id(owner)] = table
            cls._write(merged)

    @classmethod
    def unregister(cls, owner: object) -> None:
        """Remove `owner`'s accounts (others keep working)."""
        with cls._lock:
            cls._owners.pop(id(owner), None)
            cls._write(cls._merged())

    @classmethod
    def _merged(cls, extra: CredentialTable | None = None) -> dict[tuple[str, str], tuple[str, str, str]]:
        merged: dict[tuple[str, str], tuple[str, str, str]] = {}
        tables = [*cls._owners.values(), *([extra] if extra else [])]
        for table in tables:
            for domain, user, password in table.items():
                key = (domain.upper(), user.upper())
                if key in merged and merged[key][2] != password:
                    raise ValueError(
                        f"account {domain}\\{user} is defined with different passwords on two endpoints of "
                        "this process; NTLM_USER_FILE is process-wide and can hold only one"
                    )
                merged[key] = (domain, user, password)
        return merged

    @classmethod
    def _write(cls, merged: dict[tuple[str, str], tuple[str, str, str]]) -> None:
        if cls._path is None:
            fd, name = tempfile.mkstemp(prefix="snlm-lab-ntlm-", suffix=".users")
            os.close(fd)
            cls._path = Path(name)
            atexit.register(cls._path.unlink, missing_ok=True)
        lines = []
        for domain, user, password in merged.values():
            # smbpasswd format (USER:UID:LM:NT:FLAGS:LCT): hashes, so no password is written to disk.
            principal = f"{domain}\\{user}" if domain else user
            lm = binascii.hexlify(lmowfv1(password)).decode().upper()
            nt = binascii.hexlify(ntowfv1(password)).decode().upper()
            lines.append(f"{principal}:1000:{lm}:{nt}:[U]:LCT-00000000\n")
        tmp = cls._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(tmp, cls._path)
        os.environ["NTLM_USER_FILE"] = str(cls._path)


@dataclass(frozen=True)
class Identity:
    """Who a request runs as: `DOMAIN\\user` and the auth mode (basic, ntlm, negotiate, credssp)."""

    user: str
    mode: str


@dataclass
class ConnectionAuth:
    """Authentication state bound to one TCP connection."""

    context: Any = None  # pyspnego context of an unfinished or finished handshake
    mode: str = ""
    identity: Identity | None = None  # set once an NTLM/Negotiate/CredSSP handshake completed
    sealing_protocol: str = ""

    def reset(self) -> None:
        """Forget the connection's security context (a new handshake started or one failed)."""
        self.context = None
        self.mode = ""
        self.identity = None
        self.sealing_protocol = ""


@dataclass
class AuthOutcome:
    """The result of checking a request's Authorization header.

    `identity` is set when the request may proceed; otherwise answer 401 with `headers`.
    `headers` holds WWW-Authenticate values to send in either case (a final server token on success).
    """

    identity: Identity | None
    headers: list[str] = field(default_factory=list)
    failed: bool = False  # wrong credentials (as opposed to a handshake still in progress)


class Authenticator:
    """Checks Authorization headers for one endpoint."""

    def __init__(
        self,
        credentials: dict[str, str],
        auth_modes: frozenset[str],
        *,
        hostname: str,
        allow_unencrypted: bool = False,
        channel_binding: bytes | None = None,
    ) -> None:
        unknown = auth_modes - AUTH_MODES
        if unknown:
            raise ValueError(f"unknown auth modes: {sorted(unknown)}")
        self.table = CredentialTable(credentials)
        self.modes = auth_modes
        self.hostname = hostname
        self.allow_unencrypted = allow_unencrypted
        self._channel_binding = channel_binding

    def challenge(self, is_https: bool) -> list[str]:
        """The WWW-Authenticate values of a 401 that starts authentication."""
        values = []
        if self.modes & {"ntlm", "negotiate"}:
            values.append("Negotiate")
        if "basic" in self.modes and (is_https or self.allow_unencrypted):
            values.append('Basic realm="WSMAN"')
        if "credssp" in self.modes:
            values.append("CredSSP")
        return values

    def authenticate(self, header: str, conn: ConnectionAuth, is_https: bool) -> AuthOutcome:
        """Process one Authorization header on connection `conn`."""
        scheme, _, param = header.strip().partition(" ")
        scheme_l = scheme.lower()
        try:
            token = base64.b64decode(param.strip(), validate=True) if param.strip() else b""
        except (binascii.Error, ValueError):
            return self._fail(conn, is_https, "malformed Authorization header")
        if scheme_l == "basic":
            return self._basic(token, is_https)
        if scheme_l in ("negotiate", "ntlm"):
            return self._negotiate(scheme, token, conn, is_https)
        if scheme_l == "credssp":
            return self._credssp(token, conn, is_https)
        return self._fail(conn, is_https, f"unsupported scheme {scheme!r}")

    def _fail(self, conn: ConnectionAuth, is_https: bool, reason: str) -> AuthOutcome:
        # The reason never holds secrets: user names at most.
        log.info("authentication failed on %s: %s", self.hostname, reason)
        conn.reset()
        return AuthOutcome(identity=None, headers=self.challenge(is_https), failed=True)

    def _basic(self, token: bytes, is_https: bool) -> AuthOutcome:
        conn = ConnectionAuth()
        if "basic" not in self.modes:
            return self._fail(conn, is_https, "basic is not enabled")
        if not is_https and not self.allow_unencrypted:
            # WinRM refuses Basic over HTTP unless AllowUnencrypted is set: the password would be in clear.
            return self._fail(conn, is_https, "basic over unencrypted HTTP is refused")
        user, sep, password = token.decode("utf-8", "replace").partition(":")
        account = self.table.verify(user, password) if sep else None
        if account is None:
            return self._fail(conn, is_https, f"basic: bad user name or password for {user!r}")
        return AuthOutcome(identity=Identity(account, "basic"))

    def _negotiate(self, scheme: str, token: bytes, conn: ConnectionAuth, is_https: bool) -> AuthOutcome:
        raw_ntlm = token.startswith(_NTLM_SIGNATURE)
        mode = "ntlm" if raw_ntlm or scheme.lower() == "ntlm" else "negotiate"
        if mode not in self.modes:
            return self._fail(conn, is_https, f"{mode} is not enabled")
        # A first-leg token (NTLM NEGOTIATE, type 1; or an SPNEGO NegTokenInit, an [APPLICATION 0] 0x60)
        # starts a new context; anything else continues the connection's handshake.
        first_leg = (raw_ntlm and token[8:9] == b"\x01") or token[:1] == b"\x60"
        if first_leg or conn.context is None or conn.mode not in ("ntlm", "negotiate"):
            conn.reset()
            bindings = None
            if is_https and self._channel_binding:
                # tls-server-end-point channel binding (RFC 5929): pypsrp sends it by default over HTTPS.
                bindings = spnego.channel_bindings.GssChannelBindings(application_data=self._channel_binding)
            conn.context = spnego.server(
                hostname=self.hostname,
                service="HTTP",
                channel_bindings=bindings,
                protocol="ntlm" if raw_ntlm else "negotiate",
            )
            conn.mode = mode
        try:
            out = conn.context.step(token)
        except Exception as exc:  # pyspnego raises SpnegoError subclasses and a few others on bad input
            return self._fail(conn, is_https, f"{mode}: {type(exc).__name__}")
        headers = [f"{scheme} {base64.b64encode(out).decode('ascii')}"] if out else []
        if not conn.context.complete:
            return AuthOutcome(identity=None, headers=headers or [scheme])
        principal = conn.context.client_principal or ""
        found = self.table.lookup(principal)
        if found is None:
            # Known to the process-wide NTLM file but not an account of this host.
            return self._fail(conn, is_https, f"{mode}: {principal!r} is not an account of this host")
        conn.identity = Identity(found[0], conn.mode)
        conn.sealing_protocol = SPNEGO_PROTOCOL
        return AuthOutcome(identity=conn.identity, headers=headers)

    def _credssp(self, token: bytes, conn: ConnectionAuth, is_https: bool) -> AuthOutcome:
        if "credssp" not in self.modes:
            return self._fail(conn, is_https, "credssp is not enabled")
        if conn.context is None or conn.mode != "credssp" or conn.identity is not None:
            conn.reset()
            conn.context = spnego.server(hostname=self.hostname, service="HTTP", protocol="credssp")
            conn.mode = "credssp"
        try:
            out = conn.context.step(token)
        except Exception as exc:
            return self._fail(conn, is_https, f"credssp: {type(exc).__name__}")
        if conn.context.get_extra_info("auth_stage") == "Authentication failure":
            # pyspnego answers a failed inner NTLM logon with a TSRequest carrying the NTSTATUS
            # (CredSSP v3+ errorCode), as Windows does; the client raises it as NTStatusException.
            log.info("authentication failed on %s: credssp: inner logon failed", self.hostname)
            conn.reset()
            encoded = base64.b64encode(out or b"").decode("ascii")
            return AuthOutcome(identity=None, headers=[f"CredSSP {encoded}"], failed=True)
        if not conn.context.complete:
            # requests-credssp reads the token with `CredSSP ([^,\s]*)$`: one value, nothing after it.
            return AuthOutcome(identity=None, headers=[f"CredSSP {base64.b64encode(out or b'').decode('ascii')}"])
        delegated = conn.context.get_extra_info("client_credential")
        domain = getattr(delegated, "domain_name", "") or ""
        user = getattr(delegated, "username", "") or ""
        password = getattr(delegated, "password", "") or ""
        name = f"{domain}\\{user}" if domain else user
        account = self.table.verify(name, password)
        principal = conn.context.client_principal or ""
        found = self.table.lookup(principal)
        if account is None or found is None or found[0] != account:
            # The delegated credential must be the authenticated account's, and valid on this host.
            return self._fail(conn, is_https, f"credssp: delegated credential for {name!r} rejected")
        conn.identity = Identity(account, "credssp")
        conn.sealing_protocol = CREDSSP_PROTOCOL
        headers = [f"CredSSP {base64.b64encode(out).decode('ascii')}"] if out else []
        return AuthOutcome(identity=conn.identity, headers=headers)
