"""SurveyHosts on the real Temporal dev server, with a worker whose survey activity reads a lab over the wire, and
`snlm plan evacuate|rebalance` (starter/plan_cli.py) run against both: the plan it writes reads back, it starts
nothing, and an unknown host is refused before Temporal is asked anything."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.boundary import ErrorBoundary
from activities.hosts import HostSessions
from activities.inventory import load_inventory
from activities.survey import SurveyActivities
from lab.lab import Lab
from starter import plan_cli
from starter.cli import CliError, Output
from starter.plans import load_plan
from workflows.contracts import SURVEY_WORKFLOW_PREFIX, UNKNOWN_HOST, HostRef, SurveyInput
from workflows.survey import SurveyHostsWorkflow

pytestmark = pytest.mark.timeout(300)

FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.from_topology(None, workdir=tmp_path_factory.mktemp("survey-wf"), time_scale=600.0, control_port=None)
    lab.start()
    yield lab
    lab.stop()


@pytest.fixture
def activities(lab: Lab) -> Iterator[SurveyActivities]:
    inventory = load_inventory(lab.inventory_path)
    sessions = HostSessions(inventory, **FAST)
    yield SurveyActivities(inventory, sessions)
    sessions.close_all()


@pytest_asyncio.fixture
async def client(
    temporal_env: WorkflowEnvironment, task_queue: str, activities: SurveyActivities
) -> AsyncIterator[Client]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            temporal_env.client,
            task_queue=task_queue,
            workflows=[SurveyHostsWorkflow],
            activities=[activities.survey_host],
            activity_executor=executor,
            interceptors=[ErrorBoundary()],
        ):
            yield temporal_env.client


async def test_hosts_are_surveyed_concurrently_and_returned_in_order(
    client: Client, task_queue: str, activities: SurveyActivities
) -> None:
    hosts = ("HV-S4", "HV-S2", "HV-OLD", "HV-S3")
    result = await client.execute_workflow(
        SurveyHostsWorkflow.run,
        SurveyInput(hosts),
        id=SURVEY_WORKFLOW_PREFIX + uuid.uuid4().hex,
        task_queue=task_queue,
    )
    assert [survey.host for survey in result.hosts] == list(hosts)
    for survey in result.hosts:
        alone = activities.survey_host(HostRef(survey.host))
        assert survey.vms == alone.vms
        assert survey.memory_bytes == alone.memory_bytes


async def test_an_unknown_host_fails_the_survey_at_once(client: Client, task_queue: str) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await client.execute_workflow(
            SurveyHostsWorkflow.run,
            SurveyInput(("HV-S2", "HV-NOWHERE")),
            id=SURVEY_WORKFLOW_PREFIX + uuid.uuid4().hex,
            task_queue=task_queue,
        )
    cause: BaseException | None = caught.value.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    assert isinstance(cause, ApplicationError)
    assert cause.type == UNKNOWN_HOST
    assert cause.non_retryable


# -- snlm plan --------------------------------------------------------------------------------------------------
def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snlm")
    parser.add_argument("--output", default="text")
    plan_cli.add_parser(parser.add_subparsers(dest="command", required=True), "")
    return parser.parse_args(list(argv))


async def snlm_plan(client: Client, task_queue: str, lab: Lab, line: str) -> tuple[int, str, str]:
    """`snlm LINE --inventory <the lab's>`, against the test's server and worker: exit status, stdout, stderr."""
    args = parse(*line.split(), "--inventory", str(lab.inventory_path))
    out, err = io.StringIO(), io.StringIO()
    connected: list[bool] = []

    async def connect(_: argparse.Namespace) -> tuple[Client, Any]:
        connected.append(True)
        return client, SimpleNamespace(task_queue=task_queue)

    try:
        code = await plan_cli.run(args, Output(args.output, out, err), connect)
    except CliError as error:
        Output(args.output, out, err).error(error)
        code = error.code
        assert not connected, "a refused request reached Temporal"
    return code, out.getvalue(), err.getvalue()


async def test_snlm_plan_evacuate_writes_a_plan_that_reads_back(
    client: Client, task_queue: str, lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "evacuate.yaml"
    code, text, _ = await snlm_plan(client, task_queue, lab, f"plan evacuate HV-S2 --to HV-S3,HV-S4 --out {out}")
    print(text)
    assert code == 0
    assert text.splitlines()[1].split() == ["VM", "FROM", "TO", "MEMORY", "WHY"]
    assert "not HV-S4: no switch 'Backup'" in text
    plan = load_plan(out, inventory=load_inventory(lab.inventory_path))
    moves = [m for w in plan.waves for m in w.moves]
    truth = lab.truth()
    on_s2 = {vm["name"] for vm in truth["vms"] if vm["host"] == "HV-S2" and not vm["planned"]}
    assert {m.vm for m in moves} == on_s2
    assert {m.destination for m in moves} <= {"HV-S3", "HV-S4"}
    # bak01 uses the Backup switch, which HV-S4 lacks.
    assert next(m.destination for m in moves if m.vm == "bak01") == "HV-S3"
    # Nothing was started: every VM is where it was.
    assert {vm["name"] for vm in lab.truth()["vms"] if vm["host"] == "HV-S2"} == on_s2
    assert not lab.truth()["move_starts"]


async def test_snlm_plan_rebalance_json_is_one_document(
    client: Client, task_queue: str, lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "rebalance.yaml"
    code, text, _ = await snlm_plan(
        client,
        task_queue,
        lab,
        "--output json plan rebalance --hosts HV-S1,hv-s2,HV-S3,HV-S4 --threshold 0.15 --name rebalance-test "
        f"--out {out}",
    )
    doc = json.loads(text)
    assert code == 0
    assert doc["hosts"] == ["HV-S1", "HV-S2", "HV-S3", "HV-S4"]  # as the inventory spells them
    assert doc["workflow_id"].startswith(SURVEY_WORKFLOW_PREFIX)
    placement = doc["placement"]
    assert placement["complete"]
    # HV-S1 runs 50 of 256 GiB (19.5 %): one VM (sql03, 24 GiB) brings it under 15 %.
    assert [(m["vm"], m["source"]) for m in placement["moves"]] == [("sql03", "HV-S1")]
    assert all(not h["over"] for h in placement["hosts"])
    plan = load_plan(out)
    assert plan.name == "rebalance-test"


async def test_an_unknown_host_is_refused_before_temporal(
    client: Client, task_queue: str, lab: Lab, tmp_path: Path
) -> None:
    never = tmp_path / "never.yaml"
    code, _, err = await snlm_plan(client, task_queue, lab, f"plan evacuate HV-S2 --to HV-S3,HV-NOWHERE --out {never}")
    assert code == 2
    assert "HV-NOWHERE" in err
    assert not never.exists()
    code, _, err = await snlm_plan(client, task_queue, lab, f"plan rebalance --out {tmp_path / 'plan.csv'}")
    assert code == 2
    assert ".yaml" in err


async def test_an_evacuation_that_cannot_place_everything_exits_3(
    client: Client, task_queue: str, lab: Lab, tmp_path: Path
) -> None:
    out = tmp_path / "partial.yaml"
    # HV-S4 has no Backup switch: bak01 cannot go, the others can.
    code, text, _ = await snlm_plan(client, task_queue, lab, f"plan evacuate HV-S2 --to HV-S4 --out {out}")
    assert code == 3
    assert "not placed:" in text
    assert "bak01 on HV-S2" in text
    assert "bak01" not in {m.vm for w in load_plan(out).waves for m in w.moves}
