"""Host inventory: where each Hyper-V host's WinRM listener is and how to log on to it.

The engine's worker reads this file to reach hosts (real ones or the lab's); the lab writes one for itself.
Credentials are only ever referenced, never written here (DESIGN.md invariant 1): each host names either
an environment variable (`password_env`) or a file (`password_file`) that holds the password, and
`HostEntry.resolve_password()` reads it at the moment of connecting, as a `SecretStr` whose repr, str and
every error message of this module keep the value out.

The format (YAML):

    version: 1
    defaults:                 # optional; merged under every host, so a large estate states things once
      auth: negotiate
      username: CONTOSO\\svc-snlm
      password_env: SNLM_HOST_PASSWORD
    hosts:
      HV01:
        address: hv01.contoso.com
        scheme: https         # http (5985, message encryption) or https (5986)
        port: 5986            # optional: 5985 / 5986 by scheme
        ca_file: /etc/snlm/contoso-ca.pem   # optional: validate against this CA instead of the system store
        fqdn: hv01.contoso.com
        cluster: CL01

Relative paths (`password_file`, `ca_file`) are relative to the inventory file. Errors name the file, the
host and the field (`inventory.yaml: hosts.HV01.port: ...`). This module depends on nothing else of the
lab, so the engine can use it as is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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

AuthKind = Literal["ntlm", "negotiate", "basic", "credssp", "kerberos"]
Scheme = Literal["http", "https"]
Encryption = Literal["auto", "always", "never"]

DEFAULT_PORTS: dict[str, int] = {"http": 5985, "https": 5986}

# An environment variable name as POSIX shells accept it.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Keys that would put a secret in the file itself; refused with a message that says what to use instead.
_INLINE_SECRET_KEYS = ("password", "secret", "pass")


class InventoryError(ValueError):
    """An inventory that cannot be used; the message names the file, the host and the field, never a secret."""


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
    """One host: its WinRM listener, how to authenticate, and what the engine should know about it."""

    name: str = Field(description="The host's NetBIOS name (the key under `hosts`).")
    address: Annotated[str, Field(min_length=1)]
    scheme: Scheme = "https"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    auth: AuthKind = "negotiate"
    username: Annotated[str, Field(min_length=1)] | None = None
    password_env: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    # pypsrp's message encryption: "auto" seals NTLM/Negotiate/CredSSP/Kerberos traffic over http; Basic over
    # http has nothing to seal with, so it must say "never" explicitly (the password then crosses in clear).
    encryption: Encryption = "auto"
    fqdn: str | None = None
    cluster: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        return _refuse_inline_secrets(data)

    @field_validator("password_file", "ca_file")
    @classmethod
    def _relative_to_inventory(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Relative paths are relative to the inventory file, not to the worker's working directory.
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
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    @property
    def use_tls(self) -> bool:
        return self.scheme == "https"

    def resolve_password(self) -> SecretStr:
        """Read the password from where the entry points; raise InventoryError naming the field (not the value)."""
        where = f"hosts.{self.name}"
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise InventoryError(f"{where}.password_env: environment variable {self.password_env} is not set")
            if not value:
                raise InventoryError(f"{where}.password_env: environment variable {self.password_env} is empty")
            return SecretStr(value)
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise InventoryError(
                    f"{where}.password_file: cannot read {self.password_file}: {exc.strerror or type(exc).__name__}"
                ) from None
            # One line: a trailing newline written by an editor or `echo` is not part of the password.
            value = text.rstrip("\r\n")
            if not value:
                raise InventoryError(f"{where}.password_file: {self.password_file} is empty")
            return SecretStr(value)
        raise InventoryError(f"{where}: no password_env or password_file (auth {self.auth})")


class Inventory(_Model):
    version: Literal[1] = 1
    hosts: Annotated[dict[str, HostEntry], Field(min_length=1)]
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this inventory was read from, when it was read from one."""
        return self._source

    def host(self, name: str) -> HostEntry:
        """The entry for a host by NetBIOS name or FQDN, case-insensitively; KeyError naming it otherwise."""
        wanted = name.lower()
        for key, entry in self.hosts.items():
            if key.lower() == wanted or (entry.fqdn or "").lower() == wanted:
                return entry
        short = wanted.split(".", 1)[0]
        for key, entry in self.hosts.items():
            if key.lower() == short:
                return entry
        raise KeyError(f"host {name!r} is not in the inventory{f' {self.source}' if self.source else ''}")


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top>"


def parse_inventory(raw: Any, *, source: str = "<inventory>", base_dir: Path | None = None) -> Inventory:
    """Validate an inventory already read from YAML (a mapping with `hosts`, optional `defaults`)."""
    if not isinstance(raw, dict):
        raise InventoryError(f"{source}: the inventory must be a mapping with 'hosts'")
    raw = dict(raw)
    defaults = raw.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        raise InventoryError(f"{source}: defaults: must be a mapping")
    try:
        _refuse_inline_secrets(defaults)
    except ValueError as exc:
        raise InventoryError(f"{source}: defaults: {exc}") from None
    hosts = raw.get("hosts")
    if isinstance(hosts, dict):
        merged: dict[str, Any] = {}
        for key, entry in hosts.items():
            if entry is not None and not isinstance(entry, dict):
                raise InventoryError(f"{source}: hosts.{key}: must be a mapping")
            merged[str(key)] = {**defaults, **(entry or {}), "name": str(key)}
        raw["hosts"] = merged
    try:
        inventory = Inventory.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        # Only the location and the message: pydantic's default text would echo the input values.
        lines = [f"{source}: {_location(item['loc'])}: {item['msg']}" for item in exc.errors()]
        raise InventoryError("\n".join(lines)) from None
    if source != "<inventory>":
        inventory._source = Path(source)
    return inventory


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory file; raise InventoryError naming the file, host and field."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InventoryError(f"{source}: cannot read: {exc.strerror or type(exc).__name__}") from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"{source}: not valid YAML: {exc}") from None
    return parse_inventory(raw, source=str(source), base_dir=source.resolve().parent)


def dump_inventory(inventory: Inventory, path: Path, *, header: str = "") -> None:
    """Write an inventory as YAML (it holds no secret, so the file is readable like any configuration)."""
    hosts: dict[str, dict[str, Any]] = {}
    for key, entry in inventory.hosts.items():
        data = entry.model_dump(mode="json", exclude={"name"}, exclude_none=True)
        hosts[key] = data
    document = {"version": inventory.version, "hosts": hosts}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(comment + text, encoding="utf-8")
    # Atomic: a worker that reads the inventory while the lab writes it sees the old file or the new one.
    tmp.replace(path)
