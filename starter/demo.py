"""`make demo`: a Temporal dev server, a lab, a directory, a worker and a small watched campaign, in one process.

    python -m starter.demo [--keep-running] [--time-scale N] [--workdir DIR] [--no-directory]

The demo is the one place that assembles the lab, the worker and the engine: the lab writes an inventory, the
worker reads it, and nothing else passes between them (with a directory, both also talk to the same domain
controller). So it is the one module of `starter/` that may import the lab and the worker; the ways in (the CLI)
import neither, and the import contracts (`lint-imports`) name this module as the single exception. It starts,
in `.snlm/demo/`:

- the Temporal dev server with its UI on 127.0.0.1:8233 and a durable SQLite file (`temporal.db`);
- a directory when it can: a throwaway Samba AD DC (lab.samba) with a computer account for every lab host;
- a lab from the built-in topology (simulated Hyper-V hosts on 127.0.0.1), reading that directory;
- a worker, in-process, serving the migration task queue with the lab's inventory (and the directory);

then runs a campaign of four VMs (the Campaign workflow: its preflight of every VM, then the moves in the
planner's order), each with an expected outcome, in the live view (`snlm campaign watch`'s), writes the campaign's
HTML report, prints a summary table at the end, and stops everything it started (with --keep-running, it waits
for Ctrl-C so you can look around in the UI and drive the lab with `snlm`). Exit status 0 when every VM ended as
expected.

Delegation takes one of two paths, and the demo says which and why:

- `manage`, with Samba (root, Samba installed, its ports free): the computer accounts start as a domain join
  leaves them, without delegation; the saga writes the constrained delegation entries for each pair of hosts as
  Administrator, purges the hosts' Kerberos tickets, and the lab's hosts, which read the directory as an
  unprivileged operator, then let the move through. The summary shows what the directory holds afterwards.
- `skip`, anywhere else or with --no-directory: the lab keeps its own directory, whose built-in entries already
  cover every pair the campaign uses (as when another team manages delegation), and the saga leaves it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starter.cli import EXIT_INTERRUPTED, MOVE_ACTIVITY, exit_now
from starter.devserver import DevServer, DevServerError, start_dev_server
from workflows.contracts import (
    CAMPAIGN_TASK_TIMEOUT,
    MIGRATION_SERVICE,
    CampaignAnswer,
    CampaignCommand,
    CampaignMove,
    CampaignPlan,
    CampaignWave,
    DelegationPolicy,
    MigrateVmResult,
    MigrationPolicy,
    MoveState,
    campaign_input,
    campaign_workflow_id,
    migrate_vm_workflow_id,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from config.directory import DirectorySettings
    from lab.lab import Lab
    from lab.model.ldap_directory import LdapDirectory
    from lab.model.topology import TopologySpec
    from lab.samba import SambaDomain

DEFAULT_WORKDIR = Path(".snlm/demo")
# Simulated seconds per real second. The lab's own default (60) moves a small VM in a fraction of a second;
# at 6 the campaign takes about a minute and a half, slow enough to watch the progress and the retry.
DEFAULT_TIME_SCALE = 6.0
CAMPAIGN = "demo"
POLL_SECONDS = 1.0
# How long the demo waits for Samba's ports when another session (a test run, another demo) holds them.
SAMBA_WAIT_SECONDS = 30.0
# The worker reads the directory password by reference (SecretRef): the demo sets this variable in its own
# process, from the password generated for the throwaway domain. It is never printed.
DIRECTORY_PASSWORD_ENV = "SNLM_DEMO_DIRECTORY_PASSWORD"  # noqa: S105 - the name of a variable, not a password


@dataclass(frozen=True)
class DemoMove:
    """One VM of the demo's campaign and what should become of it."""

    vm: str
    source: str
    destination: str
    expect: str  # "moved" or "blocked"
    story: str
    storage_path: str | None = None
    restore_ha: bool = False
    fail_at_percent: int | None = None  # inject a one-shot failure of the move at this percent


# What the built-in topology offers (lab/topologies/default.yaml): web07 and web08 go the clean HV-S2 -> HV-S4 path;
# sql03 has a pass-through disk (PROBLEM[passthrough-disk]); app04 (processor compatibility on) is the clean
# cross-cluster move, CL-WEST's HV-W2 to CL-EAST's HV-E1, onto CL-EAST's cluster storage: its role is removed on
# CL-WEST before the move and created again on CL-EAST after it.
MOVES: tuple[DemoMove, ...] = (
    DemoMove("web07", "HV-S2", "HV-S4", "moved", "standalone, clean path"),
    DemoMove(
        "app04",
        "HV-W2",
        "HV-E1",
        "moved",
        "clustered, CL-WEST -> CL-EAST: HA removed first, restored on CL-EAST",
        storage_path=r"C:\ClusterStorage\Volume1\app04",
        restore_ha=True,
    ),
    DemoMove("sql03", "HV-S1", "HV-S2", "blocked", "pass-through disk: preflight blocks it, nothing changes"),
    DemoMove("web08", "HV-S2", "HV-S4", "moved", "the move dies at 40 % once and is retried", fail_at_percent=40),
)


@dataclass
class Tracked:
    move: DemoMove
    handle: WorkflowHandle[Any, MigrateVmResult]
    started: float
    last_line: str = ""
    last_percent: int = -100
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0
    attempts: int = 0
    result: MigrateVmResult | None = None
    ha: str = ""  # for a clustered move: where its cluster role was before and is after
    ha_ok: bool = True
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def as_expected(self) -> bool:
        if self.outcome != self.move.expect:
            return False
        if self.move.fail_at_percent is not None and self.attempts < 2:
            return False  # the injected failure must have been retried
        return self.ha_ok


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the directory -----------------------------------------------------------------------------------------------
@dataclass
class DirectoryChoice:
    """The delegation path the demo takes: `manage` against Samba, or `skip` against the lab's own entries."""

    policy: DelegationPolicy
    reason: str
    samba: SambaDomain | None = None
    samba_pid: int | None = None


def start_samba(
    workdir: Path, spec: TopologySpec, *, no_directory: bool, wait: float = SAMBA_WAIT_SECONDS
) -> DirectoryChoice:
    """A Samba AD DC with a computer account per lab host, or the reason why not (then the `skip` path)."""
    from lab.samba import SambaDomain, SambaUnavailable, unavailable_reason

    if no_directory:
        return DirectoryChoice(DelegationPolicy.SKIP, "--no-directory was given")
    reason = unavailable_reason()
    if reason is not None:
        return DirectoryChoice(DelegationPolicy.SKIP, reason)
    domain = SambaDomain(
        workdir / "samba",
        realm=spec.lab.domain.upper(),
        domain=spec.lab.netbios_domain,
        # The passwords are generated for this run (SambaDomain's default) and live in this process only.
    )
    try:
        try:
            domain.acquire(timeout=0)
        except SambaUnavailable:
            say(f"  directory      waiting up to {wait:g} s for Samba's ports (another session holds them)")
            domain.acquire(timeout=wait)
        domain.provision()
        domain.start()
        for host in spec.hosts:
            domain.add_computer(host.name, operating_system_version=_OS_VERSIONS.get(str(host.os), ""))
    except SambaUnavailable as error:
        domain.stop()
        domain.release()
        return DirectoryChoice(DelegationPolicy.SKIP, f"Samba could not start: {error}")
    except BaseException:
        domain.stop()
        domain.release()
        raise
    return DirectoryChoice(
        DelegationPolicy.MANAGE,
        "Samba is installed and this is root: a real AD DC runs for the demo",
        samba=domain,
        samba_pid=domain.pid,
    )


def stop_samba(domain: SambaDomain) -> None:
    domain.stop()
    domain.release()


def lab_directory(domain: SambaDomain) -> LdapDirectory:
    """What the lab's hosts read: the DC over validated LDAPS, bound as the operator (no delegation privilege)."""
    from lab.model.ldap_directory import LdapDirectory

    return LdapDirectory(
        domain.ldaps_uri,
        bind_user=domain.operator_user,
        bind_password=domain.operator_password,
        ca_file=domain.ca_file,
        tls_server_names=[domain.dc_fqdn],
        connect_timeout=3.0,
        operation_timeout=5.0,
    )


# operatingSystemVersion as Windows records it on a joined computer, per topology OS value.
_OS_VERSIONS = {
    "2012": "6.2 (9200)",
    "2012R2": "6.3 (9600)",
    "2016": "10.0 (14393)",
    "2019": "10.0 (17763)",
    "2022": "10.0 (20348)",
    "2025": "10.0 (26100)",
}


def engine_directory(domain: SambaDomain) -> DirectorySettings:
    """How the worker writes delegation: as Administrator, its password by reference to a variable of this process."""
    from config.directory import DirectorySettings, SecretRef
    from workflows.contracts import DelegationMode

    os.environ[DIRECTORY_PASSWORD_ENV] = domain.admin_password
    return DirectorySettings(
        uris=[domain.ldaps_uri],
        base_dn=domain.base_dn,
        bind_user=domain.admin_user,
        bind_password=SecretRef(env=DIRECTORY_PASSWORD_ENV),
        ca_file=domain.ca_file,
        tls_server_names=[domain.dc_fqdn],
        # `auto`: per host from the operatingSystemVersion its account holds (Kerberos only on 2012 / 2012 R2,
        # any protocol on 2016 and later).
        mode=DelegationMode.AUTO,
    )


def _peers(spns: Sequence[str]) -> list[str]:
    """The hosts a list of delegation SPNs names, once each (short names, as the inventory spells them)."""
    peers: list[str] = []
    for spn in spns:
        service, _, name = spn.partition("/")
        if service.casefold() not in ("cifs", MIGRATION_SERVICE.casefold()):
            continue
        short = name.split(".", 1)[0].upper()
        if short not in peers:
            peers.append(short)
    return peers


def _services(spns: Sequence[str]) -> list[str]:
    services: list[str] = []
    for spn in spns:
        service = spn.partition("/")[0]
        if service not in services:
            services.append(service)
    return services


def delegation_lines(truth: dict[str, Any], hosts: Sequence[str]) -> list[str]:
    """`HOST -> PEER, PEER (protocol transition)` for the hosts that may delegate, from the lab's view."""
    lines = []
    for host in hosts:
        entry = (truth["hosts"].get(host) or {}).get("directory") or {}
        peers = _peers(entry.get("allowed_to_delegate_to") or [])
        if peers:
            transition = "any protocol" if entry.get("protocol_transition") else "Kerberos only"
            lines.append(f"{host} -> {', '.join(peers)} ({transition})")
    return lines


# -- the lab -----------------------------------------------------------------------------------------------------
def start_lab(workdir: Path, time_scale: float, directory: LdapDirectory | None = None) -> Lab:
    """The built-in topology's lab; with `directory`, its hosts read delegation from there instead of the topology."""
    from lab.lab import Lab

    lab = Lab.from_topology(None, workdir=workdir / "lab", time_scale=time_scale, directory=directory)
    lab.start()
    return lab


def cluster_roles(truth: dict[str, Any], vm: str) -> list[tuple[str, str, str]]:
    """(cluster, owner node, state) of every cluster role of `vm`, from the lab's truth."""
    return [
        (cluster, role["owner_node"], role["state"])
        for cluster, data in sorted(truth["clusters"].items())
        for role in data["roles"]
        if role["name"].casefold() == vm.casefold()
    ]


def _roles_text(roles: Sequence[tuple[str, str, str]]) -> str:
    return "; ".join(f"{cluster} on {owner} ({state})" for cluster, owner, state in roles) or "none"


def _cluster_of(truth: dict[str, Any], host: str) -> str | None:
    return next((name for name, data in truth["clusters"].items() if host in data["nodes"]), None)


def check_ha(t: Tracked, before: dict[str, Any], after: dict[str, Any]) -> None:
    """A clustered move: its role must be gone from the source's cluster and be on the destination's."""
    move = t.move
    was, now = cluster_roles(before, move.vm), cluster_roles(after, move.vm)
    source_cluster, destination_cluster = _cluster_of(before, move.source), _cluster_of(after, move.destination)
    removed = not any(cluster == source_cluster for cluster, _, _ in now)
    restored = any(cluster == destination_cluster and owner == move.destination for cluster, owner, _ in now)
    t.ha = f"role before: {_roles_text(was)}; after: {_roles_text(now)}"
    if t.outcome == "moved":
        t.ha_ok = removed and restored
        verdict = (
            f"removed on {source_cluster}, restored on {destination_cluster}"
            if t.ha_ok
            else f"NOT as expected (removed on {source_cluster}: {removed}, restored on {destination_cluster}: "
            f"{restored})"
        )
        t.ha += f" -> {verdict}"


# -- the campaign ------------------------------------------------------------------------------------------------
async def _terminate_leftovers(client: Client) -> int:
    """Workflows an earlier demo left running (killed mid-way) would act on this run's fresh lab: end them."""
    count = 0
    async for execution in client.list_workflows('ExecutionStatus="Running"'):
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="a new demo run started: the lab this workflow ran against is gone"
            )
            count += 1
    return count


async def _move_attempts(handle: WorkflowHandle[Any, Any]) -> int:
    """How many times the move activity ran (its retries included), read from the workflow's history."""
    scheduled: set[int] = set()
    attempts = 0
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == MOVE_ACTIVITY:
                scheduled.add(event.event_id)
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            # Temporal writes one started event per scheduled activity, when it closes, carrying the attempt it
            # ended on: retries show up as that number, not as more events.
            if started.scheduled_event_id in scheduled:
                attempts += max(1, started.attempt)
    return attempts


def _label(move: DemoMove) -> str:
    return f"{move.vm:<7} {move.source}->{move.destination}"


def summary_lines(tracked: Sequence[Tracked]) -> list[str]:
    rows = [
        (
            t.move.vm,
            f"{t.move.source} -> {t.move.destination}",
            t.outcome or "interrupted",
            "yes" if t.as_expected else "NO",
            f"{t.seconds:.1f} s",
            str(t.attempts),
        )
        for t in tracked
    ]
    headers = ("VM", "ROUTE", "OUTCOME", "EXPECTED", "DURATION", "MOVE ATTEMPTS")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for t in tracked:
        if t.ha:
            lines.append(f"  {t.move.vm} HA: {t.ha}")
        if t.result is not None and t.result.delegation_added:
            added = t.result.delegation_added
            lines.append(
                f"  {t.move.vm} delegation written by the saga: {len(added)} SPNs ({', '.join(_services(added))}) "
                f"for {t.move.source} <-> {t.move.destination}"
            )
        for warning in t.result.warnings if t.result is not None else ():
            text = warning.splitlines()[0] if warning else ""
            lines.append(f"  {t.move.vm} warning: {text if len(text) <= 150 else text[:147] + '...'}")
    return lines


def demo_plan(
    delegation: DelegationPolicy, task_queue: str, *, inventory: Any = None, time_scale: float = 1.0
) -> CampaignPlan:
    """The demo's campaign: MOVES in one wave, the planner's order, heartbeats every 2.4 s (moves of seconds).

    With the lab's `inventory`, each host's migration link is the inventory's, times the lab's `time_scale`: the
    lab's clock runs that many times faster, so in the wall seconds the demo shows a link carries that many times
    its bytes, and the forecast end it prints is when the campaign ends on this machine's clock (with the planner's
    default of 10 Gb/s everywhere, the 1 Gb/s clustered move alone was forecast 30 % short).
    """
    from starter.campaign_cli import with_links

    moves = tuple(CampaignMove(m.vm, m.source, m.destination, storage_path=m.storage_path) for m in MOVES)
    policy = MigrationPolicy(delegation=delegation, move_heartbeat_seconds=3.0, slot_book=task_queue)
    plan = CampaignPlan(name=CAMPAIGN, waves=(CampaignWave("demo", moves),), policy=policy)
    if inventory is None:
        return plan
    linked = with_links(plan, inventory)
    hosts = tuple(replace(h, link_bits_per_second=h.link_bits_per_second * time_scale) for h in linked.hosts)
    return replace(linked, hosts=hosts)


async def run_campaign(
    client: Client,
    lab: Lab,
    task_queue: str,
    stop: asyncio.Event,
    *,
    delegation: DelegationPolicy = DelegationPolicy.SKIP,
    report: Path | None = None,
) -> list[Tracked]:
    """Run MOVES as a Campaign (its own preflight first, then the moves in the planner's order), follow it in the
    live view until every move ended (or until `stop`), write its report, close it, and check the clustered move."""
    from config.inventory import load_inventory
    from starter.campaign_cli import follow, moves
    from starter.cli import Output
    from starter.report import write_report

    before = await asyncio.to_thread(lab.truth)
    for move in MOVES:
        if move.fail_at_percent is not None:
            lab.inject_fault("fail_move_at", vm=move.vm, percent=move.fail_at_percent, action="reset")
    handle = await client.start_workflow(
        "Campaign",
        campaign_input(
            demo_plan(
                delegation,
                task_queue,
                inventory=load_inventory(lab.inventory_path),
                time_scale=lab.world.clock.time_scale,
            ),
            task_queue=task_queue,
        ),
        id=campaign_workflow_id(CAMPAIGN),
        task_queue=task_queue,
        task_timeout=CAMPAIGN_TASK_TIMEOUT,
    )
    started = time.monotonic()
    say(f"  started {handle.id}: its preflight of every VM, then the moves in the planner's order")
    for move in MOVES:
        say(f"  {_label(move):<22} {move.story}")
    say()
    following = asyncio.ensure_future(follow(client, handle, Output("text"), every=POLL_SECONDS))
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([stopper, following], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not following.done():
            following.cancel()
    records = {r.vm: r for r in await moves(handle)}
    tracked: list[Tracked] = []
    for move in MOVES:
        child = client.get_workflow_handle(migrate_vm_workflow_id(move.vm, move.source), result_type=MigrateVmResult)
        t = Tracked(move, child, started)
        record = records.get(move.vm)
        if record is not None and record.state.ended:
            t.outcome = {
                MoveState.MOVED: "moved",
                MoveState.ALREADY_THERE: "moved",
                MoveState.BLOCKED: "blocked",
            }.get(record.state, str(record.state))
            t.detail = record.error.splitlines()[0][:200] if record.error else f"now on {move.destination}"
            t.seconds = record.ended - record.started if record.started else 0.0
            if record.state in (MoveState.MOVED, MoveState.ALREADY_THERE):
                with contextlib.suppress(Exception):
                    t.result = await t.handle.result()
            with contextlib.suppress(Exception):
                t.attempts = await _move_attempts(t.handle)
        tracked.append(t)
    if report is not None and following.done() and not following.cancelled():
        progress = following.result()
        if progress is not None:
            write_report(report, progress, list(records.values()))
            say(f"  report         {report}")
    if not stop.is_set():
        with contextlib.suppress(Exception):
            await handle.execute_update("close", CampaignCommand(by="demo"), result_type=CampaignAnswer)
    after = await asyncio.to_thread(lab.truth)
    for t in tracked:
        if t.move.restore_ha:
            check_ha(t, before, after)
    return tracked


# -- the whole demo ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _stdout_to(path: Path) -> Iterator[None]:
    """Point file descriptor 1 at `path` for the child processes started meanwhile; Python's own prints wait."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to redirect
        yield
        return
    try:
        with path.open("ab") as target:
            os.dup2(target.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def run_demo(workdir: Path, *, time_scale: float, keep_running: bool, no_directory: bool = False) -> int:
    from config.settings import Settings, connect_client
    from lab.model.topology import DEFAULT_TOPOLOGY, load_topology
    from worker import run_worker

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "demo.log"
    # The worker and the SDK log every failed activity attempt with its traceback (the retried move does fail
    # once, on purpose): to a file, so the screen shows the campaign.
    handler = logging.FileHandler(log_file, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    server: DevServer | None = None
    choice: DirectoryChoice | None = None
    directory: LdapDirectory | None = None
    lab: Lab | None = None
    worker_task: asyncio.Task[None] | None = None
    try:
        say("snlm demo: shared-nothing live migration as durable Temporal workflows, on a simulated Hyper-V lab")
        try:
            # The Temporal CLI prints a banner and its log on standard output: into a file, so the screen shows
            # the demo's own lines (the UI address is printed below).
            with _stdout_to(workdir / "temporal.log"):
                server = await start_dev_server(workdir / "temporal.db")
        except DevServerError as error:
            say(f"error: {error}")
            return 1
        say(f"  Temporal UI    {server.ui_url}   (server {server.target}, history in {server.database})")

        spec = load_topology(DEFAULT_TOPOLOGY)
        choice = await asyncio.to_thread(start_samba, workdir, spec, no_directory=no_directory)
        if stop.is_set():
            return EXIT_INTERRUPTED
        directory_settings: DirectorySettings | None = None
        if choice.samba is not None:
            samba = choice.samba
            directory = lab_directory(samba)
            directory_settings = engine_directory(samba)
            say(
                f"  directory      Samba AD DC {samba.realm} on {samba.ldaps_uri} (pid {samba.pid}, in {samba.root}), "
                f"{len(spec.hosts)} computer accounts without delegation"
            )
            say(f"                 why: {choice.reason}")
            say(
                "  delegation     policy 'manage': the saga writes the constrained delegation for each pair of hosts "
                f"as {samba.admin_user}"
            )
            say(
                "                 (password from the generated domain, by reference to a variable of this process) "
                "and purges the"
            )
            say(f"                 hosts' tickets; the lab's hosts read the directory as {samba.operator_user}")
        else:
            say(f"  directory      none: {choice.reason}")

        lab = await asyncio.to_thread(start_lab, workdir, time_scale, directory)
        say(
            f"  lab            {len(lab.endpoints)} simulated Hyper-V hosts on 127.0.0.1, time x{time_scale:g}; "
            f"inventory {lab.inventory_path}"
        )
        hosts = sorted({h for move in MOVES for h in (move.source, move.destination)})
        if choice.samba is None:
            truth = await asyncio.to_thread(lab.truth)
            say(
                "  delegation     policy 'skip' against the lab's own directory (no Active Directory here), as when "
                "another"
            )
            say("                 team manages delegation; the entries the campaign needs are already there:")
            for line in delegation_lines(truth, hosts):
                say(f"                   {line}")

        settings = Settings(
            temporal_address=server.target,
            temporal_namespace="default",
            inventory=lab.inventory_path,
            directory=directory_settings,
            delegation_policy=choice.policy,
            move_poll_seconds=0.5,
        )
        client = await connect_client(settings)
        leftovers = await _terminate_leftovers(client)
        if leftovers:
            say(
                f"  note           ended {leftovers} workflow(s) an earlier demo left running (host slot keepers, "
                "interrupted moves): this run's lab is fresh"
            )
        worker_task = asyncio.ensure_future(run_worker(settings, stop=stop, client=client))
        say(f"  worker         in-process, task queue {settings.task_queue}; its log in {log_file}")
        say(f"  try            TEMPORAL_ADDRESS={server.target} snlm status web07@HV-S2")
        say()
        say(f"campaign '{CAMPAIGN}': {len(MOVES)} VMs, delegation policy '{choice.policy.value}'")
        say(f"  watch it       TEMPORAL_ADDRESS={server.target} snlm campaign watch {CAMPAIGN}   (or in the UI)")
        tracked = await run_campaign(
            client, lab, settings.task_queue, stop, delegation=choice.policy, report=workdir / "campaign-report.html"
        )
        say()
        say("summary")
        for line in summary_lines(tracked):
            say(line)
        if choice.samba is not None:
            truth = await asyncio.to_thread(lab.truth)
            say(f"  the directory now holds (read by the lab from Samba as {choice.samba.operator_user}):")
            for line in delegation_lines(truth, hosts) or ["no delegation"]:
                say(f"    {line}")
        interrupted = stop.is_set()
        ok = not interrupted and all(t.as_expected for t in tracked)
        say()
        if not interrupted:
            say("every VM ended as expected" if ok else "some VMs did not end as expected")
        if keep_running and not interrupted:
            say(f"still running: the UI at {server.ui_url}, the lab, the worker and the directory. Ctrl-C stops them.")
            await stop.wait()
        if interrupted:
            return EXIT_INTERRUPTED
        return 0 if ok else 1
    finally:
        stop.set()
        stopped: list[str] = []
        if worker_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(worker_task, timeout=40)
            stopped.append("worker")
        if lab is not None:
            await asyncio.to_thread(lab.stop)
            stopped.append("lab")
        if directory is not None:
            directory.close()
        if choice is not None and choice.samba is not None:
            await asyncio.to_thread(stop_samba, choice.samba)
            os.environ.pop(DIRECTORY_PASSWORD_ENV, None)
            stopped.append(f"Samba AD DC (pid {choice.samba_pid})")
        if server is not None:
            await server.stop()
            stopped.append("Temporal dev server")
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if stopped:
            say(f"stopped: {', '.join(stopped)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m starter.demo",
        description="Start a Temporal dev server, a directory, a lab and a worker, and run a small watched campaign.",
    )
    parser.add_argument("--keep-running", action="store_true", help="after the campaign, wait for Ctrl-C")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        metavar="N",
        help=f"simulated seconds per real second (default {DEFAULT_TIME_SCALE:g})",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default {DEFAULT_WORKDIR}")
    parser.add_argument(
        "--no-directory",
        action="store_true",
        help="do not start Samba: delegation policy 'skip' against the lab's own directory (no root needed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.time_scale <= 0:
        build_parser().error("--time-scale must be greater than 0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        code = asyncio.run(
            run_demo(
                args.workdir,
                time_scale=args.time_scale,
                keep_running=args.keep_running,
                no_directory=args.no_directory,
            )
        )
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    # Everything the demo started is stopped by now; skip the interpreter teardown that can abort under the
    # Temporal client's runtime threads (see starter.cli.exit_now).
    exit_now(code)


if __name__ == "__main__":
    main()
