"""The engine's inventory loader: the lab's format, credentials by reference only, errors that name the
file, the host and the field, TLS validated unless the file says otherwise, never a secret in any text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.errors import ConfigurationError, UnknownHostError
from activities.inventory import InventoryError, load_inventory, parse_inventory
from config import inventory as config_inventory
from lab.lab import Lab
from lab.model.topology import DEFAULT_TOPOLOGY
from workflows import contracts as c

SECRET = "s3cr3t-Value-9f1c"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


def _no_secret(error: ConfigurationError) -> None:
    app = error.to_application_error()
    for text in (str(error), repr(error), repr(error.details), str(app), repr(app.details)):
        assert SECRET not in text


def test_load_with_defaults_relative_paths_and_file_password(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "svc.password").write_text(SECRET + "\n")
    path = _write(
        tmp_path,
        """
version: 1
defaults:
  auth: ntlm
  username: LAB\\svc-snlm
  password_file: secrets/svc.password
hosts:
  HV01:
    address: 127.0.0.1
    port: 50001
    scheme: https
    ca_file: ca.pem
    fqdn: hv01.lab.test
    cluster: CL01
  HV02:
    address: hv02.lab.test
    scheme: http
  HV03:
    address: hv03.lab.test
""",
    )
    inventory = load_inventory(path)
    assert inventory.source == path
    hv01 = inventory.host("hv01")
    assert hv01 is inventory.host("HV01.LAB.test")  # FQDN, case-insensitively
    assert hv01 is inventory.host("hv01.elsewhere.test")  # an FQDN whose first label is the NetBIOS name
    assert hv01.password_file == tmp_path / "secrets" / "svc.password"
    assert hv01.ca_file == tmp_path / "ca.pem"
    assert hv01.tls_verify == str(tmp_path / "ca.pem")
    assert hv01.effective_port == 50001
    assert hv01.cluster == "CL01"
    assert hv01.source == str(path)
    hv02 = inventory.host("HV02")
    assert hv02.effective_port == 5985
    assert not hv02.use_tls
    hv03 = inventory.host("HV03")
    assert hv03.scheme == "https"  # the default
    assert hv03.effective_port == 5986
    assert hv03.tls_verify is True  # the system store: validated by default
    secret = hv01.resolve_password()
    assert secret.get_secret_value() == SECRET
    for text in (repr(secret), str(secret), repr(hv01), str(inventory), repr(inventory)):
        assert SECRET not in text


def test_unknown_host_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts:\n  HV01: {address: h, username: u, password_env: X}\n")
    with pytest.raises(UnknownHostError) as caught:
        load_inventory(path).host("HV09")
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.error_type == c.UNKNOWN_HOST
    assert "'HV09'" in str(error)
    assert str(path) in str(error)
    assert "known: HV01" in error.remedy
    assert error.to_application_error().non_retryable


def test_cert_validation_off_must_be_written_and_is_exclusive_with_ca_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts:\n  HV01: {address: h, username: u, password_env: X, cert_validation: false}\n")
    assert load_inventory(path).host("HV01").tls_verify is False
    path = _write(
        tmp_path, "hosts:\n  HV01: {address: h, username: u, password_env: X, cert_validation: false, ca_file: c}\n"
    )
    with pytest.raises(InventoryError, match=r"hosts\.HV01: Value error, cert_validation false contradicts ca_file"):
        load_inventory(path)


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "hosts:\n  HV01: {address: h, auth: negotiate, username: LAB\\svc, password_env: SNLM_T}\n")
    entry = load_inventory(path).host("HV01")
    monkeypatch.delenv("SNLM_T", raising=False)
    with pytest.raises(InventoryError) as caught:
        entry.resolve_password()
    assert caught.value.reason == f"{path}: hosts.HV01.password_env: environment variable SNLM_T is not set"
    assert caught.value.details == {"inventory": str(path), "host": "HV01", "field": "password_env"}
    # What the worker's start-up check prints: the host, the field, and the problem without the location.
    assert (caught.value.host, caught.value.field, caught.value.problem) == ("HV01", "password_env", "not set")
    assert isinstance(caught.value, ConfigurationError)
    monkeypatch.setenv("SNLM_T", "")
    with pytest.raises(InventoryError, match="is empty"):
        entry.resolve_password()
    monkeypatch.setenv("SNLM_T", SECRET)
    assert entry.resolve_password().get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("host", "expected", "field"),
    [
        ("{address: h, username: u, password_env: X, port: 70000}", "hosts.HV01.port", "port"),
        ("{address: h, username: u, password_env: X, auth: digest}", "hosts.HV01.auth", "auth"),
        ("{address: h, username: u, password_env: X, scheme: ftp}", "hosts.HV01.scheme", "scheme"),
        ("{address: h, username: u, password_env: X, cert_validation: maybe}", "hosts.HV01.cert_validation",
         "cert_validation"),
        ("{address: h, username: u}", "hosts.HV01: Value error, auth negotiate needs password_env or password_file",
         ""),
        ("{address: h, password_env: X}", "hosts.HV01: Value error, username is required", ""),
        ("{address: h, username: u, password_env: X, password_file: f}", "not both", ""),
        ("{address: h, username: u, password_env: 'not a name'}", "is not an environment variable name", ""),
        ("{address: h, username: u, password_env: X, auth: basic, scheme: http}", "send the password in clear", ""),
        ("{username: u, password_env: X}", "hosts.HV01.address: Field required", "address"),
        ("{address: h, username: u, password_env: X, colour: blue}", "hosts.HV01.colour", "colour"),
        (f"{{address: h, username: u, password: {SECRET}}}", "never holds a password", ""),
    ],
)  # fmt: skip
def test_errors_name_file_host_and_field(tmp_path: Path, host: str, expected: str, field: str) -> None:
    path = _write(tmp_path, f"hosts:\n  HV01: {host}\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    error = caught.value
    assert str(error).startswith(f"{path}: ")
    assert expected in str(error)
    assert error.error_type == c.INVENTORY_INVALID
    assert error.details["inventory"] == str(path)
    assert error.details["host"] == "HV01"
    assert error.details.get("field", "") == field
    _no_secret(error)


def test_secrets_never_echoed_by_defaults_or_broken_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, f"defaults: {{password: {SECRET}}}\nhosts:\n  HV01: {{address: h}}\n")
    with pytest.raises(InventoryError, match="defaults: 'password' is not allowed") as caught:
        load_inventory(path)
    _no_secret(caught.value)
    path = _write(tmp_path, f"hosts:\n  HV01: {{address: h, password: '{SECRET}\n")
    with pytest.raises(InventoryError, match=r"not valid YAML: .* at line \d+, column \d+") as broken:
        load_inventory(path)
    _no_secret(broken.value)


def test_not_an_inventory(tmp_path: Path) -> None:
    for text, expected in [("[1, 2]", "must be a mapping"), ("hosts: {}", "hosts"), ("hosts: [", "not valid YAML")]:
        with pytest.raises(InventoryError, match=expected):
            load_inventory(_write(tmp_path, text))
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "nowhere.yaml")
    with pytest.raises(InventoryError, match=r"<inventory>: hosts\.HV01: must be a mapping"):
        parse_inventory({"hosts": {"HV01": "h"}})


def test_the_engine_reads_the_one_format_with_its_own_errors(tmp_path: Path) -> None:
    # The format is config.inventory's (the lab writes with it); the engine's classes only narrow its errors.
    path = _write(tmp_path, "hosts:\n  HV01: {address: h, username: u, password_file: absent}\n")
    inventory = load_inventory(path)
    assert isinstance(inventory, config_inventory.Inventory)
    entry = inventory.host("HV01")
    assert isinstance(entry, config_inventory.HostEntry)
    with pytest.raises(InventoryError) as caught:
        entry.resolve_password()
    assert caught.value.problem == "No such file or directory"
    assert caught.value.error_type == c.INVENTORY_INVALID
    assert caught.value.to_application_error().non_retryable


def test_kerberos_needs_no_password(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts:\n  HV01: {address: hv01.lab.test, auth: kerberos}\n")
    entry = load_inventory(path).host("HV01")
    with pytest.raises(InventoryError, match="no password_env or password_file"):
        entry.resolve_password()


@pytest.fixture(scope="module")
def written_by_the_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.from_topology(
        DEFAULT_TOPOLOGY.parent / "pair.yaml",
        workdir=tmp_path_factory.mktemp("inventory-lab"),
        scheme="https",
        auth={"HV-B": "basic"},
        control_port=None,
    )
    lab.start()
    yield lab
    lab.stop()


def test_reads_the_inventory_the_lab_writes(written_by_the_lab: Lab) -> None:
    lab = written_by_the_lab
    inventory = load_inventory(lab.inventory_path)
    assert set(inventory.hosts) == {"HV-A", "HV-B"}
    for name, entry in inventory.hosts.items():
        assert entry.address == "127.0.0.1"
        assert entry.port == lab.endpoint(name).https_port
        assert entry.username == lab.username
        assert entry.password_file == lab.password_file
        assert entry.tls_verify == str(lab.ca_file)
        assert entry.fqdn == f"{name.lower()}.lab.test"
    assert inventory.host("hv-b.lab.test").auth == "basic"
    password = inventory.host("HV-A").resolve_password().get_secret_value()
    assert password == lab.password_file.read_text().strip()
    assert password not in repr(inventory)
