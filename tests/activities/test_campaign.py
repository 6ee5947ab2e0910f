"""The campaign's forecast activity: the planner's simulation of the moves left, with the model the campaign
decides with (the performance option's, the plan's measured set-up)."""

from __future__ import annotations

import pytest

from activities.campaign import forecast_campaign
from workflows.contracts import (
    CampaignMove,
    CampaignWave,
    ForecastInput,
    HostProfile,
    MigrationPerformance,
    Scheduler,
    pack_moves,
)

GIB = 2**30
HOSTS = (HostProfile("HV01", 2, 10e9), HostProfile("HV02", 2, 10e9))


def _input(**fields: object) -> ForecastInput:
    moves = tuple(CampaignMove(f"vm{n}", "HV01", "HV02", memory_bytes=4 * GIB, disk_bytes=20 * GIB) for n in range(8))
    waves = (CampaignWave("first", moves[:4]), CampaignWave("second", moves[4:]))
    return ForecastInput(moves=pack_moves(waves), hosts=HOSTS, scheduler=Scheduler.PLANNER, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("performance", [None, MigrationPerformance.COMPRESSION])
def test_a_measured_set_up_counts_in_every_move(performance: MigrationPerformance | None) -> None:
    own = forecast_campaign(_input(performance=performance))
    assert forecast_campaign(_input(performance=performance, setup_seconds=None)) == own
    slower = forecast_campaign(_input(performance=performance, setup_seconds=34.0))
    # Each move's set-up is 4 s in both models; 30 s more, eight moves two at a time: four rounds, 120 s later.
    assert slower.makespan_seconds - own.makespan_seconds == pytest.approx(120, abs=1)
    # Each wave (four moves, two rounds) ends 60 s later than the one before it did.
    assert [b - a for a, b in zip(own.wave_ends, slower.wave_ends, strict=True)] == pytest.approx([60, 120], abs=1)
    # The busiest host's last move ends with the campaign.
    assert slower.host_ends is not None
    assert max(slower.host_ends.values()) == pytest.approx(slower.makespan_seconds)
