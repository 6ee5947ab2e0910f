"""Slot leases, end to end: a MigrateVm terminated mid-move (no compensation, no release) frees its hosts' slots within
one lease, and the next move on the same hosts starts.

Real parts only: the dev server, the worker built by worker.py, the lab over the WinRM wire, Samba. The policy takes
one slot per host (`max_migrations_per_host=1`), so the second move must wait for the first one's slots, and a lease
of seconds, so the test waits for one lease and not for the move timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Replayer

from tests.e2e.conftest import E2E, result_of
from workflows.contracts import (
    MigrationPolicy,
    MigrationProgress,
    MigrationSlotsStatus,
    PairHolder,
    PairWaiter,
    Step,
    migration_slots_workflow_id,
)
from workflows.host_slots import HostSlotsWorkflow
from workflows.migrate_vm import MigrateVmWorkflow, PreflightWorkflow
from workflows.migration_slots import MigrationSlotsWorkflow

LEASE = 20.0  # checked with the running move each time it runs out
MARGIN = 20.0  # the grant's signal, the second move's next workflow tasks, a busy machine
POLICY = MigrationPolicy(slot_lease_seconds=LEASE, max_migrations_per_host=1, move_timeout_seconds=600)
WATCHABLE = 5.0  # the lab's clock while the first move starts: big1's 100 GB copy takes many seconds
PAUSED = 0.02  # then the lab's clock nearly stops, so the first move is still running when it is terminated
FAST = 60.0  # and the second move may finish


def waiting_for_slots(progress: MigrationProgress) -> bool:
    return progress.waiting_for.startswith("migration slots")


def running_per_host(truth: dict[str, Any]) -> dict[str, int]:
    """How many migration jobs each host runs now (each job is listed by both of its hosts: counted once)."""
    running = {j["instance_id"]: j for j in truth["jobs"] if j["state"] == "Running"}
    counts: dict[str, int] = {}
    for job in running.values():
        for host in {job["source"], job["destination"]}:
            counts[host] = counts.get(host, 0) + 1
    return counts


@contextlib.asynccontextmanager
async def watching_jobs(e2e: E2E) -> AsyncIterator[dict[str, int]]:
    """The most migration jobs each host ran at once, sampled from the lab's truth while the block runs."""
    peak: dict[str, int] = {}

    async def sample() -> None:
        while True:
            truth = await asyncio.to_thread(e2e.lab.truth)
            for host, count in running_per_host(truth).items():
                peak[host] = max(peak.get(host, 0), count)
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


@dataclass(frozen=True)
class HostSlots:
    """One host's view of the book: who holds a slot there, who waits for one, the most held at once."""

    holders: tuple[PairHolder, ...]
    waiters: tuple[PairWaiter, ...]
    peak_in_use: int


async def slots_of(e2e: E2E, host: str) -> HostSlots:
    handle = e2e.client.get_workflow_handle_for(MigrationSlotsWorkflow.run, migration_slots_workflow_id(e2e.task_queue))
    status: MigrationSlotsStatus = await handle.query(MigrationSlotsWorkflow.status)
    use = next((h for h in status.hosts if h.host.casefold() == host.casefold()), None)
    return HostSlots(
        tuple(h for h in status.holders if host in h.hosts),
        tuple(w for w in status.waiters if host in w.hosts),
        use.peak_in_use if use is not None else 0,
    )


async def wait_slots(e2e: E2E, host: str, predicate: Any, *, timeout: float = 30.0) -> HostSlots:
    async def poll() -> HostSlots:
        while True:
            status = await slots_of(e2e, host)
            if predicate(status):
                return status
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), timeout)


async def replays(handle: WorkflowHandle[Any, Any]) -> None:
    """The run's history, renewals included, replays on today's code without nondeterminism."""
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[MigrateVmWorkflow, PreflightWorkflow, MigrationSlotsWorkflow, HostSlotsWorkflow])
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{handle.id}: {result.replay_failure!r}"


async def test_a_terminated_move_frees_its_slots_within_one_lease(e2e: E2E) -> None:
    n = e2e.names
    src, dst = n.s1, n.s2
    hosts = sorted([src, dst], key=str.casefold)  # the order acquire_pair takes them in
    limits = {h: e2e.lab.truth()["hosts"][h]["live_migration"]["max_vm_migrations"] for h in hosts}

    async with watching_jobs(e2e) as peak:
        e2e.lab.set_time_scale(WATCHABLE)
        first = await e2e.start("big1", src, dst, policy=POLICY)
        await e2e.wait_progress(first, lambda p: p.step == Step.MOVE and p.percent > 0)
        e2e.lab.set_time_scale(PAUSED)

        second = await e2e.start("std1", src, dst, policy=POLICY)
        await e2e.wait_progress(second, lambda p: p.step == Step.MOVE and waiting_for_slots(p))
        held = await wait_slots(e2e, hosts[0], lambda s: [w.holder_id for w in s.waiters] == [second.id])
        assert [h.holder_id for h in held.holders] == [first.id]
        # The running move keeps its slots past the lease it was granted (the book asked it, and it runs), and the
        # second move still waits, holding nothing.
        granted = held.holders[0].expires_at  # one lease for the pair
        await wait_slots(e2e, hosts[0], lambda s: s.holders[0].expires_at > granted, timeout=LEASE + MARGIN)
        for host in hosts:
            kept = await slots_of(e2e, host)
            assert [h.holder_id for h in kept.holders] == [first.id]
        assert waiting_for_slots(await second.query(MigrateVmWorkflow.progress))

        # Terminated: nothing of the saga runs any more, neither compensation nor release.
        await first.terminate(reason="test: terminated mid-move")
        assert (await first.describe()).status == WorkflowExecutionStatus.TERMINATED
        # Within one lease its slots are reclaimed and the second move takes them (it may still meet the first
        # move's job on the hosts, event 21501, and be requeued by the saga: the slots are what is awaited here).
        moving = await e2e.wait_progress(
            second, lambda p: p.step == Step.MOVE and not waiting_for_slots(p), timeout=LEASE + MARGIN
        )
        assert moving.step == Step.MOVE
        for host in hosts:
            status = await slots_of(e2e, host)
            assert [h.holder_id for h in status.holders] == [second.id]
            assert status.waiters == ()

        e2e.lab.set_time_scale(FAST)
        result = await result_of(second)

    assert result.moved
    after = await asyncio.to_thread(e2e.lab.truth)
    assert after["locations"]["std1"] == [dst]
    for host in hosts:
        status = await slots_of(e2e, host)
        assert status.peak_in_use == 1, status  # never more than the policy's one slot per host
        assert status.holders == ()  # the second move released its slots at the end
        assert 1 <= peak.get(host, 0) <= limits[host], (host, peak, limits)
    # Both recorded histories, the terminated one with its lease checks, replay on today's code.
    await replays(first)
    await replays(second)
