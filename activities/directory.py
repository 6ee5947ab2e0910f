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

What the directory's answers and ldap3's exceptions mean for the engine (error class, type, remedy, and whether
the next DC is tried) is one table, activities/directory_errors.py; this module only says where it was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from pydantic import SecretStr
from temporalio import activity

from activities.directory_errors import (
    ResultCode,
    Rule,
    When,
    classify_exception,
    classify_result,
    match_exception,
    match_result,
    none_usable,
)
from activities.errors import ConfigurationError, SnlmError, TransientError, UnknownHostError
from config.directory import DirectorySettings, SecretRef, SecretUnavailable
from workflows.contracts import (
    DELEGATED_SERVICES,
    DIRECTORY_CONFIGURATION,
    DIRECTORY_CONFLICT,
    DIRECTORY_DELEGATION_REFUSED,
    DIRECTORY_NO_SUCH_COMPUTER,
    DIRECTORY_REPLICATION_PENDING,
    NOT_DELEGATED,
    TRUSTED_FOR_DELEGATION,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    ActivityName,
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


# -- settings ------------------------------------------------------------------------------------------------
def _bind_password(settings: DirectorySettings) -> SecretStr:
    """The bind account's password, read from its reference at the moment of binding."""
    try:
        return settings.bind_password.resolve()
    except SecretUnavailable as exc:
        raise ConfigurationError(
            f"The directory bind password is not available from {exc.reference} ({exc.reason}).",
            error_type=DIRECTORY_CONFIGURATION,
            remedy=f"set {exc.reference} to the bind account's password on the worker.",
        ) from None


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


class _Unusable(Exception):
    """A DC that cannot be used (a row of the error table marked `failover`): the next one is tried."""

    def __init__(self, error: SnlmError) -> None:
        super().__init__(str(error))
        self.error = error


def _refusal(rule: Rule, error: SnlmError) -> Exception:
    return _Unusable(error) if rule.failover else error


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
        """Connect, secure and bind to one DC; `_Unusable` when this DC cannot be used (try the next one)."""
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
                raise self._connect_failure(dict(conn.result or {}), When.CONNECT, uri)
            bound = conn.bind()
        except (ssl.SSLError, ldap_exc.LDAPException) as exc:
            raise self._connect_error(exc, uri) from None
        if bound:
            return conn
        result = dict(conn.result or {})
        conn.unbind()
        raise self._connect_failure(result, When.BIND, uri)

    def _connect_to(self, uris: Sequence[str]) -> tuple[ldap3.Connection, str]:
        password = _bind_password(self._settings)
        failures: list[SnlmError] = []
        for uri in uris:
            try:
                return self._bind(uri, password), uri
            except _Unusable as unusable:
                log.warning("directory %s unusable, trying the next one: %s", uri, unusable.error.reason)
                failures.append(unusable.error)
        raise none_usable(failures, uris)

    def _connection(self) -> ldap3.Connection:
        if self._conn is None or self._conn.closed:
            self._conn, self._uri = self._connect_to(self._settings.uris)
        return self._conn

    def _call(
        self, what: str, when: When, operation: Callable[[ldap3.Connection], bool]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run one LDAP operation (`what`, e.g. "read CN=HV01,..."); a transport failure drops the connection
        and raises the error table's answer (the DC stopped answering: retried)."""
        conn = self._connection()
        try:
            operation(conn)
        except ldap_exc.LDAPException as exc:
            uri = self._uri
            self.close()
            raise classify_exception(exc, when, self._context(uri, what=what), {"uri": uri}) from None
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

        what = f"look up the computer account of {name}"
        result, response = self._call(what, When.READ, search)
        # No object and more than one are answered below, in the words of a host lookup.
        if result.get("result") not in (
            ResultCode.SUCCESS,
            ResultCode.NO_SUCH_OBJECT,
            ResultCode.SIZE_LIMIT_EXCEEDED,
        ):
            raise self._map_result(result, what, name, When.READ)
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

        result, response = self._call(f"read {dn}", When.READ, search)
        if result.get("result") == ResultCode.NO_SUCH_OBJECT:
            return None
        if result.get("result") != ResultCode.SUCCESS:
            raise self._map_result(result, f"read {dn}", dn, When.READ)
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

    # -- errors: the table in activities/directory_errors.py ---------------------------------------------
    def _context(self, uri: str | None = None, **values: str) -> dict[str, Any]:
        """What the error table's messages and remedies may name: never the password, only where it is."""
        s = self._settings
        return {
            "uri": self._uri if uri is None else uri,
            "who": s.bind_user,
            "password_ref": s.bind_password.describe(),
            "ca": s.ca_file or "the system trust store",
            **values,
        }

    def _map_result(self, result: dict[str, Any], what: str, account: str, when: When) -> SnlmError:
        """The error for an operation's answer that is a failure (`what` says what was tried, on `account`)."""
        details = {"account": account, "uri": self._uri}
        return classify_result(result, when, self._context(what=what, account=account), details)

    def _connect_failure(self, result: dict[str, Any], when: When, uri: str) -> Exception:
        """A refused StartTLS or bind: `_Unusable` for a DC to skip (the next one is tried), else the error."""
        rule = match_result(result, when)
        details = {"account": self._settings.bind_user, "uri": uri}
        return _refusal(rule, rule.for_result(result, self._context(uri), details))

    def _connect_error(self, exc: BaseException, uri: str) -> Exception:
        """An exception while connecting to a DC: `_Unusable` for a DC to skip, else the error."""
        rule = match_exception(exc, When.CONNECT)
        return _refusal(rule, rule.for_exception(exc, self._context(uri), {"uri": uri}))

    # -- writing -----------------------------------------------------------------------------------------
    def _modify(self, account: _Account, changes: dict[str, Any], what: str) -> int:
        def modify(conn: ldap3.Connection) -> bool:
            return bool(conn.modify(account.dn, changes))

        result, _ = self._call(f"{what} on {account.sam}", When.WRITE, modify)
        code = result.get("result")
        # A value already there (adding) or gone (removing): someone changed the account since we read it.
        if code in (ResultCode.SUCCESS, ResultCode.ATTRIBUTE_OR_VALUE_EXISTS, ResultCode.NO_SUCH_ATTRIBUTE):
            return int(code or 0)
        raise self._map_result(result, f"{what} on {account.sam}", account.sam, When.WRITE)

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
            if self._modify(account, changes, "add delegation entries") == ResultCode.SUCCESS:
                log.info("delegation: added %s and uac bits %#x to %s", list(missing), bits, account.dn)
                return change
            # Someone added one of the values since we read the account: read again and add what is still missing.
            fresh = self._read_dn(account.dn)
            if fresh is None:
                raise self._map_result(
                    {"result": ResultCode.NO_SUCH_OBJECT}, "add delegation entries", account.sam, When.WRITE
                )
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
            if self._modify(account, changes, "remove delegation entries") == ResultCode.SUCCESS:
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


def _heartbeat(note: str) -> None:
    if activity.in_activity():
        activity.heartbeat(note)


# -- Temporal activities -------------------------------------------------------------------------------------
class DirectoryActivities:
    """The directory activities; synchronous (ldap3 blocks), so the worker runs them on a thread pool.

    Their SnlmErrors leave through the worker's error boundary (activities/boundary.py) as ApplicationErrors of
    their stable type, without the ldap3 exception chained.
    """

    def __init__(self, settings: DirectorySettings) -> None:
        self._settings = settings

    @activity.defn(name=ActivityName.ENSURE_DELEGATION)
    def ensure_delegation(self, request: EnsureDelegationInput) -> EnsureDelegationResult:
        with DirectoryClient(self._settings) as client:
            return client.ensure_delegation(request)

    @activity.defn(name=ActivityName.REVERT_DELEGATION)
    def revert_delegation(self, result: EnsureDelegationResult) -> RevertDelegationResult:
        with DirectoryClient(self._settings) as client:
            return client.revert_delegation(result)

    @activity.defn(name=ActivityName.READ_COMPUTER_DELEGATION)
    def read_computer_delegation(self, host: DelegationHost) -> ComputerDelegation:
        with DirectoryClient(self._settings) as client:
            return client.read_computer(host.name)
