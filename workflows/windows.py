"""Maintenance windows: when a campaign may start moves, as instants in UTC.

Pure and deterministic (no clock: the caller passes `now`, in a workflow `workflow.now()`); the only thing read is
the time-zone data zoneinfo loads (and caches) from the system's zoneinfo directory or the `tzdata` package.

Workflows import this module passed through, as they do the slot book:
    with workflow.unsafe.imports_passed_through():
        from workflows.windows import open_window, seconds_until_open
Temporal's sandbox restricts members of `zoneinfo` (`ZoneInfo.clear_cache`, `from_file`, `reset_tzpath`), so inside
it `ZoneInfo(key)` returns a restriction proxy that datetime refuses as a tzinfo ("tzinfo argument must be None or of
a tzinfo subclass, not type '_RestrictedProxy'"), even when `zoneinfo` itself is imported passed through. Loaded
outside the sandbox, this module holds the real class; importing it inside the sandbox fails the worker's start-up
with that instruction rather than every workflow task at run time.

An occurrence of a window starts on each listed local day (every day when `days` is empty) at the local `start` in
the window's time zone and lasts `duration_minutes` of elapsed time, so it may run past midnight and into the next
week (a Saturday 22:00 window of 6 h is open on Sunday at 03:00), and a window that spans a daylight-saving change
is an hour longer or shorter on the wall clock, never in minutes. Local starts are resolved as zoneinfo does with
`fold=0`:
- a start that does not exist that day (the spring-forward gap: 02:30 in Berlin on the last Sunday of March) is
  read with the offset before the change, that is the instant the gap's length after it (03:30 CEST);
- a start that exists twice (the fall-back overlap: 02:30 in Berlin on the last Sunday of October) is the first of
  the two (02:30 CEST).
Occurrences are half open: open from their start, closed at their end.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import PLAN_INVALID, MaintenanceWindow, Weekday

if workflow.unsafe.in_sandbox():
    raise ImportError(
        "import workflows.windows inside `with workflow.unsafe.imports_passed_through():` (the sandbox's ZoneInfo "
        "is a proxy that datetime does not accept)"
    )

__all__ = [
    "MAX_DURATION_MINUTES",
    "UPCOMING_HORIZON",
    "always_open",
    "end_inside_windows",
    "next_opening",
    "open_window",
    "seconds_until_open",
    "upcoming",
    "window_problem",
]

MAX_DURATION_MINUTES = 7 * 24 * 60
# An occurrence lasts at most a week, so one that began on the local day eight days before `now` has ended whatever
# the daylight-saving shifts in between: the scan starts there.
_LOOKBACK_DAYS = 8
# `upcoming` follows a span only this far: windows that together leave no gap (a daily window of 25 h) would
# otherwise be one span without end.
UPCOMING_HORIZON = timedelta(days=371)

_START = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_WEEKDAY_NUMBER = {
    Weekday.MON: 0,
    Weekday.TUE: 1,
    Weekday.WED: 2,
    Weekday.THU: 3,
    Weekday.FRI: 4,
    Weekday.SAT: 5,
    Weekday.SUN: 6,
}

Span = tuple[datetime, datetime]


def window_problem(window: MaintenanceWindow) -> str:
    """What is wrong with `window`, in one sentence naming each problem; "" when it is valid."""
    problems: list[str] = []
    if not isinstance(window.start, str) or _START.fullmatch(window.start) is None:
        problems.append(f"start {window.start!r} is not a time HH:MM from 00:00 to 23:59")
    duration = window.duration_minutes
    if isinstance(duration, bool) or not isinstance(duration, int):
        problems.append(f"duration_minutes {duration!r} is not a whole number of minutes")
    elif not 1 <= duration <= MAX_DURATION_MINUTES:
        problems.append(f"duration_minutes {duration} is not from 1 to {MAX_DURATION_MINUTES} (one week)")
    zone_problem = _zone_problem(window.time_zone)
    if zone_problem:
        problems.append(zone_problem)
    unknown = [day for day in window.days if _weekday(day) is None]
    if unknown:
        names = ", ".join(repr(day) for day in unknown)
        allowed = ", ".join(day.value for day in Weekday)
        problems.append(f"days {names} {'is not a day' if len(unknown) == 1 else 'are not days'} ({allowed})")
    if not problems:
        return ""
    return "maintenance window: " + "; ".join(problems)


def always_open(windows: Sequence[MaintenanceWindow]) -> bool:
    """No windows at all: moves may start at any time (`open_window` then answers None, as for a closed one)."""
    return not windows


def open_window(now: datetime, windows: Sequence[MaintenanceWindow]) -> Span | None:
    """The (start, end) in UTC of an occurrence open at `now`, the one that ends last when several are; None when
    none is, and when there are no windows (see `always_open`). Overlapping occurrences are not joined here
    (`upcoming` joins them): at the end returned, ask again."""
    moment = _utc(now)
    best: Span | None = None
    for window in windows:
        for start, end in _occurrences(window, moment):
            if start > moment:
                break
            if moment < end and (best is None or end > best[1] or (end == best[1] and start < best[0])):
                best = (start, end)
    return best


def next_opening(now: datetime, windows: Sequence[MaintenanceWindow]) -> datetime | None:
    """The earliest start in UTC, at or after `now`, of any occurrence of `windows`; None only when there are no
    windows. An occurrence open at `now` that began before it does not count: this is the next start."""
    moment = _utc(now)
    earliest: datetime | None = None
    for window in windows:
        start = next(start for start, _ in _occurrences(window, moment) if start >= moment)
        if earliest is None or start < earliest:
            earliest = start
    return earliest


def seconds_until_open(now: datetime, windows: Sequence[MaintenanceWindow]) -> float:
    """How long from `now` until a window is open: 0 when one is, and when there are no windows."""
    if always_open(windows) or open_window(now, windows) is not None:
        return 0.0
    opening = next_opening(now, windows)
    assert opening is not None  # windows is not empty
    return (opening - _utc(now)).total_seconds()


def upcoming(now: datetime, windows: Sequence[MaintenanceWindow], count: int) -> list[Span]:
    """The next `count` spans in UTC in which a window is open, the one open at `now` (if any) first; occurrences
    that overlap or touch are joined into one span. Empty when there are no windows. The open span starts with the
    earliest occurrence still open at `now` (earlier ones it was joined with are left out); a span still growing
    `UPCOMING_HORIZON` after `now` ends with the last occurrence that starts within the horizon."""
    if count < 1 or not windows:
        return []
    moment = _utc(now)
    horizon = moment + UPCOMING_HORIZON
    ordered = heapq.merge(*(_occurrences(window, moment) for window in windows))
    spans: list[Span] = []
    current: Span | None = None
    for start, end in ordered:
        if end <= moment:
            continue
        if start > horizon:
            break
        if current is None:
            current = (start, end)
        elif start <= current[1]:
            current = (current[0], max(current[1], end))
        else:
            spans.append(current)
            if len(spans) == count:
                return spans
            current = (start, end)
    if current is not None:
        spans.append(current)
    return spans[:count]


def _occurrences(window: MaintenanceWindow, now: datetime) -> Iterator[Span]:
    """Every occurrence of `window` in start order, without end, from the first that could still be open at
    `now`."""
    problem = window_problem(window)
    if problem:
        # A plan is validated before its campaign starts; a window that slips through fails the workflow instead
        # of retrying its task forever (a plain exception would).
        raise ApplicationError(problem, type=PLAN_INVALID, non_retryable=True)
    zone = ZoneInfo(window.time_zone)
    hour, minute = (int(part) for part in window.start.split(":"))
    at = time(hour, minute)
    duration = timedelta(minutes=window.duration_minutes)
    days = _weekdays(window.days)
    day = _first_day(now, zone)
    while True:
        if day.weekday() in days:
            # fold=0 (the default): the earlier reading of an ambiguous start, the later instant for a missing one.
            start = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
            yield start, start + duration
        day += timedelta(days=1)


def _weekdays(days: Iterable[Weekday | str]) -> frozenset[int]:
    numbers = frozenset(_WEEKDAY_NUMBER[weekday] for day in days if (weekday := _weekday(day)) is not None)
    return numbers or frozenset(range(7))


def _weekday(day: object) -> Weekday | None:
    # A window that came through a data converter or a plan file may carry the day's name rather than the member.
    if not isinstance(day, str):
        return None
    try:
        return Weekday(day)
    except ValueError:
        return None


def _zone_problem(name: object) -> str:
    if not isinstance(name, str):
        return f"time_zone {name!r} is not an IANA time-zone name"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"time_zone {name!r} is not a known IANA time zone (for example Europe/Berlin)"
    return ""


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    return now.astimezone(UTC)


def _first_day(now: datetime, zone: ZoneInfo) -> date:
    return now.astimezone(zone).date() - timedelta(days=_LOOKBACK_DAYS)


def end_inside_windows(now: datetime, windows: Sequence[MaintenanceWindow], work_seconds: float) -> datetime:
    """When `work_seconds` of a campaign's work, started at `now`, ends if work advances only while a window is
    open: the forecast's wall-clock end. Moves in flight finish after a window closes, so the campaign's real end
    may come a little later (by at most its longest move). No windows: `now + work_seconds`."""
    moment = _utc(now)
    if not windows:
        return moment + timedelta(seconds=work_seconds)
    left = max(0.0, work_seconds)
    cursor = moment
    # Spans in batches: a campaign of months may cross hundreds of windows.
    while True:
        spans = upcoming(cursor, windows, 64)
        if not spans:
            return cursor + timedelta(seconds=left)
        for start, end in spans:
            begin = max(start, cursor)
            length = (end - begin).total_seconds()
            if length >= left:
                return begin + timedelta(seconds=left)
            left -= length
            cursor = end
