"""The snlm worker: the one place that builds the Temporal runtime, client and worker, and registers everything.

    python worker.py            # or: python -m worker

Settings come from `SNLM_*` variables, Temporal's own `TEMPORAL_ADDRESS` / `TEMPORAL_NAMESPACE`, and an
optional YAML file named by `SNLM_CONFIG` (variables win over the file). Secrets are never settings: the
inventory and the directory settings hold references (an environment variable or a file) to passwords.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from temporalio import activity
from temporalio.client import Client, Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.directory import DirectoryActivities, DirectorySettings
from activities.errors import ConfigurationError
from activities.inventory import Inventory, load_inventory
from activities.migration import MigrationActivities
from activities.preflight import PreflightActivities
from workflows.contracts import (
    TASK_QUEUE,
    ComputerDelegation,
    DelegationHost,
    DelegationPolicy,
    EnsureDelegationInput,
    EnsureDelegationResult,
    MoveHeartbeat,
    RevertDelegationResult,
)
from workflows.host_slots import HostSlotsWorkflow
from workflows.migrate_vm import MigrateVmWorkflow, PreflightWorkflow

log = logging.getLogger("snlm.worker")

DIRECTORY_NOT_CONFIGURED = "DirectoryNotConfigured"


class _YamlFile(PydanticBaseSettingsSource):
    """Settings from the YAML file named by SNLM_CONFIG (lowest priority after defaults)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("SNLM_CONFIG")
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"SNLM_CONFIG={path}: cannot read the configuration file: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"SNLM_CONFIG={path}: the configuration file must be a mapping of settings")
        return data


class Settings(BaseSettings):
    """Everything the worker and the starters need to know, validated at start-up.

    Attributes:
        temporal_address / temporal_namespace: where Temporal is (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`).
        task_queue: the queue this worker serves; one per site when workers sit near their hosts.
        inventory: the host inventory (YAML; passwords by reference only).
        directory: how to reach Active Directory for delegation; None when delegation is managed elsewhere
            (then moves must use the delegation policy `verify` or `skip`).
        delegation_policy: the default policy the CLI and the webhook put in a request.
        max_concurrent_activities: activities run at once; each holds one WinRM or LDAP session.
        move_poll_seconds: how often the move activity reads the host's migration job.
        graceful_shutdown_seconds: on SIGTERM, how long running activities may take to finish.
        metrics_bind: `host:port` where Temporal's runtime metrics (workflow and activity counts, latencies,
            task slots) are served for Prometheus; None serves none.
    """

    model_config = SettingsConfigDict(env_prefix="SNLM_", env_nested_delimiter="__", extra="forbid")

    temporal_address: str = Field(
        default="127.0.0.1:7233", validation_alias=AliasChoices("SNLM_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS")
    )
    temporal_namespace: str = Field(
        default="default", validation_alias=AliasChoices("SNLM_TEMPORAL_NAMESPACE", "TEMPORAL_NAMESPACE")
    )
    task_queue: str = TASK_QUEUE
    inventory: Path | None = None
    directory: DirectorySettings | None = None
    delegation_policy: DelegationPolicy = DelegationPolicy.MANAGE
    max_concurrent_activities: int = Field(default=32, ge=1, le=1024)
    move_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    graceful_shutdown_seconds: float = Field(default=30.0, ge=0)
    metrics_bind: str | None = Field(default=None, pattern=r"^[^:\s]+:\d{1,5}$")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFile(settings_cls))

    def load_inventory(self) -> Inventory:
        if self.inventory is None:
            raise ConfigurationError(
                "no host inventory configured",
                error_type="InventoryMissing",
                remedy="set SNLM_INVENTORY to the inventory file (python -m lab writes one for a lab)",
            )
        return load_inventory(self.inventory)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and SNLM_CONFIG), failing fast with what to set."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '<settings>'}: {e['msg']}" for e in error.errors()]
        raise SystemExit(
            "snlm: invalid settings (SNLM_* variables or the SNLM_CONFIG file):\n" + "\n".join(lines)
        ) from None


def tracing_interceptors() -> list[Interceptor]:
    """OpenTelemetry tracing through Temporal's interceptor, when the standard OTEL_* variables ask for it.

    `OTEL_TRACES_EXPORTER=otlp` sends spans over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector of
    docker-compose.yml); `console` prints them. Workers inherit the client's interceptors, so one trace runs from
    the start call through every activity.
    """
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name in ("", "none"):
        return []
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise SystemExit(f"snlm: OTEL_TRACES_EXPORTER={exporter_name!r} is not supported (console, otlp, none)")
    service = os.environ.get("OTEL_SERVICE_NAME", "snlm-worker")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return [TracingInterceptor()]


_runtimes: dict[str, Runtime] = {}


def runtime_for(settings: Settings) -> Runtime | None:
    """The Temporal runtime: the default one, or one that serves Prometheus metrics at `metrics_bind`.

    One per address for the life of the process: a runtime owns its metrics listener.
    """
    if settings.metrics_bind is None:
        return None
    if settings.metrics_bind not in _runtimes:
        telemetry = TelemetryConfig(metrics=PrometheusConfig(bind_address=settings.metrics_bind))
        _runtimes[settings.metrics_bind] = Runtime(telemetry=telemetry)
    return _runtimes[settings.metrics_bind]


async def connect_client(settings: Settings) -> Client:
    """The Temporal client every part of snlm uses (same converter and interceptors everywhere)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        interceptors=tracing_interceptors(),
        runtime=runtime_for(settings),
    )


class _NoDirectory:
    """Delegation activities for a worker without a directory: they fail with what to configure.

    Registered so a request with the policy `manage` fails at once with a clear message instead of waiting for
    a worker that knows the activity.
    """

    def _refuse(self) -> NoReturn:
        raise ConfigurationError(
            "this worker has no directory configured, so it cannot manage Kerberos delegation",
            error_type=DIRECTORY_NOT_CONFIGURED,
            remedy="set SNLM_DIRECTORY__URIS, __BASE_DN, __BIND_USER and __BIND_PASSWORD__ENV (or __FILE), "
            "or use the delegation policy 'verify' or 'skip'",
        ).to_application_error()

    @activity.defn(name="ensure_delegation")
    def ensure_delegation(self, request: EnsureDelegationInput) -> EnsureDelegationResult:
        self._refuse()

    @activity.defn(name="revert_delegation")
    def revert_delegation(self, result: EnsureDelegationResult) -> RevertDelegationResult:
        self._refuse()

    @activity.defn(name="read_computer_delegation")
    def read_computer_delegation(self, host: DelegationHost) -> ComputerDelegation:
        self._refuse()


class ProgressSignals:
    """Sends the move activity's progress to its workflow as the `move_progress` signal.

    Called on an activity thread; the signal is sent on the worker's event loop without waiting for it, at most
    once a second per workflow and only when the percent moved, so a long move adds a few dozen events at most.
    """

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop, *, min_interval: float = 1.0) -> None:
        self._client = client
        self._loop = loop
        self._min_interval = min_interval
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, workflow_id: str, beat: MoveHeartbeat) -> None:
        now = time.monotonic()
        with self._lock:
            sent_at, percent = self._last.get(workflow_id, (float("-inf"), -1))
            if beat.percent == percent or (now - sent_at < self._min_interval and beat.percent < 100):
                return
            self._last[workflow_id] = (now, beat.percent)
        handle = self._client.get_workflow_handle(workflow_id)
        future = asyncio.run_coroutine_threadsafe(handle.signal(MigrateVmWorkflow.move_progress, beat), self._loop)
        future.add_done_callback(_log_signal_failure)


def _log_signal_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("move progress signal not delivered: %s", future.exception())


def activities_for(
    settings: Settings, inventory: Inventory, progress: Callable[[str, MoveHeartbeat], None] | None = None
) -> list[Callable[..., Any]]:
    """Every activity the workflows call, bound to this worker's inventory and directory."""
    migration = MigrationActivities(inventory, poll_seconds=settings.move_poll_seconds, progress=progress)
    directory: DirectoryActivities | _NoDirectory = (
        DirectoryActivities(settings.directory) if settings.directory is not None else _NoDirectory()
    )
    return [
        PreflightActivities(inventory).preflight,
        migration.read_vm,
        migration.snapshot_cluster_role,
        migration.remove_cluster_role,
        migration.restore_cluster_role,
        migration.read_migration_settings,
        migration.ensure_migration_settings,
        migration.restore_migration_settings,
        migration.purge_tickets,
        migration.remediate,
        migration.clean_destination,
        migration.start_or_attach_move,
        migration.verify_move,
        directory.ensure_delegation,
        directory.revert_delegation,
        directory.read_computer_delegation,
    ]


WORKFLOWS: Sequence[type] = (MigrateVmWorkflow, PreflightWorkflow, HostSlotsWorkflow)


def build_worker(client: Client, settings: Settings, *, inventory: Inventory | None = None) -> Worker:
    """The worker: workflows, and sync activities on a thread pool sized to the concurrent-activity limit.

    Call it from the event loop the worker will run on (the progress signals are sent on it).
    """
    inventory = inventory or settings.load_inventory()
    executor = ThreadPoolExecutor(max_workers=settings.max_concurrent_activities, thread_name_prefix="snlm-activity")
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=activities_for(settings, inventory, ProgressSignals(client, asyncio.get_running_loop())),
        activity_executor=executor,
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
        # Cancellation reaches a sync activity only through its heartbeats: cap the throttle so a cancelled move
        # terminates its host job within seconds (reference: 0.8 x heartbeat timeout otherwise).
        max_heartbeat_throttle_interval=timedelta(seconds=2),
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None, client: Client | None = None) -> None:
    """Run until `stop` is set; without one, until SIGINT or SIGTERM. Running activities then get the graceful
    shutdown time to finish (the default of 0 would cancel them at once, reference: temporal-notes)."""
    client = client or await connect_client(settings)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop is None:
        # The caller owns signals when it passes its own event (the demo runs the worker in-process).
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    worker = build_worker(client, settings)
    log.info("worker serving task queue %s on %s", settings.task_queue, settings.temporal_address)
    try:
        async with worker:
            await stop.wait()
    finally:
        release_worker(worker)
        for sig in installed:
            loop.remove_signal_handler(sig)


def release_worker(worker: Worker) -> None:
    """Free the activity threads `build_worker` made, once the worker has shut down."""
    executor = worker.config().get("activity_executor")
    if isinstance(executor, ThreadPoolExecutor):
        executor.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    code = 0
    try:
        asyncio.run(run_worker(settings))
    except ConfigurationError as error:
        print(f"snlm worker: {error}", file=sys.stderr)
        code = 2
    # The worker has shut down gracefully; leave without interpreter teardown, which can abort under the Temporal
    # runtime's own threads (temporalio sdk-python issue 300) and report a clean stop as status 134.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
