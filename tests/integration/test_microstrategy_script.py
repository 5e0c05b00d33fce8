"""microstrategy_to_s3.py end to end: protocol server on loopback, S3 on moto's server, local files."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile

import pytest

import microstrategy_to_s3
from bond_reporting import microstrategy
from bond_reporting.errors import ConfigError
from scripts.mstr_server import ALL_BONDS_ID, BOND_2020_ID, Fault, MstrServer, Report
from tests.support import ROOT
from tests.support.mstr_support import ALL_BONDS_HEADER, FAST, PASSWORD, PROJECT_ID, USERNAME, all_bonds_report
from tests.support.services import s3_client

ALL_BONDS = "All bonds Expenses Obligated"
KEY = f"{ALL_BONDS}.csv"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The all-bonds report (23 rows) on a protocol server; the environment points the script at it.

    BUCKET is a folder of the test (tests of the S3 bucket ask for ``s3_bucket`` after ``server``)."""
    report, _text = all_bonds_report(tmp_path)
    with MstrServer([report], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as srv:
        for name, value in {
            "BASE_URL": srv.base_url + "/api/",
            "PROJECT_ID": PROJECT_ID,
            "MSTRO_USERNAME": USERNAME,
            "MSTRO_PASSWORD": PASSWORD,
            "BUCKET": str(tmp_path / "bucket"),
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(microstrategy, "DEFAULT_POLICY", FAST)
        yield srv


@pytest.fixture
def expected(tmp_path) -> bytes:
    return all_bonds_report(tmp_path)[1].encode("utf-8")


def no_secret_in(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


def test_must_show_all_pages_to_a_local_file(server, tmp_path, expected, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out.csv"
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", str(out), "--page-size", "5"]) == 0
    data = out.read_bytes()
    assert data.split(b"\n", 1)[0].decode() == ALL_BONDS_HEADER
    assert data == expected
    assert server.count("page") == 4
    summary = caplog.records[-1].getMessage()
    # The exact sums of the tricky rows (1e+16 and 0.30000000000000004 included), pages = CSV.
    assert f"reconciled export: report '{ALL_BONDS}': pages received = CSV written (23 rows, " in caplog.text
    assert summary.startswith(
        f"report '{ALL_BONDS}': 23 rows, Obligated 10,000,000,000,172,218.25, Expenses 4,192.80000000000000004 "
        f"written to {out} in "
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_bonds_source.csv", "out.csv"]  # no temp left


def test_must_show_as_a_real_command(server, tmp_path, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "microstrategy_to_s3.py",
            "-r",
            ALL_BONDS,
            "--output",
            str(tmp_path / "out.csv"),
            "--page-size",
            "4",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.csv").read_bytes() == expected
    assert f"report '{ALL_BONDS}': 23 rows, " in result.stderr
    no_secret_in(result.stdout, result.stderr)


def test_run_returns_the_summary(server, tmp_path):
    summary = microstrategy_to_s3.run(ALL_BONDS, output=str(tmp_path / "sub" / "out.csv"), page_size=10)
    assert summary["report"] == ALL_BONDS
    assert summary["rows"] == 23
    # The reconciliation the run history records: pages received = CSV written, exact decimal text.
    assert (
        summary["received"]
        == summary["written"]
        == {
            "rows": 23,
            "money": {"Obligated": "10000000000172218.25", "Expenses": "4192.80000000000000004"},
        }
    )
    assert summary["destination"] == str(tmp_path / "sub" / "out.csv")
    assert summary["seconds"] >= 0


def test_upload_to_the_bucket(server, s3_bucket, s3_endpoint, expected):
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "7"]) == 0
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=KEY)["Body"].read()
    assert body == expected


def test_failed_run_leaves_the_previous_object_byte_identical(server, s3_bucket, s3_endpoint, tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key=KEY, Body=b"previous,contents\n1,2\n")
    server.faults.append(Fault("page", offset=14, status=500, times=None))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "7"]) == 1
    assert client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == b"previous,contents\n1,2\n"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [KEY]
    assert server.sessions == {}  # logged out after the failure
    assert list(temp.iterdir()) == []  # the partial temporary CSV is gone


def test_failed_run_leaves_the_previous_local_file(server, tmp_path, caplog):
    out = tmp_path / "out.csv"
    out.write_bytes(b"previous\n")
    server.faults.append(Fault("page", offset=10, drop=True, times=None))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", str(out), "--page-size", "5"]) == 1
    assert out.read_bytes() == b"previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_bonds_source.csv", "out.csv"]
    assert re.search(
        rf"microstrategy_to_s3 failed: MicroStrategy report '{ALL_BONDS}': page at offset 10: connection to "
        r"127\.0\.0\.1:\d+ failed \(ConnectionResetError\); gave up after 3 attempts in \d+ s$",
        caplog.records[-1].getMessage(),
    )


def test_session_loss_mid_download_still_uploads_every_row_once(server, s3_bucket, s3_endpoint, expected):
    server.faults.append(Fault("page", offset=10, expire_session=True))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--page-size", "5"]) == 0
    assert s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == expected


@pytest.fixture
def empty_report(server):
    server.add_report(Report.from_rows(ALL_BONDS_ID, ALL_BONDS, [("Fund", ["Code", "Long Name"])], ["Obligated"], []))


def test_empty_report_is_an_error_and_nothing_is_written(server, empty_report, s3_bucket, s3_endpoint, caplog):
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key=KEY, Body=b"previous\n")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert client.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read() == b"previous\n"
    assert "has 0 rows; nothing written" in caplog.text
    assert "--allow-empty" in caplog.text


def test_empty_report_with_allow_empty_writes_the_header_only(server, empty_report, tmp_path):
    out = tmp_path / "out.csv"
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "--output", str(out), "--allow-empty"]) == 0
    assert out.read_bytes() == b"Fund@Code,Fund@Long Name,Obligated\n"


def test_bad_password_exits_1_with_err003_and_ticket_and_never_the_password(server, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-Pa55word-secret"
    monkeypatch.setenv("MSTRO_PASSWORD", wrong)
    assert microstrategy_to_s3.main(["-r", ALL_BONDS, "-v"]) == 1
    out, err = capfd.readouterr()
    error = caplog.records[-1].getMessage()
    assert "HTTP 401 ERR003" in error
    assert f"(ticket {server.tickets[-1]})" in error
    for text in (out, err, caplog.text):
        assert wrong not in text
        assert PASSWORD not in text
    assert server.count("login") == 1


def test_unknown_report_id_exits_1_with_err004(server, caplog):
    assert BOND_2020_ID not in server.reports
    assert microstrategy_to_s3.main(["-r", "2020 Bond Expenses Obligated"]) == 1
    assert f"run of report {BOND_2020_ID}: HTTP 404 ERR004" in caplog.text
    assert server.count("logout", 204) == 1


def test_wrong_project_exits_1_with_err006(server, monkeypatch, caplog):
    monkeypatch.setenv("PROJECT_ID", "00000000000000000000000000000000")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert "HTTP 400 ERR006" in caplog.text
    assert "Project ID" in caplog.text


def test_prompted_report_exits_1_and_logs_out(server, caplog):
    server.add_report(Report.from_rows(ALL_BONDS_ID, ALL_BONDS, [("Date", ["ID"])], [], [], prompted=True))
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 1
    assert "unanswered prompts" in caplog.text
    assert server.count("logout", 204) == 1
    assert server.sessions == {}


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["-r", "Nope"], "argument -r/--report-name: invalid choice: 'Nope' (choose from "),
        ([], "the following arguments are required: -r/--report-name"),
        (["-r", ALL_BONDS, "--page-size", "0"], "argument --page-size: must be at least 1, not 0"),
    ],
)
def test_usage_errors_print_the_usage_and_exit_2_without_a_call(server, capsys, caplog, argv, pattern):
    assert microstrategy_to_s3.main(argv) == 2
    usage, error = capsys.readouterr().err.split("\nmicrostrategy_to_s3.py: error: ")
    assert usage.startswith("usage: microstrategy_to_s3.py [-h] [-v] -r NAME")
    assert error.startswith(pattern)
    assert server.calls == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_run_refuses_an_unknown_report_listing_the_registered_ones(server):
    with pytest.raises(ConfigError) as failure:
        microstrategy_to_s3.run("Nope")
    names = ", ".join(repr(name) for name in microstrategy_to_s3.REPORTS)
    assert str(failure.value) == f"unknown report 'Nope'; known reports: {names}"
    assert server.calls == []


def test_missing_setting_exits_2_naming_it(server, monkeypatch, caplog):
    monkeypatch.delenv("PROJECT_ID")
    assert microstrategy_to_s3.main(["-r", ALL_BONDS]) == 2
    assert "missing setting PROJECT_ID" in caplog.text


@pytest.mark.parametrize(
    ("name", "sample"),
    [
        ("2020 Bond Expenses Obligated", "expenses_obligated_2020_bond_raw.csv"),
        (ALL_BONDS, "expenses_obligated_all_bonds_raw.csv"),
    ],
)
def test_sample_data_reports_round_trip_byte_for_byte(monkeypatch, tmp_path, name, sample):
    """The committed sample exports, served by the protocol server, come back identical."""
    path = ROOT / "sample_data" / sample
    report = Report.from_csv(microstrategy_to_s3.REPORTS[name], path)
    with MstrServer([report], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as srv:
        settings = microstrategy_to_s3.Settings(
            base_url=srv.base_url, project_id=PROJECT_ID, mstro_username=USERNAME, mstro_password=PASSWORD
        )
        summary = microstrategy_to_s3.run(name, output=str(tmp_path / "out.csv"), page_size=50, settings=settings)
    assert summary["rows"] == report.total > 50
    assert (tmp_path / "out.csv").read_bytes() == path.read_bytes()
