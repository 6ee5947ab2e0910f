"""Seeded campaign scenarios for the campaign benchmarks (`benchmarks/makespan.py`, `benchmarks/scale.py`).

A scenario is hosts (their migration adapter's speed and concurrent migrations), VMs (where each is, where it goes,
its memory, VHD files and how fast the guest writes memory) and the plan order of the moves. From it come the plan
(`Scenario.plan`, a `CampaignPlan` as `starter/plans.py` would read it from `Scenario.plan_yaml`), the planner's
view of the hosts (`Scenario.profiles`) and a lab topology of the same estate (`Scenario.topology`), so the plan
that is forecast is the plan that runs.

Every draw comes from `random.Random("<kind>:<seed>")` (a string seed is hashed the same way by every Python), so a
scenario is the same for the same kind, seed and size on any machine. The estate is what a Hyper-V site holds:
- memory: mostly 4 to 16 GiB, about 3 % "monsters" of 64 to 256 GiB (databases, in-memory caches);
- VHD files: one system disk and, for most VMs, one or two data disks, sizes lognormal (a system disk about
  40 GiB, a data disk about 60 GiB, monsters' data disks about 400 GiB), in quarter GiB;
- dirty rates, as Hyper-V's pre-copy sees them: lognormal around 8 MiB/s for most guests, 100 to 400 MiB/s for the
  monsters; memory travels compressed (the hosts' Compression option, Hyper-V's default and snlm's policy).

The kinds:
- `evacuation`: one host's VMs to several others (maintenance, a failing host). The source's link binds.
- `rolling-rebalance`: VMs between hosts that both send and receive, a few hosts much busier than the rest; the
  plan lists them host by host as an operator writes a plan. Here the order matters: the busiest hosts' moves
  must start early, one out beside one in (two moves out of a host share its link, a move out and a move in each
  have a whole direction).
- `hardware-refresh`: every VM of the old hosts (10 Gbit/s adapters, Hyper-V's default of 2 migrations) to new
  hosts (25 Gbit/s, 4 migrations, as an administrator sets up new hardware), a third of the hosts being new.
- `destination-hotspot`: many sources to one or two destinations, whose incoming links bind.

Pure: nothing here starts a process or talks to Temporal (tests/benchmarks/test_scenarios.py checks it whole).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from benchmarks.estate import estate_topology
from workflows.contracts import (
    CampaignMove,
    CampaignPlan,
    CampaignWave,
    DelegationPolicy,
    HostProfile,
    MigrationPolicy,
    Scheduler,
)

GIB = 2**30
MIB = 2**20

EVACUATION = "evacuation"
ROLLING_REBALANCE = "rolling-rebalance"
HARDWARE_REFRESH = "hardware-refresh"
DESTINATION_HOTSPOT = "destination-hotspot"

# The ranges the benchmarks draw sizes from (`draw_size`), and the small end a quick run takes.
HOSTS_RANGE = (8, 32)
MOVES_RANGE = (100, 1000)
QUICK_HOSTS = 8
QUICK_MOVES = 100

MEMORY_GIB = (4, 4, 6, 8, 8, 8, 12, 16, 16)  # the common sizes, the usual ones more often
MONSTER_MEMORY_GIB = (64, 96, 128, 192, 256)
MONSTER_SHARE = 0.03
OLD_LINK_GBPS = 10.0
NEW_LINK_GBPS = 25.0
DEFAULT_SLOTS = 2  # Hyper-V's MaximumVirtualMachineMigrations out of the box
NEW_HOST_SLOTS = 4
# Every VM's disks live under this folder on its host (the lab's default VirtualMachinePath is D:\Hyper-V).
VM_ROOT = "D:\\Hyper-V"


@dataclass(frozen=True)
class ScenarioHost:
    name: str
    link_gbps: float = OLD_LINK_GBPS
    slots: int = DEFAULT_SLOTS


@dataclass(frozen=True)
class ScenarioVm:
    """A VM that moves: from `source` to `destination`, its memory, VHD file sizes and guest dirty rate."""

    name: str
    source: str
    destination: str
    memory_gib: float
    disks_gib: tuple[float, ...]
    dirty_mib_per_second: int

    @property
    def disk_gib(self) -> float:
        return sum(self.disks_gib)

    def move(self) -> CampaignMove:
        """The move as a plan file states it (the sizes in bytes the way starter/plans.py converts them)."""
        return CampaignMove(
            vm=self.name,
            source=self.source,
            destination=self.destination,
            memory_bytes=round(self.memory_gib * GIB),
            disk_bytes=round(self.disk_gib * GIB),
            dirty_bytes_per_second=float(self.dirty_mib_per_second * MIB),
        )


@dataclass(frozen=True)
class Scenario:
    """One seeded scenario: hosts, and the VMs that move in plan order."""

    kind: str
    seed: int
    hosts: tuple[ScenarioHost, ...]
    vms: tuple[ScenarioVm, ...]
    notes: str = ""
    # Host names by role, for the printed description (e.g. {"source": ("HV001",)}).
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{len(self.hosts)}h-{len(self.vms)}m-s{self.seed}"

    def moves(self) -> list[CampaignMove]:
        return [vm.move() for vm in self.vms]

    def profiles(self) -> dict[str, HostProfile]:
        """What the planner knows of each host, by name folded to lower case (as the campaign keys them)."""
        return {
            h.name.casefold(): HostProfile(h.name, slots=h.slots, link_bits_per_second=h.link_gbps * 1e9)
            for h in self.hosts
        }

    def plan(
        self,
        scheduler: Scheduler = Scheduler.PLANNER,
        *,
        policy: MigrationPolicy | None = None,
        name: str | None = None,
    ) -> CampaignPlan:
        """The campaign of this scenario, one wave, the hosts' profiles given. The policy by default skips
        delegation (the lab's own directory holds it) and keeps everything else at its default."""
        return CampaignPlan(
            name=name or self.name,
            waves=(CampaignWave("wave-1", tuple(self.moves())),),
            policy=policy or MigrationPolicy(delegation=DelegationPolicy.SKIP),
            hosts=tuple(HostProfile(h.name, h.slots, h.link_gbps * 1e9) for h in self.hosts),
            scheduler=scheduler,
        )

    def plan_document(self, scheduler: Scheduler = Scheduler.PLANNER) -> dict[str, Any]:
        """The plan as a plan file holds it (starter/plans.py's YAML format)."""
        return {
            "name": self.name,
            "scheduler": scheduler.value,
            "seed": 0,
            "policy": {"delegation": DelegationPolicy.SKIP.value},
            "hosts": {h.name: {"slots": h.slots, "link_gbps": h.link_gbps} for h in self.hosts},
            "waves": [
                {
                    "name": "wave-1",
                    "moves": [
                        {
                            "vm": vm.name,
                            "source": vm.source,
                            "destination": vm.destination,
                            "memory_gb": vm.memory_gib,
                            "disk_gb": vm.disk_gib,
                            "dirty_mib_per_second": vm.dirty_mib_per_second,
                        }
                        for vm in self.vms
                    ],
                }
            ],
        }

    def plan_yaml(self, scheduler: Scheduler = Scheduler.PLANNER) -> str:
        return yaml.safe_dump(self.plan_document(scheduler), sort_keys=False)

    def topology(self, *, time_scale: float = 60.0) -> dict[str, Any]:
        """A lab topology of this estate (lab/model/topology.py's schema): the synthetic estate's hosts
        (benchmarks/estate.py: 2022, Kerberos live migration on the migration network, delegation between every
        pair) with this scenario's adapters and limits, room for every VM on every host, and the VMs on their
        sources."""
        raw = estate_topology(len(self.hosts), 0, time_scale=time_scale)
        by_name = {h.name: h for h in self.hosts}
        for spec in raw["hosts"]:
            host = by_name[spec["name"]]
            # Room for any destination's share: a hotspot takes hundreds of VMs.
            spec["memory_gb"] = 65536
            spec["volumes"] = [
                {"drive": "C", "label": "System", "size_gb": 200, "free_gb": 120},
                {"drive": "D", "label": "VMs", "size_gb": 4_000_000, "free_gb": 3_900_000},
            ]
            for nic in spec["nics"]:
                if nic["name"] == "Migration":
                    nic["bandwidth_gbps"] = host.link_gbps
            spec["live_migration"]["max_vm_migrations"] = host.slots
        raw["vms"] = [
            {
                "name": vm.name,
                "host": vm.source,
                "memory_gb": vm.memory_gib,
                "dirty_rate_mbps": vm.dirty_mib_per_second,
                "adapters": [{"switch": "Production"}],
                "disks": [
                    {
                        "path": f"{VM_ROOT}\\{vm.name}\\{vm.name}-{number}.vhdx",
                        "size_gb": max(64.0, math.ceil(file_gb * 1.5)),
                        "file_gb": file_gb,
                    }
                    for number, file_gb in enumerate(vm.disks_gib)
                ],
            }
            for vm in self.vms
        ]
        return raw

    def describe(self) -> str:
        memory = sum(vm.memory_gib for vm in self.vms)
        disks = sum(vm.disk_gib for vm in self.vms)
        monsters = sum(1 for vm in self.vms if vm.memory_gib >= MONSTER_MEMORY_GIB[0])
        roles = "; ".join(f"{role}: {', '.join(names)}" for role, names in self.roles.items())
        return (
            f"{self.name}: {len(self.hosts)} hosts, {len(self.vms)} moves, {memory / 1024:.1f} TiB memory "
            f"({monsters} monsters), {disks / 1024:.1f} TiB of VHDs" + (f"; {roles}" if roles else "")
        )


# -- draws ---------------------------------------------------------------------------------------------------------
def _rng(kind: str, seed: int) -> random.Random:
    return random.Random(f"{kind}:{seed}")


def _host_names(count: int) -> list[str]:
    # The synthetic estate's names (benchmarks/estate.py), so the topology lines up.
    return [f"HV{index:03d}" for index in range(1, count + 1)]


def _quarter(value: float) -> float:
    return max(0.25, round(value * 4) / 4)


def _lognormal(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    return min(high, max(low, median * math.exp(rng.gauss(0.0, sigma))))


@dataclass(frozen=True)
class _Shape:
    memory_gib: int
    disks_gib: tuple[float, ...]
    dirty_mib_per_second: int


def _shapes(rng: random.Random, count: int) -> list[_Shape]:
    """`count` VMs' sizes: a few monsters (at least one), the rest common, in a seeded random order."""
    monsters = set(rng.sample(range(count), max(1, round(MONSTER_SHARE * count)))) if count else set()
    shapes: list[_Shape] = []
    for index in range(count):
        monster = index in monsters
        memory = rng.choice(MONSTER_MEMORY_GIB if monster else MEMORY_GIB)
        disks = [_quarter(_lognormal(rng, 40.0, 0.4, 16.0, 200.0))]
        data_disks = rng.choice((1, 2)) if monster else rng.choice((0, 1, 1, 1, 2))
        for _ in range(data_disks):
            median = 400.0 if monster else 60.0
            disks.append(_quarter(_lognormal(rng, median, 0.8, 4.0, 2048.0)))
        dirty = rng.randint(100, 400) if monster else max(1, round(_lognormal(rng, 8.0, 0.9, 1.0, 120.0)))
        shapes.append(_Shape(memory, tuple(disks), dirty))
    return shapes


def _vm(name: str, shape: _Shape, source: str, destination: str) -> ScenarioVm:
    return ScenarioVm(name, source, destination, shape.memory_gib, shape.disks_gib, shape.dirty_mib_per_second)


def _vm_names(rng: random.Random, count: int) -> list[str]:
    """Names as an estate has them (role and number), unrelated to size, so plan order by name is no hint."""
    roles = ("app", "web", "sql", "file", "dc", "mq", "cache", "rds", "build", "mon")
    numbers = rng.sample(range(1, 100_000), count)
    return [f"{rng.choice(roles)}{number:05d}" for number in numbers]


def _weighted(rng: random.Random, names: Sequence[str], weights: Sequence[float], exclude: str = "") -> str:
    pool = [(n, w) for n, w in zip(names, weights, strict=True) if n != exclude]
    return rng.choices([n for n, _ in pool], [w for _, w in pool])[0]


# -- the kinds -----------------------------------------------------------------------------------------------------
def evacuation(seed: int, *, hosts: int = QUICK_HOSTS, moves: int = QUICK_MOVES) -> Scenario:
    """One host's `moves` VMs to several others (3 to 7 of them, never more than there are), spread so that each
    destination takes about as many bytes; plan order by VM name."""
    rng = _rng(EVACUATION, seed)
    names = _host_names(hosts)
    source = names[0]
    targets = rng.sample(names[1:], min(len(names) - 1, rng.randint(3, 7)))
    shapes = _shapes(rng, moves)
    vm_names = _vm_names(rng, moves)
    load = dict.fromkeys(targets, 0.0)
    vms: list[ScenarioVm] = []
    # The largest first onto the least loaded destination, as a placement tool would; listed by name after.
    for index in sorted(range(moves), key=lambda i: -(shapes[i].memory_gib + sum(shapes[i].disks_gib))):
        destination = min(targets, key=lambda t: (load[t], t))
        load[destination] += shapes[index].memory_gib + sum(shapes[index].disks_gib)
        vms.append(_vm(vm_names[index], shapes[index], source, destination))
    vms.sort(key=lambda vm: vm.name)
    return Scenario(
        EVACUATION,
        seed,
        tuple(ScenarioHost(n) for n in names),
        tuple(vms),
        roles={"source": (source,), "destinations": tuple(sorted(targets))},
    )


def rolling_rebalance(seed: int, *, hosts: int = QUICK_HOSTS, moves: int = QUICK_MOVES) -> Scenario:
    """Moves between hosts that all send and receive: each host has a weight (lognormal), one or two "hot" hosts
    three times more, and a move's source and destination are drawn by weight (never the same host), so the hot
    hosts send and receive the most. Plan order: by source host, then VM name (host by host, as written by hand)."""
    rng = _rng(ROLLING_REBALANCE, seed)
    names = _host_names(hosts)
    weights = [_lognormal(rng, 1.0, 0.4, 0.3, 3.0) for _ in names]
    hot = rng.sample(range(hosts), rng.choice((1, 2)))
    for index in hot:
        weights[index] *= 3.0
    shapes = _shapes(rng, moves)
    vm_names = _vm_names(rng, moves)
    vms = []
    for index in range(moves):
        source = _weighted(rng, names, weights)
        destination = _weighted(rng, names, weights, exclude=source)
        vms.append(_vm(vm_names[index], shapes[index], source, destination))
    vms.sort(key=lambda vm: (vm.source, vm.name))
    return Scenario(
        ROLLING_REBALANCE,
        seed,
        tuple(ScenarioHost(n) for n in names),
        tuple(vms),
        roles={"hot": tuple(sorted(names[i] for i in hot))},
    )


def hardware_refresh(seed: int, *, hosts: int = QUICK_HOSTS, moves: int = QUICK_MOVES) -> Scenario:
    """A third of the hosts (at least two) are new, 25 Gbit/s and 4 migrations; every VM of the old ones (10 Gbit/s,
    2 migrations) goes to a new one, the largest first onto the least loaded. Plan order: by source, then name."""
    rng = _rng(HARDWARE_REFRESH, seed)
    names = _host_names(hosts)
    new_count = max(2, round(hosts / 3))
    new = names[-new_count:]
    old = names[:-new_count]
    shapes = _shapes(rng, moves)
    vm_names = _vm_names(rng, moves)
    old_weights = [_lognormal(rng, 1.0, 0.3, 0.5, 2.0) for _ in old]
    sources = [_weighted(rng, old, old_weights) for _ in range(moves)]
    load = dict.fromkeys(new, 0.0)
    vms = []
    for index in sorted(range(moves), key=lambda i: -(shapes[i].memory_gib + sum(shapes[i].disks_gib))):
        destination = min(new, key=lambda t: (load[t], t))
        load[destination] += shapes[index].memory_gib + sum(shapes[index].disks_gib)
        vms.append(_vm(vm_names[index], shapes[index], sources[index], destination))
    vms.sort(key=lambda vm: (vm.source, vm.name))
    host_specs = [ScenarioHost(n) for n in old] + [ScenarioHost(n, NEW_LINK_GBPS, NEW_HOST_SLOTS) for n in new]
    return Scenario(
        HARDWARE_REFRESH,
        seed,
        tuple(host_specs),
        tuple(vms),
        roles={"old (10 Gbit/s)": tuple(old), "new (25 Gbit/s)": tuple(new)},
    )


def destination_hotspot(seed: int, *, hosts: int = QUICK_HOSTS, moves: int = QUICK_MOVES) -> Scenario:
    """Every other host sends VMs (by weight) to one or two destinations, alternately. Plan order: by source, then
    name."""
    rng = _rng(DESTINATION_HOTSPOT, seed)
    names = _host_names(hosts)
    destinations = names[: rng.choice((1, 2))]
    sources = names[len(destinations) :]
    weights = [_lognormal(rng, 1.0, 0.5, 0.3, 3.0) for _ in sources]
    shapes = _shapes(rng, moves)
    vm_names = _vm_names(rng, moves)
    vms = [
        _vm(vm_names[i], shapes[i], _weighted(rng, sources, weights), destinations[i % len(destinations)])
        for i in range(moves)
    ]
    vms.sort(key=lambda vm: (vm.source, vm.name))
    return Scenario(
        DESTINATION_HOTSPOT,
        seed,
        tuple(ScenarioHost(n) for n in names),
        tuple(vms),
        roles={"destinations": tuple(destinations)},
    )


GENERATORS: dict[str, Callable[..., Scenario]] = {
    EVACUATION: evacuation,
    ROLLING_REBALANCE: rolling_rebalance,
    HARDWARE_REFRESH: hardware_refresh,
    DESTINATION_HOTSPOT: destination_hotspot,
}


def draw_size(kind: str, seed: int, *, quick: bool = False, max_moves: int = MOVES_RANGE[1]) -> tuple[int, int]:
    """(hosts, moves) for a scenario: the small end when quick, otherwise hosts uniform in HOSTS_RANGE and moves
    log-uniform in MOVES_RANGE (capped at `max_moves`), from their own seeded draw."""
    if quick:
        return QUICK_HOSTS, QUICK_MOVES
    rng = random.Random(f"size:{kind}:{seed}")
    hosts = rng.randint(*HOSTS_RANGE)
    high = max(MOVES_RANGE[0], min(MOVES_RANGE[1], max_moves))
    moves = round(math.exp(rng.uniform(math.log(MOVES_RANGE[0]), math.log(high))))
    return hosts, moves


def generate(kind: str, seed: int, *, hosts: int | None = None, moves: int | None = None) -> Scenario:
    """The scenario of `kind` and `seed`; sizes default to the quick ones."""
    try:
        generator = GENERATORS[kind]
    except KeyError:
        raise ValueError(f"no scenario {kind!r} (known: {', '.join(GENERATORS)})") from None
    return generator(seed, hosts=hosts or QUICK_HOSTS, moves=moves or QUICK_MOVES)


def tiny_estate(hosts: int, vms: int, *, seed: int = 0) -> Scenario:
    """`vms` tiny VMs (256 MiB of memory, a 0.25 GiB VHDX, a quiet guest) spread round-robin over `hosts`, each
    moving to the next host: a campaign whose moves are near-instant, to measure the engine alone
    (benchmarks/scale.py)."""
    names = _host_names(hosts)
    vm_list = [
        ScenarioVm(f"t{index:05d}", names[index % hosts], names[(index + 1) % hosts], 0.25, (0.25,), 1)
        for index in range(vms)
    ]
    return Scenario("tiny", seed, tuple(ScenarioHost(n) for n in names), tuple(vm_list))
