"""The makespan benchmark's model-only mode, run as a user runs it (`python -m benchmarks.makespan --model-only`):
every scenario's table, with figures that hold by construction (no schedule beats the lower bound) and the one
the planner is built for (it is never worse than Forklift's rule on a rolling rebalance)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios import GENERATORS, ROLLING_REBALANCE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def output() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.makespan", "--model-only", "--quick", "--seeds", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ratios(output: str, kind: str) -> dict[str, tuple[float, float]]:
    table = output.split(f"\n{kind}: ", 1)[1]
    line = table.splitlines()[1]
    found = re.findall(r"([\w-]+) ([\d.]+) \(([\d.]+)\)", line)
    return {name: (float(med), float(worst)) for name, med, worst in found}


def test_every_scenario_has_every_schedulers_ratio_to_the_bound(output: str) -> None:
    assert "3 seed(s)" in output
    for kind in GENERATORS:
        ratios = _ratios(output, kind)
        assert set(ratios) == {"planner", "fifo-source", "fifo", "random"}
        for med, worst in ratios.values():
            # A schedule is never shorter than the lower bound; the model's bound is the same model's.
            assert 1.0 <= med <= worst


def test_on_a_rolling_rebalance_the_planner_is_never_worse_than_forklifts_rule(output: str) -> None:
    table = output.split(f"\n{ROLLING_REBALANCE}: ", 1)[1]
    gain = re.search(r"gain over fifo-source: median ([-\d.]+) %, least ([-\d.]+) %.*worse: (\d+)", table)
    assert gain is not None
    assert float(gain.group(1)) > 0
    assert float(gain.group(2)) >= 0
    assert gain.group(3) == "0"
    ratios = _ratios(output, ROLLING_REBALANCE)
    assert ratios["planner"][0] < ratios["fifo-source"][0]
