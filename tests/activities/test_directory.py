"""Kerberos constrained delegation against a real directory: the session's Samba AD domain controller.

Every test works on computer accounts of its own (fresh names), and checks what the directory stores by
reading it back as Administrator, never through the code under test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ldap3
import pytest
from temporalio.testing import ActivityEnvironment

from activities.directory import DirectoryActivities, DirectoryClient, delegation_values, mode_for_os
from activities.errors import ConfigurationError, SnlmError, TransientError, UnknownHostError
from tests.activities.conftest import SettingsFactory
from tests.samba import WORKSTATION_TRUST_ACCOUNT, SambaDomain
from workflows.contracts import (
    DIRECTORY_DELEGATION_REFUSED,
    DIRECTORY_INSUFFICIENT_RIGHTS,
    DIRECTORY_INVALID_CREDENTIALS,
    DIRECTORY_NO_SUCH_COMPUTER,
    DIRECTORY_TLS_FAILURE,
    DIRECTORY_UNREACHABLE,
    MIGRATION_SERVICE,
    NOT_DELEGATED,
    TRUSTED_FOR_DELEGATION,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    DelegationChange,
    DelegationHost,
    DelegationMode,
    EnsureDelegationInput,
    EnsureDelegationResult,
)

NewHost = Callable[..., str]
DOMAIN = "lab.test"
PT = TRUSTED_TO_AUTH_FOR_DELEGATION


def values_for(peer: str) -> list[str]:
    return sorted(delegation_values(peer, f"{peer}.{DOMAIN}".lower()))


def request(
    src: str, dst: str, mode: DelegationMode | None = None, src_os: str = "", dst_os: str = ""
) -> EnsureDelegationInput:
    return EnsureDelegationInput(DelegationHost(src, os_version=src_os), DelegationHost(dst, os_version=dst_os), mode)


def ensure(settings: SettingsFactory, req: EnsureDelegationInput, **overrides: Any) -> EnsureDelegationResult:
    with DirectoryClient(settings(**overrides)) as client:
        return client.ensure_delegation(req)


def snapshot(samba: SambaDomain, *names: str) -> dict[str, dict[str, Any]]:
    return {name: samba.read(name) for name in names}


# -- ensure / revert on a clean pair ---------------------------------------------------------------------------
def test_ensure_on_a_clean_pair_adds_both_directions(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()

    result = ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))

    assert [c.account for c in result.changes] == [f"{a}$", f"{b}$"]
    assert sorted(result.changes[0].added_values) == values_for(b)
    assert sorted(result.changes[1].added_values) == values_for(a)
    assert all(c.uac_bits_set == PT for c in result.changes)
    stored = snapshot(samba_domain, a, b)
    assert stored[a]["msDS-AllowedToDelegateTo"] == values_for(b)
    assert stored[b]["msDS-AllowedToDelegateTo"] == values_for(a)
    assert stored[a]["userAccountControl"] == WORKSTATION_TRUST_ACCOUNT | PT
    assert f"{MIGRATION_SERVICE}/{b}" in stored[a]["msDS-AllowedToDelegateTo"]


def test_ensure_again_changes_and_reports_nothing(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))
    before = snapshot(samba_domain, a, b)

    again = ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))

    assert again.changes == ()
    assert not again.changed
    assert snapshot(samba_domain, a, b) == before


def test_revert_removes_only_its_own_values(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(allowed_to_delegate_to=["cifs/FILESRV01"]), new_host()
    result = ensure(settings, request(a, b, DelegationMode.KERBEROS_ONLY))
    # Someone else adds a value after us, on the other account.
    samba_domain.modify(b, {"msDS-AllowedToDelegateTo": [(ldap3.MODIFY_ADD, ["cifs/BACKUP01.lab.test"])]})

    with DirectoryClient(settings()) as client:
        reverted = client.revert_delegation(result)

    stored = snapshot(samba_domain, a, b)
    assert stored[a]["msDS-AllowedToDelegateTo"] == ["cifs/FILESRV01"]
    assert stored[b]["msDS-AllowedToDelegateTo"] == ["cifs/BACKUP01.lab.test"]
    assert {c.account: sorted(c.added_values) for c in reverted.removed} == {
        f"{a}$": values_for(b),
        f"{b}$": values_for(a),
    }
    # Reverting twice removes nothing more.
    with DirectoryClient(settings()) as client:
        assert client.revert_delegation(result).removed == ()
    assert snapshot(samba_domain, a, b) == stored


def test_revert_clears_the_protocol_transition_bit_it_set(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host(user_account_control=WORKSTATION_TRUST_ACCOUNT | PT)
    result = ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))
    assert [c.uac_bits_set for c in result.changes] == [PT, 0]  # b already had it

    with DirectoryClient(settings()) as client:
        client.revert_delegation(result)

    stored = snapshot(samba_domain, a, b)
    assert stored[a] == {"msDS-AllowedToDelegateTo": [], "userAccountControl": WORKSTATION_TRUST_ACCOUNT}
    assert stored[b] == {"msDS-AllowedToDelegateTo": [], "userAccountControl": WORKSTATION_TRUST_ACCOUNT | PT}


def test_revert_keeps_the_bit_while_other_delegation_needs_it(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    result = ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))
    samba_domain.modify(a, {"msDS-AllowedToDelegateTo": [(ldap3.MODIFY_ADD, ["cifs/HV-OTHER"])]})

    with DirectoryClient(settings()) as client:
        client.revert_delegation(result)

    assert samba_domain.read(a) == {
        "msDS-AllowedToDelegateTo": ["cifs/HV-OTHER"],
        "userAccountControl": WORKSTATION_TRUST_ACCOUNT | PT,
    }


# -- case -------------------------------------------------------------------------------------------------------
def test_case_variants_are_the_same_value(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    present = [f"CIFS/{b.lower()}", f"microsoft virtual system migration service/{b.upper()}.LAB.TEST"]
    samba_domain.modify(a, {"msDS-AllowedToDelegateTo": [(ldap3.MODIFY_ADD, present)]})

    result = ensure(settings, request(a.lower(), b.lower(), DelegationMode.KERBEROS_ONLY))

    added_to_a = {v.casefold() for v in result.changes[0].added_values}
    assert added_to_a == {f"cifs/{b}.{DOMAIN}".casefold(), f"{MIGRATION_SERVICE}/{b}".casefold()}
    stored = samba_domain.read(a)["msDS-AllowedToDelegateTo"]
    assert len(stored) == 4
    assert {v.casefold() for v in stored} == {v.casefold() for v in values_for(b)}
    # Upper-case names the second time: nothing to add.
    assert ensure(settings, request(a.upper(), b.upper(), DelegationMode.KERBEROS_ONLY)).changes == ()


# -- modes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "src_os", "dst_os", "bits"),
    [
        (DelegationMode.KERBEROS_ONLY, "", "", (0, 0)),
        (DelegationMode.ANY_PROTOCOL, "", "", (PT, PT)),
        (DelegationMode.AUTO, "2012R2", "2019", (0, PT)),
        (DelegationMode.AUTO, "Microsoft Windows Server 2016 Datacenter", "6.2.9200", (PT, 0)),
        (None, "10.0.20348", "2012", (PT, 0)),  # None: the configured mode, auto
    ],
)
def test_each_mode(
    samba_domain: SambaDomain,
    settings: SettingsFactory,
    new_host: NewHost,
    mode: DelegationMode | None,
    src_os: str,
    dst_os: str,
    bits: tuple[int, int],
) -> None:
    a, b = new_host(), new_host()

    result = ensure(settings, request(a, b, mode, src_os, dst_os))

    assert tuple(c.uac_bits_set for c in result.changes) == bits
    stored = snapshot(samba_domain, a, b)
    assert (stored[a]["userAccountControl"] & PT, stored[b]["userAccountControl"] & PT) == bits


def test_kerberos_only_leaves_an_existing_protocol_transition_bit(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(user_account_control=WORKSTATION_TRUST_ACCOUNT | PT), new_host()
    ensure(settings, request(a, b, DelegationMode.KERBEROS_ONLY))
    assert samba_domain.read(a)["userAccountControl"] & PT


def test_auto_mode_without_an_os_version_is_a_configuration_error(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    with pytest.raises(ConfigurationError, match=f"OS version of {a}"):
        ensure(settings, request(a, b, DelegationMode.AUTO))
    assert snapshot(samba_domain, a, b)[a]["msDS-AllowedToDelegateTo"] == []


def test_auto_mode_reads_the_accounts_operating_system_version(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    # What Windows records on a joined computer: 2012 R2 (6.3) needs Kerberos only, 2022 (10.0) any protocol.
    a, b = new_host(), new_host()
    samba_domain.modify(a, {"operatingSystemVersion": [(ldap3.MODIFY_REPLACE, ["6.3 (9600)"])]})
    samba_domain.modify(b, {"operatingSystemVersion": [(ldap3.MODIFY_REPLACE, ["10.0 (20348)"])]})

    result = ensure(settings, request(a, b, DelegationMode.AUTO))

    assert tuple(c.uac_bits_set for c in result.changes) == (0, PT)


@pytest.mark.parametrize(
    ("version", "mode"),
    [
        ("2012", DelegationMode.KERBEROS_ONLY),
        ("2012R2", DelegationMode.KERBEROS_ONLY),
        ("Microsoft Windows Server 2012 R2 Datacenter", DelegationMode.KERBEROS_ONLY),
        ("6.3.9600", DelegationMode.KERBEROS_ONLY),
        ("2016", DelegationMode.ANY_PROTOCOL),
        ("2025", DelegationMode.ANY_PROTOCOL),
        ("10.0.17763", DelegationMode.ANY_PROTOCOL),
    ],
)
def test_mode_for_os(version: str, mode: DelegationMode) -> None:
    assert mode_for_os(version) is mode


def test_mode_for_an_unknown_os_says_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match="set the mode"):
        mode_for_os("2008 R2")


# -- reading ------------------------------------------------------------------------------------------------------
def test_read_computer(samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost) -> None:
    a = new_host(allowed_to_delegate_to=["cifs/X"], user_account_control=WORKSTATION_TRUST_ACCOUNT | PT)

    with DirectoryClient(settings()) as client:
        by_name = client.read_computer(a)
        by_fqdn = client.read_computer(f"{a}.{DOMAIN}")

    assert by_name == by_fqdn
    assert by_name.name == a
    assert by_name.dns_host_name == f"{a}.{DOMAIN}".lower()
    assert by_name.allowed_to_delegate_to == ("cifs/X",)
    assert f"HOST/{a}" in by_name.service_principal_names
    assert by_name.constrained
    assert by_name.protocol_transition
    assert not by_name.unconstrained
    assert not by_name.not_delegated
    assert by_name.may_delegate_to("CIFS", "x")


# -- refusals and errors -----------------------------------------------------------------------------------------
def test_a_missing_computer_account(samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost) -> None:
    a = new_host()
    with pytest.raises(UnknownHostError) as caught:
        ensure(settings, request(a, "NOSUCHHOST", DelegationMode.KERBEROS_ONLY))
    assert caught.value.error_type == DIRECTORY_NO_SUCH_COMPUTER
    assert "NOSUCHHOST" in str(caught.value)
    assert "joined to the domain" in str(caught.value)
    assert samba_domain.read(a)["msDS-AllowedToDelegateTo"] == []


def test_a_wrong_password(samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost) -> None:
    a, b = new_host(), new_host()
    wrong = "Not-The-Right-Pa55word"
    with pytest.raises(ConfigurationError) as caught:
        ensure(settings, request(a, b, DelegationMode.KERBEROS_ONLY), password=wrong)
    error = caught.value
    assert error.error_type == DIRECTORY_INVALID_CREDENTIALS
    assert not error.retryable
    assert samba_domain.admin_user in str(error)
    assert wrong not in repr(error.to_application_error().details)
    assert wrong not in str(error)


@pytest.mark.parametrize("mode", [DelegationMode.KERBEROS_ONLY, DelegationMode.ANY_PROTOCOL])
def test_operator_without_the_delegation_privilege(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost, mode: DelegationMode
) -> None:
    a, b = new_host(), new_host()
    before = snapshot(samba_domain, a, b)
    # The operator may write other attributes of these computers: the refusal is about the privilege.
    with DirectoryClient(settings(user="operator")) as client:
        client.read_computer(a)
    operator = ldap3.Connection(
        ldap3.Server(samba_domain.ldaps_uri, tls=samba_domain.tls(), get_info=ldap3.NONE),
        samba_domain.operator_user,
        samba_domain.operator_password,
        auto_bind=True,
    )
    assert operator.modify(f"CN={a},{samba_domain.computers_dn}", {"description": [(ldap3.MODIFY_REPLACE, ["x"])]})
    operator.unbind()

    with pytest.raises(ConfigurationError) as caught:
        ensure(settings, request(a, b, mode), user="operator")

    error = caught.value
    assert error.error_type == DIRECTORY_INSUFFICIENT_RIGHTS
    assert error.details["result"] == 50
    assert "SeEnableDelegationPrivilege" in str(error)
    assert f"{a}$" in str(error)
    assert snapshot(samba_domain, a, b) == before


@pytest.mark.parametrize(
    ("flag", "words"), [(TRUSTED_FOR_DELEGATION, "unconstrained"), (NOT_DELEGATED, "cannot be delegated")]
)
def test_unsafe_accounts_are_refused_without_change(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost, flag: int, words: str
) -> None:
    a, b = new_host(), new_host(user_account_control=WORKSTATION_TRUST_ACCOUNT | flag)
    before = snapshot(samba_domain, a, b)

    with pytest.raises(ConfigurationError, match=words) as caught:
        ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))

    assert caught.value.error_type == DIRECTORY_DELEGATION_REFUSED
    assert f"{b}$" in str(caught.value)
    assert snapshot(samba_domain, a, b) == before


@pytest.mark.parametrize("evil", ["web1)(cn=*", "*", "HV*", "web1\\2a", "x)(|(objectClass=*"])
def test_names_are_escaped(samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost, evil: str) -> None:
    a, b = new_host(), new_host()
    before = snapshot(samba_domain, a, b)

    with DirectoryClient(settings()) as client:
        with pytest.raises(UnknownHostError):
            client.read_computer(evil)
        with pytest.raises(UnknownHostError):
            client.ensure_delegation(request(a, evil, DelegationMode.ANY_PROTOCOL))
        with pytest.raises(UnknownHostError):
            client.ensure_delegation(request(evil, b, DelegationMode.ANY_PROTOCOL))

    assert snapshot(samba_domain, a, b) == before


def test_a_computer_named_like_an_injection_is_found_exactly(
    samba_domain: SambaDomain, settings: SettingsFactory
) -> None:
    # A real (if odd) account whose name holds filter metacharacters: escaping finds exactly that one.
    samba_domain.add_computer("odd)(cn")
    with DirectoryClient(settings()) as client:
        assert client.read_computer("odd)(cn").name.casefold() == "odd)(cn"
        with pytest.raises(UnknownHostError):
            client.read_computer("odd)(cn=*")


def test_a_wrong_ca_is_refused(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost, tmp_path: Any
) -> None:
    a, b = new_host(), new_host()
    with pytest.raises(ConfigurationError) as caught:
        ensure(settings, request(a, b, DelegationMode.KERBEROS_ONLY), ca_file="/etc/ssl/certs/ca-certificates.crt")
    assert caught.value.error_type == DIRECTORY_TLS_FAILURE
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert samba_domain.read(a)["msDS-AllowedToDelegateTo"] == []


def test_a_certificate_for_another_name_is_refused(settings: SettingsFactory) -> None:
    with (
        pytest.raises(ConfigurationError) as caught,
        DirectoryClient(settings(tls_server_names=["dc9.example"])) as client,
    ):
        client.read_computer("DC1")
    assert caught.value.error_type == DIRECTORY_TLS_FAILURE


def test_starttls_on_389(samba_domain: SambaDomain, settings: SettingsFactory) -> None:
    with DirectoryClient(settings(uris=[samba_domain.ldap_uri])) as client:
        assert client.read_computer("DC1").name == "DC1"


def test_failover_to_the_next_controller(samba_domain: SambaDomain, settings: SettingsFactory) -> None:
    with DirectoryClient(settings(uris=["ldaps://127.0.0.1:1", samba_domain.ldaps_uri])) as client:
        client.read_computer("DC1")
        assert client.uri == samba_domain.ldaps_uri


def test_no_controller_answers_is_retryable(settings: SettingsFactory) -> None:
    with (
        pytest.raises(TransientError) as caught,
        DirectoryClient(settings(uris=["ldaps://127.0.0.1:1", "ldap://127.0.0.1:2"])) as client,
    ):
        client.read_computer("DC1")
    assert caught.value.error_type == DIRECTORY_UNREACHABLE
    assert caught.value.to_application_error().non_retryable is False


def test_change_is_confirmed_on_the_controllers_the_hosts_use(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    # The same Samba under a second name stands in for a second DC: this checks the read-back path, not replication.
    a, b = new_host(), new_host()
    confirm = settings(confirm_uris=["ldaps://localhost:636"], replication_timeout=5, replication_poll_interval=0.2)
    with DirectoryClient(confirm) as client:
        result = client.ensure_delegation(request(a, b, DelegationMode.ANY_PROTOCOL))
        client.revert_delegation(result)
    assert samba_domain.read(a)["msDS-AllowedToDelegateTo"] == []


def test_a_confirming_controller_that_is_down_is_retryable(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    with pytest.raises(TransientError), DirectoryClient(settings(confirm_uris=["ldaps://127.0.0.1:1"])) as client:
        client.ensure_delegation(request(a, b, DelegationMode.KERBEROS_ONLY))


# -- a failure between the two accounts of a pair -------------------------------------------------------------
def test_the_directory_stops_in_the_middle(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    written: list[DelegationChange] = []

    def stop_after_first(change: DelegationChange) -> None:
        written.append(change)
        if len(written) == 1:
            samba_domain.stop()

    try:
        with (
            pytest.raises(TransientError) as caught,
            DirectoryClient(settings(), after_account_written=stop_after_first) as client,
        ):
            client.ensure_delegation(request(a, b, DelegationMode.ANY_PROTOCOL))
    finally:
        samba_domain.start()

    error = caught.value
    assert error.error_type == DIRECTORY_UNREACHABLE
    assert error.retryable
    assert error.to_application_error().non_retryable is False
    # The first account was written and could not be undone while the directory was down: the error says
    # exactly what is left, and that is exactly what the directory holds; the second account is untouched.
    assert "could not be undone" in str(error)
    assert error.details["left_in_directory"] == [
        {
            "account": f"{a}$",
            "account_dn": written[0].account_dn,
            "added_values": list(written[0].added_values),
            "uac_bits_set": PT,
        }
    ]
    stored = snapshot(samba_domain, a, b)
    assert stored[a] == {
        "msDS-AllowedToDelegateTo": values_for(b),
        "userAccountControl": WORKSTATION_TRUST_ACCOUNT | PT,
    }
    assert stored[b] == {"msDS-AllowedToDelegateTo": [], "userAccountControl": WORKSTATION_TRUST_ACCOUNT}
    # What the error reported can be reverted exactly.
    with DirectoryClient(settings()) as client:
        client.revert_delegation(EnsureDelegationResult(tuple(written)))
    assert samba_domain.read(a) == {"msDS-AllowedToDelegateTo": [], "userAccountControl": WORKSTATION_TRUST_ACCOUNT}


def test_a_failed_second_account_undoes_the_first(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()

    def delete_second(change: DelegationChange) -> None:
        samba_domain.delete_computer(b)

    with (
        pytest.raises(UnknownHostError) as caught,
        DirectoryClient(settings(), after_account_written=delete_second) as client,
    ):
        client.ensure_delegation(request(a, b, DelegationMode.ANY_PROTOCOL))

    assert "was undone: nothing is left" in str(caught.value)
    assert samba_domain.read(a) == {"msDS-AllowedToDelegateTo": [], "userAccountControl": WORKSTATION_TRUST_ACCOUNT}


# -- secrets and the Temporal boundary ---------------------------------------------------------------------------
def test_passwords_never_reach_logs_or_errors(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = new_host(), new_host()
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-Secret-Pa55"
    errors: list[SnlmError] = []
    for overrides in (
        {"password": wrong},
        {"user": "operator"},
        {"uris": ["ldaps://127.0.0.1:1"]},
        {"ca_file": "/etc/ssl/certs/ca-certificates.crt"},
    ):
        with pytest.raises(SnlmError) as caught:
            ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL), **overrides)
        errors.append(caught.value)
    result = ensure(settings, request(a, b, DelegationMode.ANY_PROTOCOL))

    texts = [caplog.text, repr(result)]
    for error in errors:
        app = error.to_application_error()
        texts += [str(error), repr(error.details), str(app), repr(app.details)]
    for secret in (samba_domain.admin_password, samba_domain.operator_password, wrong):
        assert all(secret not in text for text in texts)


def test_activities_raise_typed_application_errors(
    samba_domain: SambaDomain, settings: SettingsFactory, new_host: NewHost
) -> None:
    a, b = new_host(), new_host()
    env = ActivityEnvironment()
    good = DirectoryActivities(settings())

    result = env.run(good.ensure_delegation, request(a, b, DelegationMode.KERBEROS_ONLY))
    assert len(result.changes) == 2
    assert env.run(good.read_computer_delegation, DelegationHost(a)).may_delegate_to(MIGRATION_SERVICE, b)
    assert len(env.run(good.revert_delegation, result).removed) == 2

    # The worker's error boundary (activities/boundary.py, tested there) makes these ApplicationErrors.
    with pytest.raises(SnlmError) as caught:
        env.run(
            DirectoryActivities(settings(user="operator")).ensure_delegation,
            request(a, b, DelegationMode.KERBEROS_ONLY),
        )
    refused = caught.value.to_application_error()
    assert refused.type == DIRECTORY_INSUFFICIENT_RIGHTS
    assert refused.non_retryable

    with pytest.raises(SnlmError) as caught:
        env.run(DirectoryActivities(settings(uris=["ldaps://127.0.0.1:1"])).ensure_delegation, request(a, b))
    unreachable = caught.value.to_application_error()
    assert unreachable.type == DIRECTORY_UNREACHABLE
    assert not unreachable.non_retryable
