"""Kerberos constrained delegation in Active Directory, over LDAP with ldap3 (synchronous: run on a thread pool).

Remote shared-nothing live migration with Kerberos needs each host's computer account to be allowed to
delegate to its peer's `cifs` and `Microsoft Virtual System Migration Service` (short name and FQDN), and on
Windows Server 2016 and later "use any authentication protocol" (TRUSTED_TO_AUTH_FOR_DELEGATION); see
reference/hyperv-facts.md, "Authentication and delegation". `DirectoryClient` reads those settings, ensures
them for a pair of hosts and reverts exactly what an ensure added. It touches only `msDS-AllowedToDelegateTo`
and that one userAccountControl bit of the two accounts (DESIGN.md invariant 7), with one modify per account so
that no account is ever half-written, and it never sets unconstrained delegation.

Behaviours of a real directory that shape this code (measured against Samba AD, reference/samba-ad-recipe.md):
adding a value that is already there fails the whole modify (20), and Samba's duplicate check is
case-sensitive while AD treats the attribute case-insensitively, so values are compared with `casefold` and
only the missing ones are sent; writing either delegation setting without SeEnableDelegationPrivilege is
refused with 50 even with write access to the object.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from temporalio import activity

from activities.errors import ConfigurationError, SnlmError, TransientError, UnknownError, UnknownHostError
from workflows.contracts import (
    DELEGATED_SERVICES,
    DIRECTORY_CONFIGURATION,
    DIRECTORY_CONFLICT,
    DIRECTORY_DELEGATION_REFUSED,
    DIRECTORY_INSUFFICIENT_RIGHTS,
    DIRECTORY_INVALID_CREDENTIALS,
    DIRECTORY_NO_SUCH_COMPUTER,
    DIRECTORY_REPLICATION_PENDING,
    DIRECTORY_TLS_FAILURE,
    DIRECTORY_UNREACHABLE,
    NOT_DELEGATED,
    TRUSTED_FOR_DELEGATION,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    ComputerDelegation,
    DelegationChange,
    DelegationHost,
    DelegationMode,
    EnsureDelegationInput,
    EnsureDelegationResult,
    RevertDelegationResult,
)

__all__ = [
    "DirectoryActivities",
    "DirectoryClient",
    "DirectorySettings",
    "SecretRef",
    "delegation_values",
    "mode_for_os",
]

log = logging.getLogger(__name__)

_ATTRIBUTES = [
    "sAMAccountName",
    "dNSHostName",
    "msDS-AllowedToDelegateTo",
    "servicePrincipalName",
    "userAccountControl",
    # Windows keeps it current on every joined computer ("10.0 (20348)"); `auto` mode reads it when the
    # request does not say which release a host runs.
    "operatingSystemVersion",
]
_FQDN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*$")
_CONFLICT_ATTEMPTS = 3

# LDAP result codes (RFC 4511) that this module tells apart.
_SUCCESS = 0
_NO_SUCH_ATTRIBUTE = 16
_ATTRIBUTE_OR_VALUE_EXISTS = 20
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
_INSUFFICIENT_ACCESS_RIGHTS = 50
_BUSY = 51
_UNAVAILABLE = 52
_UNWILLING_TO_PERFORM = 53
_STRONGER_AUTH_REQUIRED = 8


# -- settings ------------------------------------------------------------------------------------------------
class SecretRef(BaseModel):
    """Where a secret is, never the secret: an environment variable or a file (first line used)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret reference names exactly one of 'env' (a variable) or 'file' (a path)")
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env is not None else f"file {self.file}"

    def resolve(self) -> SecretStr:
        """The secret; a ConfigurationError naming the reference (never a value) when it is not there."""
        value: str | None
        if self.env is not None:
            value = os.environ.get(self.env)
        else:
            assert self.file is not None
            try:
                value = self.file.read_text(encoding="utf-8").splitlines()[0] if self.file.stat().st_size else ""
            except OSError:
                value = None
        if not value:
            raise ConfigurationError(
                f"The directory bind password is not available from {self.describe()}.",
                error_type=DIRECTORY_CONFIGURATION,
                remedy=f"set {self.describe()} to the bind account's password on the worker.",
            )
        return SecretStr(value)


class DirectorySettings(BaseModel):
    """How the worker reaches Active Directory. No secret here: the password is a `SecretRef`.

    Attributes:
        uris: domain controllers in order of preference (failover): `ldaps://dc1.corp.example` or
            `ldap://dc1.corp.example` (then StartTLS is required; plain LDAP is never used).
        base_dn: where computer accounts are searched, e.g. `DC=corp,DC=example`.
        bind_user: the account snlm binds as (UPN or DN); it needs write access to the computers and
            SeEnableDelegationPrivilege.
        bind_password: where its password is.
        ca_file: the CA bundle that signed the DCs' certificates (None: the system's trust store).
        validate_certificates: on by default; turning it off is for a lab only.
        tls_server_names: names the DCs' certificates may carry besides the URI's host (e.g. when the URI is
            an IP address).
        connect_timeout / operation_timeout: seconds, for the TCP+TLS connect and for every LDAP operation.
        mode: delegation mode when a request does not say.
        confirm_uris: the DCs the hosts use; a change is reported only once it is visible on each of them.
        replication_timeout / replication_poll_interval: how long to wait for that, and how often to look.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    uris: list[str] = Field(min_length=1)
    base_dn: str = Field(min_length=1)
    bind_user: str = Field(min_length=1)
    bind_password: SecretRef
    ca_file: Path | None = None
    validate_certificates: bool = True
    tls_server_names: list[str] = Field(default_factory=list)
    connect_timeout: float = Field(default=5.0, gt=0)
    operation_timeout: float = Field(default=15.0, gt=0)
    mode: DelegationMode = DelegationMode.AUTO
    confirm_uris: list[str] = Field(default_factory=list)
    replication_timeout: float = Field(default=120.0, ge=0)
    replication_poll_interval: float = Field(default=2.0, gt=0)

    @field_validator("uris", "confirm_uris")
    @classmethod
    def _ldap_uris(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
                raise ValueError(f"{uri!r}: a directory URI is ldaps://host[:port] or ldap://host[:port] (StartTLS)")
        return uris


# -- pure helpers --------------------------------------------------------------------------------------------
def mode_for_os(os_version: str) -> DelegationMode:
    """The delegation mode a Windows Server release needs: 2012 / 2012 R2 Kerberos only, 2016+ any protocol.

    Accepts a release ("2012R2", "2019"), a caption ("Microsoft Windows Server 2012 R2 Datacenter") or a build
    ("6.3.9600", "10.0.17763").
    """
    text = os_version.strip().casefold()
    if text.startswith("6."):
        return DelegationMode.KERBEROS_ONLY
    if text.startswith("10."):
        return DelegationMode.ANY_PROTOCOL
    year = re.search(r"\b20(\d\d)", text)
    if year is not None and int(year.group(1)) == 12:
        return DelegationMode.KERBEROS_ONLY
    if year is not None and int(year.group(1)) >= 16:
        return DelegationMode.ANY_PROTOCOL
    raise ConfigurationError(
        f"Cannot tell the delegation mode from the OS version {os_version!r}.",
        error_type=DIRECTORY_CONFIGURATION,
        remedy="give the host's Windows Server release (2012, 2012R2, 2016, ...) or set the mode explicitly.",
    )


def delegation_values(peer_name: str, peer_fqdn: str) -> tuple[str, ...]:
    """The `msDS-AllowedToDelegateTo` values that let a host delegate to `peer` for a live migration."""
    return tuple(f"{service}/{host}" for service in DELEGATED_SERVICES for host in (peer_name, peer_fqdn))


def _missing(wanted: Iterable[str], present: Iterable[str]) -> list[str]:
    have = {value.casefold() for value in present}
    out: list[str] = []
    for value in wanted:
        if value.casefold() not in have:
            have.add(value.casefold())
            out.append(value)
    return out


def _values(entry: dict[str, Any], name: str) -> list[str]:
    value = entry.get(name)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _change_dict(change: DelegationChange) -> dict[str, Any]:
    return {**asdict(change), "added_values": list(change.added_values)}


@dataclass
class _Account:
    dn: str
    sam: str
    dns_host_name: str
    delegate_to: list[str]
    spns: list[str]
    uac: int
    os_version: str = ""

    @property
    def short_name(self) -> str:
        return self.sam.removesuffix("$")

    def view(self) -> ComputerDelegation:
        return ComputerDelegation(
            name=self.short_name,
            account_dn=self.dn,
            dns_host_name=self.dns_host_name,
            allowed_to_delegate_to=tuple(self.delegate_to),
            service_principal_names=tuple(self.spns),
            user_account_control=self.uac,
        )


class _Unreachable(Exception):
    """A DC could not be used (connect, TLS or transport); `tls` says whether TLS was the reason."""

    def __init__(self, uri: str, reason: str, *, tls: bool) -> None:
        super().__init__(f"{uri}: {reason}")
        self.tls = tls


# -- the client ----------------------------------------------------------------------------------------------
class DirectoryClient:
    """A connection to the directory and the delegation operations on it. Use as a context manager.

    Args:
        settings: where the directory is and how to bind.
        after_account_written: called after each account's modify succeeds (a seam for tests that stop the
            directory between the two accounts of a pair).
    """

    def __init__(
        self,
        settings: DirectorySettings,
        *,
        after_account_written: Callable[[DelegationChange], None] | None = None,
    ) -> None:
        self._settings = settings
        self._after_account_written = after_account_written
        self._conn: ldap3.Connection | None = None
        self._uri = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(ldap_exc.LDAPException):  # already gone: nothing to release
                conn.unbind()

    @property
    def uri(self) -> str:
        """The DC this client is bound to ("" before the first operation)."""
        return self._uri

    # -- connecting --------------------------------------------------------------------------------------
    def _tls(self) -> ldap3.Tls:
        s = self._settings
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED if s.validate_certificates else ssl.CERT_NONE,
            ca_certs_file=str(s.ca_file) if s.ca_file is not None else None,
            valid_names=s.tls_server_names or None,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def _bind(self, uri: str, password: SecretStr) -> ldap3.Connection:
        """Connect, secure and bind to one DC; `_Unreachable` when this DC cannot be used."""
        s = self._settings
        server = ldap3.Server(uri, tls=self._tls(), get_info=ldap3.NONE, connect_timeout=s.connect_timeout)
        conn = ldap3.Connection(
            server,
            user=s.bind_user,
            password=password.get_secret_value(),
            authentication=ldap3.SIMPLE,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: it must be an int.
            receive_timeout=max(1, math.ceil(s.operation_timeout)),
            auto_referrals=False,
            raise_exceptions=False,
        )
        try:
            conn.open()
            if not server.ssl and not conn.start_tls():
                raise _Unreachable(uri, f"StartTLS refused: {conn.result.get('description')}", tls=True)
            bound = conn.bind()
        except (ssl.SSLError, ldap_exc.LDAPStartTLSError) as exc:
            raise _Unreachable(uri, f"TLS failed: {_brief(exc)}", tls=True) from None
        except ldap_exc.LDAPException as exc:
            raise _Unreachable(uri, _brief(exc), tls=_is_tls_failure(exc)) from None
        if bound:
            return conn
        result = dict(conn.result or {})
        conn.unbind()
        code = result.get("result")
        if code == _INVALID_CREDENTIALS:
            raise ConfigurationError(
                f"The directory refused the bind account {s.bind_user} on {uri}: invalid credentials.",
                error_type=DIRECTORY_INVALID_CREDENTIALS,
                remedy=f"check the account name and the password in {s.bind_password.describe()}, and that the "
                "account is enabled, not locked out and its password not expired.",
                details={"account": s.bind_user, "uri": uri},
            )
        if code in (_BUSY, _UNAVAILABLE):
            raise _Unreachable(uri, f"bind answered {result.get('description')}", tls=False)
        if code == _STRONGER_AUTH_REQUIRED:
            raise ConfigurationError(
                f"The directory {uri} requires a stronger authentication for {s.bind_user}.",
                error_type=DIRECTORY_CONFIGURATION,
                remedy="use ldaps:// or ldap:// (always with StartTLS); check the DC's LDAP signing policy.",
            )
        raise UnknownError(
            f"The directory {uri} refused the bind of {s.bind_user}: {result.get('description')} "
            f"({code}) {result.get('message', '')}".strip(),
            error_type="DirectoryBindFailed",
            details={"account": s.bind_user, "uri": uri, "result": code},
        )

    def _connect_to(self, uris: Sequence[str]) -> tuple[ldap3.Connection, str]:
        password = self._settings.bind_password.resolve()
        failures: list[_Unreachable] = []
        for uri in uris:
            try:
                return self._bind(uri, password), uri
            except _Unreachable as exc:
                log.warning("directory %s unusable, trying the next one: %s", uri, exc)
                failures.append(exc)
        reasons = "; ".join(str(f) for f in failures)
        if any(f.tls for f in failures):
            ca = self._settings.ca_file or "the system trust store"
            raise ConfigurationError(
                f"TLS with the directory failed: {reasons}.",
                error_type=DIRECTORY_TLS_FAILURE,
                remedy=f"make sure the DCs' certificates are signed by a CA in {ca}, carry the name used in the URI "
                "(or one listed in tls_server_names), and are valid now.",
                details={"uris": list(uris)},
            )
        raise TransientError(
            f"No directory server answered: {reasons}.",
            error_type=DIRECTORY_UNREACHABLE,
            remedy="check that a domain controller is running and reachable from the worker on the LDAP port.",
            details={"uris": list(uris)},
        )

    def _connection(self) -> ldap3.Connection:
        if self._conn is None or self._conn.closed:
            self._conn, self._uri = self._connect_to(self._settings.uris)
        return self._conn

    def _call(
        self, what: str, operation: Callable[[ldap3.Connection], bool]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run one LDAP operation; transport failures become a retryable error and drop the connection."""
        conn = self._connection()
        try:
            operation(conn)
        except ldap_exc.LDAPException as exc:
            uri = self._uri
            self.close()
            raise TransientError(
                f"The directory {uri} stopped answering while {what}: {_brief(exc)}.",
                error_type=DIRECTORY_UNREACHABLE,
                remedy="check that the domain controller is running; the step is retried.",
                details={"uri": uri},
            ) from None
        return dict(conn.result or {}), list(conn.response or [])

    # -- reading -----------------------------------------------------------------------------------------
    def _find(self, name: str) -> _Account:
        """The computer account of host `name` (short name, or FQDN when it has a dot)."""
        if "." in name:
            key = f"(dNSHostName={escape_filter_chars(name)})"
        else:
            key = f"(sAMAccountName={escape_filter_chars(name + '$')})"
        search_filter = f"(&(objectCategory=computer){key})"
        base = self._settings.base_dn

        def search(conn: ldap3.Connection) -> bool:
            return bool(conn.search(base, search_filter, ldap3.SUBTREE, attributes=_ATTRIBUTES, size_limit=2))

        result, response = self._call(f"looking up the computer account of {name}", search)
        code = result.get("result")
        if code not in (_SUCCESS, _NO_SUCH_OBJECT, 4):  # 4: sizeLimitExceeded, handled below
            raise self._map_result(result, f"look up the computer account of {name}", name)
        entries = [r for r in response if r.get("type") == "searchResEntry"]
        if not entries:
            raise UnknownHostError(
                f"There is no computer account for host {name!r} under {base}.",
                error_type=DIRECTORY_NO_SUCH_COMPUTER,
                remedy="check the host's name in the inventory, that it is joined to the domain, and the base DN.",
                details={"account": name, "base_dn": base},
            )
        if len(entries) > 1:
            raise ConfigurationError(
                f"More than one computer account matches host {name!r} under {base}.",
                error_type=DIRECTORY_CONFIGURATION,
                remedy="name the host by its short (NetBIOS) name, or narrow the base DN.",
                details={"account": name, "base_dn": base},
            )
        return self._account(entries[0])

    def _read_dn(self, dn: str) -> _Account | None:
        def search(conn: ldap3.Connection) -> bool:
            return bool(conn.search(dn, "(objectClass=computer)", ldap3.BASE, attributes=_ATTRIBUTES))

        result, response = self._call(f"reading {dn}", search)
        if result.get("result") == _NO_SUCH_OBJECT:
            return None
        if result.get("result") != _SUCCESS:
            raise self._map_result(result, f"read {dn}", dn)
        entries = [r for r in response if r.get("type") == "searchResEntry"]
        return self._account(entries[0]) if entries else None

    @staticmethod
    def _account(entry: dict[str, Any]) -> _Account:
        attrs = entry["attributes"]
        sam = _values(attrs, "sAMAccountName")
        dns = _values(attrs, "dNSHostName")
        uac = _values(attrs, "userAccountControl")
        os_version = _values(attrs, "operatingSystemVersion")
        return _Account(
            dn=str(entry["dn"]),
            sam=sam[0] if sam else "",
            dns_host_name=dns[0] if dns else "",
            delegate_to=_values(attrs, "msDS-AllowedToDelegateTo"),
            spns=_values(attrs, "servicePrincipalName"),
            uac=int(uac[0]) if uac else 0,
            os_version=os_version[0] if os_version else "",
        )

    def read_computer(self, name: str) -> ComputerDelegation:
        """The delegation settings of host `name`'s computer account (short name, or FQDN)."""
        return self._find(name).view()

    # -- errors ------------------------------------------------------------------------------------------
    def _map_result(self, result: dict[str, Any], what: str, account: str, *, delegation: bool = False) -> SnlmError:
        code = result.get("result")
        server_message = str(result.get("message") or "")
        details = {"account": account, "uri": self._uri, "result": code}
        who = self._settings.bind_user
        if code == _INSUFFICIENT_ACCESS_RIGHTS:
            if delegation and (
                "SeEnableDelegationPrivilege" in server_message or "SePrivEnableDelegation" in server_message
            ):
                return ConfigurationError(
                    f"{who} may not {what}: the directory requires SeEnableDelegationPrivilege to change "
                    "msDS-AllowedToDelegateTo or the protocol-transition bit, and the account lacks it. Nothing was "
                    "changed on that account.",
                    error_type=DIRECTORY_INSUFFICIENT_RIGHTS,
                    remedy=f'grant {who} SeEnableDelegationPrivilege ("Enable computer and user accounts to be '
                    'trusted for delegation", in the Default Domain Controllers Policy) or bind as an account that '
                    "has it, plus write access to the computer objects.",
                    details=details,
                )
            needs = (
                "write access to msDS-AllowedToDelegateTo and userAccountControl of the computer objects and "
                "SeEnableDelegationPrivilege"
                if delegation
                else "read access to the computer objects"
            )
            return ConfigurationError(
                f"{who} may not {what}: insufficient access rights ({server_message}). Nothing was changed on that "
                "account.",
                error_type=DIRECTORY_INSUFFICIENT_RIGHTS,
                remedy=f"give {who} {needs}.",
                details=details,
            )
        if code in (_BUSY, _UNAVAILABLE, _UNWILLING_TO_PERFORM, 51, 80):
            return TransientError(
                f"The directory {self._uri} could not {what} now: {result.get('description')} ({server_message}).",
                error_type=DIRECTORY_UNREACHABLE,
                remedy="the step is retried; if it persists, check the domain controller's health.",
                details=details,
            )
        if code == _NO_SUCH_OBJECT:
            return UnknownHostError(
                f"The computer account {account} no longer exists (while trying to {what}).",
                error_type=DIRECTORY_NO_SUCH_COMPUTER,
                remedy="check that the host is still joined to the domain.",
                details=details,
            )
        return UnknownError(
            f"The directory {self._uri} refused to {what}: {result.get('description')} ({code}) {server_message}",
            error_type="DirectoryOperationFailed",
            details=details,
        )

    # -- writing -----------------------------------------------------------------------------------------
    def _modify(self, account: _Account, changes: dict[str, Any], what: str) -> int:
        def modify(conn: ldap3.Connection) -> bool:
            return bool(conn.modify(account.dn, changes))

        result, _ = self._call(f"{what} on {account.sam}", modify)
        code = result.get("result")
        if code in (_SUCCESS, _ATTRIBUTE_OR_VALUE_EXISTS, _NO_SUCH_ATTRIBUTE):
            return int(code or 0)
        raise self._map_result(result, f"{what} on {account.sam}", account.sam, delegation=True)

    def _ensure_account(self, account: _Account, wanted: Sequence[str], protocol_transition: bool) -> DelegationChange:
        """One modify that adds the missing values and, if asked, the protocol-transition bit."""
        for _ in range(_CONFLICT_ATTEMPTS):
            missing = _missing(wanted, account.delegate_to)
            bits = (
                TRUSTED_TO_AUTH_FOR_DELEGATION
                if protocol_transition and not account.uac & TRUSTED_TO_AUTH_FOR_DELEGATION
                else 0
            )
            change = DelegationChange(account.sam, account.dn, tuple(missing), bits)
            if change.is_empty:
                return change
            changes: dict[str, Any] = {}
            if missing:
                changes["msDS-AllowedToDelegateTo"] = [(ldap3.MODIFY_ADD, missing)]
            if bits:
                changes["userAccountControl"] = [(ldap3.MODIFY_REPLACE, [str(account.uac | bits)])]
            if self._modify(account, changes, "add delegation entries") == _SUCCESS:
                log.info("delegation: added %s and uac bits %#x to %s", list(missing), bits, account.dn)
                return change
            # Someone added one of the values since we read the account: read again and add what is still missing.
            fresh = self._read_dn(account.dn)
            if fresh is None:
                raise self._map_result({"result": _NO_SUCH_OBJECT}, "add delegation entries", account.sam)
            account = fresh
        raise TransientError(
            f"{account.sam} kept changing while delegation entries were added to it.",
            error_type=DIRECTORY_CONFLICT,
            remedy="the step is retried; check whether another tool manages this account's delegation.",
            details={"account": account.sam},
        )

    def _revert_account(self, change: DelegationChange) -> DelegationChange:
        """Remove what `change` added that is still there; returns what was removed."""
        for _ in range(_CONFLICT_ATTEMPTS):
            account = self._read_dn(change.account_dn)
            if account is None:
                log.info("delegation: %s is gone, nothing to revert", change.account_dn)
                return DelegationChange(change.account, change.account_dn)
            ours = {value.casefold() for value in change.added_values}
            present = [value for value in account.delegate_to if value.casefold() in ours]
            remaining = [value for value in account.delegate_to if value.casefold() not in ours]
            # Clear the protocol-transition bit only when no delegation entry of anyone else still needs it.
            bits = change.uac_bits_set & account.uac if not remaining else 0
            removed = DelegationChange(change.account, change.account_dn, tuple(present), bits)
            if removed.is_empty:
                return removed
            changes: dict[str, Any] = {}
            if present:
                changes["msDS-AllowedToDelegateTo"] = [(ldap3.MODIFY_DELETE, present)]
            if bits:
                changes["userAccountControl"] = [(ldap3.MODIFY_REPLACE, [str(account.uac & ~bits)])]
            if self._modify(account, changes, "remove delegation entries") == _SUCCESS:
                log.info("delegation: removed %s and uac bits %#x from %s", present, bits, account.dn)
                return removed
        raise TransientError(
            f"{change.account} kept changing while delegation entries were removed from it.",
            error_type=DIRECTORY_CONFLICT,
            remedy="the step is retried; check whether another tool manages this account's delegation.",
            details={"account": change.account},
        )

    def ensure_delegation(self, request: EnsureDelegationInput) -> EnsureDelegationResult:
        """Let source and destination delegate to each other's cifs and migration services.

        Idempotent: adds only what is missing (case-insensitively) and returns exactly what it added. Refuses,
        before any write, an account with unconstrained delegation or marked "cannot be delegated". If the
        second account cannot be written, the first account's change is undone before the error is raised
        (and the error says whether that worked and, if not, what is left).
        """
        mode = request.mode or self._settings.mode
        hosts = (request.source, request.destination)
        accounts = [self._find(host.name) for host in hosts]
        if accounts[0].dn.casefold() == accounts[1].dn.casefold():
            raise ConfigurationError(
                f"Source and destination are the same computer account ({accounts[0].sam}).",
                error_type=DIRECTORY_CONFIGURATION,
                remedy="a migration needs two different hosts.",
            )
        for account in accounts:
            _refuse_unsafe(account)
        plans = []
        for index, (host, account) in enumerate(zip(hosts, accounts, strict=True)):
            peer_host, peer = hosts[1 - index], accounts[1 - index]
            peer_fqdn = peer_host.fqdn or peer.dns_host_name
            if not peer_fqdn or not _FQDN.match(peer_fqdn):
                raise ConfigurationError(
                    f"The FQDN of {peer.short_name} is unknown or invalid ({peer_fqdn!r}).",
                    error_type=DIRECTORY_CONFIGURATION,
                    remedy=f"set the host's fqdn in the inventory or the dNSHostName of {peer.sam}.",
                )
            host_mode = mode if mode != DelegationMode.AUTO else _mode_of(host, account)
            plans.append(
                (account, delegation_values(peer.short_name, peer_fqdn), host_mode == DelegationMode.ANY_PROTOCOL)
            )

        done: list[DelegationChange] = []
        for account, wanted, protocol_transition in plans:
            try:
                change = self._ensure_account(account, wanted, protocol_transition)
            except SnlmError as error:
                raise self._undo_after_failure(done, error) from None
            if not change.is_empty:
                done.append(change)
                if self._after_account_written is not None:
                    self._after_account_written(change)
        result = EnsureDelegationResult(tuple(done))
        self._confirm(result, present=True)
        return result

    def _undo_after_failure(self, done: list[DelegationChange], error: SnlmError) -> SnlmError:
        """Undo the accounts already written after a later one failed; say in the error what happened."""
        if not done:
            return error
        try:
            for change in reversed(done):
                self._revert_account(change)
        except SnlmError as undo_error:
            left = [_change_dict(change) for change in done]
            described = "; ".join(
                f"{c.account_dn}: values {list(c.added_values)}, userAccountControl bits {c.uac_bits_set:#x}"
                for c in done
            )
            error.details["left_in_directory"] = left
            error.details["undo_error"] = undo_error.error_type
            return _with_message(
                error,
                f"{error.reason} The change already made could not be undone ({undo_error.reason}); left in the "
                f"directory: {described}. Revert exactly these values, or run the ensure again and revert its result.",
            )
        error.details["undone"] = [_change_dict(change) for change in done]
        accounts = ", ".join(change.account for change in done)
        return _with_message(
            error, f"{error.reason} The change already made on {accounts} was undone: nothing is left."
        )

    def revert_delegation(self, result: EnsureDelegationResult) -> RevertDelegationResult:
        """Remove exactly what `result` added and is still there; values others added stay.

        The protocol-transition bit is cleared only when it was this change's and no other delegation entry is
        left on the account (another pair may still need it).
        """
        removed = tuple(self._revert_account(change) for change in reversed(result.changes))
        self._confirm(EnsureDelegationResult(result.changes), present=False)
        return RevertDelegationResult(tuple(r for r in removed if not r.is_empty))

    # -- replication ---------------------------------------------------------------------------------------
    def _confirm(self, result: EnsureDelegationResult, *, present: bool) -> None:
        """Wait until each DC the hosts use shows the change (or its absence, after a revert)."""
        s = self._settings
        if not s.confirm_uris or not result.changes:
            return
        deadline = time.monotonic() + s.replication_timeout
        for uri in s.confirm_uris:
            with DirectoryClient(s.model_copy(update={"uris": [uri], "confirm_uris": []})) as reader:
                while True:
                    lagging = [c.account for c in result.changes if not reader._shows(c, present=present)]
                    if not lagging:
                        break
                    if time.monotonic() >= deadline:
                        raise TransientError(
                            f"The change to {', '.join(lagging)} was made on {self._uri} but is not visible on {uri} "
                            f"after {s.replication_timeout:.0f}s.",
                            error_type=DIRECTORY_REPLICATION_PENDING,
                            remedy="wait for replication between the domain controllers (repadmin /syncall); the "
                            "step is retried.",
                            details={"uri": uri, "changes": [_change_dict(c) for c in result.changes]},
                        )
                    _heartbeat(f"waiting for replication to {uri}")
                    time.sleep(s.replication_poll_interval)

    def _shows(self, change: DelegationChange, *, present: bool) -> bool:
        account = self._read_dn(change.account_dn)
        if account is None:
            return not present
        have = {value.casefold() for value in account.delegate_to}
        if present:
            return all(v.casefold() in have for v in change.added_values) and (
                account.uac & change.uac_bits_set == change.uac_bits_set
            )
        return not any(v.casefold() in have for v in change.added_values)


def _mode_of(host: DelegationHost, account: _Account) -> DelegationMode:
    version = host.os_version or account.os_version
    if not version:
        raise ConfigurationError(
            f"The delegation mode is automatic but the OS version of {host.name} is not known: the request does "
            f"not say and {account.sam} has no operatingSystemVersion.",
            error_type=DIRECTORY_CONFIGURATION,
            remedy="give the host's OS version, or set the delegation mode (kerberos-only or any-protocol).",
            details={"account": host.name},
        )
    return mode_for_os(version)


def _refuse_unsafe(account: _Account) -> None:
    if account.uac & TRUSTED_FOR_DELEGATION:
        raise ConfigurationError(
            f"{account.sam} is trusted for unconstrained delegation; snlm configures constrained delegation only "
            "and changes nothing on such an account.",
            error_type=DIRECTORY_DELEGATION_REFUSED,
            remedy=f"in Active Directory Users and Computers, set {account.short_name}'s delegation to \"Trust this "
            'computer for delegation to specified services only" (or let snlm do it after clearing '
            "TRUSTED_FOR_DELEGATION), then retry.",
            details={"account": account.sam, "account_dn": account.dn},
        )
    if account.uac & NOT_DELEGATED:
        raise ConfigurationError(
            f'{account.sam} is marked "sensitive and cannot be delegated"; Kerberos live migration cannot work '
            "with it and snlm changes nothing.",
            error_type=DIRECTORY_DELEGATION_REFUSED,
            remedy=f'clear "Account is sensitive and cannot be delegated" (NOT_DELEGATED) on {account.short_name} '
            "and remove it from Protected Users, or migrate with CredSSP from the source host.",
            details={"account": account.sam, "account_dn": account.dn},
        )


def _with_message(error: SnlmError, message: str) -> SnlmError:
    """The same kind of error with a longer message (the class and type are kept)."""
    return type(error)(message, error_type=error.error_type, remedy=error.remedy, details=error.details)


def _is_tls_failure(exc: BaseException) -> bool:
    # ldap3 re-creates socket errors as LDAPSocketOpenError, sometimes mixed with the ssl error's class and
    # sometimes only with its text ("socket ssl wrapping error: certificate ... doesn't match ...").
    text = str(exc).casefold()
    return isinstance(exc, ssl.SSLError) or "ssl wrapping error" in text or "certificate" in text


def _brief(exc: BaseException) -> str:
    """An ldap3 exception as one line (ldap3's messages name hosts and reasons, never credentials)."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _heartbeat(note: str) -> None:
    if activity.in_activity():
        activity.heartbeat(note)


# -- Temporal activities -------------------------------------------------------------------------------------
class DirectoryActivities:
    """The directory activities; synchronous (ldap3 blocks), so the worker runs them on a thread pool.

    Every SnlmError leaves as an ApplicationError whose type is the error's stable name, without the ldap3
    exception chained (its text is already in the message; nothing else should travel in the history).
    """

    def __init__(self, settings: DirectorySettings) -> None:
        self._settings = settings

    @activity.defn(name="ensure_delegation")
    def ensure_delegation(self, request: EnsureDelegationInput) -> EnsureDelegationResult:
        try:
            with DirectoryClient(self._settings) as client:
                return client.ensure_delegation(request)
        except SnlmError as error:
            raise error.to_application_error() from None

    @activity.defn(name="revert_delegation")
    def revert_delegation(self, result: EnsureDelegationResult) -> RevertDelegationResult:
        try:
            with DirectoryClient(self._settings) as client:
                return client.revert_delegation(result)
        except SnlmError as error:
            raise error.to_application_error() from None

    @activity.defn(name="read_computer_delegation")
    def read_computer_delegation(self, host: DelegationHost) -> ComputerDelegation:
        try:
            with DirectoryClient(self._settings) as client:
                return client.read_computer(host.name)
        except SnlmError as error:
            raise error.to_application_error() from None
