"""worker.py: settings that fail fast with what to set, and a worker without a directory that says so."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.errors import ConfigurationError
from worker import DIRECTORY_NOT_CONFIGURED, Settings, _NoDirectory, connect_client, load_settings
from workflows.contracts import DelegationHost, EnsureDelegationInput


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "SNLM_CONFIG", "SNLM_INVENTORY"):
        monkeypatch.delenv(name, raising=False)


def test_temporal_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "migrations")
    settings = Settings()
    assert (settings.temporal_address, settings.temporal_namespace) == ("temporal.example:7233", "migrations")


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNLM_MAX_CONCURRENT_ACTIVITIES", "0")
    with pytest.raises(SystemExit) as raised:
        load_settings()
    assert "max_concurrent_activities" in str(raised.value)


def test_a_bad_config_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "snlm.yaml"
    config.write_text("- not a mapping\n", encoding="utf-8")
    monkeypatch.setenv("SNLM_CONFIG", str(config))
    with pytest.raises(ValueError, match="must be a mapping"):
        Settings()


def test_the_environment_wins_over_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "snlm.yaml"
    config.write_text("task_queue: from-file\nmove_poll_seconds: 2\n", encoding="utf-8")
    monkeypatch.setenv("SNLM_CONFIG", str(config))
    monkeypatch.setenv("SNLM_TASK_QUEUE", "from-env")
    settings = Settings()
    assert (settings.task_queue, settings.move_poll_seconds) == ("from-env", 2.0)


def test_no_inventory_says_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match="SNLM_INVENTORY"):
        Settings().load_inventory()


def test_a_worker_without_a_directory_refuses_delegation_clearly() -> None:
    with pytest.raises(ApplicationError) as raised:
        _NoDirectory().ensure_delegation(EnsureDelegationInput(DelegationHost("HV01"), DelegationHost("HV02")))
    assert raised.value.type == DIRECTORY_NOT_CONFIGURED
    assert raised.value.non_retryable
    assert "verify" in str(raised.value)
    assert "skip" in str(raised.value)


async def test_runtime_metrics_are_served_for_prometheus(temporal_env: WorkflowEnvironment) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        temporal_address=temporal_env.client.service_client.config.target_host, metrics_bind=f"127.0.0.1:{port}"
    )
    client = await connect_client(settings)
    await client.count_workflows()

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    text = await asyncio.to_thread(scrape)
    assert "temporal_request" in text
