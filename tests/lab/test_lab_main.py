"""`python -m lab` as a person runs it: a subprocess that starts, prints its summary, serves, and stops cleanly."""

from __future__ import annotations

import json
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import requests
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from lab.inventory import load_inventory
from lab.model.topology import DEFAULT_TOPOLOGY

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
PAIR = DEFAULT_TOPOLOGY.with_name("pair.yaml")
READY = "Ctrl-C stops the lab."


class LabProcess:
    """A `python -m lab` child; its output is read on a thread so the pipe never fills."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], into: list[str], notify: bool) -> None:
        for line in stream:
            into.append(line)
            if notify:
                self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return
        raise AssertionError(f"no {text!r} from python -m lab; stdout={self.output!r} stderr={self.errors!r}")

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    @property
    def output(self) -> str:
        return "".join(self.stdout)

    @property
    def errors(self) -> str:
        return "".join(self.stderr)

    def kill(self) -> None:
        # Only the child this test started, by its own handle.
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[type[LabProcess]]:
    started: list[LabProcess] = []

    class Tracked(LabProcess):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for process in started:
        process.kill()


def test_runs_serves_and_stops_on_sigint(tmp_path: Path, spawn: type[LabProcess]) -> None:
    inventory_path = tmp_path / "out" / "inventory.yaml"
    lab = spawn("--topology", str(PAIR), "--inventory-out", str(inventory_path), "--time-scale", "120")
    lab.wait_for_line(READY, timeout=30)
    summary = lab.output
    assert "2 simulated Hyper-V hosts" in summary
    assert "time x120" in summary
    assert "5 VMs, 0 clusters, 0 deliberate problems" in summary
    for text in ("HV-A", "HV-B", str(inventory_path), "ca.pem", "control.token", "LAB\\svc-snlm-", "ntlm"):
        assert text in summary

    # The inventory is complete, and holds no secret.
    inventory = load_inventory(inventory_path)
    assert set(inventory.hosts) == {"HV-A", "HV-B"}
    entry = inventory.host("HV-A")
    assert entry.password_file is not None
    password = entry.resolve_password().get_secret_value()
    assert password not in inventory_path.read_text()
    assert password not in summary
    assert stat.S_IMODE(entry.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.password_file.parent.stat().st_mode) == 0o700

    # It serves: WinRM from the inventory, and the control API from lab.json and the token file.
    wsman = WSMan(
        entry.address,
        port=entry.effective_port,
        ssl=False,
        auth=entry.auth,
        username=entry.username,
        password=password,
        connection_timeout=5,
        read_timeout=30,
        operation_timeout=20,
    )
    with RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-VMHost")
        (host,) = ps.invoke()
        assert host.adapted_properties["Name"] == "HV-A"
    state = json.loads((inventory_path.parent / "lab.json").read_text())
    assert state["pid"] == lab.proc.pid
    token = Path(state["control_token_file"]).read_text().strip()
    truth = requests.get(f"{state['control_url']}/truth", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert truth.json()["locations"]["vm-b1"] == ["HV-B"]

    lab.proc.send_signal(signal.SIGINT)
    assert lab.finish(timeout=20) == 0, lab.errors
    assert "lab stopped." in lab.output
    assert "Traceback" not in lab.errors
    # The secrets died with the lab; the inventory and CA stay for inspection.
    assert not entry.password_file.exists()
    assert not Path(state["control_token_file"]).exists()
    assert inventory_path.exists()


def test_default_topology_summary_and_sigterm(tmp_path: Path, spawn: type[LabProcess]) -> None:
    lab = spawn("--inventory-out", str(tmp_path / "inventory.yaml"), "--scheme", "https", "--auth", "basic")
    lab.wait_for_line(READY, timeout=30)
    summary = lab.output
    assert "9 simulated Hyper-V hosts" in summary
    assert "33 VMs, 2 clusters, 12 deliberate problems" in summary
    assert "scheme https" in summary
    for name in ("HV-E1", "HV-W2", "HV-S3", "HV-OLD", "CL-EAST", "2012R2", "AMD", "basic"):
        assert name in summary
    entry = load_inventory(tmp_path / "inventory.yaml").host("HV-OLD")
    assert entry.scheme == "https"
    assert entry.auth == "basic"
    assert entry.ca_file == tmp_path / "ca.pem"
    lab.proc.send_signal(signal.SIGTERM)
    assert lab.finish(timeout=20) == 0, lab.errors


def test_bad_topology_names_file_and_field(tmp_path: Path, spawn: type[LabProcess]) -> None:
    bad = tmp_path / "estate.yaml"
    bad.write_text(PAIR.read_text().replace("vendor: GenuineIntel", "vendor: Intel", 1))
    lab = spawn("--topology", str(bad), "--inventory-out", str(tmp_path / "inventory.yaml"))
    assert lab.finish(timeout=30) == 2
    assert f"{bad}: hosts[0].cpu.vendor" in lab.errors
    assert "Traceback" not in lab.errors
    assert not (tmp_path / "inventory.yaml").exists()
