"""Every WinRM auth mode of the lab against an unmodified pypsrp client."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool
from requests_credssp.exceptions import NTStatusException

from lab.wsman import HostEndpoint, NtlmUserStore
from tests.lab.conftest import WIRE_PASSWORD, WIRE_USER

pytestmark = pytest.mark.timeout(60)

MODES = {
    # mode: (expected PipelineRequest.auth, transport)
    "basic": ("basic", "https"),
    "ntlm": ("ntlm", "http"),
    "negotiate": ("negotiate", "http"),
    "ntlm-https": ("ntlm", "https"),
    "credssp": ("credssp", "http"),
    "credssp-https": ("credssp", "https"),
}


def _identity(wsman) -> str:
    with wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Identity")
        output = ps.invoke()
        assert ps.state == 4
        return output[0]


@pytest.mark.parametrize("mode", list(MODES))
def test_auth_mode_runs_a_pipeline_as_the_user(wire_endpoint: HostEndpoint, wire_connect, mode: str) -> None:
    auth, transport = MODES[mode]
    assert _identity(wire_connect(wire_endpoint, mode)) == f"{WIRE_USER}|{auth}"
    # The endpoint records who ran, how, and over which transport (never the password).
    assert wire_endpoint.recent_identities[-1].user == WIRE_USER
    assert wire_endpoint.recent_identities[-1].auth == auth
    assert wire_endpoint.recent_identities[-1].transport == transport


def test_sealed_http_sessions_really_are_encrypted(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "ntlm")
    _identity(wsman)
    # pypsrp only seals when the server's answer was sealed too; its encryption helper was used.
    assert wsman.transport.encryption is not None
    assert wsman.transport.encryption.protocol == "application/HTTP-SPNEGO-session-encrypted"


@pytest.mark.parametrize("mode", ["basic", "ntlm", "negotiate", "ntlm-https"])
def test_wrong_password_is_an_authentication_error(wire_endpoint: HostEndpoint, wire_connect, mode: str) -> None:
    wsman = wire_connect(wire_endpoint, mode, password="not-the-password")
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()
    assert wire_endpoint.stats.snapshot()["auth_failures"] >= 1
    assert wire_endpoint.stats.snapshot()["pools_opened"] == 0


def test_unknown_user_is_an_authentication_error(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "ntlm", username="LAB\\nobody")
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()


@pytest.mark.parametrize("mode", ["credssp", "credssp-https"])
def test_credssp_wrong_password_is_logon_denied(wire_endpoint: HostEndpoint, wire_connect, mode: str) -> None:
    # As on Windows, a CredSSP v6 acceptor returns the NTSTATUS in a TSRequest; requests-credssp raises it
    # (SEC_E_LOGON_DENIED) instead of pypsrp's AuthenticationError.
    wsman = wire_connect(wire_endpoint, mode, password="not-the-password")
    with pytest.raises(NTStatusException) as info:
        RunspacePool(wsman).open()
    assert info.value.status == 0x8009030C


def test_basic_over_plain_http_is_refused(wire_endpoint: HostEndpoint) -> None:
    from pypsrp.wsman import WSMan

    wsman = WSMan(
        "127.0.0.1",
        port=wire_endpoint.http_port,
        ssl=False,
        auth="basic",
        encryption="never",
        username=WIRE_USER,
        password=WIRE_PASSWORD,
        connection_timeout=5,
    )
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()


def test_basic_over_http_works_when_unencrypted_is_allowed(wire_endpoint_factory) -> None:
    from pypsrp.wsman import WSMan

    endpoint = wire_endpoint_factory(name="hv-open", allow_unencrypted=True)
    wsman = WSMan(
        "127.0.0.1",
        port=endpoint.http_port,
        ssl=False,
        auth="basic",
        encryption="never",
        username=WIRE_USER,
        password=WIRE_PASSWORD,
    )
    assert _identity(wsman) == f"{WIRE_USER}|basic"


def test_ntlm_over_https_requires_the_channel_binding(wire_endpoint: HostEndpoint, wire_connect) -> None:
    # The lab acts as CbtHardeningLevel=Strict: an NTLM logon over HTTPS without the tls-server-end-point
    # binding is refused.
    wsman = wire_connect(wire_endpoint, "ntlm-https", negotiate_send_cbt=False)
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()


def test_disabled_auth_mode_is_refused(wire_endpoint_factory, wire_connect) -> None:
    endpoint = wire_endpoint_factory(name="hv-basic-only", auth_modes=frozenset({"basic"}))
    assert _identity(wire_connect(endpoint, "basic")).endswith("|basic")
    with pytest.raises(AuthenticationError):
        RunspacePool(wire_connect(endpoint, "ntlm")).open()


def test_https_certificate_is_validated(wire_endpoint: HostEndpoint, tmp_path) -> None:
    from pypsrp.wsman import WSMan

    from lab.wsman import make_tls_material

    other_ca: Any = str(make_tls_material(tmp_path, "elsewhere").ca_path)  # pypsrp annotates bool only
    wsman = WSMan(
        "localhost",
        port=wire_endpoint.https_port,
        auth="basic",
        username=WIRE_USER,
        password=WIRE_PASSWORD,
        cert_validation=other_ca,
        connection_timeout=5,
    )
    with pytest.raises(requests.exceptions.SSLError):
        RunspacePool(wsman).open()


def test_endpoints_with_different_accounts_coexist(wire_endpoint_factory, wire_connect) -> None:
    first = wire_endpoint_factory(name="hv-a", credentials={"LAB\\alice": "alice-pw"})
    second = wire_endpoint_factory(name="hv-b", credentials={"LAB\\bob": "bob-pw"})
    assert _identity(wire_connect(first, "ntlm", username="LAB\\alice", password="alice-pw")).startswith("LAB\\alice")
    assert _identity(wire_connect(second, "negotiate", username="LAB\\bob", password="bob-pw")).startswith("LAB\\bob")
    # Alice is in the process-wide NTLM file (for hv-a) but is not an account of hv-b.
    with pytest.raises(AuthenticationError):
        RunspacePool(wire_connect(second, "ntlm", username="LAB\\alice", password="alice-pw")).open()


def test_conflicting_passwords_in_one_process_are_rejected(wire_endpoint_factory) -> None:
    wire_endpoint_factory(name="hv-c", credentials={"LAB\\carol": "one"})
    with pytest.raises(ValueError, match="different passwords"):
        wire_endpoint_factory(name="hv-d", credentials={"LAB\\Carol": "two"})


def test_ntlm_user_file_holds_hashes_not_passwords(wire_endpoint: HostEndpoint) -> None:
    import os

    path = os.environ["NTLM_USER_FILE"]
    assert NtlmUserStore._path is not None
    assert str(NtlmUserStore._path) == path
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert "LAB\\admin:" in text
    assert WIRE_PASSWORD not in text
    assert os.stat(path).st_mode & 0o077 == 0
