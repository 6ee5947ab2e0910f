"""`snlm`: the operator's command line. It starts, queries, updates and cancels workflows; it never touches a host.

    snlm preflight web07 --from HV-S2 --to HV-S4
    snlm migrate web07 --from HV-S2 --to HV-S4 --wait
    snlm status web07@HV-S2
    snlm --output json status snlm-vm-web07@hv-s2

Every command connects to Temporal with the client factory the worker uses too (`config.settings.connect_client`),
so the data converter and interceptors are the same on both sides. Workflows, queries and updates are called by
name: the CLI needs the contract (`workflows/contracts.py`), not the workflow code.

A failed run is reported by its innermost cause, the error an activity or the saga itself raised, not the wrappers
Temporal puts around it: its type, message and remedy, and what the compensations did. The exit status follows
that error's class (EPILOG). A closed run's state comes from Temporal's description of it, not from the `progress`
query, whose last percent may be stale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import getpass
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, NoReturn

from starter import campaign_cli, plan_cli
from workflows.contracts import (
    DELEGATION_NOT_CONFIGURED,
    HA_CHOICE_REQUIRED,
    HA_RESTORE_IMPOSSIBLE,
    MIGRATION_SLOTS_RUN_EVENTS,
    PREFLIGHT_BLOCKED,
    SA_CAMPAIGN,
    SA_DESTINATION,
    SA_SOURCE,
    SA_TICKET,
    SA_VM,
    SEVERITY_BLOCKER,
    VM_NOT_FOUND,
    ApproveRequest,
    DelegationPolicy,
    GuestCheck,
    HaChoice,
    HaOutcome,
    MigrateVmInput,
    MigrateVmResult,
    MigrationPolicy,
    MigrationProgress,
    MigrationSlotsStatus,
    MoveHeartbeat,
    PreflightInput,
    PreflightReport,
    Step,
    migrate_vm_workflow_id,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PREFLIGHT_BLOCKED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_parser",
    "execute",
    "failure_info",
    "final_progress",
    "main",
    "query_progress",
    "start_migration",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIGURATION = EXIT_USAGE  # the request, the settings or the estate are wrong: the same fix as bad input
EXIT_PREFLIGHT_BLOCKED = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130

MIGRATE_WORKFLOW = "MigrateVm"
SLOTS_WORKFLOW = "MigrationSlots"
# A book's status lists every host up to this many; past it, the hosts holding or awaiting a slot.
SLOTS_HOSTS_SHOWN = 20
MOVE_ACTIVITY = "start_or_attach_move"
PREFLIGHT_WORKFLOW = "Preflight"
PREFLIGHT_WORKFLOW_PREFIX = "snlm-preflight-"
# Queries go to a worker: with none polling they would hang, so each one has a bound.
QUERY_TIMEOUT = timedelta(seconds=5)
POLL_SECONDS = 0.5
PREFLIGHT_TIMEOUT = timedelta(minutes=10)
GIB = 1024**3

EPILOG = """\
exit status:
  0    success (for status: the workflow is running or completed)
  1    the migration failed for a reason not listed below, was cancelled, terminated or timed out
  2    usage or bad input, or a configuration error: the request, the settings or the inventory are wrong
       (e.g. UnknownHost, InventoryInvalid for a password file that cannot be read; the remedy is printed)
  3    preflight found blockers (preflight, campaign check, or a migration stopped by its preflight); plan: some
       VM could not be placed
  4    not found: no workflow with that id, or no VM of that name on the source host (VmNotFound)
  5    cannot reach Temporal (check --address / TEMPORAL_ADDRESS), or a host or the directory stayed
       unreachable through every retry (HostUnreachable, DirectoryUnreachable and other transient errors)
  130  interrupted (Ctrl-C); a started migration keeps running in Temporal

a failed run prints its innermost cause: the error type, its message, the remedy, and what the compensations
did; with --output json the same as "failure": {type, kind, message, remedy, exit, activity, compensations,
compensation_failed, details}. A closed run's progress reads its final state: done 100 %, cancelled, failed,
terminated or timed-out.

environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE (or SNLM_TEMPORAL_*), SNLM_DELEGATION_POLICY and the other
SNLM_* settings of the worker (see config/settings.py).
IDs: a workflow id (snlm-vm-web07@hv-s2) or VM@HOST (web07@HV-S2).
"""

# Host names as an inventory spells them: a NetBIOS name or a DNS name.
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*$")


class CliError(Exception):
    """An error the CLI reports as one message and an exit status."""

    def __init__(self, code: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message
        self.extra = extra


# -- arguments --------------------------------------------------------------------------------------------------
def _host(flag: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip()
        if not _HOST_NAME.match(value):
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a host name (letters, digits and '-', optionally with a DNS domain)"
            )
        return value

    parse.__name__ = flag  # argparse names the type in its message
    return parse


def _vm_name(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise argparse.ArgumentTypeError("the VM name is empty")
    if any(ord(ch) < 32 for ch in stripped):
        raise argparse.ArgumentTypeError("the VM name contains control characters")
    return stripped


def _workflow_ref(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise argparse.ArgumentTypeError("the workflow id is empty")
    return stripped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snlm",
        description="Hyper-V shared-nothing live migration as durable Temporal workflows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output", choices=("text", "json"), default="text", help="text for people (default), json for scripts"
    )
    parser.add_argument("--address", help="Temporal frontend host:port (default: TEMPORAL_ADDRESS or 127.0.0.1:7233)")
    parser.add_argument("--namespace", help="Temporal namespace (default: TEMPORAL_NAMESPACE or default)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def route(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("vm", type=_vm_name, metavar="VM", help="the VM's name as Hyper-V knows it")
        sub.add_argument("--from", dest="source", required=True, type=_host("--from"), metavar="HOST")
        sub.add_argument("--to", dest="destination", required=True, type=_host("--to"), metavar="HOST")

    migrate = commands.add_parser(
        "migrate",
        help="start (or find the running) migration of one VM",
        description="Start the MigrateVm workflow for VM. A second request for the same VM and source host "
        "finds the running workflow instead of starting another.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    route(migrate)
    migrate.set_defaults(subparser=migrate)
    migrate.add_argument("--storage-path", help="destination folder for the VM's files (default: the host's own)")
    migrate.add_argument("--campaign", default="", help="campaign name, for filtering in the Temporal UI")
    migrate.add_argument("--ticket", default="", help="change ticket, for filtering in the Temporal UI")
    migrate.add_argument(
        "--delegation",
        choices=[p.value for p in DelegationPolicy],
        help="Kerberos delegation: manage (write it), verify (only check), skip (managed elsewhere); "
        "default SNLM_DELEGATION_POLICY or manage",
    )
    migrate.add_argument(
        "--ha",
        choices=[c.value for c in HaChoice],
        help="a clustered VM's high availability: restore (make its role in the destination's cluster) or drop "
        "(move it as a standalone VM); default: restored when the destination is a cluster node, otherwise the "
        "move refuses to start until you choose",
    )
    migrate.add_argument(
        "--guest-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long verify waits for the moved guest's heartbeat to read OK (default 120)",
    )
    migrate.add_argument(
        "--guest-check",
        choices=[c.value for c in GuestCheck],
        help="a guest still not OK then is a warning (default) or fails the run (the VM stays moved)",
    )
    migrate.add_argument(
        "--progress-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the move's heartbeat timeout: its percent is at most 0.8 x this old, a cancel reaches the host within "
        "it, and each heartbeat is a billed Temporal action (2-120, default 30: 2.5 actions per minute of move)",
    )
    migrate.add_argument("--require-approval", action="store_true", help="wait for `snlm approve` before changing")
    migrate.add_argument("--wait", action="store_true", help="follow the migration to its end and exit with it")

    preflight = commands.add_parser(
        "preflight",
        help="check a move without changing anything",
        description="Run the read-only Preflight workflow and print its report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    route(preflight)
    preflight.add_argument(
        "--storage-path", help="the destination folder the move would use (default: the host's own), checked too"
    )
    preflight.set_defaults(subparser=preflight)

    for name, text in (
        ("status", "show a workflow's state, progress and outcome"),
        ("cancel", "cancel a running migration (its compensations run)"),
    ):
        sub = commands.add_parser(name, help=text, description=text, epilog=EPILOG)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.add_argument("id", type=_workflow_ref, metavar="ID", help="workflow id, or VM@HOST")

    approve = commands.add_parser(
        "approve",
        help="approve (or reject) a migration waiting for approval",
        description="Send the approve update to a migration started with --require-approval.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    approve.add_argument("id", type=_workflow_ref, metavar="ID", help="workflow id, or VM@HOST")
    approve.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve.add_argument("--comment", default="", help="why, for the record")
    approve.add_argument("--approver", default=None, help="who decides (default: the current user)")
    campaign_cli.add_parser(commands, EPILOG)
    plan_cli.add_parser(commands, EPILOG)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say by itself; exits 2 with the message, as argparse does."""
    parser = getattr(args, "subparser", parser)
    if args.command in ("migrate", "preflight") and args.source.casefold() == args.destination.casefold():
        parser.error(f"--from and --to are the same host ({args.source})")
    if args.command in ("migrate", "preflight") and args.storage_path is not None and not args.storage_path.strip():
        parser.error("--storage-path is empty")
    if args.command == "migrate" and args.guest_timeout is not None and not 0 <= args.guest_timeout <= 86400:
        parser.error(f"--guest-timeout must be between 0 and 86400 seconds, not {args.guest_timeout:g}")
    if args.command == "migrate" and args.progress_every is not None and not 2 <= args.progress_every <= 120:
        parser.error(f"--progress-every must be between 2 and 120 seconds, not {args.progress_every:g}")


def resolve_id(ref: str) -> str:
    """A workflow id as given, or `VM@HOST` turned into the migration's id."""
    if "@" in ref and not ref.startswith(("snlm-", PREFLIGHT_WORKFLOW_PREFIX)):
        vm, _, host = ref.rpartition("@")
        if vm and host:
            return migrate_vm_workflow_id(vm, host)
    return ref


# -- output -----------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, enums as their values, datetimes as ISO text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class Output:
    """Text for people on stdout (notes on stderr), or one JSON document on stdout for scripts."""

    def __init__(self, mode: str, stream: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.json = mode == "json"
        self.out = stream or sys.stdout
        self.err = err or sys.stderr

    def line(self, text: str = "") -> None:
        if not self.json:
            print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A side remark (stderr), shown in both modes so a script's stdout stays one JSON document."""
        print(text, file=self.err, flush=True)

    def document(self, doc: dict[str, Any]) -> None:
        if self.json:
            print(json.dumps(_plain(doc), indent=2, sort_keys=True), file=self.out, flush=True)

    def error(self, error: CliError) -> None:
        if self.json:
            self.document({"error": {"kind": error.kind, "message": error.message, "exit": error.code, **error.extra}})
        else:
            print(f"snlm: {error.message}", file=self.err, flush=True)


def _bytes(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _progress_text(p: MigrationProgress) -> str:
    parts = [f"{p.step.value if isinstance(p.step, enum.Enum) else p.step:<12}"]
    if p.bytes_total or p.percent:
        parts.append(f"{p.percent:3d}%")
    if p.bytes_total:
        parts.append(f"{_bytes(p.bytes_done)} / {_bytes(p.bytes_total)}")
    if p.attempt > 1:
        parts.append(f"attempt {p.attempt}")
    if p.waiting_for:
        parts.append(f"waiting for {p.waiting_for}")
    return "  ".join(parts)


# A closed run's step, from its status in Temporal: the `progress` query of a finished run can hold a stale percent
# (a progress signal lost in a restart) or the step it had before the cancel reached it.
_FINAL_STEP = {
    "COMPLETED": Step.DONE.value,
    "CANCELED": Step.CANCELLED.value,
    "FAILED": Step.FAILED.value,
    "TERMINATED": "terminated",
    "TIMED_OUT": "timed-out",
}


def final_progress(status: str, vm: str, source: str, destination: str) -> dict[str, Any]:
    """The progress document of a closed run (same fields as the `progress` query): done at 100 %, or its end state.

    Bytes and attempts are not known without the query and read 0.
    """
    return {
        "vm": vm,
        "source": source,
        "destination": destination,
        "step": _FINAL_STEP.get(status, status.lower()),
        "percent": 100 if status == "COMPLETED" else 0,
        "bytes_done": 0,
        "bytes_total": 0,
        "attempt": 0,
        "waiting_for": "",
    }


def _final_text(final: dict[str, Any]) -> str:
    return f"{final['step']:<12}  100%" if final["percent"] == 100 else str(final["step"])


class ProgressView:
    """A live bar on a terminal (rich, redrawn in place, the same library as the campaign view), or a plain line
    whenever something changes (a pipe, a log)."""

    def __init__(self, out: Output, label: str) -> None:
        self.out = out
        self.label = label
        self.tty = not out.json and out.out.isatty()
        self.last = ""
        self.last_percent = -100
        self._live: Any = None
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=out.out), auto_refresh=False, transient=False)
            self._live.start()

    def _draw(self, percent: int, text: str) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        row = Table.grid(padding=(0, 2))
        row.add_row(self.label, ProgressBar(total=100, completed=percent, width=30), text)
        self._live.update(row, refresh=True)

    def show(self, p: MigrationProgress) -> None:
        if self.out.json:
            return
        text = _progress_text(p)
        if self._live is not None:
            self._draw(p.percent, text)
            return
        # Plain lines: on a new step, or every 10 % of the move, so a log stays readable.
        key = f"{p.step}|{p.waiting_for}|{p.attempt}"
        if key != self.last or p.percent >= self.last_percent + 10:
            self.out.line(f"{self.label}  {text}")
            self.last = key
            self.last_percent = p.percent

    def finish(self, final: dict[str, Any]) -> None:
        """The run's end state as the last line (the bar at 100 % when done)."""
        if self.out.json:
            return
        if self._live is not None:
            self._draw(int(final["percent"]), _final_text(final))
        else:
            self.out.line(f"{self.label}  {_final_text(final)}")

    def done(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


# -- Temporal ---------------------------------------------------------------------------------------------------
async def _connect(args: argparse.Namespace) -> tuple[Client, Any]:
    # Imported here so that `snlm --help` and argument errors answer at once, without loading Temporal's client.
    from config.settings import Settings, connect_client

    overrides: dict[str, Any] = {}
    if args.address:
        overrides["temporal_address"] = args.address
    if args.namespace:
        overrides["temporal_namespace"] = args.namespace
    try:
        settings = Settings(**overrides)
    except Exception as error:
        # pydantic's message names the field and the problem; settings hold no secret values (only references).
        raise CliError(EXIT_USAGE, "settings", f"invalid settings: {error}") from None
    try:
        client = await asyncio.wait_for(connect_client(settings), timeout=15)
    except Exception as error:
        raise CliError(
            EXIT_UNREACHABLE,
            "unreachable",
            f"cannot reach Temporal at {settings.temporal_address} (namespace {settings.temporal_namespace}): "
            f"{_first_line(error)}",
        ) from None
    return client, settings


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _rpc_error(error: Exception, workflow_id: str) -> CliError | None:
    from temporalio.service import RPCError, RPCStatusCode

    if not isinstance(error, RPCError):
        return None
    if error.status == RPCStatusCode.NOT_FOUND:
        return CliError(EXIT_NOT_FOUND, "not_found", f"no workflow with id {workflow_id}", workflow_id=workflow_id)
    if error.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return CliError(EXIT_UNREACHABLE, "unreachable", f"Temporal did not answer: {_first_line(error)}")
    if error.status == RPCStatusCode.INVALID_ARGUMENT:
        return CliError(EXIT_USAGE, "invalid", f"Temporal refused the request: {error.message}")
    return None


# Errors the saga raises itself carry no `kind` detail (the activities' engine errors do): their class by type.
_KIND_BY_TYPE = {
    PREFLIGHT_BLOCKED: "configuration",
    HA_CHOICE_REQUIRED: "configuration",
    HA_RESTORE_IMPOSSIBLE: "configuration",
    DELEGATION_NOT_CONFIGURED: "configuration",
}
# The exit status of a failed run: by type where the type says more than its kind, else by the kind.
_EXIT_BY_TYPE = {PREFLIGHT_BLOCKED: EXIT_PREFLIGHT_BLOCKED, VM_NOT_FOUND: EXIT_NOT_FOUND}
_EXIT_BY_KIND = {"configuration": EXIT_CONFIGURATION, "transient": EXIT_UNREACHABLE}
_REMEDY_MARK = " Remedy: "  # how the engine's errors (and the saga's own) append the remedy to the message


def _causes(error: BaseException) -> list[BaseException]:
    """The error and its causes, outermost first (WorkflowFailureError -> ApplicationError -> ActivityError ...)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__
    return chain


def _engine_detail(error: BaseException) -> dict[str, Any] | None:
    """The detail an engine error puts first in its ApplicationError: kind, error_type, remedy and its facts."""
    from temporalio.exceptions import ApplicationError

    if isinstance(error, ApplicationError) and error.details and isinstance(error.details[0], dict):
        first: dict[str, Any] = error.details[0]
        if "error_type" in first or "kind" in first:
            return first
    return None


def failure_info(error: BaseException) -> dict[str, Any]:
    """A failed run (WorkflowFailureError) or update as its innermost cause, one stable document.

    Temporal wraps what an activity raised: the saga re-raises it after compensation as an ApplicationError of the
    same type whose cause is the ActivityError, whose cause is the activity's own ApplicationError with the remedy
    in its details. The wrappers (ActivityError, ChildWorkflowError) say only "Activity task failed"; the innermost
    ApplicationError says what is wrong and what to do, and the outermost one what the compensations did.

    Returns `type`, `kind` (configuration, transient, admission, unknown; "" when not known), `message` (without
    the appended remedy), `remedy`, `exit` (the status this failure exits with), `activity` (the activity that
    raised it, "" for none), `compensations` (step, ok, detail), `compensation_failed` and `details` (the innermost
    error's details: the preflight report for PreflightBlocked).
    """
    from temporalio.exceptions import (
        ActivityError,
        ApplicationError,
        CancelledError,
        ChildWorkflowError,
        TerminatedError,
        TimeoutError,
    )

    chain = _causes(error)
    applications = [e for e in chain if isinstance(e, ApplicationError)]
    activities = [e for e in chain if isinstance(e, ActivityError)]
    compensations: list[Any] = []
    compensation_failed = False
    for outer in applications:
        if outer.details and isinstance(outer.details[0], dict) and "compensations" in outer.details[0]:
            compensations = list(outer.details[0].get("compensations") or [])
            compensation_failed = bool(outer.details[0].get("compensation_failed"))
            break
    info = _failure_doc(
        "",
        "",
        activity=activities[-1].activity_type if activities else "",
        compensations=compensations,
        compensation_failed=compensation_failed,
    )
    if applications:
        with_detail = [e for e in applications if _engine_detail(e) is not None]
        inner = with_detail[-1] if with_detail else applications[-1]
        engine = _engine_detail(inner) or {}
        message = inner.message
        remedy = str(engine.get("remedy") or "")
        if remedy and message.endswith(_REMEDY_MARK + remedy):
            message = message.removesuffix(_REMEDY_MARK + remedy)
        elif not remedy and _REMEDY_MARK in message:
            message, _, remedy = message.partition(_REMEDY_MARK)
        error_type = inner.type or "ApplicationError"
        info.update(
            type=error_type,
            message=message,
            remedy=remedy,
            kind=str(engine.get("kind") or _KIND_BY_TYPE.get(error_type, "")),
            details=list(inner.details),
        )
    else:
        # No application error: the run (or an activity) was cancelled, terminated or timed out.
        innermost = next(
            (e for e in reversed(chain) if not isinstance(e, ActivityError | ChildWorkflowError)), chain[-1]
        )
        where = f"activity {info['activity']}" if info["activity"] else "the workflow"
        if isinstance(innermost, CancelledError):
            info.update(type="Cancelled", message=f"{where} was cancelled")
        elif isinstance(innermost, TerminatedError):
            info.update(type="Terminated", message=innermost.message or f"{where} was terminated")
        elif isinstance(innermost, TimeoutError):
            kind = innermost.type.name.lower().replace("_", "-") if innermost.type is not None else ""
            info.update(type="TimedOut", message=f"{where} timed out" + (f" ({kind})" if kind else ""))
        else:
            info.update(type=type(innermost).__name__, message=str(innermost) or type(innermost).__name__)
    info["exit"] = _EXIT_BY_TYPE.get(info["type"]) or _EXIT_BY_KIND.get(info["kind"], EXIT_FAILED)
    return info


def _failure_doc(error_type: str, message: str, **fields: Any) -> dict[str, Any]:
    """A failure document with every field present, so scripts read the same keys whatever failed."""
    doc: dict[str, Any] = {
        "type": error_type,
        "kind": "",
        "message": message,
        "remedy": "",
        "exit": EXIT_FAILED,
        "activity": "",
        "compensations": [],
        "compensation_failed": False,
        "details": [],
    }
    doc.update(fields)
    return doc


def _exit_for_failure(failure: dict[str, Any]) -> int:
    code: int = failure.get("exit", EXIT_FAILED)
    return code


def _blockers_from_details(details: Sequence[Any]) -> list[dict[str, Any]]:
    """The blockers of a PreflightBlocked failure, whose first detail is the report (a plain dict on this side)."""
    if not details or not isinstance(details[0], dict):
        return []
    concerns = details[0].get("concerns") or []
    return [c for c in concerns if isinstance(c, dict) and c.get("severity") == SEVERITY_BLOCKER]


async def query_progress(handle: WorkflowHandle[Any, Any]) -> MigrationProgress | None:
    """The `progress` query, with the move's percent and attempt while the host copies.

    The workflow knows its step, not how far the host's job is: the move activity reports that in its heartbeat
    details (a MoveHeartbeat), which Temporal keeps with the pending activity and describe() shows, so a move's
    progress costs no signal and no workflow task. Fresh to within 0.8 x the policy's move_heartbeat_seconds.
    Best effort: None when no worker answers in time or the workflow just closed.
    """
    try:
        progress: MigrationProgress = await handle.query(
            "progress", result_type=MigrationProgress, rpc_timeout=QUERY_TIMEOUT
        )
    except Exception:
        return None
    if progress.step != Step.MOVE:
        return progress
    try:
        description = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
    except Exception:
        return progress
    pending = [p for p in description.raw_description.pending_activities if p.activity_type.name == MOVE_ACTIVITY]
    if not pending:
        return progress
    move = pending[0]
    if move.attempt > progress.attempt:
        progress = dataclasses.replace(progress, attempt=move.attempt)
    beat = await _move_heartbeat(move.heartbeat_details.payloads)
    if beat is not None and beat.percent >= progress.percent:
        progress = dataclasses.replace(
            progress, percent=beat.percent, bytes_done=beat.bytes_done, bytes_total=beat.bytes_total
        )
    return progress


async def _move_heartbeat(payloads: Sequence[Any]) -> MoveHeartbeat | None:
    """The move's last heartbeat details, decoded with the converter the client and worker use (None before the
    first heartbeat)."""
    from temporalio.converter import DataConverter

    if not payloads:
        return None
    try:
        values = await DataConverter.default.decode(list(payloads[:1]), [MoveHeartbeat])
    except Exception:
        return None  # a heartbeat of another shape (an older worker): the query's answer stands
    beat = values[0] if values else None
    return beat if isinstance(beat, MoveHeartbeat) else None


async def _warn_without_worker(client: Client, task_queue: str, out: Output) -> None:
    """Say so when no worker polls the queue: the workflow would wait, silently, until one starts."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    try:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=QUERY_TIMEOUT,
        )
    except Exception:
        return
    if not answer.pollers:
        out.note(f"note: no worker is polling task queue {task_queue}; the workflow waits until one starts")


# -- commands ---------------------------------------------------------------------------------------------------
async def start_migration(
    client: Client, request: MigrateVmInput, *, task_queue: str
) -> tuple[WorkflowHandle[Any, MigrateVmResult], bool]:
    """Start MigrateVm for `request`, or find the one already running for the same VM and source.

    Returns the handle and whether this call started it (False: it attached to the running workflow).
    """
    from temporalio.common import (
        SearchAttributeKey,
        SearchAttributePair,
        TypedSearchAttributes,
        WorkflowIDConflictPolicy,
        WorkflowIDReusePolicy,
    )
    from temporalio.exceptions import WorkflowAlreadyStartedError

    if not request.policy.slot_book:
        # The book of host slots of the queue's workers: a site's moves never wait on another site's workers.
        request = dataclasses.replace(request, policy=dataclasses.replace(request.policy, slot_book=task_queue))
    workflow_id = migrate_vm_workflow_id(request.vm, request.source)
    # Set at the start as well as by the workflow itself, so the UI can filter the run before its first task.
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in (
                (SA_VM, request.vm),
                (SA_SOURCE, request.source),
                (SA_DESTINATION, request.destination),
                (SA_CAMPAIGN, request.campaign),
                (SA_TICKET, request.ticket),
            )
        ]
    )
    try:
        handle: WorkflowHandle[Any, MigrateVmResult] = await client.start_workflow(
            MIGRATE_WORKFLOW,
            request,
            id=workflow_id,
            task_queue=task_queue,
            result_type=MigrateVmResult,
            # One move per VM and source at a time: a second request while one runs finds it (FAIL -> the error
            # below, then attach); after it closed, a new request may move the VM again (it may have come back).
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=attributes,
        )
    except WorkflowAlreadyStartedError as already:
        return client.get_workflow_handle(workflow_id, run_id=already.run_id, result_type=MigrateVmResult), False
    except Exception as error:
        raise _rpc_error(error, workflow_id) or error from None
    return handle, True


def _policy(args: argparse.Namespace, delegation: DelegationPolicy) -> MigrationPolicy:
    """The request's policy: the defaults, and what the command line says."""
    fields: dict[str, Any] = {"delegation": delegation, "require_approval": args.require_approval}
    if args.ha:
        fields["ha"] = HaChoice(args.ha)
    if args.guest_timeout is not None:
        fields["guest_timeout_seconds"] = args.guest_timeout
    if args.guest_check:
        fields["guest_check"] = GuestCheck(args.guest_check)
    if args.progress_every is not None:
        fields["move_heartbeat_seconds"] = args.progress_every
    return MigrationPolicy(**fields)


async def cmd_migrate(client: Client, settings: Any, args: argparse.Namespace, out: Output) -> int:
    delegation = DelegationPolicy(args.delegation) if args.delegation else DelegationPolicy(settings.delegation_policy)
    request = MigrateVmInput(
        vm=args.vm,
        source=args.source,
        destination=args.destination,
        storage_path=args.storage_path,
        policy=_policy(args, delegation),
        campaign=args.campaign,
        ticket=args.ticket,
    )
    workflow_id = migrate_vm_workflow_id(args.vm, args.source)
    handle, started = await start_migration(client, request, task_queue=settings.task_queue)

    if not started:
        running = await query_progress(handle)
        if running is not None and running.destination.casefold() != args.destination.casefold():
            raise CliError(
                EXIT_USAGE,
                "conflict",
                f"a migration of {args.vm} from {args.source} to {running.destination} is already running "
                f"({workflow_id}); cancel it first or wait for it to end",
                workflow_id=workflow_id,
            )
    doc: dict[str, Any] = {
        "workflow_id": handle.id,
        "run_id": handle.result_run_id,
        "started": started,
        "vm": request.vm,
        "source": request.source,
        "destination": request.destination,
        "delegation": delegation.value,
    }
    if started:
        out.line(f"started {handle.id}: {request.vm} {request.source} -> {request.destination}")
    else:
        out.line(
            f"already running: {handle.id} ({request.vm} from {request.source}); following it, not starting another"
        )
    await _warn_without_worker(client, settings.task_queue, out)
    if args.require_approval and started:
        out.line(f"waiting for approval: snlm approve {handle.id} [--reject]")
    if not args.wait:
        out.line(f"follow it with: snlm status {handle.id}")
        doc["status"] = "RUNNING"
        out.document(doc)
        return EXIT_OK
    code, outcome = await _follow(handle, out, request)
    doc.update(outcome)
    out.document(doc)
    return code


# The status a failure implies, should describe() not answer once the run has closed.
_STATUS_BY_FAILURE = {"Cancelled": "CANCELED", "Terminated": "TERMINATED", "TimedOut": "TIMED_OUT"}


async def _follow(handle: WorkflowHandle[Any, Any], out: Output, request: MigrateVmInput) -> tuple[int, dict[str, Any]]:
    """Show progress until the workflow closes; the exit status and the outcome for the JSON document.

    The end state is Temporal's (describe), not the last answer of the `progress` query.
    """
    from temporalio.client import WorkflowFailureError

    view = ProgressView(out, f"{request.vm} {request.source}->{request.destination}")
    started = time.monotonic()
    result_task = asyncio.ensure_future(handle.result())
    try:
        while not result_task.done():
            progress = await query_progress(handle)
            if progress is not None:
                view.show(progress)
            await asyncio.wait([result_task], timeout=POLL_SECONDS)
    except BaseException:
        view.done()
        raise
    finally:
        if not result_task.done():
            result_task.cancel()
    seconds = round(time.monotonic() - started, 1)
    result: MigrateVmResult | None = None
    failure: dict[str, Any] | None = None
    try:
        result = result_task.result()
    except WorkflowFailureError as error:
        failure = failure_info(error)
    except Exception as error:
        view.done()
        raise _rpc_error(error, handle.id) or error from None
    status = "COMPLETED" if failure is None else _STATUS_BY_FAILURE.get(failure["type"], "FAILED")
    # Best effort: should Temporal not answer now, the outcome above already says how the run ended.
    with contextlib.suppress(Exception):
        description = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
        if description.status is not None:
            status = description.status.name
    final = final_progress(status, request.vm, request.source, request.destination)
    view.finish(final)
    view.done()
    outcome: dict[str, Any] = {
        "status": status,
        "progress": final,
        "result": result,
        "failure": failure,
        "seconds": seconds,
    }
    if failure is not None:
        _print_failure(out, failure)
        return _exit_for_failure(failure), outcome
    assert result is not None
    _print_result(out, result)
    return EXIT_OK, outcome


def _print_result(out: Output, result: MigrateVmResult) -> None:
    if result.already_there:
        out.line(f"{result.vm} was already on {result.destination}: nothing moved")
    else:
        out.line(f"{result.vm} moved from {result.source} to {result.destination}")
    for label, values in (
        ("delegation added", result.delegation_added),
        ("settings changed on", result.settings_changed),
        ("cleaned on source", result.cleaned_source_files),
        ("warnings", result.warnings),
    ):
        if values:
            out.line(f"  {label}: {', '.join(values)}")
    out.line(f"  high availability: {_ha_text(result)}")


def _ha_text(result: MigrateVmResult) -> str:
    """Where the VM's cluster role is after the move, in words."""
    if result.ha == HaOutcome.RESTORED_ON_DESTINATION:
        return f"role in cluster {result.ha_cluster} on {result.destination}"
    if result.ha == HaOutcome.DROPPED:
        return "dropped as asked (--ha drop): the VM is no longer highly available"
    return "not clustered"


_HEADLINES = {"Cancelled": "CANCELLED", "Terminated": "TERMINATED", "TimedOut": "TIMED OUT"}


def _print_failure(out: Output, failure: dict[str, Any]) -> None:
    headline = _HEADLINES.get(failure["type"])
    out.line(f"{headline}: {failure['message']}" if headline else f"FAILED ({failure['type']}): {failure['message']}")
    if failure.get("remedy"):
        out.line(f"  remedy: {failure['remedy']}")
    if failure.get("compensations"):
        outcomes = "; ".join(
            f"{c.get('step')}: {'ok' if c.get('ok') else 'FAILED ' + str(c.get('detail') or '')}".rstrip()
            for c in failure["compensations"]
            if isinstance(c, dict)
        )
        out.line(f"  compensation: {outcomes}")
        if failure.get("compensation_failed"):
            out.line("  a compensation failed: what it names is left to undo by hand")
    if failure["type"] == PREFLIGHT_BLOCKED:
        for concern in _blockers_from_details(failure.get("details") or []):
            out.line(f"  blocker {concern.get('id')}: {concern.get('message')}")
            if concern.get("remedy"):
                out.line(f"    remedy: {concern['remedy']}")


def render_report(report: PreflightReport) -> list[str]:
    """The preflight report as a table a person reads."""
    verdict = "OK: no blockers" if report.ok else f"BLOCKED: {len(report.blockers)} blocker(s)"
    lines = [f"preflight {report.vm}: {report.source} -> {report.destination}   {verdict}", ""]
    if report.concerns:
        rows = [
            (c.severity, c.id, c.host or "-", "yes" if c.auto_remediable else "no", c.message, c.remedy)
            for c in report.concerns
        ]
        widths = [max(len(header), *(len(r[i]) for r in rows)) for i, header in enumerate(("SEVERITY", "ID", "HOST"))]
        lines.append(f"  {'SEVERITY':<{widths[0]}}  {'ID':<{widths[1]}}  {'HOST':<{widths[2]}}  AUTO  MESSAGE")
        for severity, cid, host, auto, message, remedy in rows:
            lines.append(f"  {severity:<{widths[0]}}  {cid:<{widths[1]}}  {host:<{widths[2]}}  {auto:<4}  {message}")
            if remedy:
                lines.append(f"  {'':<{widths[0] + widths[1] + widths[2] + 10}}remedy: {remedy}")
    else:
        lines.append("  no concerns")
    if report.facts:
        lines.append("")
        lines.append("  facts:")
        width = max(len(k) for k in report.facts)
        lines += [f"    {key:<{width}}  {value}" for key, value in sorted(report.facts.items())]
    return lines


def _report_doc(report: PreflightReport) -> dict[str, Any]:
    doc: dict[str, Any] = _plain(report)
    doc["ok"] = report.ok
    doc["blockers"] = [c.id for c in report.blockers]
    return doc


async def cmd_preflight(client: Client, settings: Any, args: argparse.Namespace, out: Output) -> int:
    from temporalio.client import WorkflowFailureError

    workflow_id = f"{PREFLIGHT_WORKFLOW_PREFIX}{args.vm.lower()}@{args.source.lower()}-{uuid.uuid4().hex[:8]}"
    await _warn_without_worker(client, settings.task_queue, out)
    try:
        report: PreflightReport = await client.execute_workflow(
            PREFLIGHT_WORKFLOW,
            PreflightInput(
                vm=args.vm, source=args.source, destination=args.destination, storage_path=args.storage_path
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            result_type=PreflightReport,
            execution_timeout=PREFLIGHT_TIMEOUT,
        )
    except WorkflowFailureError as error:
        failure = failure_info(error)
        out.line(f"preflight could not run ({failure['type']}): {failure['message']}")
        if failure["remedy"]:
            out.line(f"  remedy: {failure['remedy']}")
        out.document({"workflow_id": workflow_id, "status": "FAILED", "failure": failure})
        return _exit_for_failure(failure)
    except Exception as error:
        raise _rpc_error(error, workflow_id) or error from None
    for line in render_report(report):
        out.line(line)
    out.document({"workflow_id": workflow_id, "status": "COMPLETED", "report": _report_doc(report)})
    return EXIT_OK if report.ok else EXIT_PREFLIGHT_BLOCKED


async def cmd_status(client: Client, settings: Any, args: argparse.Namespace, out: Output) -> int:
    from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

    workflow_id = resolve_id(args.id)
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except Exception as error:
        raise _rpc_error(error, workflow_id) or error from None
    status = description.status.name if description.status is not None else "UNKNOWN"
    attributes = {key.name: value for key, value in description.typed_search_attributes}
    doc: dict[str, Any] = {
        "workflow_id": description.id,
        "run_id": description.run_id,
        "type": description.workflow_type,
        "status": status,
        "start_time": description.start_time,
        "close_time": description.close_time,
        "search_attributes": attributes,
        "progress": None,
        "result": None,
        "failure": None,
    }
    out.line(f"{description.id}  {description.workflow_type}  {status}")
    out.line(f"  started {description.start_time:%Y-%m-%d %H:%M:%S %Z}")
    if description.close_time is not None:
        elapsed = (description.close_time - description.start_time).total_seconds()
        out.line(f"  closed  {description.close_time:%Y-%m-%d %H:%M:%S %Z} ({elapsed:.1f} s)")
    shown = {k: v for k, v in attributes.items() if k.startswith("Snlm") and v}
    if shown:
        out.line("  " + "  ".join(f"{k.removeprefix('Snlm').lower()}={v}" for k, v in sorted(shown.items())))
    code = EXIT_OK
    running = description.status == WorkflowExecutionStatus.RUNNING
    migration = description.workflow_type == MIGRATE_WORKFLOW
    if migration and running:
        progress = await query_progress(handle)
        doc["progress"] = progress
        if progress is not None:
            out.line(f"  progress: {_progress_text(progress)}")
        else:
            out.line("  progress: no worker answered the query")
    elif description.workflow_type == SLOTS_WORKFLOW and running:
        doc["slots"] = await _show_slots(handle, description.raw_description, out)
    elif migration:
        # Closed: the state is Temporal's; the query would replay the run and may answer a stale percent.
        final = final_progress(
            status,
            str(attributes.get(SA_VM) or ""),
            str(attributes.get(SA_SOURCE) or ""),
            str(attributes.get(SA_DESTINATION) or ""),
        )
        doc["progress"] = final
        out.line(f"  progress: {_final_text(final)}")
    if running:
        pass
    elif description.status == WorkflowExecutionStatus.COMPLETED:
        result = await (
            client.get_workflow_handle(workflow_id, result_type=MigrateVmResult).result()
            if migration
            else handle.result()
        )
        doc["result"] = result
        if isinstance(result, MigrateVmResult):
            _print_result(out, result)
        elif isinstance(result, dict):
            out.line("  result: " + json.dumps(result, sort_keys=True))
        else:
            out.line(f"  result: {result}")
    else:
        try:
            await handle.result()
        except WorkflowFailureError as error:
            failure = failure_info(error)
        except Exception as error:
            failure = _failure_doc(status.title(), _first_line(error))
        else:  # pragma: no cover - a closed, not completed run always raises
            failure = _failure_doc(status.title(), status.lower())
        doc["failure"] = failure
        _print_failure(out, failure)
        code = _exit_for_failure(failure)
    out.document(doc)
    return code


async def _show_slots(handle: WorkflowHandle[Any, Any], raw: Any, out: Output) -> dict[str, Any] | None:
    """A slot book's hosts (slots in use of capacity, the host's own limit, the peak, requests waiting) and its run."""
    events = raw.workflow_execution_info.history_length
    try:
        status: MigrationSlotsStatus = await handle.query(
            "status", result_type=MigrationSlotsStatus, rpc_timeout=QUERY_TIMEOUT
        )
    except Exception:
        out.line("  slots: no worker answered the query")
        return None
    out.line(
        f"  slots: {len(status.holders)} moves hold slots, {len(status.waiters)} wait; this run "
        f"{events} history events (each run continues as new near {MIGRATION_SLOTS_RUN_EVENTS:,})"
    )
    hosts = sorted(status.hosts, key=lambda use: use.host.casefold())
    shown = hosts if len(hosts) <= SLOTS_HOSTS_SHOWN else [h for h in hosts if h.in_use or h.waiting]
    if shown:
        width = max(4, *(len(use.host) for use in shown))
        out.line(f"  {'HOST':<{width}}  IN USE  CAPACITY  LIMIT  PEAK  WAITING")
        for use in shown:
            out.line(
                f"  {use.host:<{width}}  {use.in_use:>6}  {use.capacity:>8}  {use.host_limit:>5}  "
                f"{use.peak_in_use:>4}  {use.waiting:>7}"
            )
    if len(shown) < len(hosts):
        out.line(f"  ({len(hosts) - len(shown)} more hosts with every slot free and nothing waiting)")
    return {
        "history_events": events,
        "holders": [_plain(holder) for holder in status.holders],
        "waiters": [_plain(waiter) for waiter in status.waiters],
        "hosts": [_plain(use) for use in hosts],
    }


async def cmd_cancel(client: Client, settings: Any, args: argparse.Namespace, out: Output) -> int:
    from temporalio.client import WorkflowExecutionStatus

    workflow_id = resolve_id(args.id)
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
        status = description.status.name if description.status is not None else "UNKNOWN"
        if description.status != WorkflowExecutionStatus.RUNNING:
            out.line(f"nothing to cancel: {workflow_id} is already {status}")
            out.document({"workflow_id": workflow_id, "cancel_requested": False, "status": status})
            return EXIT_OK
        await handle.cancel()
    except Exception as error:
        raise _rpc_error(error, workflow_id) or error from None
    out.line(f"cancellation requested for {workflow_id}: its compensations run before it ends")
    out.document({"workflow_id": workflow_id, "cancel_requested": True, "status": "RUNNING"})
    return EXIT_OK


async def cmd_approve(client: Client, settings: Any, args: argparse.Namespace, out: Output) -> int:
    from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError

    workflow_id = resolve_id(args.id)
    approver = args.approver or getpass.getuser()
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            status = description.status.name if description.status is not None else "UNKNOWN"
            raise CliError(
                EXIT_USAGE,
                "not_running",
                f"{workflow_id} is {status}: there is nothing to approve",
                workflow_id=workflow_id,
            )
        answer: str = await handle.execute_update(
            "approve",
            ApproveRequest(approver=approver, approved=not args.reject, comment=args.comment),
            result_type=str,
            rpc_timeout=timedelta(seconds=30),
        )
    except WorkflowUpdateFailedError as error:
        failure = failure_info(error)
        raise CliError(
            EXIT_USAGE, "refused", f"{workflow_id} refused the decision: {failure['message']}", workflow_id=workflow_id
        ) from None
    except CliError:
        raise
    except Exception as error:
        raise _rpc_error(error, workflow_id) or error from None
    out.line(f"{workflow_id}: {answer} by {approver}")
    out.document({"workflow_id": workflow_id, "approved": not args.reject, "approver": approver, "answer": answer})
    return EXIT_OK


COMMANDS = {
    "migrate": cmd_migrate,
    "preflight": cmd_preflight,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "approve": cmd_approve,
}


async def run(args: argparse.Namespace, out: Output) -> int:
    """Run a parsed command; CliError leaves as its message and exit status."""
    try:
        if args.command == "campaign":
            return await campaign_cli.run(args, out, _connect)
        if args.command == "plan":
            return await plan_cli.run(args, out, _connect)
        client, settings = await _connect(args)
        return await COMMANDS[args.command](client, settings, args, out)
    except CliError as error:
        out.error(error)
        return error.code


async def execute(
    argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """`snlm ARGV` inside a running event loop (what tests and other async callers use); usage errors exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    return await run(args, Output(args.output, stdout, stderr))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    try:
        code = asyncio.run(execute(argv))
    except BrokenPipeError:
        # The reader went away (`snlm ... | head`): nothing more to say, and nothing to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    except KeyboardInterrupt:
        print("snlm: interrupted (a started migration keeps running in Temporal)", file=sys.stderr)
        code = EXIT_INTERRUPTED
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Leave without interpreter teardown once the work is done and the output flushed.

    The Temporal client's Rust runtime keeps threads that can outlive the event loop; tearing the interpreter
    down under them sometimes aborts the process ("PyGILState_Release ... must be current", temporalio
    sdk-python issue 300), which would turn a successful command into exit status 134.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
