"""Fixtures of the directory tests: settings that bind to the session's Samba domain, and fresh host pairs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from activities.directory import DirectorySettings, SecretRef
from tests.samba import SambaDomain
from workflows.contracts import DelegationMode

_serial = itertools.count(1)

SettingsFactory = Callable[..., DirectorySettings]


def _secret_file(domain: SambaDomain, name: str, value: str) -> Path:
    path = domain.root / "secrets" / name
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def settings(samba_domain: SambaDomain) -> SettingsFactory:
    """Build DirectorySettings for the session's domain: Administrator by default, overrides as keywords.

    `password=` writes another password to a secret file; `user="operator"` binds as the operator account.
    """

    def build(*, user: str = "admin", password: str | None = None, **overrides: Any) -> DirectorySettings:
        if user == "operator":
            bind_user, secret = samba_domain.operator_user, samba_domain.operator_password
        else:
            bind_user, secret = samba_domain.admin_user, samba_domain.admin_password
        secret_path = _secret_file(
            samba_domain, f"{user}-{next(_serial)}", password if password is not None else secret
        )
        values: dict[str, Any] = {
            "uris": [samba_domain.ldaps_uri],
            "base_dn": samba_domain.base_dn,
            "bind_user": bind_user,
            "bind_password": SecretRef(file=secret_path),
            "ca_file": samba_domain.ca_file,
            "tls_server_names": [samba_domain.dc_fqdn],
            "connect_timeout": 3.0,
            "operation_timeout": 5.0,
            "mode": DelegationMode.AUTO,
        }
        values.update(overrides)
        return DirectorySettings(**values)

    return build


@pytest.fixture
def new_host(samba_domain: SambaDomain) -> Callable[..., str]:
    """Create a fresh computer account (a unique name per call) and return its short name."""

    def create(prefix: str = "HV", **attributes: Any) -> str:
        name = f"{prefix}{next(_serial):04d}"
        samba_domain.add_computer(name, **attributes)
        return name

    return create
