"""What ensure makes of a host's live-migration settings, and when the saga may skip it (pure, no server)."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import pytest

from workflows.contracts import (
    EnsureSettingsInput,
    EnsureSettingsResult,
    HostMigrationSettings,
    MigrationAuthentication,
    MigrationPerformance,
)
from workflows.settings_plan import normalize_subnet, plan_settings, settings_changed, settings_in_place

KERBEROS, COMPRESSION = MigrationAuthentication.KERBEROS, MigrationPerformance.COMPRESSION
READY = HostMigrationSettings(
    "HV-A",
    enabled=True,
    authentication="Kerberos",
    performance="Compression",
    use_any_network=False,
    networks=(("10.10.10.0/24", 1),),
    max_vm_migrations=4,
)
WANT = EnsureSettingsInput("HV-A", KERBEROS, COMPRESSION, ("10.10.10.0/24",))


def test_a_host_that_reads_as_the_move_needs_is_in_place_as_ensure_would_report_it() -> None:
    assert settings_in_place(READY, WANT) == EnsureSettingsResult(READY, READY, changed=False)
    # Windows compares these names without case; a host answering "kerberos" needs nothing either.
    assert settings_in_place(replace(READY, authentication="kerberos", performance="COMPRESSION"), WANT) is not None
    # The same network written otherwise (a host address inside it) is the same network.
    assert settings_in_place(READY, replace(WANT, migration_networks=(" 10.10.10.7/24 ",))) is not None


@pytest.mark.parametrize(
    ("host", "request_", "why"),
    [
        (replace(READY, enabled=False), WANT, "migration off"),
        (replace(READY, authentication="CredSSP"), WANT, "another authentication"),
        (replace(READY, performance="TCPIP"), WANT, "another performance option"),
        (replace(READY, firewall_rule_enabled=False), WANT, "TCP 6600 closed"),
        (READY, replace(WANT, migration_networks=("10.10.10.0/24", "10.20.0.0/16")), "a network to add"),
        (replace(READY, networks=()), EnsureSettingsInput("HV-A", KERBEROS, COMPRESSION), "no network either side"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_host_that_lacks_anything_is_left_to_the_activity(
    host: HostMigrationSettings, request_: EnsureSettingsInput, why: str
) -> None:
    assert settings_in_place(host, request_) is None, why


def test_the_plan_adds_only_missing_networks_once_and_keeps_the_host_s_own() -> None:
    plan = plan_settings(READY, replace(WANT, migration_networks=("10.20.0.1/16", "10.20.0.0/16", "10.10.10.0/24")))
    assert plan.add == ("10.20.0.0/16",)
    assert plan.want.networks == READY.networks  # the added ones get the host's priority: the activity appends them
    assert plan.want.max_vm_migrations == 4  # the host's own limit stays
    assert not plan.want.use_any_network


def test_any_network_only_when_neither_the_host_nor_the_policy_names_one() -> None:
    bare = replace(READY, networks=(), use_any_network=False)
    assert plan_settings(bare, EnsureSettingsInput("HV-A")).want.use_any_network
    assert not plan_settings(bare, WANT).want.use_any_network
    assert plan_settings(replace(bare, use_any_network=True), WANT).want.use_any_network  # never turned off


def test_unset_authentication_and_performance_keep_the_host_s() -> None:
    # An input recorded without them (the fields' types say enum; a payload may carry "").
    unset = EnsureSettingsInput("HV-A", cast(MigrationAuthentication, ""), cast(MigrationPerformance, ""))
    plan = plan_settings(replace(READY, authentication="CredSSP", performance="SMB"), unset)
    assert (plan.want.authentication, plan.want.performance) == ("CredSSP", "SMB")


def test_changed_ignores_case_and_the_limit() -> None:
    assert not settings_changed(READY, replace(READY, authentication="KERBEROS", max_vm_migrations=9))
    assert settings_changed(READY, replace(READY, networks=()))


def test_subnets_compare_as_networks_and_other_text_as_itself() -> None:
    assert normalize_subnet("10.1.0.7/24") == "10.1.0.0/24"
    assert normalize_subnet(" fd00::1/64 ") == "fd00::/64"
    assert normalize_subnet(" Not-A-Subnet ") == "not-a-subnet"
