"""Campaigns end to end through `snlm campaign`: a plan file, the campaign's own preflight, the planner, MigrateVm
children against the lab's hosts over WinRM/PSRP; assertions on the lab's truth (each VM on exactly one host, each
started once), never on wall time."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from starter import cli
from tests.e2e.conftest import E2E
from workflows.contracts import CAMPAIGN_TASK_TIMEOUT, campaign_workflow_id

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def snlm_env(e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's settings as an operator next to this worker has them: its task queue and inventory."""
    monkeypatch.setenv("SNLM_TASK_QUEUE", e2e.task_queue)
    monkeypatch.setenv("SNLM_INVENTORY", str(e2e.lab.inventory_path))
    for variable in ("TEMPORAL_ADDRESS", "SNLM_TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "SNLM_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(variable, raising=False)


async def snlm(env: WorkflowEnvironment, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    address = env.client.service_client.config.target_host
    code = await cli.execute(["--address", address, *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_plan(path: Path, name: str, source: str, destination: str, vms: list[str]) -> Path:
    lines = [f"name: {name}", "policy: {move_heartbeat_seconds: 3}", "waves:"]
    lines += ["  - name: first", "    moves:"]
    lines += [f"      - {{vm: {vm}, source: {source}, destination: {destination}}}" for vm in vms[:2]]
    lines += ["  - name: second", "    moves:"]
    lines += [f"      - {{vm: {vm}, source: {source}, destination: {destination}}}" for vm in vms[2:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hosts_of(truth: dict[str, Any], vm: str) -> list[str]:
    return sorted(entry["host"] for entry in truth["vms"] if entry["name"] == vm)


def starts_of(truth: dict[str, Any], vm: str) -> int:
    return sum(entry["starts"] for entry in truth["move_starts"].values() if entry["vm"] == vm)


@pytest.mark.usefixtures("snlm_env")
async def test_campaign_moves_each_vm_once_and_a_rerun_moves_nothing(
    e2e: E2E, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    n = e2e.names
    vms = ["std1", "std2", "off1", "bak1"]  # bak1: a backup runs, the campaign's preflight blocks it
    plan = write_plan(tmp_path / "plan.yaml", f"c{n.tag.lower()}", n.s1, n.b1, vms)
    for name in (f"c{n.tag.lower()}", f"c{n.tag.lower()}-again"):
        e2e.started.append(e2e.client.get_workflow_handle(campaign_workflow_id(name)))

    code, out, _ = await snlm(temporal_env, "campaign", "check", str(plan))
    assert code == cli.EXIT_PREFLIGHT_BLOCKED
    assert "BLOCKED  bak1" in out
    assert "backup-in-progress" in out

    code, out, _ = await snlm(temporal_env, "--output", "json", "campaign", "start", str(plan), "--wait")
    doc = json.loads(out)
    counts = doc["progress"]["counts"]
    assert code == cli.EXIT_FAILED  # bak1 did not move: not every VM ended as planned
    assert (counts["moved"], counts["blocked"], counts["failed"]) == (3, 1, 0)
    truth = e2e.lab.truth()
    for vm in ("std1", "std2", "off1"):
        assert hosts_of(truth, vm) == [n.b1]
        assert starts_of(truth, vm) == 1
    assert hosts_of(truth, "bak1") == [n.s1]
    assert starts_of(truth, "bak1") == 0
    off1 = next(entry for entry in truth["vms"] if entry["name"] == "off1")
    assert off1["state"] == "Off"
    # Started with the campaign's own workflow task timeout (a 10,000-move plan's tasks outlast Temporal's 10 s).
    described = await e2e.client.get_workflow_handle(doc["workflow_id"]).describe()
    timeout = described.raw_description.execution_config.default_workflow_task_timeout.ToTimedelta()
    assert timeout == CAMPAIGN_TASK_TIMEOUT

    # The same plan again under another name: every VM is found on its destination; nothing moves twice.
    code, out, _ = await snlm(
        temporal_env,
        "--output",
        "json",
        "campaign",
        "start",
        str(plan),
        "--name",
        f"c{n.tag.lower()}-again",
        "--no-check",
        "--wait",
    )
    counts = json.loads(out)["progress"]["counts"]
    assert counts["already_there"] == 3, out
    truth = e2e.lab.truth()
    for vm in ("std1", "std2", "off1"):
        assert hosts_of(truth, vm) == [n.b1]
        assert starts_of(truth, vm) == 1

    # The operator's view and report of the first campaign.
    code, out, _ = await snlm(temporal_env, "campaign", "status", f"c{n.tag.lower()}")
    assert code == cli.EXIT_OK
    assert "3 moved" in out
    report = tmp_path / "report.html"
    code, out, _ = await snlm(temporal_env, "campaign", "report", f"c{n.tag.lower()}", "--out", str(report))
    assert code == cli.EXIT_OK
    html = report.read_text(encoding="utf-8")
    assert "std1" in html
    assert "backup-in-progress" in html

    # A closed campaign's status is its result.
    again = f"c{n.tag.lower()}-again"
    code, out, _ = await snlm(temporal_env, "campaign", "close", again)
    assert code == cli.EXIT_OK, out
    await e2e.client.get_workflow_handle(campaign_workflow_id(again)).result()
    code, out, _ = await snlm(temporal_env, "campaign", "status", again)
    assert code == cli.EXIT_OK, out
    assert f"snlm-campaign-{again}  COMPLETED" in out
    assert "4 move(s): 0 moved, 3 already there" in out


@pytest.mark.usefixtures("snlm_env")
async def test_bad_plan_is_refused_whole_before_anything_starts(
    e2e: E2E, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text(
        "name: bad\nwaves:\n  - name: w\n    moves:\n      - {vm: std1, source: NOWHERE01, destination: "
        f"{e2e.names.b1}}}\n      - {{vm: std2, source: {e2e.names.s1}, destination: {e2e.names.s1}}}\n",
        encoding="utf-8",
    )
    before = e2e.lab.truth()
    code, _, err = await snlm(temporal_env, "campaign", "start", str(plan))
    assert code == cli.EXIT_USAGE
    assert f"{plan}:5:" in err
    assert "NOWHERE01" in err
    assert f"{plan}:6:" in err
    assert e2e.lab.truth()["move_starts"] == before["move_starts"]
