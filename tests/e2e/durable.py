"""Helpers for the durability tests: a file-backed dev server on a fixed port, the worker as a real subprocess
(`python worker.py`), bounded waits, and what the event history says about the move activity.

Nothing here is a fixture of its own: tests/e2e/test_durability.py builds its fixtures from these, so the module
does not depend on (or collide with) tests/e2e/conftest.py.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import _binary
from workflows.contracts import SEARCH_ATTRIBUTES, MoveResult

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
MOVE_ACTIVITY = "start_or_attach_move"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the dev server is then started on it, and restarted on the same one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dev_server_args() -> list[str]:
    """The dev server's extra arguments: the fast task dispatch, SQLite pragmas, and snlm's search attributes."""
    return [
        "--dynamic-config-value",
        "history.transferProcessorMaxPollRPS=10000",
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        *(arg for name in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{name}=Keyword")),
    ]


async def start_dev_server(port: int, database: Path) -> WorkflowEnvironment:
    """The real dev server on 127.0.0.1:`port`, persisting to `database` (the same file survives a restart)."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        ip="127.0.0.1",
        port=port,
        ui=False,
        dev_server_database_filename=str(database),
        dev_server_extra_args=dev_server_args(),
    )


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class WorkerProcess:
    """`python worker.py` as its own process; stopped and killed by its pid only."""

    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, *, address: str, inventory: Path, task_queue: str, log: Path) -> WorkerProcess:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "SNLM_INVENTORY": str(inventory),
            "SNLM_TASK_QUEUE": task_queue,
            "SNLM_MOVE_POLL_SECONDS": "0.2",
            "SNLM_GRACEFUL_SHUTDOWN_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("SNLM_CONFIG", None)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, str(REPO / "worker.py")],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL, this pid only; returns the exit status (negative signal number)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the worker's own graceful shutdown), SIGKILL if it does not end in time."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def logged(self, text: str) -> bool:
        """Whether the worker's output (its log and temporalio core's) contains `text`."""
        try:
            return text in self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@overload
async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, interval: float = 0.2
) -> T: ...


@overload
async def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T: ...


async def wait_for(probe: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `probe` (plain or async) until it returns something other than None or False; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            answer = probe()
            value = await answer if inspect.isawaitable(answer) else answer
            if value is not None and value is not False:
                return value
        except Exception as error:  # a query while the worker starts, or the server restarts
            last_error = error
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class MoveAttempts:
    """The move activity as the history records it."""

    attempts: tuple[int, ...]  # the attempt number of every ActivityTaskStarted of the move
    result: MoveResult | None  # what the attempt that completed returned


async def move_attempts(handle: WorkflowHandle[Any, Any]) -> MoveAttempts:
    history = await handle.fetch_history()
    move_events: set[int] = set()
    attempts: list[int] = []
    result: MoveResult | None = None
    converter = DataConverter.default  # the worker's converter (worker.py sets none of its own)
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == MOVE_ACTIVITY:
                move_events.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in move_events:
                attempts.append(started.attempt)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            if completed.scheduled_event_id in move_events:
                payloads: Sequence[Any] = completed.result.payloads
                [decoded] = await converter.decode(payloads, [MoveResult])
                result = decoded
    return MoveAttempts(tuple(attempts), result)
