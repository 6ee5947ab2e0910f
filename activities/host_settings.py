"""A host's live-migration settings (HostMigrationSettings) from the three reads that hold them.

`Get-VMHost`, `Get-VMMigrationNetwork` and `Get-NetFirewallRule -Name VIRT-MIGL-In-TCP-NoScope` do not depend on
each other, so a caller runs them in one batch, alongside whatever else it reads of the host, and hands their
outputs to `migration_settings`. Preflight and the settings activities (activities/migration.py) read the same
commands and parse them here, so what preflight reports is exactly what a later restore would put back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from activities.host_errors import ErrorInfo
from activities.hosts import Command
from workflows import contracts as c
from workflows.contracts import HostMigrationSettings
from workflows.settings_plan import normalize_subnet

__all__ = ["FIREWALL_RULE", "firewall_rule_absent", "migration_settings", "settings_commands"]

FIREWALL_RULE: Final = "VIRT-MIGL-In-TCP-NoScope"  # "Hyper-V (MIG-TCP-In)", TCP 6600
# MSFT_NetFirewallRule.Enabled: 1 True, 2 False.
_RULE_ENABLED: Final = 1


def settings_commands() -> tuple[Command, Command, Command]:
    """The reads `migration_settings` parses, in its order: the host, its migration networks, the firewall rule."""
    return (
        Command("Get-VMHost"),
        Command("Get-VMMigrationNetwork"),
        Command("Get-NetFirewallRule", {"Name": FIREWALL_RULE}),
    )


def firewall_rule_absent(info: ErrorInfo) -> bool:
    """The firewall rule read failed because the host has no such rule: an answer (nothing to enable or restore),
    not a failure."""
    message = info.message.lower()
    return info.category == 13 or "not found" in message or "unable to find" in message


def migration_settings(
    host: str,
    vmhost: Sequence[Mapping[str, Any]],
    networks: Sequence[Mapping[str, Any]],
    rules: Sequence[Mapping[str, Any]],
) -> HostMigrationSettings:
    """The settings of `host` from the outputs of `settings_commands()` (each a list of property mappings; the
    caller has already judged their errors, a missing firewall rule being no error: `firewall_rule_absent`)."""
    first = vmhost[0] if vmhost else {}
    # A host without the rule: nothing to enable or restore.
    firewall = not rules or any(_int(r.get("Enabled")) == _RULE_ENABLED or r.get("Enabled") is True for r in rules)
    return HostMigrationSettings(
        host=host,
        enabled=bool(first.get("VirtualMachineMigrationEnabled")),
        authentication=_text(first.get("VirtualMachineMigrationAuthenticationType")),
        performance=_text(first.get("VirtualMachineMigrationPerformanceOption")),
        use_any_network=bool(first.get("UseAnyNetworkForMigration")),
        networks=tuple((normalize_subnet(_text(n.get("Subnet"))), _int(n.get("Priority"))) for n in networks),
        max_vm_migrations=_int(first.get("MaximumVirtualMachineMigrations"), c.HYPERV_DEFAULT_MAX_MIGRATIONS),
        firewall_rule_enabled=bool(firewall),
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default
