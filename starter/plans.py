"""Plan files: a campaign's moves, waves, windows, policy and host profiles, in YAML or CSV, validated into a
`CampaignPlan` (workflows/contracts.py).

A plan is read whole and checked whole: `PlanInvalid` lists every problem at once, each with the file, the line
(of the offending YAML node, or the CSV's physical line; 0 when there is none) and the field
(`waves[0].moves[3].destination`), so an operator fixes a plan of thousands of moves in one pass. A plan never
holds a secret: a key named password, secret or token is refused wherever it appears.

YAML (`.yaml`, `.yml`):

    name: dc1-refresh            # [A-Za-z0-9._-]{1,100}; `--name` overrides; absent: the file's stem
    scheduler: planner           # planner | fifo-source | fifo | random
    seed: 0                      # the random scheduler's seed
    prepare_ahead: 1             # moves per host readied before their turn (0-8; 0: each starts at its turn)
    setup_seconds: 12            # a move's start to its first byte, as a pilot wave measured it (default: the model's)
    windows:                     # optional; none: moves may start at any time
      - {days: [sat, sun], start: "22:00", duration: 6h, time_zone: Europe/Berlin}
    policy:                      # optional; every key optional, named as MigrationPolicy's fields
      delegation: manage         # manage | verify | skip
      ha: restore                # restore | drop
      performance: Compression   # TCPIP | Compression | SMB
      migration_networks: [10.0.20.0/24]
      max_migrations_per_host: 2
    hosts:                       # optional host profiles (only those given)
      HV01: {slots: 2, link_gbps: 10}
    waves:
      - name: wave-1             # optional: wave-N by position; unique, ignoring case
        on_failure: pause        # continue (default) | pause
        pause_after_failures: 3  # with pause: after this many failed moves of the wave (default 1)
        moves:
          - {vm: web01, source: HV01, destination: HV02, storage_path: 'D:\\VMs\\web01', priority: 5,
             memory_gb: 8, disk_gb: 60}

- `windows[].days`: mon..sun (or monday..sunday), ranges such as `mon-fri`; absent or empty: every day.
  `start` is HH:MM local time in `time_zone` (an IANA name, default UTC); quote it, or YAML 1.1 reads 22:00 as
  a number (it is read as written either way). `duration` is `90m`, `6h`, `1h30m`, `1d` or whole minutes, more
  than 0 and at most 7 days.
- `policy`: every field of MigrationPolicy: delegation, delegation_mode (kerberos-only | any-protocol | auto),
  revert_delegation, restore_settings, ha, require_approval, approval_timeout_seconds, authentication
  (Kerberos | CredSSP), performance, migration_networks (subnets), eject_missing_iso, max_migrations_per_host
  (1-64), move_timeout_seconds, slot_lease_seconds, slot_book, move_heartbeat_seconds, guest_timeout_seconds,
  guest_check (warn | fail). Enumerations ignore case.
- `hosts`: `slots` 1-64 concurrent migrations, `link_gbps` the migration adapter's speed in Gbit/s.
- moves: `vm`, `source` and `destination` are required; `storage_path` is the destination folder (a full
  Windows path; absent: the destination's VirtualMachinePath); `priority` 0-1000 (default 0); `memory_gb`,
  `disk_gb` (GiB) and `dirty_mib_per_second` are estimates for the planner (absent: unknown).
- `setup_seconds`: seconds from a move's start to its first byte (connection, checks, the planned VM), 0 to 3600,
  as this estate shows them; the planner and the forecast count it in every move (absent: the model's own, 4 s).
- A repeated key, and a tag other than YAML's plain types (`!!python/...`, local tags), are problems.
- Top-level keys that begin with `x-` are not read: a place for anchors that moves merge
  (`x-from-hv01: &hv01 {source: HV01, destination: HV03}`, then `- {<<: *hv01, vm: web01}`).
- Instead of `waves`, a top-level `moves` list may give each move a `wave` name; the waves are then formed in
  the order their names first appear, each with `on_failure: continue`. A move without `wave` joins
  DEFAULT_WAVE.

CSV (`.csv`, comma-, semicolon- or tab-separated, UTF-8 with or without a BOM): a header naming at least
`vm,source,destination,storage_path,wave` (any order, any case), optionally `priority`, `memory_gb`, `disk_gb`,
`dirty_mib_per_second`; then one move per row. Waves are formed in first-seen order, an empty `wave` is
DEFAULT_WAVE, an empty `storage_path` is the destination's default, the campaign is named after the file's stem
(or `--name`), and the other settings take their defaults.

Every plan: a VM (its name and source, compared ignoring case) is listed once; its name is kept verbatim (no
wildcard or quoting meaning); host names are checked against the inventory when one is given and then spelled as
the inventory spells them; sizes become bytes (GiB = 2**30), durations minutes, link speeds bits per second.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import enum
import io
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from config.inventory import Inventory
from workflows.contracts import (
    CAMPAIGN_NAME_MAX,
    PLAN_INVALID,
    PREPARE_AHEAD_MAX,
    CampaignMove,
    CampaignPlan,
    CampaignWave,
    DelegationMode,
    DelegationPolicy,
    GuestCheck,
    HaChoice,
    HostProfile,
    MaintenanceWindow,
    MigrationAuthentication,
    MigrationPerformance,
    MigrationPolicy,
    Scheduler,
    WaveFailurePolicy,
    Weekday,
    migrate_vm_workflow_id,
    slot_lease_problem,
)

__all__ = [
    "DEFAULT_WAVE",
    "PLAN_MOVES_MAX",
    "PlanInvalid",
    "PlanProblem",
    "load_plan",
    "parse_plan_csv",
    "parse_plan_yaml",
]

DEFAULT_WAVE = "wave-1"
# Far above what one campaign carries (PackedMoves is sized for 10,000); it bounds the work a plan made of YAML
# aliases of aliases could ask for.
PLAN_MOVES_MAX = 100_000
VM_NAME_MAX = 255
WAVE_NAME_MAX = 100
PRIORITY_MAX = 1000
HOST_SLOTS_MAX = 64
LINK_GBPS_MAX = 10_000.0
# No VM has a PiB of memory or disks; a figure past it was written in bytes or MiB, not GiB.
SIZE_GIB_MAX = 2.0**20
WINDOW_MINUTES_MAX = 7 * 24 * 60
PATH_MAX = 32_767  # Windows' extended-length path limit
# A move's set-up is seconds to minutes; an hour is a figure in the wrong unit.
SETUP_SECONDS_MAX = 3600.0

CSV_REQUIRED_COLUMNS: Final = ("vm", "source", "destination", "storage_path", "wave")
CSV_OPTIONAL_COLUMNS: Final = ("priority", "memory_gb", "disk_gb", "dirty_mib_per_second")

_TOP_KEYS = (
    "name",
    "scheduler",
    "seed",
    "prepare_ahead",
    "setup_seconds",
    "windows",
    "policy",
    "hosts",
    "waves",
    "moves",
)
_WAVE_KEYS = ("name", "on_failure", "pause_after_failures", "moves")
_MOVE_KEYS = ("vm", "source", "destination", "storage_path", *CSV_OPTIONAL_COLUMNS)
_WINDOW_KEYS = ("days", "start", "duration", "time_zone")
_HOST_KEYS = ("slots", "link_gbps")

_CAMPAIGN_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{CAMPAIGN_NAME_MAX}}}")
# A NetBIOS or DNS name: what the inventory and the hosts' workflow ids are keyed by.
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_START = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")
_SECRET_WORDS = frozenset({"password", "passwd", "secret", "token"})
_DAYS: dict[str, Weekday] = {day.value: day for day in Weekday} | {
    "monday": Weekday.MON,
    "tuesday": Weekday.TUE,
    "wednesday": Weekday.WED,
    "thursday": Weekday.THU,
    "friday": Weekday.FRI,
    "saturday": Weekday.SAT,
    "sunday": Weekday.SUN,
}
_WEEK = tuple(Weekday)

_TAG = "tag:yaml.org,2002:"
_NULL_TAG = _TAG + "null"
_MERGE_TAG = _TAG + "merge"
# What yaml.safe_load would build anyway; anything else (python/*, set, omap, binary, local tags) is refused.
_ALLOWED_TAGS = frozenset(_TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map"))

# libyaml's parser when PyYAML has it: five times faster on a plan of 10,000 moves, with the same nodes and marks.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_E = TypeVar("_E", bound=enum.Enum)


@dataclass(frozen=True)
class PlanProblem:
    """One thing wrong with a plan: where (file, line, 0 when unknown, and field) and what."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class PlanInvalid(ValueError):
    """A plan that cannot run, with every problem found in it (the campaign's PLAN_INVALID configuration error).

    Attributes:
        source: the plan file.
        problems: every problem, ordered by line.
    """

    error_type = PLAN_INVALID

    def __init__(self, source: str, problems: Iterable[PlanProblem]) -> None:
        self.source = source
        self.problems = tuple(sorted(problems, key=lambda problem: problem.line))
        count = len(self.problems)
        head = f"plan {source} has {count} problem{'' if count == 1 else 's'}:"
        super().__init__("\n".join([head, *(f"  {problem}" for problem in self.problems)]))


def load_plan(path: Path | str, *, name: str | None = None, inventory: Inventory | None = None) -> CampaignPlan:
    """Read and validate a plan file, YAML or CSV by its suffix; raise PlanInvalid listing every problem."""
    source = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise PlanInvalid(
            source,
            [PlanProblem(source, 0, "file", f"a plan is a .yaml, .yml or .csv file, not {suffix or 'no suffix'!r}")],
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PlanInvalid(source, [PlanProblem(source, 0, "file", f"cannot read: {reason}")]) from None
    try:
        # utf-8-sig: spreadsheets save CSV with a byte-order mark.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PlanInvalid(source, [PlanProblem(source, line, "file", f"not UTF-8 text: {exc.reason}")]) from None
    parse = parse_plan_csv if suffix == ".csv" else parse_plan_yaml
    return parse(text, source=source, name=name, inventory=inventory)


def parse_plan_yaml(
    text: str, *, source: str = "<plan>", name: str | None = None, inventory: Inventory | None = None
) -> CampaignPlan:
    """Validate a YAML plan (the module's format); raise PlanInvalid listing every problem."""
    check = _Check(source, inventory)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        # The problem and where, not the exception's text: it quotes the offending lines.
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        where = f" (column {mark.column + 1})" if mark is not None else ""
        check.add(line, "file", f"not valid YAML: {exc.problem or exc.context or type(exc).__name__}{where}")
        raise check.invalid() from None
    except yaml.reader.ReaderError as exc:
        check.add(text[: exc.position].count("\n") + 1, "file", f"not valid YAML: {exc.reason}")
        raise check.invalid() from None
    except (yaml.YAMLError, UnicodeError) as exc:
        check.add(0, "file", f"not valid YAML: {type(exc).__name__}")
        raise check.invalid() from None
    if root is None:
        check.add(0, "file", "the plan is empty: it lists no moves")
        raise check.invalid()
    return _YamlPlan(check, root).plan(name)


def parse_plan_csv(
    text: str, *, source: str = "<plan>", name: str | None = None, inventory: Inventory | None = None
) -> CampaignPlan:
    """Validate a CSV plan (the module's format); raise PlanInvalid listing every problem."""
    check = _Check(source, inventory)
    text = text.removeprefix("\ufeff")
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "," if "," in first or not any(sep in first for sep in ";\t") else (";" if ";" in first else "\t")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 1
    columns: dict[str, int] = {}
    moves: list[tuple[CampaignMove, str]] = []
    rows = 0
    unreadable = False
    try:
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not any(cell.strip() for cell in row):
                continue  # blank lines and the empty rows spreadsheets leave
            if header is None:
                header, header_line = row, line
                columns = _csv_header(check, row, line)
                if not columns:
                    break
                continue
            rows += 1
            if len(row) != len(header):
                check.add(line, "row", f"{len(row)} fields where the header has {len(header)}")
                continue
            if rows > PLAN_MOVES_MAX:
                check.add(line, "row", f"more than {PLAN_MOVES_MAX} moves; split the plan into several campaigns")
                break
            values = {
                column: _Value(column, line, row[index], row[index], null=not row[index].strip())
                for column, index in columns.items()
            }
            wave = values.pop("wave", None)
            move = check.move(values, line, "")
            wave_name = check.wave_name(wave) if wave is not None and not wave.null else DEFAULT_WAVE
            if move is not None and wave_name is not None:
                moves.append((move, wave_name))
    except csv.Error as exc:
        check.add(reader.line_num, "row", f"not valid CSV: {exc}")
        unreadable = True
    if header is None:
        check.add(0, "header", f"the plan is empty: a CSV plan starts with the header {','.join(CSV_REQUIRED_COLUMNS)}")
    elif columns and not rows and not unreadable:
        check.add(header_line, "moves", "the plan is empty: it lists no moves")
    campaign = check.campaign_name(name, None, Path(source).stem)
    check.duplicates()
    if check.problems:
        raise check.invalid()
    assert campaign is not None
    return CampaignPlan(
        name=campaign,
        waves=_group(moves),
    )


# -- What both formats share -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """One value as written: where it is, its text (a scalar's text as written, "" for null; a CSV cell) and its
    data (what YAML makes of it; a CSV cell's text; the node of a list or mapping)."""

    field: str
    line: int
    text: str
    data: Any
    null: bool = False
    node: Node | None = None

    @property
    def scalar(self) -> bool:
        return not isinstance(self.data, Node)


@dataclass(frozen=True)
class _Listed:
    """A move's identity as listed, for the duplicates: its destination "" when that was not valid."""

    vm: str
    source: str
    destination: str
    line: int
    field: str  # the move's own path ("waves[0].moves[3]"; "" in a CSV)


class _Bad(enum.Enum):
    """A value that was reported as a problem (None is a valid value of several fields)."""

    BAD = 0


_BAD = _Bad.BAD


def _kind(value: _Value) -> str:
    if isinstance(value.data, MappingNode):
        return "a mapping"
    if isinstance(value.data, SequenceNode):
        return "a list"
    if value.null:
        return "empty"
    if isinstance(value.data, bool):
        return "true/false"
    return type(value.data).__name__ if not isinstance(value.data, str) else "text"


def _suggest(word: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(word.lower(), [a.lower() for a in allowed], n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {next(a for a in allowed if a.lower() == close[0])!r}?)"


def _is_secret_key(key: str) -> bool:
    return any(word in _SECRET_WORDS for word in re.split(r"[^a-z]+", key.lower()))


class _Check:
    """The problems found so far, and the checks both formats make of their values."""

    def __init__(self, source: str, inventory: Inventory | None) -> None:
        self.source = source
        self.inventory = inventory
        self.problems: list[PlanProblem] = []
        self.listed: list[_Listed] = []

    def add(self, line: int, field: str, message: str) -> _Bad:
        self.problems.append(PlanProblem(self.source, line, field, message))
        return _BAD

    def invalid(self) -> PlanInvalid:
        return PlanInvalid(self.source, self.problems)

    # -- scalars

    def _scalar(self, value: _Value, expected: str) -> bool:
        if value.scalar and not value.null:
            return True
        self.add(value.line, value.field, f"must be {expected}, not {_kind(value)}")
        return False

    def text(self, value: _Value, expected: str = "text") -> str | _Bad:
        return value.text if self._scalar(value, expected) else _BAD

    def integer(self, value: _Value, low: int, high: int) -> int | _Bad:
        expected = f"a whole number from {low} to {high}"
        if not self._scalar(value, expected):
            return _BAD
        data = value.data
        if isinstance(data, str):
            try:
                data = int(data.strip())
            except ValueError:
                return self.add(value.line, value.field, f"must be {expected}, not {value.text!r}")
        if isinstance(data, bool) or not isinstance(data, int):
            return self.add(value.line, value.field, f"must be {expected}, not {_kind(value)}")
        if not low <= data <= high:
            return self.add(value.line, value.field, f"{data} is out of range: must be from {low} to {high}")
        return data

    def number(self, value: _Value, high: float, *, positive: bool = False, unit: str = "") -> float | _Bad:
        floor = "more than 0" if positive else "0 or more"
        expected = f"a number, {floor} and at most {high:.10g}{unit}"
        if not self._scalar(value, expected):
            return _BAD
        data = value.data
        if isinstance(data, str):
            try:
                data = float(data.strip())
            except ValueError:
                return self.add(value.line, value.field, f"must be {expected}, not {value.text!r}")
        if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
            return self.add(value.line, value.field, f"must be {expected}, not {value.text or _kind(value)!r}")
        if data < 0 or (positive and data == 0) or data > high:
            return self.add(
                value.line, value.field, f"{data:g} is out of range: must be {floor} and at most {high:.10g}"
            )
        return float(data)

    def boolean(self, value: _Value) -> bool | _Bad:
        if self._scalar(value, "true or false") and isinstance(value.data, bool):
            return value.data
        if value.scalar and not value.null:
            self.add(value.line, value.field, f"must be true or false, not {value.text!r}")
        return _BAD

    def choice(self, value: _Value, kind: type[_E], *, optional: bool = False) -> _E | _Bad | None:
        allowed = [str(member.value) for member in kind]
        if optional and value.null:
            return None
        if not self._scalar(value, "one of " + ", ".join(allowed)):
            return _BAD
        wanted = value.text.strip().lower()
        for member in kind:
            if str(member.value).lower() == wanted:
                return member
        return self.add(value.line, value.field, f"unknown value {value.text!r}: allowed are {', '.join(allowed)}")

    # -- names

    def vm_name(self, value: _Value) -> str | _Bad:
        text = self.text(value, "a VM name")
        if isinstance(text, _Bad):
            return text
        if not text.strip():
            return self.add(value.line, value.field, "the VM name is empty")
        if _CONTROL.search(text):
            return self.add(value.line, value.field, "the VM name holds a control character")
        if len(text) > VM_NAME_MAX:
            return self.add(value.line, value.field, f"the VM name is longer than {VM_NAME_MAX} characters")
        return text

    def host(self, value: _Value) -> str | _Bad:
        text = self.text(value, "a host name")
        if isinstance(text, _Bad):
            return text
        name = text.strip()
        if not _HOST_NAME.fullmatch(name):
            return self.add(
                value.line, value.field, f"{text!r} is not a host name (letters, digits, '.', '-' and '_', at most 255)"
            )
        if self.inventory is None:
            return name
        entry = self.inventory.find(name)
        if entry is None:
            where = f" {self.inventory.source}" if self.inventory.source is not None else ""
            hint = _suggest(name, list(self.inventory.hosts))
            return self.add(value.line, value.field, f"host {name!r} is not in the inventory{where}{hint}")
        return entry.name

    def wave_name(self, value: _Value) -> str | None:
        text = self.text(value, "a wave name")
        if isinstance(text, _Bad):
            return None
        name = text.strip()
        if not name or len(name) > WAVE_NAME_MAX or _CONTROL.search(name):
            self.add(value.line, value.field, f"a wave name is 1 to {WAVE_NAME_MAX} characters, no control characters")
            return None
        return name

    def campaign_name(self, override: str | None, value: _Value | None, stem: str) -> str | None:
        if override is not None:
            name, line, field, origin = override, 0, "name", f"--name {override!r}"
        elif value is not None:
            text = self.text(value, "a campaign name")
            if isinstance(text, _Bad):
                return None
            name, line, field, origin = text, value.line, value.field, repr(text)
        else:
            name, line, field, origin = stem, 0, "name", f"the file's name {stem!r} (the default campaign name)"
        if _CAMPAIGN_NAME.fullmatch(name):
            return name
        self.add(
            line,
            field,
            f"{origin} is not a campaign name: 1 to {CAMPAIGN_NAME_MAX} of A-Z, a-z, 0-9, '.', '_' and '-'"
            + (
                "; rename the file, or give the plan a name (name: in YAML, --name)"
                if value is None and override is None
                else ""
            ),
        )
        return None

    # -- a move, from either format

    def move(self, values: Mapping[str, _Value], line: int, field: str) -> CampaignMove | None:
        """The move of these values (keys as _MOVE_KEYS), or None after reporting what is wrong with it."""
        prefix = f"{field}." if field else ""
        for required in ("vm", "source", "destination"):
            if required not in values or values[required].null:
                self.add(line, prefix + required, f"missing: every move names its {required}")
        vm = self.vm_name(values["vm"]) if "vm" in values and not values["vm"].null else _BAD
        source = self.host(values["source"]) if "source" in values and not values["source"].null else _BAD
        destination: str | _Bad = _BAD
        if "destination" in values and not values["destination"].null:
            destination = self.host(values["destination"])
        if isinstance(source, str) and isinstance(destination, str) and source.lower() == destination.lower():
            value = values["destination"]
            self.add(value.line, value.field, f"the destination is the source ({source}): nothing to move")
            destination = _BAD
        storage: str | _Bad | None = None
        if "storage_path" in values and not values["storage_path"].null:
            storage = self.storage_path(values["storage_path"])
        priority: int | _Bad = 0
        if "priority" in values and not values["priority"].null:
            priority = self.integer(values["priority"], 0, PRIORITY_MAX)
        sizes: dict[str, float | _Bad] = {}
        for key in ("memory_gb", "disk_gb", "dirty_mib_per_second"):
            if key in values and not values[key].null:
                sizes[key] = self.number(values[key], SIZE_GIB_MAX)
        if isinstance(vm, str) and isinstance(source, str):
            self.listed.append(_Listed(vm, source, destination if isinstance(destination, str) else "", line, field))
        if not (isinstance(vm, str) and isinstance(source, str) and isinstance(destination, str)):
            return None
        numbers = {key: number for key, number in sizes.items() if isinstance(number, float)}
        if isinstance(storage, _Bad) or isinstance(priority, _Bad) or len(numbers) < len(sizes):
            return None
        memory, disk, dirty = (numbers.get(key, 0.0) for key in ("memory_gb", "disk_gb", "dirty_mib_per_second"))
        return CampaignMove(
            vm=vm,
            source=source,
            destination=destination,
            storage_path=storage,
            priority=priority,
            memory_bytes=round(memory * 2**30),
            disk_bytes=round(disk * 2**30),
            dirty_bytes_per_second=dirty * 2**20,
        )

    def storage_path(self, value: _Value) -> str | _Bad | None:
        text = self.text(value, "a folder path")
        if isinstance(text, _Bad):
            return text
        if not text.strip():
            return None
        if _CONTROL.search(text) or len(text) > PATH_MAX:
            return self.add(value.line, value.field, f"a path of at most {PATH_MAX} characters, no control characters")
        if not PureWindowsPath(text).is_absolute():
            return self.add(
                value.line,
                value.field,
                f"{text!r} is not a full path on the destination (D:\\VMs\\web01, \\\\srv\\share)",
            )
        return text

    def duplicates(self) -> None:
        """Report each VM (name and source, ignoring case) listed again after its first listing, whether or not
        the rest of either listing is valid."""
        first: dict[str, _Listed] = {}
        for item in self.listed:
            seen = first.setdefault(migrate_vm_workflow_id(item.vm, item.source), item)
            if seen is item:
                continue
            where = f"{item.vm} on {item.source}"
            if seen.destination and item.destination and seen.destination.lower() != item.destination.lower():
                self.add(
                    item.line,
                    _join(item.field, "destination"),
                    f"{where} is already moved to {seen.destination} at line {seen.line}: one VM, one destination",
                )
            else:
                self.add(item.line, _join(item.field, "vm"), f"{where} is listed twice: first at line {seen.line}")


def _csv_header(check: _Check, row: list[str], line: int) -> dict[str, int]:
    """The column of each known name; {} after reporting a header that cannot be read."""
    known = (*CSV_REQUIRED_COLUMNS, *CSV_OPTIONAL_COLUMNS)
    columns: dict[str, int] = {}
    ok = True
    for index, cell in enumerate(row):
        name = cell.strip().lower()
        if _is_secret_key(name):
            check.add(line, name, "a plan never holds a secret: remove this column")
            ok = False
        elif name not in known:
            hint = _suggest(name, known)
            check.add(line, "header", f"unknown column {cell.strip()!r}{hint}; the columns are {', '.join(known)}")
            ok = False
        elif name in columns:
            check.add(line, "header", f"column {name!r} appears twice")
            ok = False
        else:
            columns[name] = index
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in columns]
    if missing:
        check.add(line, "header", f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        ok = False
    return columns if ok else {}


def _group(moves: Iterable[tuple[CampaignMove, str]]) -> tuple[CampaignWave, ...]:
    """Moves by wave name (ignoring case, spelled as first written), waves in the order they first appear."""
    waves: dict[str, tuple[str, list[CampaignMove]]] = {}
    for move, wave in moves:
        waves.setdefault(wave.lower(), (wave, []))[1].append(move)
    return tuple(CampaignWave(name, tuple(wave_moves)) for name, wave_moves in waves.values())


# -- YAML --------------------------------------------------------------------------------------------------


class _YamlPlan:
    def __init__(self, check: _Check, root: Node) -> None:
        self.check = check
        self.root = root
        self.constructor = yaml.constructor.SafeConstructor()
        self.moves_count = 0

    def plan(self, override: str | None) -> CampaignPlan:
        check = self.check
        self._screen(self.root)
        top = self.mapping(self.root, "", _TOP_KEYS, what="the plan")
        if top is None:
            raise check.invalid()
        name = check.campaign_name(override, top.get("name"), Path(check.source).stem)
        scheduler: Scheduler | _Bad | None = Scheduler.PLANNER
        if "scheduler" in top:
            scheduler = check.choice(top["scheduler"], Scheduler)
        seed: int | _Bad = 0
        if "seed" in top:
            seed = check.integer(top["seed"], -(2**63), 2**63 - 1)
        ahead: int | _Bad = 1
        if "prepare_ahead" in top:
            ahead = check.integer(top["prepare_ahead"], 0, PREPARE_AHEAD_MAX)
        setup: float | _Bad | None = None
        if "setup_seconds" in top:
            setup = check.number(top["setup_seconds"], SETUP_SECONDS_MAX, unit=" s")
        windows = self.windows(top["windows"]) if "windows" in top else ()
        policy = self.policy(top["policy"]) if "policy" in top else MigrationPolicy()
        hosts = self.hosts(top["hosts"]) if "hosts" in top else ()
        waves: Sequence[CampaignWave | None] = ()
        if "waves" in top and "moves" in top:
            check.add(top["moves"].line, "moves", "give either waves (with their moves) or moves (with a wave each)")
        elif "waves" in top:
            waves = self.waves(top["waves"])
        elif "moves" in top:
            waves = self.flat_moves(top["moves"])
        if self.moves_count == 0:
            where = top.get("waves") or top.get("moves")
            line = where.line if where else _line(self.root)
            check.add(line, where.field if where else "waves", "the plan is empty: it lists no moves")
        check.duplicates()
        if check.problems:
            raise check.invalid()
        # Each of these was reported as a problem when it was not so.
        assert name is not None
        assert isinstance(scheduler, Scheduler)
        assert isinstance(seed, int)
        assert isinstance(ahead, int)
        assert not isinstance(setup, _Bad)
        assert not isinstance(windows, _Bad)
        assert not isinstance(policy, _Bad)
        assert not isinstance(hosts, _Bad)
        return CampaignPlan(
            name=name,
            waves=tuple(wave for wave in waves if wave is not None),
            windows=windows,
            policy=policy,
            hosts=hosts,
            scheduler=scheduler,
            seed=seed,
            prepare_ahead=ahead,
            setup_seconds=setup,
        )

    # -- nodes

    def _screen(self, root: Node) -> None:
        """Refuse secret-named keys and tags safe_load would not build, anywhere, each node once (aliases)."""
        seen: set[int] = set()
        stack = [(root, "")]
        while stack:
            node, field = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.tag not in _ALLOWED_TAGS and not (node.tag == _MERGE_TAG and isinstance(node, ScalarNode)):
                self.check.add(_line(node), field or "<top>", f"the YAML tag {node.tag!r} is not allowed in a plan")
            if isinstance(node, MappingNode):
                for key, value in node.value:
                    key_text = key.value if isinstance(key, ScalarNode) else ""
                    at = _join(field, key_text)
                    # Host names are data, not keys that could name a secret.
                    if isinstance(key, ScalarNode) and field != "hosts" and _is_secret_key(key_text):
                        self.check.add(
                            _line(key), at, f"a plan never holds a secret: remove {key_text!r} (it is not read)"
                        )
                    stack.append((key, at))
                    stack.append((value, at))
            elif isinstance(node, SequenceNode):
                stack.extend((item, f"{field}[{index}]") for index, item in enumerate(node.value))

    def value(self, node: Node, field: str) -> _Value:
        line = _line(node)
        if not isinstance(node, ScalarNode):
            return _Value(field, line, "", node, node=node)
        if node.tag == _NULL_TAG:
            return _Value(field, line, "", None, null=True, node=node)
        if node.tag not in _ALLOWED_TAGS:
            return _Value(field, line, node.value, node.value, node=node)  # refused by _screen already
        try:
            data = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            data = node.value  # an explicit tag whose text does not parse (`!!int x`): the checks say what is wrong
        return _Value(field, line, node.value, data, node=node)

    def mapping(self, node: Node, field: str, allowed: Sequence[str], *, what: str) -> dict[str, _Value] | None:
        """The mapping's values by key after checking its keys (unknown, repeated); None when not a mapping."""
        pairs = self._pairs(node, field, what, ())
        if pairs is None:
            return None
        values: dict[str, _Value] = {}
        for key, (key_node, value_node) in pairs.items():
            at = _join(field, key)
            if key in allowed:
                values[key] = self.value(value_node, at)
            elif not field and key.startswith("x-"):
                continue  # a place for anchors that moves merge (`x-defaults: &hv01 {...}`), as Compose has
            elif not _is_secret_key(key):  # reported by _screen
                hint = _suggest(key, allowed)
                self.check.add(_line(key_node), at, f"unknown key {key!r}{hint}; {what} takes {', '.join(allowed)}")
        return values

    def _pairs(self, node: Node, field: str, what: str, inside: tuple[int, ...]) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.check.add(
                _line(node), field or "<top>", f"{what} must be a mapping, not {_kind(self.value(node, field))}"
            )
            return None
        explicit: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                # `<<: *defaults`: keys written in the mapping win over merged ones, earlier merges over later.
                sources = value.value if isinstance(value, SequenceNode) else [value]
                for merge in sources:
                    if id(merge) in (*inside, id(node)):
                        self.check.add(_line(key), _join(field, "<<"), "a merge that includes itself")
                        continue
                    pairs = self._pairs(merge, _join(field, "<<"), "a merge (<<)", (*inside, id(node)))
                    for merged_key, pair in (pairs or {}).items():
                        merged.setdefault(merged_key, pair)
                continue
            if not isinstance(key, ScalarNode):
                self.check.add(
                    _line(key), field or "<top>", f"a key must be a name, not {_kind(self.value(key, field))}"
                )
                continue
            if key.value in explicit:
                first = _line(explicit[key.value][0])
                self.check.add(_line(key), _join(field, key.value), f"repeated key: first at line {first}")
                continue
            explicit[key.value] = (key, value)
        return {**merged, **explicit}

    def items(self, value: _Value, what: str) -> list[Node] | None:
        if isinstance(value.data, SequenceNode):
            return list(value.data.value)
        if value.null:
            return []
        self.check.add(value.line, value.field, f"must be a list of {what}, not {_kind(value)}")
        return None

    # -- sections

    def windows(self, value: _Value) -> tuple[MaintenanceWindow, ...] | _Bad:
        nodes = self.items(value, "windows")
        if nodes is None:
            return _BAD
        windows: list[MaintenanceWindow] = []
        bad = False
        for index, node in enumerate(nodes):
            window = self.window(node, f"windows[{index}]")
            if window is None:
                bad = True
            else:
                windows.append(window)
        return _BAD if bad else tuple(windows)

    def window(self, node: Node, field: str) -> MaintenanceWindow | None:
        check = self.check
        values = self.mapping(node, field, _WINDOW_KEYS, what="a window")
        if values is None:
            return None
        before = len(check.problems)
        days: tuple[Weekday, ...] = ()
        if "days" in values:
            days = self.days(values["days"])
        start = ""
        if "start" not in values or values["start"].null:
            check.add(_line(node), _join(field, "start"), 'missing: every window has a start ("22:00")')
        else:
            text = check.text(values["start"], 'a time "HH:MM"')
            match = _START.fullmatch(text.strip()) if isinstance(text, str) else None
            if match is None and isinstance(text, str):
                check.add(values["start"].line, values["start"].field, f'{text!r} is not a time "HH:MM" (00:00-23:59)')
            elif match is not None:
                start = f"{int(match[1]):02d}:{match[2]}"
        minutes = 0
        if "duration" not in values or values["duration"].null:
            check.add(_line(node), _join(field, "duration"), "missing: every window has a duration (6h, 90m)")
        else:
            minutes = self.duration(values["duration"])
        time_zone = "UTC"
        if "time_zone" in values:
            zone = check.text(values["time_zone"], "an IANA time zone name")
            if isinstance(zone, str):
                time_zone = zone.strip()
                try:
                    ZoneInfo(time_zone)
                except (ZoneInfoNotFoundError, ValueError, OSError):
                    hint = " (for example Europe/Berlin, America/New_York, UTC)"
                    check.add(values["time_zone"].line, values["time_zone"].field, f"unknown time zone {zone!r}{hint}")
        if len(check.problems) > before:
            return None
        return MaintenanceWindow(start=start, duration_minutes=minutes, days=days, time_zone=time_zone)

    def days(self, value: _Value) -> tuple[Weekday, ...]:
        if value.scalar and not value.null:
            items = [value]  # one day or range without a list: `days: mon-fri`
        else:
            nodes = self.items(value, "days") or []
            items = [self.value(node, f"{value.field}[{index}]") for index, node in enumerate(nodes)]
        chosen: set[Weekday] = set()
        for item in items:
            text = self.check.text(item, "a day (mon..sun) or a range (mon-fri)")
            if not isinstance(text, str):
                continue
            ends = [part.strip().lower() for part in text.split("-")]
            if len(ends) > 2 or any(end not in _DAYS for end in ends):
                allowed = ", ".join(day.value for day in Weekday)
                self.check.add(item.line, item.field, f"unknown day {text!r}: days are {allowed}, or a range mon-fri")
                continue
            first, last = _WEEK.index(_DAYS[ends[0]]), _WEEK.index(_DAYS[ends[-1]])
            # A range may wrap past Sunday (fri-mon).
            span = (last - first) % 7
            chosen.update(_WEEK[(first + step) % 7] for step in range(span + 1))
        return tuple(day for day in _WEEK if day in chosen)

    def duration(self, value: _Value) -> int:
        text = self.check.text(value, "a duration (6h, 90m, 1h30m or minutes)")
        if not isinstance(text, str):
            return 0
        written = text.strip().lower().replace(" ", "")
        # The text as written: YAML 1.1 would read 1:30 as the number 90.
        if written.isdigit():
            minutes = int(written)
        else:
            match = _DURATION.fullmatch(written)
            if match is None or not written:
                self.check.add(value.line, value.field, f"{text!r} is not a duration (6h, 90m, 1h30m, 1d or minutes)")
                return 0
            days, hours, mins = (int(group or 0) for group in match.groups())
            minutes = days * 24 * 60 + hours * 60 + mins
        if not 0 < minutes <= WINDOW_MINUTES_MAX:
            self.check.add(value.line, value.field, f"a window lasts more than 0 and at most 7 days, not {text!r}")
            return 0
        return minutes

    def policy(self, value: _Value) -> MigrationPolicy | _Bad:
        values = {} if value.null else self.mapping(_node(value), value.field, tuple(_POLICY_FIELDS), what="policy")
        if values is None:
            return _BAD
        chosen: dict[str, object] = {}
        bad = False
        for key, item in values.items():
            result = _POLICY_FIELDS[key](self, item)
            if isinstance(result, _Bad):
                bad = True
            else:
                chosen[key] = result
        default = MigrationPolicy()
        lease = chosen.get("slot_lease_seconds", default.slot_lease_seconds)
        timeout = chosen.get("move_timeout_seconds", default.move_timeout_seconds)
        problem = (
            slot_lease_problem(lease, timeout)
            if isinstance(lease, int | float) and isinstance(timeout, int | float)
            else ""
        )
        if problem:
            where = values.get("slot_lease_seconds") or values.get("move_timeout_seconds")
            assert where is not None  # the defaults agree with each other
            self.check.add(where.line, where.field, problem)
        if bad or problem:
            return _BAD
        return dataclasses.replace(default, **chosen)  # type: ignore[arg-type]

    def hosts(self, value: _Value) -> tuple[HostProfile, ...] | _Bad:
        if value.null:
            return ()
        pairs = self._pairs(_node(value), value.field, "hosts", ())
        if pairs is None:
            return _BAD
        profiles: list[HostProfile] = []
        named: dict[str, int] = {}
        default = HostProfile("")
        bad = False
        for key, (key_node, node) in pairs.items():
            field = _join("hosts", key)
            host = self.check.host(_Value(field, _line(key_node), key, key))
            values = self.mapping(node, field, _HOST_KEYS, what="a host profile") if not _is_null(node) else {}
            if values is None:
                bad = True
                continue
            slots: int | _Bad = default.slots
            if "slots" in values:
                slots = self.check.integer(values["slots"], 1, HOST_SLOTS_MAX)
            link: float | _Bad = default.link_bits_per_second / 1e9
            if "link_gbps" in values:
                link = self.check.number(values["link_gbps"], LINK_GBPS_MAX, positive=True, unit=" Gbit/s")
            if isinstance(host, str) and host.lower() in named:
                self.check.add(
                    _line(key_node), field, f"host {host} already has a profile, at line {named[host.lower()]}"
                )
                bad = True
            elif isinstance(host, str):
                named[host.lower()] = _line(key_node)
            if isinstance(host, _Bad) or isinstance(slots, _Bad) or isinstance(link, _Bad):
                bad = True
                continue
            profiles.append(HostProfile(host=host, slots=slots, link_bits_per_second=link * 1e9))
        return _BAD if bad else tuple(profiles)

    def waves(self, value: _Value) -> list[CampaignWave | None]:
        """Each wave, None for one whose name or failure policy was a problem."""
        nodes = self.items(value, "waves")
        result: list[CampaignWave | None] = []
        names: dict[str, int] = {}
        for index, node in enumerate(nodes or []):
            field = f"waves[{index}]"
            values = self.mapping(node, field, _WAVE_KEYS, what="a wave")
            if values is None:
                continue
            name: str | None = f"wave-{index + 1}"
            if "name" in values:
                name = self.check.wave_name(values["name"])
            if name is not None and name.lower() in names:
                at = values["name"].line if "name" in values else _line(node)
                self.check.add(
                    at, _join(field, "name"), f"wave {name!r} is named already, at line {names[name.lower()]}"
                )
            elif name is not None:
                names[name.lower()] = values["name"].line if "name" in values else _line(node)
            on_failure = WaveFailurePolicy.CONTINUE
            if "on_failure" in values:
                chosen = self.check.choice(values["on_failure"], WaveFailurePolicy)
                on_failure = chosen if isinstance(chosen, WaveFailurePolicy) else on_failure
            after: int | _Bad = 1
            if "pause_after_failures" in values:
                after = self.check.integer(values["pause_after_failures"], 1, PLAN_MOVES_MAX)
                if on_failure is not WaveFailurePolicy.PAUSE and not isinstance(after, _Bad):
                    item = values["pause_after_failures"]
                    self.check.add(item.line, item.field, "applies only with on_failure: pause")
            moves: list[CampaignMove] = []
            if "moves" not in values:
                self.check.add(_line(node), _join(field, "moves"), "missing: every wave lists its moves")
            else:
                move_nodes = self.items(values["moves"], "moves")
                for move_index, move_node in enumerate(move_nodes or []):
                    move = self.move(move_node, f"{field}.moves[{move_index}]", allow_wave=False)
                    if move is not None:
                        moves.append(move[0])
                if move_nodes == []:
                    self.check.add(values["moves"].line, values["moves"].field, "a wave with no moves")
            if name is None or isinstance(after, _Bad):
                result.append(None)
            else:
                result.append(CampaignWave(name, tuple(moves), on_failure, after))
        return result

    def flat_moves(self, value: _Value) -> tuple[CampaignWave, ...]:
        grouped: list[tuple[CampaignMove, str]] = []
        for index, node in enumerate(self.items(value, "moves") or []):
            move = self.move(node, f"moves[{index}]", allow_wave=True)
            if move is not None:
                grouped.append(move)
        return _group(grouped)

    def move(self, node: Node, field: str, *, allow_wave: bool) -> tuple[CampaignMove, str] | None:
        if self.moves_count >= PLAN_MOVES_MAX:
            if self.moves_count == PLAN_MOVES_MAX:
                self.check.add(_line(node), field, f"more than {PLAN_MOVES_MAX} moves; split the plan into campaigns")
            self.moves_count += 1
            return None
        self.moves_count += 1
        allowed = (*_MOVE_KEYS, "wave") if allow_wave else _MOVE_KEYS
        values = self.mapping(node, field, allowed, what="a move")
        if values is None:
            return None
        wave: str | None = DEFAULT_WAVE
        item = values.pop("wave", None)
        if item is not None and not item.null:
            wave = self.check.wave_name(item)
        move = self.check.move(values, _line(node), field)
        if move is None or wave is None:
            return None
        return move, wave


def _node(value: _Value) -> Node:
    assert value.node is not None  # every YAML value keeps its node
    return value.node


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


# -- policy fields -----------------------------------------------------------------------------------------


def _seconds(high: float) -> Callable[[_YamlPlan, _Value], float | _Bad]:
    return lambda plan, value: plan.check.number(value, high, positive=True, unit=" s")


def _flag(plan: _YamlPlan, value: _Value) -> bool | _Bad:
    return plan.check.boolean(value)


def _networks(plan: _YamlPlan, value: _Value) -> tuple[str, ...] | _Bad:
    nodes = plan.items(value, "subnets") if not (value.scalar and not value.null) else [value.data]
    if nodes is None:
        return _BAD
    subnets: list[str] = []
    bad = False
    for index, node in enumerate(nodes):
        item = value if value.scalar else plan.value(node, f"{value.field}[{index}]")
        text = plan.check.text(item, "a subnet (10.0.20.0/24)")
        if isinstance(text, _Bad):
            bad = True
            continue
        try:
            subnets.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            plan.check.add(item.line, item.field, f"{text!r} is not a subnet (10.0.20.0/24, fd00::/64)")
            bad = True
    return _BAD if bad else tuple(dict.fromkeys(subnets))


def _max_migrations(plan: _YamlPlan, value: _Value) -> int | _Bad | None:
    return None if value.null else plan.check.integer(value, 1, HOST_SLOTS_MAX)


def _slot_book(plan: _YamlPlan, value: _Value) -> str | _Bad:
    if value.null:
        return ""
    text = plan.check.text(value, "a slot book name")
    if isinstance(text, str) and not _CAMPAIGN_NAME.fullmatch(text):
        return plan.check.add(
            value.line, value.field, f"{text!r} is not a slot book name: A-Z, a-z, 0-9, '.', '_', '-'"
        )
    return text


def _enum(kind: type[_E], *, optional: bool = False) -> Callable[[_YamlPlan, _Value], _E | _Bad | None]:
    return lambda plan, value: plan.check.choice(value, kind, optional=optional)


# One reader per MigrationPolicy field (a test checks that every field has one).
_POLICY_FIELDS: dict[str, Callable[[_YamlPlan, _Value], object]] = {
    "delegation": _enum(DelegationPolicy),
    "delegation_mode": _enum(DelegationMode, optional=True),
    "revert_delegation": _flag,
    "restore_settings": _flag,
    "ha": _enum(HaChoice, optional=True),
    "require_approval": _flag,
    "approval_timeout_seconds": _seconds(30 * 24 * 3600),
    "authentication": _enum(MigrationAuthentication),
    "performance": _enum(MigrationPerformance),
    "migration_networks": _networks,
    "eject_missing_iso": _flag,
    "max_migrations_per_host": _max_migrations,
    "move_timeout_seconds": _seconds(7 * 24 * 3600),
    "slot_lease_seconds": _seconds(24 * 3600),
    "slot_book": _slot_book,
    "move_heartbeat_seconds": _seconds(3600),
    "guest_timeout_seconds": _seconds(24 * 3600),
    "guest_check": _enum(GuestCheck),
}
