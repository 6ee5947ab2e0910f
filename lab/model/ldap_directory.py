"""The lab's read-only view of a real Active Directory: the delegation entries of its hosts' computer accounts.

With an `LdapDirectory` as `world.directory`, a simulated host decides a Kerberos live migration from what a
real domain controller holds (`msDS-AllowedToDelegateTo` and `userAccountControl` of its computer account,
sAMAccountName `NAME$`), so a rehearsal passes only when the directory holds what Windows would need. When
the host reads is lab.model.kerberos's business (first use, then only after `klist purge -li 0x3e7` or 15
simulated minutes); this module only answers the read.

This is the lab's own code: the lab imports nothing of the engine (activities/, workflows/), which has its
own directory client for writing. It only ever searches; it never modifies the directory.

Behaviour, decided here:

* Transport: `ldaps://` (TLS from the first byte) or `ldap://` with StartTLS, always with certificate
  validation (against `ca_file`, or the system's trust store when None); plain LDAP is never used.
  `tls_server_names` lists the names a DC's certificate may carry besides the URI's host (a URI by address).
* One connection, kept and reused under a lock; when it fails, it is dropped and the read is tried once more
  on a fresh connection (the URIs are tried in order: failover).
* A directory that cannot be read (no DC answers, TLS refused, bind refused, search refused) reads as "no
  such account": `computer()` returns None and logs a warning, so the host's Kerberos view is empty and a
  move fails with 0x8009030E, as a Windows host fails when its KDC cannot be asked (S4U2Proxy gets no
  ticket). The reason is kept in `last_error`; `check()` raises it instead (for a start-up check).
  After a failed connection the next `retry_after` real seconds answer None at once without trying again,
  because the read happens under the world's lock (a dead DC must not stall every host for its timeouts).
* The bind password is private: it is in no repr, log line or error message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars

from lab.model.directory import ComputerAccount

__all__ = ["LdapDirectory", "LdapDirectoryError"]

log = logging.getLogger(__name__)

_ATTRIBUTES = ["sAMAccountName", "msDS-AllowedToDelegateTo", "userAccountControl"]
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49


class LdapDirectoryError(Exception):
    """The directory could not be read; the message names the DC and the reason, never the password."""


class _Retryable(LdapDirectoryError):
    """A transport failure on an open connection: worth one more try on a fresh connection."""


class LdapDirectory:
    """Read access to computer accounts in Active Directory, for `world.directory` (lab.model.directory.Directory).

    Args:
        uris: one DC URI or several in order of preference (`ldaps://dc1.corp.example`, or
            `ldap://dc1.corp.example`, which is then secured with StartTLS).
        bind_user: the account to bind as (UPN or DN); reading delegation needs no more than a domain user.
        bind_password: its password (kept private).
        ca_file: the CA bundle that signed the DCs' certificates (None: the system's trust store).
        base_dn: where computer accounts are searched; None derives it from `domain` (`lab.test` ->
            `DC=lab,DC=test`) or, without a domain, from the DC's defaultNamingContext.
        domain: the DNS domain, used only to derive `base_dn`.
        tls_server_names: names the DCs' certificates may carry besides the URI's host.
        connect_timeout / operation_timeout: real seconds, for connect+TLS+bind and for each search.
        retry_after: real seconds during which, after a connection failed, reads answer None at once.
    """

    def __init__(
        self,
        uris: str | Sequence[str],
        *,
        bind_user: str,
        bind_password: str,
        ca_file: Path | str | None = None,
        base_dn: str | None = None,
        domain: str | None = None,
        tls_server_names: Sequence[str] = (),
        connect_timeout: float = 3.0,
        operation_timeout: float = 5.0,
        retry_after: float = 5.0,
    ) -> None:
        self._uris = [uris] if isinstance(uris, str) else list(uris)
        if not self._uris:
            raise ValueError("LdapDirectory needs at least one directory URI")
        for uri in self._uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise ValueError(f"{uri!r}: a directory URI is ldaps://host[:port] or ldap://host[:port] (StartTLS)")
        if not bind_user:
            raise ValueError("LdapDirectory needs a bind user")
        if connect_timeout <= 0 or operation_timeout <= 0 or retry_after < 0:
            raise ValueError("timeouts must be positive")
        self._bind_user = bind_user
        self.__password = bind_password
        self._ca_file = Path(ca_file) if ca_file is not None else None
        if base_dn is None and domain:
            base_dn = ",".join(f"DC={part}" for part in domain.strip(".").split("."))
        self._base_dn = base_dn
        self._tls_server_names = list(tls_server_names)
        self._connect_timeout = connect_timeout
        self._operation_timeout = operation_timeout
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._conn: ldap3.Connection | None = None
        self._uri = ""
        self._down_until = 0.0
        self._last_error: str | None = None
        self._connections_opened = 0

    def __repr__(self) -> str:
        return (
            f"LdapDirectory(uris={self._uris!r}, bind_user={self._bind_user!r}, base_dn={self._base_dn!r}, "
            f"ca_file={str(self._ca_file) if self._ca_file else None!r})"
        )

    # -- what callers see -------------------------------------------------------------------------------------
    @property
    def uris(self) -> list[str]:
        return list(self._uris)

    @property
    def bind_user(self) -> str:
        return self._bind_user

    @property
    def base_dn(self) -> str | None:
        """The search base (None until derived from the DC when neither base_dn nor domain was given)."""
        return self._base_dn

    @property
    def uri(self) -> str:
        """The DC of the current connection ("" when none is open)."""
        return self._uri

    @property
    def last_error(self) -> str | None:
        """Why the last read failed (None when it succeeded)."""
        return self._last_error

    @property
    def connections_opened(self) -> int:
        """How many connections were bound so far (one, while the first one keeps working)."""
        return self._connections_opened

    def computer(self, name: str) -> ComputerAccount | None:
        """The computer account of host `name` (NetBIOS name), or None when there is none or it cannot be read."""
        try:
            return self.read(name)
        except LdapDirectoryError as exc:
            log.warning(
                "directory: cannot read the computer account of %s, so it may delegate to nothing: %s", name, exc
            )
            return None

    def read(self, name: str) -> ComputerAccount | None:
        """Like `computer`, but raises LdapDirectoryError when the directory cannot be read."""
        with self._lock:
            if time.monotonic() < self._down_until and self._conn is None:
                assert self._last_error is not None
                raise LdapDirectoryError(f"{self._last_error} (not retried for {self._retry_after:g}s)")
            try:
                try:
                    account = self._search(name)
                except _Retryable as first:
                    log.info("directory: %s; reconnecting", first)
                    account = self._search(name)
            except LdapDirectoryError as exc:
                self._last_error = str(exc)
                raise
            self._last_error = None
            return account

    def check(self) -> None:
        """Connect, bind and resolve the base DN now; raises LdapDirectoryError saying why not."""
        with self._lock:
            try:
                self._connection()
            except LdapDirectoryError as exc:
                self._last_error = str(exc)
                raise
            self._last_error = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- connecting ------------------------------------------------------------------------------------------
    def _drop(self) -> None:
        conn, self._conn, self._uri = self._conn, None, ""
        if conn is not None:
            with contextlib.suppress(ldap_exc.LDAPException, OSError):  # already gone: nothing to release
                conn.unbind()

    def _tls(self) -> ldap3.Tls:
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(self._ca_file) if self._ca_file is not None else None,
            valid_names=self._tls_server_names or None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def _bind(self, uri: str) -> ldap3.Connection:
        server = ldap3.Server(uri, tls=self._tls(), get_info=ldap3.NONE, connect_timeout=self._connect_timeout)
        conn = ldap3.Connection(
            server,
            user=self._bind_user,
            password=self.__password,
            authentication=ldap3.SIMPLE,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: it must be an int.
            receive_timeout=max(1, math.ceil(self._operation_timeout)),
            auto_referrals=False,
            raise_exceptions=False,
        )
        try:
            conn.open()
            if not server.ssl and not conn.start_tls():
                raise LdapDirectoryError(f"{uri}: StartTLS refused ({conn.result.get('description')})")
            bound = conn.bind()
        except (ssl.SSLError, ldap_exc.LDAPException) as exc:
            with contextlib.suppress(ldap_exc.LDAPException, OSError):
                conn.unbind()
            raise LdapDirectoryError(f"{uri}: {_brief(exc)}") from None
        if not bound:
            result = dict(conn.result or {})
            with contextlib.suppress(ldap_exc.LDAPException, OSError):
                conn.unbind()
            if result.get("result") == _INVALID_CREDENTIALS:
                raise LdapDirectoryError(f"{uri}: the bind of {self._bind_user} was refused: invalid credentials")
            reason = f"{result.get('description')} ({result.get('result')})"
            raise LdapDirectoryError(f"{uri}: the bind of {self._bind_user} was refused: {reason}")
        return conn

    def _connection(self) -> ldap3.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._drop()
        failures: list[str] = []
        for uri in self._uris:
            try:
                conn = self._bind(uri)
            except LdapDirectoryError as exc:
                failures.append(str(exc))
                continue
            self._conn, self._uri = conn, uri
            self._connections_opened += 1
            try:
                if self._base_dn is None:
                    self._base_dn = self._naming_context(conn)
            except LdapDirectoryError:
                self._drop()
                raise
            self._down_until = 0.0
            log.info("directory: reading delegation from %s as %s under %s", uri, self._bind_user, self._base_dn)
            return conn
        self._down_until = time.monotonic() + self._retry_after
        raise LdapDirectoryError("no directory server could be used: " + "; ".join(failures))

    def _naming_context(self, conn: ldap3.Connection) -> str:
        try:
            conn.search("", "(objectClass=*)", ldap3.BASE, attributes=["defaultNamingContext"])
        except ldap_exc.LDAPException as exc:
            raise LdapDirectoryError(f"{self._uri}: reading the RootDSE failed: {_brief(exc)}") from None
        entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
        values = _values(entries[0]["attributes"], "defaultNamingContext") if entries else []
        if not values:
            raise LdapDirectoryError(f"{self._uri}: the RootDSE names no defaultNamingContext; give base_dn")
        return values[0]

    # -- reading -----------------------------------------------------------------------------------------------
    def _search(self, name: str) -> ComputerAccount | None:
        conn = self._connection()
        uri, base = self._uri, self._base_dn
        assert base is not None
        search_filter = f"(&(objectCategory=computer)(sAMAccountName={escape_filter_chars(name + '$')}))"
        try:
            conn.search(base, search_filter, ldap3.SUBTREE, attributes=_ATTRIBUTES, size_limit=2)
        except ldap_exc.LDAPException as exc:
            self._drop()
            raise _Retryable(f"{uri} stopped answering: {_brief(exc)}") from None
        result = dict(conn.result or {})
        code = result.get("result")
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            if code == _NO_SUCH_OBJECT:
                raise LdapDirectoryError(f"{uri}: the base DN {base} does not exist")
            raise LdapDirectoryError(
                f"{uri}: the search for {name}$ was refused: {result.get('description')} ({code}) "
                f"{result.get('message') or ''}".strip()
            )
        entries = [r for r in conn.response or [] if r.get("type") == "searchResEntry"]
        if not entries:
            return None
        if len(entries) > 1:
            raise LdapDirectoryError(f"{uri}: more than one computer account is named {name}$ under {base}")
        attrs = entries[0]["attributes"]
        uac = _values(attrs, "userAccountControl")
        return ComputerAccount(
            name=name.upper(),
            allowed_to_delegate_to=frozenset(_values(attrs, "msDS-AllowedToDelegateTo")),
            user_account_control=int(uac[0]) if uac else 0,
        )


def _values(attrs: dict[str, Any], name: str) -> list[str]:
    value = attrs.get(name)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _brief(exc: BaseException) -> str:
    """An exception as one line (ldap3's and ssl's messages name hosts and reasons, never credentials)."""
    # ldap3 sometimes wraps the ssl error's text in tuple reprs: ("('socket ssl wrapping error: ...',)",)
    text = re.sub(r"^[(\"' ]+|[)\"',]+$", "", " ".join(str(exc).split()))
    # ldap3 quotes the whole peer certificate when its names do not match: keep only the verdict.
    text = re.sub(r"certificate \{.*\} doesn't match", "the certificate doesn't match", text)
    return text[:300] or type(exc).__name__
