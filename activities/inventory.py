"""The engine's host inventory: the format of `config.inventory`, with the engine's errors.

The format (fields, validation, password references) is defined once in `config.inventory`, which the lab
writes with and the engine reads with; the engine never imports the lab. This module only makes every error
an engine error: an `InventoryError` (a `ConfigurationError`, error type `InventoryInvalid`) whose message names
the file, the host and the field (`inventory.yaml: hosts.HV01.port: ...`) and never echoes a value, with a
remedy; `Inventory.host()` raises `UnknownHostError` (error type `UnknownHost`) for a host the inventory does
not list.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import Field, SecretStr

from activities.errors import ConfigurationError, UnknownHostError
from config import inventory as _format
from config.inventory import DEFAULT_PORTS, AuthKind, Encryption, Scheme
from workflows.contracts import INVENTORY_INVALID, UNKNOWN_HOST

__all__ = [
    "DEFAULT_PORTS",
    "AuthKind",
    "Encryption",
    "HostEntry",
    "Inventory",
    "InventoryError",
    "Scheme",
    "load_inventory",
    "parse_inventory",
]


class InventoryError(ConfigurationError):
    """An inventory that cannot be used; the message names the file, the host and the field, never a secret.

    `host`, `field` and `problem` (what is wrong, without the location) are kept for messages of the caller's
    own (the worker's start-up check).
    """

    def __init__(self, message: str, *, source: str = "", host: str = "", field: str = "", problem: str = "") -> None:
        details = {key: value for key, value in (("inventory", source), ("host", host), ("field", field)) if value}
        super().__init__(
            message,
            error_type=INVENTORY_INVALID,
            remedy="correct the host inventory, or the variable or file its password reference names",
            details=details,
        )
        self.host = host
        self.field = field
        self.problem = problem or message

    @classmethod
    def of(cls, error: _format.InventoryError) -> InventoryError:
        return cls(str(error), source=error.source, host=error.host, field=error.field, problem=error.problem)


class HostEntry(_format.HostEntry):
    """One host of the inventory (see `config.inventory.HostEntry`), its errors the engine's."""

    def resolve_password(self) -> SecretStr:
        """Read the password from where the entry points; raise InventoryError naming the field (not the value)."""
        try:
            return super().resolve_password()
        except _format.InventoryError as error:
            raise InventoryError.of(error) from None


class Inventory(_format.Inventory):
    hosts: Annotated[Mapping[str, HostEntry], Field(min_length=1)]

    def host(self, name: str) -> HostEntry:
        """The entry for a host by NetBIOS name or FQDN, case-insensitively (an FQDN whose first label is a
        listed NetBIOS name also matches); UnknownHostError naming it otherwise."""
        entry = self.find(name)
        if entry is None:
            where = str(self.source) if self.source is not None else "<inventory>"
            raise UnknownHostError(
                f"host {name!r} is not in the inventory {where}",
                error_type=UNKNOWN_HOST,
                remedy=f"add it under 'hosts' in {where}, or check the spelling "
                f"(known: {', '.join(sorted(self.hosts))})",
                details={"host": name, "inventory": where},
            )
        # `hosts` holds this module's HostEntry (the field is narrowed above), so `find` returns one.
        return cast(HostEntry, entry)


def parse_inventory(raw: Any, *, source: str = "<inventory>", base_dir: Path | None = None) -> Inventory:
    """Validate an inventory already read from YAML (a mapping with `hosts`, optional `defaults`)."""
    try:
        return _format.parse_inventory_as(Inventory, raw, source=source, base_dir=base_dir)
    except _format.InventoryError as error:
        raise InventoryError.of(error) from None


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory file; raise InventoryError naming the file, host and field."""
    try:
        return _format.load_inventory_as(Inventory, path)
    except _format.InventoryError as error:
        raise InventoryError.of(error) from None
