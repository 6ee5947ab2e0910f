"""What the engine adds to one VM's move, and how many PSRP round trips each step of the saga makes.

    .venv/bin/python -m benchmarks.saga_bench [--moves 6] [--time-scale 60]

Starts a real Temporal dev server (in memory, with the settings the embedded default uses), a lab of two hosts
(`lab/topologies/pair.yaml`) and a worker in this process, then moves one VM back and forth, `--moves` times,
through the MigrateVm saga (delegation policy `skip`: the lab's own directory holds the entries). Side by side,
the baseline: the same VM moved with one synchronous `Move-VM` over one PSRP session, nothing else.

Figures, per move (medians):
- saga: from starting the workflow to its result;
- lab move: the host's own migration job, start to end (simulated time / time scale);
- engine adds: saga - lab move (preflight, settings, slots, watching, verify, and Temporal itself);
- baseline: one Move-VM call, and the saga / baseline ratio;
- PSRP round trips per migration, by step (session open and close included), counted as each session closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from activities.hosts import HostClient, SessionReport, add_session_observer
from activities.inventory import load_inventory
from config.settings import Settings
from lab.lab import Lab
from starter.devserver import dev_server_args, temporal_binary
from worker import build_worker, release_worker
from workflows.contracts import (
    DelegationPolicy,
    MigrateVmInput,
    MigrationPolicy,
    migrate_vm_workflow_id,
)
from workflows.migrate_vm import MigrateVmWorkflow

TOPOLOGY = Path(__file__).resolve().parent.parent / "lab" / "topologies" / "pair.yaml"
VM = "vm-a1"


class RoundTrips:
    """Round trips by saga step: every closed session counted against the activity it served."""

    def __init__(self) -> None:
        self.by_step: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, report: SessionReport) -> None:
        step = activity.info().activity_type if activity.in_activity() else "baseline"
        with self._lock:
            self.by_step[step] += report.round_trips


def _lab_move_seconds(lab: Lab, host: str) -> float:
    """The newest finished migration job on `host` (the source), in real seconds."""
    scale = lab.world.clock.time_scale
    jobs = [j for j in lab.engine.jobs(host) if j.start_time and j.end_time]
    job = max(jobs, key=lambda j: j.time_submitted)
    assert job.start_time is not None
    assert job.end_time is not None
    return (job.end_time - job.start_time).total_seconds() / scale


def _baseline_move(lab: Lab, source: str, destination: str) -> float:
    """One synchronous Move-VM over one session: the least any tool can do."""
    inventory = load_inventory(lab.inventory_path)
    storage = rf"D:\Hyper-V\{VM}"
    started = time.perf_counter()
    with HostClient(inventory.host(source)) as client:
        client.run(
            "Move-VM",
            {"Name": VM, "DestinationHost": destination, "DestinationStoragePath": storage},
            switches=("IncludeStorage",),
        )
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=6)
    parser.add_argument("--time-scale", type=float, default=60.0)
    args = parser.parse_args()

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        ip="127.0.0.1",
        ui=False,
        dev_server_extra_args=dev_server_args(),
    )
    counter = RoundTrips()
    remove_observer = add_session_observer(counter)
    saga: list[float] = []
    lab_moves: list[float] = []
    baseline: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="snlm-saga-bench-") as tmp:
            lab = Lab.from_topology(TOPOLOGY, workdir=Path(tmp), time_scale=args.time_scale).start()
            try:
                settings = Settings(inventory=lab.inventory_path, task_queue="saga-bench", move_poll_seconds=0.1)
                worker = build_worker(env.client, settings)
                async with worker:
                    route = ("HV-A", "HV-B")
                    for index in range(args.moves):
                        source, destination = route
                        started = time.perf_counter()
                        await env.client.execute_workflow(
                            MigrateVmWorkflow.run,
                            MigrateVmInput(
                                VM, source, destination, policy=MigrationPolicy(delegation=DelegationPolicy.SKIP)
                            ),
                            id=f"{migrate_vm_workflow_id(VM, source)}-{index}",
                            task_queue=settings.task_queue,
                        )
                        saga.append(time.perf_counter() - started)
                        lab_moves.append(_lab_move_seconds(lab, source))
                        route = (destination, source)
                    sagas_trips = Counter(counter.by_step)
                    for _ in range(args.moves):
                        source, destination = route
                        baseline.append(await asyncio.to_thread(_baseline_move, lab, source, destination))
                        route = (destination, source)
                release_worker(worker)
            finally:
                lab.stop()
    finally:
        remove_observer()
        await env.shutdown()

    added = [s - m for s, m in zip(saga, lab_moves, strict=True)]
    print(f"one VM ({VM}, 2 GiB, 8 GiB VHDX) moved {args.moves} times, lab time scale {args.time_scale:g}")
    print(f"  saga, start to result       : {statistics.median(saga) * 1000:8.0f} ms")
    print(f"  lab's own move (job)        : {statistics.median(lab_moves) * 1000:8.0f} ms")
    print(f"  engine adds                 : {statistics.median(added) * 1000:8.0f} ms")
    print(f"  baseline, one Move-VM call  : {statistics.median(baseline) * 1000:8.0f} ms")
    print(f"  ratio saga / baseline       : {statistics.median(saga) / statistics.median(baseline):8.1f} x")
    print("PSRP round trips per migration, by step (session open and close included)")
    for step, trips in sorted(sagas_trips.items(), key=lambda item: -item[1]):
        print(f"  {step:28s}: {trips / args.moves:6.1f}")
    print(f"  {'total':28s}: {sum(sagas_trips.values()) / args.moves:6.1f}")


if __name__ == "__main__":
    asyncio.run(main())
    # Skip the interpreter teardown that can abort under the Temporal runtime's threads (starter.cli.exit_now).
    sys.stdout.flush()
    os._exit(0)
