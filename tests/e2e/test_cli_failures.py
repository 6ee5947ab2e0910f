"""`snlm` against the real worker, the lab's hosts and Samba: a failed move reads as the engine's own error.

The CLI runs in the test's event loop with its own client, as an operator's shell would, against the worker the
e2e fixture serves on the dev server. What it prints is checked against what the engine raised (the inventory's
UnknownHost, with its remedy), not against Temporal's wrappers ("Activity task failed").
"""

from __future__ import annotations

import io
import json

import pytest
from temporalio.testing import WorkflowEnvironment

from starter import cli
from tests.e2e.conftest import E2E
from workflows.contracts import UNKNOWN_HOST, migrate_vm_workflow_id

pytestmark = pytest.mark.timeout(120)

NOWHERE = "NOWHERE01"  # a well-formed host name the lab's inventory does not list


@pytest.fixture
def snlm_env(e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's settings as an operator next to this worker has them: its task queue, no other Temporal."""
    monkeypatch.setenv("SNLM_TASK_QUEUE", e2e.task_queue)
    for variable in ("TEMPORAL_ADDRESS", "SNLM_TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "SNLM_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(variable, raising=False)


async def snlm(env: WorkflowEnvironment, *argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    address = env.client.service_client.config.target_host
    code = await cli.execute(["--address", address, *argv], stdout=out, stderr=err)
    return code, out.getvalue()


@pytest.mark.usefixtures("snlm_env")
async def test_destination_not_in_inventory_prints_unknown_host_and_exits_2(
    e2e: E2E, temporal_env: WorkflowEnvironment
) -> None:
    source = e2e.names.s1
    workflow_id = migrate_vm_workflow_id("std1", source)
    e2e.started.append(e2e.client.get_workflow_handle(workflow_id))
    before = await e2e.wait_truth(lambda truth: True)

    code, out = await snlm(
        temporal_env, "migrate", "std1", "--from", source, "--to", NOWHERE, "--delegation", "skip", "--wait"
    )

    assert code == cli.EXIT_CONFIGURATION
    lines = out.splitlines()
    inventory = str(e2e.lab.inventory_path)
    assert f"FAILED ({UNKNOWN_HOST}): host '{NOWHERE}' is not in the inventory {inventory}" in lines
    remedy = next(line for line in lines if line.startswith("  remedy: "))
    assert remedy.startswith(f"  remedy: add it under 'hosts' in {inventory}, or check the spelling (known: ")
    assert source in remedy
    assert "Activity task failed" not in out
    assert "Remedy:" not in out

    code, out = await snlm(temporal_env, "--output", "json", "status", workflow_id)
    assert code == cli.EXIT_CONFIGURATION
    doc = json.loads(out)
    assert doc["status"] == "FAILED"
    assert doc["progress"]["step"] == "failed"
    failure = doc["failure"]
    assert (failure["type"], failure["kind"], failure["exit"]) == (UNKNOWN_HOST, "configuration", 2)
    assert failure["activity"] == "preflight"
    assert failure["message"] == f"host '{NOWHERE}' is not in the inventory {inventory}"
    assert failure["remedy"] == remedy.removeprefix("  remedy: ")
    assert failure["details"][0]["host"] == NOWHERE

    # Nothing moved: the request stopped in preflight, before any change.
    after = await e2e.wait_truth(lambda truth: True)
    assert [(v["name"], v["host"]) for v in after["vms"] if v["name"] == "std1"] == [("std1", source)]
    assert after["move_starts"] == before["move_starts"]
