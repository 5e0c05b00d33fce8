"""The MicroStrategy client against the project's protocol server on loopback: paging and robustness."""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
import time

import pytest

from bond_reporting.errors import MicroStrategyError, ReconciliationError
from bond_reporting.microstrategy import FIELDS, Client, download_report, figures_dict
from scripts.mstr_server import ALL_BONDS_ID, Fault, MstrServer, Report
from tests.support.mstr_support import (
    EXAMPLE_CSV,
    FAST,
    PASSWORD,
    PROJECT_ID,
    USERNAME,
    all_bonds_report,
    example_report,
)

RID = "4C5C0F7E4D5A4B1F9E3A2B1C0D9E8F7A"


@pytest.fixture
def server(tmp_path):
    report, _text = all_bonds_report(tmp_path)
    reports = [example_report(RID), report]
    with MstrServer(reports, username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as srv:
        yield srv


def export(server, tmp_path, report_id=RID, page_size=2, policy=FAST, **client_kwargs):
    """Run a download into tmp_path/out.csv; return (rows, text)."""
    args = {"base_url": server.base_url, "username": USERNAME, "password": PASSWORD, "project_id": PROJECT_ID}
    args.update(client_kwargs)
    client = Client(**args, policy=policy)
    dest = tmp_path / "out.csv"
    download = download_report(client, report_id, dest, page_size=page_size)
    return download.rows, dest.read_bytes().decode("utf-8")


def assert_clean_end(server, logins=1):
    """Every session the client opened is closed again; nothing left on the server."""
    assert server.count("login", 204) == logins
    assert server.count("logout", 204) == 1
    assert server.sessions == {}


def test_worked_example_is_reproduced_byte_for_byte(server, tmp_path):
    rows, text = export(server, tmp_path, page_size=2)
    assert rows == 3
    assert text == EXAMPLE_CSV
    instance, pages = (
        [c for c in server.calls if c.endpoint == "instance"],
        [c for c in server.calls if c.endpoint == "page"],
    )
    assert len(instance) == 1
    assert instance[0].body == {"subtotals": {"visible": False}}
    assert instance[0].params == {"offset": "0", "limit": "2", "fields": FIELDS}
    assert [(p.params["offset"], p.params["limit"], p.params["fields"]) for p in pages] == [("2", "2", FIELDS)]
    assert_clean_end(server)


@pytest.mark.parametrize("page_size", [1, 3, 4, 7, 50_000])
def test_multi_form_report_over_several_pages_is_exact(server, tmp_path, page_size):
    rows, text = export(server, tmp_path, report_id=ALL_BONDS_ID, page_size=page_size)
    expected = all_bonds_report(tmp_path)[1]
    assert text == expected
    assert rows == 23
    assert server.count("page") == -(-23 // page_size) - 1


def test_paging_advances_by_rows_received_not_rows_asked(server, tmp_path):
    server.page_cap = 3  # the server sends at most 3 rows whatever the limit
    _rows, text = export(server, tmp_path, report_id=ALL_BONDS_ID, page_size=5)
    assert text == all_bonds_report(tmp_path)[1]
    assert [c.params["offset"] for c in server.calls if c.endpoint == "page"] == ["3", "6", "9", "12", "15", "18", "21"]


@pytest.mark.parametrize("suffix", ["", "/", "/api", "/api/"])
def test_base_url_with_or_without_api(server, tmp_path, suffix):
    _rows, text = export(server, tmp_path, base_url=server.base_url + suffix)
    assert text == EXAMPLE_CSV


def test_empty_report_gives_the_header_only(server, tmp_path):
    server.add_report(Report.from_rows("E1", "Empty", [("Fund", ["Code", "Long Name"])], ["Obligated"], []))
    rows, text = export(server, tmp_path, report_id="E1")
    assert (rows, text) == (0, "Fund@Code,Fund@Long Name,Obligated\n")
    assert server.count("page") == 0
    assert_clean_end(server)


def test_prompted_report_fails_clearly_and_still_logs_out(server, tmp_path):
    server.add_report(Report.from_rows("P1", "Prompted", [("Date", ["ID"])], ["Expenses"], [], prompted=True))
    with pytest.raises(MicroStrategyError, match=r"unanswered prompts \(instance status 2\)"):
        export(server, tmp_path, report_id="P1")
    assert_clean_end(server)


def test_session_lost_mid_download_restarts_from_row_zero(server, tmp_path, caplog):
    server.faults.append(Fault("page", offset=4, expire_session=True))
    _rows, text = export(server, tmp_path, report_id=ALL_BONDS_ID, page_size=2)
    assert text == all_bonds_report(tmp_path)[1]  # no duplicated or missing rows
    assert server.count("instance") == 2
    offsets = [c.params["offset"] for c in server.calls if c.endpoint in ("instance", "page")]
    assert offsets[:4] == ["0", "2", "4", "0"]  # the second instance starts again at 0
    assert_clean_end(server, logins=2)
    assert "logging in again and restarting from row 0" in caplog.text


def test_session_lost_on_every_page_gives_up_after_the_restart_limit(server, tmp_path):
    server.faults.append(Fault("page", expire_session=True, times=None))
    with pytest.raises(MicroStrategyError, match=r"HTTP 401 ERR009.*ticket \w+\).*gave up after 2 restarts"):
        export(server, tmp_path, report_id=ALL_BONDS_ID)
    assert server.count("login", 204) == 3
    assert server.count("logout") == 1  # attempted; the session was already gone (401 ignored)
    assert server.sessions == {}


def test_idle_session_timeout_mid_download_is_recovered(server, tmp_path):
    server.session_timeout = 0.2
    server.faults.append(Fault("page", offset=2, delay=0.4))  # the page request arrives after the idle limit
    _rows, text = export(server, tmp_path, page_size=2)
    assert text == EXAMPLE_CSV
    assert server.count("login", 204) == 2


def test_lost_instance_is_recreated_without_logging_in_again(server, tmp_path):
    server.faults.append(Fault("page", offset=2, lose_instance=True))
    _rows, text = export(server, tmp_path, page_size=2)
    assert text == EXAMPLE_CSV
    assert server.count("instance") == 2
    assert_clean_end(server, logins=1)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("page", offset=4, status=500, times=2),
        Fault("page", offset=4, status=502),
        Fault("page", offset=4, status=503, times=2),
        Fault("page", offset=4, status=504),
        Fault("page", offset=4, status=429),
        Fault("page", offset=4, drop=True, times=2),
        Fault("page", offset=4, truncate=True),
        Fault("instance", status=503),
        Fault("instance", drop=True),
        Fault("login", status=503),
        Fault("login", drop=True),
    ],
    ids=lambda f: f"{f.endpoint}-{f.status or ('drop' if f.drop else 'truncate')}",
)
def test_transient_failures_are_retried_and_the_output_is_complete(server, tmp_path, fault, caplog):
    fault = dataclasses.replace(fault)
    server.faults.append(fault)
    _rows, text = export(server, tmp_path, report_id=ALL_BONDS_ID, page_size=2)
    assert text == all_bonds_report(tmp_path)[1]
    assert fault.times == 0  # it did fire
    assert server.count("instance") == 1 + (fault.endpoint == "instance")
    assert "retrying in" in caplog.text
    assert_clean_end(server)


def test_persistent_server_error_fails_with_code_ticket_and_attempts(server, tmp_path):
    server.faults.append(Fault("page", offset=2, status=500, times=None))
    with pytest.raises(MicroStrategyError) as failure:
        export(server, tmp_path, page_size=2)
    message = str(failure.value)
    assert message.startswith(f"MicroStrategy report {RID}: page at offset 2: HTTP 500 ERR001")
    assert "iServerCode -2147206497" in message
    assert f"(ticket {server.tickets[-1]})" in message
    assert re.search(r"gave up after 3 attempts in \d+ s$", message)
    assert "\n" not in message
    assert server.count("page") == FAST.attempts
    assert_clean_end(server)


def test_backoff_doubles_between_attempts(server, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr("bond_reporting.retry.time.sleep", sleeps.append)
    server.faults.append(Fault("page", status=503, times=None))
    policy = dataclasses.replace(FAST, attempts=5, backoff=1.0)
    with pytest.raises(MicroStrategyError, match="gave up after 5 attempts"):
        export(server, tmp_path, policy=policy)
    assert sleeps == [1.0, 2.0, 4.0, 8.0]


def test_slow_report_execution_completes_within_the_long_run_timeout(server, tmp_path):
    server.faults.append(Fault("instance", delay=1.0))
    policy = dataclasses.replace(FAST, read_timeout=0.3, run_timeout=5.0)  # pages short, the run long
    _rows, text = export(server, tmp_path, policy=policy)
    assert text == EXAMPLE_CSV
    assert server.count("instance") == 1


def test_instance_failing_fast_is_retried_within_the_run_timeout(server, tmp_path, caplog):
    server.faults.append(Fault("instance", status=503, times=2))
    _rows, text = export(server, tmp_path, policy=dataclasses.replace(FAST, run_timeout=2.0))
    assert text == EXAMPLE_CSV
    assert server.count("instance") == 3
    assert_clean_end(server)


def test_report_execution_is_bounded_by_the_run_timeout_in_all(server, tmp_path):
    """Issue 13 item 2: not attempts × a long time-out, but one total for the report's execution."""
    server.faults.append(Fault("instance", delay=3.0, times=None))
    policy = dataclasses.replace(FAST, run_timeout=0.5, attempts=5)
    started = time.monotonic()
    with pytest.raises(MicroStrategyError) as failure:
        export(server, tmp_path, policy=policy)
    assert time.monotonic() - started < 2.5
    assert re.fullmatch(
        rf"MicroStrategy report {RID}: run of report {RID}: no answer from 127\.0\.0\.1:\d+ within 0\.5 s "
        r"\(read time-out\); the report may run 0\.5 s in all \(MSTR_RUN_TIMEOUT\); gave up after 1 attempt in \d s",
        str(failure.value),
    )
    assert_clean_end(server)


def test_login_read_timeout_is_retried_within_the_call_window(server, tmp_path, caplog):
    server.faults.append(Fault("login", delay=0.6))
    _rows, text = export(server, tmp_path, policy=dataclasses.replace(FAST, read_timeout=0.3))
    assert text == EXAMPLE_CSV
    assert re.search(r"login as 'etl-user': no answer from 127\.0\.0\.1:\d+ within 0\.3 s", caplog.text)


def test_bad_password_fails_at_once_with_err003_and_ticket_and_no_password(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MicroStrategyError) as failure:
        export(server, tmp_path, password="not-the-Pa55-word")
    message = str(failure.value)
    assert message.startswith(f"MicroStrategy report {RID}: login as '{USERNAME}': HTTP 401 ERR003")
    assert f"(ticket {server.tickets[-1]})" in message
    assert "not-the-Pa55-word" not in message + caplog.text
    assert server.count("login") == 1  # not retried
    assert server.count("logout") == 0  # there is no session to end
    assert failure.value.retryable is False  # nor by the scheduler: it could lock the account


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"report_id": "0123456789ABCDEF0123456789ABCDEF"},
            r"run of report 0123456789ABCDEF0123456789ABCDEF: HTTP 404 ERR004",
        ),
        (
            {"project_id": "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"},
            r"HTTP 400 ERR006: 'F{32}' is not a valid value for Project ID",
        ),
    ],
    ids=["unknown-report-id", "wrong-project"],
)
def test_refused_requests_fail_at_once_and_log_out(server, tmp_path, kwargs, pattern):
    with pytest.raises(MicroStrategyError, match=pattern) as failure:
        export(server, tmp_path, **kwargs)
    assert f"(ticket {server.tickets[-1]})" in str(failure.value)
    assert failure.value.retryable is False
    assert server.count("instance") == 1
    assert_clean_end(server)


def test_forbidden_is_not_retried(server, tmp_path):
    server.faults.append(Fault("instance", status=403, code="ERR014", times=None))
    with pytest.raises(MicroStrategyError, match=r"HTTP 403 ERR014"):
        export(server, tmp_path)
    assert server.count("instance") == 1
    assert_clean_end(server)


def test_empty_page_before_the_total_is_an_error_not_a_loop(server, tmp_path):
    server.faults.append(Fault("page", offset=2, empty=True, times=None))
    with pytest.raises(MicroStrategyError, match=r"empty page at offset 2 of 3 rows"):
        export(server, tmp_path, page_size=2)
    assert server.count("page") == 1
    assert_clean_end(server)


def test_logout_failure_does_not_hide_the_result_and_is_not_retried(server, tmp_path, caplog):
    server.faults.append(Fault("logout", status=500, times=None))
    _rows, text = export(server, tmp_path)
    assert text == EXAMPLE_CSV
    assert "MicroStrategy logout: HTTP 500 ERR001" in caplog.text
    assert server.count("logout") == 1


def test_logout_failure_does_not_hide_the_original_error(server, tmp_path):
    server.faults.append(Fault("logout", drop=True, times=None))
    with pytest.raises(MicroStrategyError, match="HTTP 404 ERR004"):
        export(server, tmp_path, report_id="0123456789ABCDEF0123456789ABCDEF")


def test_progress_at_info_at_most_every_interval_and_pages_at_debug(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="bond_reporting.microstrategy")
    policy = dataclasses.replace(FAST, progress_interval=0.0)  # a progress line for every page
    export(server, tmp_path, report_id=ALL_BONDS_ID, page_size=5, policy=policy)
    pages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and ": page " in r.getMessage()]
    assert [p.split(", ")[0] for p in pages] == [
        f"report {ALL_BONDS_ID}: page {n}: {rows}/23 rows" for n, rows in enumerate([5, 10, 15, 20, 23], 1)
    ]
    progress = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and ": export: " in r.getMessage()]
    assert progress[0].startswith(f"MicroStrategy report {ALL_BONDS_ID}: export: 5 / 23 rows (22%), ")
    assert progress[-1].startswith(f"MicroStrategy report {ALL_BONDS_ID}: export: 23 / 23 rows (100%), ")


def test_totals_of_pages_and_csv_are_exact_and_equal(server, tmp_path):
    client = Client(server.base_url, USERNAME, PASSWORD, PROJECT_ID, policy=FAST)
    download = download_report(client, RID, tmp_path / "out.csv", page_size=2)
    assert download.received == download.written
    # doc §7: Obligated 1250.5 + 0 - 75, Expenses 0 + 310.25 + 1200, exactly.
    assert figures_dict(download.written) == {"rows": 3, "money": {"Obligated": "1175.50", "Expenses": "1510.25"}}


def test_a_csv_that_does_not_reconcile_with_the_pages_fails(server, tmp_path, monkeypatch):
    """The CSV is read back: if it were to differ from what the pages held (a lost row), the export fails."""
    original = csv.writer

    def dropping_writer(*args, **kwargs):
        writer = original(*args, **kwargs)

        class Dropping:
            def writerow(self, row):
                return writer.writerow(row)

            def writerows(self, rows):
                return writer.writerows(list(rows)[1:])

        return Dropping()

    monkeypatch.setattr("bond_reporting.microstrategy.csv.writer", dropping_writer)
    client = Client(server.base_url, USERNAME, PASSWORD, PROJECT_ID, policy=FAST)
    with pytest.raises(ReconciliationError) as failure:
        download_report(client, RID, tmp_path / "out.csv", page_size=2)
    assert str(failure.value) == (
        f"reconciliation failed at export: report {RID}: pages received vs CSV written: rows 3 vs 1; "
        "Obligated 1,175.50 vs 0.00; Expenses 1,510.25 vs 310.25"
    )
