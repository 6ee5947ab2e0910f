"""One PSRP pipeline: parse its commands, collect its input, run it on a worker thread, end it.

The worker calls `CommandRunner.run(request, io)`. `io` is `_PipelineIO`: every write takes the shell's lock
(psrpcore is not thread-safe), hands the record to psrpcore's ServerPipeline and moves the produced fragments
to the shell's per-target queues. The pipeline ends Completed when the runner returns, Failed with the record
in PIPELINE_STATE when it raises `TerminatingError` (pypsrp then sets `had_errors`), Failed with a generic
RuntimeException record for any other exception, and Stopped after a ctrl_c signal.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psrpcore import PowerShell, ServerPipeline
from psrpcore.types import ErrorRecord, PipelineResultTypes, ProgressRecordType, PSInvocationState

from lab.commands import CommandRunner, CommandSpec, ErrorSpec, ParameterSpec, PipelineRequest, TerminatingError
from lab.psrp.records import error_record, runtime_error_spec

if TYPE_CHECKING:
    from lab.psrp.engine import PoolShell

log = logging.getLogger(__name__)


class PipelineStoppedError(Exception):
    """Raised by a `PipelineIO` write once the client asked to stop the pipeline (PowerShell's
    PipelineStoppedException): a runner that writes after `stop_event` was set unwinds here."""


def parse_commands(powershell: PowerShell) -> list[CommandSpec]:
    """The CREATE_PIPELINE commands as `CommandSpec`s.

    A parameter with a name and a null value is a switch (pypsrp's `add_parameter("Force")` sends
    `<Nil/>`, which PowerShell binds as `-Force`); it arrives as `value=True, is_switch=True`.
    """
    specs = []
    for command in powershell.commands:
        parameters = []
        for name, value in command.parameters:
            if name is not None and value is None:
                parameters.append(ParameterSpec(name=name, value=True, is_switch=True))
            else:
                parameters.append(ParameterSpec(name=name, value=value))
        merge = command.merge_error == PipelineResultTypes.Output or (
            command.merge_my == PipelineResultTypes.Error and command.merge_to == PipelineResultTypes.Output
        )
        specs.append(
            CommandSpec(
                name=command.command_text,
                parameters=tuple(parameters),
                is_script=bool(command.is_script),
                merge_errors_to_output=merge,
            )
        )
    return specs


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
        self.commands: list[CommandSpec] = []
        self.input: list[Any] = []
        self.no_input = True
        self.stop_event = threading.Event()
        self.finished = threading.Event()  # the worker is done (or never started)
        self.final = False  # the final PIPELINE_STATE has been queued
        self._on_start = on_start
        self._thread: threading.Thread | None = None

    # --- called by the shell, under its lock -------------------------------------------------------------

    def configure(self, powershell: PowerShell) -> None:
        """Take the commands of CREATE_PIPELINE; start at once unless input will follow."""
        self.commands = parse_commands(powershell)
        self.no_input = bool(powershell.no_input)
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
        request = PipelineRequest(commands=self.commands, input=list(self.input), user=self.user, auth=self.auth)
        io = _PipelineIO(self)
        outcome: ErrorRecord | None = None
        terminating: ErrorRecord | None = None
        try:
            self.runner.run(request, io)
        except PipelineStoppedError:
            pass
        except TerminatingError as exc:
            terminating = error_record(exc.spec)
        except Exception as exc:
            if not self.stop_event.is_set():
                log.exception("pipeline %s failed inside the lab host", self.pipeline_id)
                outcome = error_record(runtime_error_spec(f"{type(exc).__name__}: {exc}"))
        finally:
            with self.shell.lock:
                try:
                    if self.final:
                        pass
                    elif self.stop_event.is_set():
                        self.pipeline.stop()
                        self.final = True
                    elif terminating is not None:
                        # ThrowTerminatingError: a real host sends the record only in PIPELINE_STATE
                        # (ExceptionAsErrorRecord); pypsrp copies it into streams.error itself.
                        self._end_failed(terminating)
                    elif outcome is not None:
                        self._end_failed(outcome)
                    else:
                        self.pipeline.complete()
                        self.final = True
                    self.shell.flush()
                finally:
                    self.finished.set()

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

    @property
    def merge_errors(self) -> bool:
        """Whether error records go to the output stream (`merge_error("output")` on a command)."""
        return any(c.merge_errors_to_output for c in self.commands)


class _PipelineIO:
    """`lab.commands.PipelineIO` for one pipeline; thread-safe through the shell lock."""

    def __init__(self, run: PipelineRun) -> None:
        self._run = run

    @property
    def stop_event(self) -> threading.Event:
        """Set when the client sent ctrl_c (or closed the pool)."""
        return self._run.stop_event

    def _write(self, emit: Callable[[ServerPipeline], None]) -> None:
        run = self._run
        if run.stop_event.is_set():
            raise PipelineStoppedError("The pipeline has been stopped.")
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
        if self._run.merge_errors:
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
