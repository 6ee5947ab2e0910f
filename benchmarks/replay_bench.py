"""What a full replay of a workflow's history costs on this machine.

    .venv/bin/python -m benchmarks.replay_bench DIR_OR_FILES... [--repeat 3] [--profile 15]

A worker replays a run's whole history whenever it no longer holds the run in its cache: after a restart, after
an eviction, and after the server rejected a task's completion because new events arrived while it ran. The task
that continues a campaign as new is that case: it completes the run, and a move's end that arrives meanwhile
makes the server reject it, so the retry replays every event of the run, and a slow replay gives the next move's
end more time to arrive. This benchmark replays saved histories (`benchmarks.scale --save-histories DIR`, or any
`temporal workflow show --output json` file) with the worker's own workflows, in this process and without a
server, and prints per history its events, workflow tasks, the replay's wall and CPU time, and the time per
task; `--profile N` adds the N functions of the project's code with the most cumulative time in one replay.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOWS

REPO = Path(__file__).resolve().parents[1]
# Only the project's own frames are worth naming: the SDK's are the same in every replay.
_OWN = ("workflows/", "activities/", "config/")


def _histories(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"replay_bench: {path}: no such file or directory")
    if not found:
        raise SystemExit("replay_bench: no history (*.json) found in " + ", ".join(str(p) for p in paths))
    return found


def history_from_json(text: str) -> WorkflowHistory:
    """A history as exported (by `to_json()` or `temporal workflow show -o json`), under its real workflow id.

    The id matters: MigrateVm takes host slots with its workflow id as the holder, so a replay under another id
    misses its slot grants and reports a false nondeterminism (TMPRL1100 on the timer it cancelled).
    """
    data = json.loads(text)
    workflow_id = data["events"][0]["workflowExecutionStartedEventAttributes"]["workflowId"]
    return WorkflowHistory.from_json(workflow_id, data)


def load_history(path: Path) -> WorkflowHistory:
    try:
        return history_from_json(path.read_text())
    except (OSError, json.JSONDecodeError, LookupError, TypeError) as error:
        raise SystemExit(f"replay_bench: {path}: not a workflow history in JSON ({error!r})") from error


def new_replayer(executor: ThreadPoolExecutor | None = None) -> Replayer:
    """A replayer of every workflow the worker runs."""
    return Replayer(workflows=list(WORKFLOWS), workflow_task_executor=executor)


def _tasks(history: WorkflowHistory) -> int:
    return sum(1 for event in history.events if event.HasField("workflow_task_completed_event_attributes"))


class _ProfiledThread:
    """The one thread that runs workflow code in a replay (the SDK runs it on an executor, out of the reach of a
    profiler of the main thread), profiled while `on` is set."""

    def __init__(self) -> None:
        self.profile = cProfile.Profile()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay")

    def start(self) -> None:
        self.executor.submit(self.profile.enable).result()

    def stop(self) -> None:
        self.executor.submit(self.profile.disable).result()


async def replay(replayer: Replayer, history: WorkflowHistory) -> tuple[float, float, str]:
    """One full replay: wall seconds, CPU seconds of this process, and the failure's text (empty: none)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    error = result.replay_failure
    failure = "" if error is None else f"{type(error).__name__}: {error}"
    return time.perf_counter() - wall, time.process_time() - cpu, failure


def _own_frames(profile: cProfile.Profile, count: int) -> list[str]:
    stats = pstats.Stats(profile)
    rows: list[tuple[float, float, int, str]] = []
    everything = sum(own for (_, _, own, _, _) in stats.stats.values())  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        try:
            relative = str(Path(filename).resolve().relative_to(REPO))
        except ValueError:
            continue
        if relative.startswith(_OWN):
            rows.append((cumulative, own, calls, f"{relative}:{line} {name}"))
    rows.sort(reverse=True)
    mine = sum(own for _, own, _, _ in rows)
    head = f"    the project's own code: {mine:.3f} s of the {everything:.3f} s the workflow thread ran (profiled)"
    return [head] + [
        f"    {cumulative:7.3f} s cumulative {own:7.3f} s own {calls:9d} calls  {where}"
        for cumulative, own, calls, where in rows[:count]
    ]


async def run(args: argparse.Namespace) -> int:
    thread = _ProfiledThread()
    replayer = new_replayer(thread.executor)
    status = 0
    print(f"{'history':48s} {'events':>7s} {'tasks':>6s} {'wall s':>8s} {'cpu s':>8s} {'ms/task':>8s}")
    for path in _histories(args.paths):
        history = load_history(path)
        events, tasks = len(history.events), _tasks(history)
        walls: list[float] = []
        cpus: list[float] = []
        failure = ""
        for _ in range(args.repeat):
            wall, cpu, failure = await replay(replayer, history)
            walls.append(wall)
            cpus.append(cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        per_task = wall / tasks * 1000 if tasks else float("nan")
        print(f"{path.name[-48:]:48s} {events:7d} {tasks:6d} {wall:8.2f} {cpu:8.2f} {per_task:8.2f}", flush=True)
        if failure:
            status = 1
            print(f"    the replay failed: {failure[:300]}")
        if args.profile:
            thread.profile = cProfile.Profile()
            thread.start()
            await replay(replayer, history)
            thread.stop()
            print(f"  the project's code in one replay of {path.name} (top {args.profile} by cumulative time):")
            print("\n".join(_own_frames(thread.profile, args.profile)) or "    (none of the project's code ran)")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="history files (JSON) or folders of them")
    parser.add_argument("--repeat", type=int, default=3, help="replays per history; the median is printed")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="name the N costliest functions")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
