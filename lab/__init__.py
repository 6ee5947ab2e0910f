"""The snlm lab: simulated Hyper-V hosts that speak WinRM/PSRP, for rehearsals, the demo and the tests.

The public names below are loaded on first use, so `import lab.inventory` (to read or write an inventory)
does not pull in the WinRM server, the PSRP engine and the cmdlets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.control import ControlClient, ControlError
    from lab.inventory import HostEntry, Inventory, InventoryError, load_inventory
    from lab.lab import Lab
    from lab.model.topology import TopologyError, load_topology
    from lab.truth import world_truth

_EXPORTS = {
    "ControlClient": "lab.control",
    "ControlError": "lab.control",
    "HostEntry": "lab.inventory",
    "Inventory": "lab.inventory",
    "InventoryError": "lab.inventory",
    "Lab": "lab.lab",
    "TopologyError": "lab.model.topology",
    "load_inventory": "lab.inventory",
    "load_topology": "lab.model.topology",
    "world_truth": "lab.truth",
}

__all__ = [
    "ControlClient",
    "ControlError",
    "HostEntry",
    "Inventory",
    "InventoryError",
    "Lab",
    "TopologyError",
    "load_inventory",
    "load_topology",
    "world_truth",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lab' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
