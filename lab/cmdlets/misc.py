"""klist (an executable: raw arguments, text output), Select-Object and Write-Output."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.psobj import custom_object, get_prop, prop_names, type_names_of, wildcard_match

# The logon session of the remote PowerShell session (any LUID but the machine's 0x3e7); LAB value.
SESSION_LOGON_ID = "0:0x5a3c1f"


@cmdlet(CmdletInfo("klist", "klist", native=True))
def klist(ctx: Context) -> Iterable[Any]:
    """`klist purge -li 0x3e7` purges the machine account's tickets (hyperv-facts "Authentication"); the lines
    are what klist.exe prints, one string per line (the first one empty)."""
    args = [a.lower() for a in ctx.bound.raw_args]
    target = SESSION_LOGON_ID
    if "-li" in args and args.index("-li") + 1 < len(args):
        value = args[args.index("-li") + 1]
        target = value if value.startswith("0:") else f"0:{value}"
    lines = ["", f"Current LogonId is {SESSION_LOGON_ID}"]
    if args and args[0] == "purge":
        if target == "0:0x3e7":
            ctx.engine.purge_tickets(ctx.host_name)
        lines += [f"Targeted LogonId is {target}", "\tDeleting all tickets:", "\tTicket(s) purged!"]
        return lines
    with ctx.world.lock:
        count = len(ctx.host.ticket_cache) if target == "0:0x3e7" else 0
    if target != SESSION_LOGON_ID:
        lines.append(f"Targeted LogonId is {target}")
    lines += ["", f"Cached Tickets: ({count})"]
    return lines


def _expand(names: list[Any], sample: Any) -> list[tuple[str, Any]]:
    """Property selectors: names (wildcards allowed) and @{Name=..; Expression='<property>'} tables."""
    selected: list[tuple[str, Any]] = []
    available = prop_names(sample)
    for item in names:
        if isinstance(item, dict):
            label = get_prop(item, "Name") or get_prop(item, "Label") or get_prop(item, "N") or get_prop(item, "L")
            expression = get_prop(item, "Expression") or get_prop(item, "E")
            selected.append((str(label or expression), str(expression)))
            continue
        pattern = str(item)
        matched = [n for n in available if wildcard_match(pattern, n)]
        if not matched and "*" not in pattern:
            matched = [pattern]  # PowerShell adds a null-valued property for a name the object lacks
        for name in matched:
            if all(name.lower() != s[0].lower() for s in selected):
                selected.append((name, name))
    return selected


@cmdlet(
    CmdletInfo(
        "Select-Object",
        "Microsoft.PowerShell.Commands.SelectObjectCommand",
        (
            Param("Property", Kind.ANYS, position=0),
            Param("InputObject", Kind.ANY, pipeline=True),
            Param("ExpandProperty", Kind.STRING),
            Param("ExcludeProperty", Kind.STRINGS),
            Param("First", Kind.INT32),
            Param("Last", Kind.INT32),
            Param("Skip", Kind.INT32),
            Param("Unique", Kind.SWITCH),
            Param("Index", Kind.ANYS),
            Param("Wait", Kind.SWITCH),
        ),
    )
)
def select_object(ctx: Context) -> Iterable[Any]:
    b = ctx.bound
    items = b.get("InputObject")
    items = list(items) if isinstance(items, list) else ([] if items is None else [items])
    if b.has("Skip"):
        items = items[b.get("Skip") :]
    if b.has("First"):
        items = items[: b.get("First")]
    if b.has("Last"):
        items = items[-b.get("Last") :] if b.get("Last") else []
    out: list[Any] = []
    properties = b.get("Property")
    excluded = [e.lower() for e in b.get("ExcludeProperty") or []]
    for item in items:
        if b.get("ExpandProperty"):
            value = get_prop(item, b.get("ExpandProperty"))
            out.extend(value if isinstance(value, list) else [value])
            continue
        if not properties:
            out.append(item)
            continue
        selected = [(n, e) for n, e in _expand(properties, item) if n.lower() not in excluded]
        base = type_names_of(item)
        type_names = ([f"Selected.{base[0]}"] if base else []) + [
            "System.Management.Automation.PSCustomObject",
            "System.Object",
        ]
        out.append(custom_object([(name, get_prop(item, expression)) for name, expression in selected], type_names))
    return out


@cmdlet(
    CmdletInfo(
        "Write-Output",
        "Microsoft.PowerShell.Commands.WriteOutputCommand",
        (
            Param("InputObject", Kind.ANYS, position=0, mandatory=True, pipeline=True),
            Param("NoEnumerate", Kind.SWITCH),
        ),
    )
)
def write_output(ctx: Context) -> Iterable[Any]:
    """Windows PowerShell 5.1's Write-Output (InputObject is PSObject[]): an array given on the command line
    is written element by element, one level deep; each pipeline object is written as it came.

    -NoEnumerate is accepted and changes nothing: 5.1 enumerates a named -InputObject even with it (its
    documentation says so); that a positional argument would pass through whole is not modelled.
    """
    items = ctx.bound.get("InputObject")
    if ctx.bound.pipeline_param == "InputObject":
        return list(ctx.input)
    return list(items) if isinstance(items, list) else [items]
