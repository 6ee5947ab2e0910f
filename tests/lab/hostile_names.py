"""A two-host estate whose VM names are hostile to anything that hands a name to a host as `-Name`.

HV-A holds VMs named like wildcard patterns (`web[1]`, `a*b`, `db?`), with a backtick, with quotes, 100 characters
long and non-ASCII, each beside a sibling the pattern would also match (`web1`, `ab`, `db1`); two VMs that share
one name (`twin`); and `web08`. `db?` and `db1` have an ISO mounted that only HV-A has. HV-B runs `web07` and
another VM named `clash` (HV-A has one too). Used by the
lab's tests of how Hyper-V resolves names and by the engine's tests of how snlm avoids that.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab.lab import Lab
from lab.model.topology import parse_topology

BRACKETS = "web[1]"
STAR = "a*b"
QMARK = "db?"
BACKTICK = "back`tick"
QUOTES = 'it\'s "quoted"'
LONG = "long-" + "x" * 95  # 100 characters, the topology's (and Hyper-V Manager's) limit
UNICODE = "Ünïcødé-ВМ-虚拟机"  # noqa: RUF001 (Cyrillic on purpose)
HOSTILE = (BRACKETS, STAR, QMARK, BACKTICK, QUOTES, LONG, UNICODE)
SIBLINGS = ("web1", "ab", "axb", "db1")
TWIN = "twin"
TWIN_IDS = (uuid.UUID("11111111-1111-4111-8111-111111111111"), uuid.UUID("22222222-2222-4222-8222-222222222222"))
CLASH = "clash"
ISO = "D:\\ISO\\tools.iso"
CLASH_IDS = (uuid.UUID("33333333-3333-4333-8333-333333333333"), uuid.UUID("44444444-4444-4444-8444-444444444444"))


def _host(name: str, index: int) -> dict[str, Any]:
    return {
        "name": name,
        "os": "2022",
        "cpu": {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz"},
        "memory_gb": 256,
        "memory_reserved_gb": 4,
        "volumes": [
            {"drive": "C", "label": "System", "size_gb": 200, "free_gb": 120},
            {"drive": "D", "label": "VMs", "size_gb": 4000, "free_gb": 3500},
        ],
        "switches": [{"name": "Production"}],
        "nics": [
            {"name": "Management", "ip": f"10.0.0.{60 + index}", "bandwidth_gbps": 1},
            {"name": "Migration", "ip": f"10.10.10.{60 + index}", "bandwidth_gbps": 10},
        ],
        "live_migration": {
            "enabled": True,
            "authentication": "Kerberos",
            "networks": [{"subnet": "10.10.10.0/24", "priority": 1}],
            "max_vm_migrations": 4,
        },
    }


def _vm(name: str, host: str, serial: int, **extra: Any) -> dict[str, Any]:
    # Each VM's files live in a folder of its own whatever its name (a name is not always a valid path).
    folder = f"D:\\Hyper-V\\vm{serial:02d}"
    return {
        "name": name,
        "host": host,
        "memory_gb": 1,
        "path": folder,
        "adapters": [{"switch": "Production"}],
        "disks": [{"path": f"{folder}\\disk{serial:02d}.vhdx", "size_gb": 20, "file_gb": 2}],
        **extra,
    }


def topology(**lab_options: Any) -> dict[str, Any]:
    """The estate as a topology mapping; `lab_options` go into its `lab:` section."""
    names_a = [*HOSTILE, *SIBLINGS, "web08"]
    vms = [
        _vm(name, "HV-A", serial, **({"iso": ISO} if name in (QMARK, "db1") else {}))
        for serial, name in enumerate(names_a, start=1)
    ]
    serial = len(vms)
    vms += [_vm(TWIN, "HV-A", serial + 1 + i, id=str(vm_id)) for i, vm_id in enumerate(TWIN_IDS)]
    vms.append(_vm(CLASH, "HV-A", serial + 3, id=str(CLASH_IDS[0])))
    vms.append(_vm(CLASH, "HV-B", serial + 4, id=str(CLASH_IDS[1])))
    vms.append(_vm("web07", "HV-B", serial + 5))
    delegation = {
        "HV-A": ["cifs/HV-B", "cifs/hv-b.lab.test", "Microsoft Virtual System Migration Service/HV-B"],
        "HV-B": ["cifs/HV-A", "cifs/hv-a.lab.test", "Microsoft Virtual System Migration Service/HV-A"],
    }
    return {
        "lab": {"domain": "lab.test", "netbios_domain": "LAB", "time_scale": 600, **lab_options},
        "hosts": [{**_host("HV-A", 1), "isos": [ISO]}, _host("HV-B", 2)],
        "vms": vms,
        "directory": {
            host: {"protocol_transition": True, "allowed_to_delegate_to": allowed}
            for host, allowed in delegation.items()
        },
    }


@contextlib.contextmanager
def hostile_labs(root: Path) -> Iterator[Callable[..., Lab]]:
    """A maker of fresh hostile-name labs under `root` (for tests that change the estate); stops them all."""
    started: list[Lab] = []

    def make(**lab_options: Any) -> Lab:
        lab = hostile_lab(root / f"lab-{len(started)}", **lab_options)
        started.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in started:
            lab.stop()


def hostile_lab(workdir: Path, **lab_options: Any) -> Lab:
    """A started lab of this estate (stop it when done)."""
    spec = parse_topology(topology(**lab_options), source="hostile-names")
    return Lab(spec, workdir=workdir, time_scale=600.0, control_port=None).start()
