"""The worked examples of docs/data-contract.md §5, number for number, plus the edge cases around them."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from bond_reporting import calculations as calc
from bond_reporting.errors import ConfigError, ValidationError
from config import datasets as cfg
from tests.support.frames import UPDATED_AT, empty_tables, table

# §5.2 groups: department, fund, division, group → AIMS id.
G1_2020 = (6200, "86A0", "62A1", "1AB")  # 620086A062A11AB
G2_2020 = (7400, "8640", "74C1", "2EG")  # 7400864074C12EG
# §5.3 groups: department, fund_code, division_code, group_code.
G1_ALL = (2400, "8620", "24K3", "7QX15")  # 2400862024K37QX15
G2_ALL = (6200, "86B0", "62A1", "2CD")  # 620086B062A12CD


def row_2020(group: tuple, fiscal_year: int, date: str, obligated: float, expenses: float) -> dict:
    department, fund, division, grp = group
    return {
        "fund": fund,
        "department": department,
        "date": date,
        "group": grp,
        "fiscal_year": fiscal_year,
        "division": division,
        "obligated": obligated,
        "expenses": expenses,
    }


def row_all_bonds(group: tuple, date: str, obligated: float, expenses: float) -> dict:
    department, fund, division, grp = group
    return {
        "fund_code": fund,
        "fund_long_name": f"Fund {fund}",
        "division_code": division,
        "division_long_name": f"Division {division}",
        "department": department,
        "department_long_name": f"Department {department}",
        "date": date,
        "group_code": grp,
        "group_long_name": f"Group {grp}",
        "obligated": obligated,
        "expenses": expenses,
    }


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN → None (what the JSON rendering does)."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


# ---------------------------------------------------------------------------------------------- §2.1, §5.1


@pytest.mark.parametrize(
    ("date", "fy"),
    [("2021-09-30", 2021), ("2021-10-01", 2022), ("2022-01-14", 2022), ("2022-09-30", 2022), ("2022-10-05", 2023)],
)
def test_fiscal_year_of_matches_section_2_1(date: str, fy: int) -> None:
    assert calc.fiscal_year_of(pd.Series([date])).tolist() == [fy]


def test_aims_group_ids_of_section_5_1() -> None:
    assert calc.aims_group_id(pd.Series([6200]), *(pd.Series([p]) for p in ("86A0", "62A1", "1AB"))).tolist() == [
        "620086A062A11AB"
    ]
    assert calc.aims_group_id(pd.Series([2400]), *(pd.Series([p]) for p in ("8620", "24K3", "7QX15"))).tolist() == [
        "2400862024K37QX15"
    ]


def test_aims_group_id_never_formats_department_as_float() -> None:
    # A float department that is whole still gives the integer text (Q17); a fraction is refused.
    assert calc.aims_group_id(pd.Series([6200.0]), pd.Series(["F"])).tolist() == ["6200F"]
    with pytest.raises(ValidationError, match="whole number"):
        calc.aims_group_id(pd.Series([6200.5]), pd.Series(["F"]))


# ---------------------------------------------------------------------------------------------- §5.2


def example_2020() -> pd.DataFrame:
    return table(
        cfg.EXPENSES_2020,
        [
            row_2020(G1_2020, 2023, "2023-09-05", 100.0, 40.0),
            row_2020(G1_2020, 2024, "2023-10-02", 0.0, 25.0),
            row_2020(G2_2020, 2024, "2023-10-02", 50.0, 10.0),
            row_2020(G2_2020, 2023, "2023-10-03", -5.0, 5.0),
        ],
    )


G1 = "620086A062A11AB"
G2 = "7400864074C12EG"
# §5.2 result table: (FY, group, date, obl, exp, sum_obl, sum_exp, source?)
EXPECTED_5_2 = [
    (2023, G1, "2023-09-05", 100, 40, 100, 40, True),
    (2023, G1, "2023-10-02", 0, 0, 100, 40, False),
    (2023, G1, "2023-10-03", 0, 0, 100, 40, False),
    (2023, G2, "2023-09-05", 0, 0, 0, 0, False),
    (2023, G2, "2023-10-02", 0, 0, 0, 0, False),
    (2023, G2, "2023-10-03", -5, 5, -5, 5, True),
    (2024, G1, "2023-09-05", 0, 0, 0, 0, False),
    (2024, G1, "2023-10-02", 0, 25, 0, 25, True),
    (2024, G1, "2023-10-03", 0, 0, 0, 25, False),
    (2024, G2, "2023-09-05", 0, 0, 0, 0, False),
    (2024, G2, "2023-10-02", 50, 10, 50, 10, True),
    (2024, G2, "2023-10-03", 0, 0, 50, 10, False),
]


def test_2020_expenses_worked_example_section_5_2() -> None:
    payloads = calc.build_payloads({cfg.EXPENSES_2020: example_2020()}, only=["vs3t-h2aj", "jdna-s8qn"])
    current, previous = payloads["vs3t-h2aj"], payloads["jdna-s8qn"]
    assert list(current.columns) == list(calc.FIELDS_EXPENSES_2020)
    assert list(previous.columns) == list(calc.FIELDS_EXPENSES_2020)
    assert len(current) == 12
    got = {(r["fiscal_year"], r["aims_dept_prog_act"], r["date"]): r for r in records(current)}
    assert len(got) == 12
    for fy, group, date, obl, exp, sum_obl, sum_exp, is_source in EXPECTED_5_2:
        r = got[(fy, group, f"{date}T00:00:00.000")]
        assert (r["obligated"], r["expenses"], r["sum_obligated"], r["sum_expenses"]) == (obl, exp, sum_obl, sum_exp)
        for field in ("obligated", "expenses", "sum_obligated", "sum_expenses"):
            assert type(r[field]) is float
        assert type(r["fiscal_year"]) is int
        if is_source:
            assert r["department"] == float(G1_2020[0] if group == G1 else G2_2020[0])
            assert type(r["department"]) is float
            assert r["fund"] in ("86A0", "8640") and r["updated_at"] == UPDATED_AT
            assert r["group"] in ("1AB", "2EG") and r["division"] in ("62A1", "74C1")
        else:
            assert [r[f] for f in ("fund", "department", "group", "division", "updated_at")] == [None] * 5
    # Sorted by date (then group); jdna = the six FY2023 rows in the same order (latest FY = 2024).
    assert current["date"].tolist() == sorted(current["date"])
    assert records(previous) == [r for r in records(current) if r["fiscal_year"] == 2023]
    assert len(previous) == 6


def test_2020_source_duplicates_are_kept_and_the_last_sum_is_the_day_total() -> None:
    raw = table(
        cfg.EXPENSES_2020,
        [
            row_2020(G1_2020, 2023, "2023-01-05", 1.0, 10.0),
            row_2020(G1_2020, 2023, "2023-01-05", 2.0, 20.0),
            row_2020(G1_2020, 2023, "2023-01-06", 4.0, 40.0),
        ],
    )
    out = calc.build_payloads({cfg.EXPENSES_2020: raw}, only=["vs3t-h2aj"])["vs3t-h2aj"]
    assert len(out) == 3  # Q4: both duplicates kept, no filler for that key
    assert out["sum_expenses"].tolist() == [10.0, 30.0, 70.0]


def test_only_one_fiscal_year_empties_the_previous_dataset() -> None:
    raw = table(cfg.EXPENSES_2020, [row_2020(G1_2020, 2023, "2023-01-05", 1.0, 10.0)])
    payloads = calc.build_payloads({cfg.EXPENSES_2020: raw}, only=["vs3t-h2aj", "jdna-s8qn"])
    assert len(payloads["vs3t-h2aj"]) == 1
    assert payloads["jdna-s8qn"].empty and list(payloads["jdna-s8qn"].columns) == list(calc.FIELDS_EXPENSES_2020)


# ---------------------------------------------------------------------------------------------- §5.3


def test_all_bonds_worked_example_section_5_3(caplog: pytest.LogCaptureFixture) -> None:
    raw = table(
        cfg.EXPENSES_ALL_BONDS,
        [
            row_all_bonds(G1_ALL, "2023-01-03", 10.0, 1.0),
            row_all_bonds(G1_ALL, "2023-01-03", 20.0, 2.0),
            row_all_bonds(G1_ALL, "2023-01-05", 5.0, 5.0),
            row_all_bonds(G2_ALL, "2023-01-04", 7.0, 7.0),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="bond_reporting.calculations"):
        out = calc.build_payloads({cfg.EXPENSES_ALL_BONDS: raw}, only=["rrww-ybw6"])["rrww-ybw6"]
    assert list(out.columns) == list(calc.FIELDS_ALL_BONDS)
    a, b = "2400862024K37QX15", "620086B062A12CD"
    expected = {  # (group, date): (obl, exp, sum_obl, sum_exp, source?)
        (a, "2023-01-03"): (10, 1, 10, 1, True),
        (a, "2023-01-04"): (0, 0, 10, 1, False),
        (a, "2023-01-05"): (5, 5, 15, 6, True),
        (b, "2023-01-03"): (0, 0, 0, 0, False),
        (b, "2023-01-04"): (7, 7, 7, 7, True),
        (b, "2023-01-05"): (0, 0, 7, 7, False),
    }
    got = records(out)
    assert len(got) == 6
    for r in got:
        obl, exp, sum_obl, sum_exp, is_source = expected[(r["aims_dept_prog_act"], r["date"][:10])]
        assert r["date"].endswith("T00:00:00.000")
        assert (r["obligated"], r["expenses"], r["sum_obligated"], r["sum_expenses"]) == (obl, exp, sum_obl, sum_exp)
        nullable = [r[f] for f in calc.COLUMNS_ALL_BONDS if f not in ("date", "obligated", "expenses")]
        if is_source:
            assert None not in nullable and type(r["department"]) is float
        else:
            assert nullable == [None] * len(nullable)
    assert [r["date"][:10] for r in got] == sorted(r["date"][:10] for r in got)
    # Q5: the dropped duplicate is named in one warning.
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dropped 1 duplicate row(s)" in warnings[0] and f"({a}, 2023-01-03)" in warnings[0]


def test_all_bonds_without_duplicates_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    raw = table(cfg.EXPENSES_ALL_BONDS, [row_all_bonds(G1_ALL, "2023-01-03", 1.0, 1.0)])
    with caplog.at_level(logging.WARNING):
        out = calc.zero_fill_all_bonds(raw)
    assert len(out) == 1 and not caplog.records
    assert out["department"].dtype == np.float64  # float even without fillers (Q7)


# ---------------------------------------------------------------------------------------------- §5.4


@pytest.mark.parametrize(
    ("side", "date", "booked", "label"),
    [
        ("expense", "2022-01-14", 2022, "2022 01"),
        ("expense", "2021-10-04", 2022, "2021 10"),
        ("expense", "2021-09-28", 2022, "2021 10"),
        ("expense", "2022-10-05", 2022, "2022 09"),
        ("expense", "2021-05-03", 2021, "0FY 21"),
        ("expense", "2021-10-20", 2021, "0FY 21"),
        ("expense", "2022-11-15", 2023, "0FY 23"),
        ("plan", "2022-09-01", None, "2022 09"),
        ("plan", "2022-11-01", None, "0FY 23"),
        ("plan", "2021-03-01", None, "0FY 21"),
    ],
)
def test_labels_of_section_5_4_2(side: str, date: str, booked: int | None, label: str) -> None:
    year, month = int(date[:4]), int(date[5:7])
    if side == "expense":
        got = calc.label_expense(np.array([booked]), np.array([year]), np.array([month]), 2022)
    else:
        got = calc.label_plan(np.array([year]), np.array([month]), 2022)
    assert got.tolist() == [label]


def test_labels_for_previous_target_year() -> None:
    # T = 2021: an expense dated 2022-01-14 booked to FY2022 and a baseline dated 2022-09-01 both get '0FY 22'.
    assert calc.label_expense(np.array([2022]), np.array([2022]), np.array([1]), 2021).tolist() == ["0FY 22"]
    assert calc.label_plan(np.array([2022]), np.array([9]), 2021).tolist() == ["0FY 22"]


def example_summary_tables() -> dict[str, pd.DataFrame]:
    ga, gb = (6200, "86A0", "62A1", "1AB"), (7400, "8640", "74C1", "2EG")
    return {
        cfg.EXPENSES_2020: table(
            cfg.EXPENSES_2020,
            [
                row_2020(ga, 2021, "2021-05-03", 0.0, 100.0),
                row_2020(ga, 2022, "2021-11-15", 0.0, 50.0),
                row_2020(gb, 2022, "2021-10-20", 0.0, 7.0),
            ],
        ),
        cfg.LOOKUP_2020: table(cfg.LOOKUP_2020, [(G1, "D1"), (G2, "D2")]),
        cfg.BASELINE_2020: table(
            cfg.BASELINE_2020,
            [
                ("D1", "2021-03-01", 80.0),
                ("D1", "2021-10-01", 20.0),
                ("D1", "2022-01-01", 5.0),
                ("D1", "2022-12-01", 500.0),
            ],
        ),
        cfg.CURRENT_PLAN_2020: table(cfg.CURRENT_PLAN_2020, [("D1", "2021-10-01", 30.0), ("D1", "2021-11-01", 10.0)]),
        cfg.PREVIOUS_PLAN_2020: table(cfg.PREVIOUS_PLAN_2020, [("D1", "2020-10-01", 60.0), ("D1", "2021-05-01", 15.0)]),
    }


N = None
EXPECTED_HQ9N = [
    ("0FY 21", "D1", 100, 80, N, 100, 80, N),
    ("0FY 21", "D2", 0, N, N, 0, N, N),
    ("0FY 23", "D1", N, 500, N, N, 580, N),
    ("2021 10", "D1", 0, 20, 30, 100, 600, 30),
    ("2021 10", "D2", 7, N, N, 7, N, N),
    ("2021 11", "D1", 50, N, 10, 150, N, 40),
    ("2021 11", "D2", 0, N, N, 7, N, N),
    ("2022 01", "D1", N, 5, N, N, 605, N),
]
EXPECTED_5EWG = [
    ("0FY 23", "D1", N, 500, N, N, 500, N),
    ("2021 03", "D1", N, 80, N, N, 580, N),
    ("2021 05", "D1", 100, N, 15, 100, N, 15),
    ("2021 05", "D2", 0, N, N, 0, N, N),
    ("2021 09", "D1", 0, N, N, 100, N, N),
    ("2021 09", "D2", 0, N, N, 0, N, N),
]


@pytest.mark.parametrize(("dataset_id", "expected"), [("hq9n-d77y", EXPECTED_HQ9N), ("5ewg-ssu3", EXPECTED_5EWG)])
def test_summary_worked_examples_section_5_4_5(dataset_id: str, expected: list[tuple]) -> None:
    tables = example_summary_tables()
    assert calc.current_fiscal_year(tables[cfg.CURRENT_PLAN_2020]) == 2022
    out = calc.build_payloads(tables, only=[dataset_id])[dataset_id]
    assert list(out.columns) == list(calc.FIELDS_SUMMARY)
    got = [tuple(r.values()) for r in records(out)]  # row order matters for the summaries
    assert got == [tuple(float(v) if isinstance(v, int) else v for v in row) for row in expected]
    for r in records(out):
        assert all(v is None or type(v) is float for k, v in r.items() if k not in calc.FIELDS_SUMMARY[:2])


def test_summary_duplicate_lookup_entries_double_count_and_unmapped_groups_vanish() -> None:
    tables = example_summary_tables()
    # G1 mapped twice to D1 (Q11 double count), G2 unmapped (vanishes).
    tables[cfg.LOOKUP_2020] = table(cfg.LOOKUP_2020, [(G1, "D1"), (G1, "D1")])
    out = calc.build_payloads(tables, only=["hq9n-d77y"])["hq9n-d77y"]
    assert set(out["dashboard_deptfundprogact"]) == {"D1"}
    fy21 = out[out["table_col"] == "0FY 21"].iloc[0]
    assert fy21["Expenses"] == 200.0 and fy21["Baseline"] == 80.0


def test_current_fiscal_year_is_the_latest_fy_of_the_current_plan() -> None:
    plan = table(cfg.CURRENT_PLAN_2020, [("D1", "2023-10-01", 1.0), ("D1", "2024-09-01", 1.0)])
    assert calc.current_fiscal_year(plan) == 2024
    plan = table(cfg.CURRENT_PLAN_2020, [("D1", "2023-10-01", 1.0), ("D1", "2024-10-01", 1.0)])
    assert calc.current_fiscal_year(plan) == 2025
    with pytest.raises(ValidationError, match="bond_2020_current_fy_spend_plan is empty"):
        calc.current_fiscal_year(table(cfg.CURRENT_PLAN_2020, []))


def test_previous_year_drop_label_keeps_the_original_arithmetic() -> None:
    assert calc.previous_year_drop_label(2024) == "0FY 24"
    assert calc.previous_year_drop_label(2005) == "0FY 5"  # Q22: matches nothing outside 2010–2099


# ---------------------------------------------------------------------------------------------- §5.5, §5.6


def programs(*ids: str) -> pd.DataFrame:
    return table(
        cfg.PROGRAM_NAMES, [(i, f"Dept {i}", 2018, f"Prog {i}", f"Sub {i}", n, n + 10) for n, i in enumerate(ids)]
    )


def test_metadata_example_section_5_5() -> None:
    appropriations = table(
        cfg.APPROPRIATIONS, [("P1", "2019-01-01", 450000), ("P1", "2020-01-01", 3450000), ("P3", "2020-01-01", 100000)]
    )
    out = calc.all_bonds_metadata(programs("P1", "P2"), appropriations)
    assert list(out.columns) == list(calc.FIELDS_METADATA)
    got = records(out)
    assert [r["dashboard_deptfundprogact"] for r in got] == ["P1", "P2"]
    assert got[0]["appropriated"] == 3900000.0 and type(got[0]["appropriated"]) is float  # Q14: float as P2 is null
    assert got[1]["appropriated"] is None
    assert (got[0]["bond_year"], got[0]["program_sort"], got[0]["sub_program_sort"]) == (2018, 0, 10)
    assert got[0]["updated_at"] == UPDATED_AT


def test_metadata_all_appropriated_stays_int_and_duplicates_are_kept() -> None:
    appropriations = table(cfg.APPROPRIATIONS, [("P1", "2019-01-01", 5), ("P2", "2020-01-01", 7)])
    got = records(calc.all_bonds_metadata(programs("P2", "P1", "P2"), appropriations))
    assert [(r["dashboard_deptfundprogact"], r["appropriated"]) for r in got] == [("P2", 7), ("P1", 5), ("P2", 7)]
    assert all(type(r["appropriated"]) is int for r in got)


def test_lookup_is_published_unchanged() -> None:
    lookup = table(cfg.LOOKUP_ALL_BONDS, [("B", "X"), ("A", "Y"), ("B", "X")])
    out = calc.all_bonds_lookup(lookup)
    assert list(out.columns) == list(calc.FIELDS_LOOKUP)
    assert records(out) == [
        {"aims_dept_prog_act": a, "dashboard_deptfundprogact": d, "updated_at": UPDATED_AT}
        for a, d in [("B", "X"), ("A", "Y"), ("B", "X")]
    ]


# ---------------------------------------------------------------------------------------------- whole


def test_empty_tables_give_empty_payloads_except_the_summaries() -> None:
    tables = empty_tables()
    with pytest.raises(ValidationError, match="current_fy_spend_plan is empty"):
        calc.build_payloads(tables)
    only = [i for i in cfg.DATASET_IDS if i not in ("hq9n-d77y", "5ewg-ssu3")]
    payloads = calc.build_payloads(tables, only=only)
    assert list(payloads) == only
    assert all(p.empty for p in payloads.values())


def test_summaries_with_no_expenses_still_show_the_baseline() -> None:
    tables = example_summary_tables()
    tables[cfg.EXPENSES_2020] = table(cfg.EXPENSES_2020, [])
    out = calc.build_payloads(tables, only=["hq9n-d77y"])["hq9n-d77y"]
    assert out["table_col"].tolist() == ["0FY 21", "0FY 23", "2021 10", "2022 01"]
    assert out["Sum_baseline"].tolist() == [80.0, 580.0, 600.0, 605.0]
    assert out["Expenses"].isna().all()


def test_missing_column_or_table_is_one_clear_error() -> None:
    with pytest.raises(ValidationError, match="table expenses_obligated_2020_bond_raw lacks column"):
        calc.build_payloads({cfg.EXPENSES_2020: example_2020().drop(columns=["fund"])}, only=["vs3t-h2aj"])
    with pytest.raises(ValidationError, match="table all_bonds_aims_to_dashboard was not read"):
        calc.build_payloads({}, only=["mri6-eexh"])


def test_build_payloads_returns_publish_order_and_newest_expense_date() -> None:
    tables = {**empty_tables(), **example_summary_tables()}
    tables[cfg.EXPENSES_ALL_BONDS] = table(cfg.EXPENSES_ALL_BONDS, [row_all_bonds(G1_ALL, "2022-02-01", 1.0, 1.0)])
    payloads = calc.build_payloads(tables, only=["mri6-eexh", "vs3t-h2aj"])
    assert list(payloads) == ["vs3t-h2aj", "mri6-eexh"]
    assert calc.newest_expense_date(tables) == "2022-02-01"
    assert calc.newest_expense_date({}) is None
    with pytest.raises(ConfigError, match=r"unknown dataset id .nope-nope.; known dataset ids: vs3t-h2aj"):
        calc.build_payloads(tables, only=["nope-nope"])


# --- money exact to the cent -------------------------------------------------------------------


def test_sums_of_whole_cents_are_exact_to_the_cent():
    from bond_reporting.calculations import in_whole_cents, round_money_to_cents

    tables = {"bond_2020_baseline_spend": pd.DataFrame({"amount": [0.1, 0.2, 64703.38]})}
    assert in_whole_cents(tables)
    payload = pd.DataFrame({"table_col": ["a"], "Sum_baseline": [0.1 + 0.2], "Expenses": [-1e-12], "Planned": [None]})
    rounded = round_money_to_cents(payload.astype({"Planned": float}))
    assert rounded["Sum_baseline"].tolist() == [0.3]
    assert str(rounded["Expenses"].iloc[0]) == "0.0"  # not -0.0
    assert rounded["Planned"].isna().all()
    assert rounded["table_col"].tolist() == ["a"]


def test_sub_cent_inputs_are_left_as_computed():
    from bond_reporting.calculations import in_whole_cents

    assert not in_whole_cents(
        {"expenses_obligated_2020_bond_raw": pd.DataFrame({"obligated": [0.125], "expenses": [1.0]})}
    )
