"""How long a campaign takes, by scheduler, against the lower bound and the forecast.

    .venv/bin/python -m benchmarks.makespan [--quick] [--seeds 20] [--scenario NAME] [--time-scale auto]

For each scenario (`benchmarks/scenarios.py`: evacuation, rolling-rebalance, hardware-refresh, destination-hotspot)
and seed, the SAME plan runs as a campaign once with each scheduler (`CampaignPlan.scheduler`: planner, fifo-source,
fifo, random), one after the other on the same Temporal dev server, each on a fresh lab of the scenario's estate in
its own process with a fresh snlm worker (`python worker.py`, delegation `skip`, its own task queue, which is also
the campaign's slot book as `snlm campaign start` sets it). A fresh lab per run is the reset: every VM is back on its
source and no job of an earlier run is in flight, whatever that run did; moving the VMs back would be a second
campaign per run, twice the time, and a run stopped at its deadline would leave VMs half-way. The order of the
schedulers turns with the seed, so a machine that slows down during a seed does not always cost the same one.

Figures, per run and per scenario:
- makespan: from the campaign's own move records (`moves` query), the first start to the last end, in the lab's
  simulated seconds (wall seconds times the lab's time scale), over the lower bound (`workflows.scheduling.
  lower_bound`, with the lab's transfer constants; the term that binds is named);
- the planner's gain over fifo-source (Forklift's rule): 1 - planner / fifo-source, per seed and median;
- the forecast error: `simulate(...)`'s makespan for the planner with snlm's model, which is what `snlm campaign
  forecast` prints before anything moves, against the measured makespan, in percent; beside it the same simulation
  with the lab's transfer constants, to tell the model's share of the error from the engine's;
- the engine's time per move: how much longer a move is in the campaign's records than its host job in the lab's
  truth (preflight, settings, slots, verify), in wall seconds; the lab's own makespan (first job asked to last
  job ended); moves that failed; the most jobs any host ran at once against its limit.

The time scale: by default each scenario's runs share the scale at which the planner's forecast (lab constants)
takes `--run-seconds` of wall time; the engine's time per move is wall time, so it weighs more in simulated
seconds the faster the lab runs: a lower scale gives figures closer to what real hosts would show, and longer runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from benchmarks.harness import (
    BenchError,
    DevServer,
    JobLog,
    Placement,
    Process,
    activity_seconds,
    histories,
    median,
    peak_per_host,
    placement,
    self_peak_rss_mib,
    settle,
    start_dev_server,
    start_lab,
    start_snlm_worker,
    stop_all,
    stop_cleanly_on_signals,
    timeline,
    verdict,
)
from benchmarks.scenarios import GENERATORS, Scenario, draw_size, generate
from lab.model.migration import COMPRESSION_FACTOR, MAX_PRECOPY_PASSES
from lab.model.state import TransferSettings
from starter.plans import SETUP_SECONDS_MAX
from workflows.contracts import (
    CAMPAIGN_TASK_TIMEOUT,
    PREPARE_AHEAD_MAX,
    CampaignCommand,
    CampaignMove,
    CampaignPhase,
    CampaignProgress,
    DelegationPolicy,
    HostProfile,
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
from workflows.scheduling import DEFAULT_MODEL, PLANNER_RULES, TransferModel, lower_bound, simulate, with_setup

CAMPAIGN_WORKFLOW = "Campaign"
MOVE_ACTIVITY = "start_or_attach_move"
SCHEDULERS = (Scheduler.PLANNER, Scheduler.FIFO_SOURCE_CAP, Scheduler.FIFO, Scheduler.RANDOM)

# The lab's transfer constants (lab/README.md "The transfer model") in the forecast's terms. The lab moves VHDs
# over SMB at up to SMB_FRACTION of the slower adapter and memory over TCP at TCP_FRACTION, compressed; snlm's
# model has one stream cap for both. LAB_MODEL carries memory as the lab does (TCP cap, compression), and the
# disks are given to it scaled by TCP/SMB (`_lab_moves`), so a move alone takes exactly the lab's time.
TCP_FRACTION = float(TransferSettings.tcp_stream_fraction)
SMB_FRACTION = float(TransferSettings.smb_stream_fraction)
LAB_MODEL = TransferModel(
    stream_cap_fraction=TCP_FRACTION,
    setup_seconds=float(TransferSettings.setup_seconds),
    switchover_seconds=float(TransferSettings.switchover_seconds),
    max_precopy_passes=int(MAX_PRECOPY_PASSES),
    memory_compression=float(COMPRESSION_FACTOR),
)
# Every stream at the whole link: no move is slower in the lab than here, so every term of its bound holds.
FULL_LINK_MODEL = replace(LAB_MODEL, stream_cap_fraction=SMB_FRACTION)

TARGET_REBALANCE_BOUND = 1.15
TARGET_REBALANCE_GAIN = 0.28
TARGET_EVACUATION_BOUND = 1.03
TARGET_FORECAST = 0.15


# -- the bound and the forecasts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabBound:
    seconds: float
    binding: str


def _lab_moves(moves: Sequence[CampaignMove]) -> list[CampaignMove]:
    """The moves with their disks scaled so that, at LAB_MODEL's stream cap, they take the lab's SMB time."""
    return [replace(m, disk_bytes=round(m.disk_bytes * TCP_FRACTION / SMB_FRACTION)) for m in moves]


def _with_engine(model: TransferModel, engine_seconds: float) -> TransferModel:
    """The model with the engine's own time per move (simulated seconds) counted as set-up: a slot held, no
    bytes moving."""
    return replace(model, setup_seconds=model.setup_seconds + engine_seconds)


def lab_bound(
    moves: Sequence[CampaignMove], hosts: Mapping[str, HostProfile], *, engine_seconds: float = 0.0
) -> LabBound:
    """The lower bound of the lab's makespan: every term of `lower_bound` under FULL_LINK_MODEL (the real bytes,
    every stream allowed the whole link: valid for the link terms) and under LAB_MODEL with the disks scaled (each
    move's alone-time exactly the lab's, the bytes fewer: valid for the slot terms); the largest term binds. The
    lab's pre-copy stops early once a pass is under 32 MiB; the model's passes count a few MiB more per move.
    `engine_seconds` (simulated) adds the engine's time per move to every move's set-up."""
    terms: dict[str, float] = {}
    full, lab = _with_engine(FULL_LINK_MODEL, engine_seconds), _with_engine(LAB_MODEL, engine_seconds)
    for bound in (lower_bound(moves, hosts, full), lower_bound(_lab_moves(moves), hosts, lab)):
        for name, seconds in bound.terms.items():
            terms[name] = max(seconds, terms.get(name, 0.0))
    binding = max(terms, key=lambda name: terms[name])
    return LabBound(terms[binding], binding)


def forecast(
    scenario: Scenario,
    scheduler: Scheduler,
    *,
    lab_constants: bool = False,
    engine_seconds: float = 0.0,
    setup_seconds: float | None = None,
) -> float:
    """The simulated makespan of the plan: snlm's model (what `snlm campaign forecast` prints), or the campaign as
    the lab runs it: its decisions taken with snlm's model, as the Campaign workflow takes them, and its moves timed
    with the lab's constants (with the engine's time per move, simulated seconds, as more set-up). Of the two ways
    to put the lab's two stream caps in one model, the timing takes FULL_LINK_MODEL: exact for the VHDs (most of the
    bytes) however many moves share a link, a little fast for memory alone; disks scaled to the TCP cap (LAB_MODEL)
    would be exact for a move alone but move them 30 % too fast whenever two moves share a link. `setup_seconds` is
    the plan's (`--setup-seconds`): the campaign decides and forecasts with it."""
    moves = scenario.moves()
    model = with_setup(DEFAULT_MODEL, setup_seconds)
    if lab_constants:
        timing = _with_engine(FULL_LINK_MODEL, engine_seconds)
        return simulate(moves, scenario.profiles(), scheduler=scheduler, model=model, timing=timing).makespan_seconds
    return simulate(moves, scenario.profiles(), scheduler=scheduler, model=model).makespan_seconds


# -- one run -------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    scheduler: Scheduler
    finished: bool = False
    makespan: float = math.nan  # simulated seconds, from the move records
    lab_makespan: float = math.nan  # simulated seconds, first job asked to last job ended (lab truth)
    wall: float = math.nan  # real seconds, first start to last end
    moved: int = 0
    failed: int = 0
    first_error: str = ""
    engine_per_move: float = math.nan  # wall seconds a move spends in the campaign beyond its host job (median)
    campaign_forecast: float = math.nan  # the campaign's own forecast (progress), simulated seconds
    over_limit: list[str] = field(default_factory=list)
    peak: int = 0
    runs: int = 1
    note: str = ""
    # Median wall seconds per move of each part of the saga (from the moves' histories), when asked for.
    split: dict[str, float] = field(default_factory=dict)
    # Where the lab's truth has every VM at the end, against the campaign's records.
    placement: Placement | None = None

    @property
    def ok(self) -> bool:
        sound = self.placement is None or self.placement.sound
        return self.finished and self.failed == 0 and not math.isnan(self.makespan) and sound


async def _records(handle: WorkflowHandle[Any, Any]) -> list[MoveRecord]:
    records: list[MoveRecord] = []
    offset = 0
    while True:
        page: MovesPage = await handle.query(
            "moves", MovesQuery(offset=offset, limit=2000), result_type=MovesPage, rpc_timeout=timedelta(seconds=60)
        )
        records.extend(page.records)
        offset += len(page.records)
        if not page.records or offset >= page.total:
            return records


async def _progress(handle: WorkflowHandle[Any, Any]) -> CampaignProgress | None:
    try:
        progress: CampaignProgress = await handle.query(
            "progress", result_type=CampaignProgress, rpc_timeout=timedelta(seconds=20)
        )
    except Exception:
        return None
    return progress


async def _stop_campaign(client: Client, handle: WorkflowHandle[Any, Any], records: Sequence[MoveRecord]) -> None:
    """Past the deadline: the campaign and every move it left running are terminated (their children outlive it by
    design: ABANDON), so nothing of this run goes on beside the next."""
    with contextlib.suppress(Exception):
        await handle.terminate(reason="benchmark deadline")
    for record in records:
        if record.state == MoveState.RUNNING:
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(_move_key(record)).terminate(reason="benchmark deadline")


def _move_key(record: MoveRecord) -> str:
    return CampaignMove(record.vm, record.source, record.destination).key


def _job_spans(jobs: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    spans: dict[str, tuple[float, float]] = {}
    for job in jobs:
        if job.get("state") not in ("Completed", "CompletedWithWarnings"):
            continue
        if not job.get("time_submitted") or not job.get("end_time"):
            continue
        asked = datetime.fromisoformat(job["time_submitted"]).timestamp()
        ended = datetime.fromisoformat(job["end_time"]).timestamp()
        spans[job["vm_name"]] = (asked, ended)
    return spans


async def run_campaign(
    client: Client,
    dev: DevServer,
    workdir: Path,
    scenario: Scenario,
    scheduler: Scheduler,
    *,
    time_scale: float,
    deadline: float,
    label: str,
    split: bool = False,
    prepare_ahead: int | None = None,
    setup_seconds: float | None = None,
) -> RunResult:
    """One campaign of the scenario with `scheduler`, on a fresh lab and worker, bounded by `deadline` seconds;
    with `split`, where each move's time went, from the moves' histories (read before another run reuses their
    workflow ids)."""
    result = RunResult(scheduler)
    rundir = workdir / label
    rundir.mkdir(parents=True, exist_ok=True)
    topology = rundir / "topology.yaml"
    topology.write_text(yaml.safe_dump(scenario.topology(time_scale=time_scale)), encoding="utf-8")
    lab = await asyncio.to_thread(start_lab, topology, rundir / "lab", time_scale=time_scale)
    lab.process.name = f"lab ({label})"
    worker: Process | None = None
    stop = asyncio.Event()
    log = JobLog(lab)
    poller: asyncio.Task[None] | None = None
    task_queue = f"makespan-{label}"
    try:
        worker = await start_snlm_worker(
            client, dev, lab.inventory, rundir / "worker.log", task_queue=task_queue, name=f"worker ({label})"
        )
        poller = asyncio.create_task(log.run(stop))
        policy = MigrationPolicy(delegation=DelegationPolicy.SKIP, slot_book=task_queue)
        plan = replace(scenario.plan(scheduler, policy=policy, name=label), seed=scenario.seed)
        if prepare_ahead is not None:
            plan = replace(plan, prepare_ahead=prepare_ahead)
        plan = replace(plan, setup_seconds=setup_seconds)
        request = replace(campaign_input(plan, task_queue=task_queue, check=False), linger_seconds=3600.0)
        handle = await client.start_workflow(
            CAMPAIGN_WORKFLOW,
            request,
            id=campaign_workflow_id(label),
            task_queue=task_queue,
            task_timeout=CAMPAIGN_TASK_TIMEOUT,
        )
        started = time.monotonic()
        progress: CampaignProgress | None = None
        while time.monotonic() - started < deadline:
            progress = await _progress(handle)
            if progress is not None:
                if progress.forecast_makespan_seconds and math.isnan(result.campaign_forecast):
                    result.campaign_forecast = progress.forecast_makespan_seconds
                if progress.phase in (CampaignPhase.ENDED, CampaignPhase.CLOSED):
                    result.finished = True
                    break
            if not worker.alive():
                raise BenchError(f"the worker exited with {worker.popen.returncode}:\n{worker.tail()}")
            await asyncio.sleep(1.0)
        records = await _records(handle)
        result.runs = progress.run if progress is not None else 1
        if not result.finished:
            result.note = f"stopped at the {deadline:.0f} s deadline"
            await _stop_campaign(client, handle, records)
        else:
            with contextlib.suppress(Exception):
                await handle.execute_update("close", CampaignCommand(by="makespan benchmark"))
        stop.set()
        await poller
        _measure(result, records, log, time_scale)
        # A move stopped at the deadline finishes on the hosts first: its VM is then on one host, never two.
        await asyncio.to_thread(settle, lab)
        result.placement = placement(await asyncio.to_thread(lab.truth), records)
        if split and result.finished:
            result.split = await _split(client, records, log, time_scale)
    finally:
        stop.set()
        if poller is not None and not poller.done():
            poller.cancel()
            with contextlib.suppress(BaseException):
                await poller
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(migration_slots_workflow_id(task_queue)).terminate(reason="run ended")
        if worker is not None:
            worker.stop()
        lab.stop()
    return result


def _measure(result: RunResult, records: Sequence[MoveRecord], log: JobLog, time_scale: float) -> None:
    starts = [r.started for r in records if r.started]
    ends = [r.ended for r in records if r.ended]
    result.moved = sum(1 for r in records if r.state in (MoveState.MOVED, MoveState.ALREADY_THERE))
    failed = [r for r in records if r.state in (MoveState.FAILED, MoveState.BLOCKED, MoveState.CANCELLED)]
    result.failed = len(failed) + sum(1 for r in records if r.state in (MoveState.PENDING, MoveState.RUNNING))
    if failed:
        result.first_error = f"{failed[0].vm}: {failed[0].error}"[:300]
    if starts and ends and result.finished:
        result.wall = max(ends) - min(starts)
        result.makespan = result.wall * time_scale
    jobs = list(log.jobs.values())
    spans = _job_spans(jobs)
    if spans:
        result.lab_makespan = max(end for _, end in spans.values()) - min(asked for asked, _ in spans.values())
    extra = [
        (r.ended - r.started) - (spans[r.vm][1] - spans[r.vm][0]) / time_scale
        for r in records
        if r.state == MoveState.MOVED and r.started and r.ended and r.vm in spans
    ]
    result.engine_per_move = median(extra)
    peaks = peak_per_host(jobs)
    result.peak = max(peaks.values(), default=0)
    result.over_limit = sorted(h for h, p in peaks.items() if p > log.limits.get(h, 2))


async def _split(client: Client, records: Sequence[MoveRecord], log: JobLog, time_scale: float) -> dict[str, float]:
    """Median wall seconds per move: each activity of the saga (the move's beyond its host job), waiting for the
    slots, workflow tasks, and the campaign's own share (its record beyond the MigrateVm run)."""
    moved = [r for r in records if r.state == MoveState.MOVED]
    events = await histories(client, [_move_key(r) for r in moved])
    spans = _job_spans(list(log.jobs.values()))
    parts: dict[str, list[float]] = {}
    for record, history in zip(moved, events, strict=True):
        if not history:
            continue
        line = timeline(history)
        if line.turn is not None:
            # Prepared ahead: its checks and settings ran while other moves held the slots.
            parts.setdefault("prepared before its turn (no slot held)", []).append(line.turn - line.started)
        for name, seconds in activity_seconds(history, since=line.turn).items():
            total = sum(seconds)
            if name == MOVE_ACTIVITY and record.vm in spans:
                asked, ended = spans[record.vm]
                name, total = f"{MOVE_ACTIVITY} beyond the host job", total - (ended - asked) / time_scale
            parts.setdefault(name, []).append(total)
        if line.slot_wait is not None:
            parts.setdefault("waiting for both hosts' slots", []).append(line.slot_wait)
        parts.setdefault("workflow tasks", []).append(line.task_time)
        parts.setdefault("the campaign beyond the MigrateVm run", []).append(
            (record.ended - record.started) - (line.closed - (line.turn or line.started))
        )
    return {name: median(values) for name, values in parts.items()}


# -- a seed: the same plan under every scheduler ----------------------------------------------------------------


@dataclass
class SeedResult:
    scenario: Scenario
    bound: LabBound
    forecast: float  # snlm's model, planner
    forecast_lab: float  # lab constants, planner
    time_scale: float
    runs: dict[Scheduler, RunResult] = field(default_factory=dict)
    # The same with the planner run's engine time per move counted as set-up (see `with_engine`).
    engine_seconds: float = math.nan  # simulated
    bound_engine: LabBound | None = None
    forecast_engine: float = math.nan
    setup_seconds: float | None = None  # the plans' (`--setup-seconds`)

    def with_engine(self) -> None:
        """The bound and the planner's forecast (lab constants) once more, every move's set-up longer by the
        engine's median time per move in the planner's run (preflight, settings, slots, verify: the campaign holds
        the move's hosts meanwhile while no byte moves), so the schedule is judged apart from the engine."""
        planner = self.runs.get(Scheduler.PLANNER)
        if planner is None or not planner.ok or planner.engine_per_move != planner.engine_per_move:
            return
        self.engine_seconds = max(0.0, planner.engine_per_move) * self.time_scale
        moves, hosts = self.scenario.moves(), self.scenario.profiles()
        self.bound_engine = lab_bound(moves, hosts, engine_seconds=self.engine_seconds)
        self.forecast_engine = forecast(
            self.scenario,
            Scheduler.PLANNER,
            lab_constants=True,
            engine_seconds=self.engine_seconds,
            setup_seconds=self.setup_seconds,
        )

    def ratio(self, scheduler: Scheduler, *, engine: bool = False) -> float:
        run = self.runs.get(scheduler)
        bound = self.bound_engine if engine else self.bound
        if run is None or not run.ok or bound is None:
            return math.nan
        return run.makespan / bound.seconds

    def gain(self) -> float:
        planner, baseline = self.runs.get(Scheduler.PLANNER), self.runs.get(Scheduler.FIFO_SOURCE_CAP)
        if planner is None or baseline is None or not (planner.ok and baseline.ok):
            return math.nan
        return 1 - planner.makespan / baseline.makespan

    def forecast_error(self, *, lab_constants: bool = False, engine: bool = False) -> float:
        planner = self.runs.get(Scheduler.PLANNER)
        if planner is None or not planner.ok:
            return math.nan
        predicted = self.forecast_engine if engine else self.forecast_lab if lab_constants else self.forecast
        return (predicted - planner.makespan) / planner.makespan


def choose_time_scale(planned_seconds: float, run_seconds: float, given: float | None) -> float:
    """The given scale, or the one at which `planned_seconds` of simulated time take about `run_seconds`: rounded
    to two significant digits, at least 1."""
    if given:
        return given
    raw = max(1.0, planned_seconds / max(1.0, run_seconds))
    digits = 10 ** max(0, math.floor(math.log10(raw)) - 1)
    return float(max(1, round(raw / digits) * digits))


async def run_seed(
    client: Client, dev: DevServer, workdir: Path, scenario: Scenario, args: argparse.Namespace, stamp: str
) -> SeedResult:
    moves, hosts = scenario.moves(), scenario.profiles()
    setup = args.setup_seconds
    planned_lab = forecast(scenario, Scheduler.PLANNER, lab_constants=True, setup_seconds=setup)
    seed_result = SeedResult(
        scenario,
        lab_bound(moves, hosts),
        forecast(scenario, Scheduler.PLANNER, setup_seconds=setup),
        planned_lab,
        choose_time_scale(planned_lab, args.run_seconds, args.time_scale),
        setup_seconds=setup,
    )
    scale = seed_result.time_scale
    print(f"  {scenario.describe()}", flush=True)
    print(
        f"    bound {seed_result.bound.seconds:,.0f} s ({seed_result.bound.binding}); planner forecast "
        f"{seed_result.forecast:,.0f} s (snlm's model), {seed_result.forecast_lab:,.0f} s (lab constants); "
        f"time scale {scale:g}",
        flush=True,
    )
    turn = scenario.seed % len(args.schedulers)
    order = list(args.schedulers[turn:]) + list(args.schedulers[:turn])
    for scheduler in order:
        # Generous: the slowest baseline takes about twice the planner's time, and the engine adds its share.
        planned = forecast(scenario, scheduler, lab_constants=True, setup_seconds=setup) / scale
        deadline = args.deadline or max(300.0, 3.0 * planned + 120.0)
        label = f"{scenario.kind[:4]}{scenario.seed}-{scheduler.value}-{stamp}"
        try:
            run = await run_campaign(
                client,
                dev,
                workdir,
                scenario,
                scheduler,
                time_scale=scale,
                deadline=deadline,
                label=label,
                split=scheduler == Scheduler.PLANNER,
                prepare_ahead=args.prepare_ahead,
                setup_seconds=setup,
            )
        except (BenchError, OSError, RuntimeError) as error:
            run = RunResult(scheduler, note=f"could not run: {error}"[:300])
        seed_result.runs[scheduler] = run
        print(f"    {_run_line(run, seed_result)}", flush=True)
    seed_result.with_engine()
    return seed_result


def _run_line(run: RunResult, seed: SeedResult) -> str:
    text = f"{run.scheduler.value:<12s}"
    if not math.isnan(run.makespan):
        text += (
            f" makespan {run.makespan:8,.0f} s = {run.makespan / seed.bound.seconds:5.2f} x bound "
            f"(wall {run.wall:6.1f} s; lab {run.lab_makespan:8,.0f} s)"
        )
    text += f"  moved {run.moved}"
    if run.failed:
        text += f", not moved {run.failed} ({run.first_error or 'unfinished'})"
    if not math.isnan(run.engine_per_move):
        text += f"; engine {run.engine_per_move:4.2f} s/move"
    text += f"; peak {run.peak} per host" + (f", OVER on {', '.join(run.over_limit)}" if run.over_limit else "")
    if run.placement is not None and not run.placement.sound:
        text += f"; MISPLACED: {run.placement.summary()}"
    if run.runs > 1:
        text += f"; {run.runs} campaign runs"
    if run.note:
        text += f"; {run.note}"
    return text


# -- the tables ----------------------------------------------------------------------------------------------------


def _fmt(value: float, pattern: str = "{:5.2f}") -> str:
    return "  n/a" if value != value else pattern.format(value)


def _median_of(values: Sequence[float]) -> float:
    return median([v for v in values if v == v])


def print_scenario(kind: str, seeds: Sequence[SeedResult], schedulers: Sequence[Scheduler]) -> None:
    print(f"\n{kind}: makespan / lower bound by scheduler (lab's simulated seconds from the campaign's records)")
    header = f"  {'seed':>4} {'hosts':>5} {'moves':>5} {'scale':>5} {'bound s':>8}  {'binding term':<28}"
    header += "".join(f" {s.value:>11}" for s in schedulers)
    header += f" {'gain':>6} {'fc err':>7} {'fc lab':>7}"
    print(header)
    for seed in seeds:
        line = f"  {seed.scenario.seed:>4} {len(seed.scenario.hosts):>5} {len(seed.scenario.vms):>5}"
        line += f" {seed.time_scale:>5g} {seed.bound.seconds:>8,.0f}  {seed.bound.binding[:28]:<28}"
        line += "".join(f" {_fmt(seed.ratio(s), '{:11.3f}'):>11}" for s in schedulers)
        line += f" {_fmt(100 * seed.gain(), '{:5.1f}%'):>6} {_fmt(100 * seed.forecast_error(), '{:+6.1f}%'):>7}"
        line += f" {_fmt(100 * seed.forecast_error(lab_constants=True), '{:+6.1f}%'):>7}"
        print(line)
    medians = {s: _median_of([seed.ratio(s) for seed in seeds]) for s in schedulers}
    gains = [g for g in (seed.gain() for seed in seeds) if g == g]
    errors = [abs(seed.forecast_error()) for seed in seeds]
    line = f"  {'median':>4} {'':>5} {'':>5} {'':>5} {'':>8}  {'':<28}"
    line += "".join(f" {_fmt(medians[s], '{:11.3f}'):>11}" for s in schedulers)
    line += f" {_fmt(100 * median(gains), '{:5.1f}%'):>6} {_fmt(100 * _median_of(errors), '{:6.1f}%'):>7}"
    line += (
        f" {_fmt(100 * _median_of([abs(seed.forecast_error(lab_constants=True)) for seed in seeds]), '{:6.1f}%'):>7}"
    )
    print(line)
    print(
        "  (gain: 1 - planner / fifo-source; fc err: snlm's forecast of the planner against its makespan; fc lab: the"
    )
    print("  same simulation with the lab's transfer constants)")

    print("  the same judged apart from the engine: every move's set-up longer by the engine's time per move")
    header = f"  {'seed':>4} {'engine':>8} {'= sim s':>8} {'bound s':>8}  {'binding term':<28}"
    header += "".join(f" {s.value:>11}" for s in schedulers) + f" {'fc err':>7}"
    print(header)
    for seed in seeds:
        planner = seed.runs.get(Scheduler.PLANNER)
        engine = planner.engine_per_move if planner is not None else math.nan
        bound = seed.bound_engine
        line = f"  {seed.scenario.seed:>4} {_fmt(engine, '{:6.2f} s'):>8} {_fmt(seed.engine_seconds, '{:8,.0f}'):>8}"
        line += (
            f" {_fmt(bound.seconds if bound else math.nan, '{:8,.0f}'):>8}  {(bound.binding if bound else ''):<28.28}"
        )
        line += "".join(f" {_fmt(seed.ratio(s, engine=True), '{:11.3f}'):>11}" for s in schedulers)
        line += f" {_fmt(100 * seed.forecast_error(engine=True), '{:+6.1f}%'):>7}"
        print(line)
    line = f"  {'median':>4} {'':>8} {'':>8} {'':>8}  {'':<28}"
    line += "".join(
        f" {_fmt(_median_of([seed.ratio(s, engine=True) for seed in seeds]), '{:11.3f}'):>11}" for s in schedulers
    )
    line += f" {_fmt(100 * _median_of([abs(seed.forecast_error(engine=True)) for seed in seeds]), '{:6.1f}%'):>7}"
    print(line)

    splits = [seed.runs[Scheduler.PLANNER].split for seed in seeds if Scheduler.PLANNER in seed.runs]
    names = sorted({name for split in splits for name in split})
    if names:
        parts = ", ".join(f"{name} {_median_of([split.get(name, math.nan) for split in splits]):.2f}" for name in names)
        print(f"  where a planner move's engine time went (median wall s per move): {parts}")
    over = sorted({h for seed in seeds for r in seed.runs.values() for h in r.over_limit})
    unfinished = [f"{seed.scenario.seed}/{r.scheduler.value}" for seed in seeds for r in seed.runs.values() if not r.ok]
    misplaced = [
        f"{seed.scenario.seed}/{r.scheduler.value}"
        for seed in seeds
        for r in seed.runs.values()
        if r.placement is not None and not r.placement.sound
    ]
    checked = sum(1 for seed in seeds for r in seed.runs.values() if r.placement is not None)
    print(
        f"  hosts ever above their limit: {', '.join(over) if over else 'none'}; runs without a full makespan: "
        f"{', '.join(unfinished) or 'none'}; runs that left a VM off its one host (lab truth, {checked} checked): "
        f"{', '.join(misplaced) or 'none'}"
    )
    planner_ratio = medians.get(Scheduler.PLANNER, math.nan)
    targets: list[str] = []
    if kind == "rolling-rebalance":
        never_worse = all(g >= 0 for g in gains)
        targets.append(
            f"planner / bound {_fmt(planner_ratio)} (target <= {TARGET_REBALANCE_BOUND} "
            f"{verdict(planner_ratio, TARGET_REBALANCE_BOUND)})"
        )
        targets.append(
            f"gain over fifo-source {_fmt(100 * median(gains), '{:.1f}')} % (target >= "
            f"{100 * TARGET_REBALANCE_GAIN:.0f} % {verdict(median(gains), TARGET_REBALANCE_GAIN, at_least=True)})"
        )
        targets.append(f"never worse than fifo-source: {('yes' if never_worse else 'NO') if gains else 'n/a'}")
    if kind == "evacuation":
        targets.append(
            f"planner / bound {_fmt(planner_ratio)} (target <= {TARGET_EVACUATION_BOUND} "
            f"{verdict(planner_ratio, TARGET_EVACUATION_BOUND)})"
        )
    error = _median_of(errors)
    targets.append(
        f"forecast error {_fmt(100 * error, '{:.1f}')} % (target within {100 * TARGET_FORECAST:.0f} % "
        f"{verdict(error, TARGET_FORECAST)})"
    )
    print("  targets: " + "; ".join(targets))


def model_only(args: argparse.Namespace) -> int:
    """Every scenario and seed through the planner's simulation only, decided with snlm's model as a campaign
    decides and timed with the lab's transfer constants (what the forecast column "fc lab" checks against the lab):
    the same plans, bounds and schedulers as the lab runs, in seconds instead of hours, so 20 seeds per scenario fit
    in a session. The lab runs tell how far to trust it."""
    engine = args.engine_seconds
    timing = _with_engine(FULL_LINK_MODEL, engine)
    model = with_setup(DEFAULT_MODEL, args.setup_seconds)
    print(
        f"makespan (model only): {len(args.kinds)} scenario(s) x {len(args.seeds)} seed(s), "
        f"{'quick sizes' if args.quick else 'sizes drawn per seed'}; simulate() deciding with snlm's model, timed "
        "with the lab's constants"
        + (f" and {engine:g} simulated s of the engine's per move (as set-up, slots held)" if engine else "")
        + (f"; the plans give {args.setup_seconds:g} s of set-up" if args.setup_seconds is not None else "")
        + ", no lab; bounds without the engine, as the lab's runs are judged"
    )
    for kind in args.kinds:
        planner_by_seed: dict[int, float] = {}
        ratios: dict[Scheduler, list[float]] = {s: [] for s in args.schedulers}
        gains: list[float] = []
        bindings: dict[str, int] = {}
        rules: dict[str, int] = {}
        for seed in args.seeds:
            hosts, moves = draw_size(kind, seed, quick=args.quick, max_moves=args.max_moves)
            scenario = generate(kind, seed, hosts=args.hosts or hosts, moves=args.moves or moves)
            plan, profiles = scenario.moves(), scenario.profiles()
            bound = lab_bound(plan, profiles)
            term = bound.binding.split(" ", 2)[-1] if bound.binding.startswith("host ") else "one move alone"
            bindings[term] = bindings.get(term, 0) + 1
            forecasts = {
                s: simulate(
                    plan,
                    profiles,
                    scheduler=s,
                    model=model,
                    timing=timing,
                    seed=seed,
                )
                for s in args.schedulers
            }
            makespans = {s: f.makespan_seconds for s, f in forecasts.items()}
            if Scheduler.PLANNER in forecasts:
                rule = PLANNER_RULES[forecasts[Scheduler.PLANNER].rule]
                rules[rule] = rules.get(rule, 0) + 1
            for scheduler, makespan in makespans.items():
                ratios[scheduler].append(makespan / bound.seconds)
            if Scheduler.PLANNER in makespans:
                planner_by_seed[seed] = makespans[Scheduler.PLANNER] / bound.seconds
            if Scheduler.PLANNER in makespans and Scheduler.FIFO_SOURCE_CAP in makespans:
                gains.append(1 - makespans[Scheduler.PLANNER] / makespans[Scheduler.FIFO_SOURCE_CAP])
        print(f"\n{kind}: makespan / lower bound, median (worst) over {len(args.seeds)} seeds")
        print("  " + "  ".join(f"{s.value} {median(v):.3f} ({max(v):.3f})" for s, v in ratios.items()))
        if planner_by_seed:
            # The lab's `--quick` runs seed 0 alone: where it stands among the seeds says how to read that run.
            order = sorted(planner_by_seed, key=lambda seed: planner_by_seed[seed])
            worst = order[-1]
            print(
                f"  planner's worst seed {worst} ({planner_by_seed[worst]:.3f}); seed 0 "
                + (
                    f"{planner_by_seed[0]:.3f}, {order.index(0) + 1} of {len(order)} from the best"
                    if 0 in planner_by_seed
                    else "not run"
                )
            )
        if gains:
            worse = sum(1 for g in gains if g < 0)
            print(
                f"  planner's gain over fifo-source: median {100 * median(gains):.1f} %, least "
                f"{100 * min(gains):.1f} %, most {100 * max(gains):.1f} %; seeds where it is worse: {worse}"
            )
        print("  binding terms: " + ", ".join(f"{term} x{n}" for term, n in sorted(bindings.items())))
        if rules:
            chosen = ", ".join(f"{r} x{n}" for r, n in sorted(rules.items()))
            print(f"  planner's rule (as its forecast chose): {chosen}")
    return 0


async def run_all(args: argparse.Namespace) -> int:
    stamp = f"{int(time.time()) % 100000:05d}"
    results: dict[str, list[SeedResult]] = {}
    with tempfile.TemporaryDirectory(prefix="snlm-makespan-") as tmp:
        workdir = Path(tmp)
        dev, client = await start_dev_server(workdir)
        try:
            print(
                f"makespan: {len(args.kinds)} scenario(s) x {len(args.seeds)} seed(s) x {len(args.schedulers)} "
                f"schedulers, {'quick sizes' if args.quick else 'sizes drawn per seed'}, {os.cpu_count()} cores, "
                f"prepare ahead {args.prepare_ahead if args.prepare_ahead is not None else 'as planned (1)'}",
                flush=True,
            )
            for kind in args.kinds:
                print(f"\n== {kind}", flush=True)
                results[kind] = []
                for seed in args.seeds:
                    hosts, moves = draw_size(kind, seed, quick=args.quick, max_moves=args.max_moves)
                    hosts, moves = args.hosts or hosts, args.moves or moves
                    scenario = generate(kind, seed, hosts=hosts, moves=moves)
                    results[kind].append(await run_seed(client, dev, workdir, scenario, args, stamp))
        finally:
            dev.process.stop()
        for kind, seeds in results.items():
            print_scenario(kind, seeds, args.schedulers)
        print(
            f"\npeak resident set: dev server {dev.process.peak_rss_mib():.0f} MiB, "
            f"this process {self_peak_rss_mib():.0f} MiB"
        )
    ran = [r for seeds in results.values() for seed in seeds for r in seed.runs.values()]
    # Figures with gaps are still figures; only nothing at all is a benchmark that could not run.
    return 0 if any(r.ok for r in ran) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small end: 8 hosts, 100 moves, seed 0")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 per scenario (default 3, quick 1)")
    parser.add_argument("--scenario", action="append", choices=list(GENERATORS), help="only these (repeatable)")
    parser.add_argument(
        "--scheduler", action="append", choices=[s.value for s in SCHEDULERS], help="only these (repeatable)"
    )
    parser.add_argument("--hosts", type=int, help="every scenario with this many hosts (default: quick or drawn)")
    parser.add_argument("--moves", type=int, help="every scenario with this many moves (default: quick or drawn)")
    parser.add_argument(
        "--max-moves", type=int, default=300, help="the largest plan drawn when not quick (default 300, at most 1000)"
    )
    parser.add_argument("--time-scale", type=float, help="the lab's time scale (default: per scenario, see below)")
    parser.add_argument(
        "--run-seconds",
        type=float,
        help="wall seconds the planner's run should take when the time scale is chosen (default 240, quick 120)",
    )
    parser.add_argument("--deadline", type=float, help="seconds a run may take (default: 3 x its forecast + 120)")
    parser.add_argument(
        "--prepare-ahead",
        type=int,
        choices=range(PREPARE_AHEAD_MAX + 1),
        metavar=f"0-{PREPARE_AHEAD_MAX}",
        help="moves per host each campaign readies before their turn (default: the plan's, 1; 0 turns it off)",
    )
    parser.add_argument(
        "--model-only",
        action="store_true",
        help="no lab, no Temporal: the same scenarios through the planner's simulation with the lab's constants "
        "(default 20 seeds), in seconds",
    )
    parser.add_argument(
        "--engine-seconds",
        type=float,
        default=0.0,
        help="with --model-only: the engine's own time per move, in the lab's simulated seconds (wall seconds per "
        "move times the time scale: the lab runs print it), counted as set-up with the slots held (default 0)",
    )
    parser.add_argument(
        "--setup-seconds",
        type=float,
        help="every plan's setup_seconds (simulated seconds), which the campaigns decide and forecast with: the "
        "lab's own set-up plus the engine's time per move that a first run prints (default: the model's, 4)",
    )
    args = parser.parse_args()
    if args.engine_seconds < 0:
        parser.error("--engine-seconds: must not be negative")
    if args.setup_seconds is not None and not 0 <= args.setup_seconds <= SETUP_SECONDS_MAX:
        parser.error(f"--setup-seconds: must be from 0 to {SETUP_SECONDS_MAX:g}")
    stop_cleanly_on_signals()
    default_seeds = 20 if args.model_only else 1 if args.quick else 3
    args.seeds = list(range(args.seeds if args.seeds is not None else default_seeds))
    args.kinds = args.scenario or list(GENERATORS)
    args.schedulers = [Scheduler(s) for s in args.scheduler] if args.scheduler else list(SCHEDULERS)
    args.run_seconds = args.run_seconds or (120.0 if args.quick else 240.0)
    try:
        status = model_only(args) if args.model_only else asyncio.run(run_all(args))
    except BenchError as error:
        print(f"makespan: {error}", file=sys.stderr)
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
