"""worker.py: settings that fail fast with what to set, a worker that refuses to start while a password reference
cannot be read, and a worker without a directory that says so."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

import worker
from activities.errors import ConfigurationError
from config.settings import Settings, connect_client, load_settings
from lab.lab import Lab
from worker import SecretsUnreadable, _NoDirectory, load_worker_inventory, run_worker
from workflows.contracts import DIRECTORY_NOT_CONFIGURED, DelegationHost, EnsureDelegationInput

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Worker-41c7"
# Bounds for a subprocess that should answer at once; generous so that a loaded machine does not fail them.
REFUSAL_SECONDS = 60.0


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
        load_worker_inventory(Settings())


def test_a_worker_without_a_directory_refuses_delegation_clearly() -> None:
    with pytest.raises(ConfigurationError) as raised:
        _NoDirectory().ensure_delegation(EnsureDelegationInput(DelegationHost("HV01"), DelegationHost("HV02")))
    refused = raised.value.to_application_error()
    assert refused.type == DIRECTORY_NOT_CONFIGURED
    assert refused.non_retryable
    assert "verify" in str(refused)
    assert "skip" in str(refused)


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


# -- the start-up check of every password reference -----------------------------------------------------------
def _inventory(tmp_path: Path, hosts: dict[str, str]) -> Path:
    """An inventory whose hosts differ only by their password reference (`password_file: ...` or `password_env`)."""
    lines = ["version: 1", "defaults: {address: 127.0.0.1, scheme: http, auth: ntlm, username: svc-snlm}", "hosts:"]
    lines += [f"  {name}: {{{reference}}}" for name, reference in hosts.items()]
    path = tmp_path / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNLM_", "TEMPORAL_", "OTEL_"))}
    env.update(variables)
    return env


def _refused_before_connecting(env: dict[str, str]) -> str:
    """Run `python worker.py` with Temporal's address on a socket this test listens on; assert it exits with status
    2 without ever connecting there, and return what it printed on stderr."""
    with socket.socket() as temporal:
        temporal.bind(("127.0.0.1", 0))
        temporal.listen(8)
        temporal.setblocking(False)
        env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{temporal.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "worker.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=REFUSAL_SECONDS
        )
        with pytest.raises(BlockingIOError):
            temporal.accept()  # nobody knocked: the check ran before any connection to Temporal
    assert done.returncode == 2, done.stderr
    assert SECRET not in done.stdout + done.stderr
    return done.stderr


def test_a_missing_password_file_refuses_the_start_naming_host_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "hv-s4.password"
    good = tmp_path / "hv-s2.password"
    good.write_text(SECRET + "\n", encoding="utf-8")
    path = _inventory(tmp_path, {"HV-S2": f"password_file: {good}", "HV-S4": f"password_file: {missing}"})
    stderr = _refused_before_connecting(_environment(SNLM_INVENTORY=str(path)))
    assert f"snlm worker: host HV-S4: password_file {missing}: No such file or directory\n" in stderr
    assert "HV-S2" not in stderr
    assert "not started" in stderr


def test_every_unreadable_reference_is_named_at_once(tmp_path: Path) -> None:
    # Root reads a file of mode 000, so the unreadable file here is a directory: unreadable for anyone.
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "empty.password").write_text("\n", encoding="utf-8")
    path = _inventory(
        tmp_path,
        {
            "HV-A": "password_file: a-directory",
            "HV-B": "password_env: SNLM_TEST_UNSET_PASSWORD",
            "HV-C": "password_env: SNLM_TEST_EMPTY_PASSWORD",
            "HV-D": "password_file: empty.password",
            "HV-E": "password_env: SNLM_TEST_GOOD_PASSWORD",
            "HV-K": "auth: kerberos",
        },
    )
    env = _environment(SNLM_INVENTORY=str(path), SNLM_TEST_EMPTY_PASSWORD="", SNLM_TEST_GOOD_PASSWORD=SECRET)
    env.pop("SNLM_TEST_UNSET_PASSWORD", None)
    stderr = _refused_before_connecting(env)
    assert f"snlm worker: host HV-A: password_file {tmp_path / 'a-directory'}: Is a directory\n" in stderr
    assert "snlm worker: host HV-B: password_env SNLM_TEST_UNSET_PASSWORD: not set\n" in stderr
    assert "snlm worker: host HV-C: password_env SNLM_TEST_EMPTY_PASSWORD: empty\n" in stderr
    assert f"snlm worker: host HV-D: password_file {tmp_path / 'empty.password'}: empty\n" in stderr
    assert "HV-E" not in stderr
    assert "HV-K" not in stderr  # Kerberos with the worker's own ticket has nothing to read


def test_an_unreadable_directory_password_refuses_the_start(tmp_path: Path) -> None:
    good = tmp_path / "hv.password"
    good.write_text(SECRET, encoding="utf-8")
    path = _inventory(tmp_path, {"HV-S2": f"password_file: {good}"})
    env = _environment(
        SNLM_INVENTORY=str(path),
        SNLM_DIRECTORY__URIS='["ldaps://dc1.corp.example"]',
        SNLM_DIRECTORY__BASE_DN="DC=corp,DC=example",
        SNLM_DIRECTORY__BIND_USER="svc-snlm@corp.example",
        SNLM_DIRECTORY__BIND_PASSWORD__ENV="SNLM_TEST_UNSET_DIRECTORY_PASSWORD",
    )
    env.pop("SNLM_TEST_UNSET_DIRECTORY_PASSWORD", None)
    stderr = _refused_before_connecting(env)
    assert (
        "snlm worker: directory: bind_password environment variable SNLM_TEST_UNSET_DIRECTORY_PASSWORD: not set\n"
        in stderr
    )


def test_an_invalid_inventory_refuses_the_start_with_status_2(tmp_path: Path) -> None:
    stderr = _refused_before_connecting(_environment(SNLM_INVENTORY=str(tmp_path / "absent.yaml")))
    assert f"snlm worker: {tmp_path / 'absent.yaml'}: cannot read: No such file or directory" in stderr


async def test_the_in_process_worker_checks_before_connecting(tmp_path: Path) -> None:
    # The demo runs the worker in-process through run_worker: the same check, before Client.connect (which would
    # fail at this closed port with another error).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    path = _inventory(tmp_path, {"HV-S4": f"password_file: {tmp_path / 'absent'}"})
    settings = Settings(inventory=path, temporal_address=f"127.0.0.1:{closed}")
    with pytest.raises(SecretsUnreadable) as refused:
        await run_worker(settings, stop=asyncio.Event())
    assert refused.value.problems == [f"host HV-S4: password_file {tmp_path / 'absent'}: No such file or directory"]
    assert refused.value.error_type == "SecretsUnreadable"


async def test_readable_references_let_the_worker_start_and_stop(
    tmp_path: Path, temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    password = tmp_path / "hv.password"
    password.write_text(SECRET + "\n", encoding="utf-8")
    path = _inventory(
        tmp_path, {"HV-S2": f"password_file: {password}", "HV-S4": "password_env: SNLM_TEST_GOOD_PASSWORD"}
    )
    env = _environment(
        SNLM_INVENTORY=str(path),
        SNLM_TEST_GOOD_PASSWORD=SECRET,
        SNLM_TASK_QUEUE=task_queue,
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    seen: list[str] = []

    async def until_serving() -> None:
        while True:
            line = (await process.stderr.readline()).decode()  # type: ignore[union-attr]
            if not line:
                return
            seen.append(line)
            if f"worker serving task queues {task_queue}, {task_queue}-moves and {task_queue}-watch" in line:
                return

    try:
        await asyncio.wait_for(until_serving(), timeout=REFUSAL_SECONDS)
        assert any("worker serving task queues" in line for line in seen), "".join(seen)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.communicate(), timeout=REFUSAL_SECONDS)
    output = "".join(seen) + rest[1].decode() + rest[0].decode()
    assert process.returncode == 0, output
    assert "password_" not in output
    assert SECRET not in output


def test_the_worker_never_imports_the_lab() -> None:
    # lint-imports checks packages only: worker.py is a module, so its own imports are read here (the lab is
    # reached from the worker only through the inventory file it writes).
    import ast

    tree = ast.parse((REPO / "worker.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "activities.migration" in imported  # the walk does see the worker's imports
    assert not {name for name in imported if name == "lab" or name.startswith("lab.")}


async def test_a_quiet_worker_gives_its_idle_host_sessions_back(
    tmp_path: Path, temporal_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shell a worker keeps open is one of the 25 a user may hold on the host: an idle one goes back."""
    monkeypatch.setattr(worker, "IDLE_SWEEP_SECONDS", 0.05)
    topology = REPO / "lab" / "topologies" / "pair.yaml"
    with Lab.from_topology(topology, workdir=tmp_path / "lab", time_scale=60.0) as lab:
        settings = Settings(inventory=lab.inventory_path, task_queue=task_queue)
        workers = worker.build_worker(temporal_env.client, settings)
        workers.sessions.idle_seconds = 0.2
        try:
            async with workers:
                with workers.sessions.session("HV-A") as client:
                    client.run("Get-VMHost")
                assert len(lab.truth()["winrm"]["HV-A"]["shells"]) == 1  # kept for the next activity
                for _ in range(200):
                    if not lab.truth()["winrm"]["HV-A"]["shells"]:
                        break
                    await asyncio.sleep(0.05)
                assert lab.truth()["winrm"]["HV-A"]["shells"] == []
                assert workers.sessions.stats().idle_closed == 1
        finally:
            worker.release_worker(workers)
