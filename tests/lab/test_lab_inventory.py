"""The inventory loader: credentials by reference only, errors that name file, host and field, never a secret."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from activities.inventory import load_inventory as engine_load_inventory
from config import inventory as config_inventory
from lab.inventory import Inventory, InventoryError, dump_inventory, load_inventory
from lab.lab import Lab
from tests.lab.conftest import TOPOLOGIES, lab_wsman

SECRET = "s3cr3t-Value-9f1c"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


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
""",
    )
    inventory = load_inventory(path)
    assert inventory.source == path
    hv01 = inventory.host("hv01")
    assert hv01 is inventory.host("HV01.lab.test")
    assert hv01.username == "LAB\\svc-snlm"
    assert hv01.password_file == tmp_path / "secrets" / "svc.password"
    assert hv01.ca_file == tmp_path / "ca.pem"
    assert hv01.effective_port == 50001
    assert hv01.use_tls
    assert hv01.cluster == "CL01"
    hv02 = inventory.host("HV02")
    assert hv02.effective_port == 5985
    assert not hv02.use_tls
    secret = hv01.resolve_password()
    assert secret.get_secret_value() == SECRET  # the trailing newline is not part of it
    for text in (repr(secret), str(secret), repr(hv01), str(inventory), repr(inventory)):
        assert SECRET not in text
    with pytest.raises(KeyError, match="HV09"):
        inventory.host("HV09")


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        """
hosts:
  HV01: {address: 127.0.0.1, auth: negotiate, username: LAB\\svc, password_env: SNLM_TEST_PW}
""",
    )
    entry = load_inventory(path).host("HV01")
    monkeypatch.delenv("SNLM_TEST_PW", raising=False)
    with pytest.raises(
        InventoryError, match=r"hosts\.HV01\.password_env: environment variable SNLM_TEST_PW is not set"
    ):
        entry.resolve_password()
    monkeypatch.setenv("SNLM_TEST_PW", SECRET)
    assert entry.resolve_password().get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("{address: h, username: u, password_env: X, port: 70000}", "hosts.HV01.port"),
        ("{address: h, username: u, password_env: X, auth: digest}", "hosts.HV01.auth"),
        ("{address: h, username: u, password_env: X, scheme: ftp}", "hosts.HV01.scheme"),
        ("{address: h, username: u}", "hosts.HV01: Value error, auth negotiate needs password_env or password_file"),
        ("{address: h, password_env: X}", "hosts.HV01: Value error, username is required"),
        ("{address: h, username: u, password_env: X, password_file: f}", "not both"),
        ("{address: h, username: u, password_env: 'not a name'}", "is not an environment variable name"),
        ("{address: h, username: u, password_env: X, auth: basic, scheme: http}", "send the password in clear"),
        ("{username: u, password_env: X}", "hosts.HV01.address: Field required"),
        ("{address: h, username: u, password_env: X, colour: blue}", "hosts.HV01.colour"),
        (f"{{address: h, username: u, password: {SECRET}}}", "never holds a password"),
    ],
)
def test_errors_name_file_host_and_field(tmp_path: Path, host: str, expected: str) -> None:
    path = _write(tmp_path, f"hosts:\n  HV01: {host}\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert SECRET not in message


def test_kerberos_needs_no_password(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts:\n  HV01: {address: hv01.lab.test, auth: kerberos}\n")
    entry = load_inventory(path).host("HV01")
    with pytest.raises(InventoryError, match="no password_env or password_file"):
        entry.resolve_password()


def test_unreadable_or_empty_password_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "hosts:\n  HV01: {address: h, username: u, password_file: pw}\n")
    entry = load_inventory(path).host("HV01")
    with pytest.raises(InventoryError, match=r"hosts\.HV01\.password_file: cannot read .*pw"):
        entry.resolve_password()
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(InventoryError, match="is empty"):
        entry.resolve_password()


def test_inline_secret_in_defaults_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, f"defaults: {{password: {SECRET}}}\nhosts:\n  HV01: {{address: h}}\n")
    with pytest.raises(InventoryError, match="defaults: 'password' is not allowed") as caught:
        load_inventory(path)
    assert SECRET not in str(caught.value)


def test_not_an_inventory(tmp_path: Path) -> None:
    for text, expected in [("[1, 2]", "must be a mapping"), ("hosts: {}", "hosts"), ("hosts: [", "not valid YAML")]:
        with pytest.raises(InventoryError, match=expected):
            load_inventory(_write(tmp_path, text))
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "nowhere.yaml")


def test_dump_round_trip(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "hosts:\n  HV01: {address: 127.0.0.1, port: 5000, scheme: http, auth: ntlm, username: 'LAB\\u', "
        "password_file: /abs/pw, fqdn: hv01.lab.test}\n",
    )
    inventory = load_inventory(path)
    out = tmp_path / "out" / "again.yaml"
    dump_inventory(inventory, out, header="written by a test\n\nsecond paragraph")
    text = out.read_text()
    assert text.startswith("# written by a test\n#\n# second paragraph\n")
    again: Inventory = load_inventory(out)
    # The same hosts, read from another file (each entry also remembers the file it came from).
    assert {k: e.model_dump() for k, e in again.hosts.items()} == {
        k: e.model_dump() for k, e in inventory.hosts.items()
    }
    assert again.host("HV01").source == str(out)
    assert not os.path.exists(str(out) + ".tmp")


# -- the inventory a running lab writes -------------------------------------------------------------------
def test_lab_inventory_matches_its_endpoints_and_hides_the_password(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory("pair", scheme="https", auth={"HV-B": "basic"})
    inventory = load_inventory(lab.inventory_path)
    assert set(inventory.hosts) == {"HV-A", "HV-B"}
    for name, entry in inventory.hosts.items():
        assert entry.address == "127.0.0.1"
        assert entry.scheme == "https"
        assert entry.port == lab.endpoint(name).https_port
        assert entry.username == lab.username
        assert entry.username.startswith("LAB\\svc-snlm-")
        assert entry.password_env is None
        assert entry.password_file == lab.password_file
        assert entry.ca_file == lab.ca_file
        assert entry.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert entry.fqdn == f"{name.lower()}.lab.test"
        assert entry.cluster is None
        # The Migration adapter (10.10.10.0/24, the hosts' migration network), not the 1 Gbit/s Management one.
        assert entry.migration_link_gbps == 10
    assert inventory.host("HV-A").auth == "ntlm"
    assert inventory.host("HV-B").auth == "basic"
    password = inventory.host("HV-A").resolve_password().get_secret_value()
    assert len(password) >= 24
    assert password not in lab.inventory_path.read_text()
    assert stat.S_IMODE(lab.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(lab.password_file.parent.stat().st_mode) == 0o700
    lab.stop()
    assert not lab.password_file.exists()
    assert lab.inventory_path.exists()


def test_each_lab_has_its_own_password(lab_factory: Callable[..., Lab]) -> None:
    # Two labs in one process (NTLM's user file is process-wide): distinct accounts, distinct passwords.
    first, second = lab_factory("pair"), lab_factory("pair")
    assert first.username != second.username
    assert first.password_file.read_text() != second.password_file.read_text()
    for lab in (first, second):
        with RunspacePool(lab_wsman(lab, "HV-B")) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-VMHost")
            assert len(ps.invoke()) == 1


def test_basic_over_http_must_be_explicit(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory("pair", scheme="http", auth="basic")
    entry = load_inventory(lab.inventory_path).host("HV-A")
    assert entry.encryption == "never"
    assert entry.port == lab.endpoint("HV-A").http_port


def test_lab_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kerberos"):
        Lab.from_topology(TOPOLOGIES / "pair.yaml", workdir=tmp_path, auth="kerberos")
    with pytest.raises(ValueError, match=r"unknown hosts \['HV-Z'\]"):
        Lab.from_topology(TOPOLOGIES / "pair.yaml", workdir=tmp_path, auth={"HV-Z": "ntlm"})
    with pytest.raises(ValueError, match="scheme"):
        Lab.from_topology(TOPOLOGIES / "pair.yaml", workdir=tmp_path, scheme="ftp")


def test_the_engine_reads_what_the_lab_writes(lab_factory: Callable[..., Lab]) -> None:
    # The format is defined once (config.inventory), which the lab writes with and the engine reads with; neither
    # imports the other, and the engine's entries are the format's own with the engine's errors.
    lab = lab_factory("pair", scheme="https", auth={"HV-B": "basic"})
    ours = load_inventory(lab.inventory_path)
    theirs = engine_load_inventory(lab.inventory_path)
    assert type(ours) is config_inventory.Inventory
    assert isinstance(theirs, config_inventory.Inventory)
    assert all(isinstance(entry, config_inventory.HostEntry) for entry in theirs.hosts.values())
    assert set(theirs.hosts) == set(ours.hosts)
    for name, entry in ours.hosts.items():
        engine_entry = theirs.host(name)
        for field in ("address", "port", "scheme", "auth", "username", "password_file", "ca_file", "encryption"):
            assert getattr(engine_entry, field) == getattr(entry, field), (name, field)
        assert engine_entry.model_dump() == entry.model_dump()
        assert engine_entry.resolve_password().get_secret_value() == entry.resolve_password().get_secret_value()
