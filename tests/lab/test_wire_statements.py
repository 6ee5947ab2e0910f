"""Several statements in one PSRP pipeline (pypsrp's `add_statement()`, the Pipeline's `ExtraCmds`).

Over the real wire with pypsrp: a lab host's own cmdlets (binding errors, CommandNotFoundException,
-ErrorAction Stop, Write-Output as a marker between statements), and the scripted runner where the test
must see which statements ran and with what input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from lab.lab import Lab
from lab.wsman import HostEndpoint
from tests.lab.conftest import TOPOLOGIES, lab_wsman

pytestmark = pytest.mark.timeout(120)

COMPLETED, FAILED = 4, 5
HOST = "HV-A"


def statements(pool: RunspacePool, *commands: tuple[Any, ...]) -> PowerShell:
    """One pipeline of several statements: each item is (cmdlet, {parameter: value}); True means a switch."""
    ps = PowerShell(pool)
    for index, (cmdlet, parameters) in enumerate(commands):
        if index:
            ps.add_statement()
        ps.add_cmdlet(cmdlet)
        for name, value in parameters.items():
            if value is True:
                ps.add_parameter(name)
            else:
                ps.add_parameter(name, value)
    return ps


def objects(*items: Any) -> Any:
    """Pipeline input for pypsrp: a list (its annotation says Iterator, but a list is what it sends whole)."""
    return list(items)


def marker(text: str) -> tuple[str, dict[str, Any]]:
    return ("Write-Output", {"InputObject": text})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One two-host lab for the module (its tests only read)."""
    with Lab.from_topology(
        TOPOLOGIES / "pair.yaml", workdir=Path(tmp_path_factory.mktemp("statements")), time_scale=60
    ) as started:
        yield started


@pytest.fixture(scope="module")
def pool(lab: Lab) -> Iterator[RunspacePool]:
    with lab_wsman(lab, HOST) as wsman, RunspacePool(wsman) as opened:
        yield opened


def commands_run_since(lab: Lab, start: int) -> list[str]:
    return [name for host, name in lab.world.command_log[start:] if host == HOST]


# -- a lab host's cmdlets ----------------------------------------------------------------------------------
def test_write_output_is_a_cmdlet(pool: RunspacePool) -> None:
    ps = statements(pool, ("Write-Output", {"InputObject": ["a", "b"]}))
    assert ps.invoke() == ["a", "b"]
    ps = statements(pool, ("Write-Output", {"InputObject": "x", "NoEnumerate": True}))
    assert ps.invoke() == ["x"]
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Output")
    assert ps.invoke(input=objects("p", "q")) == ["p", "q"]
    assert ps.state == COMPLETED


def test_two_statements_output_in_order(pool: RunspacePool) -> None:
    ps = statements(pool, marker("one"), marker("two"))
    assert ps.invoke() == ["one", "two"]
    assert ps.state == COMPLETED
    assert not ps.had_errors
    assert ps.streams.error == []


def test_three_statements_with_markers_between_reads(pool: RunspacePool) -> None:
    ps = statements(
        pool,
        ("Get-VM", {"Name": "vm-a*"}),
        marker("--end-vms--"),
        ("Get-VMHost", {}),
        marker("--end-host--"),
        ("Get-VMSwitch", {}),
    )
    output = ps.invoke()
    assert ps.state == COMPLETED
    types = [o if isinstance(o, str) else o.types[0].rsplit(".", 1)[-1] for o in output]
    first, second = types.index("--end-vms--"), types.index("--end-host--")
    assert set(types[:first]) == {"VirtualMachine"}
    assert types[first + 1 : second] == ["VMHost"]
    assert types[second + 1 :] == ["VMSwitch"]


def test_non_terminating_error_then_the_next_statement_runs(pool: RunspacePool) -> None:
    ps = statements(pool, ("Get-VM", {"Name": "ghost"}), marker("after"))
    assert ps.invoke() == ["after"]
    assert ps.state == COMPLETED
    assert not ps.had_errors
    [error] = ps.streams.error
    assert str(error.fq_error).endswith("Microsoft.HyperV.PowerShell.Commands.GetVM")


def test_binding_error_in_the_first_statement_then_the_second_runs(pool: RunspacePool) -> None:
    ps = statements(pool, ("Get-VM", {"Bogus": 1}), marker("after"))
    assert ps.invoke() == ["after"]
    assert ps.state == COMPLETED
    assert not ps.had_errors  # pypsrp reports had_errors only for Failed
    [error] = ps.streams.error
    assert error.fq_error == "NamedParameterNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM"
    assert error.reason == "ParameterBindingException"


def test_command_not_found_in_the_first_statement_then_the_second_runs(pool: RunspacePool) -> None:
    ps = statements(pool, ("Get-Nothing", {}), marker("after"))
    assert ps.invoke() == ["after"]
    assert ps.state == COMPLETED
    assert [e.fq_error for e in ps.streams.error] == ["CommandNotFoundException"]


def test_a_terminating_error_in_the_last_statement_fails_the_invocation(pool: RunspacePool) -> None:
    ps = statements(pool, marker("before"), ("Get-VM", {"Bogus": 1}))
    assert ps.invoke() == ["before"]
    assert ps.state == FAILED
    assert ps.had_errors
    assert [e.fq_error for e in ps.streams.error] == [
        "NamedParameterNotFound,Microsoft.HyperV.PowerShell.Commands.GetVM"
    ]


def test_error_action_stop_ends_the_batch(lab: Lab, pool: RunspacePool) -> None:
    start = len(lab.world.command_log)
    ps = statements(pool, ("Get-VM", {"Name": "ghost", "ErrorAction": "Stop"}), marker("after"))
    assert ps.invoke() == []
    assert ps.state == FAILED
    assert [e.fq_error for e in ps.streams.error] == ["InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"]
    assert commands_run_since(lab, start) == ["Get-VM"]  # the marker never ran


def test_input_goes_to_the_first_statement_only(pool: RunspacePool) -> None:
    # Select-Object without input writes nothing; with the input it would repeat it.
    ps = statements(pool, ("Write-Output", {}), ("Select-Object", {"First": 5}), marker("end"))
    assert ps.invoke(input=objects("a", "b")) == ["a", "b", "end"]
    assert ps.state == COMPLETED


# -- the scripted runner: which statements ran, with what ----------------------------------------------------
@pytest.fixture
def scripted_pool(wire_endpoint: HostEndpoint, wire_connect) -> Iterator[RunspacePool]:
    with wire_connect(wire_endpoint, "basic") as wsman, RunspacePool(wsman) as opened:
        yield opened


def echo(value: str) -> tuple[str, dict[str, Any]]:
    return ("Echo-Parameters", {"Name": value})


def test_each_statement_is_its_own_pipeline_and_input_reaches_the_first(scripted_pool, wire_runner) -> None:
    ps = statements(scripted_pool, echo("one"), echo("two"), ("Write-Records", {}))
    assert ps.invoke(input=objects("in1", "in2")) == ["Name='one'", "in1", "in2", "Name='two'", "after-records"]
    assert ps.state == COMPLETED
    first, second, third = wire_runner.seen[-3:]
    assert [c.name for c in first.commands] == ["Echo-Parameters"]
    assert (first.input, second.input, third.input) == (["in1", "in2"], [], [])
    # The records of a later statement reach their own streams.
    assert [w.message for w in ps.streams.warning] == ["The host is busy."]
    assert len(ps.streams.progress) == 2
    assert len(ps.streams.error) == 1


def test_first_statement_failing_ends_the_invocation_after_the_second(scripted_pool, wire_runner) -> None:
    """PowerShell stops treating the rest as a batch: the client sees the second statement's end; the third
    still runs on the server, unseen."""
    ps = statements(scripted_pool, ("Throw-Terminating", {}), echo("two"), echo("three"))
    assert ps.invoke() == ["before", "Name='two'"]
    assert ps.state == COMPLETED
    assert [e.fq_error for e in ps.streams.error] == ["OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"]
    seen = [r.commands[0].parameters for r in wire_runner.seen[-2:]]
    assert [p[0].value for p in seen] == ["two", "three"]


def test_a_middle_statement_failing_fails_the_invocation(scripted_pool, wire_runner) -> None:
    ps = statements(scripted_pool, echo("one"), ("Throw-Terminating", {}), echo("three"))
    assert ps.invoke() == ["Name='one'", "before"]
    assert ps.state == FAILED
    assert ps.had_errors
    assert [e.fq_error for e in ps.streams.error] == ["OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"]
    assert wire_runner.seen[-1].commands[0].parameters[0].value == "three"  # ran, unseen


def test_merge_error_to_output_applies_to_its_own_statement(scripted_pool) -> None:
    ps = PowerShell(scripted_pool)
    ps.add_cmdlet("Write-Records").merge_error("output").add_statement()
    ps.add_cmdlet("Write-Records")
    output = ps.invoke()
    assert ps.state == COMPLETED
    assert output[1:] == ["after-records", "after-records"]  # the first statement's record came as output
    assert len(ps.streams.error) == 1
