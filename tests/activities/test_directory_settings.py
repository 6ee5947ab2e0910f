"""The directory client reads its bind password by reference (config.directory) at the moment it binds, and an
unreadable reference is a configuration error naming the variable or file, before any connection is tried."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from activities.directory import DirectoryClient
from activities.errors import ConfigurationError
from config.directory import DirectorySettings, SecretRef
from workflows import contracts as c


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("where", ["env", "file"])
def test_an_unreadable_bind_password_is_a_configuration_error(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SNLM_TEST_UNSET_BIND_PASSWORD", raising=False)
    reference = (
        SecretRef(env="SNLM_TEST_UNSET_BIND_PASSWORD") if where == "env" else SecretRef(file=tmp_path / "absent")
    )
    settings = DirectorySettings(
        # A closed port: had the client tried to connect first, the error would say the directory is unreachable.
        uris=[f"ldaps://127.0.0.1:{_closed_port()}"],
        base_dn="DC=lab,DC=test",
        bind_user="svc-snlm@lab.test",
        bind_password=reference,
        connect_timeout=2.0,
    )
    with DirectoryClient(settings) as client, pytest.raises(ConfigurationError) as caught:
        client.read_computer("HV01")
    error = caught.value
    assert error.error_type == c.DIRECTORY_CONFIGURATION
    assert reference.describe() in str(error)
    assert ("not set" if where == "env" else "No such file or directory") in str(error)
    assert error.to_application_error().non_retryable
