"""`snlm campaign report NAME --out report.html`: a campaign as one self-contained HTML page.

The page holds its own CSS and draws with inline SVG: no script, no font, image or style sheet from elsewhere, so it
opens offline, from a mail attachment or a ticket, years later. It shows, from the top: the campaign's name, phase and
span; the counts by state, the bytes moved and left, the forecast makespan against the actual one; a timeline with
one lane per host (a move is drawn on its source's lane and on its destination's) and one row per wave; the moves
that failed or were blocked; every move.

Every string that comes from the campaign (VM, host and wave names, errors, the campaign's name) is escaped: names
are whatever the hosts and the plan said. Times are shown in UTC.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from workflows.contracts import CampaignPhase, CampaignProgress, MoveRecord, MoveState

GIB = 2**30
# The timeline's drawing units; the page scales the SVG to its width.
WIDTH = 1200
LABEL_WIDTH = 170
RIGHT_MARGIN = 24
PLOT_WIDTH = WIDTH - LABEL_WIDTH - RIGHT_MARGIN
# Past this many moves the bars get thinner, so that 10,000 moves stay a page a browser draws in a second or two.
DENSE_MOVES = 2000
# Concurrent moves of one host get their own row in its lane up to this many; more overlap in the last rows.
MAX_ROWS_PER_LANE = 16
# A move of a few seconds (already there) is still a visible mark.
MIN_BAR_WIDTH = 2.0
# Past this many moves the list of every move is folded (a <details>, no script needed to open it).
FOLD_MOVES_OVER = 200

STATE_ORDER = (
    MoveState.MOVED,
    MoveState.ALREADY_THERE,
    MoveState.RUNNING,
    MoveState.PENDING,
    MoveState.FAILED,
    MoveState.BLOCKED,
    MoveState.CANCELLED,
)
PHASE_TONE = {
    CampaignPhase.CHECKING: "neutral",
    CampaignPhase.RUNNING: "running",
    CampaignPhase.WAITING_FOR_WINDOW: "waiting",
    CampaignPhase.PAUSED: "warning",
    CampaignPhase.CANCELLING: "warning",
    CampaignPhase.ENDED: "done",
    CampaignPhase.CLOSED: "neutral",
}
# C0 and C1 controls (but tab and newline) shown as U+FFFD: a name should not be able to garble the page.
_CONTROLS = dict.fromkeys([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)], "\ufffd")

CSS = """
:root { --moved:#2f9e5b; --already-there:#a3acb6; --failed:#d64545; --cancelled:#e3a008; --running:#2f6fde;
  --pending:#d9dee4; --blocked:#8e5bd0; --ink:#1f2933; --muted:#66727f; --line:#e3e8ee; --paper:#fff;
  --ground:#f4f6f8; --forecast:#7c3aed; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--ground); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 24px 48px; }
header.top { padding: 8px 4px 4px; }
.eyebrow { color: var(--muted); text-transform: uppercase; letter-spacing: .08em; font-size: 12px; }
h1 { margin: 2px 0 8px; font-size: 28px; overflow-wrap: anywhere; }
h2 { margin: 0 0 12px; font-size: 17px; }
.meta { display: flex; flex-wrap: wrap; gap: 6px 22px; align-items: center; color: var(--muted); }
.meta b { color: var(--ink); font-weight: 600; }
.phase { display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600; color: #fff;
  background: var(--muted); }
.phase.running { background: var(--running); } .phase.done { background: var(--moved); }
.phase.warning { background: var(--cancelled); } .phase.waiting { background: var(--blocked); }
.note { margin-top: 10px; padding: 8px 12px; border-left: 4px solid var(--cancelled); background: #fff8e6;
  overflow-wrap: anywhere; }
section.card { background: var(--paper); border: 1px solid var(--line); border-radius: 10px; padding: 16px 20px;
  margin: 16px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; margin: 16px 0; }
.cards section.card { margin: 0; }
.big { font-size: 26px; font-weight: 650; }
.sub { color: var(--muted); }
.stack { display: flex; height: 14px; border-radius: 7px; overflow: hidden; background: var(--pending);
  margin: 6px 0 12px; }
.stack span { display: block; height: 100%; padding: 0; border-radius: 0; }
.meter { height: 10px; border-radius: 5px; background: var(--line); overflow: hidden; margin: 6px 0 12px; }
.meter span { display: block; height: 100%; background: var(--moved); }
.versus { display: grid; grid-template-columns: 64px 1fr auto; gap: 6px 10px; align-items: center;
  margin: 8px 0 10px; }
.versus .track { height: 12px; background: var(--line); border-radius: 6px; overflow: hidden; }
.versus .track span { display: block; height: 100%; border-radius: 6px; }
.versus .forecast span { background: var(--forecast); } .versus .actual span { background: var(--ink); }
.late { color: var(--failed); font-weight: 600; } .early { color: var(--moved); font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.counts td, table.counts th { padding: 3px 6px; }
table.counts tr.total td { font-weight: 650; border-bottom: none; }
.sw { display: inline-block; width: 11px; height: 11px; border-radius: 3px; margin-right: 7px;
  vertical-align: -1px; background: var(--pending); }
.sw.moved, .chip.moved { background: var(--moved); }
.sw.already-there, .chip.already-there { background: var(--already-there); }
.sw.failed, .chip.failed { background: var(--failed); }
.sw.cancelled, .chip.cancelled { background: var(--cancelled); }
.sw.running, .chip.running { background: var(--running); }
.sw.blocked, .chip.blocked { background: var(--blocked); }
.sw.pending, .chip.pending { background: var(--pending); color: var(--ink); }
.sw.attached { background: #fff; border: 1.5px dashed var(--ink); }
.chip { display: inline-block; padding: 0 8px; border-radius: 999px; color: #fff; font-size: 12px;
  font-weight: 600; white-space: nowrap; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 0 0 10px; padding: 0; list-style: none;
  color: var(--muted); font-size: 13px; }
.ln { display: inline-block; width: 18px; height: 0; margin-right: 7px; vertical-align: 3px;
  border-top: 2px dashed var(--forecast); }
.ln.now { border-top: 2px solid var(--ink); }
svg.timeline { display: block; width: 100%; height: auto; }
svg.timeline text { font-size: 12px; fill: var(--ink); }
svg.timeline .tick-label, svg.timeline .wave-info { fill: var(--muted); font-size: 11px; }
svg.timeline .grid { stroke: var(--line); stroke-width: 1; }
svg.timeline .lane-bg { fill: #f7f9fb; } svg.timeline .lane-rule { stroke: var(--line); }
svg.timeline .section-label { fill: var(--muted); font-size: 11px; text-transform: uppercase;
  letter-spacing: .06em; }
svg.timeline .wave-bar { fill: #cbd5e1; stroke: #64748b; stroke-width: .8; }
svg.timeline .bar { fill: var(--pending); stroke: #fff; stroke-width: .6; rx: 1.5px; }
svg.timeline .bar.moved { fill: var(--moved); } svg.timeline .bar.already-there { fill: var(--already-there); }
svg.timeline .bar.failed { fill: var(--failed); } svg.timeline .bar.cancelled { fill: var(--cancelled); }
svg.timeline .bar.running { fill: var(--running); } svg.timeline .bar.blocked { fill: var(--blocked); }
svg.timeline .bar.attached { stroke: var(--ink); stroke-width: 1; stroke-dasharray: 2 1.5; }
svg.timeline .marker { stroke-width: 1.5; }
svg.timeline .marker.forecast { stroke: var(--forecast); stroke-dasharray: 6 4; }
svg.timeline .marker.now { stroke: var(--ink); }
svg.timeline .marker-label.forecast { fill: var(--forecast); font-weight: 600; }
svg.timeline .marker-label.now { font-weight: 600; }
.empty { color: var(--muted); font-style: italic; }
.vm { overflow-wrap: anywhere; max-width: 28em; }
.err { white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 12px; }
.wave { white-space: nowrap; }
.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.moves { font-size: 13px; }
table.moves td:nth-child(1), table.moves td:nth-child(8), table.moves td:nth-child(9) { text-align: right;
  font-variant-numeric: tabular-nums; }
table.moves td:nth-child(2), table.moves td:nth-child(3) { overflow-wrap: anywhere; max-width: 28em; }
table.moves td:nth-child(6), table.moves td:nth-child(7) { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.moves td:nth-child(10) { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
table.moves tbody tr:nth-child(even) { background: #fafbfc; }
table.moves thead th { position: sticky; top: 0; background: var(--paper); }
details > summary { cursor: pointer; font-weight: 600; margin-bottom: 10px; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; text-align: center; }
"""


def render_report(
    progress: CampaignProgress, records: Sequence[MoveRecord], *, generated: datetime | None = None
) -> str:
    """The campaign as one HTML document: `progress` (the `progress` query) and `records` (the `moves` query, every
    move), as seen at `generated` (default now), which is also where the bars of moves still running end."""
    when = generated or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    view = _View(progress, records, when.timestamp())
    title = f"snlm campaign {progress.name}"
    parts = [
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n",
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        _header(view),
        _summary(view),
        _timeline(view),
        _failures(view),
        _all_moves(view),
        f"<footer>snlm campaign report · generated {_esc(_full_time(view.now))} · times in UTC</footer>\n",
        "</main>\n</body>\n</html>\n",
    ]
    return "".join(parts)


def write_report(
    path: Path, progress: CampaignProgress, records: Sequence[MoveRecord], *, generated: datetime | None = None
) -> Path:
    """Render the report (render_report) to `path`, UTF-8, and return the path. The file is written beside and
    renamed into place, so a reader never sees half a report."""
    path = Path(path)
    document = render_report(progress, records, generated=generated)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # A name carrying a lone surrogate (JSON allows one) would otherwise stop the write.
        with os.fdopen(descriptor, "w", encoding="utf-8", errors="replace") as file:
            file.write(document)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# -- what the sections share ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Span:
    record: MoveRecord
    start: float
    end: float


class _View:
    """The figures every section draws from, computed once."""

    def __init__(self, progress: CampaignProgress, records: Sequence[MoveRecord], now: float) -> None:
        self.progress = progress
        self.records = sorted(records, key=lambda r: r.index)
        self.now = now
        self.spans = [_span(record, now) for record in self.records if record.started > 0]
        self.first_start = min((s.start for s in self.spans), default=0.0)
        self.last_end = max((s.end for s in self.spans), default=0.0)
        c = progress.counts
        ended = progress.phase in (CampaignPhase.ENDED, CampaignPhase.CLOSED)
        self.finished = ended and c.running == 0 and c.pending == 0
        self.actual_makespan = self.last_end - self.first_start if self.spans else 0.0
        self.dense = len(self.records) > DENSE_MOVES
        moments = [t for s in self.spans for t in (s.start, s.end)] + ([] if self.finished else [now])
        moments = moments or [now]
        days = {datetime.fromtimestamp(t, UTC).date() for t in (min(moments), max(moments))}
        self.time_format = "%H:%M:%S" if len(days) == 1 else "%b %d %H:%M"

    def wave_name(self, wave: int) -> str:
        waves = self.progress.waves
        return waves[wave] if 0 <= wave < len(waves) else f"wave {wave + 1}"

    def clock(self, epoch: float) -> str:
        return datetime.fromtimestamp(epoch, UTC).strftime(self.time_format) if epoch > 0 else "—"


def _span(record: MoveRecord, now: float) -> _Span:
    if record.state in (MoveState.RUNNING, MoveState.PENDING) or record.ended <= 0:
        end = max(record.started, now) if record.state == MoveState.RUNNING else record.started
    else:
        end = max(record.started, record.ended)
    return _Span(record, record.started, end)


def _esc(text: object) -> str:
    return html.escape(str(text).translate(_CONTROLS), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _full_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _gib(count: int) -> str:
    return f"{count / GIB:,.1f} GiB"


def _label(state: MoveState) -> str:
    return state.value.replace("-", " ")


def _count(progress: CampaignProgress, state: MoveState) -> int:
    value: int = getattr(progress.counts, state.value.replace("-", "_"))
    return value


def _host_key(host: str) -> list[object]:
    """hv-2 before hv-10."""
    return [(0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", host) if part]


# -- header and summary -------------------------------------------------------------------------------------------
def _header(view: _View) -> str:
    p = view.progress
    tone = PHASE_TONE.get(p.phase, "neutral")
    meta = [f"<span class='phase {tone}'>{_esc(p.phase.value)}</span>"]
    if p.waves:
        index = min(max(p.wave, 0), len(p.waves) - 1)
        meta.append(f"<span>wave <b>{index + 1}</b> of {len(p.waves)}: <b>{_esc(p.waves[index])}</b></span>")
    meta.append(f"<span><b>{p.total:,}</b> moves</span>")
    if p.run > 1:
        meta.append(f"<span>run <b>{p.run}</b></span>")
    meta.append(f"<span>generated <b>{_esc(_full_time(view.now))}</b></span>")
    if not view.spans:
        span = "not started"
    elif view.finished:
        span = f"{_full_time(view.first_start)} → {_full_time(view.last_end)}"
    elif p.forecast_end > 0:
        span = f"{_full_time(view.first_start)} → running, forecast end {_full_time(p.forecast_end)}"
    else:
        span = f"{_full_time(view.first_start)} → running"
    meta.append(f"<span id='span'>{_esc(span)}</span>")
    notes = []
    if p.paused_reason:
        notes.append(f"<div class='note'>paused: {_esc(p.paused_reason)}</div>")
    if p.phase == CampaignPhase.WAITING_FOR_WINDOW and p.window_opens > 0:
        notes.append(f"<div class='note'>waiting for the maintenance window opening {_full_time(p.window_opens)}</div>")
    return (
        "<header class='top'>\n<div class='eyebrow'>snlm campaign report</div>\n"
        f"<h1>{_esc(p.name)}</h1>\n<div class='meta'>{''.join(meta)}</div>\n{''.join(notes)}</header>\n"
    )


def _summary(view: _View) -> str:
    return f"<div class='cards' id='summary'>\n{_counts_card(view)}{_bytes_card(view)}{_makespan_card(view)}</div>\n"


def _counts_card(view: _View) -> str:
    p = view.progress
    counted = sum(_count(p, state) for state in STATE_ORDER)
    total = max(p.total, counted)
    done = _count(p, MoveState.MOVED) + _count(p, MoveState.ALREADY_THERE)
    stack, rows = [], []
    for state in STATE_ORDER:
        count = _count(p, state)
        share = 100.0 * count / total if total else 0.0
        if count:
            stack.append(
                f"<span class='chip {state.value}' style='width:{share:.3f}%' title='{_label(state)}: {count:,}'>"
                "</span>"
            )
        rows.append(
            f"<tr data-state='{state.value}'><td><span class='sw {state.value}'></span>{_label(state)}</td>"
            f"<td class='num count'>{count:,}</td><td class='num'>{share:.1f}%</td></tr>"
        )
    rows.append(f"<tr class='total'><td>total</td><td class='num count'>{total:,}</td><td></td></tr>")
    return (
        "<section class='card' id='counts'>\n<h2>Moves</h2>\n"
        f"<div><span class='big'>{done:,}</span> <span class='sub'>of {total:,} done</span></div>\n"
        f"<div class='stack'>{''.join(stack)}</div>\n"
        f"<table class='counts'><tbody>{''.join(rows)}</tbody></table>\n</section>\n"
    )


def _bytes_card(view: _View) -> str:
    p = view.progress
    whole = p.bytes_moved + p.bytes_left
    # 99.6% is not "100%": the figure rounds down until every byte moved.
    share = math.floor(100.0 * p.bytes_moved / whole) if whole else 0
    return (
        "<section class='card' id='bytes'>\n<h2>Bytes</h2>\n"
        f"<div><span class='big'>{share:.0f}%</span> <span class='sub'>moved</span></div>\n"
        f"<div class='meter'><span style='width:{share:.3f}%'></span></div>\n"
        "<table class='counts'><tbody>"
        f"<tr data-bytes='moved'><td><span class='sw moved'></span>moved</td>"
        f"<td class='num'>{_gib(p.bytes_moved)}</td></tr>"
        f"<tr data-bytes='left'><td><span class='sw pending'></span>left</td><td class='num'>{_gib(p.bytes_left)}</td>"
        f"</tr><tr class='total'><td>total</td><td class='num'>{_gib(whole)}</td></tr>"
        "</tbody></table>\n<div class='sub'>memory and disks, as estimated before each move</div>\n</section>\n"
    )


def _makespan_card(view: _View) -> str:
    forecast = view.progress.forecast_makespan_seconds
    actual = view.actual_makespan
    so_far = view.now - view.first_start if view.spans and not view.finished else 0.0
    shown = actual if view.finished else so_far
    longest = max(forecast, shown, 1.0)
    if not view.spans:
        headline, verdict = "not started", ""
    elif not view.finished:
        headline = f"{_duration(so_far)} so far"
        verdict = "the error is known when every move has ended"
    elif forecast <= 0:
        headline, verdict = _duration(actual), "no forecast to compare with"
    else:
        error = 100.0 * (actual - forecast) / forecast
        tone = "late" if error > 0 else "early"
        word = "longer" if error > 0 else "shorter"
        headline = _duration(actual)
        verdict = f"<span class='{tone}' id='makespan-error'>{error:+.1f}%</span> {word} than forecast"
    actual_label = "actual" if view.finished else "so far"
    forecast_share, shown_share = 100 * forecast / longest, 100 * shown / longest
    return (
        "<section class='card' id='makespan'>\n<h2>Makespan: forecast against actual</h2>\n"
        f"<div><span class='big'>{_esc(headline)}</span></div>\n<div class='versus'>"
        f"<span class='sub'>forecast</span><div class='track forecast'><span style='width:{forecast_share:.2f}%'>"
        f"</span></div><span class='num' data-makespan='forecast'>{_duration(forecast) if forecast > 0 else '—'}</span>"
        f"<span class='sub'>{actual_label}</span><div class='track actual'><span style='width:{shown_share:.2f}%'>"
        f"</span></div><span class='num' data-makespan='actual'>{_duration(shown) if view.spans else '—'}</span>"
        f"</div>\n<div class='sub'>{verdict}</div>\n"
        "<div class='sub'>actual: the last move's end less the first move's start</div>\n</section>\n"
    )


# -- the timeline -------------------------------------------------------------------------------------------------
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def _ticks(start: float, end: float, most: int = 10) -> tuple[list[float], int]:
    step = next((s for s in _STEPS if (end - start) / s <= most), _STEPS[-1])
    first = math.ceil(start / step) * step
    return [float(t) for t in range(int(first), int(end) + 1, step)], step


def _lanes(spans: Iterable[_Span]) -> dict[str, list[tuple[_Span, int]]]:
    """Each host's moves with the row each is drawn in: the first row free at the move's start, so moves that ran
    at the same time sit one above the other."""
    by_host: dict[str, list[_Span]] = {}
    for span in spans:
        r = span.record
        for host in dict.fromkeys((r.source, r.destination)):
            by_host.setdefault(host, []).append(span)
    lanes: dict[str, list[tuple[_Span, int]]] = {}
    for host in sorted(by_host, key=_host_key):
        ends: list[float] = []
        placed = []
        for span in sorted(by_host[host], key=lambda s: (s.start, s.end)):
            row = next((i for i, end in enumerate(ends) if end <= span.start), -1)
            if row < 0 and len(ends) < MAX_ROWS_PER_LANE:
                ends.append(span.end)
                row = len(ends) - 1
            elif row < 0:
                row = min(range(len(ends)), key=ends.__getitem__)
            ends[row] = max(ends[row], span.end)
            placed.append((span, row))
        lanes[host] = placed
    return lanes


def _tooltip(view: _View, span: _Span) -> str:
    r = span.record
    until = "now" if r.state == MoveState.RUNNING else view.clock(span.end)
    lines = [
        _short(r.vm, 80) if view.dense else r.vm,
        f"{r.source} → {r.destination} · {view.wave_name(r.wave)}",
        f"{_label(r.state)} · {_duration(span.end - span.start)} ({view.clock(span.start)} to {until})",
    ]
    if r.attached:
        lines.append("attached: running before the campaign, followed to its end")
    if r.error:
        lines.append(_short(r.error, 160 if view.dense else 400))
    return _esc("\n".join(lines))


def _timeline(view: _View) -> str:
    head = "<section class='card' id='timeline'>\n<h2>Timeline per host</h2>\n"
    if not view.spans:
        return head + "<p class='empty'>No move has started yet.</p>\n</section>\n"
    p = view.progress
    t0, t1 = view.first_start, max(view.last_end, view.now if not view.finished else view.last_end)
    if p.forecast_end > 0:
        t0, t1 = min(t0, p.forecast_end), max(t1, p.forecast_end)
    if t1 - t0 < 60:
        t1 = t0 + 60

    def x(t: float) -> float:
        return LABEL_WIDTH + PLOT_WIDTH * (t - t0) / (t1 - t0)

    bar, gap, pad = (4.0, 1.0, 3.0) if view.dense else (10.0, 3.0, 5.0)
    markers = []
    if p.forecast_end > 0:
        markers.append(("forecast", p.forecast_end, f"forecast end {view.clock(p.forecast_end)}"))
    if not view.finished:
        markers.append(("now", view.now, f"now {view.clock(view.now)}"))
    # Marker labels share a row unless they would overlap.
    marker_rows: list[int] = []
    for i, (_, t, _) in enumerate(markers):
        close = i > 0 and abs(x(t) - x(markers[i - 1][1])) < 150 and marker_rows[-1] == 0
        marker_rows.append(1 if close else 0)
    marker_height = 16.0 * (max(marker_rows, default=-1) + 1)
    axis_y = marker_height + 14.0
    out: list[str] = []
    y = axis_y + 10.0

    # Waves: one row each, from the wave's first start to its last end.
    out.append(f"<text class='section-label' x='8' y='{y + 10:.1f}'>waves</text>")
    y += 16.0
    wave_spans: dict[int, list[_Span]] = {}
    for span in view.spans:
        wave_spans.setdefault(span.record.wave, []).append(span)
    for wave in sorted(set(wave_spans) | set(range(len(p.waves)))):
        spans = wave_spans.get(wave, [])
        name = view.wave_name(wave)
        out.append(
            f"<text class='wave-label' x='{LABEL_WIDTH - 10}' y='{y + 11:.1f}' text-anchor='end'>"
            f"{_esc(_short(name, 22))}<title>{_esc(name)}</title></text>"
        )
        if spans:
            start, end = min(s.start for s in spans), max(s.end for s in spans)
            failed = sum(1 for s in spans if s.record.state == MoveState.FAILED)
            x0, width = x(start), max(MIN_BAR_WIDTH, x(end) - x(start))
            info = f"{len(spans):,} moves · {_duration(end - start)}" + (f" · {failed:,} failed" if failed else "")
            out.append(
                f"<rect class='wave-bar' x='{x0:.1f}' y='{y + 2:.1f}' width='{width:.1f}' height='12' rx='3'>"
                f"<title>{_esc(name)}\n{_esc(info)}\n{view.clock(start)} to {view.clock(end)}</title></rect>"
            )
            inside = width > 7.0 * len(info) + 12
            tx, anchor = (x0 + 6, "start") if inside else (x0 + width + 6, "start")
            if not inside and x0 + width + 7.0 * len(info) + 12 > WIDTH:
                tx, anchor = x0 - 6, "end"
            out.append(
                f"<text class='wave-info' x='{tx:.1f}' y='{y + 12:.1f}' text-anchor='{anchor}'>{_esc(info)}</text>"
            )
        else:
            out.append(f"<text class='wave-info' x='{LABEL_WIDTH + 4}' y='{y + 12:.1f}'>not started</text>")
        y += 18.0

    # Hosts: one lane each, a move on its source's lane and on its destination's.
    y += 10.0
    out.append(f"<text class='section-label' x='8' y='{y + 10:.1f}'>hosts</text>")
    y += 16.0
    for number, (host, placed) in enumerate(_lanes(view.spans).items()):
        rows = max(row for _, row in placed) + 1
        height = 2 * pad + rows * bar + (rows - 1) * gap
        if number % 2 == 0:
            out.append(f"<rect class='lane-bg' x='0' y='{y:.1f}' width='{WIDTH}' height='{height:.1f}'/>")
        out.append(
            f"<text class='lane-label' x='{LABEL_WIDTH - 10}' y='{y + height / 2 + 4:.1f}' text-anchor='end'>"
            f"{_esc(_short(host, 22))}<title>{_esc(host)} · {len(placed):,} moves</title></text>"
        )
        for span, row in placed:
            x0 = min(x(span.start), LABEL_WIDTH + PLOT_WIDTH - MIN_BAR_WIDTH)
            width = max(MIN_BAR_WIDTH, x(span.end) - x0)
            attached = " attached" if span.record.attached else ""
            out.append(
                f"<rect class='bar {span.record.state.value}{attached}' x='{x0:.1f}' "
                f"y='{y + pad + row * (bar + gap):.1f}' width='{width:.1f}' height='{bar:g}'>"
                f"<title>{_tooltip(view, span)}</title></rect>"
            )
        y += height
        out.append(f"<line class='lane-rule' x1='0' x2='{WIDTH}' y1='{y:.1f}' y2='{y:.1f}'/>")
    bottom = y
    height = bottom + 22.0

    # The axis and the markers go under the bars' layer first: gridlines behind, labels top and bottom.
    ticks, step = _ticks(t0, t1)
    tick_format = "%H:%M:%S" if step < 60 else ("%H:%M" if view.time_format == "%H:%M:%S" else "%b %d %H:%M")
    axis = []
    for tick in ticks:
        tx = x(tick)
        label = datetime.fromtimestamp(tick, UTC).strftime(tick_format)
        axis.append(f"<line class='grid' x1='{tx:.1f}' x2='{tx:.1f}' y1='{axis_y + 4:.1f}' y2='{bottom:.1f}'/>")
        for ly in (axis_y, bottom + 16):
            axis.append(f"<text class='tick-label' x='{tx:.1f}' y='{ly:.1f}' text-anchor='middle'>{label}</text>")
    over = []
    for (kind, t, text), row in zip(markers, marker_rows, strict=True):
        mx = x(t)
        anchor, dx = ("end", -5) if mx > LABEL_WIDTH + PLOT_WIDTH / 2 else ("start", 5)
        over.append(
            f"<line class='marker {kind}' x1='{mx:.1f}' x2='{mx:.1f}' y1='{12 + 16 * row:.1f}' y2='{bottom:.1f}'/>"
            f"<text class='marker-label {kind}' x='{mx + dx:.1f}' y='{11 + 16 * row:.1f}' text-anchor='{anchor}'>"
            f"{_esc(text)}</text>"
        )
    drawn = (MoveState.MOVED, MoveState.ALREADY_THERE, MoveState.FAILED, MoveState.CANCELLED, MoveState.RUNNING)
    legend = "".join(f"<li><span class='sw {state.value}'></span>{_label(state)}</li>" for state in drawn)
    legend += "<li><span class='sw attached'></span>attached (was running)</li>"
    legend += "<li><span class='ln'></span>forecast end</li>"
    if not view.finished:
        legend += "<li><span class='ln now'></span>now</li>"
    summary = f"{len(view.spans):,} moves from {_full_time(t0)} to {_full_time(t1)}"
    return (
        f"{head}<ul class='legend'>{legend}</ul>\n"
        f"<svg class='timeline' viewBox='0 0 {WIDTH} {height:.0f}' width='{WIDTH}' height='{height:.0f}' "
        f"preserveAspectRatio='xMinYMin meet' role='img' aria-label='{_esc(summary)}'>\n"
        + "\n".join(axis)
        + "\n"
        + "\n".join(out)
        + "\n"
        + "\n".join(over)
        + "\n</svg>\n</section>\n"
    )


# -- the tables ---------------------------------------------------------------------------------------------------
def _failures(view: _View) -> str:
    failed = [r for r in view.records if r.state in (MoveState.FAILED, MoveState.BLOCKED)]
    failed.sort(key=lambda r: (r.wave, r.index))
    head = f"<section class='card' id='failures-card'>\n<h2>Failed and blocked moves ({len(failed):,})</h2>\n"
    if not failed:
        return head + "<p class='empty'>None.</p>\n</section>\n"
    rows = [
        f"<tr data-index='{r.index}'><td class='vm'>{_esc(r.vm)}</td>"
        f"<td class='vm'>{_esc(r.source)} → {_esc(r.destination)}</td>{_wave_cell(view, r.wave)}"
        f"<td><span class='chip {r.state.value}'>{_label(r.state)}</span></td>"
        f"<td class='err'>{_esc(r.error) if r.error else '—'}</td></tr>"
        for r in failed
    ]
    return (
        head + "<table id='failures'><thead><tr><th>VM</th><th>source → destination</th><th>wave</th><th>state</th>"
        "<th>error</th></tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n</section>\n"
    )


def _wave_cell(view: _View, wave: int) -> str:
    name = view.wave_name(wave)
    if len(name) <= 24:
        return f"<td class='wave'>{_esc(name)}</td>"
    return f"<td class='wave' title='{_esc(name)}'>{_esc(_short(name, 24))}</td>"


def _all_moves(view: _View) -> str:
    spans = {span.record.index: span for span in view.spans}
    rows = []
    for r in view.records:
        span = spans.get(r.index)
        took = _duration(span.end - span.start) if span else "—"
        until = "running" if r.state == MoveState.RUNNING else view.clock(r.ended)
        note = _esc(_short(r.error, 120)) if r.error else ("attached" if r.attached else "")
        # Cells styled by column (table.moves CSS), not by class: 10,000 rows.
        rows.append(
            f"<tr><td>{r.index}</td><td>{_esc(r.vm)}</td><td>{_esc(r.source)} → {_esc(r.destination)}</td>"
            f"{_wave_cell(view, r.wave)}<td><span class='chip {r.state.value}'>{_label(r.state)}</span></td>"
            f"<td>{view.clock(r.started)}</td><td>{until}</td><td>{took}</td><td>{r.bytes / GIB:,.1f}</td>"
            f"<td>{note}</td></tr>"
        )
    table = (
        "<table class='moves' id='moves'><thead><tr><th class='num'>#</th><th>VM</th><th>source → destination</th>"
        "<th>wave</th><th>state</th><th>started</th><th>ended</th><th class='num'>took</th><th class='num'>GiB</th>"
        "<th>note</th></tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
    )
    if not view.records:
        return "<section class='card' id='moves-card'>\n<h2>Every move</h2>\n<p class='empty'>None.</p>\n</section>\n"
    opened = " open" if len(view.records) <= FOLD_MOVES_OVER else ""
    return (
        f"<section class='card' id='moves-card'>\n<details{opened}><summary>Every move ({len(view.records):,})"
        f"</summary>\n{table}</details>\n</section>\n"
    )
