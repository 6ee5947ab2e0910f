"""What the benchmarks share: the processes they start and what they read of them and of Temporal.

Every process is started by a benchmark in its own process group-free child, watched through /proc (CPU seconds,
resident-set high-water), and ended by its pid with a bounded wait. Only stable surfaces of the engine are used
(`python -m lab`, `python worker.py` with its settings variables, the lab's control API, workflow histories and the
dev server's Prometheus metrics), so the benchmarks run on any version of the engine that keeps those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from temporalio.api.enums.v1 import EventType, TaskQueueType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from lab.control import ControlClient
from starter.devserver import dev_server_args, temporal_binary
from workflows.contracts import MoveRecord, MoveState

ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIGRATE_VM_TYPE = "MigrateVm"
MOVE_ACTIVITY = "start_or_attach_move"
# The signal a campaign sends a move it prepared ahead when the move's turn comes (MigrateVmWorkflow.go).
TURN_SIGNAL = "go"
# Names that mark the slot traffic of a move (requests, grants, releases, lease checks), whatever shape the slot
# grant takes: per-host entities (request_slot / snlm_slot_granted) or one book (request_pair / snlm_pair_granted).
_SLOT_WORDS = ("slot", "pair", "grant", "lease", "release")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def self_cpu_seconds() -> float:
    """CPU of this process, every thread (the Temporal core's included)."""
    return time.process_time()


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_spawned: list[Process] = []


def stop_all() -> None:
    """End every process the benchmark started that is still running, newest first, each by its pid."""
    for process in reversed(_spawned):
        process.stop(process.stop_signal, timeout=10.0)


def stop_cleanly_on_signals() -> None:
    """On SIGTERM or SIGINT, end the processes the benchmark started, then exit (status 130).

    Not a cancellation of the event loop: that would wait for the worker's graceful shutdown and its running
    activities, unbounded in time; a benchmark stopped half-way has no figures to save anyway."""

    def stop(signum: int, frame: object) -> None:
        print(f"stopped by signal {signum}: ending the processes it started", file=sys.stderr, flush=True)
        stop_all()
        os._exit(130)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


class BenchError(RuntimeError):
    """A benchmark cannot go on; the message says which part failed and how."""


class Process:
    """A child process a benchmark started, read through /proc and ended by its pid."""

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log_path: Path, stop_signal: signal.Signals = signal.SIGTERM
    ) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.stop_signal = stop_signal  # the one it shuts down cleanly on
        self._last_cpu = 0.0
        self._last_peak = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU so far (the last reading once the process is gone)."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
            fields = stat[stat.rindex(")") + 2 :].split()
            self._last_cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        return self._last_cpu

    def peak_rss_mib(self) -> float:
        """The resident-set high-water mark (VmHWM) so far."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self._last_peak = int(line.split()[1]) / 1024
        return self._last_peak

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        """End it by its pid: `sig`, then SIGKILL after `timeout`. Figures are read once more before."""
        self.cpu_seconds()
        self.peak_rss_mib()
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


def spawn(
    name: str,
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> Process:
    """Start `command` from the repository root with its output in `log_path`; `stop_all` ends it if the benchmark
    is stopped before it does."""
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = str(ROOT) + os.pathsep + child_env.get("PYTHONPATH", "")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(list(command), cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    process = Process(name, popen, log_path, stop_signal)
    _spawned.append(process)
    return process


# -- the dev server -------------------------------------------------------------------------------------------


@dataclass
class DevServer:
    process: Process
    target: str
    metrics_url: str


async def start_dev_server(workdir: Path, *, deadline_seconds: float = 60.0) -> tuple[DevServer, Client]:
    """`temporal server start-dev` in memory, with snlm's settings and a metrics port; a client once it answers."""
    port, metrics_port = free_port(), free_port()
    command = [str(temporal_binary()), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless"]
    command += ["--metrics-port", str(metrics_port), "--log-level", "error", *dev_server_args()]
    process = spawn("dev server", command, workdir / "temporal.log")
    server = DevServer(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics")
    deadline = time.monotonic() + deadline_seconds
    while True:
        if not process.alive():
            raise BenchError(f"the dev server exited with {process.popen.returncode}:\n{process.tail()}")
        try:
            client = await Client.connect(server.target)
            await client.count_workflows()  # visibility is up too
            return server, client
        except Exception as error:
            if time.monotonic() > deadline:
                process.stop()
                raise BenchError(f"the dev server did not answer within {deadline_seconds:.0f} s: {error}") from error
            await asyncio.sleep(0.2)


async def wait_for_pollers(client: Client, task_queue: str, worker: Process, *, deadline_seconds: float = 60.0) -> None:
    """Until a worker polls `task_queue` (or the worker process exits, or the deadline passes)."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + deadline_seconds
    while True:
        if not worker.alive():
            raise BenchError(f"the {worker.name} exited with {worker.popen.returncode}:\n{worker.tail()}")
        response = await client.workflow_service.describe_task_queue(request)
        if response.pollers:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the {worker.name} did not poll {task_queue} within {deadline_seconds:.0f} s")
        await asyncio.sleep(0.2)


class ActionMeter:
    """Temporal's `action` counter from the dev server's Prometheus endpoint, summed over its label sets for one
    namespace (the server's own `temporal_system` namespace counts its housekeeping, not ours)."""

    def __init__(self, url: str, namespace: str = "default") -> None:
        self.url = url
        self.namespace = namespace
        # This process's CPU spent reading the counter (the page is long and read often): a benchmark that
        # measures its own process's CPU leaves it out.
        self.cpu_seconds = 0.0
        self.available = self._first_reading() is not None

    def _first_reading(self, wait_seconds: float = 15.0) -> Counter[str] | None:
        """A server publishes the counter once it has counted an action: a dev server that has just started to
        answer may have counted none yet (its own system workflows follow within seconds). So a page served
        without the counter is read again for a while; no page at all means no metrics, at once."""
        deadline = time.monotonic() + wait_seconds
        while True:
            page = self._page()
            if page is None:
                return None
            if "# TYPE action counter" in page or time.monotonic() > deadline:
                return self.read()
            time.sleep(0.2)

    def _page(self) -> str | None:
        try:
            response = requests.get(self.url, timeout=10)
            response.raise_for_status()
        except requests.RequestException:
            return None
        return response.text

    def read(self) -> Counter[str] | None:
        """Actions so far by `action_type`; None when the server publishes no `action` counter."""
        started = time.thread_time()  # the read runs on the calling thread alone, so this is its CPU
        try:
            return self._read()
        finally:
            self.cpu_seconds += time.thread_time() - started

    def _read(self) -> Counter[str] | None:
        text = self._page()
        if text is None or "# TYPE action counter" not in text:
            return None
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            if not line.startswith("action{"):
                continue
            labels, _, value = line.rpartition(" ")
            if f'namespace="{self.namespace}"' not in labels:
                continue
            kind = labels.split('action_type="', 1)[1].split('"', 1)[0] if 'action_type="' in labels else "?"
            counts[kind] += int(float(value))
        return counts

    async def settled(self, quiet_seconds: float = 1.5, limit_seconds: float = 8.0) -> Counter[str]:
        """The counter once it stopped moving (the slot entities answer a finished move a moment later).

        The server publishes its counters about once a second (an action shows 0.8 s after it happened, measured):
        two reads closer than that are often equal while actions are still to come, which counted a move's last
        actions into the next one's (a 5 s move cost 28, a 60 s move 18).
        """
        deadline = time.monotonic() + limit_seconds
        last = self.read() or Counter()
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet_seconds)
            now = self.read() or Counter()
            if now == last:
                break
            last = now
        return last


# -- the lab in its own process --------------------------------------------------------------------------------


@dataclass
class LabProcess:
    process: Process
    inventory: Path
    control: ControlClient

    def truth(self) -> dict[str, Any]:
        return self.control.truth()

    def jobs_truth(self) -> dict[str, Any]:
        return self.control.jobs_truth()

    def stop(self) -> None:
        self.control.close()
        self.process.stop(self.process.stop_signal)


def start_lab(
    topology: Path, workdir: Path, *, time_scale: float | None = None, deadline_seconds: float = 60.0
) -> LabProcess:
    """`python -m lab` with its control API; ready once it wrote lab.json (after the inventory and the API)."""
    inventory = workdir / "inventory.yaml"
    command = [sys.executable, "-m", "lab", "--topology", str(topology), "--inventory-out", str(inventory)]
    if time_scale is not None:
        command += ["--time-scale", f"{time_scale:g}"]
    process = spawn("lab", command, workdir.parent / f"{workdir.name}.log", stop_signal=signal.SIGINT)
    state_file = workdir / "lab.json"
    deadline = time.monotonic() + deadline_seconds
    while not state_file.exists():
        if not process.alive():
            raise BenchError(f"the lab exited with {process.popen.returncode}:\n{process.tail()}")
        if time.monotonic() > deadline:
            process.stop(signal.SIGINT)
            raise BenchError(f"the lab did not start within {deadline_seconds:.0f} s:\n{process.tail()}")
        time.sleep(0.05)
    time.sleep(0.05)  # lab.json is written in one call; let it land
    state = json.loads(state_file.read_text(encoding="utf-8"))
    token = Path(state["control_token_file"]).read_text(encoding="utf-8").strip()
    return LabProcess(process, inventory, ControlClient(state["control_url"], token, timeout=30))


class JobLog:
    """Every migration job the lab's truth shows, kept past the lab's own retention (300 simulated seconds) by
    reading the truth often enough from a background task."""

    def __init__(self, lab: LabProcess) -> None:
        self.lab = lab
        self.jobs: dict[str, dict[str, Any]] = {}
        self.limits: dict[str, int] = {}
        self.time_scale = 1.0
        self.locations: dict[str, list[str]] = {}

    def poll(self, whole: bool = True) -> None:
        """Read the lab's jobs; `whole` also where each VM is (the routes). The background reads take the jobs and
        limits only: the whole truth holds every host's cmdlets for as long as it takes to build (about a second
        at 10,000 VMs), which would slow the moves being measured."""
        if not whole and self.limits:
            truth = self.lab.jobs_truth()
            self.limits.update({name: int(limit) for name, limit in truth["limits"].items()})
        else:
            truth = self.lab.truth()
            self.locations = truth.get("locations", {})
            for name, host in truth.get("hosts", {}).items():
                self.limits[name] = int(host.get("live_migration", {}).get("max_vm_migrations", 2))
            for cluster in truth.get("clusters", {}).values():
                for node in cluster.get("nodes", []):
                    self.limits[node] = int(cluster.get("max_parallel_migrations", self.limits.get(node, 2)))
        self.time_scale = float(truth.get("time_scale", 1.0))
        for job in truth.get("jobs", []):
            self.jobs[job["instance_id"]] = job

    def interval(self) -> float:
        """Real seconds between reads: a third of the retention at the current time scale, at most 2 s."""
        return max(0.2, min(2.0, 300.0 / self.time_scale / 3))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.poll, False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval())
        await asyncio.to_thread(self.poll, False)


def job_span(job: Mapping[str, Any]) -> tuple[float, float] | None:
    """A finished job's (asked, ended) in simulated epoch seconds. The truth has no start time; the time it was
    submitted is when the host was asked, which is what a host's limit is about."""
    if not job.get("time_submitted") or not job.get("end_time"):
        return None
    return (
        datetime.fromisoformat(job["time_submitted"]).timestamp(),
        datetime.fromisoformat(job["end_time"]).timestamp(),
    )


def peak_per_host(jobs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Per host, the most jobs it was asked to run at once (as source or destination)."""
    edges: dict[str, list[tuple[float, int]]] = {}
    for job in jobs:
        span = job_span(job)
        if span is None:
            continue
        for host in (job["source"], job["destination"]):
            # An end sorts before a start at the same instant: back-to-back moves do not overlap.
            edges.setdefault(host.upper(), []).extend([(span[0], 1), (span[1], -1)])
    peaks: dict[str, int] = {}
    for host, points in edges.items():
        current = peak = 0
        for _, step in sorted(points):
            current += step
            peak = max(peak, current)
        peaks[host] = peak
    return peaks


# -- histories ---------------------------------------------------------------------------------------------------


def _kind(event: HistoryEvent) -> str:
    return EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")


def _at(event: HistoryEvent) -> float:
    return event.event_time.ToMicroseconds() / 1e6


def _attributes(event: HistoryEvent) -> Any:
    which = event.WhichOneof("attributes")
    return getattr(event, which) if which else None


def _label(event: HistoryEvent) -> str:
    attrs = _attributes(event)
    if attrs is None:
        return ""
    for path in ("signal_name", "activity_type.name", "workflow_type.name", "accepted_request.input.name"):
        value: Any = attrs
        for part in path.split("."):
            value = getattr(value, part, None)
            if value is None:
                break
        if isinstance(value, str) and value:
            return value
    return ""


def _slotish(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SLOT_WORDS)


def _union(intervals: Iterable[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


_OUTGOING = {"START_CHILD_WORKFLOW_EXECUTION_INITIATED", "SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"}
_ACTIVITY_CLOSED = {
    "ACTIVITY_TASK_COMPLETED",
    "ACTIVITY_TASK_FAILED",
    "ACTIVITY_TASK_TIMED_OUT",
    "ACTIVITY_TASK_CANCELED",
}


@dataclass
class Timeline:
    """One workflow run read from its history. Durations in real seconds; None where the history does not show
    the marks (another shape of slot grant, a move that never started)."""

    events: int = 0
    workflow_tasks: int = 0
    activities: int = 0
    started: float = 0.0
    closed: float = 0.0
    worker_wait: float = 0.0  # activity scheduled -> started, all activities (wall time, overlaps merged)
    running: float = 0.0  # activity started -> closed
    task_time: float = 0.0  # workflow task scheduled -> completed
    slot_wait: float | None = None  # first slot request -> last grant before the move
    slot_held: float | None = None  # slot-seconds held (both hosts), grant -> release
    # When a move prepared ahead got its turn (its campaign's `go` signal); None for a move started at its turn.
    turn: float | None = None
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> float:
        return self.closed - self.started


def timeline(events: Sequence[HistoryEvent], move_activity: str = MOVE_ACTIVITY) -> Timeline:
    """What a MigrateVm run spent its time on, from its history alone. For a move prepared ahead, from its turn on:
    what it did before (preflight, settings) held no slot, and `turn - started` is that time."""
    line = Timeline(events=len(events))
    if not events:
        return line
    line.started, line.closed = _at(events[0]), _at(events[-1])
    line.turn = signal_time(events, TURN_SIGNAL)
    by_id = {e.event_id: e for e in events}
    scheduled: dict[int, HistoryEvent] = {}
    started: dict[int, HistoryEvent] = {}
    waits: list[tuple[float, float]] = []
    runs: list[tuple[float, float]] = []
    tasks: list[tuple[float, float]] = []
    move: tuple[float, float] | None = None
    for event in events:
        kind = _kind(event)
        line.kinds[kind] += 1
        attrs = _attributes(event)
        if kind == "WORKFLOW_TASK_COMPLETED":
            line.workflow_tasks += 1
            origin = by_id.get(attrs.scheduled_event_id)
            if origin is not None:
                tasks.append((_at(origin), _at(event)))
        elif kind == "ACTIVITY_TASK_SCHEDULED":
            line.activities += 1
            scheduled[event.event_id] = event
        elif kind == "ACTIVITY_TASK_STARTED":
            started[attrs.scheduled_event_id] = event
            origin = scheduled.get(attrs.scheduled_event_id)
            if origin is not None:
                # Of a retried activity the history keeps the last attempt's start: earlier attempts count here.
                waits.append((_at(origin), _at(event)))
        elif kind in _ACTIVITY_CLOSED:
            begun = started.get(attrs.scheduled_event_id)
            if begun is not None:
                runs.append((_at(begun), _at(event)))
            origin = scheduled.get(attrs.scheduled_event_id)
            if origin is not None and _label(origin) == move_activity and kind == "ACTIVITY_TASK_COMPLETED":
                move = (_at(origin), _at(event))
    if line.turn is not None:
        waits, runs, tasks = ([(a, b) for a, b in spans if a >= line.turn] for spans in (waits, runs, tasks))
    line.worker_wait, line.running, line.task_time = _union(waits), _union(runs), _union(tasks)
    if move is None:
        return line
    requests: list[float] = []
    grants: list[float] = []
    releases: list[float] = []
    for event in events:
        kind, at = _kind(event), _at(event)
        label = _label(event)
        if kind == "ACTIVITY_TASK_COMPLETED":
            label = _label(by_id[_attributes(event).scheduled_event_id])
        if not _slotish(label):
            continue
        outgoing = kind in _OUTGOING or kind == "ACTIVITY_TASK_SCHEDULED"
        incoming = kind in ("WORKFLOW_EXECUTION_SIGNALED", "ACTIVITY_TASK_COMPLETED")
        if at <= move[0]:
            if outgoing:
                requests.append(at)
            elif incoming:
                grants.append(at)
        elif at >= move[1] and outgoing:
            releases.append(at)
    if requests and grants:
        line.slot_wait = max(0.0, grants[-1] - requests[0])
    if grants and releases:
        # Two slots per move: two grants mean one per host (taken one after the other), one grant both at once.
        first, last = grants[0], grants[-1]
        line.slot_held = (releases[0] - first) + (releases[0] - last)
    return line


async def histories(client: Client, ids: Sequence[str], *, concurrency: int = 16) -> list[list[HistoryEvent]]:
    """The event lists of these workflows (their latest runs)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> list[HistoryEvent]:
        async with gate:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            return list(history.events)

    return list(await asyncio.gather(*(one(i) for i in ids)))


async def other_workflow_events(client: Client, workflow_type: str = MIGRATE_VM_TYPE) -> int:
    """History events of every run of every workflow that is not `workflow_type` (the slot entities and whatever
    else the engine starts), so their growth per migration can be measured."""
    total = 0
    async for execution in client.list_workflows():
        if execution.workflow_type == workflow_type:
            continue
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        description = await handle.describe()
        total += description.raw_description.workflow_execution_info.history_length
    return total


# -- figures -------------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares y = a + b x; None with fewer than two distinct x."""
    xs = [p[0] for p in points]
    if len(points) < 2 or max(xs) - min(xs) <= 0:
        return None
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(p[1] for p in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def verdict(value: float | None, target: float, *, at_least: bool = False) -> str:
    """`ok` / `OVER` / `UNDER` against a target, for the printed tables (figures, not a pass/fail test)."""
    if value is None or value != value:
        return "n/a"
    if at_least:
        return "ok" if value >= target else "UNDER"
    return "ok" if value <= target else "OVER"


# -- workers -------------------------------------------------------------------------------------------------------


async def start_snlm_worker(
    client: Client,
    dev: DevServer,
    inventory: Path,
    log_path: Path,
    *,
    task_queue: str,
    name: str = "snlm worker",
    env: Mapping[str, str] | None = None,
) -> Process:
    """`python worker.py` with its defaults, but for where things are (`inventory`, the dev server, `task_queue`),
    the delegation policy `skip` (the lab's own directory holds the delegation) and a short graceful shutdown;
    `env` adds or overrides settings variables. Returns once it polls its task queue."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("SNLM_", "OTEL_", "TEMPORAL_"))}
    child_env.update(
        SNLM_INVENTORY=str(inventory),
        TEMPORAL_ADDRESS=dev.target,
        SNLM_TASK_QUEUE=task_queue,
        SNLM_DELEGATION_POLICY="skip",
        SNLM_GRACEFUL_SHUTDOWN_SECONDS="2",
    )
    child_env.update(env or {})
    worker = spawn(name, [sys.executable, "worker.py"], log_path, child_env)
    await wait_for_pollers(client, task_queue, worker)
    return worker


async def start_bare_worker(client: Client, dev: DevServer, log_path: Path, *, task_queue: str) -> Process:
    """`benchmarks/bare.py`'s worker on `task_queue`, once it polls it."""
    command = [sys.executable, "-m", "benchmarks.bare", "--address", dev.target, "--task-queue", task_queue]
    worker = spawn("bare worker", command, log_path)
    await wait_for_pollers(client, task_queue, worker)
    return worker


async def run_ids(client: Client, workflow_id: str) -> list[str]:
    """Every run of `workflow_id` (a workflow that continues as new has several), oldest first."""
    runs: list[tuple[float, str]] = []
    async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        runs.append((execution.start_time.timestamp() if execution.start_time else 0.0, execution.run_id))
    return [run_id for _, run_id in sorted(runs)]


async def run_lengths(client: Client, workflow_id: str) -> list[int]:
    """The history length of every run of `workflow_id`, oldest first, as the server counts them."""
    lengths: list[int] = []
    for run_id in await run_ids(client, workflow_id):
        description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        lengths.append(description.raw_description.workflow_execution_info.history_length)
    return lengths


@dataclass(frozen=True)
class TaskTrouble:
    """Workflow tasks of a run that did not complete: `refused` ones continued as new (or completed) while a signal
    came in (UNHANDLED_COMMAND), after which the worker replays the whole run; `timed_out` ones ran past the task
    timeout (a sticky task that only waited for its worker in vain is not one: it just moves queue)."""

    refused: int = 0
    timed_out: int = 0

    def __add__(self, other: TaskTrouble) -> TaskTrouble:
        return TaskTrouble(self.refused + other.refused, self.timed_out + other.timed_out)


def task_trouble(events: Iterable[HistoryEvent]) -> TaskTrouble:
    """What went wrong with one run's workflow tasks, from its history."""
    refused = timed_out = 0
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            cause = event.workflow_task_failed_event_attributes.cause
            refused += cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            kind = event.workflow_task_timed_out_event_attributes.timeout_type
            timed_out += kind == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE
    return TaskTrouble(refused, timed_out)


async def runs_trouble(client: Client, workflow_id: str) -> TaskTrouble:
    """`task_trouble` over every run of `workflow_id`."""
    total = TaskTrouble()
    for run_id in await run_ids(client, workflow_id):
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        total += task_trouble(history.events)
    return total


@dataclass
class Placement:
    """Where the lab's truth has every VM of a run, against what the engine recorded of each move."""

    vms: int = 0
    on_one: int = 0
    # Each entry "vm: what is wrong"; every list must be empty.
    on_several: list[str] = field(default_factory=list)
    on_none: list[str] = field(default_factory=list)
    moved_elsewhere: list[str] = field(default_factory=list)  # recorded as moved, not on its destination
    unstarted_elsewhere: list[str] = field(default_factory=list)  # never started, not on its source
    started_twice: list[str] = field(default_factory=list)  # more Move-VM starts than the run asked of the VM

    def problems(self) -> list[tuple[str, list[str]]]:
        """Each kind of misplacement found, with its VMs."""
        kinds = (
            ("on several hosts", self.on_several),
            ("on no host", self.on_none),
            ("moved but not on their destination", self.moved_elsewhere),
            ("never started but not on their source", self.unstarted_elsewhere),
            ("started more than once", self.started_twice),
        )
        return [(name, items) for name, items in kinds if items]

    @property
    def sound(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        problems = self.problems()
        head = f"{self.on_one} of {self.vms} VMs on exactly one host"
        if not problems:
            return head + ", each where its move's record says, none started twice"
        return head + "; " + "; ".join(f"{len(items)} {name} (e.g. {items[0]})" for name, items in problems)


# The states after which a VM must be on its destination, and those in which no move of it ever ran.
_ON_DESTINATION = frozenset({MoveState.MOVED, MoveState.ALREADY_THERE})
_NEVER_STARTED = frozenset({MoveState.PENDING, MoveState.BLOCKED})


def placement(truth: Mapping[str, Any], records: Iterable[MoveRecord]) -> Placement:
    """Check the lab's truth against a campaign's move records: every VM
    the records name is realized on exactly one host, a moved one on its destination, a never-started one on its
    source (a VM moved more than once: as its latest record says), and no VM saw more Move-VM starts than it has
    records (one move each)."""
    locations: Mapping[str, Sequence[str]] = truth.get("locations", {})
    starts: dict[str, int] = {}
    for entry in truth.get("move_starts", {}).values():
        if entry.get("vm"):
            starts[entry["vm"]] = starts.get(entry["vm"], 0) + int(entry.get("starts", 0))
    result = Placement()
    asked: Counter[str] = Counter()
    last: dict[str, MoveRecord] = {}
    for record in records:
        asked[record.vm] += 1
        # A plan may move a VM there and back: where it is now is its latest move's business.
        if record.vm not in last or record.ended >= last[record.vm].ended:
            last[record.vm] = record
    for record in last.values():
        where = [host.casefold() for host in locations.get(record.vm, ())]
        result.vms += 1
        if len(where) > 1:
            result.on_several.append(f"{record.vm}: {', '.join(where)}")
            continue
        if not where:
            result.on_none.append(f"{record.vm}: nowhere")
            continue
        result.on_one += 1
        state = record.state
        if state in _ON_DESTINATION and where[0] != record.destination.casefold():
            result.moved_elsewhere.append(f"{record.vm}: on {where[0]}, moved to {record.destination}")
        if state in _NEVER_STARTED and where[0] != record.source.casefold():
            result.unstarted_elsewhere.append(f"{record.vm}: on {where[0]}, never left {record.source}")
    for vm, count in sorted(starts.items()):
        if vm in asked and count > asked[vm]:
            result.started_twice.append(f"{vm}: {count} starts")
    return result


def settle(lab: LabProcess, deadline_seconds: float = 120.0) -> bool:
    """Wait (bounded) until no migration job runs in the lab: a move stopped mid-flight finishes on the hosts.
    False when some still ran at the deadline."""
    ends = time.monotonic() + deadline_seconds
    while time.monotonic() < ends:
        if not any(job.get("active") for job in lab.jobs_truth().get("jobs", [])):
            return True
        time.sleep(1.0)
    return False


async def save_histories(client: Client, workflow_id: str, directory: Path) -> list[Path]:
    """Every run of `workflow_id` written to `directory` as `<id>.run<N>.json` (oldest first), in the JSON form
    `temporal workflow show --output json` writes and `WorkflowHistory.from_json` reads."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for number, run_id in enumerate(await run_ids(client, workflow_id), start=1):
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        path = directory / f"{workflow_id}.run{number}.json"
        path.write_text(history.to_json())
        written.append(path)
    return written


def signal_time(events: Sequence[HistoryEvent], name: str) -> float | None:
    """When the run first received the signal `name` (None: never)."""
    for event in events:
        if _kind(event) == "WORKFLOW_EXECUTION_SIGNALED" and _label(event) == name:
            return _at(event)
    return None


def activity_seconds(events: Sequence[HistoryEvent], *, since: float | None = None) -> dict[str, list[float]]:
    """Per activity type, how long each of its runs in this history took (last attempt started to closed), in
    real seconds; with `since`, only the runs that started then or later."""
    scheduled: dict[int, str] = {}
    started: dict[int, float] = {}
    spans: dict[str, list[float]] = {}
    for event in events:
        kind = _kind(event)
        if kind == "ACTIVITY_TASK_SCHEDULED":
            scheduled[event.event_id] = _label(event)
        elif kind == "ACTIVITY_TASK_STARTED":
            started[_attributes(event).scheduled_event_id] = _at(event)
        elif kind in _ACTIVITY_CLOSED:
            origin = _attributes(event).scheduled_event_id
            if origin in scheduled and origin in started and (since is None or started[origin] >= since):
                spans.setdefault(scheduled[origin], []).append(_at(event) - started[origin])
    return spans
