"""The campaign's live view: a bar per wave, a lane per busy host, the moves in flight with percent and rate.

Drawn with rich on a terminal; plain lines, one per refresh and only when something changed, when stdout is not
one (a pipe, a CI log) or the output is JSON (then the lines go to stderr and stdout stays one document).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from workflows.contracts import CampaignPhase, CampaignProgress, MoveHeartbeat, MoveRecord

if TYPE_CHECKING:
    from types import TracebackType

    from temporalio.client import Client

    from starter.cli import Output

GIB = 2**30
# Moves shown with their percent: each is one describe() per refresh.
MAX_MOVES_SHOWN = 12


def progress_lines(progress: CampaignProgress) -> list[str]:
    """The campaign's state in a few plain lines (status, and the view when stdout is no terminal)."""
    c = progress.counts
    done = c.moved + c.already_there
    ended = done + c.failed + c.blocked + c.cancelled
    lines = [
        f"{progress.phase}: {ended}/{progress.total} ended ({c.moved} moved, {c.already_there} already there, "
        f"{c.failed} failed, {c.blocked} blocked, {c.cancelled} cancelled), {c.running} running, {c.pending} pending"
        + (f" ({progress.ready} of them ready)" if progress.ready else ""),
        f"bytes moved {progress.bytes_moved / GIB:.1f} GiB, left {progress.bytes_left / GIB:.1f} GiB",
    ]
    if progress.waves:
        index = min(progress.wave, len(progress.waves) - 1)
        lines.append(f"wave {index + 1}/{len(progress.waves)}: {progress.waves[index]}")
    if progress.forecast_end:
        lines.append(f"forecast end {_when(progress.forecast_end)}")
    if progress.phase == CampaignPhase.WAITING_FOR_WINDOW and progress.window_opens:
        lines.append(f"waiting for the maintenance window opening {_when(progress.window_opens)}")
    if progress.paused_reason:
        lines.append(progress.paused_reason)
    return lines


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Rate:
    """Bytes per second of each move in flight, from two successive readings of its heartbeat."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def update(self, key: str, bytes_done: int) -> float:
        now = time.monotonic()
        previous = self._last.get(key)
        self._last[key] = (now, bytes_done)
        if previous is None or now <= previous[0] or bytes_done < previous[1]:
            return 0.0
        return (bytes_done - previous[1]) / (now - previous[0])


class LiveView:
    """`with LiveView(out): await view.draw(...)`, once per refresh."""

    def __init__(self, out: Output, *, live: bool = True) -> None:
        self._out = out
        terminal = out.out.isatty() and not out.json
        self._console = Console(file=out.out if not out.json else out.err, force_terminal=terminal or None)
        self._live: Live | None = Live(console=self._console, auto_refresh=False) if live and terminal else None
        self._rates = _Rate()
        self._last_plain: list[str] = []
        self._beats: dict[int, MoveHeartbeat] = {}

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, error, trace)

    async def draw(self, client: Client, progress: CampaignProgress, in_flight: list[MoveRecord]) -> None:
        shown = sorted(in_flight, key=lambda r: r.started)[:MAX_MOVES_SHOWN]
        self._beats = beats = last_known({r.index: await _heartbeat(client, r) for r in shown}, self._beats)
        if self._live is None:
            lines = progress_lines(progress) + [
                f"  {r.vm} {r.source} -> {r.destination} {_percent(beats.get(r.index))} %" for r in shown
            ]
            if lines != self._last_plain:
                stream = self._out.err if self._out.json else self._out.out
                print(f"[{datetime.now(UTC):%H:%M:%S}] " + "\n  ".join(lines), file=stream, flush=True)
                self._last_plain = lines
            return
        self._live.update(self._render(progress, in_flight, shown, beats), refresh=True)

    def _render(
        self,
        progress: CampaignProgress,
        in_flight: list[MoveRecord],
        shown: list[MoveRecord],
        beats: Mapping[int, MoveHeartbeat],
    ) -> Group:
        header = Text(f"campaign {progress.name}  ", style="bold")
        header.append(str(progress.phase), style="cyan" if progress.phase != CampaignPhase.PAUSED else "yellow")
        lines: list[Any] = [header]
        for line in progress_lines(progress)[1:]:
            lines.append(Text(line, style="dim"))
        waves = Table.grid(padding=(0, 1))
        waves.add_column("wave")
        waves.add_column("bar", width=40)
        waves.add_column("state")
        for index, name in enumerate(progress.waves):
            size = progress.wave_sizes[index] if index < len(progress.wave_sizes) else 0
            ended = progress.waves_ended[index] if index < len(progress.waves_ended) else 0
            completed = ended / size if size else (1.0 if index < progress.wave else 0.0)
            if index > progress.wave and not ended:
                state = f"waiting ({size} moves)"
            else:
                state = f"{ended}/{size} ended" if size else ("ended" if index < progress.wave else "")
            waves.add_row(name, ProgressBar(total=1.0, completed=completed, width=40), state)
        lines.append(waves)
        lanes: dict[str, list[MoveRecord]] = {}
        for record in in_flight:
            lanes.setdefault(record.source, []).append(record)
            lanes.setdefault(record.destination, []).append(record)
        if lanes:
            table = Table(title="busy hosts", show_header=True, header_style="bold", expand=False)
            table.add_column("host")
            table.add_column("moves in flight")
            for host in sorted(lanes, key=lambda h: (-len(lanes[h]), h)):
                table.add_row(
                    host,
                    ", ".join(
                        f"{r.vm} {'->' if r.source == host else '<-'} {r.destination if r.source == host else r.source}"
                        for r in lanes[host]
                    ),
                )
            lines.append(table)
        if shown:
            moves = Table(title="moves in flight", show_header=True, header_style="bold")
            moves.add_column("vm")
            moves.add_column("route")
            moves.add_column("progress", width=28)
            moves.add_column("%", justify="right")
            moves.add_column("rate", justify="right")
            for record in shown:
                beat = beats.get(record.index)
                percent = beat.percent if beat is not None else 0
                rate = self._rates.update(str(record.index), beat.bytes_done if beat is not None else 0)
                moves.add_row(
                    record.vm,
                    f"{record.source} -> {record.destination}",
                    ProgressBar(total=100, completed=percent, width=28),
                    f"{percent}",
                    f"{rate / 2**20:.0f} MiB/s" if rate else "",
                )
            lines.append(moves)
            if len(in_flight) > len(shown):
                lines.append(Text(f"... and {len(in_flight) - len(shown)} more in flight", style="dim"))
        return Group(*lines)


def last_known(fresh: dict[int, MoveHeartbeat | None], known: dict[int, MoveHeartbeat]) -> dict[int, MoveHeartbeat]:
    """Each shown move's heartbeat as last read: a read that failed this refresh (a query that timed out on a busy
    worker, a run that closed in between) keeps the move's last percent instead of showing it back at 0 % and its
    rate at nothing. Moves no longer shown are forgotten."""
    return {index: beat for index, beat in ((i, fresh[i] or known.get(i)) for i in fresh) if beat is not None}


def _percent(beat: MoveHeartbeat | None) -> int:
    return beat.percent if beat is not None else 0


async def _heartbeat(client: Client, record: MoveRecord) -> MoveHeartbeat | None:
    """The move's last heartbeat (percent, bytes), read from its MigrateVm run's description: no workflow task."""
    from starter.cli import query_progress
    from workflows.contracts import migrate_vm_workflow_id

    try:
        move = client.get_workflow_handle(migrate_vm_workflow_id(record.vm, record.source))
        progress = await query_progress(move)
    except Exception:
        return None
    if progress is None:
        return None
    return MoveHeartbeat(
        job_id="", percent=progress.percent, bytes_done=progress.bytes_done, bytes_total=progress.bytes_total
    )
