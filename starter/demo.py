"""`make demo`: a Temporal dev server, a lab, a worker and a small watched campaign, all in one process.

    python -m starter.demo [--keep-running] [--time-scale N] [--workdir DIR]

The demo is the one place that wires the lab to the engine: the lab writes an inventory, the worker reads it,
and nothing else passes between them. It starts, in `.snlm/demo/`:

- the Temporal dev server with its UI on 127.0.0.1:8233 and a durable SQLite file (`temporal.db`);
- a lab from the built-in topology (simulated Hyper-V hosts on 127.0.0.1);
- a worker, in-process, serving the migration task queue with the lab's inventory;

then moves four VMs at once, each with an expected outcome, prints progress lines as they go and a summary table
at the end, and stops everything it started (with --keep-running, it waits for Ctrl-C so you can look around
in the UI and drive the lab with `snlm`). Exit status 0 when every VM ended as expected.

Delegation: with no directory at hand the demo runs with the policy `skip`, against the lab's own directory. The
built-in topology already holds the entries for HV-S2 <-> HV-S4 and HV-S1 <-> HV-S2; for the clustered move the
demo adds HV-W2 <-> HV-E1 to the lab's directory itself, as the team that manages delegation would, and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starter.cli import EXIT_INTERRUPTED, GIB, MOVE_ACTIVITY, failure_info, query_progress, start_migration
from starter.devserver import DevServer, DevServerError, start_dev_server
from workflows.contracts import (
    MIGRATION_SERVICE,
    PREFLIGHT_BLOCKED,
    DelegationPolicy,
    MigrateVmInput,
    MigrateVmResult,
    MigrationPolicy,
    MigrationProgress,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from lab.lab import Lab

DEFAULT_WORKDIR = Path(".snlm/demo")
# Simulated seconds per real second. The lab's own default (60) moves a small VM in a fraction of a second;
# at 4 the campaign takes about a minute, slow enough to watch the progress and the retry.
DEFAULT_TIME_SCALE = 4.0
CAMPAIGN = "demo"
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class DemoMove:
    """One VM of the demo's campaign and what should become of it."""

    vm: str
    source: str
    destination: str
    expect: str  # "moved" or "blocked"
    story: str
    restore_ha: bool = False
    fail_at_percent: int | None = None  # inject a one-shot failure of the move at this percent


# What the built-in topology offers (lab/topologies/default.yaml): web07 and web08 go the clean HV-S2 -> HV-S4 path;
# sql03 has a pass-through disk (PROBLEM[passthrough-disk]). The clustered VM: no cross-cluster move is clean in the
# built-in topology (HV-W1 is nearly full, HV-W2 has 4 GB free, HV-E2 has ms_server unbound, CL-WEST VMs at 10.0
# cannot run on 2019, and the CL-WEST VMs at 9.0 lack processor compatibility for CL-EAST's older Xeons), so web04
# leaves CL-WEST for the standalone HV-S4 (same processor): its HA is removed, and would be restored on HV-W2 if
# the move failed.
MOVES: tuple[DemoMove, ...] = (
    DemoMove("web07", "HV-S2", "HV-S4", "moved", "standalone, clean path"),
    DemoMove("web04", "HV-W2", "HV-S4", "moved", "clustered: its CL-WEST role is removed first"),
    DemoMove("sql03", "HV-S1", "HV-S2", "blocked", "pass-through disk: preflight blocks it, nothing changes"),
    DemoMove("web08", "HV-S2", "HV-S4", "moved", "the move dies at 40 % once and is retried", fail_at_percent=40),
)

# Delegation the demo adds to the lab's own directory for the clustered move (both hosts are 2016 or later:
# protocol transition, "use any authentication protocol"), merged with what the accounts already hold.
EXTRA_DELEGATION = (("HV-W2", "HV-S4"), ("HV-S4", "HV-W2"))


@dataclass
class Tracked:
    move: DemoMove
    handle: WorkflowHandle[Any, MigrateVmResult]
    started: float
    last_line: str = ""
    last_percent: int = -100
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0
    attempts: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def as_expected(self) -> bool:
        return self.outcome == self.move.expect


def say(text: str = "") -> None:
    print(text, flush=True)


def _spns(peer: str, domain: str) -> list[str]:
    fqdn = f"{peer.lower()}.{domain}"
    return [f"{service}/{name}" for service in ("cifs", MIGRATION_SERVICE) for name in (peer, fqdn)]


def start_lab(workdir: Path, time_scale: float) -> Lab:
    from lab.lab import Lab

    lab = Lab.from_topology(None, workdir=workdir / "lab", time_scale=time_scale)
    lab.start()
    domain = lab.spec.lab.domain
    for host, peer in EXTRA_DELEGATION:
        account = lab.world.directory.computer(host)
        have = sorted(account.allowed_to_delegate_to) if account is not None else []
        wanted = have + [spn for spn in _spns(peer, domain) if spn.casefold() not in {h.casefold() for h in have}]
        lab.set_delegation(host, allowed_to_delegate_to=wanted, protocol_transition=True)
    return lab


async def _terminate_leftovers(client: Client) -> int:
    """Workflows an earlier demo left running (killed mid-way) would act on this run's fresh lab: end them."""
    count = 0
    async for execution in client.list_workflows('ExecutionStatus="Running"'):
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="a new demo run started: the lab this workflow ran against is gone"
            )
            count += 1
    return count


async def _move_attempts(handle: WorkflowHandle[Any, Any]) -> int:
    """How many times the move activity ran (its retries included), read from the workflow's history."""
    scheduled: set[int] = set()
    attempts = 0
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == MOVE_ACTIVITY:
                scheduled.add(event.event_id)
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            # Temporal writes one started event per scheduled activity, when it closes, carrying the attempt it
            # ended on: retries show up as that number, not as more events.
            if started.scheduled_event_id in scheduled:
                attempts += max(1, started.attempt)
    return attempts


def _progress_line(t: Tracked, p: MigrationProgress) -> str | None:
    step = str(p.step.value if hasattr(p.step, "value") else p.step)
    parts = [f"{step:<12}"]
    if p.bytes_total:
        parts.append(f"{p.percent:3d}%  {p.bytes_done / GIB:5.1f} / {p.bytes_total / GIB:5.1f} GiB")
    elif p.percent:
        parts.append(f"{p.percent:3d}%")
    if p.attempt > 1:
        parts.append(f"attempt {p.attempt}")
    if p.waiting_for:
        parts.append(f"waiting for {p.waiting_for}")
    text = "  ".join(parts)
    key = f"{step}|{p.waiting_for}|{p.attempt}"
    if key == t.last_line and p.percent < t.last_percent + 20 and not (p.percent == 100 and t.last_percent < 100):
        return None
    t.last_line = key
    t.last_percent = p.percent
    return text


def _label(move: DemoMove) -> str:
    return f"{move.vm:<7} {move.source}->{move.destination}"


async def _watch(client: Client, t: Tracked) -> None:
    from temporalio.client import WorkflowFailureError

    result_task = asyncio.ensure_future(t.handle.result())
    try:
        while not result_task.done():
            progress = await query_progress(client, t.handle)
            line = _progress_line(t, progress) if progress is not None else None
            if line:
                say(f"  {_label(t.move):<22} {line}")
            await asyncio.wait([result_task], timeout=POLL_SECONDS)
        try:
            result = result_task.result()
            t.outcome = "moved" if result.moved or result.already_there else "not moved"
            t.detail = f"now on {result.destination}" + (
                f"; {len(result.warnings)} warning(s)" if result.warnings else ""
            )
        except WorkflowFailureError as error:
            failure = failure_info(error)
            t.outcome = "blocked" if failure["type"] == PREFLIGHT_BLOCKED else "failed"
            message = str(failure["message"]).splitlines()[0]
            if not message.startswith(failure["type"]):
                message = f"{failure['type']}: {message}"
            t.detail = message if len(message) <= 200 else message[:197] + "..."
        t.seconds = time.monotonic() - t.started
        with contextlib.suppress(Exception):
            t.attempts = await _move_attempts(t.handle)
        mark = "as expected" if t.as_expected else f"UNEXPECTED (expected {t.move.expect})"
        say(f"  {_label(t.move):<22} {t.outcome.upper()} in {t.seconds:.1f} s, {mark}: {t.detail}")
    finally:
        if not result_task.done():
            result_task.cancel()
        t.done.set()


def _summary(tracked: Sequence[Tracked]) -> list[str]:
    rows = [
        (
            t.move.vm,
            f"{t.move.source} -> {t.move.destination}",
            t.outcome or "interrupted",
            "yes" if t.as_expected else "NO",
            f"{t.seconds:.1f} s",
            str(t.attempts),
        )
        for t in tracked
    ]
    headers = ("VM", "ROUTE", "OUTCOME", "EXPECTED", "DURATION", "MOVE ATTEMPTS")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


async def run_campaign(client: Client, lab: Lab, task_queue: str, stop: asyncio.Event) -> list[Tracked]:
    tracked: list[Tracked] = []
    for move in MOVES:
        if move.fail_at_percent is not None:
            lab.inject_fault("fail_move_at", vm=move.vm, percent=move.fail_at_percent, action="reset")
        request = MigrateVmInput(
            vm=move.vm,
            source=move.source,
            destination=move.destination,
            policy=MigrationPolicy(delegation=DelegationPolicy.SKIP, restore_ha_on_destination=move.restore_ha),
            campaign=CAMPAIGN,
        )
        handle, _ = await start_migration(client, request, task_queue=task_queue)
        say(f"  {_label(move):<22} started {handle.id}: {move.story}")
        tracked.append(Tracked(move, handle, time.monotonic()))
    watchers = [asyncio.ensure_future(_watch(client, t)) for t in tracked]
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    everyone: asyncio.Future[Any] = asyncio.gather(*watchers)
    try:
        await asyncio.wait([stopper, everyone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        for watcher in watchers:
            watcher.cancel()
    return tracked


async def run_demo(workdir: Path, *, time_scale: float, keep_running: bool) -> int:
    from worker import Settings, connect_client, run_worker

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "demo.log"
    # The worker and the SDK log every failed activity attempt with its traceback (the retried move does fail
    # once, on purpose): to a file, so the screen shows the campaign.
    handler = logging.FileHandler(log_file, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    server: DevServer | None = None
    lab: Lab | None = None
    worker_task: asyncio.Task[None] | None = None
    try:
        say("snlm demo: shared-nothing live migration as durable Temporal workflows, on a simulated Hyper-V lab")
        try:
            server = await start_dev_server(workdir / "temporal.db")
        except DevServerError as error:
            say(f"error: {error}")
            return 1
        say(f"  Temporal UI    {server.ui_url}   (server {server.target}, history in {server.database})")
        lab = await asyncio.to_thread(start_lab, workdir, time_scale)
        say(
            f"  lab            {len(lab.endpoints)} simulated Hyper-V hosts on 127.0.0.1, time x{time_scale:g}; "
            f"inventory {lab.inventory_path}"
        )
        say("  delegation     policy 'skip' against the lab's own directory (no Active Directory here): it holds")
        say("                 HV-S2<->HV-S4 and HV-S1<->HV-S2; the demo added HV-W2<->HV-S4 for the clustered move")
        settings = Settings(
            temporal_address=server.target,
            temporal_namespace="default",
            inventory=lab.inventory_path,
            delegation_policy=DelegationPolicy.SKIP,
            move_poll_seconds=0.5,
        )
        client = await connect_client(settings)
        leftovers = await _terminate_leftovers(client)
        if leftovers:
            say(
                f"  note           ended {leftovers} workflow(s) an earlier demo left running (host slot keepers, "
                "interrupted moves): this run's lab is fresh"
            )
        worker_task = asyncio.ensure_future(run_worker(settings, stop=stop, client=client))
        say(f"  worker         in-process, task queue {settings.task_queue}; its log in {log_file}")
        say(f"  try            TEMPORAL_ADDRESS={server.target} snlm status web07@HV-S2")
        say()
        say(f"campaign '{CAMPAIGN}': {len(MOVES)} VMs at once")
        tracked = await run_campaign(client, lab, settings.task_queue, stop)
        say()
        say("summary")
        for line in _summary(tracked):
            say(line)
        interrupted = stop.is_set()
        ok = not interrupted and all(t.as_expected for t in tracked)
        say()
        say("every VM ended as expected" if ok else "some VMs did not end as expected" if not interrupted else "")
        if keep_running and not interrupted:
            say(f"still running: the UI at {server.ui_url}, the lab and the worker. Ctrl-C stops them.")
            await stop.wait()
        if interrupted:
            return EXIT_INTERRUPTED
        return 0 if ok else 1
    finally:
        stop.set()
        if worker_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(worker_task, timeout=40)
        if lab is not None:
            await asyncio.to_thread(lab.stop)
        if server is not None:
            await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        say("stopped: worker, lab and Temporal dev server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m starter.demo",
        description="Start a Temporal dev server, a lab and a worker, and run a small watched campaign.",
    )
    parser.add_argument("--keep-running", action="store_true", help="after the campaign, wait for Ctrl-C")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        metavar="N",
        help=f"simulated seconds per real second (default {DEFAULT_TIME_SCALE:g})",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default {DEFAULT_WORKDIR}")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.time_scale <= 0:
        build_parser().error("--time-scale must be greater than 0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        code = asyncio.run(run_demo(args.workdir, time_scale=args.time_scale, keep_running=args.keep_running))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
