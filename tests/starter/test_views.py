"""What an operator's terminal shows: the one-VM bar and the campaign's live view, on a terminal (rich) and in a
pipe (plain lines). The campaign view's per-move percent comes from Temporal and is covered end to end; here the
drawing itself, with no move in flight."""

from __future__ import annotations

import io
from typing import Any

from starter.campaign_view import LiveView, last_known, progress_lines
from starter.cli import Output, ProgressView
from workflows.contracts import (
    CampaignCounts,
    CampaignPhase,
    CampaignProgress,
    MigrationProgress,
    MoveHeartbeat,
    Step,
)

GIB = 2**30


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a shell's stdout does."""

    def isatty(self) -> bool:
        return True


def progress(**changes: Any) -> CampaignProgress:
    fields: dict[str, Any] = {
        "name": "dc1",
        "phase": CampaignPhase.RUNNING,
        "counts": CampaignCounts(pending=5, running=0, moved=4, failed=1),
        "total": 10,
        "wave": 1,
        "waves": ("pilot", "bulk"),
        "bytes_moved": 40 * GIB,
        "bytes_left": 60 * GIB,
        "wave_sizes": (4, 6),
        "waves_ended": (4, 1),
    }
    fields.update(changes)
    return CampaignProgress(**fields)


def test_the_one_vm_bar_is_drawn_with_rich_on_a_terminal() -> None:
    screen_stream = Terminal()
    out = Output("text", screen_stream, io.StringIO())
    view = ProgressView(out, "web07 HV-S2->HV-S4")
    view.show(
        MigrationProgress("web07", "HV-S2", "HV-S4", Step.MOVE, percent=40, bytes_done=4 * GIB, bytes_total=10 * GIB)
    )
    view.finish({"status": "COMPLETED", "percent": 100, "step": "done"})
    view.done()
    screen = screen_stream.getvalue()
    assert "web07 HV-S2->HV-S4" in screen
    assert "\x1b[" in screen  # drawn in place with the terminal's control sequences
    assert "━" in screen  # rich's bar


def test_the_one_vm_bar_is_plain_lines_in_a_pipe() -> None:
    pipe = io.StringIO()
    out = Output("text", pipe, io.StringIO())
    view = ProgressView(out, "web07 HV-S2->HV-S4")
    for percent in (0, 5, 12, 50):
        view.show(MigrationProgress("web07", "HV-S2", "HV-S4", Step.MOVE, percent=percent))
    view.done()
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 3  # a line on the step, then every 10 %
    assert all("\x1b[" not in line for line in lines)


async def test_the_campaign_view_draws_waves_and_counts_on_a_terminal() -> None:
    screen_stream = Terminal()
    out = Output("text", screen_stream, io.StringIO())
    with LiveView(out) as view:
        await view.draw(None, progress(), [])  # type: ignore[arg-type]  # no move in flight: no client needed
    screen = screen_stream.getvalue()
    for text in ("campaign dc1", "pilot", "bulk", "running", "4/4 ended", "1/6 ended"):
        assert text in screen


async def test_the_campaign_view_prints_a_line_only_when_something_changed_in_a_pipe() -> None:
    pipe = io.StringIO()
    out = Output("text", pipe, io.StringIO())
    with LiveView(out) as view:
        await view.draw(None, progress(), [])  # type: ignore[arg-type]
        await view.draw(None, progress(), [])  # type: ignore[arg-type]
        await view.draw(None, progress(phase=CampaignPhase.PAUSED, paused_reason="paused by ops: freeze"), [])  # type: ignore[arg-type]
    text = pipe.getvalue()
    assert text.count("running: 5/10 ended") == 1
    assert "paused by ops: freeze" in text
    assert "\x1b[" not in text


def test_progress_lines_say_what_waits() -> None:
    lines = progress_lines(
        progress(phase=CampaignPhase.WAITING_FOR_WINDOW, window_opens=1_800_000_000.0, forecast_end=1_800_003_600.0)
    )
    assert lines[0].startswith("waiting-for-window: 5/10 ended (4 moved")
    assert "wave 2/2: bulk" in lines
    assert any(line.startswith("waiting for the maintenance window opening 2027-01-15") for line in lines)


def test_progress_lines_count_the_moves_prepared_ahead_among_the_pending() -> None:
    assert progress_lines(progress(ready=2))[0].endswith("0 running, 5 pending (2 of them ready)")
    assert progress_lines(progress())[0].endswith("0 running, 5 pending")


def test_a_move_whose_progress_could_not_be_read_keeps_its_last_percent() -> None:
    first = last_known({1: MoveHeartbeat("job-1", 40, 4, 10), 2: None}, {})
    assert first == {1: MoveHeartbeat("job-1", 40, 4, 10)}
    # The query of move 1 timed out this refresh: it stays at 40 %, not 0 %; move 2 answers now.
    second = last_known({1: None, 2: MoveHeartbeat("job-2", 5, 1, 20)}, first)
    assert second == {1: MoveHeartbeat("job-1", 40, 4, 10), 2: MoveHeartbeat("job-2", 5, 1, 20)}
    # A fresh reading wins; a move no longer shown (ended) is forgotten.
    assert last_known({2: MoveHeartbeat("job-2", 60, 12, 20)}, second) == {2: MoveHeartbeat("job-2", 60, 12, 20)}
