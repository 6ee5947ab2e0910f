"""`snlm plan ...`: campaign plans generated from what the hosts hold, written for a person to review.

    snlm plan evacuate HV-S2 --to HV-S3,HV-S4 --out evacuate-hv-s2.yaml
    snlm plan rebalance --out rebalance.yaml                       # every host of the inventory, 80 %
    snlm plan rebalance --hosts HV-S1,HV-S2,HV-S3 --threshold 0.75 --out rebalance.yaml

Both read the hosts through the SurveyHosts workflow (a worker reads each host, read-only), place the VMs
(starter/planning.py: switches, memory under the limit, disk space with slack, largest first) and WRITE a plan
file; they never start anything. Review the file, then `snlm campaign check FILE` and `snlm campaign start FILE`.

evacuate places every VM of HOST, running or off, on the --to hosts, keeping each at or under 1 - --headroom
of its memory. rebalance moves the fewest VMs from the hosts over --threshold of their memory in use to the
hosts under it, never pushing one of those over it.

Hosts are checked against the inventory (--inventory, or SNLM_INVENTORY) before anything runs. The command prints
each move (VM, from, to, memory, why), the VMs it could not place and why, and each host's memory in use before
and after; it exits 0 when every VM found a place, 3 when some did not (the plan then holds the others, when
there are any).
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starter.planning import GIB, PlacementResult, evacuate, moves_document, plan_name, rebalance, write_plan_yaml
from workflows.contracts import CAMPAIGN_NAME_MAX, SURVEY_WORKFLOW_PREFIX, SurveyInput, SurveyResult

if TYPE_CHECKING:
    from config.inventory import Inventory
    from starter.cli import Output

__all__ = ["EXIT_UNPLACED", "SURVEY_WORKFLOW", "add_parser", "run"]

SURVEY_WORKFLOW = "SurveyHosts"
SURVEY_TIMEOUT = timedelta(minutes=30)
EXIT_UNPLACED = 3  # some VM could not be placed (or a host stays over the threshold)
_CAMPAIGN_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{CAMPAIGN_NAME_MAX}}}")


# -- arguments --------------------------------------------------------------------------------------------------
def _host_list(value: str) -> list[str]:
    hosts = [part.strip() for part in value.split(",")]
    if not all(hosts):
        raise argparse.ArgumentTypeError(f"{value!r}: host names separated by commas, none empty")
    return list(dict.fromkeys(hosts))


def _campaign_name(value: str) -> str:
    if not _CAMPAIGN_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a campaign name: 1 to {CAMPAIGN_NAME_MAX} of A-Z, a-z, 0-9, '.', '_' and '-'"
        )
    return value


def _ratio(low: float, high: float, *, low_open: bool, high_open: bool) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if (number <= low if low_open else number < low) or (number >= high if high_open else number > high):
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"{value} is outside {left}{low:g}, {high:g}{right}")
        return number

    return parse


def add_parser(commands: Any, epilog: str) -> None:
    """The `plan` command and its actions (`evacuate`, `rebalance`), on the CLI's subparsers."""
    plan = commands.add_parser(
        "plan",
        help="write a campaign plan that evacuates a host or rebalances memory (nothing is started)",
        description=__doc__,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = plan.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text, epilog=epilog)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.add_argument("--out", type=Path, required=True, metavar="FILE", help="the plan file to write (.yaml)")
        sub.add_argument(
            "--name", type=_campaign_name, help="the campaign's name (default: the action, the host and the time)"
        )
        sub.add_argument("--inventory", type=Path, help="the host inventory (default SNLM_INVENTORY)")
        return sub

    evac = action("evacuate", "place every VM of HOST on the --to hosts, and write the plan")
    evac.add_argument("host", metavar="HOST", help="the host to empty")
    evac.add_argument("--to", type=_host_list, required=True, metavar="H2,H3", help="the hosts that take its VMs")
    evac.add_argument(
        "--headroom",
        type=_ratio(0.0, 1.0, low_open=False, high_open=True),
        default=0.1,
        help="memory each target keeps free, as a fraction of its memory (default 0.1)",
    )
    rebal = action("rebalance", "move VMs from the hosts over --threshold to those under it, and write the plan")
    rebal.add_argument("--hosts", type=_host_list, metavar="H1,H2,...", help="the hosts (default: the inventory's)")
    rebal.add_argument(
        "--threshold",
        type=_ratio(0.0, 1.0, low_open=True, high_open=False),
        default=0.8,
        help="the memory in use, as a fraction of a host's memory, no host should end above (default 0.8)",
    )


def _cli() -> Any:
    from starter import cli

    return cli


# -- the hosts --------------------------------------------------------------------------------------------------
def _inventory(args: argparse.Namespace) -> Inventory:
    from config.inventory import InventoryError, load_inventory
    from starter.campaign_cli import _offline_settings

    cli = _cli()
    settings = _offline_settings()
    path = args.inventory or (settings.inventory if settings is not None else None)
    if path is None:
        raise cli.CliError(
            cli.EXIT_CONFIGURATION,
            "inventory",
            "no inventory to check the hosts against: set SNLM_INVENTORY (the worker's) or pass --inventory",
        )
    try:
        return load_inventory(path)
    except (InventoryError, OSError) as error:
        raise cli.CliError(cli.EXIT_CONFIGURATION, "inventory", f"cannot read the inventory {path}: {error}") from None


def _known(inventory: Inventory, names: Sequence[str]) -> list[str]:
    """The hosts as the inventory spells them, each once; exit 2 naming those it does not list."""
    cli = _cli()
    unknown = [name for name in names if inventory.find(name) is None]
    if unknown:
        where = f" {inventory.source}" if inventory.source is not None else ""
        raise cli.CliError(
            cli.EXIT_CONFIGURATION,
            "unknown_host",
            f"not in the inventory{where}: {', '.join(unknown)}",
            hosts=unknown,
        )
    found = []
    for name in names:
        entry = inventory.find(name)
        if entry is not None and entry.name not in found:
            found.append(entry.name)
    return found


def _hosts(args: argparse.Namespace, inventory: Inventory) -> list[str]:
    """Every host the action surveys, the evacuated one first; exit 2 on a request that cannot be planned."""
    cli = _cli()
    if args.action == "evacuate":
        (source,) = _known(inventory, [args.host])
        targets = _known(inventory, args.to)
        if source in targets:
            raise cli.CliError(cli.EXIT_USAGE, "usage", f"{source} is the host to evacuate: it cannot be in --to")
        return [source, *targets]
    hosts = _known(inventory, args.hosts) if args.hosts else list(inventory.hosts)
    if len(hosts) < 2:
        raise cli.CliError(cli.EXIT_USAGE, "usage", "a rebalance needs at least two hosts")
    return hosts


async def _survey(client: Any, settings: Any, hosts: Sequence[str], out: Output) -> tuple[str, SurveyResult]:
    from temporalio.client import WorkflowFailureError

    cli = _cli()
    workflow_id = SURVEY_WORKFLOW_PREFIX + uuid.uuid4().hex
    await cli._warn_without_worker(client, settings.task_queue, out)
    try:
        result: SurveyResult = await client.execute_workflow(
            SURVEY_WORKFLOW,
            SurveyInput(tuple(hosts)),
            id=workflow_id,
            task_queue=settings.task_queue,
            result_type=SurveyResult,
            execution_timeout=SURVEY_TIMEOUT,
        )
    except WorkflowFailureError as error:
        failure = cli.failure_info(error)
        remedy = f" Remedy: {failure['remedy']}" if failure["remedy"] else ""
        raise cli.CliError(
            cli._exit_for_failure(failure),
            "survey_failed",
            f"the survey {workflow_id} failed ({failure['type']}): {failure['message']}{remedy}",
            workflow_id=workflow_id,
            failure=failure,
        ) from None
    except Exception as error:
        raise cli._rpc_error(error, workflow_id) or error from None
    return workflow_id, result


# -- the command ------------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, out: Output, connect: Callable[[argparse.Namespace], Awaitable[Any]]) -> int:
    """Survey, place, write the plan, print what was decided. Exit 0, or 3 when some VM found no place."""
    from starter.plans import PlanInvalid, load_plan

    cli = _cli()
    # The file and the hosts are checked before Temporal is reached: a typo costs nothing and says what it is.
    if args.out.suffix.lower() not in (".yaml", ".yml"):
        raise cli.CliError(cli.EXIT_USAGE, "usage", f"--out {args.out}: a generated plan is YAML (.yaml or .yml)")
    if not args.out.parent.is_dir():
        raise cli.CliError(cli.EXIT_USAGE, "usage", f"--out {args.out}: no such folder {args.out.parent}")
    inventory = _inventory(args)
    hosts = _hosts(args, inventory)
    client, settings = await connect(args)
    workflow_id, surveyed = await _survey(client, settings, hosts, out)
    surveys = list(surveyed.hosts)  # in the order asked: the evacuated host first
    if args.action == "evacuate":
        result = evacuate(surveys[0], surveys[1:], headroom=args.headroom)
        name = args.name or plan_name("evacuate", hosts[0])
        heading = f"evacuate {hosts[0]} to {', '.join(hosts[1:])} (headroom {args.headroom:g})"
    else:
        result = rebalance(surveys, threshold=args.threshold)
        name = args.name or plan_name("rebalance")
        heading = f"rebalance {', '.join(hosts)} (threshold {args.threshold:g})"
    out.line(f"{heading}: {len(result.moves)} move(s), {len(result.unplaced)} VM(s) not placed (survey {workflow_id})")
    _print(out, result)
    path: Path | None = None
    if result.moves:
        involved = {m.source for m in result.moves} | {m.destination for m in result.moves}
        slots = {s.host: s.max_migrations for s in surveys if s.host in involved}
        comment = f"From the survey {workflow_id} of {', '.join(hosts)}: {heading}."
        try:
            path = write_plan_yaml(args.out, name, result, comment=comment, slots=slots)
        except OSError as error:
            raise cli.CliError(cli.EXIT_FAILED, "write", f"cannot write {args.out}: {error.strerror}") from None
        try:
            plan = load_plan(path, inventory=inventory)
        except PlanInvalid as error:
            raise cli.CliError(
                cli.EXIT_FAILED, "plan_invalid", f"the plan written does not read back: {error}"
            ) from None
        out.line(f"plan written: {path} (campaign {plan.name}, {len(result.moves)} move(s)); nothing was started.")
        out.line(f"review it, then: snlm campaign check {path} && snlm campaign start {path}")
    else:
        out.line(f"nothing to move: no plan written to {args.out}")
    out.document(
        {
            "workflow_id": workflow_id,
            "action": args.action,
            "name": name,
            "plan": str(path) if path is not None else None,
            "hosts": hosts,
            "placement": moves_document(result),
        }
    )
    return cli.EXIT_OK if result.complete else EXIT_UNPLACED


def _shown(name: str) -> str:
    """A VM's name for a terminal: as it is, unless it holds what would break the line (then quoted, escaped)."""
    if name.isprintable():
        return name
    return name.encode("unicode_escape").decode("ascii").join("''")


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _print(out: Output, result: PlacementResult) -> None:
    if result.moves:
        rows = [("VM", "FROM", "TO", "MEMORY", "WHY")]
        rows += [(_shown(m.vm), m.source, m.destination, _gib(m.memory_bytes), m.why) for m in result.moves]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            out.line("  " + "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]]))
        for move in result.moves:
            for note in move.notes:
                out.line(f"  note: {_shown(move.vm)}: {note}")
    if result.unplaced:
        out.line("not placed:")
        for vm in result.unplaced:
            out.line(f"  {_shown(vm.vm)} on {vm.source} ({_gib(vm.memory_bytes)}): {vm.reason}")
    out.line("memory in use, before -> after (limit):")
    for load in result.hosts:
        limit = "" if load.role == "source" else f"; limit {_gib(load.limit_bytes)}"
        flag = "  STILL OVER" if load.role == "donor" and load.over else ""
        out.line(
            f"  {load.host:<16} {load.role:<8} {load.before * 100:5.1f} % -> {load.after * 100:5.1f} % "
            f"({_gib(load.used_before)} -> {_gib(load.used_after)} of {_gib(load.memory_bytes)}{limit}){flag}"
        )
    for note in result.notes:
        out.line(f"note: {note}")
