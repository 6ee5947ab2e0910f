"""Many moves at once: throughput against bare Temporal, where each VM's time goes, idle slots, hosts' limits, routes.

    .venv/bin/python -m benchmarks.concurrency_bench [--quick] [--batches 10,50,200] [--route-moves 50]

Starts a Temporal dev server (in memory, snlm's settings), a lab of the synthetic estate (`benchmarks/estate.py`,
20 hosts, 200 VMs) in its own process, snlm's worker in its own process (`python worker.py`, its default settings,
delegation policy `skip`) and a bare Temporal worker (`benchmarks/bare.py`). Every run has a deadline; every process
is ended by its pid.

1. Batches of 10, 50 and 200 migrations started at once (each VM from its host to the next one, in a ring), at a
   lab time scale where the hosts' own work is short (`--time-scale`). For each batch:
   - throughput in migrations per second, and the same number of bare workflows, each running as many no-op
     activities as a migration ran, on the same server: both and their ratio (target >= 0.5);
   - where each VM's time went (median and 90th percentile), from its MigrateVm history: waiting for a worker
     (activity scheduled -> started), waiting for host slots (first slot request -> grant), running activities,
     workflow tasks (scheduled -> completed). Each is the wall time spent in that state; they can overlap;
   - slot-seconds held idle: for each move, the time its two slots were held (grant -> release) minus the time its
     host job ran (lab truth: submitted -> ended), over all moves: idle / held (target <= 5 %);
   - the most jobs any host was asked to run at once (lab truth), against its limit: never above it;
   - the worker's CPU per migration.
2. Routes at real time (time scale 1, VMs of 0.5 GiB memory and a 1 GiB VHDX, so a host job takes seconds):
   `--route-moves` moves started at once, ring (host k -> k+1) and disjoint pairs (host 2k -> 2k+1). For each: the
   makespan, the bound the lab's transfer model sets (lab/model/migration.py: each host's migration adapter is
   shared by its moves, a move takes a slot on both hosts for its connection, preparation and bytes; bound = the
   larger of the busiest host's bytes over its adapter and its slot-seconds over its limit), makespan / bound,
   idle slot time and peak concurrency; then ring / disjoint (target <= 1.3).
3. The peak resident set of every process: dev server, labs, workers, this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from benchmarks.bare import BARE_WORKFLOW
from benchmarks.estate import estate_topology
from benchmarks.harness import (
    BenchError,
    DevServer,
    JobLog,
    LabProcess,
    Process,
    Timeline,
    histories,
    job_span,
    median,
    peak_per_host,
    percentile,
    self_peak_rss_mib,
    spawn,
    start_dev_server,
    start_lab,
    stop_all,
    stop_cleanly_on_signals,
    timeline,
    verdict,
    wait_for_pollers,
)
from workflows.contracts import DelegationPolicy, MigrateVmInput, MigrationPolicy, migrate_vm_workflow_id

try:
    from lab.model.migration import CONNECT_SECONDS, PREPARE_SECONDS

    FIXED_SECONDS = float(CONNECT_SECONDS + PREPARE_SECONDS)
except ImportError:  # the lab's model renamed them: the phases before the bytes took 3 s when this was written
    FIXED_SECONDS = 3.0

GIB = 1024**3
HOSTS = 20
VMS = 200
TASK_QUEUE = "concurrency-bench"
BARE_QUEUE = "bare-bench"
ROUTE_MEMORY_GB = 0.5
ROUTE_DISK_GB = 1.0

TARGET_RATIO = 0.5
TARGET_IDLE = 0.05
TARGET_RING = 1.3

Route = list[tuple[str, str, str]]  # (vm, source, destination)


@dataclass
class Run:
    """One set of moves started at once, and what it showed."""

    label: str
    route: Route
    elapsed: float = float("nan")
    failures: list[str] = field(default_factory=list)
    lines: dict[str, Timeline] = field(default_factory=dict)  # by VM
    jobs: list[dict[str, Any]] = field(default_factory=list)
    worker_cpu: float = 0.0
    finished: bool = True


# -- routes --------------------------------------------------------------------------------------------------------


def _by_host(locations: dict[str, list[str]], hosts: Sequence[str]) -> dict[str, list[str]]:
    placed: dict[str, list[str]] = {h: [] for h in hosts}
    for vm, where in sorted(locations.items()):
        if len(where) == 1 and where[0] in placed:
            placed[where[0]].append(vm)
    return placed


def ring_route(locations: dict[str, list[str]], hosts: Sequence[str], moves: int) -> Route:
    """`moves` VMs, each from host k to host k+1, k going round the hosts; a host without a VM left lends the turn
    to the next one."""
    placed = _by_host(locations, hosts)
    route: Route = []
    for index in range(moves):
        for shift in range(len(hosts)):
            k = (index + shift) % len(hosts)
            if placed[hosts[k]]:
                route.append((placed[hosts[k]].pop(0), hosts[k], hosts[(k + 1) % len(hosts)]))
                break
    return route


def disjoint_route(locations: dict[str, list[str]], hosts: Sequence[str], moves: int) -> Route:
    """`moves` VMs, each from host 2k to host 2k+1, the pairs in turn."""
    placed = _by_host(locations, hosts)
    pairs = [(hosts[2 * k], hosts[2 * k + 1]) for k in range(len(hosts) // 2)]
    route: Route = []
    for index in range(moves * len(pairs)):
        source, destination = pairs[index % len(pairs)]
        if placed[source]:
            route.append((placed[source].pop(0), source, destination))
        if len(route) == moves:
            break
    return route


def bandwidth_bound(route: Route, limits: dict[str, int], move_bytes: float, rate: float) -> tuple[float, float]:
    """The lower bounds on the makespan (simulated seconds) that the lab's transfer model sets: (adapter, slots).

    adapter: the busiest host's bytes over its migration adapter, after one move's connection and preparation;
    slots: the busiest host's slot-seconds (each move holds a slot for its connection, preparation and its bytes
    at the adapter's full rate) over its limit."""
    moves_on: dict[str, int] = {}
    for _, source, destination in route:
        for host in (source, destination):
            moves_on[host] = moves_on.get(host, 0) + 1
    adapter = max((FIXED_SECONDS + n * move_bytes / rate for n in moves_on.values()), default=0.0)
    slots = max(
        (n * (FIXED_SECONDS + move_bytes / rate) / limits.get(h.upper(), 2) for h, n in moves_on.items()), default=0.0
    )
    return adapter, slots


# -- processes -----------------------------------------------------------------------------------------------------


def _estate_lab(workdir: Path, name: str, time_scale: float, memory_gb: float, disk_gb: float) -> LabProcess:
    topology = workdir / f"{name}.yaml"
    raw = estate_topology(HOSTS, VMS, time_scale=time_scale, memory_gb=memory_gb, disk_file_gb=disk_gb)
    topology.write_text(yaml.safe_dump(raw), encoding="utf-8")
    lab = start_lab(topology, workdir / name, time_scale=time_scale)
    lab.process.name = f"lab ({name})"
    return lab


async def _snlm_worker(client: Client, dev: DevServer, lab: LabProcess, workdir: Path, name: str) -> Process:
    """`python worker.py` with its defaults, but for where things are and the delegation policy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNLM_", "OTEL_", "TEMPORAL_"))}
    env.update(
        SNLM_INVENTORY=str(lab.inventory),
        TEMPORAL_ADDRESS=dev.target,
        SNLM_TASK_QUEUE=TASK_QUEUE,
        SNLM_DELEGATION_POLICY="skip",
        SNLM_GRACEFUL_SHUTDOWN_SECONDS="2",
    )
    worker = spawn(f"snlm worker ({name})", [sys.executable, "worker.py"], workdir / f"worker-{name}.log", env)
    await wait_for_pollers(client, TASK_QUEUE, worker)
    return worker


async def _bare_worker(client: Client, dev: DevServer, workdir: Path) -> Process:
    command = [sys.executable, "-m", "benchmarks.bare", "--address", dev.target, "--task-queue", BARE_QUEUE]
    worker = spawn("bare worker", command, workdir / "bare-worker.log")
    await wait_for_pollers(client, BARE_QUEUE, worker)
    return worker


# -- runs ----------------------------------------------------------------------------------------------------------


async def _all_at_once(handles: Sequence[WorkflowHandle[Any, Any]], started: float, deadline: float) -> list[Any]:
    """Every result (or its error); past the deadline the unfinished runs are terminated and TimeoutError raised."""
    try:
        return await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles), return_exceptions=True),
            timeout=max(1.0, deadline - (time.perf_counter() - started)),
        )
    except TimeoutError:
        for handle in handles:
            with contextlib.suppress(Exception):
                await handle.terminate(reason="benchmark deadline")
        raise


async def migrate(client: Client, lab: LabProcess, log: JobLog, worker: Process, run: Run, deadline: float) -> None:
    """Start every move of the run at once, wait for all of them, and read their histories and the lab's jobs."""
    await asyncio.to_thread(log.poll)
    seen = set(log.jobs)
    policy = MigrationPolicy(delegation=DelegationPolicy.SKIP)
    ids = [f"{migrate_vm_workflow_id(vm, source)}-{run.label}" for vm, source, _ in run.route]
    cpu = worker.cpu_seconds()
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                "MigrateVm", MigrateVmInput(vm, source, destination, policy=policy), id=i, task_queue=TASK_QUEUE
            )
            for (vm, source, destination), i in zip(run.route, ids, strict=True)
        )
    )
    try:
        results = await _all_at_once(handles, started, deadline)
    except TimeoutError:
        run.finished = False
        run.elapsed = time.perf_counter() - started
        return
    run.elapsed = time.perf_counter() - started
    run.worker_cpu = worker.cpu_seconds() - cpu
    run.failures = [
        f"{vm}: {r}" for (vm, _, _), r in zip(run.route, results, strict=True) if isinstance(r, BaseException)
    ]
    events = await histories(client, ids)
    run.lines = {vm: timeline(e) for (vm, _, _), e in zip(run.route, events, strict=True)}
    await asyncio.to_thread(log.poll)
    run.jobs = [job for key, job in log.jobs.items() if key not in seen]


async def bare(client: Client, count: int, activities: int, deadline: float) -> float:
    """Seconds for `count` bare workflows of `activities` no-op activities each, started at once."""
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(
                BARE_WORKFLOW, activities, id=f"bare-{count}-{i}-{time.time_ns()}", task_queue=BARE_QUEUE
            )
            for i in range(count)
        )
    )
    results = await _all_at_once(handles, started, deadline)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise BenchError(f"{len(failed)} bare workflows failed: {failed[0]}")
    return time.perf_counter() - started


# -- figures -------------------------------------------------------------------------------------------------------


def idle_share(run: Run, time_scale: float) -> tuple[float, float] | None:
    """(idle slot-seconds, held slot-seconds) over the run's moves; None when the histories show no slot marks."""
    spans: dict[tuple[str, str], float] = {}
    for job in run.jobs:
        span = job_span(job)
        if span is not None and job.get("state") in ("Completed", "CompletedWithWarnings"):
            spans[(job["vm_name"], job["source"].upper())] = (span[1] - span[0]) / time_scale
    held = idle = 0.0
    for vm, source, _ in run.route:
        line = run.lines.get(vm)
        busy = spans.get((vm, source.upper()))
        if line is None or line.slot_held is None or busy is None:
            continue
        held += line.slot_held
        idle += max(0.0, line.slot_held - 2 * busy)
    return (idle, held) if held > 0 else None


def print_peaks(run: Run, limits: dict[str, int]) -> None:
    peaks = peak_per_host(run.jobs)
    if not peaks:
        print("    peak jobs per host          : n/a (the lab's truth showed no finished job)")
        return
    host, peak = max(peaks.items(), key=lambda item: item[1] - limits.get(item[0], 2))
    over = [h for h, p in peaks.items() if p > limits.get(h, 2)]
    state = f"EXCEEDED on {len(over)} hosts ({', '.join(sorted(over)[:5])})" if over else "never above"
    print(f"    peak jobs per host (lab)    : {peak} on {host}, limit {limits.get(host, 2)}: {state}")


def print_split(run: Run) -> None:
    lines = list(run.lines.values())
    if not lines:
        return

    def row(name: str, values: Sequence[float | None]) -> None:
        known = [v for v in values if v is not None]
        if not known:
            print(f"    {name:28s}: n/a (no marks in the histories)")
            return
        print(f"    {name:28s}: median {median(known):7.2f} s   p90 {percentile(known, 0.9):7.2f} s")

    print("    where a VM's time went (wall time in each state; states overlap)")
    row("whole run", [t.total for t in lines])
    row("waiting for a worker", [t.worker_wait for t in lines])
    row("waiting for host slots", [t.slot_wait for t in lines])
    row("running activities", [t.running for t in lines])
    row("workflow tasks", [t.task_time for t in lines])
    print(
        f"    per migration: {median([t.activities for t in lines]):.0f} activities, "
        f"{median([t.workflow_tasks for t in lines]):.0f} workflow tasks, {median([t.events for t in lines]):.0f} "
        "history events (median)"
    )


def print_idle(run: Run, time_scale: float) -> None:
    share = idle_share(run, time_scale)
    if share is None:
        print("    slot-seconds held idle      : n/a (no slot marks in the histories, or no jobs in the truth)")
        return
    idle, held = share
    print(
        f"    slot-seconds held idle      : {idle:.1f} of {held:.1f} s held = {100 * idle / held:5.1f} % "
        f"(target <= {100 * TARGET_IDLE:.0f} % {verdict(idle / held, TARGET_IDLE)})"
    )


# -- the two parts ---------------------------------------------------------------------------------------------------


async def batches(
    client: Client, dev: DevServer, workdir: Path, args: argparse.Namespace, processes: list[Process]
) -> None:
    lab = await asyncio.to_thread(_estate_lab, workdir, "batches", args.time_scale, 2.0, 8.0)
    processes.append(lab.process)
    worker = await _snlm_worker(client, dev, lab, workdir, "batches")
    processes.append(worker)
    bare_worker = await _bare_worker(client, dev, workdir)
    processes.append(bare_worker)
    log = JobLog(lab)
    stop = asyncio.Event()
    poller = asyncio.create_task(log.run(stop))
    try:
        await asyncio.to_thread(log.poll)
        hosts = sorted(log.limits)
        print(
            f"batches: estate of {len(hosts)} hosts and {VMS} VMs (2 GiB, 8 GiB VHDX), lab time scale "
            f"{args.time_scale:g}, snlm worker with its defaults, {os.cpu_count()} cores"
        )
        for size in args.batches:
            run = Run(f"b{size}", ring_route(log.locations, hosts, size))
            await migrate(client, lab, log, worker, run, args.deadline)
            print(f"  {len(run.route)} migrations at once")
            if not run.finished:
                print(f"    did not finish within {args.deadline:g} s: terminated")
                continue
            rate = len(run.route) / run.elapsed
            print(f"    snlm                        : {run.elapsed:7.2f} s = {rate:6.2f} migrations/s")
            if run.failures:
                print(f"    failed: {len(run.failures)}, first: {run.failures[0][:300]}")
            activities = round(median([t.activities for t in run.lines.values()]))
            try:
                bare_seconds = await bare(client, len(run.route), activities, args.deadline)
                bare_rate = len(run.route) / bare_seconds
                print(
                    f"    bare Temporal ({activities} no-op activities): {bare_seconds:7.2f} s = {bare_rate:6.2f} "
                    f"workflows/s; ratio snlm / bare {rate / bare_rate:5.2f} "
                    f"(target >= {TARGET_RATIO} {verdict(rate / bare_rate, TARGET_RATIO, at_least=True)})"
                )
            except (BenchError, TimeoutError) as error:
                print(f"    bare Temporal: n/a ({error or 'deadline'})")
            print_split(run)
            print_idle(run, log.time_scale)
            print_peaks(run, log.limits)
            print(f"    snlm worker CPU per migration: {run.worker_cpu / len(run.route):6.3f} s")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await poller
        worker.stop()
        bare_worker.stop()
        lab.stop()


async def routes(
    client: Client, dev: DevServer, workdir: Path, args: argparse.Namespace, processes: list[Process]
) -> None:
    lab = await asyncio.to_thread(_estate_lab, workdir, "routes", 1.0, ROUTE_MEMORY_GB, ROUTE_DISK_GB)
    processes.append(lab.process)
    worker = await _snlm_worker(client, dev, lab, workdir, "routes")
    processes.append(worker)
    log = JobLog(lab)
    stop = asyncio.Event()
    poller = asyncio.create_task(log.run(stop))
    try:
        await asyncio.to_thread(log.poll)
        hosts = sorted(log.limits)
        topology = estate_topology(HOSTS, 1)
        rate = topology["hosts"][0]["nics"][1]["bandwidth_gbps"] * 1e9 / 8
        move_bytes = (ROUTE_MEMORY_GB + ROUTE_DISK_GB) * GIB
        print(
            f"routes at real time: {args.route_moves} moves at once, VMs of {ROUTE_MEMORY_GB:g} GiB memory and a "
            f"{ROUTE_DISK_GB:g} GiB VHDX, migration adapters of {rate * 8 / 1e9:g} Gbit/s, "
            f"{FIXED_SECONDS:g} s to connect and prepare each move"
        )
        made: dict[str, float] = {}
        ratios: dict[str, float] = {}
        for name, maker in (("ring", ring_route), ("disjoint", disjoint_route)):
            run = Run(name, maker(log.locations, hosts, args.route_moves))
            await migrate(client, lab, log, worker, run, args.deadline)
            adapter, slots = bandwidth_bound(run.route, log.limits, move_bytes, rate)
            bound = max(adapter, slots) / log.time_scale
            print(f"  {name}: {len(run.route)} moves")
            if not run.finished:
                print(f"    did not finish within {args.deadline:g} s: terminated")
                continue
            if run.failures:
                print(f"    failed: {len(run.failures)}, first: {run.failures[0][:300]}")
            made[name], ratios[name] = run.elapsed, run.elapsed / bound
            print(
                f"    makespan {run.elapsed:6.2f} s, bound {bound:6.2f} s (adapter {adapter / log.time_scale:.2f} s, "
                f"slots {slots / log.time_scale:.2f} s), makespan / bound {run.elapsed / bound:5.2f}"
            )
            print_idle(run, log.time_scale)
            print_peaks(run, log.limits)
        if "ring" in made and "disjoint" in made:
            ratio = made["ring"] / made["disjoint"]
            print(
                f"  ring / disjoint: makespan {ratio:5.2f} (target <= {TARGET_RING} {verdict(ratio, TARGET_RING)}), "
                f"makespan over bound {ratios['ring'] / ratios['disjoint']:5.2f}"
            )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await poller
        worker.stop()
        lab.stop()


async def run_all(args: argparse.Namespace) -> int:
    processes: list[Process] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="snlm-concurrency-bench-") as tmp:
        workdir = Path(tmp)
        dev, client = await start_dev_server(workdir)
        processes.append(dev.process)
        try:
            for part in (batches, routes):
                try:
                    await part(client, dev, workdir, args, processes)
                except (BenchError, OSError, RuntimeError) as error:
                    print(f"{part.__name__}: could not run: {error}", file=sys.stderr)
                    status = 1
        finally:
            dev.process.stop()
            print("peak resident set (MiB)")
            for process in processes:
                print(f"  {process.name:28s}: {process.peak_rss_mib():8.1f}   (pid {process.pid})")
            print(f"  {'this process (client)':28s}: {self_peak_rss_mib():8.1f}")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches of 10 and 50, 20 moves per route")
    parser.add_argument("--batches", help="sizes of the batches started at once (default 10,50,200)")
    parser.add_argument("--route-moves", type=int, help="moves per route at real time (default 50, quick 20)")
    parser.add_argument("--time-scale", type=float, default=60.0, help="lab time scale of the batches")
    parser.add_argument("--deadline", type=float, help="seconds each run may take (default 600, quick 300)")
    args = parser.parse_args()
    stop_cleanly_on_signals()
    args.batches = [int(b) for b in (args.batches or ("10,50" if args.quick else "10,50,200")).split(",")]
    args.route_moves = args.route_moves or (20 if args.quick else 50)
    args.deadline = args.deadline or (300.0 if args.quick else 600.0)
    try:
        status = asyncio.run(asyncio.wait_for(run_all(args), timeout=3600))
    except BenchError as error:
        print(f"concurrency_bench: {error}", file=sys.stderr)
        status = 1
    except TimeoutError:
        print("concurrency_bench: did not finish within an hour", file=sys.stderr)
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
