"""Schema changes against a real PostgreSQL: the load brings an existing database up to the registry.

Missing tables and columns are added inside the load transaction (a failed load adds nothing);
a type change is refused with one line saying what to run, and every table keeps its rows.
"""

from __future__ import annotations

import logging

import psycopg2

import bond_data
from bond_reporting import database
from bond_reporting.settings import Settings
from config import sources
from tests.support import ROOT

SAMPLE = str(ROOT / "sample_data")
EXPENSES = sources.EXPENSES_2020.table
PLAN = sources.SPEND_PLAN_ALL_BONDS.table


def columns(database_url: str, table: str) -> dict[str, str]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'api' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return dict(cur.fetchall())


def execute(database_url: str, statement: str) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(statement)


def counts(database_url: str) -> dict[str, int]:
    out = {}
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        for table in sources.BY_TABLE:
            cur.execute(f'SELECT count(*) FROM api."{table}"')
            out[table] = cur.fetchone()[0]
    return out


def test_a_new_database_gets_every_table_and_a_second_apply_changes_nothing(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    with database.transaction(Settings.from_env()) as conn:
        created = database.apply_schema(conn)
    assert created == [f"created table api.{table}" for table in sources.table_columns()]
    for table, expected in sources.table_columns().items():
        assert list(columns(database_url, table)) == [name for name, _ in expected]
    assert columns(database_url, EXPENSES)["department"] == "integer"
    assert columns(database_url, EXPENSES)["updated_at"] == "timestamp without time zone"
    with database.transaction(Settings.from_env()) as conn:
        assert database.apply_schema(conn) == []


def test_missing_columns_and_tables_are_added_by_the_load(loaded_own, caplog):
    """As after adding a column and a source to config/sources.py: the next load adds and fills them."""
    execute(loaded_own, f"ALTER TABLE api.{EXPENSES} DROP COLUMN division; DROP TABLE api.{PLAN}")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert bond_data.main(["--from-dir", SAMPLE]) == 0
    schema_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("schema: ")]
    assert schema_lines == [f"schema: added column division text to api.{EXPENSES}; created table api.{PLAN}"]
    assert columns(loaded_own, EXPENSES)["division"] == "text"
    with psycopg2.connect(loaded_own) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*), count(division) FROM api.{EXPENSES}")
        total, filled = cur.fetchone()
        cur.execute(f"SELECT count(*) FROM api.{PLAN}")
        plan_rows = cur.fetchone()[0]
    assert total == filled > 0 and plan_rows > 0
    # The reader returns the registry's columns in the registry's order, whatever the physical order.
    frame = database.read_tables(Settings.from_env(), [EXPENSES])[EXPENSES]
    assert list(frame.columns) == [*sources.EXPENSES_2020.column_names, "updated_at"]


def test_schema_changes_roll_back_with_a_failed_load(loaded_own, tmp_path, caplog):
    execute(loaded_own, f"ALTER TABLE api.{EXPENSES} DROP COLUMN division")
    before = counts(loaded_own)
    folder = tmp_path / "sources"
    folder.mkdir()
    for source in sources.SOURCES:
        (folder / f"{source.table}.csv").write_bytes((ROOT / "sample_data" / f"{source.table}.csv").read_bytes())
    path = folder / f"{PLAN}.csv"
    path.write_text(path.read_text().replace("\n", "\nP-broken,20X5,1.0\n", 1))
    assert bond_data.main(["--from-dir", str(folder)]) == 1
    assert "division" not in columns(loaded_own, EXPENSES)
    assert counts(loaded_own) == before


def test_a_type_change_is_refused_with_one_line_saying_what_to_run(loaded_own, caplog):
    execute(loaded_own, f"ALTER TABLE api.{EXPENSES} ALTER COLUMN department TYPE numeric")
    before = counts(loaded_own)
    caplog.clear()
    assert bond_data.main(["--from-dir", SAMPLE]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert f"column api.{EXPENSES}.department is numeric in the database but integer in config/sources.py" in errors[0]
    assert f'run ALTER TABLE api.{EXPENSES} ALTER COLUMN "department" TYPE integer' in errors[0]
    assert columns(loaded_own, EXPENSES)["department"] == "numeric"
    assert counts(loaded_own) == before
