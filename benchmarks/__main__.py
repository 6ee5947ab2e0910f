"""Run every benchmark, one after the other, each in its own process, and say at the end which could not run and why.

    .venv/bin/python -m benchmarks [--quick] [--only saga_bench,concurrency_bench]

A benchmark that fails (a missing Samba for the directory one, a deadline passed) does not stop the others: its
last lines of error output are kept for the summary, and the exit status is 1 when any could not run.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

# In the order `make bench` runs them; the flag each takes for a shorter run.
BENCHMARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lab_bench", ()),
    ("directory_bench", ()),
    ("saga_bench", ("--quick",)),
    ("concurrency_bench", ("--quick",)),
    ("makespan", ("--quick",)),
    ("scale", ("--quick",)),
)
# The longest any one benchmark may take before it is stopped (the concurrency one at full size takes minutes).
DEADLINE_SECONDS = 3600
# How long a benchmark past its deadline gets to end what it started after SIGTERM.
GRACE_SECONDS = 60


@dataclass
class Outcome:
    name: str
    status: int
    seconds: float
    why: str = ""


def run(name: str, arguments: list[str]) -> Outcome:
    started = time.monotonic()
    print(f"== {name} {' '.join(arguments)}".rstrip(), flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{name}", *arguments], stderr=subprocess.PIPE, text=True
    )
    try:
        _, errors = process.communicate(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmark's own clean-up ends the dev server, lab and workers it started, which a
        # SIGKILL would leave running.
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        return Outcome(name, -1, time.monotonic() - started, f"stopped after {DEADLINE_SECONDS} s")
    seconds = time.monotonic() - started
    if process.returncode == 0:
        return Outcome(name, 0, seconds)
    lines = [line for line in errors.splitlines() if line.strip()]
    return Outcome(name, process.returncode, seconds, " | ".join(lines[-3:]) or "no error output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the shorter run of each benchmark that has one")
    parser.add_argument("--only", help="comma-separated names, e.g. saga_bench,concurrency_bench")
    args = parser.parse_args(argv)
    names = [name for name, _ in BENCHMARKS]
    chosen = names if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)} (known: {', '.join(names)})")
    outcomes = [run(name, list(quick if args.quick else ())) for name, quick in BENCHMARKS if name in chosen]
    print("\n== summary")
    for outcome in outcomes:
        state = "ran" if outcome.status == 0 else f"could not run (status {outcome.status}): {outcome.why}"
        print(f"  {outcome.name:20s} {outcome.seconds:7.1f} s  {state}")
    return 0 if all(o.status == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
