"""benchmarks/replay_bench.py: full replays of saved histories, timed, and `save_histories` that saves them."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from benchmarks.harness import save_histories
from benchmarks.replay_bench import load_history, replay

REPO = Path(__file__).resolve().parents[2]
HISTORIES = REPO / "tests" / "workflows" / "histories"


def _bench(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.replay_bench", *map(str, arguments)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_campaign_history_replays_with_its_events_tasks_and_the_costliest_code() -> None:
    path = HISTORIES / "campaign_run2.json"
    events = json.loads(path.read_text())["events"]
    tasks = sum(1 for e in events if e["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED")
    done = _bench(path, "--repeat", "1", "--profile", "4")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("campaign_run2.json"))
    assert row.split()[1:3] == [str(len(events)), str(tasks)]
    assert "the project's own code:" in done.stdout
    # The profile names the workflow's own frames, not only the SDK's.
    assert "workflows/campaign.py" in done.stdout


def test_a_history_that_no_longer_replays_is_reported_and_fails_the_run(tmp_path: Path) -> None:
    data = json.loads((HISTORIES / "migrate_vm_success.json").read_text())
    # Under another id the move's slot grants (addressed to its id) are not its own: the replay takes another path.
    data["events"][0]["workflowExecutionStartedEventAttributes"]["workflowId"] = "someone-else"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    done = _bench(changed, "--repeat", "1")
    assert done.returncode == 1
    assert "the replay failed: NondeterminismError" in done.stdout


def test_a_file_that_is_not_a_history_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "notes.json"
    junk.write_text('{"events": []}')
    done = _bench(junk)
    assert done.returncode != 0
    assert f"{junk}: not a workflow history in JSON" in done.stderr
    missing = _bench(tmp_path / "absent.json")
    assert "absent.json: no such file or directory" in missing.stderr


@workflow.defn(name="ReplayBenchRelay")
class _Relay:
    """Continues as new until `runs` is spent: a workflow with several runs, as a campaign has."""

    @workflow.run
    async def run(self, runs: int) -> int:
        await workflow.sleep(0.01)
        if runs > 1:
            workflow.continue_as_new(runs - 1)
        return runs


async def test_every_run_is_saved_oldest_first_and_replays(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client: Client = temporal_env.client
    queue = f"replay-bench-{uuid.uuid4()}"
    workflow_id = f"relay-{uuid.uuid4()}"
    # Unsandboxed: this module imports what the sandbox refuses (subprocess), and the relay needs no sandbox.
    async with Worker(client, task_queue=queue, workflows=[_Relay], workflow_runner=UnsandboxedWorkflowRunner()):
        await client.execute_workflow(_Relay.run, 3, id=workflow_id, task_queue=queue)
    saved = await save_histories(client, workflow_id, tmp_path)
    assert [p.name for p in saved] == [f"{workflow_id}.run{n}.json" for n in (1, 2, 3)]
    inputs = [json.loads(p.read_text())["events"][0]["workflowExecutionStartedEventAttributes"] for p in saved]
    # Oldest first: the first run started with 3 runs to go, the last with 1.
    assert [i["input"]["payloads"][0]["data"] for i in inputs] == ["Mw==", "Mg==", "MQ=="]
    replayer = Replayer(workflows=[_Relay], workflow_runner=UnsandboxedWorkflowRunner())
    for path in saved:
        _, _, failure = await replay(replayer, load_history(path))
        assert failure == ""
