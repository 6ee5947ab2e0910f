"""The benchmarks' reading of a MigrateVm history: what a move prepared ahead did before its turn held no slot."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from benchmarks.harness import TURN_SIGNAL, activity_seconds, signal_time, timeline


def _event(event_id: int, at: float, kind: str, **attributes: Any) -> HistoryEvent:
    event = HistoryEvent(event_id=event_id, event_type=EventType.Value(f"EVENT_TYPE_{kind}"))
    event.event_time.FromMicroseconds(round(at * 1e6))
    for name, fields in attributes.items():
        getattr(event, name).SetInParent()
        for path, value in fields.items():
            target = getattr(event, name)
            *parents, leaf = path.split(".")
            for part in parents:
                target = getattr(target, part)
            setattr(target, leaf, value)
    return event


def _activity(first_id: int, name: str, scheduled: float, started: float, closed: float) -> list[HistoryEvent]:
    return [
        _event(
            first_id,
            scheduled,
            "ACTIVITY_TASK_SCHEDULED",
            activity_task_scheduled_event_attributes={"activity_type.name": name},
        ),
        _event(
            first_id + 1,
            started,
            "ACTIVITY_TASK_STARTED",
            activity_task_started_event_attributes={"scheduled_event_id": first_id},
        ),
        _event(
            first_id + 2,
            closed,
            "ACTIVITY_TASK_COMPLETED",
            activity_task_completed_event_attributes={"scheduled_event_id": first_id},
        ),
    ]


def _prepared_move() -> list[HistoryEvent]:
    """Started at 100.0, preflight 100.1-100.4, ready until its `go` at 130.0, the move 130.2-135.0, done 135.1."""
    return [
        _event(1, 100.0, "WORKFLOW_EXECUTION_STARTED"),
        *_activity(2, "preflight", 100.05, 100.1, 100.4),
        _event(
            5,
            130.0,
            "WORKFLOW_EXECUTION_SIGNALED",
            workflow_execution_signaled_event_attributes={"signal_name": TURN_SIGNAL},
        ),
        *_activity(6, "start_or_attach_move", 130.1, 130.2, 135.0),
        _event(9, 135.1, "WORKFLOW_EXECUTION_COMPLETED"),
    ]


def test_a_move_prepared_ahead_is_timed_from_its_turn() -> None:
    events = _prepared_move()
    assert signal_time(events, TURN_SIGNAL) == 130.0
    line = timeline(events)
    assert (line.started, line.turn, line.closed) == (100.0, 130.0, 135.1)
    # Only the move's activity counts as running and as waiting for a worker: preflight ran before the turn.
    assert round(line.running, 6) == 4.8
    assert round(line.worker_wait, 6) == 0.1
    assert set(activity_seconds(events, since=line.turn)) == {"start_or_attach_move"}
    assert set(activity_seconds(events)) == {"preflight", "start_or_attach_move"}


def test_a_move_started_at_its_turn_is_timed_whole() -> None:
    events = [e for e in _prepared_move() if e.event_id != 5]
    line = timeline(events)
    assert line.turn is None
    assert round(line.running, 6) == round(0.3 + 4.8, 6)
