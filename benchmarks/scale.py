"""A campaign of 10,000 VMs: what the engine costs when the moves themselves cost nothing.

    .venv/bin/python -m benchmarks.scale [--quick] [--vms 10000] [--hosts 100] [--time-scale 10]

Starts a Temporal dev server (in memory, snlm's settings), a lab of `--hosts` hosts holding `--vms` tiny VMs
(`benchmarks/scenarios.py` `tiny_estate`: 256 MiB of memory, a 256 MiB VHDX; with the lab's set-up and switch-over
shortened to half a second, a move takes under 2 simulated seconds, about 0.15 s of wall time at the default
scale) in its own process, snlm's worker in its own process (`python worker.py`, its defaults, delegation `skip`)
and a bare Temporal worker (`benchmarks/bare.py`).
Then:

1. The campaign: every VM from host k to host k+1, one wave, the planner, without the campaign's preflight
   (`check: False`), started as `snlm campaign start` starts one (the task queue as the slot book). Measured: the
   wall time from the first move's start to the last move's end, moves per second, the time from the start to
   the first move, the campaign's runs (it continues as new) and the largest history of any of them (the
   `progress` query's `history_events` while it runs, the servers' history lengths after), the slot book's runs
   and history, how long the `progress` and `moves` queries take, the peak per-host concurrency in the lab's truth
   against each host's limit (an overrun is a bug: it must be 0), and what the worker logged that a person should
   see (a deadlock warning, a payload over its limit, a failed workflow task).
2. The machine's ceiling: as many bare workflows as moves, each running as many no-op activities as a move ran,
   started at once on the same server; the ratio of snlm's moves per second to bare workflows per second.
3. The preflight's cost: the VMs moved back (host k+1 to k) by a campaign that preflights every move first
   (`check: True`), up to its first move; the time to the first move beside the one without the check, then the
   campaign is cancelled (the moves in flight end first).
4. Where the time went: the lab's start-up and the time one `truth` read takes at this size; the CPU seconds per
   move of the worker, the lab and the dev server; the peak resident set of every process.

If the lab cannot hold `--vms` in reasonable time (its start-up past `--lab-start-deadline`), the benchmark says
so and how far it got; `--vms` smaller finds the largest size that works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from benchmarks.bare import BARE_WORKFLOW
from benchmarks.harness import (
    BenchError,
    JobLog,
    LabProcess,
    Placement,
    Process,
    TaskTrouble,
    median,
    peak_per_host,
    percentile,
    placement,
    run_lengths,
    runs_trouble,
    save_histories,
    self_peak_rss_mib,
    settle,
    start_bare_worker,
    start_dev_server,
    start_lab,
    start_snlm_worker,
    stop_all,
    stop_cleanly_on_signals,
    timeline,
    verdict,
)
from benchmarks.replay_bench import load_history, new_replayer, replay
from benchmarks.scenarios import Scenario, ScenarioVm, tiny_estate
from lab.model.migration import JOB_RETENTION_SECONDS
from workflows.contracts import (
    CAMPAIGN_TASK_TIMEOUT,
    CampaignCommand,
    CampaignMove,
    CampaignPhase,
    CampaignProgress,
    DelegationPolicy,
    MigrationPolicy,
    MoveRecord,
    MovesPage,
    MovesQuery,
    MoveState,
    Scheduler,
    campaign_input,
    campaign_workflow_id,
    migration_slots_workflow_id,
)

CAMPAIGN_WORKFLOW = "Campaign"
BARE_QUEUE = "scale-bare"
TARGET_RATIO = 0.5
# Every run's history (each campaign run, each run of the slot book) stays under this for any plan size; the server
# warns at 10,240 events.
RUN_EVENTS_BOUND = 10_000
# Lines of the worker's log that say something went wrong inside Temporal's machinery.
_WORRYING = re.compile(
    r"deadlock|TMPRL\d+|size limit|exceeds|too large|Failed activation|workflow task fail|panicked|Traceback",
    re.IGNORECASE,
)


@dataclass
class CampaignRun:
    """One campaign and what it showed."""

    name: str
    moves: int
    started_at: float = math.nan  # wall, client side: when start_workflow returned
    first_move: float = math.nan  # wall seconds from the start to the first move's start
    first_to_last: float = math.nan  # wall seconds from the first move's start to the last move's end
    # A campaign stopped before its end: wall seconds from the first move's start to the last end seen.
    until_stopped: float = math.nan
    finished: bool = False
    moved: int = 0
    failed: int = 0
    first_error: str = ""
    runs: int = 1
    max_history_seen: int = 0  # the `progress` query's history_events, largest seen
    run_lengths: list[int] = field(default_factory=list)
    slot_book_lengths: list[int] = field(default_factory=list)
    slot_book_trouble: TaskTrouble = field(default_factory=TaskTrouble)
    campaign_trouble: TaskTrouble = field(default_factory=TaskTrouble)
    progress_seconds: list[float] = field(default_factory=list)
    # Queries that got no answer (the 60 s RPC timeout, or an error), with how long each waited: a latency figure
    # made of the answered ones alone would hide the worst of them.
    progress_failures: list[tuple[float, str]] = field(default_factory=list)
    moves_query_seconds: float = math.nan
    activities_per_move: float = math.nan
    events_per_move: float = math.nan
    check_seconds: float = math.nan
    note: str = ""
    # Per campaign run: its events, the wall seconds of its full replay in this process, and a replay failure.
    replays: list[tuple[int, float, str]] = field(default_factory=list)
    placement: Placement | None = None
    settled: bool = True


# -- the campaign ---------------------------------------------------------------------------------------------------


async def _progress(handle: WorkflowHandle[Any, Any], run: CampaignRun) -> CampaignProgress | None:
    began = time.perf_counter()
    try:
        progress: CampaignProgress = await handle.query(
            "progress", result_type=CampaignProgress, rpc_timeout=timedelta(seconds=60)
        )
    except Exception as error:
        run.progress_failures.append((time.perf_counter() - began, type(error).__name__))
        return None
    run.progress_seconds.append(time.perf_counter() - began)
    run.max_history_seen = max(run.max_history_seen, progress.history_events)
    run.runs = max(run.runs, progress.run)
    return progress


async def _records(handle: WorkflowHandle[Any, Any], states: Sequence[MoveState] = ()) -> list[MoveRecord]:
    records: list[MoveRecord] = []
    offset = 0
    while True:
        page: MovesPage = await handle.query(
            "moves",
            MovesQuery(offset=offset, limit=2000, states=tuple(states)),
            result_type=MovesPage,
            rpc_timeout=timedelta(seconds=120),
        )
        records.extend(page.records)
        offset += len(page.records)
        if not page.records or offset >= page.total:
            return records


def _plan(scenario: Scenario, name: str, task_queue: str, *, check: bool) -> Any:
    policy = MigrationPolicy(delegation=DelegationPolicy.SKIP, slot_book=task_queue)
    plan = scenario.plan(Scheduler.PLANNER, policy=policy, name=name)
    return replace(campaign_input(plan, task_queue=task_queue, check=check), linger_seconds=3600.0)


async def run_campaign(
    client: Client,
    worker: Process,
    scenario: Scenario,
    name: str,
    task_queue: str,
    args: argparse.Namespace,
    lab: LabProcess,
) -> CampaignRun:
    """The whole campaign, without the preflight; closed at the end, terminated (with its moves) at the deadline or
    when no move ended for `args.stall_seconds`; then every VM's place in the lab's truth against its record."""
    run = CampaignRun(name, len(scenario.vms))
    request = _plan(scenario, name, task_queue, check=False)
    if args.history_limit:
        request = replace(request, history_limit=args.history_limit)
    began = time.time()
    handle = await client.start_workflow(
        CAMPAIGN_WORKFLOW,
        request,
        id=campaign_workflow_id(name),
        task_queue=task_queue,
        task_timeout=CAMPAIGN_TASK_TIMEOUT,
    )
    run.started_at = began
    last_report = time.monotonic()
    ended, last_change = -1, time.monotonic()
    while time.time() - began < args.deadline:
        progress = await _progress(handle, run)
        if progress is not None:
            if progress.phase in (CampaignPhase.ENDED, CampaignPhase.CLOSED):
                run.finished = True
                break
            counts = progress.counts
            done = counts.moved + counts.failed + counts.already_there
            if done != ended:
                ended, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > args.stall_seconds:
                run.note = f"stalled: no move ended for {args.stall_seconds:.0f} s (run {progress.run})"
                break
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                print(
                    f"    {time.time() - began:6.0f} s: {counts.moved} moved, {counts.running} running, "
                    f"{counts.failed} failed; run {progress.run}, {progress.history_events} events; worker "
                    f"{worker.peak_rss_mib():.0f} MiB at most so far",
                    flush=True,
                )
        if not worker.alive():
            raise BenchError(f"the worker exited with {worker.popen.returncode}:\n{worker.tail()}")
        await asyncio.sleep(2.0)
    queried = time.perf_counter()
    records = await _records(handle)
    run.moves_query_seconds = time.perf_counter() - queried
    _tally(run, records)
    if not run.finished:
        run.note = run.note or f"stopped at the {args.deadline:.0f} s deadline"
        await _terminate(client, handle, records)
    else:
        with contextlib.suppress(Exception):
            await handle.execute_update("close", CampaignCommand(by="scale benchmark"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), timeout=60)
    # A move stopped at the deadline finishes on the hosts: its VM is then on one host or the other, never both.
    run.settled = await asyncio.to_thread(settle, lab)
    run.placement = placement(await asyncio.to_thread(lab.truth), records)
    run.slot_book_lengths = await run_lengths(client, migration_slots_workflow_id(task_queue))
    run.slot_book_trouble = await runs_trouble(client, migration_slots_workflow_id(task_queue))
    run.campaign_trouble = await runs_trouble(client, campaign_workflow_id(name))
    saved = await save_histories(client, campaign_workflow_id(name), args.save_histories)
    replayer = new_replayer()
    for path in saved:
        history = load_history(path)
        seconds, _, failure = await replay(replayer, history)
        run.replays.append((len(history.events), seconds, failure))
        run.run_lengths.append(len(history.events))
    await _sample_moves(client, run, records)
    return run


def _tally(run: CampaignRun, records: Sequence[MoveRecord]) -> None:
    starts = [r.started for r in records if r.started]
    ends = [r.ended for r in records if r.ended]
    run.moved = sum(1 for r in records if r.state in (MoveState.MOVED, MoveState.ALREADY_THERE))
    failed = [r for r in records if r.state in (MoveState.FAILED, MoveState.BLOCKED, MoveState.CANCELLED)]
    run.failed = len(failed)
    if failed:
        run.first_error = f"{failed[0].vm}: {failed[0].error}"[:300]
    if starts:
        run.first_move = min(starts) - run.started_at
    if starts and ends:
        if run.finished:
            run.first_to_last = max(ends) - min(starts)
        else:
            run.until_stopped = max(ends) - min(starts)


async def _terminate(client: Client, handle: WorkflowHandle[Any, Any], records: Sequence[MoveRecord]) -> None:
    with contextlib.suppress(Exception):
        await handle.terminate(reason="benchmark deadline")
    for record in records:
        if record.state == MoveState.RUNNING:
            key = CampaignMove(record.vm, record.source, record.destination).key
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(key).terminate(reason="benchmark deadline")


async def _sample_moves(client: Client, run: CampaignRun, records: Sequence[MoveRecord], count: int = 20) -> None:
    """Activities and history events of a few moves (spread over the campaign), from their histories."""
    moved = [r for r in records if r.state == MoveState.MOVED]
    if not moved:
        return
    step = max(1, len(moved) // count)
    lines = []
    for record in moved[::step][:count]:
        key = CampaignMove(record.vm, record.source, record.destination).key
        with contextlib.suppress(Exception):
            history = await client.get_workflow_handle(key).fetch_history()
            lines.append(timeline(list(history.events)))
    if lines:
        run.activities_per_move = median([float(line.activities) for line in lines])
        run.events_per_move = median([float(line.events) for line in lines])


async def first_move_with_check(
    client: Client, scenario: Scenario, name: str, task_queue: str, deadline: float
) -> CampaignRun:
    """The campaign with its preflight of every move, up to its first move, then cancelled."""
    run = CampaignRun(name, len(scenario.vms))
    request = _plan(scenario, name, task_queue, check=True)
    began = time.time()
    handle = await client.start_workflow(
        CAMPAIGN_WORKFLOW,
        request,
        id=campaign_workflow_id(name),
        task_queue=task_queue,
        task_timeout=CAMPAIGN_TASK_TIMEOUT,
    )
    run.started_at = began
    checked_at = math.nan
    while time.time() - began < deadline:
        progress = await _progress(handle, run)
        if progress is not None:
            if progress.phase != CampaignPhase.CHECKING and math.isnan(checked_at):
                checked_at = time.time()
            if progress.counts.running or progress.counts.moved or progress.counts.failed:
                break
        await asyncio.sleep(0.5)
    records = await _records(handle, (MoveState.RUNNING, MoveState.MOVED, MoveState.FAILED))
    starts = [r.started for r in records if r.started]
    if starts:
        run.first_move = min(starts) - began
        run.finished = True
    else:
        run.note = f"no move started within {deadline:.0f} s"
    run.check_seconds = checked_at - began
    blocked = await _records(handle, (MoveState.BLOCKED,))
    if blocked:
        run.failed = len(blocked)
        run.first_error = f"{blocked[0].vm}: {blocked[0].error}"[:300]
    try:
        await asyncio.wait_for(
            handle.execute_update("cancel", CampaignCommand(by="scale benchmark", reason="measured")), timeout=300
        )
    except Exception:
        await _terminate(client, handle, await _records(handle, (MoveState.RUNNING,)))
    run.run_lengths = await run_lengths(client, campaign_workflow_id(name))
    return run


def moved_back(scenario: Scenario) -> Scenario:
    """The same VMs from where the campaign put them back to where they were."""
    back = tuple(
        ScenarioVm(vm.name, vm.destination, vm.source, vm.memory_gib, vm.disks_gib, vm.dirty_mib_per_second)
        for vm in scenario.vms
    )
    return replace(scenario, vms=back)


# -- the ceiling ----------------------------------------------------------------------------------------------------


_RESULT_WAITS = 100


async def bare(client: Client, count: int, activities: int, deadline: float) -> float:
    """Seconds for `count` bare workflows of `activities` no-op activities each, started at once (in batches of
    starts, so the client does not hold thousands of calls open)."""
    stamp = time.time_ns()
    began = time.perf_counter()
    handles: list[WorkflowHandle[Any, Any]] = []
    for first in range(0, count, 500):
        handles += await asyncio.gather(
            *(
                client.start_workflow(BARE_WORKFLOW, activities, id=f"bare-{stamp}-{i}", task_queue=BARE_QUEUE)
                for i in range(first, min(count, first + 500))
            )
        )
    # The dev server refuses more than a few hundred long polls at once in a namespace ("namespace concurrent poller
    # limit exceeded"): 10,000 result() calls at once failed. The workflows end in about the order they started, so
    # a bounded number of waits at a time sees the last end as soon as all of them do.
    waits = asyncio.Semaphore(_RESULT_WAITS)

    async def result(handle: WorkflowHandle[Any, Any]) -> Any:
        async with waits:
            return await handle.result()

    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(result(h) for h in handles), return_exceptions=True),
            timeout=max(1.0, deadline - (time.perf_counter() - began)),
        )
    except TimeoutError:
        for handle in handles:
            with contextlib.suppress(Exception):
                await handle.terminate(reason="benchmark deadline")
        raise
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise BenchError(f"{len(failed)} bare workflows failed: {failed[0]}")
    return time.perf_counter() - began


# -- the lab -------------------------------------------------------------------------------------------------------


class SparseJobLog(JobLog):
    """The lab's jobs, read a third of the job retention apart: no more often than it must be to see every job,
    since every read (of the jobs only) takes the world's lock from the moves being measured."""

    def interval(self) -> float:
        return max(0.5, JOB_RETENTION_SECONDS / self.time_scale / 3)


@dataclass
class LabFigures:
    start_seconds: float = math.nan
    truth_seconds: float = math.nan
    truth_bytes: int = 0


def start_estate(
    scenario: Scenario, workdir: Path, time_scale: float, deadline: float
) -> tuple[LabProcess, LabFigures]:
    figures = LabFigures()
    topology = workdir / "estate.yaml"
    raw = scenario.topology(time_scale=time_scale)
    # Near-instant moves: the lab's fixed set-up and switch-over shortened too (its bytes are a few hundred MiB).
    raw["lab"]["transfer"] = {"setup_seconds": 0.5, "switchover_seconds": 0.5}
    topology.write_text(yaml.safe_dump(raw), encoding="utf-8")
    began = time.perf_counter()
    lab = start_lab(topology, workdir / "lab", time_scale=time_scale, deadline_seconds=deadline)
    figures.start_seconds = time.perf_counter() - began
    began = time.perf_counter()
    truth = lab.truth()
    figures.truth_seconds = time.perf_counter() - began
    figures.truth_bytes = len(json.dumps(truth))
    return lab, figures


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UUID = re.compile(r"run_id\W+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_CODE = re.compile(r"\[(TMPRL\d+)\]")


@dataclass
class LogFindings:
    """What the worker logged that a person should see: Temporal's warnings by code, the runs they name, and the
    frames of the engine's own workflow code in the tracebacks (where a workflow task spent its time)."""

    codes: dict[str, int] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    frames: dict[str, int] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)


def read_findings(process: Process) -> LogFindings:
    findings = LogFindings()
    with contextlib.suppress(OSError):
        for raw in process.log_path.read_text(errors="replace").splitlines():
            line = _ANSI.sub("", raw)
            for code in _CODE.findall(line):
                findings.codes[code] = findings.codes.get(code, 0) + 1
            for run_id in _UUID.findall(line):
                if run_id not in findings.run_ids:
                    findings.run_ids.append(run_id)
            stripped = line.strip()
            if stripped.startswith("File ") and ("/workflows/" in stripped or "/activities/" in stripped):
                frame = stripped.split("/work/main/")[-1] if "/work/main/" in stripped else stripped
                findings.frames[frame] = findings.frames.get(frame, 0) + 1
            elif _WORRYING.search(line) and not _CODE.search(line) and "Traceback" not in line:
                findings.other.append(stripped[:200])
    return findings


async def name_runs(client: Client, run_ids: Sequence[str]) -> list[str]:
    """The workflow type and id of each run (from the server's visibility)."""
    named: list[str] = []
    for run_id in run_ids[:10]:
        found = f"{run_id}: not found"
        with contextlib.suppress(Exception):
            async for execution in client.list_workflows(f"RunId = '{run_id}'"):
                found = f"{execution.workflow_type} {execution.id} (run {run_id[:8]})"
        named.append(found)
    return named


# -- the report ----------------------------------------------------------------------------------------------------


def _s(value: float, pattern: str = "{:8.1f} s") -> str:
    return "     n/a" if value != value else pattern.format(value)


def print_report(
    args: argparse.Namespace,
    lab_figures: LabFigures,
    run: CampaignRun,
    checked: CampaignRun | None,
    bare_seconds: float | None,
    log: JobLog,
    processes: dict[str, Process],
    cpu: dict[str, float],
    findings: LogFindings,
    named: Sequence[str],
) -> None:
    print(
        f"\nscale: {args.vms} VMs over {args.hosts} hosts, lab time scale {args.time_scale:g}, {os.cpu_count()} cores"
    )
    print(f"  lab start-up (spawn to ready)       : {_s(lab_figures.start_seconds)}")
    print(
        f"  one truth read of the whole lab     : {_s(lab_figures.truth_seconds, '{:8.2f} s')} "
        f"({lab_figures.truth_bytes / 2**20:.1f} MiB of JSON)"
    )
    print("  campaign without the preflight (check: False)")
    print(
        f"    moves ended as planned            : {run.moved} of {run.moves}"
        + (f"; {run.failed} failed, first: {run.first_error}" if run.failed else "")
        + (f"; {run.note}" if run.note else "")
    )
    print(f"    start to the first move           : {_s(run.first_move, '{:8.2f} s')}")
    print(f"    first move's start to last's end  : {_s(run.first_to_last)}")
    span, label = run.first_to_last, "moves per second                  "
    if math.isnan(span):
        # Stopped before its end: the rate of the moves that ended, over the time they took.
        span, label = run.until_stopped, "moves per second (until stopped)  "
    rate = run.moved / span if span == span and span else math.nan
    print(f"    {label}: {_s(rate, '{:8.2f}  ')}")
    if bare_seconds:
        bare_rate = run.moves / bare_seconds
        ratio = rate / bare_rate
        print(
            f"    bare Temporal ({run.activities_per_move:.0f} no-op activities per workflow, as many workflows): "
            f"{bare_seconds:.1f} s = {bare_rate:.2f} workflows/s; ratio snlm / bare {ratio:.2f} "
            f"(target >= {TARGET_RATIO} {verdict(ratio, TARGET_RATIO, at_least=True)})"
        )
    else:
        print("    bare Temporal                     : n/a")
    print(
        f"    campaign runs (continue-as-new)   : {len(run.run_lengths) or run.runs}; largest history "
        f"{max(run.run_lengths, default=run.max_history_seen)} events (largest seen by progress: "
        f"{run.max_history_seen}); all runs {run.run_lengths}; continue-as-new refused "
        f"{run.campaign_trouble.refused} times, workflow tasks timed out {run.campaign_trouble.timed_out}"
    )
    if run.placement is not None:
        print(f"    where every VM is (lab truth)     : {run.placement.summary()}")
        if not run.settled:
            print("      (some host jobs still ran 120 s after the campaign stopped: their VMs were read mid-move)")
    if run.replays:
        shown = ", ".join(f"{events} events {seconds:.2f} s" for events, seconds, _ in run.replays)
        print(f"    full replay of each run           : {shown} (one per rejected continue-as-new)")
        for number, (_, _, failure) in enumerate(run.replays, start=1):
            if failure:
                print(f"      run {number} did not replay: {failure[:300]}")
    print(
        f"    slot book runs                    : {len(run.slot_book_lengths)}, largest history "
        f"{max(run.slot_book_lengths, default=0)} events (every run under {RUN_EVENTS_BOUND:,}); "
        f"continue-as-new refused {run.slot_book_trouble.refused} times, workflow tasks timed out "
        f"{run.slot_book_trouble.timed_out}"
    )
    print(
        f"    per move (median of 20)           : {run.activities_per_move:.0f} activities, "
        f"{run.events_per_move:.0f} history events"
    )
    queries = run.progress_seconds
    print(
        f"    progress query                    : median {median(queries) * 1000:6.0f} ms, p90 "
        f"{percentile(queries, 0.9) * 1000:6.0f} ms, max {max(queries, default=math.nan) * 1000:6.0f} ms "
        f"({len(queries)} answered)"
    )
    if run.progress_failures:
        kinds = sorted({kind for _, kind in run.progress_failures})
        print(
            f"    progress queries unanswered       : {len(run.progress_failures)}, the longest after "
            f"{max(wait for wait, _ in run.progress_failures):.0f} s ({', '.join(kinds)})"
        )
    print(f"    moves query (all records, pages)  : {_s(run.moves_query_seconds, '{:8.2f} s')}")
    peaks = peak_per_host(log.jobs.values())
    over = {h: p for h, p in peaks.items() if p > log.limits.get(h, 2)}
    seen = len(log.jobs)
    print(
        f"    slot overruns (lab truth)         : {len(over)} host(s) above their limit"
        + (f": {', '.join(f'{h} {p}' for h, p in sorted(over.items())[:5])}" if over else " (target 0)")
        + f"; peak {max(peaks.values(), default=0)} per host; {seen} host jobs seen for {run.moved} moves"
    )
    if checked is not None:
        print("  campaign with the preflight (check: True), the VMs moved back, up to its first move")
        print(f"    the check                         : {_s(checked.check_seconds)}")
        print(
            f"    start to the first move           : {_s(checked.first_move, '{:8.2f} s')}"
            + (f"; {checked.note}" if checked.note else "")
            + (f"; {checked.failed} blocked, first: {checked.first_error}" if checked.failed else "")
        )
    print("  where the time went (CPU seconds during the campaign without the preflight, per move)")
    for name, seconds in cpu.items():
        per = seconds / run.moved if run.moved else math.nan
        print(f"    {name:34s}: {seconds:8.1f} s = {per * 1000:6.1f} ms per move")
    print("  peak resident set (MiB)")
    for name, process in processes.items():
        print(f"    {name:34s}: {process.peak_rss_mib():8.1f}")
    print(f"    {'this process (client)':34s}: {self_peak_rss_mib():8.1f}")
    codes = ", ".join(f"{code} x{count}" for code, count in sorted(findings.codes.items())) or "none"
    print(f"  the worker's log: Temporal warnings {codes}")
    for name in named:
        print(f"    in {name}")
    for frame, count in sorted(findings.frames.items(), key=lambda item: -item[1])[:8]:
        print(f"    x{count} {frame}")
    for line in findings.other[:5]:
        print(f"    {line}")


async def run_all(args: argparse.Namespace) -> int:
    processes: dict[str, Process] = {}
    stamp = f"{int(time.time()) % 100000:05d}"
    task_queue = f"scale-{stamp}"
    scenario = tiny_estate(args.hosts, args.vms)
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="snlm-scale-")))
        args.save_histories = args.save_histories or workdir / "histories"
        dev, client = await start_dev_server(workdir)
        processes["dev server"] = dev.process
        lab: LabProcess | None = None
        stop = asyncio.Event()
        poller: asyncio.Task[None] | None = None
        try:
            print(f"scale: starting a lab of {args.hosts} hosts and {args.vms} VMs ...", flush=True)
            try:
                started, lab_figures = await asyncio.to_thread(
                    start_estate, scenario, workdir, args.time_scale, args.lab_start_deadline
                )
            except BenchError as error:
                raise BenchError(
                    f"the lab could not hold {args.vms} VMs on {args.hosts} hosts within "
                    f"{args.lab_start_deadline:.0f} s ({error}); try a smaller --vms"
                ) from error
            lab = started
            processes["lab"] = started.process
            print(
                f"  lab ready in {lab_figures.start_seconds:.1f} s; one truth read {lab_figures.truth_seconds:.2f} s",
                flush=True,
            )
            worker = await start_snlm_worker(
                client, dev, started.inventory, workdir / "worker.log", task_queue=task_queue
            )
            processes["snlm worker"] = worker
            bare_worker = await start_bare_worker(client, dev, workdir / "bare-worker.log", task_queue=BARE_QUEUE)
            processes["bare worker"] = bare_worker
            log = SparseJobLog(started)
            poller = asyncio.create_task(log.run(stop))
            cpu_before = {name: p.cpu_seconds() for name, p in processes.items()}
            print(f"  campaign of {args.vms} moves (check: False) ...", flush=True)
            run = await run_campaign(client, worker, scenario, f"scale-{stamp}", task_queue, args, started)
            cpu = {
                name: processes[name].cpu_seconds() - cpu_before[name] for name in ("snlm worker", "lab", "dev server")
            }
            bare_seconds: float | None = None
            activities = round(run.activities_per_move) if run.activities_per_move == run.activities_per_move else 0
            if activities:
                print(f"  bare Temporal: {args.vms} workflows of {activities} no-op activities ...", flush=True)
                try:
                    bare_seconds = await bare(client, args.vms, activities, args.deadline)
                except (BenchError, TimeoutError) as error:
                    print(f"    bare Temporal could not finish: {error or 'deadline'}", flush=True)
            bare_worker.stop()
            checked: CampaignRun | None = None
            if args.check and run.finished:
                print("  campaign with the preflight (check: True), up to its first move ...", flush=True)
                checked = await first_move_with_check(
                    client, moved_back(scenario), f"scale-check-{stamp}", task_queue, args.deadline
                )
            stop.set()
            await poller
            findings = read_findings(worker)
            named = await name_runs(client, findings.run_ids)
            print_report(args, lab_figures, run, checked, bare_seconds, log, processes, cpu, findings, named)
            return 0 if run.moved and (run.placement is None or run.placement.sound) else 1
        finally:
            stop.set()
            if poller is not None and not poller.done():
                poller.cancel()
                with contextlib.suppress(BaseException):
                    await poller
            for name in ("bare worker", "snlm worker"):
                if name in processes:
                    processes[name].stop()
            if lab is not None:
                lab.stop()
            dev.process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 VMs over 20 hosts")
    parser.add_argument("--vms", type=int, help="VMs to move (default 10000, quick 1000)")
    parser.add_argument("--hosts", type=int, help="hosts (default 100, quick 20)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=10.0,
        help="the lab's time scale (default 10: a move takes about 0.15 s of wall time, and a finished job stays in "
        "the lab's truth 30 s, so reading the truth of 10,000 VMs every 10 s sees every job)",
    )
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the run with the preflight")
    parser.add_argument("--deadline", type=float, help="seconds each part may take (default 4 h, quick 1 h)")
    parser.add_argument(
        "--history-limit",
        type=int,
        help="continue the campaign as new past this many events (default: the contract's; a smaller one makes it "
        "continue as new with many moves in flight)",
    )
    parser.add_argument(
        "--stall-seconds", type=float, default=600.0, help="stop when no move ended for this long (default 600)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temporary folder, removed)")
    parser.add_argument(
        "--save-histories",
        type=Path,
        metavar="DIR",
        help="keep every run of the campaign's history in DIR as JSON (default: the work folder's `histories`); "
        "`python -m benchmarks.replay_bench DIR` replays them again",
    )
    parser.add_argument(
        "--lab-start-deadline", type=float, default=900.0, help="seconds the lab may take to start (default 900)"
    )
    args = parser.parse_args()
    stop_cleanly_on_signals()
    args.vms = args.vms or (1000 if args.quick else 10_000)
    args.hosts = args.hosts or (20 if args.quick else 100)
    args.deadline = args.deadline or (3600.0 if args.quick else 4 * 3600.0)
    try:
        status = asyncio.run(run_all(args))
    except BenchError as error:
        print(f"scale: {error}", file=sys.stderr)
        status = 1
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        stop_all()
    # Skip the interpreter teardown that can abort under the Temporal runtime's threads (starter.cli.exit_now).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
