"""The run report in a real browser: headless Chromium, driven over the DevTools protocol.

The sample data is loaded into PostgreSQL and ``bond_calculations.py --output-dir`` writes the
payloads and ``report.html``; Chromium (Debian's ``chromium`` package) opens the page from disk.
Checked: no console error or exception, no network request but the page itself, every chart
drawn (an SVG with visible marks), the headline numbers in the DOM equal to sums over the payload
JSON files, and a full-page screenshot in ``test-output/report.png`` for people to look at.

Without Chromium: skipped locally with one line saying why; a failure in CI (``CI=true``), where
``.ci/run`` installs it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bond_calculations
import bond_data
from bond_reporting import report
from config import datasets as cfg
from tests.support import ROOT

SAMPLE = ROOT / "sample_data"
SCREENSHOT = ROOT / "test-output" / "report.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VIEWPORT = (1280, 900)  # a laptop screen


def chromium() -> str:
    """The browser's path; skips (locally) or fails (CI=true) when there is none."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is not installed: .ci/run installs Debian's chromium package when run as root")
    pytest.skip("Chromium not installed (apt-get install chromium); the browser check of the run report runs in CI")


class DevTools:
    """A minimal Chrome DevTools protocol client: commands and events over one websocket (flat sessions)."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._socket = connect(url, max_size=None, open_timeout=30)
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            data = self._receive(deadline, method)
            if data.get("id") == self._next:
                if "error" in data:
                    raise AssertionError(f"{method}: {data['error']}")
                return data.get("result", {})
            self.events.append(data)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._receive(deadline, method))

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no answer from Chromium for {what}")
        return json.loads(self._socket.recv(timeout=remaining))

    def close(self) -> None:
        self._socket.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    """Headless Chromium on 127.0.0.1 (a port of its choosing), with a throw-away profile."""
    path = chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = (profile / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            path,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Chromium did not start: {(profile / 'chromium.log').read_text()[-1000:]}")
            time.sleep(0.1)
        port, ws_path = port_file.read_text().splitlines()[:2]
        client = DevTools(f"ws://127.0.0.1:{port}{ws_path}")
        try:
            yield client
        finally:
            client.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def open_page(browser: DevTools, url: str) -> tuple[str, list[dict[str, Any]]]:
    """A fresh tab showing ``url`` at laptop size; returns (session id, its events so far)."""
    target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable", session)
    width, height = VIEWPORT
    browser.call(
        "Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1, mobile=False
    )
    browser.events.clear()
    browser.call("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired")
    browser.call("Runtime.evaluate", session, expression="1", awaitPromise=True)  # let queued events arrive
    return session, [e for e in browser.events if e.get("sessionId") == session]


def problems(events: list[dict[str, Any]], page_url: str) -> tuple[list[str], list[str]]:
    """(console errors and exceptions, URLs requested other than the page itself)."""
    errors, requests = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent" and params.get("request", {}).get("url") != page_url:
            requests.append(params["request"]["url"])
    return errors, requests


PAGE_FACTS = """JSON.stringify({
  charts: [...document.querySelectorAll('figure.chart')].map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const marks = svg ? [...svg.querySelectorAll('path')].filter(p => {
      const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length : 0;
    const texts = svg ? [...svg.querySelectorAll('text')].map(t => t.textContent) : [];
    return {name: f.dataset.chart, svg: !!svg, width: box.width, height: box.height, marks, texts};
  }),
  figures: Object.fromEntries([...document.querySelectorAll('[data-figure]')]
    .map(e => [e.dataset.figure, e.textContent.trim()])),
  labels: Object.fromEntries([...document.querySelectorAll('#headline .card')]
    .map(c => [c.querySelector('[data-figure]').dataset.figure, c.querySelector('.label').textContent.trim()])),
  tables: document.querySelectorAll('table').length,
  height: document.documentElement.scrollHeight,
})"""


@pytest.fixture
def report_page(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The sample data loaded and calculated: the folder with the payloads and report.html."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert bond_data.main(["--from-dir", str(SAMPLE)]) == 0
    out = tmp_path / "out"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    return out


def expected_figures(out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(the headline numbers, summed in plain Python over the payload JSON files (what Socrata
    gets); the labels the fiscal-year figures must carry)."""
    payloads = {i: json.loads((out / f"{i}.json").read_text()) for i in cfg.DATASET_IDS}
    summary = payloads["hq9n-d77y"]
    # The fiscal year's own figures: the month rows' own amounts ('0FY' rows are other years, Q9),
    # "to date" through the last month with an expense entry.
    months = [r for r in summary if not r["table_col"].startswith("0FY")]
    last = max(r["table_col"] for r in months if r["Expenses"] is not None)
    year = int(last[:4]) + (int(last[5:]) >= 10)
    # The dashboard's running totals at that month: the last non-null Sum_* per dashboard id.
    running: dict[str, dict[str, float]] = {"Sum_expenses": {}, "Sum_baseline": {}}
    for r in summary:
        for column, last_value in running.items():
            if r[column] is not None and r["table_col"] <= last:
                last_value[r["dashboard_deptfundprogact"]] = r[column]
    final: dict[str, float] = {}
    for r in payloads["rrww-ybw6"]:  # date order: the last row of a group holds its final running sum
        final[r["aims_dept_prog_act"]] = r["sum_expenses"]
    ids = defaultdict(set)
    for r in payloads["mri6-eexh"]:
        ids[r["aims_dept_prog_act"]].add(r["dashboard_deptfundprogact"])
    programs = {r["dashboard_deptfundprogact"] for r in payloads["9ufs-k2md"]}
    spent = sum(v for group, v in final.items() for i in ids[group] if i in programs)
    figures = {
        "fy-expenses": report.money(sum(r["Expenses"] or 0.0 for r in months)),
        "fy-baseline-to-date": report.money(sum(r["Baseline"] or 0.0 for r in months if r["table_col"] <= last)),
        "fy-planned": report.money(sum(r["Planned"] or 0.0 for r in months)),
        "hq9n-d77y-running-expenses": report.money(sum(running["Sum_expenses"].values())),
        "hq9n-d77y-running-baseline": report.money(sum(running["Sum_baseline"].values())),
        "all-bonds-spent": report.money(spent),
        "all-bonds-appropriated": report.money(sum(r["appropriated"] or 0 for r in payloads["9ufs-k2md"])),
        "rows-published": f"{sum(len(p) for p in payloads.values()):,}",
        "run-status": "completed",
    }
    figures.update({f"rows-{i}": f"{len(p):,}" for i, p in payloads.items()})
    labels = {
        "fy-expenses": f"2020 bond expenses in FY {year} to date (through {last})",
        "fy-baseline-to-date": f"2020 bond baseline for FY {year} to date (through {last})",
        "fy-planned": f"2020 bond planned for FY {year} (whole year)",
    }
    return figures, labels


def test_the_report_opens_offline_draws_every_chart_and_shows_the_payloads_numbers(
    browser: DevTools, report_page: Path, capsys: pytest.CaptureFixture
) -> None:
    page = report_page / "report.html"
    url = page.resolve().as_uri()
    session, events = open_page(browser, url)

    errors, requests = problems(events, url)
    assert errors == []
    assert requests == []
    facts = json.loads(
        browser.call("Runtime.evaluate", session, expression=PAGE_FACTS, returnByValue=True)["result"]["value"]
    )

    charts = {c["name"]: c for c in facts["charts"]}
    assert {"hq9n-d77y-total", "5ewg-ssu3-total", "all-bonds"} <= set(charts)
    assert any(name.startswith("hq9n-d77y-program-") for name in charts)
    for chart in facts["charts"]:
        assert chart["svg"] and chart["width"] > 200 and chart["height"] > 100, chart["name"]
        assert chart["marks"] >= 3, chart["name"]  # axes and at least one drawn series
        assert any(t.startswith("$") for t in chart["texts"]), chart["name"]  # a dollar axis
    assert facts["tables"] >= 5  # every chart's numbers are in the page's text too

    shown = facts["figures"]
    figures, labels = expected_figures(report_page)
    for key, value in figures.items():
        assert shown[key] == value, key
    for key, label in labels.items():
        assert facts["labels"][key] == label, key

    # A full-page screenshot at laptop width, for people to look at.
    metrics = browser.call("Page.getLayoutMetrics", session)
    height = int(metrics["cssContentSize"]["height"])
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=VIEWPORT[0],
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    shot = browser.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 50_000
    # It prints, too: the print layout renders to a PDF of a few pages.
    pdf = base64.b64decode(browser.call("Page.printToPDF", session, printBackground=True)["data"])
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
    with capsys.disabled():
        print(f"\nrun report screenshot: {SCREENSHOT.relative_to(ROOT)} ({facts['height']} px tall); page: {page}")


def test_the_browser_check_sees_a_request_and_a_console_error(browser: DevTools, tmp_path: Path) -> None:
    """The two detectors above can fail: a page with a remote image and a script error trips both."""
    page = tmp_path / "control.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/pixel.png" alt="">'
        "<script>console.error('control error')</script></body></html>"
    )
    url = page.resolve().as_uri()
    _session, events = open_page(browser, url)
    errors, requests = problems(events, url)
    assert "http://127.0.0.1:9/pixel.png" in requests
    assert any("control error" in e for e in errors)
