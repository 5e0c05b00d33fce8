"""The run history (schema etl) against a real PostgreSQL: what a successful and a failed step
leave behind, and the load's reconciliation inside its transaction (issue 10 items 1, 2, 6)."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pandas as pd
import psycopg2
import pytest

import bond_data
from bond_reporting import history
from config.sources import SOURCES
from tests.support import ROOT

SAMPLE = ROOT / "sample_data"
TABLES = [source.table for source in SOURCES]
RAW_2020 = "expenses_obligated_2020_bond_raw"


def query(database_url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def snapshot(database_url: str) -> dict[str, tuple]:
    out = {}
    for table in TABLES:
        out[table] = query(
            database_url,
            f"SELECT count(*), md5(coalesce(string_agg(to_jsonb(t)::text, '|' ORDER BY ctid), '')) FROM api.\"{table}\" t",
        )[0]
    return out


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def test_a_load_records_its_step_and_every_table_in_the_same_transaction(db, sources):
    result = bond_data.run(from_dir=str(sources))
    run_id = result["run_id"]
    steps = query(db, "SELECT run_id, step, status, error, ended_at >= started_at FROM etl.steps")
    assert steps == [(run_id, "load", "ok", None, True)]
    items = query(
        db,
        "SELECT name, state, rows, money, newest_date::text, sha256 FROM etl.items WHERE run_id = %s ORDER BY item_id",
        (run_id,),
    )
    assert [row[0] for row in items] == TABLES
    by_name = {row[0]: row for row in items}
    raw = pd.read_csv(sources / f"{RAW_2020}.csv", dtype=str)
    _name, state, rows, money, newest, digest = by_name[RAW_2020]
    assert (state, rows) == ("loaded", len(raw))
    # exact decimal totals of the file's text, as PostgreSQL sums numeric
    assert Decimal(money["expenses"]) == sum(Decimal(v) for v in raw["Expenses"])
    assert Decimal(money["obligated"]) == sum(Decimal(v) for v in raw["Obligated"])
    assert newest == max(pd.to_datetime(raw["Date"], format="%m/%d/%Y")).strftime("%Y-%m-%d")
    assert digest == hashlib.sha256((sources / f"{RAW_2020}.csv").read_bytes()).hexdigest()
    assert by_name["bond_2020_program_names"][3].keys() == {"funding_amount"}
    assert by_name["bond_2020_aims_to_dashboard"][3] == {}
    notes = query(db, "SELECT step, level, kind, message FROM etl.notes WHERE run_id = %s", (run_id,))
    assert notes == [("load", "INFO", "reconcile", result["history"]["notes"][0]["message"])]
    assert "PostgreSQL = validated files" in notes[0][3]


def test_a_failed_load_is_recorded_in_its_own_transaction_and_survives_the_rollback(db, sources, caplog):
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    before = snapshot(db)
    path = sources / "bond_2020_baseline_spend.csv"
    lines = path.read_text().splitlines()
    lines[8] = lines[8].replace(lines[8].split(",")[1], "3/1/3028")
    path.write_text("\n".join(lines) + "\n")
    caplog.clear()
    assert bond_data.main(["--from-dir", str(sources)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "bond_2020_baseline_spend" in errors[0] and "line 9" in errors[0]
    steps = query(db, "SELECT run_id, status, error FROM etl.steps ORDER BY step_id")
    assert [s[1] for s in steps] == ["ok", "failed"]
    failed_run, _status, error = steps[1]
    assert error == errors[0].removeprefix("bond_data failed: ")
    assert "\n" not in error
    # the failed load's items were rolled back with its data; the tables kept the previous rows
    assert query(db, "SELECT count(*) FROM etl.items WHERE run_id = %s", (failed_run,)) == [(0,)]
    assert snapshot(db) == before


def test_load_reconciliation_rolls_back_when_postgresql_holds_other_money(db, sources, caplog):
    """Tamper with the load hop: a trigger changes one amount as COPY inserts it. The totals in
    PostgreSQL no longer equal the validated file's, so the load fails before commit."""
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    before = snapshot(db)
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE FUNCTION api.skim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.expenses > 5000 THEN NEW.expenses := NEW.expenses - 0.01; END IF; RETURN NEW; END $$;"
            f"CREATE TRIGGER skim BEFORE INSERT ON api.{RAW_2020} FOR EACH ROW EXECUTE FUNCTION api.skim()"
        )
    caplog.clear()
    assert bond_data.main(["--from-dir", str(sources)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"bond_data failed: reconciliation failed at load: {RAW_2020}: validated file vs PostgreSQL: expenses "
    )
    raw = pd.read_csv(sources / f"{RAW_2020}.csv", dtype=str)
    skimmed = sum(Decimal("0.01") for v in raw["Expenses"] if Decimal(v) > 5000)
    total = sum(Decimal(v) for v in raw["Expenses"])
    assert f"expenses {total:,.2f} vs {total - skimmed:,.2f}" in errors[0]
    assert snapshot(db) == before
    assert query(db, "SELECT status FROM etl.steps ORDER BY step_id") == [("ok",), ("failed",)]


def test_run_id_is_a_new_uuid_outside_a_flow_and_the_given_one_otherwise(db, sources):
    first = bond_data.run(from_dir=str(sources), only=["all_bonds_spend_plan"])
    second = bond_data.run(from_dir=str(sources), only=["all_bonds_spend_plan"], run_id="flow-run-42")
    assert first["run_id"] != second["run_id"] == "flow-run-42"
    assert len(first["run_id"]) == 36
    assert query(db, "SELECT run_id FROM etl.steps ORDER BY step_id") == [(first["run_id"],), ("flow-run-42",)]


def test_history_schema_is_idempotent_and_separate_from_api(db):
    with psycopg2.connect(db) as conn:
        history.apply_schema(conn)
        history.apply_schema(conn)
    tables = query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'etl' ORDER BY 1")
    assert tables == [("items",), ("notes",), ("steps",)]


def test_an_export_records_rows_totals_and_sha256_and_a_failed_one_its_line(db, tmp_path, monkeypatch):
    import microstrategy_to_s3
    from bond_reporting import microstrategy
    from scripts.mstr_server import MstrServer
    from tests.support.mstr_support import FAST, PASSWORD, PROJECT_ID, USERNAME, all_bonds_report, use_server

    report, text = all_bonds_report(tmp_path)
    monkeypatch.setattr(microstrategy, "DEFAULT_POLICY", FAST)
    with MstrServer([report], username=USERNAME, password=PASSWORD, project_id=PROJECT_ID) as server:
        use_server(monkeypatch, server.base_url)
        out = tmp_path / "out.csv"
        result = microstrategy_to_s3.run("All bonds Expenses Obligated", output=str(out), record_history=True)
        monkeypatch.setenv("MSTRO_PASSWORD", "wrong-password-123")
        with pytest.raises(Exception, match="All bonds Expenses Obligated") as failure:
            microstrategy_to_s3.run("All bonds Expenses Obligated", output=str(out), record_history=True)
    [(name, state, rows, money, digest, destination)] = query(
        db,
        "SELECT name, state, rows, money, sha256, destination FROM etl.items WHERE run_id = %s",
        (result["run_id"],),
    )
    assert (name, state, rows, destination) == (
        "All bonds Expenses Obligated",
        "exported",
        text.count("\n") - 2,
        str(out),
    )
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert money == result["written"]["money"] == result["received"]["money"]
    steps = query(db, "SELECT step, status, error FROM etl.steps ORDER BY step_id")
    assert steps[0] == ("export", "ok", None)
    assert steps[1][:2] == ("export", "failed") and steps[1][2] == str(failure.value)
    assert "wrong-password-123" not in steps[1][2]
