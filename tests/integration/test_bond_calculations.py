"""End to end: load the sample data (bond_data) → bond_calculations → a folder or Socrata over HTTPS."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections import defaultdict
from pathlib import Path

import psycopg2
import pytest

import bond_calculations
from config import datasets as cfg
from tests.support import ROOT
from tests.support.soda_server import APP_TOKEN, KEY_ID, KEY_SECRET, SodaServer

SAMPLE = ROOT / "sample_data"


def sample_rows(table: str) -> list[dict[str, str]]:
    with (SAMPLE / f"{table}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def iso(mdy: str) -> str:
    month, day, year = mdy.split("/")
    return f"{year}-{int(month):02d}-{int(day):02d}"


@pytest.fixture
def loaded(shared_load: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's shared loaded database (its tables are only read)."""
    monkeypatch.setenv("DATABASE_URL", shared_load)
    return shared_load


def test_sample_data_to_folder_writes_all_seven_payloads(loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = bond_calculations.run(output_dir=out)
    assert list(summary["datasets"]) == list(cfg.DATASET_IDS)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{i}.{ext}" for i in cfg.DATASET_IDS for ext in ("csv", "json")] + ["report.html"]
    )
    payloads = {i: json.loads((out / f"{i}.json").read_text()) for i in cfg.DATASET_IDS}
    assert {i: len(p) for i, p in payloads.items()} == summary["datasets"]

    # 2020: |FY| × |dates| × |groups| rows plus one per duplicate source key (Q4); last sums = CSV totals.
    raw = sample_rows(cfg.EXPENSES_2020)
    group_of = {id(r): f"{r['Department']}{r['Fund']}{r['Division']}{r['Group']}" for r in raw}
    fys, dates, groups = ({r["Fiscal Year"] for r in raw}, {r["Date"] for r in raw}, set(group_of.values()))
    duplicates = len(raw) - len({(group_of[id(r)], r["Fiscal Year"], r["Date"]) for r in raw})
    assert len(payloads["vs3t-h2aj"]) == len(fys) * len(dates) * len(groups) + duplicates
    totals: dict[tuple[str, int], float] = defaultdict(float)
    for r in raw:
        totals[(group_of[id(r)], int(r["Fiscal Year"]))] += float(r["Expenses"])
    last: dict[tuple[str, int], float] = {}
    for r in payloads["vs3t-h2aj"]:
        last[(r["aims_dept_prog_act"], r["fiscal_year"])] = r["sum_expenses"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T00:00:00\.000", r["date"])
        assert r["department"] is None or type(r["department"]) is float
    assert last.keys() == {(g, int(fy)) for g in groups for fy in fys}
    assert all(math.isclose(last[k], totals.get(k, 0.0), abs_tol=1e-6) for k in last)
    latest = max(int(fy) for fy in fys)
    assert payloads["jdna-s8qn"] == [r for r in payloads["vs3t-h2aj"] if r["fiscal_year"] < latest]

    all_bonds = sample_rows(cfg.EXPENSES_ALL_BONDS)
    all_groups = {
        f"{r['Department@Dept']}{r['Fund@Code']}{r['Division (As-Is)@Code']}{r['Group (As-Is)@Code']}"
        for r in all_bonds
    }
    assert len(payloads["rrww-ybw6"]) == len({r["Date"] for r in all_bonds}) * len(all_groups)

    for dataset_id in ("hq9n-d77y", "5ewg-ssu3"):
        labels = [(r["table_col"], r["dashboard_deptfundprogact"]) for r in payloads[dataset_id]]
        assert labels == sorted(labels) and labels
        assert all(re.fullmatch(r"\d{4} \d{2}|0FY \d{2}", label) for label, _ in labels)

    programs = sample_rows(cfg.PROGRAM_NAMES)
    assert [r["dashboard_deptfundprogact"] for r in payloads["9ufs-k2md"]] == [
        r["Dashboard FundDeptProgAct"] for r in programs
    ]
    lookup = sample_rows(cfg.LOOKUP_ALL_BONDS)
    assert [(r["aims_dept_prog_act"], r["dashboard_deptfundprogact"]) for r in payloads["mri6-eexh"]] == [
        (r["AIMS Dept Prog Act"], r["Dashboard FundDeptProgAct"]) for r in lookup
    ]
    assert summary["data_as_of"] == max(iso(r["Date"]) for r in raw + all_bonds)


def test_cli_publishes_to_socrata_what_the_folder_sink_writes(
    loaded: str, soda: SodaServer, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert bond_calculations.main(["--chunk-size", "300"]) == 0
        assert bond_calculations.main(["--output-dir", str(tmp_path / "out")]) == 0
    for dataset_id in cfg.DATASET_IDS:
        assert soda.datasets[dataset_id] == json.loads((tmp_path / "out" / f"{dataset_id}.json").read_text())
    assert set(soda.app_tokens) == {APP_TOKEN}
    assert "data as of 20" in caplog.text
    output = capsys.readouterr()
    for secret in (KEY_ID, KEY_SECRET, APP_TOKEN):
        assert secret not in output.out + output.err + caplog.text


def test_cli_only_publishes_the_named_datasets(loaded: str, soda: SodaServer) -> None:
    assert bond_calculations.main(["--only", "mri6-eexh", "9ufs-k2md"]) == 0
    assert {r.dataset for r in soda.requests} == {"9ufs-k2md", "mri6-eexh"}
    assert [r.dataset for r in soda.requests if r.method == "PUT"] == ["9ufs-k2md", "mri6-eexh"]  # publish order


def test_a_failing_calculation_publishes_nothing_and_exits_1(
    loaded_own: str, soda: SodaServer, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg2.connect(loaded_own) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE api.bond_2020_current_fy_spend_plan")
    assert bond_calculations.main([]) == 1
    assert soda.requests == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # An empty input table is refused before anything is computed (a load never leaves one empty).
    assert len(errors) == 1 and "table(s) bond_2020_current_fy_spend_plan are empty" in errors[0]


def test_refused_credentials_exit_1_with_one_line_and_no_secret(
    loaded_own: str, soda: SodaServer, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    soda.key_secret = "what-the-server-expects-0042"
    assert bond_calculations.main([]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "vs3t-h2aj: PUT rows 1-" in errors[0] and "HTTP 401" in errors[0]
    assert errors[0].endswith(
        "(the dataset is unchanged); replaced and verified: none; "
        "unchanged: jdna-s8qn, rrww-ybw6, hq9n-d77y, 5ewg-ssu3, 9ufs-k2md, mri6-eexh"
    )
    output = capsys.readouterr()
    for secret in (KEY_ID, KEY_SECRET, APP_TOKEN):
        assert secret not in output.out + output.err + caplog.text


def test_missing_socrata_settings_fail_before_reading_the_database(
    caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    monkeypatch.setenv("SO_WEB", "data.example.org")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert bond_calculations.main([]) == 2
    assert "missing setting SO_KEY" in caplog.text


def test_an_output_dir_that_is_a_file_is_refused_and_the_file_kept(
    loaded: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "afile"
    target.write_text("hi")
    assert bond_calculations.main(["--output-dir", str(target)]) == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        line
        == f"bond_calculations failed: --output-dir {target} is a file, not a folder: give a folder (created when missing)"
    )
    assert target.read_text() == "hi" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
