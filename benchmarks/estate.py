"""A synthetic estate of any size: standalone Hyper-V hosts ready for Kerberos live migration, evenly loaded.

Benchmarks and rehearsals of large campaigns need more hosts and VMs than the default topology holds; this
builds a topology of the same schema programmatically, so it is validated like any file.
"""

from __future__ import annotations

from typing import Any

from lab.model.topology import TopologySpec, parse_topology


def estate(
    hosts: int = 20, vms: int = 400, *, time_scale: float = 600.0, memory_gb: float = 2.0, disk_file_gb: float = 8.0
) -> TopologySpec:
    """`hosts` standalone 2022 hosts with delegation set between every pair, `vms` VMs spread round-robin (VM k on
    host k mod `hosts`), each with `memory_gb` of memory and one VHDX of `disk_file_gb` on disk."""
    raw = estate_topology(hosts, vms, time_scale=time_scale, memory_gb=memory_gb, disk_file_gb=disk_file_gb)
    return parse_topology(raw, source=f"<estate of {hosts} hosts and {vms} VMs>")


def estate_topology(
    hosts: int = 20, vms: int = 400, *, time_scale: float = 600.0, memory_gb: float = 2.0, disk_file_gb: float = 8.0
) -> dict[str, Any]:
    """The same estate as a topology mapping, ready to be written as a topology file."""
    names = [f"HV{index:03d}" for index in range(1, hosts + 1)]
    host_specs: list[dict[str, Any]] = []
    for index, name in enumerate(names, start=1):
        host_specs.append(
            {
                "name": name,
                "os": "2022",
                "cpu": {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"},
                "memory_gb": 1024,
                "volumes": [
                    {"drive": "C", "label": "System", "size_gb": 200, "free_gb": 120},
                    {"drive": "D", "label": "VMs", "size_gb": 20000, "free_gb": 15000},
                ],
                "switches": [{"name": "Production"}],
                "nics": [
                    {"name": "Management", "ip": f"10.0.{index // 250}.{index % 250 + 1}", "bandwidth_gbps": 1},
                    {"name": "Migration", "ip": f"10.10.{index // 250}.{index % 250 + 1}", "bandwidth_gbps": 10},
                ],
                "live_migration": {
                    "enabled": True,
                    "authentication": "Kerberos",
                    "networks": [{"subnet": "10.10.0.0/16", "priority": 1}],
                },
            }
        )
    vm_specs = [
        {
            "name": f"vm{index:05d}",
            "host": names[index % hosts],
            "memory_gb": memory_gb,
            "adapters": [{"switch": "Production"}],
            "disks": [
                {"path": rf"D:\Hyper-V\vm{index:05d}\vm{index:05d}.vhdx", "size_gb": 40, "file_gb": disk_file_gb}
            ],
        }
        for index in range(vms)
    ]
    directory = {
        name: {
            "protocol_transition": True,
            "allowed_to_delegate_to": [
                f"{service}/{peer_name}"
                for peer in names
                if peer != name
                for peer_name in (peer, f"{peer.lower()}.lab.test")
                for service in ("cifs", "Microsoft Virtual System Migration Service")
            ],
        }
        for name in names
    }
    return {"lab": {"time_scale": time_scale}, "hosts": host_specs, "vms": vm_specs, "directory": directory}
