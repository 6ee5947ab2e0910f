"""One PSRP pipeline: parse its statements, collect its input, run it on a worker thread, end it.

The worker calls `CommandRunner.run(request, io)` once per statement. `io` is `_PipelineIO`: every write takes
the shell's lock (psrpcore is not thread-safe), hands the record to psrpcore's ServerPipeline and moves the
produced fragments to the shell's per-target queues. A pipeline of one statement ends Completed when the
runner returns, Failed with the record in PIPELINE_STATE when it raises `TerminatingError` (pypsrp then sets
`had_errors`), Failed with a generic RuntimeException record for any other exception, and Stopped after a
ctrl_c signal.

Several statements (pypsrp's `add_statement()`, sent as the Pipeline's `ExtraCmds`) run as Windows
PowerShell's server runs a batch (PowerShell.cs `BatchInvocationCallback` / `BatchInvocationWorkItem` and
ServerPowerShellDriver.cs `HandlePowerShellInvocationStateChanged`): one after the other, each as its own
pipeline, the client's input going to the first only, every output object to the one output stream in
order. Errors a statement writes go to the error stream and the next statement runs. When a statement ends
Failed (a terminating error), what the client sees depends on where it is:

- the first statement: its record is added to the error stream and the batch goes on, but the server stops
  treating the rest as a batch, so the end of the *second* statement is the end the client sees (Completed,
  or Failed); statements after the second still run, unseen;
- any later statement, and the last: the invocation ends Failed with its record; the statements after it
  still run, unseen;
- a failure from an action preference of Stop (`-ErrorAction Stop`, `-WarningAction Stop`;
  ActionPreferenceStopException) ends the invocation Failed wherever it happens, and nothing after it runs.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psrpcore import PowerShell, ServerPipeline
from psrpcore.types import ErrorRecord, PipelineResultTypes, ProgressRecordType, PSInvocationState

from lab.commands import CommandRunner, CommandSpec, ErrorSpec, ParameterSpec, PipelineRequest, TerminatingError
from lab.psrp.records import error_record, runtime_error_spec

if TYPE_CHECKING:
    from lab.psrp.engine import PoolShell

log = logging.getLogger(__name__)

# Exception types whose failure ends only their own statement: the engine's own statement-terminating errors
# (parameter binding, command discovery) and the lab's refusal of scripts. Anything else a runner raises as
# TerminatingError while the statement carries `-ErrorAction Stop` is that preference's
# ActionPreferenceStopException.
_STATEMENT_TERMINATING_TYPES = frozenset(
    {
        "System.Management.Automation.ParameterBindingException",
        "System.Management.Automation.CommandNotFoundException",
        "System.Management.Automation.PSNotSupportedException",
    }
)


class PipelineStoppedError(Exception):
    """Raised by a `PipelineIO` write once the client asked to stop the pipeline (PowerShell's
    PipelineStoppedException): a runner that writes after `stop_event` was set unwinds here."""


def _parameters(command: Any) -> tuple[ParameterSpec, ...]:
    parameters = []
    for name, value in command.parameters:
        if name is not None and value is None:
            parameters.append(ParameterSpec(name=name, value=True, is_switch=True))
        else:
            parameters.append(ParameterSpec(name=name, value=value))
    return tuple(parameters)


def parse_statements(powershell: PowerShell) -> list[list[CommandSpec]]:
    """The CREATE_PIPELINE commands as `CommandSpec`s, one list per statement.

    psrpcore reads the Pipeline's `ExtraCmds` (one entry per statement) and marks the last command of each
    statement `end_of_statement`. A parameter with a name and a null value is a switch (pypsrp's
    `add_parameter("Force")` sends `<Nil/>`, which PowerShell binds as `-Force`); it arrives as
    `value=True, is_switch=True`.
    """
    statements: list[list[CommandSpec]] = [[]]
    for command in powershell.commands:
        merge = command.merge_error == PipelineResultTypes.Output or (
            command.merge_my == PipelineResultTypes.Error and command.merge_to == PipelineResultTypes.Output
        )
        statements[-1].append(
            CommandSpec(
                name=command.command_text,
                parameters=_parameters(command),
                is_script=bool(command.is_script),
                merge_errors_to_output=merge,
            )
        )
        if command.end_of_statement:
            statements.append([])
    return [statement for statement in statements if statement]


def parse_commands(powershell: PowerShell) -> list[CommandSpec]:
    """Every command of CREATE_PIPELINE, all statements together (see `parse_statements`)."""
    return [command for statement in parse_statements(powershell) for command in statement]


def _error_action_stop(statement: list[CommandSpec]) -> bool:
    """Whether a command of the statement has `-ErrorAction Stop` (or `-ea 1`)."""
    for command in statement:
        for parameter in command.parameters:
            name = (parameter.name or "").lstrip("-").rstrip(":").lower()
            if name != "ea" and not (len(name) > len("error") and "erroraction".startswith(name)):
                continue
            value = parameter.value
            if isinstance(value, int) and not isinstance(value, bool):
                if value == 1:  # ActionPreference.Stop
                    return True
            elif str(value).strip().lower() == "stop":
                return True
    return False


def stops_batch(statement: list[CommandSpec], spec: ErrorSpec) -> bool:
    """Whether a TerminatingError the statement raised is an ActionPreferenceStopException.

    The lab's runners raise TerminatingError both for statement-terminating errors and for an error or
    warning written under a preference of Stop, with the original record; PowerShell ends a batch only for
    the latter. A -WarningAction Stop failure carries ActionPreferenceStop as its ErrorId.
    """
    if spec.fully_qualified_error_id.split(",", 1)[0] == "ActionPreferenceStop":
        return True
    if _STATEMENT_TERMINATING_TYPES.intersection(spec.exception_types):
        return False
    return _error_action_stop(statement)


@dataclass
class _StatementEnd:
    """How one statement ended: `record` is None when it completed."""

    record: ErrorRecord | None = None
    stops_batch: bool = False


class PipelineRun:
    """A pipeline of one runspace pool, from CREATE_PIPELINE to its final state."""

    def __init__(
        self,
        shell: PoolShell,
        pipeline_id: uuid.UUID,
        runner: CommandRunner,
        *,
        user: str,
        auth: str,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.shell = shell
        self.pipeline_id = pipeline_id
        # psrpcore needs the ServerPipeline in the pool's table before CREATE_PIPELINE is processed.
        self.pipeline = ServerPipeline(shell.pool, pipeline_id)
        self.runner = runner
        self.user = user
        self.auth = auth
        self.statements: list[list[CommandSpec]] = []
        self.input: list[Any] = []
        self.no_input = True
        self.stop_event = threading.Event()
        self.finished = threading.Event()  # the worker is done (or never started)
        self.final = False  # the final PIPELINE_STATE has been queued
        self._on_start = on_start
        self._thread: threading.Thread | None = None

    @property
    def commands(self) -> list[CommandSpec]:
        """Every command of every statement, in order."""
        return [command for statement in self.statements for command in statement]

    # --- called by the shell, under its lock -------------------------------------------------------------

    def configure(self, powershell: PowerShell) -> None:
        """Take the statements of CREATE_PIPELINE; start at once unless input will follow."""
        self.configure_parsed(parse_statements(powershell), no_input=bool(powershell.no_input))

    def configure_parsed(self, statements: list[list[CommandSpec]], *, no_input: bool) -> None:
        """`configure` with the statements already read (lab/psrp/create_pipeline.py)."""
        self.statements = statements
        self.no_input = no_input
        if self.no_input:
            self.start()

    def add_input(self, value: Any) -> None:
        """One PIPELINE_INPUT object."""
        self.input.append(value)

    def start(self) -> None:
        """Mark the pipeline Running and run it on a worker thread."""
        if self._thread is not None or self.final:
            return
        self.pipeline.start()
        self._thread = threading.Thread(target=self._work, name=f"psrp-{str(self.pipeline_id)[:8]}", daemon=True)
        if self._on_start:
            self._on_start()
        self._thread.start()

    def fail(self, spec: ErrorSpec) -> None:
        """End the pipeline Failed with `spec` without running it (e.g. an unsupported request)."""
        if self.final:
            return
        if self.pipeline.state == PSInvocationState.NotStarted:
            self.pipeline.start()
        self._end_failed(error_record(spec))
        self.finished.set()

    def force_stop(self) -> None:
        """End the pipeline Stopped now (the runner, if still busy, gets PipelineStoppedError on writes)."""
        self.stop_event.set()
        if self.final:
            return
        if self.pipeline.state == PSInvocationState.Running:
            self.pipeline.stop()
        self.final = True
        if self._thread is None:
            self.finished.set()

    # --- the worker ----------------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._run_statements()
        finally:
            with self.shell.lock:
                try:
                    if self.final:
                        pass
                    elif self.stop_event.is_set():
                        self.pipeline.stop()
                        self.final = True
                    else:
                        # Only reached when a statement's end was never decided (no statements at all).
                        self.pipeline.complete()
                        self.final = True
                    self.shell.flush()
                finally:
                    self.finished.set()

    def _run_statements(self) -> None:
        statements = self.statements
        # Set when the first statement failed without stopping the batch: PowerShell then runs the rest with
        # RunningExtraCommands off, so the next statement's end is sent to the client as the invocation's.
        next_one_ends = False
        for index, statement in enumerate(statements):
            if self.stop_event.is_set():
                return
            visible = not self.final
            last = index == len(statements) - 1
            request = PipelineRequest(
                commands=list(statement),
                input=list(self.input) if index == 0 else [],
                user=self.user,
                auth=self.auth,
            )
            io = _PipelineIO(self, merge_errors=any(c.merge_errors_to_output for c in statement), visible=visible)
            end = self._run_one(statement, request, io)
            if self.stop_event.is_set():
                return
            ends_here = last or next_one_ends
            next_one_ends = False
            if end.record is None:
                if visible and ends_here:
                    self._end(None)
                continue
            if visible:
                if index == 0 and not last and not end.stops_batch:
                    self._append_error(end.record)
                    next_one_ends = True
                else:
                    self._end(end.record)
            if end.stops_batch:
                return

    def _run_one(self, statement: list[CommandSpec], request: PipelineRequest, io: _PipelineIO) -> _StatementEnd:
        try:
            self.runner.run(request, io)
        except PipelineStoppedError:
            pass
        except TerminatingError as exc:
            # ThrowTerminatingError: a real host sends the record only in PIPELINE_STATE (ExceptionAsErrorRecord);
            # pypsrp copies it into streams.error itself.
            return _StatementEnd(error_record(exc.spec), stops_batch(statement, exc.spec))
        except Exception as exc:
            if not self.stop_event.is_set():
                log.exception("pipeline %s failed inside the lab host", self.pipeline_id)
                return _StatementEnd(error_record(runtime_error_spec(f"{type(exc).__name__}: {exc}")))
        return _StatementEnd()

    def _end(self, record: ErrorRecord | None) -> None:
        """Send the invocation's final state now: Completed, or Failed with `record`."""
        with self.shell.lock:
            if self.final or self.stop_event.is_set():
                return
            if record is None:
                self.pipeline.complete()
                self.final = True
            else:
                self._end_failed(record)
            self.shell.flush()

    def _append_error(self, record: ErrorRecord) -> None:
        """A statement's terminating error added to the error stream (PowerShell's AppendExceptionToErrorStream:
        the invocation's error stream, not the statement's, so a merge into output does not apply)."""
        with self.shell.lock:
            if self.final or self.pipeline.state != PSInvocationState.Running:
                return
            self._write_error_record(record)
            self.shell.flush()

    def _write_error_record(self, record: ErrorRecord) -> None:
        self.pipeline.write_error(
            exception=record.Exception,
            category_info=record.CategoryInfo,
            target_object=record.TargetObject,
            fully_qualified_error_id=record.FullyQualifiedErrorId,
        )

    def _end_failed(self, record: ErrorRecord) -> None:
        # psrpcore has no public "fail" call; _change_state emits PIPELINE_STATE with the record.
        self.pipeline._change_state(PSInvocationState.Failed, error=record)
        self.final = True


class _PipelineIO:
    """`lab.commands.PipelineIO` for one statement of a pipeline; thread-safe through the shell lock.

    `visible` is False for a statement that runs after the client was sent the invocation's final state: its
    writes go nowhere, as on a Windows server whose driver stopped forwarding the streams.
    """

    def __init__(self, run: PipelineRun, *, merge_errors: bool = False, visible: bool = True) -> None:
        self._run = run
        self._merge_errors = merge_errors
        self._visible = visible

    @property
    def stop_event(self) -> threading.Event:
        """Set when the client sent ctrl_c (or closed the pool)."""
        return self._run.stop_event

    def _write(self, emit: Callable[[ServerPipeline], None]) -> None:
        run = self._run
        if run.stop_event.is_set():
            raise PipelineStoppedError("The pipeline has been stopped.")
        if not self._visible:
            return
        with run.shell.lock:
            if run.final or run.pipeline.state != PSInvocationState.Running:
                raise PipelineStoppedError("The pipeline has been stopped.")
            emit(run.pipeline)
            run.shell.flush()

    def write_output(self, value: Any) -> None:
        """PIPELINE_OUTPUT."""
        self._write(lambda p: p.write_output(value))

    def write_error(self, spec: ErrorSpec) -> None:
        """ERROR_RECORD (non-terminating), or an output object when errors are merged into output."""
        record = error_record(spec)
        if self._merge_errors:
            self._write(lambda p: p.write_output(record))
        else:
            self._write(lambda p: self._run._write_error_record(record))

    def write_warning(self, message: str) -> None:
        """WARNING_RECORD."""
        self._write(lambda p: p.write_warning(message))

    def write_verbose(self, message: str) -> None:
        """VERBOSE_RECORD."""
        self._write(lambda p: p.write_verbose(message))

    def write_progress(
        self,
        activity: str,
        status: str,
        percent_complete: int = -1,
        *,
        activity_id: int = 0,
        completed: bool = False,
        seconds_remaining: int = -1,
    ) -> None:
        """PROGRESS_RECORD."""
        record_type = ProgressRecordType.Completed if completed else ProgressRecordType.Processing
        self._write(
            lambda p: p.write_progress(
                activity=activity,
                activity_id=activity_id,
                status_description=status,
                percent_complete=percent_complete,
                record_type=record_type,
                seconds_remaining=seconds_remaining,
            )
        )
