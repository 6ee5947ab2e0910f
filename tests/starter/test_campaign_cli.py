"""`snlm campaign` without Temporal: what is decided before a server is reached (a plan refused whole, the
forecast), and the command line itself. The commands that talk to Temporal run end to end in
tests/e2e/test_campaign.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from starter import cli
from workflows.scheduling import PLANNER_RULES

EXAMPLES = Path(__file__).resolve().parents[2] / "starter" / "examples"


async def snlm(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    # An address nothing listens on: these commands must not need Temporal.
    code = await cli.execute(["--address", "127.0.0.1:9", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNLM_INVENTORY", raising=False)


async def test_forecast_prints_the_end_per_wave_and_per_host_without_temporal() -> None:
    code, out, _ = await snlm("--output", "json", "campaign", "forecast", str(EXAMPLES / "plan.yaml"))
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert doc["makespan_seconds"] > 0
    assert set(doc["waves"]) == {"pilot", "bulk"}  # (a JSON object: sorted keys)
    assert doc["waves"]["pilot"] <= doc["waves"]["bulk"] <= doc["makespan_seconds"] + 1e-6
    assert {"HV01", "HV02", "HV03"} <= set(doc["hosts"])
    assert doc["end"]
    # The planner's rule whose simulated campaign ends first: the one the campaign will decide with.
    assert doc["planner_rule"] in PLANNER_RULES


async def test_a_plans_measured_set_up_lengthens_the_forecast_by_its_moves_on_the_busiest_host(tmp_path: Path) -> None:
    moves = "".join(
        f"  - {{vm: vm{n}, source: HV01, destination: HV02, memory_gb: 4, disk_gb: 20}}\n" for n in range(8)
    )
    base = "hosts: {HV01: {slots: 2, link_gbps: 10}, HV02: {slots: 2, link_gbps: 10}}\nmoves:\n" + moves
    ends = {}
    for setup in (None, 4, 34):
        plan = tmp_path / f"plan-{setup}.yaml"
        plan.write_text(base if setup is None else f"setup_seconds: {setup}\n{base}", encoding="utf-8")
        code, out, _ = await snlm("--output", "json", "campaign", "forecast", str(plan))
        assert code == cli.EXIT_OK
        doc = json.loads(out)
        ends[setup] = doc["makespan_seconds"]
        assert doc["setup_seconds"] == (4 if setup is None else setup)
    # 4 s is the model's own; 30 s more per move, eight moves two at a time on HV01: four rounds, 120 s more.
    assert ends[4] == pytest.approx(ends[None])
    assert ends[34] - ends[4] == pytest.approx(120, abs=1)


async def test_a_bad_plan_is_refused_whole_before_temporal_is_reached(tmp_path: Path) -> None:
    plan = tmp_path / "bad.csv"
    plan.write_text(
        "vm,source,destination,storage_path,wave\nweb01,HV1,HV1,,w\n,HV1,HV2,,w\nweb01,HV1,HV2,relative\\path,w\n",
        encoding="utf-8",
    )
    code, out, err = await snlm("campaign", "start", str(plan))
    assert code == cli.EXIT_USAGE
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"snlm: plan {plan} has ")
    assert any(line.strip().startswith(f"{plan}:2:") for line in lines)  # source == destination
    assert any(line.strip().startswith(f"{plan}:3:") for line in lines)  # no vm
    assert any(line.strip().startswith(f"{plan}:4:") for line in lines)  # listed twice, relative storage path


async def test_json_errors_carry_every_problem(tmp_path: Path) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text("name: ok\nwaves:\n  - name: w\n    moves:\n      - {vm: a, source: H1}\n", encoding="utf-8")
    code, out, _ = await snlm("--output", "json", "campaign", "forecast", str(plan))
    assert code == cli.EXIT_USAGE
    problems = json.loads(out)["error"]["problems"]
    assert [(p["line"], p["field"]) for p in problems] == [(5, "waves[0].moves[0].destination")]


@pytest.mark.parametrize(
    "argv",
    [
        ["campaign", "watch", "n", "--once"],
        ["campaign", "pause", "n", "--reason", "freeze"],
        ["campaign", "retry-failed", "n"],
        ["campaign", "report", "n", "--out", "r.html"],
        ["campaign", "start", "p.yaml", "--no-check", "--wait", "--delegation", "skip"],
        ["plan", "evacuate", "HV1", "--to", "HV2,HV3", "--out", "p.yaml"],
    ],
)
def test_the_command_line_parses(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.command == argv[0]
