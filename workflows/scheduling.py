"""The order a campaign's moves start in, and a forecast of when the campaign ends.

Pure and deterministic: the Campaign workflow (workflows/campaign.py) imports it, so it uses the standard library
and the contract only, reads no clock, draws randomness only from `random.Random(seed)` and iterates nothing in an
order Python does not fix.

The model (its own, with its own parameters in `TransferModel`; not the lab's physics):
- a move holds one migration slot on both of its hosts from its start to its end (set-up, the bytes, the
  switch-over); a host runs at most `HostProfile.slots` moves at once, moves out and in together;
- a host's migration adapter is full duplex: `link_bits_per_second` out and as much in;
- one move is one stream, which reaches only `stream_cap_fraction` of the slower of its two links: its disks go as
  files over SMB (a shared-nothing move requires SMB 3 on both hosts), which fills a link; its memory goes over the
  live-migration TCP connection, which reaches only `memory_stream_fraction` of it, compressed when the hosts'
  performance option is Compression (`transfer_model` gives the model of each option). Memory is carried as the
  disk-stream bytes that take the same time alone, so a move is one stream at one cap throughout;
- rates are the max-min fair share of the links (progressive filling): a move that is held back by one end leaves
  the rest of the other end to the moves beside it, as TCP streams do; recomputed whenever a transfer starts or
  ends, over the hosts those transfers connect;
- a move sends its disks, then its memory in pre-copy passes (each pass again what the guest dirtied during the one
  before), then what is left in the blackout: memory * (1 + d + ... + d^passes) with d the dirty rate over the
  move's rate alone. A move's bytes are fixed when it starts (at the rate it has alone, so a move slowed by its
  neighbours is forecast a little short of its dirtied pages).

The schedulers (`Scheduler`), as `next_moves` applies them each time a move ends or a wave opens:
- `planner`, snlm's: bottleneck first, longest first. A host's remaining work (moves pending or running) is the
  least time its slots and links need for it (`_duplex_seconds`: the lower bound's terms, plus the fact that one
  move out beside one in each get a full stream where two moves out share one link), or its longest move if that
  is longer; a move is as urgent as the busier of its two hosts (the move is that host's). Moves start in order of
  (priority, urgency, the rate the move would get beside the moves running on its hosts, its alone-time, plan
  order), first-fit: every move both of whose hosts have a free slot is considered, so no slot on the busiest
  host stays idle while one of its moves could use it, and the busiest hosts choose first, so a freed slot on
  their partners goes to their moves before a less loaded host's move takes it. Among a host's moves, the one whose
  direction is free on both ends goes first (two moves out of one host share its link, so a move out beside a move
  in gets more done), then the longest; but a pair whose busier host is already moving gives its shortest move (of
  the same priority) instead, so that small moves, mostly set-up and switch-over, run beside the long transfers
  rather than all at the end with the links idle between them. Holding a partner's last slot empty for the busiest
  host's next move was measured too: it lengthened campaigns (the held slot idles while the busiest host is full),
  so the planner never holds a slot.
  That order is rule 0 (`PLANNER_RULES`, "busiest host"). Greedy orders each have plans they handle badly, and the
  forecast can tell which: `simulate` runs the planner with every rule and keeps the one whose campaign ends first
  (the first rule unless another ends 2 % sooner), and the campaign decides with the rule its forecast chose. Rule 1
  ("both hosts") ranks a move by the sum of its two hosts' remaining work instead of the busier one's: on rolling
  rebalances where several hosts are nearly as loaded as the busiest, serving a pair of two loaded hosts first keeps
  both going (one seeded 8-host plan: 1.31 -> 1.10 of the lower bound). Rule 2 ("longest first") puts a move's
  alone-time before the rate it would get.
  Priority is an operator's wish and comes first: a higher-priority move starts before any lower one that competes
  for the same slot, but a lower-priority move still takes a slot that no higher-priority move can use right now
  (its other host is full), so priority never leaves a slot idle.
- `fifo-source`, Forklift's rule: plan order, a move starts while its source host has a free slot (the moves
  running that touch the source, either way, count); the destination is not considered. The slot book
  (MigrationSlots) then holds a move whose hosts are full: `simulate` models that wait as the slot book's queue
  (served in order, with its bypass limit), holding nothing while it waits, so such a move starts later; its
  forecast `chosen` is when the rule picked it. Such a move counts as running for the rule, as it does for the
  campaign, on both of its hosts.
- `fifo`: plan order, a move starts when both its hosts have a free slot; moves that cannot start are skipped.
- `random`: `random.Random(seed * 1_000_003 + round_)` shuffles the pending moves, then first-fit as `fifo`.
  `simulate` draws the same process one pick at a time (the first startable move of a fresh shuffle is a uniform
  pick among the startable ones), from `random.Random(seed)`, instead of shuffling every pending move at every
  decision: the same odds, not the same draws.

Host names compare case-insensitively; a host missing from `hosts` has HostProfile's defaults.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from workflows.contracts import SLOT_BYPASS_LIMIT, CampaignMove, HostProfile, MigrationPerformance, Scheduler

__all__ = [
    "DEFAULT_MODEL",
    "PLANNER_RULES",
    "UNCALIBRATED_MODEL",
    "Bound",
    "Forecast",
    "HostForecast",
    "MoveForecast",
    "Schedule",
    "TransferModel",
    "lower_bound",
    "move_bytes",
    "move_seconds_alone",
    "next_moves",
    "simulate",
    "transfer_model",
    "with_setup",
]

# The planner's orders (see the module's docstring), by number: a campaign's forecast names the one it decides with.
PLANNER_RULES = ("busiest host", "both hosts", "longest first")
# Another rule than the first is taken only when its forecast ends this much sooner: the model is not the hosts, and
# below that the better rule is as likely the model's noise (choosing on any difference, 20 seeded rebalances with
# the lab's constants ended at 1.091 of their bound, median, instead of 1.082 with the first rule alone; with the
# margin at 1.082, and the worst of 20 small ones at 1.194 instead of 1.309).
_RULE_MARGIN = 0.02

_BITS_PER_BYTE = 8.0
_MICROS = 1_000_000
# Two rates this close are one: recomputing the shares must not reschedule every transfer over rounding noise.
_RATE_EPSILON = 1e-12


@dataclass(frozen=True)
class TransferModel:
    """The forecast's model of one move (see the module's docstring).

    `stream_cap_fraction`: the part of the slower link one move's stream reaches (its disks; a single TCP stream does
    not fill a 10 Gb/s adapter, 0.6 to 0.8 is what hosts show, where SMB 3 with multichannel fills it).
    `memory_stream_fraction`: the same for its memory (None: the same as the disks). `setup_seconds`: from the start
    to the first byte (connection, compatibility checks, the planned VM); `switchover_seconds`: from the last byte to
    the end (the VM resumes on the destination, the source cleans up). `max_precopy_passes`: memory passes before the
    blackout (the first sends all memory). `memory_compression`: memory bytes per wire byte (about 2 when the hosts'
    performance option is Compression; disks are never compressed).
    """

    stream_cap_fraction: float = 0.7
    setup_seconds: float = 4.0
    switchover_seconds: float = 2.0
    max_precopy_passes: int = 5
    memory_compression: float = 1.0
    memory_stream_fraction: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.stream_cap_fraction <= 1:
            raise ValueError(f"stream_cap_fraction must be in (0, 1], not {self.stream_cap_fraction}")
        if self.memory_stream_fraction is not None and not 0 < self.memory_stream_fraction <= 1:
            raise ValueError(f"memory_stream_fraction must be in (0, 1], not {self.memory_stream_fraction}")
        if not (self.setup_seconds >= 0 and self.switchover_seconds >= 0):
            raise ValueError("setup_seconds and switchover_seconds must be 0 or more")
        if self.max_precopy_passes < 1:
            raise ValueError(f"max_precopy_passes must be 1 or more, not {self.max_precopy_passes}")
        if not self.memory_compression > 0:
            raise ValueError(f"memory_compression must be more than 0, not {self.memory_compression}")

    @property
    def memory_speed(self) -> float:
        """Memory bytes moved per byte of the disks' stream in the same time: its own stream's share over the
        disks', times the compression."""
        share = self.memory_stream_fraction if self.memory_stream_fraction is not None else self.stream_cap_fraction
        return share / self.stream_cap_fraction * self.memory_compression


# One live-migration TCP connection's share of its adapter, SMB 3's (multichannel fills it), and the memory bytes per
# wire byte of the Compression option (it trades the hosts' spare CPU for wire bytes; guests' memory compresses about
# 2:1). The forecast's own figures, not read from any host: the benchmark `makespan` measures them against the lab.
_TCP_STREAM_FRACTION = 0.7
_SMB_STREAM_FRACTION = 1.0
_COMPRESSION_RATIO = 2.0


def transfer_model(performance: MigrationPerformance) -> TransferModel:
    """The model of a move between hosts whose live-migration performance option is `performance` (the one a
    campaign's policy sets on both): the disks over SMB; the memory over TCP (compressed under Compression), or over
    SMB too under SMB."""
    if performance == MigrationPerformance.SMB:
        return TransferModel(stream_cap_fraction=_SMB_STREAM_FRACTION, memory_stream_fraction=_SMB_STREAM_FRACTION)
    return TransferModel(
        stream_cap_fraction=_SMB_STREAM_FRACTION,
        memory_stream_fraction=_TCP_STREAM_FRACTION,
        memory_compression=_COMPRESSION_RATIO if performance == MigrationPerformance.COMPRESSION else 1.0,
    )


def with_setup(model: TransferModel, setup_seconds: float | None) -> TransferModel:
    """`model` with the set-up a plan gives (seconds from a move's start to its first byte, as the estate shows
    them), or as it is for None. The set-up weighs in every decision: where it is most of a small move, a planner
    that counts too little of it runs the small moves beside the long transfers too late (on one seeded rolling
    rebalance with 14 s per move more than the model's 4, 1.395 of the lower bound deciding with 4 s, 1.166 with 18 s;
    the median over 20 seeds 1.106 and 1.110)."""
    return model if setup_seconds is None else replace(model, setup_seconds=setup_seconds)


# The default is Hyper-V's default option (and a policy's): Compression.
DEFAULT_MODEL = transfer_model(MigrationPerformance.COMPRESSION)
# What campaigns decided with before the model knew the performance option: every byte at one TCP stream's cap,
# memory uncompressed. Their histories replay with it.
UNCALIBRATED_MODEL = TransferModel()


def _stream_cap(source: HostProfile, destination: HostProfile, model: TransferModel) -> float:
    """Bytes per second one move reaches alone."""
    slower = min(source.link_bits_per_second, destination.link_bits_per_second) / _BITS_PER_BYTE
    return max(0.0, model.stream_cap_fraction * slower)


def move_bytes(
    move: CampaignMove, model: TransferModel = DEFAULT_MODEL, *, rate_bytes_per_second: float | None = None
) -> float:
    """The bytes of the move's stream: its disks, then its memory in pre-copy passes and the blackout, counted as
    the disks' stream's bytes that take as long (`TransferModel.memory_speed`; with one cap and no compression, the
    bytes on the wire).

    The dirty ratio is the guest's dirty rate over the rate memory moves at (`rate_bytes_per_second`, the stream's
    rate, times memory_speed); without a rate, a stream alone on a default (10 Gb/s) link.
    """
    rate = rate_bytes_per_second
    if rate is None:
        rate = model.stream_cap_fraction * HostProfile("").link_bits_per_second / _BITS_PER_BYTE
    disks = float(max(0, move.disk_bytes))
    memory = float(max(0, move.memory_bytes))
    if memory == 0:
        return disks
    speed = model.memory_speed
    memory_rate = rate * speed
    # A guest that dirties memory faster than it moves never converges: each pass resends all of it.
    ratio = min(1.0, max(0.0, move.dirty_bytes_per_second) / memory_rate) if memory_rate > 0 else 1.0
    sent = sum(ratio**k for k in range(model.max_precopy_passes + 1))
    # In the disks' stream's bytes: what takes as long at its cap as the memory takes at its own.
    return disks + memory * sent / speed


def move_seconds_alone(
    move: CampaignMove, source: HostProfile, destination: HostProfile, model: TransferModel = DEFAULT_MODEL
) -> float:
    """How long the move takes with nothing else on its hosts: set-up, its bytes at one stream's cap, switch-over."""
    cap = _stream_cap(source, destination, model)
    wire = move_bytes(move, model, rate_bytes_per_second=cap)
    if wire > 0 and cap <= 0:
        return math.inf
    return model.setup_seconds + (wire / cap if wire > 0 else 0.0) + model.switchover_seconds


def _streams_below_link(slots: int, share: float) -> tuple[float, int]:
    """A stream's share of the link (at most all of it), and how many streams fit in the link side by side."""
    share = min(1.0, share) if share > 0 else 1.0
    return share, min(slots, math.floor(1 / share))


def _streams_for(rate: float, slots: int, share: float, linear: int) -> float:
    """Slots a host must keep transferring, on average, to move `rate` (a share of its link) in one direction:
    streams add up at `share` each until the link is full (the step that fills it counts whole)."""
    if rate <= 0:
        return 0.0
    if rate <= linear * share:
        return rate / share
    if linear >= slots or rate > 1:
        return math.inf
    return linear + (rate - linear * share) / (1 - linear * share)


# Pure and asked the same question again and again: a trial decision (`after`) and the real one after it ask a host's
# load for the same moves, and the bisection below is most of a decision's time (a campaign's replay repeats them).
@functools.lru_cache(maxsize=8192)
def _duplex_seconds(out_seconds: float, in_seconds: float, overhead: float, slots: int, share: float) -> float:
    """The shortest time a host with `slots` slots moves `out_seconds` and `in_seconds` of its link's worth of bytes
    each way and spends `overhead` slot-seconds in set-ups and switch-overs (slots that move nothing then).

    One stream reaches `share` of the link, so one move out beside one in moves 2 * share of the link's worth per
    second where two moves out move only 1: a host that sends more than it receives cannot fill its slots with
    full streams. Averaged over the campaign (any mix of streams per direction can be arranged moment by moment
    within the slots), the time T is feasible when the streams each way need, plus the overhead, fit:
    streams(out / T) + streams(in / T) + overhead / T <= slots; the least such T, by bisection (it is monotone).
    """
    if slots < 1:
        return math.inf
    share, linear = _streams_below_link(slots, share)

    def fits(t: float) -> bool:
        need = _streams_for(out_seconds / t, slots, share, linear) + _streams_for(in_seconds / t, slots, share, linear)
        return need + overhead / t <= slots

    low = max(out_seconds, in_seconds, overhead / slots)
    high = (out_seconds + in_seconds) / share + overhead
    if high <= 0:
        return 0.0
    if low > 0 and fits(low):
        return low
    for _ in range(64):
        middle = (low + high) / 2
        if middle <= low or middle >= high:
            break
        if fits(middle):
            high = middle
        else:
            low = middle
    return high


# -- moves and hosts as columns ---------------------------------------------------------------------------------
class _World:
    """Moves and hosts by integer index, each move's estimates computed once. Bytes are whole bytes and alone-times
    whole microseconds, so every sum over them is exact and a load computed from scratch equals one kept up to date
    move by move (the planner's ties then break the same way in `next_moves` and in `simulate`)."""

    def __init__(self, moves: Sequence[CampaignMove], profiles: Mapping[str, HostProfile], model: TransferModel):
        self.model = model
        self._profiles = {name.casefold(): profile for name, profile in sorted(profiles.items())}
        self._index: dict[str, int] = {}
        self.names: list[str] = []
        self.profiles: list[HostProfile] = []
        self.slots: list[int] = []
        self.link: list[float] = []
        self.moves = moves
        self.src: list[int] = []
        self.dst: list[int] = []
        self.prio: list[int] = []
        self.bytes: list[int] = []
        self.alone: list[float] = []
        self.alone_us: list[int] = []
        self.cap: list[float] = []
        for move in moves:
            s = self.host(move.source)
            d = self.host(move.destination)
            cap = _stream_cap(self.profiles[s], self.profiles[d], model)
            wire = round(move_bytes(move, model, rate_bytes_per_second=cap))
            alone = model.setup_seconds + model.switchover_seconds + (wire / cap if wire else 0.0)
            self.src.append(s)
            self.dst.append(d)
            self.prio.append(move.priority)
            self.bytes.append(wire)
            self.alone.append(alone)
            self.alone_us.append(round(alone * _MICROS))
            self.cap.append(cap)

    def host(self, name: str) -> int:
        key = name.casefold()
        index = self._index.get(key)
        if index is None:
            index = len(self.names)
            self._index[key] = index
            profile = self._profiles.get(key) or HostProfile(name)
            if not profile.link_bits_per_second > 0 or math.isinf(profile.link_bits_per_second):
                raise ValueError(f"host {name}: link_bits_per_second must be a positive number")
            self.names.append(name)
            self.profiles.append(profile)
            self.slots.append(profile.slots)
            self.link.append(profile.link_bits_per_second / _BITS_PER_BYTE)
        return index

    def hosts_of(self, i: int) -> tuple[int, ...]:
        s, d = self.src[i], self.dst[i]
        return (s,) if s == d else (s, d)


# -- the schedulers ---------------------------------------------------------------------------------------------
class _Chooser:
    """One scheduler's state over a campaign: the pending moves, the running ones, and `choose`, which picks the
    moves to start now and counts them as running. `next_moves` builds one from scratch for every decision;
    `simulate` keeps one up to date, so both take the same decisions."""

    def __init__(self, world: _World) -> None:
        self.w = world
        self.used = [0] * len(world.names)
        # While `after` tries a decision: each move started, with the position it was taken from, to put it back.
        self._trail: list[tuple[int, int]] | None = None

    def add_pending(self, ids: Iterable[int]) -> None:
        raise NotImplementedError

    def add_running(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._run(i)

    def finished(self, i: int) -> None:
        self._unrun(i)

    def choose(self) -> list[int]:
        raise NotImplementedError

    def after(self, i: int) -> list[int]:
        """The moves `choose` would start were the running move `i` to end now; the state is left as it was, so
        the decisions that follow are those of a chooser never asked."""
        self.finished(i)
        self._trail = []
        try:
            chosen = self.choose()
        finally:
            trail, self._trail = self._trail, None
            for j, position in reversed(trail):
                self._unstart(j, position)
            self._resume(i)
        return chosen

    def drop(self, i: int) -> None:
        """Forget the pending move `i` (it ended without being chosen: a move prepared ahead that failed or found
        its VM moved already)."""
        raise NotImplementedError

    def _run(self, i: int) -> None:
        for h in self.w.hosts_of(i):
            self.used[h] += 1

    def _unrun(self, i: int) -> None:
        for h in self.w.hosts_of(i):
            self.used[h] -= 1

    def _resume(self, i: int) -> None:
        """Undo `finished(i)`."""
        self._run(i)

    def _unstart(self, i: int, position: int) -> None:
        """Undo the start of `i`, which `choose` took from `position` of its list."""
        raise NotImplementedError

    def _started(self, i: int, position: int) -> None:
        if self._trail is not None:
            self._trail.append((i, position))

    def _free(self, h: int) -> bool:
        return self.used[h] < self.w.slots[h]


class _PairChooser(_Chooser):
    """Pending moves grouped by (source, destination): within a pair the order is fixed (`_rank`), so a decision
    looks only at the head of each pair whose two hosts both have a free slot."""

    def __init__(self, world: _World) -> None:
        super().__init__(world)
        # Each pair's moves, best last (list.pop takes the head).
        self.pairs: dict[tuple[int, int], list[int]] = {}
        self.partners: list[dict[int, None]] = [{} for _ in world.names]

    def _rank(self, i: int) -> tuple[int, ...]:
        """Smaller goes first."""
        return (i,)

    def add_pending(self, ids: Iterable[int]) -> None:
        touched: dict[tuple[int, int], None] = {}
        for i in ids:
            pair = (self.w.src[i], self.w.dst[i])
            self.pairs.setdefault(pair, []).append(i)
            self.partners[pair[0]][pair[1]] = None
            touched[pair] = None
        for pair in touched:
            self.pairs[pair].sort(key=self._rank, reverse=True)

    def _candidates(self) -> list[tuple[int, int]]:
        free = [h for h in range(len(self.used)) if self._free(h)]
        free_set = set(free)
        found: list[tuple[int, int]] = []
        for s in free:
            partners = self.partners[s]
            if len(partners) <= len(free):
                found.extend((s, d) for d in partners if d in free_set)
            else:
                found.extend((s, d) for d in free if d in partners)
        return found

    def _take(self, pair: tuple[int, int]) -> int:
        return self._start_at(pair, -1)

    def _start_at(self, pair: tuple[int, int], position: int) -> int:
        """Start the pair's move at `position` of its list (-1: the head)."""
        moves = self.pairs[pair]
        if position < 0:
            position += len(moves)
        i = moves.pop(position)
        if not moves:
            del self.pairs[pair]
            del self.partners[pair[0]][pair[1]]
        self._run(i)
        self._started(i, position)
        return i

    def _unstart(self, i: int, position: int) -> None:
        pair = (self.w.src[i], self.w.dst[i])
        # A pair emptied by the start comes back at the end of its partners: `_candidates` order then differs, which
        # the heaps of `choose` (keys unique by move) do not see.
        self.pairs.setdefault(pair, []).insert(position, i)
        self.partners[pair[0]][pair[1]] = None
        self._unrun(i)

    def drop(self, i: int) -> None:
        pair = (self.w.src[i], self.w.dst[i])
        moves = self.pairs[pair]
        moves.remove(i)
        if not moves:
            del self.pairs[pair]
            del self.partners[pair[0]][pair[1]]

    def _pair_free(self, pair: tuple[int, int]) -> bool:
        return self._free(pair[0]) and self._free(pair[1])


class _FifoChooser(_PairChooser):
    def choose(self) -> list[int]:
        heap = [(self.pairs[pair][-1], pair) for pair in self._candidates()]
        heapq.heapify(heap)
        chosen: list[int] = []
        while heap:
            _, pair = heapq.heappop(heap)
            if not self._pair_free(pair):
                continue
            chosen.append(self._take(pair))
            if pair in self.pairs and self._pair_free(pair):
                heapq.heappush(heap, (self.pairs[pair][-1], pair))
        return chosen


class _PlannerChooser(_PairChooser):
    """Bottleneck first, longest first (see the module's docstring)."""

    def __init__(self, world: _World, rule: int = 0) -> None:
        super().__init__(world)
        if not 0 <= rule < len(PLANNER_RULES):
            raise ValueError(f"unknown planner rule {rule} (0 to {len(PLANNER_RULES) - 1})")
        self.rule = rule
        n = len(world.names)
        # Over the moves pending or running: bytes out and in, alone-times, and the alone-times by size (a heap
        # that forgets moves that ended when they come to its top).
        self.out_bytes = [0] * n
        self.in_bytes = [0] * n
        self.count = [0] * n
        self.longest: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        self.ended: set[int] = set()
        self.sending = [0] * n
        self.receiving = [0] * n
        self._loads: dict[int, float] = {}

    def _rank(self, i: int) -> tuple[int, ...]:
        # Within a pair (same hosts, so same urgency and rate): priority, then the longest, then plan order.
        return (-self.w.prio[i], -self.w.alone_us[i], i)

    def _count(self, i: int, sign: int) -> None:
        w = self.w
        s, d = w.src[i], w.dst[i]
        self.out_bytes[s] += sign * w.bytes[i]
        self.in_bytes[d] += sign * w.bytes[i]
        for h in w.hosts_of(i):
            self.count[h] += sign
            if sign > 0:
                heapq.heappush(self.longest[h], (-w.alone_us[i], i))
            self._loads.pop(h, None)

    def add_pending(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        for i in ids:
            self._count(i, 1)
        super().add_pending(ids)

    def add_running(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._count(i, 1)
            self._run(i)

    def _run(self, i: int) -> None:
        super()._run(i)
        self.sending[self.w.src[i]] += 1
        self.receiving[self.w.dst[i]] += 1

    def _unrun(self, i: int) -> None:
        super()._unrun(i)
        self.sending[self.w.src[i]] -= 1
        self.receiving[self.w.dst[i]] -= 1

    def finished(self, i: int) -> None:
        super().finished(i)
        self.ended.add(i)
        self._count(i, -1)

    def after(self, i: int) -> list[int]:
        # The trial is undone to the last move, so the loads known before it hold again.
        loads = dict(self._loads)
        chosen = super().after(i)
        self._loads = loads
        return chosen

    def _resume(self, i: int) -> None:
        # `load` may have dropped the move's entry from `longest` while it counted as ended: `_count` pushes it
        # again (an entry left there twice is harmless: both go when the move ends).
        self.ended.discard(i)
        self._count(i, 1)
        self._run(i)

    def drop(self, i: int) -> None:
        super().drop(i)
        self.ended.add(i)
        self._count(i, -1)

    def load(self, h: int) -> float:
        """The host's remaining work in seconds: `_duplex_seconds` over its moves pending or running, or the longest
        of them."""
        cached = self._loads.get(h)
        if cached is not None:
            return cached
        longest = self.longest[h]
        while longest and longest[0][1] in self.ended:
            heapq.heappop(longest)
        w = self.w
        link = w.link[h]
        overhead = self.count[h] * (w.model.setup_seconds + w.model.switchover_seconds)
        duplex = _duplex_seconds(
            self.out_bytes[h] / link, self.in_bytes[h] / link, overhead, max(1, w.slots[h]), w.model.stream_cap_fraction
        )
        value = max(duplex, -longest[0][0] / _MICROS if longest else 0.0)
        self._loads[h] = value
        return value

    def _key(self, pair: tuple[int, int]) -> tuple[float, ...]:
        w = self.w
        s, d = pair
        i = self.pairs[pair][-1]
        rate = min(w.cap[i], w.link[s] / (self.sending[s] + 1), w.link[d] / (self.receiving[d] + 1))
        if self.rule == 1:
            return (-w.prio[i], -(self.load(s) + self.load(d)), -rate, -w.alone_us[i], i)
        urgency = max(self.load(s), self.load(d))
        if self.rule == 2:
            return (-w.prio[i], -urgency, -w.alone_us[i], -rate, i)
        return (-w.prio[i], -urgency, -rate, -w.alone_us[i], i)

    def _take(self, pair: tuple[int, int]) -> int:
        s, d = pair
        busier = s if self.load(s) >= self.load(d) else d
        moves = self.pairs[pair]
        if self.used[busier] == 0 or len(moves) == 1:
            return super()._take(pair)
        # The busier host is already moving: its shortest move of the head's priority (best last, so the first of
        # that priority from the front). Its set-up and switch-over then overlap the longer transfer beside it,
        # where longest-first alone would leave the small moves, mostly set-up, for the end, their slots holding
        # idle links (measured on evacuations: 1.016 -> 1.000 of the bound; rolling rebalances 1.088 -> 1.085).
        w = self.w
        priority = w.prio[moves[-1]]
        position = next(k for k, i in enumerate(moves) if w.prio[i] == priority)
        # Equally short moves (the same size, the same pair) keep plan order: the list holds them latest first, so
        # the last of them is the earliest planned. An operator who lists ten like VMs sees them start in that order.
        shortest = w.alone_us[moves[position]]
        while (
            position + 1 < len(moves)
            and w.prio[moves[position + 1]] == priority
            and w.alone_us[moves[position + 1]] == shortest
        ):
            position += 1
        return self._start_at(pair, position)

    def choose(self) -> list[int]:
        heap = [(self._key(pair), pair) for pair in self._candidates()]
        heapq.heapify(heap)
        chosen: list[int] = []
        while heap:
            key, pair = heapq.heappop(heap)
            if not self._pair_free(pair):
                continue
            # A key only grows worse as moves start (the rate a move would get falls): a stale key is pushed back.
            current = self._key(pair)
            if current != key:
                heapq.heappush(heap, (current, pair))
                continue
            chosen.append(self._take(pair))
            if pair in self.pairs and self._pair_free(pair):
                heapq.heappush(heap, (self._key(pair), pair))
        return chosen


class _SourceCapChooser(_Chooser):
    """Forklift's rule: plan order, a move starts while its source has a free slot; its destination is not looked
    at (so `used` may pass a destination's slots: the slot book makes those moves wait)."""

    def __init__(self, world: _World) -> None:
        super().__init__(world)
        self.queues: list[list[int]] = [[] for _ in world.names]

    def add_pending(self, ids: Iterable[int]) -> None:
        touched: dict[int, None] = {}
        for i in ids:
            self.queues[self.w.src[i]].append(i)
            touched[self.w.src[i]] = None
        for s in touched:
            self.queues[s].sort(reverse=True)

    def choose(self) -> list[int]:
        heap = [(queue[-1], s) for s, queue in enumerate(self.queues) if queue and self._free(s)]
        heapq.heapify(heap)
        chosen: list[int] = []
        while heap:
            _, s = heapq.heappop(heap)
            # A move chosen from another source may have filled this one (as its destination).
            if not self._free(s):
                continue
            i = self.queues[s].pop()
            self._run(i)
            self._started(i, len(self.queues[s]))
            chosen.append(i)
            if self.queues[s] and self._free(s):
                heapq.heappush(heap, (self.queues[s][-1], s))
        return chosen

    def _unstart(self, i: int, position: int) -> None:
        self.queues[self.w.src[i]].insert(position, i)
        self._unrun(i)

    def drop(self, i: int) -> None:
        self.queues[self.w.src[i]].remove(i)


class _RandomChooser(_PairChooser):
    """The random baseline, one uniform pick among the startable moves at a time (see the module's docstring)."""

    def __init__(self, world: _World, rng: random.Random) -> None:
        super().__init__(world)
        self.rng = rng

    def add_pending(self, ids: Iterable[int]) -> None:
        for i in ids:
            pair = (self.w.src[i], self.w.dst[i])
            self.pairs.setdefault(pair, []).append(i)
            self.partners[pair[0]][pair[1]] = None

    def choose(self) -> list[int]:
        candidates = self._candidates()
        chosen: list[int] = []
        while candidates:
            pick = self.rng.randrange(sum(len(self.pairs[p]) for p in candidates))
            for pair in candidates:
                moves = self.pairs[pair]
                if pick < len(moves):
                    break
                pick -= len(moves)
            # Order within a pair does not matter to a uniform pick: swap the pick to the end and take the end.
            moves[pick], moves[-1] = moves[-1], moves[pick]
            chosen.append(self._take(pair))
            candidates = [p for p in candidates if p in self.pairs and self._pair_free(p)]
        return chosen


def _chooser(scheduler: Scheduler, world: _World, rng: random.Random, rule: int = 0) -> _Chooser:
    if scheduler == Scheduler.PLANNER:
        return _PlannerChooser(world, rule)
    if scheduler == Scheduler.FIFO_SOURCE_CAP:
        return _SourceCapChooser(world)
    if scheduler == Scheduler.FIFO:
        return _FifoChooser(world)
    if scheduler == Scheduler.RANDOM:
        return _RandomChooser(world, rng)
    raise ValueError(f"unknown scheduler {scheduler!r}")


def _round_rng(seed: int, round_: int) -> random.Random:
    return random.Random(seed * 1_000_003 + round_)


class Schedule:
    """One campaign's decisions over a wave, kept up to date move by move: the moves `next_moves` would choose from
    scratch at each decision, at the cost of the moves that changed since the last one.

    Built from the wave's pending moves (plan order) and the campaign's running ones; `choose` starts moves and
    counts them as running, `ended` gives a running move's slots back. A decision from scratch rebuilds every
    pending move's estimates and the hosts' loads: about 50 ms at 10,000 moves, repeated after every move's end and
    again by every replay of the run. Ties break on plan order here as there (positions in `pending` keep plan
    order), so both take the same decisions, move for move.
    """

    def __init__(
        self,
        pending: Sequence[CampaignMove],
        running: Sequence[CampaignMove],
        hosts: Mapping[str, HostProfile],
        *,
        scheduler: Scheduler,
        model: TransferModel = DEFAULT_MODEL,
        seed: int = 0,
        rule: int = 0,
    ) -> None:
        self._moves = [*pending, *running]
        self._world = _World(self._moves, hosts, model)
        self._position = {move.key: i for i, move in enumerate(self._moves)}
        self._seed = seed
        first_running = len(pending)
        self._pending: dict[int, None] = dict.fromkeys(range(first_running))
        self._running: set[int] = set(range(first_running, len(self._moves)))
        # The random baseline shuffles the pending moves afresh at every decision (`_random_first_fit`).
        self._chooser: _Chooser | None = None
        if scheduler != Scheduler.RANDOM:
            self._chooser = _chooser(scheduler, self._world, _round_rng(seed, 0), rule)
            self._chooser.add_running(sorted(self._running))
            self._chooser.add_pending(self._pending)

    @property
    def pending(self) -> int:
        """How many of the wave's moves are still to start."""
        return len(self._pending)

    def running(self) -> set[str]:
        """The keys of the moves this schedule counts as running."""
        return {self._moves[i].key for i in self._running}

    def choose(self, round_: int = 0) -> list[CampaignMove]:
        """The moves to start now, in the order to start them (counted as running from now on). `round_` numbers
        the campaign's decisions, as for `next_moves`."""
        if self._chooser is None:
            ids = _random_first_fit(self._world, list(self._pending), self._running, _round_rng(self._seed, round_))
        else:
            ids = self._chooser.choose()
        for i in ids:
            del self._pending[i]
            self._running.add(i)
        return [self._moves[i] for i in ids]

    def ended(self, key: str) -> None:
        """The running move `key` ended: its slots are free for the next decision."""
        i = self._position[key]
        self._running.remove(i)
        if self._chooser is not None:
            self._chooser.finished(i)

    def after(self, key: str, round_: int = 0) -> list[CampaignMove]:
        """The moves `choose(round_)` would start were the running move `key` to end now, with nothing changed:
        what a campaign prepares ahead, so that the move is ready the moment the slots come."""
        i = self._position[key]
        if i not in self._running:
            raise KeyError(f"{key} is not running")
        if self._chooser is None:
            others = [r for r in self._running if r != i]
            ids = _random_first_fit(self._world, list(self._pending), others, _round_rng(self._seed, round_))
        else:
            ids = self._chooser.after(i)
        return [self._moves[j] for j in ids]

    def drop(self, key: str) -> None:
        """The pending move `key` ended before it was chosen (a move prepared ahead that failed, or whose VM had
        moved already): it is no longer a candidate."""
        i = self._position[key]
        del self._pending[i]
        if self._chooser is not None:
            self._chooser.drop(i)

    def is_running(self, key: str) -> bool:
        i = self._position.get(key)
        return i is not None and i in self._running

    def is_pending(self, key: str) -> bool:
        i = self._position.get(key)
        return i is not None and i in self._pending


def next_moves(
    pending: Sequence[CampaignMove],
    running: Sequence[CampaignMove],
    hosts: Mapping[str, HostProfile],
    *,
    scheduler: Scheduler,
    model: TransferModel = DEFAULT_MODEL,
    seed: int = 0,
    round_: int = 0,
    rule: int = 0,
) -> list[CampaignMove]:
    """The moves of `pending` (in plan order) to start now, in the order to start them.

    For every host, the moves of `running` and the chosen ones that touch it stay within its slots; for
    `fifo-source`, the moves that leave from it (the rule ignores destinations: the slot book makes a move wait for
    a full destination). `round_` numbers the decisions of a campaign (the random baseline's shuffle).
    """
    return Schedule(pending, running, hosts, scheduler=scheduler, model=model, seed=seed, rule=rule).choose(round_)


def _random_first_fit(world: _World, pending: list[int], running: Iterable[int], rng: random.Random) -> list[int]:
    """`pending` (plan order) shuffled, then first-fit."""
    used = [0] * len(world.names)
    for i in running:
        for h in world.hosts_of(i):
            used[h] += 1
    order = list(pending)
    rng.shuffle(order)
    chosen: list[int] = []
    for i in order:
        hosts = world.hosts_of(i)
        if all(used[h] < world.slots[h] for h in hosts):
            for h in hosts:
                used[h] += 1
            chosen.append(i)
    return chosen


# -- the forecast -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MoveForecast:
    """When a move starts (takes its slots) and ends, in seconds after the forecast's start; `chosen` is when the
    scheduler picked it (earlier than `start` only for `fifo-source`, whose moves may wait for their hosts)."""

    start: float
    end: float
    chosen: float


@dataclass(frozen=True)
class HostForecast:
    """A host over the campaign: when its last move ends, slot-seconds held (summed over its slots), bytes."""

    last_end: float
    busy_slot_seconds: float
    bytes_out: float
    bytes_in: float


@dataclass(frozen=True)
class Forecast:
    """The simulated campaign: its makespan, each move by key, each host by name (as first spelt), each wave's
    end (by wave index)."""

    makespan_seconds: float
    moves: Mapping[str, MoveForecast]
    hosts: Mapping[str, HostForecast]
    waves: tuple[float, ...]
    rule: int = 0  # the planner's rule it simulated (PLANNER_RULES); 0 for the other schedulers


_SETUP_END, _TRANSFER_END, _MOVE_END = 0, 1, 2


class _Simulation:
    """Events in a heap (a move's set-up ends, its transfer ends, it ends); after each instant's events the rates of
    the transfers connected to a change are recomputed and the scheduler decides. The first wave's moves are the
    chooser's pending moves when it starts; each later wave's join when the one before has ended."""

    def __init__(
        self, world: _World, chooser: _Chooser, waves: list[list[int]], source_cap: bool, rule: int = 0
    ) -> None:
        self.w = world
        self.chooser = chooser
        self.rule = rule
        self.waves = waves
        self.source_cap = source_cap
        n, h = len(world.src), len(world.names)
        self.start = [math.nan] * n
        self.end = [math.nan] * n
        self.chosen_at = [math.nan] * n
        self.occupied = [0] * h
        self.out_flows: list[dict[int, None]] = [{} for _ in range(h)]
        self.in_flows: list[dict[int, None]] = [{} for _ in range(h)]
        self.remaining = [0.0] * n
        self.rate = [0.0] * n
        self.since = [0.0] * n
        self.version = [0] * n
        self.events: list[tuple[float, int, int, int, int]] = []
        self.sequence = 0
        self.waiting: list[int] = []
        self.bypassed: dict[int, int] = {}
        self.wave = 0
        self.left = [len(members) for members in waves]
        self.wave_of = [0] * n
        for index, members in enumerate(waves):
            for i in members:
                self.wave_of[i] = index
        self.wave_ends = [0.0] * len(waves)

    def _push(self, when: float, kind: int, i: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (when, self.sequence, kind, i, self.version[i]))

    def run(self) -> None:
        now = 0.0
        self._open_waves(now)
        self._decide(now)
        while self.events:
            now = self.events[0][0]
            dirty: dict[int, None] = {}
            while self.events and self.events[0][0] <= now:
                _, _, kind, i, version = heapq.heappop(self.events)
                if kind == _SETUP_END:
                    self._begin_transfer(i, now, dirty)
                elif kind == _TRANSFER_END:
                    if version == self.version[i]:
                        self._end_transfer(i, now, dirty)
                else:
                    self._end_move(i, now)
            if dirty:
                self._share(now, dirty)
            self._open_waves(now)
            self._decide(now)
        if any(math.isnan(t) for t in self.end):
            raise RuntimeError("the simulation ended with moves that never started")

    def _open_waves(self, now: float) -> None:
        while self.wave < len(self.waves) and self.left[self.wave] == 0:
            self.wave_ends[self.wave] = now
            self.wave += 1
            if self.wave < len(self.waves):
                self.chooser.add_pending(self.waves[self.wave])

    def _decide(self, now: float) -> None:
        chosen = self.chooser.choose()
        for i in chosen:
            self.chosen_at[i] = now
        if not self.source_cap:
            for i in chosen:
                self._start(i, now)
            return
        self.waiting.extend(chosen)
        self._grant(now)

    def _grant(self, now: float) -> None:
        """The slot book's rule (workflows/slot_book.py): in queue order, a request takes both its hosts' slots when
        both are free, and one passed over SLOT_BYPASS_LIMIT times keeps its hosts from later requests."""
        w = self.w
        reserved: set[int] = set()
        remaining: list[int] = []
        for i in self.waiting:
            hosts = w.hosts_of(i)
            if all(h not in reserved and self.occupied[h] < w.slots[h] for h in hosts):
                self._start(i, now)
                for earlier in remaining:
                    if set(w.hosts_of(earlier)) & set(hosts):
                        self.bypassed[earlier] = self.bypassed.get(earlier, 0) + 1
                        if self.bypassed[earlier] >= SLOT_BYPASS_LIMIT:
                            reserved.update(w.hosts_of(earlier))
                continue
            remaining.append(i)
            if self.bypassed.get(i, 0) >= SLOT_BYPASS_LIMIT:
                reserved.update(hosts)
        self.waiting = remaining

    def _start(self, i: int, now: float) -> None:
        self.start[i] = now
        for h in self.w.hosts_of(i):
            self.occupied[h] += 1
        self._push(now + self.w.model.setup_seconds, _SETUP_END, i)

    def _begin_transfer(self, i: int, now: float, dirty: dict[int, None]) -> None:
        if self.w.bytes[i] <= 0:
            self._push(now + self.w.model.switchover_seconds, _MOVE_END, i)
            return
        s, d = self.w.src[i], self.w.dst[i]
        self.out_flows[s][i] = None
        self.in_flows[d][i] = None
        self.remaining[i] = float(self.w.bytes[i])
        self.rate[i] = 0.0
        self.since[i] = now
        dirty[s] = None
        dirty[d] = None

    def _end_transfer(self, i: int, now: float, dirty: dict[int, None]) -> None:
        s, d = self.w.src[i], self.w.dst[i]
        del self.out_flows[s][i]
        del self.in_flows[d][i]
        self.remaining[i] = 0.0
        self.rate[i] = 0.0
        self.version[i] += 1
        dirty[s] = None
        dirty[d] = None
        self._push(now + self.w.model.switchover_seconds, _MOVE_END, i)

    def _end_move(self, i: int, now: float) -> None:
        self.end[i] = now
        for h in self.w.hosts_of(i):
            self.occupied[h] -= 1
        self.chooser.finished(i)
        self.left[self.wave_of[i]] -= 1

    def _share(self, now: float, dirty: dict[int, None]) -> None:
        """Max-min fair rates for the transfers connected (through shared hosts) to the hosts that changed."""
        w = self.w
        seen: set[int] = set()
        for start in dirty:
            if start in seen:
                continue
            seen.add(start)
            stack = [start]
            flows: dict[int, None] = {}
            while stack:
                h = stack.pop()
                for f in self.out_flows[h]:
                    if f not in flows:
                        flows[f] = None
                        if w.dst[f] not in seen:
                            seen.add(w.dst[f])
                            stack.append(w.dst[f])
                for f in self.in_flows[h]:
                    if f not in flows:
                        flows[f] = None
                        if w.src[f] not in seen:
                            seen.add(w.src[f])
                            stack.append(w.src[f])
            if flows:
                self._apply(now, _max_min(w, list(flows)))

    def _apply(self, now: float, rates: dict[int, float]) -> None:
        for f, rate in rates.items():
            old = self.rate[f]
            if abs(rate - old) <= _RATE_EPSILON * max(rate, old):
                continue
            self.remaining[f] = max(0.0, self.remaining[f] - old * (now - self.since[f]))
            self.since[f] = now
            self.rate[f] = rate
            self.version[f] += 1
            if rate > 0:
                self._push(now + self.remaining[f] / rate, _TRANSFER_END, f)

    def forecast(self) -> Forecast:
        w = self.w
        last = [0.0] * len(w.names)
        busy = [0.0] * len(w.names)
        out = [0.0] * len(w.names)
        into = [0.0] * len(w.names)
        moves: dict[str, MoveForecast] = {}
        for i, move in enumerate(w.moves):
            moves[move.key] = MoveForecast(self.start[i], self.end[i], self.chosen_at[i])
            for h in w.hosts_of(i):
                last[h] = max(last[h], self.end[i])
                busy[h] += self.end[i] - self.start[i]
            out[w.src[i]] += w.bytes[i]
            into[w.dst[i]] += w.bytes[i]
        hosts = {
            w.names[h]: HostForecast(last[h], busy[h], out[h], into[h])
            for h in sorted(range(len(w.names)), key=lambda h: w.names[h].casefold())
        }
        makespan = max(self.end, default=0.0)
        return Forecast(makespan, moves, hosts, tuple(self.wave_ends), self.rule)


def _max_min(w: _World, flows: list[int]) -> dict[int, float]:
    """Progressive filling: every unfrozen transfer's rate rises together until a link it uses is full (the
    transfers on it freeze there) or it reaches its stream's cap."""
    remaining: dict[int, float] = {}
    count: dict[int, int] = {}
    for f in flows:
        for r, h in ((2 * w.src[f], w.src[f]), (2 * w.dst[f] + 1, w.dst[f])):
            remaining[r] = w.link[h]
            count[r] = count.get(r, 0) + 1
    rates: dict[int, float] = {}
    unfrozen = flows
    while unfrozen:
        level = min(w.cap[f] for f in unfrozen)
        for r, c in count.items():
            if c > 0:
                level = min(level, remaining[r] / c)
        full = {r for r, c in count.items() if c > 0 and remaining[r] / c <= level * (1 + _RATE_EPSILON)}
        still: list[int] = []
        for f in unfrozen:
            out, into = 2 * w.src[f], 2 * w.dst[f] + 1
            if w.cap[f] <= level * (1 + _RATE_EPSILON) or out in full or into in full:
                rate = min(level, w.cap[f])
                rates[f] = rate
                remaining[out] -= rate
                remaining[into] -= rate
                count[out] -= 1
                count[into] -= 1
            else:
                still.append(f)
        unfrozen = still
    return rates


def _wave_members(moves: Sequence[CampaignMove], waves: Sequence[Sequence[str]] | None) -> list[list[int]]:
    index: dict[str, int] = {}
    for i, move in enumerate(moves):
        if move.key in index:
            raise ValueError(f"move {move.key} appears twice")
        index[move.key] = i
    if waves is None:
        return [list(range(len(moves)))]
    members: list[list[int]] = []
    placed: set[int] = set()
    for number, keys in enumerate(waves):
        wave: list[int] = []
        for key in keys:
            position = index.get(key)
            if position is None:
                raise ValueError(f"wave {number}: no move {key}")
            if position in placed:
                raise ValueError(f"wave {number}: move {key} is named twice")
            placed.add(position)
            wave.append(position)
        # A wave's moves keep plan order, whatever order the wave names them in.
        members.append(sorted(wave))
    missing = [moves[i].key for i in range(len(moves)) if i not in placed]
    if missing:
        raise ValueError(f"moves in no wave: {', '.join(missing[:5])}")
    return members


def simulate(
    moves: Sequence[CampaignMove],
    hosts: Mapping[str, HostProfile],
    *,
    scheduler: Scheduler,
    model: TransferModel = DEFAULT_MODEL,
    seed: int = 0,
    waves: Sequence[Sequence[str]] | None = None,
    rule: int | None = None,
    timing: TransferModel | None = None,
) -> Forecast:
    """The campaign of `moves` (plan order) as `scheduler` runs it, from time 0 with every host idle.

    `waves` are lists of move keys (every move in one): wave i+1 opens when every move of wave i has ended; without
    waves all moves are one wave. Decisions are taken when the campaign opens, a wave opens or moves end. The
    planner runs with `rule`, or, when it is None, with each of its rules: the forecast is the first rule's unless
    another ends `_RULE_MARGIN` sooner (then the soonest), and its `rule` is the one a campaign of this plan decides
    with. The scheduler decides with `model`'s estimates (the planner's rule too, when it is None); the moves take
    the times `timing` gives them (by default `model`'s): a campaign that decides with one model on hosts that behave
    as another, which is what a benchmark needs to judge the decisions apart from the forecast.
    """
    world = _World(moves, hosts, model)
    timed = world if timing is None else _World(moves, hosts, timing)
    for i in range(len(moves)):
        for h in world.hosts_of(i):
            if world.slots[h] < 1:
                raise ValueError(f"host {world.names[h]} has no migration slots: move {moves[i].key} cannot start")
    members = _wave_members(moves, waves)
    if scheduler != Scheduler.PLANNER:
        return _simulate(timed, _chooser(scheduler, world, random.Random(seed)), members, scheduler, 0)
    if rule is None and timed is not world:
        # The campaign's rule: the one `model`'s own forecast chooses, however the moves then turn out to take.
        rule = simulate(moves, hosts, scheduler=scheduler, model=model, seed=seed, waves=waves).rule
    if rule is not None:
        return _simulate(timed, _PlannerChooser(world, rule), members, scheduler, rule)
    first, *others = [
        _simulate(timed, _PlannerChooser(world, r), members, scheduler, r) for r in range(len(PLANNER_RULES))
    ]
    challenger = min(others, key=lambda forecast: (forecast.makespan_seconds, forecast.rule))
    return challenger if challenger.makespan_seconds * (1 + _RULE_MARGIN) < first.makespan_seconds else first


def _simulate(world: _World, chooser: _Chooser, members: list[list[int]], scheduler: Scheduler, rule: int) -> Forecast:
    if members:
        chooser.add_pending(members[0])
    simulation = _Simulation(world, chooser, members, scheduler == Scheduler.FIFO_SOURCE_CAP, rule)
    simulation.run()
    return simulation.forecast()


# -- the lower bound --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """No schedule ends sooner than `seconds`; `binding` names the term that says so (e.g. "host HV03 bytes in"),
    `terms` every term by name."""

    seconds: float
    binding: str
    terms: Mapping[str, float]


def lower_bound(
    moves: Sequence[CampaignMove], hosts: Mapping[str, HostProfile], model: TransferModel = DEFAULT_MODEL
) -> Bound:
    """The largest of: the longest move alone; per host, its bytes out over its link and its bytes in over its link
    (each after one set-up and before one switch-over: no byte moves in a move's first seconds or last ones; and at
    the rate its slots' streams reach when that is less than the link), its moves' alone-times over its slots
    ("slots"), and the time its slots need for the bytes both ways and the set-ups and switch-overs ("slots and
    links", `_duplex_seconds`: two moves one way share a link where one each way do not, so a host that sends much
    more than it receives needs longer than its alone-times over its slots). Waves and windows only add to it."""
    world = _World(moves, hosts, model)
    n = len(world.names)
    out = [0] * n
    into = [0] * n
    # A move from a host to itself holds one slot for both directions: the slots term counts its bytes once.
    into_others = [0] * n
    out_cap = [0.0] * n
    in_cap = [0.0] * n
    slot_seconds: list[list[float]] = [[] for _ in range(n)]
    count = [0] * n
    terms: dict[str, float] = {}
    longest, longest_name = 0.0, "no moves"
    for i, move in enumerate(moves):
        s, d = world.src[i], world.dst[i]
        out[s] += world.bytes[i]
        into[d] += world.bytes[i]
        if s != d:
            into_others[d] += world.bytes[i]
        out_cap[s] = max(out_cap[s], world.cap[i])
        in_cap[d] = max(in_cap[d], world.cap[i])
        for h in world.hosts_of(i):
            slot_seconds[h].append(world.alone[i])
            count[h] += 1
        alone = world.alone[i]
        if alone > longest:
            longest, longest_name = alone, f"move {move.key} alone"
    terms[longest_name] = longest
    overhead = model.setup_seconds + model.switchover_seconds
    for h in sorted(range(n), key=lambda h: world.names[h].casefold()):
        name = world.names[h]
        slots = max(1, world.slots[h])
        for label, total, cap in (("bytes out", out[h], out_cap[h]), ("bytes in", into[h], in_cap[h])):
            if total:
                terms[f"host {name} {label}"] = overhead + total / min(world.link[h], slots * cap)
        if slot_seconds[h]:
            terms[f"host {name} slots"] = math.fsum(slot_seconds[h]) / slots
            share = max(out_cap[h], in_cap[h]) / world.link[h]
            terms[f"host {name} slots and links"] = _duplex_seconds(
                out[h] / world.link[h], into_others[h] / world.link[h], count[h] * overhead, slots, share
            )
    binding = max(terms, key=lambda name: terms[name])
    return Bound(terms[binding], binding, terms)
