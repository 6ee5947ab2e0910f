"""Durability, end to end: the worker killed mid-move, and the Temporal server stopped mid-move, with nothing mocked.

The worker is `python worker.py`, a real subprocess configured by its environment (TEMPORAL_ADDRESS,
SNLM_INVENTORY, SNLM_TASK_QUEUE, ...); the server is the dev server on a fixed port of 127.0.0.1 with a SQLite file;
the hosts are the lab (pair.yaml, delegation already in its directory, so the delegation policy is `skip`) at a
time scale where vm-a1's move takes about 8 real seconds. Every case ends with the VM on the destination only
and exactly one Move-VM started for it (DESIGN.md invariant 4: moved at most once per request).

What the cases take, and why (reference/temporal-notes.md): after a SIGKILL the move activity is retried only once
its heartbeat timeout (20 s) passes, after a 5 s retry backoff, and the next workflow task waits 10 s for the dead
worker's sticky queue; every wait is bounded at 90 s.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from lab.lab import Lab
from tests.e2e.durable import (
    MOVE_ACTIVITY,
    WorkerProcess,
    free_port,
    move_attempts,
    port_open,
    start_dev_server,
    wait_for,
)
from workflows.contracts import (
    DelegationPolicy,
    MigrateVmInput,
    MigrateVmResult,
    MigrationPolicy,
    Step,
    migrate_vm_workflow_id,
)
from workflows.migrate_vm import MigrateVmWorkflow

PAIR = Path(__file__).resolve().parents[2] / "lab" / "topologies" / "pair.yaml"
VM, SOURCE, DESTINATION = "vm-a1", "HV-A", "HV-B"
MOVE_TIME_SCALE = 1.0  # vm-a1 (2 GB of memory, an 8 GB disk, 10 Gb/s) moves in about 8 s
PAUSED = 0.02  # the lab's clock while the test wants the host's job to stay where it is
FAST = 50.0  # the lab's clock while the test wants the host's job to end
WAIT = 90.0  # the bound on every wait
# What the worker (temporalio's core) logs when it drops an activity completion it could not deliver.
COMPLETION_LOST = "Network error while completing activity"


@dataclass
class DurableServer:
    env: WorkflowEnvironment
    port: int
    database: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def durable_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DurableServer]:
    """This module's dev server: its own fixed port, a SQLite file."""
    database = tmp_path_factory.mktemp("temporal") / "temporal.db"
    port = free_port()
    env = await start_dev_server(port, database)
    try:
        yield DurableServer(env, port, database)
    finally:
        await env.shutdown()


@pytest.fixture(scope="module")
def module_queue() -> str:
    # One queue for the module: the first move starts the hosts' HostSlots entities on its own task queue, and a
    # later move on another queue would wait for a worker of the first one.
    return f"durable-{uuid.uuid4()}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab.from_topology(PAIR, workdir=tmp_path / "lab", time_scale=MOVE_TIME_SCALE) as running:
        yield running


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Every worker process a test starts; each is stopped (SIGTERM, then SIGKILL) by its pid at the end."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def spawn(workers: list[WorkerProcess], tmp_path: Path, address: str, lab: Lab, task_queue: str) -> WorkerProcess:
    process = WorkerProcess.start(
        address=address,
        inventory=lab.inventory_path,
        task_queue=task_queue,
        log=tmp_path / f"worker-{len(workers) + 1}.log",
    )
    workers.append(process)
    return process


async def start_move(client: Client, task_queue: str) -> WorkflowHandle[Any, MigrateVmResult]:
    return await client.start_workflow(
        MigrateVmWorkflow.run,
        MigrateVmInput(VM, SOURCE, DESTINATION, policy=MigrationPolicy(delegation=DelegationPolicy.SKIP)),
        id=f"{migrate_vm_workflow_id(VM, SOURCE)}-{uuid.uuid4()}",
        task_queue=task_queue,
    )


def active_job(lab: Lab) -> dict[str, Any] | None:
    jobs = [j for j in lab.truth()["jobs"] if j["vm_name"] == VM and j["active"]]
    return jobs[0] if jobs else None


async def moving(handle: WorkflowHandle[Any, MigrateVmResult], lab: Lab) -> dict[str, Any]:
    """Wait until the saga is in its move step and the host's job has moved some bytes; the job."""

    async def probe() -> dict[str, Any] | None:
        progress = await handle.query(MigrateVmWorkflow.progress)
        job = active_job(lab)
        if progress.step == Step.MOVE and job is not None and job["percent_complete"] > 0:
            return job
        return None

    return await wait_for(probe, timeout=WAIT, what=f"{VM}'s move to be under way")


def moved_once(lab: Lab) -> None:
    truth = lab.truth()
    starts = [entry["starts"] for entry in truth["move_starts"].values() if entry["vm"] == VM]
    assert starts == [1], f"Move-VM starts for {VM}: {truth['move_starts']}"
    assert truth["locations"][VM] == [DESTINATION]
    # On the destination only: no registration (not even a planned VM) left anywhere else, no job still running.
    assert [v["host"] for v in truth["vms"] if v["name"] == VM] == [DESTINATION]
    assert not [j for j in truth["jobs"] if j["vm_name"] == VM and j["active"]]


async def result_of(handle: WorkflowHandle[Any, MigrateVmResult], workers: list[WorkerProcess]) -> MigrateVmResult:
    try:
        return await asyncio.wait_for(handle.result(), WAIT)
    except TimeoutError:
        logs = "\n\n".join(f"--- worker pid {w.pid} ---\n{w.tail()}" for w in workers)
        raise AssertionError(f"{handle.id} did not finish within {WAIT:.0f} s\n{logs}") from None


async def move_pending_on_attempt(handle: WorkflowHandle[Any, MigrateVmResult], attempt: int) -> bool:
    description = await handle.describe()
    return any(
        pending.activity_type.name == MOVE_ACTIVITY
        and pending.attempt >= attempt
        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for pending in description.raw_description.pending_activities
    )


@pytest.mark.parametrize("job_when_retried", ["still-running", "already-ended"])
async def test_worker_killed_mid_move(
    durable_server: DurableServer,
    module_queue: str,
    lab: Lab,
    workers: list[WorkerProcess],
    tmp_path: Path,
    job_when_retried: str,
) -> None:
    """SIGKILL the worker during the move, start another: the run completes and the VM moved exactly once.

    still-running: the lab's clock nearly stops while no worker runs, so the retried move activity finds the host's
        job still running and must re-attach to it (the job id its first attempt heartbeated);
    already-ended: the job ends while no worker runs, so the retried activity must find the VM on the destination
        and start nothing.
    """
    client = durable_server.env.client
    first = spawn(workers, tmp_path, durable_server.address, lab, module_queue)
    handle = await start_move(client, module_queue)
    job = await moving(handle, lab)

    assert first.kill() == -signal.SIGKILL
    if job_when_retried == "still-running":
        lab.set_time_scale(PAUSED)
    else:
        lab.set_time_scale(FAST)
        await wait_for(
            lambda: active_job(lab) is None and lab.truth()["locations"][VM] == [DESTINATION],
            timeout=WAIT,
            what="the host's job to end with no worker running",
        )

    second = spawn(workers, tmp_path, durable_server.address, lab, module_queue)
    if job_when_retried == "still-running":
        # The second attempt of the move activity runs on the new worker (after the 20 s heartbeat timeout).
        await wait_for(
            lambda: move_pending_on_attempt(handle, 2), timeout=WAIT, what="the move's retry on the new worker"
        )
        assert active_job(lab) is not None, "the host's job ended before the retry re-attached"
        lab.set_time_scale(MOVE_TIME_SCALE)

    result = await result_of(handle, workers)
    assert result.moved
    assert not result.already_there
    assert second.alive()
    moved_once(lab)

    attempts = await move_attempts(handle)
    assert attempts.attempts, attempts
    assert attempts.attempts[-1] >= 2, attempts
    assert attempts.result is not None
    assert not attempts.result.started, attempts.result  # the retry started nothing
    if job_when_retried == "still-running":
        assert not attempts.result.already_moved
        assert attempts.result.job_id.casefold() == str(job["instance_id"]).casefold(), (attempts.result, job)
    else:
        assert attempts.result.already_moved, attempts.result


@pytest.mark.parametrize("while_down", ["job-running", "job-ends", "completion-lost"])
async def test_server_restarted_mid_move(
    lab: Lab, workers: list[WorkerProcess], tmp_path: Path, while_down: str
) -> None:
    """Stop the dev server during the move and start it again on the same port and SQLite file: the same worker
    process (it keeps retrying its connection) finishes the run, and the VM moved exactly once.

    job-running: the host's job is still running when the server is back;
    job-ends: the job ends while the server is down; the worker's retries deliver the activity's completion once
        the server is back (a short outage);
    completion-lost: the job ends and the server stays down until the worker gives up delivering the completion
        (its client retries for about 10 s): the server never learns the activity finished, runs it again after
        the heartbeat timeout, and that attempt must find the VM on the destination and start nothing.
    """
    database, port = tmp_path / "temporal.db", free_port()
    address = f"127.0.0.1:{port}"
    task_queue = f"restart-{uuid.uuid4()}"
    env: WorkflowEnvironment | None = await start_dev_server(port, database)
    try:
        assert env is not None
        worker = spawn(workers, tmp_path, address, lab, task_queue)
        handle = await start_move(env.client, task_queue)
        await moving(handle, lab)

        lab.set_time_scale(PAUSED if while_down == "job-running" else FAST)
        await env.shutdown()
        env = None
        assert not port_open(port), "the dev server still answers after its shutdown"
        if while_down == "job-running":
            await asyncio.sleep(3)  # down for a while: the worker's polls and heartbeats fail meanwhile
            assert active_job(lab) is not None
        else:
            await wait_for(
                lambda: active_job(lab) is None,
                timeout=WAIT,
                what="the host's job to end while the server is down",
            )
        if while_down == "completion-lost":
            await wait_for(
                lambda: worker.logged(COMPLETION_LOST),
                timeout=WAIT,
                what="the worker to give up delivering the move's completion",
            )
        assert worker.alive(), f"the worker exited while the server was down:\n{worker.tail()}"

        env = await start_dev_server(port, database)
        lab.set_time_scale(MOVE_TIME_SCALE)
        handle = env.client.get_workflow_handle_for(MigrateVmWorkflow.run, handle.id)
        result = await result_of(handle, workers)
        assert result.moved
        assert not result.already_there
        assert worker.alive(), "the worker that outlived the server is gone"
        assert len(workers) == 1, "no second worker was needed"
        moved_once(lab)

        attempts = await move_attempts(handle)
        assert attempts.result is not None, attempts
        if while_down == "job-ends":
            assert attempts.attempts == (1,), attempts
            assert attempts.result.started, attempts
        elif while_down == "completion-lost":
            assert attempts.attempts[-1] >= 2, attempts
            assert attempts.result.already_moved, attempts
            assert not attempts.result.started, attempts
    finally:
        if env is not None:
            await env.shutdown()
