"""What ensuring a host's live-migration settings makes of them.

Pure, so that the activity that changes a host and the saga that decides whether to call it agree by construction:
the saga holds preflight's reading of both hosts, taken moments before, and a host whose reading already has what
the move needs costs no round trip at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from workflows.contracts import EnsureSettingsInput, EnsureSettingsResult, HostMigrationSettings

__all__ = ["SettingsPlan", "normalize_subnet", "plan_settings", "settings_changed", "settings_in_place"]


def normalize_subnet(text: str) -> str:
    """A subnet as the hosts compare them ("10.1.0.7/24" is 10.1.0.0/24); text that is none, trimmed and lowered."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return text.strip().lower()


@dataclass(frozen=True)
class SettingsPlan:
    """`want`: the settings ensure leaves, with the networks the host already has; `add`: the subnets it adds
    (Add-VMMigrationNetwork, each at the priority the host gives it)."""

    want: HostMigrationSettings
    add: tuple[str, ...]


def plan_settings(previous: HostMigrationSettings, request: EnsureSettingsInput) -> SettingsPlan:
    """Live migration enabled with the requested authentication and performance option, the requested networks
    added to those the host has (none removed), any network used only when neither side names one, and the
    firewall rule for TCP 6600 enabled. The host's concurrency limit is its own and stays."""
    have = {subnet for subnet, _ in previous.networks}
    add = tuple(s for s in dict.fromkeys(normalize_subnet(s) for s in request.migration_networks) if s not in have)
    want = HostMigrationSettings(
        host=previous.host,
        enabled=True,
        authentication=request.authentication or previous.authentication,
        performance=request.performance or previous.performance,
        use_any_network=previous.use_any_network or (not request.migration_networks and not previous.networks),
        networks=previous.networks,
        max_vm_migrations=previous.max_vm_migrations,
        firewall_rule_enabled=True,
    )
    return SettingsPlan(want, add)


def settings_changed(previous: HostMigrationSettings, current: HostMigrationSettings) -> bool:
    """Whether ensure changed anything restore would put back (names compared as Windows does, ignoring case)."""
    return (
        previous.enabled != current.enabled
        or previous.authentication.lower() != current.authentication.lower()
        or previous.performance.lower() != current.performance.lower()
        or previous.use_any_network != current.use_any_network
        or previous.networks != current.networks
        or previous.firewall_rule_enabled != current.firewall_rule_enabled
    )


def settings_in_place(reading: HostMigrationSettings, request: EnsureSettingsInput) -> EnsureSettingsResult | None:
    """What ensure would return for a host that reads `reading`, when it would change nothing; None when it would
    change something (the activity must run)."""
    plan = plan_settings(reading, request)
    if plan.add or settings_changed(reading, plan.want):
        return None
    return EnsureSettingsResult(previous=reading, current=reading, changed=False)
