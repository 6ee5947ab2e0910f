"""Plan files (starter/plans.py): YAML and CSV into CampaignPlan, and every problem of a plan at once, each with
its file, line and field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from config.inventory import Inventory, parse_inventory
from starter.plans import (
    _POLICY_FIELDS,
    DEFAULT_WAVE,
    PlanInvalid,
    PlanProblem,
    load_plan,
    parse_plan_csv,
    parse_plan_yaml,
)
from workflows.contracts import (
    CampaignMove,
    CampaignPlan,
    CampaignWave,
    DelegationMode,
    DelegationPolicy,
    GuestCheck,
    HaChoice,
    HostProfile,
    MaintenanceWindow,
    MigrationAuthentication,
    MigrationPerformance,
    MigrationPolicy,
    Scheduler,
    WaveFailurePolicy,
    Weekday,
    campaign_input,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "starter" / "examples"
GiB = 2**30


def inventory(*names: str) -> Inventory:
    hosts = {name: {"address": f"{name.lower()}.contoso.com", "fqdn": f"{name.lower()}.contoso.com"} for name in names}
    return parse_inventory({"defaults": {"auth": "kerberos"}, "hosts": hosts})


def problems(text: str, *, csv: bool = False, **kwargs: Any) -> list[tuple[int, str, str]]:
    """(line, field, message) of every problem the plan has."""
    parse = parse_plan_csv if csv else parse_plan_yaml
    with pytest.raises(PlanInvalid) as caught:
        parse(text, source="p.csv" if csv else "p.yaml", **kwargs)
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def one_problem(text: str, **kwargs: Any) -> tuple[int, str, str]:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


MOVE = "{vm: web01, source: HV01, destination: HV02}"


# -- what a valid plan becomes -------------------------------------------------------------------------------

FULL_YAML = r"""
name: dc1-refresh
scheduler: random
seed: 42
prepare_ahead: 2
setup_seconds: 12.5
windows:
  - {days: [sat, sun], start: "22:00", duration: 6h, time_zone: Europe/Berlin}
  - days: fri-mon
    start: 1:30
    duration: 90
policy:
  delegation: verify
  delegation_mode: any-protocol
  revert_delegation: true
  ha: drop
  performance: tcpip
  authentication: credssp
  migration_networks: [10.0.20.0/24, 10.0.21.7/24]
  max_migrations_per_host: 3
  move_timeout_seconds: 7200
  guest_check: fail
hosts:
  HV01: {slots: 2, link_gbps: 10}
  HV02: {slots: 4, link_gbps: 2.5}
  HV03: {}
waves:
  - name: pilot
    on_failure: pause
    pause_after_failures: 2
    moves:
      - {vm: web01, source: HV01, destination: HV02, storage_path: 'D:\VMs\web01', priority: 5,
         memory_gb: 8, disk_gb: 60}
  - moves:
      - vm: sql01
        source: HV02
        destination: HV03
        memory_gb: 0.5
        dirty_mib_per_second: 4
"""

FULL_PLAN = CampaignPlan(
    name="dc1-refresh",
    waves=(
        CampaignWave(
            "pilot",
            (CampaignMove("web01", "HV01", "HV02", "D:\\VMs\\web01", 5, 8 * GiB, 60 * GiB),),
            WaveFailurePolicy.PAUSE,
            2,
        ),
        CampaignWave(
            "wave-2", (CampaignMove("sql01", "HV02", "HV03", memory_bytes=GiB // 2, dirty_bytes_per_second=4 * 2**20),)
        ),
    ),
    windows=(
        MaintenanceWindow("22:00", 360, (Weekday.SAT, Weekday.SUN), "Europe/Berlin"),
        MaintenanceWindow("01:30", 90, (Weekday.MON, Weekday.FRI, Weekday.SAT, Weekday.SUN)),
    ),
    policy=dataclasses.replace(
        MigrationPolicy(),
        delegation=DelegationPolicy.VERIFY,
        delegation_mode=DelegationMode.ANY_PROTOCOL,
        revert_delegation=True,
        ha=HaChoice.DROP,
        performance=MigrationPerformance.TCPIP,
        authentication=MigrationAuthentication.CREDSSP,
        migration_networks=("10.0.20.0/24", "10.0.21.0/24"),
        max_migrations_per_host=3,
        move_timeout_seconds=7200.0,
        guest_check=GuestCheck.FAIL,
    ),
    hosts=(HostProfile("HV01", 2, 10e9), HostProfile("HV02", 4, 2.5e9), HostProfile("HV03")),
    scheduler=Scheduler.RANDOM,
    seed=42,
    prepare_ahead=2,
    setup_seconds=12.5,
)


def test_a_yaml_plan_becomes_the_contract() -> None:
    assert parse_plan_yaml(FULL_YAML, source="dc1.yaml") == FULL_PLAN


def test_a_csv_plan_becomes_the_contract_and_matches_the_yaml_moves_form() -> None:
    text = (
        "vm,source,destination,storage_path,wave,priority,memory_gb,disk_gb\n"
        "web01,HV01,HV02,D:\\VMs\\web01,pilot,5,8,60\n"
        "sql01,HV02,HV03,,bulk,,0.5,\n"
        "app01,HV01,HV03, ,pilot,0,,\n"
        "\n"
        "dns01,HV02,HV01,,,,,\n"
    )
    expected = CampaignPlan(
        name="dc1",
        waves=(
            CampaignWave(
                "pilot",
                (
                    CampaignMove("web01", "HV01", "HV02", "D:\\VMs\\web01", 5, 8 * GiB, 60 * GiB),
                    CampaignMove("app01", "HV01", "HV03"),
                ),
            ),
            CampaignWave("bulk", (CampaignMove("sql01", "HV02", "HV03", memory_bytes=GiB // 2),)),
            CampaignWave(DEFAULT_WAVE, (CampaignMove("dns01", "HV02", "HV01"),)),
        ),
    )
    assert parse_plan_csv(text, source="plans/dc1.csv") == expected
    flat = """
name: dc1
moves:
  - {vm: web01, source: HV01, destination: HV02, storage_path: 'D:\\VMs\\web01', wave: pilot, priority: 5,
     memory_gb: 8, disk_gb: 60}
  - {vm: sql01, source: HV02, destination: HV03, wave: bulk, memory_gb: 0.5}
  - {vm: app01, source: HV01, destination: HV03, wave: PILOT}
  - {vm: dns01, source: HV02, destination: HV01}
"""
    assert parse_plan_yaml(flat, source="x.yaml") == expected


def test_csv_dialects_a_bom_and_the_name() -> None:
    text = '\ufeffVM;Source;Destination;Storage_Path;Wave\n"a;b";HV01;HV02;;w\n'
    plan = parse_plan_csv(text, source="dc1.csv", name="override-1")
    assert plan.name == "override-1"
    assert plan.waves == (CampaignWave("w", (CampaignMove("a;b", "HV01", "HV02"),)),)
    tabs = parse_plan_csv("vm\tsource\tdestination\tstorage_path\twave\nweb01\tHV01\tHV02\t\tw\n", source="t.csv")
    assert tabs.waves[0].moves == (CampaignMove("web01", "HV01", "HV02"),)


def test_the_example_files_load_against_an_inventory() -> None:
    hosts = inventory("HV01", "HV02", "HV03")
    yaml_plan = load_plan(EXAMPLES / "plan.yaml", inventory=hosts)
    csv_plan = load_plan(EXAMPLES / "plan.csv", inventory=hosts, name="dc1-refresh")
    assert yaml_plan.name == "dc1-refresh"
    assert [wave.moves for wave in yaml_plan.waves] == [wave.moves for wave in csv_plan.waves]
    assert sum(len(wave.moves) for wave in yaml_plan.waves) == 4
    assert load_plan(EXAMPLES / "plan.csv").name == "plan"


def test_host_names_are_spelled_as_the_inventory_spells_them() -> None:
    text = "moves: [{vm: web01, source: hv01, destination: HV02.contoso.com}]\nhosts: {hv03: {slots: 1}}\n"
    plan = parse_plan_yaml(text, source="p.yaml", inventory=inventory("HV01", "HV02", "HV03"))
    assert plan.waves[0].moves[0] == CampaignMove("web01", "HV01", "HV02")
    assert plan.hosts == (HostProfile("HV03", 1),)


HOSTILE = ["*", "[a]", "web?", "it's", 'say "hi"', "a`b$(x)", "Überweb-ünïcødé", "日本のVM", " padded ", "-x", "a;b,c"]


@pytest.mark.parametrize("vm", HOSTILE)
def test_hostile_vm_names_are_kept_verbatim(vm: str) -> None:
    quoted = "'" + vm.replace("'", "''") + "'"
    plan = parse_plan_yaml(f"moves: [{{vm: {quoted}, source: HV01, destination: HV02}}]", source="p.yaml")
    assert plan.waves[0].moves[0].vm == vm
    cell = '"' + vm.replace('"', '""') + '"'
    plan = parse_plan_csv(f"vm,source,destination,storage_path,wave\n{cell},HV01,HV02,,w\n", source="p.csv")
    assert plan.waves[0].moves[0].vm == vm


def test_yaml_1_1_readings_do_not_change_what_was_written() -> None:
    text = "moves:\n  - {vm: yes, source: HV01, destination: HV02}\n  - {vm: 007, source: HV01, destination: HV02}\n"
    text += 'windows: [{start: 22:00, duration: "1h30m"}]\n'
    plan = parse_plan_yaml(text, source="p.yaml")
    assert [m.vm for m in plan.waves[0].moves] == ["yes", "007"]
    assert plan.windows == (MaintenanceWindow("22:00", 90),)


def test_merges_and_anchors() -> None:
    text = """
x-hv01: &hv01 {source: HV01, destination: HV03, memory_gb: 4}
moves:
  - {<<: *hv01, vm: web01}
  - {<<: *hv01, vm: web02, destination: HV02}
"""
    moves = parse_plan_yaml(text, source="p.yaml").waves[0].moves
    assert moves == (
        CampaignMove("web01", "HV01", "HV03", memory_bytes=4 * GiB),
        CampaignMove("web02", "HV01", "HV02", memory_bytes=4 * GiB),
    )


def test_every_policy_field_has_a_reader() -> None:
    assert set(_POLICY_FIELDS) == {field.name for field in dataclasses.fields(MigrationPolicy)}


# -- problems ------------------------------------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_with_its_line(tmp_path: Path) -> None:
    text = """\
name: "bad name!"
scheduler: fifoo
sed: 3
windows:
  - {days: [sat, funday], start: "25:00", duration: 8d, time_zone: Mars/Base}
policy:
  delegation: mange
  slot_lease_seconds: 1
hosts:
  HV09: {slots: 0}
waves:
  - name: w1
    moves:
      - {vm: web01, source: HV01, destination: hv01}
      - {vm: "", source: HV01}
      - {vm: web02, source: HV01, destinaton: HV02}
      - vm: web03
        source: HV01
        destination: HV02
        memory_gb: -1
      - {vm: web03, source: hv01, destination: HV03}
      - {vm: web04, source: HV01, destination: HV02, token: abc-123}
  - name: W1
    moves: nope
"""
    path = tmp_path / "dc1.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanInvalid) as caught:
        load_plan(path, inventory=inventory("HV01", "HV02", "HV03"))
    error = caught.value
    found = [(p.line, p.field) for p in error.problems]
    assert found == [
        (1, "name"),
        (2, "scheduler"),
        (3, "sed"),
        (5, "windows[0].days[1]"),
        (5, "windows[0].start"),
        (5, "windows[0].duration"),
        (5, "windows[0].time_zone"),
        (7, "policy.delegation"),
        (8, "policy.slot_lease_seconds"),
        (10, "hosts.HV09"),
        (10, "hosts.HV09.slots"),
        (14, "waves[0].moves[0].destination"),
        (15, "waves[0].moves[1].destination"),
        (15, "waves[0].moves[1].vm"),
        (16, "waves[0].moves[2].destinaton"),
        (16, "waves[0].moves[2].destination"),
        (20, "waves[0].moves[3].memory_gb"),
        (21, "waves[0].moves[4].destination"),
        (22, "waves[0].moves[5].token"),
        (23, "waves[1].name"),
        (24, "waves[1].moves"),
    ]
    lines = str(error).splitlines()
    assert lines[0] == f"plan {path} has 21 problems:"
    assert lines[1:] == [f"  {problem}" for problem in error.problems]
    assert all(problem.file == str(path) for problem in error.problems)
    assert "abc-123" not in str(error)
    assert isinstance(error, ValueError)
    messages = {p.field: p.message for p in error.problems}
    assert "did you mean 'seed'?" in messages["sed"]
    assert "allowed are planner, fifo-source, fifo, random" in messages["scheduler"]
    assert "HV09" in messages["hosts.HV09"]
    assert "at line 17" in messages["waves[0].moves[4].destination"]
    assert "already, at line 12" in messages["waves[1].name"]


@pytest.mark.parametrize(
    ("value", "message"), [("9", "9 is out of range: must be from 0 to 8"), ("-1", "out of range")]
)
def test_prepare_ahead_is_bounded(value: str, message: str) -> None:
    with pytest.raises(PlanInvalid) as invalid:
        parse_plan_yaml(f"prepare_ahead: {value}\nmoves:\n  - {{{MOVE[1:-1]}, wave: w}}\n", source="p.yaml")
    [problem] = invalid.value.problems
    assert (problem.line, problem.field) == (1, "prepare_ahead")
    assert message in problem.message


def test_prepare_ahead_of_zero_starts_each_move_at_its_turn() -> None:
    plan = parse_plan_yaml(f"prepare_ahead: 0\nmoves:\n  - {{{MOVE[1:-1]}, wave: w}}\n", source="p.yaml")
    assert plan.prepare_ahead == 0
    assert campaign_input(plan).prepare_ahead == 0


def test_a_csv_problem_names_its_physical_line() -> None:
    text = (
        "vm,source,destination,storage_path,wave,priority\n"  # 1
        'web01,HV01,HV02,,w,"1"\n'  # 2
        '"two\n'  # 3
        'lines",HV01,HV02,,w,\n'  # 4
        "web03,HV01,HV01,,w,\n"  # 5
        "\n"  # 6
        "web01,hv01,HV02,,w,\n"  # 7
        "web04,HV01,HV02,,w,2000\n"  # 8
        "short,row\n"  # 9
    )
    assert problems(text, csv=True) == [
        (3, "vm", "the VM name holds a control character"),
        (5, "destination", "the destination is the source (HV01): nothing to move"),
        (7, "vm", "web01 on hv01 is listed twice: first at line 2"),
        (8, "priority", "2000 is out of range: must be from 0 to 1000"),
        (9, "row", "2 fields where the header has 6"),
    ]


@pytest.mark.parametrize(
    ("header", "field", "fragment"),
    [
        ("vm,source,destination\n", "header", "missing columns: storage_path, wave"),
        ("vm,source,destination,storage_path,wave,prority\n", "header", "did you mean 'priority'?"),
        ("vm,source,destination,storage_path,wave,VM\n", "header", "column 'vm' appears twice"),
        ("vm,source,destination,storage_path,wave,Password\n", "password", "never holds a secret"),
    ],
)
def test_a_csv_header_problem(header: str, field: str, fragment: str) -> None:
    line, where, message = one_problem(header + "web01,HV01,HV02,,w,x\n", csv=True)
    assert (line, where) == (1, field)
    assert fragment in message


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        # syntax and shape
        ("waves:\n  - name: [w\n", 3, "file", "not valid YAML"),
        ("name: a\n---\nname: b\n", 2, "file", "not valid YAML"),
        ("", 0, "file", "the plan is empty"),
        ("name: a\n", 1, "waves", "the plan is empty"),
        ("- a\n", 1, "<top>", "the plan must be a mapping, not a list"),
        (f"waves: [{{moves: []}}]\nmoves: [{MOVE}]\n", 2, "moves", "either waves"),
        ("waves: 5\n", 1, "waves", "must be a list of waves, not int"),
        ("waves:\n  - moves:\n    - web01\n", 3, "waves[0].moves[0]", "a move must be a mapping, not text"),
        (f"name: a\nname: b\nmoves: [{MOVE}]\n", 2, "name", "repeated key: first at line 1"),
        (f"name: !!python/object:os.system x\nmoves: [{MOVE}]\n", 1, "name", "tag"),
        (f"moves: [{MOVE}]\nschedular: fifo\n", 2, "schedular", "did you mean 'scheduler'?"),
        # moves
        ("moves:\n  - {source: HV01, destination: HV02}\n", 2, "moves[0].vm", "missing"),
        ("moves:\n  - {vm: a, destination: HV02}\n", 2, "moves[0].source", "missing"),
        ("moves:\n  - {vm: a, source: HV01, destination: null}\n", 2, "moves[0].destination", "missing"),
        ("moves:\n  - {vm: a, source: hv01, destination: HV01}\n", 2, "moves[0].destination", "is the source"),
        ("moves:\n  - {vm: '  ', source: HV01, destination: HV02}\n", 2, "moves[0].vm", "empty"),
        ('moves:\n  - {vm: "a\\tb", source: HV01, destination: HV02}\n', 2, "moves[0].vm", "control character"),
        (f"moves:\n  - {{vm: {'v' * 256}, source: HV01, destination: HV02}}\n", 2, "moves[0].vm", "longer than 255"),
        ("moves:\n  - {vm: [a], source: HV01, destination: HV02}\n", 2, "moves[0].vm", "not a list"),
        ("moves:\n  - {vm: a, source: 'HV 01', destination: HV02}\n", 2, "moves[0].source", "not a host name"),
        ("moves:\n  - {vm: a, source: HV01, destination: HV02, disk_gb: -5}\n", 2, "moves[0].disk_gb", "out of range"),
        ("moves:\n  - {vm: a, source: HV01, destination: HV02, memory_gb: x}\n", 2, "moves[0].memory_gb", "a number"),
        ("moves:\n  - {vm: a, source: HV01, destination: HV02, priority: -1}\n", 2, "moves[0].priority", "0 to 1000"),
        ("moves:\n  - {vm: a, source: HV01, destination: HV02, priority: true}\n", 2, "moves[0].priority", "whole"),
        (
            "moves:\n  - {vm: a, source: HV01, destination: HV02, storage_path: VMs}\n",
            2,
            "moves[0].storage_path",
            "full",
        ),
        (
            f"moves:\n  - {MOVE}\n  - {{vm: WEB01, source: hv01, destination: HV02}}\n",
            3,
            "moves[1].vm",
            "first at line 2",
        ),
        (
            f"moves:\n  - {MOVE}\n  - {{vm: web01, source: HV01, destination: HV03}}\n",
            3,
            "moves[1].destination",
            "HV02",
        ),
        (f"waves:\n  - name: a\n    moves: [{MOVE}]\n  - name: A\n    moves: []\n", 4, "waves[1].name", "line 2"),
        (f"waves:\n  - on_failure: stop\n    moves: [{MOVE}]\n", 2, "waves[0].on_failure", "continue, pause"),
        (
            f"waves:\n  - pause_after_failures: 0\n    on_failure: pause\n    moves: [{MOVE}]\n",
            2,
            "waves[0].pause_after_failures",
            "1 to",
        ),
        (
            f"waves:\n  - pause_after_failures: 2\n    moves: [{MOVE}]\n",
            2,
            "waves[0].pause_after_failures",
            "only with",
        ),
        (f"waves:\n  - name: w\n    moves: [{MOVE}]\n  - moves: []\n", 4, "waves[1].moves", "a wave with no moves"),
        # windows
        (f"moves: [{MOVE}]\nwindows: [{{start: '24:00', duration: 1h}}]\n", 2, "windows[0].start", "HH:MM"),
        (f"moves: [{MOVE}]\nwindows: [{{start: '22:00', duration: 0}}]\n", 2, "windows[0].duration", "7 days"),
        (f"moves: [{MOVE}]\nwindows: [{{start: '22:00', duration: 7d1m}}]\n", 2, "windows[0].duration", "7 days"),
        (
            f"moves: [{MOVE}]\nwindows: [{{start: '22:00', duration: 1:30}}]\n",
            2,
            "windows[0].duration",
            "not a duration",
        ),
        (
            f"moves: [{MOVE}]\nwindows: [{{start: '22:00', duration: 1h, time_zone: Moon/Base}}]\n",
            2,
            "windows[0].time_zone",
            "unknown time zone",
        ),
        (
            f"moves: [{MOVE}]\nwindows: [{{start: '22:00', duration: 1h, time_zone: ../etc/passwd}}]\n",
            2,
            "windows[0].time_zone",
            "unknown time zone",
        ),
        (
            f"moves: [{MOVE}]\nwindows:\n  - start: '22:00'\n    duration: 1h\n    days: [mon, sunday, caturday]\n",
            5,
            "windows[0].days[2]",
            "unknown day",
        ),
        (f"moves: [{MOVE}]\nwindows: [{{duration: 1h}}]\n", 2, "windows[0].start", "missing"),
        # policy and hosts
        (f"moves: [{MOVE}]\npolicy: {{ha: keep}}\n", 2, "policy.ha", "allowed are restore, drop"),
        (f"moves: [{MOVE}]\npolicy: {{performance: RDMA}}\n", 2, "policy.performance", "TCPIP, Compression, SMB"),
        (f"moves: [{MOVE}]\npolicy: {{require_approval: maybe}}\n", 2, "policy.require_approval", "true or false"),
        (
            f"moves: [{MOVE}]\npolicy: {{migration_networks: [10.0.0.0/33]}}\n",
            2,
            "policy.migration_networks[0]",
            "subnet",
        ),
        (f"moves: [{MOVE}]\npolicy: {{max_migrations_per_host: 0}}\n", 2, "policy.max_migrations_per_host", "1 to 64"),
        (f"moves: [{MOVE}]\npolicy: {{move_timeout_seconds: -1}}\n", 2, "policy.move_timeout_seconds", "more than 0"),
        (f"moves: [{MOVE}]\npolicy: {{slot_lease_seconds: 5}}\n", 2, "policy.slot_lease_seconds", "10-3600"),
        (f"moves: [{MOVE}]\npolicy: {{gest_check: fail}}\n", 2, "policy.gest_check", "did you mean 'guest_check'?"),
        (f"moves: [{MOVE}]\npolicy: [manage]\n", 2, "policy", "policy must be a mapping"),
        (f"moves: [{MOVE}]\nhosts: {{HV01: {{slots: 65}}}}\n", 2, "hosts.HV01.slots", "1 to 64"),
        (
            f"moves: [{MOVE}]\nsetup_seconds: -1\n",
            2,
            "setup_seconds",
            "out of range: must be 0 or more and at most 3600",
        ),
        (f"moves: [{MOVE}]\nsetup_seconds: 2h\n", 2, "setup_seconds", "not '2h'"),
        (f"moves: [{MOVE}]\nsetup_seconds: 7200\n", 2, "setup_seconds", "7200 is out of range"),
        (f"moves: [{MOVE}]\nsetup_second: 5\n", 2, "setup_second", "did you mean 'setup_seconds'?"),
        (f"moves: [{MOVE}]\nhosts: {{HV01: {{link_gbps: 0}}}}\n", 2, "hosts.HV01.link_gbps", "more than 0"),
        (
            f"moves: [{MOVE}]\nhosts: {{HV01: {{slots: 1}}, hv01: {{slots: 2}}}}\n",
            2,
            "hosts.hv01",
            "already has a profile",
        ),
        # secrets, wherever they are
        (f"moves: [{MOVE}]\npassword: x\n", 2, "password", "never holds a secret"),
        (f"moves: [{MOVE}]\npolicy: {{client_secret: x}}\n", 2, "policy.client_secret", "never holds a secret"),
        (f"moves: [{MOVE}]\nx-notes: {{api-Token: x}}\n", 2, "x-notes.api-Token", "never holds a secret"),
    ],
)
def test_each_kind_of_problem(text: str, line: int, field: str, fragment: str) -> None:
    found = problems(text)
    assert any((at, where) == (line, field) and fragment in message for at, where, message in found), found


def test_hosts_outside_the_inventory_are_named_with_a_suggestion() -> None:
    text = (
        "moves:\n  - {vm: web01, source: HV01, destination: HV20}\n  - {vm: web02, source: hv07, destination: HV02}\n"
    )
    found = problems(text, inventory=inventory("HV01", "HV02"))
    assert [(line, field) for line, field, _ in found] == [(2, "moves[0].destination"), (3, "moves[1].source")]
    assert "'HV20' is not in the inventory (did you mean 'HV02'?)" in found[0][2]
    assert "'hv07'" in found[1][2]


def test_the_name_comes_from_the_file_or_the_command_line() -> None:
    text = f"moves: [{MOVE}]\n"
    assert parse_plan_yaml(text, source="plans/dc2.yaml").name == "dc2"
    assert parse_plan_yaml("name: in-file\n" + text, source="p.yaml", name="given").name == "given"
    assert one_problem(text, name="two words")[:2] == (0, "name")
    with pytest.raises(PlanInvalid) as caught:
        parse_plan_csv("vm,source,destination,storage_path,wave\nweb01,HV01,HV02,,\n", source="dc 1.csv")
    assert [(p.line, p.field) for p in caught.value.problems] == [(0, "name")]
    assert "rename the file" in caught.value.problems[0].message


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(PlanInvalid) as caught:
        load_plan(tmp_path / "missing.yaml")
    assert caught.value.problems == (
        PlanProblem(str(tmp_path / "missing.yaml"), 0, "file", "cannot read: No such file or directory"),
    )
    text = tmp_path / "plan.txt"
    text.write_text("x", encoding="utf-8")
    with pytest.raises(PlanInvalid, match=r"a plan is a \.yaml, \.yml or \.csv file, not '\.txt'"):
        load_plan(text)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"vm,source,destination,storage_path,wave\nw\xe9b,HV01,HV02,,w\n")
    with pytest.raises(PlanInvalid) as caught:
        load_plan(latin)
    assert [(p.line, p.field) for p in caught.value.problems] == [(2, "file")]
    assert str(caught.value).startswith(f"plan {latin} has 1 problem:\n")


def test_a_problem_reads_file_line_field_message() -> None:
    assert str(PlanProblem("p.yaml", 3, "waves[0].moves[1].vm", "missing")) == "p.yaml:3: waves[0].moves[1].vm: missing"
