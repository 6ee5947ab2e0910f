"""Host-level Hyper-V cmdlets: Get-/Set-VMHost, Enable-/Disable-VMMigration, migration networks, switches."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from lab.cmdlets import errors, objects
from lab.cmdlets.base import Context, cmdlet
from lab.cmdlets.binder import CmdletInfo, Kind, Param
from lab.cmdlets.errors import hyperv_class
from lab.cmdlets.psobj import (
    MigrationAuthenticationTypeEnum,
    VMMigrationPerformanceEnum,
    has_wildcard,
    wildcard_match,
)
from lab.commands import ErrorCategory
from lab.model.state import MigrationAuthenticationType, MigrationNetwork, VMMigrationPerformance

COMPUTER_NAME = Param("ComputerName", Kind.STRINGS, not_null_or_empty=True)
CREDENTIAL = Param("Credential", Kind.ANYS)
CIM_SESSION = Param("CimSession", Kind.ANYS)
PASSTHRU = Param("Passthru", Kind.SWITCH)


def hv(name: str, *params: Param, default_set: str | None = None, should_process: bool = False) -> CmdletInfo:
    return CmdletInfo(name, hyperv_class(name), params, default_set=default_set, should_process=should_process)


@cmdlet(hv("Get-VMHost", COMPUTER_NAME, CREDENTIAL, CIM_SESSION))
def get_vmhost(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    with ctx.world.lock:
        return [objects.vm_host(host)]


@cmdlet(
    hv(
        "Set-VMHost",
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
        Param("MaximumStorageMigrations", Kind.UINT32),
        Param("MaximumVirtualMachineMigrations", Kind.UINT32),
        Param("VirtualMachineMigrationAuthenticationType", Kind.ENUM, enum=MigrationAuthenticationTypeEnum),
        Param("VirtualMachineMigrationPerformanceOption", Kind.ENUM, enum=VMMigrationPerformanceEnum),
        Param("UseAnyNetworkForMigration", Kind.BOOL),
        Param("VirtualMachinePath", Kind.STRING),
        Param("VirtualHardDiskPath", Kind.STRING),
        Param("NumaSpanningEnabled", Kind.BOOL),
        Param("EnableEnhancedSessionMode", Kind.BOOL),
        Param("ResourceMeteringSaveInterval", Kind.ANY),
        PASSTHRU,
        should_process=True,
    )
)
def set_vmhost(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    settable = [
        "MaximumStorageMigrations",
        "MaximumVirtualMachineMigrations",
        "VirtualMachineMigrationAuthenticationType",
        "VirtualMachineMigrationPerformanceOption",
        "UseAnyNetworkForMigration",
        "VirtualMachinePath",
        "VirtualHardDiskPath",
        "NumaSpanningEnabled",
        "EnableEnhancedSessionMode",
        "ResourceMeteringSaveInterval",
    ]
    b = ctx.bound
    if not any(b.has(name) for name in settable):
        # NEON SetVMHost: InvalidOperation, target = the VMHost (catalogue 2.3).
        with ctx.world.lock:
            target = objects.vm_host(host)
        ctx.write_error(
            errors.virtualization_error(
                ctx.name,
                "InvalidOperation",
                ErrorCategory.InvalidOperation,
                errors.SET_VMHOST_NO_PARAMETERS,
                target_object=target,
            )
        )
        return []
    if b.switch("WhatIf"):
        return []
    with ctx.world.lock:
        lm = host.live_migration
        if b.has("MaximumStorageMigrations"):
            lm.max_storage_migrations = b.get("MaximumStorageMigrations")
        if b.has("MaximumVirtualMachineMigrations"):
            lm.max_vm_migrations = b.get("MaximumVirtualMachineMigrations")
        if b.has("VirtualMachineMigrationAuthenticationType"):
            lm.authentication = MigrationAuthenticationType(int(b.get("VirtualMachineMigrationAuthenticationType")))
        if b.has("VirtualMachineMigrationPerformanceOption"):
            lm.performance = VMMigrationPerformance(int(b.get("VirtualMachineMigrationPerformanceOption")))
        if b.has("UseAnyNetworkForMigration"):
            lm.use_any_network = bool(b.get("UseAnyNetworkForMigration"))
        if b.get("VirtualMachinePath"):
            host.virtual_machine_path = b.get("VirtualMachinePath")
        if b.get("VirtualHardDiskPath"):
            host.virtual_hard_disk_path = b.get("VirtualHardDiskPath")
        return [objects.vm_host(host)] if b.switch("Passthru") else []


def _set_migration(ctx: Context, enabled: bool) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None or ctx.bound.switch("WhatIf"):
        return []
    with ctx.world.lock:
        host.live_migration.enabled = enabled
        return [objects.vm_host(host)] if ctx.bound.switch("Passthru") else []


@cmdlet(hv("Enable-VMMigration", COMPUTER_NAME, CREDENTIAL, CIM_SESSION, PASSTHRU, should_process=True))
def enable_vmmigration(ctx: Context) -> Iterable[Any]:
    return _set_migration(ctx, True)


@cmdlet(hv("Disable-VMMigration", COMPUTER_NAME, CREDENTIAL, CIM_SESSION, PASSTHRU, should_process=True))
def disable_vmmigration(ctx: Context) -> Iterable[Any]:
    return _set_migration(ctx, False)


def _subnet_matches(pattern: str, subnet: str) -> bool:
    if has_wildcard(pattern):
        return wildcard_match(pattern, subnet)
    try:
        return ipaddress.ip_network(pattern, strict=False) == ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        return pattern.lower() == subnet.lower()


def _network_not_found(ctx: Context, subnet: str) -> None:
    ctx.write_error(
        errors.virtualization_error(
            ctx.name,
            "InvalidParameter",
            ErrorCategory.InvalidArgument,
            errors.MIGRATION_NETWORK_NOT_FOUND,
            target=subnet,
        )
    )


@cmdlet(hv("Get-VMMigrationNetwork", Param("Subnet", Kind.STRING, position=0), COMPUTER_NAME, CREDENTIAL, CIM_SESSION))
def get_vmmigration_network(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    pattern = ctx.bound.get("Subnet")
    with ctx.world.lock:
        # Only the user-managed networks: UseAnyNetworkForMigration's entries are not listed (NEON).
        found = [n for n in host.live_migration.networks if pattern is None or _subnet_matches(pattern, n.subnet)]
        out = [objects.migration_network(host, n) for n in found]
    if pattern is not None and not has_wildcard(pattern) and not found:
        _network_not_found(ctx, pattern)
    return out


@cmdlet(
    hv(
        "Add-VMMigrationNetwork",
        Param("Subnet", Kind.STRING, position=0, mandatory=True, not_null_or_empty=True),
        Param("Priority", Kind.UINT32, position=1),
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
        PASSTHRU,
        should_process=True,
    )
)
def add_vmmigration_network(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    text = ctx.bound.get("Subnet")
    try:
        subnet = str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        # LAB-OWN text: the module's own validation message for a malformed subnet is not in the catalogue.
        ctx.write_error(
            errors.virtualization_error(
                ctx.name,
                "InvalidParameter",
                ErrorCategory.InvalidArgument,
                f"The subnet '{text}' is not valid. Specify the subnet as an address and prefix length, "
                "for example 192.168.10.0/24.",
                target=text,
            )
        )
        return []
    if ctx.bound.switch("WhatIf"):
        return []
    with ctx.world.lock:
        networks = host.live_migration.networks
        existing = next((n for n in networks if n.subnet == subnet), None)
        if ctx.bound.has("Priority"):
            priority = int(ctx.bound.get("Priority"))
        else:
            priority = max((n.priority for n in networks), default=4) + 1  # LAB: next after the last one
        if existing is None:
            existing = MigrationNetwork(subnet, priority)
            networks.append(existing)
        elif ctx.bound.has("Priority"):
            existing.priority = priority
        return [objects.migration_network(host, existing)] if ctx.bound.switch("Passthru") else []


@cmdlet(
    hv(
        "Remove-VMMigrationNetwork",
        Param("Subnet", Kind.STRING, position=0, mandatory=True, not_null_or_empty=True),
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
        PASSTHRU,
        should_process=True,
    )
)
def remove_vmmigration_network(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    pattern = ctx.bound.get("Subnet")
    with ctx.world.lock:
        networks = host.live_migration.networks
        found = [n for n in networks if _subnet_matches(pattern, n.subnet)]
        out = [objects.migration_network(host, n) for n in found] if ctx.bound.switch("Passthru") else []
        if not ctx.bound.switch("WhatIf"):
            for network in found:
                networks.remove(network)
    if not found and not has_wildcard(pattern):
        _network_not_found(ctx, pattern)
    return out


@cmdlet(
    hv(
        "Get-VMSwitch",
        Param("Name", Kind.STRINGS, position=0, aliases=("SwitchName",)),
        Param("Id", Kind.GUIDS),
        Param("SwitchType", Kind.ANYS),
        Param("ResourcePoolName", Kind.STRINGS),
        COMPUTER_NAME,
        CREDENTIAL,
        CIM_SESSION,
    )
)
def get_vmswitch(ctx: Context) -> Iterable[Any]:
    host = ctx.target_host()
    if host is None:
        return []
    names: list[str] | None = ctx.bound.get("Name")
    ids = ctx.bound.get("Id")
    out: list[Any] = []
    with ctx.world.lock:
        switches = list(host.switches)
        if names:
            for pattern in names:
                matched = [s for s in switches if wildcard_match(pattern, s.name)]
                if not matched and not has_wildcard(pattern):
                    ctx.write_error(errors.switch_not_found(ctx.name, pattern))
                out.extend(objects.vm_switch(host, s) for s in matched)
        elif ids:
            out.extend(objects.vm_switch(host, s) for s in switches if s.id in ids)
        else:
            out.extend(objects.vm_switch(host, s) for s in switches)
    return out
