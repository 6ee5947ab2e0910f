"""A host's Kerberos view of its own computer account, as its machine logon session caches it.

A Kerberos live migration started remotely works only when the source host may delegate the caller's
identity to the destination (reference/hyperv-facts.md, "Authentication and delegation"): the source's
computer account lists `Microsoft Virtual System Migration Service/<dest>` (and `cifs/<dest>` when files
move) in msDS-AllowedToDelegateTo, and on Windows Server 2016 and later it also needs protocol transition
("use any authentication protocol", TRUSTED_TO_AUTH_FOR_DELEGATION), else vmms fails with 0x8009030E.

A directory change is not seen at once: the host keeps its tickets (and the KDC its answer) for about
15 minutes, or until `klist purge -li 0x3e7` empties the machine account's logon session. The lab keeps
that view in `Host.ticket_cache*`, read from `world.directory` on first use and again only after a purge
or once the lifetime has passed (simulated time).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.model.directory import (
    MIGRATION_SERVICE,
    NOT_DELEGATED,
    TRUSTED_FOR_DELEGATION,
    TRUSTED_TO_AUTH_FOR_DELEGATION,
)
from lab.model.state import Host, World

# How long a host works from what it last read: the service-ticket lifetime the KDC and the host cache
# (hyperv-facts: "wait about 15 minutes. The KDC also caches a denial for about 15 minutes").
TICKET_LIFETIME_SECONDS = 15 * 60.0

CIFS_SERVICE = "cifs"


@dataclass(frozen=True)
class CachedAccount:
    """What a host believes its own computer account allows, as of `read_at` (simulated seconds)."""

    name: str
    allowed_to_delegate_to: frozenset[str]
    user_account_control: int
    read_at: float

    @property
    def protocol_transition(self) -> bool:
        return bool(self.user_account_control & TRUSTED_TO_AUTH_FOR_DELEGATION)

    @property
    def unconstrained(self) -> bool:
        return bool(self.user_account_control & TRUSTED_FOR_DELEGATION)

    @property
    def not_delegated(self) -> bool:
        return bool(self.user_account_control & NOT_DELEGATED)

    def may_delegate_to(self, service: str, host: Host) -> bool:
        # msDS-AllowedToDelegateTo values compare case-insensitively; either the NetBIOS or the FQDN SPN works.
        wanted = {f"{service}/{host.name}".lower(), f"{service}/{host.fqdn}".lower()}
        return any(spn.lower() in wanted for spn in self.allowed_to_delegate_to)


def _read_directory(world: World, host: Host, now: float) -> None:
    account = world.directory.computer(host.name)
    key = host.name
    host.ticket_cache.clear()
    host.ticket_cache_transition.clear()
    host.ticket_cache_uac.clear()
    # A host whose account the directory does not know gets an empty view: it may delegate to nothing.
    host.ticket_cache[key] = frozenset(account.allowed_to_delegate_to) if account else frozenset()
    host.ticket_cache_transition[key] = account.protocol_transition if account else False
    host.ticket_cache_uac[key] = account.user_account_control if account else 0
    host.ticket_cache_time = now


def cached_account(world: World, host: Host) -> CachedAccount:
    """The host's current view of its computer account, re-read only when the cache is empty or expired."""
    with world.lock:
        now = world.clock.elapsed()
        stale = (
            host.ticket_cache_time is None
            or host.name not in host.ticket_cache
            or now - host.ticket_cache_time >= TICKET_LIFETIME_SECONDS
        )
        if stale:
            _read_directory(world, host, now)
        assert host.ticket_cache_time is not None
        return CachedAccount(
            name=host.name,
            allowed_to_delegate_to=host.ticket_cache[host.name],
            user_account_control=host.ticket_cache_uac.get(host.name, 0),
            read_at=host.ticket_cache_time,
        )


def purge_tickets(world: World, host: Host) -> None:
    """`klist purge -li 0x3e7`: the machine account's tickets are gone, the next use reads the directory."""
    with world.lock:
        host.ticket_cache.clear()
        host.ticket_cache_transition.clear()
        host.ticket_cache_uac.clear()
        host.ticket_cache_time = None


def delegation_problem(world: World, source: Host, destination: Host, *, needs_cifs: bool) -> str | None:
    """Why the source cannot delegate to the destination for this move, or None when it can.

    The text is the lab's own explanation (for logs and the control API); on the wire the failure is the
    0x8009030E record, which does not say why.
    """
    view = cached_account(world, source)
    if view.not_delegated:
        # The lab's directory holds only computer accounts; "sensitive and cannot be delegated" on the
        # source's account stands for an identity that may not be delegated (hyperv-facts: such accounts
        # "block delegation"), so the migration fails like any missing delegation.
        return f"{source.name}'s account is marked sensitive and cannot be delegated (NOT_DELEGATED)"
    if view.unconstrained:
        # "Trust this computer for delegation to any service": forbidden by snlm's policy, but it works.
        return None
    missing = [
        f"{service}/{destination.name}"
        for service in (MIGRATION_SERVICE, *((CIFS_SERVICE,) if needs_cifs else ()))
        if not view.may_delegate_to(service, destination)
    ]
    if missing:
        return f"{source.name} may not delegate to {', '.join(missing)} (as of its tickets at t={view.read_at:.0f}s)"
    if source.os.is_2016_or_later and not view.protocol_transition:
        # Windows Server 2016+ needs "use any authentication protocol"; "Kerberos only" fails with 0x8009030E.
        return f"{source.name} runs Windows Server {source.os.value} and its delegation is 'Kerberos only'"
    return None
