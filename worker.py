"""The snlm worker: the one place that builds the Temporal runtime, client and worker, and registers everything.

    python worker.py            # or: python -m worker

Settings and the Temporal client factory live in `config.settings` (shared with the ways in and the demo).
Secrets are never settings: the inventory and the directory settings hold references (an environment variable
or a file) to passwords. Before connecting to Temporal the worker reads every one of them, and refuses to start
(exit status 2) naming each host or the directory whose reference cannot be read, never the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, NoReturn

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.boundary import ErrorBoundary
from activities.campaign import CampaignActivities, forecast_campaign
from activities.directory import DirectoryActivities
from activities.errors import ConfigurationError
from activities.hosts import HostSessions
from activities.inventory import Inventory, InventoryError, load_inventory
from activities.migration import MigrationActivities
from activities.preflight import PreflightActivities
from activities.survey import SurveyActivities
from config.directory import SecretUnavailable
from config.settings import Settings, connect_client, load_settings
from workflows.campaign import CampaignCheckWorkflow, CampaignWorkflow
from workflows.contracts import (
    DIRECTORY_NOT_CONFIGURED,
    SECRETS_UNREADABLE,
    ActivityName,
    ComputerDelegation,
    DelegationHost,
    EnsureDelegationInput,
    EnsureDelegationResult,
    RevertDelegationResult,
    move_task_queue,
    watch_task_queue,
)
from workflows.host_slots import HostSlotsWorkflow
from workflows.migrate_vm import MigrateVmWorkflow, PreflightWorkflow
from workflows.migration_slots import MigrationSlotsWorkflow
from workflows.survey import SurveyHostsWorkflow

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


def activities_for(
    settings: Settings, inventory: Inventory, sessions: HostSessions | None = None, *, client: Client
) -> list[Callable[..., Any]]:
    """Every activity the workflows call, bound to this worker's inventory, host sessions and directory, one per
    name of the registry (`ActivityName`): a name left out, or registered under another name, stops the worker
    here.

    The move's percent travels in its heartbeat details, which `describe` shows: no signal, no workflow task."""
    sessions = sessions if sessions is not None else HostSessions(inventory)
    migration = MigrationActivities(inventory, poll_seconds=settings.move_poll_seconds, sessions=sessions)
    directory: DirectoryActivities | _NoDirectory = (
        DirectoryActivities(settings.directory) if settings.directory is not None else _NoDirectory()
    )
    registry: dict[ActivityName, Callable[..., Any]] = {
        ActivityName.PREFLIGHT: PreflightActivities(inventory, sessions=sessions).preflight,
        ActivityName.PREFLIGHT_BATCH: PreflightActivities(inventory, sessions=sessions).preflight_batch,
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
        ActivityName.WATCH_MOVE: CampaignActivities(client).watch_move,
        ActivityName.FORECAST_CAMPAIGN: forecast_campaign,
        ActivityName.SURVEY_HOST: SurveyActivities(inventory, sessions=sessions).survey_host,
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


WORKFLOWS: Sequence[type] = (
    MigrateVmWorkflow,
    PreflightWorkflow,
    MigrationSlotsWorkflow,
    HostSlotsWorkflow,
    CampaignWorkflow,
    CampaignCheckWorkflow,
    SurveyHostsWorkflow,
)


# How often a worker closes the host sessions that stayed idle past HostSessions' idle time.
IDLE_SWEEP_SECONDS = 30.0


class Workers:
    """The worker's three Temporal workers, started and stopped together.

    - the main one: every workflow and every activity, on `settings.task_queue`;
    - the moves one: the move activity alone, on `move_task_queue(task_queue)`, with its own concurrency
      (`max_concurrent_moves`) and threads. A move that holds both hosts' slots never waits for a worker slot
      behind reads, and the reads of other moves never wait behind long moves;
    - the watches one: the campaign's watch_move alone, on `watch_task_queue(task_queue)` (`max_concurrent_watches`;
      async, no thread): watches wait as long as their moves, and on the main queue they starved the steps of
      the very moves they waited for.
    The main worker still serves the move and watch activities for runs started before their queues existed.
    """

    def __init__(
        self,
        main: Worker,
        moves: Worker,
        watches: Worker,
        executors: Sequence[ThreadPoolExecutor],
        sessions: HostSessions,
    ) -> None:
        self.main = main
        self.moves = moves
        self.watches = watches
        self.executors = tuple(executors)
        self.sessions = sessions
        self._stack: contextlib.AsyncExitStack | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Workers:
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(self.main)
        await stack.enter_async_context(self.moves)
        await stack.enter_async_context(self.watches)
        self._stack = stack
        self._sweeper = asyncio.ensure_future(self._close_idle_sessions())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _close_idle_sessions(self) -> None:
        """A quiet worker still gives its hosts' shells back (each is one of the 25 a user may hold)."""
        while True:
            await asyncio.sleep(IDLE_SWEEP_SECONDS)
            try:
                await asyncio.to_thread(self.sessions.close_idle)
            except Exception:  # housekeeping must never stop the worker
                log.warning("closing idle host sessions failed", exc_info=True)


def build_worker(client: Client, settings: Settings, *, inventory: Inventory | None = None) -> Workers:
    """The workers: workflows and activities on the task queue, the move activity on its own queue; sync activities
    on thread pools sized to each worker's concurrency."""
    inventory = inventory or load_worker_inventory(settings)
    # One pool of host sessions for every activity of both workers (closed by release_worker).
    sessions = HostSessions(inventory, per_host=settings.sessions_per_host)
    activities = activities_for(settings, inventory, sessions, client=client)
    by_name = {activity_name(fn): fn for fn in activities}
    executor = ThreadPoolExecutor(max_workers=settings.max_concurrent_activities, thread_name_prefix="snlm-activity")
    move_executor = ThreadPoolExecutor(max_workers=settings.max_concurrent_moves, thread_name_prefix="snlm-move")
    common: dict[str, Any] = {
        "graceful_shutdown_timeout": timedelta(seconds=settings.graceful_shutdown_seconds),
        # The one place where the engine's errors become ApplicationErrors (type, remedy, retryability).
        "interceptors": [ErrorBoundary()],
        # Heartbeats go out at 0.8 x each activity's heartbeat timeout (the SDK's rule, uncapped): a cancel reaches
        # a move within its policy's move_heartbeat_seconds, and a long move costs a few actions a minute, not 30.
    }
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=activities,
        activity_executor=executor,
        max_concurrent_activities=settings.max_concurrent_activities,
        **common,
    )
    moves = Worker(
        client,
        task_queue=move_task_queue(settings.task_queue),
        activities=[by_name[ActivityName.START_OR_ATTACH_MOVE]],
        activity_executor=move_executor,
        max_concurrent_activities=settings.max_concurrent_moves,
        **common,
    )
    watches = Worker(
        client,
        task_queue=watch_task_queue(settings.task_queue),
        activities=[by_name[ActivityName.WATCH_MOVE]],
        max_concurrent_activities=settings.max_concurrent_watches,
        **common,
    )
    return Workers(main, moves, watches, (executor, move_executor), sessions)


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
    log.info(
        "worker serving task queues %s, %s and %s on %s",
        settings.task_queue,
        move_task_queue(settings.task_queue),
        watch_task_queue(settings.task_queue),
        settings.temporal_address,
    )
    try:
        async with worker:
            await stop.wait()
    finally:
        release_worker(worker)
        for sig in installed:
            loop.remove_signal_handler(sig)


def release_worker(workers: Workers) -> None:
    """Free the activity threads and close the host sessions `build_worker` made, once the workers have shut
    down."""
    for executor in workers.executors:
        executor.shutdown(wait=False, cancel_futures=True)
    workers.sessions.close_all()


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
