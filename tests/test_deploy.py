"""The production-shaped stack: docker-compose.yml and the example files it mounts, checked by parsing them.

No Docker engine runs here, so the checks are structural: every service the stack needs, health checks and
start order, nothing published beyond loopback, secrets as files, and example settings and inventory that the
worker's own loaders accept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.inventory import load_inventory
from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgresql", "temporal", "temporal-ui", "otel-collector", "jaeger", "worker"} <= set(services)
    assert services["worker"]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["temporal"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    for name in ("postgresql", "temporal"):
        assert services[name]["healthcheck"]["test"]


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_secrets_are_files_and_no_password_is_inline(compose: dict[str, Any]) -> None:
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, name
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD:" not in text
    worker_env = compose["services"]["worker"]["environment"]
    assert not any("PASSWORD" in key for key in worker_env)


def test_the_worker_traces_to_the_collector(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:")
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text(encoding="utf-8"))
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


def test_the_search_attributes_match_the_contract(compose: dict[str, Any]) -> None:
    from workflows.contracts import SEARCH_ATTRIBUTES

    command = " ".join(compose["services"]["temporal-search-attributes"]["command"])
    for name in SEARCH_ATTRIBUTES:
        assert name in command


def test_the_example_inventory_is_valid() -> None:
    inventory = load_inventory(ROOT / "deploy" / "inventory.example.yaml")
    entry = inventory.host("hv01.contoso.com")
    assert entry.auth == "negotiate"
    assert entry.use_tls


def test_the_example_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SNLM_CONFIG", str(ROOT / "deploy" / "snlm.example.yaml"))
    settings = Settings()
    assert settings.directory is not None
    assert settings.directory.uris == ["ldaps://dc1.contoso.com", "ldaps://dc2.contoso.com"]
    assert settings.directory.validate_certificates
