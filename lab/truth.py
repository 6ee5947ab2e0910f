"""The lab's true state, for assertions: what really is where, independent of what any host reports.

A test or a rehearsal asks "did the VM end up on the destination, exactly once, with nothing left on the
source?"; the engine can only infer that through cmdlets, the lab knows it. `world_truth()` returns plain
JSON-able dicts (served as GET /truth by the control API), read under the world's lock so one snapshot is
consistent.

It also reads the deliberate problems a topology file documents with `# PROBLEM[<id>]: <text>` comments,
so a rehearsal can compare what the engine's preflight found with what the estate was built to contain.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lab.model.directory import NOT_DELEGATED, Directory
from lab.model.state import Host, VirtualMachine, World

if TYPE_CHECKING:
    from lab.model.migration import MigrationJob

_PROBLEM = re.compile(r"^\s*#\s*PROBLEM\[(?P<id>[A-Za-z0-9_.-]+)\]:\s*(?P<text>.*)$")
_COMMENT = re.compile(r"^\s*#\s?(?P<text>.*)$")


@dataclass(frozen=True)
class DocumentedProblem:
    """One `# PROBLEM[<id>]: ...` comment of a topology file (its continuation lines joined)."""

    id: str
    text: str
    line: int


def documented_problems(path: Path) -> list[DocumentedProblem]:
    """The deliberate problems a topology file documents, in file order."""
    problems: list[DocumentedProblem] = []
    current: tuple[str, list[str], int] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        marker = _PROBLEM.match(line)
        comment = _COMMENT.match(line)
        if marker:
            if current:
                problems.append(DocumentedProblem(current[0], " ".join(current[1]), current[2]))
            current = (marker["id"], [marker["text"].strip()], number)
        elif current and comment and comment["text"].strip():
            current[1].append(comment["text"].strip())
        elif current:
            problems.append(DocumentedProblem(current[0], " ".join(current[1]), current[2]))
            current = None
    if current:
        problems.append(DocumentedProblem(current[0], " ".join(current[1]), current[2]))
    return problems


class JobSource(Protocol):
    """What truth needs of the migration engine: the jobs each host lists."""

    def jobs(self, host: str) -> list[MigrationJob]: ...


def _plain(value: Any) -> Any:
    """JSON-able form of the model's values: enums by name, GUIDs and times as strings."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _vm(host: Host, vm: VirtualMachine) -> dict[str, Any]:
    return {
        "name": vm.name,
        "id": str(vm.id),
        "host": host.name,
        "state": vm.state.name,
        "planned": vm.planned,
        "clustered": vm.is_clustered,
        "version": vm.version,
        "memory_startup": vm.memory_startup,
        "backup_in_progress": vm.backup_in_progress,
        "checkpoints": [c.name for c in vm.checkpoints],
        "disks": [d.path for d in vm.disks],
        "passthrough_disks": [d.disk_number for d in vm.disks if d.is_passthrough],
        "iso": [d.path for d in vm.dvd_drives if d.path],
        "switches": sorted({a.switch_name for a in vm.adapters if a.switch_name}),
        "path": vm.path,
    }


def _host(host: Host) -> dict[str, Any]:
    lm = host.live_migration
    return {
        "name": host.name,
        "fqdn": host.fqdn,
        "os": host.os.value,
        "cluster": host.cluster,
        "cpu_vendor": host.cpu.manufacturer,
        "memory_capacity": host.memory_capacity,
        "memory_available": host.memory_available(),
        "volumes": {
            d: {"size": v.size, "free": host.free_space(d), "label": v.label} for d, v in sorted(host.volumes.items())
        },
        "files": [
            {"path": f.path, "size": f.size, "partial": f.partial}
            for f in sorted(host.files.values(), key=lambda f: f.path.lower())
        ],
        "live_migration": {
            "enabled": lm.enabled,
            "authentication": lm.authentication.name,
            "performance": lm.performance.name,
            "use_any_network": lm.use_any_network,
            "max_vm_migrations": lm.max_vm_migrations,
            "max_storage_migrations": lm.max_storage_migrations,
        },
        "migration_networks": [{"subnet": n.subnet, "priority": n.priority} for n in lm.networks],
        "switches": [s.name for s in host.switches],
        "nics": [
            {"name": n.name, "ip": n.ip, "bandwidth_bps": n.bandwidth_bps, "bindings": dict(n.bindings)}
            for n in host.nics
        ],
        "firewall_live_migration_open": host.live_migration_port_open(),
        "smb2_enabled": host.smb2_enabled,
        "vmms_restarts": host.vmms_restarts,
    }


def _account(directory: Directory, name: str) -> dict[str, Any] | None:
    account = directory.computer(name)
    if account is None:
        return None
    return {
        "allowed_to_delegate_to": sorted(account.allowed_to_delegate_to, key=str.lower),
        "protocol_transition": account.protocol_transition,
        "unconstrained": account.unconstrained,
        "sensitive": bool(account.user_account_control & NOT_DELEGATED),
    }


def _job(job: MigrationJob) -> dict[str, Any]:
    return {
        "instance_id": job.instance_id,
        "source": job.source,
        "destination": job.destination,
        "vm_id": str(job.vm_id),
        "vm_name": job.vm_name,
        "state": _plain(job.state),
        "active": not job.finished,
        "percent_complete": job.percent_complete,
        "error_code": job.error_code,
        "error_summary": job.error_summary,
        "element_name": job.element_name,
        "time_submitted": _plain(job.time_submitted),
        "end_time": _plain(job.end_time),
    }


class WinRMUsageSource(Protocol):
    """A host's WinRM service as the truth reads it (`lab.wsman.HostEndpoint`)."""

    def winrm_usage(self) -> dict[str, Any]: ...


def winrm_truth(endpoints: Mapping[str, WinRMUsageSource]) -> dict[str, Any]:
    """Per host, WinRM's quotas and what the clients use of them, so a test or benchmark can check that a
    client stays under them: `max_shells_per_user`, `max_commands_per_shell`, `shells_per_user` (user ->
    open shells), `shells` (every open shell with its user and the Commands it has run), and `refused`
    (`shells`, `commands`: what the quotas refused since the lab started)."""
    return {name: endpoint.winrm_usage() for name, endpoint in endpoints.items()}


def jobs_truth(world: World, engine: JobSource | None = None) -> dict[str, Any]:
    """What a watcher of migration jobs needs, without the VMs: `time`, `time_scale`, `limits` (host -> the
    migrations it runs at once: its cluster's limit on a cluster node, else its own setting) and `jobs` as in
    `world_truth`. Building the whole truth of 10,000 VMs holds the world's lock for about a second, during which
    no cmdlet of any host runs; this holds it for the hosts' settings only."""
    with world.lock:
        limits = {name: host.live_migration.max_vm_migrations for name, host in world.hosts.items()}
        for cluster in world.clusters.values():
            for node in cluster.nodes:
                limits[node] = cluster.max_parallel_migrations
        truth: dict[str, Any] = {
            "time": world.clock.now().isoformat(),
            "time_scale": world.clock.time_scale,
            "limits": limits,
        }
        host_names = list(world.hosts)
    truth["jobs"] = _jobs(engine, host_names)
    return truth


def world_truth(world: World, engine: JobSource | None = None) -> dict[str, Any]:
    """A consistent snapshot of the world as plain dicts.

    Keys: `time` (simulated, ISO), `time_scale`, `vms` (one entry per registration: a VM left planned on a
    destination appears twice, once with `planned: true`), `locations` (VM name -> hosts where it is
    realized; more than one is a bug), `hosts` (files, settings, directory entry), `clusters` (roles and
    owners), `move_starts` (VM id -> how many moves were started), `jobs` (every migration job the hosts
    list, `active` or recently ended).
    """
    with world.lock:
        vms = [_vm(host, vm) for host in world.hosts.values() for vm in host.vms.values()]
        names = {uuid.UUID(v["id"]): v["name"] for v in vms}
        locations: dict[str, list[str]] = {}
        for entry in vms:
            if not entry["planned"]:
                locations.setdefault(entry["name"], []).append(entry["host"])
        truth: dict[str, Any] = {
            "time": world.clock.now().isoformat(),
            "time_scale": world.clock.time_scale,
            "domain": world.domain,
            "vms": vms,
            "locations": locations,
            "hosts": {name: _host(host) for name, host in world.hosts.items()},
            "clusters": {
                name: {
                    "nodes": list(cluster.nodes),
                    "max_parallel_migrations": cluster.max_parallel_migrations,
                    "service_running": cluster.service_running,
                    "roles": [
                        {
                            "name": g.name,
                            "vm_id": _plain(g.vm_id),
                            "owner_node": g.owner_node,
                            "state": g.state.name,
                            "priority": g.priority,
                            "preferred_owners": list(g.preferred_owners),
                            "anti_affinity_class_names": list(g.anti_affinity_class_names),
                        }
                        for g in cluster.groups.values()
                    ],
                }
                for name, cluster in world.clusters.items()
            },
            "move_starts": {
                str(vm_id): {"vm": names.get(vm_id), "starts": count} for vm_id, count in world.move_starts.items()
            },
        }
        host_names = list(world.hosts)
        directory = world.directory
    # A real directory is read over the network: never while holding the lock every cmdlet needs.
    for name in host_names:
        truth["hosts"][name]["directory"] = _account(directory, name)
    truth["jobs"] = _jobs(engine, host_names)
    return truth


def _jobs(engine: JobSource | None, host_names: list[str]) -> list[dict[str, Any]]:
    """Every job the hosts list. The engine has its own lock and may take the world's inside it: call this only
    after releasing the world's."""
    return [_job(job) for name in host_names for job in engine.jobs(name)] if engine is not None else []
