"""Bad sheet data that used to change published numbers silently (docs/data-contract.md §3.3, Q5, Q11),
end to end: bond_data.py against a real PostgreSQL.

* a key repeated in a sheet (``Source.key``) is loaded as it is (published numbers as the contract
  defines them) with one WARNING per key naming the table, the key, the lines and the amounts, kept
  in the run history;
* a code or id with leading/trailing blanks, and a money value in exponent notation, with more
  than two decimals or implausibly large, are refused: exit 1, one line naming the column and the
  physical line, every table untouched.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import psycopg2
import pytest

import bond_calculations
import bond_data
from bond_reporting import checks
from config.sources import BY_TABLE, SOURCES
from tests.support.csv_edit import append_copy_of_line, set_cell, set_line

LOOKUP = "bond_2020_aims_to_dashboard"
BASELINE = "bond_2020_baseline_spend"


def snapshot(database_url: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-sensitive checksum (load time included) of every table."""
    out = {}
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        for source in SOURCES:
            cur.execute(
                "SELECT count(*), md5(coalesce(string_agg(to_jsonb(t)::text, '|' ORDER BY ctid), '')) "
                f'FROM api."{source.table}" t'
            )
            out[source.table] = cur.fetchone()
    return out


@pytest.fixture
def loaded(database_url: str, sources: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A database holding a good load of the sample data; returns its snapshot."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("FRESHNESS_WARN_DAYS", "off")  # the sample's dates are fixed
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    return snapshot(database_url)


def lines_of(caplog, level: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == level]


def history_notes(database_url: str, kind: str) -> list[tuple[str, str, str]]:
    """(step, subject, message) of the run history's WARNING notes of ``kind``, oldest first."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT step, subject, message FROM etl.notes WHERE kind = %s AND level = 'WARNING' ORDER BY note_id",
            (kind,),
        )
        return cur.fetchall()


def expenses_of(out: Path, dataset: str, dashboard: str) -> dict[str, float | None]:
    """``table_col`` → ``Expenses`` of one dashboard id in a published summary table."""
    rows = json.loads((out / f"{dataset}.json").read_text())
    return {r["table_col"]: r["Expenses"] for r in rows if r["dashboard_deptfundprogact"] == dashboard}


# --- 1. repeated keys: loaded as they are, said once per key ----------------------------------


def test_a_repeated_lookup_entry_is_loaded_and_warned_with_its_lines(loaded, database_url, sources, caplog, tmp_path):
    before = tmp_path / "before"
    assert bond_calculations.main(["--output-dir", str(before)]) == 0
    copy = append_copy_of_line(sources / f"{LOOKUP}.csv", 3)
    caplog.clear()

    assert bond_data.main(["--from-dir", str(sources)]) == 0

    expected = (
        f"{BY_TABLE[LOOKUP].label}: key aims_dept_prog_act='740086B174B22BA' is on 2 lines (3, {copy}): "
        "each one counts: what the key maps is counted 2 times "
        "(loaded as is, published numbers as docs/data-contract.md defines them, Q11)"
    )
    assert lines_of(caplog, "WARNING") == [expected]
    assert history_notes(database_url, "repeated_key") == [("load", LOOKUP, expected)]
    # The published numbers stay as the contract defines them: the group counts twice (Q11).
    after = tmp_path / "after"
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(after)]) == 0
    counted = (
        f"{LOOKUP}: AIMS group 740086B174B22BA has 2 entries (dashboard ids 7400-2020-P01, 7400-2020-P01): its "
        "expenses 94,981.12 (9 row(s), every fiscal year) count 2 times in hq9n-d77y and 5ewg-ssu3 "
        "(docs/data-contract.md Q11; published numbers unchanged)"
    )
    assert [line for line in lines_of(caplog, "WARNING") if line.startswith(f"{LOOKUP}: ")] == [counted]
    assert history_notes(database_url, "repeated_key") == [("load", LOOKUP, expected), ("calculate", LOOKUP, counted)]
    assert counted in (after / "report.html").read_text()  # the run report's warnings
    old = expenses_of(before, "hq9n-d77y", "7400-2020-P01")
    new = expenses_of(after, "hq9n-d77y", "7400-2020-P01")
    assert any(old.values())
    assert new == {label: None if v is None else pytest.approx(2 * v) for label, v in old.items()}


def test_a_repeated_baseline_month_is_loaded_and_warned_with_its_amount(
    loaded, database_url, sources, caplog, tmp_path
):
    path = sources / f"{BASELINE}.csv"
    first = path.read_text().splitlines()[1].split(",")  # 6200-2020-P01,10/1/2023,12638.53,
    copy = append_copy_of_line(path, 2)
    caplog.clear()

    assert bond_data.main(["--from-dir", str(sources)]) == 0

    total = f"{2 * float(first[2]):,.2f}"
    key = f"{BY_TABLE[BASELINE].label}: key dashboard_deptfundprogact='{first[0]}', date='2023-10-01' is on 2"
    effect = f": all 2 are summed: amount {total} in all (loaded as is, published numbers as docs/data-contract.md "
    effect += "defines them, Q11)"
    assert lines_of(caplog, "WARNING") == [f"{key} lines (2, {copy}){effect}"]
    assert [step for step, _, _ in history_notes(database_url, "repeated_key")] == ["load"]
    # The calculate step says it again from the table (rows, not lines), into the run report.
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(tmp_path / "out")]) == 0
    counted = f"{key} rows of the table{effect}"
    assert [line for line in lines_of(caplog, "WARNING") if "repeated" in line or "key" in line] == [counted]
    assert counted in html.unescape((tmp_path / "out" / "report.html").read_text())  # the run report
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM api."{BASELINE}"')
        assert cur.fetchone()[0] == loaded[BASELINE][0] + 1  # kept as it is


def test_the_sample_data_has_no_repeated_key(loaded, database_url):
    assert history_notes(database_url, "repeated_key") == []


# --- 2. and 3. refused values: exit 1, one line, every table untouched --------------------------

REFUSED = {
    "stray space around a dashboard id": (
        LOOKUP,
        lambda p: set_line(p, 3, "740086B174B22BA, 7400-2020-P01 "),
        "column 'dashboard_deptfundprogact' fails 'no leading or trailing spaces' on 1 row: line 3: ' 7400-2020-P01 '",
    ),
    "trailing space on an AIMS group": (
        LOOKUP,
        lambda p: set_line(p, 4, "240086C224C33CA ,2400-2020-P01"),
        "column 'aims_dept_prog_act' fails 'no leading or trailing spaces' on 1 row: line 4: '240086C224C33CA '",
    ),
    "amount of 123,456,789,012.34 dollars": (
        BASELINE,
        lambda p: set_cell(p, 5, "Amount", "123456789012.34"),
        f"column 'amount' fails 'amount below {checks.MAX_MONEY_DOLLARS:,} dollars' on 1 row: "
        "line 5: '123456789012.34'",
    ),
    "amount beyond any float's cents": (
        BASELINE,
        lambda p: set_cell(p, 6, "Amount", "99999999999999999999999.99"),
        f"column 'amount' fails 'amount below {checks.MAX_MONEY_DOLLARS:,} dollars' on 1 row: "
        "line 6: '99999999999999999999999.99'",
    ),
    "amount in exponent notation": (
        BASELINE,
        lambda p: set_cell(p, 7, "Amount", "1e-400"),
        "column 'amount' fails 'no exponent notation' on 1 row: line 7: '1e-400'",
    ),
    "amount with three decimals": (
        BASELINE,
        lambda p: set_cell(p, 8, "Amount", "12.345"),
        "column 'amount' fails 'at most 2 decimal places' on 1 row: line 8: '12.345'",
    ),
    "whole-dollar funding too large": (
        "bond_2020_program_names",
        lambda p: set_cell(p, 3, "Bond Funding", "20000000000"),
        f"column 'funding_amount' fails 'amount below {checks.MAX_MONEY_DOLLARS:,} dollars' on 1 row: "
        "line 3: '20000000000'",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_code_or_amount_is_refused_on_its_line(case, loaded, database_url, sources, caplog):
    table, change, detail = REFUSED[case]
    change(sources / f"{table}.csv")
    caplog.clear()

    assert bond_data.main(["--from-dir", str(sources)]) == 1

    assert lines_of(caplog, "ERROR") == [f"bond_data failed: {BY_TABLE[table].label}: 1 problem(s): {detail}"]
    assert snapshot(database_url) == loaded
