"""The worker's host sessions (activities/hosts.py `HostSessions`) and batches of statements (`HostClient.batch`),
over the wire against labs reached only through their inventories.

The lab's own counters are the truth: `endpoint.service.shell_count` is the shells open on a host now, and
`endpoint.stats` counts the pools opened and the commands run there.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import ActivityEnvironment

from activities.errors import ConfigurationError, TransientError
from activities.hosts import Command, HostClient, HostSessions, SessionReport, add_session_observer
from activities.inventory import Inventory, load_inventory
from activities.migration import MigrationActivities
from activities.preflight import PreflightActivities
from lab.lab import Lab
from lab.model.topology import DEFAULT_TOPOLOGY
from lab.wsman import server as lab_server
from workflows import contracts as c
from workflows.contracts import HostRef, MoveHeartbeat, MoveInput, PreflightInput, VmOnHost

pytestmark = pytest.mark.timeout(120)

PAIR = DEFAULT_TOPOLOGY.parent / "pair.yaml"
FAST: dict[str, Any] = {"connect_timeout": 5.0, "read_timeout": 30.0, "operation_timeout": 10, "command_timeout": 60.0}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """A fresh two-host lab per call (HV-A with vm-a1..a4, HV-B), NTLM over http."""
    started: list[Lab] = []

    def make(time_scale: float = 600.0) -> Lab:
        lab = Lab.from_topology(
            PAIR, workdir=tmp_path / f"pair-{len(started)}", time_scale=time_scale, control_port=None
        ).start()
        started.append(lab)
        return lab

    yield make
    for lab in started:
        lab.stop()


@pytest.fixture
def lab(pair: Callable[..., Lab]) -> Lab:
    return pair()


def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


_POOLS: list[HostSessions] = []


@pytest.fixture(autouse=True)
def _pools_closed(pair: Callable[..., Lab], quota_lab: Callable[..., Lab]) -> Iterator[None]:
    """Each test's pools are closed at its end, while its labs still run (this fixture needs theirs, so it ends
    first). Left to the garbage collector, a pool closed its sessions during a later test, against a lab that had
    stopped, and that test read the failed closes in its own log."""
    yield
    while _POOLS:
        _POOLS.pop().close_all()


def sessions_of(lab: Lab, **options: Any) -> HostSessions:
    sessions = HostSessions(inventory(lab), **{**FAST, **options})
    _POOLS.append(sessions)
    return sessions


def shells(lab: Lab, host: str) -> int:
    """The shells the host holds now (the lab's truth)."""
    return lab.endpoint(host).service.shell_count


def pools_opened(lab: Lab, host: str) -> int:
    return lab.endpoint(host).stats.snapshot()["pools_opened"]


# -- reuse -----------------------------------------------------------------------------------------------------
def test_one_session_serves_activities_one_after_another(lab: Lab) -> None:
    sessions = sessions_of(lab)
    reports: list[SessionReport] = []
    remove = add_session_observer(reports.append)
    try:
        migration = MigrationActivities(inventory(lab), poll_seconds=0.05, sessions=sessions)
        preflight = PreflightActivities(inventory(lab), sessions=sessions)
        assert not migration.snapshot_cluster_role(VmOnHost("vm-a1", "HV-A")).clustered
        assert not migration.snapshot_cluster_role(VmOnHost("vm-a2", "hv-a.lab.test")).clustered  # same entry
        report = preflight.preflight(PreflightInput("vm-a1", "HV-A", "HV-B"))
        migration.purge_tickets(c.PurgeTicketsInput(("HV-A", "HV-B")))
    finally:
        remove()
    stats = sessions.stats()
    assert stats.opened == 2  # one per host, whatever the number of activities
    assert stats.reused == stats.checkouts - 2 >= 3
    assert stats.open == {"HV-A": 1, "HV-B": 1}
    assert stats.checked_out == {"HV-A": 0, "HV-B": 0}
    assert (pools_opened(lab, "HV-A"), pools_opened(lab, "HV-B")) == (1, 1)
    assert (shells(lab, "HV-A"), shells(lab, "HV-B")) == (1, 1)
    # Round trips per checkout: the open counted once, in the checkout that made it; nothing for closes.
    first, second = reports[0], reports[1]
    assert first.host == second.host == "HV-A"
    assert first.round_trips == second.round_trips + 1
    assert first.calls == second.calls == {"Get-VM": 1}
    assert report.round_trips is not None
    assert report.round_trips["HV-A"] == sum(r.round_trips for r in reports[2:4] if r.host == "HV-A")
    assert report.round_trips["HV-B"] > 1  # its open, then its reads

    assert sessions.close_all() == 2
    assert (shells(lab, "HV-A"), shells(lab, "HV-B")) == (0, 0)
    assert sessions.stats().open == {"HV-A": 0, "HV-B": 0}


def test_an_error_record_leaves_the_session_in_the_pool(lab: Lab) -> None:
    sessions = sessions_of(lab)
    with pytest.raises(ConfigurationError) as caught, sessions.session("HV-A") as client:
        client.run("Get-VM", {"Name": "ghost"})
    assert caught.value.error_type == c.VM_NOT_FOUND
    with sessions.session("HV-A") as again:
        assert again is client
        assert again.run("Get-VMHost").ok
    stats = sessions.stats()
    assert (stats.opened, stats.reused, stats.discarded) == (1, 1, 0)


def test_a_reused_session_keeps_no_answer_of_an_ended_command(lab: Lab) -> None:
    # pypsrp registers every pipeline with its pool until the pool closes; a session reused for hundreds of commands
    # would hold every answer (the worker grew by about 3 MiB per move before the session let go of them).
    sessions = sessions_of(lab)
    with sessions.session("HV-A") as client:
        for _ in range(5):
            client.run("Get-VM", {"Name": "vm-a1"})
            client.run("Get-VM", {"Name": "ghost"}, check=False)
            client.batch([Command("Get-VMHost"), Command("Get-VM")])
            client.pipeline([Command("Get-VM"), Command("Select-Object", {"First": 1})])
        assert client.pipelines == 20
        assert client._open_pool().pipelines == {}


# -- exclusive checkouts and the per-host bound --------------------------------------------------------------
def test_ten_threads_share_three_sessions_never_one_at_once(lab: Lab) -> None:
    sessions = sessions_of(lab, per_host=3)
    lock = threading.Lock()
    in_use: set[int] = set()
    shared: list[str] = []
    most_shells = 0
    seen: set[int] = set()
    failures: list[BaseException] = []

    def work() -> None:
        nonlocal most_shells
        try:
            for _ in range(6):
                with sessions.session("HV-A") as client:
                    with lock:
                        if id(client) in in_use:
                            shared.append(repr(client))
                        in_use.add(id(client))
                        seen.add(id(client))
                        most_shells = max(most_shells, shells(lab, "HV-A"))
                    assert client.run("Get-VMHost").output[0]["Name"] == "HV-A"
                    with lock:
                        in_use.discard(id(client))
        except BaseException as exc:  # reported below, with the thread's failure
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert not shared
    stats = sessions.stats()
    assert stats.checkouts == 60
    assert stats.opened == len(seen) <= 3
    assert stats.reused == 60 - stats.opened
    assert most_shells <= 3
    assert pools_opened(lab, "HV-A") == stats.opened
    sessions.close_all()
    assert shells(lab, "HV-A") == 0


def test_a_host_whose_sessions_are_all_out_is_busy(lab: Lab) -> None:
    sessions = sessions_of(lab, per_host=1, wait_seconds=0.2)
    caught: list[BaseException] = []

    def other() -> None:
        try:
            with sessions.session("HV-A"):
                pass
        except BaseException as exc:
            caught.append(exc)

    with sessions.session("HV-A") as client:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        # Another host is not held up by this one.
        with sessions.session("HV-B") as elsewhere:
            assert elsewhere.run("Get-VMHost").ok
        assert client.run("Get-VMHost").ok
    (error,) = caught
    assert isinstance(error, TransientError)
    assert error.error_type == c.HOST_BUSY
    assert "HV-A" in str(error)
    assert sessions.stats().waited == 1


def test_a_waiting_checkout_gets_the_session_that_comes_back(lab: Lab) -> None:
    sessions = sessions_of(lab, per_host=1, wait_seconds=30)
    got: list[HostClient] = []
    checked_out = threading.Event()

    def other() -> None:
        checked_out.wait()
        with sessions.session("HV-A") as client:
            got.append(client)

    thread = threading.Thread(target=other)
    thread.start()
    with sessions.session("HV-A") as client:
        checked_out.set()
        while sessions.stats().waited == 0:
            time.sleep(0.01)
    thread.join()
    assert got == [client]
    assert sessions.stats().opened == 1


def test_per_host_is_bounded_by_the_shell_quota(lab: Lab) -> None:
    with pytest.raises(ValueError, match="MaxShellsPerUser"):
        sessions_of(lab, per_host=26)
    with pytest.raises(ValueError, match="read_timeout"):
        HostSessions(inventory(lab), read_timeout=5, operation_timeout=10)
    with pytest.raises(ValueError, match="shared sessions"):
        MigrationActivities(inventory(lab), sessions=sessions_of(lab), **FAST)


# -- broken, spent and idle sessions ---------------------------------------------------------------------------
def test_a_session_whose_shell_is_gone_is_replaced(lab: Lab) -> None:
    sessions = sessions_of(lab)
    with sessions.session("HV-A") as first, sessions.session("HV-A") as second:
        assert first is not second
        assert first.run("Get-VMHost").ok
        assert second.run("Get-VMHost").ok
    assert shells(lab, "HV-A") == 2
    assert lab.endpoint("HV-A").drop_all_shells() == 2  # what a WinRM restart does to them
    with pytest.raises(TransientError) as caught, sessions.session("HV-A") as client:
        client.run("Get-VMHost")
    assert caught.value.error_type == c.HOST_SESSION_LOST
    assert client.broken
    # The broken one and its idle sibling (gone the same way) are discarded; the next checkout opens a new one.
    assert sessions.stats().discarded == 2
    assert sessions.stats().open == {"HV-A": 0}
    with sessions.session("HV-A") as fresh:
        assert fresh is not client
        assert fresh.run("Get-VMHost").ok
    assert sessions.stats().opened == 3
    assert shells(lab, "HV-A") == 1


def test_a_winrm_restart_costs_one_attempt(lab: Lab) -> None:
    sessions = sessions_of(lab)
    migration = MigrationActivities(inventory(lab), poll_seconds=0.05, sessions=sessions)
    assert not migration.snapshot_cluster_role(VmOnHost("vm-a1", "HV-A")).clustered
    lab.inject_fault("restart_winrm", host="HV-A", seconds=1)
    with pytest.raises(TransientError) as caught:
        migration.snapshot_cluster_role(VmOnHost("vm-a1", "HV-A"))
    assert caught.value.error_type in (c.HOST_SESSION_LOST, c.HOST_UNREACHABLE)
    # Temporal retries with backoff; the retry opens a new session once WinRM listens again.
    assert lab.endpoint("HV-A").wait_until_accepting(10)
    assert not migration.snapshot_cluster_role(VmOnHost("vm-a1", "HV-A")).clustered
    stats = sessions.stats()
    assert (stats.opened, stats.discarded) == (2, 1)


def test_a_session_is_replaced_before_max_pipelines(lab: Lab) -> None:
    sessions = sessions_of(lab, max_pipelines=3)
    with sessions.session("HV-A") as client:
        client.run("Get-VMHost")
        client.run("Get-VM")
    with sessions.session("HV-A") as same:
        assert same is client
        same.run("Get-VMHost")
    assert client.pipelines == 3
    assert not client.is_open  # closed as it came back: its next pipeline would have been its 4th
    assert sessions.stats().replaced == 1
    assert shells(lab, "HV-A") == 0
    with sessions.session("HV-A") as fresh:
        assert fresh is not client
        assert fresh.pipelines == 0
        assert fresh.run("Get-VMHost").ok
    assert sessions.stats().opened == 2


def test_idle_sessions_are_closed(lab: Lab) -> None:
    sessions = sessions_of(lab, idle_seconds=0.2)
    with sessions.session("HV-A") as first, sessions.session("HV-B"):
        pass
    assert sessions.close_idle() == 0  # not idle long enough yet
    assert (shells(lab, "HV-A"), shells(lab, "HV-B")) == (1, 1)
    time.sleep(0.3)
    assert sessions.close_idle() == 2
    assert (shells(lab, "HV-A"), shells(lab, "HV-B")) == (0, 0)
    # Lazily, too: a checkout after the idle time gets a new session, the old one closed on the way.
    with sessions.session("HV-A") as second:
        assert second is not first
    time.sleep(0.3)
    with sessions.session("HV-A") as third:
        assert third is not second
        assert shells(lab, "HV-A") == 1
    assert sessions.stats().idle_closed == 3


def test_a_session_whose_connection_the_host_dropped_still_closes_its_shell(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # HTTP.sys drops a keep-alive connection idle for 120 s, and with NTLM sealing that connection carried the
    # session's security context: a close sent with the old context cannot be unsealed. The shell itself lives on
    # (on Windows until WinRM's idle timeout, counted against MaxShellsPerUser), so the close must reach it.
    monkeypatch.setattr(lab_server._Handler, "timeout", 0.5)
    client = HostClient(inventory(lab).host("HV-A"), **FAST).open()
    assert client.run("Get-VMHost").ok
    assert shells(lab, "HV-A") == 1
    time.sleep(1.5)  # the lab has dropped the connection by now
    with caplog.at_level("WARNING", logger="activities.hosts"):
        client.close()
    assert shells(lab, "HV-A") == 0
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text


def test_close_all_closes_a_checked_out_session_as_it_comes_back(lab: Lab) -> None:
    sessions = sessions_of(lab)
    with sessions.session("HV-A") as client:
        assert sessions.close_all() == 0
        assert client.run("Get-VMHost").ok  # still usable until the block ends
    assert not client.is_open
    assert shells(lab, "HV-A") == 0


# -- batches ---------------------------------------------------------------------------------------------------
def test_batch_splits_the_output_per_statement(lab: Lab) -> None:
    with HostClient(inventory(lab).host("HV-A"), **FAST) as client:
        vmhost, vms, names, nets = client.batch(
            [
                Command("Get-VMHost"),
                Command("Get-VM"),
                [Command("Get-VM"), Command("Select-Object", {"Property": ["Name"]})],
                Command("Get-VMMigrationNetwork"),
            ]
        )
        assert client.round_trips == 2  # the open and ONE round trip for four statements
        assert client.pipelines == 1
    assert [r.command for r in (vmhost, vms, names, nets)] == [
        "Get-VMHost", "Get-VM", "Get-VM | Select-Object", "Get-VMMigrationNetwork",
    ]  # fmt: skip
    assert [item["Name"] for item in vmhost.output] == ["HV-A"]
    assert sorted(vm["Name"] for vm in vms.output) == ["vm-a1", "vm-a2", "vm-a3", "vm-a4"]
    assert sorted(item["Name"] for item in names.output) == ["vm-a1", "vm-a2", "vm-a3", "vm-a4"]
    assert all(set(item) == {"Name"} for item in names.output)
    assert all(r.ok for r in (vmhost, vms, names, nets))
    assert all(isinstance(item, dict) for r in (vmhost, vms, names, nets) for item in r.output)
    # The markers are the client's business: they count as no command.
    assert client.calls == {"Get-VMHost": 1, "Get-VM": 2, "Select-Object": 1, "Get-VMMigrationNetwork": 1}


def test_batch_places_an_error_with_its_statement(lab: Lab) -> None:
    with HostClient(inventory(lab).host("HV-A"), **FAST) as client:
        vmhost, ghost, rule = client.batch(
            [
                Command("Get-VMHost"),
                Command("Get-VM", {"Name": "ghost"}),
                Command("Get-NetFirewallRule", {"Name": "no-such-rule"}),
            ],
            check=False,
        )
        assert vmhost.ok
        assert vmhost.output[0]["Name"] == "HV-A"
        assert [e.error_type for e in ghost.errors] == [c.VM_NOT_FOUND]
        assert ghost.output == ()
        assert "Get-VM on HV-A" in str(ghost.errors[0])
        assert [info.activity for info in rule.records] == ["Get-NetFirewallRule"]
        assert all(info.activity == "Get-VM" for info in ghost.records)

        # check=True: the first error raises, as run() does.
        with pytest.raises(ConfigurationError) as caught:
            client.batch([Command("Get-VMHost"), Command("Get-VM", {"Name": "ghost"})])
        assert caught.value.error_type == c.VM_NOT_FOUND
        # A failed statement leaves the session usable.
        assert client.run("Get-VMHost").ok
    assert not client.broken


def test_a_terminating_error_ends_the_batch_where_it_happens(lab: Lab) -> None:
    with HostClient(inventory(lab).host("HV-A"), **FAST) as client:
        before, bad, after = client.batch(
            [Command("Get-VMHost"), Command("Get-VM", {"Colour": "blue"}), Command("Get-VMMigrationNetwork")],
            check=False,
        )
        assert before.state == "Completed"
        assert before.output[0]["Name"] == "HV-A"
        assert bad.state == "Failed"
        assert [e.error_type for e in bad.errors] == [c.PARAMETER_BINDING_FAILED]
        # What came after it may have run on the host; the client never saw its end.
        assert after.state == "Unknown"
        assert not after.ok
        assert after.output == ()
        assert client.run("Get-VMHost").ok
    assert not client.broken


def test_batch_refuses_empty_statements(lab: Lab) -> None:
    with HostClient(inventory(lab).host("HV-A"), **FAST) as client:
        with pytest.raises(ValueError, match="at least one statement"):
            client.batch([])
        with pytest.raises(ValueError, match="at least one command"):
            client.batch([Command("Get-VMHost"), []])
        assert client.round_trips == 1


# -- the activities on shared sessions -------------------------------------------------------------------------
def test_read_migration_settings_is_one_round_trip(lab: Lab) -> None:
    sessions = sessions_of(lab)
    reports: list[SessionReport] = []
    remove = add_session_observer(reports.append)
    try:
        migration = MigrationActivities(inventory(lab), poll_seconds=0.05, sessions=sessions)
        first = migration.read_migration_settings(HostRef("HV-A"))
        again = migration.read_migration_settings(HostRef("HV-A"))
    finally:
        remove()
    assert first == again
    assert first.enabled
    assert first.max_vm_migrations == 2
    assert [r.round_trips for r in reports] == [2, 1]  # open + one batch, then the batch alone
    assert reports[1].calls == {"Get-VMHost": 1, "Get-VMMigrationNetwork": 1, "Get-NetFirewallRule": 1}


def test_the_move_holds_no_session_between_polls(pair: Callable[..., Lab]) -> None:
    lab = pair(time_scale=60.0)
    sessions = sessions_of(lab, per_host=1)
    migration = MigrationActivities(inventory(lab), poll_seconds=0.05, sessions=sessions)
    facts = migration.read_vm(VmOnHost("vm-a1", "HV-A"))
    held: list[dict[str, int]] = []
    env = ActivityEnvironment()
    beats: list[Any] = []

    def beat(*details: Any) -> None:
        beats.extend(details)
        held.append(sessions.stats().checked_out)
        # With per_host=1, another activity reads the source while the move is being watched.
        with sessions.session("HV-A") as client:
            client.run("Get-VMHost")

    env.on_heartbeat = beat
    result = env.run(
        migration.start_or_attach_move,
        MoveInput("vm-a1", facts.vm_id, "HV-A", "HV-B", storage_path=r"D:\Hyper-V\vm-a1"),
    )
    assert result.started
    assert [b for b in beats if isinstance(b, MoveHeartbeat)]
    assert held
    assert all(not any(out.values()) for out in held)
    # One session of the source for the whole move (read_vm's, reused); the destination is not opened at all: with its
    # storage path known, the first attempt starts the move in one round trip to the source.
    assert sessions.stats().opened == 1
    assert lab.truth()["locations"]["vm-a1"] == ["HV-B"]


# -- the host's quotas (catalogue 6.3), as the lab enforces them -----------------------------------------------
@pytest.fixture
def quota_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """`quota_lab(max_shells_per_user=, max_commands_per_shell=)`: a pair lab whose hosts enforce these quotas."""
    started: list[Lab] = []

    def make(**winrm: int) -> Lab:
        data = yaml.safe_load(PAIR.read_text())
        data["lab"]["winrm"] = winrm
        topology = tmp_path / f"quotas-{len(started)}.yaml"
        topology.write_text(yaml.safe_dump(data))
        lab = Lab.from_topology(
            topology, workdir=tmp_path / f"quota-lab-{len(started)}", time_scale=600.0, control_port=None
        ).start()
        started.append(lab)
        return lab

    yield make
    for lab in started:
        lab.stop()


def refused(lab: Lab, host: str) -> dict[str, int]:
    return dict(lab.truth()["winrm"][host]["refused"])


def test_sessions_stay_under_the_hosts_quotas(quota_lab: Callable[..., Lab]) -> None:
    lab = quota_lab(max_shells_per_user=3, max_commands_per_shell=5)
    sessions = sessions_of(lab, per_host=3, max_pipelines=5)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                with sessions.session("HV-A") as client:
                    assert client.run("Get-VMHost").ok
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert refused(lab, "HV-A") == {"shells": 0, "commands": 0}
    stats = sessions.stats()
    assert stats.replaced >= 80 // 5 - 3  # every session retired at its 5th pipeline (up to 3 still open)
    assert stats.opened == stats.replaced + stats.open["HV-A"]


def test_a_session_the_host_refuses_a_command_is_replaced(quota_lab: Callable[..., Lab]) -> None:
    # A host whose quota is below max_pipelines (raised on one host, lowered on another): its fault says so.
    lab = quota_lab(max_commands_per_shell=2)
    sessions = sessions_of(lab)
    with sessions.session("HV-A") as client:
        client.run("Get-VMHost")
        client.run("Get-VMHost")
    with pytest.raises(TransientError) as caught, sessions.session("HV-A") as same:
        same.run("Get-VMHost")
    assert same is client
    assert caught.value.error_type == c.HOST_SESSION_LOST
    assert "MaxConcurrentCommandsPerShell" in str(caught.value)
    assert client.broken
    assert sessions.stats().discarded == 1
    with sessions.session("HV-A") as fresh:
        assert fresh is not client
        assert fresh.run("Get-VMHost").ok
    assert refused(lab, "HV-A") == {"shells": 0, "commands": 1}


def test_a_host_that_refuses_a_shell_is_busy(quota_lab: Callable[..., Lab]) -> None:
    # Another client of the same account holds the host's only shell.
    lab = quota_lab(max_shells_per_user=1)
    sessions = sessions_of(lab, per_host=2)
    with HostClient(inventory(lab).host("HV-A"), **FAST) as other:
        with pytest.raises(TransientError) as caught, sessions.session("HV-A"):
            pass
        assert other.run("Get-VMHost").ok
    error = caught.value
    assert error.error_type == c.HOST_BUSY
    assert "MaxShellsPerUser" in error.remedy
    assert sessions.stats().open == {"HV-A": 0}  # the refused open left no place taken
    with sessions.session("HV-A") as client:
        assert client.run("Get-VMHost").ok
    assert refused(lab, "HV-A") == {"shells": 1, "commands": 0}


def test_activities_dropped_close_their_own_sessions(lab: Lab) -> None:
    migration = MigrationActivities(inventory(lab), poll_seconds=0.05, **FAST)
    assert not migration.snapshot_cluster_role(VmOnHost("vm-a1", "HV-A")).clustered
    assert shells(lab, "HV-A") == 1
    del migration
    gc.collect()
    assert shells(lab, "HV-A") == 0
