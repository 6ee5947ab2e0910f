"""snlm's settings and its Temporal client factory, shared by the worker, the ways in (`starter/`) and the demo.

Settings come from `SNLM_*` variables, Temporal's own `TEMPORAL_ADDRESS` / `TEMPORAL_NAMESPACE`, and an
optional YAML file named by `SNLM_CONFIG` (variables win over the file). Secrets are never settings: the
inventory and the directory settings hold references (an environment variable or a file) to passwords.

Importing this module connects to nothing and starts nothing; the client factory does, when called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from temporalio.client import Client, Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from config.directory import DirectorySettings
from workflows.contracts import TASK_QUEUE, DelegationPolicy

__all__ = ["Settings", "connect_client", "load_settings", "runtime_for", "tracing_interceptors"]


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
        max_concurrent_activities: activities other than moves run at once (each holds a WinRM or LDAP session
            while it runs).
        max_concurrent_moves: moves watched at once, on the move queue (a move mostly waits for its host's job: a
            thread and, during each poll, a pooled session). Keep it above the moves the hosts' limits allow at
            once, or a move granted its slots waits for a thread.
        max_concurrent_watches: moves a campaign follows at once after it continued as new, on the watch queue
            (each waits for its move's end on the server, holding no thread or session). Keep it above the moves
            the campaigns of this worker's queue have in flight.
        move_poll_seconds: how often the move activity reads the host's migration job.
        sessions_per_host: runspace pools the worker keeps open per host, reused by every activity (Windows allows
            a user 25 shells per host; several workers, or other tools, share that).
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
    max_concurrent_moves: int = Field(default=64, ge=1, le=1024)
    max_concurrent_watches: int = Field(default=1000, ge=1, le=100_000)
    move_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    sessions_per_host: int = Field(default=4, ge=1, le=25)
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
