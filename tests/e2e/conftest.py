"""End-to-end fixtures: the real Temporal dev server, a lab of simulated Hyper-V hosts over the WinRM wire, and the
session's Samba AD DC as the directory both the lab and the engine use. Nothing is mocked.

Every test gets its own lab: its hosts are fresh Samba computer accounts (a domain join leaves them without
delegation, and the lab is given no delegation either), so the saga's `manage` policy must write the entries to
Samba and purge the hosts' tickets before a move can succeed. A fresh lab per test also means fresh host names,
so the HostSlots entity workflows (ids by host name, session-wide on the dev server) never cross tests; they are
terminated when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import ldap3
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.directory import DirectorySettings, SecretRef
from config.settings import Settings
from lab.lab import Lab
from lab.model.ldap_directory import LdapDirectory
from lab.model.topology import parse_topology
from starter.cli import query_progress
from tests.samba import SambaDomain
from worker import build_worker, release_worker
from workflows.contracts import (
    MigrateVmInput,
    MigrateVmResult,
    MigrationPolicy,
    MigrationProgress,
    host_slots_workflow_id,
    migrate_vm_workflow_id,
    migration_slots_workflow_id,
)
from workflows.migrate_vm import MigrateVmWorkflow

ADMIN_PASSWORD_ENV = "SNLM_E2E_DIRECTORY_ADMIN_PASSWORD"
DEFAULT_TIME_SCALE = 60.0
RESULT_TIMEOUT = 60.0  # wall seconds any one workflow may take in these tests

INTEL = {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "sockets": 1}
AMD = {"vendor": "AuthenticAMD", "model": "AMD EPYC 7543 32-Core Processor", "sockets": 1}
# Ready for Kerberos live migration over the migration network (as the "without Failover Clustering" guide sets up).
READY = {"enabled": True, "authentication": "Kerberos", "networks": [{"subnet": "10.10.10.0/24", "priority": 1}]}
# Hyper-V's defaults: disabled, CredSSP, no migration network. The saga changes these, and restores them on failure.
DEFAULTS: dict[str, Any] = {}


@dataclass(frozen=True)
class Names:
    """The hosts of one lab: fresh computer account names, unique in the session (at most 15 characters)."""

    tag: str

    @property
    def a1(self) -> str:  # node of cluster A
        return f"{self.tag}A1"

    @property
    def a2(self) -> str:  # node of cluster A
        return f"{self.tag}A2"

    @property
    def b1(self) -> str:  # node of cluster B (a second cluster: HA is restored there)
        return f"{self.tag}B1"

    @property
    def s1(self) -> str:  # standalone, ready
        return f"{self.tag}S1"

    @property
    def s2(self) -> str:  # standalone, Hyper-V's default live-migration settings
        return f"{self.tag}S2"

    @property
    def amd(self) -> str:  # standalone, AMD processors
        return f"{self.tag}AMD"

    @property
    def fw(self) -> str:  # standalone, the TCP 6600 firewall rule disabled
        return f"{self.tag}FW"

    @property
    def cluster_a(self) -> str:
        return f"{self.tag}CLA"

    @property
    def cluster_b(self) -> str:
        return f"{self.tag}CLB"

    def hosts(self) -> list[str]:
        return [self.a1, self.a2, self.b1, self.s1, self.s2, self.amd, self.fw]


def _host(name: str, index: int, *, cpu: dict[str, Any] = INTEL, lm: dict[str, Any] = READY, **extra: Any) -> dict:
    return {
        "name": name,
        "os": "2022",
        "cpu": cpu,
        "memory_gb": 256,
        "memory_reserved_gb": 4,
        "volumes": [
            {"drive": "C", "label": "System", "size_gb": 200, "free_gb": 120},
            {"drive": "D", "label": "VMs", "size_gb": 2000, "free_gb": 1500},
        ],
        "switches": [{"name": "Production"}],
        "nics": [
            {"name": "Management", "ip": f"10.0.0.{index}", "bandwidth_gbps": 1},
            {"name": "Migration", "ip": f"10.10.10.{index}", "bandwidth_gbps": 10},
        ],
        "live_migration": lm,
        **extra,
    }


def _vm(name: str, host: str, *, file_gb: float = 2, size_gb: float = 20, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "host": host,
        "memory_gb": 1,
        "adapters": [{"switch": "Production"}],
        "disks": [{"path": rf"D:\Hyper-V\{name}\{name}.vhdx", "size_gb": size_gb, "file_gb": file_gb}],
        **extra,
    }


def topology(n: Names) -> dict[str, Any]:
    """Two clusters (A: two nodes, B: one), two standalone hosts, an AMD host and a host with TCP 6600 closed; all
    Windows Server 2022 with Kerberos live migration. VMs are small (a 2 GB disk file) except `big1`."""
    hosts = [
        _host(n.a1, 11, lm=DEFAULTS),
        _host(n.a2, 12, lm=DEFAULTS),
        _host(n.b1, 21),
        _host(n.s1, 31, switches=[{"name": "Production"}, {"name": "Backup"}]),
        _host(n.s2, 32, lm=DEFAULTS),
        _host(n.amd, 41, cpu=AMD),
        _host(n.fw, 51, firewall_live_migration_rule=False),
    ]
    vms = [
        _vm("std1", n.s1),
        _vm("std2", n.s1),
        _vm("hist1", n.s1),
        _vm("part1", n.s1),
        # Big enough that a move is watchable at a low time scale (the cancel and full-volume tests).
        _vm("big1", n.s1, file_gb=100, size_gb=120),
        _vm("clu1", n.a1, clustered=True, cluster_role={"preferred_owners": [n.a1, n.a2], "priority": 3000}),
        _vm(
            "clu2",
            n.a1,
            file_gb=100,
            size_gb=120,
            clustered=True,
            cluster_role={"preferred_owners": [n.a2, n.a1]},
        ),
        # Preflight blockers.
        _vm("sw1", n.s1, adapters=[{"switch": "Production"}, {"name": "Backup Adapter", "switch": "Backup"}]),
        _vm("pt1", n.s1, passthrough_disks=[{"disk_number": 3, "size_gb": 100}]),
        _vm("cpu1", n.s1),
        _vm("ver1", n.s1, version="12.0"),
        _vm("bak1", n.s1, backup_in_progress=True),
        _vm("fw1", n.s1),
        # Moves as it is (off), by a campaign.
        _vm("off1", n.s1, state="Off"),
    ]
    return {
        "lab": {"domain": "lab.test", "netbios_domain": "LAB", "time_scale": DEFAULT_TIME_SCALE},
        "hosts": hosts,
        "clusters": [{"name": n.cluster_a, "nodes": [n.a1, n.a2]}, {"name": n.cluster_b, "nodes": [n.b1]}],
        "vms": vms,
        # No `directory`: the lab reads Samba, where these accounts have no delegation.
    }


@dataclass
class E2E:
    """One test's world: the lab, the Temporal client and the task queue its worker serves."""

    lab: Lab
    names: Names
    client: Client
    task_queue: str
    samba: SambaDomain
    started: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    async def start(
        self,
        vm: str,
        source: str,
        destination: str,
        *,
        policy: MigrationPolicy | None = None,
        storage_path: str | None = None,
    ) -> WorkflowHandle[MigrateVmWorkflow, MigrateVmResult]:
        handle = await self.client.start_workflow(
            MigrateVmWorkflow.run,
            MigrateVmInput(
                vm,
                source,
                destination,
                storage_path=storage_path,
                policy=self._policy(policy or MigrationPolicy()),
            ),
            id=migrate_vm_workflow_id(vm, source),
            task_queue=self.task_queue,
            execution_timeout=timedelta(minutes=5),
        )
        self.started.append(handle)
        return handle

    def _policy(self, policy: MigrationPolicy) -> MigrationPolicy:
        return dataclasses.replace(
            policy,
            # The test's own book of host slots, as the CLI gives each task queue its own.
            slot_book=self.task_queue,
            # The tests watch moves of seconds: the percent in the heartbeats every 2.4 s instead of 24.
            move_heartbeat_seconds=min(policy.move_heartbeat_seconds, 3.0),
        )

    async def migrate(self, vm: str, source: str, destination: str, **kwargs: Any) -> MigrateVmResult:
        """Start MigrateVm and wait (bounded) for its result; raises WorkflowFailureError when it fails."""
        handle = await self.start(vm, source, destination, **kwargs)
        return await result_of(handle)

    async def wait_progress(
        self,
        handle: WorkflowHandle[MigrateVmWorkflow, MigrateVmResult],
        predicate: Callable[[MigrationProgress], bool],
        *,
        timeout: float = 30.0,
    ) -> MigrationProgress:
        """Poll the progress a user sees (`snlm status`: the query, and the move's heartbeat) until `predicate`
        holds (bounded)."""

        async def poll() -> MigrationProgress:
            while True:
                progress = await query_progress(handle)
                if progress is not None and predicate(progress):
                    return progress
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(poll(), timeout)

    async def wait_truth(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0) -> dict:
        """Poll the lab's truth until `predicate` holds (bounded)."""

        async def poll() -> dict[str, Any]:
            while True:
                truth = await asyncio.to_thread(self.lab.truth)
                if predicate(truth):
                    return truth
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(poll(), timeout)

    def delegation(self, *hosts: str) -> dict[str, dict[str, Any]]:
        """What Samba holds for these computer accounts (read as Administrator)."""
        return {host: self.samba.read(host) for host in hosts}


async def result_of(handle: WorkflowHandle[Any, Any], timeout: float = RESULT_TIMEOUT) -> Any:
    return await asyncio.wait_for(handle.result(), timeout)


def lab_directory(samba: SambaDomain) -> LdapDirectory:
    """The lab reads the delegation from Samba as the unprivileged operator, over validated LDAPS."""
    return LdapDirectory(
        samba.ldaps_uri,
        bind_user=samba.operator_user,
        bind_password=samba.operator_password,
        ca_file=samba.ca_file,
        tls_server_names=[samba.dc_fqdn],
        connect_timeout=3.0,
        operation_timeout=5.0,
    )


def engine_directory(samba: SambaDomain) -> DirectorySettings:
    """The engine writes the delegation as Administrator; the password by reference only."""
    return DirectorySettings(
        uris=[samba.ldaps_uri],
        base_dn=samba.base_dn,
        bind_user=samba.admin_user,
        bind_password=SecretRef(env=ADMIN_PASSWORD_ENV),
        ca_file=samba.ca_file,
        tls_server_names=[samba.dc_fqdn],
        connect_timeout=3.0,
        operation_timeout=5.0,
    )


@pytest.fixture
def names(samba_domain: SambaDomain) -> Names:
    """Fresh computer accounts in Samba for this test's hosts, as a domain join leaves them (no delegation)."""
    n = Names(f"E{secrets.token_hex(2).upper()}")
    for host in n.hosts():
        samba_domain.add_computer(host)
        # What a joined Windows Server 2022 records about itself: the saga's `auto` delegation mode reads it.
        samba_domain.modify(host, {"operatingSystemVersion": [(ldap3.MODIFY_REPLACE, ["10.0 (20348)"])]})
    return n


@pytest.fixture
def lab(names: Names, samba_domain: SambaDomain, tmp_path: Path) -> Iterator[Lab]:
    directory = lab_directory(samba_domain)
    lab = Lab(
        parse_topology(topology(names), source="e2e"),
        workdir=tmp_path / "lab",
        time_scale=DEFAULT_TIME_SCALE,
        directory=directory,
        control_port=None,
    )
    try:
        with lab:
            yield lab
    finally:
        directory.close()


@pytest_asyncio.fixture
async def e2e(
    lab: Lab,
    names: Names,
    samba_domain: SambaDomain,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[E2E]:
    """A worker on this test's task queue, in the test's event loop, serving the lab's inventory and Samba."""
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, samba_domain.admin_password)
    settings = Settings(
        inventory=lab.inventory_path,
        task_queue=task_queue,
        directory=engine_directory(samba_domain),
        move_poll_seconds=0.1,
        graceful_shutdown_seconds=5,
    )
    client = temporal_env.client
    world = E2E(lab, names, client, task_queue, samba_domain)
    worker = build_worker(client, settings)
    try:
        async with worker:
            try:
                yield world
            finally:
                await _stop_workflows(client, world, names)
    finally:
        release_worker(worker)


async def _stop_workflows(client: Client, world: E2E, names: Names) -> None:
    """Terminate what the test left running: its MigrateVm runs and the hosts' HostSlots entities."""
    handles: list[WorkflowHandle[Any, Any]] = [
        *world.started,
        *(client.get_workflow_handle(host_slots_workflow_id(host)) for host in names.hosts()),
        client.get_workflow_handle(migration_slots_workflow_id(world.task_queue)),
    ]
    for handle in handles:
        with contextlib.suppress(RPCError):
            await asyncio.wait_for(handle.terminate(reason="end of the e2e test"), 10)
