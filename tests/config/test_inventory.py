"""config.inventory: the format the lab writes and the engine reads, with plain errors (no engine class) that
name the file, the host and the field, and never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.inventory import InventoryError, UnknownInventoryHost, dump_inventory, load_inventory, parse_inventory

SECRET = "s3cr3t-Format-0b3e"


def test_errors_are_plain_and_structured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("hosts:\n  HV01: {address: h, username: u, password_env: SNLM_TEST_FORMAT}\n", encoding="utf-8")
    entry = load_inventory(path).host("hv01")
    monkeypatch.delenv("SNLM_TEST_FORMAT", raising=False)
    with pytest.raises(InventoryError) as caught:
        entry.resolve_password()
    error = caught.value
    assert type(error).__mro__[1] is ValueError
    assert (error.source, error.host, error.field, error.problem) == (str(path), "HV01", "password_env", "not set")
    assert str(error) == f"{path}: hosts.HV01.password_env: environment variable SNLM_TEST_FORMAT is not set"
    assert entry.password_reference == "SNLM_TEST_FORMAT"
    with pytest.raises(UnknownInventoryHost, match="HV09"):
        load_inventory(path).host("HV09")


def test_a_validation_error_names_host_and_field_without_the_value() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory({"hosts": {"HV01": {"address": "h", "username": "u", "password_env": "X", "port": SECRET}}})
    assert (caught.value.host, caught.value.field) == ("HV01", "port")
    assert SECRET not in str(caught.value)


def test_what_the_format_writes_it_reads_back(tmp_path: Path) -> None:
    raw = {
        "defaults": {"auth": "ntlm", "username": "LAB\\svc", "password_file": "pw"},
        "hosts": {
            "HV01": {"address": "127.0.0.1", "scheme": "http"},
            "HV02": {"address": "h2", "cert_validation": False},
        },
    }
    inventory = parse_inventory(raw, base_dir=tmp_path)
    out = tmp_path / "written.yaml"
    dump_inventory(inventory, out)
    again = load_inventory(out)
    assert {k: e.model_dump() for k, e in again.hosts.items()} == {
        k: e.model_dump() for k, e in inventory.hosts.items()
    }
    assert again.host("HV02").tls_verify is False
    assert again.host("HV01").password_file == tmp_path / "pw"


def test_migration_link_speed_is_optional_positive_and_read_back(tmp_path: Path) -> None:
    base = {"address": "h", "username": "u", "password_env": "X"}
    inventory = parse_inventory({"hosts": {"HV01": {**base, "migration_link_gbps": 25}, "HV02": base}})
    assert inventory.host("HV01").migration_link_gbps == 25.0
    assert inventory.host("HV02").migration_link_gbps is None
    out = tmp_path / "written.yaml"
    dump_inventory(inventory, out)
    written = out.read_text(encoding="utf-8")
    assert "migration_link_gbps: 25" in written
    assert written.count("migration_link_gbps") == 1  # left out where it is not known
    assert load_inventory(out).host("HV01").migration_link_gbps == 25.0
    for bad in (0, -10, "fast"):
        with pytest.raises(InventoryError) as caught:
            parse_inventory({"hosts": {"HV01": {**base, "migration_link_gbps": bad}}})
        assert (caught.value.host, caught.value.field) == ("HV01", "migration_link_gbps")
