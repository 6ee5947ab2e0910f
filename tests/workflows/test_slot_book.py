"""The grant rule of migration slots, without Temporal: examples, then properties over random arrivals.

The properties are checked after every step of seeded random runs (requests naming one or two hosts, releases,
renewals, capacity changes): a host never gets a grant beyond its capacity, a grant always covers every host of its
request (nothing is held while waiting), no waiting request could be granted and is not (work conserving, except
for hosts reserved for a request passed over too often), nobody is passed over more than the bypass limit, one-host
requests are served first come first served, and when the holders go the queue drains.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from workflows.contracts import HostCapacity, HostLimit, PairHolder, PairRequest
from workflows.slot_book import SlotBook, pair_hosts


def _request(holder: str, *hosts: str, lease: float = 300.0) -> PairRequest:
    return PairRequest(holder, tuple(hosts), lease_seconds=lease, reply_to=f"wf-{holder}")


def _book(**capacity: int) -> SlotBook:
    return SlotBook([HostCapacity(host, limit) for host, limit in capacity.items()])


def test_a_pair_is_granted_both_slots_or_none() -> None:
    book = _book(A=1, B=1)
    book.request(_request("x", "A"), 0)
    assert [h.holder_id for h in book.settle(0)] == ["x"]
    book.request(_request("m", "A", "B"), 1)
    assert book.settle(1) == ()
    # B is free, but the move waits for A holding nothing at all.
    assert book.in_use("B") == 0
    assert book.answer("m").granted is False
    book.release("x")
    granted = book.settle(2)
    assert [(h.holder_id, h.hosts) for h in granted] == [("m", ("A", "B"))]
    assert (book.in_use("A"), book.in_use("B")) == (1, 1)


def test_a_later_pair_may_use_a_slot_an_earlier_one_cannot_use_yet() -> None:
    book = _book(A=1, B=1, C=1)
    book.request(_request("x", "A"), 0)
    book.settle(0)
    book.request(_request("first", "A", "B"), 1)
    book.request(_request("later", "B", "C"), 2)
    assert [h.holder_id for h in book.settle(2)] == ["later"]
    assert book.waiters[0].bypassed == 1


def test_a_request_passed_over_enough_has_its_hosts_reserved() -> None:
    book = SlotBook([HostCapacity(h, 1) for h in "ABC"], bypass_limit=2)
    book.request(_request("x", "A"), 0)
    book.settle(0)
    book.request(_request("first", "A", "B"), 1)
    for n in range(2):
        book.request(_request(f"pass-{n}", "B", "C"), 2 + n)
        assert [h.holder_id for h in book.settle(2 + n)] == [f"pass-{n}"]
        book.release(f"pass-{n}")
    assert book.waiters[0].bypassed == 2
    # From now on B waits for `first`, even though it is free and `third` could use it.
    book.request(_request("third", "B", "C"), 10)
    assert book.settle(10) == ()
    assert book.in_use("B") == 0
    book.release("x")
    assert [h.holder_id for h in book.settle(11)] == ["first"]


def test_one_host_requests_are_first_come_first_served() -> None:
    book = _book(A=2)
    for n in range(5):
        book.request(_request(f"r{n}", "A"), n)
    assert [h.holder_id for h in book.settle(5)] == ["r0", "r1"]
    book.release("r1")
    book.release("r0")
    assert [h.holder_id for h in book.settle(6)] == ["r2", "r3"]
    assert [w.holder_id for w in book.waiters] == ["r4"]


def test_requests_and_releases_are_idempotent_and_hosts_ignore_case() -> None:
    book = _book(HV01=1)
    assert book.request(_request("m", "hv01", "HV02"), 0)
    assert not book.request(_request("m", "HV01", "hv02"), 1)
    assert book.settle(1)[0].hosts == ("HV01", "HV02")  # spelled as first seen
    assert not book.request(_request("m", "HV01", "HV02"), 2)
    assert book.in_use("hv01") == 1
    assert book.release("m").released
    assert book.release("m") == book.release("nobody")
    assert book.in_use("HV01") == 0
    assert pair_hosts(["b", "A", "B"]) == ("A", "b")


def test_capacity_follows_the_limits_moves_read_and_a_lower_one_revokes_nothing() -> None:
    book = SlotBook()
    book.request(PairRequest("m1", ("A", "B"), host_limits=(HostLimit("A", 3), HostLimit("B", 1))), 0)
    book.request(PairRequest("m2", ("A", "C")), 0)
    book.request(PairRequest("m3", ("A", "B")), 0)
    assert [h.holder_id for h in book.settle(0)] == ["m1", "m2"]
    assert (book.capacity("A"), book.capacity("B"), book.capacity("C")) == (3, 1, 2)
    book.set_capacity("A", 1)
    assert book.in_use("A") == 2  # both keep their slots
    book.release("m1")
    assert book.settle(1) == ()  # A is at 1 of 1 with m2
    book.release("m2")
    assert [h.holder_id for h in book.settle(2)] == ["m3"]
    with pytest.raises(ValueError, match="limit"):
        book.set_capacity("A", 4)


def test_leases_renew_and_run_out() -> None:
    book = _book(A=1)
    book.request(_request("m", "A", lease=30), 0)
    book.settle(0)
    assert book.expired(29) == ()
    renewed = book.renew("m", 20)
    assert renewed is not None
    assert renewed.expires_at == 50
    assert [h.holder_id for h in book.expired(50)] == ["m"]
    assert book.renew("nobody", 0) is None
    assert book.next_expiry() == 50


def test_the_book_survives_a_hand_over() -> None:
    """What continue-as-new carries is enough to rebuild the same book."""
    book = _book(A=1, B=2)
    for n, hosts in enumerate([("A", "B"), ("B",), ("A",), ("A", "B")]):
        book.request(_request(f"m{n}", *hosts), n)
    book.settle(4)
    copy = SlotBook(book.hosts, book.holders, book.waiters, peaks=book.peaks(), bypass_limit=book.bypass_limit)
    assert copy.status() == book.status()
    book.release("m0")
    copy.release("m0")
    assert book.settle(5) == copy.settle(5)


# -- properties over random arrivals --------------------------------------------------------------------------
HOSTS = ("H1", "h2", "H3", "H4", "H5", "H6")


def _check(book: SlotBook, capacity_at_grant: dict[str, int], granted_now: tuple[PairHolder, ...]) -> None:
    # Every holder holds every host it asked for, and the counts are exactly the holders'.
    counted: dict[str, int] = defaultdict(int)
    for holder in book.holders:
        for host in holder.hosts:
            counted[host.casefold()] += 1
    for host in HOSTS:
        assert book.in_use(host) == counted[host.casefold()]
    # A grant never takes a host above its capacity at that moment.
    for holder in granted_now:
        for host in holder.hosts:
            assert book.in_use(host) <= capacity_at_grant[host.casefold()]
    # Work conserving: a waiter that is not granted has a full host, or a host reserved for an earlier waiter.
    reserved: set[str] = set()
    for waiter in book.waiters:
        keys = {h.casefold() for h in waiter.hosts}
        blocked = any(book.in_use(h) >= book.capacity(h) for h in waiter.hosts) or bool(keys & reserved)
        assert blocked, f"{waiter} could be granted and was not"
        assert waiter.bypassed <= book.bypass_limit
        if waiter.bypassed >= book.bypass_limit:
            reserved |= keys


@pytest.mark.parametrize("seed", range(40))
def test_random_arrivals_keep_every_property(seed: int) -> None:
    rng = random.Random(seed)
    bypass = rng.choice([0, 1, 2, 4, 8])
    book = SlotBook([HostCapacity(h, rng.randint(1, 3)) for h in HOSTS], bypass_limit=bypass)
    grant_order: list[str] = []
    arrivals: dict[str, tuple[float, tuple[str, ...]]] = {}
    now = 0.0
    for step in range(400):
        now += rng.random()
        action = rng.random()
        if action < 0.5:
            hosts = tuple(rng.sample(HOSTS, rng.choice([1, 2, 2, 2])))
            holder = f"m{step}"
            # Host names as callers spell them: any case.
            spelled = tuple(h.upper() if rng.random() < 0.5 else h.lower() for h in hosts)
            book.request(_request(holder, *spelled), now)
            arrivals[holder] = (now, pair_hosts(hosts))
        elif action < 0.85 and book.holders:
            book.release(rng.choice(book.holders).holder_id)
        elif action < 0.9 and book.waiters:
            book.release(rng.choice(book.waiters).holder_id)  # a cancelled move leaves the queue
        elif action < 0.95:
            host = rng.choice(HOSTS)
            book.set_capacity(host, rng.randint(1, 3), host_limit=3)
        capacity = {h.casefold(): book.capacity(h) for h in HOSTS}
        granted = book.settle(now)
        grant_order.extend(h.holder_id for h in granted)
        _check(book, capacity, granted)

    # One-host requests on the same host were granted in arrival order.
    single: dict[str, list[str]] = defaultdict(list)
    for holder in grant_order:
        _, hosts = arrivals[holder]
        if len(hosts) == 1:
            single[hosts[0].casefold()].append(holder)
    for holders in single.values():
        assert holders == sorted(holders, key=lambda h: arrivals[h][0])

    # Liveness: when every holder goes, everybody waiting is served in the end.
    for _ in range(10_000):
        if not book.waiters and not book.holders:
            break
        if book.holders:
            book.release(book.holders[0].holder_id)
        now += 1
        book.settle(now)
    assert book.waiters == ()
    assert book.holders == ()
