"""A recording PipelineIO and a small lab world for in-process tests of HostRunner (the seam, not the wire)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from lab.cmdlets import HostRunner
from lab.commands import CommandSpec, ErrorSpec, ParameterSpec, PipelineRequest, TerminatingError
from lab.faults import FaultInjector
from lab.model.migration import MoveEngine
from lab.model.state import World
from lab.model.topology import build_world, parse_topology


@dataclass
class Progress:
    activity: str
    status: str
    percent: int
    completed: bool


@dataclass
class RecordingIO:
    output: list[Any] = field(default_factory=list)
    errors: list[ErrorSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verbose: list[str] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def write_output(self, value: Any) -> None:
        self.output.append(value)

    def write_error(self, spec: ErrorSpec) -> None:
        self.errors.append(spec)

    def write_warning(self, message: str) -> None:
        self.warnings.append(message)

    def write_verbose(self, message: str) -> None:
        self.verbose.append(message)

    def write_progress(
        self,
        activity: str,
        status: str,
        percent_complete: int = -1,
        *,
        activity_id: int = 0,
        completed: bool = False,
        seconds_remaining: int = -1,
    ) -> None:
        self.progress.append(Progress(activity, status, percent_complete, completed))

    @property
    def stop_event(self) -> threading.Event:
        return self._stop


TOPOLOGY: dict[str, Any] = {
    "lab": {"domain": "lab.test", "time_scale": 600},
    "hosts": [
        {
            "name": "HV01",
            "cpu": {"vendor": "GenuineIntel", "model": "Intel Xeon Gold 6230"},
            "memory_gb": 256,
            "volumes": [
                {"drive": "C", "size_gb": 200, "free_gb": 100},
                {"drive": "D", "size_gb": 2000, "free_gb": 1500, "label": "VMs"},
            ],
            "switches": [{"name": "Production"}],
            "nics": [{"name": "LM", "ip": "10.0.10.11"}, {"name": "Mgmt", "ip": "10.0.0.11"}],
            "live_migration": {
                "enabled": True,
                "authentication": "Kerberos",
                "networks": [{"subnet": "10.0.10.0/24", "priority": 5}],
            },
            "isos": [r"D:\ISO\tools.iso"],
        },
        {
            "name": "HV02",
            "cpu": {"vendor": "GenuineIntel", "model": "Intel Xeon Gold 6230"},
            "memory_gb": 256,
            "volumes": [
                {"drive": "C", "size_gb": 200, "free_gb": 100},
                {"drive": "D", "size_gb": 2000, "free_gb": 1500},
            ],
            "switches": [{"name": "Production"}],
            "nics": [{"name": "LM", "ip": "10.0.10.12"}],
            "live_migration": {"enabled": True, "authentication": "Kerberos", "networks": [{"subnet": "10.0.10.0/24"}]},
        },
        {
            "name": "HV03",
            "cpu": {"vendor": "AuthenticAMD", "model": "AMD EPYC 7543"},
            "memory_gb": 128,
            "volumes": [{"drive": "C", "size_gb": 200, "free_gb": 100}],
            "nics": [{"name": "LM", "ip": "10.0.10.13"}],
        },
        {
            "name": "HV04",
            "cpu": {"vendor": "AuthenticAMD", "model": "AMD EPYC 7543"},
            "memory_gb": 128,
            "volumes": [{"drive": "C", "size_gb": 200, "free_gb": 100}],
            "nics": [{"name": "LM", "ip": "10.0.10.14"}],
        },
    ],
    "clusters": [{"name": "CL01", "nodes": ["HV03", "HV04"]}],
    "vms": [
        {
            "name": "web01",
            "host": "HV01",
            "memory_gb": 4,
            "adapters": [{"switch": "Production", "ip": ["10.1.0.5"]}],
            "disks": [{"path": r"D:\Hyper-V\web01\web01.vhdx", "size_gb": 40, "file_gb": 10}],
            "iso": r"D:\ISO\tools.iso",
            "checkpoints": ["before-patch"],
        },
        {
            "name": "app02",
            "host": "HV01",
            "state": "Off",
            "memory_gb": 2,
            "disks": [{"path": r"D:\Hyper-V\app02\app02.vhdx", "size_gb": 20}],
        },
        {"name": "db01", "host": "HV03", "clustered": True, "cluster_role": {"preferred_owners": ["HV03"]}},
    ],
    "directory": {
        "HV01": {
            "allowed_to_delegate_to": ["Microsoft Virtual System Migration Service/HV02", "cifs/HV02"],
            "protocol_transition": True,
        },
        "HV02": {
            "allowed_to_delegate_to": ["Microsoft Virtual System Migration Service/HV01", "cifs/HV01"],
            "protocol_transition": True,
        },
    },
}


def make_world(**overrides: Any) -> World:
    raw = {**TOPOLOGY, **overrides}
    return build_world(parse_topology(raw))


class Lab:
    """A world, its engine and a runner per host."""

    def __init__(self, world: World | None = None, *, faults: bool = False) -> None:
        self.world = world or make_world()
        self.faults = FaultInjector(self.world) if faults else None
        self.engine = MoveEngine(self.world, faults=self.faults)

    def runner(self, host: str = "HV01") -> HostRunner:
        return HostRunner(self.world, self.engine, host, self.faults)

    def run(
        self,
        *commands: CommandSpec,
        host: str = "HV01",
        input: list[Any] | None = None,
        user: str = "LAB\\admin",
        auth: str = "kerberos",
    ) -> RecordingIO:
        io = RecordingIO()
        self.runner(host).run(PipelineRequest(list(commands), input=list(input or []), user=user, auth=auth), io)
        return io

    def fail(
        self, *commands: CommandSpec, host: str = "HV01", input: list[Any] | None = None
    ) -> tuple[ErrorSpec, RecordingIO]:
        io = RecordingIO()
        try:
            self.runner(host).run(PipelineRequest(list(commands), input=list(input or [])), io)
        except TerminatingError as error:
            return error.spec, io
        raise AssertionError(f"expected a terminating error, got output={io.output} errors={io.errors}")


SWITCH = object()  # add_parameter("Force") with no value: pypsrp sends <Nil/>, the engine gives is_switch=True


def cmd(name: str, *positional: Any, **named: Any) -> CommandSpec:
    """A command as pypsrp sends it: add_cmdlet(name).add_argument(...).add_parameter(k, v)."""
    params = [ParameterSpec(None, value) for value in positional]
    for key, value in named.items():
        if value is SWITCH:
            params.append(ParameterSpec(key, True, is_switch=True))
        else:
            params.append(ParameterSpec(key, value))
    return CommandSpec(name, tuple(params))


def prop(obj: Any, name: str) -> Any:
    """An adapted or extended property value (what pypsrp exposes as adapted_properties / extended_properties)."""
    for group in (obj.PSObject.adapted_properties, obj.PSObject.extended_properties):
        for p in group:
            if p.name == name:
                return p.get_value(obj)
    raise KeyError(name)


def adapted_names(obj: Any) -> list[str]:
    return [p.name for p in obj.PSObject.adapted_properties]


def extended_names(obj: Any) -> list[str]:
    return [p.name for p in obj.PSObject.extended_properties]
