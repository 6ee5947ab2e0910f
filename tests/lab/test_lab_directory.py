"""The lab reads a real directory: Kerberos moves decided by what the session's Samba AD DC holds.

The delegation is written by the engine's own code (activities.directory.DirectoryClient, bound as
Administrator, as an operator would run it); the lab reads it through lab.model.ldap_directory.LdapDirectory
(bound as the unprivileged `operator`), and a host sees a change only after `klist purge -li 0x3e7` or 15
simulated minutes, like Windows. Every test works on computer accounts of its own (fresh names).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pypsrp.powershell import PowerShell, RunspacePool

from activities.directory import DirectoryClient, DirectorySettings, SecretRef
from lab.lab import Lab
from lab.model import kerberos
from lab.model.directory import MIGRATION_SERVICE, TRUSTED_TO_AUTH_FOR_DELEGATION
from lab.model.ldap_directory import LdapDirectory, LdapDirectoryError
from lab.model.migration import JobState, MigrationJob, MoveEngine
from lab.model.topology import parse_topology
from tests.lab.conftest import lab_wsman
from tests.lab.test_lab_wire import prop
from tests.lab.test_model_migration import host_spec, make_world, request, skip, start_engines, vm_spec, wait_done
from tests.samba import SambaDomain
from workflows.contracts import DelegationHost, EnsureDelegationInput, EnsureDelegationResult

pytestmark = pytest.mark.timeout(120)

_serial = itertools.count(1)
PASSWORD_ENV = "SNLM_TEST_LAB_DIRECTORY_ADMIN_PASSWORD"


def no_credentials(destination: str) -> str:
    return (
        "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine migration "
        f"with host '{destination}': No credentials are available in the security package (0x8009030E)."
    )


def pair(samba: SambaDomain, prefix: str = "KD") -> tuple[str, str]:
    """Two fresh computer accounts (as a domain join leaves them: no delegation)."""
    n = next(_serial)
    names = (f"{prefix}{n:03d}S", f"{prefix}{n:03d}D")
    for name in names:
        samba.add_computer(name)
    return names


def lab_directory(samba: SambaDomain, **overrides: Any) -> LdapDirectory:
    """What the lab is given: the DC's URI, a read-only bind (the operator), the CA; base DN from the DC."""
    values: dict[str, Any] = {
        "bind_user": samba.operator_user,
        "bind_password": samba.operator_password,
        "ca_file": samba.ca_file,
        "tls_server_names": [samba.dc_fqdn],
        "connect_timeout": 3.0,
        "operation_timeout": 5.0,
    }
    values.update(overrides)
    return LdapDirectory(values.pop("uris", samba.ldaps_uri), **values)


@pytest.fixture
def operator_client(samba_domain: SambaDomain, monkeypatch: pytest.MonkeyPatch) -> Iterator[DirectoryClient]:
    """The engine's directory client, as an operator runs it: Administrator over validated LDAPS."""
    monkeypatch.setenv(PASSWORD_ENV, samba_domain.admin_password)
    settings = DirectorySettings(
        uris=[samba_domain.ldaps_uri],
        base_dn=samba_domain.base_dn,
        bind_user=samba_domain.admin_user,
        bind_password=SecretRef(env=PASSWORD_ENV),
        ca_file=samba_domain.ca_file,
        tls_server_names=[samba_domain.dc_fqdn],
        connect_timeout=3.0,
        operation_timeout=5.0,
    )
    with DirectoryClient(settings) as client:
        yield client


def ensure(client: DirectoryClient, source: str, destination: str, os_version: str = "2022") -> EnsureDelegationResult:
    return client.ensure_delegation(
        EnsureDelegationInput(
            DelegationHost(source, f"{source}.lab.test".lower(), os_version),
            DelegationHost(destination, f"{destination}.lab.test".lower(), os_version),
        )
    )


@pytest.fixture
def running() -> Iterator[Callable[..., MoveEngine]]:
    yield from start_engines()


def world_on(samba: SambaDomain, source: str, destination: str, vms: int = 4, **directory: Any) -> Any:
    """Two Windows Server 2022 hosts with Kerberos migration, reading the Samba directory."""
    world = make_world(
        [host_spec(source, 1), host_spec(destination, 2)],
        [vm_spec(f"vm{i}", host=source, disks=[]) for i in range(vms)],
        directory={},
    )
    world.directory = lab_directory(samba, **directory)
    return world


def failed_for_delegation(job: MigrationJob, destination: str) -> bool:
    return job.state == JobState.Exception and no_credentials(destination) in job.error_description.split("\r\n")


# -- in process: the world and its move engine ---------------------------------------------------------------
def test_a_move_needs_the_delegation_and_a_purge_and_fails_again_after_revert(
    samba_domain: SambaDomain, operator_client: DirectoryClient, running: Callable[..., MoveEngine]
) -> None:
    src, dst = pair(samba_domain)
    world = world_on(samba_domain, src, dst)
    engine = running(world)

    denied = wait_done(engine.start_move(request("vm0", src, dst)))
    assert failed_for_delegation(denied, dst), denied.error_description
    assert "may not delegate" in denied.lab_detail

    change = ensure(operator_client, src, dst)
    assert {c.account for c in change.changes} == {f"{src}$", f"{dst}$"}
    assert samba_domain.read(src)["userAccountControl"] & TRUSTED_TO_AUTH_FOR_DELEGATION
    still = wait_done(engine.start_move(request("vm0", src, dst)))
    assert failed_for_delegation(still, dst), "the host still works from its cached tickets"

    engine.purge_tickets(src)
    moved = wait_done(engine.start_move(request("vm0", src, dst)))
    assert moved.state == JobState.Completed, moved.lab_detail
    assert world.hosts[dst].find_vm("vm0") is not None

    operator_client.revert_delegation(change)
    assert samba_domain.read(src)["msDS-AllowedToDelegateTo"] == []
    engine.purge_tickets(src)
    engine.purge_tickets(dst)
    again = wait_done(engine.start_move(request("vm1", src, dst)))
    assert failed_for_delegation(again, dst)
    back = wait_done(engine.start_move(request("vm0", dst, src)))
    assert failed_for_delegation(back, src)
    assert world.hosts[dst].find_vm("vm0") is not None


def test_a_change_is_seen_after_fifteen_simulated_minutes(
    samba_domain: SambaDomain, operator_client: DirectoryClient, running: Callable[..., MoveEngine]
) -> None:
    src, dst = pair(samba_domain)
    world = world_on(samba_domain, src, dst)
    engine = running(world)
    assert failed_for_delegation(wait_done(engine.start_move(request("vm0", src, dst))), dst)

    change = ensure(operator_client, src, dst)
    assert failed_for_delegation(wait_done(engine.start_move(request("vm0", src, dst))), dst)
    skip(world, kerberos.TICKET_LIFETIME_SECONDS)
    assert wait_done(engine.start_move(request("vm0", src, dst))).state == JobState.Completed

    # A revert is not seen either until the tickets expire: Windows keeps working from what it holds.
    operator_client.revert_delegation(change)
    assert wait_done(engine.start_move(request("vm1", src, dst))).state == JobState.Completed
    skip(world, kerberos.TICKET_LIFETIME_SECONDS)
    assert failed_for_delegation(wait_done(engine.start_move(request("vm2", src, dst))), dst)


def test_kerberos_only_on_2022_is_not_enough(
    samba_domain: SambaDomain, operator_client: DirectoryClient, running: Callable[..., MoveEngine]
) -> None:
    # As the Server 2012 articles configure it: the entries without protocol transition.
    src, dst = pair(samba_domain)
    world = world_on(samba_domain, src, dst)
    engine = running(world)
    ensure(operator_client, src, dst, os_version="2012R2")
    job = wait_done(engine.start_move(request("vm0", src, dst)))
    assert failed_for_delegation(job, dst)
    assert "Kerberos only" in job.lab_detail


def test_an_unreadable_directory_delegates_nothing_and_says_why(
    samba_domain: SambaDomain,
    operator_client: DirectoryClient,
    running: Callable[..., MoveEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, dst = pair(samba_domain)
    ensure(operator_client, src, dst)
    world = world_on(samba_domain, src, dst, uris=["ldaps://127.0.0.1:1"], base_dn=samba_domain.base_dn)
    engine = running(world)
    with caplog.at_level(logging.WARNING, logger="lab.model.ldap_directory"):
        job = wait_done(engine.start_move(request("vm0", src, dst)))
    assert failed_for_delegation(job, dst)
    assert f"cannot read the computer account of {src}" in caplog.text
    assert isinstance(world.directory, LdapDirectory)
    assert world.directory.last_error is not None
    assert "127.0.0.1:1" in world.directory.last_error


# -- LdapDirectory itself ------------------------------------------------------------------------------------
def test_reads_the_delegation_entries_and_reuses_its_connection(
    samba_domain: SambaDomain, operator_client: DirectoryClient
) -> None:
    src, dst = pair(samba_domain)
    directory = lab_directory(samba_domain)
    try:
        before = directory.computer(src)
        assert before is not None
        assert before.allowed_to_delegate_to == frozenset()
        assert not before.protocol_transition
        assert directory.base_dn == samba_domain.base_dn  # from the DC's RootDSE

        ensure(operator_client, src, dst)
        after = directory.computer(src.lower())
        assert after is not None
        assert after.protocol_transition
        assert after.may_delegate_to(MIGRATION_SERVICE, dst, f"{dst}.lab.test")
        assert after.may_delegate_to("cifs", dst, f"{dst}.lab.test")
        assert directory.computer("NOSUCH01") is None
        assert directory.last_error is None  # missing is an answer, not a failure
        assert directory.connections_opened == 1
    finally:
        directory.close()


def test_filter_values_are_escaped(samba_domain: SambaDomain) -> None:
    directory = lab_directory(samba_domain, domain="lab.test")
    try:
        assert directory.base_dn == samba_domain.base_dn  # derived from the domain
        assert directory.computer("DC1") is not None
        # Unescaped, "*$" would match every computer account and ")(" would change the filter.
        assert directory.computer("*") is None
        assert directory.computer("DC1)(sAMAccountName=*") is None
        assert directory.last_error is None
    finally:
        directory.close()


def test_reconnects_after_the_dc_restarts(samba_domain: SambaDomain) -> None:
    directory = lab_directory(samba_domain)
    try:
        assert directory.computer("DC1") is not None
        samba_domain.restart()
        assert directory.computer("DC1") is not None
        assert directory.connections_opened == 2
        assert directory.last_error is None
    finally:
        directory.close()


def test_starttls_on_389_and_failover(samba_domain: SambaDomain) -> None:
    directory = lab_directory(samba_domain, uris=["ldaps://127.0.0.1:1", samba_domain.ldap_uri])
    try:
        assert directory.computer("DC1") is not None
        assert directory.uri == samba_domain.ldap_uri
    finally:
        directory.close()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ca_file": "/etc/ssl/certs/ca-certificates.crt"}, "CERTIFICATE_VERIFY_FAILED"),
        ({"tls_server_names": ["dc9.example"]}, "dc9.example"),
        ({"tls_server_names": []}, "127.0.0.1"),  # the certificate names DC1.lab.test, not the address
    ],
)
def test_a_certificate_that_does_not_validate_is_refused(
    samba_domain: SambaDomain, overrides: dict[str, Any], reason: str
) -> None:
    directory = lab_directory(samba_domain, base_dn=samba_domain.base_dn, **overrides)
    with pytest.raises(LdapDirectoryError) as caught:
        directory.check()
    assert reason in str(caught.value)
    assert directory.computer("DC1") is None
    assert directory.connections_opened == 0


def test_the_password_is_in_no_repr_log_or_error(samba_domain: SambaDomain, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Wr0ng-But-Secret-Pa55!"
    caplog.set_level(logging.DEBUG)
    good = lab_directory(samba_domain)
    wrong = lab_directory(samba_domain, bind_password=secret, retry_after=0)
    try:
        assert good.computer("DC1") is not None
        assert samba_domain.operator_password not in repr(good)
        assert samba_domain.operator_password not in str(vars(good).get("_bind_user"))
        assert secret not in repr(wrong)
        with pytest.raises(LdapDirectoryError) as caught:
            wrong.check()
        assert "invalid credentials" in str(caught.value)
        assert wrong.computer("DC1") is None
        texts = [str(caught.value), wrong.last_error or "", caplog.text, repr(wrong), repr(good)]
        for text in texts:
            assert secret not in text
            assert samba_domain.operator_password not in text
        assert samba_domain.operator_user in str(caught.value)
    finally:
        good.close()
        wrong.close()


def test_a_failed_connection_is_not_retried_at_once(samba_domain: SambaDomain) -> None:
    directory = lab_directory(samba_domain, uris=["ldaps://127.0.0.1:1"], base_dn=samba_domain.base_dn)
    with pytest.raises(LdapDirectoryError):
        directory.read("DC1")
    with pytest.raises(LdapDirectoryError, match="not retried"):
        directory.read("DC1")


def test_uris_are_checked() -> None:
    with pytest.raises(ValueError, match="ldaps://"):
        LdapDirectory("http://dc1", bind_user="u", bind_password="p")
    with pytest.raises(ValueError, match="at least one"):
        LdapDirectory([], bind_user="u", bind_password="p")


# -- over the wire: an unmodified pypsrp client against a Lab given the directory ---------------------------
def wire_topology(source: str, destination: str) -> dict[str, Any]:
    hosts = [host_spec(name, index) for index, name in enumerate((source, destination), start=1)]
    vms = [
        vm_spec(
            f"wire{i}",
            host=source,
            memory_gb=1,
            disks=[{"path": rf"D:\Hyper-V\wire{i}\wire{i}.vhdx", "size_gb": 10, "file_gb": 1}],
        )
        for i in range(3)
    ]
    return {"lab": {"domain": "lab.test", "netbios_domain": "LAB"}, "hosts": hosts, "vms": vms}


def move_vm(pool: RunspacePool, vm: str, destination: str) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet("Move-VM")
    ps.add_parameter("Name", vm)
    ps.add_parameter("DestinationHost", destination)
    ps.add_parameter("IncludeStorage")
    ps.add_parameter("DestinationStoragePath", rf"D:\Hyper-V\{vm}")
    ps.invoke()
    return ps


def klist_purge(pool: RunspacePool) -> list[str]:
    ps = PowerShell(pool)
    ps.add_cmdlet("klist").add_argument("purge").add_argument("-li").add_argument("0x3e7")
    ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return [str(line) for line in ps.output]


def assert_no_credentials(ps: PowerShell, destination: str) -> None:
    assert ps.streams.error, "the failed move writes an error record"
    record = ps.streams.error[0]
    assert record.fq_error == "OperationFailed,Microsoft.HyperV.PowerShell.Commands.MoveVM"
    message = str(prop(record.exception, "Message"))
    assert "0x8009030E" in message
    assert no_credentials(destination) in message


def test_over_the_wire_move_vm_klist_purge_and_revert(
    samba_domain: SambaDomain, operator_client: DirectoryClient, tmp_path: Path
) -> None:
    src, dst = pair(samba_domain, prefix="KW")
    directory = lab_directory(samba_domain)
    lab = Lab(parse_topology(wire_topology(src, dst)), workdir=tmp_path / "lab", time_scale=600, directory=directory)
    with lab, RunspacePool(lab_wsman(lab, src)) as pool:
        assert lab.world.directory is directory
        assert_no_credentials(move_vm(pool, "wire0", dst), dst)

        change = ensure(operator_client, src, dst)
        assert_no_credentials(move_vm(pool, "wire0", dst), dst)  # cached tickets

        assert "\tTicket(s) purged!" in klist_purge(pool)
        ps = move_vm(pool, "wire0", dst)
        assert not ps.had_errors, [str(e) for e in ps.streams.error]
        assert lab.truth()["locations"]["wire0"] == [dst]
        assert lab.truth()["hosts"][src]["directory"]["protocol_transition"] is True

        operator_client.revert_delegation(change)
        klist_purge(pool)
        assert_no_credentials(move_vm(pool, "wire1", dst), dst)
        assert lab.truth()["locations"]["wire1"] == [src]


def test_the_lab_refuses_to_edit_a_real_directory(samba_domain: SambaDomain, tmp_path: Path) -> None:
    from lab.control import ControlError

    src, dst = pair(samba_domain, prefix="KC")
    lab = Lab(
        parse_topology(wire_topology(src, dst)),
        workdir=tmp_path / "lab",
        directory=lab_directory(samba_domain),
        control_port=None,
    )
    with lab:
        with pytest.raises(ControlError) as caught:
            lab.set_delegation(src, protocol_transition=True)
        assert caught.value.status == 409
    assert samba_domain.read(src) == {"msDS-AllowedToDelegateTo": [], "userAccountControl": 0x1000}


# -- python -m lab --directory-* ------------------------------------------------------------------------------
def test_python_m_lab_reads_the_directory_it_is_given(samba_domain: SambaDomain, tmp_path: Path) -> None:
    src, dst = pair(samba_domain, prefix="KM")
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(wire_topology(src, dst)))
    env = {**os.environ, "LAB_DIRECTORY_PASSWORD": samba_domain.operator_password}
    argv = [
        sys.executable,
        "-m",
        "lab",
        "--topology",
        str(topology),
        "--inventory-out",
        str(tmp_path / "lab" / "inventory.yaml"),
        "--directory-uri",
        samba_domain.ldaps_uri,
        "--directory-user",
        samba_domain.operator_user,
        "--directory-password-env",
        "LAB_DIRECTORY_PASSWORD",
        "--directory-ca-file",
        str(samba_domain.ca_file),
        "--directory-tls-name",
        samba_domain.dc_fqdn,
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C stops the lab." in line:
                break
        summary = "".join(lines)
        assert (
            f"directory      {samba_domain.ldaps_uri} as {samba_domain.operator_user} under DC=lab,DC=test" in summary
        )
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert samba_domain.operator_password not in summary + out + err

    # A password that does not bind is said at start-up (exit 2), without the password.
    env["LAB_DIRECTORY_PASSWORD"] = "Not-The-Pa55word!"
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2
    assert "error: directory:" in done.stderr
    assert "invalid credentials" in done.stderr
    assert "Not-The-Pa55word!" not in done.stdout + done.stderr
