"""The campaign report (starter/report.py): the HTML itself, and what a person sees when a real browser opens it.

The browser is Debian's Chromium (`/usr/bin/chromium`, installed by `make system-deps`) driven by Playwright; when
it is missing the browser tests fail and say how to install it, they are not skipped. Set SNLM_REPORT_SCREENSHOT to
a path to keep a screenshot of the rendered report (docs/campaign-report.png is made that way).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from starter.report import DENSE_MOVES, render_report, write_report
from workflows.contracts import CampaignCounts, CampaignPhase, CampaignProgress, MoveRecord, MoveState

GIB = 2**30
START = datetime(2025, 3, 8, 22, 0, tzinfo=UTC).timestamp()  # a Saturday night's window
HOSTILE_SCRIPT = "<script>window.pwned=1</script>"
HOSTILE_QUOTES = "web\"07' & <b>bold</b> <img src=x onerror=window.pwned=2>"
NON_ASCII = "ДБ-сервер-№1 ✓ Ζεύς"
LONG_NAME = "vm-" + "x" * 197
HOSTILE_ERROR = 'MoveFailed: <i>0x8007274C</i> & the "source" host\'s job ended'
CHROMIUM = "/usr/bin/chromium"


# -- a synthetic campaign -----------------------------------------------------------------------------------------
def campaign(
    moves: int = 40, hosts: int = 6, waves: Sequence[str] = ("pilot", "wave-2", "wave-3"), seed: int = 7
) -> tuple[CampaignProgress, list[MoveRecord]]:
    """An ended campaign: `moves` moves between `hosts` hosts with two slots each, wave after wave, each move started
    as soon as both its hosts had a free slot. Four failed (three with hostile names), one was cancelled, three were
    already there, one was attached; the forecast was 10% short."""
    rng = random.Random(seed)
    names = [f"HV-{n:02d}" for n in range(1, hosts + 1)]
    slots = {host: [START, START] for host in names}
    # A small pilot first, then waves that grow: 5, 11 and 24 of 40.
    pilot = max(1, moves // 8)
    weights = range(1, len(waves))
    per_wave = [pilot] + [(moves - pilot) * w // sum(weights) for w in weights]
    per_wave[-1] += moves - sum(per_wave)
    special = {
        3: (MoveState.FAILED, HOSTILE_SCRIPT, HOSTILE_ERROR),
        11: (MoveState.FAILED, HOSTILE_QUOTES, "DestinationDiskFull: 12 GiB free on D:, 40 GiB needed"),
        17: (MoveState.FAILED, NON_ASCII, "HostUnreachable: WinRM on HV-04 did not answer"),
        26: (MoveState.FAILED, "sql-prod-07", "MoveFailed: the guest's memory changed faster than the link"),
        30: (MoveState.CANCELLED, "build-agent-3", ""),
        5: (MoveState.ALREADY_THERE, "dc-backup", ""),
        21: (MoveState.ALREADY_THERE, LONG_NAME, ""),
        33: (MoveState.ALREADY_THERE, "print-01", ""),
    }
    records: list[MoveRecord] = []
    wave_start = START
    index = 0
    for wave, count in enumerate(per_wave):
        wave_end = wave_start
        for _ in range(count):
            source, destination = rng.sample(names, 2)
            state, vm, error = special.get(index, (MoveState.MOVED, f"app-{index:03d}", ""))
            a = min(range(2), key=slots[source].__getitem__)
            b = min(range(2), key=slots[destination].__getitem__)
            started = max(wave_start, slots[source][a], slots[destination][b]) + rng.randint(1, 20)
            took = 2 if state == MoveState.ALREADY_THERE else rng.randint(150, 720)
            ended = started + took
            slots[source][a] = slots[destination][b] = ended
            wave_end = max(wave_end, ended)
            records.append(
                MoveRecord(
                    index=index,
                    vm=vm,
                    source=source,
                    destination=destination,
                    wave=wave,
                    state=state,
                    started=float(started),
                    ended=float(ended),
                    error=error,
                    bytes=rng.randint(4, 64) * GIB,
                    attached=index == 8,
                )
            )
            index += 1
        wave_start = wave_end
        slots = {host: [max(t, wave_end) for t in times] for host, times in slots.items()}
    actual = max(r.ended for r in records) - min(r.started for r in records)
    forecast = round(actual / 1.1)
    return progress_of('Saturday <night> & "move" ☾', records, waves, forecast), records


def progress_of(
    name: str,
    records: Sequence[MoveRecord],
    waves: Sequence[str],
    forecast: float,
    phase: CampaignPhase = CampaignPhase.ENDED,
) -> CampaignProgress:
    counts: dict[str, int] = {}
    for r in records:
        key = r.state.value.replace("-", "_")
        counts[key] = counts.get(key, 0) + 1
    moved = sum(r.bytes for r in records if r.state.ok)
    first = min((r.started for r in records if r.started), default=0.0)
    return CampaignProgress(
        name=name,
        phase=phase,
        counts=CampaignCounts(**counts),
        total=len(records),
        wave=max((r.wave for r in records if r.started), default=0),
        waves=tuple(waves),
        bytes_moved=moved,
        bytes_left=sum(r.bytes for r in records) - moved,
        forecast_end=first + forecast if first and forecast else 0.0,
        forecast_makespan_seconds=forecast,
    )


def running_at(records: Sequence[MoveRecord], moment: float) -> list[MoveRecord]:
    """The same campaign seen at `moment`: moves not started yet are pending, those under way are running."""
    seen = []
    for r in records:
        if r.started > moment:
            seen.append(replace(r, state=MoveState.PENDING, started=0.0, ended=0.0, error=""))
        elif r.ended > moment:
            seen.append(replace(r, state=MoveState.RUNNING, ended=0.0, error=""))
        else:
            seen.append(r)
    return seen


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of the page."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, cls: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag and cls in (attrs.get("class") or "").split()]


def assert_self_contained(document: str) -> None:
    """No script, and nothing the page would fetch: no element that loads, no attribute that points elsewhere."""
    lowered = document.lower()
    for needle in ("<script", "<link", "<iframe", "<img", "<object", "<embed", "url(", "@import", "http:", "https:"):
        assert needle not in lowered, needle
    for tag, attrs in Elements(document).tags:
        assert not {"src", "href", "xlink:href", "srcset", "action"} & set(attrs), tag
        assert not [name for name in attrs if name.startswith("on")], tag


# -- the HTML -----------------------------------------------------------------------------------------------------
def test_every_string_from_the_campaign_is_escaped() -> None:
    progress, records = campaign()
    document = render_report(progress, records, generated=datetime(2025, 3, 9, 6, 0, tzinfo=UTC))
    assert_self_contained(document)
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in document
    assert "<b>bold</b>" not in document
    assert "&lt;b&gt;bold&lt;/b&gt;" in document
    assert "onerror=window" not in document.replace("&lt;img src=x onerror=window", "")
    assert "&lt;i&gt;0x8007274C&lt;/i&gt; &amp; the &quot;source&quot; host&#x27;s job ended" in document
    assert NON_ASCII in document
    assert LONG_NAME in document
    page = Elements(document)
    text = "".join(page.text)
    for name in (HOSTILE_SCRIPT, HOSTILE_QUOTES, NON_ASCII, progress.name):
        assert name in text  # shown as text, once parsed back
    assert page.having("rect", "bar")
    assert not [tag for tag, _ in page.tags if tag == "script"]


def test_an_empty_campaign_says_so() -> None:
    progress = CampaignProgress(
        name="empty",
        phase=CampaignPhase.CHECKING,
        counts=CampaignCounts(),
        total=0,
        wave=0,
        waves=(),
        bytes_moved=0,
        bytes_left=0,
    )
    document = render_report(progress, [], generated=datetime(2025, 3, 9, tzinfo=UTC))
    assert_self_contained(document)
    page = Elements(document)
    text = " ".join("".join(page.text).split())
    assert "No move has started yet." in text
    assert "Failed and blocked moves (0)" in text
    assert "not started" in text
    assert not page.having("rect", "bar")
    assert not [t for t, _ in page.tags if t == "svg"]


def test_a_running_campaign_draws_its_running_moves_to_now() -> None:
    _, ended = campaign()
    first = min(r.started for r in ended)
    moment = first + 0.6 * (max(r.ended for r in ended) - first)
    records = running_at(ended, moment)
    running = [r for r in records if r.state == MoveState.RUNNING]
    assert running
    assert any(r.state == MoveState.PENDING for r in records)
    progress = progress_of("night", records, ("pilot", "wave-2", "wave-3"), 9000, CampaignPhase.RUNNING)
    document = render_report(progress, records, generated=datetime.fromtimestamp(moment, UTC))
    page = Elements(document)
    text = " ".join("".join(page.text).split())
    hours, rest = divmod(round(moment - first), 3600)
    so_far = f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"
    assert f"{so_far} so far" in text
    assert "the error is known when every move has ended" in text
    [now] = page.having("line", "now")
    bars = page.having("rect", "running")
    assert len(bars) == 2 * len(running)
    for bar in bars:
        right = float(bar["x"] or 0) + float(bar["width"] or 0)
        assert right == pytest.approx(float(now["x1"] or 0), abs=0.11)
    started = [r for r in records if r.started]
    assert len(page.having("rect", "bar")) == 2 * len(started)


def test_ten_thousand_moves_stay_a_file_a_browser_opens(tmp_path: Path) -> None:
    progress, records = campaign(moves=10_000, hosts=60, waves=[f"wave-{n}" for n in range(1, 21)])
    path = write_report(tmp_path / "deep" / "report.html", progress, records)
    assert path == tmp_path / "deep" / "report.html"
    size = path.stat().st_size
    assert size < 10 * 2**20, size
    page = Elements(path.read_text(encoding="utf-8"))
    bars = page.having("rect", "bar")
    assert len(records) > DENSE_MOVES
    assert len(bars) == 20_000
    assert {bar["height"] for bar in bars} == {"4"}


# -- what a person sees in a browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if executable is None:
        pytest.fail(
            f"the report's browser tests need Chromium at {CHROMIUM}: run `make system-deps` "
            "(as root on Debian: apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_report(browser: Any, path: Path, requests: list[str], errors: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1320, "height": 900})
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.resolve().as_uri())
    return page


def test_the_report_in_a_browser(browser: Any, tmp_path: Path) -> None:
    progress, records = campaign()
    path = write_report(tmp_path / "report.html", progress, records, generated=datetime(2025, 3, 9, 6, tzinfo=UTC))
    requests: list[str] = []
    errors: list[str] = []
    page = open_report(browser, path, requests, errors)

    assert page.title() == f"snlm campaign {progress.name}"
    assert page.inner_text("h1") == progress.name
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert requests == [path.resolve().as_uri()]  # nothing fetched from elsewhere
    assert not errors

    # The summary, as visible text.
    counts = {state: sum(1 for r in records if r.state == state) for state in MoveState}
    for state in (MoveState.MOVED, MoveState.ALREADY_THERE, MoveState.FAILED, MoveState.CANCELLED):
        cell = page.locator(f"#counts tr[data-state='{state.value}'] td.count")
        assert cell.inner_text() == str(counts[state])
        assert cell.is_visible()
    assert page.locator("#counts tr.total td.count").inner_text() == "40"
    moved_gib = sum(r.bytes for r in records if r.state.ok) / GIB
    assert page.locator("#bytes tr[data-bytes='moved']").inner_text().split()[-2] == f"{moved_gib:,.1f}"
    actual = max(r.ended for r in records) - min(r.started for r in records)
    error = 100 * (actual - progress.forecast_makespan_seconds) / progress.forecast_makespan_seconds
    assert page.inner_text("#makespan-error") == f"{error:+.1f}%"
    assert "longer than forecast" in page.inner_text("#makespan")

    # One lane per host, labelled with its name.
    hosts = sorted({r.source for r in records} | {r.destination for r in records})
    labels = page.locator("svg.timeline text.lane-label")
    assert labels.count() == len(hosts) == 6
    assert [labels.nth(i).evaluate("e => e.firstChild.textContent") for i in range(6)] == hosts
    assert page.locator("svg.timeline text.wave-label").count() == 3
    assert page.locator("svg.timeline line.marker.forecast").count() == 1

    # Bars: one on each of a move's two lanes, with a width, inside the drawing.
    svg = page.locator("svg.timeline")
    view_width, view_height = (float(v) for v in (svg.get_attribute("viewBox") or "").split()[2:])
    box = svg.bounding_box()
    assert box is not None
    bars = page.locator("svg.timeline rect.bar")
    assert bars.count() == 2 * len(records)
    for geometry in bars.evaluate_all(
        "bars => bars.map(b => [b.x.baseVal.value, b.y.baseVal.value, b.width.baseVal.value,"
        " b.height.baseVal.value, b.getBoundingClientRect().toJSON()])"
    ):
        x, y, width, height, client = geometry
        assert width > 0
        assert height > 0
        assert x >= 0
        assert x + width <= view_width
        assert y >= 0
        assert y + height <= view_height
        assert client["width"] > 0
        assert client["x"] >= box["x"] - 0.5
        assert client["right"] <= box["x"] + box["width"] + 0.5
    assert page.locator("svg.timeline rect.bar.failed").count() == 2 * counts[MoveState.FAILED]
    tooltip = page.locator("svg.timeline rect.bar.failed title").first.text_content() or ""
    assert HOSTILE_SCRIPT in tooltip
    assert HOSTILE_ERROR in tooltip

    # The failures, named, with their errors; the hostile names as text.
    rows = page.locator("#failures tbody tr")
    failed = [r for r in records if r.state == MoveState.FAILED]
    assert rows.count() == len(failed) == 4
    for record in failed:
        row = rows.filter(has=page.locator("td.vm", has_text=record.vm)).first
        assert row.locator("td.err").inner_text() == record.error
        assert record.vm in row.inner_text()
    assert page.locator("#failures td.vm", has_text=HOSTILE_SCRIPT).count() == 1
    assert page.locator("#moves tbody tr").count() == 40
    assert re.search(r"Every move \(40\)", page.inner_text("#moves-card"))

    shot = os.environ.get("SNLM_REPORT_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        # The picture for the docs: everything down to the failures and the head of the list of every move.
        bottom = page.locator("#failures-card").bounding_box()
        assert bottom is not None
        height = bottom["y"] + bottom["height"] + 240
        page.screenshot(path=shot, full_page=True, clip={"x": 0, "y": 0, "width": 1320, "height": height})
    page.close()


def test_a_running_campaign_in_a_browser(browser: Any, tmp_path: Path) -> None:
    _, ended = campaign()
    first = min(r.started for r in ended)
    moment = first + 0.5 * (max(r.ended for r in ended) - first)
    records = running_at(ended, moment)
    progress = progress_of("night", records, ("pilot", "wave-2", "wave-3"), 9000, CampaignPhase.RUNNING)
    path = write_report(tmp_path / "running.html", progress, records, generated=datetime.fromtimestamp(moment, UTC))
    requests: list[str] = []
    errors: list[str] = []
    page = open_report(browser, path, requests, errors)
    running = sum(1 for r in records if r.state == MoveState.RUNNING)
    assert page.locator("svg.timeline rect.bar.running").count() == 2 * running > 0
    now = page.locator("svg.timeline line.marker.now").bounding_box()
    assert now is not None
    for right in page.locator("svg.timeline rect.bar.running").evaluate_all(
        "bars => bars.map(b => b.getBoundingClientRect().right)"
    ):
        assert right == pytest.approx(now["x"] + now["width"] / 2, abs=1.0)
    assert "so far" in page.inner_text("#makespan")
    assert page.locator("#counts tr[data-state='pending'] td.count").inner_text() != "0"
    assert not errors
    page.close()


def test_ten_thousand_moves_in_a_browser(browser: Any, tmp_path: Path) -> None:
    progress, records = campaign(moves=10_000, hosts=60, waves=[f"wave-{n}" for n in range(1, 21)])
    path = write_report(tmp_path / "big.html", progress, records)
    requests: list[str] = []
    errors: list[str] = []
    page = open_report(browser, path, requests, errors)
    assert page.locator("svg.timeline rect.bar").count() == 20_000
    assert page.locator("svg.timeline text.lane-label").count() == 60
    assert page.locator("#moves tbody tr").count() == 10_000
    assert not errors
    page.close()
