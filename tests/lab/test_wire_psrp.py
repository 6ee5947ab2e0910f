"""The PSRP engine over the wire: commands, streams, records, input/output sizes, stop, concurrency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from lab.wsman import HostEndpoint
from tests.lab.conftest import WIRE_USER

pytestmark = pytest.mark.timeout(90)

COMPLETED, FAILED, STOPPED = 4, 5, 3


def _objects(*items: Any) -> Any:
    """Pipeline input for pypsrp: a list (its annotation says Iterator, but a list is what it sends whole)."""
    return list(items)


def _exception(record: Any) -> Any:
    assert record.exception is not None
    return record.exception


@pytest.fixture(params=["basic", "ntlm"])
def pool(request, wire_endpoint: HostEndpoint, wire_connect):
    """An open runspace pool over Basic/HTTPS and over sealed NTLM/HTTP."""
    wsman = wire_connect(wire_endpoint, request.param)
    with wsman, RunspacePool(wsman) as opened:
        yield opened


def test_parameters_switches_positionals_and_input(pool: RunspacePool, wire_runner) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Echo-Parameters").add_parameter("Name", "vm1").add_parameter("Force").add_argument(42)
    output = ps.invoke(input=_objects("a", "b"))
    assert ps.state == COMPLETED
    assert not ps.had_errors
    assert output == ["Name='vm1'", "Force=<switch>", "None=42", "a", "b"]
    command = wire_runner.seen[-1].commands[0]
    assert command.name == "Echo-Parameters"
    assert [(p.name, p.value, p.is_switch) for p in command.parameters] == [
        ("Name", "vm1", False),
        ("Force", True, True),
        (None, 42, False),
    ]
    assert not command.is_script
    assert wire_runner.seen[-1].user == WIRE_USER


def test_script_is_passed_to_the_runner(pool: RunspacePool, wire_runner) -> None:
    ps = PowerShell(pool)
    ps.add_script("Get-VM | Stop-VM")
    assert ps.invoke() == ["Get-VM | Stop-VM|True"]
    assert wire_runner.seen[-1].commands[0].is_script


def test_merge_error_to_output_is_parsed(pool: RunspacePool, wire_runner) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Records").merge_error("output")
    output = ps.invoke()
    assert wire_runner.seen[-1].commands[0].merge_errors_to_output
    # The error record arrives in the output stream, not the error stream.
    assert ps.streams.error == []
    assert output[-1] == "after-records"
    assert len(output) == 2


def test_error_warning_verbose_and_progress_records(pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Write-Records")
    assert ps.invoke() == ["after-records"]
    assert ps.state == COMPLETED
    assert not ps.had_errors  # pypsrp 0.9.1 sets had_errors only for a Failed pipeline
    [error] = ps.streams.error
    assert error.fq_error == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
    assert error.category == 5
    assert error.activity == "Get-VM"
    assert error.reason == "VirtualizationException"
    assert error.target_name == "ghost"
    assert error.target_type == "String"
    assert error.message == "InvalidArgument: (ghost:String) [Get-VM], VirtualizationException"
    assert _exception(error).types == [
        "Microsoft.HyperV.PowerShell.VirtualizationException",
        "System.Exception",
        "System.Object",
    ]
    assert _exception(error).adapted_properties["Message"] == (
        'Hyper-V was unable to find a virtual machine with name "ghost".'
    )
    assert _exception(error).adapted_properties["HResult"] == -2146233088
    assert _exception(error).extended_properties["ErrorCode"] == 32779
    assert [w.message for w in ps.streams.warning] == ["The host is busy."]
    assert [v.message for v in ps.streams.verbose] == ["Looking up the VM."]
    running, completed = ps.streams.progress
    assert (running.activity, running.activity_id, running.description, running.percent_complete) == (
        "Moving Virtual Machine",
        3,
        "50%",
        50,
    )
    assert str(running.progress_type) == "Processing"
    assert str(completed.progress_type) == "Completed"
    assert completed.percent_complete == 100


def test_terminating_error_fails_the_pipeline(pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Throw-Terminating")
    assert ps.invoke() == ["before"]
    assert ps.state == FAILED
    assert ps.had_errors
    # Carried by PIPELINE_STATE only, as a real host does: pypsrp lists it once.
    assert [e.fq_error for e in ps.streams.error] == ["OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"]
    record = ps.streams.error[-1]
    assert record.category == 0
    assert record.message == "NotSpecified: (:) [Move-VM], VirtualizationException"
    assert "failed at migration source" in _exception(record).adapted_properties["Message"]


def test_unexpected_exception_fails_with_a_runtime_exception(pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Throw-Unexpected")
    assert ps.invoke() == []
    assert ps.state == FAILED
    assert ps.had_errors
    [record] = ps.streams.error
    assert record.fq_error == "RuntimeException"
    assert record.reason == "RuntimeException"
    assert "the lab model is inconsistent" in _exception(record).adapted_properties["Message"]
    # The pool survives a failed pipeline.
    ps2 = PowerShell(pool)
    ps2.add_cmdlet("Get-Identity")
    assert ps2.invoke() == [f"{WIRE_USER}|{pool.connection.transport.auth}"]


def test_large_output_is_fragmented(pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Emit-Large").add_parameter("Count", 40).add_parameter("Size", 100_000)
    output = ps.invoke()
    assert ps.state == COMPLETED
    assert len(output) == 40
    assert [item[:6] for item in output] == [f"{i:06d}" for i in range(40)]
    assert all(len(item) == 100_006 for item in output)


def test_large_input_is_fragmented(pool: RunspacePool, wire_runner) -> None:
    items = [f"{i:04d}" + "y" * 60_000 for i in range(30)]
    ps = PowerShell(pool)
    ps.add_cmdlet("Measure-Input")
    assert ps.invoke(input=_objects(*items)) == [30, sum(len(i) for i in items)]
    assert wire_runner.seen[-1].input == items


def test_one_huge_input_object_spans_several_envelopes(pool: RunspacePool, wire_runner) -> None:
    big = "z" * 1_500_000  # several times pypsrp's 512000-byte envelope
    ps = PowerShell(pool)
    ps.add_cmdlet("Measure-Input")
    assert ps.invoke(input=_objects(big)) == [1, len(big)]


def test_stop_during_a_blocking_command(pool: RunspacePool, wire_runner) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Wait-Stop")
    ps.begin_invoke()
    assert wire_runner.blocking_started.wait(10)
    started = time.monotonic()
    ps.stop()
    assert ps.state == STOPPED
    assert wire_runner.stop_observed.wait(5)
    assert wire_runner.write_after_stop_raised.wait(5)
    assert time.monotonic() - started < 5
    # The server ended the pipeline Stopped: read its final PIPELINE_STATE off the wire.
    stdout = pool.shell.receive("stdout", command_id=ps._command_id)[2]["stdout"]
    pool._parse_responses(stdout, ps)
    assert ps.state == STOPPED
    assert ps.streams.error[-1].fq_error == "PipelineStopped"
    ps.close()
    # The pool still works.
    again = PowerShell(pool)
    again.add_cmdlet("Get-Identity")
    assert again.invoke()[0].startswith(WIRE_USER)


def test_close_pipeline_then_reuse_the_object(pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Identity")
    first = ps.invoke()
    ps.close()  # signal Terminate
    assert ps.invoke() == first


def test_concurrent_pools_from_several_threads(wire_endpoint: HostEndpoint, wire_connect) -> None:
    def work(index: int) -> list[str]:
        mode = ("basic", "ntlm", "negotiate", "credssp")[index % 4]
        wsman = wire_connect(wire_endpoint, mode)
        results = []
        with wsman, RunspacePool(wsman) as pool:
            for run in range(3):
                ps = PowerShell(pool)
                ps.add_cmdlet("Echo-Parameters").add_parameter("Id", f"{index}-{run}")
                results.extend(ps.invoke())
                assert ps.state == COMPLETED
        return results

    with ThreadPoolExecutor(max_workers=8) as executor:
        outputs = list(executor.map(work, range(8)))
    for index, output in enumerate(outputs):
        assert output == [f"Id='{index}-{run}'" for run in range(3)]
    stats = wire_endpoint.stats.snapshot()
    assert stats["pools_opened"] == 8
    assert stats["commands_run"] == 24
    assert wire_endpoint.service.shell_count == 0


def test_concurrent_pipelines_in_one_pool(wire_endpoint: HostEndpoint, wire_connect) -> None:
    wsman = wire_connect(wire_endpoint, "basic")
    lock = threading.Lock()  # pypsrp's WSMan session is shared by the pipelines of one pool
    with wsman, RunspacePool(wsman, max_runspaces=4) as pool:
        pipelines = []
        for index in range(4):
            ps = PowerShell(pool)
            ps.add_cmdlet("Emit-Large").add_parameter("Count", 5).add_parameter("Size", 50_000 + index)
            with lock:
                ps.begin_invoke()
            pipelines.append(ps)
        for index, ps in enumerate(pipelines):
            output = ps.end_invoke()
            assert len(output) == 5
            assert all(len(item) == 50_006 + index for item in output)


def test_closing_the_pool_stops_its_running_pipelines(wire_endpoint: HostEndpoint, wire_connect, wire_runner) -> None:
    wsman = wire_connect(wire_endpoint, "basic")
    with wsman:
        pool = RunspacePool(wsman)
        pool.open()
        ps = PowerShell(pool)
        ps.add_cmdlet("Wait-Stop")
        ps.begin_invoke()
        assert wire_runner.blocking_started.wait(10)
        pool.close()  # WSMan Delete
        assert wire_runner.stop_observed.wait(5)
    assert wire_endpoint.service.shell_count == 0
