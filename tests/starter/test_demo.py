"""The demo's campaign, end to end on the `skip` path: a real dev server, the built-in lab, the real worker.

What `make demo` runs, minus the Samba directory (the directory path is the end-to-end tests' business) and at a
high time scale: the four moves must end as the demo promises, the injected failure must be retried, and the
clustered VM's role must leave CL-WEST and come back on CL-EAST.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from config.inventory import load_inventory
from config.settings import Settings, connect_client
from lab.lab import Lab
from starter import demo
from starter.devserver import DevServer, start_dev_server
from worker import build_worker
from workflows.contracts import DelegationPolicy

pytestmark = pytest.mark.timeout(120)

TIME_SCALE = 60.0  # the whole campaign in about 15 s (the retried move waits Temporal's 5 s backoff)


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[DevServer]:
    started = await start_dev_server(None, port=None, ui=False)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    started = demo.start_lab(tmp_path, TIME_SCALE)
    try:
        yield started
    finally:
        started.stop()


async def test_the_campaign_ends_as_the_demo_says_on_the_skip_path(
    server: DevServer, lab: Lab, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "campaign-report.html"
    settings = Settings(
        temporal_address=server.target,
        temporal_namespace="default",
        task_queue=f"tq-{uuid.uuid4()}",
        inventory=lab.inventory_path,
        delegation_policy=DelegationPolicy.SKIP,
        move_poll_seconds=0.2,
        graceful_shutdown_seconds=5,
    )
    client = await connect_client(settings)
    async with build_worker(client, settings):
        tracked = await asyncio.wait_for(
            demo.run_campaign(
                client,
                lab,
                settings.task_queue,
                asyncio.Event(),
                delegation=DelegationPolicy.SKIP,
                report=report,
            ),
            timeout=90,
        )

    by_vm = {t.move.vm: t for t in tracked}
    assert {vm: t.outcome for vm, t in by_vm.items()} == {
        "web07": "moved",
        "app04": "moved",
        "sql03": "blocked",
        "web08": "moved",
    }
    assert all(t.as_expected for t in tracked), demo.summary_lines(tracked)
    assert by_vm["web08"].attempts == 2, "the injected failure at 40 % is retried once"
    assert by_vm["web07"].attempts == 1
    assert by_vm["sql03"].attempts == 0, "preflight stops it before any move"
    assert "removed on CL-WEST, restored on CL-EAST" in by_vm["app04"].ha

    truth = lab.truth()
    assert truth["locations"]["app04"] == ["HV-E1"]
    assert truth["locations"]["sql03"] == ["HV-S1"]
    assert demo.cluster_roles(truth, "app04") == [("CL-EAST", "HV-E1", "Online")]

    summary = "\n".join(demo.summary_lines(tracked))
    assert "MOVE ATTEMPTS" in summary
    assert "app04 HA:" in summary
    out = capsys.readouterr().out
    assert "ended: 4/4 ended (3 moved, 0 already there, 0 failed, 1 blocked, 0 cancelled)" in out
    assert "passthrough-disk" in report.read_text(encoding="utf-8")
    assert demo.CAMPAIGN in report.read_text(encoding="utf-8")


def test_the_demo_s_forecast_counts_each_link_at_the_lab_s_speed_in_wall_seconds(lab: Lab) -> None:
    inventory = load_inventory(lab.inventory_path)
    plan = demo.demo_plan(DelegationPolicy.SKIP, "tq", inventory=inventory, time_scale=TIME_SCALE)

    links = {h.host: h.link_bits_per_second for h in plan.hosts}
    hosts = {name for move in demo.MOVES for name in (move.source, move.destination)}
    assert set(links) == hosts
    for host in hosts:
        gbps = inventory.host(host).migration_link_gbps
        assert gbps is not None
        assert links[host] == gbps * 1e9 * TIME_SCALE
    # The clustered move's source has the slow link: the forecast must not take the planner's 10 Gb/s default.
    assert links["HV-W2"] < links["HV-E1"]
    assert demo.demo_plan(DelegationPolicy.SKIP, "tq").hosts == ()


def test_the_skip_path_is_chosen_and_explained_without_a_directory(tmp_path: Path) -> None:
    from lab.model.topology import DEFAULT_TOPOLOGY, load_topology

    choice = demo.start_samba(tmp_path, load_topology(DEFAULT_TOPOLOGY), no_directory=True)
    assert choice.policy == DelegationPolicy.SKIP
    assert choice.samba is None
    assert "--no-directory" in choice.reason


def test_the_lab_directory_holds_every_pair_the_skip_path_needs(lab: Lab) -> None:
    truth = lab.truth()
    lines = demo.delegation_lines(truth, ["HV-S2", "HV-S4", "HV-W2", "HV-E1"])
    for move in demo.MOVES:
        if move.expect != "moved":
            continue
        for host, peer in ((move.source, move.destination), (move.destination, move.source)):
            line = next((line for line in lines if line.startswith(f"{host} -> ")), "")
            assert peer in line, (host, peer, lines)
            assert "any protocol" in line, (host, lines)
