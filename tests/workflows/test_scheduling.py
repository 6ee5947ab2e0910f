"""The campaign planner and forecast (workflows/scheduling.py): examples of the model and of each scheduler's rule,
properties over random plans and topologies (slots never exceeded, every move started once, the forecast never
below the lower bound, the forecast taking the decisions `next_moves` takes, determinism), and the figures on
generated campaigns: a rolling rebalance (hosts both send and receive) and an evacuation (one host to several).
"""

from __future__ import annotations

import copy
import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.contracts import CampaignMove, HostProfile, MigrationPerformance, Scheduler
from workflows.scheduling import (
    DEFAULT_MODEL,
    PLANNER_RULES,
    UNCALIBRATED_MODEL,
    Forecast,
    Schedule,
    TransferModel,
    lower_bound,
    move_bytes,
    move_seconds_alone,
    next_moves,
    simulate,
    transfer_model,
)

GiB = 2**30
MODEL = TransferModel(stream_cap_fraction=0.7, setup_seconds=4.0, switchover_seconds=2.0, max_precopy_passes=5)
TEN_G = 10e9 / 8  # bytes per second
CAP = 0.7 * TEN_G
BOTH_HOSTS = (Scheduler.PLANNER, Scheduler.FIFO, Scheduler.RANDOM)


def _move(
    vm: str, source: str, destination: str, disk: float = 0, memory: int = 0, *, priority: int = 0, dirty: float = 0.0
) -> CampaignMove:
    return CampaignMove(
        vm,
        source,
        destination,
        priority=priority,
        memory_bytes=memory,
        disk_bytes=int(disk),
        dirty_bytes_per_second=dirty,
    )


def _hosts(*names: str, slots: int = 2, link: float = 10e9) -> dict[str, HostProfile]:
    return {name: HostProfile(name, slots=slots, link_bits_per_second=link) for name in names}


# -- the model ---------------------------------------------------------------------------------------------------
def test_bytes_are_the_disks_then_memory_once_when_the_guest_is_idle() -> None:
    move = _move("a", "HV01", "HV02", disk=40 * GiB, memory=8 * GiB)
    assert move_bytes(move, MODEL) == 48 * GiB


def test_precopy_passes_resend_what_the_guest_dirtied_up_to_the_last_pass() -> None:
    half = _move("a", "HV01", "HV02", memory=8 * GiB, dirty=50e6)
    # d = 0.5: five passes and the blackout send 1 + 1/2 + ... + 1/32 of the memory.
    assert move_bytes(half, MODEL, rate_bytes_per_second=100e6) == pytest.approx(8 * GiB * 1.96875)
    # A guest that dirties faster than the move sends never converges: every pass resends all of it.
    busy = _move("b", "HV01", "HV02", memory=8 * GiB, dirty=500e6)
    assert move_bytes(busy, MODEL, rate_bytes_per_second=100e6) == pytest.approx(8 * GiB * 6)


def test_compression_shrinks_memory_but_not_disks() -> None:
    move = _move("a", "HV01", "HV02", disk=10 * GiB, memory=8 * GiB)
    assert move_bytes(move, TransferModel(memory_compression=2.0)) == 14 * GiB


def test_a_move_alone_is_setup_bytes_at_one_streams_cap_and_switchover() -> None:
    move = _move("a", "HV01", "HV02", disk=10 * CAP)
    assert move_seconds_alone(move, HostProfile("HV01"), HostProfile("HV02"), MODEL) == pytest.approx(16.0)
    # The slower link sets the stream's cap.
    slow = HostProfile("HV02", link_bits_per_second=1e9)
    assert move_seconds_alone(move, HostProfile("HV01"), slow, MODEL) == pytest.approx(6 + 100)


def test_the_model_follows_the_hosts_performance_option() -> None:
    # Disks go over SMB at the whole link under every option; memory over one TCP stream (0.7 of the link),
    # compressed 2:1 under Compression, or over SMB too under SMB.
    hv01, hv02 = HostProfile("HV01"), HostProfile("HV02")
    disks = _move("disks", "HV01", "HV02", disk=100 * TEN_G)
    memory = _move("memory", "HV01", "HV02", memory=round(70 * TEN_G))
    alone = {
        option: (
            move_seconds_alone(disks, hv01, hv02, transfer_model(option)),
            move_seconds_alone(memory, hv01, hv02, transfer_model(option)),
        )
        for option in MigrationPerformance
    }
    assert alone[MigrationPerformance.TCPIP] == pytest.approx((106.0, 106.0))
    assert alone[MigrationPerformance.COMPRESSION] == pytest.approx((106.0, 56.0))
    assert alone[MigrationPerformance.SMB] == pytest.approx((106.0, 76.0))
    assert transfer_model(MigrationPerformance.COMPRESSION) == DEFAULT_MODEL
    # Campaigns that decided before the model knew the option: one cap for every byte, memory uncompressed.
    assert move_seconds_alone(disks, hv01, hv02, UNCALIBRATED_MODEL) == pytest.approx(6 + 100 / 0.7)


def test_memory_slower_than_its_stream_dirties_relatively_more() -> None:
    # The dirty ratio is the guest's rate over memory's own rate: 0.7 of the stream's under TCPIP.
    move = _move("a", "HV01", "HV02", memory=8 * GiB, dirty=35e6)
    tcp = transfer_model(MigrationPerformance.TCPIP)
    # d = 35 / (100 * 0.7) = 0.5; memory counted as the stream's bytes that take as long (/ 0.7).
    assert move_bytes(move, tcp, rate_bytes_per_second=100e6) == pytest.approx(8 * GiB * 1.96875 / 0.7)


def test_the_model_refuses_parameters_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="stream_cap_fraction"):
        TransferModel(stream_cap_fraction=0)
    with pytest.raises(ValueError, match="memory_stream_fraction"):
        TransferModel(memory_stream_fraction=1.5)
    with pytest.raises(ValueError, match="max_precopy_passes"):
        TransferModel(max_precopy_passes=0)


# -- the forecast's physics --------------------------------------------------------------------------------------
def test_one_move_takes_its_time_alone() -> None:
    moves = [_move("a", "HV01", "HV02", disk=100 * CAP)]
    forecast = simulate(moves, _hosts("HV01", "HV02"), scheduler=Scheduler.PLANNER, model=MODEL)
    assert forecast.makespan_seconds == pytest.approx(106.0)
    assert forecast.moves[moves[0].key].start == 0.0
    assert forecast.hosts["HV01"].bytes_out == forecast.hosts["HV02"].bytes_in == pytest.approx(100 * CAP)
    assert forecast.hosts["HV01"].busy_slot_seconds == pytest.approx(106.0)
    assert forecast.waves == pytest.approx((106.0,))


def test_two_moves_out_of_one_host_share_its_link() -> None:
    moves = [_move("a", "HV01", "HV02", disk=100 * CAP), _move("b", "HV01", "HV03", disk=100 * CAP)]
    forecast = simulate(moves, _hosts("HV01", "HV02", "HV03"), scheduler=Scheduler.FIFO, model=MODEL)
    # Each gets half of the 10 Gb/s link (less than a stream's cap) for the whole transfer.
    expected = 4 + 100 * CAP / (TEN_G / 2) + 2
    assert [forecast.moves[m.key].end for m in moves] == [pytest.approx(expected)] * 2


def test_a_move_held_back_by_its_other_end_leaves_its_share_to_the_move_beside_it() -> None:
    hosts = {**_hosts("HV01", "HV03"), "HV02": HostProfile("HV02", link_bits_per_second=1e9)}
    moves = [_move("slow", "HV01", "HV02", disk=10 * CAP), _move("fast", "HV01", "HV03", disk=100 * CAP)]
    forecast = simulate(moves, hosts, scheduler=Scheduler.FIFO, model=MODEL)
    # Max-min fair: the move to the 1 Gb/s host reaches 87.5 MB/s, so the other keeps a full stream (an equal
    # split of HV01's link would hold it to 625 MB/s).
    assert forecast.moves[moves[1].key].end == pytest.approx(4 + 100 + 2)
    assert forecast.moves[moves[0].key].end == pytest.approx(4 + 10 * CAP / (0.7 * 1e9 / 8) + 2)


def test_a_wave_starts_when_the_wave_before_has_ended() -> None:
    moves = [_move("a", "HV01", "HV02", disk=100 * CAP), _move("b", "HV03", "HV04", disk=10 * CAP)]
    waves = [[moves[0].key], [], [moves[1].key]]
    forecast = simulate(moves, _hosts(), scheduler=Scheduler.PLANNER, model=MODEL, waves=waves)
    assert forecast.waves == pytest.approx((106.0, 106.0, 122.0))
    assert forecast.moves[moves[1].key].start == pytest.approx(106.0)


def test_simulate_refuses_plans_it_cannot_run() -> None:
    move = _move("a", "HV01", "HV02", disk=GiB)
    with pytest.raises(ValueError, match="twice"):
        simulate([move, move], {}, scheduler=Scheduler.FIFO)
    with pytest.raises(ValueError, match="no move"):
        simulate([move], {}, scheduler=Scheduler.FIFO, waves=[["snlm-vm-x@hv01"]])
    with pytest.raises(ValueError, match="in no wave"):
        simulate([move], {}, scheduler=Scheduler.FIFO, waves=[[]])
    with pytest.raises(ValueError, match="no migration slots"):
        simulate([move], _hosts("HV02", slots=0), scheduler=Scheduler.FIFO)


def test_an_empty_campaign_ends_at_once() -> None:
    forecast = simulate([], {}, scheduler=Scheduler.PLANNER)
    assert forecast.makespan_seconds == 0.0
    assert forecast.waves == (0.0,)
    assert lower_bound([], {}).seconds == 0.0


def test_a_move_from_a_host_to_itself_holds_one_slot() -> None:
    moves = [_move("a", "HV01", "hv01", disk=10 * CAP), _move("b", "HV01", "HV02", disk=10 * CAP)]
    forecast = simulate(moves, _hosts("HV01", "HV02"), scheduler=Scheduler.FIFO, model=MODEL)
    assert [forecast.moves[m.key].start for m in moves] == [0.0, 0.0]
    assert forecast.makespan_seconds >= lower_bound(moves, _hosts("HV01", "HV02"), MODEL).seconds


# -- the schedulers' rules ---------------------------------------------------------------------------------------
def test_host_names_compare_case_insensitively_and_unknown_hosts_have_two_slots() -> None:
    hosts = {"hv01": HostProfile("hv01", slots=1)}
    running = [_move("r", "HV01", "HV09")]
    pending = [_move("a", "Hv01", "HV02"), _move("b", "HV03", "HV09"), _move("c", "HV04", "HV09")]
    for scheduler in BOTH_HOSTS:
        chosen = next_moves(pending, running, hosts, scheduler=scheduler)
        # HV01 is full; HV09 (not in `hosts`) has HYPERV_DEFAULT_MAX_MIGRATIONS = 2, one taken.
        assert len(chosen) == 1
        assert chosen[0].vm in ("b", "c")


def test_the_planner_serves_the_busiest_host_first() -> None:
    # HV09 has one slot; HV01 has far more to do than HV02, so HV09's slot goes to HV01's move although HV02's is
    # first in the plan and longer.
    pending = [
        _move("light", "HV02", "HV09", disk=300 * CAP),
        _move("heavy", "HV01", "HV09", disk=100 * CAP),
        *(_move(f"more{k}", f"HV1{k}", "HV01", disk=400 * CAP) for k in range(4)),
    ]
    hosts = {"HV09": HostProfile("HV09", slots=1)}
    planned = next_moves(pending, [], hosts, scheduler=Scheduler.PLANNER, model=MODEL)
    assert "heavy" in [m.vm for m in planned]
    assert "light" not in [m.vm for m in planned]
    fifo = next_moves(pending, [], hosts, scheduler=Scheduler.FIFO, model=MODEL)
    assert "light" in [m.vm for m in fifo]


def test_the_planner_starts_the_longest_first() -> None:
    pending = [_move(f"vm{k}", "HV01", f"HV1{k}", disk=(k + 1) * 10 * CAP) for k in range(5)]
    hosts = _hosts("HV01", slots=1)
    assert [m.vm for m in next_moves(pending, [], hosts, scheduler=Scheduler.PLANNER)] == ["vm4"]
    assert [m.vm for m in next_moves(pending, [], hosts, scheduler=Scheduler.FIFO)] == ["vm0"]


def test_the_planner_prefers_the_direction_with_a_free_stream() -> None:
    # HV01 sends one move already: a second move out would halve both, a move in gets a full stream.
    running = [_move("r", "HV01", "HV02", disk=100 * CAP)]
    pending = [_move("out", "HV01", "HV03", disk=200 * CAP), _move("in", "HV04", "HV01", disk=50 * CAP)]
    assert [m.vm for m in next_moves(pending, running, {}, scheduler=Scheduler.PLANNER)] == ["in"]


def test_priority_goes_first_but_never_idles_a_slot() -> None:
    hosts = _hosts("HV01", slots=1)
    pending = [_move("big", "HV01", "HV02", disk=500 * CAP), _move("urgent", "HV01", "HV03", disk=CAP, priority=5)]
    assert [m.vm for m in next_moves(pending, [], hosts, scheduler=Scheduler.PLANNER)] == ["urgent"]
    # The urgent move's destination is full: the other move takes HV01's slot rather than leave it idle.
    hosts["HV03"] = HostProfile("HV03", slots=1)
    running = [_move("r", "HV07", "HV03")]
    assert [m.vm for m in next_moves(pending, running, hosts, scheduler=Scheduler.PLANNER)] == ["big"]


def test_fifo_source_looks_at_the_source_only_and_the_destination_makes_the_move_wait() -> None:
    hosts = {**_hosts("HV01", "HV02", slots=1), "HV09": HostProfile("HV09", slots=1)}
    moves = [_move("a", "HV01", "HV09", disk=100 * CAP), _move("b", "HV02", "HV09", disk=100 * CAP)]
    assert next_moves(moves, [], hosts, scheduler=Scheduler.FIFO_SOURCE_CAP) == moves
    assert next_moves(moves, [], hosts, scheduler=Scheduler.FIFO) == moves[:1]
    forecast = simulate(moves, hosts, scheduler=Scheduler.FIFO_SOURCE_CAP, model=MODEL)
    waited = forecast.moves[moves[1].key]
    assert waited.chosen == 0.0
    assert waited.start == pytest.approx(106.0)


def test_random_shuffles_by_seed_and_round() -> None:
    pending = [_move(f"vm{k}", f"HV{k:02d}", "HV99") for k in range(20)]
    hosts = {"HV99": HostProfile("HV99", slots=1)}
    picks = [next_moves(pending, [], hosts, scheduler=Scheduler.RANDOM, seed=7, round_=r)[0].vm for r in range(8)]
    again = [next_moves(pending, [], hosts, scheduler=Scheduler.RANDOM, seed=7, round_=r)[0].vm for r in range(8)]
    assert picks == again
    assert len(set(picks)) > 1


def test_lower_bound_names_its_binding_term() -> None:
    evacuation = [_move(f"vm{k}", "HV01", f"HV1{k}", disk=100 * CAP) for k in range(3)]
    bound = lower_bound(evacuation, {}, MODEL)
    assert bound.binding == "host HV01 bytes out"
    assert bound.seconds == pytest.approx(6 + 300 * CAP / TEN_G)
    gather = [_move(f"vm{k}", f"HV1{k}", "HV01", disk=100 * CAP) for k in range(3)]
    assert lower_bound(gather, {}, MODEL).binding == "host HV01 bytes in"
    monster = [_move("monster", "HV01", "HV02", disk=1000 * CAP), _move("small", "HV03", "HV04", disk=CAP)]
    assert lower_bound(monster, {}, MODEL).binding == "move snlm-vm-monster@hv01 alone"
    # A host that only sends can never run one stream each way: its slots and links need longer than its alone-times
    # over its slots.
    many = [_move(f"vm{k}", "HV01", f"HV1{k}", disk=10 * CAP) for k in range(8)]
    bound = lower_bound(many, _hosts("HV01", slots=4), MODEL)
    assert bound.terms["host HV01 slots and links"] >= bound.terms["host HV01 slots"]


# -- properties over random plans and topologies -------------------------------------------------------------------
@st.composite
def _campaigns(draw: st.DrawFn) -> tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]]:
    count = draw(st.integers(2, 7))
    names = [f"HV{k:02d}" for k in range(count)]
    hosts: dict[str, HostProfile] = {}
    for name in names:
        if draw(st.integers(0, 4)):  # some hosts are left to the defaults
            spelling = name.lower() if draw(st.booleans()) else name
            hosts[spelling] = HostProfile(
                spelling,
                slots=draw(st.integers(1, 3)),
                link_bits_per_second=draw(st.sampled_from([1e9, 10e9, 25e9])),
            )
    moves: list[CampaignMove] = []
    for k in range(draw(st.integers(0, 30))):
        source = draw(st.sampled_from(names))
        destination = draw(st.sampled_from([n for n in names if n != source]))
        moves.append(
            CampaignMove(
                f"vm{k}",
                source.lower() if draw(st.booleans()) else source,
                destination,
                priority=draw(st.integers(0, 2)),
                memory_bytes=draw(st.integers(0, 64)) * GiB,
                disk_bytes=draw(st.integers(0, 300)) * GiB,
                dirty_bytes_per_second=float(draw(st.integers(0, 1500)) * 2**20),
            )
        )
    wave_count = draw(st.integers(1, 3))
    waves: list[list[str]] = [[] for _ in range(wave_count)]
    for move in moves:
        waves[draw(st.integers(0, wave_count - 1))].append(move.key)
    return moves, hosts, waves


def _slots(hosts: Mapping[str, HostProfile], name: str) -> int:
    return _profile(hosts, name).slots


def _profile(hosts: Mapping[str, HostProfile], name: str) -> HostProfile:
    profiles = {key.casefold(): profile for key, profile in hosts.items()}
    return profiles.get(name.casefold(), HostProfile(name))


def _touching(moves: Sequence[CampaignMove], name: str) -> int:
    return sum(1 for m in moves if name.casefold() in {m.source.casefold(), m.destination.casefold()})


def _running_part(
    moves: Sequence[CampaignMove], hosts: Mapping[str, HostProfile], rng: random.Random, share: float
) -> tuple[list[CampaignMove], list[CampaignMove]]:
    """(running, pending): what runs already is itself a valid set, a first-fit of about `share` of the plan."""
    running: list[CampaignMove] = []
    pending: list[CampaignMove] = []
    for move in moves:
        fits = all(_touching(running, h) < _slots(hosts, h) for h in (move.source, move.destination))
        (running if fits and rng.random() < share else pending).append(move)
    return running, pending


def _over_random_schedules(test: Callable[..., None]) -> Callable[..., None]:
    """A property over random campaigns, every scheduler (the planner with each of its rules), a seed, and a random
    source for what runs and ends."""
    return settings(max_examples=120, deadline=None)(
        given(
            _campaigns(),
            st.sampled_from(list(Scheduler)),
            st.integers(0, 2**16),
            st.randoms(use_true_random=False),
            st.integers(0, len(PLANNER_RULES) - 1),
        )(test)
    )


@_over_random_schedules
def test_next_moves_never_exceeds_any_hosts_slots(
    campaign: tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]],
    scheduler: Scheduler,
    seed: int,
    rng: random.Random,
    rule: int,
) -> None:
    moves, hosts, _ = campaign
    running, pending = _running_part(moves, hosts, rng, 0.4)
    chosen = next_moves(pending, running, hosts, scheduler=scheduler, seed=seed, round_=seed % 7, rule=rule)
    assert len({m.key for m in chosen}) == len(chosen)
    assert {m.key for m in chosen} <= {m.key for m in pending}
    if scheduler == Scheduler.FIFO_SOURCE_CAP:
        # The rule looks at the source only: each move started while its source had a free slot.
        for index, move in enumerate(chosen):
            assert _touching([*running, *chosen[:index]], move.source) < _slots(hosts, move.source)
        return
    for name in {h.casefold() for m in moves for h in (m.source, m.destination)}:
        assert _touching([*running, *chosen], name) <= max(_slots(hosts, name), _touching(running, name))
    # First-fit: nothing left pending could still start.
    taken = [*running, *chosen]
    for move in pending:
        if move not in chosen:
            assert any(_touching(taken, h) >= _slots(hosts, h) for h in (move.source, move.destination))


def _occupancy_peaks(moves: Sequence[CampaignMove], forecast: Forecast) -> dict[str, int]:
    events: dict[str, list[tuple[float, int]]] = {}
    for move in moves:
        span = forecast.moves[move.key]
        for host in {move.source.casefold(), move.destination.casefold()}:
            events.setdefault(host, []).extend([(span.start, 1), (span.end, -1)])
    peaks: dict[str, int] = {}
    for host, points in events.items():
        level = peak = 0
        for _, step in sorted(points):  # at one instant a slot is freed (-1) before it is taken again (+1)
            level += step
            peak = max(peak, level)
        peaks[host] = peak
    return peaks


@settings(max_examples=120, deadline=None)
@given(_campaigns(), st.sampled_from(list(Scheduler)), st.integers(0, 2**16))
def test_simulate_starts_every_move_once_within_slots_waves_and_bound(
    campaign: tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]],
    scheduler: Scheduler,
    seed: int,
) -> None:
    moves, hosts, waves = campaign
    forecast = simulate(moves, hosts, scheduler=scheduler, seed=seed, waves=waves)
    assert set(forecast.moves) == {m.key for m in moves}
    overhead = DEFAULT_MODEL.setup_seconds + DEFAULT_MODEL.switchover_seconds
    for span in forecast.moves.values():
        assert math.isfinite(span.start)
        assert span.chosen <= span.start
        assert span.end >= span.start + overhead - 1e-9
    for host, peak in _occupancy_peaks(moves, forecast).items():
        assert peak <= _slots(hosts, host)
    previous_end = 0.0
    for index, keys in enumerate(waves):
        assert all(forecast.moves[k].start >= previous_end for k in keys)
        wave_end = max((forecast.moves[k].end for k in keys), default=previous_end)
        assert forecast.waves[index] == pytest.approx(wave_end)
        previous_end = forecast.waves[index]
    assert forecast.makespan_seconds == pytest.approx(max((s.end for s in forecast.moves.values()), default=0.0))
    bound = lower_bound(moves, hosts)
    assert forecast.makespan_seconds >= bound.seconds * (1 - 1e-9) - 1e-9
    assert simulate(moves, hosts, scheduler=scheduler, seed=seed, waves=waves) == forecast


@settings(max_examples=80, deadline=None)
@given(_campaigns(), st.sampled_from([Scheduler.PLANNER, Scheduler.FIFO]))
def test_the_forecast_takes_the_decisions_next_moves_takes(
    campaign: tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]], scheduler: Scheduler
) -> None:
    moves, hosts, waves = campaign
    forecast = simulate(moves, hosts, scheduler=scheduler, waves=waves)
    wave_of = {key: index for index, keys in enumerate(waves) for key in keys}
    for instant in sorted({span.start for span in forecast.moves.values()}):
        started = {m.key for m in moves if forecast.moves[m.key].start == instant}
        wave = {wave_of[key] for key in started}
        assert len(wave) == 1
        pending = [m for m in moves if wave_of[m.key] in wave and forecast.moves[m.key].start >= instant]
        running = [m for m in moves if forecast.moves[m.key].start < instant < forecast.moves[m.key].end]
        # The forecast's rule is the one a campaign of the plan decides with.
        chosen = next_moves(pending, running, hosts, scheduler=scheduler, rule=forecast.rule)
        assert {m.key for m in chosen} == started


@settings(max_examples=60, deadline=None)
@given(_campaigns(), st.sampled_from([Scheduler.PLANNER, Scheduler.FIFO]))
def test_a_campaign_timed_by_other_hosts_decides_with_its_own_model(
    campaign: tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]], scheduler: Scheduler
) -> None:
    """`timing`: the decisions are those `model` takes at each instant the other hosts' moves end; timed by its own
    model, the simulation is the one without `timing`."""
    moves, hosts, waves = campaign
    model, timing = UNCALIBRATED_MODEL, DEFAULT_MODEL
    assert simulate(moves, hosts, scheduler=scheduler, waves=waves, model=model, timing=model) == simulate(
        moves, hosts, scheduler=scheduler, waves=waves, model=model
    )
    forecast = simulate(moves, hosts, scheduler=scheduler, waves=waves, model=model, timing=timing)
    # The planner's rule is the one its own model's forecast picks, as a campaign picks it.
    assert forecast.rule == simulate(moves, hosts, scheduler=scheduler, waves=waves, model=model).rule
    wave_of = {key: index for index, keys in enumerate(waves) for key in keys}
    for instant in sorted({span.start for span in forecast.moves.values()}):
        started = {m.key for m in moves if forecast.moves[m.key].start == instant}
        (wave,) = {wave_of[key] for key in started}
        pending = [m for m in moves if wave_of[m.key] == wave and forecast.moves[m.key].start >= instant]
        running = [m for m in moves if forecast.moves[m.key].start < instant < forecast.moves[m.key].end]
        chosen = next_moves(pending, running, hosts, scheduler=scheduler, model=model, rule=forecast.rule)
        assert {m.key for m in chosen} == started
    # Each move alone on its hosts takes the time `timing` gives it.
    for move in moves:
        alone = simulate([move], hosts, scheduler=scheduler, model=model, timing=timing).makespan_seconds
        source, destination = _profile(hosts, move.source), _profile(hosts, move.destination)
        assert alone == pytest.approx(move_seconds_alone(move, source, destination, timing))


@_over_random_schedules
def test_a_schedule_kept_across_decisions_decides_as_one_built_anew(
    campaign: tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]],
    scheduler: Scheduler,
    seed: int,
    rng: random.Random,
    rule: int,
) -> None:
    """The Campaign workflow keeps one Schedule per wave; a replay of a run that decided from scratch must find
    the same moves started at every decision, whatever ended in between and in whatever order."""
    moves, hosts, _ = campaign
    by_key = {m.key: m for m in moves}
    # Some moves already run, as when a run re-attaches to them.
    already, pending = _running_part(moves, hosts, rng, 0.3)
    running = [m.key for m in already]
    kept = Schedule(pending, [by_key[k] for k in running], hosts, scheduler=scheduler, seed=seed, rule=rule)
    for round_ in range(1, 4 * len(moves) + 2):
        anew = next_moves(
            pending, [by_key[k] for k in running], hosts, scheduler=scheduler, seed=seed, round_=round_, rule=rule
        )
        chosen = kept.choose(round_)
        assert [m.key for m in chosen] == [m.key for m in anew]
        assert kept.pending == len(pending) - len(chosen)
        started = {m.key for m in chosen}
        pending = [m for m in pending if m.key not in started]
        running.extend(m.key for m in chosen)
        assert kept.running() == set(running)
        if not running:
            assert not pending
            break
        for key in rng.sample(running, rng.randint(1, len(running))):
            running.remove(key)
            kept.ended(key)
    assert not pending


@_over_random_schedules
def test_a_schedule_asked_what_comes_next_decides_as_one_never_asked(
    campaign: tuple[list[CampaignMove], dict[str, HostProfile], list[list[str]]],
    scheduler: Scheduler,
    seed: int,
    rng: random.Random,
    rule: int,
) -> None:
    """A campaign prepares ahead the moves `after` names: each answer is what a real end and decision would start,
    and asking changes nothing (a replay decides as the first run did), while `drop` forgets a pending move for
    good (a prepared move that ended early never starts again)."""
    moves, hosts, _ = campaign
    by_key = {m.key: m for m in moves}
    already, pending = _running_part(moves, hosts, rng, 0.3)
    asked = Schedule(pending, already, hosts, scheduler=scheduler, seed=seed, rule=rule)
    twin = Schedule(pending, already, hosts, scheduler=scheduler, seed=seed, rule=rule)
    running = [m.key for m in already]
    dropped: set[str] = set()
    for round_ in range(1, 4 * len(moves) + 2):
        for key in rng.sample(running, min(len(running), 3)):
            trial = copy.deepcopy(twin)
            trial.ended(key)
            expected = [m.key for m in trial.choose(round_)]
            assert [m.key for m in asked.after(key, round_)] == expected
            # What `after` names was pending and fits beside everything else running.
            assert all(asked.is_pending(k) for k in expected)
        if pending and rng.random() < 0.2:
            gone = rng.choice(pending).key
            asked.drop(gone)
            twin.drop(gone)
            dropped.add(gone)
            pending = [m for m in pending if m.key != gone]
            assert not asked.is_pending(gone)
        chosen = [m.key for m in asked.choose(round_)]
        assert chosen == [m.key for m in twin.choose(round_)]
        assert not dropped & set(chosen)
        pending = [m for m in pending if m.key not in set(chosen)]
        running.extend(chosen)
        assert asked.running() == twin.running() == set(running)
        if not running:
            break
        for key in rng.sample(running, rng.randint(1, len(running))):
            running.remove(key)
            asked.ended(key)
            twin.ended(key)
    assert not pending
    assert {k for k in by_key if k not in dropped} >= set(running)


# -- the figures: generated campaigns -------------------------------------------------------------------------------
def _vm(rng: random.Random) -> tuple[int, int, float]:
    """Memory mostly 4-16 GiB with a few 64-256 GiB monsters, disks lognormal (median 60 GiB), dirty rates up to
    64 MiB/s."""
    memory = rng.randint(64, 256) if rng.random() < 0.04 else rng.randint(4, 16)
    disk = min(2048.0, rng.lognormvariate(math.log(60), 0.8))
    return memory * GiB, int(disk * GiB), rng.uniform(0, 64) * 2**20


def rolling_rebalance(
    seed: int, *, hosts: tuple[int, int] = (8, 16), vms: tuple[int, int] = (6, 14)
) -> tuple[list[CampaignMove], dict[str, HostProfile]]:
    """8-16 hosts (or `hosts`) with 2 slots and 10 Gb/s; each sends 6-14 VMs (or `vms`) to random others (so each
    receives too), in a shuffled plan order."""
    rng = random.Random(seed)
    names = [f"HV{k:02d}" for k in range(1, rng.randint(*hosts) + 1)]
    moves = []
    for source in names:
        for k in range(rng.randint(*vms)):
            memory, disk, dirty = _vm(rng)
            destination = rng.choice([n for n in names if n != source])
            moves.append(CampaignMove(f"{source}-vm{k}", source, destination, None, 0, memory, disk, dirty))
    rng.shuffle(moves)
    return moves, {name: HostProfile(name) for name in names}


def evacuation(seed: int) -> tuple[list[CampaignMove], dict[str, HostProfile]]:
    """One host's 20-40 VMs to 4-8 others."""
    rng = random.Random(seed)
    names = [f"HV{k:02d}" for k in range(rng.randint(4, 8) + 1)]
    moves = []
    for k in range(rng.randint(20, 40)):
        memory, disk, dirty = _vm(rng)
        moves.append(CampaignMove(f"vm{k}", names[0], rng.choice(names[1:]), None, 0, memory, disk, dirty))
    return moves, {name: HostProfile(name) for name in names}


Generator = Callable[[int], tuple[list[CampaignMove], dict[str, HostProfile]]]


def makespans(
    generate: Generator, schedulers: Sequence[Scheduler], seeds: range = range(20)
) -> dict[Scheduler, list[float]]:
    """Makespan over lower bound, per scheduler, one per seed."""
    figures: dict[Scheduler, list[float]] = {s: [] for s in schedulers}
    for seed in seeds:
        moves, hosts = generate(seed)
        bound = lower_bound(moves, hosts).seconds
        for scheduler in schedulers:
            figures[scheduler].append(simulate(moves, hosts, scheduler=scheduler, seed=seed).makespan_seconds / bound)
    return figures


def by_destination(seed: int) -> tuple[list[CampaignMove], dict[str, HostProfile]]:
    """The same rebalance, its plan listed destination by destination (as a plan that fills hosts one by one is)."""
    moves, hosts = rolling_rebalance(seed)
    return sorted(moves, key=lambda m: (m.destination, m.vm)), hosts


# The gain over Forklift's rule depends on how badly the plan's order serves that rule: over 20 seeds the planner ends
# 27.8 % sooner on a shuffled plan and 35.5 % sooner on a plan listed by destination; the planner does not depend on
# the order (1.159 of the bound either way). Under the model before it followed the performance option (every byte at
# one TCP stream's 0.7 of the link) the planner was 1.087 of that model's bound and 20.8 % / 28.5 % ahead: with the
# VHDs at the whole link, a host's second move in the same direction adds nothing, and the bound counts every link
# full from start to end. These floors catch a planner that got worse; the figures per scenario in the lab are
# benchmarks/makespan.py's.
REBALANCE_OVER_BOUND = 1.17
EVACUATION_OVER_BOUND = 1.03


@pytest.mark.parametrize(("generate", "gain_over_fifo_source"), [(rolling_rebalance, 0.25), (by_destination, 0.32)])
def test_on_a_rolling_rebalance_the_planner_beats_forklifts_rule_and_nears_the_bound(
    generate: Generator, gain_over_fifo_source: float
) -> None:
    figures = makespans(generate, [Scheduler.PLANNER, Scheduler.FIFO_SOURCE_CAP])
    planner, fifo_source = figures[Scheduler.PLANNER], figures[Scheduler.FIFO_SOURCE_CAP]
    assert all(p <= f for p, f in zip(planner, fifo_source, strict=True))
    gain = 1 - statistics.median(p / f for p, f in zip(planner, fifo_source, strict=True))
    assert gain >= gain_over_fifo_source
    assert statistics.median(planner) <= REBALANCE_OVER_BOUND


def test_the_planners_forecast_keeps_the_rule_whose_campaign_ends_clearly_first() -> None:
    chosen = {}
    for seed in range(20):
        moves, hosts = rolling_rebalance(seed)
        each = [simulate(moves, hosts, scheduler=Scheduler.PLANNER, rule=r) for r in range(len(PLANNER_RULES))]
        assert [forecast.rule for forecast in each] == list(range(len(PLANNER_RULES)))
        best = simulate(moves, hosts, scheduler=Scheduler.PLANNER)
        soonest = min(each, key=lambda forecast: (forecast.makespan_seconds, forecast.rule))
        # The first rule unless another ends 2 % sooner: below that, the better rule is as likely the model's noise.
        assert best == (soonest if soonest.makespan_seconds * 1.02 < each[0].makespan_seconds else each[0])
        chosen[seed] = best.rule
    # The first rule is not always best: on seed 7 ranking moves by both hosts' work ends 7.4 % sooner.
    assert chosen[7] == 1
    assert simulate(*rolling_rebalance(7), scheduler=Scheduler.PLANNER, rule=0).makespan_seconds > 1.07 * (
        simulate(*rolling_rebalance(7), scheduler=Scheduler.PLANNER).makespan_seconds
    )
    # The other schedulers have no rules.
    assert simulate(*rolling_rebalance(3), scheduler=Scheduler.FIFO).rule == 0
    with pytest.raises(ValueError, match="unknown planner rule 3"):
        simulate(*rolling_rebalance(3), scheduler=Scheduler.PLANNER, rule=3)


def test_on_an_evacuation_the_planner_is_within_three_percent_of_the_bound() -> None:
    planner = makespans(evacuation, [Scheduler.PLANNER])[Scheduler.PLANNER]
    assert max(planner) <= EVACUATION_OVER_BOUND


def test_a_host_already_moving_gives_its_shortest_move_of_the_same_priority() -> None:
    # HV01 runs one long move: its second slot takes the shortest, so that move's set-up and switch-over overlap the
    # long transfer instead of waiting for the end of the campaign.
    running = [_move("long", "HV01", "HV02", disk=500 * CAP)]
    pending = [_move(f"vm{k}", "HV01", "HV02", disk=(k + 1) * 10 * CAP) for k in range(4)]
    hosts = _hosts("HV01", "HV02", slots=2)
    assert [m.vm for m in next_moves(pending, running, hosts, scheduler=Scheduler.PLANNER)] == ["vm0"]
    # An idle host starts with its longest.
    assert [m.vm for m in next_moves(pending, [], _hosts("HV01", "HV02", slots=1), scheduler=Scheduler.PLANNER)] == [
        "vm3"
    ]
    # Priority still comes first: the shortest of the most urgent moves, never a less urgent one.
    urgent = [replace(m, priority=5) for m in pending[2:]]
    chosen = next_moves([*pending[:2], *urgent], running, hosts, scheduler=Scheduler.PLANNER)
    assert [m.vm for m in chosen] == ["vm2"]


def test_equally_short_moves_of_a_busy_host_start_in_plan_order() -> None:
    # Five like VMs between two hosts with two slots each: the second start is the next one planned, not the last.
    like = [_move(f"vm{k}", "HV01", "HV02", disk=10 * CAP) for k in range(5)]
    hosts = _hosts("HV01", "HV02", slots=2)
    assert [m.vm for m in next_moves(like, [], hosts, scheduler=Scheduler.PLANNER)] == ["vm0", "vm1"]
    assert [m.vm for m in next_moves(like[1:], like[:1], hosts, scheduler=Scheduler.PLANNER)] == ["vm1"]
    # Among the shortest only: a shorter move later in the plan still goes before longer ones planned earlier.
    mixed = [*like[:3], _move("small", "HV01", "HV02", disk=CAP)]
    assert [m.vm for m in next_moves(mixed[1:], like[:1], hosts, scheduler=Scheduler.PLANNER)] == ["small"]
