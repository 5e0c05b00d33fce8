"""Trust the dashboard (issue 10), end to end against a real PostgreSQL and the folder sink:
the change guard, freshness, unmapped AIMS groups, the calculate-hop reconciliation, and a publish
left part-way being repaired first. Each failure: exit 1, one line, the destination untouched."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

import bond_calculations
import bond_data
from bond_reporting import calculations, reconcile, report
from config import datasets as cfg
from tests.support import ROOT

SAMPLE = ROOT / "sample_data"
RAW_2020 = cfg.EXPENSES_2020


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    target = tmp_path / "sources"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch, sources: Path) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("FRESHNESS_WARN_DAYS", "off")  # the sample's dates are fixed; tests set what they check
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    return database_url


def folder_state(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))} if out.exists() else {}


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def query(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def halve_report(sources: Path) -> None:
    path = sources / f"{RAW_2020}.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[: 1 + (len(lines) - 1) // 2]) + "\n")


# --- the change guard -----------------------------------------------------------------------------


def test_guard_stops_a_shrunken_report_and_accept_changes_publishes_it(db, sources, tmp_path, caplog):
    out = tmp_path / "out"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0  # first publish there: nothing to compare
    published = folder_state(out)
    old = json.loads((out / "vs3t-h2aj.json").read_text())

    halve_report(sources)
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out)]) == 1
    [line] = errors(caplog)
    assert line.startswith("bond_calculations failed: change guard: ")
    assert f"since the last publish to folder {out.resolve()}: " in line
    new_rows = len(calculations.build_payloads(_tables(db), only=["vs3t-h2aj"])["vs3t-h2aj"])
    assert f"vs3t-h2aj rows {len(old):,} → {new_rows:,} (" in line
    assert "jdna-s8qn rows" in line and "expenses " in line
    assert line.endswith("nothing published (check the source; --accept-changes publishes anyway)")
    assert folder_state(out) == published  # the destination keeps its previous datasets
    assert any(m.startswith("run report: ") and m.endswith(report.NOT_WRITTEN) for m in caplog.messages)
    [(status, error)] = query(
        db, "SELECT status, error FROM etl.steps WHERE step = 'calculate' ORDER BY step_id DESC LIMIT 1"
    )
    assert (status, error) == ("failed", line.removeprefix("bond_calculations failed: "))

    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out), "--accept-changes"]) == 0
    assert len(json.loads((out / "vs3t-h2aj.json").read_text())) == new_rows
    assert any("accepted (--accept-changes)" in w for w in warnings(caplog))
    # the accepted publish is the new reference: the next run passes
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    assert not errors(caplog)


def test_the_guard_compares_per_destination_and_max_drop_pct_is_a_setting(db, sources, tmp_path, monkeypatch, caplog):
    first, second = tmp_path / "first", tmp_path / "second"
    assert bond_calculations.main(["--output-dir", str(first)]) == 0
    halve_report(sources)
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    assert bond_calculations.main(["--output-dir", str(second)]) == 0  # never published there before
    monkeypatch.setenv("MAX_DROP_PCT", "60")
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(first)]) == 1  # the cross product lost 65-74% of its rows
    [line] = errors(caplog)
    assert "fell by more than MAX_DROP_PCT=60% " in line and "rrww-ybw6" not in line
    monkeypatch.setenv("MAX_DROP_PCT", "80")
    assert bond_calculations.main(["--output-dir", str(first)]) == 0


def _tables(url: str) -> dict:
    from bond_reporting import database
    from bond_reporting.settings import Settings

    return database.read_tables(Settings.from_env({"DATABASE_URL": url}), cfg.tables_for(cfg.DATASETS))


# --- freshness ------------------------------------------------------------------------------------


def test_old_data_warns_by_the_settings(db, tmp_path, monkeypatch, caplog):
    newest = query(db, f"SELECT max(date)::text FROM api.{RAW_2020}")[0][0]
    monkeypatch.setenv("FRESHNESS_WARN_DAYS", "7")
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(tmp_path / "out")]) == 0
    lines = [w for w in warnings(caplog) if w.startswith("freshness:")]
    assert any(w.startswith(f"freshness: {RAW_2020} data as of {newest} is ") for w in lines)
    assert all("more than FRESHNESS_WARN_DAYS=7 (is the report still updating?)" in w for w in lines)
    notes = query(db, "SELECT level, subject FROM etl.notes WHERE kind = 'freshness' ORDER BY note_id")
    assert ("WARNING", RAW_2020) in notes

    monkeypatch.setenv("FRESHNESS_WARN_DAYS", "100000")
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(tmp_path / "out")]) == 0
    assert not [w for w in warnings(caplog) if w.startswith("freshness:")]


def test_old_data_errors_before_anything_is_published(db, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    monkeypatch.setenv("FRESHNESS_ERROR_DAYS", "30")
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out)]) == 1
    [line] = errors(caplog)
    assert line.startswith(f"bond_calculations failed: freshness: {RAW_2020} data as of ")
    assert "more than FRESHNESS_ERROR_DAYS=30: nothing published" in line
    assert folder_state(out) == {}
    assert query(db, "SELECT status FROM etl.steps WHERE step = 'calculate'") == [("failed",)]


def test_identical_report_bytes_for_n_runs_warn(db, sources, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FRESHNESS_UNCHANGED_RUNS", "2")
    assert bond_calculations.main(["--output-dir", str(tmp_path / "out")]) == 0  # one load so far: no warning
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(tmp_path / "out")]) == 0
    lines = [w for w in warnings(caplog) if "bytes are identical" in w]
    assert any(w.startswith(f"freshness: {RAW_2020} bytes are identical to those of the previous 2") for w in lines)


# --- reconciliation of the calculate hop ----------------------------------------------------------


def test_a_removed_lookup_entry_warns_with_group_and_amount_and_numbers_follow_the_contract(
    db, sources, tmp_path, caplog
):
    lookup = sources / f"{cfg.LOOKUP_2020}.csv"
    lines = lookup.read_text().splitlines()
    removed_line = lines[1]
    group, dashboard = removed_line.split(",")[:2]
    lookup.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    before = tmp_path / "before"
    lookup.write_text("\n".join(lines) + "\n")
    raw = _tables(db)[RAW_2020]

    caplog.clear()
    out = tmp_path / "out"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    aims = calculations.aims_group_id(raw["department"], raw["fund"], raw["division"], raw["group"])
    for fy in sorted(raw.loc[(aims == group).to_numpy(), "fiscal_year"].unique()):
        part = raw[(aims == group).to_numpy() & (raw["fiscal_year"] == fy).to_numpy()]
        amount = reconcile.money_text(reconcile.exact_total(part["expenses"]))
        assert any(
            w.startswith(f"unmapped AIMS group {group} (no entry in {cfg.LOOKUP_2020}): FY {fy} expenses {amount} ")
            for w in warnings(caplog)
        ), (group, fy, amount)
    notes = query(
        db, "SELECT subject, detail->>'expenses' FROM etl.notes WHERE kind = 'unmapped' AND subject = %s", (group,)
    )
    assert notes

    # Published numbers stay as the contract says (Q11): that group's expenses simply vanish from
    # the summary; with the entry back, the current-FY summary's Expenses grow by exactly them.
    without = json.loads((out / "hq9n-d77y.json").read_text())
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    assert bond_calculations.main(["--output-dir", str(before)]) == 0
    with_entry = json.loads((before / "hq9n-d77y.json").read_text())
    total = lambda rows: sum(Decimal(repr(r["Expenses"])) for r in rows if r["Expenses"] is not None)  # noqa: E731
    mapped_total = reconcile.exact_total(raw.loc[(aims == group).to_numpy(), "expenses"])
    assert total(with_entry) - total(without) == mapped_total
    assert dashboard  # the entry named a dashboard id


def test_a_tampered_calculation_fails_at_the_calculate_hop_and_publishes_nothing(db, tmp_path, monkeypatch, caplog):
    def tampered(inputs):  # a running sum off by one cent for one group
        frame = calculations.expenses_2020_payload(inputs.filled_2020)
        frame.loc[frame.index[-1], "sum_expenses"] += 0.01
        return frame

    monkeypatch.setitem(calculations.BUILDERS, "expenses_2020_all_years", tampered)
    out = tmp_path / "out"
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out)]) == 1
    [line] = errors(caplog)
    assert line.startswith("bond_calculations failed: reconciliation failed at calculate: vs3t-h2aj: ")
    assert folder_state(out) == {}


# --- a publish left part-way ----------------------------------------------------------------------


def test_a_dataset_left_publishing_is_said_and_republished_first(db, tmp_path, monkeypatch, caplog):
    """A run stopped (Ctrl-C / SIGTERM) while the second dataset is being written leaves it marked
    'publishing'; the next run says so and re-publishes it before anything else."""
    from bond_reporting import render

    json_array = render.json_array
    calls = []

    def stopped_at_the_second_dataset(frame, *args, **kwargs):
        calls.append(len(frame))
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C or SIGTERM raises in the scripts
        return json_array(frame, *args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(render, "json_array", stopped_at_the_second_dataset)
    assert bond_calculations.main(["--output-dir", str(out)]) == 1
    monkeypatch.setattr(render, "json_array", json_array)
    states = query(
        db,
        "SELECT DISTINCT ON (name) name, state FROM etl.items WHERE step = 'publish' ORDER BY name, item_id DESC",
    )
    assert dict(states) == {"vs3t-h2aj": "publishing", "jdna-s8qn": "publishing"}

    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out), "--only", "hq9n-d77y"]) == 0
    repairs = [w for w in warnings(caplog) if "left 'publishing'" in w]
    assert [w.split(" ")[0] for w in repairs] == ["jdna-s8qn", "vs3t-h2aj"]
    assert repairs[0].startswith(f"jdna-s8qn at folder {out.resolve()} was left 'publishing' by run ")
    assert repairs[0].endswith("(killed part-way?): re-publishing it first")
    staged = [r.getMessage().split(":")[0] for r in caplog.records if " rows staged to " in r.getMessage()]
    assert staged == ["jdna-s8qn", "vs3t-h2aj", "hq9n-d77y"]
    assert (out / "jdna-s8qn.json").is_file() and (out / "vs3t-h2aj.json").is_file()
    caplog.clear()
    assert bond_calculations.main(["--output-dir", str(out), "--only", "hq9n-d77y"]) == 0
    assert not [w for w in warnings(caplog) if "left 'publishing'" in w]


def test_a_failed_atomic_publish_marks_its_datasets_unchanged(db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "jdna-s8qn.json").mkdir()  # the second dataset cannot be staged: the folder keeps its content
    assert bond_calculations.main(["--output-dir", str(out)]) == 1
    states = query(
        db,
        "SELECT DISTINCT ON (name) name, state FROM etl.items WHERE step = 'publish' ORDER BY name, item_id DESC",
    )
    assert dict(states) == {"vs3t-h2aj": "unchanged", "jdna-s8qn": "unchanged"}


def test_the_flow_artifact_rows_tell_the_truth_after_a_stopped_guard(db, sources, tmp_path):
    from bond_reporting import history
    from bond_reporting.settings import Settings

    out = tmp_path / "out"
    assert bond_calculations.main(["--output-dir", str(out)]) == 0
    halve_report(sources)
    assert bond_data.main(["--from-dir", str(sources)]) == 0
    settings = Settings.from_env()
    with pytest.raises(Exception, match="change guard"):
        bond_calculations.run(output_dir=out, settings=settings, run_id="flow-run-7")
    rows = history.artifact_rows(settings, "flow-run-7")
    notes = {(r["step"], r["item"]): r["note"] for r in rows}
    assert notes[("calculate", "guard")].startswith("change guard: 3 dataset(s) fell by more than MAX_DROP_PCT=10%")
    assert notes[("calculate", "FAILED")] == notes[("calculate", "guard")]
    assert notes[("publish", "outcome")] == "nothing published: every dataset still holds the previous run's rows"
    assert any(item.startswith("reconcile") for _step, item in notes)
    assert history.artifact_rows(None) == []
