"""Bare Temporal: a workflow that runs N no-op activities one after the other, and a worker that serves it.

    .venv/bin/python -m benchmarks.bare --address 127.0.0.1:7233 --task-queue bare-bench

The yardstick of `benchmarks.concurrency_bench`: what the same Temporal server does for a workflow with as many
activities as a migration runs, with no work in them. The worker runs in its own process, as snlm's does, until
SIGTERM or SIGINT. This module imports nothing of snlm, so the workflow sandbox loads it as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

BARE_WORKFLOW = "BareMigration"


@activity.defn(name="noop")
async def noop() -> None:
    """Nothing: the cost of an activity is all Temporal's."""


@workflow.defn(name=BARE_WORKFLOW)
class BareMigration:
    @workflow.run
    async def run(self, activities: int) -> None:
        for _ in range(activities):
            await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=60))


async def serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=task_queue, workflows=[BareMigration], activities=[noop]):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="the Temporal frontend, host:port")
    parser.add_argument("--task-queue", default="bare-bench")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.address, args.task_queue))
    # Skip the interpreter teardown that can abort under the Temporal runtime's threads (starter.cli.exit_now).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
