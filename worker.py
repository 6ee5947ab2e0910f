"""The snlm worker: the one place that builds the Temporal runtime, client and worker, and registers everything.

    python worker.py            # or: python -m worker

Settings and the Temporal client factory live in `config.settings` (shared with the ways in and the demo).
Secrets are never settings: the inventory and the directory settings hold references (an environment variable
or a file) to passwords. Before connecting to Temporal the worker reads every one of them, and refuses to start
(exit status 2) naming each host or the directory whose reference cannot be read, never the secret.
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
from typing import Any, NoReturn

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.boundary import ErrorBoundary
from activities.directory import DirectoryActivities
from activities.errors import ConfigurationError
from activities.inventory import Inventory, InventoryError, load_inventory
from activities.migration import MigrationActivities
from activities.preflight import PreflightActivities
from config.directory import SecretUnavailable
from config.settings import Settings, connect_client, load_settings
from workflows.contracts import (
    DIRECTORY_NOT_CONFIGURED,
    SECRETS_UNREADABLE,
    ActivityName,
    ComputerDelegation,
    DelegationHost,
    EnsureDelegationInput,
    EnsureDelegationResult,
    MoveHeartbeat,
    RevertDelegationResult,
)
from workflows.host_slots import HostSlotsWorkflow
from workflows.migrate_vm import MigrateVmWorkflow, PreflightWorkflow

log = logging.getLogger("snlm.worker")


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
        )

    @activity.defn(name=ActivityName.ENSURE_DELEGATION)
    def ensure_delegation(self, request: EnsureDelegationInput) -> EnsureDelegationResult:
        self._refuse()

    @activity.defn(name=ActivityName.REVERT_DELEGATION)
    def revert_delegation(self, result: EnsureDelegationResult) -> RevertDelegationResult:
        self._refuse()

    @activity.defn(name=ActivityName.READ_COMPUTER_DELEGATION)
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
    """Every activity the workflows call, bound to this worker's inventory and directory, one per name of the
    registry (`ActivityName`): a name left out, or registered under another name, stops the worker here."""
    migration = MigrationActivities(inventory, poll_seconds=settings.move_poll_seconds, progress=progress)
    directory: DirectoryActivities | _NoDirectory = (
        DirectoryActivities(settings.directory) if settings.directory is not None else _NoDirectory()
    )
    registry: dict[ActivityName, Callable[..., Any]] = {
        ActivityName.PREFLIGHT: PreflightActivities(inventory).preflight,
        ActivityName.READ_VM: migration.read_vm,
        ActivityName.SNAPSHOT_CLUSTER_ROLE: migration.snapshot_cluster_role,
        ActivityName.REMOVE_CLUSTER_ROLE: migration.remove_cluster_role,
        ActivityName.RESTORE_CLUSTER_ROLE: migration.restore_cluster_role,
        ActivityName.READ_MIGRATION_SETTINGS: migration.read_migration_settings,
        ActivityName.ENSURE_MIGRATION_SETTINGS: migration.ensure_migration_settings,
        ActivityName.RESTORE_MIGRATION_SETTINGS: migration.restore_migration_settings,
        ActivityName.PURGE_TICKETS: migration.purge_tickets,
        ActivityName.REMEDIATE: migration.remediate,
        ActivityName.CLEAN_DESTINATION: migration.clean_destination,
        ActivityName.START_OR_ATTACH_MOVE: migration.start_or_attach_move,
        ActivityName.VERIFY_MOVE: migration.verify_move,
        ActivityName.ENSURE_DELEGATION: directory.ensure_delegation,
        ActivityName.REVERT_DELEGATION: directory.revert_delegation,
        ActivityName.READ_COMPUTER_DELEGATION: directory.read_computer_delegation,
    }
    missing = sorted(set(ActivityName) - set(registry))
    misnamed = sorted(name for name, fn in registry.items() if activity_name(fn) != name)
    if missing or misnamed:
        raise RuntimeError(f"activity registry incomplete: missing {missing}, registered under another name {misnamed}")
    return list(registry.values())


def activity_name(fn: Callable[..., Any]) -> str:
    """The name an activity function is registered under (its `@activity.defn(name=...)`)."""
    definition = activity._Definition.from_callable(fn)
    return definition.name if definition is not None and definition.name else ""


class SecretsUnreadable(ConfigurationError):
    """Password references the worker cannot read at start-up; `problems` has one line for each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(
            "cannot read " + "; ".join(problems),
            error_type=SECRETS_UNREADABLE,
            remedy="make every password reference of the inventory (and the directory's bind_password) readable "
            "by the worker: set the variable, or create the file with the password on its first line",
        )
        self.problems = list(problems)


def load_worker_inventory(settings: Settings) -> Inventory:
    """The inventory the settings name; a ConfigurationError saying what to set when they name none."""
    if settings.inventory is None:
        raise ConfigurationError(
            "no host inventory configured",
            error_type="InventoryMissing",
            remedy="set SNLM_INVENTORY to the inventory file (python -m lab writes one for a lab)",
        )
    return load_inventory(settings.inventory)


def unreadable_secrets(settings: Settings, inventory: Inventory) -> list[str]:
    """Every password reference (each host's, and the directory's bind password) that cannot be read now, one
    line each naming the host and the variable or file, and why; never the secret. Empty when all can be read.

    Read at start-up rather than on a host's first use, so a typo fails the worker at once instead of a
    migration hours later.
    """
    problems: list[str] = []
    for name, entry in inventory.hosts.items():
        if entry.password_reference is None:
            continue  # Kerberos with the worker's own ticket or keytab: nothing to read.
        try:
            entry.resolve_password()
        except InventoryError as error:
            problems.append(f"host {name}: {error.field} {entry.password_reference}: {error.problem}")
    if settings.directory is not None:
        try:
            settings.directory.bind_password.resolve()
        except SecretUnavailable as error:
            problems.append(f"directory: bind_password {error.reference}: {error.reason}")
    return problems


def checked_inventory(settings: Settings) -> Inventory:
    """The worker's inventory, once every password reference it and the directory settings hold is readable."""
    inventory = load_worker_inventory(settings)
    problems = unreadable_secrets(settings, inventory)
    if problems:
        raise SecretsUnreadable(problems)
    return inventory


WORKFLOWS: Sequence[type] = (MigrateVmWorkflow, PreflightWorkflow, HostSlotsWorkflow)


def build_worker(client: Client, settings: Settings, *, inventory: Inventory | None = None) -> Worker:
    """The worker: workflows, and sync activities on a thread pool sized to the concurrent-activity limit.

    Call it from the event loop the worker will run on (the progress signals are sent on it).
    """
    inventory = inventory or load_worker_inventory(settings)
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
        # The one place where the engine's errors become ApplicationErrors (type, remedy, retryability).
        interceptors=[ErrorBoundary()],
    )


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    client: Client | None = None,
    inventory: Inventory | None = None,
) -> None:
    """Run until `stop` is set; without one, until SIGINT or SIGTERM. Running activities then get the graceful
    shutdown time to finish (the default of 0 would cancel them at once, reference: temporal-notes).

    Without an `inventory`, it is loaded and every password reference checked (`checked_inventory`) before
    anything connects to Temporal."""
    inventory = inventory or checked_inventory(settings)
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
    worker = build_worker(client, settings, inventory=inventory)
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
    try:
        inventory = checked_inventory(settings)
    except SecretsUnreadable as error:
        for problem in error.problems:
            print(f"snlm worker: {problem}", file=sys.stderr)
        print(f"snlm worker: not started. Remedy: {error.remedy}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigurationError as error:
        print(f"snlm worker: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    code = 0
    try:
        asyncio.run(run_worker(settings, inventory=inventory))
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
