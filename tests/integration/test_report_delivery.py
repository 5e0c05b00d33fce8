"""Where the run report goes when publishing (issue 11): the bucket's run-reports/, and --report PATH.

Real PostgreSQL (the sample data loaded_own by bond_data), the Socrata protocol server on loopback
HTTPS, and a folder or the S3 endpoint (moto) as the bucket.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg2
import pytest

import bond_calculations
from bond_reporting import charts, report
from config import datasets as cfg
from tests.support.services import s3_client
from tests.support.soda_server import SodaServer

STAMPED = re.compile(r"run-reports/\d{4}-\d{2}-\d{2}T\d{6}Z\.html")


def status_of(page: str) -> str:
    return re.search(r'data-figure="run-status">([^<]+)<', page).group(1)


def test_publishing_writes_the_report_to_the_bucket_stamped_and_latest_and_to_report_path(
    loaded_own: str, soda: SodaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = tmp_path / "bucket"
    monkeypatch.setenv("BUCKET", str(bucket))
    with caplog.at_level(logging.INFO):
        assert bond_calculations.main(["--report", str(tmp_path / "elsewhere" / "run.html")]) == 0
    files = sorted(p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file())
    assert len(files) == 2 and "run-reports/latest.html" in files
    stamped = next(f for f in files if f != "run-reports/latest.html")
    assert STAMPED.fullmatch(stamped)
    page = (bucket / stamped).read_text()
    assert (
        page
        == (bucket / "run-reports" / "latest.html").read_text()
        == (tmp_path / "elsewhere" / "run.html").read_text()
    )
    assert status_of(page) == "completed" and f"https://{soda.domain}" in page
    assert all(len(soda.datasets[i]) > 0 for i in cfg.DATASET_IDS)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run report:")]
    assert stamped in line and "latest.html" in line


def test_a_failed_publish_still_writes_a_report_that_says_failed(
    loaded_own: str, soda: SodaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BUCKET", str(tmp_path / "bucket"))
    soda.key_secret = "not-what-we-send-0042"  # every write refused: HTTP 401
    assert bond_calculations.main([]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "HTTP 401" in errors[0]
    assert soda.datasets == {i: [{"old": "row"}] for i in cfg.DATASET_IDS}  # every dataset keeps its old rows
    page = (tmp_path / "bucket" / "run-reports" / "latest.html").read_text()
    assert status_of(page) == "failed"
    assert "HTTP 401" in re.search(r'data-figure="run-error">([^<]+)<', page).group(1)


def test_the_report_in_an_s3_bucket_is_served_as_html(
    loaded_own: str, soda: SodaServer, s3_bucket: str, s3_endpoint: str
) -> None:
    assert bond_calculations.main([]) == 0
    client = s3_client(s3_endpoint)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="run-reports/")["Contents"])
    assert len(keys) == 2 and keys[-1] == "run-reports/latest.html" and STAMPED.fullmatch(keys[0])
    head = client.head_object(Bucket=s3_bucket, Key="run-reports/latest.html")
    assert head["ContentType"] == "text/html"
    body = client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].read().decode()
    assert status_of(body) == "completed"


def worker_specs() -> list[charts.Spec]:
    months = report.fiscal_year_months(2026)
    return [
        charts.Spec("cumulative_chart", ("a", "All", months, [1.0] * 6 + [None] * 6, [2.0] * 12, [3.0] * 12)),
        charts.Spec("small_cumulative_charts", ("p", months, [("P1", [1.0] * 12, [2.0] * 12, [0.5] * 12)])),
        charts.Spec("spent_bars", ("b", "Bars", ["2016 · Roads"], [5.0], [None])),
    ]


def test_the_chart_worker_process_draws_exactly_what_this_process_draws() -> None:
    specs = worker_specs()
    with report.ChartWorker.start() as worker:
        worker.submit(specs)
        drawn = worker.results()
    assert drawn == charts.draw(specs)
    assert isinstance(drawn[1], list) and drawn[0].startswith("<svg")


def test_a_dead_chart_worker_is_one_warning_and_the_charts_are_drawn_here(caplog: pytest.LogCaptureFixture) -> None:
    specs = worker_specs()
    worker = report.ChartWorker.start()
    worker._process.kill()  # the worker dies (out of memory, killed by an operator, ...)
    worker._process.wait()
    with caplog.at_level(logging.WARNING):
        worker.submit(specs)
        drawn = worker.results()
        worker.close()
    assert drawn == charts.draw(specs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("run report: the chart worker failed")


def test_a_second_folder_run_shows_what_changed_and_the_programs_that_moved(
    loaded_own: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    first = (out / "report.html").read_text()
    assert status_of(first) == "completed" and "Programs whose totals moved most" not in first  # first publish
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder or temporary left

    # One 2020 AIMS group spends 1,000.00 more (a posting the report lists as a moved program).
    with psycopg2.connect(loaded_own) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE api.expenses_obligated_2020_bond_raw SET expenses = expenses + 1000 WHERE ctid = "
            "(SELECT r.ctid FROM api.expenses_obligated_2020_bond_raw r JOIN api.bond_2020_aims_to_dashboard l "
            'ON l.aims_dept_prog_act = r.department::text || r.fund || r.division || r."group" '
            "WHERE r.fiscal_year = 2026 ORDER BY r.date DESC LIMIT 1)"
        )
        assert cur.rowcount == 1
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert bond_calculations.main(["--output-dir", str(out)]) == 0
    second = (out / "report.html").read_text()
    changes = second[second.index('<section id="changes">') : second.index('<section id="data-notes">')]
    assert "Programs whose totals moved most" in changes
    moved = re.findall(
        r"<tr><td>2020 bond FY 2026 expenses: ([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>", changes
    )
    assert len(moved) == 1 and moved[0][3] == "$1,000.00"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run report:")]
    assert line.endswith(f"-> {out / 'report.html'}")
