"""The host inventory format: where each Hyper-V host's WinRM listener is and how to log on to it.

Defined once, here: the lab writes it (`python -m lab`), an operator writes it for real hosts, and the engine
reads it. This module imports nothing else of snlm, so the lab and the engine both use it without importing
each other; each wraps its errors in its own way (the engine's `activities.inventory` turns them into
configuration errors with a remedy). Credentials are only referenced, never written here (DESIGN.md invariant
1): each host names an environment variable (`password_env`) or a file (`password_file`) that holds the
password, and `HostEntry.resolve_password()` reads it when asked, as a `SecretStr` whose repr and str, and
every error of this module, keep the value out.

    version: 1
    defaults:                 # optional; merged under every host, so a large estate states things once
      auth: negotiate         # ntlm | negotiate | basic | credssp | kerberos
      username: CONTOSO\\svc-snlm
      password_env: SNLM_HOST_PASSWORD
    hosts:
      HV01:
        address: hv01.contoso.com
        scheme: https         # http (5985, message encryption) or https (5986, the default)
        port: 5986            # optional: 5985 / 5986 by scheme
        ca_file: /etc/snlm/contoso-ca.pem   # optional: validate against this CA instead of the system store
        cert_validation: true # the default; `false` turns TLS validation off, visibly and deliberately
        encryption: auto      # auto | always | never (Basic over http must say never)
        fqdn: hv01.contoso.com
        cluster: CL01
        migration_link_gbps: 10   # optional: the live-migration adapter's speed, for forecasts

Relative paths (`password_file`, `ca_file`) are relative to the inventory file. Every error is an
`InventoryError` whose message names the file, the host and the field (`inventory.yaml: hosts.HV01.port: ...`)
and never echoes a value; `Inventory.host()` raises `UnknownInventoryHost` (a `KeyError`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_PORTS",
    "AuthKind",
    "Encryption",
    "HostEntry",
    "Inventory",
    "InventoryError",
    "Scheme",
    "UnknownInventoryHost",
    "dump_inventory",
    "load_inventory",
    "load_inventory_as",
    "parse_inventory",
    "parse_inventory_as",
]

AuthKind = Literal["ntlm", "negotiate", "basic", "credssp", "kerberos"]
Scheme = Literal["http", "https"]
Encryption = Literal["auto", "always", "never"]

DEFAULT_PORTS: dict[str, int] = {"http": 5985, "https": 5986}

# An environment variable name as POSIX shells accept it.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Keys that would put a secret in the file itself; refused with a message that says what to use instead.
_INLINE_SECRET_KEYS = ("password", "secret", "pass")


class InventoryError(ValueError):
    """An inventory that cannot be used; never holds a secret.

    Attributes:
        source: the inventory file ("<inventory>" when parsed from memory).
        host: the host the error is about, when it is about one.
        field: the field, when one is to blame (`password_file`, `port`, ...).
        problem: what is wrong, without the location (`No such file or directory`, `not set`).
    """

    def __init__(self, message: str, *, source: str = "", host: str = "", field: str = "", problem: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.host = host
        self.field = field
        self.problem = problem or message


class UnknownInventoryHost(KeyError):
    """A host name the inventory does not list."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _refuse_inline_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        for key in _INLINE_SECRET_KEYS:
            if key in data:
                raise ValueError(
                    f"'{key}' is not allowed: the inventory never holds a password; name it with "
                    "password_env (an environment variable) or password_file (a file readable only by you)"
                )
    return data


class HostEntry(_Model):
    """One host: its WinRM listener, how to authenticate, and what the engine should know about it.

    `migration_link_gbps` (optional, > 0): the speed, in Gbit/s each way, of the adapter the host's live
    migrations cross. The engine reads it to forecast a campaign's durations; nothing connects with it.
    """

    name: str = Field(description="The host's NetBIOS name (the key under `hosts`).")
    address: Annotated[str, Field(min_length=1)]
    scheme: Scheme = "https"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    auth: AuthKind = "negotiate"
    username: Annotated[str, Field(min_length=1)] | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    # TLS certificates are validated by default (DESIGN.md invariant 7); turning it off must be written here.
    cert_validation: bool = True
    # pypsrp's message encryption: "auto" seals NTLM/Negotiate/CredSSP/Kerberos traffic over http; Basic over
    # http has nothing to seal with, so it must say "never" explicitly (the password then crosses in clear).
    encryption: Encryption = "auto"
    fqdn: str | None = None
    cluster: str | None = None
    migration_link_gbps: Annotated[float, Field(gt=0)] | None = None
    _source: str = PrivateAttr(default="<inventory>")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        return _refuse_inline_secrets(data)

    @field_validator("password_file", "ca_file")
    @classmethod
    def _relative_to_inventory(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Relative paths are relative to the inventory file, not to the reader's working directory.
        base = (info.context or {}).get("base_dir")
        if value is not None and not value.is_absolute() and isinstance(base, Path):
            return base / value
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HostEntry:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give either password_env or password_file, not both")
        if self.auth != "kerberos":
            # Kerberos may use the worker's own ticket or keytab; every other kind needs a user and password.
            if self.username is None:
                raise ValueError(f"username is required with auth {self.auth}")
            if self.password_env is None and self.password_file is None:
                raise ValueError(f"auth {self.auth} needs password_env or password_file")
        if self.password_env is not None and not _ENV_NAME.match(self.password_env):
            raise ValueError(f"password_env {self.password_env!r} is not an environment variable name")
        if self.auth == "basic" and self.scheme == "http" and self.encryption != "never":
            raise ValueError(
                "auth basic over http would send the password in clear: use scheme https, or set "
                "encryption: never to accept that"
            )
        if self.encryption == "always" and self.auth == "basic":
            raise ValueError("encryption always needs ntlm, negotiate, credssp or kerberos, not basic")
        if not self.cert_validation and self.ca_file is not None:
            raise ValueError("cert_validation false contradicts ca_file: remove one of them")
        return self

    @property
    def source(self) -> str:
        """The inventory file this entry was read from ("<inventory>" when parsed from memory)."""
        return self._source

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    @property
    def use_tls(self) -> bool:
        return self.scheme == "https"

    @property
    def tls_verify(self) -> bool | str:
        """What to verify the server certificate with: the CA file's path, True (the system store), or
        False when the inventory explicitly says `cert_validation: false`. Irrelevant over http."""
        if not self.cert_validation:
            return False
        return str(self.ca_file) if self.ca_file is not None else True

    @property
    def password_reference(self) -> str | None:
        """Where the password is (the variable's name or the file's path), None when no reference is given."""
        if self.password_env is not None:
            return self.password_env
        return str(self.password_file) if self.password_file is not None else None

    def _error(self, field: str, text: str, problem: str) -> InventoryError:
        return InventoryError(
            f"{self._source}: hosts.{self.name}.{field}: {text}",
            source=self._source,
            host=self.name,
            field=field,
            problem=problem,
        )

    def resolve_password(self) -> SecretStr:
        """Read the password from where the entry points; raise InventoryError naming the field (not the value)."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise self._error("password_env", f"environment variable {self.password_env} is not set", "not set")
            if not value:
                raise self._error("password_env", f"environment variable {self.password_env} is empty", "empty")
            return SecretStr(value)
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise self._error("password_file", f"cannot read {self.password_file}: {reason}", reason) from None
            # One line: a trailing newline written by an editor or `echo` is not part of the password.
            value = text.rstrip("\r\n")
            if not value:
                raise self._error("password_file", f"{self.password_file} is empty", "empty")
            return SecretStr(value)
        raise InventoryError(
            f"{self._source}: hosts.{self.name}: no password_env or password_file (auth {self.auth})",
            source=self._source,
            host=self.name,
            field="password_env",
            problem=f"no password_env or password_file (auth {self.auth})",
        )


class Inventory(_Model):
    version: Literal[1] = 1
    # A Mapping (read-only) so that a reader may narrow the entry type: the engine's inventory holds its own
    # HostEntry subclass, whose errors are the engine's.
    hosts: Annotated[Mapping[str, HostEntry], Field(min_length=1)]
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this inventory was read from, when it was read from one."""
        return self._source

    def find(self, name: str) -> HostEntry | None:
        """The entry for a host by NetBIOS name or FQDN, case-insensitively (an FQDN whose first label is a
        listed NetBIOS name also matches); None when the inventory does not list it."""
        wanted = name.strip().lower()
        for key, entry in self.hosts.items():
            if key.lower() == wanted or (entry.fqdn or "").lower() == wanted:
                return entry
        short = wanted.split(".", 1)[0]
        for key, entry in self.hosts.items():
            if key.lower() == short:
                return entry
        return None

    def host(self, name: str) -> HostEntry:
        """The entry for a host (as `find`); UnknownInventoryHost naming it when the inventory does not list it."""
        entry = self.find(name)
        if entry is None:
            where = str(self._source) if self._source is not None else "<inventory>"
            raise UnknownInventoryHost(f"host {name!r} is not in the inventory {where}")
        return entry


InventoryT = TypeVar("InventoryT", bound=Inventory)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top>"


def parse_inventory(raw: Any, *, source: str = "<inventory>", base_dir: Path | None = None) -> Inventory:
    """Validate an inventory already read from YAML (a mapping with `hosts`, optional `defaults`)."""
    return parse_inventory_as(Inventory, raw, source=source, base_dir=base_dir)


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory file; raise InventoryError naming the file, host and field."""
    return load_inventory_as(Inventory, path)


def parse_inventory_as(
    model: type[InventoryT], raw: Any, *, source: str = "<inventory>", base_dir: Path | None = None
) -> InventoryT:
    """`parse_inventory` into a subclass of Inventory (the engine's, whose errors are its own)."""
    if not isinstance(raw, dict):
        raise InventoryError(f"{source}: the inventory must be a mapping with 'hosts'", source=source)
    raw = dict(raw)
    defaults = raw.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        raise InventoryError(f"{source}: defaults: must be a mapping", source=source, field="defaults")
    try:
        _refuse_inline_secrets(defaults)
    except ValueError as exc:
        raise InventoryError(f"{source}: defaults: {exc}", source=source, field="defaults") from None
    hosts = raw.get("hosts")
    if isinstance(hosts, dict):
        merged: dict[str, Any] = {}
        for key, entry in hosts.items():
            if entry is not None and not isinstance(entry, dict):
                raise InventoryError(f"{source}: hosts.{key}: must be a mapping", source=source, host=str(key))
            merged[str(key)] = {**defaults, **(entry or {}), "name": str(key)}
        raw["hosts"] = merged
    try:
        inventory = model.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        # Only the location and the message: pydantic's default text would echo the input values.
        errors = exc.errors()
        lines = [f"{source}: {_location(item['loc'])}: {item['msg']}" for item in errors]
        first = tuple(errors[0]["loc"]) if errors else ()
        host = str(first[1]) if len(first) > 1 and first[0] == "hosts" else ""
        field = ".".join(str(part) for part in first[2:]) if host else ".".join(str(part) for part in first)
        raise InventoryError("\n".join(lines), source=source, host=host, field=field) from None
    if source != "<inventory>":
        inventory._source = Path(source)
    for entry in inventory.hosts.values():
        entry._source = source
    return inventory


def load_inventory_as(model: type[InventoryT], path: Path | str) -> InventoryT:
    """`load_inventory` into a subclass of Inventory (the engine's, whose errors are its own)."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InventoryError(f"{source}: cannot read: {reason}", source=str(source), problem=reason) from None
    except yaml.YAMLError as exc:
        # Only the problem and where: the exception's own text quotes the offending line, which could hold a
        # value someone should not have written there.
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InventoryError(f"{source}: not valid YAML: {problem}{where}", source=str(source)) from None
    return parse_inventory_as(model, raw, source=str(source), base_dir=source.resolve().parent)


def dump_inventory(inventory: Inventory, path: Path, *, header: str = "") -> None:
    """Write an inventory as YAML (it holds no secret, so the file is readable like any configuration)."""
    hosts: dict[str, dict[str, Any]] = {}
    for key, entry in inventory.hosts.items():
        hosts[key] = entry.model_dump(mode="json", exclude={"name"}, exclude_none=True)
    document = {"version": inventory.version, "hosts": hosts}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(comment + text, encoding="utf-8")
    # Atomic: a reader that loads the inventory while it is written sees the old file or the new one.
    tmp.replace(path)
