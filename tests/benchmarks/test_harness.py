"""The benchmarks' reading of a MigrateVm history (what a move prepared ahead did before its turn held no slot) and
of the lab's truth (every VM on exactly one host, where its move's record says)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from temporalio.api.enums.v1 import EventType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent

from benchmarks.harness import (
    TURN_SIGNAL,
    TaskTrouble,
    activity_seconds,
    placement,
    signal_time,
    task_trouble,
    timeline,
)
from workflows.contracts import MoveRecord, MoveState


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


def _record(vm: str, state: MoveState, source: str = "HV1", destination: str = "HV2") -> MoveRecord:
    return MoveRecord(index=0, vm=vm, source=source, destination=destination, wave=0, state=state)


def _truth(locations: dict[str, list[str]], starts: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "locations": locations,
        "move_starts": {f"id-{vm}": {"vm": vm, "starts": n} for vm, n in (starts or {}).items()},
    }


def test_every_vm_where_its_record_says_is_sound() -> None:
    records = [
        _record("moved", MoveState.MOVED),
        _record("there", MoveState.ALREADY_THERE),
        _record("waiting", MoveState.PENDING),
        _record("stopped", MoveState.RUNNING),
        _record("broke", MoveState.FAILED),
    ]
    truth = _truth(
        # Host names compare as Windows does; a move stopped mid-flight or failed may be on either host.
        {"moved": ["hv2"], "there": ["HV2"], "waiting": ["HV1"], "stopped": ["HV1"], "broke": ["HV2"]},
        {"moved": 1, "stopped": 1, "broke": 1},
    )
    result = placement(truth, records)
    assert result.sound, result
    assert (result.vms, result.on_one) == (5, 5)
    assert result.summary() == "5 of 5 VMs on exactly one host, each where its move's record says, none started twice"


def test_each_way_a_vm_can_be_misplaced_is_named() -> None:
    records = [
        _record("twice", MoveState.MOVED),
        _record("gone", MoveState.RUNNING),
        _record("stayed", MoveState.MOVED),
        _record("wandered", MoveState.PENDING),
        _record("again", MoveState.MOVED),
    ]
    truth = _truth(
        {"twice": ["HV1", "HV2"], "stayed": ["HV1"], "wandered": ["HV2"], "again": ["HV2"]},
        {"again": 2, "stayed": 1},
    )
    result = placement(truth, records)
    assert not result.sound
    assert result.on_several == ["twice: hv1, hv2"]
    assert result.on_none == ["gone: nowhere"]
    assert result.moved_elsewhere == ["stayed: on hv1, moved to HV2"]
    assert result.unstarted_elsewhere == ["wandered: on hv2, never left HV1"]
    assert result.started_twice == ["again: 2 starts"]
    assert result.summary().startswith("3 of 5 VMs on exactly one host; 1 on several hosts (e.g. twice: hv1, hv2)")


def test_a_vm_the_plan_moves_there_and_back_is_judged_by_its_latest_move() -> None:
    there = replace(_record("vm", MoveState.MOVED), ended=10.0)
    back = replace(_record("vm", MoveState.MOVED, source="HV2", destination="HV1"), ended=20.0)
    result = placement(_truth({"vm": ["HV1"]}, {"vm": 2}), [back, there])
    assert result.sound, result
    assert (result.vms, result.on_one) == (1, 1)
    assert not placement(_truth({"vm": ["HV2"]}, {"vm": 2}), [back, there]).sound


def test_task_trouble_counts_refused_hand_overs_and_tasks_past_their_timeout_only() -> None:
    unhandled = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
    nondeterminism = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR
    events = [
        _event(1, 0.0, "WORKFLOW_TASK_FAILED", workflow_task_failed_event_attributes={"cause": unhandled}),
        _event(2, 1.0, "WORKFLOW_TASK_FAILED", workflow_task_failed_event_attributes={"cause": unhandled}),
        _event(3, 2.0, "WORKFLOW_TASK_FAILED", workflow_task_failed_event_attributes={"cause": nondeterminism}),
        _event(
            4,
            3.0,
            "WORKFLOW_TASK_TIMED_OUT",
            workflow_task_timed_out_event_attributes={"timeout_type": TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE},
        ),
        # A sticky task no worker picked up in time only moves to the normal queue: not a task that ran too long.
        _event(
            5,
            4.0,
            "WORKFLOW_TASK_TIMED_OUT",
            workflow_task_timed_out_event_attributes={"timeout_type": TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START},
        ),
        _event(6, 5.0, "WORKFLOW_TASK_COMPLETED"),
    ]
    assert task_trouble(events) == TaskTrouble(refused=2, timed_out=1)
    assert task_trouble([]) + task_trouble(events) == TaskTrouble(2, 1)
