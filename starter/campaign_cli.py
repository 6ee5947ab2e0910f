"""`snlm campaign ...`: plans checked, forecast, started, watched, steered and reported.

    snlm campaign check plan.yaml          # every VM's preflight, read-only
    snlm campaign forecast plan.yaml       # the expected end, per wave and per host, before anything moves
    snlm campaign start plan.yaml --wait   # start it (or find it running) and follow it to its end
    snlm campaign watch NAME               # the live view
    snlm campaign pause|resume|cancel|retry-failed|close NAME
    snlm campaign status NAME
    snlm campaign report NAME --out report.html

A plan is validated whole before anything is started: every problem is printed with its file, line and field,
and the command exits 2. The campaign's id is `snlm-campaign-<name>`: starting a plan whose campaign runs finds it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.contracts import (
    CAMPAIGN_TASK_TIMEOUT,
    CAMPAIGN_WORKFLOW_PREFIX,
    CampaignAnswer,
    CampaignCommand,
    CampaignPhase,
    CampaignPlan,
    CampaignProgress,
    CampaignResult,
    CheckInput,
    CheckResult,
    DelegationPolicy,
    HostProfile,
    MoveRecord,
    MovesPage,
    MovesQuery,
    MoveState,
    Scheduler,
    VmCheck,
    campaign_input,
    campaign_workflow_id,
)
from workflows.scheduling import PLANNER_RULES, simulate, transfer_model, with_setup
from workflows.windows import end_inside_windows

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from starter.cli import Output

CAMPAIGN_WORKFLOW = "Campaign"
CHECK_WORKFLOW = "CampaignCheck"
CHECK_PART_VMS = 500  # VMs per CampaignCheck run: the same cut a campaign makes
GIB = 2**30
ACTIONS = (
    "check",
    "forecast",
    "start",
    "watch",
    "status",
    "pause",
    "resume",
    "cancel",
    "retry-failed",
    "close",
    "report",
)


def add_parser(commands: Any, epilog: str) -> None:
    """The `campaign` command and its actions, on the CLI's subparsers."""
    campaign = commands.add_parser(
        "campaign",
        help="run many moves from a plan: check, forecast, start, watch, steer, report",
        description=__doc__,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = campaign.add_subparsers(dest="action", metavar="ACTION", required=True)

    def plan_action(name: str, text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text, epilog=epilog)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.add_argument("plan", type=Path, metavar="PLAN", help="plan file (.yaml, .yml or .csv)")
        sub.add_argument("--name", help="campaign name (default: the plan's `name`, or the file's stem)")
        sub.add_argument(
            "--inventory", type=Path, help="host inventory to check the plan's hosts against (default SNLM_INVENTORY)"
        )
        return sub

    plan_action("check", "preflight every VM of a plan, read-only, and print the table")
    forecast = plan_action("forecast", "print the expected end of a plan, per wave and per host, before it runs")
    forecast.add_argument(
        "--check",
        action="store_true",
        help="read the VMs' sizes and the hosts' limits first "
        "(a read-only check through Temporal); otherwise the plan's own figures",
    )
    start = plan_action("start", "start a plan's campaign (or find it running)")
    start.add_argument(
        "--delegation",
        choices=[p.value for p in DelegationPolicy],
        help="Kerberos delegation for every move: manage, verify or skip; default: the plan's policy.delegation "
        "when it names one other than manage, otherwise SNLM_DELEGATION_POLICY (or manage)",
    )
    start.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="start without the campaign's own preflight of every VM (blocked VMs then fail in their own preflight)",
    )
    start.add_argument("--wait", action="store_true", help="follow the campaign; exit 0 when every VM ended as planned")
    start.add_argument(
        "--linger-days",
        type=float,
        default=7.0,
        help="how long an ended campaign stays open for retry-failed (default 7)",
    )
    for name, text in (
        ("watch", "the live view of a campaign: a bar per wave, a lane per busy host, the moves in flight"),
        ("status", "a campaign's phase, counts, bytes and forecast end"),
        ("pause", "start no more moves (the moves in flight finish)"),
        ("resume", "start moves again"),
        ("cancel", "cancel: no more moves start, the moves in flight are cancelled (their compensations run)"),
        ("retry-failed", "run the failed and blocked moves again, and only those"),
        ("close", "close a campaign whose moves all ended"),
        ("report", "write a self-contained HTML report: per-host timeline, forecast against actual, summary"),
    ):
        sub = actions.add_parser(name, help=text, description=text, epilog=epilog)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.add_argument("id", metavar="NAME", help="campaign name or id (snlm-campaign-NAME)")
        if name in ("pause", "resume", "cancel", "retry-failed", "close"):
            sub.add_argument("--reason", default="", help="why, for the record")
        if name == "report":
            sub.add_argument("--out", type=Path, required=True, help="the HTML file to write")
        if name == "watch":
            sub.add_argument("--every", type=float, default=2.0, help="seconds between refreshes (default 2)")
            sub.add_argument("--once", action="store_true", help="draw once and exit")


def campaign_id(ref: str) -> str:
    return ref if ref.startswith(CAMPAIGN_WORKFLOW_PREFIX) else campaign_workflow_id(ref)


def _cli() -> Any:
    from starter import cli

    return cli


def load(args: argparse.Namespace, settings: Any | None) -> CampaignPlan:
    """The plan, validated whole (exit 2 with every problem), its hosts checked against the inventory."""
    from config.inventory import InventoryError, load_inventory
    from starter.plans import PlanInvalid, load_plan

    cli = _cli()
    path = args.inventory or (settings.inventory if settings is not None else None)
    inventory = None
    if path is not None:
        try:
            inventory = load_inventory(path)
        except (InventoryError, OSError) as error:
            raise cli.CliError(
                cli.EXIT_CONFIGURATION, "inventory", f"cannot read the inventory {path}: {error}"
            ) from None
    try:
        plan = load_plan(args.plan, name=args.name, inventory=inventory)
    except PlanInvalid as error:
        raise cli.CliError(
            cli.EXIT_USAGE,
            "plan_invalid",
            str(error),
            problems=[p.__dict__ for p in error.problems],
        ) from None
    return with_links(plan, inventory) if inventory is not None else plan


def with_links(plan: CampaignPlan, inventory: Any) -> CampaignPlan:
    """The plan's host profiles, completed with each host's migration link speed from the inventory where the plan
    gives none (the forecast's and the planner's bandwidth)."""
    hosts = {h.host.casefold(): h for h in plan.hosts}
    names = {name for wave in plan.waves for move in wave.moves for name in (move.source, move.destination)}
    for name in sorted(names):
        entry = inventory.find(name)
        gbps = getattr(entry, "migration_link_gbps", None) if entry is not None else None
        if gbps is None:
            continue
        known = hosts.get(name.casefold())
        if known is None:
            hosts[name.casefold()] = HostProfile(name, link_bits_per_second=gbps * 1e9)
        elif known.link_bits_per_second == HostProfile(name).link_bits_per_second:
            hosts[name.casefold()] = replace(known, link_bits_per_second=gbps * 1e9)
    return replace(plan, hosts=tuple(hosts.values()))


async def run(args: argparse.Namespace, out: Output, connect: Callable[[argparse.Namespace], Awaitable[Any]]) -> int:
    cli = _cli()
    if args.action == "forecast" and not args.check:
        return cmd_forecast(load(args, _offline_settings()), out)
    if args.action in ("check", "forecast", "start"):
        # The plan is validated before Temporal is reached: a bad plan costs nothing and says everything.
        plan = load(args, _offline_settings())
        client, settings = await connect(args)
        if args.action == "check":
            return await cmd_check(client, settings, plan, out)
        if args.action == "forecast":
            result = await _check(client, settings, plan)
            return cmd_forecast(_with_check(plan, result), out)
        return await cmd_start(client, settings, plan, args, out)
    client, settings = await connect(args)
    handle = client.get_workflow_handle(campaign_id(args.id), result_type=CampaignResult)
    try:
        if args.action == "watch":
            return await cmd_watch(client, handle, args, out)
        if args.action == "status":
            return await cmd_status(handle, out)
        if args.action == "report":
            return await cmd_report(handle, args, out)
        return await cmd_command(handle, args, out)
    except cli.CliError:
        raise
    except Exception as error:
        raise cli._rpc_error(error, handle.id) or error from None


def _offline_settings() -> Any | None:
    from config.settings import Settings

    try:
        return Settings()
    except Exception:
        return None


# -- check and forecast ---------------------------------------------------------------------------------------
async def _check(client: Client, settings: Any, plan: CampaignPlan) -> CheckResult:
    from workflows.campaign import check_batches

    moves = [m for w in plan.waves for m in w.moves]
    parts = [moves[n : n + CHECK_PART_VMS] for n in range(0, len(moves), CHECK_PART_VMS)]
    stamp = int(time.time() * 1000)

    async def one(number: int, part: Sequence[Any]) -> CheckResult:
        result: CheckResult = await client.execute_workflow(
            CHECK_WORKFLOW,
            CheckInput(tuple(check_batches(part)), max_migrations_per_host=plan.policy.max_migrations_per_host),
            id=f"snlm-check-{plan.name}-{stamp}-{number}",
            task_queue=settings.task_queue,
            result_type=CheckResult,
            execution_timeout=timedelta(hours=1),
        )
        return result

    results = await asyncio.gather(*(one(n, part) for n, part in enumerate(parts)))
    slots: dict[str, int] = {}
    for result in results:
        slots.update(result.host_slots)
    return CheckResult(
        vms=tuple(v for r in results for v in r.vms),
        host_slots=slots,
        round_trips=sum(r.round_trips for r in results),
    )


def _with_check(plan: CampaignPlan, result: CheckResult) -> CampaignPlan:
    """The plan with the sizes and host limits the check read (the plan's own host profiles keep their links)."""
    by_key = {(c.vm, c.source.casefold(), c.destination.casefold()): c for c in result.vms}
    waves = []
    for wave in plan.waves:
        moves = []
        for move in wave.moves:
            check = by_key.get((move.vm, move.source.casefold(), move.destination.casefold()))
            if check is not None and (check.memory_bytes or check.disk_bytes):
                move = replace(move, memory_bytes=check.memory_bytes, disk_bytes=check.disk_bytes)
            moves.append(move)
        waves.append(replace(wave, moves=tuple(moves)))
    hosts = {h.host.casefold(): h for h in plan.hosts}
    for host, slots in result.host_slots.items():
        known = hosts.get(host.casefold())
        hosts[host.casefold()] = replace(known, slots=min(known.slots, slots)) if known else HostProfile(host, slots)
    return replace(plan, waves=tuple(waves), hosts=tuple(hosts.values()))


async def cmd_check(client: Client, settings: Any, plan: CampaignPlan, out: Output) -> int:
    cli = _cli()
    result = await _check(client, settings, plan)
    blocked = [v for v in result.vms if v.blockers]
    out.line(
        f"campaign {plan.name}: {len(result.vms)} VM(s) checked, {len(blocked)} blocked, "
        f"{sum(1 for v in result.vms if v.already_there)} already moved ({result.round_trips} round trips)"
    )
    for check in result.vms:
        out.line(_check_line(check))
        for text in check.blockers:
            out.line(f"      blocker: {text}")
        for text in check.warnings:
            out.line(f"      warning: {text}")
    if result.host_slots:
        out.line("hosts: " + ", ".join(f"{h} {n} slot(s)" for h, n in sorted(result.host_slots.items())))
    out.document(
        {
            "campaign": plan.name,
            "vms": list(result.vms),
            "host_slots": result.host_slots,
            "blocked": len(blocked),
            "round_trips": result.round_trips,
        }
    )
    return cli.EXIT_PREFLIGHT_BLOCKED if blocked else cli.EXIT_OK


def _check_line(check: VmCheck) -> str:
    state = "MOVED" if check.already_there else ("BLOCKED" if check.blockers else "ok")
    size = (check.memory_bytes + check.disk_bytes) / GIB
    return f"  {state:<8} {check.vm}  {check.source} -> {check.destination}  {size:.1f} GiB"


def cmd_forecast(plan: CampaignPlan, out: Output) -> int:
    cli = _cli()
    moves = [m for w in plan.waves for m in w.moves]
    hosts = {h.host.casefold(): h for h in plan.hosts}
    waves = [[m.key for m in w.moves] for w in plan.waves]
    model = with_setup(transfer_model(plan.policy.performance), plan.setup_seconds)
    forecast = simulate(moves, hosts, scheduler=plan.scheduler, seed=plan.seed, waves=waves, model=model)
    unknown = sum(1 for m in moves if not (m.memory_bytes or m.disk_bytes))
    now = datetime.now(UTC)
    rule = f" (rule: {PLANNER_RULES[forecast.rule]})" if plan.scheduler == Scheduler.PLANNER else ""
    out.line(
        f"campaign {plan.name}: {len(moves)} move(s) in {len(plan.waves)} wave(s), scheduler {plan.scheduler}{rule}"
    )
    end = end_inside_windows(now, plan.windows, forecast.makespan_seconds)
    out.line(
        f"  makespan {_duration(forecast.makespan_seconds)} of moving; started now, it ends about "
        f"{end:%Y-%m-%d %H:%M %Z}"
    )
    source = "the plan's setup_seconds" if plan.setup_seconds is not None else "the model's own; a plan may give it"
    out.line(f"  each move's set-up counted as {model.setup_seconds:g} s ({source})")
    if plan.windows:
        out.line("  moves start only inside the plan's maintenance windows: the end counts open-window time only")
    if unknown:
        out.line(f"  note: {unknown} move(s) have no size in the plan (use --check to read them from the hosts)")
    for index, wave in enumerate(plan.waves):
        wave_end = forecast.waves[index] if index < len(forecast.waves) else 0.0
        out.line(f"  wave {wave.name}: {len(wave.moves)} move(s), ends at +{_duration(wave_end)}")
    for host, figures in sorted(forecast.hosts.items(), key=lambda item: -item[1].last_end):
        out.line(
            f"  host {host}: last move ends at +{_duration(figures.last_end)}, "
            f"{figures.bytes_out / GIB:.0f} GiB out, {figures.bytes_in / GIB:.0f} GiB in"
        )
    out.document(
        {
            "campaign": plan.name,
            "makespan_seconds": forecast.makespan_seconds,
            "end": end.isoformat(),
            "waves": {
                w.name: (forecast.waves[i] if i < len(forecast.waves) else 0.0) for i, w in enumerate(plan.waves)
            },
            "hosts": {h: f.__dict__ for h, f in forecast.hosts.items()},
            "moves_without_size": unknown,
            "setup_seconds": model.setup_seconds,
            "planner_rule": PLANNER_RULES[forecast.rule] if plan.scheduler == Scheduler.PLANNER else None,
        }
    )
    return cli.EXIT_OK


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# -- start and follow -----------------------------------------------------------------------------------------
async def cmd_start(client: Client, settings: Any, plan: CampaignPlan, args: argparse.Namespace, out: Output) -> int:
    from temporalio.exceptions import WorkflowAlreadyStartedError

    cli = _cli()
    workflow_id = campaign_workflow_id(plan.name)
    request = replace(
        campaign_input(plan, task_queue=settings.task_queue, check=args.check),
        linger_seconds=max(60.0, args.linger_days * 86400),
    )
    policy = request.policy
    if args.delegation:
        policy = replace(policy, delegation=DelegationPolicy(args.delegation))
    elif policy.delegation == DelegationPolicy.MANAGE:
        policy = replace(policy, delegation=DelegationPolicy(settings.delegation_policy))
    if not policy.slot_book:
        policy = replace(policy, slot_book=settings.task_queue)
    request = replace(request, policy=policy)
    try:
        handle = await client.start_workflow(
            CAMPAIGN_WORKFLOW,
            request,
            id=workflow_id,
            task_queue=settings.task_queue,
            task_timeout=CAMPAIGN_TASK_TIMEOUT,
        )
        started = True
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id)
        started = False
    moves = sum(len(w.moves) for w in plan.waves)
    out.line(
        f"campaign {plan.name}: {'started' if started else 'already running'} ({workflow_id}, "
        f"{moves} move(s) in {len(plan.waves)} wave(s))"
    )
    out.note(f"follow it: snlm campaign watch {plan.name}")
    if not args.wait:
        out.document({"campaign": plan.name, "workflow_id": workflow_id, "started": started, "moves": moves})
        return cli.EXIT_OK
    progress = await follow(client, handle, out)
    out.document({"campaign": plan.name, "workflow_id": workflow_id, "started": started, "progress": progress})
    return outcome_code(progress)


def outcome_code(progress: CampaignProgress | None) -> int:
    cli = _cli()
    if progress is None:
        return cli.EXIT_FAILED
    counts = progress.counts
    ok = counts.moved + counts.already_there == progress.total
    return cli.EXIT_OK if ok else cli.EXIT_FAILED


async def query(handle: WorkflowHandle[Any, Any]) -> CampaignProgress | None:
    """The campaign's progress, or None when no worker answers (or the run is closed and gone)."""
    try:
        progress: CampaignProgress = await handle.query(
            "progress", result_type=CampaignProgress, rpc_timeout=timedelta(seconds=10)
        )
    except Exception:
        return None
    return progress


async def moves(handle: WorkflowHandle[Any, Any], states: Sequence[MoveState] = ()) -> list[MoveRecord]:
    records: list[MoveRecord] = []
    offset = 0
    while True:
        page: MovesPage = await handle.query(
            "moves",
            MovesQuery(offset=offset, limit=2000, states=tuple(states)),
            result_type=MovesPage,
            rpc_timeout=timedelta(seconds=30),
        )
        records.extend(page.records)
        offset += len(page.records)
        if not page.records or offset >= page.total:
            return records


async def follow(
    client: Client, handle: WorkflowHandle[Any, Any], out: Output, every: float = 2.0
) -> CampaignProgress | None:
    """Follow until every move ended (the campaign stays open for retry-failed) or the run closed."""
    from starter.campaign_view import LiveView

    view = LiveView(out)
    last: CampaignProgress | None = None
    with view:
        while True:
            progress = await query(handle)
            if progress is not None:
                last = progress
                in_flight = await moves(handle, (MoveState.RUNNING,)) if progress.counts.running else []
                await view.draw(client, progress, in_flight)
                if progress.phase in (CampaignPhase.ENDED, CampaignPhase.CLOSED):
                    return progress
            else:
                description = await handle.describe()
                if description.close_time is not None:
                    return last
            await asyncio.sleep(every)


async def cmd_watch(client: Client, handle: WorkflowHandle[Any, Any], args: argparse.Namespace, out: Output) -> int:
    cli = _cli()
    await handle.describe()  # a campaign that does not exist is "not found", not an empty view
    if args.once:
        from starter.campaign_view import LiveView

        progress = await query(handle)
        if progress is None:
            raise cli.CliError(cli.EXIT_UNREACHABLE, "no_worker", f"no worker answered {handle.id}'s query")
        in_flight = await moves(handle, (MoveState.RUNNING,))
        view = LiveView(out, live=False)
        with view:
            await view.draw(client, progress, in_flight)
        out.document({"progress": progress, "in_flight": in_flight})
        return cli.EXIT_OK
    progress = await follow(client, handle, out, every=max(0.5, args.every))
    out.document({"progress": progress})
    return outcome_code(progress)


async def cmd_status(handle: WorkflowHandle[Any, Any], out: Output) -> int:
    from starter.campaign_view import progress_lines

    cli = _cli()
    description = await handle.describe()
    status = description.status.name if description.status is not None else "UNKNOWN"
    doc: dict[str, Any] = {"workflow_id": handle.id, "status": status, "progress": None, "result": None}
    if description.close_time is None:
        progress = await query(handle)
        doc["progress"] = progress
        out.line(f"{handle.id}  {status}")
        if progress is None:
            out.line("  no worker answered the progress query")
        else:
            for line in progress_lines(progress):
                out.line("  " + line)
    else:
        out.line(f"{handle.id}  {status}")
        if status == "COMPLETED":
            result: CampaignResult = await handle.result()
            doc["result"] = result
            c = result.counts
            out.line(
                f"  {result.total} move(s): {c.moved} moved, {c.already_there} already there, {c.failed} failed, "
                f"{c.blocked} blocked, {c.cancelled} cancelled ({result.runs} run(s))"
            )
    out.document(doc)
    return cli.EXIT_OK


async def cmd_command(handle: WorkflowHandle[Any, Any], args: argparse.Namespace, out: Output) -> int:
    from temporalio.client import WorkflowUpdateFailedError

    cli = _cli()
    update = args.action.replace("-", "_")
    command = CampaignCommand(by=getpass.getuser(), reason=args.reason)
    if args.action == "cancel":
        out.note("cancelling: the answer comes once the moves in flight have ended (their compensations run)")
    try:
        answer: CampaignAnswer = await handle.execute_update(
            update, command, result_type=CampaignAnswer, rpc_timeout=timedelta(hours=12)
        )
    except WorkflowUpdateFailedError as error:
        failure = cli.failure_info(error)
        raise cli.CliError(
            cli.EXIT_USAGE, "refused", f"{handle.id} refused {args.action}: {failure['message']}"
        ) from None
    out.line(f"{handle.id}: {answer.message}")
    out.document({"workflow_id": handle.id, "action": args.action, "answer": answer})
    return cli.EXIT_OK


async def cmd_report(handle: WorkflowHandle[Any, Any], args: argparse.Namespace, out: Output) -> int:
    from starter.report import write_report

    cli = _cli()
    progress = await query(handle)
    if progress is None:
        raise cli.CliError(cli.EXIT_UNREACHABLE, "no_worker", f"no worker answered {handle.id}'s query")
    records = await moves(handle)
    path = write_report(args.out, progress, records)
    out.line(f"report written: {path}")
    out.document({"workflow_id": handle.id, "report": str(path)})
    return cli.EXIT_OK


def main_stream_is_terminal() -> bool:
    return sys.stdout.isatty()
