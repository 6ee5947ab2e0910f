"""The benchmarks' reading of Temporal actions from a real dev server's `action` counter: each action counted once,
in the measurement it belongs to, although the server publishes its counters only about once a second."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from benchmarks.harness import ActionMeter, start_dev_server


async def test_each_start_is_counted_in_its_own_measurement(tmp_path: Path) -> None:
    dev, client = await start_dev_server(tmp_path)
    try:
        meter = ActionMeter(dev.metrics_url)
        assert meter.available
        before = await meter.settled()
        for _ in range(3):
            # No worker polls this queue: the start is the only action, and nothing follows it.
            await client.start_workflow("Nobody", id=f"meter-{uuid.uuid4()}", task_queue=f"idle-{uuid.uuid4()}")
            after = await meter.settled()
            assert +(after - before) == {"grpc_StartWorkflowExecution": 1}
            before = after
    finally:
        dev.process.stop()


async def test_the_meter_keeps_the_cpu_it_spends_reading(tmp_path: Path) -> None:
    """saga_bench leaves the meter's own reads out of the worker's CPU: the meter must count them, and only them."""
    dev, _ = await start_dev_server(tmp_path)
    try:
        meter = ActionMeter(dev.metrics_url)
        spent, process = meter.cpu_seconds, time.process_time()
        for _ in range(5):
            assert meter.read() is not None
        spent, process = meter.cpu_seconds - spent, time.process_time() - process
        assert 0 < spent <= process
    finally:
        dev.process.stop()
