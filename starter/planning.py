"""Placement for generated plans: which host each VM goes to, from the hosts' surveys (`snlm plan ...`).

Pure: surveys in (workflows/contracts.py `HostSurvey`, as the SurveyHosts workflow reads them), a
`PlacementResult` out, and `write_plan_yaml` to turn it into a plan file (starter/plans.py reads it) that a person
reviews before `snlm campaign start` runs it. Nothing here talks to Temporal or a host.

A VM may go to a host when
- every virtual switch its adapters use exists there (by name, ignoring case, as Compare-VM matches them; a move
  to a host without one fails with Compare-VM 33012);
- the host's memory in use after it stays at or under the host's limit: (1 - headroom) of its memory for an
  evacuation, the threshold for a rebalance. A host's memory in use is its capacity less its free physical memory
  (what it reports, so the parent partition and running VMs count); a VM counts its `memory_bytes` (activities/
  survey.py: MemoryStartup, or more when it runs and dynamic memory grew it);
- its VHD files, with 10 % slack (configuration and runtime files, growth during the move), fit the free space of
  the drive of the host's VirtualMachinePath, where a move with its storage puts them by default.

Largest VMs first (memory, then disk): first-fit decreasing, each VM onto the host that fits it and has the most
memory free after it, so the hosts fill evenly instead of one after the other.

Evacuation moves every VM of the source, running or not: an off or saved VM moves as it is, and counts its memory
on its destination (it needs it when it starts) though it frees none on the source. Rebalance moves only VMs that
hold memory (running or paused): moving an off VM relieves no host. A host over the threshold gives VMs to the
hosts under it: the fewest VMs (one that alone brings it under, the smallest such, else the largest that fits
anywhere, and again), never pushing a receiver over the threshold; a host that cannot be brought under keeps
what could not be placed, each such VM listed with why.

Clustered VMs are placed too, with a note: the saga removes the cluster role before the move and makes it again
on the destination's cluster (policy `ha: restore`), or leaves the VM standalone (`ha: drop`), and asks when the
destination is no cluster node and the plan does not say (README "--ha").

A VM the plan format cannot name is not placed: its name is empty, holds a control character or is longer than a
plan allows (starter/plans.py), or another VM of the same host has the same name (a move is addressed by name and
source; the saga refuses to guess).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml

from starter.plans import _CONTROL, HOST_SLOTS_MAX, VM_NAME_MAX
from workflows.contracts import CAMPAIGN_NAME_MAX, HostSurvey, SurveyedVm, migrate_vm_workflow_id

__all__ = [
    "DISK_SLACK",
    "GIB",
    "HostLoad",
    "PlacedMove",
    "PlacementResult",
    "UnplacedVm",
    "evacuate",
    "holds_memory",
    "moves_document",
    "plan_name",
    "rebalance",
    "write_plan_yaml",
]

GIB = 2**30
# Room a VM's VHD files need beyond their size on the destination's drive.
DISK_SLACK = 0.10
EVACUATE = "evacuate"
REBALANCE = "rebalance"
# Get-VM states in which a VM holds no host memory (VMState names, with their critical variants).
_NOT_HOLDING = frozenset(
    state.casefold() for state in ("Off", "OffCritical", "Saved", "SavedCritical", "FastSaved", "FastSavedCritical")
)
_CLUSTERED_NOTE = (
    "clustered: its cluster role is removed before the move, and made again on the destination's cluster with "
    "policy ha: restore (ha: drop leaves it standalone)"
)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class PlacedMove:
    """One VM placed: where from and to, what it takes there, and why it goes there (for the reviewer)."""

    vm: str
    vm_id: str
    source: str
    destination: str
    memory_bytes: int
    disk_bytes: int
    why: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnplacedVm:
    """A VM that needed a place and found none, and why (per host that was tried)."""

    vm: str
    vm_id: str
    source: str
    memory_bytes: int
    disk_bytes: int
    reason: str


@dataclass(frozen=True)
class HostLoad:
    """A host's memory in use before and after the moves, against its limit (all in bytes).

    `role` is `source` or `target` for an evacuation, `donor` (over the threshold) or `receiver` for a rebalance.
    """

    host: str
    role: str
    memory_bytes: int
    used_before: int
    used_after: int
    limit_bytes: int

    @property
    def before(self) -> float:
        return self.used_before / self.memory_bytes if self.memory_bytes else 0.0

    @property
    def after(self) -> float:
        return self.used_after / self.memory_bytes if self.memory_bytes else 0.0

    @property
    def over(self) -> bool:
        """Still over its limit after the moves."""
        return self.used_after > self.limit_bytes


@dataclass(frozen=True)
class PlacementResult:
    """What a placement decided: the moves in plan order, the VMs it could not place, every host's memory.

    `kind` is `evacuate` or `rebalance`; `limit` the headroom (evacuate) or threshold (rebalance) it applied;
    `notes` what a reviewer should know that belongs to no single move.
    """

    kind: str
    moves: tuple[PlacedMove, ...]
    unplaced: tuple[UnplacedVm, ...]
    hosts: tuple[HostLoad, ...]
    limit: float
    notes: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every VM that needed a place got one, and no donor of a rebalance stays over the threshold."""
        return not self.unplaced and not any(h.over for h in self.hosts if h.role == "donor")


# -- the hosts as placement sees them ---------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f} %"


def _used(host: HostSurvey) -> int:
    return max(0, host.memory_bytes - host.free_memory_bytes)


def _drive(path: str) -> str:
    return PureWindowsPath(path).drive.rstrip(":").upper() if path else ""


def holds_memory(vm: SurveyedVm) -> bool:
    """Whether the VM holds host memory now (running, paused...): only those relieve a host when they leave."""
    return vm.state.casefold() not in _NOT_HOLDING


def _disk_need(vm: SurveyedVm) -> int:
    return math.ceil(vm.disk_bytes * (1 + DISK_SLACK))


@dataclass
class _Room:
    """A host that may take VMs: what it has left as VMs are placed on it."""

    survey: HostSurvey
    limit: int
    limit_text: str
    used: int = 0
    disk_free: int = 0
    drive: str = ""
    switches: frozenset[str] = frozenset()

    @classmethod
    def of(cls, host: HostSurvey, ratio: float, limit_text: str) -> _Room:
        drive = _drive(host.vm_path)
        return cls(
            survey=host,
            # Rounded, not floored: 0.9 x 100 GiB is 90 GiB to the byte, whatever the float says.
            limit=round(ratio * host.memory_bytes),
            limit_text=limit_text,
            used=_used(host),
            disk_free=(host.free_disk_bytes or {}).get(drive, 0),
            drive=drive,
            switches=frozenset(s.casefold() for s in host.switches),
        )

    @property
    def name(self) -> str:
        return self.survey.host

    def free_after(self, vm: SurveyedVm) -> int:
        return self.survey.memory_bytes - self.used - vm.memory_bytes

    def why_not(self, vm: SurveyedVm) -> str:
        """Why `vm` cannot go here ("" when it can)."""
        missing = [s for s in vm.switches if s.casefold() not in self.switches]
        if missing:
            return f"no switch {', '.join(repr(s) for s in missing)}"
        if self.used + vm.memory_bytes > self.limit:
            return (
                f"needs {_gib(vm.memory_bytes)} of memory, {_gib(max(0, self.limit - self.used))} left under its "
                f"{self.limit_text} limit"
            )
        need = _disk_need(vm)
        if need > self.disk_free:
            where = f"{self.drive}:" if self.drive else "its VM path's drive (unknown)"
            return f"needs {_gib(need)} of disk with slack, {_gib(self.disk_free)} free on {where}"
        return ""

    def take(self, vm: SurveyedVm) -> None:
        self.used += vm.memory_bytes
        self.disk_free -= vm.disk_bytes


def _best(vm: SurveyedVm, rooms: Sequence[_Room]) -> _Room | None:
    """The room that fits `vm` with the most memory free after it (ties: by host name), or None."""
    fitting = [room for room in rooms if not room.why_not(vm)]
    return min(fitting, key=lambda room: (-room.free_after(vm), room.name.casefold())) if fitting else None


def _why(vm: SurveyedVm, chosen: _Room, rooms: Sequence[_Room], reason: str = "") -> str:
    """Why `vm` goes to `chosen`, for the reviewer: why it moves at all (a rebalance's donor), the memory left
    there, and which hosts could not take it."""
    why = f"{reason}; " if reason else ""
    why += f"most memory free after it ({_gib(chosen.free_after(vm))})"
    others = [f"{room.name}: {problem}" for room in rooms if room is not chosen and (problem := room.why_not(vm))]
    return why + (f"; not {'; '.join(others)}" if others else "")


def _nowhere(vm: SurveyedVm, rooms: Sequence[_Room]) -> str:
    if not rooms:
        return "no host to place it on"
    return "fits no host: " + "; ".join(f"{room.name}: {room.why_not(vm)}" for room in rooms)


def _largest_first(vms: Sequence[SurveyedVm]) -> list[SurveyedVm]:
    return sorted(vms, key=lambda vm: (-vm.memory_bytes, -vm.disk_bytes, vm.name, vm.vm_id))


def _unplaced(vm: SurveyedVm, source: str, reason: str) -> UnplacedVm:
    return UnplacedVm(vm.name, vm.vm_id, source, vm.memory_bytes, vm.disk_bytes, reason)


def _name_problem(vm: SurveyedVm, namesakes: int) -> str:
    """Why a plan cannot name `vm` ("" when it can): the checks starter/plans.py makes of a VM name."""
    if namesakes > 1:
        return f"{namesakes} VMs on the host share this name: rename all but one (Rename-VM) to move them by plan"
    if not vm.name.strip():
        return "its name is empty or blank: a plan cannot name it"
    if _CONTROL.search(vm.name):
        return "its name holds a control character: a plan cannot name it"
    if len(vm.name) > VM_NAME_MAX:
        return f"its name is longer than {VM_NAME_MAX} characters: a plan cannot name it"
    return ""


def _nameable(host: HostSurvey, vms: Sequence[SurveyedVm]) -> tuple[list[SurveyedVm], list[UnplacedVm]]:
    """Those of `vms` (the host's) a plan can name, and the others as unplaced, with why."""
    keys = Counter(migrate_vm_workflow_id(vm.name, host.host) for vm in host.vms)
    good, bad = [], []
    for vm in vms:
        problem = _name_problem(vm, keys[migrate_vm_workflow_id(vm.name, host.host)])
        if problem:
            bad.append(_unplaced(vm, host.host, problem))
        else:
            good.append(vm)
    return good, bad


def _notes(vm: SurveyedVm, destination: str) -> tuple[str, ...]:
    notes = []
    if vm.clustered:
        notes.append(_CLUSTERED_NOTE)
    if not holds_memory(vm):
        state = vm.state.lower() or "not running"
        notes.append(f"{state}: moves as it is; its memory is counted on {destination} for when it starts")
    return tuple(notes)


def _load(room: _Room, role: str, before: int) -> HostLoad:
    return HostLoad(room.name, role, room.survey.memory_bytes, before, room.used, room.limit)


# -- evacuate ---------------------------------------------------------------------------------------------------
def evacuate(source: HostSurvey, targets: Sequence[HostSurvey], *, headroom: float = 0.1) -> PlacementResult:
    """Place every VM of `source` on `targets` (module docstring), keeping each target's memory in use at or under
    (1 - headroom) of its memory.

    Raises:
        ValueError: headroom outside [0, 1), no target, or the source among the targets.
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be at least 0 and less than 1, not {headroom:g}")
    if not targets:
        raise ValueError("an evacuation needs at least one target host")
    if any(t.host.casefold() == source.host.casefold() for t in targets):
        raise ValueError(f"{source.host} is the host being evacuated: it cannot be a target")
    limit_text = _pct(1 - headroom)
    rooms = [_Room.of(target, 1 - headroom, limit_text) for target in targets]
    before = {room.name: room.used for room in rooms}
    vms, unplaced = _nameable(source, source.vms)
    moves: list[PlacedMove] = []
    freed = 0
    for vm in _largest_first(vms):
        room = _best(vm, rooms)
        if room is None:
            unplaced.append(_unplaced(vm, source.host, _nowhere(vm, rooms)))
            continue
        why = _why(vm, room, rooms)
        room.take(vm)
        freed += vm.memory_bytes if holds_memory(vm) else 0
        moves.append(
            PlacedMove(
                vm.name, vm.vm_id, source.host, room.name, vm.memory_bytes, vm.disk_bytes, why, _notes(vm, room.name)
            )
        )
    used = _used(source)
    loads = [
        HostLoad(source.host, "source", source.memory_bytes, used, max(0, used - freed), source.memory_bytes),
        *(_load(room, "target", before[room.name]) for room in rooms),
    ]
    notes = []
    if any(not holds_memory(vm) for vm in vms):
        notes.append("VMs that are off or saved move too, as they are: each counts its memory on its destination")
    if unplaced:
        notes.append(f"{len(unplaced)} VM(s) stay on {source.host}: {source.host} is not empty after this plan")
    return PlacementResult(EVACUATE, tuple(moves), tuple(unplaced), tuple(loads), headroom, tuple(notes))


# -- rebalance --------------------------------------------------------------------------------------------------
def rebalance(hosts: Sequence[HostSurvey], *, threshold: float = 0.8) -> PlacementResult:
    """Bring every host at or under `threshold` of its memory in use by moving the fewest VMs from the hosts over
    it to the hosts under it, never pushing a receiver over it (module docstring).

    Raises:
        ValueError: a threshold outside (0, 1], or a host listed twice.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be more than 0 and at most 1, not {threshold:g}")
    names = Counter(h.host.casefold() for h in hosts)
    if any(count > 1 for count in names.values()):
        raise ValueError("a host is listed twice: " + ", ".join(sorted(n for n, c in names.items() if c > 1)))
    limit_text = _pct(threshold)
    rooms = [_Room.of(host, threshold, limit_text) for host in hosts]
    before = {room.name: room.used for room in rooms}
    donors = sorted(
        (room for room in rooms if room.used > room.limit),
        key=lambda room: (-room.used / max(1, room.survey.memory_bytes), room.name.casefold()),
    )
    receivers = [room for room in rooms if room.used <= room.limit]
    moves: list[PlacedMove] = []
    unplaced: list[UnplacedVm] = []
    notes = []
    for donor in donors:
        over = f"{donor.name} at {_pct(donor.used / donor.survey.memory_bytes)} > {limit_text}"
        holding = [vm for vm in donor.survey.vms if holds_memory(vm) and vm.memory_bytes > 0]
        vms, unnamed = _nameable(donor.survey, holding)
        candidates = _largest_first(vms)
        while donor.used > donor.limit and candidates:
            placeable = [(vm, room) for vm in candidates if (room := _best(vm, receivers)) is not None]
            if not placeable:
                break
            excess = donor.used - donor.limit
            enough = [pair for pair in placeable if pair[0].memory_bytes >= excess]
            # One VM that alone is enough, the smallest such; else the largest that fits anywhere, and again.
            vm, room = enough[-1] if enough else placeable[0]
            why = _why(vm, room, receivers, over)
            room.take(vm)
            donor.used -= vm.memory_bytes
            candidates.remove(vm)
            moves.append(
                PlacedMove(
                    vm.name,
                    vm.vm_id,
                    donor.name,
                    room.name,
                    vm.memory_bytes,
                    vm.disk_bytes,
                    why,
                    _notes(vm, room.name),
                )
            )
        if donor.used > donor.limit:
            # Those it could not give are listed with why; a VM a plan cannot name is one it could have given.
            unplaced += [_unplaced(vm, donor.name, f"{over}: {_nowhere(vm, receivers)}") for vm in candidates]
            unplaced += unnamed
            if not candidates and not unnamed:
                notes.append(f"{over} and has no running VM to give: it stays over the threshold")
    loads = [_load(room, "donor" if room in donors else "receiver", before[room.name]) for room in rooms]
    if not donors:
        notes.append(f"every host is at or under {limit_text}: nothing to move")
    notes.append("only VMs that hold memory (running or paused) move: an off or saved VM relieves no host")
    return PlacementResult(REBALANCE, tuple(moves), tuple(unplaced), tuple(loads), threshold, tuple(notes))


# -- the plan file ----------------------------------------------------------------------------------------------
def plan_name(kind: str, host: str = "", *, now: datetime | None = None) -> str:
    """A campaign name for a generated plan: what it does, the host it empties, when it was made (UTC), so that
    two plans made at different times never share a campaign id."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    parts = [kind, _NAME_CHARS.sub("-", host).strip("-").lower(), stamp]
    return "-".join(part for part in parts if part)[:CAMPAIGN_NAME_MAX]


def _scalar(value: str) -> str:
    """`value` as a YAML double-quoted scalar that reads back as exactly `value`: PyYAML's emitter escapes what
    YAML would otherwise read as a line break (NEL, LS, PS), a non-printable character or the quote itself."""
    text = yaml.dump(value, Dumper=yaml.SafeDumper, default_style='"', allow_unicode=True, width=2**31 - 1)
    return text.rstrip("\n").removesuffix("\n...").rstrip("\n")


def _gib_number(n: int) -> str:
    """Bytes as GiB for the plan: enough digits that the plan's round(GiB * 2**30) gives the bytes back, and always
    a decimal point (YAML 1.1 reads `1e-05` as text)."""
    text = f"{n / GIB:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _comment(text: str, indent: str = "") -> list[str]:
    """`text` as comment lines; any character YAML would read as a line break or that is not printable is escaped
    (a VM's name can hold anything), so a comment never ends early."""
    lines = []
    for line in text.splitlines() or [""]:
        safe = "".join(ch if ch.isprintable() or ch == "\t" else ch.encode("unicode_escape").decode() for ch in line)
        lines.append(f"{indent}# {safe}".rstrip())
    return lines


def _slots(survey_slots: dict[str, int]) -> list[str]:
    if not survey_slots:
        return []
    lines = ["hosts:                       # each host's concurrent migrations, as it reported them"]
    for host, slots in survey_slots.items():
        lines.append(f"  {_scalar(host)}: {{slots: {min(HOST_SLOTS_MAX, max(1, slots))}}}")
    return lines


def write_plan_yaml(
    path: Path | str,
    name: str,
    result: PlacementResult,
    *,
    comment: str,
    slots: dict[str, int] | None = None,
    now: datetime | None = None,
) -> Path:
    """Write `result`'s moves as a YAML plan of one wave (starter/plans.py's format), with a header to review.

    The header says when and by what it was made, `comment` (which survey: the workflow id, the hosts), and what to
    review: the clustered VMs, the VMs that are not running, the VMs it could not place (listed at the end, not in
    the plan). Every text value is a double-quoted YAML scalar (`_scalar`), so any VM name reads back exactly;
    sizes are `memory_gb`/`disk_gb` for the campaign's planner; `slots` (host -> concurrent migrations) become the
    plan's host profiles. The file is written whole or not at all (a temporary file renamed over it).

    Raises:
        ValueError: the result has no move (a plan without moves is no plan).
    """
    if not result.moves:
        raise ValueError("nothing to write: the placement moves no VM")
    made = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    clustered = sum(1 for move in result.moves if move.notes and move.notes[0] == _CLUSTERED_NOTE)
    lines = _comment(f"Campaign plan generated by `snlm plan {result.kind}` on {made}.")
    lines += _comment(comment)
    lines += [
        "#",
        *_comment("Review it before you start it (snlm campaign start FILE); nothing has been started:"),
        *_comment(
            "- the destinations were chosen by memory, disk space and virtual switches only: `snlm campaign check "
            "FILE`\n  preflights every VM (processor, delegation, live-migration settings...) without changing "
            "anything;"
        ),
    ]
    if clustered:
        lines += _comment(
            f"- {clustered} clustered VM(s), noted at their move: set `policy: {{ha: restore}}` (or drop) below, or "
            "each\n  move to a host that is no cluster node waits for that choice;"
        )
    for note in result.notes:
        lines += _comment(f"- {note};")
    if result.unplaced:
        lines += _comment(f"- {len(result.unplaced)} VM(s) could not be placed: listed at the end, not in the plan.")
    lines += [
        f"name: {_scalar(name)}",
        "scheduler: planner",
        "prepare_ahead: 1             # moves per host readied (checked, hosts set) while the slots are busy",
        *(["# policy: {ha: restore}"] if clustered else []),
        *_slots(slots or {}),
        "waves:",
        f"  - name: {_scalar(result.kind)}",
        "    moves:",
    ]
    for move in result.moves:
        for note in move.notes:
            lines += _comment(note, "      ")
        lines += [
            f"      - vm: {_scalar(move.vm)}",
            f"        source: {_scalar(move.source)}",
            f"        destination: {_scalar(move.destination)}",
            f"        memory_gb: {_gib_number(move.memory_bytes)}",
            f"        disk_gb: {_gib_number(move.disk_bytes)}",
        ]
    if result.unplaced:
        lines += ["", *_comment("Not placed (not in the plan):")]
        for vm in result.unplaced:
            lines += _comment(f"- {_scalar(vm.vm)} on {vm.source} ({_gib(vm.memory_bytes)}): {vm.reason}")
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(target)
    return target


def moves_document(result: PlacementResult) -> dict[str, Any]:
    """The result as one JSON-ready mapping (for `--output json`)."""
    return {
        "kind": result.kind,
        "limit": result.limit,
        "complete": result.complete,
        "moves": [move.__dict__ for move in result.moves],
        "unplaced": [vm.__dict__ for vm in result.unplaced],
        "hosts": [
            {**load.__dict__, "before": round(load.before, 4), "after": round(load.after, 4), "over": load.over}
            for load in result.hosts
        ],
        "notes": list(result.notes),
    }
