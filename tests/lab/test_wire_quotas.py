"""WinRM's quotas over the real wire (catalogue 6.3): shells per user, pipelines per shell in total."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from lab.control import ControlClient
from lab.lab import Lab
from lab.model.topology import TopologyError, load_topology
from lab.wsman import HostEndpoint, WinRMQuotas
from tests.lab.conftest import TOPOLOGIES, WIRE_PASSWORD, WIRE_USER, lab_wsman

pytestmark = pytest.mark.timeout(120)

SHELL_QUOTA_CODE = 2150859173
COMMANDS_MESSAGE = (
    "The WS-Management service cannot process the request. The maximum number of concurrent commands per shell "
    "has been exceeded. Retry the request later or raise the Maximum Commands per Shell quota."
)
OTHER_USER = "LAB\\operator"


def shell_quota_message(limit: int) -> str:
    return (
        "The WS-Management service cannot process the request. This user is allowed a maximum number of "
        f"{limit} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user."
    )


def run(pool: RunspacePool, text: str) -> list[object]:
    ps = PowerShell(pool)
    ps.add_cmdlet("Echo-Parameters").add_parameter("Name", text)
    return ps.invoke()


def test_the_26th_shell_is_refused_and_a_closed_one_frees_its_place(
    wire_endpoint: HostEndpoint, wire_connect: Callable[..., WSMan]
) -> None:
    with ExitStack() as stack:
        wsman = stack.enter_context(wire_connect(wire_endpoint, "basic"))
        pools = [stack.enter_context(RunspacePool(wsman)) for _ in range(25)]
        usage = wire_endpoint.winrm_usage()
        assert usage["max_shells_per_user"] == 25
        assert usage["shells_per_user"] == {WIRE_USER: 25}

        with pytest.raises(WSManFaultError) as refused:
            RunspacePool(wsman).open()
        assert refused.value.code == SHELL_QUOTA_CODE
        assert refused.value.reason == shell_quota_message(25)
        assert wire_endpoint.winrm_usage()["refused"]["shells"] == 1

        pools[0].close()  # WSMan Delete
        assert wire_endpoint.winrm_usage()["shells_per_user"] == {WIRE_USER: 24}
        another = stack.enter_context(RunspacePool(wsman))
        assert run(another, "26th") == ["Name='26th'"]
        assert wire_endpoint.winrm_usage()["shells_per_user"] == {WIRE_USER: 25}


def test_the_shell_quota_is_per_user(
    wire_endpoint_factory: Callable[..., HostEndpoint], wire_connect: Callable[..., WSMan]
) -> None:
    endpoint = wire_endpoint_factory(
        credentials={WIRE_USER: WIRE_PASSWORD, OTHER_USER: WIRE_PASSWORD},
        quotas=WinRMQuotas(max_shells_per_user=2),
    )
    with ExitStack() as stack:
        mine = stack.enter_context(wire_connect(endpoint, "basic"))
        for _ in range(2):
            stack.enter_context(RunspacePool(mine))
        with pytest.raises(WSManFaultError) as refused:
            RunspacePool(mine).open()
        assert refused.value.code == SHELL_QUOTA_CODE
        assert refused.value.reason == shell_quota_message(2)
        theirs = stack.enter_context(wire_connect(endpoint, "basic", username=OTHER_USER))
        assert run(stack.enter_context(RunspacePool(theirs)), "other") == ["Name='other'"]
        assert endpoint.winrm_usage()["shells_per_user"] == {WIRE_USER: 2, OTHER_USER: 1}


def test_a_shell_is_refused_after_n_pipelines_in_total_and_a_new_shell_works(
    wire_endpoint_factory: Callable[..., HostEndpoint], wire_connect: Callable[..., WSMan]
) -> None:
    endpoint = wire_endpoint_factory(quotas=WinRMQuotas(max_commands_per_shell=3))
    with wire_connect(endpoint, "ntlm") as wsman:
        with RunspacePool(wsman) as pool:
            for index in range(3):  # one after the other: the quota counts them in total, not at once
                assert run(pool, str(index)) == [f"Name='{index}'"]
            with pytest.raises(WSManFaultError) as refused:
                run(pool, "fourth")
            # What pypsrp made of the one public capture: the subcode as the code, no machine.
            assert refused.value.code == "w:InternalError"
            assert refused.value.machine is None
            assert refused.value.reason == COMMANDS_MESSAGE
            usage = endpoint.winrm_usage()
            assert [s["commands"] for s in usage["shells"]] == [3]
            assert usage["refused"] == {"shells": 0, "commands": 1}
        with RunspacePool(wsman) as fresh:
            assert run(fresh, "fresh") == ["Name='fresh'"]
    assert endpoint.winrm_usage()["shells"] == []


def test_a_dropped_shell_frees_its_place(
    wire_endpoint_factory: Callable[..., HostEndpoint], wire_connect: Callable[..., WSMan]
) -> None:
    endpoint = wire_endpoint_factory(quotas=WinRMQuotas(max_shells_per_user=1))
    with wire_connect(endpoint, "basic") as wsman:
        RunspacePool(wsman).open()
        assert endpoint.drop_all_shells() == 1  # a WinRM service restart
        with RunspacePool(wsman) as pool:
            assert run(pool, "again") == ["Name='again'"]


# -- the topology's settings -----------------------------------------------------------------------------
def _topology_with(tmp_path: Path, **winrm: int) -> Path:
    data = yaml.safe_load((TOPOLOGIES / "pair.yaml").read_text())
    data["lab"]["winrm"] = winrm
    path = tmp_path / "quotas.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_topology_sets_the_quotas(
    tmp_path: Path, wire_endpoint_factory: Callable[..., HostEndpoint], wire_connect: Callable[..., WSMan]
) -> None:
    spec = load_topology(_topology_with(tmp_path, max_shells_per_user=3, max_commands_per_shell=2))
    assert (spec.lab.winrm.max_shells_per_user, spec.lab.winrm.max_commands_per_shell) == (3, 2)
    assert load_topology(TOPOLOGIES / "pair.yaml").lab.winrm.max_commands_per_shell == 1000

    endpoint = wire_endpoint_factory(quotas=WinRMQuotas(**spec.lab.winrm.model_dump()))
    with wire_connect(endpoint, "basic") as wsman, RunspacePool(wsman) as pool:
        run(pool, "1")
        run(pool, "2")
        with pytest.raises(WSManFaultError):
            run(pool, "3")


def test_the_topology_refuses_a_quota_below_one(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"lab\.winrm\.max_commands_per_shell"):
        load_topology(_topology_with(tmp_path, max_commands_per_shell=0))


def test_the_truth_shows_the_quotas_and_their_use(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory("pair")
    token = lab.control_token_file.read_text().strip() if lab.control_token_file else ""
    client = ControlClient(lab.control_url or "", token)
    try:
        with lab_wsman(lab, "HV-A") as wsman, RunspacePool(wsman) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-VMHost")
            ps.invoke()
            winrm = client.truth()["winrm"]
            assert winrm["HV-B"]["shells"] == []
            host = winrm["HV-A"]
            assert (host["max_shells_per_user"], host["max_commands_per_shell"]) == (25, 1000)
            assert host["shells_per_user"] == {lab.username: 1}
            [shell] = host["shells"]
            assert (shell["user"], shell["commands"]) == (lab.username, 1)
            assert host["refused"] == {"shells": 0, "commands": 0}
        assert client.truth()["winrm"]["HV-A"]["shells_per_user"] == {}
    finally:
        client.close()


def test_a_whole_lab_takes_its_quotas_from_the_topology(tmp_path: Path) -> None:
    topology = _topology_with(tmp_path, max_shells_per_user=2, max_commands_per_shell=2)
    with Lab.from_topology(topology, workdir=tmp_path / "lab", time_scale=60.0) as lab:
        with lab_wsman(lab, "HV-A") as wsman, RunspacePool(wsman) as pool, RunspacePool(wsman):
            run_cmdlet = PowerShell(pool).add_cmdlet("Get-VMHost")
            run_cmdlet.invoke()
            PowerShell(pool).add_cmdlet("Get-VMHost").invoke()
            with pytest.raises(WSManFaultError):
                PowerShell(pool).add_cmdlet("Get-VMHost").invoke()
            with pytest.raises(WSManFaultError) as refused:
                RunspacePool(wsman).open()
            assert refused.value.code == SHELL_QUOTA_CODE
        winrm = lab.truth()["winrm"]["HV-A"]
        assert (winrm["max_shells_per_user"], winrm["max_commands_per_shell"]) == (2, 2)
        assert winrm["refused"] == {"shells": 1, "commands": 1}
