"""The forecast of a small plan against the lab's run of it: the planner's simulation (what `snlm campaign forecast`
prints and the campaign's progress carries) and the makespan the lab's hosts measured, first job submitted to last
job ended, in the lab's simulated seconds. The two transfer models are separate code (the planner never reads the
lab); this is where they must agree, within 15 %."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from config.settings import Settings, connect_client
from lab.lab import Lab
from lab.model.topology import parse_topology
from starter.campaign_cli import with_links
from starter.devserver import DevServer, start_dev_server
from tests.e2e.conftest import INTEL, READY
from worker import build_worker, release_worker
from workflows.contracts import (
    CampaignMove,
    CampaignPhase,
    CampaignPlan,
    CampaignProgress,
    CampaignWave,
    DelegationPolicy,
    MigrationPerformance,
    MigrationPolicy,
    campaign_input,
    campaign_workflow_id,
)

pytestmark = pytest.mark.timeout(240)

# Slow enough that the engine's own seconds between moves (a preflight, a slot grant: about a second of real time)
# stay a few percent of a move's simulated minute.
TIME_SCALE = 4.0
HOSTS = ("FC1", "FC2", "FC3", "FC4")
# (vm, source, destination, memory GiB, disk file GiB): a rolling rebalance, each host sends and receives.
MOVES = (
    ("r1", "FC1", "FC2", 8, 30),
    ("r2", "FC1", "FC3", 4, 50),
    ("r3", "FC2", "FC3", 12, 20),
    ("r4", "FC2", "FC4", 4, 40),
    ("r5", "FC3", "FC4", 8, 25),
    ("r6", "FC3", "FC1", 16, 10),
    ("r7", "FC4", "FC1", 4, 35),
    ("r8", "FC4", "FC2", 8, 30),
)


def topology() -> dict[str, Any]:
    hosts = [
        {
            "name": name,
            "os": "2022",
            "cpu": INTEL,
            "memory_gb": 256,
            "volumes": [{"drive": "D", "label": "VMs", "size_gb": 2000, "free_gb": 1500}],
            "switches": [{"name": "Production"}],
            "nics": [
                {"name": "Management", "ip": f"10.0.0.{index + 1}", "bandwidth_gbps": 1},
                {"name": "Migration", "ip": f"10.10.10.{index + 1}", "bandwidth_gbps": 10},
            ],
            "live_migration": {**READY, "performance": "TCPIP"},
        }
        for index, name in enumerate(HOSTS)
    ]
    vms = [
        {
            "name": vm,
            "host": source,
            "memory_gb": memory,
            "dirty_rate_mbps": 0,
            "adapters": [{"switch": "Production"}],
            "disks": [{"path": rf"D:\Hyper-V\{vm}\{vm}.vhdx", "size_gb": disk + 20, "file_gb": disk}],
        }
        for vm, source, _, memory, disk in MOVES
    ]
    directory = {
        host: {
            "protocol_transition": True,
            "allowed_to_delegate_to": [
                f"{service}/{name}"
                for peer in HOSTS
                if peer != host
                for service in ("cifs", "Microsoft Virtual System Migration Service")
                for name in (peer, f"{peer.lower()}.lab.test")
            ],
        }
        for host in HOSTS
    }
    return {
        "lab": {"domain": "lab.test", "netbios_domain": "LAB", "time_scale": TIME_SCALE},
        "hosts": hosts,
        "vms": vms,
        "directory": directory,
    }


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[DevServer]:
    started = await start_dev_server(None, port=None, ui=False)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(parse_topology(topology(), source="forecast"), workdir=tmp_path / "lab", control_port=None) as started:
        yield started


def _seconds(value: Any) -> float:
    return datetime.fromisoformat(str(value)).timestamp()


async def test_the_forecast_of_a_small_plan_matches_the_lab_run(server: DevServer, lab: Lab) -> None:
    settings = Settings(
        temporal_address=server.target,
        temporal_namespace="default",
        task_queue=f"tq-{uuid.uuid4()}",
        inventory=lab.inventory_path,
        delegation_policy=DelegationPolicy.SKIP,
        move_poll_seconds=0.2,
        graceful_shutdown_seconds=5,
    )
    from config.inventory import load_inventory

    policy = MigrationPolicy(
        delegation=DelegationPolicy.SKIP,
        performance=MigrationPerformance.TCPIP,
        move_heartbeat_seconds=3.0,
        slot_book=settings.task_queue,
    )
    plan = CampaignPlan(
        name=f"forecast-{uuid.uuid4().hex[:6]}",
        waves=(CampaignWave("all", tuple(CampaignMove(vm, s, d) for vm, s, d, _, _ in MOVES)),),
        policy=policy,
    )
    plan = with_links(plan, load_inventory(lab.inventory_path))
    client = await connect_client(settings)
    workers = build_worker(client, settings)
    try:
        async with workers:
            handle = await client.start_workflow(
                "Campaign",
                campaign_input(plan, task_queue=settings.task_queue),
                id=campaign_workflow_id(plan.name),
                task_queue=settings.task_queue,
            )
            progress: CampaignProgress | None = None
            for _ in range(1200):
                progress = await handle.query("progress", result_type=CampaignProgress)
                if progress.phase == CampaignPhase.ENDED:
                    break
                await asyncio.sleep(0.2)
            assert progress is not None
            assert progress.phase == CampaignPhase.ENDED
            assert progress.counts.moved == len(MOVES)
            await handle.terminate(reason="end of the test")
    finally:
        release_worker(workers)

    jobs = [job for job in lab.truth()["jobs"] if job["end_time"]]
    assert len(jobs) == len(MOVES)
    measured = max(_seconds(j["end_time"]) for j in jobs) - min(_seconds(j["time_submitted"]) for j in jobs)
    forecast = progress.forecast_makespan_seconds
    error = (forecast - measured) / measured
    print(f"forecast {forecast:.0f} s, measured {measured:.0f} s, error {error:+.1%}")
    assert abs(error) <= 0.15, f"forecast {forecast:.0f} s, the lab measured {measured:.0f} s: {error:+.0%}"
