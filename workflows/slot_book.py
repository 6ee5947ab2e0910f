"""The book of migration slots: which move holds which hosts' slots, who waits, and who is granted next.

Pure and deterministic (no Temporal, no clock: the caller passes `now`), so the grant rule is tested on its own,
property by property, and the MigrationSlots entity (workflows/migration_slots.py) only carries it through signals,
updates and continue-as-new.

The grant rule, for a move that needs both its hosts:
- a request is granted the slots of all its hosts in one step, or nothing: no slot is ever held while its holder
  waits for another host (DESIGN.md, the move step);
- no host ever has more holders than its capacity (its own MaximumVirtualMachineMigrations, or less by policy);
- waiting requests are served in arrival order, and a later request may take a free slot on a host an earlier one
  needs (the earlier one cannot use it yet: its other host is full), but only `bypass_limit` times: after that the
  earlier request's hosts are reserved for it, so it is served as soon as its hosts free up and never starves;
- requests naming one host behave exactly as a FIFO queue per host.
Host names compare case-insensitively (Windows names); each host keeps the spelling it was first seen with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from workflows.contracts import (
    HYPERV_DEFAULT_MAX_MIGRATIONS,
    SLOT_BYPASS_LIMIT,
    HostCapacity,
    HostLimit,
    HostUse,
    MigrationSlotsStatus,
    PairGrant,
    PairHolder,
    PairRequest,
    PairWaiter,
)

__all__ = ["Released", "SlotBook", "pair_hosts"]


def pair_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """The distinct hosts of a request, in a fixed order (case-insensitive; the first spelling kept)."""
    seen: dict[str, str] = {}
    for host in hosts:
        seen.setdefault(host.casefold(), host)
    return tuple(sorted(seen.values(), key=str.casefold))


@dataclass(frozen=True)
class Released:
    """What a release did: freed a held pair, left the queue, or nothing (released already, or expired)."""

    released: bool = False
    dequeued: bool = False


class SlotBook:
    """Hosts' capacities, the holders and the FIFO of waiters; `settle` grants what the rule allows."""

    def __init__(
        self,
        hosts: Iterable[HostCapacity] = (),
        holders: Iterable[PairHolder] = (),
        waiters: Iterable[PairWaiter] = (),
        *,
        peaks: Iterable[HostLimit] = (),
        bypass_limit: int = SLOT_BYPASS_LIMIT,
    ) -> None:
        if bypass_limit < 0:
            raise ValueError(f"bypass_limit must be 0 or more, not {bypass_limit}")
        self.bypass_limit = bypass_limit
        self._hosts: dict[str, HostCapacity] = {h.host.casefold(): h for h in hosts}
        self._holders: dict[str, PairHolder] = {h.holder_id: h for h in holders}
        self._waiters: list[PairWaiter] = [w for w in waiters if w.holder_id not in self._holders]
        self._in_use: dict[str, int] = {}
        for holder in self._holders.values():
            for host in holder.hosts:
                self._known(host, 0)
                self._in_use[host.casefold()] = self._in_use.get(host.casefold(), 0) + 1
        for waiter in self._waiters:
            for host in waiter.hosts:
                self._known(host, 0)
        self._peak: dict[str, int] = {p.host.casefold(): p.limit for p in peaks}
        for key, used in self._in_use.items():
            self._peak[key] = max(self._peak.get(key, 0), used)

    # -- reading -------------------------------------------------------------------------------------------------
    @property
    def holders(self) -> tuple[PairHolder, ...]:
        return tuple(self._holders.values())

    @property
    def waiters(self) -> tuple[PairWaiter, ...]:
        return tuple(self._waiters)

    @property
    def hosts(self) -> tuple[HostCapacity, ...]:
        return tuple(self._hosts.values())

    def capacity(self, host: str) -> int:
        entry = self._hosts.get(host.casefold())
        return entry.effective if entry is not None else HYPERV_DEFAULT_MAX_MIGRATIONS

    def in_use(self, host: str) -> int:
        return self._in_use.get(host.casefold(), 0)

    def holder(self, holder_id: str) -> PairHolder | None:
        return self._holders.get(holder_id)

    def is_waiting(self, holder_id: str) -> bool:
        return any(w.holder_id == holder_id for w in self._waiters)

    def answer(self, holder_id: str) -> PairGrant:
        holder = self._holders.get(holder_id)
        if holder is not None:
            return PairGrant(holder_id, holder.hosts, granted=True, expires_at=holder.expires_at)
        for position, waiter in enumerate(self._waiters, 1):
            if waiter.holder_id == holder_id:
                return PairGrant(holder_id, waiter.hosts, granted=False, position=position)
        return PairGrant(holder_id, (), granted=False)

    def peaks(self) -> tuple[HostLimit, ...]:
        return tuple(HostLimit(self._hosts[key].host, peak) for key, peak in self._peak.items() if key in self._hosts)

    def status(self) -> MigrationSlotsStatus:
        waiting: dict[str, int] = {}
        for waiter in self._waiters:
            for host in waiter.hosts:
                waiting[host.casefold()] = waiting.get(host.casefold(), 0) + 1
        uses = tuple(
            HostUse(
                host=entry.host,
                host_limit=entry.host_limit,
                capacity=entry.effective,
                in_use=self._in_use.get(key, 0),
                peak_in_use=self._peak.get(key, 0),
                waiting=waiting.get(key, 0),
            )
            for key, entry in sorted(self._hosts.items())
        )
        return MigrationSlotsStatus(hosts=uses, holders=self.holders, waiters=self.waiters)

    def next_expiry(self) -> float | None:
        return min((h.expires_at for h in self._holders.values()), default=None)

    # -- changing ------------------------------------------------------------------------------------------------
    def request(self, request: PairRequest, now: float) -> bool:
        """Queue a request (idempotent by holder id: a holder keeps its grant, a waiter its place); True when new.

        The hosts' limits it carries are recorded first, so the request is judged against them.
        """
        for limit in request.host_limits:
            if limit.limit > 0:
                self.set_limit(limit.host, limit.limit)
        if request.holder_id in self._holders or self.is_waiting(request.holder_id):
            return False
        hosts = pair_hosts(self._known(host, 0).host for host in request.hosts)
        self._waiters.append(PairWaiter(request.holder_id, hosts, request.lease_seconds, request.reply_to, since=now))
        return True

    def release(self, holder_id: str) -> Released:
        holder = self._holders.pop(holder_id, None)
        if holder is not None:
            for host in holder.hosts:
                key = host.casefold()
                self._in_use[key] = max(0, self._in_use.get(key, 0) - 1)
        dequeued = self.is_waiting(holder_id)
        if dequeued:
            self._waiters = [w for w in self._waiters if w.holder_id != holder_id]
        return Released(released=holder is not None, dequeued=dequeued)

    def renew(self, holder_id: str, now: float, lease_seconds: float = 0.0) -> PairHolder | None:
        """Extend a held lease from now (0 keeps its length); None when the holder holds nothing."""
        holder = self._holders.get(holder_id)
        if holder is None:
            return None
        lease = lease_seconds or holder.lease_seconds
        renewed = replace(holder, lease_seconds=lease, expires_at=now + lease)
        self._holders[holder_id] = renewed
        return renewed

    def expired(self, now: float) -> tuple[PairHolder, ...]:
        """Holders whose lease has run out (the entity reclaims them, or first asks a workflow holder if it runs)."""
        return tuple(h for h in self._holders.values() if h.expires_at <= now)

    def set_limit(self, host: str, limit: int) -> None:
        """The host's own limit as newly read; the policy capacity (if any) stays, capped by the limit."""
        entry = self._known(host, limit)
        if entry.host_limit != limit:
            self._hosts[host.casefold()] = replace(entry, host_limit=limit)

    def set_capacity(self, host: str, capacity: int, host_limit: int = 0) -> HostCapacity:
        """Set a host's capacity (0: its limit); lowering never revokes a held slot, new grants wait instead."""
        entry = self._known(host, host_limit)
        limit = host_limit or entry.host_limit
        if not 0 <= capacity <= limit:
            raise ValueError(
                f"capacity {capacity} of {entry.host} must be between 1 and the host's limit {limit} (0: the limit)"
            )
        updated = replace(entry, host_limit=limit, capacity=capacity)
        self._hosts[host.casefold()] = updated
        return updated

    def settle(self, now: float) -> tuple[PairHolder, ...]:
        """Grant every waiting request the rule allows, in queue order; the new holders, in grant order."""
        granted: list[PairHolder] = []
        reserved: set[str] = set()  # hosts kept for an earlier request that was passed over enough
        remaining: list[PairWaiter] = []
        for waiter in self._waiters:
            keys = [host.casefold() for host in waiter.hosts]
            if all(key not in reserved and self._free(key) > 0 for key in keys):
                holder = PairHolder(
                    waiter.holder_id,
                    waiter.hosts,
                    waiter.lease_seconds,
                    expires_at=now + waiter.lease_seconds,
                    reply_to=waiter.reply_to,
                    granted_at=now,
                )
                self._holders[holder.holder_id] = holder
                for key in keys:
                    self._in_use[key] = self._in_use.get(key, 0) + 1
                    self._peak[key] = max(self._peak.get(key, 0), self._in_use[key])
                granted.append(holder)
                # Every earlier request still waiting that needs one of these hosts has been passed over once more;
                # one passed over enough keeps its hosts from the rest of this pass too.
                for index, earlier in enumerate(remaining):
                    earlier_keys = {h.casefold() for h in earlier.hosts}
                    if earlier_keys & set(keys):
                        remaining[index] = replace(earlier, bypassed=earlier.bypassed + 1)
                        if earlier.bypassed + 1 >= self.bypass_limit:
                            reserved.update(earlier_keys)
                continue
            remaining.append(waiter)
            if waiter.bypassed >= self.bypass_limit:
                reserved.update(keys)
        self._waiters = remaining
        return tuple(granted)

    # -- internals -----------------------------------------------------------------------------------------------
    def _known(self, host: str, limit: int) -> HostCapacity:
        key = host.casefold()
        entry = self._hosts.get(key)
        if entry is None:
            entry = HostCapacity(host, limit or HYPERV_DEFAULT_MAX_MIGRATIONS)
            self._hosts[key] = entry
        return entry

    def _free(self, key: str) -> int:
        entry = self._hosts[key]
        return entry.effective - self._in_use.get(key, 0)
