"""The transfer model: full-duplex adapters shared max-min fairly, the stream cap, set-up and switch-over.

The allocation is checked as a pure function, then through the engine: a move's simulated duration is its
set-up, its bytes at the rates the allocation gives, and its switch-over. The VMs dirty no memory, so a move
makes one pre-copy pass and its duration is known to the microsecond; durations are simulated seconds, never
wall time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.model.migration import (
    SETUP_SECONDS,
    SMB_STREAM_FRACTION,
    SWITCHOVER_SECONDS,
    TCP_STREAM_FRACTION,
    JobState,
    MoveEngine,
    max_min_rates,
)
from lab.model.state import GIB, TransferSettings, World
from lab.model.topology import TopologyError, parse_topology
from tests.lab.test_model_migration import (
    host_spec,
    make_world,
    request,
    sim_duration,
    start_engines,
    storage_request,
    vm_spec,
    wait_done,
    wait_until,
)

GBIT = 10**9 / 8  # bytes per second of 1 Gbit/s
MEMORY_GB = 8
TOLERANCE = 1e-3  # simulated seconds: job times are datetimes (microseconds), events are exact


@pytest.fixture
def running() -> Iterator[Callable[..., MoveEngine]]:
    yield from start_engines()


def hosts(count: int, gbps: float = 10, performance: str = "TCPIP", **nic: Any) -> list[dict[str, Any]]:
    return [
        host_spec(
            f"HV0{i}",
            i,
            nics=[{"name": "LM", "ip": f"10.10.10.{10 + i}", "bandwidth_gbps": gbps, **nic}],
            live_migration={"performance": performance},
        )
        for i in range(1, count + 1)
    ]


def quiet_vm(name: str, host: str = "HV01", **overrides: Any) -> dict[str, Any]:
    """A VM with only memory to move, which it never dirties."""
    return vm_spec(name, host, disks=[], memory_gb=MEMORY_GB, dirty_rate_mbps=0, **overrides)


def expected(rate_gbps: float, *, setup: float = SETUP_SECONDS, switchover: float = SWITCHOVER_SECONDS) -> float:
    """The duration of one quiet VM's move whose memory goes at `rate_gbps` all the way."""
    return setup + MEMORY_GB * GIB / (rate_gbps * GBIT) + switchover


def started_together(engine: MoveEngine, world: World, *requests: Any) -> list[float]:
    # The same simulated instant for every move: the clock all but stops while they are submitted (each
    # submission first brings the engine up to the clock's present).
    scale = world.clock.time_scale
    world.clock.time_scale = 1e-9
    try:
        jobs = [engine.start_move(r) for r in requests]
    finally:
        world.clock.time_scale = scale
    done = [wait_done(job) for job in jobs]
    assert all(job.state == JobState.Completed for job in done), [j.lab_detail for j in done]
    return [sim_duration(job) for job in done]


# -- the allocation ----------------------------------------------------------------------------------------
def test_two_flows_out_of_one_host_share_its_outgoing_capacity() -> None:
    rates = max_min_rates(
        {"a": (math.inf, [("A", "out"), ("B", "in")]), "b": (math.inf, [("A", "out"), ("C", "in")])},
        {("A", "out"): 10.0, ("B", "in"): 10.0, ("C", "in"): 10.0},
    )
    assert rates == {"a": 5.0, "b": 5.0}


def test_one_flow_out_and_one_in_each_get_the_full_link() -> None:
    links = {("A", "out"): 10.0, ("A", "in"): 10.0, ("B", "out"): 10.0, ("B", "in"): 10.0}
    rates = max_min_rates(
        {"ab": (math.inf, [("A", "out"), ("B", "in")]), "ba": (math.inf, [("B", "out"), ("A", "in")])}, links
    )
    assert rates == {"ab": 10.0, "ba": 10.0}
    # Half duplex: one budget for both directions.
    rates = max_min_rates(
        {"ab": (math.inf, [("A", "both"), ("B", "both")]), "ba": (math.inf, [("B", "both"), ("A", "both")])},
        {("A", "both"): 10.0, ("B", "both"): 10.0},
    )
    assert rates == {"ab": 5.0, "ba": 5.0}


def test_what_one_flow_cannot_use_goes_to_the_others() -> None:
    links = {("A", "out"): 10.0, ("B", "in"): 2.0, ("C", "in"): 10.0, ("D", "in"): 10.0}
    rates = max_min_rates(
        {
            "to_slow_b": (math.inf, [("A", "out"), ("B", "in")]),  # held by B's 2
            "capped": (3.0, [("A", "out"), ("C", "in")]),  # held by its own cap
            "rest": (math.inf, [("A", "out"), ("D", "in")]),  # what A has left
        },
        links,
    )
    assert rates == pytest.approx({"to_slow_b": 2.0, "capped": 3.0, "rest": 5.0})
    assert sum(rates.values()) == pytest.approx(10.0)


def test_a_flow_without_capacity_gets_nothing() -> None:
    rates = max_min_rates(
        {"none": (0.0, [("A", "out")]), "dead": (5.0, [("Z", "out")]), "ok": (math.inf, [("A", "out")])},
        {("A", "out"): 4.0, ("Z", "out"): 0.0},
    )
    assert rates == {"none": 0.0, "dead": 0.0, "ok": 4.0}


def test_many_flows_end_in_few_rounds_and_never_overfill_a_link() -> None:
    flows = {i: (1.0 + i % 7, [("S", "out"), (f"D{i % 5}", "in")]) for i in range(200)}
    capacities: dict[Any, float] = {("S", "out"): 250.0} | {(f"D{k}", "in"): 10.0 + 20 * k for k in range(5)}
    rates = max_min_rates(flows, capacities)
    for link, capacity in capacities.items():
        assert sum(r for key, r in rates.items() if link in flows[key][1]) <= capacity * (1 + 1e-9)
    assert all(0 < rates[key] <= cap * (1 + 1e-9) for key, (cap, _) in flows.items())


# -- through the engine ------------------------------------------------------------------------------------
def test_the_defaults() -> None:
    assert TransferSettings() == TransferSettings(
        tcp_stream_fraction=TCP_STREAM_FRACTION,
        smb_stream_fraction=SMB_STREAM_FRACTION,
        setup_seconds=SETUP_SECONDS,
        switchover_seconds=SWITCHOVER_SECONDS,
    )
    assert (TCP_STREAM_FRACTION, SMB_STREAM_FRACTION, SETUP_SECONDS, SWITCHOVER_SECONDS) == (0.7, 1.0, 4.0, 2.0)
    assert make_world().transfer == TransferSettings()


def test_two_moves_out_of_one_host_share_its_outgoing_capacity(running) -> None:
    # Streams as fast as the link, so that only the adapters decide.
    world = make_world(hosts(3), [quiet_vm("a"), quiet_vm("b")], transfer={"tcp_stream_fraction": 1})
    durations = started_together(running(world), world, request("a", "HV01", "HV02"), request("b", "HV01", "HV03"))
    assert durations == pytest.approx([expected(5), expected(5)], abs=TOLERANCE)


def test_one_move_out_and_one_in_each_get_the_full_link(running) -> None:
    world = make_world(hosts(2), [quiet_vm("a", "HV01"), quiet_vm("b", "HV02")], transfer={"tcp_stream_fraction": 1})
    durations = started_together(running(world), world, request("a", "HV01", "HV02"), request("b", "HV02", "HV01"))
    assert durations == pytest.approx([expected(10), expected(10)], abs=TOLERANCE)


def test_a_half_duplex_adapter_shares_one_figure_for_both_directions(running) -> None:
    world = make_world(
        hosts(2, full_duplex=False),
        [quiet_vm("a", "HV01"), quiet_vm("b", "HV02")],
        transfer={"tcp_stream_fraction": 1},
    )
    durations = started_together(running(world), world, request("a", "HV01", "HV02"), request("b", "HV02", "HV01"))
    assert durations == pytest.approx([expected(5), expected(5)], abs=TOLERANCE)


def test_the_stream_cap_binds_on_a_fast_link_and_smb_is_not_capped(running) -> None:
    tcp = make_world(hosts(2, gbps=25), [quiet_vm("a")])
    (alone,) = started_together(running(tcp), tcp, request("a"))
    assert alone == pytest.approx(expected(0.7 * 25), abs=TOLERANCE)

    # Of the slower adapter of the two.
    mixed_hosts = hosts(2, gbps=25)
    mixed_hosts[1]["nics"][0]["bandwidth_gbps"] = 10
    mixed = make_world(mixed_hosts, [quiet_vm("a")])
    (slower,) = started_together(running(mixed), mixed, request("a"))
    assert slower == pytest.approx(expected(0.7 * 10), abs=TOLERANCE)

    smb = make_world(hosts(2, gbps=25, performance="SMB"), [quiet_vm("a")])
    (multichannel,) = started_together(running(smb), smb, request("a"))
    assert multichannel == pytest.approx(expected(25), abs=TOLERANCE)

    # Two capped streams out of one host still fill it between them when their caps allow.
    shared = make_world(hosts(3, gbps=25), [quiet_vm("a"), quiet_vm("b")])
    both = started_together(running(shared), shared, request("a", "HV01", "HV02"), request("b", "HV01", "HV03"))
    assert both == pytest.approx([expected(12.5), expected(12.5)], abs=TOLERANCE)


def test_compression_halves_the_bytes_on_a_capped_stream(running) -> None:
    world = make_world(hosts(2, performance="Compression"), [quiet_vm("a")])
    (duration,) = started_together(running(world), world, request("a"))
    assert duration == pytest.approx(expected(2 * 0.7 * 10), abs=TOLERANCE)


def test_a_storage_moves_vhds_go_over_smb_and_its_memory_over_the_stream(running) -> None:
    vm = vm_spec("web", disks=[{"path": r"D:\Hyper-V\web\web.vhdx", "size_gb": 40, "file_gb": 6}])
    vm.update(memory_gb=MEMORY_GB, dirty_rate_mbps=0)
    world = make_world(hosts(2), [vm])
    (duration,) = started_together(running(world), world, storage_request("web"))
    assert duration == pytest.approx(expected(0.7 * 10) + 6 * GIB / (10 * GBIT), abs=TOLERANCE)


def test_set_up_and_switch_over_are_in_every_moves_duration(running) -> None:
    plain = make_world(hosts(2), [quiet_vm("a")], transfer={"setup_seconds": 0, "switchover_seconds": 0})
    (bytes_only,) = started_together(running(plain), plain, request("a"))
    assert bytes_only == pytest.approx(expected(7, setup=0, switchover=0), abs=TOLERANCE)

    slow = make_world(hosts(2), [quiet_vm("a")], transfer={"setup_seconds": 30, "switchover_seconds": 20})
    job = running(slow).start_move(request("a"))
    wait_done(job)
    assert job.state == JobState.Completed
    assert sim_duration(job) == pytest.approx(bytes_only + 50, abs=TOLERANCE)
    assert job.blackout_seconds == pytest.approx(20, abs=TOLERANCE)  # the VM is paused through the switch-over
    assert job.percent_complete == 100

    default = make_world(hosts(2), [quiet_vm("a")])
    (with_defaults,) = started_together(running(default), default, request("a"))
    assert with_defaults == pytest.approx(bytes_only + SETUP_SECONDS + SWITCHOVER_SECONDS, abs=TOLERANCE)


def test_the_switch_over_cannot_be_cancelled_and_holds_the_slot(running) -> None:
    # A VM that is off: no blackout, so the job stays cancellable until the switch-over begins.
    vm = vm_spec("cold", state="Off")
    world = make_world(hosts(2), [vm], transfer={"switchover_seconds": 500})
    engine = running(world)
    job = engine.start_move(storage_request("cold"))
    wait_until(lambda: not job.cancellable)
    assert not job.finished
    assert engine.request_state_change("HV01", job.instance_id, 4) == 4097
    assert [j.state for j in engine.jobs("HV01")] == [JobState.Running]
    assert job.percent_complete < 100
    wait_done(job)
    assert job.state == JobState.Completed
    assert job.blackout_seconds == 0  # nothing ran, nothing paused
    assert job.bytes_total == 6 * GIB


def test_a_partition_during_the_switch_over_fails_the_move(running) -> None:
    from lab.faults import FaultInjector

    world = make_world(hosts(2), [quiet_vm("a")], transfer={"switchover_seconds": 500})
    faults = FaultInjector(world)
    engine = running(world, faults=faults)
    job = engine.start_move(request("a"))
    wait_until(lambda: job.blackout_seconds > 0)
    faults.partition("HV01", "HV02", 60)
    wait_done(job)
    assert job.state == JobState.Exception
    assert "0x80072746" in job.error_description
    assert world.hosts["HV01"].vms[job.vm_id].planned is False  # the VM keeps running on the source


@pytest.mark.parametrize(
    ("transfer", "field"),
    [
        ({"tcp_stream_fraction": 0}, "lab.transfer.tcp_stream_fraction"),
        ({"tcp_stream_fraction": 1.5}, "lab.transfer.tcp_stream_fraction"),
        ({"smb_stream_fraction": -0.1}, "lab.transfer.smb_stream_fraction"),
        ({"setup_seconds": -1}, "lab.transfer.setup_seconds"),
        ({"switchover_seconds": 2000}, "lab.transfer.switchover_seconds"),
        ({"stream_fraction": 0.5}, "lab.transfer.stream_fraction"),
    ],
)
def test_the_topology_refuses_bad_transfer_settings(transfer: dict[str, Any], field: str) -> None:
    raw = {"lab": {"transfer": transfer}, "hosts": hosts(1)}
    with pytest.raises(TopologyError, match=f"<topology>: {field}: "):
        parse_topology(raw)


def test_the_topology_sets_the_transfer_model() -> None:
    world = make_world(
        hosts(2, full_duplex=False),
        transfer={"tcp_stream_fraction": 0.5, "smb_stream_fraction": 0.9, "setup_seconds": 10, "switchover_seconds": 0},
    )
    assert world.transfer == TransferSettings(0.5, 0.9, 10.0, 0.0)
    assert [n.full_duplex for h in world.hosts.values() for n in h.nics] == [False, False]
    assert all(n.full_duplex for h in make_world().hosts.values() for n in h.nics)
    with pytest.raises(TopologyError, match=r"hosts\[0\]\.nics\[0\]\.full_duplex"):
        parse_topology({"hosts": hosts(1, full_duplex="sometimes")})
