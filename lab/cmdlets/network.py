"""Network cmdlets: firewall rules, adapter bindings, SMB configuration, Test-NetConnection, Test-Connection.

The NetSecurity / NetAdapter / SmbShare cmdlets are CDXML functions: their FullyQualifiedErrorIds end
with the function name, and a query that matches nothing writes `CmdletizationQuery_NotFound_<Property>`
(text recalled from real hosts; not in the catalogue).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.psobj import has_wildcard, wildcard_match
from lab.commands import ErrorCategory, ErrorSpec
from lab.model.state import Host

TCP_TIMEOUT_SECONDS = 21.0  # a dropped TCP connect per address (catalogue 1.16)


def not_found(ctx: Context, cim_class: str, prop: str, value: str) -> None:
    ctx.write_error(
        ErrorSpec(
            message=f"No {cim_class} objects found with property '{prop}' equal to '{value}'.  Verify the value of "
            "the property and retry.",
            fully_qualified_error_id=f"CmdletizationQuery_NotFound_{prop},{ctx.name}",
            category=ErrorCategory.ObjectNotFound,
            activity=ctx.name,
            exception_types=errors.CIM_JOB_EXCEPTION,
            target_name=value,
            target_type="String",
            target_object=value,
        )
    )


def cdxml(name: str, *params: Param, default_set: str | None = None, should_process: bool = False) -> CmdletInfo:
    extra = (
        Param("CimSession", Kind.ANYS, aliases=("Session",)),
        Param("ThrottleLimit", Kind.INT32),
        Param("AsJob", Kind.SWITCH),
    )
    return CmdletInfo(name, name, (*params, *extra), default_set=default_set, should_process=should_process)


_RULE_PARAMS = (
    Param("Name", Kind.STRINGS, position=0, sets=("ByName",), aliases=("ID",)),
    Param("DisplayName", Kind.STRINGS, mandatory=True, sets=("ByDisplayName",)),
    Param("DisplayGroup", Kind.STRINGS, sets=("ByQuery",)),
    Param("Group", Kind.STRINGS, sets=("ByQuery",)),
    Param("Enabled", Kind.STRINGS, sets=("ByQuery",)),
    Param("PolicyStore", Kind.STRING),
)


def _select_rules(ctx: Context) -> list[Any]:
    host = ctx.host
    rules = list(host.firewall_rules)
    for prop, attr in (
        ("Name", "name"),
        ("DisplayName", "display_name"),
        ("DisplayGroup", "group"),
        ("Group", "group"),
    ):
        patterns = ctx.bound.get(prop)
        if not patterns:
            continue
        selected: list[Any] = []
        for pattern in patterns:
            matched = [r for r in rules if wildcard_match(pattern, getattr(r, attr))]
            if not matched and not has_wildcard(pattern):
                not_found(ctx, "MSFT_NetFirewallRule", prop, pattern)
            selected.extend(r for r in matched if r not in selected)
        rules = selected
    return rules


@cmdlet(cdxml("Get-NetFirewallRule", *_RULE_PARAMS, Param("All", Kind.SWITCH, sets=("All",)), default_set="All"))
def get_net_firewall_rule(ctx: Context) -> Iterable[Any]:
    with ctx.world.lock:
        return [objects.firewall_rule(r) for r in _select_rules(ctx)]


def _set_rules(ctx: Context, enabled: bool) -> Iterable[Any]:
    with ctx.world.lock:
        rules = _select_rules(ctx)
        if not ctx.bound.switch("WhatIf"):
            for rule in rules:
                rule.enabled = enabled
        return [objects.firewall_rule(r) for r in rules] if ctx.bound.switch("PassThru") else []


@cmdlet(
    cdxml(
        "Enable-NetFirewallRule",
        *_RULE_PARAMS,
        Param("PassThru", Kind.SWITCH),
        default_set="ByName",
        should_process=True,
    )
)
def enable_net_firewall_rule(ctx: Context) -> Iterable[Any]:
    return _set_rules(ctx, True)


@cmdlet(
    cdxml(
        "Disable-NetFirewallRule",
        *_RULE_PARAMS,
        Param("PassThru", Kind.SWITCH),
        default_set="ByName",
        should_process=True,
    )
)
def disable_net_firewall_rule(ctx: Context) -> Iterable[Any]:
    return _set_rules(ctx, False)


_BINDING_PARAMS = (
    Param("Name", Kind.STRINGS, position=0, aliases=("ifAlias", "InterfaceAlias")),
    Param("ComponentID", Kind.STRINGS),
    Param("DisplayName", Kind.STRINGS),
    Param("IncludeHidden", Kind.SWITCH),
    Param("AllBindings", Kind.SWITCH),
)


def _bindings(ctx: Context) -> list[tuple[Any, str]]:
    host = ctx.host
    names = ctx.bound.get("Name")
    nics = list(host.nics)
    if names:
        selected: list[Any] = []
        for pattern in names:
            matched = [n for n in nics if wildcard_match(pattern, n.name)]
            if not matched and not has_wildcard(pattern):
                not_found(ctx, "MSFT_NetAdapterBindingSettingData", "Name", pattern)
            selected.extend(n for n in matched if n not in selected)
        nics = selected
    components = ctx.bound.get("ComponentID")
    display = ctx.bound.get("DisplayName")
    out = []
    for nic in nics:
        for component in nic.bindings:
            if components and not any(wildcard_match(c, component) for c in components):
                continue
            if display and not any(wildcard_match(d, objects.BINDING_NAMES.get(component, component)) for d in display):
                continue
            out.append((nic, component))
    return out


@cmdlet(cdxml("Get-NetAdapterBinding", *_BINDING_PARAMS))
def get_net_adapter_binding(ctx: Context) -> Iterable[Any]:
    with ctx.world.lock:
        return [objects.net_adapter_binding(ctx.host, nic, c, nic.bindings[c]) for nic, c in _bindings(ctx)]


def _set_bindings(ctx: Context, enabled: bool) -> Iterable[Any]:
    with ctx.world.lock:
        pairs = _bindings(ctx)
        if not ctx.bound.switch("WhatIf"):
            for nic, component in pairs:
                nic.bindings[component] = enabled
        if ctx.bound.switch("PassThru"):
            return [objects.net_adapter_binding(ctx.host, nic, c, nic.bindings[c]) for nic, c in pairs]
    return []


@cmdlet(cdxml("Enable-NetAdapterBinding", *_BINDING_PARAMS, Param("PassThru", Kind.SWITCH), should_process=True))
def enable_net_adapter_binding(ctx: Context) -> Iterable[Any]:
    return _set_bindings(ctx, True)


@cmdlet(cdxml("Disable-NetAdapterBinding", *_BINDING_PARAMS, Param("PassThru", Kind.SWITCH), should_process=True))
def disable_net_adapter_binding(ctx: Context) -> Iterable[Any]:
    return _set_bindings(ctx, False)


@cmdlet(cdxml("Get-SmbServerConfiguration"))
def get_smb_server_configuration(ctx: Context) -> Iterable[Any]:
    with ctx.world.lock:
        return [objects.smb_server_configuration(ctx.host)]


def _resolve_peer(ctx: Context, name: str) -> tuple[Host | None, str | None]:
    """The host a name or address designates, and the address a connection would use."""
    with ctx.world.lock:
        host = ctx.world.host(name)
        if host is not None:
            return host, host.migration_nic().ip
        for candidate in ctx.world.hosts.values():
            for nic in candidate.nics:
                if nic.ip == name:
                    return candidate, nic.ip
    return None, None


def _port_open(peer: Host, port: int) -> bool:
    if port == 6600:
        return peer.live_migration_port_open()
    if port == 445:
        return peer.smb2_enabled
    if port in (135, 3343, 5985, 5986):
        return True
    return any(r.enabled and r.local_port == str(port) for r in peer.firewall_rules)


def _reachable(ctx: Context, peer: Host) -> bool:
    if peer is ctx.host:
        return True
    return ctx.faults is None or not ctx.faults.partitioned(ctx.host_name, peer.name)


@cmdlet(
    CmdletInfo(
        "Test-NetConnection",
        "Test-NetConnection",
        (
            Param("ComputerName", Kind.STRING, position=0, aliases=("RemoteAddress", "cn")),
            Param("Port", Kind.INT32, mandatory=True, sets=("RemotePort",), aliases=("RemotePort",)),
            Param("CommonTCPPort", Kind.STRING, position=1, sets=("CommonTCPPort",)),
            Param("InformationLevel", Kind.STRING),
            Param("TraceRoute", Kind.SWITCH, sets=("NetRouteDiagnostics",)),
        ),
        default_set="CommonTCPPort",
    )
)
def test_net_connection(ctx: Context) -> Iterable[Any]:
    name = ctx.bound.get("ComputerName") or "internetbeacon.msedge.net"
    common = {"http": 80, "rdp": 3389, "smb": 445, "winrm": 5985}
    port = ctx.bound.get("Port")
    if port is None and ctx.bound.get("CommonTCPPort"):
        port = common.get(str(ctx.bound.get("CommonTCPPort")).lower(), 0)
    quiet = str(ctx.bound.get("InformationLevel") or "").lower() == "quiet"
    peer, address = _resolve_peer(ctx, name)
    with ctx.world.lock:
        source = ctx.host.migration_nic()
    if peer is None:
        ctx.write_warning(f"Name resolution of {name} failed")
        if quiet:
            return [False]
        return [objects.test_net_connection_result(name, None, port or 0, source, False, False)]
    ping = _reachable(ctx, peer)
    with ctx.world.lock:
        tcp = ping and port is not None and _port_open(peer, port)
    if port is not None and not tcp:
        # A dropped connect waits out the TCP timeout; the pipeline can still be stopped meanwhile.
        ctx.io.stop_event.wait(ctx.world.clock.to_real(TCP_TIMEOUT_SECONDS))
        ctx.write_warning(f"TCP connect to ({address} : {port}) failed")
    if not ping:
        ctx.write_warning(f"Ping to {address} failed with status: TimedOut")
    if quiet:
        return [tcp if port is not None else ping]
    return [objects.test_net_connection_result(name, address, port or 0, source, ping, bool(tcp))]


@cmdlet(
    CmdletInfo(
        "Test-Connection",
        "Microsoft.PowerShell.Commands.TestConnectionCommand",
        (
            Param(
                "ComputerName",
                Kind.STRINGS,
                position=0,
                mandatory=True,
                aliases=("CN", "IPAddress", "__SERVER", "Server", "Destination"),
            ),
            Param("Count", Kind.INT32),
            Param("Quiet", Kind.SWITCH),
            Param("Source", Kind.STRINGS, aliases=("FCN", "SRC")),
            Param("BufferSize", Kind.INT32, aliases=("Size", "Bytes", "BS")),
            Param("Delay", Kind.INT32),
            Param("TimeToLive", Kind.INT32, aliases=("TTL",)),
        ),
    )
)
def test_connection(ctx: Context) -> Iterable[Any]:
    out: list[Any] = []
    count = ctx.bound.get("Count") or 4
    for name in ctx.bound.get("ComputerName"):
        peer, address = _resolve_peer(ctx, name)
        ok = peer is not None and _reachable(ctx, peer)
        if ctx.bound.switch("Quiet"):
            out.append(ok)
            continue
        if not ok:
            reason = "No such host is known" if peer is None else "Error due to lack of resources"
            ctx.write_error(
                ErrorSpec(
                    message=f"Testing connection to computer '{name}' failed: {reason}",
                    fully_qualified_error_id="TestConnectionException,Microsoft.PowerShell.Commands.TestConnectionCommand",
                    category=ErrorCategory.ResourceUnavailable,
                    activity=ctx.name,
                    exception_types=(
                        "System.Net.NetworkInformation.PingException",
                        "System.InvalidOperationException",
                        "System.SystemException",
                        "System.Exception",
                        "System.Object",
                    ),
                    target_name=name,
                    target_type="String",
                    target_object=name,
                )
            )
            continue
        for _ in range(count):
            out.append(
                objects.cim_instance(
                    "root/cimv2",
                    ["Win32_PingStatus"],
                    [
                        ("Address", name),
                        ("IPV4Address", address),
                        ("ResponseTime", 1),
                        ("StatusCode", 0),
                        ("BufferSize", 32),
                    ],
                    ctx.host_name,
                    ("Address", name),
                )
            )
    return out
