"""The campaign benchmarks' scenarios: the same seed gives the same scenario, sizes stay in their ranges, and every
plan is one a plan file could hold (starter/plans.py reads the scenario's YAML back to the same plan) and one the
lab can load (its topology validates)."""

from __future__ import annotations

import pytest

from benchmarks.scenarios import (
    DESTINATION_HOTSPOT,
    EVACUATION,
    GENERATORS,
    HARDWARE_REFRESH,
    HOSTS_RANGE,
    MEMORY_GIB,
    MONSTER_MEMORY_GIB,
    MOVES_RANGE,
    NEW_LINK_GBPS,
    OLD_LINK_GBPS,
    QUICK_HOSTS,
    QUICK_MOVES,
    ROLLING_REBALANCE,
    Scenario,
    draw_size,
    generate,
    tiny_estate,
)
from lab.model.topology import parse_topology
from starter.plans import parse_plan_yaml
from workflows.contracts import Scheduler, campaign_input
from workflows.scheduling import lower_bound, simulate

KINDS = sorted(GENERATORS)


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_gives_the_same_scenario_and_another_seed_another(kind: str) -> None:
    assert generate(kind, 3) == generate(kind, 3)
    assert generate(kind, 3).vms != generate(kind, 4).vms
    assert draw_size(kind, 5) == draw_size(kind, 5)


@pytest.mark.parametrize("kind", KINDS)
def test_quick_sizes_are_the_small_end(kind: str) -> None:
    scenario = generate(kind, 0)
    assert (len(scenario.hosts), len(scenario.vms)) == (QUICK_HOSTS, QUICK_MOVES)
    assert draw_size(kind, 0, quick=True) == (QUICK_HOSTS, QUICK_MOVES)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_drawn_sizes_stay_in_their_ranges(kind: str, seed: int) -> None:
    hosts, moves = draw_size(kind, seed)
    assert HOSTS_RANGE[0] <= hosts <= HOSTS_RANGE[1]
    assert MOVES_RANGE[0] <= moves <= MOVES_RANGE[1]
    assert draw_size(kind, seed, max_moves=300)[1] <= 300


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_vm_sizes_are_an_estates(kind: str, seed: int) -> None:
    scenario = generate(kind, seed, hosts=16, moves=400)
    common = [vm for vm in scenario.vms if vm.memory_gib in MEMORY_GIB]
    monsters = [vm for vm in scenario.vms if vm.memory_gib in MONSTER_MEMORY_GIB]
    assert len(common) + len(monsters) == len(scenario.vms)
    assert 1 <= len(monsters) <= 0.05 * len(scenario.vms)
    for vm in scenario.vms:
        assert 1 <= len(vm.disks_gib) <= 3
        assert all(0.25 <= disk <= 2048 and (disk * 4).is_integer() for disk in vm.disks_gib)
        assert 1 <= vm.dirty_mib_per_second <= 400
        assert vm.source != vm.destination
    # Lognormal disks: the median VM's VHDs are tens of GiB, the largest several times more.
    totals = sorted(vm.disk_gib for vm in scenario.vms)
    assert 30 <= totals[len(totals) // 2] <= 200
    assert totals[-1] > 3 * totals[len(totals) // 2]


@pytest.mark.parametrize("kind", KINDS)
def test_the_plan_reads_back_from_its_plan_file_as_the_same_plan(kind: str) -> None:
    scenario = generate(kind, 1, hosts=12, moves=150)
    for scheduler in (Scheduler.PLANNER, Scheduler.FIFO_SOURCE_CAP):
        parsed = parse_plan_yaml(scenario.plan_yaml(scheduler), source=f"{kind}.yaml")
        assert parsed == scenario.plan(scheduler)
    # And it packs into a campaign's input.
    packed = campaign_input(scenario.plan(), task_queue="q").moves
    assert len(packed) == len(scenario.vms)
    assert packed.move(0) == scenario.moves()[0]


@pytest.mark.parametrize("kind", KINDS)
def test_the_topology_loads_and_holds_every_vm_on_its_source(kind: str) -> None:
    scenario = generate(kind, 2)
    spec = parse_topology(scenario.topology(time_scale=50), source=f"<{kind}>")
    assert spec.lab.time_scale == 50
    placed = {vm.name: vm.host for vm in spec.vms}
    assert placed == {vm.name: vm.source for vm in scenario.vms}
    links = {h.name: next(n.bandwidth_gbps for n in h.nics if n.name == "Migration") for h in spec.hosts}
    assert links == {h.name: h.link_gbps for h in scenario.hosts}
    limits = {h.name: h.live_migration.max_vm_migrations for h in spec.hosts}
    assert limits == {h.name: h.slots for h in scenario.hosts}
    disks = {vm.name: tuple(d.file_gb for d in vm.disks) for vm in spec.vms}
    assert disks == {vm.name: vm.disks_gib for vm in scenario.vms}


def _roles(scenario: Scenario) -> tuple[set[str], set[str]]:
    return {vm.source for vm in scenario.vms}, {vm.destination for vm in scenario.vms}


@pytest.mark.parametrize("seed", range(3))
def test_each_kind_has_its_shape(seed: int) -> None:
    sources, destinations = _roles(generate(EVACUATION, seed))
    assert len(sources) == 1
    assert 3 <= len(destinations) <= 7
    assert not sources & destinations

    rebalance = generate(ROLLING_REBALANCE, seed)
    sources, destinations = _roles(rebalance)
    assert sources & destinations, "hosts both send and receive"
    assert [vm.source for vm in rebalance.vms] == sorted(vm.source for vm in rebalance.vms), "listed host by host"

    refresh = generate(HARDWARE_REFRESH, seed)
    speed = {h.name: h.link_gbps for h in refresh.hosts}
    assert all(speed[vm.source] == OLD_LINK_GBPS and speed[vm.destination] == NEW_LINK_GBPS for vm in refresh.vms)

    sources, destinations = _roles(generate(DESTINATION_HOTSPOT, seed))
    assert len(destinations) in (1, 2)
    assert len(sources) > 2 * len(destinations)


@pytest.mark.parametrize("kind", KINDS)
def test_every_scheduler_can_forecast_it_and_none_beats_the_bound(kind: str) -> None:
    scenario = generate(kind, 0)
    moves, hosts = scenario.moves(), scenario.profiles()
    bound = lower_bound(moves, hosts).seconds
    for scheduler in Scheduler:
        forecast = simulate(moves, hosts, scheduler=scheduler, seed=0)
        assert forecast.makespan_seconds >= bound * (1 - 1e-9)
        assert len(forecast.moves) == len(moves)


def test_the_tiny_estate_moves_every_vm_to_the_next_host() -> None:
    scenario = tiny_estate(5, 23)
    assert len(scenario.vms) == 23
    assert len(scenario.hosts) == 5
    names = [h.name for h in scenario.hosts]
    for index, vm in enumerate(scenario.vms):
        assert vm.source == names[index % 5]
        assert vm.destination == names[(index + 1) % 5]
    parse_topology(scenario.topology(time_scale=1000), source="<tiny>")
    assert parse_plan_yaml(scenario.plan_yaml(), source="tiny.yaml") == scenario.plan()
