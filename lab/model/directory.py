"""What the lab's hosts read from Active Directory: each computer account's delegation settings.

A Kerberos live migration started remotely needs the source host's computer account to be allowed to
delegate to the destination's `Microsoft Virtual System Migration Service` (and `cifs` for storage), see
reference/hyperv-facts.md. The lab reads those entries through this interface: `TopologyDirectory` keeps
them in memory, fed by the topology file (and writable through the control API, so a rehearsal can model
an estate whose delegation is managed elsewhere); an LDAP implementation reads a real directory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

# userAccountControl bits (MS-ADTS 2.2.16)
TRUSTED_FOR_DELEGATION = 0x80000
NOT_DELEGATED = 0x100000
TRUSTED_TO_AUTH_FOR_DELEGATION = 0x1000000

MIGRATION_SERVICE = "Microsoft Virtual System Migration Service"


@dataclass(frozen=True)
class ComputerAccount:
    """The delegation-relevant attributes of one computer account."""

    name: str
    allowed_to_delegate_to: frozenset[str] = frozenset()
    user_account_control: int = 0x1000  # WORKSTATION_TRUST_ACCOUNT

    @property
    def protocol_transition(self) -> bool:
        return bool(self.user_account_control & TRUSTED_TO_AUTH_FOR_DELEGATION)

    @property
    def unconstrained(self) -> bool:
        return bool(self.user_account_control & TRUSTED_FOR_DELEGATION)

    def may_delegate_to(self, service: str, host: str, fqdn: str) -> bool:
        """Whether `service/host` or `service/fqdn` is listed (SPNs compare case-insensitively)."""
        wanted = {f"{service}/{host}".lower(), f"{service}/{fqdn}".lower()}
        return any(spn.lower() in wanted for spn in self.allowed_to_delegate_to)


class Directory(Protocol):
    """Read access to computer accounts, keyed by the host's NetBIOS name."""

    def computer(self, name: str) -> ComputerAccount | None: ...


@dataclass
class TopologyDirectory:
    """An in-memory directory: the lab's own, when no real directory is configured."""

    accounts: dict[str, ComputerAccount] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def computer(self, name: str) -> ComputerAccount | None:
        with self._lock:
            return self.accounts.get(name.upper())

    def put(self, account: ComputerAccount) -> None:
        with self._lock:
            self.accounts[account.name.upper()] = account
