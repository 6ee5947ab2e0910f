"""The transfer model over the wire: moves started with Move-VM through pypsrp, timed from the hosts' own
Msvm_MigrationJob (StartTime, TimeOfLastStateChange), in simulated seconds.

The pair topology with VMs that dirty no memory (one pre-copy pass) and the TCPIP option, so a move's
duration is set-up + VHD bytes over SMB + memory over one capped TCP stream + switch-over, to the
microsecond. Moves meant to overlap are submitted while the lab's clock all but stands still.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pypsrp.powershell import RunspacePool

from lab.lab import Lab
from lab.model.migration import SETUP_SECONDS, SWITCHOVER_SECONDS, TCP_STREAM_FRACTION
from lab.model.state import GIB
from tests.lab.conftest import TOPOLOGIES, lab_wsman
from tests.lab.test_lab_wire import move_parameters, prop, run, wait_for

pytestmark = pytest.mark.timeout(90)

GBIT = 10**9 / 8  # bytes per second of 1 Gbit/s
LINK_GBPS = 10  # the pair's migration adapters
DISK_GB = 8  # each pair VM's VHDX file
MEMORY_GB = 2
TIME_SCALE = 60.0
TOLERANCE = 1e-3  # simulated seconds


def predicted(share_gbps: float, *, setup: float = SETUP_SECONDS, switchover: float = SWITCHOVER_SECONDS) -> float:
    """One pair VM's storage move when its host's adapter gives it `share_gbps` throughout: the VHD over SMB at
    the share, the memory over one TCP stream at the share or the stream cap, whichever is lower."""
    memory_gbps = min(share_gbps, TCP_STREAM_FRACTION * LINK_GBPS)
    return setup + DISK_GB * GIB / (share_gbps * GBIT) + MEMORY_GB * GIB / (memory_gbps * GBIT) + switchover


@pytest.fixture
def transfer_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """`transfer_lab(**lab.transfer)`: the pair lab, quiet TCPIP VMs, the transfer settings given; stopped after."""
    started: list[Lab] = []

    def make(**transfer: Any) -> Lab:
        raw = yaml.safe_load((TOPOLOGIES / "pair.yaml").read_text(encoding="utf-8"))
        raw["lab"]["transfer"] = transfer
        for host in raw["hosts"]:
            host["live_migration"]["performance"] = "TCPIP"
        for vm in raw["vms"]:
            vm["dirty_rate_mbps"] = 0
        path = tmp_path / f"transfer-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        lab = Lab.from_topology(path, workdir=tmp_path / f"lab-{len(started)}", time_scale=TIME_SCALE)
        started.append(lab)
        return lab.start()

    yield make
    for lab in started:
        lab.stop()


def durations(lab: Lab, moves: list[tuple[str, str, str]]) -> dict[str, float]:
    """Start every (vm, source, destination) move with Move-VM -AsJob at one simulated instant, wait for all,
    and return each one's StartTime-to-end span as its source host reports it."""
    pools = {source: RunspacePool(lab_wsman(lab, source)) for _, source, _ in moves}
    try:
        for pool in pools.values():
            pool.open()
        lab.set_time_scale(1e-6)
        try:
            for vm, source, destination in moves:
                ps = run(pools[source], "Move-VM", AsJob=True, **move_parameters(vm, destination))
                assert not ps.streams.error, [str(e) for e in ps.streams.error]
        finally:
            lab.set_time_scale(TIME_SCALE)
        wanted = {vm: [destination] for vm, _, destination in moves}
        wait_for(
            lambda: all(lab.truth()["locations"].get(vm) == where for vm, where in wanted.items()), 30, "the moves"
        )
        spans: dict[str, float] = {}
        for vm, source, _ in moves:
            vm_id = next(v["id"] for v in lab.truth()["vms"] if v["name"] == vm).upper()
            ps = run(
                pools[source], "Get-CimInstance", Namespace=r"root\virtualization\v2", ClassName="Msvm_MigrationJob"
            )
            (job,) = [j for j in ps.output if prop(j, "VirtualSystemName") == vm_id]
            assert prop(job, "JobState") == 7, prop(job, "ErrorDescription")
            start = datetime.fromisoformat(str(prop(job, "StartTime")))
            end = datetime.fromisoformat(str(prop(job, "TimeOfLastStateChange")))
            spans[vm] = (end - start).total_seconds()
        return spans
    finally:
        for pool in pools.values():
            pool.close()


def test_full_duplex_adapters_and_a_shared_outgoing_link(transfer_lab: Callable[..., Lab]) -> None:
    lab = transfer_lab()
    alone = durations(lab, [("vm-a1", "HV-A", "HV-B")])["vm-a1"]
    assert alone == pytest.approx(predicted(LINK_GBPS), abs=TOLERANCE)

    # One out of HV-A and one into it: each has the whole link of its direction.
    crossing = durations(lab, [("vm-a2", "HV-A", "HV-B"), ("vm-b1", "HV-B", "HV-A")])
    assert crossing == pytest.approx({"vm-a2": alone, "vm-b1": alone}, abs=TOLERANCE)

    # Two out of HV-A: they halve its outgoing capacity (the VHDs at 5 Gbit/s each, the memory too, under the
    # 7 Gbit/s stream cap).
    shared = durations(lab, [("vm-a3", "HV-A", "HV-B"), ("vm-a4", "HV-A", "HV-B")])
    assert shared == pytest.approx({"vm-a3": predicted(5), "vm-a4": predicted(5)}, abs=TOLERANCE)
    assert min(shared.values()) > alone * 1.5


def test_set_up_and_switch_over_are_in_the_hosts_job_times(transfer_lab: Callable[..., Lab]) -> None:
    lab = transfer_lab(setup_seconds=30, switchover_seconds=20)
    span = durations(lab, [("vm-a1", "HV-A", "HV-B")])["vm-a1"]
    assert span == pytest.approx(predicted(LINK_GBPS, setup=30, switchover=20), abs=TOLERANCE)
    assert span == pytest.approx(predicted(LINK_GBPS) + (30 - SETUP_SECONDS) + (20 - SWITCHOVER_SECONDS), abs=TOLERANCE)
