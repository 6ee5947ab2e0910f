"""Maintenance windows: examples (past midnight, over the week end, daylight saving in Berlin and New York, overlaps,
every-day windows, invalid windows), properties over random instants and windows, and one workflow on the
time-skipping server that waits for a window inside Temporal's sandbox."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

with workflow.unsafe.imports_passed_through():
    import pytest
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from workflows.contracts import PLAN_INVALID, MaintenanceWindow, Weekday

    # Passed through, as a campaign imports it (see the module's docstring).
    from workflows.windows import (
        MAX_DURATION_MINUTES,
        UPCOMING_HORIZON,
        always_open,
        next_opening,
        open_window,
        seconds_until_open,
        upcoming,
        window_problem,
    )

MON, TUE, WED, THU, FRI, SAT, SUN = (
    Weekday.MON,
    Weekday.TUE,
    Weekday.WED,
    Weekday.THU,
    Weekday.FRI,
    Weekday.SAT,
    Weekday.SUN,
)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _window(start: str, minutes: int, *days: Weekday, zone: str = "UTC") -> MaintenanceWindow:
    return MaintenanceWindow(start=start, duration_minutes=minutes, days=days, time_zone=zone)


# -- window_problem ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window",
    [
        _window("00:00", 1),
        _window("23:59", MAX_DURATION_MINUTES, MON, SUN),
        _window("09:30", 90, SAT, zone="Europe/Berlin"),
        _window("02:30", 60, zone="America/New_York"),
        MaintenanceWindow("08:00", 60, ("mon", "fri"), "UTC"),  # type: ignore[arg-type]  # names from a plan file
    ],
)
def test_a_valid_window_has_no_problem(window: MaintenanceWindow) -> None:
    assert window_problem(window) == ""


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (_window("24:00", 60), "start '24:00' is not a time HH:MM from 00:00 to 23:59"),
        (_window("9:00", 60), "start '9:00' is not a time HH:MM"),
        (_window("12:60", 60), "start '12:60' is not a time HH:MM"),
        (_window("noon", 60), "start 'noon' is not a time HH:MM"),
        (_window("12:00 ", 60), "start '12:00 ' is not a time HH:MM"),
        (_window("12:00", 0), "duration_minutes 0 is not from 1 to 10080 (one week)"),
        (_window("12:00", -5), "duration_minutes -5 is not from 1 to 10080"),
        (_window("12:00", MAX_DURATION_MINUTES + 1), "duration_minutes 10081 is not from 1 to 10080"),
        (_window("12:00", 60, zone="Mars/Olympus_Mons"), "time_zone 'Mars/Olympus_Mons' is not a known IANA time"),
        (_window("12:00", 60, zone=""), "time_zone '' is not a known IANA time zone"),
        (_window("12:00", 60, zone="../etc/passwd"), "time_zone '../etc/passwd' is not a known IANA time zone"),
        (_window("12:00", 60, zone="zone.tab"), "time_zone 'zone.tab' is not a known IANA time zone"),
        (
            MaintenanceWindow("12:00", 60, ("monday",), "UTC"),  # type: ignore[arg-type]
            "days 'monday' is not a day (mon, tue, wed, thu, fri, sat, sun)",
        ),
        (
            MaintenanceWindow("12:00", 60, (MON, "Tue", "x"), "UTC"),  # type: ignore[arg-type]
            "days 'Tue', 'x' are not days (mon,",
        ),
    ],
)
def test_an_invalid_window_names_its_problem(window: MaintenanceWindow, expected: str) -> None:
    problem = window_problem(window)
    assert problem.startswith("maintenance window: ")
    assert expected in problem


def test_every_problem_of_a_window_is_named_in_one_sentence() -> None:
    problem = window_problem(MaintenanceWindow("25:00", 0, ("xx",), "Nowhere/Town"))  # type: ignore[arg-type]
    assert problem == (
        "maintenance window: start '25:00' is not a time HH:MM from 00:00 to 23:59; "
        "duration_minutes 0 is not from 1 to 10080 (one week); "
        "time_zone 'Nowhere/Town' is not a known IANA time zone (for example Europe/Berlin); "
        "days 'xx' is not a day (mon, tue, wed, thu, fri, sat, sun)"
    )


def test_an_invalid_window_fails_the_workflow_rather_than_retrying_its_task() -> None:
    bad = [_window("12:00", 60, zone="Nowhere/Town")]
    for call in (open_window, next_opening, seconds_until_open):
        with pytest.raises(ApplicationError) as raised:
            call(_utc(2024, 1, 1), bad)
        assert raised.value.type == PLAN_INVALID
        assert raised.value.non_retryable
        assert "Nowhere/Town" in raised.value.message


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        open_window(datetime(2024, 1, 1, 12, 0), [_window("12:00", 60)])


# -- open_window, next_opening, seconds_until_open ----------------------------------------------------------------


def test_no_windows_means_always_open() -> None:
    now = _utc(2024, 5, 1, 12)
    assert always_open([])
    assert not always_open([_window("12:00", 60)])
    assert open_window(now, []) is None
    assert next_opening(now, []) is None
    assert seconds_until_open(now, []) == 0
    assert upcoming(now, [], 5) == []


def test_a_window_is_open_from_its_start_and_closed_at_its_end() -> None:
    windows = [_window("09:00", 60, WED)]  # 2024-05-01 is a Wednesday
    assert open_window(_utc(2024, 5, 1, 8, 59), windows) is None
    assert open_window(_utc(2024, 5, 1, 9), windows) == (_utc(2024, 5, 1, 9), _utc(2024, 5, 1, 10))
    assert open_window(_utc(2024, 5, 1, 9, 59), windows) == (_utc(2024, 5, 1, 9), _utc(2024, 5, 1, 10))
    assert open_window(_utc(2024, 5, 1, 10), windows) is None
    assert seconds_until_open(_utc(2024, 5, 1, 8, 59), windows) == 60
    assert seconds_until_open(_utc(2024, 5, 1, 9, 30), windows) == 0
    # Closed at its end: the next start is next Wednesday.
    assert next_opening(_utc(2024, 5, 1, 10), windows) == _utc(2024, 5, 8, 9)
    assert seconds_until_open(_utc(2024, 5, 1, 10), windows) == 7 * 24 * 3600 - 3600


def test_next_opening_at_a_start_is_that_start_and_inside_a_window_the_next_one() -> None:
    windows = [_window("09:00", 60)]
    assert next_opening(_utc(2024, 5, 1, 9), windows) == _utc(2024, 5, 1, 9)
    assert next_opening(_utc(2024, 5, 1, 9, 0) + timedelta(microseconds=1), windows) == _utc(2024, 5, 2, 9)


def test_a_window_runs_past_midnight() -> None:
    windows = [_window("22:00", 6 * 60, SAT)]  # 2024-05-04 is a Saturday
    assert open_window(_utc(2024, 5, 5, 3), windows) == (_utc(2024, 5, 4, 22), _utc(2024, 5, 5, 4))
    assert open_window(_utc(2024, 5, 5, 4), windows) is None
    # Sunday is not a listed day: nothing starts on it, though Saturday's window is open on it.
    assert next_opening(_utc(2024, 5, 5, 3), windows) == _utc(2024, 5, 11, 22)


def test_a_window_runs_over_the_week_end_into_monday() -> None:
    windows = [_window("23:00", 3 * 60, SUN, zone="Europe/Berlin")]  # 2024-05-05 is a Sunday; CEST is UTC+2
    assert open_window(_utc(2024, 5, 5, 23, 30), windows) == (_utc(2024, 5, 5, 21), _utc(2024, 5, 6))
    assert open_window(_utc(2024, 5, 6), windows) is None
    assert seconds_until_open(_utc(2024, 5, 6), windows) == (7 * 24 - 3) * 3600


def test_a_window_that_started_days_ago_is_still_open() -> None:
    windows = [_window("06:00", MAX_DURATION_MINUTES - 1, MON)]  # 2024-05-06 is a Monday
    assert open_window(_utc(2024, 5, 13, 5, 58), windows) == (_utc(2024, 5, 6, 6), _utc(2024, 5, 13, 5, 59))
    assert open_window(_utc(2024, 5, 13, 5, 59), windows) is None
    assert seconds_until_open(_utc(2024, 5, 13, 5, 59), windows) == 60


def test_of_overlapping_windows_the_one_ending_last_is_given() -> None:
    windows = [_window("08:00", 4 * 60), _window("10:00", 4 * 60), _window("09:00", 60)]
    assert open_window(_utc(2024, 5, 1, 9, 30), windows) == (_utc(2024, 5, 1, 8), _utc(2024, 5, 1, 12))
    assert open_window(_utc(2024, 5, 1, 11), windows) == (_utc(2024, 5, 1, 10), _utc(2024, 5, 1, 14))
    # A week-long window every Monday overlaps its own next occurrence by nothing: the new one starts as the old
    # one ends, and the new one is given.
    weekly = [_window("00:00", MAX_DURATION_MINUTES, MON)]
    assert open_window(_utc(2024, 5, 13), weekly) == (_utc(2024, 5, 13), _utc(2024, 5, 20))
    assert open_window(_utc(2024, 5, 12, 23, 59), weekly) == (_utc(2024, 5, 6), _utc(2024, 5, 13))


def test_an_every_day_window_opens_each_day_in_its_zone() -> None:
    windows = [_window("01:00", 120, zone="Asia/Tokyo")]  # 16:00 UTC the day before
    for day in range(1, 8):
        assert open_window(_utc(2024, 5, day, 16, 30), windows) == (_utc(2024, 5, day, 16), _utc(2024, 5, day, 18))
        assert open_window(_utc(2024, 5, day, 18, 30), windows) is None
    assert next_opening(_utc(2024, 5, 1, 18), windows) == _utc(2024, 5, 2, 16)


def test_several_windows_open_at_the_earliest_next_start() -> None:
    windows = [_window("20:00", 60, FRI), _window("06:00", 30, TUE, THU, zone="America/New_York")]
    # Wednesday 2024-05-01 12:00 UTC: Thursday 06:00 EDT (10:00 UTC) comes before Friday 20:00 UTC.
    assert next_opening(_utc(2024, 5, 1, 12), windows) == _utc(2024, 5, 2, 10)
    assert next_opening(_utc(2024, 5, 2, 10, 1), windows) == _utc(2024, 5, 3, 20)


# -- daylight saving ------------------------------------------------------------------------------------------------


def test_berlin_spring_forward_a_missing_start_moves_on_by_the_gap() -> None:
    # 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:30 does not exist and is read as CET, 01:30 UTC (03:30 CEST).
    windows = [_window("02:30", 60, SUN, zone="Europe/Berlin")]
    assert next_opening(_utc(2024, 3, 30), windows) == _utc(2024, 3, 31, 1, 30)
    assert open_window(_utc(2024, 3, 31, 2, 29), windows) == (_utc(2024, 3, 31, 1, 30), _utc(2024, 3, 31, 2, 30))
    # The Sunday after, 02:30 CEST exists: 00:30 UTC.
    assert next_opening(_utc(2024, 3, 31, 2), windows) == _utc(2024, 4, 7, 0, 30)


def test_berlin_spring_forward_a_window_lasts_its_minutes_not_its_wall_clock() -> None:
    # From 01:00 CET for three hours: until 05:00 CEST on the wall, 03:00 UTC.
    windows = [_window("01:00", 180, SUN, zone="Europe/Berlin")]
    assert open_window(_utc(2024, 3, 31, 2), windows) == (_utc(2024, 3, 31), _utc(2024, 3, 31, 3))
    local_end = _utc(2024, 3, 31, 3).astimezone(ZoneInfo("Europe/Berlin"))
    assert local_end.time() == time(5, 0)


def test_berlin_fall_back_an_ambiguous_start_is_the_first() -> None:
    # 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, first as CEST (00:30 UTC).
    windows = [_window("02:30", 30, SUN, zone="Europe/Berlin")]
    assert next_opening(_utc(2024, 10, 26), windows) == _utc(2024, 10, 27, 0, 30)
    assert open_window(_utc(2024, 10, 27, 0, 45), windows) == (_utc(2024, 10, 27, 0, 30), _utc(2024, 10, 27, 1))
    # Not again at the second 02:30 (CET, 01:30 UTC).
    assert open_window(_utc(2024, 10, 27, 1, 30), windows) is None
    # A week later 02:30 CET is 01:30 UTC.
    assert next_opening(_utc(2024, 10, 27, 1), windows) == _utc(2024, 11, 3, 1, 30)


def test_berlin_fall_back_a_day_long_daily_window_leaves_the_extra_hour_closed() -> None:
    # Every day from 00:00 for 24 h: the local day of 2024-10-27 has 25 h, so its last hour is outside.
    windows = [_window("00:00", 24 * 60, zone="Europe/Berlin")]
    assert open_window(_utc(2024, 10, 27, 21, 59), windows) == (_utc(2024, 10, 26, 22), _utc(2024, 10, 27, 22))
    assert open_window(_utc(2024, 10, 27, 22, 30), windows) is None
    assert seconds_until_open(_utc(2024, 10, 27, 22, 30), windows) == 30 * 60
    assert upcoming(_utc(2024, 10, 25), windows, 2) == [
        (_utc(2024, 10, 24, 22), _utc(2024, 10, 27, 22)),
        # Touching days from then on, through spring forward (a 23 h day: they overlap), to the next fall back.
        (_utc(2024, 10, 27, 23), _utc(2025, 10, 26, 22)),
    ]


def test_new_york_spring_forward_a_missing_start_moves_on_by_the_gap() -> None:
    # 2024-03-10: 02:00 EST becomes 03:00 EDT; 02:30 is read as EST, 07:30 UTC (03:30 EDT).
    windows = [_window("02:30", 120, SUN, zone="America/New_York")]
    assert next_opening(_utc(2024, 3, 9), windows) == _utc(2024, 3, 10, 7, 30)
    assert open_window(_utc(2024, 3, 10, 9), windows) == (_utc(2024, 3, 10, 7, 30), _utc(2024, 3, 10, 9, 30))
    assert next_opening(_utc(2024, 3, 10, 8), windows) == _utc(2024, 3, 17, 6, 30)


def test_new_york_fall_back_an_ambiguous_start_is_the_first() -> None:
    # 2024-11-03: 02:00 EDT becomes 01:00 EST; 01:30 happens twice, first as EDT (05:30 UTC).
    windows = [_window("01:30", 45, SUN, zone="America/New_York")]
    assert next_opening(_utc(2024, 11, 2), windows) == _utc(2024, 11, 3, 5, 30)
    assert open_window(_utc(2024, 11, 3, 6), windows) == (_utc(2024, 11, 3, 5, 30), _utc(2024, 11, 3, 6, 15))
    assert open_window(_utc(2024, 11, 3, 6, 45), windows) is None  # the second 01:30 (EST, 06:30 UTC) + 15 min
    # A window over the change lasts its minutes: 00:30 EDT for 3 h ends at 02:30 EST on the wall.
    long = [_window("00:30", 180, SUN, zone="America/New_York")]
    assert open_window(_utc(2024, 11, 3, 7), long) == (_utc(2024, 11, 3, 4, 30), _utc(2024, 11, 3, 7, 30))


# -- upcoming -------------------------------------------------------------------------------------------------------


def test_upcoming_lists_the_next_spans_with_the_open_one_first() -> None:
    windows = [_window("09:00", 60, MON, WED)]  # 2024-05-01 is a Wednesday
    assert upcoming(_utc(2024, 5, 1, 9, 30), windows, 3) == [
        (_utc(2024, 5, 1, 9), _utc(2024, 5, 1, 10)),
        (_utc(2024, 5, 6, 9), _utc(2024, 5, 6, 10)),
        (_utc(2024, 5, 8, 9), _utc(2024, 5, 8, 10)),
    ]
    assert upcoming(_utc(2024, 5, 1, 10), windows, 1) == [(_utc(2024, 5, 6, 9), _utc(2024, 5, 6, 10))]
    assert upcoming(_utc(2024, 5, 1, 10), windows, 0) == []


def test_upcoming_joins_overlapping_and_touching_windows() -> None:
    windows = [
        _window("08:00", 120),
        _window("09:00", 120),  # overlaps the first
        _window("11:00", 60),  # touches the second
        _window("13:00", 60),  # apart
        _window("22:00", 4 * 60),  # past midnight
    ]
    assert upcoming(_utc(2024, 5, 1, 7), windows, 4) == [
        (_utc(2024, 5, 1, 8), _utc(2024, 5, 1, 12)),
        (_utc(2024, 5, 1, 13), _utc(2024, 5, 1, 14)),
        (_utc(2024, 5, 1, 22), _utc(2024, 5, 2, 2)),
        (_utc(2024, 5, 2, 8), _utc(2024, 5, 2, 12)),
    ]


def test_upcoming_stops_following_windows_that_never_close_at_the_horizon() -> None:
    now = _utc(2024, 5, 1, 12)
    spans = upcoming(now, [_window("00:00", 25 * 60)], 3)
    assert len(spans) == 1
    start, end = spans[0]
    assert start == _utc(2024, 5, 1)  # the start of the earliest occurrence still open
    assert now + UPCOMING_HORIZON <= end <= now + UPCOMING_HORIZON + timedelta(days=2)


# -- properties -------------------------------------------------------------------------------------------------------

_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # half-hour daylight saving
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
    "Asia/Kolkata",
    "Etc/GMT-14",
]
# Zones with one offset over the whole range drawn, where the windows can be checked by plain wall-clock arithmetic.
_FIXED_ZONES = ["UTC", "Asia/Kolkata", "Etc/GMT-14", "Etc/GMT+11"]

_instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))


def _windows(zones: list[str]) -> st.SearchStrategy[list[MaintenanceWindow]]:
    window = st.builds(
        MaintenanceWindow,
        start=st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
        duration_minutes=st.one_of(st.integers(1, 180), st.integers(1, MAX_DURATION_MINUTES)),
        days=st.lists(st.sampled_from(list(Weekday)), unique=True, max_size=7).map(tuple),
        time_zone=st.sampled_from(zones),
    )
    return st.lists(window, min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(now=_instants, windows=_windows(_ZONES))
def test_waiting_the_seconds_until_open_lands_inside_a_window(now: datetime, windows: list[MaintenanceWindow]) -> None:
    wait = seconds_until_open(now, windows)
    current = open_window(now, windows)
    assert (wait == 0) == (current is not None)
    if current is not None:
        assert current[0] <= now < current[1]
    opening = now + timedelta(seconds=wait)
    landed = open_window(opening, windows)
    assert landed is not None
    assert landed[0] <= opening < landed[1]
    following = next_opening(now, windows)
    assert following is not None
    assert following >= now
    if current is None:
        assert following == opening
    # The first span ahead is the one open now, or the one that opens next.
    first = upcoming(now, windows, 1)[0]
    if current is None:
        assert first[0] == following
    else:
        assert first[0] <= current[0] < current[1] <= first[1]


@settings(max_examples=200, deadline=None)
@given(now=_instants, windows=_windows(_ZONES), count=st.integers(1, 6))
def test_upcoming_spans_are_ordered_apart_and_made_of_windows(
    now: datetime, windows: list[MaintenanceWindow], count: int
) -> None:
    spans = upcoming(now, windows, count)
    assert 1 <= len(spans) <= count
    assert spans[0][1] > now
    for start, end in spans:
        assert start < end
        assert open_window(start, windows) is not None
        assert open_window(end - timedelta(microseconds=1), windows) is not None
        assert open_window(end, windows) is None or end >= now + UPCOMING_HORIZON
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start
        assert open_window(end, windows) is None
        assert next_opening(end, windows) == start


def _open_by_wall_clock(now: datetime, window: MaintenanceWindow) -> bool:
    """The same rule without zoneinfo's resolution, for a zone of one fixed offset: local wall-clock arithmetic."""
    local = now.astimezone(ZoneInfo(window.time_zone)).replace(tzinfo=None)
    hour, minute = (int(part) for part in window.start.split(":"))
    allowed = {list(Weekday).index(day) for day in window.days} or set(range(7))
    for back in range(9):
        day = local.date() - timedelta(days=back)
        start = datetime.combine(day, time(hour, minute))
        if day.weekday() in allowed and start <= local < start + timedelta(minutes=window.duration_minutes):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(now=_instants, windows=_windows(_FIXED_ZONES))
def test_open_agrees_with_wall_clock_arithmetic_in_fixed_offset_zones(
    now: datetime, windows: list[MaintenanceWindow]
) -> None:
    assert (open_window(now, windows) is not None) == any(_open_by_wall_clock(now, w) for w in windows)


# -- inside a workflow ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitForWindowInput:
    windows: tuple[MaintenanceWindow, ...]


@dataclass(frozen=True)
class WaitForWindowResult:
    closed_at: str
    waited_seconds: float
    woke_at: str
    window_start: str
    window_end: str


@workflow.defn
class WaitForWindowWorkflow:
    """Stands in for a campaign between waves: leave any open window, then sleep until the next one opens."""

    @workflow.run
    async def run(self, input: WaitForWindowInput) -> WaitForWindowResult:
        windows = list(input.windows)
        while (current := open_window(workflow.now(), windows)) is not None:
            await workflow.sleep((current[1] - workflow.now()).total_seconds())
        closed_at = workflow.now()
        wait = seconds_until_open(closed_at, windows)
        await workflow.sleep(wait)
        woke_at = workflow.now()
        window = open_window(woke_at, windows)
        if window is None:
            raise ApplicationError(f"woke at {woke_at.isoformat()} outside every window", non_retryable=True)
        return WaitForWindowResult(
            closed_at.isoformat(), wait, woke_at.isoformat(), window[0].isoformat(), window[1].isoformat()
        )


async def test_a_workflow_sleeps_until_a_window_opens(time_skipping_env: WorkflowEnvironment, task_queue: str) -> None:
    windows = (_window("02:30", 5, zone="Europe/Berlin"), _window("21:15", 1, TUE, FRI, zone="America/New_York"))
    client = time_skipping_env.client
    # The default sandbox restrictions, which pass zoneinfo through as standard library and allow ZoneInfo(key).
    # Hypothesis is passed through for this test module's sake alone: the sandbox re-imports the module, and
    # hypothesis's strategies import their parts lazily, one of which reads the working directory.
    runner = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules("hypothesis"))
    async with Worker(client, task_queue=task_queue, workflows=[WaitForWindowWorkflow], workflow_runner=runner):
        result = await client.execute_workflow(
            WaitForWindowWorkflow.run,
            WaitForWindowInput(windows),
            id=f"windows-{uuid.uuid4()}",
            task_queue=task_queue,
        )
    closed_at = datetime.fromisoformat(result.closed_at)
    woke_at = datetime.fromisoformat(result.woke_at)
    start, end = datetime.fromisoformat(result.window_start), datetime.fromisoformat(result.window_end)
    assert result.waited_seconds > 0
    assert open_window(closed_at, windows) is None
    assert woke_at >= closed_at + timedelta(seconds=result.waited_seconds)
    assert start <= woke_at < end
    assert (start, end) == open_window(woke_at, windows)
    assert start == next_opening(closed_at, windows)


def test_the_forecast_end_counts_only_open_window_time() -> None:
    from workflows.windows import end_inside_windows

    nightly = MaintenanceWindow(start="22:00", duration_minutes=120, time_zone="UTC")
    monday_noon = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    # 3 h of work: 2 h on Monday night, then 1 h from Tuesday 22:00.
    assert end_inside_windows(monday_noon, [nightly], 3 * 3600) == datetime(2026, 3, 3, 23, 0, tzinfo=UTC)
    # Inside a window already: the rest of it counts from now.
    assert end_inside_windows(datetime(2026, 3, 2, 23, 0, tzinfo=UTC), [nightly], 1800) == datetime(
        2026, 3, 2, 23, 30, tzinfo=UTC
    )
    assert end_inside_windows(monday_noon, [], 90) == monday_noon + timedelta(seconds=90)
