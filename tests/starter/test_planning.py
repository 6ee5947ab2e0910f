"""Placement for generated plans (starter/planning.py): switches, memory headroom, disk slack, largest first onto
the emptiest host, unplaceable VMs with why, rebalance thresholds, and plan files that read back exactly,
hostile VM names included."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.inventory import Inventory, parse_inventory
from starter.planning import (
    DISK_SLACK,
    PlacementResult,
    evacuate,
    plan_name,
    rebalance,
    write_plan_yaml,
)
from starter.plans import _CONTROL, VM_NAME_MAX, load_plan
from tests.lab import hostile_names as h
from workflows.contracts import HostSurvey, SurveyedVm

GIB = 2**30
BIG_DISK = {"C": 100 * GIB, "D": 10_000 * GIB}


def vm(
    name: str, memory_gb: float, *, disk_gb: float = 10, switches: tuple[str, ...] = ("Production",), **extra: object
) -> SurveyedVm:
    values: dict[str, object] = {"state": "Running", "clustered": False, **extra}
    return SurveyedVm(
        name=name,
        vm_id=f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
        memory_bytes=round(memory_gb * GIB),
        disk_bytes=round(disk_gb * GIB),
        switches=switches,
        **values,  # type: ignore[arg-type]
    )


def host(
    name: str,
    memory_gb: float,
    used_gb: float,
    *vms: SurveyedVm,
    switches: tuple[str, ...] = ("Production", "Backup"),
    disk: dict[str, int] | None = None,
    vm_path: str = r"D:\Hyper-V",
    slots: int = 2,
) -> HostSurvey:
    return HostSurvey(
        host=name,
        vms=tuple(vms),
        memory_bytes=round(memory_gb * GIB),
        free_memory_bytes=round((memory_gb - used_gb) * GIB),
        switches=switches,
        max_migrations=slots,
        free_disk_bytes=dict(BIG_DISK if disk is None else disk),
        vm_path=vm_path,
    )


def where(result: PlacementResult) -> dict[str, str]:
    return {move.vm: move.destination for move in result.moves}


def inventory(*names: str) -> Inventory:
    return parse_inventory(
        {"hosts": {n: {"address": "127.0.0.1", "username": "u", "password_env": "X"} for n in names}}
    )


# -- evacuate ---------------------------------------------------------------------------------------------------
def test_a_vm_goes_only_where_every_switch_it_uses_exists() -> None:
    source = host("SRC", 256, 40, vm("backup", 8, switches=("Production", "Backup")), vm("web", 4))
    no_backup = host("T1", 512, 10, switches=("production",))  # Production, spelled otherwise: the same switch
    with_backup = host("T2", 128, 100)
    result = evacuate(source, [no_backup, with_backup])
    # web goes to the emptiest target; backup only to the one with both switches, though it is the fuller one.
    assert where(result) == {"backup": "T2", "web": "T1"}
    assert result.complete


def test_a_vm_no_target_has_a_switch_for_is_reported_with_why() -> None:
    source = host("SRC", 256, 40, vm("storage", 8, switches=("Storage",)), vm("web", 4))
    result = evacuate(source, [host("T1", 512, 10), host("T2", 512, 10)])
    assert where(result) == {"web": "T1"}
    (unplaced,) = result.unplaced
    assert unplaced.vm == "storage"
    assert unplaced.source == "SRC"
    assert "T1: no switch 'Storage'" in unplaced.reason
    assert "T2: no switch 'Storage'" in unplaced.reason
    assert not result.complete


def test_memory_stays_at_or_under_the_headroom() -> None:
    # 100 GiB targets with 50 GiB in use: 40 GiB fit under 90 %, 45 under 95 %.
    vms = [vm(f"vm{n}", 10) for n in range(10)]
    source = host("SRC", 512, 120, *vms)
    targets = [host("T1", 100, 50), host("T2", 100, 50)]
    result = evacuate(source, targets)
    assert len(result.moves) == 8
    assert len(result.unplaced) == 2
    for load in result.hosts:
        if load.role == "target":
            assert load.used_after == 90 * GIB
            assert load.used_after <= load.limit_bytes
            assert load.after == pytest.approx(0.9)
    assert "left under its 90 % limit" in result.unplaced[0].reason
    looser = evacuate(source, targets, headroom=0.05)
    assert len(looser.moves) == 8  # 45 GiB each: still 4 VMs of 10 GiB
    exact = evacuate(host("SRC", 512, 120, *[vm(f"vm{n}", 5) for n in range(20)]), targets, headroom=0.05)
    assert len(exact.moves) == 18  # 9 x 5 GiB each: up to exactly 95 %, not over
    with pytest.raises(ValueError, match="headroom"):
        evacuate(source, targets, headroom=1.0)


def test_largest_first_onto_the_target_with_most_memory_free_after() -> None:
    source = host("SRC", 512, 100, vm("small", 2), vm("large", 32), vm("medium", 16), vm("tiny", 1))
    # T1 has 20 GiB more free than T2 at first: the large VM goes there, then each onto the emptier one.
    result = evacuate(source, [host("T1", 256, 50), host("T2", 256, 70)])
    assert [m.vm for m in result.moves] == ["large", "medium", "small", "tiny"]
    assert where(result) == {"large": "T1", "medium": "T2", "small": "T1", "tiny": "T1"}
    after = {load.host: load.used_after for load in result.hosts}
    assert after == {"SRC": (100 - 51) * GIB, "T1": (50 + 35) * GIB, "T2": (70 + 16) * GIB}


def test_disk_fits_the_drive_of_the_targets_vm_path_with_slack() -> None:
    disk = {"C": 1000 * GIB, "D": 100 * GIB}
    # 100 GiB free on D: (the VM path's drive) take 90 GiB of VHDs with 10 % slack, not 91.
    fits = evacuate(host("SRC", 256, 40, vm("a", 4, disk_gb=90)), [host("T", 256, 10, disk=disk)])
    assert where(fits) == {"a": "T"}
    full = evacuate(host("SRC", 256, 40, vm("a", 4, disk_gb=91)), [host("T", 256, 10, disk=disk)])
    assert not full.moves
    assert "free on D:" in full.unplaced[0].reason
    assert DISK_SLACK == 0.10
    # The space taken counts for the next VM on that drive.
    two = evacuate(
        host("SRC", 256, 40, vm("a", 4, disk_gb=50), vm("b", 4, disk_gb=50)), [host("T", 256, 10, disk=disk)]
    )
    assert len(two.moves) == 1
    assert len(two.unplaced) == 1
    on_c = evacuate(host("SRC", 256, 40, vm("a", 4, disk_gb=500)), [host("T", 256, 10, disk=disk, vm_path=r"C:\VMs")])
    assert where(on_c) == {"a": "T"}


def test_clustered_and_off_vms_move_too_with_a_note() -> None:
    source = host(
        "SRC", 256, 40, vm("clustered", 8, clustered=True), vm("off", 4, state="Off"), vm("saved", 4, state="Saved")
    )
    result = evacuate(source, [host("T1", 256, 10)])
    assert where(result) == {"clustered": "T1", "off": "T1", "saved": "T1"}
    notes = {m.vm: " ".join(m.notes) for m in result.moves}
    assert "clustered" in notes["clustered"]
    assert "ha: restore" in notes["clustered"]
    assert notes["off"].startswith("off: moves as it is")
    assert notes["saved"].startswith("saved: moves as it is")
    loads = {load.host: load for load in result.hosts}
    # The off and saved VMs count on the target (they need their memory when they start) but free none on the source.
    assert loads["T1"].used_after == (10 + 16) * GIB
    assert loads["SRC"].used_after == (40 - 8) * GIB
    assert any("off or saved" in note for note in result.notes)


def test_vms_a_plan_cannot_name_are_not_placed() -> None:
    twins = [vm(h.TWIN, 2), vm(h.TWIN.upper(), 2)]  # Hyper-V names compare without case
    source = host("SRC", 256, 40, *twins, vm("bad\nname", 2), vm("   ", 2), vm("x" * 256, 2), vm("fine", 2))
    result = evacuate(source, [host("T1", 256, 10)])
    assert where(result) == {"fine": "T1"}
    reasons = {u.vm: u.reason for u in result.unplaced}
    assert "2 VMs on the host share this name" in reasons[h.TWIN]
    assert "control character" in reasons["bad\nname"]
    assert "empty or blank" in reasons["   "]
    assert "longer than 255" in reasons["x" * 256]


def test_an_evacuation_refuses_its_source_as_a_target() -> None:
    with pytest.raises(ValueError, match="cannot be a target"):
        evacuate(host("SRC", 10, 1), [host("src", 10, 1)])
    with pytest.raises(ValueError, match="at least one target"):
        evacuate(host("SRC", 10, 1), [])


# -- rebalance --------------------------------------------------------------------------------------------------
def test_rebalance_moves_the_fewest_vms_and_never_pushes_a_receiver_over() -> None:
    # HOT: 90 of 100 GiB; 10 over 80 %. One 12 GiB VM is enough: the smallest that alone is enough.
    hot = host("HOT", 100, 90, vm("a", 4), vm("b", 4), vm("c", 12), vm("d", 30), vm("off", 40, state="Off"))
    cool = host("COOL", 100, 50)
    warm = host("WARM", 100, 75)  # 5 GiB of room: takes nothing of 12
    result = rebalance([hot, cool, warm], threshold=0.8)
    assert [(m.vm, m.source, m.destination) for m in result.moves] == [("c", "HOT", "COOL")]
    assert "HOT at 90 % > 80 %" in result.moves[0].why
    loads = {load.host: load for load in result.hosts}
    assert loads["HOT"].role == "donor"
    assert loads["HOT"].used_after == 78 * GIB
    assert all(load.used_after <= load.limit_bytes for load in result.hosts)
    assert result.complete


def test_rebalance_takes_the_largest_that_fits_until_under() -> None:
    # 30 GiB over; no VM alone is enough: 20 then 12 (two moves), never the 8 and the 4s.
    hot = host("HOT", 200, 190, vm("a", 4), vm("b", 4), vm("c", 8), vm("d", 12), vm("e", 20))
    result = rebalance([hot, host("R1", 100, 40), host("R2", 100, 45)], threshold=0.8)
    assert sorted(m.vm for m in result.moves) == ["d", "e"]
    assert where(result) == {"e": "R1", "d": "R2"}
    assert result.complete


def test_a_host_that_cannot_get_under_lists_what_it_could_not_give() -> None:
    hot = host("HOT", 100, 95, vm("big", 40), vm("storage", 4, switches=("Storage",)), vm("small", 2))
    receiver = host("R", 100, 70)  # 10 GiB of room under 80 %
    result = rebalance([hot, receiver], threshold=0.8)
    assert where(result) == {"small": "R"}
    loads = {load.host: load for load in result.hosts}
    assert loads["R"].used_after == 72 * GIB <= loads["R"].limit_bytes
    assert loads["HOT"].over
    reasons = {u.vm: u.reason for u in result.unplaced}
    assert set(reasons) == {"big", "storage"}
    assert "left under its 80 % limit" in reasons["big"]
    assert "no switch 'Storage'" in reasons["storage"]
    assert not result.complete


def test_rebalance_with_every_host_under_moves_nothing() -> None:
    result = rebalance([host("A", 100, 50, vm("a", 8)), host("B", 100, 80, vm("b", 8))], threshold=0.8)
    assert not result.moves
    assert not result.unplaced
    assert result.complete
    assert any("nothing to move" in note for note in result.notes)
    # Exactly at the threshold is not over it.
    assert {load.role for load in result.hosts} == {"receiver"}


def test_a_donor_with_only_off_vms_stays_over_and_says_so() -> None:
    result = rebalance([host("HOT", 100, 90, vm("off", 20, state="Off")), host("R", 100, 10)], threshold=0.8)
    assert not result.moves
    assert not result.complete
    assert any("no running VM to give" in note for note in result.notes)


def test_rebalance_checks_its_threshold_and_hosts() -> None:
    with pytest.raises(ValueError, match="threshold"):
        rebalance([host("A", 10, 1)], threshold=0)
    with pytest.raises(ValueError, match="listed twice"):
        rebalance([host("A", 10, 1), host("a", 10, 1)])


# -- the plan file ----------------------------------------------------------------------------------------------
def test_the_plan_reads_back_with_every_move_and_size(tmp_path: Path) -> None:
    odd = 12_345_678_901  # bytes that are no whole GiB, nor a short decimal of one
    source = host("HV-S2", 256, 40, vm("web", 4, disk_gb=odd / GIB), vm("sql", 24.5, clustered=True), vm("tiny", 1e-6))
    result = evacuate(source, [host("HV-S3", 512, 10, slots=4), host("HV-S4", 512, 20)])
    path = write_plan_yaml(
        tmp_path / "plan.yaml",
        "evacuate-hv-s2",
        result,
        comment="From the survey snlm-survey-1 of HV-S2, HV-S3, HV-S4.\nSecond line.",
        slots={"HV-S2": 2, "HV-S3": 4, "HV-S4": 0},
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Campaign plan generated by `snlm plan evacuate` on ")
    assert "# From the survey snlm-survey-1 of HV-S2, HV-S3, HV-S4.\n# Second line.\n" in text
    assert "clustered" in text
    plan = load_plan(path, inventory=inventory("HV-S2", "HV-S3", "HV-S4"))
    assert plan.name == "evacuate-hv-s2"
    (wave,) = plan.waves
    assert [(m.vm, m.source, m.destination, m.memory_bytes, m.disk_bytes) for m in wave.moves] == [
        (m.vm, m.source, m.destination, m.memory_bytes, m.disk_bytes) for m in result.moves
    ]
    assert {p.host: p.slots for p in plan.hosts} == {"HV-S2": 2, "HV-S3": 4, "HV-S4": 1}
    assert plan.prepare_ahead == 1
    assert "\nprepare_ahead: 1 " in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_hostile_lab_names_round_trip_through_the_plan(tmp_path: Path) -> None:
    names = [*h.HOSTILE, *h.SIBLINGS, "web08", "yes", "null", "1e3", "- x", "#x", "a: b", "&a", "*a", "!tag", "%x"]
    names += ["'", '"', "\\", " lead", "trail ", "\u2028ls", "😀", "\ufeffbom", "{a}", "[a]", "~"]
    source = host("HV-A", 256, 10, *[vm(name, 1) for name in names])
    result = evacuate(source, [host("HV-B", 256, 10)])
    assert not result.unplaced
    path = write_plan_yaml(tmp_path / "hostile.yaml", "hostile", result, comment="hostile names")
    plan = load_plan(path)
    assert sorted(m.vm for w in plan.waves for m in w.moves) == sorted(names)


def _plannable(name: str) -> bool:
    return bool(name.strip()) and not _CONTROL.search(name) and len(name) <= VM_NAME_MAX


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8, unique_by=str.lower))
def test_any_name_a_plan_can_hold_round_trips_and_no_other_is_written(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    source = host("HV-A", 256, 10, *[vm(name, 1) for name in names])
    result = evacuate(source, [host("HV-B", 256, 10)])
    assert {m.vm for m in result.moves} == {n for n in names if _plannable(n)}
    assert {u.vm for u in result.unplaced} == {n for n in names if not _plannable(n)}
    if not result.moves:
        with pytest.raises(ValueError, match="nothing to write"):
            write_plan_yaml(tmp_path_factory.mktemp("p") / "p.yaml", "p", result, comment="")
        return
    path = write_plan_yaml(tmp_path_factory.mktemp("p") / "p.yaml", "p", result, comment="names: " + " | ".join(names))
    plan = load_plan(path)
    assert [m.vm for w in plan.waves for m in w.moves] == [m.vm for m in result.moves]


def test_campaign_names_of_generated_plans() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 3, 1, 22, 5, 9, tzinfo=UTC)
    assert plan_name("evacuate", "HV-S2", now=now) == "evacuate-hv-s2-20250301-220509"
    assert plan_name("rebalance", now=now) == "rebalance-20250301-220509"
    assert plan_name("evacuate", "hv.example.com", now=now) == "evacuate-hv.example.com-20250301-220509"
