"""The run report's figures (issue 11), on the data contract's worked examples and the sample data.

The page's numbers are checked against independent plain-Python sums over the payload records
(the same records the dashboard reads), and the page itself for being self-contained.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bond_reporting import calculations, charts, report, storage, validation
from config import datasets as cfg
from config.sources import SOURCES
from tests.support import ROOT

NAN = math.nan
STARTED = dt.datetime(2026, 11, 30, 8, 15, 0, tzinfo=dt.UTC)

# docs/data-contract.md §5.4.5, worked example: hq9n-d77y for T = 2022, as published.
SUMMARY_EXAMPLE = pd.DataFrame(
    [
        ("0FY 21", "D1", 100.0, 80.0, NAN, 100.0, 80.0, NAN),
        ("0FY 21", "D2", 0.0, NAN, NAN, 0.0, NAN, NAN),
        ("0FY 23", "D1", NAN, 500.0, NAN, NAN, 580.0, NAN),
        ("2021 10", "D1", 0.0, 20.0, 30.0, 100.0, 600.0, 30.0),
        ("2021 10", "D2", 7.0, NAN, NAN, 7.0, NAN, NAN),
        ("2021 11", "D1", 50.0, NAN, 10.0, 150.0, NAN, 40.0),
        ("2021 11", "D2", 0.0, NAN, NAN, 7.0, NAN, NAN),
        ("2022 01", "D1", NAN, 5.0, NAN, NAN, 605.0, NAN),
    ],
    columns=list(calculations.FIELDS_SUMMARY),
)
NAMES_EXAMPLE = pd.DataFrame(
    {
        "dashboard_deptfundprogact": ["D2", "D1"],
        "department_name": ["Public Works", "Transportation"],
        "bond_year": [2020, 2020],
        "program_name": ["Sidewalks", "Sidewalks"],
        "sub_program_name": ["Ramps", "Repairs"],
        "funding_amount": [1000.0, 2000.0],
        "program_sort": [1, 1],
        "sub_program_sort": [2, 1],
    }
)


# ---------------------------------------------------------------------------------------------
# 2020 summary figures
# ---------------------------------------------------------------------------------------------


def test_the_fiscal_year_and_its_months_come_from_the_labels() -> None:
    assert report.summary_fiscal_year(SUMMARY_EXAMPLE) == 2022
    assert report.fiscal_year_months(2022) == (
        "2021 10",
        "2021 11",
        "2021 12",
        *(f"2022 {m:02d}" for m in range(1, 10)),
    )
    assert report.summary_fiscal_year(SUMMARY_EXAMPLE[SUMMARY_EXAMPLE["table_col"].str.startswith("0FY")]) is None


def test_cumulative_totals_carry_the_published_running_sums_forward() -> None:
    cumulative = report.cumulative_by_dashboard(SUMMARY_EXAMPLE, 2022)
    d1, d2 = cumulative.loc["D1"], cumulative.loc["D2"]
    # position 0: the '0FY' rows (carry-in, Q9: the FY2023 baseline of 500 is in it).
    assert d1.loc[0].tolist() == [100.0, 580.0, 0.0]
    assert d1.loc[1].tolist() == [100.0, 600.0, 30.0]  # October
    assert d1.loc[2].tolist() == [150.0, 600.0, 40.0]  # November
    assert d1.loc[3].tolist() == [150.0, 600.0, 40.0]  # December: no entry, carried
    assert d1.loc[4].tolist() == [150.0, 605.0, 40.0]  # January
    assert d1.loc[12].tolist() == [150.0, 605.0, 40.0]  # September
    assert d2.loc[0].tolist() == [0.0, 0.0, 0.0]
    assert d2.loc[12].tolist() == [7.0, 0.0, 0.0]
    assert report.last_expense_position(SUMMARY_EXAMPLE, 2022) == 2


def test_programs_sum_their_sub_programs_and_expenses_stop_after_the_last_expense_month() -> None:
    total, programs = report.program_series(SUMMARY_EXAMPLE, NAMES_EXAMPLE)
    # FY 2022 only, from 0 at October: the month rows' own amounts (D2's 7 + D1's 0, then D1's 50).
    assert total.expenses[:2] == (7.0, 57.0)
    assert total.expenses[2:] == (None,) * 10
    assert total.to_date_month == "2021 11"
    assert total.expenses_to_date == 57.0
    assert total.baseline_to_date == 20.0  # October's 20: November, the last month with expenses, has none
    assert total.planned_to_date == 40.0
    assert total.baseline[-1] == 25.0 and total.planned[-1] == 40.0  # + January's 5
    # The '0FY 21' and '0FY 23' rows (Q9): carried into the published running totals, not FY 2022's.
    assert total.carry_in == (100.0, 580.0, 0.0)
    assert total.published_to_date == (150.0 + 7.0, 600.0, 40.0)  # Sum_* of D1 and D2 at November
    [(program, subs)] = programs
    assert program.name == "Sidewalks" and program.members == ("Repairs", "Ramps")  # sort columns
    assert [(s.name, s.members, s.expenses_to_date) for s in subs] == [
        ("Repairs", ("D1",), 50.0),
        ("Ramps", ("D2",), 7.0),
    ]


def test_the_carry_in_is_named_by_fiscal_year_and_its_span_spelled_out() -> None:
    carried = report.carry_in_by_year(SUMMARY_EXAMPLE)
    assert carried.index.tolist() == [2021, 2023]
    assert carried.loc[2021].tolist() == [100.0, 80.0, 0.0] and carried.loc[2023].tolist() == [0.0, 500.0, 0.0]
    assert report.carry_in_text(carried, 2022) == "cumulative since FY 2021, includes FY 2023's baseline"
    # The previous-FY table drops the current year's '0FY' rows (Q10): the gap is named.
    gap = pd.DataFrame({"expenses": [5.0, 2.0], "baseline": [1.0, 3.0], "planned": [0.0, 0.0]}, index=[2024, 2027])
    assert report.carry_in_text(gap, 2025) == (
        "cumulative since FY 2024, leaves out FY 2026, includes FY 2027's expenses and baseline"
    )
    assert report.carry_in_text(carried.iloc[0:0], 2022) == "cumulative since FY 2022"


def test_a_dashboard_id_without_a_name_is_its_own_program() -> None:
    total, programs = report.program_series(
        SUMMARY_EXAMPLE, NAMES_EXAMPLE[NAMES_EXAMPLE["dashboard_deptfundprogact"] == "D1"]
    )
    assert [p.name for p, _ in programs] == ["Sidewalks", "D2"]
    assert total.expenses_to_date == 57.0
    total, programs = report.program_series(SUMMARY_EXAMPLE, None)
    assert [p.name for p, _ in programs] == ["D1", "D2"] and total.expenses_to_date == 57.0


# ---------------------------------------------------------------------------------------------
# All-bonds figures
# ---------------------------------------------------------------------------------------------


def test_all_bonds_spent_is_the_final_running_sum_per_group_mapped_to_programs() -> None:
    # docs/data-contract.md §5.3 worked example (the running sums as published), plus an unmapped group G3.
    expenses = pd.DataFrame(
        {
            "aims_dept_prog_act": ["G1", "G2", "G3", "G1", "G2", "G3", "G1", "G2", "G3"],
            "sum_obligated": [10.0, 0, 1, 10, 7, 1, 15, 7, 1],
            "sum_expenses": [1.0, 0, 2, 1, 7, 2, 6, 7, 2.5],
        }
    )
    lookup = pd.DataFrame({"aims_dept_prog_act": ["G1", "G2"], "dashboard_deptfundprogact": ["A", "B"]})
    metadata = pd.DataFrame(
        {
            "dashboard_deptfundprogact": ["A", "B", "C"],
            "bond_year": [2018, 2018, 2020],
            "program_name": ["Roads", "Roads", "Parks"],
            "sub_program_name": ["a", "b", "c"],
            "program_sort": [1, 1, 1],
            "sub_program_sort": [1, 2, 1],
            "appropriated": [100.0, NAN, NAN],
        }
    )
    figures = report.all_bonds_figures(expenses, lookup, metadata)
    programs = figures.programs.set_index(["bond_year", "program_name"])
    assert programs.loc[(2018, "Roads"), ["spent", "obligated", "appropriated"]].tolist() == [13.0, 22.0, 100.0]
    assert programs.loc[(2020, "Parks"), "spent"] == 0.0
    assert math.isnan(programs.loc[(2020, "Parks"), "appropriated"])  # no appropriation: unknown, not 0
    assert figures.unmapped[["aims_dept_prog_act", "spent"]].values.tolist() == [["G3", 2.5]]
    assert figures.unnamed.empty


# ---------------------------------------------------------------------------------------------
# The sample data: the page's numbers against plain sums over the payload records
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The sample sources validated as the load does, shaped as database.read_tables returns them."""
    tables = {}
    for source in SOURCES:
        frame = validation.validate_file(ROOT / "sample_data" / f"{source.table}.csv", source, source.table)
        for column in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[column]):
                frame[column] = frame[column].dt.strftime("%Y-%m-%d")
        frame["updated_at"] = "2026-11-30T06:00:00.000000"
        tables[source.table] = frame
    return tables, calculations.build_payloads(tables)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def last_non_null(records: list[dict], column: str) -> dict[str, float]:
    last: dict[str, float] = {}
    for r in records:
        if r[column] is not None:
            last[r["dashboard_deptfundprogact"]] = r[column]
    return last


def facts_for(payloads: dict[str, pd.DataFrame], destination: str = "folder out", **extra) -> report.RunFacts:
    return report.RunFacts(
        started_at=STARTED,
        destination=destination,
        datasets={k: len(v) for k, v in payloads.items()},
        data_as_of="2026-09-09",
        steps=[report.Step("calculate", "ok", 1.5, "7 payloads")],
        **extra,
    )


def figures_in(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([^"]+)">([^<]*)<', page))


def fiscal_year_figures(records: list[dict]) -> dict[str, float]:
    """A summary payload's figures for its own fiscal year, from the month rows' own amounts
    (``Expenses``/``Baseline``/``Planned``, not the running sums): to date = through the last
    month with an expense entry; and the published running totals there (last non-null Sum_*)."""
    months = [r for r in records if not r["table_col"].startswith("0FY")]
    last = max(r["table_col"] for r in months if r["Expenses"] is not None)
    to_date = [r for r in records if r["table_col"] <= last]  # '0FY' labels sort first (Q9)
    return {
        "expenses": sum(r["Expenses"] or 0.0 for r in months),
        "baseline": sum(r["Baseline"] or 0.0 for r in months if r["table_col"] <= last),
        "planned": sum(r["Planned"] or 0.0 for r in months),
        "running expenses": sum(last_non_null(to_date, "Sum_expenses").values()),
        "running baseline": sum(last_non_null(to_date, "Sum_baseline").values()),
        "carried baseline": sum(r["Baseline"] or 0.0 for r in records if r["table_col"].startswith("0FY")),
    }


def test_the_fiscal_year_figures_equal_the_raw_sample_amounts_of_that_year(sample) -> None:
    """Independent of the calculations: FY 2026 from the raw sources, not from the payloads."""
    tables, payloads = sample
    names = tables[cfg.PROGRAM_NAMES_2020]
    prepared = report.prepare(payloads, names)
    fy = prepared.sections["fy"]
    assert fy["year"] == 2026 and fy["total"].to_date_month == "2026 09"
    shown = figures_in(report.build_report(facts_for(payloads), payloads, names))

    raw = tables[cfg.EXPENSES_2020]
    groups = raw["department"].astype(str) + raw["fund"] + raw["division"] + raw["group"]
    lookup = tables["bond_2020_aims_to_dashboard"]
    mapped = pd.DataFrame({"aims_dept_prog_act": groups, "fiscal_year": raw["fiscal_year"], "x": raw["expenses"]})
    mapped = mapped.merge(lookup, on="aims_dept_prog_act")  # unmapped groups are not in the summary (Q11)
    booked = mapped.groupby("fiscal_year")["x"].sum()
    baseline = tables["bond_2020_baseline_spend"]
    dates = pd.to_datetime(baseline["date"])
    by_fy = baseline.groupby(dates.dt.year + (dates.dt.month >= 10))["amount"].sum()  # §2.1

    assert shown["fy-expenses"] == report.money(booked[2026])
    assert shown["fy-baseline-to-date"] == report.money(by_fy[2026])  # to date = through September
    # The running totals: every other year's expenses and baselines, FY 2027's baseline included.
    assert shown["hq9n-d77y-running-expenses"] == report.money(booked.sum())
    assert shown["hq9n-d77y-running-baseline"] == report.money(by_fy.sum())
    assert 2027 in by_fy.index and by_fy[2027] > 0
    assert fy["span"] == "cumulative since FY 2024, includes FY 2027's baseline"
    carried = {c["year"]: c["values"] for c in fy["carried"]}
    assert carried[2027][1] == pytest.approx(by_fy[2027]) and carried[2024][0] == pytest.approx(booked[2024])
    # The previous-FY table leaves out the current year's rows (Q10) and says so.
    assert prepared.sections["previous_fy"]["span"] == (
        "cumulative since FY 2024, leaves out FY 2026, includes FY 2027's baseline"
    )


def test_the_fiscal_year_charts_start_from_zero_at_the_first_month(sample) -> None:
    tables, payloads = sample
    records = _records(payloads["hq9n-d77y"])
    fy = report.prepare(payloads, tables[cfg.PROGRAM_NAMES_2020]).sections["fy"]
    _key, title, months, expenses, baseline, planned = fy["specs"][0].args
    assert "FY 2026 only" in title and months[0] == "2025 10"
    october = [r for r in records if r["table_col"] == months[0]]
    assert expenses[0] == pytest.approx(sum(r["Expenses"] or 0.0 for r in october))
    assert baseline[0] == pytest.approx(sum(r["Baseline"] or 0.0 for r in october))
    assert planned[0] == pytest.approx(sum(r["Planned"] or 0.0 for r in october))
    # Each program's small chart is on the same basis: it ends at the program's own FY 2026 sums.
    _key, _months, small = fy["specs"][1].args
    names = tables[cfg.PROGRAM_NAMES_2020]
    for name, program_expenses, program_baseline, _planned in small:
        ids = set(names.loc[names["program_name"] == name, "dashboard_deptfundprogact"])
        own = [r for r in records if r["dashboard_deptfundprogact"] in ids and not r["table_col"].startswith("0FY")]
        assert program_expenses[-1] == pytest.approx(sum(r["Expenses"] or 0.0 for r in own)), name
        assert program_baseline[-1] == pytest.approx(sum(r["Baseline"] or 0.0 for r in own)), name


def test_the_headline_figures_equal_sums_over_the_payload_records(sample) -> None:
    tables, payloads = sample
    page = report.build_report(facts_for(payloads), payloads, tables[cfg.PROGRAM_NAMES_2020])
    shown = figures_in(page)

    fy = fiscal_year_figures(_records(payloads["hq9n-d77y"]))
    expected_expenses, expected_planned = fy["expenses"], fy["planned"]
    spent: dict[str, float] = {}
    for r in _records(payloads["rrww-ybw6"]):
        spent[r["aims_dept_prog_act"]] = r["sum_expenses"]  # rows are in date order: the last is final
    ids = defaultdict(list)
    for r in _records(payloads["mri6-eexh"]):
        ids[r["aims_dept_prog_act"]].append(r["dashboard_deptfundprogact"])
    programs = {r["dashboard_deptfundprogact"] for r in _records(payloads["9ufs-k2md"])}
    expected_spent = sum(v for g, v in spent.items() for i in set(ids[g]) if i in programs)
    expected_appropriated = sum(r["appropriated"] or 0 for r in _records(payloads["9ufs-k2md"]))

    assert shown["fy-expenses"] == report.money(expected_expenses)
    assert shown["fy-baseline-to-date"] == report.money(fy["baseline"])
    assert shown["fy-planned"] == report.money(expected_planned)
    # The dashboard's running totals are shown apart, as what they are (Q9: they carry other FYs).
    assert shown["hq9n-d77y-running-expenses"] == report.money(fy["running expenses"])
    assert shown["hq9n-d77y-running-baseline"] == report.money(fy["running baseline"])
    assert fy["running baseline"] == pytest.approx(fy["baseline"] + fy["carried baseline"])
    assert fy["running expenses"] > fy["expenses"] and fy["carried baseline"] > 0  # the sample has a carry-in
    assert shown["all-bonds-spent"] == report.money(expected_spent)
    assert shown["all-bonds-appropriated"] == report.money(expected_appropriated)
    assert shown["rows-published"] == f"{sum(len(p) for p in payloads.values()):,}"
    for dataset_id, frame in payloads.items():
        assert shown[f"rows-{dataset_id}"] == f"{len(frame):,}"
    assert shown["data-as-of"] == "2026-09-09" and shown["run-started"] == "2026-11-30 08:15:00 UTC"
    assert expected_expenses > 0 and expected_spent > 0  # the sample exercises every figure


def test_the_page_is_self_contained_and_every_chart_has_its_numbers_in_a_table(sample) -> None:
    tables, payloads = sample
    page = report.build_report(facts_for(payloads), payloads, tables[cfg.PROGRAM_NAMES_2020])
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    # Nothing to fetch: no src/href/url()/@import pointing anywhere (namespace URIs are not fetched).
    assert not re.search(r"""(src\s*=|href\s*=\s*["']?(https?:|//)|url\((?!#)|@import)""", page, re.I)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert '"Segoe UI"' in page  # the inline CSS is inserted as it is, not HTML-escaped
    charts_ = re.findall(r'<figure class="chart[^"]*" data-chart="([^"]+)">\s*<svg(.*?)</svg>', page, re.S)
    names = [name for name, _ in charts_]
    assert names[:1] == ["hq9n-d77y-total"] and "5ewg-ssu3-total" in names and "all-bonds" in names
    assert all("<path" in body for _, body in charts_)
    # SVG ids must be unique on the page (several inline SVGs share one document).
    ids = re.findall(r'<(?:clipPath|path)[^>]* id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # The month table beside the main chart: 12 months of the fiscal year, the chart's numbers as text.
    total, _ = report.program_series(payloads["hq9n-d77y"], tables[cfg.PROGRAM_NAMES_2020])
    for month, value in zip(total.months, total.baseline, strict=True):
        assert f'<td class="nowrap">{month}</td>' in page and report.money(value) in page
    assert len(page.encode()) < 400_000


def test_sections_without_their_payloads_are_left_out(sample) -> None:
    _tables, payloads = sample
    only = {k: payloads[k] for k in ("9ufs-k2md", "mri6-eexh")}
    page = report.build_report(facts_for(only), only, None)
    assert 'id="fy-current"' not in page and 'id="all-bonds"' not in page
    assert figures_in(page)["rows-published"] == f"{sum(len(p) for p in only.values()):,}"


def test_a_failed_run_says_so_with_its_error_line() -> None:
    facts = report.RunFacts(
        started_at=STARTED,
        destination="https://data.example.org",
        datasets={},
        status="failed",
        error="vs3t-h2aj: PUT rows 1-10: HTTP 401 <Unauthorized>; published: none",
    )
    page = report.build_report(facts, {}, None)
    shown = figures_in(page)
    assert shown["run-status"] == "failed"
    assert shown["run-error"] == "vs3t-h2aj: PUT rows 1-10: HTTP 401 &lt;Unauthorized&gt;; published: none"


def test_trust_sections_render_as_tables_and_names_are_escaped(sample) -> None:
    tables, payloads = sample
    names = tables[cfg.PROGRAM_NAMES_2020].copy()
    names.loc[0, "program_name"] = "<script>alert(1)</script>"
    trust = {
        "freshness": [{"report": "2020 Bond Expenses Obligated", "data_as_of": "2026-09-09", "verdict": "warn"}],
        "unmapped": [{"group": "740086B174B22BA", "fiscal_year": 2026, "amount": 1234.5, "exact": "1234567.10"}],
        "warnings": ["lookup code with a trailing space"],
        "changes": [
            {
                "dataset": "hq9n-d77y",
                "old rows": 150,
                "new rows": 151,
                "old Expenses": "1000.50",
                "new Expenses": "1500.00",
                "old Baseline": None,
                "new Baseline": None,
                "fell beyond the limit": None,
            },
        ],
    }
    page = report.build_report(facts_for(payloads, trust=trust), payloads, names)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>740086B174B22BA</td><td>2026</td><td>1,234.50</td><td>1,234,567.10</td>" in page.replace("\n", "")
    assert figures_in(page)["freshness"] == "freshness warning"
    assert "<li>lookup code with a trailing space</li>" in page
    # Changes: one row per dataset and figure, last publish → this run (figures without values left out).
    flat = page.replace("\n", "")
    assert "<td>hq9n-d77y</td><td>rows</td><td>150</td><td>151</td><td>+1</td>" in flat
    assert "<td>hq9n-d77y</td><td>Expenses</td><td>1,000.50</td><td>1,500.00</td><td>+499.50</td>" in flat
    assert "<td>Baseline</td>" not in flat


def test_program_charts_are_capped_and_the_rest_stay_in_the_table() -> None:
    ids = [f"D{i:03d}" for i in range(40)]
    months = report.fiscal_year_months(2026)
    rows = [(m, d, 1.0, 2.0, 3.0, NAN, NAN, NAN) for m in months[:6] for d in ids]
    summary = pd.DataFrame(rows, columns=list(calculations.FIELDS_SUMMARY)).sort_values(
        ["table_col", "dashboard_deptfundprogact"]
    )
    counts = summary.groupby("dashboard_deptfundprogact").cumcount() + 1.0
    summary["Sum_expenses"], summary["Sum_baseline"], summary["Sum_planned"] = counts, counts * 2, counts * 3
    page = report.build_report(
        report.RunFacts(STARTED, "folder x", {"hq9n-d77y": len(summary)}), {"hq9n-d77y": summary}
    )
    assert page.count('data-chart="hq9n-d77y-program-') == report.MAX_PROGRAM_CHARTS
    assert f"{40 - report.MAX_PROGRAM_CHARTS} more program(s) are in the table only" in page
    assert figures_in(page)["fy-expenses"] == report.money(40 * 6.0)


# ---------------------------------------------------------------------------------------------
# Formats and delivery
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "$0.00"), (1234567.891, "$1,234,567.89"), (-12.0, "\u2212$12.00"), (None, "\u2014"), (NAN, "\u2014")],
)
def test_money(value, text) -> None:
    assert report.money(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0, "$0"), (950, "$950"), (12_000, "$12K"), (1_500_000, "$1.5M"), (-2e9, "\u2212$2B")]
)
def test_axis_dollars(value, text) -> None:
    assert charts.dollars(value) == text


def test_delivery_writes_every_path_and_both_bucket_keys(tmp_path: Path) -> None:
    bucket = storage.LocalBucket(tmp_path / "bucket")
    delivery = report.Delivery(paths=[tmp_path / "out" / "report.html", tmp_path / "elsewhere.html"], bucket=bucket)
    written = report.deliver("<!DOCTYPE html><p>hello</p>", delivery, STARTED)
    key = "run-reports/2026-11-30T081500Z.html"
    assert written == [
        str(tmp_path / "out" / "report.html"),
        str(tmp_path / "elsewhere.html"),
        f"folder {tmp_path / 'bucket'}/{key}",
        f"folder {tmp_path / 'bucket'}/run-reports/latest.html",
    ]
    for path in (tmp_path / "out" / "report.html", tmp_path / "bucket" / key, tmp_path / "bucket" / report.LATEST_KEY):
        assert path.read_text() == "<!DOCTYPE html><p>hello</p>"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html"]  # no temporary file left


def test_charts_are_plain_svg_with_text_kept_as_text() -> None:
    months = report.fiscal_year_months(2026)
    svg = charts.cumulative_chart("k", "A title", months, [1.0] * 3 + [None] * 9, list(np.arange(12.0)), [2.0] * 12)
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<?xml" not in svg and "<!--" not in svg
    assert ">A title<" in svg and "viewBox" in svg


def test_programs_that_moved_most_since_the_last_completed_run_to_the_same_destination(sample) -> None:
    tables, payloads = sample
    names = tables[cfg.PROGRAM_NAMES_2020]
    before_page = report.build_report(facts_for(payloads), payloads, names)
    assert "Nothing to compare with" in before_page

    changed = dict(payloads)
    summary = payloads["hq9n-d77y"].copy()
    first_id = names["dashboard_deptfundprogact"].iloc[0]
    in_fy = ~summary["table_col"].str.startswith("0FY")  # a posting in FY 2026 (not a carry-in)
    summary.loc[in_fy & (summary["dashboard_deptfundprogact"] == first_id), "Sum_expenses"] += 1000.0
    changed["hq9n-d77y"] = summary
    prepared = report.prepare(changed, names)
    totals = report.program_totals(prepared)
    program = names["program_name"].iloc[0]
    key = f"2020 bond FY 2026 expenses: {program}"

    moved = report.programs_moved(before_page, facts_for(changed), totals)
    assert [m["program"] for m in moved] == [key]  # nothing else moved
    old = report.totals_in_page(before_page)[1][key]
    assert moved[0] == {
        "program": key,
        "last publish": report.money(old),
        "this run": report.money(old + 1000.0),
        "change": report.money(1000.0),
    }
    # Only a completed run to the same destination counts as "the last publish".
    assert report.programs_moved(before_page, facts_for(changed, destination="folder elsewhere"), totals) == []
    # A page from before the FY-only figures (its 2020 totals were running totals): not compared.
    older = before_page.replace(report.FY_ONLY_MARK, "")
    assert report.programs_moved(older, facts_for(changed), totals) == []
    failed = before_page.replace('data-figure="run-status">completed<', 'data-figure="run-status">failed<')
    assert report.programs_moved(failed, facts_for(changed), totals) == []
    assert report.programs_moved(None, facts_for(changed), totals) == []

    page = report.build_report(facts_for(changed, trust={"programs_moved": moved}), changed, names)
    section = page[page.index('<section id="changes">') : page.index('<section id="data-notes">')]
    assert "Programs whose totals moved most" in section and "Nothing to compare with" not in section
    assert f"<td>{report.money(1000.0)}</td>" in section
