"""The runspace pool engine: one `PoolShell` per WinRM shell, on psrpcore's ServerRunspacePool.

psrpcore is sans-IO and not thread-safe: every call into the pool or its pipelines happens under the
shell's lock (an RLock, because a pipeline's worker writes through the same lock). psrpcore's
`data_to_send()` returns fragments first-in-first-out across all targets, so after every operation the
shell drains it into one queue per target (None for the pool, a pipeline id otherwise): a Receive for a
pipeline gets only that pipeline's data (wire notes, "Message sequence").
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from psrpcore import (
    CreatePipelineEvent,
    EndOfPipelineInputEvent,
    GetAvailableRunspacesEvent,
    GetCommandMetadataEvent,
    PipelineInputEvent,
    PSRPEvent,
    PSRPPayload,
    ResetRunspaceStateEvent,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore._payload import PSRPMessage
from psrpcore.types import PSRPMessageType, PSVersion, RunspacePoolState

from lab.commands import CommandRunner
from lab.psrp import speedups
from lab.psrp.create_pipeline import ParsedPipeline, read_create_pipeline
from lab.psrp.pipeline import PipelineRun
from lab.psrp.records import runtime_error_spec

log = logging.getLogger(__name__)

# Room left in an envelope for the SOAP header and the Receive elements around the base64 data.
_ENVELOPE_OVERHEAD = 4096
_PER_PAYLOAD_OVERHEAD = 128
_MIN_FRAGMENT = 4096


class ShellClosedError(Exception):
    """The shell was deleted or dropped (WinRM service restart) while a caller used it."""


class UnknownPipelineError(Exception):
    """A Receive, Send or Signal named a pipeline (CommandId) this shell does not have."""


@dataclass
class ReceiveResult:
    """What one Receive returns: PSRP payloads, and whether the pipeline has ended and all was sent."""

    payloads: list[bytes]
    done: bool


def payload_budget(max_envelope_size: int) -> int:
    """Bytes of PSRP data that fit, base64-encoded, in a response of `max_envelope_size` bytes."""
    return max(_MIN_FRAGMENT, (max_envelope_size - _ENVELOPE_OVERHEAD) * 3 // 4)


def _windows_private_data() -> dict[str, object]:
    # What Windows Server 2019's WinRM endpoint reports in APPLICATION_PRIVATE_DATA (psrpcore fills in
    # PSRemotingProtocolVersion and SerializationVersion).
    return {
        "PSVersionTable": {
            "PSVersion": PSVersion("5.1.17763.1"),
            "PSEdition": "Desktop",
            "BuildVersion": PSVersion("10.0.17763.1"),
            "CLRVersion": PSVersion("4.0.30319.42000"),
            "WSManStackVersion": PSVersion("3.0"),
        }
    }


class _ParsedCreatePipelineEvent(CreatePipelineEvent):
    """A CREATE_PIPELINE read by `read_create_pipeline`: its statements, no psrpcore objects behind them."""

    def __init__(self, runspace_pool_id: uuid.UUID, pipeline_id: uuid.UUID, parsed: ParsedPipeline) -> None:
        super().__init__(PSRPMessageType.CreatePipeline, None, runspace_pool_id, pipeline_id)  # type: ignore[arg-type]
        self.parsed = parsed

    def __repr__(self) -> str:
        # The base class's repr builds `pipeline` from the psrpcore object this event does not have.
        return (
            f"<{type(self).__name__} runspace_pool_id={self.runspace_pool_id!r} pipeline_id={self.pipeline_id!r} "
            f"statements={self.parsed.statements!r}>"
        )


class _LabRunspacePool(ServerRunspacePool):
    """psrpcore's server pool, with CREATE_PIPELINE read by lab/psrp/create_pipeline.py where it can be (the
    psrpcore versions speedups.py was checked with; any message it does not expect goes psrpcore's way)."""

    def _process_message(self, message: PSRPMessage) -> PSRPEvent:
        if (
            message.message_type == PSRPMessageType.CreatePipeline
            and message.pipeline_id in self.pipeline_table
            and speedups.checked()
        ):
            parsed = read_create_pipeline(
                bytes(message.data),
                self._cipher,
                our_capability=self.our_capability,
                their_capability=self.their_capability,
            )
            if parsed is not None:
                # psrpcore's own handling of the event only stores its pipeline as the ServerPipeline's metadata,
                # which nothing reads.
                return _ParsedCreatePipelineEvent(message.runspace_pool_id, message.pipeline_id, parsed)
        return super()._process_message(message)


class PoolShell:
    """A runspace pool with its pipelines, driven by WSMan operations."""

    def __init__(
        self,
        shell_id: str,
        runner: CommandRunner,
        *,
        user: str,
        auth: str,
        stop_grace_seconds: float = 2.0,
        on_pipeline_start: Callable[[], None] | None = None,
    ) -> None:
        self.shell_id = shell_id
        self.runner = runner
        self.user = user
        self.auth = auth
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self.pool = _LabRunspacePool(application_private_data=_windows_private_data())
        self.closed = False
        self.fragment_size = payload_budget(153600)
        self._stop_grace = stop_grace_seconds
        self._on_pipeline_start = on_pipeline_start
        self._queues: dict[uuid.UUID | None, deque[bytes]] = {None: deque()}
        self._runs: dict[uuid.UUID, PipelineRun] = {}

    # --- WSMan operations --------------------------------------------------------------------------------

    def set_max_envelope_size(self, max_envelope_size: int) -> None:
        """Size later fragments for the client's current MaxEnvelopeSize (pypsrp raises it to 512000 once
        the server reports protocol 2.2+, so the value of the latest request wins)."""
        with self.lock:
            self.fragment_size = payload_budget(max_envelope_size)

    def open(self, creation_data: bytes) -> None:
        """Feed the Create's creationXml (SESSION_CAPABILITY + INIT_RUNSPACEPOOL)."""
        self._feed(creation_data, None)

    def create_pipeline(self, pipeline_id: uuid.UUID, first_fragment: bytes) -> None:
        """A Command: make the ServerPipeline first, then feed its first CREATE_PIPELINE fragment."""
        with self.lock:
            self._check_open()
            if pipeline_id not in self._runs:
                self._runs[pipeline_id] = PipelineRun(
                    self,
                    pipeline_id,
                    self.runner,
                    user=self.user,
                    auth=self.auth,
                    on_start=self._on_pipeline_start,
                )
                self._queues[pipeline_id] = deque()
            self._feed(first_fragment, pipeline_id)

    def send(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        """A Send on `stdin` or `pr`: more fragments for the pool or a pipeline."""
        with self.lock:
            self._check_open()
            if pipeline_id is not None and pipeline_id not in self._runs:
                raise UnknownPipelineError(str(pipeline_id))
            self._feed(data, pipeline_id)

    def receive(self, pipeline_id: uuid.UUID | None, max_bytes: int, timeout: float) -> ReceiveResult:
        """Long-poll for the target's data: wait up to `timeout` seconds for something to send.

        An empty result that is not `done` means the poll timed out (the caller answers with the WSMan
        timeout fault, which pypsrp swallows and polls again).
        """
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                self._check_open()
                run = self._runs.get(pipeline_id) if pipeline_id is not None else None
                if pipeline_id is not None and run is None:
                    raise UnknownPipelineError(str(pipeline_id))
                queue = self._queues.setdefault(pipeline_id, deque())
                if queue:
                    break
                if run is not None and run.final:
                    return ReceiveResult([], done=True)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return ReceiveResult([], done=False)
                self._changed.wait(remaining)
            payloads: list[bytes] = []
            size = 0
            while queue and (not payloads or size + len(queue[0]) + _PER_PAYLOAD_OVERHEAD <= max_bytes):
                payload = queue.popleft()
                payloads.append(payload)
                size += len(payload) + _PER_PAYLOAD_OVERHEAD
            done = run is not None and run.final and not queue
            return ReceiveResult(payloads, done=done)

    def stop_pipeline(self, pipeline_id: uuid.UUID) -> None:
        """Signal ctrl_c: set the runner's stop_event, give it a short grace to return, then end the
        pipeline Stopped whether or not it did (PowerShell's StopProcessing)."""
        with self.lock:
            run = self._runs.get(pipeline_id)
            if run is None:
                raise UnknownPipelineError(str(pipeline_id))
            run.stop_event.set()
            self._changed.notify_all()
        run.finished.wait(self._stop_grace)
        with self.lock:
            run.force_stop()
            self.flush()

    def terminate_pipeline(self, pipeline_id: uuid.UUID) -> None:
        """Signal Terminate (`PowerShell.close()`): stop the pipeline if needed and forget it."""
        with self.lock:
            run = self._runs.pop(pipeline_id, None)
            if run is None:
                return
            run.force_stop()
            run.pipeline.close()
            self.flush()
            self._queues.pop(pipeline_id, None)
            self._changed.notify_all()

    def close(self) -> None:
        """Delete (or a dropped service): stop every pipeline and wake every waiting Receive."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for run in self._runs.values():
                run.force_stop()
            self._runs.clear()
            self._queues.clear()
            self._changed.notify_all()

    @property
    def opened(self) -> bool:
        """Whether the pool reached the Opened state."""
        return self.pool.state == RunspacePoolState.Opened

    # --- internals -----------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Move psrpcore's queued fragments into the per-target queues and wake waiting Receives.

        Callers hold the lock.
        """
        moved = False
        while True:
            payload = self.pool.data_to_send(self.fragment_size)
            if payload is None:
                break
            queue = self._queues.get(payload.pipeline_id)
            if queue is not None:  # a terminated pipeline's late data has nobody to go to
                queue.append(payload.data)
                moved = True
        if moved:
            self._changed.notify_all()

    def _check_open(self) -> None:
        if self.closed:
            raise ShellClosedError(self.shell_id)

    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        with self.lock:
            self._check_open()
            self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
            while True:
                event = self.pool.next_event()
                if event is None:
                    break
                self._handle(event)
            self.flush()

    def _handle(self, event: PSRPEvent) -> None:
        if isinstance(event, _ParsedCreatePipelineEvent):
            self._run_for(event.pipeline_id).configure_parsed(event.parsed.statements, no_input=event.parsed.no_input)
        elif isinstance(event, CreatePipelineEvent):
            self._run_for(event.pipeline_id).configure(event.pipeline)
        elif isinstance(event, PipelineInputEvent):
            self._run_for(event.pipeline_id).add_input(event.data)
        elif isinstance(event, EndOfPipelineInputEvent):
            self._run_for(event.pipeline_id).start()
        elif isinstance(event, (SetMaxRunspacesEvent, SetMinRunspacesEvent, ResetRunspaceStateEvent)):
            self.pool.runspace_availability_response(event.ci, True)
        elif isinstance(event, GetAvailableRunspacesEvent):
            busy = sum(1 for run in self._runs.values() if not run.final)
            self.pool.runspace_availability_response(event.ci, max(self.pool.max_runspaces - busy, 0))
        elif isinstance(event, GetCommandMetadataEvent):
            self._run_for(event.pipeline_id).fail(
                runtime_error_spec("Command metadata queries are not supported by this host.")
            )
        # SESSION_CAPABILITY, INIT_RUNSPACEPOOL and PUBLIC_KEY are answered by psrpcore itself; host
        # responses need no action because the lab never makes host calls.

    def _run_for(self, pipeline_id: uuid.UUID | None) -> PipelineRun:
        run = self._runs.get(pipeline_id) if pipeline_id is not None else None
        if run is None:
            raise UnknownPipelineError(str(pipeline_id))
        return run
