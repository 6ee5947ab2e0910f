"""Faults a rehearsal injects into the lab: partitions, full volumes, memory pressure, vmms restarts, lost moves.

Every fault has an id, a window in simulated seconds (lab.model.clock) and ends on its own; `clear` ends it
early. Faults that change what a host *is* (a full volume, less free memory) change the world itself, so
every view of it (Get-Volume, Get-VMHost, a move's checks) agrees: `fill_volume` writes a filler file,
`memory_pressure` raises the memory the management OS holds; both are undone when the window ends.
Wire-level faults (`refuse_winrm`, `slow_host`) only record the window and tell the listeners that lab
assembly registered for the HTTP endpoints (`on_winrm_refuse`, `on_slow`); listeners may be called while
`world.lock` is held, so they must be quick and must not wait on another thread. Faults of a move in flight are
read by `lab.model.migration.MoveEngine`, which is given the injector.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.model.state import Host, World

# A one-shot fault that nothing triggers still ends: an hour of simulated time unless told otherwise.
DEFAULT_ONE_SHOT_SECONDS = 3600.0
# How long vmms takes to come back after a restart: moves to or from the host are refused meanwhile.
DEFAULT_VMMS_RESTART_SECONDS = 5.0


class FaultKind(enum.StrEnum):
    PARTITION = "partition"
    REFUSE_WINRM = "refuse_winrm"
    SLOW_HOST = "slow_host"
    RESTART_VMMS = "restart_vmms"
    FILL_VOLUME = "fill_volume"
    MEMORY_PRESSURE = "memory_pressure"
    FAIL_MOVE_AT = "fail_move_at"
    LEAVE_SOURCE_FILES = "leave_source_files"
    GUEST_HEARTBEAT = "guest_heartbeat"


@dataclass
class Fault:
    """One injected fault. Times are simulated seconds since the lab started."""

    id: str
    kind: FaultKind
    started: float
    ends: float
    hosts: tuple[str, ...] = ()
    vm_name: str | None = None
    percent: int | None = None  # fail_move_at: the move dies when it reaches this percent
    action: str = ""  # fail_move_at: "reset" (the connection breaks) or "partition" (a partition starts)
    partition_seconds: float = 0.0
    delay: float = 0.0  # slow_host: seconds added to each WinRM answer
    drive: str | None = None
    amount: int = 0  # fill_volume: bytes of the filler file; memory_pressure: bytes taken
    filler_path: str | None = None
    heartbeat: str = ""  # guest_heartbeat: the VMHeartbeatStatus name the VM's guest reads meanwhile
    ended: bool = False
    triggered: bool = False  # a one-shot fault that fired

    def to_dict(self, now: float) -> dict[str, Any]:
        """The control API's view of the fault."""
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "started": round(self.started, 3),
            "ends": round(self.ends, 3),
            "remaining_seconds": round(max(0.0, self.ends - now), 3),
            "hosts": list(self.hosts),
        }
        for name in ("vm_name", "percent", "drive"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.kind == FaultKind.FAIL_MOVE_AT:
            data["action"] = self.action
            if self.action == "partition":
                data["partition_seconds"] = self.partition_seconds
        if self.kind == FaultKind.SLOW_HOST:
            data["delay"] = self.delay
        if self.kind == FaultKind.GUEST_HEARTBEAT:
            data["heartbeat"] = self.heartbeat
        if self.kind in (FaultKind.FILL_VOLUME, FaultKind.MEMORY_PRESSURE):
            data["bytes"] = self.amount
        return data


WinRMRefuseListener = Callable[[str, bool], None]  # (host, refusing)
SlowListener = Callable[[str, float], None]  # (host, delay in seconds; 0 when the window ends)
VmmsRestartHook = Callable[[str], None]  # (host): kill what vmms was running


class FaultInjector:
    """The lab's fault injection. Thread-safe (it works under `world.lock`)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._refuse_listeners: list[WinRMRefuseListener] = []
        self._slow_listeners: list[SlowListener] = []
        self._restart_hooks: list[VmmsRestartHook] = []
        self._sweeping = False

    # -- registration ------------------------------------------------------------------------------------
    def on_winrm_refuse(self, listener: WinRMRefuseListener) -> None:
        """Called with (host, True) when a refuse window opens and (host, False) when it ends."""
        self._refuse_listeners.append(listener)

    def on_slow(self, listener: SlowListener) -> None:
        """Called with (host, delay) when a slow window opens and (host, 0.0) when it ends."""
        self._slow_listeners.append(listener)

    def on_vmms_restart(self, hook: VmmsRestartHook) -> None:
        """The move engine registers here to kill the moves a restarted vmms was running."""
        self._restart_hooks.append(hook)

    # -- helpers -------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.world.clock.elapsed()

    def _host(self, name: str) -> Host:
        host = self.world.host(name)
        if host is None:
            raise KeyError(f"unknown host {name!r}")
        return host

    @staticmethod
    def _positive(seconds: float) -> float:
        if seconds <= 0:
            raise ValueError(f"a fault's duration must be positive, got {seconds}")
        return float(seconds)

    def _add(self, kind: FaultKind, seconds: float, **fields: Any) -> Fault:
        now = self._now()
        fault = Fault(
            id=f"{kind.value}-{next(self._ids)}", kind=kind, started=now, ends=now + self._positive(seconds), **fields
        )
        self._faults[fault.id] = fault
        return fault

    def _live(self, kind: FaultKind) -> list[Fault]:
        # A fault whose window has passed is ended here too, not only on the move engine's next tick, so
        # whoever asks sees `ended` agree with what the query answers.
        self.sweep()
        now = self._now()
        return [f for f in self._faults.values() if f.kind == kind and not f.ended and f.ends > now]

    # -- network -------------------------------------------------------------------------------------------
    def partition(self, host_a: str, host_b: str, seconds: float) -> Fault:
        """The two hosts cannot reach each other: moves between them in flight fail with 0x80072746 (reset),
        new ones with 0x8007274C (timeout)."""
        with self.world.lock:
            self.sweep()
            a, b = self._host(host_a), self._host(host_b)
            return self._add(FaultKind.PARTITION, seconds, hosts=(a.name, b.name))

    def partitioned(self, host_a: str, host_b: str) -> bool:
        pair = {host_a.upper().split(".", 1)[0], host_b.upper().split(".", 1)[0]}
        with self.world.lock:
            return any(set(f.hosts) == pair for f in self._live(FaultKind.PARTITION))

    def refuse_winrm(self, host: str, seconds: float) -> Fault:
        """WinRM on the host refuses connections for a while (the HTTP endpoints ask `winrm_refused`)."""
        with self.world.lock:
            self.sweep()
            fault = self._add(FaultKind.REFUSE_WINRM, seconds, hosts=(self._host(host).name,))
        for listener in list(self._refuse_listeners):
            listener(fault.hosts[0], True)
        return fault

    def winrm_refused(self, host: str) -> bool:
        name = host.upper().split(".", 1)[0]
        with self.world.lock:
            return any(name in f.hosts for f in self._live(FaultKind.REFUSE_WINRM))

    def slow_host(self, host: str, seconds: float, delay: float) -> Fault:
        """Every WinRM answer of the host takes `delay` seconds longer for a while."""
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        with self.world.lock:
            self.sweep()
            fault = self._add(FaultKind.SLOW_HOST, seconds, hosts=(self._host(host).name,), delay=float(delay))
        for listener in list(self._slow_listeners):
            listener(fault.hosts[0], fault.delay)
        return fault

    def slow_delay(self, host: str) -> float:
        """The extra delay of the host's WinRM answers now (the largest active window)."""
        name = host.upper().split(".", 1)[0]
        with self.world.lock:
            return max((f.delay for f in self._live(FaultKind.SLOW_HOST) if name in f.hosts), default=0.0)

    # -- host --------------------------------------------------------------------------------------------
    def restart_vmms(self, host: str, seconds: float = DEFAULT_VMMS_RESTART_SECONDS) -> Fault:
        """Restart the Virtual Machine Management Service: the moves it ran die, and for `seconds` it
        answers no migration connection. Running VMs keep running (their worker processes survive)."""
        with self.world.lock:
            self.sweep()
            target = self._host(host)
            target.vmms_restarts += 1
            fault = self._add(FaultKind.RESTART_VMMS, seconds, hosts=(target.name,))
            for hook in list(self._restart_hooks):
                hook(target.name)
        return fault

    def vmms_down(self, host: str) -> bool:
        name = host.upper().split(".", 1)[0]
        with self.world.lock:
            return any(name in f.hosts for f in self._live(FaultKind.RESTART_VMMS))

    def fill_volume(self, host: str, drive: str, seconds: float, leave_bytes: int = 0) -> Fault:
        """Fill a volume until only `leave_bytes` are free, with a filler file removed when the window ends."""
        with self.world.lock:
            self.sweep()
            target = self._host(host)
            letter = drive.upper().rstrip(":\\")
            if letter not in target.volumes:
                raise KeyError(f"{target.name} has no volume {letter}:")
            fault = self._add(FaultKind.FILL_VOLUME, seconds, hosts=(target.name,), drive=letter)
            fault.amount = max(0, target.free_space(letter) - max(0, leave_bytes))
            fault.filler_path = f"{letter}:\\lab-fault-{fault.id}.fill"
            target.add_file(fault.filler_path, fault.amount)
            return fault

    def memory_pressure(self, host: str, amount: int, seconds: float) -> Fault:
        """Something else takes `amount` bytes of the host's memory for a while."""
        if amount <= 0:
            raise ValueError(f"memory pressure must be positive, got {amount}")
        with self.world.lock:
            self.sweep()
            target = self._host(host)
            fault = self._add(FaultKind.MEMORY_PRESSURE, seconds, hosts=(target.name,), amount=int(amount))
            target.memory_reserved += fault.amount
            return fault

    # -- moves -------------------------------------------------------------------------------------------
    def fail_move_at(
        self,
        vm_name: str,
        percent: int,
        *,
        kind: str = "reset",
        seconds: float = DEFAULT_ONE_SHOT_SECONDS,
        partition_seconds: float = 60.0,
    ) -> Fault:
        """One-shot: the next move of the VM dies when it reaches `percent`.

        kind "reset": the connection breaks (0x80072746); "partition": a partition between its two hosts
        starts then, for `partition_seconds`, and breaks it the same way.
        """
        if not 0 <= percent <= 99:
            raise ValueError(f"percent must be between 0 and 99, got {percent}")
        if kind not in ("reset", "partition"):
            raise ValueError(f"kind must be 'reset' or 'partition', got {kind!r}")
        with self.world.lock:
            self.sweep()
            return self._add(
                FaultKind.FAIL_MOVE_AT,
                seconds,
                vm_name=vm_name,
                percent=int(percent),
                action=kind,
                partition_seconds=self._positive(partition_seconds),
            )

    def partition_at_percent(
        self, vm_name: str, percent: int, seconds: float, *, armed_for: float = DEFAULT_ONE_SHOT_SECONDS
    ) -> Fault:
        """When the VM's next move reaches `percent`, partition its two hosts for `seconds`."""
        return self.fail_move_at(vm_name, percent, kind="partition", seconds=armed_for, partition_seconds=seconds)

    def leave_source_files(self, vm_name: str, seconds: float = DEFAULT_ONE_SHOT_SECONDS) -> Fault:
        """One-shot: the VM's next successful move leaves its files on the source."""
        with self.world.lock:
            self.sweep()
            return self._add(FaultKind.LEAVE_SOURCE_FILES, seconds, vm_name=vm_name)

    # -- guests --------------------------------------------------------------------------------------------
    def guest_heartbeat(self, vm_name: str, heartbeat: str, seconds: float) -> Fault:
        """For `seconds`, the VM's guest heartbeat reads `heartbeat` (NoContact while a guest boots,
        LostCommunication after its integration service reconnects: catalogue 6.4), wherever the VM runs."""
        with self.world.lock:
            self.sweep()
            return self._add(FaultKind.GUEST_HEARTBEAT, seconds, vm_name=vm_name, heartbeat=heartbeat)

    def heartbeat_of(self, vm_name: str) -> str | None:
        """The heartbeat a live guest_heartbeat fault imposes on the VM, or None. Read from the fault's window,
        not from a sweep, so it ends on time even when nothing else happens in the lab."""
        with self.world.lock:
            faults = [f for f in self._live(FaultKind.GUEST_HEARTBEAT) if (f.vm_name or "").lower() == vm_name.lower()]
            return faults[-1].heartbeat if faults else None

    def armed_move_faults(self, vm_name: str) -> list[Fault]:
        """The fail_move_at faults waiting for the VM's move, lowest percent first."""
        with self.world.lock:
            faults = [f for f in self._live(FaultKind.FAIL_MOVE_AT) if (f.vm_name or "").lower() == vm_name.lower()]
            return sorted(faults, key=lambda f: f.percent or 0)

    def trigger(self, fault: Fault) -> None:
        """A one-shot fault fired: it is spent."""
        with self.world.lock:
            fault.triggered = True
            self._end(fault)

    def take_leave_source_files(self, vm_name: str) -> Fault | None:
        """Spend the VM's leave_source_files fault, if one is armed."""
        with self.world.lock:
            for fault in self._live(FaultKind.LEAVE_SOURCE_FILES):
                if (fault.vm_name or "").lower() == vm_name.lower():
                    self.trigger(fault)
                    return fault
            return None

    # -- listing and ending --------------------------------------------------------------------------------
    def active(self) -> list[Fault]:
        """Faults in force now, oldest first."""
        with self.world.lock:
            self.sweep()
            return [f for f in self._faults.values() if not f.ended]

    def snapshot(self) -> list[dict[str, Any]]:
        """The active faults as plain dicts, for the control API."""
        with self.world.lock:
            now = self._now()
            return [f.to_dict(now) for f in self.active()]

    def get(self, fault_id: str) -> Fault | None:
        return self._faults.get(fault_id)

    def clear(self, fault_id: str) -> bool:
        """End a fault now; False when no such fault is active."""
        with self.world.lock:
            fault = self._faults.get(fault_id)
            if fault is None or fault.ended:
                return False
            self._end(fault)
            return True

    def clear_all(self) -> int:
        with self.world.lock:
            live = [f for f in self._faults.values() if not f.ended]
            for fault in live:
                self._end(fault)
            return len(live)

    def sweep(self) -> None:
        """End every fault whose window has passed (the move engine calls this on each tick)."""
        with self.world.lock:
            if self._sweeping:  # ending a fault asks queries that sweep; one sweep at a time is enough
                return
            self._sweeping = True
            try:
                now = self._now()
                for fault in list(self._faults.values()):
                    if not fault.ended and fault.ends <= now:
                        self._end(fault)
            finally:
                self._sweeping = False
            # Forget faults that ended long ago so a long rehearsal does not accumulate them.
            for fault_id in [i for i, f in self._faults.items() if f.ended and f.ends < now - 3600.0]:
                del self._faults[fault_id]

    def _end(self, fault: Fault) -> None:
        fault.ended = True
        fault.ends = min(fault.ends, self._now())
        host = self.world.hosts.get(fault.hosts[0]) if fault.hosts else None
        if fault.kind == FaultKind.FILL_VOLUME and host is not None and fault.filler_path:
            host.remove_file(fault.filler_path)
        elif fault.kind == FaultKind.MEMORY_PRESSURE and host is not None:
            host.memory_reserved = max(0, host.memory_reserved - fault.amount)
        elif fault.kind == FaultKind.REFUSE_WINRM and host is not None:
            if not self.winrm_refused(host.name):
                for refuse in list(self._refuse_listeners):
                    refuse(host.name, False)
        elif fault.kind == FaultKind.SLOW_HOST and host is not None:
            delay = self.slow_delay(host.name)
            for slow in list(self._slow_listeners):
                slow(host.name, delay)
