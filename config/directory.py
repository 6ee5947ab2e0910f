"""How the worker reaches Active Directory, and where secrets are: references, never values.

Plain settings models: validating them reads nothing; `SecretRef.resolve()` reads the secret when asked and
raises `SecretUnavailable`, which names the reference and the reason but never a value. The engine turns that
into its own configuration error (activities/directory.py); the worker checks every reference at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from workflows.contracts import DelegationMode

__all__ = ["DirectorySettings", "SecretRef", "SecretUnavailable"]


class SecretUnavailable(ValueError):
    """A secret reference that cannot be read: `reference` says where (a variable or a file), `reason` why."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"{reference}: {reason}")
        self.reference = reference
        self.reason = reason


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
        """The secret; `SecretUnavailable` naming the reference (never a value) when it is not there."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailable(self.describe(), "not set")
        else:
            assert self.file is not None
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise SecretUnavailable(self.describe(), exc.strerror or type(exc).__name__) from None
            value = text.splitlines()[0] if text else ""
        if not value:
            raise SecretUnavailable(self.describe(), "empty")
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
