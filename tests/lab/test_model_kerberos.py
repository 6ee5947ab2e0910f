"""Kerberos constrained delegation as a host sees it: the directory, the ticket cache, purge and expiry."""

from __future__ import annotations

from typing import Any

import pytest

from lab.model import kerberos
from lab.model.directory import (
    MIGRATION_SERVICE,
    NOT_DELEGATED,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
    ComputerAccount,
    TopologyDirectory,
)
from lab.model.migration import JobState, MoveEngine
from tests.lab.test_model_migration import (
    host_spec,
    make_world,
    request,
    skip,
    start_engines,
    storage_request,
    vm_spec,
    wait_done,
)


@pytest.fixture
def running():
    yield from start_engines()


NO_CREDENTIALS = (
    "The Virtual Machine Management Service failed to establish a connection for a Virtual Machine migration "
    "with host 'HV02': No credentials are available in the security package (0x8009030E)."
)


def _world(os: str = "2022", directory: dict[str, Any] | None = None, vms: int = 4):
    hosts = [host_spec("HV01", 1, os=os), host_spec("HV02", 2, os=os)]
    version = "5.0" if os == "2012R2" else "9.0"
    return make_world(
        hosts, [vm_spec(f"vm{i}", disks=[], version=version) for i in range(vms)], directory=directory or {}
    )


def _grant(world, *, storage: bool = False, transition: bool = True, uac_extra: int = 0) -> None:
    spns = [f"{MIGRATION_SERVICE}/hv02.lab.test"]
    if storage:
        spns.append("CIFS/HV02")  # case does not matter
    uac = 0x1000 | (TRUSTED_TO_AUTH_FOR_DELEGATION if transition else 0) | uac_extra
    assert isinstance(world.directory, TopologyDirectory)
    world.directory.put(ComputerAccount("HV01", frozenset(spns), uac))


def test_no_delegation_fails_then_directory_change_is_unseen_until_purge(running):
    world = _world()
    engine = running(world)

    denied = wait_done(engine.start_move(request("vm0")))
    assert denied.state == JobState.Exception
    assert NO_CREDENTIALS in denied.error_description.split("\r\n")
    assert "may not delegate" in denied.lab_detail

    _grant(world)
    still = wait_done(engine.start_move(request("vm1")))
    assert still.state == JobState.Exception  # the host still works from its cached tickets

    engine.purge_tickets("HV01")
    assert wait_done(engine.start_move(request("vm1"))).state == JobState.Completed


def test_directory_change_is_seen_after_fifteen_minutes(running):
    world = _world()
    engine = running(world)
    assert wait_done(engine.start_move(request("vm0"))).state == JobState.Exception
    _grant(world)
    assert wait_done(engine.start_move(request("vm1"))).state == JobState.Exception
    skip(world, kerberos.TICKET_LIFETIME_SECONDS)
    assert wait_done(engine.start_move(request("vm1"))).state == JobState.Completed


def test_storage_moves_also_need_cifs(running):
    world = make_world([host_spec("HV01", 1), host_spec("HV02", 2)], [vm_spec("a"), vm_spec("b")], directory={})
    _grant(world, storage=False)
    engine = running(world)
    assert wait_done(engine.start_move(storage_request("a"))).state == JobState.Exception
    _grant(world, storage=True)
    engine.purge_tickets("hv01.lab.test")
    assert wait_done(engine.start_move(storage_request("a"))).state == JobState.Completed


def test_2016_and_later_need_protocol_transition_2012r2_does_not(running):
    modern = _world("2022")
    _grant(modern, transition=False)
    job = wait_done(running(modern).start_move(request("vm0")))
    assert job.state == JobState.Exception
    assert "Kerberos only" in job.lab_detail

    old = _world("2012R2")
    _grant(old, transition=False)
    assert wait_done(running(old).start_move(request("vm0"))).state == JobState.Completed


def test_sensitive_account_blocks_and_unconstrained_allows(running):
    world = _world()
    _grant(world, uac_extra=NOT_DELEGATED)
    engine = running(world)
    assert "sensitive" in wait_done(engine.start_move(request("vm0"))).lab_detail

    assert isinstance(world.directory, TopologyDirectory)
    world.directory.put(ComputerAccount("HV01", frozenset(), 0x1000 | 0x80000))
    engine.purge_tickets("HV01")
    assert wait_done(engine.start_move(request("vm0"))).state == JobState.Completed


def test_credssp_session_needs_no_delegation(running):
    world = _world()
    assert wait_done(running(world).start_move(request("vm0", session_auth="credssp"))).state == JobState.Completed


def test_cache_view_is_read_once_and_kept_on_the_host():
    world = _world()
    source, destination = world.hosts["HV01"], world.hosts["HV02"]
    first = kerberos.cached_account(world, source)
    assert source.ticket_cache_time == first.read_at
    assert kerberos.delegation_problem(world, source, destination, needs_cifs=False) is not None
    _grant(world)
    assert kerberos.cached_account(world, source) == first  # not re-read
    kerberos.purge_tickets(world, source)
    assert source.ticket_cache_time is None
    assert not source.ticket_cache
    view = kerberos.cached_account(world, source)
    assert view.protocol_transition
    assert view.may_delegate_to(MIGRATION_SERVICE, destination)
    assert source.ticket_cache_transition == {"HV01": True}
    assert kerberos.delegation_problem(world, source, destination, needs_cifs=False) is None
    assert kerberos.delegation_problem(world, source, destination, needs_cifs=True) is not None


def test_unknown_account_delegates_nothing():
    world = _world()
    engine = MoveEngine(world)
    assert isinstance(world.directory, TopologyDirectory)
    world.directory.accounts.clear()
    source, destination = world.hosts["HV01"], world.hosts["HV02"]
    assert kerberos.cached_account(world, source).allowed_to_delegate_to == frozenset()
    assert kerberos.delegation_problem(world, source, destination, needs_cifs=False) is not None
    engine.purge_tickets("HV01")
