"""bond_data end to end against a real PostgreSQL, S3 endpoint and HTTP server.

Every bad input must end with exit 1, one message naming the source, the column and the
rows, and every table still holding exactly its previous rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

import bond_data
from bond_reporting import loader, storage
from bond_reporting.errors import DatabaseError, SourceError
from bond_reporting.settings import Settings
from config.sources import BY_TABLE, REPORT_SOURCES, SOURCES, Source
from tests.support import ROOT
from tests.support.cases import case_file
from tests.support.csv_edit import set_cell, set_line
from tests.support.services import Fault, s3_client

SAMPLE = ROOT / "sample_data"
TABLES = [source.table for source in SOURCES]


def snapshot(database_url: str, *, with_updated_at: bool = True) -> dict[str, tuple[int, str]]:
    """Row count and an order-sensitive checksum of every table (load time included by default)."""
    row = "to_jsonb(t)" if with_updated_at else "to_jsonb(t) - 'updated_at'"
    out = {}
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        for table in TABLES:
            cur.execute(
                f"SELECT count(*), md5(coalesce(string_agg(({row})::text, '|' ORDER BY ctid), '')) "
                f'FROM api."{table}" t'
            )
            out[table] = cur.fetchone()
    return out


def csv_rows(path: Path) -> int:
    return sum(1 for _ in path.open()) - 1


@pytest.fixture
def loaded(database_url: str, sources: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A database already holding a good load of the sample data; returns its snapshot."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    return snapshot(database_url)


@pytest.fixture
def read_only(shared_load: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", shared_load)
    return shared_load


def test_loads_every_table_in_csv_order_with_one_updated_at(read_only):
    counts = snapshot(read_only)
    for table in TABLES:
        assert counts[table][0] == csv_rows(SAMPLE / f"{table}.csv"), table
    with psycopg2.connect(read_only) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT updated_at) FROM api.expenses_obligated_2020_bond_raw")
        assert cur.fetchone()[0] == 1
        cur.execute(
            'SELECT fund, department, date::text, "group", obligated::text FROM api.expenses_obligated_2020_bond_raw ORDER BY ctid LIMIT 1'
        )
        first = cur.fetchone()
    _header, line = (SAMPLE / "expenses_obligated_2020_bond_raw.csv").read_text().splitlines()[:2]
    fund, dept, date, group, _fy, _div, obligated, _exp = line.split(",")
    month, day, year = date.split("/")
    assert first == (fund, int(dept), f"{year}-{month}-{day}", group, obligated)


def test_read_tables_returns_contract_types_in_load_order(read_only):
    from bond_reporting.database import read_tables

    tables = read_tables(Settings.from_env(), ["bond_2020_baseline_spend", "all_bonds_appropriations"])
    baseline = tables["bond_2020_baseline_spend"]
    assert baseline["amount"].dtype == "float64"
    assert baseline["date"].iloc[0] == "2023-10-01"
    assert baseline["updated_at"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
    assert tables["all_bonds_appropriations"]["amount"].dtype == "int64"
    ids = [line.split(",")[0] for line in (SAMPLE / "bond_2020_baseline_spend.csv").read_text().splitlines()[1:]]
    assert baseline["dashboard_deptfundprogact"].tolist() == ids


def test_a_read_during_a_load_waits_and_sees_the_committed_rows(loaded, database_url):
    """TRUNCATE is not MVCC-safe: a reader must not take its snapshot before a load commits."""
    import threading

    from bond_reporting.database import read_tables

    table = "bond_2020_aims_to_dashboard"
    load = psycopg2.connect(database_url)
    with load.cursor() as cur:  # a load in progress: emptied and refilled, not yet committed
        cur.execute(f"TRUNCATE api.{table}")
        cur.execute(f"INSERT INTO api.{table} VALUES ('A1', 'D1', now()), ('A2', 'D2', now())")
    result = {}
    reader = threading.Thread(target=lambda: result.update(read_tables(Settings.from_env(), [table])))
    reader.start()
    reader.join(timeout=1.0)
    assert reader.is_alive()  # waiting for the load's lock, snapshot not yet taken
    load.commit()
    load.close()
    reader.join(timeout=30)
    assert result[table]["aims_dept_prog_act"].tolist() == ["A1", "A2"]


def test_reloading_replaces_rows_instead_of_appending(loaded, database_url, sources):
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    assert {t: c for t, (c, _) in snapshot(database_url).items()} == {t: c for t, (c, _) in loaded.items()}


def test_only_loads_the_named_tables(loaded, database_url, sources):
    (sources / "all_bonds_spend_plan.csv").write_text(
        "Dashboard FundDeptProgAct,Fiscal Year,SpndPln-Bdgt\nX,2025,1.5\n"
    )
    assert bond_data.main(["--from-dir", str(sources), "--only", "all_bonds_spend_plan"]) == 0
    after = snapshot(database_url)
    assert after["all_bonds_spend_plan"][0] == 1
    assert all(after[t] == loaded[t] for t in TABLES if t != "all_bonds_spend_plan")


BAD_INPUTS = {
    "missing column": (
        "bond_2020_baseline_spend",
        lambda p: p.write_text(p.read_text().replace("Amount,", "Amt,", 1)),
        ["G2 2020 baseline spend", "missing column(s) ['Amount']"],
    ),
    "empty cell": (
        "all_bonds_aims_to_dashboard",
        lambda p: set_cell(p, 4, "Dashboard FundDeptProgAct", ""),
        ["all_bonds_aims_to_dashboard", "'dashboard_deptfundprogact' fails 'not empty", "line 4"],
    ),
    "text in amount": (
        "bond_2020_current_fy_spend_plan",
        lambda p: set_cell(p, 7, "Amount", "TBD"),
        ["bond_2020_current_fy_spend_plan", "'amount' fails 'number", "line 7: 'TBD'"],
    ),
    "unparseable date": (
        "expenses_obligated_2020_bond_raw",
        lambda p: set_cell(p, 5, "Date", "2024-13-45"),
        ["expenses_obligated_2020_bond_raw", "'date' fails 'date M/D/YYYY'", "line 5: '2024-13-45'"],
    ),
    "year 3028": (
        "bond_2020_baseline_spend",
        lambda p: set_cell(p, 9, "Date", "3/1/3028"),
        [
            "bond_2020_baseline_spend",
            "'date' fails 'date between 2000-01-01 and ten years from today'",
            "line 9: '3/1/3028'",
        ],
    ),
    "empty file": ("all_bonds_program_names", lambda p: p.write_text(""), ["all_bonds_program_names", "empty file"]),
    "header-only file": (
        "all_bonds_program_names",
        lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"),
        ["all_bonds_program_names", "header only"],
    ),
    "duplicate header": (
        "bond_2020_aims_to_dashboard",
        lambda p: p.write_text("AIMS Dept Prog Act,AIMS Dept Prog Act\n1,2\n"),
        ["bond_2020_aims_to_dashboard", "duplicate header column(s) ['AIMS Dept Prog Act']"],
    ),
    "non-UTF-8 bytes": (
        "all_bonds_program_names",
        lambda p: p.write_bytes(p.read_bytes().replace(b"Parks", b"Parqu\xe9s", 1)),
        ["all_bonds_program_names", "not UTF-8", "line"],
    ),
    "ragged row": (
        "expenses_obligated_all_bonds_raw",
        lambda p: set_line(p, 3, p.read_text().splitlines()[2] + ",extra"),
        ["expenses_obligated_all_bonds_raw", "ragged row", "line 3"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_keeps_previous_rows(case, loaded, database_url, sources, caplog):
    table, mutate, expected = BAD_INPUTS[case]
    mutate(sources / f"{table}.csv")
    caplog.clear()
    assert bond_data.main(["--from-dir", str(sources)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    for fragment in expected:
        assert fragment in errors[0]
    assert snapshot(database_url) == loaded


# --- exact locations (issue 9, item 6): the shared cases, then one input of our own per kind ---


def label(table: str) -> str:
    return BY_TABLE[table].label


def run_bond_data(sources: Path) -> tuple[int, list[str]]:
    """``bond_data.py --from-dir sources`` as a process: exit code and its ERROR lines."""
    result = subprocess.run(
        [sys.executable, "bond_data.py", "--from-dir", str(sources)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result.returncode, [line for line in result.stderr.splitlines() if " ERROR " in line]


SHARED_CASES = {  # ../shared/cases/<folder>: the table its file replaces, what the one line must say
    "blank-line-then-bad-value": (
        "bond_2020_current_fy_spend_plan",
        "1 problem(s): column 'amount' fails 'number (no separators or currency signs)' on 1 row: line 11: 'TBD'",
    ),
    "ragged-first-row": (
        "expenses_obligated_all_bonds_raw",
        "ragged row: line 2 has 12 fields, the header has 11",
    ),
}


@pytest.mark.parametrize("folder", list(SHARED_CASES))
def test_shared_case_fails_on_its_physical_line_and_keeps_every_table(folder, loaded, database_url, sources):
    table, detail = SHARED_CASES[folder]
    case = case_file(folder)
    assert case.name == f"{table}.csv"
    shutil.copy(case, sources / case.name)
    code, errors = run_bond_data(sources)
    assert code == 1
    assert len(errors) == 1, errors
    assert errors[0].endswith(f" ERROR bond_reporting: bond_data failed: {label(table)}: {detail}"), errors[0]
    assert snapshot(database_url) == loaded


def _rewrite(path: Path, change, newline: str = "\n") -> None:
    """Replace the file by ``change(lines)`` (lines without their ends), joined by ``newline``."""
    lines = change(path.read_text().splitlines())
    path.write_bytes((newline.join(lines) + newline).encode())


def _set(line: str, header: str, column: str, value: str) -> str:
    cells = line.split(",")
    cells[header.split(",").index(column)] = value
    return ",".join(cells)


def _crlf_blank_then_bad(lines: list[str]) -> list[str]:
    lines[7] = _set(lines[7], lines[0], "Amount", "TBD")  # line 8 of the original ...
    return [*lines[:3], "", *lines[3:]]  # ... is physical line 9 after a blank line 4


def _multi_line_cell_before_bad_value(lines: list[str]) -> list[str]:
    lines[1] = _set(lines[1], lines[0], "Dashboard Program Name", '"Program 1\nphase 2\nphase 3"')  # lines 2-4
    lines[3] = _set(lines[3], lines[0], "Program Sort", "first")  # physical line 6
    return lines


def _multi_line_cell_then_bad_value_in_its_row(lines: list[str]) -> list[str]:
    lines[1] = _set(lines[1], lines[0], "Dashboard Sub Program Name", '"Sub 1\r\nsecond line"')  # lines 2-3
    lines[1] = _set(lines[1], lines[0], "Sub Program Sort", "1.5")  # on line 3, where its cell starts
    return lines


HTML_PAGE = (
    "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Google Sheets - Sign in</title>"
    "</head><body><p>Sign in to continue to Sheets</p></body></html>"
)

LOCATION_KINDS = {
    "CRLF and a blank line": (
        "bond_2020_baseline_spend",
        lambda p: _rewrite(p, _crlf_blank_then_bad, "\r\n"),
        "1 problem(s): column 'amount' fails 'number (no separators or currency signs)' on 1 row: line 9: 'TBD'",
    ),
    "quoted multi-line cell in an earlier row": (
        "all_bonds_program_names",
        lambda p: _rewrite(p, _multi_line_cell_before_bad_value),
        "1 problem(s): column 'program_sort' fails 'whole number (no decimal point, no separators, 64-bit)' "
        "on 1 row: line 6: 'first'",
    ),
    "quoted multi-line cell before the bad value in its row": (
        "all_bonds_program_names",
        lambda p: _rewrite(p, _multi_line_cell_then_bad_value_in_its_row),
        "1 problem(s): column 'sub_program_sort' fails 'whole number (no decimal point, no separators, 64-bit)' "
        "on 1 row: line 3: '1.5'",
    ),
    "NUL byte in a text column of a file streamed to COPY": (
        "expenses_obligated_2020_bond_raw",
        lambda p: p.write_bytes(p.read_bytes().replace(b"\n86B7,", b"\n86\x00B7,", 1)),
        "1 problem(s): column 'fund' fails 'no control characters' on 1 row: line 3: '86\\x00B7'",
    ),
    "escape character in a sheet's text column": (
        "bond_2020_program_names",
        lambda p: _rewrite(
            p, lambda lines: [*lines[:4], lines[4].replace(",Sub Program", ",\x1bSub Program", 1), *lines[5:]]
        ),
        None,  # checked below: the line and the column
    ),
    "HTML page instead of the sheet": (
        "all_bonds_appropriations",
        lambda p: p.write_text(HTML_PAGE),
        "answered with an HTML page, not CSV (is the sheet still published?)",
    ),
    "ragged last row": (
        "expenses_obligated_2020_bond_raw",
        lambda p: _rewrite(p, lambda lines: [*lines[:-1], lines[-1].rsplit(",", 1)[0]]),
        None,
    ),
    "quote left open until a later quoted cell": (
        "bond_2020_baseline_spend",
        lambda p: _rewrite(p, lambda lines: [*lines[:3], lines[3] + '"note left open', *lines[4:]]),
        None,
    ),
    "quote never closed": (
        "all_bonds_aims_to_dashboard",
        lambda p: _rewrite(p, lambda lines: [*lines[:5], lines[5].replace(",", ',"', 1), *lines[6:]]),
        "line 6: a quoted cell is never closed (it runs to the end of the file)",
    ),
}


@pytest.mark.parametrize("kind", list(LOCATION_KINDS))
def test_each_kind_of_bad_input_names_its_physical_line(kind, loaded, database_url, sources, caplog):
    table, mutate, detail = LOCATION_KINDS[kind]
    path = sources / f"{table}.csv"
    mutate(path)
    if detail is None and kind == "ragged last row":
        last = len(path.read_bytes().splitlines())
        detail = f"ragged row: line {last} has 7 fields, the header has 8"
    if detail is None and kind == "escape character in a sheet's text column":
        value = path.read_text().splitlines()[4].split(",")[4]
        detail = f"1 problem(s): column 'sub_program_name' fails 'no control characters' on 1 row: line 5: {value!r}"
    if detail is None and kind == "quote left open until a later quoted cell":
        lines = path.read_text().splitlines()
        closing = next(n for n, line in enumerate(lines, 1) if n > 4 and '"' in line)  # the next quote
        detail = f"ragged row: line 4 has 5 fields (a quoted cell runs to line {closing}), the header has 4"
    caplog.clear()
    assert bond_data.main(["--from-dir", str(sources)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"bond_data failed: {label(table)}: {detail}"]
    assert snapshot(database_url) == loaded


def test_a_sheet_answering_with_an_html_page_is_named_as_such(loaded, database_url, sources, file_server, fast_http):
    configured = http_sources(file_server, sources)
    (file_server.root / "all_bonds_appropriations.csv").write_text(HTML_PAGE)
    with pytest.raises(SourceError) as failure:
        loader.load_sources(Settings.from_env(), configured)
    assert str(failure.value) == (
        f"{label('all_bonds_appropriations')}: answered with an HTML page, not CSV (is the sheet still published?)"
    )
    assert failure.value.retryable is False
    assert snapshot(database_url) == loaded


def test_text_with_commas_quotes_and_line_breaks_is_stored_exactly(loaded, database_url, sources):
    path = sources / "all_bonds_program_names.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3] = '"Program 1, phase ""A""\nsecond line"'
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT program_name FROM api.all_bonds_program_names ORDER BY ctid LIMIT 1")
        assert cur.fetchone()[0] == 'Program 1, phase "A"\nsecond line'


def test_blank_and_repeated_unmapped_headers_are_ignored(loaded, database_url, sources):
    path = sources / "bond_2020_aims_to_dashboard.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",,,Notes,Notes"] + [line + ",,x,a,b" for line in lines[1:]]) + "\n")
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    assert snapshot(database_url)["bond_2020_aims_to_dashboard"][0] == loaded["bond_2020_aims_to_dashboard"][0]


def test_extra_sheet_columns_are_ignored(loaded, database_url, sources):
    path = sources / "all_bonds_spend_plan.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",Notes,Owner"] + [line + ',"a, b",x' for line in lines[1:]]) + "\n")
    before = snapshot(database_url, with_updated_at=False)
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    assert snapshot(database_url, with_updated_at=False) == before


# --- sources over the network: published sheets (HTTP) and report CSVs (S3) -------------------


def http_sources(file_server, sources: Path) -> list[Source]:
    """The configured sources, every one read over HTTP from the local file server."""
    for source in SOURCES:
        shutil.copy(sources / f"{source.table}.csv", file_server.root / f"{source.table}.csv")
    return [dataclasses.replace(s, url=file_server.url(f"{s.table}.csv"), report=None) for s in SOURCES]


@pytest.fixture
def fast_http(monkeypatch):
    monkeypatch.setattr(storage, "HTTP_TIMEOUT", (2, 0.5))
    monkeypatch.setattr(storage, "HTTP_BACKOFF", 0.01)


def test_http_sources_load_and_transient_errors_are_retried(loaded, database_url, sources, file_server, fast_http):
    configured = http_sources(file_server, sources)
    file_server.faults["bond_2020_baseline_spend.csv"] = Fault(status=503, times=2)
    loader.load_sources(Settings.from_env(), configured)
    assert file_server.requests.count("bond_2020_baseline_spend.csv") == 3
    assert {t: c for t, (c, _) in snapshot(database_url).items()} == {t: c for t, (c, _) in loaded.items()}


def test_a_download_cut_off_mid_body_is_retried(loaded, database_url, sources, file_server, fast_http):
    configured = http_sources(file_server, sources)
    file_server.faults["all_bonds_program_names.csv"] = Fault(cut=True, times=1)
    before = snapshot(database_url, with_updated_at=False)
    loader.load_sources(Settings.from_env(), configured)
    assert file_server.requests.count("all_bonds_program_names.csv") == 2
    assert snapshot(database_url, with_updated_at=False) == before  # the full file, not half of it


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(status=404), "HTTP 404 Not Found"),
        (Fault(status=403), "HTTP 403 Forbidden"),
        (Fault(cut=True), "the answer was cut off part-way (ChunkedEncodingError) after 4 attempts"),
        (Fault(status=500), "HTTP 500 Internal Server Error after 4 attempts"),
        (Fault(delay=1.5), "no data for 0.5 s (ReadTimeout) after 4 attempts"),
        (Fault(drop=True), "cannot connect or the connection was dropped (ConnectionError) after 4 attempts"),
    ],
)
def test_http_failure_names_the_source_and_keeps_previous_rows(
    fault, expected, loaded, database_url, sources, file_server, fast_http
):
    configured = http_sources(file_server, sources)
    file_server.faults["all_bonds_appropriations.csv"] = fault
    with pytest.raises(SourceError) as failure:
        loader.load_sources(Settings.from_env(), configured)
    message = str(failure.value)
    assert "G5 all-bonds appropriations (all_bonds_appropriations)" in message and expected in message
    assert failure.value.retryable is (fault.status not in (403, 404))  # a missing sheet stays missing
    assert f"HTTP {fault.status} {fault.status}" not in message
    assert snapshot(database_url) == loaded


def test_a_sheet_that_trickles_fails_at_the_download_deadline_and_keeps_previous_rows(
    loaded, database_url, sources, file_server, fast_http, monkeypatch
):
    """Each byte comes before the read time-out, so only the whole-download deadline stops it."""
    monkeypatch.setattr(storage, "HTTP_DEADLINE", 1.0)
    configured = http_sources(file_server, sources)
    file_server.faults["all_bonds_appropriations.csv"] = Fault(trickle=0.05)
    with pytest.raises(SourceError) as failure:
        loader.load_sources(Settings.from_env(), configured)
    message = str(failure.value)
    assert "G5 all-bonds appropriations (all_bonds_appropriations)" in message, message
    assert "no complete answer within 1 s (the server sends too slowly: " in message, message
    assert file_server.requests.count("all_bonds_appropriations.csv") == 1  # not retried: it would be as slow
    assert snapshot(database_url) == loaded


def test_report_csvs_are_read_from_the_s3_bucket(loaded, database_url, sources, s3_endpoint, s3_bucket):
    client = s3_client(s3_endpoint)
    for source in REPORT_SOURCES:
        client.upload_file(str(sources / f"{source.table}.csv"), s3_bucket, source.report.bucket_key)
    (sources / "expenses_obligated_2020_bond_raw.csv").unlink()  # proves the bucket copy is the one read
    assert bond_data.main(["--sheets-dir", str(sources)]) == 0
    assert {t: c for t, (c, _) in snapshot(database_url).items()} == {t: c for t, (c, _) in loaded.items()}


def test_missing_s3_key_fails_and_keeps_previous_rows(loaded, database_url, sources, s3_endpoint, s3_bucket, caplog):
    s3_client(s3_endpoint).upload_file(
        str(sources / "expenses_obligated_2020_bond_raw.csv"), s3_bucket, "2020 Bond Expenses Obligated.csv"
    )
    caplog.clear()
    assert bond_data.main(["--sheets-dir", str(sources)]) == 1
    assert "no object 'All bonds Expenses Obligated.csv'" in caplog.text
    assert f"s3://{s3_bucket}" in caplog.text
    assert snapshot(database_url) == loaded


# --- the database itself fails ----------------------------------------------------------------


def test_unreachable_database_is_one_clear_line(sources, monkeypatch, caplog):
    monkeypatch.setenv("DATABASE_URL", "postgresql://etl:hunter2-secret@127.0.0.1:9/bonds")
    assert bond_data.main(["--from-dir", str(sources)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot connect to PostgreSQL" in errors[0]


def test_connection_killed_during_copy_rolls_back_every_table(loaded, database_url, sources, monkeypatch):
    """The server backend is really terminated while the fifth table's COPY is streaming,
    after four tables were already truncated and copied in the same transaction."""
    killed = []
    original_read = loader.AppendColumn.read

    def read_then_kill(self, size=-1):
        chunk = original_read(self, size)
        if not killed and chunk.startswith(b"Dashboard DeptFundProgAct,Date,Amount,"):
            with psycopg2.connect(database_url) as admin, admin.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'atd-bond-reporting' AND pid <> pg_backend_pid()"
                )
                killed.append(cur.fetchall())
        return chunk

    monkeypatch.setattr(loader.AppendColumn, "read", read_then_kill)
    with pytest.raises(DatabaseError, match=r"bond_2020_current_fy_spend_plan failed, transaction rolled back"):
        loader.load_sources(Settings.from_env(), SOURCES, from_dir=str(sources))
    assert killed and killed[0] == [(True,)]
    assert snapshot(database_url) == loaded


def test_no_secret_appears_in_the_output_of_a_failing_run(sources, tmp_path):
    secrets = {
        "MSTRO_PASSWORD": "mstr-pw-3f9a1c",
        "AWS_PASS": "aws-secret-77b2e0",
        "SO_SECRET": "socrata-secret-5d1e",
        "SO_TOKEN": "socrata-token-a9c4",
        "DATABASE_URL": "postgresql://etl:db-pw-0c8e42%zz@127.0.0.1:9/bonds",  # a bad %-escape: libpq quotes it
    }
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGHOST")} | secrets
    result = subprocess.run(
        [sys.executable, "bond_data.py", "--from-dir", str(sources), "-v"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2  # libpq cannot parse it: a configuration error, value not echoed
    output = result.stdout + result.stderr
    assert "DATABASE_URL is not a valid libpq URI or key=value string (see docs/operations.md)" in output
    for value in ("mstr-pw-3f9a1c", "aws-secret-77b2e0", "socrata-secret-5d1e", "socrata-token-a9c4", "db-pw-0c8e42"):
        assert value not in output


def test_embedded_database_is_used_when_nothing_is_configured(sources, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGHOST")}
    env["BOND_LOCAL_DIR"] = str(tmp_path / "local")
    result = subprocess.run(
        [sys.executable, "bond_data.py", "--from-dir", str(sources)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "using the embedded PostgreSQL" in result.stderr
    assert f"load committed: {len(SOURCES)} tables" in result.stderr
    assert (tmp_path / "local" / "pgdata" / "PG_VERSION").exists()


def test_every_refused_source_is_named_in_one_line_and_nothing_is_loaded(loaded, database_url, sources, caplog):
    """Two broken sheets: one run names both (with their lines), so one fix-up covers them."""
    set_cell(sources / "bond_2020_baseline_spend.csv", 5, "Amount", "TBD")
    set_cell(sources / "all_bonds_spend_plan.csv", 3, "SpndPln-Bdgt", "$12")
    assert bond_data.main(["--from-dir", str(sources)]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    first, second = line.removeprefix("bond_data failed: 2 sources refused: ").split(" | ")
    assert first.startswith("G2 2020 baseline spend (bond_2020_baseline_spend): ") and "line 5: 'TBD'" in first, line
    assert second.startswith("G8 ") and "(all_bonds_spend_plan): " in second and "line 3: '$12'" in second, line
    assert snapshot(database_url) == loaded
