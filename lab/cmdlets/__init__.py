"""The lab's cmdlets: the `CommandRunner` a simulated Hyper-V host runs each pipeline with.

`HostRunner(world, engine, host_name, faults)` resolves every command of a pipeline (unknown → the WinPS 5.1
CommandNotFoundException; a script → refused, the lab has no PowerShell parser), binds every command's
parameters before any runs (as PowerShell does), then runs them in order, each one's output becoming the
next one's pipeline input and the last one's going to `io.write_output`.
"""

from __future__ import annotations

from typing import Any

from lab.cmdlets import cim, cluster, hyperv_host, hyperv_vm, misc, move, network, storage  # noqa: F401 (registers)
from lab.cmdlets.base import REGISTRY, CmdletFunc, Context
from lab.cmdlets.binder import Bound, CmdletInfo, Kind, bind
from lab.cmdlets.errors import command_not_found, script_refused
from lab.commands import CommandSpec, PipelineIO, PipelineRequest, TerminatingError
from lab.faults import FaultInjector
from lab.model.migration import MoveEngine
from lab.model.state import World

__all__ = ["ALIASES", "REGISTRY", "HostRunner", "command_names"]

# Built-in aliases a client may use instead of the cmdlet name.
ALIASES: dict[str, str] = {
    "get-vmcheckpoint": "get-vmsnapshot",
    "select": "select-object",
    "gcim": "get-ciminstance",
    "icim": "invoke-cimmethod",
    "klist.exe": "klist",
    "del": "remove-item",
    "rm": "remove-item",
}


def _kept_properties(info: CmdletInfo, bound: Bound) -> frozenset[str] | None:
    """The property names a Select-Object keeps of each input object (lowercase), when they are plain names and it
    keeps nothing else; None for any other command or form."""
    if info.name != "Select-Object" or bound.has("ExpandProperty") or bound.has("ExcludeProperty"):
        return None
    names = bound.get("Property")
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(n, str) and not any(c in n for c in "*?[]") for n in names):
        return None
    return frozenset(n.lower() for n in names)


def command_names() -> list[str]:
    """Every command a lab host knows, with its real spelling."""
    return sorted(info.name for info, _ in REGISTRY.values())


def _lookup(name: str) -> tuple[CmdletInfo, CmdletFunc] | None:
    key = name.rsplit("\\", 1)[-1].lower()  # Module-qualified: Hyper-V\Get-VM
    key = ALIASES.get(key, key)
    return REGISTRY.get(key)


def _binds_one(info: CmdletInfo, bound: Bound) -> bool:
    """Whether the parameter the pipeline bound takes a single object (not an array)."""
    param = next((p for p in info.params if p.name == bound.pipeline_param), None)
    return param is not None and param.kind in (Kind.OBJECT, Kind.STRING, Kind.ANY)


class HostRunner:
    """Runs pipelines on one lab host. Thread-safe: one instance serves every pipeline of that host."""

    def __init__(self, world: World, engine: MoveEngine, host_name: str, faults: FaultInjector | None = None) -> None:
        host = world.host(host_name)
        if host is None:
            raise KeyError(f"unknown lab host {host_name!r}")
        self.world = world
        self.engine = engine
        self.host_name = host.name
        self.faults = faults

    def run(self, request: PipelineRequest, io: PipelineIO) -> None:
        resolved: list[tuple[CommandSpec, CmdletInfo, CmdletFunc]] = []
        with self.world.lock:
            for spec in request.commands:
                found = None if spec.is_script else _lookup(spec.name)
                label = "<script>" if spec.is_script else (found[0].name if found else spec.name)
                self.world.command_log.append((self.host_name, label))
        for spec in request.commands:
            if spec.is_script:
                raise TerminatingError(script_refused(spec.name))
            found = _lookup(spec.name)
            if found is None:
                raise TerminatingError(command_not_found(spec.name))
            resolved.append((spec, found[0], found[1]))

        # Command-line binding happens for every command before the first one runs, so a bad parameter on
        # the last command changes nothing. Commands fed by the pipeline are checked without their input.
        wanted: list[frozenset[str] | None] = [None] * len(resolved)
        for index, (spec, info, _) in enumerate(resolved):
            fed = index > 0 or bool(request.input)
            try:
                bound = bind(info, spec, request.input if index == 0 else ())
                if index > 0:
                    wanted[index - 1] = _kept_properties(info, bound)
            except TerminatingError as error:
                pipeline_dependent = error.spec.fully_qualified_error_id.split(",", 1)[0] in (
                    "MissingMandatoryParameter",
                    "AmbiguousParameterSet",
                )
                if not (fed and pipeline_dependent and any(p.pipeline for p in info.params)):
                    raise

        current: list[Any] = list(request.input)
        for index, (spec, info, func) in enumerate(resolved):
            last = index == len(resolved) - 1
            if index > 0 and not current and any(p.pipeline for p in info.params):
                # No input: the cmdlet's ProcessRecord never runs.
                current = []
                continue
            bound = bind(info, spec, current)
            records = [current]
            if len(current) > 1 and _binds_one(info, bound):
                # PowerShell runs ProcessRecord once per input object: a parameter that takes one object from
                # the pipeline (Move-VM -VM) gets each in turn, so `Get-VM web* | Move-VM` moves every VM.
                records = [[item] for item in current]
            produced: list[Any] = []
            for record in records:
                ctx = Context(
                    world=self.world,
                    engine=self.engine,
                    host_name=self.host_name,
                    faults=self.faults,
                    request=request,
                    io=io,
                    info=info,
                    bound=bound if record is current else bind(info, spec, record),
                    input=record,
                    wanted=wanted[index],
                )
                for item in func(ctx) or ():
                    if last:
                        io.write_output(item)
                    else:
                        produced.append(item)
                if io.stop_event.is_set():
                    return
            current = produced
            if io.stop_event.is_set():
                return
