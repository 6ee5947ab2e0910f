"""How fast a lab starts, how much memory it takes, and how many commands one simulated host serves.

    .venv/bin/python -m benchmarks.lab_bench [--hosts 20] [--vms 400] [--commands 200] [--auth ntlm]

The lab runs in its own process (`python -m lab`), as it does for a rehearsal, so the client below does
not share its interpreter. Figures:
- start: from launching `python -m lab` to its inventory being written (interpreter start included);
- memory: the lab process's resident set once it is up;
- commands per second against one host, `Get-VMHost` through an unmodified pypsrp client, two ways:
  a new runspace pool for every command (what an activity attempt does) and one pool reused,
  side by side with their ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from benchmarks.estate import estate_topology
from lab.inventory import HostEntry, load_inventory


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wsman(entry: HostEntry) -> WSMan:
    # pypsrp takes a CA bundle path here although its annotation says bool.
    validation: Any = str(entry.ca_file) if entry.ca_file else True
    return WSMan(
        entry.address,
        port=entry.effective_port,
        ssl=entry.use_tls,
        auth=entry.auth,
        username=entry.username,
        password=entry.resolve_password().get_secret_value(),
        cert_validation=validation,
        connection_timeout=10,
        read_timeout=30,
    )


def _one_command(pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-VMHost")
    output = ps.invoke()
    if ps.had_errors or len(output) != 1:
        raise RuntimeError(f"Get-VMHost failed: {ps.streams.error}")


def _per_second(count: int, run: object) -> float:
    assert callable(run)
    started = time.perf_counter()
    for _ in range(count):
        run()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--vms", type=int, default=400)
    parser.add_argument("--commands", type=int, default=200, help="commands on the reused pool")
    parser.add_argument("--pools", type=int, default=30, help="commands with a new pool each")
    parser.add_argument("--auth", default="ntlm", choices=("ntlm", "negotiate", "basic", "credssp"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="snlm-bench-") as tmp:
        workdir = Path(tmp)
        topology = workdir / "estate.yaml"
        topology.write_text(yaml.safe_dump(estate_topology(args.hosts, args.vms)), encoding="utf-8")
        inventory_path = workdir / "lab" / "inventory.yaml"
        scheme = "https" if args.auth == "basic" else "http"
        command = [sys.executable, "-m", "lab", "--topology", str(topology), "--inventory-out", str(inventory_path)]
        command += ["--auth", args.auth, "--scheme", scheme]
        started = time.perf_counter()
        lab = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = started + 60
            while not inventory_path.exists():
                if lab.poll() is not None:
                    raise SystemExit(
                        f"the lab exited with {lab.returncode}: {lab.stderr.read().decode() if lab.stderr else ''}"
                    )
                if time.perf_counter() > deadline:
                    raise SystemExit("the lab did not write its inventory within 60 s")
                time.sleep(0.01)
            start_seconds = time.perf_counter() - started
            rss = _rss_mib(lab.pid)

            entry = load_inventory(inventory_path).host("HV001")
            wsman = _wsman(entry)
            reused = RunspacePool(wsman)
            reused.open()
            _one_command(reused)  # warm up: the first command pays for the connection and authentication

            def fresh_pool() -> None:
                with RunspacePool(_wsman(entry)) as pool:
                    _one_command(pool)

            fresh_rates = [_per_second(max(1, args.pools // 3), fresh_pool) for _ in range(3)]
            reused_rates = [_per_second(max(1, args.commands // 3), lambda: _one_command(reused)) for _ in range(3)]
            reused.close()
            rss_after = _rss_mib(lab.pid)
        finally:
            lab.send_signal(signal.SIGINT)
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                lab.kill()
                lab.wait()

    fresh = statistics.median(fresh_rates)
    reused_rate = statistics.median(reused_rates)
    print(f"lab of {args.hosts} hosts and {args.vms} VMs ({os.cpu_count()} cores)")
    print(f"  start, launch to inventory written : {start_seconds:8.2f} s")
    print(f"  lab process memory once up         : {rss:8.1f} MiB (after the commands: {rss_after:.1f} MiB)")
    print(f"commands per second on one host ({args.auth} over {scheme}, Get-VMHost, median of 3 runs)")
    print(f"  new runspace pool per command      : {fresh:8.1f} /s")
    print(f"  one runspace pool reused           : {reused_rate:8.1f} /s")
    print(f"  ratio reused / new                 : {reused_rate / fresh:8.1f} x")


if __name__ == "__main__":
    main()
