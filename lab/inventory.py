"""Host inventory: where each lab host's WinRM listener is and how to log on to it.

The lab writes this file for itself (`Lab.inventory`, `python -m lab --inventory-out`) and the engine's worker
reads it. The format is defined once, in `config.inventory`, which imports nothing of the lab nor of the engine:
this module is the lab's name for it. Passwords are never written to the file; each host's `password_file`
points to the lab's password file (DESIGN.md invariant 1).
"""

from __future__ import annotations

from config.inventory import (
    DEFAULT_PORTS,
    AuthKind,
    Encryption,
    HostEntry,
    Inventory,
    InventoryError,
    Scheme,
    UnknownInventoryHost,
    dump_inventory,
    load_inventory,
    parse_inventory,
)

__all__ = [
    "DEFAULT_PORTS",
    "AuthKind",
    "Encryption",
    "HostEntry",
    "Inventory",
    "InventoryError",
    "Scheme",
    "UnknownInventoryHost",
    "dump_inventory",
    "load_inventory",
    "parse_inventory",
]
