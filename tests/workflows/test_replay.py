"""Replay: the workflows must reproduce, command for command, the histories of runs that already happened.

Two directions:
- the committed histories (tests/workflows/histories/, written by `python -m tests.workflows.record_history`;
  `<name>@<commit>.json` are older code's, kept for the other side of a patch) replayed on today's code: a
  change that would break runs in flight (a step inserted without `workflow.patched`, a reordered activity)
  fails here;
- histories recorded now, by the same script's code against a real dev server and the lab, replayed at once:
  nondeterminism inside today's code (wall-clock time, randomness, iteration order) fails here.

A control proves the replayer has teeth: a changed MigrateVm replayed on the committed history must fail.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

with workflow.unsafe.imports_passed_through():
    import pytest
    import pytest_asyncio

    from benchmarks.replay_bench import history_from_json
    from tests.conftest import _binary
    from tests.workflows.record_history import HISTORIES, record_with_lab, start_dev_server
    from worker import WORKFLOWS as WORKER_WORKFLOWS
    from workflows.contracts import MigrateVmInput
    from workflows.host_slots import HostSlotsWorkflow
    from workflows.migrate_vm import PreflightWorkflow

# Every workflow the worker registers: a history of any of them replays on today's code.
WORKFLOWS = list(WORKER_WORKFLOWS)
EXPECTED = {
    "migrate_vm_success",
    "migrate_vm_approved",
    "migrate_vm_preflight_blocked",
    "preflight",
    "migration_slots",
    "campaign_run1",
    "campaign_run2",
}
COMMITTED = sorted(HISTORIES.glob("*.json"))


def _load(path: Path) -> WorkflowHistory:
    return history_from_json(path.read_text(encoding="utf-8"))


def test_the_committed_histories_are_there() -> None:
    assert {p.stem for p in COMMITTED} >= EXPECTED, "run: python -m tests.workflows.record_history"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    result = await Replayer(workflows=WORKFLOWS).replay_workflow(_load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


@workflow.defn(name="MigrateVm")
class _MigrateVmWithAStepInserted:
    """MigrateVm with an activity inserted before preflight and no `workflow.patched`: the classic mistake."""

    @workflow.run
    async def run(self, input: MigrateVmInput) -> None:
        await workflow.execute_activity("read_vm", input.vm, start_to_close_timeout=timedelta(minutes=1))


async def test_a_changed_workflow_fails_replay() -> None:
    history = _load(HISTORIES / "migrate_vm_success.json")
    replayer = Replayer(workflows=[_MigrateVmWithAStepInserted, PreflightWorkflow, HostSlotsWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, workflow.NondeterminismError), repr(result.replay_failure)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def recording_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this module's own: the runs start the namespace's slot book on this module's task queue."""
    env = await start_dev_server(_binary("temporal"))
    try:
        yield env
    finally:
        await env.shutdown()


async def test_fresh_histories_replay(recording_server: WorkflowEnvironment, tmp_path: Path) -> None:
    recorded = await record_with_lab(
        recording_server.client, tmp_path / "lab", task_queue=f"replay-{uuid.uuid4()}", suffix=f"-{uuid.uuid4()}"
    )
    assert set(recorded) == EXPECTED
    replayer = Replayer(workflows=WORKFLOWS)
    for name, text in sorted(recorded.items()):
        result = await replayer.replay_workflow(history_from_json(text), raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{name} (recorded now): {result.replay_failure!r}"
